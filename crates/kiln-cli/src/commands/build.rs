//! `kiln build`: plans the Dockerfile, loads the base images from the
//! store, runs the steps and tags the resulting image.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Args;
use kiln_build::{build, load_base, BuildError, BuildOptions};
use kiln_graph::{plan, PlanOptions};

use super::dockerfile::{load, print};
use super::images::{creation_time, open_store};
use super::plan::build_args;

#[derive(Args)]
pub struct BuildArgs {
    /// Name the image (repeatable)
    #[arg(short = 't', long = "tag", value_name = "NAME")]
    tags: Vec<String>,
    /// The Dockerfile (default: CONTEXT/Dockerfile); `-` reads standard input
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
    /// Set a build argument; `--build-arg NAME` takes NAME's value from the environment
    #[arg(long = "build-arg", value_name = "NAME[=VALUE]")]
    build_args: Vec<String>,
    /// The stage to build (default: the last one)
    #[arg(long)]
    target: Option<String>,
    /// Add a label to the image
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// Write the image id (manifest digest) to this file
    #[arg(long)]
    iidfile: Option<PathBuf>,
    /// The build context directory
    context: PathBuf,
}

pub fn run(root: Option<&Path>, args: BuildArgs) -> anyhow::Result<ExitCode> {
    let labels = parse_labels(&args.labels)?;
    let mut options = PlanOptions {
        build_args: build_args(&args.build_args)?,
        target: args.target,
        ..PlanOptions::default()
    };
    if !args.context.is_dir() {
        bail!(
            "build context {} is not a directory",
            args.context.display()
        );
    }
    let Some(loaded) = load(args.file, &args.context)? else {
        return Ok(ExitCode::FAILURE);
    };
    let store = open_store(root)?;
    let report_plan_error = |error: kiln_graph::PlanError| {
        eprintln!("error: {}", error.render(&loaded.display, &loaded.source));
        ExitCode::FAILURE
    };
    // Plan once to learn the base images, then again with their configs
    // (their ENV, WORKDIR and ONBUILD triggers matter to the plan).
    let first = match plan(&loaded.dockerfile, &options) {
        Ok(graph) => graph,
        Err(error) => return Ok(report_plan_error(error)),
    };
    for reference in &first.images {
        let base = load_base(&store, reference)?;
        options
            .base_configs
            .insert(reference.clone(), base.image_config());
    }
    let graph = match plan(&loaded.dockerfile, &options) {
        Ok(graph) => graph,
        Err(error) => return Ok(report_plan_error(error)),
    };
    for warning in &graph.warnings {
        eprintln!("warning: {}", warning.message);
    }
    let epoch = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(text) if !text.is_empty() => Some(text.parse::<u64>().context("SOURCE_DATE_EPOCH")?),
        _ => None,
    };
    let created = creation_time()?;
    let _lock = store.lock(kiln_store::LockMode::Shared)?;
    let total = graph.nodes.len();
    for (n, node) in graph.nodes.iter().enumerate() {
        let stage = &graph.stages[node.stage];
        eprintln!(
            "#{} [{} {}/{}] {}",
            n + 1,
            stage.label(),
            n + 1,
            total,
            node.display
        );
    }
    let record = match build(
        &store,
        &graph,
        &BuildOptions {
            context: &args.context,
            created: &created,
            source_date_epoch: epoch,
            labels: &labels,
        },
    ) {
        Ok(record) => record,
        Err(BuildError::Step {
            line,
            message,
            hint,
        }) if line > 0 => {
            let position = kiln_dockerfile::Position { line, column: 0 };
            eprintln!(
                "error: {}",
                kiln_dockerfile::render_diagnostic(
                    &loaded.display,
                    &loaded.source,
                    position,
                    &message,
                    hint.as_deref()
                )
            );
            return Ok(ExitCode::FAILURE);
        }
        Err(error) => return Err(error.into()),
    };
    drop(_lock);
    for tag in &args.tags {
        store.tag(tag, &record.manifest)?;
    }
    let digest = record.manifest.digest().to_string();
    if let Some(path) = &args.iidfile {
        std::fs::write(path, &digest).with_context(|| format!("writing {}", path.display()))?;
    }
    print(&format!("{digest}\n"))?;
    Ok(ExitCode::SUCCESS)
}

fn parse_labels(raw: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    raw.iter()
        .map(|item| match item.split_once('=') {
            Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
            _ => bail!("--label {item:?}: expected KEY=VALUE"),
        })
        .collect()
}
