//! A container's on-disk record (`<root>/<id>/state.json`) and its status, derived from the
//! live system rather than stored, so it is right even after the runtime was killed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use berth_core::{Error, ErrorKind, Result};
use oci_spec::runtime::Spec;

use crate::cgroups::{CgroupLayout, CgroupManager};
use serde::{Deserialize, Serialize};

/// The name of the FIFO the init blocks on until `start`.
pub const EXEC_FIFO: &str = "exec.fifo";
/// The name of the state file.
pub const STATE_FILE: &str = "state.json";

/// A container's status as the OCI spec names them (plus `paused`, as runc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Being created.
    Creating,
    /// Created, its process waiting for `start`.
    Created,
    /// Running the user's program.
    Running,
    /// Frozen.
    Paused,
    /// Its process has exited.
    Stopped,
}

impl Status {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        }
    }
}

/// What the runtime records about a container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// Container id.
    pub id: String,
    /// Host pid of the container's init.
    pub pid: i32,
    /// The init's start time (clock ticks since boot), to tell it from a reused pid.
    pub pid_start: u64,
    /// Bundle directory.
    pub bundle: PathBuf,
    /// Root filesystem.
    pub rootfs: PathBuf,
    /// Creation time, RFC 3339.
    pub created: String,
    /// The cgroup path the container was placed in.
    pub cgroup_path: String,
    /// The host's cgroup layout at create (absent in records of older versions: detected).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_layout: Option<CgroupLayout>,
    /// The spec the container was created from (hooks, process defaults for exec).
    pub config: Spec,
}

impl Record {
    /// The container's cgroup, on the layout recorded at create when there is one.
    pub fn cgroup(&self) -> Result<CgroupManager> {
        match &self.cgroup_layout {
            Some(layout) => CgroupManager::load_in(layout, &self.cgroup_path),
            None => CgroupManager::load(&self.cgroup_path),
        }
    }

    /// The container's state directory under `root`.
    pub fn dir(root: &Path, id: &str) -> PathBuf {
        root.join(id)
    }

    /// Reads the record of `id`.
    pub fn load(root: &Path, id: &str) -> Result<Record> {
        let path = Self::dir(root, id).join(STATE_FILE);
        let data = match std::fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::not_found(format!("container {id:?} does not exist")));
            }
            Err(e) => return Err(Error::io(format!("read {}", path.display()), e)),
        };
        serde_json::from_slice(&data).map_err(|e| {
            Error::new(
                ErrorKind::DataLoss,
                format!(
                    "state of container {id:?} at {} is corrupt: {e}",
                    path.display()
                ),
            )
        })
    }

    /// Writes the record atomically (temp file + rename).
    pub fn save(&self, root: &Path) -> Result<()> {
        let dir = Self::dir(root, &self.id);
        let tmp = dir.join(".state.json.tmp");
        let path = dir.join(STATE_FILE);
        let data =
            serde_json::to_vec(self).map_err(|e| Error::internal(format!("encode state: {e}")))?;
        std::fs::write(&tmp, data).map_err(|e| Error::io(format!("write {}", tmp.display()), e))?;
        std::fs::rename(&tmp, &path)
            .map_err(|e| Error::io(format!("rename to {}", path.display()), e))
    }

    /// The container's status now.
    pub fn status(&self, root: &Path, frozen: impl FnOnce() -> bool) -> Status {
        if !process_alive(self.pid, self.pid_start) {
            return Status::Stopped;
        }
        if Self::dir(root, &self.id).join(EXEC_FIFO).exists() {
            return Status::Created;
        }
        if frozen() {
            return Status::Paused;
        }
        Status::Running
    }

    /// The OCI state document (what `state` prints and hooks read on stdin).
    pub fn oci_state(&self, status: Status) -> OciState {
        OciState {
            oci_version: crate::spec::OCI_VERSION.to_owned(),
            id: self.id.clone(),
            status,
            pid: if status == Status::Stopped {
                0
            } else {
                self.pid
            },
            bundle: self.bundle.clone(),
            rootfs: self.rootfs.clone(),
            created: self.created.clone(),
            owner: String::new(),
            annotations: self.config.annotations().clone().unwrap_or_default(),
        }
    }
}

/// The state document of the OCI runtime spec, with runc's extra fields.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct OciState {
    /// Spec version.
    #[serde(rename = "ociVersion")]
    pub oci_version: String,
    /// Container id.
    pub id: String,
    /// Status.
    pub status: Status,
    /// Host pid of the init (0 once stopped).
    pub pid: i32,
    /// Bundle directory.
    pub bundle: PathBuf,
    /// Root filesystem.
    pub rootfs: PathBuf,
    /// Creation time.
    pub created: String,
    /// Owner (empty: not rootless).
    pub owner: String,
    /// Annotations from the spec.
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub annotations: HashMap<String, String>,
}

/// The start time of `pid` (field 22 of /proc/PID/stat) and whether it is a zombie.
pub fn process_start(pid: i32) -> Option<(u64, bool)> {
    let stat = crate::procfs::read(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = *fields.first()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((start, state == "Z" || state == "X"))
}

/// Whether `pid` is still the process that started at `start` and has not exited.
pub fn process_alive(pid: i32, start: u64) -> bool {
    if pid <= 0 {
        return false;
    }
    match process_start(pid) {
        Some((s, zombie)) => s == start && !zombie,
        None => false,
    }
}

/// Now, in RFC 3339 with nanoseconds, UTC.
pub fn now_rfc3339() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format_rfc3339(now.as_secs() as i64, now.subsec_nanos())
}

/// Formats a Unix time as RFC 3339 UTC (civil-from-days, so no date crate is needed).
pub fn format_rfc3339(secs: i64, nanos: u32) -> String {
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        assert_eq!(format_rfc3339(0, 0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            format_rfc3339(1_795_000_000, 5),
            "2026-11-18T11:06:40.000000005Z"
        );
        assert_eq!(
            format_rfc3339(951_782_400, 0),
            "2000-02-29T00:00:00.000000000Z"
        );
    }

    #[test]
    fn own_process_is_alive_and_a_wrong_start_time_is_not() {
        let pid = std::process::id() as i32;
        let (start, zombie) = process_start(pid).unwrap();
        assert!(!zombie);
        assert!(process_alive(pid, start));
        assert!(!process_alive(pid, start + 1));
        assert!(!process_alive(0, 0));
    }

    #[test]
    fn the_cgroup_is_reopened_on_the_recorded_layout_and_old_records_still_load() {
        let spec: Spec = serde_json::from_str(r#"{"ociVersion": "1.0.2"}"#).unwrap();
        let mut rec = Record {
            id: "c".into(),
            pid: 1,
            pid_start: 1,
            bundle: "/b".into(),
            rootfs: "/b/rootfs".into(),
            created: format_rfc3339(0, 0),
            cgroup_path: "/berth/ns/c".into(),
            cgroup_layout: Some(CgroupLayout::v2_at("/recorded/unified")),
            config: spec,
        };
        // Through the state file and back, the recorded layout (one no host has) is used.
        let json = serde_json::to_vec(&rec).unwrap();
        let back: Record = serde_json::from_slice(&json).unwrap();
        let sources = back.cgroup().unwrap().mount_sources();
        assert!(
            matches!(&sources[..], [crate::cgroups::CgroupMountSource::Bind { host_dir, .. }]
                if host_dir == Path::new("/recorded/unified/berth/ns/c")),
            "{sources:?}"
        );
        // A record written before the field existed has none, and detects the host's.
        rec.cgroup_layout = None;
        let json = serde_json::to_string(&rec).unwrap();
        assert!(!json.contains("cgroup_layout"));
        let back: Record = serde_json::from_str(&json).unwrap();
        assert!(back.cgroup_layout.is_none());
        assert_eq!(back.cgroup().unwrap().path(), "/berth/ns/c");
    }
}
