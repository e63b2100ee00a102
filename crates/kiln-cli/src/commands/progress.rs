//! Build progress on standard error, in four views: `plain` (BuildKit's
//! numbered lines: `#3 [build 2/6] COPY src/ ./src/`, the command's output,
//! `#3 DONE 0.12s` or `#3 CACHED`), `tty` (a live view under a header
//! `[+] Building 12.3s (7/9)`: one line per running step with a timer and
//! the last lines of its output, finished steps collapsing to `DONE`,
//! `CACHED`, `ERROR` or `CANCELED`; indicatif draws it), `json` (one event
//! per line, schema in docs/progress.md) and `quiet`. All but quiet end
//! with a summary: time, steps run and cached, hit rate, bytes written.

use std::collections::{HashMap, VecDeque};
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

/// How many of a running step's last output lines the tty view shows.
const TAIL_LINES: usize = 5;

/// The tty view: a header, and a bar per step that started.
struct LiveView {
    /// Held for its drop: the echo comes back with the view.
    _echo: EchoOff,
    bars: MultiProgress,
    /// `[+] Building 12.3s (7/9)`.
    header: ProgressBar,
    /// Steps finished (any way) and steps planned.
    counts: Mutex<(usize, usize)>,
    running: Mutex<HashMap<usize, RunningStep>>,
}

/// A running step's line and the lines under it with its last output.
struct RunningStep {
    bar: ProgressBar,
    tail: Vec<ProgressBar>,
    lines: VecDeque<String>,
}

impl RunningStep {
    /// Ends the step's line with `state` (its title cut first on a
    /// narrow terminal, never the state) and clears its output.
    fn finish(self, state: &str) {
        for line in self.tail {
            line.finish_and_clear();
        }
        self.bar
            .set_style(style(&format!("{{prefix:.bold}} {{wide_msg}} {state}")));
        self.bar.finish();
    }
}

impl Progress {
    pub fn new(mode: ProgressMode) -> Progress {
        let live = (mode == ProgressMode::Tty).then(|| {
            let bars = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10));
            let header = bars.add(ProgressBar::new_spinner());
            header.set_style(style("[+] Building {secs} {msg}"));
            header.enable_steady_tick(Duration::from_millis(100));
            LiveView {
                _echo: EchoOff::new(),
                bars,
                header,
                counts: Mutex::new((0, 0)),
                running: Mutex::new(HashMap::new()),
            }
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
                let text = match file {
                    Some(file) => format!("{file}:{line}: warning: {message}"),
                    None => format!("warning: {message}"),
                };
                // Above the live view, never through it.
                match &self.live {
                    Some(live) => {
                        let _ = live.bars.println(text);
                    }
                    None => report!("{text}"),
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
            EventKind::Error { id, duration } => {
                out.push_str(&format!("#{id} ERROR {duration:.2}s\n"));
            }
            EventKind::Canceled { id, duration } => {
                out.push_str(&format!("#{id} CANCELED {duration:.2}s\n"));
            }
            EventKind::Summary(summary) => out.push_str(&summary_line(summary, time)),
            EventKind::Plan { .. } | EventKind::Warning { .. } => {}
        }
        write_stderr(&out);
    }

    fn tty(&self, event: &EventKind, time: f64) {
        let Some(live) = &self.live else { return };
        let mut running = lock(&live.running);
        match event {
            EventKind::Plan { steps } => {
                lock(&live.counts).1 = *steps;
                live.count(0);
            }
            EventKind::Started { id, step, .. } => {
                let bar = live.bars.add(ProgressBar::new_spinner());
                bar.set_style(style("{prefix:.bold} {wide_msg} {secs}"));
                bar.set_prefix(format!("#{id}"));
                bar.set_message(step.clone());
                bar.enable_steady_tick(Duration::from_millis(100));
                running.insert(
                    *id,
                    RunningStep {
                        bar,
                        tail: Vec::new(),
                        lines: VecDeque::new(),
                    },
                );
            }
            EventKind::Output { id, text } => {
                if let Some(step) = running.get_mut(id) {
                    step.lines.push_back(text.clone());
                    if step.lines.len() > TAIL_LINES {
                        step.lines.pop_front();
                    }
                    while step.tail.len() < step.lines.len() {
                        let after = step.tail.last().unwrap_or(&step.bar);
                        let line = live.bars.insert_after(after, ProgressBar::new_spinner());
                        line.set_style(style("   {wide_msg:.dim}"));
                        step.tail.push(line);
                    }
                    for (line, text) in step.tail.iter().zip(&step.lines) {
                        line.set_message(text.clone());
                    }
                }
            }
            EventKind::Done(step) | EventKind::Cached(step) => {
                if let Some(running_step) = running.remove(&step.id) {
                    let state = if matches!(event, EventKind::Cached(_)) {
                        "CACHED".to_owned()
                    } else {
                        format!("DONE {:.1}s", step.duration)
                    };
                    running_step.finish(&state);
                }
                live.count(1);
            }
            EventKind::Error { id, duration } => {
                if let Some(step) = running.remove(id) {
                    step.finish(&format!("ERROR {duration:.1}s"));
                }
                live.count(1);
            }
            EventKind::Canceled { id, duration } => {
                if let Some(step) = running.remove(id) {
                    step.finish(&format!("CANCELED {duration:.1}s"));
                }
                live.count(1);
            }
            EventKind::Summary(summary) => {
                // Every step has ended by now; anything left is drawn as
                // it was, never redrawn below the summary.
                for (_, step) in running.drain() {
                    for line in step.tail {
                        line.finish_and_clear();
                    }
                    step.bar.abandon();
                }
                drop(running);
                let word = match summary.outcome {
                    "built" => "FINISHED",
                    "interrupted" => "CANCELED",
                    _ => "FAILED",
                };
                let (done, total) = *lock(&live.counts);
                live.header.set_message(format!("({done}/{total}) {word}"));
                live.header.finish();
                restore_terminal();
                write_stderr(&summary_line(summary, time));
            }
            EventKind::Warning { .. } => {}
        }
    }

    /// A line about the build, not a step (the build is stopping): above
    /// the live view, or as text.
    pub fn notice(&self, text: &str) {
        match &self.live {
            Some(live) => {
                let _ = live.bars.println(text);
            }
            None => report!("{text}"),
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
        "{} in {elapsed:.2}s: {} run{}, {} cached ({:.0}% hit rate), {} written\n",
        summary.outcome,
        match summary.steps_run {
            1 => "1 step".to_owned(),
            n => format!("{n} steps"),
        },
        match (summary.steps_failed, summary.steps_canceled) {
            (0, 0) => String::new(),
            (failed, 0) => format!(" ({failed} failed)"),
            (0, canceled) => format!(" ({canceled} canceled)"),
            (failed, canceled) => format!(" ({failed} failed, {canceled} canceled)"),
        },
        summary.steps_cached,
        100.0 * summary.cache_hit_rate,
        kiln_engine::human_size(summary.bytes_written)
    )
}

/// The terminal's echo turned off while the live view is drawn, and
/// restored after. The view leaves the cursor at the right edge of its
/// last line; whatever the terminal echoes there (`^C` on Ctrl-C, keys
/// typed) wraps to a new line, and every redraw after lands a line lower
/// than the view thinks, leaving lines drawn twice. What is typed is not
/// lost: the shell reads it after kiln ends.
///
/// The saved settings are process-wide, so a path that exits at once (a
/// second Ctrl-C) gives them back too ([`restore_terminal`]).
struct EchoOff;

/// The terminal's settings from before the live view turned echo off.
static SAVED_TERMINAL: Mutex<Option<nix::sys::termios::Termios>> = Mutex::new(None);

impl EchoOff {
    fn new() -> EchoOff {
        use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
        let stderr = std::io::stderr();
        if let Ok(saved) = tcgetattr(&stderr) {
            let mut quiet = saved.clone();
            quiet.local_flags.remove(LocalFlags::ECHO);
            if tcsetattr(&stderr, SetArg::TCSANOW, &quiet).is_ok() {
                *lock(&SAVED_TERMINAL) = Some(saved);
            }
        }
        EchoOff
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        restore_terminal();
    }
}

/// Gives the terminal back the settings the live view changed, if it
/// changed any (a no-op otherwise, and the second time).
pub fn restore_terminal() {
    if let Some(saved) = lock(&SAVED_TERMINAL).take() {
        let _ = nix::sys::termios::tcsetattr(
            std::io::stderr(),
            nix::sys::termios::SetArg::TCSANOW,
            &saved,
        );
    }
}

impl LiveView {
    /// Counts `finished` more steps ended and redraws the header's count.
    fn count(&self, finished: usize) {
        let mut counts = lock(&self.counts);
        counts.0 += finished;
        self.header
            .set_message(format!("({}/{})", counts.0, counts.1));
    }
}

/// A style from `template`, with `{secs}`: the bar's time as `12.3s`.
fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
        .with_key(
            "secs",
            |state: &indicatif::ProgressState, out: &mut dyn std::fmt::Write| {
                let _ = write!(out, "{:.1}s", state.elapsed().as_secs_f64());
            },
        )
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
