//! Starting the kernel's cgroup-migration grace period early.
//!
//! Moving a process into a cgroup takes the kernel's global `cgroup_threadgroup_rwsem` for
//! writing, and the first writer after a quiet spell waits a whole RCU grace period for it
//! (5–14 ms measured here; later writers within about 20 ms pass at once). runc and crun make
//! that move a few milliseconds after berthd asks the shim for a task, so for them berthd
//! starts the wait itself, on a blocking thread, by moving itself into the cgroup it is
//! already in: the grace period then runs alongside the shim's start instead of after it.
//!
//! Berth's own runtime needs none of this: it forks the container's first process into the
//! cgroup and lets it move its single thread into the v1 hierarchies, which takes no such lock
//! (berth_runtime::cgroups::CgroupEntry). It would even lose by it: the waiting write holds
//! `cgroup_mutex`, which its cgroup mkdirs and the fork into the cgroup take too.
//! docs/performance.md has the measurements.

use std::path::{Path, PathBuf};

/// Starts the grace period in the background; never fails and never blocks the caller.
pub fn prime() {
    // Outside a runtime (unit tests) there is nothing to overlap with.
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn_blocking(|| {
            if let Err(e) = prime_now(Path::new("/sys/fs/cgroup"), Path::new("/proc/self/cgroup")) {
                tracing::debug!(error = %e, "cgroup warm-up skipped");
            }
        });
    }
}

/// Writes "0" (this process) to the `cgroup.procs` of the first hierarchy it can find itself
/// in: a move to where it already is changes nothing but takes the same kernel lock.
fn prime_now(cgroup_root: &Path, self_cgroup: &Path) -> std::io::Result<()> {
    let own = std::fs::read_to_string(self_cgroup)?;
    let unified = cgroup_root.join("cgroup.controllers").exists();
    for procs in candidates(cgroup_root, &own, unified) {
        match std::fs::write(&procs, "0") {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::NotFound,
        "no cgroup.procs of our own cgroup",
    ))
}

/// The `cgroup.procs` files of this process's own cgroups, from `/proc/self/cgroup`, in the
/// order they are listed there.
fn candidates(cgroup_root: &Path, own: &str, unified: bool) -> Vec<PathBuf> {
    own.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            let rel = path.trim_start_matches('/');
            let dir = if controllers.is_empty() {
                // The v2 line: the root itself on a unified host, `unified/` on a hybrid one.
                if unified {
                    cgroup_root.to_path_buf()
                } else {
                    cgroup_root.join("unified")
                }
            } else {
                // A v1 hierarchy is mounted under its controller list, named cgroups under
                // their name ("name=systemd" → "systemd").
                cgroup_root.join(controllers.strip_prefix("name=").unwrap_or(controllers))
            };
            Some(dir.join(rel).join("cgroup.procs"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_follow_the_host_layout() {
        let root = Path::new("/sys/fs/cgroup");
        let hybrid = "12:pids:/a/b\n11:cpu,cpuacct:/a/b\n1:name=systemd:/x\n0::/\n";
        assert_eq!(
            candidates(root, hybrid, false),
            vec![
                PathBuf::from("/sys/fs/cgroup/pids/a/b/cgroup.procs"),
                PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/a/b/cgroup.procs"),
                PathBuf::from("/sys/fs/cgroup/systemd/x/cgroup.procs"),
                PathBuf::from("/sys/fs/cgroup/unified/cgroup.procs"),
            ]
        );
        assert_eq!(
            candidates(root, "0::/system.slice/berthd.service\n", true),
            vec![PathBuf::from(
                "/sys/fs/cgroup/system.slice/berthd.service/cgroup.procs"
            )]
        );
    }

    #[test]
    fn prime_writes_zero_to_the_first_existing_procs_file() -> std::io::Result<()> {
        let tmp = tempfile::tempdir()?;
        let root = tmp.path().join("cg");
        std::fs::create_dir_all(root.join("cpu/a"))?;
        std::fs::write(root.join("cpu/a/cgroup.procs"), "")?;
        let own = tmp.path().join("self");
        // The pids hierarchy is not mounted here: it is skipped, not an error.
        std::fs::write(&own, "3:pids:/a\n2:cpu:/a\n")?;
        prime_now(&root, &own)?;
        assert_eq!(
            std::fs::read_to_string(root.join("cpu/a/cgroup.procs"))?,
            "0"
        );
        std::fs::write(&own, "3:pids:/a\n")?;
        assert!(prime_now(&root, &own).is_err());
        Ok(())
    }
}
