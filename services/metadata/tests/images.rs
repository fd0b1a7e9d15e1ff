//! Image records: the store's contract, namespace rules, persistence, and images as GC roots.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] fns fail by panicking"
)]

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use berth_core::diff::Descriptor;
use berth_core::filters::Filters;
use berth_core::gc::{GarbageCollector, REF_CONTENT_PREFIX, REF_SNAPSHOT_PREFIX};
use berth_core::images::{Image, ImageStore, MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_OCI_MANIFEST};
use berth_core::labels::Labels;
use berth_core::namespaces::NamespaceStore;
use berth_core::snapshots::SnapshotStore;
use berth_core::{Digest, ErrorKind, Namespace, RequestContext};
use berth_snapshot_native::NativeSnapshotter;
use common::{Env, assert_kind, ctx, eventually, labels};

fn images(env: &Env) -> &dyn ImageStore {
    &*env.md
}

fn manifest_image(name: &str, digest: &Digest) -> Image {
    Image::new(
        name,
        Descriptor::new(MEDIA_TYPE_OCI_MANIFEST, digest.clone(), 512),
    )
}

fn names(env: &Env, c: &RequestContext, filters: &[&str]) -> Vec<String> {
    images(env)
        .list(c, &Filters::parse(filters).unwrap())
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect()
}

/// Writes a config, a layer and a manifest that references both with the labels `ctr` sets,
/// and returns (manifest, config, layer).
fn write_image_blobs(env: &Env, c: &RequestContext, tag: &str) -> (Digest, Digest, Digest) {
    let config = env.ingest(c, format!("config {tag}").as_bytes(), Labels::new());
    let layer = env.ingest(c, format!("layer {tag}").as_bytes(), Labels::new());
    let manifest = env.ingest(
        c,
        format!("manifest {tag}").as_bytes(),
        labels(&[
            (&format!("{REF_CONTENT_PREFIX}.config"), config.as_str()),
            (&format!("{REF_CONTENT_PREFIX}.l.0"), layer.as_str()),
        ]),
    );
    (manifest, config, layer)
}

#[test]
fn create_get_list_update_delete() {
    let env = Env::new();
    let c = ctx("default");
    let target = Digest::of(b"manifest");
    let before = SystemTime::now();

    let mut img = manifest_image("docker.io/library/busybox:latest", &target);
    img.labels = labels(&[("tier", "base")]);
    // Times the client sends (Go's year 1 arrives as the epoch) are ignored.
    img.created_at = SystemTime::UNIX_EPOCH;
    let created = images(&env).create(&c, img.clone()).unwrap();
    assert_eq!(created.name, img.name);
    assert_eq!(created.target, img.target);
    assert_eq!(created.labels, img.labels);
    assert!(created.created_at >= before, "{created:?}");
    assert_eq!(created.created_at, created.updated_at);

    assert_eq!(images(&env).get(&c, &img.name).unwrap(), created);
    let err = assert_kind(
        images(&env).create(&c, img.clone()),
        ErrorKind::AlreadyExists,
    );
    assert!(err.to_string().contains("busybox"), "{err}");

    // Names are free-form, as in containerd 1.6.
    for name in ["import-2024-01-01:tag", "a@sha256:00", "x y"] {
        images(&env)
            .create(&c, manifest_image(name, &target))
            .unwrap();
    }
    assert_eq!(
        names(&env, &c, &[]),
        [
            "a@sha256:00",
            "docker.io/library/busybox:latest",
            "import-2024-01-01:tag",
            "x y"
        ]
    );
    assert_eq!(
        names(&env, &c, &["labels.tier==base", "name~=^x"]),
        ["docker.io/library/busybox:latest", "x y"]
    );
    assert_eq!(
        names(&env, &c, &[&format!("target.digest=={target}")]).len(),
        4
    );
    assert!(names(&env, &c, &["target.mediatype==nope"]).is_empty());

    // A label update under a mask keeps the target and the creation time.
    std::thread::sleep(Duration::from_millis(2));
    let mut change = manifest_image(&img.name, &Digest::of(b"ignored"));
    change.labels = labels(&[("extra", "1"), ("tier", "")]);
    let updated = images(&env)
        .update(&c, change, &["labels.extra".into(), "labels.tier".into()])
        .unwrap();
    assert_eq!(updated.labels, labels(&[("extra", "1")]));
    assert_eq!(updated.target.digest, target);
    assert_eq!(updated.created_at, created.created_at);
    assert!(updated.updated_at > created.updated_at);

    // `target` replaces the descriptor; an empty mask replaces labels and target.
    let index = Descriptor::new(MEDIA_TYPE_OCI_INDEX, Digest::of(b"index"), 99);
    let mut change = Image::new(&img.name, index.clone());
    change.labels = labels(&[("kept", "no")]);
    let updated = images(&env)
        .update(&c, change.clone(), &["target".into()])
        .unwrap();
    assert_eq!(updated.target, index);
    assert_eq!(updated.labels, labels(&[("extra", "1")]));
    let updated = images(&env).update(&c, change, &[]).unwrap();
    assert_eq!(updated.labels, labels(&[("kept", "no")]));
    assert_eq!(images(&env).get(&c, &img.name).unwrap(), updated);

    // Annotations are the target's.
    let mut change = Image::new(&img.name, index.clone());
    change.target.annotations = labels(&[("org.opencontainers.image.ref.name", "latest")]);
    let updated = images(&env)
        .update(
            &c,
            change,
            &["annotations.org.opencontainers.image.ref.name".into()],
        )
        .unwrap();
    assert_eq!(
        updated.target.annotations,
        labels(&[("org.opencontainers.image.ref.name", "latest")])
    );

    images(&env).delete(&c, &img.name, false).unwrap();
    assert_kind(images(&env).get(&c, &img.name), ErrorKind::NotFound);
    assert_kind(
        images(&env).delete(&c, &img.name, false),
        ErrorKind::NotFound,
    );
    assert_eq!(names(&env, &c, &[]).len(), 3);
}

#[test]
fn errors() {
    let env = Env::new();
    let c = ctx("default");
    let target = Digest::of(b"m");
    assert_kind(images(&env).get(&c, "missing"), ErrorKind::NotFound);
    assert_kind(
        images(&env).update(&c, manifest_image("missing", &target), &[]),
        ErrorKind::NotFound,
    );
    for bad in [
        manifest_image("", &target),
        manifest_image("nul\0name", &target),
        Image::new("no-type", Descriptor::new("", target.clone(), 1)),
        Image::new(
            "no-size",
            Descriptor::new(MEDIA_TYPE_OCI_MANIFEST, target.clone(), 0),
        ),
        Image {
            labels: labels(&[("k", &"v".repeat(4096))]),
            ..manifest_image("big-label", &target)
        },
    ] {
        assert_kind(images(&env).create(&c, bad), ErrorKind::InvalidArgument);
    }
    assert_kind(images(&env).get(&c, ""), ErrorKind::InvalidArgument);

    images(&env)
        .create(&c, manifest_image("img", &target))
        .unwrap();
    let err = assert_kind(
        images(&env).update(&c, manifest_image("img", &target), &["name".into()]),
        ErrorKind::InvalidArgument,
    );
    assert!(err.to_string().contains("cannot update"), "{err}");
    // A mask that clears what validation needs is refused and changes nothing.
    let clear = Image::new("img", Descriptor::new("", target.clone(), 512));
    assert_kind(
        images(&env).update(&c, clear, &["target".into()]),
        ErrorKind::InvalidArgument,
    );
    assert_eq!(
        images(&env).get(&c, "img").unwrap().target.media_type,
        MEDIA_TYPE_OCI_MANIFEST
    );
}

#[test]
fn namespaces_are_separate_implicit_and_guarded() {
    let env = Env::new();
    let a = ctx("team-a");
    let b = ctx("team-b");
    let target = Digest::of(b"m");
    images(&env)
        .create(&a, manifest_image("shared-name", &target))
        .unwrap();
    assert_kind(images(&env).get(&b, "shared-name"), ErrorKind::NotFound);
    images(&env)
        .create(&b, manifest_image("shared-name", &target))
        .unwrap();
    images(&env).delete(&b, "shared-name", false).unwrap();
    assert!(images(&env).get(&a, "shared-name").is_ok());

    // Creating an image created its namespace, which now cannot be deleted.
    let ns = Namespace::new("team-a").unwrap();
    assert!(NamespaceStore::get(&*env.md, &ns).is_ok());
    let err = assert_kind(
        NamespaceStore::delete(&*env.md, &ns),
        ErrorKind::FailedPrecondition,
    );
    assert!(err.to_string().contains("images"), "{err}");
    images(&env).delete(&a, "shared-name", false).unwrap();
    NamespaceStore::delete(&*env.md, &ns).unwrap();
}

#[test]
fn records_survive_a_restart() {
    let env = Env::new();
    let c = ctx("default");
    let mut img = manifest_image("kept:1", &Digest::of(b"m"));
    img.labels = labels(&[("a", "b")]);
    let created = images(&env).create(&c, img).unwrap();
    let env = env.restart();
    assert_eq!(images(&env).get(&c, "kept:1").unwrap(), created);
}

#[test]
fn images_keep_their_content_until_deleted() {
    let env = Env::new();
    let c = ctx("default");
    let (manifest, config, layer) = write_image_blobs(&env, &c, "one");
    let (shared_manifest, shared_config, shared_layer) = write_image_blobs(&env, &c, "two");
    let loose = env.ingest(&c, b"nobody references me", Labels::new());

    images(&env)
        .create(&c, manifest_image("one:latest", &manifest))
        .unwrap();
    images(&env)
        .create(&c, manifest_image("two:latest", &shared_manifest))
        .unwrap();
    images(&env)
        .create(&c, manifest_image("two:alias", &shared_manifest))
        .unwrap();

    let stats = env.md.collect().unwrap();
    assert_eq!((stats.records_removed, stats.blobs_removed), (1, 1));
    assert!(!env.on_disk(&loose));
    for d in [
        &manifest,
        &config,
        &layer,
        &shared_manifest,
        &shared_config,
        &shared_layer,
    ] {
        assert!(env.on_disk(d), "{d} should be kept");
    }

    // A sync delete has collected when it returns.
    images(&env).delete(&c, "one:latest", true).unwrap();
    for d in [&manifest, &config, &layer] {
        assert!(!env.on_disk(d), "{d} should be gone");
        assert_kind(env.info(&c, d), ErrorKind::NotFound);
    }
    // Another name for the same target still holds it.
    images(&env).delete(&c, "two:latest", true).unwrap();
    for d in [&shared_manifest, &shared_config, &shared_layer] {
        assert!(env.on_disk(d), "{d} is still referenced by two:alias");
    }
    // Without sync, the delete schedules a collection.
    images(&env).delete(&c, "two:alias", false).unwrap();
    eventually(
        "the scheduled collection removes the last image's blobs",
        || {
            [&shared_manifest, &shared_config, &shared_layer]
                .iter()
                .all(|d| !env.on_disk(d))
        },
    );
}

#[test]
fn image_roots_stay_in_their_namespace() {
    let env = Env::new();
    let a = ctx("ns-a");
    let b = ctx("ns-b");
    let (manifest, ..) = write_image_blobs(&env, &a, "same");
    // ns-b records the same bytes but names no image: its records go, ns-a's stay.
    let (manifest_b, ..) = write_image_blobs(&env, &b, "same");
    assert_eq!(manifest, manifest_b);
    images(&env)
        .create(&a, manifest_image("img", &manifest))
        .unwrap();
    let stats = env.md.collect().unwrap();
    assert_eq!(stats.records_removed, 3);
    assert_eq!(stats.blobs_removed, 0);
    assert!(env.info(&a, &manifest).is_ok());
    assert_kind(env.info(&b, &manifest), ErrorKind::NotFound);
}

#[test]
fn image_labels_reference_content_and_snapshots() {
    let env = Env::new();
    let c = ctx("default");
    let backend = Arc::new(NativeSnapshotter::open(env.dir.path().join("native")).unwrap());
    env.md.add_snapshotter("native", backend).unwrap();
    let snapshots: &dyn SnapshotStore = &*env.md;
    snapshots
        .prepare(&c, "native", "extract", None, Labels::new())
        .unwrap();
    snapshots
        .commit(&c, "native", "sha256:chain", "extract", Labels::new())
        .unwrap();

    let (manifest, ..) = write_image_blobs(&env, &c, "root");
    let extra = env.ingest(&c, b"signature", Labels::new());
    let mut img = manifest_image("labelled", &manifest);
    img.labels = labels(&[
        (&format!("{REF_CONTENT_PREFIX}.sig"), extra.as_str()),
        (&format!("{REF_SNAPSHOT_PREFIX}native"), "sha256:chain"),
    ]);
    images(&env).create(&c, img).unwrap();

    let stats = env.md.collect().unwrap();
    assert_eq!(stats.records_removed, 0);
    assert_eq!(stats.snapshots_removed, 0);
    assert!(env.on_disk(&extra));
    assert!(snapshots.stat(&c, "native", "sha256:chain").is_ok());

    // Dropping the labels drops what only they held.
    images(&env)
        .update(
            &c,
            manifest_image("labelled", &manifest),
            &["labels".into()],
        )
        .unwrap();
    let stats = env.md.collect().unwrap();
    assert_eq!(stats.records_removed, 1);
    assert_eq!(stats.snapshots_removed, 1);
    assert!(!env.on_disk(&extra));
    assert_kind(
        snapshots.stat(&c, "native", "sha256:chain"),
        ErrorKind::NotFound,
    );
    assert!(env.on_disk(&manifest));
}
