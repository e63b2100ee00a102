//! Bounds on what planning holds in memory. Every expansion is already
//! capped (1 MiB, in kiln-dockerfile's shell module), but values add up:
//! each node keeps the image config after it (an `Arc` shared while a step
//! leaves the config alone, copied when ENV or LABEL change it), so a
//! stage of N config steps over a config of S bytes holds N x S, and a
//! variable that doubles itself (`ENV A=$A$A`) makes S large in a few lines
//! (a 1.2 KB Dockerfile needed 1.9 GB). Two limits keep that bounded:
//!
//! - [`MAX_CONFIG_BYTES`], the image config of one stage: 1 MiB. A RUN
//!   could not start with anywhere near that much environment anyway (Linux
//!   refuses an `execve` whose environment passes 2 MiB, or one string over
//!   128 KiB), real configs are a few KiB, and the store reads only blobs
//!   under 4 MiB as documents.
//! - [`MAX_PLAN_BYTES`], the expanded text and configs of the whole plan
//!   (each node's instruction, history entry, and config when it changed,
//!   plus [`NODE_OVERHEAD_BYTES`] for the node itself): 64 MiB, so a large
//!   config cannot be copied by hundreds of small steps, nor a 16 MiB
//!   Dockerfile of one-word instructions plan millions of nodes (it took
//!   2.1 GB; about 120,000 nodes fit, far more than any real Dockerfile).

use std::sync::Arc;

use crate::config::ImageConfig;
use crate::error::PlanError;
use crate::planner::DraftNode;

/// The largest image config a stage may have, in bytes of its strings.
pub const MAX_CONFIG_BYTES: usize = 1 << 20;

/// The most expanded text and config bytes a plan may hold.
pub const MAX_PLAN_BYTES: usize = 64 << 20;

/// What a node costs besides its strings (measured: about 850 bytes with
/// its inputs and the parsed instruction; counted low).
pub const NODE_OVERHEAD_BYTES: usize = 512;

/// The bytes of a config's strings (what its copies cost).
pub fn config_size(config: &ImageConfig) -> usize {
    let strings = |v: &[String]| v.iter().map(String::len).sum::<usize>();
    config.user.len()
        + config.exposed_ports.keys().map(String::len).sum::<usize>()
        + strings(&config.env)
        + config.entrypoint.as_deref().map_or(0, strings)
        + config.cmd.as_deref().map_or(0, strings)
        + config.volumes.keys().map(String::len).sum::<usize>()
        + config.working_dir.len()
        + config
            .labels
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>()
        + config.stop_signal.len()
        + config.healthcheck.as_ref().map_or(0, |h| strings(&h.test))
        + config.shell.as_deref().map_or(0, strings)
        + strings(&config.on_build)
}

/// What the plan holds so far.
#[derive(Default)]
pub(crate) struct Budget {
    used: usize,
}

impl Budget {
    /// Counts `node`, which follows a node whose config was `previous`;
    /// refuses it (naming its line) past either limit.
    pub(crate) fn charge(
        &mut self,
        node: &DraftNode,
        previous: &Arc<ImageConfig>,
    ) -> Result<(), PlanError> {
        let mut bytes = NODE_OVERHEAD_BYTES + node.display.len();
        if let Some(history) = &node.history {
            bytes += history.created_by.len() + history.comment.as_ref().map_or(0, String::len);
        }
        if !Arc::ptr_eq(&node.config, previous) {
            let size = config_size(&node.config);
            if size > MAX_CONFIG_BYTES {
                return Err(PlanError::at_line(
                    node.line,
                    format!(
                        "the image config would be {size} bytes, over kiln's limit of 1 MiB \
                         ({MAX_CONFIG_BYTES} bytes) for a stage"
                    ),
                )
                .hint(
                    "the values of a stage's ENV, LABEL and other settings add up; \
                     a variable that repeats itself ($A$A) doubles at every step",
                ));
            }
            bytes += size;
        }
        self.used = self.used.saturating_add(bytes);
        if self.used > MAX_PLAN_BYTES {
            return Err(PlanError::at_line(
                node.line,
                format!(
                    "planning would hold more than kiln's limit of 64 MiB ({MAX_PLAN_BYTES} bytes) \
                     of expanded instructions and image configs"
                ),
            )
            .hint("large variables repeated over many instructions, or a great many instructions, add up"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::{plan, PlanOptions};

    /// `ENV A=x`, then `ENV A=$A$A` `doublings` times, then `rest`.
    fn doubling(doublings: usize, rest: &str) -> String {
        let mut text = String::from("FROM scratch\nENV A=xxxxxxxxxxxxxxxx\n");
        text.push_str(&"ENV A=$A$A\n".repeat(doublings));
        text.push_str(rest);
        text
    }

    fn plan_text(text: &str) -> Result<crate::BuildGraph, crate::PlanError> {
        plan(
            &kiln_dockerfile::parse(text).unwrap(),
            &PlanOptions::default(),
        )
    }

    #[test]
    fn a_stage_config_over_the_limit_is_refused_at_its_line() {
        // 16 B doubled 15 times: A is 512 KiB, one copy in a label too many.
        let error = plan_text(&doubling(15, "LABEL big=$A\n")).unwrap_err();
        assert_eq!(error.position.line, 18);
        assert!(error.message.contains("1 MiB"), "{}", error.message);
        assert!(plan_text(&doubling(14, "LABEL big=$A\n")).is_ok());
    }

    #[test]
    fn a_plan_of_millions_of_nodes_is_refused() {
        let text = format!("FROM scratch\n{}", "RUN x\n".repeat(130_000));
        let error = plan_text(&text).unwrap_err();
        assert!(error.message.contains("64 MiB"), "{}", error.message);
        let text = format!("FROM scratch\n{}", "RUN x\n".repeat(10_000));
        assert!(plan_text(&text).is_ok());
    }

    #[test]
    fn many_small_steps_over_a_large_config_are_refused() {
        let error = plan_text(&doubling(15, &"LABEL x=y\n".repeat(300))).unwrap_err();
        assert!(error.message.contains("64 MiB"), "{}", error.message);
        assert!(plan_text(&doubling(15, &"LABEL x=y\n".repeat(50))).is_ok());
    }
}
