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
            && plain.contains(": 1 step run (1 failed), 1 cached (50% hit rate)")
            && plain.contains("\n#3 ERROR "),
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
        ["plan", "started", "done", "started", "cached", "started", "cached", "summary"]
    );
    assert_eq!(events[0]["steps"], 3);
    assert_eq!(events[3]["step"], "[stage-0 2/3] RUN echo hello");
    assert_eq!(events[7]["steps_cached"], 2);
    assert_eq!(events[7]["cache_hit_rate"], 1.0);

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
    // The step's last output lines are shown under it while it runs,
    // under a header with the time and the steps done of all.
    let running = wait_for_screen(&session, "   tick-tock");
    let lines: Vec<&str> = running.lines().collect();
    assert!(
        lines[0].starts_with("[+] Building ") && lines[0].contains("s (1/3)"),
        "{running}"
    );
    let at = lines
        .iter()
        .position(|l| l.starts_with("   tick-tock"))
        .unwrap();
    assert_eq!(lines[at - 1].trim_end(), "   first-line", "{running}");
    assert!(
        lines[at - 2].starts_with("#2 [stage-0 2/3] RUN"),
        "{running}"
    );
    assert!(
        lines[at - 2].trim_end().ends_with('s'),
        "a timer: {running}"
    );
    assert!(
        running.lines().all(|l| l.chars().count() <= 60),
        "{running}"
    );
    let finished = wait_for_screen(&session, "built in");
    let status = exit_status(&log);
    tmux(&["kill-session", "-t", &session]);
    assert!(
        finished.starts_with("[+] Building ")
            && finished.lines().next().unwrap().ends_with("(3/3) FINISHED"),
        "{finished}"
    );
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
    assert_eq!(status, "0");
}

/// A tmux session `width` columns wide running `kiln build` of `context`
/// on a terminal; its exit status lands in `exit`.
fn build_in_tmux(root: &Path, context: &Path, width: usize, exit: &Path) -> String {
    let session = format!("kiln-progress-{}-{width}", std::process::id());
    let command = format!(
        "{} --root {} build --no-cache {}; echo $? > {}; sleep 60",
        env!("CARGO_BIN_EXE_kiln"),
        root.display(),
        context.display(),
        exit.display()
    );
    let width = width.to_string();
    tmux(&[
        "new-session",
        "-d",
        "-s",
        &session,
        "-x",
        &width,
        "-y",
        "30",
        &command,
    ]);
    session
}

/// Two stages at once: one prints and fails, the other is still running
/// (it is canceled); the last stage needs both.
const FAILING: &str = "FROM busybox AS a\n\
    RUN for i in 1 2 3 4 5 6 7; do echo line-$i; sleep 0.2; done; exit 3\n\
    FROM busybox AS b\n\
    RUN sleep 20\n\
    FROM busybox\n\
    COPY --from=a /etc/passwd /a\n\
    COPY --from=b /etc/passwd /b\n";

/// The final screen's view: each step once, marked, nothing stale.
fn assert_ended(screen: &str, width: usize, header_end: &str, marks: &[(&str, &str)]) {
    let headers: Vec<&str> = screen
        .lines()
        .filter(|l| l.starts_with("[+] Building"))
        .collect();
    assert_eq!(headers.len(), 1, "one header: {screen}");
    assert!(headers[0].ends_with(header_end), "{screen}");
    for (step, mark) in marks {
        let lines: Vec<&str> = screen.lines().filter(|l| l.starts_with(step)).collect();
        assert_eq!(lines.len(), 1, "{step} once: {screen}");
        assert!(lines[0].contains(mark), "{step} {mark}: {screen}");
    }
    assert!(
        !screen.contains("   line-"),
        "no output line left: {screen}"
    );
    // Cut to the width, never wrapped: every line of the view is a
    // header, a step or the notice, none a wrapped line's rest.
    let view = screen.lines().take_while(|l| !l.contains(" in "));
    for line in view {
        assert!(
            ["[+] Building ", "#", "interrupt: "]
                .iter()
                .any(|p| line.starts_with(p))
                && line.chars().count() <= width,
            "{line:?}: {screen}"
        );
    }
}

/// The exit status the session's shell wrote to `file` once kiln ended
/// (the summary is on screen a moment before it ends).
fn exit_status(file: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(text) = fs::read_to_string(file) {
            if text.ends_with('\n') {
                return text.trim().to_owned();
            }
        }
        assert!(Instant::now() < deadline, "kiln did not end");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The screen's text with the terminal's wrapping undone.
fn unwrapped(screen: &str) -> String {
    screen.replace('\n', "")
}

#[test]
fn the_tty_view_marks_the_failed_step_error_and_the_others_canceled() {
    let (dir, root, context) = project(FAILING);
    for width in [50, 80, 132] {
        let exit = dir.path().join(format!("exit-{width}"));
        let session = build_in_tmux(&root, &context, width, &exit);
        let running = wait_for_screen(&session, "   line-5");
        // The last lines of its output, up to five, under the step.
        assert!(running.contains("   line-1\n"), "{running}");
        let screen = wait_for_screen(&session, "failed in ");
        let status = exit_status(&exit);
        tmux(&["kill-session", "-t", &session]);
        assert_ended(
            &screen,
            width,
            "FAILED",
            &[
                ("#2 [a 2/2] RUN", "ERROR"),
                ("#4 [b 2/2] RUN sleep 20", "CANCELED"),
            ],
        );
        assert!(
            unwrapped(&screen).contains("2 steps run (1 failed, 1 canceled)"),
            "{screen}"
        );
        assert_eq!(status, "1");
    }
}

#[test]
fn ctrl_c_in_the_tty_view_cancels_every_running_step_and_draws_each_once() {
    let (dir, root, context) = project(FAILING);
    let exit = dir.path().join("exit");
    let session = build_in_tmux(&root, &context, 72, &exit);
    wait_for_screen(&session, "   line-3");
    tmux(&["send-keys", "-t", &session, "C-c"]);
    let screen = wait_for_screen(&session, "interrupted in ");
    let status = exit_status(&exit);
    tmux(&["kill-session", "-t", &session]);
    assert_ended(
        &screen,
        72,
        "CANCELED",
        &[
            ("#2 [a 2/2] RUN", "CANCELED"),
            ("#4 [b 2/2] RUN sleep 20", "CANCELED"),
        ],
    );
    assert_eq!(
        screen.matches("interrupt: stopping the build").count(),
        1,
        "{screen}"
    );
    assert!(!screen.contains("^C"), "{screen}");
    assert_eq!(status, "130");
}

#[test]
fn save_refuses_to_write_an_archive_to_a_terminal() {
    let (dir, root, _context) = project("FROM busybox\n");
    let exit = dir.path().join("exit");
    let session = format!("kiln-save-{}", std::process::id());
    let command = format!(
        "{} --root {} save busybox; echo $? > {}; sleep 60",
        env!("CARGO_BIN_EXE_kiln"),
        root.display(),
        exit.display()
    );
    tmux(&[
        "new-session",
        "-d",
        "-s",
        &session,
        "-x",
        "100",
        "-y",
        "10",
        &command,
    ]);
    let status = exit_status(&exit);
    let screen = wait_for_screen(&session, "refusing");
    tmux(&["kill-session", "-t", &session]);
    assert_eq!(status, "1");
    assert!(
        screen.contains("refusing to write an archive to a terminal: use -o FILE"),
        "{screen}"
    );
}

#[test]
fn a_second_ctrl_c_exits_at_once_and_gives_the_terminal_its_echo_back() {
    let (dir, root, context) = project(FAILING);
    let exit = dir.path().join("exit");
    let echo = dir.path().join("echo");
    let session = format!("kiln-progress-echo-{}", std::process::id());
    let command = format!(
        // The shell ignores SIGINT, so a Ctrl-C that comes after kiln has
        // ended cannot stop the stty that reads the result.
        "trap '' INT; {} --root {} build --no-cache {}; echo $? > {}; stty -a | tr ' ' '\\n' | grep -x -- '-\\?echo' > {}; sleep 60",
        env!("CARGO_BIN_EXE_kiln"),
        root.display(),
        context.display(),
        exit.display(),
        echo.display()
    );
    tmux(&[
        "new-session",
        "-d",
        "-s",
        &session,
        "-x",
        "80",
        "-y",
        "30",
        &command,
    ]);
    wait_for_screen(&session, "   line-2");
    // The second once kiln has taken the first (its notice is on screen),
    // looked for often: stopping a build can take only a moment. Sent
    // together, the two could arrive as one signal.
    tmux(&["send-keys", "-t", &session, "C-c"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !tmux(&["capture-pane", "-p", "-t", &session]).contains("interrupt: stopping") {
        assert!(Instant::now() < deadline, "no interrupt notice");
        std::thread::sleep(Duration::from_millis(5));
    }
    tmux(&["send-keys", "-t", &session, "C-c"]);
    let status = exit_status(&exit);
    let deadline = Instant::now() + Duration::from_secs(10);
    while fs::read_to_string(&echo).unwrap_or_default().is_empty() {
        assert!(Instant::now() < deadline, "stty did not run");
        std::thread::sleep(Duration::from_millis(50));
    }
    tmux(&["kill-session", "-t", &session]);
    assert_eq!(status, "130");
    assert_eq!(
        fs::read_to_string(&echo).unwrap().trim(),
        "echo",
        "echo is on again"
    );
}
