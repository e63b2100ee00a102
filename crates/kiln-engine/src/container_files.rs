//! A container's files as tar streams (`kiln cp`, `kiln export`, and the
//! Engine API's `/containers/{id}/archive` and `/export`): what a path
//! is, a path as a tar, the whole container as a tar, a tar unpacked
//! into a directory. Each runs on a thread rooted in the
//! container's root filesystem ([`kiln_runtime::in_container_root`]: the
//! running container's own mount namespace, or its overlay mounted
//! privately when stopped), so every path is resolved inside the
//! container by the kernel; container paths are taken from `/`, as
//! docker takes them.
//!
//! `kiln cp` adds the host's side ([`Engine::copy_to_host`],
//! [`Engine::copy_from_host`]) with docker's rules for where a copy lands
//! ([`landing`]); a daemon's client does that side itself and needs only
//! the tar streams.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use kiln_runtime::containers::ContainerRecord;
use kiln_runtime::ContainerRoot;

use crate::{Engine, EngineError};

/// What a container path is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathKind {
    Dir,
    File,
    Symlink,
    /// A device, fifo or socket.
    Other,
}

/// How `cp` copies.
#[derive(Clone, Copy, Debug, Default)]
pub struct CopyOptions {
    /// Follow the source if it is a symbolic link (`-L`); links inside
    /// are copied as links either way.
    pub follow_link: bool,
    /// Keep the owners (`-a`); otherwise what is copied belongs to root in
    /// the container, or to kiln's user on the host.
    pub keep_owners: bool,
}

/// Where a copy lands, by docker's rules, given what the destination is
/// (`Some(true)`: a directory, `Some(false)`: something else, `None`:
/// nothing): into an existing directory under the source's own name (its
/// contents only for `SRC/.`), else as the destination's name in its
/// parent. Returns (the directory to unpack in, the copy's top entry).
pub fn landing(
    source: &str,
    source_is_dir: bool,
    destination: &str,
    destination_is_dir: Option<bool>,
) -> Result<(String, String), EngineError> {
    let parent = |path: &str| {
        let trimmed = path.trim_end_matches('/');
        match Path::new(trimmed).parent().map(|p| p.display().to_string()) {
            Some(parent) if !parent.is_empty() => parent,
            _ if path.starts_with('/') => "/".to_owned(),
            _ => ".".to_owned(),
        }
    };
    match destination_is_dir {
        Some(true) => Ok((destination.to_owned(), own_name(source))),
        Some(false) if source_is_dir => Err(EngineError::Request(format!(
            "cannot copy a directory to a file: {destination}"
        ))),
        None if destination.ends_with('/') && !source_is_dir => Err(EngineError::Request(format!(
            "no such directory: {destination}"
        ))),
        Some(false) | None => Ok((parent(destination), own_name(destination))),
    }
}

/// The name a path's copy has in a tar: its last component, or `.` for
/// its contents (`dir/.`, `/`).
fn own_name(path: &str) -> String {
    if path.ends_with("/.") || path == "." {
        return ".".to_owned();
    }
    Path::new(path)
        .file_name()
        .map_or_else(|| ".".to_owned(), |n| n.to_string_lossy().into_owned())
}

/// A container path's `lstat`, and whether it leads to a directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathStat {
    pub kind: PathKind,
    /// Following a symbolic link (inside the container).
    pub is_dir: bool,
    pub size: u64,
    pub mode: u32,
    pub link_target: Option<PathBuf>,
}

impl Engine {
    /// What `path` is in the container (`None`: nothing is there).
    pub fn stat_container_path(
        &self,
        record: &ContainerRecord,
        path: &str,
    ) -> Result<Option<PathStat>, EngineError> {
        let path = container_path(path);
        self.in_root(record, move || {
            use std::os::unix::fs::PermissionsExt;
            let meta = match std::fs::symlink_metadata(&path) {
                Ok(meta) => meta,
                Err(e) if is_missing(&e) => return Ok(None),
                Err(e) => return Err(file_error("stat", &path, e)),
            };
            let kind = if meta.is_dir() {
                PathKind::Dir
            } else if meta.is_file() {
                PathKind::File
            } else if meta.file_type().is_symlink() {
                PathKind::Symlink
            } else {
                PathKind::Other
            };
            Ok(Some(PathStat {
                kind,
                is_dir: std::fs::metadata(&path).is_ok_and(|m| m.is_dir()),
                size: meta.len(),
                mode: meta.permissions().mode(),
                link_target: std::fs::read_link(&path).ok(),
            }))
        })
    }

    /// Writes `path` of the container to `out` as a tar whose top entry is
    /// `name` (default: the path's own name; `.` for `dir/.`): a
    /// directory with everything in it, links as links, unless
    /// `follow_link` and `path` itself is one. Owners, modes and times
    /// are the container's.
    pub fn archive_container_path(
        &self,
        record: &ContainerRecord,
        path: &str,
        name: Option<&str>,
        follow_link: bool,
        out: &mut dyn Write,
    ) -> Result<(), EngineError> {
        let name = name.map_or_else(|| own_name(path), str::to_owned);
        let path = container_path(path);
        let shown = path.clone();
        self.with_root(record, |root| {
            stream_tar(root, &shown, out, move |tar| {
                let path = if follow_link {
                    std::fs::canonicalize(&path).map_err(|e| missing_or(e, &path))?
                } else {
                    path
                };
                let meta = std::fs::symlink_metadata(&path).map_err(|e| missing_or(e, &path))?;
                let written = if meta.is_dir() {
                    append_dir(tar, &path, Path::new(&name))
                        .and_then(|()| append_tree(tar, &path, Path::new(&name)))
                } else if is_special(&meta) {
                    append_special(tar, &path, Path::new(&name))
                } else {
                    tar.append_path_with_name(&path, &name)
                };
                written.map_err(|e| file_error("archive", &path, e))
            })
        })
    }

    /// Writes the container's files to `out` as one tar (`docker
    /// export`): its rw layer over its image's, running or not, without
    /// what is mounted in it (volumes, binds, `/proc`), entries named
    /// from the root (`bin/sh`), sorted; sockets left out.
    pub fn export_container(
        &self,
        record: &ContainerRecord,
        out: &mut dyn Write,
    ) -> Result<(), EngineError> {
        let all = self.containers();
        let (upper, mount_point) = (all.upper_dir(&record.id), all.copy_mount_point(&record.id));
        let root = ContainerRoot::Layers {
            lower_dirs: &record.config.lower_dirs,
            upper: &upper,
            mount_point: &mount_point,
        };
        stream_tar(root, Path::new("/"), out, |tar| {
            append_tree(tar, Path::new("/"), Path::new(""))
                .map_err(|e| file_error("export", Path::new("/"), e))
        })
    }

    /// Unpacks the tar `input` into the container's directory `dir`
    /// (which must exist): entries replace what is there (never written
    /// through: a file the container left is removed first, so a link or
    /// device it planted is not followed), and none may lead outside
    /// `dir`. Owners are the tar's with `keep_owners`, else root's (as
    /// docker cp without `-a`).
    pub fn extract_into_container(
        &self,
        record: &ContainerRecord,
        dir: &str,
        keep_owners: bool,
        input: &mut dyn Read,
    ) -> Result<(), EngineError> {
        let dir = container_path(dir);
        let dir_shown = dir.clone();
        let (reader, mut writer) =
            std::io::pipe().map_err(|e| file_error("make a pipe for", Path::new("the copy"), e))?;
        std::thread::scope(|scope| {
            let consumer = scope.spawn(|| {
                self.in_root(record, move || {
                    if !std::fs::metadata(&dir).is_ok_and(|m| m.is_dir()) {
                        return Err(EngineError::Request(format!(
                            "{} is not a directory in the container",
                            dir.display()
                        )));
                    }
                    let mut tar = tar::Archive::new(reader);
                    tar.set_overwrite(true);
                    tar.set_preserve_permissions(true);
                    tar.set_preserve_mtime(true);
                    tar.set_preserve_ownerships(keep_owners);
                    tar.set_unpack_xattrs(false);
                    tar.unpack(&dir)
                        .map_err(|e| file_error("unpack into", &dir, e))?;
                    // What follows the end-of-archive blocks (a writer's
                    // padding, the second zero block tar-rs leaves unread)
                    // is read and dropped, so the copy never meets a
                    // closed pipe.
                    let mut rest = tar.into_inner();
                    std::io::copy(&mut rest, &mut std::io::sink())
                        .map(drop)
                        .map_err(|e| file_error("read the end of the archive for", &dir, e))
                })
            });
            let copied = std::io::copy(input, &mut writer);
            drop(writer);
            let consumed = consumer
                .join()
                .unwrap_or_else(|_| Err(EngineError::Request("the copy thread panicked".into())));
            consumed?;
            copied.map_err(|e| file_error("copy into", &dir_shown, e))?;
            Ok(())
        })
    }

    /// `kiln cp CONTAINER:PATH DEST`: the container's `path` on the host,
    /// landing by docker's rules ([`landing`]). The tar comes from the
    /// container's files and is unpacked as any untrusted tar: no entry
    /// outside its directory or through a link, files replaced rather
    /// than written through.
    pub fn copy_to_host(
        &self,
        record: &ContainerRecord,
        path: &str,
        destination: &Path,
        options: CopyOptions,
    ) -> Result<(), EngineError> {
        let Some(stat) = self.stat_container_path(record, path)? else {
            return Err(EngineError::Request(format!(
                "no such file or directory in container {}: {path}",
                record.name
            )));
        };
        let source_is_dir = match options.follow_link {
            true => stat.is_dir,
            false => stat.kind == PathKind::Dir,
        };
        let shown = destination.display().to_string();
        let destination_is_dir = match std::fs::metadata(destination) {
            Ok(meta) => Some(meta.is_dir()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(host_error("stat", destination, e)),
        };
        let (into, name) = landing(path, source_is_dir, &shown, destination_is_dir)?;
        let into = PathBuf::from(into);
        if !into.is_dir() {
            return Err(EngineError::Request(format!(
                "no such directory: {}",
                into.display()
            )));
        }
        let (reader, mut writer) =
            std::io::pipe().map_err(|e| host_error("make a pipe for", &into, e))?;
        std::thread::scope(|scope| {
            let consumer = scope.spawn(|| {
                let mut tar = tar::Archive::new(reader);
                tar.set_overwrite(true);
                tar.set_preserve_permissions(true);
                tar.set_preserve_mtime(true);
                tar.set_preserve_ownerships(options.keep_owners);
                tar.set_unpack_xattrs(false);
                tar.unpack(&into)
            });
            let archived = self.archive_container_path(
                record,
                path,
                Some(&name),
                options.follow_link,
                &mut writer,
            );
            drop(writer);
            let unpacked = consumer
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("the unpacking thread panicked")));
            archived?;
            unpacked.map_err(|e| host_error("unpack into", &into, e))
        })
    }

    /// `kiln cp SRC CONTAINER:PATH`: the host's `source` in the container,
    /// landing by docker's rules ([`landing`]).
    pub fn copy_from_host(
        &self,
        record: &ContainerRecord,
        source: &Path,
        path: &str,
        options: CopyOptions,
    ) -> Result<(), EngineError> {
        let meta = match options.follow_link {
            true => std::fs::metadata(source),
            false => std::fs::symlink_metadata(source),
        }
        .map_err(|e| host_error("read", source, e))?;
        let destination_is_dir = self.stat_container_path(record, path)?.map(|s| s.is_dir);
        let shown = source.display().to_string();
        let (into, top) = landing(&shown, meta.is_dir(), path, destination_is_dir)?;
        let source = match options.follow_link {
            true => std::fs::canonicalize(source).map_err(|e| host_error("read", source, e))?,
            false => source.to_owned(),
        };
        let (mut reader, writer) =
            std::io::pipe().map_err(|e| host_error("make a pipe for", &source, e))?;
        std::thread::scope(|scope| {
            let producer = scope.spawn(|| {
                let mut tar = tar::Builder::new(writer);
                tar.follow_symlinks(false);
                match meta.is_dir() {
                    true => tar.append_dir_all(&top, &source)?,
                    false => tar.append_path_with_name(&source, &top)?,
                }
                tar.into_inner().map(drop)
            });
            let extracted =
                self.extract_into_container(record, &into, options.keep_owners, &mut reader);
            drop(reader);
            let produced = producer
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("the archiving thread panicked")));
            extracted?;
            produced.map_err(|e| host_error("archive", &source, e))
        })
    }

    /// Runs `work` rooted in the container's root filesystem.
    fn in_root<T: Send>(
        &self,
        record: &ContainerRecord,
        work: impl FnOnce() -> Result<T, EngineError> + Send,
    ) -> Result<T, EngineError> {
        self.with_root(record, |root| kiln_runtime::in_container_root(root, work))
    }

    /// `use_root` given where the container's root filesystem is: the
    /// running container's own, or its overlay's parts when stopped.
    fn with_root<T>(
        &self,
        record: &ContainerRecord,
        use_root: impl FnOnce(ContainerRoot<'_>) -> T,
    ) -> T {
        let all = self.containers();
        let (upper, work_dir, mount_point) = (
            all.upper_dir(&record.id),
            all.work_dir(&record.id),
            all.copy_mount_point(&record.id),
        );
        let root = match record.running_pid() {
            Some(init_pid) => ContainerRoot::Running { init_pid },
            None => ContainerRoot::Stopped {
                lower_dirs: &record.config.lower_dirs,
                upper: &upper,
                work: &work_dir,
                mount_point: &mount_point,
            },
        };
        use_root(root)
    }
}

/// Writes to `out` the tar that `fill` makes on a thread rooted in the
/// container's `root` (see kiln-runtime's `in_container_root`), through
/// a pipe; `shown` names it in a failure to write.
fn stream_tar(
    root: ContainerRoot<'_>,
    shown: &Path,
    out: &mut dyn Write,
    fill: impl FnOnce(&mut tar::Builder<std::io::PipeWriter>) -> Result<(), EngineError> + Send,
) -> Result<(), EngineError> {
    let (mut reader, writer) =
        std::io::pipe().map_err(|e| file_error("make a pipe for", shown, e))?;
    std::thread::scope(|scope| {
        let producer = scope.spawn(|| {
            kiln_runtime::in_container_root(root, move || {
                let mut tar = tar::Builder::new(writer);
                tar.follow_symlinks(false);
                fill(&mut tar)?;
                tar.into_inner()
                    .map(drop)
                    .map_err(|e| file_error("archive", shown, e))
            })
        });
        let copied = std::io::copy(&mut reader, out);
        // (The reader is dropped here, so a producer blocked on a full
        // pipe after a failed copy gets EPIPE and ends.)
        drop(reader);
        let produced = producer
            .join()
            .unwrap_or_else(|_| Err(EngineError::Request("the archive thread panicked".into())));
        produced?;
        copied.map_err(|e| file_error("copy out", shown, e))?;
        Ok(())
    })
}

/// Appends what directory `dir` holds to `tar` as `name/...` (sorted,
/// links as links, sockets left out: a tar has no place for them).
fn append_tree<W: Write>(
    tar: &mut tar::Builder<W>,
    dir: &Path,
    name: &Path,
) -> std::io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        let path = entry.path();
        let entry_name = name.join(entry.file_name());
        let kind = entry.file_type()?;
        if kind.is_socket() {
            continue;
        }
        let appended = if kind.is_dir() {
            append_dir(tar, &path, &entry_name).and_then(|()| append_tree(tar, &path, &entry_name))
        } else if is_special(&entry.metadata()?) {
            append_special(tar, &path, &entry_name)
        } else {
            tar.append_path_with_name(&path, &entry_name)
        };
        // Named, so a failure says which file.
        appended.map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    }
    Ok(())
}

/// A directory's own entry, named `name/` as docker's archives name one.
fn append_dir<W: Write>(
    tar: &mut tar::Builder<W>,
    path: &Path,
    name: &Path,
) -> std::io::Result<()> {
    tar.append_dir(name.join(""), path)
}

fn is_special(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::FileTypeExt;
    let kind = meta.file_type();
    kind.is_fifo() || kind.is_char_device() || kind.is_block_device()
}

/// A fifo or device node as a header alone. (The tar crate's own
/// `append_path_with_name` names these by their source path, not the
/// name given: in a container's root, an absolute path it refuses.)
fn append_special<W: Write>(
    tar: &mut tar::Builder<W>,
    path: &Path,
    name: &Path,
) -> std::io::Result<()> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let meta = std::fs::symlink_metadata(path)?;
    let kind = meta.file_type();
    let mut header = tar::Header::new_gnu();
    header.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
    header.set_size(0);
    header.set_entry_type(if kind.is_fifo() {
        tar::EntryType::Fifo
    } else if kind.is_char_device() {
        tar::EntryType::Char
    } else {
        tar::EntryType::Block
    });
    let device = meta.rdev();
    header.set_device_major(nix::sys::stat::major(device) as u32)?;
    header.set_device_minor(nix::sys::stat::minor(device) as u32)?;
    tar.append_data(&mut header, name, std::io::empty())
}

/// A container path from `/` (docker's rule for relative ones).
fn container_path(path: &str) -> PathBuf {
    Path::new("/").join(path)
}

fn is_missing(error: &std::io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::ENOENT) | Some(libc::ENOTDIR)
    )
}

fn missing_or(error: std::io::Error, path: &Path) -> EngineError {
    if is_missing(&error) {
        EngineError::Request(format!(
            "no such file or directory in the container: {}",
            path.display()
        ))
    } else {
        file_error("read", path, error)
    }
}

fn host_error(what: &str, path: &Path, error: std::io::Error) -> EngineError {
    EngineError::Request(format!("{what} {}: {error}", path.display()))
}

fn file_error(op: &'static str, path: &Path, source: std::io::Error) -> EngineError {
    EngineError::ContainerFile {
        op,
        path: path.to_owned(),
        source,
    }
}

/// What happened to a path of a container over its image (`docker diff`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    Modified,
    Added,
    Deleted,
}

impl ChangeKind {
    /// The Engine API's number for it (and `docker diff`'s letter).
    pub fn code(self) -> (u8, char) {
        match self {
            ChangeKind::Modified => (0, 'C'),
            ChangeKind::Added => (1, 'A'),
            ChangeKind::Deleted => (2, 'D'),
        }
    }
}

impl Engine {
    /// The container's changes over its image, sorted by path: its upper
    /// dir walked (never following a link), each entry looked up in the
    /// image's layers without following links either (kiln-runtime's
    /// `LowerView`): there, it was modified; not there, added; a whiteout,
    /// deleted.
    pub fn container_changes(
        &self,
        record: &ContainerRecord,
    ) -> Result<Vec<(String, ChangeKind)>, EngineError> {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let upper = self.containers().upper_dir(&record.id);
        let lower = kiln_runtime::LowerView::new(record.config.lower_dirs.clone());
        let mut changes = Vec::new();
        let mut pending: Vec<Vec<std::ffi::OsString>> = vec![Vec::new()];
        while let Some(parts) = pending.pop() {
            let dir = parts.iter().fold(upper.clone(), |p, part| p.join(part));
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if is_missing(&e) => continue,
                Err(e) => return Err(file_error("list", &dir, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| file_error("list", &dir, e))?;
                let meta = entry
                    .metadata()
                    .map_err(|e| file_error("stat", &entry.path(), e))?;
                let mut path = parts.clone();
                path.push(entry.file_name());
                let shown = format!(
                    "/{}",
                    path.iter()
                        .map(|p| p.to_string_lossy())
                        .collect::<Vec<_>>()
                        .join("/")
                );
                let names: Vec<&std::ffi::OsStr> = path.iter().map(|p| p.as_os_str()).collect();
                let kind = if meta.file_type().is_char_device() && meta.rdev() == 0 {
                    ChangeKind::Deleted
                } else if lower.lookup_os(&names).is_some() {
                    ChangeKind::Modified
                } else {
                    ChangeKind::Added
                };
                changes.push((shown, kind));
                if meta.is_dir() {
                    pending.push(path);
                }
            }
        }
        changes.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(changes)
    }
}
