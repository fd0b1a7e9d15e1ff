//! Diff.Diff then Diff.Apply: the layer computed between a parent and a changed copy of it,
//! applied onto another copy of the parent, gives the changed tree exactly.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::io::Read;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;

use berth_core::ErrorKind;
use berth_core::diff::{Applier, Comparer, Descriptor, DiffOptions, LABEL_UNCOMPRESSED};
use berth_core::labels::Labels;
use berth_core::mount::Mount;
use common::*;
use nix::sys::stat::{Mode, SFlag, makedev, mknod};
use nix::sys::time::TimeSpec;

fn base_layer() -> Vec<u8> {
    let mut l = Layer::new();
    l.dir("etc", 0o755)
        .file("etc/same-size", 0o644, b"aaaa")
        .file("etc/grow", 0o644, b"g")
        .file("etc/chmod", 0o644, b"c")
        .file("etc/chown", 0o644, b"o")
        .file("etc/xattr", 0o644, b"x")
        .file("etc/unchanged", 0o644, b"u")
        .file("etc/old-target", 0o644, b"linked later")
        .file("delete-me", 0o644, b"d")
        .dir("tree", 0o755)
        .dir("tree/sub", 0o755)
        .file("tree/sub/f", 0o644, b"f")
        .dir("dir-to-file", 0o755)
        .file("dir-to-file/child", 0o644, b"c")
        .file("file-to-dir", 0o644, b"f")
        .dir("opq", 0o755)
        .file("opq/a", 0o644, b"a")
        .file("opq/b", 0o644, b"b")
        .symlink("link", "etc/grow")
        // Explicit, so its mtime comes from the layer: a parent the applier has to
        // make itself gets the current time, which differs between the trees.
        .dir("hl", 0o755)
        .file("hl/one", 0o644, b"shared")
        .hardlink("hl/two", "hl/one")
        .dir("modes", 0o755);
    l.finish()
}

fn set_mtime(p: &Path, secs: i64) {
    let t = TimeSpec::new(secs, 0);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        p,
        &t,
        &t,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
}

/// Changes of every kind, as a container would make them.
fn mutate(a: &Path) {
    // Same size, same whole-second mtime: only a content comparison notices.
    let md = fs::metadata(a.join("etc/same-size")).unwrap();
    fs::write(a.join("etc/same-size"), b"bbbb").unwrap();
    set_mtime(
        &a.join("etc/same-size"),
        std::os::unix::fs::MetadataExt::mtime(&md),
    );
    fs::write(a.join("etc/grow"), b"grown").unwrap();
    fs::set_permissions(a.join("etc/chmod"), fs::Permissions::from_mode(0o4711)).unwrap();
    nix::unistd::chown(
        &a.join("etc/chown"),
        Some(3_000_000.into()),
        Some(42.into()),
    )
    .unwrap();
    xattr::set(a.join("etc/xattr"), "user.new", b"value").unwrap();
    fs::remove_file(a.join("delete-me")).unwrap();
    fs::remove_dir_all(a.join("tree")).unwrap();
    fs::remove_dir_all(a.join("dir-to-file")).unwrap();
    fs::write(a.join("dir-to-file"), b"now a file").unwrap();
    fs::remove_file(a.join("file-to-dir")).unwrap();
    fs::create_dir(a.join("file-to-dir")).unwrap();
    fs::write(a.join("file-to-dir/inside"), b"i").unwrap();
    fs::remove_file(a.join("opq/a")).unwrap();
    fs::remove_file(a.join("opq/b")).unwrap();
    fs::write(a.join("opq/c"), b"new").unwrap();
    fs::remove_file(a.join("link")).unwrap();
    symlink("etc/chmod", a.join("link")).unwrap();
    fs::create_dir(a.join("new")).unwrap();
    fs::write(a.join("new/a"), b"pair").unwrap();
    fs::hard_link(a.join("new/a"), a.join("new/b")).unwrap();
    // A new name for an unchanged file: both names must end up one inode.
    fs::hard_link(a.join("etc/old-target"), a.join("new/to-old")).unwrap();
    mknod(
        &a.join("new/fifo"),
        SFlag::S_IFIFO,
        Mode::from_bits_truncate(0o600),
        0,
    )
    .unwrap();
    mknod(
        &a.join("new/tty"),
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o620),
        makedev(5, 0),
    )
    .unwrap();
    let long_dir = a.join("new").join("d".repeat(120));
    fs::create_dir(&long_dir).unwrap();
    fs::write(long_dir.join("f".repeat(150)), b"long").unwrap();
    symlink("t".repeat(200), a.join("new/long-link")).unwrap();
    xattr::set(a.join("new"), "user.dir", b"d").unwrap();
    fs::set_permissions(a.join("modes"), fs::Permissions::from_mode(0o700)).unwrap();
}

fn tar_names(tar: &[u8]) -> Vec<String> {
    let mut a = tar::Archive::new(tar);
    a.entries()
        .unwrap()
        .map(|e| String::from_utf8(e.unwrap().path_bytes().into_owned()).unwrap())
        .collect()
}

fn decompress(blob: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    if blob.starts_with(&[0x1f, 0x8b]) {
        flate2::read::MultiGzDecoder::new(blob)
            .read_to_end(&mut out)
            .unwrap();
    } else if blob.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        out = ::zstd::decode_all(blob).unwrap();
    } else {
        out = blob.to_vec();
    }
    out
}

fn check_layer(env: &Env, desc: &Descriptor) -> Vec<u8> {
    let blob = env.read(&desc.digest);
    assert_eq!(blob.len() as u64, desc.size);
    let tar = decompress(&blob);
    let info =
        berth_core::content::ContentStore::info(&*env.store, &env.ctx, &desc.digest).unwrap();
    assert_eq!(info.labels[LABEL_UNCOMPRESSED], sha256(&tar));
    tar
}

#[test]
fn diff_then_apply_reproduces_the_changed_tree() {
    let env = Env::new();
    let base = base_layer();
    let (parent, active, fresh) = (env.mkdir("parent"), env.mkdir("active"), env.mkdir("fresh"));
    for dir in [&parent, &active, &fresh] {
        apply_bind(&env, dir, &base);
    }
    mutate(&active);
    let desc = env
        .differ
        .compare(
            &env.ctx,
            &[Mount::bind(parent.to_str().unwrap(), true)],
            &[Mount::bind(active.to_str().unwrap(), false)],
            DiffOptions {
                labels: Labels::from([("x.y/z".to_owned(), "1".to_owned())]),
                ..DiffOptions::default()
            },
        )
        .unwrap();
    assert_eq!(desc.media_type, GZIP);
    let tar = check_layer(&env, &desc);
    let info =
        berth_core::content::ContentStore::info(&*env.store, &env.ctx, &desc.digest).unwrap();
    assert_eq!(info.labels["x.y/z"], "1");

    let names = tar_names(&tar);
    for want in [
        ".wh.delete-me",
        ".wh.tree",
        "opq/.wh..wh..opq",
        "opq/c",
        "etc/same-size",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }
    for unwanted in ["etc/unchanged", "hl/one", "hl/two"] {
        assert!(
            !names.iter().any(|n| n == unwanted),
            "{unwanted} in {names:?}"
        );
    }
    // Parents come before their children.
    for (i, name) in names.iter().enumerate() {
        let trimmed = name.trim_end_matches('/');
        if let Some((dir, _)) = trimmed.rsplit_once('/') {
            let pos = names.iter().position(|n| n == &format!("{dir}/"));
            assert!(pos.is_some_and(|p| p < i), "{name} before its parent {dir}");
        }
    }

    let applied = env
        .differ
        .apply(
            &env.ctx,
            &desc,
            &[Mount::bind(fresh.to_str().unwrap(), false)],
        )
        .unwrap();
    assert_eq!(applied.digest.as_str(), sha256(&tar));
    assert_same(&snapshot(&active), &snapshot(&fresh));
    // Spot checks on what snapshots compare.
    let s = snapshot(&fresh);
    assert_eq!(s[Path::new("etc/chown")].uid, 3_000_000);
    assert_eq!(s[Path::new("etc/chmod")].mode, 0o4711);
    assert_eq!(
        s[Path::new("new/to-old")].same_inode_as.as_deref(),
        Some(Path::new("etc/old-target"))
    );
    assert_eq!(
        s[Path::new("new/b")].same_inode_as.as_deref(),
        Some(Path::new("new/a"))
    );
}

#[test]
fn diff_of_an_overlay_snapshot() {
    let env = Env::new();
    let base = base_layer();
    let (lower, fresh) = (env.mkdir("s1/fs"), env.mkdir("fresh"));
    apply_bind(&env, &lower, &base);
    apply_bind(&env, &fresh, &base);
    let (upper, work) = (env.mkdir("s2/fs"), env.mkdir("s2/work"));
    let active = overlay(&upper, &work, &[&lower]);

    // The container changes files through the mounted overlay.
    let merged = env.mkdir("merged");
    nix::mount::mount(
        Some("overlay"),
        &merged,
        Some("overlay"),
        nix::mount::MsFlags::empty(),
        Some(active.options.join(",").as_str()),
    )
    .unwrap();
    let changed = std::panic::catch_unwind(|| mutate(&merged));
    umount(&merged);
    changed.unwrap();

    for (media_type, compressed) in [(Some(ZSTD), true), (Some(TAR), false), (None, true)] {
        let desc = env
            .differ
            .compare(
                &env.ctx,
                &[Mount::bind(lower.to_str().unwrap(), true)],
                std::slice::from_ref(&active),
                DiffOptions {
                    media_type: media_type.map(str::to_owned),
                    reference: Some(format!("ref-{media_type:?}").replace(['/', '"', '+'], "-")),
                    ..DiffOptions::default()
                },
            )
            .unwrap();
        assert_eq!(desc.media_type, media_type.unwrap_or(GZIP));
        let blob = env.read(&desc.digest);
        assert_eq!(
            blob.starts_with(b"\x1f\x8b") || blob.starts_with(b"\x28\xb5\x2f\xfd"),
            compressed
        );
        check_layer(&env, &desc);
        if media_type.is_none() {
            let applied = env
                .differ
                .apply(
                    &env.ctx,
                    &desc,
                    &[Mount::bind(fresh.to_str().unwrap(), false)],
                )
                .unwrap();
            assert_eq!(applied.size, decompress(&blob).len() as u64);
        }
    }
    // The snapshot's overlay is free again: no temporary mount was left behind.
    assert_eq!(fs::read_dir(env.dir.path().join("mnt")).unwrap().count(), 0);

    mount_overlay_ro(&merged, &[&upper, &lower]);
    let want = std::panic::catch_unwind(|| snapshot(&merged));
    umount(&merged);
    assert_same(&want.unwrap(), &snapshot(&fresh));
}

#[test]
fn same_diff_twice_and_bad_media_types() {
    let env = Env::new();
    let (a, b) = (env.mkdir("a"), env.mkdir("b"));
    fs::write(b.join("f"), b"x").unwrap();
    set_mtime(&b.join("f"), 1_000);
    let lower = [Mount::bind(a.to_str().unwrap(), true)];
    let upper = [Mount::bind(b.to_str().unwrap(), true)];
    let first = env
        .differ
        .compare(&env.ctx, &lower, &upper, DiffOptions::default())
        .unwrap();
    // Equal trees give equal layers; committing an existing blob is not an error.
    let second = env
        .differ
        .compare(
            &env.ctx,
            &lower,
            &upper,
            DiffOptions {
                labels: Labels::from([("again".to_owned(), "yes".to_owned())]),
                ..DiffOptions::default()
            },
        )
        .unwrap();
    assert_eq!(first, second);
    let info =
        berth_core::content::ContentStore::info(&*env.store, &env.ctx, &first.digest).unwrap();
    assert_eq!(info.labels["again"], "yes");
    assert!(info.labels.contains_key(LABEL_UNCOMPRESSED));

    let err = env
        .differ
        .compare(
            &env.ctx,
            &lower,
            &upper,
            DiffOptions {
                media_type: Some("application/vnd.oci.image.layer.v1.tar+lz4".into()),
                ..DiffOptions::default()
            },
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotImplemented);
    // Failed or finished, no ingest is left behind.
    let statuses = berth_core::content::ContentStore::list_statuses(
        &*env.store,
        &env.ctx,
        &berth_core::filters::Filters::parse(&[""]).unwrap(),
    )
    .unwrap();
    assert!(statuses.is_empty(), "{statuses:?}");

    // An empty lower is the empty directory: the layer holds the whole upper tree.
    let all = env
        .differ
        .compare(&env.ctx, &[], &upper, DiffOptions::default())
        .unwrap();
    assert_eq!(tar_names(&check_layer(&env, &all)), ["f"]);
}
