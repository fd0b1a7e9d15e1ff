//! Task helpers: a container's running processes (`containerd.services.tasks.v1.Tasks`).
//!
//! A task is created from a container record plus the rootfs mounts (the snapshot's) and the
//! stdio paths; the init process has exec id `""`, exec'd processes have their own ids.

use std::time::SystemTime;

use berth_core::mount::Mount;
use berth_core::tasks::{ExitInfo, ProcessInfo, ProcessState, TaskIo, TaskStatus};
use berth_core::{AnyValue, Error, Result};
use berth_proto::containerd::services::tasks::v1 as pb;
use berth_proto::containerd::types as ty;
use berth_proto::containerd::v1::types as v1;
use berth_proto::to_wire_any;

use crate::client::Client;
use crate::convert;
use crate::error::from_status;

impl Client {
    /// Task helpers.
    pub fn tasks(&self) -> Tasks<'_> {
        Tasks { client: self }
    }
}

/// Task helpers; see [`Client::tasks`].
#[derive(Debug, Clone, Copy)]
pub struct Tasks<'a> {
    client: &'a Client,
}

/// One container's cgroup metrics as the server sent them (`io.containerd.cgroups.v1.Metrics`
/// for Berth's shim); decode with [`CgroupStats::decode`].
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    /// The container.
    pub id: String,
    /// When the server sampled them.
    pub timestamp: Option<SystemTime>,
    /// The metrics, typed.
    pub data: Option<AnyValue>,
}

/// A process's state from the wire; `container_id` fills in what List leaves out.
pub fn process(p: v1::Process, container_id: &str) -> ProcessState {
    let exec_id = if p.id == container_id || p.id == p.container_id {
        String::new()
    } else {
        p.id
    };
    ProcessState {
        container_id: if p.container_id.is_empty() {
            container_id.to_owned()
        } else {
            p.container_id
        },
        exec_id,
        pid: p.pid,
        status: TaskStatus::from_i32(p.status),
        io: TaskIo {
            stdin: p.stdin,
            stdout: p.stdout,
            stderr: p.stderr,
            terminal: p.terminal,
        },
        exit_status: p.exit_status,
        exited_at: convert::known_time(convert::system_time(p.exited_at.as_ref())),
    }
}

fn exit(pid: u32, exit_status: u32, exited_at: Option<&prost_types::Timestamp>) -> ExitInfo {
    ExitInfo {
        pid,
        exit_status,
        exited_at: convert::known_time(convert::system_time(exited_at)),
    }
}

fn wire_mount(m: &Mount) -> ty::Mount {
    ty::Mount {
        r#type: m.kind.clone(),
        source: m.source.clone(),
        target: m.target.clone(),
        options: m.options.clone(),
    }
}

/// The type URL of an OCI process spec (JSON), as containerd's clients send with Exec.
pub const PROCESS_SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";

/// The type URL of OCI `LinuxResources` (JSON), as containerd's clients send with Update.
pub const LINUX_RESOURCES_TYPE_URL: &str =
    "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources";

impl Tasks<'_> {
    /// Creates container `id`'s task on `rootfs` with `io`; `options` (e.g.
    /// `containerd.runc.v1.Options`) override the container's runtime options. Returns the init's
    /// pid; the process waits for [`start`](Self::start).
    pub async fn create(
        &self,
        id: &str,
        rootfs: &[Mount],
        io: &TaskIo,
        options: Option<&AnyValue>,
    ) -> Result<u32> {
        let req = pb::CreateTaskRequest {
            container_id: id.to_owned(),
            rootfs: rootfs.iter().map(wire_mount).collect(),
            stdin: io.stdin.clone(),
            stdout: io.stdout.clone(),
            stderr: io.stderr.clone(),
            terminal: io.terminal,
            checkpoint: None,
            options: options.map(to_wire_any),
            runtime_path: String::new(),
        };
        self.client
            .call(|| format!("create task {id:?}"), async {
                let resp = self
                    .client
                    .rpc()
                    .tasks()
                    .create(req)
                    .await
                    .map_err(from_status)?;
                Ok(resp.into_inner().pid)
            })
            .await
    }

    /// Starts the init (`exec_id` "") or an exec'd process; returns its pid.
    pub async fn start(&self, id: &str, exec_id: &str) -> Result<u32> {
        self.client
            .call(|| format!("start task {id:?} {exec_id:?}"), async {
                let resp = self
                    .client
                    .rpc()
                    .tasks()
                    .start(pb::StartRequest {
                        container_id: id.to_owned(),
                        exec_id: exec_id.to_owned(),
                    })
                    .await
                    .map_err(from_status)?;
                Ok(resp.into_inner().pid)
            })
            .await
    }

    /// Waits until the process exits and returns how (at once when it already has).
    pub async fn wait(&self, id: &str, exec_id: &str) -> Result<ExitInfo> {
        self.client
            .call(|| format!("wait for task {id:?} {exec_id:?}"), async {
                let resp = self
                    .client
                    .rpc()
                    .tasks()
                    .wait(pb::WaitRequest {
                        container_id: id.to_owned(),
                        exec_id: exec_id.to_owned(),
                    })
                    .await
                    .map_err(from_status)?
                    .into_inner();
                Ok(exit(0, resp.exit_status, resp.exited_at.as_ref()))
            })
            .await
    }

    /// Sends `signal` to the process (with `all`: to every process of the task).
    pub async fn kill(&self, id: &str, exec_id: &str, signal: u32, all: bool) -> Result<()> {
        self.client
            .call(|| format!("signal task {id:?} {exec_id:?}"), async {
                self.client
                    .rpc()
                    .tasks()
                    .kill(pb::KillRequest {
                        container_id: id.to_owned(),
                        exec_id: exec_id.to_owned(),
                        signal,
                        all,
                    })
                    .await
                    .map_err(from_status)?;
                Ok(())
            })
            .await
    }

    /// Deletes the stopped (or never started) task: its bundle, mounts and cgroup go; returns the
    /// init's exit.
    pub async fn delete(&self, id: &str) -> Result<ExitInfo> {
        self.client
            .call(|| format!("delete task {id:?}"), async {
                let r = self
                    .client
                    .rpc()
                    .tasks()
                    .delete(pb::DeleteTaskRequest {
                        container_id: id.to_owned(),
                    })
                    .await
                    .map_err(from_status)?
                    .into_inner();
                Ok(exit(r.pid, r.exit_status, r.exited_at.as_ref()))
            })
            .await
    }

    /// Adds process `exec_id` to the running task, described by `spec` (an OCI process, JSON),
    /// with `io`; it waits for [`start`](Self::start).
    pub async fn exec(&self, id: &str, exec_id: &str, spec: &[u8], io: &TaskIo) -> Result<()> {
        let req = pb::ExecProcessRequest {
            container_id: id.to_owned(),
            stdin: io.stdin.clone(),
            stdout: io.stdout.clone(),
            stderr: io.stderr.clone(),
            terminal: io.terminal,
            spec: Some(prost_types::Any {
                type_url: PROCESS_SPEC_TYPE_URL.to_owned(),
                value: spec.to_vec(),
            }),
            exec_id: exec_id.to_owned(),
        };
        self.client
            .call(|| format!("exec {exec_id:?} in task {id:?}"), async {
                self.client
                    .rpc()
                    .tasks()
                    .exec(req)
                    .await
                    .map_err(from_status)?;
                Ok(())
            })
            .await
    }

    /// Forgets exec'd process `exec_id` once it has exited; returns its exit.
    pub async fn delete_process(&self, id: &str, exec_id: &str) -> Result<ExitInfo> {
        self.client
            .call(
                || format!("delete process {exec_id:?} of task {id:?}"),
                async {
                    let r = self
                        .client
                        .rpc()
                        .tasks()
                        .delete_process(pb::DeleteProcessRequest {
                            container_id: id.to_owned(),
                            exec_id: exec_id.to_owned(),
                        })
                        .await
                        .map_err(from_status)?
                        .into_inner();
                    Ok(exit(r.pid, r.exit_status, r.exited_at.as_ref()))
                },
            )
            .await
    }

    /// Sets the size of the process's pty.
    pub async fn resize_pty(&self, id: &str, exec_id: &str, width: u32, height: u32) -> Result<()> {
        self.client
            .call(|| format!("resize the pty of task {id:?}"), async {
                self.client
                    .rpc()
                    .tasks()
                    .resize_pty(pb::ResizePtyRequest {
                        container_id: id.to_owned(),
                        exec_id: exec_id.to_owned(),
                        width,
                        height,
                    })
                    .await
                    .map_err(from_status)?;
                Ok(())
            })
            .await
    }

    /// Closes the process's stdin once the client has written everything, so it reads EOF.
    pub async fn close_io(&self, id: &str, exec_id: &str) -> Result<()> {
        self.client
            .call(|| format!("close the stdin of task {id:?}"), async {
                self.client
                    .rpc()
                    .tasks()
                    .close_io(pb::CloseIoRequest {
                        container_id: id.to_owned(),
                        exec_id: exec_id.to_owned(),
                        stdin: true,
                    })
                    .await
                    .map_err(from_status)?;
                Ok(())
            })
            .await
    }

    /// Freezes every process of the task.
    pub async fn pause(&self, id: &str) -> Result<()> {
        self.client
            .call(|| format!("pause task {id:?}"), async {
                self.client
                    .rpc()
                    .tasks()
                    .pause(pb::PauseTaskRequest {
                        container_id: id.to_owned(),
                    })
                    .await
                    .map_err(from_status)?;
                Ok(())
            })
            .await
    }

    /// Thaws a paused task.
    pub async fn resume(&self, id: &str) -> Result<()> {
        self.client
            .call(|| format!("resume task {id:?}"), async {
                self.client
                    .rpc()
                    .tasks()
                    .resume(pb::ResumeTaskRequest {
                        container_id: id.to_owned(),
                    })
                    .await
                    .map_err(from_status)?;
                Ok(())
            })
            .await
    }

    /// The host pids of the task's processes.
    pub async fn pids(&self, id: &str) -> Result<Vec<ProcessInfo>> {
        self.client
            .call(|| format!("list the processes of task {id:?}"), async {
                let resp = self
                    .client
                    .rpc()
                    .tasks()
                    .list_pids(pb::ListPidsRequest {
                        container_id: id.to_owned(),
                    })
                    .await
                    .map_err(from_status)?
                    .into_inner();
                Ok(resp
                    .processes
                    .into_iter()
                    .map(|p| ProcessInfo {
                        pid: p.pid,
                        exec_id: String::new(),
                    })
                    .collect())
            })
            .await
    }

    /// The state of the init (`exec_id` "") or of an exec'd process; NotFound when there is no
    /// task.
    pub async fn get(&self, id: &str, exec_id: &str) -> Result<ProcessState> {
        self.client
            .call(|| format!("get task {id:?}"), async {
                let resp = self
                    .client
                    .rpc()
                    .tasks()
                    .get(pb::GetRequest {
                        container_id: id.to_owned(),
                        exec_id: exec_id.to_owned(),
                    })
                    .await
                    .map_err(from_status)?
                    .into_inner();
                let p = resp.process.ok_or_else(|| {
                    Error::internal(format!("server sent no process for task {id:?}"))
                })?;
                Ok(process(p, id))
            })
            .await
    }

    /// Every task of the namespace (their inits).
    pub async fn list(&self) -> Result<Vec<ProcessState>> {
        self.client
            .call(|| "list tasks".to_owned(), async {
                let resp = self
                    .client
                    .rpc()
                    .tasks()
                    .list(pb::ListTasksRequest {
                        filter: String::new(),
                    })
                    .await
                    .map_err(from_status)?
                    .into_inner();
                // List leaves container_id out; the init's `id` is the container id.
                Ok(resp
                    .tasks
                    .into_iter()
                    .map(|p| {
                        let id = p.id.clone();
                        process(p, &id)
                    })
                    .collect())
            })
            .await
    }

    /// The metrics of the tasks matching `filters` (e.g. `id==web`; all when empty).
    pub async fn metrics(&self, filters: &[String]) -> Result<Vec<Metric>> {
        self.client
            .call(|| "get task metrics".to_owned(), async {
                let resp = self
                    .client
                    .rpc()
                    .tasks()
                    .metrics(pb::MetricsRequest {
                        filters: filters.to_vec(),
                    })
                    .await
                    .map_err(from_status)?
                    .into_inner();
                Ok(resp
                    .metrics
                    .into_iter()
                    .map(|m| Metric {
                        id: m.id,
                        timestamp: convert::known_time(convert::system_time(m.timestamp.as_ref())),
                        data: m.data.map(|a| AnyValue::new(a.type_url, a.value)),
                    })
                    .collect())
            })
            .await
    }

    /// Changes the task's resources (`resources`: an OCI `LinuxResources` as JSON, type
    /// [`LINUX_RESOURCES_TYPE_URL`]).
    pub async fn update(&self, id: &str, resources: &AnyValue) -> Result<()> {
        self.client
            .call(|| format!("update task {id:?}"), async {
                self.client
                    .rpc()
                    .tasks()
                    .update(pb::UpdateTaskRequest {
                        container_id: id.to_owned(),
                        resources: Some(to_wire_any(resources)),
                        annotations: Default::default(),
                    })
                    .await
                    .map_err(from_status)?;
                Ok(())
            })
            .await
    }
}

/// The parts of containerd's cgroups v1 `Metrics` (`io.containerd.cgroups.v1.Metrics`) a
/// `stats` view needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupStats {
    /// CPU time used, nanoseconds.
    pub cpu_total_ns: u64,
    /// Memory in use, bytes.
    pub memory_usage: u64,
    /// The memory limit, bytes (the kernel's "unlimited" value when none is set).
    pub memory_limit: u64,
    /// Processes in the cgroup.
    pub pids_current: u64,
    /// The pids limit (0: none).
    pub pids_limit: u64,
}

/// The type URL of containerd's cgroups v1 metrics.
pub const CGROUPS_V1_METRICS: &str = "io.containerd.cgroups.v1.Metrics";

mod wire {
    //! Just enough of containerd's cgroups v1 metrics messages (field numbers as theirs).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Metrics {
        #[prost(message, optional, tag = "2")]
        pub pids: Option<PidsStat>,
        #[prost(message, optional, tag = "3")]
        pub cpu: Option<CpuStat>,
        #[prost(message, optional, tag = "4")]
        pub memory: Option<MemoryStat>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PidsStat {
        #[prost(uint64, tag = "1")]
        pub current: u64,
        #[prost(uint64, tag = "2")]
        pub limit: u64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CpuStat {
        #[prost(message, optional, tag = "1")]
        pub usage: Option<CpuUsage>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CpuUsage {
        #[prost(uint64, tag = "1")]
        pub total: u64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct MemoryStat {
        #[prost(message, optional, tag = "33")]
        pub usage: Option<MemoryEntry>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct MemoryEntry {
        #[prost(uint64, tag = "1")]
        pub limit: u64,
        #[prost(uint64, tag = "2")]
        pub usage: u64,
    }
}

impl CgroupStats {
    /// Decodes cgroups v1 metrics; InvalidArgument for another type or bad bytes.
    pub fn decode(data: &AnyValue) -> Result<Self> {
        use prost::Message as _;
        if !data.type_url.ends_with(CGROUPS_V1_METRICS) {
            return Err(Error::invalid_argument(format!(
                "metrics of type {:?}: only {CGROUPS_V1_METRICS} is understood",
                data.type_url
            )));
        }
        let m = wire::Metrics::decode(data.value.as_slice())
            .map_err(|e| Error::invalid_argument(format!("decode {CGROUPS_V1_METRICS}: {e}")))?;
        let usage = m.memory.and_then(|m| m.usage).unwrap_or_default();
        let pids = m.pids.unwrap_or_default();
        Ok(Self {
            cpu_total_ns: m.cpu.and_then(|c| c.usage).map_or(0, |u| u.total),
            memory_usage: usage.usage,
            memory_limit: usage.limit,
            pids_current: pids.current,
            pids_limit: pids.limit,
        })
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;

    #[test]
    fn processes_from_get_and_list() {
        let p = v1::Process {
            container_id: "web".into(),
            id: "web".into(),
            pid: 42,
            status: 2,
            ..Default::default()
        };
        let s = process(p, "web");
        assert_eq!((s.exec_id.as_str(), s.pid), ("", 42));
        assert_eq!(s.status, TaskStatus::Running);
        let listed = v1::Process {
            id: "db".into(),
            status: 3,
            exit_status: 7,
            ..Default::default()
        };
        let s = process(listed, "db");
        assert_eq!(s.container_id, "db");
        assert_eq!(s.exec_id, "");
        assert_eq!((s.status, s.exit_status), (TaskStatus::Stopped, 7));
        let exec = v1::Process {
            container_id: "web".into(),
            id: "e1".into(),
            ..Default::default()
        };
        assert_eq!(process(exec, "web").exec_id, "e1");
    }

    #[test]
    fn cgroup_metrics_decode() {
        let m = wire::Metrics {
            pids: Some(wire::PidsStat {
                current: 3,
                limit: 20,
            }),
            cpu: Some(wire::CpuStat {
                usage: Some(wire::CpuUsage { total: 1_000 }),
            }),
            memory: Some(wire::MemoryStat {
                usage: Some(wire::MemoryEntry {
                    limit: 64 << 20,
                    usage: 1 << 20,
                }),
            }),
        };
        let any = AnyValue::new(CGROUPS_V1_METRICS, m.encode_to_vec());
        let s = CgroupStats::decode(&any).unwrap();
        assert_eq!(
            s,
            CgroupStats {
                cpu_total_ns: 1_000,
                memory_usage: 1 << 20,
                memory_limit: 64 << 20,
                pids_current: 3,
                pids_limit: 20,
            }
        );
        let other = AnyValue::new("io.containerd.cgroups.v2.Metrics", vec![]);
        assert!(CgroupStats::decode(&other).is_err());
    }
}
