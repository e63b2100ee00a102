//! Pull (`POST /images/create`), push (`POST /images/NAME/push`) and
//! `POST /auth` over kiln's registry client, with the credentials the
//! client sent (`X-Registry-Auth`, the `/auth` body) and never the
//! daemon's own. Progress is docker's JSON messages (`status`, `id`,
//! `progressDetail`), so the docker CLI draws its usual lines.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use kiln_engine::ClientOptions;
use kiln_registry::{Credential, PullEvent, PushCompression, PushEvent, RegistryError};
use kiln_store::{Digest, Reference};
use serde::Deserialize;
use serde_json::json;

use crate::api::{blocking, Shared};
use crate::error::ApiError;
use crate::streaming::{json_lines, JsonLines};

type Answer = Result<Response, ApiError>;

/// The registry options of a request that talks to `reference`'s
/// registry with what the client sent for it.
fn options_for(
    state: &Shared,
    headers: &HeaderMap,
    reference: &Reference,
) -> Result<ClientOptions, ApiError> {
    let mut options = state.registry.clone();
    options.credentials_by_registry = Some(crate::auth::registry_auth(headers, &reference.domain)?);
    Ok(options)
}

fn parse_reference(name: &str) -> Result<Reference, ApiError> {
    Reference::parse(name).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// The 12 hex digits docker names a layer by in progress lines.
fn short(digest: &Digest) -> String {
    digest.hex().chars().take(12).collect()
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct CreateQuery {
    from_image: String,
    pub from_src: String,
    pub repo: String,
    pub tag: String,
    platform: String,
}

/// `POST /images/create?fromImage=NAME&tag=TAG`: a pull; with
/// `fromSrc=-`, an import of the body (`docker import`).
pub(crate) async fn create(
    State(state): State<Shared>,
    headers: HeaderMap,
    Query(query): Query<CreateQuery>,
    body: axum::body::Body,
) -> Answer {
    if !query.from_src.is_empty() {
        return crate::image_archives::import(state, query, body).await;
    }
    pull(state, headers, query).await
}

async fn pull(state: Shared, headers: HeaderMap, query: CreateQuery) -> Answer {
    if query.from_image.is_empty() {
        return Err(ApiError::bad_request("fromImage: which image to pull"));
    }
    // `tag` is a tag or a digest; the CLI may also leave it in the name.
    let name = match query.tag.as_str() {
        "" => query.from_image.clone(),
        digest if digest.contains(':') => format!("{}@{digest}", query.from_image),
        tag => format!("{}:{tag}", query.from_image),
    };
    let reference = parse_reference(&name)?;
    let platform = platform(&query.platform)?;
    let options = options_for(&state, &headers, &reference)?;
    let (out, response) = json_lines();
    let worker = Arc::clone(&state);
    tokio::task::spawn_blocking(move || {
        let tag = reference.tag.clone().unwrap_or_else(|| "latest".into());
        let repository = reference.familiar();
        let repository = repository.split(['@']).next().unwrap_or(&repository);
        let repository = repository
            .strip_suffix(&format!(":{tag}"))
            .unwrap_or(repository);
        out.send(json!({ "status": format!("Pulling from {repository}"), "id": tag }));
        let events = |event: PullEvent| pull_event(&out, event);
        match kiln_registry::pull(worker.engine.store(), &name, &platform, &options, &events) {
            Ok(pulled) => {
                let shown = pulled.tagged.as_deref().unwrap_or(&name);
                worker
                    .events
                    .publish("image", "pull", shown, &[("name", shown)]);
                out.status(format!("Digest: {}", pulled.manifest));
                let verb = if pulled.new {
                    "Downloaded newer image for"
                } else {
                    "Image is up to date for"
                };
                out.status(format!(
                    "Status: {verb} {}",
                    pulled.tagged.as_deref().unwrap_or(&name)
                ));
            }
            Err(error) => out.error(&error.to_string()),
        }
    });
    Ok(response)
}

fn pull_event(out: &JsonLines, event: PullEvent) {
    match event {
        PullEvent::Resolved { .. } => {}
        PullEvent::Present { digest, .. } => {
            out.send(json!({ "status": "Already exists", "id": short(&digest) }));
        }
        PullEvent::Progress {
            digest,
            done,
            total,
        } => {
            out.send(json!({
                "status": "Downloading",
                "progressDetail": { "current": done, "total": total },
                "id": short(&digest),
            }));
        }
        PullEvent::Downloaded { digest, .. } => {
            out.send(json!({ "status": "Pull complete", "id": short(&digest) }));
        }
    }
}

/// A pull's `platform` (`os/arch[/variant]`), else the host's.
fn platform(text: &str) -> Result<kiln_registry::Platform, ApiError> {
    let platform = if text.is_empty() {
        kiln_graph::Platform::host()
    } else {
        kiln_graph::Platform::parse(text)
            .map_err(|e| ApiError::bad_request(format!("platform {text:?}: {e}")))?
    };
    Ok(kiln_registry::Platform::new(
        &platform.os,
        &platform.architecture,
        platform.variant.as_deref(),
    ))
}

/// `POST /images/NAME/push?tag=TAG`: pushes the image the name has in
/// the store to the registry the name names.
pub(crate) async fn push(state: Shared, headers: HeaderMap, name: String, tag: String) -> Answer {
    let name = if tag.is_empty() {
        name
    } else {
        format!("{name}:{tag}")
    };
    let reference = parse_reference(&name)?;
    let options = options_for(&state, &headers, &reference)?;
    // What to push is known before the 200: a missing image is a 404.
    let lookup = name.clone();
    let manifest = blocking(&state, move |engine| {
        let descriptor = engine
            .store()
            .resolve(&lookup)
            .map_err(kiln_engine::EngineError::from)?;
        Digest::of_descriptor(&descriptor).map_err(|e| ApiError::internal(format!("{lookup}: {e}")))
    })
    .await?;
    let (out, response) = json_lines();
    let worker = Arc::clone(&state);
    tokio::task::spawn_blocking(move || {
        let repository = reference.familiar();
        let repository = repository
            .rsplit_once(':')
            .map_or(repository.as_str(), |(r, t)| {
                if t.contains('/') {
                    repository.as_str()
                } else {
                    r
                }
            });
        out.status(format!("The push refers to repository [{repository}]"));
        let events = |event: PushEvent| push_event(&out, event);
        let pushed = kiln_registry::push(
            worker.engine.store(),
            &manifest,
            &name,
            PushCompression::Gzip,
            &options,
            &events,
        );
        match pushed {
            Ok(pushed) => {
                worker
                    .events
                    .publish("image", "push", name.as_str(), &[("name", name.as_str())]);
                let tag = reference.tag.clone().unwrap_or_else(|| "latest".into());
                out.status(format!(
                    "{tag}: digest: {} size: {}",
                    pushed.manifest, pushed.size
                ));
                out.send(json!({
                    "progressDetail": {},
                    "aux": { "Tag": tag, "Digest": pushed.manifest.to_string(), "Size": pushed.size },
                }));
            }
            Err(error) => out.error(&error.to_string()),
        }
    });
    Ok(response)
}

fn push_event(out: &JsonLines, event: PushEvent) {
    let (status, digest) = match event {
        PushEvent::Present { digest, .. } => ("Layer already exists".to_owned(), digest),
        PushEvent::Uploaded { digest, .. } => ("Pushed".to_owned(), digest),
        PushEvent::Mounted { digest, from } => (format!("Mounted from {from}"), digest),
    };
    out.send(json!({ "status": status, "id": short(&digest) }));
}

/// `POST /auth`'s body (docker's `registry.AuthConfig`).
#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct AuthBody {
    username: String,
    password: String,
    serveraddress: String,
    identitytoken: String,
}

/// `POST /auth`: checks the credentials against the registry (nothing is
/// stored: the client keeps them, in its own config).
pub(crate) async fn auth(State(state): State<Shared>, Json(body): Json<AuthBody>) -> Answer {
    let domain = if body.serveraddress.is_empty() {
        "docker.io".to_owned()
    } else {
        kiln_registry::domain_of_config_key(&body.serveraddress)
    };
    let credential = if body.identitytoken.is_empty() {
        Credential::UsernamePassword(body.username, body.password)
    } else {
        Credential::IdentityToken(body.identitytoken)
    };
    let mut options = state.registry.clone();
    options.credential = Some(credential);
    blocking(&state, move |_| {
        kiln_registry::Registry::connect(&domain, &options)
            .and_then(|registry| registry.check_login())
            .map_err(|e| match e {
                RegistryError::Auth { .. } => ApiError {
                    status: StatusCode::UNAUTHORIZED,
                    message: e.to_string(),
                },
                other => ApiError::internal(other.to_string()),
            })
    })
    .await?;
    Ok((
        StatusCode::OK,
        Json(json!({ "Status": "Login Succeeded", "IdentityToken": "" })),
    )
        .into_response())
}
