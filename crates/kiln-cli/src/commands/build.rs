//! `kiln build`: plans the Dockerfile, loads the base images from the
//! store, runs the steps and tags the resulting image.

use crate::output::report;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Args;
use std::sync::Arc;

use kiln_build::{build, load_base, BuildError, BuildOptions, Cancel};
use kiln_graph::{plan, PlanOptions};

use super::dockerfile::{load, print};
use super::images::{creation_time, open_store};
use super::output_file::{write_file, OutputFile};
use super::plan::build_args;
use super::progress::{Progress, ProgressMode};
use kiln_cache::{CacheIndex, ImportedCache};
use kiln_context::{load_dockerignore, StatCache};

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
    /// Export the build cache: type=local,dest=DIR[,mode=min|max]
    #[arg(long = "cache-to", value_name = "SPEC")]
    cache_to: Option<String>,
    /// Use a cache exported before: type=local,src=DIR (repeatable)
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

pub fn run(root: Option<&Path>, args: BuildArgs) -> anyhow::Result<ExitCode> {
    let labels = parse_labels(&args.labels)?;
    let secrets = read_secrets(&args.secrets)?;
    let ssh = ssh_agents(&args.ssh)?;
    for entitlement in &args.allow {
        if entitlement != "security.insecure" {
            bail!("--allow {entitlement:?}: kiln knows security.insecure");
        }
    }
    let cache_to = args.cache_to.as_deref().map(CacheTo::parse).transpose()?;
    let cache_from = args
        .cache_from
        .iter()
        .map(|spec| open_cache_from(spec))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let output = args.output.as_deref().map(Output::parse).transpose()?;
    let mut options = PlanOptions {
        build_args: build_args(&args.build_args)?,
        target: args.target,
        ..PlanOptions::default()
    };
    if !args.context.is_dir() {
        bail!(
            "build context {} is not a directory",
            args.context.display()
        );
    }
    let Some(loaded) = load(args.file, &args.context)? else {
        return Ok(ExitCode::FAILURE);
    };
    // No store lock is held: what this build writes or uses (bases, cache
    // hits) is leased by this process, so GC keeps it until it is tagged,
    // and other builds, readers and GC go on meanwhile.
    let store = open_store(root)?;
    let report_plan_error = |error: kiln_graph::PlanError| {
        report!("error: {}", error.render(&loaded.display, &loaded.source));
        ExitCode::FAILURE
    };
    // Plan once to learn the base images, then again with their configs
    // (their ENV, WORKDIR and ONBUILD triggers matter to the plan).
    let first = match plan(&loaded.dockerfile, &options) {
        Ok(graph) => graph,
        Err(error) => return Ok(report_plan_error(error)),
    };
    for reference in &first.images {
        let base = load_base(&store, reference)?;
        options
            .base_configs
            .insert(reference.clone(), base.image_config()?);
    }
    let graph = match plan(&loaded.dockerfile, &options) {
        Ok(graph) => graph,
        Err(error) => return Ok(report_plan_error(error)),
    };
    for warning in &graph.warnings {
        report!("warning: {}", warning.message);
    }
    let epoch = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(text) if !text.is_empty() => Some(text.parse::<u64>().context("SOURCE_DATE_EPOCH")?),
        _ => None,
    };
    let created = creation_time()?;
    let progress = Progress::new(&graph, ProgressMode::resolve(args.progress));
    let cache = CacheIndex::open(store.root());
    for spec in &args.cache_from {
        if let Some(dir) = spec.split(',').find_map(|f| f.strip_prefix("src=")) {
            kiln_cache::import_cache_mounts(
                Path::new(dir),
                &store.root().join("kiln/cache-mounts"),
            )?;
        }
    }
    // `<Dockerfile>.dockerignore` beside the Dockerfile wins over the
    // context's `.dockerignore`; a Dockerfile from stdin has only the latter.
    let dockerfile_path = match loaded.display.as_str() {
        "-" => args.context.join("Dockerfile"),
        path => PathBuf::from(path),
    };
    let ignore = load_dockerignore(&args.context, &dockerfile_path)?;
    // A step is compared with its own past: same context, same Dockerfile.
    let scope = format!(
        "{}\n{}",
        std::fs::canonicalize(&args.context)
            .unwrap_or_else(|_| args.context.clone())
            .display(),
        loaded.display
    );
    let stat_cache = StatCache::load(&StatCache::file_for(
        &store.root().join("kiln/statcache"),
        &args.context,
    ));
    let cancel = Arc::new(Cancel::default());
    let signals = StopOnSignal::install(&cancel)?;
    let result = build(
        &store,
        &graph,
        &BuildOptions {
            context: &args.context,
            created: &created,
            source_date_epoch: epoch,
            labels: &labels,
            stat_cache: &stat_cache,
            ignore: &ignore,
            cache: &cache,
            cache_from: &cache_from,
            no_cache: args.no_cache,
            no_cache_stages: &args.no_cache_filter,
            scope: &scope,
            secrets: &secrets,
            ssh: &ssh,
            allow_insecure: args.allow.iter().any(|a| a == "security.insecure"),
            cancel: &cancel,
            // Twice the cores: RUN steps often wait (network, disk,
            // sleep), and on `multistage` three stages at once on two
            // cores beat two at a time (docs/benchmarks.md).
            jobs: args
                .jobs
                .unwrap_or_else(|| 2 * std::thread::available_parallelism().map_or(2, |n| n.get())),
            progress: &|event| progress.event(event),
            run_pids_limit: match args.pids_limit {
                None => Some(kiln_build::DEFAULT_RUN_PIDS_LIMIT),
                Some(n) => pids_limit_flag(n)?,
            },
        },
    );
    // What was hashed stays true whether or not the build succeeded.
    if let Err(error) = stat_cache.save() {
        report!("warning: the stat cache was not saved: {error}");
    }
    progress.summary(match &result {
        Ok(_) => "built",
        Err(BuildError::Interrupted) => "interrupted",
        Err(_) => "failed",
    });
    if args.explain {
        progress.explain();
    }
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(BuildError::Interrupted) => {
            report!("error: interrupted");
            return Ok(ExitCode::from(signals.exit_status()));
        }
        Err(BuildError::Step {
            line,
            message,
            hint,
        }) if line > 0 => {
            let position = kiln_dockerfile::Position { line, column: 0 };
            report!(
                "error: {}",
                kiln_dockerfile::render_diagnostic(
                    &loaded.display,
                    &loaded.source,
                    position,
                    &message,
                    hint.as_deref()
                )
            );
            return Ok(ExitCode::FAILURE);
        }
        Err(error) => return Err(error.into()),
    };
    let record = &outcome.image;
    for tag in &args.tags {
        store.tag(tag, &record.manifest)?;
    }
    let digest = record.manifest.digest().to_string();
    if let Some(path) = &args.iidfile {
        write_file(path, digest.as_bytes())?;
    }
    if let Some(cache_to) = &cache_to {
        cache_to.export(&store, &graph, &outcome.steps)?;
    }
    if let Some(output) = &output {
        output.export(&store, &digest, &args.tags)?;
    }
    if let Some(path) = &args.metadata_file {
        let metadata = serde_json::json!({
            "containerimage.digest": digest,
            "containerimage.config.digest": record.config.to_string(),
            "image.name": args.tags.join(","),
        });
        write_file(
            path,
            (serde_json::to_string_pretty(&metadata)? + "\n").as_bytes(),
        )?;
    }
    print(&format!("{digest}\n"))?;
    Ok(ExitCode::SUCCESS)
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
struct StopOnSignal {
    handle: signal_hook::iterator::Handle,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The first signal received (0: none yet).
    received: Arc<std::sync::atomic::AtomicI32>,
}

impl StopOnSignal {
    fn install(cancel: &Arc<Cancel>) -> anyhow::Result<StopOnSignal> {
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
                    std::process::exit(128 + signal);
                }
                first.store(signal, std::sync::atomic::Ordering::SeqCst);
                report!("interrupt: stopping the build (again to quit at once)");
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
    fn exit_status(&self) -> u8 {
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

/// `--cache-from type=local,src=DIR`.
fn open_cache_from(spec: &str) -> anyhow::Result<ImportedCache> {
    let mut kind = None;
    let mut src = None;
    for field in spec.split(',') {
        match field.split_once('=') {
            Some(("type", value)) => kind = Some(value),
            Some(("src", value)) => src = Some(PathBuf::from(value)),
            _ => bail!("--cache-from {spec:?}: expected type=local,src=DIR"),
        }
    }
    match (kind, src) {
        (Some("local"), Some(dir)) => {
            ImportedCache::open(&dir).with_context(|| format!("--cache-from {spec}"))
        }
        (Some("registry"), _) => {
            bail!("--cache-from {spec:?}: registry caches come with kiln's registry client")
        }
        _ => bail!("--cache-from {spec:?}: expected type=local,src=DIR"),
    }
}

/// `--cache-to type=local,dest=DIR[,mode=min|max]`.
struct CacheTo {
    dest: PathBuf,
    /// max: every step built; min: only the target stage's (and the
    /// stages it is built FROM), as BuildKit's modes.
    all_stages: bool,
    /// `cache-mounts=true`: the RUN cache-mount directories go too (an
    /// option BuildKit does not have).
    cache_mounts: bool,
}

impl CacheTo {
    fn parse(spec: &str) -> anyhow::Result<CacheTo> {
        let mut kind = None;
        let mut dest = None;
        let mut all_stages = false;
        let mut cache_mounts = false;
        for field in spec.split(',') {
            match field.split_once('=') {
                Some(("type", value)) => kind = Some(value.to_owned()),
                Some(("dest", value)) => dest = Some(PathBuf::from(value)),
                Some(("mode", "min")) => all_stages = false,
                Some(("mode", "max")) => all_stages = true,
                Some(("cache-mounts", value)) => cache_mounts = value == "true",
                _ => bail!("--cache-to {spec:?}: expected type=local,dest=DIR[,mode=min|max][,cache-mounts=true]"),
            }
        }
        match (kind.as_deref(), dest) {
            (Some("local"), Some(dest)) => Ok(CacheTo {
                dest,
                all_stages,
                cache_mounts,
            }),
            (Some("registry"), _) => {
                bail!("--cache-to {spec:?}: registry caches come with kiln's registry client")
            }
            _ => bail!("--cache-to {spec:?}: expected type=local,dest=DIR[,mode=min|max][,cache-mounts=true]"),
        }
    }

    fn export(
        &self,
        store: &kiln_store::Store,
        graph: &kiln_graph::BuildGraph,
        steps: &[kiln_build::BuiltStep],
    ) -> anyhow::Result<()> {
        // The target and the stages it starts FROM.
        let mut chain = vec![graph.target];
        while let Some(base) = graph.nodes.iter().find_map(|node| match &node.op {
            kiln_graph::Op::From {
                base: kiln_graph::Base::Stage(id),
                ..
            } if Some(&node.stage) == chain.last() => Some(*id),
            _ => None,
        }) {
            chain.push(base);
        }
        let selected: Vec<(kiln_cache::CacheKey, kiln_cache::Entry)> = steps
            .iter()
            .filter(|step| self.all_stages || chain.contains(&step.stage))
            .map(|step| (step.key, step.entry.clone()))
            .collect();
        kiln_cache::export(&self.dest, &selected, |digest| {
            let digest: kiln_store::Digest = digest.parse().ok()?;
            Some(store.blobs().path(&digest))
        })
        .with_context(|| format!("exporting the cache to {}", self.dest.display()))?;
        if self.cache_mounts {
            kiln_cache::export_cache_mounts(&self.dest, &store.root().join("kiln/cache-mounts"))?;
        }
        Ok(())
    }
}

/// `--output`: where the image goes besides the store.
enum Output {
    /// An OCI archive or docker-archive file.
    Archive(
        kiln_store::ArchiveFormat,
        kiln_store::LayerCompression,
        PathBuf,
    ),
    /// The root filesystem as a directory.
    Local(PathBuf),
    /// The root filesystem as a tar file.
    Tar(PathBuf),
}

impl Output {
    fn parse(spec: &str) -> anyhow::Result<Output> {
        if !spec.contains('=') {
            return Ok(Output::Local(PathBuf::from(spec)));
        }
        let mut kind = None;
        let mut dest = None;
        let mut compression = kiln_store::LayerCompression::Gzip;
        for field in spec.split(',') {
            match field.split_once('=') {
                Some(("type", value)) => kind = Some(value.to_owned()),
                Some(("dest", value)) => dest = Some(PathBuf::from(value)),
                Some(("compression", "gzip")) => compression = kiln_store::LayerCompression::Gzip,
                Some(("compression", "zstd")) => compression = kiln_store::LayerCompression::Zstd,
                Some(("compression", other)) => {
                    bail!("--output {spec:?}: unknown compression {other:?} (gzip, zstd)")
                }
                _ => bail!(
                    "--output {spec:?}: expected type=oci|docker|tar|local,dest=PATH[,compression=gzip|zstd]"
                ),
            }
        }
        let dest = dest.with_context(|| format!("--output {spec:?}: dest=PATH is required"))?;
        Ok(match kind.as_deref() {
            Some("oci") => Output::Archive(kiln_store::ArchiveFormat::Oci, compression, dest),
            Some("docker") => Output::Archive(kiln_store::ArchiveFormat::Docker, compression, dest),
            Some("local") => Output::Local(dest),
            Some("tar") => Output::Tar(dest),
            other => bail!("--output {spec:?}: unknown type {other:?} (oci, docker, tar, local)"),
        })
    }

    fn export(
        &self,
        store: &kiln_store::Store,
        digest: &str,
        tags: &[String],
    ) -> anyhow::Result<()> {
        match self {
            Output::Archive(format, compression, dest) => {
                let names = if tags.is_empty() {
                    vec![digest.to_owned()]
                } else {
                    tags.to_vec()
                };
                let mut file = OutputFile::create(dest)?;
                kiln_store::save(
                    store,
                    &names,
                    *format,
                    *compression,
                    kiln_store::NamedWriter::new(dest, std::io::BufWriter::new(file.file())),
                )?;
                file.commit()?;
            }
            Output::Local(dest) => {
                kiln_build::unpack_image(store, &digest.parse()?, dest)?;
            }
            Output::Tar(dest) => {
                let mut file = OutputFile::create(dest)?;
                kiln_build::write_image_tar(
                    store,
                    &digest.parse()?,
                    kiln_store::NamedWriter::new(dest, std::io::BufWriter::new(file.file())),
                )?;
                file.commit()?;
            }
        }
        Ok(())
    }
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
