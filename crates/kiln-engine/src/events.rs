//! A build's progress as owned, serializable events: one JSON schema
//! (docs/progress.md), written line by line by `kiln build --progress
//! json` and streamed by the daemon. The engine stamps every event with
//! the seconds since the build started and numbers steps from 1 in
//! Dockerfile order, so a renderer needs nothing but the events.

use serde::Serialize;

/// One event, as `{"event": "...", "time": 1.25, ...}`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BuildEvent {
    /// Seconds since the build started.
    pub time: f64,
    #[serde(flatten)]
    pub kind: EventKind,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EventKind {
    /// A warning about the Dockerfile or the plan (`line` 0: none).
    Warning {
        message: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        file: Option<String>,
        line: u32,
    },
    /// The plan is made: how many steps the build goes through (the
    /// needed stages' steps, FROM included), before any starts.
    Plan { steps: usize },
    Started {
        id: usize,
        /// `[stage i/n] INSTRUCTION`, expanded.
        step: String,
        /// The Dockerfile line.
        line: u32,
    },
    /// One line the step's command printed, without the newline.
    Output { id: usize, text: String },
    /// The step ran (or, for FROM, resolved).
    Done(StepFinished),
    /// The step came from the cache.
    Cached(StepFinished),
    /// The step failed: the build's error is about it.
    Error {
        id: usize,
        /// Seconds from its start to the failure.
        duration: f64,
    },
    /// The step was stopped before it finished: another step failed, or
    /// the build was interrupted.
    Canceled { id: usize, duration: f64 },
    /// The last event of a build, well or not.
    Summary(Summary),
}

/// What `done` and `cached` carry.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StepFinished {
    pub id: usize,
    /// Seconds the step took (for a hit: the lookup).
    pub duration: f64,
    /// The size of the layer it wrote or found (0: none).
    pub layer_bytes: u64,
    /// Why the cache could not be used (absent for hits and FROM).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The reason's stable name ([`kiln_cache::Miss::kind`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason_kind: Option<&'static str>,
    /// COPY/ADD: what was hashed.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub hashed: Option<Hashed>,
}

/// How a COPY/ADD's sources were hashed.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Hashed {
    pub files_hashed: u64,
    /// Answered by the stat cache, not read.
    pub files_unchanged: u64,
    pub bytes_read: u64,
    /// Seconds spent hashing.
    pub hash_duration: f64,
}

/// The totals of a build.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    /// `built`, `failed` or `interrupted`.
    pub outcome: &'static str,
    /// Steps that ran, the failed and canceled ones included.
    pub steps_run: usize,
    pub steps_failed: usize,
    /// Started, and stopped because another failed or the build was
    /// interrupted.
    pub steps_canceled: usize,
    pub steps_cached: usize,
    /// Cached over all steps that ran or were cached (0 to 1).
    pub cache_hit_rate: f64,
    pub bytes_written: u64,
}

impl BuildEvent {
    /// The event as one line of JSON (no newline).
    pub fn to_json(&self) -> String {
        // Plain data: serialising cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}
