//! What a replay measured, per build and per step, and its renderings:
//! a table, JSON (schema [`SCHEMA`], documented in docs/bench.md) and CSV.

use serde::Serialize;

/// The JSON schema's name and version: fields are only ever added under
/// it; a renamed or removed field is a new version.
pub const SCHEMA: &str = "kiln.bench.cache/v1";

/// A whole replay.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub schema: &'static str,
    /// `git` or `scenario`.
    pub source: String,
    /// Every build, in order.
    pub builds: Vec<BuildRun>,
    /// Every step seen, in order of first appearance, over all builds.
    pub steps: Vec<StepTotals>,
    pub totals: Totals,
    /// What to change in the Dockerfile, most avoidable runs first.
    pub advice: Vec<crate::advice::Advice>,
}

/// One build of the replay.
#[derive(Clone, Debug, Serialize)]
pub struct BuildRun {
    /// From 1.
    pub index: usize,
    /// The commit's short id, or the scenario build's number.
    pub id: String,
    /// The commit's subject, or the scenario build's name.
    pub label: String,
    /// `built` or `failed`.
    pub outcome: &'static str,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Wall seconds of the build.
    pub seconds: f64,
    /// Wall seconds of the same build with `--no-cache` (absent when not
    /// measured).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub no_cache_seconds: Option<f64>,
    pub bytes_written: u64,
    /// The image's manifest digest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The steps that could hit or miss (FROM is left out).
    pub steps: Vec<StepRun>,
    /// The first step that missed, by its `step`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_miss: Option<String>,
}

/// One step of one build.
#[derive(Clone, Debug, Serialize)]
pub struct StepRun {
    /// `[stage i/n] INSTRUCTION`: what identifies a step across builds.
    pub step: String,
    pub stage: String,
    pub line: u32,
    #[serde(flatten)]
    pub outcome: Outcome,
    /// Whether it had to run, given what it reads (COPY/ADD: its sources;
    /// RUN: what its command read of the layers below it last time).
    pub ideal: Ideal,
    pub seconds: f64,
    pub bytes_written: u64,
    /// RUN: how many paths of the layers below it the command read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files_read: Option<usize>,
    /// What the advice needs and the JSON does not show.
    #[serde(skip)]
    pub detail: StepDetail,
}

/// Whether a step had to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Ideal {
    /// Nothing it reads changed: its last result would do.
    Hit,
    Run,
}

/// A step's layer, what it read and what it copied (kept for the advice).
#[derive(Clone, Debug, Default)]
pub struct StepDetail {
    pub layer: Option<kiln_store::Digest>,
    pub reads: Option<kiln_engine::Reads>,
    pub copy: Option<kiln_graph::CopyOp>,
}

impl StepRun {
    /// Ran though nothing it reads changed.
    pub fn avoidable(&self) -> bool {
        self.ideal == Ideal::Hit && self.outcome != Outcome::Hit
    }
}

/// A step's cache outcome.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "cache", rename_all = "snake_case")]
pub enum Outcome {
    Hit,
    Miss {
        /// Why, as `kiln build` says it.
        reason: String,
        /// The reason's stable name (`files`, `parent_changed`, ...: the
        /// `reason_kind` of docs/progress.md).
        reason_kind: &'static str,
    },
}

/// One step over all builds.
#[derive(Clone, Debug, Serialize)]
pub struct StepTotals {
    pub step: String,
    pub stage: String,
    /// Builds it was part of.
    pub builds: usize,
    pub hits: usize,
    /// Builds it ran in.
    pub rebuilt: usize,
    /// `hits / builds`.
    pub hit_rate: f64,
    /// Builds it would have been cached in, had it been rerun only when
    /// what it reads changed.
    pub ideal_hits: usize,
    pub ideal_hit_rate: f64,
    /// Seconds it took over all builds.
    pub seconds: f64,
}

/// The replay's totals.
#[derive(Clone, Debug, Serialize)]
pub struct Totals {
    pub builds: usize,
    pub failed: usize,
    /// Step outcomes over all builds, and how many were hits.
    pub steps: usize,
    pub hits: usize,
    pub hit_rate: f64,
    /// The same for the ideal ([`StepRun::ideal`]).
    pub ideal_hits: usize,
    pub ideal_hit_rate: f64,
    /// Steps that ran, and that had to.
    pub steps_run: usize,
    pub ideal_steps_run: usize,
    pub seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub no_cache_seconds: Option<f64>,
    pub bytes_written: u64,
}

impl BenchReport {
    /// The report of `builds`.
    pub fn new(source: &str, builds: Vec<BuildRun>) -> BenchReport {
        let mut steps: Vec<StepTotals> = Vec::new();
        for run in builds.iter().flat_map(|b| &b.steps) {
            let at = match steps.iter().position(|s| s.step == run.step) {
                Some(at) => at,
                None => {
                    steps.push(StepTotals {
                        step: run.step.clone(),
                        stage: run.stage.clone(),
                        builds: 0,
                        hits: 0,
                        rebuilt: 0,
                        hit_rate: 0.0,
                        ideal_hits: 0,
                        ideal_hit_rate: 0.0,
                        seconds: 0.0,
                    });
                    steps.len() - 1
                }
            };
            let totals = &mut steps[at];
            totals.builds += 1;
            match run.outcome {
                Outcome::Hit => totals.hits += 1,
                Outcome::Miss { .. } => totals.rebuilt += 1,
            }
            if run.ideal == Ideal::Hit {
                totals.ideal_hits += 1;
            }
            totals.seconds += run.seconds;
        }
        for totals in &mut steps {
            totals.hit_rate = ratio(totals.hits, totals.builds);
            totals.ideal_hit_rate = ratio(totals.ideal_hits, totals.builds);
        }
        let step_count: usize = builds.iter().map(|b| b.steps.len()).sum();
        let hits = steps.iter().map(|s| s.hits).sum();
        let ideal_hits = steps.iter().map(|s| s.ideal_hits).sum();
        let no_cache_seconds = builds
            .iter()
            .map(|b| b.no_cache_seconds)
            .sum::<Option<f64>>();
        let totals = Totals {
            builds: builds.len(),
            failed: builds.iter().filter(|b| b.outcome != "built").count(),
            steps: step_count,
            hits,
            hit_rate: ratio(hits, step_count),
            ideal_hits,
            ideal_hit_rate: ratio(ideal_hits, step_count),
            steps_run: step_count - hits,
            ideal_steps_run: step_count - ideal_hits,
            seconds: builds.iter().map(|b| b.seconds).sum(),
            no_cache_seconds,
            bytes_written: builds.iter().map(|b| b.bytes_written).sum(),
        };
        BenchReport {
            schema: SCHEMA,
            source: source.to_owned(),
            builds,
            steps,
            totals,
            advice: Vec::new(),
        }
    }

    pub fn to_json(&self) -> String {
        // Plain data: serialising cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// One row per step of each build.
    pub fn to_csv(&self) -> String {
        let mut out = String::from(
            "build,id,label,step,stage,line,cache,reason_kind,reason,seconds,bytes_written\n",
        );
        for build in &self.builds {
            for step in &build.steps {
                let (cache, kind, reason) = match &step.outcome {
                    Outcome::Hit => ("hit", "", ""),
                    Outcome::Miss {
                        reason,
                        reason_kind,
                    } => ("miss", *reason_kind, reason.as_str()),
                };
                let row = [
                    build.index.to_string(),
                    build.id.clone(),
                    build.label.clone(),
                    step.step.clone(),
                    step.stage.clone(),
                    step.line.to_string(),
                    cache.to_owned(),
                    kind.to_owned(),
                    reason.to_owned(),
                    format!("{:.3}", step.seconds),
                    step.bytes_written.to_string(),
                ];
                let cells: Vec<String> = row.iter().map(|cell| csv_cell(cell)).collect();
                out.push_str(&cells.join(","));
                out.push('\n');
            }
        }
        out
    }

    /// A table of the steps, then the totals.
    pub fn to_table(&self) -> String {
        let width = self
            .steps
            .iter()
            .map(|s| s.step.chars().count())
            .max()
            .unwrap_or(4)
            .clamp(4, 60);
        let mut out = format!(
            "{:<width$}  {:>6}  {:>7}  {:>8}  {:>6}  {:>9}\n",
            "STEP", "HIT", "REBUILT", "HIT RATE", "IDEAL", "TIME"
        );
        for step in &self.steps {
            out.push_str(&format!(
                "{:<width$}  {:>6}  {:>7}  {:>7.0}%  {:>5.0}%  {:>8.2}s\n",
                truncate(&step.step, width),
                format!("{}/{}", step.hits, step.builds),
                step.rebuilt,
                step.hit_rate * 100.0,
                step.ideal_hit_rate * 100.0,
                step.seconds,
            ));
        }
        let t = &self.totals;
        out.push_str(&format!(
            "\n{} builds ({} failed): {} of {} steps cached ({:.0}% hit rate; ideal {:.0}%), {:.2}s",
            t.builds,
            t.failed,
            t.hits,
            t.steps,
            t.hit_rate * 100.0,
            t.ideal_hit_rate * 100.0,
            t.seconds
        ));
        if let Some(no_cache) = t.no_cache_seconds {
            out.push_str(&format!(
                " against {no_cache:.2}s with --no-cache ({:.1}× faster)",
                no_cache / t.seconds.max(0.001)
            ));
        }
        out.push_str(&format!(
            ", {} written\n",
            kiln_engine::human_size(t.bytes_written)
        ));
        for advice in &self.advice {
            out.push_str(&advice_text(advice));
        }
        out
    }
}

/// An advice, as the table ends with it.
fn advice_text(advice: &crate::advice::Advice) -> String {
    let mut out = format!(
        "\nadvice: {} ran {} times only because {} brought in files it never read; it read {}.\n",
        advice.step,
        advice.avoidable_runs,
        advice.after,
        advice.files_read.join(", ")
    );
    if let Some(note) = &advice.note {
        out.push_str(&format!("  (no Dockerfile suggested: {note})\n"));
    }
    if !advice.copy_first.is_empty() {
        out.push_str("  Copy those first, run it, then copy the rest:\n");
        for copy in &advice.copy_first {
            out.push_str(&format!("    {copy}\n"));
        }
    }
    if let Some(replay) = &advice.replay {
        out.push_str(&format!(
            "  Replayed with it: the step hits {:.0}% (its ideal: {:.0}%); {:.0}% hit rate overall, {} steps run (the original: {}, ideally {}), {:.2}s against {:.2}s; {}\n",
            replay.step_hit_rate * 100.0,
            replay.step_ideal_hit_rate * 100.0,
            replay.hit_rate * 100.0,
            replay.steps_run,
            replay.original_steps_run,
            replay.original_ideal_steps_run,
            replay.seconds,
            replay.original_seconds,
            if replay.same_filesystem {
                "every image holds the same files".to_owned()
            } else {
                format!("the images differ: {}", replay.differences.join("; "))
            }
        ));
    }
    if let Some(dockerfile) = &advice.dockerfile {
        out.push_str("  The suggested Dockerfile (--format json has it too):\n");
        for line in dockerfile.lines() {
            out.push_str(&format!("    | {line}\n"));
        }
    }
    out
}

fn ratio(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// A CSV cell (RFC 4180: quoted when it holds a comma, quote or newline).
fn csv_cell(cell: &str) -> String {
    if cell.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", cell.replace('"', "\"\""))
    } else {
        cell.to_owned()
    }
}

fn truncate(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let kept: String = text.chars().take(width.saturating_sub(1)).collect();
    format!("{kept}…")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(step: &str, hit: bool) -> StepRun {
        StepRun {
            step: step.into(),
            stage: "stage-0".into(),
            line: 2,
            outcome: if hit {
                Outcome::Hit
            } else {
                Outcome::Miss {
                    reason: "input a, \"b\" changed".into(),
                    reason_kind: "files",
                }
            },
            ideal: if hit { Ideal::Hit } else { Ideal::Run },
            seconds: 0.5,
            bytes_written: 10,
            files_read: None,
            detail: StepDetail::default(),
        }
    }

    fn build(index: usize, steps: Vec<StepRun>) -> BuildRun {
        BuildRun {
            index,
            id: index.to_string(),
            label: format!("build {index}"),
            outcome: "built",
            error: None,
            seconds: 1.0,
            no_cache_seconds: Some(2.0),
            bytes_written: 10,
            image: None,
            first_miss: None,
            steps,
        }
    }

    #[test]
    fn totals_count_each_step_over_the_builds_it_was_in() {
        let report = BenchReport::new(
            "scenario",
            vec![
                build(1, vec![run("COPY", false), run("RUN", false)]),
                build(2, vec![run("COPY", true), run("RUN", false)]),
                build(
                    3,
                    vec![run("COPY", true), run("RUN", true), run("NEW", false)],
                ),
            ],
        );
        let copy = &report.steps[0];
        assert_eq!((copy.builds, copy.hits, copy.rebuilt), (3, 2, 1));
        assert_eq!(report.steps[2].builds, 1);
        assert_eq!((report.totals.steps, report.totals.hits), (7, 3));
        assert!((report.totals.hit_rate - 3.0 / 7.0).abs() < 1e-9);
        assert_eq!(report.totals.no_cache_seconds, Some(6.0));
        let table = report.to_table();
        assert!(table.contains("2/3"), "{table}");
        assert!(
            table.contains("3 of 7 steps cached (43% hit rate; ideal 43%)"),
            "{table}"
        );
        // A reason with a comma and quotes stays one CSV cell.
        let csv = report.to_csv();
        assert!(csv.contains(",\"input a, \"\"b\"\" changed\","), "{csv}");
        assert_eq!(csv.lines().count(), 8);
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(json["schema"], SCHEMA);
        assert_eq!(json["builds"][0]["steps"][0]["cache"], "miss");
        assert_eq!(json["builds"][1]["steps"][0]["cache"], "hit");
    }
}
