//! `containerd.services.diff.v1.Diff` over an [`Applier`] and a [`Comparer`].

use std::sync::Arc;

use berth_core::diff::{Applier, Comparer, Descriptor, DiffOptions};
use berth_core::mount::Mount;
use berth_proto::containerd::services::diff::v1 as pb;
use berth_proto::containerd::types;
use pb::diff_server::Diff;
use tonic::{Request, Response, Status};

use crate::context::request_context;
use crate::convert;
use crate::{blocking, error::to_status};

/// The Diff service.
pub struct DiffService {
    applier: Arc<dyn Applier>,
    comparer: Arc<dyn Comparer>,
}

impl DiffService {
    /// A service applying with `applier` and comparing with `comparer`.
    pub fn new(applier: Arc<dyn Applier>, comparer: Arc<dyn Comparer>) -> Self {
        Self { applier, comparer }
    }
}

/// A core mount from the wire.
pub fn mount(m: types::Mount) -> Mount {
    Mount {
        kind: m.r#type,
        source: m.source,
        target: m.target,
        options: m.options,
    }
}

/// A core descriptor from the wire.
pub fn descriptor(d: types::Descriptor) -> Result<Descriptor, Status> {
    Ok(Descriptor {
        media_type: d.media_type,
        digest: convert::digest(&d.digest).map_err(to_status)?,
        size: convert::size(d.size, "descriptor size").map_err(to_status)?,
        annotations: convert::labels(d.annotations),
    })
}

/// A descriptor for the wire.
pub fn wire_descriptor(d: &Descriptor) -> types::Descriptor {
    types::Descriptor {
        media_type: d.media_type.clone(),
        digest: d.digest.to_string(),
        size: d.size as i64,
        annotations: convert::wire_labels(&d.annotations),
    }
}

#[tonic::async_trait]
impl Diff for DiffService {
    async fn apply(
        &self,
        req: Request<pb::ApplyRequest>,
    ) -> Result<Response<pb::ApplyResponse>, Status> {
        let ctx = request_context(&req)?;
        let req = req.into_inner();
        if !req.payloads.is_empty() {
            return Err(Status::unimplemented(
                "apply payloads (stream processors such as decryption) are not supported",
            ));
        }
        let desc = descriptor(
            req.diff
                .ok_or_else(|| Status::invalid_argument("apply needs the layer descriptor"))?,
        )?;
        tracing::Span::current().record("id", desc.digest.as_str());
        let mounts: Vec<Mount> = req.mounts.into_iter().map(mount).collect();
        let applier = self.applier.clone();
        let applied = blocking(move || applier.apply(&ctx, &desc, &mounts)).await?;
        Ok(Response::new(pb::ApplyResponse {
            applied: Some(wire_descriptor(&applied)),
        }))
    }

    async fn diff(
        &self,
        req: Request<pb::DiffRequest>,
    ) -> Result<Response<pb::DiffResponse>, Status> {
        let ctx = request_context(&req)?;
        let req = req.into_inner();
        let lower: Vec<Mount> = req.left.into_iter().map(mount).collect();
        let upper: Vec<Mount> = req.right.into_iter().map(mount).collect();
        let opts = DiffOptions {
            media_type: Some(req.media_type).filter(|m| !m.is_empty()),
            reference: Some(req.r#ref).filter(|r| !r.is_empty()),
            labels: convert::labels(req.labels),
        };
        let comparer = self.comparer.clone();
        let diff = blocking(move || comparer.compare(&ctx, &lower, &upper, opts)).await?;
        Ok(Response::new(pb::DiffResponse {
            diff: Some(wire_descriptor(&diff)),
        }))
    }
}
