//! Mounting what a snapshotter returns, for tests that check files through the mounts: the
//! mounts are made the way `ctr snapshots mounts` prints them and undone on drop, also when the
//! test fails.

use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

use crate::{CmdOutput, Daemon};

/// A mount point with everything mounted on it by `mount` commands; unmounted on drop.
pub struct Mounted {
    mounts: usize,
    target: PathBuf,
    _dir: TempDir,
}

impl Mounted {
    /// Runs each `mount …` line of `commands` (which name `target`, a directory in `dir`).
    pub fn run(commands: &str, target: PathBuf, dir: TempDir) -> Self {
        let mut m = Mounted {
            mounts: 0,
            target,
            _dir: dir,
        };
        for line in commands.lines().filter(|l| !l.trim().is_empty()) {
            assert!(line.starts_with("mount "), "not a mount command: {line}");
            CmdOutput::run_public(Command::new("sh").arg("-c").arg(line)).ok();
            m.mounts += 1;
        }
        assert!(m.mounts > 0, "no mount commands in {commands:?}");
        m
    }

    /// Where the snapshot is mounted.
    pub fn path(&self) -> &Path {
        &self.target
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        for _ in 0..self.mounts {
            let ok = Command::new("umount")
                .arg(&self.target)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                // Something still holds it; detach so the tempdir can go.
                let _ = Command::new("umount").arg("-l").arg(&self.target).status();
            }
        }
    }
}

/// A fresh, empty mount point inside its own temporary directory.
pub fn mount_point() -> (TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("berth-mnt-")
        .tempdir()
        .expect("temp dir");
    let target = dir.path().join("m");
    std::fs::create_dir(&target).expect("mount point");
    (dir, target)
}

/// `ctr [global…] snapshots --snapshotter <sn> <args…>`.
pub fn ctr_sn(d: &Daemon, global: &[&str], sn: &str, args: &[&str]) -> CmdOutput {
    let mut all: Vec<&str> = global.to_vec();
    all.extend(["snapshots", "--snapshotter", sn]);
    all.extend(args);
    d.ctr(&all)
}

/// Mounts snapshot `key` the way `ctr snapshots mounts` says to.
pub fn mount_with_ctr(d: &Daemon, global: &[&str], sn: &str, key: &str) -> Mounted {
    let (dir, target) = mount_point();
    let target_str = target.to_str().expect("utf-8 temp path");
    let commands = ctr_sn(d, global, sn, &["mounts", target_str, key]).ok();
    Mounted::run(&commands, target, dir)
}
