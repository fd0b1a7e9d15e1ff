//! Image helpers: the namespace's image records (`containerd.services.images.v1.Images`).

use berth_core::diff::Descriptor;
use berth_core::images::Image;
use berth_core::labels::Labels;
use berth_core::{Error, ErrorKind, Result};
use berth_proto::containerd::services::images::v1 as pb;
use berth_proto::containerd::types;

use crate::client::Client;
use crate::convert;
use crate::error::from_status;

impl Client {
    /// Image record helpers.
    pub fn images(&self) -> Images<'_> {
        Images { client: self }
    }
}

/// Image record helpers; see [`Client::images`].
#[derive(Debug, Clone, Copy)]
pub struct Images<'a> {
    client: &'a Client,
}

/// An image from the wire; a missing or malformed target is the server's bug.
pub fn image(image: pb::Image) -> Result<Image> {
    let target = image.target.ok_or_else(|| {
        Error::internal(format!(
            "server sent image {:?} without a target",
            image.name
        ))
    })?;
    Ok(Image {
        target: Descriptor {
            digest: convert::digest(&target.digest, "an image target digest")?,
            size: convert::size(target.size, "image target size")?,
            media_type: target.media_type,
            annotations: convert::labels(target.annotations),
        },
        labels: convert::labels(image.labels),
        created_at: convert::system_time(image.created_at.as_ref()),
        updated_at: convert::system_time(image.updated_at.as_ref()),
        name: image.name,
    })
}

/// An image for the wire. Times are not sent: the server sets them.
pub fn wire_image(image: &Image) -> Result<pb::Image> {
    let size = i64::try_from(image.target.size).map_err(|_| {
        Error::invalid_argument(format!(
            "image {:?}: target size {} too large",
            image.name, image.target.size
        ))
    })?;
    Ok(pb::Image {
        name: image.name.clone(),
        labels: convert::wire_labels(&image.labels),
        target: Some(types::Descriptor {
            media_type: image.target.media_type.clone(),
            digest: image.target.digest.to_string(),
            size,
            annotations: convert::wire_labels(&image.target.annotations),
        }),
        created_at: None,
        updated_at: None,
    })
}

fn missing(name: &str) -> Error {
    Error::internal(format!("server sent no image for {name:?}"))
}

impl Images<'_> {
    /// Image `name`; NotFound when absent.
    pub async fn get(&self, name: &str) -> Result<Image> {
        self.client
            .call(|| format!("get image {name:?}"), async {
                let resp = self
                    .client
                    .rpc()
                    .images()
                    .get(pb::GetImageRequest {
                        name: name.to_owned(),
                    })
                    .await
                    .map_err(from_status)?
                    .into_inner();
                image(resp.image.ok_or_else(|| missing(name))?)
            })
            .await
    }

    /// The images matching any of `filters` (all when empty), e.g. `name~=busybox`,
    /// `target.digest==sha256:…`, `labels."k"==v`.
    pub async fn list(&self, filters: &[String]) -> Result<Vec<Image>> {
        self.client
            .call(|| "list images".to_owned(), async {
                let resp = self
                    .client
                    .rpc()
                    .images()
                    .list(pb::ListImagesRequest {
                        filters: filters.to_vec(),
                    })
                    .await
                    .map_err(from_status)?
                    .into_inner();
                resp.images.into_iter().map(image).collect()
            })
            .await
    }

    /// Records `image`; AlreadyExists when the name is taken.
    pub async fn create(&self, new: &Image) -> Result<Image> {
        let wire = wire_image(new)?;
        self.client
            .call(|| format!("create image {:?}", new.name), async {
                let resp = self
                    .client
                    .rpc()
                    .images()
                    .create(pb::CreateImageRequest { image: Some(wire) })
                    .await
                    .map_err(from_status)?
                    .into_inner();
                image(resp.image.ok_or_else(|| missing(&new.name))?)
            })
            .await
    }

    /// Changes image `change.name` under a field mask: `labels`, `labels.<key>`, `target`,
    /// `annotations`, `annotations.<key>`; an empty mask replaces labels and target.
    pub async fn update(&self, change: &Image, paths: &[String]) -> Result<Image> {
        let wire = wire_image(change)?;
        self.client
            .call(|| format!("update image {:?}", change.name), async {
                let resp = self
                    .client
                    .rpc()
                    .images()
                    .update(pb::UpdateImageRequest {
                        image: Some(wire),
                        update_mask: Some(prost_types::FieldMask {
                            paths: paths.to_vec(),
                        }),
                    })
                    .await
                    .map_err(from_status)?
                    .into_inner();
                image(resp.image.ok_or_else(|| missing(&change.name))?)
            })
            .await
    }

    /// Sets each label in `labels` on image `name`, removing those whose value is empty; other
    /// labels and the target are kept.
    pub async fn update_labels(&self, name: &str, labels: &Labels) -> Result<Image> {
        let current = self.get(name).await?;
        let paths: Vec<String> = labels.keys().map(|k| format!("labels.{k}")).collect();
        let change = Image {
            labels: labels.clone(),
            ..current
        };
        self.update(&change, &paths).await
    }

    /// Points `image.name` at `image`'s target and labels, creating the record when absent, as
    /// `ctr images pull` does: Create, and on AlreadyExists an Update without a mask (retrying
    /// the Create if the image vanished in between).
    pub async fn create_or_update(&self, image: &Image) -> Result<Image> {
        loop {
            match self.create(image).await {
                Err(e) if e.is(ErrorKind::AlreadyExists) => {}
                other => return other,
            }
            match self.update(image, &[]).await {
                Err(e) if e.is(ErrorKind::NotFound) => continue,
                other => return other,
            }
        }
    }

    /// Removes image `name`; with `sync`, the server collects garbage before answering, so the
    /// blobs only it held are gone when this returns.
    pub async fn delete(&self, name: &str, sync: bool) -> Result<()> {
        self.client
            .call(|| format!("delete image {name:?}"), async {
                self.client
                    .rpc()
                    .images()
                    .delete(pb::DeleteImageRequest {
                        name: name.to_owned(),
                        sync,
                    })
                    .await
                    .map_err(from_status)?;
                Ok(())
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use berth_core::Digest;

    use super::*;

    #[test]
    fn round_trip_and_server_bugs() {
        let mut img = Image::new(
            "docker.io/library/busybox:latest",
            Descriptor::new(
                berth_core::images::MEDIA_TYPE_OCI_MANIFEST,
                Digest::of(b"m"),
                42,
            ),
        );
        img.labels.insert("a".into(), "b".into());
        img.target.annotations.insert("x".into(), "y".into());
        let wire = wire_image(&img).unwrap();
        assert_eq!(wire.created_at, None, "times are the server's");
        let back = image(wire.clone()).unwrap();
        assert_eq!(back, img);

        let no_target = pb::Image {
            target: None,
            ..wire.clone()
        };
        assert_eq!(image(no_target).unwrap_err().kind(), ErrorKind::Internal);
        let mut bad = wire;
        if let Some(t) = bad.target.as_mut() {
            t.size = -1;
        }
        assert_eq!(image(bad).unwrap_err().kind(), ErrorKind::Internal);

        img.target.size = u64::MAX;
        assert_eq!(
            wire_image(&img).unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
    }
}
