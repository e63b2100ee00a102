//! `plan`: walks the Dockerfile stage by stage, keeping the variables and
//! image config in effect at each line, and turns every instruction into a
//! node with its expanded op and cache inputs. Stages are planned in order
//! (a stage can only use earlier ones), then pruned to what the target
//! needs; errors in stages the target does not need are not reported, as
//! BuildKit does not build them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use kiln_dockerfile::shell::{Env, Lexer};
use kiln_dockerfile::{Arguments, Dockerfile, Instruction, InstructionKind, Span};

use crate::config::{History, ImageConfig};
use crate::dispatch::{dispatch, StageRefs};
use crate::error::{PlanError, PlanWarning};
use crate::graph::{Base, BuildGraph, ImageState, Node, Op, Source, SourceRef, Stage, StageId};
use crate::limits::Budget;
use crate::platform::Platform;
use crate::scope::{platform_args, ArgScope, Consumed, GlobalVars};

/// What a plan depends on besides the Dockerfile.
#[derive(Clone, Debug)]
pub struct PlanOptions {
    /// `--build-arg NAME=value`.
    pub build_args: BTreeMap<String, String>,
    /// `--target`: the stage to build (default: the last one).
    pub target: Option<String>,
    /// The platform the image is for (TARGETPLATFORM).
    pub platform: Platform,
    /// The platform the build runs on (BUILDPLATFORM).
    pub build_platform: Platform,
    /// Configs of base images, by reference as written after expansion
    /// (`debian:12`). A missing entry is an empty config.
    pub base_configs: BTreeMap<String, ImageConfig>,
    /// `--network`: what a RUN without `--network` (or with `default`)
    /// gets.
    pub network: crate::Network,
    /// `--add-host`: (name, address) in every RUN's `/etc/hosts`.
    pub extra_hosts: Vec<(String, String)>,
    /// `--ulimit`s for every RUN, as given.
    pub ulimits: Vec<String>,
    /// `--shm-size` for every RUN, in bytes.
    pub shm_size: Option<u64>,
    /// `--build-context`s: a (lower-case) name and the image reference it
    /// stands for, over any stage or image of that name in FROM, `--from`
    /// and `from=`.
    pub named_contexts: BTreeMap<String, String>,
}

impl Default for PlanOptions {
    fn default() -> PlanOptions {
        PlanOptions {
            build_args: BTreeMap::new(),
            target: None,
            platform: Platform::host(),
            build_platform: Platform::host(),
            base_configs: BTreeMap::new(),
            network: crate::Network::Default,
            extra_hosts: Vec::new(),
            ulimits: Vec::new(),
            shm_size: None,
            named_contexts: BTreeMap::new(),
        }
    }
}

/// A node before ids are assigned (stages that end up pruned never get ids).
pub(crate) struct DraftNode {
    pub line: u32,
    pub display: String,
    pub trigger: bool,
    pub op: Op,
    pub inputs: crate::graph::Inputs,
    pub config: Arc<ImageConfig>,
    pub history: Option<History>,
}

/// A stage while it is being planned.
pub(crate) struct StageState {
    pub image: ImageState,
    pub args: ArgScope,
    /// CMD was set in this stage (ENTRYPOINT then keeps it).
    pub cmd_set: bool,
}

/// The result of planning one stage.
struct PlannedStage {
    nodes: Vec<DraftNode>,
    image: ImageState,
    args: ArgScope,
    /// Stages this one reads (base, COPY --from, mounts).
    uses: BTreeSet<StageId>,
}

/// Plans the build of `dockerfile`. Pure: no I/O, no clock.
pub fn plan(dockerfile: &Dockerfile, options: &PlanOptions) -> Result<BuildGraph, PlanError> {
    if let Some(error) = kiln_dockerfile::validate(dockerfile).into_iter().next() {
        return Err(PlanError::from(error));
    }
    let lexer = Lexer::new(dockerfile.escape);
    let platform_args = platform_args(&options.platform, &options.build_platform);
    let mut consumed = Consumed::default();

    let first_from = dockerfile
        .instructions
        .iter()
        .position(|i| i.kind == InstructionKind::From)
        .ok_or_else(|| {
            PlanError::at_line(
                dockerfile.instructions.first().map_or(1, |i| i.start_line),
                "the Dockerfile has no FROM instruction",
            )
            .hint("a build starts with FROM <image> (or FROM scratch)")
        })?;
    let global_args = global_args(
        &dockerfile.instructions[..first_from],
        &lexer,
        options,
        &platform_args,
        &mut consumed,
    )?;
    let stage_heads = stage_heads(
        &dockerfile.instructions[first_from..],
        &lexer,
        &global_args,
        &platform_args,
        options,
    )?;
    let names: Vec<Option<String>> = stage_heads.iter().map(|h| h.name.clone()).collect();

    let target = match &options.target {
        None => stage_heads.len() - 1,
        Some(name) => {
            let lower = name.to_ascii_lowercase();
            names
                .iter()
                .position(|n| n.as_deref() == Some(lower.as_str()))
                .ok_or_else(|| {
                    let known: Vec<&str> = names.iter().flatten().map(String::as_str).collect();
                    PlanError::at_line(0, format!("target stage {name:?} could not be found")).hint(
                        if known.is_empty() {
                            "no stage has a name: name one with FROM <image> AS <name>".to_owned()
                        } else {
                            format!("the named stages are: {}", known.join(", "))
                        },
                    )
                })?
        }
    };
    // Stages the target cannot need are not planned at all when that is
    // clear from the text; their errors would not be reported anyway.
    let statically_needed = statically_needed(&stage_heads, &names, target, options);
    let mut planned: Vec<Result<PlannedStage, PlanError>> = Vec::with_capacity(stage_heads.len());
    let mut budget = Budget::default();
    for (id, head) in stage_heads.iter().enumerate() {
        for ins in head.body {
            if ins.kind == InstructionKind::Arg {
                declared_names(ins, &mut consumed);
            }
        }
        let refs = StageRefs {
            names: &names,
            current: id,
            named_contexts: &options.named_contexts,
        };
        let context = DispatchContext {
            lexer: &lexer,
            options,
            global_args: &global_args,
            platform_args: &platform_args,
            refs: &refs,
        };
        let result = match &statically_needed {
            Some(needed) if !needed.contains(&id) => Err(PlanError::at_line(
                head.line,
                "stage not planned: the target does not need it",
            )),
            _ => plan_stage(head, &planned, &context, &mut budget),
        };
        planned.push(result);
    }

    let needed = needed_stages(target, &planned)?;

    let mut graph = BuildGraph {
        stages: Vec::with_capacity(stage_heads.len()),
        nodes: Vec::new(),
        target,
        images: BTreeSet::new(),
        platform: options.platform.clone(),
        warnings: Vec::new(),
    };
    for (id, (head, result)) in stage_heads.into_iter().zip(planned).enumerate() {
        let is_needed = needed.contains(&id);
        let mut stage = Stage {
            id,
            name: head.name,
            base: head.base,
            platform: head.platform,
            line: head.line,
            needed: is_needed,
            uses: BTreeSet::new(),
            nodes: Vec::new(),
            image: ImageState::default(),
        };
        if let (true, Ok(planned)) = (is_needed, result) {
            stage.image = planned.image;
            stage.uses = planned.uses;
            let mut parent = match stage.base {
                Base::Stage(base) => graph.stage_result(base),
                _ => None,
            };
            if let Base::Image(reference) = &stage.base {
                graph.images.insert(reference.clone());
            }
            for draft in planned.nodes {
                let id = graph.nodes.len();
                collect_images(&draft, &mut graph.images);
                graph.nodes.push(Node {
                    id,
                    stage: stage.id,
                    parent,
                    line: draft.line,
                    display: draft.display,
                    trigger: draft.trigger,
                    op: draft.op,
                    inputs: draft.inputs,
                    config: draft.config,
                    history: draft.history,
                });
                stage.nodes.push(id);
                parent = Some(id);
            }
        }
        graph.stages.push(stage);
    }
    for name in consumed.unused(&options.build_args) {
        graph.warnings.push(PlanWarning {
            message: format!("build arg {name} was not consumed: no ARG {name} in the Dockerfile"),
            line: 0,
        });
    }
    Ok(graph)
}

fn collect_images(draft: &DraftNode, images: &mut BTreeSet<String>) {
    for source in &draft.inputs.sources {
        if let Source::Image { reference, .. } = source {
            images.insert(reference.clone());
        }
    }
}

/// The stages the target needs, target included. An error of a needed
/// stage is the plan's error (the earliest such stage's, so that a broken
/// base is reported rather than its dependants).
fn needed_stages(
    target: StageId,
    planned: &[Result<PlannedStage, PlanError>],
) -> Result<BTreeSet<StageId>, PlanError> {
    let mut needed = BTreeSet::new();
    let mut todo = vec![target];
    let mut first_error: Option<(StageId, &PlanError)> = None;
    while let Some(id) = todo.pop() {
        if !needed.insert(id) {
            continue;
        }
        match &planned[id] {
            Ok(stage) => todo.extend(stage.uses.iter().copied()),
            Err(error) => {
                if first_error.is_none_or(|(at, _)| id < at) {
                    first_error = Some((id, error));
                }
            }
        }
    }
    match first_error {
        Some((_, error)) => Err(error.clone()),
        None => Ok(needed),
    }
}

/// The stages the target needs, read from FROM lines and the raw `--from`
/// and `from=` values, or `None` when that cannot be known before planning
/// (a reference uses a variable, or ONBUILD triggers may add references).
fn statically_needed(
    heads: &[StageHead<'_>],
    names: &[Option<String>],
    target: StageId,
    options: &PlanOptions,
) -> Option<BTreeSet<StageId>> {
    if options
        .base_configs
        .values()
        .any(|c| !c.on_build.is_empty())
    {
        return None;
    }
    let resolve = |text: &str| -> Option<Option<StageId>> {
        if text.contains(['$', '"', '\'', '\\', '`']) {
            return None;
        }
        let lower = text.to_ascii_lowercase();
        if options.named_contexts.contains_key(&lower) {
            return Some(None);
        }
        let by_name = names
            .iter()
            .position(|n| n.as_deref() == Some(lower.as_str()));
        let by_index = text
            .bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| text.parse::<usize>().ok())
            .flatten()
            .filter(|&i| i < names.len());
        Some(by_name.or(by_index))
    };
    let mut uses: Vec<BTreeSet<StageId>> = Vec::with_capacity(heads.len());
    for head in heads {
        let mut stage_uses = BTreeSet::new();
        if let Base::Stage(base) = head.base {
            stage_uses.insert(base);
        }
        for ins in head.body {
            if ins.kind == InstructionKind::Onbuild {
                return None;
            }
            for flag in &ins.flags {
                let value = flag.value.as_deref().unwrap_or("");
                let reference = match flag.name.as_str() {
                    "from" => Some(value),
                    "mount" => value
                        .split(',')
                        .find_map(|field| field.trim().strip_prefix("from=")),
                    _ => None,
                };
                if let Some(reference) = reference {
                    stage_uses.extend(resolve(reference)?);
                }
            }
        }
        uses.push(stage_uses);
    }
    let mut needed = BTreeSet::new();
    let mut todo = vec![target];
    while let Some(id) = todo.pop() {
        if needed.insert(id) {
            todo.extend(uses[id].iter().copied());
        }
    }
    Some(needed)
}

/// ARGs before the first FROM: usable in FROM lines only. Any other
/// instruction there is an error.
fn global_args(
    instructions: &[Instruction],
    lexer: &Lexer,
    options: &PlanOptions,
    platform_args: &[(String, String)],
    consumed: &mut Consumed,
) -> Result<ArgScope, PlanError> {
    let mut scope = ArgScope::default();
    for ins in instructions {
        if ins.kind != InstructionKind::Arg {
            return Err(PlanError::at(
                ins.keyword_span,
                format!("{} before the first FROM", ins.kind.name()),
            )
            .hint("only ARG may come before the first FROM; start a stage with FROM <image>"));
        }
        for (name, default, span) in arg_words(ins)? {
            consumed.0.insert(name.clone());
            let value = match options.build_args.get(&name) {
                Some(value) => Some(value.clone()),
                None => match default {
                    Some(default) => {
                        let vars = GlobalVars {
                            args: &scope,
                            platform_args,
                        };
                        Some(expand(lexer, &default, &vars, span)?)
                    }
                    None => None,
                },
            };
            scope.declare(name, value);
        }
    }
    Ok(scope)
}

/// Records the names an ARG declares (for the unused build-arg warning),
/// even in stages that are pruned.
fn declared_names(ins: &Instruction, consumed: &mut Consumed) {
    if let Arguments::List(words) = &ins.args {
        for word in words {
            let name = word.value.split('=').next().unwrap_or_default();
            consumed.0.insert(name.to_owned());
        }
    }
}

/// `ARG a=1 b c="x y"`: (name, default as written, span) for each word.
pub(crate) fn arg_words(
    ins: &Instruction,
) -> Result<Vec<(String, Option<String>, Span)>, PlanError> {
    let Arguments::List(words) = &ins.args else {
        return Err(
            PlanError::at(ins.keyword_span, "ARG requires at least one argument")
                .hint("write ARG NAME or ARG NAME=default"),
        );
    };
    let mut out = Vec::with_capacity(words.len());
    for word in words {
        let (name, default) = match word.value.split_once('=') {
            Some((name, default)) => (name, Some(default.to_owned())),
            None => (word.value.as_str(), None),
        };
        if name.is_empty() {
            return Err(PlanError::at(
                word.span,
                format!("ARG {:?} has no name", word.value),
            ));
        }
        out.push((name.to_owned(), default, word.span));
    }
    Ok(out)
}

pub(crate) fn expand(
    lexer: &Lexer,
    word: &str,
    vars: &dyn Env,
    span: Span,
) -> Result<String, PlanError> {
    lexer
        .expand_word(word, vars)
        .map_err(|e| PlanError::at(span, e.to_string()))
}

/// A FROM line, resolved.
struct StageHead<'a> {
    name: Option<String>,
    base: Base,
    platform: Platform,
    line: u32,
    body: &'a [Instruction],
}

/// Splits the instructions into stages and resolves each FROM: its name,
/// its base (scratch, an earlier stage, or an image) and its platform.
fn stage_heads<'a>(
    instructions: &'a [Instruction],
    lexer: &Lexer,
    global_args: &ArgScope,
    platform_args: &[(String, String)],
    options: &PlanOptions,
) -> Result<Vec<StageHead<'a>>, PlanError> {
    let starts: Vec<usize> = instructions
        .iter()
        .enumerate()
        .filter(|(_, i)| i.kind == InstructionKind::From)
        .map(|(n, _)| n)
        .collect();
    let vars = GlobalVars {
        args: global_args,
        platform_args,
    };
    let mut heads: Vec<StageHead> = Vec::with_capacity(starts.len());
    // Names first: a FROM naming a later stage is an error, not an image.
    let mut names = Vec::with_capacity(starts.len());
    for &start in &starts {
        names.push(stage_name(&instructions[start])?);
    }
    for (index, name) in names.iter().enumerate() {
        if let Some(name) = name {
            if let Some(earlier) = names[..index].iter().position(|n| n.as_ref() == Some(name)) {
                return Err(PlanError::at_line(
                    instructions[starts[index]].start_line,
                    format!(
                        "duplicate stage name {name:?} (also on line {})",
                        instructions[starts[earlier]].start_line
                    ),
                ));
            }
        }
    }
    for (index, &start) in starts.iter().enumerate() {
        let from = &instructions[start];
        let end = starts.get(index + 1).copied().unwrap_or(instructions.len());
        let Arguments::List(words) = &from.args else {
            return Err(from_arity_error(from));
        };
        let image_word = &words[0];
        let image = expand(lexer, &image_word.value, &vars, image_word.span)?;
        if image.is_empty() {
            return Err(PlanError::at(
                image_word.span,
                format!("base name ({}) should not be blank", image_word.value),
            )
            .hint("set the variable with ARG before the first FROM or with --build-arg"));
        }
        let platform = match from.flag("platform") {
            None => options.platform.clone(),
            Some(flag) => {
                let text = expand(lexer, flag.value.as_deref().unwrap_or(""), &vars, flag.span)?;
                Platform::parse(&text).map_err(|e| PlanError::at(flag.span, e))?
            }
        };
        let lower = image.to_ascii_lowercase();
        let base = if let Some(reference) = options.named_contexts.get(&lower) {
            Base::Image(reference.clone())
        } else if lower == "scratch" {
            Base::Scratch
        } else if let Some(stage) = names
            .iter()
            .position(|n| n.as_deref() == Some(lower.as_str()))
        {
            if stage >= index {
                let what = if stage == index {
                    "itself"
                } else {
                    "a stage defined after it"
                };
                return Err(PlanError::at(
                    image_word.span,
                    format!("stage {lower:?} is built FROM {what}"),
                )
                .hint("a stage can only start from a stage defined above it"));
            }
            Base::Stage(stage)
        } else {
            Base::Image(image)
        };
        heads.push(StageHead {
            name: names[index].clone(),
            base,
            platform,
            line: from.start_line,
            body: &instructions[start + 1..end],
        });
    }
    Ok(heads)
}

fn from_arity_error(from: &Instruction) -> PlanError {
    PlanError::at(
        from.keyword_span,
        "FROM requires either one or three arguments",
    )
    .hint("write FROM <image> or FROM <image> AS <name>")
}

/// The `AS name` of a FROM, lower-cased and checked.
fn stage_name(from: &Instruction) -> Result<Option<String>, PlanError> {
    let Arguments::List(words) = &from.args else {
        return Err(from_arity_error(from));
    };
    match words.as_slice() {
        [_] => Ok(None),
        [_, as_word, name] if as_word.value.eq_ignore_ascii_case("as") => {
            let lower = name.value.to_ascii_lowercase();
            let valid = lower.starts_with(|c: char| c.is_ascii_lowercase())
                && lower
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c));
            if !valid {
                return Err(PlanError::at(
                    name.span,
                    format!("invalid name for build stage: {:?}", name.value),
                )
                .hint(
                    "a stage name starts with a letter and has only letters, digits, -, _ and .",
                ));
            }
            Ok(Some(lower))
        }
        [_, as_word, _] => Err(PlanError::at(
            as_word.span,
            format!("expected AS after the image, found {:?}", as_word.value),
        )),
        _ => Err(from_arity_error(from)),
    }
}

fn plan_stage(
    head: &StageHead<'_>,
    planned: &[Result<PlannedStage, PlanError>],
    context: &DispatchContext<'_>,
    budget: &mut Budget,
) -> Result<PlannedStage, PlanError> {
    let id = context.refs.current;
    let names = context.refs.names;
    let mut uses = BTreeSet::new();
    let (image, args) = match &head.base {
        Base::Scratch => (ImageState::scratch(), ArgScope::default()),
        Base::Image(reference) => (
            ImageState {
                config: Arc::new(
                    context
                        .options
                        .base_configs
                        .get(reference)
                        .cloned()
                        .unwrap_or_default(),
                ),
                ..ImageState::default()
            },
            ArgScope::default(),
        ),
        Base::Stage(base) => {
            uses.insert(*base);
            match &planned[*base] {
                Ok(stage) => (stage.image.clone(), stage.args.clone()),
                Err(error) => return Err(error.clone()),
            }
        }
    };
    let mut state = StageState {
        image,
        args,
        cmd_set: false,
    };
    // Triggers of the base run right after FROM; the new image does not
    // inherit them.
    let triggers = if state.image.config.on_build.is_empty() {
        Vec::new()
    } else {
        std::mem::take(&mut Arc::make_mut(&mut state.image.config).on_build)
    };
    let from_display = format!(
        "FROM {}",
        match &head.base {
            Base::Scratch => "scratch".to_owned(),
            Base::Image(image) => image.clone(),
            Base::Stage(stage) => names[*stage]
                .clone()
                .unwrap_or_else(|| format!("stage-{stage}")),
        }
    );
    let mut nodes = vec![DraftNode {
        line: head.line,
        display: from_display,
        trigger: false,
        op: Op::From {
            base: head.base.clone(),
            platform: head.platform.clone(),
        },
        inputs: crate::graph::Inputs::default(),
        config: Arc::clone(&state.image.config),
        history: None,
    }];
    for trigger in &triggers {
        let in_trigger = |message: &str| {
            PlanError::at_line(
                head.line,
                format!("ONBUILD trigger {trigger:?} of the base image: {message}"),
            )
        };
        let parsed = kiln_dockerfile::parse(trigger).map_err(|e| in_trigger(&e.message))?;
        for ins in &parsed.instructions {
            check_trigger(ins).map_err(|message| in_trigger(&message))?;
            let mut node =
                dispatch(ins, &mut state, context).map_err(|e| in_trigger(&e.message))?;
            node.line = head.line;
            node.trigger = true;
            budget.charge(&node, &nodes[nodes.len() - 1].config)?;
            note_uses(&node, &mut uses);
            nodes.push(node);
        }
    }
    for ins in head.body {
        let node = dispatch(ins, &mut state, context)?;
        budget.charge(&node, &nodes[nodes.len() - 1].config)?;
        note_uses(&node, &mut uses);
        nodes.push(node);
    }
    uses.remove(&id);
    Ok(PlannedStage {
        image: state.image,
        nodes,
        args: state.args,
        uses,
    })
}

fn note_uses(node: &DraftNode, uses: &mut BTreeSet<StageId>) {
    for source in &node.inputs.sources {
        if let Source::Stage { stage, .. } = source {
            uses.insert(*stage);
        }
    }
    match &node.op {
        Op::Copy(copy) => {
            if let Some(SourceRef::Stage(stage)) = copy.from {
                uses.insert(stage);
            }
        }
        // A cache mount's from= seeds it from a stage without being a
        // hashed input: still a stage to wait for.
        Op::Run(run) => {
            for mount in &run.mounts {
                if let Some(SourceRef::Stage(stage)) = mount.from {
                    uses.insert(stage);
                }
            }
        }
        _ => {}
    }
}

/// ONBUILD may not defer these (checked when recording and when running).
pub(crate) fn check_trigger(ins: &Instruction) -> Result<(), String> {
    match ins.kind {
        InstructionKind::Onbuild => {
            Err("chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed".into())
        }
        InstructionKind::From | InstructionKind::Maintainer => Err(format!(
            "{} isn't allowed as an ONBUILD trigger",
            ins.kind.name()
        )),
        _ => Ok(()),
    }
}

/// What dispatching an instruction needs besides the stage state.
pub(crate) struct DispatchContext<'a> {
    pub lexer: &'a Lexer,
    pub options: &'a PlanOptions,
    pub global_args: &'a ArgScope,
    pub platform_args: &'a [(String, String)],
    pub refs: &'a StageRefs<'a>,
}

/// A history entry for a step that changes only the config.
pub(crate) fn config_history(created_by: String) -> History {
    History {
        created_by,
        comment: Some("buildkit.dockerfile.v0".into()),
        empty_layer: true,
    }
}

impl From<kiln_dockerfile::ParseError> for PlanError {
    fn from(error: kiln_dockerfile::ParseError) -> PlanError {
        PlanError {
            message: error.message,
            position: error.position,
            hint: error.hint,
        }
    }
}
