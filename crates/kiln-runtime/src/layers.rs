//! A read-only view of a stack of overlay lower dirs, as overlayfs would
//! merge them, computed without mounting anything: whiteouts (char device
//! 0/0) delete, `trusted.overlay.opaque=y` directories hide what is below,
//! and symlinks are resolved inside the root (never towards the host).
//! The runtime uses it to place mount points and to read `/etc/passwd`.

use std::ffi::{CString, OsStr, OsString};
use std::fs::{self, Metadata};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Linux's limit on symlinks followed while resolving one path.
const MAX_SYMLINKS: usize = 40;

/// Lower dirs, top-most first.
#[derive(Debug, Clone)]
pub struct LowerView {
    dirs: Vec<PathBuf>,
}

/// An entry of the merged view: which layer provides it, and its metadata.
#[derive(Debug)]
pub struct Found {
    pub host_path: PathBuf,
    pub metadata: Metadata,
}

impl LowerView {
    pub fn new(dirs: Vec<PathBuf>) -> Self {
        LowerView { dirs }
    }

    /// Looks up `parts` (no symlink following) in the merged view.
    pub fn lookup(&self, parts: &[String]) -> Option<Found> {
        let parts: Vec<&OsStr> = parts.iter().map(OsStr::new).collect();
        self.lookup_os(&parts)
    }

    /// [`LowerView::lookup`] of raw names (they need not be UTF-8).
    pub fn lookup_os(&self, parts: &[&OsStr]) -> Option<Found> {
        if parts.is_empty() {
            let dir = self.dirs.first()?;
            let metadata = fs::symlink_metadata(dir).ok()?;
            return Some(Found {
                host_path: dir.clone(),
                metadata,
            });
        }
        for dir in &self.dirs {
            match lookup_in_layer(dir, parts) {
                LayerLookup::Found(found) => return Some(found),
                LayerLookup::Deleted => return None,
                LayerLookup::Absent { opaque_above } => {
                    if opaque_above {
                        return None;
                    }
                }
            }
        }
        None
    }

    /// The names in directory `parts` of the merged view, sorted: each
    /// layer's entries from the top down, a name decided by the top-most
    /// layer that has it (a whiteout deletes it), and an opaque directory
    /// or a non-directory ending what lower layers add. Empty if `parts`
    /// is not a directory of the view.
    pub fn list(&self, parts: &[&OsStr]) -> Vec<OsString> {
        let mut names: std::collections::BTreeMap<OsString, bool> = Default::default();
        for dir in &self.dirs {
            let host = if parts.is_empty() {
                dir.clone()
            } else {
                match lookup_in_layer(dir, parts) {
                    LayerLookup::Found(found) if found.metadata.is_dir() => found.host_path,
                    LayerLookup::Found(_) | LayerLookup::Deleted => break,
                    LayerLookup::Absent { opaque_above: true } => break,
                    LayerLookup::Absent {
                        opaque_above: false,
                    } => continue,
                }
            };
            if let Ok(entries) = fs::read_dir(&host) {
                for entry in entries.flatten() {
                    let name = entry.file_name();
                    if names.contains_key(&name) {
                        continue;
                    }
                    let present = entry.metadata().map(|m| !is_whiteout(&m)).unwrap_or(false);
                    names.insert(name, present);
                }
            }
            if is_opaque(&host) {
                break;
            }
        }
        names
            .into_iter()
            .filter_map(|(name, present)| present.then_some(name))
            .collect()
    }

    /// Resolves an absolute container path to its components with every
    /// symlink followed inside the root (`..` and absolute targets clamp at
    /// the root), like Docker's secure join. Missing tails are kept as is.
    pub fn resolve(&self, parts: &[String]) -> Vec<String> {
        let mut pending: Vec<String> = parts.iter().rev().cloned().collect();
        let mut resolved: Vec<String> = Vec::new();
        let mut links = 0;
        while let Some(part) = pending.pop() {
            match part.as_str() {
                "" | "." => continue,
                ".." => {
                    resolved.pop();
                    continue;
                }
                _ => {}
            }
            resolved.push(part);
            let Some(found) = self.lookup(&resolved) else {
                continue;
            };
            if !found.metadata.file_type().is_symlink() || links >= MAX_SYMLINKS {
                continue;
            }
            links += 1;
            resolved.pop();
            let Ok(target) = fs::read_link(&found.host_path) else {
                continue;
            };
            if target.is_absolute() {
                resolved.clear();
            }
            let target = target.to_string_lossy().into_owned();
            pending.extend(target.split('/').rev().map(str::to_string));
        }
        resolved
    }

    /// Reads a regular file of the merged view (symlinks resolved in root).
    pub fn read_file(&self, path: &str) -> Option<Vec<u8>> {
        let parts: Vec<String> = path
            .split('/')
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect();
        let found = self.lookup(&self.resolve(&parts))?;
        if !found.metadata.is_file() {
            return None;
        }
        fs::read(&found.host_path).ok()
    }
}

enum LayerLookup {
    Found(Found),
    Deleted,
    Absent { opaque_above: bool },
}

fn lookup_in_layer<P: AsRef<OsStr>>(dir: &Path, parts: &[P]) -> LayerLookup {
    let mut path = dir.to_path_buf();
    let mut opaque_above = false;
    for (i, part) in parts.iter().enumerate() {
        path.push(part.as_ref());
        let Ok(metadata) = fs::symlink_metadata(&path) else {
            return LayerLookup::Absent { opaque_above };
        };
        if is_whiteout(&metadata) {
            return LayerLookup::Deleted;
        }
        if i + 1 == parts.len() {
            return LayerLookup::Found(Found {
                host_path: path,
                metadata,
            });
        }
        if !metadata.is_dir() {
            // A non-directory in a higher layer hides the whole subtree.
            return LayerLookup::Deleted;
        }
        if is_opaque(&path) {
            opaque_above = true;
        }
    }
    LayerLookup::Absent { opaque_above }
}

pub(crate) fn is_whiteout(metadata: &Metadata) -> bool {
    metadata.file_type().is_char_device() && metadata.rdev() == 0
}

fn is_opaque(path: &Path) -> bool {
    let Ok(cpath) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    let name = c"trusted.overlay.opaque";
    let mut value = [0u8; 4];
    // SAFETY: both strings are NUL-terminated and the buffer length is passed.
    let len = unsafe {
        libc::lgetxattr(
            cpath.as_ptr(),
            name.as_ptr(),
            value.as_mut_ptr().cast(),
            value.len(),
        )
    };
    len == 1 && value[0] == b'y'
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn parts(p: &str) -> Vec<String> {
        p.split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn upper_layers_win_and_symlinks_stay_inside() {
        let top = tempfile::tempdir().unwrap();
        let bottom = tempfile::tempdir().unwrap();
        fs::create_dir_all(bottom.path().join("etc")).unwrap();
        fs::write(bottom.path().join("etc/passwd"), "old").unwrap();
        fs::create_dir_all(top.path().join("etc")).unwrap();
        fs::write(top.path().join("etc/passwd"), "new").unwrap();
        fs::create_dir_all(bottom.path().join("real")).unwrap();
        symlink("/real", top.path().join("link")).unwrap();
        symlink("../../../../etc", top.path().join("escape")).unwrap();
        let view = LowerView::new(vec![top.path().into(), bottom.path().into()]);

        assert_eq!(view.read_file("/etc/passwd").unwrap(), b"new");
        assert_eq!(view.resolve(&parts("/link/x")), parts("/real/x"));
        assert_eq!(view.resolve(&parts("/escape/passwd")), parts("/etc/passwd"));
        assert_eq!(view.read_file("/escape/passwd").unwrap(), b"new");
        assert!(view.lookup(&parts("/missing")).is_none());
    }

    #[test]
    fn symlink_loops_end() {
        let top = tempfile::tempdir().unwrap();
        symlink("/b", top.path().join("a")).unwrap();
        symlink("/a", top.path().join("b")).unwrap();
        let view = LowerView::new(vec![top.path().into()]);
        let _ = view.resolve(&parts("/a/x"));
        assert!(view.read_file("/a").is_none());
    }

    #[test]
    fn non_directory_above_hides_subtree() {
        let top = tempfile::tempdir().unwrap();
        let bottom = tempfile::tempdir().unwrap();
        fs::write(top.path().join("etc"), "file").unwrap();
        fs::create_dir_all(bottom.path().join("etc")).unwrap();
        fs::write(bottom.path().join("etc/passwd"), "x").unwrap();
        let view = LowerView::new(vec![top.path().into(), bottom.path().into()]);
        assert!(view.lookup(&parts("/etc/passwd")).is_none());
    }

    #[test]
    fn listings_merge_layers_as_overlay_does() {
        if fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(1) != 0 {
            eprintln!("skipped: whiteouts and opaque marks need root");
            return;
        }
        let top = tempfile::tempdir().unwrap();
        let middle = tempfile::tempdir().unwrap();
        let bottom = tempfile::tempdir().unwrap();
        for dir in [&top, &middle, &bottom] {
            fs::create_dir_all(dir.path().join("d")).unwrap();
        }
        fs::write(bottom.path().join("d/low"), "").unwrap();
        fs::write(bottom.path().join("d/deleted"), "").unwrap();
        fs::write(middle.path().join("d/mid"), "").unwrap();
        fs::write(top.path().join("d/high"), "").unwrap();
        nix::sys::stat::mknod(
            &top.path().join("d/deleted"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        )
        .unwrap();
        let view = LowerView::new(vec![
            top.path().into(),
            middle.path().into(),
            bottom.path().into(),
        ]);
        let names = |view: &LowerView, path: &str| -> Vec<String> {
            let parts: Vec<&OsStr> = path.split('/').map(OsStr::new).collect();
            view.list(&parts)
                .into_iter()
                .map(|n| n.to_string_lossy().into_owned())
                .collect()
        };
        assert_eq!(names(&view, "d"), ["high", "low", "mid"]);
        // An opaque directory in the middle hides what is below it.
        xattr_set(&middle.path().join("d"));
        assert_eq!(names(&view, "d"), ["high", "mid"]);
        // A file above a directory ends it.
        fs::remove_dir_all(top.path().join("d")).unwrap();
        fs::write(top.path().join("d"), "").unwrap();
        assert!(names(&view, "d").is_empty());
        assert_eq!(view.list(&[]), [OsString::from("d")]);
    }

    fn xattr_set(path: &Path) {
        let cpath = CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: NUL-terminated strings and the value's length are passed.
        let rc = unsafe {
            libc::setxattr(
                cpath.as_ptr(),
                c"trusted.overlay.opaque".as_ptr(),
                b"y".as_ptr().cast(),
                1,
                0,
            )
        };
        assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
    }
}
