//! Feeds arbitrary bytes to the layer applier as a tar and checks that nothing outside the
//! target directory changed: a sentinel directory beside it, the overlay lower directory, and
//! the temporary directory holding them. The target starts with symlinks pointing out of it,
//! as a lower layer could have left them. The first byte picks the whiteout mode.
//!
//! Run as a user who may create device nodes and set xattrs (root, in a throwaway machine).

#![no_main]

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use berth_diff::{Whiteouts, apply_tar};
use libfuzzer_sys::fuzz_target;

fn listing(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| {
                    let contents = fs::read(e.path()).unwrap_or_default();
                    (e.file_name().to_string_lossy().into_owned(), contents)
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, tar)) = data.split_first() else {
        return;
    };
    let Ok(base) = tempfile::tempdir() else {
        return;
    };
    let (root, sentinel, lower) = (
        base.path().join("root"),
        base.path().join("sentinel"),
        base.path().join("lower"),
    );
    for dir in [&root, &sentinel, &lower] {
        fs::create_dir(dir).expect("create fixture directory");
    }
    fs::write(sentinel.join("file"), b"keep").expect("write sentinel");
    symlink("../sentinel", root.join("out")).expect("symlink");
    symlink("/", root.join("abs")).expect("symlink");
    symlink("../sentinel", lower.join("out")).expect("symlink");

    let before = (listing(base.path()), listing(&sentinel), listing(&lower));
    let whiteouts = if mode & 1 == 0 {
        Whiteouts::Oci
    } else {
        Whiteouts::Overlay {
            lowers: vec![lower.clone()],
        }
    };
    let _ = apply_tar(tar, &root, &whiteouts);
    let after = (listing(base.path()), listing(&sentinel), listing(&lower));
    assert_eq!(
        before, after,
        "the layer changed something outside the target"
    );
});
