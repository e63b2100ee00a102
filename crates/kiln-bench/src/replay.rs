//! Builds each revision of a [`History`] in order on a dedicated store,
//! and again with `--no-cache` on a second one, and records what every
//! step did.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use kiln_engine::{
    BuildRequest, CacheOutcome, Cancel, DockerfileSource, Engine, EngineError, ImageSource,
    LocalImages, ResolvedImage,
};
use kiln_store::Store;

use crate::history::History;
use crate::report::{BenchReport, BuildRun, Outcome, StepRun};
use crate::BenchError;

/// How each revision is built.
#[derive(Clone, Debug, Default)]
pub struct ReplayOptions {
    /// The Dockerfile, relative to the revision's root (default:
    /// `Dockerfile`).
    pub dockerfile: Option<PathBuf>,
    /// Build args of every build (a scenario's own go over them).
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    pub jobs: Option<usize>,
    /// Also build each revision with `--no-cache` (on a store of its own,
    /// so the cache under test sees only its own builds).
    pub no_cache_baseline: bool,
    /// `git` or `scenario`, as the report names its source.
    pub source: String,
}

/// Where the replay is, for a progress bar.
#[derive(Clone, Debug)]
pub struct ReplayProgress {
    /// From 1.
    pub index: usize,
    pub of: usize,
    pub id: String,
    pub label: String,
    /// The build just made, once it is.
    pub done: Option<BuildRun>,
}

/// Replays `history` with `options`: the stores live under `work` (the
/// cache's in `work/store`, the baseline's in `work/no-cache`), their
/// base images copied from `images`. Stops at the first error that is
/// not the build's own (a build that fails is recorded and the replay
/// goes on, as a broken commit in a history is).
pub fn replay(
    history: &mut dyn History,
    images: Arc<Store>,
    work: &Path,
    options: &ReplayOptions,
    cancel: &Cancel,
    progress: &dyn Fn(ReplayProgress),
) -> Result<BenchReport, BenchError> {
    let engine = engine_at(&work.join("store"), &images)?;
    let baseline = if options.no_cache_baseline {
        Some(engine_at(&work.join("no-cache"), &images)?)
    } else {
        None
    };
    let revisions = history.revisions().to_vec();
    let mut builds = Vec::with_capacity(revisions.len());
    for (i, revision) in revisions.iter().enumerate() {
        let mut report = ReplayProgress {
            index: i + 1,
            of: revisions.len(),
            id: revision.id.clone(),
            label: revision.label.clone(),
            done: None,
        };
        progress(report.clone());
        let prepared = history.prepare(i)?;
        let mut request = BuildRequest::new(&prepared.context);
        request.dockerfile = DockerfileSource::Path(
            prepared.context.join(
                options
                    .dockerfile
                    .as_deref()
                    .unwrap_or(Path::new("Dockerfile")),
            ),
        );
        request.build_args = options.build_args.clone();
        request.build_args.extend(prepared.build_args);
        request.target = options.target.clone();
        request.jobs = options.jobs;
        let mut run = build_once(&engine, &request, cancel)?;
        if let Some(baseline) = &baseline {
            let no_cache = request.clone().no_cache(true);
            let started = Instant::now();
            // Its outcome is the cached build's: only its time is wanted.
            match baseline.build(&no_cache, cancel, &|_| {}) {
                Err(EngineError::Interrupted) => return Err(BenchError::Interrupted),
                _ => run.no_cache_seconds = Some(started.elapsed().as_secs_f64()),
            }
        }
        run.index = i + 1;
        run.id = revision.id.clone();
        run.label = revision.label.clone();
        report.done = Some(run.clone());
        progress(report);
        builds.push(run);
    }
    Ok(BenchReport::new(&options.source, builds))
}

fn engine_at(root: &Path, images: &Arc<Store>) -> Result<Engine, BenchError> {
    let store = Store::open(root)?;
    Ok(Engine::with_images(
        store,
        Box::new(CopiedImages {
            from: Arc::clone(images),
        }),
    ))
}

/// One build, timed, its steps recorded.
fn build_once(
    engine: &Engine,
    request: &BuildRequest,
    cancel: &Cancel,
) -> Result<BuildRun, BenchError> {
    let started = Instant::now();
    let result = engine.build(request, cancel, &|_| {});
    let seconds = started.elapsed().as_secs_f64();
    let mut run = BuildRun {
        index: 0,
        id: String::new(),
        label: String::new(),
        outcome: "built",
        error: None,
        seconds,
        no_cache_seconds: None,
        bytes_written: 0,
        steps: Vec::new(),
        first_miss: None,
    };
    match result {
        Ok(report) => {
            run.bytes_written = report.totals.bytes_written;
            run.steps = report
                .steps
                .iter()
                .filter_map(|step| {
                    let outcome = match &step.cache {
                        CacheOutcome::NotApplicable => return None,
                        CacheOutcome::Hit => Outcome::Hit,
                        CacheOutcome::Miss(miss) => Outcome::Miss {
                            reason: miss.to_string(),
                            reason_kind: miss.kind(),
                        },
                    };
                    Some(StepRun {
                        step: step.title.clone(),
                        stage: step.stage.clone(),
                        line: step.line,
                        outcome,
                        seconds: step.seconds,
                        bytes_written: step.bytes_written,
                    })
                })
                .collect();
            run.first_miss = run
                .steps
                .iter()
                .find(|s| s.outcome != Outcome::Hit)
                .map(|s| s.step.clone());
        }
        Err(EngineError::Interrupted) => return Err(BenchError::Interrupted),
        Err(error) => {
            run.outcome = "failed";
            run.error = Some(error.to_string());
        }
    }
    Ok(run)
}

/// Base images from the user's store, copied into the bench's (each
/// blob checked as it is written) the first time a build names them.
struct CopiedImages {
    from: Arc<Store>,
}

impl ImageSource for CopiedImages {
    fn resolve(&self, store: &Store, reference: &str) -> Result<ResolvedImage, EngineError> {
        if store.resolve(reference).is_err() {
            store
                .copy_image_from(&self.from, reference)
                .map_err(|e| match e {
                    kiln_store::StoreError::UnknownImage(_) => {
                        EngineError::Build(kiln_build::BuildError::BaseImage {
                            reference: reference.to_owned(),
                            message: format!(
                                "is not in the store at {} (the bench copies base images from it: pull or import it there first)",
                                self.from.root().display()
                            ),
                        })
                    }
                    other => other.into(),
                })?;
        }
        LocalImages.resolve(store, reference)
    }
}
