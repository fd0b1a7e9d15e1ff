//! Runs a parsed command against the daemon.

pub(crate) mod archive;
mod attach;
pub(crate) mod container;
mod content;
mod events;
mod image;
mod lease;
pub(crate) mod login;
pub(crate) mod logs;
mod namespace;
pub(crate) mod pull;
pub(crate) mod push;
mod snapshot;
mod system;

use std::io::Write as _;
use std::path::Path;

use berth_client::{Client, ConnectOptions};
use berth_core::Error;
use berth_core::labels::Labels;

use crate::cli::{Cli, Command, ImageCommand};
use crate::output::Format;
use crate::{CmdResult, Failure};

/// What every command needs: how to reach the daemon and how to print.
pub struct Ctx {
    address: std::path::PathBuf,
    namespace: String,
    timeout: Option<std::time::Duration>,
    /// The output format.
    pub format: Format,
}

impl Ctx {
    /// Connects, or prints which socket failed and how to fix it.
    pub async fn connect(&self) -> Result<Client, Failure> {
        let options = ConnectOptions {
            timeout: self.timeout,
            connect_timeout: self
                .timeout
                .unwrap_or(ConnectOptions::default().connect_timeout),
        };
        Client::connect_with(&self.address, self.namespace.clone(), options)
            .await
            .map_err(|e| {
                eprintln!(
                    "berthctl: {}\nberthctl: is berthd running? Start it, or point --address \
                     (or BERTH_ADDRESS) at its socket",
                    e.message()
                );
                Failure::Reported
            })
    }
}

/// Runs `cli`'s command.
pub async fn run(cli: Cli) -> CmdResult {
    let ctx = Ctx {
        address: cli.address,
        namespace: cli.namespace,
        timeout: cli.timeout,
        format: cli.format,
    };
    match cli.command {
        Command::Version => system::version(&ctx).await,
        Command::Info => system::info(&ctx).await,
        Command::Gc => system::gc(&ctx).await,
        Command::Namespace(cmd) => namespace::run(&ctx, cmd).await,
        Command::Content(cmd) => content::run(&ctx, cmd).await,
        Command::Lease(cmd) => lease::run(&ctx, cmd).await,
        Command::Snapshot(args) => snapshot::run(&ctx, args).await,
        Command::Image(cmd) => image::run(&ctx, cmd).await,
        Command::Images { filters } => image::run(&ctx, ImageCommand::Ls { filters }).await,
        Command::Tag(args) => image::run(&ctx, ImageCommand::Tag(args)).await,
        Command::Rmi(args) => image::run(&ctx, ImageCommand::Rm(args)).await,
        Command::Pull(args) => pull::run(&ctx, args).await,
        Command::Push(args) => push::run(&ctx, args).await,
        Command::Login(args) => login::login(&ctx, args),
        Command::Logout { host } => login::logout(&ctx, &host),
        Command::Import(args) => archive::import(&ctx, args).await,
        Command::Export(args) => archive::export(&ctx, args).await,
        Command::Events { filters } => events::run(&ctx, filters).await,
        Command::Run(args) => container::run(&ctx, args).await,
        Command::Create(args) => container::create(&ctx, args).await,
        Command::Start(args) => container::start(&ctx, args).await,
        Command::Exec(args) => container::exec(&ctx, args).await,
        Command::Ps(args) => container::ps(&ctx, args).await,
        Command::Stop(args) => container::stop(&ctx, args).await,
        Command::Kill(args) => container::kill(&ctx, args).await,
        Command::Rm(args) => container::rm(&ctx, args).await,
        Command::Inspect(args) => container::inspect(&ctx, args).await,
        Command::Top(args) => container::top(&ctx, args).await,
        Command::Stats(args) => container::stats(&ctx, args).await,
        Command::Pause(args) => container::pause(&ctx, args).await,
        Command::Unpause(args) => container::unpause(&ctx, args).await,
        Command::Wait(args) => container::wait(&ctx, args).await,
        Command::Logs(args) => logs::run(&ctx, args).await,
    }
}

/// Writes `text` to stdout; a closed pipe (e.g. `| head`) is not an error worth a message.
pub fn print(text: &str) -> CmdResult {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(Failure::Reported),
        Err(e) => Err(Error::io("write to stdout", e).into()),
    }
}

/// Whether `err` was caused by writing to a closed pipe.
pub fn is_broken_pipe(err: &Error) -> bool {
    std::error::Error::source(err)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}

/// The labels from `key=value` pairs.
pub fn label_map(pairs: Vec<(String, String)>) -> Labels {
    pairs.into_iter().collect()
}

/// Removes each target with `remove`, printing each success (table) or all of them (JSON), and
/// each failure as it happens; fails at the end when any did.
pub async fn remove_each<F, Fut>(ctx: &Ctx, targets: Vec<String>, mut remove: F) -> CmdResult
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = Result<String, Error>>,
{
    let mut removed = Vec::new();
    let mut failed = false;
    for target in targets {
        match remove(target).await {
            Ok(name) => {
                if ctx.format == Format::Table {
                    print(&format!("{name}\n"))?;
                }
                removed.push(name);
            }
            Err(e) => {
                crate::report(&e);
                failed = true;
            }
        }
    }
    if ctx.format == Format::Json {
        print(&removed_json(&removed))?;
    }
    if failed {
        Err(Failure::Reported)
    } else {
        Ok(())
    }
}

/// `{"removed": [...]}`.
pub fn removed_json(removed: &[String]) -> String {
    crate::output::json(&serde_json::json!({ "removed": removed }))
}

/// Whether `path` names stdin.
pub fn is_stdin(path: Option<&Path>) -> bool {
    path.is_none_or(|p| p == Path::new("-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removed_shape() {
        let v: serde_json::Value =
            serde_json::from_str(&removed_json(&["a".into(), "b".into()])).unwrap();
        assert_eq!(v, serde_json::json!({"removed": ["a", "b"]}));
    }

    #[test]
    fn broken_pipes_are_recognised() {
        let pipe = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        assert!(is_broken_pipe(&Error::io("write content x", pipe)));
        let other = std::io::Error::from(std::io::ErrorKind::Other);
        assert!(!is_broken_pipe(&Error::io("write content x", other)));
        assert!(!is_broken_pipe(&Error::not_found("x")));
    }

    #[test]
    fn stdin_paths() {
        assert!(is_stdin(None));
        assert!(is_stdin(Some(Path::new("-"))));
        assert!(!is_stdin(Some(Path::new("./-x"))));
    }
}
