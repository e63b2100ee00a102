//! Pushing an image from the store: every blob the registry lacks (asked
//! with HEAD first) is uploaded in one streamed PUT, plain layers are
//! compressed on the way out (gzip by default, as Docker pushes; the
//! compressed form is remembered, so a second push compresses nothing),
//! and the manifest goes last, so the registry never names an image whose
//! blobs it does not have.

use std::time::Duration;

use kiln_store::{Digest, LayerCompression, Reference, Store};
use reqwest::blocking::{Body, Response};
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::client::{ClientOptions, Registry, Request};
use crate::error::RegistryError;
use crate::known::Known;
use crate::manifest::{Document, DOCKER_MANIFEST, OCI_MANIFEST};

/// How plain layers leave the store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PushCompression {
    /// As the store holds them (the pushed manifest is the local one).
    None,
    #[default]
    Gzip,
    Zstd,
}

/// What a push reports as it goes.
#[derive(Clone, Debug)]
pub enum PushEvent {
    /// A blob the registry already has.
    Present { digest: Digest, size: u64 },
    /// A blob uploaded.
    Uploaded { digest: Digest, size: u64 },
    /// A blob mounted from another repository of the registry.
    Mounted { digest: Digest, from: String },
}

/// What was pushed.
#[derive(Clone, Debug)]
pub struct Pushed {
    /// The manifest's digest as the registry has it.
    pub manifest: Digest,
    pub size: u64,
    /// Blobs uploaded (the others the registry had).
    pub uploaded: usize,
    pub bytes: u64,
}

/// Pushes the image whose manifest is `manifest` to `dest` (a name with a
/// tag, or with the digest the pushed manifest will have).
pub fn push(
    store: &Store,
    manifest: &Digest,
    dest: &str,
    compression: PushCompression,
    options: &ClientOptions,
    events: &(dyn Fn(PushEvent) + Sync),
) -> Result<Pushed, RegistryError> {
    let reference = Reference::parse(dest)?;
    let registry = Registry::connect(&reference.domain, options)?;
    let repository = reference.path.as_str();
    let local = store.blobs().read(manifest)?;
    let what = format!("image {manifest}");
    let unsupported = |message: String| RegistryError::Unsupported {
        registry: registry.domain().to_owned(),
        what: what.clone(),
        message,
    };
    let document: Document = serde_json::from_slice(&local)
        .map_err(|e| unsupported(format!("its manifest does not parse: {e}")))?;
    let mut value: Value = serde_json::from_slice(&local)
        .map_err(|e| unsupported(format!("its manifest does not parse: {e}")))?;
    let media_type = document
        .media_type
        .clone()
        .unwrap_or_else(|| OCI_MANIFEST.to_owned());
    if media_type != OCI_MANIFEST && media_type != DOCKER_MANIFEST {
        return Err(unsupported(format!("a {media_type} cannot be pushed yet")));
    }
    let config = document
        .config
        .as_ref()
        .ok_or_else(|| unsupported("its manifest has no config".into()))?;
    let config_digest: Digest = config.digest.parse()?;
    let pusher = Pusher {
        store,
        registry: &registry,
        repository,
        known: Known::new(store, registry.domain()),
        events,
    };
    let docker = media_type == DOCKER_MANIFEST;
    let (mut uploaded, mut bytes) = (0, 0);
    let mut rewritten = false;
    let mut count = |sent: Option<u64>| {
        if let Some(size) = sent {
            uploaded += 1;
            bytes += size;
        }
    };
    for (n, layer) in document.layers.iter().enumerate() {
        let plain: Digest = layer.digest.parse()?;
        let is_plain = layer.media_type == "application/vnd.oci.image.layer.v1.tar"
            || layer.media_type.ends_with(".tar");
        let (digest, size, sent) = match (is_plain, compression) {
            (true, PushCompression::Zstd) if docker => {
                return Err(unsupported(
                    "zstd layers need an OCI manifest, and this image's is Docker's".into(),
                ))
            }
            (true, PushCompression::Gzip) => pusher.compressed(&plain, LayerCompression::Gzip)?,
            (true, PushCompression::Zstd) => pusher.compressed(&plain, LayerCompression::Zstd)?,
            _ => {
                let sent = pusher.blob(&plain, layer.size)?;
                (plain, layer.size, sent)
            }
        };
        count(sent);
        if digest != plain {
            // A Docker manifest names its layers in Docker's types.
            let media = match (compression, docker) {
                (PushCompression::Zstd, _) => LayerCompression::Zstd.media_type(),
                (_, false) => LayerCompression::Gzip.media_type(),
                (_, true) => "application/vnd.docker.image.rootfs.diff.tar.gzip",
            };
            value["layers"][n] = serde_json::json!({
                "mediaType": media,
                "digest": digest.to_string(),
                "size": size,
            });
            rewritten = true;
        }
    }
    count(pusher.blob(&config_digest, config.size)?);
    // Untouched, the manifest goes as stored: its digest stays the local one.
    let bytes_out = if rewritten {
        serde_json::to_vec(&value)
            .map_err(|e| unsupported(format!("cannot write its manifest: {e}")))?
    } else {
        local
    };
    let digest = Digest::of(&bytes_out);
    let target = manifest_target(&reference, &digest).map_err(unsupported)?;
    pusher.manifest(&target, &media_type, &bytes_out, &digest)?;
    Ok(Pushed {
        manifest: digest,
        size: bytes_out.len() as u64,
        uploaded,
        bytes,
    })
}

/// What a manifest is PUT as: the reference's tag (`latest` if none), or
/// its digest, which must be the manifest's.
fn manifest_target(reference: &Reference, digest: &Digest) -> Result<String, String> {
    match (&reference.digest, &reference.tag) {
        (Some(named), _) if named != digest => Err(format!(
            "{} names digest {named}, but the pushed manifest's is {digest}",
            reference.normalized()
        )),
        (Some(named), _) => Ok(named.to_string()),
        (None, Some(tag)) => Ok(tag.clone()),
        (None, None) => Ok("latest".to_owned()),
    }
}

/// Something other than an image, in an image manifest (as BuildKit's
/// registry cache is): a config document of its own type, and plain tar
/// layers of the store.
pub struct Artifact {
    pub config: Vec<u8>,
    pub config_media_type: String,
    /// Digest and size of each layer, in order.
    pub layers: Vec<(Digest, u64)>,
}

/// Pushes `artifact` to `dest` as an OCI image manifest: its layers as
/// they are in the store (uploaded or mounted only if the registry lacks
/// them), its config, the manifest last.
pub fn push_artifact(
    store: &Store,
    artifact: &Artifact,
    dest: &str,
    options: &ClientOptions,
    events: &(dyn Fn(PushEvent) + Sync),
) -> Result<Pushed, RegistryError> {
    let reference = Reference::parse(dest)?;
    let registry = Registry::connect(&reference.domain, options)?;
    let pusher = Pusher {
        store,
        registry: &registry,
        repository: reference.path.as_str(),
        known: Known::new(store, registry.domain()),
        events,
    };
    let (mut uploaded, mut bytes) = (0, 0);
    let mut layers = Vec::new();
    for (digest, size) in &artifact.layers {
        if let Some(sent) = pusher.blob(digest, *size)? {
            uploaded += 1;
            bytes += sent;
        }
        layers.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": digest.to_string(),
            "size": size,
        }));
    }
    let config = store.blobs().put(&artifact.config)?;
    if let Some(sent) = pusher.blob(&config, artifact.config.len() as u64)? {
        uploaded += 1;
        bytes += sent;
    }
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": artifact.config_media_type,
            "digest": config.to_string(),
            "size": artifact.config.len(),
        },
        "layers": layers,
    });
    let manifest_bytes = serde_json::to_vec(&manifest).map_err(|e| RegistryError::Unsupported {
        registry: registry.domain().to_owned(),
        what: dest.to_owned(),
        message: format!("cannot write the manifest: {e}"),
    })?;
    let digest = Digest::of(&manifest_bytes);
    let target =
        manifest_target(&reference, &digest).map_err(|message| RegistryError::Unsupported {
            registry: registry.domain().to_owned(),
            what: dest.to_owned(),
            message,
        })?;
    pusher.manifest(&target, OCI_MANIFEST, &manifest_bytes, &digest)?;
    Ok(Pushed {
        manifest: digest,
        size: manifest_bytes.len() as u64,
        uploaded,
        bytes,
    })
}

/// The answers to a monolithic PUT that mean "send it in chunks".
fn refuses_monolithic(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::METHOD_NOT_ALLOWED
            | StatusCode::PAYLOAD_TOO_LARGE
            | StatusCode::RANGE_NOT_SATISFIABLE
            | StatusCode::NOT_IMPLEMENTED
    )
}

/// The chunk size for a session: 16 MiB, or the registry's minimum if larger.
fn chunk_size(start: &Response) -> u64 {
    let minimum = start
        .headers()
        .get("oci-chunk-min-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    minimum.max(16 * 1024 * 1024)
}

/// How many bytes of the blob a registry says it has (`Range: 0-LAST`).
fn received(answer: &Response) -> Option<u64> {
    let range = answer
        .headers()
        .get(reqwest::header::RANGE)?
        .to_str()
        .ok()?;
    let last = range.trim().trim_start_matches("bytes=").split_once('-')?.1;
    last.parse::<u64>().ok().map(|last| last + 1)
}

/// Headers of a body of `len` raw bytes.
fn octet_stream(len: u64) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
    headers
}

/// A minute, and a second for every 256 KiB.
fn upload_timeout(len: u64) -> Duration {
    Duration::from_secs(60 + len / (256 * 1024))
}

struct Pusher<'a> {
    store: &'a Store,
    registry: &'a Registry,
    repository: &'a str,
    known: Known,
    events: &'a (dyn Fn(PushEvent) + Sync),
}

impl Pusher<'_> {
    fn scope(&self) -> String {
        format!("repository:{}:pull,push", self.repository)
    }

    /// `plain` compressed: the remembered compressed blob if the registry
    /// has it, else compressed (again, if its blob is gone) and uploaded.
    fn compressed(
        &self,
        plain: &Digest,
        compression: LayerCompression,
    ) -> Result<(Digest, u64, Option<u64>), RegistryError> {
        if let Some((digest, size)) = self.store.remembered_compression(plain, compression) {
            if self.remote_size(&digest)? == Some(size) {
                (self.events)(PushEvent::Present { digest, size });
                return Ok((digest, size, None));
            }
        }
        let (digest, size) = self.store.compressed_layer(plain, compression)?;
        let sent = self.blob(&digest, size)?;
        Ok((digest, size, sent))
    }

    /// Uploads a blob of the store unless the registry has it (in this
    /// repository, or in another it can be mounted from); returns the
    /// bytes sent, if any were.
    fn blob(&self, digest: &Digest, size: u64) -> Result<Option<u64>, RegistryError> {
        if self.remote_size(digest)? == Some(size) {
            (self.events)(PushEvent::Present {
                digest: *digest,
                size,
            });
            self.known.record(self.repository, digest);
            return Ok(None);
        }
        let what = format!("blob {digest}");
        // Mounted from where it was seen last; a registry that does not
        // mount (or no longer has it there) answers 202 and an upload.
        let from = self
            .known
            .repositories(digest)
            .into_iter()
            .find(|r| r != self.repository);
        let start = self.start_upload(&what, from.as_deref().map(|from| (digest, from)))?;
        if let (StatusCode::CREATED, Some(from)) = (start.status(), from) {
            (self.events)(PushEvent::Mounted {
                digest: *digest,
                from,
            });
            self.known.record(self.repository, digest);
            return Ok(None);
        }
        let done = self.upload_whole(&start, digest, size, &what)?;
        let done = if refuses_monolithic(done.status()) {
            // A registry that takes no whole blob in one PUT: a new
            // session, and the blob in chunks.
            drop(done);
            let start = self.start_upload(&what, None)?;
            self.upload_chunks(&start, digest, size, &what)?
        } else {
            done
        };
        if done.status() != StatusCode::CREATED {
            return Err(self.registry.status_error(&what, done));
        }
        (self.events)(PushEvent::Uploaded {
            digest: *digest,
            size,
        });
        self.known.record(self.repository, digest);
        Ok(Some(size))
    }

    /// A new upload session (POST), its answer checked: 202, or with
    /// `mount` (the blob, the repository it is in) 201 when the registry
    /// mounted it instead.
    fn start_upload(
        &self,
        what: &str,
        mount: Option<(&Digest, &str)>,
    ) -> Result<Response, RegistryError> {
        let mut url = self
            .registry
            .url(&format!("v2/{}/blobs/uploads/", self.repository))?;
        let mut scope = self.scope();
        if let Some((digest, from)) = mount {
            url.query_pairs_mut()
                .append_pair("mount", &digest.to_string())
                .append_pair("from", from);
            scope.push_str(&format!(" repository:{from}:pull"));
        }
        let start = self.registry.send(&Request {
            method: Method::POST,
            url,
            scope,
            headers: HeaderMap::new(),
            body: None,
            timeout: None,
            what: what.to_owned(),
        })?;
        let mounted = mount.is_some() && start.status() == StatusCode::CREATED;
        if start.status() != StatusCode::ACCEPTED && !mounted {
            return Err(self.registry.status_error(what, start));
        }
        Ok(start)
    }

    /// The whole blob in one streamed PUT to the session `start` opened.
    fn upload_whole(
        &self,
        start: &Response,
        digest: &Digest,
        size: u64,
        what: &str,
    ) -> Result<Response, RegistryError> {
        let mut url = self.registry.location(start, what)?;
        url.query_pairs_mut()
            .append_pair("digest", &digest.to_string());
        let body = self.blob_range(digest, 0, size);
        self.registry.send(&Request {
            method: Method::PUT,
            url,
            scope: self.scope(),
            headers: octet_stream(size),
            body: Some(&body),
            timeout: Some(upload_timeout(size)),
            what: what.to_owned(),
        })
    }

    /// The blob in PATCHes of at least the registry's minimum chunk
    /// (`OCI-Chunk-Min-Length`), each from where the registry's `Range`
    /// says it has the blob to, then the closing PUT.
    fn upload_chunks(
        &self,
        start: &Response,
        digest: &Digest,
        size: u64,
        what: &str,
    ) -> Result<Response, RegistryError> {
        let chunk = chunk_size(start);
        let mut url = self.registry.location(start, what)?;
        let mut offset = 0;
        while offset < size {
            let len = chunk.min(size - offset);
            let mut headers = octet_stream(len);
            let range = format!("{offset}-{}", offset + len - 1);
            headers.insert(
                CONTENT_RANGE,
                HeaderValue::from_str(&range).expect("digits and a dash"),
            );
            let body = self.blob_range(digest, offset, len);
            let answer = self.registry.send(&Request {
                method: Method::PATCH,
                url: url.clone(),
                scope: self.scope(),
                headers,
                body: Some(&body),
                timeout: Some(upload_timeout(len)),
                what: what.to_owned(),
            })?;
            if answer.status() != StatusCode::ACCEPTED {
                return Err(self.registry.status_error(what, answer));
            }
            // What the registry has: `0-LAST`; less than was sent is sent again.
            let had = received(&answer).unwrap_or(offset + len);
            if had <= offset || had > offset + len {
                return Err(RegistryError::Lied {
                    registry: self.registry.domain().to_owned(),
                    what: what.to_owned(),
                    message: format!("after bytes {range} the registry says it has {had}"),
                });
            }
            offset = had;
            url = self.registry.location(&answer, what)?;
        }
        url.query_pairs_mut()
            .append_pair("digest", &digest.to_string());
        self.registry.send(&Request {
            method: Method::PUT,
            url,
            scope: self.scope(),
            headers: octet_stream(0),
            body: None,
            timeout: None,
            what: what.to_owned(),
        })
    }

    /// A body of `len` bytes of the blob from `offset`, made anew for
    /// every attempt.
    fn blob_range(
        &self,
        digest: &Digest,
        offset: u64,
        len: u64,
    ) -> impl Fn() -> Result<Body, RegistryError> + '_ {
        let digest = *digest;
        move || {
            use std::io::{Read, Seek, SeekFrom};
            let mut file = self.store.blobs().open(&digest)?;
            file.seek(SeekFrom::Start(offset))
                .map_err(|e| kiln_store::StoreError::Io {
                    path: self.store.blobs().path(&digest),
                    source: e,
                })?;
            Ok(Body::sized(file.take(len), len))
        }
    }

    /// The size of the blob in the registry, if it has it (HEAD).
    fn remote_size(&self, digest: &Digest) -> Result<Option<u64>, RegistryError> {
        let what = format!("blob {digest}");
        let response = self.registry.send(&Request {
            method: Method::HEAD,
            url: self
                .registry
                .url(&format!("v2/{}/blobs/{digest}", self.repository))?,
            scope: self.scope(),
            headers: HeaderMap::new(),
            body: None,
            timeout: None,
            what: what.clone(),
        })?;
        match response.status() {
            StatusCode::OK => Ok(response
                .headers()
                .get(CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(self.registry.status_error(&what, response)),
        }
    }

    /// PUTs the manifest last; the registry's digest of it must be ours.
    fn manifest(
        &self,
        target: &str,
        media_type: &str,
        bytes: &[u8],
        digest: &Digest,
    ) -> Result<(), RegistryError> {
        let what = format!("manifest {}:{target}", self.repository);
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_str(media_type).map_err(|e| RegistryError::Unsupported {
                registry: self.registry.domain().to_owned(),
                what: what.clone(),
                message: format!("bad media type: {e}"),
            })?,
        );
        let owned = bytes.to_vec();
        let body = move || -> Result<Body, RegistryError> { Ok(Body::from(owned.clone())) };
        let response = self.registry.send(&Request {
            method: Method::PUT,
            url: self
                .registry
                .url(&format!("v2/{}/manifests/{target}", self.repository))?,
            scope: self.scope(),
            headers,
            body: Some(&body),
            timeout: None,
            what: what.clone(),
        })?;
        if response.status() != StatusCode::CREATED {
            return Err(self.registry.status_error(&what, response));
        }
        let said = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<Digest>().ok());
        if let Some(said) = said.filter(|said| said != digest) {
            return Err(RegistryError::mismatch(
                self.registry.domain(),
                &what,
                digest,
                &said,
            ));
        }
        Ok(())
    }
}
