//! Event helpers: publish, forward and subscribe (`containerd.services.events.v1.Events`), and
//! [`event_json`], which renders containerd's event payloads for people and scripts.

use std::collections::HashMap;

use berth_core::events::Envelope;
use berth_core::{AnyValue, Error, Namespace, Result};
use berth_proto::containerd::events as ev;
use berth_proto::containerd::services::events::v1 as pb;
use berth_proto::containerd::services::images::v1 as images_ev;
use berth_proto::{any_is, from_any, to_any_value, to_wire_any};
use prost_types::Timestamp;
use serde_json::{Map, Value};
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

/// A JSON object that, like Go's `omitempty`, leaves out empty strings, zeros, empty maps and
/// unset times, so the output reads as `ctr events` prints the same event.
#[derive(Default)]
struct Obj(Map<String, Value>);

impl Obj {
    fn str(mut self, key: &str, v: &str) -> Self {
        if !v.is_empty() {
            self.0.insert(key.to_owned(), v.into());
        }
        self
    }

    fn num(mut self, key: &str, v: u32) -> Self {
        if v != 0 {
            self.0.insert(key.to_owned(), v.into());
        }
        self
    }

    fn flag(mut self, key: &str, v: bool) -> Self {
        if v {
            self.0.insert(key.to_owned(), v.into());
        }
        self
    }

    fn labels(mut self, key: &str, v: &HashMap<String, String>) -> Self {
        if !v.is_empty() {
            let sorted: Map<String, Value> = v
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().into()))
                .collect();
            self.0.insert(key.to_owned(), sorted.into());
        }
        self
    }

    fn time(mut self, key: &str, v: Option<&Timestamp>) -> Self {
        let t = convert::known_time(convert::system_time(v));
        if let Some(t) = t {
            let t: chrono::DateTime<chrono::Utc> = t.into();
            let s = t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
            self.0.insert(key.to_owned(), s.into());
        }
        self
    }

    fn any(mut self, key: &str, v: Option<&prost_types::Any>) -> Self {
        if let Some(any) = v {
            // The payload is opaque here; its type says what it is.
            let inner = Obj::default().str("type_url", &any.type_url);
            self.0.insert(key.to_owned(), inner.done());
        }
        self
    }

    fn value(mut self, key: &str, v: Value) -> Self {
        let empty = match &v {
            Value::Null => true,
            Value::Object(o) => o.is_empty(),
            Value::Array(a) => a.is_empty(),
            _ => false,
        };
        if !empty {
            self.0.insert(key.to_owned(), v);
        }
        self
    }

    fn done(self) -> Value {
        Value::Object(self.0)
    }
}

/// containerd's event payload `event` as JSON with its proto field names (`container_id`,
/// `exit_status`, …), as `ctr events` prints it; `None` for a type this client does not know
/// or bytes that do not decode.
pub fn event_json(event: &AnyValue) -> Option<Value> {
    let any = to_wire_any(event);
    macro_rules! decode {
        ($($ty:ty => |$e:ident| $obj:expr),* $(,)?) => {
            $(
                if any_is::<$ty>(&any) {
                    let $e: $ty = from_any(&any).ok()?;
                    return Some($obj.done());
                }
            )*
        };
    }
    let o = Obj::default;
    decode! {
        ev::ContainerCreate => |e| o().str("id", &e.id).str("image", &e.image).value(
            "runtime",
            e.runtime.as_ref().map_or(Value::Null, |r| {
                o().str("name", &r.name).any("options", r.options.as_ref()).done()
            }),
        ),
        ev::ContainerUpdate => |e| o()
            .str("id", &e.id)
            .str("image", &e.image)
            .labels("labels", &e.labels)
            .str("snapshot_key", &e.snapshot_key),
        ev::ContainerDelete => |e| o().str("id", &e.id),
        ev::ContentDelete => |e| o().str("digest", &e.digest),
        images_ev::ImageCreate => |e| o().str("name", &e.name).labels("labels", &e.labels),
        images_ev::ImageUpdate => |e| o().str("name", &e.name).labels("labels", &e.labels),
        images_ev::ImageDelete => |e| o().str("name", &e.name),
        ev::NamespaceCreate => |e| o().str("name", &e.name).labels("labels", &e.labels),
        ev::NamespaceUpdate => |e| o().str("name", &e.name).labels("labels", &e.labels),
        ev::NamespaceDelete => |e| o().str("name", &e.name),
        ev::SnapshotPrepare => |e| o().str("key", &e.key).str("parent", &e.parent),
        ev::SnapshotCommit => |e| o().str("key", &e.key).str("name", &e.name),
        ev::SnapshotRemove => |e| o().str("key", &e.key),
        ev::TaskCreate => |e| o()
            .str("container_id", &e.container_id)
            .str("bundle", &e.bundle)
            .value(
                "rootfs",
                e.rootfs
                    .iter()
                    .map(|m| {
                        o().str("type", &m.r#type)
                            .str("source", &m.source)
                            .str("target", &m.target)
                            .value("options", Value::from(m.options.clone()))
                            .done()
                    })
                    .collect(),
            )
            .value(
                "io",
                e.io.as_ref().map_or(Value::Null, |io| {
                    o().str("stdin", &io.stdin)
                        .str("stdout", &io.stdout)
                        .str("stderr", &io.stderr)
                        .flag("terminal", io.terminal)
                        .done()
                }),
            )
            .str("checkpoint", &e.checkpoint)
            .num("pid", e.pid),
        ev::TaskStart => |e| o().str("container_id", &e.container_id).num("pid", e.pid),
        ev::TaskDelete => |e| o()
            .str("container_id", &e.container_id)
            .num("pid", e.pid)
            .num("exit_status", e.exit_status)
            .time("exited_at", e.exited_at.as_ref())
            .str("id", &e.id),
        ev::TaskExit => |e| o()
            .str("container_id", &e.container_id)
            .str("id", &e.id)
            .num("pid", e.pid)
            .num("exit_status", e.exit_status)
            .time("exited_at", e.exited_at.as_ref()),
        ev::TaskOom => |e| o().str("container_id", &e.container_id),
        ev::TaskExecAdded => |e| o()
            .str("container_id", &e.container_id)
            .str("exec_id", &e.exec_id),
        ev::TaskExecStarted => |e| o()
            .str("container_id", &e.container_id)
            .str("exec_id", &e.exec_id)
            .num("pid", e.pid),
        ev::TaskPaused => |e| o().str("container_id", &e.container_id),
        ev::TaskResumed => |e| o().str("container_id", &e.container_id),
        ev::TaskCheckpointed => |e| o()
            .str("container_id", &e.container_id)
            .str("checkpoint", &e.checkpoint),
    }
    None
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

    #[test]
    fn payloads_render_as_ctr_prints_them() {
        use berth_proto::any_value_of;
        use serde_json::json;

        let create = any_value_of(&ev::ContainerCreate {
            id: "web".into(),
            image: "busybox".into(),
            runtime: Some(ev::container_create::Runtime {
                name: "io.containerd.runc.v2".into(),
                options: None,
            }),
        });
        assert_eq!(
            event_json(&create),
            Some(
                json!({"id": "web", "image": "busybox", "runtime": {"name": "io.containerd.runc.v2"}})
            )
        );
        let exit = any_value_of(&ev::TaskExit {
            container_id: "c".into(),
            id: "c".into(),
            pid: 7,
            exit_status: 0,
            exited_at: Some(Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
        });
        assert_eq!(
            event_json(&exit),
            Some(json!({"container_id": "c", "id": "c", "pid": 7,
                        "exited_at": "2023-11-14T22:13:20.000000000Z"}))
        );
        let image = any_value_of(&images_ev::ImageDelete { name: "x:1".into() });
        assert_eq!(event_json(&image), Some(json!({"name": "x:1"})));
        assert_eq!(event_json(&AnyValue::new("unknown.Type", vec![1])), None);
        let garbage = AnyValue::new("containerd.events.TaskExit", vec![0xff; 3]);
        assert_eq!(event_json(&garbage), None);
    }
}
