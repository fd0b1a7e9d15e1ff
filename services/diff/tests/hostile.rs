//! The hostile corpus: layers built to escape the target directory. Each must fail or stay
//! contained; nothing next to the target (a sentinel directory, the overlay's lower
//! directory) or elsewhere on the host may change. Every case runs in both whiteout modes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::io::Cursor;
use std::os::unix::fs::{FileTypeExt, MetadataExt, symlink};
use std::path::{Path, PathBuf};

use berth_core::diff::Applier;
use berth_core::mount::Mount;
use berth_diff::{Whiteouts, apply_tar};
use common::*;

#[derive(Clone, Copy)]
enum Expect {
    /// The apply must fail.
    Fail,
    /// The apply must succeed, and the check holds on the target.
    Contained(fn(&Path)),
    /// Either way, as long as nothing escapes.
    Harmless,
}

struct Case {
    name: &'static str,
    tar: Vec<u8>,
    expect: Expect,
}

/// A name no test run could have created by accident, for escapes to absolute paths.
fn unique() -> String {
    format!("berth-hostile-{}", std::process::id())
}

fn layer(f: impl FnOnce(&mut Layer)) -> Vec<u8> {
    let mut l = Layer::new();
    f(&mut l);
    l.finish()
}

fn raw_file(name: &[u8]) -> Vec<u8> {
    let mut l = Layer::new();
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    l.raw(h, name, b"evil");
    l.finish()
}

fn cases() -> Vec<Case> {
    let u = unique();
    let long = format!("{}/file", "long-directory-name/".repeat(15));
    vec![
        Case {
            name: "dotdot",
            tar: raw_file(format!("../escape-{u}").as_bytes()),
            expect: Expect::Fail,
        },
        Case {
            name: "absolute path lands inside",
            tar: raw_file(format!("/abs-{u}").as_bytes()),
            expect: Expect::Contained(|root| {
                assert!(root.join(format!("abs-{}", unique())).is_file());
            }),
        },
        Case {
            name: "dotdot in the middle",
            tar: raw_file(format!("a/../../escape-{u}").as_bytes()),
            expect: Expect::Fail,
        },
        Case {
            name: "symlink to / then a file through it",
            tar: layer(|l| {
                l.symlink("s", "/")
                    .file(&format!("s/etc-{u}/x"), 0o644, b"e");
            }),
            expect: Expect::Contained(|root| {
                assert!(root.join(format!("etc-{}/x", unique())).is_file());
            }),
        },
        Case {
            name: "symlink to .. then a file through it",
            tar: layer(|l| {
                l.symlink("s", "..").file(&format!("s/x-{u}"), 0o644, b"e");
            }),
            expect: Expect::Contained(|root| {
                assert!(root.join(format!("x-{}", unique())).is_file());
            }),
        },
        Case {
            name: "symlink outside then a file of the same name",
            tar: layer(|l| {
                l.symlink("s", "../sentinel/file")
                    .file("s", 0o644, b"overwrite");
            }),
            expect: Expect::Contained(|root| {
                assert_eq!(fs::read(root.join("s")).unwrap(), b"overwrite");
            }),
        },
        Case {
            name: "symlink to an outside directory then a file through it",
            tar: layer(|l| {
                l.symlink("s", "../sentinel").file("s/file", 0o644, b"evil");
            }),
            expect: Expect::Harmless,
        },
        Case {
            name: "symlink chain then a file through it",
            tar: layer(|l| {
                l.symlink("s1", "s2")
                    .symlink("s2", "../sentinel/sub")
                    .file("s1/file2", 0o644, b"evil");
            }),
            expect: Expect::Harmless,
        },
        Case {
            name: "deep dotdot symlink",
            tar: layer(|l| {
                l.symlink("s", "../../../../../../../..").file(
                    &format!("s/tmp/x-{u}"),
                    0o644,
                    b"e",
                );
            }),
            expect: Expect::Contained(|root| {
                assert!(root.join(format!("tmp/x-{}", unique())).is_file());
            }),
        },
        Case {
            name: "hardlink to ../outside",
            tar: layer(|l| {
                l.hardlink("l", "../sentinel/file");
            }),
            expect: Expect::Fail,
        },
        Case {
            name: "hardlink to /etc/passwd",
            tar: layer(|l| {
                l.hardlink("l", "/etc/passwd");
            }),
            expect: Expect::Fail,
        },
        Case {
            name: "hardlink to a symlink pointing outside, then writing it",
            tar: layer(|l| {
                l.symlink("s", "../sentinel/file")
                    .hardlink("h", "s")
                    .file("h", 0o644, b"evil");
            }),
            expect: Expect::Contained(|root| {
                assert_eq!(fs::read(root.join("h")).unwrap(), b"evil");
                assert!(fs::symlink_metadata(root.join("s")).unwrap().is_symlink());
            }),
        },
        Case {
            name: "hardlink to a symlink pointing outside, then writing through it",
            tar: layer(|l| {
                l.symlink("s", "../sentinel")
                    .hardlink("h", "s")
                    .file("h/file", 0o644, b"evil");
            }),
            expect: Expect::Harmless,
        },
        Case {
            name: "hardlink to a directory",
            tar: layer(|l| {
                l.hardlink("l", "d");
            }),
            expect: Expect::Fail,
        },
        Case {
            name: "whiteout naming ..",
            tar: layer(|l| {
                l.file("d/.wh...", 0, b"");
            }),
            expect: Expect::Fail,
        },
        Case {
            name: "whiteout naming .",
            tar: layer(|l| {
                l.file("d/.wh..", 0, b"");
            }),
            expect: Expect::Fail,
        },
        Case {
            name: "whiteout-looking directory .wh... with a child",
            tar: raw_file(b".wh.../x"),
            expect: Expect::Contained(|root| assert!(root.join(".wh.../x").is_file())),
        },
        Case {
            name: "whiteout in ..",
            tar: raw_file(b"../.wh.sentinel"),
            expect: Expect::Fail,
        },
        Case {
            name: "whiteout through a symlink to outside",
            tar: layer(|l| {
                l.whiteout("pre", "file");
            }),
            expect: Expect::Harmless,
        },
        Case {
            name: "whiteout of a symlink removes only the link",
            tar: layer(|l| {
                l.whiteout("", "pre");
            }),
            expect: Expect::Contained(|root| {
                assert!(
                    fs::symlink_metadata(root.join("pre"))
                        .map_or(true, |m| m.file_type().is_char_device())
                );
            }),
        },
        Case {
            name: "opaque marker in a symlinked directory pointing outside",
            tar: layer(|l| {
                l.opaque("pre");
            }),
            expect: Expect::Harmless,
        },
        Case {
            name: "opaque marker in a symlink to /",
            tar: layer(|l| {
                l.opaque("preabs");
            }),
            expect: Expect::Harmless,
        },
        Case {
            name: "file through a lower layer's symlink to outside",
            tar: layer(|l| {
                l.file(&format!("pre/evil-{u}"), 0o644, b"evil");
            }),
            expect: Expect::Harmless,
        },
        Case {
            name: "directory entry over a symlink to outside",
            tar: layer(|l| {
                l.dir("pre", 0o755).file("pre/inside", 0o644, b"i");
            }),
            expect: Expect::Contained(|root| {
                assert!(fs::symlink_metadata(root.join("pre")).unwrap().is_dir());
                assert!(root.join("pre/inside").is_file());
            }),
        },
        Case {
            name: "directory replaced by a symlink, then a file through it",
            tar: layer(|l| {
                l.dir("d2", 0o755)
                    .symlink("d2", "../sentinel")
                    .file("d2/file", 0o644, b"evil");
            }),
            expect: Expect::Harmless,
        },
        Case {
            name: "long name through PAX",
            tar: layer(|l| {
                l.file(&long, 0o644, b"long");
            }),
            expect: Expect::Contained(|root| {
                let long = format!("{}/file", "long-directory-name/".repeat(15));
                assert_eq!(fs::read(root.join(long)).unwrap(), b"long");
            }),
        },
        Case {
            name: "name longer than PATH_MAX",
            tar: raw_file("a/".repeat(2100).as_bytes()),
            expect: Expect::Fail,
        },
        Case {
            name: "component longer than NAME_MAX",
            tar: raw_file("n".repeat(300).as_bytes()),
            expect: Expect::Fail,
        },
        Case {
            name: "huge PAX header",
            tar: {
                let mut l = Layer::new();
                let mut h = tar::Header::new_ustar();
                h.set_entry_type(tar::EntryType::Regular);
                h.set_uid(0);
                h.set_gid(0);
                h.set_mtime(0);
                let big = vec![b'x'; 3 << 20];
                l.raw_pax(&mut h, b"f", b"", &[("SCHILY.xattr.user.big", &big)]);
                l.finish()
            },
            expect: Expect::Fail,
        },
        Case {
            name: "device node stays inside",
            tar: layer(|l| {
                l.dir("dev", 0o755)
                    .device(tar::EntryType::Char, &format!("dev/null-{u}"), 1, 3);
            }),
            expect: Expect::Contained(|root| {
                let md = fs::symlink_metadata(root.join(format!("dev/null-{}", unique()))).unwrap();
                assert!(md.file_type().is_char_device());
            }),
        },
        Case {
            name: "device node outside",
            tar: layer(|l| {
                l.device(tar::EntryType::Block, &format!("../dev-{u}"), 7, 0);
            }),
            expect: Expect::Fail,
        },
        Case {
            name: "NUL in a name",
            tar: raw_file(b"a\0b"),
            expect: Expect::Fail,
        },
        Case {
            name: "NUL in a link target",
            tar: layer(|l| {
                l.link(
                    tar::EntryType::Symlink,
                    "s",
                    &[b'x'; 120]
                        .iter()
                        .copied()
                        .chain(*b"\0y")
                        .collect::<Vec<_>>(),
                );
            }),
            expect: Expect::Fail,
        },
        Case {
            name: "trusted xattrs are refused",
            tar: layer(|l| {
                l.dir("o", 0o755);
                l.file_full(
                    "o/f",
                    0o644,
                    (0, 0),
                    1,
                    &[("trusted.overlay.redirect", b"/etc")],
                    b"",
                );
            }),
            expect: Expect::Contained(|root| {
                assert_eq!(
                    xattr::get(root.join("o/f"), "trusted.overlay.redirect").unwrap(),
                    None
                );
            }),
        },
    ]
}

struct Fixture {
    _base: tempfile::TempDir,
    base: PathBuf,
    root: PathBuf,
    lower: PathBuf,
}

fn fixture() -> Fixture {
    let base_dir = tempfile::tempdir().unwrap();
    let base = base_dir.path().to_path_buf();
    let root = base.join("root");
    let sentinel = base.join("sentinel");
    let lower = base.join("lower");
    for d in [
        &root,
        &sentinel,
        &lower,
        &sentinel.join("sub"),
        &root.join("d"),
    ] {
        fs::create_dir_all(d).unwrap();
    }
    fs::write(sentinel.join("file"), b"precious").unwrap();
    fs::write(sentinel.join("sub/file2"), b"precious too").unwrap();
    symlink("file", sentinel.join("link")).unwrap();
    // What lower layers could have left in the target and below it.
    symlink("../sentinel", root.join("pre")).unwrap();
    symlink("/", root.join("preabs")).unwrap();
    fs::write(root.join("victim"), b"v").unwrap();
    symlink("/", lower.join("s")).unwrap();
    symlink("../sentinel", lower.join("pre")).unwrap();
    fs::create_dir(lower.join("d")).unwrap();
    Fixture {
        _base: base_dir,
        base,
        root,
        lower,
    }
}

/// Everything outside the target that a layer could try to reach.
fn outside(f: &Fixture) -> (Vec<String>, String, String, String) {
    let mut names: Vec<String> = fs::read_dir(&f.base)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let passwd = fs::symlink_metadata("/etc/passwd").unwrap();
    let host = format!(
        "{} {} {} {}",
        passwd.nlink(),
        passwd.len(),
        passwd.mtime(),
        passwd.mode()
    );
    (
        names,
        fingerprint(&f.base.join("sentinel")),
        fingerprint(&f.lower),
        host,
    )
}

fn host_names() -> Vec<PathBuf> {
    let u = unique();
    ["/", "/etc", "/tmp", "/dev"]
        .iter()
        .flat_map(|d| {
            let u = u.clone();
            ["abs", "escape", "etc", "x", "evil", "null", "dev"]
                .iter()
                .map(move |p| Path::new(d).join(format!("{p}-{u}")))
        })
        .collect()
}

fn run(mode: &str, whiteouts: impl Fn(&Fixture) -> Whiteouts) {
    let mut failures = Vec::new();
    for case in cases() {
        let f = fixture();
        let before = outside(&f);
        let result = apply_tar(Cursor::new(&case.tar), &f.root, &whiteouts(&f));
        let after = outside(&f);
        assert_eq!(
            before, after,
            "[{mode}] {}: something outside changed",
            case.name
        );
        for p in host_names() {
            assert!(
                fs::symlink_metadata(&p).is_err(),
                "[{mode}] {}: created {}",
                case.name,
                p.display()
            );
        }
        match (case.expect, &result) {
            (Expect::Fail, Ok(())) => {
                failures.push(format!("{}: applied, want failure", case.name))
            }
            (Expect::Contained(_), Err(e)) => {
                failures.push(format!("{}: failed, want success: {e}", case.name))
            }
            (Expect::Contained(check), Ok(())) => check(&f.root),
            _ => {}
        }
    }
    assert!(failures.is_empty(), "[{mode}]\n{}", failures.join("\n"));
}

#[test]
fn hostile_layers_are_contained_with_oci_whiteouts() {
    run("oci", |_| Whiteouts::Oci);
}

#[test]
fn hostile_layers_are_contained_in_overlay_upper_directories() {
    run("overlay", |f| Whiteouts::Overlay {
        lowers: vec![f.lower.clone()],
    });
}

#[test]
fn hostile_layers_through_the_differ() {
    // The same corpus end to end, compressed, through the content store.
    let env = Env::new();
    for case in cases() {
        let f = fixture();
        let before = outside(&f);
        let desc = env.put(&gzip(&case.tar), GZIP);
        let result = env.differ.apply(
            &env.ctx,
            &desc,
            &[Mount::bind(f.root.to_str().unwrap(), false)],
        );
        assert_eq!(before, outside(&f), "{}", case.name);
        if matches!(case.expect, Expect::Fail) {
            assert!(result.is_err(), "{}", case.name);
        }
    }
}
