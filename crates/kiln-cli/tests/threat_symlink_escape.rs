//! Threat: a context or an image whose symlinks point out of it, used to
//! read or write host files through COPY or `RUN --mount=type=bind`.
//! Every source path resolves inside its own root (the context, the
//! stage's or image's tree): a link that stays inside is followed there
//! (Docker's behaviour), one that points out is resolved as if the root
//! were `/`, so it finds nothing of the host. The "host" here is a
//! directory of the test's own temp dir, standing in for `/etc`.

mod common;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use common::{kiln, ok, text, umoci_unpack, BusyboxStore};

const SECRET: &str = "host-secret-7c1e\n";

/// A workspace with a "host" directory holding a secret file, and a
/// context directory with a Dockerfile.
struct Scene {
    store: BusyboxStore,
    host: PathBuf,
    context: PathBuf,
}

fn scene(dockerfile: &str) -> Scene {
    let store = common::busybox_workspace();
    let host = store.work.join("host-etc");
    fs::create_dir_all(&host).unwrap();
    fs::write(host.join("shadow"), SECRET).unwrap();
    let context = store.work.join("ctx");
    fs::create_dir_all(context.join("sub")).unwrap();
    fs::write(context.join("sub/f.txt"), "inside\n").unwrap();
    fs::write(context.join("Dockerfile"), dockerfile).unwrap();
    Scene {
        store,
        host,
        context,
    }
}

impl Scene {
    fn build(&self, tag: &str) -> std::process::Output {
        kiln(
            &self.store.root,
            &["build", "-t", tag, self.context.to_str().unwrap()],
        )
    }

    /// Builds `tag`, which must fail naming `needle`, and with no trace
    /// of the secret anywhere in its output.
    fn refused(&self, tag: &str, needle: &str) {
        let out = self.build(tag);
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "the build must fail:\n{stderr}");
        assert!(stderr.contains(needle), "{needle:?} not in:\n{stderr}");
        assert!(!stderr.contains(SECRET.trim()), "{stderr}");
    }

    fn rootfs(&self, tag: &str) -> PathBuf {
        umoci_unpack(&self.store.root, tag, &self.store.work.join(tag))
    }

    /// Imports a one-layer image `name` whose `/app` is a link to `target`
    /// (and that has `/real/f.txt` to link to inside it).
    fn image_with_app_link(&self, name: &str, target: &Path) {
        let mut tar = tar::Builder::new(Vec::new());
        let mut dir = tar::Header::new_gnu();
        dir.set_entry_type(tar::EntryType::Directory);
        dir.set_mode(0o755);
        dir.set_size(0);
        tar.append_data(&mut dir, "real/", std::io::empty())
            .unwrap();
        let mut file = tar::Header::new_gnu();
        file.set_entry_type(tar::EntryType::Regular);
        file.set_mode(0o644);
        file.set_size(7);
        tar.append_data(&mut file, "real/f.txt", &b"in-img\n"[..])
            .unwrap();
        for (link, to) in [("app", target), ("inner", Path::new("/real"))] {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_mode(0o777);
            header.set_size(0);
            tar.append_link(&mut header, link, to).unwrap();
        }
        let path = self.store.work.join(format!("{name}.tar"));
        fs::write(&path, tar.into_inner().unwrap()).unwrap();
        ok(kiln(
            &self.store.root,
            &["import", path.to_str().unwrap(), name],
        ));
    }
}

#[test]
fn copy_through_an_absolute_directory_link_finds_nothing_of_the_host() {
    let s = scene("FROM busybox\nCOPY etcdir/shadow /x\n");
    symlink(&s.host, s.context.join("etcdir")).unwrap();
    s.refused("abs", "\"etcdir/shadow\": no such file or directory");
}

#[test]
fn copy_through_a_relative_link_that_climbs_out_finds_nothing() {
    let s = scene("FROM busybox\nCOPY up/host-etc/shadow /x\n");
    symlink("../..", s.context.join("sub/deep")).unwrap();
    symlink("sub/deep", s.context.join("up")).unwrap();
    s.refused("rel", "\"up/host-etc/shadow\": no such file or directory");
}

#[test]
fn copy_of_a_file_link_to_the_host_finds_nothing() {
    let s = scene("FROM busybox\nCOPY s /x\n");
    symlink(s.host.join("shadow"), s.context.join("s")).unwrap();
    s.refused("file-link", "\"s\": no such file or directory");
}

#[test]
fn a_link_to_its_own_name_as_the_host_path_is_a_clear_loop_error() {
    // `etc -> /etc` inside the context is the context's etc: itself.
    let s = scene("FROM busybox\nCOPY etc/shadow /x\n");
    symlink("/etc", s.context.join("etc")).unwrap();
    s.refused(
        "loop",
        "COPY source \"etc/shadow\": too many levels of symbolic links in the build context",
    );
}

#[test]
fn wildcards_never_list_a_host_directory() {
    let s = scene("FROM busybox\nCOPY etcdir/sha* /x/\n");
    symlink(&s.host, s.context.join("etcdir")).unwrap();
    s.refused("glob", "\"etcdir/sha*\": no such file or directory");
}

#[test]
fn links_that_resolve_inside_the_context_are_followed_there() {
    let s = scene(
        "FROM busybox\nCOPY alias/f.txt /a\nCOPY abs/f.txt /b\nCOPY flink /c\nCOPY alias/*.txt /d/\n",
    );
    symlink("sub", s.context.join("alias")).unwrap();
    // Absolute: the context is `/` for its own links.
    symlink("/sub", s.context.join("abs")).unwrap();
    symlink("alias/f.txt", s.context.join("flink")).unwrap();
    let out = s.build("inside");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rootfs = s.rootfs("inside");
    for file in ["a", "b", "c", "d/f.txt"] {
        assert_eq!(
            fs::read_to_string(rootfs.join(file)).unwrap(),
            "inside\n",
            "{file}"
        );
    }
}

#[test]
fn copy_from_an_image_whose_directory_links_to_the_host_finds_nothing() {
    let s = scene("FROM busybox\nCOPY --from=evil /app/shadow /x\n");
    s.image_with_app_link("evil", &s.host);
    s.refused("from-image", "\"/app/shadow\": no such file or directory");

    // A link inside the image is followed inside it.
    fs::write(
        s.context.join("Dockerfile"),
        "FROM busybox\nCOPY --from=evil /inner/f.txt /y\n",
    )
    .unwrap();
    let out = s.build("from-image-inside");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        fs::read_to_string(s.rootfs("from-image-inside").join("y")).unwrap(),
        "in-img\n"
    );
}

#[test]
fn bind_mount_of_a_link_to_a_host_file_shows_nothing_of_it() {
    let s = scene("FROM busybox\nRUN --mount=type=bind,source=s,target=/m cat /m > /out\n");
    symlink(s.host.join("shadow"), s.context.join("s")).unwrap();
    s.refused("bind-file", "\"s\"");
}

#[test]
fn bind_mount_through_a_directory_link_in_the_middle_shows_nothing() {
    let s =
        scene("FROM busybox\nRUN --mount=type=bind,source=dir/shadow,target=/m cat /m > /out\n");
    symlink(&s.host, s.context.join("dir")).unwrap();
    s.refused("bind-middle", "\"dir/shadow\"");
}

#[test]
fn rw_bind_mounts_never_write_to_the_host() {
    let s = scene(
        "FROM busybox\n\
         RUN --mount=type=bind,source=s,target=/m,rw sh -c 'echo pwned > /m' || true\n\
         RUN --mount=type=bind,source=d,target=/m,rw sh -c 'echo pwned > /m/planted' || true\n\
         RUN --mount=type=bind,target=/ctx,rw sh -c 'echo pwned > /ctx/s; echo pwned > /ctx/d/planted2' || true\n",
    );
    symlink(s.host.join("shadow"), s.context.join("s")).unwrap();
    symlink(&s.host, s.context.join("d")).unwrap();
    let _ = s.build("rw");
    assert_eq!(fs::read_to_string(s.host.join("shadow")).unwrap(), SECRET);
    assert!(!s.host.join("planted").exists());
    assert!(!s.host.join("planted2").exists());
}

#[test]
fn rw_bind_mounts_follow_inside_links_and_discard_writes() {
    let s = scene(
        "FROM busybox\n\
         RUN --mount=type=bind,source=alias,target=/m,rw sh -c 'cat /m/f.txt > /saw; echo scribble > /m/f.txt; cat /m/f.txt > /saw2; readlink /m/rel > /link'\n\
         RUN --mount=type=bind,source=alias/f.txt,target=/f cat /f > /saw3\n",
    );
    symlink("sub", s.context.join("alias")).unwrap();
    symlink("f.txt", s.context.join("sub/rel")).unwrap();
    let out = s.build("rw-inside");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rootfs = s.rootfs("rw-inside");
    let read = |f: &str| fs::read_to_string(rootfs.join(f)).unwrap();
    assert_eq!(read("saw"), "inside\n");
    assert_eq!(read("saw2"), "scribble\n");
    assert_eq!(read("link"), "f.txt\n", "links inside are copied as links");
    assert_eq!(read("saw3"), "inside\n");
    assert_eq!(
        fs::read_to_string(s.context.join("sub/f.txt")).unwrap(),
        "inside\n",
        "rw writes are discarded"
    );
}

#[test]
fn bind_mount_from_an_image_whose_directory_links_to_the_host_shows_nothing() {
    let s = scene(
        "FROM busybox\nRUN --mount=type=bind,from=evil,source=/app/shadow,target=/m cat /m > /out\n",
    );
    s.image_with_app_link("evil", &s.host);
    s.refused("bind-image", "\"/app/shadow\"");

    fs::write(
        s.context.join("Dockerfile"),
        "FROM busybox\nRUN --mount=type=bind,from=evil,source=/inner,target=/m,rw sh -c 'cat /m/f.txt > /out; echo x > /m/f.txt'\n",
    )
    .unwrap();
    let out = s.build("bind-image-inside");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        fs::read_to_string(s.rootfs("bind-image-inside").join("out")).unwrap(),
        "in-img\n"
    );
}

/// A context that holds a decoy at the host path its link names, so the
/// link resolves inside the context: the mount must show the decoy, as
/// the cache key hashed it, and never the host file the same path names
/// on the host.
fn decoy_behind_absolute_link(s: &Scene) {
    let inside = s.context.join(s.host.strip_prefix("/").unwrap());
    fs::create_dir_all(&inside).unwrap();
    fs::write(inside.join("shadow"), "decoy\n").unwrap();
    symlink(s.host.join("shadow"), s.context.join("s")).unwrap();
}

#[test]
fn bind_mount_of_an_absolute_link_shows_the_context_not_the_host() {
    let s = scene("FROM busybox\nRUN --mount=type=bind,source=s,target=/m cat /m > /out\n");
    decoy_behind_absolute_link(&s);
    let out = s.build("decoy");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        fs::read_to_string(s.rootfs("decoy").join("out")).unwrap(),
        "decoy\n"
    );
}

#[test]
fn rw_bind_mount_of_an_absolute_link_never_writes_the_host_file() {
    let s = scene(
        "FROM busybox\nRUN --mount=type=bind,source=s,target=/m,rw sh -c 'cat /m > /out; echo pwned > /m'\n",
    );
    decoy_behind_absolute_link(&s);
    let out = s.build("decoy-rw");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(fs::read_to_string(s.host.join("shadow")).unwrap(), SECRET);
    assert_eq!(
        fs::read_to_string(s.rootfs("decoy-rw").join("out")).unwrap(),
        "decoy\n"
    );
}
