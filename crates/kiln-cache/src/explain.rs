//! Why a step missed: what it read this time against what the last miss at
//! the same Dockerfile position read, reduced to one reason a person can
//! act on ("input src/main.rs changed", "build arg VERSION changed 1.2 →
//! 1.3").

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// What one run of a step read.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    /// The step's key and its parent's.
    pub key: String,
    pub parent: Option<String>,
    /// The instruction after expansion.
    pub definition: String,
    /// The resolved base image (FROM).
    pub base: Option<String>,
    pub build_args: BTreeMap<String, String>,
    /// Files read (COPY/ADD), path → content digest.
    pub files: BTreeMap<String, String>,
}

/// The reason for a miss.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Miss {
    FirstBuild,
    /// `--no-cache`: every step runs.
    NoCache,
    /// `--no-cache-filter`: the steps of this stage run.
    NoCacheFilter {
        stage: String,
    },
    InstructionChanged,
    BaseChanged,
    BuildArg {
        name: String,
        old: Option<String>,
        new: Option<String>,
    },
    Files {
        first: String,
        how: &'static str,
        more: usize,
    },
    ParentChanged,
    /// A cached layer was gone from the store, or the inputs differ in a way
    /// the record does not show.
    Other,
}

impl fmt::Display for Miss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Miss::FirstBuild => f.write_str("first build"),
            Miss::NoCache => f.write_str("--no-cache"),
            Miss::NoCacheFilter { stage } => write!(f, "--no-cache-filter {stage}"),
            Miss::InstructionChanged => f.write_str("instruction changed"),
            Miss::BaseChanged => f.write_str("base image changed"),
            Miss::BuildArg { name, old, new } => {
                let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "(unset)".into());
                write!(f, "build arg {name} changed {} → {}", show(old), show(new))
            }
            Miss::Files { first, how, more } => {
                write!(f, "input {first} {how}")?;
                if *more > 0 {
                    write!(f, " (and {more} more)")?;
                }
                Ok(())
            }
            Miss::ParentChanged => f.write_str("an earlier step changed"),
            Miss::Other => f.write_str("inputs changed"),
        }
    }
}

impl Miss {
    /// A stable name of the reason, for machine-readable progress.
    pub fn kind(&self) -> &'static str {
        match self {
            Miss::FirstBuild => "first_build",
            Miss::NoCache => "no_cache",
            Miss::NoCacheFilter { .. } => "no_cache_filter",
            Miss::InstructionChanged => "instruction_changed",
            Miss::BaseChanged => "base_changed",
            Miss::BuildArg { .. } => "build_arg",
            Miss::Files { .. } => "files",
            Miss::ParentChanged => "parent_changed",
            Miss::Other => "other",
        }
    }
}

/// Why `current` missed, given the last record at its position.
pub fn explain(previous: Option<&StepRecord>, current: &StepRecord) -> Miss {
    let Some(previous) = previous else {
        return Miss::FirstBuild;
    };
    if previous.base != current.base {
        return Miss::BaseChanged;
    }
    let names = previous.build_args.keys().chain(current.build_args.keys());
    for name in names {
        let (old, new) = (previous.build_args.get(name), current.build_args.get(name));
        if old != new {
            return Miss::BuildArg {
                name: name.clone(),
                old: old.cloned(),
                new: new.cloned(),
            };
        }
    }
    if let Some(files) = file_changes(&previous.files, &current.files) {
        return files;
    }
    // After the args: a changed arg also changes the expanded text, and
    // the arg is the cause worth naming.
    if previous.definition != current.definition {
        return Miss::InstructionChanged;
    }
    if previous.parent != current.parent {
        return Miss::ParentChanged;
    }
    Miss::Other
}

fn file_changes(old: &BTreeMap<String, String>, new: &BTreeMap<String, String>) -> Option<Miss> {
    let mut changes: Vec<(&str, &'static str)> = Vec::new();
    for (path, digest) in new {
        match old.get(path) {
            None => changes.push((path, "added")),
            Some(before) if before != digest => changes.push((path, "changed")),
            Some(_) => {}
        }
    }
    for path in old.keys() {
        if !new.contains_key(path) {
            changes.push((path, "removed"));
        }
    }
    changes.sort();
    let (first, how) = changes.first()?;
    Some(Miss::Files {
        first: (*first).to_owned(),
        how,
        more: changes.len() - 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(definition: &str, args: &[(&str, &str)], files: &[(&str, &str)]) -> StepRecord {
        StepRecord {
            key: "k".into(),
            parent: Some("p".into()),
            definition: definition.into(),
            base: None,
            build_args: args
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            files: files
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn reasons() {
        let base = record(
            "RUN make",
            &[("VERSION", "1.2")],
            &[("src/a", "1"), ("src/b", "2")],
        );
        assert_eq!(explain(None, &base).to_string(), "first build");
        let args = record(
            "RUN make",
            &[("VERSION", "1.3")],
            &[("src/a", "1"), ("src/b", "2")],
        );
        assert_eq!(
            explain(Some(&base), &args).to_string(),
            "build arg VERSION changed 1.2 → 1.3"
        );
        let files = record(
            "RUN make",
            &[("VERSION", "1.2")],
            &[("src/a", "9"), ("src/c", "3")],
        );
        assert_eq!(
            explain(Some(&base), &files).to_string(),
            "input src/a changed (and 2 more)"
        );
        let mut parent = base.clone();
        parent.parent = Some("q".into());
        assert_eq!(explain(Some(&base), &parent), Miss::ParentChanged);
        let text = record(
            "RUN make all",
            &[("VERSION", "1.2")],
            &[("src/a", "1"), ("src/b", "2")],
        );
        assert_eq!(explain(Some(&base), &text), Miss::InstructionChanged);
    }
}
