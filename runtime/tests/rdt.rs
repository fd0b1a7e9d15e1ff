//! `linux.intelRdt` against a stand-in resctrl root (a temporary directory) and the recording
//! Syscall. This host has no resctrl; what the kernel does with the schemata is not checked
//! here, only which files the runtime writes, in which order, and what it cleans up.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use berth_core::ErrorKind;
use berth_runtime::rdt::Resctrl;
use berth_runtime::spec::RdtPlan;
use berth_runtime::syscall::{Call, LinuxSyscall, RecordingSyscall};
use serde_json::json;

/// The plan of a `linux.intelRdt` object, read the way a bundle's config.json is.
fn try_plan(rdt: serde_json::Value) -> berth_core::Result<RdtPlan> {
    let config = json!({"ociVersion": "1.2.0", "linux": {"intelRdt": rdt}});
    let spec = berth_runtime::spec::parse(config.to_string().as_bytes()).unwrap();
    RdtPlan::from_spec(spec.linux().as_ref().unwrap().intel_rdt().as_ref().unwrap())
}

fn plan(rdt: serde_json::Value) -> RdtPlan {
    try_plan(rdt).unwrap()
}

/// The calls of joining container "ctr" (pid 7) to a new group for `rdt`, then removing it.
fn join_then_remove(rdt: serde_json::Value) -> Vec<Call> {
    let sys = RecordingSyscall::new();
    sys.set_missing("/rdt/ctr");
    let resctrl = Resctrl::at("/rdt");
    let p = plan(rdt);
    resctrl.join(&sys, &p, "ctr", 7).unwrap();
    resctrl.remove(&sys, &p, "ctr").unwrap();
    sys.calls()
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
    assert_eq!(
        join_then_remove(json!({"l3CacheSchema": "L3:0=3"})),
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

#[test]
fn enable_monitoring_makes_and_removes_a_monitoring_group_of_its_own() {
    assert_eq!(
        join_then_remove(json!({"enableMonitoring": true})),
        vec![
            Call::MkdirAll("/rdt/ctr".into(), 0o755),
            Call::WriteFile("/rdt/ctr/tasks".into(), b"7".to_vec()),
            Call::MkdirAll("/rdt/ctr/mon_groups/ctr".into(), 0o755),
            Call::WriteFile("/rdt/ctr/mon_groups/ctr/tasks".into(), b"7".to_vec()),
            Call::RemoveDir("/rdt/ctr/mon_groups/ctr".into()),
            Call::RemoveDir("/rdt/ctr".into()),
        ]
    );
}

#[test]
fn a_monitoring_group_in_a_shared_clos_group_goes_but_the_group_stays() {
    // The recorder reports every path as existing: the shared group is there.
    let sys = RecordingSyscall::new();
    let resctrl = Resctrl::at("/rdt");
    let p = plan(json!({"closID": "shared", "enableMonitoring": true}));
    resctrl.join(&sys, &p, "ctr", 9).unwrap();
    resctrl.remove(&sys, &p, "ctr").unwrap();
    assert_eq!(
        sys.calls(),
        vec![
            Call::WriteFile("/rdt/shared/tasks".into(), b"9".to_vec()),
            Call::MkdirAll("/rdt/shared/mon_groups/ctr".into(), 0o755),
            Call::WriteFile("/rdt/shared/mon_groups/ctr/tasks".into(), b"9".to_vec()),
            Call::RemoveDir("/rdt/shared/mon_groups/ctr".into()),
        ]
    );
}

#[test]
fn schemata_lines_follow_the_l3_and_memory_bandwidth_ones() {
    let p = plan(json!({
        "l3CacheSchema": "L3:0=f",
        "memBwSchema": "MB:0=70",
        "schemata": ["L2:0=3", "MB:0=50"]
    }));
    assert_eq!(p.schemata, ["L3:0=f", "MB:0=70", "L2:0=3", "MB:0=50"]);
    let err = try_plan(json!({"schemata": ["no colon"]})).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
}

#[test]
fn cmt_and_mbm_need_the_hosts_monitoring_features() {
    let root = tempfile::tempdir().unwrap();
    let resctrl = Resctrl::at(root.path());
    let both = plan(json!({"enableCMT": true, "enableMBM": true}));
    // No L3_MON at all: neither is there.
    let err = resctrl.check_monitoring(&both).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    assert!(err.to_string().contains("llc_occupancy"), "{err}");

    let info = root.path().join("info/L3_MON");
    std::fs::create_dir_all(&info).unwrap();
    std::fs::write(info.join("mon_features"), "llc_occupancy\n").unwrap();
    resctrl
        .check_monitoring(&plan(json!({"enableCMT": true})))
        .unwrap();
    let err = resctrl.check_monitoring(&both).unwrap_err();
    assert!(
        err.to_string()
            .contains("mbm_total_bytes or mbm_local_bytes"),
        "{err}"
    );

    std::fs::write(
        info.join("mon_features"),
        "llc_occupancy\nmbm_local_bytes\n",
    )
    .unwrap();
    resctrl.check_monitoring(&both).unwrap();
    // Without the flags nothing is asked of the host.
    Resctrl::at("/nonexistent")
        .check_monitoring(&plan(json!({"closID": "x"})))
        .unwrap();
}
