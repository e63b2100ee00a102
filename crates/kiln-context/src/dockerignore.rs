//! `.dockerignore`: reading the file and deciding which context paths it
//! excludes, with the semantics of moby/patternmatcher (matching) and
//! BuildKit's `ignorefile.ReadAll` (reading), so a context sent by kiln
//! holds exactly the files `docker build` would send.
//!
//! Patterns follow Go's `filepath.Match` per path part, plus `**`. Where
//! upstream's translation to a regular expression accidentally gives a
//! pattern another meaning (a `*` or `?` inside `[...]`, `\` before a
//! letter, a bare `^`), this module keeps the `filepath.Match` meaning.

use std::io;
use std::path::{Path, PathBuf};

use regex::Regex;

/// A pattern list that cannot be used, or a `.dockerignore` that cannot
/// be read.
#[derive(Debug, thiserror::Error)]
pub enum IgnoreError {
    #[error("invalid .dockerignore pattern `{pattern}`: {reason}")]
    BadPattern { pattern: String, reason: String },
    #[error("illegal exclusion pattern: \"!\"")]
    LoneExclamation,
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Splits the text of a `.dockerignore` file into patterns, as BuildKit
/// does: comments and blank lines dropped, each pattern cleaned and made
/// relative, `!` kept in front of exceptions.
pub fn read_patterns(text: &str) -> Vec<String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut patterns = Vec::new();
    for line in text.lines() {
        // Only a `#` in the very first column starts a comment.
        if line.starts_with('#') {
            continue;
        }
        let mut pattern = line.trim();
        if pattern.is_empty() {
            continue;
        }
        let invert = pattern.starts_with('!');
        if invert {
            pattern = pattern[1..].trim();
        }
        let mut cleaned = String::new();
        if !pattern.is_empty() {
            cleaned = clean(pattern);
            if cleaned.len() > 1 && cleaned.starts_with('/') {
                cleaned.remove(0);
            }
        }
        if invert {
            cleaned.insert(0, '!');
        }
        patterns.push(cleaned);
    }
    patterns
}

/// Reads the ignore file that applies to a build: `<Dockerfile>.dockerignore`
/// next to the Dockerfile wins over `<context>/.dockerignore`; with neither,
/// nothing is excluded. A relative `dockerfile` is taken as it is given.
pub fn load(context_dir: &Path, dockerfile: &Path) -> Result<Ignore, IgnoreError> {
    let mut candidates = Vec::with_capacity(2);
    if let Some(name) = dockerfile.file_name() {
        let mut own = name.to_os_string();
        own.push(".dockerignore");
        candidates.push(dockerfile.with_file_name(own));
    }
    candidates.push(context_dir.join(".dockerignore"));
    for path in candidates {
        match read_bounded(&path) {
            Ok(bytes) => {
                return Ignore::new(&read_patterns(&String::from_utf8_lossy(&bytes)));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => return Err(IgnoreError::Io { path, source }),
        }
    }
    Ok(Ignore::default())
}

/// The most of a `.dockerignore` kiln reads: as much as of a Dockerfile
/// (the context is untrusted: its `.dockerignore` may be `/dev/zero`).
const MAX_DOCKERIGNORE_BYTES: u64 = 16 << 20;

fn read_bounded(path: &Path) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_DOCKERIGNORE_BYTES + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_DOCKERIGNORE_BYTES {
        return Err(io::Error::other("larger than 16 MiB, the most kiln reads"));
    }
    Ok(bytes)
}

/// A compiled pattern list; the default one excludes nothing.
#[derive(Debug, Default)]
pub struct Ignore {
    patterns: Vec<Pattern>,
}

#[derive(Debug)]
struct Pattern {
    /// The cleaned pattern without its `!`, as upstream reports it.
    text: String,
    exception: bool,
    /// How many `/`-separated parts it has; only the legacy rule uses it.
    parts: usize,
    kind: Kind,
}

/// Upstream avoids regular expressions for the common shapes; the shapes
/// also differ in meaning (`abc/**` is a prefix test, so it misses `abc`).
#[derive(Debug)]
enum Kind {
    Exact,
    Prefix(String),
    Suffix(String),
    Regex(Regex),
    /// Passed the syntax check but cannot be compiled; upstream reports
    /// this only when the pattern is used, so this does too.
    Broken(String),
}

impl Ignore {
    /// Compiles `.dockerignore` patterns (as [`read_patterns`] gives them).
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Ignore, IgnoreError> {
        let mut compiled = Vec::with_capacity(patterns.len());
        for raw in patterns {
            let trimmed = raw.as_ref().trim();
            if trimmed.is_empty() {
                continue;
            }
            // Cleaned before the `!` is taken off, as upstream does.
            let cleaned = clean(trimmed);
            let (exception, text) = match cleaned.strip_prefix('!') {
                Some("") => return Err(IgnoreError::LoneExclamation),
                Some(rest) => (true, rest.to_string()),
                None => (false, cleaned),
            };
            let tokens = parse(&text).map_err(|reason| IgnoreError::BadPattern {
                pattern: text.clone(),
                reason: reason.to_string(),
            })?;
            compiled.push(Pattern {
                parts: text.split('/').count(),
                kind: compile(&text, &tokens),
                text,
                exception,
            });
        }
        Ok(Ignore { patterns: compiled })
    }

    /// True when there are no patterns, so nothing is ever excluded.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether `path` (slash-separated, relative to the context, already
    /// clean: it is used as given, as upstream does) is excluded: the last
    /// pattern that matches it or one of its parent directories decides
    /// (upstream `MatchesOrParentMatches`).
    pub fn matches(&self, path: &str) -> Result<bool, IgnoreError> {
        if is_clean(path) {
            // What `ancestors` gives, as slices of the path itself (a
            // build asks this of every file of the context).
            let parents: Vec<&str> = path.match_indices('/').map(|(i, _)| &path[..i]).collect();
            return self.decide(path, |p| parents.iter().any(|a| p.is_match(a)));
        }
        let ancestors = ancestors(path);
        self.decide(path, |p| ancestors.iter().any(|a| p.is_match(a)))
    }

    /// The deprecated upstream package function `Matches(path, patterns)`:
    /// a pattern of k parts is tried on the whole path and then only on the
    /// first k parts of its directory. Kept for conformance with upstream.
    pub fn legacy_matches(&self, path: &str) -> Result<bool, IgnoreError> {
        let path = clean(path);
        if path == "." {
            return Ok(false);
        }
        let ancestors = ancestors(&path);
        self.decide(&path, |p| {
            p.parts
                .checked_sub(1)
                .and_then(|i| ancestors.get(i))
                .is_some_and(|a| p.is_match(a))
        })
    }

    /// True only when `dir` is excluded and no exception could re-include
    /// anything below it, so a walker need not read it. Follows fsutil: any
    /// exception with a wildcard (beyond a trailing `/*` or `/**`) forbids
    /// skipping anywhere; a literal one forbids it for its own ancestors.
    pub fn excludes_dir_entirely(&self, dir: &str) -> bool {
        if !matches!(self.matches(dir), Ok(true)) {
            return false;
        }
        let dir_slash = format!("{}/", dir.trim_end_matches('/'));
        self.patterns.iter().filter(|p| p.exception).all(|p| {
            let literal = p.text.strip_suffix("/**").unwrap_or(&p.text);
            let literal = literal.strip_suffix("/*").unwrap_or(literal);
            !literal.contains(['*', '[', ']', '?', '^', '\\'])
                && !format!("{literal}/").starts_with(&dir_slash)
        })
    }

    /// Runs the patterns in order; `also` is the rule's extra test on
    /// parent directories, tried only when the path itself did not match.
    fn decide(&self, path: &str, also: impl Fn(&Pattern) -> bool) -> Result<bool, IgnoreError> {
        let mut excluded = false;
        for p in &self.patterns {
            // A pattern that cannot change the answer is not even tried,
            // so (as upstream) a broken one only fails when it matters.
            if p.exception != excluded {
                continue;
            }
            if p.try_match(path)? || also(p) {
                excluded = !p.exception;
            }
        }
        Ok(excluded)
    }
}

impl Pattern {
    fn try_match(&self, path: &str) -> Result<bool, IgnoreError> {
        Ok(match &self.kind {
            Kind::Exact => path == self.text,
            Kind::Prefix(prefix) => path.starts_with(prefix.as_str()),
            Kind::Suffix(suffix) => {
                path.ends_with(suffix.as_str())
                    || suffix.strip_prefix('/').is_some_and(|s| path == s)
            }
            Kind::Regex(re) => re.is_match(path),
            Kind::Broken(reason) => {
                return Err(IgnoreError::BadPattern {
                    pattern: self.text.clone(),
                    reason: reason.clone(),
                })
            }
        })
    }

    /// Parent directories are tried with errors ignored, as upstream does
    /// (the path itself has already reported them).
    fn is_match(&self, path: &str) -> bool {
        self.try_match(path).unwrap_or(false)
    }
}

#[derive(Debug)]
enum Token {
    Literal(char),
    /// A literal that upstream sends down its regex path (an escaped
    /// character, a stray `]`), which changes the match shape.
    RegexLiteral(char),
    /// `*`: any run of characters within one path part.
    Star,
    /// `**`, having eaten a following `/`.
    AnyDirs,
    Question,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

/// Tokenises a pattern, rejecting what `filepath.Match` rejects: a trailing
/// `\` and malformed classes (`[`, `[^`, `[]a]`, `[-]`, `[a-b-c]`, ...).
fn parse(pattern: &str) -> Result<Vec<Token>, &'static str> {
    let mut chars = pattern.chars().peekable();
    let mut tokens = Vec::new();
    while let Some(c) = chars.next() {
        tokens.push(match c {
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                chars.next_if_eq(&'/');
                Token::AnyDirs
            }
            '*' => Token::Star,
            '?' => Token::Question,
            '\\' => Token::RegexLiteral(chars.next().ok_or("trailing backslash")?),
            ']' => Token::RegexLiteral(']'),
            '[' => {
                let negated = chars.next_if_eq(&'^').is_some();
                let mut ranges = Vec::new();
                loop {
                    if !ranges.is_empty() && chars.next_if_eq(&']').is_some() {
                        break;
                    }
                    let lo = class_char(&mut chars)?;
                    let hi = match chars.next_if_eq(&'-') {
                        Some(_) => class_char(&mut chars)?,
                        None => lo,
                    };
                    ranges.push((lo, hi));
                }
                Token::Class { negated, ranges }
            }
            other => Token::Literal(other),
        });
    }
    Ok(tokens)
}

/// One end of a class range; like Go, something must follow it.
fn class_char(chars: &mut std::iter::Peekable<std::str::Chars>) -> Result<char, &'static str> {
    let c = match chars.next() {
        None => return Err("unterminated character class"),
        Some('-' | ']') => return Err("misplaced `-` or `]` in character class"),
        Some('\\') => chars.next().ok_or("unterminated character class")?,
        Some(c) => c,
    };
    match chars.peek() {
        Some(_) => Ok(c),
        None => Err("unterminated character class"),
    }
}

/// Chooses the match shape exactly as upstream does, since the shape
/// decides edge cases (`**/foo` matches `foo`; `abc/**` misses `abc`).
fn compile(text: &str, tokens: &[Token]) -> Kind {
    #[derive(PartialEq)]
    enum Shape {
        Exact,
        Prefix,
        Suffix,
        Regex,
    }
    let mut shape = Shape::Exact;
    let mut re = String::from("^");
    for (i, token) in tokens.iter().enumerate() {
        match token {
            Token::Literal(c) => re.push_str(&regex::escape(c.encode_utf8(&mut [0; 4]))),
            Token::RegexLiteral(c) => {
                re.push_str(&regex::escape(c.encode_utf8(&mut [0; 4])));
                shape = Shape::Regex;
            }
            Token::AnyDirs if i + 1 == tokens.len() => {
                if shape == Shape::Exact {
                    shape = Shape::Prefix;
                } else {
                    re.push_str(".*");
                    shape = Shape::Regex;
                }
            }
            Token::AnyDirs => {
                re.push_str("(?:.*/)?");
                shape = Shape::Regex;
            }
            Token::Star => {
                re.push_str("[^/]*");
                shape = Shape::Regex;
            }
            Token::Question => {
                re.push_str("[^/]");
                shape = Shape::Regex;
            }
            Token::Class { negated, ranges } => {
                re.push('[');
                if *negated {
                    re.push('^');
                }
                for &(lo, hi) in ranges {
                    if lo > hi {
                        return Kind::Broken(format!("invalid character class range {lo}-{hi}"));
                    }
                    re.push_str(&regex::escape(lo.encode_utf8(&mut [0; 4])));
                    re.push('-');
                    re.push_str(&regex::escape(hi.encode_utf8(&mut [0; 4])));
                }
                re.push(']');
                shape = Shape::Regex;
            }
        }
        if i == 0 && matches!(token, Token::AnyDirs) {
            shape = Shape::Suffix;
        }
    }
    match shape {
        Shape::Exact => Kind::Exact,
        Shape::Prefix => Kind::Prefix(text.strip_suffix("**").unwrap_or(text).to_string()),
        Shape::Suffix => Kind::Suffix(text.strip_prefix("**").unwrap_or(text).to_string()),
        Shape::Regex => {
            re.push('$');
            match Regex::new(&re) {
                Ok(re) => Kind::Regex(re),
                Err(e) => Kind::Broken(e.to_string()),
            }
        }
    }
}

/// Go's `filepath.Clean` for `/`-separated paths: the shortest equivalent
/// path, lexically (`a//b/./c/..` → `a/b`, `` → `.`).
fn clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." if parts.last().is_some_and(|p| *p != "..") => {
                parts.pop();
            }
            ".." if rooted => {}
            _ => parts.push(part),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

/// Whether `clean` leaves `path` as it is and Go's `filepath.Dir` of it
/// is its text up to the last `/`: relative, no empty, `.` or `..` part.
fn is_clean(path: &str) -> bool {
    !path.is_empty() && path.split('/').all(|part| !matches!(part, "" | "." | ".."))
}

/// The leading directory prefixes of a path as upstream forms them from
/// Go's `filepath.Dir`: `a/b/c` gives `a`, `a/b`; `file` gives none.
fn ancestors(path: &str) -> Vec<String> {
    let parent = dir(path);
    if parent == "." {
        return Vec::new();
    }
    let parts: Vec<&str> = parent.split('/').collect();
    (1..=parts.len()).map(|n| parts[..n].join("/")).collect()
}

/// Go's `filepath.Dir`: all but the last part, cleaned (`a/b/` → `a/b`,
/// `file` → `.`).
fn dir(path: &str) -> String {
    clean(path.rfind('/').map_or("", |i| &path[..=i]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_paths_have_their_prefixes_as_ancestors() {
        for path in ["a", "a/b", "a/b/c.txt", "src/pkg00/mod00/f", "x.y/z"] {
            assert!(is_clean(path), "{path}");
            let sliced: Vec<&str> = path.match_indices('/').map(|(i, _)| &path[..i]).collect();
            assert_eq!(sliced, ancestors(path), "{path}");
        }
        for path in ["", "/a", "a/", "a//b", "./a", "a/./b", "a/../b", ".."] {
            assert!(!is_clean(path), "{path}");
        }
    }

    #[test]
    fn clean_matches_go() {
        for (input, want) in [
            ("", "."),
            ("/", "/"),
            ("a//b/./c/..", "a/b"),
            ("../a/../..", "../.."),
            ("/../a", "/a"),
            ("docs/", "docs"),
            ("**/", "**"),
        ] {
            assert_eq!(clean(input), want, "clean({input:?})");
        }
        assert_eq!(dir("a/b/"), "a/b");
        assert_eq!(dir("file"), ".");
        assert_eq!(dir("/"), "/");
    }

    #[test]
    fn escaped_literal_is_not_an_exact_pattern() {
        let ignore = Ignore::new(&["a\\b"]).expect("valid");
        assert!(ignore.matches("ab").expect("matches"));
        assert!(!ignore.matches("a\\b").expect("matches"));
    }

    #[test]
    fn wildcards_inside_classes_are_literal() {
        let ignore = Ignore::new(&["[*?]"]).expect("valid");
        assert!(ignore.matches("*").expect("matches"));
        assert!(ignore.matches("?").expect("matches"));
        assert!(!ignore.matches("x").expect("matches"));
    }

    #[test]
    fn skipping_directories() {
        let ignore = Ignore::new(&["build", "!build/keep.txt", "node_modules"]).expect("valid");
        assert!(!ignore.excludes_dir_entirely("build"));
        assert!(ignore.excludes_dir_entirely("node_modules"));
        assert!(ignore.excludes_dir_entirely("node_modules/"));
        assert!(!ignore.excludes_dir_entirely("src"));

        let wild = Ignore::new(&["build", "node_modules", "!**/*.md"]).expect("valid");
        assert!(!wild.excludes_dir_entirely("node_modules"));

        let trailing = Ignore::new(&["vendor", "!vendor/keep/**"]).expect("valid");
        assert!(!trailing.excludes_dir_entirely("vendor"));
        assert!(!trailing.excludes_dir_entirely("vendor/keep"));
        assert!(trailing.excludes_dir_entirely("vendor/other"));
    }

    #[test]
    fn arbitrary_input_never_panics() {
        const ALPHABET: &[char] = &[
            '*', '?', '[', ']', '^', '!', '-', '\\', '/', '.', 'a', 'z', ' ', '#', 'é',
        ];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut text = |len: usize| -> String {
            (0..len)
                .map(|_| {
                    // A 64-bit LCG is plenty to shuffle a small alphabet.
                    seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                    ALPHABET[(seed >> 33) as usize % ALPHABET.len()]
                })
                .collect()
        };
        for round in 0..5_000 {
            let patterns = read_patterns(&format!("{}\n{}", text(round % 9), text(round % 7)));
            let path = text(round % 11);
            if let Ok(ignore) = Ignore::new(&patterns) {
                let _ = ignore.matches(&path);
                let _ = ignore.legacy_matches(&path);
                let _ = ignore.excludes_dir_entirely(&path);
            }
        }
    }

    #[test]
    fn broken_pattern_fails_only_when_used() {
        let ignore = Ignore::new(&["a", "[Local-Only]/"]).expect("accepted when built");
        assert!(ignore
            .matches("a")
            .expect("skipped: cannot change the answer"));
        let err = ignore.matches("b").expect_err("fails when tried");
        assert!(err.to_string().contains("[Local-Only]"), "{err}");
        assert!(ignore.matches("b").is_err(), "fails again, no panic");
    }
}
