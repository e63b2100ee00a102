//! kiln's copy of Docker's default seccomp profile against moby's own
//! file (`../shared/conformance/seccomp/default.json`, read here and never
//! copied into the repo): the same syscalls are allowed, refused or
//! answered with their own errno, with the same argument filters, for
//! every architecture, capability set and kernel the profile distinguishes.

use std::collections::{BTreeMap, BTreeSet};

use kiln_runtime::seccomp::{cap_number, docker_default, Action, Profile, Target};
use serde_json::Value;

fn moby_profile_text() -> String {
    let path = kiln_testdata::shared_path("conformance/seccomp/default.json");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

const DOCKER_DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

fn mask(names: &[&str]) -> u64 {
    names
        .iter()
        .map(|n| 1u64 << cap_number(n).unwrap_or_else(|| panic!("unknown {n}")))
        .fold(0, |a, b| a | b)
}

/// Capability sets: none, Docker's default, the default plus each
/// capability in turn, and all of them.
fn cap_sets() -> Vec<u64> {
    let default = mask(DOCKER_DEFAULT_CAPS);
    let mut sets = vec![0, default, (1u64 << 41) - 1];
    sets.extend((0..41).map(|cap| default | 1 << cap));
    sets
}

const ARCHES: &[&str] = &[
    "amd64", "x32", "386", "arm64", "arm", "riscv64", "s390x", "s390", "ppc64le", "mips64",
];

#[test]
fn kilns_profile_resolves_like_mobys_everywhere() {
    if kiln_testdata::missing("conformance/seccomp") {
        return;
    }
    let moby = Profile::from_json(&moby_profile_text()).unwrap();
    let kiln = docker_default();
    assert_eq!(kiln.default_rule(), moby.default_rule());
    assert_eq!(kiln.default_rule(), (Action::Errno, 1), "EPERM by default");
    let mut compared = 0;
    for arch in ARCHES {
        for caps in cap_sets() {
            for kernel in [(4, 4), (6, 1)] {
                let target = Target { arch, caps, kernel };
                assert_eq!(
                    kiln.rules_for(&target),
                    moby.rules_for(&target),
                    "{target:?}"
                );
                compared += 1;
            }
        }
    }
    assert_eq!(compared, ARCHES.len() * 44 * 2);
}

/// The syscalls moby's file allows unconditionally or with arguments, by
/// a reading of the JSON independent of kiln's parser and resolver.
fn allowed_by_json(profile: &Value, arch: &str, caps: u64) -> BTreeSet<String> {
    let list = |v: &Value, key: &str| -> Vec<String> {
        v.get(key)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let held = |cap: &String| cap_number(cap).is_some_and(|n| caps & (1 << n) != 0);
    let mut allowed = BTreeSet::new();
    for group in profile["syscalls"].as_array().unwrap() {
        if group["action"] != "SCMP_ACT_ALLOW" {
            continue;
        }
        let empty = Value::Null;
        let includes = group.get("includes").unwrap_or(&empty);
        let excludes = group.get("excludes").unwrap_or(&empty);
        let inc_arches = list(includes, "arches");
        let applies = (inc_arches.is_empty() || inc_arches.iter().any(|a| a == arch))
            && list(includes, "caps").iter().all(held)
            && !list(excludes, "arches").iter().any(|a| a == arch)
            && !list(excludes, "caps").iter().any(held);
        if applies {
            allowed.extend(list(group, "names"));
        }
    }
    allowed
}

#[test]
fn allowed_syscalls_match_an_independent_reading_of_the_json() {
    if kiln_testdata::missing("conformance/seccomp") {
        return;
    }
    let json: Value = serde_json::from_str(&moby_profile_text()).unwrap();
    let kiln = docker_default();
    for arch in ARCHES {
        for caps in cap_sets() {
            let target = Target {
                arch,
                caps,
                kernel: (6, 1),
            };
            let ours: BTreeSet<String> = kiln
                .rules_for(&target)
                .into_iter()
                .filter(|(_, rules)| rules.iter().any(|r| r.action == Action::Allow))
                .map(|(name, _)| name)
                .collect();
            assert_eq!(ours, allowed_by_json(&json, arch, caps), "{arch} {caps:#x}");
        }
    }
}

/// The cases the issue names, spelled out for Docker's default caps.
#[test]
fn default_caps_refuse_keyrings_namespaces_and_odd_personalities() {
    let target = Target {
        arch: "amd64",
        caps: mask(DOCKER_DEFAULT_CAPS),
        kernel: (6, 1),
    };
    let rules: BTreeMap<_, _> = docker_default().rules_for(&target);
    for refused in [
        "keyctl",
        "add_key",
        "request_key",
        "unshare",
        "setns",
        "mount",
    ] {
        assert!(!rules.contains_key(refused), "{refused} is allowed");
    }
    let personalities: Vec<u64> = rules["personality"]
        .iter()
        .map(|r| r.args[0].value)
        .collect();
    assert_eq!(personalities, [0, 8, 0x20000, 0x20008, 0xffff_ffff]);
    let clone = &rules["clone"];
    assert_eq!(clone.len(), 1);
    assert_eq!(
        clone[0].args[0].value, 0x7E02_0000,
        "namespace flags masked"
    );
    assert_eq!(
        (rules["clone3"][0].action, rules["clone3"][0].ret),
        (Action::Errno, 38)
    );
}
