//! Garbage collection and pruning as library calls. The roots GC keeps
//! besides tags (the layers cache entries name, the images kept containers
//! run on) are computed here, by the engine, so no front end can forget
//! one; pruning policy (by last use, by size, everything) is here too.

use std::path::Path;
use std::time::{Duration, SystemTime};

use kiln_cache::{CacheIndex, ListedEntry};
use kiln_runtime::containers::Containers;
use kiln_store::{Digest, GcReport, Store};

use crate::{Engine, EngineError};

/// What `prune` forgets before collecting.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrunePolicy {
    /// Every cache entry.
    pub all: bool,
    /// Entries not used for longer than this.
    pub unused_for: Option<Duration>,
    /// Keep the most recently used entries up to this many bytes.
    pub keep_bytes: Option<u64>,
    /// Also empty the idle `RUN --mount=type=cache` directories.
    pub cache_mounts: bool,
}

/// What `prune` did.
#[derive(Debug, Default)]
pub struct PruneReport {
    pub entries_forgotten: usize,
    pub cache_mounts_removed: usize,
    pub gc: GcReport,
}

impl Engine {
    /// Deletes what no tag, cache entry, kept container or live process
    /// reaches, and what dead processes left behind.
    pub fn gc(&self) -> Result<GcReport, EngineError> {
        let store = self.store();
        Ok(store.gc(&|| gc_roots(store))?)
    }

    /// Forgets the cache entries `policy` selects, then collects.
    pub fn prune(&self, policy: &PrunePolicy) -> Result<PruneReport, EngineError> {
        let store = self.store();
        let cache = CacheIndex::open(&store.layout().cache());
        // Forgetting cache entries needs no lock: a build that finds one
        // leases its layer, or misses if GC took it first.
        let entries_forgotten = if policy.all {
            let count = cache.entries().len();
            cache.clear()?;
            count
        } else {
            let doomed = select_for_pruning(cache.entries(), policy.unused_for, policy.keep_bytes);
            for entry in &doomed {
                cache.remove(entry)?;
            }
            doomed.len()
        };
        let cache_mounts_removed = if policy.cache_mounts {
            remove_idle_cache_mounts(&store.layout().cache_mounts())
        } else {
            0
        };
        Ok(PruneReport {
            entries_forgotten,
            cache_mounts_removed,
            gc: self.gc()?,
        })
    }
}

/// What GC keeps besides tagged images: the layers of cached steps, and
/// the images of kept containers (their snapshots are those containers'
/// lower dirs; `kiln rmi` of such an image removes the name only).
fn gc_roots(store: &Store) -> Vec<Digest> {
    let layout = store.layout();
    let cached = CacheIndex::open(&layout.cache())
        .entries()
        .into_iter()
        .filter_map(|entry| entry.blob);
    let containers = Containers::open(&layout.containers())
        .list()
        .into_iter()
        .filter_map(|record| record.config.image_id.parse().ok());
    cached.chain(containers).collect()
}

/// Removes the cache mount directories no RUN step is using (a step holds
/// `<id>.lock` while it runs; a directory whose lock is held is kept).
/// Returns how many went.
fn remove_idle_cache_mounts(dir: &Path) -> usize {
    let mut removed = 0;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        let lock_path = path.with_extension("lock");
        let Ok(lock) = std::fs::File::create(&lock_path) else {
            continue;
        };
        if lock.try_lock().is_err() {
            continue;
        }
        // The lock file stays: a step may have it open, about to lock it.
        if std::fs::remove_dir_all(&path).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// The entries to forget: those unused for longer than `until`, then,
/// newest first, those beyond `keep_storage` bytes.
fn select_for_pruning(
    mut entries: Vec<ListedEntry>,
    until: Option<Duration>,
    keep_storage: Option<u64>,
) -> Vec<ListedEntry> {
    entries.sort_by_key(|entry| std::cmp::Reverse(entry.last_used));
    let now = SystemTime::now();
    let mut kept_bytes = 0u64;
    entries
        .into_iter()
        .filter(|entry| {
            let age = now.duration_since(entry.last_used).unwrap_or_default();
            if until.is_some_and(|limit| age > limit) {
                return true;
            }
            if keep_storage.is_some_and(|limit| kept_bytes + entry.size > limit) {
                return true;
            }
            kept_bytes += entry.size;
            false
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_cache::KeyBuilder;

    fn entry(n: u32, size: u64, age_secs: u64) -> ListedEntry {
        ListedEntry {
            key: KeyBuilder::new("t").text("n", &n.to_string()).finish(),
            blob: None,
            size,
            last_used: SystemTime::now() - Duration::from_secs(age_secs),
        }
    }

    #[test]
    fn pruning_takes_the_old_then_the_least_recent_beyond_the_size() {
        let entries = vec![entry(1, 10, 10), entry(2, 10, 100), entry(3, 10, 5000)];
        let old = select_for_pruning(entries.clone(), Some(Duration::from_secs(1000)), None);
        assert_eq!(old.len(), 1);
        assert_eq!(old[0].key, entries[2].key);
        let big = select_for_pruning(entries.clone(), None, Some(15));
        let keys: Vec<_> = big.iter().map(|e| e.key).collect();
        assert_eq!(keys, vec![entries[1].key, entries[2].key]);
        assert!(select_for_pruning(entries, None, None).is_empty());
    }
}
