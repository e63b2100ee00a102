//! Turns a `ContainerSpec` into a `Plan` before anything is cloned: the
//! per-run state dir (the runtime's own top lower dir, the merged mount
//! point, the `/etc` files), the mount steps and the exec candidates.
//!
//! Mount points never leak into the upper dir: every mount target on the
//! overlay (`/proc`, `/dev`, `/sys`, `/etc/hosts`, `/etc/resolv.conf`,
//! `/etc/hostname`, the spec's mount targets) is created in a small
//! "skeleton" directory that is mounted as the *top-most lower* dir. The
//! merged view then already has every mount point, so nothing is created
//! through the overlay and the upper dir holds only what the command did.
//! Skeleton directories copy the mode, owner and times of the directory
//! they cover, so the merged view (and a later copy-up) looks the same as
//! without them. Targets are resolved inside the image with its symlinks
//! followed (as Docker does), never towards the host.

use std::ffi::CString;
use std::fs::{self, File, FileTimes, Metadata};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{open, OFlag};
use nix::sched::CloneFlags;
use nix::sys::stat::Mode;

use crate::caps;
use crate::cmdline;
use crate::error::RuntimeError;
use crate::layers::LowerView;
use crate::plan::{Plan, Step};
use crate::seccomp::{self, Seccomp};
use crate::spec::{container_path, ContainerSpec, Mount, Network};

/// Linux limits mount data to one page, NUL included.
const MOUNT_DATA_MAX: usize = 4095;

/// Docker's default masked paths.
const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Docker's default read-only paths.
const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Device nodes created in the container's `/dev` tmpfs.
const DEVICES: &[(&str, u32, u32)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

const DEV_LINKS: &[(&str, &str)] = &[
    ("ptmx", "pts/ptmx"),
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
];

const ETC_FILES: &[&str] = &["hosts", "hostname", "resolv.conf"];

/// A plan plus what must outlive the child: the state dir and the
/// descriptors the child's steps use (the overlay mount options name
/// some; `Step::MoveMount` attaches others).
pub(crate) struct Prepared {
    pub plan: Plan,
    pub state: tempfile::TempDir,
    pub overlay_fds: Vec<OwnedFd>,
}

pub(crate) fn prepare(spec: &ContainerSpec) -> Result<Prepared, RuntimeError> {
    spec.validate()?;
    for dir in &spec.lower_dirs {
        if !dir.is_dir() {
            return Err(RuntimeError::InvalidSpec(format!(
                "lower dir {} is not a directory",
                dir.display()
            )));
        }
    }
    for dir in [&spec.upper_dir, &spec.work_dir] {
        fs::create_dir_all(dir).map_err(|e| RuntimeError::io("create", dir, e))?;
    }
    let device = |dir: &Path| {
        fs::metadata(dir)
            .map(|m| m.dev())
            .map_err(|e| RuntimeError::io("stat", dir, e))
    };
    if device(&spec.upper_dir)? != device(&spec.work_dir)? {
        return Err(RuntimeError::InvalidSpec(format!(
            "overlay upper dir {} and work dir {} are on different filesystems",
            spec.upper_dir.display(),
            spec.work_dir.display()
        )));
    }
    let state = make_state_dir(spec)?;
    let root = state.path().to_path_buf();
    let view = LowerView::new(spec.lower_dirs.clone());
    let mut skeleton = Skeleton::new(root.join("lower"), &view)?;
    let merged = root.join("merged");
    fs::create_dir(&merged).map_err(|e| RuntimeError::io("create", &merged, e))?;

    let (overlay_fds, overlay_paths, overlay_data) = overlay_options(spec, &skeleton.root)?;
    // nodev: a device node the command creates in the rootfs (it keeps
    // CAP_MKNOD, as in Docker) cannot be opened there; `/dev` is its own
    // tmpfs, where the device cgroup decides (see cgroups.rs).
    let mut rootfs_flags = if spec.privileged { 0 } else { libc::MS_NODEV };
    if spec.read_only {
        // Mount points are the skeleton's (below the overlay), so nothing
        // has to be written into a read-only rootfs.
        rootfs_flags |= libc::MS_RDONLY;
    }
    let mut pre = vec![Step::Mount {
        source: Some(c"overlay".into()),
        target: cstr(&merged)?,
        fstype: Some(c"overlay".into()),
        flags: rootfs_flags,
        data: Some(overlay_data),
    }];
    for dir in ["proc", "dev", "sys"] {
        skeleton.add(&[dir.to_string()], true)?;
    }
    system_mounts(&merged, spec.shm_size, &mut pre)?;
    etc_files(spec, &root, &merged, &view, &mut skeleton, &mut pre)?;
    let secrets = secrets_tmpfs(spec, &root, &mut pre)?;
    let mut trees = Vec::new();
    user_mounts(
        spec,
        &merged,
        &view,
        &mut skeleton,
        &secrets,
        &mut pre,
        &mut trees,
    )?;
    skeleton.finish()?;
    let command_caps = if spec.privileged {
        caps::own_permitted()
    } else {
        spec.capabilities
            .apply(caps::DOCKER_DEFAULT_MASK, caps::own_permitted())
    };

    let plan = Plan {
        clone_flags: clone_flags(spec.network),
        pre_pivot: pre,
        merged: cstr(&merged)?,
        overlay_dirs: overlay_paths
            .into_iter()
            .zip(overlay_fds.iter().map(AsRawFd::as_raw_fd))
            .collect(),
        post_pivot: if spec.privileged {
            Vec::new()
        } else {
            post_pivot_steps()?
        },
        hostname: spec.hostname.as_bytes().to_vec(),
        loopback_up: spec.network == Network::None,
        cwd_dirs: cwd_dirs(&spec.cwd)?,
        cwd: cstring(&spec.cwd)?,
        exec_candidates: exec_candidates(&spec.args[0], &spec.path_var())?,
        program: spec.args[0].clone(),
        argv: spec
            .args
            .iter()
            .map(|a| cstring(a))
            .collect::<Result<_, _>>()?,
        envp: spec
            .effective_env()
            .iter()
            .map(|e| cstring(e))
            .collect::<Result<_, _>>()?,
        uid: spec.user.uid,
        gid: spec.user.gid,
        groups: spec.user.additional_gids.clone(),
        last_cap: caps::last_cap(),
        command_caps,
        tty: None,
        seccomp: seccomp_programs(spec.privileged, &spec.seccomp, command_caps)?,
        no_new_privs: spec.no_new_privileges,
        init: spec.init,
        arg_env: cmdline::own_areas(),
        cgroup_procs: Vec::new(),
        cgroup_dirs: Vec::new(),
        mount_fds: trees.iter().map(AsRawFd::as_raw_fd).collect(),
        read_watch: -1,
        rlimits: rlimits(&spec.ulimits),
        join_namespaces: Vec::new(),
    };
    let mut overlay_fds = overlay_fds;
    overlay_fds.extend(trees);
    Ok(Prepared {
        plan,
        state,
        overlay_fds,
    })
}

/// The BPF programs for the command: none when privileged (as Docker) or
/// unconfined.
pub(crate) fn seccomp_programs(
    privileged: bool,
    seccomp: &Seccomp,
    caps: u64,
) -> Result<Vec<seccompiler::BpfProgram>, RuntimeError> {
    if privileged {
        return Ok(Vec::new());
    }
    match seccomp {
        Seccomp::Unconfined => Ok(Vec::new()),
        Seccomp::Default => seccomp::compile(&seccomp::docker_default(), caps),
        Seccomp::Profile(profile) => seccomp::compile(profile, caps),
    }
}

/// With secrets to mount: an empty dir in the state dir and the step that
/// mounts a tmpfs on it in the container's namespace, sized for them. The
/// secrets are written there by the child, never on the state dir's disk.
fn secrets_tmpfs(
    spec: &ContainerSpec,
    state: &Path,
    steps: &mut Vec<Step>,
) -> Result<PathBuf, RuntimeError> {
    let dir = state.join("secrets");
    let sizes: Vec<usize> = spec
        .mounts
        .iter()
        .filter_map(|m| match m {
            Mount::Secret { data, .. } => Some(data.0.len()),
            _ => None,
        })
        .collect();
    if sizes.is_empty() {
        return Ok(dir);
    }
    fs::create_dir(&dir).map_err(|e| RuntimeError::io("create", &dir, e))?;
    const PAGE: usize = 4096;
    let bytes: usize = sizes.iter().map(|n| n.div_ceil(PAGE).max(1) * PAGE).sum();
    steps.push(mount(
        "tmpfs",
        &dir,
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        Some(&format!("mode=700,size={}", bytes + PAGE)),
    )?);
    Ok(dir)
}

fn make_state_dir(spec: &ContainerSpec) -> Result<tempfile::TempDir, RuntimeError> {
    let parent = spec.state_parent.clone().unwrap_or_else(std::env::temp_dir);
    let state = tempfile::Builder::new()
        .prefix("kiln-run-")
        .tempdir_in(&parent)
        .map_err(|e| RuntimeError::io("create state dir in", &parent, e))?;
    // The state dir holds the rootfs's mount point: keep others out.
    fs::set_permissions(state.path(), fs::Permissions::from_mode(0o700))
        .map_err(|e| RuntimeError::io("chmod", state.path(), e))?;
    Ok(state)
}

fn clone_flags(network: Network) -> CloneFlags {
    // No CLONE_NEWCGROUP: the init makes its cgroup namespace once it is
    // in its own cgroup (cgroups::join), so that is the namespace's root.
    let mut flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC;
    if network == Network::None {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    flags
}

/// The overlay's dirs are passed as `/proc/self/fd/N`: no escaping of
/// `:` or `,` in paths, and the option string stays short (about 17 bytes
/// a layer) under the one-page limit. The parent opens a descriptor per
/// dir only to reserve the number N; the child reopens each dir by path
/// onto N, because overlayfs refuses a descriptor whose mount belongs to
/// another mount namespace ("failed to clone lowerpath").
fn overlay_options(
    spec: &ContainerSpec,
    skeleton: &Path,
) -> Result<(Vec<OwnedFd>, Vec<CString>, CString), RuntimeError> {
    let mut fds = Vec::new();
    let mut paths = Vec::new();
    let mut reserve = |path: &Path| -> Result<String, RuntimeError> {
        let fd = open(
            path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| RuntimeError::io("open", path, e.into()))?;
        let name = format!("/proc/self/fd/{}", fd.as_raw_fd());
        fds.push(fd);
        paths.push(cstr(path)?);
        Ok(name)
    };
    let mut lowers = vec![reserve(skeleton)?];
    for dir in &spec.lower_dirs {
        lowers.push(reserve(dir)?);
    }
    let upper = reserve(&spec.upper_dir)?;
    let mut data = overlay_mount_data(&lowers, &upper, &reserve(&spec.work_dir)?);
    if spec.volatile_upper {
        data.push_str(",volatile");
    }
    if data.len() > MOUNT_DATA_MAX {
        return Err(RuntimeError::InvalidSpec(format!(
            "too many lower dirs ({}) for one overlay mount",
            spec.lower_dirs.len()
        )));
    }
    Ok((fds, paths, cstring(&data)?))
}

/// Docker's default size of `/dev/shm`.
const DEFAULT_SHM_SIZE: u64 = 64 << 20;

/// The options of every overlay mount of a container's rootfs (kiln's
/// own, and `cp`'s of a stopped one: the same upper dir must always be
/// mounted alike). redirect_dir, metacopy and index are forced off
/// whatever the kernel's defaults: with them a renamed directory or a
/// chown'd file would be a redirect xattr or a metadata-only copy in the
/// upper dir, which is not a self-contained change set for the layer tar.
pub(crate) fn overlay_mount_data(lowers: &[String], upper: &str, work: &str) -> String {
    format!(
        "lowerdir={},upperdir={upper},workdir={work},redirect_dir=off,metacopy=off,index=off",
        lowers.join(":"),
    )
}

/// A read-only overlay of `lowers` alone (at least two), the first on top.
pub(crate) fn read_only_overlay_mount_data(lowers: &[String]) -> String {
    format!(
        "lowerdir={},redirect_dir=off,metacopy=off,index=off",
        lowers.join(":")
    )
}

/// `--ulimit`s as the plan's (resource, soft, hard).
pub(crate) fn rlimits(ulimits: &[crate::Ulimit]) -> Vec<(u32, u64, u64)> {
    ulimits
        .iter()
        .map(|u| (u.name.resource(), u.soft, u.hard))
        .collect()
}

fn system_mounts(
    merged: &Path,
    shm_size: Option<u64>,
    steps: &mut Vec<Step>,
) -> Result<(), RuntimeError> {
    let dev = merged.join("dev");
    let nosuid_nodev_noexec = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    steps.push(mount(
        "proc",
        &merged.join("proc"),
        "proc",
        nosuid_nodev_noexec,
        None,
    )?);
    steps.push(mount(
        "tmpfs",
        &dev,
        "tmpfs",
        libc::MS_NOSUID | libc::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    )?);
    for (name, major, minor) in DEVICES {
        steps.push(Step::Mknod {
            path: cstr(&dev.join(name))?,
            major: *major,
            minor: *minor,
        });
    }
    for (name, mode) in [("pts", 0o755), ("shm", 0o1777), ("mqueue", 0o755)] {
        steps.push(Step::Mkdir {
            path: cstr(&dev.join(name))?,
            mode,
        });
    }
    steps.push(mount(
        "devpts",
        &dev.join("pts"),
        "devpts",
        libc::MS_NOSUID | libc::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    )?);
    steps.push(mount(
        "shm",
        &dev.join("shm"),
        "tmpfs",
        nosuid_nodev_noexec,
        Some(&format!(
            "mode=1777,size={}",
            shm_size.unwrap_or(DEFAULT_SHM_SIZE)
        )),
    )?);
    steps.push(mount(
        "mqueue",
        &dev.join("mqueue"),
        "mqueue",
        nosuid_nodev_noexec,
        None,
    )?);
    for (name, target) in DEV_LINKS {
        steps.push(Step::Symlink {
            target: cstring(target)?,
            link: cstr(&dev.join(name))?,
        });
    }
    steps.push(Step::Sysfs {
        target: cstr(&merged.join("sys"))?,
    });
    Ok(())
}

fn mount(
    source: &str,
    target: &Path,
    fstype: &str,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> Result<Step, RuntimeError> {
    Ok(Step::Mount {
        source: Some(cstring(source)?),
        target: cstr(target)?,
        fstype: Some(cstring(fstype)?),
        flags,
        data: data.map(cstring).transpose()?,
    })
}

fn bind(source: &Path, target: &Path, flags: libc::c_ulong) -> Result<Step, RuntimeError> {
    Ok(Step::Mount {
        source: Some(cstr(source)?),
        target: cstr(target)?,
        fstype: None,
        flags,
        data: None,
    })
}

/// `/etc/hosts`, `/etc/hostname`, `/etc/resolv.conf`: files in the state
/// dir bound over the image's, so they never reach the upper dir.
fn etc_files(
    spec: &ContainerSpec,
    state: &Path,
    merged: &Path,
    view: &LowerView,
    skeleton: &mut Skeleton,
    steps: &mut Vec<Step>,
) -> Result<(), RuntimeError> {
    let files = state.join("files");
    fs::create_dir(&files).map_err(|e| RuntimeError::io("create", &files, e))?;
    for name in ETC_FILES {
        let source = files.join(name);
        fs::write(&source, etc_content(spec, name))
            .map_err(|e| RuntimeError::io("write", &source, e))?;
        let lexical = vec!["etc".to_string(), name.to_string()];
        let mut target = view.resolve(&lexical);
        // A link into /dev, /proc or /sys would land on our own mounts:
        // shadow it with a plain file instead.
        if target.is_empty() || is_special(&target) {
            target = lexical;
        }
        skeleton.add(&target, false)?;
        steps.push(bind(&source, &join(merged, &target), libc::MS_BIND)?);
    }
    Ok(())
}

fn etc_content(spec: &ContainerSpec, name: &str) -> String {
    match name {
        "hosts" => {
            let mut hosts = spec.hosts.clone().unwrap_or_else(|| {
                format!(
                    "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{}\n",
                    spec.hostname
                )
            });
            for (name, address) in &spec.extra_hosts {
                hosts.push_str(&format!("{address}\t{name}\n"));
            }
            hosts
        }
        "hostname" => format!("{}\n", spec.hostname),
        _ => spec
            .resolv_conf
            .clone()
            .unwrap_or_else(|| fs::read_to_string("/etc/resolv.conf").unwrap_or_default()),
    }
}

fn is_special(parts: &[String]) -> bool {
    matches!(
        parts.first().map(String::as_str),
        Some("proc" | "sys" | "dev")
    )
}

/// The spec's mounts. A target inside an earlier tmpfs is created in that
/// tmpfs at run time (it is fresh, so no symlink can redirect it); one
/// inside an earlier bind mount is refused, since the host directory's
/// symlinks would decide where it lands.
fn user_mounts(
    spec: &ContainerSpec,
    merged: &Path,
    view: &LowerView,
    skeleton: &mut Skeleton,
    secrets: &Path,
    steps: &mut Vec<Step>,
    trees: &mut Vec<OwnedFd>,
) -> Result<(), RuntimeError> {
    let mut placed: Vec<(Vec<String>, Vec<String>, bool)> = Vec::new();
    for (index, m) in spec.mounts.iter().enumerate() {
        let lexical = container_path(m.target()).map_err(RuntimeError::InvalidSpec)?;
        let is_dir = match m {
            Mount::Tmpfs { .. } => true,
            Mount::Secret { .. } => false,
            Mount::Bind { .. } | Mount::BindFd { .. } => {
                let source = m.bind_source().map(|(s, _)| s).unwrap_or_default();
                fs::metadata(&source)
                    .map_err(|e| RuntimeError::io("stat bind source", &source, e))?
                    .is_dir()
            }
        };
        let outer = placed
            .iter()
            .rev()
            .find(|(lex, _, _)| lexical.len() > lex.len() && lexical.starts_with(lex));
        let resolved = match outer {
            Some((_, _, false)) => {
                return Err(RuntimeError::InvalidSpec(format!(
                    "mount target {} is inside a bind mount",
                    m.target()
                )))
            }
            Some((lex, res, true)) => {
                let mut resolved = res.clone();
                resolved.extend(lexical[lex.len()..].iter().cloned());
                runtime_create(merged, res.len(), &resolved, is_dir, steps)?;
                resolved
            }
            None => {
                let resolved = view.resolve(&lexical);
                if resolved.is_empty() || is_special(&resolved) {
                    return Err(RuntimeError::InvalidSpec(format!(
                        "mount target {} resolves into /, /proc, /sys or /dev",
                        m.target()
                    )));
                }
                skeleton.add(&resolved, is_dir)?;
                resolved
            }
        };
        let secret_file = secrets.join(format!("secret-{index}"));
        push_user_mount(m, &join(merged, &resolved), &secret_file, steps, trees)?;
        placed.push((lexical, resolved, matches!(m, Mount::Tmpfs { .. })));
    }
    Ok(())
}

fn runtime_create(
    merged: &Path,
    existing: usize,
    parts: &[String],
    is_dir: bool,
    steps: &mut Vec<Step>,
) -> Result<(), RuntimeError> {
    for len in existing + 1..=parts.len() {
        let path = cstr(&join(merged, &parts[..len]))?;
        steps.push(if len < parts.len() || is_dir {
            Step::Mkdir { path, mode: 0o755 }
        } else {
            Step::Touch { path }
        });
    }
    Ok(())
}

/// The steps of one of the spec's mounts; a secret is written at
/// `secret_file` (on the secrets tmpfs) and bound read-only on `target`.
fn push_user_mount(
    m: &Mount,
    target: &Path,
    secret_file: &Path,
    steps: &mut Vec<Step>,
    trees: &mut Vec<OwnedFd>,
) -> Result<(), RuntimeError> {
    match m {
        Mount::Secret {
            data,
            mode,
            uid,
            gid,
            ..
        } => {
            steps.push(Step::WriteFile {
                path: cstr(secret_file)?,
                data: data.0.clone(),
                mode: *mode & 0o7777,
                uid: *uid,
                gid: *gid,
            });
            steps.push(bind(secret_file, target, libc::MS_BIND)?);
            steps.push(Step::RemountReadOnly {
                path: cstr(target)?,
            });
        }
        Mount::Bind { .. } | Mount::BindFd { .. } => {
            let (source, readonly) = m.bind_source().unwrap_or_default();
            if let Mount::BindFd { source: fd, .. } = m {
                // A descriptor of our mount namespace cannot be bound in the
                // child's: clone it as a detached tree the child attaches.
                let tree = open_tree(fd)?;
                steps.push(Step::MoveMount {
                    tree: tree.as_raw_fd(),
                    target: cstr(target)?,
                });
                trees.push(tree);
            } else {
                steps.push(bind(&source, target, libc::MS_BIND | libc::MS_REC)?);
            }
            if readonly {
                // Keeps the mount's nosuid/nodev/noexec (a plain remount
                // would clear them).
                steps.push(Step::RemountReadOnly {
                    path: cstr(target)?,
                });
            }
        }
        Mount::Tmpfs { size_bytes, .. } => {
            let data = match size_bytes {
                Some(size) => format!("mode=755,size={size}"),
                None => "mode=755".to_string(),
            };
            steps.push(mount(
                "tmpfs",
                target,
                "tmpfs",
                libc::MS_NOSUID | libc::MS_NODEV,
                Some(&data),
            )?);
        }
    }
    Ok(())
}

/// A detached copy of the mount tree at `source` (`open_tree` with
/// `OPEN_TREE_CLONE`, recursive): what a bind mount of it would attach.
fn open_tree(source: &crate::spec::BindSource) -> Result<OwnedFd, RuntimeError> {
    use std::os::fd::FromRawFd;
    let flags = libc::OPEN_TREE_CLONE
        | libc::OPEN_TREE_CLOEXEC
        | libc::AT_EMPTY_PATH as libc::c_uint
        | libc::AT_RECURSIVE as libc::c_uint;
    // SAFETY: a NUL-terminated empty path; the kernel returns a new fd.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, source.raw(), c"".as_ptr(), flags) };
    if fd < 0 {
        let error = std::io::Error::last_os_error();
        return Err(RuntimeError::io("open_tree", source.proc_path(), error));
    }
    // SAFETY: open_tree returned a descriptor we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

fn post_pivot_steps() -> Result<Vec<Step>, RuntimeError> {
    let mut steps = Vec::new();
    for path in MASKED_PATHS {
        steps.push(Step::Mask {
            path: cstring(path)?,
        });
    }
    for path in READONLY_PATHS {
        steps.push(Step::ReadOnly {
            path: cstring(path)?,
        });
    }
    Ok(steps)
}

fn cwd_dirs(cwd: &str) -> Result<Vec<CString>, RuntimeError> {
    let parts = container_path(cwd).map_err(RuntimeError::InvalidSpec)?;
    (1..=parts.len())
        .map(|len| cstring(&format!("/{}", parts[..len].join("/"))))
        .collect()
}

/// execvpe's search, done up front with the container's `PATH`: the
/// child just tries each candidate in order.
pub(crate) fn exec_candidates(program: &str, path_var: &str) -> Result<Vec<CString>, RuntimeError> {
    if program.contains('/') {
        return Ok(vec![cstring(program)?]);
    }
    path_var
        .split(':')
        .map(|dir| {
            let dir = if dir.is_empty() { "." } else { dir };
            cstring(&format!("{}/{program}", dir.trim_end_matches('/')))
        })
        .collect()
}

fn join(base: &Path, parts: &[String]) -> PathBuf {
    let mut path = base.to_path_buf();
    path.extend(parts);
    path
}

pub(crate) fn cstring(s: &str) -> Result<CString, RuntimeError> {
    CString::new(s).map_err(|_| RuntimeError::InvalidSpec(format!("{s:?} contains a NUL byte")))
}

fn cstr(path: &Path) -> Result<CString, RuntimeError> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| RuntimeError::InvalidSpec(format!("{} contains a NUL byte", path.display())))
}

/// The runtime's own top lower dir, holding only mount points.
struct Skeleton<'a> {
    root: PathBuf,
    view: &'a LowerView,
    /// Directories to give the covered directory's metadata, in creation
    /// order (applied in reverse so children do not touch parents' times).
    fixups: Vec<(PathBuf, Metadata)>,
}

impl<'a> Skeleton<'a> {
    fn new(root: PathBuf, view: &'a LowerView) -> Result<Self, RuntimeError> {
        fs::create_dir(&root).map_err(|e| RuntimeError::io("create", &root, e))?;
        let mut skeleton = Skeleton {
            root: root.clone(),
            view,
            fixups: Vec::new(),
        };
        if let Some(found) = view.lookup(&[]) {
            skeleton.fixups.push((root, found.metadata));
        } else {
            set_mode(&skeleton.root, 0o755)?;
        }
        Ok(skeleton)
    }

    /// Adds a mount point at `parts` (already resolved) and its parents.
    fn add(&mut self, parts: &[String], is_dir: bool) -> Result<(), RuntimeError> {
        for len in 1..=parts.len() {
            let path = join(&self.root, &parts[..len]);
            let want_dir = len < parts.len() || is_dir;
            if path.symlink_metadata().is_ok() {
                continue;
            }
            let created = if want_dir {
                fs::create_dir(&path)
                    .and_then(|_| fs::set_permissions(&path, fs::Permissions::from_mode(0o755)))
            } else {
                File::create(&path).map(drop)
            };
            created.map_err(|e| RuntimeError::io("create mount point", &path, e))?;
            if let Some(found) = self.view.lookup(&parts[..len]) {
                if found.metadata.is_dir() == want_dir {
                    self.fixups.push((path, found.metadata));
                }
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<(), RuntimeError> {
        for (path, metadata) in self.fixups.iter().rev() {
            copy_metadata(path, metadata)?;
        }
        Ok(())
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<(), RuntimeError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| RuntimeError::io("chmod", path, e))
}

fn copy_metadata(path: &Path, metadata: &Metadata) -> Result<(), RuntimeError> {
    std::os::unix::fs::lchown(path, Some(metadata.uid()), Some(metadata.gid()))
        .map_err(|e| RuntimeError::io("chown", path, e))?;
    set_mode(path, metadata.mode() & 0o7777)?;
    let mut times = FileTimes::new();
    if let Ok(t) = metadata.accessed() {
        times = times.set_accessed(t);
    }
    if let Ok(t) = metadata.modified() {
        times = times.set_modified(t);
    }
    File::open(path)
        .and_then(|f| f.set_times(times))
        .map_err(|e| RuntimeError::io("set times of", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plan for a spec with every kind of mount, made without root
    /// (nothing here mounts: `prepare` only decides): what the child will
    /// mount where, and that every mount point lives in the skeleton lower
    /// dir, never in the upper dir that becomes the layer.
    #[test]
    fn a_prepared_plan_places_every_mount_outside_the_upper_dir() {
        let dir = tempfile::tempdir().unwrap();
        let lower = dir.path().join("lower");
        fs::create_dir_all(lower.join("etc")).unwrap();
        fs::write(lower.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
        let host = dir.path().join("host-src");
        fs::create_dir(&host).unwrap();
        let spec = ContainerSpec {
            lower_dirs: vec![lower],
            upper_dir: dir.path().join("upper"),
            work_dir: dir.path().join("work"),
            args: vec!["sh".into(), "-c".into(), "true".into()],
            env: vec!["PATH=/usr/bin:/bin".into()],
            cwd: "/work/dir".into(),
            hostname: "h".into(),
            network: Network::None,
            state_parent: Some(dir.path().to_owned()),
            mounts: vec![
                Mount::Tmpfs {
                    target: "/cache".into(),
                    size_bytes: Some(1 << 20),
                },
                Mount::Bind {
                    source: host.clone(),
                    target: "/src".into(),
                    readonly: true,
                },
                Mount::Secret {
                    target: "/run/secrets/token".into(),
                    data: crate::spec::SecretData(b"s3cret".to_vec()),
                    mode: 0o400,
                    uid: 0,
                    gid: 0,
                },
            ],
            ..Default::default()
        };
        let prepared = prepare(&spec).unwrap();
        let plan = &prepared.plan;
        let merged = plan.merged.to_str().unwrap().to_owned();
        let at = |rel: &str| format!("{merged}{rel}");
        let mounts: Vec<(String, String, String)> = plan
            .pre_pivot
            .iter()
            .filter_map(|step| match step {
                Step::Mount {
                    source,
                    target,
                    fstype,
                    data,
                    ..
                } => Some((
                    target.to_str().unwrap().to_owned(),
                    fstype
                        .as_ref()
                        .or(source.as_ref())
                        .map(|c| c.to_str().unwrap().to_owned())
                        .unwrap_or_default(),
                    data.as_ref()
                        .map(|d| d.to_str().unwrap().to_owned())
                        .unwrap_or_default(),
                )),
                _ => None,
            })
            .collect();
        // The rootfs first, then /proc, and the tmpfs with its size.
        assert_eq!(
            (mounts[0].0.as_str(), mounts[0].1.as_str()),
            (merged.as_str(), "overlay")
        );
        assert!(mounts
            .iter()
            .any(|(t, f, _)| *t == at("/proc") && f == "proc"));
        assert!(mounts
            .iter()
            .any(|(t, f, d)| *t == at("/cache") && f == "tmpfs" && d.contains("size=1048576")));
        // The read-only bind is remounted read-only; the secret is written
        // on the secrets tmpfs, bound, and made read-only.
        let remounted: Vec<String> = plan
            .pre_pivot
            .iter()
            .filter_map(|step| match step {
                Step::RemountReadOnly { path } => Some(path.to_str().unwrap().to_owned()),
                _ => None,
            })
            .collect();
        assert!(remounted.contains(&at("/src")), "{remounted:?}");
        assert!(
            remounted.contains(&at("/run/secrets/token")),
            "{remounted:?}"
        );
        assert!(plan.pre_pivot.iter().any(|step| matches!(
            step,
            Step::WriteFile { data, mode: 0o400, .. } if data == b"s3cret"
        )));
        // Mount points exist in the skeleton lower dir, none in the upper.
        let skeleton = prepared.state.path().join("lower");
        assert!(skeleton.join("cache").is_dir() && skeleton.join("src").is_dir());
        assert!(skeleton.join("run/secrets/token").is_file());
        assert_eq!(fs::read_dir(&spec.upper_dir).unwrap().count(), 0);
        // No network: a namespace of its own with loopback up.
        assert!(plan.clone_flags.contains(CloneFlags::CLONE_NEWNET) && plan.loopback_up);
        let cwd: Vec<_> = plan.cwd_dirs.iter().map(|c| c.to_str().unwrap()).collect();
        assert_eq!(cwd, ["/work", "/work/dir"]);
        assert_eq!(plan.exec_candidates[0].to_str().unwrap(), "/usr/bin/sh");
    }

    #[test]
    fn exec_candidates_follow_path() {
        let c = exec_candidates("sh", "/usr/bin:/bin/:").unwrap();
        let c: Vec<_> = c.iter().map(|c| c.to_str().unwrap()).collect();
        assert_eq!(c, ["/usr/bin/sh", "/bin/sh", "./sh"]);
        let c = exec_candidates("./run", "/bin").unwrap();
        assert_eq!(c[0].to_str().unwrap(), "./run");
    }

    #[test]
    fn cwd_dirs_are_parents_first() {
        let d = cwd_dirs("/a/b/").unwrap();
        let d: Vec<_> = d.iter().map(|c| c.to_str().unwrap()).collect();
        assert_eq!(d, ["/a", "/a/b"]);
        assert!(cwd_dirs("/").unwrap().is_empty());
    }
}
