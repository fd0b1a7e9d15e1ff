//! The Transfer service end to end over a real unix socket: berth-client's `transfer()` against
//! the adapter, with a scripted fake [`Transfer`] standing in for the registry code.

// Test helpers outside #[test] fns are still test code: panicking on a broken invariant is the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_client::Client;
use berth_core::diff::Descriptor;
use berth_core::images::Image;
use berth_core::transfer::{
    BlobState, BoxFuture, Credentials, Platform, Progress, ProgressSink, PullRequest, PushRequest,
    Transfer,
};
use berth_core::{Digest, Error, ErrorKind, RequestContext, Result};
use berth_grpc::transfer::TransferService;
use berth_proto::berth::services::transfer::v1::transfer_server::TransferServer;
use tokio::sync::{mpsc, oneshot};

/// What the fake does with a request.
enum Script {
    /// Emits each event, waiting for the client to have seen it before the next, then returns.
    Lockstep(Vec<Progress>, Result<Image>),
    /// Emits all events at once (without yielding), then returns.
    Burst(Vec<Progress>, Result<Image>),
    /// Emits the events, then never finishes; dropping the future reports on the channel.
    Hang(Vec<Progress>, oneshot::Sender<()>),
}

#[derive(Default)]
struct Seen {
    namespace: Option<String>,
    pull: Option<PullRequest>,
    push: Option<PushRequest>,
}

struct Fake {
    script: Mutex<Option<Script>>,
    /// Client-side acknowledgements, for [`Script::Lockstep`].
    acks: tokio::sync::Mutex<mpsc::UnboundedReceiver<()>>,
    seen: Mutex<Seen>,
}

/// Sends on its channel when dropped: proof that the transfer future was dropped.
struct DropProbe(Option<oneshot::Sender<()>>);

impl Drop for DropProbe {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

impl Fake {
    fn new(script: Script) -> (Arc<Self>, mpsc::UnboundedSender<()>) {
        let (ack_tx, ack_rx) = mpsc::unbounded_channel();
        let fake = Arc::new(Self {
            script: Mutex::new(Some(script)),
            acks: tokio::sync::Mutex::new(ack_rx),
            seen: Mutex::new(Seen::default()),
        });
        (fake, ack_tx)
    }

    async fn play(&self, progress: ProgressSink) -> Result<Image> {
        let script = self
            .script
            .lock()
            .unwrap()
            .take()
            .expect("one call per fake");
        match script {
            Script::Lockstep(events, result) => {
                let mut acks = self.acks.lock().await;
                for event in events {
                    progress(event);
                    acks.recv().await.expect("client acknowledges");
                }
                result
            }
            Script::Burst(events, result) => {
                for event in events {
                    progress(event);
                }
                result
            }
            Script::Hang(events, dropped) => {
                let _probe = DropProbe(Some(dropped));
                for event in events {
                    progress(event);
                }
                std::future::pending().await
            }
        }
    }
}

impl Transfer for Fake {
    fn pull<'a>(
        &'a self,
        ctx: &'a RequestContext,
        req: PullRequest,
        progress: ProgressSink,
    ) -> BoxFuture<'a, Result<Image>> {
        {
            let mut seen = self.seen.lock().unwrap();
            seen.namespace = Some(ctx.namespace.as_str().to_owned());
            seen.pull = Some(req);
        }
        Box::pin(self.play(progress))
    }

    fn push<'a>(
        &'a self,
        ctx: &'a RequestContext,
        req: PushRequest,
        progress: ProgressSink,
    ) -> BoxFuture<'a, Result<Image>> {
        {
            let mut seen = self.seen.lock().unwrap();
            seen.namespace = Some(ctx.namespace.as_str().to_owned());
            seen.push = Some(req);
        }
        Box::pin(self.play(progress))
    }
}

/// A server for `fake` on a socket in `dir`, and a client in namespace `ns1`.
async fn serve(dir: &tempfile::TempDir, fake: Arc<Fake>) -> Client {
    let socket = dir.path().join("berthd.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TransferServer::new(TransferService::new(fake)))
            .serve_with_incoming(incoming),
    );
    Client::connect(&socket, "ns1").await.unwrap()
}

fn desc(name: &[u8], size: u64) -> Descriptor {
    Descriptor::new(
        "application/vnd.oci.image.layer.v1.tar+gzip",
        Digest::of(name),
        size,
    )
}

fn blob(name: &[u8], state: BlobState, offset: u64) -> Progress {
    Progress::Blob {
        descriptor: desc(name, 100),
        state,
        offset,
    }
}

fn image(name: &str) -> Image {
    Image::new(
        name,
        Descriptor::new(
            berth_core::images::MEDIA_TYPE_OCI_MANIFEST,
            Digest::of(b"manifest"),
            321,
        ),
    )
}

#[tokio::test]
async fn pull_delivers_every_event_in_order_and_returns_the_image() {
    let resolved = Progress::Resolved {
        name: "docker.io/library/busybox:latest".into(),
        root: image("x").target,
    };
    let events = vec![
        resolved.clone(),
        blob(b"l1", BlobState::Waiting, 0),
        blob(b"l1", BlobState::Transferring, 40),
        blob(b"l1", BlobState::Done, 100),
        blob(b"l1", BlobState::Unpacking, 0),
        blob(b"l1", BlobState::Unpacked, 100),
    ];
    let want_image = image("docker.io/library/busybox:latest");
    let (fake, acks) = Fake::new(Script::Lockstep(events.clone(), Ok(want_image.clone())));
    let dir = tempfile::tempdir().unwrap();
    let client = serve(&dir, fake.clone()).await;

    let mut req = PullRequest {
        reference: "busybox".into(),
        platforms: vec![Platform::parse("linux/arm64/v8").unwrap()],
        all_platforms: true,
        unpack: true,
        snapshotter: "native".into(),
        credentials: Some(Credentials {
            username: "me".into(),
            secret: "hunter2".into(),
        }),
        ..PullRequest::default()
    };
    req.labels.insert("a".into(), "b".into());
    let mut got = Vec::new();
    let image = client
        .transfer()
        .pull(&req, |event| {
            got.push(event);
            let _ = acks.send(());
        })
        .await
        .unwrap();

    assert_eq!(image.name, want_image.name);
    assert_eq!(image.target, want_image.target);
    let (last, before) = got.split_last().unwrap();
    assert_eq!(before, events.as_slice(), "every event, in order");
    assert!(matches!(last, Progress::Done { image } if image.target == want_image.target));

    let seen = fake.seen.lock().unwrap();
    assert_eq!(seen.namespace.as_deref(), Some("ns1"));
    let sent = seen.pull.as_ref().unwrap();
    assert_eq!(sent.reference, "busybox");
    assert_eq!(sent.platforms, req.platforms);
    assert!(sent.all_platforms && sent.unpack);
    assert_eq!(sent.snapshotter, "native");
    assert_eq!(sent.credentials, req.credentials);
    assert_eq!(sent.labels, req.labels);
}

#[tokio::test]
async fn push_streams_the_same_way() {
    let events = vec![
        blob(b"cfg", BlobState::Exists, 100),
        blob(b"l1", BlobState::Mounted, 100),
        blob(b"m", BlobState::Done, 100),
    ];
    let pushed = image("reg.example/team/app:1");
    let (fake, acks) = Fake::new(Script::Lockstep(events.clone(), Ok(pushed.clone())));
    let dir = tempfile::tempdir().unwrap();
    let client = serve(&dir, fake.clone()).await;
    let req = PushRequest {
        image: "app:1".into(),
        reference: "reg.example/team/app:1".into(),
        platforms: vec![Platform::parse("linux/amd64").unwrap()],
        credentials: Some(Credentials {
            username: String::new(),
            secret: "identity-token".into(),
        }),
    };
    let mut got = Vec::new();
    let image = client
        .transfer()
        .push(&req, |e| {
            got.push(e);
            let _ = acks.send(());
        })
        .await
        .unwrap();
    assert_eq!(image.name, pushed.name);
    assert_eq!(&got[..3], events.as_slice());
    assert_eq!(got.len(), 4);
    let seen = fake.seen.lock().unwrap();
    let sent = seen.push.as_ref().unwrap();
    assert_eq!(sent.image, "app:1");
    assert_eq!(sent.reference, "reg.example/team/app:1");
    assert_eq!(sent.credentials, req.credentials);
}

#[tokio::test]
async fn a_burst_of_blob_events_is_coalesced_to_the_latest() {
    let mut events = Vec::new();
    for offset in 0..10_000 {
        events.push(blob(b"big", BlobState::Transferring, offset));
    }
    events.push(blob(b"big", BlobState::Done, 100));
    events.push(blob(b"small", BlobState::Exists, 100));
    let (fake, _acks) = Fake::new(Script::Burst(events, Ok(image("x:1"))));
    let dir = tempfile::tempdir().unwrap();
    let client = serve(&dir, fake).await;
    let mut got = Vec::new();
    client
        .transfer()
        .pull(
            &PullRequest {
                reference: "x:1".into(),
                ..PullRequest::default()
            },
            |e| got.push(e),
        )
        .await
        .unwrap();
    assert!(got.len() < 100, "{} events reached the client", got.len());
    let latest = |name: &[u8]| {
        got.iter().rev().find_map(|e| match e {
            Progress::Blob {
                descriptor,
                state,
                offset,
            } if descriptor.digest == Digest::of(name) => Some((*state, *offset)),
            _ => None,
        })
    };
    assert_eq!(latest(b"big"), Some((BlobState::Done, 100)));
    assert_eq!(latest(b"small"), Some((BlobState::Exists, 100)));
    assert!(matches!(got.last(), Some(Progress::Done { .. })));
}

#[tokio::test]
async fn errors_end_the_stream_with_their_class() {
    let cases = [
        Error::not_found("reference \"nope:1\": manifest unknown"),
        Error::new(ErrorKind::PermissionDenied, "registry said unauthorized"),
        Error::unavailable("registry ghcr.io unreachable"),
        Error::internal("boom"),
    ];
    for err in cases {
        let (kind, message) = (err.kind(), err.message().to_owned());
        let events = vec![blob(b"l", BlobState::Transferring, 1)];
        let (fake, _acks) = Fake::new(Script::Burst(events, Err(err)));
        let dir = tempfile::tempdir().unwrap();
        let client = serve(&dir, fake).await;
        let mut got = Vec::new();
        let e = client
            .transfer()
            .pull(
                &PullRequest {
                    reference: "nope:1".into(),
                    ..PullRequest::default()
                },
                |e| got.push(e),
            )
            .await
            .unwrap_err();
        assert_eq!(e.kind(), kind, "{e}");
        assert_eq!(e.message(), message);
        assert_eq!(
            got,
            vec![blob(b"l", BlobState::Transferring, 1)],
            "progress before the error still arrives, and no done"
        );
    }
}

#[tokio::test]
async fn bad_requests_are_refused_before_any_transfer() {
    let (fake, _acks) = Fake::new(Script::Burst(Vec::new(), Ok(image("x"))));
    let dir = tempfile::tempdir().unwrap();
    let client = serve(&dir, fake.clone()).await;
    let err = client
        .transfer()
        .pull(&PullRequest::default(), |_| {})
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    let err = client
        .transfer()
        .push(&PushRequest::default(), |_| {})
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    let no_namespace = client.with_namespace("");
    let err = no_namespace
        .transfer()
        .pull(
            &PullRequest {
                reference: "x".into(),
                ..PullRequest::default()
            },
            |_| {},
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    let seen = fake.seen.lock().unwrap();
    assert!(seen.pull.is_none() && seen.push.is_none());
}

#[tokio::test]
async fn a_client_that_goes_away_cancels_the_transfer() {
    let (dropped_tx, dropped_rx) = oneshot::channel();
    let events = vec![blob(b"l", BlobState::Transferring, 10)];
    let (fake, _acks) = Fake::new(Script::Hang(events, dropped_tx));
    let dir = tempfile::tempdir().unwrap();
    let client = serve(&dir, fake).await;

    let (seen_tx, seen_rx) = oneshot::channel();
    let mut seen_tx = Some(seen_tx);
    let req = PullRequest {
        reference: "slow:1".into(),
        ..PullRequest::default()
    };
    let pull = client.transfer().pull(&req, |_| {
        if let Some(tx) = seen_tx.take() {
            let _ = tx.send(());
        }
    });
    tokio::select! {
        result = pull => panic!("a hanging transfer finished: {result:?}"),
        seen = seen_rx => seen.unwrap(),
    }
    // The pull future (and with it the response stream) is gone; the server must notice the
    // reset stream and drop the transfer.
    tokio::time::timeout(Duration::from_secs(10), dropped_rx)
        .await
        .expect("the transfer future is dropped once the client goes away")
        .unwrap();
}
