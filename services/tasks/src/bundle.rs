//! What berthd adds to a task from its container's labels (the contract with berthctl, see
//! docs/tasks.md): the log the shim writes (`io.berth.log`) and the `/etc` files bind-mounted
//! from the bundle (`io.berth.etc-files`).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use berth_core::{Error, Result};

pub use berth_core::containers::ETC_FILES_LABEL;
pub use berth_core::logs::{DEFAULT_LOG_MAX_SIZE, LOG_JSON_FILE, LOG_LABEL, LOG_MAX_SIZE_LABEL};

/// The resolvers a container with its own network gets when the host only has local ones
/// (which it cannot reach), as Docker does.
const FALLBACK_RESOLV: &str = "nameserver 8.8.8.8\nnameserver 8.8.4.4\n";
const LOCAL_HOSTS: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n";

/// Where the shim logs the container's output, and the size it rotates at: `None` unless the
/// container asks for a log and berthd keeps logs. Creates `<logs_dir>/<ns>/<id>/` (0700).
pub fn log_target(
    labels: &BTreeMap<String, String>,
    logs_dir: Option<&Path>,
    namespace: &str,
    id: &str,
) -> Result<Option<(PathBuf, u64)>> {
    let (Some(kind), Some(logs_dir)) = (labels.get(LOG_LABEL), logs_dir) else {
        return Ok(None);
    };
    if kind != LOG_JSON_FILE {
        return Err(Error::invalid_argument(format!(
            "container {id:?}: log format {kind:?} is not supported (use {LOG_JSON_FILE:?})"
        )));
    }
    let max = match labels.get(LOG_MAX_SIZE_LABEL) {
        None => DEFAULT_LOG_MAX_SIZE,
        Some(v) => v
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| {
                Error::invalid_argument(format!(
                    "container {id:?}: {LOG_MAX_SIZE_LABEL}={v:?} is not a positive number of bytes"
                ))
            })?,
    };
    let dir = logs_dir.join(namespace).join(id);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| Error::io(format!("create log directory {}", dir.display()), e))?;
    Ok(Some((dir.join("container.log"), max)))
}

/// Whether the container asks for its `/etc` files.
pub fn wants_etc_files(labels: &BTreeMap<String, String>) -> bool {
    labels.get(ETC_FILES_LABEL).is_some_and(|v| v == "true")
}

/// Writes `etc/hostname`, `etc/hosts` and `etc/resolv.conf` (0644) into `bundle` for the OCI
/// `spec` (JSON); the host's own files are read from `host_etc` (`/etc` outside tests).
pub fn write_etc_files(bundle: &Path, spec: &serde_json::Value, host_etc: &Path) -> Result<()> {
    let hostname = spec["hostname"].as_str().unwrap_or_default();
    let own_network = spec["linux"]["namespaces"]
        .as_array()
        .is_some_and(|ns| ns.iter().any(|n| n["type"] == "network"));
    let host_file = |name: &str| std::fs::read_to_string(host_etc.join(name)).ok();

    let hosts = if own_network {
        let mut h = LOCAL_HOSTS.to_owned();
        if !hostname.is_empty() {
            h.push_str(&format!("127.0.1.1\t{hostname}\n"));
        }
        h
    } else {
        host_file("hosts").unwrap_or_else(|| LOCAL_HOSTS.to_owned())
    };
    let host_resolv = host_file("resolv.conf").unwrap_or_default();
    let resolv = if own_network {
        container_resolv(&host_resolv)
    } else {
        host_resolv
    };

    let etc = bundle.join("etc");
    std::fs::DirBuilder::new()
        .mode(0o755)
        .create(&etc)
        .map_err(|e| Error::io(format!("create {}", etc.display()), e))?;
    write_0644(&etc.join("hostname"), format!("{hostname}\n").as_bytes())?;
    write_0644(&etc.join("hosts"), hosts.as_bytes())?;
    write_0644(&etc.join("resolv.conf"), resolv.as_bytes())
}

/// The host's resolv.conf without the resolvers only the host can reach (127.x, ::1); the
/// The top-level directories of the rootfs that the spec's filesystem mounts go on (`proc`,
/// `dev`, `sys`, `run`…), which the shim makes as soon as it has mounted the rootfs, while the
/// runtime prepares the container (see `berth_runtime::rootfs::make_mount_points`). None when
/// the spec has a user namespace (the container's root, not the shim, must own them) or a root
/// other than the bundle's `rootfs`. Bind mounts are left to the runtime: their target is a
/// file or a directory, as their source is.
pub fn mount_points(spec: &serde_json::Value) -> Vec<String> {
    let userns = spec["linux"]["namespaces"]
        .as_array()
        .is_some_and(|ns| ns.iter().any(|n| n["type"] == "user"));
    if userns || spec["root"]["path"] != "rootfs" {
        return Vec::new();
    }
    let Some(mounts) = spec["mounts"].as_array() else {
        return Vec::new();
    };
    let mut names: Vec<String> = Vec::new();
    for m in mounts {
        let bind = m["type"] == "bind"
            || m["options"]
                .as_array()
                .is_some_and(|o| o.iter().any(|o| o == "bind" || o == "rbind"));
        let Some(dest) = m["destination"].as_str().filter(|_| !bind) else {
            continue;
        };
        let mut parts = Path::new(dest).components();
        if let (Some(Component::RootDir), Some(Component::Normal(name)), None) =
            (parts.next(), parts.next(), parts.next())
            && let Some(name) = name.to_str()
            && !names.iter().any(|n| n == name)
        {
            names.push(name.to_owned());
        }
    }
    names
}

/// fallback resolvers when none remain.
fn container_resolv(host: &str) -> String {
    let mut out = String::new();
    let mut servers = 0;
    for line in host.lines() {
        let mut words = line.split_whitespace();
        if words.next() == Some("nameserver") {
            let addr = words.next().unwrap_or_default();
            if addr.starts_with("127.") || addr == "::1" {
                continue;
            }
            servers += 1;
        }
        out.push_str(line);
        out.push('\n');
    }
    if servers == 0 {
        out.push_str(FALLBACK_RESOLV);
    }
    out
}

fn write_0644(path: &Path, data: &[u8]) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(path)
        .map_err(|e| Error::io(format!("create {}", path.display()), e))?;
    // The umask may have taken bits the container's users need.
    f.set_permissions(std::fs::Permissions::from_mode(0o644))
        .and_then(|()| f.write_all(data))
        .map_err(|e| Error::io(format!("write {}", path.display()), e))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn host_etc(hosts: &str, resolv: &str) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("hosts"), hosts).unwrap();
        std::fs::write(d.path().join("resolv.conf"), resolv).unwrap();
        d
    }

    fn read(bundle: &Path, name: &str) -> String {
        let p = bundle.join("etc").join(name);
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o644,
            "{name}"
        );
        std::fs::read_to_string(p).unwrap()
    }

    #[test]
    fn own_network_gets_local_hosts_and_reachable_resolvers() {
        let host = host_etc(
            "10.0.0.1 myhost\n",
            "search example.org\nnameserver 127.0.0.53\nnameserver 10.1.1.1\nnameserver ::1\n",
        );
        let bundle = tempfile::tempdir().unwrap();
        let spec = json!({"hostname": "web", "linux": {"namespaces": [{"type": "pid"}, {"type": "network"}]}});
        write_etc_files(bundle.path(), &spec, host.path()).unwrap();
        assert_eq!(read(bundle.path(), "hostname"), "web\n");
        assert_eq!(
            read(bundle.path(), "hosts"),
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\tweb\n"
        );
        assert_eq!(
            read(bundle.path(), "resolv.conf"),
            "search example.org\nnameserver 10.1.1.1\n"
        );
    }

    #[test]
    fn only_local_resolvers_fall_back_to_public_ones() {
        let host = host_etc("", "nameserver 127.0.0.11\noptions ndots:0\n");
        let bundle = tempfile::tempdir().unwrap();
        let spec = json!({"linux": {"namespaces": [{"type": "network"}]}});
        write_etc_files(bundle.path(), &spec, host.path()).unwrap();
        assert_eq!(read(bundle.path(), "hostname"), "\n");
        assert_eq!(
            read(bundle.path(), "hosts"),
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
        );
        assert_eq!(
            read(bundle.path(), "resolv.conf"),
            "options ndots:0\nnameserver 8.8.8.8\nnameserver 8.8.4.4\n"
        );
    }

    #[test]
    fn host_network_copies_the_hosts_files() {
        let host = host_etc("10.0.0.1 myhost\n", "nameserver 127.0.0.53\n");
        let bundle = tempfile::tempdir().unwrap();
        let spec = json!({"hostname": "h", "linux": {"namespaces": [{"type": "mount"}]}});
        write_etc_files(bundle.path(), &spec, host.path()).unwrap();
        assert_eq!(read(bundle.path(), "hosts"), "10.0.0.1 myhost\n");
        assert_eq!(
            read(bundle.path(), "resolv.conf"),
            "nameserver 127.0.0.53\n"
        );
    }

    #[test]
    fn log_target_follows_the_labels() {
        let logs = tempfile::tempdir().unwrap();
        assert_eq!(
            log_target(&labels(&[]), Some(logs.path()), "ns", "c").unwrap(),
            None
        );
        assert_eq!(
            log_target(&labels(&[(LOG_LABEL, "json-file")]), None, "ns", "c").unwrap(),
            None
        );
        let (path, max) = log_target(
            &labels(&[(LOG_LABEL, "json-file")]),
            Some(logs.path()),
            "ns",
            "c",
        )
        .unwrap()
        .unwrap();
        assert_eq!(path, logs.path().join("ns/c/container.log"));
        assert_eq!(max, DEFAULT_LOG_MAX_SIZE);
        let mode = std::fs::metadata(logs.path().join("ns/c"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        let (_, max) = log_target(
            &labels(&[(LOG_LABEL, "json-file"), (LOG_MAX_SIZE_LABEL, "4096")]),
            Some(logs.path()),
            "ns",
            "d",
        )
        .unwrap()
        .unwrap();
        assert_eq!(max, 4096);
        for bad in [
            labels(&[(LOG_LABEL, "syslog")]),
            labels(&[(LOG_LABEL, "json-file"), (LOG_MAX_SIZE_LABEL, "10m")]),
            labels(&[(LOG_LABEL, "json-file"), (LOG_MAX_SIZE_LABEL, "0")]),
        ] {
            let err = log_target(&bad, Some(logs.path()), "ns", "e").unwrap_err();
            assert!(err.is(berth_core::ErrorKind::InvalidArgument), "{err}");
        }
    }

    #[test]
    fn mount_points_are_the_top_level_targets_of_filesystem_mounts() {
        let spec = json!({
            "root": {"path": "rootfs"},
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs"},
                {"destination": "/dev/pts", "type": "devpts", "source": "devpts"},
                {"destination": "/sys/", "type": "sysfs", "source": "sysfs"},
                {"destination": "/run", "type": "tmpfs", "source": "tmpfs"},
                {"destination": "/run", "type": "tmpfs", "source": "tmpfs"},
                {"destination": "/data", "type": "bind", "source": "/tmp"},
                {"destination": "/other", "type": "none", "source": "/tmp", "options": ["rbind"]},
                {"destination": "/../escape", "type": "tmpfs", "source": "tmpfs"},
                {"destination": "relative", "type": "tmpfs", "source": "tmpfs"}
            ],
            "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}]}
        });
        assert_eq!(mount_points(&spec), ["proc", "dev", "sys", "run"]);
    }

    #[test]
    fn no_mount_points_for_a_user_namespace_or_another_root() {
        let mounts = json!([{"destination": "/proc", "type": "proc", "source": "proc"}]);
        let userns = json!({"root": {"path": "rootfs"}, "mounts": mounts,
            "linux": {"namespaces": [{"type": "user"}]}});
        assert!(mount_points(&userns).is_empty());
        let elsewhere = json!({"root": {"path": "/srv/root"}, "mounts": mounts});
        assert!(mount_points(&elsewhere).is_empty());
        assert!(mount_points(&json!("not a spec")).is_empty());
    }
}
