//! `POST /build`: the classic builder's protocol (`DOCKER_BUILDKIT=0
//! docker build`, the Docker SDK's `images.build`) over kiln's session.
//!
//! The context arrives as a tar body, streamed (never held in memory)
//! into a scratch directory of the store by kiln-engine's
//! [`UnpackedContext`], which refuses what is not a file, directory or link
//! and stops at the size limit. The build's progress events become the
//! JSON lines the docker CLI prints (`{"stream": ...}`), then `{"aux":
//! {"ID": ...}}` (what `--iidfile` and `-q` read) and the closing
//! "Successfully built/tagged" lines; a failure is an `errorDetail` line,
//! as the classic builder sends it after the 200 header.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::Response;
use futures_util::TryStreamExt;
use kiln_engine::{BuildRequest, Cancel, EngineError, EventKind, UnpackedContext};
use serde_json::json;

use crate::api::{blocking, truthy, Shared};
use crate::error::ApiError;
use crate::streaming::{json_lines, JsonLines};

type Answer = Result<Response, ApiError>;

/// The query of `POST /build`, read into a request (the context and the
/// registry options are filled in later).
#[derive(Debug, Default)]
struct BuildQuery {
    tags: Vec<String>,
    dockerfile: String,
    build_args: BTreeMap<String, String>,
    target: Option<String>,
    no_cache: bool,
    labels: BTreeMap<String, String>,
    pull: bool,
    quiet: bool,
    network: kiln_graph::Network,
    extra_hosts: Vec<(String, String)>,
    shm_size: Option<u64>,
}

impl BuildQuery {
    fn parse(query: &str) -> Result<BuildQuery, ApiError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
            .map_err(|e| ApiError::bad_request(format!("the build's query: {e}")))?;
        let mut parsed = BuildQuery::default();
        let mut seen = std::collections::BTreeSet::new();
        for (key, value) in pairs {
            // A key given twice is its first value (Go's FormValue), but
            // for those that are lists.
            if !matches!(key.as_str(), "t" | "extrahosts") && !seen.insert(key.clone()) {
                continue;
            }
            match key.as_str() {
                "t" if !value.is_empty() => parsed.tags.push(value),
                "dockerfile" => parsed.dockerfile = value,
                "buildargs" => parsed.build_args = build_args(&value)?,
                "target" if !value.is_empty() => parsed.target = Some(value),
                "nocache" => parsed.no_cache = truthy(Some(&value)),
                "labels" if !value.is_empty() => {
                    parsed.labels = serde_json::from_str(&value).map_err(|e| {
                        ApiError::bad_request(format!("labels {value:?}: not a JSON object of strings: {e}"))
                    })?
                }
                "pull" => parsed.pull = truthy(Some(&value)) || value == "always",
                "q" => parsed.quiet = truthy(Some(&value)),
                "networkmode" => parsed.network = network(&value)?,
                "extrahosts" => {
                    for host in value.split(',').filter(|h| !h.is_empty()) {
                        let pair = kiln_engine::parse_add_host(host)
                            .map_err(|e| ApiError::bad_request(e.to_string()))?;
                        parsed.extra_hosts.push(pair);
                    }
                }
                "shmsize" => {
                    let bytes: u64 = value.parse().map_err(|_| {
                        ApiError::bad_request(format!("shmsize {value:?}: a number of bytes"))
                    })?;
                    parsed.shm_size = (bytes > 0).then_some(bytes);
                }
                "platform" if !value.is_empty() => host_platform(&value)?,
                "remote" if !value.is_empty() => {
                    return Err(ApiError::bad_request(format!(
                        "remote {value:?}: kiln serve builds a context sent as a tar, not one it fetches"
                    )))
                }
                "version" if value == "2" => {
                    return Err(ApiError::bad_request(
                        "kiln serve speaks the classic builder's protocol, not BuildKit's sessions: set DOCKER_BUILDKIT=0 (kiln builds the BuildKit way either way)",
                    ))
                }
                // `cachefrom`: kiln's cache is by content, so every image
                // built in this store already offers its steps. The
                // resource limits, `rm`/`forcerm` (kiln keeps no
                // intermediate containers) and `squash` change nothing
                // kiln does.
                _ => {}
            }
        }
        Ok(parsed)
    }

    fn into_request(self, context: &UnpackedContext) -> Result<BuildRequest, EngineError> {
        let mut request =
            BuildRequest::new(context.path()).dockerfile(context.dockerfile(&self.dockerfile)?);
        request.tags = self.tags;
        request.build_args = self.build_args;
        request.target = self.target;
        request.no_cache = self.no_cache;
        request.labels = self.labels;
        request.pull = self.pull;
        request.network = self.network;
        request.extra_hosts = self.extra_hosts;
        request.shm_size = self.shm_size;
        Ok(request)
    }
}

/// `buildargs`: a JSON object; a null value is an argument the client
/// declared without a value (the CLI resolves `--build-arg NAME` from its
/// environment), which the build then does not set.
fn build_args(value: &str) -> Result<BTreeMap<String, String>, ApiError> {
    if value.is_empty() {
        return Ok(BTreeMap::new());
    }
    let args: BTreeMap<String, Option<String>> = serde_json::from_str(value).map_err(|e| {
        ApiError::bad_request(format!(
            "buildargs {value:?}: not a JSON object of strings: {e}"
        ))
    })?;
    Ok(args
        .into_iter()
        .filter_map(|(name, value)| Some((name, value?)))
        .collect())
}

fn network(value: &str) -> Result<kiln_graph::Network, ApiError> {
    Ok(match value {
        "" | "default" | "bridge" => kiln_graph::Network::Default,
        "none" => kiln_graph::Network::None,
        "host" => kiln_graph::Network::Host,
        other => {
            return Err(ApiError::bad_request(format!(
                "networkmode {other:?}: kiln builds with default, bridge, none or host"
            )))
        }
    })
}

/// kiln serve pulls and runs for the host's platform only.
fn host_platform(value: &str) -> Result<(), ApiError> {
    let asked = kiln_graph::Platform::parse(value)
        .map_err(|e| ApiError::bad_request(format!("invalid platform {value:?}: {e}")))?;
    let host = kiln_graph::Platform::host();
    if asked.os == host.os && asked.architecture == host.architecture {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "platform {value:?}: kiln serve builds for the host's platform, {}/{}",
            host.os, host.architecture
        )))
    }
}

/// `POST /build`.
pub(crate) async fn build(State(state): State<Shared>, request: Request) -> Answer {
    let query = BuildQuery::parse(request.uri().query().unwrap_or(""))?;
    let mut registry = state.registry.clone();
    registry.credentials_by_registry = Some(crate::auth::registry_config(request.headers())?);
    let quiet = query.quiet;

    // The body, as a blocking reader for the unpacker (on its thread).
    let stream = request
        .into_body()
        .into_data_stream()
        .map_err(std::io::Error::other);
    let body = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(stream));
    let limit = state.context_limit;
    let context = blocking(&state, move |engine| {
        let mut body = body;
        Ok(UnpackedContext::receive(engine.store(), &mut body, limit)?)
    })
    .await?;
    let mut request = query.into_request(&context)?;
    request.registry = registry;
    if request.network == kiln_graph::Network::Default
        && state.default_network == kiln_engine::NetworkMode::None
    {
        request.network = kiln_graph::Network::None;
    }

    let (writer, response) = json_lines();
    let worker = Arc::clone(&state);
    tokio::task::spawn_blocking(move || {
        let cancel = Cancel::default();
        let lines = Lines::new(writer, quiet);
        let result = worker.engine.build(&request, &cancel, &|event| {
            if !lines.event(event.kind) {
                // The client went away (Ctrl-C in `docker build`): stop.
                cancel.cancel();
            }
        });
        // The context goes once the build is done with it, before the
        // client hears the end (it may look at the store then).
        drop(context);
        match result {
            Ok(report) => {
                let id = report.manifest.to_string();
                for tag in &report.tags {
                    worker
                        .events
                        .publish("image", "tag", id.as_str(), &[("name", tag.as_str())]);
                }
                lines.built(&report)
            }
            Err(error) => lines.failed(&error),
        }
    });
    Ok(response)
}

/// The JSON lines of one build, as the classic builder writes them.
struct Lines {
    out: JsonLines,
    quiet: bool,
    /// Steps in the plan (for `Step i/n`).
    steps: std::sync::atomic::AtomicUsize,
}

impl Lines {
    fn new(out: JsonLines, quiet: bool) -> Lines {
        Lines {
            out,
            quiet,
            steps: Default::default(),
        }
    }

    fn stream(&self, text: String) -> bool {
        self.quiet || self.out.send(json!({ "stream": text }))
    }

    /// One progress event; false once the client is gone.
    fn event(&self, event: EventKind) -> bool {
        use std::sync::atomic::Ordering;
        match event {
            EventKind::Plan { steps } => {
                self.steps.store(steps, Ordering::Relaxed);
                true
            }
            EventKind::Started { id, step, .. } => {
                // `[stage 1/2] RUN make` → `RUN make`: the classic
                // builder numbers the Dockerfile's steps, not stages'.
                let instruction = match step.strip_prefix('[') {
                    Some(rest) => rest.split_once("] ").map_or(step.as_str(), |(_, i)| i),
                    None => step.as_str(),
                };
                let steps = self.steps.load(Ordering::Relaxed);
                self.stream(format!("Step {id}/{steps} : {instruction}\n"))
            }
            EventKind::Output { text, .. } => self.stream(format!("{text}\n")),
            EventKind::Cached(_) => self.stream(" ---> Using cache\n".into()),
            EventKind::Warning { message, line, .. } if line > 0 => {
                self.stream(format!("[WARNING] line {line}: {message}\n"))
            }
            EventKind::Warning { message, .. } => self.stream(format!("[WARNING] {message}\n")),
            EventKind::Done(_)
            | EventKind::Error { .. }
            | EventKind::Canceled { .. }
            | EventKind::Summary(_) => true,
        }
    }

    fn built(&self, report: &kiln_engine::BuildReport) {
        let id = report.manifest.to_string();
        self.out.send(json!({ "aux": { "ID": id } }));
        if self.quiet {
            // All `-q` shows: the id, as the only stream line.
            self.out.send(json!({ "stream": format!("{id}\n") }));
            return;
        }
        let short: String = report.manifest.hex().chars().take(12).collect();
        self.stream(format!("Successfully built {short}\n"));
        for tag in &report.tags {
            self.stream(format!("Successfully tagged {tag}\n"));
        }
    }

    fn failed(&self, error: &EngineError) {
        self.out.error(&error.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_classic_builder_s_query() {
        let query = BuildQuery::parse(
            "t=a%3A1&t=b&dockerfile=sub%2FDockerfile&buildargs=%7B%22V%22%3A%221%22%2C%22E%22%3Anull%7D\
             &target=final&nocache=1&labels=%7B%22k%22%3A%22v%22%7D&pull=1&q=1&networkmode=none\
             &shmsize=1048576&rm=1&cachefrom=%5B%5D",
        )
        .unwrap();
        assert_eq!(query.tags, ["a:1", "b"]);
        assert_eq!(query.dockerfile, "sub/Dockerfile");
        assert_eq!(query.build_args, BTreeMap::from([("V".into(), "1".into())]));
        assert_eq!(query.target.as_deref(), Some("final"));
        assert!(query.no_cache && query.pull && query.quiet);
        assert_eq!(query.labels["k"], "v");
        assert_eq!(query.network, kiln_graph::Network::None);
        assert_eq!(query.shm_size, Some(1 << 20));
        // The Docker SDK sends `dockerfile` twice when it is outside the
        // context: the first is the one in the tar.
        let twice = BuildQuery::parse("dockerfile=.dockerfile.1&dockerfile=FROM+x").unwrap();
        assert_eq!(twice.dockerfile, ".dockerfile.1");
    }

    #[test]
    fn refuses_what_it_cannot_build_as_asked() {
        for bad in [
            "remote=https%3A%2F%2Fexample.invalid%2Frepo.git",
            "version=2",
            "networkmode=container%3Aabc",
            "buildargs=%5B1%5D",
            "platform=linux%2Fs390x",
            "platform=foobar",
            "shmsize=lots",
        ] {
            let error = BuildQuery::parse(bad).unwrap_err();
            assert_eq!(error.status, axum::http::StatusCode::BAD_REQUEST, "{bad}");
        }
    }
}
