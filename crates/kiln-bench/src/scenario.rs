//! A scripted history: builds, each after its edits of the project (the
//! format is in docs/bench.md). The edits apply, in order and cumulatively,
//! to a copy of the project; paths are resolved inside that copy and never
//! through a symlink.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

use crate::BenchError;

/// A scenario file, parsed.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    #[serde(rename = "build", default)]
    pub builds: Vec<ScenarioBuild>,
}

/// One build, after its edits.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioBuild {
    pub name: String,
    #[serde(default)]
    pub edits: Vec<Edit>,
}

/// One change to the project (paths relative to its root).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Edit {
    /// Replaces (or creates) the file with `content`.
    Write { path: String, content: String },
    /// Adds `content` at the end of the file (created if missing).
    Append { path: String, content: String },
    /// Sets the file's modification time to now; its content is unchanged.
    Touch { path: String },
    /// Removes the file or directory (with what it holds).
    Delete { path: String },
    /// Sets the permission bits, in octal (`"755"`).
    Chmod { path: String, mode: String },
    /// Moves `path` to `to`.
    Rename { path: String, to: String },
    /// Sets a build arg from this build on; without `value`, unsets it.
    BuildArg {
        name: String,
        #[serde(default)]
        value: Option<String>,
    },
    /// Replaces the base image: every `FROM` of the Dockerfile naming
    /// `from` names `to` instead.
    Base { from: String, to: String },
}

impl Scenario {
    /// Parses the text of `file`.
    pub fn parse(file: &Path, text: &str) -> Result<Scenario, BenchError> {
        let scenario: Scenario = toml::from_str(text).map_err(|e| BenchError::Scenario {
            file: file.to_owned(),
            message: e.to_string(),
        })?;
        if scenario.builds.is_empty() {
            return Err(BenchError::Scenario {
                file: file.to_owned(),
                message: "it has no [[build]]".into(),
            });
        }
        for (index, build) in scenario.builds.iter().enumerate() {
            for edit in &build.edits {
                edit.check().map_err(|message| BenchError::Scenario {
                    file: file.to_owned(),
                    message: format!("build {} ({}): {message}", index + 1, build.name),
                })?;
            }
        }
        Ok(scenario)
    }

    /// Reads and parses `file`.
    pub fn read(file: &Path) -> Result<Scenario, BenchError> {
        let text = fs::read_to_string(file).map_err(|e| BenchError::io(file, e))?;
        Scenario::parse(file, &text)
    }
}

impl Edit {
    /// What is wrong with the edit before anything is applied.
    fn check(&self) -> Result<(), String> {
        for path in self.paths() {
            relative_parts(path)?;
        }
        if let Edit::Chmod { mode, .. } = self {
            parse_mode(mode)?;
        }
        Ok(())
    }

    fn paths(&self) -> Vec<&str> {
        match self {
            Edit::Write { path, .. }
            | Edit::Append { path, .. }
            | Edit::Touch { path }
            | Edit::Delete { path }
            | Edit::Chmod { path, .. } => vec![path],
            Edit::Rename { path, to } => vec![path, to],
            Edit::BuildArg { .. } | Edit::Base { .. } => Vec::new(),
        }
    }

    /// Applies the edit to the project at `root` (`dockerfile`: its
    /// Dockerfile, for [`Edit::Base`]; `build_args` for
    /// [`Edit::BuildArg`]).
    pub fn apply(
        &self,
        root: &Path,
        dockerfile: &Path,
        build_args: &mut BTreeMap<String, String>,
    ) -> Result<(), String> {
        let inside = |path: &str| resolve_inside(root, path);
        let io = |path: &Path, e: std::io::Error| format!("{}: {e}", path.display());
        match self {
            Edit::Write { path, content } => {
                let file = inside(path)?;
                fs::write(&file, content).map_err(|e| io(&file, e))
            }
            Edit::Append { path, content } => {
                use std::io::Write;
                let file = inside(path)?;
                fs::OpenOptions::new()
                    .append(true)
                    .create(true)
                    .open(&file)
                    .and_then(|mut f| f.write_all(content.as_bytes()))
                    .map_err(|e| io(&file, e))
            }
            Edit::Touch { path } => {
                let file = inside(path)?;
                fs::File::options()
                    .write(true)
                    .open(&file)
                    .and_then(|f| f.set_modified(std::time::SystemTime::now()))
                    .map_err(|e| io(&file, e))
            }
            Edit::Delete { path } => {
                let file = inside(path)?;
                let meta = fs::symlink_metadata(&file).map_err(|e| io(&file, e))?;
                if meta.is_dir() {
                    fs::remove_dir_all(&file)
                } else {
                    fs::remove_file(&file)
                }
                .map_err(|e| io(&file, e))
            }
            Edit::Chmod { path, mode } => {
                let file = inside(path)?;
                let meta = fs::symlink_metadata(&file).map_err(|e| io(&file, e))?;
                if meta.file_type().is_symlink() {
                    return Err(format!("{path} is a symlink"));
                }
                fs::set_permissions(&file, fs::Permissions::from_mode(parse_mode(mode)?))
                    .map_err(|e| io(&file, e))
            }
            Edit::Rename { path, to } => {
                let (from, to) = (inside(path)?, inside(to)?);
                fs::rename(&from, &to).map_err(|e| io(&from, e))
            }
            Edit::BuildArg { name, value } => {
                match value {
                    Some(value) => build_args.insert(name.clone(), value.clone()),
                    None => build_args.remove(name),
                };
                Ok(())
            }
            Edit::Base { from, to } => {
                let text = fs::read_to_string(dockerfile).map_err(|e| io(dockerfile, e))?;
                let (rewritten, count) = replace_base(&text, from, to);
                if count == 0 {
                    return Err(format!("no FROM of {} names {from}", dockerfile.display()));
                }
                fs::write(dockerfile, rewritten).map_err(|e| io(dockerfile, e))
            }
        }
    }
}

/// `path`'s components: relative, no `..`.
fn relative_parts(path: &str) -> Result<Vec<&std::ffi::OsStr>, String> {
    let mut parts = Vec::new();
    for component in Path::new(path).components() {
        match component {
            Component::Normal(part) => parts.push(part),
            Component::CurDir => {}
            _ => return Err(format!("{path:?} must be a relative path without '..'")),
        }
    }
    if parts.is_empty() {
        return Err(format!("{path:?} names no file"));
    }
    Ok(parts)
}

/// `path` under `root`, refused if a directory on the way is a symlink
/// (the last component may be anything: it is what the edit acts on, and
/// no edit follows it).
fn resolve_inside(root: &Path, path: &str) -> Result<PathBuf, String> {
    let parts = relative_parts(path)?;
    let mut resolved = root.to_path_buf();
    for (i, part) in parts.iter().enumerate() {
        resolved.push(part);
        if i + 1 < parts.len() {
            match fs::symlink_metadata(&resolved) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    return Err(format!(
                        "{path}: {} is a symlink",
                        Path::new(part).display()
                    ))
                }
                _ => {}
            }
        }
    }
    Ok(resolved)
}

fn parse_mode(mode: &str) -> Result<u32, String> {
    u32::from_str_radix(mode, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("mode {mode:?} is not octal permission bits (\"755\")"))
}

/// `text` with the image of every `FROM` line naming `from` replaced by
/// `to`, and how many were.
fn replace_base(text: &str, from: &str, to: &str) -> (String, usize) {
    let mut count = 0;
    let lines: Vec<String> = text
        .split_inclusive('\n')
        .map(|line| {
            let trimmed = line.trim_start();
            let is_from = trimmed
                .get(..5)
                .is_some_and(|word| word.eq_ignore_ascii_case("from "));
            if !is_from {
                return line.to_owned();
            }
            // FROM [--flag=...] image [AS name]: the first word that is
            // not a flag is the image.
            let image = trimmed[5..]
                .split_whitespace()
                .find(|word| !word.starts_with("--"));
            if image != Some(from) {
                return line.to_owned();
            }
            count += 1;
            let at = line.len() - trimmed.len() + 5;
            let rest = &line[at..];
            let offset = rest.find(from).unwrap_or(0);
            format!(
                "{}{}{to}{}",
                &line[..at],
                &rest[..offset],
                &rest[offset + from.len()..]
            )
        })
        .collect();
    (lines.concat(), count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_edit_of_the_documented_example_parses() {
        let text = r#"
[[build]]
name = "as it is"

[[build]]
name = "everything"
edits = [
  { op = "write", path = "src/app.txt", content = "new\n" },
  { op = "append", path = "src/app.txt", content = "more\n" },
  { op = "touch", path = "src/app.txt" },
  { op = "delete", path = "src/old.txt" },
  { op = "chmod", path = "run.sh", mode = "755" },
  { op = "rename", path = "a.txt", to = "b.txt" },
  { op = "build_arg", name = "VERSION", value = "2" },
  { op = "build_arg", name = "VERSION" },
  { op = "base", from = "busybox:latest", to = "busybox:v2" },
]
"#;
        let scenario = Scenario::parse(Path::new("s.toml"), text).unwrap();
        assert_eq!(scenario.builds.len(), 2);
        assert_eq!(scenario.builds[1].edits.len(), 9);
        assert_eq!(
            scenario.builds[1].edits[8],
            Edit::Base {
                from: "busybox:latest".into(),
                to: "busybox:v2".into()
            }
        );
    }

    #[test]
    fn bad_scenarios_are_refused_with_where() {
        for (text, expected) in [
            ("", "no [[build]]"),
            ("[[build]]\nname = \"a\"\nedits = [{ op = \"write\", path = \"../x\", content = \"\" }]", "build 1 (a)"),
            ("[[build]]\nname = \"a\"\nedits = [{ op = \"touch\", path = \"/etc/passwd\" }]", "relative path"),
            ("[[build]]\nname = \"a\"\nedits = [{ op = \"chmod\", path = \"x\", mode = \"999\" }]", "octal"),
            ("[[build]]\nname = \"a\"\nedits = [{ op = \"explode\", path = \"x\" }]", "explode"),
        ] {
            let error = Scenario::parse(Path::new("s.toml"), text).unwrap_err().to_string();
            assert!(error.contains("s.toml") && error.contains(expected), "{error}");
        }
    }

    #[test]
    fn edits_stay_inside_the_project_and_never_follow_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("project");
        let outside = dir.path().join("outside");
        fs::create_dir_all(&root).unwrap();
        fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        let mut args = BTreeMap::new();
        let dockerfile = root.join("Dockerfile");
        let write = Edit::Write {
            path: "link/escaped".into(),
            content: "x".into(),
        };
        let error = write.apply(&root, &dockerfile, &mut args).unwrap_err();
        assert!(error.contains("symlink"), "{error}");
        assert!(!outside.join("escaped").exists());
        // Deleting the link removes the link, not what it points at.
        fs::write(outside.join("kept"), "x").unwrap();
        Edit::Delete {
            path: "link".into(),
        }
        .apply(&root, &dockerfile, &mut args)
        .unwrap();
        assert!(outside.join("kept").exists());
    }

    #[test]
    fn a_base_edit_rewrites_only_the_from_lines_naming_it() {
        let text = "FROM busybox:latest AS build\nRUN echo busybox:latest\nfrom --platform=linux/amd64 busybox:latest\nFROM other\n";
        let (rewritten, count) = replace_base(text, "busybox:latest", "busybox:v2");
        assert_eq!(count, 2);
        assert_eq!(
            rewritten,
            "FROM busybox:v2 AS build\nRUN echo busybox:latest\nfrom --platform=linux/amd64 busybox:v2\nFROM other\n"
        );
    }
}
