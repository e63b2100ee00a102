//! The store lock: builds and reads hold it shared, changes to the index and
//! garbage collection hold it exclusively, so GC never deletes a blob that
//! a running build has written but not yet tagged.

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
