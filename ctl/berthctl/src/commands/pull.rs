//! `berthctl pull`, and the progress display `pull` and `push` share.
//!
//! berthd does the registry work (its transfer service); this side sends the request with the
//! credentials stored for the reference's registry (`berthctl login`, or `docker login`: the
//! same config file) and shows the progress stream: one live bar per blob on a terminal, one
//! line per state change otherwise. Progress goes to stderr so that stdout carries only the
//! result (the image name with `--quiet`, the image as JSON with `--format json`).

use std::collections::HashMap;
use std::io::{IsTerminal as _, Write};

use berth_client::auth::{self, DockerConfig};
use berth_client::convert::known_time;
use berth_core::diff::Descriptor;
use berth_core::images::Image;
use berth_core::labels::Labels;
use berth_core::transfer::{BlobState, Credentials, Platform, Progress, PullRequest};
use berth_core::{Digest, Error, ErrorKind};
use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use super::image::TargetView;
use super::{Ctx, print};
use crate::output::{self, Format};
use crate::{CmdResult, Failure};

/// `berthctl pull REF [--platform P]... [--all-platforms] [--snapshotter S] [--quiet]`.
#[derive(Debug, Args)]
pub struct PullArgs {
    /// The image reference, e.g. busybox, busybox:1.36 or ghcr.io/owner/app@sha256:….
    pub reference: String,
    /// A platform to fetch and unpack, os/arch[/variant] (repeatable; default: berthd's host).
    #[arg(long = "platform", value_parser = platform)]
    pub platforms: Vec<Platform>,
    /// Fetch every platform of an index (only the --platform ones, or the host's, are unpacked).
    #[arg(long)]
    pub all_platforms: bool,
    /// The snapshotter to unpack into (default: berthd's, overlayfs).
    #[arg(long, env = "BERTH_SNAPSHOTTER")]
    pub snapshotter: Option<String>,
    /// Show no progress; print only the image name.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// Parses `os/arch[/variant]` for `--platform`.
pub fn platform(s: &str) -> Result<Platform, String> {
    Platform::parse(s).map_err(|e| e.message().to_owned())
}

/// Which way the bytes go; it changes the words, as docker's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Registry to daemon.
    Pull,
    /// Daemon to registry.
    Push,
}

/// What a blob's state is called on screen.
pub fn state_label(direction: Direction, state: BlobState) -> &'static str {
    match (state, direction) {
        (BlobState::Waiting, _) => "Waiting",
        (BlobState::Transferring, Direction::Pull) => "Downloading",
        (BlobState::Transferring, Direction::Push) => "Pushing",
        (BlobState::Exists, _) => "Already exists",
        (BlobState::Mounted, _) => "Mounted",
        (BlobState::Done, Direction::Pull) => "Download complete",
        (BlobState::Done, Direction::Push) => "Pushed",
        (BlobState::Unpacking, _) => "Extracting",
        (BlobState::Unpacked, _) => "Pull complete",
    }
}

/// The first 12 hex digits of a digest, as docker shows layers.
pub fn short_digest(digest: &Digest) -> String {
    let s = digest.as_str();
    let hex = s.split_once(':').map_or(s, |(_, hex)| hex);
    hex.chars().take(12).collect()
}

/// The line a non-terminal display prints when the reference resolves.
pub fn resolved_line(name: &str, root: &Descriptor) -> String {
    format!("{name}: resolved to {}", root.digest)
}

/// The line a non-terminal display prints when a blob changes state.
pub fn state_line(direction: Direction, descriptor: &Descriptor, state: BlobState) -> String {
    format!(
        "{}: {} ({})",
        short_digest(&descriptor.digest),
        state_label(direction, state),
        output::human_size(descriptor.size)
    )
}

/// One line per state change, for logs and pipes: offsets alone never print, so a pull's log
/// stays a few lines per blob however slow the network is.
pub struct Lines<W> {
    out: W,
    direction: Direction,
    printed: HashMap<Digest, BlobState>,
}

impl<W: Write> Lines<W> {
    /// A display writing to `out`.
    pub fn new(out: W, direction: Direction) -> Self {
        Self {
            out,
            direction,
            printed: HashMap::new(),
        }
    }

    /// Shows `event`.
    pub fn event(&mut self, event: &Progress) {
        let line = match event {
            Progress::Resolved { name, root } => resolved_line(name, root),
            Progress::Blob {
                descriptor, state, ..
            } => {
                if self.printed.insert(descriptor.digest.clone(), *state) == Some(*state) {
                    return;
                }
                state_line(self.direction, descriptor, *state)
            }
            // The command prints the result itself, on stdout.
            Progress::Done { .. } => return,
        };
        // Progress is advisory: a closed stderr must not fail the transfer.
        let _ = writeln!(self.out, "{line}");
    }

    /// The writer, for tests.
    #[cfg(test)]
    pub fn into_inner(self) -> W {
        self.out
    }
}

/// Live bars on a terminal, one per blob.
pub struct Bars {
    multi: MultiProgress,
    direction: Direction,
    bars: HashMap<Digest, ProgressBar>,
    moving: ProgressStyle,
    status: ProgressStyle,
}

fn style(template: &str) -> ProgressStyle {
    // The templates are constants; a broken one would show as the default bar, not fail.
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
}

impl Bars {
    /// Bars drawn on stderr.
    pub fn new(direction: Direction) -> Self {
        Self {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            direction,
            bars: HashMap::new(),
            moving: style(
                "{prefix}: {msg:<17} [{bar:30}] {binary_bytes:>10}/{binary_total_bytes:<10} \
                 {binary_bytes_per_sec}",
            )
            .progress_chars("=> "),
            status: style("{prefix}: {msg}"),
        }
    }

    /// Shows `event`.
    pub fn event(&mut self, event: &Progress) {
        match event {
            Progress::Resolved { name, root } => {
                let _ = self.multi.println(resolved_line(name, root));
            }
            Progress::Blob {
                descriptor,
                state,
                offset,
            } => {
                let bar = self
                    .bars
                    .entry(descriptor.digest.clone())
                    .or_insert_with(|| {
                        let bar = ProgressBar::new(descriptor.size)
                            .with_prefix(short_digest(&descriptor.digest));
                        self.multi.add(bar)
                    });
                let label = state_label(self.direction, *state);
                // Message and position first, style last: each call may draw, and a frame with
                // the new style but the old message would flicker.
                match state {
                    BlobState::Transferring => {
                        bar.set_message(label);
                        bar.set_position(*offset);
                        bar.set_style(self.moving.clone());
                    }
                    BlobState::Waiting | BlobState::Unpacking => {
                        bar.set_message(label);
                        bar.set_style(self.status.clone());
                    }
                    BlobState::Exists
                    | BlobState::Mounted
                    | BlobState::Done
                    | BlobState::Unpacked => {
                        bar.set_message(format!(
                            "{label} ({})",
                            output::human_size(descriptor.size)
                        ));
                        bar.set_position(descriptor.size);
                        bar.set_style(self.status.clone());
                    }
                }
            }
            Progress::Done { .. } => {}
        }
    }

    /// Leaves every bar on screen as it last was.
    pub fn finish(&mut self, ok: bool) {
        for bar in self.bars.values() {
            if ok { bar.finish() } else { bar.abandon() }
        }
    }
}

/// The progress display a command uses.
pub enum View {
    /// Nothing (`--quiet`).
    Quiet,
    /// Lines on stderr.
    Lines(Lines<std::io::Stderr>),
    /// Bars on stderr.
    Bars(Box<Bars>),
}

impl View {
    /// Bars when stderr is a terminal, lines otherwise, nothing when `quiet`.
    pub fn new(direction: Direction, quiet: bool) -> Self {
        if quiet {
            View::Quiet
        } else if std::io::stderr().is_terminal() {
            View::Bars(Box::new(Bars::new(direction)))
        } else {
            View::Lines(Lines::new(std::io::stderr(), direction))
        }
    }

    /// Shows `event`.
    pub fn event(&mut self, event: &Progress) {
        match self {
            View::Quiet => {}
            View::Lines(lines) => lines.event(event),
            View::Bars(bars) => bars.event(event),
        }
    }

    /// Ends the display, before the result or the error prints.
    pub fn finish(&mut self, ok: bool) {
        if let View::Bars(bars) = self {
            bars.finish(ok);
        }
    }
}

/// The credentials stored for `reference`'s registry, if any. A config that cannot be read is
/// reported and the transfer goes on anonymously, as public images need no credentials.
pub fn stored_credentials(reference: &str) -> Option<Credentials> {
    // Without a home there is no config to read, and nothing worth a warning.
    let path = auth::default_config_path().ok()?;
    let host = auth::registry_host(reference);
    match DockerConfig::load(&path).and_then(|c| c.credentials_for(&host)) {
        Ok(found) => found,
        Err(e) => {
            eprintln!(
                "berthctl: warning: {}; continuing without credentials for {host}",
                crate::describe(&e)
            );
            None
        }
    }
}

/// Replaces the bare Unimplemented a daemon without the transfer service answers (tonic's, with
/// no message) by a hint; the service's own NotImplemented errors pass through.
pub fn explain(err: Error, what: &str) -> Error {
    if err.is(ErrorKind::NotImplemented) && err.message().contains("(grpc code Unimplemented)") {
        Error::not_implemented(format!(
            "{what}: berthd does not serve image transfers (its transfer service is not enabled)"
        ))
    } else {
        err
    }
}

/// The image as `--format json` prints it.
#[derive(Debug, Serialize)]
pub struct ImageView {
    /// The image's name.
    pub name: String,
    /// The root descriptor.
    pub target: TargetView,
    /// The record's labels.
    pub labels: Labels,
    /// RFC 3339, `null` when unknown (always for a push).
    pub created: Option<String>,
    /// RFC 3339, `null` when unknown.
    pub updated: Option<String>,
}

impl ImageView {
    /// The view of `image`.
    pub fn new(image: &Image) -> Self {
        Self {
            name: image.name.clone(),
            target: TargetView {
                media_type: image.target.media_type.clone(),
                digest: image.target.digest.to_string(),
                size: image.target.size,
                annotations: image.target.annotations.clone(),
            },
            labels: image.labels.clone(),
            created: output::rfc3339(known_time(image.created_at)),
            updated: output::rfc3339(known_time(image.updated_at)),
        }
    }
}

/// What a finished pull prints on stdout.
pub fn pull_result(format: Format, quiet: bool, image: &Image) -> String {
    if quiet {
        return format!("{}\n", image.name);
    }
    output::render(format, &ImageView::new(image), |v| {
        format!("Digest: {}\n{}\n", v.target.digest, v.name)
    })
}

/// Runs `berthctl pull`.
pub async fn run(ctx: &Ctx, args: PullArgs) -> CmdResult {
    let req = PullRequest {
        credentials: stored_credentials(&args.reference),
        reference: args.reference,
        platforms: args.platforms,
        all_platforms: args.all_platforms,
        unpack: true,
        snapshotter: args.snapshotter.unwrap_or_default(),
        labels: Labels::new(),
    };
    let client = ctx.connect().await?;
    let mut view = View::new(Direction::Pull, args.quiet);
    let result = client.transfer().pull(&req, |e| view.event(&e)).await;
    view.finish(result.is_ok());
    let image = result
        .map_err(|e| explain(e, &format!("pull {}", req.reference)))
        .map_err(Failure::from)?;
    print(&pull_result(ctx.format, args.quiet, &image))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use berth_core::images::MEDIA_TYPE_OCI_MANIFEST;

    use super::*;

    fn layer(name: &[u8], size: u64) -> Descriptor {
        Descriptor::new(
            "application/vnd.oci.image.layer.v1.tar+gzip",
            Digest::of(name),
            size,
        )
    }

    fn blob(d: &Descriptor, state: BlobState, offset: u64) -> Progress {
        Progress::Blob {
            descriptor: d.clone(),
            state,
            offset,
        }
    }

    fn image() -> Image {
        let mut img = Image::new(
            "docker.io/library/busybox:latest",
            Descriptor::new(MEDIA_TYPE_OCI_MANIFEST, Digest::of(b"manifest"), 528),
        );
        img.created_at = SystemTime::UNIX_EPOCH + Duration::from_secs(60);
        img
    }

    #[test]
    fn lines_print_each_state_change_once() {
        let a = layer(b"a", 3 * 1024 * 1024);
        let b = layer(b"b", 512);
        let events = vec![
            Progress::Resolved {
                name: "docker.io/library/busybox:latest".into(),
                root: image().target,
            },
            blob(&a, BlobState::Waiting, 0),
            blob(&b, BlobState::Exists, 512),
            blob(&a, BlobState::Transferring, 0),
            blob(&a, BlobState::Transferring, 1024),
            blob(&a, BlobState::Transferring, 2 * 1024 * 1024),
            blob(&a, BlobState::Done, 3 * 1024 * 1024),
            blob(&a, BlobState::Unpacking, 0),
            blob(&a, BlobState::Unpacking, 100),
            blob(&a, BlobState::Unpacked, 3 * 1024 * 1024),
            Progress::Done { image: image() },
        ];
        let mut lines = Lines::new(Vec::new(), Direction::Pull);
        for e in &events {
            lines.event(e);
        }
        let out = String::from_utf8(lines.into_inner()).unwrap();
        let (sa, sb) = (short_digest(&a.digest), short_digest(&b.digest));
        let want = format!(
            "docker.io/library/busybox:latest: resolved to {}\n\
             {sa}: Waiting (3.0 MiB)\n\
             {sb}: Already exists (512 B)\n\
             {sa}: Downloading (3.0 MiB)\n\
             {sa}: Download complete (3.0 MiB)\n\
             {sa}: Extracting (3.0 MiB)\n\
             {sa}: Pull complete (3.0 MiB)\n",
            Digest::of(b"manifest")
        );
        assert_eq!(out, want);
        assert_eq!(sa.len(), 12);
        assert!(Digest::of(b"a").as_str()[7..].starts_with(&sa));
    }

    #[test]
    fn push_words() {
        let l = layer(b"l", 2048);
        let mut lines = Lines::new(Vec::new(), Direction::Push);
        for e in [
            blob(&l, BlobState::Transferring, 10),
            blob(&l, BlobState::Done, 2048),
            blob(&layer(b"m", 10), BlobState::Mounted, 10),
        ] {
            lines.event(&e);
        }
        let out = String::from_utf8(lines.into_inner()).unwrap();
        let got: Vec<&str> = out.lines().map(|l| l.split_once(": ").unwrap().1).collect();
        assert_eq!(
            got,
            ["Pushing (2.0 KiB)", "Pushed (2.0 KiB)", "Mounted (10 B)"]
        );
    }

    #[test]
    fn results() {
        let img = image();
        assert_eq!(
            pull_result(Format::Table, true, &img),
            "docker.io/library/busybox:latest\n"
        );
        assert_eq!(
            pull_result(Format::Json, true, &img),
            "docker.io/library/busybox:latest\n",
            "--quiet wins"
        );
        assert_eq!(
            pull_result(Format::Table, false, &img),
            format!(
                "Digest: {}\ndocker.io/library/busybox:latest\n",
                Digest::of(b"manifest")
            )
        );
        let v: serde_json::Value =
            serde_json::from_str(&pull_result(Format::Json, false, &img)).unwrap();
        assert_eq!(v["name"], "docker.io/library/busybox:latest");
        assert_eq!(v["target"]["digest"], Digest::of(b"manifest").to_string());
        assert_eq!(v["target"]["size"], 528);
        assert_eq!(v["target"]["media_type"], MEDIA_TYPE_OCI_MANIFEST);
        assert_eq!(v["created"], "1970-01-01T00:01:00.000000000Z");
        assert_eq!(v["updated"], serde_json::Value::Null);
    }

    #[test]
    fn unimplemented_gets_a_hint() {
        let e = explain(
            Error::not_implemented("not implemented (grpc code Unimplemented)"),
            "pull busybox",
        );
        assert!(
            e.message().contains("transfer service is not enabled"),
            "{e}"
        );
        assert_eq!(e.kind(), ErrorKind::NotImplemented);
        let e = explain(Error::not_found("manifest unknown"), "pull busybox");
        assert_eq!(e.message(), "manifest unknown");
        let e = explain(
            Error::not_implemented("schema 1 manifests are not supported"),
            "pull busybox",
        );
        assert_eq!(e.message(), "schema 1 manifests are not supported");
    }

    fn parse(args: &[&str]) -> Result<crate::cli::Command, clap::Error> {
        use clap::Parser as _;
        crate::cli::Cli::try_parse_from(std::iter::once("berthctl").chain(args.iter().copied()))
            .map(|cli| cli.command)
    }

    #[test]
    fn command_line() {
        use crate::cli::Command;
        let cmd = parse(&[
            "pull",
            "ghcr.io/o/app:1",
            "--platform",
            "linux/arm64/v8",
            "--platform",
            "linux/amd64",
            "--all-platforms",
            "--snapshotter",
            "native",
            "-q",
        ]);
        match cmd.unwrap() {
            Command::Pull(args) => {
                assert_eq!(args.reference, "ghcr.io/o/app:1");
                let platforms: Vec<String> =
                    args.platforms.iter().map(ToString::to_string).collect();
                assert_eq!(platforms, ["linux/arm64/v8", "linux/amd64"]);
                assert!(args.all_platforms && args.quiet);
                assert_eq!(args.snapshotter.as_deref(), Some("native"));
            }
            other => panic!("{other:?}"),
        }
        match parse(&["pull", "busybox", "--quiet"]).unwrap() {
            Command::Pull(args) => {
                assert!(args.platforms.is_empty());
                assert!(!args.all_platforms && args.quiet);
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(&["pull"]).is_err(), "pull needs a reference");
        assert!(parse(&["pull", "x", "--platform", "linux"]).is_err());
        assert!(parse(&["pull", "x", "--platform", "a/b/c/d"]).is_err());

        match parse(&[
            "push",
            "app:1",
            "reg.example/app:1",
            "--platform",
            "linux/amd64",
        ])
        .unwrap()
        {
            Command::Push(args) => {
                assert_eq!(args.image, "app:1");
                assert_eq!(args.target.as_deref(), Some("reg.example/app:1"));
                assert_eq!(args.platforms.len(), 1);
                assert!(!args.quiet);
            }
            other => panic!("{other:?}"),
        }
        match parse(&["push", "app:1", "-q"]).unwrap() {
            Command::Push(args) => assert!(args.target.is_none() && args.quiet),
            other => panic!("{other:?}"),
        }
        assert!(parse(&["push"]).is_err());

        match parse(&["login", "ghcr.io", "-u", "me", "--password-stdin"]).unwrap() {
            Command::Login(args) => {
                assert_eq!(args.host, "ghcr.io");
                assert_eq!(args.username.as_deref(), Some("me"));
                assert!(args.password_stdin);
            }
            other => panic!("{other:?}"),
        }
        match parse(&["login", "docker.io"]).unwrap() {
            Command::Login(args) => assert!(args.username.is_none() && !args.password_stdin),
            other => panic!("{other:?}"),
        }
        assert!(parse(&["login"]).is_err(), "login needs a host");
        match parse(&["logout", "docker.io"]).unwrap() {
            Command::Logout { host } => assert_eq!(host, "docker.io"),
            other => panic!("{other:?}"),
        }
        assert!(parse(&["logout"]).is_err());
    }

    #[test]
    fn platforms_parse() {
        assert_eq!(platform("linux/arm/v7").unwrap().variant, "v7");
        assert!(platform("linux").unwrap_err().contains("os/arch"));
    }
}
