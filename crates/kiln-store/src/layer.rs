//! Layers coming from outside (an imported root filesystem, a loaded
//! archive): decompressed by content, every entry checked, and rewritten as
//! a plain tar blob. Layers are kept uncompressed in the store, so a layer's
//! blob digest is its diffID and local builds never pay for compression;
//! compression happens once, at export or push.

use std::io::{self, BufRead, BufReader, Read};
use std::path::{Component, Path, PathBuf};

use crate::blobs::Blobs;
use crate::digest::Digest;
use crate::error::StoreError;

/// How a tar stream is compressed, from its first bytes.
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

/// Opens a stored layer as a plain tar stream, decompressing a gzip layer
/// (as loaded or pulled images have) by its content.
pub fn open_layer(blobs: &Blobs, digest: &Digest) -> Result<Box<dyn Read>, StoreError> {
    let mut reader = BufReader::new(blobs.open(digest)?);
    let head = reader
        .fill_buf()
        .map_err(|e| StoreError::io(blobs.path(digest), e))?;
    match Compression::detect(head) {
        Compression::None => Ok(Box::new(reader)),
        Compression::Gzip => Ok(Box::new(flate2::read::MultiGzDecoder::new(reader))),
        other => Err(StoreError::Unsupported(format!(
            "layer {digest}: {other:?} compressed layers are not supported yet"
        ))),
    }
}

/// A stored layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layer {
    /// Digest of the uncompressed tar: blob digest and diffID at once.
    pub digest: Digest,
    pub size: u64,
    pub entries: u64,
}

/// Why a tar was refused.
fn hostile(what: &str, entry: &Path, why: &str) -> StoreError {
    StoreError::HostileArchive {
        what: what.to_owned(),
        entry: entry.display().to_string(),
        reason: why.to_owned(),
    }
}

/// The path inside the root an archive path names: leading `/` and `./`
/// dropped, `.` segments removed; `None` if `..` would climb out.
pub fn contained_path(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Reads a (possibly compressed) tar, checks every entry, and stores it as
/// a plain tar. `what` names the archive in errors. Refused: entries whose
/// path or hard-link target leaves the root, and unknown compressions.
pub fn import_layer(blobs: &Blobs, reader: impl Read, what: &str) -> Result<Layer, StoreError> {
    let mut reader = BufReader::with_capacity(1 << 16, reader);
    let head = reader.fill_buf().map_err(|e| StoreError::io(what, e))?;
    let stream: Box<dyn Read> = match Compression::detect(head) {
        Compression::None => Box::new(reader),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(reader)),
        other => {
            return Err(StoreError::Unsupported(format!(
            "{what}: {other:?} compressed archives are not supported yet (use gzip or plain tar)"
        )))
        }
    };
    let mut archive = tar::Archive::new(stream);
    let mut writer = blobs.writer()?;
    let mut builder = tar::Builder::new(&mut writer);
    builder.mode(tar::HeaderMode::Complete);
    let mut entries = 0u64;
    let bad = |e: io::Error| StoreError::io(what, e);
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let raw_path = entry.path().map_err(bad)?.into_owned();
        let Some(path) = contained_path(&raw_path) else {
            return Err(hostile(what, &raw_path, "the path leaves the root (..)"));
        };
        if path.as_os_str().is_empty() {
            // The root itself (`./`): its metadata is the runtime's business.
            continue;
        }
        let mut header = entry.header().clone();
        let kind = header.entry_type();
        if kind.is_hard_link() {
            let target = entry
                .link_name()
                .map_err(bad)?
                .ok_or_else(|| hostile(what, &raw_path, "a hard link without a target"))?
                .into_owned();
            let Some(target) = contained_path(&target) else {
                return Err(hostile(
                    what,
                    &raw_path,
                    "a hard link to a file outside the root",
                ));
            };
            builder
                .append_link(&mut header, &path, &target)
                .map_err(bad)?;
        } else if kind.is_symlink() {
            // Symlink targets are resolved inside the container's root at
            // run time; whoever unpacks must not follow them (see unpack).
            let target = entry
                .link_name()
                .map_err(bad)?
                .ok_or_else(|| hostile(what, &raw_path, "a symlink without a target"))?
                .into_owned();
            builder
                .append_link(&mut header, &path, &target)
                .map_err(bad)?;
        } else if kind.is_pax_global_extensions()
            || kind.is_pax_local_extensions()
            || kind.is_gnu_longname()
            || kind.is_gnu_longlink()
        {
            // The tar crate has already applied these to the entry they describe.
            continue;
        } else {
            builder
                .append_data(&mut header, &path, &mut entry)
                .map_err(bad)?;
        }
        entries += 1;
    }
    builder.finish().map_err(bad)?;
    drop(builder);
    let (digest, size) = writer.commit()?;
    Ok(Layer {
        digest,
        size,
        entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contained_paths() {
        let c = |p: &str| contained_path(Path::new(p)).map(|p| p.display().to_string());
        assert_eq!(c("./bin/sh").as_deref(), Some("bin/sh"));
        assert_eq!(c("/etc/passwd").as_deref(), Some("etc/passwd"));
        assert_eq!(c("a/../b").as_deref(), Some("b"));
        assert_eq!(c("../etc/passwd"), None);
        assert_eq!(c("a/../../b"), None);
    }

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
}
