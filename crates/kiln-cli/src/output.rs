//! Writing to the terminal without panicking. `println!`/`eprintln!` panic
//! when the write fails (a closed pipe: `kiln build . 2>&1 | head`), which
//! ends kiln with exit 101 and a panic message; here a closed stdout is
//! quietly the end of the output, and stderr is best effort (there is
//! nowhere left to report a failure to write it).

use std::io::Write;

/// Writes one line (`format!` arguments) to standard error, ignoring
/// failures.
macro_rules! report {
    ($($arg:tt)*) => {
        $crate::output::write_stderr(&format!("{}\n", format_args!($($arg)*)))
    };
}
pub(crate) use report;

pub fn write_stderr(text: &str) {
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// Asks `warning` + "Are you sure you want to continue? [y/N]" on
/// standard error and reads the answer from standard input, as docker's
/// prune commands do without `-f`; anything but y/yes (an empty line, no
/// input at all) is no.
pub fn confirm(warning: &str) -> std::io::Result<bool> {
    write_stderr(&format!(
        "WARNING! {warning}\nAre you sure you want to continue? [y/N] "
    ));
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    let answer = answer.trim().to_ascii_lowercase();
    Ok(answer == "y" || answer == "yes")
}

/// An error and its causes, each once: `a: b: c`. Errors of the library
/// crates already end with their source's text (`{path}: {source}`), and
/// anyhow's `{:#}` would append it again.
pub fn render_error(error: &anyhow::Error) -> String {
    let mut out = error.to_string();
    for cause in error.chain().skip(1) {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{path}: {source}")]
    struct AtPath {
        path: String,
        #[source]
        source: std::io::Error,
    }

    #[test]
    fn each_cause_is_shown_once() {
        let io = std::io::Error::from_raw_os_error(28);
        let error = anyhow::Error::new(AtPath {
            path: "/store/blobs/x".into(),
            source: io,
        })
        .context("writing the layer");
        let text = render_error(&error);
        assert_eq!(text.matches("No space left on device").count(), 1, "{text}");
        assert!(
            text.starts_with("writing the layer: /store/blobs/x: "),
            "{text}"
        );
    }
}
