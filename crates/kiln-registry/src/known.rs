//! Where blobs were seen: the repositories of each registry that a pull
//! or push of this store found holding a blob, so a push to another
//! repository of the same registry mounts the blob from there instead of
//! uploading it. A hint only: a mount the registry refuses is an upload.
//!
//! Layout (under the store's `kiln/registry`): `DOMAIN/HEX`, one
//! repository per line. Writes replace the file atomically; two
//! processes recording at once may lose one line, which costs an upload.

use std::path::PathBuf;

use kiln_store::{Digest, Store};

/// The most repositories remembered per blob (the newest kept).
const MAX_REPOSITORIES: usize = 16;

pub(crate) struct Known {
    dir: PathBuf,
}

impl Known {
    pub(crate) fn new(store: &Store, domain: &str) -> Known {
        Known {
            dir: store.layout().registry().join(domain),
        }
    }

    /// The repositories `digest` was seen in, newest first.
    pub(crate) fn repositories(&self, digest: &Digest) -> Vec<String> {
        std::fs::read_to_string(self.dir.join(digest.hex()))
            .map(|text| text.lines().map(str::to_owned).collect())
            .unwrap_or_default()
    }

    /// Notes that `repository` holds `digest`. Failing to note it only
    /// costs a later upload, so errors are not the caller's concern.
    pub(crate) fn record(&self, repository: &str, digest: &Digest) {
        let mut repositories = self.repositories(digest);
        if repositories.first().is_some_and(|r| r == repository) {
            return;
        }
        repositories.retain(|r| r != repository);
        repositories.insert(0, repository.to_owned());
        repositories.truncate(MAX_REPOSITORIES);
        let _ = self.write(digest, &repositories.join("\n"));
    }

    fn write(&self, digest: &Digest, text: &str) -> std::io::Result<()> {
        use std::io::Write;
        std::fs::create_dir_all(&self.dir)?;
        let mut file = atomic_write_file::AtomicWriteFile::open(self.dir.join(digest.hex()))?;
        file.write_all(text.as_bytes())?;
        file.write_all(b"\n")?;
        file.commit()
    }
}
