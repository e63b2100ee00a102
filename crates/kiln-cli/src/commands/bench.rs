//! `kiln bench cache`: flags into a [`kiln_bench`] replay, a progress bar
//! over its builds, and the report in the asked format.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use kiln_bench::{
    BenchError, GitHistory, GitSelection, History, MakeHistory, ReplayOptions, ReplayProgress,
    Scenario, ScenarioHistory,
};
use kiln_engine::Cancel;

use super::build::StopOnSignal;
use super::images::open_store;
use super::plan::build_args;
use crate::output::report;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Replay a project's history and report the build cache's hit rates
    Cache(CacheArgs),
}

#[derive(Args)]
pub struct CacheArgs {
    /// Replay the commits of this git repository
    #[arg(long, value_name = "REPO", conflicts_with = "scenario")]
    git: Option<PathBuf>,
    /// The commits A..B (first-parent, A excluded)
    #[arg(long, value_name = "A..B", requires = "git", conflicts_with = "last")]
    range: Option<String>,
    /// The last N commits of HEAD (default: 20)
    #[arg(long, value_name = "N", requires = "git")]
    last: Option<usize>,
    /// Replay a scripted series of edits instead (docs/bench.md)
    #[arg(long, value_name = "FILE")]
    scenario: Option<PathBuf>,
    /// The project a scenario edits (a copy of it)
    #[arg(value_name = "CONTEXT", default_value = ".", requires = "scenario")]
    context: PathBuf,
    /// The Dockerfile, relative to the repository or project root
    #[arg(short = 'f', long = "file", value_name = "PATH")]
    dockerfile: Option<PathBuf>,
    /// Set a build arg of every build
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    build_args: Vec<String>,
    /// Build this stage
    #[arg(long, value_name = "STAGE")]
    target: Option<String>,
    /// Stages at once
    #[arg(long, value_name = "N")]
    jobs: Option<usize>,
    /// Skip the builds with --no-cache that the time saved is measured
    /// against
    #[arg(long)]
    no_baseline: bool,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Also draw the replay as an SVG picture
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Json,
    Csv,
}

pub fn run(root: Option<&Path>, command: BenchCommand) -> anyhow::Result<ExitCode> {
    match command {
        BenchCommand::Cache(args) => cache(root, args),
    }
}

fn cache(root: Option<&Path>, args: CacheArgs) -> anyhow::Result<ExitCode> {
    let store = Arc::new(open_store(root)?);
    // The bench's stores and work trees: scratch of the user's store, so
    // an interrupted replay leaves a leftover that GC removes.
    let work = tempfile::Builder::new()
        .prefix("bench-")
        .tempdir_in(store.scratch_dir("bench")?)
        .context("making the bench's work directory")?;
    let dockerfile = args.dockerfile.clone();
    let make_history: Box<MakeHistory> = match (&args.git, &args.scenario) {
        (Some(repo), None) => {
            let selection = match &args.range {
                Some(range) => {
                    let Some((from, to)) = range.split_once("..") else {
                        bail!("--range {range:?}: expected A..B");
                    };
                    GitSelection::Range {
                        from: from.to_owned(),
                        to: if to.is_empty() { "HEAD" } else { to }.to_owned(),
                    }
                }
                None => GitSelection::Last(args.last.unwrap_or(20)),
            };
            let repo = repo.clone();
            Box::new(move |work: &Path| {
                Ok(Box::new(GitHistory::open(&repo, &selection, work)?) as Box<dyn History>)
            })
        }
        (None, Some(file)) => {
            let scenario = Scenario::read(file)?;
            let (file, context) = (file.clone(), args.context.clone());
            let dockerfile = dockerfile
                .clone()
                .unwrap_or_else(|| PathBuf::from("Dockerfile"));
            Box::new(move |work: &Path| {
                Ok(Box::new(ScenarioHistory::new(
                    scenario.clone(),
                    &file,
                    &context,
                    &dockerfile,
                    work,
                )?) as Box<dyn History>)
            })
        }
        _ => bail!("kiln bench cache needs --git REPO or --scenario FILE"),
    };
    let options = ReplayOptions {
        dockerfile,
        build_args: build_args(&args.build_args)?,
        target: args.target.clone(),
        jobs: args.jobs,
        no_cache_baseline: !args.no_baseline,
        source: if args.git.is_some() {
            "git"
        } else {
            "scenario"
        }
        .into(),
    };
    let bar = progress_bar();
    let cancel = Arc::new(Cancel::default());
    let notices = bar.clone();
    let signals = StopOnSignal::install(&cancel, move |text| {
        if notices.is_hidden() {
            crate::output::report!("{text}");
        } else {
            notices.println(text);
        }
    })?;
    let result = kiln_bench::bench_cache(
        make_history.as_ref(),
        Arc::clone(&store),
        work.path(),
        &options,
        &cancel,
        &|progress| show(&bar, &progress),
    );
    bar.finish_and_clear();
    let report = match result {
        Ok(report) => report,
        Err(BenchError::Interrupted) => {
            report!("error: interrupted");
            return Ok(ExitCode::from(signals.exit_status()));
        }
        Err(error) => return Err(error.into()),
    };
    let text = match args.format {
        Format::Table => report.to_table(),
        Format::Json => report.to_json() + "\n",
        Format::Csv => report.to_csv(),
    };
    super::dockerfile::print(&text)?;
    if let Some(plot) = &args.plot {
        kiln_bench::write_svg(&report, plot)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// A bar over the builds on a terminal; elsewhere a line per build.
fn progress_bar() -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} builds  {elapsed}  {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

fn show(bar: &indicatif::ProgressBar, progress: &ReplayProgress) {
    match &progress.done {
        None => {
            if progress.index == 1 {
                bar.set_length(progress.of as u64);
                bar.set_position(0);
            }
            bar.set_message(format!(
                "{} {} {}",
                progress.phase, progress.id, progress.label
            ));
        }
        Some(build) => {
            bar.inc(1);
            if let Some(error) = &build.error {
                bar.suspend(|| {
                    report!("build {} {}: {error}", progress.id, progress.label);
                });
            }
            if bar.is_hidden() {
                let cached = build
                    .steps
                    .iter()
                    .filter(|s| s.outcome == kiln_bench::Outcome::Hit)
                    .count();
                report!(
                    "{} build {}/{} {} {}: {} in {:.2}s, {cached}/{} steps cached",
                    progress.phase,
                    progress.index,
                    progress.of,
                    progress.id,
                    progress.label,
                    build.outcome,
                    build.seconds,
                    build.steps.len()
                );
            }
        }
    }
}
