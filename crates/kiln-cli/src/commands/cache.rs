//! The build cache seen from the command line: `kiln prune` (by last use
//! and size, as `docker builder prune`), `kiln cache ls` and `kiln cache du`.

use std::path::Path;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use kiln_cache::CacheIndex;
use kiln_engine::{Engine, PrunePolicy};

use super::dockerfile::print;
use super::images::open_store;
use kiln_engine::human_size;

#[derive(Args)]
pub struct PruneArgs {
    /// Empty the build cache (its layers go unless an image uses them)
    #[arg(short, long)]
    all: bool,
    /// Keep the most recently used cache entries up to this size (e.g. 5GB)
    #[arg(long, value_name = "SIZE")]
    keep_storage: Option<String>,
    /// until=DURATION: remove cache entries not used for that long (e.g. 24h)
    #[arg(long, value_name = "FILTER")]
    filter: Vec<String>,
    /// Also empty the RUN --mount=type=cache directories
    #[arg(long)]
    cache_mounts: bool,
}

/// `kiln prune`: forgets the cache entries the options select (none by
/// default), then deletes blobs that neither a tag nor the cache reaches,
/// and leftovers of killed builds (temp files, scratch directories).
pub fn prune(root: Option<&Path>, args: PruneArgs) -> anyhow::Result<()> {
    let keep_storage = args.keep_storage.as_deref().map(parse_size).transpose()?;
    let mut until = None;
    for filter in &args.filter {
        match filter.split_once('=') {
            Some(("until", value)) => {
                until = Some(
                    humantime::parse_duration(value)
                        .with_context(|| format!("--filter {filter}"))?,
                )
            }
            _ => bail!("--filter {filter:?}: only until=DURATION is known"),
        }
    }
    let engine = Engine::new(open_store(root)?);
    let pruned = engine.prune(&PrunePolicy {
        all: args.all,
        unused_for: until,
        keep_bytes: keep_storage,
        cache_mounts: args.cache_mounts,
    })?;
    let report = &pruned.gc;
    print(&format!(
        "Deleted {} cache entries, {} cache mounts, {} blobs ({}), {} snapshots, {} temp files, {} scratch directories\n",
        pruned.entries_forgotten,
        pruned.cache_mounts_removed,
        report.removed.len(),
        human_size(report.freed_bytes),
        report.snapshots,
        report.strays,
        report.scratch_dirs
    ))
}

/// `5GB`, `512MB`, `1.5G`, `100kB`, `4096` (bytes); decimal units, as
/// Docker's `--keep-storage`.
fn parse_size(text: &str) -> anyhow::Result<u64> {
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .with_context(|| format!("size {text:?}: expected a number and a unit, like 5GB"))?;
    let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        other => bail!("size {text:?}: unknown unit {other:?} (B, kB, MB, GB, TB)"),
    };
    Ok((number * scale) as u64)
}

#[derive(Subcommand)]
pub enum CacheCommand {
    /// List cache entries, most recently used first
    Ls,
    /// How much the cache holds
    Du,
}

pub fn run(root: Option<&Path>, command: CacheCommand) -> anyhow::Result<()> {
    let store = open_store(root)?;
    let mut entries = CacheIndex::open(&store.layout().cache()).entries();
    entries.sort_by_key(|entry| std::cmp::Reverse(entry.last_used));
    match command {
        CacheCommand::Ls => {
            let mut out = format!("{:<14} {:>10}   {}\n", "KEY", "SIZE", "LAST USED");
            for entry in &entries {
                out.push_str(&format!(
                    "{:<14} {:>10}   {}\n",
                    &entry.key.hex()[..12],
                    human_size(entry.size),
                    humantime::format_rfc3339_seconds(entry.last_used)
                ));
            }
            print(&out)
        }
        CacheCommand::Du => {
            let layers = kiln_cache::distinct_layers(&entries);
            let total: u64 = layers.iter().map(|(_, bytes, _)| bytes).sum();
            let layers = layers.len();
            print(&format!(
                "{} entries, {layers} layers, {}\n",
                entries.len(),
                human_size(total)
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("5GB").unwrap(), 5_000_000_000);
        assert_eq!(parse_size("1.5m").unwrap(), 1_500_000);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5XB").is_err());
    }
}
