//! `kiln save` and `kiln load`: archives that skopeo reads, round trips
//! between stores, building on a loaded (gzip-layered) image, and archives
//! that lie about their content.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::{busybox_rootfs, kiln, ok, text, umoci_unpack};

fn skopeo_inspect(transport: &str) -> serde_json::Value {
    let out = Command::new("skopeo")
        .args(["inspect", transport])
        .output()
        .expect("skopeo is installed by scripts/install-test-deps.sh");
    serde_json::from_str(&ok(out)).unwrap()
}

fn tar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    common::raw_tar(entries, 0o644)
}

#[test]
fn save_load_round_trip_and_build_on_a_loaded_image() {
    let work = tempfile::tempdir().unwrap();
    let first = work.path().join("first");
    let rootfs = busybox_rootfs(work.path());
    ok(kiln(
        &first,
        &["import", rootfs.to_str().unwrap(), "busybox"],
    ));

    let oci = work.path().join("busybox-oci.tar");
    let docker = work.path().join("busybox-docker.tar");
    ok(kiln(
        &first,
        &["save", "-o", oci.to_str().unwrap(), "busybox"],
    ));
    ok(kiln(
        &first,
        &[
            "save",
            "--format",
            "docker",
            "-o",
            docker.to_str().unwrap(),
            "busybox",
        ],
    ));
    let from_oci = skopeo_inspect(&format!("oci-archive:{}", oci.display()));
    let from_docker = skopeo_inspect(&format!("docker-archive:{}", docker.display()));
    assert_eq!(from_oci["Os"], "linux");
    assert_eq!(from_docker["Architecture"], from_oci["Architecture"]);
    // The OCI archive carries gzip layers (the store keeps them plain).
    let raw = ok(Command::new("skopeo")
        .args([
            "inspect",
            "--raw",
            &format!("oci-archive:{}", oci.display()),
        ])
        .output()
        .unwrap());
    let manifest: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );

    // A second store loads the OCI archive and builds on it.
    let second = work.path().join("second");
    let loaded = ok(kiln(&second, &["load", "-i", oci.to_str().unwrap()]));
    assert_eq!(loaded, "Loaded image: busybox\n");
    let context = work.path().join("context");
    fs::create_dir_all(&context).unwrap();
    fs::write(context.join("note.txt"), "on a loaded base\n").unwrap();
    fs::write(
        context.join("Dockerfile"),
        "FROM busybox\nCOPY note.txt /etc/note.txt\n",
    )
    .unwrap();
    ok(kiln(
        &second,
        &["build", "-t", "noted", context.to_str().unwrap()],
    ));
    let rootfs = umoci_unpack(&second, "noted", &work.path().join("noted"));
    assert_eq!(
        fs::read_to_string(rootfs.join("etc/note.txt")).unwrap(),
        "on a loaded base\n"
    );
    assert!(rootfs.join("bin/busybox").is_file());

    // The docker-archive loads back to the very image that was saved.
    let third = work.path().join("third");
    ok(kiln(&third, &["load", "-i", docker.to_str().unwrap()]));
    let original: serde_json::Value =
        serde_json::from_str(&ok(kiln(&first, &["inspect", "busybox"]))).unwrap();
    let reloaded: serde_json::Value =
        serde_json::from_str(&ok(kiln(&third, &["inspect", "busybox"]))).unwrap();
    assert_eq!(original[0]["Id"], reloaded[0]["Id"]);
}

#[test]
fn zstd_archives_are_read_by_skopeo_and_load_back() {
    let work = tempfile::tempdir().unwrap();
    let first = work.path().join("first");
    let rootfs = busybox_rootfs(work.path());
    ok(kiln(
        &first,
        &["import", rootfs.to_str().unwrap(), "busybox"],
    ));
    let archive = work.path().join("zstd.tar");
    ok(kiln(
        &first,
        &[
            "save",
            "--compression",
            "zstd",
            "-o",
            archive.to_str().unwrap(),
            "busybox",
        ],
    ));
    let transport = format!("oci-archive:{}", archive.display());
    let raw = ok(Command::new("skopeo")
        .args(["inspect", "--raw", &transport])
        .output()
        .unwrap());
    let manifest: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    // skopeo decompresses the layer to copy it into a plain directory.
    let copied = work.path().join("copied");
    ok(Command::new("skopeo")
        .args(["copy", &transport])
        .arg(format!("dir:{}", copied.display()))
        .output()
        .unwrap());
    // Loaded into another store and built on, it is the same base.
    let second = work.path().join("second");
    ok(kiln(&second, &["load", "-i", archive.to_str().unwrap()]));
    let context = work.path().join("context");
    fs::create_dir_all(&context).unwrap();
    fs::write(context.join("Dockerfile"), "FROM busybox\nENV X=1\n").unwrap();
    ok(kiln(
        &second,
        &["build", "-t", "on-zstd", context.to_str().unwrap()],
    ));
    let rootfs = umoci_unpack(&second, "on-zstd", &work.path().join("on-zstd"));
    assert!(rootfs.join("bin/busybox").is_file());
}

#[test]
fn archives_with_wrong_blobs_are_refused() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("store");
    // A blob named for one content but holding another.
    let named = "blobs/sha256/2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
    let lying = work.path().join("lying.tar");
    fs::write(
        &lying,
        tar_of(&[
            ("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#),
            (named, b"not hello"),
        ]),
    )
    .unwrap();
    let out = kiln(&root, &["load", "-i", lying.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("does not match its content"),
        "{}",
        text(&out.stderr)
    );

    // Entries outside blobs/ are never written as files, whatever their path.
    let sneaky = work.path().join("sneaky.tar");
    fs::write(
        &sneaky,
        tar_of(&[("../../evil.sh", b"#!/bin/sh\n"), ("index.json", b"{}")]),
    )
    .unwrap();
    let out = kiln(&root, &["load", "-i", sneaky.to_str().unwrap()]);
    assert!(!work.path().join("evil.sh").exists());
    assert!(!Path::new("/evil.sh").exists());
    assert_eq!(
        out.status.code(),
        Some(0),
        "an empty index loads nothing: {}",
        text(&out.stderr)
    );
    assert_eq!(ok(kiln(&root, &["images"])).lines().count(), 1);

    // Not an image archive at all.
    let junk = work.path().join("junk.tar");
    fs::write(&junk, tar_of(&[("hello.txt", b"hi")])).unwrap();
    let out = kiln(&root, &["load", "-i", junk.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("neither an OCI archive"));
}

#[test]
fn save_writes_to_a_pipe_and_load_reads_standard_input_as_docker_does() {
    use std::process::Stdio;
    let work = tempfile::tempdir().unwrap();
    let first = work.path().join("first");
    let second = work.path().join("second");
    let rootfs = busybox_rootfs(work.path());
    ok(kiln(
        &first,
        &["import", rootfs.to_str().unwrap(), "busybox"],
    ));
    // kiln save busybox | kiln load, as docker save | docker load.
    let mut save = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--root")
        .arg(&first)
        .args(["save", "--format", "docker", "busybox"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let load = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--root")
        .arg(&second)
        .arg("load")
        .stdin(save.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(save.wait().unwrap().success());
    assert_eq!(ok(load), "Loaded image: busybox:latest\n");
    let id = |root: &Path| {
        let inspect: serde_json::Value =
            serde_json::from_str(&ok(kiln(root, &["inspect", "busybox"]))).unwrap();
        inspect[0]["ConfigDigest"].clone()
    };
    assert_eq!(id(&first), id(&second));
}
