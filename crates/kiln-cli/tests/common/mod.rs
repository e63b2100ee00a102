//! Helpers shared by the integration tests that drive the real binary
//! against a temporary store.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Sends signal `name` (`"TERM"`, `"INT"`, `"KILL"`...) to process `pid`,
/// with the syscall: a bare machine need not have procps' `kill`.
pub fn send_signal(pid: u32, name: &str) {
    let signal: nix::sys::signal::Signal = format!("SIG{name}").parse().unwrap();
    // A process that is already gone is no error here.
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal);
}

/// Runs `kiln --root ROOT ARGS...` with a clean SOURCE_DATE_EPOCH.
pub fn kiln(root: &Path, args: &[&str]) -> Output {
    kiln_env(root, args, &[])
}

pub fn kiln_env(root: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
    cmd.arg("--root")
        .arg(root)
        .args(args)
        .env_remove("SOURCE_DATE_EPOCH")
        // Registries on 127.0.0.1 only, whoever runs the tests.
        .env("KILN_REGISTRY_ALLOW", "127.0.0.1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts success and returns stdout.
pub fn ok(out: Output) -> String {
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
}

/// The busybox rootfs tar, written by the repository's own script from
/// Debian's busybox-static (installed by scripts/install-test-deps.sh).
pub fn busybox_rootfs(dir: &Path) -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/busybox-rootfs.sh");
    let out = dir.join("busybox-rootfs.tar");
    let status = Command::new("sh").arg(&script).arg(&out).output().unwrap();
    assert!(
        status.status.success(),
        "{}: {}",
        script.display(),
        text(&status.stderr)
    );
    out
}

/// Unpacks image `name` of the store at `root` with umoci; returns the
/// rootfs. umoci reads what `kiln save` exports (an OCI layout in a tar),
/// as a user hands an image to another tool: the store keeps a layer that
/// has a snapshot only as that snapshot, so it is not an OCI layout
/// itself.
pub fn umoci_unpack(root: &Path, name: &str, into: &Path) -> PathBuf {
    let layout = export_layout(root, name, &into.with_extension("oci"));
    ok(Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:{name}", layout.display()))
        .arg(into)
        .output()
        .expect("umoci is installed by scripts/install-test-deps.sh"));
    into.join("rootfs")
}

/// Image `name` of the store at `root` as an OCI layout directory at
/// `dir` (`kiln save --format oci`, unpacked), its tag the name as given.
pub fn export_layout(root: &Path, name: &str, dir: &Path) -> PathBuf {
    let archive = dir.with_extension("tar");
    ok(kiln(
        root,
        &[
            "save",
            "--format",
            "oci",
            "-o",
            archive.to_str().unwrap(),
            name,
        ],
    ));
    std::fs::create_dir_all(dir).unwrap();
    tar::Archive::new(std::fs::File::open(&archive).unwrap())
        .unpack(dir)
        .unwrap();
    dir.to_owned()
}

/// The plain tar of each layer of image `name`, bottom first, as `kiln
/// save` exports them (the store may keep a layer as its snapshot only).
pub fn image_layers(root: &Path, name: &str) -> Vec<Vec<u8>> {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let layout = export_layout(root, name, &dir.path().join("layout"));
    let blob = |digest: &str| {
        std::fs::read(layout.join("blobs/sha256").join(&digest["sha256:".len()..])).unwrap()
    };
    let json = |bytes: Vec<u8>| -> serde_json::Value { serde_json::from_slice(&bytes).unwrap() };
    let index = json(std::fs::read(layout.join("index.json")).unwrap());
    let manifest = json(blob(index["manifests"][0]["digest"].as_str().unwrap()));
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|layer| {
            let mut tar = Vec::new();
            // kiln compresses in parallel: one gzip member per piece.
            flate2::read::MultiGzDecoder::new(&blob(layer["digest"].as_str().unwrap())[..])
                .read_to_end(&mut tar)
                .unwrap();
            tar
        })
        .collect()
}

/// A store under `dir` with the busybox rootfs imported as `busybox`.
pub fn busybox_store(dir: &Path) -> PathBuf {
    let root = dir.join("store");
    let rootfs = busybox_rootfs(dir);
    ok(kiln(
        &root,
        &["import", rootfs.to_str().unwrap(), "busybox"],
    ));
    root
}

/// A temporary directory with a store holding `busybox`; `work` is where a
/// test puts its contexts and outputs.
pub struct BusyboxStore {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
    pub work: PathBuf,
}

pub fn busybox_workspace() -> BusyboxStore {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().to_owned();
    let root = busybox_store(&work);
    BusyboxStore {
        _dir: dir,
        root,
        work,
    }
}

/// A plain tar written byte by byte (ustar headers), so tests can make
/// archives the tar crate would refuse to write (`..`, absolute paths).
pub fn raw_tar(entries: &[(&str, &[u8])], mode: u32) -> Vec<u8> {
    let mut tar = Vec::new();
    for (name, body) in entries {
        let mut header = tar::Header::new_ustar();
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_mode(mode);
        header.set_size(body.len() as u64);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        tar.extend_from_slice(header.as_bytes());
        tar.extend_from_slice(body);
        tar.extend(std::iter::repeat_n(0u8, (512 - body.len() % 512) % 512));
    }
    tar.extend([0u8; 1024]);
    tar
}

/// Runs `cmd` to the end and returns its output with the peak resident set
/// size of that one process, in KiB: its `VmHWM` (the high-water mark of
/// its own memory since it exec'd), sampled every few milliseconds until it
/// exits. (`wait4`'s `ru_maxrss` would not do: it counts the memory of the
/// process that forked it, the test binary, at the time of the exec.) A
/// peak in the last few milliseconds of the process could be missed; the
/// hostile inputs tested hold their memory for far longer.
pub fn run_measuring_memory(mut cmd: Command) -> (Output, u64) {
    use std::process::Stdio;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status_file = format!("/proc/{}/status", child.id());
    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (done, peak) = (Arc::clone(&done), Arc::clone(&peak));
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                if let Some(kib) = std::fs::read_to_string(&status_file)
                    .ok()
                    .and_then(|status| vm_hwm_kib(&status))
                {
                    peak.fetch_max(kib, Ordering::SeqCst);
                }
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        })
    };
    let output = child.wait_with_output().unwrap();
    done.store(true, Ordering::SeqCst);
    sampler.join().unwrap();
    (output, peak.load(Ordering::SeqCst))
}

fn vm_hwm_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The `kiln` command for `root`, to run with [`run_measuring_memory`].
pub fn kiln_command(root: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
    cmd.arg("--root")
        .arg(root)
        .args(args)
        .env_remove("SOURCE_DATE_EPOCH")
        .env("KILN_REGISTRY_ALLOW", "127.0.0.1")
        .stdin(std::process::Stdio::null());
    cmd
}

/// Caps the address space of the process `cmd` starts (RLIMIT_AS), so a
/// test of unbounded reading fails (allocation failure) instead of taking
/// the machine's memory when the bound is missing.
pub fn limit_address_space(cmd: &mut Command, bytes: u64) {
    use std::os::unix::process::CommandExt;
    // SAFETY: setrlimit is async-signal-safe; nothing else runs in the hook.
    unsafe {
        cmd.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: bytes,
                rlim_max: bytes,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
