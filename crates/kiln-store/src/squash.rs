//! An image's layers squashed into one filesystem tar (`kiln build -o
//! type=tar`): what unpacking the layers in order gives, written tar to
//! tar, so nothing lands on the host and every entry keeps its owner, mode,
//! time, link target and PAX records (xattrs) as the layers hold them.
//!
//! Two passes over the layers, each a stream (no content is held): the
//! first reads headers only and decides, for every path of the result, the
//! entry that gives it (the topmost, unless a whiteout, an opaque directory
//! or a non-directory above hides it); the second writes those entries,
//! bottom layer first, so a directory's lower children and a hard link's
//! target come before what refers to them. Memory is one small record per
//! path of the result.
//!
//! Entry paths are normalized inside the root (a path or hard-link target
//! climbing out with `..` is refused); symlink targets are data, never
//! followed.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::path::Path;

use crate::blobs::Blobs;
use crate::digest::Digest;
use crate::error::StoreError;
use crate::layer::{contained_path, open_layer};
use crate::snapshot::{OPAQUE_MARKER, WHITEOUT_PREFIX};

/// An entry of the stack: (layer, position in the layer's tar).
type EntryId = (usize, u64);

/// The entry that gives a path, after the layers read so far.
#[derive(Clone, Copy)]
struct Slot {
    id: EntryId,
    is_dir: bool,
    /// The entry whose content the path has: itself, or for a hard link
    /// the entry its target had when the link was made.
    content: EntryId,
}

/// What the second pass writes for an entry.
struct Emit {
    /// Its normalized path; or, for the target of hard links whose own path
    /// lost that content (replaced or deleted above), the first link's.
    path: Vec<u8>,
    /// For a hard link: the path it links to in the result.
    link_to: Option<Vec<u8>>,
}

/// Writes the filesystem the layers (bottom first) make as one plain tar
/// to `out`, and returns how many entries it holds.
pub fn squash_layers(blobs: &Blobs, layers: &[Digest], out: impl Write) -> Result<u64, StoreError> {
    let winners = resolve_paths(blobs, layers)?;
    let plan = emission_plan(winners);
    write_planned(blobs, layers, &plan, out)
}

/// Reads the entries of `layers` one by one, with their normalized path.
fn for_each_entry(
    blobs: &Blobs,
    layers: &[Digest],
    mut visit: impl FnMut(EntryId, &[u8], &mut tar::Entry<'_, Box<dyn Read>>) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    for (n, digest) in layers.iter().enumerate() {
        let blob = blobs.path(digest);
        let io = |e| StoreError::io(&blob, e);
        let mut archive = tar::Archive::new(open_layer(blobs, digest)?);
        for (index, entry) in archive.entries().map_err(io)?.enumerate() {
            let mut entry = entry.map_err(io)?;
            let raw = entry.path_bytes().into_owned();
            let path = inside(&raw, digest, &raw)?;
            visit((n, index as u64), &path, &mut entry)?;
        }
    }
    Ok(())
}

/// `raw` (an entry's path or hard-link target) as a path inside the root,
/// raw bytes without a leading `/`; refused if it climbs out.
fn inside(raw: &[u8], layer: &Digest, entry: &[u8]) -> Result<Vec<u8>, StoreError> {
    use std::os::unix::ffi::OsStrExt;
    let path = contained_path(Path::new(std::ffi::OsStr::from_bytes(raw))).ok_or_else(|| {
        StoreError::HostileArchive {
            what: format!("layer {layer}"),
            entry: String::from_utf8_lossy(entry).into_owned(),
            reason: "it leaves the root".into(),
        }
    })?;
    Ok(path.into_os_string().into_encoded_bytes())
}

fn split(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(slash) => (&path[..slash], &path[slash + 1..]),
        None => (&[], path),
    }
}

fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    if parent.is_empty() {
        name.to_vec()
    } else {
        [parent, b"/", name].concat()
    }
}

/// Removes what is under `dir` (and `dir` itself if `with_dir`), among
/// the entries of layers below `layer`: a whiteout or an opaque marker
/// hides the layers beneath its own, never its own entries.
fn hide(state: &mut BTreeMap<Vec<u8>, Slot>, dir: &[u8], with_dir: bool, layer: usize) {
    let prefix = join(dir, b"");
    let mut doomed: Vec<Vec<u8>> = state
        .range(prefix.clone()..)
        .take_while(|(path, _)| path.starts_with(&prefix))
        .filter(|(_, slot)| slot.id.0 < layer)
        .map(|(path, _)| path.clone())
        .collect();
    if with_dir && state.get(dir).is_some_and(|slot| slot.id.0 < layer) {
        doomed.push(dir.to_vec());
    }
    for path in doomed {
        state.remove(&path);
    }
}

/// Whether an entry of this type is a file of the file system (not a
/// global PAX header or another record a reader does not unpack).
fn is_file_system_entry(kind: tar::EntryType) -> bool {
    use tar::EntryType::*;
    matches!(
        kind,
        Regular | Continuous | GNUSparse | Directory | Symlink | Link | Char | Block | Fifo
    )
}

/// Pass one: every path of the result and the entry that gives it.
fn resolve_paths(blobs: &Blobs, layers: &[Digest]) -> Result<BTreeMap<Vec<u8>, Slot>, StoreError> {
    let mut state: BTreeMap<Vec<u8>, Slot> = BTreeMap::new();
    for_each_entry(blobs, layers, |id, path, entry| {
        // The root's own entry is not a path of the result.
        if path.is_empty() {
            return Ok(());
        }
        let (parent, name) = split(path);
        if name == OPAQUE_MARKER.as_bytes() {
            hide(&mut state, parent, false, id.0);
            return Ok(());
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            if !hidden.is_empty() {
                hide(&mut state, &join(parent, hidden), true, id.0);
            }
            return Ok(());
        }
        let kind = entry.header().entry_type();
        if !is_file_system_entry(kind) {
            return Ok(());
        }
        let content = if kind.is_hard_link() {
            let raw = entry.link_name_bytes().unwrap_or_default().into_owned();
            let target = inside(&raw, &layers[id.0], path)?;
            match state.get(&target) {
                Some(slot) if !slot.is_dir => slot.content,
                _ => {
                    return Err(StoreError::HostileArchive {
                        what: format!("layer {}", layers[id.0]),
                        entry: String::from_utf8_lossy(path).into_owned(),
                        reason: "a hard link to a path the image has no file at".into(),
                    })
                }
            }
        } else {
            id
        };
        let is_dir = kind.is_dir();
        if !is_dir {
            // What replaces a directory takes its contents along.
            let prefix = join(path, b"");
            let doomed: Vec<Vec<u8>> = state
                .range(prefix.clone()..)
                .take_while(|(p, _)| p.starts_with(&prefix))
                .map(|(p, _)| p.clone())
                .collect();
            for p in doomed {
                state.remove(&p);
            }
        }
        state.insert(
            path.to_vec(),
            Slot {
                id,
                is_dir,
                content,
            },
        );
        Ok(())
    })?;
    Ok(state)
}

/// What to write for each entry that gives the result something. A hard
/// link whose target still has the content it linked to links to it;
/// links whose target path lost that content (replaced or deleted in a
/// layer above) share it among themselves, the first one carrying it.
fn emission_plan(winners: BTreeMap<Vec<u8>, Slot>) -> HashMap<EntryId, Emit> {
    let mut plan = HashMap::new();
    let mut links: BTreeMap<EntryId, Vec<(EntryId, Vec<u8>)>> = BTreeMap::new();
    let mut owners: HashMap<EntryId, Vec<u8>> = HashMap::new();
    for (path, slot) in winners {
        if slot.content == slot.id {
            owners.insert(slot.id, path.clone());
            plan.insert(
                slot.id,
                Emit {
                    path,
                    link_to: None,
                },
            );
        } else {
            links.entry(slot.content).or_default().push((slot.id, path));
        }
    }
    for (content, mut members) in links {
        // In the order they are written: the first one comes first.
        members.sort();
        let leader = match owners.get(&content) {
            Some(path) => path.clone(),
            None => {
                let (_, first) = members.remove(0);
                let emit = Emit {
                    path: first.clone(),
                    link_to: None,
                };
                plan.insert(content, emit);
                first
            }
        };
        for (id, path) in members {
            let link_to = Some(leader.clone());
            plan.insert(id, Emit { path, link_to });
        }
    }
    plan
}

/// PAX records that describe the entry itself (xattrs, times, long owner
/// names and ids) rather than what the writer sets again (path, link
/// target, size) or a sparse layout the content is no longer stored in.
fn kept_pax_records(
    entry: &mut tar::Entry<'_, Box<dyn Read>>,
) -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let mut kept = Vec::new();
    let Some(extensions) = entry.pax_extensions()? else {
        return Ok(kept);
    };
    for extension in extensions {
        let extension = extension?;
        let Ok(key) = extension.key() else {
            continue;
        };
        if matches!(key, "path" | "linkpath" | "size") || key.starts_with("GNU.sparse.") {
            continue;
        }
        kept.push((key.to_owned(), extension.value_bytes().to_vec()));
    }
    Ok(kept)
}

/// Pass two: the planned entries, bottom layer first, into one tar.
fn write_planned(
    blobs: &Blobs,
    layers: &[Digest],
    plan: &HashMap<EntryId, Emit>,
    out: impl Write,
) -> Result<u64, StoreError> {
    let mut builder = tar::Builder::new(out);
    let mut written = 0u64;
    for_each_entry(blobs, layers, |id, _, entry| {
        let Some(emit) = plan.get(&id) else {
            return Ok(());
        };
        let blob = blobs.path(&layers[id.0]);
        write_entry(&mut builder, entry, emit).map_err(|e| StoreError::io(&blob, e))?;
        written += 1;
        Ok(())
    })?;
    let what = Path::new("the filesystem tar");
    let mut out = builder.into_inner().map_err(|e| StoreError::io(what, e))?;
    out.flush().map_err(|e| StoreError::io(what, e))?;
    Ok(written)
}

/// One entry, with its own header (owner, mode, time) and PAX records.
fn write_entry<W: Write>(
    builder: &mut tar::Builder<W>,
    entry: &mut tar::Entry<'_, Box<dyn Read>>,
    emit: &Emit,
) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let as_path = |raw: &[u8]| Path::new(std::ffi::OsStr::from_bytes(raw)).to_owned();
    let records = kept_pax_records(entry)?;
    if !records.is_empty() {
        builder.append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), v.as_slice())))?;
    }
    let mut header = entry.header().clone();
    let path = &emit.path;
    let kind = header.entry_type();
    if let Some(target) = &emit.link_to {
        header.set_entry_type(tar::EntryType::Link);
        header.set_size(0);
        return builder.append_link(&mut header, as_path(path), as_path(target));
    }
    if kind.is_symlink() {
        let target = entry.link_name_bytes().unwrap_or_default().into_owned();
        header.set_size(0);
        return builder.append_link(&mut header, as_path(path), as_path(&target));
    }
    if kind.is_dir() {
        header.set_size(0);
        return builder.append_data(&mut header, as_path(&join(path, b"")), std::io::empty());
    }
    // A sparse file is written whole (its content as the entry reads it).
    if kind.is_gnu_sparse() {
        header.set_entry_type(tar::EntryType::Regular);
    }
    header.set_size(entry.size());
    builder.append_data(&mut header, as_path(path), entry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Store;

    /// One tar entry to build a test layer from.
    enum E<'a> {
        File(&'a str, &'a [u8], u64, u64),
        Dir(&'a str),
        Hard(&'a str, &'a str),
        Xattr(&'a str, &'a str, &'a [u8]),
    }

    fn layer(store: &Store, entries: &[E<'_>]) -> Digest {
        let mut builder = tar::Builder::new(Vec::new());
        for entry in entries {
            let mut header = tar::Header::new_gnu();
            header.set_mode(0o644);
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            match entry {
                E::File(path, body, uid, gid) => {
                    header.set_uid(*uid);
                    header.set_gid(*gid);
                    header.set_size(body.len() as u64);
                    builder.append_data(&mut header, path, *body).unwrap();
                }
                E::Dir(path) => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_mode(0o1777);
                    header.set_size(0);
                    builder
                        .append_data(&mut header, path, std::io::empty())
                        .unwrap();
                }
                E::Hard(path, target) => {
                    header.set_entry_type(tar::EntryType::Link);
                    header.set_size(0);
                    builder.append_link(&mut header, path, target).unwrap();
                }
                E::Xattr(path, key, value) => {
                    let record = format!("SCHILY.xattr.{key}");
                    builder
                        .append_pax_extensions([(record.as_str(), *value)])
                        .unwrap();
                    header.set_size(1);
                    builder.append_data(&mut header, path, &b"x"[..]).unwrap();
                }
            }
        }
        store.blobs().put(&builder.into_inner().unwrap()).unwrap()
    }

    /// Path → (type, uid, gid, content or link target), in tar order.
    fn squash(store: &Store, layers: &[Digest]) -> Vec<(String, char, u64, u64, String)> {
        let mut out = Vec::new();
        squash_layers(store.blobs(), layers, &mut out).unwrap();
        let mut archive = tar::Archive::new(&out[..]);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let h = e.header().clone();
                let mut body = String::new();
                if let Some(link) = e.link_name().unwrap() {
                    body = link.display().to_string();
                } else {
                    e.read_to_string(&mut body).unwrap();
                }
                let kind = match h.entry_type() {
                    tar::EntryType::Directory => 'd',
                    tar::EntryType::Link => 'h',
                    _ => 'f',
                };
                let path = e.path().unwrap().display().to_string();
                (path, kind, h.uid().unwrap(), h.gid().unwrap(), body)
            })
            .collect()
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        (dir, store)
    }

    #[test]
    fn whiteouts_opaque_dirs_and_replacements_apply_to_lower_layers_only() {
        let (_dir, s) = store();
        let lower = layer(
            &s,
            &[
                E::Dir("tmp/"),
                E::File("etc/shadow", b"s", 0, 42),
                E::File("gone/f", b"g", 0, 0),
                E::File("opaque/old", b"o", 0, 0),
                E::File("d/child", b"c", 0, 0),
                E::File("home/app/a", b"a", 1000, 1000),
            ],
        );
        let upper = layer(
            &s,
            &[
                E::File("gone/.wh.f", b"", 0, 0),
                E::File(".wh.gone", b"", 0, 0),
                // Its own layer's entries survive its opaque marker.
                E::File("opaque/new", b"n", 0, 0),
                E::File("opaque/.wh..wh..opq", b"", 0, 0),
                E::File("d", b"now a file", 0, 0),
                E::File("home/app/a", b"A", 1000, 1000),
            ],
        );
        let got = squash(&s, &[lower, upper]);
        let row =
            |p: &str, k: char, u: u64, g: u64, b: &str| (p.to_string(), k, u, g, b.to_string());
        assert_eq!(
            got,
            [
                row("tmp/", 'd', 0, 0, ""),
                row("etc/shadow", 'f', 0, 42, "s"),
                row("opaque/new", 'f', 0, 0, "n"),
                row("d", 'f', 0, 0, "now a file"),
                row("home/app/a", 'f', 1000, 1000, "A"),
            ]
        );
    }

    #[test]
    fn hard_links_keep_the_content_they_linked_to() {
        let (_dir, s) = store();
        let lower = layer(
            &s,
            &[
                E::File("a", b"old", 0, 0),
                E::Hard("b", "a"),
                E::Hard("c", "./a"),
                E::File("x", b"x", 0, 0),
                E::Hard("y", "x"),
            ],
        );
        let upper = layer(
            &s,
            &[E::File("a", b"new", 0, 0), E::File(".wh.y", b"", 0, 0)],
        );
        let got = squash(&s, &[lower, upper]);
        let row = |p: &str, k: char, b: &str| (p.to_string(), k, 0, 0, b.to_string());
        assert_eq!(
            got,
            [
                // `a` was replaced: its links share the old content.
                row("b", 'f', "old"),
                row("c", 'h', "b"),
                row("x", 'f', "x"),
                row("a", 'f', "new"),
            ]
        );
    }

    #[test]
    fn xattrs_travel_and_escaping_paths_are_refused() {
        let (_dir, s) = store();
        let with_xattr = layer(&s, &[E::Xattr("bin/ping", "security.capability", b"\x01")]);
        let mut out = Vec::new();
        squash_layers(s.blobs(), &[with_xattr], &mut out).unwrap();
        let mut archive = tar::Archive::new(&out[..]);
        let mut entries = archive.entries().unwrap();
        let mut entry = entries.next().unwrap().unwrap();
        let records: Vec<(String, Vec<u8>)> = entry
            .pax_extensions()
            .unwrap()
            .unwrap()
            .map(|r| {
                let r = r.unwrap();
                (r.key().unwrap().to_owned(), r.value_bytes().to_vec())
            })
            .collect();
        assert_eq!(
            records,
            [("SCHILY.xattr.security.capability".to_string(), vec![1u8])]
        );

        let mut raw = tar::Header::new_gnu();
        raw.as_old_mut().name[..5].copy_from_slice(b"../x\0");
        raw.set_size(0);
        raw.set_cksum();
        let mut bytes = raw.as_bytes().to_vec();
        bytes.extend([0u8; 1024]);
        let evil = s.blobs().put(&bytes).unwrap();
        let dangling = layer(&s, &[E::Hard("l", "missing")]);
        for layers in [[evil], [dangling]] {
            let err = squash_layers(s.blobs(), &layers, &mut Vec::new()).unwrap_err();
            assert!(matches!(err, StoreError::HostileArchive { .. }), "{err}");
        }
    }
}
