//! Image names as users write them (`app`, `app:1.0`, `registry:5000/team/app@sha256:...`):
//! validation with the Docker reference grammar, and the normalised form two
//! names are compared by (`app` and `docker.io/library/app:latest` are the
//! same image).

use crate::digest::Digest;
use crate::error::StoreError;

/// A parsed image reference.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Reference {
    /// Registry host (with port), `docker.io` when not written.
    pub domain: String,
    /// Repository path; `library/` added for single-component Docker Hub names.
    pub path: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl Reference {
    pub fn parse(name: &str) -> Result<Reference, StoreError> {
        let invalid = |reason: &str| StoreError::InvalidName {
            name: name.chars().take(200).collect(),
            reason: reason.to_owned(),
        };
        if name.is_empty() || name.len() > 4096 {
            return Err(invalid("empty or too long"));
        }
        let (rest, digest) = match name.split_once('@') {
            Some((rest, digest)) => (rest, Some(digest.parse::<Digest>()?)),
            None => (name, None),
        };
        // A tag is after the last `:` that comes after the last `/`.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (repo, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(tag) = tag {
            let valid = !tag.is_empty()
                && tag.len() <= 128
                && tag.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
                && tag
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
            if !valid {
                return Err(invalid("a tag is letters, digits, _ . - (at most 128)"));
            }
        }
        let mut components: Vec<&str> = repo.split('/').collect();
        let domain = if components.len() > 1
            && (components[0].contains(['.', ':']) || components[0] == "localhost")
        {
            let domain = components.remove(0);
            let (host, port) = match domain.rsplit_once(':') {
                Some((host, port)) if !host.ends_with(':') => (host, Some(port)),
                _ => (domain, None),
            };
            // Docker's domain components: letters and digits, inner `-`,
            // joined by single dots (so never `.` or `..`, which would
            // name a directory where a registry's name is one).
            let component_ok = |c: &str| {
                c.starts_with(|c: char| c.is_ascii_alphanumeric())
                    && c.ends_with(|c: char| c.is_ascii_alphanumeric())
                    && c.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            };
            let ipv6 = host.len() > 2
                && host.starts_with('[')
                && host.ends_with(']')
                && host[1..host.len() - 1]
                    .chars()
                    .all(|c| c.is_ascii_hexdigit() || ":.%".contains(c));
            let host_ok = (host.split('.').all(component_ok) || ipv6)
                && port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
            if !host_ok {
                return Err(invalid("bad registry host"));
            }
            domain.to_owned()
        } else {
            "docker.io".to_owned()
        };
        for component in &components {
            if !valid_path_component(component) {
                return Err(invalid(
                    "repository names are lower-case letters and digits, separated by . _ __ - or /",
                ));
            }
        }
        let mut path = components.join("/");
        if domain == "docker.io" && components.len() == 1 {
            path = format!("library/{path}");
        }
        Ok(Reference {
            domain,
            path,
            tag: tag.map(str::to_owned),
            digest,
        })
    }

    /// The full form used to compare names: `docker.io/library/app:latest`
    /// (a name with neither tag nor digest means `:latest`).
    pub fn normalized(&self) -> String {
        let mut out = format!("{}/{}", self.domain, self.path);
        match (&self.tag, &self.digest) {
            (Some(tag), _) => {
                out.push(':');
                out.push_str(tag);
            }
            (None, None) => out.push_str(":latest"),
            (None, Some(_)) => {}
        }
        if let Some(digest) = &self.digest {
            out.push('@');
            out.push_str(&digest.to_string());
        }
        out
    }
}

impl Reference {
    /// The short form Docker shows: `app:latest`, `team/app:1`,
    /// `localhost:5000/app:dev`.
    pub fn familiar(&self) -> String {
        let mut name = if self.domain == "docker.io" {
            self.path
                .strip_prefix("library/")
                .unwrap_or(&self.path)
                .to_owned()
        } else {
            format!("{}/{}", self.domain, self.path)
        };
        name.push(':');
        name.push_str(self.tag.as_deref().unwrap_or("latest"));
        name
    }
}

/// `[a-z0-9]+` joined by `.`, `_`, `__` or runs of `-`.
fn valid_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    if bytes.is_empty()
        || !bytes[0].is_ascii_lowercase() && !bytes[0].is_ascii_digit()
        || !bytes[bytes.len() - 1].is_ascii_lowercase() && !bytes[bytes.len() - 1].is_ascii_digit()
    {
        return false;
    }
    let mut separator = String::new();
    for &b in bytes {
        if b.is_ascii_lowercase() || b.is_ascii_digit() {
            if !(separator.is_empty()
                || separator == "."
                || separator == "_"
                || separator == "__"
                || separator.bytes().all(|s| s == b'-'))
            {
                return false;
            }
            separator.clear();
        } else if b"._-".contains(&b) {
            separator.push(b as char);
        } else {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_docker_hub_names() {
        let n = |s: &str| Reference::parse(s).unwrap().normalized();
        assert_eq!(n("app"), "docker.io/library/app:latest");
        assert_eq!(n("app:1.0"), "docker.io/library/app:1.0");
        assert_eq!(n("team/app"), "docker.io/team/app:latest");
        assert_eq!(n("localhost:5000/app:dev"), "localhost:5000/app:dev");
        assert_eq!(n("127.0.0.1:5000/a/b"), "127.0.0.1:5000/a/b:latest");
        let d = Digest::of(b"x");
        assert_eq!(n(&format!("app@{d}")), format!("docker.io/library/app@{d}"));
    }

    #[test]
    fn rejects_bad_names() {
        for bad in [
            "",
            "App",
            "app:",
            "app:-x",
            "a//b",
            "-a",
            "a-",
            "a:b:c/d",
            "a@sha256:12",
            "a b",
            "../app",
            "./app",
            "..:5000/app",
            "a..b:5000/app",
            "-reg.example/app",
            "[../x]:5000/app",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad}");
        }
        assert!(Reference::parse("a__b.c-d--e").is_ok());
        for good in [
            "reg-1.example.com:5000/a",
            "[::1]:5000/a",
            "localhost/a",
            "127.0.0.1:5000/a/b",
        ] {
            assert!(Reference::parse(good).is_ok(), "{good}");
        }
    }
}
