//! Validation of namespaces and object identifiers, following containerd's rule:
//! `^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$`, at most 76 characters.

use std::fmt;

use crate::{Error, Result};

/// The longest identifier containerd accepts.
pub const MAX_IDENTIFIER_LEN: usize = 76;

/// Checks `s` against containerd's identifier rule; `what` names it in the error.
pub fn validate(what: &str, s: &str) -> Result<()> {
    if s.is_empty() {
        return Err(Error::invalid_argument(format!("{what} must not be empty")));
    }
    if s.len() > MAX_IDENTIFIER_LEN {
        return Err(Error::invalid_argument(format!(
            "{what} {s:?} greater than maximum length ({MAX_IDENTIFIER_LEN} characters)"
        )));
    }
    let mut prev_sep = true;
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            prev_sep = false;
        } else if matches!(c, '.' | '_' | '-') && !prev_sep {
            prev_sep = true;
        } else {
            return Err(Error::invalid_argument(format!(
                "{what} {s:?} must match [A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*"
            )));
        }
    }
    if prev_sep {
        return Err(Error::invalid_argument(format!(
            "{what} {s:?} must not end with a separator"
        )));
    }
    Ok(())
}

/// A validated namespace name.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Namespace(String);

impl Namespace {
    /// The namespace clients use when they name none.
    pub const DEFAULT: &'static str = "default";

    /// Validates `name` as a namespace.
    pub fn new(name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        validate("namespace", &name)?;
        Ok(Self(name))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_containerd_style_names() {
        for ok in ["default", "k8s.io", "a", "a-b_c.d", "A1", &"x".repeat(76)] {
            validate("namespace", ok).unwrap();
        }
    }

    #[test]
    fn rejects_bad_names() {
        for bad in [
            "",
            "-a",
            "a-",
            "a..b",
            "a/b",
            "../x",
            "a b",
            "ü",
            &"x".repeat(77),
        ] {
            assert!(Namespace::new(bad).is_err(), "{bad:?} accepted");
        }
    }
}
