//! Temporary mounts: snapshot mounts made on a fresh directory for the length of one apply or
//! compare, always unmounted (and the directory removed) when the guard drops.

use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::Duration;

use berth_core::mount::{MAX_MOUNT_DATA, Mount, flags_and_data};
use berth_core::{Error, Result};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::stat::Mode;
use tracing::{debug, warn};

/// Mounts stacked on one temporary directory; dropping unmounts them all (last first) and
/// removes the directory.
pub struct TempMount {
    target: PathBuf,
    mounted: usize,
}

impl TempMount {
    /// Makes an empty mount point under `parent` and mounts `mounts` on it in order.
    pub fn mount_all(parent: &Path, mounts: &[Mount]) -> Result<Self> {
        let target = tempfile::Builder::new()
            .prefix("berth-mount-")
            .tempdir_in(parent)
            .map_err(|e| Error::io(format!("create mount point in {}", parent.display()), e))?
            // Removal is ours: a TempDir would `remove_dir_all` through a mount that failed to
            // come off, deleting the snapshot's files.
            .keep();
        let mut guard = Self { target, mounted: 0 };
        for m in mounts {
            mount_one(m, &guard.target)?;
            guard.mounted += 1;
        }
        Ok(guard)
    }

    /// Where the mounts are.
    pub fn path(&self) -> &Path {
        &self.target
    }
}

impl Drop for TempMount {
    fn drop(&mut self) {
        while self.mounted > 0 {
            if let Err(e) = unmount(&self.target) {
                // Leave the directory alone: removing it could reach into the mount.
                warn!(target = %self.target.display(), error = %e, "cannot unmount temporary mount");
                return;
            }
            self.mounted -= 1;
        }
        // rmdir, not a recursive removal: an empty mount point is all there should be.
        if let Err(e) = fs::remove_dir(&self.target) {
            warn!(target = %self.target.display(), error = %e, "cannot remove temporary mount point");
        }
    }
}

/// Unmounts the top mount on `target`, retrying while it is busy and detaching as a last
/// resort, as containerd does.
fn unmount(target: &Path) -> nix::Result<()> {
    for _ in 0..50 {
        match umount2(target, MntFlags::empty()) {
            Ok(()) => return Ok(()),
            Err(Errno::EBUSY) => sleep(Duration::from_millis(10)),
            Err(e) => return Err(e),
        }
    }
    umount2(target, MntFlags::MNT_DETACH)
}

/// The flags and filesystem data of a mount's options (propagation does not matter for a
/// private temporary mount point).
fn parse_options(options: &[String]) -> (MsFlags, Vec<String>) {
    let (flags, data) = flags_and_data(options.iter().map(String::as_str));
    (
        MsFlags::from_bits_retain(flags),
        data.into_iter().map(str::to_owned).collect(),
    )
}

fn mount_one(m: &Mount, target: &Path) -> Result<()> {
    let (flags, data) = parse_options(&m.options);
    let what = || format!("mount {} {:?} on {}", m.kind, m.source, target.display());
    let err = |e: Errno| Error::io(what(), e.into());
    if m.kind == "bind" || flags.contains(MsFlags::MS_BIND) {
        let bind = flags & (MsFlags::MS_BIND | MsFlags::MS_REC) | MsFlags::MS_BIND;
        mount(
            Some(m.source.as_str()),
            target,
            None::<&str>,
            bind,
            None::<&str>,
        )
        .map_err(err)?;
        // A bind mount ignores every other flag until it is remounted with them.
        let rest = flags - (MsFlags::MS_BIND | MsFlags::MS_REC);
        if !rest.is_empty() {
            mount(
                None::<&str>,
                target,
                None::<&str>,
                rest | MsFlags::MS_BIND | MsFlags::MS_REMOUNT,
                None::<&str>,
            )
            .map_err(|e| {
                // The bind itself is on: take it off again, since the caller's guard only
                // counts mounts that fully succeeded.
                let _ = unmount(target);
                err(e)
            })?;
        }
        return Ok(());
    }
    // Keeps the lower directories' descriptors open until mount(2) has resolved them.
    let mut _held: Vec<OwnedFd> = Vec::new();
    let mut joined = data.join(",");
    if joined.len() >= MAX_MOUNT_DATA && m.kind == "overlay" {
        let (short, held) = lowerdirs_by_fd(&data)?;
        joined = short;
        _held = held;
    }
    let data = joined;
    if data.len() >= MAX_MOUNT_DATA {
        return Err(Error::invalid_argument(format!(
            "{}: mount data of {} bytes exceeds {MAX_MOUNT_DATA}",
            what(),
            data.len()
        )));
    }
    debug!(kind = %m.kind, target = %target.display(), "mounting");
    mount(
        Some(m.source.as_str()),
        target,
        Some(m.kind.as_str()),
        flags,
        Some(data.as_str()),
    )
    .map_err(err)
}

/// An overlay's data with each lower directory named `/proc/self/fd/<n>` through an open
/// descriptor: far shorter than deep snapshot paths, and, unlike containerd's `chdir` to a
/// common parent, safe in a multi-threaded process.
fn lowerdirs_by_fd(data: &[String]) -> Result<(String, Vec<OwnedFd>)> {
    let mut held = Vec::new();
    let mut options = Vec::new();
    for option in data {
        let Some(lowers) = option.strip_prefix("lowerdir=") else {
            options.push(option.clone());
            continue;
        };
        let mut short = Vec::new();
        for dir in lowers.split(':') {
            let fd = nix::fcntl::open(
                dir,
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| Error::io(format!("open overlay lower directory {dir}"), e.into()))?;
            short.push(format!("/proc/self/fd/{}", fd.as_raw_fd()));
            held.push(fd);
        }
        options.push(format!("lowerdir={}", short.join(":")));
    }
    Ok((options.join(","), held))
}

/// `m` made read-only for reading a snapshot: an overlay's upper directory becomes its top
/// lower directory (no work directory, so it can be mounted while the snapshot is in use),
/// any other mount gets `ro`.
pub fn read_only(m: &Mount) -> Mount {
    let mut out = m.clone();
    if m.kind == "overlay"
        && let Some(upper) = m.option_value("upperdir")
    {
        out.options = m
            .options
            .iter()
            .filter(|o| !o.starts_with("upperdir=") && !o.starts_with("workdir="))
            .map(|o| match o.strip_prefix("lowerdir=") {
                Some(lowers) => format!("lowerdir={upper}:{lowers}"),
                None => o.clone(),
            })
            .collect();
    }
    out.options.retain(|o| o != "rw");
    out.options.push("ro".to_owned());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_split_into_flags_and_data() {
        let (flags, data) = parse_options(&[
            "ro".into(),
            "rbind".into(),
            "nosuid".into(),
            "index=off".into(),
            "lowerdir=/a:/b".into(),
        ]);
        assert_eq!(
            flags,
            MsFlags::MS_RDONLY | MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_NOSUID
        );
        assert_eq!(data, ["index=off", "lowerdir=/a:/b"]);
        let (flags, _) = parse_options(&["ro".into(), "rw".into()]);
        assert!(!flags.contains(MsFlags::MS_RDONLY));
    }

    #[test]
    fn read_only_overlay_folds_upper_into_lowers() {
        let m = Mount {
            kind: "overlay".into(),
            source: "overlay".into(),
            target: String::new(),
            options: vec![
                "index=off".into(),
                "workdir=/s/2/work".into(),
                "upperdir=/s/2/fs".into(),
                "lowerdir=/s/1/fs".into(),
            ],
        };
        let ro = read_only(&m);
        assert_eq!(ro.options, ["index=off", "lowerdir=/s/2/fs:/s/1/fs", "ro"]);
        assert!(ro.is_read_only());
        let b = read_only(&Mount::bind("/x", false));
        assert_eq!(b.options, ["rbind", "ro"]);
    }
}
