//! The planning rules, one test each: stages and references, pruning,
//! ARG/ENV scoping (including the examples of Docker's reference), image
//! config effects, ONBUILD, cache inputs, and errors with positions.

use std::collections::BTreeMap;

use kiln_graph::{
    plan, Base, BuildGraph, ImageConfig, Network, Node, Op, PlanError, PlanOptions, Platform,
    Source, SourceRef,
};

fn options(args: &[(&str, &str)]) -> PlanOptions {
    PlanOptions {
        build_args: args
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        platform: Platform::parse("linux/arm64").unwrap(),
        build_platform: Platform::parse("linux/amd64").unwrap(),
        ..PlanOptions::default()
    }
}

fn plan_with(text: &str, options: &PlanOptions) -> Result<BuildGraph, PlanError> {
    let dockerfile = kiln_dockerfile::parse(text).expect("test Dockerfile parses");
    plan(&dockerfile, options)
}

fn ok(text: &str) -> BuildGraph {
    plan_with(text, &options(&[])).unwrap_or_else(|e| panic!("{e}"))
}

fn ok_with(text: &str, args: &[(&str, &str)]) -> BuildGraph {
    plan_with(text, &options(args)).unwrap_or_else(|e| panic!("{e}"))
}

fn err(text: &str) -> PlanError {
    match plan_with(text, &options(&[])) {
        Ok(_) => panic!("planned without error:\n{text}"),
        Err(e) => e,
    }
}

/// The node on `line` of the target stage's nodes (or any needed stage).
fn at_line(graph: &BuildGraph, line: u32) -> &Node {
    graph
        .nodes
        .iter()
        .find(|n| n.line == line && !n.trigger)
        .unwrap_or_else(|| panic!("no node on line {line}"))
}

fn run_env(node: &Node) -> BTreeMap<&str, &str> {
    node.inputs
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

fn final_config(graph: &BuildGraph) -> &ImageConfig {
    &graph.stages[graph.target].image.config
}

// ---- stages ----

#[test]
fn stages_by_name_index_scratch_and_image() {
    let g = ok("FROM debian:12 AS Base\n\
                FROM base AS build\n\
                RUN make\n\
                FROM scratch\n\
                COPY --from=build /out /out\n\
                COPY --from=0 /etc/os-release /\n\
                COPY --from=alpine:3 /bin/sh /sh\n");
    assert_eq!(g.stages.len(), 3);
    assert_eq!(g.stages[0].name.as_deref(), Some("base"));
    assert_eq!(g.stages[0].base, Base::Image("debian:12".into()));
    assert_eq!(g.stages[1].base, Base::Stage(0));
    assert_eq!(g.stages[2].base, Base::Scratch);
    let Op::Copy(by_name) = &at_line(&g, 5).op else {
        panic!()
    };
    assert_eq!(by_name.from, Some(SourceRef::Stage(1)));
    let Op::Copy(by_index) = &at_line(&g, 6).op else {
        panic!()
    };
    assert_eq!(by_index.from, Some(SourceRef::Stage(0)));
    let Op::Copy(image) = &at_line(&g, 7).op else {
        panic!()
    };
    assert_eq!(image.from, Some(SourceRef::Image("alpine:3".into())));
    assert_eq!(
        g.images.iter().collect::<Vec<_>>(),
        ["alpine:3", "debian:12"]
    );
    // The build stage's FROM builds on the base stage's last node.
    let from_build = &g.nodes[g.stages[1].nodes[0]];
    assert_eq!(from_build.parent, g.stage_result(0));
    // COPY --from waits for the build stage's result.
    assert!(g
        .dependencies(at_line(&g, 5).id)
        .contains(&g.stage_result(1).unwrap()));
}

#[test]
fn from_platform_uses_build_platform_args() {
    let g = ok("FROM --platform=$BUILDPLATFORM golang AS build\n\
                ARG TARGETARCH\n\
                RUN GOARCH=$TARGETARCH go build\n\
                FROM alpine\n\
                COPY --from=build /app /app\n");
    assert_eq!(g.stages[0].platform.to_string(), "linux/amd64");
    assert_eq!(g.stages[1].platform.to_string(), "linux/arm64");
    // TARGETARCH is the build's target, even in a stage on the build platform.
    assert_eq!(run_env(at_line(&g, 3))["TARGETARCH"], "arm64");
}

#[test]
fn platform_args_are_not_visible_in_a_stage_until_declared() {
    let g = ok("FROM alpine\nRUN echo $TARGETOS\nARG TARGETOS\nRUN echo $TARGETOS\n");
    assert!(!run_env(at_line(&g, 2)).contains_key("TARGETOS"));
    assert_eq!(run_env(at_line(&g, 4))["TARGETOS"], "linux");
}

// ---- pruning ----

#[test]
fn without_target_only_the_last_stage_and_its_inputs_are_planned() {
    let g = ok("FROM alpine AS unused\nRUN sleep 100\n\
                FROM alpine AS lib\nRUN make lib\n\
                FROM alpine AS tools\n\
                FROM alpine\nCOPY --from=lib /lib /lib\n\
                RUN --mount=type=bind,from=tools,target=/t /t/run\n");
    let needed: Vec<&str> = g
        .stages
        .iter()
        .filter(|s| s.needed)
        .map(|s| s.name.as_deref().unwrap_or("-"))
        .collect();
    assert_eq!(needed, ["lib", "tools", "-"]);
    assert_eq!(g.pruned().map(|s| s.id).collect::<Vec<_>>(), [0]);
    assert!(g.nodes.iter().all(|n| n.stage != 0));
}

#[test]
fn target_selects_a_stage_and_prunes_later_ones() {
    let text = "FROM alpine AS a\nRUN a\nFROM a AS b\nRUN b\nFROM alpine AS c\nRUN c\n";
    let mut opts = options(&[]);
    opts.target = Some("B".into());
    let g = plan_with(text, &opts).unwrap();
    assert_eq!(g.target, 1);
    assert_eq!(g.pruned().map(|s| s.id).collect::<Vec<_>>(), [2]);
    opts.target = Some("nope".into());
    let e = plan_with(text, &opts).unwrap_err();
    assert!(
        e.message
            .contains("target stage \"nope\" could not be found"),
        "{e}"
    );
    assert!(e.hint.unwrap().contains("a, b, c"));
}

#[test]
fn errors_in_pruned_stages_are_not_reported() {
    let g = ok("FROM alpine AS broken\nENV X=\"${MISSING:?must be set}\"\nFROM alpine\nRUN ok\n");
    assert!(!g.stages[0].needed);
    let e = err("FROM alpine AS broken\nENV X=\"${MISSING:?must be set}\"\nFROM broken\n");
    assert_eq!(e.position.line, 2);
    assert!(e.message.contains("must be set"), "{e}");
}

// ---- ARG and ENV ----

#[test]
fn global_args_are_for_from_lines_until_redeclared() {
    // Docker reference, "Understand how ARG and FROM interact".
    let text = "ARG VERSION=latest\nFROM busybox:$VERSION\nRUN echo $VERSION\nARG VERSION\nRUN echo $VERSION\n";
    let g = ok(text);
    assert_eq!(g.stages[0].base, Base::Image("busybox:latest".into()));
    assert!(!run_env(at_line(&g, 3)).contains_key("VERSION"));
    assert_eq!(run_env(at_line(&g, 5))["VERSION"], "latest");
    let g = ok_with(text, &[("VERSION", "1.36")]);
    assert_eq!(g.stages[0].base, Base::Image("busybox:1.36".into()));
    assert_eq!(run_env(at_line(&g, 5))["VERSION"], "1.36");
}

#[test]
fn arg_is_usable_from_its_line_on() {
    // Docker reference, "Scope".
    let text = "FROM busybox\nUSER ${username:-some_user}\nARG username\nUSER $username\n";
    let g = ok_with(text, &[("username", "what_user")]);
    assert_eq!(at_line(&g, 2).config.user, "some_user");
    assert_eq!(at_line(&g, 4).config.user, "what_user");
}

#[test]
fn env_overrides_arg() {
    // Docker reference, "Using ARG variables".
    let text = "FROM ubuntu\nARG CONT_IMG_VER\nENV CONT_IMG_VER=v1.0.0\nRUN echo $CONT_IMG_VER\n";
    let g = ok_with(text, &[("CONT_IMG_VER", "v2.0.1")]);
    assert_eq!(run_env(at_line(&g, 4))["CONT_IMG_VER"], "v1.0.0");
    let text = "FROM ubuntu\nARG CONT_IMG_VER\nENV CONT_IMG_VER=${CONT_IMG_VER:-v1.0.0}\nRUN echo $CONT_IMG_VER\n";
    assert_eq!(
        run_env(at_line(&ok_with(text, &[("CONT_IMG_VER", "v2.0.1")]), 4))["CONT_IMG_VER"],
        "v2.0.1"
    );
    assert_eq!(run_env(at_line(&ok(text), 4))["CONT_IMG_VER"], "v1.0.0");
}

#[test]
fn defaults_and_build_arg_overrides() {
    let text = "FROM alpine\nARG A=one B=\"two words\" C\nRUN x\n";
    let env_default = run_env(at_line(&ok(text), 3))
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect::<BTreeMap<_, _>>();
    assert_eq!(env_default["A"], "one");
    assert_eq!(env_default["B"], "two words");
    assert!(
        !env_default.contains_key("C"),
        "an ARG without value is unset"
    );
    let g = ok_with(text, &[("A", "uno"), ("C", "tres")]);
    assert_eq!(run_env(at_line(&g, 3))["A"], "uno");
    assert_eq!(run_env(at_line(&g, 3))["C"], "tres");
}

#[test]
fn args_are_inherited_by_stages_built_on_a_stage() {
    let g = ok("FROM alpine AS base\nARG MODE=release\nFROM base\nRUN build --$MODE\n");
    assert_eq!(run_env(at_line(&g, 4))["MODE"], "release");
}

#[test]
fn env_pairs_see_the_values_from_before_the_line() {
    let g = ok("FROM alpine\nENV a=old\nENV a=x b=$a\nENV c=$a\n");
    let config = final_config(&g);
    assert_eq!(config.env_value("b"), Some("old"));
    assert_eq!(config.env_value("c"), Some("x"));
    assert_eq!(config.env, ["a=x", "b=old", "c=x"]);
}

#[test]
fn base_image_env_is_visible_to_expansion() {
    let mut opts = options(&[]);
    let mut golang = ImageConfig::default();
    golang.set_env("GOPATH", "/go");
    opts.base_configs.insert("golang:1.22".into(), golang);
    let g = plan_with("FROM golang:1.22\nWORKDIR $GOPATH/src/app\n", &opts).unwrap();
    assert_eq!(final_config(&g).working_dir, "/go/src/app");
}

#[test]
fn proxy_args_reach_run_but_not_keys() {
    let g = ok_with(
        "FROM alpine\nARG V=1\nRUN curl x\n",
        &[("HTTP_PROXY", "http://p:3128")],
    );
    let run = at_line(&g, 3);
    assert_eq!(
        run.inputs.proxy_env,
        [("HTTP_PROXY".to_owned(), "http://p:3128".to_owned())]
    );
    assert_eq!(run.inputs.build_args, [("V".to_owned(), "1".to_owned())]);
    assert!(!run.history.as_ref().unwrap().created_by.contains("PROXY"));
    assert!(g.warnings.is_empty(), "{:?}", g.warnings);
}

#[test]
fn undeclared_build_args_are_reported() {
    let g = ok_with("FROM alpine\nARG USED\n", &[("USED", "1"), ("TYPO", "2")]);
    let messages: Vec<&str> = g.warnings.iter().map(|w| w.message.as_str()).collect();
    assert_eq!(messages.len(), 1);
    assert!(messages[0].contains("TYPO"), "{messages:?}");
}

#[test]
fn non_run_steps_key_only_on_the_args_they_reference() {
    let g = ok("FROM alpine\nARG A=1 B=2\nCOPY $A.txt /\nLABEL x=y\nRUN true\n");
    assert_eq!(
        at_line(&g, 3).inputs.build_args,
        [("A".to_owned(), "1".to_owned())]
    );
    assert!(at_line(&g, 4).inputs.build_args.is_empty());
    assert_eq!(
        at_line(&g, 5).inputs.build_args.len(),
        2,
        "RUN sees every declared arg"
    );
    // As BuildKit: `ARG A=1 B=2`, an empty layer (differential suite,
    // case arg-history).
    let arg = at_line(&g, 2).history.as_ref().unwrap();
    assert_eq!(
        (arg.created_by.as_str(), arg.empty_layer),
        ("ARG A=1 B=2", true)
    );
}

#[test]
fn history_lines_are_written_as_buildkit_writes_them() {
    // Each line as Docker 20.10's BuildKit wrote it for the same
    // Dockerfile (the differential suite's cases arg-history, cmd-*,
    // shell, volume, copy-relative-dest); Go's %q and %v of lists.
    let g = ok_with(
        "FROM alpine\n\
         ARG V=1 W\n\
         ARG X=$V-x\n\
         WORKDIR /app\n\
         COPY a.txt rel/\n\
         SHELL [\"/bin/sh\", \"-ec\"]\n\
         VOLUME [\"/a\", \"/b c\"]\n\
         CMD echo \"hi there\"\n\
         ENTRYPOINT [\"/bin/sh\", \"-c\"]\n",
        &[("W", "cli"), ("V", "cli")],
    );
    let lines: Vec<&str> = g.stages[0]
        .image
        .history
        .iter()
        .map(|h| h.created_by.as_str())
        .collect();
    assert_eq!(
        lines,
        [
            "ARG V=1 W",
            "ARG X=cli-x",
            "WORKDIR /app",
            "COPY a.txt rel/ # buildkit",
            "SHELL [/bin/sh -ec]",
            "VOLUME [/a /b c]",
            r#"CMD ["/bin/sh" "-ec" "echo \"hi there\""]"#,
            r#"ENTRYPOINT ["/bin/sh" "-c"]"#,
        ]
    );
    let c = final_config(&g);
    assert!(c.args_escaped, "CMD sets ArgsEscaped, as BuildKit");
}

#[test]
fn run_history_shows_the_env_value_of_an_arg_env_hides() {
    // Case env-overrides-arg: BuildKit writes the value RUN sees.
    let g = ok_with(
        "FROM alpine\nARG V=arg\nENV V=env\nRUN true\n",
        &[("V", "cli")],
    );
    assert_eq!(
        at_line(&g, 4).history.as_ref().unwrap().created_by,
        "RUN |1 V=env /bin/sh -c true # buildkit"
    );
}

#[test]
fn empty_cmd_and_entrypoint_are_unset() {
    // BuildKit stores `CMD []` and `ENTRYPOINT []` as null (case cmd-empty).
    let g = ok("FROM alpine\nCMD [\"x\"]\nENTRYPOINT []\nCMD []\n");
    let c = final_config(&g);
    assert_eq!((c.cmd.as_ref(), c.entrypoint.as_ref()), (None, None));
}

// ---- config effects ----

#[test]
fn workdir_is_relative_to_the_previous_one() {
    let g = ok("FROM alpine\nWORKDIR /a\nWORKDIR b\nWORKDIR ../c\nCOPY x.txt ./\nCOPY y.txt rel\n");
    assert_eq!(final_config(&g).working_dir, "/a/c");
    let Op::Copy(copy) = &at_line(&g, 5).op else {
        panic!()
    };
    assert_eq!(copy.dest, "/a/c/");
    let Op::Copy(copy) = &at_line(&g, 6).op else {
        panic!()
    };
    assert_eq!(copy.dest, "/a/c/rel");
    assert_eq!(at_line(&g, 6).inputs.workdir, "/a/c");
}

#[test]
fn an_absolute_workdir_is_recorded_as_written() {
    // BuildKit keeps `/app/` (config and history); the directory made and
    // the paths joined to it are clean.
    let g = ok("FROM alpine\nWORKDIR /app/\nCOPY x.txt ./\nWORKDIR sub/\n");
    let node = at_line(&g, 2);
    assert_eq!(node.config.working_dir, "/app/");
    assert_eq!(node.history.as_ref().unwrap().created_by, "WORKDIR /app/");
    assert!(matches!(&node.op, Op::Workdir { path } if path == "/app"));
    let Op::Copy(copy) = &at_line(&g, 3).op else {
        panic!()
    };
    assert_eq!(copy.dest, "/app/");
    assert_eq!(final_config(&g).working_dir, "/app/sub");
}

#[test]
fn scratch_starts_with_the_default_path_and_root_workdir() {
    let g = ok("FROM scratch\nCOPY x /\n");
    let config = final_config(&g);
    assert_eq!(
        config.env,
        ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    );
    assert_eq!(config.working_dir, "/");
}

#[test]
fn run_history_lists_args_without_a_value() {
    // `RUN |2 A=1 B= ...`, as BuildKit writes it; only A is in the
    // environment.
    let g = ok("FROM alpine\nARG A=1\nARG B\nRUN true\n");
    let node = at_line(&g, 4);
    assert_eq!(
        node.history.as_ref().unwrap().created_by,
        "RUN |2 A=1 B= /bin/sh -c true # buildkit"
    );
    assert!(!run_env(node).contains_key("B"));
}

#[test]
fn metadata_instructions_fill_the_config() {
    let g = ok("FROM alpine\n\
                USER app:app\n\
                LABEL a=1 \"b c\"=\"d e\"\n\
                EXPOSE 80 53/udp 8000-8001\n\
                VOLUME [\"/data\", \"/logs\"]\n\
                VOLUME /cache\n\
                STOPSIGNAL SIGQUIT\n\
                MAINTAINER someone\n");
    let c = final_config(&g);
    assert_eq!(c.user, "app:app");
    assert_eq!(c.labels["b c"], "d e");
    assert_eq!(
        c.exposed_ports.keys().collect::<Vec<_>>(),
        ["53/udp", "80/tcp", "8000/tcp", "8001/tcp"]
    );
    assert_eq!(
        c.volumes.keys().collect::<Vec<_>>(),
        ["/cache", "/data", "/logs"]
    );
    assert_eq!(c.stop_signal, "SIGQUIT");
    assert_eq!(g.stages[0].image.author.as_deref(), Some("someone"));
    let history: Vec<_> = g.stages[0]
        .image
        .history
        .iter()
        .map(|h| h.empty_layer)
        .collect();
    assert_eq!(history, [true; 7]);
}

#[test]
fn cmd_and_entrypoint_use_shell_and_reset_rules() {
    let mut opts = options(&[]);
    let base = ImageConfig {
        cmd: Some(vec!["bash".into()]),
        ..ImageConfig::default()
    };
    opts.base_configs.insert("base".into(), base);
    // A new ENTRYPOINT drops the base image's CMD ...
    let g = plan_with("FROM base\nENTRYPOINT [\"/init\"]\n", &opts).unwrap();
    assert_eq!(final_config(&g).cmd, None);
    // ... but not a CMD set in this stage.
    let g = plan_with("FROM base\nCMD [\"x\"]\nENTRYPOINT [\"/init\"]\n", &opts).unwrap();
    assert_eq!(final_config(&g).cmd, Some(vec!["x".to_owned()]));
    // Shell form goes through SHELL.
    let g = plan_with(
        "FROM base\nSHELL [\"/bin/bash\", \"-o\", \"pipefail\", \"-c\"]\nCMD echo hi\n",
        &opts,
    )
    .unwrap();
    assert_eq!(
        final_config(&g).cmd.as_deref().unwrap(),
        ["/bin/bash", "-o", "pipefail", "-c", "echo hi"]
    );
    assert_eq!(final_config(&g).shell.as_ref().unwrap().len(), 4);
}

#[test]
fn healthcheck_options_and_none() {
    let g = ok("FROM alpine\nHEALTHCHECK --interval=30s --timeout=5s --start-period=1m --start-interval=2s --retries=3 CMD curl -f http://localhost/\n");
    let h = final_config(&g).healthcheck.clone().unwrap();
    assert_eq!(h.test, ["CMD-SHELL", "curl -f http://localhost/"]);
    assert_eq!(
        (
            h.interval,
            h.timeout,
            h.start_period,
            h.start_interval,
            h.retries
        ),
        (
            30_000_000_000,
            5_000_000_000,
            60_000_000_000,
            2_000_000_000,
            3
        )
    );
    let g = ok("FROM alpine\nHEALTHCHECK CMD [\"/check\", \"-q\"]\nHEALTHCHECK NONE\n");
    assert_eq!(
        final_config(&g).healthcheck.as_ref().unwrap().test,
        ["NONE"]
    );
    assert_eq!(
        at_line(&g, 2).config.healthcheck.as_ref().unwrap().test,
        ["CMD", "/check", "-q"]
    );
}

#[test]
fn onbuild_is_recorded_and_base_triggers_run_after_from() {
    let g = ok(
        "FROM alpine AS base\nONBUILD COPY . /app\nONBUILD RUN make -C /app\nFROM base\nRUN test\n",
    );
    assert_eq!(
        g.stages[0].image.config.on_build,
        ["COPY . /app", "RUN make -C /app"]
    );
    // As BuildKit: ONBUILD changes the config only, with no history entry
    // (found by the differential suite, case onbuild-parent).
    let history: Vec<&str> = g.stages[0]
        .image
        .history
        .iter()
        .map(|h| h.created_by.as_str())
        .collect();
    assert!(history.is_empty(), "{history:?}");
    let stage = &g.stages[1];
    let displays: Vec<(&str, bool)> = stage
        .nodes
        .iter()
        .map(|&id| (g.nodes[id].display.as_str(), g.nodes[id].trigger))
        .collect();
    assert_eq!(
        displays,
        [
            ("FROM base", false),
            ("COPY . /app", true),
            ("RUN make -C /app", true),
            ("RUN test", false)
        ]
    );
    assert!(
        stage.image.config.on_build.is_empty(),
        "triggers are not inherited"
    );
    // Triggers from a base image config too.
    let mut opts = options(&[]);
    let onbuild = ImageConfig {
        on_build: vec!["RUN echo triggered".into()],
        ..ImageConfig::default()
    };
    opts.base_configs.insert("python:onbuild".into(), onbuild);
    let g = plan_with("FROM python:onbuild\nRUN app\n", &opts).unwrap();
    let trigger = &g.nodes[1];
    assert!(trigger.trigger);
    assert_eq!(trigger.line, 1);
    let Op::Run(run) = &trigger.op else { panic!() };
    assert_eq!(run.argv, ["/bin/sh", "-c", "echo triggered"]);
}

// ---- RUN and COPY inputs ----

#[test]
fn mounts_without_a_target_mount_at_the_workdir() {
    // BuildKit: bind, cache and tmpfs mounts need no target (they mount at
    // the WORKDIR); a cache mount's default id is its target as written,
    // cleaned (`.` when there is none), not where it mounts.
    let g = ok("FROM alpine\nWORKDIR /src\n\
                RUN --mount=type=bind --mount=type=cache --mount=type=tmpfs \
                --mount=type=cache,target=deps/ --mount=type=cache,target=/abs/./c/ make\n");
    let node = at_line(&g, 3);
    let Op::Run(run) = &node.op else { panic!() };
    let targets: Vec<&str> = run.mounts.iter().map(|m| m.target.as_str()).collect();
    assert_eq!(targets, ["/src", "/src", "/src", "/src/deps", "/abs/c"]);
    for id in [".", "deps", "/abs/c"] {
        assert!(
            node.inputs
                .sources
                .contains(&Source::CacheMount { id: id.into() }),
            "cache id {id:?} in {:?}",
            node.inputs.sources
        );
    }
}

#[test]
fn run_op_mounts_network_and_history() {
    let g = ok("FROM alpine AS deps\nFROM alpine\nARG V=1\nWORKDIR /src\n\
                RUN --network=none --mount=type=cache,target=.cache,id=c1 --mount=type=bind,from=deps,source=/lib,target=/deps --mount=type=secret,id=token make\n");
    let node = at_line(&g, 5);
    let Op::Run(run) = &node.op else { panic!() };
    assert_eq!(run.network, Network::None);
    assert_eq!(run.argv, ["/bin/sh", "-c", "make"]);
    assert_eq!(run.mounts[0].target, "/src/.cache");
    assert!(!run.mounts[0].read_only);
    assert!(
        run.mounts[1].read_only,
        "bind mounts are read-only by default"
    );
    assert_eq!(run.mounts[2].target, "/run/secrets/token");
    assert!(node
        .inputs
        .sources
        .contains(&Source::CacheMount { id: "c1".into() }));
    assert!(node.inputs.sources.contains(&Source::Stage {
        stage: 0,
        paths: vec!["/lib".into()]
    }));
    assert!(g.stages[0].needed, "a mount's from= stage is needed");
    assert_eq!(
        node.history.as_ref().unwrap().created_by,
        "RUN |1 V=1 /bin/sh -c make # buildkit"
    );
}

#[test]
fn copy_sources_heredocs_and_flags() {
    let g = ok("FROM alpine\nARG NAME=world\n\
                COPY --chown=app:app --chmod=0755 --link --exclude=*.md src/ docs/ /app/\n\
                COPY <<EOF /greeting\nhello $NAME\nEOF\n\
                COPY <<'EOF' /raw\nhello $NAME\nEOF\n\
                ADD --checksum=sha256:abc https://example.com/a.tgz /x/\n");
    let copy = at_line(&g, 3);
    let Op::Copy(op) = &copy.op else { panic!() };
    assert_eq!(op.sources, ["src/", "docs/"]);
    assert_eq!(op.dest, "/app/");
    assert_eq!(
        (
            op.chown.as_deref(),
            op.chmod.as_ref().map(|c| c.as_str()),
            op.link
        ),
        (Some("app:app"), Some("0755"), true)
    );
    assert_eq!(op.excludes, ["*.md"]);
    assert_eq!(
        copy.inputs.sources,
        [Source::Context {
            paths: vec!["src/".into(), "docs/".into()]
        }]
    );
    let Op::Copy(heredoc) = &at_line(&g, 4).op else {
        panic!()
    };
    assert_eq!(heredoc.heredocs[0].content, "hello world\n");
    assert_eq!(
        at_line(&g, 4).inputs.build_args,
        [("NAME".to_owned(), "world".to_owned())]
    );
    let Op::Copy(raw) = &at_line(&g, 7).op else {
        panic!()
    };
    assert_eq!(raw.heredocs[0].content, "hello $NAME\n");
    let add = at_line(&g, 10);
    assert_eq!(
        add.inputs.sources,
        [Source::Url {
            url: "https://example.com/a.tgz".into(),
            checksum: Some("sha256:abc".into())
        }]
    );
}

// ---- errors ----

fn assert_error(text: &str, line: u32, column: u32, needle: &str) {
    let e = err(text);
    assert!(
        e.message.contains(needle),
        "{e:?} should mention {needle:?}"
    );
    assert_eq!(
        (e.position.line, e.position.column),
        (line, column),
        "{e:?}"
    );
}

#[test]
fn errors_name_their_position() {
    assert_error("FROM alpine\nRUNN make\n", 2, 1, "unknown instruction");
    assert_error("FROM alpine\nCOPY --form=x a b\n", 2, 6, "unknown flag");
    assert_error(
        "FROM alpine AS a\nFROM b AS c\nFROM alpine AS b\n",
        2,
        6,
        "defined after it",
    );
    assert_error("FROM a AS a\n", 1, 6, "itself");
    assert_error(
        "FROM alpine AS b\nCOPY --from=c /x /x\nFROM alpine AS c\nFROM b\n",
        2,
        6,
        "defined later",
    );
    assert_error(
        "FROM alpine AS a\nCOPY --from=a /x /x\n",
        2,
        6,
        "current stage",
    );
    assert_error("FROM alpine\nCOPY --from=5 /x /x\n", 2, 6, "only 1 stages");
    assert_error("FROM alpine\nSHELL /bin/bash -c\n", 2, 1, "JSON form");
    assert_error(
        "FROM alpine\nHEALTHCHECK --interval=10 CMD true\n",
        2,
        13,
        "missing unit",
    );
    assert_error(
        "FROM alpine\nHEALTHCHECK --timeout=10us CMD true\n",
        2,
        13,
        "less than 1ms",
    );
    assert_error(
        "FROM alpine\nHEALTHCHECK --retries=-1 CMD true\n",
        2,
        13,
        "negative",
    );
    assert_error(
        "FROM alpine\nONBUILD FROM x\n",
        2,
        9,
        "isn't allowed as an ONBUILD trigger",
    );
    assert_error(
        "FROM alpine\nONBUILD MAINTAINER me\n",
        2,
        9,
        "isn't allowed as an ONBUILD trigger",
    );
    assert_error(
        "FROM alpine\nONBUILD ONBUILD RUN x\n",
        2,
        9,
        "ONBUILD ONBUILD",
    );
    assert_error("FROM alpine\nEXPOSE 80/http\n", 2, 8, "invalid proto");
    assert_error("FROM alpine\nSTOPSIGNAL SIGNOPE\n", 2, 12, "invalid signal");
    assert_error("FROM alpine\nRUN --network=bridge x\n", 2, 5, "--network");
    assert_error(
        "FROM alpine\nRUN --mount=type=cache x\n",
        2,
        5,
        "invalid mount target \"/\"",
    );
    assert_error(
        "FROM alpine\nCOPY onlyone\n",
        2,
        1,
        "at least two arguments",
    );
    assert_error(
        "FROM alpine\nCOPY --from=a --from=b x y\n",
        2,
        15,
        "duplicate flag",
    );
    assert_error("RUN x\nFROM alpine\n", 1, 1, "before the first FROM");
    assert_error("ARG IMG\nFROM $IMG\n", 2, 6, "should not be blank");
    assert_error(
        "FROM alpine AS 1st\n",
        1,
        16,
        "invalid name for build stage",
    );
    assert_error(
        "FROM alpine AS x\nFROM alpine AS X\n",
        2,
        0,
        "duplicate stage name",
    );
    assert_error("FROM alpine\nENV A=${B:?required}\n", 2, 7, "required");
}

#[test]
fn errors_render_with_the_source_line() {
    let text = "FROM alpine\nSHELL /bin/bash -c\n";
    let rendered = err(text).render("Dockerfile", text);
    assert!(
        rendered.starts_with("Dockerfile:2:1: SHELL requires the arguments to be in JSON form"),
        "{rendered}"
    );
    assert!(
        rendered.contains("    2 | SHELL /bin/bash -c"),
        "{rendered}"
    );
    assert!(rendered.contains("hint: write SHELL"), "{rendered}");
}

#[test]
fn a_broken_trigger_of_the_base_is_reported_at_from() {
    let mut opts = options(&[]);
    let base = ImageConfig {
        on_build: vec!["FROM other".into()],
        ..ImageConfig::default()
    };
    opts.base_configs.insert("base:1".into(), base);
    let e = plan_with("# comment\nFROM base:1\nRUN x\n", &opts).unwrap_err();
    assert_eq!(e.position.line, 2);
    assert!(
        e.message
            .contains("ONBUILD trigger \"FROM other\" of the base image"),
        "{e}"
    );
}
