//! What the store's parts take on disk (`docker system df`), counted once
//! for every front end: images (the distinct blobs their manifests reach,
//! each counted once however many images share it), containers (their rw
//! layers), volumes (their files), the build cache (its distinct
//! layers).

use std::collections::BTreeSet;

use kiln_runtime::containers::ContainerRecord;
use kiln_store::Digest;

use crate::{tree_size, Engine, EngineError, Volume};

/// The store's disk use, by part.
#[derive(Debug)]
pub struct DiskUsage {
    /// Every image id (untagged ones too), and how many of them a
    /// container uses.
    pub image_ids: Vec<Digest>,
    pub active_images: usize,
    /// The blobs the images reach, each once.
    pub image_bytes: u64,
    /// Each container with the bytes its rw layer holds.
    pub containers: Vec<(ContainerRecord, u64)>,
    /// Each volume with the bytes of its files and how many containers
    /// mount it.
    pub volumes: Vec<(Volume, u64, usize)>,
    /// The build cache's distinct layers: (blob, bytes, last use).
    pub cache_layers: Vec<(Digest, u64, std::time::SystemTime)>,
    pub cache_entries: usize,
}

impl DiskUsage {
    pub fn container_bytes(&self) -> u64 {
        self.containers.iter().map(|(_, bytes)| bytes).sum()
    }

    pub fn running_containers(&self) -> usize {
        self.containers
            .iter()
            .filter(|(c, _)| c.is_running())
            .count()
    }

    pub fn volume_bytes(&self) -> u64 {
        self.volumes.iter().map(|(_, bytes, _)| bytes).sum()
    }

    pub fn volumes_in_use(&self) -> usize {
        self.volumes
            .iter()
            .filter(|(_, _, users)| *users > 0)
            .count()
    }

    pub fn cache_bytes(&self) -> u64 {
        self.cache_layers.iter().map(|(_, bytes, _)| bytes).sum()
    }
}

impl Engine {
    /// Counts what the store's parts take (see the module's notes).
    pub fn disk_usage(&self) -> Result<DiskUsage, EngineError> {
        let store = self.store();
        let containers = self.containers().list();
        let used: BTreeSet<&str> = containers
            .iter()
            .map(|c| c.config.image_id.as_str())
            .collect();
        let mut image_ids: Vec<Digest> = self.images()?.iter().map(|i| i.id).collect();
        image_ids.sort();
        image_ids.dedup();
        let active_images = image_ids
            .iter()
            .filter(|id| used.contains(id.to_string().as_str()))
            .count();
        let image_bytes = store
            .reachable(&image_ids)?
            .present
            .iter()
            .filter_map(|d| store.blobs().size(d))
            .sum();
        let containers = containers
            .into_iter()
            .map(|c| {
                let bytes = tree_size(&self.containers().upper_dir(&c.id));
                (c, bytes)
            })
            .collect();
        let volumes = self
            .volumes()?
            .into_iter()
            .map(|v| {
                let bytes = tree_size(&v.mountpoint);
                let users = self.volume_users(&v.name).len();
                (v, bytes, users)
            })
            .collect();
        let cache = kiln_cache::CacheIndex::open(&store.layout().cache()).entries();
        Ok(DiskUsage {
            image_ids,
            active_images,
            image_bytes,
            containers,
            volumes,
            cache_layers: kiln_cache::distinct_layers(&cache),
            cache_entries: cache.len(),
        })
    }
}
