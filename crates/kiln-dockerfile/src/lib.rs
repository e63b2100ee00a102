//! The Dockerfile front end: turns Dockerfile text into an AST that keeps the
//! line and column of every instruction, flag and argument, and expands shell
//! words with Docker's rules. It never touches the filesystem: callers hand it
//! text and variables, so it can be tested and fuzzed with plain strings.
//!
//! The parser follows BuildKit's dockerfile:1 frontend exactly (see
//! [`dump`] for its dump format); checks that BuildKit leaves to the build
//! step (unknown instructions, unknown flags) are in [`validate`].

mod args;
pub mod ast;
pub mod directive;
pub mod dump;
mod error;
pub mod heredoc;
mod json;
pub mod lint;
mod parser;
pub mod shell;
mod validate;

pub use ast::*;
pub use directive::{detect_check, detect_syntax, parse_directives, DetectedDirective};
pub use dump::dump;
pub use error::{render_diagnostic, ParseError};
pub use lint::{lint, LintWarning};
pub use parser::{parse, parse_bytes, MAX_DOCKERFILE_BYTES, MAX_LINE_BYTES};
pub use validate::validate;
