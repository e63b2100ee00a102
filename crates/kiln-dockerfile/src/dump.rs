//! BuildKit's parse dump (`(from "alpine")`, one line per instruction), so
//! any parse can be compared with BuildKit's byte for byte. Strings are
//! quoted with Go's `strconv.Quote` rules.

use std::fmt::Write;

use crate::ast::{Arguments, Dockerfile, Instruction};

/// The whole file: one `(...)` line per instruction, each ending in `\n`.
pub fn dump(dockerfile: &Dockerfile) -> String {
    let mut out = String::new();
    for instruction in &dockerfile.instructions {
        out.push('(');
        out.push_str(&dump_instruction(instruction));
        out.push_str(")\n");
    }
    out
}

/// One instruction without the surrounding parentheses.
pub fn dump_instruction(instruction: &Instruction) -> String {
    let mut out = instruction.keyword.to_lowercase();
    if !instruction.flags.is_empty() {
        out.push_str(" [");
        for (i, flag) in instruction.flags.iter().enumerate() {
            if i > 0 {
                out.push(' ');
            }
            go_quote_into(&mut out, &flag.text);
        }
        out.push(']');
    }
    dump_arguments(&mut out, &instruction.args);
    // Go's Node.Dump trims the result.
    out.trim().to_string()
}

fn dump_arguments(out: &mut String, args: &Arguments) {
    let mut quoted = |s: &str| {
        out.push(' ');
        go_quote_into(out, s);
    };
    match args {
        Arguments::None => {}
        Arguments::Text(arg) => quoted(&arg.value),
        Arguments::Exec(items) | Arguments::List(items) => {
            items.iter().for_each(|a| quoted(&a.value))
        }
        Arguments::KeyValues { pairs, legacy } => {
            let separator = if *legacy { "" } else { "=" };
            for pair in pairs {
                quoted(&pair.key.value);
                quoted(&pair.value.value);
                quoted(separator);
            }
        }
        Arguments::Healthcheck { kind, command } => {
            quoted(&kind.value);
            dump_arguments(out, command);
        }
        Arguments::Onbuild(inner) => {
            out.push_str(" (");
            out.push_str(&dump_instruction(inner));
            out.push(')');
        }
        Arguments::Unknown => quoted(""),
    }
}

/// Appends `s` quoted as Go's `strconv.Quote` does.
pub fn go_quote_into(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x0b' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\x7f' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_ascii() || is_go_printable(c) => out.push(c),
            c if (c as u32) < 0x10000 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\U{:08x}", c as u32);
            }
        }
    }
    out.push('"');
}

/// Go's `unicode.IsPrint` for non-ASCII: letters, marks, numbers,
/// punctuation and symbols. Without Unicode category tables we exclude the
/// classes Go escapes that occur in practice: controls, spaces other than
/// U+0020, format characters, private use, and noncharacters.
fn is_go_printable(c: char) -> bool {
    let u = c as u32;
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    let format = matches!(u,
        0x00AD | 0x0600..=0x0605 | 0x061C | 0x06DD | 0x070F | 0x0890..=0x0891 | 0x08E2 | 0x180E
        | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x2064 | 0x2066..=0x206F | 0xFEFF
        | 0xFFF9..=0xFFFB | 0x110BD | 0x110CD | 0x13430..=0x1343F | 0x1BCA0..=0x1BCA3
        | 0x1D173..=0x1D17A | 0xE0001 | 0xE0020..=0xE007F);
    let private_use = matches!(u, 0xE000..=0xF8FF | 0xF0000..=0xFFFFD | 0x100000..=0x10FFFD);
    let noncharacter = matches!(u, 0xFDD0..=0xFDEF) || (u & 0xFFFE) == 0xFFFE;
    !(format || private_use || noncharacter)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> String {
        let mut out = String::new();
        go_quote_into(&mut out, s);
        out
    }

    #[test]
    fn quotes_like_go() {
        assert_eq!(q("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(q("\x00\x01\x7f\t"), r#""\x00\x01\x7f\t""#);
        assert_eq!(q("♥é"), "\"♥é\"");
        assert_eq!(q("\u{a0}\u{feff}"), r#""\u00a0\ufeff""#);
        assert_eq!(q("\u{e0001}"), r#""\U000e0001""#);
    }
}
