//! BuildKit's Dockerfile checks (`docker build --check`) that need only
//! the syntax tree: each rule under BuildKit's name, with its message and
//! documentation link, at the line it is about. The `# check=skip=A,B`
//! directive (or `skip=all`) turns rules off, as in BuildKit. Rules that
//! need the plan or the base images (`UndefinedVar`, `UndefinedArgInFrom`,
//! `InvalidBaseImagePlatform`) are the planner's and the engine's.

use crate::ast::{Arguments, Dockerfile, Instruction, InstructionKind};

/// One finding of a check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LintWarning {
    /// BuildKit's rule name: `JSONArgsRecommended`.
    pub rule: &'static str,
    pub message: String,
    /// The first line of the instruction it is about.
    pub line: u32,
}

impl LintWarning {
    /// The rule's page in Docker's documentation.
    pub fn url(&self) -> String {
        // CamelCase to kebab-case, an acronym kept whole: JSONArgs is json-args.
        let chars: Vec<char> = self.rule.chars().collect();
        let mut slug = String::new();
        for (i, c) in chars.iter().enumerate() {
            let prev_lower = i > 0 && chars[i - 1].is_lowercase();
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
            if c.is_uppercase() && i > 0 && (prev_lower || next_lower) {
                slug.push('-');
            }
            slug.push(c.to_ascii_lowercase());
        }
        format!("https://docs.docker.com/go/dockerfile/rule/{slug}/")
    }
}

/// The checks' findings for `dockerfile`, in line order, without those
/// its `check` directive skips.
pub fn lint(dockerfile: &Dockerfile) -> Vec<LintWarning> {
    let skipped = skipped_rules(dockerfile);
    if skipped.iter().any(|rule| rule == "all") {
        return Vec::new();
    }
    let mut found = Vec::new();
    let mut warn = |rule: &'static str, message: String, line: u32| {
        found.push(LintWarning {
            rule,
            message,
            line,
        });
    };
    let instructions = &dockerfile.instructions;
    consistent_casing(instructions, &mut warn);
    let mut stage_names: Vec<String> = Vec::new();
    let mut stage = StageFacts::default();
    for ins in instructions {
        match ins.kind {
            InstructionKind::From => {
                stage = StageFacts::default();
                from_checks(ins, &mut stage_names, &mut warn);
            }
            InstructionKind::Cmd | InstructionKind::Entrypoint | InstructionKind::Healthcheck => {
                let kind = ins.keyword.to_ascii_uppercase();
                if !matches!(ins.kind, InstructionKind::Healthcheck) && !ins.is_json_form() {
                    warn(
                        "JSONArgsRecommended",
                        format!(
                            "JSON arguments recommended for {kind} to prevent unintended behavior related to OS signals"
                        ),
                        ins.start_line,
                    );
                }
                let seen = match ins.kind {
                    InstructionKind::Cmd => &mut stage.cmd,
                    InstructionKind::Entrypoint => &mut stage.entrypoint,
                    _ => &mut stage.healthcheck,
                };
                if *seen {
                    warn(
                        "MultipleInstructionsDisallowed",
                        format!(
                            "Multiple {kind} instructions should not be used in the same stage because only the last one will be used"
                        ),
                        ins.start_line,
                    );
                }
                *seen = true;
            }
            InstructionKind::Maintainer => warn(
                "MaintainerDeprecated",
                "Maintainer instruction is deprecated in favor of using label".into(),
                ins.start_line,
            ),
            InstructionKind::Workdir => {
                if let Arguments::Text(path) = &ins.args {
                    let absolute = path.value.starts_with('/') || path.value.starts_with('$');
                    if !absolute && !stage.absolute_workdir {
                        warn(
                            "WorkdirRelativePath",
                            format!(
                                "Relative workdir {:?} can have unexpected results if the base image changes",
                                path.value
                            ),
                            ins.start_line,
                        );
                    }
                    stage.absolute_workdir |= absolute;
                }
            }
            InstructionKind::Env | InstructionKind::Label => {
                if let Arguments::KeyValues { legacy: true, .. } = ins.args {
                    let kind = ins.keyword.to_ascii_uppercase();
                    warn(
                        "LegacyKeyValueFormat",
                        format!(
                            "\"{kind} key=value\" should be used instead of legacy \"{kind} key value\" format"
                        ),
                        ins.start_line,
                    );
                }
                if ins.kind == InstructionKind::Env {
                    if let Arguments::KeyValues { pairs, .. } = &ins.args {
                        for pair in pairs {
                            secret_name_check("ENV", &pair.key.value, ins.start_line, &mut warn);
                        }
                    }
                }
            }
            InstructionKind::Arg => {
                if let Arguments::List(words) = &ins.args {
                    for word in words {
                        let name = word.value.split('=').next().unwrap_or_default();
                        secret_name_check("ARG", name, ins.start_line, &mut warn);
                    }
                }
            }
            _ => {}
        }
    }
    for warning in &dockerfile.warnings {
        if warning.message.starts_with("Empty continuation line") {
            warn(
                "NoEmptyContinuation",
                "Empty continuation line".into(),
                warning.line,
            );
        }
    }
    found.retain(|w| !skipped.iter().any(|rule| rule == w.rule));
    found.sort_by_key(|w| w.line);
    found
}

/// What the checks remember of the stage so far.
#[derive(Default)]
struct StageFacts {
    cmd: bool,
    entrypoint: bool,
    healthcheck: bool,
    absolute_workdir: bool,
}

/// The rules `# check=skip=A,B` turns off (`all`: every one).
fn skipped_rules(dockerfile: &Dockerfile) -> Vec<String> {
    let Some(check) = dockerfile.directives.iter().find(|d| d.name == "check") else {
        return Vec::new();
    };
    check
        .value
        .split(';')
        .filter_map(|part| part.trim().strip_prefix("skip="))
        .flat_map(|rules| rules.split(','))
        .map(|rule| rule.trim().to_owned())
        .collect()
}

/// `ConsistentInstructionCasing`: keywords in the case most of them have.
fn consistent_casing(
    instructions: &[Instruction],
    warn: &mut impl FnMut(&'static str, String, u32),
) {
    let upper = instructions
        .iter()
        .filter(|i| i.keyword == i.keyword.to_ascii_uppercase())
        .count();
    let lower = instructions
        .iter()
        .filter(|i| i.keyword == i.keyword.to_ascii_lowercase())
        .count();
    let (majority, in_case): (&str, fn(&str) -> String) = if lower > upper {
        ("lowercase", str::to_ascii_lowercase)
    } else {
        ("uppercase", str::to_ascii_uppercase)
    };
    for ins in instructions {
        if ins.kind != InstructionKind::Unknown && ins.keyword != in_case(&ins.keyword) {
            warn(
                "ConsistentInstructionCasing",
                format!(
                    "Command '{}' should match the case of the command majority ({majority})",
                    ins.keyword
                ),
                ins.start_line,
            );
        }
    }
}

/// `FROM` checks: `AS` in the keyword's case, stage names lower-case,
/// unique, and not `scratch`.
fn from_checks(
    ins: &Instruction,
    names: &mut Vec<String>,
    warn: &mut impl FnMut(&'static str, String, u32),
) {
    let Arguments::List(words) = &ins.args else {
        return;
    };
    let [_, as_word, name] = words.as_slice() else {
        return;
    };
    if !as_word.value.eq_ignore_ascii_case("as") {
        return;
    }
    let from_upper = ins.keyword == ins.keyword.to_ascii_uppercase();
    let as_upper = as_word.value == as_word.value.to_ascii_uppercase();
    if from_upper != as_upper {
        warn(
            "FromAsCasing",
            format!(
                "'{}' and '{}' keywords' casing do not match",
                as_word.value, ins.keyword
            ),
            ins.start_line,
        );
    }
    if name.value != name.value.to_ascii_lowercase() {
        warn(
            "StageNameCasing",
            format!("Stage name '{}' should be lowercase", name.value),
            ins.start_line,
        );
    }
    let lower = name.value.to_ascii_lowercase();
    if lower == "scratch" || lower == "context" {
        warn(
            "ReservedStageName",
            format!("'{lower}' is reserved and should not be used as a stage name"),
            ins.start_line,
        );
    }
    if names.contains(&lower) {
        warn(
            "DuplicateStageName",
            format!("Duplicate stage name '{lower}', stage names should be unique"),
            ins.start_line,
        );
    }
    names.push(lower);
}

/// `SecretsUsedInArgOrEnv`: a name that says it holds a secret, by
/// BuildKit's word list (a part between underscores, or the whole name).
fn secret_name_check(
    kind: &str,
    name: &str,
    line: u32,
    warn: &mut impl FnMut(&'static str, String, u32),
) {
    const SECRET_WORDS: [&str; 11] = [
        "apikey",
        "auth",
        "credential",
        "credentials",
        "key",
        "password",
        "pword",
        "passwd",
        "secret",
        "token",
        "tokens",
    ];
    let lower = name.to_ascii_lowercase();
    let secret = lower
        .split(['_', '-'])
        .any(|part| SECRET_WORDS.contains(&part));
    if secret {
        warn(
            "SecretsUsedInArgOrEnv",
            format!("Do not use ARG or ENV instructions for sensitive data ({kind} \"{name}\")"),
            line,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(source: &str) -> Vec<(&'static str, u32)> {
        lint(&crate::parse(source).unwrap())
            .into_iter()
            .map(|w| (w.rule, w.line))
            .collect()
    }

    #[test]
    fn each_rule_fires_where_buildkit_does() {
        let found = rules(
            "FROM busybox as Build\n\
             from busybox AS build\n\
             MAINTAINER me\n\
             WORKDIR app\n\
             ENV API_TOKEN=x\n\
             ENV PATH /bin\n\
             ARG DB_PASSWORD\n\
             CMD echo hi\n\
             CMD [\"echo\"]\n\
             FROM busybox AS scratch\n",
        );
        assert_eq!(
            found,
            [
                ("FromAsCasing", 1),
                ("StageNameCasing", 1),
                ("ConsistentInstructionCasing", 2),
                ("FromAsCasing", 2),
                ("DuplicateStageName", 2),
                ("MaintainerDeprecated", 3),
                ("WorkdirRelativePath", 4),
                ("SecretsUsedInArgOrEnv", 5),
                ("LegacyKeyValueFormat", 6),
                ("SecretsUsedInArgOrEnv", 7),
                ("JSONArgsRecommended", 8),
                ("MultipleInstructionsDisallowed", 9),
                ("ReservedStageName", 10),
            ]
        );
    }

    #[test]
    fn a_clean_file_has_none_and_skip_turns_rules_off() {
        assert!(
            rules("FROM busybox AS build\nWORKDIR /app\nWORKDIR sub\nCMD [\"sh\"]\n").is_empty()
        );
        let source = "# check=skip=JSONArgsRecommended,MaintainerDeprecated\nFROM busybox\nMAINTAINER me\nCMD sh\nWORKDIR a\n";
        assert_eq!(rules(source), [("WorkdirRelativePath", 5)]);
        assert!(rules("# check=skip=all\nFROM busybox\nCMD sh\n").is_empty());
        // Names that only contain a secret word are not secrets.
        assert!(rules("FROM busybox\nARG KEYBOARD_LAYOUT\nENV MONKEY=1\n").is_empty());
    }

    #[test]
    fn urls_are_dockers() {
        let warning = LintWarning {
            rule: "JSONArgsRecommended",
            message: String::new(),
            line: 1,
        };
        assert_eq!(
            warning.url(),
            "https://docs.docker.com/go/dockerfile/rule/json-args-recommended/"
        );
        let warning = LintWarning {
            rule: "SecretsUsedInArgOrEnv",
            ..warning
        };
        assert_eq!(
            warning.url(),
            "https://docs.docker.com/go/dockerfile/rule/secrets-used-in-arg-or-env/"
        );
    }
}
