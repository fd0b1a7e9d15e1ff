//! Mounts as snapshotters describe them: what the consumer (the diff applier, the shim, `ctr`)
//! should pass to mount(2), with the target left empty for the consumer to choose.
//!
//! Nothing here mounts anything; this module only describes and rewrites mount requests.

/// The most bytes of option data the kernel copies in for one mount(2) call: one page,
/// including the terminating NUL, so the data string itself must be shorter.
pub const MAX_MOUNT_DATA: usize = 4096;

/// One mount, in containerd's shape (`type`, `source`, `target`, `options`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Mount {
    /// The filesystem type: `"overlay"`, `"bind"`, ...
    pub kind: String,
    /// The source: a host path for bind mounts, the literal `"overlay"` for overlay mounts.
    pub source: String,
    /// Where to mount; snapshotters leave it empty.
    pub target: String,
    /// Flag options (`ro`, `rw`, `rbind`) and filesystem data (`lowerdir=…`), as strings.
    pub options: Vec<String>,
}

impl Mount {
    /// A bind mount of `source`: `["ro","rbind"]` when `read_only`, otherwise `["rw","rbind"]`.
    pub fn bind(source: impl Into<String>, read_only: bool) -> Self {
        let flag = if read_only { "ro" } else { "rw" };
        Self {
            kind: "bind".to_owned(),
            source: source.into(),
            target: String::new(),
            options: vec![flag.to_owned(), "rbind".to_owned()],
        }
    }

    /// Whether the options ask for a read-only mount (the last of `ro`/`rw` wins).
    pub fn is_read_only(&self) -> bool {
        self.options
            .iter()
            .rev()
            .find(|o| *o == "ro" || *o == "rw")
            .is_some_and(|o| o == "ro")
    }

    /// The value of the first `name=value` option, if any.
    pub fn option_value(&self, name: &str) -> Option<&str> {
        self.options
            .iter()
            .find_map(|o| o.strip_prefix(name).and_then(|rest| rest.strip_prefix('=')))
    }

    /// An overlay mount's lower directories, nearest layer first; `None` without `lowerdir=`.
    pub fn lowerdirs(&self) -> Option<Vec<&str>> {
        self.option_value("lowerdir")
            .map(|v| v.split(':').collect())
    }

    /// containerd's way around the one-page limit on mount data for deep overlay chains.
    ///
    /// Returns the directory that all lower directories share (for snapshotters that keep
    /// layers side by side, `<root>/snapshots`) and a copy of the mount whose `lowerdir=` lists
    /// paths relative to it. A mounter that mounts with that directory as its working directory
    /// (containerd forks a child that `chdir`s, then mounts) gets the same layers with far
    /// shorter data. `None` when there is nothing to shorten: no `lowerdir=`, a single lower
    /// directory, or no common parent below `/`.
    pub fn compact_lowerdirs(&self) -> Option<(String, Mount)> {
        let dirs = self.lowerdirs()?;
        if dirs.len() < 2 || dirs.iter().any(|d| !d.starts_with('/')) {
            return None;
        }
        let common = common_parent(&dirs)?;
        let prefix = format!("{common}/");
        let relative: Vec<&str> = dirs
            .iter()
            .map(|d| d.strip_prefix(&prefix))
            .collect::<Option<_>>()?;
        let mut compacted = self.clone();
        for option in &mut compacted.options {
            if option.starts_with("lowerdir=") {
                *option = format!("lowerdir={}", relative.join(":"));
                break;
            }
        }
        Some((common, compacted))
    }
}

/// The longest directory (by whole path components) that contains every path, excluding the
/// paths themselves and `/`.
fn common_parent(paths: &[&str]) -> Option<String> {
    let split: Vec<Vec<&str>> = paths
        .iter()
        .map(|p| p.split('/').filter(|c| !c.is_empty()).collect())
        .collect();
    let first = split.first()?;
    // A lower directory must stay a non-empty relative path, so the common parent stops short
    // of the shortest path's last component.
    let max = split.iter().map(Vec::len).min()?.saturating_sub(1);
    let mut len = 0;
    while len < max && split.iter().all(|s| s[len] == first[len]) {
        len += 1;
    }
    if len == 0 {
        return None;
    }
    Some(format!("/{}", first[..len].join("/")))
}

/// mount(2)'s `MS_*` flag bits, as `<linux/mount.h>` defines them (the kernel's ABI; core
/// names them itself rather than linking libc, and the runtime's tests check them against it).
pub mod ms {
    #![allow(missing_docs)]
    pub const RDONLY: u64 = 1;
    pub const NOSUID: u64 = 1 << 1;
    pub const NODEV: u64 = 1 << 2;
    pub const NOEXEC: u64 = 1 << 3;
    pub const SYNCHRONOUS: u64 = 1 << 4;
    pub const REMOUNT: u64 = 1 << 5;
    pub const MANDLOCK: u64 = 1 << 6;
    pub const DIRSYNC: u64 = 1 << 7;
    pub const NOSYMFOLLOW: u64 = 1 << 8;
    pub const NOATIME: u64 = 1 << 10;
    pub const NODIRATIME: u64 = 1 << 11;
    pub const BIND: u64 = 1 << 12;
    pub const REC: u64 = 1 << 14;
    pub const SILENT: u64 = 1 << 15;
    pub const POSIXACL: u64 = 1 << 16;
    pub const UNBINDABLE: u64 = 1 << 17;
    pub const PRIVATE: u64 = 1 << 18;
    pub const SLAVE: u64 = 1 << 19;
    pub const SHARED: u64 = 1 << 20;
    pub const RELATIME: u64 = 1 << 21;
    pub const I_VERSION: u64 = 1 << 23;
    pub const STRICTATIME: u64 = 1 << 24;
    pub const LAZYTIME: u64 = 1 << 25;
}

/// What one mount option string does to a mount(2) call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptionEffect {
    /// Sets and clears [`ms`] flag bits (`ro`, `nosuid`, `rbind`, `norelatime`…).
    Flags {
        /// Bits to set.
        set: u64,
        /// Bits to clear.
        clear: u64,
    },
    /// A propagation change (`rslave`…), which needs a mount(2) call of its own.
    Propagation(u64),
    /// Accepted and without effect (`defaults`).
    None,
    /// Not a flag: filesystem data (`lowerdir=…`) or an option the caller knows itself.
    Other,
}

/// The effect of one option as mount(8) and the OCI runtime spec name them, so every place
/// that turns options into a mount(2) call reads them the same way.
pub fn option_effect(opt: &str) -> OptionEffect {
    use ms::*;
    let (set, clear) = match opt {
        "bind" => (BIND, 0),
        "rbind" => (BIND | REC, 0),
        "ro" => (RDONLY, 0),
        "rw" => (0, RDONLY),
        "nosuid" => (NOSUID, 0),
        "suid" => (0, NOSUID),
        "nodev" => (NODEV, 0),
        "dev" => (0, NODEV),
        "noexec" => (NOEXEC, 0),
        "exec" => (0, NOEXEC),
        "sync" => (SYNCHRONOUS, 0),
        "async" => (0, SYNCHRONOUS),
        "dirsync" => (DIRSYNC, 0),
        "remount" => (REMOUNT, 0),
        "mand" => (MANDLOCK, 0),
        "nomand" => (0, MANDLOCK),
        "atime" => (0, NOATIME),
        "noatime" => (NOATIME, 0),
        "diratime" => (0, NODIRATIME),
        "nodiratime" => (NODIRATIME, 0),
        "relatime" => (RELATIME, 0),
        "norelatime" => (0, RELATIME),
        "strictatime" => (STRICTATIME, 0),
        "nostrictatime" => (0, STRICTATIME),
        "silent" => (SILENT, 0),
        "loud" => (0, SILENT),
        "acl" => (POSIXACL, 0),
        "noacl" => (0, POSIXACL),
        "iversion" => (I_VERSION, 0),
        "noiversion" => (0, I_VERSION),
        "lazytime" => (LAZYTIME, 0),
        "nolazytime" => (0, LAZYTIME),
        "nosymfollow" => (NOSYMFOLLOW, 0),
        "symfollow" => (0, NOSYMFOLLOW),
        "defaults" => return OptionEffect::None,
        "private" => return OptionEffect::Propagation(PRIVATE),
        "rprivate" => return OptionEffect::Propagation(PRIVATE | REC),
        "shared" => return OptionEffect::Propagation(SHARED),
        "rshared" => return OptionEffect::Propagation(SHARED | REC),
        "slave" => return OptionEffect::Propagation(SLAVE),
        "rslave" => return OptionEffect::Propagation(SLAVE | REC),
        "unbindable" => return OptionEffect::Propagation(UNBINDABLE),
        "runbindable" => return OptionEffect::Propagation(UNBINDABLE | REC),
        _ => return OptionEffect::Other,
    };
    OptionEffect::Flags { set, clear }
}

/// Splits options into the [`ms`] flags they leave set (in order, so `ro,rw` is read-write) and
/// the filesystem data, dropping propagation and no-ops: what a one-call mount of a
/// snapshotter's mount needs.
pub fn flags_and_data<'a>(options: impl IntoIterator<Item = &'a str>) -> (u64, Vec<&'a str>) {
    let mut flags = 0;
    let mut data = Vec::new();
    for opt in options {
        match option_effect(opt) {
            OptionEffect::Flags { set, clear } => flags = (flags | set) & !clear,
            OptionEffect::Propagation(_) | OptionEffect::None => {}
            OptionEffect::Other => data.push(opt),
        }
    }
    (flags, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overlay(lower: &[&str]) -> Mount {
        Mount {
            kind: "overlay".into(),
            source: "overlay".into(),
            target: String::new(),
            options: vec![
                "index=off".into(),
                "workdir=/r/snapshots/9/work".into(),
                "upperdir=/r/snapshots/9/fs".into(),
                format!("lowerdir={}", lower.join(":")),
            ],
        }
    }

    #[test]
    fn bind_and_read_only() {
        let m = Mount::bind("/x", true);
        assert_eq!(m.options, ["ro", "rbind"]);
        assert!(m.is_read_only());
        assert!(!Mount::bind("/x", false).is_read_only());
    }

    #[test]
    fn compacts_to_common_parent() {
        let m = overlay(&[
            "/r/snapshots/12/fs",
            "/r/snapshots/3/fs",
            "/r/snapshots/1/fs",
        ]);
        assert_eq!(
            m.lowerdirs().unwrap(),
            [
                "/r/snapshots/12/fs",
                "/r/snapshots/3/fs",
                "/r/snapshots/1/fs"
            ]
        );
        let (dir, c) = m.compact_lowerdirs().unwrap();
        assert_eq!(dir, "/r/snapshots");
        assert_eq!(c.option_value("lowerdir"), Some("12/fs:3/fs:1/fs"));
        assert_eq!(c.option_value("upperdir"), Some("/r/snapshots/9/fs"));
        assert_eq!(c.options.len(), m.options.len());
    }

    #[test]
    fn nothing_to_compact() {
        assert!(
            overlay(&["/r/snapshots/1/fs"])
                .compact_lowerdirs()
                .is_none()
        );
        assert!(overlay(&["/a/fs", "/b/fs"]).compact_lowerdirs().is_none());
        assert!(overlay(&["rel/1", "rel/2"]).compact_lowerdirs().is_none());
        assert!(Mount::bind("/x", true).compact_lowerdirs().is_none());
        // One path inside another: the common parent must leave both non-empty.
        let (dir, c) = overlay(&["/r/a", "/r/a/b"]).compact_lowerdirs().unwrap();
        assert_eq!(dir, "/r");
        assert_eq!(c.option_value("lowerdir"), Some("a:a/b"));
    }

    #[test]
    fn options_map_to_flags_propagation_or_data() {
        use ms::*;
        assert_eq!(
            option_effect("rbind"),
            OptionEffect::Flags {
                set: BIND | REC,
                clear: 0
            }
        );
        assert_eq!(
            option_effect("rw"),
            OptionEffect::Flags {
                set: 0,
                clear: RDONLY
            }
        );
        assert_eq!(
            option_effect("rslave"),
            OptionEffect::Propagation(SLAVE | REC)
        );
        assert_eq!(option_effect("defaults"), OptionEffect::None);
        assert_eq!(option_effect("lowerdir=/a:/b"), OptionEffect::Other);
        assert_eq!(option_effect("rro"), OptionEffect::Other);
        assert_eq!(
            flags_and_data(["ro", "nosuid", "lowerdir=/a", "rw", "rslave", "index=off"]),
            (NOSUID, vec!["lowerdir=/a", "index=off"])
        );
    }
}
