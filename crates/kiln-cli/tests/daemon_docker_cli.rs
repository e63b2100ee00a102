//! `kiln serve` driven by the real docker CLI (`DOCKER_HOST=unix://...`
//! on a socket of the test's own): version, info, images, inspect,
//! history, tag, rmi, ps, volumes, system df and the classic builder's
//! `docker build` as docker prints them, errors as the daemon's, and the
//! socket's own safety (mode 0660, never
//! a second daemon on it, never replacing a file that is not a socket,
//! removed on SIGTERM), and TCP served only to clients whose certificate
//! the daemon's CA signed.

mod common;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{kiln, ok, text};

/// A `kiln serve` on `socket`, stopped (SIGTERM) when dropped.
struct Daemon {
    child: Child,
    socket: PathBuf,
}

impl Daemon {
    fn start(root: &Path, socket: &Path) -> Daemon {
        Daemon::start_with_config(root, socket, &socket.with_file_name("daemon-docker-config"))
    }

    /// With `docker_config` as the daemon's own Docker config directory
    /// (what a daemon run by a user who logged in somewhere would have).
    fn start_with_config(root: &Path, socket: &Path, docker_config: &Path) -> Daemon {
        Daemon::start_with(root, socket, docker_config, &[])
    }

    fn start_with(root: &Path, socket: &Path, docker_config: &Path, flags: &[&str]) -> Daemon {
        let child = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .arg("--root")
            .arg(root)
            .args(["serve", "--host"])
            .arg(format!("unix://{}", socket.display()))
            .args(flags)
            .env("KILN_REGISTRY_ALLOW", "127.0.0.1")
            .env("DOCKER_CONFIG", docker_config)
            // What a client's bare `-e NAME` must never reach.
            .env("KILN_DAEMON_SECRET", "leaked-from-the-daemon")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Connectable, not just there: a stale socket may be left.
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(socket).is_err() {
            assert!(Instant::now() < deadline, "kiln serve did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Daemon {
            child,
            socket: socket.to_owned(),
        }
    }

    /// The docker CLI against this daemon, with a config of its own (no
    /// user's contexts or credentials) and no telemetry; its builds use
    /// the classic builder's protocol (kiln serve has no BuildKit
    /// sessions).
    fn docker(&self, args: &[&str]) -> Output {
        self.docker_in(Path::new("."), args)
    }

    fn docker_in(&self, dir: &Path, args: &[&str]) -> Output {
        self.docker_command(dir, args)
            .output()
            .expect("the docker CLI (scripts/install-test-deps.sh installs docker.io)")
    }

    fn docker_command(&self, dir: &Path, args: &[&str]) -> Command {
        let config = self.socket.with_file_name("docker-config");
        let mut command = Command::new("docker");
        command
            .args(args)
            .current_dir(dir)
            .env("DOCKER_BUILDKIT", "0")
            .env("DOCKER_HOST", format!("unix://{}", self.socket.display()))
            .env("DOCKER_CONFIG", &config)
            .env("OTEL_SDK_DISABLED", "true")
            .env("DOCKER_CLI_HINTS", "false")
            .env_remove("DOCKER_CONTEXT");
        command
    }

    fn stop(mut self) -> Output {
        common::send_signal(self.child.id(), "TERM");
        let child = std::mem::replace(&mut self.child, Command::new("true").spawn().unwrap());
        child.wait_with_output().unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_docker_cli_drives_kiln_serve() {
    let store = common::busybox_workspace();
    let (root, work) = (&store.root, &store.work);
    let daemon = Daemon::start(root, &work.join("kiln.sock"));
    let docker = |args: &[&str]| ok(daemon.docker(args));

    let version = docker(&["version"]);
    assert!(version.contains("Server: kiln"), "{version}");
    assert!(version.contains("1.44"), "{version}");
    let info = docker(&["info"]);
    assert!(info.contains("Server Version: 0.1.0"), "{info}");
    assert!(info.contains("Storage Driver: overlay"), "{info}");
    assert!(
        info.contains(&format!("Docker Root Dir: {}", root.display())),
        "{info}"
    );

    // Images: docker's table, ids as kiln's, inspect and history.
    let kiln_id = ok(kiln(root, &["images", "-q", "busybox"]));
    let listed = docker(&["images"]);
    assert!(
        listed.starts_with("REPOSITORY   TAG       IMAGE ID"),
        "{listed}"
    );
    assert!(
        listed.contains(&format!("busybox      latest    {}", kiln_id.trim())),
        "{listed}"
    );
    let id = docker(&[
        "image",
        "inspect",
        "busybox",
        "--format",
        "{{.Id}} {{.Os}} {{.RepoTags}}",
    ]);
    assert!(
        id.starts_with(&format!("sha256:{}", kiln_id.trim())),
        "{id}"
    );
    assert!(id.trim().ends_with("linux [busybox:latest]"), "{id}");
    let history = docker(&["history", "busybox"]);
    assert!(history.contains("kiln import"), "{history}");
    docker(&["tag", "busybox", "team/app:1"]);
    assert_eq!(ok(kiln(root, &["images", "-q", "team/app:1"])), kiln_id);
    let filtered = docker(&["images", "team/app", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert_eq!(filtered, "team/app:1\n");
    assert_eq!(docker(&["rmi", "team/app:1"]), "Untagged: team/app:1\n");
    let missing = daemon.docker(&["rmi", "nosuch"]);
    assert_eq!(missing.status.code(), Some(1));
    // (Docker 28 prints the daemon's message, 20.10 its own for a 404.)
    let said = text(&missing.stderr);
    assert!(
        said.starts_with("Error") && said.contains("nosuch"),
        "{said}"
    );
    let missing = daemon.docker(&["image", "inspect", "nosuch"]);
    assert_eq!(missing.status.code(), Some(1));

    // Containers kiln made, as docker ps and inspect show them.
    let ran = kiln(
        root,
        &[
            "run", "--name", "done", "-v", "data:/d", "busybox", "sh", "-c", "exit 3",
        ],
    );
    assert_eq!(ran.status.code(), Some(3));
    let ps = docker(&["ps", "-a", "--format", "{{.Names}} {{.Image}} {{.Status}}"]);
    assert!(ps.starts_with("done busybox Exited (3) "), "{ps}");
    assert_eq!(docker(&["ps", "-q"]), "", "nothing runs");
    let state = docker(&[
        "inspect",
        "done",
        "--format",
        "{{.State.Status}} {{.State.ExitCode}} {{.Name}}",
    ]);
    assert_eq!(state, "exited 3 /done\n");

    // Volumes, made here or by kiln run, and refused while in use.
    assert_eq!(
        docker(&["volume", "create", "--label", "a=b", "made"]),
        "made\n"
    );
    assert_eq!(docker(&["volume", "ls", "-q"]), "data\nmade\n");
    let inspected = docker(&[
        "volume",
        "inspect",
        "made",
        "--format",
        "{{.Labels}} {{.Mountpoint}}",
    ]);
    assert!(inspected.starts_with("map[a:b] "), "{inspected}");
    assert!(inspected.contains(root.to_str().unwrap()), "{inspected}");
    let in_use = daemon.docker(&["volume", "rm", "data"]);
    assert_eq!(in_use.status.code(), Some(1));
    assert!(
        text(&in_use.stderr).contains("in use by container done"),
        "{}",
        text(&in_use.stderr)
    );
    assert_eq!(docker(&["volume", "rm", "made"]), "made\n");
    let gone = daemon.docker(&["volume", "inspect", "made"]);
    assert_eq!(gone.status.code(), Some(1));
    ok(kiln(root, &["rm", "done"]));
    // Docker 23+ prunes named volumes with -a only; 20.10 (API 1.41) has
    // no -a and prunes them all, and kiln serve does as each asks.
    let mut pruned = daemon.docker(&["volume", "prune", "-a", "-f"]);
    if text(&pruned.stderr).contains("unknown shorthand flag") {
        pruned = daemon.docker(&["volume", "prune", "-f"]);
    }
    let pruned = ok(pruned);
    assert!(pruned.contains("data"), "{pruned}");
    assert_eq!(ok(kiln(root, &["volume", "ls", "-q"])), "");

    // docker run through the daemon: attached (stdout and stderr apart,
    // the exit code docker's), with stdin, and detached with logs, stop
    // and rm; --rm leaves nothing.
    let hello = daemon.docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 5",
    ]);
    assert_eq!(hello.status.code(), Some(5));
    assert_eq!(text(&hello.stdout), "out\n");
    assert_eq!(text(&hello.stderr), "err\n");
    let mut piped = Command::new("docker")
        .args([
            "run",
            "-i",
            "--rm",
            "--network",
            "none",
            "busybox",
            "tr",
            "a-z",
            "A-Z",
        ])
        .env("DOCKER_HOST", format!("unix://{}", daemon.socket.display()))
        .env(
            "DOCKER_CONFIG",
            daemon.socket.with_file_name("docker-config"),
        )
        .env("OTEL_SDK_DISABLED", "true")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut piped.stdin.take().unwrap(), b"piped\n").unwrap();
    assert_eq!(ok(piped.wait_with_output().unwrap()), "PIPED\n");
    let id = docker(&[
        "run",
        "-d",
        "--name",
        "bg",
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        "for i in 1 2 3; do echo line-$i; done; exec sleep 60",
    ]);
    assert_eq!(id.trim().len(), 64, "{id}");
    let deadline = Instant::now() + Duration::from_secs(15);
    while docker(&["logs", "bg"]) != "line-1\nline-2\nline-3\n" {
        assert!(Instant::now() < deadline, "the detached container's logs");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(docker(&["logs", "--until", "1h", "bg"]), "");
    assert_eq!(
        docker(&["logs", "--since", "1h", "bg"]),
        "line-1\nline-2\nline-3\n"
    );
    let last = docker(&["logs", "-t", "--tail", "1", "bg"]);
    assert!(last.ends_with("Z line-3\n"), "{last}");
    assert!(docker(&["ps"]).contains(" bg\n"), "running");
    assert!(ok(kiln(root, &["ps"])).contains("bg"), "kiln sees it too");
    docker(&["stop", "-t", "1", "bg"]);
    let status = docker(&["ps", "-a", "--format", "{{.Names}} {{.Status}}"]);
    assert!(status.starts_with("bg Exited (137)"), "{status}");
    docker(&["rm", "bg"]);
    assert_eq!(docker(&["ps", "-a", "-q"]), "", "--rm and rm left nothing");

    let df = docker(&["system", "df"]);
    assert!(df.starts_with("TYPE"), "{df}");
    assert!(df.contains("Images          1"), "{df}");
    // The daemon's figures are kiln's own (one count in kiln-engine),
    // as each prints it (docker with more digits).
    let megabytes = |text: &str| -> f64 {
        let row = text.lines().find(|l| l.starts_with("Images")).unwrap();
        let size = row.split_whitespace().nth(3).unwrap();
        size.trim_end_matches("MB").parse().unwrap()
    };
    let ours = ok(kiln(root, &["system", "df"]));
    assert!(
        (megabytes(&df) - megabytes(&ours)).abs() < 0.06,
        "{df}{ours}"
    );

    // What kiln serve does not serve yet says so, as a daemon error.
    let build = daemon.docker(&["container", "top", "x"]);
    assert_eq!(build.status.code(), Some(1));

    let stopped = daemon.stop();
    assert!(stopped.status.success(), "{}", text(&stopped.stderr));
    assert!(!work.join("kiln.sock").exists(), "the socket is removed");
}

#[test]
fn docker_build_builds_through_kiln_serve() {
    let store = common::busybox_workspace();
    let (root, work) = (&store.root, &store.work);
    let daemon = Daemon::start(root, &work.join("kiln.sock"));
    let context = work.join("app");
    std::fs::create_dir_all(context.join("src")).unwrap();
    std::fs::write(context.join("src/hello.txt"), "hello\n").unwrap();
    std::fs::write(context.join("secret.txt"), "not for the image\n").unwrap();
    std::fs::write(context.join(".dockerignore"), "secret.txt\n").unwrap();
    std::fs::write(
        context.join("Dockerfile"),
        "FROM busybox\n\
         ARG GREETING=hi\n\
         COPY . /ctx/\n\
         RUN echo \"$GREETING from run\" > /greeting && cat /ctx/src/hello.txt\n\
         LABEL made=by-kiln\n\
         CMD [\"sh\", \"-c\", \"cat /greeting /ctx/src/hello.txt; ls /ctx\"]\n",
    )
    .unwrap();
    let iidfile = work.join("iid");
    let build = |extra: &[&str]| {
        let mut args = vec!["build", "-t", "built:1", "--network", "none"];
        args.extend_from_slice(extra);
        args.push(".");
        daemon.docker_in(&context, &args)
    };
    let built = ok(build(&[
        "--iidfile",
        iidfile.to_str().unwrap(),
        "--build-arg",
        "GREETING=hey",
        "--label",
        "extra=yes",
    ]));
    assert!(built.contains("Step 1/6 : FROM busybox"), "{built}");
    assert!(built.contains("Step 4/6 : RUN echo"), "{built}");
    assert!(built.contains("\nhello\n"), "the RUN's output: {built}");
    assert!(built.contains("Successfully tagged built:1"), "{built}");
    // --iidfile holds the id kiln gives the image.
    let iid = std::fs::read_to_string(&iidfile).unwrap();
    let kiln_id = ok(kiln(root, &["images", "-q", "--no-trunc", "built:1"]));
    assert_eq!(iid, kiln_id.trim(), "{built}");
    assert!(
        built.contains(&format!("Successfully built {}", &iid[7..19])),
        "{built}"
    );
    let labels = ok(daemon.docker(&[
        "image",
        "inspect",
        "built:1",
        "--format",
        "{{.Config.Labels}}",
    ]));
    assert_eq!(labels, "map[extra:yes made:by-kiln]\n");
    // What the image holds: the RUN's file, the context without what
    // .dockerignore leaves out.
    let ran = ok(daemon.docker(&["run", "--rm", "--network", "none", "built:1"]));
    assert_eq!(ran, "hey from run\nhello\nDockerfile\nsrc\n");

    // The same build again comes from the cache, with the same id.
    let again = ok(build(&[
        "--build-arg",
        "GREETING=hey",
        "--label",
        "extra=yes",
        "-q",
    ]));
    assert_eq!(again.trim(), iid, "-q prints the id only");
    let verbose = ok(build(&[
        "--build-arg",
        "GREETING=hey",
        "--label",
        "extra=yes",
    ]));
    assert_eq!(
        verbose.matches("Using cache").count(),
        5,
        "every step but FROM: {verbose}"
    );

    // A Dockerfile outside the context: the CLI sends it inside the tar.
    let elsewhere = work.join("Other.Dockerfile");
    std::fs::write(&elsewhere, "FROM busybox\nRUN echo other > /o\n").unwrap();
    let other = ok(daemon.docker_in(
        &context,
        &[
            "build",
            "-t",
            "other",
            "--network",
            "none",
            "-f",
            elsewhere.to_str().unwrap(),
            ".",
        ],
    ));
    assert!(other.contains("Successfully tagged other"), "{other}");

    // A failing step: docker fails with the daemon's message, naming the
    // line, and no tag is made.
    std::fs::write(
        context.join("Dockerfile"),
        "FROM busybox\nRUN echo failing && exit 3\n",
    )
    .unwrap();
    let failed = daemon.docker_in(
        &context,
        &["build", "-t", "broken", "--network", "none", "."],
    );
    assert_ne!(failed.status.code(), Some(0));
    let said = text(&failed.stderr) + &text(&failed.stdout);
    assert!(said.contains("Dockerfile:2"), "{said}");
    assert!(
        said.contains("exit code 3") || said.contains("code: 3"),
        "{said}"
    );
    assert!(!daemon
        .docker(&["image", "inspect", "broken"])
        .status
        .success());
    // A Dockerfile that does not parse is the client's error.
    std::fs::write(context.join("Dockerfile"), "FROM busybox\nNOPE x\n").unwrap();
    let unparsed = daemon.docker_in(&context, &["build", "."]);
    assert_ne!(unparsed.status.code(), Some(0));
    assert!(
        text(&unparsed.stderr).contains("NOPE"),
        "{}",
        text(&unparsed.stderr)
    );
    // What was unpacked is gone once the builds are done.
    let scratch: Vec<_> = std::fs::read_dir(root.join("kiln/tmp"))
        .map(|dir| dir.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        scratch
            .iter()
            .all(|name| !name.to_string_lossy().contains("context")),
        "{scratch:?}"
    );
}

/// `docker ARGS` against `daemon` under a real terminal of 33x91 (`script`),
/// `input` typed into it; what the terminal showed.
fn docker_on_a_tty(daemon: &Daemon, args: &[&str], input: &[u8]) -> String {
    let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
    let mut child = Command::new("timeout")
        .args(["60", "script", "-qec"])
        .arg(format!(
            "stty rows 33 cols 91; docker {}; echo rc=$?",
            quoted.join(" ")
        ))
        .arg("/dev/null")
        .env("DOCKER_HOST", format!("unix://{}", daemon.socket.display()))
        .env(
            "DOCKER_CONFIG",
            daemon.socket.with_file_name("docker-config"),
        )
        .env("OTEL_SDK_DISABLED", "true")
        .env("DOCKER_CLI_HINTS", "false")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    std::io::Write::write_all(&mut stdin, input).unwrap();
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
    child.wait().unwrap();
    drop(stdin);
    out
}

#[test]
fn docker_exec_cp_and_terminals_through_kiln_serve() {
    let store = common::busybox_workspace();
    let (root, work) = (&store.root, &store.work);
    let daemon = Daemon::start(root, &work.join("kiln.sock"));
    let docker = |args: &[&str]| ok(daemon.docker(args));
    docker(&[
        "run",
        "-d",
        "--name",
        "box",
        "--network",
        "none",
        "busybox",
        "sleep",
        "600",
    ]);

    // exec: output apart, the exit code, stdin, user, env, workdir.
    let ran = daemon.docker(&[
        "exec",
        "box",
        "sh",
        "-c",
        "echo in-exec; echo err >&2; exit 4",
    ]);
    assert_eq!(ran.status.code(), Some(4));
    assert_eq!(text(&ran.stdout), "in-exec\n");
    assert_eq!(text(&ran.stderr), "err\n");
    let mut piped = daemon
        .docker_command(Path::new("."), &["exec", "-i", "box", "tr", "a-z", "A-Z"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut piped.stdin.take().unwrap(), b"piped in\n").unwrap();
    assert_eq!(ok(piped.wait_with_output().unwrap()), "PIPED IN\n");
    assert_eq!(docker(&["exec", "-u", "1000", "box", "id", "-u"]), "1000\n");
    assert_eq!(
        docker(&[
            "exec",
            "-e",
            "A=b",
            "-w",
            "/tmp",
            "box",
            "sh",
            "-c",
            "echo $A $(pwd)"
        ]),
        "b /tmp\n"
    );
    let missing = daemon.docker(&["exec", "box", "nosuch-command"]);
    assert_eq!(
        missing.status.code(),
        Some(126),
        "{}",
        text(&missing.stderr)
    );
    assert!(
        text(&missing.stderr).contains("nosuch-command"),
        "{}",
        text(&missing.stderr)
    );
    docker(&["exec", "-d", "box", "sh", "-c", "echo detached > /tmp/d"]);
    let deadline = Instant::now() + Duration::from_secs(15);
    while daemon.docker(&["exec", "box", "cat", "/tmp/d"]).stdout != b"detached\n" {
        assert!(Instant::now() < deadline, "the detached exec's file");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Terminals: exec -t and run -it get a pty of the client's size (an
    // API < 1.42 client sends it only after the start: the pause lets it
    // land); an interactive shell's exit code comes back.
    let tty = docker_on_a_tty(
        &daemon,
        &[
            "exec",
            "-t",
            "box",
            "sh",
            "-c",
            "test -t 1 && echo tty-ok; sleep 1; stty size",
        ],
        b"",
    );
    assert!(tty.contains("tty-ok") && tty.contains("33 91"), "{tty:?}");
    assert!(tty.contains("rc=0"), "{tty:?}");
    let shell = docker_on_a_tty(
        &daemon,
        &["run", "-it", "--rm", "--network", "none", "busybox", "sh"],
        // (The pause: a 20.10 CLI sends the size only after the start.)
        b"sleep 1; stty size; echo hi-$((6*7))\rexit 3\r",
    );
    assert!(shell.contains("hi-42"), "{shell:?}");
    assert!(shell.contains("33 91"), "{shell:?}");
    assert!(shell.contains("rc=3"), "{shell:?}");

    // A bare NAME the client could not resolve stays bare: the daemon's
    // own environment never fills it in.
    let env = docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-e",
        "KILN_DAEMON_SECRET",
        "-e",
        "SHOWN=yes",
        "busybox",
        "env",
    ]);
    assert!(env.contains("SHOWN=yes"), "{env}");
    assert!(
        !env.contains("leaked"),
        "the daemon's environment reached a container: {env}"
    );
    // Detach keys: attached to a cat on a terminal, ctrl-x (asked for)
    // ends the attachment and leaves the container running.
    docker(&[
        "run",
        "-dit",
        "--name",
        "typist",
        "--network",
        "none",
        "busybox",
        "cat",
    ]);
    let attached = docker_on_a_tty(
        &daemon,
        &["attach", "--detach-keys", "ctrl-x", "typist"],
        b"sleep 1\rtyped-$((1+1))\r\x18",
    );
    assert!(attached.contains("typed-"), "{attached:?}");
    assert!(
        !attached.contains("rc=124"),
        "attach never ended: {attached:?}"
    );
    assert_eq!(
        docker(&["inspect", "-f", "{{.State.Status}}", "typist"]),
        "running\n",
        "{attached:?}"
    );
    docker(&["rm", "-f", "typist"]);

    // docker cp out of and into the container.
    docker(&[
        "exec",
        "box",
        "sh",
        "-c",
        "mkdir -p /data/sub && echo inside > /data/sub/f",
    ]);
    let out_dir = work.join("copied");
    docker(&["cp", "box:/data", out_dir.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(out_dir.join("sub/f")).unwrap(),
        "inside\n"
    );
    let host_file = work.join("from-host.txt");
    std::fs::write(&host_file, "from the host\n").unwrap();
    docker(&["cp", host_file.to_str().unwrap(), "box:/data/"]);
    assert_eq!(
        docker(&["exec", "box", "cat", "/data/from-host.txt"]),
        "from the host\n"
    );
    docker(&["cp", host_file.to_str().unwrap(), "box:/data/renamed.txt"]);
    assert_eq!(
        docker(&["exec", "box", "cat", "/data/renamed.txt"]),
        "from the host\n"
    );
    // docker export: the container's own files (what it wrote in /data
    // was there above, but /data is not a volume here: it is exported).
    let exported = work.join("box.tar");
    docker(&["export", "-o", exported.to_str().unwrap(), "box"]);
    let names: Vec<String> = tar::Archive::new(std::fs::File::open(&exported).unwrap())
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert!(names.iter().any(|n| n == "bin/sh"), "{names:?}");
    assert!(names.iter().any(|n| n == "data/renamed.txt"), "{names:?}");
    let missing = daemon.docker(&["cp", "box:/nosuch", work.to_str().unwrap()]);
    assert_ne!(missing.status.code(), Some(0));
    assert!(
        text(&missing.stderr).contains("nosuch"),
        "{}",
        text(&missing.stderr)
    );
    // A link the container planted leads inside the container, never to
    // the host's directory of that name.
    let probe = format!("kiln-cp-probe-{}", std::process::id());
    let probe_file = work.join(&probe);
    std::fs::write(&probe_file, "probe\n").unwrap();
    let host_dir = work.join("host-dir");
    std::fs::create_dir_all(&host_dir).unwrap();
    docker(&[
        "exec",
        "box",
        "sh",
        "-c",
        &format!("mkdir -p {0} && ln -s {0} /data/escape", host_dir.display()),
    ]);
    docker(&["cp", probe_file.to_str().unwrap(), "box:/data/escape/"]);
    assert!(
        !host_dir.join(&probe).exists(),
        "written through to the host"
    );
    assert_eq!(
        docker(&[
            "exec",
            "box",
            "cat",
            &format!("{}/{probe}", host_dir.display())
        ]),
        "probe\n"
    );

    // top, diff and commit of the running container.
    let top = docker(&["top", "box"]);
    assert!(top.contains("sleep 600"), "{top}");
    let diff = docker(&["diff", "box"]);
    assert!(diff.contains("A /data/sub/f"), "{diff}");
    assert!(diff.contains("A /data/from-host.txt"), "{diff}");
    let committed = docker(&["commit", "box", "committed:1"]);
    assert!(committed.starts_with("sha256:"), "{committed}");
    assert_eq!(
        docker(&[
            "run",
            "--rm",
            "--network",
            "none",
            "committed:1",
            "cat",
            "/data/sub/f"
        ]),
        "inside\n"
    );

    // A volume one container writes and the next reads.
    assert_eq!(docker(&["volume", "create", "shared"]), "shared\n");
    docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        "shared:/data",
        "busybox",
        "sh",
        "-c",
        "echo written > /data/f",
    ]);
    assert_eq!(
        docker(&[
            "run",
            "--rm",
            "--network",
            "none",
            "-v",
            "shared:/data",
            "busybox",
            "cat",
            "/data/f"
        ]),
        "written\n"
    );
    // logs -f follows a container to its end.
    docker(&[
        "run",
        "-d",
        "--name",
        "counter",
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        "for i in 1 2 3; do echo n-$i; sleep 0.2; done",
    ]);
    assert_eq!(docker(&["logs", "-f", "counter"]), "n-1\nn-2\nn-3\n");
    // ... and to its last line even when --rm removes it at once (as
    // docker-py's containers.run follows: create, start, logs -f).
    let doomed = docker(&[
        "create",
        "--rm",
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        "sleep 0.5; echo last words",
    ]);
    docker(&["start", doomed.trim()]);
    assert_eq!(docker(&["logs", "-f", doomed.trim()]), "last words\n");
    // A health check: probed, and healthy as docker shows it.
    docker(&[
        "run",
        "-d",
        "--name",
        "checked",
        "--health-cmd",
        "true",
        "--health-interval",
        "200ms",
        "--network",
        "none",
        "busybox",
        "sleep",
        "60",
    ]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while docker(&["inspect", "-f", "{{.State.Health.Status}}", "checked"]) != "healthy\n" {
        assert!(Instant::now() < deadline, "the health check's first pass");
        std::thread::sleep(Duration::from_millis(50));
    }
    let listed = docker(&["ps", "--filter", "name=checked", "--format", "{{.Status}}"]);
    assert!(listed.contains("(healthy)"), "{listed}");
    docker(&["rm", "-f", "checked"]);
    // A restart policy: on-failure:1 runs it twice, then it stays exited.
    docker(&[
        "run",
        "-d",
        "--name",
        "retry",
        "--restart",
        "on-failure:1",
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        "echo try; exit 2",
    ]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while docker(&[
        "inspect",
        "-f",
        "{{.State.Status}} {{.RestartCount}}",
        "retry",
    ]) != "exited 1\n"
    {
        assert!(Instant::now() < deadline, "the restart policy's restart");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(docker(&["logs", "retry"]), "try\ntry\n");
    assert_eq!(
        docker(&[
            "inspect",
            "-f",
            "{{.HostConfig.RestartPolicy.Name}}",
            "retry"
        ]),
        "on-failure\n"
    );
    let pruned = docker(&["container", "prune", "-f"]);
    assert!(pruned.contains("Deleted Containers:"), "{pruned}");
    assert!(
        !docker(&["ps", "-a", "--format", "{{.Names}}"]).contains("counter"),
        "the stopped one is pruned"
    );

    // pause: frozen (an exec refused, docker's state and status say so)
    // until unpause.
    assert_eq!(docker(&["pause", "box"]), "box\n");
    assert_eq!(
        docker(&[
            "inspect",
            "-f",
            "{{.State.Status}} {{.State.Paused}}",
            "box"
        ]),
        "paused true\n"
    );
    let listed = docker(&[
        "ps",
        "--filter",
        "name=^/box$",
        "--format",
        "{{.Names}} {{.Status}}",
    ]);
    assert!(
        listed.starts_with("box Up")
            && listed.trim_end().ends_with("(Paused)")
            && listed.lines().count() == 1,
        "{listed}"
    );
    assert_eq!(
        docker(&["ps", "--filter", "status=paused", "--format", "{{.Names}}"]),
        "box\n"
    );
    let frozen = daemon.docker(&["exec", "box", "true"]);
    assert!(
        text(&frozen.stderr).contains("is paused"),
        "{}",
        text(&frozen.stderr)
    );
    assert_eq!(docker(&["unpause", "box"]), "box\n");
    // stats: what it uses, as docker computes and prints it.
    let stats = docker(&[
        "stats",
        "--no-stream",
        "--format",
        "{{.Name}} {{.PIDs}} {{.MemUsage}}",
        "box",
    ]);
    assert!(
        stats.starts_with("box 1 ") && stats.contains(" / "),
        "{stats}"
    );
    // update: a new memory limit, applied and shown.
    assert_eq!(docker(&["update", "--memory", "96m", "box"]), "box\n");
    assert_eq!(
        docker(&["inspect", "-f", "{{.HostConfig.Memory}}", "box"]),
        "100663296\n"
    );
    assert_eq!(
        docker(&[
            "exec",
            "box",
            "cat",
            "/sys/fs/cgroup/memory/memory.limit_in_bytes"
        ]),
        "100663296\n"
    );
    let shares = daemon.docker(&["update", "--cpu-shares", "512", "box"]);
    assert_ne!(shares.status.code(), Some(0));
    assert!(
        text(&shares.stderr).contains("CpuShares"),
        "{}",
        text(&shares.stderr)
    );
    // rename, running: the old name is free again, a taken one refused.
    docker(&["rename", "box", "crate"]);
    assert_eq!(
        docker(&["inspect", "-f", "{{.Name}} {{.State.Status}}", "crate"]),
        "/crate running\n"
    );
    docker(&["create", "--name", "holder", "busybox", "true"]);
    let taken = daemon.docker(&["rename", "crate", "holder"]);
    assert_ne!(taken.status.code(), Some(0));
    assert!(
        text(&taken.stderr).contains("already in use"),
        "{}",
        text(&taken.stderr)
    );
    docker(&["rm", "holder"]);
    docker(&["rename", "crate", "box"]);
    assert_eq!(docker(&["exec", "box", "echo", "thawed"]), "thawed\n");

    docker(&["stop", "-t", "0", "box"]);
    let stopped = daemon.docker(&["exec", "box", "true"]);
    assert_ne!(stopped.status.code(), Some(0));
    assert!(
        text(&stopped.stderr).contains("is not running"),
        "{}",
        text(&stopped.stderr)
    );
}

#[test]
fn docker_events_tells_what_the_daemon_did() {
    let store = common::busybox_workspace();
    let (root, work) = (&store.root, &store.work);
    let daemon = Daemon::start(root, &work.join("kiln.sock"));
    let docker = |args: &[&str]| ok(daemon.docker(args));
    // (A volume's event names it by its id, as docker's do.)
    let format = "{{.Type}} {{.Action}} {{if .Actor.Attributes.name}}{{.Actor.Attributes.name}}{{else}}{{.Actor.ID}}{{end}}";
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 1;
    let mut live = daemon
        .docker_command(Path::new("."), &["events", "--format", format])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // The subscription is made when the CLI's request arrives: wait for
    // it to be there (the CLI connects at once).
    std::thread::sleep(Duration::from_millis(500));
    docker(&[
        "run",
        "--rm",
        "--name",
        "ev",
        "--network",
        "none",
        "busybox",
        "true",
    ]);
    docker(&["tag", "busybox", "evt:1"]);
    docker(&["volume", "create", "evv"]);
    docker(&["rmi", "evt:1"]);
    let wanted = [
        "container create ev",
        "container start ev",
        "container die ev",
        "container destroy ev",
        "image tag evt:1",
        "volume create evv",
        "image untag evt:1",
    ];
    let mut stdout = live.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut all);
        all
    });
    // What is published is sent at once; a moment lets the CLI print it.
    std::thread::sleep(Duration::from_secs(2));
    let _ = live.kill();
    let _ = live.wait();
    let seen = reader.join().unwrap();
    for line in wanted {
        assert!(seen.contains(line), "{line:?} missing in {seen:?}");
    }
    // The past, with a filter, up to now: the CLI's --since/--until.
    let now = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 1)
    .to_string();
    let replayed = docker(&[
        "events",
        "--since",
        &before.to_string(),
        "--until",
        &now,
        "--filter",
        "type=volume",
        "--format",
        format,
    ]);
    assert_eq!(replayed, "volume create evv\n");
}

#[test]
fn default_network_none_keeps_clients_containers_and_builds_off_the_network() {
    let store = common::busybox_workspace();
    let (root, work) = (&store.root, &store.work);
    let socket = work.join("kiln.sock");
    let daemon = Daemon::start_with(
        root,
        &socket,
        &work.join("daemon-docker-config"),
        &["--default-network", "none"],
    );
    // The interfaces a container sees: loopback only.
    let interfaces = |text: &str| -> Vec<String> {
        text.lines()
            .filter_map(|l| l.split_once(':').map(|(name, _)| name.trim().to_owned()))
            .filter(|name| !name.starts_with("Inter") && !name.contains('|'))
            .collect()
    };
    let ran = ok(daemon.docker(&["run", "--rm", "busybox", "cat", "/proc/net/dev"]));
    assert_eq!(interfaces(&ran), ["lo"], "{ran}");
    let context = work.join("net");
    std::fs::create_dir_all(&context).unwrap();
    std::fs::write(
        context.join("Dockerfile"),
        "FROM busybox\nRUN cat /proc/net/dev\n",
    )
    .unwrap();
    let built = ok(daemon.docker_in(&context, &["build", "--no-cache", "."]));
    let listed: String = built
        .lines()
        .filter(|l| l.contains(':') && !l.starts_with("Step") && !l.contains("Successfully"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(interfaces(&listed), ["lo"], "{built}");
    let named = daemon.docker(&["run", "--rm", "--network", "mynet", "busybox", "true"]);
    assert_ne!(named.status.code(), Some(0));
    assert!(
        text(&named.stderr).contains("network mynet not found"),
        "{}",
        text(&named.stderr)
    );
}

#[test]
fn docker_save_and_load_through_kiln_serve() {
    let store = common::busybox_workspace();
    let (root, work) = (&store.root, &store.work);
    let daemon = Daemon::start(root, &work.join("kiln.sock"));
    let docker = |args: &[&str]| ok(daemon.docker(args));
    docker(&["tag", "busybox", "saved:1"]);
    let archive = work.join("saved.tar");
    docker(&["save", "-o", archive.to_str().unwrap(), "saved:1"]);
    // A docker-archive others read: skopeo sees the image in it.
    let seen = Command::new("skopeo")
        .args(["inspect", "--config"])
        .arg(format!("docker-archive:{}", archive.display()))
        .output()
        .unwrap();
    let config = ok(seen);
    assert!(config.contains("\"architecture\""), "{config}");
    docker(&["rmi", "saved:1"]);
    let loaded = docker(&["load", "-i", archive.to_str().unwrap()]);
    assert_eq!(loaded, "Loaded image: saved:1\n");
    let ran = docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "saved:1",
        "echo",
        "loaded",
    ]);
    assert_eq!(ran, "loaded\n");
    // save | load through pipes, as the issue's users do.
    let piped = Command::new("sh")
        .arg("-c")
        .arg("docker save saved:1 | docker load")
        .env("DOCKER_HOST", format!("unix://{}", daemon.socket.display()))
        .env(
            "DOCKER_CONFIG",
            daemon.socket.with_file_name("docker-config"),
        )
        .output()
        .unwrap();
    assert_eq!(ok(piped), "Loaded image: saved:1\n");
    // What is not there, and what is not an archive, say so.
    let missing = daemon.docker(&["save", "-o", work.join("x.tar").to_str().unwrap(), "nosuch"]);
    assert_ne!(missing.status.code(), Some(0));
    assert!(
        text(&missing.stderr).contains("nosuch"),
        "{}",
        text(&missing.stderr)
    );
    let junk = work.join("junk.tar");
    std::fs::write(&junk, vec![b'x'; 4096]).unwrap();
    let refused = daemon.docker(&["load", "-i", junk.to_str().unwrap()]);
    assert_ne!(refused.status.code(), Some(0));
    assert!(
        text(&refused.stderr).contains("archive"),
        "{}",
        text(&refused.stderr)
    );
    let check = kiln(root, &["check"]);
    assert!(check.status.success(), "{}", text(&check.stderr));
}

#[test]
fn docker_login_push_and_pull_through_kiln_serve() {
    use kiln_testdata::registry::{Auth, LocalRegistry};
    let store = common::busybox_workspace();
    let (root, work) = (&store.root, &store.work);
    let registry = LocalRegistry::start(
        work,
        Auth::Basic {
            user: "kiln".into(),
            password: "s3cret".into(),
        },
    );
    // The daemon's own user has logged in to the registry: a client that
    // has not must still be refused (the daemon lends no credentials).
    let daemon_config = work.join("daemon-config");
    std::fs::create_dir_all(&daemon_config).unwrap();
    std::fs::write(
        daemon_config.join("config.json"),
        serde_json::json!({"auths": {&registry.address: {"auth": "a2lsbjpzM2NyZXQ="}}}).to_string(),
    )
    .unwrap();
    let daemon = Daemon::start_with_config(root, &work.join("kiln.sock"), &daemon_config);
    let docker = |args: &[&str]| ok(daemon.docker(args));
    let name = format!("{}/team/bb:1", registry.address);
    docker(&["tag", "busybox", &name]);
    let refused = daemon.docker(&["push", &name]);
    assert_ne!(refused.status.code(), Some(0));
    let said = text(&refused.stderr) + &text(&refused.stdout);
    assert!(
        said.contains("401") || said.contains("credentials"),
        "{said}"
    );

    // docker login checks the password through the daemon, and then the
    // client's credentials go with each push and pull.
    let login = |password: &str| {
        let mut child = daemon
            .docker_command(
                Path::new("."),
                &["login", &registry.address, "-u", "kiln", "--password-stdin"],
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), password.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };
    let wrong = login("wrong");
    assert_ne!(wrong.status.code(), Some(0));
    assert!(
        text(&wrong.stderr).contains("credentials were refused"),
        "{}",
        text(&wrong.stderr)
    );
    assert!(ok(login("s3cret")).contains("Login Succeeded"));
    let pushed = docker(&["push", &name]);
    assert!(pushed.contains("1: digest: sha256:"), "{pushed}");
    let digest = pushed
        .split("digest: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .to_owned();
    let again = docker(&["push", &name]);
    assert!(again.contains("Layer already exists"), "{again}");

    // Pulled back into a store that lost it; docker run pulls what it
    // does not find, as with Docker.
    docker(&["rmi", &name]);
    // (The pushed manifest has gzip layers, so its digest is the
    // registry's, and the pull comes back with it.)
    let pulled = docker(&["pull", &name]);
    assert!(
        pulled.contains(&format!("Digest: {digest}")),
        "{pushed}{again}{pulled}"
    );
    assert!(
        pulled.contains("Status: Downloaded newer image for"),
        "{pulled}"
    );
    let config = |name: &str| ok(kiln(root, &["inspect", "-f", "{{.Config}}", name]));
    assert_eq!(config(&name), config("busybox"), "the same image came back");
    docker(&["rmi", &name]);
    let ran = daemon.docker(&["run", "--rm", "--network", "none", &name, "echo", "pulled"]);
    assert_eq!(text(&ran.stdout), "pulled\n", "{}", text(&ran.stderr));
    assert!(
        text(&ran.stderr).contains("Unable to find image"),
        "{}",
        text(&ran.stderr)
    );
    let missing = daemon.docker(&["pull", &format!("{}/team/none:1", registry.address)]);
    assert_ne!(missing.status.code(), Some(0));
    assert!(
        text(&missing.stderr).contains("team/none"),
        "{}",
        text(&missing.stderr)
    );
}

#[test]
fn the_socket_is_private_single_and_never_replaces_a_file() {
    let store = common::busybox_workspace();
    let (root, work) = (&store.root, &store.work);
    let socket = work.join("kiln.sock");
    let daemon = Daemon::start(root, &socket);
    let meta = std::fs::symlink_metadata(&socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);

    // A second daemon on a live socket: refused, the first one unharmed.
    let second = kiln(
        root,
        &["serve", "--host", &format!("unix://{}", socket.display())],
    );
    assert_eq!(second.status.code(), Some(1));
    assert!(
        text(&second.stderr).contains("another daemon"),
        "{}",
        text(&second.stderr)
    );
    assert!(daemon.docker(&["version"]).status.success());
    drop(daemon);

    // A stale socket (its daemon killed) is replaced; a regular file or a
    // link at the path never is.
    assert!(socket.exists());
    let again = Daemon::start(root, &socket);
    assert!(again.docker(&["version"]).status.success());
    drop(again);
    let file = work.join("not-a-socket");
    std::fs::write(&file, "keep me").unwrap();
    let link = work.join("link.sock");
    std::os::unix::fs::symlink(&file, &link).unwrap();
    for path in [&file, &link] {
        let out = kiln(
            root,
            &["serve", "--host", &format!("unix://{}", path.display())],
        );
        assert_eq!(out.status.code(), Some(1));
        assert!(
            text(&out.stderr).contains("is not a socket"),
            "{}",
            text(&out.stderr)
        );
    }
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
    for host in ["tcp://127.0.0.1:2375", "unix://relative.sock", "/no/scheme"] {
        let out = kiln(root, &["serve", "--host", host]);
        assert_eq!(out.status.code(), Some(1), "{host}");
    }
    // TCP only with TLS and client certificates.
    let plain = kiln(root, &["serve", "--host", "tcp://127.0.0.1:2375"]);
    assert!(
        text(&plain.stderr).contains("--tlsverify"),
        "{}",
        text(&plain.stderr)
    );
}

/// A CA, and certificates it signs: written as `DIR/{ca,cert,key}.pem`,
/// the layout of Docker's `DOCKER_CERT_PATH`.
struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pem: String,
}

impl TestCa {
    fn new(name: &str) -> TestCa {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let pem = params.self_signed(&key).unwrap().pem();
        TestCa {
            issuer: rcgen::Issuer::new(params, key),
            pem,
        }
    }

    /// A certificate for `names` (IP addresses or DNS names) with `usage`.
    fn sign(&self, dir: &Path, names: &[&str], usage: rcgen::ExtendedKeyUsagePurpose) {
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("ca.pem"), &self.pem).unwrap();
        std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    }
}

#[test]
fn tcp_serves_only_clients_with_a_certificate_its_ca_signed() {
    use rcgen::ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
    let store = common::busybox_workspace();
    let (root, work) = (&store.root, &store.work);
    let ca = TestCa::new("kiln test CA");
    ca.sign(&work.join("server"), &["127.0.0.1"], ServerAuth);
    ca.sign(&work.join("client"), &["client"], ClientAuth);
    // Another CA's client (trusting the server), and one without a
    // certificate (only the CA, to trust the server).
    TestCa::new("someone else's CA").sign(&work.join("stranger"), &["client"], ClientAuth);
    std::fs::copy(work.join("server/ca.pem"), work.join("stranger/ca.pem")).unwrap();
    std::fs::create_dir_all(work.join("anonymous")).unwrap();
    std::fs::copy(work.join("server/ca.pem"), work.join("anonymous/ca.pem")).unwrap();

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = format!("127.0.0.1:{port}");
    let server = work.join("server");
    let serve = |key: &Path| {
        Command::new(env!("CARGO_BIN_EXE_kiln"))
            .arg("--root")
            .arg(root)
            .args([
                "serve",
                "--host",
                &format!("tcp://{address}"),
                "--tlsverify",
            ])
            .arg("--tlscacert")
            .arg(server.join("ca.pem"))
            .arg("--tlscert")
            .arg(server.join("cert.pem"))
            .arg("--tlskey")
            .arg(key)
            .env("DOCKER_CONFIG", work.join("daemon-docker-config"))
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // A key that is not the certificate's: refused before listening.
    let wrong_key = serve(&work.join("client/key.pem"))
        .wait_with_output()
        .unwrap();
    assert_eq!(wrong_key.status.code(), Some(1));
    assert!(
        text(&wrong_key.stderr).contains("client/key.pem"),
        "{}",
        text(&wrong_key.stderr)
    );

    let mut child = serve(&server.join("key.pem"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(&address).is_err() {
        assert!(
            Instant::now() < deadline,
            "kiln serve did not listen on {address}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let docker = |certs: Option<&str>, args: &[&str]| {
        let mut command = Command::new("docker");
        command
            .args(args)
            .env("DOCKER_HOST", format!("tcp://{address}"))
            .env("DOCKER_CONFIG", work.join("docker-config"))
            .env("OTEL_SDK_DISABLED", "true")
            .env("DOCKER_CLI_HINTS", "false")
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_TLS_VERIFY")
            .env_remove("DOCKER_CERT_PATH");
        if let Some(dir) = certs {
            command
                .env("DOCKER_TLS_VERIFY", "1")
                .env("DOCKER_CERT_PATH", work.join(dir));
        }
        command.output().unwrap()
    };

    let version = docker(
        Some("client"),
        &["version", "--format", "{{.Server.APIVersion}}"],
    );
    assert_eq!(ok(version), "1.44\n");
    // A container's output comes over the hijacked TLS connection.
    let ran = docker(
        Some("client"),
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "busybox",
            "echo",
            "over tls",
        ],
    );
    assert_eq!(ok(ran), "over tls\n");

    // Everyone else is turned away at the handshake: a certificate from
    // another CA, none at all, plain HTTP.
    for (certs, who, says) in [
        (Some("stranger"), "another CA's client", "remote error: tls"),
        (
            Some("anonymous"),
            "a client without a certificate",
            "remote error: tls",
        ),
        (None, "plain HTTP", "malformed HTTP response"),
    ] {
        let refused = docker(certs, &["version", "--format", "{{.Server.APIVersion}}"]);
        assert_ne!(refused.status.code(), Some(0), "{who} was served");
        assert!(
            text(&refused.stderr).contains(says),
            "{who}: {}",
            text(&refused.stderr)
        );
        assert!(
            !text(&refused.stdout).contains("1.44"),
            "{who}: {}",
            text(&refused.stdout)
        );
    }
    // ... and the daemon serves on.
    assert_eq!(
        ok(docker(
            Some("client"),
            &["version", "--format", "{{.Server.APIVersion}}"]
        )),
        "1.44\n"
    );
    common::send_signal(child.id(), "TERM");
    assert!(child.wait().unwrap().success());
}

#[test]
fn a_paused_container_dies_with_the_daemon() {
    let store = common::busybox_workspace();
    let (root, work) = (&store.root, &store.work);
    let daemon = Daemon::start(root, &work.join("kiln.sock"));
    let docker = |args: &[&str]| ok(daemon.docker(args));
    docker(&[
        "run",
        "-d",
        "--name",
        "frozen",
        "--network",
        "none",
        "busybox",
        "sleep",
        "300",
    ]);
    docker(&["pause", "frozen"]);
    let pid: i32 = docker(&["inspect", "-f", "{{.State.Pid}}", "frozen"])
        .trim()
        .parse()
        .unwrap();
    assert!(pid > 0);
    let stopped = daemon.stop();
    assert!(stopped.status.success(), "{}", text(&stopped.stderr));
    // A frozen process acts on no signal: the daemon thaws it first, so
    // the SIGKILL its end sends is taken.
    let deadline = Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(
            Instant::now() < deadline,
            "the paused container outlived its daemon"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn restart_policies_bring_containers_back_with_the_daemon() {
    let store = common::busybox_workspace();
    let (root, work) = (&store.root, &store.work);
    let socket = work.join("kiln.sock");
    let daemon = Daemon::start(root, &socket);
    let run = |name: &str, policy: &str| {
        ok(daemon.docker(&[
            "run",
            "-d",
            "--name",
            name,
            "--restart",
            policy,
            "--network",
            "none",
            "busybox",
            "sleep",
            "300",
        ]))
    };
    run("phoenix", "always");
    run("kept-down", "unless-stopped");
    run("plain", "no");
    ok(daemon.docker(&["stop", "-t", "0", "kept-down"]));
    let stopped = daemon.stop();
    assert!(stopped.status.success(), "{}", text(&stopped.stderr));

    let again = Daemon::start(root, &socket);
    let state = |name: &str| ok(again.docker(&["inspect", "-f", "{{.State.Status}}", name]));
    assert_eq!(
        state("phoenix"),
        "running\n",
        "always: back with the daemon"
    );
    assert_eq!(
        state("kept-down"),
        "exited\n",
        "unless-stopped, stopped by hand"
    );
    assert_ne!(state("plain"), "running\n", "no policy: not started");
    ok(again.docker(&["rm", "-f", "phoenix"]));
}
