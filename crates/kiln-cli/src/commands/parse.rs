//! `kiln parse`: prints a Dockerfile's parse in BuildKit's dump format (to
//! compare with BuildKit byte for byte) or as JSON with spans and heredocs.

use crate::output::report;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};

use super::dockerfile::{load, print};

#[derive(Args)]
pub struct ParseArgs {
    /// The Dockerfile (default: CONTEXT/Dockerfile); `-` reads standard input
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Buildkit)]
    format: Format,
    /// Also reject unknown instructions and flags, as a build would
    #[arg(long)]
    check: bool,
    /// The build context directory
    #[arg(default_value = ".")]
    context: PathBuf,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// BuildKit's parser dump: one `(keyword ...)` line per instruction
    Buildkit,
    /// The syntax tree with spans, flags and heredocs
    Json,
}

pub fn run(args: ParseArgs) -> anyhow::Result<ExitCode> {
    let Some(loaded) = load(args.file, &args.context)? else {
        return Ok(ExitCode::FAILURE);
    };
    if args.check {
        let errors = kiln_dockerfile::validate(&loaded.dockerfile);
        if !errors.is_empty() {
            for error in &errors {
                report!("error: {}", error.render(&loaded.display, &loaded.source));
            }
            return Ok(ExitCode::FAILURE);
        }
    }
    let out = match args.format {
        Format::Buildkit => kiln_dockerfile::dump(&loaded.dockerfile),
        Format::Json => serde_json::to_string_pretty(&loaded.dockerfile)? + "\n",
    };
    print(&out)?;
    Ok(ExitCode::SUCCESS)
}
