//! The executor: runs a `BuildGraph` against the store, the layer cache
//! and the build context, producing layers and the final image. This
//! version runs the steps one after another and supports FROM, COPY, ADD (local files
//! and archives, URLs, git), RUN (in kiln-runtime's containers), WORKDIR
//! and every metadata instruction; parallelism comes with the parallel
//! executor.

mod base;
mod cancel;
mod copy;
mod copy_step;
mod error;
mod executor;
mod keys;
mod reads;
mod remote;
mod rootfs;
mod run_step;
mod stage;

pub use base::{
    commit_layer, load_base, load_image, resolve_base, unpack_image, write_image_tar, BaseImage,
};
pub use cancel::Cancel;
pub use error::BuildError;
pub use executor::{build, BuildOptions, BuildOutcome, BuiltStep, CacheOutcome, StepEvent};
pub use kiln_cache::Miss;
pub use reads::{FileRead, ReadKind, Reads};
pub use run_step::DEFAULT_RUN_PIDS_LIMIT;
