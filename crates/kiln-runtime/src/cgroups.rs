//! One cgroup per container: its memory, CPU and pids limits
//! ([`Resources`]) and, on cgroup v1, Docker's default device rules,
//! through `cgroups-rs` (mount discovery, the v1/v2 file names and value
//! formats, the device rule syntax).
//!
//! # Where
//!
//! On cgroup v1 (a hierarchy per controller; ours have a `unified` v2
//! mount besides, which holds no controller and is left alone) the
//! container's cgroup is `<caller's own cgroup>/kiln/<pid>-<n>-<pid namespace>` in the
//! memory, pids, cpu and devices hierarchies, as runc places a relative
//! cgroup path: kiln in a limited service (a CI runner's cgroup) keeps
//! its containers inside that limit. On v2 (one unified hierarchy) it is
//! `/kiln/<pid>-<n>-<pid namespace>` under the hierarchy's root, as Docker's cgroupfs
//! driver does with `/docker`: the caller's own cgroup holds processes, so
//! by v2's "no internal processes" rule it cannot hand controllers to a
//! child. `<pid>` is the kiln process that owns it.
//!
//! # Joining without a race
//!
//! The parent creates and limits the cgroup and opens each hierarchy's
//! `tasks` (v1) or `cgroup.procs` (v2) before `clone`; the init writes `0`
//! (itself) to each before any other setup, then enters a new cgroup
//! namespace rooted there (so the container sees its cgroup as `/`), and
//! only then forks
//! the command, which inherits it: nothing of the container ever runs
//! outside its limits. (That is why the init unshares the cgroup
//! namespace itself rather than `clone` creating it: a namespace made
//! before the move would be rooted at the caller's cgroup.)
//!
//! The init then mounts them read-only at `/sys/fs/cgroup`
//! ([`ContainerCgroup::mount_steps`]), as Docker does.
//!
//! # Removal
//!
//! The cgroup is removed when the [`ContainerCgroup`] is dropped, after
//! the init is reaped (every process of the container is gone by then:
//! the kernel kills the pid namespace when its init exits), on every path
//! (error, kill, drop). A kiln killed with SIGKILL cannot do that; its
//! containers die with it (parent-death signal), and the next container
//! created under the same parent removes every empty
//! `<pid>-<n>-<pid namespace>` whose owner is no longer running (of
//! another pid namespace, where the pid says nothing: once a minute old).
//!
//! # Devices
//!
//! On v1 the devices controller denies everything, then allows Docker's
//! default list (`DEFAULT_DEVICES`); privileged containers keep every
//! device. On v2 device rules need a BPF program (`BPF_CGROUP_DEVICE`),
//! which kiln does not load yet: there the command loses `CAP_MKNOD`
//! instead, so it cannot create a device node at all (the rootfs is
//! mounted `nodev` in both cases; see `prepare.rs`).

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use cgroups_rs::cpu::CpuController;
use cgroups_rs::devices::{DevicePermissions, DeviceType, DevicesController};
use cgroups_rs::freezer::{FreezerController, FreezerState};
use cgroups_rs::hierarchies::{self, V1};
use cgroups_rs::memory::MemController;
use cgroups_rs::pid::PidController;
use cgroups_rs::{Controllers, MaxValue};
use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::sys::stat::Mode;

use crate::error::RuntimeError;
use crate::plan::Step;
use crate::spec::Resources;

/// kiln's parent cgroup, in each hierarchy.
const PARENT: &str = "kiln";

/// The CFS period `--cpus` is expressed in (Docker's: 100 ms).
const CPU_PERIOD_US: u64 = 100_000;

/// The v1 hierarchies a container joins (the freezer for `pause`; cpuacct
/// and blkio for `stats`).
const V1_CONTROLLERS: [Controllers; 7] = [
    Controllers::Mem,
    Controllers::Pids,
    Controllers::Cpu,
    Controllers::Devices,
    Controllers::Freezer,
    Controllers::CpuAcct,
    Controllers::BlkIo,
];

/// How long a freeze may take before `pause` gives up (a v1 freezer
/// stays FREEZING while a task cannot be stopped, in uninterruptible
/// sleep on a hung mount, say).
const FREEZE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The v2 controllers of `Resources`' memory, pids and CPU limits.
const V2_CONTROLLERS: [&str; 3] = ["memory", "pids", "cpu"];

/// Docker's default device rules (runc's `AllowedDevices`, which moby
/// uses): creating any device node is allowed, using one only for these.
/// `-1` is the wildcard `*`.
const DEFAULT_DEVICES: &[(DeviceType, i64, i64, &str)] = &[
    (DeviceType::Char, -1, -1, "m"),
    (DeviceType::Block, -1, -1, "m"),
    (DeviceType::Char, 1, 3, "rwm"),    // /dev/null
    (DeviceType::Char, 1, 5, "rwm"),    // /dev/zero
    (DeviceType::Char, 1, 7, "rwm"),    // /dev/full
    (DeviceType::Char, 1, 8, "rwm"),    // /dev/random
    (DeviceType::Char, 1, 9, "rwm"),    // /dev/urandom
    (DeviceType::Char, 5, 0, "rwm"),    // /dev/tty
    (DeviceType::Char, 5, 1, "rwm"),    // /dev/console
    (DeviceType::Char, 5, 2, "rwm"),    // /dev/ptmx
    (DeviceType::Char, 136, -1, "rwm"), // /dev/pts/*
    (DeviceType::Char, 10, 200, "rwm"), // /dev/net/tun (no node is created)
];

/// Numbers the cgroups of this process.
static NEXT: AtomicU64 = AtomicU64::new(0);

/// A container's cgroup: a directory per hierarchy (one on v2), removed
/// on drop.
#[derive(Debug)]
pub(crate) struct ContainerCgroup {
    dirs: Vec<PathBuf>,
    /// The file of each dir the init writes itself to (v1 `tasks`, v2
    /// `cgroup.procs`; write-only, close-on-exec); the parent closes its
    /// copies once the init is cloned.
    procs: Vec<OwnedFd>,
    /// No device rules apply (v2): the command must not get CAP_MKNOD.
    pub no_device_rules: bool,
    v2: bool,
    /// v1: the hierarchies joined, as (directory name under
    /// `/sys/fs/cgroup`, mount options), to show them inside.
    hierarchies: Vec<(String, String)>,
}

impl ContainerCgroup {
    /// Creates the container's cgroup with `resources` applied and, unless
    /// `privileged`, the device rules; removes what dead kiln processes
    /// left under the same parent.
    pub(crate) fn create(resources: &Resources, privileged: bool) -> Result<Self, RuntimeError> {
        // The pid namespace is part of the name: only a kiln of the same
        // namespace can tell from the pid whether the owner is alive.
        let name = format!(
            "{}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            own_pid_namespace()
        );
        let mut cgroup = ContainerCgroup {
            dirs: Vec::new(),
            procs: Vec::new(),
            no_device_rules: false,
            v2: hierarchies::is_cgroup2_unified_mode(),
            hierarchies: Vec::new(),
        };
        if cgroup.v2 {
            cgroup.create_v2(&name, resources)?;
            cgroup.no_device_rules = !privileged;
        } else {
            cgroup.create_v1(&name, resources, privileged)?;
        }
        // v1: `tasks`, which moves one thread: the init is single-threaded,
        // and for the writer itself ("0") the kernel then skips the global
        // threadgroup lock, whose RCU grace period made every start 5 to
        // 15 ms slower through `cgroup.procs` (strace, a loaded 2-core
        // machine). v2 has no such file for domain cgroups.
        let join_file = if cgroup.v2 { "cgroup.procs" } else { "tasks" };
        for dir in &cgroup.dirs {
            let procs = dir.join(join_file);
            let fd = open(&procs, OFlag::O_WRONLY | OFlag::O_CLOEXEC, Mode::empty())
                .map_err(|e| RuntimeError::io("open", &procs, e.into()))?;
            cgroup.procs.push(fd);
        }
        Ok(cgroup)
    }

    fn create_v1(
        &mut self,
        name: &str,
        resources: &Resources,
        privileged: bool,
    ) -> Result<(), RuntimeError> {
        let v1 = V1::new();
        let own =
            cgroups_rs::cgroup::get_cgroups_relative_paths().map_err(|e| RuntimeError::Cgroup {
                path: "/proc/self/cgroup".into(),
                what: "read kiln's own cgroups".into(),
                reason: crate_error(&e),
            })?;
        for controller in V1_CONTROLLERS {
            let key = controller.to_string();
            let Some(mount) = v1.get_mount_point(controller.clone()) else {
                if needed(&controller, resources, privileged) {
                    return Err(RuntimeError::Cgroup {
                        path: hierarchies::UNIFIED_MOUNTPOINT.into(),
                        what: format!("find the {key} hierarchy"),
                        reason: "it is not mounted".into(),
                    });
                }
                continue;
            };
            let own_path = own.get(&key).map_or("", |p| p.trim_start_matches('/'));
            let parent = mount.join(own_path).join(PARENT);
            let dir = parent.join(name);
            // Co-mounted controllers (`cpu,cpuacct`) share one directory.
            if self.dirs.contains(&dir) {
                self.configure_v1(&controller, &dir, resources, privileged)?;
                continue;
            }
            remove_stale(&parent);
            make_dir(&parent, &dir)?;
            self.dirs.push(dir.clone());
            self.hierarchies.extend(hierarchy_mount(&mount));
            self.configure_v1(&controller, &dir, resources, privileged)?;
        }
        Ok(())
    }

    fn configure_v1(
        &self,
        controller: &Controllers,
        dir: &Path,
        resources: &Resources,
        privileged: bool,
    ) -> Result<(), RuntimeError> {
        let dir = dir.to_path_buf();
        match controller {
            Controllers::Mem => {
                if let Some(bytes) = resources.memory_bytes {
                    limit_memory(&dir, false, bytes)?;
                }
            }
            Controllers::Pids => {
                if let Some(max) = resources.pids_limit {
                    limit_pids(&dir, false, max)?;
                }
            }
            Controllers::Cpu => {
                if let Some(cpus) = resources.cpus {
                    limit_cpus(&dir, false, cpus)?;
                }
            }
            Controllers::Devices if !privileged => {
                let devices = DevicesController::new(dir.clone());
                devices
                    .deny_device(DeviceType::All, -1, -1, &DevicePermissions::all())
                    .map_err(|e| failed(&dir, "deny all devices", &e))?;
                for (kind, major, minor, access) in DEFAULT_DEVICES {
                    let access = DevicePermissions::from_str(access)
                        .map_err(|e| failed(&dir, "parse a device rule", &e))?;
                    devices
                        .allow_device(*kind, *major, *minor, &access)
                        .map_err(|e| failed(&dir, "allow a default device", &e))?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn create_v2(&mut self, name: &str, resources: &Resources) -> Result<(), RuntimeError> {
        let root = PathBuf::from(hierarchies::UNIFIED_MOUNTPOINT);
        let parent = root.join(PARENT);
        let available = read_words(&root.join("cgroup.controllers"));
        // Only what this container's limits need: a container without
        // limits then works where kiln may not hand out controllers (the
        // root of a cgroup namespace that holds processes).
        let mut enable = Vec::new();
        for (controller, wanted) in V2_CONTROLLERS.into_iter().zip([
            resources.memory_bytes.is_some(),
            resources.pids_limit.is_some(),
            resources.cpus.is_some(),
        ]) {
            if !wanted {
                continue;
            }
            if !available.iter().any(|c| c == controller) {
                return Err(RuntimeError::Cgroup {
                    path: root.clone(),
                    what: format!("limit {controller}"),
                    reason: "the controller is not available in the unified hierarchy".into(),
                });
            }
            enable.push(controller);
        }
        enable_v2(&root, &enable)?;
        remove_stale(&parent);
        let dir = parent.join(name);
        make_dir(&parent, &dir)?;
        self.dirs.push(dir.clone());
        enable_v2(&parent, &enable)?;
        if let Some(bytes) = resources.memory_bytes {
            limit_memory(&dir, true, bytes)?;
        }
        if let Some(max) = resources.pids_limit {
            limit_pids(&dir, true, max)?;
        }
        if let Some(cpus) = resources.cpus {
            limit_cpus(&dir, true, cpus)?;
        }
        Ok(())
    }

    /// Steps (for the init, after it joined: the mounts are then rooted
    /// at the container's cgroup) that show the container its cgroups
    /// read-only at `target` (the rootfs's `/sys/fs/cgroup`), as Docker
    /// does: tools size themselves from them (a JVM's heap from the memory
    /// limit, Go's GOMAXPROCS from the CPU quota). v1: a tmpfs with the
    /// joined hierarchies (and a link per co-mounted controller); v2: the
    /// unified hierarchy.
    pub(crate) fn mount_steps(&self, target: &Path) -> Result<Vec<Step>, RuntimeError> {
        let ro = libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        if self.v2 {
            return Ok(vec![mount_step(
                Some("cgroup2"),
                target,
                Some("cgroup2"),
                ro,
                None,
            )?]);
        }
        let rw = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        let mut steps = vec![mount_step(
            Some("cgroup"),
            target,
            Some("tmpfs"),
            rw,
            Some("mode=755"),
        )?];
        for (name, options) in &self.hierarchies {
            let dir = target.join(name);
            steps.push(Step::Mkdir {
                path: c_path(&dir)?,
                mode: 0o755,
            });
            steps.push(mount_step(
                Some("cgroup"),
                &dir,
                Some("cgroup"),
                ro,
                Some(options),
            )?);
            for controller in name.split(',').filter(|c| c != name) {
                steps.push(Step::Symlink {
                    target: c_path(Path::new(name))?,
                    link: c_path(&target.join(controller))?,
                });
            }
        }
        steps.push(mount_step(None, target, None, libc::MS_REMOUNT | ro, None)?);
        Ok(steps)
    }

    /// The `cgroup.procs` descriptors, for the plan.
    pub(crate) fn procs_fds(&self) -> Vec<RawFd> {
        self.procs.iter().map(AsRawFd::as_raw_fd).collect()
    }

    /// The directories, for naming a failed join.
    pub(crate) fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Closes the parent's `cgroup.procs` descriptors (the init has its own).
    pub(crate) fn close_procs(&mut self) {
        self.procs.clear();
    }
}

impl Drop for ContainerCgroup {
    fn drop(&mut self) {
        self.procs.clear();
        for dir in self.dirs.iter().rev() {
            remove_dir(dir);
        }
    }
}

/// The directory name and mount options of the v1 hierarchy mounted at
/// `mount_point` (`cpu,cpuacct` and `rw,cpu,cpuacct` give `cpu,cpuacct`).
fn hierarchy_mount(mount_point: &Path) -> Option<(String, String)> {
    let info = hierarchies::mountinfo_self()
        .into_iter()
        .find(|m| m.mount_point == mount_point)?;
    let name = mount_point.file_name()?.to_str()?.to_owned();
    let options: Vec<&str> = info
        .super_opts
        .iter()
        .map(String::as_str)
        .filter(|o| !matches!(*o, "rw" | "ro"))
        .collect();
    Some((name, options.join(",")))
}

fn mount_step(
    source: Option<&str>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> Result<Step, RuntimeError> {
    let c = |s: &str| {
        CString::new(s).map_err(|_| RuntimeError::InvalidSpec(format!("{s:?} contains a NUL byte")))
    };
    Ok(Step::Mount {
        source: source.map(c).transpose()?,
        target: c_path(target)?,
        fstype: fstype.map(c).transpose()?,
        flags,
        data: data.map(c).transpose()?,
    })
}

fn c_path(path: &Path) -> Result<CString, RuntimeError> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| RuntimeError::InvalidSpec(format!("{} contains a NUL byte", path.display())))
}

/// Whether a missing v1 controller makes the container impossible.
fn needed(controller: &Controllers, resources: &Resources, privileged: bool) -> bool {
    match controller {
        Controllers::Mem => resources.memory_bytes.is_some(),
        Controllers::Pids => resources.pids_limit.is_some(),
        Controllers::Cpu => resources.cpus.is_some(),
        Controllers::Devices => !privileged,
        _ => false,
    }
}

fn cpu_quota(cpus: f64) -> i64 {
    // Validated to 0.01..=CPUs: at least 1000 us a period.
    (cpus * CPU_PERIOD_US as f64).round() as i64
}

fn clamp(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Creates `parent` if needed and `dir` afresh: a directory of the same
/// name can only be a leftover of a dead process whose pid we now have.
fn make_dir(parent: &Path, dir: &Path) -> Result<(), RuntimeError> {
    fs::create_dir_all(parent).map_err(|e| RuntimeError::io("create cgroup", parent, e))?;
    match fs::create_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            fs::remove_dir(dir).map_err(|e| RuntimeError::io("remove stale cgroup", dir, e))?;
            fs::create_dir(dir)
        }
        other => other,
    }
    .map_err(|e| RuntimeError::io("create cgroup", dir, e))
}

/// Removes a cgroup directory. Right after the init is reaped the kernel
/// may still count a dying task (EBUSY) for a moment: retry briefly, then
/// leave it to [`remove_stale`] of a later run.
fn remove_dir(dir: &Path) {
    let mut delay = std::time::Duration::from_millis(1);
    for _ in 0..6 {
        match fs::remove_dir(dir) {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                std::thread::sleep(delay);
                delay *= 2;
            }
            _ => return,
        }
    }
}

/// Removes the children of `parent` named `<pid>-<n>-<pid namespace>`
/// whose owner is no longer running (a kiln killed with SIGKILL). One
/// still holding a process is refused by the kernel (EBUSY) and stays.
/// The pid says nothing about a kiln of another pid namespace: its empty
/// cgroups go only once old, since removing one between its making and
/// the container's move into it fails that container's start (ENODEV,
/// seen when a namespaced CI run and a host build shared a machine).
fn remove_stale(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    let me = std::process::id();
    let namespace = own_pid_namespace();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let mut fields = name.to_str().unwrap_or_default().split('-');
        let Some(owner) = fields.next().and_then(|pid| pid.parse::<u32>().ok()) else {
            continue;
        };
        // Names from before the namespace was recorded: taken as ours.
        let ours = fields.nth(1).is_none_or(|ns| ns == namespace.to_string());
        let dead = if ours {
            owner != me && !process_alive(owner)
        } else {
            entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|made| made.elapsed().ok())
                .is_some_and(|age| age > STALE_AFTER)
        };
        if dead {
            // A container frozen when its kiln died never acted on the
            // parent-death SIGKILL: thawed, it does, and its cgroup
            // empties (and goes the next time).
            let _ =
                FreezerController::new(entry.path(), hierarchies::is_cgroup2_unified_mode()).thaw();
            let _ = fs::remove_dir(entry.path());
        }
    }
}

/// The inode of this process's pid namespace (0 if `/proc` cannot say).
fn own_pid_namespace() -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/self/ns/pid").map_or(0, |m| m.ino())
}

/// How old an empty cgroup of another pid namespace's kiln must be to go.
const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

fn process_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(Errno::ESRCH)
    )
}

/// Lets `dir`'s children use `controllers` (v2 `cgroup.subtree_control`).
fn enable_v2(dir: &Path, controllers: &[&str]) -> Result<(), RuntimeError> {
    let file = dir.join("cgroup.subtree_control");
    let enabled = read_words(&file);
    for controller in controllers {
        if !enabled.iter().any(|c| c == controller) {
            fs::write(&file, format!("+{controller}"))
                .map_err(|e| RuntimeError::io("enable a cgroup controller in", &file, e))?;
        }
    }
    Ok(())
}

fn read_words(file: &Path) -> Vec<String> {
    fs::read_to_string(file)
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

fn failed(dir: &Path, what: &str, error: &cgroups_rs::error::Error) -> RuntimeError {
    RuntimeError::Cgroup {
        path: dir.to_path_buf(),
        what: what.into(),
        reason: crate_error(error),
    }
}

/// cgroups-rs's message with its cause's (its `Display` prints the
/// cause's `Debug`).
fn crate_error(error: &cgroups_rs::error::Error) -> String {
    match std::error::Error::source(error) {
        Some(cause) => format!("{}: {cause}", error.kind()),
        None => error.kind().to_string(),
    }
}

// ---- In the init, after clone: no allocation, raw syscalls only. ----

/// Moves the calling process (the container's init, single-threaded)
/// into the cgroup whose `tasks`/`cgroup.procs` descriptors are `procs`,
/// closing each, then makes
/// a new cgroup namespace rooted there. On failure: the index of the
/// descriptor (`procs.len()` for the namespace) and the errno.
pub(crate) fn join(procs: &[RawFd]) -> Result<(), (usize, Errno)> {
    enter(procs)?;
    // SAFETY: integer argument only.
    if unsafe { libc::unshare(libc::CLONE_NEWCGROUP) } < 0 {
        return Err((procs.len(), Errno::last()));
    }
    Ok(())
}

/// Moves this process into the cgroups whose `tasks`/`cgroup.procs`
/// descriptors are `procs` (closing them): a process joining a running
/// container (`exec`), which then joins its cgroup namespace by `setns`.
/// (In the child: syscalls only.)
pub(crate) fn enter(procs: &[RawFd]) -> Result<(), (usize, Errno)> {
    for (index, &fd) in procs.iter().enumerate() {
        let zero = b"0";
        // SAFETY: a valid one-byte buffer; `fd` is ours.
        let written = unsafe { libc::write(fd, zero.as_ptr().cast(), zero.len()) };
        let errno = Errno::last();
        // SAFETY: closing a descriptor this process owns.
        unsafe { libc::close(fd) };
        if written < 0 {
            return Err((index, errno));
        }
    }
    Ok(())
}

/// The cgroups a running container's init `pid` was moved into (every
/// hierarchy where it is not in this process's own cgroup): each
/// directory and its join file (v1 `tasks`, v2 `cgroup.procs`), opened
/// write-only and close-on-exec, for a process joining the container.
/// Read from `/proc/PID/cgroup` as the kernel writes it, relative to this
/// process's cgroup namespace, so the paths are the host's.
pub(crate) fn of_process(pid: u32) -> Result<Vec<(PathBuf, OwnedFd)>, RuntimeError> {
    let read = |what: &str, result: cgroups_rs::error::Result<_>| {
        result.map_err(|e| RuntimeError::Cgroup {
            path: format!("/proc/{what}/cgroup").into(),
            what: "read the cgroups".into(),
            reason: crate_error(&e),
        })
    };
    let theirs = read(
        &pid.to_string(),
        cgroups_rs::cgroup::get_cgroups_relative_paths_by_pid(pid),
    )?;
    let own = read("self", cgroups_rs::cgroup::get_cgroups_relative_paths())?;
    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut join_file = "tasks";
    if hierarchies::is_cgroup2_unified_mode() {
        join_file = "cgroup.procs";
        if let Some(path) = theirs.get("").filter(|p| own.get("") != Some(p)) {
            dirs.push(
                Path::new(hierarchies::UNIFIED_MOUNTPOINT).join(path.trim_start_matches('/')),
            );
        }
    } else {
        let v1 = V1::new();
        for controller in V1_CONTROLLERS {
            let key = controller.to_string();
            let Some(path) = theirs.get(&key).filter(|p| own.get(&key) != Some(p)) else {
                continue;
            };
            let Some(mount) = v1.get_mount_point(controller) else {
                continue;
            };
            let dir = mount.join(path.trim_start_matches('/'));
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
    }
    dirs.into_iter()
        .map(|dir| {
            let file = dir.join(join_file);
            let fd = open(&file, OFlag::O_WRONLY | OFlag::O_CLOEXEC, Mode::empty())
                .map_err(|e| RuntimeError::io("open", &file, e.into()))?;
            Ok((dir, fd))
        })
        .collect()
}

/// The freezer of the cgroup kiln made for the container whose init is
/// `pid` (see [`container_dir`]): a process in any other cgroup is never
/// frozen.
fn freezer_of(pid: i32) -> Result<(FreezerController, PathBuf), RuntimeError> {
    let (dir, v2) = container_dir(pid, Controllers::Freezer)?;
    Ok((FreezerController::new(dir.clone(), v2), dir))
}

/// The directory of the cgroup kiln made for the container whose init is
/// `pid`, in `controller`'s hierarchy (v1) or the unified one (v2),
/// found from `/proc/PID/cgroup` (the host's paths). Only a cgroup
/// directly under kiln's parent qualifies.
fn container_dir(pid: i32, controller: Controllers) -> Result<(PathBuf, bool), RuntimeError> {
    let proc_file = PathBuf::from(format!("/proc/{pid}/cgroup"));
    let paths =
        cgroups_rs::cgroup::get_cgroups_relative_paths_by_pid(pid.unsigned_abs()).map_err(|e| {
            RuntimeError::Cgroup {
                path: proc_file.clone(),
                what: "read the container's cgroups".into(),
                reason: crate_error(&e),
            }
        })?;
    let v2 = hierarchies::is_cgroup2_unified_mode();
    let name = controller.to_string();
    let (key, mount) = if v2 {
        (
            String::new(),
            Some(PathBuf::from(hierarchies::UNIFIED_MOUNTPOINT)),
        )
    } else {
        (name.clone(), V1::new().get_mount_point(controller))
    };
    let not_ours = |reason: String| RuntimeError::Cgroup {
        path: proc_file.clone(),
        what: format!("find the container's {name} cgroup"),
        reason,
    };
    let mount = mount.ok_or_else(|| not_ours(format!("the {name} hierarchy is not mounted")))?;
    let path = paths
        .get(&key)
        .ok_or_else(|| not_ours(format!("the process is in no {name} cgroup")))?;
    let mut parts = path.trim_end_matches('/').rsplit('/');
    let (Some(leaf), Some(PARENT)) = (parts.next(), parts.next()) else {
        return Err(not_ours("the process is not in a cgroup kiln made".into()));
    };
    if leaf.is_empty() || leaf == ".." {
        return Err(not_ours("the process is not in a cgroup kiln made".into()));
    }
    Ok((mount.join(path.trim_start_matches('/')), v2))
}

/// Changes the limits of the running container whose init is `pid`
/// (`docker update`): the ones `resources` gives, the rest as they are.
/// Memory plus swap stays twice the memory (v1), set in the order the
/// kernel accepts (it refuses memory above memory+swap).
pub fn update_resources(pid: i32, resources: &Resources) -> Result<(), RuntimeError> {
    if let Some(bytes) = resources.memory_bytes {
        let (dir, v2) = container_dir(pid, Controllers::Mem)?;
        limit_memory(&dir, v2, bytes)?;
    }
    if let Some(cpus) = resources.cpus {
        let (dir, v2) = container_dir(pid, Controllers::Cpu)?;
        limit_cpus(&dir, v2, cpus)?;
    }
    if let Some(max) = resources.pids_limit {
        let (dir, v2) = container_dir(pid, Controllers::Pids)?;
        limit_pids(&dir, v2, max)?;
    }
    Ok(())
}

/// A memory limit of `bytes` on the cgroup `dir`, with swap as Docker
/// gives it: memory plus swap twice the memory (v1's `memsw`, absent
/// when the kernel does not account swap), or v2's swap (which excludes
/// memory) as much again. On v1 the two are set in the order the kernel
/// accepts (it refuses memory above memory+swap): raising, memory+swap
/// first; otherwise memory first.
fn limit_memory(dir: &Path, v2: bool, bytes: u64) -> Result<(), RuntimeError> {
    let memory = MemController::new(dir.to_path_buf(), v2);
    let limit = clamp(bytes);
    let set_memory = || {
        memory
            .set_limit(limit)
            .map_err(|e| failed(dir, "set the memory limit", &e))
    };
    if v2 {
        set_memory()?;
        if dir.join("memory.swap.max").exists() {
            memory
                .set_memswap_limit(limit)
                .map_err(|e| failed(dir, "set memory.swap.max", &e))?;
        }
        return Ok(());
    }
    let both = limit.saturating_mul(2);
    let set_both = || {
        memory
            .set_memswap_limit(both)
            .map_err(|e| failed(dir, "set the memory+swap limit", &e))
    };
    let current_both = fs::read_to_string(dir.join("memory.memsw.limit_in_bytes"))
        .ok()
        .and_then(|t| t.trim().parse::<i64>().ok());
    match current_both {
        Some(current) if both > current => {
            set_both()?;
            set_memory()
        }
        Some(_) => {
            set_memory()?;
            set_both()
        }
        None => set_memory(),
    }
}

fn limit_pids(dir: &Path, v2: bool, max: u64) -> Result<(), RuntimeError> {
    PidController::new(dir.to_path_buf(), v2)
        .set_pid_max(MaxValue::Value(clamp(max)))
        .map_err(|e| failed(dir, "set the pids limit", &e))
}

fn limit_cpus(dir: &Path, v2: bool, cpus: f64) -> Result<(), RuntimeError> {
    CpuController::new(dir.to_path_buf(), v2)
        .set_cfs_quota_and_period(Some(cpu_quota(cpus)), Some(CPU_PERIOD_US))
        .map_err(|e| failed(dir, "set the CPU quota", &e))
}

/// What a container's cgroups say it uses (`docker stats`); zero for
/// what a hierarchy kiln did not join reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupStats {
    pub memory_usage: u64,
    pub memory_max_usage: u64,
    /// The limit (the host's memory when it has none of its own).
    pub memory_limit: u64,
    /// `memory.stat`'s counters (cache, rss... on v1; anon, file... on v2).
    pub memory_stat: std::collections::BTreeMap<String, u64>,
    /// CPU time, in ns: in all, per CPU, in the kernel, in user space.
    pub cpu_total: u64,
    pub cpu_per_cpu: Vec<u64>,
    pub cpu_kernel: u64,
    pub cpu_user: u64,
    pub pids: u64,
    pub pids_limit: Option<u64>,
    /// Bytes read and written, per device (major, minor).
    pub io: Vec<(i16, i16, u64, u64)>,
}

/// The cgroup figures of the container whose init is `pid`.
pub fn container_stats(pid: i32) -> Result<CgroupStats, RuntimeError> {
    let mut stats = CgroupStats::default();
    let (memory_dir, v2) = container_dir(pid, Controllers::Mem)?;
    let memory = MemController::new(memory_dir, v2).memory_stat();
    stats.memory_usage = memory.usage_in_bytes;
    stats.memory_max_usage = memory.max_usage_in_bytes;
    // "No limit" reads as a huge number (v1) or -1/max: the host's memory.
    let host_memory = host_memory_bytes();
    stats.memory_limit = u64::try_from(memory.limit_in_bytes)
        .ok()
        .filter(|limit| *limit > 0 && *limit < host_memory)
        .unwrap_or(host_memory);
    stats.memory_stat = memory
        .stat
        .raw
        .into_iter()
        .collect::<std::collections::BTreeMap<_, _>>();
    if let Ok((dir, v2)) = container_dir(pid, Controllers::Pids) {
        let pids = PidController::new(dir, v2);
        stats.pids = pids.get_pid_current().unwrap_or(0);
        stats.pids_limit = match pids.get_pid_max() {
            Ok(MaxValue::Value(n)) => u64::try_from(n).ok(),
            _ => None,
        };
    }
    if v2 {
        let (dir, _) = container_dir(pid, Controllers::Cpu)?;
        let cpu = read_flat_keyed(&dir.join("cpu.stat"));
        let usec = |key: &str| cpu.get(key).copied().unwrap_or(0).saturating_mul(1000);
        stats.cpu_total = usec("usage_usec");
        stats.cpu_user = usec("user_usec");
        stats.cpu_kernel = usec("system_usec");
    } else if let Ok((dir, _)) = container_dir(pid, Controllers::CpuAcct) {
        let cpu = cgroups_rs::cpuacct::CpuAcctController::new(dir).cpuacct();
        stats.cpu_total = cpu.usage;
        stats.cpu_per_cpu = cpu
            .usage_percpu
            .split_whitespace()
            .filter_map(|n| n.parse().ok())
            .collect();
        stats.cpu_kernel = cpu.usage_sys;
        stats.cpu_user = cpu.usage_user;
    }
    if let Ok((dir, v2)) = container_dir(pid, Controllers::BlkIo) {
        let io = cgroups_rs::blkio::BlkIoController::new(dir, v2).blkio();
        let services = if v2 {
            io.io_stat
                .iter()
                .map(|s| (s.major, s.minor, s.rbytes, s.wbytes))
                .collect()
        } else {
            io.io_service_bytes_recursive
                .iter()
                .map(|s| (s.major, s.minor, s.read, s.write))
                .collect()
        };
        stats.io = services;
    }
    Ok(stats)
}

/// `KEY VALUE` lines (v2's `cpu.stat`).
fn read_flat_keyed(file: &Path) -> std::collections::BTreeMap<String, u64> {
    fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let (key, value) = line.split_once(' ')?;
            Some((key.to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

/// The host's memory (`/proc/meminfo`'s MemTotal), in bytes.
fn host_memory_bytes() -> u64 {
    fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|line| {
            let kib = line.strip_prefix("MemTotal:")?.trim().strip_suffix("kB")?;
            kib.trim().parse::<u64>().ok()
        })
        .map_or(u64::MAX, |kib| kib * 1024)
}

/// Freezes (`docker pause`) or thaws (`unpause`) every process of the
/// container whose init is `pid`; a freeze returns once the kernel says
/// every task is frozen (and is undone if that does not come).
pub fn set_frozen(pid: i32, frozen: bool) -> Result<(), RuntimeError> {
    let (freezer, dir) = freezer_of(pid)?;
    if !frozen {
        return freezer
            .thaw()
            .map_err(|e| failed(&dir, "thaw the container", &e));
    }
    freezer
        .freeze()
        .map_err(|e| failed(&dir, "freeze the container", &e))?;
    let deadline = std::time::Instant::now() + FREEZE_TIMEOUT;
    while !matches!(freezer.state(), Ok(FreezerState::Frozen)) {
        if std::time::Instant::now() > deadline {
            let _ = freezer.thaw();
            return Err(RuntimeError::Cgroup {
                path: dir,
                what: "freeze the container".into(),
                reason: format!("not every task froze in {FREEZE_TIMEOUT:?}; thawed again"),
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    Ok(())
}

/// Whether the container whose init is `pid` is frozen (paused); false
/// when it has no freezer kiln made.
pub fn is_frozen(pid: i32) -> bool {
    freezer_of(pid).is_ok_and(|(freezer, _)| matches!(freezer.state(), Ok(FreezerState::Frozen)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_quota_is_a_share_of_the_period() {
        assert_eq!(cpu_quota(0.5), 50_000);
        assert_eq!(cpu_quota(1.5), 150_000);
        assert_eq!(cpu_quota(0.01), 1_000);
    }

    #[test]
    fn device_rules_parse() {
        for (_, _, _, access) in DEFAULT_DEVICES {
            DevicePermissions::from_str(access).unwrap();
        }
    }
}
