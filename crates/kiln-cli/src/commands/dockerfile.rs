//! Reading and parsing the Dockerfile a command was pointed at, with parse
//! errors and warnings printed the same way by every command.

use crate::output::report;
use std::path::PathBuf;

use anyhow::Context;
use kiln_dockerfile::Dockerfile;

/// A Dockerfile read from disk or standard input, kept with its text so
/// later errors can quote the offending line.
pub struct Loaded {
    /// How to name the file in messages (`-` for standard input).
    pub display: String,
    pub source: String,
    pub dockerfile: Dockerfile,
}

/// Reads `file` (default `context/Dockerfile`; `-` is standard input) and
/// parses it. On a parse error, prints it and returns `None`.
pub fn load(file: Option<PathBuf>, context: &std::path::Path) -> anyhow::Result<Option<Loaded>> {
    let path = file.unwrap_or_else(|| context.join("Dockerfile"));
    let display = path.display().to_string();
    let bytes = if display == "-" {
        read_stdin_bounded().context("reading standard input")?
    } else {
        std::fs::File::open(&path)
            .and_then(kiln_engine::read_bounded)
            .with_context(|| format!("reading {display}"))?
    };
    let source = String::from_utf8_lossy(&bytes).into_owned();
    let dockerfile = match kiln_dockerfile::parse_bytes(&bytes) {
        Ok(dockerfile) => dockerfile,
        Err(error) => {
            report!("error: {}", error.render(&display, &source));
            return Ok(None);
        }
    };
    for warning in &dockerfile.warnings {
        report!("{display}:{}: warning: {}", warning.line, warning.message);
    }
    Ok(Some(Loaded {
        display,
        source,
        dockerfile,
    }))
}

/// Standard input, bounded as a Dockerfile ([`kiln_engine::read_bounded`]).
pub fn read_stdin_bounded() -> std::io::Result<Vec<u8>> {
    kiln_engine::read_bounded(std::io::stdin().lock())
}

/// Writes `text` to standard output; a closed pipe (`kiln ... | head`) is
/// not an error worth reporting.
pub fn print(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}
