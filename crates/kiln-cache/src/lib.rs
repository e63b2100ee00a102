//! The layer cache: cache keys (a sha256 over a step's parent key, its
//! definition and the digests of what it reads), the index that maps a key
//! to the layer the step made, and the records that let a miss say why it
//! happened, and the export and import of entries through a directory.
//! It never runs a step; the executor asks it and tells it.

mod explain;
mod index;
mod key;
mod transfer;

pub use explain::{explain, Miss, StepRecord};
pub use index::{distinct_layers, CacheError, CacheIndex, Entry, ListedEntry, Selected};
pub use key::{CacheKey, KeyBuilder, KEY_FORMAT};
pub use transfer::{
    cache_document, export, export_cache_mounts, import_cache_mounts, ImportedCache,
    CACHE_CONFIG_MEDIA_TYPE,
};
