//! Runs a plan, node by node in Dockerfile order (each stage only uses
//! earlier ones): FROM loads the base image's layers and config, COPY/ADD
//! write layers, WORKDIR creates its directory, metadata steps change only
//! the config; the target stage becomes an image in the store. RUN needs
//! the runtime and is refused with its line until that exists.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kiln_context::{ContentDigest, HashStats, StatCache};

use kiln_graph::{Base, BuildGraph, CopyOp, History, ImageConfig, Node, Op, SourceRef, StageId};
use kiln_store::{write_image, Digest, ImageRecord, Layer, Store};
use serde_json::{json, Value};

use crate::copy::{copy_layer, copy_layer_from, CopyOutcome, CopyRequest};
use crate::error::BuildError;
use crate::remote;
use crate::rootfs::{self, Tree};

/// What a build needs besides the plan.
pub struct BuildOptions<'a> {
    /// The build context directory.
    pub context: &'a Path,
    /// RFC 3339 time written into `created` fields.
    pub created: &'a str,
    /// SOURCE_DATE_EPOCH: clamps file times in new layers.
    pub source_date_epoch: Option<u64>,
    /// `--label`: added to the image's labels (over the Dockerfile's).
    pub labels: &'a BTreeMap<String, String>,
    /// Digests of context files hashed by earlier builds.
    pub stat_cache: &'a StatCache,
    /// Told when each step starts and ends.
    pub progress: &'a dyn Fn(StepEvent<'_>),
}

/// What the executor reports as it goes.
pub enum StepEvent<'a> {
    Started {
        node: &'a Node,
    },
    Finished {
        node: &'a Node,
        elapsed: Duration,
        /// The layer the step made, if any.
        layer: Option<Layer>,
        /// For COPY/ADD: how many files were hashed and how many came
        /// from the stat cache, and the digest of what was copied.
        hash_stats: Option<HashStats>,
        content: Option<ContentDigest>,
    },
}

/// A base image as stored: its layers and its config document.
#[derive(Clone, Debug)]
pub struct BaseImage {
    pub layers: Vec<Layer>,
    pub config: Value,
}

impl BaseImage {
    /// The runtime config part, for planning.
    pub fn image_config(&self) -> ImageConfig {
        serde_json::from_value(self.config["config"].clone()).unwrap_or_default()
    }
}

/// Loads `reference` from the store.
pub fn load_base(store: &Store, reference: &str) -> Result<BaseImage, BuildError> {
    let fail = |message: String| BuildError::BaseImage {
        reference: reference.to_owned(),
        message,
    };
    let descriptor = store.resolve(reference).map_err(|_| {
        fail("not in the store (pulling from registries is not implemented yet; use kiln import or kiln load)".into())
    })?;
    let manifest_digest: Digest = descriptor.digest().to_string().parse()?;
    let manifest: Value = serde_json::from_slice(&store.blobs().read(&manifest_digest)?)
        .map_err(|e| fail(format!("bad manifest: {e}")))?;
    let config_digest: Digest = manifest["config"]["digest"]
        .as_str()
        .ok_or_else(|| fail("manifest without config".into()))?
        .parse()?;
    let config: Value = serde_json::from_slice(&store.blobs().read(&config_digest)?)
        .map_err(|e| fail(format!("bad config: {e}")))?;
    let diff_ids: Vec<&str> = config["rootfs"]["diff_ids"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let mut layers = Vec::new();
    for (n, layer) in manifest["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let media_type = layer["mediaType"].as_str().unwrap_or_default();
        let digest: Digest = layer["digest"].as_str().unwrap_or_default().parse()?;
        if media_type.ends_with("tar") {
            layers.push(Layer {
                digest,
                size: layer["size"].as_u64().unwrap_or(0),
                entries: 0,
            });
            continue;
        }
        let compressed = ["tar+gzip", "tar.gzip", "tar+zstd"];
        if !compressed.iter().any(|suffix| media_type.ends_with(suffix)) {
            return Err(fail(format!(
                "layers of type {media_type} are not supported yet"
            )));
        }
        // The store works on plain tars (their digest is the diffID): a
        // compressed layer is expanded once and checked against the config.
        let diff_id: Digest = diff_ids
            .get(n)
            .ok_or_else(|| fail(format!("config has no diff_id for layer {n}")))?
            .parse()?;
        if !store.blobs().contains(&diff_id) {
            let plain = kiln_store::open_layer(store.blobs(), &digest)?;
            store.blobs().put_reader(plain, Some(&diff_id))?;
        }
        let size = std::fs::metadata(store.blobs().path(&diff_id)).map_or(0, |m| m.len());
        layers.push(Layer {
            digest: diff_id,
            size,
            entries: 0,
        });
    }
    Ok(BaseImage { layers, config })
}

/// The filesystem and history of a stage so far.
#[derive(Clone, Default)]
struct StageFs {
    layers: Vec<Layer>,
    tree: Tree,
    /// The base image's history entries, then this build's.
    history: Vec<Value>,
    config: std::sync::Arc<ImageConfig>,
    base_config: Value,
}

/// Runs the needed stages of `graph`; returns the target stage's image.
pub fn build(
    store: &Store,
    graph: &BuildGraph,
    options: &BuildOptions<'_>,
) -> Result<ImageRecord, BuildError> {
    let mut stages: BTreeMap<StageId, StageFs> = BTreeMap::new();
    let mut current: Option<(StageId, StageFs)> = None;
    for node in &graph.nodes {
        if current.as_ref().is_some_and(|(id, _)| *id != node.stage) {
            if let Some((id, fs)) = current.take() {
                stages.insert(id, fs);
            }
        }
        (options.progress)(StepEvent::Started { node });
        let started = Instant::now();
        let state = match &node.op {
            Op::From { base, .. } => {
                let fs = start_stage(store, base, &stages)?;
                current = Some((node.stage, fs));
                (options.progress)(StepEvent::Finished {
                    node,
                    elapsed: started.elapsed(),
                    layer: None,
                    hash_stats: None,
                    content: None,
                });
                continue;
            }
            _ => {
                &mut current
                    .as_mut()
                    .ok_or_else(|| BuildError::step(node.line, "step outside a stage"))?
                    .1
            }
        };
        let made = run_node(store, graph, node, state, &stages, options)?;
        state.config = node.config.clone();
        (options.progress)(StepEvent::Finished {
            node,
            elapsed: started.elapsed(),
            layer: made.layer,
            hash_stats: made.copied.as_ref().map(|c| c.hash_stats),
            content: made.copied.map(|c| c.content),
        });
    }
    if let Some((id, fs)) = current.take() {
        stages.insert(id, fs);
    }
    let target = stages
        .remove(&graph.target)
        .ok_or_else(|| BuildError::step(0, "the target stage has no steps"))?;
    let config = image_config_document(graph, &target, options);
    let bytes = serde_json::to_vec(&config)
        .map_err(|e| BuildError::step(0, format!("image config: {e}")))?;
    Ok(write_image(store, &bytes, &target.layers)?)
}

fn start_stage(
    store: &Store,
    base: &Base,
    stages: &BTreeMap<StageId, StageFs>,
) -> Result<StageFs, BuildError> {
    match base {
        Base::Scratch => Ok(StageFs::default()),
        Base::Stage(id) => stages
            .get(id)
            .cloned()
            .ok_or_else(|| BuildError::step(0, format!("stage {id} has not been built"))),
        Base::Image(reference) => {
            let image = load_base(store, reference)?;
            Ok(StageFs {
                tree: Tree::of_layers(store, &image.layers)?,
                layers: image.layers.clone(),
                history: image.config["history"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default(),
                config: std::sync::Arc::new(image.image_config()),
                base_config: image.config,
            })
        }
    }
}

fn run_node(
    store: &Store,
    graph: &BuildGraph,
    node: &Node,
    state: &mut StageFs,
    stages: &BTreeMap<StageId, StageFs>,
    options: &BuildOptions<'_>,
) -> Result<StepMade, BuildError> {
    let mut history = node.history.clone();
    let mut made = StepMade::default();
    match &node.op {
        Op::From { .. } | Op::Config { .. } => {}
        Op::Run(_) => {
            return Err(BuildError::Step {
                line: node.line,
                message: format!("{}: RUN is not supported yet", node.display),
                hint: Some("kiln's container runtime lands with the runtime issue; until then build images from FROM, COPY, ADD and metadata instructions".into()),
            })
        }
        Op::Workdir { path } => {
            let rel = rootfs::normalize(path);
            if rel.is_empty() || state.tree.get(&rel).is_some_and(|m| m.is_dir) {
                if let Some(h) = history.as_mut() {
                    h.empty_layer = true;
                }
            } else {
                let layer = mkdir_layer(store, &rel, options, &mut state.tree)?;
                state.layers.push(layer);
                made.layer = Some(layer);
            }
        }
        Op::Copy(copy) => {
            let outcome = run_copy(store, graph, node, copy, state, stages, options)?;
            state.layers.push(outcome.layer);
            made.layer = Some(outcome.layer);
            made.copied = Some(outcome);
        }
    }
    if let Some(entry) = history {
        state.history.push(history_entry(&entry, options.created));
    }
    Ok(made)
}

/// What one step produced.
#[derive(Default)]
struct StepMade {
    layer: Option<Layer>,
    copied: Option<CopyOutcome>,
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

/// WORKDIR of a directory the stage lacks: a layer creating it.
fn mkdir_layer(
    store: &Store,
    rel: &str,
    options: &BuildOptions<'_>,
    tree: &mut Tree,
) -> Result<Layer, BuildError> {
    let request = CopyRequest {
        root: options.context,
        root_name: "the build context",
        sources: &[],
        heredocs: &[],
        dest: &format!("/{rel}/"),
        owner: None,
        keep_source_owner: false,
        extract_archives: false,
        chmod: None,
        excludes: &[],
        parents: false,
        link: false,
        clamp_mtime: Some(options.source_date_epoch.unwrap_or(0)),
        stat_cache: options.stat_cache,
        line: 0,
        instruction: "WORKDIR",
    };
    Ok(copy_layer(store, &request, tree)?.layer)
}

fn run_copy(
    store: &Store,
    graph: &BuildGraph,
    node: &Node,
    copy: &CopyOp,
    state: &mut StageFs,
    stages: &BTreeMap<StageId, StageFs>,
    options: &BuildOptions<'_>,
) -> Result<CopyOutcome, BuildError> {
    let instruction = if copy.add { "ADD" } else { "COPY" };
    let (remote, local): (Vec<&String>, Vec<&String>) = copy
        .sources
        .iter()
        .partition(|s| copy.add && copy.from.is_none() && remote::remote_kind(s).is_some());
    if copy.checksum.is_some() && (!local.is_empty() || remote.is_empty()) {
        return Err(BuildError::step(
            node.line,
            "ADD --checksum applies only to http(s) and git sources",
        ));
    }
    let staging = if remote.is_empty() {
        None
    } else {
        Some(fetch_remote_sources(store, copy, &remote, node.line)?)
    };
    let owner = match &copy.chown {
        None => None,
        Some(spec) => Some(resolve_owner(store, &state.layers, spec, node.line)?),
    };
    // Sources from another stage or image are read from its layers,
    // unpacked into a temporary directory inside the store.
    let unpacked: Option<(TempDir, String)> = match &copy.from {
        None => None,
        Some(SourceRef::Stage(id)) => {
            let stage = stages.get(id).ok_or_else(|| {
                BuildError::step(node.line, format!("stage {id} has not been built"))
            })?;
            let dir = TempDir::new(store)?;
            rootfs::unpack(store, &stage.layers, &dir.0)?;
            Some((dir, format!("stage {}", graph.stages[*id].label())))
        }
        Some(SourceRef::Image(reference)) => {
            let image = load_base(store, reference)?;
            let dir = TempDir::new(store)?;
            rootfs::unpack(store, &image.layers, &dir.0)?;
            Some((dir, format!("image {reference}")))
        }
    };
    let (root, root_name) = match &unpacked {
        Some((dir, name)) => (dir.0.as_path(), name.as_str()),
        None => (options.context, "the build context"),
    };
    // Only the context keeps its paths and inodes from build to build.
    let fresh_cache = StatCache::in_memory();
    let stat_cache = if unpacked.is_some() {
        &fresh_cache
    } else {
        options.stat_cache
    };
    let local: Vec<String> = local.into_iter().cloned().collect();
    // Several sources in all make the destination a directory, whichever
    // root each is read from.
    let dest = if copy.sources.len() + copy.heredocs.len() > 1 && !copy.dest.ends_with('/') {
        format!("{}/", copy.dest)
    } else {
        copy.dest.clone()
    };
    let base = CopyRequest {
        root,
        root_name,
        sources: &local,
        heredocs: &copy.heredocs,
        dest: &dest,
        owner,
        keep_source_owner: copy.from.is_some(),
        extract_archives: copy.add && copy.unpack != Some(false),
        chmod: copy.chmod.as_deref(),
        excludes: &copy.excludes,
        parents: copy.parents,
        link: copy.link,
        clamp_mtime: options.source_date_epoch,
        stat_cache,
        line: node.line,
        instruction,
    };
    let Some((staging_dir, fetched)) = &staging else {
        return copy_layer(store, &base, &mut state.tree);
    };
    // Remote files are never extracted (Docker's rule), and their owner
    // is root unless --chown says otherwise.
    let fetched_request = CopyRequest {
        root: &staging_dir.0,
        root_name: "the downloaded sources",
        sources: fetched,
        heredocs: &[],
        extract_archives: false,
        keep_source_owner: false,
        excludes: &[],
        parents: false,
        stat_cache: &fresh_cache,
        ..base
    };
    if local.is_empty() && copy.heredocs.is_empty() {
        return copy_layer(store, &fetched_request, &mut state.tree);
    }
    copy_layer_from(store, &[base, fetched_request], &mut state.tree)
}

/// Fetches every remote ADD source into one scratch directory; returns it
/// with the fetched paths relative to it.
fn fetch_remote_sources(
    store: &Store,
    copy: &CopyOp,
    sources: &[&String],
    line: u32,
) -> Result<(TempDir, Vec<String>), BuildError> {
    let staging = TempDir::new(store)?;
    let mut fetched = Vec::new();
    for (slot, source) in sources.iter().enumerate() {
        let path = match remote::remote_kind(source) {
            Some(remote::RemoteKind::Git) => {
                if copy.checksum.is_some() {
                    return Err(BuildError::step(
                        line,
                        format!("ADD {source}: --checksum is not supported for git sources yet"),
                    ));
                }
                remote::fetch_git(source, copy.keep_git_dir, &staging.0, slot, line)?
            }
            _ => remote::fetch_url(source, copy.checksum.as_deref(), &staging.0, slot, line)?,
        };
        fetched.push(path);
    }
    Ok((staging, fetched))
}

/// `--chown=user[:group]`: numbers as they are, names looked up in the
/// stage's /etc/passwd and /etc/group.
fn resolve_owner(
    store: &Store,
    layers: &[Layer],
    spec: &str,
    line: u32,
) -> Result<(u64, u64), BuildError> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let lookup = |file: &str, name: &str, field: usize| -> Result<Option<(u64, u64)>, BuildError> {
        let Some(content) = rootfs::read_file(store, layers, file)? else {
            return Ok(None);
        };
        let text = String::from_utf8_lossy(&content);
        Ok(text.lines().find_map(|l| {
            let cols: Vec<&str> = l.split(':').collect();
            if cols.first() != Some(&name) {
                return None;
            }
            let id = cols.get(2)?.parse().ok()?;
            let second = cols.get(field).and_then(|g| g.parse().ok()).unwrap_or(id);
            Some((id, second))
        }))
    };
    let (uid, default_gid) = match user.parse::<u64>() {
        Ok(uid) => (uid, uid),
        Err(_) => lookup("etc/passwd", user, 3)?.ok_or_else(|| {
            BuildError::step(
                line,
                format!("--chown: no user {user:?} in the image's /etc/passwd"),
            )
        })?,
    };
    let gid = match group {
        None => default_gid,
        Some(group) => match group.parse::<u64>() {
            Ok(gid) => gid,
            Err(_) => lookup("etc/group", group, 2)?
                .map(|(gid, _)| gid)
                .ok_or_else(|| {
                    BuildError::step(
                        line,
                        format!("--chown: no group {group:?} in the image's /etc/group"),
                    )
                })?,
        },
    };
    Ok((uid, gid))
}

/// The image config document of the target stage.
fn image_config_document(graph: &BuildGraph, stage: &StageFs, options: &BuildOptions<'_>) -> Value {
    let platform = &graph.stages[graph.target].platform;
    let mut config = (*stage.config).clone();
    for (key, value) in options.labels {
        config.labels.insert(key.clone(), value.clone());
    }
    let mut doc = json!({
        "created": options.created,
        "architecture": platform.architecture,
        "os": platform.os,
        "config": config,
        "rootfs": {
            "type": "layers",
            "diff_ids": stage.layers.iter().map(|l| l.digest.to_string()).collect::<Vec<_>>(),
        },
        "history": stage.history,
    });
    if let Some(variant) = &platform.variant {
        doc["variant"] = variant.clone().into();
    }
    if let Some(author) = &graph.stages[graph.target].image.author {
        doc["author"] = author.clone().into();
    } else if let Some(author) = stage.base_config.get("author") {
        doc["author"] = author.clone();
    }
    doc
}

/// A scratch directory under the store's `kiln/tmp`, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(store: &Store) -> Result<TempDir, BuildError> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = store.root().join("kiln/tmp").join(format!(
            "unpack-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).map_err(|e| BuildError::io(&dir, e))?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Unpacks the image whose manifest is `manifest` into `dir` (for
/// `--output type=local`): its layers applied in order, whiteouts honoured.
pub fn unpack_image(store: &Store, manifest: &Digest, dir: &Path) -> Result<(), BuildError> {
    let manifest: Value = serde_json::from_slice(&store.blobs().read(manifest)?)
        .map_err(|e| BuildError::step(0, format!("bad manifest: {e}")))?;
    let mut layers = Vec::new();
    for layer in manifest["layers"].as_array().into_iter().flatten() {
        layers.push(Layer {
            digest: layer["digest"].as_str().unwrap_or_default().parse()?,
            size: layer["size"].as_u64().unwrap_or(0),
            entries: 0,
        });
    }
    std::fs::create_dir_all(dir).map_err(|e| BuildError::io(dir, e))?;
    rootfs::unpack(store, &layers, dir)
}
