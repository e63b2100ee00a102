//! A registry that fails for a while: a small HTTP server on 127.0.0.1
//! whose answers to a path are scripted (503, 429 with Retry-After, 408,
//! a dropped connection, then the real thing). kiln retries what is worth retrying, a bounded
//! number of times, and gives the last status when it gives up.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use common::Answer;
use kiln_registry::{pull, ClientOptions, Platform};
use kiln_store::{Digest, Store};

/// Serves each path's answers in order (the last one again once they run
/// out); counts the requests per path.
fn serve(script: HashMap<String, Vec<Answer>>) -> (String, Arc<Mutex<HashMap<String, usize>>>) {
    let counts = Arc::new(Mutex::new(HashMap::new()));
    let seen = Arc::clone(&counts);
    let address = common::serve(move |request| {
        let n = {
            let mut seen = seen.lock().unwrap();
            let n = seen.entry(request.path.clone()).or_insert(0);
            *n += 1;
            *n
        };
        match script.get(&request.path) {
            Some(answers) => answers[(n - 1).min(answers.len() - 1)].clone(),
            None => Answer::fallback(&request.path),
        }
    });
    (address, counts)
}

fn ok(body: &[u8], content_type: Option<&str>) -> Answer {
    match content_type {
        Some(t) => Answer::new(200, &[("Content-Type", t)], body),
        None => Answer::new(200, &[], body),
    }
}

fn status(code: u16, headers: &[(&str, &str)]) -> Answer {
    Answer::new(
        code,
        headers,
        br#"{"errors":[{"code":"UNAVAILABLE","message":"try later"}]}"#,
    )
}

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// An image of one config and one layer, as paths → bytes.
fn image() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#
            .to_vec();
    let layer = b"a layer's bytes".to_vec();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": Digest::of(&config).to_string(), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": Digest::of(&layer).to_string(), "size": layer.len()}],
    }))
    .unwrap();
    (manifest, config, layer)
}

fn pull_from(address: &str) -> Result<kiln_registry::Pulled, kiln_registry::RegistryError> {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    pull(
        &store,
        &format!("{address}/app:1"),
        &Platform::new("linux", "amd64", None),
        &ClientOptions::default(),
        &|_| {},
    )
}

#[test]
fn server_errors_and_rate_limits_are_retried_until_they_pass() {
    let (manifest, config, layer) = image();
    let mut script = HashMap::new();
    script.insert(
        "/v2/app/manifests/1".to_owned(),
        vec![
            status(503, &[]),
            status(502, &[]),
            ok(&manifest, Some(MANIFEST)),
        ],
    );
    script.insert(
        format!("/v2/app/blobs/{}", Digest::of(&config)),
        vec![status(429, &[("Retry-After", "1")]), ok(&config, None)],
    );
    script.insert(
        format!("/v2/app/blobs/{}", Digest::of(&layer)),
        vec![Answer::new(0, &[], &[]), status(408, &[]), ok(&layer, None)],
    );
    let (address, counts) = serve(script);
    let pulled = pull_from(&address).unwrap();
    assert_eq!(pulled.manifest, Digest::of(&manifest));
    let counts = counts.lock().unwrap();
    assert_eq!(counts["/v2/app/manifests/1"], 3);
    assert_eq!(counts[&format!("/v2/app/blobs/{}", Digest::of(&config))], 2);
    assert_eq!(counts[&format!("/v2/app/blobs/{}", Digest::of(&layer))], 3);
}

#[test]
fn a_registry_that_keeps_failing_gets_a_bounded_number_of_tries_and_a_clear_error() {
    let mut script = HashMap::new();
    script.insert("/v2/app/manifests/1".to_owned(), vec![status(500, &[])]);
    // A Retry-After beyond what kiln waits for is not waited for.
    script.insert(
        "/v2/app/manifests/2".to_owned(),
        vec![status(429, &[("Retry-After", "3600")])],
    );
    let (address, counts) = serve(script);
    let error = pull_from(&address).unwrap_err().to_string();
    assert!(
        error.contains(&address) && error.contains("manifest app:1"),
        "{error}"
    );
    assert!(error.contains("500 UNAVAILABLE: try later"), "{error}");
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let error = pull(
        &store,
        &format!("{address}/app:2"),
        &Platform::new("linux", "amd64", None),
        &ClientOptions::default(),
        &|_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("429"), "{error}");
    let counts = counts.lock().unwrap();
    assert_eq!(counts["/v2/app/manifests/1"], 4, "four tries");
    assert_eq!(
        counts["/v2/app/manifests/2"], 1,
        "not retried after an hour"
    );
}
