//! What a finished build exports besides the store: `--output` archives,
//! filesystems and names (pushed to registries), and `--cache-to`
//! directories.

use std::io::BufWriter;

use kiln_build::BuiltStep;
use kiln_graph::{Base, BuildGraph, Op};
use kiln_store::{Digest, ImageRecord, NamedWriter, Store};

use crate::output_file::OutputFile;
use crate::request::{CacheDest, CacheFrom, CacheTo, Output};
use crate::EngineError;

/// Writes `output` for `image`, named `tags` in archives (its digest
/// when it has none).
pub fn export_output(
    store: &Store,
    output: &Output,
    image: &ImageRecord,
    tags: &[String],
) -> Result<(), EngineError> {
    let manifest = &Digest::of_descriptor(&image.manifest)?;
    match output {
        Output::Archive {
            format,
            compression,
            dest,
        } => {
            let names = if tags.is_empty() {
                vec![manifest.to_string()]
            } else {
                tags.to_vec()
            };
            let mut file = OutputFile::create(dest)?;
            kiln_store::save(
                store,
                &names,
                *format,
                *compression,
                NamedWriter::new(dest, BufWriter::new(file.file())),
            )?;
            file.commit()
        }
        Output::Local(dest) => Ok(kiln_build::unpack_image(store, manifest, dest)?),
        Output::Tar(dest) => {
            let mut file = OutputFile::create(dest)?;
            kiln_build::write_image_tar(
                store,
                manifest,
                NamedWriter::new(dest, BufWriter::new(file.file())),
            )?;
            file.commit()
        }
        Output::Image { names, .. } => {
            for name in names {
                store.tag(name, &image.manifest)?;
            }
            Ok(())
        }
    }
}

/// Pushes the image `manifest` as each of `names`; returns the pushed
/// manifests' digests.
pub fn push_image(
    store: &Store,
    manifest: &Digest,
    names: &[&String],
    options: &kiln_registry::ClientOptions,
) -> Result<Vec<(String, Digest)>, EngineError> {
    let mut pushed = Vec::new();
    for name in names {
        let done = kiln_registry::push(
            store,
            manifest,
            name,
            kiln_registry::PushCompression::Gzip,
            options,
            &|_| {},
        )?;
        pushed.push(((*name).clone(), done.manifest));
    }
    Ok(pushed)
}

/// Exports the cache entries `cache_to` selects of a build's `steps`:
/// into a directory, or pushed as a registry cache (the entries as the
/// config, their layers as the manifest's).
pub fn export_cache(
    store: &Store,
    cache_to: &CacheTo,
    graph: &BuildGraph,
    steps: &[BuiltStep],
    registry: &kiln_registry::ClientOptions,
) -> Result<(), EngineError> {
    // mode=min: the target and the stages it starts FROM.
    let mut chain = vec![graph.target];
    while let Some(base) = graph.nodes.iter().find_map(|node| match &node.op {
        Op::From {
            base: Base::Stage(id),
            ..
        } if Some(&node.stage) == chain.last() => Some(*id),
        _ => None,
    }) {
        chain.push(base);
    }
    let selected: Vec<(kiln_cache::CacheKey, kiln_cache::Entry)> = steps
        .iter()
        .filter(|step| cache_to.all_stages || chain.contains(&step.stage))
        .map(|step| (step.key, step.entry.clone()))
        .collect();
    let dir = match &cache_to.dest {
        CacheDest::Local(dir) => dir,
        CacheDest::Registry(reference) => {
            let mut layers: Vec<(Digest, u64)> = Vec::new();
            for (_, entry) in &selected {
                if let Some(layer) = entry.layer {
                    let size = store
                        .blobs()
                        .size(&layer)
                        .ok_or(kiln_store::StoreError::MissingBlob(layer))?;
                    layers.push((layer, size));
                }
            }
            layers.sort();
            layers.dedup();
            let artifact = kiln_registry::Artifact {
                config: kiln_cache::cache_document(&selected),
                config_media_type: kiln_cache::CACHE_CONFIG_MEDIA_TYPE.to_owned(),
                layers,
            };
            kiln_registry::push_artifact(store, &artifact, reference, registry, &|_| {})?;
            return Ok(());
        }
    };
    // Layers kept only as snapshots are given back as blob files first.
    kiln_cache::export(dir, &selected, |digest| {
        store.blobs().materialize(digest).ok()
    })?;
    if cache_to.cache_mounts {
        kiln_cache::export_cache_mounts(dir, &store.layout().cache_mounts())?;
    }
    Ok(())
}

/// The cache a `--cache-from` names: a directory (its cache mounts
/// imported too), or a registry cache pulled into the store.
pub fn import_cache(
    store: &Store,
    from: &CacheFrom,
    registry: &kiln_registry::ClientOptions,
) -> Result<kiln_cache::ImportedCache, EngineError> {
    match from {
        CacheFrom::Local(dir) => {
            let imported = kiln_cache::ImportedCache::open(dir)?;
            kiln_cache::import_cache_mounts(dir, &store.layout().cache_mounts())?;
            Ok(imported)
        }
        CacheFrom::Registry(reference) => {
            let pulled = kiln_registry::pull_artifact(store, reference, registry, &|_| {})?;
            if pulled.config_media_type != kiln_cache::CACHE_CONFIG_MEDIA_TYPE {
                return Err(EngineError::Request(format!(
                    "--cache-from {reference}: not a kiln cache (its config is {:?})",
                    pulled.config_media_type
                )));
            }
            // Its layers are in the store now, where the cache finds them.
            Ok(kiln_cache::ImportedCache::from_document(
                &pulled.config,
                store.root(),
                std::path::Path::new(reference),
            )?)
        }
    }
}
