//! Pull: resolve, fetch the tree into the content store under a lease, unpack layers as they
//! arrive, record the image.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use berth_core::content::{ContentStore, Writer};
use berth_core::diff::{Descriptor, LABEL_UNCOMPRESSED, is_layer_media_type};
use berth_core::filters::Filters;
use berth_core::images::Image;
use berth_core::labels::Labels;
use berth_core::leases::{EXPIRE_LABEL, LeaseManager, Resource};
use berth_core::reference::Reference;
use berth_core::transfer::{BlobState, Platform, Progress, ProgressSink, PullRequest};
use berth_core::{Digest, Error, ErrorKind, RequestContext, Result};
use bytes::{Bytes, BytesMut};
use futures::StreamExt as _;
use reqwest::StatusCode;
use tokio::sync::watch;

use crate::client::{Repository, verify};
use crate::oci::{
    LABEL_GC_REF_SNAPSHOT, MAX_MANIFEST_SIZE, Manifest, ManifestKind, append_source, chain_ids,
    classify, host_platform, index_labels, manifest_labels, parse_diff_ids, parse_index,
    parse_manifest, select_platforms, source_label_key,
};
use crate::{
    DEFAULT_SNAPSHOTTER, PULL_REFERENCE_LABEL, RegistryTransfer, blocking, read_blob, unique_suffix,
};

/// Bytes gathered from the network before one write to the ingest (and one progress event).
const FLUSH_SIZE: usize = 1 << 20;
/// How deep indexes may nest.
const MAX_INDEX_DEPTH: usize = 4;

pub(crate) async fn pull(
    t: &RegistryTransfer,
    ctx: &RequestContext,
    req: PullRequest,
    progress: ProgressSink,
) -> Result<Image> {
    let reference = Reference::parse(&req.reference)?;
    let snapshotter = if req.snapshotter.is_empty() {
        DEFAULT_SNAPSHOTTER.to_owned()
    } else {
        req.snapshotter.clone()
    };
    if req.unpack && !t.snapshots.snapshotters().contains(&snapshotter) {
        return Err(Error::invalid_argument(format!(
            "snapshotter not loaded: {snapshotter}"
        )));
    }
    let lease_id = format!("pull-{}", unique_suffix());
    let expiry = chrono::Duration::from_std(t.options.lease_expiry)
        .map_err(|e| Error::invalid_argument(format!("lease expiry: {e}")))?;
    let expire_at =
        (chrono::Utc::now() + expiry).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let name = reference.to_string();
    {
        let (leases, ctx, id) = (Arc::clone(&t.leases), ctx.clone(), lease_id.clone());
        let labels = Labels::from([
            (EXPIRE_LABEL.to_owned(), expire_at),
            (PULL_REFERENCE_LABEL.to_owned(), name.clone()),
        ]);
        blocking(move || leases.create(&ctx, &id, labels))
            .await
            .map_err(|e| e.context(format!("pulling {reference}: creating a lease")))?;
    }
    let puller = Puller {
        t,
        ctx: ctx.clone().with_lease(lease_id.clone()),
        lease: lease_id.clone(),
        repo: t
            .client
            .repository(&reference, req.credentials.clone(), false),
        source_key: source_label_key(reference.hostname()),
        name: reference.to_string(),
        progress: &progress,
    };
    let result = puller.run(&reference, &req, &snapshotter).await;
    // A dropped future never gets here: its lease stays until it expires, and with it the
    // ingests a later pull resumes. A pull that fails after fetching something keeps its lease
    // for the same reason: without it, the next collection (soon after any lease delete)
    // would take the partial ingests and the committed blobs, and a retry would start over.
    let (leases, content, plain) = (Arc::clone(&t.leases), Arc::clone(&t.content), ctx.clone());
    let failed = result.is_err();
    let cleanup = blocking(move || {
        // Worth keeping: an ingest, or a blob that arrived (the lease also names blobs it was
        // about to fetch when the pull failed).
        let keep = failed
            && leases
                .list_resources(&plain, &lease_id)
                .unwrap_or_default()
                .iter()
                .any(|r| match r.kind.as_str() {
                    "ingests" => true,
                    "content" => {
                        Digest::parse(&r.id).is_ok_and(|d| content.info(&plain, &d).is_ok())
                    }
                    _ => false,
                });
        if keep {
            tracing::info!(
                lease = lease_id,
                reference = name,
                "pull failed: its lease keeps what it fetched until it expires or the next \
                 successful pull of the same reference, so that a retry resumes"
            );
            return Ok(());
        }
        // Success, or nothing fetched: this lease goes, and on success so do the leases that
        // failed pulls of the same reference kept, since the image now holds what they did.
        let mut stale = vec![lease_id.clone()];
        if !failed {
            let all = Filters::parse::<&str>(&[])?;
            stale.extend(
                leases
                    .list(&plain, &all)?
                    .into_iter()
                    .filter(|l| {
                        l.id != lease_id
                            && l.labels.get(PULL_REFERENCE_LABEL).map(String::as_str)
                                == Some(name.as_str())
                    })
                    .map(|l| l.id),
            );
        }
        for id in stale {
            if let Err(e) = leases.delete(&plain, &id, false) {
                tracing::warn!(error = %e, lease = id, "pull: deleting a lease");
            }
        }
        Ok(())
    })
    .await;
    // The pull's own outcome is what the caller gets; leases left behind expire anyway.
    if let Err(e) = cleanup {
        tracing::warn!(error = %e, "pull: cleaning up leases");
    }
    result
}

/// What a fetched blob is, which names its ingest (`layer-sha256:…`, as containerd's).
#[derive(Debug, Clone, Copy)]
enum BlobKind {
    Config,
    Layer,
}

impl BlobKind {
    fn as_str(self) -> &'static str {
        match self {
            BlobKind::Config => "config",
            BlobKind::Layer => "layer",
        }
    }
}

/// One manifest the pull fetched.
struct Plan {
    descriptor: Descriptor,
    manifest: Manifest,
    unpack: bool,
}

/// What the unpackers wait on: the blobs committed so far, and whether fetching ended.
#[derive(Default)]
struct Fetched {
    done: HashSet<Digest>,
    finished: bool,
}

struct Puller<'a> {
    t: &'a RegistryTransfer,
    /// The caller's context holding the pull's lease.
    ctx: RequestContext,
    /// The lease's id.
    lease: String,
    repo: Repository,
    source_key: String,
    /// The normalized reference, for messages and the image name.
    name: String,
    progress: &'a ProgressSink,
}

impl Puller<'_> {
    fn emit(&self, descriptor: &Descriptor, state: BlobState, offset: u64) {
        (self.progress)(Progress::Blob {
            descriptor: descriptor.clone(),
            state,
            offset,
        });
    }

    async fn run(
        &self,
        reference: &Reference,
        req: &PullRequest,
        snapshotter: &str,
    ) -> Result<Image> {
        let resolved = self.repo.resolve(&reference.object(), &self.name).await?;
        let root = resolved.descriptor;
        classify(&root.media_type, &self.name)?;
        (self.progress)(Progress::Resolved {
            name: self.name.clone(),
            root: root.clone(),
        });
        let wanted = if req.platforms.is_empty() {
            vec![host_platform()]
        } else {
            req.platforms.clone()
        };
        let plans = self
            .fetch_manifests(&root, resolved.body, &wanted, req.all_platforms)
            .await?;

        let mut jobs: Vec<(Descriptor, BlobKind, Vec<String>)> = Vec::new();
        let mut seen = HashSet::new();
        for plan in &plans {
            let m = &plan.manifest;
            if m.config.size > MAX_MANIFEST_SIZE {
                return Err(Error::failed_precondition(format!(
                    "{}: config {} is {} bytes, more than the {} MiB limit",
                    self.name,
                    m.config.digest,
                    m.config.size,
                    MAX_MANIFEST_SIZE >> 20
                )));
            }
            if seen.insert(m.config.digest.clone()) {
                jobs.push((m.config.clone(), BlobKind::Config, Vec::new()));
            }
            for layer in &m.layers {
                if seen.insert(layer.digest.clone()) {
                    let urls = m.urls.get(&layer.digest).cloned().unwrap_or_default();
                    jobs.push((layer.clone(), BlobKind::Layer, urls));
                }
            }
        }
        for (desc, _, _) in &jobs {
            self.emit(desc, BlobState::Waiting, 0);
        }

        let (fetched_tx, fetched_rx) = watch::channel(Fetched::default());
        let fetch_all = async {
            let fetches = jobs
                .into_iter()
                .map(|(desc, kind, urls)| self.fetch_blob(desc, kind, urls));
            let mut fetches = futures::stream::iter(fetches)
                .buffer_unordered(self.t.options.max_concurrent_downloads);
            while let Some(digest) = fetches.next().await {
                let digest = digest?;
                fetched_tx.send_modify(|f| {
                    f.done.insert(digest);
                });
            }
            fetched_tx.send_modify(|f| f.finished = true);
            Ok::<(), Error>(())
        };
        let unpacks = futures::future::try_join_all(
            plans
                .iter()
                .filter(|p| p.unpack && req.unpack)
                .map(|p| self.unpack(p, fetched_rx.clone(), snapshotter)),
        );
        tokio::try_join!(fetch_all, unpacks)?;

        let mut image = Image::new(self.name.clone(), root);
        image.labels = req.labels.clone();
        let (images, ctx) = (Arc::clone(&self.t.images), self.ctx.clone());
        let name = self.name.clone();
        let image = blocking(move || match images.create(&ctx, image.clone()) {
            Err(e) if e.is(ErrorKind::AlreadyExists) => {
                match images.update(&ctx, image.clone(), &[]) {
                    Err(e) if e.is(ErrorKind::NotFound) => images.create(&ctx, image),
                    other => other,
                }
            }
            other => other,
        })
        .await
        .map_err(|e| e.context(format!("{name}: recording the image")))?;
        (self.progress)(Progress::Done {
            image: image.clone(),
        });
        Ok(image)
    }

    /// Fetches the root and the manifests the platforms select, storing each with its GC
    /// labels; returns the manifests.
    async fn fetch_manifests(
        &self,
        root: &Descriptor,
        root_body: Option<Bytes>,
        wanted: &[Platform],
        all: bool,
    ) -> Result<Vec<Plan>> {
        struct Node {
            descriptor: Descriptor,
            body: Option<Bytes>,
            unpack: bool,
            depth: usize,
        }
        let mut queue = VecDeque::from([Node {
            descriptor: root.clone(),
            body: root_body,
            unpack: true,
            depth: 0,
        }]);
        let mut plans = Vec::new();
        while let Some(node) = queue.pop_front() {
            let desc = &node.descriptor;
            let what = format!("{}: {} {}", self.name, desc.media_type, desc.digest);
            let kind = match classify(&desc.media_type, &what) {
                Ok(kind) => kind,
                // Every platform asked for: children Berth cannot read are left out, as the
                // index does not need them to be whole.
                Err(e) if all && node.depth > 0 && !node.unpack => {
                    tracing::info!(error = %e, "pull: skipping an index entry");
                    continue;
                }
                Err(e) => return Err(e),
            };
            let (body, existed) = self.manifest_bytes(desc, node.body, &what).await?;
            match kind {
                ManifestKind::Index => {
                    if node.depth >= MAX_INDEX_DEPTH {
                        return Err(Error::failed_precondition(format!(
                            "{what}: indexes nest more than {MAX_INDEX_DEPTH} deep"
                        )));
                    }
                    let index = parse_index(&body, &desc.media_type, &what)?;
                    self.store_manifest(desc, "index", body, index_labels(&index), existed)
                        .await?;
                    let (fetch, unpack) = select_platforms(&index, wanted, all, &self.name)?;
                    for i in fetch {
                        queue.push_back(Node {
                            descriptor: index.manifests[i].descriptor.clone(),
                            body: None,
                            unpack: node.unpack && unpack.contains(&i),
                            depth: node.depth + 1,
                        });
                    }
                }
                ManifestKind::Manifest => {
                    let manifest = parse_manifest(&body, &desc.media_type, &what)?;
                    let labels = manifest_labels(&manifest);
                    self.store_manifest(desc, "manifest", body, labels, existed)
                        .await?;
                    plans.push(Plan {
                        descriptor: desc.clone(),
                        manifest,
                        unpack: node.unpack,
                    });
                }
            }
        }
        Ok(plans)
    }

    /// A manifest's bytes: what the resolve fetched, the content store's copy, or the
    /// registry's. The flag says whether the store already had it.
    async fn manifest_bytes(
        &self,
        desc: &Descriptor,
        prefetched: Option<Bytes>,
        what: &str,
    ) -> Result<(Bytes, bool)> {
        if desc.size > MAX_MANIFEST_SIZE {
            return Err(Error::failed_precondition(format!(
                "{what}: {} bytes is larger than the {} MiB limit for manifests",
                desc.size,
                MAX_MANIFEST_SIZE >> 20
            )));
        }
        self.hold_content(&desc.digest).await?;
        let (content, ctx, digest) = (
            Arc::clone(&self.t.content),
            self.ctx.clone(),
            desc.digest.clone(),
        );
        let stored = blocking(move || match content.info(&ctx, &digest) {
            Ok(_) => read_blob(content.as_ref(), &ctx, &digest, MAX_MANIFEST_SIZE).map(Some),
            Err(e) if e.is(ErrorKind::NotFound) => Ok(None),
            Err(e) => Err(e),
        })
        .await?;
        if let Some(bytes) = stored {
            verify(&bytes, desc, what)?;
            self.emit(desc, BlobState::Exists, desc.size);
            return Ok((Bytes::from(bytes), true));
        }
        let bytes = match prefetched {
            Some(b) => {
                verify(&b, desc, what)?;
                b
            }
            None => {
                self.emit(desc, BlobState::Transferring, 0);
                self.repo.fetch_manifest(desc, what).await?
            }
        };
        Ok((bytes, false))
    }

    /// Writes a manifest or index with its labels (or adds the labels to the stored copy).
    async fn store_manifest(
        &self,
        desc: &Descriptor,
        kind: &str,
        body: Bytes,
        labels: Labels,
        existed: bool,
    ) -> Result<()> {
        let content = Arc::clone(&self.t.content);
        let ctx = self.ctx.clone();
        let (digest, size) = (desc.digest.clone(), desc.size);
        let reference = format!("{kind}-{digest}");
        let source = (self.source_key.clone(), self.repo.name().to_owned());
        blocking(move || {
            if !existed {
                let mut new_labels = labels.clone();
                new_labels.insert(source.0.clone(), source.1.clone());
                let written = content
                    .writer(&ctx, &reference, size, Some(digest.clone()))
                    .and_then(|mut w| {
                        if w.status()?.offset != 0 {
                            w.truncate()?;
                        }
                        w.write(&body)?;
                        w.commit(size, Some(digest.clone()), new_labels)
                    });
                match written {
                    Ok(_) => return Ok(()),
                    Err(e) if e.is(ErrorKind::AlreadyExists) => {}
                    Err(e) => return Err(e.context(format!("storing {digest}"))),
                }
            }
            ensure_labels(content.as_ref(), &ctx, &digest, labels, Some(&source))
        })
        .await?;
        if !existed {
            self.emit(desc, BlobState::Done, desc.size);
        }
        Ok(())
    }

    /// Puts blob `digest` under the pull's lease before the pull relies on it: a blob that
    /// is already stored (and so not written under the lease) could otherwise be collected
    /// while the pull still builds on it, e.g. what an earlier failed pull left.
    async fn hold_content(&self, digest: &Digest) -> Result<()> {
        let (leases, ctx, lease) = (
            Arc::clone(&self.t.leases),
            self.ctx.clone(),
            self.lease.clone(),
        );
        let resource = Resource {
            id: digest.to_string(),
            kind: "content".to_owned(),
        };
        blocking(move || leases.add_resource(&ctx, &lease, resource))
            .await
            .map_err(|e| e.context(format!("{}: leasing {digest}", self.name)))
    }

    /// Adds this repository to a stored blob's distribution-source label.
    async fn add_source(&self, digest: &Digest) -> Result<()> {
        let (content, ctx, digest) = (
            Arc::clone(&self.t.content),
            self.ctx.clone(),
            digest.clone(),
        );
        let source = (self.source_key.clone(), self.repo.name().to_owned());
        blocking(move || {
            ensure_labels(
                content.as_ref(),
                &ctx,
                &digest,
                Labels::new(),
                Some(&source),
            )
        })
        .await
    }

    /// Starts downloading a blob at `offset`: from the registry, else (a foreign or
    /// non-distributable layer the registry does not serve) from the `urls` its descriptor
    /// lists, in order, as the image spec says. Returns the response and whether it came from
    /// the registry.
    async fn open_blob(
        &self,
        desc: &Descriptor,
        offset: u64,
        urls: &[String],
        what: &str,
    ) -> Result<(reqwest::Response, bool)> {
        let registry_err = match self.repo.get_blob(&desc.digest, offset, what).await {
            Ok(resp) => return Ok((resp, true)),
            Err(e) if urls.is_empty() => return Err(e),
            Err(e) => e,
        };
        // Each error names `what` first; the combined message names it once.
        let prefix = format!("{what}: ");
        let reason = |e: &Error| {
            let text = e.to_string();
            text.strip_prefix(&prefix).unwrap_or(&text).to_owned()
        };
        let mut tried = vec![reason(&registry_err)];
        for url in urls {
            match self.repo.get_url(url, offset, what).await {
                Ok(resp) => {
                    tracing::debug!(url, digest = %desc.digest, "fetching a layer from its URL");
                    return Ok((resp, false));
                }
                Err(e) => tried.push(reason(&e)),
            }
        }
        Err(Error::new(
            registry_err.kind(),
            format!(
                "{what}: neither the registry nor the layer's {} URL(s) could serve it: {}",
                urls.len(),
                tried.join("; ")
            ),
        ))
    }

    /// Streams one blob into the content store, resuming its ingest; returns its digest once
    /// committed (or found already there).
    async fn fetch_blob(
        &self,
        desc: Descriptor,
        kind: BlobKind,
        urls: Vec<String>,
    ) -> Result<Digest> {
        let kind = kind.as_str();
        let what = format!("{}: {kind} {}", self.name, desc.digest);
        let size = desc.size;
        self.hold_content(&desc.digest).await?;
        let opened = {
            let (content, ctx) = (Arc::clone(&self.t.content), self.ctx.clone());
            let reference = format!("{kind}-{}", desc.digest);
            let digest = desc.digest.clone();
            blocking(move || {
                let mut w = content.writer(&ctx, &reference, size, Some(digest))?;
                let mut offset = w.status()?.offset;
                if offset > size {
                    w.truncate()?;
                    offset = 0;
                }
                Ok((w, offset))
            })
            .await
        };
        let (mut writer, mut offset) = match opened {
            Ok(opened) => opened,
            Err(e) if e.is(ErrorKind::AlreadyExists) => {
                if urls.is_empty() {
                    self.add_source(&desc.digest).await?;
                }
                self.emit(&desc, BlobState::Exists, size);
                return Ok(desc.digest);
            }
            Err(e) => return Err(e.context(&what)),
        };
        self.emit(&desc, BlobState::Transferring, offset);
        // Blobs from a layer's own URLs are not in the registry: no source label says they are.
        let mut from_registry = true;
        if offset < size {
            let (resp, registry) = self.open_blob(&desc, offset, &urls, &what).await?;
            from_registry = registry;
            if offset > 0 && resp.status() != StatusCode::PARTIAL_CONTENT {
                // The registry ignored the range and sends everything: start over.
                writer = blocking(move || writer.truncate().map(|()| writer)).await?;
                offset = 0;
            }
            let mut stream = resp.bytes_stream();
            let mut buf = BytesMut::with_capacity(FLUSH_SIZE);
            let mut failure = None;
            loop {
                match stream.next().await {
                    Some(Ok(chunk)) => {
                        if offset + (buf.len() + chunk.len()) as u64 > size {
                            blocking(move || writer.truncate()).await?;
                            return Err(Error::data_loss(format!(
                                "{what}: the registry sent more than the {size} bytes the \
                                 descriptor says"
                            )));
                        }
                        buf.extend_from_slice(&chunk);
                        if buf.len() >= FLUSH_SIZE {
                            let data = buf.split().freeze();
                            offset += data.len() as u64;
                            writer = write_chunk(writer, data).await?;
                            self.emit(&desc, BlobState::Transferring, offset);
                        }
                    }
                    Some(Err(e)) => {
                        failure = Some(
                            Error::unavailable(format!(
                                "{what}: download interrupted at {} of {size} bytes",
                                offset + buf.len() as u64
                            ))
                            .with_source(e),
                        );
                        break;
                    }
                    None => break,
                }
            }
            if !buf.is_empty() {
                // Kept even on failure: a later pull resumes after it.
                let data = buf.split().freeze();
                offset += data.len() as u64;
                writer = write_chunk(writer, data).await?;
                self.emit(&desc, BlobState::Transferring, offset);
            }
            if let Some(e) = failure {
                return Err(e);
            }
        }
        if offset < size {
            return Err(Error::data_loss(format!(
                "{what}: the registry ended the blob after {offset} of {size} bytes"
            )));
        }
        let labels = if from_registry {
            Labels::from([(self.source_key.clone(), self.repo.name().to_owned())])
        } else {
            Labels::new()
        };
        let digest = desc.digest.clone();
        let committed = blocking(move || {
            let got = writer.digest();
            if got != digest {
                // These bytes can never become the blob: a resume must not build on them.
                writer.truncate()?;
                return Err(Error::data_loss(format!(
                    "digest mismatch: expected {digest}, the registry sent {got}"
                )));
            }
            writer.commit(size, Some(digest), labels)
        })
        .await;
        match committed {
            Ok(_) => {}
            Err(e) if e.is(ErrorKind::AlreadyExists) => {
                if from_registry {
                    self.add_source(&desc.digest).await?;
                }
            }
            Err(e) => return Err(e.context(&what)),
        }
        self.emit(&desc, BlobState::Done, size);
        Ok(desc.digest)
    }

    /// Unpacks a manifest's layers in order, each as soon as it is fetched; labels the config
    /// with the top snapshot.
    async fn unpack(
        &self,
        plan: &Plan,
        fetched: watch::Receiver<Fetched>,
        snapshotter: &str,
    ) -> Result<()> {
        let m = &plan.manifest;
        let what = format!("{}: unpacking {}", self.name, plan.descriptor.digest);
        wait_fetched(fetched.clone(), &m.config.digest).await?;
        let config = {
            let (content, ctx, digest) = (
                Arc::clone(&self.t.content),
                self.ctx.clone(),
                m.config.digest.clone(),
            );
            blocking(move || read_blob(content.as_ref(), &ctx, &digest, MAX_MANIFEST_SIZE)).await?
        };
        let diff_ids = parse_diff_ids(&config, &format!("{what}: config {}", m.config.digest))?;
        if diff_ids.len() != m.layers.len() {
            return Err(Error::invalid_argument(format!(
                "{what}: the config lists {} diff_ids but the manifest has {} layers",
                diff_ids.len(),
                m.layers.len()
            )));
        }
        if let Some(bad) = m
            .layers
            .iter()
            .find(|l| !is_layer_media_type(&l.media_type))
        {
            return Err(Error::not_implemented(format!(
                "{what}: layer {} has media type {:?}, which cannot be unpacked",
                bad.digest, bad.media_type
            )));
        }
        let chains = chain_ids(&diff_ids);
        for (i, layer) in m.layers.iter().enumerate() {
            wait_fetched(fetched.clone(), &layer.digest).await?;
            self.emit(layer, BlobState::Unpacking, 0);
            let step = UnpackStep {
                leases: Arc::clone(&self.t.leases),
                lease: self.lease.clone(),
                t_snapshots: Arc::clone(&self.t.snapshots),
                applier: Arc::clone(&self.t.applier),
                content: Arc::clone(&self.t.content),
                ctx: self.ctx.clone(),
                snapshotter: snapshotter.to_owned(),
                layer: layer.clone(),
                diff_id: diff_ids[i].clone(),
                chain: chains[i].clone(),
                parent: i.checked_sub(1).map(|p| chains[p].clone()),
            };
            blocking(move || step.run())
                .await
                .map_err(|e| e.context(format!("{what}: layer {i} ({})", layer.digest)))?;
            self.emit(layer, BlobState::Unpacked, layer.size);
        }
        if let Some(top) = chains.last() {
            let (content, ctx, digest) = (
                Arc::clone(&self.t.content),
                self.ctx.clone(),
                m.config.digest.clone(),
            );
            let labels = Labels::from([(
                format!("{LABEL_GC_REF_SNAPSHOT}.{snapshotter}"),
                top.to_string(),
            )]);
            blocking(move || ensure_labels(content.as_ref(), &ctx, &digest, labels, None))
                .await
                .map_err(|e| e.context(format!("{what}: labelling the config")))?;
        }
        Ok(())
    }
}

async fn write_chunk(mut writer: Box<dyn Writer>, data: Bytes) -> Result<Box<dyn Writer>> {
    blocking(move || writer.write(&data).map(|()| writer)).await
}

/// Waits until `digest` is committed; fails if fetching ended without it.
async fn wait_fetched(mut rx: watch::Receiver<Fetched>, digest: &Digest) -> Result<()> {
    let present = {
        let state = rx
            .wait_for(|f| f.finished || f.done.contains(digest))
            .await
            .map_err(|_| Error::internal(format!("fetching ended before {digest} arrived")))?;
        state.done.contains(digest)
    };
    if present {
        Ok(())
    } else {
        Err(Error::internal(format!("{digest} was never fetched")))
    }
}

/// Applying one layer: everything synchronous, on the blocking pool.
struct UnpackStep {
    leases: Arc<dyn LeaseManager>,
    lease: String,
    t_snapshots: Arc<dyn berth_core::snapshots::SnapshotStore>,
    applier: Arc<dyn berth_core::diff::Applier>,
    content: Arc<dyn ContentStore>,
    ctx: RequestContext,
    snapshotter: String,
    layer: Descriptor,
    diff_id: Digest,
    chain: Digest,
    parent: Option<Digest>,
}

impl UnpackStep {
    fn run(self) -> Result<()> {
        let sn = self.snapshotter.as_str();
        let chain = self.chain.as_str();
        let snapshots = self.t_snapshots.as_ref();
        // Held before it is looked at, as blobs are (see `hold_content`).
        self.leases.add_resource(
            &self.ctx,
            &self.lease,
            Resource {
                id: chain.to_owned(),
                kind: format!("snapshots/{sn}"),
            },
        )?;
        match snapshots.stat(&self.ctx, sn, chain) {
            Ok(_) => return self.label_layer(),
            Err(e) if e.is(ErrorKind::NotFound) => {}
            Err(e) => return Err(e),
        }
        let parent = self.parent.as_ref().map(Digest::as_str);
        let mut prepared = None;
        for _ in 0..3 {
            let key = format!("extract-{} {chain}", unique_suffix());
            match snapshots.prepare(&self.ctx, sn, &key, parent, Labels::new()) {
                Ok(mounts) => {
                    prepared = Some((key, mounts));
                    break;
                }
                Err(e) if e.is(ErrorKind::AlreadyExists) => {
                    // Someone else committed this layer meanwhile, or the key clashed.
                    if snapshots.stat(&self.ctx, sn, chain).is_ok() {
                        return self.label_layer();
                    }
                }
                Err(e) => return Err(e.context(format!("preparing snapshot for {chain}"))),
            }
        }
        let Some((key, mounts)) = prepared else {
            return Err(Error::unavailable(format!(
                "preparing snapshot for {chain}: every extraction key was taken"
            )));
        };
        let discard = |e: Error| {
            if let Err(re) = snapshots.remove(&self.ctx, sn, &key) {
                tracing::warn!(error = %re, key, "unpack: removing a failed extraction");
            }
            e
        };
        let applied = self
            .applier
            .apply(&self.ctx, &self.layer, &mounts)
            .map_err(|e| discard(e.context("applying the layer")))?;
        if applied.digest != self.diff_id {
            return Err(discard(Error::data_loss(format!(
                "the layer's uncompressed digest is {}, but the config says {}",
                applied.digest, self.diff_id
            ))));
        }
        match snapshots.commit(&self.ctx, sn, chain, &key, Labels::new()) {
            Ok(()) => {}
            Err(e) if e.is(ErrorKind::AlreadyExists) => {
                discard(e);
            }
            Err(e) => return Err(discard(e.context(format!("committing snapshot {chain}")))),
        }
        self.label_layer()
    }

    fn label_layer(&self) -> Result<()> {
        let labels = Labels::from([(LABEL_UNCOMPRESSED.to_owned(), self.diff_id.to_string())]);
        ensure_labels(
            self.content.as_ref(),
            &self.ctx,
            &self.layer.digest,
            labels,
            None,
        )
        .map_err(|e| e.context(format!("labelling layer {}", self.layer.digest)))
    }
}

/// Sets `labels` on a stored blob (and adds `source`'s repository to its distribution-source
/// list), updating only the keys that change.
fn ensure_labels(
    content: &dyn ContentStore,
    ctx: &RequestContext,
    digest: &Digest,
    mut labels: Labels,
    source: Option<&(String, String)>,
) -> Result<()> {
    let info = content.info(ctx, digest)?;
    if let Some((key, repo)) = source {
        let value = append_source(info.labels.get(key).map(String::as_str), repo);
        labels.insert(key.clone(), value);
    }
    let paths: Vec<String> = labels
        .iter()
        .filter(|(k, v)| info.labels.get(*k) != Some(*v))
        .map(|(k, _)| format!("labels.{k}"))
        .collect();
    if paths.is_empty() {
        return Ok(());
    }
    let mut update = info;
    update.labels = labels;
    content.update(ctx, update, &paths).map(drop)
}
