//! A registry that lies: a small HTTP server on 127.0.0.1 answering the
//! distribution API with bytes that do not match what they are asked by.
//! kiln refuses each lie with one error naming the object, stores nothing
//! of it, tags nothing, and the store's check stays clean.

mod common;

use std::collections::HashMap;

use common::Answer;
use kiln_registry::{pull, ClientOptions, Platform, RegistryError};
use kiln_store::{Digest, Store};

fn answer(body: &[u8], headers: &[(&str, &str)]) -> Answer {
    Answer::new(200, headers, body)
}

/// Serves `routes` (by path) until the test ends; returns the address.
fn serve(routes: HashMap<String, Answer>) -> String {
    common::serve(move |request| {
        routes
            .get(&request.path)
            .cloned()
            .unwrap_or_else(|| Answer::fallback(&request.path))
    })
}

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// A manifest naming `config` and one gzip layer of `layer_size` bytes
/// with digest `layer`.
fn manifest(config: &[u8], layer: &Digest, layer_size: usize) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": Digest::of(config).to_string(),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": layer.to_string(),
            "size": layer_size,
        }],
    }))
    .unwrap()
}

/// A registry serving `app:1` whose one layer's blob is `served` in place
/// of `layer`.
fn registry_serving(layer: &[u8], served: &[u8]) -> (String, Digest) {
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let layer_digest = Digest::of(layer);
    let manifest = manifest(config, &layer_digest, layer.len());
    let mut routes = HashMap::new();
    routes.insert(
        "/v2/app/manifests/1".to_owned(),
        answer(&manifest, &[("Content-Type", MANIFEST)]),
    );
    routes.insert(
        format!("/v2/app/blobs/{}", Digest::of(config)),
        answer(config, &[]),
    );
    routes.insert(format!("/v2/app/blobs/{layer_digest}"), answer(served, &[]));
    (serve(routes), layer_digest)
}

fn fresh_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    (dir, store)
}

fn pull_app(
    store: &Store,
    address: &str,
    name: &str,
) -> Result<kiln_registry::Pulled, RegistryError> {
    pull(
        store,
        &format!("{address}/{name}"),
        &Platform::new("linux", "amd64", None),
        &ClientOptions::default(),
        &|_| {},
    )
}

/// Nothing of the lie is kept: no tag, no blob of it, a clean check.
fn assert_untouched(store: &Store, digest: &Digest) {
    assert!(store.tags().unwrap().is_empty());
    assert!(!store.blobs().contains(digest), "the lying blob was stored");
    assert!(
        store.check().unwrap().is_empty(),
        "{:?}",
        store.check().unwrap()
    );
}

#[test]
fn a_blob_whose_bytes_are_not_its_digest_is_refused() {
    let layer = b"the layer the manifest names".to_vec();
    let mut other = layer.clone();
    other[0] ^= 1;
    let (address, digest) = registry_serving(&layer, &other);
    let (_dir, store) = fresh_store();
    let error = pull_app(&store, &address, "app:1").unwrap_err().to_string();
    assert!(error.contains(&format!("blob {digest}")), "{error}");
    assert!(error.contains("its content has digest"), "{error}");
    assert!(error.contains(&address), "{error}");
    assert_untouched(&store, &digest);
}

#[test]
fn a_truncated_blob_is_refused() {
    let layer = vec![7u8; 100_000];
    let (address, digest) = registry_serving(&layer, &layer[..60_000]);
    let (_dir, store) = fresh_store();
    let error = pull_app(&store, &address, "app:1").unwrap_err().to_string();
    assert!(error.contains("sent 60000 of its 100000 bytes"), "{error}");
    assert_untouched(&store, &digest);
}

#[test]
fn a_blob_longer_than_its_size_is_refused() {
    let layer = vec![7u8; 1000];
    let mut longer = layer.clone();
    longer.extend_from_slice(b"and a tail");
    let (address, digest) = registry_serving(&layer, &longer);
    let (_dir, store) = fresh_store();
    let error = pull_app(&store, &address, "app:1").unwrap_err().to_string();
    assert!(error.contains("more than its 1000 bytes"), "{error}");
    assert_untouched(&store, &digest);
}

#[test]
fn a_manifest_of_another_digest_is_refused() {
    let config = br#"{"rootfs":{"diff_ids":[]}}"#;
    let served = manifest(config, &Digest::of(b"x"), 1);
    let asked = Digest::of(b"the manifest that was asked for");
    let said = Digest::of(b"what the header claims");
    let mut routes = HashMap::new();
    // By digest: the bytes must be that digest.
    routes.insert(
        format!("/v2/app/manifests/{asked}"),
        answer(&served, &[("Content-Type", MANIFEST)]),
    );
    // By tag: the bytes must be the digest the registry says they are.
    routes.insert(
        "/v2/app/manifests/1".to_owned(),
        answer(
            &served,
            &[
                ("Content-Type", MANIFEST),
                ("Docker-Content-Digest", &said.to_string()),
            ],
        ),
    );
    let address = serve(routes);
    let (_dir, store) = fresh_store();
    let error = pull_app(&store, &address, &format!("app@{asked}"))
        .unwrap_err()
        .to_string();
    assert!(error.contains(&format!("not {asked}")), "{error}");
    let error = pull_app(&store, &address, "app:1").unwrap_err().to_string();
    assert!(error.contains(&format!("not {said}")), "{error}");
    assert_untouched(&store, &Digest::of(&served));
}
