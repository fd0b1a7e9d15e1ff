//! The command line, parsed into typed commands before anything talks to the daemon.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::output::Format;
use crate::parse;

/// Talk to berthd: containers, images, snapshots, content, namespaces, leases, garbage
/// collection.
#[derive(Debug, Parser)]
#[command(name = "berthctl", version, about)]
pub struct Cli {
    /// The daemon's socket. (No `-a`: `ps -a` and `start -a` mean what they mean in docker.)
    #[arg(
        long,
        global = true,
        env = "BERTH_ADDRESS",
        default_value = berth_client::DEFAULT_SOCKET
    )]
    pub address: PathBuf,

    /// The namespace to act in.
    #[arg(
        long,
        short = 'n',
        global = true,
        env = "BERTH_NAMESPACE",
        default_value = "default"
    )]
    pub namespace: String,

    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Format::Table)]
    pub format: Format,

    /// Deadline for each call, e.g. 30s or 2m (default: none; connecting waits 10s).
    #[arg(long, global = true, value_parser = parse::duration)]
    pub timeout: Option<Duration>,

    /// Log filter for diagnostics on stderr (error, warn, info, debug, trace, or a
    /// tracing directive such as berth_client=debug).
    #[arg(long, global = true, env = "BERTH_LOG", default_value = "warn")]
    pub log_level: String,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the client's and the server's version.
    Version,
    /// Print the server's UUID and plugins.
    Info,
    /// Manage namespaces.
    #[command(subcommand, visible_alias = "namespaces", visible_alias = "ns")]
    Namespace(NamespaceCommand),
    /// Manage content blobs and ingests.
    #[command(subcommand)]
    Content(ContentCommand),
    /// Manage leases.
    #[command(subcommand, visible_alias = "leases")]
    Lease(LeaseCommand),
    /// Manage snapshots of one snapshotter.
    #[command(visible_alias = "snapshots")]
    Snapshot(SnapshotArgs),
    /// Run garbage collection now and print what it removed.
    Gc,
    /// Manage image records.
    #[command(subcommand)]
    Image(ImageCommand),
    /// List images (as `image ls`).
    Images {
        /// containerd filters (e.g. name~=busybox, labels."k"==v); an image matching any is listed.
        filters: Vec<String>,
    },
    /// Give an image more names (as `image tag`).
    Tag(TagArgs),
    /// Remove images (as `image rm`).
    Rmi(RmiArgs),
    /// Pull an image from a registry into berthd, with live progress per blob.
    Pull(crate::commands::pull::PullArgs),
    /// Push a local image to a registry, with live progress per blob.
    Push(crate::commands::push::PushArgs),
    /// Store credentials for a registry; pull and push send them.
    ///
    /// They go to the docker-style config ($DOCKER_CONFIG/config.json, else
    /// ~/.docker/config.json, mode 0600), shared with the docker CLI. Nothing is checked with
    /// the registry: wrong credentials show up at the next pull or push.
    Login(crate::commands::login::LoginArgs),
    /// Remove the stored credentials for a registry.
    Logout {
        /// The registry, e.g. docker.io, ghcr.io or localhost:5000.
        host: String,
    },
    /// Import images from an OCI image-layout or docker-save archive (tar or tar.gz).
    Import(crate::commands::archive::ImportArgs),
    /// Export images as an OCI image-layout archive (`--archive-format docker`: one
    /// `docker load` also reads).
    Export(crate::commands::archive::ExportArgs),
    /// Print events as they happen, in every namespace, until interrupted (as `ctr events`):
    /// `<time> <namespace> <topic> <event>`, or one JSON object per line with --format json.
    Events {
        /// containerd filters on topic and namespace (e.g. topic=="/containers/create",
        /// namespace==default,topic~="^/images/"); an event matching any is printed.
        filters: Vec<String>,
    },
    /// Print what a container wrote on stdout and stderr (containers berthctl created keep a
    /// log; stderr lines go to stderr).
    Logs(crate::commands::logs::LogsArgs),
    /// Create a container from an image and run it, attached (exit code: the container's) or
    /// with -d in the background (prints its id).
    Run(crate::commands::container::RunArgs),
    /// Create a container from an image without starting it; prints its id.
    Create(crate::commands::container::CreateArgs),
    /// Start created or stopped containers (--attach: follow one and return its exit code).
    Start(crate::commands::container::StartArgs),
    /// Run a command in a running container.
    Exec(crate::commands::container::ExecArgs),
    /// List running containers (-a: all).
    Ps(crate::commands::container::PsArgs),
    /// Stop containers: their stop signal (SIGTERM), then SIGKILL after -t seconds.
    Stop(crate::commands::container::StopArgs),
    /// Send a signal to containers (default SIGKILL).
    Kill(crate::commands::container::KillArgs),
    /// Remove containers with their task and snapshot (-f: kill running ones first).
    Rm(crate::commands::container::RmArgs),
    /// Show containers as JSON: record, spec and task.
    Inspect(crate::commands::container::IdsArgs),
    /// Show a container's processes.
    Top(crate::commands::container::TopArgs),
    /// Show containers' CPU, memory and pids use, every second (--no-stream: once).
    Stats(crate::commands::container::StatsArgs),
    /// Freeze containers' processes.
    Pause(crate::commands::container::IdsArgs),
    /// Thaw paused containers.
    Unpause(crate::commands::container::IdsArgs),
    /// Wait for containers to exit and print their exit codes.
    Wait(crate::commands::container::IdsArgs),
}

/// `berthctl tag SOURCE TARGET...`.
#[derive(Debug, Args)]
pub struct TagArgs {
    /// The existing image.
    pub source: String,
    /// The new names; an existing one is re-pointed at the source's target.
    #[arg(required = true)]
    pub targets: Vec<String>,
}

/// `berthctl rmi NAME... [--sync]`.
#[derive(Debug, Args)]
pub struct RmiArgs {
    /// The image names.
    #[arg(required = true)]
    pub names: Vec<String>,
    /// Collect garbage before returning, so blobs only these images held are gone.
    #[arg(long)]
    pub sync: bool,
}

/// `berthctl image …`.
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// List images with their digest, size and age.
    #[command(visible_alias = "list")]
    Ls {
        /// containerd filters (e.g. name~=busybox, labels."k"==v); an image matching any is listed.
        filters: Vec<String>,
    },
    /// Show an image as JSON, with its manifest and config when they are in the content store.
    Inspect {
        /// The image's name.
        name: String,
    },
    /// Give an image more names.
    Tag(TagArgs),
    /// Remove images.
    #[command(visible_alias = "remove", visible_alias = "delete")]
    Rm(RmiArgs),
    /// Set labels on an image (key= removes one).
    Label {
        /// The image's name.
        name: String,
        /// key=value pairs.
        #[arg(required = true, value_parser = parse::label)]
        labels: Vec<(String, String)>,
    },
    /// Unpack an image's layers into a snapshotter (as `ctr` does, from the client).
    Unpack(crate::commands::archive::UnpackArgs),
}

/// `key=value` labels; `key=` removes the key where labels are updated.
#[derive(Debug, Args)]
pub struct LabelFlags {
    /// A label, key=value (repeatable).
    #[arg(long = "label", short = 'l', value_parser = parse::label)]
    pub labels: Vec<(String, String)>,
}

/// `berthctl namespace …`.
#[derive(Debug, Subcommand)]
pub enum NamespaceCommand {
    /// Create a namespace.
    Create {
        /// Its name.
        name: String,
        /// Its labels.
        #[command(flatten)]
        labels: LabelFlags,
    },
    /// List namespaces.
    #[command(visible_alias = "list")]
    Ls,
    /// Remove empty namespaces.
    #[command(visible_alias = "remove", visible_alias = "delete")]
    Rm {
        /// The names.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Set labels on a namespace (key= removes one).
    Label {
        /// The namespace.
        name: String,
        /// key=value pairs.
        #[arg(required = true, value_parser = parse::label)]
        labels: Vec<(String, String)>,
    },
}

/// `berthctl content …`.
#[derive(Debug, Subcommand)]
pub enum ContentCommand {
    /// List blobs, optionally matching filters (e.g. labels."containerd.io/gc.root").
    #[command(visible_alias = "list")]
    Ls {
        /// containerd filters; a blob matching any is listed.
        filters: Vec<String>,
    },
    /// Write a blob's bytes to stdout.
    #[command(visible_alias = "cat")]
    Get {
        /// The blob's digest.
        digest: String,
    },
    /// Store a file (or stdin) under an ingest ref and print its digest.
    Ingest {
        /// The ingest ref; re-using it after an interruption resumes the upload.
        reference: String,
        /// The digest the data must have.
        #[arg(long)]
        expected_digest: Option<String>,
        /// The size the data must have, in bytes.
        #[arg(long)]
        expected_size: Option<u64>,
        /// Labels for the committed blob.
        #[command(flatten)]
        labels: LabelFlags,
        /// The file to read; stdin when absent or "-".
        file: Option<PathBuf>,
    },
    /// Remove blobs from the namespace.
    #[command(visible_alias = "remove", visible_alias = "delete")]
    Rm {
        /// The digests.
        #[arg(required = true)]
        digests: Vec<String>,
    },
    /// Set labels on a blob (key= removes one).
    Label {
        /// The blob's digest.
        digest: String,
        /// key=value pairs.
        #[arg(required = true, value_parser = parse::label)]
        labels: Vec<(String, String)>,
    },
    /// List ingests in progress.
    Active {
        /// containerd filters (e.g. ref~=layer).
        filters: Vec<String>,
    },
}

/// `berthctl lease …`.
#[derive(Debug, Subcommand)]
pub enum LeaseCommand {
    /// Create a lease and print its id.
    Create {
        /// The id (default: generated, containerd-style).
        #[arg(long)]
        id: Option<String>,
        /// Its labels.
        #[command(flatten)]
        labels: LabelFlags,
        /// Let garbage collection ignore the lease after this long (e.g. 24h).
        #[arg(long, value_parser = parse::duration)]
        expires_in: Option<Duration>,
    },
    /// List leases.
    #[command(visible_alias = "list")]
    Ls {
        /// containerd filters (e.g. id==x, labels."k").
        filters: Vec<String>,
    },
    /// Delete leases.
    #[command(visible_alias = "remove", visible_alias = "delete")]
    Rm {
        /// The ids.
        #[arg(required = true)]
        ids: Vec<String>,
        /// Collect garbage before returning.
        #[arg(long)]
        sync: bool,
    },
}

/// `berthctl snapshot [--snapshotter NAME] …`.
#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// The snapshotter to act on.
    #[arg(
        long,
        global = true,
        env = "BERTH_SNAPSHOTTER",
        default_value = berth_client::DEFAULT_SNAPSHOTTER
    )]
    pub snapshotter: String,

    /// What to do.
    #[command(subcommand)]
    pub command: SnapshotCommand,
}

/// `berthctl snapshot …`.
#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// List snapshots, optionally matching filters (e.g. kind==committed, parent==x).
    #[command(visible_alias = "list")]
    Ls {
        /// containerd filters; a snapshot matching any is listed.
        filters: Vec<String>,
    },
    /// Create a writable snapshot on a committed parent (none: empty).
    Prepare {
        /// The new snapshot's key.
        key: String,
        /// The committed parent.
        parent: Option<String>,
        /// Its labels.
        #[command(flatten)]
        labels: LabelFlags,
        /// Print the `mount` command that mounts it here.
        #[arg(long, short = 't')]
        target: Option<String>,
    },
    /// Create a read-only snapshot of a committed parent (none: empty).
    View {
        /// The new snapshot's key.
        key: String,
        /// The committed parent.
        parent: Option<String>,
        /// Its labels.
        #[command(flatten)]
        labels: LabelFlags,
        /// Print the `mount` command that mounts it here.
        #[arg(long, short = 't')]
        target: Option<String>,
    },
    /// Commit an active snapshot under a name.
    Commit {
        /// The committed snapshot's name.
        name: String,
        /// The active snapshot's key.
        key: String,
        /// Labels of the committed snapshot.
        #[command(flatten)]
        labels: LabelFlags,
    },
    /// Remove snapshots (children first).
    #[command(visible_alias = "remove", visible_alias = "delete")]
    Rm {
        /// The keys.
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Print the `mount` commands that mount a snapshot on a target.
    Mounts {
        /// Where it would be mounted.
        target: String,
        /// The snapshot's key.
        key: String,
    },
    /// Show how much disk snapshots take (all when none are named).
    Usage {
        /// The keys.
        keys: Vec<String>,
    },
    /// Show one snapshot.
    Info {
        /// The key or name.
        key: String,
    },
    /// Show snapshots as a tree of parents and children.
    Tree,
    /// Set labels on a snapshot (key= removes one).
    Label {
        /// The key or name.
        key: String,
        /// key=value pairs.
        #[arg(required = true, value_parser = parse::label)]
        labels: Vec<(String, String)>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("berthctl").chain(args.iter().copied()))
    }

    #[test]
    fn definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn globals_default_and_parse_anywhere() {
        // The defaults only show when the environment does not override them.
        if std::env::var_os("BERTH_ADDRESS").is_none()
            && std::env::var_os("BERTH_NAMESPACE").is_none()
        {
            let cli = parse(&["version"]).unwrap();
            assert_eq!(cli.address, PathBuf::from("/run/berth/berthd.sock"));
            assert_eq!(cli.namespace, "default");
        }
        let cli = parse(&["version"]).unwrap();
        assert_eq!(cli.format, Format::Table);
        assert_eq!(cli.timeout, None);
        assert_eq!(cli.log_level, "warn");

        let cli = parse(&[
            "content",
            "ls",
            "-n",
            "k8s.io",
            "--format",
            "json",
            "--timeout",
            "1m30s",
            "--address",
            "/tmp/b.sock",
        ])
        .unwrap();
        assert_eq!(cli.namespace, "k8s.io");
        assert_eq!(cli.format, Format::Json);
        assert_eq!(cli.timeout, Some(Duration::from_secs(90)));
        assert_eq!(cli.address, PathBuf::from("/tmp/b.sock"));
    }

    #[test]
    fn namespace_commands() {
        let cli = parse(&["namespace", "create", "web", "--label", "a=b", "-l", "c="]).unwrap();
        match cli.command {
            Command::Namespace(NamespaceCommand::Create { name, labels }) => {
                assert_eq!(name, "web");
                assert_eq!(
                    labels.labels,
                    vec![("a".into(), "b".into()), ("c".into(), "".into())]
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(&["ns", "list"]).unwrap().command,
            Command::Namespace(NamespaceCommand::Ls)
        ));
        match parse(&["namespace", "label", "web", "x=1", "y="])
            .unwrap()
            .command
        {
            Command::Namespace(NamespaceCommand::Label { name, labels }) => {
                assert_eq!(name, "web");
                assert_eq!(labels.len(), 2);
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(&["namespace", "rm"]).is_err(), "rm needs a name");
        assert!(parse(&["namespace", "label", "web", "nokey"]).is_err());
    }

    #[test]
    fn content_commands() {
        match parse(&[
            "content",
            "ingest",
            "ref1",
            "--expected-digest",
            "sha256:00",
            "--expected-size",
            "12",
            "--label",
            "containerd.io/gc.root=1",
            "/tmp/f",
        ])
        .unwrap()
        .command
        {
            Command::Content(ContentCommand::Ingest {
                reference,
                expected_digest,
                expected_size,
                labels,
                file,
            }) => {
                assert_eq!(reference, "ref1");
                assert_eq!(expected_digest.as_deref(), Some("sha256:00"));
                assert_eq!(expected_size, Some(12));
                assert_eq!(labels.labels.len(), 1);
                assert_eq!(file, Some(PathBuf::from("/tmp/f")));
            }
            other => panic!("{other:?}"),
        }
        match parse(&["content", "ls", "labels.a==b", "size"])
            .unwrap()
            .command
        {
            Command::Content(ContentCommand::Ls { filters }) => {
                assert_eq!(filters, vec!["labels.a==b", "size"]);
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(&["content", "ingest", "r", "--expected-size", "x"]).is_err());
        assert!(parse(&["content", "rm"]).is_err());
    }

    #[test]
    fn snapshot_commands() {
        let snapshotter = |cli: &Cli| match &cli.command {
            Command::Snapshot(args) => args.snapshotter.clone(),
            other => panic!("{other:?}"),
        };
        if std::env::var_os("BERTH_SNAPSHOTTER").is_none() {
            assert_eq!(
                snapshotter(&parse(&["snapshot", "ls"]).unwrap()),
                "overlayfs"
            );
        }
        // The snapshotter may come before or after the subcommand.
        let cli = parse(&["snapshots", "--snapshotter", "native", "tree"]).unwrap();
        assert_eq!(snapshotter(&cli), "native");
        let cli = parse(&["snapshot", "ls", "--snapshotter", "native", "kind==view"]).unwrap();
        assert_eq!(snapshotter(&cli), "native");
        match parse(&[
            "snapshot", "prepare", "k", "p", "-l", "a=b", "--target", "/mnt",
        ])
        .unwrap()
        .command
        {
            Command::Snapshot(SnapshotArgs {
                command:
                    SnapshotCommand::Prepare {
                        key,
                        parent,
                        labels,
                        target,
                    },
                ..
            }) => {
                assert_eq!((key.as_str(), parent.as_deref()), ("k", Some("p")));
                assert_eq!(labels.labels, vec![("a".into(), "b".into())]);
                assert_eq!(target.as_deref(), Some("/mnt"));
            }
            other => panic!("{other:?}"),
        }
        match parse(&["snapshot", "commit", "name", "key"])
            .unwrap()
            .command
        {
            Command::Snapshot(SnapshotArgs {
                command: SnapshotCommand::Commit { name, key, .. },
                ..
            }) => assert_eq!((name.as_str(), key.as_str()), ("name", "key")),
            other => panic!("{other:?}"),
        }
        assert!(parse(&["snapshot", "rm"]).is_err(), "rm needs a key");
        assert!(
            parse(&["snapshot", "mounts", "/mnt"]).is_err(),
            "mounts needs a key"
        );
        assert!(parse(&["snapshot", "label", "k"]).is_err());
    }

    #[test]
    fn image_commands() {
        match parse(&["images", "name~=busy"]).unwrap().command {
            Command::Images { filters } => assert_eq!(filters, vec!["name~=busy"]),
            other => panic!("{other:?}"),
        }
        match parse(&["image", "list"]).unwrap().command {
            Command::Image(ImageCommand::Ls { filters }) => assert!(filters.is_empty()),
            other => panic!("{other:?}"),
        }
        match parse(&["tag", "a:1", "b:1", "c:1"]).unwrap().command {
            Command::Tag(TagArgs { source, targets }) => {
                assert_eq!(source, "a:1");
                assert_eq!(targets, vec!["b:1", "c:1"]);
            }
            other => panic!("{other:?}"),
        }
        match parse(&["rmi", "a:1", "b:1", "--sync"]).unwrap().command {
            Command::Rmi(RmiArgs { names, sync }) => {
                assert_eq!(names, vec!["a:1", "b:1"]);
                assert!(sync);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(&["image", "delete", "x"]).unwrap().command,
            Command::Image(ImageCommand::Rm(RmiArgs { sync: false, .. }))
        ));
        assert!(matches!(
            parse(&["image", "inspect", "x"]).unwrap().command,
            Command::Image(ImageCommand::Inspect { .. })
        ));
        assert!(parse(&["tag", "only-source"]).is_err());
        assert!(parse(&["rmi"]).is_err());
        assert!(parse(&["image", "label", "x", "nokey"]).is_err());
    }

    #[test]
    fn container_commands() {
        use crate::commands::container::{NetworkMode, PullPolicy};
        match parse(&[
            "run",
            "-d",
            "--rm",
            "-it",
            "--name",
            "web",
            "-e",
            "A=1",
            "-e",
            "B",
            "-w",
            "/srv",
            "-u",
            "1000:1000",
            "--memory",
            "64m",
            "--cpus",
            "1.5",
            "--pids-limit",
            "20",
            "--cap-add",
            "SYS_ADMIN",
            "--cap-drop",
            "ALL",
            "--runtime",
            "runc",
            "--pull",
            "never",
            "--network",
            "host",
            "-l",
            "a=b",
            "--read-only",
            "busybox",
            "sh",
            "-c",
            "echo -n x",
        ])
        .unwrap()
        .command
        {
            Command::Run(run) => {
                assert!(run.detach && run.rm);
                let c = run.create;
                assert!(c.interactive && c.tty && c.read_only);
                assert_eq!(c.name.as_deref(), Some("web"));
                assert_eq!(c.env, ["A=1", "B"]);
                assert_eq!(c.workdir.as_deref(), Some("/srv"));
                assert_eq!(c.user.as_deref(), Some("1000:1000"));
                assert_eq!(c.memory, Some(64 << 20));
                assert_eq!(c.cpus, Some(1.5));
                assert_eq!(c.pids_limit, Some(20));
                assert_eq!((c.cap_add.len(), c.cap_drop.len()), (1, 1));
                assert_eq!(c.runtime.as_deref(), Some("runc"));
                assert_eq!(c.pull, PullPolicy::Never);
                assert_eq!(c.network, NetworkMode::Host);
                assert_eq!(c.labels, vec![("a".into(), "b".into())]);
                assert_eq!(c.image, "busybox");
                // Flags after the image belong to the command.
                assert_eq!(c.args, ["sh", "-c", "echo -n x"]);
            }
            other => panic!("{other:?}"),
        }
        match parse(&["run", "busybox"]).unwrap().command {
            Command::Run(run) => {
                assert!(!run.detach && !run.rm);
                assert_eq!(run.create.pull, PullPolicy::Missing);
                assert_eq!(run.create.network, NetworkMode::None);
                assert!(run.create.args.is_empty());
            }
            other => panic!("{other:?}"),
        }
        match parse(&["ps", "-a", "-q"]).unwrap().command {
            Command::Ps(ps) => assert!(ps.all && ps.quiet),
            other => panic!("{other:?}"),
        }
        match parse(&["start", "-a", "-i", "web"]).unwrap().command {
            Command::Start(s) => assert!(s.attach && s.interactive && s.ids == ["web"]),
            other => panic!("{other:?}"),
        }
        match parse(&["stop", "web", "db"]).unwrap().command {
            Command::Stop(s) => assert_eq!((s.time, s.ids.len()), (10, 2)),
            other => panic!("{other:?}"),
        }
        match parse(&["exec", "-it", "-e", "X=1", "web", "ls", "-l"])
            .unwrap()
            .command
        {
            Command::Exec(e) => {
                assert!(e.interactive && e.tty);
                assert_eq!(
                    (e.id.as_str(), e.args.as_slice()),
                    ("web", &["ls".to_owned(), "-l".to_owned()][..])
                );
            }
            other => panic!("{other:?}"),
        }
        match parse(&["kill", "web"]).unwrap().command {
            Command::Kill(k) => assert_eq!(k.signal, "KILL"),
            other => panic!("{other:?}"),
        }
        assert!(parse(&["run"]).is_err(), "run needs an image");
        assert!(parse(&["run", "--memory", "lots", "busybox"]).is_err());
        assert!(parse(&["run", "--pull", "sometimes", "busybox"]).is_err());
        assert!(parse(&["exec", "web"]).is_err(), "exec needs a command");
        assert!(parse(&["rm"]).is_err());
    }

    #[test]
    fn lease_commands() {
        match parse(&["lease", "create", "--id", "l1", "--expires-in", "24h"])
            .unwrap()
            .command
        {
            Command::Lease(LeaseCommand::Create { id, expires_in, .. }) => {
                assert_eq!(id.as_deref(), Some("l1"));
                assert_eq!(expires_in, Some(Duration::from_secs(86_400)));
            }
            other => panic!("{other:?}"),
        }
        match parse(&["leases", "rm", "a", "b", "--sync"])
            .unwrap()
            .command
        {
            Command::Lease(LeaseCommand::Rm { ids, sync }) => {
                assert_eq!(ids, vec!["a", "b"]);
                assert!(sync);
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(&["lease", "create", "--expires-in", "soon"]).is_err());
        assert!(
            parse(&["--timeout", "10", "gc"]).is_err(),
            "a unit is required"
        );
        assert!(parse(&["--format", "yaml", "gc"]).is_err());
        assert!(parse(&["frobnicate"]).is_err());
    }
}
