//! Content digests. Berth stores and verifies sha256 only, as containerd does by default; any
//! other algorithm is rejected at the edge with a clear error.

use std::fmt;
use std::str::FromStr;

use sha2::Digest as _;

use crate::{Error, Result};

/// A validated `sha256:<64 lower-case hex>` digest.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    /// Parses and validates a digest string.
    pub fn parse(s: &str) -> Result<Self> {
        let Some((algorithm, hex)) = s.split_once(':') else {
            return Err(Error::invalid_argument(format!(
                "invalid digest {s:?}: missing algorithm prefix"
            )));
        };
        if algorithm != "sha256" {
            return Err(Error::invalid_argument(format!(
                "invalid digest {s:?}: unsupported algorithm {algorithm:?}"
            )));
        }
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(Error::invalid_argument(format!(
                "invalid digest {s:?}: want 64 lower-case hex characters"
            )));
        }
        Ok(Self(s.to_owned()))
    }

    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Self {
        let mut d = Digester::new();
        d.update(data);
        d.finish()
    }

    /// The algorithm name (always `sha256`).
    pub fn algorithm(&self) -> &str {
        "sha256"
    }

    /// The hex part after the colon.
    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }

    /// The full `sha256:<hex>` form.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Digest {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

/// An incremental sha256 digester whose state can be cloned to report the digest so far.
#[derive(Clone, Default)]
pub struct Digester(sha2::Sha256);

impl Digester {
    /// A digester over no bytes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    /// The digest of the bytes fed so far, without consuming the digester.
    pub fn current(&self) -> Digest {
        self.clone().finish()
    }

    /// The digest of everything fed.
    pub fn finish(self) -> Digest {
        Digest(format!("sha256:{}", hex::encode(self.0.finalize())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digest() {
        assert_eq!(
            Digest::of(b"").as_str(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "sha256",
            "sha256:",
            "md5:d41d8cd98f00b204e9800998ecf8427e",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85",
            "sha256:../../../../etc/passwd0000000000000000000000000000000000000000",
        ] {
            let err = Digest::parse(bad).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument, "{bad}");
        }
    }

    #[test]
    fn current_does_not_consume() {
        let mut d = Digester::new();
        d.update(b"ab");
        assert_eq!(d.current(), Digest::of(b"ab"));
        d.update(b"c");
        assert_eq!(d.finish(), Digest::of(b"abc"));
    }
}
