//! The client against an in-process fake Content service on a real unix socket: connection,
//! headers, error mapping and the Write protocol (fresh, chunked, already-present, resumed,
//! locked) as containerd's server behaves. End-to-end tests against berthd live in
//! /work/main/integration.

// Test helpers outside #[test] fns may panic too: a broken fixture should fail the test.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_client::Client;
use berth_client::content::Unseekable;
use berth_core::labels::Labels;
use berth_core::{Digest, ErrorKind};
use berth_proto::containerd::services::content::v1 as pb;
use pb::content_server::{Content, ContentServer};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, UnixListenerStream};
use tonic::{Request, Response, Status, Streaming};

/// One Write message as the fake server saw it.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    action: pb::WriteAction,
    reference: String,
    offset: i64,
    len: usize,
    total: i64,
    expected: String,
}

#[derive(Default)]
struct State {
    blobs: HashMap<String, (Vec<u8>, Labels)>,
    ingests: HashMap<String, Vec<u8>>,
    /// How many more Write streams to refuse as locked.
    locked_for: u32,
    writes: Vec<Seen>,
    /// (namespace, lease) of every request.
    headers: Vec<(String, Option<String>)>,
    update_masks: Vec<Vec<String>>,
}

#[derive(Clone, Default)]
struct Fake(Arc<Mutex<State>>);

impl Fake {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap()
    }

    fn record<T>(&self, req: &Request<T>) {
        let get = |k: &str| {
            req.metadata()
                .get(k)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        let ns = get("containerd-namespace").unwrap_or_default();
        let lease = get("containerd-lease");
        self.state().headers.push((ns, lease));
    }

    fn writes(&self) -> Vec<Seen> {
        self.state().writes.clone()
    }
}

type Stream<T> = ReceiverStream<Result<T, Status>>;

fn reply(action: i32, data: &[u8]) -> pb::WriteContentResponse {
    pb::WriteContentResponse {
        action,
        offset: data.len() as i64,
        digest: Digest::of(data).to_string(),
        ..Default::default()
    }
}

/// The per-stream state of a Write.
#[derive(Default)]
struct WriteCtx {
    reference: String,
    total: i64,
    expected: String,
}

impl Fake {
    /// containerd's server logic for one Write stream, over the in-memory state.
    async fn serve_write(
        &self,
        mut requests: Streaming<pb::WriteContentRequest>,
        tx: &mpsc::Sender<Result<pb::WriteContentResponse, Status>>,
    ) -> Result<(), Status> {
        let mut ctx = WriteCtx::default();
        while let Some(req) = requests.message().await? {
            let (resp, done) = self.step(&mut ctx, req)?;
            tx.send(Ok(resp)).await.ok();
            if done {
                break;
            }
        }
        Ok(())
    }

    /// Handles one message; `true` when the stream is finished (committed).
    fn step(
        &self,
        ctx: &mut WriteCtx,
        req: pb::WriteContentRequest,
    ) -> Result<(pb::WriteContentResponse, bool), Status> {
        let action = pb::WriteAction::try_from(req.action).unwrap();
        let mut st = self.state();
        if ctx.reference.is_empty() {
            if req.r#ref.is_empty() {
                return Err(Status::invalid_argument(
                    "first message must have a reference",
                ));
            }
            ctx.reference = req.r#ref.clone();
            if st.locked_for > 0 {
                st.locked_for -= 1;
                return Err(Status::unavailable(format!(
                    "ref {} locked: unavailable",
                    ctx.reference
                )));
            }
        }
        if req.total != 0 {
            ctx.total = req.total;
        }
        if !req.expected.is_empty() {
            ctx.expected = req.expected.clone();
        }
        st.writes.push(Seen {
            action,
            reference: req.r#ref.clone(),
            offset: req.offset,
            len: req.data.len(),
            total: req.total,
            expected: req.expected.clone(),
        });
        if !ctx.expected.is_empty() && st.blobs.contains_key(&ctx.expected) {
            st.ingests.remove(&ctx.reference);
            return Err(Status::already_exists(format!(
                "content {}: already exists",
                ctx.expected
            )));
        }
        let data = st.ingests.entry(ctx.reference.clone()).or_default();
        if action == pb::WriteAction::Stat {
            return Ok((reply(req.action, data), false));
        }
        if req.offset > 0 && req.offset != data.len() as i64 {
            return Err(Status::out_of_range("bad offset"));
        }
        if req.offset == 0 && !req.data.is_empty() {
            data.clear();
        }
        data.extend_from_slice(&req.data);
        let resp = reply(req.action, data);
        if action != pb::WriteAction::Commit {
            return Ok((resp, false));
        }
        let data = st.ingests.remove(&ctx.reference).unwrap_or_default();
        let digest = Digest::of(&data).to_string();
        if ctx.total > 0 && ctx.total != data.len() as i64 {
            return Err(Status::failed_precondition(
                "unexpected commit size: failed precondition",
            ));
        }
        if !ctx.expected.is_empty() && ctx.expected != digest {
            return Err(Status::failed_precondition(
                "unexpected commit digest: failed precondition",
            ));
        }
        st.blobs
            .insert(digest, (data, req.labels.into_iter().collect()));
        Ok((resp, true))
    }
}

#[tonic::async_trait]
impl Content for Fake {
    async fn info(
        &self,
        req: Request<pb::InfoRequest>,
    ) -> Result<Response<pb::InfoResponse>, Status> {
        self.record(&req);
        let digest = req.into_inner().digest;
        let st = self.state();
        let (data, labels) = st
            .blobs
            .get(&digest)
            .ok_or_else(|| Status::not_found(format!("content digest {digest}: not found")))?;
        Ok(Response::new(pb::InfoResponse {
            info: Some(pb::Info {
                digest: digest.clone(),
                size: data.len() as i64,
                // What a Go server sends for a zero time.
                created_at: Some(prost_types::Timestamp {
                    seconds: -62_135_596_800,
                    nanos: 0,
                }),
                updated_at: None,
                labels: labels.clone().into_iter().collect(),
            }),
        }))
    }

    async fn update(
        &self,
        req: Request<pb::UpdateRequest>,
    ) -> Result<Response<pb::UpdateResponse>, Status> {
        self.record(&req);
        let req = req.into_inner();
        let info = req.info.unwrap_or_default();
        let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
        let mut st = self.state();
        st.update_masks.push(paths.clone());
        let (data, labels) = st
            .blobs
            .get_mut(&info.digest)
            .ok_or_else(|| Status::not_found("not found"))?;
        let update: Labels = info.labels.into_iter().collect();
        berth_core::labels::apply_mask(labels, &update, &paths);
        Ok(Response::new(pb::UpdateResponse {
            info: Some(pb::Info {
                digest: info.digest,
                size: data.len() as i64,
                labels: labels.clone().into_iter().collect(),
                ..Default::default()
            }),
        }))
    }

    type ListStream = Stream<pb::ListContentResponse>;

    async fn list(
        &self,
        _req: Request<pb::ListContentRequest>,
    ) -> Result<Response<Self::ListStream>, Status> {
        Err(Status::unimplemented("list"))
    }

    async fn delete(&self, req: Request<pb::DeleteContentRequest>) -> Result<Response<()>, Status> {
        self.record(&req);
        let digest = req.into_inner().digest;
        match self.state().blobs.remove(&digest) {
            Some(_) => Ok(Response::new(())),
            None => Err(Status::not_found(format!(
                "content digest {digest}: not found"
            ))),
        }
    }

    type ReadStream = Stream<pb::ReadContentResponse>;

    async fn read(
        &self,
        req: Request<pb::ReadContentRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        self.record(&req);
        let digest = req.into_inner().digest;
        let data = self
            .state()
            .blobs
            .get(&digest)
            .map(|(d, _)| d.clone())
            .ok_or_else(|| Status::not_found("not found"))?;
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            // Small chunks, so the client has to reassemble several messages.
            for (i, chunk) in data.chunks(1000).enumerate() {
                let msg = pb::ReadContentResponse {
                    offset: (i * 1000) as i64,
                    data: chunk.to_vec(),
                };
                if tx.send(Ok(msg)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn status(
        &self,
        _req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        Err(Status::unimplemented("status"))
    }

    async fn list_statuses(
        &self,
        req: Request<pb::ListStatusesRequest>,
    ) -> Result<Response<pb::ListStatusesResponse>, Status> {
        self.record(&req);
        let st = self.state();
        let statuses = st
            .ingests
            .iter()
            .map(|(r, d)| pb::Status {
                r#ref: r.clone(),
                offset: d.len() as i64,
                ..Default::default()
            })
            .collect();
        Ok(Response::new(pb::ListStatusesResponse { statuses }))
    }

    type WriteStream = Stream<pb::WriteContentResponse>;

    async fn write(
        &self,
        req: Request<Streaming<pb::WriteContentRequest>>,
    ) -> Result<Response<Self::WriteStream>, Status> {
        self.record(&req);
        let (tx, rx) = mpsc::channel(4);
        let fake = self.clone();
        tokio::spawn(async move {
            if let Err(status) = fake.serve_write(req.into_inner(), &tx).await {
                tx.send(Err(status)).await.ok();
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn abort(&self, _req: Request<pb::AbortRequest>) -> Result<Response<()>, Status> {
        Err(Status::unimplemented("abort"))
    }
}

struct Server {
    fake: Fake,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

async fn serve() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("berthd.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let fake = Fake::default();
    let svc =
        ContentServer::new(fake.clone()).max_decoding_message_size(berth_proto::MAX_MESSAGE_SIZE);
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(UnixListenerStream::new(listener))
            .await
            .unwrap();
    });
    Server {
        fake,
        socket,
        _dir: dir,
    }
}

async fn connect(socket: &Path) -> Client {
    Client::connect(socket, "test-ns").await.unwrap()
}

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

#[tokio::test]
async fn write_blob_then_read_back_with_headers() {
    let srv = serve().await;
    let client = connect(&srv.socket).await;
    let labels = Labels::from([("containerd.io/gc.root".to_owned(), "1".to_owned())]);
    let digest = client
        .content()
        .write_blob(b"hello", labels.clone())
        .await
        .unwrap();
    assert_eq!(digest, Digest::of(b"hello"));
    assert_eq!(srv.fake.state().blobs[digest.as_str()].1, labels);

    let writes = srv.fake.writes();
    let actions: Vec<_> = writes.iter().map(|w| w.action).collect();
    assert_eq!(
        actions,
        [
            pb::WriteAction::Stat,
            pb::WriteAction::Write,
            pb::WriteAction::Commit
        ]
    );
    assert_eq!(writes[0].reference, format!("blob-{digest}"));
    assert_eq!(writes[0].total, 5);
    assert_eq!(writes[0].expected, digest.to_string());
    assert_eq!(writes[2].offset, 5);

    let leased = client.with_lease("l-1");
    assert_eq!(leased.content().read_all(&digest).await.unwrap(), b"hello");
    let headers = srv.fake.state().headers.clone();
    assert_eq!(headers[0], ("test-ns".to_owned(), None));
    assert_eq!(
        headers.last().unwrap(),
        &("test-ns".to_owned(), Some("l-1".to_owned()))
    );

    let other = client.with_namespace("other").without_lease();
    other.content().read_all(&digest).await.unwrap();
    assert_eq!(
        srv.fake.state().headers.last().unwrap(),
        &("other".to_owned(), None)
    );
}

#[tokio::test]
async fn large_ingest_is_chunked_and_read_streams_reassemble() {
    let srv = serve().await;
    let client = connect(&srv.socket).await;
    let blob = data(2 * 1024 * 1024 + 12_345);
    let digest = client
        .content()
        .ingest("layer-x", &blob[..], blob.len() as u64, None, Labels::new())
        .await
        .unwrap();
    assert_eq!(digest, Digest::of(&blob));
    let lens: Vec<_> = srv
        .fake
        .writes()
        .iter()
        .filter(|w| w.action == pb::WriteAction::Write)
        .map(|w| w.len)
        .collect();
    assert_eq!(lens, [1 << 20, 1 << 20, 12_345]);

    let mut out = Vec::new();
    let n = client.content().read_to(&digest, &mut out).await.unwrap();
    assert_eq!(n, blob.len() as u64);
    assert_eq!(out, blob);
}

#[tokio::test]
async fn already_present_blob_is_not_sent() {
    let srv = serve().await;
    let blob = data(4096);
    let digest = Digest::of(&blob);
    srv.fake
        .state()
        .blobs
        .insert(digest.to_string(), (blob.clone(), Labels::new()));
    let client = connect(&srv.socket).await;
    let got = client
        .content()
        .ingest("r", &blob[..], 4096, Some(&digest), Labels::new())
        .await
        .unwrap();
    assert_eq!(got, digest);
    assert!(
        srv.fake
            .writes()
            .iter()
            .all(|w| w.action == pb::WriteAction::Stat),
        "{:?}",
        srv.fake.writes()
    );
}

#[tokio::test]
async fn interrupted_ingest_resumes_from_the_server_offset() {
    let srv = serve().await;
    let blob = data(5000);
    srv.fake
        .state()
        .ingests
        .insert("resume-me".into(), blob[..1200].to_vec());
    let client = connect(&srv.socket).await;
    let digest = client
        .content()
        .ingest_source(
            "resume-me",
            Unseekable(&blob[..]),
            blob.len() as u64,
            Some(&Digest::of(&blob)),
            Labels::new(),
        )
        .await
        .unwrap();
    assert_eq!(digest, Digest::of(&blob));
    let writes: Vec<_> = srv
        .fake
        .writes()
        .into_iter()
        .filter(|w| w.action == pb::WriteAction::Write)
        .collect();
    assert_eq!(writes.len(), 1);
    assert_eq!((writes[0].offset, writes[0].len), (1200, 3800));
    assert_eq!(srv.fake.state().blobs[digest.as_str()].0, blob);
}

#[tokio::test]
async fn file_ingest_resumes_by_seeking() {
    let srv = serve().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("layer.tar");
    let blob = data(300_000);
    std::fs::write(&path, &blob).unwrap();
    srv.fake
        .state()
        .ingests
        .insert("file-ref".into(), blob[..100_000].to_vec());
    let client = connect(&srv.socket).await;
    let digest = client
        .content()
        .ingest_file("file-ref", &path, None, Labels::new())
        .await
        .unwrap();
    assert_eq!(digest, Digest::of(&blob));
    let w = srv.fake.writes();
    let first_write = w
        .iter()
        .find(|w| w.action == pb::WriteAction::Write)
        .unwrap();
    assert_eq!(first_write.offset, 100_000);
    assert_eq!(w[0].total, 300_000, "the file's size is announced");
}

#[tokio::test]
async fn locked_ref_is_retried_then_given_up() {
    let srv = serve().await;
    let client = connect(&srv.socket).await;
    srv.fake.state().locked_for = 3;
    let digest = client
        .content()
        .write_blob(b"contended", Labels::new())
        .await
        .unwrap();
    assert_eq!(digest, Digest::of(b"contended"));
    assert_eq!(srv.fake.state().locked_for, 0);

    srv.fake.state().locked_for = u32::MAX;
    let impatient = client.with_timeout(Some(Duration::from_millis(300)));
    let started = std::time::Instant::now();
    let err = impatient
        .content()
        .write_blob(b"never", Labels::new())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.message().contains("locked"), "{err}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(2),
        "{waited:?}"
    );
}

#[tokio::test]
async fn stalled_input_hits_the_deadline() {
    let srv = serve().await;
    let client = connect(&srv.socket)
        .await
        .with_timeout(Some(Duration::from_millis(200)));
    // The write half stays open and silent, so reading never finishes.
    let (_silent, stalled) = tokio::io::duplex(64);
    let err = client
        .content()
        .ingest("stalled", stalled, 10, None, Labels::new())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DeadlineExceeded, "{err}");
    assert!(err.message().contains("stalled"), "{err}");
    // The ingest stays on the server for a later resume.
    assert!(srv.fake.state().ingests.contains_key("stalled"));
}

#[tokio::test]
async fn commit_mismatch_and_missing_blobs_map_to_core_kinds() {
    let srv = serve().await;
    let client = connect(&srv.socket).await;
    let wrong = Digest::of(b"something else");
    let err = client
        .content()
        .ingest("bad", &b"payload"[..], 7, Some(&wrong), Labels::new())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
    assert_eq!(err.message(), "unexpected commit digest");

    let missing = Digest::of(b"missing");
    let err = client.content().info(&missing).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(err.message(), format!("content digest {missing}"));

    let err = client.content().status("x").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotImplemented);
}

#[tokio::test]
async fn info_tolerates_go_zero_times_and_labels_use_key_masks() {
    let srv = serve().await;
    let client = connect(&srv.socket).await;
    let digest = client
        .content()
        .write_blob(b"x", Labels::from([("keep".to_owned(), "1".to_owned())]))
        .await
        .unwrap();
    let info = client.content().info(&digest).await.unwrap();
    assert_eq!(info.size, 1);
    assert_eq!(berth_client::convert::known_time(info.created_at), None);

    let update = Labels::from([
        ("new".to_owned(), "2".to_owned()),
        ("gone".to_owned(), String::new()),
    ]);
    let info = client
        .content()
        .update_labels(&digest, &update)
        .await
        .unwrap();
    assert_eq!(
        info.labels,
        Labels::from([
            ("keep".to_owned(), "1".to_owned()),
            ("new".to_owned(), "2".to_owned())
        ])
    );
    assert_eq!(
        srv.fake.state().update_masks.last().unwrap(),
        &vec!["labels.gone".to_owned(), "labels.new".to_owned()]
    );

    client.content().delete(&digest).await.unwrap();
    let err = client.content().delete(&digest).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

#[tokio::test]
async fn connect_failure_names_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nobody-home.sock");
    let err = Client::connect(&socket, "default").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(
        err.message().contains(&socket.display().to_string()),
        "{err}"
    );
}

#[tokio::test]
async fn connect_when_ready_waits_for_a_late_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("late.sock");
    let late = socket.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let listener = tokio::net::UnixListener::bind(&late).unwrap();
        tonic::transport::Server::builder()
            .add_service(ContentServer::new(Fake::default()))
            .serve_with_incoming(UnixListenerStream::new(listener))
            .await
            .unwrap();
    });
    let client = Client::connect_when_ready(&socket, "ns", Duration::from_secs(5))
        .await
        .unwrap();
    let err = client
        .content()
        .info(&Digest::of(b"none"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);

    let err = Client::connect_when_ready(
        dir.path().join("never.sock"),
        "ns",
        Duration::from_millis(200),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(err.message().contains("not ready"), "{err}");
}

#[tokio::test]
async fn unimplemented_services_report_not_implemented() {
    let srv = serve().await;
    let client = connect(&srv.socket).await;
    // The fake serves only Content; everything else is Unimplemented, like a partial server.
    let err = client.version().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotImplemented, "{err}");
    let err = client.namespaces().list().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotImplemented, "{err}");
}
