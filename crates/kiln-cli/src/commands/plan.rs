//! `kiln plan`: plans a build without running it and prints the graph
//! (stages, steps with their expanded instructions, dependencies, pruned
//! stages) as text, JSON or Graphviz dot.

use crate::output::report;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use clap::{Args, ValueEnum};
use kiln_graph::{plan, render, PlanOptions, Platform};

use super::dockerfile::{load, print};

#[derive(Args)]
pub struct PlanArgs {
    /// The Dockerfile (default: CONTEXT/Dockerfile); `-` reads standard input
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
    /// Set a build argument; `--build-arg NAME` takes NAME's value from the environment
    #[arg(long = "build-arg", value_name = "NAME[=VALUE]")]
    build_args: Vec<String>,
    /// The stage to build (default: the last one)
    #[arg(long)]
    target: Option<String>,
    /// The platform to build for (default: this machine's)
    #[arg(long)]
    platform: Option<String>,
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// The build context directory
    #[arg(default_value = ".")]
    context: PathBuf,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// Stages and steps, one per line
    Text,
    /// The whole graph, with cache inputs and configs
    Json,
    /// Graphviz, to draw with `dot -Tsvg`
    Dot,
}

pub fn run(args: PlanArgs) -> anyhow::Result<ExitCode> {
    let mut options = PlanOptions {
        build_args: build_args(&args.build_args)?,
        target: args.target,
        ..PlanOptions::default()
    };
    if let Some(text) = &args.platform {
        options.platform = match Platform::parse(text) {
            Ok(platform) => platform,
            Err(e) => bail!("--platform: {e}"),
        };
    }
    let Some(loaded) = load(args.file, &args.context)? else {
        return Ok(ExitCode::FAILURE);
    };
    let graph = match plan(&loaded.dockerfile, &options) {
        Ok(graph) => graph,
        Err(error) if error.position.line == 0 => {
            report!("error: {}", error.message);
            if let Some(hint) = &error.hint {
                report!("hint: {hint}");
            }
            return Ok(ExitCode::FAILURE);
        }
        Err(error) => {
            report!("error: {}", error.render(&loaded.display, &loaded.source));
            return Ok(ExitCode::FAILURE);
        }
    };
    for warning in &graph.warnings {
        match warning.line {
            0 => report!("warning: {}", warning.message),
            line => report!("{}:{line}: warning: {}", loaded.display, warning.message),
        }
    }
    let out = match args.format {
        Format::Text => render::text(&graph),
        Format::Json => serde_json::to_string_pretty(&graph)? + "\n",
        Format::Dot => render::dot(&graph),
    };
    print(&out)?;
    Ok(ExitCode::SUCCESS)
}

/// `NAME=VALUE`, or `NAME` alone for the value of the environment variable
/// (skipped when unset), as `docker build` does.
pub fn build_args(raw: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut args = BTreeMap::new();
    for item in raw {
        match item.split_once('=') {
            Some(("", _)) => bail!("--build-arg {item:?}: the name is empty"),
            Some((name, value)) => {
                args.insert(name.to_owned(), value.to_owned());
            }
            None => {
                if let Ok(value) = std::env::var(item) {
                    args.insert(item.clone(), value);
                }
            }
        }
    }
    Ok(args)
}
