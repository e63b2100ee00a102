//! Remote sources of ADD: files over HTTP(S), checked against `--checksum`,
//! and git repositories, cloned with the `git` command. Each is fetched
//! into a slot of a scratch directory, which COPY's machinery then reads
//! like a context: a URL gives one file, a repository a directory whose
//! contents are copied.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::Path;
use std::process::Command;

use sha2::Digest as _;

use crate::error::BuildError;

/// How an ADD source is fetched.
#[derive(Debug, PartialEq, Eq)]
pub enum RemoteKind {
    Http,
    Git,
}

/// Whether an ADD source is remote, and which kind; BuildKit's rules.
pub fn remote_kind(source: &str) -> Option<RemoteKind> {
    let http = source.starts_with("http://") || source.starts_with("https://");
    let git_scheme =
        source.starts_with("git@") || source.starts_with("git://") || source.starts_with("ssh://");
    let git_http = http && source.split('#').next().unwrap_or(source).ends_with(".git");
    if git_scheme || git_http {
        Some(RemoteKind::Git)
    } else if http {
        Some(RemoteKind::Http)
    } else {
        None
    }
}

/// Downloads `url` into `staging/<slot>/<name>` and returns that relative
/// path. The file is mode 0600 with the server's Last-Modified time, as
/// Docker makes it; with `checksum` (`sha256:…` or `sha512:…`) the content
/// must match or nothing is kept.
pub fn fetch_url(
    url: &str,
    checksum: Option<&str>,
    staging: &Path,
    slot: usize,
    line: u32,
) -> Result<String, BuildError> {
    let fail = |message: String| BuildError::step(line, format!("ADD {url}: {message}"));
    let expected = checksum.map(parse_checksum).transpose().map_err(&fail)?;
    let client = reqwest::blocking::Client::builder()
        .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| fail(e.to_string()))?;
    let mut response = client
        .get(url)
        .send()
        .map_err(|e| fail(format!("download failed: {e}")))?;
    if !response.status().is_success() {
        return Err(fail(format!("the server answered {}", response.status())));
    }
    let name = file_name(url, response.headers());
    let dir = staging.join(slot.to_string());
    fs::create_dir_all(&dir).map_err(|e| BuildError::io(&dir, e))?;
    let path = dir.join(&name);
    let mut file = File::create(&path).map_err(|e| BuildError::io(&path, e))?;
    let mut hasher = expected.as_ref().map(|(algorithm, _)| algorithm.hasher());
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let read = match response.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(fail(format!("download failed: {e}"))),
        };
        if let Some(hasher) = hasher.as_mut() {
            hasher.update(&buffer[..read]);
        }
        file.write_all(&buffer[..read])
            .map_err(|e| BuildError::io(&path, e))?;
    }
    if let (Some(hasher), Some((algorithm, want))) = (hasher, &expected) {
        let got = hasher.finish();
        if &got != want {
            let _ = fs::remove_file(&path);
            return Err(fail(format!(
                "checksum mismatch: expected {}:{want}, got {}:{got}",
                algorithm.name(),
                algorithm.name()
            )));
        }
    }
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(|e| BuildError::io(&path, e))?;
    if let Some(modified) = last_modified(response.headers()) {
        file.set_modified(modified)
            .map_err(|e| BuildError::io(&path, e))?;
    }
    Ok(format!("{slot}/{name}"))
}

/// The name of a downloaded file: the Content-Disposition filename, else
/// the URL path's last segment, else `download`. Never a path.
fn file_name(url: &str, headers: &reqwest::header::HeaderMap) -> String {
    let from_header = headers
        .get(reqwest::header::CONTENT_DISPOSITION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split(';')
                .find_map(|p| p.trim().strip_prefix("filename="))
        })
        .map(|name| name.trim_matches('"').to_owned());
    let from_url = || {
        let path = url.split(['?', '#']).next().unwrap_or(url);
        let path = path.split_once("://").map_or(path, |(_, rest)| rest);
        path.split_once('/')
            .and_then(|(_, p)| p.rsplit('/').next())
            .map(str::to_owned)
    };
    from_header
        .or_else(from_url)
        .and_then(|name| {
            let base = name.rsplit(['/', '\\']).next().unwrap_or("").to_owned();
            (!base.is_empty() && base != "." && base != "..").then_some(base)
        })
        .unwrap_or_else(|| "download".to_owned())
}

fn last_modified(headers: &reqwest::header::HeaderMap) -> Option<std::time::SystemTime> {
    let value = headers.get(reqwest::header::LAST_MODIFIED)?.to_str().ok()?;
    httpdate::parse_http_date(value).ok()
}

#[derive(Clone, Copy, Debug)]
enum Algorithm {
    Sha256,
    Sha512,
}

enum Hasher {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Algorithm {
    fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    fn hasher(self) -> Hasher {
        match self {
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }
}

impl Hasher {
    fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }

    fn finish(self) -> String {
        let bytes = match self {
            Hasher::Sha256(h) => h.finalize().to_vec(),
            Hasher::Sha512(h) => h.finalize().to_vec(),
        };
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// `sha256:<64 hex>` or `sha512:<128 hex>`.
fn parse_checksum(text: &str) -> Result<(Algorithm, String), String> {
    let (algorithm, hex) = text
        .split_once(':')
        .ok_or_else(|| format!("--checksum {text:?}: expected sha256:<hex>"))?;
    let (algorithm, len) = match algorithm {
        "sha256" => (Algorithm::Sha256, 64),
        "sha512" => (Algorithm::Sha512, 128),
        other => {
            return Err(format!(
                "--checksum {text:?}: unsupported algorithm {other:?} (sha256, sha512)"
            ))
        }
    };
    if hex.len() != len || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "--checksum {text:?}: expected {len} hex digits after {}:",
            algorithm.name()
        ));
    }
    Ok((algorithm, hex.to_ascii_lowercase()))
}

/// A git source: `URL[#REF][:SUBDIR]`.
#[derive(Debug, PartialEq, Eq)]
struct GitSource<'a> {
    url: &'a str,
    reference: Option<&'a str>,
    subdir: Option<&'a str>,
}

fn parse_git_source(source: &str) -> GitSource<'_> {
    let (url, fragment) = match source.split_once('#') {
        Some((url, fragment)) => (url, Some(fragment)),
        None => (source, None),
    };
    let (reference, subdir) = match fragment {
        None => (None, None),
        Some(fragment) => match fragment.split_once(':') {
            Some((reference, subdir)) => (Some(reference), Some(subdir)),
            None => (Some(fragment), None),
        },
    };
    GitSource {
        url,
        reference: reference.filter(|r| !r.is_empty()),
        subdir: subdir.filter(|s| !s.is_empty()),
    }
}

/// Clones `source` (`URL[#REF][:SUBDIR]`) into `staging/<slot>` with the
/// `git` command and returns the relative path of the directory to copy
/// (the subdir if one was named). `.git` is removed unless `keep_git_dir`.
/// A shallow fetch of just the ref is tried first; servers that cannot do
/// that (the dumb HTTP protocol) get a full fetch.
pub fn fetch_git(
    source: &str,
    keep_git_dir: bool,
    staging: &Path,
    slot: usize,
    line: u32,
) -> Result<String, BuildError> {
    let parsed = parse_git_source(source);
    let fail = |message: String| BuildError::step(line, format!("ADD {source}: {message}"));
    let dir = staging.join(slot.to_string());
    fs::create_dir_all(&dir).map_err(|e| BuildError::io(&dir, e))?;
    let git = |args: &[&str]| -> Result<(), BuildError> {
        let out = Command::new("git")
            .arg("-C")
            .arg(&dir)
            .args(args)
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_ASKPASS", "true")
            .output()
            .map_err(|e| fail(format!("cannot run git (is it installed?): {e}")))?;
        if out.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(fail(format!(
            "git {} failed: {}",
            args.first().unwrap_or(&""),
            stderr.trim()
        )))
    };
    git(&["init", "-q"])?;
    git(&["remote", "add", "origin", parsed.url])?;
    let reference = parsed.reference.unwrap_or("HEAD");
    let fetched_by_name = git(&["fetch", "-q", "--depth=1", "origin", reference]).is_ok()
        || git(&["fetch", "-q", "origin", reference]).is_ok();
    if fetched_by_name {
        git(&["checkout", "-q", "FETCH_HEAD"])?;
    } else {
        // A commit id the server will not hand out by name.
        git(&["fetch", "-q", "--tags", "origin"])?;
        git(&["checkout", "-q", reference])?;
    }
    if dir.join(".gitmodules").exists() {
        git(&[
            "submodule",
            "update",
            "-q",
            "--init",
            "--recursive",
            "--depth=1",
        ])?;
    }
    if !keep_git_dir {
        let dot_git = dir.join(".git");
        fs::remove_dir_all(&dot_git).map_err(|e| BuildError::io(&dot_git, e))?;
    }
    let Some(subdir) = parsed.subdir else {
        return Ok(slot.to_string());
    };
    let Some(clean) = crate::copy::contained(subdir) else {
        return Err(fail(format!(
            "subdirectory {subdir:?} leaves the repository"
        )));
    };
    let path = dir.join(&clean);
    // The subdir must be a real directory of the checkout, not a symlink
    // that a hostile repository points elsewhere.
    let inside = fs::canonicalize(&path)
        .ok()
        .zip(fs::canonicalize(&dir).ok())
        .is_some_and(|(p, d)| p.starts_with(d) && p.is_dir());
    if !inside {
        return Err(fail(format!(
            "subdirectory {subdir:?} is not a directory of the repository"
        )));
    }
    Ok(format!("{slot}/{clean}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_kinds() {
        assert_eq!(
            remote_kind("https://x.org/a.tar.gz"),
            Some(RemoteKind::Http)
        );
        assert_eq!(
            remote_kind("https://x.org/r.git#v1:sub"),
            Some(RemoteKind::Git)
        );
        assert_eq!(remote_kind("git@github.com:o/r.git"), Some(RemoteKind::Git));
        assert_eq!(remote_kind("src/file"), None);
    }

    #[test]
    fn git_sources() {
        assert_eq!(
            parse_git_source("https://h/r.git#v1.2:docs/api"),
            GitSource {
                url: "https://h/r.git",
                reference: Some("v1.2"),
                subdir: Some("docs/api")
            }
        );
        assert_eq!(
            parse_git_source("https://h/r.git#:docs"),
            GitSource {
                url: "https://h/r.git",
                reference: None,
                subdir: Some("docs")
            }
        );
        assert_eq!(parse_git_source("git@h:r.git").reference, None);
    }

    #[test]
    fn checksums_and_names() {
        assert!(parse_checksum(&format!("sha256:{}", "a".repeat(64))).is_ok());
        assert!(parse_checksum("md5:abc").is_err());
        assert!(parse_checksum("sha256:abc").is_err());
        let none = reqwest::header::HeaderMap::new();
        assert_eq!(file_name("http://h/dir/pkg.tgz?x=1", &none), "pkg.tgz");
        assert_eq!(file_name("http://h/", &none), "download");
        assert_eq!(file_name("http://h", &none), "download");
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::CONTENT_DISPOSITION,
            "attachment; filename=\"../../evil\"".parse().unwrap(),
        );
        assert_eq!(file_name("http://h/x", &headers), "evil");
    }
}
