//! kiln's registry client: the OCI distribution protocol over blocking
//! `reqwest`, pulling images into a kiln store and pushing them out of it.
//! Everything a registry sends is checked against the digest and size it
//! was asked by before the store keeps it; credentials come from Docker's
//! own config, so docker and kiln share logins. It knows nothing about
//! builds: the engine asks it for images it lacks.

mod auth;
mod client;
mod error;
mod known;
mod manifest;
mod platform;
mod pull;
mod push;

pub use auth::{
    config_key, domain_of_config_key, erase_credential, store_credential, stored_credential,
    Challenge, Credential, Kept,
};
pub use client::{ClientOptions, Registry, DOCKER_CERTS_DIR};
pub use error::RegistryError;
pub use platform::Platform;
pub use pull::{pull, pull_artifact, PullEvent, Pulled, PulledArtifact};
pub use push::{push, push_artifact, Artifact, PushCompression, PushEvent, Pushed};
