//! `kiln bench cache` end to end: the real binary replays git histories a
//! test makes (20 commits each) on a busybox base, and what it reports is
//! checked against what the test computes by hand: per-step hits, the
//! ideal, and the advice on a Dockerfile written to waste the cache. The
//! SVG is rendered with headless Chromium (in a network namespace of its
//! own, so it reaches nothing) and the picture checked to show hits and
//! misses.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::{kiln, ok, text};
use serde_json::Value;

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(1) == 0
}

fn git(repo: &Path, args: &[&str]) {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .env("GIT_AUTHOR_DATE", "2026-01-01T00:00:00Z")
        .env("GIT_COMMITTER_DATE", "2026-01-01T00:00:00Z")
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", text(&out.stderr));
}

/// What commit `i` (from 1) of the scripted history changes.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Change {
    First,
    Package,
    Readme,
    Source,
}

fn change_of(i: usize) -> Change {
    match i {
        1 => Change::First,
        i if i % 5 == 0 => Change::Package,
        i if i % 7 == 0 => Change::Readme,
        _ => Change::Source,
    }
}

/// A repository of 20 commits with `dockerfile`: package.txt, README and
/// src/a.txt change as [`change_of`] says.
fn scripted_repo(dir: &Path, dockerfile: &str) -> std::path::PathBuf {
    let repo = dir.join("repo");
    fs::create_dir_all(repo.join("src")).unwrap();
    git(&repo, &["init", "-q"]);
    git(&repo, &["config", "user.email", "bench@kiln.test"]);
    git(&repo, &["config", "user.name", "bench"]);
    fs::write(repo.join("Dockerfile"), dockerfile).unwrap();
    fs::write(repo.join("package.txt"), "dependency 0\n").unwrap();
    fs::write(repo.join("README"), "readme 0\n").unwrap();
    fs::write(repo.join("src/a.txt"), "source 0\n").unwrap();
    for i in 1..=20 {
        match change_of(i) {
            Change::First => {}
            Change::Package => {
                fs::write(repo.join("package.txt"), format!("dependency {i}\n")).unwrap()
            }
            Change::Readme => fs::write(repo.join("README"), format!("readme {i}\n")).unwrap(),
            Change::Source => fs::write(repo.join("src/a.txt"), format!("source {i}\n")).unwrap(),
        }
        git(&repo, &["add", "-A"]);
        git(
            &repo,
            &[
                "commit",
                "-q",
                "-m",
                &format!("commit {i}: {:?}", change_of(i)),
            ],
        );
    }
    repo
}

fn bench_json(root: &Path, args: &[&str]) -> Value {
    let mut all = vec!["bench", "cache"];
    all.extend(args);
    all.extend(["--format", "json"]);
    serde_json::from_str(&ok(kiln(root, &all))).unwrap()
}

/// The step whose title ends with `instruction`.
fn step<'a>(report: &'a Value, instruction: &str) -> &'a Value {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"].as_str().unwrap().ends_with(instruction))
        .unwrap_or_else(|| panic!("no step {instruction} in {}", report["steps"]))
}

fn count(n: impl Iterator<Item = bool>) -> u64 {
    n.filter(|b| *b).count() as u64
}

#[test]
fn a_scripted_history_gets_the_hit_rates_computed_by_hand() {
    if !is_root() {
        eprintln!("skipped: RUN needs root");
        return;
    }
    let s = common::busybox_workspace();
    let repo = scripted_repo(
        &s.work,
        "FROM busybox\nCOPY package.txt /app/\nRUN cat /app/package.txt > /app/deps\n\
         COPY src/ /app/src/\nRUN cat /app/src/* > /app/bundle\n",
    );
    let head = fs::read_to_string(repo.join(".git/HEAD")).unwrap();
    let svg = s.work.join("replay.svg");
    let report = bench_json(
        &s.root,
        &[
            "--git",
            repo.to_str().unwrap(),
            "--last",
            "20",
            "--plot",
            svg.to_str().unwrap(),
        ],
    );
    assert_eq!(report["schema"], "kiln.bench.cache/v1");
    assert_eq!(report["totals"]["builds"], 20);
    assert_eq!(report["totals"]["failed"], 0);
    let changes: Vec<Change> = (1..=20).map(change_of).collect();
    let later = || changes.iter().skip(1);
    // By hand: a step hits when nothing it or a step before it reads
    // changed (the key chains); ideally only when what it reads did.
    let package_hits = count(later().map(|c| *c != Change::Package));
    let source_hits = count(later().map(|c| matches!(c, Change::Readme)));
    let source_ideal = count(later().map(|c| *c != Change::Source));
    for (instruction, hits, ideal) in [
        ("COPY package.txt /app/", package_hits, package_hits),
        (
            "RUN cat /app/package.txt > /app/deps",
            package_hits,
            package_hits,
        ),
        ("COPY src/ /app/src/", source_hits, source_ideal),
        (
            "RUN cat /app/src/* > /app/bundle",
            source_hits,
            source_ideal,
        ),
    ] {
        let step = step(&report, instruction);
        assert_eq!(step["builds"], 20, "{instruction}");
        assert_eq!(step["hits"], hits, "{instruction}: {step}");
        assert_eq!(step["rebuilt"], 20 - hits, "{instruction}");
        assert_eq!(step["ideal_hits"], ideal, "{instruction}: {step}");
    }
    let total_hits = 2 * package_hits + 2 * source_hits;
    assert_eq!(report["totals"]["hits"], total_hits);
    assert_eq!(report["totals"]["steps"], 80);
    // The first miss of each build, as a person would find it.
    let builds = report["builds"].as_array().unwrap();
    assert_eq!(
        builds[4]["first_miss"],
        step(&report, "COPY package.txt /app/")["step"]
    );
    assert_eq!(
        builds[6]["first_miss"],
        Value::Null,
        "a README change misses nothing"
    );
    assert!(builds[0]["no_cache_seconds"].as_f64().is_some());
    // The well-ordered Dockerfile gets no advice.
    assert_eq!(report["advice"], serde_json::json!([]));
    // The user's repository is as it was.
    assert_eq!(fs::read_to_string(repo.join(".git/HEAD")).unwrap(), head);
    let status = Command::new("git")
        .args(["-C", repo.to_str().unwrap(), "status", "--porcelain"])
        .output()
        .unwrap();
    assert_eq!(text(&status.stdout), "");
    assert!(!repo.join(".git/index.lock").exists());

    // Table and CSV say the same.
    let table = ok(kiln(
        &s.root,
        &[
            "bench",
            "cache",
            "--git",
            repo.to_str().unwrap(),
            "--no-baseline",
        ],
    ));
    assert!(
        table.contains(&format!("{total_hits} of 80 steps cached")),
        "{table}"
    );
    let csv = ok(kiln(
        &s.root,
        &[
            "bench",
            "cache",
            "--git",
            repo.to_str().unwrap(),
            "--last",
            "3",
            "--format",
            "csv",
            "--no-baseline",
        ],
    ));
    assert_eq!(csv.lines().count(), 1 + 3 * 4, "{csv}");
    assert!(
        csv.lines().nth(1).unwrap().contains(",miss,first_build,"),
        "{csv}"
    );

    looks_like_a_replay(&svg, &s.work);
}

#[test]
fn a_dockerfile_that_wastes_the_cache_gets_advice_that_reaches_the_ideal() {
    if !is_root() {
        eprintln!("skipped: RUN needs root");
        return;
    }
    let s = common::busybox_workspace();
    // `COPY . .` before an install step that reads one file: every source
    // edit reruns it.
    let repo = scripted_repo(
        &s.work,
        "FROM busybox\nWORKDIR /app\nCOPY . .\nRUN cat package.txt > deps.txt\n\
         RUN cat src/*.txt > bundle.txt\n",
    );
    let report = bench_json(&s.root, &["--git", repo.to_str().unwrap(), "--no-baseline"]);
    let install = step(&report, "RUN cat package.txt > deps.txt");
    let package_hits = count((2..=20).map(|i| change_of(i) != Change::Package));
    assert_eq!(install["hits"], 0, "{install}");
    assert_eq!(install["ideal_hits"], package_hits, "{install}");
    let (hit_rate, ideal) = (
        report["totals"]["hit_rate"].as_f64().unwrap(),
        report["totals"]["ideal_hit_rate"].as_f64().unwrap(),
    );
    assert!(ideal > hit_rate, "ideal {ideal} against {hit_rate}");

    let advice = &report["advice"][0];
    assert_eq!(advice["step"], install["step"], "{advice}");
    assert!(
        advice["after"].as_str().unwrap().ends_with("COPY . ."),
        "{advice}"
    );
    assert_eq!(
        advice["files_read"],
        serde_json::json!(["/app/package.txt"])
    );
    assert_eq!(
        advice["copy_first"],
        serde_json::json!(["COPY package.txt /app/package.txt"])
    );
    let dockerfile = advice["dockerfile"].as_str().unwrap();
    assert_eq!(
        dockerfile,
        "FROM busybox\nWORKDIR /app\nCOPY package.txt /app/package.txt\n\
         RUN cat package.txt > deps.txt\nCOPY . .\nRUN cat src/*.txt > bundle.txt\n"
    );
    // Replayed over the same 20 commits, the install step reaches its
    // ideal, and every image holds the same files as the original's.
    let replay = &advice["replay"];
    assert_eq!(replay["rewritten"], 20, "{replay}");
    assert_eq!(
        replay["step_hit_rate"], install["ideal_hit_rate"],
        "{replay}"
    );
    assert_eq!(replay["same_filesystem"], true, "{replay}");
    assert!(
        replay["steps_run"].as_u64() < report["totals"]["steps_run"].as_u64(),
        "{replay}"
    );
    // The suggested Dockerfile, built by itself, computes what the
    // original does.
    let ctx = s.work.join("check");
    fs::create_dir_all(ctx.join("src")).unwrap();
    fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    fs::write(ctx.join("package.txt"), "dependency 20\n").unwrap();
    fs::write(ctx.join("src/a.txt"), "source 19\n").unwrap();
    ok(kiln(
        &s.root,
        &["build", "-t", "advised", ctx.to_str().unwrap()],
    ));
}

#[test]
fn a_scenario_replays_its_edits_and_a_bad_one_says_where() {
    if !is_root() {
        eprintln!("skipped: RUN needs root");
        return;
    }
    let s = common::busybox_workspace();
    let project = s.work.join("project");
    fs::create_dir_all(project.join("src")).unwrap();
    fs::write(
        project.join("Dockerfile"),
        "FROM busybox\nARG MODE=debug\nCOPY src/ /src/\nRUN echo $MODE > /mode && cat /src/* > /all\n",
    )
    .unwrap();
    fs::write(project.join("src/a.txt"), "a\n").unwrap();
    let scenario = s.work.join("scenario.toml");
    fs::write(
        &scenario,
        r#"
[[build]]
name = "as it is"

[[build]]
name = "touched: content unchanged"
edits = [{ op = "touch", path = "src/a.txt" }]

[[build]]
name = "edited"
edits = [{ op = "append", path = "src/a.txt", content = "more\n" }]

[[build]]
name = "renamed"
edits = [{ op = "rename", path = "src/a.txt", to = "src/b.txt" }]

[[build]]
name = "chmod"
edits = [{ op = "chmod", path = "src/b.txt", mode = "600" }]

[[build]]
name = "release mode"
edits = [{ op = "build_arg", name = "MODE", value = "release" }]

[[build]]
name = "a new file, then deleted"
edits = [{ op = "write", path = "src/c.txt", content = "c\n" }, { op = "delete", path = "src/c.txt" }]
"#,
    )
    .unwrap();
    let report = bench_json(
        &s.root,
        &[
            "--scenario",
            scenario.to_str().unwrap(),
            project.to_str().unwrap(),
            "--no-baseline",
        ],
    );
    let copy: Vec<String> = report["builds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            // After the ARG: the COPY.
            let step = &b["steps"][1];
            match step["cache"].as_str().unwrap() {
                "hit" => "hit".to_owned(),
                _ => step["reason_kind"].as_str().unwrap().to_owned(),
            }
        })
        .collect();
    assert_eq!(
        copy,
        // A mode change misses, though the record of file contents cannot
        // name it ("other").
        [
            "first_build",
            "hit",
            "files",
            "files",
            "other",
            "hit",
            "hit"
        ],
        "{}",
        report["builds"]
    );
    let run = &report["builds"][5]["steps"][2];
    assert_eq!(run["reason_kind"], "build_arg", "{run}");
    // The project itself is never edited.
    assert_eq!(
        fs::read_to_string(project.join("src/a.txt")).unwrap(),
        "a\n"
    );

    fs::write(
        &scenario,
        "[[build]]\nname = \"escape\"\nedits = [{ op = \"write\", path = \"../outside\", content = \"x\" }]\n",
    )
    .unwrap();
    let out = kiln(
        &s.root,
        &[
            "bench",
            "cache",
            "--scenario",
            scenario.to_str().unwrap(),
            project.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("scenario.toml") && stderr.contains("build 1 (escape)"),
        "{stderr}"
    );
    assert!(!s.work.join("outside").exists());
}

/// Renders `svg` with headless Chromium, as a person would look at it,
/// and checks the picture holds the green of hits and the red of misses.
fn looks_like_a_replay(svg: &Path, work: &Path) {
    if Command::new("chromium").arg("--version").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium is missing (scripts/install-test-deps.sh installs it)"
        );
        eprintln!("skipped the rendering: no chromium");
        return;
    }
    let png = work.join("replay.png");
    // Its own network namespace: Chromium reaches nothing, whatever it
    // would like to (updates, safe browsing).
    let out = Command::new("unshare")
        .args([
            "--net",
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
        ])
        .args([
            "--no-first-run",
            "--disable-background-networking",
            "--hide-scrollbars",
        ])
        .arg(format!(
            "--user-data-dir={}",
            work.join("chromium").display()
        ))
        .arg(format!("--screenshot={}", png.display()))
        .arg("--window-size=1100,700")
        .arg(format!("file://{}", svg.display()))
        .output()
        .unwrap();
    assert!(
        png.exists(),
        "chromium wrote no picture: {}",
        text(&out.stderr)
    );
    let decoder = png::Decoder::new(std::io::BufReader::new(fs::File::open(&png).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut pixels).unwrap();
    let channels = info.color_type.samples();
    let near = |p: &[u8], (r, g, b): (i32, i32, i32)| {
        (p[0] as i32 - r).abs() < 30 && (p[1] as i32 - g).abs() < 30 && (p[2] as i32 - b).abs() < 30
    };
    let (mut green, mut red, mut ink) = (0, 0, 0);
    for pixel in pixels[..info.buffer_size()].chunks(channels) {
        if near(pixel, (46, 160, 67)) {
            green += 1;
        } else if near(pixel, (218, 54, 51)) {
            red += 1;
        } else if !near(pixel, (255, 255, 255)) {
            ink += 1;
        }
    }
    // Cells of 0.84 build × 0.76 row at this size are hundreds of pixels
    // each; text and axes are the rest.
    assert!(
        green > 2_000 && red > 2_000 && ink > 2_000,
        "green {green}, red {red}, other {ink}"
    );
}
