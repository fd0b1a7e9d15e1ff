//! `berthctl login HOST` and `berthctl logout HOST`: registry credentials in the docker-style
//! config file (`$DOCKER_CONFIG/config.json` or `~/.docker/config.json`), which `pull` and
//! `push` read and send to berthd with each request.
//!
//! Login only stores: nothing checks the credentials against the registry, so a typo shows up
//! at the next pull or push, as the registry's refusal.

use std::io::{BufRead as _, IsTerminal as _, Read as _, Write as _};
use std::path::{Path, PathBuf};

use berth_client::auth::{self, DockerConfig};
use berth_core::transfer::Credentials;
use berth_core::{Error, Result};
use clap::Args;
use nix::sys::termios::{LocalFlags, SetArg, Termios, tcgetattr, tcsetattr};

use super::{Ctx, print};
use crate::CmdResult;
use crate::output::{self, Format};

/// `berthctl login HOST [-u USER] [--password-stdin]`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The registry, e.g. docker.io, ghcr.io or localhost:5000.
    pub host: String,
    /// The user name (asked for when absent).
    #[arg(long, short = 'u')]
    pub username: Option<String>,
    /// Read the password from stdin instead of asking (needs --username).
    #[arg(long)]
    pub password_stdin: bool,
}

/// The secret as read from stdin: everything, less the line ending(s) at the end.
pub fn secret_from(input: &str) -> &str {
    input.trim_end_matches(['\n', '\r'])
}

/// Stores `credentials` for `host` in the config at `path` and returns docker's key for it.
pub fn store(path: &Path, host: &str, credentials: &Credentials) -> Result<String> {
    if credentials.username.is_empty() {
        return Err(Error::invalid_argument("login needs a user name"));
    }
    if credentials.secret.is_empty() {
        return Err(Error::invalid_argument("login needs a password"));
    }
    let mut config = DockerConfig::load(path)?;
    config.set_credentials(host, credentials);
    config.save()?;
    Ok(auth::config_key(host))
}

/// Removes `host`'s credentials from the config at `path`; whether there were any.
pub fn forget(path: &Path, host: &str) -> Result<bool> {
    let mut config = DockerConfig::load(path)?;
    if !config.remove(host) {
        return Ok(false);
    }
    config.save()?;
    Ok(true)
}

fn prompt(what: &str) -> Result<String> {
    let mut err = std::io::stderr();
    let _ = write!(err, "{what}: ");
    let _ = err.flush();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| Error::io(format!("reading the {} from stdin", what.to_lowercase()), e))?;
    Ok(secret_from(&line).to_owned())
}

/// Puts the terminal's echo back when dropped, even if reading failed.
struct EchoOff(Termios);

impl Drop for EchoOff {
    fn drop(&mut self) {
        let _ = tcsetattr(std::io::stdin(), SetArg::TCSANOW, &self.0);
    }
}

/// Reads the password from the terminal without echoing it.
fn prompt_hidden() -> Result<String> {
    if !std::io::stdin().is_terminal() {
        return Err(Error::invalid_argument(
            "no terminal to read the password from: pipe it in with --password-stdin",
        ));
    }
    let saved = tcgetattr(std::io::stdin())
        .map_err(|e| Error::internal("reading the terminal's settings").with_source(e))?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    tcsetattr(std::io::stdin(), SetArg::TCSANOW, &quiet)
        .map_err(|e| Error::internal("turning off the terminal's echo").with_source(e))?;
    let restore = EchoOff(saved);
    let password = prompt("Password");
    drop(restore);
    // The user's Enter was not echoed either.
    eprintln!();
    password
}

/// The config file login and logout act on.
fn config_path() -> Result<PathBuf> {
    auth::default_config_path()
}

/// Runs `berthctl login`.
pub fn login(ctx: &Ctx, args: LoginArgs) -> CmdResult {
    let username = match args.username {
        Some(user) => user,
        None if args.password_stdin => {
            return Err(Error::invalid_argument("--password-stdin needs --username").into());
        }
        None => prompt("Username")?,
    };
    let secret = if args.password_stdin {
        let mut input = String::new();
        std::io::stdin()
            .read_to_string(&mut input)
            .map_err(|e| Error::io("reading the password from stdin", e))?;
        secret_from(&input).to_owned()
    } else {
        prompt_hidden()?
    };
    let path = config_path()?;
    let key = store(&path, &args.host, &Credentials { username, secret })?;
    let host = auth::normalize_host(&args.host);
    print(&match ctx.format {
        Format::Json => output::json(&serde_json::json!({
            "registry": host, "key": key, "config": path,
        })),
        Format::Table => format!(
            "Credentials for {host} stored in {} (not checked with the registry)\n",
            path.display()
        ),
    })
}

/// Runs `berthctl logout`.
pub fn logout(ctx: &Ctx, host: &str) -> CmdResult {
    let path = config_path()?;
    let removed = forget(&path, host)?;
    let host = auth::normalize_host(host);
    print(&match ctx.format {
        Format::Json => output::json(&serde_json::json!({
            "registry": host, "removed": removed, "config": path,
        })),
        // As docker: logging out of a registry one is not logged in to is not an error.
        Format::Table if removed => format!("Removed credentials for {host}\n"),
        Format::Table => format!("Not logged in to {host}\n"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdin_secrets_lose_only_the_line_ending() {
        assert_eq!(secret_from("pa ss\n"), "pa ss");
        assert_eq!(secret_from("pass\r\n"), "pass");
        assert_eq!(secret_from("pass"), "pass");
        assert_eq!(secret_from(" pass \n\n"), " pass ");
    }

    #[test]
    fn login_then_logout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let creds = Credentials {
            username: "me".into(),
            secret: "pw".into(),
        };
        assert_eq!(
            store(&path, "docker.io", &creds).unwrap(),
            "https://index.docker.io/v1/"
        );
        assert_eq!(store(&path, "ghcr.io", &creds).unwrap(), "ghcr.io");
        let config = DockerConfig::load(&path).unwrap();
        assert_eq!(
            config.credentials_for("docker.io").unwrap(),
            Some(creds.clone())
        );
        assert_eq!(
            config.credentials_for("ghcr.io").unwrap(),
            Some(creds.clone())
        );

        assert!(forget(&path, "index.docker.io").unwrap());
        assert!(!forget(&path, "docker.io").unwrap());
        let config = DockerConfig::load(&path).unwrap();
        assert_eq!(config.credentials_for("docker.io").unwrap(), None);
        assert_eq!(config.credentials_for("ghcr.io").unwrap(), Some(creds));

        let empty = Credentials {
            username: "me".into(),
            secret: String::new(),
        };
        assert!(store(&path, "ghcr.io", &empty).is_err());
        assert!(!forget(&dir.path().join("absent.json"), "ghcr.io").unwrap());
        assert!(!dir.path().join("absent.json").exists(), "nothing written");
    }
}
