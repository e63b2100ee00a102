//! Build progress on standard error, in BuildKit's plain style: a numbered
//! line when a step starts (`#3 [build 2/6] COPY src/ ./src/`), what it did,
//! and `#3 DONE 0.12s` when it ends. The live terminal view and JSON events
//! come with the progress issue.

use std::io::Write;
use std::sync::Mutex;

use kiln_build::{CacheOutcome, StepEvent};
use kiln_graph::{BuildGraph, NodeId};

/// How much a build says while it runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressMode {
    /// plain for now (the live view comes later)
    #[default]
    Auto,
    Plain,
    Quiet,
}

/// Numbers and labels the steps of one build.
pub struct PlainProgress {
    /// Per node: its position within its stage, and the stage's label and
    /// size, as BuildKit shows them (`[build 2/6]`).
    titles: Vec<String>,
    quiet: bool,
    /// (title, reason) of every step that ran, for `--explain`.
    misses: Mutex<Vec<(String, String)>>,
}

impl PlainProgress {
    pub fn new(graph: &BuildGraph, mode: ProgressMode) -> PlainProgress {
        let mut titles = vec![String::new(); graph.nodes.len()];
        for (stage_id, stage) in graph.stages.iter().enumerate() {
            let nodes: Vec<NodeId> = graph
                .nodes
                .iter()
                .filter(|n| n.stage == stage_id)
                .map(|n| n.id)
                .collect();
            for (position, id) in nodes.iter().enumerate() {
                titles[*id] = format!(
                    "[{} {}/{}] {}",
                    stage.label(),
                    position + 1,
                    nodes.len(),
                    graph.nodes[*id].display
                );
            }
        }
        PlainProgress {
            titles,
            quiet: mode == ProgressMode::Quiet,
            misses: Mutex::new(Vec::new()),
        }
    }

    /// One line per step that ran, saying why (`--explain`).
    pub fn explain(&self) {
        let misses = self.misses.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        if misses.is_empty() {
            out.push_str("every step came from the cache\n");
        }
        for (title, reason) in misses.iter() {
            out.push_str(&format!("{title}: {reason}\n"));
        }
        let _ = std::io::stderr().lock().write_all(out.as_bytes());
    }

    pub fn event(&self, event: StepEvent<'_>) {
        let mut out = String::new();
        match event {
            StepEvent::Started { node } => {
                let title = self.titles.get(node.id).map_or("", String::as_str);
                out.push_str(&format!("#{} {title}\n", node.id + 1));
            }
            StepEvent::Output { node, line } => {
                out.push_str(&format!("#{} {line}\n", node.id + 1));
            }
            StepEvent::Finished {
                node,
                elapsed,
                hash_stats,
                cache,
                ..
            } => {
                let number = node.id + 1;
                if let CacheOutcome::Miss(reason) = &cache {
                    let title = self.titles.get(node.id).cloned().unwrap_or_default();
                    self.misses
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((title, reason.clone()));
                }
                if let Some(stats) = hash_stats.filter(|s| s.files > 0) {
                    out.push_str(&format!(
                        "#{number} {} files hashed, {} unchanged, {} read in {:.2}s\n",
                        stats.files,
                        stats.unchanged,
                        super::images::human_size(stats.bytes_read),
                        stats.elapsed.as_secs_f64()
                    ));
                }
                if cache == CacheOutcome::Hit {
                    out.push_str(&format!("#{number} CACHED\n"));
                } else {
                    out.push_str(&format!("#{number} DONE {:.2}s\n", elapsed.as_secs_f64()));
                }
            }
        }
        if self.quiet {
            return;
        }
        // Progress is best effort: a closed stderr must not fail the build.
        let _ = std::io::stderr().lock().write_all(out.as_bytes());
    }
}
