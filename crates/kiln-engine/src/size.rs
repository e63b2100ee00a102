//! Sizes and durations as people read them, one way for every front end
//! (the CLI, the daemon's `Status` texts): decimal units, as Docker prints
//! them (`30.9MB`, `512B`), and docker's durations (`About a minute`).

/// `bytes` with one decimal in the largest decimal unit under 1000.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else {
        format!("{value:.1}{}", UNITS[unit])
    }
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

/// `bytes` in binary units with up to two decimals, as `docker stats`
/// shows memory (`1.5MiB`, `64MiB`, `512B`).
pub fn human_binary_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    let text = format!("{value:.2}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}{}", UNITS[unit])
}

/// The bytes of the regular files under `dir` (none if it is absent);
/// links are not followed.
pub fn tree_size(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => tree_size(&entry.path()),
            Ok(kind) if kind.is_file() => entry.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::{human_binary_size, human_duration, human_size};

    #[test]
    fn binary_sizes_read_as_docker_stats_shows_them() {
        assert_eq!(human_binary_size(512), "512B");
        assert_eq!(human_binary_size(64 * 1024 * 1024), "64MiB");
        assert_eq!(human_binary_size(1536 * 1024), "1.5MiB");
    }

    #[test]
    fn sizes_read_as_docker_prints_them() {
        assert_eq!(human_size(512), "512B");
        assert_eq!(human_size(30_900_000), "30.9MB");
        assert_eq!(human_size(u64::MAX), "18446744.1TB");
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
