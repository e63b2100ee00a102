//! The store on a real filesystem: blob verification, atomic writes, tags
//! in the OCI layout, resolution, GC and check, and several processes'
//! worth of concurrent writers.

use std::fs;
use std::sync::Arc;

use kiln_store::{Digest, LockMode, Store, StoreError, REF_NAME};
use oci_spec::image::{Descriptor, DescriptorBuilder, MediaType};

/// Stores a minimal image (config + one layer + manifest); returns the
/// manifest descriptor and the three digests.
fn put_image(store: &Store, seed: &str) -> (Descriptor, [Digest; 3]) {
    let layer = store
        .blobs()
        .put(format!("layer {seed}").as_bytes())
        .unwrap();
    let config_json = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{layer}"]}},"comment":"{seed}"}}"#
    );
    let config = store.blobs().put(config_json.as_bytes()).unwrap();
    let manifest_json = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer}","size":{}}}]}}"#,
        config_json.len(),
        format!("layer {seed}").len()
    );
    let manifest = store.blobs().put(manifest_json.as_bytes()).unwrap();
    let descriptor = DescriptorBuilder::default()
        .media_type(MediaType::ImageManifest)
        .digest(
            manifest
                .to_string()
                .parse::<oci_spec::image::Digest>()
                .unwrap(),
        )
        .size(manifest_json.len() as u64)
        .build()
        .unwrap();
    (descriptor, [manifest, config, layer])
}

#[test]
fn creates_an_oci_layout() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let layout = fs::read_to_string(dir.path().join("oci-layout")).unwrap();
    assert_eq!(layout, r#"{"imageLayoutVersion":"1.0.0"}"#);
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.path().join("index.json")).unwrap()).unwrap();
    assert_eq!(index["schemaVersion"], 2);
    assert_eq!(index["manifests"], serde_json::json!([]));
    assert!(dir.path().join("blobs/sha256").is_dir());
    // Opening again keeps what is there.
    let (manifest, _) = put_image(&store, "a");
    store.tag("app", &manifest).unwrap();
    let again = Store::open(dir.path()).unwrap();
    assert_eq!(again.tags().unwrap().len(), 1);
}

#[test]
fn blobs_are_verified_on_write_and_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let good = Digest::of(b"content");
    let wrong = Digest::of(b"other");
    let err = store
        .blobs()
        .put_reader(&b"content"[..], Some(&wrong))
        .unwrap_err();
    assert!(matches!(err, StoreError::DigestMismatch { .. }), "{err}");
    assert!(!store.blobs().contains(&wrong) && !store.blobs().contains(&good));
    let (_, strays) = store.blobs().list().unwrap();
    assert!(
        strays.is_empty(),
        "a refused blob leaves no temp file: {strays:?}"
    );
    let (digest, size) = store
        .blobs()
        .put_reader(&b"content"[..], Some(&good))
        .unwrap();
    assert_eq!((digest, size), (good, 7));
    // A blob altered on disk is caught when read or verified.
    fs::write(store.blobs().path(&good), b"tampered").unwrap();
    assert!(matches!(
        store.blobs().read(&good),
        Err(StoreError::DigestMismatch { .. })
    ));
    assert!(store.blobs().verify(&good).is_err());
    let problems = store.check().unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
}

#[test]
fn blob_writer_streams_and_abandoned_writers_leave_nothing() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut writer = store.blobs().writer().unwrap();
    writer.write_all(b"part one, ").unwrap();
    writer.write_all(b"part two").unwrap();
    let (digest, size) = writer.commit().unwrap();
    assert_eq!((digest, size), (Digest::of(b"part one, part two"), 18));
    let mut abandoned = store.blobs().writer().unwrap();
    abandoned.write_all(b"half").unwrap();
    drop(abandoned);
    let (digests, strays) = store.blobs().list().unwrap();
    assert_eq!((digests, strays.len()), (vec![digest], 0));
}

#[test]
fn tags_are_compared_normalised_and_kept_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (first, [first_digest, ..]) = put_image(&store, "first");
    let (second, _) = put_image(&store, "second");
    store.tag("app", &first).unwrap();
    store.tag("app:1.0", &first).unwrap();
    // `docker.io/library/app:latest` is the same name as `app`: it moves the tag.
    store.tag("docker.io/library/app:latest", &second).unwrap();
    let tags: Vec<(String, String)> = store
        .tags()
        .unwrap()
        .into_iter()
        .map(|t| (t.name, t.manifest.digest().to_string()))
        .collect();
    assert_eq!(
        tags,
        [
            ("app:1.0".to_owned(), first.digest().to_string()),
            (
                "docker.io/library/app:latest".to_owned(),
                second.digest().to_string()
            ),
        ]
    );
    assert_eq!(store.resolve("app").unwrap().digest(), second.digest());
    assert_eq!(store.resolve("app:1.0").unwrap().digest(), first.digest());
    // By digest and by id prefix.
    assert_eq!(
        store.resolve(&first_digest.to_string()).unwrap().digest(),
        first.digest()
    );
    assert_eq!(
        store.resolve(&first_digest.hex()[..12]).unwrap().digest(),
        first.digest()
    );
    assert!(matches!(
        store.resolve("nope"),
        Err(StoreError::UnknownImage(_))
    ));
    // The annotation is what skopeo's oci: transport looks up.
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.path().join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["annotations"][REF_NAME], "app:1.0");
    assert_eq!(store.untag("app:1.0").unwrap().digest(), first.digest());
    assert!(matches!(
        store.untag("app:1.0"),
        Err(StoreError::UnknownImage(_))
    ));
    assert!(store.tag("Bad Name", &first).is_err());
}

#[test]
fn tagging_a_missing_manifest_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let other = tempfile::tempdir().unwrap();
    let elsewhere = Store::open(other.path()).unwrap();
    let (manifest, _) = put_image(&elsewhere, "x");
    assert!(matches!(
        store.tag("app", &manifest),
        Err(StoreError::MissingBlob(_))
    ));
    assert!(store.tags().unwrap().is_empty());
}

#[test]
fn gc_keeps_what_tags_and_cache_roots_reach() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (tagged, tagged_blobs) = put_image(&store, "tagged");
    let (_, cached_blobs) = put_image(&store, "cached");
    let (_, garbage_blobs) = put_image(&store, "garbage");
    store.tag("app", &tagged).unwrap();
    fs::write(
        store
            .blobs()
            .path(&Digest::of(b"x"))
            .with_file_name(".tmp-blob-1-1"),
        b"x",
    )
    .unwrap();
    // The writer is done; its leases end with it.
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    let report = store.gc(&|| vec![cached_blobs[0]]).unwrap();
    assert_eq!(report.strays, 1);
    let mut removed = report.removed.clone();
    removed.sort();
    let mut expected = garbage_blobs.to_vec();
    expected.sort();
    assert_eq!(removed, expected);
    for digest in tagged_blobs.iter().chain(&cached_blobs) {
        assert!(store.blobs().contains(digest), "{digest} was collected");
    }
    assert!(store.check().unwrap().is_empty());
}

#[test]
fn check_reports_images_with_missing_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (manifest, [_, _, layer]) = put_image(&store, "a");
    store.tag("app", &manifest).unwrap();
    fs::remove_file(store.blobs().path(&layer)).unwrap();
    let problems = store.check().unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].what, "image app");
    assert!(matches!(problems[0].error, StoreError::MissingBlob(d) if d == layer));
}

#[test]
fn concurrent_writers_of_the_same_blobs_and_tags() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let threads: Vec<_> = (0..8)
        .map(|n| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                let _shared = store.lock(LockMode::Shared);
                let (manifest, _) = put_image(&store, "same");
                drop(_shared);
                store.tag(&format!("app:{n}"), &manifest).unwrap();
                manifest
            })
        })
        .collect();
    let manifests: Vec<Descriptor> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(manifests.windows(2).all(|w| w[0].digest() == w[1].digest()));
    assert_eq!(store.tags().unwrap().len(), 8);
    let (digests, strays) = store.blobs().list().unwrap();
    assert_eq!((digests.len(), strays.len()), (3, 0));
    assert!(store.check().unwrap().is_empty());
}

#[test]
fn a_damaged_index_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    Store::open(dir.path()).unwrap();
    fs::write(dir.path().join("index.json"), b"{not json").unwrap();
    let err = Store::open(dir.path()).unwrap_err();
    assert!(err.to_string().contains("index.json"), "{err}");
}

#[test]
fn leases_of_a_live_store_survive_gc_and_end_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let writer = Store::open(dir.path()).unwrap();
    let (_, [manifest, config, layer]) = put_image(&writer, "building");
    let collector = Store::open(dir.path()).unwrap();
    assert!(collector.gc(&Vec::new).unwrap().removed.is_empty());
    // An owner file nobody holds: a dead process's leases do not count.
    fs::write(
        dir.path().join("kiln/owners/999999999.0.0"),
        format!("{manifest}\n"),
    )
    .unwrap();
    drop(writer);
    let mut removed = collector.gc(&Vec::new).unwrap().removed;
    removed.sort();
    let mut expected = vec![manifest, config, layer];
    expected.sort();
    assert_eq!(removed, expected);
    assert!(!dir.path().join("kiln/owners/999999999.0.0").exists());
}

#[test]
fn gc_removes_dead_writers_temps_and_never_a_live_ones() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let writer = Store::open(dir.path()).unwrap();
    let mut blob = writer.blobs().writer().unwrap();
    blob.write_all(b"half a layer").unwrap();
    let scratch = writer.scratch_dir("unpack").unwrap();
    let live_temps = || store_temps(dir.path());
    assert_eq!(live_temps().len(), 1);
    // Temps of a writer that died: its owner file is no longer locked.
    let dead = "4242.0.0";
    fs::write(dir.path().join("kiln/owners").join(dead), "").unwrap();
    fs::write(
        dir.path().join(format!("blobs/sha256/.tmp-{dead}-blob-0")),
        b"x",
    )
    .unwrap();
    fs::write(dir.path().join(format!(".tmp-{dead}-write-1")), b"{").unwrap();
    fs::create_dir_all(dir.path().join(format!("kiln/tmp/{dead}-unpack-2/upper"))).unwrap();

    let collector = Store::open(dir.path()).unwrap();
    let report = collector.gc(&Vec::new).unwrap();
    assert_eq!((report.strays, report.scratch_dirs), (2, 1), "{report:?}");
    assert_eq!(live_temps().len(), 1, "the live writer's temp is kept");
    assert!(scratch.is_dir(), "the live writer's scratch dir is kept");
    assert!(!dir.path().join("kiln/owners").join(dead).exists());
    let (digest, _) = blob.commit().unwrap();
    assert_eq!(writer.blobs().read(&digest).unwrap(), b"half a layer");
}

fn store_temps(root: &std::path::Path) -> Vec<String> {
    fs::read_dir(root.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tmp-"))
        .collect()
}

/// A tar of one file, and the same gzipped.
fn tar_and_gzip(content: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_ustar();
    header.set_size(content.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    builder.append_data(&mut header, "f", content).unwrap();
    let plain = builder.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &plain).unwrap();
    (plain, gz.finish().unwrap())
}

fn gzip_image(store: &Store, gzipped: &[u8], diff_id: &str) -> Digest {
    let layer = store.blobs().put(gzipped).unwrap();
    let config = format!(r#"{{"rootfs":{{"type":"layers","diff_ids":["{diff_id}"]}}}}"#);
    let config_digest = store.blobs().put(config.as_bytes()).unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest.to_string(), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": layer.to_string(), "size": gzipped.len()}],
    });
    store
        .blobs()
        .put(&serde_json::to_vec(&manifest).unwrap())
        .unwrap()
}

#[test]
fn a_compressed_layer_reads_back_expanded_and_checked_against_its_diff_id() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (plain, gzipped) = tar_and_gzip(b"hello\n");
    let diff_id = Digest::of(&plain);
    let image = store
        .image(&gzip_image(&store, &gzipped, &diff_id.to_string()))
        .unwrap();
    assert_eq!(image.layers.len(), 1);
    assert_eq!(image.layers[0].digest, diff_id);
    assert_eq!(store.blobs().read(&diff_id).unwrap(), plain);
    assert_eq!(image.manifest.layers().len(), 1);

    // A config that lies about the diffID: the expansion does not match.
    let (_, other) = tar_and_gzip(b"other\n");
    let lie = Digest::of(b"not the tar");
    let error = store
        .image(&gzip_image(&store, &other, &lie.to_string()))
        .unwrap_err();
    assert!(error.to_string().contains("does not match"), "{error}");
}
