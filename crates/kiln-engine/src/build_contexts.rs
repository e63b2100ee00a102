//! Named build contexts (`--build-context NAME=VALUE`, BuildKit 0.10+):
//! a name the Dockerfile uses as if it were a stage (`FROM NAME`,
//! `COPY --from=NAME`, `RUN --mount=from=NAME`), standing for an image
//! (`docker-image://REF`) or a local directory. A name also overrides a
//! stage or an image of that name, as BuildKit's do.
//!
//! kiln gives both kinds one shape: an image. A directory is taken in as
//! a one-layer image of its files (its own `.dockerignore` applied, each
//! path resolved inside it, links kept as links, owned by root, times
//! kept), content-addressed, so the same files are the same image and the
//! steps that read them stay cached. The planner then sees only image
//! references.
//!
//! Not here yet: `oci-layout://`, `target:` (bake), git and https
//! contexts: each is refused by name.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kiln_context::root::{EntryKind, Root};
use kiln_context::Ignore;
use kiln_store::Store;

use crate::EngineError;

/// What a named context stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BuildContext {
    /// `docker-image://REF`.
    Image(String),
    /// A local directory.
    Dir(PathBuf),
}

/// Parses `NAME=VALUE` (the name lower-cased, as stage names are).
pub fn parse_build_context(text: &str) -> Result<(String, BuildContext), EngineError> {
    let bad = |why: &str| EngineError::Request(format!("--build-context {text:?}: {why}"));
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| bad("expected NAME=PATH or NAME=docker-image://REF"))?;
    let name = name.trim().to_ascii_lowercase();
    if name.is_empty() || name.contains(char::is_whitespace) || value.is_empty() {
        return Err(bad("expected NAME=PATH or NAME=docker-image://REF"));
    }
    if let Some(reference) = value.strip_prefix("docker-image://") {
        kiln_store::Reference::parse(reference).map_err(|e| bad(&e.to_string()))?;
        return Ok((name, BuildContext::Image(reference.to_owned())));
    }
    for scheme in [
        "oci-layout://",
        "target:",
        "https://",
        "http://",
        "git@",
        "git://",
    ] {
        if value.starts_with(scheme) {
            return Err(bad(&format!(
                "{scheme} contexts are not supported yet (a directory or docker-image://REF)"
            )));
        }
    }
    if value.ends_with(".git") || value.contains(".git#") {
        return Err(bad(
            "git contexts are not supported yet (a directory or docker-image://REF)",
        ));
    }
    let dir = PathBuf::from(value);
    if !dir.is_dir() {
        return Err(bad(&format!("{value} is not a directory")));
    }
    Ok((name, BuildContext::Dir(dir)))
}

/// The image reference each named context stands for, directories taken
/// in as images of `platform` (see the module's notes).
pub(crate) fn resolve_build_contexts(
    store: &Store,
    contexts: &BTreeMap<String, BuildContext>,
    platform: &kiln_graph::Platform,
) -> Result<BTreeMap<String, String>, EngineError> {
    let mut references = BTreeMap::new();
    for (name, context) in contexts {
        let reference = match context {
            BuildContext::Image(reference) => reference.clone(),
            BuildContext::Dir(dir) => import_dir(store, name, dir, platform)?,
        };
        references.insert(name.clone(), reference);
    }
    Ok(references)
}

fn import_dir(
    store: &Store,
    name: &str,
    dir: &Path,
    platform: &kiln_graph::Platform,
) -> Result<String, EngineError> {
    let root = Root::open(dir)?;
    let ignore = match root.open_file(Path::new(".dockerignore")) {
        Ok(mut file) => {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut file, &mut text).map_err(|e| io(dir, e))?;
            Ignore::new(&kiln_context::read_patterns(&text))?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ignore::new::<&str>(&[])?,
        Err(e) => return Err(io(&dir.join(".dockerignore"), e)),
    };
    let (mut reader, writer) = std::io::pipe().map_err(|e| io(dir, e))?;
    let source = format!("build context {name} ({})", dir.display());
    std::thread::scope(|scope| {
        let producer = scope.spawn(|| -> Result<(), EngineError> {
            let mut tar = tar::Builder::new(writer);
            append_tree(&root, &ignore, Path::new(""), &mut tar)?;
            tar.into_inner().map(drop).map_err(|e| io(dir, e))
        });
        // The same files make the same image: no creation time of now.
        let imported = kiln_store::import_rootfs(
            store,
            &mut reader,
            &kiln_store::RootfsImport {
                source: &source,
                os: &platform.os,
                architecture: &platform.architecture,
                variant: platform.variant.as_deref(),
                created: "1970-01-01T00:00:00Z",
            },
        );
        drop(reader);
        let produced = producer
            .join()
            .unwrap_or_else(|_| Err(EngineError::Request("the context thread panicked".into())));
        // A failed import stops the producer with EPIPE: its own error
        // says what happened.
        let image = imported?;
        produced?;
        Ok(image.manifest.digest().to_string())
    })
}

/// Appends what is under `rel` (resolved, link-free) to `tar`, in name
/// order, leaving out what `ignore` excludes (a directory it excludes
/// whole is not even read).
fn append_tree(
    root: &Root,
    ignore: &Ignore,
    rel: &Path,
    tar: &mut tar::Builder<std::io::PipeWriter>,
) -> Result<(), EngineError> {
    let host = |p: &Path| root.host_path(p);
    let mut names = root.list(rel).map_err(|e| io(&host(rel), e))?;
    names.sort();
    for name in names {
        let path = rel.join(&name);
        let text = path.to_string_lossy().into_owned();
        let stat = root.entry(&path).map_err(|e| io(&host(&path), e))?;
        let excluded = ignore.matches(&text)?;
        let mut header = tar::Header::new_gnu();
        header.set_mode(stat.mode);
        header.set_mtime(u64::try_from(stat.mtime).unwrap_or(0));
        header.set_uid(0);
        header.set_gid(0);
        match stat.kind {
            EntryKind::Dir => {
                if excluded && ignore.excludes_dir_entirely(&text) {
                    continue;
                }
                if !excluded {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_size(0);
                    tar.append_data(&mut header, &path, std::io::empty())
                        .map_err(|e| io(&host(&path), e))?;
                }
                append_tree(root, ignore, &path, tar)?;
            }
            _ if excluded => {}
            EntryKind::File => {
                let file = root.open_file(&path).map_err(|e| io(&host(&path), e))?;
                let size = file.metadata().map_err(|e| io(&host(&path), e))?.len();
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(size);
                // What is read is what the header says, even if the file
                // grows meanwhile.
                let body = std::io::Read::take(file, size);
                tar.append_data(&mut header, &path, body)
                    .map_err(|e| io(&host(&path), e))?;
            }
            EntryKind::Symlink(target) => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                tar.append_link(&mut header, &path, &target)
                    .map_err(|e| io(&host(&path), e))?;
            }
            // Devices, FIFOs and sockets of a context are not files to copy.
            EntryKind::Other => {}
        }
    }
    Ok(())
}

fn io(path: &Path, error: std::io::Error) -> EngineError {
    EngineError::Request(format!("reading {}: {error}", path.display()))
}
