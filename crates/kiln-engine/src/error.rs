//! What can stop a build session. Dockerfile and step errors keep the
//! Dockerfile's name and text, so their message quotes the line (the
//! rendering is the parser's and the planner's own).

use std::path::PathBuf;

use kiln_build::BuildError;
use kiln_dockerfile::{ParseError, Position};
use kiln_graph::PlanError;

/// The Dockerfile a build read, for messages about it.
#[derive(Clone, Debug)]
pub struct DockerfileText {
    /// How to name it (`-` for one from standard input).
    pub display: String,
    pub source: String,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The request itself is wrong (a context that is not a directory, an
    /// output spec that does not parse...).
    #[error("{0}")]
    Request(String),
    /// What the request names is not there (a container, a volume).
    #[error("no such {what}: {name}")]
    NotFound { what: &'static str, name: String },
    /// The request conflicts with the state of things (a volume in use,
    /// a running container).
    #[error("{0}")]
    Conflict(String),
    #[error("{}", .error.render(&.file.display, &.file.source))]
    Parse {
        file: DockerfileText,
        error: ParseError,
    },
    #[error("{}", .error.render(&.file.display, &.file.source))]
    Plan {
        file: DockerfileText,
        error: Box<PlanError>,
    },
    /// A step failed, at its line.
    #[error("{}", kiln_dockerfile::render_diagnostic(
        &.file.display, &.file.source, Position { line: *.line, column: 0 }, .message, .hint.as_deref()))]
    Step {
        file: DockerfileText,
        line: u32,
        message: String,
        hint: Option<String>,
    },
    /// Stopped through the session's [`kiln_build::Cancel`].
    #[error("interrupted")]
    Interrupted,
    #[error(transparent)]
    Build(BuildError),
    #[error(transparent)]
    Store(#[from] kiln_store::StoreError),
    #[error(transparent)]
    Runtime(#[from] kiln_runtime::RuntimeError),
    /// A container's file that could not be read or written (`cp`).
    #[error("{op} {path} in the container: {source}")]
    ContainerFile {
        op: &'static str,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Cache(#[from] kiln_cache::CacheError),
    #[error(transparent)]
    Registry(#[from] kiln_registry::RegistryError),
    #[error(transparent)]
    Context(#[from] kiln_context::ContextError),
    #[error(transparent)]
    Ignore(#[from] kiln_context::IgnoreError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl EngineError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> EngineError {
        EngineError::Io {
            path: path.into(),
            source,
        }
    }

    /// A build error, with the Dockerfile it happened in for a step's.
    pub(crate) fn from_build(error: BuildError, file: &DockerfileText) -> EngineError {
        match error {
            BuildError::Interrupted => EngineError::Interrupted,
            BuildError::Step {
                line,
                message,
                hint,
            } if line > 0 => EngineError::Step {
                file: file.clone(),
                line,
                message,
                hint,
            },
            other => EngineError::Build(other),
        }
    }
}

impl From<BuildError> for EngineError {
    fn from(error: BuildError) -> EngineError {
        match error {
            BuildError::Interrupted => EngineError::Interrupted,
            other => EngineError::Build(other),
        }
    }
}
