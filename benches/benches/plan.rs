//! Planning time for the largest real-world Dockerfile (BuildKit's own,
//! ~20 KB, dozens of stages): parse once, then `kiln_graph::plan` per
//! iteration. Planning is meant to cost microseconds.

use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use kiln_graph::{plan, PlanOptions};

fn largest_real_world() -> (String, String) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance/real-world");
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "Dockerfile"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p.file_name().unwrap().to_string_lossy().into_owned(), text)
        })
        .max_by_key(|(_, text)| text.len())
        .expect("real-world corpus is empty")
}

fn plan_largest(c: &mut Criterion) {
    let (name, text) = largest_real_world();
    let dockerfile = kiln_dockerfile::parse(&text).unwrap();
    let options = PlanOptions::default();
    let graph = plan(&dockerfile, &options).unwrap();
    eprintln!(
        "{name}: {} bytes, {} stages, {} nodes planned",
        text.len(),
        graph.stages.len(),
        graph.nodes.len()
    );
    c.bench_function("plan/largest real-world Dockerfile", |b| {
        b.iter(|| std::hint::black_box(plan(&dockerfile, &options).unwrap()))
    });
    c.bench_function("parse+plan/largest real-world Dockerfile", |b| {
        b.iter(|| {
            let dockerfile = kiln_dockerfile::parse(&text).unwrap();
            std::hint::black_box(plan(&dockerfile, &options).unwrap())
        })
    });
}

criterion_group!(benches, plan_largest);
criterion_main!(benches);
