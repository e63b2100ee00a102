//! Build errors: a step's error carries its Dockerfile line; store and
//! filesystem errors name what they concern.

use std::path::PathBuf;

use kiln_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A step that cannot run, at its Dockerfile line.
    #[error("line {line}: {message}")]
    Step {
        line: u32,
        message: String,
        hint: Option<String>,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Cache(#[from] kiln_cache::CacheError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("image {reference}: {message}")]
    BaseImage { reference: String, message: String },
    /// Stopped through [`crate::Cancel`] (Ctrl-C, SIGTERM).
    #[error("interrupted")]
    Interrupted,
}

impl BuildError {
    pub(crate) fn step(line: u32, message: impl Into<String>) -> BuildError {
        BuildError::Step {
            line,
            message: message.into(),
            hint: None,
        }
    }

    /// An I/O error about `path`, or about the store file a failed write
    /// was writing (see [`kiln_store::written_file`]): ENOSPC while copying
    /// a context file into a layer names the layer, not the context file.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> BuildError {
        let (path, source) = match kiln_store::written_file(source) {
            Ok((written, source)) => (written, source),
            Err(source) => (path.into(), source),
        };
        BuildError::Io { path, source }
    }
}
