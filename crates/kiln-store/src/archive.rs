//! Image archives: `kiln save` writes an OCI archive (a tar of an OCI
//! layout, what `skopeo copy oci-archive:` reads) or a docker-archive (what
//! `docker load` reads); `kiln load` reads either back. Layers are
//! compressed (gzip, or zstd on request) on the way out, since the store
//! keeps them plain; every blob read from an archive is checked against its
//! digest before it is stored.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::path::Path;

use serde_json::{json, Value};

use crate::compression::{compress_layer, LayerCompression};
use crate::digest::Digest;
use crate::error::StoreError;
use crate::store::{Store, REF_NAME};

/// The two archive formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchiveFormat {
    Oci,
    Docker,
}

fn json_error(what: &str) -> impl FnOnce(serde_json::Error) -> StoreError + '_ {
    move |source| StoreError::Json {
        what: what.to_owned(),
        source,
    }
}

fn read_json(store: &Store, digest: &Digest, what: &str) -> Result<Value, StoreError> {
    serde_json::from_slice(&store.blobs().read(digest)?).map_err(json_error(what))
}

fn digest_at(value: &Value, what: &str) -> Result<Digest, StoreError> {
    value
        .as_str()
        .ok_or_else(|| StoreError::Unsupported(format!("{what}: missing digest")))?
        .parse()
}

fn append_bytes<W: Write>(tar: &mut tar::Builder<W>, path: &str, bytes: &[u8]) -> io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_mode(0o644);
    header.set_size(bytes.len() as u64);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, path, bytes)
}

/// Writes the images `names` (each resolved in the store) to `out`. Plain
/// layers are compressed with `compression` in OCI archives; docker-archives
/// carry them plain, as `docker save` does.
pub fn save(
    store: &Store,
    names: &[String],
    format: ArchiveFormat,
    compression: LayerCompression,
    out: impl Write,
) -> Result<(), StoreError> {
    let mut tar = tar::Builder::new(out);
    let io_err = |e| StoreError::io("archive", e);
    let mut index_manifests = Vec::new();
    let mut docker_manifest = Vec::new();
    let mut written: BTreeMap<Digest, ()> = BTreeMap::new();
    let mut put_blob =
        |tar: &mut tar::Builder<_>, digest: &Digest, path: String| -> Result<(), StoreError> {
            if written.insert(*digest, ()).is_some() {
                return Ok(());
            }
            let file = store.blobs().open(digest)?;
            let len = file
                .metadata()
                .map_err(|e| StoreError::io(store.blobs().path(digest), e))?
                .len();
            let mut header = tar::Header::new_gnu();
            header.set_mode(0o644);
            header.set_size(len);
            header.set_mtime(0);
            header.set_entry_type(tar::EntryType::Regular);
            tar.append_data(&mut header, path, file).map_err(io_err)
        };
    for name in names {
        let descriptor = store.resolve(name)?;
        let manifest_digest = Digest::of_descriptor(&descriptor)?;
        let manifest = read_json(store, &manifest_digest, "manifest")?;
        let config_digest = digest_at(&manifest["config"]["digest"], "manifest config")?;
        let layers: Vec<Value> = manifest["layers"].as_array().cloned().unwrap_or_default();
        match format {
            ArchiveFormat::Oci => {
                put_blob(
                    &mut tar,
                    &config_digest,
                    format!("blobs/sha256/{}", config_digest.hex()),
                )?;
                let mut out_layers = Vec::new();
                for layer in &layers {
                    let digest = digest_at(&layer["digest"], "manifest layer")?;
                    let media_type = layer["mediaType"].as_str().unwrap_or_default();
                    let (blob, size, media_type) = if media_type.ends_with(".tar") {
                        let (blob, size) = compress_layer(store, &digest, compression)?;
                        (blob, size, compression.media_type().to_owned())
                    } else {
                        (
                            digest,
                            layer["size"].as_u64().unwrap_or(0),
                            media_type.to_owned(),
                        )
                    };
                    put_blob(&mut tar, &blob, format!("blobs/sha256/{}", blob.hex()))?;
                    out_layers.push(
                        json!({"mediaType": media_type, "digest": blob.to_string(), "size": size}),
                    );
                }
                let mut out_manifest = manifest.clone();
                out_manifest["layers"] = Value::Array(out_layers);
                let bytes = serde_json::to_vec(&out_manifest).map_err(json_error("manifest"))?;
                let digest = store.blobs().put(&bytes)?;
                put_blob(&mut tar, &digest, format!("blobs/sha256/{}", digest.hex()))?;
                index_manifests.push(json!({
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": digest.to_string(),
                    "size": bytes.len(),
                    "annotations": {REF_NAME: name},
                }));
            }
            ArchiveFormat::Docker => {
                put_blob(
                    &mut tar,
                    &config_digest,
                    format!("{}.json", config_digest.hex()),
                )?;
                let mut paths = Vec::new();
                for layer in &layers {
                    let digest = digest_at(&layer["digest"], "manifest layer")?;
                    put_blob(&mut tar, &digest, format!("{}/layer.tar", digest.hex()))?;
                    paths.push(format!("{}/layer.tar", digest.hex()));
                }
                let tag = match crate::reference::Reference::parse(name) {
                    Ok(r) if r.digest.is_none() => vec![r.familiar()],
                    _ => vec![],
                };
                docker_manifest.push(json!({
                    "Config": format!("{}.json", config_digest.hex()),
                    "RepoTags": tag,
                    "Layers": paths,
                }));
            }
        }
    }
    match format {
        ArchiveFormat::Oci => {
            append_bytes(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)
                .map_err(io_err)?;
            let index = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": index_manifests});
            let bytes = serde_json::to_vec(&index).map_err(json_error("index"))?;
            append_bytes(&mut tar, "index.json", &bytes).map_err(io_err)?;
        }
        ArchiveFormat::Docker => {
            let bytes =
                serde_json::to_vec(&docker_manifest).map_err(json_error("manifest.json"))?;
            append_bytes(&mut tar, "manifest.json", &bytes).map_err(io_err)?;
        }
    }
    tar.into_inner().map_err(io_err)?.flush().map_err(io_err)
}

/// The most an archive's small files (index.json, manifest.json, a
/// docker-archive's configs) and the names of its entries may take in
/// memory, all together: they are kept until the whole archive is read, so
/// without a bound an archive streamed on standard input grew kiln without
/// end (1.2 GB of `.json` entries took 1.2 GB; 300 entries with names of
/// 1 MB, 311 MB). Real archives take kilobytes.
pub const MAX_ARCHIVE_JSON_BYTES: u64 = 64 << 20;

/// Reads an OCI archive or docker-archive; stores every blob (verified),
/// and tags the images it names. Returns the names tagged.
pub fn load(store: &Store, archive: impl Read, what: &str) -> Result<Vec<String>, StoreError> {
    let (archive, header_budget) = crate::tar_headers::limit_headers(archive);
    let mut tar = tar::Archive::new(archive);
    let bad = |e: io::Error| StoreError::io(what, e);
    // Small JSON files are kept by path; blobs go straight to the store.
    let mut small: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut stored: BTreeMap<String, (Digest, u64)> = BTreeMap::new();
    // `docker save A B` writes a layer the images share once and links the
    // other `layer.tar` to it: links are followed inside the archive only.
    let mut links: BTreeMap<String, String> = BTreeMap::new();
    let mut kept = Kept {
        left: MAX_ARCHIVE_JSON_BYTES,
        what,
    };
    let mut entries = tar.entries().map_err(bad)?;
    while let Some(entry) = header_budget.next(&mut entries) {
        let mut entry = entry.map_err(bad)?;
        let kind = entry.header().entry_type();
        let path = entry
            .path()
            .map_err(bad)?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_owned();
        if kind.is_symlink() {
            if let Some(target) = entry.link_name().map_err(bad)? {
                let target = target.to_string_lossy().into_owned();
                if let Some(resolved) = resolve_in_archive(&path, &target) {
                    kept.take(path.len() + resolved.len(), &path)?;
                    links.insert(path, resolved);
                }
            }
            continue;
        }
        if !kind.is_file() {
            crate::tar_headers::drain(&mut entry).map_err(bad)?;
            continue;
        }
        kept.take(path.len(), &path)?;
        if let Some(hex) = path.strip_prefix("blobs/sha256/") {
            let expected: Digest = format!("sha256:{hex}").parse()?;
            let (digest, size) = store.blobs().put_reader(&mut entry, Some(&expected))?;
            stored.insert(path, (digest, size));
        } else if path.ends_with(".json") || path == "oci-layout" {
            let bytes = kept.read(&mut entry, &path)?;
            small.insert(path, bytes);
        } else {
            // docker-archive layers: stored under their content digest,
            // checked against the config's diff_ids below.
            let (digest, size) = store.blobs().put_reader(&mut entry, None)?;
            stored.insert(path, (digest, size));
        }
    }
    if let Some(index) = small.get("index.json") {
        let index: Value = serde_json::from_slice(index).map_err(json_error("index.json"))?;
        let mut tags = Vec::new();
        for manifest in index["manifests"].as_array().into_iter().flatten() {
            let descriptor: oci_spec::image::Descriptor = serde_json::from_value(manifest.clone())
                .map_err(json_error("index.json descriptor"))?;
            let digest = Digest::of_descriptor(&descriptor)?;
            let reach = store.reachable(&[digest])?;
            if let Some(missing) = reach.missing.into_iter().next() {
                return Err(StoreError::Unsupported(format!(
                    "{what}: blob {missing} is missing from the archive"
                )));
            }
            if let Some(name) = manifest["annotations"][REF_NAME].as_str() {
                tags.push((name.to_owned(), descriptor));
            }
        }
        return tag_all(store, tags);
    }
    let manifest = small.get("manifest.json").ok_or_else(|| {
        StoreError::Unsupported(format!(
            "{what}: neither an OCI archive (index.json) nor a docker-archive (manifest.json)"
        ))
    })?;
    let images: Vec<Value> =
        serde_json::from_slice(manifest).map_err(json_error("manifest.json"))?;
    let mut tags = Vec::new();
    for image in images {
        let config_path = image["Config"].as_str().unwrap_or_default().to_owned();
        let config = small.get(&config_path).ok_or_else(|| {
            StoreError::Unsupported(format!("{what}: config {config_path} is missing"))
        })?;
        let config_value: Value =
            serde_json::from_slice(config).map_err(json_error("image config"))?;
        let diff_ids: Vec<String> = config_value["rootfs"]["diff_ids"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| d.as_str().map(str::to_owned))
            .collect();
        let mut layers = Vec::new();
        for (n, path) in image["Layers"].as_array().into_iter().flatten().enumerate() {
            let path = follow_links(&links, path.as_str().unwrap_or_default());
            let (digest, size) = *stored.get(path).ok_or_else(|| {
                StoreError::Unsupported(format!("{what}: layer {path} is missing"))
            })?;
            if diff_ids.get(n) != Some(&digest.to_string()) {
                return Err(StoreError::DigestMismatch {
                    expected: diff_ids
                        .get(n)
                        .and_then(|d| d.parse().ok())
                        .unwrap_or(digest),
                    actual: digest,
                });
            }
            layers.push(crate::layer::Layer {
                digest,
                size,
                entries: 0,
            });
        }
        let record = crate::image::write_image(store, config, &layers)?;
        for tag in image["RepoTags"].as_array().into_iter().flatten() {
            if let Some(tag) = tag.as_str() {
                tags.push((tag.to_owned(), record.manifest.clone()));
            }
        }
    }
    tag_all(store, tags)
}

/// What is left of [`MAX_ARCHIVE_JSON_BYTES`] while an archive is read.
struct Kept<'a> {
    left: u64,
    what: &'a str,
}

impl Kept<'_> {
    /// Takes `bytes` kept for entry `path`; past the bound, an error
    /// naming the entry.
    fn take(&mut self, bytes: usize, path: &str) -> Result<(), StoreError> {
        match self.left.checked_sub(bytes as u64) {
            Some(rest) => {
                self.left = rest;
                Ok(())
            }
            None => Err(StoreError::Unsupported(format!(
                "{}: {}: the archive's JSON files and names take more than \
                 {MAX_ARCHIVE_JSON_BYTES} bytes (64 MiB), the most kiln keeps",
                self.what,
                shortened(path)
            ))),
        }
    }

    /// Reads a small file of an archive whole, within the bound.
    fn read(&mut self, entry: &mut impl Read, path: &str) -> Result<Vec<u8>, StoreError> {
        let mut bytes = Vec::new();
        entry
            .take(self.left + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| StoreError::io(self.what, e))?;
        self.take(bytes.len(), path)?;
        Ok(bytes)
    }
}

/// `path`, cut to its first 200 characters if longer (a hostile name may
/// be a megabyte long).
fn shortened(path: &str) -> String {
    match path.char_indices().nth(200) {
        Some((end, _)) => format!("{}...", &path[..end]),
        None => path.to_owned(),
    }
}

/// Tags only once every image of the archive was read and verified, so a
/// load that fails names nothing (its blobs are left for GC).
fn tag_all(
    store: &Store,
    tags: Vec<(String, oci_spec::image::Descriptor)>,
) -> Result<Vec<String>, StoreError> {
    let mut names = Vec::new();
    for (name, descriptor) in tags {
        store.tag(&name, &descriptor)?;
        names.push(name);
    }
    Ok(names)
}

/// Where a link at `path` pointing to `target` leads, as an archive path,
/// or `None` when it leaves the archive's root (an absolute target, or
/// `..` past the top): such links are ignored, never followed on the host.
fn resolve_in_archive(path: &str, target: &str) -> Option<String> {
    if target.starts_with('/') {
        return None;
    }
    let beside = Path::new(path).parent().unwrap_or(Path::new(""));
    let resolved = crate::layer::contained_path(&beside.join(target))?;
    Some(resolved.to_string_lossy().into_owned())
}

/// `path` after following archive links (a bounded number of hops, so a
/// loop cannot hang the load).
fn follow_links<'a>(links: &'a BTreeMap<String, String>, mut path: &'a str) -> &'a str {
    for _ in 0..16 {
        match links.get(path) {
            Some(next) => path = next,
            None => break,
        }
    }
    path
}
