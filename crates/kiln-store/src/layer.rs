//! Layers coming from outside (an imported root filesystem, a loaded
//! archive): decompressed by content, every entry checked, and rewritten as
//! a plain tar blob. Layers are kept uncompressed in the store, so a layer's
//! blob digest is its diffID and local builds never pay for compression;
//! compression happens once, at export or push.

use std::io::{self, BufReader, Read};
use std::path::{Component, Path, PathBuf};

use crate::blobs::Blobs;
use crate::compression::decompress;
use crate::digest::Digest;
use crate::error::StoreError;

/// Opens a stored layer as a plain tar stream, decompressing a compressed
/// layer (as loaded or pulled images have) by its content. Layers of loaded
/// archives are stored as they came, so the stream is checked as it is
/// read: an entry whose headers pass 1 MiB is an error
/// ([`crate::tar_headers::CheckedTar`]), never a buffer of that size.
pub fn open_layer(blobs: &Blobs, digest: &Digest) -> Result<Box<dyn Read>, StoreError> {
    let reader = BufReader::new(blobs.open(digest)?);
    let plain = decompress(reader).map_err(|e| StoreError::io(blobs.path(digest), e))?;
    Ok(Box::new(crate::tar_headers::CheckedTar::new(plain)))
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
    let reader = BufReader::with_capacity(1 << 16, reader);
    let stream = decompress(reader).map_err(|e| StoreError::io(what, e))?;
    let (stream, header_budget) = crate::tar_headers::limit_headers(stream);
    let mut archive = tar::Archive::new(stream);
    let mut writer = blobs.writer()?;
    let mut builder = tar::Builder::new(&mut writer);
    builder.mode(tar::HeaderMode::Complete);
    let mut entries = 0u64;
    let bad = |e: io::Error| StoreError::io(what, e);
    let mut archive_entries = archive.entries().map_err(bad)?;
    // Every entry's data is read below (links and directories have none),
    // so the bounded `next` reads only headers.
    while let Some(entry) = header_budget.next(&mut archive_entries) {
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
}
