//! The progress views: `plain` and `json` by their output, `tty` in a real
//! terminal (tmux, read with capture-pane) while a step runs and after.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{kiln, text};

fn project(dockerfile: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = common::busybox_store(dir.path());
    let context = dir.path().join("ctx");
    fs::create_dir_all(&context).unwrap();
    fs::write(context.join("Dockerfile"), dockerfile).unwrap();
    (dir, root, context)
}

#[test]
fn a_failed_step_counts_as_run_not_as_a_hit() {
    let (_dir, root, context) = project("FROM busybox\nRUN echo a\nRUN exit 3\n");
    let ctx = context.to_str().unwrap();
    kiln(&root, &["build", "--progress", "plain", ctx]);
    let again = kiln(&root, &["build", "--progress", "plain", ctx]);
    assert!(!again.status.success());
    let plain = text(&again.stderr);
    assert!(
        plain.contains("failed in ")
            && plain.contains(": 1 steps run (1 failed), 1 cached (50% hit rate)"),
        "{plain}"
    );
}

#[test]
fn plain_and_json_describe_every_step() {
    let (_dir, root, context) = project("FROM busybox\nRUN echo hello\nENV A=1\n");
    let ctx = context.to_str().unwrap();
    let first = kiln(&root, &["build", "--progress", "plain", ctx]);
    let plain = text(&first.stderr);
    assert!(
        plain.contains("#2 [stage-0 2/3] RUN echo hello\n#2 hello\n#2 DONE "),
        "{plain}"
    );
    assert!(plain.contains("built in "), "{plain}");
    assert!(
        plain.contains(": 2 steps run, 0 cached (0% hit rate)"),
        "{plain}"
    );

    let second = kiln(&root, &["build", "--progress", "json", ctx]);
    let events: Vec<serde_json::Value> = text(&second.stderr)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["started", "done", "started", "cached", "started", "cached", "summary"]
    );
    assert_eq!(events[2]["step"], "[stage-0 2/3] RUN echo hello");
    assert_eq!(events[6]["steps_cached"], 2);
    assert_eq!(events[6]["cache_hit_rate"], 1.0);

    // KILN_PROGRESS chooses when --progress does not; quiet says nothing.
    let quiet = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--root")
        .arg(&root)
        .args(["build", ctx])
        .env("KILN_PROGRESS", "quiet")
        .output()
        .unwrap();
    assert_eq!(text(&quiet.stderr), "");
    assert!(text(&quiet.stdout).starts_with("sha256:"));
    // -q, as docker build -q.
    let q = kiln(&root, &["build", "-q", ctx]);
    assert_eq!(text(&q.stderr), "");
    assert_eq!(text(&q.stdout), text(&quiet.stdout));
}

fn tmux(args: &[&str]) -> String {
    let out = Command::new("tmux")
        .args(args)
        .output()
        .expect("tmux is installed by scripts/install-test-deps.sh");
    text(&out.stdout)
}

fn wait_for_screen(session: &str, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let screen = tmux(&["capture-pane", "-p", "-t", session]);
        if screen.contains(what) {
            return screen;
        }
        assert!(
            Instant::now() < deadline,
            "no {what:?} on screen:\n{screen}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_tty_view_shows_running_steps_live_and_collapses_them() {
    let (dir, root, context) = project(
        "FROM busybox\nRUN echo first-line; sleep 1; echo tick-tock; sleep 2\nLABEL done=yes\n",
    );
    let session = format!("kiln-progress-{}", std::process::id());
    let log = dir.path().join("exit");
    let command = format!(
        "{} --root {} build {}; echo $? > {}; sleep 60",
        env!("CARGO_BIN_EXE_kiln"),
        root.display(),
        context.display(),
        log.display()
    );
    // A narrow terminal: long lines must be cut, not wrapped.
    tmux(&[
        "new-session",
        "-d",
        "-s",
        &session,
        "-x",
        "60",
        "-y",
        "20",
        &command,
    ]);
    // The step's last output line is shown under it while it runs.
    let running = wait_for_screen(&session, "   tick-tock");
    let lines: Vec<&str> = running.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with("   tick-tock"))
        .unwrap();
    assert!(
        lines[at - 1].starts_with("#2 [stage-0 2/3] RUN"),
        "{running}"
    );
    assert!(
        lines[at - 1].trim_end().ends_with('s'),
        "a timer: {running}"
    );
    assert!(
        running.lines().all(|l| l.chars().count() <= 60),
        "{running}"
    );
    let finished = wait_for_screen(&session, "built in");
    tmux(&["kill-session", "-t", &session]);
    assert!(finished.contains("#2 [stage-0 2/3] RUN"), "{finished}");
    assert!(
        finished
            .lines()
            .any(|l| l.starts_with("#2 ") && l.contains("DONE")),
        "{finished}"
    );
    assert!(
        finished
            .lines()
            .any(|l| l.starts_with("#3 [stage-0 3/3] LABEL done=yes")
                && l.trim_end().ends_with("DONE 0.0s")),
        "{finished}"
    );
    assert!(
        !finished.contains("   tick-tock"),
        "output collapses: {finished}"
    );
    assert_eq!(fs::read_to_string(Path::new(&log)).unwrap().trim(), "0");
}
