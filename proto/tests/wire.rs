//! Wire-compatibility checks: each message is encoded and compared byte for byte against an
//! encoding worked out by hand from containerd 1.6's field numbers and types, then decoded back.
//!
//! Reminder of the encoding: a key byte is `(field << 3) | wire_type`, with wire type 0 for
//! varints (ints, bools, enums) and 2 for length-delimited values (strings, bytes, messages,
//! map entries). A map entry is a message with key = 1 and value = 2.

// Test helpers outside #[test] fns are still test code: panicking on a broken invariant is the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use berth_proto::containerd::services::{
    containers::v1 as containers, content::v1 as content, diff::v1 as diff, events::v1 as events,
    images::v1 as images, introspection::v1 as introspection, leases::v1 as leases,
    namespaces::v1 as namespaces, snapshots::v1 as snapshots, tasks::v1 as tasks,
};
use berth_proto::containerd::types::{Descriptor, Metric, Mount, Platform};
use berth_proto::containerd::v1::types::{Process, ProcessInfo, Status};
use prost::Message;
use prost_types::{Any, Duration, Timestamp};

/// Encodes `msg`, checks the bytes, and checks that decoding them gives `msg` back.
fn assert_wire<M: Message + Default + PartialEq + std::fmt::Debug>(msg: &M, expected: &[u8]) {
    let bytes = msg.encode_to_vec();
    assert_eq!(
        bytes,
        expected,
        "encoding of {msg:?}\n got: {}\nwant: {}",
        hex(&bytes),
        hex(expected)
    );
    let back = M::decode(expected).unwrap();
    assert_eq!(&back, msg);
}

fn hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn ts(seconds: i64) -> Option<Timestamp> {
    Some(Timestamp { seconds, nanos: 0 })
}

fn one(k: &str, v: &str) -> HashMap<String, String> {
    HashMap::from([(k.to_string(), v.to_string())])
}

/// The encoding of a `{k: v}` map entry with one-byte key and value, under field `field`.
fn entry(field: u8, k: u8, v: u8) -> [u8; 8] {
    [(field << 3) | 2, 6, 0x0a, 1, k, 0x12, 1, v]
}

#[test]
fn write_content_request() {
    let msg = content::WriteContentRequest {
        action: content::WriteAction::Commit as i32,
        r#ref: "r".into(),
        total: 3,
        expected: "e".into(),
        offset: 5,
        data: vec![0xab],
        labels: one("k", "v"),
    };
    let mut want = vec![
        0x08, 2, // action = 1 (COMMIT)
        0x12, 1, b'r', // ref = 2
        0x18, 3, // total = 3
        0x22, 1, b'e', // expected = 4
        0x28, 5, // offset = 5
        0x32, 1, 0xab, // data = 6
    ];
    want.extend(entry(7, b'k', b'v')); // labels = 7
    assert_wire(&msg, &want);

    assert_eq!(content::WriteAction::Stat as i32, 0);
    assert_eq!(content::WriteAction::Write as i32, 1);
    assert_eq!(content::WriteAction::Commit as i32, 2);
}

#[test]
fn write_content_response() {
    let msg = content::WriteContentResponse {
        action: content::WriteAction::Write as i32,
        started_at: ts(1),
        updated_at: ts(2),
        offset: 4,
        total: 5,
        digest: "d".into(),
    };
    let want = [
        0x08, 1, // action = 1
        0x12, 2, 0x08, 1, // started_at = 2
        0x1a, 2, 0x08, 2, // updated_at = 3
        0x20, 4, // offset = 4
        0x28, 5, // total = 5
        0x32, 1, b'd', // digest = 6
    ];
    assert_wire(&msg, &want);
}

#[test]
fn content_info_status_and_read() {
    let info = content::Info {
        digest: "d".into(),
        size: 2,
        created_at: ts(1),
        updated_at: ts(2),
        labels: one("k", "v"),
    };
    let mut want = vec![0x0a, 1, b'd', 0x10, 2, 0x1a, 2, 0x08, 1, 0x22, 2, 0x08, 2];
    want.extend(entry(5, b'k', b'v'));
    assert_wire(&info, &want);

    let status = content::Status {
        started_at: ts(1),
        updated_at: ts(2),
        r#ref: "r".into(),
        offset: 4,
        total: 5,
        expected: "e".into(),
    };
    let want = [
        0x0a, 2, 0x08, 1, 0x12, 2, 0x08, 2, 0x1a, 1, b'r', 0x20, 4, 0x28, 5, 0x32, 1, b'e',
    ];
    assert_wire(&status, &want);

    let read = content::ReadContentRequest {
        digest: "d".into(),
        offset: 2,
        size: 3,
    };
    assert_wire(&read, &[0x0a, 1, b'd', 0x10, 2, 0x18, 3]);

    let chunk = content::ReadContentResponse {
        offset: 1,
        data: vec![9],
    };
    assert_wire(&chunk, &[0x08, 1, 0x12, 1, 9]);
}

#[test]
fn descriptor_skips_field_4() {
    let msg = Descriptor {
        media_type: "m".into(),
        digest: "d".into(),
        size: 3,
        annotations: one("a", "b"),
    };
    let mut want = vec![
        0x0a, 1, b'm', // media_type = 1
        0x12, 1, b'd', // digest = 2
        0x18, 3, // size = 3
    ];
    want.extend(entry(5, b'a', b'b')); // annotations = 5, straight after 3
    assert_wire(&msg, &want);

    // A stray field 4 is unknown to us and must be skipped, not misread as annotations.
    let mut with_four = want.clone();
    with_four.splice(8..8, [0x22, 1, b'x']);
    assert_eq!(Descriptor::decode(with_four.as_slice()).unwrap(), msg);
}

#[test]
fn mount() {
    let msg = Mount {
        r#type: "t".into(),
        source: "s".into(),
        target: "g".into(),
        options: vec!["a".into(), "b".into()],
    };
    let want = [
        0x0a, 1, b't', // type = 1
        0x12, 1, b's', // source = 2
        0x1a, 1, b'g', // target = 3
        0x22, 1, b'a', 0x22, 1, b'b', // options = 4, one key per element
    ];
    assert_wire(&msg, &want);
}

#[test]
fn platform_and_metric() {
    let platform = Platform {
        os: "l".into(),
        architecture: "a".into(),
        variant: "v".into(),
    };
    assert_wire(&platform, &[0x0a, 1, b'l', 0x12, 1, b'a', 0x1a, 1, b'v']);

    let metric = Metric {
        timestamp: ts(1),
        id: "i".into(),
        data: Some(Any {
            type_url: "u".into(),
            value: vec![],
        }),
    };
    let want = [0x0a, 2, 0x08, 1, 0x12, 1, b'i', 0x1a, 3, 0x0a, 1, b'u'];
    assert_wire(&metric, &want);
}

#[test]
fn snapshot_info_and_kind() {
    let msg = snapshots::Info {
        name: "n".into(),
        parent: "p".into(),
        kind: snapshots::Kind::Committed as i32,
        created_at: ts(1),
        updated_at: ts(2),
        labels: one("k", "v"),
    };
    let mut want = vec![
        0x0a, 1, b'n', // name = 1
        0x12, 1, b'p', // parent = 2
        0x18, 3, // kind = 3 (COMMITTED)
        0x22, 2, 0x08, 1, // created_at = 4
        0x2a, 2, 0x08, 2, // updated_at = 5
    ];
    want.extend(entry(6, b'k', b'v')); // labels = 6
    assert_wire(&msg, &want);

    assert_eq!(snapshots::Kind::Unknown as i32, 0);
    assert_eq!(snapshots::Kind::View as i32, 1);
    assert_eq!(snapshots::Kind::Active as i32, 2);
    assert_eq!(snapshots::Kind::Committed as i32, 3);
}

#[test]
fn snapshot_requests() {
    let prepare = snapshots::PrepareSnapshotRequest {
        snapshotter: "o".into(),
        key: "k".into(),
        parent: "p".into(),
        labels: one("a", "b"),
    };
    let mut want = vec![0x0a, 1, b'o', 0x12, 1, b'k', 0x1a, 1, b'p'];
    want.extend(entry(4, b'a', b'b'));
    assert_wire(&prepare, &want);

    let commit = snapshots::CommitSnapshotRequest {
        snapshotter: "o".into(),
        name: "n".into(),
        key: "k".into(),
        labels: HashMap::new(),
    };
    assert_wire(&commit, &[0x0a, 1, b'o', 0x12, 1, b'n', 0x1a, 1, b'k']);

    let list = snapshots::ListSnapshotsRequest {
        snapshotter: "o".into(),
        filters: vec!["f".into()],
    };
    assert_wire(&list, &[0x0a, 1, b'o', 0x12, 1, b'f']);

    let update = snapshots::UpdateSnapshotRequest {
        snapshotter: "o".into(),
        info: Some(snapshots::Info {
            name: "n".into(),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["l".into()],
        }),
    };
    let want = [
        0x0a, 1, b'o', 0x12, 3, 0x0a, 1, b'n', 0x1a, 3, 0x0a, 1, b'l',
    ];
    assert_wire(&update, &want);

    let usage = snapshots::UsageResponse { size: 7, inodes: 2 };
    assert_wire(&usage, &[0x08, 7, 0x10, 2]);
}

#[test]
fn create_task_request_skips_field_2() {
    let msg = tasks::CreateTaskRequest {
        container_id: "c".into(),
        rootfs: vec![Mount {
            r#type: "t".into(),
            ..Default::default()
        }],
        stdin: "i".into(),
        stdout: "o".into(),
        stderr: "e".into(),
        terminal: true,
        checkpoint: Some(Descriptor {
            size: 1,
            ..Default::default()
        }),
        options: Some(Any {
            type_url: "u".into(),
            value: vec![],
        }),
        runtime_path: "p".into(),
    };
    let want = [
        0x0a, 1, b'c', // container_id = 1
        0x1a, 3, 0x0a, 1, b't', // rootfs = 3
        0x22, 1, b'i', // stdin = 4
        0x2a, 1, b'o', // stdout = 5
        0x32, 1, b'e', // stderr = 6
        0x38, 1, // terminal = 7
        0x42, 2, 0x18, 1, // checkpoint = 8
        0x4a, 3, 0x0a, 1, b'u', // options = 9
        0x52, 1, b'p', // runtime_path = 10
    ];
    assert_wire(&msg, &want);
}

#[test]
fn task_replies_and_requests() {
    let del = tasks::DeleteResponse {
        id: "i".into(),
        pid: 7,
        exit_status: 1,
        exited_at: ts(3),
    };
    assert_wire(&del, &[0x0a, 1, b'i', 0x10, 7, 0x18, 1, 0x22, 2, 0x08, 3]);

    let wait = tasks::WaitResponse {
        exit_status: 137,
        exited_at: ts(1),
    };
    // 137 needs two varint bytes: 0x89 0x01.
    assert_wire(&wait, &[0x08, 0x89, 0x01, 0x12, 2, 0x08, 1]);

    let kill = tasks::KillRequest {
        container_id: "c".into(),
        exec_id: "e".into(),
        signal: 9,
        all: true,
    };
    assert_wire(&kill, &[0x0a, 1, b'c', 0x12, 1, b'e', 0x18, 9, 0x20, 1]);

    let exec = tasks::ExecProcessRequest {
        container_id: "c".into(),
        stdin: "i".into(),
        stdout: "o".into(),
        stderr: "e".into(),
        terminal: true,
        spec: Some(Any {
            type_url: "s".into(),
            value: vec![],
        }),
        exec_id: "x".into(),
    };
    let want = [
        0x0a, 1, b'c', 0x12, 1, b'i', 0x1a, 1, b'o', 0x22, 1, b'e', 0x28, 1, 0x32, 3, 0x0a, 1,
        b's', 0x3a, 1, b'x',
    ];
    assert_wire(&exec, &want);

    let resize = tasks::ResizePtyRequest {
        container_id: "c".into(),
        exec_id: "e".into(),
        width: 80,
        height: 24,
    };
    assert_wire(&resize, &[0x0a, 1, b'c', 0x12, 1, b'e', 0x18, 80, 0x20, 24]);

    let update = tasks::UpdateTaskRequest {
        container_id: "c".into(),
        resources: Some(Any::default()),
        annotations: one("a", "b"),
    };
    let mut want = vec![0x0a, 1, b'c', 0x12, 0];
    want.extend(entry(3, b'a', b'b'));
    assert_wire(&update, &want);
}

#[test]
fn process_and_status() {
    let msg = Process {
        container_id: "c".into(),
        id: "i".into(),
        pid: 7,
        status: Status::Stopped as i32,
        stdin: "a".into(),
        stdout: "b".into(),
        stderr: "d".into(),
        terminal: true,
        exit_status: 9,
        exited_at: ts(1),
    };
    let want = [
        0x0a, 1, b'c', // container_id = 1
        0x12, 1, b'i', // id = 2
        0x18, 7, // pid = 3
        0x20, 3, // status = 4 (STOPPED)
        0x2a, 1, b'a', // stdin = 5
        0x32, 1, b'b', // stdout = 6
        0x3a, 1, b'd', // stderr = 7
        0x40, 1, // terminal = 8
        0x48, 9, // exit_status = 9
        0x52, 2, 0x08, 1, // exited_at = 10
    ];
    assert_wire(&msg, &want);

    let info = ProcessInfo {
        pid: 3,
        info: Some(Any::default()),
    };
    assert_wire(&info, &[0x08, 3, 0x12, 0]);

    let values = [
        (Status::Unknown, 0),
        (Status::Created, 1),
        (Status::Running, 2),
        (Status::Stopped, 3),
        (Status::Paused, 4),
        (Status::Pausing, 5),
    ];
    for (status, n) in values {
        assert_eq!(status as i32, n, "{status:?}");
    }
}

#[test]
fn container_with_extensions() {
    let msg = containers::Container {
        id: "i".into(),
        labels: one("k", "v"),
        image: "m".into(),
        runtime: Some(containers::container::Runtime {
            name: "r".into(),
            options: Some(Any {
                type_url: "o".into(),
                value: vec![],
            }),
        }),
        spec: Some(Any {
            type_url: "s".into(),
            value: b"{".to_vec(),
        }),
        snapshotter: "n".into(),
        snapshot_key: "k".into(),
        created_at: ts(1),
        updated_at: ts(2),
        extensions: HashMap::from([(
            "x".to_string(),
            Any {
                type_url: "y".into(),
                value: vec![],
            },
        )]),
    };
    let mut want = vec![0x0a, 1, b'i']; // id = 1
    want.extend(entry(2, b'k', b'v')); // labels = 2
    want.extend([0x1a, 1, b'm']); // image = 3
    want.extend([0x22, 8, 0x0a, 1, b'r', 0x12, 3, 0x0a, 1, b'o']); // runtime = 4 {name=1, options=2}
    want.extend([0x2a, 6, 0x0a, 1, b's', 0x12, 1, b'{']); // spec = 5
    want.extend([0x32, 1, b'n']); // snapshotter = 6
    want.extend([0x3a, 1, b'k']); // snapshot_key = 7
    want.extend([0x42, 2, 0x08, 1]); // created_at = 8
    want.extend([0x4a, 2, 0x08, 2]); // updated_at = 9
    want.extend([0x52, 8, 0x0a, 1, b'x', 0x12, 3, 0x0a, 1, b'y']); // extensions = 10
    assert_wire(&msg, &want);

    let listed = containers::ListContainerMessage {
        container: Some(containers::Container {
            id: "i".into(),
            ..Default::default()
        }),
    };
    assert_wire(&listed, &[0x0a, 3, 0x0a, 1, b'i']);
}

#[test]
fn image_skips_fields_4_to_6() {
    let msg = images::Image {
        name: "n".into(),
        labels: one("k", "v"),
        target: Some(Descriptor {
            size: 1,
            ..Default::default()
        }),
        created_at: ts(1),
        updated_at: ts(2),
    };
    let mut want = vec![0x0a, 1, b'n'];
    want.extend(entry(2, b'k', b'v'));
    want.extend([0x1a, 2, 0x18, 1]); // target = 3
    want.extend([0x3a, 2, 0x08, 1]); // created_at = 7
    want.extend([0x42, 2, 0x08, 2]); // updated_at = 8
    assert_wire(&msg, &want);

    let del = images::DeleteImageRequest {
        name: "n".into(),
        sync: true,
    };
    assert_wire(&del, &[0x0a, 1, b'n', 0x10, 1]);
}

#[test]
fn lease_and_lease_requests() {
    let lease = leases::Lease {
        id: "l".into(),
        created_at: ts(1),
        labels: one("k", "v"),
    };
    let mut want = vec![0x0a, 1, b'l', 0x12, 2, 0x08, 1];
    want.extend(entry(3, b'k', b'v'));
    assert_wire(&lease, &want);

    // CreateRequest has labels at 3 too, with 2 left unused.
    let create = leases::CreateRequest {
        id: "l".into(),
        labels: one("k", "v"),
    };
    let mut want = vec![0x0a, 1, b'l'];
    want.extend(entry(3, b'k', b'v'));
    assert_wire(&create, &want);

    let del = leases::DeleteRequest {
        id: "l".into(),
        sync: true,
    };
    assert_wire(&del, &[0x0a, 1, b'l', 0x10, 1]);

    let add = leases::AddResourceRequest {
        id: "l".into(),
        resource: Some(leases::Resource {
            id: "d".into(),
            r#type: "c".into(),
        }),
    };
    assert_wire(
        &add,
        &[0x0a, 1, b'l', 0x12, 6, 0x0a, 1, b'd', 0x12, 1, b'c'],
    );
}

#[test]
fn namespace_and_diff() {
    let ns = namespaces::Namespace {
        name: "n".into(),
        labels: one("k", "v"),
    };
    let mut want = vec![0x0a, 1, b'n'];
    want.extend(entry(2, b'k', b'v'));
    assert_wire(&ns, &want);

    let list = namespaces::ListNamespacesRequest { filter: "f".into() };
    assert_wire(&list, &[0x0a, 1, b'f']);

    let apply = diff::ApplyRequest {
        diff: Some(Descriptor {
            size: 1,
            ..Default::default()
        }),
        mounts: vec![Mount {
            r#type: "t".into(),
            ..Default::default()
        }],
        payloads: HashMap::from([(
            "p".to_string(),
            Any {
                type_url: "u".into(),
                value: vec![],
            },
        )]),
    };
    let want = [
        0x0a, 2, 0x18, 1, // diff = 1
        0x12, 3, 0x0a, 1, b't', // mounts = 2
        0x1a, 8, 0x0a, 1, b'p', 0x12, 3, 0x0a, 1, b'u', // payloads = 3
    ];
    assert_wire(&apply, &want);

    let reply = diff::DiffResponse {
        diff: Some(Descriptor {
            size: 1,
            ..Default::default()
        }),
    };
    assert_wire(&reply, &[0x1a, 2, 0x18, 1]); // diff = 3
}

#[test]
fn introspection_plugin() {
    let msg = introspection::Plugin {
        r#type: "t".into(),
        id: "i".into(),
        requires: vec!["r".into()],
        platforms: vec![Platform {
            os: "l".into(),
            architecture: "a".into(),
            variant: "v".into(),
        }],
        exports: one("e", "x"),
        capabilities: vec!["c".into()],
        init_err: Some(berth_proto::google::rpc::Status {
            code: 2,
            message: "m".into(),
            details: vec![Any {
                type_url: "u".into(),
                value: vec![],
            }],
        }),
    };
    let mut want = vec![
        0x0a, 1, b't', // type = 1
        0x12, 1, b'i', // id = 2
        0x1a, 1, b'r', // requires = 3
        0x22, 9, 0x0a, 1, b'l', 0x12, 1, b'a', 0x1a, 1, b'v', // platforms = 4
    ];
    want.extend(entry(5, b'e', b'x')); // exports = 5
    want.extend([0x32, 1, b'c']); // capabilities = 6
    // init_err = 7: google.rpc.Status {code=1, message=2, details=3}
    want.extend([0x3a, 10, 0x08, 2, 0x12, 1, b'm', 0x1a, 3, 0x0a, 1, b'u']);
    assert_wire(&msg, &want);

    let server = introspection::ServerResponse { uuid: "u".into() };
    assert_wire(&server, &[0x0a, 1, b'u']);
}

#[test]
fn events_envelope_and_payloads() {
    let env = events::Envelope {
        timestamp: ts(1),
        namespace: "n".into(),
        topic: "t".into(),
        event: Some(Any::default()),
    };
    let want = [0x0a, 2, 0x08, 1, 0x12, 1, b'n', 0x1a, 1, b't', 0x22, 0];
    assert_wire(&env, &want);

    use berth_proto::containerd::events as ev;
    let exit = ev::TaskExit {
        container_id: "c".into(),
        id: "i".into(),
        pid: 3,
        exit_status: 4,
        exited_at: ts(5),
    };
    assert_wire(
        &exit,
        &[
            0x0a, 1, b'c', 0x12, 1, b'i', 0x18, 3, 0x20, 4, 0x2a, 2, 0x08, 5,
        ],
    );

    let delete = ev::TaskDelete {
        container_id: "c".into(),
        pid: 2,
        exit_status: 3,
        exited_at: ts(4),
        id: "i".into(),
    };
    assert_wire(
        &delete,
        &[
            0x0a, 1, b'c', 0x10, 2, 0x18, 3, 0x22, 2, 0x08, 4, 0x2a, 1, b'i',
        ],
    );

    let create = ev::TaskCreate {
        container_id: "c".into(),
        bundle: "b".into(),
        rootfs: vec![],
        io: Some(ev::TaskIo {
            stdin: "i".into(),
            stdout: String::new(),
            stderr: String::new(),
            terminal: true,
        }),
        checkpoint: "k".into(),
        pid: 6,
    };
    let want = [
        0x0a, 1, b'c', 0x12, 1, b'b', 0x22, 5, 0x0a, 1, b'i', 0x20, 1, 0x2a, 1, b'k', 0x30, 6,
    ];
    assert_wire(&create, &want);

    let container = ev::ContainerCreate {
        id: "i".into(),
        image: "m".into(),
        runtime: Some(ev::container_create::Runtime {
            name: "r".into(),
            options: None,
        }),
    };
    assert_wire(
        &container,
        &[0x0a, 1, b'i', 0x12, 1, b'm', 0x1a, 3, 0x0a, 1, b'r'],
    );

    let image = images::ImageCreate {
        name: "n".into(),
        labels: one("k", "v"),
    };
    let mut want = vec![0x0a, 1, b'n'];
    want.extend(entry(2, b'k', b'v'));
    assert_wire(&image, &want);
}

#[test]
fn admin_garbage_collect_response() {
    use berth_proto::berth::services::admin::v1::GarbageCollectResponse;
    let msg = GarbageCollectResponse {
        records_removed: 1,
        blobs_removed: 2,
        bytes_removed: 300,
        ingests_removed: 4,
        duration: Some(Duration {
            seconds: 1,
            nanos: 5,
        }),
        snapshots_removed: 6,
    };
    let want = [
        0x08, 1, 0x10, 2, 0x18, 0xac, 0x02, 0x20, 4, 0x2a, 4, 0x08, 1, 0x10, 5, 0x30, 6,
    ];
    assert_wire(&msg, &want);
}

#[test]
fn health_check() {
    use berth_proto::grpc::health::v1::{
        HealthCheckRequest, HealthCheckResponse, health_check_response::ServingStatus,
    };
    assert_wire(
        &HealthCheckRequest {
            service: "s".into(),
        },
        &[0x0a, 1, b's'],
    );
    assert_wire(
        &HealthCheckResponse {
            status: ServingStatus::NotServing as i32,
        },
        &[0x08, 2],
    );
    assert_eq!(ServingStatus::Serving as i32, 1);
    assert_eq!(ServingStatus::ServiceUnknown as i32, 3);
}

#[test]
fn any_uses_bare_full_names() {
    use berth_proto::containerd::events::TaskExit;
    let exit = TaskExit {
        container_id: "c".into(),
        pid: 3,
        ..Default::default()
    };
    let any = berth_proto::any_of(&exit);
    assert_eq!(any.type_url, "containerd.events.TaskExit");
    assert_eq!(any.value, exit.encode_to_vec());
    assert!(berth_proto::any_is::<TaskExit>(&any));
    assert!(!berth_proto::any_is::<
        berth_proto::containerd::events::TaskStart,
    >(&any));
    assert_eq!(berth_proto::from_any::<TaskExit>(&any).unwrap(), exit);

    // Image events keep the images service package, as in containerd.
    let image = berth_proto::any_of(&images::ImageDelete { name: "n".into() });
    assert_eq!(image.type_url, "containerd.services.images.v1.ImageDelete");

    // The prefixed form is accepted on the way in; a different type or a suffix clash is not.
    let prefixed = Any {
        type_url: "type.googleapis.com/containerd.events.TaskExit".into(),
        value: any.value.clone(),
    };
    assert_eq!(berth_proto::from_any::<TaskExit>(&prefixed).unwrap(), exit);
    let clash = Any {
        type_url: "xcontainerd.events.TaskExit".into(),
        value: any.value.clone(),
    };
    let err = berth_proto::from_any::<TaskExit>(&clash).unwrap_err();
    assert_eq!(err.kind(), berth_core::ErrorKind::InvalidArgument);
    assert!(
        err.to_string().contains("xcontainerd.events.TaskExit"),
        "{err}"
    );

    let garbage = Any {
        type_url: "containerd.events.TaskExit".into(),
        value: vec![0x0a, 5, b'c'],
    };
    let err = berth_proto::from_any::<TaskExit>(&garbage).unwrap_err();
    assert_eq!(err.kind(), berth_core::ErrorKind::InvalidArgument);
}

#[test]
fn constants() {
    assert_eq!(berth_proto::NAMESPACE_HEADER, "containerd-namespace");
    assert_eq!(berth_proto::LEASE_HEADER, "containerd-lease");
    assert_eq!(berth_proto::MAX_MESSAGE_SIZE, 16 * 1024 * 1024);
    assert_eq!(
        berth_proto::RUNTIME_SPEC_TYPE_URL,
        "types.containerd.io/opencontainers/runtime-spec/1/Spec"
    );
}
