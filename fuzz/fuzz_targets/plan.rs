//! Any Dockerfile that parses must plan or give an error, never panic: the
//! planner's expansions, stage references and value parsers see the input.
#![no_main]

use kiln_graph::{plan, render, PlanOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(dockerfile) = kiln_dockerfile::parse_bytes(data) else {
        return;
    };
    if let Ok(graph) = plan(&dockerfile, &PlanOptions::default()) {
        let _ = render::text(&graph);
        let _ = render::dot(&graph);
    }
});
