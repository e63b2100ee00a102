//! The executor: runs a `BuildGraph` against the store, the layer cache
//! and the build context, producing layers and the final image. This
//! version runs the steps one after another and supports FROM, COPY, ADD (local files
//! and archives, URLs, git), WORKDIR and every metadata instruction; RUN arrives with the
//! runtime, parallelism with the parallel executor.

mod base;
mod copy;
mod copy_step;
mod error;
mod executor;
mod remote;
mod rootfs;
mod stage;

pub use base::{load_base, unpack_image, BaseImage};
pub use error::BuildError;
pub use executor::{build, BuildOptions, BuildOutcome, BuiltStep, CacheOutcome, StepEvent};
