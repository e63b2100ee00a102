//! Containers as library calls: create one from an image (ENTRYPOINT and
//! CMD, user, HOME, environment and working directory, by the same rules
//! as RUN where they overlap), run it under a monitor to its end, stop it
//! with a grace period, kill, remove, commit. The CLI's container commands
//! and, later, the daemon are thin over these.
//!
//! A container's life is the record's state machine (kiln-runtime's
//! `State`): created → running (a live monitor) → exited → running again
//! (`start`); [`ContainerRecord::started`] and `exited` refuse any other
//! step, so two monitors never run one container.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use kiln_runtime::containers::{ContainerConfig, ContainerRecord, Containers};
use kiln_runtime::{
    Container, OutputSink, Resources, RuntimeError, Seccomp, Stdin, Stdio, TtyHandle, WindowSize,
};
use kiln_store::ImageRecord;

use crate::{Engine, EngineError};

/// `--network`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NetworkMode {
    /// The host's network namespace (kiln's default for `run`).
    #[default]
    Host,
    /// A namespace of its own with only loopback.
    None,
}

/// A host path bound into the container (`-v HOST:CONTAINER[:ro]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bind {
    /// Absolute, resolved by the caller (the user's own path: trusted).
    pub host: PathBuf,
    pub target: String,
    pub read_only: bool,
}

/// A volume mounted in the container (`-v NAME:/path`, `-v /path`,
/// `--mount type=volume`): made if missing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeMount {
    /// None: a new anonymous volume, for this container alone.
    pub name: Option<String>,
    pub target: String,
    pub read_only: bool,
}

/// What to make a container of.
#[derive(Clone, Debug, Default)]
pub struct ContainerRequest {
    /// A name, digest or id in the store.
    pub image: String,
    /// Replaces the image's CMD when not empty.
    pub command: Vec<String>,
    /// Replaces the image's ENTRYPOINT (and drops its CMD); `""` clears it.
    pub entrypoint: Option<String>,
    /// `NAME=VALUE` over the image's environment, in order.
    pub env: Vec<String>,
    /// Over the image's USER.
    pub user: Option<String>,
    /// Over the image's WORKDIR.
    pub workdir: Option<String>,
    pub network: NetworkMode,
    pub binds: Vec<Bind>,
    pub volumes: Vec<VolumeMount>,
    /// Default: the id's first 12 characters.
    pub hostname: Option<String>,
    pub name: Option<String>,
    pub tty: bool,
    pub privileged: bool,
    pub seccomp: Seccomp,
    pub no_new_privileges: bool,
    pub resources: Resources,
    /// kiln-init as pid 1 (`--init`); otherwise the command is.
    pub init: bool,
    /// `--cap-add` / `--cap-drop`.
    pub capabilities: kiln_runtime::CapabilityChanges,
    /// `--read-only`: the rootfs is not writable.
    pub read_only: bool,
    /// `--tmpfs` / `--mount type=tmpfs`: (absolute path, size limit).
    pub tmpfs: Vec<(String, Option<u64>)>,
    /// `--label`.
    pub labels: std::collections::BTreeMap<String, String>,
    /// `--stop-signal` (over the image's STOPSIGNAL).
    pub stop_signal: Option<nix::sys::signal::Signal>,
    /// `--add-host` ([`crate::parse_add_host`]).
    pub extra_hosts: Vec<(String, String)>,
    /// `--ulimit`.
    pub ulimits: Vec<kiln_runtime::Ulimit>,
    /// `--shm-size` in bytes (none: 64 MiB).
    pub shm_size: Option<u64>,
    /// `--restart`.
    pub restart: kiln_runtime::containers::RestartPolicy,
    /// `--health-*` over the image's HEALTHCHECK.
    pub health: crate::HealthOptions,
    /// `--group-add`: more groups (names in the image's /etc/group, or
    /// numbers).
    pub group_add: Vec<String>,
    /// `--stop-timeout`, in seconds.
    pub stop_timeout: Option<u64>,
}

/// What `docker update` changes: the limits given (the rest stay), and
/// the restart policy when given.
#[derive(Clone, Debug, Default)]
pub struct ContainerUpdate {
    pub resources: Resources,
    pub restart: Option<kiln_runtime::containers::RestartPolicy>,
}

/// What to run in a running container (`exec`).
#[derive(Clone, Debug, Default)]
pub struct ExecRequest {
    pub command: Vec<String>,
    /// `NAME=VALUE` over the container's environment, in order.
    pub env: Vec<String>,
    /// Over the container's working directory; must exist.
    pub workdir: Option<String>,
    /// Over the container's user, resolved in its files.
    pub user: Option<String>,
    pub tty: bool,
    /// Every capability and no seccomp for this process.
    pub privileged: bool,
}

/// A signal as docker takes one: `KILL`, `SIGKILL`, `kill` or `9`.
pub fn parse_signal(text: &str) -> Result<nix::sys::signal::Signal, EngineError> {
    use std::str::FromStr;
    let bad = || EngineError::Request(format!("{text:?} is not a signal (KILL, TERM, HUP, 9...)"));
    if let Ok(number) = text.trim().parse::<i32>() {
        return nix::sys::signal::Signal::try_from(number).map_err(|_| bad());
    }
    let upper = text.trim().to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    nix::sys::signal::Signal::from_str(&name).map_err(|_| bad())
}

/// Which part of a log [`Engine::read_log`] hands over, and whether it
/// follows.
#[derive(Clone, Debug, Default)]
pub struct LogOptions {
    /// The last lines only.
    pub tail: Option<usize>,
    /// Then what it appends while it runs.
    pub follow: bool,
    /// Lines written from then on only.
    pub since: Option<std::time::SystemTime>,
    /// Lines written until then only.
    pub until: Option<std::time::SystemTime>,
}

/// A point in time as `docker logs --since/--until` (and the Engine
/// API's `since`/`until`) take one: seconds since the epoch (with a
/// fraction or not), an RFC 3339 date (`2026-12-06T21:00:00Z`, or
/// without its zone: UTC), or a duration ago (`10m`, `1h30m`).
pub fn parse_time(
    text: &str,
    now: std::time::SystemTime,
) -> Result<std::time::SystemTime, EngineError> {
    let bad = || {
        EngineError::Request(format!(
            "time {text:?}: seconds since the epoch, an RFC 3339 date or a duration such as 10m"
        ))
    };
    if let Ok(seconds) = text.parse::<f64>() {
        if !seconds.is_finite() || seconds < 0.0 {
            return Err(bad());
        }
        return Ok(std::time::UNIX_EPOCH + Duration::from_secs_f64(seconds));
    }
    if let Ok(at) = humantime::parse_rfc3339_weak(text) {
        return Ok(at);
    }
    let ago = humantime::parse_duration(text).map_err(|_| bad())?;
    now.checked_sub(ago).ok_or_else(bad)
}

/// How a monitor connects the container to its caller.
pub struct Attach<'a> {
    /// Feed the container's stdin from [`Running::stdin`].
    pub stdin: bool,
    /// The terminal size for a `tty` container (default 24x80).
    pub window: Option<WindowSize>,
    /// Gets the output besides the log (`None`: the log only).
    pub output: Option<&'a mut dyn OutputSink>,
}

/// A container just started, for the caller to wire up (signals to
/// forward to `pid`, a terminal to follow, input to copy into `stdin`,
/// whose drop closes the container's).
pub struct Running {
    /// Its pid 1, in the caller's pid namespace.
    pub pid: i32,
    pub tty: Option<TtyHandle>,
    pub stdin: Option<std::fs::File>,
}

impl Engine {
    /// The store's kept containers.
    pub fn containers(&self) -> Containers {
        Containers::open(&self.store().layout().containers())
    }

    /// A container by name, full id or unambiguous id prefix.
    pub fn find_container(&self, what: &str) -> Result<ContainerRecord, EngineError> {
        self.containers()
            .find(what)
            .ok_or_else(|| EngineError::NotFound {
                what: "container",
                name: what.to_owned(),
            })
    }

    /// Makes a container of `request.image` (nothing runs yet): the
    /// command line by Docker's ENTRYPOINT/CMD rules, the user resolved in
    /// the image's files (root when none is given), the image's
    /// environment with the request's over it and HOME and HOSTNAME
    /// defaulted, the working directory, limits checked first so a bad
    /// one leaves nothing behind.
    pub fn create_container(
        &self,
        request: &ContainerRequest,
    ) -> Result<ContainerRecord, EngineError> {
        kiln_runtime::require_root()?;
        if let Some(name) = &request.name {
            kiln_runtime::containers::valid_name(name)?;
        }
        request.resources.validate()?;
        let store = self.store();
        let image = kiln_build::load_base(store, &request.image)?;
        let config = image.image_config()?;
        let digests: Vec<_> = image.layers.iter().map(|l| l.digest).collect();
        let lower_dirs = store.lower_dirs(&digests)?;
        let args = kiln_runtime::containers::command_line(
            config.entrypoint.as_deref().unwrap_or_default(),
            config.cmd.as_deref().unwrap_or_default(),
            request.entrypoint.as_deref(),
            &request.command,
        )?;
        let user_spec = request.user.as_deref().unwrap_or(&config.user);
        let mut user = kiln_runtime::process_user(&lower_dirs, Some(user_spec))?;
        for gid in kiln_runtime::resolve_groups(&lower_dirs, &request.group_add)? {
            if !user.user.additional_gids.contains(&gid) {
                user.user.additional_gids.push(gid);
            }
        }
        let mut env = config.env.clone();
        for item in &request.env {
            kiln_runtime::containers::set_env(&mut env, item);
        }
        kiln_runtime::set_default_home(&mut env, &user);
        // A terminal gets TERM=xterm unless the image or the request
        // names one (Docker's rule).
        if request.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
            env.push("TERM=xterm".to_owned());
        }
        let cwd = request
            .workdir
            .clone()
            .or_else(|| Some(config.working_dir.clone()).filter(|w| !w.is_empty()))
            .unwrap_or_else(|| "/".into());
        let mut binds: Vec<(PathBuf, String, bool)> = request
            .binds
            .iter()
            .map(|b| (b.host.clone(), b.target.clone(), b.read_only))
            .collect();
        let (mut volumes, mut anonymous) = (Vec::new(), Vec::new());
        for mount in &request.volumes {
            let volume = self.create_volume(mount.name.as_deref(), &Default::default())?;
            binds.push((
                volume.mountpoint.clone(),
                mount.target.clone(),
                mount.read_only,
            ));
            if volume.anonymous {
                anonymous.push(volume.name.clone());
            }
            volumes.push(volume.name);
        }
        let all = self.containers();
        let mut record = all
            .create(
                request.name.as_deref(),
                ContainerConfig {
                    image: request.image.clone(),
                    image_id: image.manifest.to_string(),
                    args,
                    env,
                    cwd,
                    uid: user.user.uid,
                    gid: user.user.gid,
                    additional_gids: user.user.additional_gids,
                    hostname: String::new(),
                    network: match request.network {
                        NetworkMode::Host => "host".into(),
                        NetworkMode::None => "none".into(),
                    },
                    binds,
                    volumes,
                    anonymous_volumes: anonymous,
                    lower_dirs,
                    tty: request.tty,
                    privileged: request.privileged,
                    seccomp: request.seccomp.clone(),
                    no_new_privileges: request.no_new_privileges,
                    resources: request.resources,
                    init: request.init,
                    capabilities: request.capabilities,
                    read_only: request.read_only,
                    tmpfs: request.tmpfs.clone(),
                    extra_hosts: request.extra_hosts.clone(),
                    ulimits: request.ulimits.clone(),
                    shm_size: request.shm_size,
                    labels: request.labels.clone(),
                    restart: request.restart,
                    stop_timeout: request.stop_timeout,
                    healthcheck: crate::health::health_check(
                        config.healthcheck.as_ref(),
                        &request.health,
                    ),
                    stop_signal: match request.stop_signal {
                        Some(signal) => Some(signal as i32),
                        // The image's STOPSIGNAL, as docker. One kiln cannot
                        // name (`SIGRTMIN+3`, systemd's) leaves SIGTERM: the
                        // image must still run.
                        None => parse_signal(&config.stop_signal).ok().map(|s| s as i32),
                    },
                },
            )
            .map_err(name_conflict)?;
        record.config.hostname = request
            .hostname
            .clone()
            .unwrap_or_else(|| record.id[..12].to_owned());
        record
            .config
            .env
            .push(format!("HOSTNAME={}", record.config.hostname));
        let config = record.config.clone();
        Ok(all.update(&record.id, |r| {
            r.config = config;
            Ok(())
        })?)
    }

    /// Runs container `id` to its end as its monitor: records it running
    /// (refused if another monitor runs it), hands the caller the running
    /// container through `started`, writes its output to the log (and to
    /// `attach.output`), records and returns the exit code (137 when
    /// killed). A command that cannot be executed is
    /// `EngineError::Runtime(RuntimeError::Exec)`, recorded as 127.
    ///
    /// Then, as long as the container's restart policy says so (the exit
    /// recorded as `restarting`), runs it again after Docker's backoff
    /// (100 ms, doubling, back to 100 ms after a run of 10 s), with the
    /// same attachment (`started` once per run); a `stop`, `kill` or
    /// `rm -f` in the backoff ends it. Returns the last run's outcome.
    pub fn run_container(
        &self,
        id: &str,
        mut attach: Attach<'_>,
        started: &mut dyn FnMut(Running) -> Result<(), EngineError>,
    ) -> Result<i32, EngineError> {
        let all = self.containers();
        let mut backoff = kiln_runtime::restart_policy::FIRST_BACKOFF;
        let restarting = || all.load(id).is_some_and(|r| r.restarting);
        loop {
            let began = Instant::now();
            let result = self.run_once(id, &mut attach, started);
            if !restarting() {
                return result;
            }
            let deadline = Instant::now() + backoff;
            while Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20).min(backoff));
                if !restarting() {
                    return result;
                }
            }
            backoff = kiln_runtime::restart_policy::next_backoff(backoff, began.elapsed());
            let counted = all.update(id, |r| {
                if !r.restarting {
                    return Err(RuntimeError::InvalidSpec("stopped in the backoff".into()));
                }
                r.restart_count += 1;
                Ok(())
            });
            if counted.is_err() {
                return result;
            }
        }
    }

    /// One run of [`Engine::run_container`].
    fn run_once(
        &self,
        id: &str,
        attach: &mut Attach<'_>,
        started: &mut dyn FnMut(Running) -> Result<(), EngineError>,
    ) -> Result<i32, EngineError> {
        let all = self.containers();
        let record = all.load(id).ok_or_else(|| EngineError::NotFound {
            what: "container",
            name: id.to_owned(),
        })?;
        // Before anything runs (the record's transition, under the
        // records' lock, refuses it again once the container exists).
        if record.is_running() {
            return Err(EngineError::Conflict(format!(
                "container {} is already running",
                record.name
            )));
        }
        let spec = record.spec(&all.dir(id));
        let stdio = Stdio {
            stdin: if attach.stdin {
                Stdin::Pipe
            } else {
                Stdin::Null
            },
            // Docker leaves 0x0, which busybox's stty and some full-screen
            // programs refuse.
            tty: record
                .config
                .tty
                .then(|| attach.window.unwrap_or(WindowSize { rows: 24, cols: 80 })),
        };
        let mut container = Container::spawn_with(&spec, stdio)?;
        let pid = container.pid();
        if let Err(error) = all.update(id, |r| r.started(std::process::id() as i32, pid)) {
            // Another monitor won the race: this one's run is undone.
            container.kill_handle().kill();
            let _ = container.wait(&mut Discard);
            return Err(match error {
                RuntimeError::InvalidSpec(message) => EngineError::Conflict(message),
                other => other.into(),
            });
        }
        // Each end is recorded on the record as it is then (a rename may
        // have come meanwhile).
        let exited = |code: i32| all.update(id, |r| r.exited(code)).map(drop);
        let wired = all
            .log_writer(id)
            .map_err(EngineError::from)
            .and_then(|log| {
                started(Running {
                    pid: container.pid(),
                    tty: container.tty_handle(),
                    stdin: container.take_stdin(),
                })
                .map(|()| log)
            });
        let log = match wired {
            Ok(log) => log,
            Err(error) => {
                // Not left running unwatched: killed, reaped, recorded.
                container.kill_handle().kill();
                let _ = container.wait(&mut Discard);
                exited(137)?;
                return Err(error);
            }
        };
        let mut sink = LogSink {
            log,
            output: attach.output.as_deref_mut(),
        };
        // The prober beside the wait, told when the run ends.
        let waited = std::thread::scope(|scope| {
            let (stop, stopped) = std::sync::mpsc::channel::<()>();
            if let Some(check) = &record.config.healthcheck {
                scope.spawn(move || self.probe_until(id, check, &stopped));
            }
            let waited = container.wait(&mut sink);
            drop(stop);
            waited
        });
        let code = match waited {
            Ok(status) => status.code(),
            Err(RuntimeError::Killed) => 137,
            Err(error) => {
                exited(127)?;
                return Err(error.into());
            }
        };
        exited(code)?;
        Ok(code)
    }

    /// Runs `request` in the running container `record` to its end, as
    /// `docker exec`: the container's environment (with the request's
    /// over it, and TERM=xterm on a terminal), working directory, user
    /// and confinement unless the request overrides them. Output goes to
    /// `attach.output` (not the container's log, as under Docker).
    /// Returns the process's exit code (137 when killed); a command that
    /// cannot be executed is `EngineError::Runtime(RuntimeError::Exec)`.
    pub fn exec_in_container(
        &self,
        record: &ContainerRecord,
        request: &ExecRequest,
        attach: Attach<'_>,
        started: &mut dyn FnMut(Running) -> Result<(), EngineError>,
    ) -> Result<i32, EngineError> {
        kiln_runtime::require_root()?;
        if request.command.is_empty() {
            return Err(EngineError::Request("exec needs a command".into()));
        }
        let init = self.running_pid_of(record)?;
        // Docker's rule: it would hang, frozen, until the unpause.
        if record.is_paused() {
            return Err(EngineError::Conflict(format!(
                "container {} is paused, unpause the container before exec",
                record.name
            )));
        }
        let config = &record.config;
        let user = match request.user.as_deref().filter(|u| !u.is_empty()) {
            Some(spec) => {
                // The container's own files, its changes over the image's.
                let mut dirs = vec![self.containers().upper_dir(&record.id)];
                dirs.extend(config.lower_dirs.iter().cloned());
                kiln_runtime::process_user(&dirs, Some(spec))?.user
            }
            None => kiln_runtime::User {
                uid: config.uid,
                gid: config.gid,
                additional_gids: config.additional_gids.clone(),
            },
        };
        let mut env = config.env.clone();
        for item in &request.env {
            kiln_runtime::containers::set_env(&mut env, item);
        }
        if request.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
            env.push("TERM=xterm".to_owned());
        }
        let spec = kiln_runtime::ExecSpec {
            args: request.command.clone(),
            env: kiln_runtime::containers::process_env(&env),
            cwd: request
                .workdir
                .clone()
                .unwrap_or_else(|| config.cwd.clone()),
            user,
            privileged: config.privileged || request.privileged,
            capabilities: config.capabilities,
            seccomp: config.seccomp.clone(),
            no_new_privileges: config.no_new_privileges,
            ulimits: config.ulimits.clone(),
        };
        let stdio = Stdio {
            stdin: if attach.stdin {
                Stdin::Pipe
            } else {
                Stdin::Null
            },
            tty: request
                .tty
                .then(|| attach.window.unwrap_or(WindowSize { rows: 24, cols: 80 })),
        };
        let mut process = Container::exec(init, &spec, stdio)?;
        let wired = started(Running {
            pid: process.pid(),
            tty: process.tty_handle(),
            stdin: process.take_stdin(),
        });
        if let Err(error) = wired {
            process.kill_handle().kill();
            let _ = process.wait(&mut Discard);
            return Err(error);
        }
        let mut discard = Discard;
        let sink: &mut dyn OutputSink = match attach.output {
            Some(output) => output,
            None => &mut discard,
        };
        match process.wait(sink) {
            Ok(status) => Ok(status.code()),
            Err(RuntimeError::Killed) => Ok(137),
            Err(error) => Err(error.into()),
        }
    }

    /// Its stop signal (SIGTERM unless `--stop-signal` or the image's
    /// STOPSIGNAL says otherwise) to the container's pid 1, then SIGKILL
    /// after `grace` (a pid-1 command without a handler for it ignores the
    /// first, as under Docker); returns once its monitor has recorded the end, or 10 s
    /// after the SIGKILL.
    pub fn stop_container(
        &self,
        record: &ContainerRecord,
        grace: Duration,
    ) -> Result<(), EngineError> {
        use nix::sys::signal::Signal;
        let all = self.containers();
        // Before the signal: the exit it brings is then not restarted (and
        // a restart in its backoff is called off).
        let record = &self.stopped_by_hand(record)?;
        let Some(pid) = record.running_pid() else {
            return Ok(());
        };
        let stopped = || all.load(&record.id).is_none_or(|r| !r.is_running());
        let wait = |limit: Duration| {
            let deadline = Instant::now() + limit;
            while Instant::now() < deadline && !stopped() {
                std::thread::sleep(Duration::from_millis(20));
            }
        };
        let first = record
            .config
            .stop_signal
            .and_then(|n| Signal::try_from(n).ok())
            .unwrap_or(Signal::SIGTERM);
        signal(pid, first);
        wait(grace);
        if !stopped() {
            signal(pid, Signal::SIGKILL);
            wait(Duration::from_secs(10));
        }
        Ok(())
    }

    /// Sends `signal` to the running container's pid 1 (as `docker kill`;
    /// a pid 1 gets only the signals it handles, SIGKILL aside).
    pub fn kill_container(
        &self,
        record: &ContainerRecord,
        signal_to_send: nix::sys::signal::Signal,
    ) -> Result<(), EngineError> {
        let pid = self.running_pid_of(record)?;
        // Docker's rule: SIGKILL or the stop signal is a stop by hand.
        let stop_signal = record
            .config
            .stop_signal
            .and_then(|n| nix::sys::signal::Signal::try_from(n).ok())
            .unwrap_or(nix::sys::signal::Signal::SIGTERM);
        if signal_to_send == nix::sys::signal::Signal::SIGKILL || signal_to_send == stop_signal {
            self.stopped_by_hand(record)?;
        }
        signal(pid, signal_to_send);
        Ok(())
    }

    /// Changes a container's limits and restart policy (`docker update`):
    /// a running one's cgroups first (a limit the kernel refuses, memory
    /// below what it uses, say, changes nothing), then its record, so its
    /// next start has them too.
    pub fn update_container(
        &self,
        record: &ContainerRecord,
        update: &ContainerUpdate,
    ) -> Result<ContainerRecord, EngineError> {
        if let Some(cpus) = update.resources.cpus {
            let online = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
            if !(0.01..=online).contains(&cpus) {
                return Err(EngineError::Request(format!(
                    "--cpus {cpus}: between 0.01 and the {online} CPUs this machine has"
                )));
            }
        }
        if let Some(pid) = record.running_pid() {
            kiln_runtime::update_resources(pid, &update.resources)?;
        }
        Ok(self.containers().update(&record.id, |r| {
            let resources = &mut r.config.resources;
            if let Some(memory) = update.resources.memory_bytes {
                resources.memory_bytes = Some(memory);
            }
            if let Some(cpus) = update.resources.cpus {
                resources.cpus = Some(cpus);
            }
            if let Some(pids) = update.resources.pids_limit {
                resources.pids_limit = Some(pids);
            }
            if let Some(restart) = update.restart {
                r.config.restart = restart;
            }
            Ok(())
        })?)
    }

    /// The running container's processes (`docker top`).
    pub fn container_processes(
        &self,
        record: &ContainerRecord,
    ) -> Result<Vec<kiln_runtime::ProcessInfo>, EngineError> {
        let init = self.running_pid_of(record)?;
        Ok(kiln_runtime::container_processes(init))
    }

    /// Gives the container a new name (`docker rename`), running or not.
    pub fn rename_container(
        &self,
        record: &ContainerRecord,
        name: &str,
    ) -> Result<ContainerRecord, EngineError> {
        self.containers()
            .rename(&record.id, name)
            .map_err(name_conflict)
    }

    /// Freezes every process of the running container (`docker pause`,
    /// the cgroup freezer): they stay, using no CPU, until
    /// [`Engine::unpause_container`] or a signal from `stop` or `kill`.
    pub fn pause_container(&self, record: &ContainerRecord) -> Result<(), EngineError> {
        let pid = self.running_pid_of(record)?;
        if record.is_paused() {
            return Err(EngineError::Conflict(format!(
                "container {} is already paused",
                record.name
            )));
        }
        Ok(kiln_runtime::set_frozen(pid, true)?)
    }

    /// Thaws a paused container (`docker unpause`).
    pub fn unpause_container(&self, record: &ContainerRecord) -> Result<(), EngineError> {
        let pid = self.running_pid_of(record)?;
        if !record.is_paused() {
            return Err(EngineError::Conflict(format!(
                "container {} is not paused",
                record.name
            )));
        }
        Ok(kiln_runtime::set_frozen(pid, false)?)
    }

    /// Marks the container stopped by hand (no restart policy applies to
    /// its next exit; a restart waiting in its backoff is called off);
    /// the record as it is now.
    fn stopped_by_hand(&self, record: &ContainerRecord) -> Result<ContainerRecord, EngineError> {
        match self.containers().update(&record.id, |r| {
            r.stopped_by_hand = true;
            r.restarting = false;
            Ok(())
        }) {
            Ok(now) => Ok(now),
            Err(RuntimeError::Gone(_)) => Ok(record.clone()),
            Err(error) => Err(error.into()),
        }
    }

    fn running_pid_of(&self, record: &ContainerRecord) -> Result<i32, EngineError> {
        record.running_pid().ok_or_else(|| {
            EngineError::Conflict(format!("container {} is not running", record.name))
        })
    }

    /// Waits until the container is not running, and returns its exit
    /// code (as `docker wait`; one that never ran has none: 0).
    pub fn wait_container(&self, record: &ContainerRecord) -> Result<i32, EngineError> {
        let all = self.containers();
        loop {
            let Some(now) = all.load(&record.id) else {
                return Err(EngineError::Request(format!(
                    "container {} was removed while waiting for it",
                    record.name
                )));
            };
            if !now.is_running() {
                return Ok(match now.state {
                    kiln_runtime::containers::State::Exited { code, .. } => code,
                    _ => 0,
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Hands `emit` the container's log line by line (as `docker logs`):
    /// with `tail`, the last lines only; of those, the ones written from
    /// `since` to `until` (a line of a log from before kiln kept times
    /// always goes); with `follow`, then what it appends until it is not
    /// running (or `until` has passed). Whether it runs is checked before
    /// each read, and a monitor records the exit only after the last
    /// output is in the log, so a follower never misses the end (the log
    /// stays open, so not even when `--rm` removes the container). Stops
    /// quietly when `emit` fails with a broken pipe (the reader left).
    pub fn read_log(
        &self,
        record: &ContainerRecord,
        options: &LogOptions,
        emit: &mut dyn FnMut(kiln_runtime::containers::LogLine<'_>) -> std::io::Result<()>,
    ) -> Result<(), EngineError> {
        let all = self.containers();
        let Some(mut log) = all.log_reader(&record.id)? else {
            return Ok(());
        };
        let path = all.log_path(&record.id);
        let failed = |e: std::io::Error| EngineError::io(path.clone(), e);
        if let Some(lines) = options.tail {
            log.skip_to_last(lines).map_err(failed)?;
        }
        // A line past `until` ends it all (the log is in time order), as
        // a reader that left does.
        let mut in_range = |line: kiln_runtime::containers::LogLine<'_>| {
            let written = line.written;
            if written
                .zip(options.until)
                .is_some_and(|(at, until)| at > until)
            {
                return Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
            }
            if written
                .zip(options.since)
                .is_some_and(|(at, since)| at < since)
            {
                return Ok(());
            }
            emit(line)
        };
        loop {
            let until_passed = options
                .until
                .is_some_and(|until| std::time::SystemTime::now() > until);
            let running = options.follow
                && !until_passed
                && all.load(&record.id).is_some_and(|r| r.is_running());
            match log.read_lines(!running, &mut in_range) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
                Err(e) => return Err(failed(e)),
            }
            if !running {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Removes every container that is not running (`container prune`);
    /// the ones removed, with the bytes their own files took.
    pub fn prune_containers(&self) -> Result<Vec<(ContainerRecord, u64)>, EngineError> {
        let mut removed = Vec::new();
        for record in self.containers().list() {
            if record.is_running() {
                continue;
            }
            let bytes = crate::tree_size(&self.containers().upper_dir(&record.id));
            self.remove_container(&record, false)?;
            removed.push((record, bytes));
        }
        Ok(removed)
    }

    /// Removes a container and its rw layer; a running one only with
    /// `force` (SIGKILL first).
    pub fn remove_container(
        &self,
        record: &ContainerRecord,
        force: bool,
    ) -> Result<(), EngineError> {
        let record = self
            .containers()
            .load(&record.id)
            .unwrap_or_else(|| record.clone());
        if record.is_running() || record.restarting {
            if !force {
                let state = if record.restarting {
                    "restarting"
                } else {
                    "running"
                };
                return Err(EngineError::Conflict(format!(
                    "container {} is {state}: you cannot remove a {state} container; stop the container before attempting removal or force remove (rm -f)",
                    record.name
                )));
            }
            self.stop_container(&record, Duration::ZERO)?;
        }
        Ok(self.containers().remove(&record)?)
    }

    /// Removes the anonymous volumes of a removed container (`run --rm`,
    /// `rm -v`); named ones stay, as under Docker.
    pub fn remove_anonymous_volumes(&self, record: &ContainerRecord) -> Result<(), EngineError> {
        for name in &record.config.anonymous_volumes {
            self.remove_volume(name, true)?;
        }
        Ok(())
    }

    /// The container's changes as a new layer on its image, named `tag`
    /// if given. What it writes is leased by this process until tagged.
    pub fn commit_container(
        &self,
        record: &ContainerRecord,
        tag: Option<&str>,
        created: &str,
    ) -> Result<ImageRecord, EngineError> {
        let store = self.store();
        let upper = self.containers().upper_dir(&record.id);
        let layer = kiln_store::layer_from_upper(store.blobs(), &upper, None)?;
        let comment = format!("kiln commit {}", record.name);
        let image =
            kiln_build::commit_layer(store, &record.config.image_id, layer, created, &comment)?;
        match tag {
            Some(tag) => store.tag(tag, &image.manifest)?,
            None => store.keep_untagged(&image.manifest)?,
        }
        Ok(image)
    }
}

/// A name another container has is a conflict (Docker's 409).
fn name_conflict(error: RuntimeError) -> EngineError {
    match error {
        RuntimeError::NameInUse { .. } => EngineError::Conflict(error.to_string()),
        other => other.into(),
    }
}

/// `signal` to a container's pid 1; a paused container is thawed after
/// it, so the signal is acted on (Docker's kill and stop of a paused
/// container do the same).
fn signal(pid: i32, signal: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
    if kiln_runtime::is_frozen(pid) {
        let _ = kiln_runtime::set_frozen(pid, false);
    }
}

/// Output nobody reads (a container being killed).
struct Discard;

impl OutputSink for Discard {
    fn stdout(&mut self, _: &[u8]) {}
    fn stderr(&mut self, _: &[u8]) {}
}

/// The log always; the caller's sink too when attached.
struct LogSink<'a, 'b> {
    log: kiln_runtime::containers::LogWriter,
    output: Option<&'a mut (dyn OutputSink + 'b)>,
}

impl OutputSink for LogSink<'_, '_> {
    fn stdout(&mut self, data: &[u8]) {
        let _ = self.log.write(data);
        if let Some(output) = self.output.as_mut() {
            output.stdout(data);
        }
    }

    fn stderr(&mut self, data: &[u8]) {
        let _ = self.log.write(data);
        if let Some(output) = self.output.as_mut() {
            output.stderr(data);
        }
    }
}
