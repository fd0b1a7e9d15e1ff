//! Image references as Docker writes them (`busybox`, `user/app:1.2`, `host:5000/a/b@sha256:…`),
//! parsed and normalized the way Docker and containerd do.
//!
//! Normalization: a name without a registry is on Docker Hub (`docker.io`), a Docker Hub name
//! without a `/` is an official image (`library/`), and a reference with neither tag nor digest
//! means `:latest`. The first path component is the registry exactly when it contains `.` or `:`,
//! is `localhost`, or has upper-case letters (repository paths are lower case). When a reference
//! has both a tag and a digest, the digest is what gets resolved; the tag stays part of the name.

use std::fmt;
use std::sync::LazyLock;

use regex::Regex;

use crate::{Digest, Error, Result};

/// The registry a name without one lives on.
pub const DEFAULT_REGISTRY: &str = "docker.io";
/// The host that serves Docker Hub's registry API.
pub const DOCKER_HUB_API_HOST: &str = "registry-1.docker.io";
/// The tag a reference without tag or digest means.
pub const DEFAULT_TAG: &str = "latest";
/// The longest `registry/repository` Docker accepts.
pub const MAX_NAME_LENGTH: usize = 255;

static PATH_COMPONENT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$").unwrap_or_else(|e| unreachable!("{e}"))
});
static DOMAIN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^(?:(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?$",
    )
    .unwrap_or_else(|e| unreachable!("{e}"))
});
// ASCII classes, as Docker's grammar means them (Go's `\w` is ASCII): a Unicode `\w` repeated
// 127 times also made this the most expensive regex to compile, ~20 ms at a daemon's first pull.
static TAG: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$").unwrap_or_else(|e| unreachable!("{e}"))
});

/// A parsed, normalized image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// The registry as written in names: `docker.io`, `ghcr.io`, `127.0.0.1:5000`.
    pub registry: String,
    /// The repository path inside the registry: `library/busybox`.
    pub repository: String,
    /// The tag; `None` only when the reference names a digest and no tag.
    pub tag: Option<String>,
    /// The manifest digest, when pinned.
    pub digest: Option<Digest>,
}

impl Reference {
    /// Parses and normalizes a Docker-style reference.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = |why: &str| Error::invalid_argument(format!("invalid reference {s:?}: {why}"));
        if s.is_empty() {
            return Err(bad("empty reference"));
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("whitespace or control characters are not allowed"));
        }
        // A bare 64-hex string is an image ID, which Docker refuses as a name.
        if s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(bad("cannot specify 64-byte hexadecimal strings"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((rest, d)) => {
                let digest = Digest::parse(d).map_err(|e| bad(e.message()))?;
                (rest, Some(digest))
            }
            None => (s, None),
        };
        // A ':' after the last '/' starts the tag; one before it is a registry port.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].find(':') {
            Some(i) => {
                let tag = &rest[last_slash + i + 1..];
                if !TAG.is_match(tag) {
                    return Err(bad(&format!(
                        "invalid tag {tag:?}: want [A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}"
                    )));
                }
                (&rest[..last_slash + i], Some(tag.to_owned()))
            }
            None => (rest, None),
        };
        if name.is_empty() {
            return Err(bad("missing repository name"));
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, remainder))
                if first.contains(['.', ':'])
                    || first == "localhost"
                    || first.chars().any(|c| c.is_ascii_uppercase()) =>
            {
                (first, remainder)
            }
            _ => (DEFAULT_REGISTRY, name),
        };
        if !DOMAIN.is_match(registry) {
            return Err(bad(&format!("invalid registry {registry:?}")));
        }
        if path.is_empty() {
            return Err(bad("missing repository name"));
        }
        if path.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(bad(&format!("repository name {path:?} must be lowercase")));
        }
        for component in path.split('/') {
            if !PATH_COMPONENT.is_match(component) {
                return Err(bad(&format!(
                    "invalid repository path component {component:?}: want lower-case letters \
                     and digits separated by '.', '_', '__' or '-'"
                )));
            }
        }
        let registry = if registry == "index.docker.io" {
            DEFAULT_REGISTRY
        } else {
            registry
        };
        let repository = if registry == DEFAULT_REGISTRY && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_owned()
        };
        if registry.len() + 1 + repository.len() > MAX_NAME_LENGTH {
            return Err(bad(&format!(
                "repository name must not be longer than {MAX_NAME_LENGTH} characters"
            )));
        }
        let tag = match (&tag, &digest) {
            (None, None) => Some(DEFAULT_TAG.to_owned()),
            _ => tag,
        };
        Ok(Self {
            registry: registry.to_owned(),
            repository,
            tag,
            digest,
        })
    }

    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// What to ask the registry's manifest endpoint for: the digest when pinned, else the tag.
    pub fn object(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => DEFAULT_TAG.to_owned(),
        }
    }

    /// The host (with port) whose `/v2/` API serves this reference: Docker Hub's names live on
    /// `registry-1.docker.io`.
    pub fn registry_host_for_api(&self) -> &str {
        if self.registry == DEFAULT_REGISTRY {
            DOCKER_HUB_API_HOST
        } else {
            &self.registry
        }
    }

    /// The registry's host name without port or IPv6 brackets, as containerd keys its
    /// `containerd.io/distribution.source.<host>` labels.
    pub fn hostname(&self) -> &str {
        let r = self.registry.as_str();
        if let Some(rest) = r.strip_prefix('[') {
            return rest.split(']').next().unwrap_or(rest);
        }
        r.split(':').next().unwrap_or(r)
    }
}

/// The normalized full form: `docker.io/library/busybox:latest`, `host/repo:tag@sha256:…`.
impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Reference {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    const HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn normalizes() {
        let d = format!("sha256:{HEX}");
        let table: Vec<(String, String)> = vec![
            ("busybox".into(), "docker.io/library/busybox:latest".into()),
            (
                "busybox:1.36".into(),
                "docker.io/library/busybox:1.36".into(),
            ),
            ("user/app".into(), "docker.io/user/app:latest".into()),
            (
                "docker.io/busybox".into(),
                "docker.io/library/busybox:latest".into(),
            ),
            (
                "index.docker.io/user/app:v1".into(),
                "docker.io/user/app:v1".into(),
            ),
            ("host:5000/a/b:tag".into(), "host:5000/a/b:tag".into()),
            ("localhost/x".into(), "localhost/x:latest".into()),
            ("localhost:5000/x".into(), "localhost:5000/x:latest".into()),
            (
                "ghcr.io/o/r/deep/path".into(),
                "ghcr.io/o/r/deep/path:latest".into(),
            ),
            ("Example.COM/x".into(), "Example.COM/x:latest".into()),
            (
                format!("127.0.0.1:5000/x@{d}"),
                format!("127.0.0.1:5000/x@{d}"),
            ),
            (
                format!("name:tag@{d}"),
                format!("docker.io/library/name:tag@{d}"),
            ),
            (
                format!("busybox@{d}"),
                format!("docker.io/library/busybox@{d}"),
            ),
            ("[::1]:5000/a:b".into(), "[::1]:5000/a:b".into()),
            (
                "a_b/c__d/e-f--g.h:T_1.2-x".into(),
                "docker.io/a_b/c__d/e-f--g.h:T_1.2-x".into(),
            ),
        ];
        for (input, want) in table {
            let r = Reference::parse(&input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(r.to_string(), want, "{input}");
            // The normalized form parses to itself.
            assert_eq!(Reference::parse(&want).unwrap(), r, "{want}");
        }
    }

    #[test]
    fn parts() {
        let d = Digest::parse(&format!("sha256:{HEX}")).unwrap();
        let r = Reference::parse(&format!("127.0.0.1:5000/a/b:v1@{d}")).unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "a/b");
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert_eq!(r.digest.as_ref(), Some(&d));
        assert_eq!(r.object(), d.to_string(), "the digest wins for resolution");
        assert_eq!(r.name(), "127.0.0.1:5000/a/b");
        assert_eq!(r.hostname(), "127.0.0.1");
        assert_eq!(r.registry_host_for_api(), "127.0.0.1:5000");

        let hub = Reference::parse("alpine:3").unwrap();
        assert_eq!(hub.registry_host_for_api(), "registry-1.docker.io");
        assert_eq!(hub.hostname(), "docker.io");
        assert_eq!(hub.object(), "3");
        assert_eq!(hub.digest, None);

        assert_eq!(Reference::parse("[::1]:5000/x").unwrap().hostname(), "::1");
        assert_eq!(
            Reference::parse("localhost/x").unwrap().hostname(),
            "localhost"
        );
    }

    #[test]
    fn rejects() {
        let long = format!("a/{}", "b".repeat(260));
        let table: &[(&str, &str)] = &[
            ("", "empty"),
            ("Busybox", "must be lowercase"),
            ("docker.io/User/app", "must be lowercase"),
            ("busybox:", "invalid tag"),
            ("busybox:-x", "invalid tag"),
            ("busybox:caf\u{e9}", "invalid tag"),
            ("busybox:a/b", "invalid registry \"busybox:a\""),
            ("busybox@sha256:abc", "64 lower-case hex"),
            (
                "busybox@md5:d41d8cd98f00b204e9800998ecf8427e",
                "unsupported algorithm",
            ),
            ("a//b", "invalid repository path component"),
            ("a/b/", "invalid repository path component"),
            ("-a", "invalid repository path component"),
            ("a..b", "invalid repository path component"),
            ("host:port/x", "invalid registry"),
            ("bad_host.com/x", "invalid registry"),
            ("localhost/", "missing repository name"),
            (":tag", "missing repository name"),
            ("a b", "whitespace"),
            (HEX, "64-byte hexadecimal"),
            (&long, "longer than 255"),
        ];
        for (input, want) in table {
            let err = Reference::parse(input).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{input}");
            assert!(err.message().contains(want), "{input}: {err}");
            assert!(
                err.message().contains("invalid reference"),
                "{input}: {err}"
            );
        }
        // With an explicit registry a 64-hex repository is just a name.
        assert!(Reference::parse(&format!("docker.io/{HEX}")).is_ok());
        // A tag of 128 characters is the longest allowed.
        assert!(Reference::parse(&format!("a:{}", "t".repeat(128))).is_ok());
        assert!(Reference::parse(&format!("a:{}", "t".repeat(129))).is_err());
    }
}
