//! A COPY or ADD step up to the point of writing its layer: remote
//! sources fetched, a source stage or image unpacked, `--chown` names
//! resolved, sources selected and hashed. The result's content digest is
//! what the cache key needs; writing happens only on a miss. What a COPY
//! selected from a stage or image is remembered by the layers' digests
//! (the cache's selections), so a rebuild keys it without unpacking them.

use std::collections::BTreeMap;
use std::path::Path;

use kiln_context::{ContentDigest, HashStats, StatCache};
use kiln_graph::{BuildGraph, CopyOp, Node, SourceRef};
use kiln_store::{Layer, Store};

use crate::base::pinned_base;
use crate::copy::{select, CopyRequest, Selection};
use crate::error::BuildError;
use crate::executor::BuildOptions;
use crate::keys;
use crate::remote;
use crate::rootfs;
use crate::stage::{StageFs, Stages, TempDir};

/// A selected COPY, with the scratch directories its files live in until
/// the layer is written.
pub struct PreparedCopy {
    pub selection: Selection,
    _scratch: Vec<TempDir>,
}

/// What a COPY's cache key is made of: its selection's content digest and
/// each selected file's short digest (for explaining a miss); with the
/// prepared copy when finding them took preparing it.
pub struct CopyContent {
    pub content: ContentDigest,
    pub inputs: BTreeMap<String, String>,
    pub hash_stats: HashStats,
    pub prepared: Option<PreparedCopy>,
}

/// One COPY step, as the executor hands it over.
pub struct CopyStep<'a> {
    pub store: &'a Store,
    pub graph: &'a BuildGraph,
    pub node: &'a Node,
    pub copy: &'a CopyOp,
    pub stages: &'a Stages,
    pub options: &'a BuildOptions<'a>,
}

impl CopyStep<'_> {
    /// The step's content: remembered, for a copy from a stage or image
    /// whose layers it was selected from before; else selected now (and
    /// remembered).
    pub fn content(&self, state: &StageFs) -> Result<CopyContent, BuildError> {
        // Resolved once: naming an owner reads the stage's /etc/passwd.
        let owner = self.owner(state)?;
        let remembered_as = self.selection_key(owner)?;
        if let Some(key) = &remembered_as {
            let cache = self.options.cache;
            if let Some(selected) = cache.selection(key).filter(|_| !self.options.no_cache) {
                return Ok(CopyContent {
                    content: selected.content,
                    inputs: selected.files,
                    hash_stats: HashStats::default(),
                    prepared: None,
                });
            }
        }
        let prepared = self.prepare(owner)?;
        let selection = &prepared.selection;
        if let Some(key) = &remembered_as {
            self.remember(key, selection)?;
        }
        Ok(CopyContent {
            content: selection.content,
            inputs: selection.inputs.clone(),
            hash_stats: selection.hash_stats,
            prepared: Some(prepared),
        })
    }

    /// Prepares the copy whose content was remembered as `content`. A
    /// selection that differs means the remembered one was wrong (the
    /// cache damaged): it is corrected and the step fails, since its key
    /// was made of the wrong digest.
    pub fn prepare_remembered(
        &self,
        state: &StageFs,
        content: &ContentDigest,
    ) -> Result<PreparedCopy, BuildError> {
        let owner = self.owner(state)?;
        let prepared = self.prepare(owner)?;
        if prepared.selection.content == *content {
            return Ok(prepared);
        }
        if let Some(key) = self.selection_key(owner)? {
            self.remember(&key, &prepared.selection)?;
        }
        Err(BuildError::step(
            self.node.line,
            format!(
                "{}: the cache remembered another selection of its sources than they give now (corrected); build again",
                self.node.display
            ),
        ))
    }

    fn remember(
        &self,
        key: &kiln_cache::CacheKey,
        selection: &Selection,
    ) -> Result<(), BuildError> {
        Ok(self
            .options
            .cache
            .put_selection(key, &selection.remembered())?)
    }

    /// What a selection from a stage or image is remembered by; `None` for
    /// a copy from the context (its files change between builds).
    fn selection_key(
        &self,
        owner: Option<(u64, u64)>,
    ) -> Result<Option<kiln_cache::CacheKey>, BuildError> {
        let Some(from) = &self.copy.from else {
            return Ok(None);
        };
        let (layers, _) = source_layers(
            self.store,
            self.graph,
            self.node,
            from,
            self.stages,
            self.options,
        )?;
        let op = keys::copy_key(None, self.copy, &[]);
        Ok(Some(keys::selection_key(
            &op,
            &layers,
            owner,
            rootfs::keeps_layer_owners(),
        )))
    }

    /// `--chown` resolved to numbers, names looked up in the stage.
    fn owner(&self, state: &StageFs) -> Result<Option<(u64, u64)>, BuildError> {
        self.copy
            .chown
            .as_deref()
            .map(|spec| resolve_owner(self.store, &state.layers, spec, self.node.line))
            .transpose()
    }

    fn prepare(&self, owner: Option<(u64, u64)>) -> Result<PreparedCopy, BuildError> {
        prepare_copy(
            self.store,
            self.graph,
            self.node,
            self.copy,
            owner,
            self.stages,
            self.options,
        )
    }
}

/// The layers a `--from` names, with how errors name them.
pub(crate) fn source_layers(
    store: &Store,
    graph: &BuildGraph,
    node: &Node,
    from: &SourceRef,
    stages: &Stages,
    options: &BuildOptions<'_>,
) -> Result<(Vec<Layer>, String), BuildError> {
    match from {
        SourceRef::Stage(id) => {
            let (stage, _) = stages.get(id).ok_or_else(|| {
                BuildError::step(node.line, format!("stage {id} has not been built"))
            })?;
            Ok((
                stage.layers.clone(),
                format!("stage {}", graph.stages[*id].label()),
            ))
        }
        SourceRef::Image(reference) => {
            let image = pinned_base(store, options.images, reference)?;
            Ok((image.layers, format!("image {reference}")))
        }
    }
}

/// Resolves a COPY/ADD step's sources (fetching remote ones, unpacking a
/// stage or image it copies from), selects and hashes them for `owner`
/// (`--chown`, resolved by the caller): everything but writing the layer.
fn prepare_copy(
    store: &Store,
    graph: &BuildGraph,
    node: &Node,
    copy: &CopyOp,
    owner: Option<(u64, u64)>,
    stages: &Stages,
    options: &BuildOptions<'_>,
) -> Result<PreparedCopy, BuildError> {
    let instruction = if copy.add { "ADD" } else { "COPY" };
    let (remote, local): (Vec<&String>, Vec<&String>) = copy
        .sources
        .iter()
        .partition(|s| copy.add && copy.from.is_none() && remote::remote_kind(s).is_some());
    if copy.checksum.is_some() && (!local.is_empty() || remote.is_empty()) {
        return Err(BuildError::step(
            node.line,
            "ADD --checksum applies only to http(s) and git sources",
        ));
    }
    let staging = if remote.is_empty() {
        None
    } else {
        Some(fetch_remote_sources(store, copy, &remote, node.line)?)
    };
    // Sources from another stage or image are placed in a temporary
    // directory inside the store: only what the sources can reach, linked
    // from the layers' snapshots when they have them.
    let unpacked: Option<(TempDir, String)> = match &copy.from {
        None => None,
        Some(from) => {
            let (layers, name) = source_layers(store, graph, node, from, stages, options)?;
            let dir = TempDir::new(store)?;
            rootfs::place_for_reading(store, &layers, &dir.0, Some(&copy.sources))?;
            Some((dir, name))
        }
    };
    let (root, root_name): (&Path, &str) = match &unpacked {
        Some((dir, name)) => (dir.0.as_path(), name.as_str()),
        None => (options.context, "the build context"),
    };
    // Only the context keeps its paths and inodes from build to build.
    let fresh_cache = StatCache::in_memory();
    let (stat_cache, ignore) = if unpacked.is_some() {
        (&fresh_cache, None)
    } else {
        (options.stat_cache, Some(options.ignore))
    };
    let local: Vec<String> = local.into_iter().cloned().collect();
    // Several sources in all make the destination a directory, whichever
    // root each is read from.
    let dest = if copy.sources.len() + copy.heredocs.len() > 1 && !copy.dest.ends_with('/') {
        format!("{}/", copy.dest)
    } else {
        copy.dest.clone()
    };
    let spill_dir = store.layout().tmp();
    let base = CopyRequest {
        root,
        root_name,
        sources: &local,
        heredocs: &copy.heredocs,
        dest: &dest,
        owner,
        keep_source_owner: copy.from.is_some(),
        extract_archives: (copy.add && copy.unpack != Some(false)).then_some(&spill_dir),
        chmod: copy.chmod.as_ref(),
        excludes: &copy.excludes,
        parents: copy.parents,
        link: copy.link,
        clamp_mtime: options.source_date_epoch,
        stat_cache,
        ignore,
        line: node.line,
        instruction,
    };
    let Some((staging_dir, fetched)) = staging else {
        let selection = select(&[base])?;
        return Ok(PreparedCopy {
            selection,
            _scratch: unpacked.map(|(dir, _)| dir).into_iter().collect(),
        });
    };
    // Remote files are never extracted (Docker's rule), and their owner
    // is root unless --chown says otherwise.
    let fetched_request = CopyRequest {
        root: &staging_dir.0,
        root_name: "the downloaded sources",
        sources: &fetched,
        heredocs: &[],
        extract_archives: None,
        keep_source_owner: false,
        excludes: &[],
        parents: false,
        stat_cache: &fresh_cache,
        ignore: None,
        ..base
    };
    let selection = if local.is_empty() && copy.heredocs.is_empty() {
        select(&[fetched_request])?
    } else {
        select(&[base, fetched_request])?
    };
    let mut scratch: Vec<TempDir> = unpacked.map(|(dir, _)| dir).into_iter().collect();
    scratch.push(staging_dir);
    Ok(PreparedCopy {
        selection,
        _scratch: scratch,
    })
}

/// Fetches every remote ADD source into one scratch directory; returns it
/// with the fetched paths relative to it.
fn fetch_remote_sources(
    store: &Store,
    copy: &CopyOp,
    sources: &[&String],
    line: u32,
) -> Result<(TempDir, Vec<String>), BuildError> {
    let staging = TempDir::new(store)?;
    let mut fetched = Vec::new();
    for (slot, source) in sources.iter().enumerate() {
        let path = match remote::remote_kind(source) {
            Some(remote::RemoteKind::Git) => {
                if copy.checksum.is_some() {
                    return Err(BuildError::step(
                        line,
                        format!("ADD {source}: --checksum is not supported for git sources yet"),
                    ));
                }
                remote::fetch_git(source, copy.keep_git_dir, &staging.0, slot, line)?
            }
            _ => remote::fetch_url(source, copy.checksum.as_deref(), &staging.0, slot, line)?,
        };
        fetched.push(path);
    }
    Ok((staging, fetched))
}

/// `--chown=user[:group]` (or USER's `user[:group]`): numbers as they are,
/// names looked up in the stage's /etc/passwd and /etc/group.
pub(crate) fn resolve_owner(
    store: &Store,
    layers: &[Layer],
    spec: &str,
    line: u32,
) -> Result<(u64, u64), BuildError> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let lookup = |file: &str, name: &str, field: usize| -> Result<Option<(u64, u64)>, BuildError> {
        let Some(content) = rootfs::read_file(store, layers, file)? else {
            return Ok(None);
        };
        let text = String::from_utf8_lossy(&content);
        Ok(text.lines().find_map(|l| {
            let cols: Vec<&str> = l.split(':').collect();
            if cols.first() != Some(&name) {
                return None;
            }
            let id = cols.get(2)?.parse().ok()?;
            let second = cols.get(field).and_then(|g| g.parse().ok()).unwrap_or(id);
            Some((id, second))
        }))
    };
    let (uid, default_gid) = match user.parse::<u64>() {
        Ok(uid) => (uid, uid),
        Err(_) => lookup("etc/passwd", user, 3)?.ok_or_else(|| {
            BuildError::step(line, format!("no user {user:?} in the image's /etc/passwd"))
        })?,
    };
    let gid = match group {
        None => default_gid,
        Some(group) => match group.parse::<u64>() {
            Ok(gid) => gid,
            Err(_) => lookup("etc/group", group, 2)?
                .map(|(gid, _)| gid)
                .ok_or_else(|| {
                    BuildError::step(
                        line,
                        format!("no group {group:?} in the image's /etc/group"),
                    )
                })?,
        },
    };
    Ok((uid, gid))
}
