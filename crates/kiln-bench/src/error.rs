//! The bench's errors, each naming the file, commit or edit it is about.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("git repository {}: {message}", repo.display())]
    Git { repo: PathBuf, message: String },
    #[error("scenario {}: {message}", file.display())]
    Scenario { file: PathBuf, message: String },
    #[error("{0}")]
    Store(#[from] kiln_store::StoreError),
    #[error("{0}")]
    Engine(#[from] kiln_engine::EngineError),
    #[error("the plot: {0}")]
    Plot(String),
    #[error("interrupted")]
    Interrupted,
}

impl BenchError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> BenchError {
        BenchError::Io {
            path: path.into(),
            source,
        }
    }
}
