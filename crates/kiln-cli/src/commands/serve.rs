//! `kiln serve`: the flags into kiln-daemon's `serve`.

use std::path::{Path, PathBuf};

use clap::Args;

use super::images::open_store;

#[derive(Args)]
pub struct ServeArgs {
    /// Where to listen: unix:///PATH (the socket is made 0660, group kiln
    /// when it exists), or tcp://HOST[:PORT] (2376 by default) with
    /// --tlsverify
    #[arg(short = 'H', long, default_value = "unix:///run/kiln.sock")]
    host: String,
    /// Serve TCP with TLS, only to clients with a certificate signed by
    /// --tlscacert
    #[arg(long)]
    tlsverify: bool,
    /// The CA that signs the clients' certificates [default: ~/.docker/ca.pem]
    #[arg(long, value_name = "PEM", requires = "tlsverify")]
    tlscacert: Option<PathBuf>,
    /// The daemon's certificate [default: ~/.docker/cert.pem]
    #[arg(long, value_name = "PEM", requires = "tlsverify")]
    tlscert: Option<PathBuf>,
    /// The daemon's private key [default: ~/.docker/key.pem]
    #[arg(long, value_name = "PEM", requires = "tlsverify")]
    tlskey: Option<PathBuf>,
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
    let tls = args.tlsverify.then(|| {
        // Docker's defaults: the files in DOCKER_CERT_PATH or ~/.docker.
        let dir = std::env::var_os("DOCKER_CERT_PATH")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".docker")))
            .unwrap_or_default();
        kiln_daemon::TlsFiles {
            ca: args.tlscacert.unwrap_or_else(|| dir.join("ca.pem")),
            cert: args.tlscert.unwrap_or_else(|| dir.join("cert.pem")),
            key: args.tlskey.unwrap_or_else(|| dir.join("key.pem")),
        }
    });
    let host = kiln_daemon::Host::parse(&args.host, tls)?;
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
