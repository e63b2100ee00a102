//! Finding the heredocs an instruction line opens (`<<EOF`, `<<-'EOF'`,
//! `3<<EOF`, several per line) with BuildKit's rules. Reading their bodies
//! is the line reader's job (`parser.rs`).

use nom::bytes::complete::{tag, take_while};
use nom::character::complete::{char, digit0};
use nom::combinator::opt;
use nom::sequence::tuple;
use nom::IResult;

use crate::shell::{Lexer, NoEnv};

/// A heredoc opener: its terminator word and how the body is treated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeredocMarker {
    pub name: String,
    pub expand: bool,
    pub chomp: bool,
    pub fd: u32,
}

/// Go's regexp `\s`.
fn is_re_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0c' | '\r')
}

/// `^(\d*)<<(-?)\s*([^<]*)$`: returns (fd digits, chomp, word).
fn opener(word: &str) -> Option<(&str, bool, &str)> {
    let parsed: IResult<&str, (&str, &str, Option<char>, &str)> =
        tuple((digit0, tag("<<"), opt(char('-')), take_while(is_re_space)))(word);
    let (rest, (digits, _, dash, _)) = parsed.ok()?;
    if rest.contains('<') {
        return None;
    }
    Some((digits, dash.is_some(), rest))
}

/// Parses one shell word as a heredoc opener. `Ok(None)`: not a heredoc;
/// `Err`: it is one, but its quoting is broken.
pub fn parse_heredoc_word(word: &str) -> Result<Option<HeredocMarker>, String> {
    let Some((digits, chomp, rest)) = opener(word) else {
        return Ok(None);
    };
    if rest.is_empty() {
        return Ok(None);
    }
    // Lex the word with and without keeping quotes: if the quote counts
    // differ, part of the word was quoted and the body is not expanded.
    let mut lexer = Lexer::new('\\');
    lexer.skip_unset_env = true;
    let words = lexer
        .expand_words(rest, &NoEnv)
        .map_err(|e| e.to_string())?;
    if words.len() != 1 {
        return Ok(None);
    }
    lexer.raw_quotes = true;
    let raw_words = lexer
        .expand_words(rest, &NoEnv)
        .map_err(|e| e.to_string())?;
    if raw_words.len() != 1 {
        return Err(format!(
            "internal lexing of heredoc produced inconsistent results: {rest}"
        ));
    }
    let quotes = |s: &str| s.chars().filter(|&c| c == '\'' || c == '"').count();
    let name = words.into_iter().next().unwrap_or_default();
    Ok(Some(HeredocMarker {
        expand: quotes(&name) == quotes(&raw_words[0]),
        name,
        chomp,
        // Go parses the digits as uint and ignores overflow as 0.
        fd: digits.parse().unwrap_or(0),
    }))
}

/// Every heredoc a logical line opens, in order.
pub fn heredocs_in_line(line: &str) -> Result<Vec<HeredocMarker>, String> {
    let mut lexer = Lexer::new('\\');
    lexer.raw_quotes = true;
    lexer.raw_escapes = true;
    lexer.skip_unset_env = true;
    // BuildKit ignores a lexing error here: such a line opens no heredoc.
    let words = lexer.expand_words(line, &NoEnv).unwrap_or_default();
    let mut found = Vec::new();
    for word in &words {
        if let Some(marker) = parse_heredoc_word(word)? {
            found.push(marker);
        }
    }
    Ok(found)
}
