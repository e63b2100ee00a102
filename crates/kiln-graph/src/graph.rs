//! The plan a build executes: stages, one node per instruction, the edges
//! between them, and for every node the inputs its cache key needs.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::Serialize;

use crate::config::{History, ImageConfig};
use crate::error::PlanWarning;
use crate::platform::Platform;
use crate::values::Chmod;

/// Index of a stage in [`BuildGraph::stages`] (its position in the Dockerfile).
pub type StageId = usize;
/// Index of a node in [`BuildGraph::nodes`].
pub type NodeId = usize;

/// What `plan` produces.
#[derive(Clone, Debug, Serialize)]
pub struct BuildGraph {
    /// Every stage of the Dockerfile, in order; see `needed` for which run.
    pub stages: Vec<Stage>,
    /// Nodes of the needed stages, in Dockerfile order within each stage.
    pub nodes: Vec<Node>,
    /// The stage whose result is the image.
    pub target: StageId,
    /// Image references the build needs (FROM, COPY --from, RUN --mount
    /// from=), to be resolved and pulled before the nodes using them run.
    pub images: BTreeSet<String>,
    /// The platform the build targets (TARGETPLATFORM).
    pub platform: Platform,
    pub warnings: Vec<PlanWarning>,
}

impl BuildGraph {
    /// The stages whose layers the image holds: the target and, through
    /// `FROM <stage>`, the stages it builds on. The others' layers are
    /// only read by the build (`COPY --from`, mounts).
    pub fn image_stages(&self) -> BTreeSet<StageId> {
        let mut stages = BTreeSet::new();
        let mut next = Some(self.target);
        while let Some(id) = next {
            if !stages.insert(id) {
                break;
            }
            next = match self.stages.get(id).map(|s| &s.base) {
                Some(Base::Stage(base)) => Some(*base),
                _ => None,
            };
        }
        stages
    }

    /// The last node of `stage`: its result.
    pub fn stage_result(&self, stage: StageId) -> Option<NodeId> {
        self.stages[stage].nodes.last().copied()
    }

    /// Stages that will not run: not the target and nothing it needs.
    pub fn pruned(&self) -> impl Iterator<Item = &Stage> {
        self.stages.iter().filter(|s| !s.needed)
    }

    /// Every node a node waits for: its parent and its other inputs.
    pub fn dependencies(&self, node: NodeId) -> Vec<NodeId> {
        let node = &self.nodes[node];
        let mut deps: Vec<NodeId> = node.parent.into_iter().collect();
        for input in &node.inputs.sources {
            if let Source::Stage { stage, .. } = input {
                if let Some(result) = self.stage_result(*stage) {
                    deps.push(result);
                }
            }
        }
        deps.sort_unstable();
        deps.dedup();
        deps
    }
}

/// One `FROM` and the instructions after it.
#[derive(Clone, Debug, Serialize)]
pub struct Stage {
    pub id: StageId,
    /// The `AS` name, lower-cased (stage names are case-insensitive).
    pub name: Option<String>,
    pub base: Base,
    pub platform: Platform,
    /// Line of the FROM instruction.
    pub line: u32,
    /// Whether the target needs this stage (otherwise it is pruned).
    pub needed: bool,
    /// The other stages it reads (its FROM, `COPY --from`, `RUN --mount
    /// from=`): what it must wait for. Empty when pruned.
    pub uses: BTreeSet<StageId>,
    /// The stage's nodes, first (FROM) to last; empty when pruned.
    pub nodes: Vec<NodeId>,
    /// The config, author and history of the stage's result.
    pub image: ImageState,
}

impl Stage {
    /// `name` or `stage-N`, for display.
    pub fn label(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("stage-{}", self.id))
    }
}

/// What a stage starts from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Base {
    /// `FROM scratch`: an empty filesystem and config.
    Scratch,
    /// An image reference, resolved by the store or a registry.
    Image(String),
    /// An earlier stage's result.
    Stage(StageId),
}

/// The image a stage leaves behind, apart from its filesystem.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ImageState {
    /// Shared with the nodes whose config it is (most steps do not change it).
    pub config: Arc<ImageConfig>,
    /// MAINTAINER.
    pub author: Option<String>,
    /// History entries of the steps of this Dockerfile so far (the base
    /// image's own history is prepended at export).
    pub history: Vec<History>,
}

impl ImageState {
    /// What `FROM scratch` starts from: BuildKit's empty image, whose
    /// config has the default `PATH` and `WorkingDir` `/`.
    pub fn scratch() -> Self {
        let mut config = ImageConfig::default();
        config.set_env("PATH", DEFAULT_PATH);
        config.working_dir = "/".to_owned();
        ImageState {
            config: Arc::new(config),
            ..ImageState::default()
        }
    }
}

/// The `PATH` of an image that sets none (Docker's and BuildKit's default
/// for Linux).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// One instruction of a needed stage.
#[derive(Clone, Debug, Serialize)]
pub struct Node {
    pub id: NodeId,
    pub stage: StageId,
    /// The node this one builds on (the previous instruction of the stage);
    /// `None` for a FROM.
    pub parent: Option<NodeId>,
    /// Line of the instruction (for a trigger: of the FROM that ran it).
    pub line: u32,
    /// The instruction as it will run, variables expanded: `RUN make all`.
    pub display: String,
    /// Whether this node comes from an ONBUILD trigger of its base image.
    pub trigger: bool,
    pub op: Op,
    /// Everything besides the parent that the step reads.
    pub inputs: Inputs,
    /// The image config after this node (the same `Arc` as the previous
    /// node's when this step does not change it).
    pub config: Arc<ImageConfig>,
    /// The history entry this step adds (ARG and FROM add none).
    pub history: Option<History>,
}

/// What a node does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// The start of a stage.
    From { base: Base, platform: Platform },
    /// A command in a container.
    Run(RunOp),
    /// COPY or ADD.
    Copy(CopyOp),
    /// WORKDIR: creates the directory if missing.
    Workdir { path: String },
    /// An instruction that changes only the config (ENV, LABEL, USER,
    /// EXPOSE, VOLUME, CMD, ENTRYPOINT, HEALTHCHECK, STOPSIGNAL, SHELL,
    /// ONBUILD, MAINTAINER, ARG).
    Config { instruction: String },
}

/// A RUN step after expansion.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RunOp {
    /// The argv: the shell and the command for shell form, the JSON array
    /// for exec form.
    pub argv: Vec<String>,
    pub shell_form: bool,
    /// Heredoc bodies of the command (their expansion is the shell's job).
    pub heredocs: Vec<HeredocInput>,
    pub mounts: Vec<Mount>,
    pub network: Network,
    /// `--security=insecure`.
    pub insecure: bool,
    /// `--device` requests, as written.
    pub devices: Vec<String>,
    /// `kiln build --add-host`: (name, address) lines added to the
    /// command's `/etc/hosts`.
    pub extra_hosts: Vec<(String, String)>,
    /// `kiln build --ulimit`, as given (`nofile=1024:2048`; checked by the
    /// front end).
    pub ulimits: Vec<String>,
    /// `kiln build --shm-size`: `/dev/shm`'s size in bytes (none: 64 MiB;
    /// left out of the plan's JSON then).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shm_size: Option<u64>,
}

/// `RUN --network=`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Network {
    #[default]
    Default,
    None,
    Host,
}

/// `RUN --mount=...`, parsed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Mount {
    pub kind: MountKind,
    /// Where it appears in the container (for `secret`/`ssh` a default
    /// under `/run` when not given).
    pub target: String,
    /// `from=`: a stage or image the bind/cache source comes from.
    pub from: Option<SourceRef>,
    /// `source=`: path inside `from` (or the context) to mount.
    pub source: Option<String>,
    pub read_only: bool,
    /// The options, parsed by the planner (`values::parse_mount`).
    pub options: MountOptions,
}

/// `--mount` options besides type, target, source, from and ro/rw.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MountOptions {
    /// cache: the shared directory's id (the planner fills BuildKit's
    /// default, the target as written, cleaned); secret and ssh: which one
    /// (a secret's default: its target's file name).
    pub id: Option<String>,
    pub sharing: Sharing,
    /// cache, secret, ssh: the mode and owner of what is mounted (each
    /// kind has its own default).
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// tmpfs: its size in bytes.
    pub size: Option<u64>,
    /// secret, ssh: a build without it fails.
    pub required: bool,
    /// secret: also (or only) as this environment variable.
    pub env: Option<String>,
}

/// `sharing=` of a cache mount.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Sharing {
    /// Steps use the directory at once (the default).
    #[default]
    Shared,
    /// BuildKit gives each concurrent user its own copy; kiln shares it.
    Private,
    /// One step at a time.
    Locked,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MountKind {
    Bind,
    Cache,
    Tmpfs,
    Secret,
    Ssh,
}

/// Where COPY --from or a mount's from= points.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum SourceRef {
    Stage(StageId),
    Image(String),
}

/// A COPY or ADD step after expansion.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CopyOp {
    /// ADD rather than COPY (URLs, git, tar extraction).
    pub add: bool,
    /// Source paths or patterns (or URLs for ADD), expanded.
    pub sources: Vec<String>,
    /// Destination, made absolute against WORKDIR; a trailing `/` kept.
    pub dest: String,
    pub from: Option<SourceRef>,
    pub chown: Option<String>,
    pub chmod: Option<Chmod>,
    pub link: bool,
    pub excludes: Vec<String>,
    pub parents: bool,
    /// ADD: `--keep-git-dir`, `--checksum`, `--unpack`.
    pub keep_git_dir: bool,
    pub checksum: Option<String>,
    pub unpack: Option<bool>,
    /// COPY <<EOF: files made from heredocs (content expanded unless the
    /// delimiter was quoted).
    pub heredocs: Vec<HeredocInput>,
}

/// A heredoc body as an input of a step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HeredocInput {
    pub name: String,
    pub content: String,
    /// The file descriptor for RUN (`3<<EOF`), 0 otherwise.
    pub fd: u32,
    /// Whether the body is still subject to expansion by the shell (RUN).
    pub expand: bool,
}

/// Everything a node's cache key needs besides its parent and its op.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Inputs {
    /// Build args that affect the step, with their values: for RUN every
    /// declared arg in scope (they are in its environment), otherwise the
    /// args the instruction's expansion referenced. Proxy args never.
    pub build_args: Vec<(String, String)>,
    /// The environment a RUN sees (config env, then args not shadowed by
    /// it); empty for other ops, whose effect is in `image`.
    pub env: Vec<(String, String)>,
    /// Proxy args passed to RUN but kept out of keys and history.
    pub proxy_env: Vec<(String, String)>,
    /// USER and WORKDIR in effect (RUN runs as/in them; COPY resolves
    /// relative destinations and `--chown` names with them).
    pub user: String,
    pub workdir: String,
    /// Content the step reads.
    pub sources: Vec<Source>,
}

/// Content a step reads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Source {
    /// Files of the build context selected by these patterns.
    Context { paths: Vec<String> },
    /// Files of an earlier stage's result.
    Stage { stage: StageId, paths: Vec<String> },
    /// Files of an image.
    Image {
        reference: String,
        paths: Vec<String>,
    },
    /// A URL (ADD), with its expected checksum if given.
    Url {
        url: String,
        checksum: Option<String>,
    },
    /// A git repository (ADD).
    Git { url: String },
    /// A cache mount, by id (its content never enters a key).
    CacheMount { id: String },
}
