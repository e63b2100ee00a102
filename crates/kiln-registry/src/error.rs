//! Registry errors: each names the registry and the object it concerns.

use kiln_store::{Digest, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The registry could not be reached or dropped the connection.
    #[error("{registry}: {message}")]
    Connection { registry: String, message: String },
    /// The registry answered with an error status (after any retries).
    #[error("{registry}: {what}: {status}{}", detail(.code, .message))]
    Status {
        registry: String,
        what: String,
        status: u16,
        /// The distribution error code (`DENIED`, `MANIFEST_INVALID`...).
        code: Option<String>,
        message: Option<String>,
    },
    /// Credentials are needed and none (or wrong ones) were given.
    #[error("{registry}: {what}: {message}")]
    Auth {
        registry: String,
        what: String,
        message: String,
    },
    /// What the registry sent is not what was asked for: never stored.
    #[error("{registry}: {what}: {message}")]
    Lied {
        registry: String,
        what: String,
        message: String,
    },
    #[error("{registry}: {what}: {message}")]
    Unsupported {
        registry: String,
        what: String,
        message: String,
    },
    #[error("no image for platform {wanted} in {reference} (it has: {available})")]
    NoPlatform {
        reference: String,
        wanted: String,
        available: String,
    },
    /// A registry outside the allowed ones (`KILN_REGISTRY_ALLOW`).
    #[error("{registry}: not an allowed registry (only {allowed} may be contacted)")]
    NotAllowed { registry: String, allowed: String },
}

fn detail(code: &Option<String>, message: &Option<String>) -> String {
    match (code, message) {
        (Some(code), Some(message)) => format!(" {code}: {message}"),
        (Some(code), None) => format!(" {code}"),
        (None, Some(message)) => format!(": {message}"),
        (None, None) => String::new(),
    }
}

impl RegistryError {
    /// A blob or manifest whose bytes are not the digest they were asked by.
    pub(crate) fn mismatch(registry: &str, what: &str, expected: &Digest, actual: &Digest) -> Self {
        RegistryError::Lied {
            registry: registry.to_owned(),
            what: what.to_owned(),
            message: format!("its content has digest {actual}, not {expected}"),
        }
    }
}
