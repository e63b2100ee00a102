//! Store errors: each names the path, digest or image it concerns.

use std::path::PathBuf;

use crate::digest::Digest;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid digest {0:?}: expected sha256: and 64 lower-case hex digits")]
    InvalidDigest(String),
    #[error("blob {expected} does not match its content (its sha256 is {actual})")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("blob {0} is not in the store")]
    MissingBlob(Digest),
    #[error("{path}: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error("invalid image name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },
    #[error("no image named {0:?} in the store")]
    UnknownImage(String),
    #[error("{what}: refused entry {entry:?}: {reason}")]
    HostileArchive {
        what: String,
        entry: String,
        reason: String,
    },
    #[error("{0}")]
    Unsupported(String),
    #[error("{what}: {source}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
}

impl StoreError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> StoreError {
        StoreError::Io {
            path: path.into(),
            source,
        }
    }
}

/// Adds the path to an I/O error.
pub(crate) trait IoContext<T> {
    fn at(self, path: &std::path::Path) -> Result<T, StoreError>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: &std::path::Path) -> Result<T, StoreError> {
        self.map_err(|e| StoreError::io(path, e))
    }
}
