//! What a RUN read of the layers below it (`BuildOptions::track_reads`):
//! the paths the runtime saw its command read, each looked up in the
//! stack of lower dirs as overlayfs merges them, with the layer that
//! provides it and a digest of what it held. Paths the command made
//! itself (in its own upper dir) are not the layers' and are left out.

use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use kiln_runtime::LowerView;
use kiln_store::Digest;
use sha2::{Digest as _, Sha256};

/// What a RUN read of the layers below it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reads {
    /// Sorted by path.
    pub files: Vec<FileRead>,
    /// False when some reads were not seen ([`kiln_runtime::ReadPaths`]):
    /// then nothing can be concluded from what was.
    pub complete: bool,
}

/// One path a RUN read from the layers below it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct FileRead {
    /// Absolute, as the command saw it.
    pub path: String,
    /// The layer it came from.
    pub layer: Digest,
    pub kind: ReadKind,
    /// `sha256:` of its kind, mode and content (a directory's: its names
    /// in the merged view; a symlink's: its target).
    pub digest: String,
}

/// What a read path is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ReadKind {
    File,
    Directory,
    Symlink,
    /// A device, fifo or socket.
    Other,
}

/// The paths the runtime saw read (as the container saw them) looked up
/// in `lowers` (top-most first, with their layers).
pub fn resolve_reads(seen: &kiln_runtime::ReadPaths, lowers: &[(Digest, PathBuf)]) -> Reads {
    let view = LowerView::new(lowers.iter().map(|(_, dir)| dir.clone()).collect());
    let files = seen
        .paths
        .iter()
        .filter_map(|path| {
            let parts: Vec<&OsStr> = Path::new(path)
                .components()
                .filter_map(|c| match c {
                    Component::Normal(part) => Some(part),
                    _ => None,
                })
                .collect();
            // The root itself says nothing a step could have changed.
            if parts.is_empty() {
                return None;
            }
            let found = view.lookup_os(&parts)?;
            let layer = lowers
                .iter()
                .find(|(_, dir)| found.host_path.starts_with(dir))
                .map(|(layer, _)| *layer)?;
            let digest = digest_of(&view, &parts, &found.host_path, &found.metadata)?;
            let kind = found.metadata.file_type();
            Some(FileRead {
                path: path.clone(),
                layer,
                kind: if kind.is_file() {
                    ReadKind::File
                } else if kind.is_dir() {
                    ReadKind::Directory
                } else if kind.is_symlink() {
                    ReadKind::Symlink
                } else {
                    ReadKind::Other
                },
                digest,
            })
        })
        .collect();
    Reads {
        files,
        complete: !seen.incomplete,
    }
}

fn digest_of(
    view: &LowerView,
    parts: &[&OsStr],
    host: &Path,
    meta: &std::fs::Metadata,
) -> Option<String> {
    let mut hasher = Sha256::new();
    let kind = meta.file_type();
    hasher.update(format!("{:o}:{}:{}\0", meta.mode(), meta.uid(), meta.gid()));
    if kind.is_file() {
        // Never through a symlink: the store's files are read as they are.
        let mut file = std::fs::File::options()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(host)
            .ok()?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = file.read(&mut buf).ok()?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
    } else if kind.is_dir() {
        for name in view.list(parts) {
            hasher.update(name.as_encoded_bytes());
            hasher.update([0]);
        }
    } else if kind.is_symlink() {
        hasher.update(
            std::fs::read_link(host)
                .ok()?
                .as_os_str()
                .as_encoded_bytes(),
        );
    }
    Some(format!("sha256:{:x}", hasher.finalize()))
}
