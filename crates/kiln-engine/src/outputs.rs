//! What a finished build exports besides the store: `--output` archives,
//! filesystems and names (pushed to registries), and `--cache-to`
//! directories.

use std::io::BufWriter;

use kiln_build::BuiltStep;
use kiln_graph::{Base, BuildGraph, Op};
use kiln_store::{Digest, ImageRecord, NamedWriter, Store};

use crate::output_file::OutputFile;
use crate::request::{CacheTo, Output};
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

/// Exports the cache entries `cache_to` selects of a build's `steps`.
pub fn export_cache(
    store: &Store,
    cache_to: &CacheTo,
    graph: &BuildGraph,
    steps: &[BuiltStep],
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
    // Layers kept only as snapshots are given back as blob files first.
    kiln_cache::export(&cache_to.dest, &selected, |digest| {
        store.blobs().materialize(digest).ok()
    })?;
    if cache_to.cache_mounts {
        kiln_cache::export_cache_mounts(&cache_to.dest, &store.layout().cache_mounts())?;
    }
    Ok(())
}
