//! Work on a container's files from kiln (`kiln cp`, and the Engine API's
//! archive endpoints later): a closure runs on a thread of its own whose
//! root directory is the container's root filesystem, so every path it
//! opens, every `..` and every symbolic link the container planted
//! resolves inside the container, by the kernel, as for a process of the
//! container. The rest of kiln is untouched: a thread can take another
//! root (and mount namespace) once it stops sharing its filesystem
//! context with the others (`unshare(CLONE_FS)`), and nothing of it
//! outlives the thread.
//!
//! - A running container: the thread joins its init's mount namespace
//!   (by a descriptor taken under a pidfd check, as `exec` does), which
//!   makes the container's root its root: the container's view, with its
//!   bind mounts and tmpfs mounts, as `docker cp` sees it.
//! - A stopped one: the thread makes a private mount namespace, mounts
//!   the container's overlay (its image's layers and its own rw layer)
//!   there, `nodev`, and `chroot`s into it. The mount is gone with the
//!   thread's namespace; the host never sees it.
//! - Its layers only (`export`, running or not): the same, but the rw
//!   layer is one more lower dir of a read-only overlay, so neither the
//!   container's mounts (volumes, `/proc`) nor its work dir are touched.
//!
//! The thread stays outside the container's pid namespace and cgroups: no
//! process of the container can see or signal it. What it must not do is
//! open device nodes the container made (the container's device cgroup
//! does not apply to it); the stopped rootfs is `nodev`, and callers
//! create files rather than write through what is there (a tar's unpack
//! replaces, it does not open an existing file for writing).

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{open, OFlag};
use nix::sys::stat::Mode;

use crate::error::RuntimeError;

/// Where a container's root filesystem is.
#[derive(Debug, Clone, Copy)]
pub enum ContainerRoot<'a> {
    /// Running: its pid 1 (in kiln's pid namespace).
    Running { init_pid: i32 },
    /// Stopped: its overlay's parts (lower dirs top-most first).
    Stopped {
        lower_dirs: &'a [PathBuf],
        upper: &'a Path,
        work: &'a Path,
        /// Where kiln may mount it (in the private namespace; made if
        /// missing).
        mount_point: &'a Path,
    },
    /// Its files as its layers hold them, read-only: the rw layer over
    /// the image's (top-most first), without the container's mounts.
    Layers {
        lower_dirs: &'a [PathBuf],
        upper: &'a Path,
        mount_point: &'a Path,
    },
}

/// Runs `work` on a thread whose root is the container's (see the
/// module's notes), and returns what it returns.
pub fn in_container_root<T: Send, E: From<RuntimeError> + Send>(
    root: ContainerRoot<'_>,
    work: impl FnOnce() -> Result<T, E> + Send,
) -> Result<T, E> {
    crate::require_root()?;
    // Opened (and checked) here, where a failure is the caller's error.
    let namespace = match root {
        ContainerRoot::Running { init_pid } => Some(crate::exec::mount_namespace(init_pid)?),
        ContainerRoot::Stopped { .. } | ContainerRoot::Layers { .. } => None,
    };
    std::thread::scope(|scope| {
        let thread = scope.spawn(move || {
            match (namespace, root) {
                (Some(fd), _) => enter_namespace(&fd)?,
                (
                    None,
                    ContainerRoot::Stopped {
                        lower_dirs,
                        upper,
                        work: work_dir,
                        mount_point,
                    },
                ) => mount_and_chroot(lower_dirs, Some((upper, work_dir)), mount_point)?,
                (
                    None,
                    ContainerRoot::Layers {
                        lower_dirs,
                        upper,
                        mount_point,
                    },
                ) => {
                    let mut dirs = vec![upper.to_path_buf()];
                    dirs.extend_from_slice(lower_dirs);
                    mount_and_chroot(&dirs, None, mount_point)?
                }
                (None, ContainerRoot::Running { init_pid }) => {
                    return Err(RuntimeError::InvalidSpec(format!(
                        "no mount namespace of pid {init_pid}"
                    ))
                    .into())
                }
            }
            work()
        });
        thread.join().unwrap_or_else(|_| {
            Err(RuntimeError::InvalidSpec("the container files' thread panicked".into()).into())
        })
    })
}

fn unshare(flags: libc::c_int, what: &'static str) -> Result<(), RuntimeError> {
    // SAFETY: integer argument only; affects the calling thread.
    if unsafe { libc::unshare(flags) } < 0 {
        return Err(RuntimeError::sys(what, nix::errno::Errno::last()));
    }
    Ok(())
}

fn enter_namespace(fd: &OwnedFd) -> Result<(), RuntimeError> {
    unshare(libc::CLONE_FS, "unshare the thread's filesystem context")?;
    crate::sys::setns(fd.as_raw_fd(), libc::CLONE_NEWNS)
        .map_err(|e| RuntimeError::sys("join the container's mount namespace", e))?;
    // (setns made the namespace's root this thread's root and cwd.)
    Ok(())
}

/// With `upper` (the rw layer and its work dir) a writable overlay, else
/// a read-only one of `lower_dirs` alone.
fn mount_and_chroot(
    lower_dirs: &[PathBuf],
    upper: Option<(&Path, &Path)>,
    mount_point: &Path,
) -> Result<(), RuntimeError> {
    unshare(
        libc::CLONE_FS | libc::CLONE_NEWNS,
        "unshare a mount namespace for the copy",
    )?;
    crate::sys::make_mounts_private()
        .map_err(|e| RuntimeError::sys("make the copy's mounts private", e))?;
    std::fs::create_dir_all(mount_point).map_err(|e| RuntimeError::io("create", mount_point, e))?;
    // Opened in this namespace (overlayfs refuses a descriptor of
    // another's mount), passed as /proc/self/fd/N: no escaping of `:` or
    // `,`, and a short option string. Kept open until mounted.
    let mut fds: Vec<OwnedFd> = Vec::new();
    let mut reserve = |path: &Path| -> Result<String, RuntimeError> {
        let fd = open(
            path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| RuntimeError::io("open", path, e.into()))?;
        let name = format!("/proc/self/fd/{}", fd.as_raw_fd());
        fds.push(fd);
        Ok(name)
    };
    let mut lowers = Vec::new();
    for dir in lower_dirs {
        lowers.push(reserve(dir)?);
    }
    // overlayfs needs a lower dir, and two without an upper one (an image
    // of no layer; a rw layer over nothing).
    if lowers.len() < if upper.is_some() { 1 } else { 2 } {
        let empty = mount_point.join(".empty-lower");
        std::fs::create_dir_all(&empty).map_err(|e| RuntimeError::io("create", &empty, e))?;
        lowers.push(reserve(&empty)?);
    }
    let (data, read_only) = match upper {
        Some((upper, work)) => {
            let upper = reserve(upper)?;
            let data = crate::prepare::overlay_mount_data(&lowers, &upper, &reserve(work)?);
            (data, 0)
        }
        None => (
            crate::prepare::read_only_overlay_mount_data(&lowers),
            libc::MS_RDONLY,
        ),
    };
    let target = c_path(mount_point)?;
    let data = CString::new(data).map_err(|_| RuntimeError::InvalidSpec("NUL in a path".into()))?;
    crate::sys::mount(
        Some(c"overlay"),
        &target,
        Some(c"overlay"),
        libc::MS_NODEV | libc::MS_NOSUID | read_only,
        Some(&data),
    )
    .map_err(|e| RuntimeError::sys("mount the container's rootfs for the copy", e))?;
    drop(fds);
    std::os::unix::fs::chroot(mount_point)
        .map_err(|e| RuntimeError::io("chroot", mount_point, e))?;
    std::env::set_current_dir("/").map_err(|e| RuntimeError::io("chdir", "/", e))
}

fn c_path(path: &Path) -> Result<CString, RuntimeError> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| RuntimeError::InvalidSpec(format!("{} contains a NUL byte", path.display())))
}
