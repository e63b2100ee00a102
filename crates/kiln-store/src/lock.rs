//! The store's locks, both `flock`s on files under `kiln/` (released by the
//! kernel when the process dies, so a killed kiln never leaves the store
//! locked):
//!
//! - `kiln/lock`, the GC lock: writers hold it *shared* only for the
//!   instant they lease a digest and make a blob or snapshot visible (see
//!   `owner.rs`); GC holds it *exclusively* only to re-read its roots and
//!   delete. Nobody holds it for a whole build, so builds run side by side
//!   and readers (images, inspect, history, ps) take no lock at all:
//!   `index.json` and blobs are replaced by atomic renames.
//! - `kiln/index.lock`: held exclusively around each read-modify-write of
//!   `index.json` (tag, untag, creating the layout), so two writers never
//!   lose each other's tags. Short: it covers one small file.

use std::fs::{File, OpenOptions};
use std::path::Path;

use crate::error::{IoContext, StoreError};

/// A held lock; released when dropped (the OS also releases it if the
/// process dies, so a killed kiln never leaves the store locked).
#[derive(Debug)]
pub struct StoreLock {
    _file: File,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockMode {
    Shared,
    Exclusive,
}

impl StoreLock {
    pub(crate) fn acquire(path: &Path, mode: LockMode) -> Result<StoreLock, StoreError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .at(path)?;
        match mode {
            LockMode::Shared => file.lock_shared().at(path)?,
            LockMode::Exclusive => file.lock().at(path)?,
        }
        Ok(StoreLock { _file: file })
    }
}
