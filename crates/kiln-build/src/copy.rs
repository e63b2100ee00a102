//! COPY (and ADD of local files): which files the sources select, where
//! they land under the destination (Docker's rules for directories,
//! wildcards and trailing slashes), and the layer tar that holds them.
//! Sources are resolved inside their root ([`kiln_context::Root`]): a
//! symlink on the way is followed as it resolves inside the root (so
//! `alias -> sub` works, and `etc -> /etc` means the root's own `etc`),
//! never on the host; links inside a copied directory are copied as links.
//! The layer holds exactly the bytes that were hashed for the cache key:
//! files are hashed again while they are written, and a file that changed
//! in between fails the step.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use globset::{GlobBuilder, GlobMatcher};
use kiln_context::{ContentDigest, HashStats, Ignore, Root, StatCache};
use kiln_graph::HeredocInput;
use kiln_store::{Keep, Layer, Store};
use sha2::{Digest as _, Sha256};

use crate::error::BuildError;
use crate::rootfs::{normalize, PathMeta, Tree};

/// One COPY step's inputs, resolved.
pub struct CopyRequest<'a> {
    /// The directory sources are relative to: the context, or an unpacked stage.
    pub root: &'a Path,
    /// Names the root in errors: "the build context", "stage build".
    pub root_name: &'a str,
    pub sources: &'a [String],
    pub heredocs: &'a [HeredocInput],
    /// Absolute; a trailing `/` means a directory.
    pub dest: &'a str,
    /// `--chown` resolved to numbers; `None` keeps the default (root for
    /// the context, the source's owner for a stage).
    pub owner: Option<(u64, u64)>,
    pub keep_source_owner: bool,
    /// ADD: local tar archives (any compression) are extracted into the
    /// destination instead of copied, their files' content spilled to an
    /// unnamed temp file in this directory (the store's `kiln/tmp`) until
    /// the layer is written: an archive's content never sits in memory.
    pub extract_archives: Option<&'a Path>,
    pub chmod: Option<&'a kiln_graph::Chmod>,
    pub excludes: &'a [String],
    pub parents: bool,
    /// `--link`: the layer stands alone, reading nothing of the stage it
    /// lands on, so every parent directory is in it.
    pub link: bool,
    /// SOURCE_DATE_EPOCH: file times are clamped to it.
    pub clamp_mtime: Option<u64>,
    /// Content digests of files under `root`, keyed by their path relative
    /// to it (persistent for the context, in memory for other roots).
    pub stat_cache: &'a StatCache,
    /// `.dockerignore` of the context: what it excludes does not exist
    /// for COPY. `None` for other roots.
    pub ignore: Option<&'a Ignore>,
    pub line: u32,
    pub instruction: &'a str,
}

/// A file to copy: its path inside `root` (as resolved, no symlink in
/// it), its metadata from the walk (the stat cache needs it, and statting
/// 20,000 files twice is not free), and once hashed the digest the cache
/// key was made of, which the layer must match.
struct SourceFile {
    root: Arc<Root>,
    real: PathBuf,
    meta: fs::Metadata,
    digest: Option<ContentDigest>,
}

enum Content {
    File(Box<SourceFile>),
    Dir,
    /// A directory that must exist: the destination, and the parents of
    /// what is copied. One the stage has keeps its metadata (BuildKit
    /// leaves it alone); a missing one is made with the item's (0755, the
    /// --chown owner, as BuildKit's MkdirAll). `chowned`: its maker chowns
    /// it after mkdir(2) (MkdirAll with --chown; untar, root, for the
    /// parents an archive implies), so the group mkdir gives does not stay.
    EnsureDir {
        chowned: bool,
    },
    Symlink(PathBuf),
    /// A hard link to another path of the layer (byte for byte).
    HardLink(RawPath),
    Data(Vec<u8>),
    /// A file extracted from an archive: `len` bytes at `offset` of the
    /// archive's spill file, with their sha256.
    Spilled {
        spill: std::sync::Arc<File>,
        offset: u64,
        len: u64,
        sha256: [u8; 32],
    },
}

struct Item {
    /// The path in the layer, byte for byte (names need not be UTF-8).
    dest: RawPath,
    content: Content,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
}

fn glob(pattern: &str, line: u32, instruction: &str) -> Result<GlobMatcher, BuildError> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| {
            BuildError::step(
                line,
                format!("{instruction}: invalid pattern {pattern:?}: {e}"),
            )
        })
}

/// A relative path as raw bytes: file names need not be UTF-8, and must
/// reach the layer (and the cache key) byte for byte, never renamed.
type RawPath = Vec<u8>;

fn bytes(path: &Path) -> &[u8] {
    path.as_os_str().as_bytes()
}

fn as_path(raw: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(raw))
}

/// For `.dockerignore` patterns and messages, which are text.
fn lossy(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw).into_owned()
}

/// `inner` under `base` (either may be empty).
fn join_rel(base: &[u8], inner: &[u8]) -> RawPath {
    match (base.is_empty(), inner.is_empty()) {
        (true, _) => inner.to_vec(),
        (_, true) => base.to_vec(),
        _ => [base, b"/", inner].concat(),
    }
}

/// Whether `.dockerignore` excludes `rel` (a path relative to the root).
fn ignored(req: &CopyRequest<'_>, rel: &str) -> Result<bool, BuildError> {
    match req.ignore {
        Some(ignore) if !rel.is_empty() => ignore.matches(rel).map_err(|e| {
            BuildError::step(req.line, format!("{}: .dockerignore: {e}", req.instruction))
        }),
        _ => Ok(false),
    }
}

/// Whether nothing under the excluded directory `rel` can come back
/// through a `!` pattern, so a walk need not enter it.
fn dir_ignored_entirely(req: &CopyRequest<'_>, rel: &str) -> bool {
    req.ignore
        .is_some_and(|ignore| ignore.excludes_dir_entirely(rel))
}

fn has_wildcard(text: &str) -> bool {
    text.contains(['*', '?', '['])
}

/// What a COPY step will write, known before anything is written: enough
/// to compute its cache key, and to explain a miss.
pub struct Selection {
    items: Vec<Item>,
    /// The digest of exactly what the layer will hold: each path with its
    /// resulting mode and owner and its content or link target, never a
    /// time. Equal digests mean equal layers (times aside).
    pub content: ContentDigest,
    pub hash_stats: HashStats,
    /// Source path (relative to its root) → short content digest, for
    /// saying which input changed.
    pub inputs: BTreeMap<String, String>,
    /// The destination as written (normalized): every item is under it.
    dest: RawPath,
    /// The name of a lone file copied to a destination without a trailing
    /// slash: if the stage has a directory there, the file goes inside it
    /// under this name (Docker's rule), else it becomes the destination.
    lone_name: Option<RawPath>,
    /// `--chown`: the owner of the directories the step creates.
    owner: Option<(u64, u64)>,
    clamp_mtime: Option<u64>,
    link: bool,
    line: u32,
    instruction: String,
    /// When the sources were looked at (before any was hashed).
    selected_at: std::time::SystemTime,
}

/// Selects and hashes the sources of one or more requests with the same
/// destination and options but different roots (an ADD of both context
/// files and URLs). The caller makes the destination a directory (`/`)
/// when the requests together have more than one source.
pub fn select(requests: &[CopyRequest<'_>]) -> Result<Selection, BuildError> {
    let Some(first) = requests.first() else {
        return Err(BuildError::step(0, "a copy with no sources"));
    };
    let mut selection = Selection {
        items: Vec::new(),
        content: [0; 32],
        hash_stats: HashStats::default(),
        inputs: BTreeMap::new(),
        dest: normalize(first.dest).into_bytes(),
        lone_name: None,
        owner: first.owner,
        clamp_mtime: first.clamp_mtime,
        link: first.link,
        line: first.line,
        instruction: first.instruction.to_owned(),
        selected_at: std::time::SystemTime::now(),
    };
    let mut hasher = Sha256::new();
    for request in requests {
        let root = Root::open(request.root).map_err(|e| {
            BuildError::step(
                request.line,
                format!("{}: {}: {e}", request.instruction, request.root_name),
            )
        })?;
        let root = Arc::new(root);
        let (mut collected, lone_name) = collect(request, &root)?;
        // Several requests together make the destination a directory, so
        // only a lone request can have a lone file.
        selection.lone_name = lone_name;
        refuse_layer_metadata_names(request, &collected)?;
        let stats = digest_items(
            request,
            &root,
            &mut collected,
            &mut hasher,
            &mut selection.inputs,
        )?;
        selection.hash_stats.add(&stats);
        selection.items.extend(collected);
    }
    selection.content = hasher.finalize().into();
    Ok(selection)
}

/// Selects and writes in one go (steps the cache does not cover).
pub fn copy_layer(
    store: &Store,
    request: &CopyRequest<'_>,
    tree: &mut Tree,
) -> Result<Layer, BuildError> {
    select(std::slice::from_ref(request))?.write_layer(store, tree, Keep::Tar, None)
}

/// Feeds `items` into `hasher` in destination order: path, kind, mode,
/// owner and content digest (files through the stat cache, in parallel);
/// records each file's digest in `inputs`.
fn digest_items(
    req: &CopyRequest<'_>,
    root: &Root,
    items: &mut [Item],
    hasher: &mut Sha256,
    inputs: &mut BTreeMap<String, String>,
) -> Result<HashStats, BuildError> {
    let files: Vec<(&Path, &fs::Metadata)> = items
        .iter()
        .filter_map(|item| match &item.content {
            Content::File(file) => Some((file.real.as_path(), &file.meta)),
            _ => None,
        })
        .collect();
    let (digests, stats) = req
        .stat_cache
        .hash_files(root, &files)
        .map_err(|e| BuildError::step(req.line, format!("{}: {e}", req.instruction)))?;
    for ((key, _), digest) in files.iter().zip(&digests) {
        inputs.insert(key.to_string_lossy().into_owned(), short_hex(digest));
    }
    let mut file_digests = digests.into_iter();
    for item in items.iter_mut() {
        if let Content::File(file) = &mut item.content {
            file.digest = file_digests.next();
        }
    }
    let mut order: Vec<&Item> = items.iter().collect();
    order.sort_by(|a, b| a.dest.cmp(&b.dest));
    let mut owner = String::new();
    for item in order {
        hasher.update(&item.dest);
        hasher.update([0]);
        let (kind, body): (u8, Vec<u8>) = match &item.content {
            Content::File(file) => (b'f', file.digest.map(|d| d.to_vec()).unwrap_or_default()),
            Content::Dir => (b'd', Vec::new()),
            Content::EnsureDir { .. } => (b'p', Vec::new()),
            Content::Symlink(target) => (b'l', target.as_os_str().as_encoded_bytes().to_vec()),
            Content::HardLink(target) => (b'h', target.clone()),
            Content::Data(bytes) => (b'f', Sha256::digest(bytes).to_vec()),
            Content::Spilled { sha256, .. } => (b'f', sha256.to_vec()),
        };
        hasher.update([kind]);
        owner.clear();
        let _ = std::fmt::Write::write_fmt(
            &mut owner,
            format_args!("{:o} {} {}", item.mode, item.uid, item.gid),
        );
        hasher.update(owner.as_bytes());
        hasher.update([0]);
        hasher.update(&body);
        hasher.update([b'\n']);
    }
    Ok(stats)
}

/// The first 8 bytes of `digest` in hex: how a miss's explanation names
/// a file's content.
fn short_hex(digest: &ContentDigest) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    digest[..8]
        .iter()
        .flat_map(|b| {
            [
                HEX[usize::from(b >> 4)] as char,
                HEX[usize::from(b & 15)] as char,
            ]
        })
        .collect()
}

/// `rel` as text, for `.dockerignore`.
fn text(rel: &Path) -> String {
    rel.to_string_lossy().into_owned()
}

/// `source` (relative, cleaned) resolved inside `root`, its last symlink
/// followed too (as Docker's COPY does); `None` if it does not exist there.
fn resolve_in(
    req: &CopyRequest<'_>,
    root: &Root,
    source: &Path,
) -> Result<Option<PathBuf>, BuildError> {
    root.resolve(source, true).map_err(|e| {
        if kiln_context::is_symlink_loop(&e) {
            symlink_loop(req, &source.to_string_lossy())
        } else {
            BuildError::io(root.host_path(source), e)
        }
    })
}

/// A source whose symlinks never end inside the root.
fn symlink_loop(req: &CopyRequest<'_>, source: &str) -> BuildError {
    BuildError::Step {
        line: req.line,
        message: format!(
            "{} source {source:?}: too many levels of symbolic links in {}",
            req.instruction, req.root_name
        ),
        hint: Some(
            "symlinks resolve inside it, an absolute one as if it were / (so `etc -> /etc` points at itself)".into(),
        ),
    }
}

/// The paths a wildcard source matches, as (path as written with the
/// wildcards expanded, resolved path), sorted. Each component is matched
/// against the entries of the directory the previous ones resolved to,
/// inside the root, so a directory reached through a symlink is listed
/// where the link leads inside the root, never outside.
fn expand_wildcards(
    req: &CopyRequest<'_>,
    root: &Root,
    pattern: &str,
) -> Result<Vec<(RawPath, PathBuf)>, BuildError> {
    let parts: Vec<&str> = pattern.split('/').collect();
    let mut found: Vec<(RawPath, PathBuf)> = vec![(RawPath::new(), PathBuf::new())];
    // Matching nothing is no error, but the directory the wildcards are
    // matched in must exist: BuildKit walks it, and a missing one fails.
    let mut wildcard_seen = false;
    for (index, part) in parts.iter().enumerate() {
        let last = index + 1 == parts.len();
        let matcher = has_wildcard(part)
            .then(|| glob(part, req.line, req.instruction))
            .transpose()?;
        let before_wildcards = !wildcard_seen && matcher.is_none();
        wildcard_seen |= matcher.is_some();
        let mut next = Vec::new();
        for (lexical, real) in &found {
            let names: Vec<OsString> = match &matcher {
                None => vec![OsString::from(*part)],
                Some(matcher) => {
                    let Ok(entries) = root.list(real) else {
                        continue;
                    };
                    let mut names: Vec<OsString> = entries
                        .into_iter()
                        .filter(|name| matcher.is_match(Path::new(name)))
                        .collect();
                    names.sort();
                    names
                }
            };
            for name in names {
                let written = join_rel(lexical, name.as_bytes());
                let Some(resolved) = resolve_in(req, root, &real.join(&name))? else {
                    if before_wildcards {
                        return Err(no_source(req, pattern));
                    }
                    continue;
                };
                let skip = if last {
                    ignored(req, &lossy(&written))? || ignored(req, &text(&resolved))?
                } else {
                    dir_ignored_entirely(req, &lossy(&written))
                };
                if !skip {
                    next.push((written, resolved));
                } else if before_wildcards {
                    // Excluded whole, it is not in the context at all.
                    return Err(no_source(req, pattern));
                }
            }
        }
        found = next;
    }
    found.sort();
    Ok(found)
}

/// The items of one request, with the name of its lone file (see
/// [`Selection::lone_name`]) if it copies one to a path without a slash.
fn collect(
    req: &CopyRequest<'_>,
    root: &Arc<Root>,
) -> Result<(Vec<Item>, Option<RawPath>), BuildError> {
    let what = req.instruction;
    let excludes = req
        .excludes
        .iter()
        .map(|p| glob(p, req.line, what))
        .collect::<Result<Vec<_>, _>>()?;
    // Each source as written (wildcards expanded) and as resolved.
    let mut selected: Vec<(RawPath, PathBuf)> = Vec::new();
    let mut wildcard = false;
    for source in req.sources {
        let Some(clean) = contained(source) else {
            return Err(BuildError::Step {
                line: req.line,
                message: format!("{what} source {source:?} is outside {}", req.root_name),
                hint: Some(
                    "sources are relative to the build context root; `..` cannot leave it".into(),
                ),
            });
        };
        if has_wildcard(&clean) {
            wildcard = true;
            // A wildcard matching nothing copies nothing: BuildKit's
            // frontend sets AllowEmptyWildcard on every COPY and ADD. Only a
            // source without wildcards must exist.
            selected.extend(expand_wildcards(req, root, &clean)?);
        } else {
            let real =
                resolve_in(req, root, Path::new(&clean))?.ok_or_else(|| no_source(req, source))?;
            selected.push((clean.into_bytes(), real));
        }
    }
    let heredoc_count = req.heredocs.len();
    let mut any_dir = false;
    let mut metas = Vec::with_capacity(selected.len());
    for (rel, real) in selected {
        let path = root.host_path(&real);
        let rel_text = lossy(&rel);
        let meta = fs::symlink_metadata(&path).map_err(|_| no_source(req, &rel_text))?;
        // An excluded file is not in the context; an excluded directory
        // still gives what `!` patterns bring back inside it.
        let real_text = text(&real);
        let excluded = ignored(req, &rel_text)? || ignored(req, &real_text)?;
        let entirely =
            dir_ignored_entirely(req, &rel_text) || dir_ignored_entirely(req, &real_text);
        if excluded && (!meta.is_dir() || entirely) {
            return Err(no_source(req, &rel_text));
        }
        any_dir |= meta.is_dir();
        metas.push((rel, real, path, meta));
    }
    let dest_is_dir =
        req.dest.ends_with('/') || metas.len() + heredoc_count > 1 || wildcard || any_dir;
    let dest = normalize(req.dest);
    let dest_raw = dest.as_bytes().to_vec();
    let under = |name: &[u8]| join_rel(&dest_raw, name);

    // Sources that all matched nothing leave the destination alone too:
    // BuildKit returns before its MkdirAll, so not even /dst/ is made. (A
    // request without sources is WORKDIR's, which makes its directory.)
    let copies_something = req.sources.is_empty() || !metas.is_empty() || heredoc_count > 0;
    let mut items = Vec::new();
    let mut lone_name = None;
    for (rel, real, path, meta) in metas {
        if let (Some(spill_dir), true) = (req.extract_archives, meta.is_file()) {
            if let Some(extracted) = extract_archive(req, &path, &dest, spill_dir)? {
                items.extend(extracted);
                continue;
            }
        }
        if meta.is_dir() {
            let base = if req.parents {
                under(&rel)
            } else {
                dest_raw.clone()
            };
            if req.parents {
                items.push(item_for(req, base.clone(), root, &real, &meta)?);
            } else if !base.is_empty() {
                // The destination itself, not the source directory: its
                // contents are copied (BuildKit never gives the source's
                // own mode or owner to the destination).
                items.push(ensure_dir(req, base.clone()));
            }
            let start = items.len();
            walk_dir(req, root, &real, &base, &excludes, &mut items)?;
            keep_hard_links(&mut items[start..]);
        } else {
            if excludes.iter().any(|g| g.is_match(as_path(&rel))) {
                continue;
            }
            let name = as_path(&rel)
                .file_name()
                .map(OsStr::as_bytes)
                .unwrap_or_default();
            let target = if req.parents {
                under(&rel)
            } else if dest_is_dir {
                under(name)
            } else {
                lone_name = Some(name.to_vec());
                dest_raw.clone()
            };
            items.push(item_for(req, target, root, &real, &meta)?);
        }
    }
    for heredoc in req.heredocs {
        let target = if dest_is_dir {
            under(heredoc.name.as_bytes())
        } else {
            lone_name = Some(heredoc.name.as_bytes().to_vec());
            dest_raw.clone()
        };
        let (uid, gid) = req.owner.unwrap_or((0, 0));
        items.push(Item {
            dest: target,
            content: Content::Data(heredoc.content.clone().into_bytes()),
            mode: apply_chmod(0o644, req.chmod, false),
            uid,
            gid,
            mtime: req.clamp_mtime.unwrap_or(0),
        });
    }
    if copies_something
        && dest_is_dir
        && !dest.is_empty()
        && !items.iter().any(|i| i.dest == dest_raw)
    {
        items.push(ensure_dir(req, dest_raw.clone()));
    }
    Ok((items, lone_name))
}

/// The directory `dest` as the step makes it if the stage lacks it.
fn ensure_dir(req: &CopyRequest<'_>, dest: RawPath) -> Item {
    let (uid, gid) = req.owner.unwrap_or((0, 0));
    Item {
        dest,
        content: Content::EnsureDir {
            chowned: req.owner.is_some(),
        },
        mode: 0o755,
        uid,
        gid,
        mtime: req.clamp_mtime.unwrap_or(0),
    }
}

/// The items of everything under directory `real` (resolved, inside
/// `root`), placed under `base`. Links inside it are items themselves,
/// never followed.
fn walk_dir(
    req: &CopyRequest<'_>,
    root: &Arc<Root>,
    real: &Path,
    base: &[u8],
    excludes: &[GlobMatcher],
    items: &mut Vec<Item>,
) -> Result<(), BuildError> {
    let path = root.host_path(real);
    let walk = DirWalk {
        req,
        root,
        real,
        base,
        excludes,
        in_root: bytes(real),
    };
    items.extend(walk.items_under(&path, Path::new(""), 0)?);
    Ok(())
}

/// How deep [`DirWalk`] walks sibling directories in parallel: below it,
/// one thread walks on (rayon's frames per level would otherwise grow a
/// worker's stack with a hostile context's depth).
const PARALLEL_DEPTH: usize = 6;

/// One [`walk_dir`]: what decides each entry.
struct DirWalk<'a> {
    req: &'a CopyRequest<'a>,
    root: &'a Arc<Root>,
    real: &'a Path,
    base: &'a [u8],
    excludes: &'a [GlobMatcher],
    in_root: &'a [u8],
}

impl DirWalk<'_> {
    /// The items under directory `dir` (`inner` below the walk's start),
    /// depth first, each directory's entries in name order (what
    /// `walkdir`'s sorted walk gives), links never followed. Each entry's
    /// status is taken relative to its directory's descriptor as the
    /// listing is read, and a listing is read whole before anything under
    /// it is entered (one descriptor open per thread). Sibling directories
    /// are walked in parallel down to [`PARALLEL_DEPTH`]; below it one
    /// thread walks on with a stack on the heap, however deep the tree.
    fn items_under(&self, dir: &Path, inner: &Path, depth: usize) -> Result<Vec<Item>, BuildError> {
        use rayon::prelude::*;
        if depth >= PARALLEL_DEPTH {
            return self.items_under_one_thread(dir, inner);
        }
        let decided: Vec<Vec<Item>> = listing(dir)?
            .par_iter()
            .map(|(name, meta)| {
                let inner = inner.join(name);
                let (item, enter) = self.decide(&inner, meta)?;
                let mut items: Vec<Item> = item.into_iter().collect();
                if enter {
                    items.extend(self.items_under(&dir.join(name), &inner, depth + 1)?);
                }
                Ok(items)
            })
            .collect::<Result<_, BuildError>>()?;
        Ok(decided.into_iter().flatten().collect())
    }

    /// [`DirWalk::items_under`] on this thread alone, in the same order.
    fn items_under_one_thread(&self, dir: &Path, inner: &Path) -> Result<Vec<Item>, BuildError> {
        type Level = (
            PathBuf,
            PathBuf,
            std::vec::IntoIter<(OsString, fs::Metadata)>,
        );
        let mut items = Vec::new();
        let mut stack: Vec<Level> =
            vec![(dir.to_owned(), inner.to_owned(), listing(dir)?.into_iter())];
        while let Some((dir, inner, entries)) = stack.last_mut() {
            let Some((name, meta)) = entries.next() else {
                stack.pop();
                continue;
            };
            let child = inner.join(&name);
            let (item, enter) = self.decide(&child, &meta)?;
            items.extend(item);
            if enter {
                let below = dir.join(&name);
                let entries = listing(&below)?.into_iter();
                stack.push((below, child, entries));
            }
        }
        Ok(items)
    }

    /// Entry `inner`: its item if it is copied, and whether the walk
    /// enters it (a directory neither excluded nor ignored with all that
    /// is under it).
    fn decide(
        &self,
        inner: &Path,
        meta: &fs::Metadata,
    ) -> Result<(Option<Item>, bool), BuildError> {
        let req = self.req;
        if self.excludes.iter().any(|g| g.is_match(inner)) {
            return Ok((None, false));
        }
        let in_context = lossy(&join_rel(self.in_root, bytes(inner)));
        let is_dir = meta.is_dir();
        if ignored(req, &in_context)? {
            let enter = is_dir && !dir_ignored_entirely(req, &in_context);
            return Ok((None, enter));
        }
        let item = item_for(
            req,
            join_rel(self.base, bytes(inner)),
            self.root,
            &self.real.join(inner),
            meta,
        )?;
        Ok((Some(item), is_dir))
    }
}

/// The entries of directory `dir` with their status (not following
/// links), in name order.
fn listing(dir: &Path) -> Result<Vec<(OsString, fs::Metadata)>, BuildError> {
    let mut entries = fs::read_dir(dir)
        .map_err(|e| BuildError::io(dir, e))?
        .map(|entry| {
            let entry = entry?;
            Ok((entry.file_name(), entry.metadata()?))
        })
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|e| BuildError::io(dir, e))?;
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(entries)
}

/// Files of one copied directory that are one inode become hard links to
/// the first of them, as BuildKit's copier links what it has already
/// copied (its inode map lives for one source, so links between different
/// sources of a COPY are not kept, nor here). Only the directory's own
/// files count: a link to a file outside the copy stays a plain file.
fn keep_hard_links(items: &mut [Item]) {
    use std::os::unix::fs::MetadataExt;
    let mut first: std::collections::HashMap<(u64, u64), RawPath> =
        std::collections::HashMap::new();
    for item in items.iter_mut() {
        let key = match &item.content {
            Content::File(file) if file.meta.nlink() > 1 => (file.meta.dev(), file.meta.ino()),
            _ => continue,
        };
        match first.get(&key) {
            Some(target) => item.content = Content::HardLink(target.clone()),
            None => {
                first.insert(key, item.dest.clone());
            }
        }
    }
}

/// Whether a name is layer metadata rather than a file (an OCI whiteout
/// `.wh.NAME`, or the opaque marker `.wh..wh..opq`): in a layer it would
/// delete a file of the image, not add one.
fn is_layer_metadata(name: &[u8]) -> bool {
    name.starts_with(kiln_store::snapshot::WHITEOUT_PREFIX.as_bytes())
}

/// An error for a path of the layer with such a name in it.
fn layer_metadata_error(req: &CopyRequest<'_>, what: &str, dest: &str) -> BuildError {
    BuildError::Step {
        line: req.line,
        message: format!(
            "{}: {what} would be written as /{dest}, and a name starting with \".wh.\" is a whiteout that deletes files of the image",
            req.instruction
        ),
        hint: Some("rename the file, or exclude it with .dockerignore".into()),
    }
}

/// Refuses items whose layer path has a component that is layer
/// metadata, naming the source file.
fn refuse_layer_metadata_names(req: &CopyRequest<'_>, items: &[Item]) -> Result<(), BuildError> {
    for item in items {
        if item.dest.split(|&b| b == b'/').any(is_layer_metadata) {
            let dest = lossy(&item.dest);
            let what = match &item.content {
                Content::File(file) => file.root.host_path(&file.real).display().to_string(),
                _ => format!("{dest:?}"),
            };
            return Err(layer_metadata_error(req, &what, &dest));
        }
    }
    Ok(())
}

/// The entries of `path` placed under `dest` if it is a tar archive
/// (plain, gzip, zstd, bzip2 or xz, by content), `None` if it is any
/// other file. Entries that would leave the destination are refused.
/// The archive is read as a stream; file content goes to one unnamed spill
/// file in `spill_dir`, so memory stays bounded whatever the archive holds.
fn extract_archive(
    req: &CopyRequest<'_>,
    path: &Path,
    dest: &str,
    spill_dir: &Path,
) -> Result<Option<Vec<Item>>, BuildError> {
    let io = |e| BuildError::io(path, e);
    let mut spill: Option<Spill> = None;
    let reader = std::io::BufReader::new(File::open(path).map_err(io)?);
    let stream = kiln_store::decompress(reader).map_err(io)?;
    let (stream, header_budget) = kiln_store::tar_headers::limit_headers(stream);
    let mut archive = tar::Archive::new(stream);
    let Ok(mut entries) = archive.entries() else {
        return Ok(None);
    };
    let mut items = Vec::new();
    let mut first = true;
    while let Some(entry) = header_budget.next(&mut entries) {
        let mut entry = match entry {
            Ok(entry) => entry,
            // Not a tar after all: ADD copies the file as it is.
            Err(e) if first && !kiln_store::tar_headers::is_too_large(&e) => return Ok(None),
            Err(e) => return Err(BuildError::io(path, e)),
        };
        first = false;
        // Entry names are kept byte for byte (they need not be UTF-8).
        let raw = entry.path_bytes().into_owned();
        let shown = lossy(&raw);
        let Some(rel) = contained_bytes(&raw) else {
            return Err(BuildError::step(
                req.line,
                format!(
                    "ADD {}: archive entry {shown:?} leaves the destination",
                    path.display()
                ),
            ));
        };
        if rel.is_empty() {
            continue;
        }
        if rel.len() > PATH_MAX {
            let shown: String = shown.chars().take(200).collect();
            return Err(BuildError::step(
                req.line,
                format!(
                    "ADD {}: archive entry {shown:?}... is longer than {PATH_MAX} bytes, which no file system holds",
                    path.display()
                ),
            ));
        }
        if rel.split(|&b| b == b'/').any(is_layer_metadata) {
            let what = format!("archive entry {shown:?} of {}", path.display());
            return Err(layer_metadata_error(req, &what, &lossy(&rel)));
        }
        let under_dest = |rel: Vec<u8>| -> RawPath {
            if dest.is_empty() {
                rel
            } else {
                [dest.as_bytes(), b"/", &rel].concat()
            }
        };
        let target = under_dest(rel);
        let header = entry.header().clone();
        let kind = header.entry_type();
        let content = if kind.is_dir() {
            Content::Dir
        } else if kind.is_symlink() {
            Content::Symlink(
                entry
                    .link_name()
                    .map_err(io)?
                    .map(|l| l.into_owned())
                    .unwrap_or_default(),
            )
        } else if kind.is_hard_link() {
            let link = entry
                .link_name_bytes()
                .map(|l| l.into_owned())
                .unwrap_or_default();
            let Some(link) = contained_bytes(&link) else {
                return Err(BuildError::step(
                    req.line,
                    format!(
                        "ADD {}: hard link {shown:?} points outside the archive",
                        path.display()
                    ),
                ));
            };
            Content::HardLink(under_dest(link))
        } else if kind.is_file() {
            let spill = match &mut spill {
                Some(spill) => spill,
                None => spill.insert(Spill::new(spill_dir)?),
            };
            spill.append(&mut entry, path)?
        } else {
            kiln_store::tar_headers::drain(&mut entry).map_err(io)?;
            continue;
        };
        let (uid, gid) = req
            .owner
            .unwrap_or((header.uid().unwrap_or(0), header.gid().unwrap_or(0)));
        let mtime = header.mtime().unwrap_or(0);
        // Linux has no mode for a symlink (lstat always says 0777, and
        // BuildKit's layer holds what it lstat'ed), whatever the header says.
        let mode = if matches!(content, Content::Symlink(_)) {
            0o777
        } else {
            header.mode().unwrap_or(0o644) & 0o7777
        };
        items.push(Item {
            dest: target,
            content,
            mode,
            uid,
            gid,
            mtime: req.clamp_mtime.map_or(mtime, |clamp| mtime.min(clamp)),
        });
    }
    if first {
        return Ok(None);
    }
    implied_parents(req, &mut items, dest)?;
    Ok(Some(items))
}

/// The directories an archive's entries are under but it does not list:
/// the untar makes them 0755 and chowns them to root (Docker 20.10's
/// MkdirAllAndChownNew with the root pair; newer BuildKit too), whatever
/// `--chown` says, so a set-group-ID parent gives them its bit but not its
/// group. Those above the destination are COPY's parents ([`parent_dirs`]).
fn implied_parents(
    req: &CopyRequest<'_>,
    items: &mut Vec<Item>,
    dest: &str,
) -> Result<(), BuildError> {
    let mut present: std::collections::HashSet<RawPath> =
        items.iter().map(|item| item.dest.clone()).collect();
    let mut implied = Vec::new();
    let mut implied_bytes = 0usize;
    for item in items.iter() {
        let mut path: &[u8] = &item.dest;
        while let Some(slash) = path.iter().rposition(|&b| b == b'/') {
            let parent = &path[..slash];
            if parent.len() <= dest.len() || !present.insert(parent.to_vec()) {
                break;
            }
            implied_bytes += parent.len();
            if implied_bytes > MAX_PARENT_PATH_BYTES {
                return Err(BuildError::step(
                    req.line,
                    format!(
                        "the parent directories an archive implies have more than {} MiB of path names",
                        MAX_PARENT_PATH_BYTES >> 20
                    ),
                ));
            }
            implied.push(Item {
                dest: parent.to_vec(),
                content: Content::EnsureDir { chowned: true },
                mode: 0o755,
                uid: 0,
                gid: 0,
                mtime: req.clamp_mtime.unwrap_or(0),
            });
            path = parent;
        }
    }
    items.extend(implied);
    Ok(())
}

/// The unnamed file an archive's file entries are copied into, one after
/// the other, hashed on the way.
struct Spill {
    file: std::sync::Arc<File>,
    dir: PathBuf,
    len: u64,
}

impl Spill {
    fn new(dir: &Path) -> Result<Spill, BuildError> {
        fs::create_dir_all(dir).map_err(|e| BuildError::io(dir, e))?;
        let file = tempfile::tempfile_in(dir).map_err(|e| BuildError::io(dir, e))?;
        Ok(Spill {
            file: std::sync::Arc::new(file),
            dir: dir.to_owned(),
            len: 0,
        })
    }

    /// Copies `entry` (of `archive`) to the end of the spill file. Errors
    /// name what failed: reading the archive, or writing the spill file.
    fn append(
        &mut self,
        entry: &mut impl std::io::Read,
        archive: &Path,
    ) -> Result<Content, BuildError> {
        use std::io::Write;
        let offset = self.len;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut out = &*self.file;
        loop {
            let n = match entry.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(BuildError::io(archive, e)),
            };
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n])
                .map_err(|e| BuildError::io(&self.dir, e))?;
            self.len += n as u64;
        }
        Ok(Content::Spilled {
            spill: self.file.clone(),
            offset,
            len: self.len - offset,
            sha256: hasher.finalize().into(),
        })
    }
}

/// `len` bytes of `file` from `offset`, read without moving a shared
/// file position.
struct SpillReader<'a> {
    file: &'a File,
    offset: u64,
    left: u64,
}

impl std::io::Read for SpillReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.offset)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        self.offset += n as u64;
        self.left -= n as u64;
        Ok(n)
    }
}

fn no_source(req: &CopyRequest<'_>, source: &str) -> BuildError {
    BuildError::Step {
        line: req.line,
        message: format!(
            "{} source {source:?}: no such file or directory in {}",
            req.instruction, req.root_name
        ),
        hint: Some("check the path and that .dockerignore does not exclude it".into()),
    }
}

/// In a tar a hard link must come after the file it names, but the layer
/// is sorted by name (an archive's `l -> n` sorts first): where a link
/// comes first, it takes the file's content and the file becomes the link.
fn hard_links_after_their_targets(items: &mut [Item]) {
    // Only archives and trees with linked files bring hard links: a COPY
    // of any other tree pays nothing here.
    if !items
        .iter()
        .any(|item| matches!(item.content, Content::HardLink(_)))
    {
        return;
    }
    let position: std::collections::HashMap<RawPath, usize> = items
        .iter()
        .enumerate()
        .map(|(i, item)| (item.dest.clone(), i))
        .collect();
    for i in 0..items.len() {
        let Content::HardLink(target) = &items[i].content else {
            continue;
        };
        let Some(&j) = position.get(target) else {
            continue;
        };
        if j <= i {
            continue;
        }
        let (before, after) = items.split_at_mut(j);
        let (link, file) = (&mut before[i], &mut after[0]);
        std::mem::swap(&mut link.content, &mut file.content);
        std::mem::swap(&mut link.mode, &mut file.mode);
        std::mem::swap(&mut link.uid, &mut file.uid);
        std::mem::swap(&mut link.gid, &mut file.gid);
        std::mem::swap(&mut link.mtime, &mut file.mtime);
        file.content = Content::HardLink(link.dest.clone());
    }
}

/// The most path bytes the parent directories a layer creates may hold
/// (a million parents of 256 bytes; a real tree has far fewer).
const MAX_PARENT_PATH_BYTES: usize = 256 << 20;

/// Linux's PATH_MAX: no path a file system holds is longer, so an archive
/// entry that is names an error (and the parents of a path are made one
/// item each: a longer one would cost its length squared).
const PATH_MAX: usize = 4096;

/// An archive entry's path (raw bytes) relative to the destination, or
/// `None` if it climbs out (kiln-store's rule for every archive).
fn contained_bytes(source: &[u8]) -> Option<RawPath> {
    let path = kiln_store::contained_path(as_path(source))?;
    Some(path.into_os_string().into_encoded_bytes())
}

/// `source` relative to the root, or `None` if it climbs out of it.
pub(crate) fn contained(source: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for part in source.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            other => parts.push(other),
        }
    }
    Some(parts.join("/"))
}

/// The item for `real` (resolved inside `root`, with `meta` from an
/// lstat of it) at `dest`.
fn item_for(
    req: &CopyRequest<'_>,
    dest: RawPath,
    root: &Arc<Root>,
    real: &Path,
    meta: &fs::Metadata,
) -> Result<Item, BuildError> {
    use std::os::unix::fs::MetadataExt;
    let file_type = meta.file_type();
    let content = if file_type.is_dir() {
        Content::Dir
    } else if file_type.is_symlink() {
        let path = root.host_path(real);
        Content::Symlink(fs::read_link(&path).map_err(|e| BuildError::io(&path, e))?)
    } else if file_type.is_file() {
        Content::File(Box::new(SourceFile {
            root: Arc::clone(root),
            real: real.to_owned(),
            meta: meta.clone(),
            digest: None,
        }))
    } else {
        return Err(BuildError::step(
            req.line,
            format!(
                "{}: {} is not a regular file, directory or symlink",
                req.instruction,
                root.host_path(real).display()
            ),
        ));
    };
    let (uid, gid) = match req.owner {
        Some(owner) => owner,
        None if req.keep_source_owner => (meta.uid() as u64, meta.gid() as u64),
        None => (0, 0),
    };
    let base_mode = meta.mode() & 0o7777;
    let mode = if file_type.is_symlink() {
        0o777
    } else {
        apply_chmod(base_mode, req.chmod, file_type.is_dir())
    };
    let mtime = meta.mtime().max(0) as u64;
    Ok(Item {
        dest,
        content,
        mode,
        uid,
        gid,
        mtime: req.clamp_mtime.map_or(mtime, |clamp| mtime.min(clamp)),
    })
}

/// `--chmod` (parsed by the planner) applied to `mode`, if given.
fn apply_chmod(mode: u32, chmod: Option<&kiln_graph::Chmod>, is_dir: bool) -> u32 {
    chmod.map_or(mode, |chmod| chmod.apply(mode, is_dir))
}

/// A source file as it is copied into the layer, checked to be the bytes
/// the step's key hashed: hashed again as it is read, or, for a file
/// whose last change is long past (most of a rebuilt context), checked
/// by its inode's status instead, which no write can leave unchanged.
struct CheckedSource {
    file: std::io::Take<File>,
    /// `None` when the status check stands in for hashing.
    hasher: Option<Sha256>,
    read: u64,
}

/// How long before a selection a file's last change must lie for its
/// status to stand for its content: far beyond the coarse clock's tick
/// (a write in the same tick as the status taken would not change it).
const SETTLED: std::time::Duration = std::time::Duration::from_secs(2);

impl CheckedSource {
    fn new(file: File, meta: &fs::Metadata, selected_at: std::time::SystemTime) -> Self {
        let changed = std::time::UNIX_EPOCH
            + std::time::Duration::new(
                u64::try_from(std::os::unix::fs::MetadataExt::ctime(meta)).unwrap_or(0),
                u32::try_from(std::os::unix::fs::MetadataExt::ctime_nsec(meta)).unwrap_or(0),
            );
        let settled = changed + SETTLED < selected_at;
        CheckedSource {
            file: file.take(meta.len()),
            hasher: (!settled).then(Sha256::new),
            read: 0,
        }
    }

    /// Whether what was read is all of the file as selected (`meta`),
    /// with the digest `expected`.
    fn unchanged(self, meta: &fs::Metadata, expected: &Option<ContentDigest>) -> bool {
        use std::os::unix::fs::MetadataExt;
        if self.read != meta.len() {
            return false;
        }
        match self.hasher {
            Some(hasher) => {
                let digest: ContentDigest = hasher.finalize().into();
                expected.as_ref() == Some(&digest)
            }
            None => self.file.into_inner().metadata().is_ok_and(|now| {
                (now.dev(), now.ino(), now.len()) == (meta.dev(), meta.ino(), meta.len())
                    && (now.mtime(), now.mtime_nsec()) == (meta.mtime(), meta.mtime_nsec())
                    && (now.ctime(), now.ctime_nsec()) == (meta.ctime(), meta.ctime_nsec())
            }),
        }
    }
}

impl Read for CheckedSource {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read(buf)?;
        if let Some(hasher) = self.hasher.as_mut() {
            hasher.update(&buf[..n]);
        }
        self.read += n as u64;
        Ok(n)
    }
}

impl Selection {
    /// What the cache remembers of this selection.
    pub fn remembered(&self) -> kiln_cache::Selected {
        kiln_cache::Selected {
            content: self.content,
            files: self.inputs.clone(),
        }
    }

    /// Writes the layer and records its paths in `tree` (the stage's files so
    /// far, which decide where the destination is and the metadata of the
    /// directories the layer holds; the parent key covers them, so this is
    /// decided here, on a miss, and a hit reads no layer).
    /// `keep` says whether it is kept as a tar or only as a snapshot
    /// unpacked while it is written; `similar` names a layer whose
    /// snapshot's equal files the new one links (the step's last layer).
    pub fn write_layer(
        self,
        store: &Store,
        tree: &mut Tree,
        keep: Keep,
        similar: Option<&kiln_store::Digest>,
    ) -> Result<Layer, BuildError> {
        let Selection {
            mut items,
            dest,
            lone_name,
            owner,
            clamp_mtime,
            link,
            line,
            instruction,
            selected_at,
            ..
        } = self;
        // With --link the layer must not depend on the stage: nothing of
        // it is read, and every parent is created.
        let stage = (!link).then_some(&*tree);
        let fail = |message: String| BuildError::step(line, format!("{instruction}: {message}"));
        place(&mut items, &dest, lone_name.as_deref(), stage).map_err(fail)?;
        let parents = parent_dirs(&items, owner, clamp_mtime).map_err(fail)?;
        items.extend(parents);
        items.sort_by(|a, b| a.dest.cmp(&b.dest));
        items.dedup_by(|later, earlier| later.dest == earlier.dest);
        settle_dirs(&mut items, stage).map_err(fail)?;
        hard_links_after_their_targets(&mut items);

        let mut writer = store.layer_writer(keep, similar)?;
        // Whole megabytes to the writer: one hash update and one pipe
        // write each, where the tar's own copies come in 8 kB pieces.
        let mut builder =
            tar::Builder::new(std::io::BufWriter::with_capacity(1 << 20, &mut writer));
        let tmp = "layer";
        let io = |e| BuildError::io(tmp, e);
        for item in &items {
            let mut header = tar::Header::new_gnu();
            header.set_mode(item.mode);
            header.set_uid(item.uid);
            header.set_gid(item.gid);
            header.set_mtime(item.mtime);
            match &item.content {
                Content::Dir | Content::EnsureDir { .. } => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_size(0);
                    builder
                        .append_data(
                            &mut header,
                            as_path(&[&item.dest[..], b"/"].concat()),
                            std::io::empty(),
                        )
                        .map_err(io)?;
                }
                Content::Symlink(target) => {
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_size(0);
                    builder
                        .append_link(&mut header, as_path(&item.dest), target)
                        .map_err(io)?;
                }
                Content::File(source) => {
                    let SourceFile {
                        root,
                        real,
                        meta,
                        digest,
                    } = &**source;
                    let path = root.host_path(real);
                    let file = root.open_file(real).map_err(|e| BuildError::io(&path, e))?;
                    // Exactly the bytes that were hashed, or the step fails:
                    // a file edited since would otherwise put new content
                    // (or a torn mix) under the old content's cache key.
                    let mut reader = CheckedSource::new(file, meta, selected_at);
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_size(meta.len());
                    builder
                        .append_data(&mut header, as_path(&item.dest), &mut reader)
                        .map_err(|e| BuildError::io(&path, e))?;
                    if !reader.unchanged(meta, digest) {
                        return Err(BuildError::Step {
                            line,
                            message: format!(
                                "{instruction}: {} changed while it was being copied; build again",
                                path.display()
                            ),
                            hint: None,
                        });
                    }
                }
                Content::HardLink(target) => {
                    header.set_entry_type(tar::EntryType::Link);
                    header.set_size(0);
                    builder
                        .append_link(&mut header, as_path(&item.dest), as_path(target))
                        .map_err(io)?;
                }
                Content::Data(bytes) => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_size(bytes.len() as u64);
                    builder
                        .append_data(&mut header, as_path(&item.dest), &bytes[..])
                        .map_err(io)?;
                }
                Content::Spilled {
                    spill, offset, len, ..
                } => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_size(*len);
                    let reader = SpillReader {
                        file: spill,
                        offset: *offset,
                        left: *len,
                    };
                    builder
                        .append_data(&mut header, as_path(&item.dest), reader)
                        .map_err(io)?;
                }
            }
            tree.insert(
                item.dest.clone(),
                PathMeta {
                    is_dir: matches!(item.content, Content::Dir | Content::EnsureDir { .. }),
                    symlink: match &item.content {
                        Content::Symlink(target) => Some(target.as_os_str().as_bytes().to_vec()),
                        _ => None,
                    },
                    mode: item.mode,
                    uid: item.uid,
                    gid: item.gid,
                    mtime: item.mtime,
                },
            );
        }
        builder.finish().map_err(io)?;
        builder
            .into_inner()
            .map_err(io)?
            .into_inner()
            .map_err(|e| io(e.into_error()))?;
        let (digest, size) = writer.commit(store)?;
        Ok(Layer {
            digest,
            size,
            entries: items.len() as u64,
        })
    }
}

/// `path` with its prefix `from` (a whole number of components, or all
/// of it) replaced by `to`.
fn rebase(path: &[u8], from: &[u8], to: &[u8]) -> RawPath {
    match path.strip_prefix(from) {
        Some(rest) if from.is_empty() || rest.is_empty() || rest.starts_with(b"/") => {
            join_rel(to, rest.strip_prefix(b"/").unwrap_or(rest))
        }
        _ => path.to_vec(),
    }
}

/// Moves the items to where the destination is in the stage: through its
/// symlinks, resolved inside the stage, and inside it if it is a
/// directory there and the step copies a lone file to it (`COPY a.txt
/// /app` onto `WORKDIR /app`). `stage` is `None` with `--link`.
fn place(
    items: &mut [Item],
    dest: &[u8],
    lone_name: Option<&[u8]>,
    stage: Option<&Tree>,
) -> Result<(), String> {
    let Some(tree) = stage else {
        return Ok(());
    };
    let shown = lossy(dest);
    let mut real = tree
        .resolve(dest)
        .ok_or_else(|| format!("/{shown}: too many levels of symbolic links in the image"))?;
    if let Some(name) = lone_name {
        if real.is_empty() || tree.get(&real).is_some_and(|meta| meta.is_dir) {
            real = join_rel(&real, name);
        }
    }
    if real == dest {
        return Ok(());
    }
    // A link of the image (or the lone file's name) must not make a path
    // of the layer a whiteout.
    if real.split(|&b| b == b'/').any(is_layer_metadata) {
        return Err(format!(
            "/{shown} would be written as /{}, and a name starting with \".wh.\" is a whiteout that deletes files of the image",
            lossy(&real)
        ));
    }
    for item in items.iter_mut() {
        item.dest = rebase(&item.dest, dest, &real);
        if let Content::HardLink(target) = &mut item.content {
            *target = rebase(target, dest, &real);
        }
    }
    Ok(())
}

/// Every parent directory of the items that is not an item itself, to be
/// made if the stage lacks it ([`Content::EnsureDir`]): a layer holds the
/// parents of what it changes, as BuildKit's (containerd's) differ writes
/// them, so a snapshot of the layer alone gives overlayfs their metadata.
fn parent_dirs(
    items: &[Item],
    owner: Option<(u64, u64)>,
    clamp_mtime: Option<u64>,
) -> Result<Vec<Item>, String> {
    let mut present: std::collections::HashSet<&[u8]> =
        items.iter().map(|i| i.dest.as_slice()).collect();
    let (uid, gid) = owner.unwrap_or((0, 0));
    let mut parents = Vec::new();
    // Each parent is an item with its own path: deep, distinct names
    // cost their depth times their length, so the total is bounded.
    let mut parent_bytes = 0usize;
    for item in items {
        let mut path: &[u8] = &item.dest;
        while let Some(slash) = path.iter().rposition(|&b| b == b'/') {
            let parent = &path[..slash];
            if !present.insert(parent) {
                break;
            }
            parent_bytes += parent.len();
            if parent_bytes > MAX_PARENT_PATH_BYTES {
                return Err(format!(
                    "the parent directories of what it copies have more than {} MiB of path names",
                    MAX_PARENT_PATH_BYTES >> 20
                ));
            }
            parents.push(Item {
                dest: parent.to_vec(),
                content: Content::EnsureDir {
                    chowned: owner.is_some(),
                },
                mode: 0o755,
                uid,
                gid,
                mtime: clamp_mtime.unwrap_or(0),
            });
            path = parent;
        }
    }
    Ok(parents)
}

/// Each directory that must exist becomes a plain one: with the stage's
/// metadata where the stage has it (so `/tmp` stays 1777 and a home
/// directory its user's), as made otherwise. Something else there is an
/// error, as BuildKit's "not a directory".
///
/// One that is made inside a set-group-ID directory (of the stage, or made
/// or copied by this step) gets the bit too, and unless it is chowned
/// that directory's group: BuildKit makes these with mkdir(2), whose
/// kernel rule that is, and chowns them only for `--chown` (or, for the
/// parents an archive implies, to root). (Directories a copy brings from
/// its source are chmod'ed to the source's mode after mkdir, and files
/// chowned, so neither keeps what the kernel gave them.) `items` is sorted
/// by path, so a parent is settled before what is inside it.
fn settle_dirs(items: &mut [Item], stage: Option<&Tree>) -> Result<(), String> {
    // Directories of this layer as settled so far: path -> (mode, gid).
    let mut dirs: std::collections::HashMap<RawPath, (u32, u64)> = std::collections::HashMap::new();
    for item in items.iter_mut() {
        if let Content::EnsureDir { chowned } = item.content {
            item.content = Content::Dir;
            match stage.and_then(|tree| tree.get(&item.dest)) {
                Some(existing) if !existing.is_dir => {
                    return Err(format!(
                        "cannot copy into /{}: it is not a directory in the image",
                        lossy(&item.dest)
                    ));
                }
                Some(existing) => {
                    item.mode = existing.mode & 0o7777;
                    item.uid = existing.uid;
                    item.gid = existing.gid;
                    item.mtime = existing.mtime;
                }
                None => {
                    let parent = match item.dest.iter().rposition(|&b| b == b'/') {
                        Some(slash) => &item.dest[..slash],
                        None => &[][..],
                    };
                    let parent_meta = dirs.get(parent).copied().or_else(|| {
                        stage
                            .and_then(|tree| tree.get(parent))
                            .filter(|meta| meta.is_dir)
                            .map(|meta| (meta.mode, meta.gid))
                    });
                    if let Some((mode, gid)) = parent_meta {
                        if mode & 0o2000 != 0 {
                            item.mode |= 0o2000;
                            if !chowned {
                                item.gid = gid;
                            }
                        }
                    }
                }
            }
        }
        if matches!(item.content, Content::Dir) {
            dirs.insert(item.dest.clone(), (item.mode, item.gid));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One entry of a layer: path, type, mode, uid, gid, link target.
    type Entry = (String, tar::EntryType, u32, u64, u64, String);

    /// Writes the layer of copying `sources` (relative to `context`) to
    /// `dest` onto a stage whose paths are `tree`, and lists its entries.
    fn layer(
        context: &Path,
        sources: &[&str],
        dest: &str,
        tweak: impl FnOnce(&mut CopyRequest<'_>),
        tree: &mut Tree,
    ) -> Result<Vec<Entry>, BuildError> {
        let store_dir = tempfile::tempdir().unwrap();
        let store = Store::open(store_dir.path()).unwrap();
        let stat_cache = StatCache::in_memory();
        let sources: Vec<String> = sources.iter().map(|s| s.to_string()).collect();
        let spill = store_dir.path().join("spill");
        let mut request = CopyRequest {
            root: context,
            root_name: "the build context",
            sources: &sources,
            heredocs: &[],
            dest,
            owner: None,
            keep_source_owner: false,
            extract_archives: None,
            chmod: None,
            excludes: &[],
            parents: false,
            link: false,
            clamp_mtime: None,
            stat_cache: &stat_cache,
            ignore: None,
            line: 2,
            instruction: "COPY",
        };
        tweak(&mut request);
        if request.instruction == "ADD" {
            request.extract_archives = Some(&spill);
        }
        let layer = copy_layer(&store, &request, tree)?;
        let mut archive =
            tar::Archive::new(kiln_store::open_layer(store.blobs(), &layer.digest).unwrap());
        Ok(archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                let link = e
                    .link_name()
                    .unwrap()
                    .map(|l| l.display().to_string())
                    .unwrap_or_default();
                (
                    e.path().unwrap().display().to_string(),
                    h.entry_type(),
                    h.mode().unwrap(),
                    h.uid().unwrap(),
                    h.gid().unwrap(),
                    link,
                )
            })
            .collect())
    }

    fn dir_meta(mode: u32, uid: u64, gid: u64) -> PathMeta {
        PathMeta {
            is_dir: true,
            symlink: None,
            mode,
            uid,
            gid,
            mtime: 0,
        }
    }

    #[test]
    fn add_gives_extracted_symlinks_mode_0777() {
        // The header says 0644; Linux (and so BuildKit's layer) says 0777.
        let context = tempfile::tempdir().unwrap();
        let mut tar = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_mode(0o644);
        header.set_size(0);
        tar.append_link(&mut header, "top/link", "file").unwrap();
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o640);
        header.set_size(2);
        tar.append_data(&mut header, "top/file", &b"f\n"[..])
            .unwrap();
        fs::write(context.path().join("a.tar"), tar.into_inner().unwrap()).unwrap();
        let entries = layer(
            context.path(),
            &["a.tar"],
            "/x/",
            |r| r.instruction = "ADD",
            &mut Tree::default(),
        )
        .unwrap();
        let mode = |path: &str| entries.iter().find(|e| e.0 == path).map(|e| e.2);
        assert_eq!(mode("x/top/link"), Some(0o777), "{entries:?}");
        assert_eq!(mode("x/top/file"), Some(0o640), "{entries:?}");
    }

    #[test]
    fn a_wildcard_matching_nothing_copies_nothing() {
        let context = tempfile::tempdir().unwrap();
        fs::write(context.path().join("a.txt"), "a\n").unwrap();
        let mut tree = Tree::default();
        // Not even the destination is made (BuildKit's AllowEmptyWildcard
        // returns before its MkdirAll).
        let entries = layer(context.path(), &["nomatch*"], "/dst/", |_| {}, &mut tree).unwrap();
        assert_eq!(entries, []);
        let entries = layer(
            context.path(),
            &["a.txt", "nomatch*"],
            "/dst2/",
            |_| {},
            &mut tree,
        )
        .unwrap();
        let paths: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(paths, ["dst2/", "dst2/a.txt"]);
        // A source without wildcards must still exist, and so must the
        // directory wildcards are matched in (BuildKit walks it).
        for missing in ["missing", "nodir/*.txt"] {
            let err = layer(context.path(), &[missing], "/dst/", |_| {}, &mut tree).unwrap_err();
            assert!(err.to_string().contains("no such file"), "{missing}: {err}");
        }
        // A file where that directory should be just has nothing to match.
        let entries = layer(context.path(), &["a.txt/*"], "/dst/", |_| {}, &mut tree).unwrap();
        assert_eq!(entries, []);
    }

    #[test]
    fn directories_made_in_a_setgid_directory_inherit_the_bit_and_its_group() {
        let context = tempfile::tempdir().unwrap();
        fs::write(context.path().join("a.txt"), "a\n").unwrap();
        let stage = || {
            let mut tree = Tree::default();
            tree.insert(b"srv".to_vec(), dir_meta(0o755, 0, 0));
            tree.insert(b"srv/data".to_vec(), dir_meta(0o2775, 1001, 2000));
            tree
        };
        let meta = |entries: &[Entry], path: &str| {
            entries
                .iter()
                .find(|e| e.0 == path)
                .map(|e| (e.2, e.3, e.4))
                .unwrap_or_else(|| panic!("{path} not in {entries:?}"))
        };
        // mkdir(2) in a set-group-ID directory: the bit and the group, down
        // every level made; the file is chowned (root's), the stage's
        // directory is left as it is.
        let entries = layer(
            context.path(),
            &["a.txt"],
            "/srv/data/new/deep/",
            |_| {},
            &mut stage(),
        )
        .unwrap();
        assert_eq!(meta(&entries, "srv/data/"), (0o2775, 1001, 2000));
        assert_eq!(meta(&entries, "srv/data/new/"), (0o2755, 0, 2000));
        assert_eq!(meta(&entries, "srv/data/new/deep/"), (0o2755, 0, 2000));
        assert_eq!(meta(&entries, "srv/data/new/deep/a.txt"), (0o644, 0, 0));
        assert_eq!(meta(&entries, "srv/"), (0o755, 0, 0));
        // --chown then chowns the directory, which keeps its bit.
        let entries = layer(
            context.path(),
            &["a.txt"],
            "/srv/data/sub/",
            |r| r.owner = Some((1000, 1000)),
            &mut stage(),
        )
        .unwrap();
        assert_eq!(meta(&entries, "srv/data/sub/"), (0o2755, 1000, 1000));
        // Outside it, and with --link (which reads nothing of the stage), 0755.
        let entries = layer(
            context.path(),
            &["a.txt"],
            "/srv/other/",
            |_| {},
            &mut stage(),
        )
        .unwrap();
        assert_eq!(meta(&entries, "srv/other/"), (0o755, 0, 0));
        let entries = layer(
            context.path(),
            &["a.txt"],
            "/srv/data/linked/",
            |r| r.link = true,
            &mut stage(),
        )
        .unwrap();
        assert_eq!(meta(&entries, "srv/data/linked/"), (0o755, 0, 0));
    }

    #[test]
    fn directories_an_archive_implies_are_roots_and_inherit_setgid() {
        let context = tempfile::tempdir().unwrap();
        let mut tar = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o644);
        header.set_size(2);
        tar.append_data(&mut header, "top/deep/file", &b"f\n"[..])
            .unwrap();
        fs::write(context.path().join("a.tar"), tar.into_inner().unwrap()).unwrap();
        let mut tree = Tree::default();
        tree.insert(b"srv".to_vec(), dir_meta(0o2775, 1001, 2000));
        // The untar makes and chowns them to root (--chown or not); the
        // destination ADD makes is MkdirAll's, with --chown's owner.
        let entries = layer(
            context.path(),
            &["a.tar"],
            "/srv/x/",
            |r| {
                r.instruction = "ADD";
                r.owner = Some((7, 8));
            },
            &mut tree,
        )
        .unwrap();
        let metas: Vec<(&str, u32, u64, u64)> = entries
            .iter()
            .map(|e| (e.0.as_str(), e.2, e.3, e.4))
            .collect();
        assert_eq!(
            metas,
            [
                ("srv/", 0o2775, 1001, 2000),
                ("srv/x/", 0o2755, 7, 8),
                ("srv/x/top/", 0o2755, 0, 0),
                ("srv/x/top/deep/", 0o2755, 0, 0),
                ("srv/x/top/deep/file", 0o644, 7, 8),
            ]
        );
    }

    #[test]
    fn hard_links_within_a_copied_directory_stay_hard_links() {
        let context = tempfile::tempdir().unwrap();
        let dir = context.path().join("tree");
        fs::create_dir_all(dir.join("sub")).unwrap();
        fs::write(dir.join("f"), "x\n").unwrap();
        fs::hard_link(dir.join("f"), dir.join("sub/g")).unwrap();
        // A link to a file outside what is copied stays a plain file.
        fs::hard_link(dir.join("f"), context.path().join("outside")).unwrap();
        let entries = layer(
            context.path(),
            &["tree"],
            "/copied",
            |_| {},
            &mut Tree::default(),
        )
        .unwrap();
        let kinds: Vec<(&str, tar::EntryType, &str)> = entries
            .iter()
            .map(|e| (e.0.as_str(), e.1, e.5.as_str()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("copied/", tar::EntryType::Directory, ""),
                ("copied/f", tar::EntryType::Regular, ""),
                ("copied/sub/", tar::EntryType::Directory, ""),
                ("copied/sub/g", tar::EntryType::Link, "copied/f"),
            ]
        );
        // Separate sources are separate copies, as BuildKit's copier's
        // inode map lives for one source.
        let entries = layer(
            context.path(),
            &["tree/f", "outside"],
            "/two/",
            |_| {},
            &mut Tree::default(),
        )
        .unwrap();
        assert!(
            entries.iter().all(|e| e.1 != tar::EntryType::Link),
            "{entries:?}"
        );
    }

    /// Two rules where kiln follows newer BuildKit, not Docker 20.10's
    /// (deliberate differences, testdata/differential/README.md): --chmod
    /// keeps set-id bits (tonistiigi/fsutil#168), and ADD --chown owns what
    /// an archive extracts (BuildKit v0.23.0).
    #[test]
    fn chmod_keeps_set_id_bits_and_add_chown_owns_extracted_entries() {
        let context = tempfile::tempdir().unwrap();
        fs::write(context.path().join("a.txt"), "a\n").unwrap();
        // `layer`'s tweak can only hand the request what outlives it.
        let chmod: &'static kiln_graph::Chmod =
            Box::leak(Box::new(kiln_graph::Chmod::parse("4755").unwrap()));
        let entries = layer(
            context.path(),
            &["a.txt"],
            "/suid/",
            |r| r.chmod = Some(chmod),
            &mut Tree::default(),
        )
        .unwrap();
        let file = entries.iter().find(|e| e.0 == "suid/a.txt").unwrap();
        assert_eq!(file.2, 0o4755);

        let mut tar = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o644);
        header.set_uid(5);
        header.set_gid(6);
        header.set_size(2);
        tar.append_data(&mut header, "plain", &b"p\n"[..]).unwrap();
        fs::write(context.path().join("a.tar"), tar.into_inner().unwrap()).unwrap();
        let entries = layer(
            context.path(),
            &["a.tar"],
            "/t/",
            |r| {
                r.instruction = "ADD";
                r.owner = Some((7, 8));
            },
            &mut Tree::default(),
        )
        .unwrap();
        let owners: Vec<(&str, u64, u64)> =
            entries.iter().map(|e| (e.0.as_str(), e.3, e.4)).collect();
        assert_eq!(owners, [("t/", 7, 8), ("t/plain", 7, 8)]);
    }

    #[test]
    fn contained_sources() {
        assert_eq!(contained("./a/b").as_deref(), Some("a/b"));
        assert_eq!(contained("/a/../b").as_deref(), Some("b"));
        assert_eq!(contained("../x"), None);
    }
}
