//! berthd: the composition root. It reads the config, locks the root, opens the stores, and
//! serves every gRPC service on one unix socket until SIGTERM/SIGINT.
//!
//! Tests run the daemon in-process through [`Daemon::open`] and [`serve`], or as a process
//! through the binary.

mod autoremove;
pub mod config;
mod plugins;

use std::fs::File;
use std::future::Future;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use berth_core::{Error, Result};
use berth_grpc::{ServerInfo, Services};
use nix::fcntl::{Flock, FlockArg};
use tokio::net::UnixListener;

pub use config::Config;

/// The opened daemon: stores wired to services, with the root locked for as long as it lives.
pub struct Daemon {
    services: Services,
    tasks: Arc<berth_tasks::LocalTasks>,
    _lock: Flock<File>,
}

impl Daemon {
    /// Locks `config.root` and opens every store under it.
    pub fn open(config: &Config) -> Result<Self> {
        mkdir(&config.root, 0o711)?;
        mkdir(&config.state, 0o711)?;
        let lock = lock_root(&config.root)?;
        let blobs = berth_content::LocalStore::open(config.root.join("content"))?;
        let metadata = berth_metadata::Metadata::open(
            &config.root.join("metadata.redb"),
            Arc::new(blobs),
            berth_metadata::GcOptions {
                debounce: Duration::from_millis(config.gc.debounce_ms),
            },
        )?;
        let overlay = berth_snapshot_overlay::OverlaySnapshotter::open(
            config.root.join(plugins::OVERLAYFS_ROOT),
        )?;
        metadata.add_snapshotter("overlayfs", Arc::new(overlay))?;
        let native =
            berth_snapshot_native::NativeSnapshotter::open(config.root.join(plugins::NATIVE_ROOT))?;
        metadata.add_snapshotter("native", Arc::new(native))?;
        // Every change to the metadata stores is announced on the exchange, whichever service
        // makes it; GC and the differ use the store directly, as containerd's publish nothing.
        let exchange = Arc::new(berth_events::Exchange::new());
        let published = Arc::new(berth_events::Publishing::new(
            metadata.clone(),
            exchange.clone(),
        ));
        let server = Arc::new(ServerInfo {
            uuid: server_uuid(&config.root)?,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            revision: env!("BERTH_REVISION").to_owned(),
            plugins: plugins::table(config),
        });
        let tmpmounts = config.state.join("tmpmounts");
        mkdir(&tmpmounts, 0o700)?;
        let differ =
            Arc::new(berth_diff::WalkingDiff::new(metadata.clone()).with_temp_dir(tmpmounts));
        let transfer = Arc::new(berth_distribution::RegistryTransfer::new(
            published.clone(),
            published.clone(),
            metadata.clone(),
            published.clone(),
            differ.clone(),
            berth_distribution::TransferOptions {
                insecure_registries: config.registry.insecure.clone(),
                ..Default::default()
            },
        )?);
        let tasks = berth_tasks::LocalTasks::new(
            config.state.join("tasks"),
            Some(config.root.join("logs")),
            shim_binary(),
            published.clone(),
            exchange.clone(),
        )?;
        // Shims write the logs (LocalTasks hands them `<root>/logs`); deleting a container
        // deletes its log.
        let logs = Arc::new(berth_logs::JsonFileLogs::new(
            config.root.join("logs"),
            published.clone(),
            Arc::new(berth_logs::TaskLiveness(tasks.clone())),
        ));
        let containers = Arc::new(berth_logs::RemovesLogs::new(
            published.clone(),
            logs.clone(),
        ));
        let services = Services {
            applier: differ.clone(),
            comparer: differ,
            content: published.clone(),
            namespaces: published.clone(),
            leases: metadata.clone(),
            snapshots: published.clone(),
            images: published.clone(),
            containers,
            events: exchange,
            gc: metadata,
            server,
            transfer: Some(transfer),
            tasks: Some(tasks.clone()),
            logs: Some(logs),
        };
        Ok(Self {
            services,
            tasks,
            _lock: lock,
        })
    }

    /// Starts removing `io.berth.auto-remove` containers as they exit, then reconnects to the
    /// shims a previous berthd left running (call once, before serving; needs a tokio runtime).
    pub async fn recover_tasks(&self) -> Result<()> {
        let s = &self.services;
        autoremove::AutoRemove {
            tasks: self.tasks.clone(),
            containers: s.containers.clone(),
            snapshots: s.snapshots.clone(),
        }
        .spawn(s.events.as_ref())?;
        self.tasks.recover().await
    }

    /// The services this daemon serves.
    pub fn services(&self) -> &Services {
        &self.services
    }
}

/// `berth-shim` next to this executable (an install or a cargo target dir), else from PATH.
fn shim_binary() -> std::path::PathBuf {
    std::env::current_exe()
        .ok()
        .map(|exe| exe.with_file_name("berth-shim"))
        .filter(|p| p.exists())
        .unwrap_or_else(|| std::path::PathBuf::from("berth-shim"))
}

/// Serves `services` on `listener` until `shutdown` resolves, then lets in-flight requests finish.
pub async fn serve(
    listener: UnixListener,
    services: &Services,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    tonic::transport::Server::builder()
        .trace_fn(berth_grpc::layers::request_span)
        .layer(berth_grpc::layers::CatchPanicLayer)
        .add_routes(berth_grpc::routes(services))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| Error::internal("serving gRPC").with_source(e))
}

/// Binds the API socket at `path` with `mode`, replacing a stale socket file but refusing one a
/// live server still answers on.
pub fn bind(path: &Path, mode: u32) -> Result<UnixListener> {
    if let Some(dir) = path.parent() {
        mkdir(dir, 0o711)?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(Error::failed_precondition(format!(
                "address {} is in use by a running server",
                path.display()
            )));
        }
        std::fs::remove_file(path)
            .map_err(|e| Error::io(format!("removing stale socket {}", path.display()), e))?;
    }
    // Bind under a temporary name and rename into place once the mode is set, so no client can
    // ever connect through a socket with the wrong permissions.
    let staging = path.with_file_name(format!(
        ".{}.{}",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&staging);
    let listener = UnixListener::bind(&staging)
        .map_err(|e| Error::io(format!("binding {}", path.display()), e))?;
    std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(mode))
        .and_then(|()| std::fs::rename(&staging, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&staging);
            Error::io(format!("setting mode of {}", path.display()), e)
        })?;
    Ok(listener)
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(config: Config) -> Result<()> {
    let daemon = Daemon::open(&config)?;
    daemon.recover_tasks().await?;
    let listener = bind(&config.grpc.address, config.grpc.mode)?;
    tracing::info!(
        address = %config.grpc.address.display(),
        root = %config.root.display(),
        state = %config.state.display(),
        "berthd serving"
    );
    let result = serve(listener, daemon.services(), shutdown_signal()).await;
    let _ = std::fs::remove_file(&config.grpc.address);
    tracing::info!("berthd stopped");
    result
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop berthd with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: draining requests"),
        _ = int.recv() => tracing::info!("SIGINT: draining requests"),
    }
}

fn mkdir(path: &Path, mode: u32) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .map_err(|e| Error::io(format!("creating directory {}", path.display()), e))
}

/// Takes an exclusive, non-blocking lock on `<root>/berthd.lock` and records our pid in it, so a
/// second daemon on the same root fails fast and says who holds it.
fn lock_root(root: &Path) -> Result<Flock<File>> {
    let path = root.join("berthd.lock");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => lock,
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            let holder = holder.trim();
            return Err(Error::failed_precondition(format!(
                "root {} is in use by another berthd{}",
                root.display(),
                if holder.is_empty() {
                    String::new()
                } else {
                    format!(" (pid {holder})")
                }
            )));
        }
        Err((_, errno)) => {
            return Err(Error::io(
                format!("locking {}", path.display()),
                std::io::Error::from(errno),
            ));
        }
    };
    lock.set_len(0)
        .and_then(|()| write!(lock, "{}", std::process::id()))
        .map_err(|e| Error::io(format!("writing pid to {}", path.display()), e))?;
    Ok(lock)
}

/// The server's UUID, created on first start and kept in the root.
fn server_uuid(root: &Path) -> Result<String> {
    let path: PathBuf = root.join("uuid");
    match std::fs::read_to_string(&path) {
        Ok(s) if uuid::Uuid::parse_str(s.trim()).is_ok() => Ok(s.trim().to_owned()),
        Ok(_) | Err(_) => {
            let id = uuid::Uuid::new_v4().to_string();
            let tmp = root.join("uuid.tmp");
            std::fs::write(&tmp, &id)
                .and_then(|()| std::fs::rename(&tmp, &path))
                .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
            Ok(id)
        }
    }
}
