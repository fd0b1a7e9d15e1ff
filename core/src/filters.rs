//! containerd's filter language, used by every List RPC.
//!
//! A request carries `repeated string filters`; an object matches when **any** filter matches
//! (OR). A filter is a comma-separated list of selectors that must **all** match (AND). A selector
//! is `fieldpath`, `fieldpath==value`, `fieldpath!=value` or `fieldpath~=regex`; a bare fieldpath
//! tests presence. Field path components are separated by `.` and may be quoted
//! (`labels."containerd.io/gc.root"`); values may be quoted too. An empty filter string matches
//! everything, which is what `ctr` sends as `[""]`.

use regex::Regex;

use crate::{Error, Result};

/// Something that can be filtered: answers the value at a field path, or `None` when absent.
pub trait Adaptor {
    /// The value at `path` (e.g. `["labels", "k"]`), `None` when the field is absent.
    fn field(&self, path: &[String]) -> Option<String>;
}

#[derive(Debug, Clone)]
enum Op {
    Present,
    Equal(String),
    NotEqual(String),
    Matches(Regex),
}

#[derive(Debug, Clone)]
struct Selector {
    path: Vec<String>,
    op: Op,
}

impl Selector {
    fn matches(&self, obj: &dyn Adaptor) -> bool {
        let value = obj.field(&self.path);
        match (&self.op, value) {
            (Op::Present, v) => v.is_some(),
            (Op::Equal(want), Some(v)) => &v == want,
            (Op::NotEqual(want), Some(v)) => &v != want,
            (Op::NotEqual(_), None) => true,
            (Op::Matches(re), Some(v)) => re.is_match(&v),
            (_, None) => false,
        }
    }
}

/// A parsed list of filters (OR of ANDs). An empty list matches everything.
#[derive(Debug, Clone, Default)]
pub struct Filters(Vec<Vec<Selector>>);

impl Filters {
    /// Parses each filter string; an empty string is a filter matching everything.
    pub fn parse<S: AsRef<str>>(filters: &[S]) -> Result<Self> {
        let mut out = Vec::with_capacity(filters.len());
        for f in filters {
            out.push(parse_one(f.as_ref())?);
        }
        Ok(Self(out))
    }

    /// The filter that matches everything.
    pub fn all() -> Self {
        Self::default()
    }

    /// Whether `obj` matches.
    pub fn matches(&self, obj: &dyn Adaptor) -> bool {
        self.0.is_empty()
            || self
                .0
                .iter()
                .any(|and| and.iter().all(|sel| sel.matches(obj)))
    }
}

struct Scanner<'a> {
    src: &'a str,
    pos: usize,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<char> {
        self.src[self.pos..].chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn skip_space(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.bump();
        }
    }

    fn error(&self, what: &str) -> Error {
        Error::invalid_argument(format!(
            "parse error in filter {:?} at offset {}: {what}",
            self.src, self.pos
        ))
    }

    fn quoted(&mut self) -> Result<String> {
        let Some(quote) = self.bump() else {
            return Err(self.error("expected a quote"));
        };
        let mut out = String::new();
        loop {
            match self.bump() {
                None => return Err(self.error("unterminated quoted string")),
                Some(c) if c == quote => return Ok(out),
                Some('\\') => match self.bump() {
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some(c) => out.push(c),
                    None => return Err(self.error("unterminated escape")),
                },
                Some(c) => out.push(c),
            }
        }
    }

    fn field(&mut self) -> Result<String> {
        match self.peek() {
            Some('"') | Some('\'') => self.quoted(),
            _ => {
                let start = self.pos;
                while self
                    .peek()
                    .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '-' || c == '/')
                {
                    self.bump();
                }
                if start == self.pos {
                    return Err(self.error("expected a field name"));
                }
                Ok(self.src[start..self.pos].to_owned())
            }
        }
    }

    fn value(&mut self) -> Result<String> {
        self.skip_space();
        match self.peek() {
            Some('"') | Some('\'') => self.quoted(),
            _ => {
                let start = self.pos;
                while self.peek().is_some_and(|c| c != ',') {
                    self.bump();
                }
                let v = self.src[start..self.pos].trim();
                if v.is_empty() {
                    return Err(self.error("expected a value"));
                }
                Ok(v.to_owned())
            }
        }
    }
}

fn parse_one(src: &str) -> Result<Vec<Selector>> {
    let mut s = Scanner { src, pos: 0 };
    let mut selectors = Vec::new();
    s.skip_space();
    if s.peek().is_none() {
        return Ok(selectors);
    }
    loop {
        s.skip_space();
        let mut path = vec![s.field()?];
        while s.peek() == Some('.') {
            s.bump();
            path.push(s.field()?);
        }
        s.skip_space();
        let rest = &src[s.pos..];
        let op = if rest.starts_with("==") {
            s.pos += 2;
            Op::Equal(s.value()?)
        } else if rest.starts_with("!=") {
            s.pos += 2;
            Op::NotEqual(s.value()?)
        } else if rest.starts_with("~=") {
            s.pos += 2;
            let pattern = s.value()?;
            let re = Regex::new(&pattern)
                .map_err(|e| s.error(&format!("bad regular expression {pattern:?}: {e}")))?;
            Op::Matches(re)
        } else {
            Op::Present
        };
        selectors.push(Selector { path, op });
        s.skip_space();
        match s.bump() {
            None => return Ok(selectors),
            Some(',') => continue,
            Some(c) => return Err(s.error(&format!("unexpected {c:?}"))),
        }
    }
}

/// Looks up `path` in a `labels` map, for adaptors: `["labels", key]` → the value.
pub fn label_field<'a>(
    labels: impl IntoIterator<Item = (&'a String, &'a String)>,
    path: &[String],
) -> Option<String> {
    match path {
        [_, key] => labels
            .into_iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.clone()),
        // containerd joins the rest of an unquoted path with '.' (labels.a.b → key "a.b").
        [_, rest @ ..] if !rest.is_empty() => {
            let key = rest.join(".");
            labels
                .into_iter()
                .find(|(k, _)| **k == key)
                .map(|(_, v)| v.clone())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    struct Obj {
        name: String,
        labels: BTreeMap<String, String>,
    }

    impl Adaptor for Obj {
        fn field(&self, path: &[String]) -> Option<String> {
            match path.first().map(String::as_str) {
                Some("name") if path.len() == 1 => Some(self.name.clone()),
                Some("labels") => label_field(&self.labels, path),
                _ => None,
            }
        }
    }

    fn obj() -> Obj {
        Obj {
            name: "web".into(),
            labels: BTreeMap::from([
                ("containerd.io/gc.root".into(), "x".into()),
                ("tier".into(), "front".into()),
            ]),
        }
    }

    fn m(filters: &[&str]) -> bool {
        Filters::parse(filters).unwrap().matches(&obj())
    }

    #[test]
    fn empty_matches_all() {
        assert!(m(&[]));
        assert!(m(&[""]));
    }

    #[test]
    fn operators() {
        assert!(m(&["name==web"]));
        assert!(!m(&["name==db"]));
        assert!(m(&["name!=db"]));
        assert!(m(&["name~=^w.b$"]));
        assert!(!m(&["name~=^db"]));
        assert!(m(&[r#"labels."containerd.io/gc.root""#]));
        assert!(m(&[r#"labels."containerd.io/gc.root"==x"#]));
        assert!(!m(&["labels.missing"]));
        assert!(m(&["labels.tier==front"]));
        assert!(m(&["labels.tier==\"front\""]));
    }

    #[test]
    fn and_or() {
        assert!(m(&["name==web,labels.tier==front"]));
        assert!(!m(&["name==web,labels.tier==back"]));
        assert!(m(&["name==db", "labels.tier==front"]));
    }

    #[test]
    fn parse_errors() {
        for bad in ["name==", "==x", "labels.\"unterminated", "name~=(", "a b"] {
            let err = Filters::parse(&[bad]).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument, "{bad}");
        }
    }
}
