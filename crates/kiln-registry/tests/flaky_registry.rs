//! A registry that fails for a while: a small HTTP server on 127.0.0.1
//! whose answers to a path are scripted (503, 429 with Retry-After, 408,
//! a dropped connection, then the real thing). kiln retries what is worth retrying, a bounded
//! number of times, and gives the last status when it gives up.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use kiln_registry::{pull, ClientOptions, Platform};
use kiln_store::{Digest, Store};

/// One scripted answer: status, extra headers, body.
type Answer = (u16, Vec<(String, String)>, Vec<u8>);

/// Serves each path's answers in order (the last one again once they run
/// out); counts the requests per path.
fn serve(script: HashMap<String, Vec<Answer>>) -> (String, Arc<Mutex<HashMap<String, usize>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let counts = Arc::new(Mutex::new(HashMap::new()));
    let seen = Arc::clone(&counts);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            // kiln tries HTTPS first: its ClientHello is dropped.
            let mut first_byte = [0u8; 1];
            if stream.peek(&mut first_byte).is_err() || first_byte[0] == 0x16 {
                continue;
            }
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut first = String::new();
            reader.read_line(&mut first).unwrap_or_default();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
            }
            let path = first.split(' ').nth(1).unwrap_or("/").to_owned();
            let n = {
                let mut seen = seen.lock().unwrap();
                let n = seen.entry(path.clone()).or_insert(0);
                *n += 1;
                *n
            };
            let (status, headers, body) = match script.get(&path) {
                Some(answers) => answers[(n - 1).min(answers.len() - 1)].clone(),
                None if path == "/v2/" => (200, vec![], vec![]),
                None => (404, vec![], vec![]),
            };
            // Status 0: the connection is dropped with no answer.
            if status == 0 {
                continue;
            }
            let mut head = format!(
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                body.len()
            );
            for (k, v) in headers {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
            head.push_str("\r\n");
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
        }
    });
    (address, counts)
}

fn ok(body: &[u8], content_type: Option<&str>) -> Answer {
    let headers = content_type
        .map(|t| vec![("Content-Type".to_owned(), t.to_owned())])
        .unwrap_or_default();
    (200, headers, body.to_vec())
}

fn status(code: u16, headers: &[(&str, &str)]) -> Answer {
    let headers = headers
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    (
        code,
        headers,
        br#"{"errors":[{"code":"UNAVAILABLE","message":"try later"}]}"#.to_vec(),
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
        vec![(0, vec![], vec![]), status(408, &[]), ok(&layer, None)],
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
