//! Shell-word expansion for Dockerfile instruction arguments, reproducing the
//! semantics of BuildKit's `frontend/dockerfile/shell` lexer: `$VAR` and
//! `${VAR...}` substitution (`-`, `:-`, `+`, `:+`, `?`, `:?`, `#`, `##`, `%`,
//! `%%`, `/`, `//`), quote removal, escape characters and word splitting.
//! It owns no I/O and no environment of its own: callers pass the text and an
//! [`Env`], and get back the expanded word(s) and the variable names it used.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::BuildHasher;
use std::sync::OnceLock;

use regex::Regex;

/// How many `${...}` substitutions may be open inside each other at once.
/// Deeper input fails with an error instead of growing the stack.
const MAX_NESTING: usize = 256;

/// What Go prints for a missing rune (`string(rune(-1))` / `%c` of EOF).
const REPLACEMENT_CHAR: char = '\u{FFFD}';

/// Byte order mark; Go's `text/scanner` drops one at the very start of its input.
const BOM: char = '\u{FEFF}';

/// The variables a word is expanded against.
///
/// Names are case-sensitive (BuildKit's Linux behaviour). A variable that is
/// set to the empty string is *set*: `lookup` returns `Some("")`.
pub trait Env {
    /// The value of `name`, or `None` if it is unset.
    fn lookup(&self, name: &str) -> Option<&str>;
}

impl<S: BuildHasher> Env for HashMap<String, String, S> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

impl Env for BTreeMap<String, String> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

/// A list of `(name, value)` pairs; when a name appears twice the later entry wins.
impl Env for [(&str, &str)] {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.iter().rev().find(|(k, _)| *k == name).map(|(_, v)| *v)
    }
}

/// A fixed-size list of `(name, value)` pairs; the later entry wins.
impl<const N: usize> Env for [(&str, &str); N] {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.as_slice().lookup(name)
    }
}

/// A list of `(name, value)` pairs; the later entry wins.
impl Env for [(String, String)] {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A list of `(name, value)` pairs; the later entry wins.
impl Env for Vec<(String, String)> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.as_slice().lookup(name)
    }
}

/// A list of `(name, value)` pairs; the later entry wins.
impl Env for Vec<(&str, &str)> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.as_slice().lookup(name)
    }
}

/// An environment in which every variable is unset.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NoEnv;

impl Env for NoEnv {
    fn lookup(&self, _name: &str) -> Option<&str> {
        None
    }
}

/// Expands shell words the way BuildKit does.
///
/// A `Lexer` is configuration only; it can be shared and reused freely.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lexer {
    /// The escape character: `\` by default, `` ` `` with `# escape=``.
    pub escape: char,
    /// Keep the quote characters of `'...'` and `"..."` in the output
    /// (their contents are still processed as usual).
    pub raw_quotes: bool,
    /// Keep escape characters in the output (the escaped character still
    /// loses its special meaning).
    pub raw_escapes: bool,
    /// Leave references to unset variables as they were written
    /// (`$FOO`, `${FOO}`, `${FOO:-x}`, ...) instead of expanding them.
    pub skip_unset_env: bool,
    /// Treat `'` and `"` as ordinary characters.
    pub skip_process_quotes: bool,
}

impl Default for Lexer {
    /// A lexer with the default `\` escape character and every flag off.
    fn default() -> Lexer {
        Lexer::new('\\')
    }
}

/// The result of [`Lexer::expand_with_matches`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Expansion {
    /// The expanded word, without field splitting.
    pub value: String,
    /// The same expansion split into words (see [`Lexer::expand_words`]).
    pub words: Vec<String>,
    /// Names that were looked up and were set (including set to `""`).
    pub matched: BTreeSet<String>,
    /// Names that were looked up and were unset.
    pub unmatched: BTreeSet<String>,
}

/// Why a word could not be expanded.
///
/// Displays as `failed to process "<input>": <message>`, the input being
/// quoted and escaped like Rust's `{:?}` (close to Go's `%q`, which BuildKit uses).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failed to process {input:?}: {message}")]
pub struct ExpandError {
    /// The whole word that was being expanded.
    pub input: String,
    /// What went wrong, e.g. `syntax error: missing '}'`.
    pub message: String,
}

impl Lexer {
    /// A lexer using `escape` as its escape character, with every flag off.
    pub fn new(escape: char) -> Lexer {
        Lexer {
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_unset_env: false,
            skip_process_quotes: false,
        }
    }

    /// Expands `input` as one word: variables are substituted, quotes and
    /// escapes are removed, and whitespace is kept as it is (no splitting).
    pub fn expand_word(&self, input: &str, env: &dyn Env) -> Result<String, ExpandError> {
        self.run(input, env, false, false).map(|out| out.value)
    }

    /// Expands `input`, then splits it into words. Whitespace that comes from
    /// the input or from an unquoted variable expansion separates words;
    /// whitespace inside quotes or escaped does not.
    pub fn expand_words(&self, input: &str, env: &dyn Env) -> Result<Vec<String>, ExpandError> {
        self.run(input, env, true, false)
            .map(|out| out.words.unwrap_or_default())
    }

    /// Like [`Lexer::expand_word`], but also returns the split words and which
    /// variable names the input referred to, split into set and unset ones.
    pub fn expand_with_matches(
        &self,
        input: &str,
        env: &dyn Env,
    ) -> Result<Expansion, ExpandError> {
        let out = self.run(input, env, true, true)?;
        let capture = out.capture.unwrap_or_default();
        Ok(Expansion {
            value: out.value,
            words: out.words.unwrap_or_default(),
            matched: capture.matched,
            unmatched: capture.unmatched,
        })
    }

    fn run(
        &self,
        input: &str,
        env: &dyn Env,
        want_words: bool,
        capture: bool,
    ) -> Result<Output, ExpandError> {
        // Most words (paths, names, versions) hold nothing to expand; they
        // come out as they went in, split on whitespace.
        if !input.contains(['$', '\'', '"', '<', self.escape, BOM]) {
            return Ok(Output {
                value: input.to_owned(),
                words: want_words.then(|| input.split_whitespace().map(str::to_owned).collect()),
                capture: capture.then(Capture::default),
            });
        }
        let mut state = State {
            lex: self,
            sc: Scanner::new(input),
            env,
            raw_escapes: self.raw_escapes,
            depth: 0,
            capture: capture.then(Capture::default),
        };
        let mut words = want_words.then(Words::default);
        match state.process_until(None, self.raw_escapes, words.as_mut()) {
            Ok(value) => Ok(Output {
                value,
                words: words.map(Words::finish),
                capture: state.capture,
            }),
            Err(message) => Err(ExpandError {
                input: input.to_owned(),
                message,
            }),
        }
    }
}

/// What one run of the lexer produced; `words` and `capture` only when asked for.
struct Output {
    value: String,
    words: Option<Vec<String>>,
    capture: Option<Capture>,
}

/// A peek/next cursor over the input, one Unicode scalar at a time.
struct Scanner<'a> {
    src: &'a str,
    pos: usize,
}

impl<'a> Scanner<'a> {
    fn new(src: &'a str) -> Scanner<'a> {
        // Go's text/scanner silently skips a byte order mark at the very start.
        let pos = if src.starts_with(BOM) {
            BOM.len_utf8()
        } else {
            0
        };
        Scanner { src, pos }
    }

    #[inline]
    fn peek(&self) -> Option<char> {
        self.src[self.pos..].chars().next()
    }

    #[inline]
    fn next(&mut self) -> Option<char> {
        let ch = self.peek()?;
        self.pos += ch.len_utf8();
        Some(ch)
    }

    #[inline]
    fn at_end(&self) -> bool {
        self.pos >= self.src.len()
    }

    /// Consumes everything up to and including the next `stop`, returning the
    /// text before it. Without one, consumes the rest of the input.
    fn take_through(&mut self, stop: char) -> Option<&'a str> {
        let rest = &self.src[self.pos..];
        match rest.find(stop) {
            Some(i) => {
                self.pos += i + stop.len_utf8();
                Some(&rest[..i])
            }
            None => {
                self.pos = self.src.len();
                None
            }
        }
    }
}

/// Accumulates words for field splitting.
#[derive(Default)]
struct Words {
    word: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    /// A character that splits words if it is whitespace.
    #[inline]
    fn add_char(&mut self, ch: char) {
        if ch.is_whitespace() {
            if self.in_word && !self.word.is_empty() {
                self.words.push(std::mem::take(&mut self.word));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(ch);
        }
    }

    /// A character that is part of the current word, even if whitespace.
    #[inline]
    fn add_raw_char(&mut self, ch: char) {
        self.word.push(ch);
        self.in_word = true;
    }

    /// Quoted text: part of the current word, never split.
    fn add_raw_str(&mut self, s: &str) {
        self.word.push_str(s);
        self.in_word = true;
    }

    fn finish(mut self) -> Vec<String> {
        if !self.word.is_empty() {
            self.words.push(self.word);
        }
        self.words
    }
}

/// The names looked up during one expansion.
#[derive(Default)]
struct Capture {
    matched: BTreeSet<String>,
    unmatched: BTreeSet<String>,
}

/// The state of one expansion.
struct State<'a, 'e> {
    lex: &'a Lexer,
    sc: Scanner<'a>,
    env: &'e dyn Env,
    /// The escape mode in force (the lexer's flag, overridden inside patterns).
    raw_escapes: bool,
    /// How many `${...}` are open around the current position.
    depth: usize,
    capture: Option<Capture>,
}

type Res<T> = Result<T, String>;

fn unsupported_modifier(chs: &str) -> String {
    format!("unsupported modifier ({chs}) in substitution")
}

impl<'a, 'e> State<'a, 'e> {
    /// Looks `name` up and records whether it was set.
    fn lookup(&mut self, name: &str) -> Option<&'e str> {
        let value = self.env.lookup(name);
        if let Some(capture) = self.capture.as_mut() {
            let set = if value.is_some() {
                &mut capture.matched
            } else {
                &mut capture.unmatched
            };
            if !set.contains(name) {
                set.insert(name.to_owned());
            }
        }
        value
    }

    /// Processes input until `stop` (consumed) or, with `stop == None`, the
    /// end of the input. `raw_escapes` is the escape mode for this stretch.
    fn process_until(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
        words: Option<&mut Words>,
    ) -> Res<String> {
        let saved = std::mem::replace(&mut self.raw_escapes, raw_escapes);
        let result = self.process_until_inner(stop, words);
        self.raw_escapes = saved;
        result
    }

    fn process_until_inner(
        &mut self,
        stop: Option<char>,
        mut words: Option<&mut Words>,
    ) -> Res<String> {
        let mut result = String::new();
        while let Some(ch) = self.sc.peek() {
            if stop == Some(ch) {
                self.sc.next();
                return Ok(result);
            }
            if ch == '$' {
                let start = result.len();
                self.process_dollar(&mut result)?;
                if let Some(w) = words.as_deref_mut() {
                    // Whitespace from an unquoted expansion splits words.
                    result[start..].chars().for_each(|c| w.add_char(c));
                }
                continue;
            }
            if (ch == '\'' || ch == '"') && !self.lex.skip_process_quotes {
                let start = result.len();
                if ch == '\'' {
                    self.process_single_quote(&mut result)?;
                } else {
                    self.process_double_quote(&mut result)?;
                }
                if let Some(w) = words.as_deref_mut() {
                    w.add_raw_str(&result[start..]);
                }
                continue;
            }
            if ch == '<' {
                let start = result.len();
                self.process_possible_heredoc(&mut result);
                if let Some(w) = words.as_deref_mut() {
                    w.add_raw_str(&result[start..]);
                }
                continue;
            }
            self.sc.next();
            if ch == self.lex.escape {
                if self.raw_escapes {
                    if let Some(w) = words.as_deref_mut() {
                        w.add_raw_char(ch);
                    }
                    result.push(ch);
                }
                // A trailing escape character is dropped.
                let Some(escaped) = self.sc.next() else { break };
                if let Some(w) = words.as_deref_mut() {
                    w.add_raw_char(escaped);
                }
                result.push(escaped);
            } else {
                if let Some(w) = words.as_deref_mut() {
                    w.add_char(ch);
                }
                result.push(ch);
            }
        }
        if let Some(c) = stop {
            return Err(format!(
                "unexpected end of statement while looking for matching {c}"
            ));
        }
        Ok(result)
    }

    /// `<<` and the blanks after it stay one word, as in BuildKit, so that
    /// `RUN << EOF` and `RUN <<- EOF` name the heredoc `EOF` rather than
    /// seeing a bare `<<`.
    fn process_possible_heredoc(&mut self, out: &mut String) {
        self.sc.next();
        out.push('<');
        if self.sc.peek() != Some('<') {
            return;
        }
        self.sc.next();
        out.push('<');
        if self.sc.peek() == Some('-') {
            self.sc.next();
            out.push('-');
        }
        while let Some(c @ (' ' | '\t' | '\n' | '\r')) = self.sc.peek() {
            self.sc.next();
            out.push(c);
        }
    }

    /// `'...'`: everything up to the next `'` is literal.
    fn process_single_quote(&mut self, out: &mut String) -> Res<()> {
        self.sc.next();
        let raw = self.lex.raw_quotes;
        if raw {
            out.push('\'');
        }
        match self.sc.take_through('\'') {
            Some(text) => {
                out.push_str(text);
                if raw {
                    out.push('\'');
                }
                Ok(())
            }
            None => Err(
                "unexpected end of statement while looking for matching single-quote".to_owned(),
            ),
        }
    }

    /// `"..."`: `$` still expands; the escape character only escapes `"`,
    /// `$` and itself, and is kept literally before anything else.
    fn process_double_quote(&mut self, out: &mut String) -> Res<()> {
        self.sc.next();
        let raw = self.lex.raw_quotes;
        if raw {
            out.push('"');
        }
        loop {
            match self.sc.peek() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching double-quote"
                            .to_owned(),
                    )
                }
                Some('"') => {
                    self.sc.next();
                    if raw {
                        out.push('"');
                    }
                    return Ok(());
                }
                Some('$') => self.process_dollar(out)?,
                Some(mut ch) => {
                    self.sc.next();
                    if ch == self.lex.escape {
                        if self.raw_escapes {
                            out.push(ch);
                        }
                        match self.sc.peek() {
                            // The loop then reports the missing closing quote.
                            None => continue,
                            Some(next) if next == '"' || next == '$' || next == self.lex.escape => {
                                self.sc.next();
                                ch = next;
                            }
                            Some(_) => {}
                        }
                    }
                    out.push(ch);
                }
            }
        }
    }

    /// `$name`, `${name}` and `${name<modifier>...}`, with the `$` next.
    /// `$...` at the cursor, appended to `out`. Nested replacements can grow
    /// a word exponentially, so the result is capped.
    fn process_dollar(&mut self, out: &mut String) -> Res<()> {
        self.process_dollar_unchecked(out)?;
        check_length(out)
    }

    fn process_dollar_unchecked(&mut self, out: &mut String) -> Res<()> {
        self.sc.next();
        if self.sc.peek() != Some('{') {
            let name = self.process_name();
            if name.is_empty() {
                out.push('$');
                return Ok(());
            }
            match self.lookup(name) {
                Some(value) => out.push_str(value),
                None if self.lex.skip_unset_env => {
                    out.push('$');
                    out.push_str(name);
                }
                None => {}
            }
            return Ok(());
        }
        self.sc.next();
        match self.sc.peek() {
            None => return Err("syntax error: missing '}'".to_owned()),
            Some('{' | '}' | ':') => return Err("syntax error: bad substitution".to_owned()),
            Some(_) => {}
        }
        if self.depth >= MAX_NESTING {
            return Err(format!(
                "syntax error: substitutions nested more than {MAX_NESTING} deep"
            ));
        }
        self.depth += 1;
        let result = self.process_braced(out);
        self.depth -= 1;
        result
    }

    /// The rest of `${...}` after the `${`.
    fn process_braced(&mut self, out: &mut String) -> Res<()> {
        let name = self.process_name();
        let mut ch = self.sc.next();
        let mut chs = String::new();
        chs.push(ch.unwrap_or(REPLACEMENT_CHAR));
        match ch {
            Some('}') => {
                match self.lookup(name) {
                    Some(value) => out.push_str(value),
                    None if self.lex.skip_unset_env => {
                        out.push_str("${");
                        out.push_str(name);
                        out.push('}');
                    }
                    None => {}
                }
                Ok(())
            }
            Some('/') => self.process_replace(name, out),
            Some(':' | '+' | '-' | '?' | '#' | '%') => {
                let null_is_unset = ch == Some(':');
                if null_is_unset {
                    ch = self.sc.next();
                    chs.push(ch.unwrap_or(REPLACEMENT_CHAR));
                }
                let raw = matches!(ch, Some('#' | '%'));
                if null_is_unset && raw {
                    return Err(unsupported_modifier(&chs));
                }
                let word = match self.process_until(Some('}'), raw, None) {
                    Ok(word) => word,
                    Err(_) if self.sc.at_end() => {
                        return Err("syntax error: missing '}'".to_owned())
                    }
                    Err(e) => return Err(e),
                };
                let found = self.lookup(name);
                if found.is_none() && self.lex.skip_unset_env {
                    out.push_str("${");
                    out.push_str(name);
                    out.push_str(&chs);
                    out.push_str(&word);
                    out.push('}');
                    return Ok(());
                }
                let value = found.unwrap_or("");
                let unset_or_null = found.is_none() || (null_is_unset && value.is_empty());
                match ch {
                    Some('-') => out.push_str(if unset_or_null { &word } else { value }),
                    Some('+') => {
                        if !unset_or_null {
                            out.push_str(&word);
                        }
                    }
                    Some('?') => {
                        if found.is_none() || (null_is_unset && value.is_empty()) {
                            let message = if !word.is_empty() {
                                word.as_str()
                            } else if found.is_none() {
                                "is not allowed to be unset"
                            } else {
                                "is not allowed to be empty"
                            };
                            return Err(format!("{name}: {message}"));
                        }
                        out.push_str(value);
                    }
                    Some(c @ ('%' | '#')) => {
                        // `%`/`#` remove the shortest match, `%%`/`##` the longest.
                        let (pattern, greedy) = match word.strip_prefix(c) {
                            Some(rest) => (rest, true),
                            None => (word.as_str(), false),
                        };
                        let trimmed = if c == '%' {
                            trim_suffix(pattern, value, greedy)?
                        } else {
                            trim_prefix(pattern, value, greedy)?
                        };
                        out.push_str(&trimmed);
                    }
                    _ => return Err(unsupported_modifier(&chs)),
                }
                Ok(())
            }
            _ => Err(unsupported_modifier(&chs)),
        }
    }

    /// `${name/pattern/replacement}` and `${name//pattern/replacement}`,
    /// with the first `/` consumed.
    fn process_replace(&mut self, name: &str, out: &mut String) -> Res<()> {
        let replace_all = self.sc.peek() == Some('/');
        if replace_all {
            self.sc.next();
        }
        let pattern = match self.process_until(Some('/'), true, None) {
            Ok(pattern) => pattern,
            Err(_) if self.sc.at_end() => return Err("syntax error: missing '/' in ${}".to_owned()),
            Err(e) => return Err(e),
        };
        let replacement = match self.process_until(Some('}'), true, None) {
            Ok(replacement) => replacement,
            Err(_) if self.sc.at_end() => return Err("syntax error: missing '}'".to_owned()),
            Err(e) => return Err(e),
        };
        let found = self.lookup(name);
        if found.is_none() && self.lex.skip_unset_env {
            // Upstream writes a single `/` back even for `//`.
            out.push_str("${");
            out.push_str(name);
            out.push('/');
            out.push_str(&pattern);
            out.push('/');
            out.push_str(&replacement);
            out.push('}');
            return Ok(());
        }
        let value = found.unwrap_or("");
        let invalid = |e: String| format!("invalid pattern ({pattern}) in substitution: {e}");
        match compile_pattern(&pattern, true, false).map_err(invalid)? {
            Pattern::Literal(lit) => {
                if replace_all {
                    replace_all_literal(value, &lit, &replacement, out)?;
                } else {
                    out.push_str(&value.replacen(&lit, &replacement, 1));
                }
            }
            Pattern::Regex(source) => with_regex(&source, |re| {
                if replace_all {
                    let matches = re.find_iter(value).map(|m| m.range());
                    replace_all_matches(value, matches, &replacement, out)
                } else {
                    match re.find(value) {
                        Some(m) => {
                            out.push_str(&value[..m.start()]);
                            out.push_str(&replacement);
                            out.push_str(&value[m.end()..]);
                        }
                        None => out.push_str(value),
                    }
                    Ok(())
                }
            })
            .map_err(invalid)??,
        }
        Ok(())
    }

    /// Reads a variable name: a run of digits (positional parameter), one
    /// special parameter character, or letters, digits and `_`.
    fn process_name(&mut self) -> &'a str {
        let src = self.sc.src;
        let start = self.sc.pos;
        match self.sc.peek() {
            Some(c) if is_go_digit(c) => {
                while self.sc.peek().is_some_and(is_go_digit) {
                    self.sc.next();
                }
                return &src[start..self.sc.pos];
            }
            Some(c @ ('@' | '*' | '#' | '?' | '-' | '$' | '!' | '0')) => {
                self.sc.next();
                return &src[start..start + c.len_utf8()];
            }
            _ => {}
        }
        while self
            .sc
            .peek()
            .is_some_and(|c| c == '_' || is_go_letter(c) || is_go_digit(c))
        {
            self.sc.next();
        }
        &src[start..self.sc.pos]
    }
}

/// Go's `unicode.IsDigit`: general category Nd.
/// The longest word an expansion may produce. Nested `${v//p/r}` can grow
/// a word exponentially; past this it is an error instead of exhausting
/// memory (a real Dockerfile word is a tiny fraction of it).
const MAX_EXPANSION_BYTES: usize = 1 << 20;

fn check_length(out: &str) -> Res<()> {
    if out.len() > MAX_EXPANSION_BYTES {
        return Err(format!(
            "expansion is longer than {MAX_EXPANSION_BYTES} bytes"
        ));
    }
    Ok(())
}

/// `${v//p/r}` with a pattern free of wildcards: every occurrence of `lit`
/// replaced by the expanded template `r`. An empty `lit` matches between
/// every pair of characters, as Go's regexp does.
fn replace_all_literal(value: &str, lit: &str, template: &str, out: &mut String) -> Res<()> {
    if lit.is_empty() {
        let boundaries = value
            .char_indices()
            .map(|(i, _)| i)
            .chain(std::iter::once(value.len()));
        return replace_all_matches(value, boundaries.map(|i| i..i), template, out);
    }
    let matches = value.match_indices(lit).map(|(i, m)| i..i + m.len());
    replace_all_matches(value, matches, template, out)
}

/// Replaces each match range of `value` with the expanded template,
/// appending to `out` and stopping with an error once it is too long.
fn replace_all_matches(
    value: &str,
    matches: impl Iterator<Item = std::ops::Range<usize>>,
    template: &str,
    out: &mut String,
) -> Res<()> {
    let mut last = 0;
    for range in matches {
        out.push_str(&value[last..range.start]);
        expand_go_template(template, &value[range.clone()], out)?;
        last = range.end;
    }
    out.push_str(&value[last..]);
    check_length(out)
}

/// The replacement of `${v//p/r}`. BuildKit hands `r` to Go's
/// `Regexp.ReplaceAllString`, which treats it as a template: `$$` is `$`,
/// `$0`/`${0}` the matched text, any other well-formed `$name`/`${name}`
/// (there are no groups) nothing, and a malformed `$` itself. Only the
/// replace-all form does this; `${v/p/r}` inserts `r` literally.
fn expand_go_template(template: &str, matched: &str, out: &mut String) -> Res<()> {
    let mut rest = template;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        rest = &rest[at + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            out.push('$');
            rest = after;
            continue;
        }
        match template_reference(rest) {
            Some((name, after)) => {
                if name == "0" {
                    out.push_str(matched);
                    check_length(out)?;
                }
                rest = after;
            }
            None => out.push('$'),
        }
    }
    out.push_str(rest);
    check_length(out)
}

/// A reference after `$` in a Go regexp template: `name` or `{name}`, where a
/// name is Unicode letters, digits and `_`. Returns the name and what follows.
fn template_reference(text: &str) -> Option<(&str, &str)> {
    let (body, braced) = match text.strip_prefix('{') {
        Some(body) => (body, true),
        None => (text, false),
    };
    let len = body
        .char_indices()
        .find(|&(_, c)| !(is_go_letter(c) || is_go_digit(c) || c == '_'))
        .map_or(body.len(), |(i, _)| i);
    if len == 0 {
        return None;
    }
    let (name, after) = body.split_at(len);
    if braced {
        return after.strip_prefix('}').map(|after| (name, after));
    }
    Some((name, after))
}

fn is_go_digit(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_digit();
    }
    static DIGIT: OnceLock<Option<Regex>> = OnceLock::new();
    match DIGIT.get_or_init(|| Regex::new(r"\A\p{Nd}\z").ok()) {
        Some(re) => re.is_match(c.encode_utf8(&mut [0; 4])),
        None => c.is_numeric(),
    }
}

/// Go's `unicode.IsLetter`: general category L.
fn is_go_letter(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphabetic();
    }
    static LETTER: OnceLock<Option<Regex>> = OnceLock::new();
    match LETTER.get_or_init(|| Regex::new(r"\A\p{L}\z").ok()) {
        Some(re) => re.is_match(c.encode_utf8(&mut [0; 4])),
        None => c.is_alphabetic(),
    }
}

/// A translated shell pattern. Patterns without `*` or `?` are matched as
/// plain text, which behaves exactly like the equivalent regex but is cheaper.
enum Pattern {
    Literal(String),
    /// The source of an equivalent regex, for [`with_regex`].
    Regex(String),
}

/// How many compiled pattern regexes each thread keeps.
const REGEX_CACHE_ENTRIES: usize = 64;
/// Longer regex sources are compiled every time rather than cached.
const REGEX_CACHE_MAX_SOURCE: usize = 1024;

/// Compiles `source` (or takes it from a small per-thread cache, since the
/// same `${v%.*}` is typically expanded many times) and runs `f` on it.
fn with_regex<T>(source: &str, f: impl FnOnce(&Regex) -> T) -> Res<T> {
    thread_local! {
        static CACHE: RefCell<HashMap<String, Regex>> = RefCell::new(HashMap::new());
    }
    if source.len() > REGEX_CACHE_MAX_SOURCE {
        return Regex::new(source)
            .map(|re| f(&re))
            .map_err(|e| e.to_string());
    }
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some(re) = cache.get(source) {
            return Ok(f(re));
        }
        let re = Regex::new(source).map_err(|e| e.to_string())?;
        let result = f(&re);
        if cache.len() >= REGEX_CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(source.to_owned(), re);
        Ok(result)
    })
}

/// Compiles a shell pattern (`*` any string, `?` any character, `\*`, `\?`,
/// `\\` literal; `\}` and `\/` stand for `}` and `/`) the way BuildKit's
/// `convertShellPatternToRegex` does. `greedy` makes `*` match the longest
/// string; `anchored` only matches at the start.
fn compile_pattern(pattern: &str, greedy: bool, anchored: bool) -> Res<Pattern> {
    let mut re = String::with_capacity(pattern.len() + 8);
    let mut literal = String::with_capacity(pattern.len());
    let mut wild = false;
    if anchored {
        re.push('^');
    }
    let star = if greedy { ".*" } else { ".*?" };
    // Upstream scans the pattern with text/scanner, which skips a leading BOM.
    let mut chars = pattern.strip_prefix(BOM).unwrap_or(pattern).chars();
    while let Some(tok) = chars.next() {
        match tok {
            '*' => {
                wild = true;
                re.push_str(star);
            }
            '?' => {
                wild = true;
                re.push('.');
            }
            '\\' => {
                // `\}` and `\/` are needed inside `${}`; the backslash is not
                // part of the pattern and the next character is handled normally.
                if matches!(chars.clone().next(), Some('}' | '/')) {
                    continue;
                }
                match chars.next() {
                    Some(c @ ('*' | '?' | '\\')) => {
                        re.push('\\');
                        re.push(c);
                        literal.push(c);
                    }
                    other => {
                        return Err(format!(
                            "invalid escape '\\{}'",
                            other.unwrap_or(REPLACEMENT_CHAR)
                        ))
                    }
                }
            }
            '[' | ']' | '{' | '}' | '.' | '+' | '(' | ')' | '|' | '^' | '$' => {
                re.push('\\');
                re.push(tok);
                literal.push(tok);
            }
            _ => {
                re.push(tok);
                literal.push(tok);
            }
        }
    }
    if !wild {
        return Ok(Pattern::Literal(literal));
    }
    Ok(Pattern::Regex(re))
}

/// `${value#pattern}` / `${value##pattern}`: removes the shortest (longest)
/// prefix matching `pattern`.
fn trim_prefix(pattern: &str, value: &str, greedy: bool) -> Res<String> {
    let invalid = |e: String| format!("invalid pattern ({pattern}) in substitution: {e}");
    let end = match compile_pattern(pattern, greedy, true).map_err(invalid)? {
        Pattern::Literal(lit) => {
            if value.starts_with(lit.as_str()) {
                lit.len()
            } else {
                0
            }
        }
        Pattern::Regex(source) => {
            with_regex(&source, |re| re.find(value).map_or(0, |m| m.end())).map_err(invalid)?
        }
    };
    Ok(value[end..].to_owned())
}

/// `${value%pattern}` / `${value%%pattern}`: removes the shortest (longest)
/// suffix matching `pattern`, by reversing both and trimming a prefix.
fn trim_suffix(pattern: &str, value: &str, greedy: bool) -> Res<String> {
    let pattern = reverse_pattern(pattern);
    let value: String = value.chars().rev().collect();
    let trimmed = trim_prefix(&pattern, &value, greedy)?;
    Ok(trimmed.chars().rev().collect())
}

/// Reverses a pattern while keeping each `\x` escape pair in order:
/// `a\*c` becomes `c\*a`.
fn reverse_pattern(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut tokens: Vec<&[char]> = Vec::with_capacity(chars.len());
    let mut i = 0;
    while i < chars.len() {
        let len = if chars[i] == '\\' && i + 1 < chars.len() {
            2
        } else {
            1
        };
        tokens.push(&chars[i..i + len]);
        i += len;
    }
    tokens.iter().rev().flat_map(|t| t.iter()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Vec<(&'static str, &'static str)> {
        vec![("FOO", "foo"), ("EMPTY", ""), ("SPACE", "a  b")]
    }

    fn word(lex: &Lexer, input: &str) -> Result<String, ExpandError> {
        lex.expand_word(input, &env())
    }

    fn words(lex: &Lexer, input: &str) -> Vec<String> {
        lex.expand_words(input, &env()).unwrap()
    }

    #[test]
    fn basic_expansion() {
        let lex = Lexer::default();
        assert_eq!(word(&lex, "x$FOO-${FOO}").unwrap(), "xfoo-foo");
        assert_eq!(word(&lex, "${EMPTY:-d} ${EMPTY-d}").unwrap(), "d ");
        assert_eq!(
            word(&lex, r#"'$FOO' "$FOO" \$FOO"#).unwrap(),
            "$FOO foo $FOO"
        );
        assert_eq!(words(&lex, "a $SPACE \"$SPACE\""), ["a", "a", "b", "a  b"]);
        assert_eq!(words(&lex, r"a\ b '' c"), ["a b", "c"]);
        assert!(lex.expand_words("", &NoEnv).unwrap().is_empty());
    }

    #[test]
    fn raw_quotes_and_raw_escapes() {
        let mut lex = Lexer::new('\\');
        lex.raw_quotes = true;
        lex.raw_escapes = true;
        assert_eq!(words(&lex, r"<<'EOF' a\ b"), ["<<'EOF'", r"a\ b"]);
        assert_eq!(
            word(&lex, r#""x $FOO \$y" 'z'"#).unwrap(),
            r#""x foo \$y" 'z'"#
        );

        let mut quotes_only = Lexer::new('\\');
        quotes_only.raw_quotes = true;
        assert_eq!(word(&quotes_only, r#""a\"b" 'c'"#).unwrap(), r#""a"b" 'c'"#);

        let mut escapes_only = Lexer::new('\\');
        escapes_only.raw_escapes = true;
        // Inside double quotes a kept escape before an ordinary character shows twice.
        assert_eq!(
            word(&escapes_only, r#"a\b "c\d" \"#).unwrap(),
            r"a\b c\\d \"
        );
    }

    #[test]
    fn skip_unset_env_keeps_references() {
        let mut lex = Lexer::new('\\');
        lex.skip_unset_env = true;
        let empty: [(&str, &str); 0] = [];
        assert_eq!(
            lex.expand_word("$FOO ${BAR:-x}", &empty).unwrap(),
            "$FOO ${BAR:-x}"
        );
        assert_eq!(
            lex.expand_word("${A} ${B/x/y} ${C//x/y} ${D?e} $1", &NoEnv)
                .unwrap(),
            "${A} ${B/x/y} ${C/x/y} ${D?e} $1"
        );
        // Set variables still expand.
        assert_eq!(
            word(&lex, "$FOO ${NOPE:-$FOO}").unwrap(),
            "foo ${NOPE:-foo}"
        );
    }

    #[test]
    fn skip_process_quotes() {
        let mut lex = Lexer::new('\\');
        lex.skip_process_quotes = true;
        assert_eq!(word(&lex, r#"'$FOO' "x""#).unwrap(), r#"'foo' "x""#);
        assert_eq!(words(&lex, "'a b'"), ["'a", "b'"]);
    }

    #[test]
    fn backtick_escape() {
        let lex = Lexer::new('`');
        let e = env();
        assert_eq!(
            lex.expand_word(r"C:\path\$FOO", &e).unwrap(),
            r"C:\path\foo"
        );
        assert_eq!(lex.expand_word("a`$FOO b`` c`", &e).unwrap(), "a$FOO b` c");
        assert_eq!(lex.expand_word("\"a`\"b\\\"", &e).unwrap(), "a\"b\\");
        assert_eq!(lex.expand_words("a` b c", &e).unwrap(), ["a b", "c"]);
    }

    #[test]
    fn matches_are_recorded() {
        let lex = Lexer::default();
        let got = lex
            .expand_with_matches("$FOO ${EMPTY} ${NOPE:-${FOO}} $1", &env())
            .unwrap();
        assert_eq!(got.value, "foo  foo ");
        assert_eq!(got.words, ["foo", "foo"]);
        assert_eq!(got.matched.iter().collect::<Vec<_>>(), ["EMPTY", "FOO"]);
        assert_eq!(got.unmatched.iter().collect::<Vec<_>>(), ["1", "NOPE"]);
    }

    #[test]
    fn env_impls_later_entry_wins() {
        let lex = Lexer::default();
        let owned = vec![
            ("A".to_owned(), "1".to_owned()),
            ("A".to_owned(), "2".to_owned()),
        ];
        assert_eq!(lex.expand_word("$A", &owned).unwrap(), "2");
        assert_eq!(
            lex.expand_word("$A", &[("A", "1"), ("A", "3")]).unwrap(),
            "3"
        );
        let map: HashMap<String, String> = [("A".to_owned(), "4".to_owned())].into();
        assert_eq!(lex.expand_word("$A", &map).unwrap(), "4");
        let map: BTreeMap<String, String> = [("A".to_owned(), "5".to_owned())].into();
        assert_eq!(lex.expand_word("$A", &map).unwrap(), "5");
        assert_eq!(lex.expand_word("[$A]", &NoEnv).unwrap(), "[]");
    }

    #[test]
    fn replace_all_expands_go_templates_like_buildkit() {
        let lex = Lexer::default();
        let env = [("v", "a.b.c")];
        let expand = |w: &str| lex.expand_word(w, &env).unwrap();
        // The lexer expands an unquoted `$0` itself (to nothing); quoted, it
        // reaches the template, where `$0` is the match, `$$` a dollar and
        // any other name nothing.
        assert_eq!(expand(r"${v//./[$0]}"), "a[]b[]c");
        assert_eq!(expand(r"${v//./'[$0]'}"), "a[.]b[.]c");
        assert_eq!(expand(r"${v//./'$$'}"), "a$b$c");
        assert_eq!(expand(r"${v//./'${1}x'}"), "axbxc");
        assert_eq!(expand(r"${v//?/'<$0>'}"), "<a><.><b><.><c>");
        // Malformed references keep their `$`.
        assert_eq!(expand(r"${v//./'${x-'}"), "a${x-b${x-c");
        // The single-replacement form is literal.
        assert_eq!(expand(r"${v/./'$$'}"), "a$$b.c");
    }

    #[test]
    fn exponential_expansion_is_capped() {
        let lex = Lexer::default();
        let env = [("v", "aaaaaaaaaaaaaaaa")];
        // Each level multiplies the length by 16.
        let mut word = "${v}".to_owned();
        for _ in 0..6 {
            word = format!("${{v//a/{word}}}");
        }
        let err = lex.expand_word(&word, &env).unwrap_err();
        assert!(err.message.contains("expansion is longer than"), "{err}");
        // Two levels (16^3 bytes) are fine.
        let two = "${v//a/${v//a/${v}}}";
        assert_eq!(lex.expand_word(two, &env).unwrap().len(), 4096);
    }

    #[test]
    fn patterns() {
        let lex = Lexer::default();
        let e = [("P", "a/b/c.tar.gz"), ("D", "$x$"), ("N", "\\")];
        let w = |s: &str| lex.expand_word(s, &e);
        assert_eq!(w("${P#*/}").unwrap(), "b/c.tar.gz");
        assert_eq!(w("${P##*/}").unwrap(), "c.tar.gz");
        assert_eq!(w("${P%.*}").unwrap(), "a/b/c.tar");
        assert_eq!(w("${P%%.*}").unwrap(), "a/b/c");
        assert_eq!(w("${P/\\//-}").unwrap(), "a-b/c.tar.gz");
        assert_eq!(w("${P//\\//-}").unwrap(), "a-b-c.tar.gz");
        assert_eq!(w("${P//?/.}").unwrap(), "............");
        assert_eq!(w("${D//$/S}").unwrap(), "SxS");
        // `//` hands its replacement to Go's ReplaceAllString: `$0` is the match.
        assert_eq!(w("${P//a/'$0'}").unwrap(), "a/b/c.tar.gz");
        // A pattern ending in a lone backslash is an invalid escape.
        let err = w("${P#$N}").unwrap_err();
        assert!(err.message.contains("invalid escape"), "{err}");
        assert_eq!(reverse_pattern(r"a\*c\"), r"\c\*a");
    }

    #[test]
    fn error_messages() {
        let lex = Lexer::default();
        let err = |s: &str| lex.expand_word(s, &NoEnv).unwrap_err();
        assert_eq!(
            err("x${A").to_string(),
            format!("failed to process \"x${{A\": unsupported modifier ({REPLACEMENT_CHAR}) in substitution")
        );
        assert_eq!(err("${A:-x").message, "syntax error: missing '}'");
        assert_eq!(err("${").message, "syntax error: missing '}'");
        assert_eq!(err("${}").message, "syntax error: bad substitution");
        assert_eq!(err("${A/x").message, "syntax error: missing '/' in ${}");
        assert_eq!(err("${A/x/y").message, "syntax error: missing '}'");
        assert_eq!(
            err("${A:#x}").message,
            "unsupported modifier (:#) in substitution"
        );
        assert_eq!(
            err("${A=x}").message,
            "unsupported modifier (=) in substitution"
        );
        assert_eq!(
            err("${A:=x}").message,
            "unsupported modifier (:=) in substitution"
        );
        assert_eq!(err("${A?}").message, "A: is not allowed to be unset");
        assert_eq!(
            lex.expand_word("${A:?}", &[("A", "")]).unwrap_err().message,
            "A: is not allowed to be empty"
        );
        assert_eq!(err("${A?custom $B}").message, "A: custom ");
        assert_eq!(
            err("'x").message,
            "unexpected end of statement while looking for matching single-quote"
        );
        assert_eq!(
            err("\"x\\").message,
            "unexpected end of statement while looking for matching double-quote"
        );
        // A quote error inside braces that reaches the end reads as a missing brace.
        assert_eq!(err("${A:-'x}").message, "syntax error: missing '}'");
    }

    #[test]
    fn leading_bom_is_skipped_like_go_text_scanner() {
        let lex = Lexer::default();
        assert_eq!(
            lex.expand_word("\u{FEFF}a\u{FEFF}", &NoEnv).unwrap(),
            "a\u{FEFF}"
        );
    }

    #[test]
    fn unicode_names_follow_go_classes() {
        let lex = Lexer::default();
        let e = [("é", "1"), ("a", "2"), ("x٣", "3")];
        assert_eq!(lex.expand_word("$é.$a².$x٣", &e).unwrap(), "1.2².3");
        // U+0663 is an Arabic-Indic digit (Nd): a positional parameter.
        assert_eq!(lex.expand_word("$٣x", &e).unwrap(), "x");
    }

    #[test]
    fn deep_nesting_errors_instead_of_overflowing() {
        let lex = Lexer::default();
        let n = 60_000;
        let input = format!("{}x{}", "${a:-".repeat(n), "}".repeat(n));
        let err = lex.expand_word(&input, &NoEnv).unwrap_err();
        assert!(err.message.contains("nested"), "{}", err.message);

        let quoted = format!("{}x{}", "\"${a:-".repeat(n), "}\"".repeat(n));
        assert!(lex.expand_word(&quoted, &NoEnv).is_err());

        // Nesting up to the limit still works.
        let ok = format!(
            "{}x{}",
            "${a:-".repeat(MAX_NESTING),
            "}".repeat(MAX_NESTING)
        );
        assert_eq!(lex.expand_word(&ok, &NoEnv).unwrap(), "x");
        let over = format!(
            "{}x{}",
            "${a:-".repeat(MAX_NESTING + 1),
            "}".repeat(MAX_NESTING + 1)
        );
        assert!(lex.expand_word(&over, &NoEnv).is_err());
    }

    #[test]
    fn hostile_inputs_do_not_panic() {
        let inputs = [
            "$",
            "${",
            "${a",
            "${a/",
            "${a//",
            "${a/x/",
            "${a#\\",
            "${a#\\x}",
            "${a%\\",
            "${a%%\\}",
            "${a/\\x/y}",
            "${a:",
            "${a:-",
            "${a:?",
            "${a:}",
            "${a!}",
            "${@",
            "${#",
            "\\",
            "\"",
            "'",
            "\"\\",
            "${a#[}",
            "${a/(/)}",
            "${a//*/}",
            "$\u{FEFF}",
            "\u{FEFF}",
            "${\u{FEFF}}",
            "${a:-\"}",
            "${a/'/'}",
            "é${é",
            "${a#\\é}",
        ];
        let envs: [&dyn Env; 2] = [&NoEnv, &[("a", "x\\y(z)*")]];
        for lex in [Lexer::new('\\'), Lexer::new('`'), {
            let mut l = Lexer::new('\\');
            l.raw_quotes = true;
            l.raw_escapes = true;
            l.skip_unset_env = true;
            l
        }] {
            for env in envs {
                for input in inputs {
                    let _ = lex.expand_word(input, env);
                    let _ = lex.expand_words(input, env);
                    let _ = lex.expand_with_matches(input, env);
                }
            }
        }
        let lex = Lexer::default();
        let e = [("a", "abc")];
        let msg = lex.expand_word("${a#x\\y}", &e).unwrap_err().message;
        assert_eq!(
            msg,
            "invalid pattern (x\\y) in substitution: invalid escape '\\y'"
        );
        let msg = lex.expand_word("${a%x\\y}", &e).unwrap_err().message;
        assert_eq!(
            msg,
            "invalid pattern (\\yx) in substitution: invalid escape '\\y'"
        );
    }
}
