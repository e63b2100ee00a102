//! RUN in `kiln build`: each `--mount` type; secrets never reach a layer,
//! the history or the cache; layers of deletions and replacements unpack
//! (umoci) to the right tree; a failing command names its exit code and
//! shows its last lines; stages in parallel; interruption.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{busybox_rootfs, kiln, ok, text, umoci_unpack};

fn context(store: &common::BusyboxStore, name: &str, dockerfile: &str) -> PathBuf {
    let dir = store.work.join(name);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
    dir
}

#[test]
fn run_mounts_bind_cache_tmpfs_and_secrets() {
    let s = common::busybox_workspace();
    let secret = "kiln-test-secret-4f1d9";
    let dir = context(
        &s,
        "mounts",
        "FROM busybox\n\
         RUN --mount=type=bind,source=data.txt,target=/in/data.txt cp /in/data.txt /copied\n\
         RUN --mount=type=bind,target=/ctx,rw sh -c 'echo scribble > /ctx/data.txt && cat /ctx/data.txt > /rw-saw'\n\
         RUN --mount=type=cache,target=/var/cache/app sh -c 'echo run >> /var/cache/app/runs; wc -l < /var/cache/app/runs > /runs-seen'\n\
         RUN --mount=type=tmpfs,target=/scratch sh -c 'echo x > /scratch/tmp && grep -c \" /scratch \" /proc/mounts > /tmpfs-seen'\n\
         RUN --mount=type=secret,id=token sh -c 'wc -c < /run/secrets/token > /secret-size'\n\
         RUN --mount=type=secret,id=token,env=TOKEN sh -c 'test -n \"$TOKEN\" && echo ${#TOKEN} > /secret-env-size'\n\
         RUN --mount=type=secret,id=missing sh -c 'test ! -e /run/secrets/missing && touch /optional-ok'\n\
         RUN --mount=type=cache,target=/c2,id=owned,uid=1000,mode=0700,sharing=locked stat -c %u:%a /c2 > /cache-owner\n",
    );
    fs::write(dir.join("data.txt"), "from the context\n").unwrap();
    let token = s.work.join("token");
    fs::write(&token, secret).unwrap();
    let secret_arg = format!("id=token,src={}", token.display());
    let build = |extra: &[&str]| {
        let mut args = vec!["build", "-t", "mounts", "--secret", &secret_arg];
        args.extend_from_slice(extra);
        let dir = dir.to_str().unwrap();
        args.push(dir);
        let out = kiln(&s.root, &args);
        assert!(out.status.success(), "{}", text(&out.stderr));
    };
    build(&[]);
    build(&["--no-cache"]);
    let rootfs = umoci_unpack(&s.root, "mounts", &s.work.join("unpacked"));
    let read = |p: &str| fs::read_to_string(rootfs.join(p)).unwrap();
    assert_eq!(read("copied"), "from the context\n");
    assert_eq!(read("rw-saw"), "scribble\n");
    assert_eq!(
        fs::read_to_string(dir.join("data.txt")).unwrap(),
        "from the context\n",
        "rw bind writes are discarded"
    );
    assert_eq!(
        read("runs-seen").trim(),
        "2",
        "the cache mount persisted across builds"
    );
    assert!(
        !rootfs.join("var/cache/app/runs").exists(),
        "cache mounts are not in layers"
    );
    assert_eq!(read("tmpfs-seen").trim(), "1");
    assert!(!rootfs.join("scratch/tmp").exists());
    assert_eq!(read("secret-size").trim(), secret.len().to_string());
    assert_eq!(read("secret-env-size").trim(), secret.len().to_string());
    assert!(
        rootfs.join("optional-ok").exists(),
        "a secret not given is skipped"
    );
    assert!(
        !rootfs.join("run/secrets/token").exists(),
        "no mount point left in a layer"
    );

    // The secret is in no blob (layers, configs, history), no cache file.
    for tree in [s.root.join("blobs"), s.root.join("kiln/cache")] {
        for entry in walkdir::WalkDir::new(&tree).into_iter().flatten() {
            if entry.file_type().is_file() {
                let bytes = fs::read(entry.path()).unwrap();
                assert!(
                    !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                    "the secret is in {}",
                    entry.path().display()
                );
            }
        }
    }
    let history = ok(kiln(&s.root, &["history", "--no-trunc", "mounts"]));
    assert!(!history.contains(secret));

    // prune --cache-mounts empties them: the count starts again.
    let pruned = ok(kiln(&s.root, &["prune", "--cache-mounts"]));
    assert!(pruned.contains(", 2 cache mounts,"), "{pruned}");
    build(&["--no-cache"]);
    let rootfs = umoci_unpack(&s.root, "mounts", &s.work.join("unpacked-again"));
    assert_eq!(
        fs::read_to_string(rootfs.join("runs-seen")).unwrap().trim(),
        "1"
    );
}

#[test]
fn layers_of_deletions_and_replacements_unpack_right() {
    let s = common::busybox_workspace();
    let dir = context(
        &s,
        "diffs",
        "FROM busybox\n\
         RUN mkdir -p /t/dir/sub /t/gone-dir /t/file-to-dir /t/redo && \
             echo a > /t/dir/sub/a && echo keep > /t/keep && echo f > /t/dir-to-file && \
             echo old > /t/redo/old && echo x > /t/gone-file && echo y > /t/file-to-dir/y && \
             mkdir /t/dir-to-file.d\n\
         RUN rm -rf /t/gone-dir /t/gone-file /etc/group && \
             rm -rf /t/file-to-dir && echo now-a-file > /t/file-to-dir && \
             rm /t/dir-to-file && mkdir /t/dir-to-file && echo inside > /t/dir-to-file/i && \
             rm -rf /t/redo && mkdir /t/redo && echo new > /t/redo/new && \
             chmod 700 /t/dir/sub && echo changed > /t/keep\n",
    );
    ok(kiln(
        &s.root,
        &["build", "-t", "diffs", dir.to_str().unwrap()],
    ));
    let rootfs = umoci_unpack(&s.root, "diffs", &s.work.join("unpacked"));
    let t = rootfs.join("t");
    let mut found: Vec<String> = walkdir::WalkDir::new(&t)
        .min_depth(1)
        .sort_by_file_name()
        .into_iter()
        .map(|e| {
            let e = e.unwrap();
            let rel = e.path().strip_prefix(&t).unwrap().display().to_string();
            if e.file_type().is_dir() {
                format!("{rel}/")
            } else {
                format!("{rel}={}", fs::read_to_string(e.path()).unwrap().trim())
            }
        })
        .collect();
    found.sort();
    assert_eq!(
        found,
        [
            "dir-to-file.d/",
            "dir-to-file/",
            "dir-to-file/i=inside",
            "dir/",
            "dir/sub/",
            "dir/sub/a=a",
            "file-to-dir=now-a-file",
            "keep=changed",
            "redo/",
            "redo/new=new",
        ]
    );
    assert!(!rootfs.join("etc/group").exists());
    assert!(rootfs.join("etc/passwd").exists());
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(t.join("dir/sub"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o700);
}

#[test]
fn a_failing_run_names_its_exit_code_and_shows_its_last_lines() {
    let s = common::busybox_workspace();
    let dir = context(
        &s,
        "fails",
        "FROM busybox\nRUN echo start-$((40+2)); for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15; do echo line $i; done; echo oops >&2; exit 7\n",
    );
    let out = kiln(&s.root, &["build", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("Dockerfile:2"), "{stderr}");
    assert!(
        stderr.contains("did not complete successfully: exit code 7"),
        "{stderr}"
    );
    let error = &stderr[stderr.find("error:").unwrap()..];
    assert!(
        error.contains("line 15") && error.contains("oops"),
        "{error}"
    );
    assert!(!error.contains("start-42"), "only the last lines: {error}");
    let check = ok(kiln(&s.root, &["check"]));
    assert!(check.starts_with("ok:"));
}

#[test]
fn run_is_isolated_from_the_host() {
    let s = common::busybox_workspace();
    let dir = context(
        &s,
        "isolated",
        "FROM busybox\n\
         RUN hostname > /hostname && ls /proc | grep -c '^[0-9]' > /pids && \
             (echo h > /proc/sysrq-trigger && echo writable || echo refused) > /sysrq\n\
         RUN --network=none cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' ' > /netdevs\n",
    );
    ok(kiln(
        &s.root,
        &["build", "-t", "iso", dir.to_str().unwrap()],
    ));
    let rootfs = umoci_unpack(&s.root, "iso", &s.work.join("unpacked"));
    let read = |p: &str| fs::read_to_string(rootfs.join(p)).unwrap();
    assert_eq!(read("hostname"), "buildkitsandbox\n");
    let pids: u32 = read("pids").trim().parse().unwrap();
    assert!(pids <= 5, "the host's processes are invisible: {pids} pids");
    assert_eq!(read("sysrq"), "refused\n");
    assert_eq!(read("netdevs"), "lo\n");
    // What the runtime provides (/etc/hosts, /proc, /dev...) is in no
    // layer a RUN made: those hold exactly the files the commands wrote.
    let layers = common::image_layers(&s.root, "iso");
    let mut written = Vec::new();
    for layer in &layers[1..] {
        let mut archive = tar::Archive::new(&layer[..]);
        for entry in archive.entries().unwrap() {
            written.push(entry.unwrap().path().unwrap().display().to_string());
        }
    }
    written.sort();
    assert_eq!(written, ["hostname", "netdevs", "pids", "sysrq"]);
}

/// Mounts whose path mentions `needle`, from this (the host's) namespace.
fn mounts_mentioning(needle: &Path) -> Vec<String> {
    let needle = needle.display().to_string();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&needle))
        .map(str::to_owned)
        .collect()
}

/// Processes whose command line contains `marker`.
fn processes_with(marker: &str) -> usize {
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter(|e| {
            fs::read(e.path().join("cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(marker))
                .unwrap_or(false)
        })
        .count()
}

/// As in BuildKit, a RUN command is pid 1 of its pid namespace, so its
/// exit ends the namespace: a process it left in the background does not
/// hold the step.
#[test]
fn a_run_command_is_pid_1_and_its_exit_ends_the_step() {
    let s = common::busybox_workspace();
    let dir = context(
        &s,
        "pidone",
        "FROM busybox\n\
         RUN --network=none echo $$ > /pid\n\
         RUN --network=none sh -c 'sleep 100 & exit 0'\n",
    );
    let started = std::time::Instant::now();
    ok(kiln(
        &s.root,
        &["build", "--no-cache", "-t", "pidone", dir.to_str().unwrap()],
    ));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "the background sleep held the build: {:?}",
        started.elapsed()
    );
    let pid = ok(kiln(
        &s.root,
        &["run", "--rm", "--network", "none", "pidone", "cat", "/pid"],
    ));
    assert_eq!(pid, "1\n");
}

#[test]
fn interrupting_a_run_leaves_no_mount_process_or_scratch_dir() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let s = common::busybox_workspace();
    for (signal, code) in [("INT", Some(130)), ("KILL", None)] {
        // Unique to this run, so nothing else on the machine matches.
        let marker = format!("kiln-sleeper-{signal}-{}", std::process::id());
        let dir = context(
            &s,
            &format!("sleepy-{signal}"),
            // The marker names the inner shell ($0), which waits for sleep.
            &format!("FROM busybox\nRUN sh -c 'echo started; sleep 30; echo done' {marker}\n"),
        );
        let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .arg("--root")
            .arg(&s.root)
            .args(["build", "--no-cache"])
            .arg(&dir)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        // Wait until the command runs.
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        // The command's own line, not the step's title that quotes it.
        while line.trim_end() != "#2 started" {
            line.clear();
            assert!(
                stderr.read_line(&mut line).unwrap() > 0,
                "the build ended early"
            );
        }
        // (A fork of the shell, before it execs sleep, can match too.)
        assert!(processes_with(&marker) >= 1, "the command is running");
        let started = std::time::Instant::now();
        common::send_signal(child.id(), signal);
        let status = child.wait().unwrap();
        assert_eq!(status.code(), code, "SIG{signal}");
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        // The container's processes die with it (its pid 1, the command,
        // has a parent-death signal); give the kernel a moment.
        for _ in 0..50 {
            if processes_with(&marker) == 0 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        assert_eq!(
            processes_with(&marker),
            0,
            "SIG{signal}: the command survived"
        );
        assert_eq!(
            mounts_mentioning(&s.root),
            Vec::<String>::new(),
            "SIG{signal}"
        );
        if signal == "INT" {
            let scratch = s.root.join("kiln/tmp");
            let left = fs::read_dir(&scratch).map(|d| d.count()).unwrap_or(0);
            assert_eq!(left, 0, "SIGINT: scratch directories were removed");
        }
    }
    // The store is whole and the next build works.
    assert!(ok(kiln(&s.root, &["check"])).starts_with("ok:"));
    let dir = context(&s, "after", "FROM busybox\nRUN echo fine > /fine\n");
    ok(kiln(&s.root, &["build", dir.to_str().unwrap()]));
    ok(kiln(&s.root, &["prune"]));
    let left = fs::read_dir(s.root.join("kiln/tmp"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(left, 0, "prune removes what SIGKILL left");
}

#[test]
fn independent_stages_run_at_the_same_time() {
    let s = common::busybox_workspace();
    // A rendezvous, not a stopwatch: each stage's RUN marks its arrival in
    // a shared cache mount and waits until the other two have arrived, so
    // the build can only succeed if the three ran at the same time (one
    // after the other, the first would give up after 60 s and fail).
    let stage = |name: &str, others: [&str; 2]| {
        format!(
            "FROM busybox AS {name}\n\
             RUN --mount=type=cache,id=meet,target=/meet touch /meet/{name} && i=0 && \
             while [ ! -e /meet/{} ] || [ ! -e /meet/{} ]; do \
             i=$((i+1)); [ $i -lt 600 ] || exit 9; sleep 0.1; done && echo {name} > /{name}\n",
            others[0], others[1]
        )
    };
    let dockerfile = format!(
        "{}{}{}FROM busybox\nCOPY --from=a /a /a\nCOPY --from=b /b /b\nCOPY --from=c /c /c\n",
        stage("a", ["b", "c"]),
        stage("b", ["a", "c"]),
        stage("c", ["a", "b"]),
    );
    let dir = context(&s, "parallel", &dockerfile);
    ok(kiln(
        &s.root,
        &["build", "--no-cache", "-t", "par", dir.to_str().unwrap()],
    ));
    let rootfs = umoci_unpack(&s.root, "par", &s.work.join("par"));
    for name in ["a", "b", "c"] {
        assert_eq!(
            fs::read_to_string(rootfs.join(name)).unwrap(),
            format!("{name}\n")
        );
    }
}

#[test]
fn a_failing_stage_stops_the_others_and_its_error_is_the_one_shown() {
    let s = common::busybox_workspace();
    let dir = context(
        &s,
        "failfast",
        "FROM busybox AS slow\nRUN sleep 20\n\
         FROM busybox AS broken\nRUN exit 9\n\
         FROM busybox\nCOPY --from=slow / /slow\nCOPY --from=broken / /broken\n",
    );
    let started = std::time::Instant::now();
    let out = kiln(&s.root, &["build", "--no-cache", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "the sleeper was not stopped"
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("RUN exit 9 did not complete successfully: exit code 9"),
        "{stderr}"
    );
    assert!(!stderr.contains("interrupted"), "{stderr}");
}

#[test]
fn ssh_agents_insecure_steps_and_bind_sources_in_the_key() {
    let s = common::busybox_workspace();
    // An "agent": any unix socket will do to see it forwarded.
    let socket = s.work.join("agent.sock");
    let _agent = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let dir = context(
        &s,
        "ssh",
        "FROM busybox\nRUN --mount=type=ssh test -S \"$SSH_AUTH_SOCK\" && echo forwarded > /ssh\n",
    );
    let ssh = format!("default={}", socket.display());
    let out = kiln(
        &s.root,
        &["build", "-t", "ssh", "--ssh", &ssh, dir.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rootfs = umoci_unpack(&s.root, "ssh", &s.work.join("ssh-out"));
    assert_eq!(
        fs::read_to_string(rootfs.join("ssh")).unwrap(),
        "forwarded\n"
    );
    let missing = kiln(&s.root, &["build", "--no-cache", dir.to_str().unwrap()]);
    assert!(text(&missing.stderr).contains("no SSH agent \"default\" was forwarded"));

    let insecure = context(
        &s,
        "insecure",
        "FROM busybox\nRUN grep CapEff /proc/self/status > /default-caps\n\
         RUN --security=insecure grep CapEff /proc/self/status > /insecure-caps\n",
    );
    let refused = kiln(&s.root, &["build", insecure.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        text(&refused.stderr).contains("security.insecure is not allowed"),
        "{}",
        text(&refused.stderr)
    );
    let allowed = kiln(
        &s.root,
        &[
            "build",
            "-t",
            "insecure",
            "--allow",
            "security.insecure",
            insecure.to_str().unwrap(),
        ],
    );
    assert!(allowed.status.success(), "{}", text(&allowed.stderr));
    let rootfs = umoci_unpack(&s.root, "insecure", &s.work.join("insecure-out"));
    let caps = |f: &str| fs::read_to_string(rootfs.join(f)).unwrap();
    // Docker's default set, and every capability of the kernel.
    assert_eq!(caps("default-caps"), "CapEff:\t00000000a80425fb\n");
    let all = caps("insecure-caps");
    let all = u64::from_str_radix(all.trim().trim_start_matches("CapEff:\t"), 16).unwrap();
    assert!(all.count_ones() > 35, "{all:x}");
    let privileged = ok(kiln(
        &s.root,
        &[
            "run",
            "--rm",
            "--privileged",
            "busybox",
            "grep",
            "CapEff",
            "/proc/self/status",
        ],
    ));
    assert_eq!(privileged, caps("insecure-caps"));

    // A bind-mounted file is an input of the RUN: editing it reruns the
    // step and says so; editing another file does not.
    let bind = context(
        &s,
        "bind-key",
        "FROM busybox\nRUN --mount=type=bind,source=data.txt,target=/in/data.txt cp /in/data.txt /out\n",
    );
    fs::write(bind.join("data.txt"), "one\n").unwrap();
    fs::write(bind.join("other.txt"), "x\n").unwrap();
    let build = || {
        let out = kiln(&s.root, &["build", "--explain", bind.to_str().unwrap()]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stderr)
    };
    build();
    fs::write(bind.join("other.txt"), "y\n").unwrap();
    assert!(build().contains("#2 CACHED"));
    fs::write(bind.join("data.txt"), "two\n").unwrap();
    let rerun = build();
    assert!(
        rerun.contains("input data.txt (/in/data.txt) changed"),
        "{rerun}"
    );
}

#[test]
fn cache_mounts_travel_with_an_exported_cache_when_asked() {
    let s = common::busybox_workspace();
    let dir = context(
        &s,
        "counted",
        "FROM busybox\nRUN --mount=type=cache,target=/var/cache/c sh -c 'echo run >> /var/cache/c/runs; wc -l < /var/cache/c/runs > /count'\n",
    );
    let exported = s.work.join("exported");
    let to = format!("type=local,dest={},cache-mounts=true", exported.display());
    ok(kiln(
        &s.root,
        &["build", "--cache-to", &to, dir.to_str().unwrap()],
    ));
    assert!(exported.join("cache-mounts.tar").is_file());

    // Another store: the step reruns (--no-cache) with the mount's content.
    let other = s.work.join("other-store");
    let rootfs = busybox_rootfs(&s.work);
    ok(kiln(
        &other,
        &["import", rootfs.to_str().unwrap(), "busybox"],
    ));
    let from = format!("type=local,src={}", exported.display());
    ok(kiln(
        &other,
        &[
            "build",
            "--no-cache",
            "--cache-from",
            &from,
            "-t",
            "counted",
            dir.to_str().unwrap(),
        ],
    ));
    let unpacked = umoci_unpack(&other, "counted", &s.work.join("counted"));
    assert_eq!(
        fs::read_to_string(unpacked.join("count")).unwrap().trim(),
        "2"
    );
}

#[test]
fn the_same_step_in_two_stages_runs_once() {
    let s = common::busybox_workspace();
    let dir = context(
        &s,
        "twins",
        "FROM busybox AS a\nRUN sleep 1 && date +%s%N > /made\n\
         FROM busybox AS b\nRUN sleep 1 && date +%s%N > /made\n\
         FROM busybox\nCOPY --from=a /made /a\nCOPY --from=b /made /b\n",
    );
    let out = kiln(
        &s.root,
        &[
            "build",
            "--progress",
            "plain",
            "-t",
            "twins",
            dir.to_str().unwrap(),
        ],
    );
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // One of the two RUNs ran; the other waited for it and hit.
    let ran = stderr
        .lines()
        .filter(|l| l.starts_with("#2 DONE") || l.starts_with("#4 DONE"))
        .count();
    let cached = stderr
        .lines()
        .filter(|l| *l == "#2 CACHED" || *l == "#4 CACHED")
        .count();
    assert_eq!((ran, cached), (1, 1), "{stderr}");
    let rootfs = umoci_unpack(&s.root, "twins", &s.work.join("twins-out"));
    assert_eq!(
        fs::read_to_string(rootfs.join("a")).unwrap(),
        fs::read_to_string(rootfs.join("b")).unwrap(),
        "both stages have the one result"
    );
}
