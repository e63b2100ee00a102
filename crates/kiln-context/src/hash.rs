//! Content hashing of files, in parallel (rayon), with a persistent stat
//! cache: a file whose path, size, mtime, inode and ctime are what they
//! were when it was last hashed is not read again. The cache is only ever
//! a shortcut to a content digest; nothing downstream sees an mtime.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use rayon::prelude::*;
use sha2::{Digest as _, Sha256};

use crate::error::ContextError;
use crate::root::Root;

/// A sha256 digest of a file's bytes.
pub type ContentDigest = [u8; 32];

/// What the stat cache remembers of a file when it hashed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    inode: u64,
    device: u64,
}

impl Stamp {
    fn of(meta: &fs::Metadata) -> Stamp {
        Stamp {
            size: meta.size(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
            inode: meta.ino(),
            device: meta.dev(),
        }
    }
}

const MAGIC: &[u8; 8] = b"kilnsc01";

/// File times are coarser than the clock (a few ms on ext4, 1 s or more
/// elsewhere): a file modified this close to the cache's writing may have
/// changed again without its stamp changing.
const RACY_MARGIN_NS: i128 = 2_000_000_000;

/// Path → (stamp, digest), loaded from and saved to one file. Safe to use
/// from many threads while hashing.
pub struct StatCache {
    file: Option<PathBuf>,
    /// What was loaded, once the loading thread is done (it decodes the
    /// file while the caller walks the context).
    loaded: std::sync::OnceLock<Loaded>,
    loading: Mutex<Option<std::thread::JoinHandle<Loaded>>>,
    dirty: Mutex<bool>,
}

/// A stat cache's contents.
struct Loaded {
    /// When the loaded cache was written: files modified within
    /// [`RACY_MARGIN_NS`] of it may have changed without a new stamp
    /// ("racily clean", as git calls it) and are hashed again.
    written_ns: i128,
    entries: Mutex<Entries>,
}

/// What a [`StatCache::hash_files`] call did, for progress and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HashStats {
    pub files: usize,
    /// Files whose digest came from the stat cache.
    pub unchanged: usize,
    /// Bytes read to hash the others.
    pub bytes_read: u64,
    /// Wall time spent, stat cache lookups included.
    pub elapsed: std::time::Duration,
}

impl HashStats {
    /// Adds the figures of another hashing pass.
    pub fn add(&mut self, other: &HashStats) {
        self.files += other.files;
        self.unchanged += other.unchanged;
        self.bytes_read += other.bytes_read;
        self.elapsed += other.elapsed;
    }
}

impl StatCache {
    /// A cache that remembers nothing between runs (for sources that are
    /// fresh every time, like an unpacked stage).
    pub fn in_memory() -> StatCache {
        StatCache {
            file: None,
            loaded: std::sync::OnceLock::from(Loaded {
                written_ns: i128::MAX,
                entries: Mutex::new(HashMap::new()),
            }),
            loading: Mutex::new(None),
            dirty: Mutex::new(false),
        }
    }

    /// Loads the cache kept in `file`; a missing or unreadable file gives
    /// an empty cache (it is only a shortcut, so damage costs time, never
    /// correctness).
    pub fn load(file: &Path) -> StatCache {
        let path = file.to_owned();
        // Decoded on a thread of its own: tens of thousands of entries
        // take a few milliseconds the context walk can cover.
        let loading = std::thread::spawn(move || {
            let decoded = fs::read(&path).ok().and_then(|bytes| decode(&bytes));
            let (written_ns, entries) = decoded.unwrap_or((0, HashMap::new()));
            Loaded {
                written_ns,
                entries: Mutex::new(entries),
            }
        });
        StatCache {
            file: Some(file.to_owned()),
            loaded: std::sync::OnceLock::new(),
            loading: Mutex::new(Some(loading)),
            dirty: Mutex::new(false),
        }
    }

    /// The cache's contents, waiting for the loading thread if need be (a
    /// loader that failed leaves an empty cache: it is only a shortcut).
    fn loaded(&self) -> &Loaded {
        self.loaded.get_or_init(|| {
            lock(&self.loading)
                .take()
                .and_then(|thread| thread.join().ok())
                .unwrap_or(Loaded {
                    written_ns: 0,
                    entries: Mutex::new(HashMap::new()),
                })
        })
    }

    /// The cache file for the context directory `context` under `dir`:
    /// one per context, named by its canonical path.
    pub fn file_for(dir: &Path, context: &Path) -> PathBuf {
        let canonical = fs::canonicalize(context).unwrap_or_else(|_| context.to_owned());
        let digest = Sha256::digest(canonical.as_os_str().as_bytes());
        let name: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
        dir.join(name)
    }

    /// Writes the cache back if it changed, through `atomic-write-file`
    /// (unnamed temp, fsync, rename, directory fsync), so a crash leaves
    /// the old cache or the new one.
    pub fn save(&self) -> Result<(), ContextError> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        if !*lock(&self.dirty) {
            return Ok(());
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i128);
        let bytes = encode(now, &lock(&self.loaded().entries));
        if let Some(parent) = file.parent() {
            fs::create_dir_all(parent).map_err(|e| ContextError::io(parent, e))?;
        }
        let mut out = atomic_write_file::AtomicWriteFile::open(file)
            .map_err(|e| ContextError::io(file, e))?;
        std::io::Write::write_all(&mut out, &bytes).map_err(|e| ContextError::io(file, e))?;
        out.commit().map_err(|e| ContextError::io(file, e))?;
        *lock(&self.dirty) = false;
        Ok(())
    }

    /// The content digests of `files` (each a path inside `root`, as
    /// [`Root::resolve`] gives it, and its metadata from the caller's
    /// walk, in any order), in parallel. The path also names the file in
    /// the cache; files are read through `root`, never outside it.
    pub fn hash_files(
        &self,
        root: &Root,
        files: &[(&Path, &fs::Metadata)],
    ) -> Result<(Vec<ContentDigest>, HashStats), ContextError> {
        let started = std::time::Instant::now();
        // Looked up under one lock first (most files of a rebuilt context
        // are unchanged); only the others are hashed, in parallel.
        let known: Vec<Option<ContentDigest>> = {
            let entries = lock(&self.loaded().entries);
            files
                .iter()
                .map(|(key, meta)| self.known(&entries, key, meta))
                .collect()
        };
        let results: Vec<Result<(ContentDigest, bool, u64), ContextError>> = files
            .par_iter()
            .zip(known)
            .map(|((key, meta), known)| match known {
                Some(digest) => Ok((digest, true, 0)),
                None => self.hash_one(root, key, meta),
            })
            .collect();
        let mut stats = HashStats {
            files: files.len(),
            ..HashStats::default()
        };
        let mut digests = Vec::with_capacity(files.len());
        for result in results {
            let (digest, cached, read) = result?;
            stats.unchanged += usize::from(cached);
            stats.bytes_read += read;
            digests.push(digest);
        }
        stats.elapsed = started.elapsed();
        Ok((digests, stats))
    }

    /// The digest the cache holds for `key`, if its stamp is `meta`'s and
    /// not too close to the cache's writing to be trusted.
    fn known(&self, entries: &Entries, key: &Path, meta: &fs::Metadata) -> Option<ContentDigest> {
        let stamp = Stamp::of(meta);
        let racy = stamp.mtime_ns.saturating_add(RACY_MARGIN_NS) >= self.loaded().written_ns;
        match entries.get(key.as_os_str()) {
            Some((known, digest)) if !racy && *known == stamp => Some(*digest),
            _ => None,
        }
    }

    /// Hashes `key` and remembers it: (digest, from the cache, bytes read).
    fn hash_one(
        &self,
        root: &Root,
        key: &Path,
        meta: &fs::Metadata,
    ) -> Result<(ContentDigest, bool, u64), ContextError> {
        let stamp = Stamp::of(meta);
        let path = root.host_path(key);
        let file = root
            .open_file(key)
            .map_err(|e| ContextError::io(&path, e))?;
        let digest = hash_reader(file).map_err(|e| ContextError::io(&path, e))?;
        lock(&self.loaded().entries).insert(key.as_os_str().to_owned(), (stamp, digest));
        *lock(&self.dirty) = true;
        Ok((digest, false, stamp.size))
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave a half-written entry
    // (inserts are single calls), so the data is still good.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The sha256 of a file's bytes.
pub fn hash_file(path: &Path) -> Result<ContentDigest, ContextError> {
    let file = File::open(path).map_err(|e| ContextError::io(path, e))?;
    hash_reader(file).map_err(|e| ContextError::io(path, e))
}

/// The sha256 of everything `reader` gives.
fn hash_reader(mut reader: impl Read) -> io::Result<ContentDigest> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 17];
    loop {
        match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buffer[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(hasher.finalize().into())
}

/// Layout: magic, written time (i128 LE), entry count (u64 LE), then per
/// entry: path length (u32 LE), path bytes, size u64, mtime i128, ctime
/// i128, inode u64, device u64, digest.
fn encode(written_ns: i128, entries: &Entries) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + entries.len() * 120);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&written_ns.to_le_bytes());
    out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    for (path, (stamp, digest)) in entries {
        let path = path.as_os_str().as_bytes();
        out.extend_from_slice(&(path.len() as u32).to_le_bytes());
        out.extend_from_slice(path);
        out.extend_from_slice(&stamp.size.to_le_bytes());
        out.extend_from_slice(&stamp.mtime_ns.to_le_bytes());
        out.extend_from_slice(&stamp.ctime_ns.to_le_bytes());
        out.extend_from_slice(&stamp.inode.to_le_bytes());
        out.extend_from_slice(&stamp.device.to_le_bytes());
        out.extend_from_slice(digest);
    }
    out
}

/// Keyed by the path's bytes: hashing a `Path` walks its components,
/// which costs more than the lookup of a rebuilt context's every file.
type Entries = HashMap<OsString, (Stamp, ContentDigest)>;

/// `None` for anything that is not a whole, well-formed cache file.
fn decode(bytes: &[u8]) -> Option<(i128, Entries)> {
    let mut input = Reader(bytes);
    if input.take(8)? != MAGIC {
        return None;
    }
    let written_ns = i128::from_le_bytes(input.array()?);
    let count = u64::from_le_bytes(input.array()?);
    let mut entries = HashMap::with_capacity(count.min(1 << 20) as usize);
    for _ in 0..count {
        let len = u32::from_le_bytes(input.array()?) as usize;
        let path = OsString::from(std::ffi::OsStr::from_bytes(input.take(len)?));
        let stamp = Stamp {
            size: u64::from_le_bytes(input.array()?),
            mtime_ns: i128::from_le_bytes(input.array()?),
            ctime_ns: i128::from_le_bytes(input.array()?),
            inode: u64::from_le_bytes(input.array()?),
            device: u64::from_le_bytes(input.array()?),
        };
        let digest: ContentDigest = input.array()?;
        entries.insert(path, (stamp, digest));
    }
    input.0.is_empty().then_some((written_ns, entries))
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk(root: &Path) -> Vec<(PathBuf, fs::Metadata)> {
        let mut out = Vec::new();
        for entry in fs::read_dir(root).unwrap() {
            let entry = entry.unwrap();
            out.push((PathBuf::from(entry.file_name()), entry.metadata().unwrap()));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    fn refs(files: &[(PathBuf, fs::Metadata)]) -> Vec<(&Path, &fs::Metadata)> {
        files.iter().map(|(p, m)| (p.as_path(), m)).collect()
    }

    /// Makes every file look older than the cache, so the racy-clean rule
    /// does not force a re-hash in a test that runs within one second.
    fn age(path: &Path) {
        let old = UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
        let file = File::options().write(true).open(path).unwrap();
        file.set_modified(old).unwrap();
    }

    #[test]
    fn unchanged_files_come_from_the_cache_and_edits_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let context = dir.path().join("ctx");
        fs::create_dir(&context).unwrap();
        fs::write(context.join("a"), "alpha").unwrap();
        fs::write(context.join("b"), "beta").unwrap();
        age(&context.join("a"));
        age(&context.join("b"));
        let cache_file = dir.path().join("cache");
        let root = Root::open(&context).unwrap();

        let first = StatCache::load(&cache_file);
        let (digests, stats) = first.hash_files(&root, &refs(&walk(&context))).unwrap();
        assert_eq!(digests[0], <[u8; 32]>::from(Sha256::digest(b"alpha")));
        assert_eq!((stats.files, stats.unchanged, stats.bytes_read), (2, 0, 9));
        assert!(stats.elapsed > std::time::Duration::ZERO);
        first.save().unwrap();

        let second = StatCache::load(&cache_file);
        let (again, stats) = second.hash_files(&root, &refs(&walk(&context))).unwrap();
        assert_eq!(again, digests);
        assert_eq!((stats.unchanged, stats.bytes_read), (2, 0));

        // An edit that keeps the size and the mtime: ctime still moves.
        fs::write(context.join("a"), "ALPHA").unwrap();
        age(&context.join("a"));
        let (edited, stats) = second.hash_files(&root, &refs(&walk(&context))).unwrap();
        assert_ne!(edited[0], digests[0]);
        assert_eq!(edited[1], digests[1]);
        assert_eq!(stats.unchanged, 1);
    }

    #[test]
    fn damaged_cache_files_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cache");
        let mut entries = HashMap::new();
        entries.insert(
            OsString::from("x"),
            (
                Stamp {
                    size: 1,
                    mtime_ns: 2,
                    ctime_ns: 3,
                    inode: 4,
                    device: 5,
                },
                [7u8; 32],
            ),
        );
        let bytes = encode(9, &entries);
        assert_eq!(decode(&bytes), Some((9, entries)));
        for cut in [0, 8, 30, bytes.len() - 1] {
            assert_eq!(decode(&bytes[..cut]), None);
        }
        fs::write(&file, &bytes[..40]).unwrap();
        assert!(lock(&StatCache::load(&file).loaded().entries).is_empty());
    }
}
