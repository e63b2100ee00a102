//! The store is an OCI image layout that real tools read: skopeo inspects
//! a tagged image through the `oci:` transport and umoci unpacks it.
//! Both are installed by `scripts/install-test-deps.sh`.

use std::path::Path;
use std::process::Command;

use kiln_store::{Digest, Store};
use oci_spec::image::{DescriptorBuilder, MediaType};

fn tool(name: &str) -> Command {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{name} is not installed: run scripts/install-test-deps.sh"
    );
    Command::new(name)
}

/// A one-layer image holding `/hello.txt` (0644) and `/bin/run` (0755).
fn store_image(store: &Store) -> Digest {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, mode, body) in [
        ("hello.txt", 0o644, &b"hi\n"[..]),
        ("bin/run", 0o755, b"#!/bin/sh\n"),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(body.len() as u64);
        header.set_mode(mode);
        header.set_mtime(0);
        header.set_cksum();
        builder.append_data(&mut header, path, body).unwrap();
    }
    let layer = builder.into_inner().unwrap();
    let layer_digest = store.blobs().put(&layer).unwrap();
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{"Cmd":["/bin/run"]}},"rootfs":{{"type":"layers","diff_ids":["{layer_digest}"]}},"history":[{{"created_by":"test"}}]}}"#
    );
    let config_digest = store.blobs().put(config.as_bytes()).unwrap();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer_digest}","size":{}}}]}}"#,
        config.len(),
        layer.len()
    );
    let manifest_digest = store.blobs().put(manifest.as_bytes()).unwrap();
    let descriptor = DescriptorBuilder::default()
        .media_type(MediaType::ImageManifest)
        .digest(
            manifest_digest
                .to_string()
                .parse::<oci_spec::image::Digest>()
                .unwrap(),
        )
        .size(manifest.len() as u64)
        .build()
        .unwrap();
    store.tag("app", &descriptor).unwrap();
    manifest_digest
}

#[test]
fn skopeo_inspects_a_tagged_image() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let manifest = store_image(&store);
    let out = tool("skopeo")
        .args(["inspect", &format!("oci:{}:app", dir.path().display())])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["Digest"], manifest.to_string());
    assert_eq!(info["Architecture"], "amd64");
    assert_eq!(info["Layers"].as_array().unwrap().len(), 1);
}

#[test]
fn umoci_unpacks_a_tagged_image() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store_image(&store);
    let bundle = tempfile::tempdir().unwrap();
    let target = bundle.path().join("bundle");
    let out = tool("umoci")
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:app", dir.path().display()))
        .arg(&target)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rootfs = target.join("rootfs");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("hello.txt")).unwrap(),
        "hi\n"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(rootfs.join("bin/run"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
    assert!(Path::new(&target.join("config.json")).is_file());
}
