//! `kiln parse`: prints a Dockerfile's parse in BuildKit's dump format (to
//! compare with BuildKit byte for byte) or as JSON with spans and heredocs.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, ValueEnum};

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
    let path = args.file.unwrap_or_else(|| args.context.join("Dockerfile"));
    let display = path.display().to_string();
    let bytes = if display == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("reading standard input")?;
        buf
    } else {
        std::fs::read(&path).with_context(|| format!("reading {display}"))?
    };
    let source = String::from_utf8_lossy(&bytes);
    let dockerfile = match kiln_dockerfile::parse_bytes(&bytes) {
        Ok(dockerfile) => dockerfile,
        Err(error) => {
            eprintln!("error: {}", error.render(&display, &source));
            return Ok(ExitCode::FAILURE);
        }
    };
    for warning in &dockerfile.warnings {
        eprintln!("{display}:{}: warning: {}", warning.line, warning.message);
    }
    if args.check {
        let errors = kiln_dockerfile::validate(&dockerfile);
        if !errors.is_empty() {
            for error in &errors {
                eprintln!("error: {}", error.render(&display, &source));
            }
            return Ok(ExitCode::FAILURE);
        }
    }
    let out = match args.format {
        Format::Buildkit => kiln_dockerfile::dump(&dockerfile),
        Format::Json => serde_json::to_string_pretty(&dockerfile)? + "\n",
    };
    let mut stdout = std::io::stdout().lock();
    // A closed pipe (`kiln parse | head`) is not an error worth reporting.
    if let Err(e) = stdout.write_all(out.as_bytes()) {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            return Err(e.into());
        }
    }
    Ok(ExitCode::SUCCESS)
}
