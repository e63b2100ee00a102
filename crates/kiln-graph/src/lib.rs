//! Build planning: a pure function from a parsed Dockerfile, build args, a
//! target and platforms (plus the configs of base images, passed in) to the
//! [`BuildGraph`] the executor runs. It owns stage resolution, ARG/ENV
//! scoping and expansion, the image-config effect of every instruction, and
//! for each node the exact inputs its cache key needs. No I/O: everything
//! here is testable with plain values.

pub mod config;
mod dispatch;
mod error;
pub mod graph;
pub mod limits;
mod planner;
pub mod platform;
pub mod render;
mod scope;
pub mod values;

pub use config::{Healthcheck, History, ImageConfig};
pub use error::{PlanError, PlanWarning};
pub use graph::*;
pub use planner::{plan, PlanOptions};
pub use platform::Platform;
pub use scope::PROXY_ARGS;
pub use values::Chmod;
