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

    // docker's columns, lined up.
    let images = ok(kiln(&root, &["images"]));
    let lines: Vec<&str> = images.lines().collect();
    assert_eq!(lines.len(), 2, "{images}");
    let short = &digest["sha256:".len()..][..12];
    assert!(
        lines[0].starts_with("REPOSITORY   TAG      IMAGE ID       CREATED")
            && lines[1].starts_with(&format!("busybox      latest   {short}   ")),
        "{images}"
    );
    assert_eq!(
        lines[0].find("SIZE"),
        lines[1]
            .find(char::is_numeric)
            .map(|_| lines[1].rfind("   ").unwrap() + 3),
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
    assert_eq!(inspect[0]["Id"], digest);
    assert_eq!(inspect[0]["Os"], "linux");
    assert_eq!(
        inspect[0]["RepoTags"],
        serde_json::json!(["busybox:latest"])
    );

    ok(kiln(&root, &["tag", "busybox", "bb:1"]));
    assert!(names(&root).contains(&"bb:1".to_owned()));
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
    assert!(!names(&root).iter().any(|n| n.starts_with("bb@")));
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
    assert!(!stdout.contains("Freed"), "{stdout}");
    assert!(text(&out.stderr).contains("nope"), "{}", text(&out.stderr));
    let images = names(&root);
    assert!(
        !images.contains(&"bb:2".to_owned()) && !images.contains(&"bb:3".to_owned()),
        "{images:?}"
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
    assert!(
        text(&out.stderr).contains("no image or container named \"bb:1\""),
        "{}",
        text(&out.stderr)
    );
}

/// `repository:tag` of every row of `kiln images`, through `--format`.
fn names(root: &Path) -> Vec<String> {
    ok(kiln(
        root,
        &["images", "--format", "{{.Repository}}:{{.Tag}}"],
    ))
    .lines()
    .map(str::to_owned)
    .collect()
}

#[test]
fn an_untagged_build_is_listed_kept_and_removed_by_its_short_id() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("store");
    let rootfs = busybox_rootfs(work.path());
    ok(kiln(
        &root,
        &["import", rootfs.to_str().unwrap(), "busybox"],
    ));
    // Another image (its own creation time), not a second name of busybox.
    ok(common::kiln_env(
        &root,
        &["import", rootfs.to_str().unwrap(), "other"],
        &[("SOURCE_DATE_EPOCH", "1")],
    ));
    let context = work.path().join("context");
    std::fs::create_dir_all(&context).unwrap();
    std::fs::write(context.join("Dockerfile"), "FROM busybox\nENV A=1\n").unwrap();
    let id = ok(kiln(&root, &["build", "-q", context.to_str().unwrap()]));
    let short = id.trim()["sha256:".len()..][..12].to_owned();
    // Listed as docker lists it ...
    let rows = ok(kiln(
        &root,
        &["images", "--format", "{{.Repository}} {{.Tag}} {{.ID}}"],
    ));
    assert!(rows.contains(&format!("<none> <none> {short}\n")), "{rows}");
    assert_eq!(
        ok(kiln(&root, &["images", "-q", "--filter", "dangling=true"])),
        format!("{short}\n")
    );
    let json = ok(kiln(
        &root,
        &[
            "image",
            "ls",
            "--format",
            "{{json .}}",
            "-f",
            "dangling=false",
            "--filter",
            "reference=busy*",
        ],
    ));
    let row: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(
        (row["Repository"].as_str(), row["Tag"].as_str()),
        (Some("busybox"), Some("latest"))
    );
    // ... found by its short id ...
    let inspect: serde_json::Value =
        serde_json::from_str(&ok(kiln(&root, &["inspect", &short]))).unwrap();
    assert_eq!(inspect[0]["Id"].as_str(), Some(id.trim()));
    // ... kept when another image goes (GC does not take it, and what is
    // freed is not said to be its) ...
    let out = ok(kiln(&root, &["rmi", "other"]));
    assert!(
        out.contains("Untagged: other") && out.contains("no image uses"),
        "{out}"
    );
    assert!(ok(kiln(&root, &["images", "-q"])).contains(&short));
    ok(kiln(
        &root,
        &["run", "--rm", "--network", "none", &short, "true"],
    ));
    // ... until removed by id, or pruned.
    ok(kiln(&root, &["tag", &short, "named"]));
    assert!(ok(kiln(&root, &["images", "-q", "-f", "dangling=true"])).is_empty());
    ok(kiln(&root, &["rmi", "named"]));
    assert!(!ok(kiln(&root, &["images", "-q"])).contains(&short));
    let again = ok(kiln(&root, &["build", "-q", context.to_str().unwrap()]));
    assert_eq!(again, id);
    let out = ok(kiln(&root, &["image", "prune", "-f"]));
    assert!(out.contains(&format!("Deleted: {}", id.trim())), "{out}");
    assert_eq!(names(&root), ["busybox:latest"]);
    let manifest = root
        .join("blobs/sha256")
        .join(&id.trim()["sha256:".len()..]);
    assert!(
        !manifest.exists(),
        "the pruned image's manifest is collected"
    );
    ok(kiln(&root, &["check"]));
    // An id naming an image with several names removes them only with -f.
    // (its own creation time: imported in busybox's second it would be
    // busybox, with a third name)
    ok(common::kiln_env(
        &root,
        &["import", rootfs.to_str().unwrap(), "a"],
        &[("SOURCE_DATE_EPOCH", "2")],
    ));
    ok(kiln(&root, &["tag", "a", "b"]));
    let base = ok(kiln(&root, &["images", "-q", "a"]));
    let out = kiln(&root, &["rmi", base.trim()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("several names (a, b)"),
        "{}",
        text(&out.stderr)
    );
    ok(kiln(&root, &["image", "rm", "-f", base.trim()]));
    assert_eq!(names(&root), ["busybox:latest"]);
    // Without -f, prune asks and an empty answer is no.
    ok(kiln(&root, &["build", "-q", context.to_str().unwrap()]));
    let out = kiln(&root, &["image", "prune"]);
    assert!(
        text(&out.stderr).contains("Are you sure"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(ok(kiln(&root, &["images", "-q"])).lines().count(), 2);
}

#[test]
fn docker_group_commands_info_and_system_df() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("store");
    let rootfs = busybox_rootfs(work.path());
    ok(kiln(
        &root,
        &["image", "import", rootfs.to_str().unwrap(), "busybox"],
    ));
    let history = ok(kiln(&root, &["image", "history", "--no-trunc", "busybox"]));
    let lines: Vec<&str> = history.lines().collect();
    assert_eq!(
        lines[0].find("CREATED BY"),
        lines[1].find("kiln import"),
        "{history}"
    );
    ok(kiln(
        &root,
        &[
            "container",
            "run",
            "--network",
            "none",
            "--name",
            "c1",
            "busybox",
            "true",
        ],
    ));
    let ps = ok(kiln(&root, &["container", "ls", "-a"]));
    let lines: Vec<&str> = ps.lines().collect();
    assert!(
        lines[0].starts_with("CONTAINER ID   IMAGE     COMMAND   CREATED"),
        "{ps}"
    );
    assert_eq!(lines[0].find("STATUS"), lines[1].find("Exited (0)"), "{ps}");
    assert_eq!(
        ok(kiln(
            &root,
            &["ps", "-a", "--format", "{{.Names}} {{.State}}"]
        )),
        "c1 exited\n"
    );
    let inspect: serde_json::Value =
        serde_json::from_str(&ok(kiln(&root, &["container", "inspect", "c1"]))).unwrap();
    assert_eq!(inspect[0]["Name"], "/c1");
    assert_eq!(inspect[0]["State"]["ExitCode"], 0);
    assert_eq!(inspect[0]["Config"]["Cmd"], serde_json::json!(["true"]));
    let df = ok(kiln(&root, &["system", "df"]));
    assert!(
        df.starts_with("TYPE            TOTAL   ACTIVE   SIZE\n"),
        "{df}"
    );
    assert!(
        df.contains("\nImages          1       1        2.1MB\n"),
        "{df}"
    );
    assert!(df.contains("\nContainers      1       0 "), "{df}");
    let info = ok(kiln(&root, &["info"]));
    assert!(
        info.contains(&format!("Store: {}\n", root.display())),
        "{info}"
    );
    assert!(
        info.contains("Images: 1 (0 untagged)\nContainers: 1 (running 0, stopped 1)"),
        "{info}"
    );
    assert_eq!(ok(kiln(&root, &["system", "info"])), info);
    let pruned = ok(kiln(&root, &["system", "prune", "-f"]));
    assert!(pruned.contains("Deleted Containers:\n"), "{pruned}");
    assert!(ok(kiln(&root, &["ps", "-aq"])).is_empty());
    assert_eq!(ok(kiln(&root, &["images", "-q"])).lines().count(), 1);
    // prune -a: every image no container uses goes, names and all; one a
    // container uses stays.
    ok(kiln(&root, &["tag", "busybox", "spare"]));
    ok(common::kiln_env(
        &root,
        &["import", rootfs.to_str().unwrap(), "unused"],
        &[("SOURCE_DATE_EPOCH", "1")],
    ));
    ok(kiln(
        &root,
        &[
            "run",
            "--name",
            "keeper",
            "--network",
            "none",
            "busybox",
            "true",
        ],
    ));
    let out = ok(kiln(&root, &["image", "prune", "-a", "-f"]));
    assert_eq!(out.matches("Deleted: sha256:").count(), 1, "{out}");
    assert_eq!(names(&root), ["busybox:latest", "spare:latest"]);
    ok(kiln(&root, &["rm", "keeper"]));
    // A template kiln cannot render is refused, not half printed.
    let out = kiln(&root, &["images", "--format", "{{range .}}"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not supported"),
        "{}",
        text(&out.stderr)
    );
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
    assert_eq!(config[0]["Created"], "2023-11-14T22:13:20Z");
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
