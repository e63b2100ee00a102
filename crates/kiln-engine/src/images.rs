//! Where a build's image references come from. A build resolves every
//! reference of its plan once, through one [`ImageSource`], to a manifest
//! digest and a config; the executor then loads digests only. The store
//! answers what it has ([`LocalImages`]); [`PullingImages`] pulls what it
//! lacks (or, with `--pull`, every tag again) and answers with the
//! pulled manifest's digest, which is what cache keys hash: a tag that
//! moved is a different base.

use kiln_build::BuildError;
use kiln_graph::ImageConfig;
use kiln_registry::{ClientOptions, Platform};
use kiln_store::{Digest, Store};

use crate::EngineError;

/// A reference pinned for one build.
#[derive(Clone, Debug)]
pub struct ResolvedImage {
    pub manifest: Digest,
    /// The runtime config (its ENV, WORKDIR, ONBUILD matter to the plan).
    pub config: ImageConfig,
    /// The platform its config says it is for, if it says.
    pub platform: Option<kiln_graph::Platform>,
}

/// Answers image references with images in `store`. `registry` is the
/// request's own registry options (its credentials, TLS, allow list):
/// one source serves every request of a daemon, each with its client's.
pub trait ImageSource: Send + Sync {
    fn resolve(
        &self,
        store: &Store,
        reference: &str,
        registry: &ClientOptions,
    ) -> Result<ResolvedImage, EngineError>;

    /// As [`ImageSource::resolve`], for a build asked to look again
    /// (`--pull`): a source that can fetch fetches even what the store
    /// has. The store alone answers as `resolve` does.
    fn resolve_fresh(
        &self,
        store: &Store,
        reference: &str,
        registry: &ClientOptions,
    ) -> Result<ResolvedImage, EngineError> {
        self.resolve(store, reference, registry)
    }
}

/// The images the store already has (tags, or ids/digests of tagged images).
#[derive(Clone, Copy, Debug, Default)]
pub struct LocalImages;

impl ImageSource for LocalImages {
    fn resolve(
        &self,
        store: &Store,
        reference: &str,
        _registry: &ClientOptions,
    ) -> Result<ResolvedImage, EngineError> {
        let manifest = kiln_build::resolve_base(store, reference)?;
        ResolvedImage::load(store, manifest, reference)
    }
}

impl ResolvedImage {
    /// The stored image `manifest` pinned for `reference`. Loading leases
    /// it: GC keeps it for this process from now on.
    fn load(
        store: &Store,
        manifest: Digest,
        reference: &str,
    ) -> Result<ResolvedImage, EngineError> {
        let image = kiln_build::load_image(store, &manifest, reference)?;
        Ok(ResolvedImage {
            config: image.image_config()?,
            platform: image.platform(),
            manifest,
        })
    }
}

/// The store's images, and what it lacks pulled from the registry the
/// reference names.
#[derive(Clone, Debug)]
pub struct PullingImages {
    /// The platform an index is resolved for.
    pub platform: Platform,
}

impl ImageSource for PullingImages {
    fn resolve(
        &self,
        store: &Store,
        reference: &str,
        registry: &ClientOptions,
    ) -> Result<ResolvedImage, EngineError> {
        // An image the store has is used (its own errors are its own: a
        // damaged image is not pulled over); only a missing one is pulled.
        if store.resolve(reference).is_ok() {
            return LocalImages.resolve(store, reference, registry);
        }
        self.pull(
            store,
            reference,
            registry,
            "is not in the store and cannot be pulled",
        )
    }

    fn resolve_fresh(
        &self,
        store: &Store,
        reference: &str,
        registry: &ClientOptions,
    ) -> Result<ResolvedImage, EngineError> {
        self.pull(store, reference, registry, "cannot be pulled")
    }
}

impl PullingImages {
    fn pull(
        &self,
        store: &Store,
        reference: &str,
        registry: &ClientOptions,
        failed: &str,
    ) -> Result<ResolvedImage, EngineError> {
        let pulled = kiln_registry::pull(store, reference, &self.platform, registry, &|_| {})
            .map_err(|e| {
                EngineError::Build(BuildError::BaseImage {
                    reference: reference.to_owned(),
                    message: format!("{failed}: {e}"),
                })
            })?;
        ResolvedImage::load(store, pulled.manifest, reference)
    }
}
