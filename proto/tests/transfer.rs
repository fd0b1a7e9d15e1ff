//! Wire checks for `berth.services.transfer.v1`: each message is encoded and compared byte for
//! byte against an encoding worked out by hand from transfer.proto's field numbers, then decoded
//! back; and the service's paths and streaming kinds are pinned. The numbers are ours, not
//! containerd's, but released clients depend on them just the same.
//!
//! Key byte reminder: `(field << 3) | wire_type`, wire type 0 for varints (bools, enums, ints)
//! and 2 for length-delimited values (strings, messages, map entries).

// Test helpers outside #[test] fns are still test code: panicking on a broken invariant is the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use berth_proto::berth::services::transfer::v1::{self as pb, progress::Event};
use berth_proto::containerd::services::images::v1::Image;
use berth_proto::containerd::types::{Descriptor, Platform};
use prost::Message;
use tonic::server::NamedService;

fn assert_wire<M: Message + Default + PartialEq + std::fmt::Debug>(msg: &M, expected: &[u8]) {
    let bytes = msg.encode_to_vec();
    assert_eq!(bytes, expected, "encoding of {msg:?}");
    assert_eq!(&M::decode(expected).unwrap(), msg);
}

/// `{media_type: "m", digest: "d", size: 5}`, 8 bytes encoded.
fn descriptor() -> Descriptor {
    Descriptor {
        media_type: "m".into(),
        digest: "d".into(),
        size: 5,
        annotations: HashMap::new(),
    }
}

const DESCRIPTOR: [u8; 8] = [0x0a, 1, b'm', 0x12, 1, b'd', 0x18, 5];

#[test]
fn pull_request() {
    let msg = pb::PullRequest {
        reference: "r".into(),
        platforms: vec![Platform {
            os: "l".into(),
            architecture: "a".into(),
            variant: String::new(),
        }],
        all_platforms: true,
        unpack: true,
        snapshotter: "s".into(),
        credentials: Some(pb::Credentials {
            username: "u".into(),
            secret: "p".into(),
        }),
        labels: HashMap::from([("k".into(), "v".into())]),
    };
    assert_wire(
        &msg,
        &[
            0x0a, 1, b'r', // reference = 1
            0x12, 6, 0x0a, 1, b'l', 0x12, 1, b'a', // platforms = 2 {os, architecture}
            0x18, 1, // all_platforms = 3
            0x20, 1, // unpack = 4
            0x2a, 1, b's', // snapshotter = 5
            0x32, 6, 0x0a, 1, b'u', 0x12, 1, b'p', // credentials = 6 {username, secret}
            0x3a, 6, 0x0a, 1, b'k', 0x12, 1, b'v', // labels = 7 {k: v}
        ],
    );
}

#[test]
fn push_request() {
    let msg = pb::PushRequest {
        image: "i".into(),
        reference: "t".into(),
        platforms: vec![Platform {
            os: "l".into(),
            architecture: "a".into(),
            variant: "v".into(),
        }],
        // An identity token: no user name on the wire at all.
        credentials: Some(pb::Credentials {
            username: String::new(),
            secret: "t".into(),
        }),
    };
    assert_wire(
        &msg,
        &[
            0x0a, 1, b'i', // image = 1
            0x12, 1, b't', // reference = 2
            0x1a, 9, 0x0a, 1, b'l', 0x12, 1, b'a', 0x1a, 1, b'v', // platforms = 3
            0x22, 3, 0x12, 1, b't', // credentials = 4 {secret}
        ],
    );
}

#[test]
fn progress_events() {
    let resolved = pb::Progress {
        event: Some(Event::Resolved(pb::Resolved {
            name: "n".into(),
            root: Some(descriptor()),
        })),
    };
    let mut want = vec![0x0a, 13, 0x0a, 1, b'n', 0x12, 8];
    want.extend(DESCRIPTOR);
    assert_wire(&resolved, &want);

    let blob = pb::Progress {
        event: Some(Event::Blob(pb::BlobProgress {
            descriptor: Some(descriptor()),
            state: pb::BlobState::Transferring as i32,
            offset: 300,
        })),
    };
    let mut want = vec![0x12, 15, 0x0a, 8];
    want.extend(DESCRIPTOR);
    want.extend([0x10, 2, 0x18, 0xac, 0x02]); // state = 2, offset = 3 (300 as a varint)
    assert_wire(&blob, &want);

    let done = pb::Progress {
        event: Some(Event::Done(pb::Done {
            image: Some(Image {
                name: "x".into(),
                target: Some(descriptor()),
                ..Image::default()
            }),
        })),
    };
    // Image: name = 1, target = 3.
    let mut want = vec![0x1a, 15, 0x0a, 13, 0x0a, 1, b'x', 0x1a, 8];
    want.extend(DESCRIPTOR);
    assert_wire(&done, &want);

    assert_wire(&pb::Progress { event: None }, &[]);
}

#[test]
fn blob_state_numbers() {
    use pb::BlobState as S;
    let table = [
        (S::Unspecified, 0, "BLOB_STATE_UNSPECIFIED"),
        (S::Waiting, 1, "BLOB_STATE_WAITING"),
        (S::Transferring, 2, "BLOB_STATE_TRANSFERRING"),
        (S::Exists, 3, "BLOB_STATE_EXISTS"),
        (S::Mounted, 4, "BLOB_STATE_MOUNTED"),
        (S::Done, 5, "BLOB_STATE_DONE"),
        (S::Unpacking, 6, "BLOB_STATE_UNPACKING"),
        (S::Unpacked, 7, "BLOB_STATE_UNPACKED"),
    ];
    for (state, number, name) in table {
        assert_eq!(state as i32, number);
        assert_eq!(state.as_str_name(), name);
        assert_eq!(S::try_from(number).unwrap(), state);
    }
    assert!(S::try_from(8).is_err());
}

#[test]
fn service_paths_and_streaming() {
    use pb::transfer_server::TransferServer;
    assert_eq!(
        <TransferServer<()> as NamedService>::NAME,
        "berth.services.transfer.v1.Transfer"
    );
    let generated = include_str!(concat!(env!("OUT_DIR"), "/berth.services.transfer.v1.rs"));
    for method in ["Pull", "Push"] {
        let path = format!("\"/berth.services.transfer.v1.Transfer/{method}\"");
        let at = generated
            .find(&path)
            .unwrap_or_else(|| panic!("no client path {path}"));
        let rest = &generated[at..];
        let call = rest.find("self.inner.").unwrap() + "self.inner.".len();
        assert!(
            rest[call..].starts_with("server_streaming("),
            "{method} is server-streaming"
        );
        assert!(generated.contains(&format!("{path} =>")), "server route");
    }
    assert_eq!(
        generated
            .matches("\"/berth.services.transfer.v1.Transfer/")
            .count(),
        4,
        "two methods, each in the client and the server"
    );
}
