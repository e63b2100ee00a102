//! `kiln import`, `images`, `inspect`, `tag`, `rmi` on a real store, with
//! a busybox root filesystem from Debian's busybox-static as the base
//! image, checked with skopeo and umoci.

mod common;

use std::path::Path;
use std::process::Command;

use common::{busybox_rootfs, kiln, ok, text};

#[test]
fn import_list_inspect_tag_and_remove() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("store");
    let rootfs = busybox_rootfs(work.path());
    let digest = ok(kiln(
        &root,
        &["import", rootfs.to_str().unwrap(), "busybox:latest"],
    ));
    let digest = digest.trim();
    assert!(digest.starts_with("sha256:"), "{digest}");

    let images = ok(kiln(&root, &["images"]));
    assert!(images.contains("busybox:latest"), "{images}");
    assert!(
        images.contains(&digest["sha256:".len()..][..12]),
        "{images}"
    );

    // skopeo reads the store through the oci: transport.
    let out = Command::new("skopeo")
        .arg("inspect")
        .arg(format!("oci:{}:busybox:latest", root.display()))
        .output()
        .expect("skopeo is installed by scripts/install-test-deps.sh");
    let info: serde_json::Value = serde_json::from_slice(ok(out).as_bytes()).unwrap();
    assert_eq!(info["Digest"], digest);

    // umoci unpacks it into the root filesystem we imported.
    let bundle = work.path().join("bundle");
    ok(Command::new("umoci")
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:busybox:latest", root.display()))
        .arg(&bundle)
        .output()
        .expect("umoci is installed by scripts/install-test-deps.sh"));
    let sh = bundle.join("rootfs/bin/sh");
    assert_eq!(std::fs::read_link(&sh).unwrap(), Path::new("busybox"));
    assert!(bundle.join("rootfs/bin/busybox").is_file());
    let passwd = std::fs::read_to_string(bundle.join("rootfs/etc/passwd")).unwrap();
    assert!(passwd.starts_with("root:x:0:0:"));

    let inspect: serde_json::Value =
        serde_json::from_str(&ok(kiln(&root, &["inspect", "busybox"]))).unwrap();
    assert_eq!(inspect["Id"], digest);
    assert_eq!(inspect["Config"]["os"], "linux");
    assert_eq!(inspect["Names"], serde_json::json!(["busybox:latest"]));

    ok(kiln(&root, &["tag", "busybox", "bb:1"]));
    assert!(ok(kiln(&root, &["images"])).contains("bb:1"));
    // A digest in a name must be the image's own.
    let id = digest;
    let wrong = format!("bb@sha256:{}", "0".repeat(64));
    let out = kiln(&root, &["tag", "busybox", &wrong]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("names image sha256:000"),
        "{}",
        text(&out.stderr)
    );
    assert!(!ok(kiln(&root, &["images"])).contains("bb@"));
    ok(kiln(&root, &["tag", "busybox", &format!("bb@{id}")]));
    ok(kiln(&root, &["rmi", &format!("bb@{id}")]));
    // images -q: the ids alone, one per name.
    let short = &id["sha256:".len()..][..12];
    assert_eq!(
        ok(kiln(&root, &["images", "-q"])),
        format!("{short}\n{short}\n")
    );
    // rmi of several names: each is removed, a missing one reported after
    // the others, and what is deleted is not said to be a kept image's.
    ok(kiln(&root, &["tag", "busybox", "bb:2"]));
    ok(kiln(&root, &["tag", "busybox", "bb:3"]));
    let out = kiln(&root, &["rmi", "bb:2", "nope", "bb:3"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("Untagged: bb:2") && stdout.contains("Untagged: bb:3"),
        "{stdout}"
    );
    assert!(stdout.contains("Deleted: 0 blobs"), "{stdout}");
    assert!(text(&out.stderr).contains("nope"), "{}", text(&out.stderr));
    let images = ok(kiln(&root, &["images"]));
    assert!(
        !images.contains("bb:2") && !images.contains("bb:3"),
        "{images}"
    );
    // Removing one name keeps the data the other still uses ...
    ok(kiln(&root, &["rmi", "busybox:latest"]));
    let blobs = root.join("blobs/sha256");
    assert_eq!(std::fs::read_dir(&blobs).unwrap().count(), 3);
    // ... and removing the last one frees it.
    ok(kiln(&root, &["rmi", "bb:1"]));
    assert_eq!(std::fs::read_dir(&blobs).unwrap().count(), 0);
    let out = kiln(&root, &["inspect", "bb:1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no image named \"bb:1\""));
}

#[test]
fn imports_are_reproducible_with_source_date_epoch() {
    let work = tempfile::tempdir().unwrap();
    let rootfs = busybox_rootfs(work.path());
    let digests: Vec<String> = ["a", "b"]
        .iter()
        .map(|store| {
            let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
                .arg("--root")
                .arg(work.path().join(store))
                .args(["import", rootfs.to_str().unwrap(), "base"])
                .env("SOURCE_DATE_EPOCH", "1700000000")
                .output()
                .unwrap();
            ok(out)
        })
        .collect();
    assert_eq!(digests[0], digests[1]);
    let config: serde_json::Value =
        serde_json::from_str(&ok(kiln(&work.path().join("a"), &["inspect", "base"]))).unwrap();
    assert_eq!(config["Config"]["created"], "2023-11-14T22:13:20Z");
}

#[test]
fn hostile_import_is_refused_and_stores_nothing() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("store");
    // A tar whose second entry climbs out of the root.
    let mut tar = Vec::new();
    for name in ["ok.txt", "../../etc/evil"] {
        let mut header = tar::Header::new_ustar();
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_mode(0o644);
        header.set_size(0);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        tar.extend_from_slice(header.as_bytes());
    }
    tar.extend([0u8; 1024]);
    let evil = work.path().join("evil.tar");
    std::fs::write(&evil, tar).unwrap();
    let out = kiln(&root, &["import", evil.to_str().unwrap(), "evil"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("evil.tar") && stderr.contains("../../etc/evil"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_dir(root.join("blobs/sha256"))
            .unwrap()
            .count(),
        0
    );
    assert!(
        ok(kiln(&root, &["images"])).lines().count() == 1,
        "only the header"
    );
}
