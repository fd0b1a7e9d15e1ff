//! Wire ↔ berth-core conversions for what the client reads back from a server.
//!
//! Servers written in Go send a zero `time.Time` as year 1 (`seconds: -62135596800`); times
//! that are absent, before the epoch or malformed read as [`UNIX_EPOCH`], which callers treat as
//! "unknown" (see [`known_time`]).

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_core::content::{Info, IngestStatus};
use berth_core::labels::Labels;
use berth_core::leases::{Lease, Resource};
use berth_core::namespaces::NamespaceInfo;
use berth_core::{Digest, Error, Namespace, Result};
use berth_proto::containerd::services::content::v1 as content_pb;
use berth_proto::containerd::services::leases::v1 as leases_pb;
use berth_proto::containerd::services::namespaces::v1 as namespaces_pb;
use prost_types::Timestamp;

/// A time from a wire timestamp; absent, pre-epoch or malformed values become [`UNIX_EPOCH`].
pub fn system_time(ts: Option<&Timestamp>) -> SystemTime {
    let Some(ts) = ts else {
        return UNIX_EPOCH;
    };
    if ts.seconds < 0 || !(0..1_000_000_000).contains(&ts.nanos) {
        return UNIX_EPOCH;
    }
    UNIX_EPOCH
        .checked_add(Duration::new(ts.seconds as u64, ts.nanos as u32))
        .unwrap_or(UNIX_EPOCH)
}

/// `Some(t)` unless `t` is the "unknown" placeholder [`UNIX_EPOCH`].
pub fn known_time(t: SystemTime) -> Option<SystemTime> {
    (t > UNIX_EPOCH).then_some(t)
}

/// A wire duration as a std one; negative or malformed values become zero.
pub fn duration(d: Option<&prost_types::Duration>) -> Duration {
    match d {
        Some(d) if d.seconds >= 0 && (0..1_000_000_000).contains(&d.nanos) => {
            Duration::new(d.seconds as u64, d.nanos as u32)
        }
        _ => Duration::ZERO,
    }
}

/// A label map from the wire.
pub fn labels(map: HashMap<String, String>) -> Labels {
    map.into_iter().collect()
}

/// A label map for the wire.
pub fn wire_labels(labels: &Labels) -> HashMap<String, String> {
    labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// A size from the wire; a negative one is the server's bug.
pub fn size(n: i64, what: &str) -> Result<u64> {
    u64::try_from(n).map_err(|_| Error::internal(format!("server sent a negative {what} ({n})")))
}

/// A digest the server sent; a malformed one is the server's bug, reported with what it was.
pub fn digest(s: &str, what: &str) -> Result<Digest> {
    Digest::parse(s).map_err(|e| Error::internal(format!("server sent {what}: {}", e.message())))
}

/// Content info from the wire.
pub fn content_info(info: content_pb::Info) -> Result<Info> {
    Ok(Info {
        digest: digest(&info.digest, "a content info digest")?,
        size: size(info.size, "content size")?,
        created_at: system_time(info.created_at.as_ref()),
        updated_at: system_time(info.updated_at.as_ref()),
        labels: labels(info.labels),
    })
}

/// An ingest status from the wire.
pub fn ingest_status(status: content_pb::Status) -> Result<IngestStatus> {
    let expected = if status.expected.is_empty() {
        None
    } else {
        Some(digest(&status.expected, "an ingest's expected digest")?)
    };
    Ok(IngestStatus {
        offset: size(status.offset, "ingest offset")?,
        total: size(status.total, "ingest total")?,
        expected,
        started_at: system_time(status.started_at.as_ref()),
        updated_at: system_time(status.updated_at.as_ref()),
        reference: status.r#ref,
    })
}

/// A lease from the wire.
pub fn lease(lease: leases_pb::Lease) -> Lease {
    Lease {
        id: lease.id,
        created_at: system_time(lease.created_at.as_ref()),
        labels: labels(lease.labels),
    }
}

/// A lease resource from the wire.
pub fn resource(r: leases_pb::Resource) -> Resource {
    Resource {
        id: r.id,
        kind: r.r#type,
    }
}

/// A lease resource for the wire.
pub fn wire_resource(r: &Resource) -> leases_pb::Resource {
    leases_pb::Resource {
        id: r.id.clone(),
        r#type: r.kind.clone(),
    }
}

/// A namespace from the wire.
pub fn namespace(ns: namespaces_pb::Namespace) -> Result<NamespaceInfo> {
    let name = Namespace::new(ns.name.as_str())
        .map_err(|e| Error::internal(format!("server sent a bad namespace: {}", e.message())))?;
    Ok(NamespaceInfo {
        name,
        labels: labels(ns.labels),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_zero_time_and_absent_time_are_unknown() {
        let zero = Timestamp {
            seconds: -62_135_596_800,
            nanos: 0,
        };
        assert_eq!(system_time(Some(&zero)), UNIX_EPOCH);
        assert_eq!(system_time(None), UNIX_EPOCH);
        assert_eq!(known_time(system_time(Some(&zero))), None);
        let bad_nanos = Timestamp {
            seconds: 5,
            nanos: -1,
        };
        assert_eq!(system_time(Some(&bad_nanos)), UNIX_EPOCH);
    }

    #[test]
    fn real_time_round_trips() {
        let ts = Timestamp {
            seconds: 1_700_000_000,
            nanos: 123,
        };
        let t = system_time(Some(&ts));
        assert_eq!(
            t.duration_since(UNIX_EPOCH).unwrap(),
            Duration::new(1_700_000_000, 123)
        );
        assert_eq!(known_time(t), Some(t));
    }

    #[test]
    fn content_info_checks_server_values() {
        let good = content_pb::Info {
            digest: Digest::of(b"x").to_string(),
            size: 1,
            created_at: None,
            updated_at: None,
            labels: HashMap::from([("a".into(), "b".into())]),
        };
        let info = content_info(good.clone()).unwrap();
        assert_eq!(info.digest, Digest::of(b"x"));
        assert_eq!(info.labels.get("a").map(String::as_str), Some("b"));

        let negative = content_pb::Info {
            size: -1,
            ..good.clone()
        };
        assert_eq!(
            content_info(negative).unwrap_err().kind(),
            berth_core::ErrorKind::Internal
        );
        let bad_digest = content_pb::Info {
            digest: "sha256:nope".into(),
            ..good
        };
        assert!(content_info(bad_digest).is_err());
    }

    #[test]
    fn durations_clamp() {
        let d = prost_types::Duration {
            seconds: 2,
            nanos: 500,
        };
        assert_eq!(duration(Some(&d)), Duration::new(2, 500));
        let neg = prost_types::Duration {
            seconds: -2,
            nanos: 0,
        };
        assert_eq!(duration(Some(&neg)), Duration::ZERO);
        assert_eq!(duration(None), Duration::ZERO);
    }
}
