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
use crate::report::{BenchReport, BuildRun, Ideal, Outcome, StepDetail, StepRun};
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

/// A fresh history, writing its revisions under the directory given.
pub type MakeHistory = dyn Fn(&Path) -> Result<Box<dyn History>, BenchError>;

/// A change to each revision's Dockerfile text (`None`: built as it is).
pub type Rewrite = dyn Fn(&str) -> Option<String> + Sync;

/// Where the replay is, for a progress bar.
#[derive(Clone, Debug)]
pub struct ReplayProgress {
    /// `history`, or `advice` for the replay with the suggested
    /// Dockerfile.
    pub phase: &'static str,
    /// From 1.
    pub index: usize,
    pub of: usize,
    pub id: String,
    pub label: String,
    /// The build just made, once it is.
    pub done: Option<BuildRun>,
}

/// Replays `history`, then, if the report has advice, the same history
/// again with the first suggestion's Dockerfile, whose outcome (and
/// whether it made images with the same files) goes into that advice.
/// `make_history` gives a fresh history with its own work directory.
pub fn bench_cache(
    make_history: &MakeHistory,
    images: Arc<Store>,
    work: &Path,
    options: &ReplayOptions,
    cancel: &Cancel,
    progress: &dyn Fn(ReplayProgress),
) -> Result<BenchReport, BenchError> {
    let original_work = work.join("original");
    let mut history = make_history(&original_work)?;
    let original = replay(
        history.as_mut(),
        Arc::clone(&images),
        &original_work,
        options,
        None,
        cancel,
        progress,
    )?;
    let mut report = original.report;
    let mut advice = crate::advice::find_advice(&report, original.last_dockerfile.as_deref());
    if let Some(first) = advice.iter_mut().find(|a| a.dockerfile.is_some()) {
        let advised_work = work.join("advised");
        let mut history = make_history(&advised_work)?;
        let advised_options = ReplayOptions {
            no_cache_baseline: false,
            ..options.clone()
        };
        let chosen = first.clone();
        let rewrite = move |text: &str| chosen.rewrite(text);
        let advised = replay(
            history.as_mut(),
            images,
            &advised_work,
            &advised_options,
            Some(&rewrite),
            cancel,
            progress,
        )?;
        let mut differences = Vec::new();
        for (a, b) in report.builds.iter().zip(&advised.report.builds) {
            let (Some(a), Some(b)) = (&a.image, &b.image) else {
                continue;
            };
            let digest = |d: &String| d.parse::<kiln_store::Digest>().map_err(BenchError::from);
            let ours = crate::image_files::image_files(original.engine.store(), &digest(a)?)?;
            let theirs = crate::image_files::image_files(advised.engine.store(), &digest(b)?)?;
            differences.extend(crate::image_files::differences(&ours, &theirs, 5));
        }
        differences.truncate(10);
        let t = &advised.report.totals;
        // The same instruction, whatever its number in the new order.
        let instruction = |title: &str| title.split_once("] ").map(|(_, i)| i.to_owned());
        let wanted = instruction(&first.step);
        let rate_of = |report: &BenchReport, ideal: bool| {
            report
                .steps
                .iter()
                .find(|s| s.stage == first_stage(&first.step) && instruction(&s.step) == wanted)
                .map_or(0.0, |s| if ideal { s.ideal_hit_rate } else { s.hit_rate })
        };
        first.replay = Some(crate::advice::AdviceReplay {
            rewritten: advised.rewritten,
            step_hit_rate: rate_of(&advised.report, false),
            step_ideal_hit_rate: rate_of(&report, true),
            hit_rate: t.hit_rate,
            steps_run: t.steps_run,
            original_steps_run: report.totals.steps_run,
            original_ideal_steps_run: report.totals.ideal_steps_run,
            seconds: t.seconds,
            original_seconds: report.totals.seconds,
            same_filesystem: differences.is_empty(),
            differences,
        });
    }
    report.advice = advice;
    Ok(report)
}

/// Replays `history` with `options`: the stores live under `work` (the
/// cache's in `work/store`, the baseline's in `work/no-cache`), their
/// base images copied from `images`; `rewrite` changes each revision's
/// Dockerfile (the advice's replay). Every RUN's reads are recorded, so
/// each step's ideal outcome is known ([`Ideal`]). Stops at the first
/// error that is not the build's own (a build that fails is recorded and
/// the replay goes on, as a broken commit in a history is). Returns the
/// report and the engine over the cache's store (its images are there).
pub fn replay(
    history: &mut dyn History,
    images: Arc<Store>,
    work: &Path,
    options: &ReplayOptions,
    rewrite: Option<&Rewrite>,
    cancel: &Cancel,
    progress: &dyn Fn(ReplayProgress),
) -> Result<Replayed, BenchError> {
    let engine = engine_at(&work.join("store"), &images)?;
    let mut ideals = Ideals::default();
    let mut last_dockerfile = None;
    let mut rewritten = 0;
    let baseline = if options.no_cache_baseline {
        Some(engine_at(&work.join("no-cache"), &images)?)
    } else {
        None
    };
    let revisions = history.revisions().to_vec();
    let mut builds = Vec::with_capacity(revisions.len());
    for (i, revision) in revisions.iter().enumerate() {
        let mut report = ReplayProgress {
            phase: if rewrite.is_some() {
                "advice"
            } else {
                "history"
            },
            index: i + 1,
            of: revisions.len(),
            id: revision.id.clone(),
            label: revision.label.clone(),
            done: None,
        };
        progress(report.clone());
        let prepared = history.prepare(i)?;
        let mut request = BuildRequest::new(&prepared.context);
        let dockerfile = prepared.context.join(
            options
                .dockerfile
                .as_deref()
                .unwrap_or(Path::new("Dockerfile")),
        );
        last_dockerfile = std::fs::read_to_string(&dockerfile).ok();
        request.dockerfile = dockerfile_source(&dockerfile, rewrite);
        if matches!(request.dockerfile, DockerfileSource::Bytes { .. }) {
            rewritten += 1;
        }
        request.track_reads = true;
        request.build_args = options.build_args.clone();
        request.build_args.extend(prepared.build_args);
        request.target = options.target.clone();
        request.jobs = options.jobs;
        let mut run = build_once(&engine, &request, cancel)?;
        ideals.judge(&mut run.steps);
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
    Ok(Replayed {
        report: BenchReport::new(&options.source, builds),
        engine,
        last_dockerfile,
        rewritten,
    })
}

/// The stage label of a step title (`[build 2/5] RUN ...` → `build`).
fn first_stage(title: &str) -> &str {
    title
        .trim_start_matches('[')
        .split_once(' ')
        .map_or("", |(stage, _)| stage)
}

/// What [`replay`] leaves.
pub struct Replayed {
    pub report: BenchReport,
    /// Over the store the builds were cached in (their images are there).
    pub engine: Engine,
    /// The last revision's Dockerfile, as written.
    pub last_dockerfile: Option<String>,
    /// Revisions whose Dockerfile `rewrite` changed.
    pub rewritten: usize,
}

/// The revision's Dockerfile, rewritten if `rewrite` says so. (Given as
/// bytes, never written into the context, where a `COPY . .` would see
/// it.)
fn dockerfile_source(path: &Path, rewrite: Option<&Rewrite>) -> DockerfileSource {
    let rewritten = rewrite.and_then(|rewrite| {
        let text = std::fs::read_to_string(path).ok()?;
        rewrite(&text)
    });
    match rewritten {
        Some(text) => DockerfileSource::Bytes {
            display: format!("{} (rewritten)", path.display()),
            bytes: text.into_bytes(),
        },
        None => DockerfileSource::Path(path.to_owned()),
    }
}

/// What each RUN read the last time it ran, by step: a RUN that missed
/// only because an earlier step changed, and read the same paths with
/// the same content as last time, did not have to run.
#[derive(Default)]
struct Ideals {
    last_reads: std::collections::HashMap<String, BTreeMap<String, String>>,
}

impl Ideals {
    fn judge(&mut self, steps: &mut [StepRun]) {
        for step in steps {
            let tracked = step.detail.reads.as_ref();
            // What a RUN read, if all of it was seen.
            let reads: Option<BTreeMap<String, String>> = tracked.filter(|r| r.complete).map(|r| {
                r.files
                    .iter()
                    .map(|f| (f.path.clone(), f.digest.clone()))
                    .collect()
            });
            step.ideal = match &step.outcome {
                Outcome::Hit => Ideal::Hit,
                // Only an earlier step changed: COPY/ADD (whose sources are
                // in its key, so unchanged) and the steps that read nothing
                // (WORKDIR, ENV...) would have given the same; a RUN only if
                // it read the same as last time.
                Outcome::Miss { reason_kind, .. } if *reason_kind == "parent_changed" => {
                    match (tracked, &reads) {
                        (None, _) => Ideal::Hit,
                        (Some(_), Some(now)) if self.last_reads.get(&step.step) == Some(now) => {
                            Ideal::Hit
                        }
                        (Some(_), _) => Ideal::Run,
                    }
                }
                Outcome::Miss { .. } => Ideal::Run,
            };
            match reads {
                Some(reads) => {
                    self.last_reads.insert(step.step.clone(), reads);
                }
                None if tracked.is_some() => {
                    self.last_reads.remove(&step.step);
                }
                None => {}
            }
        }
    }
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
        image: None,
        steps: Vec::new(),
        first_miss: None,
    };
    match result {
        Ok(report) => {
            run.bytes_written = report.totals.bytes_written;
            run.image = Some(report.manifest.to_string());
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
                        ideal: Ideal::Run,
                        seconds: step.seconds,
                        bytes_written: step.bytes_written,
                        files_read: step.reads.as_ref().map(|r| r.files.len()),
                        detail: StepDetail {
                            layer: step.layer,
                            reads: step.reads.clone(),
                            copy: step.copy.clone(),
                        },
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
    fn resolve(
        &self,
        store: &Store,
        reference: &str,
        registry: &kiln_engine::ClientOptions,
    ) -> Result<ResolvedImage, EngineError> {
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
        LocalImages.resolve(store, reference, registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::StepDetail;

    fn run(step: &str, kind: Option<&'static str>, reads: Option<&[(&str, &str)]>) -> StepRun {
        StepRun {
            step: step.into(),
            stage: "stage-0".into(),
            line: 1,
            outcome: match kind {
                None => Outcome::Hit,
                Some(kind) => Outcome::Miss {
                    reason: kind.into(),
                    reason_kind: kind,
                },
            },
            ideal: Ideal::Run,
            seconds: 0.0,
            bytes_written: 0,
            files_read: None,
            detail: StepDetail {
                layer: None,
                reads: reads.map(|reads| kiln_engine::Reads {
                    files: reads
                        .iter()
                        .map(|(path, digest)| kiln_engine::FileRead {
                            path: (*path).into(),
                            layer: kiln_store::Digest::of(b"layer"),
                            kind: kiln_engine::ReadKind::File,
                            digest: (*digest).into(),
                        })
                        .collect(),
                    complete: true,
                }),
                copy: None,
            },
        }
    }

    #[test]
    fn a_run_had_to_run_only_if_what_it_read_changed() {
        let mut ideals = Ideals::default();
        let same = [("/app/package.json", "sha256:1"), ("/bin/sh", "sha256:2")];
        let mut first = vec![run("RUN install", Some("first_build"), Some(&same))];
        ideals.judge(&mut first);
        assert_eq!(first[0].ideal, Ideal::Run);
        // An earlier step ran again; it read the same: no need.
        let mut again = vec![
            run("WORKDIR /app", Some("parent_changed"), None),
            run("RUN install", Some("parent_changed"), Some(&same)),
        ];
        ideals.judge(&mut again);
        assert_eq!((again[0].ideal, again[1].ideal), (Ideal::Hit, Ideal::Hit));
        assert!(again[1].avoidable());
        // What it read changed: it had to.
        let changed = [("/app/package.json", "sha256:3"), ("/bin/sh", "sha256:2")];
        let mut edited = vec![run("RUN install", Some("parent_changed"), Some(&changed))];
        ideals.judge(&mut edited);
        assert_eq!(edited[0].ideal, Ideal::Run);
        // Its own inputs changed: it had to, whatever it read.
        let mut arg = vec![run("RUN install", Some("build_arg"), Some(&changed))];
        ideals.judge(&mut arg);
        assert_eq!(arg[0].ideal, Ideal::Run);
        let mut hit = vec![run("RUN install", None, None)];
        ideals.judge(&mut hit);
        assert_eq!(hit[0].ideal, Ideal::Hit);
        assert!(!hit[0].avoidable());
    }
}
