//! Loading `config.json` and validating all of it, before any process is cloned.
//!
//! [`Plan`] is the spec resolved into what the init sequence needs: absolute paths, mount flags
//! split from filesystem data, capability masks, compiled seccomp, looked-up rlimits. Every
//! error a spec can cause is found here, in the caller's process, with the field that caused it.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::path::{Component, Path, PathBuf};

use berth_core::mount::{OptionEffect, option_effect};
use berth_core::{Error, ErrorKind, Result};
use nix::mount::MsFlags;
use nix::sched::CloneFlags;
use nix::sys::stat::SFlag;
use oci_spec::runtime::{
    IOPriorityClass, Linux, LinuxDeviceType, LinuxIOPriority, LinuxIdMapping, LinuxIntelRdt,
    LinuxNamespaceType, LinuxPersonality, LinuxPersonalityDomain, LinuxResources,
    LinuxSchedulerFlag, LinuxSchedulerPolicy, LinuxSeccomp, Mount, Process, Scheduler, Spec,
};

use crate::capabilities::CapabilitySets;
use crate::rlimits::Rlimit;
use crate::seccomp::SeccompProgram;

/// The OCI runtime spec versions this runtime implements.
pub const OCI_VERSION: &str = "1.2.0";

/// Reads `<bundle>/config.json`.
pub fn load(bundle: &Path) -> Result<Spec> {
    let path = bundle.join("config.json");
    let data =
        std::fs::read(&path).map_err(|e| Error::io(format!("read {}", path.display()), e))?;
    parse(&data).map_err(|e| Error::invalid_argument(format!("parse {}: {e}", path.display())))
}

/// Parses a `config.json`, taking the runtime spec's names where oci-spec spells them otherwise.
pub fn parse(data: &[u8]) -> std::result::Result<Spec, serde_json::Error> {
    let mut value: serde_json::Value = serde_json::from_slice(data)?;
    if let Some(p) = value.get_mut("process") {
        normalize_process(p);
    }
    if let Some(serde_json::Value::Object(rdt)) = value.pointer_mut("/linux/intelRdt") {
        // oci-spec 0.10 derives camelCase names from its fields (`enableCmt`); the runtime
        // spec says `enableCMT` and `enableMBM`.
        for (spec_name, ours) in [("enableCMT", "enableCmt"), ("enableMBM", "enableMbm")] {
            if let Some(v) = rdt.remove(spec_name) {
                rdt.insert(ours.to_owned(), v);
            }
        }
    }
    serde_json::from_value(value)
}

/// Parses a process JSON (`exec --process`), as [`parse`] does a whole spec.
pub fn parse_process(data: &[u8]) -> std::result::Result<Process, serde_json::Error> {
    let mut value: serde_json::Value = serde_json::from_slice(data)?;
    normalize_process(&mut value);
    serde_json::from_value(value)
}

/// oci-spec 0.10 derives two scheduler flag names from its enum (`SCHED_RESET_ON_FORK`,
/// `SCHED_FLAG_D_L_OVERRUN`) where the runtime spec says `SCHED_FLAG_RESET_ON_FORK` and
/// `SCHED_FLAG_DL_OVERRUN`: rename the spec's to oci-spec's before deserializing.
fn normalize_process(process: &mut serde_json::Value) {
    let Some(flags) = process
        .pointer_mut("/scheduler/flags")
        .and_then(serde_json::Value::as_array_mut)
    else {
        return;
    };
    for flag in flags {
        let renamed = match flag.as_str() {
            Some("SCHED_FLAG_RESET_ON_FORK") => "SCHED_RESET_ON_FORK",
            Some("SCHED_FLAG_DL_OVERRUN") => "SCHED_FLAG_D_L_OVERRUN",
            _ => continue,
        };
        *flag = serde_json::Value::from(renamed);
    }
}

/// A namespace the container gets: a new one, or an existing one joined by path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespacePlan {
    /// The clone flag of the namespace type.
    pub flag: CloneFlags,
    /// The namespace file to join, or None for a new namespace.
    pub path: Option<PathBuf>,
}

/// User namespace id mappings, written by the parent into `/proc/PID/{uid,gid}_map`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdMappings {
    /// uid_map lines.
    pub uid: Vec<LinuxIdMapping>,
    /// gid_map lines.
    pub gid: Vec<LinuxIdMapping>,
}

impl IdMappings {
    /// The text for a `*_map` file.
    pub fn format(map: &[LinuxIdMapping]) -> String {
        map.iter()
            .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
            .collect()
    }

    /// The host id that `id` inside the namespace maps to, if any.
    pub fn to_host(map: &[LinuxIdMapping], id: u32) -> Option<u32> {
        map.iter().find_map(|m| {
            let off = id.checked_sub(m.container_id())?;
            (off < m.size()).then(|| m.host_id() + off)
        })
    }
}

/// What kind of mount an entry is, which decides the sequence used to mount it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountKind {
    /// bind or rbind of a host path.
    Bind,
    /// A cgroup filesystem view (v1 binds of the container's cgroups, or cgroup2).
    Cgroup,
    /// Any other filesystem type mounted from its source.
    Filesystem,
}

/// One spec mount, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountPlan {
    /// How it is mounted.
    pub kind: MountKind,
    /// Absolute path inside the container.
    pub destination: PathBuf,
    /// The source (absolute for binds; relative binds are resolved against the bundle).
    pub source: Option<PathBuf>,
    /// Filesystem type.
    pub fstype: Option<String>,
    /// Flags for the mount itself.
    pub flags: MsFlags,
    /// Propagation changes made after mounting (each applied as its own mount call).
    pub propagation: Vec<MsFlags>,
    /// Filesystem-specific options.
    pub data: Option<String>,
    /// Recursive attributes (`rro`, `rnosuid`...), applied with mount_setattr(2) and
    /// `AT_RECURSIVE` once the mount is in place.
    pub recursive: Option<MountAttr>,
    /// Id mapping of a bind mount (`idmap` / `ridmap`).
    pub idmap: Option<IdmapPlan>,
}

impl MountPlan {
    /// Parses a spec mount; relative bind sources are taken relative to `bundle`.
    pub fn parse(m: &Mount, bundle: &Path) -> Result<MountPlan> {
        let dest = m.destination();
        let what = || format!("mount {}", dest.display());
        if !dest.is_absolute() {
            return Err(Error::invalid_argument(format!(
                "{}: destination must be an absolute path",
                what()
            )));
        }
        if dest.components().any(|c| c == Component::ParentDir) {
            return Err(Error::invalid_argument(format!(
                "{}: destination must not contain \"..\"",
                what()
            )));
        }
        let mut flags = MsFlags::empty();
        let mut propagation = Vec::new();
        let mut data = Vec::new();
        let mut bind = false;
        let mut recursive: Option<MountAttr> = None;
        let mut idmap_recursive: Option<bool> = None;
        for opt in m.options().iter().flatten() {
            let (set, clear) = match option_effect(opt) {
                OptionEffect::Flags { set, clear } => {
                    bind |= set & berth_core::mount::ms::BIND != 0;
                    (
                        MsFlags::from_bits_retain(set),
                        MsFlags::from_bits_retain(clear),
                    )
                }
                OptionEffect::Propagation(p) => {
                    propagation.push(MsFlags::from_bits_retain(p));
                    continue;
                }
                OptionEffect::None => continue,
                OptionEffect::Other => match opt.as_str() {
                    // Options runc accepts that need no action here.
                    "tmpcopyup" | "norbind" => continue,
                    "idmap" | "ridmap" => {
                        idmap_recursive = Some(opt == "ridmap");
                        continue;
                    }
                    other if other.starts_with('r') && is_recursive_attr(other) => {
                        let (set, clear) = recursive_attr(other);
                        let attr = recursive.get_or_insert_with(MountAttr::default);
                        attr.add(set, clear);
                        continue;
                    }
                    _ => {
                        data.push(opt.clone());
                        continue;
                    }
                },
            };
            flags |= set;
            flags &= !clear;
        }
        let fstype = m.typ().clone().filter(|t| !t.is_empty());
        let kind = if bind || fstype.as_deref() == Some("bind") {
            MountKind::Bind
        } else if matches!(fstype.as_deref(), Some("cgroup") | Some("cgroup2")) {
            MountKind::Cgroup
        } else {
            MountKind::Filesystem
        };
        if kind == MountKind::Bind {
            flags |= MsFlags::MS_BIND;
        }
        let mut source = m.source().clone();
        if kind == MountKind::Bind {
            let src = source.ok_or_else(|| {
                Error::invalid_argument(format!("{}: a bind mount needs a source", what()))
            })?;
            source = Some(if src.is_absolute() {
                src
            } else {
                bundle.join(src)
            });
        } else if kind == MountKind::Filesystem && fstype.is_none() {
            return Err(Error::invalid_argument(format!(
                "{}: no filesystem type",
                what()
            )));
        }
        let own_maps = match (m.uid_mappings(), m.gid_mappings()) {
            (None, None) => None,
            (Some(uid), Some(gid)) if !uid.is_empty() && !gid.is_empty() => Some(IdMappings {
                uid: uid.clone(),
                gid: gid.clone(),
            }),
            _ => {
                return Err(Error::invalid_argument(format!(
                    "{}: uidMappings and gidMappings must be given together, and not empty",
                    what()
                )));
            }
        };
        let idmap = match (idmap_recursive, own_maps) {
            (None, None) => None,
            (None, Some(_)) => {
                return Err(Error::invalid_argument(format!(
                    "{}: uidMappings/gidMappings need the \"idmap\" or \"ridmap\" option",
                    what()
                )));
            }
            (Some(recursive), mappings) => {
                if kind != MountKind::Bind {
                    return Err(Error::invalid_argument(format!(
                        "{}: id-mapped mounts are only supported for bind mounts",
                        what()
                    )));
                }
                Some(IdmapPlan {
                    recursive,
                    mappings,
                })
            }
        };
        Ok(MountPlan {
            kind,
            destination: dest.clone(),
            source,
            fstype,
            flags,
            propagation,
            data: (!data.is_empty()).then(|| data.join(",")),
            recursive,
            idmap,
        })
    }
}

/// `mount_setattr(2)` attributes (`MOUNT_ATTR_*`): the bits to set and the bits to clear.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MountAttr {
    /// `attr_set`.
    pub set: u64,
    /// `attr_clr`.
    pub clear: u64,
}

impl MountAttr {
    /// Adds one option's bits; a later option overrides an earlier one on the same bits.
    fn add(&mut self, set: u64, clear: u64) {
        self.set = (self.set & !clear) | set;
        self.clear = (self.clear & !set) | clear;
        // The atime modes are an enum inside MOUNT_ATTR__ATIME: changing one means clearing the
        // whole field and setting the new value (the kernel refuses a partial clear).
        if clear & MOUNT_ATTR_ATIME_MASK != 0 {
            self.clear |= MOUNT_ATTR_ATIME_MASK;
        }
    }
}

/// An id-mapped bind mount (`idmap` / `ridmap`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdmapPlan {
    /// `ridmap`: every mount of the tree is id-mapped, not only its top.
    pub recursive: bool,
    /// The mount's own `uidMappings`/`gidMappings`; None uses the container's user namespace.
    pub mappings: Option<IdMappings>,
}

/// `MOUNT_ATTR_RDONLY`.
pub const MOUNT_ATTR_RDONLY: u64 = 0x0000_0001;
/// `MOUNT_ATTR_NOSUID`.
pub const MOUNT_ATTR_NOSUID: u64 = 0x0000_0002;
/// `MOUNT_ATTR_NODEV`.
pub const MOUNT_ATTR_NODEV: u64 = 0x0000_0004;
/// `MOUNT_ATTR_NOEXEC`.
pub const MOUNT_ATTR_NOEXEC: u64 = 0x0000_0008;
/// `MOUNT_ATTR__ATIME`: the field holding the atime mode.
pub const MOUNT_ATTR_ATIME_MASK: u64 = 0x0000_0070;
/// `MOUNT_ATTR_RELATIME` (the value 0 of the atime field).
pub const MOUNT_ATTR_RELATIME: u64 = 0x0000_0000;
/// `MOUNT_ATTR_NOATIME`.
pub const MOUNT_ATTR_NOATIME: u64 = 0x0000_0010;
/// `MOUNT_ATTR_STRICTATIME`.
pub const MOUNT_ATTR_STRICTATIME: u64 = 0x0000_0020;
/// `MOUNT_ATTR_NODIRATIME`.
pub const MOUNT_ATTR_NODIRATIME: u64 = 0x0000_0080;
/// `MOUNT_ATTR_IDMAP`.
pub const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
/// `MOUNT_ATTR_NOSYMFOLLOW`.
pub const MOUNT_ATTR_NOSYMFOLLOW: u64 = 0x0020_0000;

/// The (set, clear) `MOUNT_ATTR_*` bits of a recursive option (one [`is_recursive_attr`] knows).
///
/// The atime options follow mount(8): `ratime` and `rnostrictatime` go back to the kernel's
/// default (relatime), `rnorelatime` asks for strictatime, the mode that is not relatime.
fn recursive_attr(opt: &str) -> (u64, u64) {
    const ATIME: u64 = MOUNT_ATTR_ATIME_MASK;
    match opt {
        "rro" => (MOUNT_ATTR_RDONLY, 0),
        "rrw" => (0, MOUNT_ATTR_RDONLY),
        "rnosuid" => (MOUNT_ATTR_NOSUID, 0),
        "rsuid" => (0, MOUNT_ATTR_NOSUID),
        "rnodev" => (MOUNT_ATTR_NODEV, 0),
        "rdev" => (0, MOUNT_ATTR_NODEV),
        "rnoexec" => (MOUNT_ATTR_NOEXEC, 0),
        "rexec" => (0, MOUNT_ATTR_NOEXEC),
        "rnodiratime" => (MOUNT_ATTR_NODIRATIME, 0),
        "rdiratime" => (0, MOUNT_ATTR_NODIRATIME),
        "rrelatime" | "ratime" | "rnostrictatime" => (MOUNT_ATTR_RELATIME, ATIME),
        "rnoatime" => (MOUNT_ATTR_NOATIME, ATIME),
        "rstrictatime" | "rnorelatime" => (MOUNT_ATTR_STRICTATIME, ATIME),
        "rnosymfollow" => (MOUNT_ATTR_NOSYMFOLLOW, 0),
        "rsymfollow" => (0, MOUNT_ATTR_NOSYMFOLLOW),
        _ => (0, 0),
    }
}

fn is_recursive_attr(opt: &str) -> bool {
    matches!(
        opt,
        "rro"
            | "rrw"
            | "rnosuid"
            | "rsuid"
            | "rnodev"
            | "rdev"
            | "rnoexec"
            | "rexec"
            | "rnodiratime"
            | "rdiratime"
            | "rrelatime"
            | "rnorelatime"
            | "rnoatime"
            | "ratime"
            | "rstrictatime"
            | "rnostrictatime"
            | "rnosymfollow"
            | "rsymfollow"
    )
}

/// The propagation flags for a propagation option name.
pub fn propagation_flag(name: &str) -> Option<MsFlags> {
    match option_effect(name) {
        OptionEffect::Propagation(p) => Some(MsFlags::from_bits_retain(p)),
        _ => None,
    }
}

/// A device node to create in the container's /dev.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevicePlan {
    /// Absolute path inside the container.
    pub path: PathBuf,
    /// Character, block or fifo.
    pub kind: SFlag,
    /// Major number.
    pub major: u64,
    /// Minor number.
    pub minor: u64,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

impl DevicePlan {
    fn new(path: &str, major: u64, minor: u64) -> DevicePlan {
        DevicePlan {
            path: PathBuf::from(path),
            kind: SFlag::S_IFCHR,
            major,
            minor,
            mode: 0o666,
            uid: 0,
            gid: 0,
        }
    }

    /// The devices every container gets (as runc and the spec's "default devices").
    pub fn defaults() -> Vec<DevicePlan> {
        // runc's order, so mount tables (with binds, in user namespaces) read the same.
        vec![
            DevicePlan::new("/dev/null", 1, 3),
            DevicePlan::new("/dev/random", 1, 8),
            DevicePlan::new("/dev/full", 1, 7),
            DevicePlan::new("/dev/tty", 5, 0),
            DevicePlan::new("/dev/zero", 1, 5),
            DevicePlan::new("/dev/urandom", 1, 9),
        ]
    }

    /// The dev_t for mknod.
    pub fn dev(&self) -> u64 {
        nix::sys::stat::makedev(self.major, self.minor)
    }
}

/// The process to run: the container's init or an exec'd process.
#[derive(Debug, Clone, Default)]
pub struct ProcessPlan {
    /// argv; `args[0]` is looked up in the container's PATH by init.
    pub args: Vec<CString>,
    /// The environment.
    pub env: Vec<CString>,
    /// Working directory inside the container (absolute).
    pub cwd: PathBuf,
    /// uid.
    pub uid: u32,
    /// gid.
    pub gid: u32,
    /// Supplementary groups.
    pub additional_gids: Vec<u32>,
    /// umask, if the spec sets one.
    pub umask: Option<u32>,
    /// Whether to allocate a pty and send its master over the console socket.
    pub terminal: bool,
    /// Capability sets; None keeps what the process has (root's full set).
    pub capabilities: Option<CapabilitySets>,
    /// rlimits, applied in order.
    pub rlimits: Vec<Rlimit>,
    /// prctl(PR_SET_NO_NEW_PRIVS).
    pub no_new_privileges: bool,
    /// /proc/self/oom_score_adj.
    pub oom_score_adj: Option<i32>,
    /// Seccomp filter.
    pub seccomp: Option<SeccompProgram>,
    /// Where the filter's notify listener goes (`linux.seccomp.listenerPath`), when it has one.
    pub seccomp_listener: Option<SeccompListener>,
    /// `process.scheduler`, for sched_setattr(2).
    pub scheduler: Option<SchedAttr>,
    /// `process.ioPriority` as the ioprio_set(2) value (class << 13 | level).
    pub io_priority: Option<u16>,
}

impl ProcessPlan {
    /// Validates a spec process; `seccomp` is the container's (shared by its exec'd processes).
    pub fn new(process: &Process, seccomp: Option<SeccompProgram>) -> Result<ProcessPlan> {
        let args = process.args().clone().unwrap_or_default();
        if args.is_empty() {
            return Err(Error::invalid_argument("process.args must not be empty"));
        }
        let cstrings = |v: &[String], what: &str| -> Result<Vec<CString>> {
            v.iter()
                .map(|s| {
                    CString::new(s.as_bytes()).map_err(|_| {
                        Error::invalid_argument(format!("{what} {s:?} contains a NUL byte"))
                    })
                })
                .collect()
        };
        let env = process.env().clone().unwrap_or_default();
        for e in &env {
            if !e.contains('=') {
                return Err(Error::invalid_argument(format!(
                    "process.env entry {e:?} is not KEY=VALUE"
                )));
            }
        }
        let cwd = process.cwd().clone();
        if !cwd.is_absolute() {
            return Err(Error::invalid_argument(format!(
                "process.cwd {} must be an absolute path",
                cwd.display()
            )));
        }
        let user = process.user();
        let capabilities = match process.capabilities() {
            Some(c) => {
                let (mut sets, warnings) = CapabilitySets::from_spec(c)?;
                for w in warnings {
                    tracing::warn!("{w}");
                }
                // The kernel raises an ambient capability only if it is both permitted and
                // inheritable; like runc, the others are left out with a warning.
                let raisable = sets.permitted & sets.inheritable;
                let dropped = sets.ambient & !raisable;
                if dropped != 0 {
                    // runc's own default spec asks for this: not worth a warning on every run.
                    tracing::debug!(
                        "ambient capabilities {:?} are not both permitted and inheritable: not raised",
                        crate::capabilities::names(dropped)
                    );
                    sets.ambient &= raisable;
                }
                Some(sets)
            }
            None => None,
        };
        let rlimits = match process.rlimits() {
            Some(r) => Rlimit::from_specs(r)?,
            None => Vec::new(),
        };
        if let Some(profile) = process
            .apparmor_profile()
            .as_deref()
            .filter(|p| !p.is_empty())
        {
            if !Path::new("/sys/kernel/security/apparmor").exists() {
                tracing::warn!(
                    profile,
                    "AppArmor is not enabled on this host; profile ignored"
                );
            } else {
                tracing::warn!(
                    profile,
                    "AppArmor profiles are not applied by berth-runtime yet"
                );
            }
        }
        if let Some(label) = process.selinux_label().as_deref().filter(|p| !p.is_empty()) {
            tracing::warn!(label, "SELinux is not enabled on this host; label ignored");
        }
        if let Some(adj) = process.oom_score_adj()
            && !(-1000..=1000).contains(&adj)
        {
            return Err(Error::invalid_argument(format!(
                "process.oomScoreAdj {adj} is outside -1000..1000"
            )));
        }
        Ok(ProcessPlan {
            args: cstrings(&args, "process.args entry")?,
            env: cstrings(&env, "process.env entry")?,
            cwd,
            uid: user.uid(),
            gid: user.gid(),
            additional_gids: user.additional_gids().clone().unwrap_or_default(),
            umask: user.umask(),
            terminal: process.terminal().unwrap_or(false),
            capabilities,
            rlimits,
            no_new_privileges: process.no_new_privileges().unwrap_or(false),
            oom_score_adj: process.oom_score_adj(),
            seccomp,
            seccomp_listener: None,
            scheduler: process
                .scheduler()
                .as_ref()
                .map(SchedAttr::new)
                .transpose()?,
            io_priority: process
                .io_priority()
                .as_ref()
                .map(io_priority)
                .transpose()?,
        })
    }

    /// The value of PATH in the process's environment.
    pub fn path_var(&self) -> Option<&str> {
        self.env
            .iter()
            .find_map(|e| e.to_str().ok().and_then(|s| s.strip_prefix("PATH=")))
    }
}

/// Hooks by phase, as the spec lists them.
pub type Hooks = oci_spec::runtime::Hooks;

/// The whole container, validated.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The spec as loaded (kept for the state and for hooks).
    pub spec: Spec,
    /// The bundle directory (absolute).
    pub bundle: PathBuf,
    /// The root filesystem (absolute).
    pub rootfs: PathBuf,
    /// `root.readonly`.
    pub readonly_root: bool,
    /// Namespaces in the order they are set up; the user namespace, when new, comes first.
    pub namespaces: Vec<NamespacePlan>,
    /// Id mappings for a new user namespace.
    pub id_mappings: Option<IdMappings>,
    /// Spec mounts, in order.
    pub mounts: Vec<MountPlan>,
    /// Propagation of `/` inside the container's mount namespace.
    pub rootfs_propagation: MsFlags,
    /// Devices to create (defaults plus `linux.devices`), when /dev is a fresh mount.
    pub devices: Vec<DevicePlan>,
    /// `linux.maskedPaths`.
    pub masked_paths: Vec<PathBuf>,
    /// `linux.readonlyPaths`.
    pub readonly_paths: Vec<PathBuf>,
    /// hostname.
    pub hostname: Option<String>,
    /// domainname.
    pub domainname: Option<String>,
    /// `linux.sysctl`, sorted for a stable order.
    pub sysctl: BTreeMap<String, String>,
    /// The container's process.
    pub process: ProcessPlan,
    /// `linux.cgroupsPath`.
    pub cgroups_path: Option<String>,
    /// `linux.resources`.
    pub resources: Option<LinuxResources>,
    /// `linux.timeOffsets`, for a new time namespace: the text for `/proc/self/timens_offsets`.
    pub time_offsets: Option<String>,
    /// `linux.personality` as the persona value for personality(2).
    pub personality: Option<u64>,
    /// `linux.intelRdt`.
    pub intel_rdt: Option<RdtPlan>,
}

impl Plan {
    /// Validates `spec` for the bundle at `bundle`.
    pub fn new(spec: Spec, bundle: &Path) -> Result<Plan> {
        Plan::with_seccomp_cache(spec, bundle, None)
    }

    /// As [`Plan::new`], with the seccomp filter taken from (or stored in) the cache directory
    /// `seccomp_cache` (see [`SeccompProgram::compile_cached`]).
    pub fn with_seccomp_cache(
        spec: Spec,
        bundle: &Path,
        seccomp_cache: Option<&Path>,
    ) -> Result<Plan> {
        let bundle = std::fs::canonicalize(bundle)
            .map_err(|e| Error::io(format!("bundle {}", bundle.display()), e))?;
        let version = spec.version();
        if !version.starts_with("1.") {
            return Err(Error::invalid_argument(format!(
                "ociVersion {version:?} is not supported (this runtime implements 1.0 to {OCI_VERSION})"
            )));
        }
        let root = spec
            .root()
            .as_ref()
            .ok_or_else(|| Error::invalid_argument("root is required"))?;
        let rootfs = if root.path().is_absolute() {
            root.path().clone()
        } else {
            bundle.join(root.path())
        };
        let rootfs = std::fs::canonicalize(&rootfs)
            .map_err(|e| Error::io(format!("root.path {}", rootfs.display()), e))?;
        if !rootfs.is_dir() {
            return Err(Error::invalid_argument(format!(
                "root.path {} is not a directory",
                rootfs.display()
            )));
        }
        let linux = spec
            .linux()
            .clone()
            .ok_or_else(|| Error::invalid_argument("linux section is required on Linux"))?;

        let personality = match linux.personality() {
            Some(p) => Some(personality(p)?),
            None => None,
        };
        let intel_rdt = linux
            .intel_rdt()
            .as_ref()
            .map(RdtPlan::from_spec)
            .transpose()?;
        let mut namespaces = Vec::new();
        let mut seen = CloneFlags::empty();
        for ns in linux.namespaces().iter().flatten() {
            let flag = match ns.typ() {
                LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
                LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
                LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
                LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
                LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
                LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
                LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
                LinuxNamespaceType::Time => CLONE_NEWTIME,
            };
            if seen.contains(flag) {
                return Err(Error::invalid_argument(format!(
                    "namespace {} is listed twice",
                    ns.typ()
                )));
            }
            seen |= flag;
            let path = ns.path().clone().filter(|p| !p.as_os_str().is_empty());
            if let Some(p) = &path
                && !p.exists()
            {
                return Err(Error::not_found(format!(
                    "namespace {} path {}",
                    ns.typ(),
                    p.display()
                )));
            }
            namespaces.push(NamespacePlan { flag, path });
        }
        // The user namespace is set up first so that the others belong to it.
        namespaces.sort_by_key(|n| n.flag != CloneFlags::CLONE_NEWUSER);
        if !seen.contains(CloneFlags::CLONE_NEWNS) {
            return Err(Error::invalid_argument(
                "a mount namespace is required (the runtime pivots the root inside it)",
            ));
        }

        let new_userns = namespaces
            .iter()
            .any(|n| n.flag == CloneFlags::CLONE_NEWUSER && n.path.is_none());
        let id_mappings = if new_userns {
            let uid = linux.uid_mappings().clone().unwrap_or_default();
            let gid = linux.gid_mappings().clone().unwrap_or_default();
            if uid.is_empty() || gid.is_empty() {
                return Err(Error::invalid_argument(
                    "a new user namespace needs linux.uidMappings and linux.gidMappings",
                ));
            }
            Some(IdMappings { uid, gid })
        } else {
            if linux.uid_mappings().as_ref().is_some_and(|m| !m.is_empty()) {
                return Err(Error::invalid_argument(
                    "linux.uidMappings is set but there is no new user namespace",
                ));
            }
            None
        };

        let time_offsets = time_offsets(&linux, &namespaces)?;

        let mut mounts = Vec::new();
        for m in spec.mounts().iter().flatten() {
            let plan = MountPlan::parse(m, &bundle)?;
            if let Some(idmap) = &plan.idmap
                && idmap.mappings.is_none()
                && !seen.contains(CloneFlags::CLONE_NEWUSER)
            {
                return Err(Error::invalid_argument(format!(
                    "mount {}: an id-mapped mount without its own uidMappings/gidMappings uses \
                     the container's user namespace, and the container has none",
                    plan.destination.display()
                )));
            }
            mounts.push(plan);
        }

        let rootfs_propagation = match linux.rootfs_propagation().as_deref() {
            None | Some("") => MsFlags::MS_SLAVE | MsFlags::MS_REC,
            Some(p) => propagation_flag(p).ok_or_else(|| {
                Error::invalid_argument(format!("linux.rootfsPropagation {p:?} is not valid"))
            })?,
        };

        let mut devices = DevicePlan::defaults();
        for d in linux.devices().iter().flatten() {
            let kind = match d.typ() {
                LinuxDeviceType::C | LinuxDeviceType::U => SFlag::S_IFCHR,
                LinuxDeviceType::B => SFlag::S_IFBLK,
                LinuxDeviceType::P => SFlag::S_IFIFO,
                LinuxDeviceType::A => {
                    return Err(Error::invalid_argument(format!(
                        "device {}: type \"a\" is only valid in cgroup rules",
                        d.path().display()
                    )));
                }
            };
            if !d.path().starts_with("/dev") {
                return Err(Error::invalid_argument(format!(
                    "device {} must be under /dev",
                    d.path().display()
                )));
            }
            let plan = DevicePlan {
                path: d.path().clone(),
                kind,
                major: u64::try_from(d.major()).unwrap_or(0),
                minor: u64::try_from(d.minor()).unwrap_or(0),
                mode: d.file_mode().unwrap_or(0o666),
                uid: d.uid().unwrap_or(0),
                gid: d.gid().unwrap_or(0),
            };
            devices.retain(|x| x.path != plan.path);
            devices.push(plan);
        }

        let mut sysctl = BTreeMap::new();
        for (k, v) in linux.sysctl().iter().flatten() {
            validate_sysctl(k, &seen)?;
            sysctl.insert(k.clone(), v.clone());
        }

        if spec.hostname().as_deref().is_some_and(|h| !h.is_empty())
            && !seen.contains(CloneFlags::CLONE_NEWUTS)
        {
            return Err(Error::invalid_argument(
                "hostname is set but the container has no UTS namespace of its own",
            ));
        }

        let seccomp = match linux.seccomp() {
            Some(s) => {
                let prog = SeccompProgram::compile_cached(s, seccomp_cache)?;
                for w in prog.warnings() {
                    tracing::warn!("seccomp: {w}");
                }
                Some(prog)
            }
            None => None,
        };
        let process = spec
            .process()
            .as_ref()
            .ok_or_else(|| Error::invalid_argument("process is required"))?;
        let listener = match (linux.seccomp(), &seccomp) {
            (Some(spec), Some(prog)) => SeccompListener::new(spec, prog)?,
            _ => None,
        };
        let mut process = ProcessPlan::new(process, seccomp)?;
        process.seccomp_listener = listener;

        let cgroups_path = linux
            .cgroups_path()
            .as_ref()
            .map(|p| p.to_string_lossy().into_owned())
            .filter(|p| !p.is_empty());

        Ok(Plan {
            bundle,
            rootfs,
            readonly_root: root.readonly().unwrap_or(false),
            namespaces,
            id_mappings,
            mounts,
            rootfs_propagation,
            devices,
            masked_paths: linux
                .masked_paths()
                .iter()
                .flatten()
                .map(PathBuf::from)
                .collect(),
            readonly_paths: linux
                .readonly_paths()
                .iter()
                .flatten()
                .map(PathBuf::from)
                .collect(),
            hostname: spec.hostname().clone().filter(|h| !h.is_empty()),
            domainname: spec.domainname().clone().filter(|h| !h.is_empty()),
            sysctl,
            process,
            cgroups_path,
            resources: linux.resources().clone(),
            time_offsets,
            personality,
            intel_rdt,
            spec,
        })
    }

    /// Whether the container gets a namespace of this type (new or joined).
    pub fn has_namespace(&self, flag: CloneFlags) -> bool {
        self.namespaces.iter().any(|n| n.flag == flag)
    }

    /// Whether the container gets a new user namespace.
    pub fn new_user_namespace(&self) -> bool {
        self.id_mappings.is_some()
    }
}

/// Sysctls the spec may set are those namespaced by a namespace the container has (as runc).
fn validate_sysctl(key: &str, ns: &CloneFlags) -> Result<()> {
    let ipc = matches!(
        key,
        "kernel.msgmax"
            | "kernel.msgmnb"
            | "kernel.msgmni"
            | "kernel.sem"
            | "kernel.shmall"
            | "kernel.shmmax"
            | "kernel.shmmni"
            | "kernel.shm_rmid_forced"
    ) || key.starts_with("fs.mqueue.");
    let (needed, what) = if ipc {
        (CloneFlags::CLONE_NEWIPC, "IPC")
    } else if key.starts_with("net.") {
        (CloneFlags::CLONE_NEWNET, "network")
    } else if key == "kernel.hostname" || key == "kernel.domainname" {
        (CloneFlags::CLONE_NEWUTS, "UTS")
    } else {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            format!("sysctl {key:?} is not namespaced and cannot be set for a container"),
        ));
    };
    if key.contains("..") || key.contains('/') {
        return Err(Error::invalid_argument(format!(
            "sysctl {key:?} is not valid"
        )));
    }
    if !ns.contains(needed) {
        return Err(Error::invalid_argument(format!(
            "sysctl {key:?} needs a {what} namespace of the container's own"
        )));
    }
    Ok(())
}

/// `CLONE_NEWTIME` (nix has no name for it).
pub const CLONE_NEWTIME: CloneFlags = CloneFlags::from_bits_retain(libc::CLONE_NEWTIME);

/// `linux.timeOffsets` as `/proc/self/timens_offsets` text; only for a new time namespace.
fn time_offsets(linux: &Linux, namespaces: &[NamespacePlan]) -> Result<Option<String>> {
    let Some(offsets) = linux.time_offsets().as_ref().filter(|o| !o.is_empty()) else {
        return Ok(None);
    };
    match namespaces.iter().find(|n| n.flag == CLONE_NEWTIME) {
        Some(NamespacePlan { path: None, .. }) => {}
        Some(NamespacePlan { path: Some(p), .. }) => {
            return Err(Error::invalid_argument(format!(
                "linux.timeOffsets cannot be set when joining the time namespace {}: its \
                 offsets are fixed once a process is in it",
                p.display()
            )));
        }
        None => {
            return Err(Error::invalid_argument(
                "linux.timeOffsets needs a new time namespace (linux.namespaces type \"time\")",
            ));
        }
    }
    // Sorted for a stable text; the kernel takes both lines in one write.
    let mut clocks: Vec<_> = offsets.iter().collect();
    clocks.sort_by(|a, b| a.0.cmp(b.0));
    let mut text = String::new();
    for (clock, off) in clocks {
        if clock != "monotonic" && clock != "boottime" {
            return Err(Error::invalid_argument(format!(
                "linux.timeOffsets: clock {clock:?} has no offset in a time namespace \
                 (only \"monotonic\" and \"boottime\")"
            )));
        }
        let nanos = off.nanosecs().unwrap_or(0);
        if nanos >= 1_000_000_000 {
            return Err(Error::invalid_argument(format!(
                "linux.timeOffsets.{clock}.nanosecs {nanos} is not below one second"
            )));
        }
        text.push_str(&format!("{clock} {} {nanos}\n", off.secs().unwrap_or(0)));
    }
    Ok(Some(text))
}

/// `linux.personality` as a persona for personality(2).
pub fn personality(p: &LinuxPersonality) -> Result<u64> {
    const PER_LINUX: u64 = 0x0000;
    const PER_LINUX32: u64 = 0x0008;
    if let Some(flag) = p.flags().iter().flatten().next() {
        // The runtime spec defines no flag values yet.
        return Err(Error::invalid_argument(format!(
            "linux.personality.flags: {flag:?} is not a known flag (the spec defines none)"
        )));
    }
    Ok(match p.domain() {
        LinuxPersonalityDomain::PerLinux => PER_LINUX,
        LinuxPersonalityDomain::PerLinux32 => PER_LINUX32,
    })
}

/// `linux.intelRdt`: the resctrl group to put the container in and what to write to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RdtPlan {
    /// `closID`: an existing (or shared) group's name; None names the group after the container.
    pub clos_id: Option<String>,
    /// `schemata` lines to write: L3 cache, then memory bandwidth, then the spec's own
    /// `schemata` lines (runtime-spec 1.3), which the kernel lets override the first two.
    pub schemata: Vec<String>,
    /// Monitoring features (`info/L3_MON/mon_features` names) that `enableCMT` and
    /// `enableMBM` require of the host; at least one of each inner list must be there.
    pub monitoring_features: Vec<&'static [&'static str]>,
    /// `enableMonitoring` (runtime-spec 1.3): a monitoring group of the container's own in
    /// the group's `mon_groups`.
    pub monitoring_group: bool,
}

impl RdtPlan {
    /// Validates `linux.intelRdt`.
    pub fn from_spec(rdt: &LinuxIntelRdt) -> Result<RdtPlan> {
        let clos_id = rdt.clos_id().clone().filter(|c| !c.is_empty());
        if let Some(c) = &clos_id
            && (c == "." || c == ".." || c.contains('/') || c == "info" || c == "mon_groups")
        {
            return Err(Error::invalid_argument(format!(
                "linux.intelRdt.closID {c:?} is not a valid resctrl group name"
            )));
        }
        let mut schemata = Vec::new();
        for (field, value, prefix) in [
            ("l3CacheSchema", rdt.l3_cache_schema(), "L3"),
            ("memBwSchema", rdt.mem_bw_schema(), "MB"),
        ] {
            for line in value.iter().flat_map(|v| v.lines()).map(str::trim) {
                if line.is_empty() {
                    continue;
                }
                if !line.starts_with(prefix) || !line.contains(':') {
                    return Err(Error::invalid_argument(format!(
                        "linux.intelRdt.{field}: {line:?} is not a {prefix}:<id>=<value>;... \
                         schemata line"
                    )));
                }
                schemata.push(line.to_owned());
            }
        }
        for line in rdt.schemata().iter().flatten().map(|l| l.trim()) {
            if line.is_empty() {
                continue;
            }
            if !line.contains(':') || line.contains('\n') {
                return Err(Error::invalid_argument(format!(
                    "linux.intelRdt.schemata: {line:?} is not a <resource>:<id>=<value>;... line"
                )));
            }
            schemata.push(line.to_owned());
        }
        // Deprecated by runtime-spec 1.3 in favour of enableMonitoring, still part of 1.0–1.2.
        #[allow(deprecated)]
        let (cmt, mbm) = (
            rdt.enable_cmt().unwrap_or(false),
            rdt.enable_mbm().unwrap_or(false),
        );
        let mut monitoring_features: Vec<&'static [&'static str]> = Vec::new();
        if cmt {
            monitoring_features.push(&["llc_occupancy"]);
        }
        if mbm {
            monitoring_features.push(&["mbm_total_bytes", "mbm_local_bytes"]);
        }
        Ok(RdtPlan {
            clos_id,
            schemata,
            monitoring_features,
            monitoring_group: rdt.enable_monitoring().unwrap_or(false),
        })
    }
}

/// Where the seccomp notify listener is handed (`linux.seccomp.listenerPath`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeccompListener {
    /// The agent's unix socket.
    pub path: PathBuf,
    /// `listenerMetadata`, passed on in the container process state.
    pub metadata: String,
}

impl SeccompListener {
    /// The listener of `spec` when `prog` notifies; an error when one is needed and missing.
    pub fn new(spec: &LinuxSeccomp, prog: &SeccompProgram) -> Result<Option<SeccompListener>> {
        let path = spec
            .listener_path()
            .clone()
            .filter(|p| !p.as_os_str().is_empty());
        if !prog.uses_notify() {
            return Ok(None);
        }
        let path = path.ok_or_else(|| {
            Error::invalid_argument(
                "seccomp: a rule uses SCMP_ACT_NOTIFY but linux.seccomp.listenerPath is not set",
            )
        })?;
        if !path.is_absolute() {
            return Err(Error::invalid_argument(format!(
                "linux.seccomp.listenerPath {} must be absolute",
                path.display()
            )));
        }
        Ok(Some(SeccompListener {
            path,
            metadata: spec.listener_metadata().clone().unwrap_or_default(),
        }))
    }
}

/// `struct sched_attr` fields for sched_setattr(2), from `process.scheduler`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchedAttr {
    /// `SCHED_*` policy.
    pub policy: u32,
    /// `SCHED_FLAG_*`.
    pub flags: u64,
    /// Nice value (SCHED_OTHER, SCHED_BATCH).
    pub nice: i32,
    /// Static priority (SCHED_FIFO, SCHED_RR).
    pub priority: u32,
    /// SCHED_DEADLINE runtime, ns.
    pub runtime: u64,
    /// SCHED_DEADLINE deadline, ns.
    pub deadline: u64,
    /// SCHED_DEADLINE period, ns.
    pub period: u64,
}

impl SchedAttr {
    fn new(s: &Scheduler) -> Result<SchedAttr> {
        let policy = match s.policy() {
            LinuxSchedulerPolicy::SchedOther => 0,
            LinuxSchedulerPolicy::SchedFifo => 1,
            LinuxSchedulerPolicy::SchedRr => 2,
            LinuxSchedulerPolicy::SchedBatch => 3,
            LinuxSchedulerPolicy::SchedIdle => 5,
            LinuxSchedulerPolicy::SchedDeadline => 6,
            LinuxSchedulerPolicy::SchedIso => {
                return Err(Error::not_implemented(
                    "process.scheduler.policy SCHED_ISO does not exist in mainline Linux",
                ));
            }
        };
        let nice = s.nice().unwrap_or(0);
        if !(-20..=19).contains(&nice) {
            return Err(Error::invalid_argument(format!(
                "process.scheduler.nice {nice} is outside -20..19"
            )));
        }
        let priority = s.priority().unwrap_or(0);
        let realtime = matches!(policy, 1 | 2);
        if realtime && !(1..=99).contains(&priority) {
            return Err(Error::invalid_argument(format!(
                "process.scheduler.priority {priority} must be 1..99 for {}",
                s.policy()
            )));
        }
        if !realtime && priority != 0 {
            return Err(Error::invalid_argument(format!(
                "process.scheduler.priority must be 0 for {} (it is {priority})",
                s.policy()
            )));
        }
        let (runtime, deadline, period) = (
            s.runtime().unwrap_or(0),
            s.deadline().unwrap_or(0),
            s.period().unwrap_or(0),
        );
        if policy == 6 {
            // The kernel's own rule (period 0 means "the deadline").
            let period_or_deadline = if period == 0 { deadline } else { period };
            if runtime == 0 || runtime > deadline || deadline > period_or_deadline {
                return Err(Error::invalid_argument(format!(
                    "process.scheduler: SCHED_DEADLINE needs 0 < runtime ({runtime}) <= deadline \
                     ({deadline}) <= period ({period})"
                )));
            }
        } else if runtime != 0 || deadline != 0 || period != 0 {
            return Err(Error::invalid_argument(
                "process.scheduler: runtime, deadline and period are only for SCHED_DEADLINE",
            ));
        }
        let mut flags = 0u64;
        for f in s.flags().iter().flatten() {
            flags |= match f {
                LinuxSchedulerFlag::SchedResetOnFork => 0x01,
                LinuxSchedulerFlag::SchedFlagReclaim => 0x02,
                LinuxSchedulerFlag::SchedFlagDLOverrun => 0x04,
                LinuxSchedulerFlag::SchedFlagKeepPolicy => 0x08,
                LinuxSchedulerFlag::SchedFlagKeepParams => 0x10,
                LinuxSchedulerFlag::SchedFlagUtilClampMin => 0x20,
                LinuxSchedulerFlag::SchedFlagUtilClampMax => 0x40,
            };
        }
        Ok(SchedAttr {
            policy,
            flags,
            nice,
            priority: u32::try_from(priority).unwrap_or(0),
            runtime,
            deadline,
            period,
        })
    }
}

/// `process.ioPriority` as ioprio_set(2)'s value.
fn io_priority(p: &LinuxIOPriority) -> Result<u16> {
    let class: u16 = match p.class() {
        IOPriorityClass::IoprioClassRt => 1,
        IOPriorityClass::IoprioClassBe => 2,
        IOPriorityClass::IoprioClassIdle => 3,
    };
    let level = p.priority();
    if !(0..=7).contains(&level) {
        return Err(Error::invalid_argument(format!(
            "process.ioPriority.priority {level} is outside 0..7"
        )));
    }
    Ok(class << 13 | u16::try_from(level).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cores_mount_flag_values_are_the_kernels() {
        use berth_core::mount::ms;
        // On the 64-bit targets Berth builds for, c_ulong is u64: the values compare as they are.
        let pairs: [(u64, libc::c_ulong); 23] = [
            (ms::RDONLY, libc::MS_RDONLY),
            (ms::NOSUID, libc::MS_NOSUID),
            (ms::NODEV, libc::MS_NODEV),
            (ms::NOEXEC, libc::MS_NOEXEC),
            (ms::SYNCHRONOUS, libc::MS_SYNCHRONOUS),
            (ms::REMOUNT, libc::MS_REMOUNT),
            (ms::MANDLOCK, libc::MS_MANDLOCK),
            (ms::DIRSYNC, libc::MS_DIRSYNC),
            (ms::NOSYMFOLLOW, libc::MS_NOSYMFOLLOW),
            (ms::NOATIME, libc::MS_NOATIME),
            (ms::NODIRATIME, libc::MS_NODIRATIME),
            (ms::BIND, libc::MS_BIND),
            (ms::REC, libc::MS_REC),
            (ms::SILENT, libc::MS_SILENT),
            (ms::POSIXACL, libc::MS_POSIXACL),
            (ms::UNBINDABLE, libc::MS_UNBINDABLE),
            (ms::PRIVATE, libc::MS_PRIVATE),
            (ms::SLAVE, libc::MS_SLAVE),
            (ms::SHARED, libc::MS_SHARED),
            (ms::RELATIME, libc::MS_RELATIME),
            (ms::I_VERSION, libc::MS_I_VERSION),
            (ms::STRICTATIME, libc::MS_STRICTATIME),
            (ms::LAZYTIME, libc::MS_LAZYTIME),
        ];
        for (ours, kernel) in pairs {
            assert_eq!(ours, kernel, "{kernel:#x}");
        }
    }

    fn mount(dest: &str, typ: &str, src: &str, opts: &[&str]) -> Mount {
        let mut m = Mount::default();
        m.set_destination(PathBuf::from(dest));
        m.set_typ(Some(typ.to_owned()));
        m.set_source(Some(PathBuf::from(src)));
        m.set_options(Some(opts.iter().map(|s| s.to_string()).collect()));
        m
    }

    #[test]
    fn mount_options_split_into_flags_propagation_and_data() {
        let m = mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        );
        let p = MountPlan::parse(&m, Path::new("/b")).unwrap();
        assert_eq!(p.kind, MountKind::Filesystem);
        assert_eq!(p.flags, MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC);
        assert_eq!(
            p.data.as_deref(),
            Some("newinstance,ptmxmode=0666,mode=0620,gid=5")
        );

        let m = mount("/data", "none", "data", &["rbind", "ro", "rslave"]);
        let p = MountPlan::parse(&m, Path::new("/b")).unwrap();
        assert_eq!(p.kind, MountKind::Bind);
        assert_eq!(p.source.as_deref(), Some(Path::new("/b/data")));
        assert_eq!(
            p.flags,
            MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_RDONLY
        );
        assert_eq!(p.propagation, vec![MsFlags::MS_SLAVE | MsFlags::MS_REC]);
        assert_eq!(p.data, None);
    }

    #[test]
    fn later_options_override_earlier_ones() {
        let m = mount("/x", "tmpfs", "tmpfs", &["ro", "rw", "nosuid", "suid"]);
        let p = MountPlan::parse(&m, Path::new("/b")).unwrap();
        assert_eq!(p.flags, MsFlags::empty());
    }

    #[test]
    fn bad_mounts_are_rejected_with_the_destination() {
        let m = mount("relative", "tmpfs", "tmpfs", &[]);
        let e = MountPlan::parse(&m, Path::new("/b")).unwrap_err();
        assert!(e.to_string().contains("relative"), "{e}");
        let m = mount("/a/../../etc", "tmpfs", "tmpfs", &[]);
        assert!(MountPlan::parse(&m, Path::new("/b")).is_err());
        let m = mount("/x", "tmpfs", "tmpfs", &["idmap"]);
        assert_eq!(
            MountPlan::parse(&m, Path::new("/b")).unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
    }

    #[test]
    fn sysctls_must_be_namespaced() {
        let ns = CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWNET;
        validate_sysctl("kernel.shmmax", &ns).unwrap();
        validate_sysctl("net.ipv4.ip_forward", &ns).unwrap();
        assert!(validate_sysctl("kernel.panic", &ns).is_err());
        assert!(validate_sysctl("net.ipv4.ip_forward", &CloneFlags::empty()).is_err());
    }

    #[test]
    fn scheduler_flags_and_policies() {
        let spec = parse(
            br#"{"ociVersion": "1.2.0", "process": {"cwd": "/", "user": {"uid": 0, "gid": 0},
                "scheduler": {"policy": "SCHED_DEADLINE", "runtime": 10, "deadline": 20,
                              "period": 30, "flags": ["SCHED_FLAG_RESET_ON_FORK",
                              "SCHED_FLAG_RECLAIM", "SCHED_FLAG_DL_OVERRUN"]}}}"#,
        )
        .unwrap();
        let s = spec
            .process()
            .as_ref()
            .unwrap()
            .scheduler()
            .clone()
            .unwrap();
        let a = SchedAttr::new(&s).unwrap();
        assert_eq!((a.policy, a.flags, a.runtime, a.period), (6, 0x07, 10, 30));
        let p = parse_process(
            br#"{"cwd": "/", "user": {"uid": 0, "gid": 0},
                "scheduler": {"policy": "SCHED_BATCH", "flags": ["SCHED_FLAG_RESET_ON_FORK"]}}"#,
        )
        .unwrap();
        assert_eq!(
            SchedAttr::new(p.scheduler().as_ref().unwrap())
                .unwrap()
                .flags,
            0x01
        );
    }

    #[test]
    fn recursive_mount_attributes() {
        let m = mount(
            "/x",
            "bind",
            "/s",
            &["rbind", "rro", "rrw", "rnoexec", "rnoatime"],
        );
        let p = MountPlan::parse(&m, Path::new("/b")).unwrap();
        let a = p.recursive.unwrap();
        assert_eq!(a.set, MOUNT_ATTR_NOEXEC | MOUNT_ATTR_NOATIME);
        assert_eq!(a.clear, MOUNT_ATTR_RDONLY | MOUNT_ATTR_ATIME_MASK);
        // A later atime option replaces the earlier one; the whole field is cleared.
        let m = mount("/x", "bind", "/s", &["rbind", "rnoatime", "rstrictatime"]);
        let a = MountPlan::parse(&m, Path::new("/b"))
            .unwrap()
            .recursive
            .unwrap();
        assert_eq!(
            (a.set, a.clear),
            (MOUNT_ATTR_STRICTATIME, MOUNT_ATTR_ATIME_MASK)
        );
        assert_eq!(p.flags, MsFlags::MS_BIND | MsFlags::MS_REC);
    }

    #[test]
    fn id_mapping_lookup() {
        let map: Vec<LinuxIdMapping> =
            serde_json::from_str(r#"[{"containerID":0,"hostID":100000,"size":65536}]"#).unwrap();
        assert_eq!(IdMappings::to_host(&map, 0), Some(100000));
        assert_eq!(IdMappings::to_host(&map, 65535), Some(165535));
        assert_eq!(IdMappings::to_host(&map, 65536), None);
        assert_eq!(IdMappings::format(&map), "0 100000 65536\n");
    }
}
