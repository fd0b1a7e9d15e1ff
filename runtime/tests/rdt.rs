//! `linux.intelRdt` against a stand-in resctrl root (a temporary directory) and the recording
//! Syscall. This host has no resctrl; what the kernel does with the schemata is not checked
//! here, only which files the runtime writes, in which order, and what it cleans up.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use berth_core::ErrorKind;
use berth_runtime::rdt::Resctrl;
use berth_runtime::spec::RdtPlan;
use berth_runtime::syscall::{Call, LinuxSyscall, RecordingSyscall};
use serde_json::json;

fn plan(rdt: serde_json::Value) -> RdtPlan {
    RdtPlan::from_spec(&serde_json::from_value(rdt).unwrap()).unwrap()
}

#[test]
fn an_existing_clos_group_is_joined_and_its_schemata_written() {
    let root = tempfile::tempdir().unwrap();
    // What the kernel makes in a resctrl group directory, as empty files.
    let group = root.path().join("shared");
    std::fs::create_dir(&group).unwrap();
    for f in ["schemata", "tasks"] {
        std::fs::write(group.join(f), "").unwrap();
    }
    let resctrl = Resctrl::at(root.path());
    let p =
        plan(json!({"closID": "shared", "l3CacheSchema": "L3:0=f;1=f", "memBwSchema": "MB:0=50"}));
    let joined = resctrl.join(&LinuxSyscall, &p, "ctr", 4242).unwrap();
    assert_eq!(joined, group);
    assert_eq!(
        std::fs::read_to_string(group.join("schemata")).unwrap(),
        "L3:0=f;1=f\nMB:0=50\n"
    );
    assert_eq!(
        std::fs::read_to_string(group.join("tasks")).unwrap(),
        "4242"
    );
    // A closID group may be shared: delete leaves it.
    resctrl.remove(&LinuxSyscall, &p, "ctr").unwrap();
    assert!(group.exists());
}

#[test]
fn a_group_named_after_the_container_is_made_then_removed() {
    let sys = RecordingSyscall::new();
    sys.set_missing("/rdt/ctr");
    let resctrl = Resctrl::at("/rdt");
    let p = plan(json!({"l3CacheSchema": "L3:0=3"}));
    resctrl.join(&sys, &p, "ctr", 7).unwrap();
    resctrl.remove(&sys, &p, "ctr").unwrap();
    assert_eq!(
        sys.calls(),
        vec![
            Call::MkdirAll("/rdt/ctr".into(), 0o755),
            Call::WriteFile("/rdt/ctr/schemata".into(), b"L3:0=3\n".to_vec()),
            Call::WriteFile("/rdt/ctr/tasks".into(), b"7".to_vec()),
            Call::RemoveDir("/rdt/ctr".into()),
        ]
    );
}

#[test]
fn a_leftover_group_of_the_same_name_is_not_taken_over() {
    // The recorder reports every path as existing.
    let sys = RecordingSyscall::new();
    let err = Resctrl::at("/rdt")
        .join(&sys, &plan(json!({})), "ctr", 7)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    assert!(err.to_string().contains("/rdt/ctr"), "{err}");
    assert!(sys.calls().is_empty());
}
