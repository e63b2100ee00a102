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
    /// An I/O error about `path`, unless it is a failed write that a
    /// [`NamedWriter`] tagged: then about the file written. A copy from a
    /// context file or an input tar into the store that fails with ENOSPC
    /// names the full filesystem's file, not the one being read.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> StoreError {
        let (path, source) = match written_file(source) {
            Ok((written, source)) => (written, source),
            Err(source) => (path.into(), source),
        };
        StoreError::Io { path, source }
    }
}

/// A write that failed, with the file it was writing, carried inside the
/// `io::Error` a writer returns (a copy sees only `io::Error`s).
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
struct WriteFailed {
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

/// The file and the OS error of a failed write a [`NamedWriter`] tagged;
/// any other error is given back.
pub fn written_file(error: std::io::Error) -> Result<(PathBuf, std::io::Error), std::io::Error> {
    if !error
        .get_ref()
        .is_some_and(|inner| inner.is::<WriteFailed>())
    {
        return Err(error);
    }
    let inner = error.into_inner().expect("checked above");
    let failed = inner.downcast::<WriteFailed>().expect("checked above");
    Ok((failed.path, failed.source))
}

/// A writer whose errors name the file it writes (see [`written_file`]).
pub struct NamedWriter<W> {
    path: PathBuf,
    inner: W,
}

impl<W> NamedWriter<W> {
    pub fn new(path: impl Into<PathBuf>, inner: W) -> NamedWriter<W> {
        NamedWriter {
            path: path.into(),
            inner,
        }
    }

    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    pub fn into_inner(self) -> W {
        self.inner
    }

    fn tag(&self, source: std::io::Error) -> std::io::Error {
        tag_write_error(&self.path, source)
    }
}

/// `source` marked as a failed write to `path` (once: the innermost
/// writer knows the file best).
pub(crate) fn tag_write_error(path: &std::path::Path, source: std::io::Error) -> std::io::Error {
    if source
        .get_ref()
        .is_some_and(|inner| inner.is::<WriteFailed>())
    {
        return source;
    }
    std::io::Error::new(
        source.kind(),
        WriteFailed {
            path: path.to_owned(),
            source,
        },
    )
}

impl<W: std::io::Write> std::io::Write for NamedWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.inner.write(buf).map_err(|e| self.tag(e))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush().map_err(|e| self.tag(e))
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

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    struct Full;

    impl Write for Full {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::from_raw_os_error(28))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_failed_write_names_the_file_written_not_the_one_read() {
        let mut writer = NamedWriter::new("/store/blob", Full);
        let error = std::io::copy(&mut &b"data"[..], &mut writer).unwrap_err();
        assert_eq!(error.raw_os_error(), None, "wrapped");
        match StoreError::io("/context/file", error) {
            StoreError::Io { path, source } => {
                assert_eq!(path, PathBuf::from("/store/blob"));
                assert_eq!(source.raw_os_error(), Some(28));
            }
            other => panic!("{other}"),
        }
        // Any other error keeps the path it was given.
        match StoreError::io("/context/file", std::io::Error::other("bad read")) {
            StoreError::Io { path, .. } => assert_eq!(path, PathBuf::from("/context/file")),
            other => panic!("{other}"),
        }
    }
}
