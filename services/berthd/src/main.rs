//! The berthd binary: parses flags, sets up logging, runs the daemon.

use std::path::PathBuf;
use std::process::ExitCode;

use berthd::Config;
use clap::{Parser, Subcommand};

/// Berth's container daemon, serving containerd's v1 API on a unix socket.
#[derive(Debug, Parser)]
#[command(name = "berthd", version)]
struct Cli {
    /// A TOML config file layered over the built-in defaults.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Persistent data directory.
    #[arg(long, global = true)]
    root: Option<PathBuf>,
    /// Runtime state directory.
    #[arg(long, global = true)]
    state: Option<PathBuf>,
    /// The unix socket to serve on.
    #[arg(long, global = true)]
    address: Option<PathBuf>,
    /// Log level or tracing filter (error, warn, info, debug, trace).
    #[arg(long, global = true)]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Prints the built-in default configuration.
    Default,
    /// Prints the effective configuration (defaults, file, flags).
    Dump,
}

fn effective_config(cli: &Cli) -> berth_core::Result<Config> {
    let mut config = match &cli.config {
        Some(path) => Config::load(path)?,
        None => Config::default_config()?,
    };
    if let Some(root) = &cli.root {
        config.root = root.clone();
    }
    if let Some(state) = &cli.state {
        config.state = state.clone();
    }
    if let Some(address) = &cli.address {
        config.grpc.address = address.clone();
    }
    if let Some(level) = &cli.log_level {
        config.log.level = level.clone();
    }
    Ok(config)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::Config {
            command: ConfigCommand::Default,
        }) => {
            print!("{}", berthd::config::DEFAULT_CONFIG);
            return ExitCode::SUCCESS;
        }
        Some(Command::Config {
            command: ConfigCommand::Dump,
        }) => {
            return match effective_config(&cli).and_then(|c| c.to_toml()) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("berthd: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        None => {}
    }
    let config = match effective_config(&cli) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("berthd: {e}");
            return ExitCode::FAILURE;
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("berthd: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(berthd::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "berthd failed");
            eprintln!("berthd: {e}");
            ExitCode::FAILURE
        }
    }
}
