//! The executor: runs a `BuildGraph` against the store and the build
//! context, producing layers and the final image. This first version runs
//! the steps one after another and supports FROM, COPY, ADD (local files
//! and archives, URLs, git), WORKDIR and every metadata instruction; RUN arrives with the
//! runtime, parallelism with the parallel executor.

mod copy;
mod error;
mod executor;
mod remote;
mod rootfs;

pub use error::BuildError;
pub use executor::{build, load_base, unpack_image, BaseImage, BuildOptions, StepEvent};
