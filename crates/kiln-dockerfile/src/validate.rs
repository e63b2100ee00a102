//! Checks BuildKit's parser leaves to the build step: unknown instructions
//! and flags an instruction does not take. Kept apart from parsing so that
//! the parse itself stays byte-for-byte comparable with BuildKit's.

use crate::ast::{Arguments, Dockerfile, Instruction, InstructionKind};
use crate::error::ParseError;

/// Every problem found, in source order; empty when the file is valid.
pub fn validate(dockerfile: &Dockerfile) -> Vec<ParseError> {
    let mut errors = Vec::new();
    for instruction in &dockerfile.instructions {
        validate_instruction(instruction, &mut errors);
    }
    errors
}

fn validate_instruction(instruction: &Instruction, errors: &mut Vec<ParseError>) {
    if instruction.kind == InstructionKind::Unknown {
        let mut error = ParseError::new(
            format!("unknown instruction: {}", instruction.keyword),
            instruction.keyword_span.start,
        );
        error = match closest_keyword(&instruction.keyword) {
            Some(kind) => error.with_hint(format!("did you mean {}?", kind.name())),
            None => error.with_hint(format!(
                "instructions are: {}",
                InstructionKind::KNOWN.map(|k| k.name()).join(", ")
            )),
        };
        errors.push(error);
        return;
    }
    let valid = instruction.kind.valid_flags();
    for flag in &instruction.flags {
        if valid.contains(&flag.name.as_str()) {
            continue;
        }
        let hint = if valid.is_empty() {
            format!("{} takes no flags", instruction.kind.name())
        } else {
            format!(
                "valid flags for {}: {}",
                instruction.kind.name(),
                valid
                    .iter()
                    .map(|f| format!("--{f}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        errors.push(
            ParseError::new(format!("unknown flag: --{}", flag.name), flag.span.start)
                .with_hint(hint),
        );
    }
    if let Arguments::Onbuild(inner) = &instruction.args {
        validate_instruction(inner, errors);
    }
}

/// The known keyword within edit distance 2 of `word`, if any.
fn closest_keyword(word: &str) -> Option<InstructionKind> {
    let word = word.to_ascii_uppercase();
    InstructionKind::KNOWN
        .into_iter()
        .map(|kind| (edit_distance(&word, kind.name()), kind))
        .filter(|(distance, _)| *distance <= 2)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, kind)| kind)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            current.push(
                (previous[j] + cost)
                    .min(previous[j + 1] + 1)
                    .min(current[j] + 1),
            );
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse;

    #[test]
    fn unknown_instruction_suggests_the_closest() {
        let df = parse("FROM x\nRUNN echo\n").unwrap();
        let errors = validate(&df);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].position.line, 2);
        assert_eq!(errors[0].hint.as_deref(), Some("did you mean RUN?"));
    }

    #[test]
    fn unknown_flag_lists_the_valid_ones() {
        let df = parse("FROM x\nCOPY --form=a b c\n").unwrap();
        let errors = validate(&df);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].position.column, 6);
        assert!(errors[0].hint.as_deref().unwrap().contains("--from"));
    }
}
