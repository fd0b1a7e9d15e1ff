//! berth-tasks: the daemon's side of tasks.
//!
//! Each task lives in `<state>/tasks/<namespace>/<id>/`, which is also the OCI bundle: the
//! container's spec is written there as `config.json`, the rootfs is mounted on `rootfs/` by
//! the shim, and the shim listens on `shim.sock` and records its pid in `shim.pid`. The
//! directory is the only record of a running task: on start, [`LocalTasks::recover`] walks it,
//! reconnects to every live shim and cleans up after dead ones, so tasks survive a `kill -9` of
//! berthd.

mod bundle;
mod cgroup_warm;
mod client;
mod stdio;

pub use cgroup_warm::prime as warm_cgroups;

use std::collections::HashMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use berth_core::containers::ContainerStore;
use berth_core::events::EventPublisher;
use berth_core::tasks::{
    CreateTask, ExitInfo, ProcessInfo, ProcessState, TaskIo, TaskManager, TaskOp, TaskStatus,
};
use berth_core::{AnyValue, BoxFuture, Error, ErrorKind, Namespace, RequestContext, Result};
use berth_proto::containerd::events as ev;
use berth_shim_api as api;
use prost::Message;

pub use bundle::{
    DEFAULT_LOG_MAX_SIZE, ETC_FILES_LABEL, LOG_JSON_FILE, LOG_LABEL, LOG_MAX_SIZE_LABEL,
    write_etc_files,
};
pub use client::ShimClient;

/// Runtime names that run Berth's shim (ctr's default is the first).
pub const RUNTIMES: [&str; 3] = [
    "io.containerd.runc.v2",
    "io.containerd.runc.v1",
    "io.berth.v1",
];

/// containerd's runc runtime options; only the binary name matters here.
#[derive(Clone, PartialEq, Message)]
struct RuncOptions {
    #[prost(string, tag = "6")]
    binary_name: String,
}

struct Task {
    dir: PathBuf,
    client: ShimClient,
    /// Held while exits are taken from the shim and published, so a `/tasks/exit` is out
    /// before a `/tasks/delete` that follows it.
    exits: tokio::sync::Mutex<()>,
    /// Re-adopted after a restart, and the exits it kept have not been taken yet.
    recovered: std::sync::atomic::AtomicBool,
}

impl Task {
    fn new(dir: PathBuf, client: ShimClient, recovered: bool) -> Task {
        Task {
            dir,
            client,
            exits: tokio::sync::Mutex::new(()),
            recovered: std::sync::atomic::AtomicBool::new(recovered),
        }
    }
}

/// How long after a restart berthd publishes the exits its shims kept while it was down, for
/// tasks no request has touched by then: long enough for clients to reconnect and subscribe.
const RECOVERED_EXITS_DELAY: Duration = Duration::from_secs(5);

/// The task manager: one shim per task.
pub struct LocalTasks {
    /// Itself, for shim event callbacks that must not keep the manager alive.
    me: std::sync::Weak<LocalTasks>,
    root: PathBuf,
    /// Where shims' built-in runtime caches compiled seccomp filters: `<state>/seccomp-cache`,
    /// beside `root` (not in it, where every directory is a namespace).
    seccomp_cache: PathBuf,
    /// Where containers that ask for a log (`io.berth.log`) have it: `<logs>/<ns>/<id>/`.
    logs_dir: Option<PathBuf>,
    shim_binary: PathBuf,
    /// berth-runc, which cleans up the built-in runtime's containers after a dead shim.
    runc_binary: PathBuf,
    containers: Arc<dyn ContainerStore>,
    events: Arc<dyn EventPublisher>,
    tasks: Mutex<HashMap<(String, String), Arc<Task>>>,
}

fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    prost_types::Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

fn from_ns(ns: i64) -> Option<SystemTime> {
    (ns > 0).then(|| SystemTime::UNIX_EPOCH + Duration::from_nanos(ns as u64))
}

fn any<M: Message + prost::Name>(m: &M) -> AnyValue {
    AnyValue::new(M::full_name(), m.encode_to_vec())
}

fn stdio(io: &TaskIo) -> api::Stdio {
    api::Stdio {
        stdin: io.stdin.clone(),
        stdout: io.stdout.clone(),
        stderr: io.stderr.clone(),
        terminal: io.terminal,
        log_path: String::new(),
        log_max_size: 0,
    }
}

/// `<state>/seccomp-cache` for tasks under `<state>/tasks`.
fn seccomp_cache_dir(root: &Path) -> PathBuf {
    root.parent().unwrap_or(root).join("seccomp-cache")
}

impl LocalTasks {
    /// Tasks under `root` (`<state>/tasks`), run by the shim at `shim_binary`; container logs
    /// under `logs_dir` (none are kept without one).
    pub fn new(
        root: PathBuf,
        logs_dir: Option<PathBuf>,
        shim_binary: PathBuf,
        containers: Arc<dyn ContainerStore>,
        events: Arc<dyn EventPublisher>,
    ) -> Result<Arc<LocalTasks>> {
        std::fs::create_dir_all(&root)
            .map_err(|e| Error::io(format!("create {}", root.display()), e))?;
        // berth-runc is installed (or built) next to the shim; else it is looked up in PATH.
        let runc_binary = Some(shim_binary.with_file_name("berth-runc"))
            .filter(|p| p.is_absolute() && p.exists())
            .unwrap_or_else(|| PathBuf::from("berth-runc"));
        Ok(Arc::new_cyclic(|me| LocalTasks {
            me: me.clone(),
            seccomp_cache: seccomp_cache_dir(&root),
            root,
            logs_dir,
            shim_binary,
            runc_binary,
            containers,
            events,
            tasks: Mutex::new(HashMap::new()),
        }))
    }

    /// Removes a deleted task's directory without keeping the request waiting: it is renamed
    /// into `<root>/.deleted` at once (the id is free again for a new task) and deleted on a
    /// blocking thread. What a crash leaves there goes at the next [`LocalTasks::recover`].
    fn discard_dir(&self, dir: &Path) {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let deleted = self.root.join(DELETED_DIR);
        let aside = deleted.join(format!(
            "{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let moved = std::fs::create_dir_all(&deleted).and_then(|()| std::fs::rename(dir, &aside));
        let doomed = match moved {
            Ok(()) => aside,
            Err(e) => {
                tracing::debug!(error = %e, "set {} aside; deleting it in place", dir.display());
                dir.to_path_buf()
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(move || remove_aside(&doomed))),
            Err(_) => remove_aside(&doomed),
        }
    }

    fn key(ctx: &RequestContext, id: &str) -> (String, String) {
        (ctx.namespace.as_str().to_owned(), id.to_owned())
    }

    fn task(&self, ctx: &RequestContext, id: &str) -> Result<Arc<Task>> {
        self.tasks
            .lock()
            .map_err(|_| Error::internal("task table poisoned"))?
            .get(&Self::key(ctx, id))
            .cloned()
            .ok_or_else(|| Error::not_found(format!("task {id:?} not found")))
    }

    fn publish(&self, ns: &Namespace, topic: &str, event: AnyValue) {
        if let Err(e) = self.events.publish(ns, topic, event) {
            tracing::warn!(topic, "publish: {e}");
        }
    }

    fn lookup(&self, ns: &str, id: &str) -> Option<Arc<Task>> {
        self.tasks
            .lock()
            .ok()?
            .get(&(ns.to_owned(), id.to_owned()))
            .cloned()
    }

    /// Takes the exits the shim has not handed out yet and publishes them as `/tasks/exit`:
    /// the shim hands each exit out once, so each is published once, also when it happened
    /// while berthd was down (and not again after a second restart).
    async fn take_exits(&self, ns: &Namespace, id: &str, task: &Task) {
        let _held = task.exits.lock().await;
        task.recovered
            .store(false, std::sync::atomic::Ordering::SeqCst);
        match task
            .client
            .call(api::request::Body::TakeExits(api::Empty {}))
            .await
        {
            Ok(Some(api::response::Body::Exits(e))) => self.publish_exits(ns, id, e.exits),
            Ok(_) => tracing::warn!(id, "shim: unexpected answer to TakeExits"),
            Err(e) => tracing::warn!(id, "take exits: {e}"),
        }
    }

    /// Deletes process `exec_id` ("" for the task) in the shim and publishes the exits its
    /// answer hands over, before the caller publishes the delete: under the same lock as
    /// [`Self::take_exits`], so an exit taken by an event's handler is out first too.
    async fn delete_and_take_exits(
        &self,
        ns: &Namespace,
        id: &str,
        task: &Task,
        exec_id: &str,
    ) -> Result<ExitInfo> {
        let _held = task.exits.lock().await;
        let body = task
            .client
            .call(api::request::Body::Delete(api::ProcessRef {
                exec_id: exec_id.to_owned(),
            }))
            .await?;
        let Some(api::response::Body::Exit(e)) = body else {
            return Err(Error::internal("shim: unexpected answer to Delete"));
        };
        task.recovered
            .store(false, std::sync::atomic::Ordering::SeqCst);
        self.publish_exits(ns, id, e.exits);
        Ok(ExitInfo {
            pid: e.pid,
            exit_status: e.exit_status,
            exited_at: from_ns(e.exited_at_ns),
        })
    }

    /// Publishes exits handed over by the shim as `/tasks/exit`.
    fn publish_exits(&self, ns: &Namespace, id: &str, exits: Vec<api::ExitEvent>) {
        for x in exits {
            let exit = ev::TaskExit {
                container_id: id.to_owned(),
                id: if x.exec_id.is_empty() {
                    id.to_owned()
                } else {
                    x.exec_id.clone()
                },
                pid: x.pid,
                exit_status: x.exit_status,
                exited_at: from_ns(x.exited_at_ns).map(timestamp),
            };
            self.publish(ns, "/tasks/exit", any(&exit));
        }
    }

    /// Publishes the exits a re-adopted task kept while berthd was down, the first time the
    /// task is looked at.
    async fn take_recovered_exits(&self, ns: &Namespace, id: &str, task: &Task) {
        if task.recovered.load(std::sync::atomic::Ordering::SeqCst) {
            self.take_exits(ns, id, task).await;
        }
    }

    /// What to do with a shim's pushed events: an exit makes berthd take the shim's exits and
    /// publish them; an OOM becomes a task event. Every exit sets `exited` first, so a task
    /// being created (not in the table yet, where the exit cannot be taken) finds out it must
    /// take its exits once it is put there.
    fn on_event(
        &self,
        ns: Namespace,
        id: String,
        exited: Arc<AtomicBool>,
    ) -> impl Fn(api::Event) + Send + 'static {
        let me = self.me.clone();
        move |e: api::Event| {
            let Some(me) = me.upgrade() else {
                return;
            };
            match e.kind {
                Some(api::event::Kind::Exit(_)) => {
                    exited.store(true, Ordering::SeqCst);
                    if let Some(task) = me.lookup(ns.as_str(), &id) {
                        let (ns, id) = (ns.clone(), id.clone());
                        tokio::spawn(async move { me.take_exits(&ns, &id, &task).await });
                    }
                }
                Some(api::event::Kind::Oom(_)) => {
                    let oom = ev::TaskOom {
                        container_id: id.clone(),
                    };
                    me.publish(&ns, "/tasks/oom", any(&oom));
                }
                None => {}
            }
        }
    }

    /// Starts a shim for the task in `dir`, connected from the start: its stdout is one end of
    /// a socket pair, the other end is returned. A request can be written at once; the shim
    /// reads it when it is up (no wait for its socket, no connect). Blocks until the shim has
    /// exec'd (the spawn waits for that), so callers run it on a blocking thread.
    fn spawn_shim(
        shim_binary: &Path,
        seccomp_cache: &Path,
        ns: &str,
        id: &str,
        dir: &Path,
    ) -> Result<(tokio::process::Child, std::os::unix::net::UnixStream)> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("shim.log"))
            .map_err(|e| Error::io("open shim.log", e))?;
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()
            .map_err(|e| Error::io("make the shim's socket pair", e))?;
        let child = tokio::process::Command::new(shim_binary)
            .args(["--id", id, "--namespace", ns, "--bundle"])
            .arg(dir)
            .arg("--seccomp-cache")
            .arg(seccomp_cache)
            .arg("--connected")
            .current_dir(dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::from(std::os::fd::OwnedFd::from(
                theirs,
            )))
            .stderr(std::process::Stdio::from(log))
            .spawn()
            .map_err(|e| Error::io(format!("start {}", shim_binary.display()), e))?;
        Ok((child, ours))
    }

    /// Finds the shims left by a previous berthd: reconnects to live ones, cleans up dead ones
    /// and shims whose container is gone.
    pub async fn recover(&self) -> Result<()> {
        // Directories a previous berthd set aside and had no time to delete.
        let deleted = self.root.join(DELETED_DIR);
        if let Ok(entries) = std::fs::read_dir(&deleted) {
            let aside: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            tokio::task::spawn_blocking(move || aside.iter().for_each(|p| remove_aside(p)));
        }
        let Ok(namespaces) = std::fs::read_dir(&self.root) else {
            return Ok(());
        };
        for ns_entry in namespaces.flatten() {
            let ns_name = ns_entry.file_name().to_string_lossy().into_owned();
            let Ok(ns) = Namespace::new(&ns_name) else {
                continue;
            };
            let Ok(ids) = std::fs::read_dir(ns_entry.path()) else {
                continue;
            };
            for id_entry in ids.flatten() {
                let id = id_entry.file_name().to_string_lossy().into_owned();
                let dir = id_entry.path();
                let ctx = RequestContext::new(ns.clone());
                let client = ShimClient::connect(
                    &dir.join("shim.sock"),
                    self.on_event(ns.clone(), id.clone(), Arc::default()),
                )
                .await;
                match client {
                    Ok(client) => {
                        if self.containers.get(&ctx, &id).is_err() {
                            tracing::info!(id, "container gone: shutting its shim down");
                            let _ = client
                                .call(api::request::Body::Shutdown(api::ShutdownRequest {
                                    now: true,
                                }))
                                .await;
                            let _ = std::fs::remove_dir_all(&dir);
                            continue;
                        }
                        tracing::info!(namespace = %ns_name, id, "reconnected to shim");
                        if let Ok(mut t) = self.tasks.lock() {
                            t.insert(
                                (ns_name.clone(), id.clone()),
                                Arc::new(Task::new(dir, client, true)),
                            );
                        }
                    }
                    Err(_) => {
                        tracing::warn!(id, "shim is gone: cleaning up its task");
                        self.cleanup_dead(&id, &dir).await;
                        // The real exit died with the shim. As containerd does after a dead
                        // shim, the task is reported exited with status 255 now, so whoever
                        // waits on the container (auto-remove, event watchers) hears of it.
                        if self.containers.get(&ctx, &id).is_ok() {
                            let exit = ev::TaskExit {
                                container_id: id.clone(),
                                id: id.clone(),
                                pid: 0,
                                exit_status: 255,
                                exited_at: Some(timestamp(SystemTime::now())),
                            };
                            self.publish(&ns, "/tasks/exit", any(&exit));
                        }
                    }
                }
            }
        }
        // Exits kept while berthd was down are published once clients had time to come back
        // and subscribe (or sooner, when a request looks at the task).
        let me = self.me.clone();
        tokio::spawn(async move {
            tokio::time::sleep(RECOVERED_EXITS_DELAY).await;
            let Some(me) = me.upgrade() else {
                return;
            };
            let recovered: Vec<((String, String), Arc<Task>)> = match me.tasks.lock() {
                Ok(t) => t
                    .iter()
                    .filter(|(_, t)| t.recovered.load(std::sync::atomic::Ordering::SeqCst))
                    .map(|(k, t)| (k.clone(), t.clone()))
                    .collect(),
                Err(_) => return,
            };
            for ((ns, id), task) in recovered {
                if let Ok(ns) = Namespace::new(&ns) {
                    me.take_recovered_exits(&ns, &id, &task).await;
                }
            }
        });
        Ok(())
    }

    async fn state(
        &self,
        ns: &Namespace,
        task: &Task,
        id: &str,
        exec_id: &str,
    ) -> Result<ProcessState> {
        self.take_recovered_exits(ns, id, task).await;
        match task
            .client
            .call(api::request::Body::State(api::ProcessRef {
                exec_id: exec_id.to_owned(),
            }))
            .await?
        {
            Some(api::response::Body::State(s)) => {
                let io = s.stdio.unwrap_or_default();
                Ok(ProcessState {
                    container_id: id.to_owned(),
                    exec_id: exec_id.to_owned(),
                    pid: s.pid,
                    status: TaskStatus::from_i32(s.status),
                    io: TaskIo {
                        stdin: io.stdin,
                        stdout: io.stdout,
                        stderr: io.stderr,
                        terminal: io.terminal,
                    },
                    exit_status: s.exit_status,
                    exited_at: from_ns(s.exited_at_ns),
                })
            }
            _ => Err(Error::internal("shim: unexpected answer to State")),
        }
    }

    /// The task, once its process `exec_id` is in a status that allows `op`.
    async fn checked(
        &self,
        ctx: &RequestContext,
        id: &str,
        exec_id: &str,
        op: TaskOp,
    ) -> Result<Arc<Task>> {
        let task = self.task(ctx, id)?;
        let st = self.state(&ctx.namespace, &task, id, exec_id).await?;
        st.status.check(op, &format!("task {id:?}"))?;
        Ok(task)
    }

    async fn call_unit(
        &self,
        ctx: &RequestContext,
        id: &str,
        body: api::request::Body,
    ) -> Result<()> {
        self.task(ctx, id)?.client.call(body).await.map(drop)
    }

    async fn do_create(&self, ctx: &RequestContext, req: CreateTask) -> Result<u32> {
        let id = req.container_id.clone();
        let container = self.containers.get(ctx, &id)?;
        if !RUNTIMES.contains(&container.runtime.name.as_str()) {
            return Err(Error::not_implemented(format!(
                "runtime {:?} is not supported (use one of {RUNTIMES:?})",
                container.runtime.name
            )));
        }
        let spec = container
            .spec
            .as_ref()
            .ok_or_else(|| Error::invalid_argument(format!("container {id:?} has no spec")))?;
        // Options on the task win over the container's runtime options, as in containerd.
        let binary = [req.options.as_ref(), container.runtime.options.as_ref()]
            .into_iter()
            .flatten()
            .find(|o| o.type_url.ends_with("containerd.runc.v1.Options"))
            .and_then(|o| RuncOptions::decode(o.value.as_slice()).ok())
            .map(|o| o.binary_name)
            .unwrap_or_default();
        let key = Self::key(ctx, &id);
        if self
            .tasks
            .lock()
            .map_err(|_| Error::internal("task table poisoned"))?
            .contains_key(&key)
        {
            return Err(Error::already_exists(format!("task {id:?} already exists")));
        }
        let dir = self.root.join(ctx.namespace.as_str()).join(&id);
        if dir.exists() {
            return Err(Error::already_exists(format!(
                "task {id:?} already exists ({})",
                dir.display()
            )));
        }
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        let task = NewTask {
            ctx,
            labels: &container.labels,
            dir: &dir,
            spec: &spec.value,
            req: &req,
            binary: &binary,
        };
        let res = self.create_in(task).await;
        if res.is_err() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        res
    }

    async fn create_in(&self, task: NewTask<'_>) -> Result<u32> {
        let NewTask {
            ctx,
            dir,
            req,
            binary,
            ..
        } = task;
        let id = req.container_id.as_str();
        let stdin_held = stdio::hold_fifo_reader(&req.io.stdin);
        // runc and crun move the init into its cgroups in a few ms: start the kernel's wait now.
        // Not for Berth's own runtime, which needs no wait and would queue behind this one.
        if !binary.is_empty() {
            cgroup_warm::prime();
        }
        // The shim is spawned on a blocking thread (the spawn waits for its exec) while this
        // one writes the bundle, which the shim reads only once Create arrives.
        let spawning = tokio::task::spawn_blocking({
            let (binary, cache) = (self.shim_binary.clone(), self.seccomp_cache.clone());
            let (ns, id, dir) = (ctx.namespace.to_string(), id.to_owned(), dir.to_path_buf());
            move || Self::spawn_shim(&binary, &cache, &ns, &id, &dir)
        });
        let written = self.write_bundle(task);
        let (mut child, stream) = spawning
            .await
            .map_err(|e| Error::internal(format!("spawn the shim: {e}")))??;
        let exited = Arc::new(AtomicBool::new(false));
        let on_event = self.on_event(ctx.namespace.clone(), id.to_owned(), exited.clone());
        let client = ShimClient::from_std(stream, on_event)?;
        let shutdown = || async {
            let _ = client
                .call(api::request::Body::Shutdown(api::ShutdownRequest {
                    now: true,
                }))
                .await;
        };
        let (stdio, mount_points) = match written {
            Ok(w) => w,
            Err(e) => {
                shutdown().await;
                return Err(e);
            }
        };
        let rootfs: Vec<api::Mount> = req
            .rootfs
            .iter()
            .map(|m| api::Mount {
                r#type: m.kind.clone(),
                source: m.source.clone(),
                options: m.options.clone(),
            })
            .collect();
        let created = client
            .call(api::request::Body::Create(api::CreateRequest {
                rootfs: rootfs.clone(),
                stdio: Some(stdio),
                runtime_binary: binary.to_owned(),
                mount_points,
            }))
            .await;
        let pid = match created {
            Ok(Some(api::response::Body::Pid(p))) => p.pid,
            Ok(_) => return Err(Error::internal("shim: unexpected answer to Create")),
            Err(e) => {
                // A shim that never came up closed the connection as it exited (its exit
                // status may follow a moment later): its log says why.
                if e.kind() == ErrorKind::Unavailable
                    && let Ok(Ok(status)) =
                        tokio::time::timeout(Duration::from_secs(1), child.wait()).await
                {
                    return Err(Error::internal(format!(
                        "shim for {id:?} did not start ({status}): {}",
                        std::fs::read_to_string(dir.join("shim.log")).unwrap_or_default()
                    )));
                }
                shutdown().await;
                return Err(e);
            }
        };
        // The shim has its own reader of stdin now.
        drop(stdin_held);
        // The shim lives on by itself; tokio reaps it if it ever exits while berthd runs.
        drop(child);
        let task = Arc::new(Task::new(dir.to_path_buf(), client, false));
        self.tasks
            .lock()
            .map_err(|_| Error::internal("task table poisoned"))?
            .insert(Self::key(ctx, id), task.clone());
        let event = ev::TaskCreate {
            container_id: id.to_owned(),
            bundle: dir.to_string_lossy().into_owned(),
            rootfs: req
                .rootfs
                .iter()
                .map(|m| berth_proto::containerd::types::Mount {
                    r#type: m.kind.clone(),
                    source: m.source.clone(),
                    target: m.target.clone(),
                    options: m.options.clone(),
                })
                .collect(),
            io: Some(ev::TaskIo {
                stdin: req.io.stdin.clone(),
                stdout: req.io.stdout.clone(),
                stderr: req.io.stderr.clone(),
                terminal: req.io.terminal,
            }),
            checkpoint: String::new(),
            pid,
        };
        self.publish(&ctx.namespace, "/tasks/create", any(&event));
        // An init that died before the task was in the table had its exit event dropped: take
        // it now. (An exit after the insertion is taken by the event itself; one racing with
        // it may be asked for twice, and the second ask gets nothing.)
        if exited.load(Ordering::SeqCst) {
            self.take_exits(&ctx.namespace, id, &task).await;
        }
        Ok(pid)
    }

    /// Writes the bundle's files (spec, runtime record, /etc files) and says where the
    /// task's stdio and log go and which mount points the shim can make early.
    fn write_bundle(&self, task: NewTask<'_>) -> Result<(api::Stdio, Vec<String>)> {
        let NewTask {
            ctx,
            labels,
            dir,
            spec,
            req,
            binary,
        } = task;
        let id = req.container_id.as_str();
        std::fs::write(dir.join("config.json"), spec)
            .map_err(|e| Error::io("write config.json", e))?;
        // The directories the shim would otherwise make first thing on Create (the rootfs's
        // mount point, the built-in runtime's state root, 0700 as the runtime makes it): made
        // here while the shim is still starting, the shim finds them and moves on.
        if !req.rootfs.is_empty() {
            std::fs::create_dir(dir.join("rootfs"))
                .map_err(|e| Error::io("create the rootfs directory", e))?;
        }
        if binary.is_empty() {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(dir.join("runtime"))
                .map_err(|e| Error::io("create the runtime's state directory", e))?;
        }
        // Which runtime holds the container, for the clean-up after a dead shim; no file
        // means the built-in one.
        if !binary.is_empty() {
            std::fs::write(dir.join(RUNTIME_BINARY_FILE), binary)
                .map_err(|e| Error::io(format!("write {RUNTIME_BINARY_FILE}"), e))?;
        }
        // A spec that is not JSON gets no help here; the runtime reports what is wrong with it.
        let parsed = serde_json::from_slice::<serde_json::Value>(spec);
        if bundle::wants_etc_files(labels) {
            let parsed = parsed
                .as_ref()
                .map_err(|e| Error::invalid_argument(format!("the container's spec: {e}")))?;
            bundle::write_etc_files(dir, parsed, Path::new("/etc"))?;
        }
        let mount_points = parsed
            .as_ref()
            .map(bundle::mount_points)
            .unwrap_or_default();
        let mut stdio = stdio(&req.io);
        if let Some((path, max)) =
            bundle::log_target(labels, self.logs_dir.as_deref(), ctx.namespace.as_str(), id)?
        {
            stdio.log_path = path.to_string_lossy().into_owned();
            stdio.log_max_size = max;
        }
        Ok((stdio, mount_points))
    }

    fn exit_of(body: Option<api::response::Body>) -> Result<ExitInfo> {
        match body {
            Some(api::response::Body::Exit(e)) => Ok(ExitInfo {
                pid: e.pid,
                exit_status: e.exit_status,
                exited_at: from_ns(e.exited_at_ns),
            }),
            _ => Err(Error::internal("shim: unexpected answer")),
        }
    }
}

impl LocalTasks {
    /// A task whose shim died with its directory left behind. Its container may live on (the
    /// shim's death kills nothing; a container without its own pid namespace keeps its
    /// processes even when its init dies), so it is force-deleted through its OCI runtime
    /// (berth-runc for the built-in one, which shares its state layout), which kills what is
    /// left in its cgroup and removes the cgroup; then the rootfs is unmounted and the
    /// directory removed.
    async fn cleanup_dead(&self, id: &str, dir: &Path) {
        let state = dir.join("runtime");
        if state.join(id).exists() {
            let recorded = std::fs::read_to_string(dir.join(RUNTIME_BINARY_FILE))
                .unwrap_or_default()
                .trim()
                .to_owned();
            let binary = if recorded.is_empty() {
                self.runc_binary.clone()
            } else {
                PathBuf::from(recorded)
            };
            let out = tokio::process::Command::new(&binary)
                .arg("--root")
                .arg(&state)
                .args(["delete", "--force", id])
                .stdin(std::process::Stdio::null())
                .output()
                .await;
            match out {
                Ok(o) if o.status.success() => {
                    tracing::info!(id, "force-deleted the container of a dead shim");
                }
                Ok(o) => tracing::warn!(
                    id,
                    "{} delete --force: {}: {}",
                    binary.display(),
                    o.status,
                    String::from_utf8_lossy(&o.stderr).trim()
                ),
                Err(e) => tracing::warn!(id, "run {} delete --force: {e}", binary.display()),
            }
        }
        cleanup_dir(dir);
    }
}

/// What one Tasks.Create works from: the request and what it resolved to.
#[derive(Clone, Copy)]
struct NewTask<'a> {
    ctx: &'a RequestContext,
    labels: &'a berth_core::labels::Labels,
    /// The task's directory (its bundle).
    dir: &'a Path,
    /// The container's spec (JSON).
    spec: &'a [u8],
    req: &'a CreateTask,
    /// The external runtime's binary; empty for the built-in one.
    binary: &'a str,
}

/// The file in a task's directory naming its external OCI runtime (absent or empty: the
/// built-in one).
const RUNTIME_BINARY_FILE: &str = "runtime-binary";

/// Where deleted tasks' directories wait for removal, under the tasks root. Not a valid
/// namespace name, so [`LocalTasks::recover`] never takes it for one.
const DELETED_DIR: &str = ".deleted";

fn remove_aside(path: &Path) {
    if let Err(e) = std::fs::remove_dir_all(path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!("remove {}: {e}", path.display());
    }
}

/// Whether the task in `dir` is run by an external OCI runtime (runc, crun) rather than Berth's.
fn runs_external_runtime(dir: &Path) -> bool {
    std::fs::read(dir.join(RUNTIME_BINARY_FILE)).is_ok_and(|b| !b.is_empty())
}

/// Unmounts a dead task's rootfs and removes its directory.
fn cleanup_dir(dir: &Path) {
    let rootfs = dir.join("rootfs");
    let _ = std::process::Command::new("umount")
        .arg("-l")
        .arg(&rootfs)
        .stderr(std::process::Stdio::null())
        .status();
    let _ = std::fs::remove_dir_all(dir);
}

impl TaskManager for LocalTasks {
    fn create<'a>(
        &'a self,
        ctx: &'a RequestContext,
        req: CreateTask,
    ) -> BoxFuture<'a, Result<u32>> {
        Box::pin(self.do_create(ctx, req))
    }

    fn start<'a>(
        &'a self,
        ctx: &'a RequestContext,
        id: &'a str,
        exec_id: &'a str,
    ) -> BoxFuture<'a, Result<u32>> {
        Box::pin(async move {
            let task = self.checked(ctx, id, exec_id, TaskOp::Start).await?;
            let pid = match task
                .client
                .call(api::request::Body::Start(api::ProcessRef {
                    exec_id: exec_id.to_owned(),
                }))
                .await?
            {
                Some(api::response::Body::Pid(p)) => p.pid,
                _ => return Err(Error::internal("shim: unexpected answer to Start")),
            };
            if exec_id.is_empty() {
                let e = ev::TaskStart {
                    container_id: id.to_owned(),
                    pid,
                };
                self.publish(&ctx.namespace, "/tasks/start", any(&e));
            } else {
                let e = ev::TaskExecStarted {
                    container_id: id.to_owned(),
                    exec_id: exec_id.to_owned(),
                    pid,
                };
                self.publish(&ctx.namespace, "/tasks/exec-started", any(&e));
            }
            Ok(pid)
        })
    }

    fn delete<'a>(
        &'a self,
        ctx: &'a RequestContext,
        id: &'a str,
    ) -> BoxFuture<'a, Result<ExitInfo>> {
        Box::pin(async move {
            // The shim checks the status itself (as TaskOp::Delete would), so no State first.
            let task = self.task(ctx, id)?;
            let exit = self
                .delete_and_take_exits(&ctx.namespace, id, &task, "")
                .await?;
            // Nothing is left for the shim to do but exit: the reply is not waited for.
            let shim = Arc::clone(&task);
            tokio::spawn(async move {
                let _ = shim
                    .client
                    .call(api::request::Body::Shutdown(api::ShutdownRequest {
                        now: false,
                    }))
                    .await;
            });
            if let Ok(mut t) = self.tasks.lock() {
                t.remove(&Self::key(ctx, id));
            }
            self.discard_dir(&task.dir);
            let e = ev::TaskDelete {
                container_id: id.to_owned(),
                pid: exit.pid,
                exit_status: exit.exit_status,
                exited_at: exit.exited_at.map(timestamp),
                id: id.to_owned(),
            };
            self.publish(&ctx.namespace, "/tasks/delete", any(&e));
            Ok(exit)
        })
    }

    fn delete_process<'a>(
        &'a self,
        ctx: &'a RequestContext,
        id: &'a str,
        exec_id: &'a str,
    ) -> BoxFuture<'a, Result<ExitInfo>> {
        Box::pin(async move {
            let task = self.task(ctx, id)?;
            let exit = self
                .delete_and_take_exits(&ctx.namespace, id, &task, exec_id)
                .await?;
            let e = ev::TaskDelete {
                container_id: id.to_owned(),
                pid: exit.pid,
                exit_status: exit.exit_status,
                exited_at: exit.exited_at.map(timestamp),
                id: exec_id.to_owned(),
            };
            self.publish(&ctx.namespace, "/tasks/delete", any(&e));
            Ok(exit)
        })
    }

    fn get<'a>(
        &'a self,
        ctx: &'a RequestContext,
        id: &'a str,
        exec_id: &'a str,
    ) -> BoxFuture<'a, Result<ProcessState>> {
        Box::pin(async move {
            let task = self.task(ctx, id)?;
            self.state(&ctx.namespace, &task, id, exec_id).await
        })
    }

    fn list<'a>(&'a self, ctx: &'a RequestContext) -> BoxFuture<'a, Result<Vec<ProcessState>>> {
        Box::pin(async move {
            let ns = ctx.namespace.as_str().to_owned();
            let mut mine: Vec<(String, Arc<Task>)> = self
                .tasks
                .lock()
                .map_err(|_| Error::internal("task table poisoned"))?
                .iter()
                .filter(|((n, _), _)| *n == ns)
                .map(|((_, id), t)| (id.clone(), t.clone()))
                .collect();
            mine.sort_by(|a, b| a.0.cmp(&b.0));
            let mut out = Vec::new();
            for (id, t) in mine {
                match self.state(&ctx.namespace, &t, &id, "").await {
                    Ok(s) => out.push(s),
                    Err(e) => {
                        tracing::warn!(id, "state: {e}");
                        out.push(ProcessState {
                            container_id: id,
                            exec_id: String::new(),
                            pid: 0,
                            status: TaskStatus::Unknown,
                            io: TaskIo::default(),
                            exit_status: 0,
                            exited_at: None,
                        });
                    }
                }
            }
            Ok(out)
        })
    }

    fn kill<'a>(
        &'a self,
        ctx: &'a RequestContext,
        id: &'a str,
        exec_id: &'a str,
        signal: u32,
        all: bool,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.call_unit(
            ctx,
            id,
            api::request::Body::Kill(api::KillRequest {
                exec_id: exec_id.to_owned(),
                signal,
                all,
            }),
        ))
    }

    fn exec<'a>(
        &'a self,
        ctx: &'a RequestContext,
        id: &'a str,
        exec_id: &'a str,
        spec: AnyValue,
        io: TaskIo,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let task = self.checked(ctx, id, "", TaskOp::Exec).await?;
            // The exec'd process joins the container's cgroups: see create_in.
            if runs_external_runtime(&task.dir) {
                cgroup_warm::prime();
            }
            task.client
                .call(api::request::Body::Exec(api::ExecRequest {
                    exec_id: exec_id.to_owned(),
                    spec: spec.value,
                    stdio: Some(stdio(&io)),
                }))
                .await?;
            let e = ev::TaskExecAdded {
                container_id: id.to_owned(),
                exec_id: exec_id.to_owned(),
            };
            self.publish(&ctx.namespace, "/tasks/exec-added", any(&e));
            Ok(())
        })
    }

    fn resize_pty<'a>(
        &'a self,
        ctx: &'a RequestContext,
        id: &'a str,
        exec_id: &'a str,
        width: u32,
        height: u32,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.call_unit(
            ctx,
            id,
            api::request::Body::ResizePty(api::ResizePtyRequest {
                exec_id: exec_id.to_owned(),
                width,
                height,
            }),
        ))
    }

    fn close_io<'a>(
        &'a self,
        ctx: &'a RequestContext,
        id: &'a str,
        exec_id: &'a str,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.call_unit(
            ctx,
            id,
            api::request::Body::CloseIo(api::ProcessRef {
                exec_id: exec_id.to_owned(),
            }),
        ))
    }

    fn pause<'a>(&'a self, ctx: &'a RequestContext, id: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let task = self.checked(ctx, id, "", TaskOp::Pause).await?;
            task.client
                .call(api::request::Body::Pause(api::Empty {}))
                .await?;
            let e = ev::TaskPaused {
                container_id: id.to_owned(),
            };
            self.publish(&ctx.namespace, "/tasks/paused", any(&e));
            Ok(())
        })
    }

    fn resume<'a>(&'a self, ctx: &'a RequestContext, id: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let task = self.checked(ctx, id, "", TaskOp::Resume).await?;
            task.client
                .call(api::request::Body::Resume(api::Empty {}))
                .await?;
            let e = ev::TaskResumed {
                container_id: id.to_owned(),
            };
            self.publish(&ctx.namespace, "/tasks/resumed", any(&e));
            Ok(())
        })
    }

    fn pids<'a>(
        &'a self,
        ctx: &'a RequestContext,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<ProcessInfo>>> {
        Box::pin(async move {
            match self
                .task(ctx, id)?
                .client
                .call(api::request::Body::Pids(api::Empty {}))
                .await?
            {
                Some(api::response::Body::Pids(p)) => Ok(p
                    .processes
                    .into_iter()
                    .map(|p| ProcessInfo {
                        pid: p.pid,
                        exec_id: p.exec_id,
                    })
                    .collect()),
                _ => Err(Error::internal("shim: unexpected answer to Pids")),
            }
        })
    }

    fn metrics<'a>(
        &'a self,
        ctx: &'a RequestContext,
        id: &'a str,
    ) -> BoxFuture<'a, Result<AnyValue>> {
        Box::pin(async move {
            match self
                .task(ctx, id)?
                .client
                .call(api::request::Body::Stats(api::Empty {}))
                .await?
            {
                Some(api::response::Body::Metrics(m)) => {
                    Ok(AnyValue::new(api::METRICS_TYPE_URL, m.encode_to_vec()))
                }
                _ => Err(Error::internal("shim: unexpected answer to Stats")),
            }
        })
    }

    fn update<'a>(
        &'a self,
        ctx: &'a RequestContext,
        id: &'a str,
        resources: AnyValue,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.call_unit(
            ctx,
            id,
            api::request::Body::Update(api::UpdateRequest {
                resources: resources.value,
            }),
        ))
    }

    fn wait<'a>(
        &'a self,
        ctx: &'a RequestContext,
        id: &'a str,
        exec_id: &'a str,
    ) -> BoxFuture<'a, Result<ExitInfo>> {
        Box::pin(async move {
            let task = self.task(ctx, id)?;
            self.take_recovered_exits(&ctx.namespace, id, &task).await;
            Self::exit_of(
                task.client
                    .call(api::request::Body::Wait(api::ProcessRef {
                        exec_id: exec_id.to_owned(),
                    }))
                    .await
                    .map_err(|e| {
                        if e.is(ErrorKind::Unavailable) {
                            e.context(format!("wait for task {id:?}"))
                        } else {
                            e
                        }
                    })?,
            )
        })
    }
}
