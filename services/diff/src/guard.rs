//! A reader that follows the tar framing of the bytes the `tar` crate pulls through it and
//! refuses oversized extension headers.
//!
//! The `tar` crate reads a PAX header or GNU long name/link wholly into memory, however large
//! its header says it is, so a small compressed layer could make the daemon allocate
//! gigabytes. This guard sees every byte on its way to the parser, tracks where headers sit
//! (using the crate's own header type to decode them, and the same rules for PAX `size`
//! overrides and GNU sparse extension blocks), and fails the read before an extension larger
//! than [`MAX_EXTENSION`] is buffered. It never changes the bytes.

use std::io::{self, Read};

/// The largest extension header (PAX `x`/`g`, GNU `L`/`K`) accepted: 1 MiB, Go's
/// `archive/tar` limit too.
pub const MAX_EXTENSION: u64 = 1 << 20;

const BLOCK: usize = 512;

enum State {
    /// Collecting the header block that starts here.
    Header,
    /// Collecting a GNU sparse extension block; the entry's data (`data` bytes) follows.
    SparseExt { data: u64 },
    /// Passing over entry data and its padding, keeping the bytes of a PAX header.
    Skip {
        data: u64,
        pad: u64,
        capture: Option<Vec<u8>>,
    },
    /// After the end-of-archive block (or something the parser itself will reject).
    Done,
}

/// See the module documentation.
pub struct HeaderGuard<R> {
    inner: R,
    state: State,
    block: [u8; BLOCK],
    filled: usize,
    /// The `size` of the last PAX header, which replaces the next entry's header size.
    pax_size: Option<u64>,
}

impl<R: Read> HeaderGuard<R> {
    /// Guards the tar stream `inner`.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            state: State::Header,
            block: [0; BLOCK],
            filled: 0,
            pax_size: None,
        }
    }

    fn observe(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            match &mut self.state {
                State::Done => return Ok(()),
                State::Header | State::SparseExt { .. } => {
                    let n = (BLOCK - self.filled).min(data.len());
                    self.block[self.filled..self.filled + n].copy_from_slice(&data[..n]);
                    self.filled += n;
                    data = &data[n..];
                    if self.filled == BLOCK {
                        self.filled = 0;
                        self.block_done()?;
                    }
                }
                State::Skip {
                    data: left,
                    pad,
                    capture,
                } => {
                    let take = (*left).min(data.len() as u64) as usize;
                    if let Some(buf) = capture {
                        buf.extend_from_slice(&data[..take]);
                    }
                    *left -= take as u64;
                    data = &data[take..];
                    let skip_pad = (*pad).min(data.len() as u64) as usize;
                    if *left == 0 {
                        *pad -= skip_pad as u64;
                        data = &data[skip_pad..];
                    }
                    if *left == 0 && *pad == 0 {
                        if let Some(buf) = capture.take() {
                            self.pax_size = pax_size(&buf);
                        }
                        self.state = State::Header;
                    }
                }
            }
        }
        Ok(())
    }

    fn block_done(&mut self) -> io::Result<()> {
        if let State::SparseExt { data } = self.state {
            let mut ext = tar::GnuExtSparseHeader::new();
            ext.as_mut_bytes().copy_from_slice(&self.block);
            self.state = if ext.is_extended() {
                State::SparseExt { data }
            } else {
                skip(data, None)
            };
            return Ok(());
        }
        if self.block.iter().all(|b| *b == 0) {
            self.state = State::Done;
            return Ok(());
        }
        let mut header = tar::Header::new_old();
        header.as_mut_bytes().copy_from_slice(&self.block);
        let Ok(size) = header.entry_size() else {
            // The parser rejects this header itself.
            self.state = State::Done;
            return Ok(());
        };
        let kind = header.entry_type();
        let recognized = header.as_ustar().is_some() || header.as_gnu().is_some();
        let extension = kind.is_gnu_longname()
            || kind.is_gnu_longlink()
            || kind.is_pax_local_extensions()
            || kind.is_pax_global_extensions();
        if extension {
            if size > MAX_EXTENSION {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "tar extension header of {size} bytes exceeds the limit of {MAX_EXTENSION}"
                    ),
                ));
            }
            let capture = (recognized && kind.is_pax_local_extensions()).then(Vec::new);
            self.state = skip(size, capture);
            return Ok(());
        }
        let size = self.pax_size.take().unwrap_or(size);
        self.state = match header.as_gnu() {
            Some(gnu) if kind.is_gnu_sparse() && gnu.is_extended() => {
                State::SparseExt { data: size }
            }
            _ => skip(size, None),
        };
        Ok(())
    }
}

fn skip(data: u64, capture: Option<Vec<u8>>) -> State {
    let pad = (BLOCK as u64 - data % BLOCK as u64) % BLOCK as u64;
    if data == 0 && capture.is_none() {
        return State::Header;
    }
    State::Skip { data, pad, capture }
}

/// The `size` record of PAX header data, parsed as the `tar` crate parses it.
fn pax_size(data: &[u8]) -> Option<u64> {
    for ext in tar::PaxExtensions::new(data) {
        let Ok(ext) = ext else { return None };
        if ext.key_bytes() == b"size" {
            return ext.value().ok()?.parse().ok();
        }
    }
    None
}

impl<R: Read> Read for HeaderGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.observe(&buf[..n])?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(data: &[u8], chunk: usize) -> io::Result<()> {
        struct Chunked<'a>(&'a [u8], usize);
        impl Read for Chunked<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = self.1.min(buf.len()).min(self.0.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut archive = tar::Archive::new(HeaderGuard::new(Chunked(data, chunk)));
        for entry in archive.entries()? {
            let mut entry = entry?;
            io::copy(&mut entry, &mut io::sink())?;
        }
        Ok(())
    }

    fn archive(pax_value_len: usize) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let long = "d/".repeat(150) + "file";
        let value = vec![b'v'; pax_value_len];
        b.append_pax_extensions([("SCHILY.xattr.user.big", &value[..])])
            .unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_size(700);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, &long, &[7u8; 700][..]).unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_size(3);
        h.set_path("small").unwrap();
        h.set_cksum();
        b.append(&h, &b"abc"[..]).unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn passes_normal_archives_in_any_chunking() {
        let data = archive(100);
        for chunk in [1, 7, 511, 512, 513, 4096, 1 << 20] {
            drain(&data, chunk).unwrap();
        }
    }

    #[test]
    fn pax_size_override_keeps_framing() {
        // A PAX size record that overrides a bogus header size.
        let mut b = tar::Builder::new(Vec::new());
        b.append_pax_extensions([("size", &b"1000"[..])]).unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_size(1);
        h.set_path("f").unwrap();
        h.set_cksum();
        b.get_mut().extend_from_slice(h.as_bytes());
        b.get_mut().extend_from_slice(&[1u8; 1024]);
        let mut h = tar::Header::new_ustar();
        h.set_size(0);
        h.set_path("g").unwrap();
        h.set_cksum();
        b.append(&h, io::empty()).unwrap();
        let data = b.into_inner().unwrap();
        let mut guard = HeaderGuard::new(&data[..]);
        io::copy(&mut guard, &mut io::sink()).unwrap();
        assert!(matches!(guard.state, State::Done));
        drain(&data, 100).unwrap();
    }

    #[test]
    fn refuses_huge_extensions() {
        let data = archive(MAX_EXTENSION as usize + 1);
        let err = drain(&data, 64 * 1024).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("exceeds"), "{err}");
    }
}
