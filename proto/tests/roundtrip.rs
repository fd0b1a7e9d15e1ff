//! The generated client and server talk to each other over a real TCP socket: a bidirectional
//! Content.Write larger than tonic's 4 MiB default limit, a server-streamed Content.Read, and the
//! namespace header, so the codegen settings (clients, servers, streaming, Empty) all hold up.

// Test helpers outside #[test] fns are still test code: panicking on a broken invariant is the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use berth_proto::containerd::services::content::v1::{
    self as content, WriteAction,
    content_client::ContentClient,
    content_server::{Content, ContentServer},
};
use berth_proto::containerd::services::version::v1::{
    VersionResponse,
    version_client::VersionClient,
    version_server::{Version, VersionServer},
};
use berth_proto::{MAX_MESSAGE_SIZE, NAMESPACE_HEADER};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Blobs by the `expected` name they were committed under, plus the namespaces seen.
#[derive(Default, Clone)]
struct Store {
    blobs: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    namespaces: Arc<Mutex<Vec<String>>>,
}

impl Store {
    fn note_namespace<T>(&self, req: &Request<T>) {
        let ns = req
            .metadata()
            .get(NAMESPACE_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        self.namespaces.lock().unwrap().push(ns);
    }
}

#[tonic::async_trait]
impl Content for Store {
    async fn info(
        &self,
        _: Request<content::InfoRequest>,
    ) -> Result<Response<content::InfoResponse>, Status> {
        Err(Status::unimplemented("info"))
    }
    async fn update(
        &self,
        _: Request<content::UpdateRequest>,
    ) -> Result<Response<content::UpdateResponse>, Status> {
        Err(Status::unimplemented("update"))
    }
    type ListStream = BoxStream<content::ListContentResponse>;
    async fn list(
        &self,
        _: Request<content::ListContentRequest>,
    ) -> Result<Response<Self::ListStream>, Status> {
        Err(Status::unimplemented("list"))
    }
    async fn delete(
        &self,
        _: Request<content::DeleteContentRequest>,
    ) -> Result<Response<()>, Status> {
        Err(Status::unimplemented("delete"))
    }
    type ReadStream = BoxStream<content::ReadContentResponse>;
    async fn read(
        &self,
        req: Request<content::ReadContentRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        self.note_namespace(&req);
        let digest = req.into_inner().digest;
        let blob = self
            .blobs
            .lock()
            .unwrap()
            .get(&digest)
            .cloned()
            .ok_or_else(|| Status::not_found(digest))?;
        let chunks: Vec<_> = blob
            .chunks(1 << 20)
            .enumerate()
            .map(|(i, c)| {
                Ok(content::ReadContentResponse {
                    offset: (i << 20) as i64,
                    data: c.to_vec(),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }
    async fn status(
        &self,
        _: Request<content::StatusRequest>,
    ) -> Result<Response<content::StatusResponse>, Status> {
        Err(Status::unimplemented("status"))
    }
    async fn list_statuses(
        &self,
        _: Request<content::ListStatusesRequest>,
    ) -> Result<Response<content::ListStatusesResponse>, Status> {
        Err(Status::unimplemented("list_statuses"))
    }
    type WriteStream = BoxStream<content::WriteContentResponse>;
    async fn write(
        &self,
        req: Request<Streaming<content::WriteContentRequest>>,
    ) -> Result<Response<Self::WriteStream>, Status> {
        self.note_namespace(&req);
        let mut inbound = req.into_inner();
        let mut data = Vec::new();
        let mut replies = Vec::new();
        while let Some(msg) = inbound.next().await {
            let msg = msg?;
            if msg.offset != data.len() as i64 {
                return Err(Status::out_of_range("offset"));
            }
            data.extend_from_slice(&msg.data);
            if msg.action == WriteAction::Commit as i32 {
                self.blobs
                    .lock()
                    .unwrap()
                    .insert(msg.expected.clone(), data.clone());
            }
            replies.push(Ok(content::WriteContentResponse {
                action: msg.action,
                offset: data.len() as i64,
                total: msg.total,
                digest: msg.expected,
                ..Default::default()
            }));
        }
        Ok(Response::new(Box::pin(tokio_stream::iter(replies))))
    }
    async fn abort(&self, _: Request<content::AbortRequest>) -> Result<Response<()>, Status> {
        Err(Status::unimplemented("abort"))
    }
}

#[tonic::async_trait]
impl Version for Store {
    async fn version(&self, _: Request<()>) -> Result<Response<VersionResponse>, Status> {
        Ok(Response::new(VersionResponse {
            version: "1.6.20".into(),
            revision: "berth".into(),
        }))
    }
}

fn with_namespace<T>(msg: T) -> Request<T> {
    let mut req = Request::new(msg);
    req.metadata_mut()
        .insert(NAMESPACE_HEADER, "default".parse().unwrap());
    req
}

#[tokio::test]
async fn content_write_and_read_over_tcp() {
    let store = Store::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tonic::transport::Server::builder()
        .add_service(
            ContentServer::new(store.clone())
                .max_decoding_message_size(MAX_MESSAGE_SIZE)
                .max_encoding_message_size(MAX_MESSAGE_SIZE),
        )
        .add_service(VersionServer::new(store.clone()))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    let server = tokio::spawn(server);

    let endpoint = format!("http://{addr}");
    let mut client = ContentClient::connect(endpoint.clone())
        .await
        .unwrap()
        .max_encoding_message_size(MAX_MESSAGE_SIZE)
        .max_decoding_message_size(MAX_MESSAGE_SIZE);

    // 5 MiB in one message: only passes because both ends raised tonic's 4 MiB default.
    let big: Vec<u8> = (0..5 << 20).map(|i| (i % 251) as u8).collect();
    let total = big.len() as i64 + 3;
    let requests = vec![
        content::WriteContentRequest {
            action: WriteAction::Write as i32,
            r#ref: "ingest-1".into(),
            total,
            data: big.clone(),
            ..Default::default()
        },
        content::WriteContentRequest {
            action: WriteAction::Commit as i32,
            r#ref: "ingest-1".into(),
            total,
            expected: "sha256:test".into(),
            offset: big.len() as i64,
            data: b"end".to_vec(),
            ..Default::default()
        },
    ];
    let replies: Vec<_> = client
        .write(with_namespace(tokio_stream::iter(requests)))
        .await
        .unwrap()
        .into_inner()
        .collect::<Result<_, _>>()
        .await
        .unwrap();
    assert_eq!(replies.len(), 2);
    assert_eq!(replies[0].action, WriteAction::Write as i32);
    assert_eq!(replies[0].offset, big.len() as i64);
    assert_eq!(replies[1].action, WriteAction::Commit as i32);
    assert_eq!(replies[1].offset, total);
    assert_eq!(replies[1].digest, "sha256:test");

    let mut chunks = client
        .read(with_namespace(content::ReadContentRequest {
            digest: "sha256:test".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let mut read_back = Vec::new();
    let mut count = 0;
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.unwrap();
        assert_eq!(chunk.offset, read_back.len() as i64);
        read_back.extend_from_slice(&chunk.data);
        count += 1;
    }
    assert_eq!(count, 6, "5 MiB + 3 bytes in 1 MiB chunks");
    let mut expected = big;
    expected.extend_from_slice(b"end");
    assert!(
        read_back == expected,
        "read back differs from what was written"
    );

    let missing = client
        .read(with_namespace(content::ReadContentRequest {
            digest: "sha256:nope".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);

    let version = VersionClient::connect(endpoint)
        .await
        .unwrap()
        .version(())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(version.version, "1.6.20");

    assert_eq!(
        *store.namespaces.lock().unwrap(),
        vec![
            "default".to_string(),
            "default".to_string(),
            "default".to_string()
        ]
    );
    server.abort();
}
