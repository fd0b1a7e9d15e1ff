//! Events: what changed, published on topics such as `/containers/create` and delivered to
//! every subscriber whose filters match.
//!
//! An [`Envelope`] carries the time, the namespace the change happened in, the topic and the
//! payload as an [`AnyValue`] (containerd's event messages, e.g. `containerd.events.TaskExit`).
//! Services publish after a mutation succeeded; publishing never waits for subscribers, and a
//! subscriber that falls behind loses events rather than slowing anyone down.
//!
//! Subscribers filter with containerd's filter syntax on `topic` and `namespace`
//! (`topic=="/tasks/exit"`, `namespace==default,topic~="^/images/"`).

use std::time::SystemTime;

use crate::any::AnyValue;
use crate::filters::{Adaptor, Filters};
use crate::{BoxFuture, Error, Namespace, Result, identifiers};

/// containerd's topics; each constant's doc names the payload type published on it.
pub mod topics {
    /// A container record was created (`containerd.events.ContainerCreate`).
    pub const CONTAINER_CREATE: &str = "/containers/create";
    /// A container record changed (`containerd.events.ContainerUpdate`).
    pub const CONTAINER_UPDATE: &str = "/containers/update";
    /// A container record was removed (`containerd.events.ContainerDelete`).
    pub const CONTAINER_DELETE: &str = "/containers/delete";
    /// An image record was created (`containerd.services.images.v1.ImageCreate`).
    pub const IMAGE_CREATE: &str = "/images/create";
    /// An image record changed (`containerd.services.images.v1.ImageUpdate`).
    pub const IMAGE_UPDATE: &str = "/images/update";
    /// An image record was removed (`containerd.services.images.v1.ImageDelete`).
    pub const IMAGE_DELETE: &str = "/images/delete";
    /// A namespace was created (`containerd.events.NamespaceCreate`).
    pub const NAMESPACE_CREATE: &str = "/namespaces/create";
    /// A namespace's labels changed (`containerd.events.NamespaceUpdate`).
    pub const NAMESPACE_UPDATE: &str = "/namespaces/update";
    /// A namespace was removed (`containerd.events.NamespaceDelete`).
    pub const NAMESPACE_DELETE: &str = "/namespaces/delete";
    /// A snapshot was prepared (`containerd.events.SnapshotPrepare`); singular, as containerd.
    pub const SNAPSHOT_PREPARE: &str = "/snapshot/prepare";
    /// A snapshot was committed (`containerd.events.SnapshotCommit`).
    pub const SNAPSHOT_COMMIT: &str = "/snapshot/commit";
    /// A snapshot was removed (`containerd.events.SnapshotRemove`).
    pub const SNAPSHOT_REMOVE: &str = "/snapshot/remove";
    /// A blob left a namespace's content store (`containerd.events.ContentDelete`).
    pub const CONTENT_DELETE: &str = "/content/delete";
    /// A task was created (`containerd.events.TaskCreate`).
    pub const TASK_CREATE: &str = "/tasks/create";
    /// A task started (`containerd.events.TaskStart`).
    pub const TASK_START: &str = "/tasks/start";
    /// A task's process exited (`containerd.events.TaskExit`).
    pub const TASK_EXIT: &str = "/tasks/exit";
    /// A task was deleted (`containerd.events.TaskDelete`).
    pub const TASK_DELETE: &str = "/tasks/delete";
    /// A task ran out of memory (`containerd.events.TaskOOM`).
    pub const TASK_OOM: &str = "/tasks/oom";
    /// An exec process was added (`containerd.events.TaskExecAdded`).
    pub const TASK_EXEC_ADDED: &str = "/tasks/exec-added";
    /// An exec process started (`containerd.events.TaskExecStarted`).
    pub const TASK_EXEC_STARTED: &str = "/tasks/exec-started";
    /// A task was paused (`containerd.events.TaskPaused`).
    pub const TASK_PAUSED: &str = "/tasks/paused";
    /// A task was resumed (`containerd.events.TaskResumed`).
    pub const TASK_RESUMED: &str = "/tasks/resumed";
    /// A task was checkpointed (`containerd.events.TaskCheckpointed`).
    pub const TASK_CHECKPOINTED: &str = "/tasks/checkpointed";
}

/// One event with its routing information.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// When the event was published.
    pub timestamp: SystemTime,
    /// The namespace the change happened in.
    pub namespace: Namespace,
    /// The topic, e.g. `/tasks/exit` (see [`validate_topic`]).
    pub topic: String,
    /// The payload.
    pub event: AnyValue,
}

/// Filter fields: `namespace` and `topic`, as containerd's envelope offers them (containerd's
/// `event.*` decodes the payload; Berth's exchange never decodes payloads).
impl Adaptor for Envelope {
    fn field(&self, path: &[String]) -> Option<String> {
        match (path.first().map(String::as_str)?, path.len()) {
            ("namespace", 1) => Some(self.namespace.to_string()),
            ("topic", 1) => Some(self.topic.clone()).filter(|t| !t.is_empty()),
            _ => None,
        }
    }
}

/// Checks a topic as containerd does: it starts with `/` and every `/`-separated component is
/// an identifier (`[A-Za-z0-9]+([._-][A-Za-z0-9]+)*`). InvalidArgument otherwise.
pub fn validate_topic(topic: &str) -> Result<()> {
    let bad = |why: &str| Error::invalid_argument(format!("envelope topic {topic:?}: {why}"));
    let Some(rest) = topic.strip_prefix('/') else {
        return Err(bad(if topic.is_empty() {
            "must not be empty"
        } else {
            "must start with '/'"
        }));
    };
    if rest.is_empty() {
        return Err(bad("must have at least one component"));
    }
    for component in rest.split('/') {
        identifiers::validate("topic component", component)
            .map_err(|e| e.context(format!("envelope topic {topic:?}")))?;
    }
    Ok(())
}

/// Checks a forwarded envelope: a valid topic and a set timestamp (the namespace is valid by
/// construction). InvalidArgument otherwise.
pub fn validate_envelope(envelope: &Envelope) -> Result<()> {
    validate_topic(&envelope.topic)?;
    if envelope.timestamp == SystemTime::UNIX_EPOCH {
        return Err(Error::invalid_argument(
            "timestamp must be set on forwarded event",
        ));
    }
    Ok(())
}

/// Publishes events. Both methods return at once: delivery to subscribers happens behind them,
/// and a subscriber that cannot keep up loses events instead of blocking the publisher.
pub trait EventPublisher: Send + Sync {
    /// Publishes `event` on `topic` in `namespace`, stamped with the current time;
    /// InvalidArgument for a malformed topic (see [`validate_topic`]).
    fn publish(&self, namespace: &Namespace, topic: &str, event: AnyValue) -> Result<()>;

    /// Re-publishes a complete envelope as received from elsewhere (a shim, another
    /// exchange), keeping its namespace and time; InvalidArgument when it does not pass
    /// [`validate_envelope`].
    fn forward(&self, envelope: Envelope) -> Result<()>;
}

/// One subscriber's stream of envelopes, from the moment it subscribed.
pub trait Subscription: Send {
    /// The next envelope matching the subscription's filters; `None` once the exchange is
    /// gone. Events lost because this subscriber fell behind are skipped (and logged).
    fn next(&mut self) -> BoxFuture<'_, Option<Envelope>>;
}

/// Hands out subscriptions.
pub trait EventSubscriber: Send + Sync {
    /// Subscribes to every envelope published from now on that matches `filters`.
    fn subscribe(&self, filters: Filters) -> Box<dyn Subscription>;
}

/// An event bus: publishing and subscribing, what the Events service serves.
pub trait EventExchange: EventPublisher + EventSubscriber {}

impl<T: EventPublisher + EventSubscriber + ?Sized> EventExchange for T {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn envelope(topic: &str) -> Envelope {
        Envelope {
            timestamp: SystemTime::now(),
            namespace: Namespace::new("default").unwrap(),
            topic: topic.into(),
            event: AnyValue::new("containerd.events.ContainerDelete", vec![]),
        }
    }

    #[test]
    fn topics() {
        for ok in [
            topics::CONTAINER_CREATE,
            topics::TASK_EXEC_ADDED,
            topics::SNAPSHOT_PREPARE,
            "/a",
            "/a/b.c/d-e",
        ] {
            validate_topic(ok).unwrap();
        }
        for bad in [
            "",
            "/",
            "tasks/exit",
            "/tasks/",
            "//x",
            "/a b",
            "/a/../b",
            "/ü",
        ] {
            let err = validate_topic(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{bad:?}");
        }
    }

    #[test]
    fn envelopes() {
        validate_envelope(&envelope("/x")).unwrap();
        let mut zero = envelope("/x");
        zero.timestamp = SystemTime::UNIX_EPOCH;
        assert_eq!(
            validate_envelope(&zero).unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
        assert!(validate_envelope(&envelope("x")).is_err());
    }

    #[test]
    fn filter_fields() {
        let e = envelope(topics::CONTAINER_CREATE);
        let m = |f: &str| Filters::parse(&[f]).unwrap().matches(&e);
        assert!(m(r#"topic=="/containers/create""#));
        assert!(m(r#"topic~="^/containers/""#));
        assert!(!m(r#"topic=="/containers/delete""#));
        assert!(m("namespace==default"));
        assert!(!m("namespace==other"));
        assert!(m(r#"namespace==default,topic~="create$""#));
        assert!(!m("event"));
    }
}
