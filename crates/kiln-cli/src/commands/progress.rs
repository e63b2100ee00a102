//! Build progress on standard error, in four views: `plain` (BuildKit's
//! numbered lines: `#3 [build 2/6] COPY src/ ./src/`, the command's output,
//! `#3 DONE 0.12s` or `#3 CACHED`), `tty` (a live view: one line per running
//! step with a timer and the tail of its output, finished steps collapsing
//! to `DONE` or `CACHED`; indicatif draws it), `json` (one event per line,
//! schema in docs/progress.md) and `quiet`. All but quiet end with a summary:
//! time, steps run and cached, hit rate, bytes written.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use kiln_build::{CacheOutcome, StepEvent};
use kiln_graph::{BuildGraph, NodeId};

/// How a build shows its progress.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressMode {
    /// tty on a terminal, plain otherwise
    #[default]
    Auto,
    Tty,
    Plain,
    Json,
    Quiet,
}

impl ProgressMode {
    /// `--progress`, else `KILN_PROGRESS`, else auto; auto resolved
    /// against standard error.
    pub fn resolve(flag: Option<ProgressMode>) -> ProgressMode {
        let chosen = flag
            .or_else(|| {
                let value = std::env::var("KILN_PROGRESS").ok()?;
                clap::ValueEnum::from_str(&value, true).ok()
            })
            .unwrap_or_default();
        match chosen {
            ProgressMode::Auto if std::io::stderr().is_terminal() => ProgressMode::Tty,
            ProgressMode::Auto => ProgressMode::Plain,
            other => other,
        }
    }
}

/// Totals for the summary line.
#[derive(Default)]
struct Totals {
    ran: usize,
    cached: usize,
    bytes_written: u64,
    /// Steps started and not finished: at the summary, the ones that
    /// failed or were cut short (they ran, so they are no cache hits).
    unfinished: std::collections::BTreeSet<NodeId>,
}

/// The progress of one build.
pub struct Progress {
    mode: ProgressMode,
    /// Per node: `[stage i/n] INSTRUCTION`, as BuildKit shows them.
    titles: Vec<String>,
    started: Instant,
    totals: Mutex<Totals>,
    /// (title, reason) of every step that ran, for `--explain`.
    misses: Mutex<Vec<(String, String)>>,
    live: Option<LiveView>,
}

/// The tty view: a bar per running step.
struct LiveView {
    bars: MultiProgress,
    /// Each running step's line, and the line under it with the last
    /// output it printed.
    running: Mutex<HashMap<NodeId, (ProgressBar, Option<ProgressBar>)>>,
}

impl Progress {
    pub fn new(graph: &BuildGraph, mode: ProgressMode) -> Progress {
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
        let live = (mode == ProgressMode::Tty).then(|| LiveView {
            bars: MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10)),
            running: Mutex::new(HashMap::new()),
        });
        Progress {
            mode,
            titles,
            started: Instant::now(),
            totals: Mutex::new(Totals::default()),
            misses: Mutex::new(Vec::new()),
            live,
        }
    }

    fn title(&self, node: NodeId) -> &str {
        self.titles.get(node).map_or("", String::as_str)
    }

    pub fn event(&self, event: StepEvent<'_>) {
        if let StepEvent::Started { node } = &event {
            lock(&self.totals).unfinished.insert(node.id);
        }
        if let StepEvent::Finished {
            node, cache, layer, ..
        } = &event
        {
            let mut totals = lock(&self.totals);
            totals.unfinished.remove(&node.id);
            match cache {
                CacheOutcome::Hit => totals.cached += 1,
                CacheOutcome::Miss(reason) => {
                    totals.ran += 1;
                    totals.bytes_written += layer.map_or(0, |l| l.size);
                    let title = self.title(node.id).to_owned();
                    lock(&self.misses).push((title, reason.to_string()));
                }
                CacheOutcome::NotApplicable => {}
            }
        }
        match self.mode {
            ProgressMode::Plain | ProgressMode::Auto => self.plain(&event),
            ProgressMode::Json => self.json(&event),
            ProgressMode::Tty => self.tty(&event),
            ProgressMode::Quiet => {}
        }
    }

    fn plain(&self, event: &StepEvent<'_>) {
        let mut out = String::new();
        match event {
            StepEvent::Started { node } => {
                out.push_str(&format!("#{} {}\n", node.id + 1, self.title(node.id)));
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
                if let Some(stats) = hash_stats.filter(|s| s.files > 0) {
                    out.push_str(&format!(
                        "#{number} {} files hashed, {} unchanged, {} read in {:.2}s\n",
                        stats.files,
                        stats.unchanged,
                        super::images::human_size(stats.bytes_read),
                        stats.elapsed.as_secs_f64()
                    ));
                }
                if *cache == CacheOutcome::Hit {
                    out.push_str(&format!("#{number} CACHED\n"));
                } else {
                    out.push_str(&format!("#{number} DONE {:.2}s\n", elapsed.as_secs_f64()));
                }
            }
        }
        write_stderr(&out);
    }

    fn json(&self, event: &StepEvent<'_>) {
        let at = self.started.elapsed().as_secs_f64();
        let value = match event {
            StepEvent::Started { node } => serde_json::json!({
                "event": "started", "id": node.id + 1, "time": at,
                "step": self.title(node.id), "line": node.line,
            }),
            StepEvent::Output { node, line } => serde_json::json!({
                "event": "output", "id": node.id + 1, "time": at, "text": line,
            }),
            StepEvent::Finished {
                node,
                elapsed,
                layer,
                cache,
                hash_stats,
            } => {
                let mut value = serde_json::json!({
                    "event": if *cache == CacheOutcome::Hit { "cached" } else { "done" },
                    "id": node.id + 1,
                    "time": at,
                    "duration": elapsed.as_secs_f64(),
                    "layer_bytes": layer.map_or(0, |l| l.size),
                });
                if let CacheOutcome::Miss(reason) = cache {
                    value["reason"] = reason.to_string().into();
                    value["reason_kind"] = reason.kind().into();
                }
                if let Some(stats) = hash_stats {
                    value["files_hashed"] = stats.files.into();
                    value["files_unchanged"] = stats.unchanged.into();
                    value["bytes_read"] = stats.bytes_read.into();
                }
                value
            }
        };
        write_stderr(&format!("{value}\n"));
    }

    fn tty(&self, event: &StepEvent<'_>) {
        let Some(live) = &self.live else { return };
        let mut running = lock(&live.running);
        match event {
            StepEvent::Started { node } => {
                let bar = live.bars.add(ProgressBar::new_spinner());
                bar.set_style(style("{prefix:.bold} {wide_msg} {elapsed:>4}"));
                bar.set_prefix(format!("#{}", node.id + 1));
                bar.set_message(self.title(node.id).to_owned());
                bar.enable_steady_tick(Duration::from_millis(100));
                running.insert(node.id, (bar, None));
            }
            StepEvent::Output { node, line } => {
                if let Some((bar, tail)) = running.get_mut(&node.id) {
                    // The last line the step printed, under it.
                    let tail = tail.get_or_insert_with(|| {
                        let tail = live.bars.insert_after(bar, ProgressBar::new_spinner());
                        tail.set_style(style("   {wide_msg:.dim}"));
                        tail
                    });
                    tail.set_message(line.to_string());
                }
            }
            StepEvent::Finished {
                node,
                elapsed,
                cache,
                ..
            } => {
                if let Some((bar, tail)) = running.remove(&node.id) {
                    if let Some(tail) = tail {
                        tail.finish_and_clear();
                    }
                    let state = if *cache == CacheOutcome::Hit {
                        "CACHED".to_owned()
                    } else {
                        format!("DONE {:.1}s", elapsed.as_secs_f64())
                    };
                    // The state is part of the template, so a narrow
                    // terminal cuts the title, never the state.
                    bar.set_style(style(&format!("{{prefix:.bold}} {{wide_msg}} {state}")));
                    bar.finish();
                }
            }
        }
    }

    /// The closing summary (not in quiet mode), after the build ended,
    /// well or not.
    pub fn summary(&self, outcome: &str) {
        if let Some(live) = &self.live {
            // Steps cut short by a failure stay on screen as they were.
            for (_, (bar, tail)) in lock(&live.running).drain() {
                if let Some(tail) = tail {
                    tail.finish_and_clear();
                }
                bar.abandon();
            }
        }
        let totals = lock(&self.totals);
        let failed = totals.unfinished.len();
        let ran = totals.ran + failed;
        let steps = ran + totals.cached;
        let rate = if steps == 0 {
            0.0
        } else {
            100.0 * totals.cached as f64 / steps as f64
        };
        let elapsed = self.started.elapsed().as_secs_f64();
        match self.mode {
            ProgressMode::Quiet => {}
            ProgressMode::Json => write_stderr(&format!(
                "{}\n",
                serde_json::json!({
                    "event": "summary", "outcome": outcome, "time": elapsed,
                    "steps_run": ran, "steps_failed": failed, "steps_cached": totals.cached,
                    "cache_hit_rate": rate / 100.0, "bytes_written": totals.bytes_written,
                })
            )),
            _ => write_stderr(&format!(
                "{outcome} in {elapsed:.2}s: {ran} steps run{}, {} cached ({rate:.0}% hit rate), {} written\n",
                if failed > 0 {
                    format!(" ({failed} failed)")
                } else {
                    String::new()
                },
                totals.cached,
                super::images::human_size(totals.bytes_written)
            )),
        }
    }

    /// One line per step that ran, saying why (`--explain`).
    pub fn explain(&self) {
        let misses = lock(&self.misses);
        let mut out = String::new();
        if misses.is_empty() {
            out.push_str("every step came from the cache\n");
        }
        for (title, reason) in misses.iter() {
            out.push_str(&format!("{title}: {reason}\n"));
        }
        write_stderr(&out);
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_spinner())
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Progress is best effort: a closed stderr must not fail the build.
fn write_stderr(text: &str) {
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}
