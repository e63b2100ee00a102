//! Runs a plan, node by node in Dockerfile order (each stage only uses
//! earlier ones), through the layer cache: every node gets a key (its
//! parent's key, its definition, the digests of what it reads); a key the
//! cache knows gives the step's layer and history time without running it,
//! otherwise the step runs and the cache learns the result, with a record
//! of what it read so the next miss can say why. FROM loads the base,
//! COPY/ADD write layers, WORKDIR creates its directory, metadata steps
//! change only the config; the target stage becomes an image in the store.
//! RUN needs the runtime and is refused with its line until that exists.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use kiln_cache::{explain, CacheIndex, CacheKey, Entry, ImportedCache, Miss, StepRecord};
use kiln_context::{HashStats, Ignore, StatCache};
use kiln_graph::{Base, BuildGraph, History, Node, Op, StageId};
use kiln_store::{write_image, ImageRecord, Keep, Layer, Store};
use serde_json::{json, Value};

use crate::base::pinned_base;
use crate::cancel::Cancel;
use crate::copy::{copy_layer, CopyRequest};
use crate::copy_step::{resolve_owner, CopyStep};
use crate::error::BuildError;
use crate::keys;
use crate::reads::Reads;
use crate::rootfs;
use crate::run_step::run_step;
use crate::stage::{image_config_document, StageFs, Stages};

/// What a build needs besides the plan.
pub struct BuildOptions<'a> {
    /// The build context directory.
    pub context: &'a Path,
    /// RFC 3339 time written into `created` fields of steps that run.
    pub created: &'a str,
    /// SOURCE_DATE_EPOCH: clamps file times in new layers, and every
    /// `created` is `created` (cached steps keep no time of their own).
    pub source_date_epoch: Option<u64>,
    /// `--label`: added to the image's labels (over the Dockerfile's).
    pub labels: &'a BTreeMap<String, String>,
    /// Every image reference of the plan ([`BuildGraph::images`]), resolved
    /// to its manifest digest before the build: steps load these digests,
    /// never a name.
    pub images: &'a BTreeMap<String, kiln_store::Digest>,
    /// Digests of context files hashed by earlier builds.
    pub stat_cache: &'a StatCache,
    /// The context's `.dockerignore`.
    pub ignore: &'a Ignore,
    pub cache: &'a CacheIndex,
    /// `--cache-from`: entries (and layers) another store exported.
    pub cache_from: &'a [ImportedCache],
    /// `--no-cache` (all stages) and `--no-cache-filter` (these stages):
    /// run the steps even when the cache has them.
    pub no_cache: bool,
    pub no_cache_stages: &'a [String],
    /// Names this Dockerfile and context among others, so the records
    /// that explain misses compare a step with its own past.
    pub scope: &'a str,
    /// Set from outside to stop the build (Ctrl-C).
    pub cancel: &'a Cancel,
    /// `--allow security.insecure`: lets `RUN --security=insecure` through.
    pub allow_insecure: bool,
    /// `--ssh ID=SOCKET`: agent sockets for `RUN --mount=type=ssh`.
    pub ssh: &'a BTreeMap<String, std::path::PathBuf>,
    /// `--secret`: id → content, for `RUN --mount=type=secret`.
    pub secrets: &'a BTreeMap<String, Vec<u8>>,
    /// How many stages may run at once.
    pub jobs: usize,
    /// Most tasks (processes and threads) one RUN step may have at once
    /// (`None`: unlimited); [`crate::DEFAULT_RUN_PIDS_LIMIT`] unless the
    /// user says otherwise.
    pub run_pids_limit: Option<u64>,
    /// Told when each step starts and ends (from several threads).
    pub progress: &'a (dyn Fn(StepEvent<'_>) + Sync),
    /// Record what each RUN that runs reads of the layers below it
    /// ([`StepEvent::Finished`]'s `reads`; `kiln bench` wants it).
    pub track_reads: bool,
}

/// What the executor reports as it goes.
// Passed by value once per step and never stored in bulk: the size of a
// miss reason costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
pub enum StepEvent<'a> {
    Started {
        node: &'a Node,
    },
    /// A line a RUN command printed (stdout or stderr).
    Output {
        node: &'a Node,
        line: &'a str,
    },
    Finished {
        node: &'a Node,
        elapsed: Duration,
        /// The layer the step made or found, if any.
        layer: Option<Layer>,
        /// The step's cache key (a FROM's is its stage's starting key).
        key: Option<CacheKey>,
        cache: CacheOutcome,
        /// For COPY/ADD: how many files were hashed and how many came
        /// from the stat cache.
        hash_stats: Option<HashStats>,
        /// For a RUN that ran with [`BuildOptions::track_reads`]: what it
        /// read of the layers below it.
        reads: Option<Reads>,
    },
}

/// Whether a step came from the cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheOutcome {
    /// FROM and steps with nothing to compute.
    NotApplicable,
    Hit,
    /// The step ran, for this reason.
    Miss(Miss),
}

/// What a build made: the image, and every step's cache key and entry
/// (for `--cache-to`).
pub struct BuildOutcome {
    pub image: ImageRecord,
    pub steps: Vec<BuiltStep>,
}

pub struct BuiltStep {
    pub stage: StageId,
    pub key: CacheKey,
    pub entry: Entry,
}

/// Runs the needed stages of `graph`, each as soon as the stages it uses
/// are done and at most `options.jobs` at once, and returns the target
/// stage's image. Steps within a stage run in order. The first error stops
/// the others (their containers are killed) and is the one returned.
pub fn build(
    store: &Store,
    graph: &BuildGraph,
    options: &BuildOptions<'_>,
) -> Result<BuildOutcome, BuildError> {
    let mut schedule = Schedule::new(graph);
    let mut done: Stages = BTreeMap::new();
    let mut built: Vec<BuiltStep> = Vec::new();
    let mut failure: Option<BuildError> = None;
    let jobs = options.jobs.max(1);
    std::thread::scope(|scope| {
        let (finished, results) = std::sync::mpsc::channel();
        let mut running = 0usize;
        loop {
            while running < jobs && failure.is_none() {
                let Some(id) = schedule.next_ready(|id| done.contains_key(&id)) else {
                    break;
                };
                // The stages it uses, as they ended; cloned so it runs
                // without holding anything the scheduler changes.
                let inputs: Stages = schedule
                    .needs(id)
                    .iter()
                    .filter_map(|need| done.get(need).map(|s| (*need, s.clone())))
                    .collect();
                let finished = finished.clone();
                running += 1;
                scope.spawn(move || {
                    let result = run_stage(store, graph, id, &inputs, options);
                    let _ = finished.send((id, result));
                });
            }
            if running == 0 {
                break;
            }
            let Ok((id, result)) = results.recv() else {
                break;
            };
            running -= 1;
            match result {
                Ok((fs, key, steps)) => {
                    done.insert(id, (fs, key));
                    built.extend(steps);
                }
                Err(error) => {
                    // Later failures are mostly the cancellation itself.
                    let first_real =
                        failure.is_none() || matches!(failure, Some(BuildError::Interrupted));
                    if first_real {
                        failure = Some(error);
                    }
                    schedule.cancel();
                    options.cancel.cancel();
                }
            }
        }
    });
    if let Some(error) = failure {
        return Err(error);
    }
    let (target, _) = done
        .remove(&graph.target)
        .ok_or_else(|| BuildError::step(0, "the target stage has no steps"))?;
    let config = image_config_document(graph, &target, options);
    let bytes = serde_json::to_vec(&config)
        .map_err(|e| BuildError::step(0, format!("image config: {e}")))?;
    // Stage ids are in Dockerfile order; the steps of a stage already are.
    built.sort_by_key(|step| step.stage);
    Ok(BuildOutcome {
        image: write_image(store, &bytes, &target.layers)?,
        steps: built,
    })
}

/// Which stages may start: those with steps whose used stages are done,
/// in Dockerfile order. The edges are the planner's ([`kiln_graph::Stage::uses`]).
struct Schedule {
    /// Stages not started yet, with the stages each waits for.
    waiting: Vec<(StageId, Vec<StageId>)>,
    needs: BTreeMap<StageId, Vec<StageId>>,
}

impl Schedule {
    fn new(graph: &BuildGraph) -> Schedule {
        let needs: BTreeMap<StageId, Vec<StageId>> = graph
            .stages
            .iter()
            .filter(|stage| !stage.nodes.is_empty())
            .map(|stage| (stage.id, stage.uses.iter().copied().collect()))
            .collect();
        Schedule {
            waiting: needs.iter().map(|(id, n)| (*id, n.clone())).collect(),
            needs,
        }
    }

    /// The first waiting stage whose inputs are all `done`, now started.
    fn next_ready(&mut self, done: impl Fn(StageId) -> bool) -> Option<StageId> {
        let index = self
            .waiting
            .iter()
            .position(|(_, needs)| needs.iter().all(|need| done(*need)))?;
        Some(self.waiting.remove(index).0)
    }

    fn needs(&self, stage: StageId) -> &[StageId] {
        self.needs.get(&stage).map_or(&[], Vec::as_slice)
    }

    /// Starts nothing more (a stage failed).
    fn cancel(&mut self) {
        self.waiting.clear();
    }
}

/// Runs one stage's steps in order, on top of the `inputs` stages it uses.
fn run_stage(
    store: &Store,
    graph: &BuildGraph,
    stage: StageId,
    inputs: &Stages,
    options: &BuildOptions<'_>,
) -> Result<(StageFs, Option<CacheKey>, Vec<BuiltStep>), BuildError> {
    let mut built = Vec::new();
    let mut current: Option<(StageFs, Option<CacheKey>)> = None;
    let mut position_in_stage = 0usize;
    // The stage's base image, by manifest digest: a step's record keeps
    // it, so a miss caused by a new base says so.
    let mut base_image: Option<String> = None;
    for node in graph.nodes.iter().filter(|n| n.stage == stage) {
        if options.cancel.is_cancelled() {
            return Err(BuildError::Interrupted);
        }
        (options.progress)(StepEvent::Started { node });
        let started = Instant::now();
        if let Op::From { base, platform } = &node.op {
            let (fs, key) = start_stage(store, base, inputs, options.images)?;
            base_image = matches!(base, Base::Image(_)).then(|| key.clone());
            let key = keys::from_key(&key, platform);
            current = Some((fs, Some(key)));
            position_in_stage = 0;
            (options.progress)(StepEvent::Finished {
                node,
                elapsed: started.elapsed(),
                layer: None,
                key: Some(key),
                cache: CacheOutcome::NotApplicable,
                hash_stats: None,
                reads: None,
            });
            continue;
        }
        position_in_stage += 1;
        let Some((state, parent_key)) = current.as_mut() else {
            return Err(BuildError::step(node.line, "step outside a stage"));
        };
        let step = Step {
            store,
            graph,
            node,
            stages: inputs,
            options,
            position: position_key(options.scope, graph, node, position_in_stage),
            base_image: base_image.as_deref(),
        };
        let done = step.run(state, *parent_key)?;
        *parent_key = Some(done.key);
        built.push(BuiltStep {
            stage: node.stage,
            key: done.key,
            entry: Entry {
                layer: done.layer.map(|l| l.digest),
                layer_size: done.layer.map_or(0, |l| l.size),
                created: done.created.clone(),
            },
        });
        state.config = node.config.clone();
        if let Some(entry) = &node.history {
            let mut entry = entry.clone();
            entry.empty_layer = done.layer.is_none();
            state.history.push(history_entry(&entry, &done.created));
        }
        (options.progress)(StepEvent::Finished {
            node,
            elapsed: started.elapsed(),
            layer: done.layer,
            key: Some(done.key),
            cache: done.cache,
            hash_stats: done.hash_stats,
            reads: done.reads,
        });
    }
    let (fs, key) =
        current.ok_or_else(|| BuildError::step(0, format!("stage {stage} has no FROM")))?;
    Ok((fs, key, built))
}

/// A stage's starting state and the text its FROM key is made of: the
/// resolved manifest digest, `scratch`, or the key of the stage it builds on.
fn start_stage(
    store: &Store,
    base: &Base,
    stages: &Stages,
    images: &BTreeMap<String, kiln_store::Digest>,
) -> Result<(StageFs, String), BuildError> {
    match base {
        Base::Scratch => Ok((StageFs::default(), "scratch".into())),
        Base::Stage(id) => {
            let (fs, key) = stages
                .get(id)
                .ok_or_else(|| BuildError::step(0, format!("stage {id} has not been built")))?;
            let key = key.map(|k| k.hex()).unwrap_or_default();
            Ok((fs.clone(), format!("stage {key}")))
        }
        Base::Image(reference) => {
            let image = pinned_base(store, images, reference)?;
            let config = image.image_config()?;
            let history = image.config["history"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let key = image.manifest.to_string();
            Ok((
                StageFs::new(image.layers, history, config, image.config),
                key,
            ))
        }
    }
}

/// Where a step sits (see [`keys::position_key`]).
fn position_key(scope: &str, graph: &BuildGraph, node: &Node, position: usize) -> CacheKey {
    keys::position_key(scope, &graph.stages[node.stage].label(), position)
}

/// One non-FROM step being run through the cache.
struct Step<'a> {
    store: &'a Store,
    graph: &'a BuildGraph,
    node: &'a Node,
    stages: &'a Stages,
    options: &'a BuildOptions<'a>,
    position: CacheKey,
    /// The stage's base image manifest (`None` for scratch and stages).
    base_image: Option<&'a str>,
}

/// Whether a step that made a layer also recorded its paths in the
/// stage's path index (COPY, WORKDIR) or left them to be read from the
/// layer when needed (RUN).
enum Indexed {
    Yes,
    No,
}

/// The outcome of a step.
struct Done {
    key: CacheKey,
    layer: Option<Layer>,
    /// The step's history time: when it first ran.
    created: String,
    cache: CacheOutcome,
    hash_stats: Option<HashStats>,
    reads: Option<Reads>,
}

impl Step<'_> {
    fn run(&self, state: &mut StageFs, parent: Option<CacheKey>) -> Result<Done, BuildError> {
        let node = self.node;
        let mut record = StepRecord {
            key: String::new(),
            parent: parent.map(|k| k.hex()),
            definition: node.display.clone(),
            base: self.base_image.map(str::to_owned),
            build_args: node.inputs.build_args.iter().cloned().collect(),
            files: BTreeMap::new(),
        };
        match &node.op {
            Op::From { .. } => Err(BuildError::step(node.line, "FROM inside a stage")),
            Op::Run(run) => {
                if run.insecure && !self.options.allow_insecure {
                    return Err(BuildError::Step {
                        line: node.line,
                        message: format!("{}: security.insecure is not allowed", node.display),
                        hint: Some("pass --allow security.insecure to kiln build".into()),
                    });
                }
                // What bind mounts show the command is an input like COPY's
                // sources: by content (cache mounts and secrets never).
                let mounted = crate::run_step::bind_sources_digest(
                    self.store,
                    node,
                    run,
                    self.stages,
                    self.options,
                )?;
                record.files = mounted.files;
                let key = keys::run_key(parent.as_ref(), run, &node.inputs, &mounted.digest);
                record.key = key.hex();
                let mut reads = None;
                let done = self.cached_or(key, &record, None, state, |state| {
                    // A RUN's layer is its snapshot (the next RUN's lower
                    // dir), and that is the layer's one copy: its tar is
                    // given back from it when an export or push wants it.
                    let keep = Keep::Snapshot;
                    let platform = &self.graph.stages[node.stage].platform;
                    crate::run_step::check_runnable(node, platform)?;
                    let (layer, read) = run_step(
                        self.store,
                        node,
                        run,
                        state,
                        self.stages,
                        self.options,
                        keep,
                    )?;
                    // The command must have seen what the key hashed.
                    crate::run_step::check_context_binds(
                        self.store,
                        node,
                        run,
                        self.stages,
                        self.options,
                        &mounted.context,
                    )?;
                    reads = read;
                    // What the command changed is not in the path index;
                    // it is read from the layer if a later step needs it.
                    Ok(Some((layer, Indexed::No)))
                })?;
                Ok(Done { reads, ..done })
            }
            Op::Config { instruction } => {
                let key =
                    keys::config_key(parent.as_ref(), instruction, &node.display, &node.config);
                record.key = key.hex();
                self.cached_or(key, &record, None, state, |_| Ok(None))
            }
            Op::Workdir { path } => {
                let key = keys::workdir_key(parent.as_ref(), path, &node.inputs);
                record.key = key.hex();
                let rel = rootfs::normalize(path);
                self.cached_or(key, &record, None, state, |state| {
                    // Through the image's symlinks, as BuildKit's mkdir
                    // resolves the path (a loop is left to the layer's
                    // writer to report).
                    let tree = state.tree(self.store)?;
                    let exists = tree.resolve(rel.as_bytes()).is_some_and(|real| {
                        real.is_empty() || tree.get(&real).is_some_and(|meta| meta.is_dir)
                    });
                    if exists {
                        // BuildKit's WORKDIR is always a layer, an empty
                        // tar when the directory is there (differential
                        // case workdir-existing): history and diff_ids
                        // match.
                        let empty = [0u8; 1024];
                        let layer = kiln_store::import_layer(
                            self.store.blobs(),
                            &empty[..],
                            "WORKDIR's empty layer",
                        )?;
                        return Ok(Some((layer, Indexed::Yes)));
                    }
                    let layer = self.mkdir_layer(&rel, state)?;
                    Ok(Some((layer, Indexed::Yes)))
                })
            }
            Op::Copy(copy) => {
                let step = CopyStep {
                    store: self.store,
                    graph: self.graph,
                    node,
                    copy,
                    stages: self.stages,
                    options: self.options,
                };
                let content = step.content(state)?;
                // --link: the layer does not depend on what it lands on.
                let parent_for_key = if copy.link { None } else { parent };
                let key = keys::copy_key(parent_for_key.as_ref(), copy, &content.content);
                record.key = key.hex();
                record.files = content.inputs;
                let hash_stats = Some(content.hash_stats);
                let mut prepared = content.prepared;
                self.cached_or(key, &record, hash_stats, state, |state| {
                    let prepared = match prepared.take() {
                        Some(prepared) => prepared,
                        None => step.prepare_remembered(state, &content.content)?,
                    };
                    let keep = self.keep_copy();
                    let last = self.last_layer();
                    let tree = state.tree(self.store)?;
                    let layer =
                        prepared
                            .selection
                            .write_layer(self.store, tree, keep, last.as_ref())?;
                    Ok(Some((layer, Indexed::Yes)))
                })
            }
        }
    }

    /// The cached result for `key`, or `compute`'s, then remembered. The
    /// key's lock is held while computing, so another kiln wanting the same
    /// step waits and then finds it cached.
    fn cached_or(
        &self,
        key: CacheKey,
        record: &StepRecord,
        hash_stats: Option<HashStats>,
        state: &mut StageFs,
        compute: impl FnOnce(&mut StageFs) -> Result<Option<(Layer, Indexed)>, BuildError>,
    ) -> Result<Done, BuildError> {
        let cache = self.options.cache;
        let forced = self.forced();
        if forced.is_none() {
            if let Some(done) = self.hit(key, hash_stats, state) {
                return Ok(done);
            }
        }
        let _lock = cache.lock(&key)?;
        if forced.is_none() {
            if let Some(done) = self.hit(key, hash_stats, state) {
                return Ok(done);
            }
        }
        let reason = match forced {
            Some(reason) => reason,
            None => explain(cache.record(&self.position).as_ref(), record),
        };
        let computed = compute(state)?;
        let layer = computed.map(|(layer, indexed)| {
            match indexed {
                Indexed::Yes => state.push_indexed(layer),
                Indexed::No => state.layers.push(layer),
            }
            layer
        });
        let entry = Entry {
            layer: layer.map(|l| l.digest),
            layer_size: layer.map_or(0, |l| l.size),
            created: self.options.created.to_owned(),
        };
        cache.put_step(&key, &entry)?;
        cache.put_record(&self.position, record)?;
        Ok(Done {
            key,
            layer,
            created: entry.created,
            cache: CacheOutcome::Miss(reason),
            hash_stats,
            reads: None,
        })
    }

    /// Why the step must run whatever the cache holds, if it must.
    fn forced(&self) -> Option<Miss> {
        if self.options.no_cache {
            return Some(Miss::NoCache);
        }
        let stage = self.graph.stages[self.node.stage].name.as_deref()?;
        self.options
            .no_cache_stages
            .iter()
            .any(|s| s == stage)
            .then(|| Miss::NoCacheFilter {
                stage: stage.to_owned(),
            })
    }

    /// A usable cache entry: known, and its layer still in the store;
    /// else one from `--cache-from`, its layer checked and stored.
    fn hit(
        &self,
        key: CacheKey,
        hash_stats: Option<HashStats>,
        state: &mut StageFs,
    ) -> Option<Done> {
        let entry = self
            .options
            .cache
            .step(&key)
            .or_else(|| self.import(&key))?;
        let layer = match &entry.layer {
            None => None,
            Some(digest) => {
                let digest = *digest;
                // Leased: GC keeps it for this build from now on (or has
                // just taken it, and the step runs again).
                if self.store.lease(&digest).is_err() {
                    return None;
                }
                Some(Layer {
                    digest,
                    size: entry.layer_size,
                    entries: 0,
                })
            }
        };
        if let Some(layer) = layer {
            state.layers.push(layer);
        }
        let created = match self.options.source_date_epoch {
            Some(_) => self.options.created.to_owned(),
            None => entry.created,
        };
        Some(Done {
            key,
            layer,
            created,
            cache: CacheOutcome::Hit,
            hash_stats,
            reads: None,
        })
    }

    /// Takes `key`'s entry from the first `--cache-from` directory that has
    /// it; a layer that does not match its digest is not taken.
    fn import(&self, key: &CacheKey) -> Option<Entry> {
        for imported in self.options.cache_from {
            let Some((entry, blob)) = imported.step(key) else {
                continue;
            };
            if let (Some(digest), Some(path)) = (entry.layer, blob) {
                let file = std::fs::File::open(&path).ok()?;
                if self.store.blobs().put_reader(file, Some(&digest)).is_err() {
                    continue;
                }
            }
            // Remembered here, so the next build needs no import.
            self.options.cache.put_step(key, &entry).ok()?;
            return Some(entry);
        }
        None
    }

    /// Whether the image is made of this step's stage (its layers are the
    /// image's), not only read by the build.
    fn in_image(&self) -> bool {
        self.graph.image_stages().contains(&self.node.stage)
    }

    /// How a COPY's layer is kept: as a snapshot only (its one copy, the
    /// tar given back from it when wanted) where the build reads it again
    /// through one (a stage the image is not made of: `COPY --from`,
    /// mounts; or a RUN later in the stage, whose lower dir it is); else a
    /// tar.
    fn keep_copy(&self) -> Keep {
        if !self.in_image() || self.run_follows() {
            Keep::Snapshot
        } else {
            Keep::Tar
        }
    }

    /// The layer this step's position had when it last missed (an edited
    /// context's COPY: the same files but one): the new snapshot links
    /// what the two share instead of writing it again.
    fn last_layer(&self) -> Option<kiln_store::Digest> {
        let cache = self.options.cache;
        let record = cache.record(&self.position)?;
        cache.step(&CacheKey::from_hex(&record.key)?)?.layer
    }

    /// Whether a RUN comes later in this stage: it will need this step's
    /// layer as a snapshot, which is best made while the layer is written.
    fn run_follows(&self) -> bool {
        self.graph
            .nodes
            .iter()
            .skip_while(|n| n.id != self.node.id)
            .skip(1)
            .take_while(|n| n.stage == self.node.stage)
            .any(|n| matches!(n.op, Op::Run(_)))
    }

    /// WORKDIR of a directory the stage lacks: a layer creating it, owned by
    /// the stage's USER as BuildKit makes it (root without one).
    fn mkdir_layer(&self, rel: &str, state: &mut StageFs) -> Result<Layer, BuildError> {
        let options = self.options;
        let user = &self.node.inputs.user;
        let owner = if user.is_empty() {
            None
        } else {
            Some(resolve_owner(
                self.store,
                &state.layers,
                user,
                self.node.line,
            )?)
        };
        let request = CopyRequest {
            root: options.context,
            root_name: "the build context",
            sources: &[],
            heredocs: &[],
            dest: &format!("/{rel}/"),
            owner,
            keep_source_owner: false,
            extract_archives: None,
            chmod: None,
            excludes: &[],
            parents: false,
            link: false,
            clamp_mtime: Some(options.source_date_epoch.unwrap_or(0)),
            stat_cache: options.stat_cache,
            ignore: None,
            line: self.node.line,
            instruction: "WORKDIR",
        };
        copy_layer(self.store, &request, state.tree(self.store)?)
    }
}

fn history_entry(entry: &History, created: &str) -> Value {
    let mut value = json!({"created": created, "created_by": entry.created_by});
    if let Some(comment) = &entry.comment {
        value["comment"] = comment.clone().into();
    }
    if entry.empty_layer {
        value["empty_layer"] = true.into();
    }
    value
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn schedule(dockerfile: &str) -> (BuildGraph, Schedule) {
        let parsed = kiln_dockerfile::parse(dockerfile).unwrap();
        let graph = kiln_graph::plan(&parsed, &kiln_graph::PlanOptions::default()).unwrap();
        let schedule = Schedule::new(&graph);
        (graph, schedule)
    }

    /// Starts every stage it can, as the build loop does with unlimited
    /// jobs, and returns the waves: the stages that may run side by side.
    fn waves(schedule: &mut Schedule) -> Vec<Vec<StageId>> {
        let mut done = BTreeSet::new();
        let mut waves = Vec::new();
        loop {
            let mut wave = Vec::new();
            while let Some(id) = schedule.next_ready(|id| done.contains(&id)) {
                wave.push(id);
            }
            if wave.is_empty() {
                return waves;
            }
            done.extend(wave.iter().copied());
            waves.push(wave);
        }
    }

    #[test]
    fn independent_stages_start_together_and_joins_wait_for_all() {
        let (_, mut schedule) = schedule(
            "FROM scratch AS a\nCOPY a /a\n\
             FROM scratch AS b\nCOPY b /b\n\
             FROM a AS c\nCOPY --from=b /b /b\n\
             FROM scratch AS unused\nCOPY u /u\n\
             FROM scratch\nRUN --mount=type=cache,target=/x,from=a true\nCOPY --from=c /a /a\n",
        );
        // The unused stage is pruned: it never starts.
        assert_eq!(waves(&mut schedule), vec![vec![0, 1], vec![2], vec![4]]);
        assert_eq!(schedule.needs(4), &[0, 2]);
        assert_eq!(schedule.needs(2), &[0, 1]);
    }

    #[test]
    fn a_cancelled_schedule_starts_nothing_more() {
        let (graph, mut schedule) = schedule("FROM scratch AS a\nCOPY a /a\nFROM a\nCOPY b /b\n");
        assert_eq!(
            graph.stages[1].uses.iter().copied().collect::<Vec<_>>(),
            vec![0]
        );
        assert_eq!(schedule.next_ready(|_| false), Some(0));
        // The second stage waits for the first...
        assert_eq!(schedule.next_ready(|_| false), None);
        schedule.cancel();
        // ...and, once cancelled, never starts even when it could.
        assert_eq!(schedule.next_ready(|_| true), None);
    }
}
