//! Seccomp for the container's command: a profile in Docker's JSON format
//! (Docker's default is [`docker_default`], kiln's own copy), resolved for
//! the container's architecture, capabilities and kernel as moby does, and
//! compiled to BPF with `seccompiler` (pure Rust, no libseccomp) in the
//! parent; the child only installs the programs (`sys::install_seccomp`).
//!
//! `seccompiler` gives a filter one action on match and one on mismatch,
//! so a profile becomes several programs: a main one (the default action
//! on mismatch, allow on match of every rule whose action is not the
//! default) and one per other action (that action on match, allow on
//! mismatch), installed after it. The kernel runs every program and takes
//! the most restrictive answer, the most recently installed first among
//! equals, so `clone3`'s ENOSYS wins over the default EPERM.
//!
//! Differences from Docker's libseccomp filter: one architecture per
//! filter (the native one), so 32-bit (`int 0x80`) and x32 syscalls kill
//! the process instead of being filtered by the sub-architecture rules;
//! `SCMP_ACT_NOTIFY` is refused.

mod docker_default;

use std::collections::BTreeMap;
use std::str::FromStr;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use serde::{Deserialize, Deserializer, Serialize};

pub use docker_default::docker_default;

use crate::caps;
use crate::error::RuntimeError;

const EPERM: u32 = 1;

/// Which filter a container's command runs under.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Seccomp {
    /// Docker's default profile.
    #[default]
    Default,
    /// No filter (`--security-opt seccomp=unconfined`, privileged runs).
    Unconfined,
    /// A profile file given by the user.
    Profile(Box<Profile>),
}

/// A seccomp profile in Docker's format (fields it does not use, such as
/// `archMap`, are ignored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    pub default_action: Action,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_errno_ret: Option<u32>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub syscalls: Vec<SyscallGroup>,
}

/// Syscalls sharing an action, argument filter and conditions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyscallGroup {
    #[serde(default, deserialize_with = "null_as_default")]
    pub names: Vec<String>,
    /// The older single-name form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub action: Action,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno_ret: Option<u32>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub args: Vec<Arg>,
    /// Applies only when all of these hold...
    #[serde(default, deserialize_with = "null_as_default")]
    pub includes: Filter,
    /// ...and none of these does.
    #[serde(default, deserialize_with = "null_as_default")]
    pub excludes: Filter,
}

/// Conditions on the container: capabilities it holds, Go's name of its
/// architecture, the kernel's version.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Filter {
    #[serde(default, deserialize_with = "null_as_default")]
    pub caps: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub arches: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_kernel: Option<String>,
}

/// A comparison of one syscall argument. With `SCMP_CMP_MASKED_EQ`,
/// `value` is the mask and `valueTwo` what the masked argument must equal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Arg {
    pub index: u32,
    pub value: u64,
    #[serde(default)]
    pub value_two: u64,
    pub op: Op,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Action {
    #[serde(rename = "SCMP_ACT_ALLOW")]
    Allow,
    #[serde(rename = "SCMP_ACT_ERRNO")]
    Errno,
    #[serde(rename = "SCMP_ACT_KILL_THREAD", alias = "SCMP_ACT_KILL")]
    KillThread,
    #[serde(rename = "SCMP_ACT_KILL_PROCESS")]
    KillProcess,
    #[serde(rename = "SCMP_ACT_TRAP")]
    Trap,
    #[serde(rename = "SCMP_ACT_TRACE")]
    Trace,
    #[serde(rename = "SCMP_ACT_LOG")]
    Log,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Op {
    #[serde(rename = "SCMP_CMP_NE")]
    Ne,
    #[serde(rename = "SCMP_CMP_LT")]
    Lt,
    #[serde(rename = "SCMP_CMP_LE")]
    Le,
    #[serde(rename = "SCMP_CMP_EQ")]
    Eq,
    #[serde(rename = "SCMP_CMP_GE")]
    Ge,
    #[serde(rename = "SCMP_CMP_GT")]
    Gt,
    #[serde(rename = "SCMP_CMP_MASKED_EQ")]
    MaskedEq,
}

/// What a profile is resolved against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target<'a> {
    /// Go's name of the architecture (`amd64`, `arm64`...), as in profiles.
    pub arch: &'a str,
    /// The command's capabilities (bit masks, as in `caps`).
    pub caps: u64,
    /// The kernel's (major, minor) version.
    pub kernel: (u32, u32),
}

impl Target<'static> {
    /// This machine, for a command holding `caps`.
    pub fn host(caps: u64) -> Self {
        Target {
            arch: go_arch(std::env::consts::ARCH),
            caps,
            kernel: kernel_version(),
        }
    }
}

/// One way a syscall matches: an action (with its errno or trace value)
/// when all `args` comparisons hold (always, if empty).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rule {
    pub action: Action,
    pub ret: u32,
    pub args: Vec<Arg>,
}

impl PartialOrd for Arg {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Arg {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.index, self.op, self.value, self.value_two).cmp(&(
            other.index,
            other.op,
            other.value,
            other.value_two,
        ))
    }
}

impl Profile {
    /// Parses a profile file's content (Docker's JSON format).
    pub fn from_json(text: &str) -> Result<Profile, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// Checks that the profile compiles on this machine (for Docker's
    /// default capabilities), so a bad file is refused before anything is
    /// created.
    pub fn check(&self) -> Result<(), RuntimeError> {
        compile(self, caps::DOCKER_DEFAULT_MASK).map(drop)
    }

    /// The default action and its errno.
    pub fn default_rule(&self) -> (Action, u32) {
        (self.default_action, self.default_errno_ret.unwrap_or(EPERM))
    }

    /// The rules that apply on `target`, by syscall name (sorted and
    /// deduplicated, so two profiles can be compared).
    pub fn rules_for(&self, target: &Target<'_>) -> BTreeMap<String, Vec<Rule>> {
        let mut rules: BTreeMap<String, Vec<Rule>> = BTreeMap::new();
        for group in self.syscalls.iter().filter(|g| g.applies(target)) {
            let ret = group.errno_ret.unwrap_or(EPERM);
            for name in group.names.iter().chain(&group.name) {
                for args in group.alternatives() {
                    rules.entry(name.clone()).or_default().push(Rule {
                        action: group.action,
                        ret,
                        args,
                    });
                }
            }
        }
        for list in rules.values_mut() {
            list.sort();
            list.dedup();
        }
        rules
    }
}

impl SyscallGroup {
    fn applies(&self, target: &Target<'_>) -> bool {
        self.includes.all_hold(target) && !self.excludes.any_holds(target)
    }

    /// The argument filters as alternatives, as runc builds them: all
    /// comparisons in one rule, unless two compare the same argument, in
    /// which case each is a rule of its own.
    fn alternatives(&self) -> Vec<Vec<Arg>> {
        let mut indexes: Vec<u32> = self.args.iter().map(|a| a.index).collect();
        indexes.sort_unstable();
        indexes.dedup();
        if indexes.len() == self.args.len() {
            let mut args = self.args.clone();
            args.sort();
            vec![args]
        } else {
            self.args.iter().map(|a| vec![a.clone()]).collect()
        }
    }
}

impl Filter {
    fn all_hold(&self, target: &Target<'_>) -> bool {
        (self.arches.is_empty() || self.arches.iter().any(|a| a == target.arch))
            && self.caps.iter().all(|c| holds_cap(target, c))
            && self
                .min_kernel
                .as_deref()
                .is_none_or(|min| kernel_at_least(target.kernel, min))
    }

    fn any_holds(&self, target: &Target<'_>) -> bool {
        self.arches.iter().any(|a| a == target.arch)
            || self.caps.iter().any(|c| holds_cap(target, c))
            || self
                .min_kernel
                .as_deref()
                .is_some_and(|min| kernel_at_least(target.kernel, min))
    }
}

fn holds_cap(target: &Target<'_>, name: &str) -> bool {
    cap_number(name).is_some_and(|n| target.caps & (1 << n) != 0)
}

/// The number of capability `name` (`CAP_SYS_ADMIN` is 21), for
/// [`Target::caps`].
pub fn cap_number(name: &str) -> Option<u32> {
    caps::number(name)
}

fn kernel_at_least(kernel: (u32, u32), min: &str) -> bool {
    let mut parts = min.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let wanted = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    kernel >= wanted
}

/// Go's `GOARCH` for Rust's `target_arch` names.
pub fn go_arch(arch: &str) -> &str {
    match arch {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

fn kernel_version() -> (u32, u32) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// A syscall's rules in one program: always, or when one rule matches.
enum Chain {
    Always,
    When(Vec<SeccompRule>),
}

type Chains = BTreeMap<i64, Chain>;

fn add(chains: &mut Chains, sysno: i64, conditions: &[SeccompCondition]) -> Result<(), String> {
    let chain = chains.entry(sysno).or_insert(Chain::When(Vec::new()));
    if conditions.is_empty() {
        *chain = Chain::Always;
    } else if let Chain::When(rules) = chain {
        rules.push(SeccompRule::new(conditions.to_vec()).map_err(|e| e.to_string())?);
    }
    Ok(())
}

fn to_rules(chains: Chains) -> BTreeMap<i64, Vec<SeccompRule>> {
    chains
        .into_iter()
        .map(|(sysno, chain)| match chain {
            Chain::Always => (sysno, Vec::new()),
            Chain::When(rules) => (sysno, rules),
        })
        .collect()
}

fn effect(action: Action, ret: u32) -> SeccompAction {
    match action {
        Action::Allow => SeccompAction::Allow,
        Action::Errno => SeccompAction::Errno(ret),
        Action::KillThread => SeccompAction::KillThread,
        Action::KillProcess => SeccompAction::KillProcess,
        Action::Trap => SeccompAction::Trap,
        Action::Trace => SeccompAction::Trace(ret),
        Action::Log => SeccompAction::Log,
    }
}

fn condition(arg: &Arg) -> Result<SeccompCondition, String> {
    let index = u8::try_from(arg.index).map_err(|_| format!("argument index {}", arg.index))?;
    // 64-bit comparisons, as libseccomp makes them on 64-bit arches.
    let (op, value) = match arg.op {
        Op::Ne => (SeccompCmpOp::Ne, arg.value),
        Op::Lt => (SeccompCmpOp::Lt, arg.value),
        Op::Le => (SeccompCmpOp::Le, arg.value),
        Op::Eq => (SeccompCmpOp::Eq, arg.value),
        Op::Ge => (SeccompCmpOp::Ge, arg.value),
        Op::Gt => (SeccompCmpOp::Gt, arg.value),
        Op::MaskedEq => (SeccompCmpOp::MaskedEq(arg.value), arg.value_two),
    };
    SeccompCondition::new(index, SeccompCmpArgLen::Qword, op, value).map_err(|e| e.to_string())
}

/// Compiles `profile` for this machine and a command holding `caps`: the
/// BPF programs to install, in order.
pub(crate) fn compile(profile: &Profile, caps: u64) -> Result<Vec<BpfProgram>, RuntimeError> {
    let fail = |msg: String| RuntimeError::Seccomp(msg);
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(|e| {
        fail(format!(
            "{e} (kiln's seccomp supports x86_64, aarch64 and riscv64; \
             run with --security-opt seccomp=unconfined)"
        ))
    })?;
    let (default_action, default_ret) = profile.default_rule();
    let default = effect(default_action, default_ret);
    let mut main = Chains::new();
    let mut others: Vec<(SeccompAction, Chains)> = Vec::new();
    for (name, rules) in profile.rules_for(&Target::host(caps)) {
        // A name this architecture does not have: skipped, as runc does.
        let Ok(sysno) = syscalls::Sysno::from_str(&name) else {
            continue;
        };
        let sysno = i64::from(sysno.id());
        for rule in rules {
            let action = effect(rule.action, rule.ret);
            if action == default {
                continue;
            }
            let conditions = rule
                .args
                .iter()
                .map(condition)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| fail(format!("{name}: {e}")))?;
            add(&mut main, sysno, &conditions).map_err(|e| fail(format!("{name}: {e}")))?;
            if action != SeccompAction::Allow {
                let slot = match others.iter().position(|(a, _)| *a == action) {
                    Some(i) => i,
                    None => {
                        others.push((action.clone(), Chains::new()));
                        others.len() - 1
                    }
                };
                add(&mut others[slot].1, sysno, &conditions)
                    .map_err(|e| fail(format!("{name}: {e}")))?;
            }
        }
    }
    let mut filters = Vec::new();
    if default != SeccompAction::Allow {
        filters.push((main, default, SeccompAction::Allow));
    }
    for (action, chains) in others {
        filters.push((chains, SeccompAction::Allow, action));
    }
    filters
        .into_iter()
        .map(|(chains, mismatch, matched)| {
            let filter = SeccompFilter::new(to_rules(chains), mismatch, matched, arch)
                .map_err(|e| fail(e.to_string()))?;
            BpfProgram::try_from(filter).map_err(|e| fail(e.to_string()))
        })
        .collect()
}

fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn amd64(caps: u64) -> Target<'static> {
        Target {
            arch: "amd64",
            caps,
            kernel: (6, 1),
        }
    }

    #[test]
    fn default_profile_denies_keyrings_and_namespaces() {
        let rules = docker_default().rules_for(&amd64(caps::DOCKER_DEFAULT_MASK));
        for denied in [
            "keyctl",
            "add_key",
            "request_key",
            "unshare",
            "mount",
            "bpf",
        ] {
            assert!(!rules.contains_key(denied), "{denied}");
        }
        assert_eq!(rules["clone3"][0].action, Action::Errno);
        assert_eq!(rules["clone3"][0].ret, 38);
        assert_eq!(rules["personality"].len(), 5);
        assert!(
            rules.contains_key("chroot"),
            "CAP_SYS_CHROOT is a default cap"
        );
    }

    #[test]
    fn cap_sys_admin_lifts_namespace_rules() {
        let all = docker_default().rules_for(&amd64(u64::MAX >> 23));
        assert!(all.contains_key("mount"));
        assert_eq!(all["clone3"][0].action, Action::Allow);
        assert!(all["clone"].iter().any(|r| r.args.is_empty()));
    }

    #[test]
    fn compiles_for_this_machine() {
        let programs = compile(&docker_default(), caps::DOCKER_DEFAULT_MASK).unwrap();
        // The main program and clone3's ENOSYS.
        assert_eq!(programs.len(), 2);
    }

    #[test]
    fn parses_docker_format() {
        let profile = Profile::from_json(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","archMap":null,"syscalls":[
                {"names":["keyctl"],"action":"SCMP_ACT_ERRNO","errnoRet":13,"args":null,
                 "includes":{},"excludes":null}]}"#,
        )
        .unwrap();
        let rules = profile.rules_for(&amd64(0));
        assert_eq!(rules["keyctl"][0].ret, 13);
        assert_eq!(compile(&profile, 0).unwrap().len(), 1);
        assert!(Profile::from_json(r#"{"defaultAction":"SCMP_ACT_NOTIFY"}"#).is_err());
    }
}
