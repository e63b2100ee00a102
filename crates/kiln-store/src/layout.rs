//! Where everything lives under a store root: the one owner of the store's
//! directory names. Other crates ask [`crate::Store::layout`] for a path
//! and never spell one, so renaming a directory, or adding one that GC must
//! know about, is a change in this file alone.
//!
//! ```text
//! <root>/oci-layout, index.json, blobs/sha256/   the OCI image layout
//! <root>/kiln/                                   kiln's own state (0700)
//!     lock, index.lock, owners/                  locks and live owners
//!     tmp/, pending/                             scratch trees of builds
//!     snapshots/<hex>/{fs,complete}              unpacked layers
//!     cache/{steps,records,locks}/               the build cache index
//!     cache-mounts/<id>, <id>.lock               RUN --mount=type=cache
//!     statcache                                  context stat cache
//!     containers/<id>/                           `kiln run` containers
//! ```

use std::path::{Path, PathBuf};

/// The paths of one store. Cheap to make; holds no handle.
#[derive(Clone, Debug)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    pub fn new(root: &Path) -> Layout {
        Layout {
            root: root.to_owned(),
        }
    }

    /// `$KILN_ROOT`, else `/var/lib/kiln` for root, else
    /// `$XDG_DATA_HOME/kiln` (`~/.local/share/kiln`).
    pub fn default_root() -> PathBuf {
        if let Some(root) = std::env::var_os("KILN_ROOT").filter(|r| !r.is_empty()) {
            return PathBuf::from(root);
        }
        if effective_uid() == Some(0) {
            return PathBuf::from("/var/lib/kiln");
        }
        if let Some(data) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
            return PathBuf::from(data).join("kiln");
        }
        let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
        PathBuf::from(home).join(".local/share/kiln")
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The OCI layout marker file.
    pub fn oci_layout(&self) -> PathBuf {
        self.root.join("oci-layout")
    }

    /// The OCI index: tags and their manifests.
    pub fn index(&self) -> PathBuf {
        self.root.join("index.json")
    }

    /// Content-addressed blobs, by sha256 hex.
    pub fn blobs(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }

    /// kiln's own state, private to the store's owner.
    pub fn kiln(&self) -> PathBuf {
        self.root.join("kiln")
    }

    /// The GC lock (shared to publish, exclusive to sweep).
    pub fn gc_lock(&self) -> PathBuf {
        self.kiln().join("lock")
    }

    /// Serialises read-modify-writes of the index.
    pub fn index_lock(&self) -> PathBuf {
        self.kiln().join("index.lock")
    }

    /// One file per live kiln process, holding its leases.
    pub fn owners(&self) -> PathBuf {
        self.kiln().join("owners")
    }

    /// Builds' scratch directories (`<owner>-<what>-<n>`).
    pub fn tmp(&self) -> PathBuf {
        self.kiln().join("tmp")
    }

    /// Left by kilns before owners existed; swept whole.
    pub fn pending(&self) -> PathBuf {
        self.kiln().join("pending")
    }

    /// Unpacked layers, one directory per layer digest.
    pub fn snapshots(&self) -> PathBuf {
        self.kiln().join("snapshots")
    }

    /// Which repositories of which registries hold which blobs, as pulls
    /// and pushes saw them (kiln-registry owns what is inside).
    pub fn registry(&self) -> PathBuf {
        self.kiln().join("registry")
    }

    /// The build cache index (kiln-cache owns what is inside).
    pub fn cache(&self) -> PathBuf {
        self.kiln().join("cache")
    }

    /// `RUN --mount=type=cache` directories and their locks.
    pub fn cache_mounts(&self) -> PathBuf {
        self.kiln().join("cache-mounts")
    }

    /// The context stat cache (kiln-context owns its format).
    pub fn stat_cache(&self) -> PathBuf {
        self.kiln().join("statcache")
    }

    /// What each plain layer compressed to, by compression (the layer
    /// pushed again finds its compressed digest without compressing).
    pub fn compressed(&self) -> PathBuf {
        self.kiln().join("compressed")
    }

    /// `kiln run` containers (kiln-runtime owns what is inside).
    pub fn containers(&self) -> PathBuf {
        self.kiln().join("containers")
    }

    /// Named volumes, a directory each (kiln-engine owns what is inside).
    pub fn volumes(&self) -> PathBuf {
        self.kiln().join("volumes")
    }
}

/// The effective uid, from the owner of `/proc/self` (no libc call needed).
fn effective_uid() -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}
