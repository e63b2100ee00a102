//! Threat: a RUN step or a `kiln run` container reaching the host.
//! The Dockerfile and the image are the attacker's; the host's mounts,
//! kernel keyrings, kiln's own command line and environment, and the
//! build's secrets must stay out of reach, while what Docker allows
//! (setuid binaries such as `su`) keeps working.
//!
//! Tests that mount anything do it inside `unshare -m --propagation
//! private`, so the host's mount table is never touched.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{kiln, ok, text};

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

fn context(store: &common::BusyboxStore, name: &str, dockerfile: &str) -> PathBuf {
    let dir = store.work.join(name);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
    dir
}

fn build(store: &common::BusyboxStore, tag: &str, dir: &Path, extra: &[&str]) -> String {
    let mut args = vec!["build", "-t", tag];
    args.extend_from_slice(extra);
    args.push(dir.to_str().unwrap());
    ok(kiln(&store.root, &args))
}

/// `kiln run --rm --network none ARGS...`'s stdout.
fn run(store: &common::BusyboxStore, args: &[&str]) -> String {
    let mut all = vec!["run", "--rm", "--network", "none"];
    all.extend_from_slice(args);
    ok(kiln(&store.root, &all))
}

/// A static program that makes the syscalls seccomp must refuse and
/// prints what each returned (`NAME=ok` or `NAME=errno N`), or with
/// `euid` its effective uid. Compiled for the test: busybox has no
/// keyctl and no way to ask for a personality.
const PROBE_C: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/personality.h>
#include <sys/syscall.h>
#include <unistd.h>

static void report(const char *name, long ret) {
    if (ret < 0) printf("%s=errno %d\n", name, errno);
    else printf("%s=ok\n", name);
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "euid") == 0) {
        printf("%d\n", (int)geteuid());
        return 0;
    }
    /* KEYCTL_GET_KEYRING_ID of the session keyring, no creation: a read. */
    report("keyctl", syscall(SYS_keyctl, 0, -3, 0));
    /* A key in a process keyring of this process only. */
    report("add_key", syscall(SYS_add_key, "user", "kiln-probe", "x", 1, -2));
    report("personality", personality(READ_IMPLIES_EXEC));
    report("unshare", unshare(CLONE_NEWUSER));
    /* No valid arguments: the kernel says EINVAL, the profile ENOSYS. */
    report("clone3", syscall(SYS_clone3, 0, 0));
    return 0;
}
"#;

/// Compiles [`PROBE_C`] statically into `dir/probe`.
fn probe(dir: &Path) -> PathBuf {
    fs::create_dir_all(dir).unwrap();
    let source = dir.join("probe.c");
    fs::write(&source, PROBE_C).unwrap();
    let binary = dir.join("probe");
    let out = Command::new("cc")
        .args(["-static", "-O1", "-o"])
        .arg(&binary)
        .arg(&source)
        .output()
        .expect("a C compiler (cc) with static libc");
    assert!(out.status.success(), "cc: {}", text(&out.stderr));
    fs::remove_file(source).unwrap();
    binary
}

/// Runs `script` under `sh` in a new mount namespace whose mounts are all
/// private: nothing it mounts or unmounts reaches the host.
fn in_private_mount_namespace(script: &str, env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "--propagation", "private", "sh", "-euc", script]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.env("KILN", KILN).output().unwrap()
}

/// Today's mistake: without `rslave` first, the container's lazy unmount
/// of the old root propagates to every peer of a shared mount point, so
/// kiln unmounted the host's mounts below one (dockerd's overlays).
#[test]
fn container_unmounts_never_reach_the_hosts_shared_mounts() {
    let s = common::busybox_workspace();
    let dir = context(&s, "propagation", "FROM busybox\nRUN true\n");
    let shared = s.work.join("shared");
    fs::create_dir(&shared).unwrap();
    let script = r#"
        mount -t tmpfs kiln-test-outer "$SHARED"
        mount --make-shared "$SHARED"
        mkdir "$SHARED/inner"
        mount -t tmpfs kiln-test-inner "$SHARED/inner"
        check() { grep -q " $SHARED/inner " /proc/self/mountinfo && echo "$1: still mounted" || echo "$1: gone"; }
        "$KILN" --root "$ROOT" run --rm --network none busybox true
        check "kiln run"
        "$KILN" --root "$ROOT" build --no-cache -t propagation "$CONTEXT" >/dev/null 2>&1
        check "RUN"
    "#;
    let out = in_private_mount_namespace(
        script,
        &[("SHARED", &shared), ("ROOT", &s.root), ("CONTEXT", &dir)],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "kiln run: still mounted\nRUN: still mounted\n"
    );
}

/// Docker's default seccomp profile: keyrings (shared with the host),
/// new user namespaces and READ_IMPLIES_EXEC are refused with EPERM (and
/// clone3 with ENOSYS), in RUN and in `kiln run`; `seccomp=unconfined`,
/// `RUN --security=insecure` and `--privileged` lift it.
#[test]
fn seccomp_refuses_keyrings_user_namespaces_and_personalities() {
    let s = common::busybox_workspace();
    let dir = context(
        &s,
        "seccomp",
        "FROM busybox\nCOPY probe /probe\nRUN /probe > /probed\n\
         RUN --security=insecure /probe > /probed-insecure\n",
    );
    probe(&dir);
    build(
        &s,
        "seccomp",
        &dir,
        &["--allow", "security.insecure", "--no-cache"],
    );
    // EPERM, Docker's default action; clone3's own ENOSYS (libc then
    // falls back to clone, whose namespace flags the profile can see).
    let denied = "keyctl=errno 1\nadd_key=errno 1\npersonality=errno 1\nunshare=errno 1\n\
                  clone3=errno 38\n";
    assert_eq!(run(&s, &["seccomp", "cat", "/probed"]), denied, "in RUN");
    assert_eq!(run(&s, &["seccomp", "/probe"]), denied, "in kiln run");

    // Lifted: the calls reach the kernel (keyctl may still say ENOKEY).
    let lifted = |out: String| {
        assert!(out.contains("personality=ok\n"), "{out}");
        assert!(out.contains("add_key=ok\n"), "{out}");
        assert!(!out.contains("keyctl=errno 1\n"), "{out}");
        assert!(out.contains("clone3=errno 22\n"), "{out}");
    };
    lifted(run(&s, &["seccomp", "cat", "/probed-insecure"]));
    lifted(run(
        &s,
        &["--security-opt", "seccomp=unconfined", "seccomp", "/probe"],
    ));
    lifted(run(&s, &["--privileged", "seccomp", "/probe"]));
}

/// A Docker-format profile file replaces the default one.
#[test]
fn seccomp_profile_file_is_applied_and_bad_options_are_refused() {
    let s = common::busybox_workspace();
    let profile = s.work.join("profile.json");
    fs::write(
        &profile,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
            {"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":13}]}"#,
    )
    .unwrap();
    let option = format!("seccomp={}", profile.display());
    let out = kiln(
        &s.root,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "--security-opt",
            &option,
            "busybox",
            "mkdir",
            "/x",
        ],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("Permission denied"),
        "{}",
        text(&out.stderr)
    );

    let unknown_action = s.work.join("notify.json");
    fs::write(&unknown_action, r#"{"defaultAction":"SCMP_ACT_NOTIFY"}"#).unwrap();
    let bad_index = s.work.join("index.json");
    fs::write(
        &bad_index,
        r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],
            "action":"SCMP_ACT_ALLOW","args":[{"index":9,"value":1,"op":"SCMP_CMP_EQ"}]}]}"#,
    )
    .unwrap();
    let unknown_action = format!("seccomp={}", unknown_action.display());
    let bad_index = format!("seccomp={}", bad_index.display());
    let missing = format!("seccomp={}", s.work.join("missing.json").display());
    for bad in [
        unknown_action.as_str(),
        bad_index.as_str(),
        missing.as_str(),
        "apparmor=unconfined",
        "seccomp=",
    ] {
        let out = kiln(
            &s.root,
            &["run", "--rm", "--security-opt", bad, "busybox", "true"],
        );
        assert!(!out.status.success(), "{bad}");
        let err = text(&out.stderr);
        assert!(err.contains("--security-opt"), "{bad}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    let listed = ok(kiln(&s.root, &["ps", "-a"]));
    assert_eq!(
        listed.lines().count(),
        1,
        "no container was created: {listed}"
    );
}

/// Nothing of kiln's command line (build args, secret source paths, the
/// store's path) or environment shows in the container's `/proc/1`. By
/// default pid 1 is the command itself, exec'd by kiln's fork: its
/// `/proc/1/cmdline` and `environ` are the command's own (exec replaced
/// kiln's). Under `kiln run --init` pid 1 is that fork, which never execs:
/// it reads `kiln-init`, and is not dumpable (no `environ` for the
/// container).
#[test]
fn pid_1_shows_nothing_of_kilns_command_line_or_environment() {
    let s = common::busybox_workspace();
    let marker = "kiln-hostonly-7c1e";
    let dir = context(
        &s,
        "procone",
        "FROM busybox\n\
         RUN --network=none --mount=type=secret,id=tok sh -c 'cat /proc/1/cmdline /proc/1/environ > /seen 2>&1 || true'\n",
    );
    let secret_file = s.work.join(format!("{marker}-secret-file"));
    fs::write(&secret_file, "x").unwrap();
    let secret = format!("id=tok,src={}", secret_file.display());
    let build_arg = format!("TOKEN={marker}-build-arg");
    let host_env = [("KILN_TEST_HOST_ONLY", marker)];
    let out = common::kiln_env(
        &s.root,
        &[
            "build",
            "--no-cache",
            "-t",
            "procone",
            "--build-arg",
            &build_arg,
            "--secret",
            &secret,
            dir.to_str().unwrap(),
        ],
        &host_env,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let seen = run(&s, &["procone", "cat", "/seen"]);
    // The command's own argv (the outer `/bin/sh -c` exec'd the inner sh)
    // and the step's environment.
    assert!(seen.starts_with("sh\0-c\0cat /proc/1/cmdline"), "{seen:?}");
    assert!(seen.contains("PATH=/usr/local/sbin:"), "{seen:?}");
    assert!(!seen.contains(marker), "RUN sees the host: {seen:?}");

    let root = s.root.to_str().unwrap();
    let script = "cat /proc/1/cmdline /proc/1/comm /proc/1/environ 2>&1 || true";
    let kiln_run = |extra: &[&str]| {
        let mut args = vec!["run", "--rm", "--network", "none"];
        args.extend_from_slice(extra);
        args.extend(["-e", "MINE=1", "busybox", "sh", "-c", script]);
        ok(common::kiln_env(&s.root, &args, &host_env))
    };
    let seen = kiln_run(&[]);
    assert!(
        seen.starts_with(&format!("sh\0-c\0{script}\0sh\n")),
        "{seen:?}"
    );
    let environ: Vec<&str> = seen.split('\n').nth(1).unwrap().split('\0').collect();
    assert!(environ.contains(&"MINE=1"), "{seen:?}");
    assert!(
        !seen.contains(marker) && !seen.contains(root) && !seen.contains("KILN_TEST"),
        "kiln run sees the host: {seen:?}"
    );

    let seen = kiln_run(&["--init"]);
    assert!(seen.starts_with("kiln-init\0kiln-init\n"), "{seen:?}");
    assert!(seen.contains("Permission denied"), "{seen:?}");
    assert!(
        !seen.contains(marker) && !seen.contains(root),
        "kiln run --init sees the host: {seen:?}"
    );
}

/// Where to look for a secret, and what to skip.
struct Search<'a> {
    needle: &'a [u8],
    /// The secret's own source file.
    skip: &'a Path,
    /// Only files modified since then (the test's start).
    since: std::time::SystemTime,
}

/// Every regular file under `dir` (not following links) that holds the
/// needle.
fn files_holding(dir: &Path, search: &Search<'_>, found: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        let recent = meta.modified().is_ok_and(|t| t >= search.since);
        if meta.is_dir() {
            files_holding(&path, search, found);
        } else if meta.is_file() && recent && path != search.skip && meta.len() < (64 << 20) {
            if let Ok(bytes) = fs::read(&path) {
                if bytes
                    .windows(search.needle.len())
                    .any(|w| w == search.needle)
                {
                    found.push(path);
                }
            }
        }
    }
}

/// Secrets live on a tmpfs of the container's mount namespace: not on
/// the store's disk (nor in /tmp) while the step runs, nor after kiln is
/// SIGKILLed in the middle of it.
#[test]
fn secrets_never_reach_the_disk_even_when_kiln_is_killed() {
    let since = std::time::SystemTime::now() - std::time::Duration::from_secs(2);
    let s = common::busybox_workspace();
    let secret = format!("kiln-secret-{}-d41c", std::process::id());
    let sleep = "4242.5";
    let dir = context(
        &s,
        "secret",
        &format!(
            "FROM busybox\n\
             RUN --mount=type=secret,id=tok,target=/run/secrets/tok,mode=0440,uid=7 \
             sh -c 'stat -c %a:%u /run/secrets/tok && grep -c \" /run/secrets/tok \" /proc/mounts && exec sleep {sleep}'\n"
        ),
    );
    let source = s.work.join("secret-source");
    fs::write(&source, &secret).unwrap();
    let mut child = Command::new(KILN)
        .arg("--root")
        .arg(&s.root)
        .args(["build", "--no-cache", "--progress", "plain", "--secret"])
        .arg(format!("id=tok,src={}", source.display()))
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The step's command runs once `sleep` is visible (setup is done).
    let running = (0..600).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(50));
        process_with_args(&["sleep", sleep])
    });
    let search = Search {
        needle: secret.as_bytes(),
        skip: &source,
        since,
    };
    let look = |when: &str| {
        let mut found = Vec::new();
        // The store (under /tmp too) and whatever else is new in /tmp.
        files_holding(&s.root, &search, &mut found);
        files_holding(Path::new("/tmp"), &search, &mut found);
        assert!(
            found.is_empty(),
            "{when}: the secret is on disk in {found:?}"
        );
    };
    if running {
        look("while the step runs");
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(running, "the RUN step never started");
    look("after SIGKILL");
}

/// True if some process's argv is exactly `args`.
fn process_with_args(args: &[&str]) -> bool {
    let wanted: Vec<u8> = args
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .any(|entry| fs::read(entry.path().join("cmdline")).is_ok_and(|cmdline| cmdline == wanted))
}

/// As Docker: no `no_new_privs` unless asked for, so a setuid-root
/// binary (su, sudo, gosu) raises a non-root USER to euid 0 in RUN and in
/// `kiln run`; `--security-opt no-new-privileges` stops it.
#[test]
fn setuid_binaries_work_unless_no_new_privileges() {
    let s = common::busybox_workspace();
    let dir = context(
        &s,
        "setuid",
        "FROM busybox\nCOPY probe /probe\nRUN chmod 4755 /probe\nUSER nobody\n\
         RUN /probe euid > /tmp/euid-in-run\n",
    );
    probe(&dir);
    build(&s, "setuid", &dir, &["--no-cache"]);
    assert_eq!(
        run(&s, &["setuid", "cat", "/tmp/euid-in-run"]),
        "0\n",
        "RUN"
    );
    assert_eq!(run(&s, &["setuid", "/probe", "euid"]), "0\n", "kiln run");
    assert_eq!(
        run(
            &s,
            &[
                "--security-opt",
                "no-new-privileges",
                "setuid",
                "/probe",
                "euid"
            ]
        ),
        "65534\n"
    );
}
