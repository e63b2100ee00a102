//! The caller's side of a run: `clone` the init into new namespaces,
//! stream its stdout/stderr to an `OutputSink`, collect its report, reap
//! it, and clean up on every path (a `Container` dropped unwaited kills
//! and reaps its init; the init dies with the caller's thread through
//! `PR_SET_PDEATHSIG`; every mount lives only in the container's mount
//! namespace, which dies with its last process).

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};

use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::stat::Mode;
use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::{pipe2, read, Pid};

use crate::child::{init_main, ChildArgs, ChildFds};
use crate::error::RuntimeError;
use crate::plan::{decode, Plan, Report, Stage};
use crate::prepare::{prepare, Prepared};
use crate::spec::{ContainerSpec, ExitStatus};

/// Stack of the cloned init; it runs only `child.rs`, which keeps its
/// frames small.
const CHILD_STACK: usize = 1 << 20;
const READ_CHUNK: usize = 64 * 1024;

/// Receives the command's output while it runs. Called from the thread
/// that waits; a slow sink slows the container down, nothing deadlocks.
pub trait OutputSink {
    fn stdout(&mut self, data: &[u8]);
    fn stderr(&mut self, data: &[u8]);
}

/// An `OutputSink` keeping everything in memory.
#[derive(Debug, Default, Clone)]
pub struct CollectedOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl OutputSink for CollectedOutput {
    fn stdout(&mut self, data: &[u8]) {
        self.stdout.extend_from_slice(data);
    }
    fn stderr(&mut self, data: &[u8]) {
        self.stderr.extend_from_slice(data);
    }
}

/// Kills a running container from any thread (e.g. on Ctrl-C).
#[derive(Debug, Clone)]
pub struct KillHandle {
    state: Arc<Mutex<InitState>>,
}

#[derive(Debug)]
struct InitState {
    /// `None` once reaped: the pid may then belong to someone else.
    pid: Option<Pid>,
    killed: bool,
}

impl KillHandle {
    /// SIGKILLs the container's init; the kernel then kills every process
    /// in its pid namespace. `wait` returns `RuntimeError::Killed`.
    pub fn kill(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pid) = state.pid {
            state.killed = true;
            let _ = kill(pid, Signal::SIGKILL);
        }
    }
}

/// A started container. Call [`Container::wait`]; dropping it unwaited
/// kills it.
pub struct Container {
    plan: Plan,
    /// Removed when the container is dropped, after the init is reaped.
    _state: tempfile::TempDir,
    pid: Pid,
    state: Arc<Mutex<InitState>>,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    report: Option<OwnedFd>,
    /// Held until the init is reaped; its hang-up tells a freshly cloned
    /// init that the caller already died.
    _alive: OwnedFd,
}

/// Runs `spec` to completion, streaming output to `sink`.
pub fn run(spec: &ContainerSpec, sink: &mut dyn OutputSink) -> Result<ExitStatus, RuntimeError> {
    Container::spawn(spec)?.wait(sink)
}

fn pipe() -> Result<(OwnedFd, OwnedFd), RuntimeError> {
    pipe2(OFlag::O_CLOEXEC).map_err(|e| RuntimeError::sys("pipe2", e))
}

impl Container {
    /// Prepares the rootfs plan and clones the init into new namespaces.
    pub fn spawn(spec: &ContainerSpec) -> Result<Container, RuntimeError> {
        let Prepared {
            plan,
            state,
            overlay_fds,
        } = prepare(spec)?;
        let (alive_r, alive_w) = pipe()?;
        let (report_r, report_w) = pipe()?;
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let stdin = open(
            "/dev/null",
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| RuntimeError::io("open", "/dev/null", e.into()))?;

        let fds = ChildFds {
            alive: alive_r.as_raw_fd(),
            report: report_w.as_raw_fd(),
            stdin: stdin.as_raw_fd(),
            stdout: out_w.as_raw_fd(),
            stderr: err_w.as_raw_fd(),
        };
        let mut keep: Vec<RawFd> = vec![fds.alive, fds.report, fds.stdin, fds.stdout, fds.stderr];
        keep.extend(plan.overlay_dirs.iter().map(|(_, fd)| *fd));
        keep.sort_unstable();
        let pid = clone_init(&plan, fds, &keep)?;
        // The child's ends are closed here so EOF means the container ended.
        drop((alive_r, report_w, out_w, err_w, stdin, overlay_fds));
        Ok(Container {
            plan,
            _state: state,
            pid,
            state: Arc::new(Mutex::new(InitState {
                pid: Some(pid),
                killed: false,
            })),
            stdout: Some(out_r),
            stderr: Some(err_r),
            report: Some(report_r),
            _alive: alive_w,
        })
    }

    /// The init's pid in the caller's pid namespace.
    pub fn pid(&self) -> i32 {
        self.pid.as_raw()
    }

    pub fn kill_handle(&self) -> KillHandle {
        KillHandle {
            state: Arc::clone(&self.state),
        }
    }

    /// Streams output until the container ends (its command exited and the
    /// init killed whatever was left), then returns the command's status.
    pub fn wait(mut self, sink: &mut dyn OutputSink) -> Result<ExitStatus, RuntimeError> {
        let report = self.pump(sink)?;
        let init_status = self.reap()?;
        let killed = self.state.lock().map(|s| s.killed).unwrap_or(true);
        self.outcome(&report, init_status, killed)
    }

    fn pump(&mut self, sink: &mut dyn OutputSink) -> Result<Vec<u8>, RuntimeError> {
        let mut report = Vec::new();
        let mut buf = vec![0u8; READ_CHUNK];
        while self.stdout.is_some() || self.stderr.is_some() || self.report.is_some() {
            let ready = self.poll_ready()?;
            for (index, readable) in ready.into_iter().enumerate() {
                if !readable {
                    continue;
                }
                let slot = match index {
                    0 => &mut self.stdout,
                    1 => &mut self.stderr,
                    _ => &mut self.report,
                };
                let Some(fd) = slot.as_ref() else { continue };
                match read(fd.as_fd(), &mut buf) {
                    Ok(0) => *slot = None,
                    Ok(n) => match index {
                        0 => sink.stdout(&buf[..n]),
                        1 => sink.stderr(&buf[..n]),
                        _ => report.extend_from_slice(&buf[..n]),
                    },
                    Err(Errno::EINTR) | Err(Errno::EAGAIN) => {}
                    Err(e) => return Err(RuntimeError::sys("read container output", e)),
                }
            }
        }
        Ok(report)
    }

    /// Which of stdout, stderr, report can be read (or hit EOF).
    fn poll_ready(&self) -> Result<[bool; 3], RuntimeError> {
        let slots = [&self.stdout, &self.stderr, &self.report];
        let mut pollfds: Vec<PollFd> = Vec::new();
        let mut index = Vec::new();
        for (i, slot) in slots.iter().enumerate() {
            if let Some(fd) = slot {
                pollfds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
                index.push(i);
            }
        }
        match poll(&mut pollfds, PollTimeout::NONE) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(RuntimeError::sys("poll container output", e)),
        }
        let mut ready = [false; 3];
        for (pfd, i) in pollfds.iter().zip(index) {
            ready[i] = pfd.revents().is_some_and(|r| !r.is_empty());
        }
        Ok(ready)
    }

    /// Waits for the init without reaping, forgets its pid under the kill
    /// handle's lock, then reaps: a kill can never hit a recycled pid.
    fn reap(&mut self) -> Result<WaitStatus, RuntimeError> {
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT;
        loop {
            match waitid(Id::Pid(self.pid), flags) {
                Ok(_) => break,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(RuntimeError::sys("waitid container init", e)),
            }
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.pid = None;
        loop {
            match waitpid(self.pid, None) {
                Ok(status) => return Ok(status),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(RuntimeError::sys("waitpid container init", e)),
            }
        }
    }

    fn outcome(
        &self,
        report: &[u8],
        init_status: WaitStatus,
        killed: bool,
    ) -> Result<ExitStatus, RuntimeError> {
        let reports = decode(report);
        if let Some(Report::Failure {
            stage,
            index,
            errno,
        }) = reports
            .iter()
            .find(|r| matches!(r, Report::Failure { .. }))
            .copied()
        {
            let plan = &self.plan;
            return Err(match stage {
                Stage::Exec => RuntimeError::Exec {
                    program: plan.program.clone(),
                    errno,
                },
                _ => RuntimeError::Setup {
                    step: plan.describe(stage, index),
                    errno,
                },
            });
        }
        if killed {
            return Err(RuntimeError::Killed);
        }
        for r in &reports {
            if let Report::Status(raw) = r {
                if let Some(status) = ExitStatus::from_wait_status(*raw) {
                    return Ok(status);
                }
            }
        }
        Err(RuntimeError::InitDied(format!("{init_status:?}")))
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let pid = self.state.lock().map(|s| s.pid).unwrap_or(None);
        if let Some(pid) = pid {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
        }
    }
}

fn clone_init(plan: &Plan, fds: ChildFds, keep: &[RawFd]) -> Result<Pid, RuntimeError> {
    // Pointer arrays built before clone; the child only reads them.
    let argv = null_terminated(&plan.argv);
    let envp = null_terminated(&plan.envp);
    let args = ChildArgs {
        plan,
        fds,
        keep,
        argv: &argv,
        envp: &envp,
    };
    let mut stack = vec![0u8; CHILD_STACK];
    let callback = Box::new(|| -> isize { init_main(&args) });
    // SAFETY: without CLONE_VM the child gets a copy of this address space,
    // so `args` and the stack stay valid in it; the callback never returns
    // and runs only async-signal-safe code (see child.rs).
    let pid =
        unsafe { nix::sched::clone(callback, &mut stack, plan.clone_flags, Some(libc::SIGCHLD)) };
    pid.map_err(|e| RuntimeError::sys("clone container init", e))
}

fn null_terminated(strings: &[std::ffi::CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Callers may wait on another thread than the one they spawned on
    /// (mind `PR_SET_PDEATHSIG`) or kill from a signal-handling task.
    #[test]
    fn handles_cross_threads() {
        fn assert_send<T: Send>() {}
        fn assert_sync<T: Sync>() {}
        assert_send::<Container>();
        assert_send::<KillHandle>();
        assert_sync::<KillHandle>();
    }
}
