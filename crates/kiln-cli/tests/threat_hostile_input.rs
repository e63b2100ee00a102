//! Threat: the Dockerfile, the context and the archives in it are
//! untrusted. Hostile input must end in one clear error naming what was
//! wrong (or a correct result), with bounded memory, a non-zero exit and
//! never a panic.

mod common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use common::{
    busybox_workspace, kiln, kiln_command, limit_address_space, ok, run_measuring_memory, text,
};

/// A gzip file of a tar holding one file of `mib` MiB of zeros, made of
/// gzip members (a valid gzip stream: decoders read members one after the
/// other) so that the test makes it in no time: ~1 KiB per MiB.
fn gzip_bomb(path: &Path, mib: u64) {
    let member = |bytes: &[u8]| {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(bytes).unwrap();
        gz.finish().unwrap()
    };
    let mut header = tar::Header::new_ustar();
    header.set_path("zeros").unwrap();
    header.set_size(mib << 20);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    let mut out = fs::File::create(path).unwrap();
    out.write_all(&member(header.as_bytes())).unwrap();
    let mib_of_zeros = member(&vec![0u8; 1 << 20]);
    for _ in 0..mib {
        out.write_all(&mib_of_zeros).unwrap();
    }
    out.write_all(&member(&[0u8; 1024])).unwrap();
}

/// A gzip file of a tar whose first entry is a PAX extended header of
/// `mib` MiB (made of gzip members, as [`gzip_bomb`]): tar-rs reads such a
/// header whole into memory before the entry it describes. Returns the
/// sha256 of the plain tar (its diffID).
fn pax_header_bomb(path: &Path, mib: u64) -> String {
    use sha2::Digest as _;
    let mut plain = sha2::Sha256::new();
    let member = |bytes: &[u8]| {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(bytes).unwrap();
        gz.finish().unwrap()
    };
    let mut header = tar::Header::new_ustar();
    header.set_path("PaxHeader").unwrap();
    header.set_size(mib << 20);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::XHeader);
    header.set_cksum();
    let mut out = fs::File::create(path).unwrap();
    out.write_all(&member(header.as_bytes())).unwrap();
    plain.update(header.as_bytes());
    let records = vec![b'a'; 1 << 20];
    let mib_of_records = member(&records);
    for _ in 0..mib {
        plain.update(&records);
    }
    for _ in 0..mib {
        out.write_all(&mib_of_records).unwrap();
    }
    let mut file = tar::Header::new_ustar();
    file.set_path("file").unwrap();
    file.set_size(0);
    file.set_mode(0o644);
    file.set_cksum();
    let mut end = file.as_bytes().to_vec();
    end.extend([0u8; 1024]);
    out.write_all(&member(&end)).unwrap();
    plain.update(&end);
    let hex: String = plain
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    hex
}

const PAX_BOMB_MIB: u64 = 128;
const PAX_MEMORY_LIMIT_KIB: u64 = 64 << 10;

/// `kiln import` of a tar whose PAX header is 128 MiB: one clear error,
/// and memory never holds the header (Go's archive/tar's 1 MiB limit).
#[test]
fn import_refuses_a_huge_pax_header_with_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let bomb = dir.path().join("pax-bomb.tar.gz");
    let _ = pax_header_bomb(&bomb, PAX_BOMB_MIB);
    let cmd = kiln_command(
        &dir.path().join("store"),
        &["import", bomb.to_str().unwrap(), "bomb"],
    );
    let (out, peak_kib) = run_measuring_memory(cmd);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("pax-bomb.tar.gz") && stderr.contains("1 MiB"),
        "{stderr}"
    );
    assert!(peak_kib < PAX_MEMORY_LIMIT_KIB, "peak RSS {peak_kib} KiB");
}

/// The same archive in ADD.
#[test]
fn add_refuses_a_huge_pax_header_with_bounded_memory() {
    let ws = busybox_workspace();
    let ctx = context(&ws.work, "FROM busybox\nADD pax-bomb.tar.gz /x/\n");
    let _ = pax_header_bomb(&ctx.join("pax-bomb.tar.gz"), PAX_BOMB_MIB);
    let cmd = kiln_command(&ws.root, &["build", ctx.to_str().unwrap()]);
    let (out, peak_kib) = run_measuring_memory(cmd);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("pax-bomb.tar.gz") && stderr.contains("1 MiB"),
        "{stderr}"
    );
    assert!(peak_kib < PAX_MEMORY_LIMIT_KIB, "peak RSS {peak_kib} KiB");
}

/// An OCI archive of image `evil` whose one (gzip) layer is a PAX bomb:
/// `kiln load` stores layers as they come, so the bound must hold wherever
/// stored layers are read (expanding, unpacking, snapshots).
#[test]
fn a_loaded_image_whose_layer_has_a_huge_pax_header_fails_cleanly() {
    use sha2::Digest as _;
    let dir = tempfile::tempdir().unwrap();
    let layer_path = dir.path().join("layer.tar.gz");
    let diff_id = pax_header_bomb(&layer_path, PAX_BOMB_MIB);
    let layer = fs::read(&layer_path).unwrap();
    let sha = |bytes: &[u8]| -> String {
        sha2::Sha256::digest(bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{diff_id}")]},
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": format!("sha256:{}", sha(&config)), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": format!("sha256:{}", sha(&layer)), "size": layer.len()}],
    }))
    .unwrap();
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": format!("sha256:{}", sha(&manifest)), "size": manifest.len(),
                       "annotations": {"org.opencontainers.image.ref.name": "evil"}}],
    }))
    .unwrap();
    let archive = dir.path().join("evil-oci.tar");
    let mut tar = tar::Builder::new(fs::File::create(&archive).unwrap());
    let mut add = |name: String, bytes: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        tar.append_data(&mut header, name, bytes).unwrap();
    };
    add("oci-layout".into(), br#"{"imageLayoutVersion":"1.0.0"}"#);
    for blob in [&config, &layer, &manifest] {
        add(format!("blobs/sha256/{}", sha(blob)), blob);
    }
    add("index.json".into(), &index);
    tar.finish().unwrap();
    let root = dir.path().join("store");
    ok(kiln(&root, &["load", "-i", archive.to_str().unwrap()]));
    let ctx = context(dir.path(), "FROM evil\nRUN true\n");
    let cmd = kiln_command(
        &root,
        &["build", "--progress", "plain", ctx.to_str().unwrap()],
    );
    let (out, peak_kib) = run_measuring_memory(cmd);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("1 MiB"), "{stderr}");
    assert!(peak_kib < PAX_MEMORY_LIMIT_KIB, "peak RSS {peak_kib} KiB");
}

fn context(work: &Path, dockerfile: &str) -> PathBuf {
    let ctx = work.join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    ctx
}

/// ADD used to hold every archive entry in memory (a 2 MB bomb took
/// 2.1 GB). 256 MiB of zeros in one entry must not make kiln grow by
/// anything like that much.
#[test]
fn add_of_a_gzip_bomb_streams_with_bounded_memory() {
    const BOMB_MIB: u64 = 256;
    const LIMIT_KIB: u64 = 128 << 10;
    let ws = busybox_workspace();
    let ctx = context(&ws.work, "FROM busybox\nADD bomb.tar.gz /x/\n");
    gzip_bomb(&ctx.join("bomb.tar.gz"), BOMB_MIB);
    assert!(fs::metadata(ctx.join("bomb.tar.gz")).unwrap().len() < 1 << 20);
    let cmd = kiln_command(&ws.root, &["build", "-t", "bomb", ctx.to_str().unwrap()]);
    let (out, peak_kib) = run_measuring_memory(cmd);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        peak_kib < LIMIT_KIB,
        "peak RSS {peak_kib} KiB for a {BOMB_MIB} MiB entry"
    );
    // And the file is all there, in the last layer.
    let inspect: serde_json::Value =
        serde_json::from_str(&ok(kiln(&ws.root, &["inspect", "bomb"]))).unwrap();
    let layers = inspect[0]["Manifest"]["layers"].as_array().unwrap();
    let size = layers.last().unwrap()["size"].as_u64().unwrap();
    assert!(size > BOMB_MIB << 20, "layer of {size} bytes");
}

/// `ENV A=x` then `ENV A=$A$A` `doublings` times, then `rest`.
fn doubling_dockerfile(doublings: usize, rest: &str) -> String {
    let mut text = String::from("FROM scratch\nENV A=xxxxxxxxxxxxxxxx\n");
    text.push_str(&"ENV A=$A$A\n".repeat(doublings));
    text.push_str(rest);
    text
}

/// Runs `kiln plan` on `dockerfile`; returns its output and peak RSS (KiB).
fn plan_measuring_memory(dockerfile: &str) -> (std::process::Output, u64) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Dockerfile");
    fs::write(&path, dockerfile).unwrap();
    let cmd = kiln_command(
        &dir.path().join("store"),
        &[
            "plan",
            "-f",
            path.to_str().unwrap(),
            dir.path().to_str().unwrap(),
        ],
    );
    run_measuring_memory(cmd)
}

const PLAN_MEMORY_LIMIT_KIB: u64 = 150 << 10;

/// Each node keeps its config: 40 labels of a 512 KiB variable used to
/// take 560 MB to plan (quadratic); the stage's config is now bounded.
#[test]
fn wide_labels_stop_at_the_stage_config_limit_naming_the_line() {
    let labels: String = (1..=40).map(|i| format!("LABEL l{i}=$A\n")).collect();
    let (out, peak_kib) = plan_measuring_memory(&doubling_dockerfile(15, &labels));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(":18:"), "{stderr}");
    assert!(stderr.contains("LABEL l1=$A"), "{stderr}");
    assert!(stderr.contains("limit of 1 MiB"), "{stderr}");
    assert!(peak_kib < PLAN_MEMORY_LIMIT_KIB, "peak RSS {peak_kib} KiB");
}

/// A config just under the limit, copied by hundreds of one-word steps.
#[test]
fn many_steps_over_a_large_config_stop_at_the_plan_limit() {
    let (out, peak_kib) =
        plan_measuring_memory(&doubling_dockerfile(15, &"LABEL x=y\n".repeat(400)));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("limit of 64 MiB"), "{stderr}");
    assert!(stderr.contains("LABEL x=y"), "{stderr}");
    assert!(peak_kib < PLAN_MEMORY_LIMIT_KIB, "peak RSS {peak_kib} KiB");
}

/// Runs kiln with at most 2 GiB of address space (a reader without a
/// bound dies of it) and `stdin`; returns its output and peak RSS (KiB).
fn run_bounded(
    root: &Path,
    args: &[&str],
    stdin: std::process::Stdio,
) -> (std::process::Output, u64) {
    let mut cmd = kiln_command(root, args);
    limit_address_space(&mut cmd, 2 << 30);
    cmd.stdin(stdin);
    run_measuring_memory(cmd)
}

fn assert_refused_as_too_large(out: &std::process::Output, peak_kib: u64, what: &str) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{what}: {stderr}");
    assert!(stderr.contains("16 MiB"), "{what}: {stderr}");
    assert!(!stderr.contains("panicked"), "{what}: {stderr}");
    assert!(peak_kib < 150 << 10, "{what}: peak RSS {peak_kib} KiB");
}

/// `kiln parse -f /dev/zero` used to read until memory ran out; every
/// command that reads a Dockerfile stops at 16 MiB (BuildKit's bound).
#[test]
fn an_endless_dockerfile_is_refused_by_every_command_that_reads_one() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let ctx = dir.path();
    for command in ["parse", "plan", "build"] {
        let mut args = vec![command, "-f", "/dev/zero"];
        if command != "parse" {
            args.push(ctx.to_str().unwrap());
        }
        let (out, peak) = run_bounded(&root, &args, std::process::Stdio::null());
        assert_refused_as_too_large(&out, peak, command);
    }
    // From standard input, and as the context's own Dockerfile (a link the
    // context planted).
    let zero = fs::File::open("/dev/zero").unwrap();
    let (out, peak) = run_bounded(
        &root,
        &["plan", "-f", "-", ctx.to_str().unwrap()],
        zero.into(),
    );
    assert_refused_as_too_large(&out, peak, "plan -f -");
    std::os::unix::fs::symlink("/dev/zero", ctx.join("Dockerfile")).unwrap();
    let (out, peak) = run_bounded(
        &root,
        &["build", ctx.to_str().unwrap()],
        std::process::Stdio::null(),
    );
    assert_refused_as_too_large(
        &out,
        peak,
        "build of a context whose Dockerfile is /dev/zero",
    );
}

/// The context's `.dockerignore` is read before anything else of it.
#[test]
fn an_endless_dockerignore_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path().join("ctx");
    fs::create_dir(&ctx).unwrap();
    fs::write(ctx.join("Dockerfile"), "FROM scratch\n").unwrap();
    std::os::unix::fs::symlink("/dev/zero", ctx.join(".dockerignore")).unwrap();
    let (out, peak) = run_bounded(
        &dir.path().join("store"),
        &["build", ctx.to_str().unwrap()],
        std::process::Stdio::null(),
    );
    assert_refused_as_too_large(&out, peak, "build");
    assert!(
        text(&out.stderr).contains(".dockerignore"),
        "{}",
        text(&out.stderr)
    );
}

// What kiln runs under can be hostile too: a reader that went away, a
// supervisor's SIGTERM.

/// A pipe whose read end is already closed: every write to it fails with
/// EPIPE.
fn closed_pipe() -> std::process::Stdio {
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    // SAFETY: pipe fills two fds we then own; the read end is closed at once.
    unsafe {
        assert_eq!(libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC), 0);
        libc::close(fds[0]);
        std::process::Stdio::from_raw_fd(fds[1])
    }
}

/// A failed build with nobody reading its stderr used to panic (exit 101).
#[test]
fn a_failed_build_with_a_closed_stderr_exits_1_without_a_panic() {
    let ws = busybox_workspace();
    let ctx = context(&ws.work, "FROM busybox\nRUN echo doomed; exit 3\n");
    let mut cmd = kiln_command(&ws.root, &["build", ctx.to_str().unwrap()]);
    cmd.stderr(closed_pipe()).stdout(closed_pipe());
    let status = cmd.status().unwrap();
    assert_eq!(status.code(), Some(1));
    // And a listing into a closed pipe is no error either.
    let mut cmd = kiln_command(&ws.root, &["images"]);
    cmd.stdout(closed_pipe()).stderr(closed_pipe());
    assert_eq!(cmd.status().unwrap().code(), Some(0));
}

/// SIGTERM ends a build with the shell's status for it (128 + 15), not
/// SIGINT's 130.
#[test]
fn sigterm_ends_a_build_with_status_143() {
    use std::io::{BufRead, BufReader};
    let ws = busybox_workspace();
    let ctx = context(&ws.work, "FROM busybox\nRUN echo started; sleep 30\n");
    let mut cmd = kiln_command(
        &ws.root,
        &["build", "--progress", "plain", ctx.to_str().unwrap()],
    );
    let mut child = cmd
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while line.trim_end() != "#2 started" {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "the build ended early"
        );
    }
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut stderr, &mut rest);
    assert_eq!(child.wait().unwrap().code(), Some(143), "{rest}");
}

// A full disk: the error names the file being written, once.

/// Runs `script` (sh) in a private mount namespace where `$ST` is a store
/// on a 4 MiB tmpfs holding busybox, `$SMALL` a 1 MiB tmpfs and `$K` kiln;
/// both mounts die with the namespace. Returns what the script printed.
fn on_small_filesystems(work: &Path, script: &str) -> (std::process::Output, PathBuf, PathBuf) {
    let store = work.join("small-store");
    let small = work.join("small");
    fs::create_dir_all(&store).unwrap();
    fs::create_dir_all(&small).unwrap();
    let rootfs = common::busybox_rootfs(work);
    let setup = "mount -t tmpfs -o size=4m kiln-test \"$ST\" && \
                 mount -t tmpfs -o size=1m kiln-test \"$SMALL\" && \
                 \"$K\" --root \"$ST\" import \"$ROOTFS\" busybox >/dev/null && ";
    let out = std::process::Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg(format!("{setup}{script}"))
        .env("ST", &store)
        .env("SMALL", &small)
        .env("K", env!("CARGO_BIN_EXE_kiln"))
        .env("ROOTFS", &rootfs)
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap();
    (out, store, small)
}

fn random_file(path: &Path, len: usize) {
    let mut bytes = vec![0u8; len];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for b in bytes.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    fs::write(path, bytes).unwrap();
}

fn assert_names_once(stderr: &str, written: &Path, read: &str) {
    assert_eq!(
        stderr.matches("No space left on device").count(),
        1,
        "the OS error once: {stderr}"
    );
    let line = stderr
        .lines()
        .find(|l| l.contains("No space left"))
        .unwrap();
    assert!(
        line.contains(&written.display().to_string()),
        "names {}: {stderr}",
        written.display()
    );
    assert!(!line.contains(read), "does not blame {read}: {stderr}");
}

#[test]
fn a_full_store_during_import_names_the_store_file_not_the_input() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input-layer.tar");
    random_file(&dir.path().join("big"), 3 << 20);
    let mut tar = tar::Builder::new(fs::File::create(&input).unwrap());
    tar.append_path_with_name(dir.path().join("big"), "big")
        .unwrap();
    tar.finish().unwrap();
    drop(tar);
    let (out, store, _) = on_small_filesystems(
        dir.path(),
        &format!("\"$K\" --root \"$ST\" import {} big", input.display()),
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert_names_once(&text(&out.stderr), &store.join("blobs"), "input-layer.tar");
}

#[test]
fn a_full_store_during_copy_names_the_store_file_not_the_context_file() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path(), "FROM busybox\nCOPY context-file /big\n");
    random_file(&ctx.join("context-file"), 3 << 20);
    let (out, store, _) = on_small_filesystems(
        dir.path(),
        &format!("\"$K\" --root \"$ST\" build {}", ctx.display()),
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert_names_once(&text(&out.stderr), &store.join("blobs"), "context-file");
}

#[test]
fn a_full_disk_during_save_names_the_archive_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (out, _, small) = on_small_filesystems(
        dir.path(),
        "\"$K\" --root \"$ST\" save -o \"$SMALL/saved.tar\" busybox; status=$?; ls -A \"$SMALL\"; exit $status",
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert_names_once(&text(&out.stderr), &small.join("saved.tar"), "blobs");
    assert_eq!(text(&out.stdout), "", "left on the disk");
}

// `kiln run`: what the user types is input too.

fn container_dirs(root: &Path) -> usize {
    fs::read_dir(root.join("kiln/containers"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// `--rm` used to keep the container when its command could not start.
#[test]
fn run_rm_removes_a_container_whose_command_cannot_be_executed() {
    let ws = busybox_workspace();
    for (command, status) in [("/no/such/program", 127), ("/etc/passwd", 126)] {
        let out = kiln(
            &ws.root,
            &["run", "--rm", "--network", "none", "busybox", command],
        );
        assert_eq!(out.status.code(), Some(status), "{}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains("cannot execute"),
            "{}",
            text(&out.stderr)
        );
        assert_eq!(
            container_dirs(&ws.root),
            0,
            "{command}: the container was kept"
        );
    }
}

/// Names follow Docker's grammar; they are never paths.
#[test]
fn run_name_must_follow_dockers_grammar() {
    let ws = busybox_workspace();
    let outside = ws.root.join("kiln/not-a-container");
    fs::create_dir_all(&outside).unwrap();
    for bad in [
        "../x",
        "../../kiln/not-a-container",
        "a/b",
        "a b",
        "-x",
        "x",
        "é1",
    ] {
        let name = format!("--name={bad}");
        let out = kiln(
            &ws.root,
            &["run", "--rm", "--network", "none", &name, "busybox", "true"],
        );
        assert_eq!(out.status.code(), Some(1), "{bad:?}");
        assert!(
            text(&out.stderr).contains("invalid container name"),
            "{bad:?}: {}",
            text(&out.stderr)
        );
        assert_eq!(container_dirs(&ws.root), 0, "{bad:?}: a container was made");
        for command in ["rm", "logs", "stop", "start"] {
            let out = kiln(&ws.root, &[command, bad]);
            assert!(!out.status.success(), "{command} {bad:?}");
        }
    }
    assert!(outside.is_dir(), "rm reached outside kiln/containers");
    let out = kiln(
        &ws.root,
        &[
            "run",
            "--network",
            "none",
            "--name",
            "web_1.a-b",
            "busybox",
            "true",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    ok(kiln(&ws.root, &["rm", "web_1.a-b"]));
    assert_eq!(container_dirs(&ws.root), 0);
}

/// `--root store` (relative) made `kiln run` fail with "overlay dir ... is
/// not absolute".
#[test]
fn run_works_with_a_relative_store_root() {
    let ws = busybox_workspace();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .current_dir(&ws.work)
        .args([
            "--root",
            "store",
            "run",
            "--rm",
            "--network",
            "none",
            "busybox",
            "true",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(container_dirs(&ws.root), 0);
}

/// `kiln logs` read the whole log into memory; a container decides how
/// much it prints.
#[test]
fn logs_of_a_chatty_container_stream_with_bounded_memory() {
    let ws = busybox_workspace();
    ok(kiln(
        &ws.root,
        &[
            "run",
            "--name",
            "chatty",
            "--network",
            "none",
            "busybox",
            "sh",
            "-c",
            "head -c 200000000 /dev/zero",
        ],
    ));
    let (out, peak_kib) = run_measuring_memory(kiln_command(&ws.root, &["logs", "chatty"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(out.stdout.len(), 200_000_000);
    assert!(peak_kib < 100 << 10, "peak RSS {peak_kib} KiB");
}

/// A tar of `count` entries `N.json` of `mib` MiB of zeros each, as a
/// sparse file (the headers are its only data), so it takes no disk.
fn sparse_json_archive(path: &Path, count: u64, mib: u64) {
    use std::io::{Seek, SeekFrom};
    let size = mib << 20;
    let mut file = fs::File::create(path).unwrap();
    for n in 0..count {
        let mut header = tar::Header::new_gnu();
        header.set_path(format!("{n}.json")).unwrap();
        header.set_size(size);
        header.set_mode(0o644);
        header.set_cksum();
        file.seek(SeekFrom::Start(n * (512 + size))).unwrap();
        file.write_all(header.as_bytes()).unwrap();
    }
    // The data of the last entry and the two zero blocks that end a tar.
    file.set_len(count * (512 + size) + 1024).unwrap();
}

/// `kiln load` kept every small (`.json`) file of an archive in memory
/// until the end, with no bound on their total: 1.2 GB of them streamed on
/// standard input took 1.2 GB. Together they may take 64 MiB.
#[test]
fn load_of_an_archive_of_endless_json_files_is_refused_with_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let archive = dir.path().join("json-bomb.tar");
    sparse_json_archive(&archive, 48, 32);
    let input = fs::File::open(&archive).unwrap();
    let (out, peak_kib) = run_bounded(&root, &["load", "-i", "-"], input.into());
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("64 MiB"), "{stderr}");
    assert!(stderr.contains(".json"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(peak_kib < 150 << 10, "peak RSS {peak_kib} KiB");
}

/// Writes to `out`, until kiln stops reading, a tar of 300 empty files
/// whose names take about 1 MB each (GNU long names, within the 1 MiB
/// header bound).
fn write_long_named_entries(out: impl Write) {
    let mut tar = tar::Builder::new(out);
    for n in 0..300 {
        let component = "a".repeat(250);
        let name = format!("{n:08}/{component}/").repeat(3900) + "x";
        let mut header = tar::Header::new_gnu();
        header.set_size(0);
        header.set_mode(0o644);
        if tar
            .append_data(&mut header, name, std::io::empty())
            .is_err()
        {
            return;
        }
    }
    let _ = tar.finish();
}

/// `kiln load` kept every entry's name until the end: 300 entries with
/// names of 1 MB took 311 MB. Names count against the same 64 MiB.
#[test]
fn load_of_an_archive_of_endless_long_names_is_refused_with_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let (reader, writer) = std::io::pipe().unwrap();
    let feeder = std::thread::spawn(move || write_long_named_entries(writer));
    let (out, peak_kib) = run_bounded(&root, &["load", "-i", "-"], reader.into());
    feeder.join().unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("64 MiB"), "{stderr}");
    assert!(stderr.len() < 2000, "the error shows the name shortened");
    assert!(peak_kib < 150 << 10, "peak RSS {peak_kib} KiB");
}

/// ADD creates the parents of every archive entry, each with its own copy
/// of its path: one entry whose name is 1 MB deep in 3900 directories took
/// 11.6 GB and 152 s (300 of them: killed at 24 GB). No file system holds
/// a path over PATH_MAX (4096 bytes); such a name must end in an error.
#[test]
fn add_of_an_entry_with_an_endlessly_deep_name_is_refused_with_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path(), "FROM busybox\nADD deep.tar /t/\n");
    let root = common::busybox_store(dir.path());
    let mut tar = tar::Builder::new(fs::File::create(ctx.join("deep.tar")).unwrap());
    let name = format!("{}/", "a".repeat(250)).repeat(3900) + "x";
    let mut header = tar::Header::new_gnu();
    header.set_size(0);
    header.set_mode(0o644);
    tar.append_data(&mut header, name, std::io::empty())
        .unwrap();
    tar.finish().unwrap();
    drop(tar);
    let (out, peak_kib) = run_bounded(
        &root,
        &["build", "--progress", "plain", ctx.to_str().unwrap()],
        std::process::Stdio::null(),
    );
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        &stderr[stderr.len().saturating_sub(2000)..]
    );
    assert!(stderr.contains("deep.tar"), "the error names the archive");
    assert!(peak_kib < 150 << 10, "peak RSS {peak_kib} KiB");
}

/// A context directory nested as deep as a path can go: the COPY's walk
/// (directories walked in parallel near the top, by one thread below)
/// copies it without running out of stack.
#[test]
fn copy_of_a_context_nested_to_the_path_limit_works() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path(), "FROM busybox\nCOPY . /c/\n");
    let root = common::busybox_store(dir.path());
    // As deep as the host path allows (PATH_MAX is 4096 bytes).
    let levels = (4000 - ctx.as_os_str().len()) / 2;
    let deep = ctx.join("d/".repeat(levels));
    fs::create_dir_all(&deep).unwrap();
    fs::write(deep.join("f"), "bottom").unwrap();
    let out = kiln(&root, &["build", "-t", "deep", ctx.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let layers = common::image_layers(&root, "deep");
    let mut archive = tar::Archive::new(&layers.last().unwrap()[..]);
    let bottom = format!("c/{}f", "d/".repeat(levels));
    assert!(
        archive
            .entries()
            .unwrap()
            .any(|e| e.unwrap().path().unwrap().to_str() == Some(bottom.as_str())),
        "the deepest file is in the layer"
    );
}

/// Deep names under PATH_MAX still cost their depth times their length in
/// parent directories, and distinct ones share none: 100 entries of 4000
/// bytes in 2000 directories each would need 800 MB of parent paths. The
/// parents' path bytes are bounded (256 MiB), with an error.
#[test]
fn add_of_many_deep_distinct_names_is_refused_with_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path(), "FROM busybox\nADD deep.tar /t/\n");
    let root = common::busybox_store(dir.path());
    let mut tar = tar::Builder::new(fs::File::create(ctx.join("deep.tar")).unwrap());
    for n in 0..100 {
        let name = format!("d{n:03}/{}x", "a/".repeat(1998));
        let mut header = tar::Header::new_gnu();
        header.set_size(0);
        header.set_mode(0o644);
        tar.append_data(&mut header, name, std::io::empty())
            .unwrap();
    }
    tar.finish().unwrap();
    drop(tar);
    let (out, peak_kib) = run_bounded(
        &root,
        &["build", "--progress", "plain", ctx.to_str().unwrap()],
        std::process::Stdio::null(),
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("parent directories"), "{stderr}");
    assert!(peak_kib < 1536 << 10, "peak RSS {peak_kib} KiB");
}
