//! Human views of a plan: the text `kiln plan` prints and Graphviz dot.

use std::fmt::Write;

use crate::graph::{Base, BuildGraph, Node, Op, Source, SourceRef, Stage};

/// The plan as text: each stage with its base and platform, each node with
/// its line, expanded instruction and dependencies, then what is pruned.
pub fn text(graph: &BuildGraph) -> String {
    let mut out = String::new();
    let needed: Vec<&Stage> = graph.stages.iter().filter(|s| s.needed).collect();
    let _ = writeln!(
        out,
        "target: {} (platform {}), {} of {} stages, {} steps",
        graph.stages[graph.target].label(),
        graph.platform,
        needed.len(),
        graph.stages.len(),
        graph.nodes.len()
    );
    for stage in needed {
        let _ = writeln!(
            out,
            "\nstage {} [{}] from {} ({}), line {}",
            stage.id,
            stage.label(),
            base_label(graph, &stage.base),
            stage.platform,
            stage.line
        );
        let total = stage.nodes.len();
        for (n, &id) in stage.nodes.iter().enumerate() {
            let node = &graph.nodes[id];
            // Numbered from 1, as `kiln build` numbers its steps.
            let _ = write!(
                out,
                "  #{:<3} {}/{} line {:<4} {}",
                id + 1,
                n + 1,
                total,
                node.line,
                node.display
            );
            if node.trigger {
                out.push_str("  (ONBUILD trigger)");
            }
            let extra = extra_dependencies(graph, node);
            if !extra.is_empty() {
                let _ = write!(out, "  <- {}", extra.join(", "));
            }
            out.push('\n');
        }
    }
    let pruned: Vec<String> = graph
        .pruned()
        .map(|s| format!("{} (line {})", s.label(), s.line))
        .collect();
    if !pruned.is_empty() {
        let _ = writeln!(
            out,
            "\npruned (not needed by the target): {}",
            pruned.join(", ")
        );
    }
    if !graph.images.is_empty() {
        let images: Vec<&str> = graph.images.iter().map(String::as_str).collect();
        let _ = writeln!(out, "\nimages: {}", images.join(", "));
    }
    out
}

fn base_label(graph: &BuildGraph, base: &Base) -> String {
    match base {
        Base::Scratch => "scratch".to_owned(),
        Base::Image(reference) => reference.clone(),
        Base::Stage(stage) => format!("stage {}", graph.stages[*stage].label()),
    }
}

/// Inputs other than the parent, as labels: `context`, `stage build`, images.
fn extra_dependencies(graph: &BuildGraph, node: &Node) -> Vec<String> {
    let mut labels = Vec::new();
    for source in &node.inputs.sources {
        let label = match source {
            Source::Context { .. } => "context".to_owned(),
            Source::Stage { stage, .. } => format!("stage {}", graph.stages[*stage].label()),
            Source::Image { reference, .. } => format!("image {reference}"),
            Source::Url { url, .. } => format!("url {url}"),
            Source::Git { url } => format!("git {url}"),
            Source::CacheMount { id } => format!("cache {id}"),
        };
        if !labels.contains(&label) {
            labels.push(label);
        }
    }
    labels
}

/// Graphviz: one cluster per needed stage, nodes in order, edges for
/// parents and for reads of other stages, images and the context.
pub fn dot(graph: &BuildGraph) -> String {
    let mut out = String::from(
        "digraph build {\n  rankdir=TB;\n  node [shape=box, fontname=\"monospace\"];\n",
    );
    for stage in graph.stages.iter().filter(|s| s.needed) {
        let _ = writeln!(
            out,
            "  subgraph cluster_{} {{\n    label={};",
            stage.id,
            quote(&stage.label())
        );
        for &id in &stage.nodes {
            let node = &graph.nodes[id];
            let _ = writeln!(out, "    n{id} [label={}];", quote(&shorten(&node.display)));
        }
        out.push_str("  }\n");
    }
    let mut externals = Vec::new();
    for node in &graph.nodes {
        if let Some(parent) = node.parent {
            let _ = writeln!(out, "  n{parent} -> n{};", node.id);
        }
        if let Op::From {
            base: Base::Image(reference),
            ..
        } = &node.op
        {
            externals.push((format!("image {reference}"), node.id));
        }
        if let Op::Copy(copy) = &node.op {
            if let Some(SourceRef::Stage(stage)) = copy.from {
                if let Some(result) = graph.stage_result(stage) {
                    let _ = writeln!(out, "  n{result} -> n{} [style=dashed];", node.id);
                }
            }
        }
        for source in &node.inputs.sources {
            match source {
                Source::Stage { stage, .. } if !matches!(&node.op, Op::Copy(_)) => {
                    if let Some(result) = graph.stage_result(*stage) {
                        let _ = writeln!(out, "  n{result} -> n{} [style=dashed];", node.id);
                    }
                }
                Source::Context { .. } => externals.push(("context".to_owned(), node.id)),
                Source::Image { reference, .. } => {
                    externals.push((format!("image {reference}"), node.id))
                }
                _ => {}
            }
        }
    }
    let mut declared: Vec<String> = Vec::new();
    for (label, node) in externals {
        if !declared.contains(&label) {
            let _ = writeln!(out, "  {} [shape=ellipse];", quote(&label));
            declared.push(label.clone());
        }
        let _ = writeln!(out, "  {} -> n{node} [style=dotted];", quote(&label));
    }
    out.push_str("}\n");
    out
}

fn shorten(text: &str) -> String {
    const MAX: usize = 60;
    if text.chars().count() <= MAX {
        return text.to_owned();
    }
    let mut short: String = text.chars().take(MAX - 3).collect();
    short.push_str("...");
    short
}

fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
