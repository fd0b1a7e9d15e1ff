//! [`Publishing`]: the metadata stores, announcing each successful change as containerd does.
//!
//! `Publishing<S>` implements each of berth-core's namespaced store traits that `S` implements
//! by calling `S` and, when the call succeeded, publishing containerd's event for it in the
//! request's namespace:
//!
//! | call | topic | payload |
//! |---|---|---|
//! | `ContainerStore::create` / `update` / `delete` | `/containers/{create,update,delete}` | `containerd.events.Container{Create,Update,Delete}` |
//! | `ImageStore::create` / `update` / `delete` | `/images/{create,update,delete}` | `containerd.services.images.v1.Image{Create,Update,Delete}` |
//! | `NamespaceStore::create` / `update` / `delete` | `/namespaces/{create,update,delete}` | `containerd.events.Namespace{Create,Update,Delete}` |
//! | `SnapshotStore::prepare` / `commit` / `remove` | `/snapshot/{prepare,commit,remove}` | `containerd.events.Snapshot{Prepare,Commit,Remove}` |
//! | `ContentStore::delete` | `/content/delete` | `containerd.events.ContentDelete` |
//!
//! Namespace calls carry no request context, so their events are published in the namespace
//! they change. Reads, views, label updates of content and snapshots, and what garbage
//! collection removes publish nothing, as in containerd.
//!
//! Decorating the stores, rather than the gRPC adapters, means every path that changes them
//! (the gRPC services, daemon-side pulls, imports) announces it, and the adapters stay thin.

use std::sync::Arc;

use berth_core::containers::{Container, ContainerStore};
use berth_core::content::{ContentStore, Info, IngestStatus, ReaderAt, Writer};
use berth_core::events::{EventPublisher, topics};
use berth_core::filters::Filters;
use berth_core::images::{Image, ImageStore};
use berth_core::labels::Labels;
use berth_core::mount::Mount;
use berth_core::namespaces::{NamespaceInfo, NamespaceStore};
use berth_core::snapshots::{Info as SnapshotInfo, SnapshotStore, Usage};
use berth_core::{Digest, Namespace, RequestContext, Result};
use berth_proto::containerd::events as ev;
use berth_proto::containerd::services::images::v1 as images_ev;
use berth_proto::{any_value_of, to_wire_any};
use prost::{Message, Name};

/// Stores of type `S` that publish their changes; see the module docs for what is published.
pub struct Publishing<S: ?Sized> {
    inner: Arc<S>,
    events: Arc<dyn EventPublisher>,
}

impl<S: ?Sized> std::fmt::Debug for Publishing<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publishing").finish_non_exhaustive()
    }
}

impl<S: ?Sized> Publishing<S> {
    /// `inner`, publishing on `events`.
    pub fn new(inner: Arc<S>, events: Arc<dyn EventPublisher>) -> Self {
        Self { inner, events }
    }

    /// The undecorated store.
    pub fn inner(&self) -> &Arc<S> {
        &self.inner
    }

    /// Publishes `event` after a change that already happened: a failure cannot undo it, so it
    /// is logged, not returned (only a malformed topic fails, and the topics are constants).
    fn emit<M: Message + Name>(&self, namespace: &Namespace, topic: &str, event: &M) {
        if let Err(e) = self.events.publish(namespace, topic, any_value_of(event)) {
            tracing::error!(%namespace, topic, error = %e, "publishing an event");
        }
    }
}

fn wire_labels(labels: &Labels) -> std::collections::HashMap<String, String> {
    labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

impl<S: ContainerStore + ?Sized> ContainerStore for Publishing<S> {
    fn get(&self, ctx: &RequestContext, id: &str) -> Result<Container> {
        self.inner.get(ctx, id)
    }

    fn list(&self, ctx: &RequestContext, filters: &Filters) -> Result<Vec<Container>> {
        self.inner.list(ctx, filters)
    }

    fn create(&self, ctx: &RequestContext, container: Container) -> Result<Container> {
        let created = self.inner.create(ctx, container)?;
        let event = ev::ContainerCreate {
            id: created.id.clone(),
            image: created.image.clone(),
            runtime: Some(ev::container_create::Runtime {
                name: created.runtime.name.clone(),
                options: created.runtime.options.as_ref().map(to_wire_any),
            }),
        };
        self.emit(&ctx.namespace, topics::CONTAINER_CREATE, &event);
        Ok(created)
    }

    fn update(
        &self,
        ctx: &RequestContext,
        container: Container,
        paths: &[String],
    ) -> Result<Container> {
        let updated = self.inner.update(ctx, container, paths)?;
        let event = ev::ContainerUpdate {
            id: updated.id.clone(),
            image: updated.image.clone(),
            labels: wire_labels(&updated.labels),
            snapshot_key: updated.snapshot_key.clone(),
        };
        self.emit(&ctx.namespace, topics::CONTAINER_UPDATE, &event);
        Ok(updated)
    }

    fn delete(&self, ctx: &RequestContext, id: &str) -> Result<()> {
        self.inner.delete(ctx, id)?;
        let event = ev::ContainerDelete { id: id.to_owned() };
        self.emit(&ctx.namespace, topics::CONTAINER_DELETE, &event);
        Ok(())
    }
}

impl<S: ImageStore + ?Sized> ImageStore for Publishing<S> {
    fn get(&self, ctx: &RequestContext, name: &str) -> Result<Image> {
        self.inner.get(ctx, name)
    }

    fn list(&self, ctx: &RequestContext, filters: &Filters) -> Result<Vec<Image>> {
        self.inner.list(ctx, filters)
    }

    fn create(&self, ctx: &RequestContext, image: Image) -> Result<Image> {
        let created = self.inner.create(ctx, image)?;
        let event = images_ev::ImageCreate {
            name: created.name.clone(),
            labels: wire_labels(&created.labels),
        };
        self.emit(&ctx.namespace, topics::IMAGE_CREATE, &event);
        Ok(created)
    }

    fn update(&self, ctx: &RequestContext, image: Image, paths: &[String]) -> Result<Image> {
        let updated = self.inner.update(ctx, image, paths)?;
        let event = images_ev::ImageUpdate {
            name: updated.name.clone(),
            labels: wire_labels(&updated.labels),
        };
        self.emit(&ctx.namespace, topics::IMAGE_UPDATE, &event);
        Ok(updated)
    }

    fn delete(&self, ctx: &RequestContext, name: &str, sync: bool) -> Result<()> {
        self.inner.delete(ctx, name, sync)?;
        let event = images_ev::ImageDelete {
            name: name.to_owned(),
        };
        self.emit(&ctx.namespace, topics::IMAGE_DELETE, &event);
        Ok(())
    }
}

impl<S: NamespaceStore + ?Sized> NamespaceStore for Publishing<S> {
    fn create(&self, name: &Namespace, labels: Labels) -> Result<NamespaceInfo> {
        let created = self.inner.create(name, labels)?;
        let event = ev::NamespaceCreate {
            name: created.name.to_string(),
            labels: wire_labels(&created.labels),
        };
        self.emit(name, topics::NAMESPACE_CREATE, &event);
        Ok(created)
    }

    fn get(&self, name: &Namespace) -> Result<NamespaceInfo> {
        self.inner.get(name)
    }

    fn list(&self, filters: &Filters) -> Result<Vec<NamespaceInfo>> {
        self.inner.list(filters)
    }

    fn update(&self, info: NamespaceInfo, paths: &[String]) -> Result<NamespaceInfo> {
        let updated = self.inner.update(info, paths)?;
        let event = ev::NamespaceUpdate {
            name: updated.name.to_string(),
            labels: wire_labels(&updated.labels),
        };
        self.emit(&updated.name, topics::NAMESPACE_UPDATE, &event);
        Ok(updated)
    }

    fn delete(&self, name: &Namespace) -> Result<()> {
        self.inner.delete(name)?;
        let event = ev::NamespaceDelete {
            name: name.to_string(),
        };
        self.emit(name, topics::NAMESPACE_DELETE, &event);
        Ok(())
    }
}

impl<S: SnapshotStore + ?Sized> SnapshotStore for Publishing<S> {
    fn snapshotters(&self) -> Vec<String> {
        self.inner.snapshotters()
    }

    fn stat(&self, ctx: &RequestContext, snapshotter: &str, key: &str) -> Result<SnapshotInfo> {
        self.inner.stat(ctx, snapshotter, key)
    }

    fn update(
        &self,
        ctx: &RequestContext,
        snapshotter: &str,
        info: SnapshotInfo,
        paths: &[String],
    ) -> Result<SnapshotInfo> {
        self.inner.update(ctx, snapshotter, info, paths)
    }

    fn usage(&self, ctx: &RequestContext, snapshotter: &str, key: &str) -> Result<Usage> {
        self.inner.usage(ctx, snapshotter, key)
    }

    fn mounts(&self, ctx: &RequestContext, snapshotter: &str, key: &str) -> Result<Vec<Mount>> {
        self.inner.mounts(ctx, snapshotter, key)
    }

    fn prepare(
        &self,
        ctx: &RequestContext,
        snapshotter: &str,
        key: &str,
        parent: Option<&str>,
        labels: Labels,
    ) -> Result<Vec<Mount>> {
        let mounts = self.inner.prepare(ctx, snapshotter, key, parent, labels)?;
        let event = ev::SnapshotPrepare {
            key: key.to_owned(),
            parent: parent.unwrap_or_default().to_owned(),
        };
        self.emit(&ctx.namespace, topics::SNAPSHOT_PREPARE, &event);
        Ok(mounts)
    }

    fn view(
        &self,
        ctx: &RequestContext,
        snapshotter: &str,
        key: &str,
        parent: Option<&str>,
        labels: Labels,
    ) -> Result<Vec<Mount>> {
        self.inner.view(ctx, snapshotter, key, parent, labels)
    }

    fn commit(
        &self,
        ctx: &RequestContext,
        snapshotter: &str,
        name: &str,
        key: &str,
        labels: Labels,
    ) -> Result<()> {
        self.inner.commit(ctx, snapshotter, name, key, labels)?;
        let event = ev::SnapshotCommit {
            key: key.to_owned(),
            name: name.to_owned(),
        };
        self.emit(&ctx.namespace, topics::SNAPSHOT_COMMIT, &event);
        Ok(())
    }

    fn remove(&self, ctx: &RequestContext, snapshotter: &str, key: &str) -> Result<()> {
        self.inner.remove(ctx, snapshotter, key)?;
        let event = ev::SnapshotRemove {
            key: key.to_owned(),
        };
        self.emit(&ctx.namespace, topics::SNAPSHOT_REMOVE, &event);
        Ok(())
    }

    fn list(
        &self,
        ctx: &RequestContext,
        snapshotter: &str,
        filters: &Filters,
    ) -> Result<Vec<SnapshotInfo>> {
        self.inner.list(ctx, snapshotter, filters)
    }

    fn cleanup(&self, ctx: &RequestContext, snapshotter: &str) -> Result<()> {
        self.inner.cleanup(ctx, snapshotter)
    }
}

impl<S: ContentStore + ?Sized> ContentStore for Publishing<S> {
    fn info(&self, ctx: &RequestContext, digest: &Digest) -> Result<Info> {
        self.inner.info(ctx, digest)
    }

    fn update(&self, ctx: &RequestContext, info: Info, paths: &[String]) -> Result<Info> {
        self.inner.update(ctx, info, paths)
    }

    fn list(&self, ctx: &RequestContext, filters: &Filters) -> Result<Vec<Info>> {
        self.inner.list(ctx, filters)
    }

    fn delete(&self, ctx: &RequestContext, digest: &Digest) -> Result<()> {
        self.inner.delete(ctx, digest)?;
        let event = ev::ContentDelete {
            digest: digest.to_string(),
        };
        self.emit(&ctx.namespace, topics::CONTENT_DELETE, &event);
        Ok(())
    }

    fn reader(&self, ctx: &RequestContext, digest: &Digest) -> Result<Box<dyn ReaderAt>> {
        self.inner.reader(ctx, digest)
    }

    fn status(&self, ctx: &RequestContext, reference: &str) -> Result<IngestStatus> {
        self.inner.status(ctx, reference)
    }

    fn list_statuses(&self, ctx: &RequestContext, filters: &Filters) -> Result<Vec<IngestStatus>> {
        self.inner.list_statuses(ctx, filters)
    }

    fn abort(&self, ctx: &RequestContext, reference: &str) -> Result<()> {
        self.inner.abort(ctx, reference)
    }

    fn writer(
        &self,
        ctx: &RequestContext,
        reference: &str,
        total: u64,
        expected: Option<Digest>,
    ) -> Result<Box<dyn Writer>> {
        self.inner.writer(ctx, reference, total, expected)
    }
}
