//! Who owns what is being written, so that GC removes the leftovers of dead
//! processes and never the work of live ones.
//!
//! Each [`Store`](crate::Store) value that writes registers an *owner*: a
//! file `kiln/owners/<id>` that it holds `flock`ed for its whole life.
//! Every temp file or directory it makes carries `<id>` in its name
//! (`.tmp-<id>-...` in the store root, `blobs/sha256/` and
//! `kiln/snapshots/`, `<id>-...` in `kiln/tmp/`), and the owner file lists
//! the digests it *leases*: the blobs it wrote or relies on but has not yet
//! made reachable from a tag (a build's layers before the tag, a base
//! image, a cache hit). GC keeps what the leases of live owners reach.
//!
//! Why a held lock file and not a pid (or pid + start time) in the name:
//! the kernel drops the lock exactly when the process dies, however it
//! dies, so a live owner is one whose file cannot be locked. A pid can be
//! reused, means nothing across pid namespaces (a kiln in a container
//! sharing the store), and needs `/proc` to check; the lock needs nothing.
//! Why owners rather than writers holding the store lock for their whole
//! work: a build would then hold it for minutes, and GC (which must take
//! it exclusively) would wait for every build, and every new build for GC.
//! Here writers take the store lock shared only for the instant they lease
//! a digest and make a blob visible, and GC takes it exclusively only to
//! re-read the roots and delete.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use crate::digest::Digest;
use crate::error::{IoContext, StoreError};
use crate::layout::Layout;
use crate::lock::{LockMode, StoreLock};

/// Prefix of every temp name in the store root, blobs and snapshots.
pub(crate) const TEMP_PREFIX: &str = ".tmp-";
/// An owner file being made (locked, then renamed to its id).
const NEW_PREFIX: &str = ".new-";

/// A fresh owner id: pid, time and a counter, so no two stores opened by
/// any processes ever share one. It holds no `-`, which ends it in names.
fn fresh_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{}.{nanos:x}.{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The owner id a temp name carries: `.tmp-<id>-...` (or `<id>-...` in
/// `kiln/tmp`). Names of older kilns (`.tmp-blob-...`, `unpack-...`) give
/// ids no owner has, so they count as dead.
pub(crate) fn owner_of(name: &str) -> &str {
    let rest = name.strip_prefix(TEMP_PREFIX).unwrap_or(name);
    rest.split('-').next().unwrap_or_default()
}

/// One store's owner in this process (see the module comment).
#[derive(Debug)]
pub(crate) struct Owner {
    id: String,
    layout: Layout,
    state: Mutex<Option<Registered>>,
    /// What the sweep at registration removed, not yet reported.
    swept: Mutex<Sweep>,
}

#[derive(Debug)]
struct Registered {
    /// Holds the owner lock; leases are appended to it.
    file: File,
    leased: HashSet<Digest>,
}

/// What removing dead processes' leftovers removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sweep {
    /// Temp files (blobs, index and other atomic writes).
    pub temp_files: usize,
    /// Half-made or half-deleted snapshots.
    pub snapshots: usize,
    /// Scratch directories of builds under `kiln/tmp`.
    pub scratch_dirs: usize,
}

impl Sweep {
    fn add(&mut self, other: Sweep) {
        self.temp_files += other.temp_files;
        self.snapshots += other.snapshots;
        self.scratch_dirs += other.scratch_dirs;
    }
}

impl Drop for Owner {
    /// A store closed normally ends its leases: its owner file goes (its
    /// temps went with the work that made them).
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some(registered) = state.take() {
            let _ = fs::remove_file(self.owners_dir().join(&self.id));
            drop(registered);
        }
    }
}

impl Owner {
    pub(crate) fn new(root: &Path) -> Owner {
        Owner {
            id: fresh_id(),
            layout: Layout::new(root),
            state: Mutex::new(None),
            swept: Mutex::new(Sweep::default()),
        }
    }

    fn owners_dir(&self) -> PathBuf {
        self.layout.owners()
    }

    fn gc_lock(&self) -> PathBuf {
        self.layout.gc_lock()
    }

    /// A temp name of this owner for `dir`: `.tmp-<id>-<what>-<n>`.
    /// Registers first, so GC sees the owner alive before the name exists.
    pub(crate) fn temp_name(&self, what: &str) -> Result<String, StoreError> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        drop(self.registered()?);
        Ok(format!(
            "{TEMP_PREFIX}{}-{what}-{}",
            self.id,
            N.fetch_add(1, Ordering::Relaxed)
        ))
    }

    /// A scratch directory `kiln/tmp/<id>-<what>-<n>`, created.
    pub(crate) fn scratch_dir(&self, what: &str) -> Result<PathBuf, StoreError> {
        let name = self.temp_name(what)?;
        let dir = self.layout.tmp().join(&name[TEMP_PREFIX.len()..]);
        fs::create_dir_all(&dir).at(&dir)?;
        Ok(dir)
    }

    /// Leases `digest` and then runs `publish` (which makes it visible or
    /// checks it is there) under the shared store lock: GC, which re-reads
    /// leases under the exclusive lock before deleting, either ran before
    /// (and `publish` sees what it left) or sees the lease.
    pub(crate) fn keep<T>(
        &self,
        digest: &Digest,
        publish: impl FnOnce() -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        drop(self.registered()?);
        let _shared = StoreLock::acquire(&self.gc_lock(), LockMode::Shared)?;
        self.record_lease(digest)?;
        publish()
    }

    /// Appends `digest` to the owner file, once per digest.
    fn record_lease(&self, digest: &Digest) -> Result<(), StoreError> {
        let mut state = self.registered()?;
        let Some(registered) = state.as_mut() else {
            return Err(StoreError::Unsupported(
                "the store owner is not registered".into(),
            ));
        };
        if registered.leased.insert(*digest) {
            let line = format!("{digest}\n");
            if let Err(e) = registered.file.write_all(line.as_bytes()) {
                registered.leased.remove(digest);
                return Err(StoreError::io(self.owners_dir().join(&self.id), e));
            }
        }
        Ok(())
    }

    /// Registers on first use: the owner file is made under a `.new-` name,
    /// locked, and only then renamed to its id, so it is never visible
    /// unlocked. Then the leftovers of dead owners go.
    fn registered(&self) -> Result<MutexGuard<'_, Option<Registered>>, StoreError> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.is_none() {
            *state = Some(self.register()?);
            drop(state);
            let swept = self.sweep_dead();
            self.swept
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .add(swept);
            state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        }
        Ok(state)
    }

    fn register(&self) -> Result<Registered, StoreError> {
        let dir = self.owners_dir();
        fs::create_dir_all(&dir).at(&dir)?;
        let target = dir.join(&self.id);
        loop {
            let temp = dir.join(format!("{NEW_PREFIX}{}", self.id));
            let file = OpenOptions::new()
                .append(true)
                .create(true)
                .truncate(false)
                .open(&temp)
                .at(&temp)?;
            file.lock().at(&temp)?;
            match fs::rename(&temp, &target) {
                Ok(()) => {
                    return Ok(Registered {
                        file,
                        leased: HashSet::new(),
                    })
                }
                // A sweeper took the unlocked new file for a dead one's
                // and removed it: make another.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StoreError::io(&target, e)),
            }
        }
    }

    /// Registers if not yet done, then sweeps; returns all this owner's
    /// sweeps removed that were not reported before.
    pub(crate) fn clean_leftovers(&self) -> Result<Sweep, StoreError> {
        drop(self.registered()?);
        let mut swept = std::mem::take(&mut *self.swept.lock().unwrap_or_else(|e| e.into_inner()));
        swept.add(self.sweep_dead());
        Ok(swept)
    }

    /// The digests leased by live owners (this one included).
    pub(crate) fn live_leases(&self) -> Vec<Digest> {
        let mut digests = Vec::new();
        for entry in fs::read_dir(self.owners_dir())
            .into_iter()
            .flatten()
            .flatten()
        {
            let path = entry.path();
            if !holds_lock(&path) {
                continue;
            }
            let text = fs::read_to_string(&path).unwrap_or_default();
            digests.extend(text.lines().filter_map(|line| line.parse::<Digest>().ok()));
        }
        digests
    }

    /// Removes what dead owners left: their temp files and snapshots, their
    /// scratch directories, and their owner files. Owners are locked while
    /// their leftovers go, so two sweepers never both work on one.
    pub(crate) fn sweep_dead(&self) -> Sweep {
        let dead = self.lock_dead_owners();
        let is_dead = |name: &str| {
            let id = owner_of(name);
            id != self.id && (dead.contains_key(id) || !owner_alive(&self.owners_dir(), id))
        };
        let mut sweep = Sweep::default();
        let remove_file = |path: &Path| fs::remove_file(path).is_ok();
        let blobs = self.layout.blobs();
        for (path, name) in entries(&blobs) {
            if !is_blob_name(&name) && is_dead(&name) && remove_file(&path) {
                sweep.temp_files += 1;
            }
        }
        for (path, name) in entries(self.layout.root()) {
            if name.starts_with(TEMP_PREFIX) && is_dead(&name) && remove_file(&path) {
                sweep.temp_files += 1;
            }
        }
        for (path, name) in entries(&self.layout.snapshots()) {
            if name.starts_with(TEMP_PREFIX) && is_dead(&name) && remove_any(&path) {
                sweep.snapshots += 1;
            }
        }
        for (path, name) in entries(&self.layout.tmp()) {
            if is_dead(&name) && remove_any(&path) {
                sweep.scratch_dirs += 1;
            }
        }
        // Leases of dead owners of the old scheme (pid files) mean nothing.
        let _ = fs::remove_dir_all(self.layout.pending());
        for path in dead.keys().map(|id| self.owners_dir().join(id)) {
            let _ = fs::remove_file(path);
        }
        sweep
    }

    /// Every owner file no process holds, locked by us (kept locked until
    /// the returned files are dropped). `.new-` files that stayed unlocked
    /// are of owners killed while registering.
    fn lock_dead_owners(&self) -> HashMap<String, File> {
        let mut dead = HashMap::new();
        for (path, name) in entries(&self.owners_dir()) {
            if name == self.id {
                continue;
            }
            let Ok(file) = File::open(&path) else {
                continue;
            };
            if file.try_lock().is_err() {
                continue;
            }
            if let Some(id) = name.strip_prefix(NEW_PREFIX) {
                if id != self.id {
                    let _ = fs::remove_file(&path);
                }
                continue;
            }
            dead.insert(name, file);
        }
        dead
    }
}

/// Whether some process holds the owner file `id` locked. A missing file
/// means a dead owner: owners register before naming anything.
fn owner_alive(owners: &Path, id: &str) -> bool {
    if id.is_empty() || id.contains('/') || id.starts_with('.') {
        return false;
    }
    holds_lock(&owners.join(id))
}

/// Whether another open file holds a lock on `path`.
fn holds_lock(path: &Path) -> bool {
    match File::open(path) {
        Ok(file) => matches!(file.try_lock(), Err(fs::TryLockError::WouldBlock)),
        Err(e) => e.kind() != io::ErrorKind::NotFound,
    }
}

fn is_blob_name(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

fn entries(dir: &Path) -> Vec<(PathBuf, String)> {
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| (e.path(), e.file_name().to_string_lossy().into_owned()))
        .collect()
}

fn remove_any(path: &Path) -> bool {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path).is_ok(),
        Ok(_) => fs::remove_file(path).is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_carry_their_owner() {
        assert_eq!(owner_of(".tmp-12.ab.0-blob-3"), "12.ab.0");
        assert_eq!(owner_of("12.ab.0-unpack-1"), "12.ab.0");
        assert_eq!(owner_of(".tmp-blob-1-1"), "blob");
        assert!(!fresh_id().contains('-'));
    }
}
