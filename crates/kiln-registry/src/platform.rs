//! Platforms (`linux/amd64`, `linux/arm64/v8`) as `--platform` writes them
//! and image indexes list them, and which index entry one of them picks.

use std::fmt;

use crate::error::RegistryError;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// `os/arch[/variant]`; `arm64` means `arm64/v8` and `arm` `arm/v7`,
    /// as containerd normalises them.
    pub fn parse(text: &str) -> Result<Platform, RegistryError> {
        let parts: Vec<&str> = text.split('/').collect();
        let valid = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.".contains(&b))
        };
        if !(2..=3).contains(&parts.len()) || !parts.iter().all(|p| valid(p)) {
            return Err(RegistryError::InvalidPlatform(text.to_owned()));
        }
        Ok(Platform::normalized(
            parts[0],
            parts[1],
            parts.get(2).map(|v| (*v).to_owned()),
        ))
    }

    /// The platform kiln runs on.
    pub fn host() -> Platform {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            other => other,
        };
        Platform::normalized("linux", architecture, None)
    }

    fn normalized(os: &str, architecture: &str, variant: Option<String>) -> Platform {
        let (architecture, variant) = match (architecture, variant) {
            ("aarch64", variant) => ("arm64", variant),
            ("x86_64" | "x86-64", variant) => ("amd64", variant),
            ("arm64", None) => ("arm64", Some("v8".to_owned())),
            ("arm", None) => ("arm", Some("v7".to_owned())),
            (architecture, variant) => (architecture, variant),
        };
        Platform {
            os: os.to_owned(),
            architecture: architecture.to_owned(),
            variant,
        }
    }

    /// Whether an index entry's platform is this one (an entry that names
    /// no variant matches any variant of its architecture).
    pub(crate) fn matches(&self, os: &str, architecture: &str, variant: Option<&str>) -> bool {
        let entry = Platform::normalized(os, architecture, variant.map(str::to_owned));
        entry.os == self.os
            && entry.architecture == self.architecture
            && (entry.variant.is_none() || entry.variant == self.variant)
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
    fn parses_and_normalises_platforms() {
        let p = Platform::parse("linux/arm64").unwrap();
        assert_eq!(p.to_string(), "linux/arm64/v8");
        assert!(p.matches("linux", "arm64", None));
        assert!(p.matches("linux", "aarch64", Some("v8")));
        assert!(!p.matches("linux", "arm64", Some("v9")));
        assert!(!p.matches("linux", "amd64", None));
        assert_eq!(
            Platform::parse("linux/arm").unwrap().to_string(),
            "linux/arm/v7"
        );
        let v6 = Platform::parse("linux/arm/v6").unwrap();
        assert!(!v6.matches("linux", "arm", Some("v7")));
        for bad in ["linux", "linux/", "a/b/c/d", "Linux/amd64", "linux/amd 64"] {
            assert!(Platform::parse(bad).is_err(), "{bad}");
        }
    }
}
