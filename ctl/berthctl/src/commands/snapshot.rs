//! `berthctl snapshot …`.

use std::collections::BTreeMap;
use std::time::SystemTime;

use berth_client::convert::known_time;
use berth_core::labels::Labels;
use berth_core::mount::Mount;
use berth_core::snapshots::{Info, Usage};
use serde::Serialize;

use super::{Ctx, label_map, print, remove_each};
use crate::CmdResult;
use crate::cli::{SnapshotArgs, SnapshotCommand};
use crate::output::{self, Format, Table};

/// A snapshot as printed.
#[derive(Debug, Serialize)]
pub struct SnapshotRow {
    /// Its key (active, view) or name (committed).
    pub name: String,
    /// The committed parent, `null` for none.
    pub parent: Option<String>,
    /// `active`, `view` or `committed`.
    pub kind: String,
    /// RFC 3339, `null` when unknown.
    pub created_at: Option<String>,
    /// RFC 3339, `null` when unknown.
    pub updated_at: Option<String>,
    /// Its labels.
    pub labels: Labels,
    #[serde(skip)]
    created: Option<SystemTime>,
}

impl From<Info> for SnapshotRow {
    fn from(info: Info) -> Self {
        let created = known_time(info.created_at);
        Self {
            name: info.name,
            parent: info.parent,
            kind: info.kind.as_str().to_owned(),
            created_at: output::rfc3339(created),
            updated_at: output::rfc3339(known_time(info.updated_at)),
            labels: info.labels,
            created,
        }
    }
}

/// Snapshots as a table (ages relative to `now`) or a JSON array.
pub fn render_list(format: Format, rows: &[SnapshotRow], now: SystemTime) -> String {
    output::render(format, rows, |rows| {
        let mut t = Table::new(&["KEY", "PARENT", "KIND", "AGE", "LABELS"]);
        for r in rows {
            t.row(vec![
                r.name.clone(),
                r.parent.clone().unwrap_or_else(|| "-".to_owned()),
                r.kind.clone(),
                output::age(r.created, now),
                output::labels(&r.labels),
            ]);
        }
        t.render()
    })
}

/// A mount as printed in JSON (containerd's field names).
#[derive(Debug, Serialize)]
pub struct MountRow {
    /// The filesystem type.
    #[serde(rename = "type")]
    pub kind: String,
    /// The source.
    pub source: String,
    /// The target (empty: the caller's choice).
    pub target: String,
    /// The options.
    pub options: Vec<String>,
}

impl From<&Mount> for MountRow {
    fn from(m: &Mount) -> Self {
        Self {
            kind: m.kind.clone(),
            source: m.source.clone(),
            target: m.target.clone(),
            options: m.options.clone(),
        }
    }
}

/// `s` as one shell word: unchanged when it is plain, single-quoted otherwise.
fn shell_word(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-=,:+@%".contains(c));
    if plain {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The `mount` command that mounts `m` on `target`, as `ctr snapshots mounts` prints it.
pub fn mount_command(m: &Mount, target: &str) -> String {
    let mut cmd = format!(
        "mount -t {} {} {}",
        shell_word(&m.kind),
        shell_word(&m.source),
        shell_word(target)
    );
    if !m.options.is_empty() {
        cmd.push_str(" -o ");
        cmd.push_str(&shell_word(&m.options.join(",")));
    }
    cmd
}

/// Mounts as `mount` commands for `target` (table), or a JSON array.
pub fn render_mounts(format: Format, mounts: &[Mount], target: &str) -> String {
    let rows: Vec<MountRow> = mounts.iter().map(MountRow::from).collect();
    output::render(format, &rows, |_| {
        mounts
            .iter()
            .map(|m| format!("{}\n", mount_command(m, target)))
            .collect()
    })
}

/// What `prepare`/`view` print: the mount commands when a target was given (table), always
/// the key and mounts in JSON.
pub fn render_created(format: Format, key: &str, mounts: &[Mount], target: Option<&str>) -> String {
    match format {
        Format::Json => output::json(&serde_json::json!({
            "key": key,
            "mounts": mounts.iter().map(MountRow::from).collect::<Vec<_>>(),
        })),
        Format::Table => target.map_or_else(String::new, |t| render_mounts(format, mounts, t)),
    }
}

/// One snapshot's usage as printed.
#[derive(Debug, Serialize)]
pub struct UsageRow {
    /// The key or name.
    pub key: String,
    /// Bytes.
    pub size: u64,
    /// Inodes.
    pub inodes: u64,
}

/// Usages as a table or a JSON array.
pub fn render_usage(format: Format, rows: &[UsageRow]) -> String {
    output::render(format, rows, |rows| {
        let mut t = Table::new(&["KEY", "SIZE", "INODES"]);
        for r in rows {
            t.row(vec![
                r.key.clone(),
                output::human_size(r.size),
                r.inodes.to_string(),
            ]);
        }
        t.render()
    })
}

/// A snapshot and its descendants, for `tree`.
#[derive(Debug, Serialize)]
pub struct TreeNode {
    /// The key or name.
    pub name: String,
    /// Its kind.
    pub kind: String,
    /// The snapshots whose parent it is.
    pub children: Vec<TreeNode>,
}

/// The snapshots as trees: roots are those without a parent (or whose parent is not listed).
pub fn build_tree(infos: &[Info]) -> Vec<TreeNode> {
    let names: std::collections::BTreeSet<&str> = infos.iter().map(|i| i.name.as_str()).collect();
    let mut children: BTreeMap<Option<&str>, Vec<&Info>> = BTreeMap::new();
    for info in infos {
        let parent = info.parent.as_deref().filter(|p| names.contains(p));
        children.entry(parent).or_default().push(info);
    }
    fn grow(info: &Info, children: &BTreeMap<Option<&str>, Vec<&Info>>, depth: usize) -> TreeNode {
        // Parents are committed snapshots, which cannot form a loop; the depth bound is for
        // a server that sends one anyway.
        let kids = if depth < 4096 {
            children
                .get(&Some(info.name.as_str()))
                .map(|c| c.iter().map(|i| grow(i, children, depth + 1)).collect())
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        TreeNode {
            name: info.name.clone(),
            kind: info.kind.as_str().to_owned(),
            children: kids,
        }
    }
    let mut roots: Vec<TreeNode> = children
        .get(&None)
        .map(|r| r.iter().map(|i| grow(i, &children, 0)).collect())
        .unwrap_or_default();
    sort_tree(&mut roots);
    roots
}

fn sort_tree(nodes: &mut [TreeNode]) {
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    for n in nodes {
        sort_tree(&mut n.children);
    }
}

/// The tree as indented lines (`\_ child`, as `ctr snapshots tree`) or JSON.
pub fn render_tree(format: Format, roots: &[TreeNode]) -> String {
    fn lines(node: &TreeNode, depth: usize, out: &mut String) {
        if depth == 0 {
            out.push_str(&format!("{} ({})\n", node.name, node.kind));
        } else {
            out.push_str(&format!(
                "{}\\_ {} ({})\n",
                "  ".repeat(depth),
                node.name,
                node.kind
            ));
        }
        for child in &node.children {
            lines(child, depth + 1, out);
        }
    }
    output::render(format, roots, |roots| {
        let mut out = String::new();
        for root in roots {
            lines(root, 0, &mut out);
        }
        out
    })
}

/// Runs a snapshot command.
pub async fn run(ctx: &Ctx, args: SnapshotArgs) -> CmdResult {
    let client = ctx.connect().await?;
    let snapshots = client.snapshots(args.snapshotter);
    match args.command {
        SnapshotCommand::Ls { filters } => {
            let infos = snapshots.list(&filters).await?;
            let rows: Vec<SnapshotRow> = infos.into_iter().map(Into::into).collect();
            print(&render_list(ctx.format, &rows, SystemTime::now()))
        }
        SnapshotCommand::Prepare {
            key,
            parent,
            labels,
            target,
        } => {
            let mounts = snapshots
                .prepare(&key, parent.as_deref(), &label_map(labels.labels))
                .await?;
            print(&render_created(
                ctx.format,
                &key,
                &mounts,
                target.as_deref(),
            ))
        }
        SnapshotCommand::View {
            key,
            parent,
            labels,
            target,
        } => {
            let mounts = snapshots
                .view(&key, parent.as_deref(), &label_map(labels.labels))
                .await?;
            print(&render_created(
                ctx.format,
                &key,
                &mounts,
                target.as_deref(),
            ))
        }
        SnapshotCommand::Commit { name, key, labels } => {
            snapshots
                .commit(&name, &key, &label_map(labels.labels))
                .await?;
            let info = snapshots.stat(&name).await?;
            print(&render_list(ctx.format, &[info.into()], SystemTime::now()))
        }
        SnapshotCommand::Rm { keys } => {
            let snapshots = &snapshots;
            remove_each(ctx, keys, |key| async move {
                snapshots.remove(&key).await.map(|()| key)
            })
            .await
        }
        SnapshotCommand::Mounts { target, key } => {
            let mounts = snapshots.mounts(&key).await?;
            print(&render_mounts(ctx.format, &mounts, &target))
        }
        SnapshotCommand::Usage { keys } => {
            let keys = if keys.is_empty() {
                snapshots
                    .list(&[])
                    .await?
                    .into_iter()
                    .map(|i| i.name)
                    .collect()
            } else {
                keys
            };
            let mut rows = Vec::with_capacity(keys.len());
            for key in keys {
                let Usage { size, inodes } = snapshots.usage(&key).await?;
                rows.push(UsageRow { key, size, inodes });
            }
            print(&render_usage(ctx.format, &rows))
        }
        SnapshotCommand::Info { key } => {
            let row = SnapshotRow::from(snapshots.stat(&key).await?);
            print(&output::render(ctx.format, &row, |r| {
                render_list(Format::Table, std::slice::from_ref(r), SystemTime::now())
            }))
        }
        SnapshotCommand::Tree => {
            let infos = snapshots.list(&[]).await?;
            print(&render_tree(ctx.format, &build_tree(&infos)))
        }
        SnapshotCommand::Label { key, labels } => {
            let info = snapshots.update_labels(&key, &label_map(labels)).await?;
            print(&render_list(ctx.format, &[info.into()], SystemTime::now()))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use berth_core::snapshots::Kind;

    use super::*;

    fn info(name: &str, parent: Option<&str>, kind: Kind) -> Info {
        Info {
            name: name.into(),
            parent: parent.map(Into::into),
            kind,
            created_at: SystemTime::UNIX_EPOCH + Duration::from_secs(60),
            updated_at: SystemTime::UNIX_EPOCH + Duration::from_secs(60),
            labels: Labels::new(),
        }
    }

    #[test]
    fn list_shapes() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(180);
        let mut committed = info("sha256:c1", None, Kind::Committed);
        committed.labels.insert("a".into(), "b".into());
        let rows = [
            SnapshotRow::from(committed),
            SnapshotRow::from(info("web", Some("sha256:c1"), Kind::Active)),
        ];
        assert_eq!(
            render_list(Format::Table, &rows, now),
            "KEY         PARENT      KIND        AGE             LABELS\n\
             sha256:c1   -           committed   2 minutes ago   a=b\n\
             web         sha256:c1   active      2 minutes ago   -\n"
        );
        let v: serde_json::Value =
            serde_json::from_str(&render_list(Format::Json, &rows, now)).unwrap();
        assert_eq!(
            v[1],
            serde_json::json!({
                "name": "web",
                "parent": "sha256:c1",
                "kind": "active",
                "created_at": "1970-01-01T00:01:00.000000000Z",
                "updated_at": "1970-01-01T00:01:00.000000000Z",
                "labels": {},
            })
        );
    }

    #[test]
    fn mount_commands_like_ctr() {
        let overlay = Mount {
            kind: "overlay".into(),
            source: "overlay".into(),
            target: String::new(),
            options: vec![
                "index=off".into(),
                "workdir=/r/2/work".into(),
                "upperdir=/r/2/fs".into(),
                "lowerdir=/r/1/fs".into(),
            ],
        };
        assert_eq!(
            render_mounts(Format::Table, &[overlay], "/mnt"),
            "mount -t overlay overlay /mnt -o index=off,workdir=/r/2/work,upperdir=/r/2/fs,lowerdir=/r/1/fs\n"
        );
        let bind = Mount::bind("/r/a b", true);
        assert_eq!(
            mount_command(&bind, "/t"),
            "mount -t bind '/r/a b' /t -o ro,rbind"
        );
        let v: serde_json::Value = serde_json::from_str(&render_mounts(
            Format::Json,
            std::slice::from_ref(&bind),
            "/t",
        ))
        .unwrap();
        assert_eq!(
            v,
            serde_json::json!([{"type": "bind", "source": "/r/a b", "target": "", "options": ["ro", "rbind"]}])
        );
        assert_eq!(
            render_created(Format::Table, "k", std::slice::from_ref(&bind), None),
            ""
        );
        let v: serde_json::Value =
            serde_json::from_str(&render_created(Format::Json, "k", &[bind], None)).unwrap();
        assert_eq!(v["key"], "k");
        assert_eq!(v["mounts"][0]["type"], "bind");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
    }

    #[test]
    fn trees() {
        let infos = [
            info("c2", Some("c1"), Kind::Committed),
            info("c1", None, Kind::Committed),
            info("web", Some("c2"), Kind::Active),
            info("look", Some("c1"), Kind::View),
            info("orphan", Some("not-listed"), Kind::Active),
        ];
        let roots = build_tree(&infos);
        assert_eq!(
            render_tree(Format::Table, &roots),
            "c1 (committed)\n\
             \x20 \\_ c2 (committed)\n\
             \x20   \\_ web (active)\n\
             \x20 \\_ look (view)\n\
             orphan (active)\n"
        );
        let v: serde_json::Value =
            serde_json::from_str(&render_tree(Format::Json, &roots)).unwrap();
        assert_eq!(v[0]["children"][0]["children"][0]["name"], "web");
        assert_eq!(v[1]["name"], "orphan");
    }

    #[test]
    fn usage_shapes() {
        let rows = [UsageRow {
            key: "k".into(),
            size: 2048,
            inodes: 3,
        }];
        assert_eq!(
            render_usage(Format::Table, &rows),
            "KEY   SIZE      INODES\nk     2.0 KiB   3\n"
        );
        let v: serde_json::Value =
            serde_json::from_str(&render_usage(Format::Json, &rows)).unwrap();
        assert_eq!(
            v,
            serde_json::json!([{"key": "k", "size": 2048, "inodes": 3}])
        );
    }
}
