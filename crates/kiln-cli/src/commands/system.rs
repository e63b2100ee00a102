//! `kiln info`, `kiln system df` and `kiln system prune`: the store as a
//! whole, as `docker info` and `docker system` show Docker's.

use std::path::Path;

use kiln_engine::{human_size, Engine, PrunePolicy};

use super::dockerfile::print;
use super::images::open_store;
use crate::template::align_columns;

/// `kiln info`: where the store is, what it holds, what runs containers.
pub fn info(root: Option<&Path>) -> anyhow::Result<()> {
    let engine = Engine::new(open_store(root)?);
    let info = engine.system_info()?;
    print(&format!(
        "Version: {version}\n\
         Store: {store}\n\
         Images: {images} ({untagged} untagged)\n\
         Containers: {containers} (running {running}, stopped {stopped})\n\
         Build cache: {cache}\n\
         Storage driver: overlay (kiln snapshots)\n\
         Cgroup version: {cgroup}\n\
         Security options: seccomp (Docker's default profile), no-new-privileges\n\
         Root: {root_user} (building with RUN and running containers need root)\n\
         Kernel version: {kernel}\n\
         Operating system: {os}\n\
         Architecture: {arch}\n",
        version = info.version,
        store = info.store.display(),
        images = info.images,
        untagged = info.untagged_images,
        containers = info.containers,
        running = info.running_containers,
        stopped = info.containers - info.running_containers,
        cache = match info.cache_entries {
            1 => "1 entry".to_owned(),
            n => format!("{n} entries"),
        },
        cgroup = info.cgroup_version,
        root_user = info.root,
        kernel = info.kernel,
        os = info.operating_system,
        arch = info.platform,
    ))
}

/// `kiln system df`: what images, containers and the build cache hold
/// on disk (data shared between images counts once).
pub fn df(root: Option<&Path>) -> anyhow::Result<()> {
    let usage = Engine::new(open_store(root)?).disk_usage()?;
    let rows = [
        "TYPE\tTOTAL\tACTIVE\tSIZE".to_owned(),
        format!(
            "Images\t{}\t{}\t{}",
            usage.image_ids.len(),
            usage.active_images,
            human_size(usage.image_bytes)
        ),
        format!(
            "Containers\t{}\t{}\t{}",
            usage.containers.len(),
            usage.running_containers(),
            human_size(usage.container_bytes())
        ),
        format!(
            "Local Volumes\t{}\t{}\t{}",
            usage.volumes.len(),
            usage.volumes_in_use(),
            human_size(usage.volume_bytes())
        ),
        format!(
            "Build cache\t{}\t0\t{}",
            usage.cache_entries,
            human_size(usage.cache_bytes())
        ),
    ];
    print(&align_columns(&rows))
}

/// `kiln system prune`: stopped containers, untagged images, then the
/// data nothing uses (the build cache stays: `kiln prune --all` empties
/// it, as `docker system prune` keeps what builds still use).
pub fn prune(
    root: Option<&Path>,
    args: super::containers::ContainerPruneArgs,
) -> anyhow::Result<()> {
    let warning = "This will remove:\n  - all stopped containers\n  - all dangling images\n  - data no image or cache entry uses";
    if !args.force && !crate::output::confirm(warning)? {
        return Ok(());
    }
    let engine = Engine::new(open_store(root)?);
    let mut out = super::containers::prune_stopped(&engine)?;
    let (removed, _) = engine.prune_images(false)?;
    out.push_str("\nDeleted Images:\n");
    for id in &removed {
        out.push_str(&format!("deleted: {id}\n"));
    }
    let pruned = engine.prune(&PrunePolicy::default())?;
    out.push_str(&format!(
        "\nTotal reclaimed space: {}\n",
        human_size(pruned.gc.freed_bytes)
    ));
    print(&out)
}
