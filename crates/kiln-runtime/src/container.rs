//! The caller's side of a run: `clone` the init into new namespaces,
//! stream its stdout/stderr to an `OutputSink`, collect its report, reap
//! it, and clean up on every path (a `Container` dropped unwaited kills
//! and reaps its init; the init dies with the caller's thread through
//! `PR_SET_PDEATHSIG`; every mount lives only in the container's mount
//! namespace, which dies with its last process). "The init" here is the
//! container's pid 1: the command itself once it execs, or `kiln-init`
//! under `ContainerSpec::init`; its status is the command's own in the
//! first case and comes on the report pipe in the second.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::{Arc, Mutex};

use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::stat::Mode;
use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::{pipe2, read, Pid};

use crate::cgroups::ContainerCgroup;
use crate::child::{exec_main, init_main, watcher_main, ChildArgs, ChildFds};
use crate::error::RuntimeError;
use crate::exec::ExecSpec;
use crate::plan::{decode, Plan, Report, Stage};
use crate::prepare::{prepare, Prepared};
use crate::spec::{ContainerSpec, ExitStatus, Stdin, Stdio, WindowSize};
use crate::sys;

/// Stack of the cloned init; it runs only `child.rs`, which keeps its
/// frames small.
const CHILD_STACK: usize = 1 << 20;
const READ_CHUNK: usize = 64 * 1024;

/// Output sources `wait` reads: stdout, stderr, the report, the pty master.
const SLOTS: usize = 4;
const STDOUT: usize = 0;
const STDERR: usize = 1;
const REPORT: usize = 2;
const TTY: usize = 3;

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
    /// SIGKILLs the container's pid 1 (the command, or the init with
    /// `--init`): from the parent's pid namespace SIGKILL always reaches
    /// it, handler or not, and the kernel then kills every process in its
    /// pid namespace. `wait` returns `RuntimeError::Killed`.
    pub fn kill(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pid) = state.pid {
            state.killed = true;
            let _ = kill(pid, Signal::SIGKILL);
        }
    }
}

/// Resizes a running container's terminal from any thread (e.g. on
/// SIGWINCH); the kernel then signals SIGWINCH to the command.
#[derive(Debug, Clone)]
pub struct TtyHandle {
    master: Arc<OwnedFd>,
}

nix::ioctl_write_ptr_bad!(set_window_size, libc::TIOCSWINSZ, libc::winsize);

impl TtyHandle {
    pub fn resize(&self, size: WindowSize) -> Result<(), RuntimeError> {
        let size = libc::winsize {
            ws_row: size.rows,
            ws_col: size.cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: the master is a pty descriptor we own; winsize is valid.
        unsafe { set_window_size(self.master.as_raw_fd(), &size) }
            .map(drop)
            .map_err(|e| RuntimeError::sys("resize the container's terminal", e))
    }
}

/// A started container. Call [`Container::wait`]; dropping it unwaited
/// kills it.
pub struct Container {
    plan: Plan,
    /// Removed when the container is dropped, after the init is reaped
    /// (none for an exec'd process).
    _state: Option<tempfile::TempDir>,
    pid: Pid,
    state: Arc<Mutex<InitState>>,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    report: Option<OwnedFd>,
    /// The pty master (with a tty): read for output, shared with
    /// [`TtyHandle`]s for resizing.
    tty: Option<Arc<OwnedFd>>,
    /// What [`Container::take_stdin`] hands out.
    stdin: Option<File>,
    /// Held until the init is reaped; its hang-up tells a freshly cloned
    /// init that the caller already died, and the watcher that the
    /// container is no longer ours.
    alive: Option<OwnedFd>,
    /// The watcher of a pid-1 command (`child::watcher_main`), reaped on
    /// drop.
    watcher: Option<Pid>,
    /// Removed when dropped, after `Drop for Container` reaped the init
    /// (none for an exec'd process: the cgroup is its container's).
    _cgroup: Option<ContainerCgroup>,
    /// With [`ContainerSpec::track_reads`], until taken.
    read_watch: Option<ReadWatch>,
}

/// Runs `spec` to completion, streaming output to `sink`.
pub fn run(spec: &ContainerSpec, sink: &mut dyn OutputSink) -> Result<ExitStatus, RuntimeError> {
    Container::spawn(spec)?.wait(sink)
}

fn pipe() -> Result<(OwnedFd, OwnedFd), RuntimeError> {
    pipe2(OFlag::O_CLOEXEC).map_err(|e| RuntimeError::sys("pipe2", e))
}

impl Container {
    /// Prepares the rootfs plan and clones the init into new namespaces,
    /// with stdin `/dev/null` and no terminal.
    pub fn spawn(spec: &ContainerSpec) -> Result<Container, RuntimeError> {
        Container::spawn_with(spec, Stdio::default())
    }

    /// [`Container::spawn`] with the command's stdin and terminal chosen.
    /// With a tty this returns once the init has allocated it (or failed:
    /// [`Container::wait`] then reports why).
    pub fn spawn_with(spec: &ContainerSpec, stdio: Stdio) -> Result<Container, RuntimeError> {
        let Prepared {
            mut plan,
            state,
            overlay_fds,
        } = prepare(spec)?;
        plan.tty = stdio.tty.map(|size| (size.rows, size.cols));
        let read_watch = if spec.track_reads {
            Some(ReadWatch::new()?)
        } else {
            None
        };
        plan.read_watch = read_watch.as_ref().map_or(-1, ReadWatch::group_fd);
        let cgroup = ContainerCgroup::create(&spec.resources, spec.privileged)?;
        plan.cgroup_procs = cgroup.procs_fds();
        plan.cgroup_dirs = cgroup
            .dirs()
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        if cgroup.no_device_rules {
            plan.command_caps &= !(1 << crate::caps::MKNOD);
        }
        let merged = std::path::Path::new(std::ffi::OsStr::from_bytes(plan.merged.as_bytes()));
        plan.pre_pivot
            .extend(cgroup.mount_steps(&merged.join("sys/fs/cgroup"))?);
        let launch = Launch {
            stdio,
            state: Some(state),
            cgroup: Some(cgroup),
            held: overlay_fds,
            read_watch,
            entry: init_main,
        };
        Container::launch(plan, launch)
    }

    /// Runs `spec` as another process of the running container whose
    /// pid 1 is `init_pid` (in this process's pid namespace), as `docker
    /// exec` does: in its cgroups and namespaces, with `spec`'s user,
    /// capabilities and seccomp profile. The returned [`Container`] is the
    /// process: [`Container::wait`] gives its status, [`KillHandle::kill`]
    /// ends it (not the container), dropping it unwaited kills it.
    pub fn exec(init_pid: i32, spec: &ExecSpec, stdio: Stdio) -> Result<Container, RuntimeError> {
        let joined = crate::exec::join(init_pid)?;
        let mut plan = crate::exec::plan(spec)?;
        plan.join_namespaces = joined.namespaces();
        plan.cgroup_procs = joined.cgroup_procs();
        plan.cgroup_dirs = joined.cgroup_dirs();
        plan.tty = stdio.tty.map(|size| (size.rows, size.cols));
        let launch = Launch {
            stdio,
            state: None,
            cgroup: None,
            held: joined.into_fds(),
            read_watch: None,
            entry: exec_main,
        };
        Container::launch(plan, launch)
    }

    /// Clones the child (`launch.entry`) with its pipes, waits until its
    /// parent-death signal is armed, and takes the terminal it sends.
    fn launch(plan: Plan, launch: Launch) -> Result<Container, RuntimeError> {
        let Launch {
            stdio,
            state,
            mut cgroup,
            held,
            read_watch,
            entry,
        } = launch;
        let (alive_r, alive_w) = pipe()?;
        let (report_r, report_w) = pipe()?;
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let (stdin, stdin_w) = if stdio.stdin == Stdin::Pipe && stdio.tty.is_none() {
            let (r, w) = pipe()?;
            (r, Some(File::from(w)))
        } else {
            let null = open(
                "/dev/null",
                OFlag::O_RDONLY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| RuntimeError::io("open", "/dev/null", e.into()))?;
            (null, None)
        };
        let tty_socket = match stdio.tty {
            Some(_) => Some(socket_pair()?),
            None => None,
        };

        let (armed_r, armed_w) = pipe()?;
        let fds = ChildFds {
            alive: alive_r.as_raw_fd(),
            armed: armed_w.as_raw_fd(),
            report: report_w.as_raw_fd(),
            stdin: stdin.as_raw_fd(),
            stdout: out_w.as_raw_fd(),
            stderr: err_w.as_raw_fd(),
            tty_socket: tty_socket
                .as_ref()
                .map_or(-1, |(_, child)| child.as_raw_fd()),
        };
        let mut keep: Vec<RawFd> = vec![fds.alive, fds.report, fds.stdin, fds.stdout, fds.stderr];
        if fds.tty_socket >= 0 {
            keep.push(fds.tty_socket);
        }
        keep.extend(plan.overlay_dirs.iter().map(|(_, fd)| *fd));
        keep.extend(&plan.mount_fds);
        keep.extend(plan.join_namespaces.iter().map(|(fd, _, _)| *fd));
        if plan.read_watch >= 0 {
            keep.push(plan.read_watch);
        }
        keep.sort_unstable();
        let pid = clone_child(&plan, fds, &keep, entry)?;
        // The child's ends are closed here so EOF means the container ended.
        // (The alive pipe's read end, once the watcher has it.)
        drop((report_w, out_w, err_w, stdin, held, armed_w));
        if let Some(cgroup) = cgroup.as_mut() {
            cgroup.close_procs();
        }
        // (An exec's join files, held with the other descriptors, are
        // closed above.)
        // Return only once the init's parent-death signal is set (a byte)
        // or the init is gone (EOF): a caller whose thread exits right
        // after spawning must still take the container with it.
        let mut byte = [0u8; 1];
        while let Err(nix::errno::Errno::EINTR) = nix::unistd::read(&armed_r, &mut byte) {}
        let mut container = Container {
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
            tty: None,
            stdin: stdin_w,
            alive: Some(alive_w),
            watcher: None,
            _cgroup: cgroup,
            read_watch: read_watch.map(ReadWatch::start),
        };
        if !container.plan.init && container.plan.join_namespaces.is_empty() {
            // (On failure, dropping `container` kills and reaps pid 1.)
            container.watcher = spawn_watcher(pid, &alive_r)?;
        }
        drop(alive_r);
        if let Some((ours, theirs)) = tty_socket {
            drop(theirs);
            // On failure the init exits without sending: end of file, and
            // `wait` reports what failed. (Dropping `container` on an error
            // here kills and reaps the init.)
            if let Some(master) = receive_fd(&ours)? {
                let master = Arc::new(master);
                if stdio.stdin == Stdin::Pipe {
                    let writer = master
                        .try_clone()
                        .map_err(|e| RuntimeError::io("dup", "the pty master", e))?;
                    container.stdin = Some(File::from(writer));
                }
                container.tty = Some(master);
            }
        }
        Ok(container)
    }

    /// What records the command's reads ([`ContainerSpec::track_reads`]):
    /// take it before [`Container::wait`] and [`ReadWatch::finish`] it
    /// after.
    pub fn take_read_watch(&mut self) -> Option<ReadWatch> {
        self.read_watch.take()
    }

    /// The writer for the command's input ([`Stdin::Pipe`]); `None` once
    /// taken or without it. Dropping it closes the pipe (end of file); on a
    /// terminal send Ctrl-D (`\x04`) at the start of a line instead.
    pub fn take_stdin(&mut self) -> Option<File> {
        self.stdin.take()
    }

    /// Resizes the terminal (with a tty).
    pub fn tty_handle(&self) -> Option<TtyHandle> {
        self.tty.as_ref().map(|master| TtyHandle {
            master: Arc::clone(master),
        })
    }

    /// The container's pid 1 (the command, or the init with `--init`) in
    /// the caller's pid namespace.
    pub fn pid(&self) -> i32 {
        self.pid.as_raw()
    }

    pub fn kill_handle(&self) -> KillHandle {
        KillHandle {
            state: Arc::clone(&self.state),
        }
    }

    /// Streams output until the container ends (its pid 1 exited and the
    /// kernel killed whatever was left), then returns the command's status.
    pub fn wait(mut self, sink: &mut dyn OutputSink) -> Result<ExitStatus, RuntimeError> {
        let report = self.pump(sink)?;
        let init_status = self.reap()?;
        let killed = self.state.lock().map(|s| s.killed).unwrap_or(true);
        self.outcome(&report, init_status, killed)
    }

    fn pump(&mut self, sink: &mut dyn OutputSink) -> Result<Vec<u8>, RuntimeError> {
        let mut report = Vec::new();
        let mut buf = vec![0u8; READ_CHUNK];
        // An exec'd process has ended once its parent closed the report
        // (after reaping it); what it wrote is in the pipes by then. A
        // process it left in the background may hold them open for as
        // long as the container runs: that is not waited for (docker's
        // exec returns too).
        let exec = !self.plan.join_namespaces.is_empty();
        let mut timeout = PollTimeout::NONE;
        while (0..SLOTS).any(|i| self.slot_fd(i).is_some()) {
            if exec && self.report.is_none() {
                timeout = PollTimeout::ZERO;
            }
            let ready = self.poll_ready(timeout)?;
            if timeout == PollTimeout::ZERO && !ready.iter().any(|r| *r) {
                break;
            }
            for (index, readable) in ready.into_iter().enumerate() {
                if !readable {
                    continue;
                }
                let Some(fd) = self.slot_fd(index) else {
                    continue;
                };
                match read(fd, &mut buf) {
                    // A pty master reads EIO once no slave is left open.
                    Ok(0) => self.close_slot(index),
                    Err(Errno::EIO) if index == TTY => self.close_slot(index),
                    Ok(n) => match index {
                        STDOUT | TTY => sink.stdout(&buf[..n]),
                        STDERR => sink.stderr(&buf[..n]),
                        _ => report.extend_from_slice(&buf[..n]),
                    },
                    Err(Errno::EINTR) | Err(Errno::EAGAIN) => {}
                    Err(e) => return Err(RuntimeError::sys("read container output", e)),
                }
            }
        }
        Ok(report)
    }

    /// The descriptor read for output source `index` (see [`SLOTS`]).
    fn slot_fd(&self, index: usize) -> Option<BorrowedFd<'_>> {
        match index {
            STDOUT => self.stdout.as_ref().map(|fd| fd.as_fd()),
            STDERR => self.stderr.as_ref().map(|fd| fd.as_fd()),
            REPORT => self.report.as_ref().map(|fd| fd.as_fd()),
            _ => self.tty.as_deref().map(|fd| fd.as_fd()),
        }
    }

    fn close_slot(&mut self, index: usize) {
        match index {
            STDOUT => self.stdout = None,
            STDERR => self.stderr = None,
            REPORT => self.report = None,
            _ => self.tty = None,
        }
    }

    /// Which output sources can be read (or hit EOF).
    fn poll_ready(&self, timeout: PollTimeout) -> Result<[bool; SLOTS], RuntimeError> {
        let mut pollfds: Vec<PollFd> = Vec::new();
        let mut index = Vec::new();
        for i in 0..SLOTS {
            if let Some(fd) = self.slot_fd(i) {
                pollfds.push(PollFd::new(fd, PollFlags::POLLIN));
                index.push(i);
            }
        }
        match poll(&mut pollfds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(RuntimeError::sys("poll container output", e)),
        }
        let mut ready = [false; SLOTS];
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
        if !self.plan.init {
            // Pid 1 was the command: its own status is the answer (a setup
            // failure would have left a report above).
            return match init_status {
                WaitStatus::Exited(_, code) => Ok(ExitStatus::Exited(code)),
                WaitStatus::Signaled(_, signal, _) => Ok(ExitStatus::Signaled(signal as i32)),
                other => Err(RuntimeError::InitDied(format!("{other:?}"))),
            };
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
        // Pid 1 is reaped: the hang-up wakes the watcher, whose kill then
        // finds nothing, and it exits.
        drop(self.alive.take());
        if let Some(watcher) = self.watcher.take() {
            while let Err(Errno::EINTR) = waitpid(watcher, None) {}
        }
    }
}

/// Forks the watcher of a pid-1 command (see `child::watcher_main`), which
/// kills it if this process dies. `None` on kernels without pidfds (before
/// 5.3), where pid 1's parent-death signal is all there is.
fn spawn_watcher(pid: Pid, alive: &OwnedFd) -> Result<Option<Pid>, RuntimeError> {
    // Opened before the fork: pid 1 is our unreaped child, so the pid
    // cannot name anyone else yet. Close-on-exec, closed here on return.
    let pidfd = match sys::pidfd_open(pid.as_raw()) {
        // SAFETY: a descriptor just created, owned by nobody else.
        Ok(fd) => unsafe { OwnedFd::from_raw_fd(fd) },
        Err(Errno::ENOSYS) => return Ok(None),
        Err(e) => return Err(RuntimeError::sys("pidfd_open the container's pid 1", e)),
    };
    match sys::fork() {
        // Like the init, the child runs only async-signal-safe code.
        Ok(0) => watcher_main(alive.as_raw_fd(), pidfd.as_raw_fd()),
        Ok(watcher) => Ok(Some(Pid::from_raw(watcher))),
        Err(e) => Err(RuntimeError::sys("fork the container's watcher", e)),
    }
}

/// How [`Container::launch`] starts a child, besides the plan.
struct Launch {
    stdio: Stdio,
    state: Option<tempfile::TempDir>,
    cgroup: Option<ContainerCgroup>,
    /// Descriptors the child's plan names, closed here once it is cloned.
    held: Vec<OwnedFd>,
    read_watch: Option<ReadWatch>,
    /// `init_main` (a new container) or `exec_main` (joining one).
    entry: fn(&ChildArgs<'_>) -> !,
}

fn clone_child(
    plan: &Plan,
    fds: ChildFds,
    keep: &[RawFd],
    entry: fn(&ChildArgs<'_>) -> !,
) -> Result<Pid, RuntimeError> {
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
    let callback = Box::new(|| -> isize { entry(&args) });
    // SAFETY: without CLONE_VM the child gets a copy of this address space,
    // so `args` and the stack stay valid in it; the callback never returns
    // and runs only async-signal-safe code (see child.rs).
    let pid =
        unsafe { nix::sched::clone(callback, &mut stack, plan.clone_flags, Some(libc::SIGCHLD)) };
    pid.map_err(|e| RuntimeError::sys("clone container init", e))
}

/// A connected pair of unix stream sockets, close-on-exec. (libc rather
/// than nix's `socket` feature, which would add a dependency for two calls.)
fn socket_pair() -> Result<(OwnedFd, OwnedFd), RuntimeError> {
    let mut fds = [-1; 2];
    let kind = libc::SOCK_STREAM | libc::SOCK_CLOEXEC;
    // SAFETY: `fds` has room for the two descriptors.
    if unsafe { libc::socketpair(libc::AF_UNIX, kind, 0, fds.as_mut_ptr()) } < 0 {
        return Err(RuntimeError::sys("socketpair", Errno::last()));
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Receives one descriptor sent with SCM_RIGHTS (`sys::send_fd`); `None`
/// at end of file.
fn receive_fd(socket: &OwnedFd) -> Result<Option<OwnedFd>, RuntimeError> {
    #[repr(C, align(8))]
    struct Control([u8; 64]);
    let mut control = Control([0; 64]);
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: msghdr is plain data pointing at locals that outlive the
    // call; the control buffer is aligned and large enough for one
    // descriptor; the CMSG_* walk stays inside what the kernel filled.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.0.as_mut_ptr().cast();
        msg.msg_controllen = control.0.len() as _;
        loop {
            let n = libc::recvmsg(socket.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC);
            if n >= 0 {
                break;
            }
            match Errno::last() {
                Errno::EINTR => continue,
                e => return Err(RuntimeError::sys("receive the container's terminal", e)),
            }
        }
        let mut received = None;
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg);
                let count = ((*cmsg).cmsg_len as usize - (data as usize - cmsg as usize))
                    / std::mem::size_of::<RawFd>();
                for i in 0..count {
                    let fd = std::ptr::read_unaligned(data.cast::<RawFd>().add(i));
                    // The kernel installed it in our table; we own it.
                    let owned = OwnedFd::from_raw_fd(fd);
                    received.get_or_insert(owned);
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
        Ok(received)
    }
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

/// The paths of the rootfs a container's command read, recorded with
/// fanotify: a group whose mark the init puts on the container's root
/// mount just before the command runs (so the setup is not recorded, and
/// the bind mounts over the rootfs, which are other mounts, are not
/// either), and a thread here that reads its events, each an open file
/// whose path (as the container sees it) is kept. What it cannot see: a
/// path only `stat`ed or found missing (no file is opened), and the
/// reads of a file through a descriptor opened before the mark.
pub struct ReadWatch {
    group: Arc<nix::sys::fanotify::Fanotify>,
    reader: Option<std::thread::JoinHandle<Result<ReadPaths, RuntimeError>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

/// What a [`ReadWatch`] saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadPaths {
    /// Absolute, as the container sees them, sorted.
    pub paths: std::collections::BTreeSet<String>,
    /// Some reads are missing: the kernel's queue overflowed (it is
    /// unlimited, so only under memory pressure), an event's file could
    /// not be opened for us, or the command read more than
    /// [`MAX_READ_PATHS`] paths.
    pub incomplete: bool,
}

/// The most paths a [`ReadWatch`] keeps: a command reading millions of
/// files must not take the caller's memory with it.
pub const MAX_READ_PATHS: usize = 1 << 20;

impl ReadWatch {
    fn new() -> Result<ReadWatch, RuntimeError> {
        use nix::sys::fanotify::{EventFFlags, Fanotify, InitFlags};
        let group = Fanotify::init(
            InitFlags::FAN_CLASS_NOTIF
                | InitFlags::FAN_CLOEXEC
                | InitFlags::FAN_NONBLOCK
                | InitFlags::FAN_UNLIMITED_QUEUE,
            // Non-blocking: the kernel opens each event's file for us,
            // and a FIFO opened for reading would wait for a writer.
            EventFFlags::O_RDONLY
                | EventFFlags::O_LARGEFILE
                | EventFFlags::O_CLOEXEC
                | EventFFlags::O_NONBLOCK,
        )
        .map_err(|e| RuntimeError::sys("fanotify_init (recording a RUN's reads)", e))?;
        Ok(ReadWatch {
            group: Arc::new(group),
            reader: None,
            stop: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        })
    }

    fn group_fd(&self) -> RawFd {
        self.group.as_raw_fd()
    }

    /// Starts the thread that reads the events as they come (the queue
    /// would otherwise hold every one of them until the end).
    fn start(mut self) -> ReadWatch {
        let group = Arc::clone(&self.group);
        let stop = Arc::clone(&self.stop);
        self.reader = Some(std::thread::spawn(move || read_events(&group, &stop)));
        self
    }

    /// Once the container ended: the events left are read and the paths
    /// returned.
    pub fn finish(mut self) -> Result<ReadPaths, RuntimeError> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        match self.reader.take() {
            Some(reader) => reader.join().unwrap_or_else(|_| {
                Err(RuntimeError::InvalidSpec("the read watch panicked".into()))
            }),
            None => Ok(ReadPaths::default()),
        }
    }
}

impl Drop for ReadWatch {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// Reads `group`'s events until `stop` is set and none is left.
fn read_events(
    group: &nix::sys::fanotify::Fanotify,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<ReadPaths, RuntimeError> {
    use nix::sys::fanotify::MaskFlags;
    let mut seen = ReadPaths::default();
    loop {
        let stopping = stop.load(std::sync::atomic::Ordering::SeqCst);
        let events = match group.read_events() {
            Ok(events) => events,
            Err(Errno::EAGAIN) | Err(Errno::EINTR) => Vec::new(),
            // The event whose file could not be opened for us (a device
            // on the nodev rootfs) is gone; the rest are still queued.
            Err(_) => {
                seen.incomplete = true;
                continue;
            }
        };
        if events.is_empty() {
            if stopping {
                return Ok(seen);
            }
            let mut fds = [PollFd::new(group.as_fd(), PollFlags::POLLIN)];
            let _ = poll(&mut fds, PollTimeout::from(50u16));
            continue;
        }
        for event in events {
            if event.mask().contains(MaskFlags::FAN_Q_OVERFLOW) {
                seen.incomplete = true;
            }
            let Some(fd) = event.fd() else { continue };
            let link = format!("/proc/self/fd/{}", fd.as_raw_fd());
            if let Ok(path) = std::fs::read_link(&link) {
                let path = path.to_string_lossy();
                // A file deleted since is not one a layer below holds.
                if path.starts_with('/') && !path.ends_with(" (deleted)") {
                    if seen.paths.len() < MAX_READ_PATHS {
                        seen.paths.insert(path.into_owned());
                    } else if !seen.paths.contains(path.as_ref()) {
                        seen.incomplete = true;
                    }
                }
            }
        }
    }
}
