//! Reading the kernel's generated files (/proc, /sys, cgroupfs).

use std::io::{self, Read};
use std::path::Path;

/// Reads a whole generated file, usually in two read(2)s. These files report a size of 0, so
/// a plain `read_to_string` asks for the size (statx, lseek), then reads at most 8 KiB at a
/// time: three more calls for a host's mountinfo, each regenerating the text up to where it
/// stops. This reads into a buffer that doubles when a read fills it, starting at one page:
/// most of these files are a few bytes, and a fresh buffer is zeroed and faulted in whole.
pub fn read(path: impl AsRef<Path>) -> io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 4 << 10];
    let mut len = 0;
    loop {
        let n = match file.read(&mut buf[len..]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            break;
        }
        len += n;
        if len == buf.len() {
            buf.resize(len * 2, 0);
        }
    }
    buf.truncate(len);
    String::from_utf8(buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_whole_files_across_buffer_fills() {
        // A regular file three buffers long comes back byte for byte.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("long");
        let text: String = (0..10_000).map(|i| format!("line {i:05}\n")).collect();
        assert!(text.len() > 3 * (4 << 10));
        std::fs::write(&path, &text).unwrap();
        assert_eq!(super::read(&path).unwrap(), text);
        // A generated file (its size says 0) is read to its end.
        let status = super::read("/proc/self/mountinfo").unwrap();
        assert!(status.ends_with('\n'));
        assert!(super::read(dir.path().join("missing")).is_err());
    }
}
