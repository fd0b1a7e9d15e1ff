//! Intel RDT (and AMD QoS) through the resctrl filesystem: `linux.intelRdt`.
//!
//! A container goes into a resctrl group (a CLOS): the one named by `closID`, which may already
//! exist and be shared, or one named after the container. The spec's `l3CacheSchema` and
//! `memBwSchema` lines are written to the group's `schemata`, the container's first process to
//! its `tasks` (its children inherit the group). A group named after the container is removed
//! on delete; a `closID` group is left alone, since others may use it.
//!
//! The resctrl root is a parameter ([`Resctrl::at`]) so the file steps can be exercised against
//! a directory; [`Resctrl::find`] looks for the real mount and fails, before any process is
//! cloned, when the host has none.

use std::path::{Path, PathBuf};

use berth_core::{Error, Result};

use crate::rootfs::sys_err;
use crate::spec::RdtPlan;
use crate::syscall::Syscall;

/// Where resctrl is mounted on hosts that have it.
pub const RESCTRL_ROOT: &str = "/sys/fs/resctrl";

/// A resctrl filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resctrl {
    root: PathBuf,
}

impl Resctrl {
    /// The resctrl mount of this host, from `/proc/self/mountinfo`.
    pub fn find() -> Result<Resctrl> {
        let info = crate::procfs::read("/proc/self/mountinfo")
            .map_err(|e| Error::io("read /proc/self/mountinfo", e))?;
        Self::from_mountinfo(&info).ok_or_else(|| {
            Error::failed_precondition(format!(
                "linux.intelRdt is set but no resctrl filesystem is mounted (expected at \
                 {RESCTRL_ROOT}: the host lacks Intel RDT / AMD QoS, or `mount -t resctrl \
                 resctrl {RESCTRL_ROOT}` was not done)"
            ))
        })
    }

    /// The first resctrl mount point in a mountinfo text.
    pub fn from_mountinfo(info: &str) -> Option<Resctrl> {
        info.lines().find_map(|line| {
            // "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPER"
            let (left, right) = line.split_once(" - ")?;
            let fstype = right.split_whitespace().next()?;
            let mount_point = left.split_whitespace().nth(4)?;
            (fstype == "resctrl").then(|| Resctrl {
                root: PathBuf::from(mount_point.replace("\\040", " ")),
            })
        })
    }

    /// A resctrl filesystem (or a stand-in directory) at `root`.
    pub fn at(root: impl Into<PathBuf>) -> Resctrl {
        Resctrl { root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The group directory of container `id`.
    pub fn group(&self, plan: &RdtPlan, id: &str) -> PathBuf {
        self.root.join(plan.clos_id.as_deref().unwrap_or(id))
    }

    /// Fails unless the host monitors what `enableCMT` / `enableMBM` ask for, as the
    /// runtime spec requires; read from `info/L3_MON/mon_features`.
    pub fn check_monitoring(&self, plan: &RdtPlan) -> Result<()> {
        if plan.monitoring_features.is_empty() {
            return Ok(());
        }
        let path = self.root.join("info/L3_MON/mon_features");
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        for wanted in &plan.monitoring_features {
            if !wanted.iter().any(|f| have.lines().any(|l| l.trim() == *f)) {
                return Err(Error::failed_precondition(format!(
                    "linux.intelRdt asks for {} monitoring, which this host's resctrl does not \
                     offer ({} lists no {})",
                    if wanted.contains(&"llc_occupancy") {
                        "CMT (cache)"
                    } else {
                        "MBM (memory bandwidth)"
                    },
                    path.display(),
                    wanted.join(" or ")
                )));
            }
        }
        Ok(())
    }

    /// The container's monitoring group (`enableMonitoring`): `mon_groups/<id>` of its group.
    pub fn monitoring_group(&self, plan: &RdtPlan, id: &str) -> PathBuf {
        self.group(plan, id).join("mon_groups").join(id)
    }

    /// Puts `pid` (and so its future children) in the container's group, creating the group
    /// unless it is an existing `closID` one, and writes the schemata; with `enableMonitoring`
    /// also in a monitoring group of its own.
    pub fn join(&self, sys: &dyn Syscall, plan: &RdtPlan, id: &str, pid: i32) -> Result<PathBuf> {
        let group = self.group(plan, id);
        match sys.file_kind(&group) {
            Ok(_) if plan.clos_id.is_some() => {}
            Ok(_) => {
                return Err(Error::already_exists(format!(
                    "resctrl group {} already exists (another container named {id:?}?)",
                    group.display()
                )));
            }
            Err(nix::errno::Errno::ENOENT) => sys
                .mkdir_all(&group, 0o755)
                .map_err(|e| sys_err(format!("create resctrl group {}", group.display()), e))?,
            Err(e) => return Err(sys_err(format!("resctrl group {}", group.display()), e)),
        }
        if !plan.schemata.is_empty() {
            // One write: the kernel parses it line by line, and a partial schemata never shows.
            let schemata = group.join("schemata");
            let text: String = plan.schemata.iter().map(|l| format!("{l}\n")).collect();
            sys.write_file(&schemata, text.as_bytes()).map_err(|e| {
                sys_err(
                    format!("write {:?} to {}", text.trim_end(), schemata.display()),
                    e,
                )
            })?;
        }
        let tasks = group.join("tasks");
        sys.write_file(&tasks, pid.to_string().as_bytes())
            .map_err(|e| sys_err(format!("add pid {pid} to {}", tasks.display()), e))?;
        if plan.monitoring_group {
            // A task is in one control group and one of its monitoring groups: joining the
            // monitoring group after the control group keeps both.
            let mon = self.monitoring_group(plan, id);
            sys.mkdir_all(&mon, 0o755).map_err(|e| {
                sys_err(
                    format!("create resctrl monitoring group {}", mon.display()),
                    e,
                )
            })?;
            let tasks = mon.join("tasks");
            sys.write_file(&tasks, pid.to_string().as_bytes())
                .map_err(|e| sys_err(format!("add pid {pid} to {}", tasks.display()), e))?;
        }
        Ok(group)
    }

    /// Removes the container's monitoring group and its own group (never a `closID` one); a
    /// missing group is fine.
    pub fn remove(&self, sys: &dyn Syscall, plan: &RdtPlan, id: &str) -> Result<()> {
        if plan.monitoring_group {
            let mon = self.monitoring_group(plan, id);
            match sys.remove_dir(&mon) {
                Ok(()) | Err(nix::errno::Errno::ENOENT) => {}
                Err(e) => {
                    return Err(sys_err(
                        format!("remove resctrl monitoring group {}", mon.display()),
                        e,
                    ));
                }
            }
        }
        if plan.clos_id.is_some() {
            return Ok(());
        }
        let group = self.group(plan, id);
        match sys.remove_dir(&group) {
            Ok(()) | Err(nix::errno::Errno::ENOENT) => Ok(()),
            Err(e) => Err(sys_err(
                format!("remove resctrl group {}", group.display()),
                e,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_resctrl_in_mountinfo() {
        let info = "22 1 0:20 / /sys rw - sysfs sysfs rw\n\
                    40 22 0:35 / /sys/fs/resctrl rw,relatime shared:9 - resctrl resctrl rw\n";
        assert_eq!(
            Resctrl::from_mountinfo(info),
            Some(Resctrl::at("/sys/fs/resctrl"))
        );
        assert_eq!(
            Resctrl::from_mountinfo("22 1 0:20 / /sys rw - sysfs sysfs rw\n"),
            None
        );
    }
}
