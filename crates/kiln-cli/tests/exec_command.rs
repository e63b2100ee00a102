//! `kiln exec` into a running busybox container: the process joins the
//! container (its namespaces, cgroups, root, confinement), exit codes are
//! docker's, `-u -w -e -i -t -d` do what docker's do, and nothing of kiln
//! is left visible in, or running after, the container.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{kiln, ok, text};

fn store() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = common::busybox_store(dir.path());
    (dir, root)
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A detached container `name` (run with `flags`) that has written
/// /ready and sleeps.
fn running(root: &Path, name: &str, flags: &[&str]) {
    let mut args = vec!["run", "-d", "--network", "none", "--name", name];
    args.extend(flags);
    args.extend(["busybox", "sh", "-c", "echo up > /ready; exec sleep 600"]);
    ok(kiln(root, &args));
    wait_for("the container to be up", || {
        kiln(root, &["exec", name, "cat", "/ready"])
            .status
            .success()
    });
}

/// The pids of the processes whose command line is exactly `words`.
fn processes(words: &[&str]) -> Vec<u32> {
    let wanted: Vec<u8> = words
        .iter()
        .flat_map(|w| [w.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).ok() == Some(wanted.clone()))
        .collect()
}

#[test]
fn exec_runs_inside_the_container_with_its_confinement() {
    let (_dir, root) = store();
    running(
        &root,
        "box",
        &[
            "--cap-drop",
            "NET_RAW",
            "--pids-limit",
            "50",
            "-e",
            "FROM_RUN=1",
        ],
    );

    // Its root and changes: the file the container wrote; its hostname
    // and environment; the container's pid namespace, where kiln's
    // joining process (the exec'd command's parent) is not visible.
    let out = ok(kiln(
        &root,
        &[
            "exec",
            "-e",
            "FROM_EXEC=2",
            "box",
            "sh",
            "-c",
            "cat /ready; hostname; echo run=$FROM_RUN exec=$FROM_EXEC; \
             echo pid=$$ ppid=$PPID; cat /proc/1/cmdline | tr '\\0' ' '; echo; \
             cd /proc && echo *",
        ],
    ));
    let inspect: serde_json::Value =
        serde_json::from_str(&ok(kiln(&root, &["inspect", "box"]))).unwrap();
    let id = inspect[0]["Id"].as_str().unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "up", "{out}");
    assert_eq!(lines[1], &id[..12], "{out}");
    assert_eq!(lines[2], "run=1 exec=2", "{out}");
    assert!(lines[3].ends_with("ppid=0"), "the parent is outside: {out}");
    assert_eq!(lines[4], "sleep 600 ", "{out}");
    // Only sleep (1) and this shell: nothing of kiln.
    let pids: Vec<&str> = lines[5]
        .split(' ')
        .filter(|name| name.bytes().all(|b| b.is_ascii_digit()))
        .collect();
    assert_eq!(pids.len(), 2, "{out}");
    assert_eq!(pids[0], "1", "{out}");

    // The container's capabilities (NET_RAW dropped), seccomp filter and
    // cgroups; --privileged gives every capability and no filter.
    let status = |flags: &[&str], pid: &str| {
        let mut args = flags.to_vec();
        let file = format!("/proc/{pid}/status");
        let cgroup = format!("/proc/{pid}/cgroup");
        args.extend(["box", "sh", "-c"]);
        let script = format!("grep -E '^(CapBnd|CapEff|Seccomp):' {file}; cat {cgroup}");
        args.push(&script);
        ok(kiln(&root, &args))
    };
    let of_init = status(&["exec"], "1");
    let of_exec = status(&["exec"], "self");
    assert_eq!(of_exec, of_init);
    assert!(of_exec.contains("Seccomp:\t2"), "{of_exec}");
    let bounding = of_exec.lines().find(|l| l.starts_with("CapBnd:")).unwrap();
    let caps = u64::from_str_radix(bounding.rsplit('\t').next().unwrap(), 16).unwrap();
    assert_eq!(caps & (1 << 13), 0, "NET_RAW stays dropped: {of_exec}");
    assert_ne!(caps & (1 << 0), 0, "CHOWN stays: {of_exec}");
    assert!(of_exec.contains("pids:/"), "{of_exec}");
    let privileged = status(&["exec", "--privileged"], "self");
    assert!(privileged.contains("Seccomp:\t0"), "{privileged}");
    let all = privileged
        .lines()
        .find(|l| l.starts_with("CapEff:"))
        .unwrap();
    assert!(
        all.ends_with("ffffffff") || all.ends_with("ffffff"),
        "{privileged}"
    );

    // -u and -w as docker's, the user resolved in the container's files
    // (a user the container itself added counts).
    ok(kiln(
        &root,
        &[
            "exec",
            "box",
            "sh",
            "-c",
            "echo 'app:x:1234:1234::/home/app:/bin/sh' >> /etc/passwd; mkdir -p /work",
        ],
    ));
    assert_eq!(
        ok(kiln(
            &root,
            &[
                "exec",
                "-u",
                "app",
                "-w",
                "/work",
                "box",
                "sh",
                "-c",
                "id -u; pwd"
            ]
        )),
        "1234\n/work\n"
    );
    assert_eq!(
        ok(kiln(&root, &["exec", "-u", "nobody", "box", "id", "-un"])),
        "nobody\n"
    );
    // --env-file as run's; docker's group spelling.
    let env_file = root.with_file_name("exec.env");
    std::fs::write(&env_file, "# a comment\nFROM_FILE=3\n").unwrap();
    let env_file = env_file.to_str().unwrap();
    assert_eq!(
        ok(kiln(
            &root,
            &[
                "container",
                "exec",
                "--env-file",
                env_file,
                "box",
                "sh",
                "-c",
                "echo $FROM_FILE"
            ]
        )),
        "3\n"
    );

    // Exit codes: the command's own; 126 when it cannot be started (as
    // docker's exec), with one clear line.
    let failed = kiln(&root, &["exec", "box", "sh", "-c", "exit 7"]);
    assert_eq!(failed.status.code(), Some(7));
    let missing = kiln(&root, &["exec", "box", "no-such-command"]);
    assert_eq!(missing.status.code(), Some(126));
    assert!(
        text(&missing.stderr).contains("\"no-such-command\": executable file not found in $PATH"),
        "{}",
        text(&missing.stderr)
    );
    let no_dir = kiln(&root, &["exec", "-w", "/nowhere", "box", "true"]);
    assert_eq!(no_dir.status.code(), Some(126));
    assert!(
        text(&no_dir.stderr).contains("/nowhere"),
        "{}",
        text(&no_dir.stderr)
    );

    // -i: our stdin; without it, /dev/null.
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--root")
        .arg(&root)
        .args(["exec", "-i", "box", "tr", "a-z", "A-Z"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"piped in\n")
        .unwrap();
    assert_eq!(ok(child.wait_with_output().unwrap()), "PIPED IN\n");

    // -t under a real terminal: a new pty of the container's devpts, of
    // our size, with TERM=xterm.
    let kiln_cmd = format!("{} --root {}", env!("CARGO_BIN_EXE_kiln"), root.display());
    let on_a_tty = [
        "exec",
        "-t",
        "box",
        "sh",
        "-c",
        "test -t 0 && test -t 1 && echo tty-ok; stty size; tty; echo term=$TERM",
    ];
    let quoted: Vec<String> = on_a_tty.iter().map(|a| format!("'{a}'")).collect();
    let out = Command::new("timeout")
        .args(["60", "script", "-qec"])
        .arg(format!(
            "stty rows 33 cols 91; {kiln_cmd} {}",
            quoted.join(" ")
        ))
        .arg("/dev/null")
        .stdin(Stdio::piped())
        .output()
        .unwrap();
    let out = text(&out.stdout);
    for expected in ["tty-ok", "33 91", "/dev/pts/", "term=xterm"] {
        assert!(out.contains(expected), "{expected:?} missing in {out:?}");
    }
    // -it: an interactive shell in the container, our terminal raw while
    // attached (the shell's line editing sees each key) and cooked again
    // after.
    let interactive = ["exec", "-it", "box", "sh"];
    let quoted: Vec<String> = interactive.iter().map(|a| format!("'{a}'")).collect();
    let mut child = Command::new("timeout")
        .args(["60", "script", "-qec"])
        .arg(format!(
            "{kiln_cmd} {}; echo rc=$?; stty -a",
            quoted.join(" ")
        ))
        .arg("/dev/null")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input
        .write_all(b"cat /ready; echo hi-$((6*7))\rexit 4\r")
        .unwrap();
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
    child.wait().unwrap();
    drop(input);
    assert!(out.contains("up") && out.contains("hi-42"), "{out:?}");
    assert!(out.contains("rc=4"), "{out:?}");
    assert!(
        out.contains(" icanon") && !out.contains("-icanon") && out.contains(" echo "),
        "the terminal is back in cooked mode: {out:?}"
    );

    // A container that is not running is refused.
    ok(kiln(&root, &["stop", "-t", "0", "box"]));
    let stopped = kiln(&root, &["exec", "box", "true"]);
    assert_eq!(stopped.status.code(), Some(1));
    assert!(
        text(&stopped.stderr).contains("is not running"),
        "{}",
        text(&stopped.stderr)
    );
    ok(kiln(&root, &["rm", "box"]));
}

#[test]
fn an_exec_ends_with_its_kiln_and_with_its_container_and_d_detaches() {
    let (_dir, root) = store();
    running(&root, "svc", &[]);
    let start = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_kiln"))
            .arg("--root")
            .arg(&root)
            .args(args)
            .stdout(Stdio::null())
            .spawn()
            .unwrap()
    };

    // kiln exec killed with SIGKILL (no chance to clean up): the process
    // it ran in the container dies with it.
    let mut exec = start(&["exec", "svc", "sleep", "401"]);
    wait_for("the exec'd sleep", || {
        !processes(&["sleep", "401"]).is_empty()
    });
    exec.kill().unwrap();
    exec.wait().unwrap();
    wait_for("the exec'd sleep to die with kiln", || {
        processes(&["sleep", "401"]).is_empty()
    });

    // A terminating signal to kiln exec reaches the process (its exit
    // code is then kiln's: 128 + SIGTERM).
    let exec = start(&[
        "exec",
        "svc",
        "sh",
        "-c",
        "trap 'exit 42' TERM; sleep 402 & wait",
    ]);
    wait_for("the exec'd sleep", || {
        !processes(&["sleep", "402"]).is_empty()
    });
    common::send_signal(exec.id(), "TERM");
    let status = exec.wait_with_output().unwrap().status;
    assert_eq!(status.code(), Some(42));

    // -d returns at once; the process runs on, and ends with its
    // container.
    let detached = kiln(&root, &["exec", "-d", "svc", "sleep", "403"]);
    assert!(detached.status.success(), "{}", text(&detached.stderr));
    wait_for("the detached sleep", || {
        !processes(&["sleep", "403"]).is_empty()
    });
    ok(kiln(&root, &["stop", "-t", "0", "svc"]));
    wait_for("the detached sleep to end with the container", || {
        processes(&["sleep", "403"]).is_empty()
    });
    ok(kiln(&root, &["rm", "svc"]));
}
