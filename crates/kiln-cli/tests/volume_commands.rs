//! Named volumes as `docker volume` keeps them: made by `volume create`
//! or on first use (`-v NAME:/path`, `--mount type=volume`), shared by
//! containers and outliving them; anonymous ones (`-v /path`) go with
//! `run --rm` and `rm -v`; a volume in use is never removed, and what a
//! container left in one never leads its removal outside.

mod common;

use std::fs;

use common::{kiln, ok, text};

#[test]
fn volumes_are_made_shared_kept_and_removed_as_dockers() {
    let store = common::busybox_workspace();
    let root = &store.root;
    let run = |args: &[&str]| {
        let mut all = vec!["run", "--rm", "--network", "none"];
        all.extend(args);
        kiln(root, &all)
    };

    assert_eq!(
        ok(kiln(
            root,
            &["volume", "create", "--label", "tier=db", "data"]
        )),
        "data\n"
    );
    // Made again: the same volume, no error (docker's create).
    assert_eq!(ok(kiln(root, &["volume", "create", "data"])), "data\n");
    let inspect: serde_json::Value =
        serde_json::from_str(&ok(kiln(root, &["volume", "inspect", "data"]))).unwrap();
    assert_eq!(inspect[0]["Name"], "data");
    assert_eq!(inspect[0]["Labels"]["tier"], "db");
    let mountpoint = inspect[0]["Mountpoint"].as_str().unwrap().to_owned();
    assert!(
        mountpoint.starts_with(root.to_str().unwrap()),
        "{mountpoint}"
    );

    // Written by one container, read by the next; read-only with :ro and
    // with --mount readonly; made on first use by name.
    ok(run(&[
        "-v",
        "data:/d",
        "busybox",
        "sh",
        "-c",
        "echo kept > /d/f",
    ]));
    assert_eq!(
        ok(run(&["-v", "data:/d:ro", "busybox", "cat", "/d/f"])),
        "kept\n"
    );
    let refused = run(&["-v", "data:/d:ro", "busybox", "sh", "-c", "echo x > /d/g"]);
    assert_ne!(refused.status.code(), Some(0));
    assert!(
        text(&refused.stderr).contains("Read-only"),
        "{}",
        text(&refused.stderr)
    );
    assert_eq!(
        ok(run(&[
            "--mount",
            "type=volume,source=data,target=/m,readonly",
            "busybox",
            "cat",
            "/m/f"
        ])),
        "kept\n"
    );
    ok(run(&[
        "--mount",
        "type=volume,src=fresh,dst=/v",
        "busybox",
        "touch",
        "/v/x",
    ]));
    let names = ok(kiln(root, &["volume", "ls", "-q"]));
    assert_eq!(names, "data\nfresh\n");
    let df = ok(kiln(root, &["system", "df"]));
    assert!(
        df.contains("\nLocal Volumes   2       0        5B\n"),
        "{df}"
    );
    let listed = ok(kiln(root, &["volume", "ls"]));
    assert!(
        listed.starts_with("DRIVER   VOLUME NAME\nlocal    data\n"),
        "{listed}"
    );
    assert_eq!(
        ok(kiln(
            root,
            &["volume", "ls", "--format", "{{.Name}}={{.Driver}}"]
        )),
        "data=local\nfresh=local\n"
    );

    // Anonymous volumes: one per `-v /path`, gone with `run --rm` or `rm
    // -v`, and with `volume prune` once unused; named ones stay.
    ok(run(&["-v", "/scratch", "busybox", "touch", "/scratch/x"]));
    assert_eq!(ok(kiln(root, &["volume", "ls", "-q"])), "data\nfresh\n");
    ok(kiln(
        root,
        &[
            "run", "--name", "keeper", "-v", "/scratch", "busybox", "true",
        ],
    ));
    ok(kiln(
        root,
        &[
            "run", "--name", "loose", "-v", "/scratch", "busybox", "true",
        ],
    ));
    assert_eq!(ok(kiln(root, &["volume", "ls", "-q"])).lines().count(), 4);
    ok(kiln(root, &["rm", "-v", "keeper"]));
    assert_eq!(ok(kiln(root, &["volume", "ls", "-q"])).lines().count(), 3);

    // In use (even by a stopped container): refused, -f or not.
    ok(kiln(
        root,
        &["run", "--name", "user", "-v", "data:/d", "busybox", "true"],
    ));
    for args in [
        vec!["volume", "rm", "data"],
        vec!["volume", "rm", "-f", "data"],
    ] {
        let out = kiln(root, &args);
        assert_eq!(out.status.code(), Some(1));
        assert!(
            text(&out.stderr).contains("in use by container user"),
            "{}",
            text(&out.stderr)
        );
    }
    // prune: the unused anonymous one ("loose" still uses its own);
    // with -a every unused one.
    ok(kiln(root, &["rm", "loose"]));
    let pruned = ok(kiln(root, &["volume", "prune", "-f"]));
    assert_eq!(pruned.lines().count(), 2, "{pruned}");
    assert_eq!(ok(kiln(root, &["volume", "ls", "-q"])), "data\nfresh\n");
    let all = ok(kiln(root, &["volume", "prune", "-f", "-a"]));
    assert_eq!(all, "Deleted Volumes:\nfresh\n");
    ok(kiln(root, &["rm", "user"]));
    ok(kiln(root, &["volume", "rm", "data"]));
    assert_eq!(ok(kiln(root, &["volume", "ls", "-q"])), "");
    let missing = kiln(root, &["volume", "rm", "data"]);
    assert!(text(&missing.stderr).contains("no such volume: data"));
    ok(kiln(root, &["volume", "rm", "-f", "data"]));
}

/// Threat: a volume's name is one path component of the store, and its
/// files are the container's: removing it never follows what it planted.
#[test]
fn a_volume_name_stays_in_the_store_and_its_links_are_not_followed() {
    let store = common::busybox_workspace();
    let root = &store.root;
    for name in ["..", "../escape", "a/b", "/abs", ".hidden", "x"] {
        let out = kiln(root, &["volume", "create", name]);
        assert_eq!(out.status.code(), Some(1), "{name}");
        assert!(
            text(&out.stderr).contains("invalid volume name"),
            "{name}: {}",
            text(&out.stderr)
        );
    }
    for spec in ["../up:/x", "a/b:/x", ".:/x"] {
        let out = kiln(root, &["run", "--rm", "-v", spec, "busybox", "true"]);
        assert_eq!(out.status.code(), Some(1), "{spec}");
    }
    assert!(!root.join("kiln").join("escape").exists());

    let precious = store.work.join("precious");
    fs::create_dir(&precious).unwrap();
    fs::write(precious.join("keep"), "mine\n").unwrap();
    let script = format!("ln -s {} /d/link; ln -s / /d/root", precious.display());
    ok(kiln(
        root,
        &[
            "run",
            "--rm",
            "-v",
            "planted:/d",
            "busybox",
            "sh",
            "-c",
            &script,
        ],
    ));
    ok(kiln(root, &["volume", "rm", "planted"]));
    assert_eq!(fs::read_to_string(precious.join("keep")).unwrap(), "mine\n");
}
