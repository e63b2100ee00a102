//! Every Dockerfile of `../shared/conformance/real-world` plans with no
//! build args and empty base configs, except the ones listed here, which
//! fail for a reason of their own (checked, so the list cannot go stale).

use std::fs;

use kiln_graph::{plan, PlanOptions};

/// (file name, what the error must say, why it cannot plan).
const EXPECTED_FAILURES: &[(&str, &str, &str)] = &[
    (
        "moby+buildkit__frontend__dockerfile__docs__reference.md__L1153.Dockerfile",
        "no FROM",
        "a snippet from Docker's reference (LABEL examples), not a whole Dockerfile",
    ),
    (
        "moby+buildkit__frontend__dockerfile__docs__reference.md__L1285.Dockerfile",
        "no FROM",
        "a snippet (ENV examples) without FROM",
    ),
    (
        "moby+buildkit__frontend__dockerfile__docs__reference.md__L1872.Dockerfile",
        "no FROM",
        "a snippet (COPY --chmod example) without FROM",
    ),
    (
        "moby+buildkit__frontend__dockerfile__docs__reference.md__L1892.Dockerfile",
        "no FROM",
        "a snippet (COPY --chown examples) without FROM",
    ),
    (
        "moby+buildkit__frontend__dockerfile__docs__reference.md__L575.Dockerfile",
        "no FROM",
        "a snippet (RUN heredoc example) without FROM",
    ),
    (
        "moby+buildkit__frontend__dockerfile__docs__reference.md__L702.Dockerfile",
        "no FROM",
        "a snippet (RUN heredoc example) without FROM",
    ),
    (
        "moby+buildkit__frontend__dockerfile__docs__reference.md__L1705.Dockerfile",
        "refers to the current stage",
        "a snippet whose last line belongs to another stage: as written, the build stage copies from itself (BuildKit: circular dependency)",
    ),
];

#[test]
fn real_world_dockerfiles_plan() {
    if kiln_testdata::missing("conformance/real-world") {
        return;
    }
    let dir = kiln_testdata::shared_path("conformance/real-world");
    let mut files: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "Dockerfile"))
        .collect();
    files.sort();
    assert!(files.len() > 100, "real-world corpus missing");
    let mut problems = Vec::new();
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let text = fs::read_to_string(path).unwrap();
        let dockerfile = kiln_dockerfile::parse(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let result = plan(&dockerfile, &PlanOptions::default());
        let expected = EXPECTED_FAILURES.iter().find(|(file, _, _)| *file == name);
        match (result, expected) {
            (Ok(graph), None) => {
                if graph.nodes.is_empty() {
                    problems.push(format!("{name}: planned no steps"));
                }
            }
            (Err(e), None) => problems.push(format!("{name}: {}", e.render(&name, &text))),
            (Ok(_), Some(_)) => problems.push(format!("{name}: listed as failing but plans")),
            (Err(e), Some((_, needle, _))) if !e.message.contains(needle) => {
                problems.push(format!("{name}: expected {needle:?}, got {e}"))
            }
            (Err(_), Some(_)) => {}
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}
