//! Registry credentials in a docker-style `config.json`, shared with the docker CLI: the file is
//! `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`, and credentials live under
//! `auths.<registry>` as `auth` (base64 of `user:password`) or `identitytoken`.
//!
//! Docker Hub's entry is keyed `https://index.docker.io/v1/` (a leftover of the v1 API), while
//! references name it `docker.io`; keys are therefore compared by host, with the Hub's aliases
//! folded together. Every other key in the file (`credsStore`, `proxies`, …) is kept as is when
//! the file is rewritten. Credential helpers (`credsStore`, `credHelpers`) are not run.

use std::ffi::OsString;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use berth_core::transfer::Credentials;
use berth_core::{Error, Result};
use serde_json::{Map, Value};

/// The name references give Docker Hub.
pub const DOCKER_HUB: &str = "docker.io";

/// The key docker writes Docker Hub's credentials under.
pub const DOCKER_HUB_CONFIG_KEY: &str = "https://index.docker.io/v1/";

/// Decodes with or without `=` padding: other tools write either.
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The host a config key or user-typed registry names: scheme and path stripped, and Docker
/// Hub's aliases (`index.docker.io`, `registry-1.docker.io`, the v1 URL) folded into `docker.io`.
pub fn normalize_host(key: &str) -> String {
    // Host names and schemes are case-insensitive.
    let key = key.to_ascii_lowercase();
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(&key);
    let host = rest.split('/').next().unwrap_or(rest).to_owned();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_owned(),
        _ => host,
    }
}

/// The key `host`'s credentials are written under (docker's own choice, so the docker CLI
/// finds them too).
pub fn config_key(host: &str) -> String {
    let host = normalize_host(host);
    if host == DOCKER_HUB {
        DOCKER_HUB_CONFIG_KEY.to_owned()
    } else {
        host
    }
}

/// The registry host of an image reference, by Docker's rule: the first path component is a
/// registry when it has a `.` or `:`, is `localhost`, or has upper-case letters; otherwise the
/// reference is on Docker Hub. The reference is not validated here (the daemon does that).
pub fn registry_host(reference: &str) -> String {
    let name = reference.split('@').next().unwrap_or(reference);
    match name.split_once('/') {
        Some((first, _))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            normalize_host(first)
        }
        _ => DOCKER_HUB.to_owned(),
    }
}

/// Where the config lives, given `$DOCKER_CONFIG` and `$HOME`.
pub fn config_path_from(
    docker_config: Option<OsString>,
    home: Option<OsString>,
) -> Result<PathBuf> {
    if let Some(dir) = docker_config.filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("config.json"));
    }
    match home.filter(|h| !h.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".docker").join("config.json")),
        None => Err(Error::failed_precondition(
            "cannot locate the registry credentials file: set DOCKER_CONFIG or HOME",
        )),
    }
}

/// `$DOCKER_CONFIG/config.json`, else `$HOME/.docker/config.json`.
pub fn default_config_path() -> Result<PathBuf> {
    config_path_from(std::env::var_os("DOCKER_CONFIG"), std::env::var_os("HOME"))
}

/// The credentials stored for `host` in the default config; `None` when there are none (or no
/// config file).
pub fn credentials_for(host: &str) -> Result<Option<Credentials>> {
    DockerConfig::load_default()?.credentials_for(host)
}

/// A docker-style config file, loaded in full so rewriting it keeps what Berth does not use.
#[derive(Clone)]
pub struct DockerConfig {
    path: PathBuf,
    doc: Map<String, Value>,
}

impl std::fmt::Debug for DockerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The document holds secrets: show only where it is and which registries it knows.
        f.debug_struct("DockerConfig")
            .field("path", &self.path)
            .field("registries", &self.registries())
            .finish()
    }
}

impl DockerConfig {
    /// Loads the config at `path`; a missing file is an empty config.
    pub fn load(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        let doc = match std::fs::read(&path) {
            Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => Map::new(),
            Ok(bytes) => match serde_json::from_slice::<Value>(&bytes) {
                Ok(Value::Object(doc)) => doc,
                Ok(_) => {
                    return Err(Error::invalid_argument(format!(
                        "registry credentials file {} is not a JSON object",
                        path.display()
                    )));
                }
                Err(e) => {
                    return Err(Error::invalid_argument(format!(
                        "parsing registry credentials file {}",
                        path.display()
                    ))
                    .with_source(e));
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Map::new(),
            Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
        };
        Ok(Self { path, doc })
    }

    /// Loads the config at [`default_config_path`].
    pub fn load_default() -> Result<Self> {
        Self::load(default_config_path()?)
    }

    /// The file this config was loaded from and is saved to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The `auths` keys, as written.
    pub fn registries(&self) -> Vec<String> {
        self.auths()
            .map(|a| a.keys().cloned().collect())
            .unwrap_or_default()
    }

    fn auths(&self) -> Option<&Map<String, Value>> {
        self.doc.get("auths").and_then(Value::as_object)
    }

    /// The credentials for `host` (`docker.io`, `ghcr.io`, `localhost:5000`, or a key as docker
    /// writes it). An exact key wins over one that only names the same host. An identity token
    /// comes back with an empty user name, as [`Credentials`] expects.
    pub fn credentials_for(&self, host: &str) -> Result<Option<Credentials>> {
        let Some(auths) = self.auths() else {
            return Ok(None);
        };
        let wanted = normalize_host(host);
        let exact = [host.to_owned(), config_key(host)];
        let entry = exact
            .iter()
            .find_map(|k| auths.get(k).map(|v| (k.as_str(), v)))
            .or_else(|| {
                auths
                    .iter()
                    .find(|(k, _)| normalize_host(k) == wanted)
                    .map(|(k, v)| (k.as_str(), v))
            });
        let Some((key, entry)) = entry else {
            return Ok(None);
        };
        self.entry_credentials(key, entry)
    }

    fn entry_credentials(&self, key: &str, entry: &Value) -> Result<Option<Credentials>> {
        let field = |name: &str| entry.get(name).and_then(Value::as_str).unwrap_or("");
        let token = field("identitytoken");
        if !token.is_empty() {
            return Ok(Some(Credentials {
                username: String::new(),
                secret: token.to_owned(),
            }));
        }
        let auth = field("auth");
        if !auth.is_empty() {
            let bad = |why: &str| {
                Error::invalid_argument(format!(
                    "registry credentials file {}: auths.{key:?}.auth {why}",
                    self.path.display()
                ))
            };
            let decoded = LENIENT_BASE64
                .decode(auth.trim())
                .map_err(|_| bad("is not base64"))?;
            let decoded = String::from_utf8(decoded).map_err(|_| bad("is not UTF-8"))?;
            let (username, secret) = decoded
                .split_once(':')
                .ok_or_else(|| bad("is not base64 of user:password"))?;
            return Ok(Some(Credentials {
                username: username.to_owned(),
                secret: secret.to_owned(),
            }));
        }
        // Older configs and some tools write the fields in the clear.
        let (username, password) = (field("username"), field("password"));
        if !username.is_empty() && !password.is_empty() {
            return Ok(Some(Credentials {
                username: username.to_owned(),
                secret: password.to_owned(),
            }));
        }
        Ok(None)
    }

    /// Stores `credentials` for `host` under docker's key for it, replacing any entry keyed by
    /// another spelling of the same host. An empty user name stores an identity token.
    pub fn set_credentials(&mut self, host: &str, credentials: &Credentials) {
        self.remove(host);
        let mut entry = Map::new();
        if credentials.username.is_empty() {
            entry.insert(
                "identitytoken".to_owned(),
                Value::String(credentials.secret.clone()),
            );
        } else {
            let pair = format!("{}:{}", credentials.username, credentials.secret);
            entry.insert(
                "auth".to_owned(),
                Value::String(base64::engine::general_purpose::STANDARD.encode(pair)),
            );
        }
        let auths = self
            .doc
            .entry("auths")
            .or_insert_with(|| Value::Object(Map::new()));
        if !auths.is_object() {
            *auths = Value::Object(Map::new());
        }
        if let Value::Object(auths) = auths {
            auths.insert(config_key(host), Value::Object(entry));
        }
    }

    /// Removes every entry for `host`; whether there was one.
    pub fn remove(&mut self, host: &str) -> bool {
        let wanted = normalize_host(host);
        let Some(Value::Object(auths)) = self.doc.get_mut("auths") else {
            return false;
        };
        let before = auths.len();
        auths.retain(|k, _| k != host && normalize_host(k) != wanted);
        auths.len() != before
    }

    /// Writes the config back: to a temporary file with mode 0600 beside it, then renamed over
    /// it, so a crash never leaves a half-written file and other users never see the secrets.
    /// A symlinked config is written through to its target.
    pub fn save(&self) -> Result<()> {
        let path = std::fs::canonicalize(&self.path).unwrap_or_else(|_| self.path.clone());
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| Error::io(format!("creating directory {}", dir.display()), e))?;
        let mut bytes = serde_json::to_vec_pretty(&self.doc)
            .map_err(|e| Error::internal(format!("encoding {}", path.display())).with_source(e))?;
        bytes.push(b'\n');
        let write_err = |e| Error::io(format!("writing {}", path.display()), e);
        let mut tmp = tempfile::Builder::new()
            .prefix(".config.json.")
            .tempfile_in(&dir)
            .map_err(write_err)?;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(write_err)?;
        tmp.write_all(&bytes).map_err(write_err)?;
        tmp.as_file().sync_all().map_err(write_err)?;
        tmp.persist(&path).map_err(|e| write_err(e.error))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt as _;

    use super::*;

    fn creds(user: &str, secret: &str) -> Credentials {
        Credentials {
            username: user.into(),
            secret: secret.into(),
        }
    }

    #[test]
    fn round_trip_with_mode_0600_keeping_other_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("docker").join("config.json");
        // A missing file (and directory) is an empty config.
        let mut config = DockerConfig::load(&path).unwrap();
        assert_eq!(config.credentials_for("ghcr.io").unwrap(), None);
        config.set_credentials("ghcr.io", &creds("me", "p:ss"));
        config.save().unwrap();

        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        let dir_mode = std::fs::metadata(path.parent().unwrap()).unwrap().mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        let raw: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(
            raw["auths"]["ghcr.io"]["auth"], "bWU6cDpzcw==",
            "base64 of me:p:ss"
        );

        // Other settings survive a rewrite, and the rewrite is still 0600.
        let mut raw = raw;
        raw["credsStore"] = "desktop".into();
        raw["proxies"] = serde_json::json!({"default": {"httpProxy": "http://p:3128"}});
        std::fs::write(&path, serde_json::to_vec(&raw).unwrap()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut config = DockerConfig::load(&path).unwrap();
        assert_eq!(
            config.credentials_for("ghcr.io").unwrap(),
            Some(creds("me", "p:ss")),
            "the password keeps its colon"
        );
        config.set_credentials("localhost:5000", &creds("a", "b"));
        config.save().unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        let config = DockerConfig::load(&path).unwrap();
        assert_eq!(config.doc["credsStore"], "desktop");
        assert_eq!(
            config.doc["proxies"]["default"]["httpProxy"],
            "http://p:3128"
        );
        assert_eq!(
            config.credentials_for("localhost:5000").unwrap(),
            Some(creds("a", "b"))
        );
        assert_eq!(
            config.credentials_for("ghcr.io").unwrap(),
            Some(creds("me", "p:ss"))
        );
        // No temporary files are left behind.
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![OsString::from("config.json")]);
        assert!(
            !format!("{config:?}").contains("YTpi"),
            "no secrets in Debug"
        );
    }

    #[test]
    fn docker_hub_key_quirk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        // As `docker login` writes it.
        std::fs::write(
            &path,
            r#"{"auths": {"https://index.docker.io/v1/": {"auth": "aHViOnNlY3JldA=="}}}"#,
        )
        .unwrap();
        let config = DockerConfig::load(&path).unwrap();
        for host in [
            "docker.io",
            "index.docker.io",
            "registry-1.docker.io",
            "https://index.docker.io/v1/",
        ] {
            assert_eq!(
                config.credentials_for(host).unwrap(),
                Some(creds("hub", "secret")),
                "{host}"
            );
        }
        assert_eq!(config.credentials_for("ghcr.io").unwrap(), None);

        // Storing for docker.io writes docker's key and drops other spellings of the Hub.
        std::fs::write(
            &path,
            r#"{"auths": {"docker.io": {"auth": "b2xkOm9sZA=="}, "quay.io": {"auth": "cXE6cQ"}}}"#,
        )
        .unwrap();
        let mut config = DockerConfig::load(&path).unwrap();
        config.set_credentials("docker.io", &creds("new", "pw"));
        config.save().unwrap();
        let config = DockerConfig::load(&path).unwrap();
        assert_eq!(
            config.registries(),
            vec![DOCKER_HUB_CONFIG_KEY.to_owned(), "quay.io".to_owned()]
        );
        assert_eq!(
            config.credentials_for("docker.io").unwrap(),
            Some(creds("new", "pw"))
        );
        // Unpadded base64 (some tools write it) still decodes.
        assert_eq!(
            config.credentials_for("quay.io").unwrap(),
            Some(creds("qq", "q"))
        );

        let mut config = config;
        assert!(config.remove("index.docker.io"));
        assert!(!config.remove("docker.io"), "already gone");
        assert_eq!(config.credentials_for("docker.io").unwrap(), None);
        assert_eq!(config.registries(), vec!["quay.io".to_owned()]);
    }

    #[test]
    fn identity_tokens_and_other_entry_shapes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            r#"{"auths": {
                "token.example": {"auth": "dXNlcjo=", "identitytoken": "refresh-tok"},
                "https://plain.example/v2/": {"username": "p", "password": "w"},
                "helper.example": {},
                "broken.example": {"auth": "!!!"},
                "nocolon.example": {"auth": "bm9jb2xvbg=="}
            }}"#,
        )
        .unwrap();
        let mut config = DockerConfig::load(&path).unwrap();
        assert_eq!(
            config.credentials_for("token.example").unwrap(),
            Some(creds("", "refresh-tok")),
            "an identity token wins and has no user name"
        );
        assert_eq!(
            config.credentials_for("plain.example").unwrap(),
            Some(creds("p", "w")),
            "found by host through a URL key"
        );
        assert_eq!(config.credentials_for("helper.example").unwrap(), None);
        let err = config.credentials_for("broken.example").unwrap_err();
        assert_eq!(err.kind(), berth_core::ErrorKind::InvalidArgument);
        assert!(err.message().contains("broken.example"), "{err}");
        assert!(config.credentials_for("nocolon.example").is_err());

        // Storing a token writes `identitytoken`, which reads back the same.
        config.set_credentials("ghcr.io", &creds("", "tok2"));
        config.save().unwrap();
        let config = DockerConfig::load(&path).unwrap();
        assert_eq!(config.doc["auths"]["ghcr.io"]["identitytoken"], "tok2");
        assert_eq!(
            config.credentials_for("ghcr.io").unwrap(),
            Some(creds("", "tok2"))
        );

        std::fs::write(&path, "[1]").unwrap();
        assert!(DockerConfig::load(&path).is_err());
        std::fs::write(&path, "{").unwrap();
        assert!(DockerConfig::load(&path).is_err());
        std::fs::write(&path, "\n").unwrap();
        assert!(DockerConfig::load(&path).unwrap().registries().is_empty());
    }

    #[test]
    fn saving_through_a_symlink_keeps_the_link() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.json");
        std::fs::write(&real, "{}").unwrap();
        let link = dir.path().join("config.json");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let mut config = DockerConfig::load(&link).unwrap();
        config.set_credentials("ghcr.io", &creds("u", "p"));
        config.save().unwrap();
        assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
        let through_real = DockerConfig::load(&real).unwrap();
        assert_eq!(
            through_real.credentials_for("ghcr.io").unwrap(),
            Some(creds("u", "p"))
        );
    }

    #[test]
    fn hosts_and_paths() {
        for (reference, host) in [
            ("busybox", "docker.io"),
            ("busybox:1.36", "docker.io"),
            ("library/busybox@sha256:abc", "docker.io"),
            ("docker.io/library/busybox:latest", "docker.io"),
            ("index.docker.io/x/y", "docker.io"),
            ("ghcr.io/owner/app:1", "ghcr.io"),
            ("localhost:5000/app", "localhost:5000"),
            ("localhost/app", "localhost"),
            ("127.0.0.1:5000/a/b:c", "127.0.0.1:5000"),
            ("user/app", "docker.io"),
        ] {
            assert_eq!(registry_host(reference), host, "{reference}");
        }
        assert_eq!(config_key("docker.io"), DOCKER_HUB_CONFIG_KEY);
        assert_eq!(config_key("https://ghcr.io/v2/"), "ghcr.io");
        assert_eq!(
            normalize_host("HTTP://Reg.Example:5000/v2/"),
            "reg.example:5000"
        );

        assert_eq!(
            config_path_from(Some("/cfg".into()), Some("/home/u".into())).unwrap(),
            PathBuf::from("/cfg/config.json")
        );
        assert_eq!(
            config_path_from(Some("".into()), Some("/home/u".into())).unwrap(),
            PathBuf::from("/home/u/.docker/config.json")
        );
        assert!(config_path_from(None, None).is_err());
    }
}
