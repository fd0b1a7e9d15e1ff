//! Event helpers: publish, forward and subscribe (`containerd.services.events.v1.Events`).

use berth_core::events::Envelope;
use berth_core::{AnyValue, Error, Namespace, Result};
use berth_proto::containerd::services::events::v1 as pb;
use berth_proto::{to_any_value, to_wire_any};
use prost_types::Timestamp;
use tonic::Streaming;

use crate::client::Client;
use crate::convert;
use crate::error::from_status;

impl Client {
    /// Event bus helpers.
    pub fn events(&self) -> Events<'_> {
        Events { client: self }
    }
}

/// Event bus helpers; see [`Client::events`].
#[derive(Debug, Clone, Copy)]
pub struct Events<'a> {
    client: &'a Client,
}

/// An envelope from the wire; an invalid namespace is the server's bug.
pub fn envelope(e: pb::Envelope) -> Result<Envelope> {
    let namespace = Namespace::new(e.namespace).map_err(|err| {
        Error::internal(format!(
            "server sent an event with a bad namespace: {}",
            err.message()
        ))
    })?;
    Ok(Envelope {
        timestamp: convert::system_time(e.timestamp.as_ref()),
        namespace,
        topic: e.topic,
        event: e.event.map(to_any_value).unwrap_or_default(),
    })
}

/// An envelope for the wire.
pub fn wire_envelope(e: &Envelope) -> pb::Envelope {
    let since = e
        .timestamp
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    pb::Envelope {
        timestamp: Some(Timestamp {
            seconds: i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
            nanos: i32::try_from(since.subsec_nanos()).unwrap_or(0),
        }),
        namespace: e.namespace.to_string(),
        topic: e.topic.clone(),
        event: Some(to_wire_any(&e.event)),
    }
}

/// A subscription: the events published after [`Events::subscribe`] returned, in order.
#[derive(Debug)]
pub struct EventStream {
    inner: Streaming<pb::Envelope>,
}

impl EventStream {
    /// The next event; `None` when the server ends the stream.
    pub async fn next(&mut self) -> Result<Option<Envelope>> {
        match self.inner.message().await.map_err(from_status)? {
            Some(e) => envelope(e).map(Some),
            None => Ok(None),
        }
    }
}

impl Events<'_> {
    /// Publishes `event` on `topic` in the client's namespace; the server stamps the time.
    /// InvalidArgument for a malformed topic (it must start with `/`, e.g. `/my/topic`).
    pub async fn publish(&self, topic: &str, event: &AnyValue) -> Result<()> {
        self.client
            .call(|| format!("publish an event on {topic:?}"), async {
                self.client
                    .rpc()
                    .events()
                    .publish(pb::PublishRequest {
                        topic: topic.to_owned(),
                        event: Some(to_wire_any(event)),
                    })
                    .await
                    .map_err(from_status)?;
                Ok(())
            })
            .await
    }

    /// Republishes a complete envelope, keeping its namespace and time.
    pub async fn forward(&self, envelope: &Envelope) -> Result<()> {
        let wire = wire_envelope(envelope);
        self.client
            .call(
                || format!("forward an event on {:?}", envelope.topic),
                async {
                    self.client
                        .rpc()
                        .events()
                        .forward(pb::ForwardRequest {
                            envelope: Some(wire),
                        })
                        .await
                        .map_err(from_status)?;
                    Ok(())
                },
            )
            .await
    }

    /// Subscribes to every event (of any namespace) matching any of `filters` (all when empty),
    /// e.g. `topic=="/containers/create"`, `namespace==default,topic~="^/images/"`. When this
    /// returns, the server has registered the subscription: everything published from then on
    /// is delivered.
    pub async fn subscribe(&self, filters: &[String]) -> Result<EventStream> {
        self.client
            .call(|| "subscribe to events".to_owned(), async {
                let inner = self
                    .client
                    .rpc()
                    .events()
                    .subscribe(pb::SubscribeRequest {
                        filters: filters.to_vec(),
                    })
                    .await
                    .map_err(from_status)?
                    .into_inner();
                Ok(EventStream { inner })
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use berth_core::ErrorKind;

    use super::*;

    #[test]
    fn round_trip_and_server_bugs() {
        let e = Envelope {
            timestamp: UNIX_EPOCH + Duration::new(1_700_000_000, 5),
            namespace: Namespace::new("default").unwrap(),
            topic: "/containers/create".into(),
            event: AnyValue::new("containerd.events.ContainerCreate", vec![10, 1, 120]),
        };
        assert_eq!(envelope(wire_envelope(&e)).unwrap(), e);
        let bad = pb::Envelope {
            namespace: String::new(),
            ..wire_envelope(&e)
        };
        assert_eq!(envelope(bad).unwrap_err().kind(), ErrorKind::Internal);
    }
}
