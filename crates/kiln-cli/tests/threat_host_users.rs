//! Threat: a hostile image (or RUN step) handing its files to the other,
//! unprivileged users of the host. Images carry setuid-root binaries (and
//! may carry anything); kiln unpacks them into the store as real files, so
//! the store must not let other users reach them, as Docker's data root
//! (`/var/lib/docker`, mode 0710) does not.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::{kiln, ok};

/// Every setuid or setgid file under `dir`.
fn setid_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        if meta.is_dir() {
            setid_files(&entry.path(), found);
        } else if meta.is_file() && meta.permissions().mode() & 0o6000 != 0 {
            found.push(entry.path());
        }
    }
}

/// Whether a user other than the owner and group can reach `file` from
/// `root`: every directory from `root` to it lets others search it.
fn others_can_reach(root: &Path, file: &Path) -> bool {
    file.ancestors()
        .skip(1)
        .take_while(|dir| dir.starts_with(root))
        .all(|dir| fs::metadata(dir).unwrap().permissions().mode() & 0o001 != 0)
}

/// A RUN step made a setuid-root copy of busybox; once a container ran the
/// image, its snapshot in `ROOT/kiln/snapshots` held that binary behind
/// directories of mode 0755: any local user could run it as root (a static
/// program that prints its euid printed 0 for uid 65534).
#[test]
#[ignore = "open: the store's kiln/ directory is created 0755 (Store::open in kiln-store/src/store.rs, owned by the store branch); make it 0700 at every open"]
fn setuid_files_of_an_image_are_out_of_other_users_reach() {
    let store = common::busybox_workspace();
    let ctx = store.work.join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nRUN cp /bin/busybox /rootshell && chmod 4755 /rootshell\n",
    )
    .unwrap();
    ok(kiln(
        &store.root,
        &["build", "-t", "suid", ctx.to_str().unwrap()],
    ));
    ok(kiln(
        &store.root,
        &["run", "--rm", "--network", "none", "suid", "true"],
    ));
    let mut found = Vec::new();
    setid_files(&store.root, &mut found);
    assert!(
        !found.is_empty(),
        "the image's setuid file is unpacked somewhere"
    );
    let reachable: Vec<_> = found
        .iter()
        .filter(|file| others_can_reach(&store.root, file))
        .collect();
    assert!(reachable.is_empty(), "other users can run {reachable:?}");
}
