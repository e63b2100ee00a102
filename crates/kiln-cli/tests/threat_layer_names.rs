//! Threat: file names that mean something to a layer tar. A context file
//! (or an ADD archive entry, or a COPY destination) named `.wh.X` would be
//! a whiteout deleting `X` from the image, and `.wh..wh..opq` an opaque
//! marker hiding its siblings: COPY and ADD refuse them, naming the file.
//! Names that are not UTF-8 are kept byte for byte in the layer and in
//! the cache key, so two names never collide into one.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use common::{kiln, raw_tar, text, umoci_unpack, BusyboxStore};

fn context(s: &BusyboxStore, dockerfile: &str) -> PathBuf {
    let dir = s.work.join("ctx");
    fs::create_dir_all(dir.join("d")).unwrap();
    fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
    dir
}

/// Builds `dir`, which must fail with every one of `needles` in its error.
fn refused(s: &BusyboxStore, dir: &std::path::Path, needles: &[&str]) {
    let out = kiln(&s.root, &["build", "-t", "names", dir.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "{needle:?} not in:\n{stderr}");
    }
}

#[test]
fn a_context_file_named_as_a_whiteout_is_refused() {
    let s = common::busybox_workspace();
    let dir = context(&s, "FROM busybox\nRUN echo keep > /victim\nCOPY d/ /\n");
    fs::write(dir.join("d/.wh.victim"), "").unwrap();
    refused(&s, &dir, &[".wh.victim", "whiteout"]);
}

#[test]
fn an_opaque_marker_in_the_context_is_refused() {
    let s = common::busybox_workspace();
    let dir = context(&s, "FROM busybox\nCOPY d /d\n");
    fs::write(dir.join("d/.wh..wh..opq"), "").unwrap();
    fs::write(dir.join("d/sibling"), "x").unwrap();
    refused(&s, &dir, &[".wh..wh..opq", "whiteout"]);
}

#[test]
fn a_whiteout_as_the_destination_is_refused() {
    let s = common::busybox_workspace();
    let dir = context(&s, "FROM busybox\nCOPY f /.wh.bin\n");
    fs::write(dir.join("f"), "x").unwrap();
    refused(&s, &dir, &["/.wh.bin", "whiteout"]);
}

#[test]
fn an_add_archive_entry_named_as_a_whiteout_is_refused() {
    let s = common::busybox_workspace();
    let dir = context(&s, "FROM busybox\nADD evil.tar /\n");
    fs::write(
        dir.join("evil.tar"),
        raw_tar(&[("ok", b"fine"), ("bin/.wh.sh", b"")], 0o644),
    )
    .unwrap();
    refused(&s, &dir, &["bin/.wh.sh", "evil.tar", "whiteout"]);
}

#[test]
fn names_that_are_not_utf8_stay_byte_for_byte_and_apart() {
    let s = common::busybox_workspace();
    let dir = context(&s, "FROM busybox\nCOPY d/ /d/\n");
    let name = |b: &[u8]| OsStr::from_bytes(b).to_owned();
    // Both would be "n\u{FFFD}" if renamed.
    fs::write(dir.join("d").join(name(b"n\xff")), "ff").unwrap();
    fs::write(dir.join("d").join(name(b"n\xfe")), "fe").unwrap();
    let build = |tag: &str| {
        let out = kiln(&s.root, &["build", "-t", tag, dir.to_str().unwrap()]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        umoci_unpack(&s.root, tag, &s.work.join(tag)).join("d")
    };
    let rootfs = build("first");
    assert_eq!(
        fs::read_to_string(rootfs.join(name(b"n\xff"))).unwrap(),
        "ff"
    );
    assert_eq!(
        fs::read_to_string(rootfs.join(name(b"n\xfe"))).unwrap(),
        "fe"
    );
    assert_eq!(fs::read_dir(&rootfs).unwrap().count(), 2);

    // Another name with the same lossy text is another key.
    fs::rename(
        dir.join("d").join(name(b"n\xff")),
        dir.join("d").join(name(b"n\xfd")),
    )
    .unwrap();
    let rootfs = build("renamed");
    assert_eq!(
        fs::read_to_string(rootfs.join(name(b"n\xfd"))).unwrap(),
        "ff"
    );
    assert!(!rootfs.join(name(b"n\xff")).exists());
}

#[test]
fn add_archive_entries_that_are_not_utf8_stay_byte_for_byte() {
    let s = common::busybox_workspace();
    let dir = context(&s, "FROM busybox\nADD names.tar /x/\n");
    let name = |b: &[u8]| std::path::Path::new(OsStr::from_bytes(b)).to_owned();
    let mut tar = tar::Builder::new(Vec::new());
    for (path, body) in [(&b"n\xff"[..], &b"ff"[..]), (b"n\xfe", b"fe")] {
        let mut header = tar::Header::new_gnu();
        header.set_size(body.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, name(path), body).unwrap();
    }
    let mut link = tar::Header::new_gnu();
    link.set_entry_type(tar::EntryType::Link);
    link.set_size(0);
    link.set_mode(0o644);
    tar.append_link(&mut link, name(b"l\xfe"), name(b"n\xfe"))
        .unwrap();
    fs::write(dir.join("names.tar"), tar.into_inner().unwrap()).unwrap();
    let out = kiln(&s.root, &["build", "-t", "names", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rootfs = umoci_unpack(&s.root, "names", &s.work.join("names")).join("x");
    assert_eq!(fs::read(rootfs.join(name(b"n\xff"))).unwrap(), b"ff");
    assert_eq!(fs::read(rootfs.join(name(b"n\xfe"))).unwrap(), b"fe");
    assert_eq!(fs::read(rootfs.join(name(b"l\xfe"))).unwrap(), b"fe");
    assert_eq!(fs::read_dir(&rootfs).unwrap().count(), 3);
}
