//! Berth's event bus: an in-memory [`Exchange`] and the [`Publishing`] stores that announce
//! their changes on it.
//!
//! Layout:
//! - [`Exchange`] (this file): berth-core's [`EventPublisher`] and [`EventSubscriber`] over a
//!   tokio broadcast channel. Publishing is synchronous and never waits: a subscriber that falls
//!   more than the channel's capacity behind loses the oldest events (logged) instead of
//!   slowing publishers down. Each subscriber filters on its own side, with containerd's filter
//!   syntax over `topic` and `namespace`.
//! - [`publishing`]: [`Publishing`], a decorator over the metadata stores that publishes
//!   containerd's events (`/containers/create`, `/images/delete`, `/snapshot/commit`, …) after
//!   each successful mutation, whichever service made it (gRPC, daemon-side pull).
//!
//! Events live only in memory, as in containerd: a subscriber sees what is published after it
//! subscribed, and nothing survives a restart.

pub mod publishing;

use std::sync::Arc;
use std::time::SystemTime;

use berth_core::events::{
    EventPublisher, EventSubscriber, Subscription, validate_envelope, validate_topic,
};
use berth_core::filters::Filters;
use berth_core::{AnyValue, BoxFuture, Namespace, Result, events::Envelope};
use tokio::sync::broadcast;

pub use publishing::Publishing;

/// How many events a subscriber may fall behind before it loses the oldest.
pub const DEFAULT_CAPACITY: usize = 1024;

/// The in-memory event exchange. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Exchange {
    tx: broadcast::Sender<Arc<Envelope>>,
}

impl Default for Exchange {
    fn default() -> Self {
        Self::new()
    }
}

impl Exchange {
    /// An exchange whose subscribers may lag [`DEFAULT_CAPACITY`] events.
    pub fn new() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }

    /// An exchange whose subscribers may lag `capacity` events (at least one).
    pub fn with_capacity(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Self { tx }
    }

    /// How many subscriptions are open.
    pub fn subscribers(&self) -> usize {
        self.tx.receiver_count()
    }

    fn send(&self, envelope: Envelope) {
        tracing::debug!(
            namespace = %envelope.namespace,
            topic = %envelope.topic,
            r#type = %envelope.event.type_url,
            "event published"
        );
        // An error only means nobody is subscribed, which is no error for a publisher.
        let _ = self.tx.send(Arc::new(envelope));
    }
}

impl EventPublisher for Exchange {
    fn publish(&self, namespace: &Namespace, topic: &str, event: AnyValue) -> Result<()> {
        validate_topic(topic)?;
        self.send(Envelope {
            timestamp: SystemTime::now(),
            namespace: namespace.clone(),
            topic: topic.to_owned(),
            event,
        });
        Ok(())
    }

    fn forward(&self, envelope: Envelope) -> Result<()> {
        validate_envelope(&envelope)?;
        self.send(envelope);
        Ok(())
    }
}

impl EventSubscriber for Exchange {
    fn subscribe(&self, filters: Filters) -> Box<dyn Subscription> {
        Box::new(ExchangeSubscription {
            rx: self.tx.subscribe(),
            filters,
        })
    }
}

/// One subscriber's receiving end of an [`Exchange`].
struct ExchangeSubscription {
    rx: broadcast::Receiver<Arc<Envelope>>,
    filters: Filters,
}

impl Subscription for ExchangeSubscription {
    fn next(&mut self) -> BoxFuture<'_, Option<Envelope>> {
        Box::pin(async move {
            loop {
                match self.rx.recv().await {
                    Ok(envelope) => {
                        if self.filters.matches(&*envelope) {
                            return Some(Envelope::clone(&envelope));
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(lost)) => {
                        tracing::warn!(lost, "event subscriber fell behind; dropped events");
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use berth_core::ErrorKind;

    use super::*;

    fn ns(name: &str) -> Namespace {
        Namespace::new(name).unwrap()
    }

    fn payload(n: u8) -> AnyValue {
        AnyValue::new("containerd.events.ContainerDelete", vec![n])
    }

    async fn next(sub: &mut Box<dyn Subscription>) -> Envelope {
        tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await
            .expect("an event within 5s")
            .expect("exchange open")
    }

    #[tokio::test]
    async fn subscribers_see_what_matches_their_filters() {
        let ex = Exchange::new();
        let mut all = ex.subscribe(Filters::all());
        let mut creates =
            ex.subscribe(Filters::parse(&[r#"topic=="/containers/create""#]).unwrap());
        let mut other_ns = ex.subscribe(Filters::parse(&["namespace==other"]).unwrap());
        assert_eq!(ex.subscribers(), 3);

        let before = SystemTime::now();
        ex.publish(&ns("default"), "/containers/delete", payload(1))
            .unwrap();
        ex.publish(&ns("default"), "/containers/create", payload(2))
            .unwrap();
        ex.publish(&ns("other"), "/images/create", payload(3))
            .unwrap();

        let first = next(&mut all).await;
        assert_eq!(first.topic, "/containers/delete");
        assert_eq!(first.namespace, ns("default"));
        assert_eq!(first.event, payload(1));
        assert!(first.timestamp >= before);
        assert_eq!(next(&mut all).await.event, payload(2));
        assert_eq!(next(&mut all).await.event, payload(3));
        assert_eq!(next(&mut creates).await.event, payload(2));
        assert_eq!(next(&mut other_ns).await.event, payload(3));

        drop(all);
        assert_eq!(ex.subscribers(), 2);
    }

    #[tokio::test]
    async fn bad_topics_and_envelopes_are_refused() {
        let ex = Exchange::new();
        for bad in ["", "tasks", "/", "/a//b", "/a b"] {
            let err = ex.publish(&ns("default"), bad, payload(0)).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{bad:?}");
        }
        let envelope = Envelope {
            timestamp: SystemTime::UNIX_EPOCH,
            namespace: ns("default"),
            topic: "/tasks/exit".into(),
            event: payload(0),
        };
        assert_eq!(
            ex.forward(envelope.clone()).unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
        // Publishing with nobody listening is fine.
        ex.forward(Envelope {
            timestamp: SystemTime::now(),
            ..envelope
        })
        .unwrap();
    }

    #[tokio::test]
    async fn forward_keeps_the_envelope() {
        let ex = Exchange::new();
        let mut sub = ex.subscribe(Filters::all());
        let sent = Envelope {
            timestamp: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            namespace: ns("shim-ns"),
            topic: "/tasks/exit".into(),
            event: payload(7),
        };
        ex.forward(sent.clone()).unwrap();
        assert_eq!(next(&mut sub).await, sent);
    }

    #[tokio::test]
    async fn a_slow_subscriber_loses_events_without_blocking_publishers() {
        let ex = Exchange::with_capacity(4);
        let mut slow = ex.subscribe(Filters::all());
        // Far more than the capacity: publish must return at once every time.
        for n in 0..100u8 {
            ex.publish(&ns("default"), "/x", payload(n)).unwrap();
        }
        // The subscriber skips what it lost and continues with the newest events.
        let got = next(&mut slow).await;
        assert_eq!(got.event, payload(96));
        ex.publish(&ns("default"), "/x", payload(200)).unwrap();
        for want in [97, 98, 99, 200] {
            assert_eq!(next(&mut slow).await.event, payload(want));
        }
    }

    #[tokio::test]
    async fn subscriptions_end_with_the_exchange() {
        let ex = Exchange::new();
        let mut sub = ex.subscribe(Filters::all());
        drop(ex);
        assert!(sub.next().await.is_none());
    }
}
