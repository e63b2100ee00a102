//! The line reader: physical lines to logical instructions. Owns parser
//! directives at the top, comments, line continuations (with the escape
//! character), empty-continuation warnings, heredoc bodies and the line
//! numbers of every instruction. Splitting one logical line into keyword,
//! flags and arguments is `args.rs`'s job.

use crate::args::{self, LineSource};
use crate::ast::{
    Arguments, Dockerfile, Heredoc, Instruction, InstructionKind, Position, Span, Warning,
};
use crate::directive::{escape_char, DirectiveParser};
use crate::error::ParseError;
use crate::heredoc::heredocs_in_line;

/// BuildKit reads lines with Go's `bufio.Scanner`, whose limit is 64 KiB per
/// line; longer lines are an error there, and so they are here.
pub const MAX_LINE_BYTES: usize = 64 * 1024 - 1;

/// The largest Dockerfile kiln parses: 16 MiB. BuildKit sets no limit of
/// its own, but its frontend receives the Dockerfile in one gRPC message,
/// and BuildKit's gRPC calls carry at most 16 MiB (containerd's
/// `DefaultMaxRecvMsgSize`): kiln reads what BuildKit can read. Readers
/// should stop after one byte more (`Read::take`), so that `/dev/zero` or a
/// huge file ends in this error instead of filling memory.
pub const MAX_DOCKERFILE_BYTES: usize = 16 << 20;

/// Where each piece of a joined logical line came from, so any offset in it
/// maps back to a line and column.
#[derive(Debug, Default)]
pub(crate) struct LineMap {
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, Copy)]
struct Segment {
    /// Offset of the piece in the joined line.
    joined: usize,
    line: u32,
    /// 0-based byte column of the piece's first byte in its physical line.
    column: u32,
}

impl LineMap {
    fn push(&mut self, joined: usize, line: u32, column: usize) {
        self.segments.push(Segment {
            joined,
            line,
            column: column as u32,
        });
    }

    /// The segment holding `offset`; at a boundary, `prefer_previous`
    /// picks the piece that ends there (for exclusive range ends).
    fn position(&self, offset: usize, prefer_previous: bool) -> Position {
        let index = self
            .segments
            .partition_point(|s| {
                if prefer_previous {
                    s.joined < offset
                } else {
                    s.joined <= offset
                }
            })
            .saturating_sub(1);
        match self.segments.get(index) {
            Some(s) => Position {
                line: s.line,
                column: s.column + (offset - s.joined.min(offset)) as u32 + 1,
            },
            None => Position::default(),
        }
    }

    pub(crate) fn span(&self, range: std::ops::Range<usize>) -> Span {
        let start = self.position(range.start, false);
        let end = if range.end > range.start {
            self.position(range.end, true)
        } else {
            start
        };
        Span { start, end }
    }
}

/// Physical lines with their numbers; enforces the line length limit.
struct Lines<'a> {
    rest: &'a str,
    number: u32,
}

struct Line<'a> {
    /// The line with its line ending, as in the source.
    raw: &'a str,
    /// The line without trailing `\r` / `\n` characters.
    text: &'a str,
    number: u32,
}

impl<'a> Lines<'a> {
    fn next(&mut self) -> Result<Option<Line<'a>>, ParseError> {
        if self.rest.is_empty() {
            return Ok(None);
        }
        let end = self.rest.find('\n').map_or(self.rest.len(), |i| i + 1);
        let (raw, rest) = self.rest.split_at(end);
        self.rest = rest;
        self.number += 1;
        let text = raw.trim_end_matches(['\r', '\n']);
        if text.len() > MAX_LINE_BYTES {
            return Err(ParseError::at_line(
                format!(
                    "line is {} bytes long; the maximum is {MAX_LINE_BYTES}",
                    text.len()
                ),
                self.number,
            )
            .with_hint("split the line with line continuations (a trailing \\)"));
        }
        Ok(Some(Line {
            raw,
            text,
            number: self.number,
        }))
    }
}

fn is_comment(text: &str) -> bool {
    text.trim_start().starts_with('#')
}

/// Strips a line continuation: the escape character at the end (trailing
/// spaces and tabs allowed) unless it is itself escaped. Returns the line
/// without it and whether the instruction ends on this line.
fn trim_continuation(line: &str, escape: char) -> (&str, bool) {
    let trimmed = line.trim_end_matches([' ', '\t']);
    if let Some(before) = trimmed.strip_suffix(escape) {
        if !before.ends_with(escape) {
            return (before, false);
        }
    }
    (line, true)
}

/// A NUL byte never occurs in text: such input is a binary file passed as a
/// Dockerfile by mistake, and parsing it would only produce pages of
/// nonsense instructions.
fn reject_binary(source: &str) -> Result<(), ParseError> {
    let Some(at) = source.find('\0') else {
        return Ok(());
    };
    let before = &source[..at];
    let line = before.matches('\n').count() as u32 + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = (at - line_start) as u32 + 1;
    Err(
        ParseError::new("not a text file (NUL byte)", Position { line, column })
            .with_hint("a Dockerfile must be UTF-8 text; check the file given with -f"),
    )
}

/// Parses Dockerfile text. Never panics; every rejection is one
/// [`ParseError`] naming the line (and column where known).
pub fn parse(source: &str) -> Result<Dockerfile, ParseError> {
    check_size(source.len())?;
    let source = source.strip_prefix('\u{feff}').unwrap_or(source);
    reject_binary(source)?;
    let mut lines = Lines {
        rest: source,
        number: 0,
    };
    let mut directives = DirectiveParser::new("#");
    let mut escape = '\\';
    let mut instructions = Vec::new();
    let mut warnings = Vec::new();

    while let Some(first) = lines.next()? {
        let stripped = first.text.trim_start();
        if let Some(directive) = directives.feed(stripped)? {
            if directive.name == "escape" {
                escape = escape_char(&directive.value, first.number)?;
            }
        }
        let content = if is_comment(stripped) { "" } else { stripped };
        let (piece, mut complete) = trim_continuation(content, escape);
        if complete && piece.is_empty() {
            continue;
        }
        let start_line = first.number;
        let mut end_line = first.number;
        let mut joined = String::from(piece);
        let mut map = LineMap::default();
        map.push(0, first.number, offset(first.text, piece));
        let mut empty_continuation = false;
        while !complete {
            let Some(next) = lines.next()? else { break };
            end_line = next.number;
            if is_comment(next.text) {
                continue;
            }
            if next.text.trim_start().is_empty() {
                empty_continuation = true;
                continue;
            }
            let (piece, done) = trim_continuation(next.text, escape);
            map.push(joined.len(), next.number, offset(next.text, piece));
            joined.push_str(piece);
            complete = done;
        }
        if empty_continuation {
            warnings.push(Warning {
                message: format!("Empty continuation line found in: {joined}"),
                detail: Some(
                    "Empty continuation lines will become errors in a future release".into(),
                ),
                line: end_line,
            });
        }

        let src = LineSource {
            line: &joined,
            map: &map,
            escape,
        };
        let mut instruction =
            args::instruction(&src, &joined, 0).map_err(|e| e.with_end_line(end_line))?;
        instruction.heredocs = read_heredocs(&instruction, &joined, &mut lines, &mut end_line)
            .map_err(|e| e.with_end_line(end_line))?;
        instruction.original = joined;
        set_lines(&mut instruction, start_line, end_line);
        warn_about(&instruction, &mut warnings);
        instructions.push(instruction);
    }

    if instructions.is_empty() {
        return Err(
            ParseError::at_line("file with no instructions", lines.number)
                .with_hint("a Dockerfile needs at least a FROM instruction"),
        );
    }
    Ok(Dockerfile {
        directives: directives.into_directives(),
        escape,
        instructions,
        warnings,
    })
}

/// Parses bytes that may not be UTF-8: invalid sequences become U+FFFD and
/// a warning names the first line that had one.
pub fn parse_bytes(bytes: &[u8]) -> Result<Dockerfile, ParseError> {
    check_size(bytes.len())?;
    match std::str::from_utf8(bytes) {
        Ok(text) => parse(text),
        Err(e) => {
            let line = bytes[..e.valid_up_to()]
                .iter()
                .filter(|&&b| b == b'\n')
                .count() as u32
                + 1;
            let text = String::from_utf8_lossy(bytes);
            let mut parsed = parse(&text)?;
            parsed.warnings.insert(
                0,
                Warning {
                    message: "invalid UTF-8 replaced by U+FFFD".into(),
                    detail: Some("Dockerfiles should be UTF-8 text".into()),
                    line,
                },
            );
            Ok(parsed)
        }
    }
}

fn offset(line: &str, piece: &str) -> usize {
    piece.as_ptr() as usize - line.as_ptr() as usize
}

/// RUN, COPY and ADD in shell form (also under ONBUILD) may open heredocs;
/// their bodies follow the instruction line, one after the other.
fn read_heredocs(
    instruction: &Instruction,
    joined: &str,
    lines: &mut Lines<'_>,
    end_line: &mut u32,
) -> Result<Vec<Heredoc>, ParseError> {
    let target = match &instruction.args {
        Arguments::Onbuild(inner) => inner,
        _ => instruction,
    };
    if !target.kind.can_have_heredocs() || target.is_json_form() || !joined.contains("<<") {
        return Ok(Vec::new());
    }
    let start_line = instruction.keyword_span.start.line;
    let markers =
        heredocs_in_line(joined).map_err(|message| ParseError::at_line(message, start_line))?;
    let mut heredocs = Vec::with_capacity(markers.len());
    for marker in markers {
        let mut content = String::new();
        let body_line = *end_line + 1;
        let mut terminated = false;
        while let Some(line) = lines.next()? {
            *end_line = line.number;
            let candidate = if marker.chomp {
                line.text.trim_start_matches('\t')
            } else {
                line.text
            };
            if candidate == marker.name {
                terminated = true;
                break;
            }
            content.push_str(line.raw);
        }
        if !terminated {
            return Err(ParseError::at_line(
                format!("unterminated heredoc {}", marker.name),
                start_line,
            )
            .with_hint(format!(
                "end the heredoc with a line holding only {}",
                marker.name
            )));
        }
        heredocs.push(Heredoc {
            name: marker.name,
            content,
            expand: marker.expand,
            chomp: marker.chomp,
            fd: marker.fd,
            body_line,
        });
    }
    Ok(heredocs)
}

fn set_lines(instruction: &mut Instruction, start: u32, end: u32) {
    instruction.start_line = start;
    instruction.end_line = end;
    if let Arguments::Onbuild(inner) = &mut instruction.args {
        set_lines(inner, start, end);
    }
}

fn check_size(len: usize) -> Result<(), ParseError> {
    if len <= MAX_DOCKERFILE_BYTES {
        return Ok(());
    }
    Err(ParseError::at_line(
        format!(
            "the Dockerfile is more than {MAX_DOCKERFILE_BYTES} bytes (16 MiB), the most kiln reads"
        ),
        1,
    )
    .with_hint("BuildKit's frontend cannot read a larger one either"))
}

/// Warnings BuildKit's linter gives for constructs that parse but are
/// deprecated.
fn warn_about(instruction: &Instruction, warnings: &mut Vec<Warning>) {
    let line = instruction.start_line;
    match (&instruction.kind, &instruction.args) {
        (InstructionKind::Maintainer, _) => warnings.push(Warning {
            message: "MAINTAINER instruction is deprecated in favor of using label".into(),
            detail: Some("use LABEL org.opencontainers.image.authors=\"...\"".into()),
            line,
        }),
        (
            InstructionKind::Env | InstructionKind::Label,
            Arguments::KeyValues { legacy: true, .. },
        ) => {
            let name = instruction.kind.name();
            warnings.push(Warning {
                message: format!(
                    "\"{name} key=value\" should be used instead of legacy \"{name} key value\" format"
                ),
                detail: None,
                line,
            })
        }
        (
            InstructionKind::Run | InstructionKind::Cmd | InstructionKind::Entrypoint,
            Arguments::Text(text),
        ) if looks_like_json(&text.value) => warnings.push(Warning {
            message: format!(
                "{} is not a valid JSON array and runs as a shell command",
                instruction.kind.name()
            ),
            detail: Some(
                "exec form needs double-quoted strings, commas between them and a closing ]".into(),
            ),
            line,
        }),
        _ => {}
    }
}

/// Text meant as an exec-form array: `[` then a quote. `[ -f x ]` is the
/// shell's test command and must not be flagged.
fn looks_like_json(text: &str) -> bool {
    text.strip_prefix('[')
        .is_some_and(|rest| rest.trim_start().starts_with(['"', '\'']))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dockerfile_over_16_mib_is_refused() {
        let mut text = String::from("FROM x\n");
        while text.len() <= MAX_DOCKERFILE_BYTES {
            text.push_str(&format!("RUN {}\n", "a".repeat(60_000)));
        }
        for error in [
            parse(&text).unwrap_err(),
            parse_bytes(text.as_bytes()).unwrap_err(),
        ] {
            assert_eq!(error.position.line, 1);
            assert!(error.message.contains("16 MiB"), "{}", error.message);
        }
        text.truncate(MAX_DOCKERFILE_BYTES - 100);
        text.truncate(text.rfind('\n').unwrap() + 1);
        assert!(parse(&text).is_ok());
    }

    #[test]
    fn continuation_rules() {
        assert_eq!(trim_continuation("a \\", '\\'), ("a ", false));
        assert_eq!(trim_continuation("a \\ \t", '\\'), ("a ", false));
        assert_eq!(trim_continuation("a \\\\", '\\'), ("a \\\\", true));
        assert_eq!(trim_continuation("\\", '\\'), ("", false));
        assert_eq!(trim_continuation("a `", '`'), ("a ", false));
        assert_eq!(trim_continuation("a \\", '`'), ("a \\", true));
    }

    #[test]
    fn spans_follow_continuations() {
        let df = parse("FROM x\nRUN a \\\n    b\n").unwrap();
        let run = &df.instructions[1];
        assert_eq!(run.original, "RUN a     b");
        assert_eq!((run.start_line, run.end_line), (2, 3));
        let Arguments::Text(arg) = &run.args else {
            panic!()
        };
        assert_eq!(arg.span.start, Position { line: 2, column: 5 });
        assert_eq!(arg.span.end, Position { line: 3, column: 6 });
    }

    #[test]
    fn too_long_line_is_an_error() {
        let text = format!("FROM x\nRUN {}\n", "a".repeat(MAX_LINE_BYTES));
        let err = parse(&text).unwrap_err();
        assert_eq!(err.position.line, 2);
    }

    #[test]
    fn binary_input_is_rejected_at_the_first_nul() {
        let err = parse("FROM x\nRUN a\0b\n").unwrap_err();
        assert!(err.message.contains("NUL"), "{err}");
        assert_eq!(err.position, Position { line: 2, column: 6 });
    }

    #[test]
    fn broken_exec_form_warns_but_parses_as_shell_form() {
        let df = parse("FROM x\nCMD [\"a\", \"b\"\nRUN [ -f x ] || true\n").unwrap();
        assert!(matches!(df.instructions[1].args, Arguments::Text(_)));
        let lines: Vec<u32> = df
            .warnings
            .iter()
            .filter(|w| w.message.contains("not a valid JSON array"))
            .map(|w| w.line)
            .collect();
        assert_eq!(lines, [2]);
    }

    #[test]
    fn unterminated_heredoc_is_an_error() {
        let err = parse("FROM x\nRUN <<EOF\necho hi\n").unwrap_err();
        assert!(err.message.contains("unterminated heredoc"), "{err}");
        assert_eq!(err.position.line, 2);
    }
}
