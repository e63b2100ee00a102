//! Code that runs after `clone`: the container's pid 1, which sets the
//! container up and then either execs the command itself (the default, as
//! Docker and BuildKit: the command is pid 1) or, with `--init`, stays as
//! the init and forks the command (pid 2).
//!
//! The caller may be multi-threaded, and only the cloning thread exists in
//! the child, so another thread may have held the allocator's or stdio's
//! lock at clone time. Hence everything here is async-signal-safe: no
//! allocation, no locks, no panics; only `Plan` data prepared by the
//! parent and the raw syscalls of `sys`. Failures are written as a
//! fixed-size record on the report pipe, then the process `_exit`s.

use std::os::fd::RawFd;

use nix::errno::Errno;

use crate::caps;
use crate::cgroups;
use crate::cmdline;
use crate::plan::{encode_failure, encode_status, Plan, Stage};
use crate::sys;

/// Descriptors the child inherits (all opened `O_CLOEXEC` by the parent).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChildFds {
    /// Read end of a pipe whose write end only the parent holds: hang-up
    /// means the parent is gone.
    pub alive: RawFd,
    /// Write end of a pipe the parent waits on: written (then closed with
    /// the other unkept descriptors) once the parent-death signal is set.
    pub armed: RawFd,
    pub report: RawFd,
    pub stdin: RawFd,
    pub stdout: RawFd,
    pub stderr: RawFd,
    /// With a tty: our end of a unix socket pair; the pty master goes back
    /// to the parent over it. -1 without a tty.
    pub tty_socket: RawFd,
}

/// What the cloned child gets: references only, nothing to drop.
pub(crate) struct ChildArgs<'a> {
    pub plan: &'a Plan,
    pub fds: ChildFds,
    /// Descriptors to keep open in init (sorted).
    pub keep: &'a [RawFd],
    pub argv: &'a [*const libc::c_char],
    pub envp: &'a [*const libc::c_char],
}

fn fail(report: RawFd, stage: Stage, index: usize, errno: Errno) -> ! {
    sys::write_all(report, &encode_failure(stage, index, errno));
    sys::exit(125)
}

/// The container's pid 1: sets up the rootfs, then becomes the command
/// (exec, no fork) or, with `plan.init`, forks it, forwards signals to it,
/// reaps every orphan, and reports the command's status.
pub(crate) fn init_main(args: &ChildArgs<'_>) -> ! {
    let plan = args.plan;
    let fds = args.fds;
    let check = |stage: Stage, index: usize, result: sys::SysResult| {
        if let Err(errno) = result {
            fail(fds.report, stage, index, errno);
        }
    };
    let signals = prologue(args, cgroups::join);

    // Before the first mount: nothing done in this namespace may reach
    // the host's mounts through shared propagation.
    check(Stage::MountPropagation, 0, sys::make_mounts_slave());
    for (i, (path, slot)) in plan.overlay_dirs.iter().enumerate() {
        check(Stage::OverlayDir, i, sys::reopen_dir_at(path, *slot));
    }
    for (i, step) in plan.pre_pivot.iter().enumerate() {
        check(Stage::PreStep, i, step.run());
    }
    // Nothing in the container may reach host dirs through init's fds.
    for (_, slot) in &plan.overlay_dirs {
        sys::close(*slot);
    }
    for fd in &plan.mount_fds {
        sys::close(*fd);
    }
    check(Stage::Hostname, 0, sys::sethostname(&plan.hostname));
    if plan.loopback_up {
        check(Stage::Loopback, 0, sys::loopback_up());
    }
    check(Stage::PivotRoot, 0, pivot_into(plan));
    for (i, step) in plan.post_pivot.iter().enumerate() {
        check(Stage::PostStep, i, step.run());
    }
    // As root and in the layer, like BuildKit's WORKDIR for RUN.
    for (i, dir) in plan.cwd_dirs.iter().enumerate() {
        check(Stage::CreateCwd, i, sys::mkdir_exist_ok(dir, 0o755));
    }
    // Last before the command: what the setup did is not the command's.
    if plan.read_watch >= 0 {
        check(
            Stage::WatchReads,
            0,
            sys::watch_reads_of_root(plan.read_watch),
        );
        sys::close(plan.read_watch);
    }

    let mut stdio = [fds.stdin, fds.stdout, fds.stderr];
    if let Some((rows, cols)) = plan.tty {
        let slave = open_tty(fds.report, fds.tty_socket, rows, cols, true);
        stdio = [slave; 3];
    }

    if !plan.init {
        // The command is pid 1 (as in Docker without --init, and in
        // BuildKit's RUN): no fork, so its exit ends the pid namespace and
        // the parent reaps its status directly.
        command_main(args, stdio, true)
    }
    fork_and_supervise(args, stdio, &signals)
}

/// How a child enters the container's cgroups: `cgroups::join` or
/// `cgroups::enter` (the failed descriptor's index and errno).
type CgroupEntry = fn(&[RawFd]) -> Result<(), (usize, Errno)>;

/// What every child does first (a new container's init and a joining
/// process alike): die with the cloning thread, be undumpable, blank
/// kiln's argv and environment, enter the container's cgroups (`join`:
/// and make a cgroup namespace; `enter`: only move), keep only its
/// descriptors, lead a session, and block the signals it waits for.
fn prologue(args: &ChildArgs<'_>, cgroups: CgroupEntry) -> libc::sigset_t {
    let plan = args.plan;
    let fds = args.fds;
    let check = |stage: Stage, index: usize, result: sys::SysResult| {
        if let Err(errno) = result {
            fail(fds.report, stage, index, errno);
        }
    };
    // Die with the thread that cloned us; the pipe check closes the race
    // where the parent died before prctl.
    check(
        Stage::ParentDeathSignal,
        0,
        sys::set_parent_death_signal(libc::SIGKILL),
    );
    if sys::pipe_peer_gone(fds.alive) {
        sys::exit(125);
    }
    // From here the signal fires if the cloning thread exits; tell it so it
    // may return (and exit) without racing us.
    sys::write_byte(fds.armed);
    // Init keeps its privileges while the command runs: nobody in the
    // container may ptrace it or read its /proc entries.
    check(Stage::ParentDeathSignal, 0, sys::set_not_dumpable());
    // Before anything of the container runs: kiln's argv and environment
    // (build args, secret paths) must not show in /proc/1.
    if let Some(areas) = &plan.arg_env {
        cmdline::scrub(areas);
    }
    // Into the container's cgroup before anything else runs here, so the
    // command (forked later) starts inside its limits.
    if let Err((index, errno)) = cgroups(&plan.cgroup_procs) {
        fail(fds.report, Stage::Cgroup, index, errno);
    }
    sys::close_fds_except(3, args.keep);
    sys::setsid();
    sys::umask(0);
    // A caller ignoring SIGCHLD would make the kernel auto-reap the
    // command and never tell us: start from default dispositions.
    sys::reset_signals();
    let signals = sys::init_signal_set();
    check(Stage::Signals, 0, sys::block_signals(&signals));
    signals
}

/// Forks the command, then (as the init of a new container, or the
/// parent of an exec'd process) forwards signals to it and reports its
/// status.
fn fork_and_supervise(args: &ChildArgs<'_>, stdio: [RawFd; 3], signals: &libc::sigset_t) -> ! {
    let fds = args.fds;
    let command = match sys::fork() {
        Ok(0) => command_main(args, stdio, false),
        Ok(pid) => pid,
        Err(errno) => fail(fds.report, Stage::Fork, 0, errno),
    };
    for fd in [fds.stdin, fds.stdout, fds.stderr] {
        sys::close(fd);
    }
    if args.plan.tty.is_some() {
        // The slave: only the command's processes hold it now, so the
        // parent reads EIO on the master once they are all gone.
        sys::close(stdio[0]);
    }
    drop_init_privileges(args.plan.last_cap);
    supervise(command, fds.report, signals)
}

/// A process joining a running container (`exec`), forked by the caller
/// and staying in the caller's pid namespace, where the container cannot
/// see it: it enters the container's cgroups and namespaces (the
/// `setns` of a pid namespace applies to children only), then forks the
/// command, which is in the container's pid namespace and runs with the
/// container's confinement (`command_main`), and supervises it as an
/// init does. It is not dumpable from the start, so while the command
/// still runs kiln's code (until its exec) nobody in the container can
/// ptrace it or open its `/proc` entries (runc's CVE-2019-5736), and
/// kiln's argv and environment are blanked first.
pub(crate) fn exec_main(args: &ChildArgs<'_>) -> ! {
    let plan = args.plan;
    let fds = args.fds;
    let check = |stage: Stage, index: usize, result: sys::SysResult| {
        if let Err(errno) = result {
            fail(fds.report, stage, index, errno);
        }
    };
    let signals = prologue(args, cgroups::enter);
    // By descriptor (opened by the parent), so no path is looked up in a
    // namespace half joined. Joining the mount namespace makes the
    // container's root this process's root and working directory.
    for (i, &(fd, nstype, _)) in plan.join_namespaces.iter().enumerate() {
        check(Stage::JoinNamespace, i, sys::setns(fd, nstype));
        sys::close(fd);
    }
    let mut stdio = [fds.stdin, fds.stdout, fds.stderr];
    if let Some((rows, cols)) = plan.tty {
        // A new terminal on the container's devpts; `/dev/console` stays
        // the container's own.
        let slave = open_tty(fds.report, fds.tty_socket, rows, cols, false);
        stdio = [slave; 3];
    }
    fork_and_supervise(args, stdio, &signals)
}

/// Allocates the container's terminal, as runc does with a console
/// socket: the pty comes from the container's own devpts instance (mounted
/// by `prepare`'s steps with `newinstance`), so inside the container
/// `tty` names a real `/dev/pts/N` and `/dev/console` is that terminal;
/// the master goes back to the parent over `socket` (SCM_RIGHTS) and the
/// slave is returned for the command's stdio. A pty opened on the host's
/// devpts would work too, but its name would resolve to nothing inside.
fn open_tty(report: RawFd, socket: RawFd, rows: u16, cols: u16, console: bool) -> RawFd {
    let check = |stage: Stage, result: sys::SysResult| {
        if let Err(errno) = result {
            fail(report, stage, 0, errno);
        }
    };
    let (master, slave) = match sys::open_pty(rows, cols) {
        Ok(pair) => pair,
        Err(errno) => fail(report, Stage::Tty, 0, errno),
    };
    if console {
        let mut path = [0u8; 32];
        check(Stage::Console, sys::pts_path(master, &mut path));
        let console = c"/dev/console";
        check(Stage::Console, sys::touch(console, 0o600));
        let pts = match std::ffi::CStr::from_bytes_until_nul(&path) {
            Ok(pts) => pts,
            Err(_) => fail(report, Stage::Console, 0, Errno::EINVAL),
        };
        check(
            Stage::Console,
            sys::mount(Some(pts), console, None, libc::MS_BIND, None),
        );
    }
    check(Stage::Tty, sys::send_fd(socket, master));
    sys::close(master);
    sys::close(socket);
    slave
}

fn pivot_into(plan: &Plan) -> sys::SysResult {
    sys::chdir(&plan.merged)?;
    sys::pivot_root_here()?;
    // The old root is stacked on "."; detach it so no host path remains.
    sys::umount_detach(c".")?;
    sys::chdir(c"/")
}

/// After the fork init only signals and reaps: keep CAP_KILL (the command
/// may run as another uid) and drop the rest, best effort.
fn drop_init_privileges(last_cap: u32) {
    for cap in 0..=last_cap {
        if caps::INIT_MASK & (1 << cap) == 0 {
            let _ = sys::drop_bounding_cap(cap);
        }
    }
    let _ = sys::capset(caps::INIT_MASK, caps::INIT_MASK, 0);
}

fn supervise(command: libc::pid_t, report: RawFd, signals: &libc::sigset_t) -> ! {
    loop {
        let sig = sys::wait_signal(signals);
        if sig != libc::SIGCHLD {
            sys::kill(command, sig);
            continue;
        }
        while let Some((pid, status)) = sys::reap_one() {
            if pid == command {
                sys::write_all(report, &encode_status(status));
                // Exiting as pid 1 makes the kernel kill whatever is left.
                sys::exit(0);
            }
        }
    }
}

/// The command: stdio, capabilities, credentials, cwd, exec. `pid1`: this
/// is the container's pid 1 itself (no init), already a session leader
/// and holding the parent-death signal.
fn command_main(args: &ChildArgs<'_>, stdio: [RawFd; 3], pid1: bool) -> ! {
    let plan = args.plan;
    let fds = args.fds;
    let check = |stage: Stage, result: sys::SysResult| {
        if let Err(errno) = result {
            fail(fds.report, stage, 0, errno);
        }
    };
    sys::reset_signals();
    for (target, fd) in stdio.into_iter().enumerate() {
        check(Stage::Stdio, sys::dup2(fd, target as RawFd));
    }
    // The alive pipe stays (close-on-exec) for the check after the
    // credentials change below.
    let keep = if fds.alive < fds.report {
        [fds.alive, fds.report]
    } else {
        [fds.report, fds.alive]
    };
    sys::close_fds_except(3, &keep);
    if plan.tty.is_some() {
        // The command (not an init) owns the terminal: it leads a session
        // whose controlling tty it is, so job control, Ctrl-C from the
        // terminal and SIGWINCH on resize reach its process group. As pid
        // 1 it already leads the session `init_main` made (setsid again
        // would fail: it leads its process group), with no terminal yet
        // (the slave was opened O_NOCTTY).
        if !pid1 {
            check(Stage::ControllingTty, sys::new_session());
        }
        check(Stage::ControllingTty, sys::set_controlling_tty(0));
    }
    sys::umask(0o022);

    // As runc: without no_new_privs installing a filter needs
    // CAP_SYS_ADMIN, so it comes before the capabilities are dropped (the
    // calls up to exec are all in Docker's profile); with it, as late as
    // possible.
    if !plan.no_new_privs {
        check(Stage::Seccomp, install_seccomp(plan));
    }
    // The ids change with CAP_SETUID and CAP_SETGID held even when the
    // command is not to keep them (`--cap-drop ALL`): dropped after, as
    // runc does.
    for &(resource, soft, hard) in &plan.rlimits {
        check(Stage::Rlimits, sys::setrlimit(resource, soft, hard));
    }
    let id_caps = (1 << caps::SETUID) | (1 << caps::SETGID);
    check(
        Stage::Capabilities,
        set_command_caps(plan.last_cap, plan.command_caps, id_caps),
    );
    check(Stage::Groups, sys::setgroups(&plan.groups));
    check(Stage::Setgid, sys::setresgid(plan.gid));
    // Leaving uid 0 clears the permitted and effective sets, as Docker
    // wants for non-root users; the bounding set stays limited.
    check(Stage::Setuid, sys::setresuid(plan.uid));
    if plan.uid == 0 && plan.command_caps & id_caps != id_caps {
        check(
            Stage::Capabilities,
            sys::capset(plan.command_caps, plan.command_caps, 0),
        );
    }
    {
        // Nothing else ends the container if kiln dies: the kernel clears
        // the parent-death signal when the effective or fs ids change
        // (commit_creds), as they just did for a non-root USER, so arm it
        // again (as runc does), and close the race with a parent that died
        // meanwhile as `init_main` does. It then survives the exec of any
        // binary that is not setuid/setgid or file-capable (see lib.rs).
        // Forked (by an init, or by `exec_main`), the command gets it too:
        // an exec'd process dies with the `kiln exec` that runs it (whose
        // forked parent is killed with it), as it would with its
        // container.
        check(
            Stage::ParentDeathSignal,
            sys::set_parent_death_signal(libc::SIGKILL),
        );
        if sys::pipe_peer_gone(fds.alive) {
            sys::exit(125);
        }
    }
    if plan.no_new_privs {
        check(Stage::NoNewPrivs, sys::set_no_new_privs());
        check(Stage::Seccomp, install_seccomp(plan));
    }
    check(Stage::Chdir, sys::chdir(&plan.cwd));
    exec(plan, args, fds.report)
}

fn install_seccomp(plan: &Plan) -> sys::SysResult {
    for program in &plan.seccomp {
        sys::install_seccomp(program)?;
    }
    Ok(())
}

/// The bounding set limited to `keep`; the permitted and effective sets
/// to `keep` and, for now, `also` (what changing the ids needs).
fn set_command_caps(last_cap: u32, keep: u64, also: u64) -> sys::SysResult {
    for cap in 0..=last_cap {
        if keep & (1 << cap) == 0 {
            sys::drop_bounding_cap(cap)?;
        }
    }
    sys::capset(keep | also, keep | also, 0)?;
    match sys::clear_ambient_caps() {
        // Kernels before 4.3 have no ambient set.
        Err(Errno::EINVAL) => Ok(()),
        other => other,
    }
}

fn exec(plan: &Plan, args: &ChildArgs<'_>, report: RawFd) -> ! {
    let mut denied = false;
    for candidate in &plan.exec_candidates {
        match sys::execve(candidate, args.argv, args.envp) {
            Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP | Errno::ENAMETOOLONG => {}
            Errno::EACCES => denied = true,
            errno => fail_exec(report, errno),
        }
    }
    fail_exec(report, if denied { Errno::EACCES } else { Errno::ENOENT })
}

fn fail_exec(report: RawFd, errno: Errno) -> ! {
    sys::write_all(report, &encode_failure(Stage::Exec, 0, errno));
    sys::exit(if errno == Errno::ENOENT { 127 } else { 126 })
}

/// The watcher of a container whose command is pid 1, forked by the parent
/// (in the caller's pid namespace, outside the container): it waits until
/// the caller's process is gone, hanging up the alive pipe (or the caller
/// is done with the container), then SIGKILLs pid 1 through `pidfd`, a
/// no-op if it was already reaped. Pid 1's parent-death signal does not
/// suffice: the kernel clears it when pid 1 execs a setuid, setgid or
/// file-capability binary as a non-root user (a setgid one even as root),
/// and nothing would then end the container with kiln.
pub(crate) fn watcher_main(alive: RawFd, pidfd: RawFd) -> ! {
    // The caller's signals (Ctrl-C to its process group) are not ours, and
    // no descriptor of the caller may be kept open by this process (the
    // alive pipe's write end least of all).
    sys::block_all_signals();
    let keep = if alive < pidfd {
        [alive, pidfd]
    } else {
        [pidfd, alive]
    };
    sys::close_fds_except(0, &keep);
    sys::wait_pipe_peer_gone(alive);
    sys::pidfd_kill(pidfd);
    sys::exit(0)
}
