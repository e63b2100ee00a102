//! Images from the store as build inputs: a base image's layers (compressed
//! ones expanded once to plain tars, checked against the config's diffIDs)
//! and config, and an image unpacked into a directory.

use std::path::Path;

use kiln_graph::ImageConfig;
use kiln_store::{Digest, Layer, Store};
use serde_json::Value;

use crate::error::BuildError;
use crate::rootfs;

/// A base image as stored: its layers and its config document.
#[derive(Clone, Debug)]
pub struct BaseImage {
    /// The manifest the reference resolved to.
    pub manifest: Digest,
    pub layers: Vec<Layer>,
    pub config: Value,
}

impl BaseImage {
    /// The platform its config says it is for (`os`, `architecture`,
    /// `variant`), normalised; none when the config says nothing usable.
    pub fn platform(&self) -> Option<kiln_graph::Platform> {
        let os = self.config["os"].as_str()?;
        let architecture = self.config["architecture"].as_str()?;
        let text = match self.config["variant"].as_str() {
            Some(variant) => format!("{os}/{architecture}/{variant}"),
            None => format!("{os}/{architecture}"),
        };
        kiln_graph::Platform::parse(&text).ok()
    }

    /// The runtime config part, for planning and `kiln run`. An image
    /// without one has the empty config; one that does not parse is an
    /// error (never silently empty: that would drop the base's ENV, CMD...).
    pub fn image_config(&self) -> Result<ImageConfig, BuildError> {
        match &self.config["config"] {
            Value::Null => Ok(ImageConfig::default()),
            config => serde_json::from_value(config.clone()).map_err(|e| BuildError::BaseImage {
                reference: self.manifest.to_string(),
                message: format!("its image config does not parse: {e}"),
            }),
        }
    }
}

/// Resolves `reference` in the store and loads it.
pub fn load_base(store: &Store, reference: &str) -> Result<BaseImage, BuildError> {
    load_image(store, &resolve_base(store, reference)?, reference)
}

/// The manifest digest `reference` names in the store now.
pub fn resolve_base(store: &Store, reference: &str) -> Result<Digest, BuildError> {
    let descriptor = store
        .resolve(reference)
        .map_err(|_| BuildError::BaseImage {
            reference: reference.to_owned(),
            message: "not in the store (kiln pull, kiln import or kiln load puts it there)".into(),
        })?;
    Ok(Digest::of_descriptor(&descriptor)?)
}

/// The base a build resolved `reference` to before it started: a tag moved
/// meanwhile changes nothing in this build.
pub(crate) fn pinned_base(
    store: &Store,
    pinned: &std::collections::BTreeMap<String, Digest>,
    reference: &str,
) -> Result<BaseImage, BuildError> {
    let digest = pinned.get(reference).ok_or_else(|| BuildError::BaseImage {
        reference: reference.to_owned(),
        message: "was not resolved before the build".into(),
    })?;
    load_image(store, digest, reference)
}

/// Loads the image whose manifest is `manifest_digest` (`reference` names
/// it in errors).
pub fn load_image(
    store: &Store,
    manifest_digest: &Digest,
    reference: &str,
) -> Result<BaseImage, BuildError> {
    let fail = |message: String| BuildError::BaseImage {
        reference: reference.to_owned(),
        message,
    };
    let image = store.image(manifest_digest).map_err(|e| match e {
        kiln_store::StoreError::MissingBlob(_) => {
            fail("removed from the store while being read".into())
        }
        other => fail(other.to_string()),
    })?;
    Ok(BaseImage {
        manifest: image.manifest_digest,
        layers: image.layers,
        config: image.config,
    })
}

/// The layers of the image whose manifest is `manifest`, bottom first.
fn image_layers(store: &Store, manifest: &Digest) -> Result<Vec<Layer>, BuildError> {
    Ok(store.image(manifest)?.layers)
}

/// Unpacks the image whose manifest is `manifest` into `dir` (for
/// `--output type=local`): its layers applied in order, whiteouts honoured.
pub fn unpack_image(store: &Store, manifest: &Digest, dir: &Path) -> Result<(), BuildError> {
    let layers = image_layers(store, manifest)?;
    std::fs::create_dir_all(dir).map_err(|e| BuildError::io(dir, e))?;
    // Files written where the user asked are theirs, as they were before.
    rootfs::unpack(store, &layers, dir, rootfs::Owners::Caller)
}

/// Writes the file system of the image whose manifest is `manifest` to
/// `out` as one tar (for `--output type=tar`): its layers squashed tar to
/// tar, whiteouts applied, owners, modes, links and xattrs kept, nothing
/// written on the host. Returns how many entries the tar holds.
pub fn write_image_tar(
    store: &Store,
    manifest: &Digest,
    out: impl std::io::Write,
) -> Result<u64, BuildError> {
    let layers = image_layers(store, manifest)?;
    let digests: Vec<Digest> = layers.iter().map(|layer| layer.digest).collect();
    Ok(kiln_store::squash_layers(store.blobs(), &digests, out)?)
}

/// A new image: the image `base` (a reference or id) with `layer` on top
/// and a history entry saying `comment` (what `kiln commit` makes).
pub fn commit_layer(
    store: &Store,
    base: &str,
    layer: Layer,
    created: &str,
    comment: &str,
) -> Result<kiln_store::ImageRecord, BuildError> {
    let image = load_base(store, base)?;
    let mut config = image.config;
    let mut layers = image.layers;
    layers.push(layer);
    config["rootfs"] = serde_json::json!({
        "type": "layers",
        "diff_ids": layers.iter().map(|l| l.digest.to_string()).collect::<Vec<_>>(),
    });
    let mut history = config["history"].as_array().cloned().unwrap_or_default();
    history.push(serde_json::json!({"created": created, "created_by": comment}));
    config["history"] = history.into();
    config["created"] = created.into();
    let bytes = serde_json::to_vec(&config)
        .map_err(|e| BuildError::step(0, format!("image config: {e}")))?;
    Ok(kiln_store::write_image(store, &bytes, &layers)?)
}
