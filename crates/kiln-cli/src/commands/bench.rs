//! `kiln bench cache`: flags into a [`kiln_bench`] replay, a progress bar
//! over its builds, and the report in the asked format.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use kiln_bench::{
    BenchError, GitHistory, GitSelection, History, ReplayOptions, ReplayProgress, Scenario,
    ScenarioHistory,
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
    let mut history: Box<dyn History> = match (&args.git, &args.scenario) {
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
            Box::new(GitHistory::open(repo, &selection, work.path())?)
        }
        (None, Some(file)) => Box::new(ScenarioHistory::new(
            Scenario::read(file)?,
            file,
            &args.context,
            dockerfile.as_deref().unwrap_or(Path::new("Dockerfile")),
            work.path(),
        )?),
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
    let bar = progress_bar(history.revisions().len());
    let cancel = Arc::new(Cancel::default());
    let signals = StopOnSignal::install(&cancel)?;
    let result = kiln_bench::replay(
        history.as_mut(),
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
fn progress_bar(builds: usize) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(builds as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} builds  {elapsed}  {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

fn show(bar: &indicatif::ProgressBar, progress: &ReplayProgress) {
    match &progress.done {
        None => bar.set_message(format!("{} {}", progress.id, progress.label)),
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
                    "build {}/{} {} {}: {} in {:.2}s, {cached}/{} steps cached",
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
