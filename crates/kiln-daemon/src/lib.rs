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
//! `/events`, `/build` (the classic builder's protocol), images (list,
//! inspect, history, tag, remove, pull, push, save, load), `/auth`,
//! containers (create, start, attach, resize, wait, logs, stop, kill,
//! restart, pause, unpause, remove, list, inspect: `docker run` works;
//! exec; archive for `docker cp`; export) and volumes (create, list, inspect, remove, prune), with
//! or without the `/v1.xx` prefix. Registry credentials are only ever
//! the client's own (`X-Registry-Config`, `X-Registry-Auth`). On a unix
//! socket, or on TCP with TLS and client certificates only. Not yet
//! (issue 19): networks, published ports, log drivers, websocket attach.

mod api;
mod archive;
mod auth;
mod build;
mod containers;
mod error;
mod events;
mod exec;
mod image_archives;
mod listen;
mod registry;
mod streaming;
mod tls;

pub use error::DaemonError;
pub use listen::Host;
pub use tls::TlsFiles;

/// The API version advertised (`Api-Version`, `/version`).
pub const API_VERSION: &str = "1.44";
/// The oldest a client may ask for.
pub const MIN_API_VERSION: &str = "1.24";

/// How the daemon serves, beyond its engine.
#[derive(Clone, Debug)]
pub struct Settings {
    /// How registries are reached (TLS, insecure hosts, the allow list).
    /// Its credentials are never used: each request brings its client's
    /// (`X-Registry-Config`, `X-Registry-Auth`).
    pub registry: kiln_engine::ClientOptions,
    /// The most a build context (the tar of `POST /build`) may weigh.
    pub context_limit: u64,
    /// What a container (or a build's RUN) asking for the default or
    /// `bridge` network gets: kiln has no bridge network yet, so the
    /// host's (as `kiln run`), or none, for a daemon whose clients'
    /// containers must reach nothing.
    pub default_network: kiln_engine::NetworkMode,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            registry: Default::default(),
            context_limit: kiln_engine::DEFAULT_CONTEXT_LIMIT,
            default_network: kiln_engine::NetworkMode::Host,
        }
    }
}

/// Serves the Engine API on `host` until SIGINT or SIGTERM, then removes
/// the socket. The socket is bound before anything else runs (mode 0660,
/// group `kiln` when it exists), so a client never finds it open to all;
/// a TCP host's TLS files are read and checked before it listens.
pub fn serve(
    engine: kiln_engine::Engine,
    host: &Host,
    settings: Settings,
) -> Result<(), DaemonError> {
    let listening = listen::listen(host)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| DaemonError::Io {
            what: "start the daemon's runtime".into(),
            source: e,
        })?;
    let daemon = api::daemon(engine, settings);
    let served = runtime.block_on(async {
        // Before the first client: the containers whose restart policy
        // brings them back with the daemon.
        containers::restore(&daemon).await;
        let app = api::app(std::sync::Arc::clone(&daemon));
        let serving = |e| DaemonError::Io {
            what: "serve the Engine API".into(),
            source: e,
        };
        match &listening {
            listen::Listening::Unix(bound) => axum::serve(bound.tokio_listener()?, app)
                .with_graceful_shutdown(shutdown())
                .await
                .map_err(serving),
            listen::Listening::Tcp { listener, tls } => {
                let listener = listener
                    .try_clone()
                    .and_then(tokio::net::TcpListener::from_std)
                    .map_err(serving)?;
                let listener = tls::TlsListener::start(listener, std::sync::Arc::clone(tls))
                    .map_err(serving)?;
                axum::serve(listener, app)
                    .with_graceful_shutdown(shutdown())
                    .await
                    .map_err(serving)
            }
        }
    });
    // Its containers die with it (their monitors' parent-death signal);
    // a frozen one could not act on that signal, so none stays paused.
    containers::thaw_own(&daemon.engine);
    // The socket removed (a unix one).
    drop(listening);
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
