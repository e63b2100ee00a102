//! The layer cache end to end: what hits (a touch, a chmod under
//! `COPY --chmod`, a copied context, a stage rebuilt with the same files),
//! what misses and why (`--explain`), and `--no-cache`.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::{kiln, text};

struct Project {
    _dir: tempfile::TempDir,
    root: PathBuf,
    context: PathBuf,
}

fn project(dockerfile: &str) -> Project {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let context = dir.path().join("context");
    fs::create_dir_all(context.join("src")).unwrap();
    fs::write(context.join("src/a.txt"), "a\n").unwrap();
    fs::write(context.join("src/b.txt"), "b\n").unwrap();
    fs::write(context.join("Dockerfile"), dockerfile).unwrap();
    Project {
        _dir: dir,
        root,
        context,
    }
}

/// A build's image id and, per step number, `CACHED` or `DONE`; stderr
/// for assertions on explanations.
struct Built {
    id: String,
    steps: Vec<(usize, &'static str)>,
    stderr: String,
}

fn build(root: &Path, context: &Path, extra: &[&str]) -> Built {
    let mut args = vec!["build", "--explain"];
    args.extend_from_slice(extra);
    let context = context.to_str().unwrap();
    args.push(context);
    let out = kiln(root, &args);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let mut steps = Vec::new();
    for line in stderr.lines() {
        let Some(rest) = line.strip_prefix('#') else {
            continue;
        };
        let (number, what) = rest.split_once(' ').unwrap_or_default();
        let state = match what {
            "CACHED" => "CACHED",
            w if w.starts_with("DONE") => "DONE",
            _ => continue,
        };
        steps.push((number.parse().unwrap(), state));
    }
    Built {
        id: text(&out.stdout).trim().to_owned(),
        steps,
        stderr,
    }
}

/// The steps (numbers) that ran rather than came from the cache, FROM
/// excluded (it never caches: it only resolves the base).
fn ran(built: &Built, from_steps: &[usize]) -> Vec<usize> {
    built
        .steps
        .iter()
        .filter(|(n, state)| *state == "DONE" && !from_steps.contains(n))
        .map(|(n, _)| *n)
        .collect()
}

#[test]
fn unchanged_touched_and_copied_contexts_hit() {
    let p = project(
        "FROM scratch\nWORKDIR /app\nCOPY src/a.txt ./\nCOPY --chmod=0644 src/b.txt ./\nENV A=1\n",
    );
    let first = build(&p.root, &p.context, &["-t", "app"]);
    assert_eq!(ran(&first, &[1]), [2, 3, 4, 5]);
    let written = |path: &Path| fs::metadata(path).unwrap().modified().unwrap();
    let index_time = written(&p.root.join("index.json"));
    let blobs_time = written(&p.root.join("blobs/sha256"));
    assert!(
        first
            .stderr
            .contains("[stage-0 2/5] WORKDIR /app: first build"),
        "{}",
        first.stderr
    );

    let second = build(&p.root, &p.context, &["-t", "app"]);
    assert_eq!(ran(&second, &[1]), Vec::<usize>::new(), "{}", second.stderr);
    assert_eq!(second.id, first.id, "a build from cache is the same image");
    // Nothing was rewritten: no blob added or replaced, the tag untouched.
    assert_eq!(written(&p.root.join("index.json")), index_time);
    assert_eq!(written(&p.root.join("blobs/sha256")), blobs_time);
    assert!(second.stderr.contains("every step came from the cache"));

    // New mtimes and a new mode on a file COPY --chmod sets: content hits.
    let b = p.context.join("src/b.txt");
    fs::set_permissions(&b, fs::Permissions::from_mode(0o600)).unwrap();
    let file = fs::File::options()
        .write(true)
        .open(p.context.join("src/a.txt"))
        .unwrap();
    file.set_modified(std::time::SystemTime::now()).unwrap();
    let third = build(&p.root, &p.context, &[]);
    assert_eq!(ran(&third, &[1]), Vec::<usize>::new(), "{}", third.stderr);
    assert_eq!(third.id, first.id);

    // The same files in another directory: still the same keys.
    let moved = p.context.with_file_name("moved");
    fs::rename(&p.context, &moved).unwrap();
    let fourth = build(&p.root, &moved, &[]);
    assert_eq!(ran(&fourth, &[1]), Vec::<usize>::new(), "{}", fourth.stderr);
}

#[test]
fn an_edit_reruns_exactly_the_steps_downstream_and_says_why() {
    let p =
        project("FROM scratch\nCOPY src/a.txt /a\nENV STEP=2\nCOPY src/b.txt /b\nLABEL done=yes\n");
    build(&p.root, &p.context, &[]);
    fs::write(p.context.join("src/b.txt"), "b, edited\n").unwrap();
    let edited = build(&p.root, &p.context, &[]);
    assert_eq!(ran(&edited, &[1]), [4, 5], "{}", edited.stderr);
    assert!(
        edited
            .stderr
            .contains("[stage-0 4/5] COPY src/b.txt /b: input src/b.txt changed"),
        "{}",
        edited.stderr
    );
    assert!(
        edited
            .stderr
            .contains("[stage-0 5/5] LABEL done=yes: an earlier step changed"),
        "{}",
        edited.stderr
    );

    let forced = build(&p.root, &p.context, &["--no-cache"]);
    assert_eq!(ran(&forced, &[1]), [2, 3, 4, 5]);
    assert!(forced.stderr.contains("COPY src/a.txt /a: --no-cache"));
}

#[test]
fn a_build_arg_misses_from_its_first_use_only() {
    let p = project(
        "FROM scratch\nARG VERSION=1.2\nCOPY src/a.txt /a\nENV V=${VERSION}\nCOPY src/b.txt /b\n",
    );
    build(&p.root, &p.context, &[]);
    let changed = build(&p.root, &p.context, &["--build-arg", "VERSION=1.3"]);
    // ARG (2) and the COPY before the first use (3) hit.
    assert_eq!(ran(&changed, &[1]), [4, 5], "{}", changed.stderr);
    assert!(
        changed
            .stderr
            .contains("ENV V=1.3: build arg VERSION changed 1.2 → 1.3"),
        "{}",
        changed.stderr
    );
}

#[test]
fn a_stage_rebuilt_with_the_same_files_keeps_downstream_cached() {
    let p = project(
        "FROM scratch AS files\nARG NOTE=one\nCOPY src/ /src/\nLABEL note=${NOTE}\n\
         FROM scratch\nCOPY --from=files /src/a.txt /a\n",
    );
    build(&p.root, &p.context, &[]);
    let rebuilt = build(&p.root, &p.context, &["--build-arg", "NOTE=two"]);
    // The LABEL of stage `files` (4) reran; the copy from it (6) hit.
    assert_eq!(ran(&rebuilt, &[1, 5]), [4], "{}", rebuilt.stderr);
}

#[test]
fn four_overlapping_builds_at_once_share_one_store() {
    let p = project("FROM scratch\n");
    let data = p.context.join("data");
    fs::create_dir_all(&data).unwrap();
    for n in 0..8u8 {
        fs::write(data.join(format!("f{n}")), vec![n; 256 << 10]).unwrap();
    }
    // The same first steps in all four; each ends differently.
    for n in 0..4 {
        fs::write(
            p.context.join(format!("Dockerfile.{n}")),
            format!("FROM scratch\nCOPY data/ /data/\nCOPY src/ /src/\nENV N={n}\nCOPY src/a.txt /a{n}\n"),
        )
        .unwrap();
    }
    // All four started before any is waited for.
    let children: Vec<_> = (0..4)
        .map(|n| {
            std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
                .arg("--root")
                .arg(&p.root)
                .args(["build", "-t", &format!("app{n}"), "-f"])
                .arg(p.context.join(format!("Dockerfile.{n}")))
                .arg(&p.context)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let check = kiln(&p.root, &["check"]);
    assert!(check.status.success(), "{}", text(&check.stdout));
    assert!(text(&check.stdout).starts_with("ok:"));
    // The shared steps are in the cache once: all four hit them now.
    for n in 0..4 {
        let again = build(
            &p.root,
            &p.context,
            &[
                "-f",
                p.context.join(format!("Dockerfile.{n}")).to_str().unwrap(),
            ],
        );
        assert_eq!(ran(&again, &[1]), Vec::<usize>::new(), "{}", again.stderr);
    }
}

#[test]
fn prune_forgets_by_age_size_or_all_and_cache_commands_list() {
    let p = project("FROM scratch\nCOPY src/a.txt /a\nENV X=1\nCOPY src/b.txt /b\n");
    build(&p.root, &p.context, &[]);
    let du = common::ok(kiln(&p.root, &["cache", "du"]));
    // COPY, ENV, COPY: FROM only resolves the base and is not cached.
    assert!(du.starts_with("3 entries, 2 layers, "), "{du}");
    let ls = common::ok(kiln(&p.root, &["cache", "ls"]));
    assert_eq!(ls.lines().count(), 4, "{ls}");

    // Everything was used just now: an age filter keeps it all.
    let out = common::ok(kiln(&p.root, &["prune", "--filter", "until=1h"]));
    assert!(out.starts_with("Deleted 0 cache entries"), "{out}");
    assert_eq!(
        ran(&build(&p.root, &p.context, &[]), &[1]),
        Vec::<usize>::new()
    );

    // No room at all: the steps with layers go, and run again.
    let out = common::ok(kiln(&p.root, &["prune", "--keep-storage", "0"]));
    assert!(out.starts_with("Deleted 2 cache entries"), "{out}");
    assert_eq!(ran(&build(&p.root, &p.context, &[]), &[1]), [2, 4]);

    let out = common::ok(kiln(&p.root, &["prune", "--all"]));
    assert!(out.starts_with("Deleted 3 cache entries"), "{out}");
    assert_eq!(ran(&build(&p.root, &p.context, &[]), &[1]), [2, 3, 4]);
    let bad = kiln(&p.root, &["prune", "--filter", "label=x"]);
    assert_eq!(bad.status.code(), Some(1));
}

#[test]
fn an_exported_cache_gives_hits_to_an_empty_store() {
    let p = project(
        "FROM scratch AS side\nCOPY src/b.txt /b\n\
         FROM scratch\nCOPY src/a.txt /a\nCOPY --from=side /b /b\nENV DONE=1\n",
    );
    let exported = p.context.with_file_name("exported-cache");
    let dest = format!("type=local,dest={},mode=max", exported.display());
    let first = build(&p.root, &p.context, &["--cache-to", &dest]);
    assert!(exported.join("kiln-cache.json").is_file());
    assert!(exported.join("oci-layout").is_file());

    // Another machine: an empty store, the same context elsewhere.
    let other = p.root.with_file_name("other-store");
    let src = format!("type=local,src={}", exported.display());
    let second = build(&other, &p.context, &["--cache-from", &src]);
    assert_eq!(
        ran(&second, &[1, 3]),
        Vec::<usize>::new(),
        "{}",
        second.stderr
    );
    assert_eq!(second.id, first.id);
    let check = common::ok(kiln(&other, &["check"]));
    assert!(check.starts_with("ok:"), "{check}");

    // mode=min leaves the side stage out: it reruns, the rest still hits
    // because it produced the same file.
    let min_dir = p.context.with_file_name("min-cache");
    let min = format!("type=local,dest={}", min_dir.display());
    build(&p.root, &p.context, &["--cache-to", &min]);
    let third_store = p.root.with_file_name("third-store");
    let from_min = format!("type=local,src={}", min_dir.display());
    let third = build(&third_store, &p.context, &["--cache-from", &from_min]);
    assert_eq!(ran(&third, &[1, 3]), [2], "{}", third.stderr);

    // A layer that lies about its digest is not taken: the step reruns.
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(exported.join("kiln-cache.json")).unwrap()).unwrap();
    for entry in manifest["steps"].as_object().unwrap().values() {
        if let Some(layer) = entry["layer"].as_str() {
            let blob = exported.join("blobs/sha256").join(&layer[7..]);
            fs::write(blob, b"not the layer").unwrap();
        }
    }
    let fourth_store = p.root.with_file_name("fourth-store");
    let fourth = build(&fourth_store, &p.context, &["--cache-from", &src]);
    // (Step 5 copies the very layer step 2 just rebuilt, so it is whole.)
    assert_eq!(ran(&fourth, &[1, 3]), [2, 4], "{}", fourth.stderr);
    let check = common::ok(kiln(&fourth_store, &["check"]));
    assert!(check.starts_with("ok:"), "{check}");
}

#[test]
fn a_new_base_image_and_forced_runs_say_so() {
    let p = project("FROM base AS one\nCOPY src/a.txt /a\nCOPY src/b.txt /b\n");
    let import = |content: &[u8]| {
        let tar = p.context.parent().unwrap().join("base.tar");
        fs::write(&tar, common::raw_tar(&[("etc/os", content)], 0o644)).unwrap();
        common::ok(kiln(&p.root, &["import", tar.to_str().unwrap(), "base"]));
    };
    import(b"one\n");
    build(&p.root, &p.context, &[]);
    assert_eq!(
        ran(&build(&p.root, &p.context, &[]), &[1]),
        Vec::<usize>::new()
    );

    import(b"two\n");
    let rebuilt = build(&p.root, &p.context, &[]);
    assert_eq!(ran(&rebuilt, &[1]), vec![2, 3]);
    assert!(
        rebuilt
            .stderr
            .contains("COPY src/a.txt /a: base image changed"),
        "{}",
        rebuilt.stderr
    );

    let filtered = build(&p.root, &p.context, &["--no-cache-filter", "one"]);
    assert_eq!(ran(&filtered, &[1]), vec![2, 3]);
    assert!(
        filtered
            .stderr
            .contains("COPY src/b.txt /b: --no-cache-filter one"),
        "{}",
        filtered.stderr
    );
}

/// Whether step `number`'s output says it hashed files.
fn hashed_files(built: &Built, number: usize) -> bool {
    let prefix = format!("#{number} ");
    built
        .stderr
        .lines()
        .any(|l| l.starts_with(&prefix) && l.contains(" hashed, "))
}

#[test]
fn a_rebuild_keys_copies_and_mounts_from_a_stage_without_reading_it() {
    let p = project(
        "FROM scratch AS files\nCOPY src/ /src/\n\
         FROM busybox\nCOPY --from=files /src/ /out/\n\
         RUN --mount=type=bind,from=files,source=/src,target=/m cat /m/a.txt > /seen\n",
    );
    let rootfs = common::busybox_rootfs(p.context.parent().unwrap());
    common::ok(kiln(
        &p.root,
        &["import", rootfs.to_str().unwrap(), "busybox"],
    ));
    let first = build(&p.root, &p.context, &["--progress", "plain"]);
    assert!(hashed_files(&first, 4), "{}", first.stderr);
    // Nothing changed: the stage's layers are the same digests, so what the
    // COPY and the mount select from them is remembered, not re-read.
    let warm = build(&p.root, &p.context, &["--progress", "plain"]);
    assert_eq!(ran(&warm, &[1, 3]), Vec::<usize>::new(), "{}", warm.stderr);
    assert!(!hashed_files(&warm, 4), "{}", warm.stderr);
    assert_eq!(warm.id, first.id);

    // A file of the stage changed: its layer is new, so the selection is
    // made again, and the miss names the file.
    fs::write(p.context.join("src/a.txt"), "changed\n").unwrap();
    let edited = build(&p.root, &p.context, &["--progress", "plain"]);
    assert_eq!(ran(&edited, &[1, 3]), [2, 4, 5], "{}", edited.stderr);
    assert!(hashed_files(&edited, 4), "{}", edited.stderr);
    assert!(edited.stderr.contains("src/a.txt"), "{}", edited.stderr);

    // --no-cache trusts nothing remembered.
    let forced = build(&p.root, &p.context, &["--progress", "plain", "--no-cache"]);
    assert!(hashed_files(&forced, 4), "{}", forced.stderr);
}

#[test]
fn a_remembered_selection_that_lies_fails_once_and_is_corrected() {
    let p = project(
        "FROM scratch AS files\nCOPY src/ /src/\n\
         FROM scratch\nCOPY --from=files /src/ /out/\n",
    );
    let first = build(&p.root, &p.context, &[]);
    let selections = p.root.join("kiln/cache/selections");
    let mut lied = 0;
    for file in fs::read_dir(&selections).unwrap() {
        let path = file.unwrap().path();
        let mut selected: serde_json::Value =
            serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        selected["content"] = "00".repeat(32).into();
        fs::write(&path, serde_json::to_vec(&selected).unwrap()).unwrap();
        lied += 1;
    }
    assert_eq!(lied, 1, "one COPY --from, one remembered selection");
    let out = kiln(
        &p.root,
        &["build", "--progress", "plain", p.context.to_str().unwrap()],
    );
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("Dockerfile:4:") && stderr.contains("remembered another selection"),
        "{stderr}"
    );
    let again = build(&p.root, &p.context, &[]);
    assert_eq!(again.id, first.id, "{}", again.stderr);
    assert_eq!(
        ran(&again, &[1, 3]),
        Vec::<usize>::new(),
        "{}",
        again.stderr
    );
}

#[test]
fn copies_from_a_stage_read_through_snapshots_or_tars_give_the_same_image() {
    // Hard links, relative and absolute symlinks, a source reached through
    // a link, files and a directory deleted (whiteouts), a directory
    // deleted and made again (opaque), owners and modes changed above.
    // The stage ends a second after its last change, so a directory's
    // time taken from the moment a snapshot was written shows (the
    // listing has the seconds).
    let p = project(
        "FROM busybox AS build\n\
         RUN mkdir -p /out/sub /out/gone /out/keep && echo a > /out/a && ln /out/a /out/hard \
         && ln -s a /out/soft && ln -s /out/sub /out/abs && echo s > /out/sub/s && echo t > /out/sub/t && echo u > /out/sub/u \
         && echo g > /out/gone/g && echo k > /out/keep/k\n\
         RUN rm -rf /out/gone /out/keep && mkdir /out/keep && echo k2 > /out/keep/k2 && rm /out/sub/s \
         && ln -s sub /out/current && chmod 750 /out/sub && chown 5:6 /out/a && sleep 1\n\
         FROM busybox AS final\n\
         COPY --from=build /out/ /copied/\n\
         COPY --from=build /out/current/ /via-link/\n\
         COPY --from=build /out/abs /abs-target\n\
         COPY --from=build /out/ke* /globbed/\n\
         COPY --from=build /out/sub/t /out/ /both/\n\
         RUN ls -lR --full-time /copied /via-link /abs-target /globbed /both > /listing\n",
    );
    let rootfs = common::busybox_rootfs(p.context.parent().unwrap());
    common::ok(kiln(
        &p.root,
        &["import", rootfs.to_str().unwrap(), "busybox"],
    ));
    // Exporting the cache writes every cached layer out as a tar blob
    // (a RUN's layer is otherwise kept only as its snapshot).
    let exported = p.context.parent().unwrap().join("exported");
    let cache_to = format!("type=local,dest={},mode=max", exported.display());
    let through_snapshots = build(
        &p.root,
        &p.context,
        &["--progress", "plain", "--cache-to", &cache_to],
    );
    // The build stage's layers stay as tars; their snapshots go, so the
    // final stage must read them from the tars (a layer kept only as its
    // snapshot, like the busybox base a RUN unpacked, keeps it). A second
    // later: a copied directory's time must be the stage's, not the time
    // it was unpacked.
    let mut removed = 0;
    for snapshot in fs::read_dir(p.root.join("kiln/snapshots")).unwrap() {
        let snapshot = snapshot.unwrap().path();
        let name = snapshot.file_name().unwrap().to_owned();
        if p.root.join("blobs/sha256").join(&name).is_file() {
            fs::remove_dir_all(&snapshot).unwrap();
            removed += 1;
        }
    }
    assert!(
        removed >= 2,
        "the build stage's snapshots beside their tars"
    );
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let through_tars = build(
        &p.root,
        &p.context,
        &["--progress", "plain", "--no-cache-filter", "final"],
    );
    assert_eq!(
        ran(&through_tars, &[1, 4]),
        [5, 6, 7, 8, 9, 10],
        "{}",
        through_tars.stderr
    );
    // The COPY layers (the RUN's differs: its /listing has a new time).
    let layers = |id: &str| {
        let inspect = common::ok(kiln(&p.root, &["inspect", id]));
        let doc: serde_json::Value = serde_json::from_str(&inspect).unwrap();
        let layers = doc[0]["Manifest"]["layers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(layers.len(), 7, "{doc}");
        layers[..6].to_vec()
    };
    assert_eq!(layers(&through_tars.id), layers(&through_snapshots.id));
    let listing = |id: &str| {
        let out = kiln(
            &p.root,
            &["run", "--rm", "--network", "none", id, "cat", "/listing"],
        );
        common::ok(out)
    };
    let listing_through_snapshots = listing(&through_snapshots.id);
    assert_eq!(listing(&through_tars.id), listing_through_snapshots);
    let listing = listing_through_snapshots;
    for expected in [
        "k2",
        "/via-link:",
        " t\n",
        "soft -> a",
        "/both/sub:",
        " u\n",
    ] {
        assert!(listing.contains(expected), "{expected}: {listing}");
    }
    assert!(
        !listing.contains("gone") && !listing.contains(" s\n"),
        "{listing}"
    );
}
