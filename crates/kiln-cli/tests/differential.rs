//! The differential suite: every case under `testdata/differential/` is
//! built by kiln and by Docker's BuildKit (Debian's docker.io, a private
//! dockerd that scripts/test.sh starts with scripts/start-dockerd.sh) from
//! the same base image bytes, and the two images must agree: the final
//! filesystems entry by entry and the image configs and histories (see
//! `differential/image.rs` and `compare_config`). The cases and what each
//! covers are listed in `testdata/differential/README.md`.
//!
//! `KILN_DIFF_CASES=a,b` runs only those cases (their `tag=` parents are
//! always built). Without a daemon (`DOCKER_HOST` unset or not answering)
//! the suite skips, except in CI, where it fails.

mod common;
#[path = "differential/image.rs"]
mod image;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{ok, text};
use serde_json::Value;

/// Debian's docker.io client. /usr/local/bin/docker, where one exists, is
/// a different client and is never used.
const DOCKER: &str = "/usr/bin/docker";
/// Every image name the suite gives dockerd starts with 127.0.0.1:1/, so
/// that if BuildKit ever tried to pull one it would dial a refused local
/// port, never Docker Hub.
const BUSYBOX: &str = "127.0.0.1:1/kiln-diff/busybox:1";
const BASE_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn cases_dir() -> PathBuf {
    repo().join("testdata/differential")
}

/// True when no daemon answers and the test should return (it said so);
/// in CI that is a failure instead.
fn no_daemon() -> bool {
    let why = if !Path::new(DOCKER).exists() {
        Some(format!(
            "{DOCKER} not found (scripts/install-test-deps.sh installs docker.io)"
        ))
    } else if std::env::var_os("DOCKER_HOST").is_none() {
        Some("DOCKER_HOST is not set (scripts/test.sh starts a dockerd and sets it)".to_owned())
    } else {
        let out = Command::new(DOCKER).arg("version").output();
        match out {
            Ok(o) if o.status.success() => None,
            Ok(o) => Some(format!("docker version failed: {}", text(&o.stderr))),
            Err(e) => Some(format!("{DOCKER}: {e}")),
        }
    };
    let Some(why) = why else { return false };
    if std::env::var_os("CI").is_some() {
        panic!("differential suite: {why}; CI must run it");
    }
    eprintln!("skipped: differential suite: {why}");
    true
}

fn docker(args: &[&str]) -> Output {
    Command::new(DOCKER)
        .args(args)
        .env("DOCKER_BUILDKIT", "1")
        .output()
        .unwrap()
}

/// What a case's Dockerfile asks of the harness, in comment lines of the
/// form `# diff: KEY=VALUE` (comments to both builders).
#[derive(Default, Debug)]
struct Case {
    name: String,
    dir: PathBuf,
    /// Tag both builders give the result, for later cases to build FROM.
    tag: Option<String>,
    build_args: Vec<String>,
    target: Option<String>,
    /// `MODE PATH`: context files whose mode git cannot carry.
    chmods: Vec<(u32, String)>,
    /// Both builders must refuse the Dockerfile.
    fails: bool,
    /// `expect=/a /b`: syntax Docker 20.10's frontend lacks. kiln alone
    /// builds it, and what it leaves under those paths must be the case's
    /// `expected.txt`, written by hand from BuildKit's documentation.
    expect: Vec<String>,
    /// The images must differ: a deliberate difference, listed with its
    /// reason in testdata/differential/README.md (so a change on either
    /// side is noticed).
    deliberate: bool,
}

fn read_case(dir: &Path) -> Case {
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    let dockerfile = std::fs::read_to_string(dir.join("Dockerfile"))
        .unwrap_or_else(|e| panic!("{name}/Dockerfile: {e}"));
    let mut case = Case {
        name: name.clone(),
        dir: dir.to_owned(),
        ..Case::default()
    };
    for line in dockerfile.lines() {
        let Some(directive) = line.trim().strip_prefix("# diff:") else {
            continue;
        };
        let directive = directive.trim();
        let (key, value) = directive.split_once('=').unwrap_or((directive, ""));
        match key {
            "tag" => case.tag = Some(value.to_owned()),
            "build-arg" => case.build_args.push(value.to_owned()),
            "target" => case.target = Some(value.to_owned()),
            "fails" => case.fails = true,
            "deliberate" => case.deliberate = true,
            "expect" => case.expect = value.split_whitespace().map(str::to_owned).collect(),
            "chmod" => {
                let (mode, path) = value
                    .split_once(' ')
                    .unwrap_or_else(|| panic!("{name}: chmod=MODE PATH"));
                let mode = u32::from_str_radix(mode, 8)
                    .unwrap_or_else(|_| panic!("{name}: chmod mode {mode}"));
                case.chmods.push((mode, path.to_owned()));
            }
            other => panic!("{name}: unknown directive `# diff: {other}`"),
        }
    }
    assert!(
        case.tag
            .as_deref()
            .is_none_or(|t| t.starts_with("127.0.0.1:1/")),
        "{name}: tags must start with 127.0.0.1:1/"
    );
    case
}

/// Copies a case's context so that modes do not depend on the checkout's
/// umask (files 0644 or 0755 by their executable bit, directories 0755),
/// then applies its `chmod=` directives.
fn stage_context(case: &Case, into: &Path) {
    fn copy(from: &Path, to: &Path) {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::symlink_metadata(from).unwrap();
        if meta.file_type().is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(from).unwrap(), to).unwrap();
        } else if meta.is_dir() {
            std::fs::create_dir(to).unwrap();
            for entry in std::fs::read_dir(from).unwrap() {
                let entry = entry.unwrap();
                copy(&entry.path(), &to.join(entry.file_name()));
            }
            std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755)).unwrap();
        } else {
            std::fs::copy(from, to).unwrap();
            let mode = if meta.permissions().mode() & 0o100 != 0 {
                0o755
            } else {
                0o644
            };
            std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode)).unwrap();
        }
    }
    copy(&case.dir, into);
    for (mode, path) in &case.chmods {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(into.join(path), std::fs::Permissions::from_mode(*mode))
            .unwrap_or_else(|e| panic!("{}: chmod {path}: {e}", case.name));
    }
}

struct Suite {
    _dir: tempfile::TempDir,
    work: PathBuf,
    store: PathBuf,
}

impl Suite {
    /// Makes the base images in dockerd and loads exactly what `docker save`
    /// wrote into kiln's store, so both builders start from the same bytes.
    fn new() -> Suite {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().to_owned();
        let store = work.join("store");
        let rootfs = common::busybox_rootfs(&work);
        ok(docker(&[
            "import",
            "--change",
            &format!("ENV {BASE_PATH}"),
            rootfs.to_str().unwrap(),
            BUSYBOX,
        ]));
        let suite = Suite {
            _dir: dir,
            work,
            store,
        };
        suite.share(BUSYBOX);
        // The second base (users and groups for --chown and USER) is built
        // by docker alone from the first, then shared the same way.
        let users = cases_dir().join("_bases/users");
        let users_tag = "127.0.0.1:1/kiln-diff/users:1";
        let build = docker(&[
            "build",
            "--network=none",
            "-q",
            "-t",
            users_tag,
            users.to_str().unwrap(),
        ]);
        ok(build);
        suite.share(users_tag);
        suite
    }

    fn share(&self, tag: &str) {
        let archive = self.work.join("shared-base.tar");
        ok(docker(&["save", "-o", archive.to_str().unwrap(), tag]));
        ok(common::kiln(
            &self.store,
            &["load", "-i", archive.to_str().unwrap()],
        ));
    }

    /// Builds one case with both builders; the differences found, or why
    /// the case could not be compared.
    fn run(&self, case: &Case) -> Vec<String> {
        let ctx = self.work.join(format!("ctx-{}", case.name));
        let _ = std::fs::remove_dir_all(&ctx);
        stage_context(case, &ctx);
        let tag = case
            .tag
            .clone()
            .unwrap_or_else(|| format!("127.0.0.1:1/kiln-diff/case/{}:1", case.name));
        let mut extra: Vec<String> = Vec::new();
        for arg in &case.build_args {
            extra.push("--build-arg".into());
            extra.push(arg.clone());
        }
        if let Some(target) = &case.target {
            extra.push("--target".into());
            extra.push(target.clone());
        }

        let mut docker_cmd = Command::new(DOCKER);
        docker_cmd
            .env("DOCKER_BUILDKIT", "1")
            .args(["build", "--network=none", "--progress=plain", "-t", &tag])
            .args(&extra)
            .arg(&ctx);
        let mut kiln_cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
        kiln_cmd
            .arg("--root")
            .arg(&self.store)
            .args(["build", "--progress", "plain", "-t", &tag])
            .args(&extra)
            .arg(&ctx)
            .env_remove("SOURCE_DATE_EPOCH");
        if !case.expect.is_empty() {
            return self.run_expected(case, kiln_cmd, &tag);
        }
        // Both at once: the builds are independent and mostly waiting.
        let docker_child = std::thread::spawn(move || docker_cmd.output().unwrap());
        let kiln_out = kiln_cmd.output().unwrap();
        let docker_out = docker_child.join().unwrap();

        match (kiln_out.status.success(), docker_out.status.success()) {
            (false, false) if case.fails => return Vec::new(),
            (true, true) if !case.fails => {}
            (k, d) => {
                let tail = |o: &Output| {
                    let s = text(&o.stderr);
                    let lines: Vec<&str> = s.lines().collect();
                    lines[lines.len().saturating_sub(8)..].join("\n    ")
                };
                return vec![format!(
                    "build: kiln {} and buildkit {}{}\n  kiln:\n    {}\n  buildkit:\n    {}",
                    if k { "succeeded" } else { "failed" },
                    if d { "succeeded" } else { "failed" },
                    if case.fails { " (both must fail)" } else { "" },
                    tail(&kiln_out),
                    tail(&docker_out)
                )];
            }
        }
        if case.fails {
            return Vec::new();
        }

        let kiln_tar = self.work.join(format!("{}-kiln.tar", case.name));
        let docker_tar = self.work.join(format!("{}-docker.tar", case.name));
        ok(common::kiln(
            &self.store,
            &[
                "save",
                "--format",
                "docker",
                "-o",
                kiln_tar.to_str().unwrap(),
                &tag,
            ],
        ));
        ok(docker(&["save", "-o", docker_tar.to_str().unwrap(), &tag]));
        let read = |p: &Path| image::read_docker_archive(&std::fs::read(p).unwrap());
        let (kiln_image, docker_image) = match (read(&kiln_tar), read(&docker_tar)) {
            (Ok(k), Ok(d)) => (k, d),
            (k, d) => {
                return vec![format!(
                    "unreadable archive: kiln {:?}, buildkit {:?}",
                    k.err(),
                    d.err()
                )]
            }
        };
        let _ = std::fs::remove_file(&kiln_tar);
        let _ = std::fs::remove_file(&docker_tar);
        let _ = std::fs::remove_dir_all(&ctx);
        let mut diffs = compare_files(&kiln_image, &docker_image);
        diffs.extend(compare_config(&kiln_image.config, &docker_image.config));
        diffs
    }
}

impl Suite {
    /// A case with `expect=`: kiln's image, under the named paths, against
    /// the committed listing.
    fn run_expected(&self, case: &Case, mut kiln_cmd: Command, tag: &str) -> Vec<String> {
        let out = kiln_cmd.output().unwrap();
        if !out.status.success() {
            return vec![format!("kiln build failed:\n    {}", text(&out.stderr))];
        }
        let archive = self.work.join(format!("{}-kiln.tar", case.name));
        ok(common::kiln(
            &self.store,
            &[
                "save",
                "--format",
                "docker",
                "-o",
                archive.to_str().unwrap(),
                tag,
            ],
        ));
        let image = match image::read_docker_archive(&std::fs::read(&archive).unwrap()) {
            Ok(image) => image,
            Err(e) => return vec![format!("unreadable archive: {e}")],
        };
        let _ = std::fs::remove_file(&archive);
        let wanted = std::fs::read_to_string(case.dir.join("expected.txt"))
            .unwrap_or_else(|e| panic!("{}/expected.txt: {e}", case.name));
        let wanted: BTreeSet<String> = wanted
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_owned)
            .collect();
        let got: BTreeSet<String> = image
            .files
            .iter()
            .filter(|(path, _)| {
                case.expect
                    .iter()
                    .any(|root| *path == root || path.starts_with(&format!("{root}/")))
            })
            .map(|(path, entry)| entry.listing(path))
            .collect();
        let mut diffs: Vec<String> = wanted
            .difference(&got)
            .map(|l| format!("expected, not in kiln's image: {l}"))
            .collect();
        diffs.extend(
            got.difference(&wanted)
                .map(|l| format!("in kiln's image, not expected: {l}")),
        );
        diffs
    }
}

fn compare_files(kiln: &image::Image, docker: &image::Image) -> Vec<String> {
    let paths: BTreeSet<&String> = kiln.files.keys().chain(docker.files.keys()).collect();
    let mut out = Vec::new();
    for path in paths {
        match (kiln.files.get(path), docker.files.get(path)) {
            (Some(k), Some(d)) => {
                for difference in k.differences(d) {
                    out.push(format!("{path}: {difference}"));
                }
            }
            (Some(k), None) => out.push(format!("{path}: only in kiln ({})", k.describe())),
            (None, Some(d)) => out.push(format!("{path}: only in buildkit ({})", d.describe())),
            (None, None) => {}
        }
    }
    out
}

/// The config fields both exports carry, as Docker's JSON. A missing field
/// and `null` mean the same; so do an empty map, string or list and none
/// (but for Cmd and Entrypoint), and `false` and none.
const CONFIG_FIELDS: &[&str] = &[
    "Env",
    "Cmd",
    "Entrypoint",
    "WorkingDir",
    "User",
    "Labels",
    "ExposedPorts",
    "Volumes",
    "StopSignal",
    "Healthcheck",
    "Shell",
    "OnBuild",
    "ArgsEscaped",
];

fn normalised(field: &str, value: Option<&Value>) -> Value {
    match value {
        None | Some(Value::Null) => Value::Null,
        // CMD [] and ENTRYPOINT [] are not the same as none set.
        Some(Value::Array(a)) if a.is_empty() && field != "Cmd" && field != "Entrypoint" => {
            Value::Null
        }
        Some(Value::Object(map)) if map.is_empty() => Value::Null,
        Some(Value::String(s)) if s.is_empty() => Value::Null,
        Some(Value::Bool(false)) => Value::Null,
        Some(v) => v.clone(),
    }
}

fn compare_config(kiln: &Value, docker: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for field in CONFIG_FIELDS {
        let k = normalised(field, kiln["config"].get(*field));
        let d = normalised(field, docker["config"].get(*field));
        if k != d {
            out.push(format!("config {field}: {k} (kiln) vs {d} (buildkit)"));
        }
    }
    let history = |config: &Value| -> Vec<(String, bool)> {
        config["history"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|h| {
                (
                    history_text(h["created_by"].as_str().unwrap_or("")),
                    h["empty_layer"].as_bool().unwrap_or(false),
                )
            })
            .collect()
    };
    let (k, d) = (history(kiln), history(docker));
    if k != d {
        for i in 0..k.len().max(d.len()) {
            if k.get(i) != d.get(i) {
                out.push(format!(
                    "history[{i}]: {:?} (kiln) vs {:?} (buildkit)",
                    k.get(i),
                    d.get(i)
                ));
            }
        }
    }
    out
}

/// The history line as compared. EXPOSE and HEALTHCHECK lines are Go's
/// `%v` of BuildKit's internal values (a map of ports, a struct), whose
/// text changed between BuildKit versions; kiln writes its own, and only
/// the instruction is compared (a deliberate difference, see the README).
fn history_text(created_by: &str) -> String {
    for keyword in ["EXPOSE ", "HEALTHCHECK "] {
        if created_by.starts_with(keyword) {
            return format!("{keyword}...");
        }
    }
    created_by.to_owned()
}

#[test]
fn kiln_and_buildkit_build_the_same_images() {
    if no_daemon() {
        return;
    }
    let mut cases: Vec<Case> = std::fs::read_dir(cases_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir() && !p.file_name().unwrap().to_string_lossy().starts_with('_'))
        .map(|p| read_case(&p))
        .collect();
    assert!(cases.len() >= 60, "only {} cases", cases.len());
    // Parents (cases with a tag=) first, so the cases building FROM them
    // find them in both builders.
    cases.sort_by(|a, b| (a.tag.is_none(), &a.name).cmp(&(b.tag.is_none(), &b.name)));
    let only: Option<Vec<String>> = std::env::var("KILN_DIFF_CASES")
        .ok()
        .map(|s| s.split(',').map(str::to_owned).collect());

    let suite = Suite::new();
    let mut failed = Vec::new();
    let mut ran = 0;
    for case in &cases {
        if let Some(only) = &only {
            if case.tag.is_none() && !only.contains(&case.name) {
                continue;
            }
        }
        ran += 1;
        let mut diffs = suite.run(case);
        if case.deliberate {
            diffs = if diffs.is_empty() {
                vec!["a deliberate difference (README.md) is gone: update the case".into()]
            } else {
                eprintln!(
                    "deliberately different: {}:\n  {}",
                    case.name,
                    diffs.join("\n  ")
                );
                Vec::new()
            };
        }
        if diffs.is_empty() {
            eprintln!("same: {}", case.name);
        } else {
            eprintln!("DIFFERENT: {}", case.name);
            failed.push(format!("{}:\n  {}", case.name, diffs.join("\n  ")));
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {ran} cases differ between kiln and BuildKit:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

/// The flattening both builders' images go through, on a hand-made
/// archive: a bug here would hide differences, so it is tested alone.
#[test]
fn flattening_applies_whiteouts_opaque_dirs_and_hard_links() {
    fn layer(entries: &[(&str, tar::EntryType, &str)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, kind, data) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(*kind);
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            header.set_mode(if *kind == tar::EntryType::Directory {
                0o755
            } else {
                0o644
            });
            match kind {
                tar::EntryType::Link | tar::EntryType::Symlink => {
                    header.set_size(0);
                    builder.append_link(&mut header, path, data).unwrap();
                }
                _ => {
                    header.set_size(data.len() as u64);
                    builder
                        .append_data(&mut header, path, data.as_bytes())
                        .unwrap();
                }
            }
        }
        builder.into_inner().unwrap()
    }
    use tar::EntryType::{Directory as D, Link as L, Regular as F, Symlink as S};
    let layers = [
        layer(&[
            ("a/", D, ""),
            ("a/x", F, "x"),
            ("a/sub/", D, ""),
            ("a/sub/y", F, "y"),
            ("b", F, "b"),
            ("c/", D, ""),
            ("c/in", F, "in"),
            ("h1", F, "same inode"),
        ]),
        layer(&[
            // An opaque marker hides what lower layers had in a/, not what
            // this layer puts there (written before or after it).
            ("a/z", F, "z"),
            ("a/.wh..wh..opq", F, ""),
            (".wh.b", F, ""),
            // A file over a directory drops the directory's children.
            ("c", F, "now a file"),
            ("h2", L, "h1"),
            ("ln", S, "a/z"),
        ]),
    ];
    let config = br#"{"config":{},"history":[]}"#;
    let manifest = br#"[{"Config":"c.json","Layers":["l1/layer.tar","l2/layer.tar"]}]"#;
    let mut archive = tar::Builder::new(Vec::new());
    let files: [(&str, &[u8]); 4] = [
        ("manifest.json", manifest),
        ("c.json", config),
        ("l1/layer.tar", &layers[0]),
        ("l2/layer.tar", &layers[1]),
    ];
    for (name, data) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        archive.append_data(&mut header, name, data).unwrap();
    }
    let image = image::read_docker_archive(&archive.into_inner().unwrap()).unwrap();
    let paths: Vec<&str> = image.files.keys().map(String::as_str).collect();
    assert_eq!(paths, ["/a", "/a/z", "/c", "/h1", "/h2", "/ln"]);
    assert_eq!(image.files["/h1"].links, ["/h2"]);
    assert_eq!(image.files["/h2"].links, ["/h1"]);
    assert_eq!(image.files["/c"].kind, image::Kind::File);
    assert_eq!(image.files["/ln"].kind, image::Kind::Symlink("a/z".into()));
}
