//! What a stage's filesystem holds, read from its layer tars: which paths
//! exist (so a COPY does not reset the metadata of directories the base
//! already has), single files (`/etc/passwd` for `--chown` names), and the
//! whole tree unpacked for `COPY --from`. OCI whiteouts are honoured.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::Path;

use kiln_store::snapshot::{OPAQUE_MARKER, WHITEOUT_PREFIX};
use kiln_store::{Layer, Store};

use crate::error::BuildError;

/// Metadata of one path of a stage's filesystem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathMeta {
    pub is_dir: bool,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
}

/// The merged view of a stack of layers: path (no leading `/`, raw
/// bytes: names need not be UTF-8) → metadata.
#[derive(Clone, Debug, Default)]
pub struct Tree {
    paths: BTreeMap<Vec<u8>, PathMeta>,
    /// Symlinks the layers hold → their targets, so WORKDIR can follow a
    /// link to a directory as BuildKit does instead of replacing it. Paths
    /// a step records with `insert` are taken as no links.
    links: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl Tree {
    /// Adds one layer on top.
    pub fn apply(&mut self, store: &Store, layer: &Layer) -> Result<(), BuildError> {
        let file = kiln_store::open_layer(store.blobs(), &layer.digest)?;
        let what = layer.digest.to_string();
        let mut archive = tar::Archive::new(file);
        let io = |e| BuildError::io(&what, e);
        for entry in archive.entries().map_err(io)? {
            let entry = entry.map_err(io)?;
            let path = normalize_bytes(&entry.path_bytes());
            let (parent, name) = split_bytes(&path);
            if name == OPAQUE_MARKER.as_bytes() {
                self.remove_children(parent);
                continue;
            }
            if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
                let target = if parent.is_empty() {
                    hidden.to_vec()
                } else {
                    [parent, b"/", hidden].concat()
                };
                self.remove_children(&target);
                self.paths.remove(&target);
                self.links.remove(&target);
                continue;
            }
            let header = entry.header();
            match entry.link_name_bytes() {
                Some(target) if header.entry_type().is_symlink() => {
                    self.links.insert(path.clone(), target.into_owned());
                }
                _ => {
                    self.links.remove(&path);
                }
            }
            let meta = PathMeta {
                is_dir: header.entry_type().is_dir(),
                mode: header.mode().unwrap_or(0o644),
                uid: header.uid().unwrap_or(0),
                gid: header.gid().unwrap_or(0),
            };
            self.paths.insert(path, meta);
        }
        Ok(())
    }

    fn remove_children(&mut self, dir: &[u8]) {
        let prefix = if dir.is_empty() {
            Vec::new()
        } else {
            [dir, b"/"].concat()
        };
        let doomed: Vec<Vec<u8>> = self
            .paths
            .range(prefix.clone()..)
            .take_while(|(p, _)| p.starts_with(&prefix))
            .map(|(p, _)| p.clone())
            .collect();
        for path in doomed {
            self.paths.remove(&path);
            self.links.remove(&path);
        }
    }

    pub fn get(&self, path: &[u8]) -> Option<&PathMeta> {
        self.paths.get(path)
    }

    pub fn insert(&mut self, path: Vec<u8>, meta: PathMeta) {
        self.links.remove(&path);
        self.paths.insert(path, meta);
    }

    /// `path` (normalised, no leading `/`) with every symlink the layers
    /// hold along it followed, as the kernel would inside the container:
    /// absolute targets from the root, relative ones from the link's
    /// directory, `..` never above the root. A chain longer than 40 links
    /// (the kernel's limit) is left as it is.
    pub fn resolve(&self, path: &str) -> String {
        let mut parts: Vec<Vec<u8>> = split_parts(path.as_bytes());
        let mut hops = 0;
        let mut done = 0;
        while done < parts.len() {
            let prefix = parts[..=done].join(&b'/');
            let Some(target) = self.links.get(&prefix) else {
                done += 1;
                continue;
            };
            hops += 1;
            if hops > 40 {
                return path.to_owned();
            }
            let mut next: Vec<Vec<u8>> = if target.starts_with(b"/") {
                Vec::new()
            } else {
                parts[..done].to_vec()
            };
            next.extend(split_parts(target));
            next.extend(parts[done + 1..].iter().cloned());
            parts = clean_parts(next);
            done = 0;
        }
        String::from_utf8_lossy(&parts.join(&b'/')).into_owned()
    }
}

fn split_parts(path: &[u8]) -> Vec<Vec<u8>> {
    path.split(|&b| b == b'/')
        .filter(|part| !part.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

/// Drops `.` and applies `..` (never above the root).
fn clean_parts(parts: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    for part in parts {
        match part.as_slice() {
            b"." => {}
            b".." => {
                out.pop();
            }
            _ => out.push(part),
        }
    }
    out
}

/// [`normalize`] on raw bytes.
fn normalize_bytes(path: &[u8]) -> Vec<u8> {
    path.split(|&b| b == b'/')
        .filter(|part| !part.is_empty() && *part != b".")
        .collect::<Vec<_>>()
        .join(&b'/')
}

fn split_bytes(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(slash) => (&path[..slash], &path[slash + 1..]),
        None => (&[], path),
    }
}

/// `./a/b/` → `a/b`.
pub fn normalize(path: &str) -> String {
    path.split('/')
        .filter(|part| !part.is_empty() && *part != ".")
        .collect::<Vec<_>>()
        .join("/")
}

fn split(path: &str) -> (&str, &str) {
    match path.rsplit_once('/') {
        Some((parent, name)) => (parent, name),
        None => ("", path),
    }
}

fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_owned()
    } else {
        format!("{parent}/{name}")
    }
}

/// The content of regular file `path` in the stack, if present.
pub fn read_file(
    store: &Store,
    layers: &[Layer],
    path: &str,
) -> Result<Option<Vec<u8>>, BuildError> {
    let wanted = normalize(path);
    let mut found = None;
    for layer in layers {
        let file = kiln_store::open_layer(store.blobs(), &layer.digest)?;
        let what = layer.digest.to_string();
        let io = |e| BuildError::io(&what, e);
        let mut archive = tar::Archive::new(file);
        for entry in archive.entries().map_err(io)? {
            let mut entry = entry.map_err(io)?;
            let path = normalize(&entry.path().map_err(io)?.to_string_lossy());
            let (parent, name) = split(&path);
            let whited_out = name
                .strip_prefix(WHITEOUT_PREFIX)
                .is_some_and(|hidden| join(parent, hidden) == wanted)
                || (name == OPAQUE_MARKER && wanted.starts_with(&format!("{parent}/")));
            if whited_out {
                found = None;
            } else if path == wanted && entry.header().entry_type().is_file() {
                let mut content = Vec::new();
                entry.read_to_end(&mut content).map_err(io)?;
                found = Some(content);
            }
        }
    }
    Ok(found)
}

/// Unpacks the stack into `dir` (which must be empty), applying
/// whiteouts. The tar crate refuses entries that would land outside `dir`,
/// including through symlinks the archive itself planted.
pub fn unpack(store: &Store, layers: &[Layer], dir: &Path) -> Result<(), BuildError> {
    for layer in layers {
        let file = kiln_store::open_layer(store.blobs(), &layer.digest)?;
        let what = layer.digest.to_string();
        let io = |e| BuildError::io(&what, e);
        let mut archive = tar::Archive::new(file);
        archive.set_preserve_permissions(true);
        archive.set_overwrite(true);
        archive.set_unpack_xattrs(false);
        for entry in archive.entries().map_err(io)? {
            let mut entry = entry.map_err(io)?;
            let path = normalize(&entry.path().map_err(io)?.to_string_lossy());
            let (parent, name) = split(&path);
            // Whiteouts act only inside the tree: never through a symlink
            // an earlier layer planted, never on `.` or `..`.
            if name == OPAQUE_MARKER {
                if let Some(target) = real_dir(dir, parent) {
                    if let Ok(children) = fs::read_dir(&target) {
                        for child in children.flatten() {
                            remove_any(&child.path());
                        }
                    }
                }
                continue;
            }
            if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
                if let Some(target) = real_dir(dir, parent) {
                    if !matches!(hidden, "" | "." | "..") {
                        remove_any(&target.join(hidden));
                    }
                }
                continue;
            }
            entry.unpack_in(dir).map_err(io)?;
        }
    }
    Ok(())
}

/// `dir/rel` if each of its components is a real directory, not a link.
fn real_dir(dir: &Path, rel: &str) -> Option<std::path::PathBuf> {
    let mut current = dir.to_path_buf();
    for part in rel.split('/').filter(|p| !p.is_empty() && *p != ".") {
        if part == ".." {
            return None;
        }
        current.push(part);
        if !fs::symlink_metadata(&current).ok()?.is_dir() {
            return None;
        }
    }
    Some(current)
}

/// Removes a file, link (not what it points at) or whole directory.
fn remove_any(path: &Path) {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => {
            let _ = fs::remove_dir_all(path);
        }
        Ok(_) => {
            let _ = fs::remove_file(path);
        }
        Err(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree_with_links(links: &[(&str, &str)]) -> Tree {
        let mut tree = Tree::default();
        for (path, target) in links {
            tree.links
                .insert(path.as_bytes().to_vec(), target.as_bytes().to_vec());
        }
        tree
    }

    #[test]
    fn resolve_follows_links_along_the_path() {
        let tree = tree_with_links(&[
            ("ln", "/real"),
            ("rel", "real"),
            ("real/up", "../other/./dir"),
            ("deep/link", "../../../../top"),
        ]);
        assert_eq!(tree.resolve("ln/sub"), "real/sub");
        assert_eq!(tree.resolve("rel/sub/x"), "real/sub/x");
        assert_eq!(tree.resolve("ln/up/x"), "other/dir/x");
        assert_eq!(tree.resolve("deep/link/x"), "top/x", "never above the root");
        assert_eq!(tree.resolve("plain/dir"), "plain/dir");
        assert_eq!(tree.resolve(""), "");
    }

    #[test]
    fn resolve_leaves_a_link_loop_as_it_is() {
        let tree = tree_with_links(&[("x", "y"), ("y", "x")]);
        assert_eq!(tree.resolve("x/sub"), "x/sub");
    }

    #[test]
    fn a_path_a_step_records_is_no_longer_a_link() {
        let mut tree = tree_with_links(&[("ln", "/real")]);
        let dir = PathMeta {
            is_dir: true,
            mode: 0o755,
            uid: 0,
            gid: 0,
        };
        tree.insert(b"ln".to_vec(), dir);
        assert_eq!(tree.resolve("ln/sub"), "ln/sub");
    }
}
