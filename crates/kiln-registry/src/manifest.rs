//! The distribution documents kiln reads and writes: image manifests (OCI
//! and Docker schema 2) and indexes (OCI and Docker manifest lists), as far
//! as pulling and pushing need them, and fetching one verified by digest.

use std::io::Read;

use kiln_store::Digest;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use serde::Deserialize;

use crate::client::{chain, Registry, Request};
use crate::error::RegistryError;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// The largest manifest or index kiln reads (containerd's limit too).
const MAX_MANIFEST: u64 = 4 * 1024 * 1024;

/// A descriptor as documents write it.
#[derive(Clone, Debug, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default)]
    pub platform: Option<PlatformDoc>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct PlatformDoc {
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub variant: Option<String>,
}

/// A manifest or an index; which one is said by its media type.
#[derive(Clone, Debug, Deserialize)]
pub struct Document {
    #[serde(rename = "schemaVersion", default)]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default)]
    pub media_type: Option<String>,
    #[serde(default)]
    pub config: Option<Descriptor>,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

/// A manifest or index as fetched: its exact bytes (which its digest is
/// of), what kind it is, and its parsed form.
pub struct Fetched {
    pub bytes: Vec<u8>,
    pub digest: Digest,
    pub media_type: String,
    pub document: Document,
}

impl Fetched {
    pub fn is_index(&self) -> bool {
        self.media_type == OCI_INDEX || self.media_type == DOCKER_LIST
    }
}

/// `Descriptor::digest` parsed, or the registry lied.
pub fn digest_of(
    registry: &Registry,
    what: &str,
    descriptor: &Descriptor,
) -> Result<Digest, RegistryError> {
    descriptor
        .digest
        .parse()
        .map_err(|_| RegistryError::Unsupported {
            registry: registry.domain().to_owned(),
            what: what.to_owned(),
            message: format!("digest {:?} is not a sha256 digest", descriptor.digest),
        })
}

/// GETs the manifest or index `reference` (a tag or a digest) names in
/// `repository`: its bytes must have the digest asked for, or the one the
/// registry says they have (`Docker-Content-Digest`).
pub fn fetch(
    registry: &Registry,
    repository: &str,
    reference: &str,
    what: &str,
) -> Result<Fetched, RegistryError> {
    let lied = |message: String| RegistryError::Lied {
        registry: registry.domain().to_owned(),
        what: what.to_owned(),
        message,
    };
    let mut headers = HeaderMap::new();
    headers.insert(
        ACCEPT,
        HeaderValue::from_static(
            "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, \
             application/vnd.docker.distribution.manifest.list.v2+json, \
             application/vnd.docker.distribution.manifest.v2+json",
        ),
    );
    let response = registry.send(&Request {
        method: Method::GET,
        url: registry.url(&format!("v2/{repository}/manifests/{reference}"))?,
        scope: format!("repository:{repository}:pull"),
        headers,
        body: None,
        timeout: None,
        what: what.to_owned(),
    })?;
    if response.status() != StatusCode::OK {
        return Err(registry.status_error(what, response));
    }
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or(v).trim().to_owned());
    let said_digest = response
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut bytes = Vec::new();
    response
        .take(MAX_MANIFEST + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| RegistryError::Connection {
            registry: registry.domain().to_owned(),
            message: format!("{what}: {}", chain(&e)),
        })?;
    if bytes.len() as u64 > MAX_MANIFEST {
        return Err(lied(format!("larger than {MAX_MANIFEST} bytes")));
    }
    let digest = Digest::of(&bytes);
    let expected: Option<Digest> = match reference.parse::<Digest>() {
        Ok(asked) => Some(asked),
        Err(_) => said_digest.and_then(|d| d.parse().ok()),
    };
    if let Some(expected) = expected.filter(|e| *e != digest) {
        return Err(RegistryError::mismatch(
            registry.domain(),
            what,
            &expected,
            &digest,
        ));
    }
    let document: Document = serde_json::from_slice(&bytes)
        .map_err(|e| lied(format!("not a manifest or an index: {e}")))?;
    let media_type = document
        .media_type
        .clone()
        .or(content_type)
        .unwrap_or_default();
    if document.schema_version == 1
        || media_type.starts_with("application/vnd.docker.distribution.manifest.v1")
    {
        return Err(RegistryError::Unsupported {
            registry: registry.domain().to_owned(),
            what: what.to_owned(),
            message: "Docker schema 1 manifests are not supported (deprecated by Docker too)"
                .into(),
        });
    }
    let known = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];
    let media_type = match media_type.as_str() {
        m if known.contains(&m) => m.to_owned(),
        // An OCI document may leave its media type out: its shape says.
        "" | "application/json" if !document.manifests.is_empty() => OCI_INDEX.to_owned(),
        "" | "application/json" if document.config.is_some() => OCI_MANIFEST.to_owned(),
        other => {
            return Err(RegistryError::Unsupported {
                registry: registry.domain().to_owned(),
                what: what.to_owned(),
                message: format!("a document of type {other:?}, not an image manifest or index"),
            })
        }
    };
    Ok(Fetched {
        bytes,
        digest,
        media_type,
        document,
    })
}
