//! Writing an image: the config blob as given (the caller owns its
//! contents), and an OCI manifest listing it and the layers, serialised
//! deterministically so the same inputs give the same manifest digest.

use oci_spec::image::{Descriptor, DescriptorBuilder, ImageManifestBuilder, MediaType};

use crate::digest::Digest;
use crate::error::StoreError;
use crate::layer::Layer;
use crate::store::Store;

/// An image written to the store.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageRecord {
    /// The manifest's descriptor, to tag.
    pub manifest: Descriptor,
    pub config: Digest,
}

pub fn descriptor(
    media_type: MediaType,
    digest: &Digest,
    size: u64,
) -> Result<Descriptor, StoreError> {
    let digest: oci_spec::image::Digest = digest
        .to_string()
        .parse()
        .map_err(|e: oci_spec::OciSpecError| StoreError::Unsupported(e.to_string()))?;
    DescriptorBuilder::default()
        .media_type(media_type)
        .digest(digest)
        .size(size)
        .build()
        .map_err(|e| StoreError::Unsupported(e.to_string()))
}

/// Stores `config_json` and a manifest for it and `layers` (plain tar
/// layers already in the store).
pub fn write_image(
    store: &Store,
    config_json: &[u8],
    layers: &[Layer],
) -> Result<ImageRecord, StoreError> {
    for layer in layers {
        if !store.blobs().contains(&layer.digest) {
            return Err(StoreError::MissingBlob(layer.digest));
        }
    }
    let config = store.blobs().put(config_json)?;
    let layer_descriptors = layers
        .iter()
        .map(|l| descriptor(MediaType::ImageLayer, &l.digest, l.size))
        .collect::<Result<Vec<_>, _>>()?;
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(descriptor(
            MediaType::ImageConfig,
            &config,
            config_json.len() as u64,
        )?)
        .layers(layer_descriptors)
        .build()
        .map_err(|e| StoreError::Unsupported(e.to_string()))?;
    let bytes = serde_json::to_vec(&manifest).map_err(|source| StoreError::Json {
        what: "image manifest".into(),
        source,
    })?;
    let digest = store.blobs().put(&bytes)?;
    Ok(ImageRecord {
        manifest: descriptor(MediaType::ImageManifest, &digest, bytes.len() as u64)?,
        config,
    })
}

/// A base image made from a root filesystem tarball (`kiln import`): one
/// layer, an empty runtime config, one history entry.
pub struct RootfsImport<'a> {
    /// Names the archive in errors and in the history entry.
    pub source: &'a str,
    pub os: &'a str,
    pub architecture: &'a str,
    pub variant: Option<&'a str>,
    /// RFC 3339 creation time (the caller decides: now, or SOURCE_DATE_EPOCH).
    pub created: &'a str,
}

/// Imports a root filesystem tarball (plain or gzip) as a one-layer image.
pub fn import_rootfs(
    store: &Store,
    archive: impl std::io::Read,
    import: &RootfsImport<'_>,
) -> Result<ImageRecord, StoreError> {
    let layer = crate::layer::import_layer(store.blobs(), archive, import.source)?;
    let mut config = serde_json::json!({
        "created": import.created,
        "architecture": import.architecture,
        "os": import.os,
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [layer.digest.to_string()]},
        "history": [{"created": import.created, "created_by": format!("kiln import {}", import.source)}],
    });
    if let Some(variant) = import.variant {
        config["variant"] = variant.into();
    }
    let bytes = serde_json::to_vec(&config).map_err(|source| StoreError::Json {
        what: "image config".into(),
        source,
    })?;
    write_image(store, &bytes, &[layer])
}
