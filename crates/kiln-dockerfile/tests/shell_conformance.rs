//! Runs the shell-word lexer against BuildKit's conformance data in
//! `shared/conformance/shell-lexer` (see its `FORMAT.md`). The data is read in
//! place, never copied. Every test collects all failing cases and reports them
//! together in one assertion.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::PathBuf;

use kiln_dockerfile::shell::{Env, Lexer};
use serde_json::Value;

fn data_path(name: &str) -> PathBuf {
    kiln_testdata::shared_path("conformance/shell-lexer").join(name)
}

fn read_data(name: &str) -> String {
    let path = data_path(name);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn report(file: &str, cases: usize, failures: &[String]) {
    eprintln!("{file}: {cases} cases, {} failed", failures.len());
    assert!(cases > 0, "{file}: no cases found");
    assert!(
        failures.is_empty(),
        "{file}: {} of {cases} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn env_var_test() {
    if kiln_testdata::missing("conformance/shell-lexer") {
        return;
    }
    let env = [
        ("PWD", "/home"),
        ("SHELL", "bash"),
        ("KOREAN", "한국어"),
        ("NULL", ""),
    ];
    let lex = Lexer::new('\\');
    let mut cases = 0;
    let mut failures = Vec::new();
    for (n, line) in read_data("envVarTest").lines().enumerate() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split('|').map(str::trim).collect();
        assert_eq!(fields.len(), 3, "envVarTest:{}: bad line {line:?}", n + 1);
        let (platform, input, expected) = (fields[0], fields[1], fields[2]);
        match platform {
            "A" | "U" => {}
            "W" => continue,
            other => panic!("envVarTest:{}: unknown platform {other:?}", n + 1),
        }
        cases += 1;
        let got = lex.expand_word(input, &env);
        let ok = match (&got, expected) {
            (Err(_), "error") => true,
            (Ok(value), expected) => expected != "error" && value == expected,
            (Err(_), _) => false,
        };
        if !ok {
            failures.push(format!(
                "  line {}: {input:?}: got {got:?}, expected {expected:?}",
                n + 1
            ));
        }
    }
    report("envVarTest", cases, &failures);
}

#[test]
fn words_test() {
    if kiln_testdata::missing("conformance/shell-lexer") {
        return;
    }
    let lex = Lexer::new('\\');
    let mut env: Vec<(String, String)> = Vec::new();
    let mut cases = 0;
    let mut failures = Vec::new();
    for (n, line) in read_data("wordsTest").lines().enumerate() {
        if line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix("ENV ") {
            let rest = rest.trim_start_matches(' ');
            let (name, value) = rest
                .split_once('=')
                .unwrap_or_else(|| panic!("wordsTest:{}: bad ENV line {line:?}", n + 1));
            env.push((name.to_owned(), value.to_owned()));
            continue;
        }
        let (input, expected) = line
            .split_once('|')
            .unwrap_or_else(|| panic!("wordsTest:{}: bad line {line:?}", n + 1));
        assert!(
            !expected.contains('|'),
            "wordsTest:{}: more than one '|' in {line:?}",
            n + 1
        );
        let input = input.trim();
        let expected: Vec<&str> = expected.trim_start_matches(' ').split(',').collect();
        let expect_error = expected == ["error"];
        cases += 1;
        let got = lex.expand_words(input, &env);
        let ok = match &got {
            Err(_) => expect_error,
            Ok(words) => !expect_error && *words == expected,
        };
        if !ok {
            failures.push(format!(
                "  line {}: {input:?}: got {got:?}, expected {}",
                n + 1,
                if expect_error {
                    "an error".to_owned()
                } else {
                    format!("{expected:?}")
                }
            ));
        }
    }
    report("wordsTest", cases, &failures);
}

/// One record of the `.jsonl` files.
struct Record {
    line: usize,
    input: String,
    env: HashMap<String, String>,
    error: bool,
    error_contains: Option<String>,
    expected: Option<String>,
    matched: Option<BTreeSet<String>>,
    unmatched: Option<BTreeSet<String>>,
}

fn string_set(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .expect("a list of names")
        .iter()
        .map(|n| n.as_str().expect("a name").to_owned())
        .collect()
}

fn read_jsonl(name: &str) -> Vec<Record> {
    read_data(name)
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(n, line)| {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{name}:{}: bad JSON: {e}", n + 1));
            let env = v["env"]
                .as_object()
                .expect("env object")
                .iter()
                .map(|(k, val)| (k.clone(), val.as_str().expect("string value").to_owned()))
                .collect();
            Record {
                line: n + 1,
                input: v["input"].as_str().expect("input").to_owned(),
                env,
                error: v["error"].as_bool().unwrap_or(false),
                error_contains: v
                    .get("error_contains")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                expected: v.get("expected").and_then(Value::as_str).map(str::to_owned),
                matched: v.get("matched").map(string_set),
                unmatched: v.get("unmatched").map(string_set),
            }
        })
        .collect()
}

fn run_jsonl(name: &str) {
    let lex = Lexer::new('\\');
    let records = read_jsonl(name);
    let mut failures = Vec::new();
    for r in &records {
        let env: &dyn Env = &r.env;
        let got = lex.expand_with_matches(&r.input, env);
        let mut problems = Vec::new();
        match &got {
            Err(e) if r.error => {
                if let Some(want) = &r.error_contains {
                    if !e.to_string().contains(want.as_str()) {
                        problems.push(format!(
                            "error {:?} does not contain {want:?}",
                            e.to_string()
                        ));
                    }
                }
            }
            Err(e) => problems.push(format!("unexpected error {:?}", e.to_string())),
            Ok(x) if r.error => problems.push(format!("expected an error, got {:?}", x.value)),
            Ok(x) => {
                if let Some(want) = &r.expected {
                    if &x.value != want {
                        problems.push(format!("value {:?}, expected {want:?}", x.value));
                    }
                }
                if let Some(want) = &r.matched {
                    if &x.matched != want {
                        problems.push(format!("matched {:?}, expected {want:?}", x.matched));
                    }
                }
                if let Some(want) = &r.unmatched {
                    if &x.unmatched != want {
                        problems.push(format!("unmatched {:?}, expected {want:?}", x.unmatched));
                    }
                }
            }
        }
        if !problems.is_empty() {
            failures.push(format!(
                "  line {}: {:?} env {:?}: {}",
                r.line,
                r.input,
                r.env,
                problems.join("; ")
            ));
        }
    }
    report(name, records.len(), &failures);
}

#[test]
fn process_with_matches() {
    if kiln_testdata::missing("conformance/shell-lexer") {
        return;
    }
    run_jsonl("process-with-matches.jsonl");
}

#[test]
fn process_word_extra() {
    if kiln_testdata::missing("conformance/shell-lexer") {
        return;
    }
    run_jsonl("process-word-extra.jsonl");
}
