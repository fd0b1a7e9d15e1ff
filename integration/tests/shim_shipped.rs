//! The shim as shipped (`scripts/build-shim.sh`: static, non-PIE, `shim` profile, hot code
//! ordered) runs containers through berthd like the debug build the other tests use.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use berth_integration::{CmdOutput, Daemon, bin, import_test_image, unique};

/// `<target>/shim/berth-shim`, which scripts/test.sh builds before the tests.
fn shipped_shim() -> PathBuf {
    let target = bin("berthd")
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/berthd")
        .to_path_buf();
    let shim = target.join("shim").join("berth-shim");
    assert!(
        shim.exists(),
        "{} is missing: build it with scripts/build-shim.sh (scripts/test.sh does)",
        shim.display()
    );
    shim
}

/// A directory holding berthd and the shipped shim side by side (hard links where possible).
fn bin_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("berth-shipped-")
        .tempdir()
        .unwrap();
    for (from, name) in [(bin("berthd"), "berthd"), (shipped_shim(), "berth-shim")] {
        let to = dir.path().join(name);
        if std::fs::hard_link(&from, &to).is_err() {
            std::fs::copy(&from, &to).unwrap();
        }
    }
    dir
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

#[test]
fn the_shipped_shim_is_static_and_not_position_independent() {
    let elf = std::fs::read(shipped_shim()).unwrap();
    assert_eq!(&elf[..4], b"\x7fELF");
    assert_eq!(elf[4], 2, "ELFCLASS64");
    const ET_EXEC: u16 = 2;
    assert_eq!(u16_at(&elf, 16), ET_EXEC, "e_type: a PIE would be ET_DYN");
    let (phoff, phentsize, phnum) = (
        u64_at(&elf, 32) as usize,
        u16_at(&elf, 54) as usize,
        u16_at(&elf, 56) as usize,
    );
    const PT_INTERP: u32 = 3;
    const PT_DYNAMIC: u32 = 2;
    for i in 0..phnum {
        let at = phoff + i * phentsize;
        let kind = u32::from_le_bytes(elf[at..at + 4].try_into().unwrap());
        assert_ne!(kind, PT_INTERP, "program header {i} names a dynamic loader");
        assert_ne!(kind, PT_DYNAMIC, "program header {i} is a dynamic section");
    }
}

#[test]
fn the_shipped_shim_runs_containers() {
    let bins = bin_dir();
    let ns = unique("shipped");
    let (d, image, _dir) =
        import_test_image(Daemon::start_binary(bins.path().join("berthd"), &[]), &ns);
    let ctr = |args: &[&str]| -> CmdOutput {
        let mut all = vec!["-n", ns.as_str()];
        all.extend_from_slice(args);
        d.ctr(&all)
    };

    let out = ctr(&[
        "run",
        "--rm",
        &image.name,
        &unique("fg"),
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(out.output.status.code(), Some(3), "{}", out.stderr());
    assert_eq!(out.stdout(), "out\n");
    assert!(out.stderr().contains("err\n"), "{}", out.stderr());

    let id = unique("bg");
    ctr(&["run", "-d", &image.name, &id, "sleep", "1000"]).ok();
    let pid = ctr(&["tasks", "ls"])
        .ok()
        .lines()
        .find(|l| l.starts_with(&id))
        .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        .expect("task listed");
    // The container's init is the shim's child, and the shim is the shipped binary.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let ppid = stat
        .rsplit(')')
        .next()
        .and_then(|rest| rest.split_whitespace().nth(1))
        .unwrap();
    let exe = std::fs::read_link(format!("/proc/{ppid}/exe")).unwrap();
    assert_eq!(exe, bins.path().join("berth-shim"));

    let exec = ctr(&[
        "tasks",
        "exec",
        "--exec-id",
        "e1",
        &id,
        "sh",
        "-c",
        "exit 5",
    ]);
    assert_eq!(exec.output.status.code(), Some(5), "{}", exec.stderr());
    ctr(&["tasks", "pause", &id]).ok();
    ctr(&["tasks", "resume", &id]).ok();
    let metrics = ctr(&["tasks", "metrics", &id]).ok();
    assert!(metrics.contains("memory.usage_in_bytes"), "{metrics}");
    ctr(&["tasks", "kill", "-s", "SIGKILL", &id]).ok();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while ctr(&["tasks", "ls"])
        .ok()
        .lines()
        .any(|l| l.starts_with(&id) && l.contains("RUNNING"))
    {
        assert!(std::time::Instant::now() < deadline, "{id} still running");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    ctr(&["tasks", "rm", &id]).ok();
    ctr(&["containers", "rm", &id]).ok();
    // The shim exits with its task.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::fs::read_link(format!("/proc/{ppid}/exe")).ok() == Some(exe.clone()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the shim outlived its task"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
