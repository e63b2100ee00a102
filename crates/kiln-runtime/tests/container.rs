//! Integration tests: real containers over a busybox rootfs. They need
//! root, overlayfs and `/bin/busybox` (busybox-static); without them each
//! test prints why and passes.

use std::fs;
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use kiln_runtime::{
    resolve_user, run, BindSource, CollectedOutput, Container, ContainerSpec, ExitStatus, Mount,
    Network, RuntimeError, User,
};
use tempfile::TempDir;

const BUSYBOX: &str = "/bin/busybox";

/// A rootfs lower dir plus upper/work/state dirs, all in one tempdir.
struct Fixture {
    dir: TempDir,
}

impl Fixture {
    fn new() -> Option<Fixture> {
        if let Some(reason) = skip_reason() {
            println!("skipped: {reason}");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        build_rootfs(&rootfs);
        Some(Fixture { dir })
    }

    fn rootfs(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }

    fn upper(&self) -> PathBuf {
        self.dir.path().join("upper")
    }

    fn spec(&self, script: &str) -> ContainerSpec {
        ContainerSpec {
            lower_dirs: vec![self.rootfs()],
            upper_dir: self.upper(),
            work_dir: self.dir.path().join("work"),
            args: vec!["/bin/sh".into(), "-c".into(), script.into()],
            env: vec!["PATH=/bin".into()],
            cwd: "/".into(),
            hostname: "kiln-test".into(),
            state_parent: Some(self.dir.path().to_path_buf()),
            privileged: false,
            ..Default::default()
        }
    }

    /// Runs `script`; returns status, stdout, stderr. Guards against hangs.
    fn run(&self, spec: &ContainerSpec) -> (ExitStatus, String, String) {
        let (status, out) = run_guarded(spec).expect("container run");
        (
            status,
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn sh(&self, script: &str) -> (ExitStatus, String, String) {
        self.run(&self.spec(script))
    }

    /// Every path in the upper dir, relative, sorted.
    fn upper_entries(&self) -> Vec<String> {
        let mut out = Vec::new();
        walk(&self.upper(), &self.upper(), &mut out);
        out.sort();
        out
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // Whatever happened, nothing of ours is mounted on the host.
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
        let ours = self.dir.path().to_string_lossy().into_owned();
        if !std::thread::panicking() {
            assert!(
                !mountinfo.contains(&ours),
                "host mountinfo mentions {ours}:\n{mountinfo}"
            );
        }
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        out.push(
            path.strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned(),
        );
        if entry.file_type().unwrap().is_dir() {
            walk(root, &path, out);
        }
    }
}

fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root".into());
    }
    if !Path::new(BUSYBOX).exists() {
        return Some(format!("needs {BUSYBOX} (busybox-static)"));
    }
    let filesystems = fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !filesystems.contains("overlay") {
        return Some("needs overlayfs".into());
    }
    None
}

fn build_rootfs(root: &Path) {
    let bin = root.join("bin");
    fs::create_dir_all(&bin).unwrap();
    fs::copy(BUSYBOX, bin.join("busybox")).unwrap();
    let list = Command::new(BUSYBOX).arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            symlink("busybox", bin.join(applet)).unwrap();
        }
    }
    let etc = root.join("etc");
    fs::create_dir_all(&etc).unwrap();
    fs::write(
        etc.join("passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
    )
    .unwrap();
    fs::write(
        etc.join("group"),
        "root:x:0:\napp:x:1000:\nwheel:x:10:app\n",
    )
    .unwrap();
    fs::write(etc.join("to-delete"), "bye\n").unwrap();
    for dir in ["tmp", "home/app", "root"] {
        fs::create_dir_all(root.join(dir)).unwrap();
    }
    fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    std::os::unix::fs::chown(root.join("home/app"), Some(1000), Some(1000)).unwrap();
    // tempdir() makes 0700 dirs; the image root must be traversable.
    fs::set_permissions(root, fs::Permissions::from_mode(0o755)).unwrap();
}

/// Runs the container on a thread; a run that hangs is killed after a
/// generous bound so the suite fails instead of hanging.
fn run_guarded(spec: &ContainerSpec) -> Result<(ExitStatus, CollectedOutput), RuntimeError> {
    let container = Container::spawn(spec)?;
    let handle = container.kill_handle();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if done_rx.recv_timeout(Duration::from_secs(60)).is_err() {
            handle.kill();
        }
    });
    let mut out = CollectedOutput::default();
    let result = container.wait(&mut out);
    let _ = done_tx.send(());
    watchdog.join().unwrap();
    result.map(|status| (status, out))
}

#[test]
fn stdout_and_stderr_are_captured() {
    let Some(f) = Fixture::new() else { return };
    let (status, out, err) = f.sh("echo hello; echo oops >&2; echo again");
    assert_eq!(status, ExitStatus::Exited(0));
    assert_eq!(out, "hello\nagain\n");
    assert_eq!(err, "oops\n");
}

#[test]
fn large_output_does_not_deadlock() {
    let Some(f) = Fixture::new() else { return };
    let (status, out, err) =
        f.sh("i=0; while [ $i -lt 3000 ]; do echo line $i; echo err $i >&2; i=$((i+1)); done");
    assert!(status.success());
    assert_eq!(out.lines().count(), 3000);
    assert_eq!(err.lines().last(), Some("err 2999"));
}

#[test]
fn exit_codes_and_signals_propagate() {
    let Some(f) = Fixture::new() else { return };
    assert_eq!(f.sh("exit 3").0, ExitStatus::Exited(3));
    // With an init the command is an ordinary process: its own SIGKILL
    // kills it, and the init reports the signal.
    let mut spec = f.spec("kill -9 $$");
    spec.init = true;
    let (status, _, _) = f.run(&spec);
    assert_eq!(status, ExitStatus::Signaled(9));
    assert_eq!(status.code(), 137);
}

/// Without an init the command is the namespace's pid 1 (as in Docker and
/// BuildKit's RUN): `$$` is 1, `/proc/1` is the command's own argv and
/// environment, and, pid 1 being immune to signals from inside its
/// namespace that it has no handler for, `kill -9 $$` does nothing.
#[test]
fn the_command_is_pid_1() {
    let Some(f) = Fixture::new() else { return };
    let mut spec = f.spec(
        "echo $$; tr '\\0' ' ' < /proc/1/cmdline; echo; tr '\\0' '\\n' < /proc/1/environ; echo end",
    );
    spec.env.push("ONLY_THIS=here".into());
    let (status, out, err) = f.run(&spec);
    assert!(status.success(), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "1", "{out:?} {err:?}");
    assert_eq!(lines[1], format!("/bin/sh -c {} ", spec.args[2]));
    // (Not last in the script: busybox execs a last command, and the
    // descriptor of a replaced image's environ reads nothing.)
    assert_eq!(lines.last(), Some(&"end"));
    let mut environ = lines[2..lines.len() - 1].to_vec();
    environ.sort_unstable();
    assert_eq!(environ, ["ONLY_THIS=here", "PATH=/bin"]);

    let (status, out, _) = f.sh("kill -9 $$; echo survived");
    assert_eq!(
        (status, out.as_str()),
        (ExitStatus::Exited(0), "survived\n")
    );
}

/// From the parent's namespace SIGKILL always reaches a pid 1 without
/// handlers, and its status is reported as the command's (137).
#[test]
fn sigkill_from_outside_ends_a_pid_1_command() {
    let Some(f) = Fixture::new() else { return };
    // No handler for TERM: pid 1 ignores it, even from outside.
    let container = Container::spawn(&f.spec("echo started; exec sleep 100")).unwrap();
    struct KillOnOutput(i32);
    impl kiln_runtime::OutputSink for KillOnOutput {
        fn stdout(&mut self, _: &[u8]) {
            // SAFETY: signalling our own child, still unreaped.
            unsafe { libc::kill(self.0, libc::SIGTERM) };
            std::thread::sleep(Duration::from_millis(200));
            // SAFETY: as above; SIGTERM was ignored, so it still runs.
            unsafe { libc::kill(self.0, libc::SIGKILL) };
        }
        fn stderr(&mut self, _: &[u8]) {}
    }
    let pid = container.pid();
    let status = container.wait(&mut KillOnOutput(pid)).unwrap();
    assert_eq!(status, ExitStatus::Signaled(libc::SIGKILL));
    assert_eq!(status.code(), 137);
}

#[test]
fn env_and_cwd() {
    let Some(f) = Fixture::new() else { return };
    let mut spec = f.spec("echo $GREETING; pwd");
    spec.env.push("GREETING=hi there".into());
    spec.cwd = "/work/dir".into();
    let (status, out, _) = f.run(&spec);
    assert!(status.success());
    assert_eq!(out, "hi there\n/work/dir\n");
    // Creating the working directory is part of the change set.
    assert_eq!(f.upper_entries(), ["work", "work/dir"]);
    let meta = fs::metadata(f.upper().join("work/dir")).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o7777), (0, 0o755));
}

#[test]
fn path_lookup_uses_the_container_path() {
    let Some(f) = Fixture::new() else { return };
    let mut spec = f.spec("");
    spec.args = vec!["echo".into(), "found".into()];
    let (status, out, _) = f.run(&spec);
    assert!(status.success());
    assert_eq!(out, "found\n");

    spec.args = vec!["no-such-program".into()];
    match run_guarded(&spec) {
        Err(RuntimeError::Exec { program, .. }) => assert_eq!(program, "no-such-program"),
        other => panic!("expected an exec error, got {other:?}"),
    }
}

#[test]
fn hostname_is_the_specs() {
    let Some(f) = Fixture::new() else { return };
    let (_, out, _) = f.sh("hostname; cat /etc/hostname; grep -c kiln-test /etc/hosts");
    assert_eq!(out, "kiln-test\nkiln-test\n1\n");
}

#[test]
fn only_container_processes_are_visible() {
    let Some(f) = Fixture::new() else { return };
    for (init, pid, most) in [(false, "1", 3), (true, "2", 4)] {
        let mut spec = f.spec("echo $$; ls /proc | grep -c '^[0-9]'");
        spec.init = init;
        let (_, out, _) = f.run(&spec);
        let lines: Vec<&str> = out.lines().collect();
        // The command is 1 (2 under an init); ls and grep are the others.
        assert_eq!(lines[0], pid, "init: {init}");
        let count: u32 = lines[1].parse().unwrap();
        assert!(count <= most, "saw {count} processes (init: {init})");
    }
}

#[test]
fn proc_is_hardened() {
    let Some(f) = Fixture::new() else { return };
    let (status, _, err) = f.sh("echo h > /proc/sysrq-trigger");
    assert!(!status.success());
    assert!(
        err.contains("Read-only") || err.contains("can't create"),
        "{err}"
    );
    assert!(!f.sh("echo 1 > /proc/sys/kernel/domainname").0.success());
    // Masked: /proc/keys is /dev/null (/proc/kcore too where it exists).
    let (status, out, _) = f.sh("test -c /proc/keys && wc -c < /proc/keys");
    assert!(status.success());
    assert_eq!(out.trim(), "0");
    // sysfs is read-only.
    assert!(!f.sh("echo x > /sys/kernel/uevent_helper").0.success());
}

#[test]
fn dev_has_the_usual_nodes() {
    let Some(f) = Fixture::new() else { return };
    let script = "echo x > /dev/null && head -c 4 /dev/zero | wc -c && \
                  test -c /dev/urandom && test -c /dev/tty && test -d /dev/pts && \
                  test -L /dev/ptmx && touch /dev/shm/x && test -d /dev/mqueue && echo ok";
    let (status, out, err) = f.sh(script);
    assert!(status.success(), "{err}");
    assert_eq!(out, "4\nok\n");
}

#[test]
fn network_none_has_only_loopback_up() {
    let Some(f) = Fixture::new() else { return };
    let (status, out, err) =
        f.sh("tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '; cat /sys/class/net/lo/flags");
    assert!(status.success(), "{err}");
    assert_eq!(out, "lo\n0x9\n");
}

#[test]
fn network_host_sees_host_interfaces() {
    let Some(f) = Fixture::new() else { return };
    let mut spec = f.spec("tail -n +3 /proc/net/dev | wc -l");
    spec.network = Network::Host;
    let (status, out, _) = f.run(&spec);
    assert!(status.success());
    let host = fs::read_to_string("/proc/net/dev").unwrap().lines().count() - 2;
    assert_eq!(out.trim(), host.to_string());
}

#[test]
fn upper_dir_holds_exactly_the_changes() {
    let Some(f) = Fixture::new() else { return };
    let (status, _, err) = f.sh("echo new > /tmp/created && rm /etc/to-delete");
    assert!(status.success(), "{err}");
    assert_eq!(
        f.upper_entries(),
        ["etc", "etc/to-delete", "tmp", "tmp/created"]
    );
    assert_eq!(
        fs::read_to_string(f.upper().join("tmp/created")).unwrap(),
        "new\n"
    );
    let whiteout = fs::symlink_metadata(f.upper().join("etc/to-delete")).unwrap();
    assert!(whiteout.file_type().is_char_device());
    assert_eq!(whiteout.rdev(), 0);
    // Copied-up parents keep the image's metadata.
    let tmp = fs::metadata(f.upper().join("tmp")).unwrap();
    assert_eq!(tmp.mode() & 0o7777, 0o1777);
}

#[test]
fn mount_points_never_reach_the_upper_dir() {
    let Some(f) = Fixture::new() else { return };
    // The image has no /proc, /dev, /sys, /etc/hosts...: a no-op run must
    // still leave the upper dir empty.
    let (status, _, _) = f.sh("cat /etc/hosts /etc/resolv.conf > /dev/null; echo x > /etc/hosts");
    assert!(status.success());
    assert!(f.upper_entries().is_empty(), "{:?}", f.upper_entries());
    assert!(!f.rootfs().join("proc").exists());
}

#[test]
fn extra_mounts_work_and_stay_out_of_the_layer() {
    let Some(f) = Fixture::new() else { return };
    let src = f.dir.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("input"), "from host\n").unwrap();
    let mut spec = f.spec(
        "cat /mnt/src/input && ! touch /mnt/src/nope 2>/dev/null && \
         echo tmp > /cache/f && mkdir /cache/sub/d && echo ok",
    );
    spec.mounts = vec![
        Mount::Bind {
            source: src.clone(),
            target: "/mnt/src".into(),
            readonly: true,
        },
        Mount::Tmpfs {
            target: "/cache".into(),
            size_bytes: Some(1 << 20),
        },
        Mount::Tmpfs {
            target: "/cache/sub".into(),
            size_bytes: None,
        },
    ];
    let (status, out, err) = f.run(&spec);
    assert!(status.success(), "{err}");
    assert_eq!(out, "from host\nok\n");
    assert!(f.upper_entries().is_empty(), "{:?}", f.upper_entries());
    assert!(!src.join("nope").exists());
}

#[test]
fn descriptor_binds_mount_what_the_descriptor_is() {
    use std::os::fd::OwnedFd;
    let Some(f) = Fixture::new() else { return };
    let src = f.dir.path().join("fd-src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("input"), "by descriptor\n").unwrap();
    let open = |path: &Path| -> OwnedFd {
        use std::os::unix::fs::OpenOptionsExt;
        fs::File::options()
            .read(true)
            .custom_flags(libc::O_PATH)
            .open(path)
            .unwrap()
            .into()
    };
    let dir = open(&src);
    let file = open(&src.join("input"));
    // Renaming the source away after opening changes nothing: no path is
    // resolved again.
    fs::rename(&src, f.dir.path().join("moved")).unwrap();
    let mut spec = f.spec(
        "cat /mnt/d/input /mnt/f && ! touch /mnt/d/nope 2>/dev/null && ls /proc/self/fd | wc -l",
    );
    spec.mounts = vec![
        Mount::BindFd {
            source: BindSource::new(dir),
            target: "/mnt/d".into(),
            readonly: true,
        },
        Mount::BindFd {
            source: BindSource::new(file),
            target: "/mnt/f".into(),
            readonly: true,
        },
    ];
    let (status, out, err) = f.run(&spec);
    assert!(status.success(), "{err}");
    // stdin, stdout, stderr and the one `ls` reads: nothing of ours leaks.
    assert_eq!(out, "by descriptor\nby descriptor\n4\n");
    assert!(f.upper_entries().is_empty(), "{:?}", f.upper_entries());
}

#[test]
fn nested_mount_in_a_bind_is_refused() {
    let Some(f) = Fixture::new() else { return };
    let mut spec = f.spec("true");
    spec.mounts = vec![
        Mount::Bind {
            source: f.rootfs(),
            target: "/a".into(),
            readonly: true,
        },
        Mount::Tmpfs {
            target: "/a/b".into(),
            size_bytes: None,
        },
    ];
    assert!(matches!(
        Container::spawn(&spec),
        Err(RuntimeError::InvalidSpec(_))
    ));
}

#[test]
fn user_switching_and_capabilities() {
    let Some(f) = Fixture::new() else { return };
    let resolved = resolve_user(&[f.rootfs()], "app").unwrap();
    assert_eq!(
        resolved.user,
        User {
            uid: 1000,
            gid: 1000,
            additional_gids: vec![10]
        }
    );
    let mut spec = f.spec("id -u; id -g; id -G; grep CapEff /proc/self/status; touch /x");
    spec.user = resolved.user;
    let (status, out, _) = f.run(&spec);
    assert!(!status.success(), "a non-root user cannot write to /");
    assert_eq!(out, "1000\n1000\n1000 10\nCapEff:\t0000000000000000\n");

    let script = "grep -E 'Cap(Eff|Bnd)|NoNewPrivs|Seccomp:' /proc/self/status";
    let (_, out, _) = f.sh(script);
    // Docker's default set: 0x a80425fb; no no_new_privs unless asked for
    // (setuid binaries work, as in Docker); seccomp in filter mode (2).
    assert_eq!(
        out,
        "CapEff:\t00000000a80425fb\nCapBnd:\t00000000a80425fb\nNoNewPrivs:\t0\nSeccomp:\t2\n"
    );
    let mut spec = f.spec(script);
    spec.no_new_privileges = true;
    spec.seccomp = kiln_runtime::Seccomp::Unconfined;
    let (_, out, _) = f.run(&spec);
    assert!(out.ends_with("NoNewPrivs:\t1\nSeccomp:\t0\n"), "{out}");
}

/// `/proc/sys` and the other read-only `/proc` paths keep the `nosuid`,
/// `nodev` and `noexec` of `/proc` when remounted read-only.
#[test]
fn read_only_proc_paths_keep_nosuid_nodev_noexec() {
    let Some(f) = Fixture::new() else { return };
    let (_, out, _) = f.sh("grep -E ' /proc/(bus|fs|irq|sys) ' /proc/self/mountinfo");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.len() >= 2, "{out}");
    for line in lines {
        let options = line.split(' ').nth(5).unwrap();
        for flag in ["ro", "nosuid", "nodev", "noexec"] {
            assert!(options.split(',').any(|o| o == flag), "{line}");
        }
    }
}

#[test]
fn orphans_do_not_hold_the_run() {
    let Some(f) = Fixture::new() else { return };
    // The watchdog in run_guarded fails this test if the run waits for sleep.
    // Without an init the exit of pid 1 (the shell) ends the namespace;
    // with one, the init exits when the command does.
    for init in [false, true] {
        let mut spec = f.spec("sleep 100 & sleep 100 > /dev/null 2>&1 & exit 0");
        spec.init = init;
        let (status, _, _) = f.run(&spec);
        assert_eq!(status, ExitStatus::Exited(0), "init: {init}");
    }
}

#[test]
fn a_killed_container_reports_it() {
    let Some(f) = Fixture::new() else { return };
    let container = Container::spawn(&f.spec("echo started; sleep 100")).unwrap();
    let handle = container.kill_handle();
    struct KillOnOutput(kiln_runtime::KillHandle);
    impl kiln_runtime::OutputSink for KillOnOutput {
        fn stdout(&mut self, _: &[u8]) {
            self.0.kill();
        }
        fn stderr(&mut self, _: &[u8]) {}
    }
    let result = container.wait(&mut KillOnOutput(handle));
    assert!(matches!(result, Err(RuntimeError::Killed)), "{result:?}");
}

#[test]
fn dropping_an_unwaited_container_kills_it() {
    let Some(f) = Fixture::new() else { return };
    let container = Container::spawn(&f.spec("sleep 100")).unwrap();
    let pid = container.pid();
    drop(container);
    // Reaped: the pid is no longer our child.
    let r = unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
    assert_eq!(r, -1);
}

#[test]
fn bad_specs_fail_without_starting() {
    let Some(f) = Fixture::new() else { return };
    let mut spec = f.spec("true");
    spec.lower_dirs.push(f.dir.path().join("missing"));
    assert!(matches!(
        run(&spec, &mut CollectedOutput::default()),
        Err(RuntimeError::InvalidSpec(_))
    ));
    let mut spec = f.spec("true");
    spec.cwd = "relative".into();
    assert!(matches!(
        run(&spec, &mut CollectedOutput::default()),
        Err(RuntimeError::InvalidSpec(_))
    ));
}

#[test]
fn symlinked_etc_files_resolve_inside_the_image() {
    let Some(f) = Fixture::new() else { return };
    // An absolute link that would point at the host's file if followed
    // outside the container.
    fs::create_dir_all(f.rootfs().join("run")).unwrap();
    fs::write(f.rootfs().join("run/resolv.conf"), "old\n").unwrap();
    symlink("/run/resolv.conf", f.rootfs().join("etc/resolv.conf")).unwrap();
    let mut spec = f.spec("cat /etc/resolv.conf");
    spec.resolv_conf = Some("nameserver 10.0.0.1\n".into());
    let (status, out, _) = f.run(&spec);
    assert!(status.success());
    assert_eq!(out, "nameserver 10.0.0.1\n");
    assert!(f.upper_entries().is_empty());
}

#[test]
fn concurrent_runs_from_a_busy_multithreaded_caller() {
    let Some(f) = Fixture::new() else { return };
    // Allocating threads make it likely that some lock is held at clone
    // time; the child must not need any.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churn: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let v: Vec<String> = (0..256).map(|i| i.to_string()).collect();
                    std::hint::black_box(v);
                }
            })
        })
        .collect();
    let runners: Vec<_> = (0..3)
        .map(|t| {
            let base = f.spec("");
            let dir = f.dir.path().to_path_buf();
            std::thread::spawn(move || {
                for i in 0..5 {
                    let mut spec = base.clone();
                    spec.upper_dir = dir.join(format!("upper-{t}-{i}"));
                    spec.work_dir = dir.join(format!("work-{t}-{i}"));
                    spec.user = User {
                        uid: 1000,
                        gid: 1000,
                        additional_gids: vec![10],
                    };
                    spec.args = vec!["/bin/sh".into(), "-c".into(), format!("echo {t}-{i}")];
                    let (status, out) = run_guarded(&spec).expect("run");
                    assert!(status.success());
                    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{t}-{i}\n"));
                }
            })
        })
        .collect();
    for r in runners {
        r.join().unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for c in churn {
        c.join().unwrap();
    }
}

/// Pid 1 dies with the thread that spawned it, with or without an init,
/// and also when the command runs as another user: changing credentials
/// clears the parent-death signal, which pid 1 must arm again.
#[test]
fn init_dies_with_the_spawning_thread() {
    let Some(f) = Fixture::new() else { return };
    let nobody = User {
        uid: 1000,
        gid: 1000,
        additional_gids: vec![],
    };
    for (init, user) in [
        (false, User::default()),
        (false, nobody.clone()),
        (true, nobody),
    ] {
        let mut spec = f.spec("sleep 100");
        spec.init = init;
        spec.user = user;
        pid_1_dies_with_the_spawning_thread(spec);
    }
}

fn pid_1_dies_with_the_spawning_thread(spec: ContainerSpec) {
    let pid = std::thread::spawn(move || {
        let container = Container::spawn(&spec).unwrap();
        let pid = container.pid();
        // Neither waited nor dropped: only PR_SET_PDEATHSIG can end it.
        std::mem::forget(container);
        // Long enough for pid 1 to be past its credential change and
        // running the command.
        std::thread::sleep(Duration::from_millis(300));
        pid
    })
    .join()
    .unwrap();
    let mut status = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        // SAFETY: waiting for our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            break;
        }
        assert_eq!(r, 0);
        if std::time::Instant::now() > deadline {
            // SAFETY: our own child, unreaped; then reaped.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            panic!("pid 1 outlived the thread that spawned it");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL);
}

#[test]
fn sigterm_to_init_reaches_the_command() {
    let Some(f) = Fixture::new() else { return };
    let script = "trap 'echo got term; exit 5' TERM; echo ready; while true; do sleep 0.1; done";
    // As pid 1 the shell gets SIGTERM because it has a handler for it;
    // under an init, the init forwards it.
    for init in [false, true] {
        let mut spec = f.spec(script);
        spec.init = init;
        sigterm_reaches(&spec);
    }
}

fn sigterm_reaches(spec: &ContainerSpec) {
    let container = Container::spawn(spec).unwrap();
    struct TermOnReady {
        pid: i32,
        out: Vec<u8>,
    }
    impl kiln_runtime::OutputSink for TermOnReady {
        fn stdout(&mut self, data: &[u8]) {
            self.out.extend_from_slice(data);
            if data.starts_with(b"ready") {
                // SAFETY: signalling our own child, still unreaped.
                unsafe { libc::kill(self.pid, libc::SIGTERM) };
            }
        }
        fn stderr(&mut self, _: &[u8]) {}
    }
    let mut sink = TermOnReady {
        pid: container.pid(),
        out: Vec::new(),
    };
    let status = container.wait(&mut sink).unwrap();
    assert_eq!(status, ExitStatus::Exited(5));
    assert_eq!(String::from_utf8_lossy(&sink.out), "ready\ngot term\n");
}

#[test]
fn setup_failures_name_the_step() {
    let Some(f) = Fixture::new() else { return };
    let mut spec = f.spec("true");
    spec.cwd = "/etc/passwd/sub".into();
    match run_guarded(&spec) {
        Err(RuntimeError::Setup { step, errno }) => {
            assert_eq!(step, "create working directory /etc/passwd/sub");
            assert_eq!(errno, nix::errno::Errno::ENOTDIR);
        }
        other => panic!("expected a setup error, got {other:?}"),
    }
}

fn xattr(path: &Path, name: &std::ffi::CStr) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let cpath = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut buf = [0u8; 256];
    // SAFETY: NUL-terminated strings and a buffer of the given length.
    let n = unsafe {
        libc::lgetxattr(
            cpath.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    (n >= 0).then(|| buf[..n as usize].to_vec())
}

#[test]
fn upper_dir_is_self_contained() {
    let Some(f) = Fixture::new() else { return };
    fs::create_dir_all(f.rootfs().join("data/sub")).unwrap();
    fs::write(f.rootfs().join("data/sub/file"), "content\n").unwrap();
    let script = "chown 1000 /etc/passwd && mv /data /moved && \
                  rm -rf /home/app && mkdir /home/app && touch /home/app/new";
    let (status, _, err) = f.sh(script);
    assert!(status.success(), "{err}");
    let upper = f.upper();
    // chown copies the data up (no metadata-only copy).
    let passwd = fs::read(upper.join("etc/passwd")).unwrap();
    assert_eq!(passwd, fs::read(f.rootfs().join("etc/passwd")).unwrap());
    assert_eq!(fs::metadata(upper.join("etc/passwd")).unwrap().uid(), 1000);
    // A renamed directory is a full copy plus a whiteout, no redirect.
    assert_eq!(
        fs::read(upper.join("moved/sub/file")).unwrap(),
        b"content\n"
    );
    assert!(xattr(&upper.join("moved"), c"trusted.overlay.redirect").is_none());
    assert!(fs::symlink_metadata(upper.join("data"))
        .unwrap()
        .file_type()
        .is_char_device());
    // A directory removed and recreated is opaque.
    assert_eq!(
        xattr(&upper.join("home/app"), c"trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
}

#[test]
fn a_file_can_be_bound_like_a_secret() {
    let Some(f) = Fixture::new() else { return };
    let secret = f.dir.path().join("secret");
    fs::write(&secret, "s3cr3t\n").unwrap();
    let mut spec = f.spec("cat /run/secrets/token");
    spec.mounts = vec![Mount::Bind {
        source: secret,
        target: "/run/secrets/token".into(),
        readonly: true,
    }];
    let (status, out, _) = f.run(&spec);
    assert!(status.success());
    assert_eq!(out, "s3cr3t\n");
    assert!(f.upper_entries().is_empty());
}

/// Sends what the command prints on to a channel, for a test that
/// answers it from another thread.
struct ChannelSink {
    out: CollectedOutput,
    tx: mpsc::Sender<Vec<u8>>,
}

impl kiln_runtime::OutputSink for ChannelSink {
    fn stdout(&mut self, data: &[u8]) {
        self.out.stdout.extend_from_slice(data);
        let _ = self.tx.send(data.to_vec());
    }
    fn stderr(&mut self, data: &[u8]) {
        self.out.stderr.extend_from_slice(data);
    }
}

/// Runs `spec` with `stdio`; `converse` gets the container's stdin writer,
/// its tty handle and what it prints, on another thread. Guards against
/// hangs like `run_guarded`.
fn run_with(
    spec: &ContainerSpec,
    stdio: kiln_runtime::Stdio,
    converse: impl FnOnce(Option<fs::File>, Option<kiln_runtime::TtyHandle>, mpsc::Receiver<Vec<u8>>)
        + Send
        + 'static,
) -> (ExitStatus, String, String) {
    let mut container = Container::spawn_with(spec, stdio).expect("spawn");
    let handle = container.kill_handle();
    let stdin = container.take_stdin();
    let tty = container.tty_handle();
    let (tx, rx) = mpsc::channel();
    let talker = std::thread::spawn(move || converse(stdin, tty, rx));
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if done_rx.recv_timeout(Duration::from_secs(60)).is_err() {
            handle.kill();
        }
    });
    let mut sink = ChannelSink {
        out: CollectedOutput::default(),
        tx,
    };
    let result = container.wait(&mut sink);
    let _ = done_tx.send(());
    watchdog.join().unwrap();
    talker.join().unwrap();
    let status = result.expect("container run");
    (
        status,
        String::from_utf8_lossy(&sink.out.stdout).into_owned(),
        String::from_utf8_lossy(&sink.out.stderr).into_owned(),
    )
}

/// Reads `rx` until what arrived contains `marker` (or the sender is gone).
fn wait_for_output(rx: &mpsc::Receiver<Vec<u8>>, seen: &mut Vec<u8>, marker: &str) -> bool {
    while !String::from_utf8_lossy(seen).contains(marker) {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(chunk) => seen.extend(chunk),
            Err(_) => return false,
        }
    }
    true
}

#[test]
fn stdin_can_be_fed_through_a_pipe() {
    use std::io::Write;
    let Some(f) = Fixture::new() else { return };
    let stdio = kiln_runtime::Stdio {
        stdin: kiln_runtime::Stdin::Pipe,
        tty: None,
    };
    let (status, out, err) = run_with(
        &f.spec("cat | tr a-z A-Z; echo done"),
        stdio,
        |stdin, tty, _| {
            assert!(tty.is_none());
            let mut stdin = stdin.expect("a stdin writer");
            stdin.write_all(b"hello\nworld\n").unwrap();
            // Dropped: end of file, so `cat` ends.
        },
    );
    assert!(status.success(), "{err}");
    assert_eq!(out, "HELLO\nWORLD\ndone\n");
    // Without Stdin::Pipe stdin stays /dev/null.
    let (status, out, _) = f.sh("cat; test -t 0 || echo not-a-tty");
    assert!(status.success());
    assert_eq!(out, "not-a-tty\n");
}

/// As pid 1 (no init) and as pid 2 (under the init).
#[test]
fn a_tty_is_the_commands_controlling_terminal() {
    let Some(f) = Fixture::new() else { return };
    for init in [false, true] {
        tty_is_controlling(&f, init);
    }
}

fn tty_is_controlling(f: &Fixture, init: bool) {
    use std::io::Write;
    let stdio = kiln_runtime::Stdio {
        stdin: kiln_runtime::Stdin::Pipe,
        tty: Some(kiln_runtime::WindowSize { rows: 24, cols: 80 }),
    };
    let script = "test -t 0 && test -t 1 && test -t 2 && echo tty-ok; echo to-stderr >&2; \
                  tty; stty size; [ /dev/console -ef /proc/self/fd/0 ] && echo console-ok; \
                  read line; echo got:$line; stty size; sleep 30; echo not-interrupted";
    let mut spec = f.spec(script);
    spec.init = init;
    let (status, out, err) = run_with(&spec, stdio, |stdin, tty, rx| {
        let mut stdin = stdin.expect("the terminal's input");
        let tty = tty.expect("a tty handle");
        let mut seen = Vec::new();
        if !wait_for_output(&rx, &mut seen, "24 80") {
            return;
        }
        tty.resize(kiln_runtime::WindowSize {
            rows: 30,
            cols: 100,
        })
        .unwrap();
        stdin.write_all(b"hello\n").unwrap();
        if !wait_for_output(&rx, &mut seen, "30 100") {
            return;
        }
        // Ctrl-C: the terminal's line discipline signals the command's
        // process group, which only works if the tty is its controlling one.
        stdin.write_all(b"\x03").unwrap();
    });
    assert_eq!(err, "", "stderr goes to the terminal too");
    for expected in [
        "tty-ok\r\n",
        "to-stderr\r\n",
        "/dev/pts/0\r\n",
        "24 80\r\n",
        "console-ok\r\n",
        "got:hello\r\n",
        "30 100\r\n",
    ] {
        assert!(out.contains(expected), "{expected:?} missing in {out:?}");
    }
    assert!(!out.contains("not-interrupted"), "init {init}: {out:?}");
    assert_eq!(status.code(), 130, "init {init}: {status} {out:?}");
}

/// A secret is a read-only file with the mount's mode and owner, on a
/// tmpfs of the container's own (nosuid, nodev, noexec), and nothing of it
/// is left in the state dir on disk.
#[test]
fn secrets_are_read_only_files_on_the_containers_own_tmpfs() {
    let Some(f) = Fixture::new() else { return };
    let mut spec = f.spec(
        "cat /run/secrets/tok; echo; stat -c %a:%u:%g /run/secrets/tok; \
         grep ' /run/secrets/tok ' /proc/self/mountinfo | cut -d' ' -f6,9; \
         echo more >> /run/secrets/tok || echo refused",
    );
    spec.mounts = vec![Mount::Secret {
        target: "/run/secrets/tok".into(),
        data: kiln_runtime::SecretData(b"s3cr3t".to_vec()),
        mode: 0o440,
        uid: 7,
        gid: 8,
    }];
    let (status, out, err) = f.run(&spec);
    assert!(status.success(), "{err}");
    assert_eq!(
        out,
        "s3cr3t\n440:7:8\nro,nosuid,nodev,noexec,relatime tmpfs\nrefused\n"
    );
    let leftovers: Vec<_> = fs::read_dir(f.dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("kiln-run-"))
        .collect();
    assert!(leftovers.is_empty(), "state dir left: {leftovers:?}");
}

#[test]
fn resources_limit_the_container() {
    let Some(f) = Fixture::new() else { return };
    let mut spec = f.spec("n=0; while [ $n -lt 50 ]; do sleep 30 & n=$((n+1)); done; echo all");
    spec.resources.pids_limit = Some(10);
    let (status, out, err) = f.run(&spec);
    assert_ne!(status, ExitStatus::Exited(0), "{out}");
    assert!(err.contains("can't fork"), "{err}");
}

/// The init joins its cgroup before it makes its cgroup namespace, so the
/// container sees its own cgroup as the root of every hierarchy (made the
/// other way round it would see `/kiln/<pid>-<n>`, and the caller's
/// cgroup above it).
#[test]
fn the_cgroup_namespace_is_rooted_at_the_container() {
    let Some(f) = Fixture::new() else { return };
    let (status, out, err) = f.sh("cat /proc/self/cgroup");
    assert!(status.success(), "{err}");
    for line in out.lines() {
        assert!(line.ends_with(":/"), "{out}");
    }
}

#[test]
fn privileged_containers_keep_every_device() {
    let Some(f) = Fixture::new() else { return };
    // /dev/kmsg (1:11) is not among Docker's default devices.
    let script = "mknod /dev/k c 1 11 && if dd if=/dev/k of=/dev/null count=0 2>/dev/null; then echo open; else echo denied; fi";
    let (status, out, err) = f.sh(script);
    assert!(status.success(), "{err}");
    assert_eq!(out, "denied\n");
    let mut spec = f.spec(script);
    spec.privileged = true;
    let (status, out, err) = f.run(&spec);
    assert!(status.success(), "{err}");
    assert_eq!(out, "open\n");
}

#[test]
fn a_volatile_upper_is_mounted_volatile_and_survives_the_commands_syncs() {
    let Some(f) = Fixture::new() else { return };
    // The root mount's fs type, source and super options (what follows
    // mountinfo's " - "), after the command synced what it wrote.
    let options = "sync; echo kept > /file; fsync /file; \
                   grep ' / / ' /proc/self/mountinfo | sed 's/.* - //'";
    let (status, durable, _) = f.sh(options);
    assert_eq!(status, ExitStatus::Exited(0));
    assert!(!durable.contains("volatile"), "{durable}");
    fs::remove_dir_all(f.upper()).unwrap();
    let mut spec = f.spec(options);
    spec.volatile_upper = true;
    let (status, volatile, _) = f.run(&spec);
    assert_eq!(status, ExitStatus::Exited(0));
    assert!(volatile.contains("volatile"), "{volatile}");
    assert_eq!(
        fs::read_to_string(f.upper().join("file")).unwrap(),
        "kept\n"
    );
}

#[test]
fn a_watched_container_reports_what_its_command_read_as_it_sees_it() {
    let Some(f) = Fixture::new() else { return };
    fs::create_dir_all(f.rootfs().join("data/listed")).unwrap();
    fs::write(f.rootfs().join("data/read.txt"), "read me").unwrap();
    fs::write(f.rootfs().join("data/untouched.txt"), "not me").unwrap();
    fs::write(f.rootfs().join("data/listed/a"), "").unwrap();
    let mut spec = f.spec("cat /data/read.txt; ls /data/listed; echo new > /data/written.txt");
    spec.track_reads = true;
    let mut container = Container::spawn(&spec).unwrap();
    let watch = container.take_read_watch().expect("a read watch");
    let mut out = CollectedOutput::default();
    assert_eq!(container.wait(&mut out).unwrap(), ExitStatus::Exited(0));
    let reads = watch.finish().unwrap();
    assert!(!reads.incomplete);
    let paths = &reads.paths;
    for read in ["/data/read.txt", "/data/listed", "/bin/busybox"] {
        assert!(paths.contains(read), "{read} missing from {paths:?}");
    }
    for unread in ["/data/untouched.txt", "/data/written.txt", "/data/listed/a"] {
        assert!(!paths.contains(unread), "{unread} in {paths:?}");
    }
    // Nothing of the host's paths: the container's own view only.
    let host = f.dir.path().to_string_lossy().into_owned();
    assert!(paths.iter().all(|p| !p.contains(&host)), "{paths:?}");
    // Unwatched, there is nothing to take.
    let mut plain = Container::spawn(&f.spec("true")).unwrap();
    assert!(plain.take_read_watch().is_none());
    plain.wait(&mut CollectedOutput::default()).unwrap();
}

#[test]
fn a_watched_command_reading_a_fifo_does_not_hang_the_watch() {
    let Some(f) = Fixture::new() else { return };
    // The watch is given each read file opened: a FIFO opened for reading
    // without a writer would block that open for ever.
    let mut spec = f.spec("mkfifo /pipe; (echo x > /pipe &); cat /pipe; cat /pipe < /dev/null &");
    spec.track_reads = true;
    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || {
        let mut container = Container::spawn(&spec).unwrap();
        let watch = container.take_read_watch().unwrap();
        let status = container.wait(&mut CollectedOutput::default()).unwrap();
        let _ = done.send((status, watch.finish().unwrap()));
    });
    let (status, reads) = finished
        .recv_timeout(Duration::from_secs(60))
        .expect("the watch hung on a FIFO");
    assert_eq!(status, ExitStatus::Exited(0));
    assert!(reads.paths.contains("/bin/busybox"), "{reads:?}");
}
