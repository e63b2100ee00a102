//! Layers as directories for overlayfs, both ways. A snapshot is one
//! layer's tar unpacked on its own under `kiln/snapshots/<hex>/fs`, with OCI
//! whiteouts turned into overlay whiteouts (a `0:0` character device for
//! `.wh.name`, the `trusted.overlay.opaque` xattr for `.wh..wh..opq`), so a
//! stack of snapshots is exactly the lower dirs of an overlay mount.
//! `kiln/snapshots/<hex>/complete` marks a snapshot whole: it is written in
//! the temp dir after the last entry, before the rename to `<hex>`, and
//! checked at every use; a snapshot without it (a crash, an older kiln) is
//! made again. The marker names the boot: a snapshot completed before this
//! boot may have lost what the kernel had not yet written, and is verified
//! once before use. A layer kept only as its snapshot is synced to disk
//! when an image is tagged with it (`unsynced` beside the tree until
//! then). The other way, [`layer_from_upper`] turns an overlay upper dir
//! (the change set of a container) into a layer with OCI whiteouts.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::blobs::Blobs;
use crate::digest::Digest;
use crate::error::StoreError;
use crate::layer::{contained_path, open_layer, Layer};
use crate::store::Store;

/// An OCI whiteout's name prefix: `.wh.name` deletes `name` below.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// An OCI opaque marker: the directory hides what lower layers hold in it.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// Overlay features that would put information in xattrs a layer cannot
/// carry; kiln mounts with them off, so meeting one means a foreign upper.
const UNSUPPORTED_XATTRS: [&str; 2] = ["trusted.overlay.redirect", "trusted.overlay.metacopy"];

impl Store {
    /// The directory holding `layer` unpacked, made on first use (and
    /// made again if it is not marked complete). Made in a temp dir of
    /// this process and renamed into place, so a killed kiln never leaves a
    /// half snapshot under the final name; two kilns racing both unpack and
    /// the loser throws its copy away. The layer is leased first, so GC
    /// keeps it (and the snapshot) while this process lives.
    ///
    /// A layer whose blob is a plain tar the snapshot can give back (an
    /// imported base, a COPY's tar) is then kept as the snapshot alone:
    /// the skeleton is recorded during the unpacking, the snapshot synced
    /// to disk, and the blob removed, so the store holds one copy of it.
    /// (A compressed blob, as pulls bring, stays beside its snapshot.)
    pub fn snapshot(&self, layer: &Digest) -> Result<PathBuf, StoreError> {
        let mut kept = false;
        let tree = self.make_snapshot(layer, "unpack", |tree| {
            if let Some(skeleton) = unpack_layer(self.blobs(), layer, tree)? {
                write_skeleton(tree, &skeleton)?;
                sync_filesystem(tree)?;
                kept = true;
            }
            Ok(())
        })?;
        if kept {
            self.drop_blob_kept_as_snapshot(layer, &tree);
        }
        Ok(tree)
    }

    /// Removes `layer`'s tar blob once its snapshot at `tree` (complete,
    /// with its skeleton) stands for it: checked file by file first (it
    /// was unpacked from the very bytes the skeleton was recorded from).
    /// Failing that, the blob simply stays. A reader that opened the blob
    /// keeps reading it; one that finds it gone is given the tar back.
    fn drop_blob_kept_as_snapshot(&self, layer: &Digest, tree: &Path) {
        let Some(dir) = kept_as_snapshot(&self.layout().snapshots(), layer) else {
            return;
        };
        if dir.join(TREE) != tree {
            return;
        }
        let whole = fs::read(dir.join(SKELETON))
            .ok()
            .is_some_and(|skeleton| crate::skeleton::check_files(&skeleton, tree).is_ok());
        if whole {
            let _ = fs::remove_file(self.blobs().path(layer));
        }
    }

    /// `layer`'s snapshot: the complete one if there is one (another kiln
    /// may be running on it), else one that `fill` puts at the empty tree
    /// it is given, in a temp dir of this process, marked complete and
    /// renamed into place; an incomplete one under the name goes first.
    fn make_snapshot(
        &self,
        layer: &Digest,
        what: &str,
        fill: impl FnOnce(&Path) -> Result<(), StoreError>,
    ) -> Result<PathBuf, StoreError> {
        let target = self.layout().snapshots().join(layer.hex());
        let usable = match completion(&target, layer) {
            Completion::ThisBoot => true,
            Completion::EarlierBoot => self.trusted_this_boot(&target, layer)?,
            Completion::None => false,
        };
        if usable {
            return Ok(target.join(TREE));
        }
        self.lease(layer)?;
        self.make_snapshot_unleased(layer, what, fill)
    }

    /// Whether the snapshot at `dir`, completed before this boot, may be
    /// used as it is. It may have lost data the kernel had not written
    /// when the machine went down (snapshots are not synced: a layer's tar
    /// is, and a kept layer's skeleton gives the digest to check): it is
    /// verified once against its layer and marked for this boot, or
    /// discarded (`false`: made again from its tar; a kept layer is gone
    /// with it, and its steps run again).
    fn trusted_this_boot(&self, dir: &Path, layer: &Digest) -> Result<bool, StoreError> {
        if self.verify_snapshot(layer).is_ok() {
            let marker = dir.join(COMPLETE);
            let temp = dir.join(self.temp_name("complete")?);
            fs::write(&temp, marker_text(layer))
                .and_then(|()| fs::rename(&temp, &marker))
                .map_err(|e| StoreError::io(&marker, e))?;
            // Read back whole after a reboot: it is on disk.
            remove_if_there(&dir.join(UNSYNCED))?;
            return Ok(true);
        }
        self.discard_snapshot(dir)?;
        Ok(false)
    }

    /// [`Store::make_snapshot`] without the lease (a kept layer is leased
    /// once its snapshot, which is its only copy, is in place).
    fn make_snapshot_unleased(
        &self,
        layer: &Digest,
        what: &str,
        fill: impl FnOnce(&Path) -> Result<(), StoreError>,
    ) -> Result<PathBuf, StoreError> {
        let target = self.layout().snapshots().join(layer.hex());
        if is_complete(&target, layer) {
            return Ok(target.join(TREE));
        }
        if target.exists() {
            self.discard_snapshot(&target)?;
        }
        let temp = self.snapshot_temp(what)?;
        if let Err(error) = fill(&temp.join(TREE)) {
            let _ = fs::remove_dir_all(&temp);
            return Err(error);
        }
        install(&temp, &target, layer)
    }

    /// How many snapshots (complete or not) there are.
    pub fn snapshot_count(&self) -> usize {
        fs::read_dir(self.layout().snapshots()).map_or(0, |entries| {
            entries
                .flatten()
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .count()
        })
    }

    /// Whether `layer`'s snapshot exists and is marked complete.
    pub fn has_snapshot(&self, layer: &Digest) -> bool {
        is_complete(&self.layout().snapshots().join(layer.hex()), layer)
    }

    /// A new temp dir of this process in `kiln/snapshots`, with an empty
    /// `fs` in it.
    fn snapshot_temp(&self, what: &str) -> Result<PathBuf, StoreError> {
        let dir = self.layout().snapshots();
        fs::create_dir_all(&dir).map_err(|e| StoreError::io(&dir, e))?;
        let temp = dir.join(self.temp_name(what)?);
        fs::create_dir_all(temp.join(TREE)).map_err(|e| StoreError::io(&temp, e))?;
        Ok(temp)
    }

    /// Removes a snapshot: renamed to a temp name of this process first, so
    /// that a kill half-way leaves a leftover GC removes, never a half
    /// snapshot under its layer's name.
    pub(crate) fn discard_snapshot(&self, dir: &Path) -> Result<(), StoreError> {
        let aside = match self.set_aside(dir) {
            Ok(aside) => aside,
            // Another kiln discarded it first.
            Err(StoreError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                return Ok(())
            }
            Err(e) => return Err(e),
        };
        fs::remove_dir_all(&aside).map_err(|e| StoreError::io(&aside, e))
    }

    /// Every snapshot dir named as a layer's (temp dirs left out), with
    /// that layer.
    pub(crate) fn snapshot_dirs(&self) -> Vec<(Digest, PathBuf)> {
        let Ok(entries) = fs::read_dir(self.layout().snapshots()) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|entry| {
                let layer = format!("sha256:{}", entry.file_name().to_string_lossy())
                    .parse::<Digest>()
                    .ok()?;
                Some((layer, entry.path()))
            })
            .collect()
    }

    /// The layers kept only as their snapshot (no tar blob).
    pub(crate) fn kept_layers(&self) -> Vec<Digest> {
        self.snapshot_dirs()
            .into_iter()
            .filter(|(layer, _)| self.blobs().kept_as_snapshot(layer).is_some())
            .map(|(layer, _)| layer)
            .collect()
    }

    /// Renames `dir` to a temp name of this process; returns it.
    pub(crate) fn set_aside(&self, dir: &Path) -> Result<PathBuf, StoreError> {
        let aside = self.layout().snapshots().join(self.temp_name("gone")?);
        fs::rename(dir, &aside).map_err(|e| StoreError::io(dir, e))?;
        Ok(aside)
    }

    /// A writer for a layer's tar that unpacks it as a snapshot while it is
    /// written (a COPY whose layer a RUN will need next: the unpacking
    /// overlaps the writing instead of following it). Made from the very
    /// bytes of the layer, so it is the snapshot [`Store::snapshot`] would
    /// make; [`SnapshotWriter::finish`] names it once the digest is known.
    pub fn snapshot_writer(&self) -> Result<SnapshotWriter, StoreError> {
        self.snapshot_writer_sharing(None)
    }

    /// [`Store::snapshot_writer`] that hard-links, instead of writing, each
    /// regular file equal to the file at the same path in `similar`'s
    /// snapshot (if it has one): same bytes, size, mode, owner and time,
    /// no xattrs. A rebuilt layer that changed in one file (a COPY of an
    /// edited context) then costs a link per unchanged file. Equal is
    /// checked byte for byte as the tar streams in, never assumed.
    pub fn snapshot_writer_sharing(
        &self,
        similar: Option<&Digest>,
    ) -> Result<SnapshotWriter, StoreError> {
        let parent = self.layout().snapshots();
        let temp = self.snapshot_temp("stream")?;
        let (reader, writer) = io::pipe().map_err(|e| StoreError::io(&temp, e))?;
        widen_pipe(&writer);
        let dir = temp.join(TREE);
        let donor = similar.and_then(|layer| {
            let dir = parent.join(layer.hex());
            is_complete(&dir, layer)
                .then(|| Donor::open(&dir.join(TREE)))
                .flatten()
        });
        let unpacker = std::thread::spawn(move || {
            let reader = io::BufReader::with_capacity(1 << 20, reader);
            unpack_stream(reader, &dir, "a layer being written", donor)
        });
        Ok(SnapshotWriter {
            pipe: Some(writer),
            unpacker: Some(unpacker),
            temp,
            target_dir: parent,
        })
    }

    /// The overlay lower dirs for a stack of layers given bottom first:
    /// their snapshots, top-most first. A layer that appears twice (two
    /// RUNs that changed nothing make the same empty layer) is kept only at
    /// its top-most place: overlayfs refuses a lower dir given twice, and
    /// the upper copy redoes everything the lower one did.
    pub fn lower_dirs(&self, layers: &[Digest]) -> Result<Vec<PathBuf>, StoreError> {
        Ok(self
            .lower_dirs_of(layers)?
            .into_iter()
            .map(|(_, dir)| dir)
            .collect())
    }

    /// [`Store::lower_dirs`], each with the layer it is the snapshot of.
    pub fn lower_dirs_of(&self, layers: &[Digest]) -> Result<Vec<(Digest, PathBuf)>, StoreError> {
        let mut seen = std::collections::HashSet::new();
        let mut dirs = Vec::with_capacity(layers.len());
        for layer in layers.iter().rev() {
            if seen.insert(*layer) {
                dirs.push((*layer, self.snapshot(layer)?));
            }
        }
        Ok(dirs)
    }

    /// Snapshots (under their layer's name) whose layer blob is gone.
    pub(crate) fn orphan_snapshots(&self) -> Vec<PathBuf> {
        self.snapshot_dirs()
            .into_iter()
            .filter(|(layer, _)| !self.blobs().contains(layer))
            .map(|(_, dir)| dir)
            .collect()
    }

    /// Renames the orphan snapshots to temp names (done under GC's lock;
    /// the caller deletes them after it); returns the new names.
    pub(crate) fn set_aside_orphan_snapshots(&self) -> Result<Vec<PathBuf>, StoreError> {
        self.orphan_snapshots()
            .iter()
            .map(|dir| self.set_aside(dir))
            .collect()
    }
}

/// The snapshot's tree inside its directory (the overlay lower dir).
const TREE: &str = "fs";
/// Beside the tree of a layer kept only as its snapshot: its skeleton
/// ([`crate::skeleton`]), which with the tree gives the layer's tar back.
pub(crate) const SKELETON: &str = "skeleton";
/// Beside the tree of a kept layer made in this boot: it is not yet known
/// to be on disk ([`Store::sync_kept_layers`] removes it).
const UNSYNCED: &str = "unsynced";

/// `tree`'s skeleton, written beside it.
fn write_skeleton(tree: &Path, skeleton: &[u8]) -> Result<(), StoreError> {
    let path = tree.parent().unwrap_or(tree).join(SKELETON);
    fs::write(&path, skeleton).map_err(|e| StoreError::io(&path, e))
}

/// The snapshot dir of `layer` if it is kept there without a tar blob:
/// complete, with its skeleton.
pub(crate) fn kept_as_snapshot(snapshots: &Path, layer: &Digest) -> Option<PathBuf> {
    let dir = snapshots.join(layer.hex());
    (dir.join(SKELETON).is_file() && is_complete(&dir, layer)).then_some(dir)
}

/// The size of the tar a kept snapshot gives back.
pub(crate) fn kept_size(dir: &Path) -> Option<u64> {
    crate::skeleton::tar_size(&fs::read(dir.join(SKELETON)).ok()?)
}

/// The tar of `layer`, kept at snapshot dir `dir`, written to `out`; an
/// error if what was written does not have the layer's digest (the caller
/// then throws it away).
pub(crate) fn give_back(
    dir: &Path,
    layer: &Digest,
    out: impl io::Write,
) -> Result<u64, StoreError> {
    let path = dir.join(SKELETON);
    let skeleton = fs::read(&path).map_err(|e| StoreError::io(&path, e))?;
    let mut hashing = crate::digest::HashingWriter::new(out);
    let written = crate::skeleton::give_back(&skeleton, &dir.join(TREE), &mut hashing)?;
    let (actual, _, _) = hashing.finish();
    if actual != *layer {
        return Err(StoreError::DigestMismatch {
            expected: *layer,
            actual,
        });
    }
    Ok(written)
}

/// Where a kept layer's tar goes as it is written: its digest and its
/// skeleton, nothing stored.
struct KeptTar {
    hasher: crate::digest::HashingWriter<io::Sink>,
    recorder: crate::skeleton::Recorder,
}

impl Default for KeptTar {
    fn default() -> Self {
        KeptTar {
            hasher: crate::digest::HashingWriter::new(io::sink()),
            recorder: crate::skeleton::Recorder::default(),
        }
    }
}

impl KeptTar {
    fn finish(self) -> (Digest, u64, crate::skeleton::Recorder) {
        let (digest, size, _) = self.hasher.finish();
        (digest, size, self.recorder)
    }
}

impl io::Write for KeptTar {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.hasher.write_all(bytes)?;
        self.recorder.write_all(bytes)?;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
/// The completion marker beside the tree.
const COMPLETE: &str = "complete";

fn marker_head(layer: &Digest) -> String {
    format!("kiln snapshot of {layer}\n")
}

/// The marker: the layer, and the boot it was completed in.
fn marker_text(layer: &Digest) -> String {
    format!("{}boot {}\n", marker_head(layer), boot_id())
}

/// This boot's id (the kernel's random boot id), empty if unknown.
fn boot_id() -> &'static str {
    static BOOT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BOOT.get_or_init(|| {
        fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|id| id.trim().to_owned())
            .unwrap_or_default()
    })
}

/// What the marker at `dir` says of `layer`'s snapshot.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Completion {
    /// Not marked complete (or marked for another layer).
    None,
    EarlierBoot,
    ThisBoot,
}

fn completion(dir: &Path, layer: &Digest) -> Completion {
    match fs::read_to_string(dir.join(COMPLETE)) {
        Ok(text) if text == marker_text(layer) => Completion::ThisBoot,
        Ok(text) if text.starts_with(&marker_head(layer)) => Completion::EarlierBoot,
        _ => Completion::None,
    }
}

fn is_complete(dir: &Path, layer: &Digest) -> bool {
    completion(dir, layer) != Completion::None
}

/// Marks the unpacked `temp` complete and renames it to `target`; if
/// another kiln got there first with a complete one, that one is used.
fn install(temp: &Path, target: &Path, layer: &Digest) -> Result<PathBuf, StoreError> {
    let marker = temp.join(COMPLETE);
    let result = fs::write(&marker, marker_text(layer))
        .map_err(|e| StoreError::io(&marker, e))
        .and_then(|()| match fs::rename(temp, target) {
            Ok(()) => Ok(()),
            Err(_) if is_complete(target, layer) => {
                let _ = fs::remove_dir_all(temp);
                Ok(())
            }
            Err(e) => Err(StoreError::io(target, e)),
        });
    if result.is_err() {
        let _ = fs::remove_dir_all(temp);
    }
    result.map(|()| target.join(TREE))
}

/// Unpacks one layer into the empty directory `dir`, owners, modes, times
/// and xattrs kept, whiteouts in overlay form. Nothing is ever written
/// through a symlink: the parents of files and whiteouts are walked
/// component by component and must be real directories inside `dir`
/// (links and special files go through the tar crate, which checks the
/// same).
/// Unpacks `layer` at `dir`; returns the skeleton of its tar if its blob
/// is that very tar (not compressed) and the snapshot can give it back.
fn unpack_layer(blobs: &Blobs, layer: &Digest, dir: &Path) -> Result<Option<Vec<u8>>, StoreError> {
    let mut recorded = KeptTar::default();
    let tee = TeeReader {
        inner: open_layer(blobs, layer)?,
        copy: &mut recorded,
    };
    unpack_stream(tee, dir, &format!("layer {layer}"), None)?;
    let (digest, _, recorder) = recorded.finish();
    if digest != *layer || !recorder.is_exact() {
        return Ok(None);
    }
    recorder.finish().map(Some)
}

/// A reader that also writes what it reads to `copy`.
struct TeeReader<'a, R> {
    inner: R,
    copy: &'a mut KeptTar,
}

impl<R: io::Read> io::Read for TeeReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        io::Write::write_all(self.copy, &buf[..n])?;
        Ok(n)
    }
}

/// Flushes the filesystem holding `path` to disk: a snapshot that is its
/// layer's only copy must survive a crash as a blob would (fsync of each
/// of thousands of files would cost far more than one syncfs).
fn sync_filesystem(path: &Path) -> Result<(), StoreError> {
    let dir = fs::File::open(path).map_err(|e| StoreError::io(path, e))?;
    nix::unistd::syncfs(&dir).map_err(|e| StoreError::io(path, e.into()))
}

/// [`unpack_layer`] on any plain tar stream; `what` names it in errors.
fn unpack_stream(
    reader: impl io::Read,
    dir: &Path,
    what: &str,
    mut donor: Option<Donor>,
) -> Result<(), StoreError> {
    let what = what.to_owned();
    let io_error = |e| StoreError::io(&what, e);
    let hostile = |raw: &Path, reason: &str| StoreError::HostileArchive {
        what: what.clone(),
        entry: raw.display().to_string(),
        reason: reason.into(),
    };
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_preserve_mtime(true);
    archive.set_unpack_xattrs(true);
    let mut dirs = SafeDirs::default();
    // Each directory entry's time, set once the last entry is in: a file,
    // whiteout or subdirectory made in it later would move it to now.
    let mut dir_times: Vec<(PathBuf, i64)> = Vec::new();
    for entry in archive.entries().map_err(io_error)? {
        let mut entry = entry.map_err(io_error)?;
        let raw = entry.path().map_err(io_error)?.into_owned();
        let Some(path) = contained_path(&raw) else {
            return Err(hostile(&raw, "the path leaves the root (..)"));
        };
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let parent_rel = path.parent().unwrap_or(Path::new("")).to_owned();
        match name.as_deref() {
            Some(OPAQUE_MARKER) => {
                let parent = dirs
                    .ensure(dir, &parent_rel)
                    .map_err(|_| hostile(&raw, "its directory is not a directory of the layer"))?;
                xattr::set(&parent, OPAQUE_XATTR, b"y").map_err(|e| StoreError::io(&parent, e))?;
            }
            Some(name) if name.starts_with(WHITEOUT_PREFIX) => {
                let parent = dirs
                    .ensure(dir, &parent_rel)
                    .map_err(|_| hostile(&raw, "its directory is not a directory of the layer"))?;
                make_whiteout(&parent.join(&name[WHITEOUT_PREFIX.len()..]))?;
            }
            _ if entry.header().entry_type() == tar::EntryType::Regular
                && !path.as_os_str().is_empty() =>
            {
                let parent = dirs
                    .ensure(dir, &parent_rel)
                    .map_err(|_| hostile(&raw, "its directory is not a directory of the layer"))?;
                let target = parent.join(path.file_name().unwrap_or_default());
                write_file(&mut entry, &target, &path, donor.as_mut())
                    .map_err(|e| StoreError::io(&target, e))?;
            }
            // tar-rs unpacks these as empty regular files; a snapshot must
            // hold what the layer says (the container's rootfs is nodev and
            // its device cgroup denies, so a device node opens nothing).
            _ if is_special(entry.header().entry_type()) && !path.as_os_str().is_empty() => {
                let parent = dirs
                    .ensure(dir, &parent_rel)
                    .map_err(|_| hostile(&raw, "its directory is not a directory of the layer"))?;
                let target = parent.join(path.file_name().unwrap_or_default());
                make_special(entry.header(), &target).map_err(|e| StoreError::io(&target, e))?;
                dirs.forget(&path);
            }
            _ => {
                let kind = entry.header().entry_type();
                let mtime = entry.header().mtime().map_err(io_error)?;
                entry.unpack_in(dir).map_err(io_error)?;
                if kind.is_dir() {
                    dirs.add(dir, &path);
                    dir_times.push((path, i64::try_from(mtime).unwrap_or(i64::MAX)));
                } else {
                    dirs.forget(&path);
                }
            }
        }
    }
    // Read to the end: a writer streaming into a pipe must not meet a
    // closed one over the padding after the last entry.
    io::copy(&mut archive.into_inner(), &mut io::sink()).map_err(io_error)?;
    for (path, mtime) in dir_times {
        // Only a directory still known real all the way down: a later
        // entry may have put a link where it was.
        if dirs.known.contains(&path) {
            set_time(&dir.join(&path), mtime).map_err(|e| StoreError::io(dir.join(&path), e))?;
        }
    }
    Ok(())
}

/// Sets `path`'s access and modification times to `mtime` (whole
/// seconds, as a tar header has it), on a link itself if it is one.
fn set_time(path: &Path, mtime: i64) -> io::Result<()> {
    use nix::sys::stat::{utimensat, UtimensatFlags};
    use nix::sys::time::TimeSpec;
    let time = TimeSpec::new(mtime, 0);
    utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &time,
        &time,
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(io::Error::from)
}

/// See [`Store::snapshot_writer`]. Dropped without `finish`, it throws the
/// half snapshot away.
pub struct SnapshotWriter {
    pipe: Option<io::PipeWriter>,
    unpacker: Option<std::thread::JoinHandle<Result<(), StoreError>>>,
    temp: PathBuf,
    target_dir: PathBuf,
}

impl io::Write for SnapshotWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        match self.pipe.as_mut() {
            Some(pipe) => pipe.write(bytes),
            None => Err(io::Error::from(io::ErrorKind::BrokenPipe)),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl SnapshotWriter {
    /// Waits for the unpacking and keeps the snapshot as `layer`'s (unless
    /// one exists already). On failure the snapshot is dropped; a later
    /// [`Store::snapshot`] makes it from the layer.
    pub fn finish(mut self, layer: &Digest) -> Result<(), StoreError> {
        self.unpacked()?;
        let target = self.target_dir.join(layer.hex());
        if is_complete(&target, layer) {
            return Ok(());
        }
        if target.exists() {
            // Incomplete: renamed away by whoever makes it next; leave it.
            return Ok(());
        }
        install(&self.temp, &target, layer).map(|_| ())
    }
}

impl SnapshotWriter {
    /// Waits for the unpacker thread.
    fn unpacked(&mut self) -> Result<(), StoreError> {
        self.pipe = None;
        self.unpacker.take().map_or(Ok(()), |t| {
            t.join()
                .unwrap_or_else(|_| Err(StoreError::Unsupported("snapshot thread panicked".into())))
        })
    }

    /// [`SnapshotWriter::finish`] for a layer whose tar is not stored:
    /// the snapshot, with the skeleton `recorder` took of the same bytes,
    /// becomes the layer's only copy, and must give back `layer`'s digest.
    /// Any failure fails the layer.
    fn finish_kept(
        mut self,
        store: &Store,
        layer: &Digest,
        recorder: crate::skeleton::Recorder,
    ) -> Result<(), StoreError> {
        self.unpacked()?;
        if !recorder.is_exact() {
            return Err(StoreError::Unsupported(format!(
                "layer {layer}: its tar cannot be given back from its snapshot"
            )));
        }
        let skeleton = recorder.finish()?;
        let temp = self.temp.clone();
        let tree = store.make_kept_snapshot(layer, "stream", skeleton, |tree| {
            // The unpacked tree moves into the new temp dir's place.
            fs::remove_dir(tree).map_err(|e| StoreError::io(tree, e))?;
            let from = temp.join(TREE);
            fs::rename(&from, tree).map_err(|e| StoreError::io(&from, e))
        })?;
        // Every file was written from (or compared with) the bytes the
        // skeleton was recorded from: what is left to check is that the
        // unpacker left none out.
        store.check_kept(&tree)
    }
}

/// How a new layer is kept: once, as one or the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keep {
    /// A tar blob.
    Tar,
    /// Only a snapshot, with the skeleton that gives the tar back: for
    /// layers the build reads again through a snapshot (a RUN's lower
    /// dir, a stage `COPY --from` reads).
    Snapshot,
}

/// A layer's tar being written: into a blob, or (`kept`) only into its
/// digest and a snapshot that keeps the layer instead of a blob.
pub struct LayerWriter(LayerSink);

enum LayerSink {
    // Boxed: a writer is made once per layer, and moved around.
    Blob(Box<crate::blobs::BlobWriter>),
    Kept(Box<(KeptTar, SnapshotWriter)>),
}

impl io::Write for LayerWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        match &mut self.0 {
            LayerSink::Blob(blob) => blob.write(bytes),
            LayerSink::Kept(kept) => {
                let (tar, snapshot) = &mut **kept;
                snapshot.write_all(bytes)?;
                tar.write_all(bytes)?;
                Ok(bytes.len())
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl LayerWriter {
    /// The layer's digest and size, once it is stored.
    pub fn commit(self, store: &Store) -> Result<(Digest, u64), StoreError> {
        match self.0 {
            LayerSink::Blob(blob) => blob.commit(),
            LayerSink::Kept(kept) => {
                let (tar, snapshot) = *kept;
                let (digest, size, recorder) = tar.finish();
                snapshot.finish_kept(store, &digest, recorder)?;
                Ok((digest, size))
            }
        }
    }
}

impl Store {
    /// A writer for a new layer's tar, kept as `keep` says (a snapshot
    /// that cannot be started makes it a tar blob). `similar` names a
    /// layer the new one likely shares files with (the same step's last
    /// layer): see [`Store::snapshot_writer_sharing`].
    pub fn layer_writer(
        &self,
        keep: Keep,
        similar: Option<&Digest>,
    ) -> Result<LayerWriter, StoreError> {
        let snapshot = match keep {
            Keep::Tar => None,
            Keep::Snapshot => self.snapshot_writer_sharing(similar).ok(),
        };
        Ok(LayerWriter(match snapshot {
            Some(snapshot) => LayerSink::Kept(Box::new((KeptTar::default(), snapshot))),
            None => LayerSink::Blob(Box::new(self.blobs().writer()?)),
        }))
    }
}

impl Drop for SnapshotWriter {
    fn drop(&mut self) {
        // Closing the pipe ends the unpacker; then its directory can go.
        self.pipe = None;
        if let Some(thread) = self.unpacker.take() {
            let _ = thread.join();
        }
        let _ = fs::remove_dir_all(&self.temp);
    }
}

/// Directories of the snapshot known to be real directories (no symlink on
/// the way), relative to its root.
#[derive(Default)]
struct SafeDirs {
    known: std::collections::HashSet<PathBuf>,
}

impl SafeDirs {
    /// `dir/rel` as a real directory inside `dir`, created if missing; an
    /// error if a component is anything but a directory.
    fn ensure(&mut self, dir: &Path, rel: &Path) -> io::Result<PathBuf> {
        let mut current = PathBuf::new();
        for component in rel.components() {
            current.push(component);
            if self.known.contains(&current) {
                continue;
            }
            let full = dir.join(&current);
            match fs::symlink_metadata(&full) {
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => return Err(io::Error::other("not a directory")),
                Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir(&full)?,
                Err(e) => return Err(e),
            }
            self.known.insert(current.clone());
        }
        Ok(dir.join(rel))
    }

    fn add(&mut self, dir: &Path, rel: &Path) {
        if fs::symlink_metadata(dir.join(rel)).is_ok_and(|m| m.is_dir()) {
            self.known.insert(rel.to_owned());
        }
    }

    /// Something that is not a directory now stands at `rel`.
    fn forget(&mut self, rel: &Path) {
        self.known.retain(|known| !known.starts_with(rel));
    }
}

/// Writes a regular file from the archive at `path` (replacing a file an
/// earlier entry left there, never following a link at its place), with
/// its owner, mode, xattrs and time; or links `donor`'s equal file at
/// `rel` there.
fn write_file<R: io::Read>(
    entry: &mut tar::Entry<'_, R>,
    path: &Path,
    rel: &Path,
    donor: Option<&mut Donor>,
) -> io::Result<()> {
    let header = entry.header();
    let wanted = FileMeta {
        size: header.size()?,
        mode: header.mode()? & 0o7777,
        uid: u32::try_from(header.uid()?).unwrap_or(0),
        gid: u32::try_from(header.gid()?).unwrap_or(0),
        mtime: header.mtime()?,
    };
    let mut xattrs = Vec::new();
    if let Some(extensions) = entry.pax_extensions()? {
        for extension in extensions {
            let extension = extension?;
            let key = extension.key().unwrap_or_default();
            if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                xattrs.push((name.to_owned(), extension.value_bytes().to_vec()));
            }
        }
    }
    let mut file = match donor.filter(|_| xattrs.is_empty()) {
        Some(donor) => match donor.share(entry, rel, &wanted, path)? {
            Shared::Linked => return Ok(()),
            Shared::Written(file) => file,
        },
        None => {
            let mut file = create_replacing(path)?;
            io::copy(entry, &mut file)?;
            file
        }
    };
    set_file_meta(&mut file, &wanted, &xattrs)
}

/// A new file at `path`, replacing a file an earlier entry left there
/// (never following a link at its place).
fn create_replacing(path: &Path) -> io::Result<fs::File> {
    let create = || fs::File::options().write(true).create_new(true).open(path);
    match create() {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            fs::remove_file(path)?;
            create()
        }
        other => other,
    }
}

/// What a regular file's header says of it.
struct FileMeta {
    size: u64,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: u64,
}

/// Gives a written file its owner, mode, xattrs and time.
fn set_file_meta(
    file: &mut fs::File,
    meta: &FileMeta,
    xattrs: &[(String, Vec<u8>)],
) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::os::unix::fs::fchown(&*file, Some(meta.uid), Some(meta.gid))?;
    // After chown, which clears set-id bits.
    file.set_permissions(fs::Permissions::from_mode(meta.mode))?;
    for (name, value) in xattrs {
        xattr::FileExt::set_xattr(&*file, name, value)?;
    }
    file.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(meta.mtime))
}

/// The snapshot of a layer like the one being unpacked, whose equal files
/// are linked rather than written (see [`Store::snapshot_writer_sharing`]).
/// Its files are opened beneath its tree, never through a symlink, and an
/// inode is shared at most once per new snapshot: two paths the layer
/// holds as two files never become one.
struct Donor {
    tree: fs::File,
    used: std::collections::HashSet<(u64, u64)>,
    /// What the layer's file and the donor's hold at the same offset.
    ours: Vec<u8>,
    theirs: Vec<u8>,
}

/// What [`Donor::share`] did: linked the donor's file, or wrote a new one
/// (owner, mode and time still to set).
enum Shared {
    Linked,
    Written(fs::File),
}

impl Donor {
    fn open(tree: &Path) -> Option<Donor> {
        let tree = fs::File::open(tree).ok()?;
        Some(Donor {
            tree,
            used: Default::default(),
            ours: vec![0; 1 << 16],
            theirs: vec![0; 1 << 16],
        })
    }

    /// The donor's file at `rel` if it can stand for `wanted`'s header: a
    /// regular file of its size, mode, owner and time, with no xattrs.
    fn candidate(&self, rel: &Path, wanted: &FileMeta) -> Option<fs::File> {
        use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
        use std::os::fd::AsFd;
        let how = OpenHow::new()
            .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
        let file = fs::File::from(openat2(self.tree.as_fd(), rel, how).ok()?);
        let meta = file.metadata().ok()?;
        let fits = meta.is_file()
            && meta.len() == wanted.size
            && meta.mode() & 0o7777 == wanted.mode
            && meta.uid() == wanted.uid
            && meta.gid() == wanted.gid
            && u64::try_from(meta.mtime()).ok() == Some(wanted.mtime)
            && meta.mtime_nsec() == 0
            && !self.used.contains(&(meta.dev(), meta.ino()))
            && xattr::FileExt::list_xattr(&file).is_ok_and(|mut names| names.next().is_none());
        fits.then_some(file)
    }

    /// Reads `entry`'s content and links the donor's file at `rel` to
    /// `path` if it holds the same bytes; else writes the content to a new
    /// file at `path` (the bytes already compared taken from the donor).
    fn share(
        &mut self,
        entry: &mut impl io::Read,
        rel: &Path,
        wanted: &FileMeta,
        path: &Path,
    ) -> io::Result<Shared> {
        use io::Write;
        let Some(mut candidate) = self.candidate(rel, wanted) else {
            let mut file = create_replacing(path)?;
            io::copy(entry, &mut file)?;
            return Ok(Shared::Written(file));
        };
        let Donor { ours, theirs, .. } = self;
        let mut same = 0u64;
        loop {
            let n = read_full(entry, ours)?;
            if n == 0 {
                break;
            }
            let m = read_full(&mut candidate, &mut theirs[..n])?;
            if m != n || ours[..n] != theirs[..n] {
                // Differs here: what came before is the donor's bytes.
                let mut file = with_prefix_of(&mut candidate, same, path)?;
                file.write_all(&ours[..n])?;
                io::copy(entry, &mut file)?;
                return Ok(Shared::Written(file));
            }
            same += n as u64;
        }
        let meta = candidate.metadata()?;
        if same != wanted.size || read_full(&mut candidate, &mut theirs[..1])? != 0 {
            return Ok(Shared::Written(with_prefix_of(&mut candidate, same, path)?));
        }
        // Through the open file, never a path: the donor's tree is not
        // walked again.
        let by_fd = format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&candidate)
        );
        let link = || {
            nix::unistd::linkat(
                nix::fcntl::AT_FDCWD,
                by_fd.as_str(),
                nix::fcntl::AT_FDCWD,
                path,
                nix::fcntl::AtFlags::AT_SYMLINK_FOLLOW,
            )
        };
        let linked = match link() {
            Err(nix::errno::Errno::EEXIST) => {
                fs::remove_file(path)?;
                link()
            }
            other => other,
        };
        if linked.is_err() {
            // The donor was removed meanwhile (GC, another kiln: an
            // unlinked inode cannot be linked again), or is on another
            // filesystem: its bytes, the same as the entry's, are copied.
            return Ok(Shared::Written(with_prefix_of(&mut candidate, same, path)?));
        }
        self.used.insert((meta.dev(), meta.ino()));
        Ok(Shared::Linked)
    }
}

/// A new file at `path` holding the first `len` bytes of `donor` (read
/// from its start): what the entry was found to share with it.
fn with_prefix_of(donor: &mut fs::File, len: u64, path: &Path) -> io::Result<fs::File> {
    use io::Read;
    let mut file = create_replacing(path)?;
    io::Seek::rewind(donor)?;
    io::copy(&mut donor.take(len), &mut file)?;
    Ok(file)
}

/// Reads until `buf` is full or the reader ends; returns the bytes read.
fn read_full(reader: &mut impl io::Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// A pipe made as wide as the system lets an unprivileged process make
/// it (1 MiB by default): fewer wake-ups of the unpacker per layer.
fn widen_pipe(pipe: &io::PipeWriter) {
    let _ = nix::fcntl::fcntl(pipe, nix::fcntl::FcntlArg::F_SETPIPE_SZ(1 << 20));
}

/// A FIFO or device entry.
fn is_special(kind: tar::EntryType) -> bool {
    matches!(
        kind,
        tar::EntryType::Fifo | tar::EntryType::Char | tar::EntryType::Block
    )
}

/// The FIFO or device node a header describes at `path` (replacing a
/// non-directory there), with its owner, mode and time; never through a
/// link (`path`'s parent is a real directory of the tree, and a link at
/// `path` itself is removed first).
fn make_special(header: &tar::Header, path: &Path) -> io::Result<()> {
    use nix::sys::stat::{makedev, mknod, Mode, SFlag};
    let kind = match header.entry_type() {
        tar::EntryType::Fifo => SFlag::S_IFIFO,
        tar::EntryType::Char => SFlag::S_IFCHR,
        _ => SFlag::S_IFBLK,
    };
    let device = makedev(
        u64::from(header.device_major()?.unwrap_or(0)),
        u64::from(header.device_minor()?.unwrap_or(0)),
    );
    let mode = header.mode()? & 0o7777;
    let uid = u32::try_from(header.uid()?).unwrap_or(0);
    let gid = u32::try_from(header.gid()?).unwrap_or(0);
    let mtime = i64::try_from(header.mtime()?).unwrap_or(i64::MAX);
    let made = || mknod(path, kind, Mode::empty(), device).map_err(io::Error::from);
    match made() {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            fs::remove_file(path)?;
            made()?;
        }
        other => other?,
    }
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
    // After chown (which clears set-id bits), and not through umask.
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    }
    set_time(path, mtime)
}

/// An overlay whiteout: a character device with device number 0:0.
fn make_whiteout(path: &Path) -> Result<(), StoreError> {
    use nix::sys::stat::{mknod, Mode, SFlag};
    mknod(path, SFlag::S_IFCHR, Mode::empty(), 0)
        .map_err(|errno| StoreError::io(path, io::Error::from(errno)))
}

/// Writes the change set in an overlay upper dir as a layer: overlay
/// whiteouts become `.wh.` files, opaque directories get `.wh..wh..opq`,
/// hard links within the layer stay hard links, and xattrs other than
/// overlay's own travel as PAX `SCHILY.xattr` records (as Docker writes
/// them). Entries are sorted by name so the same tree gives the same tar;
/// with `clamp_mtime`, no time is later than it.
pub fn layer_from_upper(
    blobs: &Blobs,
    upper: &Path,
    clamp_mtime: Option<u64>,
) -> Result<Layer, StoreError> {
    write_upper(blobs, upper, clamp_mtime, Normalise::No).map(|(layer, _)| layer)
}

impl Store {
    /// Commits an overlay upper dir (no longer mounted) as a layer. With
    /// [`Keep::Snapshot`] the upper dir itself becomes the layer's
    /// snapshot, and with the walk's skeleton its only copy (no tar is
    /// written): it already is that layer as overlayfs wants it, so the
    /// next step on it does not unpack again what was just packed. The
    /// walk makes the dir what unpacking the tar would give: overlay's own
    /// xattrs (origin, impure) removed and each file's times set to its
    /// header's. An upper that cannot be made so (a socket, which no tar
    /// holds; one holding a `.wh.` name, which the tar reads back as a
    /// whiteout; another filesystem) is written as a tar blob, as
    /// [`layer_from_upper`] does, and left as it is. Adopted, `upper` is
    /// gone; where the layer has a complete snapshot already (another
    /// kiln may run on it), that one stays and `upper` is left to its
    /// caller. [`Keep::Tar`] adopts nothing.
    pub fn commit_upper(
        &self,
        upper: &Path,
        clamp_mtime: Option<u64>,
        keep: Keep,
    ) -> Result<Layer, StoreError> {
        let same_filesystem = same_filesystem(upper, &self.layout().snapshots())?;
        if keep == Keep::Tar {
            return layer_from_upper(self.blobs(), upper, clamp_mtime);
        }
        if same_filesystem {
            // One walk into the digest and the skeleton, no tar written:
            // the upper dir becomes the snapshot, which gives the tar back.
            let mut sink = KeptTar::default();
            let (entries, adoptable) =
                write_upper_to(&mut sink, upper, clamp_mtime, Normalise::Yes)?;
            let (digest, size, recorder) = sink.finish();
            if adoptable && recorder.is_exact() {
                let skeleton = recorder.finish()?;
                // The skeleton and digest were taken of this very tree, read
                // after the container ended (its pid namespace gone, so
                // nothing writes it): there is nothing left to check.
                self.make_kept_snapshot(&digest, "adopt", skeleton, |tree| {
                    adopt_tree(upper, tree)
                })?;
                if self.blobs().contains(&digest) {
                    return Ok(Layer {
                        digest,
                        size,
                        entries,
                    });
                }
            }
        }
        // Not adoptable (or a snapshot of the same layer was there, without
        // its tar): the tar is written as a blob.
        let (layer, _) = write_upper(self.blobs(), upper, clamp_mtime, Normalise::Yes)?;
        Ok(layer)
    }

    /// [`Store::make_snapshot`] of a layer kept only as its snapshot: the
    /// skeleton is written beside the tree before it is marked complete;
    /// returns the tree. It is marked [`UNSYNCED`], not synced: until an image is
    /// made of it ([`Store::sync_kept_layers`]) it is build cache, which
    /// a crash may cost (a snapshot from an earlier boot is verified
    /// before use), and a `syncfs` here would wait for every dirty page
    /// of the filesystem, other steps' included. The layer is leased for
    /// this process before it is in place, so GC cannot take it in
    /// between.
    fn make_kept_snapshot(
        &self,
        layer: &Digest,
        what: &str,
        skeleton: Vec<u8>,
        fill: impl FnOnce(&Path) -> Result<(), StoreError>,
    ) -> Result<PathBuf, StoreError> {
        self.blobs().lease_and(layer, || {
            self.make_snapshot_unleased(layer, what, |tree| {
                fill(tree)?;
                write_skeleton(tree, &skeleton)?;
                let unsynced = tree.parent().unwrap_or(tree).join(UNSYNCED);
                fs::write(&unsynced, b"").map_err(|e| StoreError::io(&unsynced, e))
            })
        })
    }

    /// Checks that each file the skeleton of the kept layer at `tree`
    /// names is there with its size ([`crate::skeleton::check_files`]);
    /// a snapshot that fails is discarded (the tar's bytes exist nowhere
    /// else).
    fn check_kept(&self, tree: &Path) -> Result<(), StoreError> {
        let dir = tree.parent().unwrap_or(tree);
        let skeleton_path = dir.join(SKELETON);
        if !skeleton_path.is_file() {
            return Ok(());
        }
        fs::read(&skeleton_path)
            .map_err(|e| StoreError::io(&skeleton_path, e))
            .and_then(|skeleton| crate::skeleton::check_files(&skeleton, tree))
            .map(|_| ())
            .inspect_err(|_| {
                let _ = self.discard_snapshot(dir);
            })
    }

    /// Puts on disk the layers among `layers` kept only as a snapshot
    /// still marked [`UNSYNCED`]: an image is about to be made of them (a
    /// tag), and an image's layers must survive a crash as blobs do. One
    /// `syncfs` for all of them, then their markers go.
    pub(crate) fn sync_kept_layers<'a>(
        &self,
        layers: impl IntoIterator<Item = &'a Digest>,
    ) -> Result<(), StoreError> {
        let snapshots = self.layout().snapshots();
        let unsynced: Vec<PathBuf> = layers
            .into_iter()
            .map(|layer| snapshots.join(layer.hex()).join(UNSYNCED))
            .filter(|marker| marker.exists())
            .collect();
        if unsynced.is_empty() {
            return Ok(());
        }
        sync_filesystem(&snapshots)?;
        unsynced
            .iter()
            .try_for_each(|marker| remove_if_there(marker))
    }
}

/// Removes the file at `path` if it is there.
fn remove_if_there(path: &Path) -> Result<(), StoreError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(StoreError::io(path, e)),
        _ => Ok(()),
    }
}

/// Whether `path` and `dir` (made if missing) are on one filesystem, so a
/// rename moves one into the other.
fn same_filesystem(path: &Path, dir: &Path) -> Result<bool, StoreError> {
    fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
    let device = |p: &Path| {
        fs::metadata(p)
            .map(|m| m.dev())
            .map_err(|e| StoreError::io(p, e))
    };
    Ok(device(path)? == device(dir)?)
}

/// Moves the directory `from` to the empty directory `tree`'s place,
/// with `tree`'s owner and mode on its root: the layer's tar has no entry
/// for its root, so a snapshot's root is a fresh directory's, whatever the
/// upper dir's root was.
fn adopt_tree(from: &Path, tree: &Path) -> Result<(), StoreError> {
    let root = fs::metadata(tree).map_err(|e| StoreError::io(tree, e))?;
    std::os::unix::fs::lchown(from, Some(root.uid()), Some(root.gid()))
        .and_then(|()| fs::set_permissions(from, root.permissions()))
        .map_err(|e| StoreError::io(from, e))?;
    fs::remove_dir(tree).map_err(|e| StoreError::io(tree, e))?;
    fs::rename(from, tree).map_err(|e| StoreError::io(from, e))
}

/// Whether [`write_upper`] also makes the upper dir what unpacking its
/// tar gives.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Normalise {
    No,
    Yes,
}

/// [`layer_from_upper`]; with [`Normalise::Yes`] the walk also removes
/// overlay's bookkeeping xattrs and sets each regular file's times to its
/// header's (whole seconds, clamped), as the unpacking of the tar would.
/// Returns the layer and whether the upper dir is now its snapshot's
/// equal (false if it held a socket, which the tar leaves out, or a name
/// starting `.wh.`, which the tar turns into a whiteout).
fn write_upper(
    blobs: &Blobs,
    upper: &Path,
    clamp_mtime: Option<u64>,
    normalise: Normalise,
) -> Result<(Layer, bool), StoreError> {
    let mut writer = blobs.writer()?;
    let (entries, adoptable) = write_upper_to(&mut writer, upper, clamp_mtime, normalise)?;
    let (digest, size) = writer.commit()?;
    let layer = Layer {
        digest,
        size,
        entries,
    };
    Ok((layer, adoptable))
}

/// [`write_upper`] into any sink; returns the number of entries and
/// whether the upper dir is now its snapshot's equal.
fn write_upper_to(
    writer: &mut impl io::Write,
    upper: &Path,
    clamp_mtime: Option<u64>,
    normalise: Normalise,
) -> Result<(u64, bool), StoreError> {
    let mut adoptable = normalise == Normalise::Yes;
    let mut builder = tar::Builder::new(writer);
    let mut first_path_of_inode: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let mut entries = 0u64;
    let walk = walkdir::WalkDir::new(upper)
        .min_depth(1)
        .sort_by_file_name()
        .follow_links(false);
    for item in walk {
        let item = item.map_err(|e| {
            let path = e.path().unwrap_or(upper).to_owned();
            StoreError::io(&path, e.into())
        })?;
        let full = item.path();
        let relative = full.strip_prefix(upper).unwrap_or(full).to_owned();
        let meta = item
            .metadata()
            .map_err(|e| StoreError::io(full, e.into()))?;
        let kind = meta.file_type();
        let io_error = |e| StoreError::io(full, e);
        let mut header = header_for(&meta, clamp_mtime);

        if kind.is_char_device() && meta.rdev() == 0 {
            let name = relative.file_name().unwrap_or_default().as_bytes();
            let mut whiteout = relative.with_file_name(WHITEOUT_PREFIX);
            whiteout
                .as_mut_os_string()
                .push(std::ffi::OsStr::from_bytes(name));
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(0o644);
            header.set_uid(0);
            header.set_gid(0);
            header.set_size(0);
            builder
                .append_data(&mut header, &whiteout, io::empty())
                .map_err(io_error)?;
            entries += 1;
            continue;
        }

        if relative
            .file_name()
            .is_some_and(|name| name.as_bytes().starts_with(WHITEOUT_PREFIX.as_bytes()))
        {
            // A file the command named `.wh.x` reads back from the tar as
            // a whiteout, so the upper dir is not what the tar gives.
            adoptable = false;
        }
        let xattrs = portable_xattrs(full, normalise)?;
        if !xattrs.is_empty() {
            let records: Vec<(String, Vec<u8>)> = xattrs
                .iter()
                .map(|(k, v)| (format!("SCHILY.xattr.{k}"), v.clone()))
                .collect();
            builder
                .append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                .map_err(io_error)?;
        }

        if kind.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_size(0);
            builder
                .append_data(&mut header, &relative, io::empty())
                .map_err(io_error)?;
            entries += 1;
            if xattr::get(full, OPAQUE_XATTR).ok().flatten().as_deref() == Some(b"y") {
                let mut marker = tar::Header::new_gnu();
                marker.set_entry_type(tar::EntryType::Regular);
                marker.set_mode(0o644);
                marker.set_mtime(header.mtime().unwrap_or(0));
                marker.set_size(0);
                builder
                    .append_data(&mut marker, relative.join(OPAQUE_MARKER), io::empty())
                    .map_err(io_error)?;
                entries += 1;
            }
        } else if kind.is_symlink() {
            let target = fs::read_link(full).map_err(io_error)?;
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_size(0);
            builder
                .append_link(&mut header, &relative, &target)
                .map_err(io_error)?;
            entries += 1;
        } else if kind.is_file() {
            let inode = (meta.dev(), meta.ino());
            if meta.nlink() > 1 {
                if let Some(first) = first_path_of_inode.get(&inode) {
                    header.set_entry_type(tar::EntryType::Link);
                    header.set_size(0);
                    builder
                        .append_link(&mut header, &relative, first)
                        .map_err(io_error)?;
                    entries += 1;
                    continue;
                }
                first_path_of_inode.insert(inode, relative.clone());
            }
            let file = fs::File::open(full).map_err(io_error)?;
            if normalise == Normalise::Yes {
                let time = std::time::UNIX_EPOCH
                    + std::time::Duration::from_secs(header.mtime().unwrap_or(0));
                let times = fs::FileTimes::new().set_accessed(time).set_modified(time);
                file.set_times(times).map_err(io_error)?;
            }
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(meta.len());
            builder
                .append_data(&mut header, &relative, file)
                .map_err(io_error)?;
            entries += 1;
        } else {
            let entry_type = if kind.is_fifo() {
                tar::EntryType::Fifo
            } else if kind.is_char_device() {
                tar::EntryType::Char
            } else if kind.is_block_device() {
                tar::EntryType::Block
            } else {
                // Sockets cannot be put in a tar; Docker drops them too.
                adoptable = false;
                continue;
            };
            header.set_entry_type(entry_type);
            header.set_size(0);
            let (major, minor) = (
                nix::sys::stat::major(meta.rdev()),
                nix::sys::stat::minor(meta.rdev()),
            );
            header
                .set_device_major(major as u32)
                .and_then(|()| header.set_device_minor(minor as u32))
                .map_err(io_error)?;
            builder
                .append_data(&mut header, &relative, io::empty())
                .map_err(io_error)?;
            entries += 1;
        }
    }
    builder.finish().map_err(|e| StoreError::io(upper, e))?;
    Ok((entries, adoptable))
}

/// A tar header with the owner, mode and (clamped) time of `meta`.
fn header_for(meta: &fs::Metadata, clamp_mtime: Option<u64>) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_mode(meta.mode() & 0o7777);
    header.set_uid(u64::from(meta.uid()));
    header.set_gid(u64::from(meta.gid()));
    let mtime = u64::try_from(meta.mtime()).unwrap_or(0);
    header.set_mtime(clamp_mtime.map_or(mtime, |clamp| mtime.min(clamp)));
    header
}

/// The xattrs of `path` that belong in a layer, sorted by name: all but
/// overlay's bookkeeping. Redirects and metacopy are refused, since a
/// layer could not express them. With [`Normalise::Yes`] the bookkeeping
/// (origin, impure: what overlay notes about copy-ups) is removed from the
/// file, all but the opaque mark that the snapshot keeps.
fn portable_xattrs(
    path: &Path,
    normalise: Normalise,
) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
    let Ok(names) = xattr::list(path) else {
        // A filesystem without xattr support has none to carry.
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for name in names {
        let name = name.to_string_lossy().into_owned();
        if UNSUPPORTED_XATTRS.contains(&name.as_str()) {
            return Err(StoreError::Unsupported(format!(
                "{}: overlay {name} is not supported (mount with redirect_dir=off,metacopy=off)",
                path.display()
            )));
        }
        if name.starts_with("trusted.overlay.") {
            if normalise == Normalise::Yes && name != OPAQUE_XATTR {
                xattr::remove(path, &name).map_err(|e| StoreError::io(path, e))?;
            }
            continue;
        }
        if let Ok(Some(value)) = xattr::get(path, &name) {
            out.push((name, value));
        }
    }
    out.sort();
    Ok(out)
}
