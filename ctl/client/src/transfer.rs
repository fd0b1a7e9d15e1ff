//! Transfer helpers: daemon-side pull and push with streamed progress
//! (`berth.services.transfer.v1.Transfer`).
//!
//! The daemon talks to the registry; the client only sends the request (with the credentials
//! it read from its docker-style config, see [`crate::auth`]) and follows the progress stream,
//! which ends with the resulting image. Under a slow reader the server coalesces a blob's
//! events of one state into the latest, so callers must not expect every offset (nor, when
//! the reader falls very far behind, every state) of a blob.

use berth_core::images::Image;
use berth_core::transfer::{BlobState, Credentials, Platform, Progress, PullRequest, PushRequest};
use berth_core::{Error, Result};
use berth_proto::berth::services::transfer::v1 as pb;
use berth_proto::containerd::types;
use pb::progress::Event;
use tonic::Streaming;

use crate::client::Client;
use crate::convert;
use crate::diff::descriptor;
use crate::error::from_status;
use crate::images::image;

impl Client {
    /// Transfer (registry pull and push) helpers.
    pub fn transfer(&self) -> Transfer<'_> {
        Transfer { client: self }
    }
}

/// Transfer helpers; see [`Client::transfer`].
#[derive(Debug, Clone, Copy)]
pub struct Transfer<'a> {
    client: &'a Client,
}

fn wire_platform(p: &Platform) -> types::Platform {
    types::Platform {
        os: p.os.clone(),
        architecture: p.architecture.clone(),
        variant: p.variant.clone(),
    }
}

fn wire_credentials(c: Option<&Credentials>) -> Option<pb::Credentials> {
    c.map(|c| pb::Credentials {
        username: c.username.clone(),
        secret: c.secret.clone(),
    })
}

/// A pull request for the wire.
pub fn wire_pull_request(req: &PullRequest) -> pb::PullRequest {
    pb::PullRequest {
        reference: req.reference.clone(),
        platforms: req.platforms.iter().map(wire_platform).collect(),
        all_platforms: req.all_platforms,
        unpack: req.unpack,
        snapshotter: req.snapshotter.clone(),
        credentials: wire_credentials(req.credentials.as_ref()),
        labels: convert::wire_labels(&req.labels),
    }
}

/// A push request for the wire.
pub fn wire_push_request(req: &PushRequest) -> pb::PushRequest {
    pb::PushRequest {
        image: req.image.clone(),
        reference: req.reference.clone(),
        platforms: req.platforms.iter().map(wire_platform).collect(),
        credentials: wire_credentials(req.credentials.as_ref()),
    }
}

/// A blob state from the wire; `None` for unspecified or newer states this client does not know.
pub fn blob_state(state: i32) -> Option<BlobState> {
    Some(match pb::BlobState::try_from(state).ok()? {
        pb::BlobState::Unspecified => return None,
        pb::BlobState::Waiting => BlobState::Waiting,
        pb::BlobState::Transferring => BlobState::Transferring,
        pb::BlobState::Exists => BlobState::Exists,
        pb::BlobState::Mounted => BlobState::Mounted,
        pb::BlobState::Done => BlobState::Done,
        pb::BlobState::Unpacking => BlobState::Unpacking,
        pb::BlobState::Unpacked => BlobState::Unpacked,
    })
}

/// A progress event from the wire. `Ok(None)` for events this client cannot show (an empty
/// event, an unknown blob state): progress is advisory, so they are skipped, not fatal. A
/// malformed descriptor or image is the server's bug.
pub fn progress(p: pb::Progress) -> Result<Option<Progress>> {
    let missing =
        |what: &str| Error::internal(format!("server sent a progress event without {what}"));
    Ok(Some(match p.event {
        None => return Ok(None),
        Some(Event::Resolved(r)) => Progress::Resolved {
            root: descriptor(r.root.ok_or_else(|| missing("a root descriptor"))?)?,
            name: r.name,
        },
        Some(Event::Blob(b)) => {
            let Some(state) = blob_state(b.state) else {
                tracing::debug!(
                    state = b.state,
                    "skipping progress with an unknown blob state"
                );
                return Ok(None);
            };
            Progress::Blob {
                descriptor: descriptor(b.descriptor.ok_or_else(|| missing("a descriptor"))?)?,
                state,
                offset: b.offset,
            }
        }
        Some(Event::Done(d)) => Progress::Done {
            image: image(d.image.ok_or_else(|| missing("an image"))?)?,
        },
    }))
}

/// Hands every event of `stream` to `on_progress` and returns the image of its `done` event.
async fn follow(
    mut stream: Streaming<pb::Progress>,
    what: &str,
    mut on_progress: impl FnMut(Progress),
) -> Result<Image> {
    let mut done = None;
    while let Some(msg) = stream.message().await.map_err(from_status)? {
        let Some(event) = progress(msg)? else {
            continue;
        };
        if let Progress::Done { image } = &event {
            done = Some(image.clone());
        }
        on_progress(event);
    }
    done.ok_or_else(|| {
        Error::internal(format!(
            "{what}: server ended the progress stream without a result"
        ))
    })
}

impl Transfer<'_> {
    /// Pulls `req.reference` into the client's namespace, calling `on_progress` for each event
    /// as it arrives (the last one is [`Progress::Done`]), and returns the stored image.
    pub async fn pull(self, req: &PullRequest, on_progress: impl FnMut(Progress)) -> Result<Image> {
        let what = format!("pull {:?}", req.reference);
        let wire = wire_pull_request(req);
        self.client
            .call(|| what.clone(), async {
                let stream = self
                    .client
                    .rpc()
                    .transfer()
                    .pull(wire)
                    .await
                    .map_err(from_status)?
                    .into_inner();
                follow(stream, &what, on_progress).await
            })
            .await
    }

    /// Pushes local image `req.image` (to `req.reference`, or its own name when empty), calling
    /// `on_progress` for each event, and returns the pushed image.
    pub async fn push(self, req: &PushRequest, on_progress: impl FnMut(Progress)) -> Result<Image> {
        let what = format!("push {:?}", req.image);
        let wire = wire_push_request(req);
        self.client
            .call(|| what.clone(), async {
                let stream = self
                    .client
                    .rpc()
                    .transfer()
                    .push(wire)
                    .await
                    .map_err(from_status)?
                    .into_inner();
                follow(stream, &what, on_progress).await
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use berth_core::diff::Descriptor;
    use berth_core::{Digest, ErrorKind};

    use super::*;

    #[test]
    fn requests_carry_everything() {
        let mut req = PullRequest {
            reference: "busybox".into(),
            platforms: vec![Platform::parse("linux/arm/v7").unwrap()],
            all_platforms: true,
            unpack: true,
            snapshotter: "native".into(),
            credentials: Some(Credentials {
                username: "u".into(),
                secret: "p".into(),
            }),
            ..PullRequest::default()
        };
        req.labels.insert("a".into(), "b".into());
        let wire = wire_pull_request(&req);
        assert_eq!(wire.platforms[0].variant, "v7");
        assert!(wire.all_platforms && wire.unpack);
        assert_eq!(wire.snapshotter, "native");
        assert_eq!(wire.credentials.unwrap().secret, "p");
        assert_eq!(wire.labels.get("a").map(String::as_str), Some("b"));

        let push = wire_push_request(&PushRequest {
            image: "x:1".into(),
            reference: "reg.example/x:1".into(),
            ..PushRequest::default()
        });
        assert_eq!(push.reference, "reg.example/x:1");
        assert_eq!(push.credentials, None);
    }

    #[test]
    fn events_from_the_wire() {
        let d = types::Descriptor {
            media_type: "m".into(),
            digest: Digest::of(b"l").to_string(),
            size: 10,
            annotations: Default::default(),
        };
        let blob = |state: i32, d: Option<types::Descriptor>| pb::Progress {
            event: Some(Event::Blob(pb::BlobProgress {
                descriptor: d,
                state,
                offset: 4,
            })),
        };
        assert_eq!(
            progress(blob(pb::BlobState::Unpacking as i32, Some(d.clone()))).unwrap(),
            Some(Progress::Blob {
                descriptor: Descriptor::new("m", Digest::of(b"l"), 10),
                state: BlobState::Unpacking,
                offset: 4,
            })
        );
        assert_eq!(progress(blob(0, Some(d.clone()))).unwrap(), None);
        assert_eq!(progress(blob(99, Some(d.clone()))).unwrap(), None);
        assert_eq!(progress(pb::Progress { event: None }).unwrap(), None);
        assert_eq!(
            progress(blob(1, None)).unwrap_err().kind(),
            ErrorKind::Internal
        );
        let bad_digest = types::Descriptor {
            digest: "nope".into(),
            ..d
        };
        assert_eq!(
            progress(blob(1, Some(bad_digest))).unwrap_err().kind(),
            ErrorKind::Internal
        );
        let done = pb::Progress {
            event: Some(Event::Done(pb::Done { image: None })),
        };
        assert_eq!(progress(done).unwrap_err().kind(), ErrorKind::Internal);
        for state in 1..=7 {
            assert!(blob_state(state).is_some(), "{state}");
        }
    }
}
