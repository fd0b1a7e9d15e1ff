//! Docker-like OCI runtime specs for containers made from an image, as `docker run` makes them.
//!
//! [`build`] turns an image's config ([`ImageConfig`]: Entrypoint, Cmd, Env, WorkingDir, User)
//! and the caller's [`SpecOptions`] into a spec with Docker's defaults: its 14 capabilities,
//! masked and read-only `/proc` and `/sys` paths, the usual `/proc`, `/dev`, `/dev/pts`,
//! `/dev/shm`, `/dev/mqueue`, `/sys` and `/sys/fs/cgroup` mounts, the default device rules,
//! Docker's default seccomp profile (the data is [`berth_core::seccomp::DOCKER_DEFAULT`], which
//! Berth's runtime applies too), the hostname as the first 12 characters of the id, and
//! `/etc/hostname`, `/etc/hosts` and `/etc/resolv.conf` bind-mounted from files berthd writes
//! into the bundle ([`LABEL_ETC_FILES`]).
//!
//! [`container_labels`] are the labels that make berthd write those files and keep the
//! container's output in a log ([`LABEL_LOG`]).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use berth_core::labels::Labels;
use berth_core::mount::Mount;
use berth_core::{AnyValue, Error, Result};
use serde::Deserialize;
use serde_json::{Value, json};

pub use berth_core::containers::ETC_FILES_LABEL as LABEL_ETC_FILES;
pub use berth_core::logs::LOG_LABEL as LABEL_LOG;
/// The runtime name containers are created with (ctr's default; Berth's shim serves it).
pub const DEFAULT_RUNTIME: &str = "io.containerd.runc.v2";
/// The type URL of containerd's runc runtime options.
pub const RUNC_OPTIONS_TYPE_URL: &str = "containerd.runc.v1.Options";
/// The `PATH` a container gets when its image sets none, as Docker's.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Every capability the kernel names, by number (what `--privileged` and `--cap-add ALL` grant).
pub const ALL_CAPABILITIES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// What `docker run` takes from an image's config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageConfig {
    /// The entrypoint.
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    /// The default arguments (to the entrypoint, or the command when there is none).
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    /// `KEY=value` pairs.
    #[serde(default)]
    pub env: Option<Vec<String>>,
    /// The working directory.
    #[serde(default)]
    pub working_dir: Option<String>,
    /// `user[:group]`, names or numbers.
    #[serde(default)]
    pub user: Option<String>,
    /// The signal `stop` sends first (e.g. `SIGTERM`).
    #[serde(default)]
    pub stop_signal: Option<String>,
}

/// The network a container gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Network {
    /// Its own network namespace with only a loopback device.
    #[default]
    None,
    /// The host's network namespace.
    Host,
}

/// A user resolved to numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct User {
    /// The uid.
    pub uid: u32,
    /// The primary gid.
    pub gid: u32,
    /// Supplementary gids.
    pub additional_gids: Vec<u32>,
}

/// The caller's side of a container's spec (what `docker run` flags say).
#[derive(Debug, Clone, Default)]
pub struct SpecOptions {
    /// The container id.
    pub id: String,
    /// The namespace (the cgroup path is `/<namespace>/<id>`, as ctr's).
    pub namespace: String,
    /// The arguments after the image (replace the image's Cmd when not empty).
    pub args: Vec<String>,
    /// `--entrypoint` (Some("") clears the image's).
    pub entrypoint: Option<String>,
    /// Extra environment, `KEY=value` (later wins; `KEY` alone is dropped here: the caller
    /// resolves it against its own environment).
    pub env: Vec<String>,
    /// The working directory.
    pub workdir: Option<String>,
    /// The user, resolved.
    pub user: User,
    /// The hostname (default: the first 12 characters of the id).
    pub hostname: Option<String>,
    /// Mount the rootfs (and the etc files) read-only.
    pub read_only: bool,
    /// A memory limit, bytes.
    pub memory: Option<i64>,
    /// CPUs, as a CFS quota over a 100 ms period.
    pub cpus: Option<f64>,
    /// A pids limit.
    pub pids_limit: Option<i64>,
    /// Capabilities to add (`ALL` for every one).
    pub cap_add: Vec<String>,
    /// Capabilities to drop (`ALL` for every one).
    pub cap_drop: Vec<String>,
    /// Every capability, no seccomp, no masked paths, writable /sys, every device allowed.
    pub privileged: bool,
    /// The capabilities the host can grant, as a mask of capability numbers (e.g. the caller's
    /// `CapBnd`): `--privileged` and `--cap-add ALL` grant those rather than fail where root
    /// itself lacks some. None: every capability.
    pub host_capabilities: Option<u64>,
    /// Allocate a pty.
    pub tty: bool,
    /// The network.
    pub network: Network,
}

/// The labels berthctl gives a container: its output goes to a log, its etc files are written
/// by berthd, plus the user's own.
pub fn container_labels(user: &Labels) -> Labels {
    let mut labels = user.clone();
    labels.insert(
        LABEL_LOG.to_owned(),
        berth_core::logs::LOG_JSON_FILE.to_owned(),
    );
    labels.insert(LABEL_ETC_FILES.to_owned(), "true".to_owned());
    labels
}

/// `containerd.runc.v1.Options` naming an OCI runtime binary (what `ctr --runc-binary` sends):
/// the shim drives that binary instead of Berth's built-in runtime.
pub fn runc_options(binary_name: &str) -> AnyValue {
    use prost::Message as _;
    #[derive(Clone, PartialEq, prost::Message)]
    struct Options {
        #[prost(string, tag = "6")]
        binary_name: String,
    }
    let opts = Options {
        binary_name: binary_name.to_owned(),
    };
    AnyValue::new(RUNC_OPTIONS_TYPE_URL, opts.encode_to_vec())
}

/// The canonical `CAP_X` name of `name` (`x`, `cap_x`, `CAP_X`); InvalidArgument when the kernel
/// has no such capability.
pub fn capability(name: &str) -> Result<String> {
    let upper = name.trim().to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    if ALL_CAPABILITIES.contains(&full.as_str()) {
        Ok(full)
    } else {
        Err(Error::invalid_argument(format!(
            "unknown capability {name:?}"
        )))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SeccompData {
    allowed: Vec<String>,
    arch_allowed: ArchAllowed,
    by_capability: Vec<CapabilityGroup>,
    admin_only: Vec<String>,
    personalities: Vec<u64>,
    clone_namespace_flags: u64,
    default_capabilities: Vec<String>,
}

#[derive(Deserialize)]
struct ArchAllowed {
    x86: Vec<String>,
    arm: Vec<String>,
    riscv64: Vec<String>,
}

#[derive(Deserialize)]
struct CapabilityGroup {
    capability: String,
    syscalls: Vec<String>,
}

fn seccomp_data() -> Result<SeccompData> {
    serde_json::from_str(berth_core::seccomp::DOCKER_DEFAULT)
        .map_err(|e| Error::internal(format!("Docker's default seccomp data does not parse: {e}")))
}

/// Docker's default capability set.
pub fn default_capabilities() -> Result<Vec<String>> {
    Ok(seccomp_data()?.default_capabilities)
}

/// Docker's default seccomp profile for a container whose bounding set is `caps`, as an OCI
/// `linux.seccomp` value (the same rules Berth's runtime builds from the same data).
pub fn seccomp_profile(caps: &[String]) -> Result<Value> {
    let data = seccomp_data()?;
    let has = |cap: &str| caps.iter().any(|c| c == cap);
    let (arch_extra, architectures): (&[String], Vec<&str>) =
        if cfg!(any(target_arch = "x86_64", target_arch = "x86")) {
            (
                &data.arch_allowed.x86,
                vec!["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            )
        } else if cfg!(any(target_arch = "aarch64", target_arch = "arm")) {
            (
                &data.arch_allowed.arm,
                vec!["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
            )
        } else if cfg!(target_arch = "riscv64") {
            (&data.arch_allowed.riscv64, vec!["SCMP_ARCH_NATIVE"])
        } else {
            (&[], vec!["SCMP_ARCH_NATIVE"])
        };
    let mut allowed: BTreeSet<&str> = data
        .allowed
        .iter()
        .chain(arch_extra)
        .map(String::as_str)
        .collect();
    for group in &data.by_capability {
        if has(&group.capability) {
            allowed.extend(group.syscalls.iter().map(String::as_str));
        }
    }
    let admin = has("CAP_SYS_ADMIN");
    if admin {
        allowed.extend(data.admin_only.iter().map(String::as_str));
    }
    let mut rules = vec![json!({"names": allowed, "action": "SCMP_ACT_ALLOW"})];
    for persona in &data.personalities {
        rules.push(json!({
            "names": ["personality"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": persona, "op": "SCMP_CMP_EQ"}],
        }));
    }
    if !admin {
        rules.push(json!({
            "names": ["clone"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{
                "index": 0,
                "value": data.clone_namespace_flags,
                "valueTwo": 0,
                "op": "SCMP_CMP_MASKED_EQ",
            }],
        }));
        // ENOSYS: libcs fall back to clone, whose flags the rule above checks.
        rules.push(json!({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}));
    }
    Ok(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "architectures": architectures,
        "syscalls": rules,
    }))
}

/// The capability set after `--privileged`, `--cap-add` and `--cap-drop` (drops first, then
/// adds, as Docker applies them when both name the same capability... except `ALL`).
pub fn capabilities(opts: &SpecOptions) -> Result<Vec<String>> {
    let all = || -> Vec<String> {
        ALL_CAPABILITIES
            .iter()
            .enumerate()
            .filter(|(n, _)| {
                opts.host_capabilities
                    .is_none_or(|mask| mask & (1u64 << n) != 0)
            })
            .map(|(_, c)| (*c).to_owned())
            .collect()
    };
    if opts.privileged {
        return Ok(all());
    }
    let is_all = |c: &String| c.eq_ignore_ascii_case("ALL");
    let mut caps: Vec<String> = if opts.cap_drop.iter().any(is_all) {
        Vec::new()
    } else {
        let drop = opts
            .cap_drop
            .iter()
            .map(|c| capability(c))
            .collect::<Result<Vec<_>>>()?;
        default_capabilities()?
            .into_iter()
            .filter(|c| !drop.contains(c))
            .collect()
    };
    if opts.cap_add.iter().any(is_all) {
        return Ok(all());
    }
    for add in &opts.cap_add {
        let add = capability(add)?;
        if !caps.contains(&add) {
            caps.push(add);
        }
    }
    Ok(caps)
}

/// The process's arguments: the entrypoint (the image's, or `--entrypoint`) followed by the
/// caller's arguments, else the image's Cmd, as Docker combines them.
pub fn process_args(config: &ImageConfig, opts: &SpecOptions) -> Result<Vec<String>> {
    let entrypoint: Vec<String> = match &opts.entrypoint {
        Some(e) if e.is_empty() => Vec::new(),
        Some(e) => vec![e.clone()],
        None => config.entrypoint.clone().unwrap_or_default(),
    };
    let rest = if !opts.args.is_empty() {
        opts.args.clone()
    } else if opts.entrypoint.is_some() {
        // docker: --entrypoint resets the image's Cmd too.
        Vec::new()
    } else {
        config.cmd.clone().unwrap_or_default()
    };
    let args: Vec<String> = entrypoint.into_iter().chain(rest).collect();
    if args.is_empty() {
        return Err(Error::invalid_argument(
            "no command: the image has neither Entrypoint nor Cmd, and none was given",
        ));
    }
    Ok(args)
}

/// The environment: the image's, then `PATH` if it set none, `HOSTNAME`, `TERM` with a tty,
/// then the caller's (a later `KEY=` wins over an earlier one).
pub fn environment(config: &ImageConfig, opts: &SpecOptions, hostname: &str) -> Vec<String> {
    let mut env: Vec<String> = Vec::new();
    let mut set = |kv: String| {
        let key = kv.split('=').next().unwrap_or_default().to_owned();
        env.retain(|e| e.split('=').next() != Some(key.as_str()));
        env.push(kv);
    };
    set(format!("PATH={DEFAULT_PATH}"));
    set(format!("HOSTNAME={hostname}"));
    for kv in config.env.iter().flatten() {
        set(kv.clone());
    }
    if opts.tty {
        set("TERM=xterm".to_owned());
    }
    for kv in &opts.env {
        if kv.contains('=') {
            set(kv.clone());
        }
    }
    env
}

/// The hostname: the option, else the first 12 characters of the id.
pub fn hostname(opts: &SpecOptions) -> String {
    opts.hostname
        .clone()
        .unwrap_or_else(|| opts.id.chars().take(12).collect())
}

/// Docker's default device rules: deny all, then the usual character devices.
fn device_rules(privileged: bool) -> Value {
    if privileged {
        return json!([{"allow": true, "access": "rwm"}]);
    }
    let c = |major: i64, minor: Option<i64>, access: &str| json!({"allow": true, "type": "c", "major": major, "minor": minor, "access": access});
    json!([
        {"allow": false, "access": "rwm"},
        c(1, Some(3), "rwm"),   // null
        c(1, Some(5), "rwm"),   // zero
        c(1, Some(7), "rwm"),   // full
        c(1, Some(8), "rwm"),   // random
        c(1, Some(9), "rwm"),   // urandom
        c(5, Some(0), "rwm"),   // tty
        c(5, Some(1), "rwm"),   // console
        c(5, Some(2), "rwm"),   // ptmx
        c(136, None, "rwm"),    // pts
        c(10, Some(200), "rwm"), // net/tun
    ])
}

/// The spec's mounts: Docker's defaults plus the etc files from the bundle.
fn mounts(opts: &SpecOptions) -> Vec<Value> {
    let sys_ro = if opts.privileged { "rw" } else { "ro" };
    let mut out = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620",
                           "gid=5"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
               "options": ["nosuid", "noexec", "nodev", sys_ro]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
               "options": ["nosuid", "noexec", "nodev", "relatime", sys_ro]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
               "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=67108864"]}),
    ];
    for file in ["hostname", "hosts", "resolv.conf"] {
        let mut options = vec!["rbind", "rprivate"];
        if opts.read_only {
            options.push("ro");
        }
        out.push(json!({
            "destination": format!("/etc/{file}"),
            "type": "bind",
            "source": format!("etc/{file}"),
            "options": options,
        }));
    }
    out
}

/// Paths Docker hides from containers (not privileged ones).
pub const MASKED_PATHS: [&str; 12] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths Docker makes read-only in containers (not privileged ones).
pub const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The OCI runtime spec (JSON) for a container of an image with `config`, per `opts`.
pub fn build(config: &ImageConfig, opts: &SpecOptions) -> Result<Value> {
    let args = process_args(config, opts)?;
    let hostname = hostname(opts);
    let env = environment(config, opts, &hostname);
    let cwd = opts
        .workdir
        .clone()
        .or_else(|| config.working_dir.clone())
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".to_owned());
    if !cwd.starts_with('/') {
        return Err(Error::invalid_argument(format!(
            "the working directory {cwd:?} must be an absolute path"
        )));
    }
    let caps = capabilities(opts)?;
    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
    ];
    if opts.network == Network::None {
        namespaces.push(json!({"type": "network"}));
    }
    let mut resources = json!({"devices": device_rules(opts.privileged)});
    if let Some(limit) = opts.memory {
        resources["memory"] = json!({"limit": limit});
    }
    if let Some(cpus) = opts.cpus {
        let period: u64 = 100_000;
        resources["cpu"] = json!({"period": period, "quota": (cpus * period as f64) as i64});
    }
    if let Some(limit) = opts.pids_limit {
        resources["pids"] = json!({"limit": limit});
    }
    let mut linux = json!({
        "namespaces": namespaces,
        "resources": resources,
        "cgroupsPath": format!("/{}/{}", opts.namespace, opts.id),
    });
    if !opts.privileged {
        linux["maskedPaths"] = json!(MASKED_PATHS);
        linux["readonlyPaths"] = json!(READONLY_PATHS);
        linux["seccomp"] = seccomp_profile(&caps)?;
    }
    let mut user = json!({"uid": opts.user.uid, "gid": opts.user.gid});
    if !opts.user.additional_gids.is_empty() {
        user["additionalGids"] = json!(opts.user.additional_gids);
    }
    Ok(json!({
        "ociVersion": "1.1.0",
        "process": {
            "terminal": opts.tty,
            "user": user,
            "args": args,
            "env": env,
            "cwd": cwd,
            "capabilities": {
                "bounding": caps,
                "effective": caps,
                "permitted": caps,
            },
            "noNewPrivileges": false,
        },
        "root": {"path": "rootfs", "readonly": opts.read_only},
        "hostname": hostname,
        "mounts": mounts(opts),
        "linux": linux,
    }))
}

/// The OCI process (JSON) for `exec`ing `args` into a container whose spec is `spec`: its
/// user, environment, working directory and capabilities, changed as asked.
pub fn exec_process(
    spec: &Value,
    args: &[String],
    tty: bool,
    env: &[String],
    user: Option<&User>,
    workdir: Option<&str>,
) -> Result<Value> {
    let mut process = spec
        .get("process")
        .cloned()
        .ok_or_else(|| Error::invalid_argument("the container's spec has no process"))?;
    if args.is_empty() {
        return Err(Error::invalid_argument("exec needs a command"));
    }
    process["args"] = json!(args);
    process["terminal"] = json!(tty);
    let mut merged: Vec<String> = process["env"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    for kv in env.iter().filter(|kv| kv.contains('=')) {
        let key = kv.split('=').next().unwrap_or_default();
        merged.retain(|e| e.split('=').next() != Some(key));
        merged.push(kv.clone());
    }
    process["env"] = json!(merged);
    if let Some(u) = user {
        process["user"] = json!({"uid": u.uid, "gid": u.gid, "additionalGids": u.additional_gids});
    }
    if let Some(w) = workdir {
        process["cwd"] = json!(w);
    }
    Ok(process)
}

/// Resolves `user` (`name|uid[:group|gid]`) against the passwd and group files of a rootfs whose
/// layers are `mounts` (an overlay's upper and lower directories, or a bind's source: berthctl
/// runs on berthd's host, so it reads them in place, top layer first, as containerd's client
/// reads a mounted rootfs). Numbers need no files; a name the files lack is InvalidArgument.
pub fn resolve_user(user: &str, mounts: &[Mount]) -> Result<User> {
    let (name, group) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd = read_rootfs_file(mounts, "etc/passwd");
    let groups = read_rootfs_file(mounts, "etc/group");
    let entry = |text: &Option<String>, want: &str| -> Option<Vec<String>> {
        text.as_deref()?.lines().find_map(|l| {
            let f: Vec<String> = l.split(':').map(str::to_owned).collect();
            (f.first().map(String::as_str) == Some(want)
                || f.get(2).map(String::as_str) == Some(want))
            .then_some(f)
        })
    };
    let (uid, mut gid, username) = match name.parse::<u32>() {
        Ok(uid) => {
            let found = entry(&passwd, name);
            let gid = found
                .as_ref()
                .and_then(|f| f.get(3)?.parse().ok())
                .unwrap_or(0);
            let username = found.and_then(|f| f.first().cloned());
            (uid, gid, username)
        }
        Err(_) => {
            let f = entry(&passwd, name).ok_or_else(|| {
                Error::invalid_argument(format!(
                    "unable to find user {name}: no matching entries in the image's /etc/passwd"
                ))
            })?;
            let num = |i: usize| f.get(i).and_then(|s| s.parse::<u32>().ok());
            let (Some(uid), Some(gid)) = (num(2), num(3)) else {
                return Err(Error::invalid_argument(format!(
                    "the image's /etc/passwd entry for {name} is malformed"
                )));
            };
            (uid, gid, Some(name.to_owned()))
        }
    };
    if let Some(g) = group {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => entry(&groups, g)
                .and_then(|f| f.get(2)?.parse().ok())
                .ok_or_else(|| {
                    Error::invalid_argument(format!(
                        "unable to find group {g}: no matching entries in the image's /etc/group"
                    ))
                })?,
        };
    }
    // Supplementary groups: those listing the user by name, as Docker adds them.
    let mut additional_gids = Vec::new();
    if let (Some(text), Some(username)) = (&groups, &username) {
        for line in text.lines() {
            let f: Vec<&str> = line.split(':').collect();
            let members = f.get(3).copied().unwrap_or_default();
            if members.split(',').any(|m| m == username)
                && let Some(n) = f.get(2).and_then(|s| s.parse::<u32>().ok())
                && n != gid
                && !additional_gids.contains(&n)
            {
                additional_gids.push(n);
            }
        }
    }
    Ok(User {
        uid,
        gid,
        additional_gids,
    })
}

/// The directories of a rootfs's layers, top first.
fn layer_dirs(mounts: &[Mount]) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for m in mounts {
        if m.kind == "overlay" {
            for o in &m.options {
                if let Some(upper) = o.strip_prefix("upperdir=") {
                    dirs.insert(0, PathBuf::from(upper));
                }
            }
            for o in &m.options {
                if let Some(lower) = o.strip_prefix("lowerdir=") {
                    dirs.extend(lower.split(':').map(PathBuf::from));
                }
            }
        } else if m.kind == "bind" || m.options.iter().any(|o| o == "bind" || o == "rbind") {
            dirs.push(PathBuf::from(&m.source));
        }
    }
    dirs
}

/// A file of the rootfs, read from the topmost layer that has it (None when none has, or it
/// cannot be read).
pub fn read_rootfs_file(mounts: &[Mount], rel: &str) -> Option<String> {
    layer_dirs(mounts)
        .iter()
        .map(|d| d.join(rel))
        .find(|p| p.symlink_metadata().is_ok())
        .and_then(|p: PathBuf| std::fs::read_to_string(Path::new(&p)).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> SpecOptions {
        SpecOptions {
            id: "0123456789abcdef".into(),
            namespace: "default".into(),
            ..Default::default()
        }
    }

    fn config() -> ImageConfig {
        serde_json::from_str(
            r#"{"Env":["PATH=/bin","A=1"],"Cmd":["/bin/sh"],"WorkingDir":"/w","User":"","Entrypoint":null}"#,
        )
        .unwrap()
    }

    #[test]
    fn docker_defaults() {
        let spec = build(&config(), &opts()).unwrap();
        assert_eq!(spec["hostname"], "0123456789ab");
        assert_eq!(spec["process"]["args"], json!(["/bin/sh"]));
        assert_eq!(spec["process"]["cwd"], "/w");
        assert_eq!(
            spec["process"]["env"],
            json!(["HOSTNAME=0123456789ab", "PATH=/bin", "A=1"])
        );
        let caps = spec["process"]["capabilities"]["bounding"]
            .as_array()
            .unwrap();
        assert_eq!(caps.len(), 14);
        assert!(caps.contains(&json!("CAP_NET_RAW")));
        assert!(!caps.contains(&json!("CAP_SYS_ADMIN")));
        assert_eq!(spec["linux"]["maskedPaths"].as_array().unwrap().len(), 12);
        assert_eq!(spec["linux"]["cgroupsPath"], "/default/0123456789abcdef");
        assert_eq!(spec["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
        let hosts = spec["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/etc/hosts")
            .unwrap();
        assert_eq!(hosts["source"], "etc/hosts");
        assert_eq!(hosts["options"], json!(["rbind", "rprivate"]));
        let ns: Vec<&str> = spec["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert!(ns.contains(&"network"));
    }

    #[test]
    fn seccomp_follows_capabilities() {
        let names = |v: &Value| -> Vec<String> {
            v["syscalls"][0]["names"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n.as_str().unwrap().to_owned())
                .collect()
        };
        let default = seccomp_profile(&default_capabilities().unwrap()).unwrap();
        let n = names(&default);
        assert!(n.contains(&"chroot".to_owned()) && !n.contains(&"mount".to_owned()));
        let admin = seccomp_profile(&["CAP_SYS_ADMIN".to_owned()]).unwrap();
        assert!(names(&admin).contains(&"mount".to_owned()));
        assert!(!names(&admin).contains(&"chroot".to_owned()));
    }

    #[test]
    fn flags_change_the_spec() {
        let mut o = opts();
        o.args = vec!["echo".into(), "hi".into()];
        o.env = vec!["A=2".into(), "B=3".into(), "LONE".into()];
        o.read_only = true;
        o.memory = Some(64 << 20);
        o.cpus = Some(0.5);
        o.pids_limit = Some(20);
        o.cap_drop = vec!["net_raw".into()];
        o.cap_add = vec!["SYS_ADMIN".into()];
        o.tty = true;
        o.network = Network::Host;
        o.hostname = Some("box".into());
        let spec = build(&config(), &o).unwrap();
        assert_eq!(spec["process"]["args"], json!(["echo", "hi"]));
        let env = spec["process"]["env"].as_array().unwrap();
        assert!(env.contains(&json!("A=2")) && !env.contains(&json!("A=1")));
        assert!(env.contains(&json!("TERM=xterm")));
        assert!(!env.iter().any(|e| e == "LONE"));
        assert_eq!(spec["root"]["readonly"], true);
        assert_eq!(spec["linux"]["resources"]["memory"]["limit"], 64 << 20);
        assert_eq!(spec["linux"]["resources"]["cpu"]["quota"], 50_000);
        assert_eq!(spec["linux"]["resources"]["pids"]["limit"], 20);
        let caps = spec["process"]["capabilities"]["effective"]
            .as_array()
            .unwrap();
        assert!(!caps.contains(&json!("CAP_NET_RAW")));
        assert!(caps.contains(&json!("CAP_SYS_ADMIN")));
        assert_eq!(spec["hostname"], "box");
        assert!(
            !spec["linux"]["namespaces"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n["type"] == "network")
        );
        let resolv = spec["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/etc/resolv.conf")
            .unwrap();
        assert_eq!(resolv["options"], json!(["rbind", "rprivate", "ro"]));
        assert!(capability("nope").is_err());

        let mut p = opts();
        p.privileged = true;
        let spec = build(&config(), &p).unwrap();
        assert_eq!(
            spec["process"]["capabilities"]["bounding"]
                .as_array()
                .unwrap()
                .len(),
            41
        );
        assert!(spec["linux"].get("seccomp").is_none());
        assert!(spec["linux"].get("maskedPaths").is_none());
        // Where the host lacks a capability (CAP_SYS_RESOURCE, 24), it is not asked for.
        p.host_capabilities = Some(!(1u64 << 24));
        let caps = capabilities(&p).unwrap();
        assert_eq!(caps.len(), 40);
        assert!(!caps.contains(&"CAP_SYS_RESOURCE".to_owned()));
    }

    #[test]
    fn entrypoint_and_cmd_combine_as_docker_does() {
        let c = ImageConfig {
            entrypoint: Some(vec!["/ep".into()]),
            cmd: Some(vec!["a".into()]),
            ..Default::default()
        };
        let mut o = opts();
        assert_eq!(process_args(&c, &o).unwrap(), ["/ep", "a"]);
        o.args = vec!["b".into()];
        assert_eq!(process_args(&c, &o).unwrap(), ["/ep", "b"]);
        o.entrypoint = Some("/x".into());
        assert_eq!(process_args(&c, &o).unwrap(), ["/x", "b"]);
        o.args.clear();
        assert_eq!(process_args(&c, &o).unwrap(), ["/x"]);
        o.entrypoint = Some(String::new());
        assert!(process_args(&c, &o).is_err());
    }

    #[test]
    fn users_resolve_from_the_layers() {
        let top = tempfile::tempdir().unwrap();
        let low = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(low.path().join("etc")).unwrap();
        std::fs::write(
            low.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nweb:x:1000:1001::/home/web:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            low.path().join("etc/group"),
            "root:x:0:\nweb:x:1001:\nwheel:x:10:web\n",
        )
        .unwrap();
        let mounts = vec![Mount {
            kind: "overlay".into(),
            source: "overlay".into(),
            target: String::new(),
            options: vec![
                format!("upperdir={}", top.path().display()),
                format!("lowerdir={}", low.path().display()),
            ],
        }];
        let u = resolve_user("web", &mounts).unwrap();
        assert_eq!((u.uid, u.gid, u.additional_gids), (1000, 1001, vec![10]));
        let u = resolve_user("1000:wheel", &mounts).unwrap();
        assert_eq!((u.uid, u.gid), (1000, 10));
        let u = resolve_user("4242:7", &[]).unwrap();
        assert_eq!((u.uid, u.gid), (4242, 7));
        assert!(resolve_user("nobody-here", &mounts).is_err());
        // A file in the upper layer hides the lower one.
        std::fs::create_dir_all(top.path().join("etc")).unwrap();
        std::fs::write(top.path().join("etc/passwd"), "web:x:5:5::/:/bin/sh\n").unwrap();
        assert_eq!(resolve_user("web", &mounts).unwrap().uid, 5);
    }

    #[test]
    fn runc_options_name_the_binary() {
        let o = runc_options("runc");
        assert_eq!(o.type_url, RUNC_OPTIONS_TYPE_URL);
        // field 6, length-delimited, "runc"
        assert_eq!(o.value, b"\x32\x04runc");
    }
}
