//! Drives the real `kiln plan`: text, JSON and dot output, build args,
//! targets, warnings and error exits.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn kiln_plan(args: &[&str], dockerfile: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("plan")
        .args(["-f", "-"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(dockerfile.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const MULTISTAGE: &str = "ARG BASE=alpine:3.20\n\
FROM $BASE AS build\n\
ARG VERSION=dev\n\
RUN echo $VERSION > /v\n\
FROM $BASE AS unused\n\
RUN false\n\
FROM scratch\n\
COPY --from=build /v /v\n";

#[test]
fn text_plan_shows_stages_steps_and_pruning() {
    let out = kiln_plan(
        &["--build-arg", "VERSION=1.2", "--platform", "linux/arm64"],
        MULTISTAGE,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with("target: stage-2 (platform linux/arm64), 2 of 3 stages, 5 steps"),
        "{stdout}"
    );
    assert!(
        stdout.contains("stage 0 [build] from alpine:3.20 (linux/arm64), line 2"),
        "{stdout}"
    );
    assert!(
        stdout.contains("COPY --from=build /v /v  <- stage build"),
        "{stdout}"
    );
    assert!(
        stdout.contains("pruned (not needed by the target): unused (line 5)"),
        "{stdout}"
    );
    // Steps are numbered from 1, as `kiln build` shows them.
    assert!(
        stdout.contains("  #1   1/3 line 2    FROM alpine:3.20"),
        "{stdout}"
    );
    assert!(!stdout.contains("#0 "), "{stdout}");
}

#[test]
fn json_plan_carries_cache_inputs() {
    let out = kiln_plan(
        &["--format", "json", "--build-arg", "VERSION=1.2"],
        MULTISTAGE,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let graph: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let run = graph["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["op"]["op"] == "run")
        .unwrap();
    assert_eq!(
        run["inputs"]["build_args"],
        serde_json::json!([["VERSION", "1.2"]])
    );
    assert_eq!(
        run["op"]["argv"],
        serde_json::json!(["/bin/sh", "-c", "echo $VERSION > /v"])
    );
}

#[test]
fn dot_output_is_a_digraph_with_cross_stage_edges() {
    let out = kiln_plan(&["--format", "dot"], MULTISTAGE);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let dot = text(&out.stdout);
    assert!(dot.starts_with("digraph build {"), "{dot}");
    assert!(dot.contains("subgraph cluster_0"), "{dot}");
    assert!(
        !dot.contains("subgraph cluster_1"),
        "pruned stage drawn: {dot}"
    );
    assert!(dot.contains("n2 -> n4 [style=dashed];"), "{dot}");
    assert!(dot.trim_end().ends_with('}'));
}

#[test]
fn target_and_unused_build_arg_warning() {
    let out = kiln_plan(&["--target", "unused", "--build-arg", "NOPE=1"], MULTISTAGE);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("target: unused"));
    assert!(text(&out.stderr).contains("warning: build arg NOPE was not consumed"));
}

#[test]
fn plan_errors_exit_1_with_position() {
    let out = kiln_plan(&[], "FROM alpine\nCOPY --from=0 /a /b\n");
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("error: -:2:6: COPY --from refers to the current stage"),
        "{stderr}"
    );
    assert!(stderr.contains("    2 | COPY --from=0 /a /b"), "{stderr}");
    let out = kiln_plan(&["--target", "nope"], MULTISTAGE);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("target stage \"nope\" could not be found"));
}

#[test]
fn plans_the_example_project() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/hello");
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["plan", example.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("RUN <<EOF"));
}
