//! The Content service end to end: berth-core's content-store conformance suite through gRPC
//! against a live berthd, an ingest resumed across a SIGKILL, and the exact status codes bad
//! requests get.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use berth_client::IngestSource;
use berth_core::labels::Labels;
use berth_core::{Digest, ErrorKind};
use berth_integration::remote::RemoteContentStore;
use berth_integration::{Daemon, random_bytes};
use berth_proto::containerd::services::content::v1 as pb;
use berth_proto::containerd::services::content::v1::content_client::ContentClient;
use berth_proto::containerd::services::tasks::v1 as tasks_pb;
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Endpoint, Uri};
use tonic::{Code, Status, Streaming};

const MIB: usize = 1 << 20;

/// Runs one conformance case against a fresh daemon.
fn run_case(case: fn(&dyn berth_core::content::ContentStore)) {
    let daemon = Daemon::start();
    let store = RemoteContentStore::connect(&daemon.socket()).unwrap();
    case(&store);
    // The store (and any stream it holds) goes before the daemon it talks to.
    drop(store);
    drop(daemon);
}

/// One test per conformance case, so they run in parallel and fail by name.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod conformance {
            $(
                #[test]
                fn $name() {
                    super::run_case(berth_core::testsuite::$name);
                }
            )*

            /// The cases above, to check none of the suite's is missing.
            pub const COVERED: &[&str] = &[$(stringify!($name)),*];
        }
    };
}

conformance!(
    ingest_and_read,
    empty_blob,
    commit_without_expected,
    resume_after_drop,
    truncate_restarts,
    abort_discards,
    concurrent_refs,
    wrong_digest,
    wrong_size,
    already_exists,
    labels_update,
    list_filters,
    statuses,
    namespace_isolation,
    delete,
);

#[test]
fn every_conformance_case_runs() {
    let suite: Vec<&str> = berth_core::testsuite::CONTENT_STORE_CASES
        .iter()
        .map(|(name, _)| *name)
        .collect();
    assert_eq!(
        suite,
        conformance::COVERED,
        "add the suite's new cases to conformance!()"
    );
}

/// A raw Write stream, driven request by request so each status code stays visible.
struct RawWrite {
    tx: mpsc::Sender<pb::WriteContentRequest>,
    replies: Streaming<pb::WriteContentResponse>,
}

impl RawWrite {
    /// Opens a stream whose first message is `first`; returns the stream and the first reply.
    async fn open(
        client: &berth_client::Client,
        first: pb::WriteContentRequest,
    ) -> (Self, Result<pb::WriteContentResponse, Status>) {
        let (tx, rx) = mpsc::channel(4);
        tx.send(first).await.unwrap();
        let replies = client
            .rpc()
            .content()
            .write(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        let mut raw = Self { tx, replies };
        let reply = raw.reply().await;
        (raw, reply)
    }

    async fn reply(&mut self) -> Result<pb::WriteContentResponse, Status> {
        self.replies
            .message()
            .await
            .map(|m| m.expect("a reply, not the end of the stream"))
    }

    async fn send(
        &mut self,
        req: pb::WriteContentRequest,
    ) -> Result<pb::WriteContentResponse, Status> {
        // A send can fail only when the server already ended the stream; its status follows.
        let _ = self.tx.send(req).await;
        self.reply().await
    }

    /// Half-closes and waits for the server to end the stream (and release the ref).
    async fn close(self) {
        let RawWrite { tx, mut replies } = self;
        drop(tx);
        while let Ok(Some(_)) = replies.message().await {}
    }
}

fn stat(reference: &str, total: usize, expected: Option<&Digest>) -> pb::WriteContentRequest {
    pb::WriteContentRequest {
        action: pb::WriteAction::Stat as i32,
        r#ref: reference.to_owned(),
        total: total as i64,
        expected: expected.map(ToString::to_string).unwrap_or_default(),
        ..Default::default()
    }
}

fn write_at(offset: usize, data: &[u8]) -> pb::WriteContentRequest {
    pb::WriteContentRequest {
        action: pb::WriteAction::Write as i32,
        offset: offset as i64,
        data: data.to_vec(),
        ..Default::default()
    }
}

#[track_caller]
fn assert_status<T: std::fmt::Debug>(
    result: Result<T, Status>,
    code: Code,
    needles: &[&str],
) -> Status {
    let status = match result {
        Ok(v) => panic!("succeeded with {v:?}, want {code:?}"),
        Err(s) => s,
    };
    assert_eq!(status.code(), code, "{status:?}");
    for needle in needles {
        assert!(
            status.message().contains(needle),
            "message {:?} should mention {needle:?}",
            status.message()
        );
    }
    status
}

/// Reads from memory and records how many leading bytes the ingest skipped (resumed past).
struct CountingSource {
    data: std::io::Cursor<Vec<u8>>,
    skipped: Arc<AtomicU64>,
}

impl tokio::io::AsyncRead for CountingSource {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.data).poll_read(cx, buf)
    }
}

impl IngestSource for CountingSource {
    async fn skip(&mut self, n: u64) -> std::io::Result<()> {
        self.skipped.fetch_add(n, Ordering::SeqCst);
        self.data.set_position(self.data.position() + n);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_write_resumes_after_sigkill() {
    let mut d = Daemon::start();
    let client = d.client("default").await;
    let data = random_bytes(8 * MIB);
    let digest = Digest::of(&data);
    let reference = "resume-after-kill";

    let (mut raw, first) =
        RawWrite::open(&client, stat(reference, data.len(), Some(&digest))).await;
    assert_eq!(first.unwrap().offset, 0);
    for i in 0..3 {
        let reply = raw
            .send(write_at(i * MIB, &data[i * MIB..(i + 1) * MIB]))
            .await
            .unwrap();
        assert_eq!(reply.offset as usize, (i + 1) * MIB);
    }
    let st = client.content().status(reference).await.unwrap();
    assert_eq!(st.offset, 3 * MIB as u64);
    assert_eq!(st.total, data.len() as u64);

    d.kill9();
    drop(raw);
    d.restart();

    let client = d.client("default").await;
    let st = client.content().status(reference).await.unwrap();
    assert_eq!(
        st.offset,
        3 * MIB as u64,
        "the ingest's bytes survive SIGKILL"
    );
    assert_eq!(st.expected.as_ref(), Some(&digest));

    let skipped = Arc::new(AtomicU64::new(0));
    let source = CountingSource {
        data: std::io::Cursor::new(data.clone()),
        skipped: skipped.clone(),
    };
    let got = client
        .content()
        .ingest_source(
            reference,
            source,
            data.len() as u64,
            Some(&digest),
            Labels::new(),
        )
        .await
        .unwrap();
    assert_eq!(got, digest);
    assert_eq!(
        skipped.load(Ordering::SeqCst),
        3 * MIB as u64,
        "the ingest resumed at the server's offset instead of starting over"
    );
    assert_eq!(client.content().read_all(&digest).await.unwrap(), data);
    assert_eq!(
        client.content().info(&digest).await.unwrap().size,
        data.len() as u64
    );
    let err = client.content().status(reference).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");

    // The plain reader-based ingest resumes the same way (it reads and discards).
    let more = random_bytes(3 * MIB);
    let more_digest = Digest::of(&more);
    let (mut raw, _) = RawWrite::open(&client, stat("resume-2", more.len(), None)).await;
    raw.send(write_at(0, &more[..MIB])).await.unwrap();
    d.kill9();
    drop(raw);
    d.restart();
    let client = d.client("default").await;
    assert_eq!(
        client.content().status("resume-2").await.unwrap().offset,
        MIB as u64
    );
    let got = client
        .content()
        .ingest(
            "resume-2",
            &more[..],
            more.len() as u64,
            Some(&more_digest),
            Labels::new(),
        )
        .await
        .unwrap();
    assert_eq!(got, more_digest);
    assert_eq!(client.content().read_all(&more_digest).await.unwrap(), more);
}

#[tokio::test]
async fn malformed_digests_are_invalid_argument() {
    let d = Daemon::start();
    let client = d.client("default").await;
    let mut content = client.rpc().content();
    let bad = [
        ("sha256:xyz", "want 64 lower-case hex"),
        ("no-algorithm", "missing algorithm"),
        (
            "md5:d41d8cd98f00b204e9800998ecf8427e",
            "unsupported algorithm",
        ),
        (
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "want 64 lower-case hex",
        ),
        ("", "must not be empty"),
    ];
    for (digest, why) in bad {
        let needles: &[&str] = if digest.is_empty() {
            &[why]
        } else {
            &[digest, why]
        };
        let info = content
            .info(pb::InfoRequest {
                digest: digest.to_owned(),
            })
            .await;
        assert_status(info, Code::InvalidArgument, needles);
        let read = content
            .read(pb::ReadContentRequest {
                digest: digest.to_owned(),
                offset: 0,
                size: 0,
            })
            .await;
        assert_status(read.map(|_| ()), Code::InvalidArgument, needles);
        let delete = content
            .delete(pb::DeleteContentRequest {
                digest: digest.to_owned(),
            })
            .await;
        assert_status(delete, Code::InvalidArgument, needles);
    }
}

#[tokio::test]
async fn wrong_expected_digest_fails_commit_and_leaves_nothing() {
    let d = Daemon::start();
    let client = d.client("default").await;
    let data = b"the bytes actually sent".to_vec();
    let actual = Digest::of(&data);
    let wrong = Digest::of(b"what the client claimed");

    let (mut raw, first) = RawWrite::open(&client, stat("wrong-expected", data.len(), None)).await;
    first.unwrap();
    raw.send(write_at(0, &data)).await.unwrap();
    let commit = raw
        .send(pb::WriteContentRequest {
            action: pb::WriteAction::Commit as i32,
            total: data.len() as i64,
            offset: data.len() as i64,
            expected: wrong.to_string(),
            ..Default::default()
        })
        .await;
    assert_status(
        commit,
        Code::FailedPrecondition,
        &[actual.as_str(), wrong.as_str()],
    );
    raw.close().await;

    for digest in [&actual, &wrong] {
        let err = client.content().info(digest).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    }
    assert!(client.content().list(&[]).await.unwrap().is_empty());
    let left = client.content().statuses(&[]).await.unwrap();
    assert!(left.is_empty(), "no ingest is left behind: {left:?}");
    assert!(
        !d.root()
            .join("content/blobs/sha256")
            .join(actual.hex())
            .exists()
    );
}

/// A channel to the daemon that adds no headers at all.
async fn bare_content_client(d: &Daemon) -> ContentClient<tonic::transport::Channel> {
    let socket = d.socket();
    let channel = Endpoint::from_static("http://[::]:50051")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(socket).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await
        .unwrap();
    ContentClient::new(channel)
}

#[tokio::test]
async fn namespace_header_rules() {
    let d = Daemon::start();
    let client = d.client("default").await;
    let digest = client
        .content()
        .write_blob(b"in default", Labels::new())
        .await
        .unwrap();

    let mut bare = bare_content_client(&d).await;
    let missing = bare
        .info(pb::InfoRequest {
            digest: digest.to_string(),
        })
        .await;
    assert_status(
        missing,
        Code::FailedPrecondition,
        &["namespace is required"],
    );
    let missing = bare.list_statuses(pb::ListStatusesRequest::default()).await;
    assert_status(
        missing,
        Code::FailedPrecondition,
        &["namespace is required"],
    );

    for (ns, why) in [
        ("bad/name", "must match"),
        ("-leading", "must match"),
        ("trailing.", "must not end with a separator"),
        ("two..dots", "must match"),
        (&*"n".repeat(77), "greater than maximum length"),
    ] {
        let info = client
            .with_namespace(ns)
            .rpc()
            .content()
            .info(pb::InfoRequest {
                digest: digest.to_string(),
            })
            .await;
        assert_status(info, Code::InvalidArgument, &[ns, why]);
    }

    // A well-formed namespace nobody created holds nothing.
    let info = client
        .with_namespace("never-created")
        .rpc()
        .content()
        .info(pb::InfoRequest {
            digest: digest.to_string(),
        })
        .await;
    assert_status(info, Code::NotFound, &[digest.as_str()]);
    let listed = client
        .with_namespace("never-created")
        .content()
        .list(&[])
        .await
        .unwrap();
    assert!(listed.is_empty(), "{listed:?}");
}

#[tokio::test]
async fn second_writer_on_a_ref_is_unavailable() {
    let d = Daemon::start();
    let client = d.client("default").await;
    let (mut first, reply) = RawWrite::open(&client, stat("contended", 0, None)).await;
    reply.unwrap();
    first.send(write_at(0, b"first writer")).await.unwrap();

    let (second, reply) = RawWrite::open(&client, stat("contended", 0, None)).await;
    assert_status(reply, Code::Unavailable, &["contended"]);
    drop(second);

    // The same ref in another namespace is another ingest.
    let other = client.with_namespace("elsewhere");
    let (elsewhere, reply) = RawWrite::open(&other, stat("contended", 0, None)).await;
    assert_eq!(reply.unwrap().offset, 0);
    elsewhere.close().await;

    // Once the first writer is gone, the ref resumes where it stopped.
    first.close().await;
    let (third, reply) = RawWrite::open(&client, stat("contended", 0, None)).await;
    assert_eq!(reply.unwrap().offset, b"first writer".len() as i64);
    third.close().await;
}

#[tokio::test]
async fn read_ranges_and_write_offsets() {
    let d = Daemon::start();
    let client = d.client("default").await;
    let data = random_bytes(100);
    let digest = client
        .content()
        .write_blob(&data, Labels::new())
        .await
        .unwrap();
    let mut content = client.rpc().content();
    let read = |offset: i64, size: i64| pb::ReadContentRequest {
        digest: digest.to_string(),
        offset,
        size,
    };

    let past = content.read(read(101, 0)).await;
    assert_status(
        past.map(|_| ()),
        Code::OutOfRange,
        &["offset 101", "100 bytes"],
    );

    // Size past the end is clamped to the end.
    let mut stream = content.read(read(90, 50)).await.unwrap().into_inner();
    let mut got = Vec::new();
    while let Some(chunk) = stream.message().await.unwrap() {
        assert_eq!(chunk.offset as usize, 90 + got.len());
        got.extend_from_slice(&chunk.data);
    }
    assert_eq!(got, &data[90..]);
    assert_eq!(
        client.content().read_range(&digest, 10, 5).await.unwrap(),
        &data[10..15]
    );
    assert!(
        client
            .content()
            .read_range(&digest, 100, 0)
            .await
            .unwrap()
            .is_empty()
    );

    // A write must continue at the ingest's offset.
    let (mut raw, reply) = RawWrite::open(&client, stat("offsets", 0, None)).await;
    reply.unwrap();
    assert_eq!(
        raw.send(write_at(0, b"0123456789")).await.unwrap().offset,
        10
    );
    let wrong = raw.send(write_at(5, b"overlap")).await;
    assert_status(wrong, Code::OutOfRange, &["write offset 5", "offset 10"]);
    drop(raw);
    let wrong = {
        let (mut raw, reply) = RawWrite::open(&client, stat("offsets", 0, None)).await;
        assert_eq!(
            reply.unwrap().offset,
            10,
            "the failed write changed nothing"
        );
        raw.send(write_at(11, b"gap")).await
    };
    assert_status(wrong, Code::OutOfRange, &["write offset 11", "offset 10"]);
}

#[tokio::test]
async fn unimplemented_service_says_so() {
    let d = Daemon::start();
    let client = d.client("default").await;
    // Checkpoints are not built: Tasks.Checkpoint answers Unimplemented whether the Tasks
    // service is routed (it says so) or not (tonic says so for an unrouted service).
    let checkpointed = client
        .rpc()
        .tasks()
        .checkpoint(tasks_pb::CheckpointTaskRequest {
            container_id: "c".into(),
            ..Default::default()
        })
        .await;
    let status = checkpointed.unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    let err = berth_client::from_status(status);
    assert_eq!(err.kind(), ErrorKind::NotImplemented);
}

/// The adapter filters lists itself (parsed filters keep no text), so the server's own filtering
/// is checked here with the strings clients send.
#[tokio::test]
async fn list_filters_are_applied_by_the_server() {
    let d = Daemon::start();
    let client = d.client("default").await;
    let label = |pairs: &[(&str, &str)]| -> Labels {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    let content = client.content();
    let d1 = content
        .write_blob(b"one", label(&[("k", "v"), ("tier", "front")]))
        .await
        .unwrap();
    let d2 = content
        .write_blob(b"two", label(&[("k", "w")]))
        .await
        .unwrap();
    let d3 = content.write_blob(b"three", Labels::new()).await.unwrap();
    let list = |filters: Vec<String>| {
        let client = client.clone();
        async move {
            let mut got: Vec<Digest> = client
                .content()
                .list(&filters)
                .await
                .unwrap()
                .into_iter()
                .map(|i| i.digest)
                .collect();
            got.sort();
            got
        }
    };
    let sorted = |mut v: Vec<Digest>| {
        v.sort();
        v
    };
    let s = |f: &[&str]| f.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();

    assert_eq!(
        list(s(&[""])).await,
        sorted(vec![d1.clone(), d2.clone(), d3.clone()])
    );
    assert_eq!(list(s(&[&format!("digest=={d1}")])).await, vec![d1.clone()]);
    assert_eq!(list(s(&[r#"labels."k"==v"#])).await, vec![d1.clone()]);
    assert_eq!(
        list(s(&["labels.k"])).await,
        sorted(vec![d1.clone(), d2.clone()])
    );
    assert!(
        list(s(&["labels.tier==front,labels.k==w"]))
            .await
            .is_empty()
    );
    assert_eq!(
        list(s(&[&format!("digest=={d3}"), "labels.k==w"])).await,
        sorted(vec![d2.clone(), d3.clone()])
    );
    let bad = client
        .rpc()
        .content()
        .list(pb::ListContentRequest {
            filters: s(&["labels.k~=("]),
        })
        .await;
    assert_status(bad.map(|_| ()), Code::InvalidArgument, &["labels.k~=("]);

    for reference in ["status-a", "status-b", "other"] {
        let (raw, reply) = RawWrite::open(&client, stat(reference, 0, None)).await;
        reply.unwrap();
        raw.close().await;
    }
    let refs = |filters: Vec<String>| {
        let client = client.clone();
        async move {
            let mut got: Vec<String> = client
                .content()
                .statuses(&filters)
                .await
                .unwrap()
                .into_iter()
                .map(|s| s.reference)
                .collect();
            got.sort();
            got
        }
    };
    assert_eq!(refs(s(&["ref==status-b"])).await, ["status-b"]);
    assert_eq!(refs(s(&["ref~=^status-"])).await, ["status-a", "status-b"]);
    assert_eq!(refs(s(&[])).await, ["other", "status-a", "status-b"]);
}
