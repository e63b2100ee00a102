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

/// Compresses the plain layer `layer` into a new blob, on every core;
/// returns its digest and size (hashed as it is written, in the same pass).
/// Fast levels: exports are read once, and the size gained by higher levels
/// rarely pays for the time.
pub fn compress_layer(
    store: &Store,
    layer: &Digest,
    compression: LayerCompression,
) -> Result<(Digest, u64), StoreError> {
    let source_path = store.blobs().path(layer);
    let io_error = |e| StoreError::io(&source_path, e);
    let mut source = store.blobs().open(layer)?;
    let mut writer = store.blobs().writer()?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    match compression {
        LayerCompression::Gzip => {
            parallel_gzip(&mut source, &mut writer, threads).map_err(io_error)?;
        }
        LayerCompression::Zstd => {
            let mut encoder =
                zstd::stream::write::Encoder::new(&mut writer, 3).map_err(io_error)?;
            encoder.multithread(threads as u32).map_err(io_error)?;
            io::copy(&mut source, &mut encoder).map_err(io_error)?;
            encoder.finish().map_err(io_error)?;
        }
    }
    writer.commit()
}

impl LayerCompression {
    fn name(self) -> &'static str {
        match self {
            LayerCompression::Gzip => "gzip",
            LayerCompression::Zstd => "zstd",
        }
    }
}

impl Store {
    /// What `layer` compressed to when this store last compressed it
    /// (digest and size), whether or not that blob is still here: a push
    /// asks the registry for it before compressing again.
    pub fn remembered_compression(
        &self,
        layer: &Digest,
        compression: LayerCompression,
    ) -> Option<(Digest, u64)> {
        let text = std::fs::read_to_string(self.compression_memo(layer, compression)).ok()?;
        let (digest, size) = text.trim().split_once(' ')?;
        Some((digest.parse().ok()?, size.parse().ok()?))
    }

    /// `layer` compressed, as a blob of the store: the one made before if
    /// it is still here, else made now (and remembered). The compression is
    /// deterministic, so the same layer gives the same blob every time.
    pub fn compressed_layer(
        &self,
        layer: &Digest,
        compression: LayerCompression,
    ) -> Result<(Digest, u64), StoreError> {
        if let Some((digest, size)) = self.remembered_compression(layer, compression) {
            // Leased, so GC leaves it to this process from here on.
            if self.blobs().size(&digest) == Some(size) && self.lease(&digest).is_ok() {
                return Ok((digest, size));
            }
        }
        let (digest, size) = compress_layer(self, layer, compression)?;
        let memo = self.compression_memo(layer, compression);
        let dir = self.layout().compressed();
        std::fs::create_dir_all(&dir).map_err(|e| StoreError::io(&dir, e))?;
        self.write_atomic(&memo, format!("{digest} {size}\n").as_bytes())?;
        Ok((digest, size))
    }

    fn compression_memo(
        &self,
        layer: &Digest,
        compression: LayerCompression,
    ) -> std::path::PathBuf {
        self.layout()
            .compressed()
            .join(format!("{}.{}", layer.hex(), compression.name()))
    }
}

/// Size of the pieces compressed independently by [`parallel_gzip`].
const GZIP_BLOCK: usize = 1 << 20;

/// gzip on all cores, as pigz does it in spirit: the input is cut into
/// 1 MiB blocks, each compressed as its own gzip member in parallel, and
/// the members written in order. A sequence of members is one valid gzip
/// stream (RFC 1952), which every decompressor reads; the cost is a few
/// bytes per MiB and no dictionary across blocks.
fn parallel_gzip(
    source: &mut impl Read,
    out: &mut impl io::Write,
    threads: usize,
) -> io::Result<()> {
    use rayon::prelude::*;
    let batch = threads.max(1) * 4;
    loop {
        let mut blocks = Vec::with_capacity(batch);
        for _ in 0..batch {
            let mut block = Vec::with_capacity(GZIP_BLOCK);
            source
                .by_ref()
                .take(GZIP_BLOCK as u64)
                .read_to_end(&mut block)?;
            if block.is_empty() {
                break;
            }
            blocks.push(block);
        }
        if blocks.is_empty() {
            return Ok(());
        }
        let last = blocks.len() < batch || blocks.last().is_some_and(|b| b.len() < GZIP_BLOCK);
        let members: Vec<io::Result<Vec<u8>>> = blocks
            .par_iter()
            .map(|block| {
                let mut encoder = flate2::write::GzEncoder::new(
                    Vec::with_capacity(block.len() / 2),
                    flate2::Compression::fast(),
                );
                io::Write::write_all(&mut encoder, block)?;
                encoder.finish()
            })
            .collect();
        for member in members {
            out.write_all(&member?)?;
        }
        if last {
            return Ok(());
        }
    }
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
        let mut parallel = Vec::new();
        parallel_gzip(&mut &data[..], &mut parallel, 4).unwrap();
        let big: Vec<u8> = (0..3 * GZIP_BLOCK + 17).map(|i| (i % 251) as u8).collect();
        let mut parallel_big = Vec::new();
        parallel_gzip(&mut &big[..], &mut parallel_big, 2).unwrap();
        let mut out = Vec::new();
        decompress(&parallel_big[..])
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, big, "several members read back as one stream");
        for bytes in encoded.into_iter().chain([parallel]) {
            let mut out = Vec::new();
            decompress(&bytes[..])
                .unwrap()
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out, data);
        }
    }
}
