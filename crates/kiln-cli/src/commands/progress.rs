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
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use kiln_engine::{BuildEvent, EventKind, StepFinished, Summary};

use crate::output::report;

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

/// The progress of one build, drawn from its events.
pub struct Progress {
    mode: ProgressMode,
    /// Per step id: its title, from its `started` event.
    titles: Mutex<HashMap<usize, String>>,
    /// (title, reason) of every step that ran, for `--explain`.
    misses: Mutex<Vec<(String, String)>>,
    live: Option<LiveView>,
}

/// The tty view: a bar per running step.
struct LiveView {
    bars: MultiProgress,
    /// Each running step's line, and the line under it with the last
    /// output it printed.
    running: Mutex<HashMap<usize, (ProgressBar, Option<ProgressBar>)>>,
}

impl Progress {
    pub fn new(mode: ProgressMode) -> Progress {
        let live = (mode == ProgressMode::Tty).then(|| LiveView {
            bars: MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10)),
            running: Mutex::new(HashMap::new()),
        });
        Progress {
            mode,
            titles: Mutex::new(HashMap::new()),
            misses: Mutex::new(Vec::new()),
            live,
        }
    }

    fn title(&self, id: usize) -> String {
        lock(&self.titles).get(&id).cloned().unwrap_or_default()
    }

    pub fn event(&self, event: &BuildEvent) {
        match &event.kind {
            EventKind::Started { id, step, .. } => {
                lock(&self.titles).insert(*id, step.clone());
            }
            EventKind::Done(StepFinished {
                id,
                reason: Some(reason),
                ..
            }) => {
                let title = self.title(*id);
                lock(&self.misses).push((title, reason.clone()));
            }
            // Warnings are text in every view, quiet's too: they are
            // about the Dockerfile, not the progress.
            EventKind::Warning {
                message,
                file,
                line,
            } => {
                match file {
                    Some(file) => report!("{file}:{line}: warning: {message}"),
                    None => report!("warning: {message}"),
                }
                return;
            }
            _ => {}
        }
        match self.mode {
            ProgressMode::Plain | ProgressMode::Auto => self.plain(&event.kind, event.time),
            ProgressMode::Json => write_stderr(&format!("{}\n", event.to_json())),
            ProgressMode::Tty => self.tty(&event.kind, event.time),
            ProgressMode::Quiet => {}
        }
    }

    fn plain(&self, event: &EventKind, time: f64) {
        let mut out = String::new();
        match event {
            EventKind::Started { id, step, .. } => out.push_str(&format!("#{id} {step}\n")),
            EventKind::Output { id, text } => out.push_str(&format!("#{id} {text}\n")),
            EventKind::Done(step) | EventKind::Cached(step) => {
                let id = step.id;
                if let Some(hashed) = step.hashed.filter(|h| h.files_hashed > 0) {
                    let files = if hashed.files_hashed == 1 {
                        "file"
                    } else {
                        "files"
                    };
                    out.push_str(&format!(
                        "#{id} {} {files} hashed, {} unchanged, {} read in {:.2}s\n",
                        hashed.files_hashed,
                        hashed.files_unchanged,
                        kiln_engine::human_size(hashed.bytes_read),
                        hashed.hash_duration
                    ));
                }
                if matches!(event, EventKind::Cached(_)) {
                    out.push_str(&format!("#{id} CACHED\n"));
                } else {
                    out.push_str(&format!("#{id} DONE {:.2}s\n", step.duration));
                }
            }
            EventKind::Summary(summary) => out.push_str(&summary_line(summary, time)),
            EventKind::Warning { .. } => {}
        }
        write_stderr(&out);
    }

    fn tty(&self, event: &EventKind, time: f64) {
        let Some(live) = &self.live else { return };
        let mut running = lock(&live.running);
        match event {
            EventKind::Started { id, step, .. } => {
                let bar = live.bars.add(ProgressBar::new_spinner());
                bar.set_style(style("{prefix:.bold} {wide_msg} {elapsed:>4}"));
                bar.set_prefix(format!("#{id}"));
                bar.set_message(step.clone());
                bar.enable_steady_tick(Duration::from_millis(100));
                running.insert(*id, (bar, None));
            }
            EventKind::Output { id, text } => {
                if let Some((bar, tail)) = running.get_mut(id) {
                    // The last line the step printed, under it.
                    let tail = tail.get_or_insert_with(|| {
                        let tail = live.bars.insert_after(bar, ProgressBar::new_spinner());
                        tail.set_style(style("   {wide_msg:.dim}"));
                        tail
                    });
                    tail.set_message(text.clone());
                }
            }
            EventKind::Done(step) | EventKind::Cached(step) => {
                if let Some((bar, tail)) = running.remove(&step.id) {
                    if let Some(tail) = tail {
                        tail.finish_and_clear();
                    }
                    let state = if matches!(event, EventKind::Cached(_)) {
                        "CACHED".to_owned()
                    } else {
                        format!("DONE {:.1}s", step.duration)
                    };
                    // The state is part of the template, so a narrow
                    // terminal cuts the title, never the state.
                    bar.set_style(style(&format!("{{prefix:.bold}} {{wide_msg}} {state}")));
                    bar.finish();
                }
            }
            EventKind::Summary(summary) => {
                // Steps cut short by a failure stay on screen as they were.
                for (_, (bar, tail)) in running.drain() {
                    if let Some(tail) = tail {
                        tail.finish_and_clear();
                    }
                    bar.abandon();
                }
                drop(running);
                write_stderr(&summary_line(summary, time));
            }
            EventKind::Warning { .. } => {}
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

/// `built in 2.31s: 9 steps run, 3 cached (25% hit rate), 19.5kB written`.
fn summary_line(summary: &Summary, elapsed: f64) -> String {
    format!(
        "{} in {elapsed:.2}s: {} steps run{}, {} cached ({:.0}% hit rate), {} written\n",
        summary.outcome,
        summary.steps_run,
        if summary.steps_failed > 0 {
            format!(" ({} failed)", summary.steps_failed)
        } else {
            String::new()
        },
        summary.steps_cached,
        100.0 * summary.cache_hit_rate,
        kiln_engine::human_size(summary.bytes_written)
    )
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
