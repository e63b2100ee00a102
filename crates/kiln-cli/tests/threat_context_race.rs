//! Threat: the build context changes while kiln builds (an editor saving,
//! a `git checkout`, a hostile process). A step's cache key is made from
//! the content it hashed; the layer stored under that key must hold
//! exactly that content, never a later version or a torn mix of two, or
//! every later build of the first content would get the wrong file. A
//! file that changed between hashing and writing fails the step instead.

mod common;

use std::fs;
use std::io::{Seek, Write};
use std::path::Path;
use std::time::Duration;

use common::{kiln, text, umoci_unpack};

const SIZE: usize = 8 << 20;

/// Overwrites `path` in place (same size, same inode), in chunks, so a
/// reader at the same time sees a mix of the old and new bytes.
fn overwrite(path: &Path, byte: u8) {
    let chunk = vec![byte; 1 << 20];
    let mut file = fs::OpenOptions::new().write(true).open(path).unwrap();
    file.rewind().unwrap();
    for _ in 0..SIZE / chunk.len() {
        file.write_all(&chunk).unwrap();
    }
}

/// Waits (bounded) until something opened `path` for reading and closed
/// it again (kiln hashing it for the cache key), then overwrites it with
/// `byte`: the edit lands between the hashing and the layer's writing.
fn edit_after_first_read(path: &Path, byte: u8) -> std::thread::JoinHandle<bool> {
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
    let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).unwrap();
    inotify
        .add_watch(path, AddWatchFlags::IN_CLOSE_NOWRITE)
        .unwrap();
    let path = path.to_owned();
    std::thread::spawn(move || {
        for _ in 0..6_000 {
            if inotify.read_events().is_ok_and(|events| !events.is_empty()) {
                overwrite(&path, byte);
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    })
}

#[test]
fn a_file_edited_between_hashing_and_writing_never_lands_under_the_old_key() {
    let s = common::busybox_workspace();
    let context = s.work.join("ctx");
    fs::create_dir_all(&context).unwrap();
    fs::write(context.join("Dockerfile"), "FROM busybox\nCOPY big /big\n").unwrap();
    let big = context.join("big");
    fs::write(&big, vec![b'A'; SIZE]).unwrap();
    let build = |extra: &[&str]| {
        let mut args = vec!["build", "-t", "raced"];
        args.extend_from_slice(extra);
        args.push(context.to_str().unwrap());
        kiln(&s.root, &args)
    };
    for round in 0..3 {
        overwrite(&big, b'A');
        let editor = edit_after_first_read(&big, b'B' + round);
        let out = build(&["--no-cache"]);
        assert!(editor.join().unwrap(), "kiln read the file");
        if !out.status.success() {
            let stderr = text(&out.stderr);
            assert!(
                stderr.contains("changed while it was being copied; build again"),
                "{stderr}"
            );
            assert!(
                stderr.contains("big"),
                "the error names the file:\n{stderr}"
            );
        }
    }
    // The file is A again: whatever the cache holds for A's key must be A.
    overwrite(&big, b'A');
    let out = build(&[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rootfs = umoci_unpack(&s.root, "raced", &s.work.join("edited"));
    let content = fs::read(rootfs.join("big")).unwrap();
    let wrong = content.iter().filter(|&&b| b != b'A').count();
    assert_eq!((content.len(), wrong), (SIZE, 0), "the layer under A's key");
}

#[test]
fn a_bind_mounted_file_edited_before_the_command_reads_it_is_not_cached_under_the_old_key() {
    let s = common::busybox_workspace();
    let context = s.work.join("ctx");
    fs::create_dir_all(&context).unwrap();
    fs::write(
        context.join("Dockerfile"),
        "FROM busybox\nRUN --mount=type=bind,source=big,target=/big cp /big /copied\n",
    )
    .unwrap();
    let big = context.join("big");
    fs::write(&big, vec![b'A'; SIZE]).unwrap();
    let build = |extra: &[&str]| {
        let mut args = vec!["build", "-t", "raced-run"];
        args.extend_from_slice(extra);
        args.push(context.to_str().unwrap());
        kiln(&s.root, &args)
    };
    // Hashed as A for the key, then B by the time the command copies it.
    let editor = edit_after_first_read(&big, b'B');
    let out = build(&["--no-cache"]);
    assert!(editor.join().unwrap(), "kiln read the file");
    if !out.status.success() {
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains("changed while the command ran; build again"),
            "{stderr}"
        );
    }
    overwrite(&big, b'A');
    let out = build(&[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rootfs = umoci_unpack(&s.root, "raced-run", &s.work.join("edited"));
    let content = fs::read(rootfs.join("copied")).unwrap();
    let wrong = content.iter().filter(|&&b| b != b'A').count();
    assert_eq!((content.len(), wrong), (SIZE, 0), "the layer under A's key");
}
