//! `kiln serve`: the Docker Engine API (as API 1.44, which docker CLI 28
//! and 29 accept) over kiln's library face, so the `docker` CLI, the
//! Docker SDKs and docker-compose drive kiln with
//! `DOCKER_HOST=unix:///run/kiln.sock`.
//!
//! Async only at the edge: axum over a unix socket on a small tokio
//! runtime; every handler hands its work to kiln-engine on tokio's
//! blocking threads (the library is blocking: syscalls, file I/O,
//! hashing), and answers in the Engine API's JSON and status codes
//! (`{"message": ...}`: 404 for what is not there, 409 for a conflict,
//! 400 for a bad parameter).
//!
//! What it serves so far: `/_ping`, `/version`, `/info`, `/system/df`,
//! images (list, inspect, history, tag, remove), containers (create,
//! start, attach, wait, logs, stop, kill, restart, remove, list,
//! inspect: `docker run` works) and volumes (create, list, inspect,
//! remove, prune), with or without the `/v1.xx` prefix. Not yet (issue
//! 19): build, pull, push, save/load, exec, archive, events, resize,
//! pause, TCP with TLS.

mod api;
mod containers;
mod error;
mod listen;

pub use error::DaemonError;
pub use listen::Host;

/// The API version advertised (`Api-Version`, `/version`).
pub const API_VERSION: &str = "1.44";
/// The oldest a client may ask for.
pub const MIN_API_VERSION: &str = "1.24";

/// Serves the Engine API on `host` until SIGINT or SIGTERM, then removes
/// the socket. The socket is bound before anything else runs (mode 0660,
/// group `kiln` when it exists), so a client never finds it open to all.
pub fn serve(engine: kiln_engine::Engine, host: &Host) -> Result<(), DaemonError> {
    let bound = listen::bind(host)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| DaemonError::Io {
            what: "start the daemon's runtime".into(),
            source: e,
        })?;
    let served = runtime.block_on(async {
        let listener = bound.tokio_listener()?;
        let app = api::app(engine);
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown())
            .await
            .map_err(|e| DaemonError::Io {
                what: "serve the Engine API".into(),
                source: e,
            })
    });
    drop(bound);
    served
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut interrupt), Ok(mut terminate)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        // Without handlers the default action ends the process anyway.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
}
