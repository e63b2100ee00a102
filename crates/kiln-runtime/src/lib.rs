//! kiln-runtime runs one process in a container: new mount, pid, uts, ipc,
//! cgroup and (optionally) network namespaces over an overlayfs rootfs
//! whose upper dir becomes the change set, with `/proc`, `/dev`, `/sys`,
//! `/etc/hosts`-style files, Docker's default capabilities and masked
//! paths, output streamed to the caller, and cleanup on every path.
//! It knows nothing about images or caching: callers pass unpacked layer
//! dirs in and turn the upper dir into a layer themselves.
//!
//! ```no_run
//! use kiln_runtime::{run, CollectedOutput, ContainerSpec, Network};
//!
//! let spec = ContainerSpec {
//!     lower_dirs: vec!["/var/lib/kiln/snapshots/base".into()],
//!     upper_dir: "/var/lib/kiln/tmp/run1/upper".into(),
//!     work_dir: "/var/lib/kiln/tmp/run1/work".into(),
//!     args: vec!["/bin/sh".into(), "-c".into(), "echo hi > /greeting".into()],
//!     env: vec!["PATH=/usr/bin:/bin".into()],
//!     cwd: "/".into(),
//!     hostname: "buildkitsandbox".into(),
//!     network: Network::Host,
//!     ..Default::default()
//! };
//! let mut output = CollectedOutput::default();
//! let status = run(&spec, &mut output)?;
//! assert!(status.success()); // upper now holds /greeting
//! # Ok::<(), kiln_runtime::RuntimeError>(())
//! ```
//!
//! # Why `nix` and not youki's `libcontainer`
//!
//! `libcontainer` is a full OCI runtime: it wants an OCI bundle and
//! `config.json`, a state directory per container, cgroup management
//! (`libcgroups`, systemd over D-Bus by default), and pulls in `oci-spec`'s
//! runtime types, `procfs`, `libseccomp` (a C library), `rust-criu`,
//! `chrono`, `regex`, `tracing` and others, about a hundred crates to build
//! on two cores, with `nix` 0.28 next to the workspace's 0.30. Its process
//! model (clone3 into an intermediate then an init process that execs the
//! user's command as pid 1) has no init of its own for `--init` (Docker
//! brings tini from outside), and its rootfs is a directory, so the
//! overlay of our snapshots, the mount points that must not reach the
//! upper dir and the teardown would still be our code. What
//! we need is about a thousand lines of mount and process plumbing, so
//! kiln uses `nix` (already a workspace dependency) and `libc`, with every
//! post-clone syscall behind one narrow module (`sys`), as libcontainer
//! does with its `Syscall` trait. The `caps` crate is not used either: it
//! works on `HashSet`s, and nothing may allocate after clone; the 14
//! capability numbers are constants (`caps.rs`).
//!
//! # Process model and fork safety
//!
//! [`Container::spawn`] prepares everything in the caller (paths and
//! argv as C strings, the mount steps, `PATH` candidates), then `clone`s
//! without `CLONE_VM` into the new namespaces. The child is the
//! container's pid 1 and runs only async-signal-safe code: raw syscalls on
//! the prepared data, no allocation, so a multi-threaded caller (tokio's
//! blocking pool later) is safe, and no helper binary or re-exec of
//! `/proc/self/exe` is needed. It mounts the rootfs and `pivot_root`s,
//! then:
//!
//! - by default (every RUN step, as BuildKit; `kiln run`, as Docker) it
//!   *execs the command itself*: the command is pid 1, `$$` is 1, and
//!   `/proc/1` is the command's own argv and environment (exec replaced
//!   kiln's). The caller waits on pid 1 directly and reports its exit code
//!   or signal. Orphans are reparented to the command, which reaps them
//!   or not, as under Docker without `--init`. When it exits the kernel
//!   kills everything left in the pid namespace, so `sh -c 'sleep 100 &
//!   exit 0'` returns at once.
//! - with [`ContainerSpec::init`] (`kiln run --init`, Docker's `--init`
//!   with tini) it stays as `kiln-init`: forks the command (pid 2),
//!   forwards SIGTERM/SIGINT/SIGHUP/SIGQUIT/SIGUSR1/SIGUSR2/SIGWINCH to it,
//!   reaps orphans, and when the command exits writes its status on the
//!   report pipe and exits, which ends the namespace the same way.
//!
//! Signals to a pid-1 command follow the kernel's rule for a namespace's
//! init: from inside the namespace only signals it has a handler for
//! arrive (`kill -9 1` does nothing); from the caller's namespace SIGKILL
//! always works and other signals need a handler. So
//! [`KillHandle::kill`] (SIGKILL) always ends a container, and a command
//! that ignores SIGTERM is stopped with SIGKILL after a grace (`kiln
//! stop`), as Docker does.
//!
//! Pid 1 gets `PR_SET_PDEATHSIG(SIGKILL)`, which fires when the *thread*
//! that spawned it exits: `wait` from the same thread (as [`run`] does),
//! or keep the spawning thread alive. The kernel clears it when pid 1's
//! ids change (`setresuid`/`setresgid` to a non-root USER), so pid 1 arms
//! it again after them, as runc does; it survives the exec of the command.
//! The kernel also clears it when pid 1, running as a non-root user (or
//! as root, for a setgid binary), execs a setuid, setgid or
//! file-capability binary (`USER app` then `RUN sudo make install`:
//! busybox sh and bash exec a last command). So a pid-1 command also has a
//! watcher: a fork of the caller (in the caller's pid namespace, holding
//! a pidfd of pid 1 and the read end of a pipe only the caller writes)
//! that SIGKILLs pid 1 when the caller's process is gone, and exits when
//! the [`Container`] is dropped. (Under `--init` the init never execs, and
//! its parent-death signal is enough.)
//!
//! Pid 1 calls `setsid`, so a terminal's Ctrl-C reaches kiln and not the
//! container; kiln decides (e.g. [`KillHandle::kill`]).
//!
//! # Standard streams
//!
//! By default ([`Container::spawn`], [`run`], every build step) stdin is
//! `/dev/null` and stdout/stderr are pipes read into the [`OutputSink`].
//! [`Container::spawn_with`] takes a [`Stdio`]: [`Stdin::Pipe`] gives the
//! caller a writer ([`Container::take_stdin`]); `tty: Some(size)` runs the
//! command on a pseudo-terminal, as runc does with a console socket: pid 1
//! opens it on the container's own devpts instance after `pivot_root` (so
//! `tty` prints `/dev/pts/0` inside, and `/dev/console` is bound to it),
//! sends the master back over a unix socket (SCM_RIGHTS, a stack buffer:
//! no allocation), and the command makes the slave its
//! stdin/stdout/stderr and, leading a session, its controlling terminal
//! (`TIOCSCTTY`; pid 1 opened it `O_NOCTTY`): as pid 1 the session its
//! earlier `setsid` made, under `--init` (pid 2) one of its own. The
//! parent reads the master as stdout, writes input to it and resizes it
//! ([`TtyHandle`]); [`terminal`] puts the caller's own terminal in raw
//! mode while attached.
//!
//! # Containment
//!
//! Besides the namespaces: pid 1 makes every mount `rslave` before it
//! mounts anything (nothing propagates back to the host), blanks kiln's
//! argv and environment in its memory (`cmdline`: what `/proc/1` shows
//! of `kiln-init` under `--init`; without it exec replaces them, and the
//! blanking only covers the setup), and the command runs
//! under Docker's default seccomp profile (`seccomp`, compiled before
//! `clone`, installed by the command before exec), with Docker's default
//! capabilities, masked and read-only `/proc` paths, and `no_new_privs`
//! only when asked for (as Docker). Secrets are written by the child on a
//! tmpfs of the container's own mount namespace.
//!
//! Not done yet: user namespaces for rootless runs (TODO: needs uid/gid
//! maps written by the parent between clone and setup, and the
//! mount-option limits of unprivileged overlayfs), cgroup v2 device rules
//! (see `cgroups.rs`), AppArmor/SELinux.

mod caps;
mod cgroups;
mod child;
mod cmdline;
mod container;
mod container_log;
mod container_root;
pub mod containers;
mod error;
pub use container_root::{in_container_root, ContainerRoot};
mod exec;
pub mod health;
pub use exec::ExecSpec;
mod layers;
pub use layers::{Found, LowerView};
mod plan;
mod prepare;
mod processes;
pub mod restart_policy;
pub mod seccomp;
mod spec;
mod sys;
pub mod terminal;
mod user;

pub use cgroups::{container_stats, is_frozen, set_frozen, update_resources, CgroupStats};
pub use container::{
    run, CollectedOutput, Container, KillHandle, OutputSink, ReadPaths, ReadWatch, TtyHandle,
    MAX_READ_PATHS,
};
pub use error::RuntimeError;
pub use processes::{container_processes, ProcessInfo};

/// Fails unless this process is root: containers need namespaces, mounts
/// and owners only root has here. Callers ask before preparing anything,
/// so a user sees this one line rather than what fails first.
pub fn require_root() -> Result<(), RuntimeError> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        Ok(())
    } else {
        Err(RuntimeError::NeedsRoot)
    }
}
/// The cgroup version containers are limited with here: `2` on a
/// unified hierarchy, else `1` (v1 hierarchies per controller).
pub fn cgroup_version() -> u8 {
    if cgroups_rs::hierarchies::is_cgroup2_unified_mode() {
        2
    } else {
        1
    }
}
/// Whether a binfmt_misc handler is registered and enabled for binaries
/// of `architecture` (an OCI name: `arm64`, `amd64`...), under the names
/// qemu-user-static and tonistiigi/binfmt give them (`qemu-aarch64`).
pub fn emulator_registered(architecture: &str) -> bool {
    let qemu = match architecture {
        "amd64" => "x86_64",
        "arm64" => "aarch64",
        "386" => "i386",
        other => other,
    };
    std::fs::read_to_string(format!("/proc/sys/fs/binfmt_misc/qemu-{qemu}"))
        .is_ok_and(|text| text.lines().next() == Some("enabled"))
}
pub use seccomp::Seccomp;
pub use spec::{
    BindSource, CapabilityChanges, ContainerSpec, ExitStatus, Mount, Network, Resources,
    SecretData, Stdin, Stdio, Ulimit, UlimitName, User, WindowSize, DEFAULT_PATH, MIN_MEMORY_BYTES,
};
pub use user::{process_user, resolve_groups, resolve_user, set_default_home, ResolvedUser};
