//! Registry authentication: parsing `WWW-Authenticate` challenges (RFC 7235) and the token
//! cache of the Docker token flow.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// One challenge of a `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// The scheme, lower-cased: `basic`, `bearer`.
    pub scheme: String,
    /// The auth parameters, keys lower-cased: `realm`, `service`, `scope`, `error`.
    pub params: BTreeMap<String, String>,
}

impl Challenge {
    /// A parameter's value.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params.get(key).map(String::as_str)
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn skip_ws(&mut self) {
        while self.i < self.s.len() && matches!(self.s[self.i], b' ' | b'\t') {
            self.i += 1;
        }
    }

    fn skip_ws_commas(&mut self) {
        while self.i < self.s.len() && matches!(self.s[self.i], b' ' | b'\t' | b',') {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn token(&mut self) -> Option<String> {
        let start = self.i;
        while self.i < self.s.len() && is_tchar(self.s[self.i]) {
            self.i += 1;
        }
        (self.i > start).then(|| String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }

    fn quoted(&mut self) -> String {
        // At the opening quote.
        self.i += 1;
        let mut out = Vec::new();
        while let Some(b) = self.peek() {
            self.i += 1;
            match b {
                b'"' => break,
                b'\\' => {
                    if let Some(next) = self.peek() {
                        out.push(next);
                        self.i += 1;
                    }
                }
                _ => out.push(b),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// Parses every challenge of a `WWW-Authenticate` header value, e.g.
/// `Bearer realm="https://auth.example/token",service="registry",scope="repository:a:pull"`.
/// Malformed parts are skipped.
pub fn parse_challenges(header: &str) -> Vec<Challenge> {
    let mut c = Cursor {
        s: header.as_bytes(),
        i: 0,
    };
    let mut out = Vec::new();
    let mut pending_scheme: Option<String> = None;
    loop {
        let scheme = match pending_scheme.take() {
            Some(s) => s,
            None => {
                c.skip_ws_commas();
                match c.token() {
                    Some(t) => t,
                    None => {
                        if c.peek().is_none() {
                            break;
                        }
                        // Not a token: skip the byte and resynchronise.
                        c.i += 1;
                        continue;
                    }
                }
            }
        };
        let mut params = BTreeMap::new();
        loop {
            c.skip_ws_commas();
            let Some(key) = c.token() else { break };
            c.skip_ws();
            if c.peek() != Some(b'=') {
                // A new challenge's scheme.
                pending_scheme = Some(key);
                break;
            }
            c.i += 1;
            c.skip_ws();
            let value = match c.peek() {
                Some(b'"') => c.quoted(),
                // A token68 (`Basic abc==`) has '=' padding: it is not a parameter.
                Some(b'=') | Some(b',') | None if params.is_empty() => {
                    while c.peek() == Some(b'=') {
                        c.i += 1;
                    }
                    continue;
                }
                _ => c.token().unwrap_or_default(),
            };
            params.insert(key.to_ascii_lowercase(), value);
        }
        out.push(Challenge {
            scheme: scheme.to_ascii_lowercase(),
            params,
        });
        if pending_scheme.is_none() && c.peek().is_none() {
            break;
        }
    }
    out
}

/// Bearer tokens by (host, credentials, scopes), until they expire.
#[derive(Default)]
pub struct TokenCache {
    tokens: Mutex<HashMap<String, (String, Instant)>>,
}

impl TokenCache {
    /// A cached token that is still good for at least a few seconds.
    pub fn get(&self, key: &str) -> Option<String> {
        let tokens = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
        tokens
            .get(key)
            .filter(|(_, expires)| *expires > Instant::now() + Duration::from_secs(5))
            .map(|(t, _)| t.clone())
    }

    /// Caches `token` for `lifetime`.
    pub fn put(&self, key: String, token: String, lifetime: Duration) {
        let mut tokens = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        tokens.retain(|_, (_, expires)| *expires > now);
        tokens.insert(key, (token, now + lifetime));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn bearer() {
        let c = parse_challenges(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        );
        assert_eq!(
            c,
            vec![Challenge {
                scheme: "bearer".into(),
                params: params(&[
                    ("realm", "https://auth.docker.io/token"),
                    ("service", "registry.docker.io"),
                    ("scope", "repository:library/busybox:pull"),
                ]),
            }]
        );
    }

    #[test]
    fn basic_and_odd_spacing() {
        let c = parse_challenges(r#"Basic realm="berth-test""#);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "basic");
        assert_eq!(c[0].param("realm"), Some("berth-test"));

        let c = parse_challenges(
            r#"  BASIC  Realm = "a \"quoted\" realm" , charset=UTF-8, Bearer realm=tok,error="insufficient_scope""#,
        );
        assert_eq!(c.len(), 2, "{c:?}");
        assert_eq!(c[0].scheme, "basic");
        assert_eq!(c[0].param("realm"), Some("a \"quoted\" realm"));
        assert_eq!(c[0].param("charset"), Some("UTF-8"));
        assert_eq!(c[1].scheme, "bearer");
        assert_eq!(c[1].param("realm"), Some("tok"));
        assert_eq!(c[1].param("error"), Some("insufficient_scope"));
    }

    #[test]
    fn schemes_without_params_and_token68() {
        let c = parse_challenges("Negotiate, Basic abc123==, Bearer realm=\"r\"");
        let schemes: Vec<&str> = c.iter().map(|c| c.scheme.as_str()).collect();
        assert_eq!(schemes, ["negotiate", "basic", "bearer"], "{c:?}");
        assert_eq!(c[2].param("realm"), Some("r"));
        assert!(parse_challenges("").is_empty());
        assert!(parse_challenges(" , ").is_empty());
    }

    #[test]
    fn token_cache_expires() {
        let cache = TokenCache::default();
        cache.put("k".into(), "t".into(), Duration::from_secs(60));
        assert_eq!(cache.get("k").as_deref(), Some("t"));
        cache.put("short".into(), "t".into(), Duration::from_secs(1));
        assert_eq!(cache.get("short"), None, "too close to expiry to use");
        assert_eq!(cache.get("other"), None);
    }
}
