//! OCI bundles and a runner for runc-compatible runtimes, for tests that start real containers
//! and look at them from inside with the static probe (`integration/probe`).
//!
//! - [`probe_path`] builds `berth-probe` once, statically, into `target/berth-probe/`.
//! - [`Bundle`] is a temporary bundle: a busybox rootfs with the probe at `/probe`, and a
//!   `config.json` that starts as `runc spec`'s default (with `terminal: false`, the probe's
//!   `status` as the process and a `cgroupsPath` of its own) and is edited with builder methods.
//! - [`Runtime`] runs one runtime binary (`runc`, later `berth-runc`) with its own `--root`, and
//!   force-deletes every container it made, and their cgroups, when dropped.
//! - [`RUNTIMES`] lists the runtimes the conformance and differential suites run against.
//! - [`ConsoleSocket`] receives a pty master the way `--console-socket` sends it (SCM_RIGHTS).
//!
//! Container ids and cgroup paths are unique per process and call ([`unique_id`]), so tests run
//! in parallel with each other and with other test binaries.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read as _};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tempfile::TempDir;

use crate::testimage::{self, Node};

/// A runtime binary the suites can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuntimeKind {
    /// Debian's runc (`/usr/sbin/runc`): the reference.
    Runc,
    /// Berth's `berth-runc` (`target/<profile>/berth-runc`, package `berth-runtime`).
    BerthRunc,
}

/// The runtimes `tests/runtime_conformance.rs` and `tests/runtime_differential.rs` run against,
/// the reference (runc) first.
// TODO(berth-runc): once berth-runc lands, change the next line to
// `pub const RUNTIMES: &[RuntimeKind] = &[RuntimeKind::Runc, RuntimeKind::BerthRunc];`
pub const RUNTIMES: &[RuntimeKind] = &[RuntimeKind::Runc, RuntimeKind::BerthRunc];

/// A fresh [`Runtime`] for each of [`RUNTIMES`], in order.
pub fn runtimes() -> Vec<Runtime> {
    RUNTIMES.iter().map(|&kind| Runtime::new(kind)).collect()
}

/// Where runc is installed; its absence is a setup error, never a skip.
pub fn runc_path() -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"] {
        let path = Path::new(dir).join("runc");
        if path.exists() {
            return path;
        }
    }
    panic!("`runc` is not installed: run scripts/setup.sh (it installs Debian's runc)");
}

/// `berth-runc` built next to the running test (`target/<profile>/berth-runc`), if it is built.
pub fn berth_runc_path() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    // target/<profile>/deps/<test> → target/<profile>/berth-runc
    let path = exe.parent()?.parent()?.join("berth-runc");
    path.exists().then_some(path)
}

// ---- unique names --------------------------------------------------------------------------

/// A container id unique to this process and call: `berth-it-<tag>-<pid>-<n>`. It is also the
/// (top-level) cgroup name a [`Bundle`] gets, so the two can be matched when cleaning up.
pub fn unique_id(tag: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let tag: String = tag
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("berth-it-{tag}-{}-{n}", std::process::id())
}

// ---- the probe -------------------------------------------------------------------------------

/// The static `berth-probe`, built on first use in this process.
///
/// It is built with `cargo build --release -p berth-probe --target <host>` and
/// `-C target-feature=+crt-static` into `<target dir>/berth-probe/`, a target directory of its
/// own (the flags differ from the workspace build, and the workspace build directory is locked
/// while `cargo test` runs). Naming `--target` keeps the flag off build scripts. A lock file
/// serializes parallel test binaries; an up-to-date build is a no-op. The result is checked to
/// be static (no ELF interpreter), since the rootfs it runs in has no libc.
pub fn probe_path() -> PathBuf {
    static PROBE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match PROBE.get_or_init(build_probe) {
        Ok(path) => path.clone(),
        Err(message) => panic!("{message}"),
    }
}

fn workspace_dir() -> PathBuf {
    // integration/ → the workspace root. `cargo test` also sets CARGO_MANIFEST_DIR at run time;
    // prefer that, since a test binary built in another checkout sharing the target directory
    // can be reused by cargo with a stale compile-time path.
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .filter(|dir| dir.join("Cargo.toml").exists())
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest.parent().map(Path::to_owned).unwrap_or(manifest)
}

fn workspace_target_dir() -> PathBuf {
    // target/<profile>/deps/<test> → target
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.to_owned()))
        .filter(|dir| dir.join("CACHEDIR.TAG").exists())
        .unwrap_or_else(|| workspace_dir().join("target"))
}

fn host_triple() -> Result<String, String> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = Command::new(&rustc)
        .arg("-vV")
        .output()
        .map_err(|e| format!("run {} -vV: {e}", rustc.to_string_lossy()))?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_owned)
        .ok_or_else(|| "rustc -vV printed no host triple".to_owned())
}

fn build_probe() -> Result<PathBuf, String> {
    let target_dir = workspace_target_dir().join("berth-probe");
    fs::create_dir_all(&target_dir).map_err(|e| format!("create {}: {e}", target_dir.display()))?;
    let lock_path = target_dir.join(".berth-build.lock");
    let lock =
        File::create(&lock_path).map_err(|e| format!("create {}: {e}", lock_path.display()))?;
    // SAFETY: flock on a descriptor we own; it is released when `lock` is closed.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(format!(
            "lock {}: {}",
            lock_path.display(),
            io::Error::last_os_error()
        ));
    }
    let host = host_triple()?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(&cargo)
        .arg("build")
        .arg("--release")
        .args(["-p", "berth-probe", "--target", &host])
        .arg("--manifest-path")
        .arg(workspace_dir().join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .env("CARGO_ENCODED_RUSTFLAGS", "-Ctarget-feature=+crt-static")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("run {}: {e}", cargo.to_string_lossy()))?;
    if !out.status.success() {
        return Err(format!(
            "building the static berth-probe failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let bin = target_dir.join(&host).join("release").join("berth-probe");
    let elf = fs::read(&bin).map_err(|e| format!("read {}: {e}", bin.display()))?;
    if elf_has_interpreter(&elf) {
        return Err(format!(
            "{} is dynamically linked: -C target-feature=+crt-static did not take",
            bin.display()
        ));
    }
    // Tests copy the probe into rootfses for the rest of the run, while another test binary
    // (say, from another checkout sharing this target directory) may rebuild it in place. So
    // hand out an immutable copy named by its contents, made under the lock.
    let stable = target_dir.join(format!("berth-probe-{:016x}", content_hash(&elf)));
    if !stable.exists() {
        let tmp = target_dir.join(format!(".berth-probe-{}.tmp", std::process::id()));
        fs::write(&tmp, &elf)
            .and_then(|()| fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755)))
            .and_then(|()| fs::rename(&tmp, &stable))
            .map_err(|e| format!("install {}: {e}", stable.display()))?;
    }
    drop(lock);
    Ok(stable)
}

/// FNV-1a over `data`: a stable name for a build's bytes (not a security boundary).
fn content_hash(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Whether a 64-bit little-endian ELF file has a PT_INTERP program header (is dynamic).
pub fn elf_has_interpreter(elf: &[u8]) -> bool {
    let u16_at = |off: usize| {
        elf.get(off..off + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |off: usize| {
        elf.get(off..off + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |off: usize| {
        elf.get(off..off + 8).map(|b| {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            u64::from_le_bytes(a)
        })
    };
    if elf.get(..4) != Some(b"\x7fELF".as_slice()) {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    (0..usize::from(phnum)).any(|i| {
        let off = phoff as usize + i * usize::from(phentsize);
        u32_at(off) == Some(3) // PT_INTERP
    })
}

// ---- the rootfs ------------------------------------------------------------------------------

/// The busybox applets linked in a bundle's `/bin` (beyond [`testimage::BUSYBOX_APPLETS`]).
pub const EXTRA_APPLETS: &[&str] = &[
    "false", "hostname", "mount", "mkdir", "touch", "ps", "grep", "kill", "wc", "stat", "readlink",
    "head", "tail", "tr", "uname", "printf", "test", "[",
];

/// Fills `rootfs` (an empty directory) with the base test-image tree (busybox, its applets,
/// `/etc/passwd`, `/etc/group`, `/tmp`, `/root`), [`EXTRA_APPLETS`], the empty mount points
/// `/proc`, `/sys`, `/dev`, `/mnt`, and the static probe at `/probe`.
pub fn write_rootfs(rootfs: &Path) {
    let mut entries = testimage::base_layer();
    entries.extend(
        EXTRA_APPLETS
            .iter()
            .map(|a| (format!("bin/{a}"), Node::symlink("busybox"))),
    );
    for dir in ["proc", "sys", "dev", "mnt"] {
        entries.push((dir.to_owned(), Node::dir(0o755)));
    }
    for (rel, node) in &entries {
        let path = rootfs.join(rel);
        let result = match node {
            Node::Dir { mode } => fs::create_dir_all(&path)
                .and_then(|()| fs::set_permissions(&path, fs::Permissions::from_mode(*mode))),
            Node::File { mode, data } => fs::write(&path, data)
                .and_then(|()| fs::set_permissions(&path, fs::Permissions::from_mode(*mode))),
            Node::Symlink { target } => std::os::unix::fs::symlink(target, &path),
            Node::Other { description } => panic!("cannot write {description} at {rel}"),
        };
        result.unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }
    let probe = rootfs.join("probe");
    fs::copy(probe_path(), &probe).unwrap_or_else(|e| panic!("copy probe: {e}"));
    fs::set_permissions(&probe, fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", probe.display()));
}

// ---- capabilities ----------------------------------------------------------------------------

/// Linux capability names in bit order (`CAP_CHOWN` is bit 0).
pub const CAPABILITIES: &[&str] = &[
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

/// The bit mask of capability names, as `/proc/<pid>/status` shows it (`CapEff` etc.).
pub fn cap_mask(names: &[&str]) -> u64 {
    names.iter().fold(0, |mask, name| {
        let bit = CAPABILITIES
            .iter()
            .position(|c| c == name)
            .unwrap_or_else(|| panic!("unknown capability {name}"));
        mask | (1u64 << bit)
    })
}

/// The libseccomp name of this machine's native architecture (`SCMP_ARCH_X86_64`, …), for a
/// seccomp profile's `architectures`.
pub fn native_seccomp_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "SCMP_ARCH_X86_64",
        "x86" => "SCMP_ARCH_X86",
        "aarch64" => "SCMP_ARCH_AARCH64",
        "arm" => "SCMP_ARCH_ARM",
        "powerpc64" => "SCMP_ARCH_PPC64LE",
        "s390x" => "SCMP_ARCH_S390X",
        "riscv64" => "SCMP_ARCH_RISCV64",
        other => panic!("no libseccomp architecture name known for {other}"),
    }
}

/// Parses a `CapEff`-style hex mask.
pub fn parse_cap_hex(hex: &str) -> u64 {
    u64::from_str_radix(hex.trim(), 16)
        .unwrap_or_else(|e| panic!("bad capability mask {hex:?}: {e}"))
}

// ---- bundles ---------------------------------------------------------------------------------

/// `runc spec`'s default config (runc 1.1.5), with `terminal: false` and `/probe status` as the
/// process.
pub fn default_config() -> Value {
    let caps = json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    json!({
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": ["/probe", "status"],
            "env": [testimage::DEFAULT_PATH_ENV, "TERM=xterm"],
            "cwd": "/",
            "capabilities": {
                "bounding": caps,
                "effective": caps,
                "permitted": caps,
                "ambient": caps,
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true,
        },
        "root": {"path": "rootfs", "readonly": true},
        "hostname": "runc",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
        ],
        "linux": {
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "namespaces": [
                {"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"},
                {"type": "mount"},
            ],
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
                "/proc/scsi",
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
            ],
        },
    })
}

/// A temporary OCI bundle: `rootfs/` (busybox + `/probe`) and a config edited in memory and
/// written to `config.json` by [`Bundle::write_config`] (every [`Runtime`] call that takes a
/// bundle does that first). Removed on drop.
pub struct Bundle {
    dir: TempDir,
    id: String,
    config: Value,
}

impl Bundle {
    /// A bundle with [`default_config`], a fresh [`unique_id`] from `tag`, and `cgroupsPath`
    /// `/<id>`.
    pub fn new(tag: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("berth-bundle-")
            .tempdir()
            .unwrap_or_else(|e| panic!("bundle temp dir: {e}"));
        // A container in a user namespace opens its rootfs as the mapped root, which must be
        // able to traverse the bundle directory (tempdirs are 0700).
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", dir.path().display()));
        let rootfs = dir.path().join("rootfs");
        fs::create_dir(&rootfs).unwrap_or_else(|e| panic!("create {}: {e}", rootfs.display()));
        write_rootfs(&rootfs);
        let id = unique_id(tag);
        let mut bundle = Self {
            dir,
            id,
            config: default_config(),
        };
        let cgroups_path = format!("/{}", bundle.id);
        bundle.cgroups_path(&cgroups_path);
        bundle
    }

    /// The bundle directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The rootfs directory.
    pub fn rootfs(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }

    /// The unique id this bundle was made with: use it as the container id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The config as it stands.
    pub fn config(&self) -> &Value {
        &self.config
    }

    /// The config, for edits the builder methods do not cover.
    pub fn config_mut(&mut self) -> &mut Value {
        &mut self.config
    }

    /// The spec's `linux.cgroupsPath`.
    pub fn cgroups_path_value(&self) -> Option<String> {
        self.config["linux"]["cgroupsPath"]
            .as_str()
            .map(str::to_owned)
    }

    /// Writes `config.json`.
    pub fn write_config(&self) {
        let path = self.dir.path().join("config.json");
        let data = serde_json::to_vec_pretty(&self.config)
            .unwrap_or_else(|e| panic!("serialize config: {e}"));
        fs::write(&path, data).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    /// `process.args`.
    pub fn args(&mut self, args: &[&str]) -> &mut Self {
        self.config["process"]["args"] = json!(args);
        self
    }

    /// `process.args` = `/probe <args…>`.
    pub fn probe(&mut self, args: &[&str]) -> &mut Self {
        let mut all = vec!["/probe"];
        all.extend_from_slice(args);
        self.args(&all)
    }

    /// `process.env`, replaced.
    pub fn env(&mut self, env: &[&str]) -> &mut Self {
        self.config["process"]["env"] = json!(env);
        self
    }

    /// Appends `KEY=VALUE` to `process.env`.
    pub fn add_env(&mut self, kv: &str) -> &mut Self {
        push(&mut self.config["process"]["env"], json!(kv));
        self
    }

    /// `process.cwd`.
    pub fn cwd(&mut self, cwd: &str) -> &mut Self {
        self.config["process"]["cwd"] = json!(cwd);
        self
    }

    /// `process.terminal`.
    pub fn terminal(&mut self, on: bool) -> &mut Self {
        self.config["process"]["terminal"] = json!(on);
        self
    }

    /// `hostname`.
    pub fn hostname(&mut self, name: &str) -> &mut Self {
        self.config["hostname"] = json!(name);
        self
    }

    /// `domainname`.
    pub fn domainname(&mut self, name: &str) -> &mut Self {
        self.config["domainname"] = json!(name);
        self
    }

    /// `root.readonly`.
    pub fn readonly_root(&mut self, readonly: bool) -> &mut Self {
        self.config["root"]["readonly"] = json!(readonly);
        self
    }

    /// `process.user.uid` and `.gid`.
    pub fn user(&mut self, uid: u32, gid: u32) -> &mut Self {
        self.config["process"]["user"]["uid"] = json!(uid);
        self.config["process"]["user"]["gid"] = json!(gid);
        self
    }

    /// `process.user.additionalGids`.
    pub fn additional_gids(&mut self, gids: &[u32]) -> &mut Self {
        self.config["process"]["user"]["additionalGids"] = json!(gids);
        self
    }

    /// `process.user.umask`.
    pub fn umask(&mut self, umask: u32) -> &mut Self {
        self.config["process"]["user"]["umask"] = json!(umask);
        self
    }

    /// One capability set (`bounding`, `effective`, `permitted`, `inheritable`, `ambient`).
    pub fn capability_set(&mut self, set: &str, caps: &[&str]) -> &mut Self {
        self.config["process"]["capabilities"][set] = json!(caps);
        self
    }

    /// All five capability sets: `caps` in bounding, effective, permitted; inheritable and
    /// ambient empty (what containerd's default spec does).
    pub fn capabilities(&mut self, caps: &[&str]) -> &mut Self {
        self.config["process"]["capabilities"] = json!({
            "bounding": caps,
            "effective": caps,
            "permitted": caps,
            "inheritable": [],
            "ambient": [],
        });
        self
    }

    /// `process.noNewPrivileges`.
    pub fn no_new_privileges(&mut self, on: bool) -> &mut Self {
        self.config["process"]["noNewPrivileges"] = json!(on);
        self
    }

    /// Sets rlimit `kind` (`RLIMIT_NOFILE`, …), replacing an entry of the same type.
    pub fn rlimit(&mut self, kind: &str, soft: u64, hard: u64) -> &mut Self {
        let list = &mut self.config["process"]["rlimits"];
        if let Some(items) = list.as_array_mut() {
            items.retain(|r| r["type"] != kind);
        }
        push(list, json!({"type": kind, "soft": soft, "hard": hard}));
        self
    }

    /// Removes every rlimit.
    pub fn clear_rlimits(&mut self) -> &mut Self {
        self.config["process"]["rlimits"] = json!([]);
        self
    }

    /// `process.oomScoreAdj`.
    pub fn oom_score_adj(&mut self, adj: i32) -> &mut Self {
        self.config["process"]["oomScoreAdj"] = json!(adj);
        self
    }

    /// Appends a mount.
    pub fn mount(
        &mut self,
        destination: &str,
        kind: &str,
        source: &str,
        options: &[&str],
    ) -> &mut Self {
        push(
            &mut self.config["mounts"],
            json!({"destination": destination, "type": kind, "source": source, "options": options}),
        );
        self
    }

    /// Appends a bind mount of host path `source` (`options` should hold `bind` or `rbind`).
    pub fn bind_mount(&mut self, source: &Path, destination: &str, options: &[&str]) -> &mut Self {
        let source = source
            .to_str()
            .unwrap_or_else(|| panic!("non-UTF-8 path {source:?}"));
        self.mount(destination, "bind", source, options)
    }

    /// Removes the mounts on `destination`.
    pub fn remove_mount(&mut self, destination: &str) -> &mut Self {
        if let Some(items) = self.config["mounts"].as_array_mut() {
            items.retain(|m| m["destination"] != destination);
        }
        self
    }

    /// `linux.seccomp`.
    pub fn seccomp(&mut self, seccomp: Value) -> &mut Self {
        self.config["linux"]["seccomp"] = seccomp;
        self
    }

    /// Adds a namespace of `kind` (`user`, `cgroup`, …) unless there is one; `path` joins one.
    pub fn namespace(&mut self, kind: &str, path: Option<&Path>) -> &mut Self {
        self.remove_namespace(kind);
        let mut ns = json!({"type": kind});
        if let Some(path) = path {
            ns["path"] = json!(path);
        }
        push(&mut self.config["linux"]["namespaces"], ns);
        self
    }

    /// Removes the namespace of `kind`: the container shares the runtime's.
    pub fn remove_namespace(&mut self, kind: &str) -> &mut Self {
        if let Some(items) = self.config["linux"]["namespaces"].as_array_mut() {
            items.retain(|n| n["type"] != kind);
        }
        self
    }

    /// A user namespace mapping container ids `0..size` to host ids `host..host+size`, for
    /// both uids and gids.
    pub fn user_namespace(&mut self, host: u32, size: u32) -> &mut Self {
        self.namespace("user", None);
        let map = json!([{"containerID": 0, "hostID": host, "size": size}]);
        self.config["linux"]["uidMappings"] = map.clone();
        self.config["linux"]["gidMappings"] = map;
        self
    }

    /// `linux.resources.memory.limit`, in bytes.
    pub fn memory_limit(&mut self, bytes: i64) -> &mut Self {
        self.config["linux"]["resources"]["memory"]["limit"] = json!(bytes);
        self
    }

    /// `linux.resources.pids.limit`.
    pub fn pids_limit(&mut self, limit: i64) -> &mut Self {
        self.config["linux"]["resources"]["pids"]["limit"] = json!(limit);
        self
    }

    /// `linux.maskedPaths`, replaced.
    pub fn masked_paths(&mut self, paths: &[&str]) -> &mut Self {
        self.config["linux"]["maskedPaths"] = json!(paths);
        self
    }

    /// `linux.readonlyPaths`, replaced.
    pub fn readonly_paths(&mut self, paths: &[&str]) -> &mut Self {
        self.config["linux"]["readonlyPaths"] = json!(paths);
        self
    }

    /// Appends a hook to `hooks.<kind>` (`prestart`, `createRuntime`, `createContainer`,
    /// `startContainer`, `poststart`, `poststop`). `args` includes argv[0].
    pub fn hook(&mut self, kind: &str, path: &str, args: &[&str]) -> &mut Self {
        push(
            &mut self.config["hooks"][kind],
            json!({"path": path, "args": args}),
        );
        self
    }

    /// `linux.cgroupsPath`.
    pub fn cgroups_path(&mut self, path: &str) -> &mut Self {
        self.config["linux"]["cgroupsPath"] = json!(path);
        self
    }

    /// `linux.sysctl[key] = value`.
    pub fn sysctl(&mut self, key: &str, value: &str) -> &mut Self {
        self.config["linux"]["sysctl"][key] = json!(value);
        self
    }
}

/// Appends to a JSON array, turning null into one.
fn push(list: &mut Value, item: Value) {
    if !list.is_array() {
        *list = json!([]);
    }
    if let Some(items) = list.as_array_mut() {
        items.push(item);
    }
}

// ---- running a runtime -----------------------------------------------------------------------

/// What one runtime invocation did.
#[derive(Debug)]
pub struct RunOutput {
    /// The command line.
    pub command: String,
    /// The exit status (`None` when it timed out and was killed).
    pub status: Option<ExitStatus>,
    /// Stdout (for `run`: the container's stdout).
    pub stdout: String,
    /// Stderr.
    pub stderr: String,
    /// How long it took.
    pub elapsed: Duration,
}

impl RunOutput {
    /// The exit code as a shell reports it: the code, or 128 + the signal that killed it, or -1
    /// after a timeout.
    pub fn code(&self) -> i32 {
        use std::os::unix::process::ExitStatusExt as _;
        match self.status {
            Some(s) => s
                .code()
                .or_else(|| s.signal().map(|n| 128 + n))
                .unwrap_or(-1),
            None => -1,
        }
    }

    /// Whether it exited 0.
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    fn describe(&self) -> String {
        format!(
            "{} → {} after {:?}:\nstdout:\n{}\nstderr:\n{}",
            self.command,
            match self.status {
                Some(s) => s.to_string(),
                None => "timed out".to_owned(),
            },
            self.elapsed,
            self.stdout,
            self.stderr
        )
    }

    /// Asserts success; returns stdout.
    #[track_caller]
    pub fn ok(&self) -> &str {
        assert!(self.success(), "unexpected failure: {}", self.describe());
        &self.stdout
    }

    /// Asserts a non-zero exit (not a timeout); returns stderr.
    #[track_caller]
    pub fn fails(&self) -> &str {
        assert!(
            self.status.is_some() && !self.success(),
            "expected a failure: {}",
            self.describe()
        );
        &self.stderr
    }

    /// Asserts exit code `code`.
    #[track_caller]
    pub fn exits(&self, code: i32) -> &Self {
        assert_eq!(self.code(), code, "exit code: {}", self.describe());
        self
    }

    /// Stdout parsed as one JSON value (the first, if several follow each other).
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::Deserializer::from_str(&self.stdout)
            .into_iter::<Value>()
            .next()
            .and_then(Result::ok)
            .unwrap_or_else(|| panic!("stdout is not JSON: {}", self.describe()))
    }

    /// Stdout parsed as a sequence of JSON values (one per probe call in a shell script).
    #[track_caller]
    pub fn json_values(&self) -> Vec<Value> {
        serde_json::Deserializer::from_str(&self.stdout)
            .into_iter::<Value>()
            .collect::<Result<Vec<_>, _>>()
            .unwrap_or_else(|e| panic!("stdout is not a JSON sequence ({e}): {}", self.describe()))
    }

    /// Asserts success and parses stdout as JSON.
    #[track_caller]
    pub fn ok_json(&self) -> Value {
        self.ok();
        self.json()
    }
}

struct Tracked {
    id: String,
    cgroups_path: Option<String>,
    stdout: PathBuf,
    stderr: PathBuf,
}

/// One runtime binary with a `--root` of its own. Dropping it force-deletes every container it
/// created (and any other in its root), removes their cgroups, and removes the root.
pub struct Runtime {
    kind: Option<RuntimeKind>,
    name: String,
    binary: PathBuf,
    dir: TempDir,
    timeout: Duration,
    calls: AtomicU64,
    containers: Mutex<Vec<Tracked>>,
}

impl Runtime {
    /// A runner for `kind`; a missing binary fails the test.
    pub fn new(kind: RuntimeKind) -> Self {
        let mut rt = match kind {
            RuntimeKind::Runc => Self::with_binary("runc", runc_path()),
            RuntimeKind::BerthRunc => Self::with_binary(
                "berth-runc",
                berth_runc_path().unwrap_or_else(|| {
                    panic!("berth-runc is not built: run `cargo build -p berth-runtime`")
                }),
            ),
        };
        rt.kind = Some(kind);
        rt
    }

    /// Debian's runc.
    pub fn runc() -> Self {
        Self::new(RuntimeKind::Runc)
    }

    /// A runner for any runc-compatible `binary`, called `name` in messages.
    pub fn with_binary(name: &str, binary: PathBuf) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!("berth-rt-{name}-"))
            .tempdir()
            .unwrap_or_else(|e| panic!("runtime temp dir: {e}"));
        for sub in ["root", "io"] {
            fs::create_dir(dir.path().join(sub)).unwrap_or_else(|e| panic!("create {sub}: {e}"));
        }
        Self {
            kind: None,
            name: name.to_owned(),
            binary,
            dir,
            timeout: Duration::from_secs(30),
            calls: AtomicU64::new(0),
            containers: Mutex::new(Vec::new()),
        }
    }

    /// Sets how long one invocation may take before it is killed (default 30 s).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Which of the known runtimes this is (`None` for [`Runtime::with_binary`]).
    pub fn kind(&self) -> Option<RuntimeKind> {
        self.kind
    }

    /// The name used in messages (`runc`, `berth-runc`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The binary.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// The `--root` state directory.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// Runs `<binary> --root <root> <args…>` with stdin from `/dev/null` and stdout and stderr
    /// to files (a detached container keeps them, so pipes would never reach EOF), killing it
    /// after the timeout.
    pub fn command<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> RunOutput {
        self.invoke(args, None).0
    }

    fn invoke<S: AsRef<std::ffi::OsStr>>(
        &self,
        args: &[S],
        stdin: Option<&Path>,
    ) -> (RunOutput, PathBuf, PathBuf) {
        let n = self.calls.fetch_add(1, Ordering::Relaxed);
        let io = self.dir.path().join("io");
        let out_path = io.join(format!("{n}.out"));
        let err_path = io.join(format!("{n}.err"));
        let create =
            |p: &Path| File::create(p).unwrap_or_else(|e| panic!("create {}: {e}", p.display()));
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--root")
            .arg(self.root())
            .args(args)
            .stdout(create(&out_path))
            .stderr(create(&err_path));
        match stdin {
            Some(path) => cmd
                .stdin(File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()))),
            None => cmd.stdin(Stdio::null()),
        };
        let command = format!(
            "{} {}",
            self.binary.display(),
            args.iter()
                .map(|a| a.as_ref().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        );
        let start = Instant::now();
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("run {command}: {e}"));
        let pid = child.id();
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        let status = match rx.recv_timeout(self.timeout) {
            Ok(result) => Some(result.unwrap_or_else(|e| panic!("wait for {command}: {e}"))),
            Err(_) => {
                crate::signal(pid, libc::SIGKILL);
                None
            }
        };
        let _ = waiter.join();
        let elapsed = start.elapsed();
        let read =
            |p: &Path| String::from_utf8_lossy(&fs::read(p).unwrap_or_default()).into_owned();
        let output = RunOutput {
            command,
            status,
            stdout: read(&out_path),
            stderr: read(&err_path),
            elapsed,
        };
        (output, out_path, err_path)
    }

    fn track(&self, id: &str, bundle: &Bundle, stdout: PathBuf, stderr: PathBuf) {
        self.containers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Tracked {
                id: id.to_owned(),
                cgroups_path: bundle.cgroups_path_value(),
                stdout,
                stderr,
            });
    }

    /// `run --bundle <bundle> <id>` in the foreground: the container's stdout and stderr are
    /// the output, its exit code the code.
    pub fn run(&self, id: &str, bundle: &Bundle) -> RunOutput {
        self.run_with(id, bundle, &[])
    }

    /// `run` with extra flags before the id (e.g. `--no-pivot`).
    pub fn run_with(&self, id: &str, bundle: &Bundle, flags: &[&str]) -> RunOutput {
        bundle.write_config();
        let mut args: Vec<OsString> = vec!["run".into(), "--bundle".into(), bundle.path().into()];
        args.extend(flags.iter().map(OsString::from));
        args.push(id.into());
        let (out, stdout, stderr) = self.invoke(&args, None);
        self.track(id, bundle, stdout, stderr);
        out
    }

    /// `create --bundle <bundle> <id>`. The container's stdio are files:
    /// [`Runtime::container_output`] reads them.
    pub fn create(&self, id: &str, bundle: &Bundle) -> RunOutput {
        self.create_with(id, bundle, &[])
    }

    /// `create` with extra flags before the id (`--console-socket`, `--pid-file`, …).
    pub fn create_with(&self, id: &str, bundle: &Bundle, flags: &[&str]) -> RunOutput {
        bundle.write_config();
        let mut args: Vec<OsString> =
            vec!["create".into(), "--bundle".into(), bundle.path().into()];
        args.extend(flags.iter().map(OsString::from));
        args.push(id.into());
        let (out, stdout, stderr) = self.invoke(&args, None);
        self.track(id, bundle, stdout, stderr);
        out
    }

    /// What a container made by [`Runtime::create`] wrote to stdout and stderr so far.
    pub fn container_output(&self, id: &str) -> (String, String) {
        let containers = self
            .containers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let tracked = containers
            .iter()
            .rev()
            .find(|t| t.id == id)
            .unwrap_or_else(|| panic!("{id} was not created by this runner"));
        let read =
            |p: &Path| String::from_utf8_lossy(&fs::read(p).unwrap_or_default()).into_owned();
        (read(&tracked.stdout), read(&tracked.stderr))
    }

    /// `start <id>`.
    pub fn start(&self, id: &str) -> RunOutput {
        self.command(&["start", id])
    }

    /// `state <id>`, unchecked.
    pub fn try_state(&self, id: &str) -> RunOutput {
        self.command(&["state", id])
    }

    /// `state <id>` as JSON; failure fails the test.
    #[track_caller]
    pub fn state(&self, id: &str) -> Value {
        self.try_state(id).ok_json()
    }

    /// Polls `state` until its status is `status`; fails the test after `timeout`.
    #[track_caller]
    pub fn wait_status(&self, id: &str, status: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let state = self.state(id);
            if state["status"] == status {
                return state;
            }
            assert!(
                Instant::now() < deadline,
                "{} {id}: status stayed {} (waited {timeout:?} for {status})",
                self.name,
                state["status"]
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `kill <id> <signal>`.
    pub fn kill(&self, id: &str, signal: &str) -> RunOutput {
        self.command(&["kill", id, signal])
    }

    /// `kill --all <id> <signal>`.
    pub fn kill_all(&self, id: &str, signal: &str) -> RunOutput {
        self.command(&["kill", "--all", id, signal])
    }

    /// `delete <id>`.
    pub fn delete(&self, id: &str) -> RunOutput {
        self.command(&["delete", id])
    }

    /// `delete --force <id>`.
    pub fn delete_force(&self, id: &str) -> RunOutput {
        self.command(&["delete", "--force", id])
    }

    /// `exec <id> <args…>`: the process's stdout and stderr are the output.
    pub fn exec(&self, id: &str, args: &[&str]) -> RunOutput {
        self.exec_with(id, &[], args)
    }

    /// `exec <flags…> <id> <args…>` (`--user`, `--cwd`, `--env`, `--cap`, `-d`, …).
    pub fn exec_with(&self, id: &str, flags: &[&str], args: &[&str]) -> RunOutput {
        let mut all: Vec<&str> = vec!["exec"];
        all.extend_from_slice(flags);
        all.push(id);
        all.extend_from_slice(args);
        self.command(&all)
    }

    /// `exec --process <file> <id>` with `process` (an OCI process object) written to a file.
    pub fn exec_process(&self, id: &str, process: &Value) -> RunOutput {
        let n = self.calls.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.path().join("io").join(format!("{n}.process.json"));
        let data = serde_json::to_vec(process).unwrap_or_else(|e| panic!("serialize: {e}"));
        fs::write(&path, data).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        let mut args: Vec<OsString> = vec!["exec".into(), "--process".into(), path.into()];
        args.push(id.into());
        self.command(&args)
    }

    /// `ps --format json <id>`.
    pub fn ps(&self, id: &str) -> RunOutput {
        self.command(&["ps", "--format", "json", id])
    }

    /// `list --format json`.
    pub fn list(&self) -> RunOutput {
        self.command(&["list", "--format", "json"])
    }

    /// `pause <id>`.
    pub fn pause(&self, id: &str) -> RunOutput {
        self.command(&["pause", id])
    }

    /// `resume <id>`.
    pub fn resume(&self, id: &str) -> RunOutput {
        self.command(&["resume", id])
    }

    /// `events --stats <id>`.
    pub fn events_stats(&self, id: &str) -> RunOutput {
        self.command(&["events", "--stats", id])
    }

    fn cleanup(&self) {
        let tracked = std::mem::take(
            &mut *self
                .containers
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        let mut ids: Vec<String> = tracked.iter().map(|t| t.id.clone()).collect();
        if let Ok(dir) = fs::read_dir(self.root()) {
            ids.extend(
                dir.filter_map(Result::ok)
                    .filter_map(|e| e.file_name().into_string().ok()),
            );
        }
        ids.sort();
        ids.dedup();
        for id in &ids {
            let state_dir = self.root().join(id);
            if !state_dir.exists() {
                continue;
            }
            let mut out = self.command(&["delete", "--force", id]);
            if !out.success() && state_dir.exists() {
                // A frozen container may need thawing before its processes can die.
                let _ = self.command(&["resume", id]);
                out = self.command(&["delete", "--force", id]);
            }
            if !out.success() && state_dir.exists() {
                eprintln!("{}: cleanup of {id} failed: {}", self.name, out.describe());
            }
        }
        for t in &tracked {
            if let Some(path) = &t.cgroups_path {
                remove_cgroup(path);
            }
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.cleanup();
    }
}

// ---- cgroups ---------------------------------------------------------------------------------

/// The cgroup filesystems mounted on this host: (mount point, fstype).
fn cgroup_mounts() -> Vec<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let fstype = right.split(' ').next()?;
            if fstype != "cgroup" && fstype != "cgroup2" {
                return None;
            }
            left.split(' ').nth(4).map(PathBuf::from)
        })
        .collect()
}

/// The existing directories of cgroup `path` (a spec's absolute `cgroupsPath`) in every mounted
/// hierarchy (v1 controllers, the hybrid `unified` one, or the single v2 one).
pub fn cgroup_dirs(path: &str) -> Vec<PathBuf> {
    let rel = path.trim_start_matches('/');
    if rel.is_empty() {
        return Vec::new();
    }
    cgroup_mounts()
        .into_iter()
        .map(|m| m.join(rel))
        .filter(|d| d.is_dir())
        .collect()
}

/// How many OOM kills cgroup `path` has seen: `oom_kill` in v1 `memory.oom_control` or v2
/// `memory.events`. `None` when neither exists.
pub fn cgroup_oom_kills(path: &str) -> Option<u64> {
    cgroup_dirs(path).into_iter().find_map(|dir| {
        ["memory.oom_control", "memory.events"]
            .iter()
            .find_map(|file| {
                let text = fs::read_to_string(dir.join(file)).ok()?;
                text.lines()
                    .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok())
            })
    })
}

/// Kills whatever is left in cgroup `path` and removes its directories (deepest first).
pub fn remove_cgroup(path: &str) {
    for dir in cgroup_dirs(path) {
        let freezer = dir.join("freezer.state");
        if freezer.exists() {
            let _ = fs::write(&freezer, "THAWED");
        }
        let _ = fs::write(dir.join("cgroup.freeze"), "0");
        for attempt in 0..50 {
            let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
            let pids: Vec<u32> = procs
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect();
            for &pid in &pids {
                crate::signal(pid, libc::SIGKILL);
            }
            let mut subdirs: Vec<PathBuf> = walk_dirs(&dir);
            subdirs.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
            for sub in subdirs {
                let _ = fs::remove_dir(sub);
            }
            if fs::remove_dir(&dir).is_ok() || !dir.exists() {
                break;
            }
            if attempt == 49 {
                eprintln!("could not remove cgroup {}", dir.display());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn walk_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.filter_map(Result::ok) {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                let p = e.path();
                out.extend(walk_dirs(&p));
                out.push(p);
            }
        }
    }
    out
}

// ---- console socket --------------------------------------------------------------------------

/// A unix socket for `--console-socket`: the runtime connects and sends the pty master as
/// SCM_RIGHTS ancillary data (with the pty's name as the message, as runc does).
pub struct ConsoleSocket {
    _dir: TempDir,
    path: PathBuf,
    listener: UnixListener,
}

impl ConsoleSocket {
    /// Binds a socket in a fresh temporary directory.
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("berth-console-")
            .tempdir()
            .unwrap_or_else(|e| panic!("temp dir: {e}"));
        let path = dir.path().join("console.sock");
        let listener =
            UnixListener::bind(&path).unwrap_or_else(|e| panic!("bind {}: {e}", path.display()));
        listener
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("nonblocking: {e}"));
        Self {
            _dir: dir,
            path,
            listener,
        }
    }

    /// The socket's path, for `--console-socket`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts one connection and receives the pty master from it; also returns the message
    /// sent with it. Fails the test after `timeout`.
    #[track_caller]
    pub fn receive_master(&self, timeout: Duration) -> (File, String) {
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match self.listener.accept() {
                Ok((stream, _)) => break stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(
                        Instant::now() < deadline,
                        "nothing connected to the console socket within {timeout:?}"
                    );
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("accept on {}: {e}", self.path.display()),
            }
        };
        stream
            .set_nonblocking(false)
            .unwrap_or_else(|e| panic!("blocking: {e}"));
        stream
            .set_read_timeout(Some(timeout))
            .unwrap_or_else(|e| panic!("read timeout: {e}"));
        let (fd, message) =
            recv_fd(stream.as_raw_fd()).unwrap_or_else(|e| panic!("receive the pty master: {e}"));
        (File::from(fd), message)
    }
}

impl Default for ConsoleSocket {
    fn default() -> Self {
        Self::new()
    }
}

fn recv_fd(socket: libc::c_int) -> io::Result<(OwnedFd, String)> {
    let mut buf = [0u8; 4096];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // Room for a few descriptors, 8-byte aligned as cmsghdr needs.
    let mut cmsg_buf = [0u64; 16];
    // SAFETY: msghdr is plain data; all zeroes is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg_buf.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&cmsg_buf);
    // SAFETY: `msg` points at live, writable buffers of the sizes it states.
    let n = unsafe { libc::recvmsg(socket, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let message = String::from_utf8_lossy(&buf[..n as usize]).into_owned();
    let mut fds = Vec::new();
    // SAFETY: `msg` was filled in by recvmsg; the CMSG_* macros walk its control buffer within
    // msg_controllen, and the data of an SCM_RIGHTS message is an array of ints.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg).cast::<libc::c_int>();
                let count = ((*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize)
                    / std::mem::size_of::<libc::c_int>();
                for i in 0..count {
                    fds.push(data.add(i).read_unaligned());
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    let mut owned: Vec<OwnedFd> = fds
        .into_iter()
        // SAFETY: each descriptor was just received and is owned by nobody else.
        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect();
    if owned.is_empty() {
        return Err(io::Error::other(format!(
            "no descriptor came with the message {message:?}"
        )));
    }
    Ok((owned.swap_remove(0), message))
}

/// Reads from a pty master until the slave side is closed everywhere (EIO) or `timeout`
/// passes; returns what was read.
pub fn read_pty(master: &mut File, timeout: Duration) -> Vec<u8> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return out;
        }
        let mut pfd = libc::pollfd {
            fd: master.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = libc::c_int::try_from(left.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(&mut pfd, 1, ms) };
        if ready <= 0 {
            continue;
        }
        match master.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.raw_os_error() == Some(libc::EIO) => return out,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!("read the pty master: {e}"),
        }
    }
}

// ---- seccomp agents --------------------------------------------------------------------------

/// Accepts one connection on `listener` and reads what a runtime sends a seccomp agent at
/// `linux.seccomp.listenerPath`: the container process state JSON, with the notify listener as
/// SCM_RIGHTS. Reads until the runtime closes its end, so the whole state arrives.
pub fn receive_seccomp_listener(listener: &UnixListener) -> io::Result<(OwnedFd, Value)> {
    let (stream, _) = listener.accept()?;
    let (fd, mut text) = recv_fd(stream.as_raw_fd())?;
    let mut rest = String::new();
    (&stream).read_to_string(&mut rest)?;
    text.push_str(&rest);
    let state = serde_json::from_str(&text)
        .map_err(|e| io::Error::other(format!("process state {text:?}: {e}")))?;
    Ok((fd, state))
}
