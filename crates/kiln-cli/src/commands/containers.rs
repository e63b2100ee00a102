//! `kiln run` and the containers it leaves: `ps`, `start`, `stop`, `rm`,
//! `logs`, `commit`. A container runs under a monitor: the `kiln run`
//! process itself in the foreground, or a detached `kiln` (`-d`, `start`)
//! that streams its output to the log and records how it ended.

use std::io::Write;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use kiln_runtime::containers::{now, ContainerConfig, ContainerRecord, Containers, State};
use kiln_runtime::{terminal, Container, OutputSink, Stdin, Stdio, TtyHandle, WindowSize};
use kiln_store::Store;

use super::build::pids_limit_flag;
use super::dockerfile::print;
use super::images::open_store;
use crate::output::report;

fn containers(store: &Store) -> Containers {
    Containers::open(&store.layout().containers())
}

#[derive(Args)]
pub struct RunArgs {
    /// Remove the container when it exits
    #[arg(long)]
    rm: bool,
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
    #[arg(short, long, value_name = "SIZE", value_parser = kiln_runtime::parse_memory_size)]
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
    if args.interactive && args.detach {
        bail!("-i cannot be combined with -d: kiln has no attach command to feed a detached container's stdin");
    }
    if args.interactive && args.tty && !terminal::is_terminal(std::io::stdin().as_fd()) {
        bail!("the input device is not a TTY: -it needs a terminal on stdin (use -i alone to pipe input)");
    }
    if let Some(name) = &args.name {
        kiln_runtime::containers::valid_name(name)?;
    }
    let store = open_store(root)?;
    let image = kiln_build::load_base(&store, args.image())?;
    let image_config = image.image_config()?;
    let digests: Vec<_> = image.layers.iter().map(|l| l.digest).collect();
    let lower_dirs = store.lower_dirs(&digests)?;
    let argv = kiln_runtime::containers::command_line(
        image_config.entrypoint.as_deref().unwrap_or_default(),
        image_config.cmd.as_deref().unwrap_or_default(),
        args.entrypoint.as_deref(),
        args.command(),
    )?;
    let user_spec = args
        .user
        .clone()
        .or_else(|| Some(image_config.user.clone()).filter(|u| !u.is_empty()));
    let resolved = match &user_spec {
        Some(spec) => kiln_runtime::resolve_user(&lower_dirs, spec)?,
        None => {
            kiln_runtime::resolve_user(&lower_dirs, "root").unwrap_or(kiln_runtime::ResolvedUser {
                user: kiln_runtime::User::default(),
                home: "/root".into(),
            })
        }
    };
    let mut env = image_config.env.clone();
    for file in &args.env_file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("--env-file {}", file.display()))?;
        for line in text.lines().map(str::trim) {
            if !line.is_empty() && !line.starts_with('#') {
                kiln_runtime::containers::set_env(&mut env, line);
            }
        }
    }
    for item in &args.env {
        kiln_runtime::containers::set_env(&mut env, item);
    }
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", resolved.home));
    }
    let network = match args.network.as_str() {
        "host" | "default" => "host",
        "none" => "none",
        other => bail!("--network {other:?}: kiln offers host and none"),
    };
    let binds = args
        .volume
        .iter()
        .map(|v| parse_volume(v))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let cwd = args
        .workdir
        .clone()
        .or_else(|| Some(image_config.working_dir.clone()).filter(|w| !w.is_empty()))
        .unwrap_or_else(|| "/".into());
    let security = security_options(&args.security_opt)?;
    let resources = kiln_runtime::Resources {
        memory_bytes: args.memory,
        cpus: args.cpus,
        pids_limit: args.pids_limit.map(pids_limit_flag).transpose()?.flatten(),
    };
    // Before the container exists: a bad limit leaves nothing behind.
    resources.validate()?;
    let all = containers(&store);
    let mut record = all.create(
        args.name.as_deref(),
        ContainerConfig {
            image: args.image().to_owned(),
            image_id: image.manifest.to_string(),
            args: argv,
            env,
            cwd,
            uid: resolved.user.uid,
            gid: resolved.user.gid,
            additional_gids: resolved.user.additional_gids,
            hostname: String::new(),
            network: network.into(),
            binds,
            lower_dirs,
            tty: args.tty,
            privileged: args.privileged,
            seccomp: security.seccomp,
            no_new_privileges: security.no_new_privileges,
            resources,
            init: args.init,
        },
    )?;
    record.config.hostname = args.hostname.unwrap_or_else(|| record.id[..12].to_owned());
    record
        .config
        .env
        .push(format!("HOSTNAME={}", record.config.hostname));
    all.save(&record)?;
    if args.detach {
        spawn_monitor(&store, &record.id, args.rm)?;
        wait_until_started(&all, &record)?;
        print(&format!("{}\n", record.id))?;
        return Ok(ExitCode::SUCCESS);
    }
    let result = monitor_with(&all, &record.id, true, args.interactive);
    // Whether or not the command could even start.
    if args.rm {
        if let Some(record) = all.load(&record.id) {
            all.remove(&record)?;
        }
    }
    Ok(ExitCode::from(exit_status(result)?))
}

/// The container's exit status, or Docker's for a command that could not
/// be executed (the error printed): 127 not found, 126 not executable.
fn exit_status(result: anyhow::Result<i32>) -> anyhow::Result<u8> {
    match result {
        Ok(code) => Ok(code.clamp(0, 255) as u8),
        Err(error) => match error.downcast_ref::<kiln_runtime::RuntimeError>() {
            Some(kiln_runtime::RuntimeError::Exec { errno, .. }) => {
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

fn parse_volume(spec: &str) -> anyhow::Result<(PathBuf, String, bool)> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (host, target, readonly) = match parts.as_slice() {
        [host, target] => (*host, *target, false),
        [host, target, "ro"] => (*host, *target, true),
        [host, target, "rw"] => (*host, *target, false),
        _ => bail!("-v {spec:?}: expected HOST:CONTAINER[:ro]"),
    };
    if !host.starts_with('/') {
        bail!("-v {spec:?}: the host path must be absolute (named volumes are not supported)");
    }
    let host = std::fs::canonicalize(host).with_context(|| format!("-v {spec}: {host}"))?;
    if !target.starts_with('/') {
        bail!("-v {spec:?}: the container path must be absolute");
    }
    Ok((host, target.to_owned(), readonly))
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
    let store = open_store(root)?;
    let all = containers(&store);
    let result = monitor(&all, &args.id, false);
    if args.rm {
        if let Some(record) = all.load(&args.id) {
            all.remove(&record)?;
        }
    }
    Ok(ExitCode::from(exit_status(result)?))
}

/// Runs the container `id` to its end: records it running, passes SIGINT
/// and SIGTERM on to it, writes its output to the log (and, attached, to
/// this process's stdout/stderr), records the exit code and returns it.
fn monitor(all: &Containers, id: &str, attached: bool) -> anyhow::Result<i32> {
    monitor_with(all, id, attached, false)
}

/// [`monitor`], with `interactive` feeding this process's stdin to the
/// container (`run -i`). A container created with `-t` runs on a new
/// pseudo-terminal: attached, it gets this terminal's size (and its
/// changes), and with `-i` this terminal is in raw mode until the
/// container ends, so keys (Ctrl-C too) go to the container's terminal.
fn monitor_with(
    all: &Containers,
    id: &str,
    attached: bool,
    interactive: bool,
) -> anyhow::Result<i32> {
    let mut record = all.load(id).with_context(|| format!("no container {id}"))?;
    let dir = all.dir(id);
    let spec = record.spec(&dir);
    let stdio = Stdio {
        stdin: if interactive {
            Stdin::Pipe
        } else {
            Stdin::Null
        },
        // Detached or not on a terminal: 24x80 (Docker leaves 0x0, which
        // busybox's stty and some full-screen programs refuse).
        tty: record.config.tty.then(|| {
            (if attached { own_window_size() } else { None })
                .unwrap_or(WindowSize { rows: 24, cols: 80 })
        }),
    };
    let mut container = Container::spawn_with(&spec, stdio)?;
    let init = container.pid();
    record.state = State::Running {
        monitor: std::process::id() as i32,
        init,
        since: now(),
    };
    all.save(&record)?;
    let forwarder = forward_signals(init)?;
    let resizer = match container.tty_handle() {
        Some(tty) if attached => Some(follow_window_size(tty)?),
        _ => None,
    };
    // Restored when this function returns, whichever way.
    let _raw = match record.config.tty && interactive && attached {
        true => terminal::RawMode::enable(std::io::stdin().as_fd())?,
        false => None,
    };
    if let Some(mut input) = container.take_stdin() {
        // Ends at our end of file (closing the container's stdin) or when
        // the container is gone (EPIPE/EIO); otherwise it dies with us.
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut std::io::stdin().lock(), &mut input);
        });
    }
    let mut sink = LogSink {
        log: all.log_writer(id)?,
        attached,
    };
    let waited = container.wait(&mut sink);
    forwarder.close();
    if let Some(resizer) = resizer {
        resizer.close();
    }
    let code = match waited {
        Ok(status) => status.code(),
        Err(kiln_runtime::RuntimeError::Killed) => 137,
        Err(error) => {
            record.state = State::Exited {
                code: 127,
                at: now(),
            };
            all.save(&record)?;
            return Err(error.into());
        }
    };
    record.state = State::Exited { code, at: now() };
    all.save(&record)?;
    Ok(code)
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

struct LogSink {
    log: std::fs::File,
    attached: bool,
}

impl OutputSink for LogSink {
    fn stdout(&mut self, data: &[u8]) {
        let _ = self.log.write_all(data);
        if self.attached {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(data).and_then(|()| out.flush());
        }
    }

    fn stderr(&mut self, data: &[u8]) {
        let _ = self.log.write_all(data);
        if self.attached {
            let _ = std::io::stderr().lock().write_all(data);
        }
    }
}

#[derive(Args)]
pub struct PsArgs {
    /// Show stopped containers too
    #[arg(short, long)]
    all: bool,
    /// Only the ids
    #[arg(short, long)]
    quiet: bool,
}

/// `kiln ps`: running containers (with `-a`, all).
pub fn ps(root: Option<&Path>, args: PsArgs) -> anyhow::Result<()> {
    let store = open_store(root)?;
    let mut out = String::new();
    if !args.quiet {
        out.push_str(&format!(
            "{:<14}{:<24}{:<32}{:<16}{}\n",
            "CONTAINER ID", "IMAGE", "COMMAND", "STATUS", "NAMES"
        ));
    }
    for record in containers(&store).list() {
        if !args.all && !record.is_running() {
            continue;
        }
        if args.quiet {
            out.push_str(&format!("{}\n", &record.id[..12]));
            continue;
        }
        let mut command = format!("\"{}\"", record.config.args.join(" "));
        if command.chars().count() > 30 {
            command = command.chars().take(28).collect::<String>() + "…\"";
        }
        out.push_str(&format!(
            "{:<14}{:<24}{:<32}{:<16}{}\n",
            &record.id[..12],
            record.config.image,
            command,
            record.status(),
            record.name
        ));
    }
    print(&out)
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
    let store = open_store(root)?;
    let all = containers(&store);
    let record = find(&all, &args.container)?;
    if record.is_running() {
        bail!("container {} is already running", record.name);
    }
    if args.attach {
        let code = monitor(&all, &record.id, true)?;
        return Ok(ExitCode::from(code.clamp(0, 255) as u8));
    }
    spawn_monitor(&store, &record.id, false)?;
    wait_until_started(&all, &record)?;
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

fn find(all: &Containers, what: &str) -> anyhow::Result<ContainerRecord> {
    all.find(what)
        .with_context(|| format!("no such container: {what}"))
}

#[derive(Args)]
pub struct StopArgs {
    /// Seconds to wait after SIGTERM before SIGKILL
    #[arg(short, long, default_value_t = 10)]
    time: u64,
    #[command(flatten)]
    names: NamesArgs,
}

/// `kiln stop`: SIGTERM, then SIGKILL after the timeout. A pid 1 command
/// without a SIGTERM handler ignores the first, so it ends with SIGKILL
/// (137), as with Docker.
pub fn stop(root: Option<&Path>, args: StopArgs) -> anyhow::Result<()> {
    let store = open_store(root)?;
    let all = containers(&store);
    let mut out = String::new();
    for name in &args.names.containers {
        let record = find(&all, name)?;
        stop_one(&all, &record, Duration::from_secs(args.time))?;
        out.push_str(&format!("{name}\n"));
    }
    print(&out)
}

fn stop_one(all: &Containers, record: &ContainerRecord, grace: Duration) -> anyhow::Result<()> {
    use nix::sys::signal::{kill, Signal};
    let State::Running { init, .. } = record.state else {
        return Ok(());
    };
    if !record.is_running() {
        return Ok(());
    }
    let init = nix::unistd::Pid::from_raw(init);
    let _ = kill(init, Signal::SIGTERM);
    let stopped = |all: &Containers| all.load(&record.id).is_none_or(|r| !r.is_running());
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && !stopped(all) {
        std::thread::sleep(Duration::from_millis(20));
    }
    if !stopped(all) {
        let _ = kill(init, Signal::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && !stopped(all) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(())
}

#[derive(Args)]
pub struct RmArgs {
    /// Stop running containers first (SIGKILL)
    #[arg(short, long)]
    force: bool,
    #[command(flatten)]
    names: NamesArgs,
}

/// `kiln rm`: removes containers and their rw layers.
pub fn rm(root: Option<&Path>, args: RmArgs) -> anyhow::Result<()> {
    let store = open_store(root)?;
    let all = containers(&store);
    let mut out = String::new();
    for name in &args.names.containers {
        let record = find(&all, name)?;
        if record.is_running() {
            if !args.force {
                bail!("container {name} is running: stop it first or use rm -f");
            }
            stop_one(&all, &record, Duration::ZERO)?;
        }
        all.remove(&record)?;
        out.push_str(&format!("{name}\n"));
    }
    print(&out)
}

#[derive(Args)]
pub struct LogsArgs {
    /// The container (name or id)
    container: String,
}

/// `kiln logs`: what the container printed, stdout and stderr together.
pub fn logs(root: Option<&Path>, args: LogsArgs) -> anyhow::Result<()> {
    let store = open_store(root)?;
    let all = containers(&store);
    let record = find(&all, &args.container)?;
    // Streamed: a container may have printed more than fits in memory.
    let Ok(mut log) = std::fs::File::open(all.log_path(&record.id)) else {
        return Ok(());
    };
    let mut out = std::io::stdout().lock();
    match std::io::copy(&mut log, &mut out) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
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
    let store = open_store(root)?;
    let all = containers(&store);
    let record = find(&all, &args.container)?;
    // As a build: what it writes is leased by this process until tagged.
    let layer =
        kiln_store::layer_from_upper(store.blobs(), &all.dir(&record.id).join("upper"), None)?;
    let created = super::images::creation_time()?;
    let comment = format!("kiln commit {}", record.name);
    let image =
        kiln_build::commit_layer(&store, &record.config.image_id, layer, &created, &comment)?;
    if let Some(name) = &args.name {
        store.tag(name, &image.manifest)?;
    }
    print(&format!("{}\n", image.manifest.digest()))
}
