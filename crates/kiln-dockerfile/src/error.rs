//! Parse errors: one per problem, with the position it concerns and an
//! optional hint, plus a renderer that shows the offending line and a caret.

use std::fmt;

use crate::ast::Position;

/// Why a Dockerfile was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ParseError {
    pub message: String,
    /// Where the problem is; column 0 means "the whole line".
    pub position: Position,
    /// The last line of the instruction concerned, when it spans several.
    pub end_line: u32,
    /// What the user can do about it.
    pub hint: Option<String>,
}

impl ParseError {
    pub(crate) fn new(message: impl Into<String>, position: Position) -> ParseError {
        ParseError {
            message: message.into(),
            position,
            end_line: position.line,
            hint: None,
        }
    }

    pub(crate) fn at_line(message: impl Into<String>, line: u32) -> ParseError {
        Self::new(message, Position { line, column: 0 })
    }

    pub(crate) fn with_hint(mut self, hint: impl Into<String>) -> ParseError {
        self.hint = Some(hint.into());
        self
    }

    pub(crate) fn with_end_line(mut self, end_line: u32) -> ParseError {
        self.end_line = end_line.max(self.position.line);
        self
    }

    /// `file:line:column: message`, then the offending source line with a
    /// caret under the column, then `hint: ...` when there is one.
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

/// Renders any problem located in a Dockerfile the way parse errors are
/// shown: `file:line:column: message`, the source line with a caret under
/// the column (column 0 points at the line's first non-blank), and
/// `hint: ...`. Later stages (planning, building) use it for their errors so
/// every Dockerfile problem looks the same.
pub fn render_diagnostic(
    file: &str,
    source: &str,
    position: Position,
    message: &str,
    hint: Option<&str>,
) -> String {
    let Position { line, column } = position;
    // Line 0: the problem is the file's as a whole (a missing target
    // stage), not any line of it.
    let mut out = if line == 0 {
        format!("{file}: {message}")
    } else if column > 0 {
        format!("{file}:{line}:{column}: {message}")
    } else {
        format!("{file}:{line}: {message}")
    };
    if let Some(text) = source_line(source, line) {
        let shown = truncate_for_display(text, column as usize);
        out.push_str(&format!("\n{line:>5} | {}", shown.text));
        let caret_at = if column > 0 {
            shown.caret_column
        } else {
            shown.text.chars().take_while(|c| c.is_whitespace()).count()
        };
        out.push_str(&format!("\n      | {}^", " ".repeat(caret_at)));
    }
    if let Some(hint) = hint {
        out.push_str(&format!("\nhint: {hint}"));
    }
    out
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.position.column > 0 {
            write!(
                f,
                "line {}:{}: {}",
                self.position.line, self.position.column, self.message
            )
        } else {
            write!(f, "line {}: {}", self.position.line, self.message)
        }
    }
}

fn source_line(source: &str, line: u32) -> Option<&str> {
    let text = source
        .strip_prefix('\u{feff}')
        .unwrap_or(source)
        .split('\n')
        .nth(line.checked_sub(1)? as usize)?;
    Some(text.trim_end_matches(['\r', '\n']))
}

struct Shown {
    text: String,
    /// Caret position, in characters of `text`.
    caret_column: usize,
}

/// Shows at most ~100 characters around the byte column so that a 1 MB line
/// does not flood the terminal; control characters become `?`.
fn truncate_for_display(line: &str, byte_column: usize) -> Shown {
    const WIDTH: usize = 100;
    let byte_index = byte_column.saturating_sub(1).min(line.len());
    let char_index = line
        .char_indices()
        .take_while(|(i, _)| *i < byte_index)
        .count();
    let total = line.chars().count();
    let start = char_index
        .saturating_sub(WIDTH / 2)
        .min(total.saturating_sub(WIDTH));
    let mut text: String = line
        .chars()
        .skip(start)
        .take(WIDTH)
        .map(|c| {
            if c.is_control() && c != '\t' {
                '?'
            } else if c == '\t' {
                ' '
            } else {
                c
            }
        })
        .collect();
    let mut caret_column = char_index - start;
    if start > 0 {
        text.insert_str(0, "...");
        caret_column += 3;
    }
    if start + WIDTH < total {
        text.push_str("...");
    }
    Shown { text, caret_column }
}
