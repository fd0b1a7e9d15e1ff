//! `containerd.services.tasks.v1.Tasks` over a [`TaskManager`].

use std::sync::Arc;

use berth_core::mount::Mount;
use berth_core::tasks::{CreateTask, ExitInfo, ProcessState, TaskIo, TaskManager};
use berth_core::{AnyValue, Error};
use berth_proto::containerd::services::tasks::v1 as pb;
use berth_proto::containerd::types as ty;
use berth_proto::containerd::v1::types as v1;
use pb::tasks_server::Tasks;
use tonic::{Request, Response, Status};

use crate::context::request_context;
use crate::convert::timestamp;
use crate::error::to_status;

/// The Tasks service.
pub struct TasksService {
    tasks: Arc<dyn TaskManager>,
}

impl TasksService {
    /// A service over `tasks`.
    pub fn new(tasks: Arc<dyn TaskManager>) -> Self {
        Self { tasks }
    }
}

fn process(p: &ProcessState) -> v1::Process {
    v1::Process {
        container_id: p.container_id.clone(),
        // `ctr tasks ls` prints this field: the container id for an init, else the exec id.
        id: if p.exec_id.is_empty() {
            p.container_id.clone()
        } else {
            p.exec_id.clone()
        },
        pid: p.pid,
        status: p.status.as_i32(),
        stdin: p.io.stdin.clone(),
        stdout: p.io.stdout.clone(),
        stderr: p.io.stderr.clone(),
        terminal: p.io.terminal,
        exit_status: p.exit_status,
        exited_at: p.exited_at.map(timestamp),
    }
}

fn delete_response(id: &str, e: ExitInfo) -> pb::DeleteResponse {
    pb::DeleteResponse {
        id: id.to_owned(),
        pid: e.pid,
        exit_status: e.exit_status,
        exited_at: e.exited_at.map(timestamp),
    }
}

fn any(a: Option<prost_types::Any>) -> Option<AnyValue> {
    a.map(|a| AnyValue::new(a.type_url, a.value))
}

fn need_id(id: &str) -> Result<(), Status> {
    if id.is_empty() {
        return Err(to_status(Error::invalid_argument(
            "container_id must be set",
        )));
    }
    Ok(())
}

/// The container ids a metrics filter names (`id==x`, `id=="x"`, joined with `,` or given as
/// several filters); empty means every task.
fn filter_ids(filters: &[String]) -> Vec<String> {
    filters
        .iter()
        .flat_map(|f| f.split(','))
        .filter_map(|clause| {
            let v = clause.trim().strip_prefix("id==")?;
            Some(v.trim_matches('"').to_owned())
        })
        .collect()
}

#[tonic::async_trait]
impl Tasks for TasksService {
    async fn create(
        &self,
        req: Request<pb::CreateTaskRequest>,
    ) -> Result<Response<pb::CreateTaskResponse>, Status> {
        let ctx = request_context(&req)?;
        let r = req.into_inner();
        need_id(&r.container_id)?;
        if r.checkpoint.is_some() {
            return Err(Status::unimplemented(
                "restoring from a checkpoint is not supported",
            ));
        }
        let create = CreateTask {
            container_id: r.container_id.clone(),
            rootfs: r
                .rootfs
                .into_iter()
                .map(|m| Mount {
                    kind: m.r#type,
                    source: m.source,
                    target: m.target,
                    options: m.options,
                })
                .collect(),
            io: TaskIo {
                stdin: r.stdin,
                stdout: r.stdout,
                stderr: r.stderr,
                terminal: r.terminal,
            },
            options: any(r.options),
        };
        let pid = self.tasks.create(&ctx, create).await.map_err(to_status)?;
        Ok(Response::new(pb::CreateTaskResponse {
            container_id: r.container_id,
            pid,
        }))
    }

    async fn start(
        &self,
        req: Request<pb::StartRequest>,
    ) -> Result<Response<pb::StartResponse>, Status> {
        let ctx = request_context(&req)?;
        let r = req.into_inner();
        need_id(&r.container_id)?;
        let pid = self
            .tasks
            .start(&ctx, &r.container_id, &r.exec_id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::StartResponse { pid }))
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteTaskRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let ctx = request_context(&req)?;
        let r = req.into_inner();
        need_id(&r.container_id)?;
        let exit = self
            .tasks
            .delete(&ctx, &r.container_id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(delete_response(&r.container_id, exit)))
    }

    async fn delete_process(
        &self,
        req: Request<pb::DeleteProcessRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let ctx = request_context(&req)?;
        let r = req.into_inner();
        need_id(&r.container_id)?;
        if r.exec_id.is_empty() {
            return Err(Status::invalid_argument("exec_id must be set"));
        }
        let exit = self
            .tasks
            .delete_process(&ctx, &r.container_id, &r.exec_id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(delete_response(&r.exec_id, exit)))
    }

    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        let ctx = request_context(&req)?;
        let r = req.into_inner();
        need_id(&r.container_id)?;
        let p = self
            .tasks
            .get(&ctx, &r.container_id, &r.exec_id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::GetResponse {
            process: Some(process(&p)),
        }))
    }

    async fn list(
        &self,
        req: Request<pb::ListTasksRequest>,
    ) -> Result<Response<pb::ListTasksResponse>, Status> {
        let ctx = request_context(&req)?;
        let tasks = self.tasks.list(&ctx).await.map_err(to_status)?;
        Ok(Response::new(pb::ListTasksResponse {
            tasks: tasks
                .iter()
                .map(|p| {
                    let mut w = process(p);
                    // containerd leaves the container id out of List's entries.
                    w.container_id = String::new();
                    w
                })
                .collect(),
        }))
    }

    async fn kill(&self, req: Request<pb::KillRequest>) -> Result<Response<()>, Status> {
        let ctx = request_context(&req)?;
        let r = req.into_inner();
        need_id(&r.container_id)?;
        self.tasks
            .kill(&ctx, &r.container_id, &r.exec_id, r.signal, r.all)
            .await
            .map_err(to_status)?;
        Ok(Response::new(()))
    }

    async fn exec(&self, req: Request<pb::ExecProcessRequest>) -> Result<Response<()>, Status> {
        let ctx = request_context(&req)?;
        let r = req.into_inner();
        need_id(&r.container_id)?;
        if r.exec_id.is_empty() {
            return Err(Status::invalid_argument("exec_id must be set"));
        }
        let spec = any(r.spec).ok_or_else(|| Status::invalid_argument("spec must be set"))?;
        let io = TaskIo {
            stdin: r.stdin,
            stdout: r.stdout,
            stderr: r.stderr,
            terminal: r.terminal,
        };
        self.tasks
            .exec(&ctx, &r.container_id, &r.exec_id, spec, io)
            .await
            .map_err(to_status)?;
        Ok(Response::new(()))
    }

    async fn resize_pty(&self, req: Request<pb::ResizePtyRequest>) -> Result<Response<()>, Status> {
        let ctx = request_context(&req)?;
        let r = req.into_inner();
        need_id(&r.container_id)?;
        self.tasks
            .resize_pty(&ctx, &r.container_id, &r.exec_id, r.width, r.height)
            .await
            .map_err(to_status)?;
        Ok(Response::new(()))
    }

    async fn close_io(&self, req: Request<pb::CloseIoRequest>) -> Result<Response<()>, Status> {
        let ctx = request_context(&req)?;
        let r = req.into_inner();
        need_id(&r.container_id)?;
        if r.stdin {
            self.tasks
                .close_io(&ctx, &r.container_id, &r.exec_id)
                .await
                .map_err(to_status)?;
        }
        Ok(Response::new(()))
    }

    async fn pause(&self, req: Request<pb::PauseTaskRequest>) -> Result<Response<()>, Status> {
        let ctx = request_context(&req)?;
        let r = req.into_inner();
        need_id(&r.container_id)?;
        self.tasks
            .pause(&ctx, &r.container_id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(()))
    }

    async fn resume(&self, req: Request<pb::ResumeTaskRequest>) -> Result<Response<()>, Status> {
        let ctx = request_context(&req)?;
        let r = req.into_inner();
        need_id(&r.container_id)?;
        self.tasks
            .resume(&ctx, &r.container_id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(()))
    }

    async fn list_pids(
        &self,
        req: Request<pb::ListPidsRequest>,
    ) -> Result<Response<pb::ListPidsResponse>, Status> {
        let ctx = request_context(&req)?;
        let r = req.into_inner();
        need_id(&r.container_id)?;
        let pids = self
            .tasks
            .pids(&ctx, &r.container_id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::ListPidsResponse {
            processes: pids
                .into_iter()
                .map(|p| v1::ProcessInfo {
                    pid: p.pid,
                    info: None,
                })
                .collect(),
        }))
    }

    async fn checkpoint(
        &self,
        _req: Request<pb::CheckpointTaskRequest>,
    ) -> Result<Response<pb::CheckpointTaskResponse>, Status> {
        Err(Status::unimplemented("checkpoint is not supported"))
    }

    async fn update(&self, req: Request<pb::UpdateTaskRequest>) -> Result<Response<()>, Status> {
        let ctx = request_context(&req)?;
        let r = req.into_inner();
        need_id(&r.container_id)?;
        let resources =
            any(r.resources).ok_or_else(|| Status::invalid_argument("resources must be set"))?;
        self.tasks
            .update(&ctx, &r.container_id, resources)
            .await
            .map_err(to_status)?;
        Ok(Response::new(()))
    }

    async fn metrics(
        &self,
        req: Request<pb::MetricsRequest>,
    ) -> Result<Response<pb::MetricsResponse>, Status> {
        let ctx = request_context(&req)?;
        let r = req.into_inner();
        let wanted = filter_ids(&r.filters);
        let ids: Vec<String> = if wanted.is_empty() {
            self.tasks
                .list(&ctx)
                .await
                .map_err(to_status)?
                .into_iter()
                .map(|p| p.container_id)
                .collect()
        } else {
            wanted
        };
        let mut metrics = Vec::new();
        for id in ids {
            let data = self.tasks.metrics(&ctx, &id).await.map_err(to_status)?;
            metrics.push(ty::Metric {
                timestamp: Some(timestamp(std::time::SystemTime::now())),
                id,
                data: Some(prost_types::Any {
                    type_url: data.type_url,
                    value: data.value,
                }),
            });
        }
        Ok(Response::new(pb::MetricsResponse { metrics }))
    }

    async fn wait(
        &self,
        req: Request<pb::WaitRequest>,
    ) -> Result<Response<pb::WaitResponse>, Status> {
        let ctx = request_context(&req)?;
        let r = req.into_inner();
        need_id(&r.container_id)?;
        let exit = self
            .tasks
            .wait(&ctx, &r.container_id, &r.exec_id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::WaitResponse {
            exit_status: exit.exit_status,
            exited_at: exit.exited_at.map(timestamp),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_filters_name_ids() {
        assert_eq!(filter_ids(&["id==a".into()]), vec!["a"]);
        assert_eq!(filter_ids(&["id==\"b\",id==c".into()]), vec!["b", "c"]);
        assert!(filter_ids(&[]).is_empty());
    }
}
