//! Computing a layer: the changes that turn one directory tree into another, as an OCI layer
//! tar (what containerd's walking differ and its `ChangeWriter` produce).
//!
//! Both trees are walked together, children in bytewise name order, so entries come sorted
//! with parents before children. For each name:
//! - only below: a `.wh.<name>` whiteout; when every one of at least two entries of a
//!   directory is gone, a single `.wh..wh..opq` marker instead;
//! - only above, or of another type, or with other metadata or contents: the entry in full;
//!   a new directory brings its whole subtree;
//! - unchanged: nothing, except the directories needed as parents of what changed.
//!
//! Files are "the same" as continuity's `sameFile` decides: equal mode, owner, device number
//! and extended attributes, and for non-directories equal size and mtime seconds; when both
//! mtimes have no sub-second part (as after a round trip through a tar) the contents or link
//! targets are compared, otherwise differing nanoseconds mean a change.
//!
//! Hardlinks: the first changed name of an inode is written as a file and every other name
//! of it as a link to that one, including unchanged names seen before it.
//!
//! Extended attributes are carried in PAX `SCHILY.xattr.*` records, except `trusted.*`
//! (overlayfs's own, refused on apply) and `security.selinux` (the host's labelling, not the
//! image's). Sockets are skipped, as in containerd.

use std::collections::{HashMap, HashSet};
use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use berth_core::{Error, Result};
use nix::errno::Errno;
use nix::fcntl::{OFlag, readlinkat};
use nix::sys::stat::{FileStat, Mode, SFlag, major, minor};
use tracing::warn;

use crate::fsx::{self, file_type, is_dir, list_dir, lstat_child, open_child, open_child_dir};

const COPY_BUFFER: usize = 1 << 20;
/// The largest number ustar's 7 octal digits hold; PAX records carry larger ids.
const USTAR_MAX_ID: u64 = 0o7777777;
/// The largest size ustar's 11 octal digits hold.
const USTAR_MAX_SIZE: u64 = 0o77777777777;

/// Writes the layer tar that turns `lower` into `upper` to `out` (uncompressed) and returns
/// `out` once the tar is finished.
pub fn write_diff<W: Write>(lower: &Path, upper: &Path, out: W) -> Result<W> {
    let open = |p: &Path| {
        nix::fcntl::open(
            p,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::io(format!("open directory {}", p.display()), e.into()))
    };
    let lower = open(lower)?;
    let upper = open(upper)?;
    let mut writer = DiffWriter {
        tar: tar::Builder::new(out),
        upper_root: fsx::open_in_root(upper.as_fd(), b"", OFlag::O_PATH | OFlag::O_DIRECTORY)
            .map_err(|e| io_err("open upper root", b"", e))?,
        emitted_dirs: HashSet::new(),
        inode_src: HashMap::new(),
        inode_refs: HashMap::new(),
        buf: vec![0; COPY_BUFFER],
    };
    writer.walk(lower, upper)?;
    writer
        .tar
        .into_inner()
        .map_err(|e| Error::io("finish layer tar", e))
}

fn io_err(what: &str, path: &[u8], err: Errno) -> Error {
    Error::io(
        format!("{what} {:?}", String::from_utf8_lossy(path)),
        io::Error::from(err),
    )
}

fn child_path(dir: &[u8], name: &[u8]) -> Vec<u8> {
    if dir.is_empty() {
        name.to_vec()
    } else {
        [dir, b"/", name].concat()
    }
}

/// One directory being walked: both sides' descriptors and the names left to visit.
struct Frame {
    rel: Vec<u8>,
    lower: Option<OwnedFd>,
    upper: OwnedFd,
    /// `(name, in lower, in upper)`, in reverse order so `pop` yields them sorted.
    pending: Vec<(CString, bool, bool)>,
}

fn merge(lower: Vec<CString>, upper: Vec<CString>) -> Vec<(CString, bool, bool)> {
    let mut out = Vec::with_capacity(lower.len().max(upper.len()));
    let mut l = lower.into_iter().peekable();
    let mut u = upper.into_iter().peekable();
    loop {
        let next = match (l.peek(), u.peek()) {
            (None, None) => break,
            (Some(_), None) => l.next().map(|n| (n, true, false)),
            (None, Some(_)) => u.next().map(|n| (n, false, true)),
            (Some(a), Some(b)) => match a.as_bytes().cmp(b.as_bytes()) {
                std::cmp::Ordering::Less => l.next().map(|n| (n, true, false)),
                std::cmp::Ordering::Greater => u.next().map(|n| (n, false, true)),
                std::cmp::Ordering::Equal => {
                    u.next();
                    l.next().map(|n| (n, true, true))
                }
            },
        };
        out.extend(next);
    }
    out.reverse();
    out
}

struct DiffWriter<W: Write> {
    tar: tar::Builder<W>,
    upper_root: OwnedFd,
    /// Directories already in the tar (relative paths).
    emitted_dirs: HashSet<Vec<u8>>,
    /// The name a hardlinked inode was first written under.
    inode_src: HashMap<(u64, u64), Vec<u8>>,
    /// Unchanged names of hardlinked inodes not written yet.
    inode_refs: HashMap<(u64, u64), Vec<Vec<u8>>>,
    buf: Vec<u8>,
}

impl<W: Write> DiffWriter<W> {
    fn walk(&mut self, lower: OwnedFd, upper: OwnedFd) -> Result<()> {
        let lower_names = list_dir(lower.as_fd()).map_err(|e| io_err("list", b"/", e))?;
        let upper_names = list_dir(upper.as_fd()).map_err(|e| io_err("list", b"/", e))?;
        let mut stack = vec![Frame {
            rel: Vec::new(),
            lower: Some(lower),
            upper,
            pending: merge(lower_names, upper_names),
        }];
        while let Some(top) = stack.last_mut() {
            let Some((name, in_lower, in_upper)) = top.pending.pop() else {
                stack.pop();
                continue;
            };
            let path = child_path(&top.rel, name.as_bytes());
            if !in_upper {
                self.whiteout(&top.rel, name.as_bytes())?;
                continue;
            }
            let upper_dir = top.upper.as_fd();
            let Some(ust) = lstat_child(upper_dir, &name).map_err(|e| io_err("stat", &path, e))?
            else {
                continue;
            };
            let lower_dir = top.lower.as_ref().map(|fd| fd.as_fd());
            let lst = match (in_lower, lower_dir) {
                (true, Some(dir)) => {
                    lstat_child(dir, &name).map_err(|e| io_err("stat", &path, e))?
                }
                _ => None,
            };
            if is_dir(&ust) {
                let lower_is_dir = lst.as_ref().is_some_and(is_dir);
                let changed = match (&lst, lower_dir) {
                    (Some(l), Some(ldir)) if lower_is_dir => {
                        !same_meta(ldir, upper_dir, &name, l, &ust, &path)?
                    }
                    _ => true,
                };
                if changed {
                    self.entry(upper_dir, &name, &path, &ust, None)?;
                }
                let up = open_child_dir(upper_dir, &name).map_err(|e| io_err("open", &path, e))?;
                let upper_names = list_dir(up.as_fd()).map_err(|e| io_err("list", &path, e))?;
                let mut low = None;
                let mut lower_names = Vec::new();
                if lower_is_dir && let Some(ldir) = lower_dir {
                    let fd = open_child_dir(ldir, &name).map_err(|e| io_err("open", &path, e))?;
                    lower_names = list_dir(fd.as_fd()).map_err(|e| io_err("list", &path, e))?;
                    low = Some(fd);
                }
                let all_gone = lower_names.len() >= 2
                    && lower_names
                        .iter()
                        .all(|n| upper_names.binary_search(n).is_err());
                if all_gone {
                    self.opaque(&path)?;
                    low = None;
                    lower_names.clear();
                }
                stack.push(Frame {
                    rel: path,
                    lower: low,
                    upper: up,
                    pending: merge(lower_names, upper_names),
                });
                continue;
            }
            if file_type(&ust) == SFlag::S_IFSOCK {
                continue;
            }
            let changed = match (&lst, lower_dir) {
                (Some(l), Some(ldir)) if file_type(l) == file_type(&ust) => {
                    !self.same_file(ldir, upper_dir, &name, l, &ust, &path)?
                }
                _ => true,
            };
            if ust.st_nlink > 1 {
                let key = (ust.st_dev, ust.st_ino);
                if let Some(src) = self.inode_src.get(&key).cloned() {
                    self.entry(upper_dir, &name, &path, &ust, Some(&src))?;
                    continue;
                }
                if !changed {
                    self.inode_refs.entry(key).or_default().push(path);
                    continue;
                }
                self.entry(upper_dir, &name, &path, &ust, None)?;
                self.inode_src.insert(key, path.clone());
                for other in self.inode_refs.remove(&key).unwrap_or_default() {
                    self.link_by_path(&other, &path, &ust)?;
                }
                continue;
            }
            if changed {
                self.entry(upper_dir, &name, &path, &ust, None)?;
            }
        }
        Ok(())
    }

    fn same_file(
        &mut self,
        ldir: BorrowedFd<'_>,
        udir: BorrowedFd<'_>,
        name: &CStr,
        l: &FileStat,
        u: &FileStat,
        path: &[u8],
    ) -> Result<bool> {
        if !same_meta(ldir, udir, name, l, u, path)? {
            return Ok(false);
        }
        if l.st_size != u.st_size || l.st_mtime != u.st_mtime {
            return Ok(false);
        }
        if l.st_mtime_nsec != 0 || u.st_mtime_nsec != 0 {
            return Ok(l.st_mtime_nsec == u.st_mtime_nsec);
        }
        match file_type(u) {
            SFlag::S_IFLNK => {
                let a = readlinkat(ldir, name).map_err(|e| io_err("readlink", path, e))?;
                let b = readlinkat(udir, name).map_err(|e| io_err("readlink", path, e))?;
                Ok(a == b)
            }
            SFlag::S_IFREG if u.st_size > 0 => self.same_contents(ldir, udir, name, path),
            _ => Ok(true),
        }
    }

    fn same_contents(
        &mut self,
        ldir: BorrowedFd<'_>,
        udir: BorrowedFd<'_>,
        name: &CStr,
        path: &[u8],
    ) -> Result<bool> {
        let open = |dir| {
            open_child(dir, name, OFlag::O_RDONLY)
                .map(File::from)
                .map_err(|e| io_err("open", path, e))
        };
        let (mut a, mut b) = (open(ldir)?, open(udir)?);
        let half = self.buf.len() / 2;
        let (ba, bb) = self.buf.split_at_mut(half);
        loop {
            let n = read_full(&mut a, ba).map_err(|e| read_err(path, e))?;
            let m = read_full(&mut b, bb).map_err(|e| read_err(path, e))?;
            if n != m || ba[..n] != bb[..m] {
                return Ok(false);
            }
            if n == 0 {
                return Ok(true);
            }
        }
    }

    /// Writes the entry `name` of `dir` (relative path `path`), after any parent directories
    /// not written yet; as a hardlink to `link` when given.
    fn entry(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &CStr,
        path: &[u8],
        st: &FileStat,
        link: Option<&[u8]>,
    ) -> Result<()> {
        self.parents(path)?;
        let kind = file_type(st);
        let (mut header, mut pax) = base_header(st);
        let mut data: Option<File> = None;
        let mut tar_name = path.to_vec();
        if let Some(target) = link {
            header.set_entry_type(tar::EntryType::Link);
            set_link(&mut header, target, &mut pax)?;
        } else {
            match kind {
                SFlag::S_IFDIR => {
                    header.set_entry_type(tar::EntryType::Directory);
                    tar_name.push(b'/');
                }
                SFlag::S_IFREG => {
                    header.set_entry_type(tar::EntryType::Regular);
                    let size = u64::try_from(st.st_size).unwrap_or(0);
                    header.set_size(size);
                    if size > USTAR_MAX_SIZE {
                        pax.push(("size".into(), size.to_string().into_bytes()));
                    }
                    let file = open_child(dir, name, OFlag::O_RDONLY)
                        .map_err(|e| io_err("open", path, e))?;
                    data = Some(File::from(file));
                }
                SFlag::S_IFLNK => {
                    header.set_entry_type(tar::EntryType::Symlink);
                    let target = readlinkat(dir, name).map_err(|e| io_err("readlink", path, e))?;
                    set_link(&mut header, target.as_bytes(), &mut pax)?;
                }
                SFlag::S_IFCHR | SFlag::S_IFBLK => {
                    header.set_entry_type(if kind == SFlag::S_IFCHR {
                        tar::EntryType::Char
                    } else {
                        tar::EntryType::Block
                    });
                    let dev = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
                    header
                        .set_device_major(dev(major(st.st_rdev)))
                        .and_then(|()| header.set_device_minor(dev(minor(st.st_rdev))))
                        .map_err(|e| Error::io(format!("device numbers of {path:?}"), e))?;
                }
                SFlag::S_IFIFO => header.set_entry_type(tar::EntryType::Fifo),
                _ => return Ok(()),
            }
            let obj = open_child(dir, name, OFlag::O_PATH).map_err(|e| io_err("open", path, e))?;
            let xattrs = fsx::read_xattrs(&obj)
                .map_err(|e| Error::io(format!("read xattrs of {path:?}"), e))?;
            for (key, value) in xattrs {
                let key = key.as_bytes();
                if key.starts_with(b"trusted.") || key == b"security.selinux" {
                    continue;
                }
                match std::str::from_utf8(key) {
                    Ok(k) => pax.push((format!("SCHILY.xattr.{k}"), value)),
                    Err(_) => {
                        warn!(path = ?String::from_utf8_lossy(path), "skipping non-UTF-8 xattr name")
                    }
                }
            }
        }
        self.append(header, &tar_name, pax, data, path)?;
        if kind == SFlag::S_IFDIR && link.is_none() {
            self.emitted_dirs.insert(path.to_vec());
        }
        Ok(())
    }

    /// Writes every ancestor directory of `path` that is not in the tar yet.
    fn parents(&mut self, path: &[u8]) -> Result<()> {
        let mut ends: Vec<usize> = path
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'/')
            .map(|(i, _)| i)
            .collect();
        // Deepest first, stopping at the first ancestor already written.
        ends.reverse();
        let missing: Vec<usize> = ends
            .into_iter()
            .take_while(|end| !self.emitted_dirs.contains(&path[..*end]))
            .collect();
        for end in missing.into_iter().rev() {
            let dir = &path[..end];
            let (parent, name) = match dir.iter().rposition(|b| *b == b'/') {
                Some(i) => (&dir[..i], &dir[i + 1..]),
                None => (&b""[..], dir),
            };
            let pfd = fsx::open_beneath(self.upper_root.as_fd(), parent, OFlag::O_PATH)
                .map_err(|e| io_err("open", parent, e))?;
            let cname = CString::new(name).map_err(|_| Error::internal("NUL in a file name"))?;
            let st = lstat_child(pfd.as_fd(), &cname)
                .map_err(|e| io_err("stat", dir, e))?
                .ok_or_else(|| Error::not_found(format!("{dir:?} vanished while diffing")))?;
            self.entry(pfd.as_fd(), &cname, dir, &st, None)?;
        }
        Ok(())
    }

    /// Writes `path` as a hardlink to `target`, for a name found unchanged before `target`.
    fn link_by_path(&mut self, path: &[u8], target: &[u8], st: &FileStat) -> Result<()> {
        self.parents(path)?;
        let (mut header, mut pax) = base_header(st);
        header.set_entry_type(tar::EntryType::Link);
        set_link(&mut header, target, &mut pax)?;
        self.append(header, path, pax, None, path)
    }

    fn whiteout(&mut self, dir: &[u8], name: &[u8]) -> Result<()> {
        let marker = child_path(dir, &[b".wh.", name].concat());
        self.marker(&marker)
    }

    fn opaque(&mut self, dir: &[u8]) -> Result<()> {
        self.marker(&child_path(dir, b".wh..wh..opq"))
    }

    /// A whiteout file: empty, mode 0, owned by root, time 0, so equal trees give equal
    /// layers.
    fn marker(&mut self, path: &[u8]) -> Result<()> {
        self.parents(path)?;
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(0);
        header.set_mode(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        self.append(header, path, Vec::new(), None, path)
    }

    fn append(
        &mut self,
        mut header: tar::Header,
        name: &[u8],
        mut pax: Vec<(String, Vec<u8>)>,
        data: Option<File>,
        path: &[u8],
    ) -> Result<()> {
        if header.set_path(OsStr::from_bytes(name)).is_err() {
            pax.push(("path".into(), name.to_vec()));
            let old = &mut header.as_old_mut().name;
            let n = name.len().min(old.len());
            old[..n].copy_from_slice(&name[..n]);
        }
        let werr = |e| Error::io(format!("write layer tar entry {path:?}"), e);
        if !pax.is_empty() {
            self.tar
                .append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                .map_err(werr)?;
        }
        header.set_cksum();
        match data {
            None => self.tar.append(&header, io::empty()).map_err(werr),
            Some(file) => {
                let size = header.entry_size().map_err(werr)?;
                // Exactly the size in the header, even if the file changes meanwhile.
                let mut reader = ExactReader {
                    inner: file.take(size),
                    left: size,
                };
                self.tar.append(&header, &mut reader).map_err(werr)?;
                if reader.left != 0 {
                    return Err(Error::failed_precondition(format!(
                        "{:?} shrank while diffing",
                        String::from_utf8_lossy(path)
                    )));
                }
                Ok(())
            }
        }
    }
}

/// Reads a file for the tar, padding with zeros if it shrank (the caller then fails the diff).
struct ExactReader<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.left -= n as u64;
        Ok(n)
    }
}

fn read_err(path: &[u8], e: io::Error) -> Error {
    Error::io(format!("read {:?}", String::from_utf8_lossy(path)), e)
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Mode, owner and mtime (whole seconds, as containerd writes them) of a stat, and the PAX
/// records for owners too large for ustar.
fn base_header(st: &FileStat) -> (tar::Header, Vec<(String, Vec<u8>)>) {
    let mut header = tar::Header::new_ustar();
    let mut pax = Vec::new();
    header.set_mode(st.st_mode & 0o7777);
    for (key, id) in [("uid", u64::from(st.st_uid)), ("gid", u64::from(st.st_gid))] {
        if id > USTAR_MAX_ID {
            pax.push((key.to_owned(), id.to_string().into_bytes()));
        }
    }
    header.set_uid(u64::from(st.st_uid));
    header.set_gid(u64::from(st.st_gid));
    header.set_mtime(u64::try_from(st.st_mtime).unwrap_or(0));
    header.set_size(0);
    (header, pax)
}

fn set_link(
    header: &mut tar::Header,
    target: &[u8],
    pax: &mut Vec<(String, Vec<u8>)>,
) -> Result<()> {
    let fits = header.as_old().linkname.len();
    let literal = if target.len() <= fits {
        target
    } else {
        pax.push(("linkpath".into(), target.to_vec()));
        &target[..fits]
    };
    if literal.contains(&0) {
        return Err(Error::internal("NUL in a link target"));
    }
    header
        .set_link_name_literal(literal)
        .map_err(|e| Error::io("set link name", e))
}

/// Whether two entries have the same mode, owner, device number and extended attributes.
fn same_meta(
    ldir: BorrowedFd<'_>,
    udir: BorrowedFd<'_>,
    name: &CStr,
    l: &FileStat,
    u: &FileStat,
    path: &[u8],
) -> Result<bool> {
    if l.st_mode != u.st_mode
        || l.st_uid != u.st_uid
        || l.st_gid != u.st_gid
        || l.st_rdev != u.st_rdev
    {
        return Ok(false);
    }
    let xattrs = |dir| -> Result<Vec<(CString, Vec<u8>)>> {
        let fd = open_child(dir, name, OFlag::O_PATH).map_err(|e| io_err("open", path, e))?;
        let mut all =
            fsx::read_xattrs(&fd).map_err(|e| Error::io(format!("read xattrs of {path:?}"), e))?;
        all.retain(|(k, _)| {
            !k.as_bytes().starts_with(b"trusted.") && k.as_bytes() != b"security.selinux"
        });
        Ok(all)
    };
    Ok(xattrs(ldir)? == xattrs(udir)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_marks_sides() {
        let c = |s: &str| CString::new(s).unwrap();
        let mut merged = merge(vec![c("a"), c("c"), c("d")], vec![c("b"), c("c")]);
        merged.reverse();
        let got: Vec<(String, bool, bool)> = merged
            .into_iter()
            .map(|(n, l, u)| (n.into_string().unwrap(), l, u))
            .collect();
        assert_eq!(
            got,
            [
                ("a".into(), true, false),
                ("b".into(), false, true),
                ("c".into(), true, true),
                ("d".into(), true, false),
            ]
        );
    }
}
