//! Diff.Apply end to end: layers in a real content store applied onto plain directories,
//! overlay upper directories and temporary mounts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use berth_core::ErrorKind;
use berth_core::diff::{Applier, Descriptor};
use berth_core::mount::Mount;
use common::*;

const T1: u64 = 1_600_000_000;
const T2: u64 = 1_600_000_100;
const T3: u64 = 1_600_000_200;

/// Adds a file, devices, links, owners, xattrs...
fn layer1() -> Vec<u8> {
    let mut l = Layer::new();
    l.mtime = T1;
    l.dir("etc", 0o755)
        .file("etc/config", 0o644, b"v1")
        .file("etc/keep", 0o600, b"keep")
        .dir("bin", 0o755)
        .file("bin/tool", 0o4755, b"#!tool")
        .file_full(
            "bin/owned",
            0o640,
            (1234, 5678),
            1_500_000_000,
            &[("user.a", b"b"), ("trusted.evil", b"x")],
            b"owned",
        )
        .hardlink("bin/tool-link", "bin/tool")
        .symlink("bin/sh", "tool")
        .symlink("abs", "/etc/config")
        .dir("run", 0o755)
        .fifo("run/fifo", 0o620)
        .dir("dev", 0o755)
        .device(tar::EntryType::Char, "dev/null", 1, 3)
        .device(tar::EntryType::Block, "dev/loop", 7, 0)
        .dir("tmp", 0o1777)
        .file("gone", 0o644, b"bye")
        .dir("gonedir", 0o755)
        .file("gonedir/a", 0o644, b"a")
        .dir("opaque", 0o755)
        .file("opaque/old1", 0o644, b"1")
        .file("opaque/old2", 0o644, b"2")
        .dir("opaque/sub", 0o755)
        .file("opaque/sub/deep", 0o644, b"d");
    l.finish()
}

/// Modifies a file and adds one.
fn layer2() -> Vec<u8> {
    let mut l = Layer::new();
    l.mtime = T2;
    l.dir("etc", 0o755)
        .file("etc/config", 0o644, b"v2")
        .file("etc/added", 0o644, b"L2");
    l.finish()
}

/// Deletes through whiteouts and replaces a directory's contents (opaque).
fn layer3() -> Vec<u8> {
    let mut l = Layer::new();
    l.mtime = T3;
    l.whiteout("", "gone")
        .whiteout("", "gonedir")
        .dir("etc", 0o755)
        .whiteout("etc", "keep")
        .dir("opaque", 0o700)
        .opaque("opaque")
        .file("opaque/new", 0o644, b"fresh")
        // A whiteout never hides what its own layer writes, before or after it.
        .file("same", 0o644, b"stays")
        .whiteout("", "same");
    l.finish()
}

fn check_final(root: &Path) {
    let read = |p: &str| fs::read(root.join(p)).unwrap();
    let md = |p: &str| fs::symlink_metadata(root.join(p)).unwrap();
    assert_eq!(read("etc/config"), b"v2");
    assert_eq!(read("etc/added"), b"L2");
    assert!(!root.join("etc/keep").exists());
    assert!(fs::symlink_metadata(root.join("gone")).is_err());
    assert!(fs::symlink_metadata(root.join("gonedir")).is_err());
    let opaque: Vec<_> = fs::read_dir(root.join("opaque"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(opaque, ["new"]);
    assert_eq!(md("opaque").mode() & 0o7777, 0o700);
    assert_eq!(read("same"), b"stays");

    assert_eq!(md("bin/tool").mode() & 0o7777, 0o4755);
    let owned = md("bin/owned");
    assert_eq!((owned.uid(), owned.gid()), (1234, 5678));
    assert_eq!(owned.mode() & 0o7777, 0o640);
    assert_eq!(owned.mtime(), 1_500_000_000);
    assert_eq!(
        xattr::get(root.join("bin/owned"), "user.a").unwrap(),
        Some(b"b".to_vec())
    );
    assert_eq!(
        xattr::get(root.join("bin/owned"), "trusted.evil").unwrap(),
        None
    );
    assert_eq!(md("bin/tool").ino(), md("bin/tool-link").ino());
    assert_eq!(md("bin/tool").nlink(), 2);
    assert_eq!(
        fs::read_link(root.join("bin/sh")).unwrap(),
        Path::new("tool")
    );
    assert_eq!(
        fs::read_link(root.join("abs")).unwrap(),
        Path::new("/etc/config")
    );
    assert!(md("run/fifo").file_type().is_fifo());
    assert_eq!(md("run/fifo").mode() & 0o7777, 0o620);
    let null = md("dev/null");
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), nix::sys::stat::makedev(1, 3));
    assert_eq!(null.mode() & 0o7777, 0o640);
    assert!(md("dev/loop").file_type().is_block_device());
    assert_eq!(md("tmp").mode() & 0o7777, 0o1777);
    // Directory times are set after their children are written.
    assert_eq!(md("etc").mtime() as u64, T3);
    assert_eq!(md("bin").mtime() as u64, T1);
    assert_eq!(md("etc/config").mtime() as u64, T2);
}

#[test]
fn three_layers_onto_a_plain_directory() {
    let env = Env::new();
    let root = env.mkdir("rootfs");
    for tar in [layer1(), layer2(), layer3()] {
        let applied = apply_bind(&env, &root, &tar);
        assert_eq!(applied.media_type, TAR);
        assert_eq!(applied.digest.as_str(), sha256(&tar));
        assert_eq!(applied.size, tar.len() as u64);
    }
    check_final(&root);
}

#[test]
fn three_layers_onto_overlay_upper_directories() {
    let env = Env::new();
    // The first layer of a chain is a bind mount of an empty snapshot.
    let l1 = env.mkdir("s1/fs");
    apply_bind(&env, &l1, &layer1());
    let (u2, w2) = (env.mkdir("s2/fs"), env.mkdir("s2/work"));
    let desc = env.put(&layer2(), GZIP);
    env.differ
        .apply(&env.ctx, &desc, &[overlay(&u2, &w2, &[&l1])])
        .unwrap();
    let (u3, w3) = (env.mkdir("s3/fs"), env.mkdir("s3/work"));
    let desc = env.put(&layer3(), TAR);
    env.differ
        .apply(&env.ctx, &desc, &[overlay(&u3, &w3, &[&u2, &l1])])
        .unwrap();

    // The upper directory holds overlayfs whiteouts, not OCI markers.
    let gone = fs::symlink_metadata(u3.join("gone")).unwrap();
    assert!(gone.file_type().is_char_device());
    assert_eq!(gone.rdev(), 0);
    assert!(
        fs::symlink_metadata(u3.join("gonedir"))
            .unwrap()
            .file_type()
            .is_char_device()
    );
    assert!(
        fs::symlink_metadata(u3.join("etc/keep"))
            .unwrap()
            .file_type()
            .is_char_device()
    );
    assert!(!u3.join(".wh.gone").exists());
    assert!(!u3.join("opaque/.wh..wh..opq").exists());
    assert_eq!(
        xattr::get(u3.join("opaque"), "trusted.overlay.opaque").unwrap(),
        Some(b"y".to_vec())
    );
    // Only what the layer changed is in the upper directory.
    assert!(!u2.join("bin").exists());
    assert!(!u3.join("etc/config").exists());

    // Mounted, the overlay shows exactly what applying to a plain directory gives.
    let merged = env.mkdir("merged");
    mount_overlay_ro(&merged, &[&u3, &u2, &l1]);
    let result = std::panic::catch_unwind(|| {
        check_final(&merged);
        snapshot(&merged)
    });
    umount(&merged);
    let merged_view = result.unwrap();

    let flat = env.mkdir("flat");
    for tar in [layer1(), layer2(), layer3()] {
        apply_bind(&env, &flat, &tar);
    }
    assert_same(&snapshot(&flat), &merged_view);
}

#[test]
fn overlay_parent_directories_inherit_lower_attributes() {
    let env = Env::new();
    let lower = env.mkdir("lower");
    let mut l = Layer::new();
    l.dir("a", 0o755);
    l.file_full("a/f", 0o644, (0, 0), T1, &[], b"x");
    apply_bind(&env, &lower, &l.finish());
    fs::set_permissions(lower.join("a"), fs::Permissions::from_mode(0o711)).unwrap();
    nix::unistd::chown(&lower.join("a"), Some(7.into()), Some(8.into())).unwrap();
    xattr::set(lower.join("a"), "user.k", b"v").unwrap();
    xattr::set(lower.join("a"), "trusted.overlay.opaque", b"y").unwrap();

    // A layer that writes a/new without an entry for a/ itself.
    let (upper, work) = (env.mkdir("up"), env.mkdir("work"));
    let mut l = Layer::new();
    l.file("a/new", 0o644, b"n");
    let desc = env.put(&l.finish(), TAR);
    env.differ
        .apply(&env.ctx, &desc, &[overlay(&upper, &work, &[&lower])])
        .unwrap();
    let md = fs::metadata(upper.join("a")).unwrap();
    assert_eq!(md.mode() & 0o7777, 0o711);
    assert_eq!((md.uid(), md.gid()), (7, 8));
    assert_eq!(
        xattr::get(upper.join("a"), "user.k").unwrap(),
        Some(b"v".to_vec())
    );
    // overlayfs's own attributes are never copied up: the lower a/f must stay visible.
    assert_eq!(
        xattr::get(upper.join("a"), "trusted.overlay.opaque").unwrap(),
        None
    );
}

use std::os::unix::fs::PermissionsExt;

#[test]
fn directory_over_an_overlay_whiteout_is_opaque() {
    let env = Env::new();
    let lower = env.mkdir("lower");
    let mut l = Layer::new();
    l.dir("d", 0o755).file("d/old", 0o644, b"old");
    apply_bind(&env, &lower, &l.finish());
    // The same layer deletes d and creates a new d: the old d/old must not show through.
    let (upper, work) = (env.mkdir("up"), env.mkdir("work"));
    let mut l = Layer::new();
    l.whiteout("", "d")
        .dir("d", 0o755)
        .file("d/new", 0o644, b"new");
    let desc = env.put(&l.finish(), TAR);
    env.differ
        .apply(&env.ctx, &desc, &[overlay(&upper, &work, &[&lower])])
        .unwrap();
    let merged = env.mkdir("merged");
    mount_overlay_ro(&merged, &[&upper, &lower]);
    let names: Vec<_> = fs::read_dir(merged.join("d"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    umount(&merged);
    assert_eq!(names, ["new"]);
}

#[test]
fn general_mounts_are_mounted_and_unmounted() {
    let env = Env::new();
    let dir = env.mkdir("target");
    let mut l = Layer::new();
    l.dir("x", 0o755).file("x/y", 0o600, b"through a mount");
    let desc = env.put(&gzip(&l.finish()), GZIP);
    // Not the single-bind shortcut: a bind mount described by flags, mounted on a temp dir.
    let m = Mount {
        kind: "none".into(),
        source: dir.display().to_string(),
        target: String::new(),
        options: vec!["rbind".into(), "rw".into()],
    };
    env.differ.apply(&env.ctx, &desc, &[m]).unwrap();
    assert_eq!(fs::read(dir.join("x/y")).unwrap(), b"through a mount");
    // The temporary mount point is gone again.
    let left: Vec<_> = fs::read_dir(env.dir.path().join("mnt")).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mountinfo.contains(env.dir.path().join("mnt").to_str().unwrap()));
}

#[test]
fn compression_is_detected_from_magic_bytes() {
    let env = Env::new();
    let mut l = Layer::new();
    l.file("f", 0o644, &vec![b'z'; 300_000]);
    let tar = l.finish();
    // The declared type does not matter, the bytes do.
    for (blob, declared) in [
        (gzip(&tar), TAR),
        (zstd(&tar), GZIP),
        (tar.clone(), ZSTD),
        (
            gzip(&tar),
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
        ),
    ] {
        let root = env.mkdir(&format!("r-{}", blob.len()));
        let desc = env.put(&blob, declared);
        let applied = env
            .differ
            .apply(
                &env.ctx,
                &desc,
                &[Mount::bind(root.to_str().unwrap(), false)],
            )
            .unwrap();
        assert_eq!(applied.digest.as_str(), sha256(&tar));
        assert_eq!(applied.size, tar.len() as u64);
        assert_eq!(fs::read(root.join("f")).unwrap().len(), 300_000);
    }
}

#[test]
fn concatenated_gzip_members_are_one_layer() {
    let env = Env::new();
    let mut l = Layer::new();
    l.file("a", 0o644, b"a").file("b", 0o644, b"b");
    let tar = l.finish();
    let (head, tail) = tar.split_at(1024);
    let blob = [gzip(head), gzip(tail)].concat();
    let root = env.mkdir("r");
    let desc = env.put(&blob, GZIP);
    let applied = env
        .differ
        .apply(
            &env.ctx,
            &desc,
            &[Mount::bind(root.to_str().unwrap(), false)],
        )
        .unwrap();
    assert_eq!(applied.digest.as_str(), sha256(&tar));
    assert!(root.join("b").exists());
}

#[test]
fn a_blob_that_does_not_match_its_digest_fails() {
    let env = Env::new();
    let mut l = Layer::new();
    l.file("f", 0o644, b"genuine");
    let good = gzip(&l.finish());
    let desc = env.put(&good, GZIP);
    // Corrupt the stored bytes behind the store's back: same size, other content.
    let mut l = Layer::new();
    l.file("f", 0o644, b"tampers");
    let evil = gzip(&l.finish());
    assert_eq!(evil.len(), good.len());
    fs::write(env.blobs.blob_path(&desc.digest), &evil).unwrap();
    let root = env.mkdir("r");
    let err = env
        .differ
        .apply(
            &env.ctx,
            &desc,
            &[Mount::bind(root.to_str().unwrap(), false)],
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DataLoss, "{err}");

    // Garbage that is not even a tar is DataLoss too, not a parse error.
    fs::write(env.blobs.blob_path(&desc.digest), vec![0x1f; good.len()]).unwrap();
    let err = env
        .differ
        .apply(
            &env.ctx,
            &desc,
            &[Mount::bind(root.to_str().unwrap(), false)],
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DataLoss, "{err}");
}

#[test]
fn refuses_what_is_not_a_plain_layer() {
    let env = Env::new();
    let mut l = Layer::new();
    l.file("f", 0o644, b"x");
    let desc = env.put(&l.finish(), TAR);
    let root = env.mkdir("r");
    let mounts = [Mount::bind(root.to_str().unwrap(), false)];
    for (media_type, kind) in [
        (
            "application/vnd.oci.image.layer.v1.tar+gzip+encrypted",
            ErrorKind::NotImplemented,
        ),
        (
            "application/vnd.oci.image.manifest.v1+json",
            ErrorKind::NotImplemented,
        ),
        ("", ErrorKind::NotImplemented),
    ] {
        let d = Descriptor::new(media_type, desc.digest.clone(), desc.size);
        let err = env.differ.apply(&env.ctx, &d, &mounts).unwrap_err();
        assert_eq!(err.kind(), kind, "{media_type}");
    }
    let wrong_size = Descriptor::new(TAR, desc.digest.clone(), desc.size + 1);
    let err = env
        .differ
        .apply(&env.ctx, &wrong_size, &mounts)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    let ro = [Mount::bind(root.to_str().unwrap(), true)];
    let err = env.differ.apply(&env.ctx, &desc, &ro).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    let missing = Descriptor::new(TAR, berth_core::Digest::of(b"nope"), 0);
    let err = env.differ.apply(&env.ctx, &missing, &mounts).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(fs::read_dir(&root).unwrap().count(), 0);
}

#[test]
fn entries_replace_files_and_directories() {
    let env = Env::new();
    let root = env.mkdir("r");
    let mut l = Layer::new();
    l.dir("d", 0o755)
        .file("d/child", 0o644, b"c")
        .file("f", 0o644, b"file")
        .symlink("s", "f");
    apply_bind(&env, &root, &l.finish());
    let mut l = Layer::new();
    // A file over a directory, a directory over a file, a file over a symlink.
    l.file("d", 0o600, b"now a file")
        .dir("f", 0o700)
        .file("f/inside", 0o644, b"i")
        .file("s", 0o644, b"not through the link");
    apply_bind(&env, &root, &l.finish());
    assert_eq!(fs::read(root.join("d")).unwrap(), b"now a file");
    assert!(fs::metadata(root.join("f")).unwrap().is_dir());
    assert_eq!(fs::read(root.join("f/inside")).unwrap(), b"i");
    assert!(fs::symlink_metadata(root.join("s")).unwrap().is_file());
}

#[test]
fn big_layer_applies_quickly() {
    let env = Env::new();
    let mut l = Layer::new();
    // 16 MiB in large files plus a few thousand small ones (a release build applies 64 MiB
    // like this in about a second, syncfs included).
    let chunk: Vec<u8> = (0..8 << 20)
        .map(|i: u32| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    for i in 0..2 {
        l.file(&format!("big/{i}"), 0o644, &chunk);
    }
    for i in 0..3000 {
        l.file(
            &format!("small/{}/{i}", i % 30),
            0o644,
            b"tiny file contents",
        );
    }
    let tar = l.finish();
    let blob = gzip(&tar);
    let desc = env.put(&blob, GZIP);
    let root = env.mkdir("r");
    let start = std::time::Instant::now();
    let applied = env
        .differ
        .apply(
            &env.ctx,
            &desc,
            &[Mount::bind(root.to_str().unwrap(), false)],
        )
        .unwrap();
    let took = start.elapsed();
    assert_eq!(applied.digest.as_str(), sha256(&tar));
    assert_eq!(fs::read(root.join("big/1")).unwrap(), chunk);
    eprintln!("applied {} MiB in {took:?}", tar.len() >> 20);
}
