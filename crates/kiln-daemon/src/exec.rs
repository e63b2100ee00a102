//! `docker exec` through the Engine API: create (`POST
//! /containers/ID/exec`: the process to run, kept by the daemon), start
//! (`POST /exec/ID/start`: an HTTP upgrade streaming its output as
//! attach does, stdin when asked, or detached), inspect (`GET
//! /exec/ID/json`: the CLI reads the exit code there once the stream
//! ends) and resize.
//!
//! The process is started and waited on from a thread of its own, as
//! the runtime's parent-death signal wants; its state is set before the
//! stream ends, so a client that inspects after the stream's end finds
//! the exit code.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use kiln_engine::{Attach, ExecRequest};
use kiln_runtime::{OutputSink, TtyHandle, WindowSize};
use serde::Deserialize;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};

use crate::api::{blocking, Shared};
use crate::containers::{on_detach, pump_stdin, upgraded_response, write_chunk, Chunk};
use crate::error::ApiError;

type Answer = Result<Response, ApiError>;

/// The daemon's execs, by id.
#[derive(Default)]
pub(crate) struct Execs(Mutex<HashMap<String, Arc<Exec>>>);

impl Execs {
    fn get(&self, id: &str) -> Result<Arc<Exec>, ApiError> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
            .ok_or_else(|| ApiError::not_found(format!("No such exec instance: {id}")))
    }
}

/// One exec: what to run, and how it went.
pub(crate) struct Exec {
    id: String,
    container: String,
    request: ExecRequest,
    stdin: bool,
    /// The sequence that detaches an attached client (`DetachKeys`).
    detach_keys: Vec<u8>,
    /// As the client gave it, for inspect.
    detach_keys_text: String,
    state: Mutex<ExecState>,
}

#[derive(Default)]
struct ExecState {
    started: bool,
    running: bool,
    pid: i32,
    exit_code: Option<i32>,
    /// The process's terminal, once it started with one.
    tty: Terminal,
    /// Its stdin after its client detached (closed with the exec).
    detached_stdin: Option<std::fs::File>,
}

/// A terminal that may be resized before its process has started (an
/// API < 1.42 client starts, then sends its size): the size is kept and
/// applied when the terminal is there.
#[derive(Default)]
pub(crate) struct Terminal {
    handle: Option<TtyHandle>,
    pending: Option<WindowSize>,
}

impl Terminal {
    /// The process's terminal is there: a size asked for earlier is set.
    pub(crate) fn attach(&mut self, handle: Option<TtyHandle>) {
        if let (Some(handle), Some(size)) = (&handle, self.pending.take()) {
            let _ = handle.resize(size);
        }
        self.handle = handle;
    }

    pub(crate) fn detach(&mut self) {
        self.handle = None;
    }

    pub(crate) fn resize(&mut self, query: ResizeQuery) -> Answer {
        let (Some(rows), Some(cols)) = (query.h, query.w) else {
            return Err(ApiError::bad_request("resize needs h and w"));
        };
        let size = WindowSize { rows, cols };
        match &self.handle {
            Some(handle) => handle
                .resize(size)
                .map_err(|e| ApiError::internal(e.to_string()))?,
            None => self.pending = Some(size),
        }
        Ok(Response::new(Body::empty()))
    }
}

impl Exec {
    fn state(&self) -> std::sync::MutexGuard<'_, ExecState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub(crate) struct CreateBody {
    attach_stdin: bool,
    tty: bool,
    cmd: Vec<String>,
    env: Option<Vec<String>>,
    working_dir: String,
    user: String,
    privileged: bool,
    // docker-py sends it in camel case.
    #[serde(alias = "detachKeys")]
    detach_keys: String,
}

/// `POST /containers/ID/exec`.
pub(crate) async fn create(
    State(state): State<Shared>,
    Path(id): Path<String>,
    body: Bytes,
) -> Answer {
    let body: CreateBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("the exec to create: {e}")))?;
    if body.cmd.is_empty() {
        return Err(ApiError::bad_request("exec needs a command (Cmd)"));
    }
    let detach_keys = crate::containers::detach_keys(Some(&body.detach_keys))?;
    let record = blocking(&state, move |engine| Ok(engine.find_container(&id)?)).await?;
    if !record.is_running() {
        return Err(ApiError {
            status: StatusCode::CONFLICT,
            message: format!("container {} is not running", record.id),
        });
    }
    let exec_id = new_id(&record.id);
    let exec = Arc::new(Exec {
        id: exec_id.clone(),
        container: record.id.clone(),
        request: ExecRequest {
            command: body.cmd,
            env: body.env.unwrap_or_default(),
            workdir: Some(body.working_dir).filter(|w| !w.is_empty()),
            user: Some(body.user).filter(|u| !u.is_empty()),
            tty: body.tty,
            privileged: body.privileged,
        },
        stdin: body.attach_stdin,
        detach_keys,
        detach_keys_text: body.detach_keys,
        state: Mutex::default(),
    });
    state.events.container(
        format!("exec_create: {}", exec.request.command.join(" ")),
        &record,
        &[("execID", exec_id.as_str())],
    );
    state
        .live
        .execs
        .0
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(exec_id.clone(), exec);
    Ok((StatusCode::CREATED, Json(json!({ "Id": exec_id }))).into_response())
}

/// An exec id: unique in this daemon's life (64 hex, as docker's).
fn new_id(container: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let seed = format!(
        "{container}-{now}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    kiln_store::Digest::of(seed.as_bytes()).hex()
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct StartBody {
    detach: bool,
    /// Whether the stream is raw (else framed), as docker decides it:
    /// by the start's `Tty`, not the exec's (the Docker SDK frames by
    /// what it sends here).
    tty: bool,
    console_size: Option<[u16; 2]>,
}

/// The exec's output into the channel the upgraded stream drains.
struct ChannelSink(Option<mpsc::Sender<Chunk>>);

impl ChannelSink {
    fn send(&mut self, stream: u8, data: &[u8]) {
        if let Some(sender) = &self.0 {
            let chunk = Chunk {
                stream,
                data: Bytes::copy_from_slice(data),
            };
            if sender.blocking_send(chunk).is_err() {
                // The client went away; the process goes on unseen.
                self.0 = None;
            }
        }
    }
}

impl OutputSink for ChannelSink {
    fn stdout(&mut self, data: &[u8]) {
        self.send(1, data);
    }
    fn stderr(&mut self, data: &[u8]) {
        self.send(2, data);
    }
}

/// `POST /exec/ID/start`.
pub(crate) async fn start(
    State(state): State<Shared>,
    Path(id): Path<String>,
    mut request: Request,
) -> Answer {
    let exec = state.live.execs.get(&id)?;
    let body = axum::body::to_bytes(std::mem::take(request.body_mut()), 64 * 1024)
        .await
        .map_err(|e| ApiError::bad_request(format!("the exec start: {e}")))?;
    let body: StartBody = if body.is_empty() {
        StartBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("the exec start: {e}")))?
    };
    {
        let mut exec_state = exec.state();
        if exec_state.started {
            return Err(ApiError {
                status: StatusCode::CONFLICT,
                message: format!("exec {} has already been started", exec.id),
            });
        }
        exec_state.started = true;
        exec_state.running = true;
    }
    let window = body
        .console_size
        .filter(|[rows, cols]| *rows > 0 && *cols > 0)
        .map(|[rows, cols]| WindowSize { rows, cols });
    let raw = body.tty;
    let (output, chunks) = if body.detach {
        (None, None)
    } else {
        let (sender, receiver) = mpsc::channel::<Chunk>(256);
        (Some(sender), Some(receiver))
    };
    let with_stdin = exec.stdin && !body.detach;
    let (stdin_tx, stdin_rx) = oneshot::channel::<std::fs::File>();
    run(
        &state,
        &exec,
        window,
        output,
        with_stdin.then_some(stdin_tx),
    );
    let Some(mut chunks) = chunks else {
        return Ok(StatusCode::OK.into_response());
    };
    let upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else {
            return;
        };
        let (reader, mut writer) = tokio::io::split(hyper_util::rt::TokioIo::new(upgraded));
        let (detached_tx, detached_rx) = oneshot::channel();
        if with_stdin {
            let keys = exec.detach_keys.clone();
            let kept = Arc::clone(&exec);
            tokio::spawn(async move {
                if let Ok(file) = stdin_rx.await {
                    if let Some(file) = pump_stdin(reader, file, &keys).await {
                        // The process keeps its stdin open, as docker's.
                        kept.state().detached_stdin = Some(file);
                        let _ = detached_tx.send(());
                    }
                }
            });
        }
        // Detached: the stream ends, the process runs on.
        let detached = on_detach(detached_rx);
        tokio::pin!(detached);
        loop {
            tokio::select! {
                () = &mut detached => break,
                chunk = chunks.recv() => match chunk {
                    Some(chunk) => {
                        if write_chunk(&mut writer, &chunk, raw).await.is_err() {
                            break;
                        }
                    }
                    None => break,
                },
            }
        }
        let _ = writer.shutdown().await;
    });
    Ok(upgraded_response(raw))
}

/// Starts the exec's process on a thread of its own and waits for it
/// there; its output goes to `output` (none: discarded).
fn run(
    state: &Shared,
    exec: &Arc<Exec>,
    window: Option<WindowSize>,
    output: Option<mpsc::Sender<Chunk>>,
    stdin: Option<oneshot::Sender<std::fs::File>>,
) {
    let shared = Arc::clone(state);
    let exec = Arc::clone(exec);
    std::thread::spawn(move || {
        let engine = &shared.engine;
        let mut sink = ChannelSink(output);
        let mut stdin = stdin;
        let result = engine.find_container(&exec.container).and_then(|record| {
            let attach = Attach {
                stdin: stdin.is_some(),
                window,
                output: Some(&mut sink),
            };
            shared.events.container(
                format!("exec_start: {}", exec.request.command.join(" ")),
                &record,
                &[("execID", exec.id.as_str())],
            );
            engine.exec_in_container(&record, &exec.request, attach, &mut |running| {
                let mut state = exec.state();
                state.pid = running.pid;
                state.tty.attach(running.tty);
                if let (Some(tx), Some(file)) = (stdin.take(), running.stdin) {
                    let _ = tx.send(file);
                }
                Ok(())
            })
        });
        let code = match &result {
            Ok(code) => *code,
            Err(error) => {
                // What could not start says why on its stderr, and exits
                // 126 as docker exec does.
                sink.stderr(format!("kiln: {error}\n").as_bytes());
                126
            }
        };
        if let Ok(record) = engine.find_container(&exec.container) {
            shared.events.container(
                "exec_die",
                &record,
                &[
                    ("execID", exec.id.as_str()),
                    ("exitCode", &code.to_string()),
                ],
            );
        }
        {
            let mut state = exec.state();
            state.running = false;
            state.exit_code = Some(code);
            state.tty.detach();
        }
        // Last: the stream ends once the exit code can be read.
        drop(sink);
    });
}

/// `GET /exec/ID/json`.
pub(crate) async fn inspect(State(state): State<Shared>, Path(id): Path<String>) -> Answer {
    let exec = state.live.execs.get(&id)?;
    let exec_state = exec.state();
    let request = &exec.request;
    let (entrypoint, arguments) = request
        .command
        .split_first()
        .map_or((String::new(), Vec::new()), |(first, rest)| {
            (first.clone(), rest.to_vec())
        });
    Ok(Json(json!({
        "ID": exec.id,
        "ContainerID": exec.container,
        "Running": exec_state.running,
        "ExitCode": exec_state.exit_code,
        "Pid": exec_state.pid,
        "OpenStdin": exec.stdin,
        "OpenStdout": true,
        "OpenStderr": true,
        "CanRemove": false,
        "DetachKeys": exec.detach_keys_text,
        "ProcessConfig": {
            "tty": request.tty,
            "entrypoint": entrypoint,
            "arguments": arguments,
            "privileged": request.privileged,
            "user": request.user.clone().unwrap_or_default(),
        },
    }))
    .into_response())
}

#[derive(Deserialize, Default)]
pub(crate) struct ResizeQuery {
    h: Option<u16>,
    w: Option<u16>,
}

/// `POST /exec/ID/resize?h=ROWS&w=COLS`.
pub(crate) async fn resize(
    State(state): State<Shared>,
    Path(id): Path<String>,
    Query(query): Query<ResizeQuery>,
) -> Answer {
    let exec = state.live.execs.get(&id)?;
    let mut exec_state = exec.state();
    exec_state.tty.resize(query)
}
