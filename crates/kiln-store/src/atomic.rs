//! Crash-safe file replacement: write a temp file in the same directory,
//! fsync it, rename it over the target, fsync the directory. A crash at any
//! instant leaves either the old file or the new one, never a mix.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use crate::error::{IoContext, StoreError};

/// Replaces `target` with `bytes` atomically and durably (see
/// [`write_file_atomic`]).
pub(crate) fn write_atomic(target: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    write_file_atomic(target, bytes).at(target)
}

/// The one way kiln replaces a metadata file (the store's index, cache
/// entries, the stat cache, container records): `atomic-write-file`'s
/// unnamed temp file in the target's directory (`O_TMPFILE`, so a kill
/// leaves no temp behind), fsync, rename over the target, fsync of the
/// directory. A crash at any instant leaves the old file or the new one.
fn write_file_atomic(target: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = atomic_write_file::AtomicWriteFile::open(target)?;
    file.write_all(bytes)?;
    file.commit()
}

/// Makes a rename in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).at(dir)
}
