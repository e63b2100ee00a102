//! A directory that paths from an untrusted source (the Dockerfile, the
//! context, an image's layers) are resolved inside. Every symlink is
//! followed as it would be if the directory were `/` (`RESOLVE_IN_ROOT`
//! semantics, as BuildKit's fsutil resolves COPY sources): a link that
//! stays inside is followed there, an absolute one starts again at the
//! root, `..` stops at the root. Nothing is ever opened through a link on
//! the host: resolution walks descriptors, and files are opened with
//! `openat2(RESOLVE_IN_ROOT)`, so even a tree changed after resolving
//! cannot lead out.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{
    open, openat, openat2, readlinkat, AtFlags, OFlag, OpenHow, ResolveFlag, AT_FDCWD,
};
use nix::sys::stat::{fstat, fstatat, mknod, utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;

use crate::error::ContextError;

/// Linux's limit of symlinks followed in one resolution.
const MAX_LINKS: usize = 40;

/// Whether `error` is a resolution that met too many symlinks (a loop:
/// inside a root, `etc -> /etc` is one), as [`Root`]'s methods report it.
pub fn is_symlink_loop(error: &io::Error) -> bool {
    error.raw_os_error() == Some(Errno::ELOOP as i32)
}

/// An open directory that untrusted relative paths are resolved inside.
#[derive(Debug)]
pub struct Root {
    path: PathBuf,
    dir: OwnedFd,
}

fn resolve_flags() -> ResolveFlag {
    ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS
}

/// `path`'s components, without empty ones (`a//b/` is `a`, `b`).
fn components(path: &[u8]) -> VecDeque<OsString> {
    path.split(|&b| b == b'/')
        .filter(|part| !part.is_empty())
        .map(|part| OsString::from_vec(part.to_vec()))
        .collect()
}

/// `real` as a path openat2 accepts: `.` for the root itself.
fn or_dot(real: &Path) -> &Path {
    if real.as_os_str().is_empty() {
        Path::new(".")
    } else {
        real
    }
}

fn kind(mode: u32) -> SFlag {
    SFlag::from_bits_truncate(mode) & SFlag::S_IFMT
}

impl Root {
    /// Opens the directory `path` (the caller's own path: links in it are
    /// the user's and are followed).
    pub fn open(path: &Path) -> Result<Root, ContextError> {
        let dir = open(
            path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| ContextError::io(path, e.into()))?;
        Ok(Root {
            path: path.to_owned(),
            dir,
        })
    }

    /// The directory's path on the host.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The host path of `real`, a path [`Root::resolve`] returned (it has
    /// no symlink in it, so using it does not leave the root while the
    /// tree stays as it was; opening files goes through
    /// [`Root::open_file`] all the same).
    pub fn host_path(&self, real: &Path) -> PathBuf {
        if real.as_os_str().is_empty() {
            self.path.clone()
        } else {
            self.path.join(real)
        }
    }

    /// `rel` resolved inside the root, with each symlink followed as if
    /// the root were `/` (the last component only with `follow_last`).
    /// Returns the path relative to the root with no symlink in it (empty
    /// for the root itself), or `None` if something on the way does not
    /// exist or is not a directory.
    pub fn resolve(&self, rel: &Path, follow_last: bool) -> io::Result<Option<PathBuf>> {
        // names[i] is a directory whose descriptor is dirs[i].
        let mut names: Vec<OsString> = Vec::new();
        let mut dirs: Vec<OwnedFd> = Vec::new();
        let mut pending = components(rel.as_os_str().as_bytes());
        let mut links = 0;
        while let Some(name) = pending.pop_front() {
            match name.as_bytes() {
                b"." => continue,
                b".." => {
                    names.pop();
                    dirs.pop();
                    continue;
                }
                _ => {}
            }
            let parent = dirs.last().map_or(self.dir.as_fd(), |d| d.as_fd());
            let stat = match fstatat(parent, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(stat) => stat,
                Err(Errno::ENOENT | Errno::ENOTDIR) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            let last = pending.is_empty();
            let file_kind = kind(stat.st_mode);
            if file_kind == SFlag::S_IFLNK && (!last || follow_last) {
                links += 1;
                if links > MAX_LINKS {
                    return Err(Errno::ELOOP.into());
                }
                let target = readlinkat(parent, name.as_os_str())?;
                let target = target.as_bytes();
                if target.starts_with(b"/") {
                    names.clear();
                    dirs.clear();
                }
                for part in components(target).into_iter().rev() {
                    pending.push_front(part);
                }
                continue;
            }
            if last {
                names.push(name);
                break;
            }
            if file_kind != SFlag::S_IFDIR {
                return Ok(None);
            }
            let dir = openat(
                parent,
                name.as_os_str(),
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )?;
            names.push(name);
            dirs.push(dir);
        }
        Ok(Some(names.iter().collect()))
    }

    /// Opens the regular file at `real` (a resolved path) for reading,
    /// inside the root whatever happened to the tree since, never through
    /// a final symlink, never blocking on a FIFO.
    pub fn open_file(&self, real: &Path) -> io::Result<File> {
        let how = OpenHow::new()
            .flags(
                OFlag::O_RDONLY
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_NONBLOCK
                    | OFlag::O_NOCTTY
                    | OFlag::O_CLOEXEC,
            )
            .resolve(resolve_flags());
        let fd = openat2(&self.dir, or_dot(real), how)?;
        if kind(fstat(&fd)?.st_mode) != SFlag::S_IFREG {
            return Err(io::Error::other("not a regular file"));
        }
        Ok(File::from(fd))
    }

    /// Opens the directory at `real` (a resolved path) for reading its
    /// entries, inside the root, never through a final symlink.
    pub fn open_dir(&self, real: &Path) -> io::Result<OwnedFd> {
        let how = OpenHow::new()
            .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
            .resolve(resolve_flags());
        Ok(openat2(&self.dir, or_dot(real), how)?)
    }

    /// The names in directory `real` (a resolved path), read through a
    /// descriptor opened inside the root.
    pub fn list(&self, real: &Path) -> io::Result<Vec<OsString>> {
        let mut dir = Dir::from_fd(self.open_dir(real)?)?;
        let mut names = Vec::new();
        for entry in dir.iter() {
            let name = entry?.file_name().to_bytes().to_vec();
            if name != b"." && name != b".." {
                names.push(OsString::from_vec(name));
            }
        }
        Ok(names)
    }

    /// An `O_PATH` descriptor of `rel` resolved inside the root, symlinks
    /// (the last one too) followed as if the root were `/`: what a bind
    /// mount of `rel` must show.
    pub fn open_path(&self, rel: &Path) -> io::Result<OwnedFd> {
        let how = OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
            .resolve(resolve_flags());
        Ok(openat2(&self.dir, or_dot(rel), how)?)
    }

    /// Copies `real` (a resolved path) to `to` on the host, which must
    /// not exist yet, with modes, owners and times (device nodes left
    /// out). Reads go through descriptors only: symlinks are copied as
    /// links, never followed, so nothing outside the root is read.
    pub fn copy_to(&self, real: &Path, to: &Path) -> io::Result<()> {
        let (parent, name) = self.parent_of(real)?;
        copy_at(parent.as_fd(), name, to)
    }

    /// An `O_PATH` descriptor of `real`'s directory, opened inside the
    /// root, and `real`'s name in it (`.` for the root itself).
    fn parent_of<'p>(&self, real: &'p Path) -> io::Result<(OwnedFd, &'p OsStr)> {
        let (parent, name) = match (real.parent(), real.file_name()) {
            (Some(parent), Some(name)) => (parent, name),
            _ => (Path::new(""), OsStr::new(".")),
        };
        let how = OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
            .resolve(resolve_flags());
        Ok((openat2(&self.dir, or_dot(parent), how)?, name))
    }
}

/// What an entry of a [`Root`] is, as `lstat` sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryStat {
    pub kind: EntryKind,
    /// Permission bits (and set-id, sticky).
    pub mode: u32,
    /// Seconds since the epoch.
    pub mtime: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File,
    Symlink(PathBuf),
    /// A device, FIFO or socket.
    Other,
}

impl Root {
    /// The entry at `real` (a resolved path), not following a final link,
    /// read through its parent's descriptor opened inside the root.
    pub fn entry(&self, real: &Path) -> io::Result<EntryStat> {
        let (parent, name) = self.parent_of(real)?;
        let stat = fstatat(&parent, name, AtFlags::AT_SYMLINK_NOFOLLOW)?;
        let kind = match kind(stat.st_mode) {
            SFlag::S_IFDIR => EntryKind::Dir,
            SFlag::S_IFREG => EntryKind::File,
            SFlag::S_IFLNK => EntryKind::Symlink(PathBuf::from(readlinkat(&parent, name)?)),
            _ => EntryKind::Other,
        };
        Ok(EntryStat {
            kind,
            mode: stat.st_mode & 0o7777,
            mtime: stat.st_mtime,
        })
    }
}

/// Copies entry `name` of directory `dir` to `to` (see [`Root::copy_to`]).
fn copy_at(dir: BorrowedFd<'_>, name: &OsStr, to: &Path) -> io::Result<()> {
    let stat = fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)?;
    let file_kind = kind(stat.st_mode);
    match file_kind {
        SFlag::S_IFDIR => {
            let fd = openat(
                dir,
                name,
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )?;
            std::fs::create_dir(to)?;
            let mut entries = Dir::from_fd(fd.try_clone()?)?;
            for entry in entries.iter() {
                let entry = entry?;
                let child = OsStr::from_bytes(entry.file_name().to_bytes());
                if child != "." && child != ".." {
                    copy_at(fd.as_fd(), child, &to.join(child))?;
                }
            }
        }
        SFlag::S_IFREG => {
            let fd = openat(
                dir,
                name,
                OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
                Mode::empty(),
            )?;
            let mut target = File::create_new(to)?;
            io::copy(&mut File::from(fd), &mut target)?;
        }
        SFlag::S_IFLNK => std::os::unix::fs::symlink(readlinkat(dir, name)?, to)?,
        // A device node from an untrusted tree would give whoever gets the
        // copy the host's device: left out.
        SFlag::S_IFCHR | SFlag::S_IFBLK => return Ok(()),
        // FIFOs and sockets: the node, not what it leads to.
        _ => mknod(to, file_kind, Mode::empty(), 0)?,
    }
    std::os::unix::fs::lchown(to, Some(stat.st_uid), Some(stat.st_gid))?;
    if file_kind != SFlag::S_IFLNK {
        // After the chown, which clears set-id bits.
        std::fs::set_permissions(to, std::fs::Permissions::from_mode(stat.st_mode & 0o7777))?;
    }
    let times = |secs, nsecs| TimeSpec::new(secs, nsecs);
    utimensat(
        AT_FDCWD,
        to,
        &times(stat.st_atime, stat.st_atime_nsec),
        &times(stat.st_mtime, stat.st_mtime_nsec),
        UtimensatFlags::NoFollowSymlink,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    #[test]
    fn links_resolve_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("secret"), "host").unwrap();
        let ctx = dir.path().join("ctx");
        fs::create_dir_all(ctx.join("sub")).unwrap();
        fs::write(ctx.join("sub/f"), "in").unwrap();
        symlink("sub", ctx.join("alias")).unwrap();
        symlink("/sub", ctx.join("abs")).unwrap();
        symlink(&outside, ctx.join("host")).unwrap();
        symlink("../outside", ctx.join("up")).unwrap();
        symlink("sub/f", ctx.join("flink")).unwrap();
        symlink("loop", ctx.join("loop")).unwrap();
        let root = Root::open(&ctx).unwrap();
        let resolve = |p: &str, follow| root.resolve(Path::new(p), follow).unwrap();
        assert_eq!(resolve("alias/f", true), Some("sub/f".into()));
        assert_eq!(resolve("abs/f", true), Some("sub/f".into()));
        assert_eq!(resolve("host/secret", true), None);
        assert_eq!(resolve("up/secret", true), None);
        assert_eq!(resolve("../../sub/../sub/./f", true), Some("sub/f".into()));
        assert_eq!(resolve("flink", true), Some("sub/f".into()));
        assert_eq!(resolve("flink", false), Some("flink".into()));
        assert_eq!(resolve("", true), Some(PathBuf::new()));
        assert_eq!(resolve("sub/f/x", true), None);
        assert!(is_symlink_loop(
            &root.resolve(Path::new("loop"), true).unwrap_err()
        ));
        let mut read = String::new();
        use std::io::Read;
        root.open_file(Path::new("sub/f"))
            .unwrap()
            .read_to_string(&mut read)
            .unwrap();
        assert_eq!(read, "in");
        assert!(root.open_file(Path::new("host/secret")).is_err());
        assert!(root.open_file(Path::new("flink")).is_err());
        assert!(root.open_path(Path::new("host/secret")).is_err());
        assert!(root.open_path(Path::new("up/secret")).is_err());
        assert!(root.open_path(Path::new("alias/f")).is_ok());
        assert_eq!(
            root.list(Path::new("sub")).unwrap(),
            vec![OsString::from("f")]
        );
    }

    #[test]
    fn copies_out_through_descriptors_links_as_links() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = dir.path().join("ctx");
        fs::create_dir_all(ctx.join("sub/inner")).unwrap();
        fs::write(ctx.join("sub/f"), "in").unwrap();
        symlink("/etc/passwd", ctx.join("sub/host")).unwrap();
        nix::unistd::mkfifo(&ctx.join("sub/fifo"), Mode::from_bits_truncate(0o600)).unwrap();
        let root = Root::open(&ctx).unwrap();
        let to = dir.path().join("copy");
        root.copy_to(Path::new("sub"), &to).unwrap();
        assert_eq!(fs::read_to_string(to.join("f")).unwrap(), "in");
        assert_eq!(
            fs::read_link(to.join("host")).unwrap(),
            Path::new("/etc/passwd")
        );
        assert!(to.join("inner").is_dir());
        use std::os::unix::fs::FileTypeExt;
        assert!(fs::symlink_metadata(to.join("fifo"))
            .unwrap()
            .file_type()
            .is_fifo());
        // The whole root, and a single file.
        root.copy_to(Path::new(""), &dir.path().join("all"))
            .unwrap();
        assert!(dir.path().join("all/sub/f").is_file());
        root.copy_to(Path::new("sub/f"), &dir.path().join("one"))
            .unwrap();
        assert_eq!(fs::read_to_string(dir.path().join("one")).unwrap(), "in");
    }
}
