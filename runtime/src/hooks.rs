//! OCI hooks: each runs with the container's state JSON on stdin, in the listed order.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_core::{Error, ErrorKind, Result};
use oci_spec::runtime::Hook;

/// The lifecycle points hooks attach to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Deprecated `prestart`: after namespaces exist, before pivot_root (runtime namespace).
    Prestart,
    /// `createRuntime`: same moment as prestart.
    CreateRuntime,
    /// `createContainer`: in the container's namespaces, before pivot_root.
    CreateContainer,
    /// `startContainer`: in the container, just before the program is exec'd.
    StartContainer,
    /// `poststart`: after start returns.
    Poststart,
    /// `poststop`: when the container is deleted.
    Poststop,
}

impl Phase {
    /// The spec's name of the phase.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Prestart => "prestart",
            Phase::CreateRuntime => "createRuntime",
            Phase::CreateContainer => "createContainer",
            Phase::StartContainer => "startContainer",
            Phase::Poststart => "poststart",
            Phase::Poststop => "poststop",
        }
    }

    /// The hooks of this phase in `hooks`.
    pub fn of(self, hooks: Option<&oci_spec::runtime::Hooks>) -> Vec<Hook> {
        let Some(h) = hooks else {
            return Vec::new();
        };
        #[allow(deprecated)]
        let list = match self {
            Phase::Prestart => h.prestart(),
            Phase::CreateRuntime => h.create_runtime(),
            Phase::CreateContainer => h.create_container(),
            Phase::StartContainer => h.start_container(),
            Phase::Poststart => h.poststart(),
            Phase::Poststop => h.poststop(),
        };
        list.clone().unwrap_or_default()
    }
}

/// Runs every hook of `phase` in order; the first failure stops the run and is returned.
pub fn run(phase: Phase, hooks: &[Hook], state_json: &str) -> Result<()> {
    for (i, hook) in hooks.iter().enumerate() {
        run_one(hook, state_json).map_err(|e| {
            e.context(format!(
                "{} hook #{i} ({})",
                phase.name(),
                hook.path().display()
            ))
        })?;
    }
    Ok(())
}

fn run_one(hook: &Hook, state_json: &str) -> Result<()> {
    let mut cmd = Command::new(hook.path());
    let args = hook.args().clone().unwrap_or_default();
    if let Some((first, rest)) = args.split_first() {
        use std::os::unix::process::CommandExt;
        cmd.arg0(first).args(rest);
    }
    cmd.env_clear();
    for e in hook.env().iter().flatten() {
        if let Some((k, v)) = e.split_once('=') {
            cmd.env(k, v);
        }
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| Error::io("start the hook", e))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that exits without reading its stdin is fine (EPIPE).
        match stdin.write_all(state_json.as_bytes()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            Err(e) => return Err(Error::io("write the state to the hook", e)),
        }
    }
    let timeout = hook
        .timeout()
        .filter(|t| *t > 0)
        .map(|t| Duration::from_secs(t.unsigned_abs()));
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => return Err(Error::io("wait for the hook", e)),
        }
        if let Some(t) = timeout
            && start.elapsed() >= t
        {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::new(
                ErrorKind::DeadlineExceeded,
                format!("timed out after {}s", t.as_secs()),
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    if !status.success() {
        let mut stderr = String::new();
        if let Some(mut s) = child.stderr.take() {
            use std::io::Read;
            let _ = s.read_to_string(&mut stderr);
        }
        return Err(Error::new(
            ErrorKind::FailedPrecondition,
            format!("{status}: {}", stderr.trim()),
        ));
    }
    Ok(())
}
