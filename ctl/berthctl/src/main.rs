//! Berth's command-line client: `berthctl [--address SOCK] [-n NS] [--format table|json]
//! <command>`. Errors print as `berthctl: <message>` on stderr with exit status 1.

mod cli;
mod commands;
mod output;
mod parse;

use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;

use berth_core::{Error, ErrorKind};
use clap::Parser as _;

use crate::cli::Cli;

/// Why a command failed.
#[derive(Debug)]
pub enum Failure {
    /// An error still to be printed.
    Error(Error),
    /// Errors were already printed (commands over several targets report each as it happens).
    Reported,
    /// Exit with this status and print nothing: the container's own exit code (`run`, `exec`,
    /// `start --attach`).
    Exit(u8),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Error(e)
    }
}

/// What a command returns.
pub type CmdResult = Result<(), Failure>;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            eprint!("{}", usage_error(&e.to_string()));
            return ExitCode::FAILURE;
        }
    };
    if let Err(msg) = init_logging(&cli.log_level) {
        eprintln!("berthctl: {msg}");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("berthctl: start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Reported) => ExitCode::FAILURE,
        Err(Failure::Exit(code)) => ExitCode::from(code),
        Err(Failure::Error(e)) => {
            report(&e);
            ExitCode::FAILURE
        }
    }
}

/// A clap error in berthctl's error style: `berthctl: <message>`, then clap's usage hints.
fn usage_error(rendered: &str) -> String {
    let text = rendered.strip_prefix("error: ").unwrap_or(rendered);
    let mut out = format!("berthctl: {text}");
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

fn init_logging(level: &str) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .map_err(|e| format!("invalid --log-level {level:?}: {e}"))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    Ok(())
}

/// Prints `berthctl: <message>` on stderr.
pub fn report(err: &Error) {
    let _ = writeln!(std::io::stderr(), "berthctl: {}", describe(err));
}

/// The one-line description of an error: its message, plus its class when the message does
/// not already say it (the client strips the class suffix from server messages, as containerd
/// does, so it is added back here once).
pub fn describe(err: &Error) -> String {
    let msg = err.to_string();
    let kind = err.kind();
    let has_cause = std::error::Error::source(err).is_some();
    if has_cause
        || matches!(kind, ErrorKind::Unknown | ErrorKind::Internal)
        || msg.ends_with(kind.as_str())
    {
        msg
    } else {
        format!("{msg}: {kind}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_errors_use_the_house_prefix() {
        let err = Cli::try_parse_from(["berthctl", "frobnicate"]).unwrap_err();
        let text = usage_error(&err.to_string());
        assert!(
            text.starts_with("berthctl: unrecognized subcommand 'frobnicate'"),
            "{text}"
        );
        assert!(text.ends_with('\n'));
        // --help is not an error.
        let help = Cli::try_parse_from(["berthctl", "--help"]).unwrap_err();
        assert!(!help.use_stderr());
    }

    #[test]
    fn descriptions_name_the_class_once() {
        assert_eq!(
            describe(&Error::not_found("content digest sha256:ab")),
            "content digest sha256:ab: not found"
        );
        assert_eq!(
            describe(&Error::not_found("lease x: not found")),
            "lease x: not found"
        );
        assert_eq!(describe(&Error::internal("boom")), "boom");
        let io = Error::io(
            "open /x",
            std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory"),
        );
        assert_eq!(describe(&io), "open /x: No such file or directory");
    }
}
