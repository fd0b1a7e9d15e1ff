//! Push: walk a local image's tree, upload (or mount) the blobs the registry lacks, then put
//! the manifests, the root last.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use berth_core::content::ReaderAt;
use berth_core::diff::Descriptor;
use berth_core::images::Image;
use berth_core::reference::Reference;
use berth_core::transfer::{BlobState, Progress, ProgressSink, PushRequest};
use berth_core::{Digest, Error, ErrorKind, RequestContext, Result};
use bytes::Bytes;
use futures::StreamExt as _;

use crate::client::{MountOutcome, Repository};
use crate::oci::{
    MAX_MANIFEST_SIZE, ManifestKind, classify, is_non_distributable, match_score, parse_index,
    parse_manifest, source_label_key, source_repos,
};
use crate::{RegistryTransfer, blocking, read_blob, read_full};

/// The piece of a blob read from the store at a time for a streamed PUT.
const READ_SIZE: u64 = 1 << 20;

pub(crate) async fn push(
    t: &RegistryTransfer,
    ctx: &RequestContext,
    req: PushRequest,
    progress: ProgressSink,
) -> Result<Image> {
    let image = {
        let (images, ctx, name) = (Arc::clone(&t.images), ctx.clone(), req.image.clone());
        blocking(move || images.get(&ctx, &name)).await?
    };
    let target = if req.reference.is_empty() {
        image.name.as_str()
    } else {
        req.reference.as_str()
    };
    let reference = Reference::parse(target)?;
    if let Some(d) = &reference.digest
        && *d != image.target.digest
    {
        return Err(Error::invalid_argument(format!(
            "pushing {} as {reference}: the image's digest is {}",
            req.image, image.target.digest
        )));
    }
    let pusher = Pusher {
        t,
        ctx: ctx.clone(),
        repo: t
            .client
            .repository(&reference, req.credentials.clone(), true),
        source_key: source_label_key(reference.hostname()),
        name: reference.to_string(),
        progress: &progress,
    };
    let root = image.target.clone();
    let (manifests, blobs) = pusher.walk(&root, &req).await?;
    for desc in &blobs {
        pusher.emit(desc, BlobState::Waiting, 0);
    }
    let uploads = blobs.into_iter().map(|desc| pusher.push_blob(desc));
    let mut uploads =
        futures::stream::iter(uploads).buffer_unordered(t.options.max_concurrent_uploads);
    while let Some(done) = uploads.next().await {
        done?;
    }
    drop(uploads);
    // Children before parents: a registry may check that what a manifest names exists.
    for (desc, body) in manifests.into_iter().rev() {
        let object = if desc.digest == root.digest {
            reference.object()
        } else {
            desc.digest.to_string()
        };
        let what = format!("{}: putting manifest {}", pusher.name, desc.digest);
        pusher.emit(&desc, BlobState::Transferring, 0);
        pusher
            .repo
            .put_manifest(&object, &desc.media_type, body, &what)
            .await?;
        pusher.emit(&desc, BlobState::Done, desc.size);
    }
    let pushed = Image::new(reference.to_string(), root);
    (progress)(Progress::Done {
        image: pushed.clone(),
    });
    Ok(pushed)
}

struct Pusher<'a> {
    t: &'a RegistryTransfer,
    ctx: RequestContext,
    repo: Repository,
    source_key: String,
    name: String,
    progress: &'a ProgressSink,
}

impl Pusher<'_> {
    fn emit(&self, descriptor: &Descriptor, state: BlobState, offset: u64) {
        (self.progress)(Progress::Blob {
            descriptor: descriptor.clone(),
            state,
            offset,
        });
    }

    async fn read_small(&self, digest: &Digest) -> Result<Vec<u8>> {
        let (content, ctx, digest) = (
            Arc::clone(&self.t.content),
            self.ctx.clone(),
            digest.clone(),
        );
        blocking(move || read_blob(content.as_ref(), &ctx, &digest, MAX_MANIFEST_SIZE)).await
    }

    async fn present(&self, digest: &Digest) -> Result<bool> {
        let (content, ctx, digest) = (
            Arc::clone(&self.t.content),
            self.ctx.clone(),
            digest.clone(),
        );
        blocking(move || match content.info(&ctx, &digest) {
            Ok(_) => Ok(true),
            Err(e) if e.is(ErrorKind::NotFound) => Ok(false),
            Err(e) => Err(e),
        })
        .await
    }

    /// The manifests to put (root first) with their bytes, and the config and layer blobs.
    async fn walk(
        &self,
        root: &Descriptor,
        req: &PushRequest,
    ) -> Result<(Vec<(Descriptor, Bytes)>, Vec<Descriptor>)> {
        let mut manifests = Vec::new();
        let mut blobs = Vec::new();
        let mut seen = HashSet::new();
        let mut queue = VecDeque::from([(root.clone(), 0usize)]);
        while let Some((desc, depth)) = queue.pop_front() {
            let what = format!("{}: {} {}", self.name, desc.media_type, desc.digest);
            let kind = classify(&desc.media_type, &what)?;
            let body = self
                .read_small(&desc.digest)
                .await
                .map_err(|e| e.context(&what))?;
            match kind {
                ManifestKind::Index => {
                    if depth >= 4 {
                        return Err(Error::failed_precondition(format!(
                            "{what}: indexes nest too deep"
                        )));
                    }
                    let index = parse_index(&body, &desc.media_type, &what)?;
                    for entry in &index.manifests {
                        let selected = req.platforms.is_empty()
                            || entry.platform.as_ref().is_some_and(|p| {
                                req.platforms.iter().any(|w| match_score(w, p).is_some())
                            });
                        if !selected {
                            continue;
                        }
                        if self.present(&entry.descriptor.digest).await? {
                            queue.push_back((entry.descriptor.clone(), depth + 1));
                        } else if !req.platforms.is_empty() {
                            return Err(Error::not_found(format!(
                                "{what}: manifest {} for {} is not in the content store",
                                entry.descriptor.digest,
                                entry
                                    .platform
                                    .as_ref()
                                    .map_or_else(String::new, ToString::to_string)
                            )));
                        }
                        // Without a platform filter, only the platforms the store holds go.
                    }
                }
                ManifestKind::Manifest => {
                    let manifest = parse_manifest(&body, &desc.media_type, &what)?;
                    for blob in std::iter::once(&manifest.config).chain(&manifest.layers) {
                        // Non-distributable layers stay where their URLs say: never uploaded,
                        // as Docker and containerd push them.
                        if is_non_distributable(&blob.media_type) {
                            continue;
                        }
                        if !self.present(&blob.digest).await? {
                            return Err(Error::not_found(format!(
                                "{what}: blob {} is not in the content store",
                                blob.digest
                            )));
                        }
                        if seen.insert(blob.digest.clone()) {
                            blobs.push(blob.clone());
                        }
                    }
                }
            }
            manifests.push((desc, Bytes::from(body)));
        }
        Ok((manifests, blobs))
    }

    async fn push_blob(&self, desc: Descriptor) -> Result<()> {
        let what = format!("{}: pushing blob {}", self.name, desc.digest);
        if self.repo.blob_exists(&desc.digest, &what).await? {
            self.emit(&desc, BlobState::Exists, desc.size);
            return Ok(());
        }
        let info = {
            let (content, ctx, digest) = (
                Arc::clone(&self.t.content),
                self.ctx.clone(),
                desc.digest.clone(),
            );
            blocking(move || content.info(&ctx, &digest)).await?
        };
        let mut location = None;
        if let Some(sources) = info.labels.get(&self.source_key) {
            for from in source_repos(sources).filter(|r| *r != self.repo.name()) {
                match self.repo.mount_blob(&desc.digest, from, &what).await {
                    Ok(MountOutcome::Mounted) => {
                        self.emit(&desc, BlobState::Mounted, desc.size);
                        return Ok(());
                    }
                    Ok(MountOutcome::Upload(loc)) => {
                        location = Some(loc);
                        break;
                    }
                    // No access to the source, or a registry without mounts: upload instead.
                    Err(e) => tracing::debug!(error = %e, from, "push: mount refused"),
                }
            }
        }
        let location = match location {
            Some(l) => l,
            None => self.repo.start_upload(&what).await?,
        };
        self.emit(&desc, BlobState::Transferring, 0);
        let reader: Arc<dyn ReaderAt> = {
            let (content, ctx, digest) = (
                Arc::clone(&self.t.content),
                self.ctx.clone(),
                desc.digest.clone(),
            );
            Arc::from(blocking(move || content.reader(&ctx, &digest)).await?)
        };
        if reader.size() != desc.size {
            return Err(Error::data_loss(format!(
                "{what}: the stored blob is {} bytes, the manifest says {}",
                reader.size(),
                desc.size
            )));
        }
        if desc.size <= self.t.options.monolithic_upload_limit {
            let body = reqwest::Body::wrap_stream(blob_stream(reader, desc.size));
            self.repo
                .put_upload(&location, &desc.digest, desc.size, body, &what)
                .await?;
        } else {
            let chunk = self.t.options.upload_chunk_size;
            let mut location = location;
            let mut offset = 0;
            while offset < desc.size {
                let n = chunk.min(desc.size - offset);
                let data = read_range(Arc::clone(&reader), offset, n).await?;
                location = self
                    .repo
                    .patch_upload(&location, offset, data, &what)
                    .await?;
                offset += n;
                self.emit(&desc, BlobState::Transferring, offset);
            }
            self.repo
                .finish_upload(&location, &desc.digest, &what)
                .await?;
        }
        self.emit(&desc, BlobState::Done, desc.size);
        Ok(())
    }
}

async fn read_range(reader: Arc<dyn ReaderAt>, offset: u64, len: u64) -> Result<Bytes> {
    blocking(move || {
        let len = usize::try_from(len)
            .map_err(|_| Error::invalid_argument("upload chunk larger than memory"))?;
        let mut buf = vec![0u8; len];
        read_full(reader.as_ref(), &mut buf, offset)?;
        Ok(Bytes::from(buf))
    })
    .await
}

/// The blob's bytes as a body stream, read from the store a piece at a time.
fn blob_stream(
    reader: Arc<dyn ReaderAt>,
    size: u64,
) -> impl futures::Stream<Item = Result<Bytes>> + Send + 'static {
    futures::stream::try_unfold(0u64, move |offset| {
        let reader = Arc::clone(&reader);
        async move {
            if offset >= size {
                return Ok(None);
            }
            let n = READ_SIZE.min(size - offset);
            let data = read_range(reader, offset, n).await?;
            Ok(Some((data, offset + n)))
        }
    })
}
