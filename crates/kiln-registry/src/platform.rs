//! The platform an index entry is chosen for, and the rule that chooses
//! it. What `--platform` means (its grammar and aliases) is kiln-graph's
//! `Platform`; this is built from its parts.

use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// `os/architecture[/variant]`, normalised as containerd matches
    /// platforms: `aarch64` is `arm64`, `x86_64` `amd64`, and an `arm64`
    /// (`arm`) without variant is `v8` (`v7`).
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Platform {
        let (architecture, variant) = match (architecture, variant) {
            ("aarch64", variant) => ("arm64", variant),
            ("x86_64" | "x86-64", variant) => ("amd64", variant),
            ("arm64", None) => ("arm64", Some("v8")),
            ("arm", None) => ("arm", Some("v7")),
            (architecture, variant) => (architecture, variant),
        };
        Platform {
            os: os.to_owned(),
            architecture: architecture.to_owned(),
            variant: variant.map(str::to_owned),
        }
    }

    /// Whether an index entry's platform is this one (an entry that names
    /// no variant matches any variant of its architecture).
    pub(crate) fn matches(&self, os: &str, architecture: &str, variant: Option<&str>) -> bool {
        let entry = Platform::new(os, architecture, variant);
        entry.os == self.os
            && entry.architecture == self.architecture
            && (variant.is_none() || entry.variant == self.variant)
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_match_as_containerd_matches_them() {
        let arm64 = Platform::new("linux", "arm64", None);
        assert_eq!(arm64.to_string(), "linux/arm64/v8");
        assert!(arm64.matches("linux", "arm64", None));
        assert!(arm64.matches("linux", "aarch64", Some("v8")));
        assert!(!arm64.matches("linux", "arm64", Some("v9")));
        assert!(!arm64.matches("linux", "amd64", None));
        let v6 = Platform::new("linux", "arm", Some("v6"));
        assert!(!v6.matches("linux", "arm", Some("v7")));
        assert!(v6.matches("linux", "arm", None));
        assert!(Platform::new("linux", "x86_64", None).matches("linux", "amd64", None));
    }
}
