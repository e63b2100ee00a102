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

/// A duration as docker says one (its `units.HumanDuration`, for `ps`
/// ages and the CREATED of `images` and `history` alike): "Less than a
/// second", "5 seconds", "About a minute", "3 minutes", "About an hour",
/// "2 hours", "3 days".
pub fn human_duration(elapsed: std::time::Duration) -> String {
    let seconds = elapsed.as_secs();
    let plural = |n: u64, unit: &str| format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
    match seconds {
        0 => "Less than a second".to_owned(),
        1..60 => plural(seconds, "second"),
        60..120 => "About a minute".to_owned(),
        120..3600 => plural(seconds / 60, "minute"),
        3600..7200 => "About an hour".to_owned(),
        7200..172_800 => plural(seconds / 3600, "hour"),
        172_800..1_209_600 => plural(seconds / 86400, "day"),
        1_209_600..5_184_000 => plural(seconds / 604_800, "week"),
        5_184_000..63_072_000 => plural(seconds / 2_592_000, "month"),
        _ => plural(seconds / 31_536_000, "year"),
    }
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

    #[test]
    fn durations_read_as_dockers() {
        use std::time::Duration;
        let say = |secs| human_duration(Duration::from_secs(secs));
        assert_eq!(say(0), "Less than a second");
        assert_eq!(say(1), "1 second");
        assert_eq!(say(59), "59 seconds");
        assert_eq!(say(90), "About a minute");
        assert_eq!(say(3599), "59 minutes");
        assert_eq!(say(5000), "About an hour");
        assert_eq!(say(3 * 86400), "3 days");
        assert_eq!(say(20 * 86400), "2 weeks");
        assert_eq!(say(400 * 86400), "13 months");
        assert_eq!(say(800 * 86400), "2 years");
    }
}
