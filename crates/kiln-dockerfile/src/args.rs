//! From one logical line to an instruction: the keyword, the leading
//! `--flags`, and the arguments split the way BuildKit splits them for that
//! instruction (JSON or shell form, whitespace words, quote-aware words,
//! key/value pairs, HEALTHCHECK, nested ONBUILD).

use std::ops::Range;

use crate::ast::{Arg, Arguments, Flag, Instruction, InstructionKind, KeyValue, Span};
use crate::error::ParseError;
use crate::json::{parse_string_array, JsonArray};
use crate::parser::LineMap;

/// ONBUILD may wrap an instruction; BuildKit's parser accepts any depth, but
/// only one level can ever build, so deeper chains are refused here rather
/// than risk the stack.
const MAX_ONBUILD_DEPTH: usize = 8;

/// BuildKit's `[\t\v\f\r ]`: the separators between plain words.
fn is_word_separator(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\x0b' | '\x0c' | '\r')
}

/// The logical line being split, and how to map its offsets to positions.
pub(crate) struct LineSource<'a> {
    pub line: &'a str,
    pub map: &'a LineMap,
    pub escape: char,
}

impl LineSource<'_> {
    fn offset_of(&self, sub: &str) -> usize {
        sub.as_ptr() as usize - self.line.as_ptr() as usize
    }

    fn span(&self, range: Range<usize>) -> Span {
        self.map.span(range)
    }

    fn span_of(&self, sub: &str) -> Span {
        let start = self.offset_of(sub);
        self.span(start..start + sub.len())
    }

    fn arg(&self, sub: &str) -> Arg {
        Arg {
            value: sub.to_string(),
            span: self.span_of(sub),
        }
    }

    fn error_at(&self, sub: &str, message: impl Into<String>) -> ParseError {
        ParseError::new(message, self.span_of(sub).start)
    }
}

/// Parses `text` (a sub-slice of `src.line`) as an instruction. The caller
/// fills in the line numbers and heredocs.
pub(crate) fn instruction(
    src: &LineSource<'_>,
    text: &str,
    depth: usize,
) -> Result<Instruction, ParseError> {
    let text = text.trim();
    let (keyword, rest) = match text.find(is_word_separator) {
        Some(i) => (&text[..i], text[i..].trim_start_matches(is_word_separator)),
        None => (text, &text[text.len()..]),
    };
    let kind = InstructionKind::from_keyword(keyword);
    let (flags, rest) = flags(src, rest);
    let rest = rest.trim();
    let args = match kind {
        InstructionKind::Run
        | InstructionKind::Cmd
        | InstructionKind::Entrypoint
        | InstructionKind::Shell => maybe_json(src, rest)?,
        InstructionKind::Add | InstructionKind::Copy | InstructionKind::Volume => {
            maybe_json_list(src, rest)?
        }
        InstructionKind::From | InstructionKind::Expose => whitespace_list(src, rest),
        InstructionKind::User
        | InstructionKind::Workdir
        | InstructionKind::Maintainer
        | InstructionKind::Stopsignal => text_arg(src, rest),
        InstructionKind::Arg => {
            let words = quoted_words(src, rest);
            if words.is_empty() {
                Arguments::None
            } else {
                Arguments::List(words)
            }
        }
        InstructionKind::Env | InstructionKind::Label => key_values(src, rest, kind)?,
        InstructionKind::Healthcheck => healthcheck(src, rest)?,
        InstructionKind::Onbuild => onbuild(src, rest, depth)?,
        InstructionKind::Unknown => Arguments::Unknown,
    };
    Ok(Instruction {
        keyword: keyword.to_string(),
        kind,
        keyword_span: src.span_of(keyword),
        flags,
        args,
        original: String::new(),
        start_line: 0,
        end_line: 0,
        heredocs: Vec::new(),
    })
}

/// Reads `--flags` from the start of `rest`; returns them and what follows.
/// Quotes are removed and backslash escapes resolved, as BuildKit stores
/// flags; a bare `--` ends the flags and is dropped.
fn flags<'a>(src: &LineSource<'_>, rest: &'a str) -> (Vec<Flag>, &'a str) {
    let mut found = Vec::new();
    let mut remaining = rest;
    loop {
        let word_start = remaining.trim_start();
        if !word_start.starts_with("--") {
            return (found, word_start);
        }
        let mut text = String::new();
        let mut quote: Option<char> = None;
        let mut blank_ok = false;
        let mut chars = word_start.char_indices();
        let mut end = word_start.len();
        while let Some((i, c)) = chars.next() {
            match quote {
                None if c.is_whitespace() => {
                    end = i;
                    break;
                }
                None if c == '\'' || c == '"' => {
                    quote = Some(c);
                    blank_ok = true;
                }
                Some(q) if c == q => quote = None,
                _ if c == '\\' => match chars.next() {
                    Some((_, escaped)) => text.push(escaped),
                    None => quote = None,
                },
                _ => text.push(c),
            }
        }
        let raw = &word_start[..end];
        remaining = &word_start[end..];
        if text == "--" {
            return (found, remaining);
        }
        if blank_ok || !text.is_empty() {
            let body = text.get(2..).unwrap_or_default();
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (body.to_string(), None),
            };
            found.push(Flag {
                text,
                name,
                value,
                span: src.span_of(raw),
            });
        }
    }
}

/// RUN, CMD, ENTRYPOINT, SHELL: a JSON array, else the whole text.
fn maybe_json(src: &LineSource<'_>, rest: &str) -> Result<Arguments, ParseError> {
    if rest.is_empty() {
        return Ok(Arguments::None);
    }
    match json_array(src, rest)? {
        Some(items) => Ok(Arguments::Exec(items)),
        None => Ok(Arguments::Text(src.arg(rest))),
    }
}

/// ADD, COPY, VOLUME: a JSON array, else whitespace-separated words.
fn maybe_json_list(src: &LineSource<'_>, rest: &str) -> Result<Arguments, ParseError> {
    match json_array(src, rest)? {
        Some(items) => Ok(Arguments::Exec(items)),
        None => Ok(whitespace_list(src, rest)),
    }
}

/// `Some` for a valid JSON array of strings, `None` when the text is not
/// JSON (shell form), an error for JSON holding something else.
fn json_array(src: &LineSource<'_>, rest: &str) -> Result<Option<Vec<Arg>>, ParseError> {
    let json = rest.trim_start();
    if !json.starts_with('[') {
        return Ok(None);
    }
    match parse_string_array(json) {
        JsonArray::Strings(items) => {
            let base = src.offset_of(json);
            Ok(Some(
                items
                    .into_iter()
                    .map(|(value, range)| Arg {
                        value,
                        span: src.span(base + range.start..base + range.end),
                    })
                    .collect(),
            ))
        }
        JsonArray::NotStrings => Err(src
            .error_at(
                json,
                "when using JSON array syntax, arrays must be comprised of strings only",
            )
            .with_hint(
                r#"quote every element: ["echo", "1"], or drop the brackets for the shell form"#,
            )),
        JsonArray::Invalid => Ok(None),
    }
}

fn whitespace_list(src: &LineSource<'_>, rest: &str) -> Arguments {
    if rest.is_empty() {
        return Arguments::None;
    }
    Arguments::List(
        rest.split(is_word_separator)
            .filter(|w| !w.is_empty())
            .map(|w| src.arg(w))
            .collect(),
    )
}

fn text_arg(src: &LineSource<'_>, rest: &str) -> Arguments {
    if rest.is_empty() {
        Arguments::None
    } else {
        Arguments::Text(src.arg(rest))
    }
}

/// Quote-aware words (ARG, ENV, LABEL): whitespace separates words except
/// inside quotes; quotes and escapes stay in the word; an escape character
/// at the very end of the text is dropped.
fn quoted_word_slices(rest: &str, escape: char) -> Vec<&str> {
    let mut words = Vec::new();
    let mut chars = rest.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let mut quote: Option<char> = None;
        let mut blank_ok = false;
        let mut end = rest.len();
        let mut drop_trailing_escape = false;
        while let Some((i, c)) = chars.next() {
            match quote {
                None if c.is_whitespace() => {
                    end = i;
                    break;
                }
                None if c == '\'' || c == '"' => {
                    quote = Some(c);
                    blank_ok = true;
                }
                Some(q) if c == q => quote = None,
                Some('\'') => {}
                _ if c == escape => drop_trailing_escape = chars.next().is_none(),
                _ => {}
            }
        }
        let word_end = if drop_trailing_escape {
            end - escape.len_utf8()
        } else {
            end
        };
        let word = &rest[start..word_end];
        if blank_ok || !word.is_empty() {
            words.push(word);
        }
    }
    words
}

fn quoted_words(src: &LineSource<'_>, rest: &str) -> Vec<Arg> {
    quoted_word_slices(rest, src.escape)
        .into_iter()
        .map(|w| src.arg(w))
        .collect()
}

/// ENV and LABEL: `k=v ...`, or the legacy `k v` when the first word has
/// no `=`.
fn key_values(
    src: &LineSource<'_>,
    rest: &str,
    kind: InstructionKind,
) -> Result<Arguments, ParseError> {
    let words = quoted_word_slices(rest, src.escape);
    let Some(first) = words.first() else {
        return Ok(Arguments::None);
    };
    if !first.contains('=') {
        let Some(i) = rest.find(is_word_separator) else {
            return Err(src
                .error_at(rest, format!("{} must have two arguments", kind.name()))
                .with_hint(format!("write {} {rest}=value", kind.name())));
        };
        let key = &rest[..i];
        let value = rest[i..].trim_start_matches(is_word_separator);
        return Ok(Arguments::KeyValues {
            pairs: vec![KeyValue {
                key: src.arg(key),
                value: src.arg(value),
            }],
            legacy: true,
        });
    }
    let mut pairs = Vec::with_capacity(words.len());
    for word in words {
        let Some((key, value)) = word.split_once('=') else {
            return Err(src
                .error_at(
                    word,
                    format!("Syntax error - can't find = in {word:?}. Must be of the form: name=value"),
                )
                .with_hint("every word after the first key=value pair must be key=value too; quote values that contain spaces"));
        };
        pairs.push(KeyValue {
            key: src.arg(key),
            value: src.arg(value),
        });
    }
    Ok(Arguments::KeyValues {
        pairs,
        legacy: false,
    })
}

/// `HEALTHCHECK [TYPE [command]]`: the first word, then the rest as CMD.
fn healthcheck(src: &LineSource<'_>, rest: &str) -> Result<Arguments, ParseError> {
    if rest.is_empty() {
        return Ok(Arguments::None);
    }
    let (kind, command) = match rest.find(char::is_whitespace) {
        Some(i) => (&rest[..i], rest[i..].trim_start()),
        None => (rest, &rest[rest.len()..]),
    };
    Ok(Arguments::Healthcheck {
        kind: src.arg(kind),
        command: Box::new(maybe_json(src, command)?),
    })
}

fn onbuild(src: &LineSource<'_>, rest: &str, depth: usize) -> Result<Arguments, ParseError> {
    if rest.is_empty() {
        return Ok(Arguments::None);
    }
    if depth >= MAX_ONBUILD_DEPTH {
        return Err(src
            .error_at(
                rest,
                format!("ONBUILD nested more than {MAX_ONBUILD_DEPTH} levels deep"),
            )
            .with_hint(
                "ONBUILD ONBUILD is not allowed; use one ONBUILD per deferred instruction",
            ));
    }
    let mut inner = instruction(src, rest, depth + 1)?;
    inner.original = rest.to_owned();
    Ok(Arguments::Onbuild(Box::new(inner)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_aware_words_keep_quotes_and_escapes() {
        assert_eq!(
            quoted_word_slices(r#"abc="123 456" def"#, '\\'),
            [r#"abc="123 456""#, "def"]
        );
        assert_eq!(quoted_word_slices(r"a\ b c\", '\\'), [r"a\ b", "c"]);
        assert_eq!(quoted_word_slices(r"'it\' x", '\\'), [r"'it\'", "x"]);
        assert_eq!(quoted_word_slices("\"\"", '\\'), ["\"\""]);
        assert_eq!(quoted_word_slices(" \\", '\\'), Vec::<&str>::new());
    }
}
