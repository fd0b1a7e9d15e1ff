//! A real OCI registry on loopback for pull and push tests: Debian's `docker-registry`
//! (distribution 2.8) on a free 127.0.0.1 port, with its own temporary storage and optional
//! htpasswd auth, plus `skopeo` runners to push to and inspect it.
//!
//! The registry is killed and its storage deleted on drop, also when the test panics. A missing
//! `docker-registry`, `skopeo` or `htpasswd` is a setup error (run scripts/setup.sh), never a skip.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::CmdOutput;

/// How many times a start is retried when another process took the port first.
const PORT_ATTEMPTS: usize = 5;

/// Every manifest type, so that [`Registry::get`] of a manifest is not refused as unacceptable.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.docker.distribution.manifest.v2+json";

/// A running `docker-registry` on 127.0.0.1, torn down on drop.
pub struct Registry {
    dir: TempDir,
    child: Option<Child>,
    port: u16,
    auth: Option<(String, String)>,
}

impl Registry {
    /// Starts a registry without auth and waits until `GET /v2/` answers.
    pub fn start() -> Self {
        Self::launch(None)
    }

    /// Starts a registry that requires HTTP basic auth as `user`/`password` (htpasswd, bcrypt)
    /// and waits until `GET /v2/` answers (401 counts as up).
    pub fn start_with_auth(user: &str, password: &str) -> Self {
        Self::launch(Some((user.to_owned(), password.to_owned())))
    }

    fn launch(auth: Option<(String, String)>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("berth-registry-")
            .tempdir()
            .expect("temp dir");
        if let Some((user, password)) = &auth {
            let line = htpasswd_line(user, password);
            let path = dir.path().join("htpasswd");
            std::fs::write(&path, line).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        }
        let mut registry = Self {
            dir,
            child: None,
            port: 0,
            auth,
        };
        for attempt in 1..=PORT_ATTEMPTS {
            registry.port = free_port();
            registry.spawn();
            match registry.wait_ready() {
                Ok(()) => return registry,
                // Between probing the port and the registry binding it, someone else may take
                // it: a fresh port fixes that, anything else is a real failure.
                Err(log) if log.contains("address already in use") && attempt < PORT_ATTEMPTS => {
                    registry.kill();
                }
                Err(log) => panic!("docker-registry did not start:\n{log}"),
            }
        }
        unreachable!("the last attempt panics or returns")
    }

    fn config(&self) -> String {
        // JSON strings are valid YAML double-quoted scalars: paths need no escaping rules here.
        // Manifests whose layers list URLs (foreign layers) are refused unless URLs are
        // allowed: any http(s) URL is, for the foreign-layer tests.
        let quote = |p: &Path| serde_json::Value::from(p.display().to_string()).to_string();
        let mut config = format!(
            "version: 0.1\n\
             log:\n  level: info\n  formatter: text\n\
             storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n  \
             maintenance:\n    uploadpurging:\n      enabled: false\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: berth-test-{port}\n\
             validation:\n  manifests:\n    urls:\n      allow:\n        - ^https?://\n",
            storage = quote(&self.storage()),
            port = self.port,
        );
        if self.auth.is_some() {
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
                quote(&self.dir.path().join("htpasswd"))
            ));
        }
        config
    }

    fn spawn(&mut self) {
        let config_path = self.dir.path().join("config.yml");
        std::fs::write(&config_path, self.config())
            .unwrap_or_else(|e| panic!("write {}: {e}", config_path.display()));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(self.log_path())
            .expect("open registry log");
        let child = Command::new(registry_path())
            .arg("serve")
            .arg(&config_path)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("spawn docker-registry");
        self.child = Some(child);
    }

    /// Waits until `GET /v2/` answers 200 (or 401 with auth); on an early exit or timeout
    /// returns the log.
    fn wait_ready(&mut self) -> std::result::Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let want = if self.auth.is_some() { 401 } else { 200 };
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(format!("exited with {status}:\n{}", self.log()));
            }
            // Only after our process logged its bind can the answer be its own, not that of
            // whoever else holds the port.
            let listening = self.log().contains("listening on");
            if let Some(Ok((status, _))) = listening.then(|| self.try_get("/v2/")) {
                if status == want {
                    return Ok(());
                }
                return Err(format!(
                    "GET /v2/ answered {status}, want {want}:\n{}",
                    self.log()
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "GET /v2/ did not answer within 20s:\n{}",
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `127.0.0.1:PORT`, the registry part of a reference.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.host())
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT/<repo>:<tag>`.
    pub fn reference(&self, repo: &str, tag: &str) -> String {
        format!("{}/{repo}:{tag}", self.host())
    }

    /// The user and password when auth is on.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.auth.as_ref().map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// `user:password` when auth is on (for `ctr --user`, `skopeo --creds`).
    pub fn creds_arg(&self) -> Option<String> {
        self.auth.as_ref().map(|(u, p)| format!("{u}:{p}"))
    }

    /// The registry's storage root (deleted on drop).
    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("registry.log")
    }

    /// The registry's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// An unauthenticated `GET path` (e.g. `/v2/`, `/v2/<repo>/manifests/<digest>`), accepting
    /// every manifest type: the status code and body.
    pub fn get(&self, path: &str) -> (u16, String) {
        self.try_get(path)
            .unwrap_or_else(|e| panic!("GET {}{path}: {e}\n{}", self.url(), self.log()))
    }

    fn try_get(&self, path: &str) -> std::io::Result<(u16, String)> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {}\r\nAccept: {MANIFEST_ACCEPT}\r\n\
             Connection: close\r\n\r\n",
            self.host()
        )?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        let status = response
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("not an HTTP response: {response:?}"),
                )
            })?;
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        Ok((status, body))
    }

    /// Copies the image `ref_name` of the OCI layout `layout` to `repo:tag` here with skopeo
    /// (every platform of an index, digests preserved, credentials when auth is on). Returns
    /// the reference pushed.
    pub fn push_oci_layout(&self, layout: &Path, ref_name: &str, repo: &str, tag: &str) -> String {
        let reference = self.reference(repo, tag);
        let source = format!("oci:{}:{ref_name}", layout.display());
        let dest = format!("docker://{reference}");
        let mut args = vec![
            "--insecure-policy",
            "copy",
            "--quiet",
            "--all",
            "--preserve-digests",
            "--dest-tls-verify=false",
        ];
        let creds = self.creds_arg();
        if let Some(creds) = &creds {
            args.extend(["--dest-creds", creds]);
        }
        args.extend([source.as_str(), dest.as_str()]);
        let out = skopeo(&args);
        assert!(
            out.output.status.success(),
            "push to {reference} failed:\n{}\nregistry log:\n{}",
            out.stderr(),
            self.log()
        );
        reference
    }

    /// `skopeo inspect [--raw] --tls-verify=false docker://127.0.0.1:PORT/<repo_tag>` with this
    /// registry's credentials; the caller checks success.
    pub fn inspect(&self, repo_tag: &str, raw: bool) -> CmdOutput {
        let target = format!("docker://{}/{repo_tag}", self.host());
        let mut args = vec!["inspect", "--tls-verify=false"];
        if raw {
            args.push("--raw");
        }
        let creds = self.creds_arg();
        if let Some(creds) = &creds {
            args.extend(["--creds", creds]);
        }
        args.push(&target);
        skopeo(&args)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `skopeo` with `args`.
pub fn skopeo(args: &[&str]) -> CmdOutput {
    let mut cmd = Command::new(tool_path(
        "skopeo",
        "it installs Debian's skopeo to push test images",
    ));
    cmd.args(args);
    CmdOutput::run_public(&mut cmd)
}

/// The `docker-registry` binary (Debian's distribution 2.8).
pub fn registry_path() -> PathBuf {
    tool_path(
        "docker-registry",
        "it installs Debian's docker-registry for the registry tests",
    )
}

fn tool_path(name: &str, why: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/local/bin", "/usr/sbin", "/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("`{name}` is not installed: run scripts/setup.sh ({why})");
}

/// One bcrypt htpasswd line (distribution accepts bcrypt only).
fn htpasswd_line(user: &str, password: &str) -> String {
    let mut cmd = Command::new(tool_path(
        "htpasswd",
        "it installs apache2-utils for the registry auth tests",
    ));
    cmd.args(["-B", "-b", "-n", user, password]);
    let out = CmdOutput::run_public(&mut cmd);
    let line = out.ok();
    line.trim_end().to_owned() + "\n"
}

/// A port that was free on 127.0.0.1 a moment ago.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}
