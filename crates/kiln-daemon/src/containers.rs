//! Containers through the Engine API: create, start (the daemon is the
//! monitor: one thread per running container, which kiln-runtime's
//! parent-death signal wants), attach (an HTTP upgrade: multiplexed
//! stdout/stderr frames without a tty, the raw stream with one; stdin
//! when asked), wait, logs, stop, kill, restart, remove.
//!
//! A container's output reaches attached clients through its `Hub` (a
//! broadcast channel the monitor's sink sends into); the log is written
//! by kiln-engine as for `kiln run`. A client attaches before it starts
//! the container (as the docker CLI does), so it misses nothing.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use kiln_engine::{Attach, Bind, ContainerRequest, NetworkMode, VolumeMount};
use kiln_runtime::containers::State as LifeState;
use kiln_runtime::OutputSink;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{broadcast, oneshot, Notify};

use crate::api::{blocking, truthy, Shared};
use crate::error::ApiError;

type Answer = Result<Response, ApiError>;

/// One frame of a container's output: stream 1 (stdout) or 2 (stderr).
#[derive(Clone)]
pub(crate) struct Chunk {
    pub stream: u8,
    pub data: Bytes,
}

/// What attached clients share with a container's monitor.
pub(crate) struct Hub {
    /// Taken by the monitor when the container ends: with the last sender
    /// gone, every attached stream ends.
    output: Mutex<Option<broadcast::Sender<Chunk>>>,
    /// The container's stdin once it runs (with `OpenStdin`), taken by
    /// the one client that attaches its stdin.
    stdin: Mutex<Option<std::fs::File>>,
    stdin_ready: Notify,
    /// The container's terminal while it runs (with `Tty`), for resize.
    tty: Mutex<crate::exec::Terminal>,
}

impl Hub {
    fn new() -> Hub {
        Hub {
            output: Mutex::new(Some(broadcast::channel(1024).0)),
            stdin: Mutex::new(None),
            stdin_ready: Notify::new(),
            tty: Mutex::default(),
        }
    }
}

/// The daemon's live containers: their hubs, and the exit codes of
/// those removed on exit (`AutoRemove`), for `wait?condition=removed`.
#[derive(Default)]
pub(crate) struct Live {
    hubs: Mutex<HashMap<String, Arc<Hub>>>,
    exits: Mutex<HashMap<String, i32>>,
    pub execs: crate::exec::Execs,
}

impl Live {
    fn hub(&self, id: &str) -> Arc<Hub> {
        let mut hubs = self.hubs.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(
            hubs.entry(id.to_owned())
                .or_insert_with(|| Arc::new(Hub::new())),
        )
    }

    /// Notes the exit code for the waiters that find the container gone
    /// (`--rm`): before it is removed, or one of them answers 0.
    fn exited(&self, id: &str, code: i32) {
        self.exits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_owned(), code);
    }

    /// Ends the attached streams.
    fn end(&self, id: &str) {
        if let Some(hub) = self.hubs.lock().unwrap_or_else(|e| e.into_inner()).get(id) {
            hub.output.lock().unwrap_or_else(|e| e.into_inner()).take();
        }
        self.hubs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }
}

/// The monitor's output: into the hub (the log is the engine's).
struct HubSink(Option<broadcast::Sender<Chunk>>);

impl OutputSink for HubSink {
    fn stdout(&mut self, data: &[u8]) {
        if let Some(sender) = &self.0 {
            let _ = sender.send(Chunk {
                stream: 1,
                data: Bytes::copy_from_slice(data),
            });
        }
    }
    fn stderr(&mut self, data: &[u8]) {
        if let Some(sender) = &self.0 {
            let _ = sender.send(Chunk {
                stream: 2,
                data: Bytes::copy_from_slice(data),
            });
        }
    }
}

/// `HostConfig.RestartPolicy`.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct RestartPolicySpec {
    name: String,
    maximum_retry_count: u32,
}

/// `POST /containers/create`'s body (the fields kiln acts on; the rest
/// is ignored, as a daemon without the feature would).
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct CreateBody {
    image: String,
    cmd: Option<Vec<String>>,
    entrypoint: Option<Vec<String>>,
    env: Option<Vec<String>>,
    working_dir: String,
    user: String,
    hostname: String,
    tty: bool,
    open_stdin: bool,
    labels: Option<BTreeMap<String, String>>,
    stop_signal: Option<String>,
    healthcheck: Option<HealthcheckSpec>,
    stop_timeout: Option<u64>,
    host_config: HostConfig,
}

/// `Healthcheck`: durations in nanoseconds, 0 or null for the image's
/// (or Docker's default); `Test` empty for the image's, `["NONE"]` for
/// none.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct HealthcheckSpec {
    test: Option<Vec<String>>,
    interval: Option<u64>,
    timeout: Option<u64>,
    start_period: Option<u64>,
    start_interval: Option<u64>,
    retries: Option<u32>,
}

impl HealthcheckSpec {
    fn options(self) -> kiln_engine::HealthOptions {
        let duration = |ns: Option<u64>| ns.filter(|ns| *ns > 0).map(Duration::from_nanos);
        kiln_engine::HealthOptions {
            test: self.test.filter(|t| !t.is_empty()),
            interval: duration(self.interval),
            timeout: duration(self.timeout),
            start_period: duration(self.start_period),
            start_interval: duration(self.start_interval),
            retries: self.retries.filter(|r| *r > 0),
            disabled: false,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct HostConfig {
    binds: Option<Vec<String>>,
    mounts: Option<Vec<MountSpec>>,
    network_mode: String,
    privileged: bool,
    auto_remove: bool,
    init: Option<bool>,
    readonly_rootfs: bool,
    tmpfs: Option<BTreeMap<String, String>>,
    cap_add: Option<Vec<String>>,
    cap_drop: Option<Vec<String>>,
    memory: u64,
    nano_cpus: u64,
    pids_limit: Option<i64>,
    restart_policy: RestartPolicySpec,
    group_add: Option<Vec<String>>,
    shm_size: u64,
    extra_hosts: Option<Vec<String>>,
}

/// One of `HostConfig.Mounts` (what `--mount` and compose send).
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct MountSpec {
    #[serde(rename = "Type")]
    kind: String,
    source: String,
    target: String,
    read_only: bool,
    tmpfs_options: Option<TmpfsOptions>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct TmpfsOptions {
    size_bytes: Option<u64>,
}

/// Labels the daemon keeps on a container for itself.
const AUTO_REMOVE: &str = "io.kiln.auto-remove";
const OPEN_STDIN: &str = "io.kiln.open-stdin";

/// A container as the API's inspect shows it: kiln-engine's shape, with
/// what the daemon keeps in its own labels shown as docker's fields
/// (`AutoRemove`, `OpenStdin`) and those labels not shown.
pub(crate) fn inspect_json(record: &kiln_runtime::containers::ContainerRecord) -> Value {
    let mut value = kiln_engine::container_json(record);
    let labels = &record.config.labels;
    value["HostConfig"]["AutoRemove"] = json!(labels.contains_key(AUTO_REMOVE));
    value["Config"]["OpenStdin"] = json!(labels.contains_key(OPEN_STDIN));
    value["Config"]["Labels"] = json!(own_labels(labels));
    value
}

/// The labels a client gave, without the daemon's own.
fn own_labels(labels: &BTreeMap<String, String>) -> BTreeMap<&String, &String> {
    labels
        .iter()
        .filter(|(k, _)| k.as_str() != AUTO_REMOVE && k.as_str() != OPEN_STDIN)
        .collect()
}

/// A container's `NetworkMode` as kiln has it: `default` and `bridge`
/// (which kiln does not have yet) are the daemon's `--default-network`;
/// a named network is not there (a 400: the CLI reads a 404 of create
/// as a missing image, and would pull).
fn network_mode(mode: &str, default: NetworkMode) -> Result<NetworkMode, ApiError> {
    match mode {
        "" | "default" | "bridge" => Ok(default),
        "none" => Ok(NetworkMode::None),
        "host" => Ok(NetworkMode::Host),
        other => Err(ApiError::bad_request(format!(
            "network {other} not found (kiln serve has none, host and the default)"
        ))),
    }
}

fn create_request(
    body: CreateBody,
    name: Option<String>,
    default_network: NetworkMode,
) -> Result<ContainerRequest, ApiError> {
    let bad = |e: String| ApiError::bad_request(e);
    let host = body.host_config;
    let mut binds = Vec::new();
    let mut volumes = Vec::new();
    for spec in host.binds.unwrap_or_default() {
        let parts: Vec<&str> = spec.split(':').collect();
        let (source, target, read_only) = match parts.as_slice() {
            [source, target] => (*source, *target, false),
            [source, target, options] => (*source, *target, options.split(',').any(|o| o == "ro")),
            _ => return Err(bad(format!("bind {spec:?}: expected SOURCE:TARGET[:ro]"))),
        };
        if source.starts_with('/') {
            // The client's own path: the user asked for it.
            binds.push(Bind {
                host: source.into(),
                target: target.to_owned(),
                read_only,
            });
        } else {
            volumes.push(VolumeMount {
                name: Some(source.to_owned()),
                target: target.to_owned(),
                read_only,
            });
        }
    }
    let mut tmpfs: Vec<(String, Option<u64>)> = host
        .tmpfs
        .unwrap_or_default()
        .into_keys()
        .map(|path| (path, None))
        .collect();
    for mount in host.mounts.unwrap_or_default() {
        match mount.kind.as_str() {
            "bind" if mount.source.starts_with('/') => binds.push(Bind {
                host: mount.source.into(),
                target: mount.target,
                read_only: mount.read_only,
            }),
            "bind" => {
                return Err(bad(format!(
                    "bind mount source {:?}: an absolute path of the host",
                    mount.source
                )))
            }
            "volume" => volumes.push(VolumeMount {
                name: Some(mount.source).filter(|s| !s.is_empty()),
                target: mount.target,
                read_only: mount.read_only,
            }),
            "tmpfs" => tmpfs.push((mount.target, mount.tmpfs_options.and_then(|o| o.size_bytes))),
            other => {
                return Err(bad(format!(
                    "mount type {other:?}: kiln mounts bind, volume and tmpfs"
                )))
            }
        }
    }
    let restart = kiln_runtime::containers::RestartPolicy::from_parts(
        &host.restart_policy.name,
        Some(host.restart_policy.maximum_retry_count),
    )
    .map_err(|e| bad(e.to_string()))?;
    if host.auto_remove && restart != kiln_runtime::containers::RestartPolicy::No {
        return Err(bad(
            "AutoRemove cannot be combined with a restart policy: a container removed when it exits is never started again".into(),
        ));
    }
    let mut labels = body.labels.unwrap_or_default();
    if host.auto_remove {
        labels.insert(AUTO_REMOVE.into(), "true".into());
    }
    if body.open_stdin {
        labels.insert(OPEN_STDIN.into(), "true".into());
    }
    Ok(ContainerRequest {
        group_add: host.group_add.unwrap_or_default(),
        stop_timeout: body.stop_timeout,
        restart,
        health: body
            .healthcheck
            .map(HealthcheckSpec::options)
            .unwrap_or_default(),
        image: body.image,
        command: body.cmd.unwrap_or_default(),
        entrypoint: body.entrypoint.map(|e| e.join(" ")),
        env: body.env.unwrap_or_default(),
        user: Some(body.user).filter(|u| !u.is_empty()),
        workdir: Some(body.working_dir).filter(|w| !w.is_empty()),
        network: network_mode(&host.network_mode, default_network)?,
        binds,
        volumes,
        hostname: Some(body.hostname).filter(|h| !h.is_empty()),
        name,
        tty: body.tty,
        privileged: host.privileged,
        init: host.init.unwrap_or(false),
        capabilities: kiln_runtime::CapabilityChanges::parse(
            &host.cap_add.unwrap_or_default(),
            &host.cap_drop.unwrap_or_default(),
        )
        .map_err(bad)?,
        read_only: host.readonly_rootfs,
        tmpfs,
        labels,
        stop_signal: body
            .stop_signal
            .map(|s| kiln_engine::parse_signal(&s))
            .transpose()?,
        extra_hosts: host
            .extra_hosts
            .unwrap_or_default()
            .iter()
            .map(|h| kiln_engine::parse_add_host(h).map_err(|e| bad(e.to_string())))
            .collect::<Result<_, _>>()?,
        resources: kiln_runtime::Resources {
            memory_bytes: Some(host.memory).filter(|m| *m > 0),
            cpus: Some(host.nano_cpus as f64 / 1e9).filter(|c| *c > 0.0),
            pids_limit: host.pids_limit.filter(|p| *p > 0).map(|p| p as u64),
        },
        shm_size: Some(host.shm_size).filter(|s| *s > 0),
        ..ContainerRequest::default()
    })
}

#[derive(Deserialize, Default)]
pub(crate) struct NameQuery {
    name: Option<String>,
}

pub(crate) async fn create(
    State(state): State<Shared>,
    Query(query): Query<NameQuery>,
    body: Bytes,
) -> Answer {
    let body: CreateBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("the container to create: {e}")))?;
    let image = body.image.clone();
    let request = create_request(
        body,
        query.name.filter(|n| !n.is_empty()),
        state.default_network,
    )?;
    let id = blocking(&state, move |engine| {
        if engine.store().resolve(&request.image).is_err() {
            // What the docker CLI reads as "pull and try again".
            return Err(ApiError::not_found(format!("No such image: {image}")));
        }
        Ok(engine.create_container(&request)?)
    })
    .await?;
    state.events.container("create", &id, &[]);
    let id = id.id;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "Id": id, "Warnings": [] })),
    )
        .into_response())
}

pub(crate) async fn start(State(state): State<Shared>, Path(id): Path<String>) -> Answer {
    let record = blocking(&state, move |engine| Ok(engine.find_container(&id)?)).await?;
    if record.is_running() {
        return Ok(StatusCode::NOT_MODIFIED.into_response());
    }
    match monitor(&state, &record).await {
        Ok(Ok(())) | Err(_) => {
            state.events.container("start", &record, &[]);
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        Ok(Err(error)) => Err(error),
    }
}

/// At the daemon's start, as Docker's: the containers whose restart
/// policy is `always`, or `unless-stopped` and not stopped by hand, that
/// were running (or about to restart) when the last daemon ended.
pub(crate) async fn restore(state: &Shared) {
    use kiln_runtime::containers::RestartPolicy;
    let engine = Arc::clone(state);
    let records = tokio::task::spawn_blocking(move || engine.engine.containers().list())
        .await
        .unwrap_or_default();
    for record in records {
        let was_up = record.restarting || matches!(record.state, LifeState::Running { .. });
        let policy = record.config.restart;
        let wanted = policy == RestartPolicy::Always
            || policy == RestartPolicy::UnlessStopped && !record.stopped_by_hand;
        if was_up && wanted && !record.is_running() {
            if let Ok(Ok(())) = monitor(state, &record).await {
                state.events.container("start", &record, &[]);
            }
        }
    }
}

/// Starts `record` under a monitor thread of the daemon's (see
/// [`start`]); resolves once it started (or could not).
async fn monitor(
    state: &Shared,
    record: &kiln_runtime::containers::ContainerRecord,
) -> Result<Result<(), ApiError>, tokio::sync::oneshot::error::RecvError> {
    let record = record.clone();
    let hub = state.live.hub(&record.id);
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let shared = Arc::clone(state);
    let id = record.id.clone();
    let remove = record.config.labels.contains_key(AUTO_REMOVE);
    let stdin = record.config.labels.contains_key(OPEN_STDIN);
    // The monitor: a thread of its own, which spawns the container and
    // waits for it (the parent-death signal is the spawning thread's).
    std::thread::spawn(move || {
        let engine = &shared.engine;
        let sender = hub.output.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut sink = HubSink(sender);
        let mut started_tx = Some(started_tx);
        let attach = Attach {
            stdin,
            window: None,
            output: Some(&mut sink),
        };
        let result = engine.run_container(&id, attach, &mut |running| {
            hub.tty
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .attach(running.tty);
            if let Some(file) = running.stdin {
                *hub.stdin.lock().unwrap_or_else(|e| e.into_inner()) = Some(file);
                hub.stdin_ready.notify_waiters();
            }
            if let Some(tx) = started_tx.take() {
                let _ = tx.send(Ok(()));
            }
            Ok(())
        });
        let code = match &result {
            Ok(code) => *code,
            Err(kiln_engine::EngineError::Runtime(kiln_runtime::RuntimeError::Exec {
                errno,
                ..
            })) if *errno == nix::errno::Errno::ENOENT => 127,
            Err(_) => 126,
        };
        if let (Some(tx), Err(error)) = (started_tx.take(), result) {
            let _ = tx.send(Err(ApiError::from(error)));
        }
        shared.live.exited(&id, code);
        let ended = engine.containers().load(&id);
        if let Some(record) = &ended {
            shared
                .events
                .container("die", record, &[("exitCode", &code.to_string())]);
        }
        if let (true, Some(record)) = (remove, &ended) {
            let _ = engine.remove_container(record, true);
            let _ = engine.remove_anonymous_volumes(record);
            shared.events.container("destroy", record, &[]);
        }
        // Last: the attached streams end.
        drop(sink);
        shared.live.end(&id);
    });
    started_rx.await
}

#[derive(Deserialize, Default)]
pub(crate) struct AttachQuery {
    stdin: Option<String>,
    logs: Option<String>,
    stream: Option<String>,
    #[serde(rename = "detachKeys")]
    detach_keys: Option<String>,
}

pub(crate) async fn attach(
    State(state): State<Shared>,
    Path(id): Path<String>,
    Query(query): Query<AttachQuery>,
    mut request: Request,
) -> Answer {
    let record = blocking(&state, move |engine| Ok(engine.find_container(&id)?)).await?;
    let hub = state.live.hub(&record.id);
    // None: it ended already; the stream is then empty.
    let mut output = hub
        .output
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .map(|sender| sender.subscribe());
    let tty = record.config.tty;
    let with_stdin = truthy(query.stdin.as_deref());
    // `logs`: what it wrote so far first; `stream=0`: only that.
    let with_logs = truthy(query.logs.as_deref());
    let streaming = query.stream.as_deref().is_none_or(|s| truthy(Some(s)));
    if !streaming {
        output = None;
    }
    let keys = detach_keys(query.detach_keys.as_deref())?;
    let past = if with_logs {
        let record = record.clone();
        blocking(&state, move |engine| {
            let mut chunks = Vec::new();
            engine.read_log(&record, &Default::default(), &mut |line| {
                chunks.push(Chunk {
                    stream: 1,
                    data: Bytes::copy_from_slice(line.bytes),
                });
                Ok(())
            })?;
            Ok(chunks)
        })
        .await?
    } else {
        Vec::new()
    };
    let upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else {
            return;
        };
        let (reader, mut writer) = tokio::io::split(hyper_util::rt::TokioIo::new(upgraded));
        let (detached_tx, detached_rx) = oneshot::channel();
        if with_stdin && streaming {
            let hub = Arc::clone(&hub);
            tokio::spawn(async move {
                let file = loop {
                    let ready = hub.stdin_ready.notified();
                    if let Some(file) = hub.stdin.lock().unwrap_or_else(|e| e.into_inner()).take() {
                        break file;
                    }
                    ready.await;
                };
                if let Some(file) = pump_stdin(reader, file, &keys).await {
                    // Kept for the container (and the next attach).
                    *hub.stdin.lock().unwrap_or_else(|e| e.into_inner()) = Some(file);
                    hub.stdin_ready.notify_waiters();
                    let _ = detached_tx.send(());
                }
            });
        }
        if !past.is_empty() {
            // A client that reads the 101's headers through a buffered
            // reader and then reads the bare socket (docker-py) loses
            // what came in the same read as the headers: the log, ready
            // at once, waits until the headers are surely taken.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for chunk in &past {
            if write_chunk(&mut writer, chunk, tty).await.is_err() {
                return;
            }
        }
        let detached = on_detach(detached_rx);
        tokio::pin!(detached);
        while let Some(receiver) = output.as_mut() {
            tokio::select! {
                () = &mut detached => break,
                received = receiver.recv() => match received {
                    Ok(chunk) => {
                        if write_chunk(&mut writer, &chunk, tty).await.is_err() {
                            break;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => break,
                },
            }
        }
        let _ = writer.shutdown().await;
    });
    Ok(upgraded_response(tty))
}

/// The detach sequence (`detachKeys`, Docker's grammar: `ctrl-p,ctrl-q`
/// by default; `ctrl-` with a letter or `@[\\]^_`, or one character).
pub(crate) fn detach_keys(text: Option<&str>) -> Result<Vec<u8>, ApiError> {
    let text = text.filter(|t| !t.is_empty()).unwrap_or("ctrl-p,ctrl-q");
    text.split(',')
        .map(|key| {
            let key = key.trim();
            match key.strip_prefix("ctrl-") {
                Some(rest) if rest.len() == 1 => {
                    let c = rest.as_bytes()[0].to_ascii_lowercase();
                    match c {
                        b'a'..=b'z' => Ok(c - b'a' + 1),
                        b'@' => Ok(0),
                        b'[' | b'\\' | b']' | b'^' | b'_' => Ok(c - b'@'),
                        _ => Err(()),
                    }
                }
                None if key.len() == 1 => Ok(key.as_bytes()[0]),
                _ => Err(()),
            }
            .map_err(|()| {
                ApiError::bad_request(format!(
                    "detachKeys {text:?}: keys are ctrl-<letter> or single characters, comma-separated"
                ))
            })
        })
        .collect()
}

/// Copies what an attached client sends into a process's stdin until
/// either ends (the file is dropped then, which ends the stdin), or the
/// client types `detach` (held back until it is sure the keys are not the
/// sequence): then the file comes back, still open, for the process to
/// keep its stdin.
pub(crate) async fn pump_stdin(
    from: impl AsyncReadExt + Unpin,
    file: std::fs::File,
    detach: &[u8],
) -> Option<std::fs::File> {
    let mut file = tokio::fs::File::from_std(file);
    if copy_until_detach(from, &mut file, detach).await {
        Some(file.into_std().await)
    } else {
        None
    }
}

/// True when the client detached.
async fn copy_until_detach(
    mut from: impl AsyncReadExt + Unpin,
    file: &mut tokio::fs::File,
    detach: &[u8],
) -> bool {
    let mut buffer = vec![0u8; 32 * 1024];
    let mut matched = 0;
    while let Ok(n) = from.read(&mut buffer).await {
        if n == 0 {
            return false;
        }
        let mut out = Vec::with_capacity(n);
        let mut detached = false;
        for &byte in &buffer[..n] {
            if detach.get(matched) == Some(&byte) {
                matched += 1;
            } else {
                // Not the sequence after all: what was held goes in.
                out.extend_from_slice(&detach[..matched]);
                matched = usize::from(detach.first() == Some(&byte));
                if matched == 0 {
                    out.push(byte);
                }
            }
            if matched == detach.len() {
                detached = true;
                break;
            }
        }
        // What came before the sequence goes in; the sequence does not.
        if file.write_all(&out).await.is_err() {
            return false;
        }
        let _ = file.flush().await;
        if detached {
            return true;
        }
    }
    false
}

/// Resolves when `detached` says the client detached; never when its
/// sender is dropped without a word (no stdin, or its end).
pub(crate) async fn on_detach(detached: oneshot::Receiver<()>) {
    if detached.await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Writes one chunk of output to an attached client: raw (a tty's
/// stream) or behind docker's frame header.
pub(crate) async fn write_chunk(
    to: &mut (impl AsyncWriteExt + Unpin),
    chunk: &Chunk,
    raw: bool,
) -> std::io::Result<()> {
    let mut bytes = Vec::with_capacity(chunk.data.len() + 8);
    if !raw {
        bytes.extend(frame_header(chunk.stream, chunk.data.len()));
    }
    bytes.extend_from_slice(&chunk.data);
    to.write_all(&bytes).await
}

/// The 101 that hands the connection over to a raw (tty) or multiplexed
/// stream, as attach and exec start answer.
pub(crate) fn upgraded_response(tty: bool) -> Response {
    let content_type = if tty {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    };
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("tcp"));
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// `POST /containers/ID/resize?h=ROWS&w=COLS` (`docker run -t` on a
/// terminal, and whenever that terminal changes size).
pub(crate) async fn resize(
    State(state): State<Shared>,
    Path(id): Path<String>,
    Query(query): Query<crate::exec::ResizeQuery>,
) -> Answer {
    let record = blocking(&state, move |engine| Ok(engine.find_container(&id)?)).await?;
    let hub = state.live.hub(&record.id);
    let mut tty = hub.tty.lock().unwrap_or_else(|e| e.into_inner());
    tty.resize(query)
}

/// Docker's stream frame header: the stream, three zero bytes, the
/// length big-endian.
pub(crate) fn frame_header(stream: u8, len: usize) -> [u8; 8] {
    let len = u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes();
    [stream, 0, 0, 0, len[0], len[1], len[2], len[3]]
}

#[derive(Deserialize, Default)]
pub(crate) struct WaitQuery {
    condition: Option<String>,
}

/// `POST /containers/ID/wait`: the headers at once, the status when the
/// condition is met (`not-running`, the default; `next-exit`; `removed`).
pub(crate) async fn wait(
    State(state): State<Shared>,
    Path(id): Path<String>,
    Query(query): Query<WaitQuery>,
) -> Answer {
    let record = blocking(&state, move |engine| Ok(engine.find_container(&id)?)).await?;
    let condition = query.condition.unwrap_or_else(|| "not-running".into());
    if !matches!(condition.as_str(), "not-running" | "next-exit" | "removed") {
        return Err(ApiError::bad_request(format!(
            "wait condition {condition:?}: not-running, next-exit or removed"
        )));
    }
    let before = record.state.clone();
    let id = record.id.clone();
    let body = async move {
        let code = loop {
            let now = {
                let engine = Arc::clone(&state);
                let id = id.clone();
                tokio::task::spawn_blocking(move || engine.engine.containers().load(&id))
                    .await
                    .unwrap_or(None)
            };
            let exited = |record: &kiln_runtime::containers::ContainerRecord| match record.state {
                LifeState::Exited { code, .. } => Some(code),
                _ => None,
            };
            match (condition.as_str(), now) {
                ("removed", None) => {
                    break state
                        .live
                        .exits
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get(&id)
                        .copied()
                        .unwrap_or(0)
                }
                ("removed", Some(_)) => {}
                (_, None) => {
                    break state
                        .live
                        .exits
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get(&id)
                        .copied()
                        .unwrap_or(0)
                }
                ("next-exit", Some(record)) => {
                    if !record.is_running() && record.state != before {
                        if let Some(code) = exited(&record) {
                            break code;
                        }
                    }
                }
                (_, Some(record)) => {
                    if !record.is_running() {
                        break exited(&record).unwrap_or(0);
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let text = json!({ "StatusCode": code, "Error": null }).to_string();
        Ok::<Bytes, std::io::Error>(Bytes::from(text))
    };
    let stream = futures_util::stream::once(body);
    let mut response = Response::new(Body::from_stream(stream));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

#[derive(Deserialize, Default)]
pub(crate) struct LogsQuery {
    follow: Option<String>,
    tail: Option<String>,
    timestamps: Option<String>,
    since: Option<String>,
    until: Option<String>,
}

/// `GET /containers/ID/logs`: the log (stdout and stderr are one stream
/// in kiln's log, sent as stdout), framed unless the container has a tty.
pub(crate) async fn logs(
    State(state): State<Shared>,
    Path(id): Path<String>,
    Query(query): Query<LogsQuery>,
) -> Answer {
    let record = blocking(&state, move |engine| Ok(engine.find_container(&id)?)).await?;
    let tail: Option<usize> = match query.tail.as_deref() {
        None | Some("all") | Some("") => None,
        Some(n) => Some(
            n.parse()
                .map_err(|_| ApiError::bad_request(format!("tail {n:?}: a number or all")))?,
        ),
    };
    // The API's 0 (what clients send for none) is no bound.
    let now = std::time::SystemTime::now();
    let time = |text: Option<&str>| match text {
        None | Some("") | Some("0") => Ok(None),
        Some(text) => kiln_engine::parse_time(text, now).map(Some),
    };
    let options = kiln_engine::LogOptions {
        tail,
        follow: truthy(query.follow.as_deref()),
        since: time(query.since.as_deref())?,
        until: time(query.until.as_deref())?,
    };
    let timestamps = truthy(query.timestamps.as_deref());
    let tty = record.config.tty;
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    let engine = Arc::clone(&state);
    tokio::task::spawn_blocking(move || {
        let result = engine.engine.read_log(&record, &options, &mut |line| {
            let mut text = Vec::with_capacity(line.bytes.len() + 40);
            if timestamps {
                let time = line.written.unwrap_or(std::time::UNIX_EPOCH);
                text.extend(humantime::format_rfc3339_nanos(time).to_string().bytes());
                text.push(b' ');
            }
            text.extend_from_slice(line.bytes);
            let mut out = Vec::with_capacity(text.len() + 8);
            if !tty {
                out.extend(frame_header(1, text.len()));
            }
            out.extend(text);
            sender
                .blocking_send(Ok(Bytes::from(out)))
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))
        });
        if let Err(error) = result {
            let _ = sender.blocking_send(Err(std::io::Error::other(error.to_string())));
        }
    });
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    });
    Ok(Response::new(Body::from_stream(stream)))
}

#[derive(Deserialize, Default)]
pub(crate) struct StopQuery {
    t: Option<u64>,
    signal: Option<String>,
}

pub(crate) async fn stop(
    State(state): State<Shared>,
    Path(id): Path<String>,
    Query(query): Query<StopQuery>,
) -> Answer {
    let asked = query.t;
    let (record, was_running) = blocking(&state, move |engine| {
        let record = engine.find_container(&id)?;
        let running = record.is_running();
        engine.stop_container(&record, record.stop_grace(asked))?;
        Ok((record, running))
    })
    .await?;
    if was_running {
        state.events.container("stop", &record, &[]);
    }
    Ok(if was_running {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_MODIFIED
    }
    .into_response())
}

pub(crate) async fn restart(
    State(state): State<Shared>,
    Path(id): Path<String>,
    Query(query): Query<StopQuery>,
) -> Answer {
    let asked = query.t;
    let stopped = id.clone();
    let record = blocking(&state, move |engine| {
        let record = engine.find_container(&stopped)?;
        engine.stop_container(&record, record.stop_grace(asked))?;
        Ok(record)
    })
    .await?;
    let started = start(State(Arc::clone(&state)), Path(id)).await;
    if started.is_ok() {
        state.events.container("restart", &record, &[]);
    }
    started
}

/// Thaws every paused container this daemon monitors: a frozen process
/// acts on no signal, not even the SIGKILL its monitor's end sends.
pub(crate) fn thaw_own(engine: &kiln_engine::Engine) {
    let me = std::process::id() as i32;
    for record in engine.containers().list() {
        if matches!(record.state, LifeState::Running { monitor, .. } if monitor == me)
            && record.is_paused()
        {
            let _ = engine.unpause_container(&record);
        }
    }
}

/// `POST /containers/ID/update`'s body: what is 0 (or absent) stays.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub(crate) struct UpdateBody {
    memory: Option<u64>,
    nano_cpus: Option<u64>,
    cpu_quota: Option<i64>,
    cpu_period: Option<u64>,
    pids_limit: Option<i64>,
    restart_policy: Option<RestartPolicySpec>,
    cpu_shares: Option<u64>,
    cpuset_cpus: Option<String>,
    blkio_weight: Option<u64>,
    kernel_memory: Option<u64>,
    memory_reservation: Option<u64>,
}

/// `POST /containers/ID/update` (`docker update`): memory, CPUs (as
/// `NanoCpus` or a quota over a period), pids and the restart policy; a
/// setting kiln has no such limit for is a 400, never silently dropped.
pub(crate) async fn update(
    State(state): State<Shared>,
    Path(id): Path<String>,
    axum::Json(body): axum::Json<UpdateBody>,
) -> Answer {
    let unsupported = [
        ("CpuShares", body.cpu_shares.is_some_and(|v| v > 0)),
        (
            "CpusetCpus",
            body.cpuset_cpus.as_deref().is_some_and(|v| !v.is_empty()),
        ),
        ("BlkioWeight", body.blkio_weight.is_some_and(|v| v > 0)),
        ("KernelMemory", body.kernel_memory.is_some_and(|v| v > 0)),
        (
            "MemoryReservation",
            body.memory_reservation.is_some_and(|v| v > 0),
        ),
    ];
    if let Some((name, _)) = unsupported.iter().find(|(_, set)| *set) {
        return Err(ApiError::bad_request(format!(
            "{name}: kiln updates Memory, NanoCpus (or CpuQuota/CpuPeriod), PidsLimit and RestartPolicy"
        )));
    }
    let cpus = match (
        body.nano_cpus.filter(|n| *n > 0),
        body.cpu_quota.filter(|q| *q > 0),
    ) {
        (Some(nano), _) => Some(nano as f64 / 1e9),
        (None, Some(quota)) => {
            Some(quota as f64 / body.cpu_period.filter(|p| *p > 0).unwrap_or(100_000) as f64)
        }
        (None, None) => None,
    };
    let restart = match body.restart_policy.filter(|p| !p.name.is_empty()) {
        Some(spec) => Some(
            kiln_runtime::containers::RestartPolicy::from_parts(
                &spec.name,
                Some(spec.maximum_retry_count),
            )
            .map_err(|e| ApiError::bad_request(e.to_string()))?,
        ),
        None => None,
    };
    let update = kiln_engine::ContainerUpdate {
        resources: kiln_runtime::Resources {
            memory_bytes: body.memory.filter(|m| *m > 0),
            cpus,
            pids_limit: body.pids_limit.filter(|p| *p > 0).map(|p| p.unsigned_abs()),
        },
        restart,
    };
    let record = blocking(&state, move |engine| {
        let record = engine.find_container(&id)?;
        Ok(engine.update_container(&record, &update)?)
    })
    .await?;
    state.events.container("update", &record, &[]);
    Ok(crate::api::json(StatusCode::OK, json!({ "Warnings": [] })))
}

#[derive(Deserialize, Default)]
pub(crate) struct StatsQuery {
    stream: Option<String>,
    #[serde(rename = "one-shot")]
    one_shot: Option<String>,
}

/// `GET /containers/ID/stats`: with `stream` (the default) a reading a
/// second while it runs, each with the one before as `precpu_stats`;
/// without, one reading, a second after a first (`one-shot`: at once,
/// with no `precpu_stats`).
pub(crate) async fn stats(
    State(state): State<Shared>,
    Path(id): Path<String>,
    Query(query): Query<StatsQuery>,
) -> Answer {
    let stream = query.stream.as_deref().is_none_or(|s| truthy(Some(s)));
    let one_shot = truthy(query.one_shot.as_deref());
    let (record, first) = blocking(&state, move |engine| {
        let record = engine.find_container(&id)?;
        let first = engine.container_stats(&record)?;
        Ok((record, first))
    })
    .await?;
    let (out, response) = crate::streaming::json_lines();
    let worker = Arc::clone(&state);
    tokio::task::spawn_blocking(move || {
        let engine = &worker.engine;
        if !stream && one_shot {
            out.send(first.docker_json(&record, None));
            return;
        }
        let mut previous = first;
        loop {
            std::thread::sleep(Duration::from_secs(1));
            // As it is now: stopped (or gone), the stream ends.
            let Some(now) = engine
                .containers()
                .load(&record.id)
                .and_then(|current| engine.container_stats(&current).ok())
            else {
                return;
            };
            if !out.send(now.docker_json(&record, Some(&previous))) || !stream {
                return;
            }
            previous = now;
        }
    });
    Ok(response)
}

#[derive(Deserialize, Default)]
pub(crate) struct RenameQuery {
    name: Option<String>,
}

/// `POST /containers/ID/rename?name=NEW` (a name in use is a 409).
pub(crate) async fn rename(
    State(state): State<Shared>,
    Path(id): Path<String>,
    Query(query): Query<RenameQuery>,
) -> Answer {
    let name = query
        .name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::bad_request("rename needs a name"))?;
    let (old, renamed) = blocking(&state, move |engine| {
        let record = engine.find_container(&id)?;
        let renamed = engine.rename_container(&record, &name)?;
        Ok((record.name, renamed))
    })
    .await?;
    state
        .events
        .container("rename", &renamed, &[("oldName", &format!("/{old}"))]);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /containers/ID/pause`: every process frozen (the cgroup freezer).
pub(crate) async fn pause(State(state): State<Shared>, Path(id): Path<String>) -> Answer {
    set_frozen(state, id, true).await
}

/// `POST /containers/ID/unpause`.
pub(crate) async fn unpause(State(state): State<Shared>, Path(id): Path<String>) -> Answer {
    set_frozen(state, id, false).await
}

async fn set_frozen(state: Shared, id: String, frozen: bool) -> Answer {
    let record = blocking(&state, move |engine| {
        let record = engine.find_container(&id)?;
        if frozen {
            engine.pause_container(&record)?;
        } else {
            engine.unpause_container(&record)?;
        }
        Ok(record)
    })
    .await?;
    let event = if frozen { "pause" } else { "unpause" };
    state.events.container(event, &record, &[]);
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(crate) async fn kill(
    State(state): State<Shared>,
    Path(id): Path<String>,
    Query(query): Query<StopQuery>,
) -> Answer {
    let signal = kiln_engine::parse_signal(query.signal.as_deref().unwrap_or("KILL"))?;
    let record = blocking(&state, move |engine| {
        let record = engine.find_container(&id)?;
        if !record.is_running() {
            return Err(ApiError {
                status: StatusCode::CONFLICT,
                message: format!("container {} is not running", record.id),
            });
        }
        engine.kill_container(&record, signal)?;
        // As docker: a SIGKILL answers once the container is gone, so an
        // inspect right after sees it exited.
        if signal == nix::sys::signal::Signal::SIGKILL {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while std::time::Instant::now() < deadline
                && engine
                    .containers()
                    .load(&record.id)
                    .is_some_and(|r| r.is_running())
            {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(record)
    })
    .await?;
    let number = (signal as i32).to_string();
    state
        .events
        .container("kill", &record, &[("signal", &number)]);
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize, Default)]
pub(crate) struct RemoveQuery {
    force: Option<String>,
    v: Option<String>,
}

pub(crate) async fn remove(
    State(state): State<Shared>,
    Path(id): Path<String>,
    Query(query): Query<RemoveQuery>,
) -> Answer {
    let force = truthy(query.force.as_deref());
    let volumes = truthy(query.v.as_deref());
    let record = blocking(&state, move |engine| {
        let record = engine.find_container(&id)?;
        engine.remove_container(&record, force)?;
        if volumes {
            engine.remove_anonymous_volumes(&record)?;
        }
        Ok(record)
    })
    .await?;
    state.events.container("destroy", &record, &[]);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// What `GET /containers/json` and `/system/df` show of one.
pub(crate) fn summary(record: &kiln_runtime::containers::ContainerRecord) -> Value {
    let (state, status) = kiln_engine::container_status(record);
    let config = &record.config;
    json!({
        "Id": record.id,
        "Names": [format!("/{}", record.name)],
        "Image": config.image,
        "ImageID": config.image_id,
        "Command": config.args.join(" "),
        "Created": record.created,
        "State": state,
        "Status": status,
        "Ports": [],
        "Labels": own_labels(&config.labels),
        "Mounts": config.binds.iter().map(|(host, target, ro)| json!({
            "Source": host.display().to_string(),
            "Destination": target,
            "RW": !ro,
        })).collect::<Vec<_>>(),
        "HostConfig": {"NetworkMode": config.network},
        "SizeRw": 0,
    })
}

/// `GET /containers/ID/top`: its processes, in `ps -ef`'s columns.
pub(crate) async fn top(State(state): State<Shared>, Path(id): Path<String>) -> Answer {
    let processes = blocking(&state, move |engine| {
        let record = engine.find_container(&id)?;
        Ok(engine.container_processes(&record)?)
    })
    .await?;
    let rows: Vec<Value> = processes
        .iter()
        .map(|p| {
            json!([
                p.uid.to_string(),
                p.pid.to_string(),
                p.ppid.to_string(),
                "0",
                "",
                "?",
                "00:00:00",
                p.command,
            ])
        })
        .collect();
    Ok(Json(json!({
        "Titles": ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"],
        "Processes": rows,
    }))
    .into_response())
}

/// `GET /containers/ID/changes`: `docker diff`.
pub(crate) async fn changes(State(state): State<Shared>, Path(id): Path<String>) -> Answer {
    let changes = blocking(&state, move |engine| {
        let record = engine.find_container(&id)?;
        Ok(engine.container_changes(&record)?)
    })
    .await?;
    let rows: Vec<Value> = changes
        .iter()
        .map(|(path, kind)| json!({ "Path": path, "Kind": kind.code().0 }))
        .collect();
    Ok(Json(Value::Array(rows)).into_response())
}

/// `POST /containers/prune`: every container that is not running.
pub(crate) async fn prune(State(state): State<Shared>) -> Answer {
    let removed = blocking(&state, |engine| Ok(engine.prune_containers()?)).await?;
    for (record, _) in &removed {
        state.events.container("destroy", record, &[]);
    }
    Ok(Json(json!({
        "ContainersDeleted": removed.iter().map(|(r, _)| r.id.clone()).collect::<Vec<_>>(),
        "SpaceReclaimed": removed.iter().map(|(_, bytes)| bytes).sum::<u64>(),
    }))
    .into_response())
}

#[derive(Deserialize, Default)]
pub(crate) struct CommitQuery {
    container: String,
    #[serde(default)]
    repo: String,
    #[serde(default)]
    tag: String,
}

/// `POST /commit?container=ID&repo=R&tag=T`: the container's changes as
/// a new image over its own.
pub(crate) async fn commit(
    State(state): State<Shared>,
    Query(query): Query<CommitQuery>,
) -> Answer {
    let name = match (query.repo.as_str(), query.tag.as_str()) {
        ("", _) => None,
        (repo, "") => Some(repo.to_owned()),
        (repo, tag) => Some(format!("{repo}:{tag}")),
    };
    let shown = name.clone();
    let (record, image) = blocking(&state, move |engine| {
        let record = engine.find_container(&query.container)?;
        let created = kiln_engine::creation_time(None);
        let image = engine.commit_container(&record, name.as_deref(), &created)?;
        Ok((record, image))
    })
    .await?;
    let id = image.manifest.digest().to_string();
    state.events.container("commit", &record, &[]);
    if let Some(name) = &shown {
        state
            .events
            .publish("image", "tag", id.as_str(), &[("name", name.as_str())]);
    }
    Ok((StatusCode::CREATED, Json(json!({ "Id": id }))).into_response())
}

#[cfg(test)]
mod detach_tests {
    use super::*;

    #[test]
    fn detach_keys_read_as_dockers() {
        assert_eq!(detach_keys(None).unwrap(), [16, 17]);
        assert_eq!(detach_keys(Some("ctrl-x")).unwrap(), [24]);
        assert_eq!(detach_keys(Some("a,ctrl-@,ctrl-[")).unwrap(), [b'a', 0, 27]);
        for bad in ["ctrl-", "abc", "ctrl-1"] {
            assert!(detach_keys(Some(bad)).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn the_sequence_detaches_and_a_near_miss_goes_through() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stdin");
        let written = |input: &'static [u8]| {
            let path = path.clone();
            async move {
                let file = std::fs::File::create(&path).unwrap();
                let kept = pump_stdin(input, file, &[16, 17]).await;
                (kept.is_some(), std::fs::read(&path).unwrap())
            }
        };
        assert_eq!(written(b"ab\x10\x11").await, (true, b"ab".to_vec()));
        assert_eq!(
            written(b"a\x10b\x10\x10\x11").await,
            (true, b"a\x10b\x10".to_vec())
        );
        assert_eq!(written(b"plain\x10").await, (false, b"plain".to_vec()));
    }
}
