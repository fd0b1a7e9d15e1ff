//! `berthctl namespace …`.

use berth_core::labels::Labels;
use berth_core::namespaces::NamespaceInfo;
use serde::Serialize;

use super::{Ctx, label_map, print, remove_each};
use crate::CmdResult;
use crate::cli::NamespaceCommand;
use crate::output::{self, Format, Table};

/// A namespace as printed.
#[derive(Debug, Serialize)]
pub struct NamespaceRow {
    /// Its name.
    pub name: String,
    /// Its labels.
    pub labels: Labels,
}

impl From<NamespaceInfo> for NamespaceRow {
    fn from(ns: NamespaceInfo) -> Self {
        Self {
            name: ns.name.to_string(),
            labels: ns.labels,
        }
    }
}

/// A list of namespaces as a table or a JSON array.
pub fn render_list(format: Format, rows: &[NamespaceRow]) -> String {
    output::render(format, rows, |rows| {
        let mut t = Table::new(&["NAME", "LABELS"]);
        for r in rows {
            t.row(vec![r.name.clone(), output::labels(&r.labels)]);
        }
        t.render()
    })
}

fn render_one(format: Format, row: &NamespaceRow) -> String {
    output::render(format, row, |r| format!("{}\n", r.name))
}

pub async fn run(ctx: &Ctx, cmd: NamespaceCommand) -> CmdResult {
    let client = ctx.connect().await?;
    match cmd {
        NamespaceCommand::Create { name, labels } => {
            let ns = client
                .namespaces()
                .create(&name, label_map(labels.labels))
                .await?;
            print(&render_one(ctx.format, &ns.into()))
        }
        NamespaceCommand::Ls => {
            let list = client.namespaces().list().await?;
            let rows: Vec<NamespaceRow> = list.into_iter().map(Into::into).collect();
            print(&render_list(ctx.format, &rows))
        }
        NamespaceCommand::Rm { names } => {
            let client = &client;
            remove_each(ctx, names, |name| async move {
                client.namespaces().delete(&name).await.map(|()| name)
            })
            .await
        }
        NamespaceCommand::Label { name, labels } => {
            let ns = client
                .namespaces()
                .update_labels(&name, &label_map(labels))
                .await?;
            print(&render_list(ctx.format, &[ns.into()]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows() -> Vec<NamespaceRow> {
        vec![
            NamespaceRow {
                name: "default".into(),
                labels: Labels::new(),
            },
            NamespaceRow {
                name: "k8s.io".into(),
                labels: Labels::from([(
                    "containerd.io/defaults/snapshotter".to_owned(),
                    "overlayfs".to_owned(),
                )]),
            },
        ]
    }

    #[test]
    fn table() {
        assert_eq!(
            render_list(Format::Table, &rows()),
            "NAME      LABELS\n\
             default   -\n\
             k8s.io    containerd.io/defaults/snapshotter=overlayfs\n"
        );
    }

    #[test]
    fn json_shape() {
        let v: serde_json::Value =
            serde_json::from_str(&render_list(Format::Json, &rows())).unwrap();
        assert_eq!(
            v,
            serde_json::json!([
                {"name": "default", "labels": {}},
                {"name": "k8s.io", "labels": {"containerd.io/defaults/snapshotter": "overlayfs"}},
            ])
        );
    }
}
