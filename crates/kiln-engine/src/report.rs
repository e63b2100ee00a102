//! What a build session returns: every step with its typed cache outcome,
//! the totals, and the image made.

use kiln_build::CacheOutcome;
use kiln_cache::CacheKey;
use kiln_store::Digest;

use crate::events::Summary;

/// A finished build.
#[derive(Clone, Debug)]
pub struct BuildReport {
    /// The image's manifest digest (its id).
    pub manifest: Digest,
    /// Its config's digest.
    pub config: Digest,
    /// The names it was given.
    pub tags: Vec<String>,
    /// The names it was pushed as, with the pushed manifest's digest.
    pub pushed: Vec<(String, Digest)>,
    /// Every step of the needed stages, FROMs included, in Dockerfile order.
    pub steps: Vec<StepReport>,
    pub totals: Summary,
}

/// One step of a build.
#[derive(Clone, Debug)]
pub struct StepReport {
    /// Numbered from 1 in Dockerfile order, as the events number it.
    pub id: usize,
    /// The stage's name or `stage-N`.
    pub stage: String,
    pub line: u32,
    /// `[stage i/n] INSTRUCTION`.
    pub title: String,
    pub key: Option<CacheKey>,
    pub cache: CacheOutcome,
    pub seconds: f64,
    /// The size of the layer it wrote (0 for hits and steps without one).
    pub bytes_written: u64,
    /// The layer it made or found.
    pub layer: Option<Digest>,
    /// A RUN that ran with [`crate::BuildRequest::track_reads`]: what it
    /// read of the layers below it.
    pub reads: Option<kiln_build::Reads>,
    /// A COPY or ADD: what it copied where.
    pub copy: Option<kiln_graph::CopyOp>,
}

impl BuildReport {
    /// The steps that ran, with why.
    pub fn misses(&self) -> impl Iterator<Item = (&StepReport, &kiln_cache::Miss)> {
        self.steps.iter().filter_map(|step| match &step.cache {
            CacheOutcome::Miss(miss) => Some((step, miss)),
            _ => None,
        })
    }
}
