//! `containerd.services.images.v1.Images` over an [`ImageStore`].

use std::sync::Arc;

use berth_core::diff::Descriptor;
use berth_core::filters::Filters;
use berth_core::images::{Image, ImageStore, mask_replaces_target};
use berth_core::{Digest, Error};
use berth_proto::containerd::services::images::v1 as pb;
use berth_proto::containerd::types;
use pb::images_server::Images;
use tonic::{Request, Response, Status};

use crate::context::request_context;
use crate::convert::{self, timestamp};
use crate::diff::{descriptor, wire_descriptor};
use crate::{blocking, error::to_status, inline};

/// The Images service.
pub struct ImagesService {
    images: Arc<dyn ImageStore>,
}

impl ImagesService {
    /// A service over `images`.
    pub fn new(images: Arc<dyn ImageStore>) -> Self {
        Self { images }
    }
}

/// An image for the wire.
pub fn wire_image(image: &Image) -> pb::Image {
    pb::Image {
        name: image.name.clone(),
        labels: convert::wire_labels(&image.labels),
        target: Some(wire_descriptor(&image.target)),
        created_at: Some(timestamp(image.created_at)),
        updated_at: Some(timestamp(image.updated_at)),
    }
}

/// An image from the wire. Its times are ignored (the store sets them; Go clients send year 1).
///
/// With `full_target`, the target must be a real descriptor. Without it (an update whose mask
/// neither is empty nor names `target`), the store reads at most the target's annotations, and
/// clients such as `ctr images label` send a zero descriptor: that becomes a placeholder
/// carrying only the annotations.
pub fn image(image: Option<pb::Image>, full_target: bool) -> Result<Image, Status> {
    let image = image.ok_or_else(|| Status::invalid_argument("image must be set"))?;
    let target = match image.target {
        Some(target) if full_target => descriptor(target)?,
        None if full_target => {
            return Err(to_status(Error::invalid_argument(format!(
                "image {:?}: target must be set",
                image.name
            ))));
        }
        other => placeholder_target(other.unwrap_or_default()),
    };
    Ok(Image {
        name: image.name,
        target,
        labels: convert::labels(image.labels),
        created_at: std::time::UNIX_EPOCH,
        updated_at: std::time::UNIX_EPOCH,
    })
}

/// A target the store will not read except for its annotations.
fn placeholder_target(wire: types::Descriptor) -> Descriptor {
    Descriptor {
        media_type: wire.media_type,
        digest: Digest::parse(&wire.digest).unwrap_or_else(|_| Digest::of(b"")),
        size: u64::try_from(wire.size).unwrap_or(0),
        annotations: convert::labels(wire.annotations),
    }
}

#[tonic::async_trait]
impl Images for ImagesService {
    async fn get(
        &self,
        req: Request<pb::GetImageRequest>,
    ) -> Result<Response<pb::GetImageResponse>, Status> {
        let ctx = request_context(&req)?;
        let name = req.into_inner().name;
        tracing::Span::current().record("id", name.as_str());
        let image = inline(|| self.images.get(&ctx, &name))?;
        // ctr dereferences `image` without a nil check: it is always set.
        Ok(Response::new(pb::GetImageResponse {
            image: Some(wire_image(&image)),
        }))
    }

    async fn list(
        &self,
        req: Request<pb::ListImagesRequest>,
    ) -> Result<Response<pb::ListImagesResponse>, Status> {
        let ctx = request_context(&req)?;
        let filters = Filters::parse(&req.get_ref().filters).map_err(to_status)?;
        let images = self.images.clone();
        let list = blocking(move || images.list(&ctx, &filters)).await?;
        Ok(Response::new(pb::ListImagesResponse {
            images: list.iter().map(wire_image).collect(),
        }))
    }

    async fn create(
        &self,
        req: Request<pb::CreateImageRequest>,
    ) -> Result<Response<pb::CreateImageResponse>, Status> {
        let ctx = request_context(&req)?;
        let img = image(req.into_inner().image, true)?;
        tracing::Span::current().record("id", img.name.as_str());
        let images = self.images.clone();
        let created = blocking(move || images.create(&ctx, img)).await?;
        Ok(Response::new(pb::CreateImageResponse {
            image: Some(wire_image(&created)),
        }))
    }

    async fn update(
        &self,
        req: Request<pb::UpdateImageRequest>,
    ) -> Result<Response<pb::UpdateImageResponse>, Status> {
        let ctx = request_context(&req)?;
        let req = req.into_inner();
        let paths = convert::mask_paths(req.update_mask);
        let img = image(req.image, mask_replaces_target(&paths))?;
        tracing::Span::current().record("id", img.name.as_str());
        let images = self.images.clone();
        let updated = blocking(move || images.update(&ctx, img, &paths)).await?;
        Ok(Response::new(pb::UpdateImageResponse {
            image: Some(wire_image(&updated)),
        }))
    }

    async fn delete(&self, req: Request<pb::DeleteImageRequest>) -> Result<Response<()>, Status> {
        let ctx = request_context(&req)?;
        let req = req.into_inner();
        tracing::Span::current().record("id", req.name.as_str());
        let images = self.images.clone();
        blocking(move || images.delete(&ctx, &req.name, req.sync)).await?;
        Ok(Response::new(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire_target(digest: &str) -> types::Descriptor {
        types::Descriptor {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: digest.into(),
            size: 10,
            annotations: [("a".to_owned(), "b".to_owned())].into(),
        }
    }

    #[test]
    fn wire_images_tolerate_go_zero_values() {
        let d = Digest::of(b"m");
        let go_zero = prost_types::Timestamp {
            seconds: -62_135_596_800,
            nanos: 0,
        };
        let wire = pb::Image {
            name: "busybox:latest".into(),
            labels: [("k".to_owned(), "v".to_owned())].into(),
            target: Some(wire_target(d.as_str())),
            created_at: Some(go_zero),
            updated_at: Some(go_zero),
        };
        let img = image(Some(wire.clone()), true).unwrap();
        assert_eq!(img.target.digest, d);
        assert_eq!(img.target.size, 10);
        assert_eq!(img.labels.get("k").map(String::as_str), Some("v"));
        let back = wire_image(&img);
        assert_eq!(back.name, wire.name);
        assert_eq!(back.target, wire.target);
        assert_eq!(back.created_at.map(|t| t.seconds), Some(0));

        // `ctr images label` sends a zero target under a labels-only mask.
        let label_only = pb::Image {
            target: Some(types::Descriptor::default()),
            ..wire.clone()
        };
        assert!(image(Some(label_only.clone()), false).is_ok());
        assert_eq!(
            image(Some(label_only), true).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        let annotations_only = pb::Image {
            target: Some(types::Descriptor {
                digest: String::new(),
                ..wire_target("")
            }),
            ..wire.clone()
        };
        let img = image(Some(annotations_only), false).unwrap();
        assert_eq!(
            img.target.annotations.get("a").map(String::as_str),
            Some("b")
        );

        let no_target = pb::Image {
            target: None,
            ..wire
        };
        assert_eq!(
            image(Some(no_target), true).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            image(None, false).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }
}
