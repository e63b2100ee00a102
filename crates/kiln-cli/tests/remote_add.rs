//! ADD of URLs and git repositories, served by a small HTTP server on
//! 127.0.0.1 that this test runs (git reads a bare repository from it with
//! git's "dumb" HTTP protocol): downloads keep Docker's mode and time,
//! checksums are enforced, git refs and subdirectories are honoured.

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{busybox_rootfs, kiln, ok, text, umoci_unpack};

const LAST_MODIFIED: &str = "Tue, 15 Nov 1994 08:12:31 GMT";
const LAST_MODIFIED_EPOCH: i64 = 784_887_151;

/// Serves the files under `dir` over HTTP/1.1 (GET only, one request per
/// connection) on a free port of 127.0.0.1; returns the base URL.
fn serve(dir: PathBuf) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                    break;
                }
            }
            let path = request.split(' ').nth(1).unwrap_or("/");
            let path = path
                .split('?')
                .next()
                .unwrap_or(path)
                .trim_start_matches('/');
            let response = match fs::read(dir.join(path)) {
                Ok(body) if !path.contains("..") => {
                    let mut head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nLast-Modified: {LAST_MODIFIED}\r\nConnection: close\r\n\r\n",
                        body.len()
                    )
                    .into_bytes();
                    head.extend(body);
                    head
                }
                _ => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_vec(),
            };
            let _ = stream.write_all(&response);
        }
    });
    format!("http://127.0.0.1:{port}")
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
        .output()
        .expect("git is installed by scripts/install-test-deps.sh");
    assert!(out.status.success(), "git {args:?}: {}", text(&out.stderr));
}

/// A bare repository `repo.git` under `served`: tag v1 has `a.txt` = "one"
/// and `sub/b.txt`; main moved on to `a.txt` = "two".
fn make_repository(work: &Path, served: &Path) {
    let src = work.join("repo-src");
    fs::create_dir_all(src.join("sub")).unwrap();
    git(&src, &["init", "-q", "-b", "main"]);
    fs::write(src.join("a.txt"), "one\n").unwrap();
    fs::write(src.join("sub/b.txt"), "bee\n").unwrap();
    git(&src, &["add", "."]);
    git(&src, &["commit", "-q", "-m", "first"]);
    git(&src, &["tag", "v1"]);
    fs::write(src.join("a.txt"), "two\n").unwrap();
    git(&src, &["commit", "-q", "-am", "second"]);
    let bare = served.join("repo.git");
    let out = Command::new("git")
        .args(["clone", "-q", "--bare"])
        .arg(&src)
        .arg(&bare)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    git(&bare, &["update-server-info"]);
}

#[test]
fn add_downloads_urls_and_clones_repositories() {
    let work = tempfile::tempdir().unwrap();
    let work = work.path();
    let root = work.join("store");
    let served = work.join("served");
    fs::create_dir_all(served.join("files")).unwrap();
    fs::write(served.join("files/data.txt"), "downloaded\n").unwrap();
    fs::write(served.join("files/pkg.tar.gz"), b"\x1f\x8b not really").unwrap();
    make_repository(work, &served);
    let base = serve(served.clone());

    let rootfs = busybox_rootfs(work);
    ok(kiln(
        &root,
        &["import", rootfs.to_str().unwrap(), "busybox"],
    ));
    let context = work.join("context");
    fs::create_dir_all(&context).unwrap();
    fs::write(context.join("local.txt"), "local\n").unwrap();
    let sum = "sha256:b6f6e8ac9c4cc3e01ac0cdc5bdd8b1cd6c0fb31bb8d0ff61b1fe1e65bc3c0f7a";
    let real_sum = {
        use std::io::Read;
        let out = Command::new("sha256sum")
            .arg(served.join("files/data.txt"))
            .output()
            .unwrap();
        let mut hex = String::new();
        out.stdout.as_slice().read_to_string(&mut hex).unwrap();
        format!("sha256:{}", &hex[..64])
    };
    assert_ne!(sum, real_sum);
    fs::write(
        context.join("Dockerfile"),
        format!(
            "FROM busybox\n\
             ADD {base}/files/data.txt /data.txt\n\
             ADD --checksum={real_sum} {base}/files/data.txt /checked/\n\
             ADD {base}/files/pkg.tar.gz local.txt /mixed/\n\
             ADD --chmod=644 {base}/files/data.txt /readable\n\
             ADD {base}/repo.git#v1 /v1\n\
             ADD --keep-git-dir=true {base}/repo.git /main\n\
             ADD {base}/repo.git#main:sub /sub\n"
        ),
    )
    .unwrap();
    ok(kiln(
        &root,
        &["build", "-t", "remote", context.to_str().unwrap()],
    ));
    let out = umoci_unpack(&root, "remote", &work.join("unpacked"));

    let data = out.join("data.txt");
    assert_eq!(fs::read_to_string(&data).unwrap(), "downloaded\n");
    let meta = fs::metadata(&data).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600, "Docker's mode");
    assert_eq!(meta.mtime(), LAST_MODIFIED_EPOCH, "the Last-Modified time");
    assert_eq!(
        fs::read_to_string(out.join("checked/data.txt")).unwrap(),
        "downloaded\n"
    );
    // A remote archive is not extracted; local and remote sources mix.
    assert!(out.join("mixed/pkg.tar.gz").is_file());
    assert_eq!(
        fs::read_to_string(out.join("mixed/local.txt")).unwrap(),
        "local\n"
    );
    let readable = fs::metadata(out.join("readable")).unwrap();
    assert_eq!(readable.permissions().mode() & 0o7777, 0o644);

    assert_eq!(fs::read_to_string(out.join("v1/a.txt")).unwrap(), "one\n");
    assert!(out.join("v1/sub/b.txt").is_file());
    assert!(!out.join("v1/.git").exists(), ".git is dropped by default");
    assert_eq!(fs::read_to_string(out.join("main/a.txt")).unwrap(), "two\n");
    assert!(out.join("main/.git").is_dir(), "--keep-git-dir keeps it");
    assert_eq!(fs::read_to_string(out.join("sub/b.txt")).unwrap(), "bee\n");
    assert!(!out.join("sub/a.txt").exists(), "only the subdirectory");

    // A wrong checksum, a missing file and a missing ref fail the build
    // with the line and what went wrong.
    let failing = [
        (
            format!("ADD --checksum={sum} {base}/files/data.txt /x"),
            "checksum mismatch",
        ),
        (format!("ADD {base}/files/missing.txt /x"), "404"),
        (format!("ADD {base}/repo.git#no-such-ref /x"), "git"),
        (
            "ADD --checksum=md5:00 local.txt /x".to_string(),
            "--checksum",
        ),
    ];
    for (line, expected) in failing {
        fs::write(
            context.join("Dockerfile"),
            format!("FROM busybox\n{line}\n"),
        )
        .unwrap();
        let result = kiln(&root, &["build", context.to_str().unwrap()]);
        let stderr = text(&result.stderr);
        assert_eq!(result.status.code(), Some(1), "{line}: {stderr}");
        assert!(
            stderr.contains(expected) && stderr.contains(":2"),
            "{line}: {stderr}"
        );
    }
    let check = ok(kiln(&root, &["check"]));
    assert!(check.starts_with("ok:"), "{check}");
}
