//! `kiln serve`: the flags into kiln-daemon's `serve`.

use std::path::Path;

use clap::Args;

use super::images::open_store;

#[derive(Args)]
pub struct ServeArgs {
    /// Where to listen: unix:///PATH (the socket is made 0660, group kiln
    /// when it exists)
    #[arg(short = 'H', long, default_value = "unix:///run/kiln.sock")]
    host: String,
    /// The most a build context sent to POST /build may weigh, in bytes
    #[arg(long, value_name = "BYTES", default_value_t = kiln_engine::DEFAULT_CONTEXT_LIMIT)]
    max_context_size: u64,
    /// What a client's container (or build) asking for the default or
    /// bridge network gets (kiln has no bridge network yet)
    #[arg(long, value_enum, default_value_t = DefaultNetwork::Host)]
    default_network: DefaultNetwork,
    #[command(flatten)]
    registry: super::registry::RegistryArgs,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum DefaultNetwork {
    /// The host's network, as `kiln run` has by default
    Host,
    /// Only a loopback interface
    None,
}

/// Serves the Docker Engine API until SIGINT or SIGTERM.
pub fn run(root: Option<&Path>, args: ServeArgs) -> anyhow::Result<()> {
    let host = kiln_daemon::Host::parse(&args.host)?;
    // Pulls (build bases, POST /images/create) are for the host's platform.
    let images = kiln_engine::PullingImages {
        platform: super::registry::platform(None)?,
    };
    let engine = kiln_engine::Engine::with_images(open_store(root)?, Box::new(images));
    let settings = kiln_daemon::Settings {
        registry: args.registry.options()?,
        context_limit: args.max_context_size,
        default_network: match args.default_network {
            DefaultNetwork::Host => kiln_engine::NetworkMode::Host,
            DefaultNetwork::None => kiln_engine::NetworkMode::None,
        },
    };
    Ok(kiln_daemon::serve(engine, &host, settings)?)
}
