//! berthd's configuration: embedded defaults, an optional TOML file, then command-line flags.

use std::path::{Path, PathBuf};

use berth_core::{Error, Result};
use serde::{Deserialize, Serialize};

/// The default configuration, as shipped (`berthd config default` prints it).
pub const DEFAULT_CONFIG: &str = include_str!("default-config.toml");

/// The daemon's configuration.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The config format version (1).
    pub version: u32,
    /// Persistent data directory.
    pub root: PathBuf,
    /// Runtime state directory.
    pub state: PathBuf,
    /// The gRPC socket.
    pub grpc: GrpcConfig,
    /// Logging.
    pub log: LogConfig,
    /// Registry access for pull and push.
    pub registry: RegistryConfig,
    /// Garbage collection.
    pub gc: GcConfig,
}

/// Registry access settings.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// Hosts (`host` or `host:port`) reached over plain HTTP.
    pub insecure: Vec<String>,
}

/// The socket settings.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GrpcConfig {
    /// The unix socket path.
    pub address: PathBuf,
    /// The socket's permission bits.
    pub mode: u32,
}

/// Logging settings.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// A level or a tracing filter directive.
    pub level: String,
}

/// Garbage-collection settings.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GcConfig {
    /// Delay before a scheduled collection runs, in milliseconds.
    pub debounce_ms: u64,
}

impl Config {
    /// The built-in defaults.
    pub fn default_config() -> Result<Self> {
        Self::parse(DEFAULT_CONFIG, Path::new("<built-in>"))
    }

    /// The configuration as TOML, in the same shape the file takes.
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string(self)
            .map_err(|e| Error::internal(format!("rendering the configuration: {e}")))
    }

    /// Reads a config file layered over the defaults: keys the file omits keep their defaults.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("reading config {}", path.display()), e))?;
        Self::parse(&text, path)
    }

    fn parse(text: &str, origin: &Path) -> Result<Self> {
        let mut base: toml::Table = DEFAULT_CONFIG.parse().map_err(|e: toml::de::Error| {
            Error::internal(format!("built-in config is invalid: {e}"))
        })?;
        let overlay: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            Error::invalid_argument(format!("config {}: {e}", origin.display()))
        })?;
        merge(&mut base, overlay);
        let config: Config = toml::Value::Table(base)
            .try_into()
            .map_err(|e| Error::invalid_argument(format!("config {}: {e}", origin.display())))?;
        if config.version != 1 {
            return Err(Error::invalid_argument(format!(
                "config {}: unsupported version {} (this berthd reads version 1)",
                origin.display(),
                config.version
            )));
        }
        Ok(config)
    }
}

fn merge(base: &mut toml::Table, overlay: toml::Table) {
    for (key, value) in overlay {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse() {
        let c = Config::default_config().unwrap();
        assert_eq!(c.root, PathBuf::from("/var/lib/berth"));
        assert_eq!(c.state, PathBuf::from("/run/berth"));
        assert_eq!(c.grpc.address, PathBuf::from("/run/berth/berthd.sock"));
        assert_eq!(c.grpc.mode, 0o660);
        assert_eq!(c.gc.debounce_ms, 100);
    }

    #[test]
    fn file_overrides_only_what_it_names() {
        let c = Config::parse(
            "root = \"/tmp/r\"\n[log]\nlevel = \"debug\"\n",
            Path::new("t"),
        )
        .unwrap();
        assert_eq!(c.root, PathBuf::from("/tmp/r"));
        assert_eq!(c.log.level, "debug");
        assert_eq!(c.state, PathBuf::from("/run/berth"));
    }

    #[test]
    fn rejects_unknown_keys_and_versions() {
        assert!(Config::parse("rooot = \"/x\"", Path::new("t")).is_err());
        assert!(Config::parse("version = 2", Path::new("t")).is_err());
        assert!(Config::parse("[grpc]\nmode = \"x\"", Path::new("t")).is_err());
    }
}
