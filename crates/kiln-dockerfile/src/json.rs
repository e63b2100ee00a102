//! JSON arrays of strings (the exec form of RUN, CMD, COPY...), decoded with
//! the rules of Go's `encoding/json`, which BuildKit uses: whether a line is
//! "valid JSON" decides between exec and shell form, so the edge cases (lone
//! surrogates, nesting depth, which whitespace counts) must match exactly.

use std::ops::Range;

use nom::branch::alt;
use nom::character::complete::char;
use nom::combinator::{all_consuming, map};
use nom::multi::separated_list0;
use nom::sequence::{delimited, terminated};
use nom::IResult;

/// Go's json nesting limit.
const MAX_DEPTH: usize = 10_000;

/// A decoded string and its byte range in the input.
type StringSpan = (String, Range<usize>);

/// What a `[`-prefixed argument string turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum JsonArray {
    /// A valid array of strings, each with its byte range in the input.
    Strings(Vec<StringSpan>),
    /// Valid JSON, but some element is not a string: an error in BuildKit.
    NotStrings,
    /// Not valid JSON: the instruction falls back to its shell form.
    Invalid,
}

fn is_ws(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

fn ws(input: &str) -> IResult<&str, &str> {
    nom::bytes::complete::take_while(is_ws)(input)
}

/// Parses `input` as a whole JSON document that must be an array.
pub(crate) fn parse_string_array(input: &str) -> JsonArray {
    let base = input.as_ptr() as usize;
    let element = |i| array_element(i, base);
    let array = delimited(
        char('['),
        delimited(
            ws,
            separated_list0(delimited(ws, char(','), ws), element),
            ws,
        ),
        char(']'),
    );
    let parsed: IResult<&str, Vec<Option<StringSpan>>> =
        all_consuming(delimited(ws, array, ws))(input);
    match parsed {
        Err(_) => JsonArray::Invalid,
        Ok((_, items)) => match items.into_iter().collect::<Option<Vec<_>>>() {
            Some(strings) => JsonArray::Strings(strings),
            None => JsonArray::NotStrings,
        },
    }
}

/// One array element: `Some` with the string and its byte range relative to
/// `base` when it is a string, `None` when it is any other JSON value.
fn array_element(i: &str, base: usize) -> IResult<&str, Option<StringSpan>> {
    let start = i.as_ptr() as usize - base;
    if let Ok((rest, (s, _))) = json_string(i) {
        let end = rest.as_ptr() as usize - base;
        return Ok((rest, Some((s, start..end))));
    }
    let (rest, _) = skip_value(i, 2)?;
    Ok((rest, None))
}

/// The string under `key` in a JSON object document, if the document is a
/// valid object and that member is a string (the last one wins, as in Go).
pub(crate) fn object_string_field(input: &str, key: &str) -> Option<String> {
    let member = |i| -> IResult<&str, (String, Option<String>)> {
        let (i, name) = terminated(json_string_value, delimited(ws, char(':'), ws))(i)?;
        let (i, value) = alt((
            map(json_string_value, Some),
            map(|i| skip_value(i, 2), |_| None),
        ))(i)?;
        Ok((i, (name, value)))
    };
    let object = delimited(
        char('{'),
        delimited(
            ws,
            separated_list0(delimited(ws, char(','), ws), member),
            ws,
        ),
        char('}'),
    );
    let parsed: IResult<&str, Vec<(String, Option<String>)>> =
        all_consuming(delimited(ws, object, ws))(input);
    let (_, members) = parsed.ok()?;
    members
        .into_iter()
        .rfind(|(name, _)| name == key)
        .and_then(|(_, value)| value)
}

fn json_string_value(input: &str) -> IResult<&str, String> {
    map(json_string, |(s, _)| s)(input)
}

fn fail(input: &str) -> nom::Err<nom::error::Error<&str>> {
    nom::Err::Error(nom::error::Error::new(input, nom::error::ErrorKind::Verify))
}

/// A JSON string; returns the decoded text and, for span bookkeeping, the
/// input after the closing quote.
fn json_string(input: &str) -> IResult<&str, (String, &str)> {
    let body = input.strip_prefix('"').ok_or_else(|| fail(input))?;
    let mut out = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => {
                let rest = &body[i + 1..];
                return Ok((rest, (out, rest)));
            }
            '\\' => {
                let (_, esc) = chars.next().ok_or_else(|| fail(input))?;
                match esc {
                    '"' => out.push('"'),
                    '\\' => out.push('\\'),
                    '/' => out.push('/'),
                    'b' => out.push('\x08'),
                    'f' => out.push('\x0c'),
                    'n' => out.push('\n'),
                    'r' => out.push('\r'),
                    't' => out.push('\t'),
                    'u' => {
                        let unit = hex4(&mut chars).ok_or_else(|| fail(input))?;
                        out.push(decode_utf16_escape(unit, &mut chars, body));
                    }
                    _ => return Err(fail(input)),
                }
            }
            c if (c as u32) < 0x20 => return Err(fail(input)),
            c => out.push(c),
        }
    }
    Err(fail(input))
}

fn hex4(chars: &mut std::str::CharIndices<'_>) -> Option<u16> {
    let mut value = 0u16;
    for _ in 0..4 {
        let (_, c) = chars.next()?;
        value = value * 16 + c.to_digit(16)? as u16;
    }
    Some(value)
}

/// Go pairs a high surrogate with a following `\uDC00`-`\uDFFF` escape; any
/// other surrogate becomes U+FFFD and the next escape is left alone.
fn decode_utf16_escape(unit: u16, chars: &mut std::str::CharIndices<'_>, body: &str) -> char {
    if !(0xD800..0xE000).contains(&unit) {
        return char::from_u32(unit as u32).unwrap_or('\u{fffd}');
    }
    if unit < 0xDC00 {
        let offset = chars.clone().next().map_or(body.len(), |(i, _)| i);
        let rest = &body[offset..];
        if let Some(low_hex) = rest.strip_prefix("\\u") {
            let mut lookahead = low_hex.char_indices();
            if let Some(low) = hex4(&mut lookahead) {
                if (0xDC00..0xE000).contains(&low) {
                    for _ in 0..6 {
                        chars.next();
                    }
                    let code = 0x10000 + (((unit as u32) - 0xD800) << 10) + (low as u32 - 0xDC00);
                    return char::from_u32(code).unwrap_or('\u{fffd}');
                }
            }
        }
    }
    '\u{fffd}'
}

/// Skips any one JSON value without recursion (so hostile nesting cannot
/// overflow the stack); `depth` is the nesting level the value sits at.
fn skip_value(input: &str, depth: usize) -> IResult<&str, ()> {
    #[derive(Clone, Copy, PartialEq)]
    enum Container {
        Array,
        Object,
    }
    let mut stack: Vec<Container> = Vec::new();
    let mut rest = input;
    loop {
        // Expect a value at `rest`.
        rest = ws(rest)?.0;
        match rest.chars().next() {
            Some('"') => rest = json_string(rest)?.0,
            Some('[') | Some('{') => {
                let kind = if rest.starts_with('[') {
                    Container::Array
                } else {
                    Container::Object
                };
                if depth + stack.len() >= MAX_DEPTH {
                    return Err(fail(rest));
                }
                stack.push(kind);
                rest = ws(&rest[1..])?.0;
                let close = if kind == Container::Array { ']' } else { '}' };
                if rest.starts_with(close) {
                    stack.pop();
                    rest = &rest[1..];
                } else if kind == Container::Object {
                    rest = object_key(rest)?;
                    continue;
                } else {
                    continue;
                }
            }
            Some('t') => rest = literal(rest, "true")?,
            Some('f') => rest = literal(rest, "false")?,
            Some('n') => rest = literal(rest, "null")?,
            Some(c) if c == '-' || c.is_ascii_digit() => rest = number(rest)?,
            _ => return Err(fail(rest)),
        }
        // After a value: close containers or move to the next element.
        loop {
            let Some(&top) = stack.last() else {
                return Ok((rest, ()));
            };
            rest = ws(rest)?.0;
            let close = if top == Container::Array { ']' } else { '}' };
            if let Some(after) = rest.strip_prefix(',') {
                rest = if top == Container::Object {
                    object_key(ws(after)?.0)?
                } else {
                    after
                };
                break;
            } else if let Some(after) = rest.strip_prefix(close) {
                stack.pop();
                rest = after;
            } else {
                return Err(fail(rest));
            }
        }
    }
}

/// `"key" :` inside an object; returns the input where the value starts.
fn object_key(input: &str) -> Result<&str, nom::Err<nom::error::Error<&str>>> {
    let (rest, _) = json_string(input)?;
    let (rest, _) = ws(rest)?;
    let rest = rest.strip_prefix(':').ok_or_else(|| fail(rest))?;
    Ok(rest)
}

fn literal<'a>(
    input: &'a str,
    word: &str,
) -> Result<&'a str, nom::Err<nom::error::Error<&'a str>>> {
    input.strip_prefix(word).ok_or_else(|| fail(input))
}

/// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
fn number(input: &str) -> Result<&str, nom::Err<nom::error::Error<&str>>> {
    let bytes = input.as_bytes();
    let mut i = usize::from(bytes.first() == Some(&b'-'));
    let digits = |from: usize| {
        bytes[from..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count()
    };
    match bytes.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => i += digits(i),
        _ => return Err(fail(input)),
    }
    if bytes.get(i) == Some(&b'.') {
        let n = digits(i + 1);
        if n == 0 {
            return Err(fail(input));
        }
        i += 1 + n;
    }
    if matches!(bytes.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(bytes.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let n = digits(i);
        if n == 0 {
            return Err(fail(input));
        }
        i += n;
    }
    Ok(&input[i..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(input: &str) -> Vec<String> {
        match parse_string_array(input) {
            JsonArray::Strings(v) => v.into_iter().map(|(s, _)| s).collect(),
            other => panic!("{input}: {other:?}"),
        }
    }

    #[test]
    fn decodes_strings_and_escapes() {
        assert_eq!(strings(r#"[ "a", "b\/c\u00e9" ]"#), ["a", "b/cé"]);
        assert_eq!(strings("[]"), Vec::<String>::new());
        assert_eq!(strings(r#"["\ud83d\ude00"]"#), ["😀"]);
        assert_eq!(strings(r#"["\ud83dx"]"#), ["\u{fffd}x"]);
    }

    #[test]
    fn invalid_versus_not_strings() {
        assert_eq!(
            parse_string_array(r#"["a", [1, {"k": [true, null]}]]"#),
            JsonArray::NotStrings
        );
        assert_eq!(parse_string_array(r#"["a" "b"]"#), JsonArray::Invalid);
        assert_eq!(parse_string_array(r#"["a",]"#), JsonArray::Invalid);
        assert_eq!(parse_string_array("[\"a\tb\"]"), JsonArray::Invalid);
        assert_eq!(parse_string_array(r#"["a"] x"#), JsonArray::Invalid);
        assert_eq!(parse_string_array("[01]"), JsonArray::Invalid);
        assert_eq!(parse_string_array("[-1.5e+3]"), JsonArray::NotStrings);
    }

    #[test]
    fn hostile_nesting_is_invalid_not_a_crash() {
        let deep = "[".repeat(200_000) + &"]".repeat(200_000);
        assert_eq!(parse_string_array(&deep), JsonArray::Invalid);
        let ok = "[".repeat(100) + &"]".repeat(100);
        assert_eq!(parse_string_array(&ok), JsonArray::NotStrings);
    }

    #[test]
    fn object_field() {
        assert_eq!(
            object_string_field(r#"{"syntax": "foo", "bar": ["abc"]}"#, "syntax").as_deref(),
            Some("foo")
        );
        assert_eq!(object_string_field(r#"{"syntax": "foo""#, "syntax"), None);
    }
}
