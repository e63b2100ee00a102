//! Threat: a Dockerfile's RUN step or a `kiln run` command exhausts the
//! host (a fork bomb, a memory hog, CPU) or reaches the host's devices
//! (a block device node made with CAP_MKNOD). Every container runs in a
//! cgroup of its own: pids, memory and CPU limits, Docker's default device
//! rules, and a `nodev` rootfs. The cgroup goes away with the container,
//! and those of a kiln killed with SIGKILL go with the next run.
//!
//! The processes these tests start are bounded (a few hundred short
//! `sleep`s at most, 64 MiB), so they cannot harm the host even where the
//! limits they check are missing.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{busybox_workspace, kiln, ok, text};

/// The container cgroups kiln process `owner` made for `controller`
/// (`<own cgroup>/kiln/<owner>-<n>-<pid ns>` on v1, `/kiln/...` on v2).
fn cgroup_dirs(controller: &str, owner: u32) -> Vec<PathBuf> {
    let prefix = format!("{owner}-");
    fs::read_dir(cgroup_parent(controller))
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// Where kiln makes its containers' cgroups for `controller`.
fn cgroup_parent(controller: &str) -> PathBuf {
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        PathBuf::from("/sys/fs/cgroup/kiln")
    } else {
        let own = fs::read_to_string("/proc/self/cgroup").unwrap();
        let path = own
            .lines()
            .filter_map(|l| {
                let mut fields = l.splitn(3, ':').skip(1);
                fields.next().zip(fields.next())
            })
            .find(|(controllers, _)| controllers.split(',').any(|c| c == controller))
            .map(|(_, path)| path.trim_start_matches('/').to_owned())
            .unwrap_or_default();
        Path::new("/sys/fs/cgroup")
            .join(controller)
            .join(path)
            .join("kiln")
    }
}

/// Waits (up to a minute) for the container cgroup of `child` to hold a
/// process. kiln makes the directory, then writes its limits, then the
/// container joins it: a test that read the limits as soon as the
/// directory appeared could read the kernel's defaults (`max`).
fn wait_for_cgroup(child: &mut Child, controller: &str) -> PathBuf {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(dir) = cgroup_dirs(controller, child.id())
            .into_iter()
            .find(|dir| has_a_process(dir))
        {
            return dir;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("kiln ended ({status}) before a {controller} cgroup appeared");
        }
        assert!(
            Instant::now() < deadline,
            "no {controller} cgroup for kiln {}",
            child.id()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether a process has joined the cgroup at `dir` (`tasks` on v1,
/// `cgroup.procs` on v2).
fn has_a_process(dir: &Path) -> bool {
    ["tasks", "cgroup.procs"]
        .iter()
        .any(|file| fs::read_to_string(dir.join(file)).is_ok_and(|pids| !pids.trim().is_empty()))
}

fn read(path: &Path) -> String {
    fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_owned()
}

/// A shell loop that starts up to `tries` background sleeps, printing the
/// count after each; busybox sh stops at the first fork that fails.
fn spawner(tries: u32) -> String {
    format!("n=0; while [ $n -lt {tries} ]; do sleep 30 & n=$((n+1)); echo $n; done")
}

#[test]
fn a_fork_bomb_in_run_stops_at_the_pids_limit() {
    let ws = busybox_workspace();
    let ctx = ws.work.join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        format!("FROM busybox\nRUN {}\n", spawner(300)),
    )
    .unwrap();
    let out = kiln(
        &ws.root,
        &[
            "build",
            "--progress",
            "plain",
            "--pids-limit",
            "64",
            ctx.to_str().unwrap(),
        ],
    );
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(!out.status.success(), "300 processes fit in 64: {all}");
    assert!(all.contains("can't fork"), "{all}");
}

#[test]
fn run_steps_get_a_pids_limit_by_default() {
    let ws = busybox_workspace();
    let ctx = ws.work.join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("Dockerfile"), "FROM busybox\nRUN sleep 120\n").unwrap();
    let mut build = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--root")
        .arg(&ws.root)
        .args(["build", "--progress", "plain"])
        .arg(&ctx)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let dir = wait_for_cgroup(&mut build, "pids");
    let max = read(&dir.join("pids.max"));
    // Interrupted, the build removes its container and the cgroup.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(build.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    build.wait().unwrap();
    assert_eq!(max, "4096");
    assert!(!dir.exists(), "{} outlived the build", dir.display());
}

#[test]
fn kiln_run_pids_limit_caps_processes() {
    let ws = busybox_workspace();
    let out = kiln(
        &ws.root,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "--pids-limit",
            "20",
            "busybox",
            "sh",
            "-c",
            &spawner(100),
        ],
    );
    let stdout = text(&out.stdout);
    let started: u32 = stdout
        .lines()
        .last()
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    assert!(!out.status.success(), "all 100 started: {stdout}");
    assert!(started < 20, "{started} processes under a limit of 20");
    assert!(
        text(&out.stderr).contains("can't fork"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_memory_hog_is_killed_with_137() {
    let ws = busybox_workspace();
    // tail holds the last 64 MiB of its input in memory.
    let out = kiln(
        &ws.root,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "--memory",
            "32m",
            "busybox",
            "sh",
            "-c",
            "head -c 96m /dev/zero | tail -c 64m > /dev/null",
        ],
    );
    assert_eq!(out.status.code(), Some(137), "{}", text(&out.stderr));
}

#[test]
fn cpus_set_the_cfs_quota() {
    let ws = busybox_workspace();
    let sync = ws.work.join("sync");
    fs::create_dir_all(&sync).unwrap();
    let volume = format!("{}:/sync", sync.display());
    let mut run = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--root")
        .arg(&ws.root)
        .args(["run", "--rm", "--network", "none", "--cpus", "0.5"])
        .args(["-v", &volume, "busybox", "sh", "-c"])
        .arg("while [ ! -e /sync/go ]; do sleep 0.05; done")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let dir = wait_for_cgroup(&mut run, "cpu");
    let quota = if dir.join("cpu.max").exists() {
        read(&dir.join("cpu.max"))
    } else {
        format!(
            "{} {}",
            read(&dir.join("cpu.cfs_quota_us")),
            read(&dir.join("cpu.cfs_period_us"))
        )
    };
    fs::write(sync.join("go"), "").unwrap();
    let out = run.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(quota, "50000 100000");
}

/// A block device this host lets root open (some sandboxes refuse even
/// root its disk): those in /proc/partitions, then loop0. Checked with a
/// node made in `dir` and opened read-only, nothing read.
fn openable_block_device(dir: &Path) -> Option<(u64, u64)> {
    let partitions = fs::read_to_string("/proc/partitions").unwrap_or_default();
    let listed = partitions.lines().skip(2).filter_map(|line| {
        let mut fields = line.split_whitespace();
        Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
    });
    let node = dir.join("probe");
    listed.chain([(7, 0)]).find(|&(major, minor)| {
        let _ = fs::remove_file(&node);
        let made = nix::sys::stat::mknod(
            &node,
            nix::sys::stat::SFlag::S_IFBLK,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
            nix::sys::stat::makedev(major, minor),
        );
        let opens = made.is_ok() && fs::File::open(&node).is_ok();
        let _ = fs::remove_file(&node);
        opens
    })
}

#[test]
fn a_block_device_node_cannot_be_opened_even_with_cap_mknod() {
    let ws = busybox_workspace();
    let Some((major, minor)) = openable_block_device(&ws.work) else {
        eprintln!("skipped: this host lets no block device be opened, even by root");
        return;
    };
    // In the rootfs (nodev) and in /dev (a tmpfs where device nodes work:
    // the device cgroup decides). Reading is all it tries.
    let script = format!(
        "for node in /tmp/disk /dev/disk; do \
           mknod $node b {major} {minor} && echo made $node; \
           if dd if=$node of=/dev/null bs=512 count=1 2>/dev/null; \
           then echo read $node; else echo denied $node; fi; \
         done"
    );
    let out = ok(kiln(
        &ws.root,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "busybox",
            "sh",
            "-c",
            &script,
        ],
    ));
    assert_eq!(
        out,
        "made /tmp/disk\ndenied /tmp/disk\nmade /dev/disk\ndenied /dev/disk\n"
    );
}

#[test]
fn the_default_devices_still_work() {
    let ws = busybox_workspace();
    let out = ok(kiln(
        &ws.root,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "busybox",
            "sh",
            "-c",
            "head -c 4 /dev/urandom | wc -c; head -c 4 /dev/zero | wc -c; echo x > /dev/null; echo ok",
        ],
    ));
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["4", "4", "ok"]);
}

#[test]
fn the_rootfs_is_mounted_nodev() {
    let ws = busybox_workspace();
    let mountinfo = ok(kiln(
        &ws.root,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "busybox",
            "cat",
            "/proc/self/mountinfo",
        ],
    ));
    let root = mountinfo
        .lines()
        .find(|l| l.split(' ').nth(4) == Some("/"))
        .unwrap_or_else(|| panic!("no / in {mountinfo}"));
    let options = root.split(' ').nth(5).unwrap();
    assert!(options.split(',').any(|o| o == "nodev"), "{root}");
}

#[test]
fn cgroups_of_a_sigkilled_kiln_are_removed_by_the_next_run() {
    let ws = busybox_workspace();
    let mut run = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--root")
        .arg(&ws.root)
        .args([
            "run",
            "--rm",
            "--network",
            "none",
            "busybox",
            "sleep",
            "120",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let dir = wait_for_cgroup(&mut run, "pids");
    run.kill().unwrap();
    run.wait().unwrap();
    // Its container dies with it (parent-death signal); the empty cgroup
    // stays until the next container under the same parent.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !read(&dir.join("cgroup.procs")).is_empty() {
        assert!(Instant::now() < deadline, "the container outlived kiln");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(dir.exists());
    let done = kiln(
        &ws.root,
        &["run", "--rm", "--network", "none", "busybox", "true"],
    );
    assert!(done.status.success(), "{}", text(&done.stderr));
    assert!(!dir.exists(), "{} is still there", dir.display());
}

/// A pid says whether its kiln is alive only within kiln's own pid
/// namespace: an empty cgroup of a kiln elsewhere (a namespaced CI run on
/// the same machine) is not taken for a dead one's, since removing it
/// before its container moves in fails that container's start.
#[test]
fn cgroups_of_another_pid_namespace_are_left_alone() {
    use std::os::unix::fs::MetadataExt;
    let ws = busybox_workspace();
    let parent = cgroup_parent("pids");
    fs::create_dir_all(&parent).unwrap();
    let ours = fs::metadata("/proc/self/ns/pid").unwrap().ino();
    // No process has this pid here (above any default pid_max use).
    let dead = 4_194_000;
    let elsewhere = parent.join(format!("{dead}-0-{}", ours + 1));
    let here = parent.join(format!("{dead}-0-{ours}"));
    fs::create_dir(&elsewhere).unwrap();
    fs::create_dir(&here).unwrap();
    let done = kiln(
        &ws.root,
        &["run", "--rm", "--network", "none", "busybox", "true"],
    );
    let kept = elsewhere.exists();
    let _ = fs::remove_dir(&elsewhere);
    let _ = fs::remove_dir(&here);
    assert!(done.status.success(), "{}", text(&done.stderr));
    assert!(kept, "another namespace's young cgroup was removed");
    assert!(
        !here.exists(),
        "a dead owner's cgroup of this namespace stayed"
    );
}

/// A pid-1 command running as a non-root user that execs a setuid binary
/// loses its parent-death signal (the kernel clears it at such an exec),
/// yet it must still die with a SIGKILLed kiln: kiln's watcher kills it.
#[test]
fn a_setuid_pid_1_dies_with_a_sigkilled_kiln() {
    let ws = busybox_workspace();
    let ctx = ws.work.join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\n\
         RUN --network=none mkdir /suid && cp /bin/busybox /suid/busybox && chmod 4755 /suid/busybox\n",
    )
    .unwrap();
    let out = kiln(&ws.root, &["build", "-t", "suid", ctx.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for extra in [&[][..], &["--init"][..]] {
        let mut args = vec!["run", "--rm", "--network", "none", "-u", "1000"];
        args.extend_from_slice(extra);
        args.extend(["suid", "/suid/busybox", "sleep", "120"]);
        let mut run = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .arg("--root")
            .arg(&ws.root)
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let dir = wait_for_cgroup(&mut run, "pids");
        // Until the exec of the setuid binary.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !read(&dir.join("cgroup.procs")).lines().any(|pid| {
            fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.starts_with(b"/suid/busybox\0sleep\0"))
        }) {
            assert!(Instant::now() < deadline, "{extra:?}: sleep never ran");
            std::thread::sleep(Duration::from_millis(20));
        }
        run.kill().unwrap();
        run.wait().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !read(&dir.join("cgroup.procs")).is_empty() {
            if Instant::now() > deadline {
                for pid in read(&dir.join("cgroup.procs")).lines() {
                    common::send_signal(pid.parse().unwrap(), "KILL");
                }
                panic!("{extra:?}: the setuid pid 1 outlived kiln");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn kiln_run_removes_its_cgroup() {
    let ws = busybox_workspace();
    let sync = ws.work.join("sync");
    fs::create_dir_all(&sync).unwrap();
    let volume = format!("{}:/sync", sync.display());
    let mut run = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--root")
        .arg(&ws.root)
        .args(["run", "--rm", "--network", "none", "--memory", "64m"])
        .args(["-v", &volume, "busybox", "sh", "-c"])
        .arg("while [ ! -e /sync/go ]; do sleep 0.05; done; exit 3")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let memory = wait_for_cgroup(&mut run, "memory");
    let limit = ["memory.max", "memory.limit_in_bytes"]
        .iter()
        .map(|f| memory.join(f))
        .find(|f| f.exists())
        .unwrap();
    assert_eq!(read(&limit), (64u64 << 20).to_string());
    fs::write(sync.join("go"), "").unwrap();
    let owner = run.id();
    let out = run.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    for controller in ["memory", "pids", "cpu", "devices"] {
        let left = cgroup_dirs(controller, owner);
        assert!(left.is_empty(), "left behind: {left:?}");
    }
}

#[test]
fn bad_limits_are_refused_before_anything_starts() {
    let ws = busybox_workspace();
    for (flags, says) in [
        (&["--memory", "1k"][..], "minimum of 6 MiB"),
        (&["--memory", "lots"][..], "invalid size"),
        (&["--cpus", "0"][..], "0.01"),
        (&["--pids-limit", "-5"][..], "positive number"),
    ] {
        let mut args = vec!["run", "--rm"];
        args.extend_from_slice(flags);
        args.extend(["busybox", "true"]);
        let out = kiln(&ws.root, &args);
        assert!(!out.status.success(), "{flags:?}");
        assert!(
            text(&out.stderr).contains(says),
            "{flags:?}: {}",
            text(&out.stderr)
        );
    }
    let ps = ok(kiln(&ws.root, &["ps", "-a"]));
    assert_eq!(ps.lines().count(), 1, "a container was left: {ps}");
}

/// Prints `limit N` for each of `files` (relative to `/sys/fs/cgroup`)
/// that exists: v1 and v2 name them differently.
fn show_limits(files: &[&str]) -> String {
    let paths: Vec<String> = files
        .iter()
        .map(|f| format!("/sys/fs/cgroup/{f}"))
        .collect();
    format!(
        "for f in {}; do if [ -e $f ]; then echo limit $(cat $f); fi; done",
        paths.join(" ")
    )
}

#[test]
fn run_steps_see_their_pids_limit_in_sys_fs_cgroup() {
    let ws = busybox_workspace();
    let ctx = ws.work.join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM busybox\nRUN {}\n",
            show_limits(&["pids/pids.max", "pids.max"])
        ),
    )
    .unwrap();
    let out = kiln(
        &ws.root,
        &["build", "--progress", "plain", ctx.to_str().unwrap()],
    );
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{all}");
    assert!(all.contains("limit 4096"), "{all}");
}

#[test]
fn kiln_run_shows_its_limits_read_only_in_sys_fs_cgroup() {
    let ws = busybox_workspace();
    let script = format!(
        "{}; echo 1 > /sys/fs/cgroup/pids/pids.max 2>/dev/null || echo read-only",
        show_limits(&["memory/memory.limit_in_bytes", "memory.max"])
    );
    let out = ok(kiln(
        &ws.root,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "-m",
            "64m",
            "busybox",
            "sh",
            "-c",
            &script,
        ],
    ));
    assert_eq!(out, format!("limit {}\nread-only\n", 64u64 << 20));
}
