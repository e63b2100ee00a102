//! Snapshots and overlay upper dirs on a real overlayfs mount: OCI
//! whiteouts unpacked as overlay whiteouts hide lower files, and the
//! changes made through a mount come back out as a layer with OCI
//! whiteouts. The mount lives in a private mount namespace (`unshare -m`)
//! so a failing test cannot leave it behind.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::process::Command;

use kiln_store::{import_layer, layer_from_upper, Keep, Layer, Store};

fn is_root() -> bool {
    fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(1) == 0
}

/// A layer from (path, content) pairs: `None` is a directory, a content
/// starting with `->` a symlink, anything else a file.
fn layer(store: &Store, entries: &[(&str, Option<&str>)]) -> Layer {
    import_layer(store.blobs(), &tar_bytes(entries)[..], "test layer").unwrap()
}

/// [`layer`] stored gzip-compressed, as a pulled layer is: its snapshot
/// sits beside the blob (which it cannot give back) instead of replacing
/// it. The layer's digest is the compressed blob's.
fn gzip_layer(store: &Store, entries: &[(&str, Option<&str>)]) -> Layer {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar_bytes(entries)).unwrap();
    let bytes = gz.finish().unwrap();
    Layer {
        digest: store.blobs().put(&bytes).unwrap(),
        size: bytes.len() as u64,
        entries: entries.len() as u64,
    }
}

/// The tar [`layer`] stores.
fn tar_bytes(entries: &[(&str, Option<&str>)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, content) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_mtime(1);
        header.set_uid(0);
        header.set_gid(0);
        match content {
            None => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                builder
                    .append_data(&mut header, path, std::io::empty())
                    .unwrap();
            }
            Some(text) if text.starts_with("->") => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_mode(0o777);
                header.set_size(0);
                builder.append_link(&mut header, path, &text[2..]).unwrap();
            }
            Some(text) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(0o640);
                header.set_size(text.len() as u64);
                builder
                    .append_data(&mut header, path, text.as_bytes())
                    .unwrap();
            }
        }
    }
    builder.into_inner().unwrap()
}

/// Path → what it is, for every entry of a stored layer.
fn entries_of(store: &Store, layer: &Layer) -> BTreeMap<String, String> {
    let bytes = store.blobs().read(&layer.digest).unwrap();
    let mut archive = tar::Archive::new(&bytes[..]);
    let mut out = BTreeMap::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().display().to_string();
        let kind = entry.header().entry_type();
        let what = if kind.is_dir() {
            "dir".to_string()
        } else if kind.is_symlink() {
            format!("-> {}", entry.link_name().unwrap().unwrap().display())
        } else if kind.is_hard_link() {
            format!("link {}", entry.link_name().unwrap().unwrap().display())
        } else {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut entry, &mut text).unwrap();
            format!("file {text}")
        };
        out.insert(path.trim_end_matches('/').to_string(), what);
    }
    out
}

fn sh_in_private_mount_ns(script: &str) -> String {
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-euc", script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn snapshots_stack_as_overlay_lower_dirs_and_uppers_become_layers() {
    if !is_root() {
        eprintln!("skipped: overlay mounts need root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let base = layer(
        &store,
        &[
            ("etc", None),
            ("etc/keep", Some("keep\n")),
            ("etc/gone", Some("gone\n")),
            ("tree", None),
            ("tree/old", Some("old\n")),
            ("opaque", None),
            ("opaque/hidden", Some("hidden\n")),
            ("bin", None),
            ("bin/sh", Some("->busybox")),
        ],
    );
    let top = layer(
        &store,
        &[
            ("etc/.wh.gone", Some("")),
            ("opaque", None),
            ("opaque/.wh..wh..opq", Some("")),
            ("opaque/new", Some("new\n")),
        ],
    );
    let lower_base = store.snapshot(&base.digest).unwrap();
    let lower_top = store.snapshot(&top.digest).unwrap();
    // Made once: asking again gives the same directory.
    assert_eq!(store.snapshot(&top.digest).unwrap(), lower_top);
    let whiteout = fs::symlink_metadata(lower_top.join("etc/gone")).unwrap();
    assert!(whiteout.file_type().is_char_device() && whiteout.rdev() == 0);
    assert_eq!(
        xattr::get(lower_top.join("opaque"), "trusted.overlay.opaque").unwrap(),
        Some(b"y".to_vec())
    );

    let upper = dir.path().join("upper");
    let work = dir.path().join("work");
    let merged = dir.path().join("merged");
    for d in [&upper, &work, &merged] {
        fs::create_dir(d).unwrap();
    }
    let listing = sh_in_private_mount_ns(&format!(
        "mount -t overlay overlay -o lowerdir={top}:{base},upperdir={upper},workdir={work},redirect_dir=off,metacopy=off {merged}
         cd {merged}
         ls -A etc opaque
         rm etc/keep
         rm -rf tree && mkdir tree && echo fresh > tree/new
         echo added > added && ln added added-link
         ln -sf /bin/true bin/sh",
        top = lower_top.display(),
        base = lower_base.display(),
        upper = upper.display(),
        work = work.display(),
        merged = merged.display(),
    ));
    // The lower stack reads as the two layers say: gone and hidden are hidden.
    assert_eq!(listing, "etc:\nkeep\n\nopaque:\nnew\n");

    let change = layer_from_upper(store.blobs(), &upper, None).unwrap();
    let entries = entries_of(&store, &change);
    let expected: BTreeMap<String, String> = [
        ("added", "file added\n"),
        ("added-link", "link added"),
        ("bin", "dir"),
        ("bin/sh", "-> /bin/true"),
        ("etc", "dir"),
        ("etc/.wh.keep", "file "),
        ("tree", "dir"),
        ("tree/.wh..wh..opq", "file "),
        ("tree/new", "file fresh\n"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(entries, expected);

    // The change set as a snapshot on top hides what was deleted.
    let lower_change = store.snapshot(&change.digest).unwrap();
    let merged_listing = sh_in_private_mount_ns(&format!(
        "mount -t overlay overlay -o lowerdir={change}:{top}:{base} {merged}
         cd {merged}
         ls -A etc tree; cat tree/new",
        change = lower_change.display(),
        top = lower_top.display(),
        base = lower_base.display(),
        merged = merged.display(),
    ));
    assert_eq!(merged_listing, "etc:\n\ntree:\nnew\nfresh\n");
    assert!(!Path::new(&merged).join("etc").exists(), "nothing leaked");
}

#[test]
fn gc_removes_snapshots_of_deleted_layers() {
    if !is_root() {
        eprintln!("skipped: snapshots keep owners, which needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let layer = layer(&store, &[("file", Some("x"))]);
    let snapshot = store.snapshot(&layer.digest).unwrap();
    assert_eq!(fs::read_to_string(snapshot.join("file")).unwrap(), "x");
    // A half-made snapshot of a killed kiln.
    fs::create_dir_all(store.layout().snapshots().join(".tmp-1-abc")).unwrap();
    drop(store);
    let store = Store::open(&dir.path().join("store")).unwrap();
    let report = store.gc(&Vec::new).unwrap();
    assert_eq!(report.removed, vec![layer.digest]);
    assert_eq!(report.snapshots, 2);
    assert!(!snapshot.exists());
}

#[test]
fn a_layer_cannot_write_through_its_own_symlinks() {
    if !is_root() {
        eprintln!("skipped: snapshots keep owners, which needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let outside = dir.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let target = format!("->{}", outside.display());
    for evil in [
        vec![
            ("escape", Some(target.as_str())),
            ("escape/.wh.victim", Some("")),
        ],
        vec![
            ("escape", Some(target.as_str())),
            ("escape/.wh..wh..opq", Some("")),
        ],
        vec![
            ("escape", Some(target.as_str())),
            ("escape/planted", Some("x")),
        ],
    ] {
        let layer = layer(&store, &evil);
        let error = store.snapshot(&layer.digest).unwrap_err();
        assert!(error.to_string().contains("escape"), "{evil:?}: {error}");
        assert_eq!(
            fs::read_dir(&outside).unwrap().count(),
            0,
            "{evil:?} wrote outside"
        );
        assert!(xattr::get(&outside, "trusted.overlay.opaque")
            .unwrap()
            .is_none());
    }
}

#[test]
fn many_files_unpack_with_their_metadata() {
    if !is_root() {
        eprintln!("skipped: snapshots keep owners, which needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let mut builder = tar::Builder::new(Vec::new());
    for n in 0..5000u32 {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(if n % 2 == 0 { 0o640 } else { 0o4755 });
        header.set_uid(u64::from(n % 7));
        header.set_gid(u64::from(n % 5));
        header.set_mtime(1_000_000 + u64::from(n));
        let body = format!("file {n}\n");
        header.set_size(body.len() as u64);
        builder
            .append_data(&mut header, format!("d{}/f{n}", n % 10), body.as_bytes())
            .unwrap();
    }
    let bytes = builder.into_inner().unwrap();
    let layer = import_layer(store.blobs(), &bytes[..], "many").unwrap();
    let snapshot = store.snapshot(&layer.digest).unwrap();
    for n in [0u32, 1, 2500, 4999] {
        let path = snapshot.join(format!("d{}/f{n}", n % 10));
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), format!("file {n}\n"));
        assert_eq!(
            meta.mode() & 0o7777,
            if n % 2 == 0 { 0o640 } else { 0o4755 }
        );
        assert_eq!((meta.uid(), meta.gid()), (n % 7, n % 5));
        assert_eq!(meta.mtime(), 1_000_000 + i64::from(n));
    }
}

#[test]
fn directories_keep_their_time_when_entries_are_made_in_them_later() {
    // A tar lists a directory before what it holds: the files, whiteouts
    // and subdirectories made in it afterwards must not move its time to
    // the moment it was unpacked (a container would see another time
    // than the layer's, and a COPY --from reading it another layer).
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let bytes = tar_bytes(&[
        ("d", None),
        ("d/f", Some("f")),
        ("d/.wh.gone", Some("")),
        ("d/sub", None),
        ("d/sub/g", Some("g")),
        ("link", Some("->d")),
    ]);
    let layer = import_layer(store.blobs(), &bytes[..], "times").unwrap();
    let snapshot = store.snapshot(&layer.digest).unwrap();
    for path in ["d", "d/sub", "d/f"] {
        let meta = fs::symlink_metadata(snapshot.join(path)).unwrap();
        assert_eq!((meta.mtime(), meta.mtime_nsec()), (1, 0), "{path}");
    }
}

/// Every path under `dir` with its kind, mode, owner and content.
fn describe(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = walkdir::WalkDir::new(dir)
        .min_depth(1)
        .into_iter()
        .map(|e| {
            let e = e.unwrap();
            let meta = e.path().symlink_metadata().unwrap();
            let rel = e.path().strip_prefix(dir).unwrap().display().to_string();
            let content = if meta.is_file() {
                fs::read_to_string(e.path()).unwrap()
            } else if meta.file_type().is_symlink() {
                fs::read_link(e.path()).unwrap().display().to_string()
            } else {
                String::new()
            };
            format!(
                "{rel} {:o} {}:{} {content}",
                meta.mode(),
                meta.uid(),
                meta.gid()
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn a_snapshot_made_while_writing_equals_one_made_after() {
    if !is_root() {
        eprintln!("skipped: snapshots keep owners, which needs root");
        return;
    }
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let streamed = Store::open(&dir.path().join("a")).unwrap();
    let unpacked = Store::open(&dir.path().join("b")).unwrap();
    let bytes = {
        let scratch = Store::open(&dir.path().join("scratch")).unwrap();
        let layer = layer(
            &scratch,
            &[
                ("app", None),
                ("app/bin", None),
                ("app/bin/tool", Some("#!/bin/sh\n")),
                ("app/link", Some("->bin/tool")),
                ("app/.wh.old", Some("")),
            ],
        );
        scratch.blobs().read(&layer.digest).unwrap()
    };
    let mut writer = streamed.snapshot_writer().unwrap();
    for chunk in bytes.chunks(700) {
        writer.write_all(chunk).unwrap();
    }
    let digest = streamed.blobs().put(&bytes).unwrap();
    writer.finish(&digest).unwrap();
    assert_eq!(unpacked.blobs().put(&bytes).unwrap(), digest);
    let made_while = streamed.layout().snapshots().join(digest.hex()).join("fs");
    assert!(made_while.is_dir());
    assert!(streamed.has_snapshot(&digest));
    assert_eq!(
        describe(&made_while),
        describe(&unpacked.snapshot(&digest).unwrap())
    );
    // A writer dropped unfinished leaves nothing behind.
    let mut abandoned = streamed.snapshot_writer().unwrap();
    abandoned.write_all(&bytes[..512]).unwrap();
    drop(abandoned);
    let left: Vec<_> = fs::read_dir(streamed.layout().snapshots())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, [std::ffi::OsString::from(digest.hex())]);
}

#[test]
fn snapshots_are_verified_against_their_layers() {
    if !is_root() {
        eprintln!("skipped: snapshots keep owners, which needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    // Beside its blob: a damaged snapshot is made again from it.
    let layer = gzip_layer(
        &store,
        &[
            ("app", None),
            ("app/bin", None),
            ("app/bin/tool", Some("#!/bin/sh\n")),
            ("app/link", Some("->bin/tool")),
            ("app/.wh.old", Some("")),
            ("gone/.wh..wh..opq", Some("")),
            ("implied/dir/file", Some("x")),
        ],
    );
    let tree = store.snapshot(&layer.digest).unwrap();
    assert!(store.blobs().path(&layer.digest).is_file());
    store.verify_snapshot(&layer.digest).unwrap();
    assert!(store.check().unwrap().is_empty());

    type Damage<'a> = (&'a str, &'a dyn Fn(&Path));
    let damage: [Damage; 6] = [
        ("app/bin/tool: content", &|t| {
            fs::write(t.join("app/bin/tool"), "#!/bin/sh\n".replace('s', "z")).unwrap()
        }),
        ("app/bin/tool: mode", &|t| {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(t.join("app/bin/tool"), fs::Permissions::from_mode(0o755)).unwrap()
        }),
        ("app/link: links to", &|t| {
            fs::remove_file(t.join("app/link")).unwrap();
            std::os::unix::fs::symlink("/etc/passwd", t.join("app/link")).unwrap();
        }),
        ("app/old: missing", &|t| {
            fs::remove_file(t.join("app/old")).unwrap()
        }),
        ("gone: not opaque", &|t| {
            xattr::remove(t.join("gone"), "trusted.overlay.opaque").unwrap()
        }),
        ("extra: not in the layer", &|t| {
            fs::write(t.join("extra"), "").unwrap()
        }),
    ];
    for (expected, damage) in damage {
        let tree = store.snapshot(&layer.digest).unwrap();
        damage(&tree);
        let error = store
            .verify_snapshot(&layer.digest)
            .unwrap_err()
            .to_string();
        let (path, what) = expected.split_once(": ").unwrap();
        assert!(
            error.contains(path) && error.contains(what),
            "{expected}: {error}"
        );
        // check reports it and discards the snapshot; the next use makes it again.
        let problems = store.check().unwrap();
        assert_eq!(problems.len(), 1, "{expected}: {problems:?}");
        assert!(problems[0].what.contains(&layer.digest.to_string()));
        assert!(!store.has_snapshot(&layer.digest));
    }
    assert_eq!(store.snapshot(&layer.digest).unwrap(), tree);
    store.verify_snapshot(&layer.digest).unwrap();
}

#[test]
fn a_committed_upper_dir_becomes_the_layers_snapshot_as_unpacking_would_make_it() {
    if !is_root() {
        eprintln!("skipped: overlay mounts need root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let base = layer(
        &store,
        &[
            ("etc", None),
            ("etc/copied", Some("lower\n")),
            ("etc/gone", Some("gone\n")),
        ],
    );
    let lower = store.snapshot(&base.digest).unwrap();
    let upper = store.scratch_dir("upper-test").unwrap().join("upper");
    let work = dir.path().join("work");
    let merged = dir.path().join("merged");
    for d in [&upper, &work, &merged] {
        fs::create_dir_all(d).unwrap();
    }
    // Appending copies `etc/copied` up, which leaves overlay's origin
    // xattr on it and impure on `etc`; `rm` leaves a whiteout.
    sh_in_private_mount_ns(&format!(
        "mount -t overlay overlay -o lowerdir={lower},upperdir={upper},workdir={work},redirect_dir=off,metacopy=off,index=off {merged}
         cd {merged}
         echo upper >> etc/copied
         rm etc/gone
         mkdir new && echo new > new/file && touch -d @4000000000.5 new/file",
        lower = lower.display(),
        upper = upper.display(),
        work = work.display(),
        merged = merged.display(),
    ));
    let had_origin = xattr::list(upper.join("etc/copied"))
        .unwrap()
        .any(|name| name.to_string_lossy().starts_with("trusted.overlay."));

    let change = store
        .commit_upper(&upper, Some(3_000_000_000), Keep::Snapshot)
        .unwrap();
    assert!(!upper.exists(), "the upper dir was moved in");
    assert!(store.has_snapshot(&change.digest));
    // `kiln check`'s comparison with the tar: the adopted tree passes.
    store.verify_snapshot(&change.digest).unwrap();
    let snapshot = store.snapshot(&change.digest).unwrap();
    if had_origin {
        let names: Vec<_> = xattr::list(snapshot.join("etc/copied")).unwrap().collect();
        assert!(names.is_empty(), "overlay bookkeeping kept: {names:?}");
    }
    // Times as the tar's header has them: clamped, whole seconds.
    let file = fs::metadata(snapshot.join("new/file")).unwrap();
    assert_eq!((file.mtime(), file.mtime_nsec()), (3_000_000_000, 0));
    let root = fs::metadata(&snapshot).unwrap();
    assert_eq!(root.mode() & 0o7777, 0o755);
    // And it stacks: the deletion and the append show through a mount.
    let listing = sh_in_private_mount_ns(&format!(
        "mount -t overlay overlay -o lowerdir={snapshot}:{lower} {merged}
         cd {merged}
         ls -A etc; cat etc/copied new/file",
        snapshot = snapshot.display(),
        lower = lower.display(),
        merged = merged.display(),
    ));
    assert_eq!(listing, "copied\nlower\nupper\nnew\n");
}

#[test]
fn an_upper_dir_holding_a_socket_is_committed_but_not_adopted() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let upper = store.scratch_dir("upper-test").unwrap().join("upper");
    fs::create_dir_all(&upper).unwrap();
    fs::write(upper.join("file"), "x").unwrap();
    let _socket = std::os::unix::net::UnixListener::bind(upper.join("socket")).unwrap();
    let change = store.commit_upper(&upper, None, Keep::Snapshot).unwrap();
    assert!(upper.join("file").exists(), "left where it was");
    assert!(!store.has_snapshot(&change.digest));
    let snapshot = store.snapshot(&change.digest).unwrap();
    assert_eq!(fs::read_dir(&snapshot).unwrap().count(), 1, "no socket");
}

#[test]
fn an_upper_dir_holding_a_wh_name_is_committed_but_not_adopted() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let upper = store.scratch_dir("upper-test").unwrap().join("upper");
    fs::create_dir_all(&upper).unwrap();
    fs::write(upper.join(".wh.name"), "").unwrap();
    let change = store.commit_upper(&upper, None, Keep::Snapshot).unwrap();
    assert!(upper.join(".wh.name").exists(), "left where it was");
    assert!(!store.has_snapshot(&change.digest));
}

#[test]
fn fifos_and_device_nodes_unpack_as_what_the_layer_says() {
    if !is_root() {
        eprintln!("skipped: device nodes and owners need root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let mut builder = tar::Builder::new(Vec::new());
    let special = [
        ("dev/fifo", tar::EntryType::Fifo, 0, 0, 0o620),
        ("dev/null", tar::EntryType::Char, 1, 3, 0o666),
        ("dev/loop9", tar::EntryType::Block, 7, 9, 0o660),
    ];
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Directory);
    header.set_mode(0o755);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(1);
    header.set_size(0);
    builder
        .append_data(&mut header, "dev", std::io::empty())
        .unwrap();
    for (path, kind, major, minor, mode) in special {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_device_major(major).unwrap();
        header.set_device_minor(minor).unwrap();
        header.set_mode(mode);
        header.set_uid(1000);
        header.set_gid(2000);
        header.set_mtime(1_700_000_000);
        header.set_size(0);
        builder
            .append_data(&mut header, path, std::io::empty())
            .unwrap();
    }
    let bytes = builder.into_inner().unwrap();
    let layer = import_layer(store.blobs(), &bytes[..], "test layer").unwrap();
    let tree = store.snapshot(&layer.digest).unwrap();
    let fifo = fs::symlink_metadata(tree.join("dev/fifo")).unwrap();
    assert!(fifo.file_type().is_fifo(), "{fifo:?}");
    let null = fs::symlink_metadata(tree.join("dev/null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), nix::sys::stat::makedev(1, 3));
    let block = fs::symlink_metadata(tree.join("dev/loop9")).unwrap();
    assert!(block.file_type().is_block_device());
    assert_eq!(block.rdev(), nix::sys::stat::makedev(7, 9));
    for (path, _, _, _, mode) in special {
        let meta = fs::symlink_metadata(tree.join(path)).unwrap();
        assert_eq!(
            (meta.mode() & 0o7777, meta.uid(), meta.gid(), meta.mtime()),
            (mode, 1000, 2000, 1_700_000_000),
            "{path}"
        );
    }
    // And `kiln check` finds the snapshot to be the layer.
    store.verify_snapshot(&layer.digest).unwrap();
}

#[test]
fn a_layer_kept_as_its_snapshot_is_given_back_and_collected() {
    if !is_root() {
        eprintln!("skipped: whiteouts and owners need root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let store = Store::open(&root).unwrap();
    let upper = store.scratch_dir("upper-test").unwrap().join("upper");
    fs::create_dir_all(upper.join("opaque")).unwrap();
    fs::create_dir_all(upper.join(format!("deep/{}", "d".repeat(120)))).unwrap();
    fs::write(upper.join("file"), "content\n".repeat(100)).unwrap();
    fs::write(upper.join("empty"), "").unwrap();
    fs::hard_link(upper.join("file"), upper.join("hard")).unwrap();
    std::os::unix::fs::symlink("file", upper.join("soft")).unwrap();
    fs::write(
        upper.join(format!("deep/{}/{}", "d".repeat(120), "f".repeat(120))),
        "deep",
    )
    .unwrap();
    xattr::set(upper.join("file"), "user.note", b"kept").unwrap();
    xattr::set(upper.join("opaque"), "trusted.overlay.opaque", b"y").unwrap();
    nix::sys::stat::mknod(
        &upper.join("deleted"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::empty(),
        0,
    )
    .unwrap();

    let layer = store.commit_upper(&upper, None, Keep::Snapshot).unwrap();
    // No tar blob: the snapshot (and its skeleton) is the layer.
    assert!(!store.blobs().path(&layer.digest).exists());
    assert!(store.blobs().contains(&layer.digest));
    assert_eq!(store.blobs().size(&layer.digest), Some(layer.size));
    // Given back, it has the digest (read checks it) and the entries.
    let tar = store.blobs().read(&layer.digest).unwrap();
    assert_eq!(tar.len() as u64, layer.size);
    let entries = entries_of(&store, &layer);
    assert_eq!(entries["soft"], "-> file");
    assert_eq!(entries["hard"], "link file");
    assert!(entries.contains_key(".wh.deleted"));
    assert!(entries.contains_key("opaque/.wh..wh..opq"));
    assert_eq!(store.check().unwrap().len(), 0);

    let snapshot = store.snapshot(&layer.digest).unwrap();

    // Nothing holds it once this process is gone: GC takes the snapshot.
    assert!(snapshot.join("file").is_file());
    drop(store);
    let store = Store::open(&root).unwrap();
    let report = store.gc(&Vec::new).unwrap();
    assert_eq!(report.removed, vec![layer.digest]);
    assert!(!store.has_snapshot(&layer.digest));
    assert!(!store.blobs().contains(&layer.digest));
}

#[test]
fn a_damaged_kept_layer_is_refused_and_check_discards_it() {
    if !is_root() {
        eprintln!("skipped: snapshots keep owners, which needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let upper = store.scratch_dir("upper-test").unwrap().join("upper");
    fs::create_dir_all(&upper).unwrap();
    fs::write(upper.join("file"), "content\n".repeat(100)).unwrap();
    let layer = store.commit_upper(&upper, None, Keep::Snapshot).unwrap();
    let snapshot = store.snapshot(&layer.digest).unwrap();
    // The same size, other bytes: giving it back fails on the digest.
    let damaged = snapshot.join("file");
    let text = fs::read_to_string(&damaged).unwrap().replace('c', "k");
    fs::write(&damaged, &text).unwrap();
    let error = store.blobs().open(&layer.digest).unwrap_err().to_string();
    assert!(error.contains(&layer.digest.to_string()), "{error}");
    // check reports it and discards it with its layer (only the cache
    // held it; the steps that made it run again).
    let problems = store.check().unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].what.contains("kept only as this snapshot"),
        "{problems:?}"
    );
    assert!(!store.has_snapshot(&layer.digest));
    assert!(!store.blobs().contains(&layer.digest));
    assert!(store.check().unwrap().is_empty());
}

/// Rewrites a snapshot's completion marker as if an earlier boot wrote it.
fn mark_from_an_earlier_boot(store: &Store, layer: &Layer) {
    let marker = store
        .layout()
        .snapshots()
        .join(layer.digest.hex())
        .join("complete");
    fs::write(
        &marker,
        format!("kiln snapshot of {}\nboot an-earlier-boot\n", layer.digest),
    )
    .unwrap();
}

#[test]
fn snapshots_from_an_earlier_boot_are_verified_before_use() {
    if !is_root() {
        eprintln!("skipped: snapshots keep owners, which needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    // Unpacked beside its blob: damaged in a crash, it is made again.
    let unpacked = gzip_layer(&store, &[("file", Some("from the layer"))]);
    let tree = store.snapshot(&unpacked.digest).unwrap();
    fs::write(tree.join("file"), "torn by a crash").unwrap();
    mark_from_an_earlier_boot(&store, &unpacked);
    let tree = store.snapshot(&unpacked.digest).unwrap();
    assert_eq!(
        fs::read_to_string(tree.join("file")).unwrap(),
        "from the layer"
    );
    // Whole, it is kept as it is (the same inodes) and marked for this
    // boot, so it is not verified again.
    let inode = fs::metadata(tree.join("file")).unwrap().ino();
    mark_from_an_earlier_boot(&store, &unpacked);
    let marker = tree.parent().unwrap().join("complete");
    let again = store.snapshot(&unpacked.digest).unwrap();
    assert_eq!(fs::metadata(again.join("file")).unwrap().ino(), inode);
    assert!(!fs::read_to_string(&marker)
        .unwrap()
        .contains("an-earlier-boot"));

    // Kept only as its snapshot: damaged, the layer is gone (its steps
    // run again), never used as it is.
    let upper = store.scratch_dir("upper-test").unwrap().join("upper");
    fs::create_dir_all(&upper).unwrap();
    fs::write(upper.join("file"), "made by a RUN").unwrap();
    let kept = store.commit_upper(&upper, None, Keep::Snapshot).unwrap();
    // Whole, it stays the layer.
    mark_from_an_earlier_boot(&store, &kept);
    let tree = store.snapshot(&kept.digest).unwrap();
    store.blobs().read(&kept.digest).unwrap();
    fs::write(tree.join("file"), "torn by a crash").unwrap();
    mark_from_an_earlier_boot(&store, &kept);
    assert!(store.snapshot(&kept.digest).is_err());
    assert!(!store.blobs().contains(&kept.digest));
}

/// A tar of (path, mode, content) entries (mtime 1, owner 0:0) under a
/// directory `app`: a content starting `=>` is a hard link to the path
/// after it, one starting `->` a symlink to it, a path ending in `/` a
/// directory, anything else a regular file.
fn tar_of_files(files: &[(&str, u32, &str)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, mode, content) in std::iter::once(&("app/", 0o755, "")).chain(files) {
        let mut header = tar::Header::new_gnu();
        header.set_mtime(1);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mode(*mode);
        header.set_size(0);
        if let Some(dir) = path.strip_suffix('/') {
            header.set_entry_type(tar::EntryType::Directory);
            builder
                .append_data(&mut header, dir, std::io::empty())
                .unwrap();
        } else if let Some(target) = content.strip_prefix("=>") {
            header.set_entry_type(tar::EntryType::Link);
            builder.append_link(&mut header, path, target).unwrap();
        } else if let Some(target) = content.strip_prefix("->") {
            header.set_entry_type(tar::EntryType::Symlink);
            builder.append_link(&mut header, path, target).unwrap();
        } else {
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(content.len() as u64);
            builder
                .append_data(&mut header, path, content.as_bytes())
                .unwrap();
        }
    }
    builder.into_inner().unwrap()
}

/// Writes `bytes` as a layer kept only as its snapshot, sharing equal
/// files with `similar`'s; returns its digest and its snapshot's tree.
fn kept_sharing(
    store: &Store,
    bytes: &[u8],
    similar: Option<&kiln_store::Digest>,
) -> (kiln_store::Digest, std::path::PathBuf) {
    use std::io::Write;
    let mut writer = store.layer_writer(Keep::Snapshot, similar).unwrap();
    // A failing unpacker closes the pipe; commit says why.
    let written = bytes
        .chunks(1000)
        .try_for_each(|chunk| writer.write_all(chunk));
    let (digest, size) = writer.commit(store).unwrap();
    written.unwrap();
    assert_eq!(size, bytes.len() as u64);
    let tree = store.layout().snapshots().join(digest.hex()).join("fs");
    (digest, tree)
}

#[test]
fn a_rebuilt_layer_links_the_last_ones_equal_files_and_writes_the_rest() {
    if !is_root() {
        eprintln!("skipped: snapshots keep owners, which needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let ino = |path: &Path| fs::symlink_metadata(path).unwrap().ino();
    // Outside any snapshot: a file a symlink of the donor points at,
    // with the metadata the new layer's file will have.
    let outside = dir.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("f"), "bait").unwrap();
    std::os::unix::fs::chown(outside.join("f"), Some(0), Some(0)).unwrap();
    fs::set_permissions(
        outside.join("f"),
        std::os::unix::fs::PermissionsExt::from_mode(0o640),
    )
    .unwrap();
    let one = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1);
    fs::File::open(outside.join("f"))
        .unwrap()
        .set_modified(one)
        .unwrap();

    // `app/ln`, a symlink to the outside directory, in the last layer.
    let link_out = format!("->{}", outside.display());
    let first = tar_of_files(&[
        ("app/same", 0o640, "unchanged\n"),
        ("app/edited", 0o640, "old text\n"),
        ("app/mode", 0o640, "mode\n"),
        ("app/twin-a", 0o640, "twin\n"),
        ("app/twin-b", 0o640, "=>app/twin-a"),
        ("app/ln", 0o777, &link_out),
    ]);
    let (last, last_tree) = kept_sharing(&store, &first, None);

    let second = tar_of_files(&[
        ("app/same", 0o640, "unchanged\n"),
        // Same size and metadata, other bytes: compared, not assumed.
        ("app/edited", 0o640, "new text\n"),
        ("app/mode", 0o600, "mode\n"),
        // Two files now, equal to the one inode the last layer had.
        ("app/twin-a", 0o640, "twin\n"),
        ("app/twin-b", 0o640, "twin\n"),
        // A directory where the last layer's symlink was, holding a file
        // equal to the one the symlink reaches.
        ("app/ln/", 0o755, ""),
        ("app/ln/f", 0o640, "bait"),
    ]);
    let (digest, tree) = kept_sharing(&store, &second, Some(&last));

    assert_eq!(
        ino(&tree.join("app/same")),
        ino(&last_tree.join("app/same"))
    );
    assert_ne!(
        ino(&tree.join("app/edited")),
        ino(&last_tree.join("app/edited"))
    );
    assert_eq!(fs::read(tree.join("app/edited")).unwrap(), b"new text\n");
    assert_ne!(
        ino(&tree.join("app/mode")),
        ino(&last_tree.join("app/mode"))
    );
    assert_eq!(
        fs::metadata(tree.join("app/mode")).unwrap().mode() & 0o7777,
        0o600
    );
    // The donor's one inode stands for one of the two files at most.
    assert_ne!(ino(&tree.join("app/twin-a")), ino(&tree.join("app/twin-b")));
    assert_eq!(fs::read(tree.join("app/twin-b")).unwrap(), b"twin\n");
    // Never a file reached through the donor's symlink.
    assert_ne!(ino(&tree.join("app/ln/f")), ino(&outside.join("f")));
    assert_eq!(fs::metadata(outside.join("f")).unwrap().nlink(), 1);
    // The layer gives back exactly its tar, and check finds nothing wrong.
    assert_eq!(store.blobs().read(&digest).unwrap(), second);
    assert_eq!(store.check().unwrap().len(), 0);
}

#[test]
fn a_plain_tar_layer_once_unpacked_is_kept_only_as_its_snapshot() {
    if !is_root() {
        eprintln!("skipped: snapshots keep owners, which needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let entries = [
        ("etc", None),
        ("etc/passwd", Some("root:x:0:0::/root:/bin/sh\n")),
        ("bin", None),
        ("bin/sh", Some("->busybox")),
    ];
    let base = layer(&store, &entries);
    let tar = store.blobs().read(&base.digest).unwrap();
    let tree = store.snapshot(&base.digest).unwrap();
    // One copy: the blob is gone, the layer is still stored and gives
    // back the very same tar; check finds nothing wrong.
    assert!(!store.blobs().path(&base.digest).exists());
    assert!(store.blobs().contains(&base.digest));
    assert_eq!(store.blobs().size(&base.digest), Some(tar.len() as u64));
    assert_eq!(store.blobs().read(&base.digest).unwrap(), tar);
    assert_eq!(store.snapshot(&base.digest).unwrap(), tree);
    assert!(store.check().unwrap().is_empty());
    // A compressed blob stays: the snapshot cannot give its bytes back.
    let pulled = gzip_layer(&store, &entries);
    store.snapshot(&pulled.digest).unwrap();
    assert!(store.blobs().path(&pulled.digest).is_file());
}

/// A manifest (and its config) of an image made of `layers`, stored;
/// returns its descriptor.
fn put_manifest(store: &Store, layers: &[&Layer]) -> oci_spec::image::Descriptor {
    let diff_ids: Vec<String> = layers.iter().map(|l| format!("\"{}\"", l.digest)).collect();
    let config_json = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":[{}]}}}}"#,
        diff_ids.join(",")
    );
    let config = store.blobs().put(config_json.as_bytes()).unwrap();
    let layer_descriptors: Vec<String> = layers
        .iter()
        .map(|l| {
            format!(
                r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{}","size":{}}}"#,
                l.digest, l.size
            )
        })
        .collect();
    let manifest_json = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":{}}},"layers":[{}]}}"#,
        config_json.len(),
        layer_descriptors.join(",")
    );
    let manifest = store.blobs().put(manifest_json.as_bytes()).unwrap();
    oci_spec::image::DescriptorBuilder::default()
        .media_type(oci_spec::image::MediaType::ImageManifest)
        .digest(
            manifest
                .to_string()
                .parse::<oci_spec::image::Digest>()
                .unwrap(),
        )
        .size(manifest_json.len() as u64)
        .build()
        .unwrap()
}

#[test]
fn a_kept_layer_is_synced_when_an_image_is_tagged_with_it() {
    if !is_root() {
        eprintln!("skipped: snapshots keep owners, which needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let unsynced = |layer: &Layer| {
        store
            .layout()
            .snapshots()
            .join(layer.digest.hex())
            .join("unsynced")
            .exists()
    };
    let commit = |content: &str| {
        let upper = store.scratch_dir("upper-test").unwrap().join("upper");
        fs::create_dir_all(&upper).unwrap();
        fs::write(upper.join("file"), content).unwrap();
        store.commit_upper(&upper, None, Keep::Snapshot).unwrap()
    };
    let in_image = commit("a layer of the image");
    let cache_only = commit("a layer of a build stage");
    // Made, a kept layer is build cache: not synced (a crash may cost it).
    assert!(unsynced(&in_image) && unsynced(&cache_only));

    // Tagged, the image's kept layers are put on disk; the others wait.
    let manifest = put_manifest(&store, &[&in_image]);
    store.tag("app", &manifest).unwrap();
    assert!(!unsynced(&in_image));
    assert!(unsynced(&cache_only));
    store.blobs().read(&in_image.digest).unwrap();

    // After a reboot, one read back whole is on disk.
    mark_from_an_earlier_boot(&store, &cache_only);
    store.snapshot(&cache_only.digest).unwrap();
    assert!(!unsynced(&cache_only));
}
