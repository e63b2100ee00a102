//! Drives the real `kiln` binary: `kiln parse` output formats, error
//! rendering and exit codes.

use std::path::Path;
use std::process::{Command, Output};

fn kiln(args: &[&str], stdin: Option<&str>) -> Output {
    kiln_bytes(args, stdin.map(str::as_bytes))
}

fn kiln_bytes(args: &[&str], stdin: Option<&[u8]>) -> Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
    cmd.args(args);
    let Some(bytes) = stdin else {
        return cmd.output().unwrap();
    };
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    // kiln may reject the input before reading all of it; a broken pipe is fine.
    let _ = pipe.write_all(bytes);
    drop(pipe);
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn buildkit_dump_of_the_example() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/hello");
    let out = kiln(&["parse", example.to_str().unwrap()], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with("(arg \"BASE=busybox:latest\")\n(from \"${BASE}\" \"AS\" \"build\")\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("(copy [\"--chmod=0644\"] \"greeting.txt\" \".\")\n"),
        "{stdout}"
    );
    assert!(stdout.contains("(run \"<<EOF\")\n"), "{stdout}");
}

#[test]
fn json_output_has_spans_and_heredocs() {
    let out = kiln(
        &["parse", "-f", "-", "--format", "json"],
        Some("FROM alpine\nRUN <<EOF\necho hi\nEOF\n"),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let run = &json["instructions"][1];
    assert_eq!(run["keyword"], "RUN");
    assert_eq!(run["heredocs"][0]["name"], "EOF");
    assert_eq!(run["heredocs"][0]["content"], "echo hi\n");
    assert_eq!(run["end_line"], 4);
    assert_eq!(run["args"]["value"]["span"]["start"]["column"], 5);
}

#[test]
fn parse_error_shows_position_line_caret_and_exits_1() {
    let out = kiln(
        &["parse", "-f", "-"],
        Some("FROM alpine\nCMD [\"echo\", 1]\n"),
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("-:2:5: when using JSON array syntax"),
        "{stderr}"
    );
    assert!(
        stderr.contains("    2 | CMD [\"echo\", 1]\n      |     ^"),
        "{stderr}"
    );
    assert!(stderr.contains("hint: "), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn check_rejects_unknown_flags_with_the_valid_ones() {
    let out = kiln(
        &["parse", "--check", "-f", "-"],
        Some("FROM alpine\nCOPY --chmown=1 a b\n"),
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("-:2:6: unknown flag: --chmown"), "{stderr}");
    assert!(
        stderr.contains("valid flags for COPY: --from, --chown, --chmod"),
        "{stderr}"
    );
}

#[test]
fn empty_file_and_missing_file_are_errors() {
    let out = kiln(&["parse", "-f", "-"], Some("# only a comment\n\n"));
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("file with no instructions"));

    let out = kiln(&["parse", "-f", "/nonexistent/Dockerfile"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("/nonexistent/Dockerfile"));
}

/// Asserts a clean rejection: exit 1, one `error:` naming stdin's line,
/// and no panic.
fn assert_rejected(out: &Output, needle: &str) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.starts_with("error: -:"), "{stderr}");
    assert!(stderr.contains(needle), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn binary_garbage_is_an_error_not_a_crash() {
    // A fixed pseudo-random byte stream (xorshift), so a failure reproduces.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let garbage: Vec<u8> = (0..65536)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let out = kiln_bytes(&["parse", "-f", "-"], Some(&garbage));
    assert_rejected(&out, "not a text file");
}

#[test]
fn latin1_comment_parses_with_a_warning() {
    let out = kiln_bytes(
        &["parse", "-f", "-"],
        Some(b"# caf\xe9\nFROM alpine\nRUN true\n"),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("-:1: warning: invalid UTF-8"));
}

#[test]
fn megabyte_line_is_an_error() {
    let input = format!("FROM alpine\nRUN echo {}\n", "x".repeat(1 << 20));
    assert_rejected(
        &kiln(&["parse", "-f", "-"], Some(&input)),
        "maximum is 65535",
    );
}

#[test]
fn deeply_nested_onbuild_is_an_error() {
    let input = format!("FROM alpine\n{}RUN true\n", "ONBUILD ".repeat(1000));
    assert_rejected(&kiln(&["parse", "-f", "-"], Some(&input)), "ONBUILD nested");
}

#[test]
fn unterminated_heredoc_is_an_error() {
    let input = "FROM alpine\nRUN <<EOF\necho hi\n";
    assert_rejected(
        &kiln(&["parse", "-f", "-"], Some(input)),
        "unterminated heredoc EOF",
    );
}

#[test]
fn unterminated_json_runs_as_shell_form_with_a_warning() {
    // BuildKit's rule: text that is not valid JSON is the shell form.
    let out = kiln(
        &["parse", "-f", "-"],
        Some("FROM alpine\nCMD [\"a\", \"b\"\n"),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(r#"(cmd "[\"a\", \"b\"")"#));
    assert!(text(&out.stderr).contains("-:2: warning: CMD is not a valid JSON array"));
}

#[test]
fn bom_crlf_and_backtick_escape_from_a_file() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/dockerfiles/bom-crlf-backtick.Dockerfile");
    let out = kiln(&["parse", "-f", file.to_str().unwrap()], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "(from \"busybox\" \"AS\" \"base\")\n(run \"echo one     two\")\n(copy \"<<EOF\" \"/greeting\")\n"
    );
    let out = kiln(
        &["parse", "--format", "json", "-f", file.to_str().unwrap()],
        None,
    );
    let ast: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ast["escape"], "`");
    let run = &ast["instructions"][1];
    assert_eq!(
        (run["start_line"].as_u64(), run["end_line"].as_u64()),
        (Some(3), Some(4))
    );
    // BuildKit keeps heredoc lines as written, CR included.
    assert_eq!(
        ast["instructions"][2]["heredocs"][0]["content"],
        "hello\r\n"
    );
}

#[test]
fn planned_commands_say_they_are_not_there_yet_and_typos_still_get_a_tip() {
    // Docker's commands kiln lacks, whose nearest kiln spelling clap
    // would offer instead (`stats` for start's neighbours, `import` for
    // port).
    for command in ["create", "attach", "port", "network", "compose"] {
        let out = kiln(&[command, "some", "--args"], None);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{command}: {stderr}");
        assert!(
            stderr.contains(&format!("kiln {command} is not implemented yet")),
            "{command}: {stderr}"
        );
        assert!(
            !stderr.contains("similar subcommand"),
            "{command}: {stderr}"
        );
    }
    for command in ["buildx", "builder"] {
        let out = kiln(&[command, "prune"], None);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("kiln has no {command} command: kiln ")),
            "{stderr}"
        );
    }
    let out = kiln(&["biuld"], None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("'build'"), "{stderr}");
}

#[test]
fn completions_complete_commands_and_flags_in_bash_and_version_prints() {
    let out = kiln(&["completion", "bash"], None);
    assert!(out.status.success());
    let script = String::from_utf8_lossy(&out.stdout).into_owned();
    // Hidden commands (internal ones and planned ones) are not offered.
    for hidden in ["__monitor", "__man-pages", "buildx", "compose"] {
        assert!(!script.contains(hidden), "{hidden} is offered");
    }
    assert!(script.contains("push"), "a real command is offered");
    assert!(script.contains("serve"), "a real command is offered");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kiln.bash");
    std::fs::write(&file, &script).unwrap();
    // bash itself completes `kiln bu` and `kiln build --no-c`.
    let complete = |words: &str| {
        let probe = format!(
            "source {}; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); \
             _kiln kiln \"${{COMP_WORDS[-1]}}\" \"${{COMP_WORDS[-2]}}\"; echo \"${{COMPREPLY[@]}}\"",
            file.display()
        );
        let out = Command::new("bash").args(["-c", &probe]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(complete("kiln bu").split_whitespace().any(|w| w == "build"));
    assert!(complete("kiln build --no-c")
        .split_whitespace()
        .any(|w| w == "--no-cache"));
    for shell in ["zsh", "fish"] {
        let out = kiln(&["completion", shell], None);
        assert!(out.status.success() && !out.stdout.is_empty(), "{shell}");
    }
    let version = kiln(&["version"], None);
    assert_eq!(
        String::from_utf8_lossy(&version.stdout),
        format!("kiln version {}\n", env!("CARGO_PKG_VERSION"))
    );
}
