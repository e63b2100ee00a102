//! `.dockerignore` conformance: every row of the shared upstream-derived
//! data (read in place, never copied), plus which ignore file `load` picks.

use std::fs;
use std::path::{Path, PathBuf};

use kiln_context::dockerignore::{load, read_patterns, Ignore};

fn data_dir() -> PathBuf {
    kiln_testdata::shared_path("conformance/dockerignore")
}

fn read(name: &str) -> String {
    let path = data_dir().join(name);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The answer the matcher gives for a row, in the data's own words.
fn outcome(api: &str, patterns: &[&str], path: &str) -> String {
    let result = Ignore::new(patterns).and_then(|ignore| match api {
        "parent" => ignore.matches(path),
        "legacy" => ignore.legacy_matches(path),
        other => panic!("unknown api {other:?}"),
    });
    match result {
        Ok(m) => m.to_string(),
        Err(_) => "error".to_string(),
    }
}

/// Runs every data row of a TSV (line 1 is the header) and reports all
/// failing rows at once, by line number.
fn check_rows(file: &str, row: impl Fn(&[&str]) -> (Vec<String>, String, String, String)) {
    let text = read(file);
    let mut failures = Vec::new();
    let mut count = 0;
    for (index, line) in text.lines().enumerate().skip(1) {
        let fields: Vec<&str> = line.split('\t').collect();
        let (patterns, path, expected, api) = row(&fields);
        let patterns: Vec<&str> = patterns.iter().map(String::as_str).collect();
        let got = outcome(&api, &patterns, &path);
        if got != expected {
            failures.push(format!(
                "{file} line {}: patterns {patterns:?} path {path:?} ({api}): expected {expected}, got {got}",
                index + 1
            ));
        }
        count += 1;
    }
    assert!(count > 0, "{file} has no rows");
    assert!(
        failures.is_empty(),
        "{} of {count} rows failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn single_pattern_cases() {
    if kiln_testdata::missing("conformance/dockerignore") {
        return;
    }
    check_rows("cases.tsv", |f| {
        assert!(f.len() >= 4, "short row {f:?}");
        (
            vec![f[0].to_string()],
            f[1].into(),
            f[2].into(),
            f[3].into(),
        )
    });
}

#[test]
fn pattern_list_cases() {
    if kiln_testdata::missing("conformance/dockerignore") {
        return;
    }
    check_rows("cases-multi.tsv", |f| {
        assert!(f.len() >= 4, "short row {f:?}");
        let patterns = f[4..].iter().map(|p| p.to_string()).collect();
        (patterns, f[0].into(), f[1].into(), f[2].into())
    });
}

#[test]
fn read_all() {
    if kiln_testdata::missing("conformance/dockerignore") {
        return;
    }
    let input = fs::read(data_dir().join("readall/input.dockerignore")).expect("input");
    let got = read_patterns(&String::from_utf8_lossy(&input));
    let expected: Vec<String> = read("readall/expected.txt")
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(got, expected);
}

#[test]
fn read_all_edge_cases() {
    if kiln_testdata::missing("conformance/dockerignore") {
        return;
    }
    let text = "\u{feff}# comment\r\n  # not a comment\r\n\t/\r\n!//a/./b/../c/\n";
    assert_eq!(
        read_patterns(text),
        ["# not a comment", "/", "!a/c"],
        "BOM, CRLF, indented #, root, cleaned exception"
    );
}

fn write(path: &Path, text: &str) {
    fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

#[test]
fn load_prefers_the_dockerfiles_own_ignore_file() {
    if kiln_testdata::missing("conformance/dockerignore") {
        return;
    }
    let context = tempfile::tempdir().expect("tempdir");
    let dockerfiles = tempfile::tempdir().expect("tempdir");
    let dockerfile = dockerfiles.path().join("app.Dockerfile");
    write(&dockerfile, "FROM scratch\n");
    write(&context.path().join(".dockerignore"), "from-context\n");
    write(
        &dockerfiles.path().join("app.Dockerfile.dockerignore"),
        "from-dockerfile\n",
    );

    let ignore = load(context.path(), &dockerfile).expect("load");
    assert!(ignore.matches("from-dockerfile").expect("match"));
    assert!(!ignore.matches("from-context").expect("match"));
}

#[test]
fn load_falls_back_to_the_context() {
    if kiln_testdata::missing("conformance/dockerignore") {
        return;
    }
    let context = tempfile::tempdir().expect("tempdir");
    let dockerfile = context.path().join("Dockerfile");
    write(&dockerfile, "FROM scratch\n");
    // Another Dockerfile's ignore file does not apply.
    write(&context.path().join("other.Dockerfile.dockerignore"), "x\n");
    write(
        &context.path().join(".dockerignore"),
        "node_modules\n!node_modules/keep\n",
    );

    let ignore = load(context.path(), &dockerfile).expect("load");
    assert!(ignore.matches("node_modules/a/b").expect("match"));
    assert!(!ignore.matches("node_modules/keep").expect("match"));
    assert!(!ignore.matches("x").expect("match"));
}

#[test]
fn load_without_ignore_files_excludes_nothing() {
    if kiln_testdata::missing("conformance/dockerignore") {
        return;
    }
    let context = tempfile::tempdir().expect("tempdir");
    let ignore = load(context.path(), &context.path().join("Dockerfile")).expect("load");
    assert!(ignore.is_empty());
    assert!(!ignore.matches("anything/at/all").expect("match"));
}

#[test]
fn load_reports_bad_patterns_and_unreadable_files() {
    if kiln_testdata::missing("conformance/dockerignore") {
        return;
    }
    let context = tempfile::tempdir().expect("tempdir");
    write(&context.path().join(".dockerignore"), "ok\na[\n");
    let err = load(context.path(), &context.path().join("Dockerfile")).expect_err("bad pattern");
    assert!(err.to_string().contains("a["), "{err}");

    let context = tempfile::tempdir().expect("tempdir");
    fs::create_dir(context.path().join(".dockerignore")).expect("mkdir");
    let err = load(context.path(), &context.path().join("Dockerfile")).expect_err("a directory");
    assert!(err.to_string().contains(".dockerignore"), "{err}");
}
