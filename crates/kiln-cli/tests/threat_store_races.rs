//! Threat model: concurrency and crashes against the store. Several kiln
//! processes share one store (a CI runner, a user in two terminals); any of
//! them may be killed at any point. GC must never take the work of a live
//! process, what dead ones leave must be cleaned by the next writer, a
//! damaged snapshot must be found and made again rather than used, and no
//! command should wait for a build it does not need.
//!
//! No test here measures time: each blocks a process at a known point
//! (a RUN step that sleeps, an import whose input is not finished) and
//! asserts what another process does meanwhile.

mod common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{busybox_rootfs, busybox_workspace, kiln, ok, text};

fn kiln_command(root: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kiln"));
    command
        .arg("--root")
        .arg(root)
        .args(args)
        .env_remove("SOURCE_DATE_EPOCH");
    command
}

/// Polls `condition` for up to a minute (a wait for a state, not a time
/// limit on anything kiln does); panics with `what` if it never holds.
fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "gave up waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn names_in(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a RUN step's container has created `marker` in its upper dir
/// (`kiln/tmp/<scratch>/upper/<marker>`): the step is running.
fn run_step_reached(root: &Path, marker: &str) -> bool {
    names_in(&root.join("kiln/tmp")).iter().any(|dir| {
        root.join("kiln/tmp")
            .join(dir)
            .join("upper")
            .join(marker)
            .exists()
    })
}

/// A build of `dockerfile` in its own context under `work`, started.
fn spawn_build(root: &Path, work: &Path, name: &str, dockerfile: &str) -> Child {
    let context = work.join(name);
    fs::create_dir_all(&context).unwrap();
    fs::write(context.join("Dockerfile"), dockerfile).unwrap();
    kiln_command(root, &["build", "-t", name, context.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Interrupts a build (SIGINT: kiln stops its container) and reaps it.
fn interrupt(mut child: Child) {
    common::send_signal(child.id(), "INT");
    let _ = child.wait();
}

/// A build blocked in `RUN sleep`: started, and seen inside the step.
fn blocked_build(root: &Path, work: &Path, name: &str) -> Child {
    let marker = format!("in-{name}");
    let child = spawn_build(
        root,
        work,
        name,
        &format!("FROM busybox\nRUN touch /{marker} && sleep 60\n"),
    );
    wait_for("the build to reach its RUN step", || {
        run_step_reached(root, &marker)
    });
    child
}

#[test]
fn images_answers_while_a_build_runs() {
    let s = busybox_workspace();
    let mut build = blocked_build(&s.root, &s.work, "slow");
    let images = ok(kiln(&s.root, &["images"]));
    let history = kiln(&s.root, &["history", "busybox"]);
    let inspect = kiln(&s.root, &["inspect", "busybox"]);
    let ps = kiln(&s.root, &["ps", "-a"]);
    assert!(
        build.try_wait().unwrap().is_none(),
        "the readers only answered once the build had ended"
    );
    interrupt(build);
    assert!(images.contains("busybox"), "{images}");
    for out in [history, inspect, ps] {
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
}

#[test]
fn a_second_build_finishes_while_the_first_is_in_a_run_step() {
    let s = busybox_workspace();
    let mut first = blocked_build(&s.root, &s.work, "first");
    let second = spawn_build(
        &s.root,
        &s.work,
        "second",
        "FROM busybox\nRUN echo second > /second\n",
    );
    let out = second.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        first.try_wait().unwrap().is_none(),
        "the second build waited for the first one to end"
    );
    // A tag written meanwhile is kept (index.json is changed under its own lock).
    ok(kiln(&s.root, &["tag", "second", "second:again"]));
    interrupt(first);
    let images = ok(kiln(&s.root, &["images"]));
    assert!(
        images.contains("second") && images.contains("again"),
        "{images}"
    );
    let run = ok(kiln(
        &s.root,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "second",
            "cat",
            "/second",
        ],
    ));
    assert_eq!(run, "second\n");
}

/// A rootfs tar: busybox plus `extra` bytes of noise in one file, so each
/// import is new content (new blobs, so new temp files).
fn rootfs_with_noise(busybox: &[u8], seed: u8, extra: usize) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut archive = tar::Archive::new(busybox);
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let mut header = entry.header().clone();
        let path = entry.path().unwrap().into_owned();
        if header.entry_type().is_symlink() || header.entry_type().is_hard_link() {
            let target = entry.link_name().unwrap().unwrap().into_owned();
            builder.append_link(&mut header, &path, &target).unwrap();
        } else {
            builder.append_data(&mut header, &path, &mut entry).unwrap();
        }
    }
    let noise: Vec<u8> = (0..extra)
        .map(|n| (n as u8).wrapping_mul(31).wrapping_add(seed))
        .collect();
    let mut header = tar::Header::new_gnu();
    header.set_size(noise.len() as u64);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    builder
        .append_data(&mut header, "noise", noise.as_slice())
        .unwrap();
    builder.into_inner().unwrap()
}

/// Temp files of writers in the blob directory.
fn blob_temps(root: &Path) -> Vec<String> {
    names_in(&root.join("blobs/sha256"))
        .into_iter()
        .filter(|n| n.starts_with('.'))
        .collect()
}

#[test]
fn prune_while_an_import_streams_in_does_not_break_it() {
    let s = busybox_workspace();
    let busybox = fs::read(busybox_rootfs(&s.work)).unwrap();
    let tar = rootfs_with_noise(&busybox, 1, 4 << 20);
    let mut import = kiln_command(&s.root, &["import", "-", "imported"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = import.stdin.take().unwrap();
    // Half the input: the import has a blob temp file open, and waits.
    let half = tar.len() / 2;
    stdin.write_all(&tar[..half]).unwrap();
    stdin.flush().unwrap();
    wait_for("the import to start writing its blob", || {
        !blob_temps(&s.root).is_empty()
    });
    let pruned = ok(kiln(&s.root, &["prune"]));
    assert!(
        !blob_temps(&s.root).is_empty(),
        "prune deleted the live import's temp file: {pruned}"
    );
    stdin.write_all(&tar[half..]).unwrap();
    drop(stdin);
    let out = import.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the import broke: {}",
        text(&out.stderr)
    );
    let check = ok(kiln(&s.root, &["check"]));
    assert!(check.starts_with("ok:"), "{check}");
    let run = ok(kiln(
        &s.root,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "imported",
            "wc",
            "-c",
            "/noise",
        ],
    ));
    assert!(run.contains(&(4 << 20).to_string()), "{run}");
}

#[test]
fn prune_racing_imports_and_runs_does_not_break_them() {
    let s = busybox_workspace();
    let busybox = fs::read(busybox_rootfs(&s.work)).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pruner = {
        let root = s.root.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut rounds = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let out = kiln(&root, &["prune"]);
                assert!(out.status.success(), "prune: {}", text(&out.stderr));
                rounds += 1;
            }
            rounds
        })
    };
    let mut failures = Vec::new();
    for n in 0..6u8 {
        let file = s.work.join(format!("rootfs-{n}.tar"));
        fs::write(&file, rootfs_with_noise(&busybox, n, 8 << 20)).unwrap();
        let name = format!("racer{n}");
        let import = kiln(&s.root, &["import", file.to_str().unwrap(), &name]);
        if !import.status.success() {
            failures.push(format!("import {n}: {}", text(&import.stderr)));
            continue;
        }
        // The first run unpacks the new layer as a snapshot, while GC runs.
        let run = kiln(
            &s.root,
            &[
                "run",
                "--rm",
                "--network",
                "none",
                &name,
                "sh",
                "-c",
                "wc -c < /noise; ls /bin | wc -l",
            ],
        );
        let expected = format!("{}\n", 8 << 20);
        if !run.status.success() || !text(&run.stdout).starts_with(&expected) {
            failures.push(format!(
                "run {n}: {}{}",
                text(&run.stdout),
                text(&run.stderr)
            ));
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let rounds = pruner.join().unwrap();
    assert!(failures.is_empty(), "{rounds} prunes broke: {failures:#?}");
    let check = ok(kiln(&s.root, &["check"]));
    assert!(check.starts_with("ok:"), "{check}");
}

/// The scratch directories, temp files and half snapshots in the store.
fn leftovers(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for name in names_in(&root.join("kiln/tmp")) {
        found.push(root.join("kiln/tmp").join(name));
    }
    for dir in [
        root.to_owned(),
        root.join("blobs/sha256"),
        root.join("kiln/snapshots"),
    ] {
        for name in names_in(&dir) {
            if name.starts_with(".tmp") {
                found.push(dir.join(name));
            }
        }
    }
    found
}

#[test]
fn a_killed_builds_leftovers_are_cleaned_by_the_next_command() {
    let s = busybox_workspace();
    let context = s.work.join("killed");
    fs::create_dir_all(&context).unwrap();
    fs::write(context.join("big"), vec![7u8; 8 << 20]).unwrap();
    fs::write(
        context.join("Dockerfile"),
        "FROM busybox\nCOPY big /big\nRUN touch /in-killed && sleep 60\n",
    )
    .unwrap();
    let mut build = kiln_command(&s.root, &["build", context.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the build to reach its RUN step", || {
        run_step_reached(&s.root, "in-killed")
    });
    build.kill().unwrap();
    build.wait().unwrap();
    // What other crashes leave: an index write, a blob, a snapshot.
    fs::write(s.root.join(".tmp-write-999999-0"), b"{").unwrap();
    fs::write(s.root.join("blobs/sha256/.tmp-blob-999999-0"), b"x").unwrap();
    fs::create_dir_all(s.root.join("kiln/snapshots/.tmp-999999-0-abc/bin")).unwrap();
    let left = leftovers(&s.root);
    assert!(left.len() >= 4, "{left:?}");

    // Any command that writes to the store cleans them; not only prune.
    ok(kiln(&s.root, &["tag", "busybox", "busybox:other"]));
    let left = leftovers(&s.root);
    assert!(left.is_empty(), "left after `kiln tag`: {left:?}");
    assert!(ok(kiln(&s.root, &["check"])).starts_with("ok:"));
}

/// A store whose `busybox` has a gzip layer, as a pulled or loaded base
/// has: its snapshot sits beside the blob, which heals it. (An imported
/// plain layer is kept as its snapshot alone once a RUN unpacks it.)
fn compressed_busybox() -> common::BusyboxStore {
    let s = busybox_workspace();
    let archive = s.work.join("busybox-oci.tar");
    ok(kiln(
        &s.root,
        &["save", "-o", archive.to_str().unwrap(), "busybox"],
    ));
    ok(kiln(&s.root, &["rmi", "busybox"]));
    ok(kiln(&s.root, &["load", "-i", archive.to_str().unwrap()]));
    s
}

#[test]
fn check_finds_a_damaged_snapshot_and_the_next_use_makes_it_again() {
    let s = compressed_busybox();
    let cat = |path: &str| {
        kiln(
            &s.root,
            &["run", "--rm", "--network", "none", "busybox", "cat", path],
        )
    };
    let passwd = ok(cat("/etc/passwd"));
    let snapshots = s.root.join("kiln/snapshots");
    let layers: Vec<String> = names_in(&snapshots)
        .into_iter()
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert_eq!(layers.len(), 1, "{layers:?}");
    let layer = &layers[0];
    // The file inside the snapshot, whatever the snapshot's layout.
    let damaged = walkdir::WalkDir::new(snapshots.join(layer))
        .into_iter()
        .flatten()
        .find(|e| e.path().ends_with("etc/passwd"))
        .expect("the snapshot holds etc/passwd")
        .into_path();
    fs::remove_file(&damaged).unwrap();

    let check = kiln(&s.root, &["check"]);
    assert_eq!(check.status.code(), Some(1), "{}", text(&check.stdout));
    let report = text(&check.stdout);
    assert!(
        report.contains(&format!("sha256:{layer}")) && report.contains("etc/passwd"),
        "{report}"
    );
    // The next use does not see the damage: the snapshot is made again.
    assert_eq!(ok(cat("/etc/passwd")), passwd);
    let check = ok(kiln(&s.root, &["check"]));
    assert!(check.starts_with("ok:"), "{check}");
}

#[test]
fn a_snapshot_not_marked_complete_is_made_again() {
    let s = compressed_busybox();
    ok(kiln(
        &s.root,
        &["run", "--rm", "--network", "none", "busybox", "true"],
    ));
    let snapshots = s.root.join("kiln/snapshots");
    let layer = names_in(&snapshots)
        .into_iter()
        .find(|n| !n.starts_with('.'))
        .unwrap();
    // As a kill in the middle of a removal (or an older kiln) leaves it.
    let marker = snapshots.join(&layer).join("complete");
    fs::remove_file(&marker).unwrap();
    let _ = fs::remove_file(snapshots.join(&layer).join("fs/bin/sh"));
    let check = kiln(&s.root, &["check"]);
    assert_eq!(check.status.code(), Some(1), "{}", text(&check.stdout));
    ok(kiln(
        &s.root,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "busybox",
            "sh",
            "-c",
            "true",
        ],
    ));
    assert!(marker.exists());
}

#[test]
fn prune_of_cache_mounts_keeps_the_ones_in_use() {
    let s = busybox_workspace();
    let mut build = spawn_build(
        &s.root,
        &s.work,
        "cached",
        "FROM busybox\nRUN --mount=type=cache,target=/cache touch /cache/kept /in-cached && sleep 60\n",
    );
    wait_for("the build to reach its RUN step", || {
        run_step_reached(&s.root, "in-cached")
    });
    ok(kiln(&s.root, &["prune", "--cache-mounts"]));
    let still_running = build.try_wait().unwrap().is_none();
    let kept = walkdir::WalkDir::new(s.root.join("kiln/cache-mounts"))
        .into_iter()
        .flatten()
        .any(|e| e.file_name() == "kept");
    interrupt(build);
    assert!(still_running, "prune waited for the build");
    assert!(kept, "prune removed a cache mount a RUN step was using");
}
