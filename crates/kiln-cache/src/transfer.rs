//! Cache export and import through a directory (`--cache-to
//! type=local,dest=DIR`, `--cache-from type=local,src=DIR`), so another
//! machine with an empty store gets hits. The directory is an OCI image
//! layout holding the layers (`blobs/sha256/…`, readable by OCI tools)
//! plus `kiln-cache.json`, the key → entry map; exports into the same
//! directory accumulate.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use kiln_store::Digest;
use serde::{Deserialize, Serialize};

use crate::index::{CacheError, Entry};
use crate::key::CacheKey;

const INDEX_FILE: &str = "kiln-cache.json";

/// The media type of a registry cache's config: the same key → entry
/// document as `kiln-cache.json`, whose layers are the manifest's.
pub const CACHE_CONFIG_MEDIA_TYPE: &str = "application/vnd.kiln.cache.config.v1+json";

#[derive(Default, Serialize, Deserialize)]
struct Manifest {
    version: u32,
    /// Key (hex) → entry.
    steps: BTreeMap<String, Entry>,
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> CacheError + '_ {
    move |source| CacheError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A cache directory read for `--cache-from`.
pub struct ImportedCache {
    dir: PathBuf,
    steps: BTreeMap<String, Entry>,
}

impl ImportedCache {
    /// Reads the directory's index; a directory without one is an error
    /// (the user named it, so a typo should not pass silently).
    pub fn open(dir: &Path) -> Result<ImportedCache, CacheError> {
        let path = dir.join(INDEX_FILE);
        let bytes = fs::read(&path).map_err(io_error(&path))?;
        ImportedCache::from_document(&bytes, dir, &path)
    }

    /// A cache whose key → entry document is `bytes` (a registry cache's
    /// config) and whose layers are blobs of the OCI layout at `layout`
    /// (where they were pulled to); `what` names it in errors.
    pub fn from_document(
        bytes: &[u8],
        layout: &Path,
        what: &Path,
    ) -> Result<ImportedCache, CacheError> {
        let manifest: Manifest = serde_json::from_slice(bytes)
            .map_err(|e| io_error(what)(io::Error::new(io::ErrorKind::InvalidData, e)))?;
        Ok(ImportedCache {
            dir: layout.to_owned(),
            steps: manifest.steps,
        })
    }

    /// The entry for `key`, with the path of its layer blob, if the
    /// directory has both. The caller verifies the blob as it stores it.
    pub fn step(&self, key: &CacheKey) -> Option<(Entry, Option<PathBuf>)> {
        let entry = self.steps.get(&key.hex())?.clone();
        let blob = match &entry.layer {
            None => None,
            Some(digest) => {
                // A typed digest is 64 hex digits: it names a file in
                // blobs/sha256 and nothing else.
                let path = self.dir.join("blobs/sha256").join(digest.hex());
                if !path.is_file() {
                    return None;
                }
                Some(path)
            }
        };
        Some((entry, blob))
    }
}

/// The key → entry document of `steps`, as a registry cache's config
/// (deterministic: the same steps give the same bytes).
pub fn cache_document(steps: &[(CacheKey, Entry)]) -> Vec<u8> {
    let manifest = Manifest {
        version: 1,
        steps: steps
            .iter()
            .map(|(key, entry)| (key.hex(), entry.clone()))
            .collect(),
    };
    serde_json::to_vec(&manifest).expect("a map of strings and plain entries serializes")
}

/// Writes `steps` (with their layers, found by `layer_path`) into `dir`,
/// keeping what an earlier export put there.
pub fn export(
    dir: &Path,
    steps: &[(CacheKey, Entry)],
    layer_path: impl Fn(&Digest) -> Option<PathBuf>,
) -> Result<usize, CacheError> {
    let blobs = dir.join("blobs/sha256");
    real_dirs(dir, &["blobs", "sha256"])?;
    let layout = dir.join("oci-layout");
    if fs::symlink_metadata(&layout).is_err() {
        write_replacing(&layout, |f| {
            io::Write::write_all(f, br#"{"imageLayoutVersion":"1.0.0"}"#)
        })?;
    }
    let index = dir.join("index.json");
    if fs::symlink_metadata(&index).is_err() {
        let empty = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
        write_replacing(&index, |f| io::Write::write_all(f, empty))?;
    }
    let path = dir.join(INDEX_FILE);
    let mut manifest: Manifest = fs::read(&path)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default();
    manifest.version = 1;
    for (key, entry) in steps {
        if let Some(digest) = &entry.layer {
            let target = blobs.join(digest.hex());
            if fs::symlink_metadata(&target).is_err() {
                let Some(source) = layer_path(digest) else {
                    continue;
                };
                let mut layer = fs::File::open(&source).map_err(io_error(&source))?;
                write_replacing(&target, |f| io::copy(&mut layer, f).map(drop))?;
            }
        }
        manifest.steps.insert(key.hex(), entry.clone());
    }
    let bytes =
        serde_json::to_vec_pretty(&manifest).map_err(|e| io_error(&path)(io::Error::other(e)))?;
    write_replacing(&path, |f| io::Write::write_all(f, &bytes))?;
    Ok(steps.len())
}

/// Creates `dir/a/b...` where missing, refusing any component that is a
/// link: a link planted at `blobs` would put the layers wherever it points.
fn real_dirs(dir: &Path, parts: &[&str]) -> Result<(), CacheError> {
    let mut path = dir.to_path_buf();
    for part in parts {
        path.push(part);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => continue,
            Ok(_) => {
                return Err(io_error(&path)(io::Error::other(
                    "not a directory (a link here is not followed)",
                )))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(&path).map_err(io_error(&path))?
            }
            Err(e) => return Err(io_error(&path)(e)),
        }
    }
    Ok(())
}

/// Writes `target` (in a directory the user named, where anyone may have
/// planted links) through a temp file with an unpredictable name created
/// with `O_EXCL`, renamed over `target`: nothing is ever written through a
/// link, and a failed write leaves `target` as it was.
fn write_replacing(
    target: &Path,
    write: impl FnOnce(&mut fs::File) -> io::Result<()>,
) -> Result<(), CacheError> {
    let dir = target.parent().unwrap_or(Path::new("."));
    let mut temp = tempfile::Builder::new()
        .prefix(".tmp-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666))
        .tempfile_in(dir)
        .map_err(io_error(dir))?;
    write(temp.as_file_mut()).map_err(io_error(target))?;
    temp.persist(target)
        .map_err(|e| e.error)
        .map_err(io_error(target))?;
    Ok(())
}

const CACHE_MOUNTS_FILE: &str = "cache-mounts.tar";

/// Adds the content of `RUN --mount=type=cache` directories (`mounts`, one
/// directory per mount) to the export, as one tar, replacing an earlier one.
pub fn export_cache_mounts(dir: &Path, mounts: &Path) -> Result<(), CacheError> {
    let path = dir.join(CACHE_MOUNTS_FILE);
    write_replacing(&path, |file| {
        let mut tar = tar::Builder::new(io::BufWriter::new(file));
        tar.follow_symlinks(false);
        if mounts.is_dir() {
            tar.append_dir_all(".", mounts)?;
        }
        tar.into_inner().and_then(|mut w| io::Write::flush(&mut w))
    })
}

/// Restores exported cache-mount directories into `mounts`, leaving alone
/// those this machine already has. Returns how many were restored; an
/// export without cache mounts restores none.
pub fn import_cache_mounts(dir: &Path, mounts: &Path) -> Result<usize, CacheError> {
    let path = dir.join(CACHE_MOUNTS_FILE);
    let Ok(file) = fs::File::open(&path) else {
        return Ok(0);
    };
    let staging = mounts.with_extension(format!("import-{}", std::process::id()));
    fs::create_dir_all(&staging).map_err(io_error(&staging))?;
    let result = (|| {
        let mut archive = tar::Archive::new(io::BufReader::new(file));
        archive.set_preserve_permissions(true);
        archive.set_preserve_ownerships(true);
        // unpack refuses entries that would land outside `staging`.
        archive.unpack(&staging).map_err(io_error(&path))?;
        fs::create_dir_all(mounts).map_err(io_error(mounts))?;
        let mut restored = 0;
        for entry in fs::read_dir(&staging)
            .map_err(io_error(&staging))?
            .flatten()
        {
            let target = mounts.join(entry.file_name());
            if entry.path().is_dir()
                && !target.exists()
                && fs::rename(entry.path(), &target).is_ok()
            {
                restored += 1;
            }
        }
        Ok(restored)
    })();
    let _ = fs::remove_dir_all(&staging);
    result
}
