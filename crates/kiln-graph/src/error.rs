//! Planning errors: each names the Dockerfile position it concerns.

use kiln_dockerfile::{render_diagnostic, Position, Span};

/// Why a Dockerfile cannot be planned.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {}: {message}", position.line)]
pub struct PlanError {
    pub message: String,
    /// Where the problem is; column 0 means the whole line.
    pub position: Position,
    pub hint: Option<String>,
}

impl PlanError {
    pub(crate) fn at(span: Span, message: impl Into<String>) -> PlanError {
        PlanError {
            message: message.into(),
            position: span.start,
            hint: None,
        }
    }

    pub(crate) fn at_line(line: u32, message: impl Into<String>) -> PlanError {
        PlanError {
            message: message.into(),
            position: Position { line, column: 0 },
            hint: None,
        }
    }

    pub(crate) fn hint(mut self, hint: impl Into<String>) -> PlanError {
        self.hint = Some(hint.into());
        self
    }

    /// `file:line:column: message`, the source line with a caret, the hint.
    pub fn render(&self, file: &str, source: &str) -> String {
        render_diagnostic(
            file,
            source,
            self.position,
            &self.message,
            self.hint.as_deref(),
        )
    }
}

/// A problem that does not stop planning (an unused `--build-arg`...).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PlanWarning {
    pub message: String,
    /// The Dockerfile line concerned, 0 when it is about the invocation.
    pub line: u32,
}
