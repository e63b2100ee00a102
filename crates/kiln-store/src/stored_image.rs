//! Reading an image back: its manifest as oci-spec's type, its config, and
//! its layers as plain tars. A compressed layer (loaded or, later, pulled)
//! is expanded once into a plain tar blob and checked against the config's
//! diffID, so everything above the store works on plain tars whose digest
//! is their diffID.

use oci_spec::image::{ImageManifest, MediaType};
use serde_json::Value;

use crate::digest::Digest;
use crate::error::StoreError;
use crate::layer::{open_layer, Layer};
use crate::store::Store;

/// An image as the store holds it.
#[derive(Clone, Debug)]
pub struct StoredImage {
    pub manifest_digest: Digest,
    pub manifest: ImageManifest,
    pub config_digest: Digest,
    /// The config document as stored: fields kiln does not model stay, for
    /// an image built on this one.
    pub config: Value,
    /// Plain tar layers, bottom first.
    pub layers: Vec<Layer>,
}

impl Store {
    /// The image whose manifest is `manifest`, leased first (GC keeps it
    /// while this process uses it, whatever `rmi` does), its compressed
    /// layers expanded.
    pub fn image(&self, manifest: &Digest) -> Result<StoredImage, StoreError> {
        let bad = |message: String| StoreError::Corrupt {
            path: self.blobs().path(manifest),
            message,
        };
        self.lease(manifest)?;
        let manifest_doc: ImageManifest = serde_json::from_slice(&self.blobs().read(manifest)?)
            .map_err(|e| bad(format!("not an image manifest: {e}")))?;
        let config_digest = Digest::of_descriptor(manifest_doc.config())?;
        let config: Value = serde_json::from_slice(&self.blobs().read(&config_digest)?)
            .map_err(|e| bad(format!("its config does not parse: {e}")))?;
        let diff_ids: Vec<&str> = config["rootfs"]["diff_ids"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let mut layers = Vec::new();
        for (n, descriptor) in manifest_doc.layers().iter().enumerate() {
            let digest = Digest::of_descriptor(descriptor)?;
            let media_type = descriptor.media_type().to_string();
            if is_plain_tar(descriptor.media_type()) {
                layers.push(Layer {
                    digest,
                    size: descriptor.size(),
                    entries: 0,
                });
                continue;
            }
            let compressed = ["tar+gzip", "tar.gzip", "tar+zstd"];
            if !compressed.iter().any(|suffix| media_type.ends_with(suffix)) {
                return Err(StoreError::Unsupported(format!(
                    "image {manifest}: layers of type {media_type} are not supported yet"
                )));
            }
            let diff_id: Digest = diff_ids
                .get(n)
                .ok_or_else(|| bad(format!("its config has no diff_id for layer {n}")))?
                .parse()?;
            if !self.blobs().contains(&diff_id) {
                // Verified against the diffID as it is stored.
                let plain = open_layer(self.blobs(), &digest)?;
                self.blobs().put_reader(plain, Some(&diff_id))?;
            }
            let size = self.blobs().size(&diff_id).unwrap_or(0);
            layers.push(Layer {
                digest: diff_id,
                size,
                entries: 0,
            });
        }
        Ok(StoredImage {
            manifest_digest: *manifest,
            manifest: manifest_doc,
            config_digest,
            config,
            layers,
        })
    }
}

fn is_plain_tar(media_type: &MediaType) -> bool {
    matches!(media_type, MediaType::ImageLayer) || media_type.to_string().ends_with("tar")
}
