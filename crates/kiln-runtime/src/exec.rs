//! Another process in a running container (`kiln exec`, Docker's `exec`):
//! what it runs ([`ExecSpec`]), and what of the container it joins (its
//! init's namespaces and cgroups, opened here by descriptor). The process
//! itself is started by [`crate::Container::exec`] and runs
//! `child::exec_main`.
//!
//! # Entering safely
//!
//! The container is untrusted and already running. Everything of it is
//! opened through its init's pid: a pidfd first, then `/proc/PID/ns/*`
//! and `/proc/PID/cgroup`, then the pidfd is checked still alive, so a
//! pid the container's init gave up and another process took is refused
//! rather than joined. The joining process stays in kiln's pid namespace
//! (invisible inside) and is not dumpable; only the command it forks is
//! in the container's pid namespace, and it runs no host binary: it execs
//! the container's own, found by the container's `PATH` inside its root.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::CloneFlags;
use nix::sys::stat::Mode;

use crate::caps;
use crate::cmdline;
use crate::error::RuntimeError;
use crate::plan::Plan;
use crate::prepare::{cstring, exec_candidates, rlimits, seccomp_programs};
use crate::seccomp::Seccomp;
use crate::spec::{CapabilityChanges, Ulimit, User, DEFAULT_PATH};

/// What an exec'd process runs, and as whom. The container's own
/// confinement is the caller's to pass on (Docker's exec keeps the
/// container's capabilities, seccomp profile and no-new-privileges unless
/// `--privileged`).
#[derive(Debug, Clone, Default)]
pub struct ExecSpec {
    pub args: Vec<String>,
    /// The whole environment (the container's with the exec's over it).
    pub env: Vec<String>,
    /// Must exist in the container (it is not created).
    pub cwd: String,
    pub user: User,
    /// Every capability and no seccomp (`exec --privileged`, or a
    /// privileged container).
    pub privileged: bool,
    pub capabilities: CapabilityChanges,
    pub seccomp: Seccomp,
    pub no_new_privileges: bool,
    pub ulimits: Vec<Ulimit>,
}

/// The namespaces a joining process enters, in this order (each by a
/// descriptor opened beforehand, so none is looked up half inside).
const NAMESPACES: [(&str, CloneFlags); 6] = [
    ("cgroup", CloneFlags::CLONE_NEWCGROUP),
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("net", CloneFlags::CLONE_NEWNET),
    ("pid", CloneFlags::CLONE_NEWPID),
    ("mnt", CloneFlags::CLONE_NEWNS),
];

/// What of a running container a process joins: its init's namespaces
/// that differ from this process's, and the cgroups it was moved into.
pub(crate) struct Joined {
    namespaces: Vec<(OwnedFd, libc::c_int, &'static str)>,
    cgroups: Vec<(PathBuf, OwnedFd)>,
}

impl Joined {
    pub(crate) fn namespaces(&self) -> Vec<(RawFd, libc::c_int, &'static str)> {
        self.namespaces
            .iter()
            .map(|(fd, kind, name)| (fd.as_raw_fd(), *kind, *name))
            .collect()
    }

    pub(crate) fn cgroup_procs(&self) -> Vec<RawFd> {
        self.cgroups.iter().map(|(_, fd)| fd.as_raw_fd()).collect()
    }

    pub(crate) fn cgroup_dirs(&self) -> Vec<String> {
        self.cgroups
            .iter()
            .map(|(dir, _)| dir.display().to_string())
            .collect()
    }

    /// The descriptors, to keep open until the child is cloned.
    pub(crate) fn into_fds(self) -> Vec<OwnedFd> {
        self.namespaces
            .into_iter()
            .map(|(fd, _, _)| fd)
            .chain(self.cgroups.into_iter().map(|(_, fd)| fd))
            .collect()
    }
}

/// Opens what a process joining the container whose pid 1 is `pid`
/// enters (see the module's notes on pid reuse).
pub(crate) fn join(pid: i32) -> Result<Joined, RuntimeError> {
    let pidfd = pidfd(pid)?;
    let mut namespaces = Vec::new();
    for (name, kind) in NAMESPACES {
        let theirs = format!("/proc/{pid}/ns/{name}");
        let ours = format!("/proc/self/ns/{name}");
        let same = match (std::fs::metadata(&theirs), std::fs::metadata(&ours)) {
            (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
            (Err(e), _) if e.raw_os_error() == Some(libc::ENOENT) => return Err(gone(pid)),
            (Err(e), _) | (_, Err(e)) => return Err(RuntimeError::io("stat", &theirs, e)),
        };
        if same {
            // (Joining one's own mount namespace fails, and is a no-op.)
            continue;
        }
        namespaces.push((open_namespace(pid, name)?, kind.bits(), name));
    }
    let cgroups = crate::cgroups::of_process(pid as u32)?;
    still_alive(&pidfd, pid)?;
    if !namespaces
        .iter()
        .any(|(_, kind, _)| *kind == libc::CLONE_NEWNS)
    {
        return Err(RuntimeError::InvalidSpec(format!(
            "process {pid} is not in a container (it shares kiln's mount namespace)"
        )));
    }
    Ok(Joined {
        namespaces,
        cgroups,
    })
}

/// The mount namespace of the container whose pid 1 is `pid`, checked as
/// [`join`] checks (for `container_root`).
pub(crate) fn mount_namespace(pid: i32) -> Result<OwnedFd, RuntimeError> {
    let pidfd = pidfd(pid)?;
    let fd = open_namespace(pid, "mnt")?;
    still_alive(&pidfd, pid)?;
    Ok(fd)
}

fn pidfd(pid: i32) -> Result<OwnedFd, RuntimeError> {
    match crate::sys::pidfd_open(pid) {
        // SAFETY: a descriptor just created, owned by nobody else.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd) }),
        Err(Errno::ESRCH) => Err(gone(pid)),
        Err(e) => Err(RuntimeError::sys("pidfd_open the container's pid 1", e)),
    }
}

fn open_namespace(pid: i32, name: &str) -> Result<OwnedFd, RuntimeError> {
    let path = format!("/proc/{pid}/ns/{name}");
    open(
        path.as_str(),
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        Errno::ENOENT | Errno::ESRCH => gone(pid),
        e => RuntimeError::io("open", &path, e.into()),
    })
}

/// What was opened through `/proc/PID` was the container's init's only
/// if that process has not exited since its pidfd was taken (its pid
/// cannot have been reused before).
fn still_alive(pidfd: &OwnedFd, pid: i32) -> Result<(), RuntimeError> {
    let mut poll_fds = [PollFd::new(
        std::os::fd::AsFd::as_fd(pidfd),
        PollFlags::POLLIN,
    )];
    match poll(&mut poll_fds, PollTimeout::ZERO) {
        Ok(0) => Ok(()),
        Ok(_) => Err(gone(pid)),
        Err(e) => Err(RuntimeError::sys("poll the container's pidfd", e)),
    }
}

fn gone(pid: i32) -> RuntimeError {
    RuntimeError::InvalidSpec(format!("the container's pid 1 ({pid}) is gone"))
}

/// The plan of an exec'd process: no mounts (the container has them),
/// the command's credentials and confinement as for a container's
/// command.
pub(crate) fn plan(spec: &ExecSpec) -> Result<Plan, RuntimeError> {
    let Some(program) = spec.args.first() else {
        return Err(RuntimeError::InvalidSpec("exec needs a command".into()));
    };
    let mut command_caps = if spec.privileged {
        caps::own_permitted()
    } else {
        spec.capabilities
            .apply(caps::DOCKER_DEFAULT_MASK, caps::own_permitted())
    };
    // As for the container's command: no device rules on v2 (cgroups.rs).
    if !spec.privileged && cgroups_rs::hierarchies::is_cgroup2_unified_mode() {
        command_caps &= !(1 << caps::MKNOD);
    }
    let mut env = spec.env.clone();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push(format!("PATH={DEFAULT_PATH}"));
    }
    let path_var = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH)
        .to_owned();
    let seccomp = seccomp_programs(spec.privileged, &spec.seccomp, command_caps)?;
    if !spec.cwd.starts_with('/') {
        return Err(RuntimeError::InvalidSpec(format!(
            "the working directory {:?} is not absolute",
            spec.cwd
        )));
    }
    Ok(Plan {
        clone_flags: CloneFlags::empty(),
        pre_pivot: Vec::new(),
        merged: CString::default(),
        overlay_dirs: Vec::new(),
        post_pivot: Vec::new(),
        hostname: Vec::new(),
        loopback_up: false,
        cwd_dirs: Vec::new(),
        cwd: cstring(&spec.cwd)?,
        exec_candidates: exec_candidates(program, &path_var)?,
        program: program.clone(),
        argv: spec
            .args
            .iter()
            .map(|a| cstring(a))
            .collect::<Result<_, _>>()?,
        envp: env.iter().map(|e| cstring(e)).collect::<Result<_, _>>()?,
        uid: spec.user.uid,
        gid: spec.user.gid,
        groups: spec.user.additional_gids.clone(),
        last_cap: caps::last_cap(),
        command_caps,
        tty: None,
        seccomp,
        no_new_privs: spec.no_new_privileges,
        // The joining process stays as the command's parent.
        init: true,
        arg_env: cmdline::own_areas(),
        cgroup_procs: Vec::new(),
        cgroup_dirs: Vec::new(),
        mount_fds: Vec::new(),
        read_watch: -1,
        rlimits: rlimits(&spec.ulimits),
        join_namespaces: Vec::new(),
    })
}
