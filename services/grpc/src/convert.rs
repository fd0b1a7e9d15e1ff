//! Conversions between wire types and berth-core types.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_core::labels::Labels;
use berth_core::{Digest, Error, Result};
use prost_types::Timestamp;

/// A wire timestamp for `t`.
pub fn timestamp(t: SystemTime) -> Timestamp {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => Timestamp {
            seconds: d.as_secs() as i64,
            nanos: d.subsec_nanos() as i32,
        },
        Err(before) => {
            let d = before.duration();
            Timestamp {
                seconds: -(d.as_secs() as i64),
                nanos: 0,
            }
        }
    }
}

/// A time from a wire timestamp. Go clients send year 1 (`seconds: -62135596800`) for a zero
/// time; anything before the epoch or malformed reads as `None` rather than failing.
pub fn system_time(ts: Option<&Timestamp>) -> Option<SystemTime> {
    let ts = ts?;
    if ts.seconds < 0 || !(0..1_000_000_000).contains(&ts.nanos) {
        return None;
    }
    UNIX_EPOCH.checked_add(Duration::new(ts.seconds as u64, ts.nanos as u32))
}

/// Parses a digest field; empty means absent.
pub fn optional_digest(s: &str) -> Result<Option<Digest>> {
    if s.is_empty() {
        Ok(None)
    } else {
        Digest::parse(s).map(Some)
    }
}

/// Parses a required digest field.
pub fn digest(s: &str) -> Result<Digest> {
    if s.is_empty() {
        return Err(Error::invalid_argument("digest must not be empty"));
    }
    Digest::parse(s)
}

/// A label map from the wire.
pub fn labels(map: std::collections::HashMap<String, String>) -> Labels {
    map.into_iter().collect()
}

/// A label map for the wire.
pub fn wire_labels(labels: &Labels) -> std::collections::HashMap<String, String> {
    labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// A non-negative size from the wire.
pub fn size(n: i64, what: &str) -> Result<u64> {
    u64::try_from(n).map_err(|_| Error::invalid_argument(format!("{what} must not be negative")))
}

/// Field-mask paths, empty when absent.
pub fn mask_paths(mask: Option<prost_types::FieldMask>) -> Vec<String> {
    mask.map(|m| m.paths).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_zero_time_is_none() {
        let zero = Timestamp {
            seconds: -62135596800,
            nanos: 0,
        };
        assert_eq!(system_time(Some(&zero)), None);
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 5);
        assert_eq!(system_time(Some(&timestamp(t))), Some(t));
    }
}
