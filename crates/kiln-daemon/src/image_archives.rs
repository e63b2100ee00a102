//! `docker save` and `docker load` through the Engine API: `GET
//! /images/get?names=...` and `GET /images/NAME/get` stream a
//! docker-archive (kiln-store's `save`, as `kiln save --format docker`);
//! `POST /images/load` reads one (or an OCI archive) into the store,
//! every blob verified (kiln-store's `load`), and answers with docker's
//! "Loaded image" lines.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::Response;
use futures_util::TryStreamExt;

use crate::api::{blocking, Shared};
use crate::error::ApiError;
use crate::streaming::{json_lines, tar_body};

type Answer = Result<Response, ApiError>;

/// `GET /images/get?names=A&names=B`.
pub(crate) async fn save_many(State(state): State<Shared>, request: Request) -> Answer {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(request.uri().query().unwrap_or(""))
            .map_err(|e| ApiError::bad_request(format!("the save's query: {e}")))?;
    let names: Vec<String> = pairs
        .into_iter()
        .filter(|(key, _)| key == "names")
        .map(|(_, name)| name)
        .collect();
    save(state, names).await
}

/// Streams the images `names` as a docker-archive; a name the store
/// lacks is a 404 before anything is sent.
pub(crate) async fn save(state: Shared, names: Vec<String>) -> Answer {
    if names.is_empty() {
        return Err(ApiError::bad_request("names: which images to save"));
    }
    let checked = names.clone();
    blocking(&state, move |engine| {
        for name in &checked {
            engine
                .store()
                .resolve(name)
                .map_err(kiln_engine::EngineError::from)?;
        }
        Ok(())
    })
    .await?;
    let (out, response) = tar_body();
    let worker = Arc::clone(&state);
    tokio::task::spawn_blocking(move || {
        let mut out = out;
        let saved = kiln_store::save(
            worker.engine.store(),
            &names,
            kiln_store::ArchiveFormat::Docker,
            kiln_store::LayerCompression::Gzip,
            kiln_store::NamedWriter::new("the response", &mut out),
        );
        match saved {
            Ok(()) => {
                for name in &names {
                    worker.events.publish(
                        "image",
                        "save",
                        name.as_str(),
                        &[("name", name.as_str())],
                    );
                }
            }
            Err(error) => out.fail(error.to_string()),
        }
    });
    Ok(response)
}

/// `POST /images/load`: the body is the archive, streamed into the store.
pub(crate) async fn load(State(state): State<Shared>, request: Request) -> Answer {
    let stream = request
        .into_body()
        .into_data_stream()
        .map_err(std::io::Error::other);
    let body = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(stream));
    // Read to the end before the answer: a bad archive is a 400 of its
    // own, as docker load prints it.
    let names = blocking(&state, move |engine| {
        let body = std::io::BufReader::new(body);
        kiln_store::load(engine.store(), body, "the archive sent")
            .map_err(|e| ApiError::bad_request(e.to_string()))
    })
    .await?;
    for name in &names {
        state
            .events
            .publish("image", "load", name.as_str(), &[("name", name.as_str())]);
    }
    let (out, response) = json_lines();
    tokio::task::spawn_blocking(move || {
        for name in names {
            out.send(serde_json::json!({ "stream": format!("Loaded image: {name}\n") }));
        }
    });
    Ok(response)
}

/// `POST /images/create?fromSrc=-&repo=R&tag=T`: the body, a root
/// filesystem tar (plain or compressed), as a one-layer image, as `kiln
/// import` makes one. (`fromSrc=URL` would have the daemon fetch it:
/// refused.) Its `changes` are not applied yet.
pub(crate) async fn import(
    state: Shared,
    query: crate::registry::CreateQuery,
    body: axum::body::Body,
) -> Answer {
    if query.from_src != "-" {
        return Err(ApiError::bad_request(format!(
            "fromSrc {:?}: kiln serve imports the request's body (fromSrc=-) only",
            query.from_src
        )));
    }
    let name = match (query.repo.as_str(), query.tag.as_str()) {
        ("", _) => None,
        (repo, "") => Some(repo.to_owned()),
        (repo, tag) => Some(format!("{repo}:{tag}")),
    };
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    let reader = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(stream));
    let shown = name.clone();
    let id = blocking(&state, move |engine| {
        let platform = kiln_graph::Platform::host();
        let created = kiln_engine::creation_time(None);
        let store = engine.store();
        let record = kiln_store::import_rootfs(
            store,
            std::io::BufReader::new(reader),
            &kiln_store::RootfsImport {
                source: "the request",
                os: &platform.os,
                architecture: &platform.architecture,
                variant: platform.variant.as_deref(),
                created: &created,
            },
        )
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
        match &name {
            Some(name) => store.tag(name, &record.manifest),
            None => store.keep_untagged(&record.manifest),
        }
        .map_err(kiln_engine::EngineError::from)?;
        Ok(record.manifest.digest().to_string())
    })
    .await?;
    state.events.publish(
        "image",
        "import",
        id.as_str(),
        &[("name", shown.as_deref().unwrap_or(""))],
    );
    let (out, response) = json_lines();
    tokio::task::spawn_blocking(move || {
        out.status(id);
    });
    Ok(response)
}
