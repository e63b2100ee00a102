//! Input a user can hand kiln by accident or on purpose must produce a parse
//! or a `ParseError`, never a panic: truncated files, damaged bytes, inputs
//! built to exhaust recursion.

use std::fs;

use kiln_dockerfile::{parse, parse_bytes};

fn real_world() -> Vec<(String, String)> {
    let dir = kiln_testdata::shared_path("conformance/real-world");
    let mut files: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "Dockerfile"))
        .map(|p| (p.display().to_string(), fs::read_to_string(&p).unwrap()))
        .collect();
    files.sort();
    assert!(files.len() > 100, "real-world corpus missing");
    files
}

/// Cuts every real-world file at many points (each cut a different
/// half-finished construct: open quotes, JSON, heredocs, continuations).
#[test]
fn truncated_files_never_panic() {
    if kiln_testdata::missing("conformance/real-world") {
        return;
    }
    let mut parsed = 0;
    for (_, text) in real_world() {
        for cut in (0..text.len())
            .step_by(29)
            .filter(|&i| text.is_char_boundary(i))
        {
            let _ = parse(&text[..cut]);
            parsed += 1;
        }
    }
    assert!(parsed > 5000);
}

/// Flips bytes of real files into other bytes, invalid UTF-8 included.
#[test]
fn damaged_bytes_never_panic() {
    if kiln_testdata::missing("conformance/real-world") {
        return;
    }
    let replacements: &[u8] = b"\0\\`\"'[]{}$<\n\r\t \xff\xc3";
    for (_, text) in real_world() {
        let bytes = text.as_bytes();
        for (n, at) in (0..bytes.len()).step_by(53).enumerate() {
            let mut damaged = bytes.to_vec();
            damaged[at] = replacements[n % replacements.len()];
            let _ = parse_bytes(&damaged);
        }
    }
}

#[test]
fn deep_nesting_in_expansions_and_json_is_an_error_or_a_parse() {
    if kiln_testdata::missing("conformance/real-world") {
        return;
    }
    let deep_json = format!("FROM a\nCMD {}\n", "[".repeat(60_000));
    assert!(
        parse(&deep_json).is_ok(),
        "invalid JSON falls back to shell form"
    );
    let deep_braces = format!("FROM a\nENV x={}\n", "${a:-".repeat(20_000));
    let _ = parse(&deep_braces);
}

#[test]
fn the_checks_run_on_every_real_world_dockerfile_and_every_parser_case() {
    // Whatever parses can be checked: no panic, every finding on a line
    // of the file.
    let shared =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance");
    if !shared.is_dir() {
        assert!(
            std::env::var_os("CI").is_none(),
            "../shared/conformance is missing"
        );
        eprintln!("skipped: ../shared/conformance not found");
        return;
    }
    let mut checked = 0;
    let mut findings = 0;
    for entry in walkdir_files(&shared) {
        let Ok(text) = std::fs::read_to_string(&entry) else {
            continue;
        };
        let Ok(dockerfile) = kiln_dockerfile::parse(&text) else {
            continue;
        };
        let lines = text.lines().count() as u32;
        for warning in kiln_dockerfile::lint(&dockerfile) {
            assert!(
                warning.line >= 1 && warning.line <= lines.max(1),
                "{}: {warning:?}",
                entry.display()
            );
            findings += 1;
        }
        checked += 1;
    }
    assert!(checked > 100, "only {checked} files");
    assert!(findings > 0, "real Dockerfiles have findings");
}

/// Every file named `Dockerfile*` or `*.Dockerfile` under `dir`.
fn walkdir_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path);
            } else if path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .is_some_and(|n| n.starts_with("Dockerfile") || n.ends_with(".Dockerfile"))
            {
                out.push(path);
            }
        }
    }
    out
}
