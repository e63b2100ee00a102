//! The syntax tree a Dockerfile parses into. Every instruction, flag and
//! argument carries the source span it came from, so later stages can point
//! at the exact text when they reject something.

use serde::Serialize;

/// A place in the source: 1-based line, 1-based column counted in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Position {
    pub line: u32,
    pub column: u32,
}

/// A source range; `end` is exclusive. For text joined from several physical
/// lines (line continuations) `start` and `end` can be on different lines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub struct Span {
    pub start: Position,
    pub end: Position,
}

/// A parsed Dockerfile.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Dockerfile {
    /// Parser directives found at the top (`syntax`, `escape`, `check`).
    pub directives: Vec<Directive>,
    /// The escape character in effect: `\` or `` ` ``.
    pub escape: char,
    pub instructions: Vec<Instruction>,
    /// Problems that do not stop the parse (empty continuation lines,
    /// deprecated instructions, invalid UTF-8 replaced). Never printed here.
    pub warnings: Vec<Warning>,
}

/// A parser directive such as `# escape=\``.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Directive {
    /// Lower-cased name: `syntax`, `escape` or `check`.
    pub name: String,
    pub value: String,
    pub line: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Warning {
    pub message: String,
    pub detail: Option<String>,
    pub line: u32,
}

/// The instructions BuildKit's dockerfile:1 frontend knows, plus `Unknown`
/// for any other keyword (kept so that the build step can reject it with a
/// position, as BuildKit does).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InstructionKind {
    Add,
    Arg,
    Cmd,
    Copy,
    Entrypoint,
    Env,
    Expose,
    From,
    Healthcheck,
    Label,
    Maintainer,
    Onbuild,
    Run,
    Shell,
    Stopsignal,
    User,
    Volume,
    Workdir,
    Unknown,
}

impl InstructionKind {
    /// All known instructions, in alphabetical order.
    pub const KNOWN: [InstructionKind; 18] = [
        Self::Add,
        Self::Arg,
        Self::Cmd,
        Self::Copy,
        Self::Entrypoint,
        Self::Env,
        Self::Expose,
        Self::From,
        Self::Healthcheck,
        Self::Label,
        Self::Maintainer,
        Self::Onbuild,
        Self::Run,
        Self::Shell,
        Self::Stopsignal,
        Self::User,
        Self::Volume,
        Self::Workdir,
    ];

    /// Looks up a keyword, ignoring ASCII case.
    pub fn from_keyword(word: &str) -> InstructionKind {
        Self::KNOWN
            .into_iter()
            .find(|kind| kind.name().eq_ignore_ascii_case(word))
            .unwrap_or(Self::Unknown)
    }

    /// The keyword in upper case, as the Dockerfile reference writes it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Add => "ADD",
            Self::Arg => "ARG",
            Self::Cmd => "CMD",
            Self::Copy => "COPY",
            Self::Entrypoint => "ENTRYPOINT",
            Self::Env => "ENV",
            Self::Expose => "EXPOSE",
            Self::From => "FROM",
            Self::Healthcheck => "HEALTHCHECK",
            Self::Label => "LABEL",
            Self::Maintainer => "MAINTAINER",
            Self::Onbuild => "ONBUILD",
            Self::Run => "RUN",
            Self::Shell => "SHELL",
            Self::Stopsignal => "STOPSIGNAL",
            Self::User => "USER",
            Self::Volume => "VOLUME",
            Self::Workdir => "WORKDIR",
            Self::Unknown => "UNKNOWN",
        }
    }

    /// The flags dockerfile:1 accepts on this instruction (without `--`).
    pub fn valid_flags(self) -> &'static [&'static str] {
        match self {
            Self::Add => &[
                "chown",
                "chmod",
                "link",
                "exclude",
                "keep-git-dir",
                "checksum",
                "unpack",
            ],
            Self::Copy => &["from", "chown", "chmod", "link", "exclude", "parents"],
            Self::From => &["platform"],
            Self::Run => &["mount", "network", "security", "device"],
            Self::Healthcheck => &[
                "interval",
                "timeout",
                "start-period",
                "start-interval",
                "retries",
            ],
            _ => &[],
        }
    }

    /// Instructions whose arguments may open heredocs.
    pub fn can_have_heredocs(self) -> bool {
        matches!(self, Self::Run | Self::Copy | Self::Add)
    }
}

/// One instruction, after line continuations were joined.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Instruction {
    /// The keyword exactly as written (`from`, `FROM`, `From`...).
    pub keyword: String,
    pub kind: InstructionKind,
    pub keyword_span: Span,
    /// The `--flags` before the arguments, in order.
    pub flags: Vec<Flag>,
    pub args: Arguments,
    /// The logical line: continuations joined, comment lines inside them
    /// dropped, heredoc bodies not included.
    pub original: String,
    /// First physical line (1-based).
    pub start_line: u32,
    /// Last physical line, counting continuation lines and heredoc bodies.
    pub end_line: u32,
    pub heredocs: Vec<Heredoc>,
}

impl Instruction {
    /// The first flag named `name` (without `--`), if given.
    pub fn flag(&self, name: &str) -> Option<&Flag> {
        self.flags.iter().find(|f| f.name == name)
    }

    /// Whether the arguments were written as a JSON array (exec form).
    pub fn is_json_form(&self) -> bool {
        match &self.args {
            Arguments::Exec(_) => true,
            Arguments::Healthcheck { command, .. } => matches!(**command, Arguments::Exec(_)),
            _ => false,
        }
    }
}

/// A `--name[=value]` flag. Quotes were removed and backslash escapes
/// resolved, as BuildKit stores them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Flag {
    /// The whole flag as stored, with its leading `--`: `--from=build`.
    pub text: String,
    /// The name without `--`: `from`.
    pub name: String,
    /// The value after the first `=`; `None` for a bare `--link`.
    pub value: Option<String>,
    pub span: Span,
}

/// One argument string and where it came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Arg {
    pub value: String,
    pub span: Span,
}

/// `key=value` (or legacy `key value`) pair of ENV and LABEL. The value
/// keeps its quotes and escapes exactly as written; expansion removes them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KeyValue {
    pub key: Arg,
    pub value: Arg,
}

/// An instruction's arguments, split the way BuildKit splits them for that
/// instruction.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "form", content = "value", rename_all = "snake_case")]
pub enum Arguments {
    /// Nothing after the keyword and flags.
    None,
    /// One string: shell form of RUN/CMD/ENTRYPOINT/SHELL, and the single
    /// argument of USER, WORKDIR, MAINTAINER and STOPSIGNAL.
    Text(Arg),
    /// A JSON array (exec form) of RUN/CMD/ENTRYPOINT/SHELL/ADD/COPY/VOLUME.
    Exec(Vec<Arg>),
    /// Separate words: FROM, EXPOSE, non-JSON ADD/COPY/VOLUME (split on
    /// whitespace) and ARG (quote-aware words, quotes kept).
    List(Vec<Arg>),
    /// ENV and LABEL pairs; `legacy` is the old `KEY value` form.
    KeyValues { pairs: Vec<KeyValue>, legacy: bool },
    /// `HEALTHCHECK [--flags] TYPE [command]`: `kind` is `CMD`, `NONE`...
    Healthcheck { kind: Arg, command: Box<Arguments> },
    /// `ONBUILD` and the instruction it defers.
    Onbuild(Box<Instruction>),
    /// The arguments of an unknown keyword, which BuildKit discards.
    Unknown,
}

/// A heredoc body (`<<EOF` ... `EOF`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Heredoc {
    /// The terminator word with its quotes removed.
    pub name: String,
    /// The body lines exactly as written, each with its line ending. With
    /// `chomp` the leading tabs are still there: the consumer removes them.
    pub content: String,
    /// False when any part of the word was quoted (`<<'EOF'`): no expansion.
    pub expand: bool,
    /// `<<-`: leading tabs are stripped from the body and the terminator.
    pub chomp: bool,
    /// The number written before `<<` (`3<<EOF`), or 0.
    pub fd: u32,
    /// The line of the first body line (1-based).
    pub body_line: u32,
}

impl Heredoc {
    /// The body with `<<-` applied: leading tabs removed from each line.
    pub fn chomped_content(&self) -> String {
        if !self.chomp {
            return self.content.clone();
        }
        self.content
            .split_inclusive('\n')
            .map(|line| line.trim_start_matches('\t'))
            .collect()
    }
}
