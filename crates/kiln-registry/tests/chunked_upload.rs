//! A registry that takes no blob in one PUT (some do not): a small HTTP
//! server on 127.0.0.1 answering the upload API, refusing monolithic PUTs
//! with 405 and asking for chunks of at least 20 MiB (more than kiln's
//! own 16 MiB). kiln falls back to PATCHes of at least that, in order,
//! and what the server assembles is the store's blob byte for byte.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use common::{Answer, Request};
use kiln_registry::{push, ClientOptions, PushCompression};
use kiln_store::{Digest, Layer, Store};

const MIN_CHUNK: usize = 20 << 20;

#[derive(Default)]
struct Uploads {
    /// Bytes received per upload session.
    sessions: HashMap<u32, Vec<u8>>,
    next: u32,
    /// Finished blobs by digest.
    blobs: HashMap<String, Vec<u8>>,
    /// The size of every PATCH, in order.
    patches: Vec<usize>,
    monolithic_refused: usize,
}

fn answer(uploads: &Mutex<Uploads>, request: Request) -> (u16, Vec<(String, String)>) {
    let mut state = uploads.lock().unwrap();
    let (path, query) = request.path.split_once('?').unwrap_or((&request.path, ""));
    let digest = query
        .split('&')
        .find_map(|p| p.strip_prefix("digest="))
        .map(|d| d.replace("%3A", ":"));
    match (request.method.as_str(), path) {
        ("GET", "/v2/") => (200, vec![]),
        ("HEAD", p) if p.contains("/blobs/") => (404, vec![]),
        ("POST", p) if p.ends_with("/blobs/uploads/") => {
            state.next += 1;
            let id = state.next;
            state.sessions.insert(id, Vec::new());
            (
                202,
                vec![
                    ("Location".into(), format!("/upload/{id}")),
                    ("OCI-Chunk-Min-Length".into(), MIN_CHUNK.to_string()),
                ],
            )
        }
        ("PATCH", p) if p.starts_with("/upload/") => {
            let id: u32 = p["/upload/".len()..].parse().unwrap();
            state.patches.push(request.body.len());
            let start: usize = request.headers["content-range"]
                .split('-')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            let session = state.sessions.get_mut(&id).unwrap();
            if start != session.len() {
                return (416, vec![]);
            }
            session.extend_from_slice(&request.body);
            let end = session.len() - 1;
            (
                202,
                vec![
                    ("Location".into(), format!("/upload/{id}")),
                    ("Range".into(), format!("0-{end}")),
                ],
            )
        }
        ("PUT", p) if p.starts_with("/upload/") => {
            if !request.body.is_empty() {
                state.monolithic_refused += 1;
                return (405, vec![]);
            }
            let id: u32 = p["/upload/".len()..].parse().unwrap();
            let bytes = state.sessions.remove(&id).unwrap();
            let digest = digest.unwrap();
            if Digest::of(&bytes).to_string() != digest {
                return (400, vec![]);
            }
            state.blobs.insert(digest, bytes);
            (201, vec![])
        }
        ("PUT", p) if p.contains("/manifests/") => (
            201,
            vec![(
                "Docker-Content-Digest".into(),
                Digest::of(&request.body).to_string(),
            )],
        ),
        _ => (404, vec![]),
    }
}

fn serve() -> (String, Arc<Mutex<Uploads>>) {
    let uploads = Arc::new(Mutex::new(Uploads::default()));
    let state = Arc::clone(&uploads);
    let address = common::serve(move |request| {
        let (status, headers) = answer(&state, request);
        Answer {
            status,
            headers,
            body: Vec::new(),
        }
    });
    (address, uploads)
}

#[test]
fn a_registry_refusing_whole_blobs_gets_them_in_chunks_of_its_minimum() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    // A layer of 45 MiB: chunks of 20, 20 and 5 MiB.
    let layer_bytes: Vec<u8> = (0..45u32 << 20).map(|i| (i % 251) as u8).collect();
    let layer = store.blobs().put(&layer_bytes).unwrap();
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let image = kiln_store::write_image(
        &store,
        config,
        &[Layer {
            digest: layer,
            size: layer_bytes.len() as u64,
            entries: 0,
        }],
    )
    .unwrap();
    let manifest = Digest::of_descriptor(&image.manifest).unwrap();
    let (address, uploads) = serve();
    push(
        &store,
        &manifest,
        &format!("{address}/chunked:1"),
        PushCompression::None,
        &ClientOptions::default(),
        &|_| {},
    )
    .unwrap();
    let state = uploads.lock().unwrap();
    assert_eq!(state.blobs.get(&layer.to_string()), Some(&layer_bytes));
    assert_eq!(
        state
            .blobs
            .get(&Digest::of(config).to_string())
            .map(Vec::as_slice),
        Some(&config[..])
    );
    assert_eq!(state.monolithic_refused, 2, "one refused PUT per blob");
    // The layer's chunks, then the config's one.
    assert_eq!(
        state.patches,
        vec![MIN_CHUNK, MIN_CHUNK, 5 << 20, config.len()],
        "chunk sizes"
    );
}
