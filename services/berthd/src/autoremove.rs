//! Containers labelled `io.berth.auto-remove=true` (`berthctl run -d --rm`) are removed by
//! berthd when their init exits — task, snapshot, record and log — since no client is left
//! to do it.
//!
//! The watcher subscribes to `/tasks/exit` before the daemon re-adopts its shims, so an exit
//! that happened while berthd was down (re-published once at recovery) is acted on too.

use std::sync::Arc;

use berth_core::containers::{AUTO_REMOVE_LABEL, ContainerStore};
use berth_core::events::{Envelope, EventSubscriber};
use berth_core::filters::Filters;
use berth_core::snapshots::SnapshotStore;
use berth_core::tasks::TaskManager;
use berth_core::{ErrorKind, RequestContext, Result};
use berth_proto::containerd::events::TaskExit;

/// What removing a container takes.
#[derive(Clone)]
pub struct AutoRemove {
    /// Tasks, to delete the stopped task.
    pub tasks: Arc<dyn TaskManager>,
    /// Container records (deleting one also deletes its log).
    pub containers: Arc<dyn ContainerStore>,
    /// Snapshots, to remove the container's writable layer.
    pub snapshots: Arc<dyn SnapshotStore>,
}

impl AutoRemove {
    /// Subscribes now and handles exits on a background task for as long as the exchange
    /// lives.
    pub fn spawn(self, events: &dyn EventSubscriber) -> Result<tokio::task::JoinHandle<()>> {
        let filters = Filters::parse(&[r#"topic=="/tasks/exit""#])?;
        let mut sub = events.subscribe(filters);
        Ok(tokio::spawn(async move {
            while let Some(envelope) = sub.next().await {
                if let Err(e) = self.handle(&envelope).await {
                    tracing::warn!(namespace = %envelope.namespace, "auto-remove: {e}");
                }
            }
        }))
    }

    async fn handle(&self, envelope: &Envelope) -> Result<()> {
        let exit: TaskExit = berth_proto::from_any(&berth_proto::to_wire_any(&envelope.event))?;
        // Only the init's exit ends the container; an exec'd process has its own id.
        if exit.id != exit.container_id {
            return Ok(());
        }
        let ctx = RequestContext::new(envelope.namespace.clone());
        let id = exit.container_id;
        let containers = self.containers.clone();
        let (ctx2, id2) = (ctx.clone(), id.clone());
        let container = match tokio::task::spawn_blocking(move || containers.get(&ctx2, &id2)).await
        {
            Ok(Ok(c)) => c,
            // Already removed by someone else: nothing to do.
            Ok(Err(e)) if e.is(ErrorKind::NotFound) => return Ok(()),
            Ok(Err(e)) => return Err(e),
            Err(e) => return Err(berth_core::Error::internal(format!("auto-remove: {e}"))),
        };
        if container.labels.get(AUTO_REMOVE_LABEL).map(String::as_str) != Some("true") {
            return Ok(());
        }
        let _span = tracing::info_span!("auto-remove", namespace = %ctx.namespace, id = %id);
        match self.tasks.delete(&ctx, &id).await {
            Ok(_) => {}
            Err(e) if e.is(ErrorKind::NotFound) => {}
            Err(e) => return Err(e.context(format!("delete the task of {id:?}"))),
        }
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            if !container.snapshot_key.is_empty() {
                match this
                    .snapshots
                    .remove(&ctx, &container.snapshotter, &container.snapshot_key)
                {
                    Ok(()) => {}
                    Err(e) if e.is(ErrorKind::NotFound) => {}
                    Err(e) => return Err(e.context(format!("remove the snapshot of {id:?}"))),
                }
            }
            match this.containers.delete(&ctx, &id) {
                Ok(()) => {}
                Err(e) if e.is(ErrorKind::NotFound) => {}
                Err(e) => return Err(e.context(format!("delete container {id:?}"))),
            }
            tracing::info!(container = %id, "removed after its exit (io.berth.auto-remove)");
            Ok(())
        })
        .await
        .map_err(|e| berth_core::Error::internal(format!("auto-remove: {e}")))?
    }
}
