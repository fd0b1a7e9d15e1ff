//! Where the cgroup filesystems are: v1 hierarchies, the unified (v2) mount, and the cgroup the
//! runtime itself runs in (for relative `cgroupsPath`s).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use berth_core::{Error, Result};

/// The v1 controllers a hierarchy mount's options can name (kernel `cgroup_subsys` list);
/// other options (rw, relatime, noprefix, clone_children, release_agent=...) are not controllers.
const V1_CONTROLLERS: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "net_cls",
    "net_prio",
    "blkio",
    "perf_event",
    "hugetlb",
    "pids",
    "rdma",
    "misc",
    "debug",
];

/// One mounted v1 hierarchy.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct V1Hierarchy {
    /// Its controllers ("cpu", "cpuacct"), or "name=systemd" for a named hierarchy.
    pub controllers: Vec<String>,
    /// Where it is mounted.
    pub mount: PathBuf,
    /// The cgroup of the hierarchy that is mounted there ("/" unless we are in a container that
    /// only sees part of the host's tree).
    pub root: String,
}

/// The cgroup2 mount.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct UnifiedMount {
    /// Where it is mounted.
    pub mount: PathBuf,
    /// The cgroup mounted there.
    pub root: String,
}

/// One line of /proc/self/mountinfo, reduced to what matters here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MountEntry {
    pub root: String,
    pub mount_point: PathBuf,
    pub fs_type: String,
    pub super_opts: Vec<String>,
}

/// Parses mountinfo (proc(5)): "id parent maj:min root mountpoint opts [optional...] - fstype
/// source superopts". cgroups-rs's parser drops the root field and the "cgroup2" type, both of
/// which are needed here, so this is our own.
pub(crate) fn parse_mountinfo(content: &str) -> Vec<MountEntry> {
    content
        .lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let fields: Vec<&str> = before.split(' ').collect();
            let root = unescape(fields.get(3)?);
            let mount_point = PathBuf::from(unescape(fields.get(4)?));
            let mut after = after.split(' ');
            let fs_type = after.next()?.to_string();
            let _source = after.next()?;
            let super_opts = after.next()?.split(',').map(str::to_string).collect();
            Some(MountEntry {
                root,
                mount_point,
                fs_type,
                super_opts,
            })
        })
        .collect()
}

/// Undoes mountinfo's octal escapes ("\040" for a space).
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some(d) = bytes.get(i + 1..i + 4)
            && d.iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let value = (u32::from(d[0] - b'0') << 6)
                | (u32::from(d[1] - b'0') << 3)
                | u32::from(d[2] - b'0');
            if let Ok(byte) = u8::try_from(value) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The v1 hierarchies and the cgroup2 mount found in `mounts`. A hierarchy mounted twice (a
/// bind mount of part of it) is listed once, by its first mount.
pub(crate) fn cgroup_mounts(mounts: &[MountEntry]) -> (Vec<V1Hierarchy>, Option<UnifiedMount>) {
    let mut v1: Vec<V1Hierarchy> = Vec::new();
    let mut unified = None;
    for m in mounts {
        match m.fs_type.as_str() {
            "cgroup" => {
                let controllers: Vec<String> = m
                    .super_opts
                    .iter()
                    .filter(|o| V1_CONTROLLERS.contains(&o.as_str()) || o.starts_with("name="))
                    .cloned()
                    .collect();
                if controllers.is_empty() || v1.iter().any(|h| h.controllers == controllers) {
                    continue;
                }
                v1.push(V1Hierarchy {
                    controllers,
                    mount: m.mount_point.clone(),
                    root: m.root.clone(),
                });
            }
            "cgroup2" if unified.is_none() => {
                unified = Some(UnifiedMount {
                    mount: m.mount_point.clone(),
                    root: m.root.clone(),
                });
            }
            _ => {}
        }
    }
    (v1, unified)
}

/// Reads /proc/self/mountinfo.
pub(crate) fn self_mounts() -> Result<Vec<MountEntry>> {
    let content = crate::procfs::read("/proc/self/mountinfo")
        .map_err(|e| super::files::os_error("read /proc/self/mountinfo", e))?;
    Ok(parse_mountinfo(&content))
}

/// The runtime's own cgroup paths, by controller ("" for the unified hierarchy), from
/// /proc/self/cgroup. cgroups-rs parses this file correctly (including named and v2 entries).
pub(crate) fn self_cgroups() -> Result<HashMap<String, String>> {
    cgroups_rs::cgroup::get_cgroups_relative_paths()
        .map_err(|e| Error::internal(format!("read /proc/self/cgroup: {e}")))
}

/// Turns a cgroup path as the kernel reports it (relative to the hierarchy's root) into one
/// relative to the mount (whose root may be a sub-cgroup when we run in a container).
pub(crate) fn relative_to_mount(path: &str, mount_root: &str) -> String {
    if mount_root == "/" || mount_root.is_empty() {
        return path.to_string();
    }
    match path.strip_prefix(mount_root) {
        Some("") => "/".to_string(),
        Some(rest) if rest.starts_with('/') => rest.to_string(),
        _ => path.to_string(),
    }
}

/// `mount` joined with an absolute cgroup path.
pub(crate) fn join(mount: &Path, cgroup: &str) -> PathBuf {
    mount.join(cgroup.trim_start_matches('/'))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 /docker/abc /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:32 /docker/abc/x /mnt/mem\\040copy rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
";

    #[test]
    fn parses_hybrid_layout() {
        let mounts = parse_mountinfo(HYBRID);
        assert_eq!(mounts.len(), 6);
        assert_eq!(mounts[3].mount_point, PathBuf::from("/mnt/mem copy"));
        let (v1, unified) = cgroup_mounts(&mounts);
        assert_eq!(v1.len(), 3);
        assert_eq!(v1[0].controllers, vec!["cpu", "cpuacct"]);
        assert_eq!(v1[1].root, "/docker/abc");
        assert_eq!(v1[2].controllers, vec!["name=systemd"]);
        assert_eq!(
            unified,
            Some(UnifiedMount {
                mount: PathBuf::from("/sys/fs/cgroup/unified"),
                root: "/".into()
            })
        );
    }

    #[test]
    fn relative_paths() {
        assert_eq!(relative_to_mount("/a/b", "/"), "/a/b");
        assert_eq!(relative_to_mount("/docker/abc/x", "/docker/abc"), "/x");
        assert_eq!(relative_to_mount("/docker/abc", "/docker/abc"), "/");
        assert_eq!(
            relative_to_mount("/docker/abcd", "/docker/abc"),
            "/docker/abcd"
        );
        assert_eq!(unescape("a\\040b\\134c\\9"), "a b\\c\\9");
    }
}
