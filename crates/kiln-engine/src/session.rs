//! A build session: one call from a [`BuildRequest`] to a tagged image and
//! its [`BuildReport`], with progress as [`BuildEvent`]s. This is where a
//! build starts for every front end; the CLI only turns flags into a
//! request and renders events.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Mutex;
use std::time::Instant;

use kiln_build::{BuildOptions, CacheOutcome, Cancel, StepEvent};
use kiln_cache::{CacheIndex, ImportedCache};
use kiln_context::{load_dockerignore, StatCache};
use kiln_graph::{plan, BuildGraph, NodeId, PlanOptions};
use kiln_store::Store;

use crate::error::DockerfileText;
use crate::events::{BuildEvent, EventKind, Hashed, StepFinished, Summary};
use crate::images::{ImageSource, LocalImages};
use crate::outputs::{export_cache, export_output, import_cache, push_image};
use crate::report::{BuildReport, StepReport};
use crate::request::{BuildRequest, DockerfileSource};
use crate::EngineError;

/// What a build reads besides its context, decided before its steps run.
struct Sources<'a> {
    /// Every image reference pinned to a manifest digest.
    images: &'a BTreeMap<String, kiln_store::Digest>,
    /// The `--cache-from` caches that could be read.
    cache_from: &'a [ImportedCache],
}

/// The library face over one store: builds (and, through the store,
/// everything they leave behind).
pub struct Engine {
    store: Store,
    images: Box<dyn ImageSource>,
}

impl Engine {
    /// An engine over `store`, resolving images in the store itself.
    pub fn new(store: Store) -> Engine {
        Engine {
            store,
            images: Box::new(LocalImages),
        }
    }

    /// An engine resolving image references through `images`.
    pub fn with_images(store: Store, images: Box<dyn ImageSource>) -> Engine {
        Engine { store, images }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// `docker build --check`: BuildKit's Dockerfile checks on the
    /// request's Dockerfile, after it is planned with its base images (a
    /// plan error is an error, as in a build); nothing runs. Returns the
    /// findings in line order, and the Dockerfile's display name.
    pub fn check(
        &self,
        request: &BuildRequest,
    ) -> Result<(String, Vec<kiln_dockerfile::LintWarning>), EngineError> {
        context_is_a_directory(request)?;
        let (file, dockerfile) = read_dockerfile(request)?;
        let mut found = kiln_dockerfile::lint(&dockerfile);
        let (graph, _) = self.plan(request, &dockerfile, &file)?;
        for warning in graph.warnings.iter().filter_map(|w| {
            let message = w.message.strip_prefix(INVALID_BASE_IMAGE_PLATFORM)?;
            Some((message.strip_prefix(": ")?, w.line))
        }) {
            found.push(kiln_dockerfile::LintWarning {
                rule: INVALID_BASE_IMAGE_PLATFORM,
                message: warning.0.to_owned(),
                line: warning.1,
            });
        }
        found.sort_by_key(|w| w.line);
        Ok((file.display, found))
    }

    /// Runs `request` to the end: parses and plans the Dockerfile, pins
    /// its image references, runs the steps through the cache, tags the
    /// image and writes its outputs. Every event goes to `events` (from
    /// several threads; the last is the summary, sent whatever the
    /// outcome). `cancel` stops the build from outside (Ctrl-C).
    pub fn build(
        &self,
        request: &BuildRequest,
        cancel: &Cancel,
        events: &(dyn Fn(BuildEvent) + Sync),
    ) -> Result<BuildReport, EngineError> {
        let started = Instant::now();
        let emit = |kind: EventKind| {
            events(BuildEvent {
                time: started.elapsed().as_secs_f64(),
                kind,
            })
        };
        context_is_a_directory(request)?;
        // A name the store would refuse fails the build before any step
        // runs, not after all of them.
        for tag in &request.tags {
            if kiln_store::Reference::parse(tag)?.digest.is_some() {
                // As docker build: the digest is what the build makes.
                return Err(EngineError::Request(format!(
                    "-t {tag}: a name for a build cannot hold a digest (the build makes the digest)"
                )));
            }
        }
        // RUN gets them as text (kiln-graph knows no limits); checked here
        // so none that does not parse reaches a step.
        for ulimit in &request.ulimits {
            kiln_runtime::Ulimit::parse(ulimit).map_err(EngineError::Request)?;
        }
        let (file, dockerfile) = read_dockerfile(request)?;
        for warning in &dockerfile.warnings {
            emit(EventKind::Warning {
                message: warning.message.clone(),
                file: Some(file.display.clone()),
                line: warning.line,
            });
        }
        let (graph, pinned) = self.plan(request, &dockerfile, &file)?;
        for warning in &graph.warnings {
            emit(EventKind::Warning {
                message: warning.message.clone(),
                file: None,
                line: warning.line,
            });
        }
        let recorder = Recorder::new(&graph, &emit);
        emit(EventKind::Plan {
            steps: graph
                .stages
                .iter()
                .filter(|s| s.needed)
                .map(|s| s.nodes.len())
                .sum(),
        });
        // Inside the result: a cache that cannot be imported fails the
        // build after its summary is sent, as any step's failure does.
        let result = self.import_caches(request, &emit).and_then(|cache_from| {
            let sources = Sources {
                images: &pinned,
                cache_from: &cache_from,
            };
            self.run(request, &graph, &sources, &file, cancel, &|event| {
                recorder.step_event(event)
            })
        });
        let outcome = match &result {
            Ok(_) => "built",
            Err(EngineError::Interrupted) => "interrupted",
            Err(_) => "failed",
        };
        let failed_line = match &result {
            Err(EngineError::Step { line, .. }) => Some(*line),
            Err(EngineError::Build(kiln_build::BuildError::Step { line, .. })) => Some(*line),
            _ => None,
        };
        recorder.end_unfinished(failed_line);
        let (steps, totals) = recorder.finish(outcome);
        emit(EventKind::Summary(totals.clone()));
        let (built, stat_cache_error) = result?;
        if let Some(error) = stat_cache_error {
            emit(EventKind::Warning {
                message: format!("the stat cache was not saved: {error}"),
                file: None,
                line: 0,
            });
        }
        let manifest = kiln_store::Digest::of_descriptor(&built.image.manifest)?;
        for tag in &request.tags {
            self.store.tag(tag, &built.image.manifest)?;
        }
        // Without a name the image is kept untagged (Docker's `<none>`),
        // listed and kept until removed or pruned.
        if request.tags.is_empty() {
            self.store.keep_untagged(&built.image.manifest)?;
        }
        if let Some(cache_to) = &request.cache_to {
            export_cache(
                &self.store,
                cache_to,
                &graph,
                &built.steps,
                &request.registry,
            )?;
        }
        let mut to_push: Vec<&String> = Vec::new();
        if request.push {
            to_push.extend(&request.tags);
        }
        for output in &request.outputs {
            export_output(&self.store, output, &built.image, &request.tags)?;
            if let crate::request::Output::Image { names, push: true } = output {
                to_push.extend(names);
            }
        }
        let pushed = push_image(&self.store, &manifest, &to_push, &request.registry)?;
        Ok(BuildReport {
            manifest,
            config: built.image.config,
            tags: request.tags.clone(),
            pushed,
            steps,
            totals,
        })
    }

    /// The `--cache-from` caches. A registry cache that is not there yet
    /// (the first build that exports it) or cannot be read is a warning,
    /// as with BuildKit; a local directory that is not there is an error
    /// (a typo).
    fn import_caches(
        &self,
        request: &BuildRequest,
        emit: &dyn Fn(EventKind),
    ) -> Result<Vec<ImportedCache>, EngineError> {
        let mut imported = Vec::new();
        for from in &request.cache_from {
            match import_cache(&self.store, from, &request.registry) {
                Ok(cache) => imported.push(cache),
                Err(error) if matches!(from, crate::request::CacheFrom::Registry(_)) => {
                    emit(EventKind::Warning {
                        message: format!("the registry cache was not imported: {error}"),
                        file: None,
                        line: 0,
                    })
                }
                Err(error) => return Err(error),
            }
        }
        Ok(imported)
    }

    /// Plans once to learn the image references, pins each through the
    /// image source, then plans again with their configs (their ENV,
    /// WORKDIR and ONBUILD triggers matter to the plan).
    fn plan(
        &self,
        request: &BuildRequest,
        dockerfile: &kiln_dockerfile::Dockerfile,
        file: &DockerfileText,
    ) -> Result<(BuildGraph, BTreeMap<String, kiln_store::Digest>), EngineError> {
        let plan_error = |error| EngineError::Plan {
            file: file.clone(),
            error: Box::new(error),
        };
        let mut options = PlanOptions {
            build_args: request.build_args.clone(),
            target: request.target.clone(),
            network: request.network,
            extra_hosts: request.extra_hosts.clone(),
            ulimits: request.ulimits.clone(),
            shm_size: request.shm_size,
            ..PlanOptions::default()
        };
        options.named_contexts = crate::build_contexts::resolve_build_contexts(
            &self.store,
            &request.build_contexts,
            &options.platform,
        )?;
        let first = plan(dockerfile, &options).map_err(plan_error)?;
        let mut pinned = BTreeMap::new();
        let mut platforms = BTreeMap::new();
        for reference in &first.images {
            let image = if request.pull {
                self.images
                    .resolve_fresh(&self.store, reference, &request.registry)?
            } else {
                self.images
                    .resolve(&self.store, reference, &request.registry)?
            };
            options.base_configs.insert(reference.clone(), image.config);
            pinned.insert(reference.clone(), image.manifest);
            platforms.insert(reference.clone(), image.platform);
        }
        let mut graph = plan(dockerfile, &options).map_err(plan_error)?;
        let mismatched = base_platform_warnings(&graph, &platforms);
        graph.warnings.extend(mismatched);
        Ok((graph, pinned))
    }

    /// Runs the plan's steps. The stat cache is saved whatever the
    /// outcome (what was hashed stays true); its error, if any, is
    /// returned beside the result, a warning rather than a failure.
    fn run(
        &self,
        request: &BuildRequest,
        graph: &BuildGraph,
        sources: &Sources<'_>,
        file: &DockerfileText,
        cancel: &Cancel,
        progress: &(dyn Fn(StepEvent<'_>) + Sync),
    ) -> Result<(kiln_build::BuildOutcome, Option<kiln_context::ContextError>), EngineError> {
        let store = &self.store;
        let layout = store.layout();
        let cache = CacheIndex::open(&layout.cache());
        // `<Dockerfile>.dockerignore` beside the Dockerfile wins over the
        // context's `.dockerignore`; a Dockerfile from elsewhere has only
        // the latter.
        let ignore = load_dockerignore(&request.context, &request.dockerfile_path())?;
        // A step is compared with its own past: same context, same Dockerfile.
        let scope = format!(
            "{}\n{}",
            request.canonical_context().display(),
            file.display
        );
        let stat_cache =
            StatCache::load(&StatCache::file_for(&layout.stat_cache(), &request.context));
        let created = creation_time(request.source_date_epoch);
        let result = kiln_build::build(
            store,
            graph,
            &BuildOptions {
                context: &request.context,
                created: &created,
                source_date_epoch: request.source_date_epoch,
                labels: &request.labels,
                images: sources.images,
                stat_cache: &stat_cache,
                ignore: &ignore,
                cache: &cache,
                cache_from: sources.cache_from,
                no_cache: request.no_cache,
                no_cache_stages: &request.no_cache_filter,
                scope: &scope,
                secrets: &request.secrets,
                ssh: &request.ssh,
                allow_insecure: request.allow_insecure,
                cancel,
                // Twice the cores: RUN steps often wait (network, disk,
                // sleep), and on `multistage` three stages at once on two
                // cores beat two at a time (docs/benchmarks.md).
                jobs: request.jobs.unwrap_or_else(|| {
                    2 * std::thread::available_parallelism().map_or(2, |n| n.get())
                }),
                progress,
                run_pids_limit: request.run_pids_limit,
                track_reads: request.track_reads,
            },
        );
        let saved = stat_cache.save().err();
        match result {
            Ok(outcome) => Ok((outcome, saved)),
            Err(error) => Err(EngineError::from_build(error, file)),
        }
    }
}

/// The Dockerfile's text and parse.
fn read_dockerfile(
    request: &BuildRequest,
) -> Result<(DockerfileText, kiln_dockerfile::Dockerfile), EngineError> {
    let (display, bytes) = match &request.dockerfile {
        DockerfileSource::Bytes { display, bytes } => (display.clone(), bytes.clone()),
        _ => {
            let path = request.dockerfile_path();
            let bytes = std::fs::File::open(&path)
                .and_then(read_bounded)
                .map_err(|e| EngineError::io(&path, e))?;
            (path.display().to_string(), bytes)
        }
    };
    let file = DockerfileText {
        display,
        source: String::from_utf8_lossy(&bytes).into_owned(),
    };
    match kiln_dockerfile::parse_bytes(&bytes) {
        Ok(dockerfile) => Ok((file, dockerfile)),
        Err(error) => Err(EngineError::Parse { file, error }),
    }
}

/// Reads a Dockerfile from `reader` (a file, standard input), at most one
/// byte more than a Dockerfile may have: the parser refuses that with an
/// error naming the limit, and `/dev/zero` or a huge file never fills
/// memory.
pub fn read_bounded(reader: impl Read) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    reader
        .take(kiln_dockerfile::MAX_DOCKERFILE_BYTES as u64 + 1)
        .read_to_end(&mut buf)?;
    Ok(buf)
}

/// RFC 3339 `created` time: SOURCE_DATE_EPOCH's when given, else now.
pub fn creation_time(source_date_epoch: Option<u64>) -> String {
    let time = match source_date_epoch {
        Some(seconds) => std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds),
        None => std::time::SystemTime::now(),
    };
    humantime::format_rfc3339_seconds(time).to_string()
}

/// Turns the executor's step events into owned [`BuildEvent`]s and keeps
/// the per-step report and the totals.
struct Recorder<'a> {
    /// Per node: `[stage i/n] INSTRUCTION`, as BuildKit shows them.
    titles: Vec<String>,
    /// Per node: its Dockerfile line.
    lines: Vec<u32>,
    stages: Vec<String>,
    emit: &'a (dyn Fn(EventKind) + Sync),
    state: Mutex<Recorded>,
}

#[derive(Default)]
struct Recorded {
    steps: BTreeMap<NodeId, StepReport>,
    /// Started and not finished, with when they started: at the end, the
    /// failed or cut-short ones.
    unfinished: BTreeMap<NodeId, Instant>,
    /// Of those, how many failed and how many were canceled.
    failed: usize,
    canceled: usize,
}

impl<'a> Recorder<'a> {
    fn new(graph: &BuildGraph, emit: &'a (dyn Fn(EventKind) + Sync)) -> Recorder<'a> {
        let mut titles = vec![String::new(); graph.nodes.len()];
        let mut stages = vec![String::new(); graph.nodes.len()];
        for stage in &graph.stages {
            for (position, id) in stage.nodes.iter().enumerate() {
                titles[*id] = format!(
                    "[{} {}/{}] {}",
                    stage.label(),
                    position + 1,
                    stage.nodes.len(),
                    graph.nodes[*id].display
                );
                stages[*id] = stage.label();
            }
        }
        Recorder {
            titles,
            lines: graph.nodes.iter().map(|n| n.line).collect(),
            stages,
            emit,
            state: Mutex::new(Recorded::default()),
        }
    }

    fn step_event(&self, event: StepEvent<'_>) {
        match event {
            StepEvent::Started { node } => {
                lock(&self.state).unfinished.insert(node.id, Instant::now());
                (self.emit)(EventKind::Started {
                    id: node.id + 1,
                    step: self.titles[node.id].clone(),
                    line: node.line,
                });
            }
            StepEvent::Output { node, line } => (self.emit)(EventKind::Output {
                id: node.id + 1,
                text: line.to_owned(),
            }),
            StepEvent::Finished {
                node,
                elapsed,
                layer,
                key,
                cache,
                hash_stats,
                reads,
            } => {
                let layer_bytes = layer.map_or(0, |l| l.size);
                let (reason, reason_kind) = match &cache {
                    CacheOutcome::Miss(miss) => (Some(miss.to_string()), Some(miss.kind())),
                    _ => (None, None),
                };
                let finished = StepFinished {
                    id: node.id + 1,
                    duration: elapsed.as_secs_f64(),
                    layer_bytes,
                    reason,
                    reason_kind,
                    hashed: hash_stats.map(|stats| Hashed {
                        files_hashed: stats.files as u64,
                        files_unchanged: stats.unchanged as u64,
                        bytes_read: stats.bytes_read,
                        hash_duration: stats.elapsed.as_secs_f64(),
                    }),
                };
                let hit = cache == CacheOutcome::Hit;
                {
                    let mut state = lock(&self.state);
                    state.unfinished.remove(&node.id);
                    state.steps.insert(
                        node.id,
                        StepReport {
                            id: node.id + 1,
                            stage: self.stages[node.id].clone(),
                            line: node.line,
                            title: self.titles[node.id].clone(),
                            key,
                            bytes_written: if hit { 0 } else { layer_bytes },
                            cache,
                            seconds: elapsed.as_secs_f64(),
                            layer: layer.map(|l| l.digest),
                            reads,
                            copy: match &node.op {
                                kiln_graph::Op::Copy(copy) => Some(copy.clone()),
                                _ => None,
                            },
                        },
                    );
                }
                (self.emit)(if hit {
                    EventKind::Cached(finished)
                } else {
                    EventKind::Done(finished)
                });
            }
        }
    }

    /// Says how each step that started and did not finish ended: the
    /// one at the failing line (the first, if several are there) failed,
    /// the others were canceled.
    fn end_unfinished(&self, failed_line: Option<u32>) {
        let unfinished: Vec<(NodeId, Instant)> = lock(&self.state)
            .unfinished
            .iter()
            .map(|(id, at)| (*id, *at))
            .collect();
        let mut blamed = false;
        for (node, started) in unfinished {
            let id = node + 1;
            let duration = started.elapsed().as_secs_f64();
            let line = self.lines[node];
            if !blamed && failed_line == Some(line) {
                blamed = true;
                lock(&self.state).failed += 1;
                (self.emit)(EventKind::Error { id, duration });
            } else {
                lock(&self.state).canceled += 1;
                (self.emit)(EventKind::Canceled { id, duration });
            }
        }
    }

    /// The steps in Dockerfile order, and the totals.
    fn finish(&self, outcome: &'static str) -> (Vec<StepReport>, Summary) {
        let state = lock(&self.state);
        let steps: Vec<StepReport> = state.steps.values().cloned().collect();
        let mut totals = Summary {
            outcome,
            steps_failed: state.failed,
            steps_canceled: state.canceled,
            ..Summary::default()
        };
        for step in &steps {
            match step.cache {
                CacheOutcome::Hit => totals.steps_cached += 1,
                CacheOutcome::Miss(_) => {
                    totals.steps_run += 1;
                    totals.bytes_written += step.bytes_written;
                }
                CacheOutcome::NotApplicable => {}
            }
        }
        totals.steps_run += totals.steps_failed + totals.steps_canceled;
        let counted = totals.steps_run + totals.steps_cached;
        if counted > 0 {
            totals.cache_hit_rate = totals.steps_cached as f64 / counted as f64;
        }
        (steps, totals)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A build and a check both read the Dockerfile from the context.
fn context_is_a_directory(request: &BuildRequest) -> Result<(), EngineError> {
    if request.context.is_dir() {
        return Ok(());
    }
    Err(EngineError::Request(format!(
        "build context {} is not a directory",
        request.context.display()
    )))
}

/// The rule's name, BuildKit's: in the build's warning and `--check`'s.
const INVALID_BASE_IMAGE_PLATFORM: &str = "InvalidBaseImagePlatform";

/// BuildKit's `InvalidBaseImagePlatform` check: a stage for one platform
/// on a base image for another (its programs are the base's, whatever
/// the label says).
fn base_platform_warnings(
    graph: &BuildGraph,
    platforms: &BTreeMap<String, Option<kiln_graph::Platform>>,
) -> Vec<kiln_graph::PlanWarning> {
    let mut warnings = Vec::new();
    for stage in graph.stages.iter().filter(|s| s.needed) {
        let kiln_graph::Base::Image(reference) = &stage.base else {
            continue;
        };
        let Some(Some(actual)) = platforms.get(reference) else {
            continue;
        };
        let expected = &stage.platform;
        let same = actual.os == expected.os
            && actual.architecture == expected.architecture
            && (actual.variant.is_none()
                || expected.variant.is_none()
                || actual.variant == expected.variant);
        if !same {
            warnings.push(kiln_graph::PlanWarning {
                message: format!(
                    "{INVALID_BASE_IMAGE_PLATFORM}: Base image {reference} was pulled with platform \
                     \"{actual}\", expected \"{expected}\" for current build"
                ),
                line: stage.line,
            });
        }
    }
    warnings
}
