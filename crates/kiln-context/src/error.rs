//! Errors of reading and hashing the build context; each names the path
//! it concerns.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ContextError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> ContextError {
        ContextError::Io {
            path: path.into(),
            source,
        }
    }
}
