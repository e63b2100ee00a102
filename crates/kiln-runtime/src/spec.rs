//! The typed description of one container run (`ContainerSpec` and its
//! parts) and the result type `ExitStatus`. Validation lives here so that
//! nothing is started for a spec that cannot work.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::RuntimeError;
use crate::seccomp::Seccomp;

/// Default `PATH` when the spec's environment has none (Docker's).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What to run and in which filesystem.
#[derive(Debug, Clone, Default)]
pub struct ContainerSpec {
    /// Overlay lower dirs, top-most first (unpacked layer snapshots). May be
    /// empty (a `FROM scratch` stage): the runtime adds its own lower dir.
    pub lower_dirs: Vec<PathBuf>,
    /// Overlay upper dir; after the run it holds exactly the change set
    /// (overlay whiteouts included). Created if missing.
    pub upper_dir: PathBuf,
    /// Overlay work dir, on the same filesystem as `upper_dir`. Created if
    /// missing; the caller removes it after the run.
    pub work_dir: PathBuf,
    /// argv, already resolved (shell form is `["/bin/sh", "-c", cmd]`).
    pub args: Vec<String>,
    /// `KEY=VALUE` entries; `PATH` defaults to [`DEFAULT_PATH`].
    pub env: Vec<String>,
    /// Absolute working directory; created (root-owned, 0755) if missing,
    /// and that creation is part of the change set, as in BuildKit.
    pub cwd: String,
    /// Credentials of the command (see [`crate::resolve_user`]).
    pub user: User,
    /// Hostname inside the container (also written to `/etc/hostname`).
    pub hostname: String,
    pub network: Network,
    /// Extra mounts inside the rootfs, applied in order.
    pub mounts: Vec<Mount>,
    /// Content of `/etc/hosts`; `None`: localhost entries and the hostname.
    pub hosts: Option<String>,
    /// `--add-host`: (name, address) lines after those.
    pub extra_hosts: Vec<(String, String)>,
    /// Content of `/etc/resolv.conf`; `None`: the host's file.
    pub resolv_conf: Option<String>,
    /// Where the per-run state dir is created (default: the system temp
    /// dir). It never holds anything the caller needs after the run.
    pub state_parent: Option<PathBuf>,
    /// `RUN --security=insecure` / `kiln run --privileged`: every
    /// capability, no masked or read-only `/proc` paths, every device, no
    /// seccomp.
    pub privileged: bool,
    /// The command's seccomp filter (ignored when `privileged`).
    pub seccomp: Seccomp,
    /// `--cap-add` / `--cap-drop` over Docker's default set (ignored when
    /// `privileged`).
    pub capabilities: CapabilityChanges,
    /// `--read-only`: the rootfs is mounted read-only (`/dev`, `/proc`,
    /// `/sys`, bind and tmpfs mounts are what they are).
    pub read_only: bool,
    /// `--ulimit`: resource limits the command starts with (others are
    /// kiln's own, inherited).
    pub ulimits: Vec<Ulimit>,
    /// `--shm-size`: the size of `/dev/shm` in bytes (none: Docker's 64
    /// MiB).
    pub shm_size: Option<u64>,
    /// `--security-opt no-new-privileges`: `PR_SET_NO_NEW_PRIVS` for the
    /// command, so setuid binaries and file capabilities grant nothing.
    /// Off by default, as in Docker (`su`, `sudo`, `gosu` work).
    pub no_new_privileges: bool,
    /// Limits of the container's cgroup (see [`Resources`]).
    pub resources: Resources,
    /// `docker run --init`: pid 1 is kiln's own init (`kiln-init`), which
    /// forks the command (pid 2), forwards signals to it, reaps orphans
    /// and reports its status. Off (the default, and always for RUN, as
    /// BuildKit): the command itself is pid 1, so it gets only the signals
    /// it has handlers for (SIGKILL from outside always works) and reaps
    /// the orphans reparented to it.
    pub init: bool,
    /// Mount the overlay `volatile`: the kernel skips every sync of the
    /// upper dir, the command's `fsync`s (dpkg's, a database's) and the
    /// one that unmounting the overlay does, which waits for every dirty
    /// page of the upper dir's whole filesystem. For an upper dir that is
    /// committed or thrown away after the run (a build step's: its caller
    /// decides what reaches the disk, and when); never for one mounted
    /// again later, which a crash would leave unmountable.
    pub volatile_upper: bool,
    /// Record which paths of the rootfs the command reads
    /// ([`crate::Container::take_read_watch`]).
    pub track_reads: bool,
}

/// Limits of the container's cgroup, as `docker run --memory --cpus
/// --pids-limit` set them; `None` is unlimited. Every container gets a
/// cgroup (with the device rules) whatever these say.
/// Capabilities added to and dropped from Docker's default set, as bit
/// masks (bit N: capability N).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapabilityChanges {
    pub add: u64,
    pub drop: u64,
}

impl CapabilityChanges {
    /// `--cap-add` and `--cap-drop` values as docker takes them: `ALL`,
    /// `CAP_NET_ADMIN`, `net_admin` (case and the prefix do not matter).
    pub fn parse(add: &[String], drop: &[String]) -> Result<CapabilityChanges, String> {
        let masks = |names: &[String], flag: &str| -> Result<u64, String> {
            names.iter().try_fold(0u64, |mask, name| {
                let upper = name.trim().to_ascii_uppercase();
                if upper == "ALL" {
                    return Ok(u64::MAX);
                }
                let full = if upper.starts_with("CAP_") {
                    upper
                } else {
                    format!("CAP_{upper}")
                };
                let number = crate::caps::number(&full).ok_or_else(|| {
                    format!("{flag} {name:?}: not a capability (CAP_NET_ADMIN, ALL...)")
                })?;
                Ok(mask | (1 << number))
            })
        };
        Ok(CapabilityChanges {
            add: masks(add, "--cap-add")?,
            drop: masks(drop, "--cap-drop")?,
        })
    }

    /// `default` with the drops taken out and the additions put in, as
    /// docker applies them (dropping ALL and adding one leaves that one),
    /// no more than `available`.
    pub fn apply(&self, default: u64, available: u64) -> u64 {
        ((default & !self.drop) | self.add) & available
    }
}

/// `--ulimit NAME=SOFT[:HARD]`: a resource limit (setrlimit) the command
/// starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ulimit {
    /// docker's name: `nofile`, `nproc`, `core`...
    pub name: UlimitName,
    pub soft: u64,
    pub hard: u64,
}

/// The limits docker's `--ulimit` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UlimitName {
    Core,
    Cpu,
    Data,
    Fsize,
    Locks,
    Memlock,
    Msgqueue,
    Nice,
    Nofile,
    Nproc,
    Rss,
    Rtprio,
    Rttime,
    Sigpending,
    Stack,
}

impl UlimitName {
    const ALL: [(&'static str, UlimitName); 15] = [
        ("core", UlimitName::Core),
        ("cpu", UlimitName::Cpu),
        ("data", UlimitName::Data),
        ("fsize", UlimitName::Fsize),
        ("locks", UlimitName::Locks),
        ("memlock", UlimitName::Memlock),
        ("msgqueue", UlimitName::Msgqueue),
        ("nice", UlimitName::Nice),
        ("nofile", UlimitName::Nofile),
        ("nproc", UlimitName::Nproc),
        ("rss", UlimitName::Rss),
        ("rtprio", UlimitName::Rtprio),
        ("rttime", UlimitName::Rttime),
        ("sigpending", UlimitName::Sigpending),
        ("stack", UlimitName::Stack),
    ];

    /// The `RLIMIT_*` resource number.
    // glibc's constants are u32 and musl's i32: the cast is for musl.
    #[allow(clippy::unnecessary_cast)]
    pub(crate) fn resource(self) -> u32 {
        (match self {
            UlimitName::Core => libc::RLIMIT_CORE,
            UlimitName::Cpu => libc::RLIMIT_CPU,
            UlimitName::Data => libc::RLIMIT_DATA,
            UlimitName::Fsize => libc::RLIMIT_FSIZE,
            UlimitName::Locks => libc::RLIMIT_LOCKS,
            UlimitName::Memlock => libc::RLIMIT_MEMLOCK,
            UlimitName::Msgqueue => libc::RLIMIT_MSGQUEUE,
            UlimitName::Nice => libc::RLIMIT_NICE,
            UlimitName::Nofile => libc::RLIMIT_NOFILE,
            UlimitName::Nproc => libc::RLIMIT_NPROC,
            UlimitName::Rss => libc::RLIMIT_RSS,
            UlimitName::Rtprio => libc::RLIMIT_RTPRIO,
            UlimitName::Rttime => libc::RLIMIT_RTTIME,
            UlimitName::Sigpending => libc::RLIMIT_SIGPENDING,
            UlimitName::Stack => libc::RLIMIT_STACK,
        }) as u32
    }
}

impl Ulimit {
    /// `nofile=1024:2048`, `nproc=512` (soft and hard the same), `-1`
    /// for unlimited; the soft limit no higher than the hard one.
    pub fn parse(spec: &str) -> Result<Ulimit, String> {
        let fail = |why: &str| format!("--ulimit {spec:?}: {why}");
        let (name, values) = spec
            .split_once('=')
            .ok_or_else(|| fail("expected NAME=SOFT[:HARD]"))?;
        let name = UlimitName::ALL
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, u)| *u)
            .ok_or_else(|| fail("not a limit docker knows (nofile, nproc, core, stack...)"))?;
        let number = |text: &str| -> Result<u64, String> {
            if text == "-1" {
                return Ok(libc::RLIM_INFINITY);
            }
            text.parse::<u64>()
                .map_err(|_| fail("limits are numbers or -1"))
        };
        let (soft, hard) = match values.split_once(':') {
            Some((soft, hard)) => (number(soft)?, number(hard)?),
            None => (number(values)?, number(values)?),
        };
        if soft > hard {
            return Err(fail("the soft limit is above the hard one"));
        }
        Ok(Ulimit { name, soft, hard })
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    /// Memory in bytes; memory plus swap is twice that (Docker's default
    /// when `--memory-swap` is not given). Over it the kernel's OOM killer
    /// SIGKILLs a process of the container (exit 137).
    pub memory_bytes: Option<u64>,
    /// CPU time as a number of CPUs (`0.5`: half of one), enforced as a
    /// CFS quota per 100 ms period.
    pub cpus: Option<f64>,
    /// Tasks (processes and threads) the container may have at once,
    /// its init included; past it `fork` and `clone` fail with EAGAIN.
    pub pids_limit: Option<u64>,
}

/// Docker's smallest `--memory`.
pub const MIN_MEMORY_BYTES: u64 = 6 * 1024 * 1024;

impl Resources {
    /// Checks the limits (also part of [`ContainerSpec::validate`]).
    pub fn validate(&self) -> Result<(), RuntimeError> {
        if let Some(bytes) = self.memory_bytes {
            if bytes < MIN_MEMORY_BYTES {
                return Err(invalid(format!(
                    "memory limit {bytes} bytes is below the minimum of 6 MiB"
                )));
            }
        }
        if let Some(cpus) = self.cpus {
            let available = std::thread::available_parallelism().map_or(1, |n| n.get());
            if !(cpus >= 0.01 && cpus <= available as f64) {
                return Err(invalid(format!(
                    "cpus {cpus}: the range is 0.01 to {available} (the CPUs available)"
                )));
            }
        }
        if self.pids_limit == Some(0) {
            return Err(invalid("a pids limit of 0 would not even let the init run"));
        }
        Ok(())
    }
}

/// How the command's standard streams are connected. Kept apart from
/// [`ContainerSpec`] (build steps always run with the default: stdin
/// `/dev/null`, stdout and stderr piped to the sink).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stdio {
    pub stdin: Stdin,
    /// `Some`: a pseudo-terminal of this size, allocated inside the
    /// container, is the command's stdin, stdout and stderr (and its
    /// controlling terminal, `/dev/tty`, and `/dev/console`). Its output
    /// reaches [`crate::OutputSink::stdout`]: stdout and stderr are one
    /// stream on a terminal, as with `docker run -t`.
    pub tty: Option<WindowSize>,
}

/// Where the command's input comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Stdin {
    /// `/dev/null` (with a tty: the terminal, but nobody writes to it).
    #[default]
    Null,
    /// The caller writes it through [`crate::Container::take_stdin`]: a
    /// pipe (closing it is end of file), or with a tty the terminal's
    /// master side (input is then subject to the terminal's line
    /// discipline: echo, Ctrl-C, Ctrl-D...).
    Pipe,
}

/// A terminal's size in character cells.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WindowSize {
    pub rows: u16,
    pub cols: u16,
}

/// Numeric credentials of the container's command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

/// Network namespace choice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Network {
    /// Share the host's network namespace.
    Host,
    /// A new network namespace with only `lo`, up.
    #[default]
    None,
}

/// An extra mount inside the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mount {
    /// Bind a host file or directory to `target` (absolute, inside the rootfs).
    Bind {
        source: PathBuf,
        target: String,
        readonly: bool,
    },
    /// Bind what an open descriptor refers to (typically an `O_PATH` one
    /// the caller resolved inside a root with `openat2(RESOLVE_IN_ROOT)`),
    /// so no path is resolved on the host again: the child mounts
    /// `/proc/self/fd/N`.
    BindFd {
        source: BindSource,
        target: String,
        readonly: bool,
    },
    /// A fresh tmpfs at `target`.
    Tmpfs {
        target: String,
        size_bytes: Option<u64>,
    },
    /// A read-only file holding `data` at `target`, written by the child
    /// on a tmpfs of the container's own mount namespace: it never touches
    /// a disk and is gone with the container, even after a SIGKILL.
    Secret {
        target: String,
        data: SecretData,
        mode: u32,
        uid: u32,
        gid: u32,
    },
}

/// A secret's bytes; `Debug` shows only their length.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretData(pub Vec<u8>);

impl std::fmt::Debug for SecretData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{} bytes>", self.0.len())
    }
}

/// The descriptor of a [`Mount::BindFd`], shared by clones of the spec
/// and open as long as any of them.
#[derive(Debug, Clone)]
pub struct BindSource(Arc<OwnedFd>);

impl BindSource {
    pub fn new(fd: OwnedFd) -> BindSource {
        BindSource(Arc::new(fd))
    }

    pub(crate) fn raw(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    /// The path the child mounts (its descriptor table is a copy of ours).
    pub(crate) fn proc_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.raw()))
    }
}

impl PartialEq for BindSource {
    fn eq(&self, other: &BindSource) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for BindSource {}

impl Mount {
    pub fn target(&self) -> &str {
        match self {
            Mount::Bind { target, .. }
            | Mount::BindFd { target, .. }
            | Mount::Tmpfs { target, .. }
            | Mount::Secret { target, .. } => target,
        }
    }

    /// A bind mount's source path as the child mounts it, and whether it
    /// is read-only; `None` for a tmpfs.
    pub(crate) fn bind_source(&self) -> Option<(PathBuf, bool)> {
        match self {
            Mount::Bind {
                source, readonly, ..
            } => Some((source.clone(), *readonly)),
            Mount::BindFd {
                source, readonly, ..
            } => Some((source.proc_path(), *readonly)),
            Mount::Tmpfs { .. } | Mount::Secret { .. } => None,
        }
    }
}

/// How the container's main process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Exited(i32),
    Signaled(i32),
}

impl ExitStatus {
    pub fn success(self) -> bool {
        self == ExitStatus::Exited(0)
    }

    /// The shell convention Docker uses: the exit code, or 128 + signal.
    pub fn code(self) -> i32 {
        match self {
            ExitStatus::Exited(code) => code,
            ExitStatus::Signaled(sig) => 128 + sig,
        }
    }

    pub(crate) fn from_wait_status(status: i32) -> Option<Self> {
        if libc::WIFEXITED(status) {
            Some(ExitStatus::Exited(libc::WEXITSTATUS(status)))
        } else if libc::WIFSIGNALED(status) {
            Some(ExitStatus::Signaled(libc::WTERMSIG(status)))
        } else {
            None
        }
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Exited(code) => write!(f, "exit code {code}"),
            ExitStatus::Signaled(sig) => write!(f, "killed by signal {sig}"),
        }
    }
}

fn invalid(msg: impl Into<String>) -> RuntimeError {
    RuntimeError::InvalidSpec(msg.into())
}

impl ContainerSpec {
    /// Checks everything that can be checked without starting anything.
    pub fn validate(&self) -> Result<(), RuntimeError> {
        if self.args.is_empty() || self.args[0].is_empty() {
            return Err(invalid("no command to run"));
        }
        for (what, value) in self.strings() {
            if value.contains('\0') {
                return Err(invalid(format!("{what} contains a NUL byte: {value:?}")));
            }
        }
        for entry in &self.env {
            if !entry.contains('=') || entry.starts_with('=') {
                return Err(invalid(format!("env entry {entry:?} is not KEY=VALUE")));
            }
        }
        container_path(&self.cwd).map_err(|e| invalid(format!("cwd: {e}")))?;
        if self.hostname.is_empty() || self.hostname.len() > 64 {
            return Err(invalid(format!(
                "hostname {:?} must be 1 to 64 bytes",
                self.hostname
            )));
        }
        for dir in self
            .lower_dirs
            .iter()
            .chain([&self.upper_dir, &self.work_dir])
        {
            if !dir.is_absolute() {
                return Err(invalid(format!(
                    "overlay dir {} is not absolute",
                    dir.display()
                )));
            }
        }
        for mount in &self.mounts {
            validate_mount(mount)?;
        }
        self.resources.validate()
    }

    fn strings(&self) -> impl Iterator<Item = (&'static str, &str)> {
        let args = self.args.iter().map(|a| ("argument", a.as_str()));
        let env = self.env.iter().map(|e| ("env entry", e.as_str()));
        let rest = [
            ("cwd", self.cwd.as_str()),
            ("hostname", self.hostname.as_str()),
        ];
        args.chain(env).chain(rest)
    }

    /// The environment with `PATH` defaulted, as the command will see it.
    pub(crate) fn effective_env(&self) -> Vec<String> {
        let mut env = self.env.clone();
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.push(format!("PATH={DEFAULT_PATH}"));
        }
        env
    }

    /// `PATH` as the command will see it (last definition wins, like a shell).
    pub(crate) fn path_var(&self) -> String {
        self.env
            .iter()
            .rev()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or(DEFAULT_PATH)
            .to_string()
    }
}

fn validate_mount(mount: &Mount) -> Result<(), RuntimeError> {
    let target = mount.target();
    let parts = container_path(target).map_err(|e| invalid(format!("mount target: {e}")))?;
    match parts.first().map(String::as_str) {
        None => return Err(invalid("a mount cannot replace the root directory")),
        Some("proc") | Some("sys") => {
            return Err(invalid(format!(
                "mount target {target:?} is inside /proc or /sys"
            )))
        }
        _ => {}
    }
    if let Mount::Bind { source, .. } = mount {
        if !source.is_absolute() {
            return Err(invalid(format!(
                "bind source {} is not absolute",
                source.display()
            )));
        }
    }
    Ok(())
}

/// Splits an absolute container path into its normal components, refusing
/// `..` (a target must not depend on symlink-free lexical tricks).
pub(crate) fn container_path(path: &str) -> Result<Vec<String>, String> {
    if !path.starts_with('/') {
        return Err(format!("{path:?} is not absolute"));
    }
    if path.contains('\0') {
        return Err(format!("{path:?} contains a NUL byte"));
    }
    let mut parts = Vec::new();
    for component in Path::new(path).components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(name) => parts.push(name.to_string_lossy().into_owned()),
            Component::ParentDir => return Err(format!("{path:?} contains '..'")),
            Component::Prefix(_) => return Err(format!("{path:?} is not a Unix path")),
        }
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ContainerSpec {
        ContainerSpec {
            upper_dir: "/u".into(),
            work_dir: "/w".into(),
            args: vec!["/bin/true".into()],
            cwd: "/".into(),
            hostname: "h".into(),
            ..Default::default()
        }
    }

    #[test]
    fn accepts_minimal_spec() {
        spec().validate().unwrap();
    }

    #[test]
    fn rejects_bad_input_without_panicking() {
        type Edit = Box<dyn Fn(&mut ContainerSpec)>;
        let cases: Vec<Edit> = vec![
            Box::new(|s| s.args.clear()),
            Box::new(|s| s.args = vec![String::new()]),
            Box::new(|s| s.args.push("a\0b".into())),
            Box::new(|s| s.env.push("NOEQUALS".into())),
            Box::new(|s| s.cwd = "relative".into()),
            Box::new(|s| s.cwd = "/a/../b".into()),
            Box::new(|s| s.hostname = "x".repeat(65)),
            Box::new(|s| s.upper_dir = "rel".into()),
            Box::new(|s| {
                s.mounts.push(Mount::Tmpfs {
                    target: "/proc/x".into(),
                    size_bytes: None,
                })
            }),
            Box::new(|s| {
                s.mounts.push(Mount::Tmpfs {
                    target: "/".into(),
                    size_bytes: None,
                })
            }),
            Box::new(|s| {
                s.mounts.push(Mount::Bind {
                    source: "rel".into(),
                    target: "/x".into(),
                    readonly: true,
                })
            }),
        ];
        for case in cases {
            let mut s = spec();
            case(&mut s);
            assert!(matches!(s.validate(), Err(RuntimeError::InvalidSpec(_))));
        }
    }

    #[test]
    fn path_defaults() {
        let mut s = spec();
        assert_eq!(s.path_var(), DEFAULT_PATH);
        assert!(s.effective_env().contains(&format!("PATH={DEFAULT_PATH}")));
        s.env = vec!["PATH=/a".into(), "PATH=/b".into()];
        assert_eq!(s.path_var(), "/b");
        assert_eq!(s.effective_env().len(), 2);
    }

    #[test]
    fn resources_are_validated() {
        let mut s = spec();
        s.resources.memory_bytes = Some(MIN_MEMORY_BYTES - 1);
        assert!(s.validate().is_err());
        s.resources.memory_bytes = Some(MIN_MEMORY_BYTES);
        s.validate().unwrap();
        for cpus in [0.0, -1.0, f64::NAN, 1e6] {
            s.resources.cpus = Some(cpus);
            assert!(s.validate().is_err(), "{cpus}");
        }
        s.resources.cpus = Some(0.5);
        s.resources.pids_limit = Some(0);
        assert!(s.validate().is_err());
    }

    #[test]
    fn exit_status_codes() {
        assert_eq!(ExitStatus::Exited(3).code(), 3);
        assert_eq!(ExitStatus::Signaled(9).code(), 137);
        assert!(ExitStatus::Exited(0).success());
    }
}
