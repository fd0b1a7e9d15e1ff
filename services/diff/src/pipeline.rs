//! Applying one layer on three threads.
//!
//! Applying a layer makes three passes over its bytes that do not depend on each other until
//! the end: sha256 of the compressed blob (to check it against its descriptor), decompression
//! plus sha256 of the uncompressed stream (the diffID), and the untar itself (tar parsing and
//! writes). One after the other, the two hashes cost as much CPU as the rest, so each pass runs
//! on a thread of its own:
//!
//! - the **verifier** reads the whole blob on its own (from the page cache: the blob was just
//!   written or read) and hashes it;
//! - the **inflater** reads the blob, decompresses it, hashes what comes out and hands it over
//!   in [`CHUNK`]-sized buffers through a short bounded channel;
//! - the calling thread untars from that channel ([`Chunks`] is its `Read`).
//!
//! Buffers go back to the inflater on a second channel, so a layer of any size uses at most
//! [`DEPTH`]` + 2` of them. The results are judged as before: the compressed digest decides
//! first (a corrupt blob is DataLoss whatever the untar made of it), then the untar's error,
//! then the inflater's.

use std::io::{self, BufReader, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SendError, SyncSender, TryRecvError, sync_channel};

use berth_core::content::ReaderAt;
use berth_core::digest::Digester;
use berth_core::{Digest, Error, Result};

use crate::compress;

/// The size of one handed-over piece of the uncompressed stream, and of blob reads.
pub(crate) const CHUNK: usize = 1 << 20;
/// Pieces in flight between the inflater and the untar.
const DEPTH: usize = 4;

/// Runs `apply` over the uncompressed stream of `blob` while the digests are computed beside
/// it. Returns the blob's digest, then either `apply`'s error or the diffID and uncompressed
/// size.
pub(crate) fn run(
    blob: &dyn ReaderAt,
    apply: impl FnOnce(&mut Chunks) -> Result<()>,
) -> Result<(Digest, Result<(Digest, u64)>)> {
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let verifier = scope.spawn(|| blob_digest(blob));
        let (data_tx, data_rx) = sync_channel(DEPTH);
        let (free_tx, free_rx) = sync_channel(DEPTH + 2);
        let inflater = {
            let stop = &stop;
            scope.spawn(move || inflate(blob, &data_tx, &free_rx, stop))
        };
        let mut chunks = Chunks {
            data: data_rx,
            free: free_tx,
            current: Vec::new(),
            pos: 0,
        };
        let applied = apply(&mut chunks);
        if applied.is_err() {
            // Nobody will look at the diffID: the inflater may stop early.
            stop.store(true, Ordering::Relaxed);
        }
        // Closing the channel lets the inflater finish the stream (the diffID covers what
        // follows the tar's end marker too) without handing anything over.
        drop(chunks);
        let digest = verifier
            .join()
            .map_err(|_| Error::internal("the layer verifier thread panicked"))??;
        let inflated = inflater
            .join()
            .map_err(|_| Error::internal("the layer inflater thread panicked"))?;
        Ok((digest, applied.and(inflated)))
    })
}

/// The sha256 of the whole blob.
fn blob_digest(blob: &dyn ReaderAt) -> Result<Digest> {
    let mut digester = Digester::new();
    let mut buf = vec![0; CHUNK];
    let mut offset = 0u64;
    loop {
        let n = blob
            .read_at(&mut buf, offset)
            .map_err(|e| e.context("verify layer blob"))?;
        if n == 0 {
            return Ok(digester.finish());
        }
        digester.update(&buf[..n]);
        offset += n as u64;
    }
}

/// Decompresses the blob, hashing and handing over the uncompressed stream; returns its
/// digest and size. Errors go to the untar too, so that it stops where the stream broke.
fn inflate(
    blob: &dyn ReaderAt,
    data: &SyncSender<io::Result<Vec<u8>>>,
    free: &Receiver<Vec<u8>>,
    stop: &AtomicBool,
) -> Result<(Digest, u64)> {
    let fail = |what: &'static str, e: io::Error| {
        let err =
            Error::invalid_argument(what).with_source(io::Error::new(e.kind(), e.to_string()));
        let _ = data.send(Err(e));
        err
    };
    let mut stream = compress::decompress(BufReader::with_capacity(
        CHUNK,
        BlobRead { blob, offset: 0 },
    ))
    .map_err(|e| fail("start decompressing layer", e))?;
    let mut digester = Digester::new();
    let mut count = 0u64;
    let mut allocated = 0;
    let mut open = true;
    // The buffer kept once the untar is gone and nothing is handed over any more.
    let mut spare = None;
    loop {
        // A returned buffer if there is one; a new one while fewer than the channels can hold
        // exist; else wait for the untar to give one back.
        let mut buf = match spare.take() {
            Some(buf) => buf,
            None => match free.try_recv() {
                Ok(buf) => buf,
                Err(TryRecvError::Empty) if allocated < DEPTH + 2 => {
                    allocated += 1;
                    Vec::with_capacity(CHUNK)
                }
                Err(TryRecvError::Empty) => free.recv().unwrap_or_default(),
                Err(TryRecvError::Disconnected) => Vec::new(),
            },
        };
        buf.resize(CHUNK, 0);
        let n = fill(&mut stream, &mut buf).map_err(|e| fail("decompress layer", e))?;
        if n == 0 {
            return Ok((digester.finish(), count));
        }
        buf.truncate(n);
        digester.update(&buf);
        count += n as u64;
        if !open {
            spare = Some(buf);
        } else if let Err(SendError(back)) = data.send(Ok(buf)) {
            open = false;
            spare = back.ok();
        }
        if !open && stop.load(Ordering::Relaxed) {
            return Err(Error::internal("layer apply abandoned"));
        }
    }
}

/// Reads until `buf` is full or the stream ends.
fn fill(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
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

/// The uncompressed stream as the untar reads it, a handed-over buffer at a time.
pub(crate) struct Chunks {
    data: Receiver<io::Result<Vec<u8>>>,
    free: SyncSender<Vec<u8>>,
    current: Vec<u8>,
    pos: usize,
}

impl Read for Chunks {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.current.len() {
            match self.data.recv() {
                Ok(Ok(next)) => {
                    let done = std::mem::replace(&mut self.current, next);
                    self.pos = 0;
                    if done.capacity() > 0 {
                        // The inflater may have stopped waiting for it: then it is dropped.
                        let _ = self.free.try_send(done);
                    }
                }
                Ok(Err(e)) => return Err(e),
                // The inflater is done: the end of the stream.
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Sequential reads of a blob; each read fills the buffer unless the blob ends.
struct BlobRead<'a> {
    blob: &'a dyn ReaderAt,
    offset: u64,
}

impl Read for BlobRead<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            let k = self
                .blob
                .read_at(&mut buf[n..], self.offset)
                .map_err(io::Error::other)?;
            if k == 0 {
                break;
            }
            self.offset += k as u64;
            n += k;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    struct Mem(Vec<u8>);

    impl ReaderAt for Mem {
        fn size(&self) -> u64 {
            self.0.len() as u64
        }

        fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
            let start = usize::try_from(offset).unwrap().min(self.0.len());
            let n = buf.len().min(self.0.len() - start);
            buf[..n].copy_from_slice(&self.0[start..start + n]);
            Ok(n)
        }
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut w = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        w.write_all(data).unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn the_reader_sees_the_whole_stream_and_the_digests_cover_it() {
        // Several chunks, and a length that is no multiple of one.
        let data: Vec<u8> = (0..(3 * CHUNK + 12345)).map(|i| (i % 251) as u8).collect();
        let blob = Mem(gzip(&data));
        let (digest, inflated) = run(&blob, |r| {
            let mut seen = Vec::new();
            r.read_to_end(&mut seen).unwrap();
            assert_eq!(seen, data);
            Ok(())
        })
        .unwrap();
        assert_eq!(digest, Digest::of(&blob.0));
        assert_eq!(inflated.unwrap(), (Digest::of(&data), data.len() as u64));
    }

    #[test]
    fn the_diff_id_covers_what_the_reader_left() {
        let data = vec![7u8; 5 * CHUNK];
        let blob = Mem(gzip(&data));
        let (_, inflated) = run(&blob, |r| {
            let mut first = vec![0; 10];
            r.read_exact(&mut first).unwrap();
            Ok(())
        })
        .unwrap();
        assert_eq!(inflated.unwrap(), (Digest::of(&data), data.len() as u64));
    }

    #[test]
    fn errors_of_either_side_come_back() {
        let data = vec![1u8; 2 * CHUNK];
        let blob = Mem(gzip(&data));
        let (digest, inflated) = run(&blob, |_| Err(Error::invalid_argument("bad tar"))).unwrap();
        assert_eq!(digest, Digest::of(&blob.0), "the blob is still verified");
        assert!(inflated.unwrap_err().to_string().contains("bad tar"));

        // A gzip stream cut short: the reader sees an error, so does the result.
        let mut cut = gzip(&data);
        cut.truncate(cut.len() / 2);
        let blob = Mem(cut);
        let (_, inflated) = run(&blob, |r| {
            let mut sink = Vec::new();
            let err = r.read_to_end(&mut sink).unwrap_err();
            Err(Error::invalid_argument("read layer").with_source(err))
        })
        .unwrap();
        assert_eq!(
            inflated.unwrap_err().kind(),
            berth_core::ErrorKind::InvalidArgument
        );
    }
}
