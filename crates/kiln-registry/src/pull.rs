//! Pulling an image into the store: the manifest (through an index, for
//! the platform asked for), its config and layers, each verified against
//! its digest and size as it streams to disk, layers in parallel, blobs the
//! store has skipped. Nothing is tagged until everything is stored, and a
//! blob that does not match is never stored.

use std::io::{self, Read};
use std::sync::atomic::{AtomicUsize, Ordering};

use kiln_store::{Digest, Reference, Store, StoreError};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};

use crate::client::{chain, ClientOptions, Registry, Request};
use crate::error::RegistryError;
use crate::known::Known;
use crate::manifest::{digest_of, fetch, Descriptor, Fetched};
use crate::platform::Platform;

/// How many layers download at once.
const PARALLEL_LAYERS: usize = 3;

/// What a pull reports as it goes.
#[derive(Clone, Debug)]
pub enum PullEvent {
    /// The manifest the reference resolved to.
    Resolved { manifest: Digest, layers: usize },
    /// A blob the store already has.
    Present { digest: Digest, size: u64 },
    /// Bytes of a blob received so far (every 512 KiB or so).
    Progress {
        digest: Digest,
        done: u64,
        total: u64,
    },
    /// A blob downloaded and stored.
    Downloaded { digest: Digest, size: u64 },
}

/// How often a download reports its progress.
const PROGRESS_STEP: u64 = 512 * 1024;

/// What was pulled.
#[derive(Clone, Debug)]
pub struct Pulled {
    /// The image manifest (for an index, the platform's manifest).
    pub manifest: Digest,
    /// The name it is tagged with in the store, if the reference had one.
    pub tagged: Option<String>,
    /// The name now has another image than before the pull (or it had
    /// none); for a digest, a blob had to be downloaded.
    pub new: bool,
    /// Blobs downloaded (the others were in the store).
    pub downloaded: usize,
    pub bytes: u64,
}

/// Pulls `name` (`alpine`, `host:port/team/app:tag`, `...@sha256:...`)
/// into `store` for `platform`, and tags it with `name` when it names a tag.
pub fn pull(
    store: &Store,
    name: &str,
    platform: &Platform,
    options: &ClientOptions,
    events: &(dyn Fn(PullEvent) + Sync),
) -> Result<Pulled, RegistryError> {
    let reference = Reference::parse(name)?;
    let registry = Registry::connect(&reference.domain, options)?;
    let repository = reference.path.as_str();
    let target = manifest_reference(&reference);
    let what = format!("manifest {repository}:{target}");
    let top = fetch(&registry, repository, &target, &what)?;
    let manifest = if top.is_index() {
        let entry = choose(&top, platform, name)?;
        let digest = digest_of(&registry, &what, entry)?;
        let what = format!("manifest {repository}@{digest} ({platform})");
        let manifest = fetch(&registry, repository, &digest.to_string(), &what)?;
        if manifest.is_index() {
            return Err(RegistryError::Unsupported {
                registry: registry.domain().to_owned(),
                what,
                message: "an index inside an index".into(),
            });
        }
        manifest
    } else {
        top
    };
    let what = format!("manifest {repository}@{}", manifest.digest);
    let config = manifest
        .document
        .config
        .as_ref()
        .ok_or_else(|| RegistryError::Lied {
            registry: registry.domain().to_owned(),
            what: what.clone(),
            message: "an image manifest without a config".into(),
        })?;
    let mut blobs: Vec<(Digest, u64)> = vec![(digest_of(&registry, &what, config)?, config.size)];
    for layer in &manifest.document.layers {
        check_layer_type(&registry, &what, layer)?;
        blobs.push((digest_of(&registry, &what, layer)?, layer.size));
    }
    events(PullEvent::Resolved {
        manifest: manifest.digest,
        layers: manifest.document.layers.len(),
    });
    // A layer shared by two places in one image is fetched once.
    let mut unique = blobs.clone();
    unique.sort();
    unique.dedup();
    let (downloaded, bytes) = fetch_blobs(store, &registry, repository, &unique, events)?;
    // Last, so an image is in the store only once all it needs is.
    store
        .blobs()
        .put_reader(&manifest.bytes[..], Some(&manifest.digest))?;
    let tagged = tag_name(&reference, name, &manifest);
    // Docker's "Image is up to date": the name had this image already.
    let mut new = downloaded > 0;
    if let Some(tag) = &tagged {
        let before = store
            .resolve(tag)
            .ok()
            .and_then(|d| Digest::of_descriptor(&d).ok());
        new = before != Some(manifest.digest);
        let descriptor = kiln_store::descriptor(
            manifest.media_type.as_str().into(),
            &manifest.digest,
            manifest.bytes.len() as u64,
        )?;
        store.tag(tag, &descriptor)?;
    }
    Ok(Pulled {
        manifest: manifest.digest,
        tagged,
        new,
        downloaded,
        bytes,
    })
}

/// An artifact pulled into the store (see `push_artifact`).
#[derive(Clone, Debug)]
pub struct PulledArtifact {
    pub manifest: Digest,
    pub config: Vec<u8>,
    pub config_media_type: String,
    /// Its layers, in order, all in the store now.
    pub layers: Vec<Digest>,
}

/// Pulls the artifact `name` names (an image manifest, never an index)
/// into the store: config and layers checked as an image's are; nothing
/// is tagged (its blobs are leased to this process).
pub fn pull_artifact(
    store: &Store,
    name: &str,
    options: &ClientOptions,
    events: &(dyn Fn(PullEvent) + Sync),
) -> Result<PulledArtifact, RegistryError> {
    let reference = Reference::parse(name)?;
    let registry = Registry::connect(&reference.domain, options)?;
    let repository = reference.path.as_str();
    let target = manifest_reference(&reference);
    let what = format!("manifest {repository}:{target}");
    let manifest = fetch(&registry, repository, &target, &what)?;
    let config = match (&manifest.document.config, manifest.is_index()) {
        (Some(config), false) => config,
        _ => {
            return Err(RegistryError::Unsupported {
                registry: registry.domain().to_owned(),
                what,
                message: "not an image manifest".into(),
            })
        }
    };
    let config_digest = digest_of(&registry, &what, config)?;
    let mut blobs = vec![(config_digest, config.size)];
    for layer in &manifest.document.layers {
        blobs.push((digest_of(&registry, &what, layer)?, layer.size));
    }
    let mut unique = blobs.clone();
    unique.sort();
    unique.dedup();
    fetch_blobs(store, &registry, repository, &unique, events)?;
    Ok(PulledArtifact {
        manifest: manifest.digest,
        config: store.blobs().read(&config_digest)?,
        config_media_type: config.media_type.clone(),
        layers: blobs[1..].iter().map(|(digest, _)| *digest).collect(),
    })
}

/// What a manifest is asked for by: the reference's digest, else its tag
/// (`latest` when it has neither).
fn manifest_reference(reference: &Reference) -> String {
    match (&reference.digest, &reference.tag) {
        (Some(digest), _) => digest.to_string(),
        (None, Some(tag)) => tag.clone(),
        (None, None) => "latest".to_owned(),
    }
}

/// The name the pulled image is tagged with: the one given, when it names
/// a tag (or no tag, meaning `latest`), or a digest that is the manifest's.
fn tag_name(reference: &Reference, name: &str, manifest: &Fetched) -> Option<String> {
    match reference.digest {
        None => Some(name.to_owned()),
        Some(digest) if digest == manifest.digest => Some(name.to_owned()),
        // A digest of an index: the platform's manifest has no name of its own.
        Some(_) => None,
    }
}

/// The index entry for `platform`; attestations (`unknown/unknown`) never.
fn choose<'a>(
    index: &'a Fetched,
    platform: &Platform,
    name: &str,
) -> Result<&'a Descriptor, RegistryError> {
    let images = index.document.manifests.iter().filter(|entry| {
        entry
            .platform
            .as_ref()
            .is_some_and(|p| p.os != "unknown" && p.architecture != "unknown")
    });
    let mut available = Vec::new();
    for entry in images {
        let p = entry.platform.as_ref().expect("filtered on a platform");
        if platform.matches(&p.os, &p.architecture, p.variant.as_deref()) {
            return Ok(entry);
        }
        let mut shown = format!("{}/{}", p.os, p.architecture);
        if let Some(variant) = &p.variant {
            shown.push('/');
            shown.push_str(variant);
        }
        available.push(shown);
    }
    Err(RegistryError::NoPlatform {
        reference: name.to_owned(),
        wanted: platform.to_string(),
        available: if available.is_empty() {
            "nothing but attestations".into()
        } else {
            available.join(", ")
        },
    })
}

/// Layers kiln can unpack: tars, plain, gzip or zstd.
fn check_layer_type(
    registry: &Registry,
    what: &str,
    layer: &Descriptor,
) -> Result<(), RegistryError> {
    let known = [
        "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.oci.image.layer.v1.tar+zstd",
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
    ];
    if known.contains(&layer.media_type.as_str()) {
        return Ok(());
    }
    Err(RegistryError::Unsupported {
        registry: registry.domain().to_owned(),
        what: what.to_owned(),
        message: format!(
            "layer {} is of type {:?}, which kiln cannot unpack (foreign and non-distributable layers are not pulled)",
            layer.digest, layer.media_type
        ),
    })
}

/// Downloads the blobs the store lacks, `PARALLEL_LAYERS` at a time, and
/// notes that `repository` holds them all (for later mounts); returns how
/// many were downloaded and their bytes.
fn fetch_blobs(
    store: &Store,
    registry: &Registry,
    repository: &str,
    blobs: &[(Digest, u64)],
    events: &(dyn Fn(PullEvent) + Sync),
) -> Result<(usize, u64), RegistryError> {
    let next = AtomicUsize::new(0);
    // One failed blob fails the pull: the others start no new download.
    let failed = std::sync::atomic::AtomicBool::new(false);
    let results: Vec<Result<(usize, u64), RegistryError>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..PARALLEL_LAYERS.min(blobs.len()))
            .map(|_| {
                scope.spawn(|| {
                    let (mut count, mut bytes) = (0, 0);
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&(digest, size)) = blobs.get(i) else {
                            return Ok((count, bytes));
                        };
                        if failed.load(Ordering::Relaxed) {
                            return Ok((count, bytes));
                        }
                        // Leased by the check, so GC leaves it to this pull.
                        if store.blobs().size(&digest) == Some(size) && store.lease(&digest).is_ok()
                        {
                            events(PullEvent::Present { digest, size });
                            continue;
                        }
                        if let Err(e) =
                            fetch_blob(store, registry, repository, &digest, size, events)
                        {
                            failed.store(true, Ordering::Relaxed);
                            return Err(e);
                        }
                        events(PullEvent::Downloaded { digest, size });
                        count += 1;
                        bytes += size;
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|_| Err(io_panic(registry))))
            .collect()
    });
    let (mut count, mut bytes) = (0, 0);
    for result in results {
        let (c, b) = result?;
        count += c;
        bytes += b;
    }
    let known = Known::new(store, registry.domain());
    for (digest, _) in blobs {
        known.record(repository, digest);
    }
    Ok((count, bytes))
}

fn io_panic(registry: &Registry) -> RegistryError {
    RegistryError::Connection {
        registry: registry.domain().to_owned(),
        message: "a download thread failed".into(),
    }
}

/// One blob, streamed to the store through its digest and size checks.
fn fetch_blob(
    store: &Store,
    registry: &Registry,
    repository: &str,
    digest: &Digest,
    size: u64,
    events: &(dyn Fn(PullEvent) + Sync),
) -> Result<(), RegistryError> {
    let what = format!("blob {digest}");
    let response = registry.send(&Request {
        method: Method::GET,
        url: registry.url(&format!("v2/{repository}/blobs/{digest}"))?,
        scope: format!("repository:{repository}:pull"),
        headers: HeaderMap::new(),
        body: None,
        timeout: None,
        what: what.clone(),
    })?;
    if response.status() != StatusCode::OK {
        return Err(registry.status_error(&what, response));
    }
    let counted = Counted {
        inner: response,
        digest: *digest,
        total: size,
        done: 0,
        reported: 0,
        events,
    };
    let mut sized = Sized {
        inner: counted,
        size,
        left: size,
        problem: None,
    };
    let stored = store.blobs().put_reader(&mut sized, Some(digest));
    let lied = |message: String| RegistryError::Lied {
        registry: registry.domain().to_owned(),
        what: what.clone(),
        message,
    };
    if let Some(problem) = sized.problem {
        return Err(match problem {
            SizeProblem::Short(got) => lied(format!("the registry sent {got} of its {size} bytes")),
            SizeProblem::Long => lied(format!("the registry sent more than its {size} bytes")),
            SizeProblem::Read(message) => RegistryError::Connection {
                registry: registry.domain().to_owned(),
                message: format!("{what}: {message}"),
            },
        });
    }
    match stored {
        Ok(_) => Ok(()),
        Err(StoreError::DigestMismatch { expected, actual }) => Err(RegistryError::mismatch(
            registry.domain(),
            &what,
            &expected,
            &actual,
        )),
        Err(e) => Err(e.into()),
    }
}

/// A body whose progress is reported as it is read.
struct Counted<'a, R> {
    inner: R,
    digest: Digest,
    total: u64,
    done: u64,
    reported: u64,
    events: &'a (dyn Fn(PullEvent) + Sync),
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        if self.done - self.reported >= PROGRESS_STEP || (n == 0 && self.done > self.reported) {
            self.reported = self.done;
            (self.events)(PullEvent::Progress {
                digest: self.digest,
                done: self.done,
                total: self.total,
            });
        }
        Ok(n)
    }
}

enum SizeProblem {
    Short(u64),
    Long,
    Read(String),
}

/// A body that must be exactly `left` bytes long: more or fewer is an
/// error (kept in `problem`, so the caller can say which).
struct Sized<R> {
    inner: R,
    size: u64,
    left: u64,
    problem: Option<SizeProblem>,
}

impl<R: Read> Read for Sized<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            // One byte past the end says whether the body is longer.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe) {
                Ok(0) => Ok(0),
                Ok(_) => {
                    self.problem = Some(SizeProblem::Long);
                    Err(io::Error::other("longer than its size"))
                }
                Err(e) => self.fail(e),
            };
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        match self.inner.read(&mut buf[..want]) {
            Ok(0) => {
                self.problem = Some(SizeProblem::Short(self.size - self.left));
                Err(io::Error::other("shorter than its size"))
            }
            Ok(n) => {
                self.left -= n as u64;
                Ok(n)
            }
            Err(e) => self.fail(e),
        }
    }
}

impl<R> Sized<R> {
    fn fail(&mut self, e: io::Error) -> io::Result<usize> {
        self.problem = Some(SizeProblem::Read(chain(&e)));
        Err(e)
    }
}
