//! `kiln run` and the container commands on a busybox image: Docker's
//! ENTRYPOINT/CMD rules and flags, exit codes, signals passed on, and the
//! life of a kept container (`-d`, `ps`, `logs`, `stop`, `start`, `commit`,
//! `rm`).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{kiln, ok, text};

fn store() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = common::busybox_store(dir.path());
    (dir, root)
}

#[test]
fn flags_and_the_entrypoint_rules() {
    let (dir, root) = store();
    let context = dir.path().join("ctx");
    fs::create_dir_all(&context).unwrap();
    fs::write(
        context.join("Dockerfile"),
        "FROM busybox\nENV GREETING=hi\nWORKDIR /srv\nENTRYPOINT [\"echo\", \"entry\"]\nCMD [\"default\"]\n",
    )
    .unwrap();
    ok(kiln(
        &root,
        &["build", "-t", "ep", context.to_str().unwrap()],
    ));
    let run = |args: &[&str]| {
        let mut all = vec!["run", "--rm"];
        all.extend_from_slice(args);
        kiln(&root, &all)
    };
    assert_eq!(ok(run(&["ep"])), "entry default\n");
    assert_eq!(ok(run(&["ep", "given"])), "entry given\n");
    assert_eq!(ok(run(&["--entrypoint", "pwd", "ep"])), "/srv\n");
    assert_eq!(
        ok(run(&[
            "--entrypoint",
            "",
            "-e",
            "GREETING=hello",
            "-w",
            "/tmp",
            "ep",
            "sh",
            "-c",
            "echo $GREETING $(pwd)"
        ])),
        "hello /tmp\n"
    );
    assert_eq!(ok(run(&["-u", "nobody", "busybox", "id", "-u"])), "65534\n");
    // --group-add: by number or by the image's group name.
    let groups = ok(run(&[
        "--group-add",
        "1000",
        "--group-add",
        "nogroup",
        "busybox",
        "id",
        "-G",
    ]));
    let groups: Vec<&str> = groups.split_whitespace().collect();
    assert!(
        groups.contains(&"1000") && groups.contains(&"65534"),
        "{groups:?}"
    );
    let unknown = kiln(
        &root,
        &[
            "run",
            "--rm",
            "--group-add",
            "wheel-of-fortune",
            "busybox",
            "true",
        ],
    );
    assert_eq!(unknown.status.code(), Some(1));
    assert!(
        text(&unknown.stderr).contains("wheel-of-fortune"),
        "{}",
        text(&unknown.stderr)
    );
    assert_eq!(
        ok(run(&["--hostname", "box", "busybox", "hostname"])),
        "box\n"
    );
    let net = ok(run(&[
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        "tail -n +3 /proc/net/dev | cut -d: -f1",
    ]));
    assert_eq!(net.trim(), "lo");
    // A read-only bind of a host directory.
    let shared = dir.path().join("shared");
    fs::create_dir_all(&shared).unwrap();
    fs::write(shared.join("note"), "from the host\n").unwrap();
    let volume = format!("{}:/mnt/shared:ro", shared.display());
    assert_eq!(
        ok(run(&["-v", &volume, "busybox", "cat", "/mnt/shared/note"])),
        "from the host\n"
    );
    let out = run(&["-v", &volume, "busybox", "touch", "/mnt/shared/x"]);
    assert_eq!(out.status.code(), Some(1), "read-only");
    // Exit codes come through; a missing command is an error.
    assert_eq!(
        run(&["busybox", "sh", "-c", "exit 42"]).status.code(),
        Some(42)
    );
    let missing = run(&["busybox", "no-such-program"]);
    assert_ne!(missing.status.code(), Some(0));
    assert!(
        text(&missing.stderr).contains("no-such-program"),
        "{}",
        text(&missing.stderr)
    );
}

#[test]
fn everything_after_the_image_belongs_to_the_command() {
    let (dir, root) = store();
    // An image whose entrypoint prints its arguments, like `node` would
    // read `-e CODE`.
    let context = dir.path().join("ctx");
    fs::create_dir_all(&context).unwrap();
    fs::write(
        context.join("Dockerfile"),
        "FROM busybox\nENTRYPOINT [\"sh\", \"-c\", \"printf '%s ' \\\"$@\\\"\", \"sh\"]\n",
    )
    .unwrap();
    ok(kiln(
        &root,
        &["build", "-t", "args", context.to_str().unwrap()],
    ));
    // -e, -v, -w and --rm right after the image are the command's, as with
    // docker, never kiln's own flags.
    let out = ok(kiln(
        &root,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "args",
            "-e",
            "X=1",
            "-v",
            "/:/host",
            "-w",
            "/tmp",
            "--rm",
        ],
    ));
    assert_eq!(out, "-e X=1 -v /:/host -w /tmp --rm ");
    // Flags before the image are still kiln's.
    let out = ok(kiln(
        &root,
        &["run", "--rm", "-e", "X=1", "busybox", "sh", "-c", "echo $X"],
    ));
    assert_eq!(out, "1\n");
}

#[test]
fn a_terminating_signal_reaches_the_command() {
    let (_dir, root) = store();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--root")
        .arg(&root)
        .args([
            "run",
            "--rm",
            "busybox",
            "sh",
            "-c",
            "trap 'echo got-term; exit 3' TERM; echo ready; while true; do sleep 0.1; done",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    assert_eq!(line, "ready\n");
    common::send_signal(child.id(), "TERM");
    let status = child.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert_eq!(rest, "got-term\n");
    assert_eq!(status.code(), Some(3));
}

/// As in Docker, the command is PID 1 of the container; `--init` puts
/// kiln's init there (named `kiln-init`, showing nothing of kiln's command
/// line) and the command below it.
#[test]
fn the_command_is_pid_1_unless_init() {
    let (_dir, root) = store();
    let run = |extra: &[&str], script: &str| {
        let mut args = vec!["run", "--rm", "--network", "none"];
        args.extend_from_slice(extra);
        args.extend(["busybox", "sh", "-c", script]);
        ok(kiln(&root, &args))
    };
    assert_eq!(run(&[], "echo $$"), "1\n");
    let script = "echo $$; tr '\\0' ' ' < /proc/1/cmdline; echo";
    let out = run(&[], script);
    assert_eq!(out, format!("1\nsh -c {script} \n"));
    let out = run(&["--init"], script);
    let lines: Vec<&str> = out.lines().collect();
    assert_ne!(lines[0], "1", "{out}");
    assert!(lines[0].parse::<u32>().is_ok(), "{out}");
    assert_eq!(lines[1], "kiln-init ", "{out}");
}

/// `kiln stop` ends a container whose pid 1 does not die of SIGTERM (no
/// handler, or the signal ignored): SIGKILL after the grace, 137. Under
/// `--init` the init passes SIGTERM on to the command, which dies of it.
#[test]
fn stop_ends_a_pid_1_that_ignores_sigterm() {
    let (_dir, root) = store();
    let cases: [(&[&str], &[&str], &str); 3] = [
        (&[], &["sleep", "1000"], "Exited (137)"),
        (
            &[],
            &["sh", "-c", "trap '' TERM; sleep 1000"],
            "Exited (137)",
        ),
        (&["--init"], &["sleep", "1000"], "Exited (143)"),
    ];
    for (extra, command, expected) in cases {
        let mut args = vec!["run", "-d", "--network", "none"];
        args.extend_from_slice(extra);
        args.push("busybox");
        args.extend_from_slice(command);
        let id = ok(kiln(&root, &args));
        let id = id.trim();
        let started = Instant::now();
        ok(kiln(&root, &["stop", "-t", "1", id]));
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{command:?}: stop took {:?}",
            started.elapsed()
        );
        let ps = ok(kiln(&root, &["ps", "-a"]));
        let line = ps.lines().find(|l| id.starts_with(&l[..12])).unwrap();
        assert!(line.contains(expected), "{extra:?} {command:?}: {line}");
        ok(kiln(&root, &["rm", id]));
    }
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn kept_containers_live_stop_start_commit_and_go() {
    let (_dir, root) = store();
    let id = ok(kiln(
        &root,
        &[
            "run",
            "-d",
            "--name",
            "svc",
            "busybox",
            "sh",
            "-c",
            "echo up >> /state; cat /state; sleep 30",
        ],
    ));
    assert_eq!(id.trim().len(), 64);
    wait_for("the first output", || {
        ok(kiln(&root, &["logs", "svc"])) == "up\n"
    });
    let ps = ok(kiln(&root, &["ps"]));
    assert!(ps.contains("svc") && ps.contains(" Up "), "{ps}");

    // Renamed while it runs: the monitor's record of the exit keeps the
    // new name; a name in use or outside Docker's grammar is refused.
    ok(kiln(&root, &["rename", "svc", "service"]));
    let other = ok(kiln(
        &root,
        &["run", "-d", "--name", "taken", "busybox", "true"],
    ));
    let taken = kiln(&root, &["rename", "service", "taken"]);
    assert_eq!(taken.status.code(), Some(1));
    assert!(
        text(&taken.stderr).contains("already in use"),
        "{}",
        text(&taken.stderr)
    );
    let bad = kiln(&root, &["rename", "service", "no/slash"]);
    assert_eq!(bad.status.code(), Some(1));
    ok(kiln(&root, &["rm", "-f", other.trim()]));
    ok(kiln(&root, &["stop", "-t", "1", "service"]));
    let names = ok(kiln(&root, &["ps", "-a", "--format", "{{.Names}}"]));
    assert_eq!(
        names, "service\n",
        "the exit was recorded on the renamed record"
    );
    ok(kiln(&root, &["rename", "service", "svc"]));
    let ps = ok(kiln(&root, &["ps", "-a"]));
    // The command is pid 1 (busybox's sh execs its last command, sleep)
    // with no SIGTERM handler, so SIGTERM does nothing and SIGKILL ends
    // it after the grace, as with Docker.
    assert!(ps.contains("Exited (137)"), "SIGKILL ended it: {ps}");
    assert!(!ok(kiln(&root, &["ps"])).contains("svc"));

    // Started again on the same rw layer: the file it wrote is still there.
    ok(kiln(&root, &["start", "svc"]));
    wait_for("the second run", || {
        ok(kiln(&root, &["logs", "svc"])) == "up\nup\nup\n"
    });
    ok(kiln(&root, &["stop", "-t", "1", "svc"]));

    let digest = ok(kiln(&root, &["commit", "svc", "with-state"]));
    assert!(digest.starts_with("sha256:"));
    assert_eq!(
        ok(kiln(&root, &["run", "--rm", "with-state", "cat", "/state"])),
        "up\nup\n"
    );

    let busy = ok(kiln(&root, &["run", "-d", "busybox", "sleep", "30"]));
    let refused = kiln(&root, &["rm", busy.trim()]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(text(&refused.stderr).contains("is running"));
    ok(kiln(&root, &["rm", "-f", busy.trim()]));
    ok(kiln(&root, &["rm", "svc"]));
    assert_eq!(ok(kiln(&root, &["ps", "-a", "-q"])), "");
    assert!(fs::read_dir(root.join("kiln/containers"))
        .unwrap()
        .next()
        .is_none());
}

#[test]
fn pause_freezes_every_process_until_unpause_and_stop_still_ends_it() {
    let (_dir, root) = store();
    // Two processes: pid 1 and a ticker it started.
    ok(kiln(
        &root,
        &[
            "run",
            "-d",
            "--name",
            "ticker",
            "busybox",
            "sh",
            "-c",
            "(while true; do echo tick; sleep 0.05; done) & wait",
        ],
    ));
    let ticks = || ok(kiln(&root, &["logs", "ticker"])).lines().count();
    wait_for("the first ticks", || ticks() > 2);
    assert_eq!(ok(kiln(&root, &["pause", "ticker"])), "ticker\n");
    let ps = ok(kiln(&root, &["ps"]));
    assert!(ps.contains("(Paused)"), "{ps}");
    let names = |filters: &[&str]| {
        let mut args = vec!["ps", "--format", "{{.Names}}"];
        for filter in filters {
            args.extend(["--filter", filter]);
        }
        ok(kiln(&root, &args))
    };
    assert_eq!(names(&["status=paused"]), "ticker\n");
    assert_eq!(names(&["status=running"]), "");
    let frozen_at = ticks();
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(ticks(), frozen_at, "a paused container printed on");

    let twice = kiln(&root, &["pause", "ticker"]);
    assert_eq!(twice.status.code(), Some(1));
    assert!(
        text(&twice.stderr).contains("already paused"),
        "{}",
        text(&twice.stderr)
    );
    let exec = kiln(&root, &["exec", "ticker", "true"]);
    assert_ne!(exec.status.code(), Some(0));
    assert!(
        text(&exec.stderr).contains("is paused"),
        "{}",
        text(&exec.stderr)
    );

    assert_eq!(ok(kiln(&root, &["unpause", "ticker"])), "ticker\n");
    wait_for("ticks after the unpause", || ticks() > frozen_at + 2);
    let not_paused = kiln(&root, &["unpause", "ticker"]);
    assert_eq!(not_paused.status.code(), Some(1));
    assert!(text(&not_paused.stderr).contains("not paused"));

    // Stopping a paused container thaws it after the signal, as Docker.
    ok(kiln(&root, &["pause", "ticker"]));
    ok(kiln(&root, &["stop", "-t", "1", "ticker"]));
    let ps = ok(kiln(&root, &["ps", "-a"]));
    assert!(ps.contains("Exited (137)"), "{ps}");
    // Filters: a status shows stopped ones without -a (an exit code does
    // not, as Docker's); values of one key are alternatives, keys must
    // all hold.
    assert_eq!(names(&["status=exited"]), "ticker\n");
    assert_eq!(names(&["exited=137"]), "");
    assert_eq!(
        names(&["status=exited", "exited=137", "name=^tick"]),
        "ticker\n"
    );
    assert_eq!(names(&["status=exited", "exited=0"]), "");
    assert_eq!(names(&["status=exited", "name=other"]), "");
    assert_eq!(
        names(&["status=exited", "name=other", "name=ker$"]),
        "ticker\n"
    );
    assert_eq!(names(&["status=exited", "ancestor=busybox"]), "ticker\n");
    assert_eq!(names(&["status=exited", "ancestor=alpine"]), "");
    let bad = kiln(&root, &["ps", "--filter", "status=sleeping"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        text(&bad.stderr).contains("status=sleeping"),
        "{}",
        text(&bad.stderr)
    );
    let stopped = kiln(&root, &["pause", "ticker"]);
    assert!(text(&stopped.stderr).contains("is not running"));
    ok(kiln(&root, &["rm", "ticker"]));
}

#[test]
fn restart_policies_start_it_again_until_stopped_by_hand() {
    let (_dir, root) = store();
    let inspect = |name: &str, template: &str| ok(kiln(&root, &["inspect", "-f", template, name]));
    // on-failure:2: the first run and two restarts, then exited for good.
    ok(kiln(
        &root,
        &[
            "run",
            "-d",
            "--name",
            "flaky",
            "--restart",
            "on-failure:2",
            "busybox",
            "sh",
            "-c",
            "echo run; exit 3",
        ],
    ));
    wait_for("the last restart", || {
        inspect("flaky", "{{.State.Status}} {{.RestartCount}}") == "exited 2\n"
    });
    assert_eq!(ok(kiln(&root, &["logs", "flaky"])), "run\nrun\nrun\n");
    assert_eq!(
        inspect("flaky", "{{.HostConfig.RestartPolicy.Name}} {{.HostConfig.RestartPolicy.MaximumRetryCount}} {{.State.ExitCode}}"),
        "on-failure 2 3\n"
    );

    // always: again and again, whatever the code; rm refuses it (running
    // or restarting) until it is stopped, and stop ends it for good.
    ok(kiln(
        &root,
        &[
            "run",
            "-d",
            "--name",
            "loop",
            "--restart",
            "always",
            "busybox",
            "sh",
            "-c",
            "echo up",
        ],
    ));
    wait_for("two restarts", || {
        inspect("loop", "{{.RestartCount}}")
            .trim()
            .parse::<u32>()
            .unwrap()
            >= 2
    });
    let ps = ok(kiln(&root, &["ps", "--format", "{{.Names}}"]));
    assert!(
        ps.contains("loop"),
        "a restarting container is listed: {ps}"
    );
    let refused = kiln(&root, &["rm", "loop"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        text(&refused.stderr).contains("stop the container before"),
        "{}",
        text(&refused.stderr)
    );
    ok(kiln(&root, &["stop", "-t", "1", "loop"]));
    let runs = ok(kiln(&root, &["logs", "loop"])).lines().count();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        ok(kiln(&root, &["logs", "loop"])).lines().count(),
        runs,
        "started again after a stop"
    );
    assert_eq!(inspect("loop", "{{.State.Status}}"), "exited\n");
    ok(kiln(&root, &["rm", "loop"]));

    let both = kiln(
        &root,
        &["run", "--rm", "--restart", "always", "busybox", "true"],
    );
    assert_eq!(both.status.code(), Some(1));
    assert!(text(&both.stderr).contains("--restart"));
    let bad = kiln(&root, &["run", "--restart", "always:3", "busybox", "true"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        text(&bad.stderr).contains("retry count"),
        "{}",
        text(&bad.stderr)
    );
}

#[test]
fn health_checks_probe_the_container_and_say_what_they_found() {
    let (dir, root) = store();
    let inspect = |name: &str, template: &str| ok(kiln(&root, &["inspect", "-f", template, name]));
    let run = |name: &str, flags: &[&str], script: &str| {
        let mut args = vec!["run", "-d", "--name", name];
        args.extend_from_slice(flags);
        args.extend(["busybox", "sh", "-c", script]);
        ok(kiln(&root, &args));
    };
    // Starting until a probe passes (a failure in the start period does
    // not count), then healthy.
    run(
        "warms-up",
        &[
            "--health-cmd",
            "test -e /ready",
            "--health-interval",
            "200ms",
            "--health-retries",
            "1",
            "--health-start-period",
            "5s",
        ],
        "sleep 1; touch /ready; exec sleep 60",
    );
    let first = ok(kiln(&root, &["ps", "--format", "{{.Status}}"]));
    assert!(first.contains("(health: starting)"), "{first}");
    wait_for("healthy", || {
        inspect("warms-up", "{{.State.Health.Status}}") == "healthy\n"
    });
    assert!(ok(kiln(&root, &["ps", "--format", "{{.Status}}"])).contains("(healthy)"));
    let log: serde_json::Value =
        serde_json::from_str(&inspect("warms-up", "{{json .State.Health.Log}}")).unwrap();
    let codes: Vec<i64> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["ExitCode"].as_i64().unwrap())
        .collect();
    assert!(codes.contains(&1) && codes.last() == Some(&0), "{codes:?}");

    // Failing: unhealthy after the retries, with the probe's output.
    run(
        "sick",
        &[
            "--health-cmd",
            "echo nope; exit 3",
            "--health-interval",
            "200ms",
            "--health-retries",
            "2",
        ],
        "exec sleep 60",
    );
    wait_for("unhealthy", || {
        inspect("sick", "{{.State.Health.Status}}") == "unhealthy\n"
    });
    let last: serde_json::Value =
        serde_json::from_str(&inspect("sick", "{{json .State.Health}}")).unwrap();
    assert!(last["FailingStreak"].as_u64().unwrap() >= 2, "{last}");
    let probe = last["Log"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(probe["ExitCode"], 3, "{probe}");
    assert_eq!(probe["Output"], "nope\n", "{probe}");

    // A probe that outlives its timeout is killed and counts as failed.
    run(
        "slow",
        &[
            "--health-cmd",
            "sleep 30",
            "--health-interval",
            "200ms",
            "--health-timeout",
            "300ms",
            "--health-retries",
            "1",
        ],
        "exec sleep 60",
    );
    wait_for("unhealthy by timeout", || {
        inspect("slow", "{{.State.Health.Status}}") == "unhealthy\n"
    });
    let slow = inspect("slow", "{{json .State.Health.Log}}");
    assert!(slow.contains("exceeded timeout"), "{slow}");

    // The image's HEALTHCHECK, shown as Docker shows it; --no-healthcheck
    // turns it off.
    let context = dir.path().join("hc");
    fs::create_dir_all(&context).unwrap();
    fs::write(
        context.join("Dockerfile"),
        "FROM busybox\nHEALTHCHECK --interval=200ms --retries=1 CMD test -e /etc/passwd\n",
    )
    .unwrap();
    ok(kiln(
        &root,
        &["build", "-q", "-t", "hc", context.to_str().unwrap()],
    ));
    ok(kiln(
        &root,
        &["run", "-d", "--name", "from-image", "hc", "sleep", "60"],
    ));
    assert_eq!(
        inspect("from-image", "{{json .Config.Healthcheck.Test}}"),
        "[\"CMD-SHELL\",\"test -e /etc/passwd\"]\n"
    );
    wait_for("the image's check", || {
        inspect("from-image", "{{.State.Health.Status}}") == "healthy\n"
    });
    ok(kiln(
        &root,
        &[
            "run",
            "-d",
            "--name",
            "unchecked",
            "--no-healthcheck",
            "hc",
            "sleep",
            "60",
        ],
    ));
    assert_eq!(inspect("unchecked", "{{json .State.Health}}"), "null\n");
    for name in ["warms-up", "sick", "slow", "from-image", "unchecked"] {
        ok(kiln(&root, &["rm", "-f", name]));
    }
}

#[test]
fn stats_show_what_a_container_uses() {
    let (_dir, root) = store();
    ok(kiln(
        &root,
        &[
            "run",
            "-d",
            "--name",
            "busy",
            "-m",
            "64m",
            "busybox",
            "sh",
            "-c",
            "while :; do :; done",
        ],
    ));
    ok(kiln(
        &root,
        &["run", "-d", "--name", "idle", "busybox", "sleep", "60"],
    ));
    let table = ok(kiln(&root, &["stats", "--no-stream", "busy", "idle"]));
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 3, "{table}");
    assert!(
        rows[0].starts_with("CONTAINER ID") && rows[0].ends_with("PIDS"),
        "{table}"
    );
    let cpu = |row: &str| -> f64 {
        let cell = row.split_whitespace().find(|c| c.ends_with('%')).unwrap();
        cell.trim_end_matches('%').parse().unwrap()
    };
    let busy = rows.iter().find(|r| r.contains("busy")).unwrap();
    let idle = rows.iter().find(|r| r.contains("idle")).unwrap();
    assert!(cpu(busy) > 30.0, "a busy loop uses a CPU: {table}");
    assert!(cpu(idle) < 10.0, "sleep uses none: {table}");
    assert!(busy.contains("/ 64MiB"), "its memory limit: {table}");
    assert!(busy.trim_end().ends_with(" 1"), "one process: {table}");
    ok(kiln(&root, &["stop", "-t", "0", "busy"]));
    let stopped = ok(kiln(&root, &["stats", "--no-stream", "busy"]));
    assert!(stopped.lines().nth(1).unwrap().contains("--"), "{stopped}");
    ok(kiln(&root, &["rm", "-f", "busy", "idle"]));
}

fn inspect_config(root: &Path, name: &str, template: &str) -> String {
    ok(kiln(root, &["inspect", "-f", template, name]))
}

#[test]
fn update_changes_a_running_containers_limits_and_policy() {
    let (_dir, root) = store();
    ok(kiln(
        &root,
        &[
            "run",
            "-d",
            "--name",
            "svc",
            "-m",
            "64m",
            "--pids-limit",
            "20",
            "busybox",
            "sleep",
            "60",
        ],
    ));
    let limits = |what: &str| {
        ok(kiln(
            &root,
            &["exec", "svc", "cat", &format!("/sys/fs/cgroup/{what}")],
        ))
    };
    assert_eq!(limits("memory/memory.limit_in_bytes"), "67108864\n");
    assert_eq!(
        ok(kiln(
            &root,
            &[
                "update",
                "-m",
                "128m",
                "--pids-limit",
                "30",
                "--cpus",
                "0.5",
                "--restart",
                "on-failure:4",
                "svc"
            ]
        )),
        "svc\n"
    );
    // Applied to the running container's cgroups, and kept in its record.
    assert_eq!(limits("memory/memory.limit_in_bytes"), "134217728\n");
    assert_eq!(limits("pids/pids.max"), "30\n");
    assert_eq!(limits("cpu/cpu.cfs_quota_us"), "50000\n");
    let inspect = |template: &str| ok(kiln(&root, &["inspect", "-f", template, "svc"]));
    assert_eq!(
        inspect("{{.HostConfig.Memory}} {{.HostConfig.PidsLimit}} {{.HostConfig.NanoCpus}} {{.HostConfig.RestartPolicy.Name}}:{{.HostConfig.RestartPolicy.MaximumRetryCount}}"),
        "134217728 30 500000000 on-failure:4\n"
    );
    // Lowering again (memory first, then memory+swap).
    ok(kiln(&root, &["update", "-m", "32m", "svc"]));
    assert_eq!(limits("memory/memory.limit_in_bytes"), "33554432\n");
    // top and diff, as docker's daemon shows them.
    let top = ok(kiln(&root, &["top", "svc"]));
    assert!(top.starts_with("UID") && top.contains("sleep 60"), "{top}");
    ok(kiln(
        &root,
        &["exec", "svc", "sh", "-c", "echo x > /made; rm /bin/ls"],
    ));
    let diff = ok(kiln(&root, &["diff", "svc"]));
    assert!(
        diff.contains("A /made\n") && diff.contains("D /bin/ls\n"),
        "{diff}"
    );
    assert!(diff.contains("C /bin\n"), "{diff}");
    let nothing = kiln(&root, &["update", "svc"]);
    assert_eq!(nothing.status.code(), Some(1));
    assert!(
        text(&nothing.stderr).contains("needs a new limit"),
        "{}",
        text(&nothing.stderr)
    );
    // --stop-timeout: stop's wait when it is not told one (sleep as pid 1
    // ignores SIGTERM, so only the wait ends it).
    ok(kiln(
        &root,
        &[
            "run",
            "-d",
            "--name",
            "patient",
            "--stop-timeout",
            "1",
            "busybox",
            "sleep",
            "60",
        ],
    ));
    assert_eq!(
        inspect_config(&root, "patient", "{{.Config.StopTimeout}}"),
        "1\n"
    );
    let began = Instant::now();
    ok(kiln(&root, &["stop", "patient"]));
    assert!(
        began.elapsed() < Duration::from_secs(8),
        "stop waited Docker's 10 s, not 1"
    );
    ok(kiln(&root, &["rm", "patient"]));
    let bad = kiln(&root, &["update", "--cpus", "1000", "svc"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        text(&bad.stderr).contains("--cpus"),
        "{}",
        text(&bad.stderr)
    );
    ok(kiln(&root, &["rm", "-f", "svc"]));
}

#[test]
fn stdin_with_i_and_a_terminal_with_t() {
    use std::io::{Read, Write};
    let (_dir, root) = store();
    let kiln_bin = env!("CARGO_BIN_EXE_kiln");
    let piped = |args: &[&str], input: &[u8]| {
        let mut child = Command::new(kiln_bin)
            .arg("--root")
            .arg(&root)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    };
    // -i: the container reads our stdin to its end.
    let upper = piped(
        &[
            "run",
            "-i",
            "--rm",
            "busybox",
            "sh",
            "-c",
            "cat | tr a-z A-Z",
        ],
        b"hello from the host\n",
    );
    assert_eq!(ok(upper), "HELLO FROM THE HOST\n");
    // Without -i, stdin is /dev/null.
    let ignored = piped(
        &["run", "--rm", "busybox", "sh", "-c", "cat; echo end"],
        b"ignored\n",
    );
    assert_eq!(ok(ignored), "end\n");
    // Refused as Docker refuses them.
    let refused = piped(&["run", "-it", "--rm", "busybox", "true"], b"");
    assert!(
        text(&refused.stderr).contains("not a TTY"),
        "{}",
        text(&refused.stderr)
    );
    let refused = piped(&["run", "-d", "-i", "busybox", "true"], b"");
    assert!(text(&refused.stderr).contains("-d"));

    // -t under a real terminal (script(1) runs the command on a pty): the
    // command's stdio is a terminal of this terminal's size, stderr too.
    let under_script = |command: &str| {
        let mut child = Command::new("timeout")
            .args(["60", "script", "-qec", command, "/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("script(1) from util-linux");
        (child.stdin.take().unwrap(), child)
    };
    let kiln_cmd = format!("{kiln_bin} --root {}", root.display());
    let (input, child) = under_script(&format!(
        "stty rows 40 cols 100; {kiln_cmd} run -t --rm busybox sh -c \
         'test -t 0 && test -t 1 && test -t 2 && echo tty-ok; stty size; tty; echo err >&2'"
    ));
    drop(input);
    let out = child.wait_with_output().unwrap();
    let out = text(&out.stdout);
    for expected in ["tty-ok", "40 100", "/dev/pts/0", "err"] {
        assert!(out.contains(expected), "{expected:?} missing in {out:?}");
    }

    // A terminal gets TERM=xterm, as under Docker; one the user names wins,
    // and without -t there is none.
    let term = |flags: &str| {
        let (input, child) = under_script(&format!(
            "{kiln_cmd} run {flags} --rm busybox sh -c 'echo term=${{TERM:-unset}}'"
        ));
        drop(input);
        text(&child.wait_with_output().unwrap().stdout)
    };
    assert!(term("-t").contains("term=xterm"), "{}", term("-t"));
    assert!(term("-t -e TERM=vt100").contains("term=vt100"));
    assert!(term("").contains("term=unset"), "{}", term(""));

    // A change of our terminal's size (SIGWINCH) reaches the container's.
    let (input, child) = under_script(&format!(
        "stty rows 40 cols 100; {kiln_cmd} run -t --rm busybox sh -c \
         'stty size; while [ \"$(stty size)\" = \"40 100\" ]; do sleep 0.1; done; stty size' & \
         pid=$!; sleep 2; \
         while kill -0 $pid 2>/dev/null; do stty rows 50 cols 120; kill -WINCH $pid; sleep 0.2; done; \
         wait"
    ));
    drop(input);
    let out = child.wait_with_output().unwrap();
    let out = text(&out.stdout);
    let resized = out.find("40 100").and_then(|at| out[at..].find("50 120"));
    assert!(resized.is_some(), "{out:?}");

    // -it: an interactive shell on the terminal; raw mode while attached
    // (the shell's own line editing sees each key), restored afterwards.
    let (mut input, mut child) = under_script(&format!(
        "{kiln_cmd} run -it --rm busybox sh; echo rc=$?; stty -a"
    ));
    input.write_all(b"echo hi-$((6*7))\rexit 3\r").unwrap();
    // Kept open until script ends: its end of file would reach the shell
    // as Ctrl-D.
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child.wait().unwrap();
    drop(input);
    assert!(out.contains("hi-42"), "{out:?}");
    assert!(out.contains("rc=3"), "{out:?}");
    assert!(
        out.contains(" icanon") && !out.contains("-icanon") && out.contains(" echo "),
        "the terminal is back in cooked mode: {out:?}"
    );
}

#[test]
fn an_untagged_build_runs_by_its_digest() {
    let (dir, root) = store();
    let context = dir.path().join("untagged");
    fs::create_dir_all(&context).unwrap();
    fs::write(
        context.join("Dockerfile"),
        "FROM busybox\nCMD [\"echo\", \"no name\"]\n",
    )
    .unwrap();
    let digest = ok(kiln(
        &root,
        &["build", "--progress", "quiet", context.to_str().unwrap()],
    ));
    assert_eq!(
        ok(kiln(&root, &["run", "--rm", digest.trim()])),
        "no name\n"
    );
    let unknown = kiln(
        &root,
        &["run", "--rm", &format!("sha256:{}", "0".repeat(64))],
    );
    assert_eq!(unknown.status.code(), Some(1));
}

#[test]
fn a_kept_container_keeps_its_image_through_rmi_and_prune() {
    let (dir, root) = store();
    let context = dir.path().join("own");
    fs::create_dir_all(&context).unwrap();
    fs::write(
        context.join("Dockerfile"),
        "FROM busybox\nRUN echo mine > /mine\n",
    )
    .unwrap();
    ok(kiln(
        &root,
        &["build", "-t", "own", context.to_str().unwrap()],
    ));
    ok(kiln(
        &root,
        &["run", "--name", "keeper", "own", "cat", "/mine"],
    ));
    ok(kiln(&root, &["rmi", "own"]));
    ok(kiln(&root, &["prune", "--all"]));
    assert_eq!(ok(kiln(&root, &["start", "-a", "keeper"])), "mine\n");
    ok(kiln(&root, &["rm", "keeper"]));
    // With the container gone, so is what only it kept.
    let pruned = ok(kiln(&root, &["prune"]));
    assert!(!pruned.contains(" 0 blobs"), "{pruned}");
}

#[test]
fn a_user_who_is_not_root_is_told_in_one_line_that_containers_need_root() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let home = dir.path().join("nobody");
    std::fs::create_dir_all(home.join("ctx")).unwrap();
    std::fs::write(home.join("ctx/Dockerfile"), "FROM busybox\nRUN echo hi\n").unwrap();
    let rootfs = common::busybox_rootfs(&home);
    std::os::unix::fs::chown(&home, Some(65534), Some(65534)).unwrap();
    for entry in ["ctx", "ctx/Dockerfile", "busybox-rootfs.tar"] {
        std::os::unix::fs::chown(home.join(entry), Some(65534), Some(65534)).unwrap();
    }
    let as_nobody = |args: &[&str]| {
        Command::new("setpriv")
            .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_kiln"))
            .arg("--root")
            .arg(home.join("store"))
            .args(args)
            .output()
            .expect("setpriv from util-linux")
    };
    // What needs no container works.
    ok(as_nobody(&["import", rootfs.to_str().unwrap(), "busybox"]));
    for args in [
        vec![
            "build",
            "--progress",
            "plain",
            home.join("ctx").to_str().unwrap(),
        ],
        vec!["run", "--rm", "busybox", "true"],
    ] {
        let out = as_nobody(&args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(errors.len(), 1, "{args:?}: {stderr}");
        assert!(errors[0].contains("needs root"), "{args:?}: {stderr}");
        assert!(!stderr.contains("ownership"), "{args:?}: {stderr}");
    }
}

#[test]
fn logs_tail_and_follow_kill_with_a_signal_wait_and_restart() {
    let (_dir, root) = store();
    // Traps TERM (a pid 1 gets only what it handles) and says so.
    let script = "trap 'echo got-term; exit 7' TERM; \
                  for i in 1 2 3 4 5; do echo line-$i; done; \
                  while true; do sleep 0.1; done";
    ok(kiln(
        &root,
        &["run", "-d", "--name", "svc", "busybox", "sh", "-c", script],
    ));
    wait_for("its output", || {
        ok(kiln(&root, &["logs", "svc"])).contains("line-5")
    });
    assert_eq!(
        ok(kiln(&root, &["logs", "--tail", "2", "svc"])),
        "line-4\nline-5\n"
    );
    assert_eq!(ok(kiln(&root, &["logs", "-n", "0", "svc"])), "");
    let bad = kiln(&root, &["logs", "--tail", "some", "svc"]);
    assert_eq!(bad.status.code(), Some(1));
    // -f follows until it stops; wait blocks until then and says how.
    let follow = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--root")
        .arg(&root)
        .args(["logs", "-f", "--tail", "1", "svc"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let waiter = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--root")
        .arg(&root)
        .args(["wait", "svc"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    ok(kiln(&root, &["kill", "-s", "TERM", "svc"]));
    let followed = follow.wait_with_output().unwrap();
    assert_eq!(text(&followed.stdout), "line-5\ngot-term\n");
    assert_eq!(text(&waiter.wait_with_output().unwrap().stdout), "7\n");
    let not_running = kiln(&root, &["kill", "svc"]);
    assert_eq!(not_running.status.code(), Some(1));
    assert!(text(&not_running.stderr).contains("is not running"));
    let bad_signal = kiln(&root, &["kill", "-s", "NOPE", "svc"]);
    assert!(text(&bad_signal.stderr).contains("not a signal"));
    // restart: running again on the same rw layer, its log goes on.
    ok(kiln(&root, &["restart", "svc"]));
    assert!(ok(kiln(&root, &["ps"])).contains("svc"));
    ok(kiln(&root, &["container", "restart", "-t", "5", "svc"]));
    ok(kiln(&root, &["kill", "svc"]));
    assert_eq!(ok(kiln(&root, &["container", "wait", "svc"])), "137\n");
    ok(kiln(&root, &["rm", "svc"]));
}

#[test]
fn logs_timestamps_say_when_each_line_was_written() {
    let (_dir, root) = store();
    let before = std::time::SystemTime::now();
    ok(kiln(
        &root,
        &[
            "run",
            "--name",
            "clock",
            "busybox",
            "sh",
            "-c",
            "echo first; sleep 1.5; printf 'second\\nthird'",
        ],
    ));
    let after = std::time::SystemTime::now();
    // Without -t the log is the bytes as written.
    assert_eq!(ok(kiln(&root, &["logs", "clock"])), "first\nsecond\nthird");
    let stamped = ok(kiln(&root, &["logs", "--timestamps", "clock"]));
    let lines: Vec<(std::time::SystemTime, &str)> = stamped
        .split_inclusive('\n')
        .map(|line| {
            let (time, rest) = line.split_once(' ').unwrap();
            (humantime::parse_rfc3339(time).unwrap(), rest)
        })
        .collect();
    let texts: Vec<&str> = lines.iter().map(|(_, text)| *text).collect();
    assert_eq!(texts, ["first\n", "second\n", "third"], "{stamped}");
    for (time, _) in &lines {
        assert!(before <= *time && *time <= after, "{stamped}");
    }
    let gap = lines[1].0.duration_since(lines[0].0).unwrap();
    assert!(gap >= Duration::from_millis(1400), "{stamped}");
    // A line's time is when it began: "third" came with "second".
    assert_eq!(lines[1].0, lines[2].0, "{stamped}");
    let last = ok(kiln(&root, &["logs", "-t", "-n", "1", "clock"]));
    assert_eq!(last, stamped.lines().last().unwrap(), "{stamped}");
    // --since and --until by those times: a date, seconds, a duration ago.
    let between = lines[0].0 + gap / 2;
    let rfc3339 = humantime::format_rfc3339_nanos(between).to_string();
    let seconds = format!(
        "{:.6}",
        between
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    );
    assert_eq!(
        ok(kiln(&root, &["logs", "--since", &rfc3339, "clock"])),
        "second\nthird"
    );
    assert_eq!(
        ok(kiln(&root, &["logs", "--until", &seconds, "clock"])),
        "first\n"
    );
    assert_eq!(
        ok(kiln(&root, &["logs", "--since", "1h", "clock"])),
        "first\nsecond\nthird"
    );
    assert_eq!(ok(kiln(&root, &["logs", "--until", "1h", "clock"])), "");
    let bad = kiln(&root, &["logs", "--since", "yesterday-ish", "clock"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        text(&bad.stderr).contains("--since"),
        "{}",
        text(&bad.stderr)
    );
    ok(kiln(&root, &["rm", "clock"]));
}

#[test]
fn capabilities_are_added_and_dropped_and_a_read_only_rootfs_stays_unwritten() {
    let (_dir, root) = store();
    let caps = |extra: &[&str]| {
        let mut args = vec!["run", "--rm", "--network", "none"];
        args.extend_from_slice(extra);
        args.extend(["busybox", "grep", "CapEff", "/proc/self/status"]);
        ok(kiln(&root, &args))
    };
    // Docker's default set (0xa80425fb), then ALL dropped but NET_ADMIN
    // (bit 12), then CHOWN (bit 0) dropped from the default.
    assert_eq!(caps(&[]), "CapEff:\t00000000a80425fb\n");
    assert_eq!(
        caps(&["--cap-drop", "ALL", "--cap-add", "net_admin"]),
        "CapEff:\t0000000000001000\n"
    );
    assert_eq!(
        caps(&["--cap-drop", "CAP_CHOWN"]),
        "CapEff:\t00000000a80425fa\n"
    );
    // Without CAP_CHOWN, root cannot give a file away.
    let out = kiln(
        &root,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "--cap-drop",
            "chown",
            "busybox",
            "chown",
            "5",
            "/etc/passwd",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    // A user other than root starts without any, as in Docker.
    assert_eq!(
        ok(kiln(
            &root,
            &[
                "run",
                "--rm",
                "--network",
                "none",
                "--cap-drop",
                "ALL",
                "-u",
                "1000",
                "busybox",
                "id",
                "-u"
            ]
        )),
        "1000\n"
    );
    let bad = kiln(
        &root,
        &["run", "--rm", "--cap-add", "BOGUS", "busybox", "true"],
    );
    assert!(text(&bad.stderr).contains("--cap-add \"BOGUS\": not a capability"));

    let out = ok(kiln(
        &root,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "--read-only",
            "busybox",
            "sh",
            "-c",
            "touch /x 2>&1; echo rootfs=$?; touch /dev/shm/y && echo dev=$?",
        ],
    ));
    assert_eq!(out, "touch: /x: Read-only file system\nrootfs=1\ndev=0\n");
    // A kept container keeps both across start.
    ok(kiln(
        &root,
        &[
            "run",
            "--name",
            "ro",
            "--network",
            "none",
            "--read-only",
            "--cap-drop",
            "ALL",
            "busybox",
            "sh",
            "-c",
            "grep CapEff /proc/self/status; touch /x 2>/dev/null || echo ro",
        ],
    ));
    ok(kiln(&root, &["start", "-a", "ro"]));
    assert_eq!(
        ok(kiln(&root, &["logs", "ro"])),
        "CapEff:\t0000000000000000\nro\nCapEff:\t0000000000000000\nro\n"
    );
    ok(kiln(&root, &["rm", "ro"]));
}

#[test]
fn tmpfs_and_mount_labels_and_the_stop_signal() {
    let (dir, root) = store();
    let host = dir.path().join("shared");
    fs::create_dir_all(&host).unwrap();
    fs::write(host.join("f"), "from the host\n").unwrap();
    let mount = format!("type=bind,source={},target=/data,readonly", host.display());
    let out = ok(kiln(
        &root,
        &[
            "run", "--rm", "--network", "none", "--read-only",
            "--tmpfs", "/scratch:size=1m",
            "--mount", "type=tmpfs,target=/cache",
            "--mount", &mount,
            "busybox", "sh", "-c",
            "touch /scratch/a /cache/b && echo writable; cat /data/f; touch /data/g 2>/dev/null || echo ro; \
             grep ' /scratch ' /proc/mounts | grep -o 'size=[0-9]*k'",
        ],
    ));
    assert_eq!(out, "writable\nfrom the host\nro\nsize=1024k\n");
    assert!(!host.join("g").exists());
    for (flag, value, error) in [
        (
            "--mount",
            "type=volume,source=../v,target=/v",
            "is not a volume name",
        ),
        ("--mount", "type=bind,target=/x", "needs source="),
        ("--tmpfs", "relative", "must be absolute"),
        ("--stop-signal", "NOPE", "not a signal"),
    ] {
        let out = kiln(&root, &["run", "--rm", flag, value, "busybox", "true"]);
        assert_eq!(out.status.code(), Some(1), "{flag} {value}");
        assert!(
            text(&out.stderr).contains(error),
            "{flag} {value}: {}",
            text(&out.stderr)
        );
    }
    // stop sends the stop signal first: a HUP the command handles.
    ok(kiln(
        &root,
        &[
            "run",
            "-d",
            "--name",
            "svc",
            "--network",
            "none",
            "--label",
            "team=core",
            "--stop-signal",
            "HUP",
            "busybox",
            "sh",
            "-c",
            "trap 'echo got-hup; exit 3' HUP; echo up; while true; do sleep 0.1; done",
        ],
    ));
    wait_for("it to start", || {
        ok(kiln(&root, &["logs", "svc"])).contains("up")
    });
    let inspect: serde_json::Value =
        serde_json::from_str(&ok(kiln(&root, &["inspect", "svc"]))).unwrap();
    assert_eq!(inspect[0]["Config"]["Labels"]["team"], "core");
    assert_eq!(inspect[0]["Config"]["StopSignal"], "SIGHUP");
    ok(kiln(&root, &["stop", "-t", "5", "svc"]));
    assert_eq!(ok(kiln(&root, &["logs", "svc"])), "up\ngot-hup\n");
    assert_eq!(ok(kiln(&root, &["wait", "svc"])), "3\n");
    ok(kiln(&root, &["rm", "svc"]));
}

#[test]
fn ulimits_for_run_and_for_every_run_of_a_build() {
    let (dir, root) = store();
    assert_eq!(
        ok(kiln(
            &root,
            &[
                "run",
                "--rm",
                "--network",
                "none",
                "--ulimit",
                "nofile=512:1024",
                "--ulimit",
                "core=-1",
                "busybox",
                "sh",
                "-c",
                "ulimit -n; ulimit -Hn; ulimit -c"
            ],
        )),
        "512\n1024\nunlimited\n"
    );
    for bad in ["nofile", "files=1", "nofile=2:1", "nofile=x"] {
        let out = kiln(&root, &["run", "--rm", "--ulimit", bad, "busybox", "true"]);
        assert_eq!(out.status.code(), Some(1), "{bad}");
        assert!(
            text(&out.stderr).contains("--ulimit"),
            "{bad}: {}",
            text(&out.stderr)
        );
    }
    let context = dir.path().join("ctx");
    fs::create_dir_all(&context).unwrap();
    fs::write(context.join("Dockerfile"), "FROM busybox\nRUN ulimit -n\n").unwrap();
    let out = kiln(
        &root,
        &[
            "build",
            "--progress",
            "plain",
            "--ulimit",
            "nofile=256",
            context.to_str().unwrap(),
        ],
    );
    assert!(
        text(&out.stderr).contains("\n#2 256\n"),
        "{}",
        text(&out.stderr)
    );
    let out = kiln(
        &root,
        &["build", "--ulimit", "nofile=9:1", context.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("soft limit is above the hard one"));
}

#[test]
fn shm_size_for_run_and_for_every_run_of_a_build() {
    let (dir, root) = store();
    let shm_kib = |flags: &[&str]| {
        let mut args = vec!["run", "--rm", "--network", "none"];
        args.extend(flags);
        args.extend(["busybox", "sh", "-c", "df -k /dev/shm | tail -1"]);
        let line = ok(kiln(&root, &args));
        line.split_whitespace().nth(1).unwrap().to_owned()
    };
    assert_eq!(shm_kib(&[]), "65536", "docker's default");
    assert_eq!(shm_kib(&["--shm-size", "16m"]), "16384");
    let bad = kiln(
        &root,
        &["run", "--rm", "--shm-size", "lots", "busybox", "true"],
    );
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad.stderr).contains("--shm-size"),
        "{}",
        text(&bad.stderr)
    );

    let context = dir.path().join("ctx");
    fs::create_dir_all(&context).unwrap();
    fs::write(
        context.join("Dockerfile"),
        "FROM busybox\nRUN df -k /dev/shm | tail -1 | awk '{print \"shm=\" $2}'\n",
    )
    .unwrap();
    let build = |flags: &[&str]| {
        let mut args = vec!["build", "--progress", "plain"];
        args.extend(flags);
        args.push(context.to_str().unwrap());
        text(&kiln(&root, &args).stderr)
    };
    assert!(build(&[]).contains("shm=65536"));
    // Another size is another step (and the default's step is cached).
    let sized = build(&["--shm-size", "8m"]);
    assert!(sized.contains("shm=8192"), "{sized}");
    assert!(build(&[]).contains("CACHED"));
}
