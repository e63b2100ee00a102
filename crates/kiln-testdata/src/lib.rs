//! kiln-testdata tells tests where the data beside the repository is
//! (`../shared`: BuildKit's parser cases, the shell-lexer and
//! `.dockerignore` tables, real Dockerfiles, Docker's seccomp profile, the
//! benchmark projects) and what to do when a clone has none. It is a
//! dev-dependency only; no kiln crate links it.
//!
//! The data is read in place, never copied into the repository. A clone
//! without `../shared` still runs every other test: the suites that need it
//! skip themselves and say so; in CI (`CI` set, as every CI service sets
//! it) a missing folder fails the test instead, so CI can never pass with
//! a conformance suite skipped.

use std::path::{Path, PathBuf};

pub mod registry;

/// `../shared`, beside the repository root (this crate is `crates/kiln-testdata`).
pub fn shared_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let beside_repository = manifest.ancestors().nth(3).unwrap_or(manifest);
    beside_repository.join("shared")
}

/// `../shared/<relative>`, whether or not it exists.
pub fn shared_path(relative: &str) -> PathBuf {
    shared_root().join(relative)
}

/// True when `../shared/<relative>` is absent and the calling test should
/// return at once (it has said so on stderr). Panics instead when `CI` is
/// set: a skipped conformance suite must not pass there.
///
/// ```
/// if kiln_testdata::missing("conformance/real-world") {
///     return;
/// }
/// ```
pub fn missing(relative: &str) -> bool {
    missing_at(&shared_path(relative))
}

fn missing_at(path: &Path) -> bool {
    if path.exists() {
        return false;
    }
    let why = format!(
        "{} not found: this test reads data kept beside the repository (../shared)",
        path.display()
    );
    if std::env::var_os("CI").is_some() {
        panic!("{why}; CI must run every conformance suite");
    }
    eprintln!("skipped: {why}");
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_present_folder_is_not_missing() {
        assert!(!missing_at(Path::new(env!("CARGO_MANIFEST_DIR"))));
    }

    #[test]
    fn an_absent_folder_skips_outside_ci_and_fails_in_ci() {
        let absent = Path::new(env!("CARGO_MANIFEST_DIR")).join("no-such-folder");
        if std::env::var_os("CI").is_some() {
            assert!(std::panic::catch_unwind(|| missing_at(&absent)).is_err());
        } else {
            assert!(missing_at(&absent));
        }
    }
}
