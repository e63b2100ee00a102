//! Drives the real `kiln` binary: `kiln parse` output formats, error
//! rendering and exit codes.

use std::path::Path;
use std::process::{Command, Output};

fn kiln(args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
    cmd.args(args);
    match stdin {
        Some(text) => {
            use std::io::Write;
            use std::process::Stdio;
            let mut child = cmd
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
            child.wait_with_output().unwrap()
        }
        None => cmd.output().unwrap(),
    }
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

#[test]
fn binary_garbage_is_an_error_not_a_crash() {
    let garbage: String = (0u32..4096)
        .map(|i| char::from_u32((i * 7919) % 0x2500).unwrap_or('?'))
        .collect();
    let out = kiln(&["parse", "-f", "-"], Some(&garbage));
    // Whatever the verdict, the process exits normally (0 or 1), not by a signal or panic (101).
    assert!(
        matches!(out.status.code(), Some(0) | Some(1)),
        "{:?}",
        out.status
    );
    assert!(!text(&out.stderr).contains("panicked"));
}
