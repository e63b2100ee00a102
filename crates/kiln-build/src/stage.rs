//! A stage's state while it is built: its layers, the index of the paths
//! they hold (read from the layers only when a step that ran needs it, so a
//! rebuild from cache reads no layer), its history and config; and the
//! image config document made from the target stage.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use kiln_cache::CacheKey;
use kiln_graph::{BuildGraph, ImageConfig, StageId};
use kiln_store::{Layer, Store};
use serde_json::{json, Value};

use crate::error::BuildError;
use crate::executor::BuildOptions;
use crate::rootfs::Tree;

/// The stages built so far, with the key of each one's last step.
pub type Stages = BTreeMap<StageId, (StageFs, Option<CacheKey>)>;

/// The filesystem and history of a stage so far.
#[derive(Clone, Default)]
pub struct StageFs {
    pub layers: Vec<Layer>,
    /// The paths of `layers[..indexed]`.
    tree: Tree,
    indexed: usize,
    /// The base image's history entries, then this build's.
    pub history: Vec<Value>,
    pub config: Arc<ImageConfig>,
    pub base_config: Value,
}

impl StageFs {
    pub fn new(
        layers: Vec<Layer>,
        history: Vec<Value>,
        config: ImageConfig,
        base: Value,
    ) -> StageFs {
        StageFs {
            layers,
            tree: Tree::default(),
            indexed: 0,
            history,
            config: Arc::new(config),
            base_config: base,
        }
    }

    /// The index of every path in the stage, brought up to date: a view
    /// over the layers' snapshots when they all have one (what was
    /// recorded for earlier layers is in their snapshots too), else the
    /// new layers' tars read on top.
    pub fn tree(&mut self, store: &Store) -> Result<&mut Tree, BuildError> {
        if self.indexed == self.layers.len() {
            return Ok(&mut self.tree);
        }
        match Tree::over_snapshots(store, &self.layers)? {
            Some(view) => self.tree = view,
            None => {
                for layer in &self.layers[self.indexed..] {
                    self.tree.apply(store, layer)?;
                }
            }
        }
        self.indexed = self.layers.len();
        Ok(&mut self.tree)
    }

    /// Adds a layer whose paths the tree already has (the step that wrote
    /// it recorded them).
    pub fn push_indexed(&mut self, layer: Layer) {
        let up_to_date = self.indexed == self.layers.len();
        self.layers.push(layer);
        if up_to_date {
            self.indexed = self.layers.len();
        }
    }
}

/// The image config document of the target stage.
pub fn image_config_document(
    graph: &BuildGraph,
    stage: &StageFs,
    options: &BuildOptions<'_>,
) -> Value {
    let platform = &graph.stages[graph.target].platform;
    let mut config = (*stage.config).clone();
    for (key, value) in options.labels {
        config.labels.insert(key.clone(), value.clone());
    }
    // As BuildKit does: the image is as old as its newest step, so a
    // rebuild from cache gives the very same image.
    let created = stage
        .history
        .iter()
        .filter_map(|h| h["created"].as_str())
        .max()
        .unwrap_or(options.created);
    let mut doc = json!({
        "created": created,
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

/// A scratch directory under the store's `kiln/tmp`, removed on drop. Its
/// name carries this process's owner id, so GC leaves it alone while the
/// build lives and the next kiln removes it if the build is killed.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(store: &Store) -> Result<TempDir, BuildError> {
        Ok(TempDir(store.scratch_dir("unpack")?))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
