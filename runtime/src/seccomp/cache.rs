//! A cache of compiled seccomp filters, so that containers with the same profile (Docker's
//! default one, above all) do not each pay libseccomp's compile (several ms on this machine).
//!
//! An entry is keyed by the SHA-256 of the profile's JSON, the architecture, the libseccomp
//! version, the kernel release (the flags depend on what the running kernel accepts) and this
//! format's version. A loaded filter decides what a container may do, so the cache is trusted
//! only when nobody but the caller can write it: the directory and the entry must be owned by
//! the effective user, must not be group- or world-writable, and must not be symlinks. An entry
//! also carries the digest of its program, so a torn or corrupted file is recompiled rather
//! than loaded. Entries are written to a temporary file and renamed into place.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use berth_core::{Error, Result};
use oci_spec::runtime::LinuxSeccomp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::SeccompProgram;

/// Bumped whenever the entry format or the compile's output for a given key changes.
const FORMAT: &str = "berth-seccomp-cache-v2";

/// Entries larger than this are not read (a compiled filter is at most 4096 × 8 bytes).
const MAX_ENTRY: u64 = 1 << 20;

#[derive(Serialize, Deserialize)]
struct Entry {
    format: String,
    key: String,
    flags: u32,
    notify: bool,
    warnings: Vec<String>,
    instructions: Vec<u64>,
    /// SHA-256 of the instructions, flags and notify bit, as `program_digest` computes it.
    digest: String,
}

/// Compiles `spec`, reusing the program cached under `dir` when there is a trustworthy one and
/// storing it there otherwise. A cache that cannot be used is skipped (logged at debug level):
/// the compile then runs as without a cache.
pub(super) fn compile_cached(spec: &LinuxSeccomp, dir: &Path) -> Result<SeccompProgram> {
    let key = match cache_key(spec) {
        Ok(k) => k,
        Err(e) => {
            tracing::debug!("seccomp cache: no key: {e}");
            return SeccompProgram::compile(spec);
        }
    };
    let path = dir.join(&key);
    match read_entry(dir, &path, &key) {
        Ok(Some(p)) => return Ok(p),
        Ok(None) => {}
        Err(e) => tracing::debug!("seccomp cache: {}: {e}", path.display()),
    }
    let program = SeccompProgram::compile(spec)?;
    if let Err(e) = write_entry(dir, &path, &key, &program) {
        tracing::debug!("seccomp cache: storing {}: {e}", path.display());
    }
    Ok(program)
}

fn cache_key(spec: &LinuxSeccomp) -> Result<String> {
    let json = serde_json::to_vec(spec)
        .map_err(|e| Error::internal("serialize the seccomp profile").with_source(e))?;
    let uname = nix::sys::utsname::uname().map_err(|e| Error::io("uname", e.into()))?;
    let mut h = Sha256::new();
    for part in [
        FORMAT.as_bytes(),
        std::env::consts::ARCH.as_bytes(),
        super::libseccomp_version().as_bytes(),
        uname.release().as_encoded_bytes(),
        &json,
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    Ok(hex::encode(h.finalize()))
}

fn program_digest(instructions: &[u64], flags: u32, notify: bool) -> String {
    let mut h = Sha256::new();
    for i in instructions {
        h.update(i.to_le_bytes());
    }
    h.update(flags.to_le_bytes());
    h.update([u8::from(notify)]);
    hex::encode(h.finalize())
}

/// Whether `meta` belongs to the effective user and only that user can write it.
fn private(meta: &std::fs::Metadata) -> bool {
    meta.uid() == nix::unistd::geteuid().as_raw() && meta.mode() & 0o022 == 0
}

fn check_dir(dir: &Path) -> Result<()> {
    let meta = std::fs::symlink_metadata(dir)
        .map_err(|e| Error::io(format!("stat {}", dir.display()), e))?;
    if !meta.is_dir() || !private(&meta) {
        return Err(Error::failed_precondition(format!(
            "{} is not a directory only its owner can write",
            dir.display()
        )));
    }
    Ok(())
}

fn read_entry(dir: &Path, path: &Path, key: &str) -> Result<Option<SeccompProgram>> {
    if std::fs::symlink_metadata(dir).is_err() {
        return Ok(None);
    }
    check_dir(dir)?;
    let mut file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("open", e)),
    };
    let meta = file.metadata().map_err(|e| Error::io("fstat", e))?;
    if !meta.is_file() || !private(&meta) || meta.len() > MAX_ENTRY {
        return Err(Error::failed_precondition(
            "not a regular file only its owner can write",
        ));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.read_to_end(&mut bytes)
        .map_err(|e| Error::io("read", e))?;
    let Ok(entry) = serde_json::from_slice::<Entry>(&bytes) else {
        // A torn write after a crash: recompile and replace it.
        return Ok(None);
    };
    let intact = entry.format == FORMAT
        && entry.key == key
        && entry.instructions.len() <= super::MAX_INSTRUCTIONS
        && entry.digest == program_digest(&entry.instructions, entry.flags, entry.notify);
    if !intact {
        return Ok(None);
    }
    Ok(Some(SeccompProgram {
        instructions: entry.instructions,
        flags: entry.flags,
        notify: entry.notify,
        warnings: entry.warnings,
    }))
}

fn write_entry(dir: &Path, path: &Path, key: &str, program: &SeccompProgram) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    check_dir(dir)?;
    let entry = Entry {
        format: FORMAT.to_owned(),
        key: key.to_owned(),
        flags: program.flags,
        notify: program.notify,
        warnings: program.warnings.clone(),
        instructions: program.instructions.clone(),
        digest: program_digest(&program.instructions, program.flags, program.notify),
    };
    let bytes = serde_json::to_vec(&entry)
        .map_err(|e| Error::internal("serialize a seccomp cache entry").with_source(e))?;
    let tmp: PathBuf = dir.join(format!(".{key}.{}.tmp", std::process::id()));
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)
        .and_then(|mut f: File| f.write_all(&bytes));
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io("write", e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn profile() -> LinuxSeccomp {
        super::super::parse_profile(
            br#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
                {"names":["mkdir","rmdir"],"action":"SCMP_ACT_ERRNO","errnoRet":1}]}"#,
        )
        .unwrap()
    }

    fn entries(dir: &Path) -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect()
    }

    #[test]
    fn a_cached_program_equals_a_fresh_compile() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cache");
        let fresh = SeccompProgram::compile(&profile()).unwrap();
        let first = compile_cached(&profile(), &dir).unwrap();
        assert_eq!(first, fresh);
        let files = entries(&dir);
        assert_eq!(
            files.len(),
            1,
            "one entry, no temporary file left: {files:?}"
        );
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        // The second call reads the entry: prove it by checking what read_entry returns.
        let key = cache_key(&profile()).unwrap();
        let cached = read_entry(&dir, &dir.join(&key), &key).unwrap();
        assert_eq!(cached.as_ref(), Some(&fresh));
        assert_eq!(compile_cached(&profile(), &dir).unwrap(), fresh);
    }

    #[test]
    fn a_tampered_or_torn_entry_is_recompiled() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cache");
        let fresh = compile_cached(&profile(), &dir).unwrap();
        let key = cache_key(&profile()).unwrap();
        let path = dir.join(&key);
        // Change one instruction but keep the JSON valid: the digest no longer matches.
        let mut entry: Entry = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        entry.instructions[0] ^= 1;
        std::fs::write(&path, serde_json::to_vec(&entry).unwrap()).unwrap();
        assert_eq!(read_entry(&dir, &path, &key).unwrap(), None);
        assert_eq!(compile_cached(&profile(), &dir).unwrap(), fresh);
        // The recompile replaced the bad entry.
        assert!(read_entry(&dir, &path, &key).unwrap().is_some());
        // Half an entry, as a crash could leave it.
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        assert_eq!(read_entry(&dir, &path, &key).unwrap(), None);
        assert_eq!(compile_cached(&profile(), &dir).unwrap(), fresh);
    }

    #[test]
    fn a_cache_others_can_write_is_not_trusted() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cache");
        compile_cached(&profile(), &dir).unwrap();
        let key = cache_key(&profile()).unwrap();
        let path = dir.join(&key);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(read_entry(&dir, &path, &key).is_err());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(read_entry(&dir, &path, &key).is_err());
        // Not trusted, but the compile still works and gives the right program.
        assert_eq!(
            compile_cached(&profile(), &dir).unwrap(),
            SeccompProgram::compile(&profile()).unwrap()
        );
        // A symlinked entry is refused too.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let elsewhere = tmp.path().join("elsewhere");
        std::fs::rename(&path, &elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &path).unwrap();
        assert!(read_entry(&dir, &path, &key).is_err());
    }

    #[test]
    fn different_profiles_get_different_entries() {
        let other = super::super::parse_profile(
            br#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
                {"names":["mkdir"],"action":"SCMP_ACT_ERRNO","errnoRet":1}]}"#,
        )
        .unwrap();
        assert_ne!(cache_key(&profile()).unwrap(), cache_key(&other).unwrap());
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cache");
        let a = compile_cached(&profile(), &dir).unwrap();
        let b = compile_cached(&other, &dir).unwrap();
        assert_ne!(a, b);
        assert_eq!(b, SeccompProgram::compile(&other).unwrap());
        assert_eq!(entries(&dir).len(), 2);
    }
}
