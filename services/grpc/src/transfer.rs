//! `berth.services.transfer.v1.Transfer` over a [`Transfer`]: pull and push with progress
//! streamed to the caller.
//!
//! The transfer runs in its own task so a slow reader never holds it back: its progress sink
//! only appends to a queue, never waits. The queue coalesces per blob: an event whose state is
//! that of the blob's newest queued event replaces it in place (offsets only move forward), while
//! a state change is queued after it, so readers still see every state. Past [`MAX_PENDING`]
//! queued events, state changes coalesce too, which bounds the queue by that plus the number of
//! blobs, however far the reader lags. The response stream drains the queue and ends with the
//! one `done` event built from the transfer's result, or with its error status. Dropping the
//! stream (the client went away) aborts the task, which drops, and so cancels, the transfer.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

use berth_core::Digest;
use berth_core::images::Image;
use berth_core::transfer::{
    BlobState, Credentials, Platform, Progress, ProgressSink, PullRequest, PushRequest, Transfer,
};
use berth_proto::berth::services::transfer::v1 as pb;
use berth_proto::containerd::types;
use futures::Stream;
use pb::progress::Event;
use tokio::sync::Notify;
use tonic::{Request, Response, Status};
use tracing::Instrument as _;

use crate::context::request_context;
use crate::convert;
use crate::diff::wire_descriptor;
use crate::error::to_status;
use crate::images::wire_image;

type ProgressStream = Pin<Box<dyn Stream<Item = Result<pb::Progress, Status>> + Send + 'static>>;

/// The Transfer service.
pub struct TransferService {
    transfer: Arc<dyn Transfer>,
}

impl TransferService {
    /// A service over `transfer`.
    pub fn new(transfer: Arc<dyn Transfer>) -> Self {
        Self { transfer }
    }
}

/// A core platform from the wire; os and architecture are required.
pub fn platform(p: types::Platform) -> Result<Platform, Status> {
    if p.os.is_empty() || p.architecture.is_empty() {
        return Err(Status::invalid_argument(format!(
            "platform {:?}/{:?}: os and architecture must be set",
            p.os, p.architecture
        )));
    }
    Ok(Platform {
        os: p.os,
        architecture: p.architecture,
        variant: p.variant,
    })
}

/// Credentials from the wire; an absent or all-empty message means anonymous.
pub fn credentials(c: Option<pb::Credentials>) -> Option<Credentials> {
    c.filter(|c| !(c.username.is_empty() && c.secret.is_empty()))
        .map(|c| Credentials {
            username: c.username,
            secret: c.secret,
        })
}

fn platforms(list: Vec<types::Platform>) -> Result<Vec<Platform>, Status> {
    list.into_iter().map(platform).collect()
}

/// A core pull request from the wire.
pub fn pull_request(req: pb::PullRequest) -> Result<PullRequest, Status> {
    if req.reference.is_empty() {
        return Err(Status::invalid_argument("pull needs a reference"));
    }
    Ok(PullRequest {
        platforms: platforms(req.platforms)?,
        all_platforms: req.all_platforms,
        unpack: req.unpack,
        snapshotter: req.snapshotter,
        credentials: credentials(req.credentials),
        labels: convert::labels(req.labels),
        reference: req.reference,
    })
}

/// A core push request from the wire.
pub fn push_request(req: pb::PushRequest) -> Result<PushRequest, Status> {
    if req.image.is_empty() {
        return Err(Status::invalid_argument("push needs an image name"));
    }
    Ok(PushRequest {
        image: req.image,
        reference: req.reference,
        platforms: platforms(req.platforms)?,
        credentials: credentials(req.credentials),
    })
}

/// A blob state for the wire.
pub fn wire_state(state: BlobState) -> pb::BlobState {
    match state {
        BlobState::Waiting => pb::BlobState::Waiting,
        BlobState::Transferring => pb::BlobState::Transferring,
        BlobState::Exists => pb::BlobState::Exists,
        BlobState::Mounted => pb::BlobState::Mounted,
        BlobState::Done => pb::BlobState::Done,
        BlobState::Unpacking => pb::BlobState::Unpacking,
        BlobState::Unpacked => pb::BlobState::Unpacked,
    }
}

/// A progress event for the wire.
pub fn wire_progress(p: &Progress) -> pb::Progress {
    let event = match p {
        Progress::Resolved { name, root } => Event::Resolved(pb::Resolved {
            name: name.clone(),
            root: Some(wire_descriptor(root)),
        }),
        Progress::Blob {
            descriptor,
            state,
            offset,
        } => Event::Blob(pb::BlobProgress {
            descriptor: Some(wire_descriptor(descriptor)),
            state: wire_state(*state) as i32,
            offset: *offset,
        }),
        Progress::Done { image } => Event::Done(pb::Done {
            image: Some(wire_image(image)),
        }),
    };
    pb::Progress { event: Some(event) }
}

/// How many events may wait for a slow reader before a blob's state changes coalesce as well.
pub const MAX_PENDING: usize = 1024;

#[derive(Default)]
struct Queue {
    /// Queued events by slot number, sent in slot order.
    slots: HashMap<u64, Progress>,
    order: VecDeque<u64>,
    /// Each blob's newest queued slot.
    newest: HashMap<Digest, u64>,
    next_slot: u64,
    /// The stream's last item, once the transfer has finished.
    outcome: Option<Result<pb::Progress, Status>>,
    finished: bool,
}

impl Queue {
    fn enqueue(&mut self, event: Progress) -> u64 {
        let slot = self.next_slot;
        self.next_slot += 1;
        self.slots.insert(slot, event);
        self.order.push_back(slot);
        slot
    }
}

/// What the response stream does next.
enum Next {
    Send(pb::Progress),
    End(Result<pb::Progress, Status>),
    Wait,
}

/// The queue between the transfer's progress sink and the response stream.
#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    notify: Notify,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // Nothing panics while holding the lock, and a queue of events is valid in any state.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `event` without ever waiting on the reader.
    fn push(&self, event: Progress) {
        {
            let mut q = self.lock();
            if q.finished {
                return;
            }
            match event {
                // The final `done` is built from the transfer's result, exactly once.
                Progress::Done { .. } => return,
                Progress::Blob {
                    ref descriptor,
                    state,
                    ..
                } => {
                    let digest = descriptor.digest.clone();
                    let crowded = q.order.len() >= MAX_PENDING;
                    let newest = q.newest.get(&digest).copied();
                    let replaceable = newest.filter(|slot| {
                        crowded
                            || matches!(
                                q.slots.get(slot),
                                Some(Progress::Blob { state: queued, .. }) if *queued == state
                            )
                    });
                    match replaceable {
                        Some(slot) => {
                            q.slots.insert(slot, event);
                        }
                        None => {
                            let slot = q.enqueue(event);
                            q.newest.insert(digest, slot);
                        }
                    }
                }
                Progress::Resolved { .. } => {
                    q.enqueue(event);
                }
            }
        }
        self.notify.notify_one();
    }

    /// Records the stream's last item; later events are dropped.
    fn finish(&self, outcome: Result<pb::Progress, Status>) {
        {
            let mut q = self.lock();
            if q.finished {
                return;
            }
            q.finished = true;
            q.outcome = Some(outcome);
        }
        self.notify.notify_one();
    }

    fn next(&self) -> Next {
        let mut q = self.lock();
        while let Some(slot) = q.order.pop_front() {
            let Some(event) = q.slots.remove(&slot) else {
                continue;
            };
            if let Progress::Blob { descriptor, .. } = &event
                && q.newest.get(&descriptor.digest) == Some(&slot)
            {
                q.newest.remove(&descriptor.digest);
            }
            return Next::Send(wire_progress(&event));
        }
        match q.outcome.take() {
            Some(outcome) => Next::End(outcome),
            None => Next::Wait,
        }
    }
}

/// Ends the stream with an Internal status if the transfer task stops without a result (it
/// panicked); a normal finish disarms it.
struct FinishGuard(Option<Arc<Shared>>);

impl FinishGuard {
    fn finish(mut self, outcome: Result<pb::Progress, Status>) {
        if let Some(shared) = self.0.take() {
            shared.finish(outcome);
        }
    }
}

impl Drop for FinishGuard {
    fn drop(&mut self) {
        if let Some(shared) = self.0.take() {
            shared.finish(Err(Status::internal("transfer stopped without a result")));
        }
    }
}

/// Aborts the transfer task when the response stream is dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct StreamState {
    shared: Arc<Shared>,
    _task: AbortOnDrop,
    ended: bool,
}

/// Runs the transfer `start` builds (given the progress sink) in its own task and returns the
/// response stream over its progress.
fn run<F, Fut>(start: F) -> ProgressStream
where
    F: FnOnce(ProgressSink) -> Fut,
    Fut: Future<Output = berth_core::Result<Image>> + Send + 'static,
{
    let shared = Arc::new(Shared::default());
    let sink_queue = shared.clone();
    let sink: ProgressSink = Box::new(move |event| sink_queue.push(event));
    let transfer = start(sink);
    let guard = FinishGuard(Some(shared.clone()));
    let task = tokio::spawn(
        async move {
            let outcome = match transfer.await {
                Ok(image) => Ok(wire_progress(&Progress::Done { image })),
                Err(e) => Err(to_status(e)),
            };
            guard.finish(outcome);
        }
        .instrument(tracing::Span::current()),
    );
    let state = StreamState {
        shared,
        _task: AbortOnDrop(task.abort_handle()),
        ended: false,
    };
    Box::pin(futures::stream::unfold(state, |mut st| async move {
        if st.ended {
            return None;
        }
        loop {
            match st.shared.next() {
                Next::Send(event) => return Some((Ok(event), st)),
                Next::End(last) => {
                    st.ended = true;
                    return Some((last, st));
                }
                Next::Wait => st.shared.notify.notified().await,
            }
        }
    }))
}

#[tonic::async_trait]
impl pb::transfer_server::Transfer for TransferService {
    type PullStream = ProgressStream;

    async fn pull(
        &self,
        req: Request<pb::PullRequest>,
    ) -> Result<Response<Self::PullStream>, Status> {
        let ctx = request_context(&req)?;
        let req = pull_request(req.into_inner())?;
        tracing::Span::current().record("id", req.reference.as_str());
        let transfer = self.transfer.clone();
        Ok(Response::new(run(move |sink| async move {
            transfer.pull(&ctx, req, sink).await
        })))
    }

    type PushStream = ProgressStream;

    async fn push(
        &self,
        req: Request<pb::PushRequest>,
    ) -> Result<Response<Self::PushStream>, Status> {
        let ctx = request_context(&req)?;
        let req = push_request(req.into_inner())?;
        tracing::Span::current().record("id", req.image.as_str());
        let transfer = self.transfer.clone();
        Ok(Response::new(run(move |sink| async move {
            transfer.push(&ctx, req, sink).await
        })))
    }
}

#[cfg(test)]
mod tests {
    use berth_core::diff::Descriptor;
    use futures::StreamExt as _;

    use super::*;

    fn blob(name: &[u8], state: BlobState, offset: u64) -> Progress {
        Progress::Blob {
            descriptor: Descriptor::new("application/octet-stream", Digest::of(name), 100),
            state,
            offset,
        }
    }

    fn offsets(events: &[pb::Progress]) -> Vec<(String, i32, u64)> {
        events
            .iter()
            .filter_map(|p| match &p.event {
                Some(Event::Blob(b)) => Some((
                    b.descriptor.as_ref().map(|d| d.digest.clone()).unwrap(),
                    b.state,
                    b.offset,
                )),
                _ => None,
            })
            .collect()
    }

    fn drain(shared: &Shared) -> Vec<pb::Progress> {
        let mut sent = Vec::new();
        while let Next::Send(p) = shared.next() {
            sent.push(p);
        }
        sent
    }

    #[test]
    fn offsets_coalesce_per_blob_and_state_changes_are_kept() {
        let shared = Shared::default();
        let root = Descriptor::new("m", Digest::of(b"root"), 1);
        shared.push(Progress::Resolved {
            name: "n".into(),
            root,
        });
        for offset in 0..1000 {
            shared.push(blob(b"a", BlobState::Transferring, offset));
            shared.push(blob(b"b", BlobState::Transferring, offset * 2));
        }
        shared.push(blob(b"a", BlobState::Done, 100));
        shared.push(blob(b"a", BlobState::Unpacking, 0));
        shared.push(blob(b"a", BlobState::Unpacking, 60));
        // A `done` from the implementation is ignored: the adapter sends its own.
        shared.push(Progress::Done {
            image: Image::new("x", Descriptor::new("m", Digest::of(b"x"), 1)),
        });
        let sent = drain(&shared);
        assert_eq!(sent.len(), 5, "{sent:?}");
        assert!(matches!(sent[0].event, Some(Event::Resolved(_))));
        let (a, b) = (Digest::of(b"a").to_string(), Digest::of(b"b").to_string());
        assert_eq!(
            offsets(&sent),
            vec![
                (a.clone(), pb::BlobState::Transferring as i32, 999),
                (b, pb::BlobState::Transferring as i32, 1998),
                (a.clone(), pb::BlobState::Done as i32, 100),
                (a.clone(), pb::BlobState::Unpacking as i32, 60),
            ]
        );
        assert!(matches!(shared.next(), Next::Wait));

        // Once sent, a blob queues afresh even in the same state.
        shared.push(blob(b"a", BlobState::Unpacking, 80));
        assert_eq!(
            offsets(&drain(&shared)),
            vec![(a, pb::BlobState::Unpacking as i32, 80)]
        );

        shared.finish(Err(Status::not_found("x")));
        shared.push(blob(b"c", BlobState::Waiting, 0));
        shared.finish(Ok(pb::Progress::default()));
        match shared.next() {
            Next::End(Err(s)) => assert_eq!(s.code(), tonic::Code::NotFound),
            _ => panic!("the first outcome ends the stream"),
        }
        assert!(matches!(shared.next(), Next::Wait), "nothing after the end");
    }

    #[test]
    fn a_crowded_queue_coalesces_state_changes_too() {
        let shared = Shared::default();
        for i in 0..MAX_PENDING as u32 {
            shared.push(blob(&i.to_le_bytes(), BlobState::Waiting, 0));
        }
        let first = 0u32.to_le_bytes();
        for offset in 0..10 {
            shared.push(blob(&first, BlobState::Transferring, offset));
            shared.push(blob(&first, BlobState::Done, 100));
        }
        assert_eq!(shared.lock().order.len(), MAX_PENDING);
        // A blob never seen still gets its event in.
        shared.push(blob(b"new", BlobState::Waiting, 0));
        let sent = drain(&shared);
        assert_eq!(sent.len(), MAX_PENDING + 1);
        assert_eq!(
            offsets(&sent[..1]),
            vec![(
                Digest::of(&first).to_string(),
                pb::BlobState::Done as i32,
                100
            )]
        );
        assert_eq!(
            offsets(&sent[MAX_PENDING..])[0].0,
            Digest::of(b"new").to_string()
        );
    }

    #[tokio::test]
    async fn a_slow_reader_gets_coalesced_events_and_the_done_last() {
        let (emitted_tx, emitted_rx) = tokio::sync::oneshot::channel();
        let mut stream = run(move |sink| async move {
            for offset in 0..=100 {
                sink(blob(b"layer", BlobState::Transferring, offset));
            }
            sink(blob(b"layer", BlobState::Done, 100));
            let _ = emitted_tx.send(());
            Ok(Image::new(
                "docker.io/library/x:1",
                Descriptor::new("m", Digest::of(b"m"), 1),
            ))
        });
        // Read nothing until the transfer has emitted everything and returned.
        emitted_rx.await.unwrap();
        let all: Vec<_> = (&mut stream).collect().await;
        assert_eq!(all.len(), 3, "{all:?}");
        let events: Vec<pb::Progress> = all[..2].iter().map(|r| r.clone().unwrap()).collect();
        let layer = Digest::of(b"layer").to_string();
        assert_eq!(
            offsets(&events),
            vec![
                (layer.clone(), pb::BlobState::Transferring as i32, 100),
                (layer, pb::BlobState::Done as i32, 100),
            ]
        );
        match &all[2].as_ref().unwrap().event {
            Some(Event::Done(done)) => {
                assert_eq!(done.image.as_ref().unwrap().name, "docker.io/library/x:1")
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_panicking_transfer_ends_the_stream_with_internal() {
        let stream = run(|_sink| async move {
            if std::hint::black_box(true) {
                panic!("boom");
            }
            Err(berth_core::Error::internal("unreachable"))
        });
        let all: Vec<_> = stream.collect().await;
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].as_ref().unwrap_err().code(), tonic::Code::Internal);
    }

    #[test]
    fn wire_requests_are_validated() {
        let ok = pull_request(pb::PullRequest {
            reference: "busybox".into(),
            platforms: vec![types::Platform {
                os: "linux".into(),
                architecture: "arm64".into(),
                variant: "v8".into(),
            }],
            credentials: Some(pb::Credentials::default()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(ok.platforms[0].to_string(), "linux/arm64/v8");
        assert_eq!(ok.credentials, None, "empty credentials are anonymous");
        let code = |r: Result<PullRequest, Status>| r.unwrap_err().code();
        assert_eq!(
            code(pull_request(pb::PullRequest::default())),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            code(pull_request(pb::PullRequest {
                reference: "x".into(),
                platforms: vec![types::Platform {
                    os: "linux".into(),
                    ..Default::default()
                }],
                ..Default::default()
            })),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            push_request(pb::PushRequest::default()).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        let push = push_request(pb::PushRequest {
            image: "x".into(),
            credentials: Some(pb::Credentials {
                username: String::new(),
                secret: "token".into(),
            }),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(push.credentials.unwrap().secret, "token");
    }
}
