//! Lease helpers, and lease ids in containerd's style.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use berth_core::labels::Labels;
use berth_core::leases::{EXPIRE_LABEL, Lease, Resource};
use berth_core::{Error, Result};
use berth_proto::containerd::services::leases::v1 as pb;

use crate::client::Client;
use crate::convert;
use crate::error::from_status;

/// What to create; the default is a lease with a generated id, no labels and no expiry.
#[derive(Debug, Clone, Default)]
pub struct LeaseOptions {
    /// The id; `None` generates one with [`generate_lease_id`].
    pub id: Option<String>,
    /// Labels to set.
    pub labels: Labels,
    /// Sets `containerd.io/gc.expire` to now plus this, after which GC ignores the lease.
    pub expires_in: Option<Duration>,
}

impl LeaseOptions {
    /// Options with an explicit id.
    pub fn with_id(id: impl Into<String>) -> Self {
        Self {
            id: Some(id.into()),
            ..Self::default()
        }
    }

    /// The same options expiring `d` from creation.
    pub fn expires_in(mut self, d: Duration) -> Self {
        self.expires_in = Some(d);
        self
    }

    /// The same options with one more label.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }
}

/// A lease id as containerd's client makes them: the current time's nanoseconds within the
/// second, a dash, and 3 random bytes in URL-safe base64 (e.g. `650140003-L9-_`).
pub fn generate_lease_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let bytes: [u8; 3] = rand::random();
    format!(
        "{nanos}-{}",
        base64::engine::general_purpose::URL_SAFE.encode(bytes)
    )
}

/// The `containerd.io/gc.expire` value for `d` from `now`: RFC 3339 in UTC, whole seconds.
pub fn expiry_value(now: SystemTime, d: Duration) -> Result<String> {
    let at = now
        .checked_add(d)
        .ok_or_else(|| Error::invalid_argument(format!("lease expiry {d:?} is too far away")))?;
    let at: chrono::DateTime<chrono::Utc> = at.into();
    Ok(at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

/// Lease helpers; see [`Client::leases`].
#[derive(Debug, Clone, Copy)]
pub struct Leases<'a> {
    client: &'a Client,
}

impl<'a> Leases<'a> {
    pub(crate) fn new(client: &'a Client) -> Self {
        Self { client }
    }

    /// Creates a lease; AlreadyExists when the id is taken.
    pub async fn create(&self, options: LeaseOptions) -> Result<Lease> {
        let id = options.id.unwrap_or_else(generate_lease_id);
        let mut labels = options.labels;
        if let Some(d) = options.expires_in {
            labels.insert(EXPIRE_LABEL.to_owned(), expiry_value(SystemTime::now(), d)?);
        }
        self.client
            .call(|| format!("create lease {id:?}"), async {
                let resp = self
                    .client
                    .rpc()
                    .leases()
                    .create(pb::CreateRequest {
                        id: id.clone(),
                        labels: convert::wire_labels(&labels),
                    })
                    .await
                    .map_err(from_status)?
                    .into_inner();
                let lease = resp
                    .lease
                    .ok_or_else(|| Error::internal(format!("server sent no lease for {id:?}")))?;
                Ok(convert::lease(lease))
            })
            .await
    }

    /// The leases matching any of `filters` (all when empty).
    pub async fn list(&self, filters: &[String]) -> Result<Vec<Lease>> {
        self.client
            .call(|| "list leases".to_owned(), async {
                let resp = self
                    .client
                    .rpc()
                    .leases()
                    .list(pb::ListRequest {
                        filters: filters.to_vec(),
                    })
                    .await
                    .map_err(from_status)?
                    .into_inner();
                Ok(resp.leases.into_iter().map(convert::lease).collect())
            })
            .await
    }

    /// Deletes lease `id`; with `sync`, the server collects garbage before answering.
    pub async fn delete(&self, id: &str, sync: bool) -> Result<()> {
        self.client
            .call(|| format!("delete lease {id:?}"), async {
                self.client
                    .rpc()
                    .leases()
                    .delete(pb::DeleteRequest {
                        id: id.to_owned(),
                        sync,
                    })
                    .await
                    .map_err(from_status)?;
                Ok(())
            })
            .await
    }

    /// Adds `resource` to lease `id`.
    pub async fn add_resource(&self, id: &str, resource: &Resource) -> Result<()> {
        self.client
            .call(|| format!("add {resource:?} to lease {id:?}"), async {
                self.client
                    .rpc()
                    .leases()
                    .add_resource(pb::AddResourceRequest {
                        id: id.to_owned(),
                        resource: Some(convert::wire_resource(resource)),
                    })
                    .await
                    .map_err(from_status)?;
                Ok(())
            })
            .await
    }

    /// Removes `resource` from lease `id`.
    pub async fn delete_resource(&self, id: &str, resource: &Resource) -> Result<()> {
        self.client
            .call(|| format!("remove {resource:?} from lease {id:?}"), async {
                self.client
                    .rpc()
                    .leases()
                    .delete_resource(pb::DeleteResourceRequest {
                        id: id.to_owned(),
                        resource: Some(convert::wire_resource(resource)),
                    })
                    .await
                    .map_err(from_status)?;
                Ok(())
            })
            .await
    }

    /// The resources lease `id` holds.
    pub async fn list_resources(&self, id: &str) -> Result<Vec<Resource>> {
        self.client
            .call(|| format!("list resources of lease {id:?}"), async {
                let resp = self
                    .client
                    .rpc()
                    .leases()
                    .list_resources(pb::ListResourcesRequest { id: id.to_owned() })
                    .await
                    .map_err(from_status)?
                    .into_inner();
                Ok(resp.resources.into_iter().map(convert::resource).collect())
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_containerd_style(id: &str) -> bool {
        let Some((nanos, suffix)) = id.split_once('-') else {
            return false;
        };
        !nanos.is_empty()
            && nanos.len() <= 9
            && nanos.bytes().all(|b| b.is_ascii_digit())
            && suffix.len() == 4
            && suffix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    }

    #[test]
    fn lease_ids_look_like_containerds() {
        assert!(is_containerd_style("650140003-L9-_"));
        assert!(!is_containerd_style("650140003-L9+/"));
        let ids: Vec<String> = (0..64).map(|_| generate_lease_id()).collect();
        for id in &ids {
            assert!(is_containerd_style(id), "{id}");
        }
        let distinct: std::collections::BTreeSet<_> = ids.iter().collect();
        assert!(distinct.len() > 60, "ids should rarely repeat: {ids:?}");
    }

    #[test]
    fn expiry_is_rfc3339_utc() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            expiry_value(now, Duration::from_secs(24 * 3600)).unwrap(),
            "2023-11-15T22:13:20Z"
        );
    }

    #[test]
    fn options_builder() {
        let o = LeaseOptions::with_id("x")
            .label("a", "b")
            .expires_in(Duration::from_secs(1));
        assert_eq!(o.id.as_deref(), Some("x"));
        assert_eq!(o.labels.get("a").map(String::as_str), Some("b"));
        assert_eq!(o.expires_in, Some(Duration::from_secs(1)));
    }
}
