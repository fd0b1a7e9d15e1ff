use super::*;
use berth_core::ErrorKind;

fn open() -> (tempfile::TempDir, OverlaySnapshotter) {
    let dir = tempfile::tempdir().unwrap();
    let sn = OverlaySnapshotter::open(dir.path().join("overlayfs")).unwrap();
    (dir, sn)
}

fn fs(sn: &OverlaySnapshotter, id: u64) -> String {
    format!("{}/snapshots/{id}/fs", sn.root().display())
}

fn index() -> Vec<String> {
    if Path::new(INDEX_PARAMETER).exists() {
        vec!["index=off".to_owned()]
    } else {
        Vec::new()
    }
}

fn commit_chain(sn: &OverlaySnapshotter, n: usize) -> String {
    let mut parent: Option<String> = None;
    for i in 1..=n {
        let key = format!("extract-{i}");
        let name = format!("layer-{i}");
        sn.prepare(&key, parent.as_deref(), Labels::new()).unwrap();
        sn.commit(&name, &key, Labels::new()).unwrap();
        parent = Some(name);
    }
    parent.unwrap()
}

#[test]
fn mount_shapes_match_containerd() {
    let (_d, sn) = open();
    assert!(sn.root().is_absolute());

    // Active, no parent: a read-write bind of its own fs.
    let m = sn.prepare("extract-1", None, Labels::new()).unwrap();
    assert_eq!(m, vec![Mount::bind(fs(&sn, 1), false)]);
    assert_eq!(m[0].options, ["rw", "rbind"]);
    assert!(Path::new(&fs(&sn, 1)).is_dir());
    assert!(sn.root().join("snapshots/1/work").is_dir());
    sn.commit("layer-1", "extract-1", Labels::new()).unwrap();

    // View, one parent: a read-only bind of the parent's fs.
    let m = sn.view("v1", Some("layer-1"), Labels::new()).unwrap();
    assert_eq!(m, vec![Mount::bind(fs(&sn, 1), true)]);
    assert!(
        !sn.root().join("snapshots/2/work").exists(),
        "views need no work dir"
    );

    // View, no parent: a read-only bind of its own (empty) fs.
    let m = sn.view("v0", None, Labels::new()).unwrap();
    assert_eq!(m, vec![Mount::bind(fs(&sn, 3), true)]);

    // Active with parents: overlay, nearest parent first.
    sn.prepare("extract-2", Some("layer-1"), Labels::new())
        .unwrap();
    sn.commit("layer-2", "extract-2", Labels::new()).unwrap();
    let m = sn.prepare("ctr", Some("layer-2"), Labels::new()).unwrap();
    let root = sn.root().display().to_string();
    let mut want = index();
    want.extend([
        format!("workdir={root}/snapshots/5/work"),
        format!("upperdir={root}/snapshots/5/fs"),
        format!("lowerdir={}:{}", fs(&sn, 4), fs(&sn, 1)),
    ]);
    assert_eq!(
        m,
        vec![Mount {
            kind: "overlay".into(),
            source: "overlay".into(),
            target: String::new(),
            options: want,
        }]
    );
    assert_eq!(sn.mounts("ctr").unwrap(), m);

    // View with two parents: overlay with only lowerdir.
    let m = sn.view("v2", Some("layer-2"), Labels::new()).unwrap();
    let mut want = index();
    want.push(format!("lowerdir={}:{}", fs(&sn, 4), fs(&sn, 1)));
    assert_eq!(m[0].kind, "overlay");
    assert_eq!(m[0].options, want);
}

#[test]
fn child_root_takes_parent_root_owner_and_mode() {
    let (_d, sn) = open();
    sn.prepare("k", None, Labels::new()).unwrap();
    let upper = fs(&sn, 1);
    std::os::unix::fs::chown(&upper, Some(1234), Some(5678)).unwrap();
    std::fs::set_permissions(&upper, std::fs::Permissions::from_mode(0o700)).unwrap();
    sn.commit("c", "k", Labels::new()).unwrap();
    sn.prepare("child", Some("c"), Labels::new()).unwrap();
    let meta = std::fs::metadata(fs(&sn, 2)).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777),
        (1234, 5678, 0o700)
    );
}

/// 128 layers under a temporary root exceed one page with absolute paths but fit once the
/// lower directories are relative to `<root>/snapshots`: Prepare returns the absolute form.
#[test]
fn deep_chain_returns_absolute_paths_that_compact_under_a_page() {
    let (_d, sn) = open();
    let top = commit_chain(&sn, 128);
    let m = sn.prepare("ctr", Some(&top), Labels::new()).unwrap();
    let lower = m[0].lowerdirs().unwrap();
    assert_eq!(lower.len(), 128);
    assert_eq!(lower[0], fs(&sn, 128));
    assert_eq!(lower[127], fs(&sn, 1));
    assert!(m[0].options.join(",").len() >= MAX_MOUNT_DATA);
    let (dir, compacted) = m[0].compact_lowerdirs().unwrap();
    assert_eq!(Path::new(&dir), sn.root().join("snapshots"));
    assert!(compacted.options.join(",").len() < MAX_MOUNT_DATA);
    assert!(
        compacted
            .option_value("lowerdir")
            .unwrap()
            .starts_with("128/fs:127/fs:")
    );
}

/// A chain whose options exceed a page even when compacted is refused before anything is
/// recorded, and the last depth below the limit is not. A very long root makes that happen at
/// a modest depth: the upper and work paths stay absolute.
#[test]
fn chain_too_deep_even_compacted_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let mut root = tmp.path().to_path_buf();
    for i in 0..7 {
        root.push(format!("{i}{}", "d".repeat(169)));
    }
    let sn = OverlaySnapshotter::open(&root).unwrap();
    let snapshots = format!("{}/snapshots", sn.root().display());
    // The compacted data of an active snapshot `id` on lower ids `lower` (nearest first).
    let compacted_len = |id: u64, lower: &[u64]| {
        let mut options = index();
        options.push(format!("workdir={snapshots}/{id}/work"));
        options.push(format!("upperdir={snapshots}/{id}/fs"));
        let rel: Vec<String> = lower.iter().map(|l| format!("{l}/fs")).collect();
        options.push(format!("lowerdir={}", rel.join(":")));
        options.join(",").len()
    };

    let (mut next, mut lower, mut probed) = (1u64, Vec::new(), false);
    let mut parent: Option<String> = None;
    loop {
        let name = format!("layer-{next}");
        let key = format!("extract-{next}");
        sn.prepare(&key, parent.as_deref(), Labels::new()).unwrap();
        sn.commit(&name, &key, Labels::new()).unwrap();
        lower.insert(0, next);
        next += 1;
        parent = Some(name);
        let predicted = compacted_len(next, &lower);
        if predicted >= MAX_MOUNT_DATA {
            break;
        }
        if predicted >= MAX_MOUNT_DATA - 16 {
            // Just under the limit: still accepted.
            sn.prepare("probe", parent.as_deref(), Labels::new())
                .unwrap();
            sn.remove("probe").unwrap();
            next += 1;
            probed = true;
        }
    }
    assert!(
        probed,
        "the chain crossed the limit without a probe just below it"
    );

    let before = sn.list(&Filters::all()).unwrap();
    let dirs = std::fs::read_dir(sn.root().join("snapshots"))
        .unwrap()
        .count();
    let err = sn
        .prepare("ctr", parent.as_deref(), Labels::new())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&format!("{} layers", lower.len())), "{msg}");
    assert!(msg.contains("4095 bytes"), "{msg}");
    assert_eq!(sn.list(&Filters::all()).unwrap(), before);
    assert_eq!(
        std::fs::read_dir(sn.root().join("snapshots"))
            .unwrap()
            .count(),
        dirs,
        "no directory left behind"
    );
    // A view needs no upper or work directory, so the same chain still fits as a view.
    sn.view("v", parent.as_deref(), Labels::new()).unwrap();
}

#[test]
fn root_with_separator_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let err = OverlaySnapshotter::open(tmp.path().join("a:b")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
}

#[test]
fn second_open_of_the_same_root_fails_while_first_is_open() {
    let (_d, sn) = open();
    assert!(OverlaySnapshotter::open(sn.root()).is_err());
}

#[test]
fn leftover_directory_of_an_unrecorded_id_is_replaced() {
    let (_d, sn) = open();
    // As if a crash happened after the rename but before the transaction committed.
    std::fs::create_dir_all(sn.root().join("snapshots/1/fs")).unwrap();
    std::fs::write(sn.root().join("snapshots/1/fs/stale"), "x").unwrap();
    sn.prepare("k", None, Labels::new()).unwrap();
    assert!(!sn.root().join("snapshots/1/fs/stale").exists());
    assert!(sn.root().join("snapshots/1/work").is_dir());
}

#[test]
fn usage_of_active_is_live_and_committed_is_recorded() {
    let (_d, sn) = open();
    sn.prepare("k", None, Labels::new()).unwrap();
    std::fs::write(format!("{}/f", fs(&sn, 1)), vec![0u8; 50_000]).unwrap();
    let u = sn.usage("k").unwrap();
    assert_eq!(u.inodes, 2);
    assert!(u.size >= 50_000);
    sn.commit("c", "k", Labels::new()).unwrap();
    // Changing the files of a committed snapshot (which nobody should) does not change its
    // recorded usage.
    std::fs::remove_file(format!("{}/f", fs(&sn, 1))).unwrap();
    assert_eq!(sn.usage("c").unwrap(), u);
}
