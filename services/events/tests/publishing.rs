//! The publishing stores over the real metadata store: each successful change is announced once,
//! with containerd's topic, payload type and the request's namespace; failed calls and reads
//! announce nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use berth_core::containers::{Container, ContainerStore, RUNTIME_SPEC_TYPE_URL};
use berth_core::content::ContentStore;
use berth_core::events::{Envelope, EventSubscriber, Subscription};
use berth_core::filters::Filters;
use berth_core::images::{Image, ImageStore, MEDIA_TYPE_OCI_MANIFEST};
use berth_core::labels::Labels;
use berth_core::namespaces::{NamespaceInfo, NamespaceStore};
use berth_core::snapshots::SnapshotStore;
use berth_core::{AnyValue, Digest, Namespace, RequestContext};
use berth_events::{Exchange, Publishing};
use berth_metadata::{GcOptions, Metadata};
use berth_proto::containerd::events as ev;
use berth_proto::containerd::services::images::v1 as images_ev;
use berth_proto::to_wire_any;
use prost::{Message, Name};

struct Env {
    store: Publishing<Metadata>,
    exchange: Arc<Exchange>,
    _dir: tempfile::TempDir,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let blobs = berth_content::LocalStore::open(dir.path().join("content")).unwrap();
    let md = Metadata::open(
        &dir.path().join("meta.redb"),
        Arc::new(blobs),
        GcOptions::default(),
    )
    .unwrap();
    let native = berth_snapshot_native::NativeSnapshotter::open(dir.path().join("native")).unwrap();
    md.add_snapshotter("native", Arc::new(native)).unwrap();
    let exchange = Arc::new(Exchange::new());
    Env {
        store: Publishing::new(md, exchange.clone()),
        exchange,
        _dir: dir,
    }
}

fn ctx(ns: &str) -> RequestContext {
    RequestContext::new(Namespace::new(ns).unwrap())
}

/// Everything published so far, in order; waits briefly for the last one to be sure none is
/// pending.
async fn drain(sub: &mut Box<dyn Subscription>) -> Vec<Envelope> {
    let mut out = Vec::new();
    while let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(100), sub.next()).await {
        out.push(e);
    }
    out
}

fn decode<M: Message + Name + Default>(e: &Envelope) -> M {
    assert_eq!(e.event.type_url, M::full_name(), "{e:?}");
    M::decode(e.event.value.as_slice()).unwrap()
}

#[tokio::test]
async fn containers_and_images_announce_changes() {
    let env = env();
    let mut sub = env.exchange.subscribe(Filters::all());
    let c = ctx("team-a");

    let options = AnyValue::new("containerd.runc.v1.Options", vec![8, 1]);
    let mut web = Container::new(
        "web",
        "io.containerd.runc.v2",
        AnyValue::new(RUNTIME_SPEC_TYPE_URL, b"{}".to_vec()),
    );
    web.image = "busybox:latest".into();
    web.runtime.options = Some(options.clone());
    ContainerStore::create(&env.store, &c, web.clone()).unwrap();
    // A refused create announces nothing.
    ContainerStore::create(&env.store, &c, web.clone()).unwrap_err();
    let mut change = web.clone();
    change.labels.insert("k".into(), "v".into());
    ContainerStore::update(&env.store, &c, change, &["labels.k".into()]).unwrap();
    ContainerStore::get(&env.store, &c, "web").unwrap();
    ContainerStore::delete(&env.store, &c, "web").unwrap();
    ContainerStore::delete(&env.store, &c, "web").unwrap_err();

    let img = Image::new(
        "busybox:latest",
        berth_core::diff::Descriptor::new(MEDIA_TYPE_OCI_MANIFEST, Digest::of(b"m"), 3),
    );
    ImageStore::create(&env.store, &c, img.clone()).unwrap();
    ImageStore::update(&env.store, &c, img, &[]).unwrap();
    ImageStore::delete(&env.store, &c, "busybox:latest", false).unwrap();

    let got = drain(&mut sub).await;
    let topics: Vec<&str> = got.iter().map(|e| e.topic.as_str()).collect();
    assert_eq!(
        topics,
        [
            "/containers/create",
            "/containers/update",
            "/containers/delete",
            "/images/create",
            "/images/update",
            "/images/delete"
        ]
    );
    assert!(got.iter().all(|e| e.namespace.as_str() == "team-a"));

    let create: ev::ContainerCreate = decode(&got[0]);
    assert_eq!(create.id, "web");
    assert_eq!(create.image, "busybox:latest");
    let runtime = create.runtime.unwrap();
    assert_eq!(runtime.name, "io.containerd.runc.v2");
    assert_eq!(runtime.options, Some(to_wire_any(&options)));
    let update: ev::ContainerUpdate = decode(&got[1]);
    assert_eq!(update.labels.get("k").map(String::as_str), Some("v"));
    let delete: ev::ContainerDelete = decode(&got[2]);
    assert_eq!(delete.id, "web");
    assert_eq!(got[2].event.type_url, "containerd.events.ContainerDelete");
    let image: images_ev::ImageCreate = decode(&got[3]);
    assert_eq!(image.name, "busybox:latest");
    assert_eq!(
        got[3].event.type_url,
        "containerd.services.images.v1.ImageCreate"
    );
    let image: images_ev::ImageDelete = decode(&got[5]);
    assert_eq!(image.name, "busybox:latest");
}

#[tokio::test]
async fn snapshots_content_and_namespaces_announce_changes() {
    let env = env();
    let mut sub = env.exchange.subscribe(Filters::all());
    let c = ctx("default");

    SnapshotStore::prepare(&env.store, &c, "native", "extract", None, Labels::new()).unwrap();
    SnapshotStore::commit(&env.store, &c, "native", "layer", "extract", Labels::new()).unwrap();
    SnapshotStore::view(&env.store, &c, "native", "v", Some("layer"), Labels::new()).unwrap();
    SnapshotStore::prepare(&env.store, &c, "native", "rw", Some("layer"), Labels::new()).unwrap();
    SnapshotStore::remove(&env.store, &c, "native", "rw").unwrap();

    let data = b"blob";
    let digest = Digest::of(data);
    let mut w = env
        .store
        .writer(&c, "ref", data.len() as u64, Some(digest.clone()))
        .unwrap();
    w.write(data).unwrap();
    w.commit(data.len() as u64, Some(digest.clone()), Labels::new())
        .unwrap();
    ContentStore::delete(&env.store, &c, &digest).unwrap();

    let ns = Namespace::new("fresh").unwrap();
    let labels = Labels::from([("a".to_owned(), "1".to_owned())]);
    NamespaceStore::create(&env.store, &ns, labels.clone()).unwrap();
    NamespaceStore::update(
        &env.store,
        NamespaceInfo {
            name: ns.clone(),
            labels,
        },
        &[],
    )
    .unwrap();
    NamespaceStore::delete(&env.store, &ns).unwrap();

    let got = drain(&mut sub).await;
    let topics: Vec<(&str, &str)> = got
        .iter()
        .map(|e| (e.namespace.as_str(), e.topic.as_str()))
        .collect();
    assert_eq!(
        topics,
        [
            ("default", "/snapshot/prepare"),
            ("default", "/snapshot/commit"),
            ("default", "/snapshot/prepare"),
            ("default", "/snapshot/remove"),
            ("default", "/content/delete"),
            ("fresh", "/namespaces/create"),
            ("fresh", "/namespaces/update"),
            ("fresh", "/namespaces/delete"),
        ]
    );
    let prepare: ev::SnapshotPrepare = decode(&got[2]);
    assert_eq!(
        (prepare.key.as_str(), prepare.parent.as_str()),
        ("rw", "layer")
    );
    let commit: ev::SnapshotCommit = decode(&got[1]);
    assert_eq!(
        (commit.key.as_str(), commit.name.as_str()),
        ("extract", "layer")
    );
    let remove: ev::SnapshotRemove = decode(&got[3]);
    assert_eq!(remove.key, "rw");
    let content: ev::ContentDelete = decode(&got[4]);
    assert_eq!(content.digest, digest.to_string());
    let created: ev::NamespaceCreate = decode(&got[5]);
    assert_eq!(created.name, "fresh");
    assert_eq!(created.labels.get("a").map(String::as_str), Some("1"));
}
