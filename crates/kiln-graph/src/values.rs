//! Parsers for the values metadata instructions take: Go durations
//! (HEALTHCHECK), port specs (EXPOSE), signals (STOPSIGNAL) and RUN --mount
//! option lists. Each returns a message on error; the planner adds the
//! position.

use crate::graph::{MountKind, MountOptions, Sharing};

/// A Go `time.ParseDuration` string in nanoseconds; negative values are
/// reported as such so callers can reject them with their own words.
pub fn parse_go_duration(text: &str) -> Result<i128, String> {
    let invalid = || format!("invalid duration {text:?}");
    let (negative, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = &rest[..number_len];
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(invalid());
        }
        let value: f64 = number.parse().map_err(|_| invalid())?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => return Err(format!("missing unit in duration {text:?}")),
            unit => return Err(format!("unknown unit {unit:?} in duration {text:?}")),
        };
        rest = &rest[unit_len..];
        total += value * scale;
    }
    if total > i64::MAX as f64 {
        return Err(invalid());
    }
    let nanos = total.round() as i128;
    Ok(if negative { -nanos } else { nanos })
}

/// EXPOSE words to `port/proto` keys: `80`, `80/udp`, `8000-8002/tcp`
/// (a range gives one key per port), `127.0.0.1:80:80`.
pub fn parse_port_spec(spec: &str) -> Result<Vec<String>, String> {
    let (ports, proto) = match spec.rsplit_once('/') {
        Some((ports, proto)) => (ports, proto.to_ascii_lowercase()),
        None => (spec, "tcp".to_owned()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!("invalid proto {proto:?} in port {spec:?}"));
    }
    // ip:hostPort:containerPort and hostPort:containerPort publish forms:
    // only the container port is exposed.
    let container = ports.rsplit(':').next().unwrap_or(ports);
    let parse = |p: &str| -> Result<u16, String> {
        p.parse::<u16>()
            .map_err(|_| format!("invalid port {p:?} in {spec:?}"))
    };
    let (start, end) = match container.split_once('-') {
        Some((a, b)) => (parse(a)?, parse(b)?),
        None => {
            let p = parse(container)?;
            (p, p)
        }
    };
    if end < start {
        return Err(format!(
            "invalid port range {container:?}: end before start"
        ));
    }
    Ok((start..=end).map(|p| format!("{p}/{proto}")).collect())
}

const SIGNALS: &[&str] = &[
    "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT", "KILL",
    "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM", "TRAP", "TSTP",
    "TTIN", "TTOU", "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ",
];

/// Checks a STOPSIGNAL value: a number 1-64 or a Linux signal name, with or
/// without `SIG`, including `RTMIN+n` / `RTMAX-n`.
pub fn check_signal(text: &str) -> Result<(), String> {
    let invalid = || format!("invalid signal: {text}");
    if let Ok(n) = text.parse::<u32>() {
        return if (1..=64).contains(&n) {
            Ok(())
        } else {
            Err(invalid())
        };
    }
    let upper = text.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if SIGNALS.contains(&name) {
        return Ok(());
    }
    let rt = |prefix: &str, sep: char| {
        name.strip_prefix(prefix).is_some_and(|rest| {
            rest.is_empty()
                || rest
                    .strip_prefix(sep)
                    .and_then(|n| n.parse::<u32>().ok())
                    .is_some_and(|n| (1..=15).contains(&n))
        })
    };
    if rt("RTMIN", '+') || rt("RTMAX", '-') {
        return Ok(());
    }
    Err(invalid())
}

/// A `--mount` value split into its options, before references are
/// resolved.
#[derive(Debug, PartialEq, Eq)]
pub struct MountSpec {
    pub kind: MountKind,
    pub target: Option<String>,
    pub source: Option<String>,
    pub from: Option<String>,
    pub read_only: Option<bool>,
    pub options: MountOptions,
}

/// Parses `type=cache,target=/x,...` (CSV: a field may be double-quoted).
pub fn parse_mount(text: &str) -> Result<MountSpec, String> {
    let mut spec = MountSpec {
        kind: MountKind::Bind,
        target: None,
        source: None,
        from: None,
        read_only: None,
        options: MountOptions::default(),
    };
    for field in split_csv(text)? {
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(v.to_owned())),
            None => (field.trim().to_ascii_lowercase(), None),
        };
        let bool_value = |v: &Option<String>| -> Result<bool, String> {
            match v.as_deref().map(str::to_ascii_lowercase).as_deref() {
                None | Some("true") | Some("1") => Ok(true),
                Some("false") | Some("0") => Ok(false),
                Some(other) => Err(format!("invalid value {other:?} for {key}")),
            }
        };
        let need = |v: Option<String>| v.ok_or_else(|| format!("mount option {key} needs a value"));
        match key.as_str() {
            "type" => {
                spec.kind = match need(value)?.as_str() {
                    "bind" => MountKind::Bind,
                    "cache" => MountKind::Cache,
                    "tmpfs" => MountKind::Tmpfs,
                    "secret" => MountKind::Secret,
                    "ssh" => MountKind::Ssh,
                    other => {
                        return Err(format!(
                            "unsupported mount type {other:?} (bind, cache, tmpfs, secret, ssh)"
                        ))
                    }
                }
            }
            "target" | "dst" | "destination" => spec.target = Some(need(value)?),
            "source" | "src" => spec.source = Some(need(value)?),
            "from" => spec.from = Some(need(value)?),
            "readonly" | "ro" => spec.read_only = Some(bool_value(&value)?),
            "readwrite" | "rw" => spec.read_only = Some(!bool_value(&value)?),
            "id" => spec.options.id = Some(need(value)?),
            "env" => spec.options.env = Some(need(value)?),
            "required" => spec.options.required = bool_value(&value)?,
            "sharing" => {
                spec.options.sharing = match need(value)?.as_str() {
                    "shared" => Sharing::Shared,
                    "private" => Sharing::Private,
                    "locked" => Sharing::Locked,
                    other => {
                        return Err(format!(
                            "unsupported sharing value {other:?} (shared, private, locked)"
                        ))
                    }
                }
            }
            "uid" | "gid" => {
                let value = need(value)?;
                let id = value
                    .parse::<u32>()
                    .map_err(|_| format!("invalid {key} {value:?}: expected a number"))?;
                if key == "uid" {
                    spec.options.uid = Some(id);
                } else {
                    spec.options.gid = Some(id);
                }
            }
            "mode" => {
                let value = need(value)?;
                let mode = u32::from_str_radix(&value, 8)
                    .ok()
                    .filter(|m| *m <= 0o7777)
                    .ok_or_else(|| format!("invalid mode {value:?}: expected octal"))?;
                spec.options.mode = Some(mode);
            }
            "size" => spec.options.size = Some(parse_memory_size(&need(value)?)?),
            _ => return Err(format!("unexpected key {key:?} in mount {text:?}")),
        }
    }
    Ok(spec)
}

/// Splits one CSV record the way Go's encoding/csv does for a single line.
fn split_csv(text: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                    None => return Err(format!("unterminated quote in {text:?}")),
                }
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => {}
                Some(_) => return Err(format!("extraneous text after quoted field in {text:?}")),
            }
        } else {
            loop {
                match chars.next() {
                    Some(',') => break,
                    Some(c) => field.push(c),
                    None => {
                        fields.push(field);
                        return Ok(fields);
                    }
                }
            }
        }
        fields.push(field);
    }
}

/// Parses a size in Docker's grammar (`docker run --memory`, a tmpfs
/// mount's `size=`: go-units' `RAMInBytes`):
/// a number, possibly with a fraction, and an optional unit `b`, `k`,
/// `m`, `g`, `t` or `p` (any case, binary multiples, optionally followed
/// by `i` and/or `b`: `64m`, `1.5g`, `512MiB`, `1048576`).
pub fn parse_memory_size(text: &str) -> Result<u64, String> {
    let bad = || {
        format!("invalid size {text:?}: expected a number with an optional unit (b, k, m, g, t, p), e.g. 64m")
    };
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    if number.is_empty() || number.starts_with('.') || number.ends_with('.') {
        return Err(bad());
    }
    let value: f64 = number.parse().map_err(|_| bad())?;
    let unit = unit.strip_prefix(' ').unwrap_or(unit).to_ascii_lowercase();
    let (letter, rest) = match unit.chars().next() {
        Some(c @ ('k' | 'm' | 'g' | 't' | 'p')) => (Some(c), &unit[1..]),
        _ => (None, unit.as_str()),
    };
    let rest = if letter.is_some() {
        rest.strip_prefix('i').unwrap_or(rest)
    } else {
        rest
    };
    if !(rest.is_empty() || rest == "b") {
        return Err(bad());
    }
    let shift = match letter {
        None => 0,
        Some('k') => 10,
        Some('m') => 20,
        Some('g') => 30,
        Some('t') => 40,
        _ => 50,
    };
    let bytes = value * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes as u64)
}

/// `--chmod`, parsed once by the planner and only applied by the builder:
/// octal (`755`, `0644`, at most `07777`) or chmod(1)'s symbolic clauses,
/// comma-separated, each `[ugoa]*` then one or more actions `[+-=]` with
/// permissions `[rwxXst]*` or another class's (`g=u`): `u+x,go-w`,
/// `u+x-w`, `a=rX`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chmod {
    /// As written (what keys, plans and messages show).
    text: String,
    mode: ChmodMode,
}

/// A plan shows the value as written.
impl serde::Serialize for Chmod {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum ChmodMode {
    Octal(u32),
    Symbolic(Vec<ChmodClause>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct ChmodClause {
    /// The bits of the classes named (all of them when none is).
    who: u32,
    actions: Vec<(u8, ChmodPerms)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum ChmodPerms {
    /// `rwxst` bits (for every class), and whether `X` was given.
    Bits { bits: u32, conditional_x: bool },
    /// `u`, `g` or `o`: that class's current permissions.
    Copy(u8),
}

impl Chmod {
    pub fn parse(text: &str) -> Result<Chmod, String> {
        let invalid =
            || format!("invalid --chmod {text:?}: use octal (0755) or symbolic (u+x,go-w)");
        if !text.is_empty() && text.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
            return match u32::from_str_radix(text, 8) {
                Ok(mode) if mode <= 0o7777 => Ok(Chmod {
                    text: text.to_owned(),
                    mode: ChmodMode::Octal(mode),
                }),
                _ => Err(format!("invalid --chmod {text:?}: more than 07777")),
            };
        }
        let mut clauses = Vec::new();
        for clause in text.split(',') {
            let bytes = clause.as_bytes();
            let who_len = bytes
                .iter()
                .position(|b| !b"ugoa".contains(b))
                .ok_or_else(invalid)?;
            let mut who = 0;
            for class in &bytes[..who_len] {
                who |= class_bits(*class);
            }
            if who_len == 0 {
                who = 0o7777;
            }
            let mut actions = Vec::new();
            let mut rest = &bytes[who_len..];
            while let Some((&op, after)) = rest.split_first() {
                if !b"+-=".contains(&op) {
                    return Err(invalid());
                }
                let len = after
                    .iter()
                    .position(|b| b"+-=".contains(b))
                    .unwrap_or(after.len());
                let (perms, next) = after.split_at(len);
                let perms = match perms {
                    [class @ (b'u' | b'g' | b'o')] => ChmodPerms::Copy(*class),
                    _ => {
                        let mut bits = 0;
                        let mut conditional_x = false;
                        for perm in perms {
                            bits |= match perm {
                                b'r' => 0o444,
                                b'w' => 0o222,
                                b'x' => 0o111,
                                b's' => 0o6000,
                                b't' => 0o1000,
                                b'X' => {
                                    conditional_x = true;
                                    0
                                }
                                _ => return Err(invalid()),
                            };
                        }
                        ChmodPerms::Bits {
                            bits,
                            conditional_x,
                        }
                    }
                };
                actions.push((op, perms));
                rest = next;
            }
            if actions.is_empty() {
                return Err(invalid());
            }
            clauses.push(ChmodClause { who, actions });
        }
        Ok(Chmod {
            text: text.to_owned(),
            mode: ChmodMode::Symbolic(clauses),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The mode `mode` becomes (`X` counts a directory as executable).
    pub fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        let clauses = match &self.mode {
            ChmodMode::Octal(octal) => return *octal,
            ChmodMode::Symbolic(clauses) => clauses,
        };
        let mut mode = mode;
        for clause in clauses {
            for (op, perms) in &clause.actions {
                let bits = match perms {
                    ChmodPerms::Bits {
                        bits,
                        conditional_x,
                    } => {
                        let x = *conditional_x && (is_dir || mode & 0o111 != 0);
                        bits | if x { 0o111 } else { 0 }
                    }
                    ChmodPerms::Copy(class) => {
                        // The class's rwx, spread to every class.
                        let shift = match class {
                            b'u' => 6,
                            b'g' => 3,
                            _ => 0,
                        };
                        ((mode >> shift) & 0o7) * 0o111
                    }
                } & clause.who;
                mode = match op {
                    b'+' => mode | bits,
                    b'-' => mode & !bits,
                    _ => (mode & !clause.who) | bits,
                };
            }
        }
        mode
    }
}

fn class_bits(class: u8) -> u32 {
    match class {
        b'u' => 0o4700,
        b'g' => 0o2070,
        b'o' => 0o1007,
        _ => 0o7777,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chmod_octal_and_symbolic() {
        let apply = |text: &str, mode, is_dir| Chmod::parse(text).unwrap().apply(mode, is_dir);
        assert_eq!(apply("755", 0o644, false), 0o755);
        assert_eq!(apply("u+x", 0o644, false), 0o744);
        assert_eq!(apply("go-w", 0o777, false), 0o755);
        assert_eq!(apply("a=rX", 0o640, true), 0o555);
        assert_eq!(apply("a=rX", 0o640, false), 0o444);
        assert_eq!(apply("+x", 0o600, false), 0o711);
        // Several actions in one clause, as chmod(1) takes them.
        assert_eq!(apply("u+x-w", 0o644, false), 0o544);
        assert_eq!(apply("g=u,o=", 0o750, false), 0o770);
        assert_eq!(apply("u+s,+t", 0o755, false), 0o5755);
        for bad in ["", "999", "77777", "u+q", "x", "u", "u+x,", "q+x", "u+ug"] {
            assert!(Chmod::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn memory_sizes_follow_docker() {
        let mib = 1024 * 1024;
        for (text, bytes) in [
            ("64m", 64 * mib),
            ("64M", 64 * mib),
            ("64mb", 64 * mib),
            ("64MiB", 64 * mib),
            ("1.5g", 1536 * mib),
            ("512k", 512 * 1024),
            ("100", 100),
            ("100b", 100),
            ("2 g", 2048 * mib),
        ] {
            assert_eq!(parse_memory_size(text), Ok(bytes), "{text}");
        }
        for text in ["", "m", "-1m", "1x", "1.m", ".5m", "1mm", "1ib", "1e9"] {
            assert!(parse_memory_size(text).is_err(), "{text}");
        }
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("30s"), Ok(30_000_000_000));
        assert_eq!(parse_go_duration("1m30s"), Ok(90_000_000_000));
        assert_eq!(parse_go_duration("1.5h"), Ok(5_400_000_000_000));
        assert_eq!(parse_go_duration("500ms"), Ok(500_000_000));
        assert_eq!(parse_go_duration("0"), Ok(0));
        assert_eq!(parse_go_duration("-1s"), Ok(-1_000_000_000));
        assert!(parse_go_duration("10")
            .unwrap_err()
            .contains("missing unit"));
        assert!(parse_go_duration("1d")
            .unwrap_err()
            .contains("unknown unit"));
        assert!(parse_go_duration("").is_err());
        assert!(parse_go_duration("s").is_err());
    }

    #[test]
    fn port_specs() {
        assert_eq!(parse_port_spec("80"), Ok(vec!["80/tcp".to_owned()]));
        assert_eq!(parse_port_spec("53/UDP"), Ok(vec!["53/udp".to_owned()]));
        assert_eq!(
            parse_port_spec("8000-8002"),
            Ok(vec![
                "8000/tcp".into(),
                "8001/tcp".into(),
                "8002/tcp".into()
            ])
        );
        assert_eq!(
            parse_port_spec("127.0.0.1:8080:80"),
            Ok(vec!["80/tcp".to_owned()])
        );
        assert!(parse_port_spec("80/http").is_err());
        assert!(parse_port_spec("99999").is_err());
        assert!(parse_port_spec("90-80").is_err());
        assert!(parse_port_spec("abc").is_err());
    }

    #[test]
    fn signals() {
        for ok in ["SIGTERM", "term", "9", "SIGRTMIN+3", "RTMAX-1", "SIGWINCH"] {
            assert_eq!(check_signal(ok), Ok(()), "{ok}");
        }
        for bad in ["0", "65", "SIGFOO", "RTMIN+99", ""] {
            assert!(check_signal(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn mounts() {
        let m = parse_mount("type=cache,target=/root/.cache,id=pip,sharing=locked").unwrap();
        assert_eq!(m.kind, MountKind::Cache);
        assert_eq!(m.target.as_deref(), Some("/root/.cache"));
        assert_eq!(m.options.id.as_deref(), Some("pip"));
        assert_eq!(m.options.sharing, Sharing::Locked);
        let m = parse_mount("type=tmpfs,target=/t,size=64m").unwrap();
        assert_eq!(m.options.size, Some(64 << 20));
        let m = parse_mount("type=secret,id=s,required,mode=0440,uid=1000").unwrap();
        assert!(m.options.required);
        assert_eq!((m.options.mode, m.options.uid), (Some(0o440), Some(1000)));
        assert!(parse_mount("type=tmpfs,target=/t,size=lots").is_err());
        assert!(parse_mount("type=secret,id=s,required=maybe").is_err());
        let m = parse_mount("target=/src,from=build,source=/out,rw").unwrap();
        assert_eq!((m.kind, m.read_only), (MountKind::Bind, Some(false)));
        assert_eq!(m.from.as_deref(), Some("build"));
        let m = parse_mount(r#""target=/a,b",type=tmpfs"#).unwrap();
        assert_eq!(m.target.as_deref(), Some("/a,b"));
        assert!(parse_mount("type=volume,target=/x").is_err());
        assert!(parse_mount("type=cache,sharing=sometimes,target=/x").is_err());
        assert!(parse_mount("type=cache,target=/x,bogus=1").is_err());
        assert!(parse_mount("type=cache,target=/x,mode=9").is_err());
    }
}
