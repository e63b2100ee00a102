//! Threat: kiln runs as root and writes files at paths the user named
//! (`save -o`, `--iidfile`, `--metadata-file`, `-o type=...`,
//! `--cache-to`). Whoever can write in those directories (or an image's own
//! symlinks, for `-o type=local`) must not be able to turn those writes
//! into a clobber of any other file: no predictable temp name is written
//! through, a link at the final name is replaced and not followed.
//! Every test plants links to a victim file in its own temp dir and checks
//! that the victim is unchanged.

mod common;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use common::{busybox_workspace, kiln, ok, text};

const VICTIM: &str = "precious\n";

fn victim(dir: &Path) -> PathBuf {
    let path = dir.join("victim");
    fs::write(&path, VICTIM).unwrap();
    path
}

fn assert_untouched(victim: &Path) {
    assert_eq!(
        fs::read_to_string(victim).unwrap(),
        VICTIM,
        "victim written"
    );
}

/// A context with a one-step Dockerfile, so builds are quick.
fn context(dir: &Path) -> PathBuf {
    let ctx = dir.join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("Dockerfile"), "FROM busybox\nCOPY f /f\n").unwrap();
    fs::write(ctx.join("f"), "content\n").unwrap();
    ctx
}

fn is_regular(path: &Path) -> bool {
    fs::symlink_metadata(path).unwrap().file_type().is_file()
}

#[test]
fn save_never_writes_through_a_link_at_the_old_partial_name() {
    let ws = busybox_workspace();
    let victim = victim(&ws.work);
    let out = ws.work.join("out.tar");
    // What kiln used to write first: OUT with its extension replaced.
    symlink(&victim, ws.work.join("out.kiln-partial")).unwrap();
    ok(kiln(
        &ws.root,
        &["save", "-o", out.to_str().unwrap(), "busybox"],
    ));
    assert_untouched(&victim);
    assert!(is_regular(&out));
}

#[test]
fn save_replaces_a_link_at_the_destination_instead_of_following_it() {
    let ws = busybox_workspace();
    let victim = victim(&ws.work);
    let out = ws.work.join("out.tar");
    symlink(&victim, &out).unwrap();
    ok(kiln(
        &ws.root,
        &["save", "-o", out.to_str().unwrap(), "busybox"],
    ));
    assert_untouched(&victim);
    assert!(is_regular(&out));
}

#[test]
fn a_failed_save_leaves_no_file_behind() {
    let ws = busybox_workspace();
    let out = ws.work.join("out.tar");
    let failed = kiln(&ws.root, &["save", "-o", out.to_str().unwrap(), "nosuch"]);
    assert!(!failed.status.success());
    let left: Vec<_> = fs::read_dir(&ws.work)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains("partial") || name.starts_with("out"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn iidfile_and_metadata_file_replace_links_instead_of_following_them() {
    let ws = busybox_workspace();
    let victim = victim(&ws.work);
    let ctx = context(&ws.work);
    let iid = ws.work.join("iid");
    let meta = ws.work.join("meta.json");
    symlink(&victim, &iid).unwrap();
    symlink(&victim, &meta).unwrap();
    let digest = ok(kiln(
        &ws.root,
        &[
            "build",
            "--iidfile",
            iid.to_str().unwrap(),
            "--metadata-file",
            meta.to_str().unwrap(),
            ctx.to_str().unwrap(),
        ],
    ));
    assert_untouched(&victim);
    assert!(is_regular(&iid) && is_regular(&meta));
    assert_eq!(fs::read_to_string(&iid).unwrap(), digest.trim());
    assert!(fs::read_to_string(&meta).unwrap().contains(digest.trim()));
}

#[test]
fn archive_and_tar_outputs_replace_links_instead_of_following_them() {
    let ws = busybox_workspace();
    let victim = victim(&ws.work);
    let ctx = context(&ws.work);
    for kind in ["oci", "docker", "tar"] {
        let dest = ws.work.join(format!("out-{kind}.tar"));
        symlink(&victim, &dest).unwrap();
        let spec = format!("type={kind},dest={}", dest.display());
        ok(kiln(
            &ws.root,
            &["build", "-o", &spec, ctx.to_str().unwrap()],
        ));
        assert_untouched(&victim);
        assert!(is_regular(&dest), "{kind}");
    }
}

#[test]
fn cache_export_never_writes_through_links_in_its_directory() {
    let ws = busybox_workspace();
    let victim = victim(&ws.work);
    let ctx = context(&ws.work);
    let cache = ws.work.join("cache");
    fs::create_dir_all(cache.join("blobs/sha256")).unwrap();
    // The old fixed temp name of the key map, and the layout's files as
    // dangling links (an `exists()` check says they are absent).
    symlink(&victim, cache.join(".tmp-kiln-cache.json")).unwrap();
    let created = ws.work.join("created-through-a-link");
    symlink(&created, cache.join("oci-layout")).unwrap();
    symlink(&created, cache.join("index.json")).unwrap();
    let spec = format!("type=local,dest={}", cache.display());
    ok(kiln(
        &ws.root,
        &["build", "--cache-to", &spec, ctx.to_str().unwrap()],
    ));
    assert_untouched(&victim);
    assert!(!created.exists(), "a file was created through a link");
    assert!(is_regular(&cache.join("kiln-cache.json")));
}

#[test]
fn cache_export_never_follows_a_link_planted_for_its_blobs_directory() {
    let ws = busybox_workspace();
    let ctx = context(&ws.work);
    let cache = ws.work.join("cache");
    let elsewhere = ws.work.join("elsewhere");
    fs::create_dir_all(&cache).unwrap();
    fs::create_dir_all(&elsewhere).unwrap();
    symlink(&elsewhere, cache.join("blobs")).unwrap();
    let spec = format!("type=local,dest={}", cache.display());
    let out = kiln(
        &ws.root,
        &["build", "--cache-to", &spec, ctx.to_str().unwrap()],
    );
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("blobs"), "{}", text(&out.stderr));
    assert_eq!(
        fs::read_dir(&elsewhere).unwrap().count(),
        0,
        "written through the link"
    );
}

/// An image whose layer plants `link -> VICTIM_DIR` and `file -> VICTIM`,
/// then writes through both: exporting it as a directory must keep every
/// write inside the directory.
#[test]
fn local_output_never_follows_the_images_own_links_out_of_the_directory() {
    let ws = busybox_workspace();
    let victim = victim(&ws.work);
    let victim_dir = ws.work.join("victim-dir");
    fs::create_dir(&victim_dir).unwrap();
    let mut builder = tar::Builder::new(Vec::new());
    let mut link = |name: &str, target: &Path| {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        header.set_mode(0o777);
        builder.append_link(&mut header, name, target).unwrap();
    };
    link("dirlink", &victim_dir);
    link("filelink", &victim);
    let mut add = |name: &str, kind: tar::EntryType, body: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_size(body.len() as u64);
        header.set_mode(0o777);
        builder.append_data(&mut header, name, body).unwrap();
    };
    add("dirlink/pwned", tar::EntryType::Regular, b"pwned");
    add("filelink", tar::EntryType::Regular, b"pwned");
    add("dirlink", tar::EntryType::Directory, b"");
    let layer = ws.work.join("evil.tar");
    fs::write(&layer, builder.into_inner().unwrap()).unwrap();
    let imported = kiln(&ws.root, &["import", layer.to_str().unwrap(), "evil"]);
    if !imported.status.success() {
        // Refusing the archive is as good as unpacking it safely.
        return;
    }
    let ctx = ws.work.join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("Dockerfile"), "FROM evil\n").unwrap();
    let dest = ws.work.join("out");
    let built = kiln(
        &ws.root,
        &["build", "-o", dest.to_str().unwrap(), ctx.to_str().unwrap()],
    );
    assert_untouched(&victim);
    assert_eq!(fs::read_dir(&victim_dir).unwrap().count(), 0);
    let mode = fs::metadata(&victim_dir).unwrap().permissions();
    assert_ne!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o777,
        "the directory's mode was changed through a link: {}",
        text(&built.stderr)
    );
}
