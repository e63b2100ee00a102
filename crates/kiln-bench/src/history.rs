//! Where the revisions come from: git commits, each written out from the
//! object database into a fresh directory, or a [`Scenario`]'s builds,
//! applied to one copy of the project.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::scenario::Scenario;
use crate::BenchError;

/// One revision to build.
#[derive(Clone, Debug)]
pub struct Revision {
    /// A short id (a commit's 7 hex digits, or the build's number).
    pub id: String,
    /// A commit's subject, or the scenario build's name.
    pub label: String,
}

/// A project's revisions, written out one at a time, oldest first.
pub trait History {
    fn revisions(&self) -> &[Revision];
    /// Writes revision `index` out (the ones before it were, in order);
    /// returns its context directory and the build args it sets.
    fn prepare(&mut self, index: usize) -> Result<Prepared, BenchError>;
}

/// A revision, written out.
pub struct Prepared {
    pub context: PathBuf,
    pub build_args: BTreeMap<String, String>,
}

/// Which commits of a repository.
#[derive(Clone, Debug)]
pub enum GitSelection {
    /// `A..B`: the first-parent chain from B back to (not including) A.
    Range { from: String, to: String },
    /// The last N commits of HEAD's first-parent chain.
    Last(usize),
}

/// The commits of a repository.
pub struct GitHistory {
    repo_path: PathBuf,
    repo: git2::Repository,
    commits: Vec<git2::Oid>,
    revisions: Vec<Revision>,
    work: PathBuf,
}

impl GitHistory {
    /// The `selection` of the repository at `repo`, written out under
    /// `work` when built.
    pub fn open(
        repo: &Path,
        selection: &GitSelection,
        work: &Path,
    ) -> Result<GitHistory, BenchError> {
        let git = |e: git2::Error| BenchError::Git {
            repo: repo.to_owned(),
            message: e.message().to_owned(),
        };
        let repository = git2::Repository::open(repo).map_err(git)?;
        let mut walk = repository.revwalk().map_err(git)?;
        walk.simplify_first_parent().map_err(git)?;
        let limit = match selection {
            GitSelection::Range { from, to } => {
                let to = repository.revparse_single(to).map_err(git)?.id();
                let from = repository.revparse_single(from).map_err(git)?.id();
                walk.push(to).map_err(git)?;
                walk.hide(from).map_err(git)?;
                usize::MAX
            }
            GitSelection::Last(n) => {
                walk.push_head().map_err(git)?;
                *n
            }
        };
        let mut commits: Vec<git2::Oid> =
            walk.take(limit).collect::<Result<_, _>>().map_err(git)?;
        commits.reverse();
        if commits.is_empty() {
            return Err(BenchError::Git {
                repo: repo.to_owned(),
                message: "the selection holds no commit".into(),
            });
        }
        let revisions = commits
            .iter()
            .map(|oid| {
                let commit = repository.find_commit(*oid).map_err(git)?;
                Ok(Revision {
                    id: oid.to_string()[..7].to_owned(),
                    label: commit.summary().unwrap_or("").to_owned(),
                })
            })
            .collect::<Result<Vec<_>, BenchError>>()?;
        Ok(GitHistory {
            repo_path: repo.to_owned(),
            repo: repository,
            commits,
            revisions,
            work: work.to_owned(),
        })
    }
}

impl History for GitHistory {
    fn revisions(&self) -> &[Revision] {
        &self.revisions
    }

    /// Each commit written afresh (the one before removed), as a CI
    /// checkout is, at the same path (a build's cache records are kept
    /// per context path, so that is what lets them explain each miss):
    /// written by libgit2's checkout, which refuses paths that escape it,
    /// into that directory only (the repository's index and work tree are
    /// not touched).
    fn prepare(&mut self, index: usize) -> Result<Prepared, BenchError> {
        let git = |e: git2::Error| BenchError::Git {
            repo: self.repo_path.clone(),
            message: format!("commit {}: {}", self.revisions[index].id, e.message()),
        };
        let dir = self.work.join("checkout");
        match fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(BenchError::io(&dir, e))
            }
            _ => {}
        }
        fs::create_dir_all(&dir).map_err(|e| BenchError::io(&dir, e))?;
        let commit = self.repo.find_commit(self.commits[index]).map_err(git)?;
        let tree = commit.tree().map_err(git)?;
        let mut checkout = git2::build::CheckoutBuilder::new();
        checkout
            .target_dir(&dir)
            .update_index(false)
            .force()
            .recreate_missing(true);
        self.repo
            .checkout_tree(tree.as_object(), Some(&mut checkout))
            .map_err(git)?;
        Ok(Prepared {
            context: dir,
            build_args: BTreeMap::new(),
        })
    }
}

/// A scenario's builds over one copy of the project.
pub struct ScenarioHistory {
    scenario: Scenario,
    revisions: Vec<Revision>,
    copy: PathBuf,
    dockerfile: PathBuf,
    build_args: BTreeMap<String, String>,
    file: PathBuf,
}

impl ScenarioHistory {
    /// `scenario` (read from `file`) over a copy of `project`, made under
    /// `work`; `dockerfile` is relative to the project.
    pub fn new(
        scenario: Scenario,
        file: &Path,
        project: &Path,
        dockerfile: &Path,
        work: &Path,
    ) -> Result<ScenarioHistory, BenchError> {
        let copy = work.join("project");
        copy_tree(project, &copy)?;
        let revisions = scenario
            .builds
            .iter()
            .enumerate()
            .map(|(i, build)| Revision {
                id: (i + 1).to_string(),
                label: build.name.clone(),
            })
            .collect();
        Ok(ScenarioHistory {
            dockerfile: copy.join(dockerfile),
            scenario,
            revisions,
            copy,
            build_args: BTreeMap::new(),
            file: file.to_owned(),
        })
    }
}

impl History for ScenarioHistory {
    fn revisions(&self) -> &[Revision] {
        &self.revisions
    }

    fn prepare(&mut self, index: usize) -> Result<Prepared, BenchError> {
        let build = &self.scenario.builds[index];
        for edit in &build.edits {
            edit.apply(&self.copy, &self.dockerfile, &mut self.build_args)
                .map_err(|message| BenchError::Scenario {
                    file: self.file.clone(),
                    message: format!("build {} ({}): {message}", index + 1, build.name),
                })?;
        }
        Ok(Prepared {
            context: self.copy.clone(),
            build_args: self.build_args.clone(),
        })
    }
}

/// Copies the tree at `from` to `to` (made): symlinks as symlinks, never
/// followed; files with their modes and times.
fn copy_tree(from: &Path, to: &Path) -> Result<(), BenchError> {
    for entry in walkdir::WalkDir::new(from).follow_links(false) {
        let entry = entry.map_err(|e| {
            let path = e.path().unwrap_or(from).to_owned();
            BenchError::io(path, e.into())
        })?;
        let relative = entry.path().strip_prefix(from).unwrap_or(entry.path());
        let target = to.join(relative);
        let io = |e| BenchError::io(entry.path(), e);
        let kind = entry.file_type();
        if kind.is_dir() {
            // Its own mode is not copied: a read-only directory would
            // refuse what it holds.
            fs::create_dir_all(&target).map_err(io)?;
            continue;
        } else if kind.is_symlink() {
            let link = fs::read_link(entry.path()).map_err(io)?;
            std::os::unix::fs::symlink(link, &target).map_err(io)?;
            continue;
        } else if kind.is_file() {
            fs::copy(entry.path(), &target).map_err(io)?;
        } else {
            // Sockets, fifos, devices: not part of a build context.
            continue;
        }
        let meta = entry.metadata().map_err(|e| io(e.into()))?;
        let file = fs::File::open(&target).map_err(io)?;
        file.set_modified(meta.modified().map_err(io)?)
            .map_err(io)?;
        fs::set_permissions(&target, meta.permissions()).map_err(io)?;
    }
    Ok(())
}
