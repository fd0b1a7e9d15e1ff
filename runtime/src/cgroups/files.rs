//! Reading and writing cgroup files, with errors that name the file, the value and the errno
//! ("write 100 to /sys/fs/cgroup/pids/berth/x/pids.max: EINVAL: Invalid argument").

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use berth_core::{Error, ErrorKind, Result};
use nix::errno::Errno;

/// The error class for an errno from a cgroup file: callers branch on these (NotFound after the
/// container is gone, PermissionDenied without privileges, InvalidArgument for a refused value).
pub(crate) fn kind_of(err: &io::Error) -> ErrorKind {
    match err.raw_os_error() {
        Some(libc::EPERM | libc::EACCES) => ErrorKind::PermissionDenied,
        Some(libc::ENOENT | libc::ENODEV) => ErrorKind::NotFound,
        Some(libc::EINVAL | libc::ERANGE) => ErrorKind::InvalidArgument,
        Some(libc::EEXIST) => ErrorKind::AlreadyExists,
        Some(libc::EBUSY) => ErrorKind::Unavailable,
        Some(libc::EOPNOTSUPP) => ErrorKind::NotImplemented,
        _ => match err.kind() {
            io::ErrorKind::NotFound => ErrorKind::NotFound,
            io::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
            _ => ErrorKind::Internal,
        },
    }
}

/// An error for a failed step `what`, carrying the errno by name (nix's `Errno` displays as
/// "EINVAL: Invalid argument", which is what people grep for).
pub(crate) fn os_error(what: impl Into<String>, err: io::Error) -> Error {
    let kind = kind_of(&err);
    match err.raw_os_error() {
        Some(code) => Error::new(kind, what).with_source(Errno::from_raw(code)),
        None => Error::new(kind, what).with_source(err),
    }
}

/// The same, for an errno from a raw syscall.
pub(crate) fn errno_error(what: impl Into<String>, errno: Errno) -> Error {
    os_error(what, io::Error::from_raw_os_error(errno as i32))
}

/// Whether `err` carries errno `code`.
pub(crate) fn is_errno(err: &io::Error, code: i32) -> bool {
    err.raw_os_error() == Some(code)
}

fn shown(value: &str) -> String {
    if value.is_empty() || value.contains(char::is_whitespace) {
        format!("{value:?}")
    } else {
        value.to_string()
    }
}

/// Writes `value` to the cgroup file at `path` in one write(2): cgroupfs parses each write on
/// its own, so a value must never be split. The file is never created (a missing file means a
/// missing controller or kernel feature, and must say so).
pub(crate) fn write(path: &Path, value: &str) -> Result<()> {
    write_raw(path, value)
        .map_err(|e| os_error(format!("write {} to {}", shown(value), path.display()), e))
}

/// [`write`] returning the bare `io::Error`, for callers that react to a particular errno.
///
/// Opened with O_APPEND: cgroupfs ignores the file offset (each write is one command), and on a
/// plain file (a stand-in tree in tests) every write is kept in order instead of overwriting
/// the start of the file, so the whole sequence of writes can be checked.
pub(crate) fn write_raw(path: &Path, value: &str) -> io::Result<()> {
    let mut file = OpenOptions::new().append(true).open(path)?;
    write_once(&mut file, value)
}

/// Writes each `(file name, value)` under `dir` in order, one write(2) per value as [`write`]
/// does, opening each file once: the device rules are a few dozen writes to two files.
pub(crate) fn write_sequence(dir: &Path, writes: &[(&str, String)]) -> Result<()> {
    let mut open: Vec<(&str, fs::File)> = Vec::new();
    for (name, value) in writes {
        let path = dir.join(name);
        let fail = |e| os_error(format!("write {} to {}", shown(value), path.display()), e);
        let file = match open.iter().position(|(n, _)| n == name) {
            Some(i) => &mut open[i].1,
            None => {
                let file = OpenOptions::new().append(true).open(&path).map_err(fail)?;
                open.push((name, file));
                let last = open.len() - 1;
                &mut open[last].1
            }
        };
        write_once(file, value).map_err(fail)?;
    }
    Ok(())
}

fn write_once(file: &mut fs::File, value: &str) -> io::Result<()> {
    let written = file.write(value.as_bytes())?;
    if written != value.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("short write: {written} of {} bytes", value.len()),
        ));
    }
    Ok(())
}

/// Reads a whole cgroup file.
pub(crate) fn read(path: &Path) -> Result<String> {
    crate::procfs::read(path).map_err(|e| os_error(format!("read {}", path.display()), e))
}

/// Reads a cgroup file that may legitimately be absent (older kernel, controller not enabled).
pub(crate) fn read_optional(path: &Path) -> Result<Option<String>> {
    match crate::procfs::read(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(os_error(format!("read {}", path.display()), e)),
    }
}

/// Parses a single-value file: a number, or "max" (v2's "no limit") as `u64::MAX`.
pub(crate) fn parse_u64(path: &Path, content: &str) -> Result<u64> {
    let s = content.trim();
    if s == "max" {
        return Ok(u64::MAX);
    }
    // v1 reports "no limit" as a large positive number, but a few files (e.g. cfs_quota_us)
    // say -1: both read as "no limit" here.
    if s == "-1" {
        return Ok(u64::MAX);
    }
    s.parse::<u64>().map_err(|_| {
        Error::internal(format!(
            "parse {}: expected a number, got {s:?}",
            path.display()
        ))
    })
}

/// Reads a single-value file as a number ("max" → `u64::MAX`); a missing file reads as `None`.
pub(crate) fn read_u64_optional(path: &Path) -> Result<Option<u64>> {
    match read_optional(path)? {
        Some(s) => parse_u64(path, &s).map(Some),
        None => Ok(None),
    }
}

/// Reads a single-value file as a number; a missing file reads as 0 (stats of a kernel or
/// controller that does not have it).
pub(crate) fn read_u64_or_zero(path: &Path) -> Result<u64> {
    Ok(read_u64_optional(path)?.unwrap_or(0))
}

/// Parses a flat-keyed file ("key value" per line, e.g. memory.stat, cpu.stat, cgroup.events).
/// Lines that are not "key number" are skipped rather than failing the whole read: new kernels
/// add keys, and a stats read must not break on them.
pub(crate) fn parse_flat_keyed(content: &str) -> BTreeMap<String, u64> {
    let mut map = BTreeMap::new();
    for line in content.lines() {
        let mut parts = line.split_whitespace();
        if let (Some(key), Some(value), None) = (parts.next(), parts.next(), parts.next()) {
            if let Ok(value) = value.parse::<u64>() {
                map.insert(key.to_string(), value);
            } else if value == "max" {
                map.insert(key.to_string(), u64::MAX);
            }
        }
    }
    map
}

/// Reads a flat-keyed file; a missing file reads as empty.
pub(crate) fn read_flat_keyed(path: &Path) -> Result<BTreeMap<String, u64>> {
    Ok(read_optional(path)?
        .map(|s| parse_flat_keyed(&s))
        .unwrap_or_default())
}

/// Parses `cgroup.procs`: one pid per line.
pub(crate) fn parse_pids(path: &Path, content: &str) -> Result<Vec<i32>> {
    content
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.parse::<i32>()
                .map_err(|_| Error::internal(format!("parse {}: bad pid {l:?}", path.display())))
        })
        .collect()
}

/// Creates `dir` and any missing parents.
pub(crate) fn create_dir_all(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| os_error(format!("create cgroup {}", dir.display()), e))
}

/// Removes a cgroup directory and every cgroup below it (a container with its own cgroup
/// namespace may have made some), deepest first, retrying for a short while on EBUSY: the last
/// processes of a killed container leave their cgroup asynchronously. A missing directory is
/// success, so destroy is idempotent.
pub(crate) fn remove_cgroup_dir(dir: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut delay = Duration::from_millis(1);
    loop {
        match remove_tree(dir) {
            Ok(()) => return Ok(()),
            Err(e)
                if (is_errno(&e, libc::EBUSY) || is_errno(&e, libc::ENOTEMPTY))
                    && Instant::now() < deadline =>
            {
                thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_millis(50));
            }
            Err(e) => return Err(os_error(format!("remove cgroup {}", dir.display()), e)),
        }
    }
}

fn remove_tree(dir: &Path) -> io::Result<()> {
    // Nearly always a leaf: one rmdir. The kernel refuses one with cgroups below it (EBUSY),
    // and only then are they looked for, a listing of every control file of the directory.
    match fs::remove_dir(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) if !is_errno(&e, libc::EBUSY) && !is_errno(&e, libc::ENOTEMPTY) => return Err(e),
        Err(_) => {}
    }
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            remove_tree(&entry.path())?;
        }
    }
    match fs::remove_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Polls `done` until it returns true or `timeout` passes, sleeping briefly in between; `tick`
/// runs every 25 polls (to re-issue a request the kernel may have dropped).
pub(crate) fn poll_until(
    timeout: Duration,
    mut done: impl FnMut() -> Result<bool>,
    mut tick: impl FnMut() -> Result<()>,
) -> Result<bool> {
    let deadline = Instant::now() + timeout;
    let mut polls: u32 = 0;
    loop {
        if done()? {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        polls = polls.saturating_add(1);
        if polls.is_multiple_of(25) {
            tick()?;
        }
        let delay = if polls < 10 { 1 } else { 10 };
        thread::sleep(Duration::from_millis(delay));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn flat_keyed_skips_odd_lines() {
        let map = parse_flat_keyed("a 1\nb max\nc x\nd 1 2\n\ne 5\n");
        assert_eq!(map.get("a"), Some(&1));
        assert_eq!(map.get("b"), Some(&u64::MAX));
        assert_eq!(map.get("c"), None);
        assert_eq!(map.get("d"), None);
        assert_eq!(map.get("e"), Some(&5));
    }

    #[test]
    fn writes_never_create_and_keep_their_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("io.max");
        assert_eq!(
            write(&path, "8:0 rbps=1").unwrap_err().kind(),
            ErrorKind::NotFound
        );
        assert!(!path.exists());
        fs::write(&path, "").unwrap();
        write(&path, "8:0 rbps=1").unwrap();
        write(&path, "8:16 wbps=2").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "8:0 rbps=18:16 wbps=2");
    }

    #[test]
    fn write_error_names_file_value_and_errno() {
        let err = write(Path::new("/nonexistent-berth/pids.max"), "100").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert_eq!(
            err.to_string(),
            "write 100 to /nonexistent-berth/pids.max: ENOENT: No such file or directory"
        );
        let err = write(Path::new("/nonexistent-berth/x"), "8:0 1").unwrap_err();
        assert!(err.to_string().starts_with("write \"8:0 1\" to"), "{err}");
    }
}
