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
}

/// Serves the Docker Engine API until SIGINT or SIGTERM.
pub fn run(root: Option<&Path>, args: ServeArgs) -> anyhow::Result<()> {
    let host = kiln_daemon::Host::parse(&args.host)?;
    let engine = kiln_engine::Engine::new(open_store(root)?);
    Ok(kiln_daemon::serve(engine, &host)?)
}
