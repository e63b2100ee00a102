//! Sizes as people read them, one way for every front end: decimal
//! units, as Docker prints them (`30.9MB`, `512B`).

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

#[cfg(test)]
mod tests {
    use super::human_size;

    #[test]
    fn sizes_read_as_docker_prints_them() {
        assert_eq!(human_size(512), "512B");
        assert_eq!(human_size(30_900_000), "30.9MB");
        assert_eq!(human_size(u64::MAX), "18446744.1TB");
    }
}
