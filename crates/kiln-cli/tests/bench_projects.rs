//! The benchmark projects of `../shared/bench/projects` build on a busybox
//! base, their images hold what the Dockerfiles compute, and `kiln run`
//! prints what their CMDs say. Alone in its test binary: `multistage` keeps
//! both cores busy for seconds, which would skew the timing bound of the
//! parallel-stages test if they ran side by side.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{kiln, ok, text, umoci_unpack};

fn bench_project(name: &str) -> PathBuf {
    kiln_testdata::shared_path("bench/projects").join(name)
}

#[test]
fn the_benchmark_projects_build_and_compute_what_they_say() {
    if kiln_testdata::missing("bench/projects") {
        return;
    }
    let s = common::busybox_workspace();
    for project in ["small", "edit", "multistage"] {
        let out = kiln(
            &s.root,
            &[
                "build",
                "-t",
                project,
                bench_project(project).to_str().unwrap(),
            ],
        );
        assert!(out.status.success(), "{project}: {}", text(&out.stderr));
    }
    let small = umoci_unpack(&s.root, "small", &s.work.join("small"));
    assert_eq!(
        fs::read_to_string(small.join("app/out/mode.txt")).unwrap(),
        "built in bench mode\n",
        "ENV reached the RUN"
    );
    assert_eq!(
        fs::read_link(small.join("app/mode")).unwrap(),
        Path::new("/app/out/mode.txt")
    );
    let sums = fs::read_to_string(small.join("app/out/SHA256SUMS")).unwrap();
    assert_eq!(sums.lines().count(), 3, "{sums}");

    let edit = umoci_unpack(&s.root, "edit", &s.work.join("edit"));
    assert_eq!(
        fs::read_to_string(edit.join("app/cfg/setup.txt")).unwrap(),
        "static setup\n"
    );
    assert!(fs::read_to_string(edit.join("app/out/count.txt"))
        .unwrap()
        .ends_with(" /app/out/all.txt\n"));

    let multi = umoci_unpack(&s.root, "multistage", &s.work.join("multistage"));
    let summary = fs::read_to_string(multi.join("result/summary.txt")).unwrap();
    assert!(summary.starts_with("loop=1200000\n"), "{summary}");
    assert!(summary.ends_with("awk=285084\n"), "{summary}");
    // sha256 of 256 MiB of zeros.
    assert!(summary.contains("a6d72ac7690f53be6ae46ba88506bd97302a093f7108472bd9efc3cefda06484"));

    // And under `kiln run`, each prints what its CMD says.
    let run = |image: &str| ok(kiln(&s.root, &["run", "--rm", image]));
    let small_out = run("small");
    assert!(
        small_out.starts_with("built in bench mode\n"),
        "{small_out}"
    );
    assert_eq!(small_out.lines().count(), 4, "{small_out}");
    assert!(run("edit").contains("/app/out/all.txt"));
    assert_eq!(run("multistage"), summary);
    let left = ok(kiln(&s.root, &["ps", "-a", "-q"]));
    assert_eq!(left, "", "--rm removed them");
}
