//! `berthctl content …`.

use std::path::PathBuf;
use std::time::SystemTime;

use berth_client::Client;
use berth_client::content::{Seekable, Unseekable};
use berth_client::convert::known_time;
use berth_core::content::{Info, IngestStatus};
use berth_core::labels::Labels;
use berth_core::{Digest, Error};
use serde::Serialize;

use super::{Ctx, is_stdin, label_map, print, remove_each};
use crate::cli::ContentCommand;
use crate::output::{self, Format, Table};
use crate::{CmdResult, Failure};

/// A blob as printed.
#[derive(Debug, Serialize)]
pub struct ContentRow {
    /// `sha256:<hex>`.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// RFC 3339, `null` when unknown.
    pub created_at: Option<String>,
    /// RFC 3339, `null` when unknown.
    pub updated_at: Option<String>,
    /// Labels.
    pub labels: Labels,
    #[serde(skip)]
    created: Option<SystemTime>,
}

impl From<Info> for ContentRow {
    fn from(info: Info) -> Self {
        let created = known_time(info.created_at);
        Self {
            digest: info.digest.to_string(),
            size: info.size,
            created_at: output::rfc3339(created),
            updated_at: output::rfc3339(known_time(info.updated_at)),
            labels: info.labels,
            created,
        }
    }
}

/// Blobs as a table (ages relative to `now`) or a JSON array.
pub fn render_list(format: Format, rows: &[ContentRow], now: SystemTime) -> String {
    output::render(format, rows, |rows| {
        let mut t = Table::new(&["DIGEST", "SIZE", "AGE", "LABELS"]);
        for r in rows {
            t.row(vec![
                r.digest.clone(),
                output::human_size(r.size),
                output::age(r.created, now),
                output::labels(&r.labels),
            ]);
        }
        t.render()
    })
}

/// An ingest in progress as printed.
#[derive(Debug, Serialize)]
pub struct IngestRow {
    /// The ingest's ref.
    #[serde(rename = "ref")]
    pub reference: String,
    /// Bytes received.
    pub offset: u64,
    /// Bytes announced, 0 when unknown.
    pub total: u64,
    /// The expected digest, `null` when not given.
    pub expected: Option<String>,
    /// RFC 3339, `null` when unknown.
    pub started_at: Option<String>,
    /// RFC 3339, `null` when unknown.
    pub updated_at: Option<String>,
    #[serde(skip)]
    started: Option<SystemTime>,
    #[serde(skip)]
    updated: Option<SystemTime>,
}

impl From<IngestStatus> for IngestRow {
    fn from(s: IngestStatus) -> Self {
        let started = known_time(s.started_at);
        let updated = known_time(s.updated_at);
        Self {
            reference: s.reference,
            offset: s.offset,
            total: s.total,
            expected: s.expected.map(|d| d.to_string()),
            started_at: output::rfc3339(started),
            updated_at: output::rfc3339(updated),
            started,
            updated,
        }
    }
}

/// Ingests as a table (ages relative to `now`) or a JSON array.
pub fn render_active(format: Format, rows: &[IngestRow], now: SystemTime) -> String {
    output::render(format, rows, |rows| {
        let mut t = Table::new(&["REF", "SIZE", "STARTED", "UPDATED"]);
        for r in rows {
            let total = if r.total == 0 {
                "?".to_owned()
            } else {
                output::human_size(r.total)
            };
            t.row(vec![
                r.reference.clone(),
                format!("{}/{total}", output::human_size(r.offset)),
                output::age(r.started, now),
                output::age(r.updated, now),
            ]);
        }
        t.render()
    })
}

/// The result of an ingest as printed.
#[derive(Debug, Serialize)]
pub struct IngestResult {
    /// The ref used.
    #[serde(rename = "ref")]
    pub reference: String,
    /// The committed blob's digest.
    pub digest: String,
}

/// The ingest result: the bare digest (table) or an object.
pub fn render_ingest(format: Format, result: &IngestResult) -> String {
    output::render(format, result, |r| format!("{}\n", r.digest))
}

/// Runs a content command.
pub async fn run(ctx: &Ctx, cmd: ContentCommand) -> CmdResult {
    let client = ctx.connect().await?;
    match cmd {
        ContentCommand::Ls { filters } => {
            let infos = client.content().list(&filters).await?;
            let rows: Vec<ContentRow> = infos.into_iter().map(Into::into).collect();
            print(&render_list(ctx.format, &rows, SystemTime::now()))
        }
        ContentCommand::Get { digest } => {
            let digest = Digest::parse(&digest)?;
            let mut out = tokio::io::stdout();
            match client.content().read_to(&digest, &mut out).await {
                Ok(_) => Ok(()),
                // The reader went away (`| head`); nothing useful to say.
                Err(e) if super::is_broken_pipe(&e) => Err(Failure::Reported),
                Err(e) => Err(e.into()),
            }
        }
        ContentCommand::Ingest {
            reference,
            expected_digest,
            expected_size,
            labels,
            file,
        } => {
            let expected = expected_digest.as_deref().map(Digest::parse).transpose()?;
            let digest = ingest(
                &client,
                &reference,
                file,
                expected_size,
                expected.as_ref(),
                label_map(labels.labels),
            )
            .await?;
            print(&render_ingest(
                ctx.format,
                &IngestResult {
                    reference,
                    digest: digest.to_string(),
                },
            ))
        }
        ContentCommand::Rm { digests } => {
            let client = &client;
            remove_each(ctx, digests, |d| async move {
                let digest = Digest::parse(&d)?;
                client.content().delete(&digest).await.map(|()| d)
            })
            .await
        }
        ContentCommand::Label { digest, labels } => {
            let digest = Digest::parse(&digest)?;
            let info = client
                .content()
                .update_labels(&digest, &label_map(labels))
                .await?;
            print(&render_list(ctx.format, &[info.into()], SystemTime::now()))
        }
        ContentCommand::Active { filters } => {
            let statuses = client.content().statuses(&filters).await?;
            let rows: Vec<IngestRow> = statuses.into_iter().map(Into::into).collect();
            print(&render_active(ctx.format, &rows, SystemTime::now()))
        }
    }
}

/// Ingests `file` (stdin when absent or `-`); regular files resume by seeking, pipes by
/// skipping.
async fn ingest(
    client: &Client,
    reference: &str,
    file: Option<PathBuf>,
    expected_size: Option<u64>,
    expected: Option<&Digest>,
    labels: Labels,
) -> Result<Digest, Error> {
    let content = client.content();
    let path = match file {
        Some(path) if !is_stdin(Some(&path)) => path,
        _ => {
            let total = expected_size.unwrap_or(0);
            return content
                .ingest_source(
                    reference,
                    Unseekable(tokio::io::stdin()),
                    total,
                    expected,
                    labels,
                )
                .await;
        }
    };
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| Error::io(format!("open {}", path.display()), e))?;
    let meta = file
        .metadata()
        .await
        .map_err(|e| Error::io(format!("stat {}", path.display()), e))?;
    let result = if meta.is_file() {
        let total = expected_size.unwrap_or(meta.len());
        content
            .ingest_source(reference, Seekable(file), total, expected, labels)
            .await
    } else {
        let total = expected_size.unwrap_or(0);
        content
            .ingest_source(reference, Unseekable(file), total, expected, labels)
            .await
    };
    result.map_err(|e| e.context(format!("ingest {}", path.display())))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn info() -> Info {
        Info {
            digest: Digest::of(b"hello"),
            size: 1536,
            created_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            updated_at: SystemTime::UNIX_EPOCH,
            labels: Labels::from([("containerd.io/gc.root".to_owned(), "1".to_owned())]),
        }
    }

    #[test]
    fn list_json_shape() {
        let out = render_list(Format::Json, &[info().into()], SystemTime::now());
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            v,
            serde_json::json!([{
                "digest": Digest::of(b"hello").to_string(),
                "size": 1536,
                "created_at": "2023-11-14T22:13:20.000000000Z",
                "updated_at": null,
                "labels": {"containerd.io/gc.root": "1"},
            }])
        );
    }

    #[test]
    fn list_table() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + 7200);
        let out = render_list(Format::Table, &[info().into()], now);
        let d = Digest::of(b"hello").to_string();
        let pad = " ".repeat(d.len() - "DIGEST".len() + 3);
        assert_eq!(
            out,
            format!(
                "DIGEST{pad}SIZE      AGE           LABELS\n\
                 {d}   1.5 KiB   2 hours ago   containerd.io/gc.root=1\n"
            )
        );
    }

    #[test]
    fn active_shapes() {
        let status = IngestStatus {
            reference: "layer-1".into(),
            offset: 1024,
            total: 0,
            expected: None,
            started_at: SystemTime::UNIX_EPOCH + Duration::from_secs(100),
            updated_at: SystemTime::UNIX_EPOCH + Duration::from_secs(160),
        };
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(220);
        let rows = [IngestRow::from(status)];
        assert_eq!(
            render_active(Format::Table, &rows, now),
            "REF       SIZE        STARTED         UPDATED\n\
             layer-1   1.0 KiB/?   2 minutes ago   1 minute ago\n"
        );
        let v: serde_json::Value =
            serde_json::from_str(&render_active(Format::Json, &rows, now)).unwrap();
        assert_eq!(
            v,
            serde_json::json!([{
                "ref": "layer-1",
                "offset": 1024,
                "total": 0,
                "expected": null,
                "started_at": "1970-01-01T00:01:40.000000000Z",
                "updated_at": "1970-01-01T00:02:40.000000000Z",
            }])
        );
    }

    #[test]
    fn ingest_result_shapes() {
        let r = IngestResult {
            reference: "r".into(),
            digest: "sha256:x".into(),
        };
        assert_eq!(render_ingest(Format::Table, &r), "sha256:x\n");
        let v: serde_json::Value = serde_json::from_str(&render_ingest(Format::Json, &r)).unwrap();
        assert_eq!(v, serde_json::json!({"ref": "r", "digest": "sha256:x"}));
    }
}
