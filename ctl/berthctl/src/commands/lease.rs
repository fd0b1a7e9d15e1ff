//! `berthctl lease …`.

use std::time::SystemTime;

use berth_client::LeaseOptions;
use berth_client::convert::known_time;
use berth_core::labels::Labels;
use berth_core::leases::Lease;
use serde::Serialize;

use super::{Ctx, label_map, print, remove_each};
use crate::CmdResult;
use crate::cli::LeaseCommand;
use crate::output::{self, Format, Table};

/// A lease as printed.
#[derive(Debug, Serialize)]
pub struct LeaseRow {
    /// Its id.
    pub id: String,
    /// RFC 3339, `null` when unknown.
    pub created_at: Option<String>,
    /// Its labels.
    pub labels: Labels,
    #[serde(skip)]
    created: Option<SystemTime>,
}

impl From<Lease> for LeaseRow {
    fn from(l: Lease) -> Self {
        let created = known_time(l.created_at);
        Self {
            id: l.id,
            created_at: output::rfc3339(created),
            labels: l.labels,
            created,
        }
    }
}

/// Leases as a table (ages relative to `now`) or a JSON array.
pub fn render_list(format: Format, rows: &[LeaseRow], now: SystemTime) -> String {
    output::render(format, rows, |rows| {
        let mut t = Table::new(&["ID", "CREATED", "LABELS"]);
        for r in rows {
            t.row(vec![
                r.id.clone(),
                output::age(r.created, now),
                output::labels(&r.labels),
            ]);
        }
        t.render()
    })
}

/// A created lease: its bare id (table) or the lease object.
pub fn render_created(format: Format, row: &LeaseRow) -> String {
    output::render(format, row, |r| format!("{}\n", r.id))
}

/// Runs a lease command.
pub async fn run(ctx: &Ctx, cmd: LeaseCommand) -> CmdResult {
    let client = ctx.connect().await?;
    match cmd {
        LeaseCommand::Create {
            id,
            labels,
            expires_in,
        } => {
            let lease = client
                .leases()
                .create(LeaseOptions {
                    id,
                    labels: label_map(labels.labels),
                    expires_in,
                })
                .await?;
            print(&render_created(ctx.format, &lease.into()))
        }
        LeaseCommand::Ls { filters } => {
            let leases = client.leases().list(&filters).await?;
            let rows: Vec<LeaseRow> = leases.into_iter().map(Into::into).collect();
            print(&render_list(ctx.format, &rows, SystemTime::now()))
        }
        LeaseCommand::Rm { ids, sync } => {
            let client = &client;
            remove_each(ctx, ids, |id| async move {
                client.leases().delete(&id, sync).await.map(|()| id)
            })
            .await
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn lease() -> Lease {
        Lease {
            id: "650140003-L9-_".into(),
            created_at: SystemTime::UNIX_EPOCH + Duration::from_secs(60),
            labels: Labels::from([(
                "containerd.io/gc.expire".to_owned(),
                "2030-01-01T00:00:00Z".to_owned(),
            )]),
        }
    }

    #[test]
    fn shapes() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(180);
        let rows = [LeaseRow::from(lease())];
        assert_eq!(
            render_list(Format::Table, &rows, now),
            "ID               CREATED         LABELS\n\
             650140003-L9-_   2 minutes ago   containerd.io/gc.expire=2030-01-01T00:00:00Z\n"
        );
        let v: serde_json::Value =
            serde_json::from_str(&render_list(Format::Json, &rows, now)).unwrap();
        assert_eq!(
            v,
            serde_json::json!([{
                "id": "650140003-L9-_",
                "created_at": "1970-01-01T00:01:00.000000000Z",
                "labels": {"containerd.io/gc.expire": "2030-01-01T00:00:00Z"},
            }])
        );
        assert_eq!(render_created(Format::Table, &rows[0]), "650140003-L9-_\n");
        let v: serde_json::Value =
            serde_json::from_str(&render_created(Format::Json, &rows[0])).unwrap();
        assert_eq!(v["id"], "650140003-L9-_");
    }
}
