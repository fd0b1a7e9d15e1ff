//! `containerd.services.events.v1.Events` over an [`EventExchange`].
//!
//! Publish stamps the caller's namespace (from the header) and the current time; Forward keeps
//! the envelope's own namespace and time (it republishes what a shim or another exchange
//! published). Subscribe registers before the response is returned, so every event published
//! after the client has its stream is delivered (unless the client falls too far behind).

use std::pin::Pin;
use std::sync::Arc;

use berth_core::events::{Envelope, EventExchange};
use berth_core::filters::Filters;
use berth_core::{Error, Namespace};
use berth_proto::containerd::services::events::v1 as pb;
use berth_proto::{to_any_value, to_wire_any};
use futures::Stream;
use pb::events_server::Events;
use tonic::{Request, Response, Status};

use crate::context::request_context;
use crate::convert::{system_time, timestamp};
use crate::error::to_status;

type EnvelopeStream = Pin<Box<dyn Stream<Item = Result<pb::Envelope, Status>> + Send>>;

/// The Events service.
pub struct EventsService {
    events: Arc<dyn EventExchange>,
}

impl EventsService {
    /// A service over `events`.
    pub fn new(events: Arc<dyn EventExchange>) -> Self {
        Self { events }
    }
}

/// An envelope for the wire.
pub fn wire_envelope(e: &Envelope) -> pb::Envelope {
    pb::Envelope {
        timestamp: Some(timestamp(e.timestamp)),
        namespace: e.namespace.to_string(),
        topic: e.topic.clone(),
        event: Some(to_wire_any(&e.event)),
    }
}

/// An envelope from the wire. A missing or zero (Go's year 1) timestamp reads as the epoch,
/// which the exchange refuses as unset; the namespace must be valid.
pub fn envelope(e: Option<pb::Envelope>) -> Result<Envelope, Status> {
    let e = e.ok_or_else(|| Status::invalid_argument("envelope must be set"))?;
    let namespace = Namespace::new(e.namespace)
        .map_err(|err| to_status(err.context("event envelope has invalid namespace")))?;
    Ok(Envelope {
        timestamp: system_time(e.timestamp.as_ref()).unwrap_or(std::time::UNIX_EPOCH),
        namespace,
        topic: e.topic,
        event: e.event.map(to_any_value).unwrap_or_default(),
    })
}

#[tonic::async_trait]
impl Events for EventsService {
    async fn publish(&self, req: Request<pb::PublishRequest>) -> Result<Response<()>, Status> {
        let ctx = request_context(&req)?;
        let req = req.into_inner();
        let event = req
            .event
            .ok_or_else(|| to_status(Error::invalid_argument("event must be set")))?;
        // The exchange only appends to a channel: no blocking thread needed.
        self.events
            .publish(&ctx.namespace, &req.topic, to_any_value(event))
            .map_err(to_status)?;
        Ok(Response::new(()))
    }

    async fn forward(&self, req: Request<pb::ForwardRequest>) -> Result<Response<()>, Status> {
        let envelope = envelope(req.into_inner().envelope)?;
        self.events.forward(envelope).map_err(to_status)?;
        Ok(Response::new(()))
    }

    type SubscribeStream = EnvelopeStream;

    async fn subscribe(
        &self,
        req: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let filters = Filters::parse(&req.get_ref().filters).map_err(to_status)?;
        let subscription = self.events.subscribe(filters);
        // Ends when the exchange goes away; when the client goes away tonic drops the stream,
        // and with it the subscription.
        let stream = futures::stream::unfold(subscription, |mut sub| async move {
            let envelope = sub.next().await?;
            Some((Ok(wire_envelope(&envelope)), sub))
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use berth_core::AnyValue;

    use super::*;

    #[test]
    fn envelopes_round_trip() {
        let e = Envelope {
            timestamp: UNIX_EPOCH + Duration::new(1_700_000_000, 42),
            namespace: Namespace::new("default").unwrap(),
            topic: "/tasks/exit".into(),
            event: AnyValue::new("containerd.events.TaskExit", vec![1, 2]),
        };
        assert_eq!(envelope(Some(wire_envelope(&e))).unwrap(), e);

        let go_zero = pb::Envelope {
            timestamp: Some(prost_types::Timestamp {
                seconds: -62_135_596_800,
                nanos: 0,
            }),
            ..wire_envelope(&e)
        };
        assert_eq!(envelope(Some(go_zero)).unwrap().timestamp, UNIX_EPOCH);
        let bad_ns = pb::Envelope {
            namespace: "a/b".into(),
            ..wire_envelope(&e)
        };
        assert_eq!(
            envelope(Some(bad_ns)).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            envelope(None).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }
}
