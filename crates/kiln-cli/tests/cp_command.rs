//! `kiln cp` between the host and a busybox container, running or
//! stopped: docker's rules for where a copy lands, `-a`, `-L`, tar
//! streams with `-`; and, as the container is the attacker's, that its
//! links, fifos and a hostile tar never reach the host.

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{kiln, ok, text};

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Container `name` that ran `setup`, then sleeps (its files made).
fn running(root: &Path, name: &str, setup: &str) {
    running_with(root, name, &[], setup);
}

/// As [`running`], with more flags for `kiln run`.
fn running_with(root: &Path, name: &str, flags: &[&str], setup: &str) {
    let script = format!("{setup}; touch /ready; exec sleep 600");
    let mut args = vec!["run", "-d", "--network", "none", "--name", name];
    args.extend_from_slice(flags);
    args.extend(["busybox", "sh", "-c", &script]);
    ok(kiln(root, &args));
    wait_for("the container's setup", || {
        kiln(root, &["exec", name, "test", "-e", "/ready"])
            .status
            .success()
    });
}

fn exec(root: &Path, name: &str, script: &str) -> String {
    ok(kiln(root, &["exec", name, "sh", "-c", script]))
}

#[test]
fn cp_lands_where_docker_cp_lands_in_and_out_running_or_stopped() {
    let store = common::busybox_workspace();
    let (root, work) = (&store.root, &store.work);
    running(
        root,
        "box",
        "mkdir -p /app/sub && echo a > /app/a && echo b > /app/sub/b && \
         chmod 750 /app/sub && chown 1000:1000 /app/a && ln -s a /app/to-a",
    );
    let out = work.join("out");
    fs::create_dir(&out).unwrap();
    let cp = |args: &[&str]| kiln(root, args);
    let at = |p: &str| out.join(p).display().to_string();

    // A directory into an existing directory: under its own name, links
    // as links, modes kept, owners ours without -a and the container's with.
    ok(cp(&["cp", "box:/app", &at("")]));
    assert_eq!(fs::read_to_string(out.join("app/sub/b")).unwrap(), "b\n");
    assert_eq!(fs::read_link(out.join("app/to-a")).unwrap(), Path::new("a"));
    let sub = fs::metadata(out.join("app/sub")).unwrap();
    assert_eq!(sub.permissions().mode() & 0o777, 0o750);
    assert_eq!(fs::metadata(out.join("app/a")).unwrap().uid(), 0);
    ok(cp(&["cp", "-a", "box:/app/a", &at("owned")]));
    assert_eq!(fs::metadata(out.join("owned")).unwrap().uid(), 1000);
    // A file to a new name; a directory's contents with `/.`; a new
    // directory name takes the directory itself.
    ok(cp(&["cp", "box:/app/a", &at("renamed")]));
    assert_eq!(fs::read_to_string(out.join("renamed")).unwrap(), "a\n");
    fs::create_dir(out.join("contents")).unwrap();
    ok(cp(&["cp", "box:/app/.", &at("contents")]));
    assert!(out.join("contents/sub/b").is_file());
    ok(cp(&["container", "cp", "box:/app/sub", &at("sub-copy")]));
    assert!(out.join("sub-copy/b").is_file());
    // -L follows the source link (inside the container).
    ok(cp(&["cp", "-L", "box:/app/to-a", &at("followed")]));
    assert_eq!(fs::read_to_string(out.join("followed")).unwrap(), "a\n");
    // docker's refusals, each one line and exit 1.
    for (args, message) in [
        (
            vec!["box:/nope".into(), at("x")],
            "no such file or directory in container box: /nope",
        ),
        (
            vec!["box:/app".into(), at("renamed")],
            "cannot copy a directory to a file",
        ),
        (
            vec!["box:/app/a".into(), at("missing-dir/")],
            "no such directory",
        ),
        (vec![at("renamed"), at("elsewhere")], "CONTAINER:PATH"),
        (
            vec!["nobox:/app".into(), at("x")],
            "no such container: nobox",
        ),
    ] {
        let mut all = vec!["cp"];
        all.extend(args.iter().map(String::as_str));
        let failed = cp(&all);
        assert_eq!(failed.status.code(), Some(1), "{all:?}");
        let stderr = text(&failed.stderr);
        assert!(stderr.contains(message), "{all:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }

    // Into the container: into a directory, to a new name, a directory;
    // owned by root without -a.
    let local = work.join("local");
    fs::create_dir_all(local.join("tree/deep")).unwrap();
    fs::write(local.join("tree/deep/f"), "deep\n").unwrap();
    fs::write(local.join("note"), "note\n").unwrap();
    std::os::unix::fs::chown(local.join("note"), Some(4321), Some(4321)).unwrap();
    ok(cp(&[
        "cp",
        local.join("note").to_str().unwrap(),
        "box:/app/",
    ]));
    ok(cp(&[
        "cp",
        local.join("note").to_str().unwrap(),
        "box:/app/note2",
    ]));
    ok(cp(&[
        "cp",
        "-a",
        local.join("note").to_str().unwrap(),
        "box:/app/note3",
    ]));
    ok(cp(&[
        "cp",
        local.join("tree").to_str().unwrap(),
        "box:/tree-copy",
    ]));
    assert_eq!(
        exec(
            root,
            "box",
            "cat /app/note /app/note2 /tree-copy/deep/f; stat -c %u /app/note /app/note3"
        ),
        "note\nnote\ndeep\n0\n4321\n"
    );

    // Tar streams: out to stdout, in from stdin.
    let streamed = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--root")
        .arg(root)
        .args(["cp", "box:/app/sub", "-"])
        .output()
        .unwrap();
    let mut names: Vec<String> = tar::Archive::new(&streamed.stdout[..])
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["sub/", "sub/b"]);
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(4);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, "from-stdin", &b"tar\n"[..])
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--root")
        .arg(root)
        .args(["cp", "-", "box:/app"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&tar.into_inner().unwrap())
        .unwrap();
    ok(child.wait_with_output().unwrap());
    assert_eq!(exec(root, "box", "cat /app/from-stdin"), "tar\n");

    // A stopped container: its own rw layer, both ways; it sees the copy
    // when started again.
    ok(kiln(root, &["stop", "-t", "0", "box"]));
    ok(cp(&[
        "cp",
        local.join("note").to_str().unwrap(),
        "box:/while-stopped",
    ]));
    ok(cp(&["cp", "box:/app/note2", &at("from-stopped")]));
    assert_eq!(
        fs::read_to_string(out.join("from-stopped")).unwrap(),
        "note\n"
    );
    ok(kiln(root, &["start", "box"]));
    wait_for("the restart", || {
        kiln(root, &["exec", "box", "cat", "/while-stopped"])
            .status
            .success()
    });
    assert_eq!(exec(root, "box", "cat /while-stopped"), "note\n");
    ok(kiln(root, &["rm", "-f", "box"]));
}

/// Threat: the container's files are the attacker's. Its links resolve
/// inside it (never to the host's files), what it planted at a
/// destination is replaced rather than written through, and a hostile
/// tar stays inside the destination.
#[test]
fn a_containers_links_fifos_and_hostile_tars_never_reach_the_host() {
    let store = common::busybox_workspace();
    let (root, work) = (&store.root, &store.work);
    // Host files at absolute paths the container knows, and the same paths
    // made inside the container with other contents.
    let host_dir = work.join("host-secrets");
    fs::create_dir(&host_dir).unwrap();
    let host_file = host_dir.join("secret");
    fs::write(&host_file, "HOST\n").unwrap();
    let hd = host_dir.display();
    let hf = host_file.display();
    running(
        root,
        "evil",
        &format!(
            "mkdir -p {hd} /app && echo CONTAINER > {hf} && \
             ln -s {hf} /app/link-to-file && ln -s {hd} /app/link-to-dir && \
             ln -s ../../../../../../../../{hf} /app/dotdot && \
             ln -s ../../../../../../../../{hf} /app/kept-link && mkfifo /app/fifo && \
             ln -s /app/fifo /app/to-fifo"
        ),
    );
    let cp = |args: &[&str]| kiln(root, args);
    let payload = work.join("payload");
    fs::write(&payload, "PAYLOAD\n").unwrap();
    let payload = payload.to_str().unwrap();

    // In, through a link to a file, to a dir, with `..`: the container's
    // paths are written (or the link replaced), never the host's.
    ok(cp(&["cp", payload, "evil:/app/link-to-file"]));
    ok(cp(&["cp", payload, "evil:/app/link-to-dir"]));
    ok(cp(&["cp", payload, "evil:/app/dotdot"]));
    assert_eq!(fs::read_to_string(&host_file).unwrap(), "HOST\n");
    assert_eq!(
        fs::read_dir(&host_dir).unwrap().count(),
        1,
        "nothing new on the host"
    );
    assert_eq!(
        exec(
            root,
            "evil",
            &format!(
                "cat /app/link-to-file /app/dotdot; ls {hd}; cat {hf}; \
                 test -L /app/link-to-file || echo replaced"
            )
        ),
        "PAYLOAD\nPAYLOAD\npayload\nsecret\nCONTAINER\nreplaced\n"
    );

    // A fifo (and a link to it) at the destination is replaced, not
    // opened: a write through it would block this cp for ever.
    let started = Instant::now();
    let mut child = Command::new("timeout")
        .args([
            "30",
            env!("CARGO_BIN_EXE_kiln"),
            "--root",
            root.to_str().unwrap(),
            "cp",
            payload,
            "evil:/app/to-fifo",
        ])
        .spawn()
        .unwrap();
    assert!(child.wait().unwrap().success());
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(
        exec(
            root,
            "evil",
            "test -p /app/fifo && echo still-a-fifo; cat /app/to-fifo"
        ),
        "still-a-fifo\nPAYLOAD\n"
    );
    let status = Command::new("timeout")
        .args([
            "30",
            env!("CARGO_BIN_EXE_kiln"),
            "--root",
            root.to_str().unwrap(),
            "cp",
            payload,
            "evil:/app/fifo",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(
        exec(root, "evil", "test -f /app/fifo && cat /app/fifo"),
        "PAYLOAD\n"
    );

    // Out: links come as links; -L follows inside the container (its
    // file, not the host's at the same path).
    let out = work.join("out");
    fs::create_dir(&out).unwrap();
    ok(cp(&[
        "cp",
        "evil:/app/kept-link",
        out.join("link").to_str().unwrap(),
    ]));
    assert!(fs::symlink_metadata(out.join("link"))
        .unwrap()
        .file_type()
        .is_symlink());
    ok(kiln(
        root,
        &[
            "exec",
            "evil",
            "sh",
            "-c",
            &format!("echo CONTAINER > {hf}; ln -s {hf} /app/again"),
        ],
    ));
    ok(cp(&[
        "cp",
        "-L",
        "evil:/app/again",
        out.join("followed").to_str().unwrap(),
    ]));
    assert_eq!(
        fs::read_to_string(out.join("followed")).unwrap(),
        "CONTAINER\n"
    );

    // A hostile tar on stdin: `..`, absolute names and a link then a file
    // through it stay inside the destination (or are refused).
    let escape = work.join("escaped-by-tar");
    let entries: Vec<(String, &[u8])> = vec![
        (format!("../../../../../../../..{}", escape.display()), b"x"),
        (escape.display().to_string(), b"x"),
    ];
    let entries: Vec<(&str, &[u8])> = entries.iter().map(|(n, b)| (n.as_str(), *b)).collect();
    let mut tar = common::raw_tar(&entries, 0o644);
    // A symlink `up -> /` and then `up/<host path>`.
    let mut builder = tar::Builder::new(Vec::new());
    let mut link = tar::Header::new_gnu();
    link.set_entry_type(tar::EntryType::Symlink);
    link.set_size(0);
    link.set_mode(0o777);
    builder.append_link(&mut link, "up", "/").unwrap();
    let mut file = tar::Header::new_gnu();
    file.set_size(1);
    file.set_mode(0o644);
    file.set_cksum();
    let through = format!("up{}", escape.display());
    builder.append_data(&mut file, &through, &b"x"[..]).unwrap();
    tar.truncate(tar.len() - 1024); // raw_tar's end blocks
    tar.extend(builder.into_inner().unwrap());
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--root")
        .arg(root)
        .args(["cp", "-", "evil:/app"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&tar).unwrap();
    let _ = child.wait_with_output().unwrap();
    assert!(!escape.exists(), "a tar entry reached the host");
    ok(kiln(root, &["rm", "-f", "evil"]));
}

/// The entries of a tar: (name, kind, content or link target).
fn tar_entries(bytes: &[u8]) -> Vec<(String, tar::EntryType, Vec<u8>)> {
    use std::io::Read;
    let mut archive = tar::Archive::new(bytes);
    archive
        .entries()
        .unwrap()
        .map(|entry| {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().to_string_lossy().into_owned();
            let kind = entry.header().entry_type();
            let mut data = Vec::new();
            if kind.is_symlink() {
                data = entry.link_name_bytes().unwrap().into_owned();
            } else {
                entry.read_to_end(&mut data).unwrap();
            }
            (name, kind, data)
        })
        .collect()
}

#[test]
fn export_writes_the_containers_layers_without_its_mounts() {
    let store = common::busybox_workspace();
    let root = &store.root;
    // A named volume at /data.
    running_with(
        root,
        "ex",
        &["-v", "exported:/data"],
        "echo made > /made; rm /bin/ls; echo inside > /data/inside; \
         ln -s /etc/shadow /leak; mkfifo /pipe",
    );
    let live = store.work.join("live.tar");
    ok(kiln(root, &["export", "-o", live.to_str().unwrap(), "ex"]));
    let entries = tar_entries(&fs::read(&live).unwrap());
    let find = |name: &str| {
        entries
            .iter()
            .find(|(n, _, _)| n.trim_end_matches('/') == name)
    };
    assert_eq!(find("made").unwrap().2, b"made\n");
    assert!(find("bin/sh").is_some(), "the image's files");
    assert!(find("bin/ls").is_none(), "a file the container removed");
    let leak = find("leak").unwrap();
    assert!(leak.1.is_symlink(), "a link stays a link");
    assert_eq!(leak.2, b"/etc/shadow");
    assert!(find("pipe").unwrap().1 == tar::EntryType::Fifo);
    assert!(
        find("data/inside").is_none(),
        "a volume's files are not the container's"
    );
    assert!(
        !entries
            .iter()
            .any(|(n, _, _)| n.starts_with("proc/") && n.len() > 5),
        "nothing of /proc"
    );
    let names: Vec<&String> = entries.iter().map(|(n, _, _)| n).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "entries in order");

    // Stopped, the same files; to standard output as well.
    ok(kiln(root, &["stop", "-t", "0", "ex"]));
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--root")
        .arg(root)
        .args(["export", "ex"])
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stopped: Vec<String> = tar_entries(&out.stdout).into_iter().map(|e| e.0).collect();
    let live_names: Vec<String> = entries.into_iter().map(|e| e.0).collect();
    assert_eq!(stopped, live_names);
    let missing = kiln(root, &["export", "no-such-container"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(text(&missing.stderr).contains("no-such-container"));
}
