//! The store: an OCI image layout (`oci-layout`, `index.json`,
//! `blobs/sha256/`) that skopeo and umoci read as is, plus kiln's own
//! bookkeeping under `kiln/`. Tags are the layout's
//! `org.opencontainers.image.ref.name` annotations, written as the user
//! spelled the name and compared in normalised form. A manifest in the
//! index without that annotation is an untagged image (a build without
//! `-t`, Docker's `<none>`): kept, like a tag, until it is removed or
//! pruned.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use oci_spec::image::{Descriptor, ImageIndex, ImageIndexBuilder, MediaType};
use serde::Deserialize;

use crate::atomic::write_atomic;
use crate::blobs::Blobs;
use crate::digest::Digest;
use crate::error::{IoContext, StoreError};
use crate::layout::Layout;
use crate::lock::{LockMode, StoreLock};
use crate::owner::{Owner, Sweep};
use crate::reference::Reference;

/// The annotation OCI layouts use for tags.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

const OCI_LAYOUT: &str = r#"{"imageLayoutVersion":"1.0.0"}"#;

/// An open store.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    blobs: Blobs,
    owner: Arc<Owner>,
}

/// One tag: the name as written and the manifest it points at.
#[derive(Clone, Debug, PartialEq)]
pub struct Tag {
    pub name: String,
    pub manifest: Descriptor,
}

/// What garbage collection did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    pub removed: Vec<Digest>,
    pub freed_bytes: u64,
    /// Temp files of dead writers that were cleaned up.
    pub strays: usize,
    /// Snapshots of deleted layers, and half-made ones of dead writers.
    pub snapshots: usize,
    /// Scratch directories of dead builds (`kiln/tmp`).
    pub scratch_dirs: usize,
}

/// What a set of roots reaches.
#[derive(Debug, Default)]
pub struct Reach {
    pub present: BTreeSet<Digest>,
    /// Referenced but absent: a damaged store.
    pub missing: BTreeSet<Digest>,
}

/// A problem `check` found.
#[derive(Debug)]
pub struct Problem {
    pub what: String,
    pub error: StoreError,
}

impl Store {
    /// Where a store lives when none is named: see [`Layout::default_root`].
    pub fn default_root() -> PathBuf {
        Layout::default_root()
    }

    /// Opens the store at `root`, creating an empty layout if there is none.
    /// Takes no lock once the layout exists: opening never waits.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        let owner = Arc::new(Owner::new(root));
        let store = Store {
            root: root.to_owned(),
            blobs: Blobs::new(root, owner.clone()),
            owner,
        };
        let layout = store.layout().oci_layout();
        if !layout.exists() || !store.index_path().exists() {
            fs::create_dir_all(store.kiln_dir()).at(&store.kiln_dir())?;
            let _lock = store.index_lock()?;
            store.blobs.create_dirs()?;
            if !layout.exists() {
                store.write_atomic(&layout, OCI_LAYOUT.as_bytes())?;
            }
            if !store.index_path().exists() {
                store.write_index(&empty_index()?)?;
            }
        }
        store.keep_kiln_dir_private()?;
        // Reading it now turns a damaged index into an error at open.
        store.read_index()?;
        Ok(store)
    }

    /// `kiln/` holds unpacked layers (snapshots, containers' rw layers,
    /// scratch trees): real files of untrusted images, setuid-root binaries
    /// among them. Only the store's owner may reach them (0700, as Docker's
    /// data root is 0710), or any local user could run such a binary as
    /// root. Made so at every open, which also mends stores made before.
    fn keep_kiln_dir_private(&self) -> Result<(), StoreError> {
        use std::os::unix::fs::DirBuilderExt;
        use std::os::unix::fs::PermissionsExt;
        let dir = self.kiln_dir();
        // An OCI layout made by another tool has no kiln/ yet.
        if let Err(e) = fs::DirBuilder::new().mode(0o700).create(&dir) {
            if e.kind() != std::io::ErrorKind::AlreadyExists {
                return Ok(()); // a layout we may only read: nothing of ours in it
            }
        }
        let meta = fs::metadata(&dir).map_err(|e| StoreError::io(dir.display().to_string(), e))?;
        if meta.permissions().mode() & 0o077 == 0 {
            return Ok(());
        }
        match fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)) {
            // Someone else's store, opened to read: not ours to change.
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Ok(()),
            other => other.map_err(|e| StoreError::io(dir.display().to_string(), e)),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blobs(&self) -> &Blobs {
        &self.blobs
    }

    /// Where each of the store's files and directories lives.
    pub fn layout(&self) -> Layout {
        Layout::new(&self.root)
    }

    fn kiln_dir(&self) -> PathBuf {
        self.layout().kiln()
    }

    fn index_path(&self) -> PathBuf {
        self.layout().index()
    }

    /// Takes the GC lock (see [`crate::lock`]): exclusive to delete what
    /// no root reaches; shared, briefly, to make something visible that GC
    /// must not delete. Builds and readers do not hold it.
    pub fn lock(&self, mode: LockMode) -> Result<StoreLock, StoreError> {
        StoreLock::acquire(&self.layout().gc_lock(), mode)
    }

    /// Serialises read-modify-writes of `index.json`.
    fn index_lock(&self) -> Result<StoreLock, StoreError> {
        StoreLock::acquire(&self.layout().index_lock(), LockMode::Exclusive)
    }

    /// Writes `target` atomically through a temp file of this process.
    pub(crate) fn write_atomic(&self, target: &Path, bytes: &[u8]) -> Result<(), StoreError> {
        write_atomic(target, bytes)
    }

    /// A temp name of this process, for a file or directory in the store.
    pub(crate) fn temp_name(&self, what: &str) -> Result<String, StoreError> {
        self.owner.temp_name(what)
    }

    /// A new scratch directory `kiln/tmp/<owner>-<what>-<n>` for this
    /// process. The caller removes it; if the process dies first, the next
    /// kiln that writes to the store does.
    pub fn scratch_dir(&self, what: &str) -> Result<PathBuf, StoreError> {
        self.owner.scratch_dir(what)
    }

    /// Keeps `digest` (and what it reaches) from GC for as long as this
    /// `Store` value lives (for the CLI: the process); an error if it is
    /// not stored (GC may just have taken it). Builds lease their base images and cache hits, and every blob
    /// they write is leased, so nothing they use goes before it is tagged.
    pub fn lease(&self, digest: &Digest) -> Result<(), StoreError> {
        self.blobs.lease(digest)
    }

    /// Removes what dead kiln processes left (temp files, half-made
    /// snapshots, scratch directories of killed builds), never anything of
    /// a live one. Every kiln that writes does this when it first writes.
    pub fn clean_leftovers(&self) -> Result<Sweep, StoreError> {
        self.owner.clean_leftovers()
    }

    fn read_index(&self) -> Result<ImageIndex, StoreError> {
        let path = self.index_path();
        let bytes = fs::read(&path).at(&path)?;
        serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
            path,
            message: format!("not an OCI image index: {e}"),
        })
    }

    fn write_index(&self, index: &ImageIndex) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec_pretty(index).map_err(|source| StoreError::Json {
            what: "index.json".into(),
            source,
        })?;
        self.write_atomic(&self.index_path(), &bytes)
    }

    /// The untagged images (index entries without a name), in index order.
    pub fn untagged(&self) -> Result<Vec<Descriptor>, StoreError> {
        let index = self.read_index()?;
        Ok(index
            .manifests()
            .iter()
            .filter(|d| name_of(d).is_none())
            .cloned()
            .collect())
    }

    /// Keeps `manifest` as an untagged image, unless a name or another
    /// untagged entry already keeps it. As with [`Store::tag`], what it
    /// reaches must be stored, and kept layers not yet synced are synced.
    pub fn keep_untagged(&self, manifest: &Descriptor) -> Result<(), StoreError> {
        let digest = Digest::of_descriptor(manifest)?;
        self.lease(&digest)?;
        self.sync_kept_layers(&self.reachable(&[digest])?.present)?;
        let _lock = self.index_lock()?;
        let mut index = self.read_index()?;
        if index
            .manifests()
            .iter()
            .any(|d| d.digest() == manifest.digest())
        {
            return Ok(());
        }
        let mut untagged = manifest.clone();
        untagged.set_annotations(None);
        let mut manifests = index.manifests().clone();
        manifests.push(untagged);
        index.set_manifests(manifests);
        self.write_index(&index)
    }

    /// Forgets the untagged image `manifest` (its data goes at the next
    /// GC unless something else reaches it); false if it was not one.
    pub fn remove_untagged(&self, manifest: &Digest) -> Result<bool, StoreError> {
        let _lock = self.index_lock()?;
        let mut index = self.read_index()?;
        let before = index.manifests().len();
        let kept: Vec<Descriptor> = index
            .manifests()
            .iter()
            .filter(|d| name_of(d).is_some() || d.digest().to_string() != manifest.to_string())
            .cloned()
            .collect();
        if kept.len() == before {
            return Ok(false);
        }
        index.set_manifests(kept);
        self.write_index(&index)?;
        Ok(true)
    }

    /// Every tag, in index order.
    pub fn tags(&self) -> Result<Vec<Tag>, StoreError> {
        let index = self.read_index()?;
        Ok(index
            .manifests()
            .iter()
            .filter_map(|d| {
                Some(Tag {
                    name: name_of(d)?.clone(),
                    manifest: d.clone(),
                })
            })
            .collect())
    }

    /// Points `name` at `manifest` (replacing what it pointed at). The
    /// manifest and everything it references must already be stored (a
    /// layer kept only as its snapshot counts: nothing is written out, but
    /// such a layer not yet synced is synced first).
    pub fn tag(&self, name: &str, manifest: &Descriptor) -> Result<(), StoreError> {
        let reference = Reference::parse(name)?;
        let wanted = reference.normalized();
        let digest = Digest::of_descriptor(manifest)?;
        // A digest in the name says which image it is: it must be this one.
        if let Some(named) = reference.digest.filter(|named| *named != digest) {
            return Err(StoreError::InvalidName {
                name: name.to_owned(),
                reason: format!("it names image {named}, not this one ({digest})"),
            });
        }
        // Leased, so GC cannot take it between this check and the tag.
        self.lease(&digest)?;
        // A tag is what must outlive a crash: the layers it reaches that are
        // kept only as unsynced snapshots go to disk before it is written.
        self.sync_kept_layers(&self.reachable(&[digest])?.present)?;
        let _lock = self.index_lock()?;
        let index = self.read_index()?;
        // A rebuild that changed nothing leaves index.json untouched.
        let unchanged = index.manifests().iter().any(|d| {
            same_name(d, &wanted)
                && d.digest() == manifest.digest()
                && name_of(d) == Some(&name.to_owned())
        });
        if unchanged {
            return Ok(());
        }
        // An untagged entry of this image is one no more: it has a name.
        let mut manifests: Vec<Descriptor> = index
            .manifests()
            .iter()
            .filter(|d| !same_name(d, &wanted))
            .filter(|d| name_of(d).is_some() || d.digest() != manifest.digest())
            .cloned()
            .collect();
        let mut tagged = manifest.clone();
        let mut annotations = tagged.annotations().clone().unwrap_or_default();
        annotations.insert(REF_NAME.to_owned(), name.to_owned());
        tagged.set_annotations(Some(annotations));
        manifests.push(tagged);
        let mut index = index;
        index.set_manifests(manifests);
        self.write_index(&index)
    }

    /// Copies the image `name` names in `from` into this store, under the
    /// same name: every blob it reaches (a layer kept there only as its
    /// snapshot is given back), each checked against its digest as it is
    /// written. Returns its manifest.
    pub fn copy_image_from(&self, from: &Store, name: &str) -> Result<Descriptor, StoreError> {
        let manifest = from.resolve(name)?;
        let digest = Digest::of_descriptor(&manifest)?;
        let reach = from.reachable(&[digest])?;
        if let Some(missing) = reach.missing.iter().next() {
            return Err(StoreError::MissingBlob(*missing));
        }
        // Each blob is leased as it is written (or found), so GC keeps it.
        for blob in &reach.present {
            if !self.blobs.contains(blob) {
                self.blobs.put_reader(from.blobs.open(blob)?, Some(blob))?;
            }
        }
        self.tag(name, &manifest)?;
        Ok(manifest)
    }

    /// Removes a tag; returns the manifest it pointed at.
    pub fn untag(&self, name: &str) -> Result<Descriptor, StoreError> {
        let wanted = Reference::parse(name)?.normalized();
        let _lock = self.index_lock()?;
        let mut index = self.read_index()?;
        let (removed, kept): (Vec<Descriptor>, Vec<Descriptor>) = index
            .manifests()
            .iter()
            .cloned()
            .partition(|d| same_name(d, &wanted));
        let Some(first) = removed.into_iter().next() else {
            return Err(StoreError::UnknownImage(name.to_owned()));
        };
        index.set_manifests(kept);
        self.write_index(&index)?;
        Ok(first)
    }

    /// The manifest a name, a digest (`sha256:...`) or a unique digest
    /// prefix of at least 12 hex digits (an image id as `kiln images`
    /// shows it) refers to.
    pub fn resolve(&self, name: &str) -> Result<Descriptor, StoreError> {
        let tags = self.tags()?;
        let untagged = self.untagged()?;
        if let Ok(reference) = Reference::parse(name) {
            let wanted = reference.normalized();
            if let Some(tag) = tags
                .iter()
                .find(|t| normalized(&t.name).as_deref() == Some(&wanted))
            {
                return Ok(tag.manifest.clone());
            }
        }
        let hex = name.strip_prefix("sha256:").unwrap_or(name);
        if hex.len() >= 12 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let images = tags.iter().map(|t| &t.manifest).chain(&untagged);
            let matches: BTreeSet<String> = images
                .clone()
                .map(|d| d.digest().to_string())
                .filter(|d| d.trim_start_matches("sha256:").starts_with(hex))
                .collect();
            if matches.len() == 1 {
                let digest = matches.into_iter().next().unwrap_or_default();
                if let Some(found) = images
                    .into_iter()
                    .find(|d| d.digest().to_string() == digest)
                {
                    let mut manifest = found.clone();
                    manifest.set_annotations(None);
                    return Ok(manifest);
                }
            }
        }
        // A whole digest of an image no name points at (a build without
        // -t prints one): the manifest itself, while it is in the store.
        if let Ok(digest) = format!("sha256:{hex}").parse::<Digest>() {
            if let Some(found) = self.untagged_manifest(&digest) {
                return Ok(found);
            }
        }
        Err(StoreError::UnknownImage(name.to_owned()))
    }

    fn untagged_manifest(&self, digest: &Digest) -> Option<Descriptor> {
        let size = fs::metadata(self.blobs.path(digest)).ok()?.len();
        if size > MAX_DOCUMENT_SIZE {
            return None;
        }
        let doc: serde_json::Value = serde_json::from_slice(&self.blobs.read(digest).ok()?).ok()?;
        let is_manifest = doc.get("config").is_some() && doc.get("layers").is_some();
        if !is_manifest {
            return None;
        }
        crate::image::descriptor(MediaType::ImageManifest, digest, size).ok()
    }

    /// Every blob reachable from `roots` (manifests, indexes, or blobs
    /// named directly): the
    /// manifests themselves, their configs and layers, and the ones that
    /// should be there but are not.
    pub fn reachable(&self, roots: &[Digest]) -> Result<Reach, StoreError> {
        let mut reach = Reach::default();
        let mut todo: Vec<Digest> = roots.to_vec();
        while let Some(digest) = todo.pop() {
            if !reach.present.insert(digest) {
                continue;
            }
            // Manifests and indexes are small; anything big is a layer (a
            // cache entry can name one directly) and references nothing.
            let size = self.blobs.size(&digest).unwrap_or(0);
            if size > MAX_DOCUMENT_SIZE {
                continue;
            }
            let bytes = match self.blobs.read(&digest) {
                Ok(bytes) => bytes,
                Err(StoreError::MissingBlob(_)) => {
                    reach.present.remove(&digest);
                    reach.missing.insert(digest);
                    continue;
                }
                Err(e) => return Err(e),
            };
            // Only JSON documents reference other blobs; layers do not parse.
            let Ok(doc) = serde_json::from_slice::<References>(&bytes) else {
                continue;
            };
            for reference in doc
                .config
                .into_iter()
                .chain(doc.layers)
                .chain(doc.manifests)
            {
                let child: Digest = reference.digest.parse()?;
                if reference.media_type.ends_with("json") {
                    todo.push(child);
                } else if self.blobs.contains(&child) {
                    reach.present.insert(child);
                } else {
                    reach.missing.insert(child);
                }
            }
        }
        Ok(reach)
    }

    /// What GC must keep: the leases of live processes, `extra_roots` and
    /// every tag. Leases are read first: a process records a cache entry
    /// or a tag, then ends (dropping its leases), so of the lease and the
    /// record read later, one shows what it made.
    fn roots(&self, extra_roots: &dyn Fn() -> Vec<Digest>) -> Result<Vec<Digest>, StoreError> {
        let mut roots = self.owner.live_leases();
        roots.extend(extra_roots());
        // Every image of the index, tagged or not.
        for manifest in self.read_index()?.manifests() {
            roots.push(Digest::of_descriptor(manifest)?);
        }
        Ok(roots)
    }

    /// Blobs that nothing reaches now.
    fn unreachable(
        &self,
        extra_roots: &dyn Fn() -> Vec<Digest>,
    ) -> Result<Vec<Digest>, StoreError> {
        let (mut digests, _) = self.blobs.list()?;
        digests.extend(self.kept_layers());
        let keep = self.reachable(&self.roots(extra_roots)?)?.present;
        Ok(digests.into_iter().filter(|d| !keep.contains(d)).collect())
    }

    /// Deletes every blob that no tag, no lease of a live process and none
    /// of `extra_roots` (cache entries, kept containers: read twice, so it
    /// is a function) reaches, the snapshots of deleted layers, and what
    /// dead processes left. What to delete is found without the exclusive
    /// lock; it is taken only to re-read the roots and delete, so builds
    /// never wait for more than that short moment.
    pub fn gc(&self, extra_roots: &dyn Fn() -> Vec<Digest>) -> Result<GcReport, StoreError> {
        let swept = self.clean_leftovers()?;
        let mut report = GcReport {
            strays: swept.temp_files,
            snapshots: swept.snapshots,
            scratch_dirs: swept.scratch_dirs,
            ..GcReport::default()
        };
        let candidates = self.unreachable(extra_roots)?;
        if candidates.is_empty() && self.orphan_snapshots().is_empty() {
            return Ok(report);
        }
        let doomed = {
            let _lock = self.lock(LockMode::Exclusive)?;
            let mut kept_gone = Vec::new();
            let keep = self.reachable(&self.roots(extra_roots)?)?.present;
            for digest in candidates {
                if keep.contains(&digest) {
                    continue;
                }
                let size = self.blobs.size(&digest).unwrap_or(0);
                match self.blobs.kept_as_snapshot(&digest) {
                    // Its snapshot is the layer: it goes with it.
                    Some(dir) => kept_gone.push(self.set_aside(&dir)?),
                    None => self.blobs.remove(&digest)?,
                }
                report.freed_bytes += size;
                report.removed.push(digest);
            }
            let mut doomed = self.set_aside_orphan_snapshots()?;
            doomed.append(&mut kept_gone);
            doomed
        };
        // Renamed to temp names under the lock; deleting them can be slow.
        for dir in doomed {
            if fs::remove_dir_all(&dir).is_ok() {
                report.snapshots += 1;
            }
        }
        Ok(report)
    }

    /// Verifies every blob against its name, that everything a tag
    /// reaches is present, and every snapshot against its layer (see
    /// [`Store::verify_snapshot`]). A damaged snapshot is discarded (it is
    /// derived data: the next use makes it again from the layer) and
    /// reported. Returns the problems found (empty: clean). Holds the GC
    /// lock shared, so GC does not delete what it is reading.
    pub fn check(&self) -> Result<Vec<Problem>, StoreError> {
        let _lock = self.lock(LockMode::Shared)?;
        let mut problems = Vec::new();
        let (digests, _) = self.blobs.list()?;
        for digest in &digests {
            if let Err(error) = self.blobs.verify(digest) {
                problems.push(Problem {
                    what: format!("blob {digest}"),
                    error,
                });
            }
        }
        for tag in self.tags()? {
            let root = Digest::of_descriptor(&tag.manifest)?;
            for missing in self.reachable(&[root])?.missing {
                problems.push(Problem {
                    what: format!("image {}", tag.name),
                    error: StoreError::MissingBlob(missing),
                });
            }
        }
        problems.extend(self.check_snapshots()?);
        Ok(problems)
    }
}

/// Larger blobs are not read as documents by [`Store::reachable`].
const MAX_DOCUMENT_SIZE: u64 = 4 << 20;

/// The parts of manifests and indexes that reference blobs, for both OCI
/// and Docker media types.
#[derive(Deserialize)]
struct References {
    #[serde(default)]
    config: Option<BlobRef>,
    #[serde(default)]
    layers: Vec<BlobRef>,
    #[serde(default)]
    manifests: Vec<BlobRef>,
}

#[derive(Deserialize)]
struct BlobRef {
    digest: String,
    #[serde(rename = "mediaType", default)]
    media_type: String,
}

fn empty_index() -> Result<ImageIndex, StoreError> {
    ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(Vec::<Descriptor>::new())
        .build()
        .map_err(|e| StoreError::Corrupt {
            path: "index.json".into(),
            message: e.to_string(),
        })
}

fn normalized(name: &str) -> Option<String> {
    Reference::parse(name).ok().map(|r| r.normalized())
}

/// The tag an index entry carries; none for an untagged image.
fn name_of(descriptor: &Descriptor) -> Option<&String> {
    descriptor.annotations().as_ref()?.get(REF_NAME)
}

fn same_name(descriptor: &Descriptor, normalized_name: &str) -> bool {
    name_of(descriptor)
        .and_then(|name| normalized(name))
        .is_some_and(|n| n == normalized_name)
}
