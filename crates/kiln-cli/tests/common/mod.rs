//! Helpers shared by the integration tests that drive the real binary
//! against a temporary store.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs `kiln --root ROOT ARGS...` with a clean SOURCE_DATE_EPOCH.
pub fn kiln(root: &Path, args: &[&str]) -> Output {
    kiln_env(root, args, &[])
}

pub fn kiln_env(root: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
    cmd.arg("--root")
        .arg(root)
        .args(args)
        .env_remove("SOURCE_DATE_EPOCH");
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

/// The busybox rootfs tar, written by the shared script (busybox-static is
/// installed by scripts/install-test-deps.sh).
pub fn busybox_rootfs(dir: &Path) -> PathBuf {
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/bench/busybox-rootfs.sh");
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

/// Unpacks image `name` of the store at `root` with umoci; returns the rootfs.
pub fn umoci_unpack(root: &Path, name: &str, into: &Path) -> PathBuf {
    ok(Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:{name}", root.display()))
        .arg(into)
        .output()
        .expect("umoci is installed by scripts/install-test-deps.sh"));
    into.join("rootfs")
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
