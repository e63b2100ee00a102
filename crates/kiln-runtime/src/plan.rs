//! The prepared plan of a run: every path, mount option and argv entry
//! turned into C strings before `clone`, so the child only walks these
//! vectors and makes syscalls. Also the small record the child writes back
//! when something fails, and how the parent names the failed step.

use std::ffi::CString;
use std::os::fd::RawFd;

use libc::{c_ulong, mode_t};
use nix::errno::Errno;
use nix::sched::CloneFlags;

use crate::cmdline::ArgEnvAreas;
use crate::sys;

/// One filesystem action inside the container's mount namespace.
#[derive(Debug)]
pub(crate) enum Step {
    Mount {
        source: Option<CString>,
        target: CString,
        fstype: Option<CString>,
        flags: c_ulong,
        data: Option<CString>,
    },
    Mkdir {
        path: CString,
        mode: mode_t,
    },
    Touch {
        path: CString,
    },
    Mknod {
        path: CString,
        major: u32,
        minor: u32,
    },
    Symlink {
        target: CString,
        link: CString,
    },
    /// sysfs read-only; where the kernel refuses a new sysfs instance
    /// (host network namespace), a read-only recursive bind of `/sys`.
    Sysfs {
        target: CString,
    },
    /// Docker's masked paths: `/dev/null` over files, a read-only tmpfs
    /// over directories, nothing if absent on this kernel.
    Mask {
        path: CString,
    },
    /// Docker's read-only paths: a read-only bind of the path onto itself
    /// (keeping its `nosuid`, `nodev`, `noexec`).
    ReadOnly {
        path: CString,
    },
    /// Makes the mount at `path` read-only, keeping its other flags.
    RemountReadOnly {
        path: CString,
    },
    /// Creates `path` (which must not exist) holding `data`: a secret,
    /// written on the container's own tmpfs.
    WriteFile {
        path: CString,
        data: Vec<u8>,
        mode: mode_t,
        uid: libc::uid_t,
        gid: libc::gid_t,
    },
    /// Attach a detached mount tree (a `Mount::BindFd` source cloned with
    /// `open_tree` by the parent) at `target`.
    MoveMount {
        tree: RawFd,
        target: CString,
    },
}

impl Step {
    /// Runs the step (in the child: syscalls only).
    pub(crate) fn run(&self) -> sys::SysResult {
        match self {
            Step::Mount {
                source,
                target,
                fstype,
                flags,
                data,
            } => sys::mount(
                source.as_deref(),
                target,
                fstype.as_deref(),
                *flags,
                data.as_deref(),
            ),
            Step::Mkdir { path, mode } => sys::mkdir_exist_ok(path, *mode),
            Step::Touch { path } => sys::touch(path, 0o644),
            Step::Mknod { path, major, minor } => sys::mknod_char(path, 0o666, *major, *minor),
            Step::Symlink { target, link } => sys::symlink(target, link),
            Step::Sysfs { target } => run_sysfs(target),
            Step::Mask { path } => run_mask(path),
            Step::MoveMount { tree, target } => sys::move_mount_tree(*tree, target),
            Step::ReadOnly { path } => match sys::kind(path) {
                Err(Errno::ENOENT) => Ok(()),
                Err(e) => Err(e),
                Ok(_) => {
                    sys::mount(Some(path), path, None, libc::MS_BIND | libc::MS_REC, None)?;
                    sys::remount_readonly(path)
                }
            },
            Step::RemountReadOnly { path } => sys::remount_readonly(path),
            Step::WriteFile {
                path,
                data,
                mode,
                uid,
                gid,
            } => sys::write_new_file(path, data, *mode, *uid, *gid),
        }
    }

    /// What the step does, for error messages (parent side).
    pub(crate) fn describe(&self) -> String {
        let s = |c: &CString| c.to_string_lossy().into_owned();
        match self {
            Step::Mount {
                source,
                target,
                fstype,
                ..
            } => format!(
                "mount {} ({}) on {}",
                source.as_ref().map(s).unwrap_or_default(),
                fstype.as_ref().map(s).unwrap_or_else(|| "bind".into()),
                s(target)
            ),
            Step::Mkdir { path, .. } => format!("mkdir {}", s(path)),
            Step::Touch { path } => format!("create {}", s(path)),
            Step::Mknod { path, .. } => format!("mknod {}", s(path)),
            Step::Symlink { link, .. } => format!("symlink {}", s(link)),
            Step::Sysfs { target } => format!("mount sysfs on {}", s(target)),
            Step::Mask { path } => format!("mask {}", s(path)),
            Step::ReadOnly { path } | Step::RemountReadOnly { path } => {
                format!("make {} read-only", s(path))
            }
            // The secret's name and bytes stay out of messages.
            Step::WriteFile { data, .. } => {
                format!("write a secret of {} bytes on tmpfs", data.len())
            }
            Step::MoveMount { target, .. } => format!("bind a resolved source on {}", s(target)),
        }
    }
}

fn run_sysfs(target: &CString) -> sys::SysResult {
    let flags = libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    match sys::mount(Some(c"sysfs"), target, Some(c"sysfs"), flags, None) {
        Err(Errno::EPERM) | Err(Errno::EBUSY) => {
            let host_sys = c"/sys";
            sys::mount(
                Some(host_sys),
                target,
                None,
                libc::MS_BIND | libc::MS_REC,
                None,
            )?;
            sys::remount_readonly(target)
        }
        other => other,
    }
}

fn run_mask(path: &CString) -> sys::SysResult {
    match sys::kind(path) {
        Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(e),
        Ok(sys::Kind::Dir) => {
            sys::mount(Some(c"tmpfs"), path, Some(c"tmpfs"), libc::MS_RDONLY, None)
        }
        Ok(sys::Kind::Other) => sys::mount(Some(c"/dev/null"), path, None, libc::MS_BIND, None),
    }
}

/// Everything the child needs, prepared by the parent.
#[derive(Debug)]
pub(crate) struct Plan {
    pub clone_flags: CloneFlags,
    /// Mounts with host paths under the merged dir, before `pivot_root`.
    pub pre_pivot: Vec<Step>,
    /// The overlay mount point; becomes `/`.
    pub merged: CString,
    /// The overlay's dirs and the descriptor number each is reopened on
    /// (the mount options name `/proc/self/fd/N`); closed once mounted.
    pub overlay_dirs: Vec<(CString, RawFd)>,
    /// Steps with container paths, after `pivot_root`.
    pub post_pivot: Vec<Step>,
    pub hostname: Vec<u8>,
    pub loopback_up: bool,
    /// `cwd` and its ancestors, parents first, created if missing.
    pub cwd_dirs: Vec<CString>,
    pub cwd: CString,
    /// Where `argv[0]` may be, in `PATH` order.
    pub exec_candidates: Vec<CString>,
    pub program: String,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
    pub groups: Vec<libc::gid_t>,
    pub last_cap: u32,
    /// The command's capabilities: Docker's defaults, or all of them.
    pub command_caps: u64,
    /// Allocate a pty of this size (rows, cols) in the container's devpts.
    pub tty: Option<(u16, u16)>,
    /// Seccomp BPF programs installed, in order, before the command runs
    /// (none: unconfined).
    pub seccomp: Vec<seccompiler::BpfProgram>,
    /// `PR_SET_NO_NEW_PRIVS` for the command.
    pub no_new_privs: bool,
    /// Keep an init as pid 1 that forks the command (`--init`); otherwise
    /// pid 1 execs the command itself.
    pub init: bool,
    /// Where kiln's argv and environment are in memory: the init, a fork
    /// of kiln, blanks them so `/proc/1/cmdline` shows nothing of the host.
    pub arg_env: Option<ArgEnvAreas>,
    /// The container's cgroup in each hierarchy: the descriptors the init
    /// joins through first (`cgroups::join`), and the cgroups' paths.
    pub cgroup_procs: Vec<RawFd>,
    pub cgroup_dirs: Vec<String>,
    /// Descriptors `Mount::BindFd` sources are mounted from: kept open in
    /// init for the pre-pivot mounts, closed after them.
    pub mount_fds: Vec<RawFd>,
    /// A fanotify group (-1: none) the init marks the rootfs's mount in,
    /// just before the command runs, then closes its copy of
    /// ([`crate::ReadWatch`]).
    pub read_watch: RawFd,
    /// `--ulimit`s: (RLIMIT_* resource, soft, hard), set before the
    /// capabilities drop (raising a hard limit needs CAP_SYS_RESOURCE).
    pub rlimits: Vec<(u32, u64, u64)>,
    /// Joining a running container (`exec`) instead of making one: its
    /// init's namespaces, as (descriptor, `CLONE_NEW*`, name), joined in
    /// this order; empty for a new container.
    pub join_namespaces: Vec<(RawFd, libc::c_int, &'static str)>,
}

/// Where the child was when it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub(crate) enum Stage {
    PreStep = 1,
    OverlayDir,
    PostStep,
    ParentDeathSignal,
    Hostname,
    Loopback,
    PivotRoot,
    Signals,
    CreateCwd,
    Fork,
    Stdio,
    Capabilities,
    Groups,
    Setgid,
    Setuid,
    NoNewPrivs,
    Chdir,
    Exec,
    Tty,
    Console,
    ControllingTty,
    Seccomp,
    MountPropagation,
    Cgroup,
    WatchReads,
    Rlimits,
    JoinNamespace,
}

impl Stage {
    fn from_i32(v: i32) -> Option<Stage> {
        use Stage::*;
        [
            PreStep,
            OverlayDir,
            PostStep,
            ParentDeathSignal,
            Hostname,
            Loopback,
            PivotRoot,
            Signals,
            CreateCwd,
            Fork,
            Stdio,
            Capabilities,
            Groups,
            Setgid,
            Setuid,
            NoNewPrivs,
            Chdir,
            Exec,
            Tty,
            Console,
            ControllingTty,
            Seccomp,
            MountPropagation,
            Cgroup,
            WatchReads,
            Rlimits,
            JoinNamespace,
        ]
        .into_iter()
        .find(|s| *s as i32 == v)
    }
}

/// Record written by the child on the report pipe: fixed size, one
/// `write` (below PIPE_BUF, so never interleaved).
pub(crate) const REPORT_LEN: usize = 16;
const KIND_FAILURE: i32 = 1;
const KIND_STATUS: i32 = 2;

pub(crate) fn encode_failure(stage: Stage, index: usize, errno: Errno) -> [u8; REPORT_LEN] {
    encode(KIND_FAILURE, stage as i32, index as i32, errno as i32)
}

pub(crate) fn encode_status(wait_status: i32) -> [u8; REPORT_LEN] {
    encode(KIND_STATUS, 0, 0, wait_status)
}

fn encode(kind: i32, stage: i32, index: i32, value: i32) -> [u8; REPORT_LEN] {
    let mut out = [0u8; REPORT_LEN];
    for (chunk, v) in out.chunks_exact_mut(4).zip([kind, stage, index, value]) {
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    out
}

/// A decoded report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Report {
    Failure {
        stage: Stage,
        index: usize,
        errno: Errno,
    },
    Status(i32),
}

pub(crate) fn decode(bytes: &[u8]) -> Vec<Report> {
    bytes
        .chunks_exact(REPORT_LEN)
        .filter_map(|chunk| {
            let field = |i: usize| {
                let mut b = [0u8; 4];
                b.copy_from_slice(&chunk[i * 4..i * 4 + 4]);
                i32::from_ne_bytes(b)
            };
            match field(0) {
                KIND_FAILURE => Some(Report::Failure {
                    stage: Stage::from_i32(field(1))?,
                    index: usize::try_from(field(2)).ok()?,
                    errno: Errno::from_raw(field(3)),
                }),
                KIND_STATUS => Some(Report::Status(field(3))),
                _ => None,
            }
        })
        .collect()
}

impl Plan {
    /// Names a failed step for `RuntimeError::Setup`.
    pub(crate) fn describe(&self, stage: Stage, index: usize) -> String {
        let step = |steps: &[Step]| {
            steps
                .get(index)
                .map_or_else(|| format!("step {index}"), Step::describe)
        };
        match stage {
            Stage::PreStep => step(&self.pre_pivot),
            Stage::PostStep => step(&self.post_pivot),
            Stage::OverlayDir => format!(
                "open overlay dir {}",
                self.overlay_dirs
                    .get(index)
                    .map(|(p, _)| p.to_string_lossy().into_owned())
                    .unwrap_or_default()
            ),
            Stage::ParentDeathSignal => "prctl(PR_SET_PDEATHSIG)".into(),
            Stage::Hostname => "sethostname".into(),
            Stage::Loopback => "bring up lo".into(),
            Stage::PivotRoot => "pivot_root into the rootfs".into(),
            Stage::Signals => "block signals in init".into(),
            Stage::CreateCwd => format!(
                "create working directory {}",
                self.cwd_dirs
                    .get(index)
                    .map(|c| c.to_string_lossy().into_owned())
                    .unwrap_or_default()
            ),
            Stage::Fork => "fork the command".into(),
            Stage::Stdio => "set up stdin/stdout/stderr".into(),
            Stage::Capabilities => "set capabilities".into(),
            Stage::Groups => "setgroups".into(),
            Stage::Setgid => format!("setgid {}", self.gid),
            Stage::Setuid => format!("setuid {}", self.uid),
            Stage::NoNewPrivs => "prctl(PR_SET_NO_NEW_PRIVS)".into(),
            Stage::Chdir => format!("chdir {}", self.cwd.to_string_lossy()),
            Stage::Exec => format!("exec {}", self.program),
            Stage::Tty => "allocate a terminal on the container's /dev/ptmx".into(),
            Stage::Console => "bind the terminal on /dev/console".into(),
            Stage::ControllingTty => "make the terminal the command's controlling tty".into(),
            Stage::Seccomp => "install the seccomp filter".into(),
            Stage::MountPropagation => "make the container's mounts slaves of the host's".into(),
            Stage::Cgroup => match self.cgroup_dirs.get(index) {
                Some(dir) => format!("join cgroup {dir}"),
                None => "unshare the cgroup namespace".into(),
            },
            Stage::WatchReads => "watch the rootfs's reads (fanotify_mark)".into(),
            Stage::Rlimits => "set the --ulimit limits (setrlimit)".into(),
            Stage::JoinNamespace => format!(
                "join the container's {} namespace",
                self.join_namespaces
                    .get(index)
                    .map_or("", |(_, _, name)| *name)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_round_trip() {
        let mut bytes = encode_failure(Stage::Exec, 3, Errno::ENOENT).to_vec();
        bytes.extend(encode_status(256));
        bytes.extend([1, 2, 3]); // a torn tail is ignored
        assert_eq!(
            decode(&bytes),
            vec![
                Report::Failure {
                    stage: Stage::Exec,
                    index: 3,
                    errno: Errno::ENOENT
                },
                Report::Status(256)
            ]
        );
    }

    #[test]
    fn garbage_reports_are_dropped() {
        assert!(decode(&[0xff; 32]).is_empty());
    }
}
