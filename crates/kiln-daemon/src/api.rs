//! The Engine API's routes: each turns its path and query into one call
//! of kiln-engine (on a blocking thread) and the answer into the Engine
//! API's JSON. The shapes of images, containers and volumes are
//! kiln-engine's (`image_json`, `container_json`, `volume_json`), shared
//! with `kiln inspect`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use kiln_engine::Engine;
use serde::Deserialize;
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::error::ApiError;
use crate::{API_VERSION, MIN_API_VERSION};

/// What every handler shares: the library face, and the containers this
/// daemon runs.
pub(crate) struct Daemon {
    pub engine: Engine,
    pub live: crate::containers::Live,
    /// The registry options every request starts from (without
    /// credentials: those are the request's).
    pub registry: kiln_engine::ClientOptions,
    pub context_limit: u64,
    pub default_network: kiln_engine::NetworkMode,
    pub events: crate::events::Events,
}

pub(crate) type Shared = Arc<Daemon>;
type Answer = Result<Response, ApiError>;

/// The routes, behind the `/v1.xx` prefix or without it.
/// What every handler shares, made from the engine and the settings.
pub(crate) fn daemon(engine: Engine, settings: crate::Settings) -> Shared {
    let mut registry = settings.registry;
    registry.credential = None;
    registry.credentials_by_registry = Some(BTreeMap::new());
    Arc::new(Daemon {
        engine,
        live: Default::default(),
        registry,
        context_limit: settings.context_limit,
        default_network: settings.default_network,
        events: Default::default(),
    })
}

pub(crate) fn app(state: Shared) -> axum::routing::IntoMakeService<Router> {
    use crate::containers as c;
    let routes = Router::new()
        .route("/_ping", get(ping).head(ping))
        .route("/version", get(version))
        .route("/info", get(info))
        .route("/system/df", get(system_df))
        .route("/events", get(crate::events::events))
        .route("/build", post(crate::build::build))
        .route("/images/json", get(images))
        .route("/images/create", post(crate::registry::create))
        .route("/images/get", get(crate::image_archives::save_many))
        .route("/images/load", post(crate::image_archives::load))
        .route("/auth", post(crate::registry::auth))
        .route(
            "/images/{*rest}",
            get(image_get).post(image_post).delete(image_delete),
        )
        .route("/containers/json", get(containers))
        .route("/containers/create", post(c::create))
        .route("/containers/prune", post(c::prune))
        .route("/commit", post(c::commit))
        .route("/containers/{id}/json", get(container_inspect))
        .route("/containers/{id}/start", post(c::start))
        .route("/containers/{id}/attach", post(c::attach))
        .route("/containers/{id}/wait", post(c::wait))
        .route("/containers/{id}/logs", get(c::logs))
        .route("/containers/{id}/stop", post(c::stop))
        .route("/containers/{id}/restart", post(c::restart))
        .route("/containers/{id}/kill", post(c::kill))
        .route("/containers/{id}/pause", post(c::pause))
        .route("/containers/{id}/rename", post(c::rename))
        .route("/containers/{id}/stats", get(c::stats))
        .route("/containers/{id}/update", post(c::update))
        .route("/containers/{id}/unpause", post(c::unpause))
        .route("/containers/{id}/resize", post(c::resize))
        .route("/containers/{id}/top", get(c::top))
        .route("/containers/{id}/changes", get(c::changes))
        .route("/containers/{id}/export", get(crate::archive::export))
        .route(
            "/containers/{id}/archive",
            get(crate::archive::get)
                .head(crate::archive::head)
                .put(crate::archive::put),
        )
        .route("/containers/{id}/exec", post(crate::exec::create))
        .route("/exec/{id}/start", post(crate::exec::start))
        .route("/exec/{id}/json", get(crate::exec::inspect))
        .route("/exec/{id}/resize", post(crate::exec::resize))
        .route("/containers/{id}", axum::routing::delete(c::remove))
        .route("/volumes", get(volumes))
        .route("/volumes/create", post(volume_create))
        .route("/volumes/prune", post(volume_prune))
        .route("/volumes/{name}", get(volume_inspect).delete(volume_remove))
        .fallback(not_served)
        .with_state(state);
    // The prefix is taken off before routing (a layer on the router would
    // run after it).
    let unversioned = Router::new().fallback_service(routes.map_request(strip_version));
    unversioned.into_make_service()
}

/// The API version a request asked for (its `/v1.xx` prefix); none:
/// the newest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct ApiVersion(pub u32, pub u32);

/// `/v1.44/images/json` → `/images/json` (the query kept), the version
/// kept as an extension for the handlers whose behaviour changed with it.
fn strip_version(mut request: Request) -> Request {
    let path = request.uri().path();
    let parsed = path.strip_prefix("/v").and_then(|rest| {
        let (version, tail) = rest.split_once('/')?;
        let (major, minor) = version.split_once('.')?;
        Some((
            ApiVersion(major.parse().ok()?, minor.parse().ok()?),
            format!("/{tail}"),
        ))
    });
    if let Some((version, rest)) = parsed {
        request.extensions_mut().insert(version);
        let with_query = match request.uri().query() {
            Some(query) => format!("{rest}?{query}"),
            None => rest,
        };
        if let Ok(uri) = with_query.parse::<Uri>() {
            *request.uri_mut() = uri;
        }
    }
    request
}

/// Runs `work` on a blocking thread (kiln-engine is blocking).
pub(crate) async fn blocking<T: Send + 'static>(
    state: &Shared,
    work: impl FnOnce(&Engine) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let state = Arc::clone(state);
    tokio::task::spawn_blocking(move || work(&state.engine))
        .await
        .map_err(|e| ApiError::internal(format!("the request's worker failed: {e}")))?
}

pub(crate) fn json(status: StatusCode, value: Value) -> Response {
    (status, Json(value)).into_response()
}

async fn not_served(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(format!(
        "page not found: kiln serve does not serve {method} {} yet",
        uri.path()
    ))
}

async fn ping(method: Method) -> Response {
    let mut response = if method == Method::HEAD {
        Response::new(Body::empty())
    } else {
        Response::new(Body::from("OK"))
    };
    let headers = response.headers_mut();
    for (name, value) in [
        ("api-version", API_VERSION),
        ("ostype", "linux"),
        ("builder-version", "1"),
        ("docker-experimental", "false"),
        ("cache-control", "no-cache, no-store, must-revalidate"),
        ("pragma", "no-cache"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn machine() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.machine().to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".into())
}

async fn version(State(engine): State<Shared>) -> Answer {
    let info = blocking(&engine, |engine| Ok(engine.system_info()?)).await?;
    let details = json!({
        "ApiVersion": API_VERSION,
        "Arch": info.platform.architecture,
        "KernelVersion": info.kernel,
        "MinAPIVersion": MIN_API_VERSION,
        "Os": "linux",
    });
    Ok(json(
        StatusCode::OK,
        json!({
            "Platform": {"Name": "kiln"},
            "Components": [{"Name": "Engine", "Version": info.version, "Details": details}],
            "Version": info.version,
            "ApiVersion": API_VERSION,
            "MinAPIVersion": MIN_API_VERSION,
            "GitCommit": "",
            "GoVersion": "",
            "Os": "linux",
            "Arch": info.platform.architecture,
            "KernelVersion": info.kernel,
            "BuildTime": "",
        }),
    ))
}

async fn info(State(engine): State<Shared>) -> Answer {
    let info = blocking(&engine, |engine| Ok(engine.system_info()?)).await?;
    let name = nix::unistd::gethostname()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(json(
        StatusCode::OK,
        json!({
            "ID": "kiln",
            "Containers": info.containers,
            "ContainersRunning": info.running_containers - info.paused_containers,
            "ContainersPaused": info.paused_containers,
            "ContainersStopped": info.containers - info.running_containers,
            "Images": info.images,
            "Driver": "overlay",
            "DriverStatus": [["Backing", "kiln snapshots"]],
            "DockerRootDir": info.store.display().to_string(),
            "SystemTime": humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            "LoggingDriver": "kiln",
            "CgroupDriver": "cgroupfs",
            "CgroupVersion": info.cgroup_version.to_string(),
            "KernelVersion": info.kernel,
            "OperatingSystem": info.operating_system,
            "OSType": "linux",
            "Architecture": machine(),
            "NCPU": info.cpus,
            "MemTotal": info.memory,
            "Name": name,
            "ServerVersion": info.version,
            "SecurityOptions": ["name=seccomp,profile=builtin"],
            "Runtimes": {"kiln": {"path": "kiln"}},
            "DefaultRuntime": "kiln",
            "Swarm": {"LocalNodeState": "inactive", "ControlAvailable": false},
            "Plugins": {"Volume": ["local"], "Network": ["host", "none"], "Log": ["kiln"]},
            "Labels": [],
            "Debug": false,
            "ExperimentalBuild": false,
            "IndexServerAddress": "https://index.docker.io/v1/",
            "HttpProxy": "",
            "HttpsProxy": "",
            "NoProxy": "",
            "LiveRestoreEnabled": false,
            "Isolation": "",
            "Warnings": [],
        }),
    ))
}

/// An RFC 3339 time as the Engine API's lists give it: seconds.
fn unix_seconds(rfc3339: Option<&str>) -> i64 {
    rfc3339
        .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs() as i64)
}

/// `GET /images/json`: one entry per image with every name it has (that
/// the filters let through).
fn image_summaries(
    engine: &Engine,
    filters: &[kiln_engine::ImageFilter],
) -> Result<Vec<Value>, ApiError> {
    let containers = engine.containers().list();
    let mut order: Vec<String> = Vec::new();
    let mut by_id: BTreeMap<String, Value> = BTreeMap::new();
    let images = engine.images()?;
    for image in images
        .iter()
        .filter(|i| filters.iter().all(|f| f.matches(i)))
    {
        let id = image.id.to_string();
        let entry = by_id.entry(id.clone()).or_insert_with(|| {
            order.push(id.clone());
            let used = containers
                .iter()
                .filter(|c| c.config.image_id == id)
                .count();
            json!({
                "Id": id,
                "ParentId": "",
                "RepoTags": [],
                "RepoDigests": [],
                "Created": unix_seconds(image.created.as_deref()),
                "Size": image.size,
                "SharedSize": -1,
                "Labels": {},
                "Containers": used,
            })
        });
        if image.name.is_some() {
            let (repository, tag) = image.repository_and_tag();
            if let Some(tags) = entry["RepoTags"].as_array_mut() {
                tags.push(format!("{repository}:{tag}").into());
            }
        }
    }
    Ok(order
        .into_iter()
        .filter_map(|id| by_id.remove(&id))
        .collect())
}

/// The `filters` parameter, as the clients send it: `{"key":["value"]}`,
/// or the older `{"key":{"value":true}}`.
pub(crate) fn filter_values(filters: Option<&str>) -> Result<Vec<(String, String)>, ApiError> {
    let Some(text) = filters.filter(|t| !t.is_empty()) else {
        return Ok(Vec::new());
    };
    let value: Value =
        serde_json::from_str(text).map_err(|e| ApiError::bad_request(format!("filters: {e}")))?;
    let mut pairs = Vec::new();
    for (key, values) in value.as_object().into_iter().flatten() {
        match values {
            Value::Array(items) => pairs.extend(
                items
                    .iter()
                    .filter_map(Value::as_str)
                    .map(|v| (key.clone(), v.to_owned())),
            ),
            Value::Object(map) => pairs.extend(
                map.iter()
                    .filter(|(_, on)| on.as_bool() != Some(false))
                    .map(|(v, _)| (key.clone(), v.clone())),
            ),
            _ => {
                return Err(ApiError::bad_request(format!(
                    "filters: {key} is not a list"
                )))
            }
        }
    }
    Ok(pairs)
}

async fn images(State(engine): State<Shared>, Query(query): Query<FiltersQuery>) -> Answer {
    let filters = filter_values(query.filters.as_deref())?
        .iter()
        .map(|(key, value)| kiln_engine::ImageFilter::parse(key, value))
        .collect::<Result<Vec<_>, _>>()?;
    let rows = blocking(&engine, move |engine| image_summaries(engine, &filters)).await?;
    Ok(json(StatusCode::OK, Value::Array(rows)))
}

/// `/images/NAME/json`, `/images/NAME/history`: NAME may hold `/` and
/// `:` (`localhost:5000/team/app:1`), so the action is the last part.
fn image_action(rest: &str) -> (&str, &str) {
    match rest.rsplit_once('/') {
        Some((name, action)) => (name, action),
        None => (rest, ""),
    }
}

async fn image_get(State(engine): State<Shared>, Path(rest): Path<String>) -> Answer {
    let (name, action) = image_action(&rest);
    let name = name.to_owned();
    match action {
        "json" => {
            let value = blocking(&engine, move |engine| Ok(engine.image_json(&name)?)).await?;
            Ok(json(StatusCode::OK, value))
        }
        "history" => {
            let rows = blocking(&engine, move |engine| history(engine, &name)).await?;
            Ok(json(StatusCode::OK, Value::Array(rows)))
        }
        "get" => crate::image_archives::save(engine, vec![name]).await,
        _ => Err(ApiError::not_found(format!(
            "page not found: GET /images/{rest}"
        ))),
    }
}

/// `GET /images/NAME/history`: newest first; only the newest entry is an
/// image (docker's `<missing>` for the others).
fn history(engine: &Engine, name: &str) -> Result<Vec<Value>, ApiError> {
    let id = engine.stored_image(name)?.digest.to_string();
    let tags: Vec<String> = image_summaries(engine, &[])?
        .into_iter()
        .find(|row| row["Id"] == id.as_str())
        .and_then(|row| serde_json::from_value(row["RepoTags"].clone()).ok())
        .unwrap_or_default();
    let entries = engine.image_history(name)?;
    Ok(entries
        .iter()
        .rev()
        .enumerate()
        .map(|(index, entry)| {
            json!({
                "Id": if index == 0 { id.clone() } else { "<missing>".to_owned() },
                "Created": unix_seconds(Some(&entry.created)),
                "CreatedBy": entry.created_by,
                "Tags": if index == 0 { json!(tags) } else { Value::Null },
                "Size": entry.size,
                "Comment": entry.comment,
            })
        })
        .collect())
}

#[derive(Deserialize)]
struct TagQuery {
    repo: String,
    #[serde(default)]
    tag: String,
}

async fn image_post(
    State(engine): State<Shared>,
    headers: axum::http::HeaderMap,
    Path(rest): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Answer {
    let (name, action) = image_action(&rest);
    match action {
        "tag" => {}
        "push" => {
            let tag = query.get("tag").cloned().unwrap_or_default();
            return crate::registry::push(engine, headers, name.to_owned(), tag).await;
        }
        _ => {
            return Err(ApiError::not_found(format!(
                "page not found: POST /images/{rest}"
            )))
        }
    }
    let tag: TagQuery = serde_json::from_value(json!(query))
        .map_err(|e| ApiError::bad_request(format!("tag: {e}")))?;
    let written = if tag.tag.is_empty() {
        tag.repo
    } else {
        format!("{}:{}", tag.repo, tag.tag)
    };
    // The clients send it normalized (`docker.io/team/app`); kept as
    // docker shows it, and as `kiln tag` would have written it.
    let target = kiln_store::Reference::parse(&written)
        .map_err(|e| ApiError::bad_request(e.to_string()))?
        .familiar();
    let name = name.to_owned();
    let tagged = target.clone();
    let id = blocking(&engine, move |engine| {
        let descriptor = engine
            .store()
            .resolve(&name)
            .map_err(kiln_engine::EngineError::from)?;
        engine
            .store()
            .tag(&target, &descriptor)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        Ok(descriptor.digest().to_string())
    })
    .await?;
    engine
        .events
        .publish("image", "tag", id, &[("name", tagged.as_str())]);
    Ok(StatusCode::CREATED.into_response())
}

#[derive(Deserialize, Default)]
struct ForceQuery {
    #[serde(default)]
    force: Option<String>,
}

pub(crate) fn truthy(value: Option<&str>) -> bool {
    matches!(value, Some("1" | "true" | "True"))
}

async fn image_delete(
    State(engine): State<Shared>,
    Path(name): Path<String>,
    Query(query): Query<ForceQuery>,
) -> Answer {
    let force = truthy(query.force.as_deref());
    let removed = blocking(
        &engine,
        move |engine| Ok(engine.remove_image(&name, force)?),
    )
    .await?;
    let rows: Vec<Value> = removed
        .into_iter()
        .map(|r| match r {
            kiln_engine::Removed::Untagged { name, .. } => {
                // As docker prints it: `busybox:latest`, `team/app:1`.
                let (repository, tag) = kiln_engine::repository_and_tag(&name);
                let shown = format!("{repository}:{tag}");
                engine
                    .events
                    .publish("image", "untag", shown.clone(), &[("name", shown.as_str())]);
                json!({ "Untagged": shown })
            }
            kiln_engine::Removed::Deleted { id } => {
                engine
                    .events
                    .publish("image", "delete", id.to_string(), &[]);
                json!({ "Deleted": id.to_string() })
            }
        })
        .collect();
    Ok(json(StatusCode::OK, Value::Array(rows)))
}

#[derive(Deserialize, Default)]
struct ListQuery {
    #[serde(default)]
    all: Option<String>,
    #[serde(default)]
    filters: Option<String>,
}

/// `GET /containers/json`: `all`, and `filters` (id, name, status,
/// label, exited, ancestor, volume).
async fn containers(State(engine): State<Shared>, Query(query): Query<ListQuery>) -> Answer {
    let all = truthy(query.all.as_deref());
    let filters = filter_values(query.filters.as_deref())?
        .into_iter()
        .map(|(key, value)| kiln_engine::ContainerFilter::parse(&key, &value))
        .collect::<Result<Vec<_>, _>>()?;
    let rows = blocking(&engine, move |engine| {
        Ok(engine
            .list_containers(all, &filters)
            .iter()
            .map(crate::containers::summary)
            .collect::<Vec<_>>())
    })
    .await?;
    Ok(json(StatusCode::OK, Value::Array(rows)))
}

async fn container_inspect(State(engine): State<Shared>, Path(id): Path<String>) -> Answer {
    let value = blocking(&engine, move |engine| {
        Ok(crate::containers::inspect_json(
            &engine.find_container(&id)?,
        ))
    })
    .await?;
    Ok(json(StatusCode::OK, value))
}

/// `GET /volumes?filters=`: `name` (a part of it), `label` (`KEY` or
/// `KEY=VALUE`), `dangling` (used by no container), `driver` (`local`).
async fn volumes(State(engine): State<Shared>, Query(query): Query<FiltersQuery>) -> Answer {
    let filters = filter_values(query.filters.as_deref())?;
    let rows = blocking(&engine, move |engine| {
        let used: std::collections::BTreeSet<String> = engine
            .containers()
            .list()
            .iter()
            .flat_map(|c| c.config.volumes.clone())
            .collect();
        let mut rows = Vec::new();
        for volume in engine.volumes()? {
            let mut keep = true;
            for (key, value) in &filters {
                keep &= match key.as_str() {
                    "name" => volume.name.contains(value.as_str()),
                    "label" => match value.split_once('=') {
                        Some((k, v)) => volume.labels.get(k).is_some_and(|l| l == v),
                        None => volume.labels.contains_key(value),
                    },
                    "dangling" => (value == "true" || value == "1") != used.contains(&volume.name),
                    "driver" => value == "local",
                    other => {
                        return Err(ApiError::bad_request(format!(
                            "invalid filter {other:?} (name, label, dangling, driver)"
                        )))
                    }
                };
            }
            if keep {
                rows.push(kiln_engine::volume_json(&volume));
            }
        }
        Ok(rows)
    })
    .await?;
    Ok(json(
        StatusCode::OK,
        json!({ "Volumes": rows, "Warnings": [] }),
    ))
}

#[derive(Deserialize, Default)]
struct VolumeCreate {
    #[serde(rename = "Name", default)]
    name: String,
    #[serde(rename = "Driver", default)]
    driver: String,
    #[serde(rename = "Labels", default)]
    labels: Option<BTreeMap<String, String>>,
}

async fn volume_create(State(engine): State<Shared>, body: axum::body::Bytes) -> Answer {
    let request: VolumeCreate = if body.is_empty() {
        VolumeCreate::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("the volume to create: {e}")))?
    };
    if !request.driver.is_empty() && request.driver != "local" {
        // Docker's answer for a driver it has no plugin for.
        return Err(ApiError::not_found(format!(
            "volume driver {:?}: kiln has the local driver only",
            request.driver
        )));
    }
    let value = blocking(&engine, move |engine| {
        let name = Some(request.name.as_str()).filter(|n| !n.is_empty());
        let volume = engine.create_volume(name, &request.labels.unwrap_or_default())?;
        Ok(kiln_engine::volume_json(&volume))
    })
    .await?;
    if let Some(name) = value["Name"].as_str() {
        engine
            .events
            .publish("volume", "create", name, &[("driver", "local")]);
    }
    Ok(json(StatusCode::CREATED, value))
}

async fn volume_inspect(State(engine): State<Shared>, Path(name): Path<String>) -> Answer {
    let value = blocking(&engine, move |engine| {
        Ok(kiln_engine::volume_json(&engine.volume(&name)?))
    })
    .await?;
    Ok(json(StatusCode::OK, value))
}

async fn volume_remove(
    State(engine): State<Shared>,
    Path(name): Path<String>,
    Query(query): Query<ForceQuery>,
) -> Answer {
    let force = truthy(query.force.as_deref());
    let removed = name.clone();
    blocking(&engine, move |engine| {
        Ok(engine.remove_volume(&removed, force)?)
    })
    .await?;
    engine
        .events
        .publish("volume", "destroy", name, &[("driver", "local")]);
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize, Default)]
struct FiltersQuery {
    #[serde(default)]
    filters: Option<String>,
}

/// Whether filter `key` is set to true (`all=true` of `volume prune -a`).
fn filter_is_true(filters: Option<&str>, key: &str) -> Result<bool, ApiError> {
    Ok(filter_values(filters)?
        .iter()
        .any(|(k, v)| k == key && (v == "true" || v == "1")))
}

async fn volume_prune(
    State(engine): State<Shared>,
    version: Option<axum::Extension<ApiVersion>>,
    Query(query): Query<FiltersQuery>,
) -> Answer {
    // Before API 1.42 prune took every unused volume, named ones too.
    let old_client = version.is_some_and(|v| v.0 < ApiVersion(1, 42));
    let all = old_client || filter_is_true(query.filters.as_deref(), "all")?;
    let removed = blocking(&engine, move |engine| Ok(engine.prune_volumes(all)?)).await?;
    Ok(json(
        StatusCode::OK,
        json!({ "VolumesDeleted": removed, "SpaceReclaimed": 0 }),
    ))
}

async fn system_df(State(engine): State<Shared>) -> Answer {
    let value = blocking(&engine, |engine| {
        let images = image_summaries(engine, &[])?;
        // kiln-engine's counts, the ones `kiln system df` prints.
        let usage = engine.disk_usage()?;
        let containers: Vec<Value> = usage
            .containers
            .iter()
            .map(|(record, bytes)| {
                let mut row = crate::containers::summary(record);
                row["SizeRw"] = json!(bytes);
                row
            })
            .collect();
        let volumes: Vec<Value> = usage
            .volumes
            .iter()
            .map(|(volume, bytes, users)| {
                let mut row = kiln_engine::volume_json(volume);
                row["UsageData"] = json!({ "Size": bytes, "RefCount": users });
                row
            })
            .collect();
        let time = |at: std::time::SystemTime| humantime::format_rfc3339_seconds(at).to_string();
        let cache: Vec<Value> = usage
            .cache_layers
            .iter()
            .map(|(blob, bytes, last_used)| {
                json!({
                    "ID": blob.to_string(), "Type": "regular", "Description": "a cached step's layer",
                    "InUse": false, "Shared": false, "Size": bytes,
                    "CreatedAt": time(*last_used), "LastUsedAt": time(*last_used), "UsageCount": 1,
                })
            })
            .collect();
        Ok(json!({
            "LayersSize": usage.image_bytes,
            "Images": images,
            "Containers": containers,
            "Volumes": volumes,
            "BuildCache": cache,
        }))
    })
    .await?;
    Ok(json(StatusCode::OK, value))
}
