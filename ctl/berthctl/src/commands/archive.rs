//! `berthctl import`, `berthctl export` and `berthctl image unpack`: image archives (OCI image
//! layouts and docker-save tarballs) and client-side unpacking, over berth-client's
//! [`Archive`](berth_client::Archive) and [`Client::unpack`](berth_client::Client::unpack).
//!
//! The archive type of `export` is chosen with `--archive-format oci|docker`: `--format` is the
//! global output format (table|json) of every command.

use std::io::IsTerminal as _;
use std::path::PathBuf;

use berth_client::{Client, ExportFormat, ExportOptions, ImportOptions, UnpackOptions, Unpacked};
use berth_core::Error;
use berth_core::images::Image;
use berth_core::transfer::Platform;
use clap::Args;
use serde::Serialize;

use super::{Ctx, is_broken_pipe, is_stdin, label_map, print};
use crate::cli::LabelFlags;
use crate::output::{self, Format, Table};
use crate::{CmdResult, Failure};

/// Parses `os/arch[/variant]`.
fn platform(s: &str) -> Result<Platform, String> {
    Platform::parse(s).map_err(|e| e.message().to_owned())
}

/// `berthctl import FILE|- [...]`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The archive (tar, or tar.gz); "-" reads stdin.
    pub file: PathBuf,
    /// Base for names made from bare tags (default: import-<date>); full names not under it
    /// are skipped.
    #[arg(long)]
    pub base_name: Option<String>,
    /// Also record the archive's index as an image with this name.
    #[arg(long)]
    pub index_name: Option<String>,
    /// Keep every platform of multi-platform images (default: this host's only).
    #[arg(long)]
    pub all_platforms: bool,
    /// Keep this platform (os/arch[/variant], repeatable; the first is unpacked).
    #[arg(long = "platform", value_parser = platform)]
    pub platforms: Vec<Platform>,
    /// Do not unpack the images into a snapshotter.
    #[arg(long)]
    pub no_unpack: bool,
    /// The snapshotter to unpack into (default: the namespace's, else overlayfs).
    #[arg(long, env = "BERTH_SNAPSHOTTER")]
    pub snapshotter: Option<String>,
    /// Labels for the image records.
    #[command(flatten)]
    pub labels: LabelFlags,
}

/// The archive layout `export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ArchiveFormat {
    /// An OCI image layout.
    Oci,
    /// An OCI image layout that `docker load` also reads (manifest.json, repositories).
    Docker,
}

/// `berthctl export OUT|- IMAGE... [...]`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Where to write the archive; "-" writes stdout.
    pub out: PathBuf,
    /// The images to export.
    #[arg(required = true)]
    pub images: Vec<String>,
    /// The archive layout.
    #[arg(long, value_enum, default_value_t = ArchiveFormat::Oci)]
    pub archive_format: ArchiveFormat,
    /// Include this platform of multi-platform images (os/arch[/variant], repeatable; default:
    /// this host's).
    #[arg(long = "platform", value_parser = platform)]
    pub platforms: Vec<Platform>,
    /// Include every platform of multi-platform images.
    #[arg(long)]
    pub all_platforms: bool,
}

/// `berthctl image unpack NAME [...]`.
#[derive(Debug, Args)]
pub struct UnpackArgs {
    /// The image's name.
    pub name: String,
    /// The snapshotter to unpack into (default: the namespace's, else overlayfs).
    #[arg(long, env = "BERTH_SNAPSHOTTER")]
    pub snapshotter: Option<String>,
    /// The platform to unpack (os/arch[/variant]; default: this host's).
    #[arg(long, value_parser = platform)]
    pub platform: Option<Platform>,
}

/// An imported image as printed.
#[derive(Debug, Serialize)]
pub struct ImportedRow {
    /// The image's name.
    pub name: String,
    /// The target's digest.
    pub digest: String,
    /// The target's media type.
    pub media_type: String,
}

impl From<&Image> for ImportedRow {
    fn from(image: &Image) -> Self {
        Self {
            name: image.name.clone(),
            digest: image.target.digest.to_string(),
            media_type: image.target.media_type.clone(),
        }
    }
}

/// Imported images as a table or a JSON array.
pub fn render_imported(format: Format, rows: &[ImportedRow]) -> String {
    output::render(format, rows, |rows| {
        let mut t = Table::new(&["NAME", "DIGEST", "TYPE"]);
        for r in rows {
            t.row(vec![
                r.name.clone(),
                r.digest.clone(),
                short_media_type(&r.media_type).to_owned(),
            ]);
        }
        t.render()
    })
}

/// `index`, `manifest`, … for the media types images point at.
fn short_media_type(media_type: &str) -> &str {
    if berth_core::images::is_index_media_type(media_type) {
        "index"
    } else if berth_core::images::is_manifest_media_type(media_type) {
        "manifest"
    } else {
        media_type
    }
}

/// `berthctl import`.
pub async fn import(ctx: &Ctx, args: ImportArgs) -> CmdResult {
    let client = ctx.connect().await?;
    let options = ImportOptions {
        base_name: args.base_name,
        index_name: args.index_name,
        all_platforms: args.all_platforms,
        platforms: args.platforms,
        unpack: (!args.no_unpack).then(|| args.snapshotter.unwrap_or_default()),
        labels: label_map(args.labels.labels),
    };
    let archive = client.archive();
    let images = if is_stdin(Some(&args.file)) {
        archive
            .import(std::io::stdin(), &options)
            .await
            .map_err(|e| e.context("import from stdin"))?
    } else {
        archive.import_file(&args.file, &options).await?
    };
    if images.is_empty() {
        eprintln!(
            "berthctl: the archive names no images (nothing to record; use --index-name or \
             --base-name)"
        );
        if ctx.format == Format::Table {
            return Ok(());
        }
    }
    let rows: Vec<ImportedRow> = images.iter().map(ImportedRow::from).collect();
    print(&render_imported(ctx.format, &rows))
}

/// What `export --format json` prints about an archive written to a file.
#[derive(Debug, Serialize)]
pub struct ExportedView {
    /// Where the archive is.
    pub path: String,
    /// `oci` or `docker`.
    pub archive_format: &'static str,
    /// The images, as imported rows.
    pub images: Vec<ImportedRow>,
    /// How many blobs it holds.
    pub blobs: usize,
    /// Their total size in bytes.
    pub blob_bytes: u64,
}

/// `berthctl export`.
pub async fn export(ctx: &Ctx, args: ExportArgs) -> CmdResult {
    let to_stdout = is_stdin(Some(&args.out));
    if to_stdout && std::io::stdout().is_terminal() {
        return Err(Error::invalid_argument(
            "refusing to write an archive to a terminal: redirect stdout or name a file",
        )
        .into());
    }
    let client = ctx.connect().await?;
    let options = ExportOptions {
        format: match args.archive_format {
            ArchiveFormat::Oci => ExportFormat::Oci,
            ArchiveFormat::Docker => ExportFormat::Docker,
        },
        platforms: args.platforms,
        all_platforms: args.all_platforms,
    };
    let archive = client.archive();
    if to_stdout {
        return match archive
            .export(&args.images, std::io::stdout(), &options)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_broken_pipe(&e) => Err(Failure::Reported),
            Err(e) => Err(e.into()),
        };
    }
    let summary = archive
        .export_file(&args.images, &args.out, &options)
        .await?;
    if ctx.format == Format::Json {
        let view = ExportedView {
            path: args.out.display().to_string(),
            archive_format: match args.archive_format {
                ArchiveFormat::Oci => "oci",
                ArchiveFormat::Docker => "docker",
            },
            images: summary.images.iter().map(ImportedRow::from).collect(),
            blobs: summary.blobs,
            blob_bytes: summary.blob_bytes,
        };
        print(&output::json(&view))?;
    }
    Ok(())
}

/// A layer of an unpack as printed.
#[derive(Debug, Serialize)]
pub struct UnpackedLayerRow {
    /// The layer blob.
    pub digest: String,
    /// Its uncompressed digest.
    pub diff_id: String,
    /// The committed snapshot.
    pub chain_id: String,
    /// False when the snapshot already existed.
    pub applied: bool,
}

/// An unpack as printed.
#[derive(Debug, Serialize)]
pub struct UnpackedView {
    /// The image.
    pub image: String,
    /// The snapshotter.
    pub snapshotter: String,
    /// The manifest unpacked.
    pub manifest: String,
    /// Its config.
    pub config: String,
    /// The top snapshot.
    pub chain_id: String,
    /// The layers, lowest first.
    pub layers: Vec<UnpackedLayerRow>,
}

impl UnpackedView {
    /// The view of `unpacked` for image `image`.
    pub fn new(image: String, unpacked: Unpacked) -> Self {
        Self {
            image,
            snapshotter: unpacked.snapshotter,
            manifest: unpacked.manifest.to_string(),
            config: unpacked.config.to_string(),
            chain_id: unpacked.chain_id.to_string(),
            layers: unpacked
                .layers
                .into_iter()
                .map(|l| UnpackedLayerRow {
                    digest: l.digest.to_string(),
                    diff_id: l.diff_id.to_string(),
                    chain_id: l.chain_id.to_string(),
                    applied: l.applied,
                })
                .collect(),
        }
    }
}

/// An unpack as a table or JSON.
pub fn render_unpacked(format: Format, view: &UnpackedView) -> String {
    match format {
        Format::Json => output::json(view),
        Format::Table => {
            let applied = view.layers.iter().filter(|l| l.applied).count();
            let mut t = Table::new(&["IMAGE", "SNAPSHOTTER", "CHAIN ID", "LAYERS"]);
            t.row(vec![
                view.image.clone(),
                view.snapshotter.clone(),
                view.chain_id.clone(),
                format!("{} ({applied} applied)", view.layers.len()),
            ]);
            t.render()
        }
    }
}

/// `berthctl image unpack` on an open connection.
pub async fn unpack(ctx: &Ctx, client: &Client, args: UnpackArgs) -> CmdResult {
    let image = client.images().get(&args.name).await?;
    let options = UnpackOptions {
        snapshotter: args.snapshotter,
        platform: args.platform,
    };
    let unpacked = client
        .unpack(&image.target, &options)
        .await
        .map_err(|e| e.context(format!("unpack image {:?}", image.name)))?;
    print(&render_unpacked(
        ctx.format,
        &UnpackedView::new(image.name, unpacked),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_core::Digest;
    use berth_core::diff::Descriptor;

    #[test]
    fn imported_rows_render() {
        let image = Image::new(
            "berth.test/x:v1",
            Descriptor::new(
                berth_core::images::MEDIA_TYPE_OCI_MANIFEST,
                Digest::of(b"m"),
                3,
            ),
        );
        let rows = vec![ImportedRow::from(&image)];
        let table = render_imported(Format::Table, &rows);
        assert!(table.starts_with("NAME"), "{table}");
        assert!(table.contains("berth.test/x:v1"), "{table}");
        assert!(table.contains("manifest"), "{table}");
        let json: serde_json::Value =
            serde_json::from_str(&render_imported(Format::Json, &rows)).unwrap();
        assert_eq!(json[0]["name"], "berth.test/x:v1");
        assert_eq!(json[0]["digest"], Digest::of(b"m").to_string());
    }

    #[test]
    fn unpacked_views_render() {
        let d = Digest::of(b"l");
        let unpacked = Unpacked {
            snapshotter: "overlayfs".into(),
            manifest: Digest::of(b"m"),
            config: Digest::of(b"c"),
            chain_id: d.clone(),
            layers: vec![berth_client::UnpackedLayer {
                digest: Digest::of(b"gz"),
                diff_id: d.clone(),
                chain_id: d.clone(),
                applied: true,
            }],
            image_config: Default::default(),
        };
        let view = UnpackedView::new("img".into(), unpacked);
        let table = render_unpacked(Format::Table, &view);
        assert!(table.contains("1 (1 applied)"), "{table}");
        let json: serde_json::Value =
            serde_json::from_str(&render_unpacked(Format::Json, &view)).unwrap();
        assert_eq!(json["chain_id"], d.to_string());
        assert_eq!(json["layers"][0]["applied"], true);
    }

    #[test]
    fn platforms_parse() {
        assert_eq!(platform("linux/arm64/v8").unwrap().variant, "v8");
        assert!(platform("linux").is_err());
    }
}
