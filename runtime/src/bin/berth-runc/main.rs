//! berth-runc: Berth's OCI runtime behind runc's command line (verbs, flags, exit codes), so
//! containerd's runc shim, podman or a conformance harness can use it in runc's place.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use berth_core::{Error, Result};
use berth_runtime::container::{CreateOptions, ExecOptions, Runtime, wait_forwarding_signals};
use berth_runtime::state::OciState;
use clap::{Parser, Subcommand, ValueEnum};
use nix::sys::signal::Signal;
use oci_spec::runtime::{LinuxResources, Process, Spec};

mod cli_log;
mod cli_stats;

#[derive(Parser, Debug)]
#[command(name = "berth-runc", version = VERSION, about = "Berth's OCI runtime, runc-compatible")]
struct Cli {
    /// Enable debug logging.
    #[arg(long, global = true)]
    debug: bool,
    /// Log file (default: stderr).
    #[arg(long, global = true)]
    log: Option<PathBuf>,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Root directory for container state (should be on tmpfs).
    #[arg(long, global = true, default_value = "/run/berth-runc")]
    root: PathBuf,
    /// Accepted for runc compatibility; checkpointing is not supported.
    #[arg(long, global = true, hide = true)]
    criu: Option<String>,
    /// Use systemd cgroups (not supported: Berth manages cgroupfs directly).
    #[arg(long, global = true)]
    systemd_cgroup: bool,
    /// Accepted for runc compatibility: only "false" and "auto" (as root) are supported.
    // Not global, as in runc (global flags come before the command): `spec --rootless` is a
    // flag of its own, and clap panics at parse time when the two share a name.
    #[arg(long)]
    rootless: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum OutputFormat {
    Table,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a container.
    Create {
        #[command(flatten)]
        create: CreateArgs,
    },
    /// Execute the user-defined process in a created container.
    Start {
        /// Container id.
        id: String,
    },
    /// Create and run a container.
    Run {
        #[command(flatten)]
        create: CreateArgs,
        /// Detach from the container's process.
        #[arg(short, long)]
        detach: bool,
        /// Keep the container's state after it exits (ignored: run -d always keeps it).
        #[arg(long)]
        keep: bool,
    },
    /// Output the state of a container.
    State {
        /// Container id.
        id: String,
    },
    /// Send a signal (default SIGTERM) to the container's init.
    Kill {
        /// Send the signal to every process in the container.
        #[arg(short, long)]
        all: bool,
        /// Container id.
        id: String,
        /// Signal name or number.
        signal: Option<String>,
    },
    /// Delete a container and its resources.
    Delete {
        /// Kill it first if it is still running.
        #[arg(short, long)]
        force: bool,
        /// Container id.
        id: String,
    },
    /// Execute a new process inside the container.
    Exec(ExecArgs),
    /// Show the processes running inside a container.
    Ps {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
        /// Container id.
        id: String,
        /// Options passed to ps(1).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ps_args: Vec<String>,
    },
    /// List containers.
    List {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
        /// Only print ids.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Suspend every process in the container.
    Pause {
        /// Container id.
        id: String,
    },
    /// Resume a paused container.
    Resume {
        /// Container id.
        id: String,
    },
    /// Show statistics and OOM events.
    Events {
        /// Print the stats once and exit.
        #[arg(long)]
        stats: bool,
        /// Interval between stats.
        #[arg(long, default_value = "5s")]
        interval: String,
        /// Container id.
        id: String,
    },
    /// Update resource limits.
    Update(UpdateArgs),
    /// Write a default config.json.
    Spec {
        /// Bundle directory.
        #[arg(short, long)]
        bundle: Option<PathBuf>,
        /// A spec for rootless containers (not supported).
        #[arg(long)]
        rootless: bool,
    },
    /// Show the runtime's features.
    Features,
    /// Not supported.
    Checkpoint {
        /// Ignored.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Not supported.
    Restore {
        /// Ignored.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(clap::Args, Debug)]
struct CreateArgs {
    /// The bundle directory (default: the current directory).
    #[arg(short, long, default_value = ".")]
    bundle: PathBuf,
    /// AF_UNIX socket that receives the pty master.
    #[arg(long)]
    console_socket: Option<PathBuf>,
    /// File to write the init's pid to.
    #[arg(long)]
    pid_file: Option<PathBuf>,
    /// Do not use pivot_root (for roots on a ramdisk).
    #[arg(long)]
    no_pivot: bool,
    /// Do not create a new session keyring.
    #[arg(long)]
    no_new_keyring: bool,
    /// Pass N extra descriptors (after stdio and $LISTEN_FDS).
    #[arg(long, default_value_t = 0)]
    preserve_fds: i32,
    /// Container id.
    id: String,
}

#[derive(clap::Args, Debug)]
struct ExecArgs {
    /// AF_UNIX socket that receives the pty master.
    #[arg(long)]
    console_socket: Option<PathBuf>,
    /// Working directory.
    #[arg(long)]
    cwd: Option<PathBuf>,
    /// Environment variables.
    #[arg(short, long)]
    env: Vec<String>,
    /// Allocate a pseudo-TTY.
    #[arg(short, long)]
    tty: bool,
    /// uid[:gid].
    #[arg(short, long)]
    user: Option<String>,
    /// Additional gids.
    #[arg(short = 'g', long)]
    additional_gids: Vec<u32>,
    /// A process.json describing the process.
    #[arg(short, long)]
    process: Option<PathBuf>,
    /// Detach from the process.
    #[arg(short, long)]
    detach: bool,
    /// File to write the process's pid to.
    #[arg(long)]
    pid_file: Option<PathBuf>,
    /// SELinux label (accepted, not applied).
    #[arg(long)]
    process_label: Option<String>,
    /// AppArmor profile (accepted, not applied).
    #[arg(long)]
    apparmor: Option<String>,
    /// Set no_new_privs.
    #[arg(long)]
    no_new_privs: bool,
    /// Add a capability.
    #[arg(short, long)]
    cap: Vec<String>,
    /// Pass N extra descriptors.
    #[arg(long, default_value_t = 0)]
    preserve_fds: i32,
    /// Allow exec in a paused container (not supported).
    #[arg(long)]
    ignore_paused: bool,
    /// Container id.
    id: String,
    /// The command and its arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

#[derive(clap::Args, Debug)]
struct UpdateArgs {
    /// A JSON file (or "-" for stdin) with linux.resources.
    #[arg(short, long)]
    resources: Option<PathBuf>,
    /// Memory limit in bytes.
    #[arg(long)]
    memory: Option<String>,
    /// Memory reservation in bytes.
    #[arg(long)]
    memory_reservation: Option<String>,
    /// Memory plus swap limit.
    #[arg(long)]
    memory_swap: Option<String>,
    /// Kernel memory limit (ignored by new kernels).
    #[arg(long)]
    kernel_memory: Option<String>,
    /// CPU shares.
    #[arg(long)]
    cpu_shares: Option<u64>,
    /// CPU CFS quota.
    #[arg(long)]
    cpu_quota: Option<i64>,
    /// CPU CFS period.
    #[arg(long)]
    cpu_period: Option<u64>,
    /// CPUs allowed.
    #[arg(long)]
    cpuset_cpus: Option<String>,
    /// Memory nodes allowed.
    #[arg(long)]
    cpuset_mems: Option<String>,
    /// Maximum number of pids.
    #[arg(long)]
    pids_limit: Option<i64>,
    /// Block IO weight.
    #[arg(long)]
    blkio_weight: Option<u16>,
    /// Container id.
    id: String,
}

/// `--version` output; the spec line is what tools that parse runc's version look for.
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "\nspec: 1.2.0");

fn main() -> ExitCode {
    let cli = Cli::parse();
    let guard = match cli_log::init(
        cli.log.as_deref(),
        cli.log_format == LogFormat::Json,
        cli.debug,
    ) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("berth-runc: {e}");
            return ExitCode::from(1);
        }
    };
    let logs_to_file = cli.log.is_some();
    // As runc: a failed `exec` exits 255, so a caller can tell it from the exit code of a
    // process that ran (the usual 1).
    let failure = if matches!(cli.command, Command::Exec(_)) {
        255
    } else {
        1
    };
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let msg = e.to_string();
            guard.error(&msg);
            // runc also prints the error on stderr when its log goes to a file: a person (or a
            // caller that keeps stderr, as go-runc does) sees why without reading the log.
            if logs_to_file {
                eprintln!("{msg}");
            }
            ExitCode::from(failure)
        }
    }
}

fn run(cli: Cli) -> Result<u8> {
    if cli.systemd_cgroup {
        return Err(Error::not_implemented(
            "--systemd-cgroup is not supported: berth-runc manages cgroupfs directly",
        ));
    }
    if cli.rootless.as_deref() == Some("true") {
        return Err(Error::not_implemented(
            "rootless containers are not supported",
        ));
    }
    let rt = || Runtime::new(&cli.root);
    match cli.command {
        Command::Create { create } => {
            rt()?.create(&create.id, &create_options(&create))?;
            Ok(0)
        }
        Command::Start { id } => {
            rt()?.start(&id)?;
            Ok(0)
        }
        Command::Run { create, detach, .. } => {
            let code = rt()?.run(&create.id, &create_options(&create), detach)?;
            Ok(u8::try_from(code).unwrap_or(255))
        }
        Command::State { id } => {
            let state = rt()?.state(&id)?;
            print_json(&state)?;
            Ok(0)
        }
        Command::Kill { all, id, signal } => {
            let sig = parse_signal(signal.as_deref().unwrap_or("SIGTERM"))?;
            rt()?.kill(&id, sig, all)?;
            Ok(0)
        }
        Command::Delete { force, id } => {
            rt()?.delete(&id, force)?;
            Ok(0)
        }
        Command::Exec(args) => exec(&rt()?, args),
        Command::Ps {
            format,
            id,
            ps_args,
        } => ps(&rt()?, &id, format, &ps_args),
        Command::List { format, quiet } => {
            list(&rt()?, format, quiet)?;
            Ok(0)
        }
        Command::Pause { id } => {
            rt()?.pause(&id)?;
            Ok(0)
        }
        Command::Resume { id } => {
            rt()?.resume(&id)?;
            Ok(0)
        }
        Command::Events {
            stats,
            interval,
            id,
        } => {
            cli_stats::events(&rt()?, &id, stats, parse_duration(&interval)?)?;
            Ok(0)
        }
        Command::Update(args) => {
            let res = update_resources(&args)?;
            rt()?.update(&args.id, &res)?;
            Ok(0)
        }
        Command::Spec { bundle, rootless } => {
            if rootless {
                return Err(Error::not_implemented("rootless specs are not supported"));
            }
            write_default_spec(bundle.as_deref().unwrap_or(Path::new(".")))?;
            Ok(0)
        }
        Command::Features => {
            print_json(&cli_stats::features())?;
            Ok(0)
        }
        Command::Checkpoint { .. } | Command::Restore { .. } => Err(Error::not_implemented(
            "checkpoint and restore are not supported by berth-runc",
        )),
    }
}

fn listen_fds() -> i32 {
    std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
        .unwrap_or(0)
}

fn create_options(a: &CreateArgs) -> CreateOptions {
    CreateOptions {
        bundle: a.bundle.clone(),
        pid_file: a.pid_file.as_ref().map(|p| absolute(p)),
        console_socket: a.console_socket.clone(),
        no_pivot: a.no_pivot,
        no_new_keyring: a.no_new_keyring,
        preserve_fds: a.preserve_fds + listen_fds(),
        rootfs_ready: None,
    }
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

fn exec(rt: &Runtime, a: ExecArgs) -> Result<u8> {
    if a.ignore_paused {
        return Err(Error::not_implemented("--ignore-paused is not supported"));
    }
    let state = rt.state(&a.id)?;
    let mut process: Process = match &a.process {
        Some(path) => {
            let data = std::fs::read(path)
                .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
            berth_runtime::spec::parse_process(&data).map_err(|e| {
                Error::invalid_argument(format!("parse process {}: {e}", path.display()))
            })?
        }
        None => {
            // Defaults come from the container's own process, as with runc.
            let spec = berth_runtime::spec::load(&state.bundle)?;
            let mut p = spec
                .process()
                .clone()
                .ok_or_else(|| Error::invalid_argument("the container's spec has no process"))?;
            if a.command.is_empty() {
                return Err(Error::invalid_argument("exec: no command given"));
            }
            p.set_args(Some(a.command.clone()));
            p.set_terminal(Some(a.tty));
            p
        }
    };
    if a.tty {
        process.set_terminal(Some(true));
    }
    if let Some(cwd) = &a.cwd {
        process.set_cwd(cwd.clone());
    }
    if !a.env.is_empty() {
        let mut env = process.env().clone().unwrap_or_default();
        for e in &a.env {
            let key = e.split('=').next().unwrap_or_default();
            env.retain(|x| x.split('=').next() != Some(key));
            env.push(e.clone());
        }
        process.set_env(Some(env));
    }
    if let Some(u) = &a.user {
        let (uid, gid) = match u.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (u.as_str(), None),
        };
        let mut user = process.user().clone();
        user.set_uid(
            uid.parse()
                .map_err(|_| Error::invalid_argument(format!("--user {u:?}: bad uid")))?,
        );
        if let Some(g) = gid {
            user.set_gid(
                g.parse()
                    .map_err(|_| Error::invalid_argument(format!("--user {u:?}: bad gid")))?,
            );
        }
        process.set_user(user);
    }
    if !a.additional_gids.is_empty() {
        let mut user = process.user().clone();
        user.set_additional_gids(Some(a.additional_gids.clone()));
        process.set_user(user);
    }
    if a.no_new_privs {
        process.set_no_new_privileges(Some(true));
    }
    if !a.cap.is_empty() {
        let mut caps = process.capabilities().clone().unwrap_or_default();
        let added = parse_caps(&a.cap)?;
        let add = |s: Option<oci_spec::runtime::Capabilities>| {
            let mut s = s.unwrap_or_default();
            s.extend(added.iter().cloned());
            Some(s)
        };
        caps.set_bounding(add(caps.bounding().clone()));
        caps.set_effective(add(caps.effective().clone()));
        caps.set_permitted(add(caps.permitted().clone()));
        process.set_capabilities(Some(caps));
    }
    if !a.detach {
        nix::sys::prctl::set_child_subreaper(true)
            .map_err(|e| Error::internal(format!("prctl(PR_SET_CHILD_SUBREAPER): {e}")))?;
    }
    let opts = ExecOptions {
        pid_file: a.pid_file.as_ref().map(|p| absolute(p)),
        console_socket: a.console_socket.clone(),
        preserve_fds: a.preserve_fds + listen_fds(),
    };
    let pid = rt.exec(&a.id, &process, &opts)?;
    if a.detach {
        return Ok(0);
    }
    let code = wait_forwarding_signals(pid)?;
    Ok(u8::try_from(code).unwrap_or(255))
}

fn ps(rt: &Runtime, id: &str, format: OutputFormat, args: &[String]) -> Result<u8> {
    let pids = rt.pids(id)?;
    if format == OutputFormat::Json {
        print_json(&pids)?;
        return Ok(0);
    }
    let args: Vec<String> = if args.is_empty() {
        vec!["-ef".into()]
    } else {
        args.to_vec()
    };
    let out = std::process::Command::new("ps")
        .args(&args)
        .output()
        .map_err(|e| Error::io("run ps", e))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let col = header
        .split_whitespace()
        .position(|h| h == "PID")
        .ok_or_else(|| Error::invalid_argument("ps output has no PID column"))?;
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{header}");
    for line in lines {
        let pid = line
            .split_whitespace()
            .nth(col)
            .and_then(|p| p.parse::<i32>().ok());
        if pid.is_some_and(|p| pids.contains(&p)) {
            let _ = writeln!(stdout, "{line}");
        }
    }
    Ok(0)
}

fn list(rt: &Runtime, format: OutputFormat, quiet: bool) -> Result<()> {
    let mut states = rt.list()?;
    // As runc's `list` (its `state` leaves the owner empty): the user owning the state directory.
    for s in &mut states {
        s.owner = owner_of(&rt.root().join(&s.id));
    }
    let mut out = std::io::stdout().lock();
    if quiet {
        for s in &states {
            let _ = writeln!(out, "{}", s.id);
        }
        return Ok(());
    }
    if format == OutputFormat::Json {
        drop(out);
        return print_json(&states);
    }
    let rows: Vec<[String; 6]> = states
        .iter()
        .map(|s: &OciState| {
            [
                s.id.clone(),
                s.pid.to_string(),
                s.status.as_str().to_owned(),
                s.bundle.display().to_string(),
                s.created.clone(),
                s.owner.clone(),
            ]
        })
        .collect();
    let head = ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"].map(String::from);
    let mut widths = head.clone().map(|h| h.len());
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    for r in std::iter::once(&head).chain(rows.iter()) {
        let line: Vec<String> = r
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("   ").trim_end());
    }
    Ok(())
}

/// The name of the user owning `path` ("#UID" when it has none, as runc prints it).
fn owner_of(path: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(path) else {
        return String::new();
    };
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(meta.uid())) {
        Ok(Some(user)) => user.name,
        _ => format!("#{}", meta.uid()),
    }
}

fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(v)
        .map_err(|e| Error::internal(format!("encode JSON: {e}")))?;
    println!("{text}");
    Ok(())
}

/// Parses "KILL", "SIGKILL", "kill" or "9".
fn parse_signal(s: &str) -> Result<Signal> {
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n)
            .map_err(|_| Error::invalid_argument(format!("unknown signal {s:?}")));
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<Signal>()
        .map_err(|_| Error::invalid_argument(format!("unknown signal {s:?}")))
}

fn parse_duration(s: &str) -> Result<std::time::Duration> {
    let bad = || Error::invalid_argument(format!("bad duration {s:?} (e.g. 5s, 500ms, 1m)"));
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map(|i| s.split_at(i))
        .unwrap_or((s, "s"));
    let n: f64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(bad()),
    };
    if !(secs.is_finite() && secs > 0.0) {
        return Err(bad());
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

fn parse_bytes(s: &str) -> Result<i64> {
    let bad = || Error::invalid_argument(format!("bad size {s:?}"));
    if s == "-1" {
        return Ok(-1);
    }
    let lower = s.to_ascii_lowercase();
    let trimmed = lower.trim_end_matches('b');
    let (num, mult) = match trimmed.chars().last() {
        Some('k') => (&trimmed[..trimmed.len() - 1], 1i64 << 10),
        Some('m') => (&trimmed[..trimmed.len() - 1], 1 << 20),
        Some('g') => (&trimmed[..trimmed.len() - 1], 1 << 30),
        Some('t') => (&trimmed[..trimmed.len() - 1], 1 << 40),
        _ => (trimmed, 1),
    };
    let n: i64 = num.parse().map_err(|_| bad())?;
    n.checked_mul(mult).ok_or_else(bad)
}

fn update_resources(a: &UpdateArgs) -> Result<LinuxResources> {
    let mut value: serde_json::Value = match &a.resources {
        Some(p) => {
            let data = if p == Path::new("-") {
                let mut v = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut v)
                    .map_err(|e| Error::io("read resources from stdin", e))?;
                v
            } else {
                std::fs::read(p).map_err(|e| Error::io(format!("read {}", p.display()), e))?
            };
            serde_json::from_slice(&data)
                .map_err(|e| Error::invalid_argument(format!("parse resources: {e}")))?
        }
        None => serde_json::json!({}),
    };
    let obj = value
        .as_object_mut()
        .ok_or_else(|| Error::invalid_argument("resources must be a JSON object"))?;
    let mut set = |section: &str, key: &str, v: serde_json::Value| {
        let s = obj
            .entry(section.to_owned())
            .or_insert_with(|| serde_json::json!({}));
        if let Some(m) = s.as_object_mut() {
            m.insert(key.to_owned(), v);
        }
    };
    if let Some(m) = &a.memory {
        set("memory", "limit", parse_bytes(m)?.into());
    }
    if let Some(m) = &a.memory_reservation {
        set("memory", "reservation", parse_bytes(m)?.into());
    }
    if let Some(m) = &a.memory_swap {
        set("memory", "swap", parse_bytes(m)?.into());
    }
    if let Some(m) = &a.kernel_memory {
        set("memory", "kernel", parse_bytes(m)?.into());
    }
    if let Some(v) = a.cpu_shares {
        set("cpu", "shares", v.into());
    }
    if let Some(v) = a.cpu_quota {
        set("cpu", "quota", v.into());
    }
    if let Some(v) = a.cpu_period {
        set("cpu", "period", v.into());
    }
    if let Some(v) = &a.cpuset_cpus {
        set("cpu", "cpus", v.clone().into());
    }
    if let Some(v) = &a.cpuset_mems {
        set("cpu", "mems", v.clone().into());
    }
    if let Some(v) = a.pids_limit {
        set("pids", "limit", v.into());
    }
    if let Some(v) = a.blkio_weight {
        set("blockIO", "weight", v.into());
    }
    serde_json::from_value(value).map_err(|e| Error::invalid_argument(format!("resources: {e}")))
}

/// Writes runc's default spec. oci-spec's `Spec::default()` is youki's and differs from runc's
/// where it matters: it allows every device (no deny-all rule), puts the capabilities in the
/// inheritable set (what runc dropped from its default after CVE-2022-29162) and names the host
/// "youki". Those three are set as `runc spec` sets them.
fn write_default_spec(bundle: &Path) -> Result<()> {
    let path = bundle.join("config.json");
    let mut spec = serde_json::to_value(Spec::default())
        .map_err(|e| Error::internal(format!("encode spec: {e}")))?;
    spec["ociVersion"] = berth_runtime::spec::OCI_VERSION.into();
    spec["hostname"] = "runc".into();
    if let Some(caps) = spec["process"]["capabilities"].as_object_mut() {
        caps.remove("inheritable");
    }
    spec["linux"]["resources"]["devices"] = serde_json::json!([{"allow": false, "access": "rwm"}]);
    let data = serde_json::to_vec_pretty(&spec)
        .map_err(|e| Error::internal(format!("encode spec: {e}")))?;
    // create_new: refusing to overwrite must not race with another writer.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                Error::already_exists(format!("File {} exists. Remove it first", path.display()))
            } else {
                Error::io(format!("write {}", path.display()), e)
            }
        })?;
    file.write_all(&data)
        .map_err(|e| Error::io(format!("write {}", path.display()), e))
}

/// Parses capability names as runc's `--cap` takes them ("CAP_NET_ADMIN" or "net_admin").
fn parse_caps(names: &[String]) -> Result<Vec<oci_spec::runtime::Capability>> {
    names
        .iter()
        .map(|n| {
            let upper = n.to_ascii_uppercase();
            let full = if upper.starts_with("CAP_") {
                upper
            } else {
                format!("CAP_{upper}")
            };
            serde_json::from_value(serde_json::Value::String(full))
                .map_err(|_| Error::invalid_argument(format!("unknown capability {n:?}")))
        })
        .collect()
}
