//! Compressed streams: recognising gzip, zstd, bzip2 and xz by their first
//! bytes (never by a file name or media type, which can lie), reading them
//! back as plain bytes, and compressing layers for export (gzip by default,
//! zstd on request).

use std::io::{self, BufRead, Read};

use crate::digest::Digest;
use crate::error::StoreError;
use crate::store::Store;

/// How a stream is compressed, from its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
    Bzip2,
    Xz,
}

impl Compression {
    pub fn detect(head: &[u8]) -> Compression {
        match head {
            [0x1f, 0x8b, ..] => Compression::Gzip,
            [0x28, 0xb5, 0x2f, 0xfd, ..] => Compression::Zstd,
            [b'B', b'Z', b'h', ..] => Compression::Bzip2,
            [0xfd, b'7', b'z', b'X', b'Z', 0x00, ..] => Compression::Xz,
            _ => Compression::None,
        }
    }
}

/// `reader` as plain bytes, whatever of the four compressions it uses.
pub fn decompress<'a, R: BufRead + 'a>(mut reader: R) -> io::Result<Box<dyn Read + 'a>> {
    let head = reader.fill_buf()?;
    Ok(match Compression::detect(head) {
        Compression::None => Box::new(reader),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(reader)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(reader)?),
        Compression::Bzip2 => Box::new(bzip2::bufread::MultiBzDecoder::new(reader)),
        Compression::Xz => Box::new(liblzma::bufread::XzDecoder::new_multi_decoder(reader)),
    })
}

/// The compression of layers leaving the store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LayerCompression {
    /// What every registry and runtime reads.
    #[default]
    Gzip,
    /// Faster to write and to read; needs containerd 1.5+ / Docker 23+.
    Zstd,
}

impl LayerCompression {
    pub fn media_type(self) -> &'static str {
        match self {
            LayerCompression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            LayerCompression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }
}

/// Compresses the plain layer `layer` into a new blob; returns its digest
/// and size. Fast levels: exports are read once, and the size gained by
/// higher levels rarely pays for the time.
pub fn compress_layer(
    store: &Store,
    layer: &Digest,
    compression: LayerCompression,
) -> Result<(Digest, u64), StoreError> {
    let source_path = store.blobs().path(layer);
    let io_error = |e| StoreError::io(&source_path, e);
    let mut source = store.blobs().open(layer)?;
    let writer = store.blobs().writer()?;
    let writer = match compression {
        LayerCompression::Gzip => {
            let mut encoder = flate2::write::GzEncoder::new(writer, flate2::Compression::fast());
            io::copy(&mut source, &mut encoder).map_err(io_error)?;
            encoder.finish().map_err(io_error)?
        }
        LayerCompression::Zstd => {
            let mut encoder = zstd::stream::write::Encoder::new(writer, 3).map_err(io_error)?;
            io::copy(&mut source, &mut encoder).map_err(io_error)?;
            encoder.finish().map_err(io_error)?
        }
    };
    writer.commit()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn detects_compression_by_content() {
        assert_eq!(Compression::detect(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(
            Compression::detect(&[0x28, 0xb5, 0x2f, 0xfd]),
            Compression::Zstd
        );
        assert_eq!(Compression::detect(b"BZh91AY"), Compression::Bzip2);
        assert_eq!(Compression::detect(b"\xfd7zXZ\x00"), Compression::Xz);
        assert_eq!(Compression::detect(b"bin/\0\0\0"), Compression::None);
    }

    #[test]
    fn every_compression_reads_back() {
        let data = b"kiln layer bytes ".repeat(1000);
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gzip.write_all(&data).unwrap();
        let mut bzip = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
        bzip.write_all(&data).unwrap();
        let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 1);
        xz.write_all(&data).unwrap();
        let encoded = [
            data.clone(),
            gzip.finish().unwrap(),
            zstd::encode_all(&data[..], 1).unwrap(),
            bzip.finish().unwrap(),
            xz.finish().unwrap(),
        ];
        for bytes in encoded {
            let mut out = Vec::new();
            decompress(&bytes[..])
                .unwrap()
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out, data);
        }
    }
}
