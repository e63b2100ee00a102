//! `kiln push`, `kiln pull` and `FROM` pulling, against real registries
//! (Debian's docker-registry) each test starts on a free 127.0.0.1 port,
//! with skopeo as the other client.

mod common;

use std::path::Path;
use std::process::Command;

use common::{busybox_workspace, kiln, kiln_env, ok, text};
use kiln_testdata::registry::{Auth, LocalRegistry};

fn skopeo(args: &[&str]) -> String {
    ok(Command::new("skopeo")
        .args(args)
        .output()
        .expect("skopeo is installed by scripts/install-test-deps.sh"))
}

/// Builds `app` (a RUN over busybox) in the workspace's store.
fn build_app(root: &Path, work: &Path) -> String {
    let context = work.join("ctx");
    std::fs::create_dir_all(&context).unwrap();
    std::fs::write(
        context.join("Dockerfile"),
        "FROM busybox\nRUN echo pushed and pulled > /greeting\nCMD [\"cat\", \"/greeting\"]\n",
    )
    .unwrap();
    ok(kiln(
        root,
        &["build", "-q", "-t", "app", context.to_str().unwrap()],
    ))
    .trim()
    .to_owned()
}

fn config_digest(root: &Path, name: &str) -> String {
    let inspect: serde_json::Value =
        serde_json::from_str(&ok(kiln(root, &["inspect", name]))).unwrap();
    inspect[0]["ConfigDigest"]
        .as_str()
        .unwrap_or_else(|| panic!("no config digest in {inspect}"))
        .to_owned()
}

/// Blob uploads the registry was asked for (POST starts one).
fn uploads(registry: &LocalRegistry) -> usize {
    registry.requests("POST", "/blobs/uploads/")
}

#[test]
fn an_image_pushed_then_pulled_into_an_empty_store_is_the_same_image() {
    let w = busybox_workspace();
    let registry = LocalRegistry::start(&w.work, Auth::Open);
    build_app(&w.root, &w.work);
    let dest = format!("{}/team/app:1", registry.address);

    let pushed = ok(kiln(&w.root, &["push", "-q", "app", &dest]))
        .trim()
        .to_owned();
    // busybox's layer, the RUN's and the config.
    assert_eq!(uploads(&registry), 3, "{}", registry.log());

    // A second push sends no blob and gives the same digest (the gzip
    // of each layer is remembered, not made again).
    let again = ok(kiln(&w.root, &["push", "-q", "app", &dest]))
        .trim()
        .to_owned();
    assert_eq!(again, pushed);
    assert_eq!(
        uploads(&registry),
        3,
        "a second push uploaded: {}",
        registry.log()
    );

    let empty = w.work.join("empty-store");
    let pulled = kiln(&empty, &["pull", &dest]);
    let stderr = text(&pulled.stderr);
    assert!(pulled.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("Digest: {pushed}")), "{stderr}");
    // The same image: the same config (Docker's image id), layers gzip'd.
    assert_eq!(config_digest(&empty, &dest), config_digest(&w.root, "app"));
    let out = ok(kiln(&empty, &["run", "--rm", "--network", "none", &dest]));
    assert_eq!(out, "pushed and pulled\n");
    let check = kiln(&empty, &["check"]);
    assert!(check.status.success(), "{}", text(&check.stderr));

    // Pulled again: nothing downloaded.
    let before = registry.requests("GET", "/blobs/");
    let again = kiln(&empty, &["pull", &dest]);
    assert!(
        text(&again.stderr).contains("Image is up to date"),
        "{}",
        text(&again.stderr)
    );
    assert_eq!(registry.requests("GET", "/blobs/"), before);

    // skopeo reads what kiln pushed, by the same digest.
    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{dest}"),
    ]);
    let digest = format!("sha256:{}", sha256_hex(raw.as_bytes()));
    assert_eq!(digest, pushed);
    let copied = w.work.join("skopeo-copy");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{dest}"),
        &format!("oci:{}:copied", copied.display()),
    ]);
    // skopeo kept the blobs as they were: the copy's manifest is kiln's.
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(copied.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], pushed.as_str(), "{index}");
}

#[test]
fn a_registry_outside_kiln_registry_allow_is_never_contacted() {
    let w = busybox_workspace();
    let registry = LocalRegistry::start(&w.work, Auth::Open);
    let name = format!("{}/app:1", registry.address);
    let before = registry.log().lines().count();
    let out = kiln_env(
        &w.root,
        &["pull", &name],
        &[("KILN_REGISTRY_ALLOW", "127.0.0.2,localhost")],
    );
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("not an allowed registry (only 127.0.0.2,localhost"),
        "{stderr}"
    );
    assert_eq!(registry.log().lines().count(), before, "{}", registry.log());
}

#[test]
fn an_uncompressed_push_keeps_the_local_digest() {
    let w = busybox_workspace();
    let registry = LocalRegistry::start(&w.work, Auth::Open);
    let local = build_app(&w.root, &w.work);
    let dest = format!("{}/app:plain", registry.address);
    let pushed = ok(kiln(
        &w.root,
        &["push", "-q", "--compression", "none", "app", &dest],
    ));
    assert_eq!(pushed.trim(), local);
    // A name holding a digest must be the pushed manifest's.
    let wrong = format!("{}/app@sha256:{}", registry.address, "0".repeat(64));
    let out = kiln(&w.root, &["push", "--compression", "none", "app", &wrong]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("names digest"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn images_skopeo_pushed_in_every_format_are_pulled_and_run() {
    let w = busybox_workspace();
    let registry = LocalRegistry::start(&w.work, Auth::Open);
    build_app(&w.root, &w.work);
    let archive = w.work.join("app.tar");
    ok(kiln(
        &w.root,
        &["save", "-o", archive.to_str().unwrap(), "app"],
    ));
    let source = format!("oci-archive:{}", archive.display());
    let cases: [(&str, &[&str]); 3] = [
        ("v2s2-gzip", &["--format", "v2s2"]),
        ("oci-gzip", &["--format", "oci"]),
        (
            "oci-zstd",
            &["--format", "oci", "--dest-compress-format", "zstd"],
        ),
    ];
    for (tag, flags) in cases {
        let dest = format!("{}/from-skopeo:{tag}", registry.address);
        let mut args = vec!["copy", "--dest-tls-verify=false"];
        args.extend_from_slice(flags);
        let target = format!("docker://{dest}");
        args.extend([source.as_str(), target.as_str()]);
        skopeo(&args);
        let store = w.work.join(format!("store-{tag}"));
        let pulled = ok(kiln(&store, &["pull", "-q", &dest])).trim().to_owned();
        let raw = skopeo(&["inspect", "--raw", "--tls-verify=false", &target]);
        assert_eq!(
            pulled,
            format!("sha256:{}", sha256_hex(raw.as_bytes())),
            "{tag}"
        );
        let out = ok(kiln(&store, &["run", "--rm", "--network", "none", &dest]));
        assert_eq!(out, "pushed and pulled\n", "{tag}");
    }
}

#[test]
fn an_index_is_resolved_for_the_platform_asked_for() {
    let w = busybox_workspace();
    let registry = LocalRegistry::start(&w.work, Auth::Open);
    build_app(&w.root, &w.work);
    let context = w.work.join("other");
    std::fs::create_dir_all(&context).unwrap();
    std::fs::write(
        context.join("Dockerfile"),
        "FROM busybox\nRUN echo the arm64 one > /greeting\nCMD [\"cat\", \"/greeting\"]\n",
    )
    .unwrap();
    ok(kiln(
        &w.root,
        &["build", "-q", "-t", "other", context.to_str().unwrap()],
    ));
    let push = |name: &str, tag: &str| {
        let dest = format!("{}/multi:{tag}", registry.address);
        let digest = ok(kiln(&w.root, &["push", "-q", name, &dest]))
            .trim()
            .to_owned();
        let raw = skopeo(&[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{dest}"),
        ]);
        (digest, raw.len())
    };
    let (amd64, amd64_size) = push("app", "amd64");
    let (arm64, arm64_size) = push("other", "arm64");
    let entry = |digest: &str, size: usize, arch: &str, variant: Option<&str>| {
        let mut platform = serde_json::json!({"os": "linux", "architecture": arch});
        if let Some(variant) = variant {
            platform["variant"] = variant.into();
        }
        serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest, "size": size, "platform": platform,
        })
    };
    // An attestation's entry is never chosen, even listed first.
    let mut attestation = entry(&arm64, arm64_size, "unknown", None);
    attestation["platform"]["os"] = "unknown".into();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            attestation,
            entry(&arm64, arm64_size, "arm64", Some("v8")),
            entry(&amd64, amd64_size, "amd64", None),
        ],
    });
    let status = registry.put_manifest(
        "multi",
        "latest",
        "application/vnd.oci.image.index.v1+json",
        &serde_json::to_vec(&index).unwrap(),
    );
    assert!(status.contains(" 201 "), "{status}");
    let name = format!("{}/multi:latest", registry.address);
    for (platform, digest, greeting) in [
        ("linux/arm64", &arm64, "the arm64 one\n"),
        ("linux/amd64", &amd64, "pushed and pulled\n"),
    ] {
        let store = w.work.join(format!("store-{}", platform.replace('/', "-")));
        let pulled = ok(kiln(&store, &["pull", "-q", "--platform", platform, &name]));
        assert_eq!(pulled.trim(), digest, "{platform}");
        // Both are this machine's busybox underneath, so both run here.
        let out = ok(kiln(&store, &["run", "--rm", "--network", "none", &name]));
        assert_eq!(out, greeting, "{platform}");
    }
    let out = kiln(
        &w.work.join("store-none"),
        &["pull", "--platform", "linux/s390x", &name],
    );
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("no image for platform linux/s390x"),
        "{stderr}"
    );
    assert!(stderr.contains("linux/arm64/v8, linux/amd64"), "{stderr}");
}

#[test]
fn a_dockerfile_builds_from_an_image_of_the_registry_with_no_pull_before() {
    let w = busybox_workspace();
    let registry = LocalRegistry::start(&w.work, Auth::Open);
    build_app(&w.root, &w.work);
    let base = format!("{}/base:1", registry.address);
    ok(kiln(&w.root, &["push", "-q", "app", &base]));

    let store = w.work.join("fresh-store");
    let context = w.work.join("on-base");
    std::fs::create_dir_all(&context).unwrap();
    std::fs::write(
        context.join("Dockerfile"),
        format!("FROM {base}\nRUN cat /greeting > /copied\nCMD [\"cat\", \"/copied\"]\n"),
    )
    .unwrap();
    let ctx = context.to_str().unwrap();
    ok(kiln(&store, &["build", "-q", "-t", "on-base", ctx]));
    let out = ok(kiln(
        &store,
        &["run", "--rm", "--network", "none", "on-base"],
    ));
    assert_eq!(out, "pushed and pulled\n");

    // The tag moves: a build without --pull keeps the store's base, one
    // with --pull takes the new one and the RUN on it misses the cache.
    let other = w.work.join("moved");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(
        other.join("Dockerfile"),
        "FROM busybox\nRUN echo moved > /greeting\n",
    )
    .unwrap();
    ok(kiln(
        &w.root,
        &["build", "-q", "-t", "moved", other.to_str().unwrap()],
    ));
    ok(kiln(&w.root, &["push", "-q", "moved", &base]));
    let cached = kiln(
        &store,
        &["build", "--progress", "plain", "-t", "on-base", ctx],
    );
    assert!(
        text(&cached.stderr).contains("CACHED"),
        "{}",
        text(&cached.stderr)
    );
    let pulled = kiln(
        &store,
        &[
            "build",
            "--progress",
            "plain",
            "--pull",
            "--explain",
            "-t",
            "on-base",
            ctx,
        ],
    );
    let stderr = text(&pulled.stderr);
    assert!(pulled.status.success(), "{stderr}");
    assert!(!stderr.contains("CACHED"), "{stderr}");
    assert!(stderr.contains("base image changed"), "{stderr}");
    let out = ok(kiln(
        &store,
        &["run", "--rm", "--network", "none", "on-base"],
    ));
    assert_eq!(out, "moved\n");

    // A base the registry does not have: one error naming it.
    std::fs::write(
        context.join("Dockerfile"),
        format!("FROM {}/absent:1\n", registry.address),
    )
    .unwrap();
    let out = kiln(&store, &["build", "-t", "absent", ctx]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("absent:1") && stderr.contains("MANIFEST_UNKNOWN"),
        "{stderr}"
    );
}

#[test]
fn basic_auth_uses_the_docker_config_and_says_when_it_has_none() {
    let w = busybox_workspace();
    let registry = LocalRegistry::start(
        &w.work,
        Auth::Basic {
            user: "kiln".into(),
            password: "s3cret".into(),
        },
    );
    build_app(&w.root, &w.work);
    let dest = format!("{}/private:1", registry.address);
    let config = docker_config(&w.work);
    let env = [("DOCKER_CONFIG", config.to_str().unwrap())];

    let out = kiln_env(&w.root, &["push", "app", &dest], &env);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("authentication required") && stderr.contains(&registry.address),
        "{stderr}"
    );

    // What `docker login` writes: auths.HOST.auth = base64(user:password).
    let write_auth = |password: &str| {
        use base64::Engine as _;
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("kiln:{password}"));
        std::fs::write(
            config.join("config.json"),
            serde_json::json!({"auths": {registry.address.clone(): {"auth": auth}}}).to_string(),
        )
        .unwrap();
    };
    write_auth("wrong");
    let out = kiln_env(&w.root, &["push", "app", &dest], &env);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("credentials were refused"),
        "{}",
        text(&out.stderr)
    );

    write_auth("s3cret");
    let pushed = ok(kiln_env(&w.root, &["push", "-q", "app", &dest], &env));
    let store = w.work.join("pulled");
    let pulled = ok(kiln_env(&store, &["pull", "-q", &dest], &env));
    assert_eq!(pulled, pushed);
    let out = ok(kiln(&store, &["run", "--rm", "--network", "none", &dest]));
    assert_eq!(out, "pushed and pulled\n");
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `kiln login` with the password on stdin.
/// An empty Docker config directory (for DOCKER_CONFIG) under `work`.
fn docker_config(work: &Path) -> std::path::PathBuf {
    let config = work.join("docker-config");
    std::fs::create_dir_all(&config).unwrap();
    config
}

/// `kiln login SERVER -u kiln` with `password` on stdin and `env`.
fn login(env: &[(&str, &str)], server: &str, password: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["login", server, "-u", "kiln", "--password-stdin"])
        .env("KILN_REGISTRY_ALLOW", "127.0.0.1")
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn login_checks_the_password_stores_it_as_docker_does_and_logout_forgets_it() {
    use std::os::unix::fs::PermissionsExt;
    let w = busybox_workspace();
    let registry = LocalRegistry::start(
        &w.work,
        Auth::Basic {
            user: "kiln".into(),
            password: "s3cret".into(),
        },
    );
    build_app(&w.root, &w.work);
    let config = docker_config(&w.work);
    // Settings of docker's own are kept.
    std::fs::write(config.join("config.json"), r#"{"detachKeys": "ctrl-e,e"}"#).unwrap();
    let env = [("DOCKER_CONFIG", config.to_str().unwrap())];
    let dest = format!("{}/private:1", registry.address);

    let refused = login(&env, &registry.address, "wrong");
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("credentials were refused"),
        "{}",
        text(&refused.stderr)
    );
    let file = std::fs::read_to_string(config.join("config.json")).unwrap();
    assert!(
        !file.contains("auths"),
        "a refused login was stored: {file}"
    );

    let logged = login(&env, &registry.address, "s3cret");
    assert!(logged.status.success(), "{}", text(&logged.stderr));
    assert_eq!(text(&logged.stdout), "Login Succeeded\n");
    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(config.join("config.json")).unwrap())
            .unwrap();
    assert_eq!(file["detachKeys"], "ctrl-e,e");
    assert_eq!(file["auths"][&registry.address]["auth"], "a2lsbjpzM2NyZXQ=");
    let mode = std::fs::metadata(config.join("config.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    ok(kiln_env(&w.root, &["push", "-q", "app", &dest], &env));

    let out = ok(kiln_env(&w.root, &["logout", &registry.address], &env));
    assert!(out.contains("Removing login credentials"), "{out}");
    let out = kiln_env(&w.root, &["push", "app", &dest], &env);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("authentication required"),
        "{}",
        text(&out.stderr)
    );
    let out = ok(kiln_env(&w.root, &["logout", &registry.address], &env));
    assert!(out.contains("Not logged in"), "{out}");
}

#[test]
fn a_tls_registry_is_trusted_through_a_certs_d_directory() {
    let w = busybox_workspace();
    let registry = LocalRegistry::start_tls(&w.work, Auth::Open, false);
    build_app(&w.root, &w.work);
    let dest = format!("{}/secure:1", registry.address);
    let certs = w.work.join("certs.d");
    let certs_arg = certs.to_str().unwrap();

    // Its CA unknown: HTTPS fails, and so does the HTTP a loopback
    // registry may be tried with; the error says both.
    let out = kiln(
        &w.root,
        &["push", "--registry-certs", certs_arg, "app", &dest],
    );
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("over HTTPS") && stderr.contains("nor HTTP"),
        "{stderr}"
    );

    // Docker's layout: certs.d/HOST:PORT/ca.crt.
    let host_dir = certs.join(&registry.address);
    std::fs::create_dir_all(&host_dir).unwrap();
    std::fs::copy(registry.ca.as_ref().unwrap(), host_dir.join("ca.crt")).unwrap();
    let pushed = ok(kiln(
        &w.root,
        &["push", "-q", "--registry-certs", certs_arg, "app", &dest],
    ));
    let store = w.work.join("pulled");
    let pulled = ok(kiln(
        &store,
        &["pull", "-q", "--registry-certs", certs_arg, &dest],
    ));
    assert_eq!(pulled, pushed);
    // skopeo, trusting only that CA, reads the same manifest over HTTPS.
    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--cert-dir",
        host_dir.to_str().unwrap(),
        &format!("docker://{dest}"),
    ]);
    assert_eq!(format!("sha256:{}\n", sha256_hex(raw.as_bytes())), pushed);
}

#[test]
fn a_registry_that_wants_a_client_certificate_gets_the_one_in_certs_d() {
    let w = busybox_workspace();
    let registry = LocalRegistry::start_tls(&w.work, Auth::Open, true);
    build_app(&w.root, &w.work);
    let dest = format!("{}/mtls:1", registry.address);
    let certs = w.work.join("certs.d");
    let host_dir = certs.join(&registry.address);
    std::fs::create_dir_all(&host_dir).unwrap();
    std::fs::copy(registry.ca.as_ref().unwrap(), host_dir.join("ca.crt")).unwrap();
    let push = || {
        kiln(
            &w.root,
            &[
                "push",
                "-q",
                "--registry-certs",
                certs.to_str().unwrap(),
                "app",
                &dest,
            ],
        )
    };
    let refused = push();
    assert!(
        !refused.status.success(),
        "pushed without a client certificate"
    );
    for name in ["client.cert", "client.key"] {
        std::fs::copy(w.work.join(name), host_dir.join(name)).unwrap();
    }
    ok(push());
    // A certificate without its key is an error naming it.
    std::fs::remove_file(host_dir.join("client.key")).unwrap();
    let out = push();
    assert!(
        text(&out.stderr).contains("client.key"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn token_auth_gets_one_token_per_scope_and_reuses_it() {
    let w = busybox_workspace();
    let registry = LocalRegistry::start(
        &w.work,
        Auth::Token {
            user: "kiln".into(),
            password: "s3cret".into(),
        },
    );
    build_app(&w.root, &w.work);
    let config = docker_config(&w.work);
    let env = [("DOCKER_CONFIG", config.to_str().unwrap())];
    let dest = format!("{}/team/tokened:1", registry.address);

    let out = kiln_env(&w.root, &["push", "app", &dest], &env);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("token server refused (401)"),
        "{}",
        text(&out.stderr)
    );
    assert!(!login(&env, &registry.address, "wrong").status.success());
    assert_eq!(registry.tokens_granted(), 0);

    let logged = login(&env, &registry.address, "s3cret");
    assert!(logged.status.success(), "{}", text(&logged.stderr));
    let before = registry.tokens_granted();
    let pushed = ok(kiln_env(&w.root, &["push", "-q", "app", &dest], &env));
    // Every HEAD, POST and PUT of the push under one token.
    assert_eq!(registry.tokens_granted(), before + 1, "{}", registry.log());
    let store = w.work.join("pulled");
    let pulled = ok(kiln_env(&store, &["pull", "-q", &dest], &env));
    assert_eq!(pulled, pushed);
    assert_eq!(registry.tokens_granted(), before + 2);

    // A mount's token holds two scopes (push here, pull there): one more
    // token beside the HEADs' own, reused for every blob mounted.
    let other = format!("{}/team/mounted:1", registry.address);
    let out = kiln_env(&w.root, &["push", "app", &other], &env);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("mounted from team/tokened"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(registry.tokens_granted(), before + 4);
}

#[test]
fn a_push_to_another_repository_mounts_the_blobs_it_already_has() {
    let w = busybox_workspace();
    let registry = LocalRegistry::start(&w.work, Auth::Open);
    build_app(&w.root, &w.work);
    let first = format!("{}/one/app:1", registry.address);
    let pushed = ok(kiln(&w.root, &["push", "-q", "app", &first]));
    let uploads_before = registry.requests("PUT", "/blobs/uploads/");
    let second = format!("{}/two/app:1", registry.address);
    let out = kiln(&w.root, &["push", "app", &second]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        stderr.matches("mounted from one/app").count(),
        3,
        "{stderr}"
    );
    assert_eq!(
        registry.requests("POST", "mount=sha256"),
        3,
        "{}",
        registry.log()
    );
    assert_eq!(
        registry.requests("PUT", "/blobs/uploads/"),
        uploads_before,
        "{}",
        registry.log()
    );
    // What a pull saw counts too: a store that only pulled mounts as well.
    let puller = w.work.join("puller");
    ok(kiln(&puller, &["pull", "-q", &second]));
    ok(kiln(&puller, &["tag", &second, "again"]));
    let third = format!("{}/three/app:1", registry.address);
    let out = kiln(&puller, &["push", "--compression", "none", "again", &third]);
    assert!(
        text(&out.stderr).contains("mounted from two/app"),
        "{}",
        text(&out.stderr)
    );
    let store = w.work.join("check");
    assert_eq!(ok(kiln(&store, &["pull", "-q", &third])), pushed);
}

#[test]
fn build_push_and_an_image_output_push_what_was_built() {
    let w = busybox_workspace();
    let registry = LocalRegistry::start(&w.work, Auth::Open);
    let context = w.work.join("ctx");
    std::fs::create_dir_all(&context).unwrap();
    std::fs::write(
        context.join("Dockerfile"),
        "FROM busybox\nRUN echo built and pushed > /greeting\nCMD [\"cat\", \"/greeting\"]\n",
    )
    .unwrap();
    let tagged = format!("{}/built:1", registry.address);
    let output = format!("{}/built:out", registry.address);
    let out = kiln(
        &w.root,
        &[
            "build",
            "-q",
            "--push",
            "-t",
            &tagged,
            "--output",
            &format!("type=image,name={output},push=true"),
            context.to_str().unwrap(),
        ],
    );
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    for name in [&tagged, &output] {
        let line = stderr
            .lines()
            .find(|l| l.starts_with(&format!("pushed {name}: ")))
            .unwrap_or_else(|| panic!("no push of {name}: {stderr}"));
        let digest = line.rsplit(' ').next().unwrap();
        let store = w
            .work
            .join(format!("store-{}", name.rsplit(':').next().unwrap()));
        let pulled = ok(kiln(&store, &["pull", "-q", name]));
        assert_eq!(pulled.trim(), digest);
        let run = ok(kiln(&store, &["run", "--rm", "--network", "none", name]));
        assert_eq!(run, "built and pushed\n");
    }
    // The output's name is a name in the store too.
    ok(kiln(&w.root, &["inspect", &output]));
    let out = kiln(&w.root, &["build", "--push", context.to_str().unwrap()]);
    assert!(
        text(&out.stderr).contains("--push needs a name"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_registry_cache_exported_from_one_store_gives_hits_in_another() {
    let w = busybox_workspace();
    let registry = LocalRegistry::start(&w.work, Auth::Open);
    let context = w.work.join("ctx");
    std::fs::create_dir_all(&context).unwrap();
    std::fs::write(context.join("input.txt"), "cached input\n").unwrap();
    // The base comes from the registry, so the other store can be empty.
    let base = format!("{}/library/busybox:1", registry.address);
    ok(kiln(&w.root, &["push", "-q", "busybox", &base]));
    std::fs::write(
        context.join("Dockerfile"),
        format!(
            "FROM {base} AS build\nCOPY input.txt /in\nRUN cp /in /built\n\
             FROM {base}\nCOPY --from=build /built /out\nRUN cat /out > /final\nCMD [\"cat\", \"/final\"]\n"
        ),
    )
    .unwrap();
    let ctx = context.to_str().unwrap();
    let cache = format!("{}/team/cache:main", registry.address);
    let to = format!("type=registry,ref={cache},mode=max");
    let from = format!("type=registry,ref={cache}");

    // The first build: no cache there yet, a warning, and the export.
    let first = kiln(
        &w.root,
        &[
            "build",
            "-q",
            "-t",
            "app",
            "--cache-from",
            &from,
            "--cache-to",
            &to,
            ctx,
        ],
    );
    assert!(first.status.success(), "{}", text(&first.stderr));
    assert!(
        text(&first.stderr).contains("registry cache was not imported"),
        "{}",
        text(&first.stderr)
    );
    let image = text(&first.stdout).trim().to_owned();

    // Another machine: an empty store.
    let root = w.work.join("other-store");
    let out = kiln(
        &root,
        &[
            "build",
            "--progress",
            "plain",
            "-t",
            "app",
            "--cache-from",
            &from,
            ctx,
        ],
    );
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stderr.matches("CACHED").count(), 5, "{stderr}");
    assert!(stderr.contains("100% hit rate"), "{stderr}");
    assert_eq!(text(&out.stdout).trim(), image, "the same image");
    let run = ok(kiln(&root, &["run", "--rm", "--network", "none", "app"]));
    assert_eq!(run, "cached input\n");
    let check = kiln(&root, &["check"]);
    assert!(check.status.success(), "{}", text(&check.stderr));

    // A ref that is not a kiln cache is refused, by a warning.
    let not_cache = format!("{}/team/image:1", registry.address);
    ok(kiln(&w.root, &["push", "-q", "app", &not_cache]));
    let out = kiln(
        &root,
        &[
            "build",
            "-q",
            "--cache-from",
            &format!("type=registry,ref={not_cache}"),
            ctx,
        ],
    );
    assert!(
        text(&out.stderr).contains("not a kiln cache"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_pull_on_a_terminal_draws_a_bar_per_blob() {
    let w = busybox_workspace();
    let registry = LocalRegistry::start(&w.work, Auth::Open);
    build_app(&w.root, &w.work);
    let name = format!("{}/shown:1", registry.address);
    ok(kiln(&w.root, &["push", "-q", "app", &name]));
    let session = format!("kiln-pull-{}", std::process::id());
    let command = format!(
        "KILN_REGISTRY_ALLOW=127.0.0.1 {} --root {} pull {name}; sleep 60",
        env!("CARGO_BIN_EXE_kiln"),
        w.work.join("tty-store").display(),
    );
    let tmux = |args: &[&str]| {
        let out = Command::new("tmux")
            .args(args)
            .output()
            .expect("tmux is installed by scripts/install-test-deps.sh");
        text(&out.stdout)
    };
    tmux(&[
        "new-session",
        "-d",
        "-s",
        &session,
        "-x",
        "120",
        "-y",
        "20",
        &command,
    ]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let screen = loop {
        let screen = tmux(&["capture-pane", "-p", "-t", &session]);
        if screen.contains("Status:") || std::time::Instant::now() > deadline {
            break screen;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    tmux(&["kill-session", "-t", &session]);
    // Three blobs (config and two layers), each a finished bar.
    let bars: Vec<&str> = screen
        .lines()
        .filter(|l| l.contains('█') && l.ends_with("pulled"))
        .collect();
    assert_eq!(bars.len(), 3, "{screen}");
    assert!(
        screen.contains("Status: Downloaded newer image"),
        "{screen}"
    );
}

#[test]
fn kiln_run_pulls_an_image_the_store_lacks_unless_told_not_to() {
    let w = busybox_workspace();
    let registry = LocalRegistry::start(&w.work, Auth::Open);
    build_app(&w.root, &w.work);
    let name = format!("{}/runnable:1", registry.address);
    ok(kiln(&w.root, &["push", "-q", "app", &name]));
    let store = w.work.join("empty");
    let never = kiln(
        &store,
        &["run", "--rm", "--pull", "never", "--network", "none", &name],
    );
    assert!(!never.status.success());
    assert_eq!(
        registry.requests("GET", "/manifests/"),
        0,
        "{}",
        registry.log()
    );
    let out = kiln(&store, &["run", "--rm", "--network", "none", &name]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains(&format!("Unable to find image '{name}' locally")));
    assert_eq!(text(&out.stdout), "pushed and pulled\n");
    // Now it is there: no pull.
    let before = registry.requests("GET", "/manifests/");
    ok(kiln(&store, &["run", "--rm", "--network", "none", &name]));
    assert_eq!(registry.requests("GET", "/manifests/"), before);
}

#[test]
fn a_credential_helper_stores_the_login_and_gives_it_back() {
    use std::os::unix::fs::PermissionsExt;
    let w = busybox_workspace();
    let registry = LocalRegistry::start(
        &w.work,
        Auth::Basic {
            user: "kiln".into(),
            password: "s3cret".into(),
        },
    );
    build_app(&w.root, &w.work);
    // A helper as docker-credential-* are: `store` reads {ServerURL,
    // Username, Secret} on stdin, `get` reads a server URL and answers
    // {Username, Secret}, `erase` reads a server URL (read before the
    // helper exits, or kiln's write meets a closed pipe).
    let bin = w.work.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let saved = w.work.join("helper-store");
    let helper = bin.join("docker-credential-kilntest");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\nset -e\ncase \"$1\" in\n\
             store) cat > {saved} ;;\n\
             get) read server || true; [ -f {saved} ] || {{ echo 'credentials not found in native keychain'; exit 1; }}; \
             sed 's/\"ServerURL\":\"[^\"]*\",//' {saved} ;;\n\
             erase) read server || true; rm -f {saved} ;;\n\
             esac\n",
            saved = saved.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = docker_config(&w.work);
    std::fs::write(config.join("config.json"), r#"{"credsStore": "kilntest"}"#).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let env = [
        ("DOCKER_CONFIG", config.to_str().unwrap()),
        ("PATH", path.as_str()),
    ];

    let out = login(&env, &registry.address, "s3cret");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("docker-credential-kilntest"),
        "{}",
        text(&out.stderr)
    );
    let stored = std::fs::read_to_string(&saved).unwrap();
    assert!(
        stored.contains("\"Secret\":\"s3cret\"") && stored.contains(&registry.address),
        "{stored}"
    );
    let file = std::fs::read_to_string(config.join("config.json")).unwrap();
    assert!(
        !file.contains("s3cret") && !file.contains("auths"),
        "the password went to the file: {file}"
    );

    let dest = format!("{}/helped:1", registry.address);
    ok(kiln_env(&w.root, &["push", "-q", "app", &dest], &env));
    let out = ok(kiln_env(&w.root, &["logout", &registry.address], &env));
    assert!(out.contains("Removing login credentials"), "{out}");
    assert!(!saved.exists(), "erase was not called");
}
