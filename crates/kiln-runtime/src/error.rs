//! `RuntimeError`: every way a container run can fail, each naming the
//! syscall, path or setup step concerned so the CLI can print one clear line.

use std::io;
use std::path::PathBuf;

use nix::errno::Errno;

/// A failure to set up, run or clean up a container.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// Containers need root today (rootless is not implemented).
    #[error("running a container needs root: kiln has no rootless mode yet (parse, plan, import, load, save and builds without RUN work as any user)")]
    NeedsRoot,

    /// The spec cannot be run as given (caller's mistake, nothing was started).
    #[error("invalid container spec: {0}")]
    InvalidSpec(String),

    /// Another container has the name (create, rename).
    #[error("the name {name:?} is already in use by container {holder}: remove or rename that container to reuse it")]
    NameInUse { name: String, holder: String },

    /// The container's record is gone (removed meanwhile).
    #[error("container {0} is gone")]
    Gone(String),

    /// A filesystem operation on the host side failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// A syscall made by the calling process failed.
    #[error("{syscall}: {errno}")]
    Sys { syscall: &'static str, errno: Errno },

    /// A step inside the new namespaces failed before the command started.
    #[error("container setup failed: {step}: {errno}")]
    Setup { step: String, errno: Errno },

    /// The command could not be executed (not found, not executable...).
    #[error("cannot execute {program:?}: {}", exec_reason(*errno))]
    Exec { program: String, errno: Errno },

    /// A `USER` spec could not be resolved against the image's files.
    #[error("user {spec:?}: {reason}")]
    User { spec: String, reason: String },

    /// The container was killed through its [`crate::KillHandle`].
    #[error("the container was killed")]
    Killed,

    /// A seccomp profile cannot be compiled for this machine.
    #[error("seccomp profile: {0}")]
    Seccomp(String),
    /// The container's cgroup could not be created, limited or removed.
    #[error("cgroup {}: {what}: {reason}", path.display())]
    Cgroup {
        path: PathBuf,
        what: String,
        reason: String,
    },

    /// The container's init ended without reporting the command's status.
    #[error("container init ended unexpectedly: {0}")]
    InitDied(String),
}

fn exec_reason(errno: Errno) -> String {
    match errno {
        Errno::ENOENT => "executable file not found in $PATH".to_string(),
        Errno::EACCES => "permission denied".to_string(),
        other => other.desc().to_string(),
    }
}

impl RuntimeError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        RuntimeError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn sys(syscall: &'static str, errno: Errno) -> Self {
        RuntimeError::Sys { syscall, errno }
    }
}
