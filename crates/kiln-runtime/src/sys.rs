//! The narrow, typed syscall layer used between `clone` and `execve`.
//!
//! Everything here may run in a child cloned from a multi-threaded process,
//! so every function is a thin wrapper over one or two raw syscalls: no
//! allocation, no locks, no panics (only async-signal-safe work). Paths
//! arrive as `&CStr` prepared by the parent.

use std::ffi::CStr;
use std::os::fd::RawFd;
use std::ptr;

use libc::{c_int, c_ulong};
use nix::errno::Errno;

pub type SysResult = Result<(), Errno>;

fn check(ret: c_int) -> SysResult {
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

fn check_long(ret: libc::c_long) -> SysResult {
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

fn opt_ptr(value: Option<&CStr>) -> *const libc::c_char {
    value.map_or(ptr::null(), CStr::as_ptr)
}

pub fn mount(
    source: Option<&CStr>,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: c_ulong,
    data: Option<&CStr>,
) -> SysResult {
    // SAFETY: all pointers are NUL-terminated strings or null.
    check(unsafe {
        libc::mount(
            opt_ptr(source),
            target.as_ptr(),
            opt_ptr(fstype),
            flags,
            opt_ptr(data).cast(),
        )
    })
}

/// Remounts the bind mount at `target` read-only, keeping its `nosuid`,
/// `nodev`, `noexec` and atime flags (a remount sets every per-mount flag,
/// so those not passed would be cleared), as runc does for read-only paths.
pub fn remount_readonly(target: &CStr) -> SysResult {
    let mut st = KernelStatfs::default();
    // SAFETY: `st` has the kernel's `struct statfs` layout; path is
    // NUL-terminated.
    check_long(unsafe { libc::syscall(libc::SYS_statfs, target.as_ptr(), &mut st) })?;
    let have = st.f_flags as c_ulong;
    let mut flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY;
    for (st_flag, ms_flag) in [
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ] {
        if have & st_flag != 0 {
            flags |= ms_flag;
        }
    }
    mount(None, target, None, flags, None)
}

/// The kernel's `struct statfs` (`asm-generic/statfs.h`): libc's hides
/// `f_flags`, and glibc's `statvfs` may read `/proc/mounts`.
#[repr(C)]
#[derive(Default)]
struct KernelStatfs {
    f_type: libc::c_long,
    f_bsize: libc::c_long,
    f_blocks: c_ulong,
    f_bfree: c_ulong,
    f_bavail: c_ulong,
    f_files: c_ulong,
    f_ffree: c_ulong,
    f_fsid: [c_int; 2],
    f_namelen: libc::c_long,
    f_frsize: libc::c_long,
    f_flags: libc::c_long,
    f_spare: [libc::c_long; 4],
}

/// Makes every mount of this (new) namespace a slave of its peer group,
/// as runc does first: mounts and unmounts made here, down to the lazy
/// unmount of the old root, never propagate back to the host's mounts,
/// while the host's later mounts still reach us.
pub fn make_mounts_slave() -> SysResult {
    mount(None, c"/", None, libc::MS_SLAVE | libc::MS_REC, None)
}

/// Makes every mount of this (new) namespace private: nothing mounted
/// here reaches any other namespace, nor theirs this one.
pub fn make_mounts_private() -> SysResult {
    mount(None, c"/", None, libc::MS_PRIVATE | libc::MS_REC, None)
}

/// Creates `path` (`O_EXCL`, no symlink followed) holding `data`, owned by
/// `uid:gid` with `mode`.
pub fn write_new_file(
    path: &CStr,
    data: &[u8],
    mode: libc::mode_t,
    uid: libc::uid_t,
    gid: libc::gid_t,
) -> SysResult {
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: NUL-terminated path.
    let fd = unsafe { libc::open(path.as_ptr(), flags, 0o600 as libc::c_uint) };
    if fd < 0 {
        return Err(Errno::last());
    }
    let result = write_fully(fd, data)
        // SAFETY: integer arguments on a descriptor we own.
        .and_then(|()| check(unsafe { libc::fchown(fd, uid, gid) }))
        .and_then(|()| check(unsafe { libc::fchmod(fd, mode) }));
    close(fd);
    result
}

fn write_fully(fd: RawFd, mut data: &[u8]) -> SysResult {
    while !data.is_empty() {
        // SAFETY: pointer and length describe `data`.
        let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        if n < 0 {
            match Errno::last() {
                Errno::EINTR => continue,
                e => return Err(e),
            }
        }
        data = &data[n as usize..];
    }
    Ok(())
}

/// Installs a seccomp BPF program for this thread (the whole process
/// here). Without no_new_privs this needs CAP_SYS_ADMIN, so the command
/// calls it before dropping capabilities.
pub fn install_seccomp(program: &[seccompiler::sock_filter]) -> SysResult {
    let prog = libc::sock_fprog {
        len: program.len() as libc::c_ushort,
        // seccompiler's sock_filter has libc's layout (linux/filter.h).
        filter: program.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `prog` points at `program`, alive during the call; the
    // kernel copies the program.
    check_long(unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0 as c_ulong,
            &prog as *const libc::sock_fprog,
        )
    })
}

/// The kernel's `struct prctl_mm_map` (`linux/prctl.h`).
#[repr(C)]
pub struct MmMap {
    pub start_code: u64,
    pub end_code: u64,
    pub start_data: u64,
    pub end_data: u64,
    pub start_brk: u64,
    pub brk: u64,
    pub start_stack: u64,
    pub arg_start: u64,
    pub arg_end: u64,
    pub env_start: u64,
    pub env_end: u64,
    /// With `auxv_size` 0 the auxiliary vector stays as it is.
    pub auxv: *mut u64,
    pub auxv_size: u32,
    /// `u32::MAX`: keep `/proc/self/exe`.
    pub exe_fd: u32,
}

/// `prctl(PR_SET_MM, PR_SET_MM_MAP, map)`.
pub fn set_mm_map(map: &MmMap) -> SysResult {
    // SAFETY: `map` has the kernel's layout and lives during the call.
    check(unsafe {
        libc::prctl(
            libc::PR_SET_MM,
            libc::PR_SET_MM_MAP as c_ulong,
            map as *const MmMap,
            std::mem::size_of::<MmMap>() as c_ulong,
            0 as c_ulong,
        )
    })
}

/// `prctl(PR_SET_NAME)`: the thread's name, 15 bytes at most.
pub fn set_name(name: &CStr) -> SysResult {
    prctl(libc::PR_SET_NAME, name.as_ptr() as c_ulong)
}

/// The current program break (`brk(0)` returns it).
pub fn current_brk() -> u64 {
    // SAFETY: brk(0) changes nothing.
    unsafe { libc::syscall(libc::SYS_brk, 0usize) as u64 }
}

/// Attaches the detached mount tree `tree` (from `open_tree`) at `target`.
pub fn move_mount_tree(tree: RawFd, target: &CStr) -> SysResult {
    // SAFETY: NUL-terminated paths; the kernel only reads them.
    check(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree,
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH,
        ) as libc::c_int
    })
}

pub fn umount_detach(target: &CStr) -> SysResult {
    // SAFETY: NUL-terminated path.
    check(unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) })
}

/// `pivot_root(".", ".")`: stacks the old root on the new one, so no
/// `put_old` directory has to be created inside the rootfs.
pub fn pivot_root_here() -> SysResult {
    let dot = c".";
    // SAFETY: NUL-terminated paths.
    check_long(unsafe { libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) })
}

/// Opens the directory `path` (`O_PATH`) and moves it onto descriptor `slot`.
pub fn reopen_dir_at(path: &CStr, slot: RawFd) -> SysResult {
    let flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC;
    // SAFETY: NUL-terminated path.
    let fd = unsafe { libc::open(path.as_ptr(), flags) };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: integer arguments only.
    let result = check(unsafe { libc::dup3(fd, slot, libc::O_CLOEXEC) });
    close(fd);
    result
}

/// Marks the mount at `/` in the fanotify group `group` for what reads
/// it: a file or directory read, one opened read-only and closed (a
/// library mapped, a directory listed, a file only opened), a program
/// executed.
pub fn watch_reads_of_root(group: RawFd) -> SysResult {
    let mask = libc::FAN_ACCESS | libc::FAN_CLOSE_NOWRITE | libc::FAN_OPEN_EXEC | libc::FAN_ONDIR;
    // SAFETY: NUL-terminated path; the group is a descriptor we hold.
    check(unsafe {
        libc::fanotify_mark(
            group,
            libc::FAN_MARK_ADD | libc::FAN_MARK_MOUNT,
            mask,
            libc::AT_FDCWD,
            c"/".as_ptr(),
        )
    })
}

pub fn chdir(path: &CStr) -> SysResult {
    // SAFETY: NUL-terminated path.
    check(unsafe { libc::chdir(path.as_ptr()) })
}

/// `mkdir`, treating an existing entry as success.
pub fn mkdir_exist_ok(path: &CStr, mode: libc::mode_t) -> SysResult {
    // SAFETY: NUL-terminated path.
    match check(unsafe { libc::mkdir(path.as_ptr(), mode) }) {
        Err(Errno::EEXIST) => Ok(()),
        other => other,
    }
}

/// Creates an empty file if nothing exists at `path`.
pub fn touch(path: &CStr, mode: libc::mode_t) -> SysResult {
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_CLOEXEC | libc::O_NOFOLLOW;
    // SAFETY: NUL-terminated path.
    let fd = unsafe { libc::open(path.as_ptr(), flags, mode as libc::c_uint) };
    if fd < 0 {
        return match Errno::last() {
            Errno::EEXIST | Errno::ELOOP => Ok(()),
            e => Err(e),
        };
    }
    close(fd);
    Ok(())
}

pub fn mknod_char(path: &CStr, mode: libc::mode_t, major: u32, minor: u32) -> SysResult {
    let dev = libc::makedev(major, minor);
    // SAFETY: NUL-terminated path.
    check(unsafe { libc::mknod(path.as_ptr(), libc::S_IFCHR | mode, dev) })
}

pub fn symlink(target: &CStr, link: &CStr) -> SysResult {
    // SAFETY: NUL-terminated paths.
    check(unsafe { libc::symlink(target.as_ptr(), link.as_ptr()) })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    Other,
}

/// What is at `path` (following symlinks), `Err(ENOENT)` if nothing.
pub fn kind(path: &CStr) -> Result<Kind, Errno> {
    // SAFETY: zeroed stat is a valid out-buffer; path is NUL-terminated.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    check(unsafe { libc::stat(path.as_ptr(), &mut st) })?;
    if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
        Ok(Kind::Dir)
    } else {
        Ok(Kind::Other)
    }
}

pub fn sethostname(name: &[u8]) -> SysResult {
    // SAFETY: pointer and length describe `name`.
    check(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) })
}

/// Brings `lo` up in the current network namespace.
pub fn loopback_up() -> SysResult {
    // SAFETY: plain socket/ioctl calls on a zeroed, correctly named ifreq.
    unsafe {
        let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if sock < 0 {
            return Err(Errno::last());
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        let mut result = check(libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut req));
        if result.is_ok() {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            result = check(libc::ioctl(sock, libc::SIOCSIFFLAGS, &req));
        }
        close(sock);
        result
    }
}

fn prctl(option: c_int, arg: c_ulong) -> SysResult {
    // SAFETY: prctl with integer arguments only.
    check(unsafe { libc::prctl(option, arg, 0 as c_ulong, 0 as c_ulong, 0 as c_ulong) })
}

pub fn set_parent_death_signal(signal: c_int) -> SysResult {
    prctl(libc::PR_SET_PDEATHSIG, signal as c_ulong)
}

/// Joins the namespace `fd` (a `/proc/PID/ns/*` descriptor) of kind
/// `nstype` (`CLONE_NEW*`). A pid namespace applies to children only.
pub fn setns(fd: RawFd, nstype: c_int) -> SysResult {
    // SAFETY: integer arguments only.
    check(unsafe { libc::setns(fd, nstype) })
}

pub fn set_not_dumpable() -> SysResult {
    prctl(libc::PR_SET_DUMPABLE, 0)
}

pub fn setrlimit(resource: u32, soft: u64, hard: u64) -> SysResult {
    let limit = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: a valid pointer to a local struct; no allocation.
    check(unsafe { libc::setrlimit(resource as _, &limit) })
}

pub fn set_no_new_privs() -> SysResult {
    prctl(libc::PR_SET_NO_NEW_PRIVS, 1)
}

pub fn drop_bounding_cap(cap: u32) -> SysResult {
    match prctl(libc::PR_CAPBSET_DROP, cap as c_ulong) {
        // A capability this kernel does not know is already absent.
        Err(Errno::EINVAL) => Ok(()),
        other => other,
    }
}

pub fn clear_ambient_caps() -> SysResult {
    // SAFETY: prctl with integer arguments only.
    check(unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as c_ulong,
            0 as c_ulong,
            0 as c_ulong,
            0 as c_ulong,
        )
    })
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Sets the effective, permitted and inheritable sets (64-bit masks).
pub fn capset(effective: u64, permitted: u64, inheritable: u64) -> SysResult {
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [
        CapData {
            effective: effective as u32,
            permitted: permitted as u32,
            inheritable: inheritable as u32,
        },
        CapData {
            effective: (effective >> 32) as u32,
            permitted: (permitted >> 32) as u32,
            inheritable: (inheritable >> 32) as u32,
        },
    ];
    // SAFETY: v3 header with two data structs, as the ABI requires.
    check_long(unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) })
}

// The credential calls are raw syscalls: glibc's wrappers believe the
// process is still multi-threaded (as the caller was) and broadcast the
// change to every thread under a lock another caller thread may have held
// at clone time, which hangs. The raw syscall changes this single thread,
// which is the whole process here.

pub fn setgroups(gids: &[libc::gid_t]) -> SysResult {
    // SAFETY: pointer and length describe `gids`.
    check_long(unsafe { libc::syscall(libc::SYS_setgroups, gids.len(), gids.as_ptr()) })
}

pub fn setresgid(gid: libc::gid_t) -> SysResult {
    // SAFETY: integer arguments only.
    check_long(unsafe { libc::syscall(libc::SYS_setresgid, gid, gid, gid) })
}

pub fn setresuid(uid: libc::uid_t) -> SysResult {
    // SAFETY: integer arguments only.
    check_long(unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) })
}

pub fn setsid() {
    // SAFETY: no arguments; failure (already a leader) is harmless.
    unsafe { libc::setsid() };
}

pub fn umask(mask: libc::mode_t) {
    // SAFETY: integer argument only.
    unsafe { libc::umask(mask) };
}

pub fn dup2(from: RawFd, to: RawFd) -> SysResult {
    // SAFETY: integer arguments only.
    check(unsafe { libc::dup2(from, to) })
}

pub fn close(fd: RawFd) {
    // SAFETY: closing a descriptor this process owns.
    unsafe { libc::close(fd) };
}

/// Closes every descriptor from `first` on except those in `keep`
/// (sorted ascending), so nothing the parent had open (other containers'
/// pipes, snapshot dirs) leaks into the container.
pub fn close_fds_except(first: RawFd, keep: &[RawFd]) {
    let mut start = first;
    for &fd in keep {
        if fd >= start {
            if fd > start {
                close_range(start, fd - 1);
            }
            start = fd + 1;
        }
    }
    close_range(start, RawFd::MAX);
}

fn close_range(first: RawFd, last: RawFd) {
    // SAFETY: integer arguments only.
    let ret = unsafe { libc::syscall(libc::SYS_close_range, first as u32, last as u32, 0u32) };
    if ret < 0 {
        // Kernels before 5.9: close one by one up to a sane bound.
        let last = last.min(65_536);
        for fd in first..=last {
            close(fd);
        }
    }
}

/// Signals the init waits for (and forwards, except SIGCHLD).
pub fn init_signal_set() -> libc::sigset_t {
    // SAFETY: sigset manipulation on a local value.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [
            libc::SIGCHLD,
            libc::SIGTERM,
            libc::SIGINT,
            libc::SIGHUP,
            libc::SIGQUIT,
            libc::SIGUSR1,
            libc::SIGUSR2,
            libc::SIGWINCH,
        ] {
            libc::sigaddset(&mut set, sig);
        }
        set
    }
}

pub fn block_signals(set: &libc::sigset_t) -> SysResult {
    // SAFETY: valid set pointer.
    check(unsafe { libc::sigprocmask(libc::SIG_BLOCK, set, ptr::null_mut()) })
}

/// Empties the signal mask and resets every disposition to default, so the
/// command does not inherit the caller's ignored signals (Rust ignores
/// SIGPIPE, for one).
pub fn reset_signals() {
    // SAFETY: sigset manipulation on a local value; signal() with SIG_DFL.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, ptr::null_mut());
        for sig in 1..65 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
    }
}

/// Waits for one of `set`; returns the signal number.
pub fn wait_signal(set: &libc::sigset_t) -> c_int {
    loop {
        // SAFETY: valid set pointer; info may be null.
        let sig = unsafe { libc::sigwaitinfo(set, ptr::null_mut()) };
        if sig > 0 {
            return sig;
        }
    }
}

/// A raw `fork` (clone with SIGCHLD only). glibc's `fork` takes the
/// allocator's and stdio's locks for its atfork handling; in a process
/// cloned from a multi-threaded caller those locks may be held forever.
pub fn fork() -> Result<libc::pid_t, Errno> {
    let flags = libc::SIGCHLD as libc::c_ulong;
    // SAFETY: without CLONE_VM the child gets a copy of the address space
    // and continues on its copy of this stack, like fork(2).
    let pid = unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) };
    if pid < 0 {
        Err(Errno::last())
    } else {
        Ok(pid as libc::pid_t)
    }
}

/// A descriptor naming process `pid` (`pidfd_open`): a signal sent
/// through it can never reach another process that reuses the pid.
pub fn pidfd_open(pid: libc::pid_t) -> Result<RawFd, Errno> {
    // SAFETY: integer arguments only.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0u32) };
    if fd < 0 {
        Err(Errno::last())
    } else {
        Ok(fd as RawFd)
    }
}

/// SIGKILLs the process `pidfd` names; nothing if it is gone (ESRCH).
pub fn pidfd_kill(pidfd: RawFd) {
    // SAFETY: integer arguments and a null siginfo (as kill(2) would).
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd,
            libc::SIGKILL,
            ptr::null::<libc::siginfo_t>(),
            0u32,
        )
    };
}

/// Blocks every signal that can be blocked.
pub fn block_all_signals() {
    // SAFETY: sigset manipulation on a local value.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, ptr::null_mut());
    }
}

/// Waits until every write end of the pipe `fd` is closed (or it has
/// data, or polling fails).
pub fn wait_pipe_peer_gone(fd: RawFd) {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no timeout.
    while unsafe { libc::poll(&mut pfd, 1, -1) } < 0 && Errno::last() == Errno::EINTR {}
}

/// Reaps one exited child without blocking: `Some((pid, status))`.
pub fn reap_one() -> Option<(libc::pid_t, c_int)> {
    let mut status = 0;
    // SAFETY: status is a valid out-pointer.
    let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
    (pid > 0).then_some((pid, status))
}

pub fn kill(pid: libc::pid_t, signal: c_int) {
    // SAFETY: integer arguments only.
    unsafe { libc::kill(pid, signal) };
}

/// Writes all of `bytes` (small records: one write below PIPE_BUF).
pub fn write_all(fd: RawFd, bytes: &[u8]) {
    let mut done = 0;
    while done < bytes.len() {
        let rest = &bytes[done..];
        // SAFETY: pointer and length describe `rest`.
        let n = unsafe { libc::write(fd, rest.as_ptr().cast(), rest.len()) };
        if n < 0 {
            if Errno::last() == Errno::EINTR {
                continue;
            }
            return;
        }
        done += n as usize;
    }
}

/// `execve`; returns only on failure.
pub fn execve(path: &CStr, argv: &[*const libc::c_char], envp: &[*const libc::c_char]) -> Errno {
    // SAFETY: argv and envp are null-terminated arrays of C strings that
    // the parent built and keeps alive (copied into this process by clone).
    unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    Errno::last()
}

pub fn exit(code: c_int) -> ! {
    // SAFETY: _exit skips atexit handlers and stdio flushing, which belong
    // to the parent's image of the process.
    unsafe { libc::_exit(code) }
}

/// True when the other end of the pipe `fd` is closed (or it has data).
/// Writes one byte, ignoring failure (the reader may be gone).
pub fn write_byte(fd: RawFd) {
    let byte = [1u8];
    // SAFETY: a valid one-byte buffer.
    let _ = unsafe { libc::write(fd, byte.as_ptr().cast(), 1) };
}

pub fn pipe_peer_gone(fd: RawFd) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout.
    let n = unsafe { libc::poll(&mut pfd, 1, 0) };
    n > 0 && pfd.revents & (libc::POLLHUP | libc::POLLIN | libc::POLLERR) != 0
}

// The terminal calls below run in the init after `pivot_root`, on the
// container's own devpts instance; the parent side (termios, window size
// changes) uses nix in `terminal.rs` and `container.rs`.

/// Opens a new pseudo-terminal on the container's `/dev/ptmx` and returns
/// `(master, slave)`, both `O_NOCTTY` (the init is a session leader and
/// must not acquire it) and close-on-exec, the slave unlocked and sized.
pub fn open_pty(rows: u16, cols: u16) -> Result<(RawFd, RawFd), Errno> {
    let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
    // SAFETY: NUL-terminated path.
    let master = unsafe { libc::open(c"/dev/ptmx".as_ptr(), flags) };
    if master < 0 {
        return Err(Errno::last());
    }
    match open_peer(master, flags) {
        Ok(slave) => {
            let size = libc::winsize {
                ws_row: rows,
                ws_col: cols,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            // SAFETY: a valid winsize for TIOCSWINSZ.
            match check(unsafe { libc::ioctl(master, libc::TIOCSWINSZ, &size) }) {
                Ok(()) => Ok((master, slave)),
                Err(e) => {
                    close(slave);
                    close(master);
                    Err(e)
                }
            }
        }
        Err(e) => {
            close(master);
            Err(e)
        }
    }
}

fn open_peer(master: RawFd, flags: c_int) -> Result<RawFd, Errno> {
    let unlock: c_int = 0;
    // SAFETY: TIOCSPTLCK reads one int.
    check(unsafe { libc::ioctl(master, libc::TIOCSPTLCK, &unlock) })?;
    // SAFETY: TIOCGPTPEER takes open flags by value (Linux 4.13+).
    let slave = unsafe { libc::ioctl(master, libc::TIOCGPTPEER, flags) };
    if slave >= 0 {
        return Ok(slave);
    }
    // Older kernels: open /dev/pts/N by name.
    let mut path = [0u8; 32];
    pts_path(master, &mut path)?;
    // SAFETY: `pts_path` left a NUL-terminated path in `path`.
    let slave = unsafe { libc::open(path.as_ptr().cast(), flags) };
    if slave < 0 {
        Err(Errno::last())
    } else {
        Ok(slave)
    }
}

/// Writes `/dev/pts/N`, NUL-terminated, for the pty `master` into `out`.
pub fn pts_path(master: RawFd, out: &mut [u8; 32]) -> SysResult {
    let mut number: libc::c_uint = 0;
    // SAFETY: TIOCGPTN writes one unsigned int.
    check(unsafe { libc::ioctl(master, libc::TIOCGPTN, &mut number) })?;
    let prefix = b"/dev/pts/";
    out[..prefix.len()].copy_from_slice(prefix);
    let mut digits = [0u8; 10];
    let mut count = 0;
    loop {
        digits[count] = b'0' + (number % 10) as u8;
        count += 1;
        number /= 10;
        if number == 0 {
            break;
        }
    }
    for i in 0..count {
        out[prefix.len() + i] = digits[count - 1 - i];
    }
    out[prefix.len() + count] = 0;
    Ok(())
}

/// Sends descriptor `fd` over the unix socket `sock` (SCM_RIGHTS, one
/// byte of payload), with a buffer on the stack.
pub fn send_fd(sock: RawFd, fd: RawFd) -> SysResult {
    #[repr(C, align(8))]
    struct Control([u8; 64]);
    let mut control = Control([0; 64]);
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: msghdr is plain data; every pointer below points at locals
    // that outlive the sendmsg call, and CMSG_SPACE of one int fits in 64
    // aligned bytes.
    unsafe {
        let space = libc::CMSG_SPACE(std::mem::size_of::<c_int>() as u32) as usize;
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.0.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<c_int>() as u32) as _;
        ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<c_int>(), fd);
        loop {
            let n = libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL);
            if n >= 0 {
                return Ok(());
            }
            if Errno::last() != Errno::EINTR {
                return Err(Errno::last());
            }
        }
    }
}

/// Makes the terminal on `fd` the calling session leader's controlling
/// terminal.
pub fn set_controlling_tty(fd: RawFd) -> SysResult {
    // SAFETY: TIOCSCTTY takes an int by value (0: do not steal).
    check(unsafe { libc::ioctl(fd, libc::TIOCSCTTY, 0) })
}

/// `setsid`, reporting failure (the command must lead its own session to
/// take a controlling terminal).
pub fn new_session() -> SysResult {
    // SAFETY: no arguments.
    check(unsafe { libc::setsid() })
}
