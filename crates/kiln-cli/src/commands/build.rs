//! `kiln build`: flags into a [`BuildRequest`], the build through
//! [`Engine::build`], its events rendered, the result as an exit code.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Args;
use kiln_engine::{write_file, BuildRequest, Cancel, DockerfileSource, Engine, EngineError};

use super::dockerfile::{print, read_stdin_bounded};
use super::images::{open_store, source_date_epoch};
use super::plan::build_args;
use super::progress::{Progress, ProgressMode};
use crate::output::report;

#[derive(Args)]
pub struct BuildArgs {
    /// Name the image (repeatable)
    #[arg(short = 't', long = "tag", value_name = "NAME")]
    tags: Vec<String>,
    /// The Dockerfile (default: CONTEXT/Dockerfile); `-` reads standard input
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
    /// Set a build argument; `--build-arg NAME` takes NAME's value from the environment
    #[arg(long = "build-arg", value_name = "NAME[=VALUE]")]
    build_args: Vec<String>,
    /// The stage to build (default: the last one)
    #[arg(long)]
    target: Option<String>,
    /// Add a label to the image
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// Write the image id (manifest digest) to this file
    #[arg(long)]
    iidfile: Option<PathBuf>,
    /// Write build results (digests, names) as JSON to this file
    #[arg(long = "metadata-file")]
    metadata_file: Option<PathBuf>,
    /// Also export the image: type=oci|docker|tar|local,dest=PATH (a bare
    /// PATH means type=local)
    #[arg(short = 'o', long = "output", value_name = "SPEC")]
    output: Option<String>,
    /// How to show progress (default: $KILN_PROGRESS, else auto: tty on a terminal, plain otherwise)
    #[arg(long, value_enum)]
    progress: Option<ProgressMode>,
    /// Print nothing but the image id (`--progress quiet`)
    #[arg(short = 'q', long, conflicts_with = "progress")]
    quiet: bool,
    /// How many stages may run at once (default: twice the number of cores)
    #[arg(long, value_name = "N")]
    jobs: Option<usize>,
    /// Most tasks (processes and threads) each RUN step may have at once
    /// (default: 4096; -1: unlimited)
    #[arg(long = "pids-limit", value_name = "N", allow_hyphen_values = true)]
    pids_limit: Option<i64>,
    /// Run every step, even those the cache has
    #[arg(long)]
    no_cache: bool,
    /// Push the image as each of its -t names once built
    #[arg(long)]
    push: bool,
    /// Pull every base image again, even those the store has (a tag that
    /// moved is then a new base, and the steps on it miss the cache)
    #[arg(long)]
    pull: bool,
    /// The platform base images are pulled for (os/arch[/variant]; default the host's)
    #[arg(long, value_name = "PLATFORM")]
    platform: Option<String>,
    /// The network of RUN steps without their own --network
    #[arg(long, value_enum, default_value_t)]
    network: BuildNetwork,
    /// A line in every RUN's /etc/hosts (NAME:ADDRESS)
    #[arg(long = "add-host", value_name = "NAME:ADDRESS")]
    add_host: Vec<String>,
    /// A resource limit for every RUN: NAME=SOFT[:HARD] (-1 unlimited)
    #[arg(long, value_name = "NAME=SOFT[:HARD]")]
    ulimit: Vec<String>,
    /// The size of /dev/shm for every RUN (a number and a unit b, k, m or
    /// g; default 64m)
    #[arg(long, value_name = "SIZE", value_parser = kiln_graph::values::parse_memory_size)]
    shm_size: Option<u64>,
    /// A named context the Dockerfile uses as a stage or image (FROM NAME,
    /// COPY --from=NAME): NAME=DIR or NAME=docker-image://REF
    #[arg(long = "build-context", value_name = "NAME=DIR|docker-image://REF")]
    build_context: Vec<String>,
    /// Run BuildKit's Dockerfile checks instead of building (--call check)
    #[arg(long)]
    check: bool,
    /// What to do with the Dockerfile: build it, or check it
    #[arg(long, value_enum, default_value_t)]
    call: BuildCall,
    #[command(flatten)]
    registry: super::registry::RegistryArgs,
    /// Run every step of these stages (comma-separated names)
    #[arg(
        long = "no-cache-filter",
        value_name = "STAGE[,STAGE]",
        value_delimiter = ','
    )]
    no_cache_filter: Vec<String>,
    /// After the build, say for every step that ran why it was not cached
    #[arg(long)]
    explain: bool,
    /// Export the build cache: type=local,dest=DIR[,mode=min|max] or
    /// type=registry,ref=REF[,mode=min|max]
    #[arg(long = "cache-to", value_name = "SPEC")]
    cache_to: Option<String>,
    /// Use a cache exported before: type=local,src=DIR or type=registry,ref=REF (repeatable)
    #[arg(long = "cache-from", value_name = "SPEC")]
    cache_from: Vec<String>,
    /// A secret for RUN --mount=type=secret: id=ID[,src=FILE|,env=VAR]
    #[arg(long = "secret", value_name = "SPEC")]
    secrets: Vec<String>,
    /// An SSH agent for RUN --mount=type=ssh: default (from $SSH_AUTH_SOCK) or ID=SOCKET
    #[arg(long = "ssh", value_name = "ID[=SOCKET]")]
    ssh: Vec<String>,
    /// Allow an entitlement: security.insecure (RUN --security=insecure)
    #[arg(long = "allow", value_name = "ENTITLEMENT")]
    allow: Vec<String>,
    /// The build context directory
    context: PathBuf,
}

/// `kiln build --call`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BuildCall {
    #[default]
    Build,
    Check,
}

/// `kiln build --check`: each finding with its rule, line and page, then
/// the count; exit 1 when there is any, as `docker build --check`.
fn check(engine: &Engine, request: &kiln_engine::BuildRequest) -> anyhow::Result<ExitCode> {
    let (file, found) = engine.check(request)?;
    let mut out = String::new();
    for warning in &found {
        out.push_str(&format!(
            "{file}:{}: warning: {}: {} ({})\n",
            warning.line,
            warning.rule,
            warning.message,
            warning.url()
        ));
    }
    out.push_str(&match found.len() {
        0 => "Check complete, no warnings found.\n".to_owned(),
        1 => "Check complete, 1 warning has been found!\n".to_owned(),
        n => format!("Check complete, {n} warnings have been found!\n"),
    });
    crate::output::write_stderr(&out);
    Ok(if found.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `kiln build --network`: the network of RUN steps that do not choose.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default)]
pub enum BuildNetwork {
    /// The host's network (kiln's default for RUN)
    #[default]
    Default,
    /// Only a loopback interface
    None,
    /// The host's network
    Host,
}

impl From<BuildNetwork> for kiln_graph::Network {
    fn from(network: BuildNetwork) -> kiln_graph::Network {
        match network {
            BuildNetwork::Default => kiln_graph::Network::Default,
            BuildNetwork::None => kiln_graph::Network::None,
            BuildNetwork::Host => kiln_graph::Network::Host,
        }
    }
}

pub fn run(root: Option<&Path>, args: BuildArgs) -> anyhow::Result<ExitCode> {
    let request = request(&args)?;
    // No store lock is held: what this build writes or uses (bases, cache
    // hits) is leased by this process, so GC keeps it until it is tagged,
    // and other builds, readers and GC go on meanwhile.
    // Pulls with the request's registry options: one reading of the
    // flags and daemon.json.
    let images = kiln_engine::PullingImages {
        platform: super::registry::platform(args.platform.as_deref())?,
    };
    let engine = Engine::with_images(open_store(root)?, Box::new(images));
    if args.check || args.call == BuildCall::Check {
        return check(&engine, &request);
    }
    let mode = if args.quiet {
        Some(ProgressMode::Quiet)
    } else {
        args.progress
    };
    let progress = Arc::new(Progress::new(ProgressMode::resolve(mode)));
    let cancel = Arc::new(Cancel::default());
    let notices = Arc::clone(&progress);
    let signals = StopOnSignal::install(&cancel, move |text| notices.notice(text))?;
    let result = engine.build(&request, &cancel, &|event| progress.event(&event));
    if args.explain {
        progress.explain();
    }
    let report = match result {
        Ok(report) => report,
        Err(EngineError::Interrupted) => {
            report!("error: interrupted");
            return Ok(ExitCode::from(signals.exit_status()));
        }
        Err(
            error @ (EngineError::Parse { .. }
            | EngineError::Plan { .. }
            | EngineError::Step { .. }),
        ) => {
            report!("error: {error}");
            return Ok(ExitCode::FAILURE);
        }
        Err(error) => return Err(error.into()),
    };
    for (name, pushed) in &report.pushed {
        report!("pushed {name}: {pushed}");
    }
    let digest = report.manifest.to_string();
    if let Some(path) = &args.iidfile {
        write_file(path, digest.as_bytes())?;
    }
    if let Some(path) = &args.metadata_file {
        let metadata = serde_json::json!({
            "containerimage.digest": digest,
            "containerimage.config.digest": report.config.to_string(),
            "image.name": report.tags.join(","),
        });
        write_file(
            path,
            (serde_json::to_string_pretty(&metadata)? + "\n").as_bytes(),
        )?;
    }
    print(&format!("{digest}\n"))?;
    Ok(ExitCode::SUCCESS)
}

/// The flags as a build request.
fn request(args: &BuildArgs) -> anyhow::Result<BuildRequest> {
    for entitlement in &args.allow {
        if entitlement != "security.insecure" {
            bail!("--allow {entitlement:?}: kiln knows security.insecure");
        }
    }
    let mut request = BuildRequest::new(&args.context)
        .dockerfile(dockerfile_source(args.file.as_deref())?)
        .no_cache(args.no_cache)
        .source_date_epoch(source_date_epoch()?);
    request.build_args = build_args(&args.build_args)?;
    request.target = args.target.clone();
    request.network = args.network.into();
    request.pull = args.pull;
    request.extra_hosts = args
        .add_host
        .iter()
        .map(|h| kiln_engine::parse_add_host(h))
        .collect::<Result<_, _>>()?;
    request.ulimits = args.ulimit.clone();
    request.shm_size = args.shm_size;
    for text in &args.build_context {
        let (name, context) = kiln_engine::parse_build_context(text)?;
        request.build_contexts.insert(name, context);
    }
    request.labels = parse_labels(&args.labels)?;
    request.push = args.push;
    request.registry = args.registry.options()?;
    if args.push && args.tags.is_empty() {
        bail!("--push needs a name to push to: give one with -t");
    }
    request.tags = args.tags.clone();
    request.no_cache_filter = args.no_cache_filter.clone();
    request.cache_from = args
        .cache_from
        .iter()
        .map(|spec| spec.parse())
        .collect::<Result<_, _>>()?;
    request.cache_to = args.cache_to.as_deref().map(str::parse).transpose()?;
    request.outputs = args
        .output
        .as_deref()
        .map(str::parse)
        .into_iter()
        .collect::<Result<_, _>>()?;
    request.secrets = read_secrets(&args.secrets)?;
    request.ssh = ssh_agents(&args.ssh)?;
    request.allow_insecure = args.allow.iter().any(|a| a == "security.insecure");
    request.jobs = args.jobs;
    request.run_pids_limit = match args.pids_limit {
        None => Some(kiln_build::DEFAULT_RUN_PIDS_LIMIT),
        Some(n) => pids_limit_flag(n)?,
    };
    Ok(request)
}

/// `-f FILE`, `-f -` (standard input, read now) or the context's own.
fn dockerfile_source(file: Option<&Path>) -> anyhow::Result<DockerfileSource> {
    Ok(match file {
        None => DockerfileSource::Default,
        Some(path) if path == Path::new("-") => DockerfileSource::Bytes {
            display: "-".into(),
            bytes: read_stdin_bounded().context("reading standard input")?,
        },
        Some(path) => DockerfileSource::Path(path.to_owned()),
    })
}

fn parse_labels(raw: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    raw.iter()
        .map(|item| match item.split_once('=') {
            Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
            _ => bail!("--label {item:?}: expected KEY=VALUE"),
        })
        .collect()
}

/// While it lives, SIGINT and SIGTERM cancel the build (running containers
/// are killed, scratch directories removed); a second signal exits at once,
/// which the store survives as it survives SIGKILL. Either way the exit
/// status is the shell's for that signal: 130 for SIGINT, 143 for SIGTERM.
pub(crate) struct StopOnSignal {
    handle: signal_hook::iterator::Handle,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The first signal received (0: none yet).
    received: Arc<std::sync::atomic::AtomicI32>,
}

impl StopOnSignal {
    /// `notice` says that the build is stopping (through the progress
    /// view, which a line written past it would break).
    pub(crate) fn install(
        cancel: &Arc<Cancel>,
        notice: impl Fn(&str) + Send + 'static,
    ) -> anyhow::Result<StopOnSignal> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
            .context("installing signal handlers")?;
        let handle = signals.handle();
        let cancel = Arc::clone(cancel);
        let received = Arc::new(std::sync::atomic::AtomicI32::new(0));
        let first = Arc::clone(&received);
        let thread = std::thread::spawn(move || {
            for signal in signals.forever() {
                if cancel.is_cancelled() {
                    // Exiting now: the live view cannot give the terminal
                    // its echo back on its way out.
                    super::progress::restore_terminal();
                    std::process::exit(128 + signal);
                }
                first.store(signal, std::sync::atomic::Ordering::SeqCst);
                notice("interrupt: stopping the build (again to quit at once)");
                cancel.cancel();
            }
        });
        Ok(StopOnSignal {
            handle,
            thread: Some(thread),
            received,
        })
    }

    /// 128 + the signal that stopped the build (SIGINT's 130 when the build
    /// was cancelled otherwise).
    pub(crate) fn exit_status(&self) -> u8 {
        match self.received.load(std::sync::atomic::Ordering::SeqCst) {
            0 => 130,
            signal => u8::try_from(128 + signal).unwrap_or(130),
        }
    }
}

impl Drop for StopOnSignal {
    fn drop(&mut self) {
        self.handle.close();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `--ssh default` (the agent at `$SSH_AUTH_SOCK`) or `--ssh ID=SOCKET`.
fn ssh_agents(specs: &[String]) -> anyhow::Result<BTreeMap<String, PathBuf>> {
    let mut agents = BTreeMap::new();
    for spec in specs {
        let (id, socket) = match spec.split_once('=') {
            Some((id, socket)) => (id.to_owned(), PathBuf::from(socket)),
            None => {
                let socket = std::env::var_os("SSH_AUTH_SOCK").with_context(|| {
                    format!("--ssh {spec}: SSH_AUTH_SOCK is not set (no agent to forward)")
                })?;
                (spec.clone(), PathBuf::from(socket))
            }
        };
        let socket = std::fs::canonicalize(&socket)
            .with_context(|| format!("--ssh {spec}: {}", socket.display()))?;
        agents.insert(id, socket);
    }
    Ok(agents)
}

/// `--secret id=ID[,src=FILE|,env=VAR]` (also `type=file|env`), read now:
/// without `src` or `env`, the variable named ID, else the file named ID.
fn read_secrets(specs: &[String]) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
    let mut secrets = BTreeMap::new();
    for spec in specs {
        let (mut id, mut src, mut env) = (None, None, None);
        for field in spec.split(',') {
            match field.split_once('=') {
                Some(("id", v)) => id = Some(v.to_owned()),
                Some(("src" | "source", v)) => src = Some(PathBuf::from(v)),
                Some(("env", v)) => env = Some(v.to_owned()),
                Some(("type", "file" | "env")) => {}
                _ => bail!("--secret {spec:?}: expected id=ID[,src=FILE|,env=VAR]"),
            }
        }
        let id = id.with_context(|| format!("--secret {spec:?}: id= is required"))?;
        let value = match (src, env) {
            (Some(path), _) => std::fs::read(&path)
                .with_context(|| format!("--secret {id}: reading {}", path.display()))?,
            (None, Some(var)) => std::env::var(&var)
                .with_context(|| format!("--secret {id}: environment variable {var} is not set"))?
                .into_bytes(),
            (None, None) => match std::env::var(&id) {
                Ok(value) => value.into_bytes(),
                Err(_) => std::fs::read(&id)
                    .with_context(|| format!("--secret {id}: no variable or file named {id}"))?,
            },
        };
        secrets.insert(id, value);
    }
    Ok(secrets)
}

/// `--pids-limit N`: Docker's convention, a positive number, or -1 (or
/// 0) for no limit.
pub(crate) fn pids_limit_flag(n: i64) -> anyhow::Result<Option<u64>> {
    match n {
        -1 | 0 => Ok(None),
        n if n > 0 => Ok(Some(n as u64)),
        n => bail!("--pids-limit {n}: give a positive number, or -1 for no limit"),
    }
}
