//! Runs the parser against every case in `../shared/conformance/`: BuildKit's
//! own parser cases, the negative cases, the extra expectations taken out of
//! BuildKit's Go tests, and the real-world corpus (dump and detailed AST).
//! Each test collects every failing case and reports them all at once.

use std::fs;
use std::path::{Path, PathBuf};

use kiln_dockerfile::heredoc::{heredocs_in_line, parse_heredoc_word};
use kiln_dockerfile::{dump, parse, parse_directives, Arguments, Instruction};
use serde_json::{json, Value};

fn conformance() -> PathBuf {
    kiln_testdata::shared_path("conformance")
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn case_dirs(folder: &str) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(conformance().join(folder))
        .unwrap_or_else(|e| panic!("{folder}: {e}"))
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("Dockerfile").is_file())
        .collect();
    dirs.sort();
    dirs
}

fn report(what: &str, total: usize, failures: Vec<String>) {
    assert!(total > 0, "{what}: no cases found");
    assert!(
        failures.is_empty(),
        "{what}: {} of {total} cases failed:\n{}",
        failures.len(),
        failures.join("\n---\n")
    );
}

#[test]
fn buildkit_parser_cases_dump_exactly() {
    if kiln_testdata::missing("conformance") {
        return;
    }
    let dirs = case_dirs("buildkit-parser");
    let mut failures = Vec::new();
    for dir in &dirs {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let source = read(&dir.join("Dockerfile"));
        let expected = read(&dir.join("result"));
        match parse(&source) {
            Ok(df) => {
                let got = dump(&df);
                if got != expected {
                    failures.push(format!("{name}:\n got:\n{got}\n want:\n{expected}"));
                }
            }
            Err(e) => failures.push(format!("{name}: parse error {e}")),
        }
    }
    report("buildkit-parser", dirs.len(), failures);
}

#[test]
fn negative_cases_fail_to_parse() {
    if kiln_testdata::missing("conformance") {
        return;
    }
    let dirs = case_dirs("buildkit-parser-negative");
    let mut failures = Vec::new();
    for dir in &dirs {
        let source = read(&dir.join("Dockerfile"));
        if let Ok(df) = parse(&source) {
            failures.push(format!("{}: parsed as\n{}", dir.display(), dump(&df)));
        }
    }
    report("buildkit-parser-negative", dirs.len(), failures);
}

fn real_world_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(conformance().join("real-world"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "Dockerfile"))
        .collect();
    files.sort();
    files
}

#[test]
fn real_world_dumps_match() {
    if kiln_testdata::missing("conformance") {
        return;
    }
    let files = real_world_files();
    let mut failures = Vec::new();
    for file in &files {
        let expected = read(&file.with_extension("result"));
        match parse(&read(file)) {
            Ok(df) => {
                let got = dump(&df);
                if got != expected {
                    let diff = got
                        .lines()
                        .zip(expected.lines())
                        .find(|(g, w)| g != w)
                        .map(|(g, w)| format!(" got:  {g}\n want: {w}"))
                        .unwrap_or_else(|| "line count differs".into());
                    failures.push(format!("{}:\n{diff}", file.display()));
                }
            }
            Err(e) => failures.push(format!("{}: parse error {e}", file.display())),
        }
    }
    report("real-world dumps", files.len(), failures);
}

/// The ast.json shape of an instruction's arguments.
fn args_json(args: &Arguments) -> Vec<Value> {
    let strings = |items: &[kiln_dockerfile::Arg]| items.iter().map(|a| json!(a.value)).collect();
    match args {
        Arguments::None | Arguments::Unknown => Vec::new(),
        Arguments::Text(a) => vec![json!(a.value)],
        Arguments::Exec(items) | Arguments::List(items) => strings(items),
        Arguments::KeyValues { pairs, legacy } => pairs
            .iter()
            .flat_map(|p| {
                [
                    json!(p.key.value),
                    json!(p.value.value),
                    json!(if *legacy { "" } else { "=" }),
                ]
            })
            .collect(),
        Arguments::Healthcheck { kind, command } => {
            let mut out = vec![json!(kind.value)];
            out.extend(args_json(command));
            out
        }
        Arguments::Onbuild(inner) => vec![instruction_json(inner, true)],
    }
}

fn instruction_json(ins: &Instruction, nested: bool) -> Value {
    let mut args = args_json(&ins.args);
    if matches!(ins.args, Arguments::Unknown) {
        args = vec![json!("")];
    }
    json!({
        "keyword": ins.keyword,
        "flags": ins.flags.iter().map(|f| f.text.clone()).collect::<Vec<_>>(),
        "args": args,
        "json_form": ins.is_json_form(),
        "start_line": if nested { 0 } else { ins.start_line },
        "end_line": if nested { 0 } else { ins.end_line },
        "original": ins.original,
        "heredocs": if nested { json!([]) } else {
            ins.heredocs.iter().map(|h| json!({
                "name": h.name, "content": h.content, "expand": h.expand, "chomp": h.chomp, "fd": h.fd,
            })).collect::<Value>()
        },
    })
}

/// Fields of ast.json we compare; upstream leaves `args` empty for an
/// unknown keyword in the AST but prints `""` in the dump.
fn comparable(expected: &Value) -> Value {
    let mut v = expected.clone();
    if let Some(args) = v.get_mut("args").and_then(Value::as_array_mut) {
        for arg in args.iter_mut() {
            if arg.is_object() {
                *arg = comparable(arg);
            }
        }
    }
    v
}

#[test]
fn real_world_asts_match() {
    if kiln_testdata::missing("conformance") {
        return;
    }
    let files = real_world_files();
    let mut failures = Vec::new();
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        let expected: Value =
            serde_json::from_str(&read(&file.with_extension("ast.json"))).unwrap();
        let Ok(df) = parse(&read(file)) else {
            failures.push(format!("{name}: parse error"));
            continue;
        };
        if expected["escape_token"] != json!(df.escape.to_string()) {
            failures.push(format!(
                "{name}: escape {:?} want {}",
                df.escape, expected["escape_token"]
            ));
        }
        let warnings: Vec<Value> = df
            .warnings
            .iter()
            .filter(|w| w.message.starts_with("Empty continuation line"))
            .map(|w| json!(w.message))
            .collect();
        if json!(warnings) != expected["warnings"] {
            failures.push(format!(
                "{name}: warnings {warnings:?} want {}",
                expected["warnings"]
            ));
        }
        let want = expected["instructions"].as_array().unwrap();
        if want.len() != df.instructions.len() {
            failures.push(format!(
                "{name}: {} instructions, want {}",
                df.instructions.len(),
                want.len()
            ));
            continue;
        }
        for (ins, want) in df.instructions.iter().zip(want) {
            let mut got = instruction_json(ins, false);
            if matches!(ins.args, Arguments::Unknown) && want["args"] == json!([]) {
                got["args"] = json!([]);
            }
            if got != comparable(want) {
                failures.push(format!("{name}:\n got:  {got}\n want: {want}"));
            }
        }
    }
    report("real-world ASTs", files.len(), failures);
}

#[test]
fn line_numbers() {
    if kiln_testdata::missing("conformance") {
        return;
    }
    let dir = conformance().join("buildkit-parser-extra/line-numbers");
    let df = parse(&read(&dir.join("Dockerfile"))).unwrap();
    let mut checked = 0;
    for row in read(&dir.join("expected-lines.tsv")).lines().skip(1) {
        let cols: Vec<&str> = row.split('\t').collect();
        let (start, end): (u32, u32) = (cols[1].parse().unwrap(), cols[2].parse().unwrap());
        let got = if cols[0] == "root" {
            (
                df.instructions.first().unwrap().start_line,
                df.instructions.last().unwrap().end_line,
            )
        } else {
            let ins = &df.instructions[cols[0].parse::<usize>().unwrap()];
            (ins.start_line, ins.end_line)
        };
        assert_eq!(got, (start, end), "node {}", cols[0]);
        checked += 1;
    }
    assert_eq!(checked, 4);
}

#[test]
fn heredoc_extraction() {
    if kiln_testdata::missing("conformance") {
        return;
    }
    let dir = conformance().join("buildkit-parser-extra/heredoc-extract");
    let df = parse(&read(&dir.join("Dockerfile"))).unwrap();
    let expected: Value = serde_json::from_str(&read(&dir.join("expected.json"))).unwrap();
    let mut failures = Vec::new();
    for case in expected.as_array().unwrap() {
        let ins = &df.instructions[case["child"].as_u64().unwrap() as usize];
        if ins.start_line as u64 != case["line"].as_u64().unwrap() || ins.original != case["text"] {
            failures.push(format!(
                "child {}: at {} {:?}",
                case["child"], ins.start_line, ins.original
            ));
        }
        if case["heredocs"].is_null() {
            continue;
        }
        let got: Value = ins
            .heredocs
            .iter()
            .map(|h| json!({"name": h.name, "content": h.content, "expand": h.expand, "chomp": h.chomp, "fd": h.fd}))
            .collect();
        if got != case["heredocs"] {
            failures.push(format!(
                "child {}: {got} want {}",
                case["child"], case["heredocs"]
            ));
        }
    }
    report(
        "heredoc-extract",
        expected.as_array().unwrap().len(),
        failures,
    );

    let dir = conformance().join("buildkit-parser-extra/heredoc-json-form");
    let df = parse(&read(&dir.join("Dockerfile"))).unwrap();
    let expected: Value = serde_json::from_str(&read(&dir.join("expected.json"))).unwrap();
    for case in expected.as_array().unwrap() {
        let ins = &df.instructions[case["child"].as_u64().unwrap() as usize];
        assert!(
            ins.heredocs.is_empty(),
            "json form child {} has heredocs",
            case["child"]
        );
        assert!(ins.is_json_form());
    }
}

fn tsv_rows(name: &str) -> Vec<Vec<String>> {
    read(&conformance().join("buildkit-parser-extra").join(name))
        .lines()
        .skip(1)
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

#[test]
fn heredoc_words() {
    if kiln_testdata::missing("conformance") {
        return;
    }
    let rows = tsv_rows("heredoc-words.tsv");
    let mut failures = Vec::new();
    for row in &rows {
        let (word, expected) = (&row[0], &row[1]);
        let got = match parse_heredoc_word(word) {
            Ok(Some(h)) => h.name,
            Ok(None) => "none".into(),
            Err(_) => "error".into(),
        };
        if &got != expected {
            failures.push(format!("{word:?}: got {got}, want {expected}"));
        }
    }
    report("heredoc-words", rows.len(), failures);
}

#[test]
fn heredoc_lines() {
    if kiln_testdata::missing("conformance") {
        return;
    }
    let rows = tsv_rows("heredoc-lines.tsv");
    let mut failures = Vec::new();
    for row in &rows {
        let want: Vec<&str> = row[1..]
            .iter()
            .map(String::as_str)
            .filter(|s| !s.is_empty())
            .collect();
        match heredocs_in_line(&row[0]) {
            Ok(found) => {
                let names: Vec<&str> = found.iter().map(|h| h.name.as_str()).collect();
                if names != want {
                    failures.push(format!("{:?}: got {names:?}, want {want:?}", row[0]));
                }
            }
            Err(e) => failures.push(format!("{:?}: error {e}", row[0])),
        }
    }
    report("heredoc-lines", rows.len(), failures);
}

#[test]
fn parse_words_of_arg() {
    if kiln_testdata::missing("conformance") {
        return;
    }
    let rows = tsv_rows("parse-words.tsv");
    let mut failures = Vec::new();
    for row in &rows {
        let want = &row[1..];
        let got = match parse(&format!("ARG {}", row[0])) {
            Ok(df) => match &df.instructions[0].args {
                Arguments::List(items) => items.iter().map(|a| a.value.clone()).collect(),
                other => vec![format!("{other:?}")],
            },
            Err(e) => vec![e.to_string()],
        };
        if got != want {
            failures.push(format!("{:?}: got {got:?}, want {want:?}", row[0]));
        }
    }
    report("parse-words", rows.len(), failures);
}

fn jsonl(path: &str) -> Vec<Value> {
    read(&conformance().join(path))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn json_arrays() {
    if kiln_testdata::missing("conformance") {
        return;
    }
    let cases = jsonl("buildkit-parser-extra/json-arrays.jsonl");
    let mut failures = Vec::new();
    for case in &cases {
        let input = case["input"].as_str().unwrap();
        let result = parse(&format!("CMD {input}"));
        match (case["valid"].as_bool().unwrap(), result) {
            (true, Ok(df)) => match &df.instructions[0].args {
                Arguments::Exec(items) => {
                    let got: Vec<&str> = items.iter().map(|a| a.value.as_str()).collect();
                    if json!(got) != case["values"] {
                        failures.push(format!("{input:?}: got {got:?}, want {}", case["values"]));
                    }
                }
                Arguments::None if case["values"] == json!([]) => {}
                other => failures.push(format!("{input:?}: not exec form: {other:?}")),
            },
            (true, Err(e)) => failures.push(format!("{input:?}: error {e}")),
            (false, Ok(_)) => failures.push(format!("{input:?}: parsed, want an error")),
            (false, Err(_)) => {}
        }
    }
    report("json-arrays", cases.len(), failures);
}

#[test]
fn directives() {
    if kiln_testdata::missing("conformance") {
        return;
    }
    let cases = jsonl("buildkit-parser-extra/directives.jsonl");
    let mut failures = Vec::new();
    for case in &cases {
        let input = case["input"].as_str().unwrap();
        match case["func"].as_str().unwrap() {
            "ParseAll" => {
                let got: Value = parse_directives(input)
                    .unwrap()
                    .iter()
                    .map(|d| json!({"name": d.name, "value": d.value}))
                    .collect();
                if got != case["expected"] {
                    failures.push(format!(
                        "ParseAll {input:?}: got {got}, want {}",
                        case["expected"]
                    ));
                }
            }
            func => {
                let found = if func == "DetectSyntax" {
                    kiln_dockerfile::detect_syntax(input)
                } else {
                    kiln_dockerfile::detect_check(input)
                };
                let mut ok = found.is_some() == case["found"].as_bool().unwrap();
                if let Some(d) = &found {
                    ok &= case.get("value").is_none_or(|v| v == &json!(d.value));
                    ok &= case.get("cmdline").is_none_or(|v| v == &json!(d.cmdline));
                    ok &= case.get("line").is_none_or(|v| v == &json!(d.line));
                } else {
                    ok &= case.get("value").is_none_or(|v| v == "");
                }
                if !ok {
                    failures.push(format!("{func} {input:?}: got {found:?}, want {case}"));
                }
            }
        }
    }
    report("directives", cases.len(), failures);
}

#[test]
fn empty_continuation_warnings() {
    if kiln_testdata::missing("conformance") {
        return;
    }
    let dir = conformance().join("buildkit-parser-extra/empty-continuation-warning");
    let df = parse(&read(&dir.join("Dockerfile"))).unwrap();
    let expected: Value = serde_json::from_str(&read(&dir.join("expected.json"))).unwrap();
    let warnings: Vec<_> = df
        .warnings
        .iter()
        .filter(|w| w.message.starts_with("Empty continuation"))
        .collect();
    assert_eq!(
        warnings.len() as u64,
        expected["warning_count"].as_u64().unwrap()
    );
    for (warning, want) in warnings
        .iter()
        .zip(expected["warnings"].as_array().unwrap())
    {
        for needle in want["short_contains"].as_array().unwrap() {
            assert!(
                warning.message.contains(needle.as_str().unwrap()),
                "{} lacks {needle}",
                warning.message
            );
        }
        if let Some(detail) = want.get("detail0_contains") {
            assert!(warning
                .detail
                .as_deref()
                .unwrap()
                .contains(detail.as_str().unwrap()));
        }
    }
}
