//! What a stage's filesystem holds, read from its layer tars: which paths
//! exist (so a COPY does not reset the metadata of directories the base
//! already has), single files (`/etc/passwd` for `--chown` names), and the
//! whole tree unpacked for `COPY --from`. OCI whiteouts are honoured.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;
use std::sync::Arc;

use kiln_runtime::{Found, LowerView};

use kiln_store::snapshot::{OPAQUE_MARKER, WHITEOUT_PREFIX};
use kiln_store::{Layer, Store};

use crate::error::BuildError;

/// Metadata of one path of a stage's filesystem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathMeta {
    pub is_dir: bool,
    /// A symlink's target, raw bytes: destinations resolve through it.
    pub symlink: Option<Vec<u8>>,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
}

/// The most symlinks a path resolution follows (Linux's limit).
const MAX_SYMLINKS: usize = 40;

/// The merged view of a stack of layers: path (no leading `/`, raw
/// bytes: names need not be UTF-8) → metadata. Either every path, read
/// from the layers' tars, or, when every layer has its snapshot, a view
/// over the snapshots that looks paths up as they are asked for (a stage
/// of 30,000 files answers the few lookups a COPY makes without reading
/// 30,000 tar headers), with what was recorded since on top.
#[derive(Clone, Debug, Default)]
pub struct Tree {
    paths: BTreeMap<Vec<u8>, PathMeta>,
    lower: Option<Arc<LowerView>>,
    /// Paths whose entry in `lower`, and everything under it, is gone.
    hidden: BTreeSet<Vec<u8>>,
    /// Directories whose children in `lower` are gone.
    emptied: BTreeSet<Vec<u8>>,
}

impl Tree {
    /// The tree of `layers` (bottom first): over their snapshots if they
    /// all have one, else read from their tars.
    pub fn of(store: &Store, layers: &[Layer]) -> Result<Tree, BuildError> {
        if let Some(tree) = Tree::over_snapshots(store, layers)? {
            return Ok(tree);
        }
        let mut tree = Tree::default();
        for layer in layers {
            tree.apply(store, layer)?;
        }
        Ok(tree)
    }

    /// A view over the snapshots of `layers`, if every one has its
    /// snapshot (see [`snapshots_view`]).
    pub fn over_snapshots(store: &Store, layers: &[Layer]) -> Result<Option<Tree>, BuildError> {
        Ok(snapshots_view(store, layers)?.map(Tree::over))
    }

    /// The tree `view` shows, nothing recorded on top yet.
    fn over(view: Arc<LowerView>) -> Tree {
        Tree {
            lower: Some(view),
            ..Tree::default()
        }
    }

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
                self.delete(&target);
                continue;
            }
            let header = entry.header();
            let kind = header.entry_type();
            let symlink = if kind.is_symlink() {
                Some(entry.link_name_bytes().unwrap_or_default().into_owned())
            } else {
                None
            };
            let meta = PathMeta {
                is_dir: kind.is_dir(),
                symlink,
                mode: header.mode().unwrap_or(0o644),
                uid: header.uid().unwrap_or(0),
                gid: header.gid().unwrap_or(0),
                mtime: header.mtime().unwrap_or(0),
            };
            self.insert(path, meta);
        }
        Ok(())
    }

    /// `path` (relative, raw bytes) with every symlink on the way followed
    /// as it resolves inside the stage: an absolute target from the stage's
    /// root, `..` stopping at it, the last component followed too (as
    /// BuildKit's `RootPath` resolves a COPY destination). Components the
    /// stage lacks are taken as they are. `None` past 40 links (a loop).
    pub fn resolve(&self, path: &[u8]) -> Option<Vec<u8>> {
        // Components still to walk, the next one last.
        let mut todo: Vec<Vec<u8>> = path
            .split(|&b| b == b'/')
            .rev()
            .map(<[u8]>::to_vec)
            .collect();
        let mut resolved: Vec<u8> = Vec::new();
        let mut links = 0usize;
        while let Some(part) = todo.pop() {
            match part.as_slice() {
                b"" | b"." => continue,
                b".." => {
                    let (parent, _) = split_bytes(&resolved);
                    resolved.truncate(parent.len());
                    continue;
                }
                _ => {}
            }
            let before = resolved.len();
            if !resolved.is_empty() {
                resolved.push(b'/');
            }
            resolved.extend_from_slice(&part);
            let Some(target) = self.get(&resolved).and_then(|m| m.symlink) else {
                continue;
            };
            links += 1;
            if links > MAX_SYMLINKS {
                return None;
            }
            resolved.truncate(if target.starts_with(b"/") { 0 } else { before });
            todo.extend(target.split(|&b| b == b'/').rev().map(<[u8]>::to_vec));
        }
        Some(resolved)
    }

    /// Deletes `path` and everything under it.
    fn delete(&mut self, path: &[u8]) {
        self.remove_children(path);
        self.paths.remove(path);
        if self.lower.is_some() {
            self.hidden.insert(path.to_vec());
        }
    }

    fn remove_children(&mut self, dir: &[u8]) {
        if self.lower.is_some() {
            self.emptied.insert(dir.to_vec());
        }
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
        }
    }

    pub fn get(&self, path: &[u8]) -> Option<PathMeta> {
        if let Some(meta) = self.paths.get(path) {
            return Some(meta.clone());
        }
        let lower = self.lower.as_ref()?;
        if self.hidden.contains(path) {
            return None;
        }
        // What was recorded above the snapshots hides their entry: an
        // ancestor deleted, emptied, or replaced by a non-directory.
        let mut ancestors = vec![&path[..0]];
        ancestors.extend(
            (0..path.len())
                .filter(|&i| path[i] == b'/')
                .map(|i| &path[..i]),
        );
        for ancestor in ancestors {
            let replaced = !ancestor.is_empty()
                && (self.hidden.contains(ancestor)
                    || self.paths.get(ancestor).is_some_and(|m| !m.is_dir));
            if replaced || self.emptied.contains(ancestor) {
                return None;
            }
        }
        let found = lower.lookup_os(&components(path))?;
        Some(meta_of(&found))
    }

    /// Records `path`; what replaces a directory with something else
    /// takes the directory's contents with it, as unpacking a layer does.
    pub fn insert(&mut self, path: Vec<u8>, meta: PathMeta) {
        if !meta.is_dir && self.get(&path).is_some_and(|old| old.is_dir) {
            self.remove_children(&path);
        }
        if !meta.is_dir && self.lower.is_some() {
            self.hidden.insert(path.clone());
        }
        self.paths.insert(path, meta);
    }
}

/// The merged view of `layers`' snapshots, if every one has its snapshot
/// (none is made here: unpacking to answer a lookup would cost more than
/// reading the headers).
fn snapshots_view(store: &Store, layers: &[Layer]) -> Result<Option<Arc<LowerView>>, BuildError> {
    if layers.is_empty() || !layers.iter().all(|l| store.has_snapshot(&l.digest)) {
        return Ok(None);
    }
    let digests: Vec<_> = layers.iter().map(|l| l.digest).collect();
    let dirs = store.lower_dirs(&digests)?;
    Ok(Some(Arc::new(LowerView::new(dirs))))
}

/// A relative path's components as names (`""` has none).
fn components(path: &[u8]) -> Vec<&OsStr> {
    if path.is_empty() {
        return Vec::new();
    }
    path.split(|&b| b == b'/').map(OsStr::from_bytes).collect()
}

/// Sets a directory's time once what goes in it is there.
fn set_dir_time(dir: &Path, mtime: u64) -> std::io::Result<()> {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime);
    fs::File::open(dir)?.set_modified(time)
}

/// A snapshot entry's metadata as its layer's header gave it.
fn meta_of(found: &Found) -> PathMeta {
    use std::os::unix::fs::MetadataExt;
    let kind = found.metadata.file_type();
    PathMeta {
        is_dir: kind.is_dir(),
        symlink: if kind.is_symlink() {
            fs::read_link(&found.host_path)
                .ok()
                .map(|t| t.into_os_string().into_vec())
        } else {
            None
        },
        mode: found.metadata.mode() & 0o7777,
        uid: u64::from(found.metadata.uid()),
        gid: u64::from(found.metadata.gid()),
        mtime: u64::try_from(found.metadata.mtime()).unwrap_or(0),
    }
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

/// Whose files an unpacked tree holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owners {
    /// The layers' owners, when kiln can give them (it runs as root): a
    /// build input (`COPY --from`, `RUN --mount=from=`) must show the
    /// owners the stage has, as BuildKit's does.
    FromLayers,
    /// Whoever runs kiln (what is written where the user asked).
    Caller,
}

/// Whether files unpacked with [`Owners::FromLayers`] keep the layers'
/// owners: only root can give them.
pub(crate) fn keeps_layer_owners() -> bool {
    running_as_root()
}

/// Whether this process may give files to other users.
fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Unpacks the stack into `dir` (which must be empty), applying
/// whiteouts. The tar crate refuses entries that would land outside `dir`,
/// including through symlinks the archive itself planted.
pub fn unpack(
    store: &Store,
    layers: &[Layer],
    dir: &Path,
    owners: Owners,
) -> Result<(), BuildError> {
    unpack_wanted(store, layers, dir, owners, &Wanted::All)
}

/// What of a stack a reader needs unpacked.
pub enum Wanted {
    All,
    /// Every directory and symlink (they decide what a path resolves to,
    /// and cost no content), and other entries only at or under one of
    /// these paths (relative, normalised), or the hard-link targets of
    /// such entries. `COPY --from=build /src/dist/` needs `src/dist`, not
    /// the 30,000 files of the stage's `node_modules`.
    Under(Vec<Vec<u8>>),
}

impl Wanted {
    /// The paths whose subtrees are wanted (the root's, `""`, for all).
    fn roots(self) -> Vec<Vec<u8>> {
        match self {
            Wanted::All => vec![Vec::new()],
            Wanted::Under(roots) => roots,
        }
    }

    fn covers(&self, path: &[u8]) -> bool {
        match self {
            Wanted::All => true,
            Wanted::Under(roots) => roots.iter().any(|root| {
                root.is_empty()
                    || path == root.as_slice()
                    || (path.starts_with(root) && path.get(root.len()) == Some(&b'/'))
            }),
        }
    }
}

impl Wanted {
    /// What a COPY of `sources` (as written: paths or patterns inside the
    /// stack's root) needs of `layers`: each source's literal part (up to
    /// its first component with a wildcard), as written and as the
    /// stack's own symlinks resolve it. Everything when a source is the
    /// root itself or its links loop.
    pub fn for_sources(tree: &Tree, sources: &[String]) -> Wanted {
        let mut roots = Vec::new();
        for source in sources {
            let literal: Vec<&str> = source
                .split('/')
                .take_while(|part| !part.contains(['*', '?', '[', '\\']))
                .collect();
            let literal = normalize_bytes(literal.join("/").as_bytes());
            let Some(resolved) = tree.resolve(&literal) else {
                return Wanted::All;
            };
            if literal.is_empty() || resolved.is_empty() {
                return Wanted::All;
            }
            roots.push(literal);
            roots.push(resolved);
        }
        Wanted::Under(roots)
    }
}

/// What of `layers` a selection reads, placed in `dir` (empty) for kiln
/// to select and hash from: what `sources` can reach (all of it for
/// `None`), with the layers' owners. Never for a container: over
/// snapshots (when every layer has one and kiln runs as root) the files are
/// hard links to the snapshots' own, so nothing is unpacked or copied, and
/// writing one would change a snapshot. Else unpacked from the tars.
pub fn place_for_reading(
    store: &Store,
    layers: &[Layer],
    dir: &Path,
    sources: Option<&[String]>,
) -> Result<(), BuildError> {
    let view = if running_as_root() {
        snapshots_view(store, layers)?
    } else {
        None
    };
    let Some(view) = view else {
        let wanted = match sources {
            Some(sources) => Wanted::for_sources(&Tree::of(store, layers)?, sources),
            None => Wanted::All,
        };
        return unpack_wanted(store, layers, dir, Owners::FromLayers, &wanted);
    };
    let roots = match sources {
        Some(sources) => Wanted::for_sources(&Tree::over(view.clone()), sources).roots(),
        None => Wanted::All.roots(),
    };
    let mut out = LinkOut {
        view: &view,
        dir,
        placed: BTreeMap::new(),
        whole: BTreeSet::new(),
        dirs: Vec::new(),
    };
    for root in &roots {
        let parts = components(root);
        // The root's parents as the stage has them; a parent that is a
        // link is placed as one, and the root it resolves to is another
        // of the roots.
        let mut parents_are_dirs = true;
        for depth in 1..parts.len() {
            if !out.parent(&parts[..depth])? {
                parents_are_dirs = false;
                break;
            }
        }
        if parents_are_dirs {
            out.subtree(&parts)?;
        }
    }
    out.finish()
}

/// [`place_for_reading`] over snapshots: what was placed, by path.
struct LinkOut<'a> {
    view: &'a LowerView,
    dir: &'a Path,
    /// Placed paths → whether each is a directory.
    placed: BTreeMap<Vec<u8>, bool>,
    /// Directories placed with everything under them.
    whole: BTreeSet<Vec<u8>>,
    /// Directories made, parents first, with the time each must end with.
    dirs: Vec<(std::path::PathBuf, u64)>,
}

impl LinkOut<'_> {
    fn target(&self, parts: &[&OsStr]) -> std::path::PathBuf {
        let mut target = self.dir.to_path_buf();
        target.extend(parts);
        target
    }

    fn key(parts: &[&OsStr]) -> Vec<u8> {
        parts
            .iter()
            .map(|p| p.as_bytes())
            .collect::<Vec<_>>()
            .join(&b'/')
    }

    /// Places one parent directory (not its contents); whether it is one.
    fn parent(&mut self, parts: &[&OsStr]) -> Result<bool, BuildError> {
        if let Some(is_dir) = self.placed.get(&Self::key(parts)) {
            return Ok(*is_dir);
        }
        let Some(found) = self.view.lookup_os(parts) else {
            return Ok(false);
        };
        self.place(parts, &found)?;
        Ok(found.metadata.is_dir())
    }

    /// Places `parts` and everything under it. A directory an earlier
    /// root placed as a parent only is filled now.
    fn subtree(&mut self, parts: &[&OsStr]) -> Result<(), BuildError> {
        let key = Self::key(parts);
        if self.whole.contains(&key) {
            return Ok(());
        }
        match self.placed.get(&key) {
            Some(false) => return Ok(()),
            Some(true) => {}
            None if parts.is_empty() => {}
            None => {
                let Some(found) = self.view.lookup_os(parts) else {
                    return Ok(());
                };
                self.place(parts, &found)?;
                if !found.metadata.is_dir() {
                    return Ok(());
                }
            }
        }
        for name in self.view.list(parts) {
            let mut child = parts.to_vec();
            child.push(&name);
            self.subtree(&child)?;
        }
        self.whole.insert(key);
        Ok(())
    }

    /// A directory made with the entry's owner and mode (its time is set
    /// last); anything else hard-linked to the snapshot's inode.
    fn place(&mut self, parts: &[&OsStr], found: &Found) -> Result<(), BuildError> {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let target = self.target(parts);
        let io = |e| BuildError::io(&target, e);
        let meta = &found.metadata;
        if meta.is_dir() {
            fs::create_dir(&target).map_err(io)?;
            std::os::unix::fs::lchown(&target, Some(meta.uid()), Some(meta.gid())).map_err(io)?;
            fs::set_permissions(&target, fs::Permissions::from_mode(meta.mode() & 0o7777))
                .map_err(io)?;
            self.dirs
                .push((target.clone(), u64::try_from(meta.mtime()).unwrap_or(0)));
        } else {
            // linkat without AT_SYMLINK_FOLLOW: a symlink is linked itself.
            fs::hard_link(&found.host_path, &target).map_err(io)?;
        }
        self.placed.insert(Self::key(parts), meta.is_dir());
        Ok(())
    }

    /// Directory times, deepest first: placing entries changed them.
    fn finish(self) -> Result<(), BuildError> {
        for (dir, mtime) in self.dirs.iter().rev() {
            set_dir_time(dir, *mtime).map_err(|e| BuildError::io(dir, e))?;
        }
        Ok(())
    }
}

/// [`unpack`] of only what `wanted` covers.
pub fn unpack_wanted(
    store: &Store,
    layers: &[Layer],
    dir: &Path,
    owners: Owners,
    wanted: &Wanted,
) -> Result<(), BuildError> {
    let link_targets = match wanted {
        Wanted::All => BTreeSet::new(),
        Wanted::Under(_) => hard_link_targets(store, layers, wanted)?,
    };
    let keep_owners = owners == Owners::FromLayers && running_as_root();
    let mut dir_times: Vec<(std::path::PathBuf, u64)> = Vec::new();
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
            if let Wanted::Under(_) = wanted {
                let kind = entry.header().entry_type();
                let raw = normalize_bytes(&entry.path_bytes());
                let shapes_paths = kind.is_dir() || kind.is_symlink();
                if !shapes_paths && !wanted.covers(&raw) && !link_targets.contains(&raw) {
                    continue;
                }
            }
            let unpacked = entry.unpack_in(dir).map_err(io)?;
            if keep_owners && unpacked {
                let rel = raw_relative(&entry.path_bytes());
                give_owner(&dir.join(&rel), entry.header())
                    .map_err(|e| BuildError::io(dir.join(&rel), e))?;
            }
            if unpacked && entry.header().entry_type().is_dir() {
                let rel = raw_relative(&entry.path_bytes());
                dir_times.push((dir.join(rel), entry.header().mtime().unwrap_or(0)));
            }
        }
    }
    // What was unpacked into a directory changed its time: the layers'
    // times are set last, deepest first (as tar's own unpack does), so a
    // copy from the tree keeps them.
    // (One a later whiteout removed is not there to set.)
    for (path, mtime) in dir_times.iter().rev() {
        let _ = set_dir_time(path, *mtime);
    }
    Ok(())
}

/// The paths hard links that `wanted` covers point to (a link's target
/// must be there before it), from a first pass over the headers.
fn hard_link_targets(
    store: &Store,
    layers: &[Layer],
    wanted: &Wanted,
) -> Result<BTreeSet<Vec<u8>>, BuildError> {
    let mut targets = BTreeSet::new();
    for layer in layers {
        let file = kiln_store::open_layer(store.blobs(), &layer.digest)?;
        let what = layer.digest.to_string();
        let io = |e| BuildError::io(&what, e);
        let mut archive = tar::Archive::new(file);
        for entry in archive.entries().map_err(io)? {
            let entry = entry.map_err(io)?;
            if entry.header().entry_type() != tar::EntryType::Link
                || !wanted.covers(&normalize_bytes(&entry.path_bytes()))
            {
                continue;
            }
            if let Some(target) = entry.link_name_bytes() {
                targets.insert(normalize_bytes(&target));
            }
        }
    }
    Ok(targets)
}

/// An entry's path relative to the tree, byte for byte (`unpack_in` has
/// refused any that climbs out).
fn raw_relative(raw: &[u8]) -> std::path::PathBuf {
    use std::os::unix::ffi::OsStrExt;
    raw.split(|&b| b == b'/')
        .filter(|part| !part.is_empty() && *part != b".")
        .map(std::ffi::OsStr::from_bytes)
        .collect()
}

/// Gives the entry just unpacked at `path` the owner its header names.
/// Done here rather than by tar-rs, which fails on a blank uid field that
/// Go's archive/tar (so Docker) reads as 0. chown clears set-id bits, so
/// they are set again; a link is chowned itself, never what it points at.
fn give_owner(path: &Path, header: &tar::Header) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let kind = header.entry_type();
    let (uid, gid) = (header.uid().unwrap_or(0), header.gid().unwrap_or(0));
    // A hard link shares its target's owner.
    if (uid, gid) == (0, 0) || kind.is_hard_link() {
        return Ok(());
    }
    let id = |n: u64| {
        u32::try_from(n).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("owner id {n} is too large"),
            )
        })
    };
    std::os::unix::fs::lchown(path, Some(id(uid)?), Some(id(gid)?))?;
    let mode = header.mode().unwrap_or(0) & 0o7777;
    if mode & 0o6000 != 0 && !kind.is_symlink() {
        fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
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

    fn tree(entries: &[(&str, Option<&str>)]) -> Tree {
        let mut tree = Tree::default();
        for (path, link) in entries {
            tree.insert(
                path.as_bytes().to_vec(),
                PathMeta {
                    is_dir: link.is_none(),
                    symlink: link.map(|l| l.as_bytes().to_vec()),
                    mode: 0o755,
                    uid: 0,
                    gid: 0,
                    mtime: 0,
                },
            );
        }
        tree
    }

    #[test]
    fn wanted_covers_whole_components_only() {
        let wanted = Wanted::Under(vec![b"src/dist".to_vec()]);
        assert!(wanted.covers(b"src/dist"));
        assert!(wanted.covers(b"src/dist/bundle.js"));
        assert!(!wanted.covers(b"src/distx"));
        assert!(!wanted.covers(b"src"));
        assert!(!wanted.covers(b"node_modules/p1/f1.js"));
        assert!(Wanted::All.covers(b"anything"));
    }

    #[test]
    fn paths_resolve_inside_the_stage() {
        let t = tree(&[
            ("real", None),
            ("abs", Some("/real")),
            ("var", None),
            ("var/run", Some("../real")),
            ("up", Some("../../../real")),
            ("chain", Some("abs/sub")),
            ("loop", Some("loop2")),
            ("loop2", Some("/loop")),
        ]);
        let resolve = |p: &str| t.resolve(p.as_bytes()).map(|r| lossy(&r));
        assert_eq!(resolve("abs").as_deref(), Some("real"));
        assert_eq!(resolve("var/run/x").as_deref(), Some("real/x"));
        // `..` stops at the stage's root, never above it.
        assert_eq!(resolve("up/x").as_deref(), Some("real/x"));
        assert_eq!(resolve("../../abs").as_deref(), Some("real"));
        assert_eq!(resolve("chain").as_deref(), Some("real/sub"));
        assert_eq!(resolve("missing/a").as_deref(), Some("missing/a"));
        assert_eq!(resolve("").as_deref(), Some(""));
        assert_eq!(resolve("loop/x"), None);
    }

    fn lossy(bytes: &[u8]) -> String {
        String::from_utf8_lossy(bytes).into_owned()
    }

    #[test]
    fn replacing_a_directory_drops_what_was_in_it() {
        let mut t = tree(&[("d", None), ("d/f", None)]);
        t.insert(
            b"d".to_vec(),
            PathMeta {
                is_dir: false,
                symlink: Some(b"/elsewhere".to_vec()),
                mode: 0o777,
                uid: 0,
                gid: 0,
                mtime: 0,
            },
        );
        assert!(t.get(b"d/f").is_none());
        assert_eq!(t.resolve(b"d/f").as_deref(), Some(&b"elsewhere/f"[..]));
    }

    #[test]
    fn what_is_recorded_over_snapshots_hides_what_they_hold() {
        let lower = tempfile::tempdir().unwrap();
        fs::create_dir_all(lower.path().join("a/b")).unwrap();
        fs::write(lower.path().join("a/b/f"), "").unwrap();
        fs::create_dir_all(lower.path().join("opq/in")).unwrap();
        fs::create_dir_all(lower.path().join("gone/x")).unwrap();
        std::os::unix::fs::symlink("a/b", lower.path().join("link")).unwrap();
        let mut t = Tree {
            lower: Some(Arc::new(LowerView::new(vec![lower.path().into()]))),
            ..Tree::default()
        };
        assert!(t.get(b"a/b/f").is_some_and(|m| !m.is_dir));
        assert!(t.get(b"a/b").is_some_and(|m| m.is_dir));
        assert_eq!(t.resolve(b"link/f").as_deref(), Some(&b"a/b/f"[..]));
        assert!(t.get(b"missing").is_none());
        // A file recorded over a directory takes what was under it.
        t.insert(
            b"a/b".to_vec(),
            PathMeta {
                is_dir: false,
                symlink: None,
                mode: 0o644,
                uid: 0,
                gid: 0,
                mtime: 0,
            },
        );
        assert!(t.get(b"a/b").is_some_and(|m| !m.is_dir));
        assert!(t.get(b"a/b/f").is_none());
        // An opaque directory keeps itself, not its children; a whiteout
        // takes both.
        t.remove_children(b"opq");
        assert!(t.get(b"opq").is_some());
        assert!(t.get(b"opq/in").is_none());
        t.delete(b"gone");
        assert!(t.get(b"gone").is_none() && t.get(b"gone/x").is_none());
        // What is recorded after a deletion is there.
        t.insert(b"gone".to_vec(), dir_meta_for_tests());
        assert!(t.get(b"gone").is_some() && t.get(b"gone/x").is_none());
    }

    fn dir_meta_for_tests() -> PathMeta {
        PathMeta {
            is_dir: true,
            symlink: None,
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: 0,
        }
    }
}
