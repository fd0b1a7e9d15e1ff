//! berthctl's docker-like container commands against a real berthd: `run` (attached, detached,
//! interactive, with a tty), `create`/`start`, `exec`, `ps`, `stop`, `kill`, `rm`, `inspect`,
//! `top`, `stats`, `pause`/`unpause`, `wait`, and the Docker default spec seen from inside the
//! container.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use berth_integration::testimage::TestImage;
use berth_integration::{CmdOutput, Daemon};
use serde_json::Value;

static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

fn unique(tag: &str) -> String {
    format!(
        "{tag}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    )
}

/// A daemon with the busybox test image imported in namespace `ns`.
struct Env {
    d: Daemon,
    ns: String,
    image: String,
    _dir: tempfile::TempDir,
}

impl Env {
    fn new(tag: &str) -> Self {
        let d = Daemon::start();
        let ns = unique(tag);
        let image = TestImage::one_layer();
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("image.tar");
        image.write_oci_archive(&archive);
        d.berthctl(&["-n", &ns, "import", archive.to_str().unwrap()])
            .ok();
        Env {
            d,
            ns,
            image: image.name.clone(),
            _dir: dir,
        }
    }

    fn ctl(&self, args: &[&str]) -> CmdOutput {
        let mut all = vec!["-n", self.ns.as_str()];
        all.extend_from_slice(args);
        self.d.berthctl(&all)
    }

    fn ctl_stdin(&self, args: &[&str], stdin: &[u8]) -> CmdOutput {
        let mut all = vec!["-n", self.ns.as_str()];
        all.extend_from_slice(args);
        self.d.berthctl_stdin(&all, stdin)
    }

    /// `run --rm IMAGE args...` with extra flags before the image; returns the output.
    fn run(&self, flags: &[&str], args: &[&str]) -> CmdOutput {
        let mut all = vec!["run", "--rm"];
        all.extend_from_slice(flags);
        all.push(&self.image);
        all.extend_from_slice(args);
        self.ctl(&all)
    }

    /// `run --rm … sh -c SCRIPT`, asserting success; returns stdout.
    fn sh(&self, flags: &[&str], script: &str) -> String {
        self.run(flags, &["sh", "-c", script]).ok()
    }

    fn inspect(&self, id: &str) -> Value {
        let out = self.ctl(&["inspect", id]).ok();
        let v: Value = serde_json::from_str(&out).unwrap();
        v[0].clone()
    }

    fn state(&self, id: &str) -> String {
        self.inspect(id)["task"]["status"]
            .as_str()
            .unwrap_or("none")
            .to_owned()
    }

    fn wait_state(&self, id: &str, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let got = self.state(id);
            if got == want {
                return;
            }
            assert!(Instant::now() < deadline, "{id}: {got}, want {want}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn run_prints_output_and_returns_the_exit_code() {
    let e = Env::new("exit");
    let out = e.run(&[], &["sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert_eq!(out.output.status.code(), Some(3), "{}", out.stderr());
    assert_eq!(out.stdout(), "out\n");
    assert_eq!(out.stderr(), "err\n");
    assert_eq!(e.sh(&[], "echo pid $$"), "pid 1\n");
    // The image's Cmd (/bin/sh) runs when no command is given; with stdin it reads a script.
    let out = e.ctl_stdin(
        &["run", "--rm", "-i", &e.image],
        b"echo from stdin; exit 4\n",
    );
    assert_eq!(out.output.status.code(), Some(4), "{}", out.stderr());
    assert_eq!(out.stdout(), "from stdin\n");
}
