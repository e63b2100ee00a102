//! Crash-safe file replacement: write a temp file in the same directory,
//! fsync it, rename it over the target, fsync the directory. A crash at any
//! instant leaves either the old file or the new one, never a mix.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;

use crate::error::{IoContext, StoreError};

/// Replaces `target` with `bytes` atomically, through the temp file
/// `temp_name` beside it (an owner's temp name, so GC knows whose it is).
pub(crate) fn write_atomic(target: &Path, temp_name: &str, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = target.parent().unwrap_or(Path::new("."));
    let temp = dir.join(temp_name);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .at(&temp)?;
        file.write_all(bytes).at(&temp)?;
        file.sync_all().at(&temp)?;
        fs::rename(&temp, target).at(target)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// Makes a rename in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).at(dir)
}
