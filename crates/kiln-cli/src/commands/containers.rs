//! `kiln run` and the containers it leaves: `ps`, `start`, `stop`, `rm`,
//! `logs`, `commit`: flags into kiln-engine's container calls, and this
//! process's terminal wired to the container. A container runs under a
//! monitor ([`Engine::run_container`]): the `kiln run` process itself in
//! the foreground, or a detached `kiln` (`-d`, `start`).

use std::io::Write;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use kiln_engine::{
    Attach, Bind, ContainerRequest, Engine, EngineError, ExecRequest, NetworkMode, VolumeMount,
};
use kiln_runtime::containers::{ContainerRecord, Containers, State};
use kiln_runtime::{terminal, OutputSink, TtyHandle, WindowSize};
use kiln_store::Store;

use super::build::pids_limit_flag;
use super::dockerfile::print;
use super::images::open_store;
use crate::output::report;

/// When `kiln run` pulls its image (as `docker run --pull`).
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum PullPolicy {
    Missing,
    Always,
    Never,
}

#[derive(Args)]
pub struct RunArgs {
    /// Remove the container when it exits
    #[arg(long)]
    rm: bool,
    /// Start it again when it exits: no, always, unless-stopped, on-failure[:N]
    #[arg(long, value_name = "POLICY", default_value = "no")]
    restart: String,
    /// The health check's command (run with /bin/sh -c), over the image's
    #[arg(long, value_name = "COMMAND")]
    health_cmd: Option<String>,
    /// Between health probes (30s by default)
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    health_interval: Option<Duration>,
    /// How long a probe may run (30s by default)
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    health_timeout: Option<Duration>,
    /// Failures in a row that make it unhealthy (3 by default)
    #[arg(long, value_name = "N")]
    health_retries: Option<u32>,
    /// Failures in this first while do not count
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    health_start_period: Option<Duration>,
    /// Between probes in the start period (the interval by default)
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    health_start_interval: Option<Duration>,
    /// No health check, whatever the image says
    #[arg(long)]
    no_healthcheck: bool,
    /// One more group for the container's processes (a name in the
    /// image's /etc/group, or a number)
    #[arg(long = "group-add", value_name = "GROUP")]
    group_add: Vec<String>,
    /// Seconds `stop` waits after its first signal (10 by default)
    #[arg(long, value_name = "SECONDS")]
    stop_timeout: Option<u64>,
    /// Pull the image first: missing (if the store lacks it, the
    /// default), always, or never
    #[arg(long, value_enum, default_value_t = PullPolicy::Missing)]
    pull: PullPolicy,
    #[command(flatten)]
    registry: super::registry::RegistryArgs,
    /// Run in the background and print the container id
    #[arg(short, long)]
    detach: bool,
    /// Keep standard input open: the container reads this process's stdin
    #[arg(short, long)]
    interactive: bool,
    /// Allocate a pseudo-terminal for the container (stdout and stderr merge)
    #[arg(short, long)]
    tty: bool,
    /// Name the container
    #[arg(long)]
    name: Option<String>,
    /// Set an environment variable (NAME alone takes it from here)
    #[arg(short, long = "env", value_name = "NAME[=VALUE]")]
    env: Vec<String>,
    /// Read environment variables from a file (NAME=VALUE lines)
    #[arg(long = "env-file", value_name = "FILE")]
    env_file: Vec<PathBuf>,
    /// Bind a host path: HOST:CONTAINER[:ro]
    #[arg(short, long = "volume", value_name = "HOST:CONTAINER[:ro]")]
    volume: Vec<String>,
    /// Working directory inside the container
    #[arg(short, long)]
    workdir: Option<String>,
    /// User (name or uid, optionally :group)
    #[arg(short, long)]
    user: Option<String>,
    /// Override the image's ENTRYPOINT ("" clears it)
    #[arg(long)]
    entrypoint: Option<String>,
    /// host (the default) or none
    #[arg(long, default_value = "host")]
    network: String,
    /// The container's hostname (default: the id's first 12 characters)
    #[arg(long)]
    hostname: Option<String>,
    /// Every capability, no masked /proc paths and no seccomp filter
    #[arg(long)]
    privileged: bool,
    /// Add a capability to Docker's default set (NET_ADMIN, CAP_SYS_TIME, ALL)
    #[arg(long = "cap-add", value_name = "CAP")]
    cap_add: Vec<String>,
    /// Drop a capability from it (ALL drops every one)
    #[arg(long = "cap-drop", value_name = "CAP")]
    cap_drop: Vec<String>,
    /// Mount the container's root filesystem read-only
    #[arg(long)]
    read_only: bool,
    /// A tmpfs at PATH (PATH[:size=64m])
    #[arg(long, value_name = "PATH[:size=SIZE]")]
    tmpfs: Vec<String>,
    /// type=bind,source=HOST,target=PATH[,readonly] or type=tmpfs,target=PATH[,tmpfs-size=SIZE]
    #[arg(long, value_name = "SPEC")]
    mount: Vec<String>,
    /// A label for the container (KEY=VALUE)
    #[arg(short, long, value_name = "KEY=VALUE")]
    label: Vec<String>,
    /// The signal stop sends first (default: the image's STOPSIGNAL, else SIGTERM)
    #[arg(long, value_name = "SIGNAL")]
    stop_signal: Option<String>,
    /// A line in the container's /etc/hosts (NAME:ADDRESS)
    #[arg(long = "add-host", value_name = "NAME:ADDRESS")]
    add_host: Vec<String>,
    /// A resource limit: NAME=SOFT[:HARD] (nofile=1024:2048; -1 unlimited)
    #[arg(long, value_name = "NAME=SOFT[:HARD]")]
    ulimit: Vec<String>,
    /// The size of /dev/shm (a number and a unit b, k, m or g; default 64m)
    #[arg(long, value_name = "SIZE", value_parser = kiln_graph::values::parse_memory_size)]
    shm_size: Option<u64>,
    /// Run an init as PID 1 (kiln-init, as docker run --init runs tini)
    /// that forwards signals to the command and reaps orphaned zombies;
    /// without it the command itself is PID 1, and ignores the signals it
    /// has no handler for (stop then ends it with SIGKILL)
    #[arg(long)]
    init: bool,
    /// seccomp=unconfined, seccomp=PROFILE.json (Docker's format) or
    /// no-new-privileges
    #[arg(long = "security-opt", value_name = "OPTION")]
    security_opt: Vec<String>,
    /// Memory limit: a number and a unit b, k, m or g (64m); past it the
    /// kernel kills a process of the container (exit 137)
    #[arg(short, long, value_name = "SIZE", value_parser = kiln_graph::values::parse_memory_size)]
    memory: Option<u64>,
    /// How much CPU time the container may use, in CPUs (0.5: half of one)
    #[arg(long, value_name = "N")]
    cpus: Option<f64>,
    /// Most tasks (processes and threads) at once (-1: unlimited, the default)
    #[arg(long = "pids-limit", value_name = "N", allow_hyphen_values = true)]
    pids_limit: Option<i64>,
    /// The image (name, digest or id), then the command and its arguments
    /// (default: the image's CMD). Everything after the image belongs to
    /// the command, as with docker: `kiln run node -e 'code'` passes `-e`
    /// to node. (One positional: clap stops reading flags only once a
    /// trailing positional has begun.)
    #[arg(
        value_name = "IMAGE [COMMAND [ARG...]]",
        required = true,
        num_args = 1..,
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    image_and_command: Vec<String>,
}

impl RunArgs {
    fn image(&self) -> &str {
        &self.image_and_command[0]
    }

    fn command(&self) -> &[String] {
        &self.image_and_command[1..]
    }
}

/// `kiln run`: creates a container from an image and runs it.
pub fn run(root: Option<&Path>, args: RunArgs) -> anyhow::Result<ExitCode> {
    if args.rm && args.restart != "no" {
        bail!("--rm cannot be combined with --restart: a container removed when it exits is never started again");
    }
    if args.interactive && args.detach {
        bail!("-i cannot be combined with -d: kiln has no attach command to feed a detached container's stdin");
    }
    if args.interactive && args.tty && !terminal::is_terminal(std::io::stdin().as_fd()) {
        bail!("the input device is not a TTY: -it needs a terminal on stdin (use -i alone to pipe input)");
    }
    let engine = Engine::new(open_store(root)?);
    let image = args.image();
    let missing = engine.store().resolve(image).is_err();
    if matches!(args.pull, PullPolicy::Always)
        || missing && matches!(args.pull, PullPolicy::Missing)
    {
        if missing {
            report!("Unable to find image '{image}' locally");
        }
        let platform = super::registry::platform(None)?;
        // Shown as `kiln pull` shows it.
        let view = super::registry::PullView::new(false);
        let lines = |event: kiln_registry::PullEvent| view.event(event);
        kiln_registry::pull(
            engine.store(),
            image,
            &platform,
            &args.registry.options()?,
            &lines,
        )?;
    }
    let record = engine.create_container(&container_request(&args)?)?;
    if args.detach {
        spawn_monitor(engine.store(), &record.id, args.rm)?;
        wait_until_started(&engine.containers(), &record)?;
        print(&format!("{}\n", record.id))?;
        return Ok(ExitCode::SUCCESS);
    }
    let result = monitor(&engine, &record.id, true, args.interactive);
    // Whether or not the command could even start.
    if args.rm {
        if let Some(record) = engine.containers().load(&record.id) {
            engine.remove_container(&record, true)?;
            engine.remove_anonymous_volumes(&record)?;
        }
    }
    Ok(ExitCode::from(exit_status(result)?))
}

/// The flags as a container request.
fn container_request(args: &RunArgs) -> anyhow::Result<ContainerRequest> {
    let env = environment(&args.env_file, &args.env)?;
    let security = security_options(&args.security_opt)?;
    let mut mounts = Mounts::default();
    for spec in &args.volume {
        mounts.add_volume_flag(spec)?;
    }
    for spec in &args.mount {
        mounts.add_mount_flag(spec)?;
    }
    if args.no_healthcheck && args.health_cmd.is_some() {
        bail!("--no-healthcheck cannot be combined with --health-cmd");
    }
    Ok(ContainerRequest {
        group_add: args.group_add.clone(),
        stop_timeout: args.stop_timeout,
        restart: kiln_runtime::containers::RestartPolicy::parse(&args.restart)
            .context("--restart")?,
        health: kiln_engine::HealthOptions {
            test: args
                .health_cmd
                .as_ref()
                .map(|command| vec!["CMD-SHELL".to_owned(), command.clone()]),
            interval: args.health_interval,
            timeout: args.health_timeout,
            start_period: args.health_start_period,
            start_interval: args.health_start_interval,
            retries: args.health_retries,
            disabled: args.no_healthcheck,
        },
        image: args.image().to_owned(),
        command: args.command().to_vec(),
        entrypoint: args.entrypoint.clone(),
        env,
        user: args.user.clone(),
        workdir: args.workdir.clone(),
        network: match args.network.as_str() {
            "host" | "default" => NetworkMode::Host,
            "none" => NetworkMode::None,
            other => bail!("--network {other:?}: kiln offers host and none"),
        },
        binds: mounts.binds,
        volumes: mounts.volumes,
        hostname: args.hostname.clone(),
        name: args.name.clone(),
        tty: args.tty,
        privileged: args.privileged,
        seccomp: security.seccomp,
        no_new_privileges: security.no_new_privileges,
        resources: kiln_runtime::Resources {
            memory_bytes: args.memory,
            cpus: args.cpus,
            pids_limit: args.pids_limit.map(pids_limit_flag).transpose()?.flatten(),
        },
        init: args.init,
        capabilities: kiln_runtime::CapabilityChanges::parse(&args.cap_add, &args.cap_drop)
            .map_err(anyhow::Error::msg)?,
        read_only: args.read_only,
        tmpfs: {
            let mut all = args
                .tmpfs
                .iter()
                .map(|t| parse_tmpfs(t))
                .collect::<anyhow::Result<Vec<_>>>()?;
            all.extend(mounts.tmpfs);
            all
        },
        labels: args
            .label
            .iter()
            .map(|l| match l.split_once('=') {
                Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
                _ => bail!("--label {l:?}: expected KEY=VALUE"),
            })
            .collect::<anyhow::Result<_>>()?,
        stop_signal: args
            .stop_signal
            .as_deref()
            .map(kiln_engine::parse_signal)
            .transpose()
            .context("--stop-signal")?,
        extra_hosts: args
            .add_host
            .iter()
            .map(|h| kiln_engine::parse_add_host(h))
            .collect::<Result<_, _>>()?,
        ulimits: args
            .ulimit
            .iter()
            .map(|u| kiln_runtime::Ulimit::parse(u))
            .collect::<Result<_, _>>()
            .map_err(anyhow::Error::msg)?,
        shm_size: args.shm_size,
    })
}

/// `--env-file` lines (NAME=VALUE; blank lines and `#` comments
/// skipped), then the `-e` values, in that order.
fn environment(files: &[PathBuf], values: &[String]) -> anyhow::Result<Vec<String>> {
    let mut env = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("--env-file {}", file.display()))?;
        env.extend(
            text.lines()
                .map(str::trim)
                .filter(|line| !line.is_empty() && !line.starts_with('#'))
                .map(str::to_owned),
        );
    }
    env.extend(values.iter().cloned());
    // `NAME` alone takes this process's value, as docker's CLI does (and
    // is left out when it has none); the engine never looks one up.
    Ok(env
        .into_iter()
        .filter_map(|item| match item.contains('=') {
            true => Some(item),
            false => std::env::var(&item)
                .ok()
                .map(|value| format!("{item}={value}")),
        })
        .collect())
}

/// `--tmpfs PATH[:size=SIZE[,...]]`: docker's options besides size are
/// refused rather than ignored.
fn parse_tmpfs(spec: &str) -> anyhow::Result<Tmpfs> {
    let (path, options) = spec.split_once(':').unwrap_or((spec, ""));
    if !path.starts_with('/') {
        bail!("--tmpfs {spec:?}: the container path must be absolute");
    }
    let mut size = None;
    for option in options.split(',').filter(|o| !o.is_empty()) {
        match option.split_once('=') {
            Some(("size", value)) => {
                size = Some(
                    kiln_graph::values::parse_memory_size(value)
                        .map_err(|e| anyhow::anyhow!("--tmpfs {spec:?}: {e}"))?,
                )
            }
            _ => bail!("--tmpfs {spec:?}: only size=SIZE is supported"),
        }
    }
    Ok((path.to_owned(), size))
}

/// A tmpfs mount: its container path and size limit.
type Tmpfs = (String, Option<u64>);

/// What `-v` and `--mount` ask for.
#[derive(Default)]
struct Mounts {
    binds: Vec<Bind>,
    volumes: Vec<VolumeMount>,
    tmpfs: Vec<Tmpfs>,
}

impl Mounts {
    /// `-v HOST:PATH[:ro]` (a bind), `-v NAME:PATH[:ro]` (a named
    /// volume), `-v PATH` (an anonymous one), as docker reads them.
    fn add_volume_flag(&mut self, spec: &str) -> anyhow::Result<()> {
        let parts: Vec<&str> = spec.split(':').collect();
        let (source, target, read_only) = match parts.as_slice() {
            [target] => (None, *target, false),
            [source, target] => (Some(*source), *target, false),
            [source, target, "ro"] => (Some(*source), *target, true),
            [source, target, "rw"] => (Some(*source), *target, false),
            _ => {
                bail!("-v {spec:?}: expected HOST:CONTAINER[:ro], NAME:CONTAINER[:ro] or CONTAINER")
            }
        };
        if !target.starts_with('/') {
            bail!("-v {spec:?}: the container path must be absolute");
        }
        match source {
            Some(host) if host.starts_with('/') => {
                let host =
                    std::fs::canonicalize(host).with_context(|| format!("-v {spec}: {host}"))?;
                self.binds.push(Bind {
                    host,
                    target: target.to_owned(),
                    read_only,
                });
            }
            Some(name) if kiln_runtime::containers::is_docker_name(name) => {
                self.volumes.push(VolumeMount {
                    name: Some(name.to_owned()),
                    target: target.to_owned(),
                    read_only,
                })
            }
            Some(other) => bail!(
                "-v {spec:?}: {other:?} is neither an absolute host path nor a volume name \
                 ([a-zA-Z0-9][a-zA-Z0-9_.-]+)"
            ),
            None => self.volumes.push(VolumeMount {
                name: None,
                target: target.to_owned(),
                read_only,
            }),
        }
        Ok(())
    }

    /// `--mount type=bind|volume|tmpfs,...` (docker's keys).
    fn add_mount_flag(&mut self, spec: &str) -> anyhow::Result<()> {
        let mut kind = None;
        let mut source = None;
        let mut target = None;
        let mut readonly = false;
        let mut size = None;
        for field in spec.split(',') {
            let (key, value) = field.split_once('=').unwrap_or((field, ""));
            match key {
                "type" => kind = Some(value),
                "source" | "src" => source = Some(value),
                "target" | "destination" | "dst" => target = Some(value),
                "readonly" | "ro" if value.is_empty() || value == "true" || value == "1" => readonly = true,
                "readonly" | "ro" if value == "false" || value == "0" => readonly = false,
                "tmpfs-size" => {
                    size = Some(
                        kiln_graph::values::parse_memory_size(value)
                            .map_err(|e| anyhow::anyhow!("--mount {spec:?}: {e}"))?,
                    )
                }
                _ => bail!("--mount {spec:?}: {key:?} is not supported (type, source, target, readonly, tmpfs-size)"),
            }
        }
        let Some(target) = target.filter(|t| t.starts_with('/')) else {
            bail!("--mount {spec:?}: target=PATH (absolute) is required");
        };
        let suffix = if readonly { ":ro" } else { "" };
        match (kind, source) {
            (Some("bind"), Some(source)) if source.starts_with('/') => {
                self.add_volume_flag(&format!("{source}:{target}{suffix}"))
            }
            (Some("bind"), _) => {
                bail!("--mount {spec:?}: a bind needs source=HOST_PATH (absolute)")
            }
            (Some("volume"), Some(name)) if !name.is_empty() => {
                if !kiln_runtime::containers::is_docker_name(name) {
                    bail!("--mount {spec:?}: {name:?} is not a volume name ([a-zA-Z0-9][a-zA-Z0-9_.-]+)");
                }
                self.add_volume_flag(&format!("{name}:{target}{suffix}"))
            }
            (Some("volume"), _) => {
                self.volumes.push(VolumeMount {
                    name: None,
                    target: target.to_owned(),
                    read_only: readonly,
                });
                Ok(())
            }
            (Some("tmpfs"), _) => {
                self.tmpfs.push((target.to_owned(), size));
                Ok(())
            }
            _ => bail!("--mount {spec:?}: type=bind, type=volume or type=tmpfs"),
        }
    }
}

/// The container's exit status, or Docker's for a command that could not
/// be executed (the error printed): 127 not found, 126 not executable.
fn exit_status(result: anyhow::Result<i32>) -> anyhow::Result<u8> {
    match result {
        Ok(code) => Ok(code.clamp(0, 255) as u8),
        Err(error) => match error.downcast_ref::<EngineError>() {
            Some(EngineError::Runtime(kiln_runtime::RuntimeError::Exec { errno, .. })) => {
                report!("error: {error}");
                Ok(if *errno == nix::errno::Errno::ENOENT {
                    127
                } else {
                    126
                })
            }
            _ => Err(error),
        },
    }
}

/// What `--security-opt` asked for.
#[derive(Debug, Default, PartialEq)]
struct SecurityOptions {
    seccomp: kiln_runtime::Seccomp,
    no_new_privileges: bool,
}

/// Docker's `--security-opt` values kiln knows (`KEY=VALUE`, or the older
/// `KEY:VALUE`).
fn security_options(options: &[String]) -> anyhow::Result<SecurityOptions> {
    let mut security = SecurityOptions::default();
    for option in options {
        let (key, value) = match option.split_once(['=', ':']) {
            Some((key, value)) => (key, Some(value)),
            None => (option.as_str(), None),
        };
        match (key, value) {
            ("no-new-privileges", None | Some("true")) => security.no_new_privileges = true,
            ("no-new-privileges", Some("false")) => security.no_new_privileges = false,
            ("seccomp", Some("unconfined")) => security.seccomp = kiln_runtime::Seccomp::Unconfined,
            ("seccomp", Some(path)) if !path.is_empty() => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("--security-opt {option}"))?;
                let profile = kiln_runtime::seccomp::Profile::from_json(&text)
                    .with_context(|| format!("--security-opt {option}: not a seccomp profile"))?;
                profile
                    .check()
                    .with_context(|| format!("--security-opt {option}"))?;
                security.seccomp = kiln_runtime::Seccomp::Profile(Box::new(profile));
            }
            _ => bail!(
                "--security-opt {option:?}: kiln knows seccomp=unconfined, seccomp=PROFILE.json and no-new-privileges"
            ),
        }
    }
    Ok(security)
}

/// Starts `kiln __monitor ID` in its own session, detached from this
/// terminal, to run the container in the background.
fn spawn_monitor(store: &Store, id: &str, remove: bool) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().context("finding the kiln binary")?;
    let mut command = std::process::Command::new(exe);
    command
        .arg("--root")
        .arg(store.root())
        .arg("__monitor")
        .arg(id)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0);
    if remove {
        command.arg("--rm");
    }
    command
        .spawn()
        .context("starting the container's monitor")?;
    Ok(())
}

#[derive(Args)]
pub struct MonitorArgs {
    id: String,
    #[arg(long)]
    rm: bool,
}

/// `kiln __monitor ID`: the background side of `run -d` and `start`.
pub fn monitor_command(root: Option<&Path>, args: MonitorArgs) -> anyhow::Result<ExitCode> {
    let engine = Engine::new(open_store(root)?);
    let result = monitor(&engine, &args.id, false, false);
    if args.rm {
        if let Some(record) = engine.containers().load(&args.id) {
            engine.remove_container(&record, true)?;
            engine.remove_anonymous_volumes(&record)?;
        }
    }
    Ok(ExitCode::from(exit_status(result)?))
}

/// Runs the container `id` to its end through [`Engine::run_container`],
/// with this process's terminal wired to it: SIGINT/SIGTERM/SIGHUP/SIGQUIT
/// passed on, output to stdout/stderr when `attached`, and with
/// `interactive` this process's stdin fed to it. A container created with
/// `-t` runs on a new pseudo-terminal: attached, it gets this terminal's
/// size (and its changes), and with `-i` this terminal is in raw mode
/// until the container ends, so keys (Ctrl-C too) go to the container.
fn monitor(engine: &Engine, id: &str, attached: bool, interactive: bool) -> anyhow::Result<i32> {
    let mut terminal_out = Terminal;
    let attach = Attach {
        stdin: interactive,
        // Detached or not on a terminal: the engine's 24x80.
        window: if attached { own_window_size() } else { None },
        output: if attached {
            Some(&mut terminal_out)
        } else {
            None
        },
    };
    let mut wiring = Wiring::default();
    let result = engine.run_container(id, attach, &mut |running| {
        wiring.connect(running, attached, interactive)
    });
    wiring.disconnect();
    Ok(result?)
}

/// This process wired to a started container (or exec'd process): the
/// terminating signals it gets passed on; attached to a terminal, its
/// size followed and, with `interactive`, the terminal in raw mode; its
/// stdin copied in when asked for.
#[derive(Default)]
struct Wiring {
    handles: Vec<signal_hook::iterator::Handle>,
    raw: Option<terminal::RawMode>,
}

impl Wiring {
    fn connect(
        &mut self,
        running: kiln_engine::Running,
        attached: bool,
        interactive: bool,
    ) -> Result<(), EngineError> {
        self.handles
            .push(forward_signals(running.pid).map_err(wiring_error)?);
        if let (Some(tty), true) = (running.tty, attached) {
            self.handles
                .push(follow_window_size(tty).map_err(wiring_error)?);
            if interactive {
                self.raw = terminal::RawMode::enable(std::io::stdin().as_fd())?;
            }
        }
        if let Some(mut input) = running.stdin {
            // Ends at our end of file (closing the container's stdin) or
            // when the container is gone (EPIPE/EIO); otherwise it dies
            // with us.
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut std::io::stdin().lock(), &mut input);
            });
        }
        Ok(())
    }

    /// The handlers closed and the terminal's mode restored, before any
    /// message is printed.
    fn disconnect(self) {
        for handle in self.handles {
            handle.close();
        }
        drop(self.raw);
    }
}

#[derive(Args)]
pub struct ExecArgs {
    /// Run it in the background (the exec's output is discarded)
    #[arg(short, long)]
    detach: bool,
    /// Keep standard input open: the process reads this process's stdin
    #[arg(short, long)]
    interactive: bool,
    /// Allocate a pseudo-terminal (stdout and stderr merge)
    #[arg(short, long)]
    tty: bool,
    /// Set an environment variable (NAME alone takes it from here)
    #[arg(short, long = "env", value_name = "NAME[=VALUE]")]
    env: Vec<String>,
    /// Read environment variables from a file (NAME=VALUE lines)
    #[arg(long = "env-file", value_name = "FILE")]
    env_file: Vec<PathBuf>,
    /// Working directory inside the container (it must exist)
    #[arg(short, long)]
    workdir: Option<String>,
    /// User (name or uid, optionally :group), resolved in the container's files
    #[arg(short, long)]
    user: Option<String>,
    /// Every capability and no seccomp filter for this process
    #[arg(long)]
    privileged: bool,
    /// The container (name or id), then the command and its arguments
    #[arg(
        value_name = "CONTAINER COMMAND [ARG...]",
        required = true,
        num_args = 2..,
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    container_and_command: Vec<String>,
}

/// `kiln exec`: a command in a running container, as `docker exec`: its
/// exit code is kiln's; one that cannot be started (not found, not
/// executable, no such working directory) exits 126, docker's code for a
/// failed exec whatever the reason. With `-d` it runs under
/// a `kiln exec` of its own, in the background.
pub fn exec(root: Option<&Path>, args: ExecArgs) -> anyhow::Result<ExitCode> {
    if args.detach && args.interactive {
        bail!("-i cannot be combined with -d: nothing would feed a detached exec's stdin");
    }
    if args.interactive && args.tty && !terminal::is_terminal(std::io::stdin().as_fd()) {
        bail!("the input device is not a TTY: -it needs a terminal on stdin (use -i alone to pipe input)");
    }
    let engine = Engine::new(open_store(root)?);
    let (container, command) = args
        .container_and_command
        .split_first()
        .context("exec needs a container and a command")?;
    let record = engine.find_container(container)?;
    if !record.is_running() {
        bail!("container {} is not running", record.name);
    }
    let request = ExecRequest {
        command: command.to_vec(),
        env: environment(&args.env_file, &args.env)?,
        workdir: args.workdir.clone(),
        user: args.user.clone(),
        tty: args.tty,
        privileged: args.privileged,
    };
    if args.detach {
        spawn_detached_exec(engine.store(), &record.id, &args)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut terminal_out = Terminal;
    let attach = Attach {
        stdin: args.interactive,
        window: own_window_size(),
        output: Some(&mut terminal_out),
    };
    let mut wiring = Wiring::default();
    let result = engine.exec_in_container(&record, &request, attach, &mut |running| {
        wiring.connect(running, true, args.interactive)
    });
    wiring.disconnect();
    let code = match result {
        Ok(code) => code.clamp(0, 255) as u8,
        Err(EngineError::Runtime(
            error @ (kiln_runtime::RuntimeError::Exec { .. }
            | kiln_runtime::RuntimeError::Setup { .. }),
        )) => {
            report!("error: {error}");
            126
        }
        Err(error) => return Err(error.into()),
    };
    Ok(ExitCode::from(code))
}

/// `exec -d`: the same exec, attached to nothing, run by a `kiln exec` in
/// its own session that outlives this one (as `run -d`'s monitor).
fn spawn_detached_exec(store: &Store, id: &str, args: &ExecArgs) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().context("finding the kiln binary")?;
    let mut command = std::process::Command::new(exe);
    command.arg("--root").arg(store.root()).arg("exec");
    for item in &args.env {
        // (A bare NAME is resolved here, where the caller's value is.)
        match item.contains('=') {
            true => command.arg("-e").arg(item),
            false => match std::env::var_os(item) {
                Some(value) => {
                    let mut pair = std::ffi::OsString::from(format!("{item}="));
                    pair.push(value);
                    command.arg("-e").arg(pair)
                }
                None => command.arg("-e").arg(item),
            },
        };
    }
    for file in &args.env_file {
        command.arg("--env-file").arg(file);
    }
    if let Some(workdir) = &args.workdir {
        command.arg("--workdir").arg(workdir);
    }
    if let Some(user) = &args.user {
        command.arg("--user").arg(user);
    }
    if args.tty {
        command.arg("--tty");
    }
    if args.privileged {
        command.arg("--privileged");
    }
    command
        .arg(id)
        .args(&args.container_and_command[1..])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .context("starting the detached exec")?;
    Ok(())
}

fn wiring_error(error: anyhow::Error) -> EngineError {
    EngineError::Request(format!("{error:#}"))
}

/// A container's output on this process's stdout and stderr.
struct Terminal;

impl OutputSink for Terminal {
    fn stdout(&mut self, data: &[u8]) {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(data).and_then(|()| out.flush());
    }

    fn stderr(&mut self, data: &[u8]) {
        let _ = std::io::stderr().lock().write_all(data);
    }
}

/// This process's terminal size: stdout's, else stdin's.
fn own_window_size() -> Option<WindowSize> {
    terminal::window_size(std::io::stdout().as_fd())
        .or_else(|| terminal::window_size(std::io::stdin().as_fd()))
}

/// Copies this terminal's size to the container's on every SIGWINCH.
fn follow_window_size(tty: TtyHandle) -> anyhow::Result<signal_hook::iterator::Handle> {
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGWINCH])
        .context("installing the SIGWINCH handler")?;
    let handle = signals.handle();
    std::thread::spawn(move || {
        for _ in signals.forever() {
            if let Some(size) = own_window_size() {
                let _ = tty.resize(size);
            }
        }
    });
    Ok(handle)
}

/// Sends SIGINT/SIGTERM/SIGHUP/SIGQUIT this process receives on to the
/// container's pid 1: the command (which gets only those it has a handler
/// for, as under Docker), or with `--init` the init, which passes them on.
fn forward_signals(init: i32) -> anyhow::Result<signal_hook::iterator::Handle> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP, SIGQUIT])
        .context("installing signal handlers")?;
    let handle = signals.handle();
    std::thread::spawn(move || {
        for signal in signals.forever() {
            if let Ok(signal) = nix::sys::signal::Signal::try_from(signal) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(init), signal);
            }
        }
    });
    Ok(handle)
}

#[derive(Args)]
pub struct PsArgs {
    /// Show stopped containers too
    #[arg(short, long)]
    all: bool,
    /// Only the ids
    #[arg(short, long)]
    quiet: bool,
    /// Show whole ids and commands
    #[arg(long)]
    no_trunc: bool,
    /// Print with a Go template ({{.ID}}, {{.Image}}, {{.Command}}, {{.CreatedAt}}, {{.RunningFor}}, {{.Status}}, {{.State}}, {{.Names}}, {{json .}}); `table ...` adds a header
    #[arg(long)]
    format: Option<String>,
    /// Only those that match (id, name, status, label, exited, ancestor,
    /// volume); a status filter shows stopped ones too
    #[arg(short, long = "filter", value_name = "KEY=VALUE")]
    filter: Vec<String>,
}

/// The column titles of `kiln ps` (and its `--format table`).
fn ps_column(field: &str) -> Option<&'static str> {
    Some(match field {
        "ID" => "CONTAINER ID",
        "RunningFor" => "CREATED",
        "CreatedAt" => "CREATED AT",
        _ => return None,
    })
}

/// `kiln ps`: running containers (with `-a`, all), docker's columns.
pub fn ps(root: Option<&Path>, args: PsArgs) -> anyhow::Result<()> {
    let store = open_store(root)?;
    let template = match (&args.format, args.quiet) {
        (_, true) => "{{.ID}}".to_owned(),
        (Some(format), false) => format.clone(),
        (None, false) => {
            "table {{.ID}}\\t{{.Image}}\\t{{.Command}}\\t{{.RunningFor}}\\t{{.Status}}\\t{{.Names}}"
                .to_owned()
        }
    };
    let template = crate::template::Template::parse(&template).map_err(anyhow::Error::msg)?;
    let filters = args
        .filter
        .iter()
        .map(|text| {
            let (key, value) = text
                .split_once('=')
                .with_context(|| format!("--filter {text:?}: expected KEY=VALUE"))?;
            Ok(kiln_engine::ContainerFilter::parse(key, value)?)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let rows: Vec<serde_json::Value> = Engine::new(store)
        .list_containers(args.all, &filters)
        .iter()
        .map(|record| ps_row(record, args.no_trunc))
        .collect();
    print(&template.render_all(&rows, &ps_column))
}

/// One container as `{{json .}}` shows it (docker's field names).
fn ps_row(record: &ContainerRecord, no_trunc: bool) -> serde_json::Value {
    let now = std::time::SystemTime::now();
    let at = |seconds: u64| std::time::UNIX_EPOCH + Duration::from_secs(seconds);
    let ago = |seconds: u64| {
        kiln_engine::human_duration(now.duration_since(at(seconds)).unwrap_or_default())
    };
    let mut command = format!("\"{}\"", record.config.args.join(" "));
    if !no_trunc && command.chars().count() > 20 {
        command = command.chars().take(19).collect::<String>() + "…\"";
    }
    let (state, status) = kiln_engine::container_status(record);
    let id = if no_trunc {
        &record.id[..]
    } else {
        &record.id[..12]
    };
    serde_json::json!({
        "ID": id,
        "Image": record.config.image,
        "Command": command,
        "CreatedAt": humantime::format_rfc3339_seconds(at(record.created)).to_string(),
        "RunningFor": format!("{} ago", ago(record.created)),
        "State": state,
        "Status": status,
        "Names": record.name,
    })
}

#[derive(Args)]
pub struct NamesArgs {
    /// Containers (names or ids)
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(Args)]
pub struct StartArgs {
    /// Stay attached and print its output
    #[arg(short, long)]
    attach: bool,
    /// The container (name or id)
    container: String,
}

/// `kiln start`: runs a stopped container again, on its own rw layer.
pub fn start(root: Option<&Path>, args: StartArgs) -> anyhow::Result<ExitCode> {
    let engine = Engine::new(open_store(root)?);
    let record = engine.find_container(&args.container)?;
    if record.is_running() {
        bail!("container {} is already running", record.name);
    }
    if args.attach {
        let code = monitor(&engine, &record.id, true, false)?;
        return Ok(ExitCode::from(code.clamp(0, 255) as u8));
    }
    spawn_monitor(engine.store(), &record.id, false)?;
    wait_until_started(&engine.containers(), &record)?;
    print(&format!("{}\n", record.name))?;
    Ok(ExitCode::SUCCESS)
}

/// Waits until the monitor has started `before` (its record changes to
/// running, or straight to a new exit), as `docker run -d` and `docker
/// start` return only once the container is up.
fn wait_until_started(all: &Containers, before: &ContainerRecord) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let Some(now) = all.load(&before.id) else {
            // Gone already: it ran with --rm and finished.
            return Ok(());
        };
        let started = matches!(now.state, State::Running { .. }) || now.state != before.state;
        if started {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("container {} did not start within 10 s", before.name);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[derive(Args)]
pub struct StopArgs {
    /// Seconds to wait after SIGTERM before SIGKILL (default: the
    /// container's --stop-timeout, else 10)
    #[arg(short, long)]
    time: Option<u64>,
    #[command(flatten)]
    names: NamesArgs,
}

/// `kiln stop`: SIGTERM, then SIGKILL after the timeout. A pid 1 command
/// without a SIGTERM handler ignores the first, so it ends with SIGKILL
/// (137), as with Docker.
pub fn stop(root: Option<&Path>, args: StopArgs) -> anyhow::Result<()> {
    let engine = Engine::new(open_store(root)?);
    let mut out = String::new();
    for name in &args.names.containers {
        let record = engine.find_container(name)?;
        engine.stop_container(&record, record.stop_grace(args.time))?;
        out.push_str(&format!("{name}\n"));
    }
    print(&out)
}

#[derive(Args)]
pub struct RmArgs {
    /// Stop running containers first (SIGKILL)
    #[arg(short, long)]
    force: bool,
    /// Remove their anonymous volumes too (named ones stay)
    #[arg(short, long)]
    volumes: bool,
    #[command(flatten)]
    names: NamesArgs,
}

/// `kiln rm`: removes containers and their rw layers.
pub fn rm(root: Option<&Path>, args: RmArgs) -> anyhow::Result<()> {
    let engine = Engine::new(open_store(root)?);
    let mut out = String::new();
    for name in &args.names.containers {
        let record = engine.find_container(name)?;
        engine.remove_container(&record, args.force)?;
        if args.volumes {
            engine.remove_anonymous_volumes(&record)?;
        }
        out.push_str(&format!("{name}\n"));
    }
    print(&out)
}

#[derive(Args)]
pub struct LogsArgs {
    /// Keep printing what it prints until it stops
    #[arg(short, long)]
    follow: bool,
    /// Only the last N lines ("all": everything)
    #[arg(short = 'n', long, default_value = "all", value_name = "N")]
    tail: String,
    /// Begin each line with the time it was written (RFC 3339, ns)
    #[arg(short, long)]
    timestamps: bool,
    /// Only what was written since then (an RFC 3339 date, seconds since
    /// the epoch, or a duration ago such as 10m)
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Only what was written until then (as --since)
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
    /// The container (name or id)
    container: String,
}

/// `kiln logs`: what the container printed, stdout and stderr together;
/// `--tail N` the last lines only, `-f` then what it prints until it
/// stops, `-t` each line with its time.
pub fn logs(root: Option<&Path>, args: LogsArgs) -> anyhow::Result<()> {
    let tail = match args.tail.as_str() {
        "all" => None,
        n => Some(
            n.parse::<usize>()
                .with_context(|| format!("--tail {n:?}: expected a number of lines or all"))?,
        ),
    };
    let now = std::time::SystemTime::now();
    let time = |flag: &str, text: &Option<String>| {
        text.as_deref()
            .map(|t| kiln_engine::parse_time(t, now).with_context(|| flag.to_owned()))
            .transpose()
    };
    let options = kiln_engine::LogOptions {
        tail,
        follow: args.follow,
        since: time("--since", &args.since)?,
        until: time("--until", &args.until)?,
    };
    let engine = Engine::new(open_store(root)?);
    let record = engine.find_container(&args.container)?;
    let mut out = std::io::stdout().lock();
    engine.read_log(&record, &options, &mut |line| {
        if args.timestamps {
            let time = line.written.unwrap_or(std::time::UNIX_EPOCH);
            write!(out, "{} ", humantime::format_rfc3339_nanos(time))?;
        }
        out.write_all(line.bytes)?;
        // Following, each line as it comes.
        if args.follow {
            out.flush()?;
        }
        Ok(())
    })?;
    match out.flush() {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

#[derive(Args)]
pub struct KillArgs {
    /// The signal to send (KILL, SIGTERM, 9...)
    #[arg(short, long, default_value = "KILL")]
    signal: String,
    #[command(flatten)]
    names: NamesArgs,
}

#[derive(Args)]
pub struct ExportArgs {
    /// Write to this file instead of standard output
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// The container (name or id)
    container: String,
}

/// `kiln export`: a container's files as one tar (its changes over its
/// image's, without its volumes), as `docker export`.
pub fn export(root: Option<&Path>, args: ExportArgs) -> anyhow::Result<()> {
    let engine = Engine::new(open_store(root)?);
    let record = engine.find_container(&args.container)?;
    let Some(path) = &args.output else {
        let stdout = std::io::stdout();
        if std::io::IsTerminal::is_terminal(&stdout) {
            bail!("refusing to write an archive to a terminal: use -o FILE or redirect standard output");
        }
        let mut out = std::io::BufWriter::new(stdout.lock());
        engine.export_container(&record, &mut out)?;
        return out.flush().context("writing standard output");
    };
    let mut output = kiln_engine::OutputFile::create(path)?;
    let mut out = std::io::BufWriter::new(output.file());
    engine.export_container(&record, &mut out)?;
    out.flush()
        .with_context(|| format!("writing {}", path.display()))?;
    drop(out);
    Ok(output.commit()?)
}

/// `kiln top`: the running container's processes, in `ps -ef`'s columns
/// as docker's daemon lists them.
pub fn top(root: Option<&Path>, args: ContainerArg) -> anyhow::Result<()> {
    let engine = Engine::new(open_store(root)?);
    let record = engine.find_container(&args.container)?;
    let mut rows = vec!["UID\tPID\tPPID\tCMD".to_owned()];
    for process in engine.container_processes(&record)? {
        rows.push(format!(
            "{}\t{}\t{}\t{}",
            process.uid, process.pid, process.ppid, process.command
        ));
    }
    print(&crate::template::align_columns(&rows))
}

/// `kiln diff`: what the container changed over its image, a line per
/// path: `A` added, `C` changed, `D` deleted (docker's letters).
pub fn diff(root: Option<&Path>, args: ContainerArg) -> anyhow::Result<()> {
    let engine = Engine::new(open_store(root)?);
    let record = engine.find_container(&args.container)?;
    let mut out = String::new();
    for (path, kind) in engine.container_changes(&record)? {
        out.push_str(&format!("{} {path}\n", kind.code().1));
    }
    print(&out)
}

#[derive(Args)]
pub struct ContainerArg {
    /// The container (name or id)
    container: String,
}

#[derive(Args)]
pub struct UpdateArgs {
    /// New memory limit (64m, 1g)
    #[arg(short, long, value_name = "SIZE", value_parser = kiln_graph::values::parse_memory_size)]
    memory: Option<u64>,
    /// New CPU limit, in CPUs
    #[arg(long, value_name = "N")]
    cpus: Option<f64>,
    /// New most tasks at once
    #[arg(long = "pids-limit", value_name = "N")]
    pids_limit: Option<u64>,
    /// New restart policy: no, always, unless-stopped, on-failure[:N]
    #[arg(long, value_name = "POLICY")]
    restart: Option<String>,
    /// The containers (names or ids)
    #[arg(required = true)]
    containers: Vec<String>,
}

/// `kiln update`: new limits (a running container's at once) and
/// restart policy; prints the names as docker does.
pub fn update(root: Option<&Path>, args: UpdateArgs) -> anyhow::Result<()> {
    let update = kiln_engine::ContainerUpdate {
        resources: kiln_runtime::Resources {
            memory_bytes: args.memory,
            cpus: args.cpus,
            pids_limit: args.pids_limit,
        },
        restart: args
            .restart
            .as_deref()
            .map(kiln_runtime::containers::RestartPolicy::parse)
            .transpose()
            .context("--restart")?,
    };
    if update.resources == kiln_runtime::Resources::default() && update.restart.is_none() {
        bail!("kiln update needs a new limit or restart policy (--memory, --cpus, --pids-limit, --restart)");
    }
    let engine = Engine::new(open_store(root)?);
    let mut out = String::new();
    for name in &args.containers {
        let record = engine.find_container(name)?;
        engine.update_container(&record, &update)?;
        out.push_str(&format!("{name}\n"));
    }
    print(&out)
}

#[derive(Args)]
pub struct StatsArgs {
    /// One reading, then exit
    #[arg(long)]
    no_stream: bool,
    /// Whole container ids
    #[arg(long)]
    no_trunc: bool,
    /// The containers (names or ids; default: every running one)
    containers: Vec<String>,
}

/// `kiln stats`: docker's table of what running containers use, a
/// reading a second (CPU % over that second); `--no-stream` one.
pub fn stats(root: Option<&Path>, args: StatsArgs) -> anyhow::Result<()> {
    let engine = Engine::new(open_store(root)?);
    let records = if args.containers.is_empty() {
        engine.list_containers(false, &[])
    } else {
        args.containers
            .iter()
            .map(|name| engine.find_container(name))
            .collect::<Result<Vec<_>, _>>()?
    };
    let sample = |records: &[ContainerRecord]| {
        records
            .iter()
            .map(|r| engine.container_stats(r).ok())
            .collect::<Vec<_>>()
    };
    let mut previous = sample(&records);
    let on_terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let now = sample(&records);
        let mut table = vec![
            "CONTAINER ID\tNAME\tCPU %\tMEM USAGE / LIMIT\tMEM %\tNET I/O\tBLOCK I/O\tPIDS"
                .to_owned(),
        ];
        for ((record, sample), before) in records.iter().zip(&now).zip(&previous) {
            let id = if args.no_trunc {
                &record.id[..]
            } else {
                &record.id[..12]
            };
            let row = match sample {
                Some(s) => {
                    let used = s.memory_used();
                    let limit = s.cgroup.memory_limit.max(1);
                    let (rx, tx) = s.network_io();
                    let (read, written) = s.block_io();
                    format!(
                        "{id}\t{}\t{:.2}%\t{} / {}\t{:.2}%\t{} / {}\t{} / {}\t{}",
                        record.name,
                        s.cpu_percent(before.as_ref()),
                        kiln_engine::human_binary_size(used),
                        kiln_engine::human_binary_size(limit),
                        used as f64 / limit as f64 * 100.0,
                        kiln_engine::human_size(rx),
                        kiln_engine::human_size(tx),
                        kiln_engine::human_size(read),
                        kiln_engine::human_size(written),
                        s.cgroup.pids,
                    )
                }
                // Not running (now): docker's dashes.
                None => format!("{id}\t{}\t--\t-- / --\t--\t--\t--\t--", record.name),
            };
            table.push(row);
        }
        let table = crate::template::align_columns(&table);
        if on_terminal && !args.no_stream {
            // Redrawn in place, as docker stats does.
            print(&format!("\x1b[2J\x1b[H{table}"))?;
        } else {
            print(&table)?;
        }
        if args.no_stream {
            return Ok(());
        }
        previous = now;
    }
}

#[derive(Args)]
pub struct RenameArgs {
    /// The container (name or id)
    container: String,
    /// Its new name
    name: String,
}

/// `kiln rename`: a container's new name, running or not.
pub fn rename(root: Option<&Path>, args: RenameArgs) -> anyhow::Result<()> {
    let engine = Engine::new(open_store(root)?);
    let record = engine.find_container(&args.container)?;
    engine.rename_container(&record, &args.name)?;
    Ok(())
}

/// `kiln pause` (`frozen`) and `kiln unpause`: each container's
/// processes frozen or thawed; prints the names as docker does.
pub fn pause(root: Option<&Path>, args: NamesArgs, frozen: bool) -> anyhow::Result<()> {
    let engine = Engine::new(open_store(root)?);
    let mut out = String::new();
    for name in &args.containers {
        let record = engine.find_container(name)?;
        if frozen {
            engine.pause_container(&record)?;
        } else {
            engine.unpause_container(&record)?;
        }
        out.push_str(&format!("{name}\n"));
    }
    print(&out)
}

/// `kiln kill`: a signal to each running container's pid 1.
pub fn kill(root: Option<&Path>, args: KillArgs) -> anyhow::Result<()> {
    let signal = kiln_engine::parse_signal(&args.signal).context("--signal")?;
    let engine = Engine::new(open_store(root)?);
    let mut out = String::new();
    for name in &args.names.containers {
        let record = engine.find_container(name)?;
        engine.kill_container(&record, signal)?;
        out.push_str(&format!("{name}\n"));
    }
    print(&out)
}

/// `kiln wait`: blocks until each container stops; prints its exit code.
pub fn wait(root: Option<&Path>, args: NamesArgs) -> anyhow::Result<()> {
    let engine = Engine::new(open_store(root)?);
    for name in &args.containers {
        let record = engine.find_container(name)?;
        let code = engine.wait_container(&record)?;
        print(&format!("{code}\n"))?;
    }
    Ok(())
}

/// `kiln restart`: stops each container (if it runs), then starts it in
/// the background again, on its own rw layer.
pub fn restart(root: Option<&Path>, args: StopArgs) -> anyhow::Result<()> {
    let engine = Engine::new(open_store(root)?);
    let mut out = String::new();
    for name in &args.names.containers {
        let record = engine.find_container(name)?;
        engine.stop_container(&record, record.stop_grace(args.time))?;
        let stopped = engine.find_container(name)?;
        spawn_monitor(engine.store(), &stopped.id, false)?;
        wait_until_started(&engine.containers(), &stopped)?;
        out.push_str(&format!("{name}\n"));
    }
    print(&out)
}

#[derive(Args)]
pub struct CommitArgs {
    /// The container (name or id)
    container: String,
    /// Name the new image
    name: Option<String>,
}

/// `kiln commit`: the container's changes as a new layer on its image.
pub fn commit(root: Option<&Path>, args: CommitArgs) -> anyhow::Result<()> {
    let engine = Engine::new(open_store(root)?);
    let record = engine.find_container(&args.container)?;
    let created = super::images::creation_time()?;
    let image = engine.commit_container(&record, args.name.as_deref(), &created)?;
    print(&format!("{}\n", image.manifest.digest()))
}

#[derive(Args)]
pub struct ContainerPruneArgs {
    /// Do not ask for confirmation
    #[arg(short, long)]
    pub force: bool,
}

/// `kiln container prune`: removes every container that is not running.
pub fn prune(root: Option<&Path>, args: ContainerPruneArgs) -> anyhow::Result<()> {
    if !args.force && !crate::output::confirm("This will remove all stopped containers.")? {
        return Ok(());
    }
    let engine = Engine::new(open_store(root)?);
    print(&prune_stopped(&engine)?)
}

/// Removes the stopped containers; what to print about it.
pub fn prune_stopped(engine: &Engine) -> anyhow::Result<String> {
    let mut out = String::from("Deleted Containers:\n");
    for (record, _) in engine.prune_containers()? {
        out.push_str(&format!("{}\n", record.id));
    }
    Ok(out)
}

#[derive(Args)]
pub struct CpArgs {
    /// Keep owners (uid:gid) as they are; otherwise what is copied belongs
    /// to root in the container, or to you on the host
    #[arg(short, long)]
    archive: bool,
    /// Follow SRC if it is a symbolic link (links inside are copied as links)
    #[arg(short = 'L', long)]
    follow_link: bool,
    /// CONTAINER:PATH, a host path, or - (a tar on stdin)
    source: String,
    /// CONTAINER:PATH, a host path, or - (a tar to stdout)
    destination: String,
}

/// One side of a copy.
#[derive(Debug, PartialEq)]
enum CopyEnd<'a> {
    Container {
        name: &'a str,
        path: &'a str,
    },
    Host(&'a str),
    /// `-`: a tar stream on stdin or stdout.
    Stream,
}

impl CopyEnd<'_> {
    /// Docker's rule: `NAME:PATH` is a container's path when NAME holds no
    /// `/` (so `./a:b` and `/a:b` are host paths).
    fn parse(text: &str) -> CopyEnd<'_> {
        if text == "-" {
            return CopyEnd::Stream;
        }
        match text.split_once(':') {
            Some((name, path)) if !name.is_empty() && !name.contains('/') => {
                CopyEnd::Container { name, path }
            }
            _ => CopyEnd::Host(text),
        }
    }
}

/// `kiln cp`: files between a container (running or stopped) and the
/// host, as `docker cp` (kiln-engine's container files: the container's
/// side resolved inside its root, docker's rules for where a copy lands).
pub fn cp(root: Option<&Path>, args: CpArgs) -> anyhow::Result<()> {
    let engine = Engine::new(open_store(root)?);
    let options = kiln_engine::CopyOptions {
        follow_link: args.follow_link,
        keep_owners: args.archive,
    };
    match (
        CopyEnd::parse(&args.source),
        CopyEnd::parse(&args.destination),
    ) {
        (CopyEnd::Container { .. }, CopyEnd::Container { .. }) => {
            bail!("copying between containers is not supported: copy to the host first")
        }
        (CopyEnd::Container { name, path }, CopyEnd::Host(destination)) => {
            let record = engine.find_container(name)?;
            Ok(engine.copy_to_host(&record, path, Path::new(destination), options)?)
        }
        (CopyEnd::Container { name, path }, CopyEnd::Stream) => {
            if terminal::is_terminal(std::io::stdout().as_fd()) {
                bail!("refusing to write a tar to a terminal: redirect it, or give a host path");
            }
            let record = engine.find_container(name)?;
            let mut out = std::io::stdout().lock();
            engine.archive_container_path(&record, path, None, options.follow_link, &mut out)?;
            Ok(out.flush()?)
        }
        (CopyEnd::Host(source), CopyEnd::Container { name, path }) => {
            let record = engine.find_container(name)?;
            Ok(engine.copy_from_host(&record, Path::new(source), path, options)?)
        }
        (CopyEnd::Stream, CopyEnd::Container { name, path }) => {
            let record = engine.find_container(name)?;
            let mut input = std::io::stdin().lock();
            Ok(engine.extract_into_container(&record, path, options.keep_owners, &mut input)?)
        }
        _ => bail!("one of SRC and DEST must be a container's path (CONTAINER:PATH)"),
    }
}
