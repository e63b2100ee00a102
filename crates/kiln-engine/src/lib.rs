//! kiln-engine is kiln's library face: what a front end (the CLI, the
//! daemon, `kiln bench`) calls to build an image, instead of wiring the
//! planner, the executor, the store and the cache together itself.
//!
//! - [`Engine::build`] runs a [`BuildRequest`] end to end and returns a
//!   [`BuildReport`]; progress arrives as owned [`BuildEvent`]s, in the
//!   JSON schema of docs/progress.md.
//! - Image references are pinned once per build through an
//!   [`ImageSource`] ([`LocalImages`]: the store); the executor gets
//!   digests, never names.
//! - [`Engine::gc`] and [`Engine::prune`] collect the store with every
//!   root (tags, cache entries, kept containers) computed here.
//! - Containers: [`Engine::create_container`] (the image-to-container
//!   rules), [`Engine::run_container`] (the monitor), stop, remove, commit.
//! - [`OutputFile`] writes files at user-named paths without following a
//!   planted link.
//!
//! It draws no output and reads no flags or environment: those are the
//! front end's.

mod build_contexts;
mod container_files;
mod container_filter;
mod containers;
mod context_archive;
mod disk_usage;
mod error;
pub mod events;
mod gc;
mod health;
mod image_admin;
mod images;
mod inspect;
mod output_file;
mod outputs;
mod report;
mod request;
mod session;
mod size;
mod stats;
mod system_info;
mod volumes;

pub use build_contexts::{parse_build_context, BuildContext};
pub use container_files::{landing, ChangeKind, CopyOptions, PathKind, PathStat};
pub use container_filter::ContainerFilter;
pub use containers::{
    parse_signal, parse_time, Attach, Bind, ContainerRequest, ContainerUpdate, ExecRequest,
    LogOptions, NetworkMode, Running, VolumeMount,
};
pub use context_archive::{UnpackedContext, DEFAULT_CONTEXT_LIMIT};
pub use disk_usage::DiskUsage;
pub use error::{DockerfileText, EngineError};
pub use events::{BuildEvent, EventKind, Hashed, StepFinished, Summary};
pub use gc::{PrunePolicy, PruneReport};
pub use health::HealthOptions;
pub use image_admin::{manifest_size, repository_and_tag, ImageFilter, ImageSummary, Removed};
pub use images::{ImageSource, LocalImages, PullingImages, ResolvedImage};
pub use inspect::{container_json, container_status, volume_json, HistoryEntry, StoredImage};
pub use kiln_build::{CacheOutcome, Cancel, FileRead, Miss, ReadKind, Reads};
pub use kiln_registry::ClientOptions;
pub use output_file::{write_file, OutputFile};
pub use outputs::{export_cache, export_output};
pub use report::{BuildReport, StepReport};
pub use request::{
    parse_add_host, BuildRequest, CacheDest, CacheFrom, CacheTo, DockerfileSource, Output,
    SpecError,
};
pub use session::{creation_time, read_bounded, Engine};
pub use size::{human_binary_size, human_duration, human_size, tree_size};
pub use stats::{NetworkCounters, StatsSample};
pub use system_info::SystemInfo;
pub use volumes::Volume;
