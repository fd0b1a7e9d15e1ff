//! Reading the kernel's generated files (/proc, /sys, cgroupfs).

use std::io::{self, Read};
use std::path::Path;

/// Reads a whole generated file in one or two read(2)s. These files report a size of 0, so a
/// plain `read_to_string` starts from a 32-byte probe and doubles: ten calls for mountinfo,
/// each of them regenerating the text up to where it stops.
pub fn read(path: impl AsRef<Path>) -> io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut text = String::with_capacity(16 << 10);
    file.read_to_string(&mut text)?;
    Ok(text)
}
