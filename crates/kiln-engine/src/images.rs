//! Where a build's image references come from. A build resolves every
//! reference of its plan once, through one [`ImageSource`], to a manifest
//! digest and a config; the executor then loads digests only. The store
//! is the source today ([`LocalImages`]); the registry client plugs in
//! here (pull into the store, answer with the pulled digest).

use kiln_graph::ImageConfig;
use kiln_store::{Digest, Store};

use crate::EngineError;

/// A reference pinned for one build.
#[derive(Clone, Debug)]
pub struct ResolvedImage {
    pub manifest: Digest,
    /// The runtime config (its ENV, WORKDIR, ONBUILD matter to the plan).
    pub config: ImageConfig,
}

/// Answers image references with images in `store`.
pub trait ImageSource: Send + Sync {
    fn resolve(&self, store: &Store, reference: &str) -> Result<ResolvedImage, EngineError>;
}

/// The images the store already has (tags, or ids/digests of tagged images).
#[derive(Clone, Copy, Debug, Default)]
pub struct LocalImages;

impl ImageSource for LocalImages {
    fn resolve(&self, store: &Store, reference: &str) -> Result<ResolvedImage, EngineError> {
        let manifest = kiln_build::resolve_base(store, reference)?;
        // Loading leases it: GC keeps it for this process from now on.
        let image = kiln_build::load_image(store, &manifest, reference)?;
        Ok(ResolvedImage {
            config: image.image_config()?,
            manifest,
        })
    }
}
