//! Layer compression: detected from magic bytes when reading, chosen by media type when
//! writing.

use std::io::{self, BufRead, Read, Write};

use berth_core::diff::{
    MEDIA_TYPE_DOCKER_LAYER, MEDIA_TYPE_DOCKER_LAYER_GZIP, MEDIA_TYPE_LAYER, MEDIA_TYPE_LAYER_GZIP,
    MEDIA_TYPE_LAYER_ZSTD,
};
use berth_core::{Error, Result};

/// How a layer's bytes are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip (RFC 1952), possibly several members.
    Gzip,
    /// zstd, possibly several frames.
    Zstd,
}

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];

impl Compression {
    /// The compression that `prefix` (the first bytes of a blob) starts with; a plain tar
    /// otherwise, as containerd decides whatever the media type claims.
    pub fn detect(prefix: &[u8]) -> Self {
        if prefix.starts_with(GZIP_MAGIC) {
            Compression::Gzip
        } else if prefix.starts_with(ZSTD_MAGIC) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    /// The compression a layer of `media_type` is written with; NotImplemented for anything
    /// but the OCI layer types (and Docker's, which are gzip or plain).
    pub fn for_media_type(media_type: &str) -> Result<Self> {
        match media_type {
            MEDIA_TYPE_LAYER | MEDIA_TYPE_DOCKER_LAYER => Ok(Compression::None),
            MEDIA_TYPE_LAYER_GZIP | MEDIA_TYPE_DOCKER_LAYER_GZIP => Ok(Compression::Gzip),
            MEDIA_TYPE_LAYER_ZSTD => Ok(Compression::Zstd),
            other => Err(Error::not_implemented(format!(
                "unsupported diff media type {other:?}"
            ))),
        }
    }
}

/// Decompresses `compressed` according to its magic bytes. Its first `fill_buf` must return
/// at least four bytes unless the stream is shorter (a `BufReader` over a reader that fills
/// whole buffers, as the applier's blob reader does).
pub fn decompress<'a, R: BufRead + 'a>(mut compressed: R) -> io::Result<Box<dyn Read + 'a>> {
    let buf = compressed.fill_buf()?;
    let compression = Compression::detect(&buf[..buf.len().min(ZSTD_MAGIC.len())]);
    Ok(match compression {
        Compression::None => Box::new(compressed),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(compressed)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(compressed)?),
    })
}

/// A compressing writer over `W`, finished with [`Compressor::finish`].
pub enum Compressor<W: Write> {
    /// No compression.
    None(W),
    /// gzip at the default level (containerd's choice too).
    Gzip(flate2::write::GzEncoder<W>),
    /// zstd at level 3, zstd's and containerd's default.
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Compressor<W> {
    /// Starts compressing into `inner`.
    pub fn new(compression: Compression, inner: W) -> io::Result<Self> {
        Ok(match compression {
            Compression::None => Compressor::None(inner),
            Compression::Gzip => Compressor::Gzip(flate2::write::GzEncoder::new(
                inner,
                flate2::Compression::default(),
            )),
            Compression::Zstd => Compressor::Zstd(zstd::stream::write::Encoder::new(inner, 3)?),
        })
    }

    /// Writes the compressed stream's trailer and returns the inner writer.
    pub fn finish(self) -> io::Result<W> {
        match self {
            Compressor::None(w) => Ok(w),
            Compressor::Gzip(w) => w.finish(),
            Compressor::Zstd(w) => w.finish(),
        }
    }
}

impl<W: Write> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Compressor::None(w) => w.write(buf),
            Compressor::Gzip(w) => w.write(buf),
            Compressor::Zstd(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Compressor::None(w) => w.flush(),
            Compressor::Gzip(w) => w.flush(),
            Compressor::Zstd(w) => w.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(c: Compression) {
        let data: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let mut w = Compressor::new(c, Vec::new()).unwrap();
        w.write_all(&data).unwrap();
        let blob = w.finish().unwrap();
        assert_eq!(Compression::detect(&blob), c);
        let mut out = Vec::new();
        decompress(io::BufReader::new(&blob[..]))
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, data);
    }

    #[test]
    fn round_trips() {
        round_trip(Compression::None);
        round_trip(Compression::Gzip);
        round_trip(Compression::Zstd);
    }

    #[test]
    fn media_types() {
        assert_eq!(
            Compression::for_media_type(MEDIA_TYPE_LAYER_ZSTD).unwrap(),
            Compression::Zstd
        );
        let err =
            Compression::for_media_type("application/vnd.oci.image.layer.v1.tar+lz4").unwrap_err();
        assert_eq!(err.kind(), berth_core::ErrorKind::NotImplemented);
    }
}
