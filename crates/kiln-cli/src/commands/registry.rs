//! The commands that talk to registries: `pull` and `push`, and the flags
//! they share with `build` (which pulls the bases the store lacks).

use std::path::Path;

use clap::Args;
use kiln_registry::{ClientOptions, Platform, PullEvent, PushCompression, PushEvent};
use kiln_store::Digest;

use super::dockerfile::print;
use super::images::{human_size, open_store};
use crate::output::report;

/// How kiln reaches registries.
#[derive(Args, Clone, Debug, Default)]
pub struct RegistryArgs {
    /// A registry (HOST[:PORT]) that may be reached over plain HTTP, as
    /// Docker's insecure-registries (loopback addresses always may)
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    insecure: Vec<String>,
}

impl RegistryArgs {
    pub fn options(&self) -> ClientOptions {
        ClientOptions {
            insecure: self.insecure.clone(),
            credential: None,
        }
    }
}

/// `--platform`, or the host's.
pub fn platform(text: Option<&str>) -> anyhow::Result<Platform> {
    Ok(match text {
        Some(text) => Platform::parse(text)?,
        None => Platform::host(),
    })
}

#[derive(Args)]
pub struct PullArgs {
    /// The image (`alpine`, `registry:5000/team/app:1.0`, `app@sha256:...`)
    name: String,
    /// The platform of an index to pull (os/arch[/variant]); default the host's
    #[arg(long, value_name = "PLATFORM")]
    platform: Option<String>,
    /// Print only the manifest digest
    #[arg(short, long)]
    quiet: bool,
    #[command(flatten)]
    registry: RegistryArgs,
}

pub fn pull(root: Option<&Path>, args: PullArgs) -> anyhow::Result<()> {
    let store = open_store(root)?;
    let platform = platform(args.platform.as_deref())?;
    let quiet = args.quiet;
    let events = |event: PullEvent| {
        if quiet {
            return;
        }
        match event {
            PullEvent::Resolved { manifest, layers } => {
                report!("{}: {layers} layers", short(&manifest))
            }
            PullEvent::Present { digest, .. } => report!("{}: already present", short(&digest)),
            PullEvent::Downloaded { digest, size } => {
                report!("{}: pulled ({})", short(&digest), human_size(size))
            }
        }
    };
    let pulled = kiln_registry::pull(
        &store,
        &args.name,
        &platform,
        &args.registry.options(),
        &events,
    )?;
    if quiet {
        return print(&format!("{}\n", pulled.manifest));
    }
    report!("Digest: {}", pulled.manifest);
    let status = if pulled.downloaded == 0 {
        "Image is up to date for"
    } else {
        "Downloaded newer image for"
    };
    report!(
        "Status: {status} {}",
        pulled.tagged.as_deref().unwrap_or(&args.name)
    );
    print(&format!(
        "{}\n",
        pulled.tagged.as_deref().unwrap_or(&args.name)
    ))
}

/// How `push` compresses plain layers.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default)]
pub enum CompressionArg {
    /// What every registry and runtime reads (Docker's default)
    #[default]
    Gzip,
    /// Smaller and faster; needs containerd 1.5+ / Docker 23+ to pull
    Zstd,
    /// As the store holds them: the pushed image keeps the local digest
    None,
}

#[derive(Args)]
pub struct PushArgs {
    /// The image to push (a name, digest or id of the store)
    name: String,
    /// Where to push it (default: NAME, which must then name a registry)
    dest: Option<String>,
    /// How plain layers are compressed on the way out
    #[arg(long, value_enum, default_value_t = CompressionArg::Gzip)]
    compression: CompressionArg,
    /// Print only the pushed manifest's digest
    #[arg(short, long)]
    quiet: bool,
    #[command(flatten)]
    registry: RegistryArgs,
}

pub fn push(root: Option<&Path>, args: PushArgs) -> anyhow::Result<()> {
    let store = open_store(root)?;
    let descriptor = store.resolve(&args.name)?;
    let manifest = Digest::of_descriptor(&descriptor)?;
    let dest = args.dest.as_deref().unwrap_or(&args.name);
    let compression = match args.compression {
        CompressionArg::Gzip => PushCompression::Gzip,
        CompressionArg::Zstd => PushCompression::Zstd,
        CompressionArg::None => PushCompression::None,
    };
    let quiet = args.quiet;
    let events = |event: PushEvent| {
        if quiet {
            return;
        }
        match event {
            PushEvent::Present { digest, .. } => {
                report!("{}: layer already exists", short(&digest))
            }
            PushEvent::Uploaded { digest, size } => {
                report!("{}: pushed ({})", short(&digest), human_size(size))
            }
        }
    };
    let pushed = kiln_registry::push(
        &store,
        &manifest,
        dest,
        compression,
        &args.registry.options(),
        &events,
    )?;
    if quiet {
        return print(&format!("{}\n", pushed.manifest));
    }
    print(&format!(
        "{dest}: digest: {} size: {}\n",
        pushed.manifest, pushed.size
    ))
}

/// The first 12 hex digits, as Docker shows layers.
fn short(digest: &Digest) -> String {
    digest.hex()[..12].to_owned()
}
