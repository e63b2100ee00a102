//! Killing kiln with SIGKILL at many moments during builds never leaves a
//! store that fails to open or an image that points at missing blobs:
//! `kiln check` stays clean, and the next build and `kiln prune` work
//! (and a later build still finds its cache entries usable or misses).

mod common;

use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{busybox_rootfs, kiln, ok};

#[test]
fn sigkill_at_many_moments_leaves_a_consistent_store() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("store");
    let rootfs = busybox_rootfs(work.path());
    ok(kiln(
        &root,
        &["import", rootfs.to_str().unwrap(), "busybox"],
    ));

    // Enough data that a build takes a while: 24 files of 1 MiB, in two
    // stages, with a tag written at the end.
    let context = work.path().join("context");
    fs::create_dir_all(context.join("data")).unwrap();
    for n in 0..24u8 {
        fs::write(context.join(format!("data/f{n}")), vec![n; 1 << 20]).unwrap();
    }
    fs::write(
        context.join("Dockerfile"),
        "FROM busybox AS a\nCOPY data/ /data/\nFROM busybox\nCOPY --from=a /data /copied\nLABEL done=yes\n",
    )
    .unwrap();
    let build = || {
        Command::new(env!("CARGO_BIN_EXE_kiln"))
            .arg("--root")
            .arg(&root)
            // Every build does the work (and rewrites cache entries), so
            // every kill can land mid-way.
            .args(["build", "--no-cache", "-t", "big"])
            .arg(&context)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };

    // How long one build takes here, to spread the kills over it.
    let started = Instant::now();
    assert!(build().wait().unwrap().success());
    let full = started.elapsed();
    ok(kiln(&root, &["rmi", "big"]));

    let mut killed_mid_build = 0;
    for step in 0..12u32 {
        let delay = full * step / 12 + Duration::from_millis(u64::from(step % 3));
        let mut child = build();
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_none() {
            killed_mid_build += 1;
        }
        let _ = child.kill();
        let _ = child.wait();

        let check = kiln(&root, &["check"]);
        assert!(
            check.status.success(),
            "after a kill at {delay:?}: {}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        ok(kiln(&root, &["images"]));
    }
    assert!(
        killed_mid_build >= 6,
        "only {killed_mid_build} kills landed mid-build"
    );

    // The store still works: a full build, then prune clears the debris.
    assert!(build().wait().unwrap().success());
    ok(kiln(&root, &["prune"]));
    assert!(ok(kiln(&root, &["check"])).starts_with("ok:"));
    let scratch = root.join("kiln/tmp");
    assert!(!scratch.exists() || fs::read_dir(&scratch).unwrap().count() == 0);
    let strays = fs::read_dir(root.join("blobs/sha256"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(".tmp")
        })
        .count();
    assert_eq!(strays, 0);
}
