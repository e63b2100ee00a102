//! `docker cp` through the Engine API: `HEAD` (what a path is),
//! `GET` (the path as a tar) and `PUT` (a tar unpacked into a directory)
//! of `/containers/ID/archive?path=...`, over kiln-engine's container
//! files, which resolve every path inside the container's root. What a
//! path is travels as docker's `X-Docker-Container-Path-Stat` header:
//! base64 JSON with Go's `os.FileMode` bits, which the CLI reads to
//! decide where a copy lands. And `docker export`
//! (`GET /containers/ID/export`): the container's files as one tar.

use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use futures_util::TryStreamExt;
use kiln_engine::PathStat;
use serde::Deserialize;
use serde_json::json;

use crate::api::{blocking, truthy, Shared};
use crate::error::ApiError;
use crate::streaming::tar_body;

type Answer = Result<Response, ApiError>;

const STAT_HEADER: &str = "x-docker-container-path-stat";

#[derive(Deserialize, Default)]
pub(crate) struct ArchiveQuery {
    #[serde(default)]
    path: String,
    #[serde(rename = "copyUIDGID")]
    copy_uid_gid: Option<String>,
}

/// Go's `os.FileMode` for a unix `st_mode`: the permission bits, and the
/// type as Go's high bits (what `FileMode.IsDir` reads).
fn go_file_mode(mode: u32) -> u32 {
    const DIR: u32 = 1 << 31;
    const SYMLINK: u32 = 1 << 27;
    const DEVICE: u32 = 1 << 26;
    const NAMED_PIPE: u32 = 1 << 25;
    const SOCKET: u32 = 1 << 24;
    const SETUID: u32 = 1 << 23;
    const SETGID: u32 = 1 << 22;
    const CHAR_DEVICE: u32 = 1 << 21;
    const STICKY: u32 = 1 << 20;
    let kind = match mode & 0o170000 {
        0o040000 => DIR,
        0o120000 => SYMLINK,
        0o060000 => DEVICE,
        0o020000 => DEVICE | CHAR_DEVICE,
        0o010000 => NAMED_PIPE,
        0o140000 => SOCKET,
        _ => 0,
    };
    let special = [(0o4000, SETUID), (0o2000, SETGID), (0o1000, STICKY)]
        .iter()
        .filter(|(bit, _)| mode & bit != 0)
        .fold(0, |acc, (_, go)| acc | go);
    kind | special | (mode & 0o777)
}

/// The stat header for `path`.
fn stat_header(path: &str, stat: &PathStat) -> Result<HeaderValue, ApiError> {
    let name = path
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|n| !n.is_empty())
        .unwrap_or("/");
    let value = json!({
        "name": name,
        "size": stat.size,
        "mode": go_file_mode(stat.mode),
        "mtime": "1970-01-01T00:00:00Z",
        "linkTarget": stat
            .link_target
            .as_ref()
            .map(|t| t.display().to_string())
            .unwrap_or_default(),
    });
    let encoded = base64::engine::general_purpose::STANDARD.encode(value.to_string());
    HeaderValue::from_str(&encoded).map_err(|e| ApiError::internal(e.to_string()))
}

/// The container and what `path` is in it; nothing there is a 404.
async fn stat(
    state: &Shared,
    id: String,
    path: String,
) -> Result<(kiln_runtime::containers::ContainerRecord, PathStat), ApiError> {
    if path.is_empty() {
        return Err(ApiError::bad_request("path: which path of the container"));
    }
    blocking(state, move |engine| {
        let record = engine.find_container(&id)?;
        match engine.stat_container_path(&record, &path)? {
            Some(stat) => Ok((record, stat)),
            None => Err(ApiError::not_found(format!(
                "Could not find the file {path} in container {id}"
            ))),
        }
    })
    .await
}

/// `HEAD /containers/ID/archive?path=P`.
pub(crate) async fn head(
    State(state): State<Shared>,
    Path(id): Path<String>,
    Query(query): Query<ArchiveQuery>,
) -> Answer {
    let (_, stat) = stat(&state, id, query.path.clone()).await?;
    let mut response = StatusCode::OK.into_response();
    response
        .headers_mut()
        .insert(STAT_HEADER, stat_header(&query.path, &stat)?);
    Ok(response)
}

/// `GET /containers/ID/archive?path=P`: the path as a tar, streamed.
pub(crate) async fn get(
    State(state): State<Shared>,
    Path(id): Path<String>,
    Query(query): Query<ArchiveQuery>,
) -> Answer {
    let (record, stat) = stat(&state, id, query.path.clone()).await?;
    let header = stat_header(&query.path, &stat)?;
    let (mut out, mut response) = tar_body();
    let path = query.path;
    let worker = std::sync::Arc::clone(&state);
    tokio::task::spawn_blocking(move || {
        let archived = worker
            .engine
            .archive_container_path(&record, &path, None, false, &mut out);
        if let Err(error) = archived {
            out.fail(error.to_string());
        }
    });
    response.headers_mut().insert(STAT_HEADER, header);
    Ok(response)
}

/// `GET /containers/ID/export` (`docker export`): the container's files
/// as one tar, streamed.
pub(crate) async fn export(State(state): State<Shared>, Path(id): Path<String>) -> Answer {
    let record = blocking(&state, move |engine| Ok(engine.find_container(&id)?)).await?;
    let (mut out, response) = tar_body();
    let worker = std::sync::Arc::clone(&state);
    tokio::task::spawn_blocking(move || {
        if let Err(error) = worker.engine.export_container(&record, &mut out) {
            out.fail(error.to_string());
        }
    });
    Ok(response)
}

/// `PUT /containers/ID/archive?path=DIR`: the body's tar unpacked into
/// the container's directory `DIR` (owners kept with `copyUIDGID`).
pub(crate) async fn put(
    State(state): State<Shared>,
    Path(id): Path<String>,
    Query(query): Query<ArchiveQuery>,
    request: Request,
) -> Answer {
    let (record, stat) = stat(&state, id, query.path.clone()).await?;
    if !stat.is_dir {
        return Err(ApiError::bad_request(format!(
            "{}: not a directory in the container",
            query.path
        )));
    }
    let keep_owners = truthy(query.copy_uid_gid.as_deref());
    let stream = request
        .into_body()
        .into_data_stream()
        .map_err(std::io::Error::other);
    let body = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(stream));
    let dir = query.path;
    blocking(&state, move |engine| {
        let mut body = body;
        engine
            .extract_into_container(&record, &dir, keep_owners, &mut body)
            .map_err(|e| match e {
                kiln_engine::EngineError::Request(message) => ApiError::bad_request(message),
                other => other.into(),
            })
    })
    .await?;
    Ok(StatusCode::OK.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_engine::PathKind;

    #[test]
    fn modes_are_go_s() {
        assert_eq!(go_file_mode(0o040755), (1 << 31) | 0o755);
        assert_eq!(go_file_mode(0o100644), 0o644);
        assert_eq!(go_file_mode(0o120777), (1 << 27) | 0o777);
        assert_eq!(go_file_mode(0o104755), (1 << 23) | 0o755);
        assert_eq!(go_file_mode(0o020666), (1 << 26) | (1 << 21) | 0o666);
    }

    #[test]
    fn the_stat_header_names_the_path_s_last_part() {
        let stat = PathStat {
            kind: PathKind::File,
            is_dir: false,
            size: 5,
            mode: 0o100644,
            link_target: None,
        };
        let header = stat_header("/etc/hostname", &stat).unwrap();
        let json: serde_json::Value = serde_json::from_slice(
            &base64::engine::general_purpose::STANDARD
                .decode(header.as_bytes())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(json["name"], "hostname");
        assert_eq!(json["size"], 5);
        assert_eq!(json["mode"], 0o644);
    }
}
