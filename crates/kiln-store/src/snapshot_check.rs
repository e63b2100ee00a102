//! Checking snapshots against their layers: a snapshot is only a cache of
//! its layer unpacked, so `kiln check` compares every entry of the tree
//! with what unpacking the layer's tar gives (paths, types, modes, owners,
//! sizes, content, link targets; whiteouts as overlay whiteouts, opaque
//! directories by their xattr). Times and other xattrs are not compared.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::digest::{Digest, HashingWriter};
use crate::error::StoreError;
use crate::layer::{contained_path, open_layer};
use crate::snapshot::{OPAQUE_MARKER, WHITEOUT_PREFIX};
use crate::store::{Problem, Store};

const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// Differences named in one problem; the rest are counted.
const SHOWN: usize = 5;

/// What one path should be.
#[derive(Clone, Debug, PartialEq)]
enum Kind {
    Dir { opaque: bool },
    File { content: Digest },
    Symlink(PathBuf),
    Hardlinked,
    Device { block: bool, rdev: u64 },
    Fifo,
    Whiteout,
}

impl Kind {
    fn name(&self) -> &'static str {
        match self {
            Kind::Dir { .. } => "a directory",
            Kind::File { .. } | Kind::Hardlinked => "a regular file",
            Kind::Symlink(_) => "a symlink",
            Kind::Device { block: true, .. } => "a block device",
            Kind::Device { block: false, .. } => "a character device",
            Kind::Fifo => "a fifo",
            Kind::Whiteout => "a whiteout",
        }
    }
}

#[derive(Clone, Debug)]
struct Expected {
    kind: Kind,
    /// Mode bits and owner, when the layer says (not for the directories
    /// it only implies).
    mode: Option<u32>,
    owner: Option<(u32, u32)>,
    size: Option<u64>,
}

impl Store {
    /// Compares `layer`'s snapshot with its layer; the error lists the
    /// first differences. A snapshot not marked complete is an error too.
    pub fn verify_snapshot(&self, layer: &Digest) -> Result<(), StoreError> {
        let dir = self.layout().snapshots().join(layer.hex());
        let corrupt = |message: String| StoreError::Corrupt {
            path: dir.clone(),
            message,
        };
        if !self.has_snapshot(layer) {
            return Err(corrupt(
                "not marked complete (an interrupted unpack?)".into(),
            ));
        }
        let expected = expected_tree(open_layer(self.blobs(), layer)?, &format!("layer {layer}"))?;
        let differences = compare(&dir.join("fs"), &expected);
        if differences.is_empty() {
            return Ok(());
        }
        let mut message = differences
            .iter()
            .take(SHOWN)
            .cloned()
            .collect::<Vec<_>>()
            .join("; ");
        if differences.len() > SHOWN {
            message.push_str(&format!(" (and {} more)", differences.len() - SHOWN));
        }
        Err(corrupt(message))
    }

    /// Every snapshot of a stored layer, verified; damaged ones are
    /// discarded (the next use unpacks the layer again) and reported.
    pub(crate) fn check_snapshots(&self) -> Result<Vec<Problem>, StoreError> {
        let mut problems = Vec::new();
        for (layer, dir) in self.snapshot_dirs() {
            if !self.blobs().contains(&layer) {
                // A kept layer's snapshot that lost its `complete` marker
                // (it is not being removed: removal renames it first).
                if dir.join(crate::snapshot::SKELETON).is_file() {
                    let discarded = self.discard_snapshot(&dir).is_ok();
                    problems.push(Problem {
                        what: format!(
                            "snapshot of layer {layer}{}",
                            if discarded { LOST } else { "" }
                        ),
                        error: corrupt_at(&dir, "not marked complete"),
                    });
                }
                continue;
            }
            let kept = self.blobs().kept_as_snapshot(&layer).is_some();
            if let Err(error) = self.verify_snapshot(&layer) {
                // A layer kept only as its snapshot goes with it.
                let discarded = self.discard_snapshot(&dir).is_ok();
                let note = match (kept, discarded) {
                    (true, true) => LOST,
                    (false, true) => " (discarded: the next use unpacks the layer again)",
                    (_, false) => "",
                };
                problems.push(Problem {
                    what: format!("snapshot of layer {layer}{note}"),
                    error,
                });
            }
        }
        Ok(problems)
    }
}

/// What `kiln check` says of a discarded snapshot that was its layer's
/// only copy.
const LOST: &str = " (discarded with the layer, which was kept only as this snapshot: a built layer's steps run again, an imported one must be imported again)";

fn corrupt_at(dir: &Path, message: &str) -> StoreError {
    StoreError::Corrupt {
        path: dir.to_owned(),
        message: message.to_owned(),
    }
}

/// The tree unpacking `reader` (a plain tar) gives, as
/// [`crate::snapshot`]'s unpacker makes it.
fn expected_tree(
    reader: impl io::Read,
    what: &str,
) -> Result<BTreeMap<PathBuf, Expected>, StoreError> {
    let io_error = |e| StoreError::io(what, e);
    let mut tree: BTreeMap<PathBuf, Expected> = BTreeMap::new();
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().map_err(io_error)? {
        let mut entry = entry.map_err(io_error)?;
        let raw = entry.path().map_err(io_error)?.into_owned();
        let Some(path) = contained_path(&raw) else {
            continue;
        };
        if path.as_os_str().is_empty() {
            continue;
        }
        let parent = path.parent().unwrap_or(Path::new("")).to_owned();
        imply_dirs(&mut tree, &parent);
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name == OPAQUE_MARKER {
            if let Some(Expected {
                kind: Kind::Dir { opaque },
                ..
            }) = tree.get_mut(&parent)
            {
                *opaque = true;
            }
            continue;
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
            let expected = Expected {
                kind: Kind::Whiteout,
                mode: None,
                owner: None,
                size: None,
            };
            insert(&mut tree, parent.join(hidden), expected);
            continue;
        }
        let header = entry.header();
        let mode = header.mode().map_err(io_error)? & 0o7777;
        let owner = (
            u32::try_from(header.uid().map_err(io_error)?).unwrap_or(0),
            u32::try_from(header.gid().map_err(io_error)?).unwrap_or(0),
        );
        let rdev = || {
            let major = header.device_major().ok().flatten().unwrap_or(0);
            let minor = header.device_minor().ok().flatten().unwrap_or(0);
            nix::sys::stat::makedev(major.into(), minor.into())
        };
        let entry_type = header.entry_type();
        let (kind, size) = match entry_type {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = header.size().map_err(io_error)?;
                let mut hasher = HashingWriter::new(io::sink());
                io::copy(&mut entry, &mut hasher).map_err(io_error)?;
                let (content, _, _) = hasher.finish();
                (Kind::File { content }, Some(size))
            }
            tar::EntryType::Directory => {
                let opaque = matches!(
                    tree.get(&path),
                    Some(Expected {
                        kind: Kind::Dir { opaque: true },
                        ..
                    })
                );
                (Kind::Dir { opaque }, None)
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(io_error)?
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                (Kind::Symlink(target), None)
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(io_error)?
                    .and_then(|t| contained_path(&t));
                // The same inode as its target: expect what that is.
                let linked = target.and_then(|t| tree.get(&t).cloned());
                match linked {
                    Some(linked) => {
                        insert(&mut tree, path, linked);
                    }
                    None => {
                        let expected = Expected {
                            kind: Kind::Hardlinked,
                            mode: None,
                            owner: None,
                            size: None,
                        };
                        insert(&mut tree, path, expected);
                    }
                }
                continue;
            }
            tar::EntryType::Char => (
                Kind::Device {
                    block: false,
                    rdev: rdev(),
                },
                None,
            ),
            tar::EntryType::Block => (
                Kind::Device {
                    block: true,
                    rdev: rdev(),
                },
                None,
            ),
            tar::EntryType::Fifo => (Kind::Fifo, None),
            _ => continue,
        };
        let mode = (!matches!(kind, Kind::Symlink(_))).then_some(mode);
        insert(
            &mut tree,
            path,
            Expected {
                kind,
                mode,
                owner: Some(owner),
                size,
            },
        );
    }
    Ok(tree)
}

/// Parents the tar did not list are made as plain directories.
fn imply_dirs(tree: &mut BTreeMap<PathBuf, Expected>, dir: &Path) {
    let mut current = PathBuf::new();
    for component in dir.components() {
        current.push(component);
        tree.entry(current.clone()).or_insert(Expected {
            kind: Kind::Dir { opaque: false },
            mode: None,
            owner: None,
            size: None,
        });
    }
}

/// A later entry replaces an earlier one; a non-directory replaces what
/// was below a directory too.
fn insert(tree: &mut BTreeMap<PathBuf, Expected>, path: PathBuf, expected: Expected) {
    if !matches!(expected.kind, Kind::Dir { .. }) {
        // Paths order component by component, so what is below `path`
        // comes right after it: a range, not a pass over the whole tree
        // (which made checking a 30,000-file layer take minutes).
        let below: Vec<PathBuf> = tree
            .range::<PathBuf, _>((std::ops::Bound::Excluded(&path), std::ops::Bound::Unbounded))
            .take_while(|(p, _)| p.starts_with(&path))
            .map(|(p, _)| p.clone())
            .collect();
        for p in below {
            tree.remove(&p);
        }
    }
    tree.insert(path, expected);
}

/// The differences between the tree at `root` and `expected`, as
/// `path: what` texts.
fn compare(root: &Path, expected: &BTreeMap<PathBuf, Expected>) -> Vec<String> {
    let mut differences = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for item in walkdir::WalkDir::new(root)
        .min_depth(1)
        .sort_by_file_name()
        .follow_links(false)
    {
        let item = match item {
            Ok(item) => item,
            Err(e) => {
                differences.push(format!("{e}"));
                continue;
            }
        };
        let relative = item
            .path()
            .strip_prefix(root)
            .unwrap_or(item.path())
            .to_owned();
        let shown = relative.display().to_string();
        let Some(wanted) = expected.get(&relative) else {
            differences.push(format!("{shown}: not in the layer"));
            continue;
        };
        seen.insert(relative.clone());
        if let Err(difference) = compare_one(item.path(), wanted) {
            differences.push(format!("{shown}: {difference}"));
        }
    }
    for (path, wanted) in expected {
        if !seen.contains(path) {
            differences.push(format!(
                "{}: missing (the layer has {})",
                path.display(),
                wanted.kind.name()
            ));
        }
    }
    differences
}

fn compare_one(path: &Path, wanted: &Expected) -> Result<(), String> {
    let meta = fs::symlink_metadata(path).map_err(|e| e.to_string())?;
    let kind = meta.file_type();
    let is = match &wanted.kind {
        Kind::Dir { .. } => kind.is_dir(),
        Kind::File { .. } | Kind::Hardlinked => kind.is_file(),
        Kind::Symlink(_) => kind.is_symlink(),
        Kind::Device { block: true, .. } => kind.is_block_device(),
        Kind::Device { block: false, .. } => kind.is_char_device() && meta.rdev() != 0,
        Kind::Fifo => kind.is_fifo(),
        Kind::Whiteout => kind.is_char_device() && meta.rdev() == 0,
    };
    if !is {
        return Err(format!("not {} as in the layer", wanted.kind.name()));
    }
    if let Some(mode) = wanted.mode {
        if meta.mode() & 0o7777 != mode {
            return Err(format!(
                "mode {:o}, the layer has {mode:o}",
                meta.mode() & 0o7777
            ));
        }
    }
    if let Some((uid, gid)) = wanted.owner {
        if (meta.uid(), meta.gid()) != (uid, gid) {
            return Err(format!(
                "owner {}:{}, the layer has {uid}:{gid}",
                meta.uid(),
                meta.gid()
            ));
        }
    }
    if let Some(size) = wanted.size {
        if meta.len() != size {
            return Err(format!("{} bytes, the layer has {size}", meta.len()));
        }
    }
    match &wanted.kind {
        Kind::File { content } => {
            let actual = hash_file(path).map_err(|e| e.to_string())?;
            if actual != *content {
                return Err("content differs from the layer's".into());
            }
        }
        Kind::Symlink(target) => {
            let actual = fs::read_link(path).map_err(|e| e.to_string())?;
            if actual != *target {
                return Err(format!(
                    "links to {}, the layer has {}",
                    actual.display(),
                    target.display()
                ));
            }
        }
        Kind::Device { rdev, .. } if meta.rdev() != *rdev => {
            return Err("another device number than the layer's".into());
        }
        Kind::Dir { opaque } => {
            let actual = xattr::get(path, OPAQUE_XATTR).ok().flatten().as_deref() == Some(b"y");
            if actual != *opaque {
                return Err(match opaque {
                    true => "not opaque, the layer makes it opaque".into(),
                    false => "opaque, the layer does not make it so".into(),
                });
            }
        }
        _ => {}
    }
    Ok(())
}

fn hash_file(path: &Path) -> io::Result<Digest> {
    let mut file = fs::File::open(path)?;
    let mut hasher = HashingWriter::new(io::sink());
    io::copy(&mut file, &mut hasher)?;
    Ok(hasher.finish().0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: Kind) -> Expected {
        Expected {
            kind,
            mode: None,
            owner: None,
            size: None,
        }
    }

    #[test]
    fn a_non_directory_replaces_what_was_below_it_and_nothing_else() {
        let mut tree = BTreeMap::new();
        for path in ["a", "a/b", "a/b/c", "a0", "a.txt", "b"] {
            insert(
                &mut tree,
                PathBuf::from(path),
                entry(Kind::Dir { opaque: false }),
            );
        }
        insert(&mut tree, PathBuf::from("a"), entry(Kind::Fifo));
        let left: Vec<_> = tree.keys().map(|p| p.display().to_string()).collect();
        assert_eq!(left, ["a", "a.txt", "a0", "b"]);
        assert!(matches!(tree[Path::new("a")].kind, Kind::Fifo));
    }
}
