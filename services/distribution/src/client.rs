//! A small registry client for the OCI distribution API over reqwest: manifests, blobs,
//! uploads and cross-repository mounts, with Basic and Bearer (token) authentication.
//!
//! HTTPS is the default; plain HTTP is used only for loopback hosts and hosts the daemon was
//! told are insecure. Every registry error becomes a berth [`Error`] whose kind follows the
//! HTTP status and whose message carries the registry's own error text.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use berth_core::diff::Descriptor;
use berth_core::reference::Reference;
use berth_core::transfer::Credentials;
use berth_core::{Digest, Error, ErrorKind, Result};
use bytes::{Bytes, BytesMut};
use futures::StreamExt as _;
use reqwest::header::{
    ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, HeaderName, LOCATION,
    RANGE, WWW_AUTHENTICATE,
};
use reqwest::{RequestBuilder, Response, StatusCode};
use serde::Deserialize;

use crate::auth::{Challenge, TokenCache, parse_challenges};
use crate::oci::{MANIFEST_ACCEPT, MAX_MANIFEST_SIZE, sniff_media_type};

/// The most of an error body that is read for its message.
const MAX_ERROR_BODY: u64 = 64 << 10;
/// The most of a token response that is read.
const MAX_TOKEN_BODY: u64 = 1 << 20;
/// How long a token without `expires_in` is good for (the Docker token spec's default).
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
/// The header in which registries tell a manifest's digest.
const DOCKER_CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");

/// How a host wants to be authenticated, learned from its first challenge.
#[derive(Debug, Clone)]
enum Scheme {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

/// The connection pool, the insecure-host list and the auth caches, shared by every transfer.
pub struct RegistryClient {
    http: reqwest::Client,
    insecure: Vec<String>,
    schemes: Mutex<HashMap<String, Scheme>>,
    tokens: TokenCache,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient")
            .field("insecure", &self.insecure)
            .finish_non_exhaustive()
    }
}

/// Whether `host` (`name`, `name:port`, `[v6]:port`) is a loopback address or `localhost`.
pub fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else if host.matches(':').count() > 1 {
        // A bare IPv6 address.
        host
    } else {
        host.split(':').next().unwrap_or(host)
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl RegistryClient {
    /// A client that speaks plain HTTP to loopback hosts and to the hosts in `insecure`
    /// (`name` or `name:port`), HTTPS to everything else.
    pub fn new(insecure: Vec<String>) -> Result<Self> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| Error::internal("building the HTTP client").with_source(e))?;
        Ok(Self {
            http,
            insecure,
            schemes: Mutex::new(HashMap::new()),
            tokens: TokenCache::default(),
        })
    }

    /// `http` or `https` for `host`.
    pub fn url_scheme(&self, host: &str) -> &'static str {
        let name = host.split(':').next().unwrap_or(host);
        if is_loopback_host(host) || self.insecure.iter().any(|h| h == host || h == name) {
            "http"
        } else {
            "https"
        }
    }

    /// A handle on `reference`'s repository, authenticating with `credentials`; `push` asks
    /// for push access too.
    pub fn repository(
        self: &Arc<Self>,
        reference: &Reference,
        credentials: Option<Credentials>,
        push: bool,
    ) -> Repository {
        let host = reference.registry_host_for_api().to_owned();
        let base = format!("{}://{host}", self.url_scheme(&host));
        let creds_key = credentials
            .as_ref()
            .map(|c| Digest::of(format!("{}\0{}", c.username, c.secret).as_bytes()).to_string())
            .unwrap_or_default();
        Repository {
            client: Arc::clone(self),
            host,
            base,
            name: reference.repository.clone(),
            credentials,
            creds_key,
            actions: if push { "pull,push" } else { "pull" },
        }
    }

    fn scheme(&self, host: &str) -> Option<Scheme> {
        self.schemes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(host)
            .cloned()
    }

    fn set_scheme(&self, host: &str, scheme: Scheme) {
        self.schemes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(host.to_owned(), scheme);
    }
}

/// The answer of a manifest resolve: the root descriptor, and its bytes when they had to be
/// fetched to learn the descriptor.
#[derive(Debug)]
pub struct Resolved {
    /// The root.
    pub descriptor: Descriptor,
    /// The manifest bytes, when a GET was needed.
    pub body: Option<Bytes>,
}

/// What a mount request achieved.
#[derive(Debug)]
pub enum MountOutcome {
    /// The blob is now in the repository.
    Mounted,
    /// The registry did not mount but opened an upload session at this location.
    Upload(String),
}

/// One repository of one registry, with the credentials of one transfer.
#[derive(Clone)]
pub struct Repository {
    client: Arc<RegistryClient>,
    host: String,
    base: String,
    name: String,
    credentials: Option<Credentials>,
    creds_key: String,
    actions: &'static str,
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository")
            .field("base", &self.base)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct RegistryErrors {
    #[serde(default)]
    errors: Vec<RegistryError>,
}

#[derive(Deserialize)]
struct RegistryError {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    detail: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: String,
    #[serde(default)]
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

fn header_str(resp: &Response, name: HeaderName) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// The media type of a `Content-Type` value, without parameters.
fn media_type_of(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// Whether a response's content type names nothing a manifest could be.
fn is_generic_type(mt: &str) -> bool {
    mt.is_empty()
        || matches!(
            mt,
            "application/json" | "text/plain" | "application/octet-stream"
        )
}

/// Reads at most `limit` bytes of a body: longer bodies fail with `too_large`, transport
/// errors with Unavailable.
async fn read_capped(
    resp: Response,
    limit: u64,
    what: &str,
    too_large: impl Fn() -> Error,
) -> Result<Bytes> {
    if header_str(&resp, CONTENT_LENGTH)
        .and_then(|l| l.parse::<u64>().ok())
        .is_some_and(|l| l > limit)
    {
        return Err(too_large());
    }
    let mut buf = BytesMut::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            Error::unavailable(format!("{what}: reading the response")).with_source(e)
        })?;
        if (buf.len() + chunk.len()) as u64 > limit {
            return Err(too_large());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// The registry's error text for an error response: `": CODE: message; …"`, or the start of
/// a non-JSON body, or nothing.
async fn registry_message(resp: Response) -> String {
    let Ok(body) = read_capped(resp, MAX_ERROR_BODY, "", || Error::internal("")).await else {
        return String::new();
    };
    if let Ok(parsed) = serde_json::from_slice::<RegistryErrors>(&body)
        && !parsed.errors.is_empty()
    {
        let parts: Vec<String> = parsed
            .errors
            .iter()
            .map(|e| {
                let mut s = match (e.code.is_empty(), e.message.is_empty()) {
                    (false, false) => format!("{}: {}", e.code, e.message),
                    (false, true) => e.code.clone(),
                    _ => e.message.clone(),
                };
                if let Some(d) = &e.detail {
                    match d {
                        serde_json::Value::Null => {}
                        serde_json::Value::String(d) if !d.is_empty() => {
                            s.push_str(&format!(" ({d})"));
                        }
                        serde_json::Value::String(_) => {}
                        other => s.push_str(&format!(" ({other})")),
                    }
                }
                s
            })
            .collect();
        return format!(": {}", parts.join("; "));
    }
    let text = String::from_utf8_lossy(&body);
    let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.is_empty() {
        String::new()
    } else {
        format!(": {}", line.chars().take(256).collect::<String>())
    }
}

/// A layer URL from a descriptor's `urls`: only `http` and `https` are fetched, as the image
/// spec and containerd allow.
fn layer_url(url: &str, what: &str) -> Result<reqwest::Url> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| Error::invalid_argument(format!("{what}: invalid URL {url:?}: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(Error::invalid_argument(format!(
            "{what}: URL {url:?} is not http or https"
        )));
    }
    Ok(parsed)
}

/// Refuses a 206 answer whose range does not start at `offset`: only a range starting where
/// the ingest is can be appended.
fn check_range(resp: Response, offset: u64, what: &str) -> Result<Response> {
    if resp.status() == StatusCode::PARTIAL_CONTENT {
        let start = header_str(&resp, CONTENT_RANGE).and_then(|r| {
            r.strip_prefix("bytes ")?
                .split('-')
                .next()?
                .parse::<u64>()
                .ok()
        });
        if start != Some(offset) {
            return Err(Error::data_loss(format!(
                "{what}: asked for bytes from {offset}, the server sent a range starting at \
                 {start:?}"
            )));
        }
    }
    Ok(resp)
}

fn digest_param(url: &str, digest: &Digest) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}digest=sha256%3A{}", digest.hex())
}

impl Repository {
    /// The repository path (`library/busybox`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The API host (`registry-1.docker.io`, `127.0.0.1:5000`).
    pub fn host(&self) -> &str {
        &self.host
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v2/{}/{path}", self.base, self.name)
    }

    fn scopes(&self) -> Vec<String> {
        vec![format!("repository:{}:{}", self.name, self.actions)]
    }

    /// Resolves an upload `Location` against the registry; the flag says whether it is on the
    /// registry itself (and may get our credentials).
    fn location_url(&self, location: &str) -> (String, bool) {
        if location.starts_with("http://") || location.starts_with("https://") {
            let own = location.starts_with(&format!("{}/", self.base));
            (location.to_owned(), own)
        } else if location.starts_with('/') {
            (format!("{}{location}", self.base), true)
        } else {
            (format!("{}/{location}", self.base), true)
        }
    }

    fn basic_header(&self) -> Option<String> {
        use base64::Engine as _;
        self.credentials.as_ref().map(|c| {
            let raw = format!("{}:{}", c.username, c.secret);
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(raw)
            )
        })
    }

    fn token_key(&self, scopes: &[String]) -> String {
        format!("{}\n{}\n{}", self.host, self.creds_key, scopes.join(" "))
    }

    /// The `Authorization` value for a request needing `scopes`, fetching a token when the
    /// host uses tokens and none is cached.
    async fn authorization(&self, scopes: &[String]) -> Result<Option<String>> {
        match self.client.scheme(&self.host) {
            None => Ok(None),
            Some(Scheme::Basic) => Ok(self.basic_header()),
            Some(Scheme::Bearer { realm, service }) => {
                let key = self.token_key(scopes);
                let token = match self.client.tokens.get(&key) {
                    Some(t) => t,
                    None => self.fetch_token(&realm, service.as_deref(), scopes).await?,
                };
                Ok(Some(format!("Bearer {token}")))
            }
        }
    }

    fn auth_failed(&self, what: &str, msg: &str) -> Error {
        if self.credentials.is_some() {
            Error::new(
                ErrorKind::PermissionDenied,
                format!("{what}: authentication failed for {}{msg}", self.host),
            )
        } else {
            Error::new(
                ErrorKind::PermissionDenied,
                format!("{what}: authentication required for {}{msg}", self.host),
            )
        }
    }

    /// Asks the token service at `realm` for a token covering `scopes` and caches it.
    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scopes: &[String],
    ) -> Result<String> {
        let what = format!("fetching a token for {} from {realm}", self.host);
        let mut url = reqwest::Url::parse(realm)
            .map_err(|e| Error::invalid_argument(format!("{what}: invalid realm: {e}")))?;
        let http = &self.client.http;
        let request = match &self.credentials {
            // An identity (refresh) token goes through the OAuth2 form, as Docker sends it.
            Some(c) if c.username.is_empty() && !c.secret.is_empty() => {
                let mut form = reqwest::Url::parse("http://form.invalid/")
                    .map_err(|e| Error::internal(format!("{what}: form URL: {e}")))?;
                {
                    let mut q = form.query_pairs_mut();
                    q.append_pair("grant_type", "refresh_token");
                    q.append_pair("refresh_token", &c.secret);
                    q.append_pair("client_id", "berth");
                    if let Some(s) = service {
                        q.append_pair("service", s);
                    }
                    for s in scopes {
                        q.append_pair("scope", s);
                    }
                }
                http.post(url)
                    .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(form.query().unwrap_or_default().to_owned())
            }
            creds => {
                {
                    let mut q = url.query_pairs_mut();
                    if let Some(s) = service {
                        q.append_pair("service", s);
                    }
                    for s in scopes {
                        q.append_pair("scope", s);
                    }
                }
                let req = http.get(url);
                match creds {
                    Some(c) => req.basic_auth(&c.username, Some(&c.secret)),
                    None => req,
                }
            }
        };
        let resp = request
            .send()
            .await
            .map_err(|e| Error::unavailable(format!("{what}: request failed")).with_source(e))?;
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            let msg = registry_message(resp).await;
            return Err(self.auth_failed(&what, &msg));
        }
        if !status.is_success() {
            return Err(self.status_error(&what, resp).await);
        }
        let body = read_capped(resp, MAX_TOKEN_BODY, &what, || {
            Error::failed_precondition(format!("{what}: token response too large"))
        })
        .await?;
        let parsed: TokenResponse = serde_json::from_slice(&body)
            .map_err(|e| Error::invalid_argument(format!("{what}: invalid token response: {e}")))?;
        let token = if parsed.token.is_empty() {
            parsed.access_token
        } else {
            parsed.token
        };
        if token.is_empty() {
            return Err(Error::invalid_argument(format!(
                "{what}: the token response holds no token"
            )));
        }
        let lifetime = parsed
            .expires_in
            .map_or(DEFAULT_TOKEN_LIFETIME, Duration::from_secs)
            .max(DEFAULT_TOKEN_LIFETIME);
        self.client
            .tokens
            .put(self.token_key(scopes), token.clone(), lifetime);
        Ok(token)
    }

    /// Sends a request built by `build` (called again for the retry), authenticating on a
    /// 401 challenge. Returns the final response whatever its status; a transport failure is
    /// Unavailable.
    async fn send(
        &self,
        what: &str,
        scopes: &[String],
        with_auth: bool,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<Response> {
        let mut retried = false;
        loop {
            let mut req = build();
            if with_auth && let Some(auth) = self.authorization(scopes).await? {
                req = req.header(AUTHORIZATION, auth);
            }
            let resp = req.send().await.map_err(|e| {
                Error::unavailable(format!("{what}: cannot reach {}", self.host)).with_source(e)
            })?;
            if resp.status() != StatusCode::UNAUTHORIZED || retried || !with_auth {
                return Ok(resp);
            }
            retried = true;
            let challenges: Vec<Challenge> = resp
                .headers()
                .get_all(WWW_AUTHENTICATE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(parse_challenges)
                .collect();
            if let Some(bearer) = challenges.iter().find(|c| c.scheme == "bearer") {
                let Some(realm) = bearer.param("realm") else {
                    return Err(Error::invalid_argument(format!(
                        "{what}: {} sent a bearer challenge without a realm",
                        self.host
                    )));
                };
                let service = bearer.param("service").map(str::to_owned);
                self.client.set_scheme(
                    &self.host,
                    Scheme::Bearer {
                        realm: realm.to_owned(),
                        service: service.clone(),
                    },
                );
                // A fresh token even if one is cached: the cached one was just refused.
                self.fetch_token(realm, service.as_deref(), scopes).await?;
            } else if challenges.iter().any(|c| c.scheme == "basic") {
                if self.credentials.is_none() {
                    let msg = registry_message(resp).await;
                    return Err(self.auth_failed(what, &msg));
                }
                if matches!(self.client.scheme(&self.host), Some(Scheme::Basic)) {
                    // Our credentials were sent and refused.
                    return Ok(resp);
                }
                self.client.set_scheme(&self.host, Scheme::Basic);
            } else {
                return Ok(resp);
            }
        }
    }

    /// Maps an unsuccessful response to an error naming `what`.
    async fn status_error(&self, what: &str, resp: Response) -> Error {
        let status = resp.status();
        let msg = registry_message(resp).await;
        let host = &self.host;
        match status.as_u16() {
            401 => self.auth_failed(what, &msg),
            403 => Error::new(
                ErrorKind::PermissionDenied,
                format!("{what}: access denied by {host}{msg}"),
            ),
            404 => Error::not_found(format!("{what}: not found{msg}")),
            429 => Error::unavailable(format!("{what}: too many requests to {host}{msg}")),
            500..=599 => Error::unavailable(format!("{what}: {host} answered {status}{msg}")),
            400 => Error::invalid_argument(format!("{what}: {host} refused the request{msg}")),
            405 => {
                Error::not_implemented(format!("{what}: {host} does not allow this operation{msg}"))
            }
            416 => Error::out_of_range(format!("{what}: {host} answered {status}{msg}")),
            _ => Error::new(
                ErrorKind::Unknown,
                format!("{what}: unexpected answer {status} from {host}{msg}"),
            ),
        }
    }

    async fn check(&self, what: &str, resp: Response) -> Result<Response> {
        if resp.status().is_success() {
            Ok(resp)
        } else {
            Err(self.status_error(what, resp).await)
        }
    }

    fn too_large(what: &str) -> impl Fn() -> Error + '_ {
        move || {
            Error::failed_precondition(format!(
                "{what}: larger than the {} MiB limit for manifests",
                MAX_MANIFEST_SIZE >> 20
            ))
        }
    }

    /// Resolves a tag or digest to the root descriptor: a HEAD, or a GET when the HEAD does
    /// not tell the digest, size and type. `what` names the reference in errors.
    pub async fn resolve(&self, object: &str, what: &str) -> Result<Resolved> {
        let url = self.url(&format!("manifests/{object}"));
        let http = &self.client.http;
        let scopes = self.scopes();
        let pinned = Digest::parse(object).ok();
        let resp = self
            .send(what, &scopes, true, || {
                http.head(&url).header(ACCEPT, MANIFEST_ACCEPT)
            })
            .await?;
        match resp.status().as_u16() {
            200 => {
                let media_type = header_str(&resp, CONTENT_TYPE)
                    .map(|c| media_type_of(&c))
                    .unwrap_or_default();
                let digest = pinned.clone().or_else(|| {
                    header_str(&resp, DOCKER_CONTENT_DIGEST).and_then(|d| Digest::parse(&d).ok())
                });
                let size = header_str(&resp, CONTENT_LENGTH).and_then(|l| l.parse::<u64>().ok());
                if let (Some(digest), Some(size)) = (digest, size)
                    && !is_generic_type(&media_type)
                    && size > 0
                {
                    return Ok(Resolved {
                        descriptor: Descriptor::new(media_type, digest, size),
                        body: None,
                    });
                }
            }
            401 | 403 | 429 | 500..=599 => {
                return Err(self.status_error(what, resp).await);
            }
            // Some registries do not implement HEAD, and a HEAD's error has no body to
            // explain it: the GET below tells all.
            _ => {}
        }
        let resp = self
            .send(what, &scopes, true, || {
                http.get(&url).header(ACCEPT, MANIFEST_ACCEPT)
            })
            .await?;
        let resp = self.check(what, resp).await?;
        let content_type = header_str(&resp, CONTENT_TYPE)
            .map(|c| media_type_of(&c))
            .unwrap_or_default();
        let header_digest = header_str(&resp, DOCKER_CONTENT_DIGEST);
        let body = read_capped(resp, MAX_MANIFEST_SIZE, what, Self::too_large(what)).await?;
        let digest = Digest::of(&body);
        if let Some(pinned) = &pinned
            && *pinned != digest
        {
            return Err(Error::data_loss(format!(
                "{what}: manifest digest mismatch: the registry sent {digest}"
            )));
        }
        if let Some(h) = header_digest.and_then(|h| Digest::parse(&h).ok())
            && h != digest
        {
            return Err(Error::data_loss(format!(
                "{what}: manifest digest mismatch: the registry says {h} but sent {digest}"
            )));
        }
        let media_type = if is_generic_type(&content_type) {
            sniff_media_type(&body).unwrap_or(content_type)
        } else {
            content_type
        };
        Ok(Resolved {
            descriptor: Descriptor::new(media_type, digest, body.len() as u64),
            body: Some(body),
        })
    }

    /// Fetches a manifest or index by digest, verifying size and digest (at most 4 MiB).
    pub async fn fetch_manifest(&self, desc: &Descriptor, what: &str) -> Result<Bytes> {
        if desc.size > MAX_MANIFEST_SIZE {
            return Err(Self::too_large(what)());
        }
        let url = self.url(&format!("manifests/{}", desc.digest));
        let accept = format!("{}, {MANIFEST_ACCEPT}", desc.media_type);
        let http = &self.client.http;
        let resp = self
            .send(what, &self.scopes(), true, || {
                http.get(&url).header(ACCEPT, &accept)
            })
            .await?;
        let resp = self.check(what, resp).await?;
        let body = read_capped(resp, MAX_MANIFEST_SIZE, what, Self::too_large(what)).await?;
        verify(&body, desc, what)?;
        Ok(body)
    }

    /// Starts a blob download at `offset` (a `Range` request when non-zero). The response is
    /// 206 when the registry honoured the range, 200 when it sends the whole blob.
    pub async fn get_blob(&self, digest: &Digest, offset: u64, what: &str) -> Result<Response> {
        let url = self.url(&format!("blobs/{digest}"));
        let http = &self.client.http;
        let resp = self
            .send(what, &self.scopes(), true, || {
                let req = http.get(&url);
                if offset > 0 {
                    req.header(RANGE, format!("bytes={offset}-"))
                } else {
                    req
                }
            })
            .await?;
        let resp = self.check(what, resp).await?;
        check_range(resp, offset, what)
    }

    /// Starts downloading a blob from one of the `urls` its descriptor lists (a foreign or
    /// non-distributable layer), at `offset` as [`Self::get_blob`] does. Only `http` and
    /// `https` URLs are tried, and never with this repository's credentials: the URL may be
    /// anyone's. The caller checks the digest, as for any blob.
    pub async fn get_url(&self, url: &str, offset: u64, what: &str) -> Result<Response> {
        let mut req = self.client.http.get(layer_url(url, what)?);
        if offset > 0 {
            req = req.header(RANGE, format!("bytes={offset}-"));
        }
        let resp = req.send().await.map_err(|e| {
            Error::unavailable(format!("{what}: cannot reach {url}")).with_source(e)
        })?;
        let status = resp.status();
        if !status.is_success() {
            let msg = registry_message(resp).await;
            let text = format!("{what}: {url} answered {status}{msg}");
            return Err(match status.as_u16() {
                404 => Error::not_found(text),
                401 | 403 => Error::new(ErrorKind::PermissionDenied, text),
                _ => Error::unavailable(text),
            });
        }
        check_range(resp, offset, what)
    }

    /// Whether the repository has blob `digest`.
    pub async fn blob_exists(&self, digest: &Digest, what: &str) -> Result<bool> {
        let url = self.url(&format!("blobs/{digest}"));
        let http = &self.client.http;
        let resp = self
            .send(what, &self.scopes(), true, || http.head(&url))
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.status_error(what, resp).await),
        }
    }

    /// Asks the registry to mount `digest` from repository `from` of the same registry.
    pub async fn mount_blob(
        &self,
        digest: &Digest,
        from: &str,
        what: &str,
    ) -> Result<MountOutcome> {
        let url = format!(
            "{}?mount=sha256%3A{}&from={}",
            self.url("blobs/uploads/"),
            digest.hex(),
            from
        );
        let mut scopes = self.scopes();
        scopes.push(format!("repository:{from}:pull"));
        let http = &self.client.http;
        let resp = self
            .send(what, &scopes, true, || {
                http.post(&url).header(CONTENT_LENGTH, "0")
            })
            .await?;
        match resp.status() {
            StatusCode::CREATED => Ok(MountOutcome::Mounted),
            StatusCode::ACCEPTED => match header_str(&resp, LOCATION) {
                Some(loc) => Ok(MountOutcome::Upload(loc)),
                None => Err(Error::invalid_argument(format!(
                    "{what}: {} opened an upload without a Location",
                    self.host
                ))),
            },
            _ => Err(self.status_error(what, resp).await),
        }
    }

    /// Opens an upload session; returns its location.
    pub async fn start_upload(&self, what: &str) -> Result<String> {
        let url = self.url("blobs/uploads/");
        let http = &self.client.http;
        let resp = self
            .send(what, &self.scopes(), true, || {
                http.post(&url).header(CONTENT_LENGTH, "0")
            })
            .await?;
        let resp = self.check(what, resp).await?;
        header_str(&resp, LOCATION).ok_or_else(|| {
            Error::invalid_argument(format!(
                "{what}: {} opened an upload without a Location",
                self.host
            ))
        })
    }

    /// Sends the whole blob in one PUT to an upload `location`, closing it as `digest`. The
    /// body cannot be replayed, so the request carries the auth the session was opened with.
    pub async fn put_upload(
        &self,
        location: &str,
        digest: &Digest,
        size: u64,
        body: reqwest::Body,
        what: &str,
    ) -> Result<()> {
        let (url, own) = self.location_url(location);
        let url = digest_param(&url, digest);
        let mut req = self
            .client
            .http
            .put(&url)
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_LENGTH, size.to_string())
            .body(body);
        if own && let Some(auth) = self.authorization(&self.scopes()).await? {
            req = req.header(AUTHORIZATION, auth);
        }
        let resp = req.send().await.map_err(|e| {
            Error::unavailable(format!("{what}: uploading to {}", self.host)).with_source(e)
        })?;
        self.check(what, resp).await.map(drop)
    }

    /// Appends `data` at `start` to an upload; returns the next location.
    pub async fn patch_upload(
        &self,
        location: &str,
        start: u64,
        data: Bytes,
        what: &str,
    ) -> Result<String> {
        let (url, own) = self.location_url(location);
        let end = start + data.len() as u64 - 1;
        let http = &self.client.http;
        let resp = self
            .send(what, &self.scopes(), own, || {
                http.patch(&url)
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .header(CONTENT_RANGE, format!("{start}-{end}"))
                    .header(CONTENT_LENGTH, data.len().to_string())
                    .body(data.clone())
            })
            .await?;
        let resp = self.check(what, resp).await?;
        Ok(header_str(&resp, LOCATION).unwrap_or_else(|| location.to_owned()))
    }

    /// Closes an upload whose bytes were all PATCHed, as `digest`.
    pub async fn finish_upload(&self, location: &str, digest: &Digest, what: &str) -> Result<()> {
        let (url, own) = self.location_url(location);
        let url = digest_param(&url, digest);
        let http = &self.client.http;
        let resp = self
            .send(what, &self.scopes(), own, || {
                http.put(&url).header(CONTENT_LENGTH, "0")
            })
            .await?;
        self.check(what, resp).await.map(drop)
    }

    /// Puts a manifest or index (exact bytes, its media type) under `object` (tag or digest).
    pub async fn put_manifest(
        &self,
        object: &str,
        media_type: &str,
        data: Bytes,
        what: &str,
    ) -> Result<()> {
        let url = self.url(&format!("manifests/{object}"));
        let http = &self.client.http;
        let resp = self
            .send(what, &self.scopes(), true, || {
                http.put(&url)
                    .header(CONTENT_TYPE, media_type)
                    .body(data.clone())
            })
            .await?;
        self.check(what, resp).await.map(drop)
    }
}

/// Checks that `body` is what `desc` describes.
pub fn verify(body: &[u8], desc: &Descriptor, what: &str) -> Result<()> {
    let digest = Digest::of(body);
    if digest != desc.digest {
        return Err(Error::data_loss(format!(
            "{what}: digest mismatch: expected {}, the registry sent {digest}",
            desc.digest
        )));
    }
    if body.len() as u64 != desc.size {
        return Err(Error::data_loss(format!(
            "{what}: size mismatch: expected {} bytes, the registry sent {}",
            desc.size,
            body.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_insecure_hosts_use_http() {
        for host in [
            "localhost",
            "localhost:5000",
            "127.0.0.1",
            "127.0.0.1:5000",
            "127.1.2.3:80",
            "[::1]:5000",
            "::1",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "example.com",
            "10.0.0.1:5000",
            "[fe80::1]:5000",
            "localhost.example",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
        let client = RegistryClient::new(vec!["reg.lan:5000".into(), "plain.lan".into()]).unwrap();
        assert_eq!(client.url_scheme("127.0.0.1:5000"), "http");
        assert_eq!(client.url_scheme("reg.lan:5000"), "http");
        assert_eq!(
            client.url_scheme("reg.lan"),
            "https",
            "only the listed port"
        );
        assert_eq!(
            client.url_scheme("plain.lan:443"),
            "http",
            "a bare name covers every port"
        );
        assert_eq!(client.url_scheme("registry-1.docker.io"), "https");
    }

    #[test]
    fn only_http_layer_urls_are_fetched() {
        for ok in ["http://cdn.example/l", "https://cdn.example:8443/a/b?x=1"] {
            assert_eq!(layer_url(ok, "l").unwrap().as_str(), ok);
        }
        for bad in [
            "ftp://cdn.example/l",
            "file:///etc/passwd",
            "cdn.example/l",
            "",
        ] {
            let err = layer_url(bad, "layer x").unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{bad}");
            assert!(err.to_string().starts_with("layer x: "), "{err}");
        }
    }

    #[test]
    fn upload_locations() {
        let client = Arc::new(RegistryClient::new(vec![]).unwrap());
        let r = Reference::parse("127.0.0.1:5000/a/b:t").unwrap();
        let repo = client.repository(&r, None, true);
        assert_eq!(
            repo.location_url("/v2/a/b/blobs/uploads/x?_state=1"),
            (
                "http://127.0.0.1:5000/v2/a/b/blobs/uploads/x?_state=1".into(),
                true
            )
        );
        assert_eq!(
            repo.location_url("http://127.0.0.1:5000/v2/a/b/blobs/uploads/x"),
            ("http://127.0.0.1:5000/v2/a/b/blobs/uploads/x".into(), true)
        );
        assert_eq!(
            repo.location_url("https://storage.example/upload/x"),
            ("https://storage.example/upload/x".into(), false),
            "credentials never go to another host"
        );
        let d = Digest::of(b"x");
        assert_eq!(
            digest_param("http://h/u?_state=1", &d),
            format!("http://h/u?_state=1&digest=sha256%3A{}", d.hex())
        );
        assert_eq!(
            digest_param("http://h/u", &d),
            format!("http://h/u?digest=sha256%3A{}", d.hex())
        );
    }
}
