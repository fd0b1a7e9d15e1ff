//! Unpacking one layer tar onto a directory tree, safely.
//!
//! OCI rules (image-spec `layer.md`, "Applying Changesets"), as containerd applies them:
//! - an entry replaces whatever is at its path, except that a directory entry over an existing
//!   directory merges with it (only its metadata changes);
//! - `.wh.<name>` deletes `<name>` from the layers below; `.wh..wh..opq` hides everything the
//!   layers below put in its directory. Neither touches what this same layer writes, wherever
//!   the marker sits in the tar;
//! - missing parent directories are created (mode 0755, or in an overlay upper directory a
//!   copy of the lower layers' directory attributes);
//! - the root entry (`./`) is ignored; PAX global headers are ignored; `trusted.*` extended
//!   attributes from the tar are refused, since they steer overlayfs itself.
//!
//! Safety: every path is validated lexically (no `..`, no NUL, bounded lengths) and resolved
//! through [`crate::fsx`] relative to the root descriptor, so nothing outside the root is ever
//! created, changed, removed or read, whatever symlinks the layer or the layers below hold.

use std::collections::HashSet;
use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use berth_core::{Error, Result};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{
    FchmodatFlags, Mode, SFlag, UtimensatFlags, fchmod, fchmodat, fstat, futimens, makedev,
    mkdirat, mknodat, utimensat,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, fchown, fchownat, linkat, symlinkat};
use tracing::{debug, warn};

use crate::fsx::{self, is_dir, is_whiteout, lstat_child, open_child, open_child_dir};
use crate::guard::HeaderGuard;

/// The longest entry path accepted (Linux's `PATH_MAX`).
pub const MAX_PATH: usize = 4096;
/// The longest path component accepted (Linux's `NAME_MAX`).
const MAX_NAME: usize = 255;
const WHITEOUT_PREFIX: &[u8] = b".wh.";
const WHITEOUT_META_PREFIX: &[u8] = b".wh..wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
const OVERLAY_OPAQUE: &CStr = c"trusted.overlay.opaque";
const PAX_XATTR_PREFIX: &[u8] = b"SCHILY.xattr.";
/// Copy buffer for file contents: large, so applying is bound by decompression.
const COPY_BUFFER: usize = 1 << 20;
/// Every this many bytes of one file, their writeback to disk is started
/// ([`fsx::start_writeback`]). Smaller files are left to the sync at the end of the layer, so
/// many small files cost no extra syscalls.
const WRITEBACK_WINDOW: u64 = 4 << 20;

/// How whiteouts in the layer are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Whiteouts {
    /// Carried out: `.wh.<name>` deletes `<name>`, an opaque marker empties its directory of
    /// everything this layer did not write. For plain directories and mounted snapshots.
    Oci,
    /// Recorded for overlayfs in an upper directory: `.wh.<name>` becomes a character device
    /// 0/0 named `<name>`, an opaque marker the xattr `trusted.overlay.opaque=y` on its
    /// directory. `lowers` are the overlay's lower directories, nearest first: a parent
    /// directory missing from the upper directory copies its attributes from them.
    Overlay {
        /// The lower directories, nearest first.
        lowers: Vec<PathBuf>,
    },
}

/// Applies the layer tar read from `tar` onto the directory `root`, as an OCI changeset.
///
/// Reads exactly up to the tar's end-of-archive marker (the caller drains the rest if it needs
/// the whole stream's digest). On error the tree may hold part of the layer, never anything
/// outside `root`.
pub fn apply_tar(tar: impl Read, root: &Path, whiteouts: &Whiteouts) -> Result<()> {
    let mut unpacker = Unpacker::new(root, whiteouts)?;
    let mut archive = tar::Archive::new(HeaderGuard::new(tar));
    let entries = archive
        .entries()
        .map_err(|e| malformed("read layer tar", e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| malformed("read layer tar header", e))?;
        unpacker.entry(&mut entry)?;
    }
    unpacker.finish()
}

fn malformed(what: &str, err: io::Error) -> Error {
    Error::invalid_argument(format!("{what}: malformed layer")).with_source(err)
}

fn lossy(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}

fn bad_entry(path: &[u8], why: impl std::fmt::Display) -> Error {
    Error::invalid_argument(format!("layer entry {:?}: {why}", lossy(path)))
}

fn sys(what: impl std::fmt::Display, path: &[u8], err: Errno) -> Error {
    Error::io(
        format!("{what} for layer entry {:?}", lossy(path)),
        io::Error::from(err),
    )
}

/// Splits an entry path into components: leading `/`, empty and `.` components dropped; `..`,
/// NUL, over-long paths and components refused.
pub(crate) fn split_path(raw: &[u8]) -> Result<Vec<Vec<u8>>> {
    if raw.contains(&0) {
        return Err(bad_entry(raw, "name contains NUL"));
    }
    if raw.len() > MAX_PATH {
        return Err(bad_entry(
            &raw[..64],
            format!("name of {} bytes is longer than {MAX_PATH}", raw.len()),
        ));
    }
    let mut comps = Vec::new();
    for comp in raw.split(|b| *b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => return Err(bad_entry(raw, "name contains \"..\"")),
            _ if comp.len() > MAX_NAME => {
                return Err(bad_entry(raw, "path component longer than 255 bytes"));
            }
            _ => comps.push(comp.to_vec()),
        }
    }
    Ok(comps)
}

fn join(comps: &[Vec<u8>]) -> Vec<u8> {
    comps.join(&b'/')
}

fn cname(name: &[u8], path: &[u8]) -> Result<CString> {
    CString::new(name).map_err(|_| bad_entry(path, "name contains NUL"))
}

/// What a header says about an entry besides its name and type.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    atime: TimeSpec,
    mtime: TimeSpec,
    xattrs: Vec<(CString, Vec<u8>)>,
}

impl Meta {
    fn read<R: Read>(entry: &mut tar::Entry<'_, R>, path: &[u8]) -> Result<Self> {
        let header = entry.header();
        // An empty numeric field reads as 0, as Go's archive/tar reads it.
        let field = |r: io::Result<u64>, raw: &[u8], name: &str| match r {
            Ok(v) => Ok(v),
            Err(_) if raw.iter().all(|b| *b == 0 || *b == b' ') => Ok(0),
            Err(e) => Err(bad_entry(path, format_args!("bad {name} field: {e}"))),
        };
        let old = header.as_old();
        let mode = field(header.mode().map(u64::from), &old.mode, "mode")? as u32 & 0o7777;
        // The tar crate already applied PAX uid/gid records to the header.
        let uid = field(header.uid(), &old.uid, "uid")?;
        let gid = field(header.gid(), &old.gid, "gid")?;
        let (uid, gid) = match (u32::try_from(uid), u32::try_from(gid)) {
            (Ok(u), Ok(g)) if u != u32::MAX && g != u32::MAX => (u, g),
            _ => {
                return Err(bad_entry(
                    path,
                    format_args!("owner {uid}:{gid} out of range"),
                ));
            }
        };
        let header_mtime = field(header.mtime(), &old.mtime, "mtime")?;
        let mut mtime = (i64::try_from(header_mtime).unwrap_or(i64::MAX), 0);
        let mut atime = None;
        let mut xattrs = Vec::new();
        let pax = entry
            .pax_extensions()
            .map_err(|e| bad_entry(path, format_args!("bad PAX header: {e}")))?;
        if let Some(pax) = pax {
            for ext in pax {
                let ext = ext.map_err(|e| bad_entry(path, format_args!("bad PAX record: {e}")))?;
                match ext.key_bytes() {
                    b"mtime" => {
                        if let Some(t) = parse_pax_time(ext.value_bytes()) {
                            mtime = t;
                        }
                    }
                    b"atime" => atime = parse_pax_time(ext.value_bytes()),
                    key if key.starts_with(PAX_XATTR_PREFIX) => {
                        let name = &key[PAX_XATTR_PREFIX.len()..];
                        if name.is_empty() || name.contains(&0) {
                            return Err(bad_entry(path, "bad xattr name"));
                        }
                        xattrs.push((cname(name, path)?, ext.value_bytes().to_vec()));
                    }
                    _ => {}
                }
            }
        }
        // containerd sets atime to the later of atime and mtime.
        let atime = atime.map_or(mtime, |a| a.max(mtime));
        Ok(Self {
            mode,
            uid,
            gid,
            atime: TimeSpec::new(atime.0, atime.1),
            mtime: TimeSpec::new(mtime.0, mtime.1),
            xattrs,
        })
    }
}

/// A PAX time (`seconds[.fraction]`, possibly negative) as seconds and nanoseconds.
fn parse_pax_time(value: &[u8]) -> Option<(i64, i64)> {
    let s = std::str::from_utf8(value).ok()?;
    let (negative, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    if secs.is_empty() || !secs.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: i64 = secs.parse().ok()?;
    let mut nanos: i64 = 0;
    for i in 0..9 {
        let digit = frac.as_bytes().get(i).map_or(0, |b| i64::from(b - b'0'));
        nanos = nanos * 10 + digit;
    }
    Some(match (negative, nanos) {
        (false, _) => (secs, nanos),
        (true, 0) => (-secs, 0),
        (true, n) => (-secs - 1, 1_000_000_000 - n),
    })
}

/// A resolved parent directory: its descriptor and identity.
#[derive(Clone)]
struct ParentDir {
    fd: Rc<OwnedFd>,
    id: (u64, u64),
}

struct Unpacker {
    root: OwnedFd,
    /// The lower directories in overlay mode (`None`: OCI mode).
    lowers: Option<Vec<OwnedFd>>,
    /// `(parent dev, parent ino, name)` of everything this layer wrote: whiteouts and opaque
    /// markers never remove these.
    unpacked: HashSet<(u64, u64, Vec<u8>)>,
    /// Directories whose times are set last, once nothing is created in them any more.
    dir_times: Vec<(Vec<Vec<u8>>, TimeSpec, TimeSpec)>,
    /// The last parent directory resolved: consecutive entries mostly share one. Dropped on
    /// every removal, which is the only thing that can change what a path resolves to.
    cache: Option<(Vec<u8>, ParentDir)>,
    buf: Vec<u8>,
}

impl Unpacker {
    fn new(root: &Path, whiteouts: &Whiteouts) -> Result<Self> {
        let open = |p: &Path| {
            nix::fcntl::open(
                p,
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| Error::io(format!("open directory {}", p.display()), e.into()))
        };
        let lowers = match whiteouts {
            Whiteouts::Oci => None,
            Whiteouts::Overlay { lowers } => {
                Some(lowers.iter().map(|p| open(p)).collect::<Result<_>>()?)
            }
        };
        Ok(Self {
            root: open(root)?,
            lowers,
            unpacked: HashSet::new(),
            dir_times: Vec::new(),
            cache: None,
            buf: vec![0; COPY_BUFFER],
        })
    }

    fn overlay(&self) -> bool {
        self.lowers.is_some()
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<()> {
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            debug!("ignoring PAX global header");
            return Ok(());
        }
        let raw = entry.path_bytes().into_owned();
        let mut comps = split_path(&raw)?;
        let Some(name) = comps.pop() else {
            debug!(entry = %lossy(&raw), "ignoring the root entry");
            return Ok(());
        };
        let meta = Meta::read(entry, &raw)?;
        if name.starts_with(WHITEOUT_PREFIX) {
            return self.whiteout(&comps, &name, &meta, &raw);
        }
        let parent = self.parent(&comps, true, &raw)?.ok_or_else(|| {
            Error::internal(format!("parent of layer entry {:?} vanished", lossy(&raw)))
        })?;
        let dir = parent.fd.as_fd();
        let c_name = cname(&name, &raw)?;
        let is_dir_entry = kind.is_dir();

        if kind.is_hard_link() {
            let target = entry
                .link_name_bytes()
                .ok_or_else(|| bad_entry(&raw, "hardlink without a target"))?
                .into_owned();
            let mut target = split_path(&target)?;
            if target.is_empty() {
                return Err(bad_entry(&raw, "hardlink to the root"));
            }
            comps.push(name.clone());
            if target == comps {
                debug!(entry = %lossy(&raw), "ignoring a hardlink to itself");
                return Ok(());
            }
            let target_name = target.pop().unwrap_or_default();
            self.replace_existing(dir, &c_name, false, &raw)?;
            let target_dir = self
                .parent(&target, false, &raw)?
                .ok_or_else(|| bad_entry(&raw, "hardlink target not found"))?;
            let target_cname = cname(&target_name, &raw)?;
            // No AT_SYMLINK_FOLLOW: a link to a symlink links the symlink itself.
            linkat(
                target_dir.fd.as_fd(),
                target_cname.as_c_str(),
                dir,
                c_name.as_c_str(),
                AtFlags::empty(),
            )
            .map_err(|e| sys("create hardlink", &raw, e))?;
            self.unpacked.insert((parent.id.0, parent.id.1, name));
            return Ok(());
        }

        let replaced_whiteout = self.replace_existing(dir, &c_name, is_dir_entry, &raw)?;
        if kind.is_dir() {
            match mkdirat(dir, c_name.as_c_str(), Mode::from_bits_truncate(0o700)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(sys("create directory", &raw, e)),
            }
            let fd = open_child_dir(dir, &c_name).map_err(|e| sys("open directory", &raw, e))?;
            if replaced_whiteout {
                // What overlayfs does itself when a directory replaces a whiteout: the lower
                // directory of that name stays hidden.
                fsx::set_xattr(&fd, OVERLAY_OPAQUE, b"y")
                    .map_err(|e| Error::io(format!("mark {:?} opaque", lossy(&raw)), e))?;
            }
            self.meta_on_fd(&fd, &meta, &raw)?;
            comps.push(name.clone());
            self.dir_times.push((comps, meta.atime, meta.mtime));
        } else if kind.is_file() || kind.is_contiguous() || kind.is_gnu_sparse() {
            self.write_file(dir, &c_name, entry, &meta, &raw)?;
        } else if kind.is_symlink() {
            let target = entry
                .link_name_bytes()
                .ok_or_else(|| bad_entry(&raw, "symlink without a target"))?
                .into_owned();
            let target = CString::new(target).map_err(|_| bad_entry(&raw, "NUL in link"))?;
            symlinkat(target.as_c_str(), dir, c_name.as_c_str())
                .map_err(|e| sys("create symlink", &raw, e))?;
            self.meta_at(dir, &c_name, &meta, false, &raw)?;
        } else if kind.is_character_special() || kind.is_block_special() || kind.is_fifo() {
            let (sflag, dev) = if kind.is_fifo() {
                (SFlag::S_IFIFO, 0)
            } else {
                let header = entry.header();
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                let sflag = if kind.is_character_special() {
                    SFlag::S_IFCHR
                } else {
                    SFlag::S_IFBLK
                };
                (sflag, makedev(u64::from(major), u64::from(minor)))
            };
            match mknodat(dir, c_name.as_c_str(), sflag, Mode::empty(), dev) {
                Ok(()) => {}
                // containerd skips devices where it cannot create them (user namespaces).
                Err(Errno::EPERM) if sflag != SFlag::S_IFIFO => {
                    warn!(entry = %lossy(&raw), "cannot create device node here; skipped");
                    return Ok(());
                }
                Err(e) => return Err(sys("create special file", &raw, e)),
            }
            self.meta_at(dir, &c_name, &meta, true, &raw)?;
        } else {
            return Err(bad_entry(
                &raw,
                format_args!("unsupported tar entry type {:?}", kind.as_byte() as char),
            ));
        }
        self.unpacked.insert((parent.id.0, parent.id.1, name));
        Ok(())
    }

    /// Clears the way for a new entry at `name`: removes what is there unless both are
    /// directories. Returns whether an overlay whiteout was replaced.
    fn replace_existing(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &CStr,
        is_dir_entry: bool,
        raw: &[u8],
    ) -> Result<bool> {
        let Some(st) = lstat_child(dir, name).map_err(|e| sys("stat", raw, e))? else {
            return Ok(false);
        };
        if is_dir_entry && is_dir(&st) {
            return Ok(false);
        }
        self.cache = None;
        fsx::remove_all_at(dir, name).map_err(|e| sys("remove existing file", raw, e))?;
        Ok(self.overlay() && is_whiteout(&st))
    }

    fn write_file<R: Read>(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &CStr,
        entry: &mut tar::Entry<'_, R>,
        meta: &Meta,
        raw: &[u8],
    ) -> Result<()> {
        let fd = nix::fcntl::openat(
            dir,
            name,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| sys("create file", raw, e))?;
        let mut file = File::from(fd);
        let want = entry.size();
        let mut written = 0u64;
        let mut flushed = 0u64;
        loop {
            let n = match entry.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(malformed("read layer file data", e)),
            };
            file.write_all(&self.buf[..n])
                .map_err(|e| Error::io(format!("write layer entry {:?}", lossy(raw)), e))?;
            written += n as u64;
            if written - flushed >= WRITEBACK_WINDOW {
                fsx::start_writeback(file.as_fd(), flushed, written - flushed);
                flushed = written;
            }
        }
        if written != want {
            return Err(bad_entry(
                raw,
                format_args!("truncated: {written} of {want} bytes"),
            ));
        }
        let fd = OwnedFd::from(file);
        self.meta_on_fd(&fd, meta, raw)?;
        futimens(&fd, &meta.atime, &meta.mtime).map_err(|e| sys("set times", raw, e))
    }

    /// Owner, xattrs and mode (in that order: chown clears setuid bits and capabilities) on an
    /// open regular file or directory.
    fn meta_on_fd(&self, fd: &OwnedFd, meta: &Meta, raw: &[u8]) -> Result<()> {
        fchown(
            fd,
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
        )
        .map_err(|e| sys("chown", raw, e))?;
        set_xattrs(fd, &meta.xattrs, true, raw)?;
        fchmod(fd, Mode::from_bits_truncate(meta.mode)).map_err(|e| sys("chmod", raw, e))
    }

    /// Metadata of a symlink or special file `name` in `dir`, never following it.
    fn meta_at(
        &self,
        dir: BorrowedFd<'_>,
        name: &CStr,
        meta: &Meta,
        chmod: bool,
        raw: &[u8],
    ) -> Result<()> {
        fchownat(
            dir,
            name,
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| sys("chown", raw, e))?;
        if !meta.xattrs.is_empty() {
            let fd = open_child(dir, name, OFlag::O_PATH).map_err(|e| sys("open", raw, e))?;
            set_xattrs(&fd, &meta.xattrs, false, raw)?;
        }
        if chmod {
            fchmodat(
                dir,
                name,
                Mode::from_bits_truncate(meta.mode),
                FchmodatFlags::NoFollowSymlink,
            )
            .map_err(|e| sys("chmod", raw, e))?;
        }
        utimensat(
            dir,
            name,
            &meta.atime,
            &meta.mtime,
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(|e| sys("set times", raw, e))
    }

    /// The directory `comps` (relative to the root, resolved inside it), created with its
    /// missing ancestors when `create`; `None` when it does not exist and `create` is false.
    fn parent(&mut self, comps: &[Vec<u8>], create: bool, raw: &[u8]) -> Result<Option<ParentDir>> {
        let key = join(comps);
        if let Some((cached, dir)) = &self.cache
            && *cached == key
        {
            return Ok(Some(dir.clone()));
        }
        let fd = match fsx::open_dir_in_root(self.root.as_fd(), &key) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) if create => self.make_dirs(comps, raw)?,
            Err(Errno::ENOENT | Errno::ENOTDIR) if !create => return Ok(None),
            Err(Errno::ENOTDIR) => return Err(bad_entry(raw, "a parent is not a directory")),
            Err(e) => return Err(sys("resolve parent directory", raw, e)),
        };
        let st = fstat(&fd).map_err(|e| sys("stat parent directory", raw, e))?;
        let dir = ParentDir {
            fd: Rc::new(fd),
            id: (st.st_dev, st.st_ino),
        };
        self.cache = Some((key, dir.clone()));
        Ok(Some(dir))
    }

    /// Creates the missing directories of `comps` below the deepest one that exists.
    fn make_dirs(&mut self, comps: &[Vec<u8>], raw: &[u8]) -> Result<OwnedFd> {
        let mut existing = comps.len();
        let mut fd = loop {
            existing -= 1;
            match fsx::open_dir_in_root(self.root.as_fd(), &join(&comps[..existing])) {
                Ok(fd) => break fd,
                Err(Errno::ENOENT) if existing > 0 => {}
                Err(Errno::ENOTDIR | Errno::ENOENT) => {
                    return Err(bad_entry(raw, "a parent is not a directory"));
                }
                Err(e) => return Err(sys("resolve parent directory", raw, e)),
            }
        };
        for depth in existing..comps.len() {
            let name = cname(&comps[depth], raw)?;
            let created = match mkdirat(&fd, name.as_c_str(), Mode::from_bits_truncate(0o755)) {
                Ok(()) => true,
                Err(Errno::EEXIST) => false,
                Err(e) => return Err(sys("create parent directory", raw, e)),
            };
            // A name that exists but is a symlink the full resolution could not follow (it
            // dangles) is refused here rather than followed.
            let child = open_child_dir(fd.as_fd(), &name).map_err(|e| match e {
                Errno::ELOOP | Errno::ENOTDIR => bad_entry(raw, "a parent is not a directory"),
                e => sys("open parent directory", raw, e),
            })?;
            if created {
                fchmod(&child, Mode::from_bits_truncate(0o755))
                    .map_err(|e| sys("chmod parent directory", raw, e))?;
                self.copy_lower_dir(&comps[..=depth], &child, raw)?;
            }
            fd = child;
        }
        Ok(fd)
    }

    /// In overlay mode, gives a directory just created in the upper directory the attributes
    /// of the same directory in the nearest lower layer that has one, as containerd does.
    fn copy_lower_dir(&mut self, comps: &[Vec<u8>], fd: &OwnedFd, raw: &[u8]) -> Result<()> {
        let Some(lowers) = &self.lowers else {
            return Ok(());
        };
        let rel = join(comps);
        for lower in lowers {
            let src = match fsx::open_in_root(lower.as_fd(), &rel, OFlag::O_PATH) {
                Ok(fd) => fd,
                Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP) => continue,
                Err(e) => return Err(sys("open lower directory", raw, e)),
            };
            let st = fstat(&src).map_err(|e| sys("stat lower directory", raw, e))?;
            if !is_dir(&st) {
                // Replaced by a non-directory below: nothing to inherit.
                break;
            }
            fchown(
                fd,
                Some(Uid::from_raw(st.st_uid)),
                Some(Gid::from_raw(st.st_gid)),
            )
            .map_err(|e| sys("chown parent directory", raw, e))?;
            let xattrs = fsx::read_xattrs(&src)
                .map_err(|e| Error::io(format!("read xattrs of lower of {:?}", lossy(raw)), e))?;
            set_xattrs(fd, &xattrs, true, raw)?;
            fchmod(fd, Mode::from_bits_truncate(st.st_mode & 0o7777))
                .map_err(|e| sys("chmod parent directory", raw, e))?;
            self.dir_times.push((
                comps.to_vec(),
                TimeSpec::new(st.st_atime, st.st_atime_nsec),
                TimeSpec::new(st.st_mtime, st.st_mtime_nsec),
            ));
            break;
        }
        Ok(())
    }

    fn whiteout(&mut self, comps: &[Vec<u8>], name: &[u8], meta: &Meta, raw: &[u8]) -> Result<()> {
        if name == OPAQUE_MARKER {
            let parent = self
                .parent(comps, true, raw)?
                .ok_or_else(|| Error::internal("opaque directory vanished"))?;
            self.cache = None;
            self.clear_opaque(&parent, raw)?;
            if self.overlay() {
                fsx::set_xattr(&*parent.fd, OVERLAY_OPAQUE, b"y")
                    .map_err(|e| Error::io(format!("mark {:?} opaque", lossy(raw)), e))?;
            }
            return Ok(());
        }
        if name.starts_with(WHITEOUT_META_PREFIX) {
            debug!(entry = %lossy(raw), "ignoring reserved whiteout name");
            return Ok(());
        }
        let victim = &name[WHITEOUT_PREFIX.len()..];
        if victim.is_empty() || victim == b"." || victim == b".." {
            return Err(bad_entry(raw, "invalid whiteout name"));
        }
        let victim_c = cname(victim, raw)?;
        let Some(parent) = self.parent(comps, self.overlay(), raw)? else {
            // Nothing below to delete.
            return Ok(());
        };
        if self
            .unpacked
            .contains(&(parent.id.0, parent.id.1, victim.to_vec()))
        {
            return Ok(());
        }
        let dir = parent.fd.as_fd();
        self.cache = None;
        fsx::remove_all_at(dir, &victim_c).map_err(|e| sys("remove whited-out file", raw, e))?;
        if self.overlay() {
            mknodat(dir, victim_c.as_c_str(), SFlag::S_IFCHR, Mode::empty(), 0)
                .map_err(|e| sys("create overlay whiteout", raw, e))?;
            fchownat(
                dir,
                victim_c.as_c_str(),
                Some(Uid::from_raw(meta.uid)),
                Some(Gid::from_raw(meta.gid)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(|e| sys("chown overlay whiteout", raw, e))?;
        }
        Ok(())
    }

    /// Removes from `dir`, recursively, everything this layer did not write; directories that
    /// hold something it wrote stay. Iterative: a deep tree cannot exhaust the stack.
    fn clear_opaque(&self, dir: &ParentDir, raw: &[u8]) -> Result<()> {
        struct Frame {
            fd: OwnedFd,
            id: (u64, u64),
            pending: Vec<CString>,
            /// The name in the frame below; `None` for the opaque directory itself.
            name: Option<CString>,
            /// Written by this layer, or holding something that was.
            keep: bool,
        }
        let list =
            |fd: &OwnedFd| fsx::list_dir(fd.as_fd()).map_err(|e| sys("list directory", raw, e));
        let fd = fsx::open_in_root(dir.fd.as_fd(), b"", OFlag::O_RDONLY | OFlag::O_DIRECTORY)
            .map_err(|e| sys("open opaque directory", raw, e))?;
        let pending = list(&fd)?;
        let mut stack = vec![Frame {
            fd,
            id: dir.id,
            pending,
            name: None,
            keep: true,
        }];
        while let Some(top) = stack.last_mut() {
            let Some(child) = top.pending.pop() else {
                let Some(done) = stack.pop() else { break };
                let (Some(name), Some(parent)) = (done.name, stack.last_mut()) else {
                    continue;
                };
                if done.keep {
                    parent.keep = true;
                } else {
                    drop(done.fd);
                    nix::unistd::unlinkat(
                        parent.fd.as_fd(),
                        name.as_c_str(),
                        nix::unistd::UnlinkatFlags::RemoveDir,
                    )
                    .map_err(|e| sys("remove hidden directory", raw, e))?;
                }
                continue;
            };
            let written = self
                .unpacked
                .contains(&(top.id.0, top.id.1, child.as_bytes().to_vec()));
            let st = lstat_child(top.fd.as_fd(), &child).map_err(|e| sys("stat", raw, e))?;
            match st {
                None => {}
                Some(st) if is_dir(&st) => {
                    let fd = open_child_dir(top.fd.as_fd(), &child)
                        .map_err(|e| sys("open directory", raw, e))?;
                    let pending = list(&fd)?;
                    stack.push(Frame {
                        fd,
                        id: (st.st_dev, st.st_ino),
                        pending,
                        name: Some(child),
                        keep: written,
                    });
                }
                Some(_) if written => top.keep = true,
                Some(_) => fsx::remove_all_at(top.fd.as_fd(), &child)
                    .map_err(|e| sys("remove hidden file", raw, e))?,
            }
        }
        Ok(())
    }

    /// Sets the directories' times, now that nothing more is created in them.
    fn finish(mut self) -> Result<()> {
        let dir_times = std::mem::take(&mut self.dir_times);
        for (mut comps, atime, mtime) in dir_times {
            let Some(name) = comps.pop() else { continue };
            let raw = join(&comps);
            let Some(parent) = self.parent(&comps, false, &raw)? else {
                continue;
            };
            let name = cname(&name, &raw)?;
            match lstat_child(parent.fd.as_fd(), &name) {
                Ok(Some(st)) if is_dir(&st) => {}
                _ => continue,
            }
            utimensat(
                parent.fd.as_fd(),
                name.as_c_str(),
                &atime,
                &mtime,
                UtimensatFlags::NoFollowSymlink,
            )
            .map_err(|e| sys("set directory times", &raw, e))?;
        }
        Ok(())
    }
}

/// Sets xattrs from a tar entry on the object behind `fd`. `trusted.*` is refused (it steers
/// overlayfs); filesystems without xattr support, and `user.*` on files that cannot carry it,
/// skip with a warning, as containerd does.
fn set_xattrs(
    fd: &OwnedFd,
    xattrs: &[(CString, Vec<u8>)],
    regular_or_dir: bool,
    raw: &[u8],
) -> Result<()> {
    for (name, value) in xattrs {
        let bytes = name.as_bytes();
        if bytes.starts_with(b"trusted.") {
            warn!(entry = %lossy(raw), xattr = %lossy(bytes), "ignoring trusted xattr from layer");
            continue;
        }
        match fsx::set_xattr(fd, name, value) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => {
                warn!(entry = %lossy(raw), xattr = %lossy(bytes), "xattr not supported here; ignored");
            }
            Err(e)
                if e.raw_os_error() == Some(libc::EPERM)
                    && bytes.starts_with(b"user.")
                    && !regular_or_dir =>
            {
                warn!(entry = %lossy(raw), xattr = %lossy(bytes), "user xattr on a special file; ignored");
            }
            Err(e) => {
                return Err(Error::io(
                    format!(
                        "set xattr {:?} on layer entry {:?}",
                        lossy(bytes),
                        lossy(raw)
                    ),
                    e,
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_and_refuses_paths() {
        assert_eq!(
            split_path(b"/a//./b/").unwrap(),
            vec![b"a".to_vec(), b"b".to_vec()]
        );
        assert!(split_path(b"./").unwrap().is_empty());
        for bad in [
            &b"../x"[..],
            b"a/../../x",
            b"a/..",
            b"a\0b",
            &[b'a'; 256][..],
        ] {
            let err = split_path(bad).unwrap_err();
            assert_eq!(err.kind(), berth_core::ErrorKind::InvalidArgument);
        }
        assert!(split_path(&vec![b'a'; MAX_PATH + 1]).is_err());
    }

    #[test]
    fn pax_times() {
        assert_eq!(parse_pax_time(b"12"), Some((12, 0)));
        assert_eq!(parse_pax_time(b"12.5"), Some((12, 500_000_000)));
        assert_eq!(parse_pax_time(b"1.0000000019"), Some((1, 1)));
        assert_eq!(parse_pax_time(b"-1.5"), Some((-2, 500_000_000)));
        assert_eq!(parse_pax_time(b"x"), None);
        assert_eq!(parse_pax_time(b"1.x"), None);
    }
}
