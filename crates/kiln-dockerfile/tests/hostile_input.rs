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
