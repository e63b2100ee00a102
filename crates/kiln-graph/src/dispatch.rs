//! One instruction inside a stage: expands what Docker expands, applies the
//! instruction's effect on the image config, and describes the step as a
//! node (op, cache inputs, history).

use std::collections::BTreeSet;
use std::sync::Arc;

use kiln_dockerfile::shell::Lexer;
use kiln_dockerfile::{Arg, Arguments, Flag, Heredoc, Instruction, InstructionKind, Span};

use crate::config::{Empty, Healthcheck, History};
use crate::error::PlanError;
use crate::graph::{
    CopyOp, HeredocInput, Inputs, Mount, MountKind, Network, Op, RunOp, Source, SourceRef, StageId,
};
use crate::planner::{
    arg_words, check_trigger, config_history, DispatchContext, DraftNode, StageState,
};
use crate::scope::{is_proxy_arg, Vars};
use crate::values::{check_signal, parse_go_duration, parse_mount, parse_port_spec, Chmod};

/// Stage names, to resolve `--from` and `from=`.
pub(crate) struct StageRefs<'a> {
    pub names: &'a [Option<String>],
    pub current: StageId,
    /// `--build-context`s, which come before stage names.
    pub named_contexts: &'a std::collections::BTreeMap<String, String>,
}

impl StageRefs<'_> {
    /// `--from=<name|index|image>`: an earlier stage or an image.
    fn resolve(&self, text: &str, span: Span, what: &str) -> Result<SourceRef, PlanError> {
        let lower = text.to_ascii_lowercase();
        if let Some(reference) = self.named_contexts.get(&lower) {
            return Ok(SourceRef::Image(reference.clone()));
        }
        let by_name = self
            .names
            .iter()
            .position(|n| n.as_deref() == Some(lower.as_str()));
        let by_index = text
            .parse::<usize>()
            .ok()
            .filter(|_| text.bytes().all(|b| b.is_ascii_digit()));
        let stage = match (by_name, by_index) {
            (Some(stage), _) => Some(stage),
            (None, Some(index)) if index < self.names.len() => Some(index),
            (None, Some(index)) => {
                return Err(PlanError::at(
                    span,
                    format!(
                        "{what} refers to stage {index}, but there are only {} stages",
                        self.names.len()
                    ),
                ))
            }
            (None, None) => None,
        };
        match stage {
            Some(stage) if stage == self.current => Err(PlanError::at(
                span,
                format!("{what} refers to the current stage"),
            )
            .hint("a stage cannot read its own result; copy from an earlier stage")),
            Some(stage) if stage > self.current => Err(PlanError::at(
                span,
                format!("{what} refers to stage {text:?}, which is defined later"),
            )
            .hint("move that stage above this one")),
            Some(stage) => Ok(SourceRef::Stage(stage)),
            None => Ok(SourceRef::Image(text.to_owned())),
        }
    }
}

/// Flags that may be given more than once.
const MULTI_FLAGS: [&str; 3] = ["mount", "exclude", "device"];

/// The flags of an instruction, checked for duplicates.
struct Flags<'a>(&'a Instruction);

impl<'a> Flags<'a> {
    fn one(&self, name: &str) -> Result<Option<&'a Flag>, PlanError> {
        let mut found = self.0.flags.iter().filter(|f| f.name == name);
        let first = found.next();
        if let Some(second) = found.next() {
            if !MULTI_FLAGS.contains(&name) {
                return Err(PlanError::at(
                    second.span,
                    format!("duplicate flag specified: --{name}"),
                ));
            }
        }
        Ok(first)
    }

    fn all<'n>(&self, name: &'n str) -> impl Iterator<Item = &'a Flag> + use<'a, 'n> {
        self.0.flags.iter().filter(move |f| f.name == name)
    }

    fn string(&self, name: &str) -> Result<Option<(&'a str, Span)>, PlanError> {
        Ok(self
            .one(name)?
            .map(|f| (f.value.as_deref().unwrap_or(""), f.span)))
    }

    fn boolean(&self, name: &str) -> Result<Option<bool>, PlanError> {
        let Some(flag) = self.one(name)? else {
            return Ok(None);
        };
        match flag
            .value
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("true") | Some("1") => Ok(Some(true)),
            Some("false") | Some("0") => Ok(Some(false)),
            Some(other) => Err(PlanError::at(
                flag.span,
                format!("expecting boolean value for flag {name}, not: {other}"),
            )),
        }
    }
}

/// Expands words and records which build args they referenced.
struct Expander<'a> {
    lexer: &'a Lexer,
    vars: Vars<'a>,
    used: BTreeSet<String>,
}

impl Expander<'_> {
    fn word(&mut self, text: &str, span: Span) -> Result<String, PlanError> {
        let expansion = self
            .lexer
            .expand_with_matches(text, &self.vars)
            .map_err(|e| PlanError::at(span, e.to_string()))?;
        self.used.extend(expansion.matched);
        Ok(expansion.value)
    }

    fn words(&mut self, text: &str, span: Span) -> Result<Vec<String>, PlanError> {
        let expansion = self
            .lexer
            .expand_with_matches(text, &self.vars)
            .map_err(|e| PlanError::at(span, e.to_string()))?;
        self.used.extend(expansion.matched);
        Ok(expansion.words)
    }

    /// The referenced names that are build args (not shadowed by ENV),
    /// with their values: what the cache key must include.
    fn used_args(&self) -> Vec<(String, String)> {
        self.used
            .iter()
            .filter(|name| self.vars.config.env_value(name).is_none() && !is_proxy_arg(name))
            .filter_map(|name| {
                let (_, value) = self.vars.args.get(name)?;
                Some((name.clone(), value.clone()?))
            })
            .collect()
    }
}

pub(crate) fn dispatch(
    ins: &Instruction,
    state: &mut StageState,
    ctx: &DispatchContext<'_>,
) -> Result<DraftNode, PlanError> {
    let inputs = match ins.kind {
        InstructionKind::Run => return run(ins, state, ctx),
        InstructionKind::Copy | InstructionKind::Add => return copy(ins, state, ctx),
        InstructionKind::Workdir => return workdir(ins, state, ctx),
        InstructionKind::Arg => arg(ins, state, ctx)?,
        InstructionKind::Env | InstructionKind::Label => key_values(ins, state, ctx)?,
        InstructionKind::User | InstructionKind::Stopsignal => text_setting(ins, state, ctx)?,
        InstructionKind::Expose => expose(ins, state, ctx)?,
        InstructionKind::Volume => volume(ins, state, ctx)?,
        InstructionKind::Cmd | InstructionKind::Entrypoint => command(ins, state)?,
        InstructionKind::Healthcheck => healthcheck(ins, state)?,
        InstructionKind::Shell => shell(ins, state)?,
        InstructionKind::Onbuild => onbuild(ins, state)?,
        InstructionKind::Maintainer => {
            let text = text_arg(ins)?;
            state.image.author = Some(text.value.clone());
            (
                Inputs::default(),
                Some(format!("MAINTAINER {}", text.value)),
            )
        }
        InstructionKind::From | InstructionKind::Unknown => {
            return Err(PlanError::at(
                ins.keyword_span,
                format!("unknown instruction: {}", ins.keyword),
            ))
        }
    };
    let (inputs, created_by) = inputs;
    let history = created_by
        .clone()
        .map(|created_by| record(state, config_history(created_by)));
    Ok(DraftNode {
        line: ins.start_line,
        display: created_by.unwrap_or_else(|| ins.original.clone()),
        trigger: false,
        op: Op::Config {
            instruction: ins.kind.name().to_owned(),
        },
        inputs,
        config: Arc::clone(&state.image.config),
        history,
    })
}

type ConfigEffect = (Inputs, Option<String>);

/// Appends a step's history entry to the stage's and returns it for the node.
fn record(state: &mut StageState, entry: History) -> History {
    state.image.history.push(entry.clone());
    entry
}

fn expander<'a>(state: &'a StageState, ctx: &DispatchContext<'a>) -> Expander<'a> {
    Expander {
        lexer: ctx.lexer,
        vars: Vars {
            config: &state.image.config,
            args: &state.args,
        },
        used: BTreeSet::new(),
    }
}

fn text_arg(ins: &Instruction) -> Result<&Arg, PlanError> {
    match &ins.args {
        Arguments::Text(arg) => Ok(arg),
        _ => Err(PlanError::at(
            ins.keyword_span,
            format!("{} requires exactly one argument", ins.kind.name()),
        )),
    }
}

fn arg(
    ins: &Instruction,
    state: &mut StageState,
    ctx: &DispatchContext<'_>,
) -> Result<ConfigEffect, PlanError> {
    let mut declared = Vec::new();
    let mut used = Vec::new();
    // BuildKit's history line: each name with the default as written in
    // the Dockerfile (expanded), never a --build-arg value.
    let mut shown = Vec::new();
    for (name, default, span) in arg_words(ins)? {
        let expanded_default = match &default {
            Some(default) => Some(expander(state, ctx).word(default, span)?),
            None => None,
        };
        shown.push(match &expanded_default {
            Some(value) => format!("{name}={value}"),
            None => name.clone(),
        });
        let value = if let Some(value) = ctx.options.build_args.get(&name) {
            Some(value.clone())
        } else if let Some(default) = default {
            let mut ex = expander(state, ctx);
            let value = ex.word(&default, span)?;
            used.extend(ex.used_args());
            Some(value)
        } else if let Some((_, global)) = ctx.global_args.get(&name) {
            // `ARG NAME` inside a stage takes the global ARG's value.
            global.clone()
        } else {
            ctx.platform_args
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.clone())
        };
        declared.push(name.clone());
        state.args.declare(name, value);
    }
    let inputs = Inputs {
        build_args: used,
        ..Inputs::default()
    };
    Ok((inputs, Some(format!("ARG {}", shown.join(" ")))))
}

/// ENV and LABEL: every pair expanded with the values from before this
/// line (`ENV a=x b=$a` sees the old `a`), then applied.
fn key_values(
    ins: &Instruction,
    state: &mut StageState,
    ctx: &DispatchContext<'_>,
) -> Result<ConfigEffect, PlanError> {
    let Arguments::KeyValues { pairs, .. } = &ins.args else {
        return Err(PlanError::at(
            ins.keyword_span,
            format!("{} requires at least one argument", ins.kind.name()),
        ));
    };
    let mut ex = expander(state, ctx);
    let mut expanded = Vec::with_capacity(pairs.len());
    for pair in pairs {
        let key = ex.word(&pair.key.value, pair.key.span)?;
        let value = ex.word(&pair.value.value, pair.value.span)?;
        if key.is_empty() {
            return Err(PlanError::at(
                pair.key.span,
                format!("{} names cannot be empty", ins.kind.name()),
            ));
        }
        expanded.push((key, value));
    }
    let inputs = Inputs {
        build_args: ex.used_args(),
        ..Inputs::default()
    };
    let config = Arc::make_mut(&mut state.image.config);
    for (key, value) in &expanded {
        if ins.kind == InstructionKind::Env {
            config.set_env(key, value);
        } else {
            config.labels.insert(key.clone(), value.clone());
        }
    }
    let shown: Vec<String> = expanded.iter().map(|(k, v)| format!("{k}={v}")).collect();
    Ok((
        inputs,
        Some(format!("{} {}", ins.kind.name(), shown.join(" "))),
    ))
}

/// USER and STOPSIGNAL: one expanded word.
fn text_setting(
    ins: &Instruction,
    state: &mut StageState,
    ctx: &DispatchContext<'_>,
) -> Result<ConfigEffect, PlanError> {
    let arg = text_arg(ins)?;
    let mut ex = expander(state, ctx);
    let value = ex.word(&arg.value, arg.span)?;
    let inputs = Inputs {
        build_args: ex.used_args(),
        ..Inputs::default()
    };
    if ins.kind == InstructionKind::Stopsignal {
        check_signal(&value).map_err(|e| PlanError::at(arg.span, e))?;
        Arc::make_mut(&mut state.image.config).stop_signal = value.clone();
    } else {
        // An empty USER (an unset variable) is accepted, as BuildKit does:
        // the container then runs as root.
        Arc::make_mut(&mut state.image.config).user = value.clone();
    }
    Ok((inputs, Some(format!("{} {value}", ins.kind.name()))))
}

fn expose(
    ins: &Instruction,
    state: &mut StageState,
    ctx: &DispatchContext<'_>,
) -> Result<ConfigEffect, PlanError> {
    let Arguments::List(words) = &ins.args else {
        return Err(PlanError::at(
            ins.keyword_span,
            "EXPOSE requires at least one argument",
        ));
    };
    let mut ex = expander(state, ctx);
    let mut ports = Vec::new();
    for word in words {
        for spec in ex.words(&word.value, word.span)? {
            ports.extend(parse_port_spec(&spec).map_err(|e| PlanError::at(word.span, e))?);
        }
    }
    let inputs = Inputs {
        build_args: ex.used_args(),
        ..Inputs::default()
    };
    for port in &ports {
        Arc::make_mut(&mut state.image.config)
            .exposed_ports
            .insert(port.clone(), Empty {});
    }
    Ok((inputs, Some(format!("EXPOSE {}", ports.join(" ")))))
}

fn volume(
    ins: &Instruction,
    state: &mut StageState,
    ctx: &DispatchContext<'_>,
) -> Result<ConfigEffect, PlanError> {
    let words = match &ins.args {
        Arguments::Exec(items) | Arguments::List(items) => items,
        _ => {
            return Err(PlanError::at(
                ins.keyword_span,
                "VOLUME requires at least one argument",
            ))
        }
    };
    let mut ex = expander(state, ctx);
    let mut volumes = Vec::with_capacity(words.len());
    for word in words {
        let path = ex.word(&word.value, word.span)?;
        if path.trim().is_empty() {
            return Err(PlanError::at(
                word.span,
                "VOLUME specified can not be an empty string",
            ));
        }
        volumes.push(path);
    }
    let inputs = Inputs {
        build_args: ex.used_args(),
        ..Inputs::default()
    };
    for path in &volumes {
        Arc::make_mut(&mut state.image.config)
            .volumes
            .insert(path.clone(), Empty {});
    }
    Ok((inputs, Some(format!("VOLUME {}", go_plain_list(&volumes)))))
}

/// A command in exec form, or shell form wrapped in the current SHELL.
fn command_argv(args: &Arguments, state: &StageState) -> Option<(Vec<String>, bool)> {
    match args {
        Arguments::Exec(items) => Some((items.iter().map(|a| a.value.clone()).collect(), false)),
        Arguments::Text(text) => {
            let mut argv = state.image.config.shell_or_default();
            argv.push(text.value.clone());
            Some((argv, true))
        }
        _ => None,
    }
}

/// Go's `%q` of a string list, as BuildKit's CMD and ENTRYPOINT history
/// lines print it: `["/bin/sh" "-c" "echo \"hi\""]`.
fn go_quoted_list(items: &[String]) -> String {
    let mut out = String::from("[");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        kiln_dockerfile::dump::go_quote_into(&mut out, item);
    }
    out.push(']');
    out
}

/// Go's `%v` of a string list, as BuildKit's SHELL and VOLUME history
/// lines print it: `[/bin/sh -c]` (no quotes, so not reversible).
fn go_plain_list(items: &[String]) -> String {
    format!("[{}]", items.join(" "))
}

/// CMD and ENTRYPOINT (not expanded: the container's shell does that).
fn command(ins: &Instruction, state: &mut StageState) -> Result<ConfigEffect, PlanError> {
    let argv = match command_argv(&ins.args, state) {
        Some((argv, _)) => argv,
        // `CMD []` or an empty ENTRYPOINT clears the setting.
        None => Vec::new(),
    };
    let config = Arc::make_mut(&mut state.image.config);
    // BuildKit stores `CMD []` and `ENTRYPOINT []` as null: nothing set.
    let setting = (!argv.is_empty()).then(|| argv.clone());
    if ins.kind == InstructionKind::Cmd {
        config.cmd = setting;
        config.args_escaped = true;
        state.cmd_set = true;
    } else {
        config.entrypoint = setting;
        // A new ENTRYPOINT drops the CMD inherited from the base, as Docker does.
        if !state.cmd_set {
            config.cmd = None;
        }
    }
    Ok((
        Inputs::default(),
        Some(format!("{} {}", ins.kind.name(), go_quoted_list(&argv))),
    ))
}

fn healthcheck(ins: &Instruction, state: &mut StageState) -> Result<ConfigEffect, PlanError> {
    let Arguments::Healthcheck { kind, command } = &ins.args else {
        return Err(
            PlanError::at(ins.keyword_span, "HEALTHCHECK requires an argument")
                .hint("write HEALTHCHECK [OPTIONS] CMD command, or HEALTHCHECK NONE"),
        );
    };
    let check = match kind.value.to_ascii_uppercase().as_str() {
        "NONE" => {
            if !matches!(**command, Arguments::None) {
                return Err(PlanError::at(
                    kind.span,
                    "HEALTHCHECK NONE takes no arguments",
                ));
            }
            Healthcheck {
                test: vec!["NONE".into()],
                ..Healthcheck::default()
            }
        }
        "CMD" => {
            let test = match &**command {
                Arguments::Exec(items) if !items.is_empty() => {
                    let mut test = vec!["CMD".to_owned()];
                    test.extend(items.iter().map(|a| a.value.clone()));
                    test
                }
                Arguments::Text(text) if !text.value.is_empty() => {
                    vec!["CMD-SHELL".to_owned(), text.value.clone()]
                }
                _ => {
                    return Err(PlanError::at(
                        kind.span,
                        "Missing command after HEALTHCHECK CMD",
                    ))
                }
            };
            let flags = Flags(ins);
            let retries = match flags.string("retries")? {
                None => 0,
                Some((text, span)) => match text.parse::<i64>() {
                    Ok(n) if n >= 0 => n as u64,
                    Ok(_) => {
                        return Err(PlanError::at(
                            span,
                            format!("--retries cannot be negative ({text})"),
                        ))
                    }
                    Err(_) => {
                        return Err(PlanError::at(
                            span,
                            format!("invalid --retries value {text:?}"),
                        ))
                    }
                },
            };
            Healthcheck {
                test,
                interval: health_duration(&flags, "interval")?,
                timeout: health_duration(&flags, "timeout")?,
                start_period: health_duration(&flags, "start-period")?,
                start_interval: health_duration(&flags, "start-interval")?,
                retries,
            }
        }
        other => {
            return Err(PlanError::at(
                kind.span,
                format!("Unknown type {other:?} in HEALTHCHECK (try CMD)"),
            ))
        }
    };
    Arc::make_mut(&mut state.image.config).healthcheck = Some(check);
    Ok((Inputs::default(), Some(ins.original.trim().to_owned())))
}

/// A HEALTHCHECK duration flag: 0 (default) or at least 1ms.
fn health_duration(flags: &Flags<'_>, name: &str) -> Result<u64, PlanError> {
    let Some((text, span)) = flags.string(name)? else {
        return Ok(0);
    };
    let nanos =
        parse_go_duration(text).map_err(|e| PlanError::at(span, format!("--{name}: {e}")))?;
    if nanos < 0 {
        return Err(PlanError::at(
            span,
            format!("--{name} cannot be negative ({text})"),
        ));
    }
    if nanos > 0 && nanos < 1_000_000 {
        return Err(PlanError::at(
            span,
            format!("--{name} cannot be less than 1ms ({text})"),
        ));
    }
    Ok(nanos as u64)
}

fn shell(ins: &Instruction, state: &mut StageState) -> Result<ConfigEffect, PlanError> {
    let items = match &ins.args {
        Arguments::Exec(items) if !items.is_empty() => items,
        Arguments::Exec(_) => {
            return Err(PlanError::at(
                ins.keyword_span,
                "SHELL requires at least one argument",
            ))
        }
        _ => {
            return Err(PlanError::at(
                ins.keyword_span,
                "SHELL requires the arguments to be in JSON form",
            )
            .hint(r#"write SHELL ["/bin/bash", "-c"]"#))
        }
    };
    let argv: Vec<String> = items.iter().map(|a| a.value.clone()).collect();
    let shown = go_plain_list(&argv);
    Arc::make_mut(&mut state.image.config).shell = Some(argv);
    Ok((Inputs::default(), Some(format!("SHELL {shown}"))))
}

fn onbuild(ins: &Instruction, state: &mut StageState) -> Result<ConfigEffect, PlanError> {
    let Arguments::Onbuild(inner) = &ins.args else {
        return Err(PlanError::at(
            ins.keyword_span,
            "ONBUILD requires an instruction to defer",
        ));
    };
    check_trigger(inner).map_err(|message| PlanError::at(inner.keyword_span, message))?;
    let trigger = inner.original.trim().to_owned();
    Arc::make_mut(&mut state.image.config)
        .on_build
        .push(trigger);
    // BuildKit records no history entry for ONBUILD (only the config's
    // OnBuild list changes), unlike the classic builder's `#(nop)` line.
    Ok((Inputs::default(), None))
}

/// `WORKDIR`: relative paths are joined to the previous one.
fn workdir(
    ins: &Instruction,
    state: &mut StageState,
    ctx: &DispatchContext<'_>,
) -> Result<DraftNode, PlanError> {
    let arg = text_arg(ins)?;
    let mut ex = expander(state, ctx);
    let path = ex.word(&arg.value, arg.span)?;
    if path.is_empty() {
        return Err(PlanError::at(arg.span, "WORKDIR cannot be empty"));
    }
    let build_args = ex.used_args();
    let joined = join_path(state.image.config.working_dir_or_root(), &path);
    let inputs = Inputs {
        build_args,
        user: state.image.config.user.clone(),
        workdir: joined.clone(),
        ..Inputs::default()
    };
    // BuildKit records an absolute WORKDIR as written (`/app/` stays
    // `/app/`) and a relative one joined to the current one, cleaned; the
    // directory it makes is the cleaned path either way.
    let recorded = if path.starts_with('/') {
        path.clone()
    } else {
        joined.clone()
    };
    Arc::make_mut(&mut state.image.config).working_dir = recorded.clone();
    let created_by = format!("WORKDIR {recorded}");
    let history = Some(record(
        state,
        History {
            created_by: created_by.clone(),
            comment: Some("buildkit.dockerfile.v0".into()),
            empty_layer: false,
        },
    ));
    Ok(DraftNode {
        line: ins.start_line,
        display: created_by,
        trigger: false,
        op: Op::Workdir { path: joined },
        inputs,
        config: Arc::clone(&state.image.config),
        history,
    })
}

/// `path.Join(base, rel)` for absolute `base`, then cleaned.
pub(crate) fn join_path(base: &str, path: &str) -> String {
    let joined = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("{base}/{path}")
    };
    go_clean(&joined)
}

/// Go's `path.Clean`: the shortest equivalent path, lexically (`..` stops
/// at the root of an absolute path; a relative one keeps its leading `..`;
/// `""` is `"."`).
fn go_clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." if parts.last().is_some_and(|last| *last != "..") => {
                parts.pop();
            }
            ".." if rooted => {}
            other => parts.push(other),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_owned(),
        (false, false) => joined,
    }
}

/// What a RUN step gets as environment.
struct RunEnvironment {
    /// Config env, then declared args it does not shadow.
    env: Vec<(String, String)>,
    /// Declared args with values, proxies excluded: part of the cache key.
    build_args: Vec<(String, String)>,
    /// Every declared arg (unset ones empty), proxies excluded: the
    /// history text's `|N K=V ...` prefix.
    history_args: Vec<(String, String)>,
    /// Proxy args from the command line: passed, never keyed or recorded.
    proxy_env: Vec<(String, String)>,
}

fn run_environment(state: &StageState, ctx: &DispatchContext<'_>) -> RunEnvironment {
    let config = &state.image.config;
    let mut env: Vec<(String, String)> = config
        .env_pairs()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let mut build_args = Vec::new();
    for (name, value) in state.args.with_values() {
        if is_proxy_arg(name) {
            continue;
        }
        build_args.push((name.to_owned(), value.to_owned()));
        if config.env_value(name).is_none() {
            env.push((name.to_owned(), value.to_owned()));
        }
    }
    // BuildKit lists every declared arg, with the ENV value where an ENV
    // of the same name hides it (`ARG V=a`, `ENV V=e`: `RUN |1 V=e ...`).
    let history_args = state
        .args
        .all_or_empty()
        .filter(|(name, _)| !is_proxy_arg(name))
        .map(|(k, v)| {
            let shown = config.env_value(k).unwrap_or(v);
            (k.to_owned(), shown.to_owned())
        })
        .collect();
    let proxy_env = ctx
        .options
        .build_args
        .iter()
        .filter(|(name, _)| is_proxy_arg(name) && config.env_value(name).is_none())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    RunEnvironment {
        env,
        build_args,
        history_args,
        proxy_env,
    }
}

fn run(
    ins: &Instruction,
    state: &mut StageState,
    ctx: &DispatchContext<'_>,
) -> Result<DraftNode, PlanError> {
    let Some((argv, shell_form)) = command_argv(&ins.args, state) else {
        return Err(PlanError::at(ins.keyword_span, "RUN requires a command")
            .hint("write RUN <command> or RUN [\"executable\", \"arg\"]"));
    };
    if argv.is_empty() {
        return Err(PlanError::at(ins.keyword_span, "RUN requires a command"));
    }
    let flags = Flags(ins);
    let network = match flags.string("network")? {
        // The build's --network, as BuildKit's default network mode.
        None | Some(("default", _)) => ctx.options.network,
        Some(("none", _)) => Network::None,
        Some(("host", _)) => Network::Host,
        Some((other, span)) => {
            return Err(
                PlanError::at(span, format!("invalid --network value {other:?}"))
                    .hint("use default, none or host"),
            )
        }
    };
    let insecure = match flags.string("security")? {
        None | Some(("sandbox", _)) => false,
        Some(("insecure", _)) => true,
        Some((other, span)) => {
            return Err(
                PlanError::at(span, format!("invalid --security value {other:?}"))
                    .hint("use sandbox or insecure"),
            )
        }
    };
    let devices = flags
        .all("device")
        .map(|f| f.value.clone().unwrap_or_default())
        .collect();
    let workdir = state.image.config.working_dir_or_root().to_owned();
    let mut ex = expander(state, ctx);
    let mut mounts = Vec::new();
    let mut sources = Vec::new();
    for (n, flag) in flags.all("mount").enumerate() {
        let text = ex.word(flag.value.as_deref().unwrap_or(""), flag.span)?;
        let mount = mount(&text, n, &workdir, flag.span, ctx)?;
        match (&mount.kind, &mount.from) {
            (MountKind::Bind, None) => sources.push(Source::Context {
                paths: vec![mount.source.clone().unwrap_or_else(|| ".".into())],
            }),
            (MountKind::Bind | MountKind::Cache, Some(from)) => sources.push(match from {
                SourceRef::Stage(stage) => Source::Stage {
                    stage: *stage,
                    paths: vec![mount.source.clone().unwrap_or_else(|| "/".into())],
                },
                SourceRef::Image(reference) => Source::Image {
                    reference: reference.clone(),
                    paths: vec![mount.source.clone().unwrap_or_else(|| "/".into())],
                },
            }),
            _ => {}
        }
        if mount.kind == MountKind::Cache {
            let id = mount.options.id.clone().unwrap_or_default();
            sources.push(Source::CacheMount { id });
        }
        mounts.push(mount);
    }
    let RunEnvironment {
        env,
        build_args,
        history_args,
        proxy_env,
    } = run_environment(state, ctx);
    let created_by = run_history(&history_args, &argv);
    let history = Some(record(
        state,
        History {
            created_by: created_by.clone(),
            comment: Some("buildkit.dockerfile.v0".into()),
            empty_layer: false,
        },
    ));
    Ok(DraftNode {
        line: ins.start_line,
        display: format!("RUN {}", run_display(ins)),
        trigger: false,
        op: Op::Run(RunOp {
            argv,
            shell_form,
            heredocs: ins
                .heredocs
                .iter()
                .map(|h| heredoc_input(h, h.expand))
                .collect(),
            mounts,
            network,
            insecure,
            devices,
            extra_hosts: ctx.options.extra_hosts.clone(),
            ulimits: ctx.options.ulimits.clone(),
            shm_size: ctx.options.shm_size,
        }),
        inputs: Inputs {
            build_args,
            env,
            proxy_env,
            user: state.image.config.user.clone(),
            workdir,
            sources,
        },
        config: Arc::clone(&state.image.config),
        history,
    })
}

/// The RUN line as written, without the keyword.
fn run_display(ins: &Instruction) -> &str {
    let original = ins.original.trim_start();
    original
        .get(ins.keyword.len()..)
        .map(str::trim_start)
        .unwrap_or(original)
}

/// BuildKit's history line for RUN: `RUN |2 A=1 B=2 /bin/sh -c make # buildkit`
/// (BuildKit appends ` # buildkit` to every step that makes a layer).
fn run_history(args: &[(String, String)], argv: &[String]) -> String {
    let mut out = String::from("RUN ");
    if !args.is_empty() {
        out.push_str(&format!("|{} ", args.len()));
        for (k, v) in args {
            out.push_str(&format!("{k}={v} "));
        }
    }
    out.push_str(&argv.join(" "));
    out.push_str(" # buildkit");
    out
}

fn mount(
    text: &str,
    index: usize,
    workdir: &str,
    span: Span,
    ctx: &DispatchContext<'_>,
) -> Result<Mount, PlanError> {
    let spec = parse_mount(text).map_err(|e| PlanError::at(span, format!("--mount: {e}")))?;
    let from = match &spec.from {
        Some(from) if matches!(spec.kind, MountKind::Bind | MountKind::Cache) => {
            Some(ctx.refs.resolve(from, span, "--mount from=")?)
        }
        Some(_) => {
            return Err(PlanError::at(
                span,
                "--mount: from= is only valid for bind and cache mounts",
            ))
        }
        None => None,
    };
    let id = spec.options.id.clone();
    let target = match (spec.kind, &spec.target) {
        (MountKind::Secret, None) => match &id {
            Some(id) => format!("/run/secrets/{id}"),
            None if spec.options.env.is_some() => String::new(),
            None => {
                return Err(PlanError::at(
                    span,
                    "--mount type=secret needs id= or target=",
                ))
            }
        },
        (MountKind::Ssh, None) => format!("/run/buildkit/ssh_agent.{index}"),
        // Bind, cache and tmpfs mounts with no target mount at the WORKDIR,
        // as BuildKit does (a relative target is relative to it).
        (_, target) => {
            let joined = join_path(workdir, target.as_deref().unwrap_or(""));
            if joined == "/" {
                return Err(PlanError::at(span, "--mount: invalid mount target \"/\"")
                    .hint("add target=/path/in/container, or set a WORKDIR other than /"));
            }
            joined
        }
    };
    let mut options = spec.options;
    if spec.kind == MountKind::Cache && id.is_none() {
        // BuildKit's default cache id is the target as written, cleaned
        // (`.` when there is none), not the path it mounts at.
        let raw = spec.target.as_deref().unwrap_or("");
        options.id = Some(go_clean(raw));
    }
    if spec.kind == MountKind::Secret && id.is_none() && !target.is_empty() {
        let name = target.rsplit('/').next().unwrap_or_default().to_owned();
        options.id = Some(name);
    }
    Ok(Mount {
        kind: spec.kind,
        target,
        from,
        source: spec.source,
        read_only: spec.read_only.unwrap_or(spec.kind == MountKind::Bind),
        options,
    })
}

fn heredoc_input(heredoc: &Heredoc, expand: bool) -> HeredocInput {
    HeredocInput {
        name: heredoc.name.clone(),
        content: heredoc.chomped_content(),
        fd: heredoc.fd,
        expand,
    }
}

fn copy(
    ins: &Instruction,
    state: &mut StageState,
    ctx: &DispatchContext<'_>,
) -> Result<DraftNode, PlanError> {
    let add = ins.kind == InstructionKind::Add;
    let name = ins.kind.name();
    let words = match &ins.args {
        Arguments::Exec(items) | Arguments::List(items) => items,
        _ => return Err(too_few_copy_args(ins)),
    };
    if words.len() < 2 {
        return Err(too_few_copy_args(ins));
    }
    let flags = Flags(ins);
    let workdir = state.image.config.working_dir_or_root().to_owned();
    let mut ex = expander(state, ctx);
    let expand_flag =
        |ex: &mut Expander<'_>, name: &str| -> Result<Option<(String, Span)>, PlanError> {
            match flags.string(name)? {
                None => Ok(None),
                Some((text, span)) => Ok(Some((ex.word(text, span)?, span))),
            }
        };
    let from = match expand_flag(&mut ex, "from")? {
        None => None,
        Some((text, span)) => Some(ctx.refs.resolve(&text, span, &format!("{name} --from"))?),
    };
    let chown = expand_flag(&mut ex, "chown")?.map(|(v, _)| v);
    let chmod = match expand_flag(&mut ex, "chmod")? {
        Some((mode, span)) => Some(Chmod::parse(&mode).map_err(|e| PlanError::at(span, e))?),
        None => None,
    };
    let mut excludes = Vec::new();
    for flag in flags.all("exclude") {
        excludes.push(ex.word(flag.value.as_deref().unwrap_or(""), flag.span)?);
    }
    let link = flags.boolean("link")?.unwrap_or(false);
    let parents = flags.boolean("parents")?.unwrap_or(false);
    let keep_git_dir = flags.boolean("keep-git-dir")?.unwrap_or(false);
    let unpack = flags.boolean("unpack")?;
    let checksum = expand_flag(&mut ex, "checksum")?.map(|(v, _)| v);

    let (source_words, dest_word) = words.split_at(words.len() - 1);
    let dest_word = &dest_word[0];
    let dest_text = ex.word(&dest_word.value, dest_word.span)?;
    let dest = absolute_dest(&workdir, &dest_text);
    let mut sources = Vec::with_capacity(source_words.len());
    let mut heredocs = Vec::new();
    for word in source_words {
        if let Some(heredoc) = matching_heredoc(ins, &word.value) {
            let content = if heredoc.expand {
                let mut lexer = ctx.lexer.clone();
                lexer.skip_process_quotes = true;
                let expansion = lexer
                    .expand_with_matches(&heredoc.chomped_content(), &ex.vars)
                    .map_err(|e| PlanError::at(word.span, e.to_string()))?;
                ex.used.extend(expansion.matched);
                expansion.value
            } else {
                heredoc.chomped_content()
            };
            heredocs.push(HeredocInput {
                name: heredoc.name.clone(),
                content,
                fd: 0,
                expand: false,
            });
            continue;
        }
        sources.push(ex.word(&word.value, word.span)?);
    }
    let build_args = ex.used_args();
    let mut inputs = Vec::new();
    let mut context_paths = Vec::new();
    for source in &sources {
        match &from {
            Some(SourceRef::Stage(stage)) => push_paths(
                &mut inputs,
                Source::Stage {
                    stage: *stage,
                    paths: vec![],
                },
                source,
            ),
            Some(SourceRef::Image(reference)) => push_paths(
                &mut inputs,
                Source::Image {
                    reference: reference.clone(),
                    paths: vec![],
                },
                source,
            ),
            None if add && is_git_url(source) => inputs.push(Source::Git {
                url: source.clone(),
            }),
            None if add && is_http_url(source) => inputs.push(Source::Url {
                url: source.clone(),
                checksum: checksum.clone(),
            }),
            None => context_paths.push(source.clone()),
        }
    }
    if !context_paths.is_empty() {
        inputs.insert(
            0,
            Source::Context {
                paths: context_paths,
            },
        );
    }
    // The destination as written (expanded), not resolved against WORKDIR:
    // BuildKit records `COPY a.txt . # buildkit`.
    let created_by = format!(
        "{name} {}{} {dest_text} # buildkit",
        if heredocs.is_empty() {
            ""
        } else {
            "<<heredoc "
        },
        sources.join(" ")
    );
    let history = Some(record(
        state,
        History {
            created_by,
            comment: Some("buildkit.dockerfile.v0".into()),
            empty_layer: false,
        },
    ));
    let display = format!("{name} {}", run_display(ins));
    Ok(DraftNode {
        line: ins.start_line,
        display,
        trigger: false,
        op: Op::Copy(CopyOp {
            add,
            sources,
            dest,
            from,
            chown,
            chmod,
            link,
            excludes,
            parents,
            keep_git_dir,
            checksum,
            unpack,
            heredocs,
        }),
        inputs: Inputs {
            build_args,
            user: state.image.config.user.clone(),
            workdir,
            sources: inputs,
            ..Inputs::default()
        },
        config: Arc::clone(&state.image.config),
        history,
    })
}

/// Adds `path` to the last source if it reads from the same place.
fn push_paths(inputs: &mut Vec<Source>, mut fresh: Source, path: &str) {
    if let Some(last) = inputs.last_mut() {
        match (last, &fresh) {
            (Source::Stage { stage, paths }, Source::Stage { stage: s, .. }) if stage == s => {
                paths.push(path.to_owned());
                return;
            }
            (Source::Image { reference, paths }, Source::Image { reference: r, .. })
                if reference == r =>
            {
                paths.push(path.to_owned());
                return;
            }
            _ => {}
        }
    }
    match &mut fresh {
        Source::Stage { paths, .. } | Source::Image { paths, .. } => paths.push(path.to_owned()),
        _ => {}
    }
    inputs.push(fresh);
}

fn too_few_copy_args(ins: &Instruction) -> PlanError {
    PlanError::at(
        ins.keyword_span,
        format!(
            "{} requires at least two arguments, but only one was provided. Destination could not be determined",
            ins.kind.name()
        ),
    )
    .hint(format!("write {} <source>... <destination>", ins.kind.name()))
}

/// The heredoc a COPY source word opens (`<<EOF`, `<<-"EOF"`), if any.
fn matching_heredoc<'a>(ins: &'a Instruction, word: &str) -> Option<&'a Heredoc> {
    if ins.heredocs.is_empty() || !word.contains("<<") {
        return None;
    }
    let marker = kiln_dockerfile::heredoc::parse_heredoc_word(word).ok()??;
    ins.heredocs.iter().find(|h| h.name == marker.name)
}

/// The destination made absolute against WORKDIR; a trailing `/` (or a
/// `.`/`..` destination, which names a directory) is kept.
fn absolute_dest(workdir: &str, dest: &str) -> String {
    let is_dir = dest.ends_with('/')
        || dest == "."
        || dest == ".."
        || dest.ends_with("/.")
        || dest.ends_with("/..");
    let mut joined = join_path(workdir, dest);
    if is_dir && !joined.ends_with('/') {
        joined.push('/');
    }
    joined
}

fn is_http_url(source: &str) -> bool {
    source.starts_with("http://") || source.starts_with("https://")
}

/// Git references ADD clones: `git@host:repo`, `git://...`, `ssh://...`,
/// or an http(s) URL whose path ends in `.git` (optionally `#ref:subdir`).
fn is_git_url(source: &str) -> bool {
    if source.starts_with("git@") || source.starts_with("git://") || source.starts_with("ssh://") {
        return true;
    }
    is_http_url(source) && {
        let path = source.split('#').next().unwrap_or(source);
        path.ends_with(".git")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_join_and_clean_like_go() {
        assert_eq!(join_path("/", "app"), "/app");
        assert_eq!(join_path("/app", "src/../bin"), "/app/bin");
        assert_eq!(join_path("/app", "/opt"), "/opt");
        assert_eq!(join_path("/a", "../../.."), "/");
        assert_eq!(absolute_dest("/app", "."), "/app/");
        assert_eq!(absolute_dest("/app", "bin/"), "/app/bin/");
        assert_eq!(absolute_dest("/app", "bin"), "/app/bin");
        assert_eq!(absolute_dest("/", "/etc/x"), "/etc/x");
    }

    #[test]
    fn git_and_url_sources() {
        assert!(is_git_url(
            "https://github.com/moby/buildkit.git#v0.10.1:docs"
        ));
        assert!(is_git_url("git@github.com:moby/buildkit.git"));
        assert!(!is_git_url("https://example.com/file.tar.gz"));
        assert!(is_http_url("https://example.com/file.tar.gz"));
    }
}
