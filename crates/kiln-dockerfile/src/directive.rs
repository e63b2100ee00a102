//! Parser directives (`# syntax=`, `# escape=`, `# check=`): recognised only
//! in the comment lines at the very top of a file, once each, with
//! BuildKit's rules. Also `detect_syntax`, which finds the frontend
//! reference the way BuildKit's frontend selector does.

use nom::bytes::complete::{tag, take_while};
use nom::character::complete::satisfy;
use nom::combinator::recognize;
use nom::sequence::{pair, tuple};
use nom::IResult;

use crate::error::ParseError;

const KNOWN: [&str; 3] = ["syntax", "escape", "check"];

/// Go's regexp `\s`: ASCII space, tab, newline, form feed, carriage return.
fn is_re_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0c' | '\r')
}

/// Matches `<comment>\s*NAME\s*=\s*VALUE\s*` and returns (name, value), with
/// the value as BuildKit's lazy `(.+?)\s*$` capture leaves it.
fn directive_line<'a>(comment: &'static str, line: &'a str) -> Option<(&'a str, &'a str)> {
    let parsed: IResult<&str, (&str, &str, &str, &str, &str)> = tuple((
        tag(comment),
        take_while(is_re_space),
        recognize(pair(
            satisfy(|c| c.is_ascii_alphabetic()),
            take_while(|c: char| c.is_ascii_alphanumeric()),
        )),
        take_while(is_re_space),
        tag("="),
    ))(line);
    let (rest, (_, _, name, _, _)) = parsed.ok()?;
    let trimmed = rest.trim_start_matches(is_re_space);
    let value = if trimmed.is_empty() {
        // `(.+?)` needs one character: with only spaces left it takes the last.
        let last = rest.chars().next_back()?;
        &rest[rest.len() - last.len_utf8()..]
    } else {
        trimmed.trim_end_matches(is_re_space)
    };
    Some((name, value))
}

/// Reads directives line by line until the first line that is not one.
#[derive(Debug)]
pub(crate) struct DirectiveParser {
    comment: &'static str,
    line: u32,
    done: bool,
    found: Vec<crate::ast::Directive>,
}

impl DirectiveParser {
    pub(crate) fn new(comment: &'static str) -> DirectiveParser {
        DirectiveParser {
            comment,
            line: 0,
            done: false,
            found: Vec::new(),
        }
    }

    /// Feeds the next physical line; returns the directive it holds, if any.
    pub(crate) fn feed(
        &mut self,
        line: &str,
    ) -> Result<Option<&crate::ast::Directive>, ParseError> {
        self.line += 1;
        if self.done {
            return Ok(None);
        }
        let Some((name, value)) = directive_line(self.comment, line) else {
            self.done = true;
            return Ok(None);
        };
        let name = name.to_ascii_lowercase();
        if !KNOWN.contains(&name.as_str()) {
            self.done = true;
            return Ok(None);
        }
        if self.found.iter().any(|d| d.name == name) {
            return Err(ParseError::at_line(
                format!("only one {name} parser directive can be used"),
                self.line,
            )
            .with_hint("remove the repeated directive"));
        }
        self.found.push(crate::ast::Directive {
            name,
            value: value.to_string(),
            line: self.line,
        });
        Ok(self.found.last())
    }

    pub(crate) fn is_done(&self) -> bool {
        self.done
    }

    pub(crate) fn into_directives(self) -> Vec<crate::ast::Directive> {
        self.found
    }
}

/// The directives at the top of `source` (BuildKit's `ParseAll`): reading
/// stops at the first line that is not a directive.
pub fn parse_directives(source: &str) -> Result<Vec<crate::ast::Directive>, ParseError> {
    let mut parser = DirectiveParser::new("#");
    for line in source.lines() {
        parser.feed(line)?;
        if parser.is_done() {
            break;
        }
    }
    Ok(parser.into_directives())
}

/// Validates an `escape` directive value.
pub(crate) fn escape_char(value: &str, line: u32) -> Result<char, ParseError> {
    match value {
        "\\" => Ok('\\'),
        "`" => Ok('`'),
        _ => Err(ParseError::at_line(
            format!("invalid escape token '{value}' does not match ` or \\"),
            line,
        )
        .with_hint("use `# escape=\\` (the default) or `# escape=``")),
    }
}

/// A directive value found by [`detect_syntax`] or [`detect_check`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DetectedDirective {
    /// The value up to its first space (`docker/dockerfile:1`).
    pub value: String,
    /// The whole value, options included (`docker/dockerfile:1 // opts`).
    pub cmdline: String,
    /// 1-based line of the directive.
    pub line: u32,
}

/// Finds the `syntax` directive the way BuildKit picks a frontend: `#`
/// comments, then `//` comments, then a JSON object on the first line; a
/// UTF-8 BOM and a `#!` first line are skipped.
pub fn detect_syntax(source: &str) -> Option<DetectedDirective> {
    detect("syntax", source, &["#", "//"], true)
}

/// Finds the `check` directive (only `#` comments count).
pub fn detect_check(source: &str) -> Option<DetectedDirective> {
    detect("check", source, &["#"], false)
}

fn detect(
    key: &str,
    source: &str,
    comments: &[&'static str],
    json: bool,
) -> Option<DetectedDirective> {
    let source = source.strip_prefix('\u{feff}').unwrap_or(source);
    let (source, first_line) = match source.split_once('\n') {
        Some((first, rest)) if first.starts_with("#!") => (rest, 1),
        None if source.starts_with("#!") => ("", 1),
        _ => (source, 0),
    };
    for comment in comments {
        let mut parser = DirectiveParser::new(comment);
        parser.line = first_line;
        for line in source.lines() {
            if parser.feed(line).is_err() || parser.is_done() {
                break;
            }
        }
        if let Some(found) = parser.found.into_iter().find(|d| d.name == key) {
            let value = found
                .value
                .split(' ')
                .next()
                .unwrap_or_default()
                .to_string();
            return Some(DetectedDirective {
                value,
                cmdline: found.value,
                line: found.line,
            });
        }
    }
    if json {
        return detect_json(key, source, first_line + 1);
    }
    None
}

/// `{"syntax": "..."}` as the whole file: any JSON object with a string
/// under `key`.
fn detect_json(key: &str, source: &str, line: u32) -> Option<DetectedDirective> {
    let trimmed = source.trim_matches(|c| matches!(c, ' ' | '\t' | '\n' | '\r'));
    if !trimmed.starts_with('{') {
        return None;
    }
    let value = crate::json::object_string_field(trimmed, key)?;
    Some(DetectedDirective {
        value: value.clone(),
        cmdline: value,
        line,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lazy_value_capture() {
        assert_eq!(directive_line("#", "# escape=`"), Some(("escape", "`")));
        assert_eq!(directive_line("#", "#escape = x  "), Some(("escape", "x")));
        assert_eq!(directive_line("#", "# escape=   "), Some(("escape", " ")));
        assert_eq!(directive_line("#", "# escape="), None);
        assert_eq!(directive_line("#", "# 1escape=x"), None);
        assert_eq!(
            directive_line("//", "//syntax=foo"),
            Some(("syntax", "foo"))
        );
    }

    #[test]
    fn repeated_directive_is_an_error() {
        let mut p = DirectiveParser::new("#");
        p.feed("# escape=\\").unwrap();
        assert!(p.feed("# ESCAPE=`").is_err());
    }
}
