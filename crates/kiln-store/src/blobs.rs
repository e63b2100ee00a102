//! Content-addressed blobs under `blobs/sha256/`: a blob's file name is the
//! sha256 of its bytes, checked on every write, so nothing in the store can
//! lie about its content.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::atomic::sync_dir;
use crate::digest::{Digest, HashingWriter};
use crate::error::{IoContext, StoreError};
use crate::owner::Owner;

/// The blob directory of a store. Every blob this process writes (or finds
/// already there when asked to write it) is leased by its owner, so GC
/// keeps it until a tag or cache entry reaches it, or the process ends.
#[derive(Clone, Debug)]
pub struct Blobs {
    dir: PathBuf,
    /// Where layers kept only as their snapshot (and skeleton) live: such
    /// a layer is a blob of the store too, given back when read.
    snapshots: PathBuf,
    owner: Arc<Owner>,
}

impl Blobs {
    pub(crate) fn new(root: &Path, owner: Arc<Owner>) -> Blobs {
        let layout = crate::Layout::new(root);
        Blobs {
            dir: layout.blobs(),
            snapshots: layout.snapshots(),
            owner,
        }
    }

    /// Keeps `digest` for this process if it is stored (see
    /// [`crate::Store::lease`]).
    pub(crate) fn lease(&self, digest: &Digest) -> Result<(), StoreError> {
        self.owner.keep(digest, || match self.contains(digest) {
            true => Ok(()),
            false => Err(StoreError::MissingBlob(*digest)),
        })
    }

    /// Leases `digest`, then runs `publish`, which puts it in place (a
    /// layer kept as its snapshot): GC either ran before or sees the lease.
    pub(crate) fn lease_and<T>(
        &self,
        digest: &Digest,
        publish: impl FnOnce() -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.owner.keep(digest, publish)
    }

    /// Leases `digest` and renames `temp` into place as it.
    fn publish(&self, temp: &Path, digest: &Digest) -> Result<(), StoreError> {
        let target = self.path(digest);
        self.owner
            .keep(digest, || fs::rename(temp, &target).at(&target))?;
        sync_dir(&self.dir)
    }

    fn temp(&self) -> Result<PathBuf, StoreError> {
        Ok(self.dir.join(self.owner.temp_name("blob")?))
    }

    pub(crate) fn create_dirs(&self) -> Result<(), StoreError> {
        fs::create_dir_all(&self.dir).at(&self.dir)
    }

    /// Where a blob lives (whether or not it exists).
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.dir.join(digest.hex())
    }

    pub fn contains(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
            || crate::snapshot::kept_as_snapshot(&self.snapshots, digest).is_some()
    }

    /// The snapshot dir of a layer whose tar blob is not kept (its
    /// snapshot and skeleton give it back).
    pub(crate) fn kept_as_snapshot(&self, digest: &Digest) -> Option<PathBuf> {
        if self.path(digest).is_file() {
            return None;
        }
        crate::snapshot::kept_as_snapshot(&self.snapshots, digest)
    }

    /// A blob's size, if it is stored.
    pub fn size(&self, digest: &Digest) -> Option<u64> {
        match fs::metadata(self.path(digest)) {
            Ok(meta) => Some(meta.len()),
            Err(_) => crate::snapshot::kept_size(&crate::snapshot::kept_as_snapshot(
                &self.snapshots,
                digest,
            )?),
        }
    }

    /// The blob's file, given back from its snapshot into the blob
    /// directory first if it is kept only as one (a cache export copies
    /// files).
    pub fn materialize(&self, digest: &Digest) -> Result<PathBuf, StoreError> {
        if let Some(snapshot) = self.kept_as_snapshot(digest) {
            // Checked before it is committed: a wrong tar is never a blob.
            let mut writer = self.writer()?;
            crate::snapshot::give_back(&snapshot, digest, &mut writer)?;
            writer.commit()?;
        }
        Ok(self.path(digest))
    }

    /// Stores `bytes`; returns their digest.
    pub fn put(&self, bytes: &[u8]) -> Result<Digest, StoreError> {
        // Known bytes are not written again (a cached rebuild writes nothing).
        let digest = Digest::of(bytes);
        self.put_reader(bytes, Some(&digest))
            .map(|(digest, _)| digest)
    }

    /// Streams a blob in. With `expected`, a blob whose content has another
    /// digest is refused and nothing is stored. Returns digest and size.
    pub fn put_reader(
        &self,
        mut reader: impl Read,
        expected: Option<&Digest>,
    ) -> Result<(Digest, u64), StoreError> {
        if let Some(digest) = expected {
            if self.lease(digest).is_ok() {
                // Still drain the reader so callers streaming an archive stay in step.
                io::copy(&mut reader, &mut io::sink()).at(&self.path(digest))?;
                let size = self.size(digest).ok_or(StoreError::MissingBlob(*digest))?;
                return Ok((*digest, size));
            }
        }
        let temp = self.temp()?;
        let result = (|| {
            let file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&temp)
                .at(&temp)?;
            let mut writer = HashingWriter::new(io::BufWriter::new(file));
            io::copy(&mut reader, &mut writer).at(&temp)?;
            let (digest, size, buffered) = writer.finish();
            let file = buffered
                .into_inner()
                .map_err(|e| StoreError::io(&temp, e.into_error()))?;
            if let Some(expected) = expected {
                if *expected != digest {
                    return Err(StoreError::DigestMismatch {
                        expected: *expected,
                        actual: digest,
                    });
                }
            }
            file.sync_all().at(&temp)?;
            self.publish(&temp, &digest)?;
            Ok((digest, size))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&temp);
        }
        result
    }

    /// The whole blob, checked against its digest.
    pub fn read(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        let path = self.path(digest);
        if let Some(snapshot) = self.kept_as_snapshot(digest) {
            let mut bytes = Vec::new();
            crate::snapshot::give_back(&snapshot, digest, &mut bytes)?;
            return Ok(bytes);
        }
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::MissingBlob(*digest))
            }
            Err(e) => return Err(StoreError::io(path, e)),
        };
        let actual = Digest::of(&bytes);
        if actual != *digest {
            return Err(StoreError::DigestMismatch {
                expected: *digest,
                actual,
            });
        }
        Ok(bytes)
    }

    /// Opens a blob for streaming (not re-verified: use `verify` for that).
    /// A layer kept only as its snapshot is given back into an unnamed
    /// temp file, checked against its digest, and that is returned.
    pub fn open(&self, digest: &Digest) -> Result<File, StoreError> {
        let path = self.path(digest);
        match File::open(&path) {
            Ok(file) => Ok(file),
            Err(e) if e.kind() == io::ErrorKind::NotFound => match self.kept_as_snapshot(digest) {
                Some(snapshot) => self.given_back(digest, &snapshot),
                None => Err(StoreError::MissingBlob(*digest)),
            },
            Err(e) => Err(StoreError::io(path, e)),
        }
    }

    /// `digest`'s tar given back from `snapshot` into an unnamed temp
    /// file, only if it has that digest.
    fn given_back(&self, digest: &Digest, snapshot: &Path) -> Result<File, StoreError> {
        use std::io::Seek;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(nix::fcntl::OFlag::O_TMPFILE.bits())
            .open(&self.dir)
            .at(&self.dir)?;
        let mut buffered = io::BufWriter::new(&mut file);
        crate::snapshot::give_back(snapshot, digest, &mut buffered)?;
        buffered
            .into_inner()
            .map_err(|e| StoreError::io(snapshot, e.into_error()))?;
        file.rewind().at(snapshot)?;
        Ok(file)
    }

    /// Re-hashes a blob and checks its name.
    pub fn verify(&self, digest: &Digest) -> Result<(), StoreError> {
        let mut file = self.open(digest)?;
        let mut writer = HashingWriter::new(io::sink());
        io::copy(&mut file, &mut writer).at(&self.path(digest))?;
        let (actual, _, _) = writer.finish();
        if actual != *digest {
            return Err(StoreError::DigestMismatch {
                expected: *digest,
                actual,
            });
        }
        Ok(())
    }

    /// Every blob's digest; files that are not blobs (temp files of
    /// writers, live or dead) are returned separately.
    pub fn list(&self) -> Result<(Vec<Digest>, Vec<PathBuf>), StoreError> {
        let mut digests = Vec::new();
        let mut strays = Vec::new();
        for entry in fs::read_dir(&self.dir).at(&self.dir)? {
            let entry = entry.at(&self.dir)?;
            let name = entry.file_name();
            match format!("sha256:{}", name.to_string_lossy()).parse::<Digest>() {
                Ok(digest) => digests.push(digest),
                Err(_) => strays.push(entry.path()),
            }
        }
        digests.sort();
        Ok((digests, strays))
    }

    pub(crate) fn remove(&self, digest: &Digest) -> Result<(), StoreError> {
        let path = self.path(digest);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(StoreError::io(path, e)),
            _ => Ok(()),
        }
    }
}

/// Writes go through a temp file; a `Write` adaptor for callers that
/// produce a blob incrementally (a layer tar being compressed).
pub struct BlobWriter {
    temp: PathBuf,
    blobs: Blobs,
    inner: Option<HashingWriter<io::BufWriter<File>>>,
}

impl Blobs {
    /// Starts a blob written piece by piece; `commit` names it.
    pub fn writer(&self) -> Result<BlobWriter, StoreError> {
        let temp = self.temp()?;
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .at(&temp)?;
        Ok(BlobWriter {
            temp,
            blobs: self.clone(),
            inner: Some(HashingWriter::new(io::BufWriter::new(file))),
        })
    }
}

impl BlobWriter {
    /// Syncs and renames the blob into place; returns digest and size.
    pub fn commit(mut self) -> Result<(Digest, u64), StoreError> {
        let Some(writer) = self.inner.take() else {
            return Err(StoreError::io(
                &self.temp,
                io::Error::other("blob already committed"),
            ));
        };
        let (digest, size, buffered) = writer.finish();
        let file = buffered
            .into_inner()
            .map_err(|e| StoreError::io(&self.temp, e.into_error()))?;
        file.sync_all().at(&self.temp)?;
        self.blobs.publish(&self.temp, &digest)?;
        Ok((digest, size))
    }
}

/// Errors name the blob's temp file (as a [`crate::NamedWriter`]'s do), so
/// a copy into the blob that fails (ENOSPC) names what was written.
impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let result = match self.inner.as_mut() {
            Some(w) => w.write(buf),
            None => Err(io::Error::other("blob already committed")),
        };
        result.map_err(|e| self.tagged(e))
    }

    fn flush(&mut self) -> io::Result<()> {
        let result = match self.inner.as_mut() {
            Some(w) => w.flush(),
            None => Ok(()),
        };
        result.map_err(|e| self.tagged(e))
    }
}

impl BlobWriter {
    fn tagged(&self, error: io::Error) -> io::Error {
        crate::error::tag_write_error(&self.temp, error)
    }
}

impl Drop for BlobWriter {
    /// An abandoned writer leaves nothing behind.
    fn drop(&mut self) {
        if self.inner.is_some() {
            let _ = fs::remove_file(&self.temp);
        }
    }
}
