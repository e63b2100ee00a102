//! Advice: a RUN that ran only because an earlier COPY brought in files
//! it never read (the classic `COPY . .` before `RUN npm install`). The
//! fix is to copy the files it read first, run it, then copy the rest;
//! [`reorder`] writes that Dockerfile, and the bench replays the same
//! history with it and checks that every image holds the same files.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::report::{BenchReport, Outcome};

/// One suggestion.
#[derive(Clone, Debug, Serialize)]
pub struct Advice {
    /// The RUN that ran without need, and the COPY that made it.
    pub step: String,
    pub after: String,
    /// Builds in which it ran only because of that COPY.
    pub avoidable_runs: usize,
    /// What it read of what the COPY brought (as the RUN saw them).
    pub files_read: Vec<String>,
    /// The instructions to put before it.
    pub copy_first: Vec<String>,
    /// The whole suggested Dockerfile (the last revision's, rewritten).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dockerfile: Option<String>,
    /// Why it could not be written or replayed, if so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The same history replayed with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replay: Option<AdviceReplay>,
    /// The two instructions as written (the logical lines the rewrite
    /// looks for in each revision).
    #[serde(skip)]
    pub(crate) copy_original: String,
    #[serde(skip)]
    pub(crate) run_original: String,
}

/// What the replay with the suggested Dockerfile measured.
#[derive(Clone, Debug, Serialize)]
pub struct AdviceReplay {
    /// Revisions whose Dockerfile the rewrite applied to.
    pub rewritten: usize,
    /// The advised RUN's hit rate in this replay, and its ideal one in
    /// the original: the advice works when they are equal.
    pub step_hit_rate: f64,
    pub step_ideal_hit_rate: f64,
    pub hit_rate: f64,
    pub steps_run: usize,
    /// The original replay's, to compare: the ideal is reached when
    /// `steps_run` is at most this.
    pub original_steps_run: usize,
    pub original_ideal_steps_run: usize,
    pub seconds: f64,
    pub original_seconds: f64,
    /// Every revision built both ways made images with the same files
    /// (path, type, mode, owner, content, link target; times aside).
    pub same_filesystem: bool,
    /// The first differences found, if not.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub differences: Vec<String>,
}

/// The suggestions `report` supports, most avoidable runs first, given
/// the last revision's Dockerfile (`None`: no suggested text).
pub fn find_advice(report: &BenchReport, last_dockerfile: Option<&str>) -> Vec<Advice> {
    // (RUN, COPY) → (avoidable runs, files read, the COPY's op).
    let mut found: BTreeMap<(String, String), (usize, BTreeSet<String>, kiln_graph::CopyOp)> =
        BTreeMap::new();
    for build in &report.builds {
        for (at, step) in build.steps.iter().enumerate() {
            let Some(reads) = step.detail.reads.as_ref().filter(|r| r.complete) else {
                continue;
            };
            if !step.avoidable() {
                continue;
            }
            // The nearest COPY/ADD before it in its stage, which missed
            // because its sources changed.
            let Some(copy) = build.steps[..at]
                .iter()
                .rev()
                .take_while(|s| s.stage == step.stage)
                .find(|s| s.detail.copy.is_some())
            else {
                continue;
            };
            let changed = matches!(&copy.outcome, Outcome::Miss { reason_kind, .. } if *reason_kind == "files");
            let (Some(op), Some(layer)) = (&copy.detail.copy, copy.detail.layer) else {
                continue;
            };
            if !changed {
                continue;
            }
            let entry = found
                .entry((step.step.clone(), copy.step.clone()))
                .or_insert_with(|| (0, BTreeSet::new(), op.clone()));
            entry.0 += 1;
            entry.1.extend(
                reads
                    .files
                    .iter()
                    .filter(|r| r.layer == layer)
                    .filter(|r| {
                        matches!(
                            r.kind,
                            kiln_engine::ReadKind::File | kiln_engine::ReadKind::Symlink
                        )
                    })
                    .map(|r| r.path.clone()),
            );
        }
    }
    let lines = lines_of(report);
    let mut advice: Vec<Advice> = found
        .into_iter()
        .map(|((step, after), (avoidable_runs, files, op))| {
            let mut advice = Advice {
                step: step.clone(),
                after: after.clone(),
                avoidable_runs,
                files_read: files.iter().cloned().collect(),
                copy_first: Vec::new(),
                dockerfile: None,
                note: None,
                replay: None,
                copy_original: String::new(),
                run_original: String::new(),
            };
            let written = last_dockerfile
                .ok_or_else(|| "the last revision's Dockerfile could not be read".to_owned())
                .and_then(|text| {
                    let (copy_line, run_line) = (lines.get(&after), lines.get(&step));
                    let (Some(&copy_line), Some(&run_line)) = (copy_line, run_line) else {
                        return Err("the steps are not in the last build".to_owned());
                    };
                    suggest(text, copy_line, run_line, &op, &advice.files_read)
                });
            match written {
                Ok((copy_original, run_original, copy_first, dockerfile)) => {
                    advice.copy_original = copy_original;
                    advice.run_original = run_original;
                    advice.copy_first = copy_first;
                    advice.dockerfile = Some(dockerfile);
                }
                Err(note) => advice.note = Some(note),
            }
            advice
        })
        .collect();
    advice.sort_by_key(|a| std::cmp::Reverse(a.avoidable_runs));
    advice
}

impl Advice {
    /// The rewrite of any revision's Dockerfile this advice makes: the
    /// copies put before the RUN, the RUN before the COPY (`None` where
    /// they are not found next to each other).
    pub fn rewrite(&self, text: &str) -> Option<String> {
        self.dockerfile.as_ref()?;
        reorder(
            text,
            &self.copy_original,
            &self.run_original,
            &self.copy_first,
        )
    }
}

/// Each step's line in the last build that has it.
fn lines_of(report: &BenchReport) -> BTreeMap<String, u32> {
    let mut lines = BTreeMap::new();
    for build in report.builds.iter().filter(|b| b.outcome == "built") {
        for step in &build.steps {
            lines.insert(step.step.clone(), step.line);
        }
    }
    lines
}

/// The COPY and RUN at lines `copy_line` and `run_line` of `text`, the
/// copies of `files` (paths under the COPY's destination) to put first,
/// and the Dockerfile so rewritten.
fn suggest(
    text: &str,
    copy_line: u32,
    run_line: u32,
    op: &kiln_graph::CopyOp,
    files: &[String],
) -> Result<(String, String, Vec<String>, String), String> {
    if files.is_empty() {
        return Err("it read nothing the COPY brought: it needs no copy first".into());
    }
    let parsed = kiln_dockerfile::parse(text).map_err(|e| e.to_string())?;
    let at = |line: u32| parsed.instructions.iter().find(|i| i.start_line == line);
    let (Some(copy), Some(run)) = (at(copy_line), at(run_line)) else {
        return Err("the instructions are not where the build found them".into());
    };
    if copy.is_json_form() || !copy.heredocs.is_empty() {
        return Err("the COPY is in JSON form or has heredocs".into());
    }
    let [source] = op.sources.as_slice() else {
        return Err("the COPY has several sources".into());
    };
    if source.contains(['*', '?', '[']) {
        return Err("the COPY's source is a pattern".into());
    }
    let flags: Vec<&str> = copy.flags.iter().map(|f| f.text.as_str()).collect();
    let dest = op.dest.trim_end_matches('/');
    let mut copies = Vec::new();
    for file in files {
        if file.contains(char::is_whitespace) {
            return Err(format!("{file} has a space in its name"));
        }
        let name = source
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or("");
        let from = if format!("{dest}/{name}") == *file || dest == file.as_str() {
            // The COPY's source is this very file.
            source.clone()
        } else {
            let Some(rel) = file.strip_prefix(&format!("{dest}/")) else {
                return Err(format!("{file} is not under the COPY's destination {dest}"));
            };
            match source.trim_end_matches('/') {
                "" | "." => rel.to_owned(),
                dir => format!("{}/{rel}", dir.trim_start_matches("./")),
            }
        };
        let mut words = vec![copy.keyword.clone()];
        words.extend(flags.iter().map(|f| f.to_string()));
        words.push(from);
        words.push(file.clone());
        copies.push(words.join(" "));
    }
    let dockerfile = reorder(text, &copy.original, &run.original, &copies)
        .ok_or_else(|| "the RUN does not follow the COPY directly".to_owned())?;
    Ok((
        copy.original.clone(),
        run.original.clone(),
        copies,
        dockerfile,
    ))
}

/// `text` with the instruction `copy` followed by `run` (logical lines as
/// the parser gives them) rewritten as `copies`, `run`, `copy`; `None`
/// if they are not found one after the other.
pub fn reorder(text: &str, copy: &str, run: &str, copies: &[String]) -> Option<String> {
    let parsed = kiln_dockerfile::parse(text).ok()?;
    let at = parsed
        .instructions
        .windows(2)
        .position(|pair| pair[0].original == copy && pair[1].original == run)?;
    let (copy, run) = (&parsed.instructions[at], &parsed.instructions[at + 1]);
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let span = |from: u32, to: u32| -> String {
        lines
            .get(from as usize - 1..(to as usize).min(lines.len()))
            .map(|l| l.concat())
            .unwrap_or_default()
    };
    let ends_line = |mut s: String| {
        if !s.ends_with('\n') {
            s.push('\n');
        }
        s
    };
    let mut out = span(1, copy.start_line - 1);
    for line in copies {
        out.push_str(line);
        out.push('\n');
    }
    out.push_str(&ends_line(span(run.start_line, run.end_line)));
    out.push_str(&ends_line(span(copy.start_line, copy.end_line)));
    // Comments and blank lines between the two stay after the COPY.
    out.push_str(&span(copy.end_line + 1, run.start_line - 1));
    out.push_str(&span(run.end_line + 1, lines.len() as u32));
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_moves_before_the_copy_with_the_files_it_read() {
        let text = "FROM busybox\nWORKDIR /app\n# everything\nCOPY --chown=1:1 . .\nRUN cat package.txt \\\n  > deps\nRUN cat src/*\n";
        let rewritten = reorder(
            text,
            "COPY --chown=1:1 . .",
            "RUN cat package.txt   > deps",
            &["COPY --chown=1:1 package.txt /app/package.txt".into()],
        );
        // The parser's logical line joins the continuation.
        let parsed = kiln_dockerfile::parse(text).unwrap();
        let run = parsed.instructions[3].original.clone();
        let rewritten = rewritten.or_else(|| {
            reorder(
                text,
                "COPY --chown=1:1 . .",
                &run,
                &["COPY --chown=1:1 package.txt /app/package.txt".into()],
            )
        });
        assert_eq!(
            rewritten.unwrap(),
            "FROM busybox\nWORKDIR /app\n# everything\nCOPY --chown=1:1 package.txt /app/package.txt\nRUN cat package.txt \\\n  > deps\nCOPY --chown=1:1 . .\nRUN cat src/*\n"
        );
        assert!(reorder(text, "COPY . .", &run, &[]).is_none());
    }
}
