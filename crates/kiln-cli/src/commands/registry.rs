//! The commands that talk to registries: `pull` and `push`, and the flags
//! they share with `build` (which pulls the bases the store lacks).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use clap::Args;
use kiln_registry::{ClientOptions, Platform, PullEvent, PushCompression, PushEvent};
use kiln_store::Digest;

use super::dockerfile::print;
use super::images::open_store;
use crate::output::report;
use kiln_engine::human_size;

/// The environment variable naming the only registries kiln may contact
/// (comma-separated hosts, with or without port), for machines and test
/// runs that must reach nothing else.
pub const ALLOW_VARIABLE: &str = "KILN_REGISTRY_ALLOW";

/// How kiln reaches registries (and KILN_REGISTRY_ALLOW=HOST,... limits
/// which it may).
#[derive(Args, Clone, Debug, Default)]
pub struct RegistryArgs {
    /// A registry (HOST[:PORT]) that may be reached over plain HTTP, as
    /// Docker's insecure-registries (loopback addresses always may)
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    insecure: Vec<String>,
    /// Where registries' CA and client certificates are, as HOST[:PORT]/ca.crt,
    /// client.cert, client.key (Docker's layout; default /etc/docker/certs.d)
    #[arg(long = "registry-certs", value_name = "DIR")]
    certs_dir: Option<std::path::PathBuf>,
}

/// The environment variable naming Docker's daemon config to read
/// `insecure-registries` from (default `/etc/docker/daemon.json`).
pub const DAEMON_CONFIG_VARIABLE: &str = "KILN_DOCKER_DAEMON_CONFIG";

impl RegistryArgs {
    /// The client's options: `--insecure-registry` and the
    /// `insecure-registries` of Docker's `daemon.json` (the config entry
    /// Docker users already have), `--registry-certs`, `KILN_REGISTRY_ALLOW`.
    pub fn options(&self) -> anyhow::Result<ClientOptions> {
        let daemon_config = std::env::var_os(DAEMON_CONFIG_VARIABLE).map_or_else(
            || "/etc/docker/daemon.json".into(),
            std::path::PathBuf::from,
        );
        let mut insecure = self.insecure.clone();
        insecure.extend(insecure_registries(&daemon_config)?);
        Ok(ClientOptions {
            insecure,
            credential: None,
            credentials_by_registry: None,
            certs_dir: self.certs_dir.clone(),
            allowed: std::env::var(ALLOW_VARIABLE).ok().map(|list| {
                list.split(',')
                    .map(str::trim)
                    .filter(|h| !h.is_empty())
                    .map(str::to_owned)
                    .collect()
            }),
        })
    }
}

/// `insecure-registries` of a Docker daemon config; none if it is absent.
fn insecure_registries(path: &Path) -> anyhow::Result<Vec<String>> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(anyhow::anyhow!("{}: {e}", path.display())),
    };
    let config: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: not a Docker daemon config: {e}", path.display()))?;
    Ok(config["insecure-registries"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.as_str())
        // Docker also takes CIDRs; kiln matches hosts by name.
        .filter(|entry| !entry.contains('/'))
        .map(str::to_owned)
        .collect())
}

/// `--platform` (kiln-graph's grammar, as `kiln plan` reads it), or the
/// host's, as what an index is resolved for.
pub fn platform(text: Option<&str>) -> anyhow::Result<Platform> {
    let platform = match text {
        Some(text) => kiln_graph::Platform::parse(text).map_err(anyhow::Error::msg)?,
        None => kiln_graph::Platform::host(),
    };
    Ok(Platform::new(
        &platform.os,
        &platform.architecture,
        platform.variant.as_deref(),
    ))
}

#[derive(Args)]
pub struct PullArgs {
    /// The image (`alpine`, `registry:5000/team/app:1.0`, `app@sha256:...`)
    name: String,
    /// The platform of an index to pull (os/arch[/variant]); default the host's
    #[arg(long, value_name = "PLATFORM")]
    platform: Option<String>,
    /// Print only the manifest digest
    #[arg(short, long)]
    quiet: bool,
    #[command(flatten)]
    registry: RegistryArgs,
}

pub fn pull(root: Option<&Path>, args: PullArgs) -> anyhow::Result<()> {
    let store = open_store(root)?;
    let platform = platform(args.platform.as_deref())?;
    let view = PullView::new(args.quiet);
    let events = |event: PullEvent| view.event(event);
    let pulled = kiln_registry::pull(
        &store,
        &args.name,
        &platform,
        &args.registry.options()?,
        &events,
    )?;
    // The finished bars stay, as docker's "Pull complete" lines do.
    drop(view);
    let quiet = args.quiet;
    if quiet {
        return print(&format!("{}\n", pulled.manifest));
    }
    report!("Digest: {}", pulled.manifest);
    let status = if pulled.new {
        "Downloaded newer image for"
    } else {
        "Image is up to date for"
    };
    report!(
        "Status: {status} {}",
        pulled.tagged.as_deref().unwrap_or(&args.name)
    );
    print(&format!(
        "{}\n",
        pulled.tagged.as_deref().unwrap_or(&args.name)
    ))
}

/// What a pull shows: on a terminal a bar per blob as it downloads
/// (indicatif), elsewhere a line per blob once it is stored.
pub struct PullView {
    quiet: bool,
    bars: Option<(
        indicatif::MultiProgress,
        Mutex<HashMap<Digest, indicatif::ProgressBar>>,
    )>,
}

impl PullView {
    pub fn new(quiet: bool) -> PullView {
        use std::io::IsTerminal;
        let bars = (!quiet && std::io::stderr().is_terminal())
            .then(|| (indicatif::MultiProgress::new(), Mutex::new(HashMap::new())));
        PullView { quiet, bars }
    }

    pub fn event(&self, event: PullEvent) {
        if self.quiet {
            return;
        }
        let Some((multi, bars)) = &self.bars else {
            match event {
                PullEvent::Resolved { manifest, layers } => {
                    report!("{}: {layers} layers", short(&manifest))
                }
                PullEvent::Present { digest, .. } => report!("{}: already present", short(&digest)),
                PullEvent::Downloaded { digest, size } => {
                    report!("{}: pulled ({})", short(&digest), human_size(size))
                }
                PullEvent::Progress { .. } => {}
            }
            return;
        };
        let mut bars = bars.lock().unwrap_or_else(|e| e.into_inner());
        let mut bar = |digest: Digest, total: u64| {
            bars.entry(digest)
                .or_insert_with(|| {
                    let bar = multi.add(indicatif::ProgressBar::new(total));
                    bar.set_style(
                        indicatif::ProgressStyle::with_template(
                            "{prefix} {bar:30} {bytes}/{total_bytes} {msg}",
                        )
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                    );
                    bar.set_prefix(short(&digest));
                    bar
                })
                .clone()
        };
        match event {
            PullEvent::Resolved { .. } => {}
            PullEvent::Progress {
                digest,
                done,
                total,
            } => bar(digest, total).set_position(done),
            PullEvent::Present { digest, size } => {
                bar(digest, size).finish_with_message("already present")
            }
            PullEvent::Downloaded { digest, size } => {
                let bar = bar(digest, size);
                bar.set_position(size);
                bar.finish_with_message("pulled");
            }
        }
    }
}

/// How `push` compresses plain layers.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default)]
pub enum CompressionArg {
    /// What every registry and runtime reads (Docker's default)
    #[default]
    Gzip,
    /// Smaller and faster; needs containerd 1.5+ / Docker 23+ to pull
    Zstd,
    /// As the store holds them: the pushed image keeps the local digest
    None,
}

#[derive(Args)]
pub struct PushArgs {
    /// The image to push (a name, digest or id of the store)
    name: String,
    /// Where to push it (default: NAME, which must then name a registry)
    dest: Option<String>,
    /// How plain layers are compressed on the way out
    #[arg(long, value_enum, default_value_t = CompressionArg::Gzip)]
    compression: CompressionArg,
    /// Print only the pushed manifest's digest
    #[arg(short, long)]
    quiet: bool,
    #[command(flatten)]
    registry: RegistryArgs,
}

pub fn push(root: Option<&Path>, args: PushArgs) -> anyhow::Result<()> {
    let store = open_store(root)?;
    let descriptor = store.resolve(&args.name)?;
    let manifest = Digest::of_descriptor(&descriptor)?;
    let dest = args.dest.as_deref().unwrap_or(&args.name);
    let compression = match args.compression {
        CompressionArg::Gzip => PushCompression::Gzip,
        CompressionArg::Zstd => PushCompression::Zstd,
        CompressionArg::None => PushCompression::None,
    };
    let quiet = args.quiet;
    let events = |event: PushEvent| {
        if quiet {
            return;
        }
        match event {
            PushEvent::Present { digest, .. } => {
                report!("{}: layer already exists", short(&digest))
            }
            PushEvent::Uploaded { digest, size } => {
                report!("{}: pushed ({})", short(&digest), human_size(size))
            }
            PushEvent::Mounted { digest, from } => {
                report!("{}: mounted from {from}", short(&digest))
            }
        }
    };
    let pushed = kiln_registry::push(
        &store,
        &manifest,
        dest,
        compression,
        &args.registry.options()?,
        &events,
    )?;
    if quiet {
        return print(&format!("{}\n", pushed.manifest));
    }
    print(&format!(
        "{dest}: digest: {} size: {}\n",
        pushed.manifest, pushed.size
    ))
}

/// The first 12 hex digits, as Docker shows layers.
fn short(digest: &Digest) -> String {
    digest.hex()[..12].to_owned()
}

#[derive(Args)]
pub struct LoginArgs {
    /// The registry (HOST[:PORT]; default Docker Hub)
    server: Option<String>,
    /// The user name
    #[arg(short, long)]
    username: Option<String>,
    /// The password (visible to other users in the process list: prefer --password-stdin)
    #[arg(short, long)]
    password: Option<String>,
    /// Read the password from standard input
    #[arg(long = "password-stdin")]
    password_stdin: bool,
    #[command(flatten)]
    registry: RegistryArgs,
}

pub fn login(args: LoginArgs) -> anyhow::Result<()> {
    use std::io::{BufRead, IsTerminal};
    let domain = kiln_registry::domain_of_config_key(args.server.as_deref().unwrap_or("docker.io"));
    let stdin = std::io::stdin();
    let username = match args.username {
        Some(user) => user,
        None if stdin.is_terminal() && !args.password_stdin => {
            eprint!("Username: ");
            let mut line = String::new();
            stdin.lock().read_line(&mut line)?;
            line.trim().to_owned()
        }
        None => anyhow::bail!("kiln login {domain}: give a user name with -u"),
    };
    let password = match (args.password, args.password_stdin) {
        (Some(_), true) => anyhow::bail!("--password and --password-stdin are mutually exclusive"),
        (Some(password), false) => password,
        (None, true) => {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut stdin.lock(), &mut text)?;
            text.trim_end_matches(['\n', '\r']).to_owned()
        }
        (None, false) if stdin.is_terminal() => rpassword::prompt_password("Password: ")?,
        (None, false) => {
            anyhow::bail!("kiln login {domain}: give the password with --password-stdin")
        }
    };
    if username.is_empty() || password.is_empty() {
        anyhow::bail!("kiln login {domain}: the user name and the password must not be empty");
    }
    let credential =
        kiln_registry::Credential::UsernamePassword(username.clone(), password.clone());
    let mut options = args.registry.options()?;
    options.credential = Some(credential);
    // Checked first: a wrong password is never stored.
    kiln_registry::Registry::connect(&domain, &options)?.check_login()?;
    let kept = kiln_registry::store_credential(&domain, &username, &password)
        .map_err(anyhow::Error::msg)?;
    match kept {
        kiln_registry::Kept::ConfigFile(path) => {
            report!("Credentials stored in {} (unencrypted)", path.display())
        }
        kiln_registry::Kept::Helper(helper) => {
            report!("Credentials stored by docker-credential-{helper}")
        }
    }
    print("Login Succeeded\n")
}

#[derive(Args)]
pub struct LogoutArgs {
    /// The registry (HOST[:PORT]; default Docker Hub)
    server: Option<String>,
}

pub fn logout(args: LogoutArgs) -> anyhow::Result<()> {
    let domain = kiln_registry::domain_of_config_key(args.server.as_deref().unwrap_or("docker.io"));
    if kiln_registry::erase_credential(&domain).map_err(anyhow::Error::msg)? {
        print(&format!("Removing login credentials for {domain}\n"))
    } else {
        print(&format!("Not logged in to {domain}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insecure_registries_come_from_the_flag_and_dockers_daemon_config() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("daemon.json");
        assert!(
            insecure_registries(&config).unwrap().is_empty(),
            "no file, none"
        );
        std::fs::write(
            &config,
            r#"{"insecure-registries": ["reg.lan:5000", "10.0.0.0/8"], "debug": true}"#,
        )
        .unwrap();
        assert_eq!(insecure_registries(&config).unwrap(), vec!["reg.lan:5000"]);
        std::fs::write(&config, "{not json").unwrap();
        let error = insecure_registries(&config).unwrap_err().to_string();
        assert!(
            error.contains("daemon.json: not a Docker daemon config"),
            "{error}"
        );
    }
}
