//! The cache index on disk, in the directory the store's layout gives it:
//! `steps/<key>.json` (a step's result), `records/<position>.json` (what the last miss at a
//! Dockerfile position read, for explanations), `selections/<key>.json`
//! (what a COPY or bind mount selected from a stage's or image's layers,
//! so a rebuild keys it without reading them) and `locks/<key>` (so two
//! processes wanting the same step compute it once). Files are replaced
//! atomically; a file's mtime is its entry's last use.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use kiln_store::Digest;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::explain::StepRecord;
use crate::key::CacheKey;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cache {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> CacheError + '_ {
    move |source| CacheError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What a step produced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The layer's digest (plain tar: blob digest and diffID), if the step
    /// made one.
    pub layer: Option<Digest>,
    pub layer_size: u64,
    /// When the step first ran: its history entry keeps this time, so a
    /// cached rebuild gives the same image.
    pub created: String,
}

/// The outcome of selecting sources from a stack of layers, remembered by
/// a key over the layers' digests and what decides the selection: equal
/// layers hold equal files, so the selection is the same every time and
/// need not be read again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selected {
    /// The selection's content digest (what the step's key hashes).
    #[serde(with = "hex_digest")]
    pub content: [u8; 32],
    /// Each selected file's short digest, for explaining a miss.
    pub files: std::collections::BTreeMap<String, String>,
}

/// A digest as the 64 hex digits cache keys are written in.
mod hex_digest {
    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};

    use crate::key::CacheKey;

    pub fn serialize<S: Serializer>(bytes: &[u8; 32], out: S) -> Result<S::Ok, S::Error> {
        out.serialize_str(&CacheKey(*bytes).hex())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(input: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(input)?;
        CacheKey::from_hex(&text)
            .map(|key| key.0)
            .ok_or_else(|| D::Error::custom("not a sha256 in hex"))
    }
}

pub struct CacheIndex {
    dir: PathBuf,
}

/// Held while a step with this key is computed.
pub struct KeyLock(#[allow(dead_code)] File);

impl CacheIndex {
    /// The index kept in `dir` (the store's `Layout::cache`).
    pub fn open(dir: &Path) -> CacheIndex {
        CacheIndex {
            dir: dir.to_owned(),
        }
    }

    fn step_path(&self, key: &CacheKey) -> PathBuf {
        self.dir.join("steps").join(format!("{}.json", key.hex()))
    }

    fn selection_path(&self, key: &CacheKey) -> PathBuf {
        self.dir
            .join("selections")
            .join(format!("{}.json", key.hex()))
    }

    fn record_path(&self, position: &CacheKey) -> PathBuf {
        self.dir
            .join("records")
            .join(format!("{}.json", position.hex()))
    }

    /// The entry for `key`, marked as used now.
    pub fn step(&self, key: &CacheKey) -> Option<Entry> {
        read_touching(&self.step_path(key))
    }

    pub fn put_step(&self, key: &CacheKey, entry: &Entry) -> Result<(), CacheError> {
        write_json(&self.step_path(key), entry)
    }

    /// What a selection remembered under `key` gave.
    pub fn selection(&self, key: &CacheKey) -> Option<Selected> {
        read_touching(&self.selection_path(key))
    }

    pub fn put_selection(&self, key: &CacheKey, selected: &Selected) -> Result<(), CacheError> {
        write_json(&self.selection_path(key), selected)
    }

    /// What the last miss at `position` read.
    pub fn record(&self, position: &CacheKey) -> Option<StepRecord> {
        read_json(&self.record_path(position))
    }

    pub fn put_record(&self, position: &CacheKey, record: &StepRecord) -> Result<(), CacheError> {
        write_json(&self.record_path(position), record)
    }

    /// Waits until no other process computes `key`. The caller looks the
    /// key up again once it holds the lock.
    pub fn lock(&self, key: &CacheKey) -> Result<KeyLock, CacheError> {
        let dir = self.dir.join("locks");
        fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        let path = dir.join(key.hex());
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_error(&path))?;
        file.lock().map_err(io_error(&path))?;
        Ok(KeyLock(file))
    }

    /// Every entry with its last use, for GC roots and pruning.
    pub fn entries(&self) -> Vec<ListedEntry> {
        let Ok(dir) = fs::read_dir(self.dir.join("steps")) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for file in dir.flatten() {
            let path = file.path();
            let Some(key) = path
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(CacheKey::from_hex)
            else {
                continue;
            };
            let last_used = file
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            let entry = read_json::<Entry>(&path);
            out.push(ListedEntry {
                key,
                blob: entry.as_ref().and_then(|e| e.layer),
                size: entry.map_or(0, |e| e.layer_size),
                last_used,
            });
        }
        out
    }

    /// Forgets one entry (its blobs go at the next GC if nothing else
    /// holds them).
    pub fn remove(&self, entry: &ListedEntry) -> Result<(), CacheError> {
        let path = self.step_path(&entry.key);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_error(&path)(e)),
            _ => Ok(()),
        }
    }

    /// Forgets every entry, record and selection. File by file, not the directory
    /// whole: a build running beside the prune may be writing an entry, and
    /// removing the tree under it fails (`Directory not empty`) or loses
    /// its write. Lock files stay: one may be held, and a new file at the
    /// same path would let a second process compute the same key.
    pub fn clear(&self) -> Result<(), CacheError> {
        for sub in ["steps", "records", "selections"] {
            let dir = self.dir.join(sub);
            let listing = match fs::read_dir(&dir) {
                Ok(listing) => listing,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_error(&dir)(e)),
            };
            for file in listing {
                let path = file.map_err(io_error(&dir))?.path();
                // In-flight temps belong to their writers, who rename them.
                if path.extension().is_none_or(|ext| ext != "json") {
                    continue;
                }
                match fs::remove_file(&path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => {
                        return Err(io_error(&path)(e))
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

/// An entry as listed by [`CacheIndex::entries`].
#[derive(Clone, Debug)]
pub struct ListedEntry {
    pub key: CacheKey,
    /// The layer it keeps.
    pub blob: Option<Digest>,
    pub size: u64,
    pub last_used: SystemTime,
}

/// The distinct layers `entries` keep (steps may share one), each with
/// its bytes and its last use by any of them.
pub fn distinct_layers(entries: &[ListedEntry]) -> Vec<(Digest, u64, SystemTime)> {
    let mut layers: std::collections::BTreeMap<Digest, (u64, SystemTime)> = Default::default();
    for entry in entries {
        if let Some(blob) = entry.blob {
            let seen = layers.entry(blob).or_insert((entry.size, entry.last_used));
            seen.1 = seen.1.max(entry.last_used);
        }
    }
    layers
        .into_iter()
        .map(|(blob, (bytes, last))| (blob, bytes, last))
        .collect()
}

/// A damaged or half-written file is a miss, never an error: the cache
/// can always be rebuilt.
fn read_json<T: DeserializeOwned>(path: &Path) -> Option<T> {
    serde_json::from_slice(&fs::read(path).ok()?).ok()
}

fn read_touching<T: DeserializeOwned>(path: &Path) -> Option<T> {
    let value = read_json(path)?;
    // Last use is the file's mtime: a metadata write, no content rewritten.
    if let Ok(file) = File::options().write(true).open(path) {
        let _ = file.set_modified(SystemTime::now());
    }
    Some(value)
}

/// Replaced whole through `atomic-write-file` (unnamed temp, fsync, rename,
/// directory fsync), kiln's one way of writing metadata.
fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), CacheError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io_error(dir))?;
    let bytes = serde_json::to_vec(value).map_err(|e| io_error(path)(io::Error::other(e)))?;
    let mut file = atomic_write_file::AtomicWriteFile::open(path).map_err(io_error(path))?;
    io::Write::write_all(&mut file, &bytes).map_err(io_error(path))?;
    file.commit().map_err(io_error(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::KeyBuilder;

    #[test]
    fn entries_round_trip_and_damage_is_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        let index = CacheIndex::open(dir.path());
        let key = KeyBuilder::new("copy").text("a", "b").finish();
        assert_eq!(index.step(&key), None);
        let entry = Entry {
            layer: Some(Digest::of(b"layer")),
            layer_size: 3,
            created: "2026-01-01T00:00:00Z".into(),
        };
        index.put_step(&key, &entry).unwrap();
        assert_eq!(index.step(&key), Some(entry));
        let listed = index.entries();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].size, 3);
        fs::write(index.step_path(&key), b"{half").unwrap();
        assert_eq!(index.step(&key), None);
        index.remove(&listed[0]).unwrap();
        assert!(index.entries().is_empty());
    }

    #[test]
    fn clearing_beside_a_writer_never_fails_and_keeps_locks() {
        let dir = tempfile::tempdir().unwrap();
        let index = CacheIndex::open(dir.path());
        let held = KeyBuilder::new("run").text("held", "").finish();
        let _lock = index.lock(&held).unwrap();
        let entry = Entry {
            layer: None,
            layer_size: 0,
            created: "2026-01-01T00:00:00Z".into(),
        };
        std::thread::scope(|scope| {
            let writer = scope.spawn(|| {
                for n in 0..2000 {
                    let key = KeyBuilder::new("run").text("n", &n.to_string()).finish();
                    index.put_step(&key, &entry).unwrap();
                }
            });
            while !writer.is_finished() {
                index.clear().unwrap();
            }
        });
        index.clear().unwrap();
        assert!(index.entries().is_empty());
        assert!(index.dir.join("locks").join(held.hex()).exists());
    }

    #[test]
    fn selections_round_trip_damage_is_a_miss_and_clear_forgets_them() {
        let dir = tempfile::tempdir().unwrap();
        let index = CacheIndex::open(dir.path());
        let key = KeyBuilder::new("selection").text("a", "b").finish();
        assert_eq!(index.selection(&key), None);
        let selected = Selected {
            content: [0xab; 32],
            files: [("src/dist/app.js".to_owned(), "0011223344556677".to_owned())].into(),
        };
        index.put_selection(&key, &selected).unwrap();
        assert_eq!(index.selection(&key), Some(selected.clone()));
        fs::write(
            index.selection_path(&key),
            br#"{"content":"zz","files":{}}"#,
        )
        .unwrap();
        assert_eq!(index.selection(&key), None);
        index.put_selection(&key, &selected).unwrap();
        index.clear().unwrap();
        assert_eq!(index.selection(&key), None);
    }
}
