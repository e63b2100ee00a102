//! `kiln build` end to end on a busybox base imported from Debian's
//! busybox-static: the image it writes is unpacked by umoci and compared
//! with what the Dockerfile says; reproducibility, bad input.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::{busybox_rootfs, kiln, kiln_env, ok, text, umoci_unpack};

const DOCKERFILE: &str = r#"FROM busybox AS build
WORKDIR /app
COPY src/ ./src/
COPY --chmod=0755 src/a.txt /usr/local/bin/tool
COPY --chown=nobody:nogroup src/*.txt /owned/
COPY --chmod=u+x,go-r src/sub/b.txt /app/
FROM scratch
COPY --from=build /app /app
COPY <<EOF /greeting
hello ${NAME:-world}
EOF
ENV A=1
LABEL from=dockerfile
CMD ["/app/src/a.txt"]
"#;

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    context: PathBuf,
    work: PathBuf,
}

fn fixture(epoch: Option<&str>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().to_owned();
    let root = work.join("store");
    let rootfs = busybox_rootfs(&work);
    let env: Vec<(&str, &str)> = epoch
        .map(|e| ("SOURCE_DATE_EPOCH", e))
        .into_iter()
        .collect();
    ok(kiln_env(
        &root,
        &["import", rootfs.to_str().unwrap(), "busybox"],
        &env,
    ));
    let context = work.join("context");
    fs::create_dir_all(context.join("src/sub")).unwrap();
    fs::write(context.join("src/a.txt"), "a\n").unwrap();
    fs::write(context.join("src/sub/b.txt"), "b\n").unwrap();
    std::os::unix::fs::symlink("a.txt", context.join("src/link")).unwrap();
    fs::write(context.join("Dockerfile"), DOCKERFILE).unwrap();
    Fixture {
        _dir: dir,
        root,
        context,
        work,
    }
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn builds_an_image_that_umoci_unpacks_as_the_dockerfile_says() {
    let f = fixture(None);
    let iid = f.work.join("iid");
    let digest = ok(kiln(
        &f.root,
        &[
            "build",
            "-t",
            "app",
            "-t",
            "app:2",
            "--label",
            "extra=yes",
            "--iidfile",
            iid.to_str().unwrap(),
            f.context.to_str().unwrap(),
        ],
    ));
    assert_eq!(fs::read_to_string(&iid).unwrap(), digest.trim());

    let rootfs = umoci_unpack(&f.root, "app", &f.work.join("app"));
    assert_eq!(
        fs::read_to_string(rootfs.join("app/src/a.txt")).unwrap(),
        "a\n"
    );
    assert_eq!(
        fs::read_to_string(rootfs.join("app/src/sub/b.txt")).unwrap(),
        "b\n"
    );
    assert_eq!(
        fs::read_link(rootfs.join("app/src/link")).unwrap(),
        Path::new("a.txt")
    );
    assert_eq!(
        fs::read_to_string(rootfs.join("greeting")).unwrap(),
        "hello world\n"
    );
    // chmod u+x,go-r on a 0644 file.
    assert_eq!(mode(&rootfs.join("app/b.txt")), 0o700);
    assert!(
        !rootfs.join("bin").exists(),
        "the final stage is FROM scratch"
    );

    let inspect: serde_json::Value =
        serde_json::from_str(&ok(kiln(&f.root, &["inspect", "app:2"]))).unwrap();
    let config = &inspect[0]["ImageConfig"];
    // docker's shape too: Config is the runtime config, with docker's
    // defaults for what the image does not set.
    for (key, value) in config["config"].as_object().unwrap() {
        assert_eq!(&inspect[0]["Config"][key], value, "{key}");
    }
    assert_eq!(inspect[0]["Config"]["OnBuild"], serde_json::Value::Null);
    assert_eq!(inspect[0]["Config"]["User"], "");
    assert_eq!(
        ok(kiln(
            &f.root,
            &[
                "inspect",
                "-f",
                "{{.Config.Cmd}} {{json .RepoTags}}",
                "app:2"
            ]
        )),
        "[/app/src/a.txt] [\"app:latest\",\"app:2\"]\n"
    );
    // FROM scratch starts with BuildKit's default PATH.
    assert_eq!(
        config["config"]["Env"],
        serde_json::json!([
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "A=1"
        ])
    );
    assert_eq!(
        config["config"]["Cmd"],
        serde_json::json!(["/app/src/a.txt"])
    );
    assert_eq!(
        config["config"]["Labels"],
        serde_json::json!({"extra": "yes", "from": "dockerfile"})
    );
    // Every history entry that is not empty_layer has a layer.
    let layers = config["rootfs"]["diff_ids"].as_array().unwrap().len();
    let with_layer = config["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["empty_layer"] != true)
        .count();
    assert_eq!((layers, with_layer), (2, 2), "{config:#}");

    // `kiln history`: newest first, one row per history entry, the image
    // id on the top row, sizes only on the steps that made a layer.
    let history = ok(kiln(&f.root, &["history", "--no-trunc", "app"]));
    let rows: Vec<&str> = history.lines().skip(1).collect();
    assert_eq!(rows.len(), 5, "{history}");
    assert!(rows[0].starts_with(&inspect[0]["Id"].as_str().unwrap()[7..19]));
    assert!(rows[0].contains("CMD [\"/app/src/a.txt\"]"), "{history}");
    // created_by as BuildKit writes it.
    assert!(
        rows[3].contains("COPY <<heredoc  /greeting # buildkit"),
        "{history}"
    );
    assert!(rows[3].contains("kB"), "{history}");
    assert!(rows[2].contains(" 0B "), "{history}");
    assert!(rows[4].starts_with("<missing>"), "{history}");
    assert!(rows[4].contains("COPY /app /app # buildkit"), "{history}");
}

#[test]
fn the_build_stage_keeps_base_directories_and_resolves_owner_names() {
    let f = fixture(None);
    ok(kiln(
        &f.root,
        &[
            "build",
            "--target",
            "build",
            "-t",
            "b",
            f.context.to_str().unwrap(),
        ],
    ));
    let rootfs = umoci_unpack(&f.root, "b", &f.work.join("b"));
    // COPY into /usr/local/bin must not reset the base image's /tmp or /.
    assert_eq!(mode(&rootfs.join("tmp")), 0o1777);
    assert_eq!(mode(&rootfs.join("usr/local/bin/tool")), 0o755);
    let owned = fs::metadata(rootfs.join("owned/a.txt")).unwrap();
    assert_eq!((owned.uid(), owned.gid()), (65534, 65534));
    assert!(rootfs.join("bin/busybox").is_file());
    assert_eq!(
        fs::read_to_string(rootfs.join("app/src/a.txt")).unwrap(),
        "a\n"
    );
}

#[test]
fn same_inputs_give_the_same_digest_in_two_stores() {
    let digests: Vec<String> = (0..2)
        .map(|_| {
            let f = fixture(Some("1700000000"));
            ok(kiln_env(
                &f.root,
                &["build", "-t", "app", f.context.to_str().unwrap()],
                &[("SOURCE_DATE_EPOCH", "1700000000")],
            ))
        })
        .collect();
    assert_eq!(digests[0], digests[1]);
}

#[test]
fn run_without_a_shell_is_a_clear_error_and_tags_nothing() {
    let f = fixture(None);
    fs::write(
        f.context.join("Dockerfile"),
        "FROM scratch\nCOPY src/a.txt /\nRUN echo hi\n",
    )
    .unwrap();
    let out = kiln(&f.root, &["build", "-t", "x", f.context.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("Dockerfile:3: RUN echo hi: cannot execute \"/bin/sh\""),
        "{stderr}"
    );
    let images = ok(kiln(&f.root, &["images"]));
    assert!(
        !images.lines().any(|l| l.starts_with("x ")),
        "nothing tagged: {images}"
    );
}

#[test]
fn a_bad_name_fails_the_build_before_any_step_runs() {
    let f = fixture(None);
    fs::write(
        f.context.join("Dockerfile"),
        "FROM scratch\nCOPY src/a.txt /\n",
    )
    .unwrap();
    let context = f.context.to_str().unwrap();
    let out = kiln(
        &f.root,
        &["build", "-t", "ok", "-t", "MyApp:latest", context],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("MyApp:latest"), "{stderr}");
    assert!(!stderr.contains("COPY src/a.txt"), "a step ran: {stderr}");
    // Nor does a digest in a name: the build makes the digest.
    let named = format!("x@sha256:{}", "0".repeat(64));
    let out = kiln(&f.root, &["build", "-t", &named, context]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("cannot hold a digest"), "{stderr}");
    assert!(!stderr.contains("COPY src/a.txt"), "a step ran: {stderr}");
    // Not even the good name was given, and nothing was cached.
    let images = ok(kiln(&f.root, &["images"]));
    assert!(!images.lines().any(|l| l.starts_with("ok ")), "{images}");
    let steps = f.root.join("kiln/cache/steps");
    assert!(!steps.exists() || fs::read_dir(&steps).unwrap().count() == 0);
}

#[test]
fn a_missing_target_is_the_files_problem_not_line_0s() {
    let f = fixture(None);
    fs::write(
        f.context.join("Dockerfile"),
        "FROM scratch AS a\nCOPY src/a.txt /\n",
    )
    .unwrap();
    let context = f.context.to_str().unwrap();
    let out = kiln(&f.root, &["build", "--target", "nope", context]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("Dockerfile: target stage \"nope\" could not be found"),
        "{stderr}"
    );
    assert!(!stderr.contains(":0"), "{stderr}");
}

#[test]
fn bad_sources_and_missing_bases_are_clear_errors() {
    let f = fixture(None);
    let cases = [
        (
            "FROM busybox\nCOPY ../secret /\n",
            "Dockerfile:2: COPY source \"../secret\" is outside the build context",
        ),
        (
            "FROM busybox\nCOPY nope.txt /\n",
            "Dockerfile:2: COPY source \"nope.txt\": no such file or directory in the build context",
        ),
        // A wildcard matching nothing is no error (BuildKit), but the
        // directory it is matched in must exist.
        ("FROM busybox\nCOPY nodir/*.md /\n", "no such file or directory"),
        // Not pulled: the tests may reach 127.0.0.1 only.
        (
            "FROM nothere:1\n",
            "image nothere:1: is not in the store and cannot be pulled: docker.io: not an allowed registry",
        ),
        (
            "FROM busybox\nCOPY --chown=ghost src/a.txt /\n",
            "no user \"ghost\" in the image's /etc/passwd",
        ),
    ];
    for (dockerfile, needle) in cases {
        fs::write(f.context.join("Dockerfile"), dockerfile).unwrap();
        let out = kiln(&f.root, &["build", f.context.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{dockerfile}");
        let stderr = text(&out.stderr);
        assert!(stderr.contains(needle), "{dockerfile}: {stderr}");
    }
    // Nothing half-written is left in the store's scratch space.
    let tmp = f.root.join("kiln/tmp");
    assert!(!tmp.exists() || fs::read_dir(&tmp).unwrap().count() == 0);
}

#[test]
fn the_readme_examples_build() {
    let f = fixture(None);
    let hello = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/hello");
    ok(kiln(
        &f.root,
        &["build", "-t", "hello", hello.to_str().unwrap()],
    ));
    let rootfs = umoci_unpack(&f.root, "hello", &f.work.join("hello"));
    assert_eq!(
        fs::read_to_string(rootfs.join("greeting.txt")).unwrap(),
        "HELLO FROM KILN\n",
        "the RUN heredoc upper-cased it"
    );

    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/static");
    ok(kiln(
        &f.root,
        &["build", "-t", "static", example.to_str().unwrap()],
    ));
    let rootfs = umoci_unpack(&f.root, "static", &f.work.join("static"));
    let index = fs::read_to_string(rootfs.join("var/www/index.html")).unwrap();
    assert!(index.contains("built by kiln") || index.contains("kiln"));
    assert_eq!(
        fs::read_to_string(rootfs.join("var/www/version.txt")).unwrap(),
        "built by kiln from busybox:latest\n"
    );
    assert_eq!(mode(&rootfs.join("var/www")) & 0o055, 0o055, "go+rX");
}

#[test]
fn outputs_and_metadata_file() {
    let f = fixture(None);
    let local = f.work.join("out-local");
    let oci = f.work.join("out.oci.tar");
    let rootfs_tar = f.work.join("out.tar");
    let metadata = f.work.join("meta.json");
    let context = f.context.to_str().unwrap();
    let digest = ok(kiln(
        &f.root,
        &[
            "build",
            "-t",
            "app",
            "--metadata-file",
            metadata.to_str().unwrap(),
            "-o",
            local.to_str().unwrap(),
            context,
        ],
    ));
    assert_eq!(
        fs::read_to_string(local.join("greeting")).unwrap(),
        "hello world\n"
    );
    let meta: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&metadata).unwrap()).unwrap();
    assert_eq!(meta["containerimage.digest"], digest.trim());
    assert_eq!(meta["image.name"], "app");

    ok(kiln(
        &f.root,
        &[
            "build",
            "-t",
            "app",
            "--output",
            &format!("type=oci,dest={}", oci.display()),
            context,
        ],
    ));
    let out = std::process::Command::new("skopeo")
        .args(["inspect", &format!("oci-archive:{}:app", oci.display())])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));

    ok(kiln(
        &f.root,
        &[
            "build",
            "--output",
            &format!("type=tar,dest={}", rootfs_tar.display()),
            context,
        ],
    ));
    let mut archive = tar::Archive::new(fs::File::open(&rootfs_tar).unwrap());
    let names: Vec<String> = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert!(
        names
            .iter()
            .any(|n| n.trim_start_matches("./") == "app/src/a.txt"),
        "{names:?}"
    );

    let out = kiln(&f.root, &["build", "--output", "type=s3,dest=x", context]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("unknown type"));
    // A registry output names where it goes.
    let out = kiln(
        &f.root,
        &["build", "--output", "type=registry,dest=x", context],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("name=REF is required"),
        "{}",
        text(&out.stderr)
    );
}

/// A tar with two files, compressed with `compression` (`""` for none).
fn small_archive(compression: &str, evil: bool) -> Vec<u8> {
    let entries: &[(&str, &[u8])] = if evil {
        &[("ok.txt", b"ok\n"), ("../../escape.txt", b"no\n")]
    } else {
        &[
            ("pkg/bin/tool", b"#!/bin/sh\n"),
            ("pkg/README", b"read me\n"),
        ]
    };
    let tar = common::raw_tar(entries, 0o755);
    use std::io::Write;
    match compression {
        "" => tar,
        "gzip" => {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(&tar).unwrap();
            gz.finish().unwrap()
        }
        "bzip2" => {
            let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
            bz.write_all(&tar).unwrap();
            bz.finish().unwrap()
        }
        "xz" => {
            let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 1);
            xz.write_all(&tar).unwrap();
            xz.finish().unwrap()
        }
        "zstd" => zstd::encode_all(&tar[..], 1).unwrap(),
        other => panic!("no compression {other}"),
    }
}

#[test]
fn add_extracts_local_archives_and_refuses_hostile_ones() {
    let f = fixture(None);
    fs::write(f.context.join("pkg.tar.gz"), small_archive("gzip", false)).unwrap();
    fs::write(f.context.join("plain.tar"), small_archive("", false)).unwrap();
    // Named without extensions: the compression is found from the content.
    for kind in ["bzip2", "xz", "zstd"] {
        fs::write(f.context.join(kind), small_archive(kind, false)).unwrap();
    }
    fs::write(
        f.context.join("Dockerfile"),
        "FROM scratch\nADD pkg.tar.gz /opt/\nADD plain.tar /plain\nADD --unpack=false plain.tar /kept/\nADD src/a.txt /a.txt\nADD bzip2 xz zstd /more/\n",
    )
    .unwrap();
    ok(kiln(
        &f.root,
        &["build", "-t", "added", f.context.to_str().unwrap()],
    ));
    let rootfs = umoci_unpack(&f.root, "added", &f.work.join("added"));
    assert_eq!(
        fs::read_to_string(rootfs.join("opt/pkg/README")).unwrap(),
        "read me\n"
    );
    assert_eq!(mode(&rootfs.join("opt/pkg/bin/tool")), 0o755);
    assert!(rootfs.join("plain/pkg/bin/tool").is_file());
    assert!(
        rootfs.join("kept/plain.tar").is_file(),
        "--unpack=false copies the archive"
    );
    assert_eq!(fs::read_to_string(rootfs.join("a.txt")).unwrap(), "a\n");
    assert_eq!(
        fs::read_to_string(rootfs.join("more/pkg/README")).unwrap(),
        "read me\n"
    );
    assert!(
        !rootfs.join("more/xz").exists(),
        "archives are extracted, not copied"
    );

    fs::write(f.context.join("evil.tar"), small_archive("", true)).unwrap();
    fs::write(
        f.context.join("Dockerfile"),
        "FROM scratch\nADD evil.tar /x/\n",
    )
    .unwrap();
    let out = kiln(&f.root, &["build", f.context.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("Dockerfile:2:") && stderr.contains("leaves the destination"),
        "{stderr}"
    );
}

#[test]
fn the_stat_cache_spares_unchanged_files_and_rereads_edited_ones() {
    let f = fixture(None);
    // Older than the racy-clean margin, so the cache may vouch for them.
    let old = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_600_000_000);
    for name in ["src/a.txt", "src/sub/b.txt"] {
        let file = fs::File::options()
            .write(true)
            .open(f.context.join(name))
            .unwrap();
        file.set_modified(old).unwrap();
    }
    fs::write(
        f.context.join("Dockerfile"),
        "FROM scratch\nCOPY src /src\n",
    )
    .unwrap();
    let build = || {
        let out = kiln(&f.root, &["build", f.context.to_str().unwrap()]);
        let stderr = text(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        let line = stderr
            .lines()
            .find(|l| l.contains(" hashed, "))
            .and_then(|l| l.split(" in ").next())
            .unwrap_or_default()
            .to_owned();
        (text(&out.stdout), line)
    };
    let (first, report) = build();
    assert_eq!(report, "#2 2 files hashed, 0 unchanged, 4B read");
    let (second, report) = build();
    assert_eq!(report, "#2 2 files hashed, 2 unchanged, 0B read");
    assert_eq!(first, second);
    fs::write(f.context.join("src/a.txt"), "A\n").unwrap();
    let (third, report) = build();
    assert_eq!(report, "#2 2 files hashed, 1 unchanged, 2B read");
    assert_ne!(third, first);
    // One file is one file.
    fs::write(
        f.context.join("Dockerfile"),
        "FROM scratch\nCOPY src/a.txt /a\n",
    )
    .unwrap();
    let (_, report) = build();
    assert!(report.starts_with("#2 1 file hashed, "), "{report}");
}

/// The paths in the last layer of image `name`.
fn last_layer_paths(root: &Path, name: &str) -> Vec<String> {
    let layers = common::image_layers(root, name);
    let mut archive = tar::Archive::new(&layers.last().unwrap()[..]);
    archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect()
}

#[test]
fn copy_link_layers_carry_their_own_parent_directories() {
    let f = fixture(None);
    for (name, flag) in [("plain", ""), ("linked", "--link ")] {
        fs::write(
            f.context.join("Dockerfile"),
            format!("FROM busybox\nCOPY {flag}src/a.txt /etc/kiln/a.txt\n"),
        )
        .unwrap();
        ok(kiln(
            &f.root,
            &["build", "-t", name, f.context.to_str().unwrap()],
        ));
    }
    // busybox has /etc: a plain COPY writes it with the base's metadata
    // (as BuildKit's differ writes the parents of what changed, and a
    // snapshot of the layer alone needs them for overlayfs), a linked one
    // cannot know it is there and makes it.
    assert_eq!(
        last_layer_paths(&f.root, "plain"),
        ["etc/", "etc/kiln/", "etc/kiln/a.txt"]
    );
    assert_eq!(
        last_layer_paths(&f.root, "linked"),
        ["etc/", "etc/kiln/", "etc/kiln/a.txt"]
    );
    let rootfs = umoci_unpack(&f.root, "linked", &f.work.join("linked"));
    assert_eq!(
        fs::read_to_string(rootfs.join("etc/kiln/a.txt")).unwrap(),
        "a\n"
    );
    assert!(
        rootfs.join("etc/passwd").is_file(),
        "the base is still there"
    );
}

#[test]
fn dockerignore_hides_files_from_copy_and_the_dockerfiles_own_wins() {
    let f = fixture(None);
    let ctx = &f.context;
    fs::create_dir_all(ctx.join("logs")).unwrap();
    fs::write(ctx.join("logs/today.log"), "noise\n").unwrap();
    fs::write(ctx.join("logs/keep.txt"), "kept\n").unwrap();
    fs::write(ctx.join("src/scratch.tmp"), "tmp\n").unwrap();
    fs::write(
        ctx.join(".dockerignore"),
        "logs\n**/*.tmp\n!logs/keep.txt\n",
    )
    .unwrap();
    fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY . /ctx/\n").unwrap();
    ok(kiln(
        &f.root,
        &["build", "-t", "ignored", ctx.to_str().unwrap()],
    ));
    let rootfs = umoci_unpack(&f.root, "ignored", &f.work.join("ignored"));
    assert!(rootfs.join("ctx/src/a.txt").is_file());
    assert!(!rootfs.join("ctx/src/scratch.tmp").exists());
    assert!(!rootfs.join("ctx/logs/today.log").exists());
    assert_eq!(
        fs::read_to_string(rootfs.join("ctx/logs/keep.txt")).unwrap(),
        "kept\n",
        "a ! pattern brings a file back"
    );

    // Naming an excluded file is an error, as in BuildKit.
    fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY src/scratch.tmp /x\n",
    )
    .unwrap();
    let out = kiln(&f.root, &["build", ctx.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("scratch.tmp"),
        "{}",
        text(&out.stderr)
    );

    // <Dockerfile>.dockerignore beside the Dockerfile takes precedence.
    fs::write(ctx.join("other.Dockerfile"), "FROM scratch\nCOPY . /ctx/\n").unwrap();
    fs::write(ctx.join("other.Dockerfile.dockerignore"), "src\n").unwrap();
    let dockerfile = ctx.join("other.Dockerfile");
    ok(kiln(
        &f.root,
        &[
            "build",
            "-t",
            "other",
            "-f",
            dockerfile.to_str().unwrap(),
            ctx.to_str().unwrap(),
        ],
    ));
    let rootfs = umoci_unpack(&f.root, "other", &f.work.join("other"));
    assert!(!rootfs.join("ctx/src").exists());
    assert!(rootfs.join("ctx/logs/today.log").is_file());
}

#[test]
fn whiteouts_in_an_image_never_reach_outside_its_tree() {
    let f = fixture(None);
    let victim_dir = f.work.join("victim");
    fs::create_dir_all(&victim_dir).unwrap();
    fs::write(victim_dir.join("victim"), "still here\n").unwrap();
    // A root filesystem whose symlink points out of it, and whiteouts and
    // an opaque marker that would act through it.
    let mut tar = tar::Builder::new(Vec::new());
    let mut link = tar::Header::new_gnu();
    link.set_entry_type(tar::EntryType::Symlink);
    link.set_size(0);
    link.set_mode(0o777);
    tar.append_link(&mut link, "escape", &victim_dir).unwrap();
    for name in ["escape/.wh.victim", "escape/.wh..wh..opq", "etc/.wh..."] {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(0);
        header.set_mode(0o644);
        tar.append_data(&mut header, name, std::io::empty())
            .unwrap();
    }
    let rootfs = f.work.join("evil.tar");
    fs::write(&rootfs, tar.into_inner().unwrap()).unwrap();
    ok(kiln(&f.root, &["import", rootfs.to_str().unwrap(), "evil"]));
    fs::write(
        f.context.join("Dockerfile"),
        "FROM scratch\nCOPY --from=evil / /copied/\n",
    )
    .unwrap();
    let _ = kiln(&f.root, &["build", f.context.to_str().unwrap()]);
    let out = f.work.join("local-out");
    fs::write(f.context.join("Dockerfile"), "FROM evil\n").unwrap();
    let _ = kiln(
        &f.root,
        &[
            "build",
            "-o",
            out.to_str().unwrap(),
            f.context.to_str().unwrap(),
        ],
    );
    assert_eq!(
        fs::read_to_string(victim_dir.join("victim")).unwrap(),
        "still here\n"
    );
    assert!(
        f.work.join("store").is_dir(),
        "the store's parent is untouched"
    );
}

/// A context directory `name` under the workspace with `dockerfile` and
/// `a.txt` in it.
fn copy_context(s: &common::BusyboxStore, name: &str, dockerfile: &str) -> PathBuf {
    let dir = s.work.join(name);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
    fs::write(dir.join("a.txt"), "a\n").unwrap();
    dir
}

/// Builds `context` as `tag` and returns the unpacked root filesystem.
fn build_and_unpack(s: &common::BusyboxStore, context: &Path, tag: &str) -> PathBuf {
    ok(kiln(
        &s.root,
        &["build", "-t", tag, context.to_str().unwrap()],
    ));
    umoci_unpack(&s.root, tag, &s.work.join(format!("{tag}-unpacked")))
}

/// Path, mode, uid and gid of each entry of layer `index` of image `name`.
fn layer_entries(root: &Path, name: &str, index: usize) -> Vec<(String, u32, u64, u64)> {
    let layers = common::image_layers(root, name);
    let mut archive = tar::Archive::new(&layers[index][..]);
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let h = e.header();
            (
                e.path().unwrap().display().to_string(),
                h.mode().unwrap(),
                h.uid().unwrap(),
                h.gid().unwrap(),
            )
        })
        .collect()
}

#[test]
fn copy_of_a_file_to_an_existing_directory_goes_inside_it() {
    let s = common::busybox_workspace();
    // RUN sees the stage through overlayfs, the image through umoci: both
    // must find the files inside the directories. The destinations' kind
    // is the stage's (base layers and earlier steps), and a symlink in the
    // image resolves inside the image.
    let ctx = copy_context(
        &s,
        "into-dir",
        "FROM busybox\n\
         WORKDIR /app\n\
         COPY a.txt /app\n\
         COPY <<EOF /app\n\
         heredoc\n\
         EOF\n\
         RUN mkdir /real && ln -s /real /link && ln -s ../real /tmp/rel\n\
         COPY a.txt /link\n\
         COPY a.txt /tmp/rel/b.txt\n\
         COPY a.txt /tmp/newfile\n\
         RUN test -f /app/a.txt && test -f /app/EOF && test -f /real/a.txt && test -L /link \
             && test -f /real/b.txt && test -L /tmp/rel && test -f /tmp/newfile\n",
    );
    let rootfs = build_and_unpack(&s, &ctx, "into-dir");
    assert_eq!(fs::read_to_string(rootfs.join("app/a.txt")).unwrap(), "a\n");
    assert_eq!(
        fs::read_to_string(rootfs.join("app/EOF")).unwrap(),
        "heredoc\n"
    );
    assert_eq!(
        fs::read_to_string(rootfs.join("real/a.txt")).unwrap(),
        "a\n"
    );
    assert_eq!(
        fs::read_link(rootfs.join("link")).unwrap(),
        Path::new("/real")
    );
    assert_eq!(
        fs::read_to_string(rootfs.join("real/b.txt")).unwrap(),
        "a\n"
    );
    assert!(rootfs.join("tmp/newfile").is_file());
}

#[test]
fn copy_keeps_the_mode_and_owner_of_parents_the_stage_has() {
    let s = common::busybox_workspace();
    let ctx = copy_context(
        &s,
        "parents",
        "FROM busybox\n\
         COPY a.txt /tmp/a\n\
         RUN mkdir -p /home/app && chown 1000:1000 /home/app && chmod 750 /home/app\n\
         COPY a.txt /home/app/x\n\
         COPY --chown=1000:1000 a.txt /new/deep/x\n\
         RUN stat -c '%n %a %u:%g' /tmp /home/app /new /new/deep /new/deep/x > /modes\n",
    );
    let rootfs = build_and_unpack(&s, &ctx, "parents");
    // What RUN saw (overlayfs over each layer's own snapshot).
    assert_eq!(
        fs::read_to_string(rootfs.join("modes")).unwrap(),
        "/tmp 1777 0:0\n/home/app 750 1000:1000\n/new 755 1000:1000\n\
         /new/deep 755 1000:1000\n/new/deep/x 644 1000:1000\n"
    );
    // What the image holds; the layer of `COPY a.txt /tmp/a` holds /tmp as
    // the base has it, as BuildKit's differ writes a changed file's parents.
    assert_eq!(mode(&rootfs.join("tmp")), 0o1777);
    assert_eq!(
        layer_entries(&s.root, "parents", 1),
        [
            ("tmp/".to_string(), 0o1777, 0, 0),
            ("tmp/a".to_string(), 0o644, 0, 0)
        ]
    );
    let home = fs::metadata(rootfs.join("home/app")).unwrap();
    assert_eq!(
        (home.uid(), home.gid(), home.mode() & 0o7777),
        (1000, 1000, 0o750)
    );
}

#[test]
fn copy_of_a_directory_leaves_an_existing_destination_alone() {
    let s = common::busybox_workspace();
    let ctx = copy_context(
        &s,
        "dir-modes",
        "FROM busybox\n\
         WORKDIR /app\n\
         COPY . .\n\
         COPY sub /newdir\n\
         COPY --chmod=0750 sub /chmodded\n\
         RUN stat -c '%n %a' /app /app/sub /app/sub/inner /newdir /newdir/inner \
             /chmodded /chmodded/inner /chmodded/inner/f > /modes\n",
    );
    fs::create_dir_all(ctx.join("sub/inner")).unwrap();
    fs::write(ctx.join("sub/inner/f"), "f\n").unwrap();
    fs::set_permissions(&ctx, fs::Permissions::from_mode(0o775)).unwrap();
    fs::set_permissions(ctx.join("sub"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::set_permissions(ctx.join("sub/inner"), fs::Permissions::from_mode(0o711)).unwrap();
    let rootfs = build_and_unpack(&s, &ctx, "dir-modes");
    // An existing destination keeps its mode; a missing one is made 0755
    // (as BuildKit's MkdirAll does, --chmod or not); what is inside keeps
    // its own mode, or takes --chmod's.
    assert_eq!(
        fs::read_to_string(rootfs.join("modes")).unwrap(),
        "/app 755\n/app/sub 700\n/app/sub/inner 711\n/newdir 755\n/newdir/inner 711\n\
         /chmodded 755\n/chmodded/inner 750\n/chmodded/inner/f 750\n"
    );
    assert_eq!(mode(&rootfs.join("app")), 0o755);
    assert_eq!(mode(&rootfs.join("newdir")), 0o755);
}

#[test]
fn copy_destinations_the_image_makes_impossible_are_clear_errors() {
    let s = common::busybox_workspace();
    // A base whose link would make the destination a whiteout name.
    let mut tar = tar::Builder::new(Vec::new());
    let mut link = tar::Header::new_gnu();
    link.set_entry_type(tar::EntryType::Symlink);
    link.set_size(0);
    link.set_mode(0o777);
    tar.append_link(&mut link, "hide", "/.wh.etc").unwrap();
    let rootfs = s.work.join("hostile.tar");
    fs::write(&rootfs, tar.into_inner().unwrap()).unwrap();
    ok(kiln(
        &s.root,
        &["import", rootfs.to_str().unwrap(), "hostile"],
    ));
    for (name, dockerfile, expected) in [
        (
            "into-file",
            "FROM busybox\nCOPY sub /etc/passwd\n",
            "/etc/passwd: it is not a directory",
        ),
        (
            "under-file",
            "FROM busybox\nCOPY a.txt /etc/passwd/x\n",
            "/etc/passwd: it is not a directory",
        ),
        ("whiteout", "FROM hostile\nCOPY a.txt /hide/\n", "whiteout"),
    ] {
        let ctx = copy_context(&s, name, dockerfile);
        fs::create_dir_all(ctx.join("sub")).unwrap();
        fs::write(ctx.join("sub/f"), "f\n").unwrap();
        let out = kiln(&s.root, &["build", ctx.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{name}: {}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains(expected),
            "{name}: {}",
            text(&out.stderr)
        );
    }
}

/// Path → (type, mode, uid, gid, link target) of every entry of a tar,
/// with the count of each path (a squash writes each once).
type TarIndex = BTreeMap<String, (tar::EntryType, u32, u64, u64, Option<String>)>;

fn tar_index(path: &Path) -> (TarIndex, BTreeMap<String, usize>) {
    let mut archive = tar::Archive::new(fs::File::open(path).unwrap());
    let mut index = TarIndex::new();
    let mut counts = BTreeMap::new();
    for entry in archive.entries().unwrap() {
        let entry = entry.unwrap();
        let h = entry.header();
        let name = entry.path().unwrap().display().to_string();
        let name = name.trim_end_matches('/').to_string();
        let link = entry.link_name().unwrap().map(|l| l.display().to_string());
        *counts.entry(name.clone()).or_insert(0) += 1;
        index.insert(
            name,
            (
                h.entry_type(),
                h.mode().unwrap() & 0o7777,
                h.uid().unwrap(),
                h.gid().unwrap(),
                link,
            ),
        );
    }
    (index, counts)
}

#[test]
fn output_tar_keeps_owners_modes_and_links_and_applies_whiteouts() {
    let s = common::busybox_workspace();
    let ctx = copy_context(
        &s,
        "squash",
        "FROM busybox\n\
         COPY --chown=1000:1000 a.txt /home/app/a.txt\n\
         RUN rm /etc/group && chown 0:42 /etc/passwd && chmod 640 /etc/passwd \
             && mkdir /data && chown 1000:1000 /data && chmod 700 /data \
             && ln /bin/busybox /bin/hardlinked && mkdir /gone && touch /gone/f\n\
         RUN rm -r /gone\n",
    );
    let out_tar = s.work.join("out.tar");
    ok(kiln(
        &s.root,
        &[
            "build",
            "-o",
            &format!("type=tar,dest={}", out_tar.display()),
            ctx.to_str().unwrap(),
        ],
    ));
    let (index, counts) = tar_index(&out_tar);
    let dupes: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dupes.is_empty(), "each path once: {dupes:?}");
    for name in index.keys() {
        assert!(
            !name.starts_with('/') && !name.split('/').any(|c| c == ".."),
            "{name}"
        );
    }
    let get = |p: &str| index.get(p).unwrap_or_else(|| panic!("{p} missing"));
    let owner = |p: &str| {
        let (_, mode, uid, gid, _) = get(p);
        (*mode, *uid, *gid)
    };
    assert_eq!(owner("home/app/a.txt"), (0o644, 1000, 1000));
    assert_eq!(owner("etc/passwd"), (0o640, 0, 42));
    assert_eq!(owner("data"), (0o700, 1000, 1000));
    assert_eq!(owner("tmp"), (0o1777, 0, 0));
    assert_eq!(owner("root"), (0o700, 0, 0));
    assert_eq!(get("bin/sh").0, tar::EntryType::Symlink);
    assert_eq!(get("bin/sh").4.as_deref(), Some("busybox"));
    // The hard link made in the RUN layer stays one (either way round).
    let (busybox, hardlinked) = (get("bin/busybox"), get("bin/hardlinked"));
    assert!(
        (busybox.0 == tar::EntryType::Link && busybox.4.as_deref() == Some("bin/hardlinked"))
            || (hardlinked.0 == tar::EntryType::Link
                && hardlinked.4.as_deref() == Some("bin/busybox")),
        "{busybox:?} {hardlinked:?}"
    );
    // Whiteouts applied, none written.
    assert!(!index.contains_key("etc/group"));
    assert!(!index.contains_key("gone") && !index.contains_key("gone/f"));
    assert!(!index.keys().any(|k| k.contains(".wh.")), "{index:?}");
}

#[test]
fn copy_from_a_stage_keeps_the_owners_it_has_there() {
    let s = common::busybox_workspace();
    let ctx = copy_context(
        &s,
        "from-owners",
        "FROM busybox AS a\n\
         RUN mkdir -p /d/sub && touch /d/sub/f && chown -R 1000:1001 /d && chown 42:43 /d/sub/f \
             && chmod 4750 /d/sub/f\n\
         FROM busybox\n\
         COPY --from=a /d /d\n\
         COPY --from=a /d/sub/f /f\n\
         RUN --mount=from=a,source=/d,target=/m stat -c '%n %u:%g' /d /d/sub /d/sub/f /f /m/sub/f > /owners \
             && stat -c %a /f >> /owners\n",
    );
    let rootfs = build_and_unpack(&s, &ctx, "from-owners");
    // Without --chown a copy keeps the source's owners (BuildKit); the
    // destination directory the copy makes is root's, as MkdirAll's.
    assert_eq!(
        fs::read_to_string(rootfs.join("owners")).unwrap(),
        "/d 0:0\n/d/sub 1000:1001\n/d/sub/f 42:43\n/f 42:43\n/m/sub/f 42:43\n4750\n",
        "owners, and the set-id bit a chown would clear"
    );
}

/// One `--chmod` grammar, the planner's: what plans also builds (a clause
/// with several actions, `u+x-w`, once passed planning and failed in the
/// builder), and what the builder cannot apply is a plan error at its line.
#[test]
fn chmod_with_several_actions_plans_and_builds() {
    let s = common::busybox_workspace();
    let ctx = copy_context(
        &s,
        "chmod",
        "FROM busybox\nCOPY --chmod=u+x-w,g=u,o= a.txt /a.txt\nCOPY --chmod=0750 a.txt /b.txt\n",
    );
    let rootfs = build_and_unpack(&s, &ctx, "chmodded");
    let mode = |p: &str| fs::metadata(rootfs.join(p)).unwrap().permissions().mode() & 0o7777;
    // 0644 (the context file) → u+x-w 0544 → g=u 0554 → o= 0550.
    assert_eq!(mode("a.txt"), 0o550);
    assert_eq!(mode("b.txt"), 0o750);

    let bad = copy_context(&s, "chmod-bad", "FROM busybox\nCOPY --chmod=u+q a.txt /a\n");
    let out = kiln(&s.root, &["build", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(":2") && stderr.contains("invalid --chmod"),
        "{stderr}"
    );
}

#[test]
fn workdir_makes_its_directory_owned_by_the_user() {
    // As BuildKit (differential case workdir-under-user): a directory
    // WORKDIR creates belongs to USER, by number or by a name from the
    // image's /etc/passwd; an existing one is left as it is.
    let f = fixture(None);
    fs::write(
        f.context.join("Dockerfile"),
        "FROM busybox\nUSER 1000:1001\nWORKDIR /numeric\nUSER nobody\nWORKDIR /named\nWORKDIR /tmp\n",
    )
    .unwrap();
    ok(kiln(
        &f.root,
        &["build", "-t", "wd", f.context.to_str().unwrap()],
    ));
    let rootfs = umoci_unpack(&f.root, "wd", &f.work.join("wd"));
    let owner = |p: &str| {
        let meta = fs::metadata(rootfs.join(p)).unwrap();
        (meta.uid(), meta.gid())
    };
    assert_eq!(owner("numeric"), (1000, 1001));
    assert_eq!(owner("named"), (65534, 65534));
    assert_eq!(owner("tmp"), (0, 0));
    assert_eq!(mode(&rootfs.join("tmp")), 0o1777);
    // WORKDIR of an existing directory is still a layer, the empty tar
    // (1024 zero bytes), as BuildKit writes it (case workdir-existing).
    let inspect: serde_json::Value =
        serde_json::from_str(&ok(kiln(&f.root, &["inspect", "wd"]))).unwrap();
    let config = &inspect[0]["ImageConfig"];
    let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
    assert_eq!(
        diff_ids.last().unwrap(),
        "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"
    );
    assert_eq!(diff_ids.len(), 4, "{config:#}");
    let last = config["history"].as_array().unwrap().last().unwrap();
    assert_eq!(last["created_by"], "WORKDIR /tmp");
    assert!(last.get("empty_layer").is_none(), "{last}");

    // A USER the image does not know cannot own the directory.
    fs::write(
        f.context.join("Dockerfile"),
        "FROM busybox\nUSER ghost\nWORKDIR /w\n",
    )
    .unwrap();
    let out = kiln(
        &f.root,
        &["build", "-t", "wd2", f.context.to_str().unwrap()],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no user \"ghost\" in the image's /etc/passwd"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn copy_keeps_hard_links_within_one_source_and_skips_empty_wildcards() {
    // As BuildKit (differential case hardlinks-copy-from, and a context
    // checked by hand): files of one copied directory that are one inode
    // stay one, from a stage or from the context; a wildcard matching
    // nothing copies nothing, not even the destination.
    let s = common::busybox_workspace();
    let ctx = copy_context(
        &s,
        "hardlinks",
        "FROM busybox AS src\n\
         RUN mkdir -p /tree/sub && echo x > /tree/f && ln /tree/f /tree/sub/g\n\
         FROM busybox\n\
         COPY --from=src /tree /copied\n\
         COPY linked /ctx/\n\
         COPY nomatch* /none/\n\
         RUN stat -c '%n %h' /copied/f /copied/sub/g /ctx/a /ctx/b > /links \
             && test \"$(stat -c %i /copied/f)\" = \"$(stat -c %i /copied/sub/g)\" \
             && test \"$(stat -c %i /ctx/a)\" = \"$(stat -c %i /ctx/b)\" && test ! -e /none\n",
    );
    fs::create_dir_all(ctx.join("linked")).unwrap();
    fs::write(ctx.join("linked/a"), "a\n").unwrap();
    fs::hard_link(ctx.join("linked/a"), ctx.join("linked/b")).unwrap();
    let rootfs = build_and_unpack(&s, &ctx, "hardlinks");
    assert_eq!(
        fs::read_to_string(rootfs.join("links")).unwrap(),
        "/copied/f 2\n/copied/sub/g 2\n/ctx/a 2\n/ctx/b 2\n"
    );
    let ino = |p: &str| fs::metadata(rootfs.join(p)).unwrap().ino();
    assert_eq!(ino("copied/f"), ino("copied/sub/g"));
    assert_eq!(ino("ctx/a"), ino("ctx/b"));
    assert!(!rootfs.join("none").exists());
}

/// `COPY --from` unpacks only what its sources reach, so it must still see
/// them through the stage's symlinks, find hard links' targets that lie
/// outside them, and match wildcards below their literal part.
#[test]
fn copy_from_reads_its_sources_through_links_hard_links_and_wildcards() {
    let s = common::busybox_workspace();
    let ctx = copy_context(
        &s,
        "from-subtrees",
        "FROM busybox AS a\n\
         RUN mkdir -p /real/sub /other /real/sea && echo linked > /other/f \
             && ln /other/f /real/sub/hard && echo own > /real/sub/own \
             && echo sea > /real/sea/s && ln -s /real /link && echo big > /other/unrelated\n\
         FROM busybox\n\
         COPY --from=a /link/sub /x\n\
         COPY --from=a /real/se* /y/\n\
         RUN cat /x/hard /x/own /y/s > /seen && ls /x /y >> /seen\n",
    );
    let rootfs = build_and_unpack(&s, &ctx, "from-subtrees");
    assert_eq!(
        fs::read_to_string(rootfs.join("seen")).unwrap(),
        "linked\nown\nsea\n/x:\nhard\nown\n\n/y:\ns\n"
    );
}

#[test]
fn a_stage_for_a_foreign_platform_warns_and_its_run_fails_without_an_emulator() {
    let f = fixture(None);
    // busybox here is the host's (amd64 on our machines); the stage asks
    // for another architecture.
    let foreign = if std::env::consts::ARCH == "aarch64" {
        "linux/amd64"
    } else {
        "linux/arm64"
    };
    let arch = foreign.trim_start_matches("linux/");
    fs::write(
        f.context.join("Dockerfile"),
        format!("FROM --platform={foreign} busybox\nENV A=1\nRUN uname -m\n"),
    )
    .unwrap();
    let out = kiln(
        &f.root,
        &["build", "--progress", "plain", f.context.to_str().unwrap()],
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "InvalidBaseImagePlatform: Base image busybox was pulled with platform \"linux/{}\", expected \"{foreign}\"",
            if arch == "amd64" { "arm64" } else { "amd64" }
        )),
        "{stderr}"
    );
    let qemu = if arch == "arm64" { "aarch64" } else { "x86_64" };
    let emulated = fs::read_to_string(format!("/proc/sys/fs/binfmt_misc/qemu-{qemu}"))
        .is_ok_and(|t| t.starts_with("enabled"));
    if emulated {
        eprintln!("an emulator for {arch} is registered here: the RUN may run");
        return;
    }
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("Dockerfile:3: RUN uname -m: the stage is for")
            && stderr.contains(&format!("no binfmt_misc emulator for {arch} is registered")),
        "{stderr}"
    );
}

#[test]
fn build_network_none_is_the_default_of_runs_that_do_not_choose() {
    let f = fixture(None);
    // The interfaces each RUN sees (reading /proc sends nothing).
    let list = "cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' ' | sort | tr '\\n' ' '";
    fs::write(
        f.context.join("Dockerfile"),
        format!(
            "FROM busybox\nRUN echo default: $({list})\nRUN --network=host echo host: $({list})\n"
        ),
    )
    .unwrap();
    let build = |extra: &[&str]| {
        let mut args = vec!["build", "--progress", "plain"];
        args.extend_from_slice(extra);
        args.push(f.context.to_str().unwrap());
        let out = kiln(&f.root, &args);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stderr)
    };
    let none = build(&["--network", "none"]);
    assert!(none.contains("\n#2 default: lo\n"), "{none}");
    // RUN --network=host keeps its own; on the host there is more than lo.
    let host_line = none.lines().find(|l| l.starts_with("#3 host: ")).unwrap();
    assert_ne!(host_line.trim_end(), "#3 host: lo", "{none}");
    // Another default network is another step (the cache key says so).
    let default = build(&[]);
    assert!(
        !default.contains("\n#2 default: lo\n") && default.contains("#2 default: "),
        "{default}"
    );
    let bad = kiln(
        &f.root,
        &["build", "--network", "bridge", f.context.to_str().unwrap()],
    );
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn check_runs_buildkits_dockerfile_checks_and_builds_nothing() {
    let f = fixture(None);
    fs::write(
        f.context.join("Dockerfile"),
        "# check=skip=MaintainerDeprecated\nFROM busybox as Build\nMAINTAINER me\nRUN touch /ran\nCMD echo hi\n",
    )
    .unwrap();
    let ctx = f.context.to_str().unwrap();
    let before = ok(kiln(&f.root, &["images", "-q"]));
    let out = kiln(&f.root, &["build", "--check", ctx]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for expected in [
        "Dockerfile:2: warning: FromAsCasing: 'as' and 'FROM' keywords' casing do not match (https://docs.docker.com/go/dockerfile/rule/from-as-casing/)",
        "Dockerfile:2: warning: StageNameCasing: Stage name 'Build' should be lowercase",
        "Dockerfile:5: warning: JSONArgsRecommended: JSON arguments recommended for CMD",
        "Check complete, 3 warnings have been found!",
    ] {
        assert!(stderr.contains(expected), "{expected}: {stderr}");
    }
    assert!(
        !stderr.contains("MaintainerDeprecated"),
        "skipped: {stderr}"
    );
    assert!(!stderr.contains("RUN touch"), "nothing ran: {stderr}");
    assert_eq!(
        ok(kiln(&f.root, &["images", "-q"])),
        before,
        "nothing built"
    );
    // --call check is the same; a clean Dockerfile passes.
    fs::write(
        f.context.join("Dockerfile"),
        "FROM busybox AS build\nCMD [\"sh\"]\n",
    )
    .unwrap();
    let out = kiln(&f.root, &["build", "--call", "check", ctx]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("Check complete, no warnings found."));
    // A plan error is an error, as in a build.
    fs::write(
        f.context.join("Dockerfile"),
        "FROM busybox\nCOPY --from=0 /a /b\n",
    )
    .unwrap();
    let out = kiln(&f.root, &["build", "--check", ctx]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("Dockerfile:2"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn add_host_puts_lines_in_the_hosts_file_of_every_run_and_in_its_key() {
    let f = fixture(None);
    fs::write(
        f.context.join("Dockerfile"),
        "FROM busybox\nRUN grep -wE 'db|cache' /etc/hosts\n",
    )
    .unwrap();
    let ctx = f.context.to_str().unwrap();
    let out = kiln(
        &f.root,
        &[
            "build",
            "--progress",
            "plain",
            "--add-host",
            "db:127.0.0.2",
            "--add-host",
            "cache=::1",
            ctx,
        ],
    );
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("#2 127.0.0.2\tdb\n#2 ::1\tcache\n"),
        "{stderr}"
    );
    // Another set of hosts is another step; none at all fails the grep.
    let out = kiln(
        &f.root,
        &[
            "build",
            "--progress",
            "plain",
            "--add-host",
            "db:127.0.0.3",
            ctx,
        ],
    );
    assert!(
        text(&out.stderr).contains("#2 127.0.0.3\tdb\n"),
        "{}",
        text(&out.stderr)
    );
    let out = kiln(&f.root, &["build", ctx]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let out = kiln(&f.root, &["build", "--add-host", "gw:host-gateway", ctx]);
    assert!(text(&out.stderr).contains("host-gateway needs a bridge network"));
    // kiln run takes it too.
    assert_eq!(
        ok(kiln(
            &f.root,
            &[
                "run",
                "--rm",
                "--network",
                "none",
                "--add-host",
                "db:127.0.0.2",
                "busybox",
                "tail",
                "-n",
                "1",
                "/etc/hosts"
            ],
        )),
        "127.0.0.2\tdb\n"
    );
}

/// `--build-context NAME=DIR|docker-image://REF` as BuildKit's: the name
/// stands in for a stage or an image of that name in FROM, `COPY --from`
/// and `RUN --mount=from=`; a directory's own `.dockerignore` applies, its
/// links stay links; the same files stay cached, a changed one is a miss.
#[test]
fn named_build_contexts_stand_for_stages_and_images() {
    let store = common::busybox_workspace();
    let (root, work) = (&store.root, &store.work);
    let context = work.join("ctx");
    let extra = work.join("extra");
    fs::create_dir_all(&context).unwrap();
    fs::create_dir_all(extra.join("sub")).unwrap();
    fs::write(extra.join("e.txt"), "extra\n").unwrap();
    fs::write(extra.join("sub/s.txt"), "s\n").unwrap();
    fs::write(extra.join("secret.txt"), "left out\n").unwrap();
    fs::write(extra.join(".dockerignore"), "secret.txt\n").unwrap();
    // A link out of the directory: copied as the link, never its target.
    let outside = work.join("outside.txt");
    fs::write(&outside, "HOST ONLY\n").unwrap();
    std::os::unix::fs::symlink(&outside, extra.join("out")).unwrap();
    ok(kiln(root, &["tag", "busybox", "other"]));
    fs::write(
        context.join("Dockerfile"),
        "FROM scratch AS src\n\
         FROM busybox AS base\n\
         RUN echo from-the-stage > /which\n\
         FROM base\n\
         COPY --from=src / /extra/\n\
         RUN --mount=from=src,target=/mnt cat /mnt/sub/s.txt > /mounted || true\n\
         RUN cat /which 2>/dev/null || echo stage-replaced; \
             test -e /extra/secret.txt || echo secret-left-out; \
             readlink /extra/out; cat /extra/out 2>/dev/null || echo link-not-followed\n",
    )
    .unwrap();
    let build = |extra_flags: &[&str]| {
        let mut args = vec!["build", "--progress", "plain", "-t", "named"];
        args.extend(extra_flags);
        args.push(context.to_str().unwrap());
        let out = kiln(root, &args);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stderr)
    };
    let flags = [
        "--build-context",
        &format!("src={}", extra.display()),
        "--build-context",
        "base=docker-image://other",
    ];
    // A line the steps printed (`#N WORD`), not the step's own header.
    let printed = |out: &str, word: &str| {
        out.lines()
            .any(|l| l.starts_with('#') && l.split_once(' ').is_some_and(|(_, rest)| rest == word))
    };
    let first = build(&flags);
    for expected in ["stage-replaced", "secret-left-out", "link-not-followed"] {
        assert!(printed(&first, expected), "{expected}: {first}");
    }
    assert!(first.contains(&outside.display().to_string()), "{first}");
    let files = ok(kiln(
        root,
        &[
            "run",
            "--rm",
            "named",
            "sh",
            "-c",
            "cat /extra/e.txt /mounted; stat -c %u /extra/e.txt",
        ],
    ));
    assert_eq!(files, "extra\ns\n0\n");
    // The same files: every step cached; one changed: the COPY misses.
    let again = build(&flags);
    assert_eq!(again.matches("CACHED").count(), 3, "{again}");
    fs::write(extra.join("e.txt"), "changed\n").unwrap();
    let changed = build(&flags);
    // (The COPY runs again, and the steps on it with it.)
    assert!(!changed.contains("CACHED"), "{changed}");
    assert_eq!(
        ok(kiln(root, &["run", "--rm", "named", "cat", "/extra/e.txt"])),
        "changed\n"
    );
    // Without the contexts, src is the empty stage and base the real one.
    let plain = build(&[]);
    assert!(printed(&plain, "from-the-stage"), "{plain}");
    assert!(!printed(&plain, "stage-replaced"), "{plain}");

    // Refused before any step runs, in one line.
    for (spec, message) in [
        ("nothing", "expected NAME=PATH"),
        (
            "x=https://example.invalid/ctx.tar",
            "https:// contexts are not supported yet",
        ),
        ("x=/no/such/dir", "is not a directory"),
        ("x=docker-image://Bad:Name", "--build-context"),
    ] {
        let out = kiln(
            root,
            &["build", "--build-context", spec, context.to_str().unwrap()],
        );
        assert_eq!(out.status.code(), Some(1), "{spec}");
        let stderr = text(&out.stderr);
        assert!(stderr.contains(message), "{spec}: {stderr}");
        assert!(!stderr.contains("#1"), "nothing ran: {stderr}");
    }
}
