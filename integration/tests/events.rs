//! Events end to end: what the services publish (containerd's topics and payload types, in the
//! request's namespace), filtered subscriptions, Publish and Forward, and containerd's
//! `ctr events` printing what berthd publishes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use berth_client::EventStream;
use berth_core::containers::{Container, RUNTIME_SPEC_TYPE_URL};
use berth_core::diff::Descriptor;
use berth_core::events::Envelope;
use berth_core::gc::ROOT_LABEL;
use berth_core::images::{Image, MEDIA_TYPE_OCI_MANIFEST};
use berth_core::labels::Labels;
use berth_core::{AnyValue, Digest, ErrorKind, Namespace};
use berth_integration::{Daemon, ctr_path};
use berth_proto::containerd::events as ev;
use berth_proto::containerd::services::events::v1 as pb;
use berth_proto::containerd::services::images::v1 as images_ev;
use berth_proto::{any_value_of, from_any, to_wire_any};

fn container(id: &str) -> Container {
    let mut c = Container::new(
        id,
        "io.containerd.runc.v2",
        AnyValue::new(
            RUNTIME_SPEC_TYPE_URL,
            br#"{"ociVersion":"1.0.2-dev"}"#.to_vec(),
        ),
    );
    c.image = "busybox:latest".into();
    c
}

/// The next event, failing the test after 10 s.
async fn next(stream: &mut EventStream) -> Envelope {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("an event within 10s")
        .unwrap()
        .expect("the stream is open")
}

/// Whether another event arrives within `wait`.
async fn quiet_for(stream: &mut EventStream, wait: Duration) -> Option<Envelope> {
    tokio::time::timeout(wait, stream.next())
        .await
        .ok()
        .map(|r| r.unwrap().expect("the stream is open"))
}

fn decode<M: prost::Message + prost::Name + Default>(e: &Envelope) -> M {
    from_any(&to_wire_any(&e.event)).unwrap_or_else(|err| panic!("{err}: {e:?}"))
}

#[tokio::test]
async fn a_filtered_subscriber_sees_exactly_the_create() {
    let d = Daemon::start();
    let client = d.client("ev-filter").await;
    let mut creates = client
        .events()
        .subscribe(&[r#"topic=="/containers/create""#.to_owned()])
        .await
        .unwrap();
    let mut all = client.events().subscribe(&[]).await.unwrap();

    let before = SystemTime::now();
    let mut web = container("web");
    web.runtime.options = Some(AnyValue::new("containerd.runc.v1.Options", vec![]));
    client.containers().create(&web).await.unwrap();
    let mut change = web.clone();
    change.labels.insert("k".into(), "v".into());
    client
        .containers()
        .update(&change, &["labels.k".into()])
        .await
        .unwrap();
    client.containers().delete("web").await.unwrap();

    // The unfiltered subscriber sees all three, in order: once it has the delete, the filtered
    // one has been offered everything too.
    let topics: Vec<String> = [
        next(&mut all).await,
        next(&mut all).await,
        next(&mut all).await,
    ]
    .into_iter()
    .map(|e| e.topic)
    .collect();
    assert_eq!(
        topics,
        [
            "/containers/create",
            "/containers/update",
            "/containers/delete"
        ]
    );

    let create = next(&mut creates).await;
    assert_eq!(create.topic, "/containers/create");
    assert_eq!(create.namespace.as_str(), "ev-filter");
    assert!(create.timestamp >= before - Duration::from_secs(1));
    assert_eq!(create.event.type_url, "containerd.events.ContainerCreate");
    let payload: ev::ContainerCreate = decode(&create);
    assert_eq!(payload.id, "web");
    assert_eq!(payload.image, "busybox:latest");
    let runtime = payload.runtime.unwrap();
    assert_eq!(runtime.name, "io.containerd.runc.v2");
    assert_eq!(
        runtime.options.unwrap().type_url,
        "containerd.runc.v1.Options"
    );
    if let Some(extra) = quiet_for(&mut creates, Duration::from_millis(300)).await {
        panic!("the filtered subscriber got more: {extra:?}");
    }
}

#[tokio::test]
async fn mutations_publish_containerds_topics_in_the_request_namespace() {
    let d = Daemon::start();
    let ns = "ev-topics";
    let client = d.client(ns).await;
    let mut stream = client
        .events()
        .subscribe(&[
            format!("namespace=={ns}"),
            "namespace==ev-created".to_owned(),
        ])
        .await
        .unwrap();
    // Events of other namespaces are filtered out.
    d.client("ev-elsewhere")
        .await
        .containers()
        .create(&container("x"))
        .await
        .unwrap();

    // Deletes schedule collections, so nothing below may rely on an unrooted record outliving
    // one: the snapshots are made and removed before the image delete schedules the first.
    let snapshots = client.snapshots("native");
    snapshots
        .prepare("extract", None, &Labels::new())
        .await
        .unwrap();
    snapshots
        .commit("layer", "extract", &Labels::new())
        .await
        .unwrap();
    snapshots.remove("layer").await.unwrap();

    // A root, so no collection a delete scheduled can take it before it is deleted here.
    let root = Labels::from([(ROOT_LABEL.to_owned(), "yes".to_owned())]);
    let blob = client
        .content()
        .write_blob(b"event blob", root)
        .await
        .unwrap();
    client.content().delete(&blob).await.unwrap();

    let image = Image::new(
        "ev.test/img:1",
        Descriptor::new(MEDIA_TYPE_OCI_MANIFEST, Digest::of(b"m"), 10),
    );
    client.images().create(&image).await.unwrap();
    client.images().update(&image, &[]).await.unwrap();
    client
        .images()
        .delete("ev.test/img:1", false)
        .await
        .unwrap();

    client
        .namespaces()
        .create("ev-created", Labels::from([("a".into(), "1".into())]))
        .await
        .unwrap();
    client.namespaces().delete("ev-created").await.unwrap();

    let image_event = |topic, ty| (ns, topic, ty);
    let want = [
        (ns, "/snapshot/prepare", "containerd.events.SnapshotPrepare"),
        (ns, "/snapshot/commit", "containerd.events.SnapshotCommit"),
        (ns, "/snapshot/remove", "containerd.events.SnapshotRemove"),
        (ns, "/content/delete", "containerd.events.ContentDelete"),
        image_event(
            "/images/create",
            "containerd.services.images.v1.ImageCreate",
        ),
        image_event(
            "/images/update",
            "containerd.services.images.v1.ImageUpdate",
        ),
        image_event(
            "/images/delete",
            "containerd.services.images.v1.ImageDelete",
        ),
        (
            "ev-created",
            "/namespaces/create",
            "containerd.events.NamespaceCreate",
        ),
        (
            "ev-created",
            "/namespaces/delete",
            "containerd.events.NamespaceDelete",
        ),
    ];
    let mut got = Vec::new();
    for _ in want {
        got.push(next(&mut stream).await);
    }
    let seen: Vec<(&str, &str, &str)> = got
        .iter()
        .map(|e| {
            (
                e.namespace.as_str(),
                e.topic.as_str(),
                e.event.type_url.as_str(),
            )
        })
        .collect();
    assert_eq!(seen, want);

    let commit: ev::SnapshotCommit = decode(&got[1]);
    assert_eq!(
        (commit.key.as_str(), commit.name.as_str()),
        ("extract", "layer")
    );
    let content: ev::ContentDelete = decode(&got[3]);
    assert_eq!(content.digest, blob.to_string());
    let image_delete: images_ev::ImageDelete = decode(&got[6]);
    assert_eq!(image_delete.name, "ev.test/img:1");
    let created: ev::NamespaceCreate = decode(&got[7]);
    assert_eq!(created.labels.get("a").map(String::as_str), Some("1"));
}

#[tokio::test]
async fn publish_validates_topics_and_forward_keeps_the_envelope() {
    let d = Daemon::start();
    let client = d.client("ev-pub").await;
    let mut stream = client.events().subscribe(&[]).await.unwrap();
    let payload = any_value_of(&ev::TaskOom {
        container_id: "c1".into(),
    });

    for bad in ["", "tasks/oom", "/", "/tasks//oom", "/tasks/o om"] {
        let err = client.events().publish(bad, &payload).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{bad:?}: {err}");
    }
    // An event is required.
    let status = client
        .rpc()
        .events()
        .publish(pb::PublishRequest {
            topic: "/tasks/oom".into(),
            event: None,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);

    client
        .events()
        .publish("/tasks/oom", &payload)
        .await
        .unwrap();
    let published = next(&mut stream).await;
    assert_eq!(published.namespace.as_str(), "ev-pub");
    assert_eq!(published.topic, "/tasks/oom");
    assert_eq!(published.event, payload);
    let oom: ev::TaskOom = decode(&published);
    assert_eq!(oom.container_id, "c1");

    // Forward republishes the envelope as it is: its namespace, not the caller's, and its time.
    let forwarded = Envelope {
        timestamp: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        namespace: Namespace::new("ev-shim").unwrap(),
        topic: "/tasks/exit".into(),
        event: any_value_of(&ev::TaskExit {
            container_id: "c1".into(),
            id: "c1".into(),
            pid: 42,
            exit_status: 3,
            exited_at: None,
        }),
    };
    client.events().forward(&forwarded).await.unwrap();
    assert_eq!(next(&mut stream).await, forwarded);

    let unstamped = pb::ForwardRequest {
        envelope: Some(pb::Envelope {
            timestamp: None,
            namespace: "ev-shim".into(),
            topic: "/tasks/exit".into(),
            event: Some(to_wire_any(&payload)),
        }),
    };
    let status = client.rpc().events().forward(unstamped).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    let bad_ns = Envelope {
        topic: "/tasks/exit".into(),
        ..forwarded.clone()
    };
    let mut wire = berth_client::events::wire_envelope(&bad_ns);
    wire.namespace = "no/such".into();
    let status = client
        .rpc()
        .events()
        .forward(pb::ForwardRequest {
            envelope: Some(wire),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");

    let bad_filter = client.events().subscribe(&["topic==".to_owned()]).await;
    assert_eq!(bad_filter.unwrap_err().kind(), ErrorKind::InvalidArgument);
    if let Some(extra) = quiet_for(&mut stream, Duration::from_millis(200)).await {
        panic!("refused events were delivered: {extra:?}");
    }
}

/// Kills an `events` child however the test ends.
struct Child(std::process::Child);

/// Starts `cmd` with its stdout read line by line into the returned channel.
fn spawn_lines(mut cmd: Command) -> (Child, mpsc::Receiver<String>) {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = Child(cmd.spawn().unwrap());
    let stdout = child.0.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                return;
            }
        }
    });
    (child, lines)
}

/// Creates containers `<prefix>-0`, `<prefix>-1`, … in `client`'s namespace until a line with
/// `/containers/create` arrives (the command subscribes at some point after it starts), and
/// returns that line.
async fn create_until_printed(
    client: &berth_client::Client,
    prefix: &str,
    lines: &mpsc::Receiver<String>,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    for n in 0.. {
        assert!(Instant::now() < deadline, "nothing printed for {n} creates");
        client
            .containers()
            .create(&container(&format!("{prefix}-{n}")))
            .await
            .unwrap();
        match lines.recv_timeout(Duration::from_millis(300)) {
            Ok(line) if line.contains("/containers/create") => return line,
            Ok(line) => panic!("unexpected line: {line}"),
            Err(_) => {}
        }
    }
    unreachable!()
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn ctr_events_prints_what_berthd_publishes() {
    let d = Daemon::start();
    let ns = "ev-ctr";
    let mut ctr = Command::new(ctr_path());
    ctr.arg("--address")
        .arg(d.socket())
        .args(["events", "topic~=\"^/containers/\""]);
    let (_child, lines) = spawn_lines(ctr);
    let client = d.client(ns).await;
    let line = create_until_printed(&client, "ctr-ev", &lines).await;
    // `<time> <namespace> <topic> <event as JSON>`, the event decoded by ctr's type registry.
    let marker = format!(" {ns} /containers/create ");
    let json = &line[line.find(&marker).unwrap_or_else(|| panic!("{line}")) + marker.len()..];
    let event: serde_json::Value = serde_json::from_str(json).unwrap();
    assert!(
        event["id"].as_str().unwrap().starts_with("ctr-ev-"),
        "{line}"
    );
    assert_eq!(event["image"], "busybox:latest", "{line}");
    assert_eq!(event["runtime"]["name"], "io.containerd.runc.v2", "{line}");

    // Once subscribed, later events are printed too, and the filter keeps others out.
    let image = Image::new(
        "ev.test/filtered:1",
        Descriptor::new(MEDIA_TYPE_OCI_MANIFEST, Digest::of(b"m"), 10),
    );
    client.images().create(&image).await.unwrap();
    client.containers().delete("ctr-ev-0").await.unwrap();
    let line = loop {
        let line = lines.recv_timeout(Duration::from_secs(10)).unwrap();
        // A create printed late, after the one matched above.
        if !line.contains(&marker) {
            break line;
        }
    };
    assert!(
        line.contains(&format!(" {ns} /containers/delete ")),
        "{line}"
    );
    assert!(line.ends_with(r#"{"id":"ctr-ev-0"}"#), "{line}");
}

#[tokio::test]
async fn berthctl_events_streams_json_lines() {
    let d = Daemon::start();
    let ns = "ev-berthctl";
    let mut berthctl = Command::new(berth_integration::bin("berthctl"));
    berthctl.arg("--address").arg(d.socket()).args([
        "events",
        "--format",
        "json",
        "topic==\"/containers/create\"",
    ]);
    let (_child, lines) = spawn_lines(berthctl);
    let client = d.client(ns).await;
    let line = create_until_printed(&client, "bctl", &lines).await;
    let event: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["namespace"], ns, "{line}");
    assert_eq!(event["topic"], "/containers/create", "{line}");
    assert_eq!(event["type"], "containerd.events.ContainerCreate", "{line}");
    assert!(
        event["event"]["id"].as_str().unwrap().starts_with("bctl-"),
        "{line}"
    );
    assert_eq!(
        event["event"]["runtime"]["name"], "io.containerd.runc.v2",
        "{line}"
    );
    let time = event["timestamp"].as_str().unwrap();
    assert!(time.ends_with('Z') && time.len() > 20, "{line}");
}
