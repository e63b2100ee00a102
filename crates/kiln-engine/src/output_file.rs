//! Files kiln writes outside the store, at paths the user named (`save -o`,
//! `--iidfile`, `--metadata-file`, `-o type=oci|docker|tar`). The content
//! goes to a temp file with an unpredictable name created with `O_EXCL` in
//! the destination's directory (so a link planted there is never written
//! through), and is renamed over the destination once complete: a rename
//! replaces a link at the final name instead of following it, and a failed
//! write never leaves half a file under the wanted name.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::EngineError;
use tempfile::NamedTempFile;

/// A file being written; dropped without [`OutputFile::commit`] it is
/// removed and the destination left as it was.
pub struct OutputFile {
    temp: NamedTempFile,
    dest: PathBuf,
}

impl OutputFile {
    pub fn create(dest: &Path) -> Result<OutputFile, EngineError> {
        let dir = match dest.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        // 0666 less the umask, as a plain create would make it.
        let temp = tempfile::Builder::new()
            .prefix(".kiln-")
            .suffix(".partial")
            .permissions(std::fs::Permissions::from_mode(0o666))
            .tempfile_in(dir)
            .map_err(|e| EngineError::io(dir, e))?;
        Ok(OutputFile {
            temp,
            dest: dest.to_owned(),
        })
    }

    pub fn file(&mut self) -> &mut File {
        self.temp.as_file_mut()
    }

    /// Makes the content visible under the destination's name.
    pub fn commit(self) -> Result<(), EngineError> {
        let dest = self.dest;
        self.temp
            .as_file()
            .sync_all()
            .map_err(|e| EngineError::io(&dest, e))?;
        self.temp
            .persist(&dest)
            .map_err(|e| EngineError::io(&dest, e.error))?;
        Ok(())
    }
}

/// Writes `bytes` as the whole content of `dest`.
pub fn write_file(dest: &Path, bytes: &[u8]) -> Result<(), EngineError> {
    let mut file = OutputFile::create(dest)?;
    file.file()
        .write_all(bytes)
        .map_err(|e| EngineError::io(dest, e))?;
    file.commit()
}
