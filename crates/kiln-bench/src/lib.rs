//! `kiln bench cache`: a project's history replayed through kiln's build
//! cache. Each revision (a git commit, or a build of a scripted
//! [`Scenario`]) is written out into a directory of its own (the user's
//! work tree is never touched) and built, in order, on a dedicated store;
//! every step's cache outcome with its typed reason, time and bytes
//! written is recorded, and the same builds with `--no-cache` on a second
//! store give the time the cache saved. The [`BenchReport`] renders as a
//! table, JSON (docs/bench.md has the schema), CSV or an SVG plot.
//!
//! It deliberately does not: fetch anything (the repository is read as it
//! is, libgit2 without its network features), write to the repository, or
//! use the user's store for builds (base images are copied out of it).

mod advice;
mod error;
mod history;
mod image_files;
mod plot;
mod replay;
mod report;
mod scenario;

pub use advice::{find_advice, reorder, Advice, AdviceReplay};
pub use error::BenchError;
pub use history::{GitHistory, GitSelection, History, Prepared, Revision, ScenarioHistory};
pub use plot::write_svg;
pub use replay::{
    bench_cache, replay, MakeHistory, ReplayOptions, ReplayProgress, Replayed, Rewrite,
};
pub use report::{
    BenchReport, BuildRun, Ideal, Outcome, StepDetail, StepRun, StepTotals, Totals, SCHEMA,
};
pub use scenario::{Edit, Scenario, ScenarioBuild};
