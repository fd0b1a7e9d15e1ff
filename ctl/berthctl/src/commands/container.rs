//! The docker-like container commands: `run`, `create`, `start`, `exec`, `ps`, `stop`, `kill`,
//! `rm`, `inspect`, `top`, `stats`, `pause`, `unpause`, `wait`.
//!
//! A container is a containerd container record (runtime `io.containerd.runc.v2`, a Docker-like
//! spec from [`berth_client::spec`], a snapshot keyed by the container id on the image's top
//! layer) plus, while it runs, a task. Everything goes through berthd's containerd API, so
//! `ctr` sees the same containers. The container's output is always kept in its log by berthd
//! (`io.berth.log=json-file`), attached or not, for `berthctl logs`.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use berth_client::Client;
use berth_client::convert::known_time;
use berth_client::leases::LeaseOptions;
use berth_client::spec::{self, Network, SpecOptions, User};
use berth_client::tasks::CgroupStats;
use berth_client::unpack::UnpackOptions;
use berth_core::containers::AUTO_REMOVE_LABEL;
use berth_core::containers::{Container, RUNTIME_SPEC_TYPE_URL};
use berth_core::images::Image;
use berth_core::labels::Labels;
use berth_core::mount::Mount;
use berth_core::reference::Reference;
use berth_core::tasks::{ProcessState, TaskStatus};
use berth_core::transfer::PullRequest;
use berth_core::{AnyValue, Error, ErrorKind, Result};
use clap::{Args, ValueEnum};
use serde::Serialize;
use serde_json::{Value, json};

use super::attach::{AttachOptions, Attached, RawTerminal, terminal_size};
use super::pull::{Direction, View, explain, stored_credentials};
use super::{Ctx, print};
use crate::output::{self, Format, Table};
use crate::{CmdResult, Failure, parse};

/// A label berthctl keeps the image's stop signal in, for `stop`.
const LABEL_STOP_SIGNAL: &str = "io.berth.ctl.stop-signal";
/// How long to wait for output to drain once the container has exited.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// When `run` and `create` pull the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum PullPolicy {
    /// Only when berthd does not have it.
    #[default]
    Missing,
    /// Every time.
    Always,
    /// Never: fail if berthd does not have it.
    Never,
}

/// The network a container gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum NetworkMode {
    /// Its own network namespace with only loopback.
    #[default]
    None,
    /// The host's network.
    Host,
}

/// The flags `run` and `create` share.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The container's name (and id); default: 12 random hex digits.
    #[arg(long)]
    pub name: Option<String>,
    /// Set an environment variable, KEY=value (KEY alone: this shell's value) (repeatable).
    #[arg(long = "env", short = 'e')]
    pub env: Vec<String>,
    /// Read environment variables from a file of KEY=value lines (repeatable).
    #[arg(long)]
    pub env_file: Vec<PathBuf>,
    /// The working directory inside the container.
    #[arg(long, short = 'w')]
    pub workdir: Option<String>,
    /// The user, name|uid[:group|gid].
    #[arg(long, short = 'u')]
    pub user: Option<String>,
    /// Override the image's entrypoint ("" clears it).
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// The container's hostname (default: the first 12 characters of its id).
    #[arg(long)]
    pub hostname: Option<String>,
    /// Mount the root filesystem read-only.
    #[arg(long)]
    pub read_only: bool,
    /// A memory limit, e.g. 64m or 1g.
    #[arg(long, value_parser = parse::size)]
    pub memory: Option<u64>,
    /// How many CPUs the container may use, e.g. 0.5.
    #[arg(long)]
    pub cpus: Option<f64>,
    /// The most processes the container may have.
    #[arg(long)]
    pub pids_limit: Option<i64>,
    /// Add a capability (or ALL) (repeatable).
    #[arg(long)]
    pub cap_add: Vec<String>,
    /// Drop a capability (or ALL) (repeatable).
    #[arg(long)]
    pub cap_drop: Vec<String>,
    /// Every capability and device, no seccomp, no masked paths.
    #[arg(long)]
    pub privileged: bool,
    /// A runc-compatible runtime binary to run the container with (e.g. runc), instead of
    /// Berth's built-in runtime.
    #[arg(long)]
    pub runtime: Option<String>,
    /// A label, key=value (repeatable).
    #[arg(long = "label", short = 'l', value_parser = parse::label)]
    pub labels: Vec<(String, String)>,
    /// The snapshotter for the container's root filesystem (default: berthd's).
    #[arg(long, env = "BERTH_SNAPSHOTTER")]
    pub snapshotter: Option<String>,
    /// When to pull the image.
    #[arg(long, value_enum, default_value_t = PullPolicy::Missing)]
    pub pull: PullPolicy,
    /// The network: none (own namespace, loopback only) or host.
    #[arg(long, value_enum, default_value_t = NetworkMode::None)]
    pub network: NetworkMode,
    /// Keep stdin open and forward it to the container.
    #[arg(long, short = 'i')]
    pub interactive: bool,
    /// Give the container a pseudo-terminal.
    #[arg(long, short = 't')]
    pub tty: bool,
    /// The image.
    pub image: String,
    /// The command and its arguments (default: the image's).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

/// `berthctl run [-d] [--rm] [flags] IMAGE [COMMAND...]`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Run in the background and print the container's id.
    #[arg(long, short = 'd')]
    pub detach: bool,
    /// Remove the container (task, record, snapshot) when it exits.
    #[arg(long)]
    pub rm: bool,
    /// What to create.
    #[command(flatten)]
    pub create: CreateArgs,
}

/// `berthctl start [-a] [-i] ID...`.
#[derive(Debug, Args)]
pub struct StartArgs {
    /// Attach to the container's output and return its exit code (one container only).
    #[arg(long, short = 'a')]
    pub attach: bool,
    /// Forward stdin (with --attach).
    #[arg(long, short = 'i')]
    pub interactive: bool,
    /// The containers.
    #[arg(required = true)]
    pub ids: Vec<String>,
}

/// `berthctl exec [-i] [-t] [-e K=V] [-u USER] [-w DIR] ID COMMAND...`.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Forward stdin.
    #[arg(long, short = 'i')]
    pub interactive: bool,
    /// Give the process a pseudo-terminal.
    #[arg(long, short = 't')]
    pub tty: bool,
    /// Set an environment variable, KEY=value (repeatable).
    #[arg(long = "env", short = 'e')]
    pub env: Vec<String>,
    /// The user, name|uid[:group|gid].
    #[arg(long, short = 'u')]
    pub user: Option<String>,
    /// The working directory.
    #[arg(long, short = 'w')]
    pub workdir: Option<String>,
    /// The container.
    pub id: String,
    /// The command and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

/// `berthctl ps [-a] [-q]`.
#[derive(Debug, Args)]
pub struct PsArgs {
    /// Show every container, not only running ones.
    #[arg(long, short = 'a')]
    pub all: bool,
    /// Print only ids.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// `berthctl stop [-t SECONDS] ID...`.
#[derive(Debug, Args)]
pub struct StopArgs {
    /// Seconds to wait after SIGTERM before SIGKILL.
    #[arg(long = "time", short = 't', default_value_t = 10)]
    pub time: u64,
    /// The containers.
    #[arg(required = true)]
    pub ids: Vec<String>,
}

/// `berthctl kill [-s SIGNAL] ID...`.
#[derive(Debug, Args)]
pub struct KillArgs {
    /// The signal, by name (KILL, SIGTERM) or number.
    #[arg(long, short = 's', default_value = "KILL")]
    pub signal: String,
    /// The containers.
    #[arg(required = true)]
    pub ids: Vec<String>,
}

/// `berthctl rm [-f] ID...`.
#[derive(Debug, Args)]
pub struct RmArgs {
    /// Kill a running container first.
    #[arg(long, short = 'f')]
    pub force: bool,
    /// The containers.
    #[arg(required = true)]
    pub ids: Vec<String>,
}

/// `berthctl stats [--no-stream] [ID...]`.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Print one sample and exit.
    #[arg(long)]
    pub no_stream: bool,
    /// The containers (default: every running one).
    pub ids: Vec<String>,
}

/// A list of container ids.
#[derive(Debug, Args)]
pub struct IdsArgs {
    /// The containers.
    #[arg(required = true)]
    pub ids: Vec<String>,
}

/// `berthctl top ID`.
#[derive(Debug, Args)]
pub struct TopArgs {
    /// The container.
    pub id: String,
}

/// This process's capability bounding set: berthctl runs on berthd's host, so it is what
/// `--privileged` can grant there.
fn own_bounding_set() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapBnd:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// A random 12-hex-digit container id.
fn random_id() -> String {
    let bytes: [u8; 6] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A signal by name (`KILL`, `SIGKILL`, `sigkill`) or number.
pub fn signal_number(s: &str) -> Result<u32> {
    if let Ok(n) = s.parse::<u32>()
        && (1..=64).contains(&n)
    {
        return Ok(n);
    }
    let upper = s.trim().to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    full.parse::<nix::sys::signal::Signal>()
        .map(|sig| sig as u32)
        .map_err(|_| Error::invalid_argument(format!("unknown signal {s:?}")))
}

/// `KEY=value` pairs from `-e` and `--env-file`: `KEY` alone takes this process's value (and is
/// dropped when it has none), as docker does.
fn environment(env: &[String], files: &[PathBuf]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut add = |kv: &str| {
        if kv.contains('=') {
            out.push(kv.to_owned());
        } else if let Ok(v) = std::env::var(kv) {
            out.push(format!("{kv}={v}"));
        }
    };
    for file in files {
        let text = std::fs::read_to_string(file)
            .map_err(|e| Error::io(format!("read env file {}", file.display()), e))?;
        for line in text.lines() {
            let line = line.trim_start();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            add(line);
        }
    }
    for kv in env {
        add(kv);
    }
    Ok(out)
}

/// The image `name` (normalized), pulled per `policy` with progress on stderr.
async fn ensure_image(
    client: &Client,
    name: &str,
    policy: PullPolicy,
    snapshotter: Option<&str>,
) -> Result<Image> {
    let full = Reference::parse(name)
        .map(|r| r.to_string())
        .unwrap_or_else(|_| name.to_owned());
    let mut found = None;
    if policy != PullPolicy::Always {
        // Names as given first: images imported under a short or odd name are found too.
        for candidate in [name, full.as_str()] {
            match client.images().get(candidate).await {
                Ok(img) => {
                    found = Some(img);
                    break;
                }
                Err(e) if e.is(ErrorKind::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
    }
    if let Some(img) = found {
        return Ok(img);
    }
    if policy == PullPolicy::Never {
        return Err(Error::not_found(format!(
            "image {full:?} is not in berthd and --pull never forbids pulling it"
        )));
    }
    let req = PullRequest {
        credentials: stored_credentials(&full),
        reference: full.clone(),
        platforms: Vec::new(),
        all_platforms: false,
        unpack: true,
        snapshotter: snapshotter.unwrap_or_default().to_owned(),
        labels: Labels::new(),
    };
    let mut view = View::new(Direction::Pull, false);
    let result = client.transfer().pull(&req, |e| view.event(&e)).await;
    view.finish(result.is_ok());
    result.map_err(|e| explain(e, &format!("pull {full}")))
}

/// Creates the container record and its snapshot; returns the container.
/// A container just made, with its rootfs mounts (from Prepare) and the lease that held its
/// snapshot until the record did, which the caller lets go with [`release_lease`].
struct Created {
    container: Container,
    mounts: Vec<Mount>,
}

/// Creates a container (`create`, and the first half of `run`). The lease taken around the
/// snapshot's Prepare is returned in every case, for the caller to delete.
async fn create_container(
    ctx: &Ctx,
    client: &Client,
    args: &CreateArgs,
) -> (Result<Created>, Option<String>) {
    // Three independent lookups, in parallel; one lease holds the snapshot until the
    // container record does.
    let leases = client.leases();
    let (image, snapshotter, lease) = tokio::join!(
        ensure_image(client, &args.image, args.pull, args.snapshotter.as_deref()),
        client.resolve_snapshotter(args.snapshotter.as_deref()),
        leases.create(LeaseOptions::default().expires_in(Duration::from_secs(3600))),
    );
    let lease_id = lease.as_ref().ok().map(|l| l.id.clone());
    let created = async {
        let leased = client.with_lease(&lease?.id);
        create_leased(ctx, &leased, image?, snapshotter?, args).await
    }
    .await;
    (created, lease_id)
}

/// Deletes the lease [`create_container`] took; a failure is only logged (it expires).
async fn release_lease(client: &Client, lease: Option<String>) {
    if let Some(lease) = lease
        && let Err(e) = client.leases().delete(&lease, false).await
    {
        tracing::warn!(%lease, error = %e, "could not delete the create lease");
    }
}

async fn create_leased(
    ctx: &Ctx,
    leased: &Client,
    image: Image,
    snapshotter: String,
    args: &CreateArgs,
) -> Result<Created> {
    let id = args.name.clone().unwrap_or_else(random_id);
    let env = environment(&args.env, &args.env_file)?;
    let unpacked = leased
        .unpack(
            &image.target,
            &UnpackOptions {
                snapshotter: Some(snapshotter.clone()),
                platform: None,
            },
        )
        .await
        .map_err(|e| e.context(format!("unpack {}", image.name)))?;
    let config = &unpacked.image_config;
    let mounts = leased
        .snapshots(&snapshotter)
        .prepare(&id, Some(unpacked.chain_id.as_str()), &Labels::new())
        .await
        .map_err(|e| {
            if e.is(ErrorKind::AlreadyExists) {
                Error::already_exists(format!(
                    "a container (or snapshot) named {id:?} already exists"
                ))
            } else {
                e
            }
        })?;
    let built = async {
        let user_spec = args
            .user
            .clone()
            .or_else(|| config.user.clone())
            .filter(|u| !u.is_empty());
        let user = match &user_spec {
            Some(u) => spec::resolve_user(u, &mounts)?,
            None => User::default(),
        };
        let opts = SpecOptions {
            id: id.clone(),
            namespace: ctx.namespace.clone(),
            args: args.args.clone(),
            entrypoint: args.entrypoint.clone(),
            env,
            workdir: args.workdir.clone(),
            user,
            hostname: args.hostname.clone(),
            read_only: args.read_only,
            memory: args.memory.map(|m| m as i64),
            cpus: args.cpus,
            pids_limit: args.pids_limit,
            cap_add: args.cap_add.clone(),
            cap_drop: args.cap_drop.clone(),
            privileged: args.privileged,
            host_capabilities: own_bounding_set(),
            tty: args.tty,
            network: match args.network {
                NetworkMode::None => Network::None,
                NetworkMode::Host => Network::Host,
            },
        };
        let oci = spec::build(config, &opts)?;
        let bytes = serde_json::to_vec(&oci)
            .map_err(|e| Error::internal(format!("encode the spec: {e}")))?;
        let mut user_labels: Labels = args.labels.iter().cloned().collect();
        if let Some(sig) = &config.stop_signal {
            user_labels.insert(LABEL_STOP_SIGNAL.to_owned(), sig.clone());
        }
        let mut c = Container::new(
            &id,
            spec::DEFAULT_RUNTIME,
            AnyValue::new(RUNTIME_SPEC_TYPE_URL, bytes),
        );
        c.labels = spec::container_labels(&user_labels);
        c.image = image.name.clone();
        c.snapshotter = snapshotter.clone();
        c.snapshot_key = id.clone();
        c.runtime.options = args.runtime.as_deref().map(spec::runc_options);
        leased.containers().create(&c).await
    }
    .await;
    match built {
        Ok(container) => Ok(Created { container, mounts }),
        Err(e) => {
            let _ = leased.snapshots(&snapshotter).remove(&id).await;
            Err(e)
        }
    }
}

/// Creates and starts the task of `c` with the given stdio (or none: detached). Returns the
/// attached stdio when there is some.
async fn create_task(
    client: &Client,
    c: &Container,
    attach: Option<AttachOptions>,
) -> Result<Option<Attached>> {
    // A task left from an earlier run (stopped), or one created but never started (a start
    // that failed half-way), makes way for the new one.
    match client.tasks().get(&c.id, "").await {
        Ok(p) if matches!(p.status, TaskStatus::Stopped | TaskStatus::Created) => {
            client.tasks().delete(&c.id).await?;
        }
        Ok(p) => {
            return Err(Error::failed_precondition(format!(
                "container {:?} already has a task ({})",
                c.id,
                status_word(p.status)
            )));
        }
        Err(e) if e.is(ErrorKind::NotFound) => {}
        Err(e) => return Err(e),
    }
    let mounts = client
        .snapshots(&c.snapshotter)
        .mounts(&c.snapshot_key)
        .await
        .map_err(|e| e.context(format!("the rootfs of container {:?}", c.id)))?;
    create_task_on(client, c, &mounts, attach).await
}

/// Creates the task of `c` on the rootfs `mounts`: for a container just made, which has no
/// task yet and whose mounts Prepare returned.
async fn create_task_on(
    client: &Client,
    c: &Container,
    mounts: &[Mount],
    attach: Option<AttachOptions>,
) -> Result<Option<Attached>> {
    let attached = attach.map(Attached::new).transpose()?;
    let io = attached
        .as_ref()
        .map(|a| a.io().clone())
        .unwrap_or_default();
    if let Err(e) = client.tasks().create(&c.id, mounts, &io, None).await {
        if let Some(a) = &attached {
            a.abandon();
        }
        return Err(e);
    }
    Ok(attached)
}

/// Signals forwarded to an attached container without a tty, as docker's sig-proxy.
async fn next_signal(signals: &mut [(tokio::signal::unix::Signal, u32)]) -> Option<u32> {
    if signals.is_empty() {
        return std::future::pending().await;
    }
    let futures = signals.iter_mut().map(|(s, n)| {
        let n = *n;
        Box::pin(async move { s.recv().await.map(|()| n) })
    });
    futures::future::select_all(futures).await.0
}

fn proxied_signals(tty: bool) -> Vec<(tokio::signal::unix::Signal, u32)> {
    use tokio::signal::unix::{SignalKind, signal};
    if tty {
        return Vec::new();
    }
    [
        libc::SIGINT,
        libc::SIGTERM,
        libc::SIGHUP,
        libc::SIGQUIT,
        libc::SIGUSR1,
        libc::SIGUSR2,
    ]
    .into_iter()
    .filter_map(|n| signal(SignalKind::from_raw(n)).ok().map(|s| (s, n as u32)))
    .collect()
}

/// Starts process `exec_id` ("" for the init) of `id` with `attached` stdio and waits for it:
/// forwards signals (no tty) or keeps the pty's size in step (tty), closes its stdin at EOF, and
/// returns its exit status once its output has drained.
async fn start_attached(
    client: &Client,
    id: &str,
    exec_id: &str,
    mut attached: Attached,
    tty: bool,
) -> Result<(u32, tempfile::TempDir)> {
    use tokio::signal::unix::{SignalKind, signal};
    let raw = if tty { RawTerminal::enter() } else { None };
    // Before Start: once the container runs, whoever sees its output may signal berthctl.
    let mut signals = proxied_signals(tty);
    let mut winch = if tty {
        signal(SignalKind::window_change()).ok()
    } else {
        None
    };
    let waiter = {
        let client = client.clone();
        let (id, exec_id) = (id.to_owned(), exec_id.to_owned());
        tokio::spawn(async move { client.tasks().wait(&id, &exec_id).await })
    };
    let started = client.tasks().start(id, exec_id).await;
    if let Err(e) = started {
        waiter.abort();
        attached.abandon();
        drop(raw);
        return Err(e);
    }
    if tty && let Some((w, h)) = terminal_size() {
        let _ = client.tasks().resize_pty(id, exec_id, w, h).await;
    }
    let mut stdin_done = attached.stdin_done.take();
    let mut waiter = waiter;
    let exit = loop {
        tokio::select! {
            res = &mut waiter => {
                break res.map_err(|e| Error::internal(format!("wait task: {e}")))??;
            }
            Some(()) = async {
                match winch.as_mut() { Some(w) => w.recv().await, None => std::future::pending().await }
            } => {
                if let Some((w, h)) = terminal_size() {
                    let _ = client.tasks().resize_pty(id, exec_id, w, h).await;
                }
            }
            Some(()) = async {
                match stdin_done.as_mut() { Some(r) => r.recv().await, None => std::future::pending().await }
            } => {
                stdin_done = None;
                if let Err(e) = client.tasks().close_io(id, exec_id).await {
                    tracing::debug!(error = %e, "close the container's stdin");
                }
            }
            Some(sig) = next_signal(&mut signals) => {
                if let Err(e) = client.tasks().kill(id, exec_id, sig, false).await {
                    tracing::debug!(error = %e, sig, "forward a signal");
                }
            }
        }
    };
    let fifos = attached.drain(DRAIN_GRACE);
    drop(raw);
    Ok((exit.exit_status, fifos))
}

fn exit_failure(status: u32) -> CmdResult {
    if status == 0 {
        Ok(())
    } else {
        Err(Failure::Exit(u8::try_from(status).unwrap_or(u8::MAX)))
    }
}

/// `berthctl create`: prints the new container's id.
pub async fn create(ctx: &Ctx, args: CreateArgs) -> CmdResult {
    let client = ctx.connect().await?;
    let (created, lease) = create_container(ctx, &client, &args).await;
    release_lease(&client, lease).await;
    print(&format!("{}\n", created?.container.id))
}

/// `berthctl run`.
pub async fn run(ctx: &Ctx, args: RunArgs) -> CmdResult {
    let client = ctx.connect().await?;
    let mut create = args.create;
    if args.detach && args.rm {
        // Nobody is left to remove it: berthd does, when the init exits. An attached run
        // removes it itself, after it has the exit status.
        create
            .labels
            .push((AUTO_REMOVE_LABEL.to_owned(), "true".to_owned()));
    }
    let args = RunArgs { create, ..args };
    let (created, lease) = create_container(ctx, &client, &args.create).await;
    let Created {
        container: c,
        mounts,
    } = match created {
        Ok(created) => created,
        Err(e) => {
            release_lease(&client, lease).await;
            return Err(e.into());
        }
    };
    let attach = (!args.detach).then_some(AttachOptions {
        stdin: args.create.interactive,
        tty: args.create.tty,
    });
    // The record holds the snapshot now: the lease goes while the task is made.
    let (task, ()) = tokio::join!(
        create_task_on(&client, &c, &mounts, attach),
        release_lease(&client, lease)
    );
    let Some(opts) = attach else {
        task?;
        client.tasks().start(&c.id, "").await?;
        return print(&format!("{}\n", c.id));
    };
    let result = async {
        let attached = task?.ok_or_else(|| Error::internal("attached stdio missing"))?;
        start_attached(&client, &c.id, "", attached, opts.tty).await
    }
    .await;
    // The FIFOs go while the container is removed.
    let (result, fifos) = match result {
        Ok((status, fifos)) => (Ok(status), Some(fifos)),
        Err(e) => (Err(e), None),
    };
    let fifos_removed = tokio::task::spawn_blocking(move || drop(fifos));
    if args.rm {
        // The exit status is in: the task has stopped, and `c` names the snapshot, so the
        // lookups `rm` makes first are skipped (it is still the fallback for anything odd).
        let removed = match &result {
            Ok(_) => remove_exited(&client, &c).await,
            Err(_) => remove(&client, &c.id, true).await,
        };
        if let Err(e) = removed {
            crate::report(&e.context(format!("remove container {:?}", c.id)));
        }
    }
    let _ = fifos_removed.await;
    exit_failure(result?)
}

/// Removes `c` after its task has exited: task, snapshot, record.
async fn remove_exited(client: &Client, c: &Container) -> Result<()> {
    match client.tasks().delete(&c.id).await {
        Ok(_) => {}
        Err(e) if e.is(ErrorKind::NotFound) => {}
        Err(e) if e.is(ErrorKind::FailedPrecondition) => return remove(client, &c.id, true).await,
        Err(e) => return Err(e),
    }
    remove_snapshot_and_record(client, c).await
}

/// Removes the snapshot of `c` (whose task is gone) and its record, side by side: each is a
/// durable commit of its own, and a snapshot left by a failed removal is no longer held by
/// anything once the record is gone, so garbage collection takes it.
async fn remove_snapshot_and_record(client: &Client, c: &Container) -> Result<()> {
    let snapshot = async {
        if c.snapshotter.is_empty() || c.snapshot_key.is_empty() {
            return Ok(());
        }
        match client
            .snapshots(&c.snapshotter)
            .remove(&c.snapshot_key)
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if e.is(ErrorKind::NotFound) => Ok(()),
            Err(e) => Err(e.context(format!("remove the snapshot of {:?}", c.id))),
        }
    };
    let containers = client.containers();
    let (snapshot, record) = tokio::join!(snapshot, containers.delete(&c.id));
    snapshot.and(record)
}

/// `berthctl start`.
pub async fn start(ctx: &Ctx, args: StartArgs) -> CmdResult {
    let client = ctx.connect().await?;
    if args.attach {
        let [id] = args.ids.as_slice() else {
            return Err(Error::invalid_argument("--attach takes exactly one container").into());
        };
        let c = client.containers().get(id).await?;
        let tty = spec_of(&c)
            .ok()
            .and_then(|s| s["process"]["terminal"].as_bool())
            .unwrap_or(false);
        let opts = AttachOptions {
            stdin: args.interactive,
            tty,
        };
        let attached = create_task(&client, &c, Some(opts))
            .await?
            .ok_or_else(|| Error::internal("attached stdio missing"))?;
        let (status, _fifos) = start_attached(&client, id, "", attached, tty).await?;
        return exit_failure(status);
    }
    super::remove_each(ctx, args.ids, |id| {
        let client = client.clone();
        async move {
            let c = client.containers().get(&id).await?;
            create_task(&client, &c, None).await?;
            client.tasks().start(&id, "").await?;
            Ok(id)
        }
    })
    .await
}

fn spec_of(c: &Container) -> Result<Value> {
    let spec = c
        .spec
        .as_ref()
        .ok_or_else(|| Error::invalid_argument(format!("container {:?} has no spec", c.id)))?;
    serde_json::from_slice(&spec.value).map_err(|e| {
        Error::invalid_argument(format!("the spec of container {:?} is not JSON: {e}", c.id))
    })
}

/// `berthctl exec`.
pub async fn exec(ctx: &Ctx, args: ExecArgs) -> CmdResult {
    let client = ctx.connect().await?;
    let c = client.containers().get(&args.id).await?;
    let spec = spec_of(&c)?;
    let user = match &args.user {
        Some(u) => {
            let mounts = client
                .snapshots(&c.snapshotter)
                .mounts(&c.snapshot_key)
                .await?;
            Some(spec::resolve_user(u, &mounts)?)
        }
        None => None,
    };
    let env = environment(&args.env, &[])?;
    let process = spec::exec_process(
        &spec,
        &args.args,
        args.tty,
        &env,
        user.as_ref(),
        args.workdir.as_deref(),
    )?;
    let bytes = serde_json::to_vec(&process)
        .map_err(|e| Error::internal(format!("encode the process: {e}")))?;
    let exec_id = format!("exec-{}", random_id());
    let attached = Attached::new(AttachOptions {
        stdin: args.interactive,
        tty: args.tty,
    })?;
    if let Err(e) = client
        .tasks()
        .exec(&args.id, &exec_id, &bytes, attached.io())
        .await
    {
        attached.abandon();
        return Err(e.into());
    }
    let result = start_attached(&client, &args.id, &exec_id, attached, args.tty).await;
    if let Err(e) = client.tasks().delete_process(&args.id, &exec_id).await {
        tracing::debug!(error = %e, "delete the exec'd process");
    }
    exit_failure(result?.0)
}

fn status_word(s: TaskStatus) -> &'static str {
    match s {
        TaskStatus::Unknown => "unknown",
        TaskStatus::Created => "created",
        TaskStatus::Running => "running",
        TaskStatus::Stopped => "exited",
        TaskStatus::Paused => "paused",
        TaskStatus::Pausing => "pausing",
    }
}

/// One line of `ps`.
#[derive(Debug, Serialize)]
pub struct PsRow {
    /// The container id.
    pub id: String,
    /// Its image.
    pub image: String,
    /// The command it runs.
    pub command: String,
    /// When it was created (RFC 3339).
    pub created: Option<String>,
    /// created, running, paused, exited (no task: created).
    pub state: String,
    /// The exit code once exited.
    pub exit_code: Option<u32>,
    /// The init's host pid while it runs.
    pub pid: Option<u32>,
    /// When it was created, for the table's age.
    #[serde(skip)]
    pub created_at: Option<SystemTime>,
}

fn command_of(c: &Container) -> String {
    spec_of(c)
        .ok()
        .and_then(|s| {
            s["process"]["args"].as_array().map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(" ")
            })
        })
        .unwrap_or_default()
}

/// `berthctl ps`.
pub async fn ps(ctx: &Ctx, args: PsArgs) -> CmdResult {
    let client = ctx.connect().await?;
    let containers = client.containers().list(&[]).await?;
    let tasks: std::collections::HashMap<String, ProcessState> = client
        .tasks()
        .list()
        .await?
        .into_iter()
        .map(|p| (p.container_id.clone(), p))
        .collect();
    let mut rows = Vec::new();
    for c in &containers {
        let task = tasks.get(&c.id);
        let running = task.is_some_and(|t| {
            matches!(
                t.status,
                TaskStatus::Running | TaskStatus::Paused | TaskStatus::Pausing
            )
        });
        if !args.all && !running {
            continue;
        }
        rows.push(PsRow {
            id: c.id.clone(),
            image: c.image.clone(),
            command: command_of(c),
            created: output::rfc3339(known_time(c.created_at)),
            state: task.map_or("created", |t| status_word(t.status)).to_owned(),
            exit_code: task
                .filter(|t| t.status == TaskStatus::Stopped)
                .map(|t| t.exit_status),
            pid: task.filter(|_| running).map(|t| t.pid),
            created_at: known_time(c.created_at),
        });
    }
    if args.quiet {
        let ids: String = rows.iter().map(|r| format!("{}\n", r.id)).collect();
        return print(&ids);
    }
    let now = SystemTime::now();
    print(&output::render(ctx.format, &rows, |rows| {
        let mut t = Table::new(&["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS"]);
        for r in rows {
            let status = match (r.state.as_str(), r.exit_code) {
                ("exited", Some(code)) => format!("Exited ({code})"),
                ("running", _) => "Up".to_owned(),
                ("paused", _) => "Up (Paused)".to_owned(),
                (other, _) => {
                    let mut s = other.to_owned();
                    if let Some(first) = s.get_mut(0..1) {
                        first.make_ascii_uppercase();
                    }
                    s
                }
            };
            let mut command = r.command.clone();
            if command.chars().count() > 30 {
                command = command.chars().take(29).collect::<String>() + "…";
            }
            t.row(vec![
                r.id.clone(),
                r.image.clone(),
                format!("{command:?}"),
                output::age(r.created_at, now),
                status,
            ]);
        }
        t.render()
    }))
}

/// Waits for the init of `id` to exit, at most `within` (None: no limit); None on timeout.
async fn wait_exit(client: &Client, id: &str, within: Option<Duration>) -> Result<Option<u32>> {
    let tasks = client.tasks();
    let wait = tasks.wait(id, "");
    match within {
        None => Ok(Some(wait.await?.exit_status)),
        Some(d) => match tokio::time::timeout(d, wait).await {
            Ok(r) => Ok(Some(r?.exit_status)),
            Err(_) => Ok(None),
        },
    }
}

/// Stops `id`: its stop signal (SIGTERM), then SIGKILL after `grace`. A container without a
/// running task is already stopped.
async fn stop_one(client: &Client, id: &str, grace: Duration) -> Result<()> {
    let c = client.containers().get(id).await?;
    match client.tasks().get(id, "").await {
        Ok(p) if p.status == TaskStatus::Stopped => return Ok(()),
        Ok(p) if matches!(p.status, TaskStatus::Paused | TaskStatus::Pausing) => {
            // A frozen process cannot act on SIGTERM: thaw it first, as docker does.
            client.tasks().resume(id).await?;
        }
        Ok(_) => {}
        Err(e) if e.is(ErrorKind::NotFound) => return Ok(()),
        Err(e) => return Err(e),
    }
    let sig = c
        .labels
        .get(LABEL_STOP_SIGNAL)
        .and_then(|s| signal_number(s).ok())
        .unwrap_or(libc::SIGTERM as u32);
    match client.tasks().kill(id, "", sig, false).await {
        Ok(()) => {}
        Err(e) if e.is(ErrorKind::NotFound) => return Ok(()),
        Err(e) => return Err(e),
    }
    if wait_exit(client, id, Some(grace)).await?.is_some() {
        return Ok(());
    }
    match client
        .tasks()
        .kill(id, "", libc::SIGKILL as u32, true)
        .await
    {
        Ok(()) => {}
        Err(e) if e.is(ErrorKind::NotFound) => return Ok(()),
        Err(e) => return Err(e),
    }
    wait_exit(client, id, None).await.map(drop)
}

/// `berthctl stop`.
pub async fn stop(ctx: &Ctx, args: StopArgs) -> CmdResult {
    let client = ctx.connect().await?;
    let grace = Duration::from_secs(args.time);
    super::remove_each(ctx, args.ids, |id| {
        let client = client.clone();
        async move {
            stop_one(&client, &id, grace).await?;
            Ok(id)
        }
    })
    .await
}

/// `berthctl kill`.
pub async fn kill(ctx: &Ctx, args: KillArgs) -> CmdResult {
    let sig = signal_number(&args.signal)?;
    let client = ctx.connect().await?;
    super::remove_each(ctx, args.ids, |id| {
        let client = client.clone();
        async move {
            client.tasks().kill(&id, "", sig, false).await?;
            Ok(id)
        }
    })
    .await
}

/// Removes `id`: its task (killed first with `force`), its snapshot and its record.
async fn remove(client: &Client, id: &str, force: bool) -> Result<()> {
    let c = client.containers().get(id).await?;
    match client.tasks().get(id, "").await {
        Ok(p) => {
            if !matches!(p.status, TaskStatus::Stopped | TaskStatus::Created) {
                if !force {
                    return Err(Error::failed_precondition(format!(
                        "container {id:?} is {}: stop it first, or use rm -f",
                        status_word(p.status)
                    )));
                }
                if matches!(p.status, TaskStatus::Paused | TaskStatus::Pausing) {
                    let _ = client.tasks().resume(id).await;
                }
                match client
                    .tasks()
                    .kill(id, "", libc::SIGKILL as u32, true)
                    .await
                {
                    Ok(()) => {}
                    Err(e) if e.is(ErrorKind::NotFound) => {}
                    Err(e) => return Err(e),
                }
                wait_exit(client, id, None).await?;
            }
            match client.tasks().delete(id).await {
                Ok(_) => {}
                Err(e) if e.is(ErrorKind::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        Err(e) if e.is(ErrorKind::NotFound) => {}
        Err(e) => return Err(e),
    }
    remove_snapshot_and_record(client, &c).await
}

/// `berthctl rm`.
pub async fn rm(ctx: &Ctx, args: RmArgs) -> CmdResult {
    let client = ctx.connect().await?;
    super::remove_each(ctx, args.ids, |id| {
        let client = client.clone();
        async move {
            remove(&client, &id, args.force).await?;
            Ok(id)
        }
    })
    .await
}

/// `berthctl inspect`: each container as JSON, with its spec and task.
pub async fn inspect(ctx: &Ctx, args: IdsArgs) -> CmdResult {
    let client = ctx.connect().await?;
    let mut out = Vec::new();
    let mut failed = false;
    for id in &args.ids {
        let c = match client.containers().get(id).await {
            Ok(c) => c,
            Err(e) => {
                crate::report(&e);
                failed = true;
                continue;
            }
        };
        let task = match client.tasks().get(id, "").await {
            Ok(p) => json!({
                "status": status_word(p.status),
                "pid": p.pid,
                "exitCode": p.exit_status,
                "exitedAt": output::rfc3339(p.exited_at),
                "terminal": p.io.terminal,
            }),
            Err(e) if e.is(ErrorKind::NotFound) => Value::Null,
            Err(e) => return Err(e.into()),
        };
        out.push(json!({
            "id": c.id,
            "image": c.image,
            "labels": c.labels,
            "runtime": {
                "name": c.runtime.name,
                "options": c.runtime.options.as_ref().map(|o| o.type_url.clone()),
            },
            "snapshotter": c.snapshotter,
            "snapshotKey": c.snapshot_key,
            "created": output::rfc3339(known_time(c.created_at)),
            "updated": output::rfc3339(known_time(c.updated_at)),
            "spec": spec_of(&c).unwrap_or(Value::Null),
            "task": task,
        }));
    }
    print(&output::json(&out))?;
    if failed {
        Err(Failure::Reported)
    } else {
        Ok(())
    }
}

/// One process of `top`.
#[derive(Debug, Serialize)]
pub struct TopRow {
    /// Host pid.
    pub pid: u32,
    /// Parent's host pid.
    pub ppid: u32,
    /// Real uid.
    pub uid: u32,
    /// The command line.
    pub cmd: String,
}

fn proc_row(pid: u32) -> Option<TopRow> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u32>().ok())
    };
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let mut cmd = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    if cmd.is_empty() {
        let name = status
            .lines()
            .find_map(|l| l.strip_prefix("Name:"))
            .unwrap_or_default()
            .trim();
        cmd = format!("[{name}]");
    }
    Some(TopRow {
        pid,
        ppid: field("PPid:").unwrap_or(0),
        uid: field("Uid:").unwrap_or(0),
        cmd,
    })
}

/// `berthctl top`: the container's processes (ListPids, details from this host's /proc).
pub async fn top(ctx: &Ctx, args: TopArgs) -> CmdResult {
    let client = ctx.connect().await?;
    let pids = client.tasks().pids(&args.id).await?;
    let rows: Vec<TopRow> = pids.iter().filter_map(|p| proc_row(p.pid)).collect();
    print(&output::render(ctx.format, &rows, |rows| {
        let mut t = Table::new(&["UID", "PID", "PPID", "CMD"]);
        for r in rows {
            t.row(vec![
                r.uid.to_string(),
                r.pid.to_string(),
                r.ppid.to_string(),
                r.cmd.clone(),
            ]);
        }
        t.render()
    }))
}

/// One line of `stats`.
#[derive(Debug, Serialize)]
pub struct StatsRow {
    /// The container.
    pub id: String,
    /// CPU use since the previous sample, percent of one CPU (None for the first sample).
    pub cpu_percent: Option<f64>,
    /// CPU time used, nanoseconds.
    pub cpu_total_ns: u64,
    /// Memory in use, bytes.
    pub memory_usage: u64,
    /// The memory limit, bytes.
    pub memory_limit: u64,
    /// Processes.
    pub pids: u64,
}

/// `berthctl stats`.
pub async fn stats(ctx: &Ctx, args: StatsArgs) -> CmdResult {
    let client = ctx.connect().await?;
    let filters: Vec<String> = args.ids.iter().map(|id| format!("id=={id}")).collect();
    let mut previous: std::collections::HashMap<String, (u64, Instant)> = Default::default();
    loop {
        let metrics = client.tasks().metrics(&filters).await?;
        let now = Instant::now();
        let mut rows = Vec::new();
        for m in metrics {
            let Some(data) = &m.data else { continue };
            let s = match CgroupStats::decode(data) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(id = %m.id, error = %e, "metrics not understood");
                    continue;
                }
            };
            let cpu_percent = previous.get(&m.id).and_then(|(cpu, at)| {
                let wall = now.duration_since(*at).as_nanos() as f64;
                (wall > 0.0).then(|| (s.cpu_total_ns.saturating_sub(*cpu)) as f64 / wall * 100.0)
            });
            previous.insert(m.id.clone(), (s.cpu_total_ns, now));
            rows.push(StatsRow {
                id: m.id,
                cpu_percent,
                cpu_total_ns: s.cpu_total_ns,
                memory_usage: s.memory_usage,
                memory_limit: s.memory_limit,
                pids: s.pids_current,
            });
        }
        print(&output::render(ctx.format, &rows, |rows| {
            let mut t = Table::new(&["CONTAINER ID", "CPU %", "MEM USAGE / LIMIT", "PIDS"]);
            for r in rows {
                // The kernel reports "no limit" as a page-rounded i64::MAX.
                let limit = if r.memory_limit >= 1 << 62 {
                    "unlimited".to_owned()
                } else {
                    output::human_size(r.memory_limit)
                };
                t.row(vec![
                    r.id.clone(),
                    r.cpu_percent
                        .map_or_else(|| "--".to_owned(), |p| format!("{p:.2}%")),
                    format!("{} / {limit}", output::human_size(r.memory_usage)),
                    r.pids.to_string(),
                ]);
            }
            t.render()
        }))?;
        if args.no_stream {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// `berthctl pause`.
pub async fn pause(ctx: &Ctx, args: IdsArgs) -> CmdResult {
    let client = ctx.connect().await?;
    super::remove_each(ctx, args.ids, |id| {
        let client = client.clone();
        async move {
            client.tasks().pause(&id).await?;
            Ok(id)
        }
    })
    .await
}

/// `berthctl unpause`.
pub async fn unpause(ctx: &Ctx, args: IdsArgs) -> CmdResult {
    let client = ctx.connect().await?;
    super::remove_each(ctx, args.ids, |id| {
        let client = client.clone();
        async move {
            client.tasks().resume(&id).await?;
            Ok(id)
        }
    })
    .await
}

/// `berthctl wait`: prints each container's exit code once it has exited.
pub async fn wait(ctx: &Ctx, args: IdsArgs) -> CmdResult {
    let client = ctx.connect().await?;
    let mut failed = false;
    let mut codes = Vec::new();
    for id in &args.ids {
        match client.tasks().wait(id, "").await {
            Ok(exit) => {
                if ctx.format == Format::Table {
                    print(&format!("{}\n", exit.exit_status))?;
                }
                codes.push(json!({"id": id, "exitCode": exit.exit_status}));
            }
            Err(e) => {
                crate::report(&e);
                failed = true;
            }
        }
    }
    if ctx.format == Format::Json {
        print(&output::json(&codes))?;
    }
    if failed {
        Err(Failure::Reported)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name_and_number() {
        assert_eq!(signal_number("KILL").unwrap(), 9);
        assert_eq!(signal_number("sigterm").unwrap(), 15);
        assert_eq!(signal_number("SIGUSR1").unwrap(), 10);
        assert_eq!(signal_number("2").unwrap(), 2);
        assert!(signal_number("NOPE").is_err());
        assert!(signal_number("0").is_err());
    }

    #[test]
    fn environment_from_flags_and_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("env");
        std::fs::write(&file, "# comment\n\nA=1\nB=two words\n").unwrap();
        let env = environment(&["C=3".into(), "A=4".into()], &[file]).unwrap();
        assert_eq!(env, ["A=1", "B=two words", "C=3", "A=4"]);
        // A bare name takes this process's value; unset ones are dropped.
        let env = environment(&["BERTHCTL_SURELY_UNSET_VAR".into()], &[]).unwrap();
        assert!(env.is_empty());
    }

    #[test]
    fn ids_are_twelve_hex_digits() {
        let id = random_id();
        assert_eq!(id.len(), 12);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
