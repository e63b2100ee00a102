//! A RUN step: the stage's layers as overlay lower dirs (store snapshots),
//! the command in a container (kiln-runtime) with the step's environment,
//! user, working directory, network and `--mount`s, its output streamed,
//! and the overlay upper dir committed as the step's layer and kept as
//! that layer's snapshot, the lower dir of the next RUN.

use std::collections::VecDeque;
use std::path::PathBuf;

use kiln_context::Root;
use kiln_graph::{MountKind, Network, Node, Platform, RunOp, Sharing, SourceRef};
use kiln_runtime::{BindSource, ContainerSpec, ExitStatus, Mount, OutputSink};
use kiln_store::{Keep, Layer, Store};

use crate::base::pinned_base;
use crate::error::BuildError;
use crate::executor::{BuildOptions, StepEvent};
use crate::reads::Reads;
use crate::rootfs;
use crate::stage::{StageFs, Stages, TempDir};

/// How many lines of output a failed step shows.
const TAIL_LINES: usize = 12;

/// The hostname RUN sees; BuildKit's, which some build scripts expect.
const HOSTNAME: &str = "buildkitsandbox";

/// The default pids limit of a RUN step, so that a fork bomb in a
/// Dockerfile stops at EAGAIN instead of filling the host's pid table
/// (32768 entries by default; threads count too). Podman's default is
/// 2048; 4096 leaves room for parallel compilers and test runners (`make
/// -j`, a JVM's or rustc's threads) while keeping the host usable.
/// Docker and BuildKit set none.
pub const DEFAULT_RUN_PIDS_LIMIT: u64 = 4096;

/// Fails a RUN of a stage for a platform this host cannot execute (no
/// emulator registered), rather than running the base's binaries for
/// another architecture under the wrong label or failing with `exec
/// format error`.
pub fn check_runnable(node: &Node, platform: &Platform) -> Result<(), BuildError> {
    let host = Platform::host();
    let native = platform.architecture == host.architecture
        || (host.architecture == "amd64" && platform.architecture == "386");
    if native || kiln_runtime::emulator_registered(&platform.architecture) {
        return Ok(());
    }
    Err(BuildError::step(
        node.line,
        format!(
            "{}: the stage is for {platform}, and this {host} host cannot run its programs: \
             no binfmt_misc emulator for {} is registered (install qemu-user-static, or \
             build for {host})",
            node.display, platform.architecture
        ),
    ))
}

/// Runs `run` on top of `state` and returns the layer of what it changed,
/// and with [`BuildOptions::track_reads`] what it read of the layers below.
pub fn run_step(
    store: &Store,
    node: &Node,
    run: &RunOp,
    state: &StageFs,
    stages: &Stages,
    options: &BuildOptions<'_>,
    keep: Keep,
) -> Result<(Layer, Option<Reads>), BuildError> {
    let fail = |message: String| BuildError::step(node.line, message);
    kiln_runtime::require_root().map_err(|e| fail(format!("{}: {e}", node.display)))?;
    let digests: Vec<_> = state.layers.iter().map(|l| l.digest).collect();
    let lowers = store.lower_dirs_of(&digests)?;
    let lower_dirs: Vec<_> = lowers.iter().map(|(_, dir)| dir.clone()).collect();
    let scratch = TempDir::new(store)?;
    let mut mounts = Vec::new();
    let mut held = Held::default();
    let mut secret_env = Vec::new();
    for mount in &run.mounts {
        if mount.kind == MountKind::Secret {
            mounts.extend(secret_mount(node, mount, options, &mut secret_env)?);
            continue;
        }
        let has_agent = secret_env.iter().any(|e| e.starts_with("SSH_AUTH_SOCK="));
        if mount.kind == MountKind::Ssh && !has_agent {
            secret_env.push(format!("SSH_AUTH_SOCK={}", mount.target));
        }
        mounts.push(prepare_mount(
            store, node, mount, stages, options, &mut held,
        )?);
    }

    let resolved = kiln_runtime::process_user(&lower_dirs, Some(&node.inputs.user))
        .map_err(|e| fail(format!("{}: {e}", node.display)))?;
    let mut env: Vec<String> = node
        .inputs
        .env
        .iter()
        .chain(&node.inputs.proxy_env)
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    kiln_runtime::set_default_home(&mut env, &resolved);
    // Secrets reach the command only: never the key, the history or a log.
    env.extend(secret_env);
    let (args, pipes) = command_line(run, &scratch)?;
    if let Some(pipes) = pipes {
        mounts.push(pipes);
    }
    let spec = ContainerSpec {
        lower_dirs,
        upper_dir: scratch.0.join("upper"),
        work_dir: scratch.0.join("work"),
        args,
        env,
        cwd: if node.inputs.workdir.is_empty() {
            "/".into()
        } else {
            node.inputs.workdir.clone()
        },
        user: resolved.user,
        hostname: HOSTNAME.into(),
        network: match run.network {
            // The default is the host's network, so package managers work.
            Network::Default | Network::Host => kiln_runtime::Network::Host,
            Network::None => kiln_runtime::Network::None,
        },
        mounts,
        hosts: None,
        extra_hosts: run.extra_hosts.clone(),
        resolv_conf: None,
        state_parent: Some(scratch.0.clone()),
        // Reached only with --allow security.insecure (the executor checks);
        // it also lifts seccomp, as in BuildKit.
        privileged: run.insecure,
        seccomp: kiln_runtime::Seccomp::Default,
        // Docker's default set, a writable rootfs: what BuildKit gives RUN.
        capabilities: kiln_runtime::CapabilityChanges::default(),
        read_only: false,
        // Checked by the engine before planning (the text is the plan's).
        ulimits: run
            .ulimits
            .iter()
            .filter_map(|u| kiln_runtime::Ulimit::parse(u).ok())
            .collect(),
        shm_size: run.shm_size,
        // As BuildKit: setuid binaries (su, sudo, gosu) work in RUN.
        no_new_privileges: false,
        resources: kiln_runtime::Resources {
            pids_limit: options.run_pids_limit,
            ..Default::default()
        },
        // As BuildKit: the command is pid 1 of its namespace, no init.
        init: false,
        // The upper dir is committed (or thrown away) once the command
        // ends; what of it reaches the disk, and when, is the store's call.
        volatile_upper: true,
        track_reads: options.track_reads,
    };
    let mut sink = StepOutput {
        node,
        progress: options.progress,
        partial: [Vec::new(), Vec::new()],
        tail: VecDeque::new(),
    };
    let mut container = kiln_runtime::Container::spawn(&spec)
        .map_err(|e| fail(format!("{}: {e}", node.display)))?;
    let watch = container.take_read_watch();
    let tracked = options.cancel.track(container.kill_handle());
    let waited = container.wait(&mut sink);
    drop(tracked);
    if options.cancel.is_cancelled() {
        return Err(BuildError::Interrupted);
    }
    let status = waited.map_err(|e| fail(format!("{}: {e}", node.display)))?;
    sink.flush();
    if status != ExitStatus::Exited(0) {
        let tail: Vec<String> = sink.tail.into_iter().collect();
        return Err(BuildError::Step {
            line: node.line,
            message: format!(
                "{} did not complete successfully: {}",
                node.display,
                match status {
                    ExitStatus::Exited(code) => format!("exit code {code}"),
                    ExitStatus::Signaled(signal) => format!("killed by signal {signal}"),
                }
            ),
            hint: (!tail.is_empty()).then(|| format!("its last output:\n{}", tail.join("\n"))),
        });
    }
    let reads = match watch {
        Some(watch) => {
            let seen = watch
                .finish()
                .map_err(|e| fail(format!("{}: {e}", node.display)))?;
            Some(crate::reads::resolve_reads(&seen, &lowers))
        }
        None => None,
    };
    let layer = store.commit_upper(&spec.upper_dir, options.source_date_epoch, keep)?;
    Ok((layer, reads))
}

/// The argv, and a mount for a script heredoc. As BuildKit: `RUN <<EOF`
/// alone runs the body with the shell (or, with a `#!` line, as a file
/// mounted read-only; BuildKit uses `/dev/pipes/`, kiln `/run/kiln/pipes/`
/// because the runtime keeps `/dev` to itself); heredocs after a command
/// are handed to the shell with the command.
fn command_line(
    run: &RunOp,
    scratch: &TempDir,
) -> Result<(Vec<String>, Option<Mount>), BuildError> {
    let mut argv = run.argv.clone();
    if run.heredocs.is_empty() || !run.shell_form {
        return Ok((argv, None));
    }
    let Some(command) = argv.pop() else {
        return Ok((argv, None));
    };
    let first = &run.heredocs[0];
    let only_a_heredoc = run.heredocs.len() == 1 && command.trim().starts_with("<<");
    if only_a_heredoc && first.content.starts_with("#!") {
        let dir = scratch.0.join("pipes");
        std::fs::create_dir_all(&dir).map_err(|e| BuildError::io(&dir, e))?;
        let script = dir.join(&first.name);
        std::fs::write(&script, &first.content).map_err(|e| BuildError::io(&script, e))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| BuildError::io(&script, e))?;
        let target = format!("/run/kiln/pipes/{}", first.name);
        let mount = Mount::Bind {
            source: script,
            target: target.clone(),
            readonly: true,
        };
        return Ok((vec![target], Some(mount)));
    }
    if only_a_heredoc {
        argv.push(first.content.clone());
        return Ok((argv, None));
    }
    let mut script = command;
    for heredoc in &run.heredocs {
        script.push('\n');
        script.push_str(&heredoc.content);
        script.push_str(&heredoc.name);
    }
    argv.push(script);
    Ok((argv, None))
}

/// A `--mount` option's value (`id`, `mode`, `uid`...).
/// What a RUN's mounts need kept until the command ends: unpacked stages
/// or images they bind from, copies of `rw` bind sources, and the locks of
/// `sharing=locked` cache mounts.
#[derive(Default)]
struct Held {
    unpacked: Vec<TempDir>,
    locks: Vec<std::fs::File>,
}

/// A fresh directory for a copy of a read-write bind's source.
fn scratch_bind_copy(store: &Store, held: &mut Held) -> Result<PathBuf, BuildError> {
    let dir = TempDir::new(store)?;
    let path = dir.0.join("source");
    held.unpacked.push(dir);
    Ok(path)
}

/// A `type=bind` mount. The source is resolved inside its root (the
/// context, or the stage's or image's unpacked tree) with symlinks
/// followed as they resolve there, never on the host, and mounted by
/// descriptor. `rw`: the command may write, but to a copy made through
/// descriptors, so the writes are discarded and nothing outside the root
/// is read or written.
fn bind_mount(
    store: &Store,
    mount: &kiln_graph::Mount,
    stages: &Stages,
    options: &BuildOptions<'_>,
    held: &mut Held,
    fail: impl Fn(String) -> BuildError,
) -> Result<Mount, BuildError> {
    let (root_dir, root_name) = match &mount.from {
        None => (options.context.to_owned(), "the build context".to_owned()),
        Some(from) => {
            let dir = TempDir::new(store)?;
            let (layers, name) = match from {
                SourceRef::Stage(id) => (
                    stages
                        .get(id)
                        .map(|(fs, _)| fs.layers.clone())
                        .ok_or_else(|| fail(format!("from stage {id}: not built")))?,
                    format!("stage {id}"),
                ),
                SourceRef::Image(reference) => (
                    pinned_base(store, options.images, reference)?.layers,
                    format!("image {reference}"),
                ),
            };
            rootfs::unpack(store, &layers, &dir.0, rootfs::Owners::FromLayers)?;
            let path = dir.0.clone();
            held.unpacked.push(dir);
            (path, name)
        }
    };
    let root = Root::open(&root_dir).map_err(|e| fail(e.to_string()))?;
    let source = mount.source.as_deref().unwrap_or("");
    let Some(relative) = crate::copy::contained(source) else {
        return Err(fail(format!("source {source:?} leaves its root")));
    };
    let relative = std::path::Path::new(&relative);
    let not_found = || fail(format!("source {source:?} not found in {root_name}"));
    let io = |e: std::io::Error| {
        if kiln_context::is_symlink_loop(&e) {
            fail(format!(
                "source {source:?}: too many levels of symbolic links in {root_name}"
            ))
        } else {
            BuildError::io(root.host_path(relative), e)
        }
    };
    if mount.read_only {
        let fd = match root.open_path(relative) {
            Ok(fd) => fd,
            Err(e) if missing(&e) => return Err(not_found()),
            Err(e) => return Err(io(e)),
        };
        return Ok(Mount::BindFd {
            source: BindSource::new(fd),
            target: mount.target.clone(),
            readonly: true,
        });
    }
    let real = root
        .resolve(relative, true)
        .map_err(io)?
        .ok_or_else(not_found)?;
    let copy = scratch_bind_copy(store, held)?;
    copy_tree(&root, &real, &copy)?;
    Ok(Mount::Bind {
        source: copy,
        target: mount.target.clone(),
        readonly: false,
    })
}

/// Whether resolving failed because the path is not there (inside its
/// root) rather than for an I/O reason.
fn missing(error: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(error.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory)
}

/// One `RUN --mount`, as a runtime mount.
fn prepare_mount(
    store: &Store,
    node: &Node,
    mount: &kiln_graph::Mount,
    stages: &Stages,
    options: &BuildOptions<'_>,
    held: &mut Held,
) -> Result<Mount, BuildError> {
    let fail = |message: String| BuildError::step(node.line, format!("--mount {message}"));
    let opts = &mount.options;
    let target = mount.target.clone();
    match mount.kind {
        MountKind::Tmpfs => Ok(Mount::Tmpfs {
            target,
            size_bytes: opts.size,
        }),
        MountKind::Bind => bind_mount(store, mount, stages, options, held, fail),
        MountKind::Cache => {
            // The planner always gives a cache mount its id.
            let id = opts.id.as_deref().unwrap_or_default();
            let dir = cache_mount_dir(store, id);
            // Held for the step. sharing=locked: one step at a time uses
            // the directory (shared, the default, lets concurrent steps
            // share it; private is treated as shared). `kiln prune
            // --cache-mounts` skips a directory whose lock it cannot take;
            // taken before the directory is made, so prune cannot take it
            // in between.
            let lock_path = dir.with_extension("lock");
            if let Some(parent) = dir.parent() {
                std::fs::create_dir_all(parent).map_err(|e| BuildError::io(parent, e))?;
            }
            let file =
                std::fs::File::create(&lock_path).map_err(|e| BuildError::io(&lock_path, e))?;
            if opts.sharing == Sharing::Locked {
                file.lock()
            } else {
                file.lock_shared()
            }
            .map_err(|e| BuildError::io(&lock_path, e))?;
            held.locks.push(file);
            if !dir.exists() {
                // Made once, with the mount's mode and owner (BuildKit's
                // defaults: 0755, root).
                let temp = dir.with_extension(format!("tmp-{}", std::process::id()));
                std::fs::create_dir_all(&temp).map_err(|e| BuildError::io(&temp, e))?;
                let mode = opts.mode.unwrap_or(0o755);
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(mode))
                    .map_err(|e| BuildError::io(&temp, e))?;
                std::os::unix::fs::chown(&temp, opts.uid, opts.gid)
                    .map_err(|e| BuildError::io(&temp, e))?;
                if std::fs::rename(&temp, &dir).is_err() {
                    // Another build made it first.
                    let _ = std::fs::remove_dir_all(&temp);
                }
            }
            Ok(Mount::Bind {
                source: dir,
                target,
                readonly: false,
            })
        }
        MountKind::Secret => Err(fail("type=secret is handled apart".into())),
        MountKind::Ssh => {
            // The agent's socket, bound in; SSH_AUTH_SOCK is set by the
            // caller when the mount is the default one.
            let id = opts.id.as_deref().unwrap_or("default");
            let socket = options.ssh.get(id).ok_or_else(|| {
                fail(format!(
                    "type=ssh: no SSH agent {id:?} was forwarded (kiln build --ssh {id})"
                ))
            })?;
            Ok(Mount::Bind {
                source: socket.clone(),
                target,
                readonly: false,
            })
        }
    }
}

/// A `--mount type=secret`: the secret `kiln build --secret` named, as a
/// read-only file at the target, with the mount's mode and owner, that the
/// runtime writes on a tmpfs of the container's own mount namespace (never
/// on disk; gone with the container, even if kiln is killed), and/or in
/// an environment variable (`env=`). A secret the build was not given is
/// skipped unless `required=true`, as in BuildKit.
fn secret_mount(
    node: &Node,
    mount: &kiln_graph::Mount,
    options: &BuildOptions<'_>,
    env: &mut Vec<String>,
) -> Result<Option<Mount>, BuildError> {
    let id = mount.options.id.as_deref().unwrap_or_default();
    let Some(value) = options.secrets.get(id) else {
        if mount.options.required {
            return Err(BuildError::step(
                node.line,
                format!("secret {id:?} is required but was not given (kiln build --secret id={id},src=FILE)"),
            ));
        }
        return Ok(None);
    };
    if let Some(name) = &mount.options.env {
        env.push(format!("{name}={}", String::from_utf8_lossy(value)));
    }
    if mount.target.is_empty() {
        return Ok(None);
    }
    Ok(Some(Mount::Secret {
        target: mount.target.clone(),
        data: kiln_runtime::SecretData(value.to_vec()),
        mode: mount.options.mode.unwrap_or(0o400),
        uid: mount.options.uid.unwrap_or(0),
        gid: mount.options.gid.unwrap_or(0),
    }))
}

/// What a RUN's bind mounts show, by content, as its cache key takes it.
pub struct BindSources {
    /// Every bind mount's target and content digest.
    pub digest: [u8; 32],
    /// Each file's short digest, for explaining a miss.
    pub files: std::collections::BTreeMap<String, String>,
    /// The same for the mounts from the build context alone: those can
    /// change while the command runs (a stage's or image's tree cannot).
    pub context: [u8; 32],
}

/// The content digest of what the step's bind mounts show (each source
/// selected as COPY would select it, so `.dockerignore` and the stat cache
/// apply), and each file's digest for explaining a miss. Sources from a
/// stage or image are unpacked to be hashed the first time; what they gave
/// is remembered by the layers' digests.
pub fn bind_sources_digest(
    store: &Store,
    node: &Node,
    run: &RunOp,
    stages: &Stages,
    options: &BuildOptions<'_>,
) -> Result<BindSources, BuildError> {
    bind_sources(store, node, run, stages, options, false)
}

/// Fails the step if what its context bind mounts show changed since the
/// key was made from `before` (the `context` of its [`BindSources`]): the
/// command may have read other bytes than the key says, so its layer must
/// not be stored under that key.
pub fn check_context_binds(
    store: &Store,
    node: &Node,
    run: &RunOp,
    stages: &Stages,
    options: &BuildOptions<'_>,
    before: &[u8; 32],
) -> Result<(), BuildError> {
    let from_context = |m: &&kiln_graph::Mount| m.kind == MountKind::Bind && m.from.is_none();
    if !run.mounts.iter().any(|m| from_context(&m)) {
        return Ok(());
    }
    let after = bind_sources(store, node, run, stages, options, true)?.context;
    if after != *before {
        return Err(BuildError::step(
            node.line,
            format!(
                "{}: a file bind-mounted from the build context changed while the command ran; build again",
                node.display
            ),
        ));
    }
    Ok(())
}

/// [`bind_sources_digest`], of the context's mounts only with
/// `context_only` (then `digest` covers those too).
fn bind_sources(
    store: &Store,
    node: &Node,
    run: &RunOp,
    stages: &Stages,
    options: &BuildOptions<'_>,
    context_only: bool,
) -> Result<BindSources, BuildError> {
    use sha2::Digest as _;
    let mut hasher = sha2::Sha256::new();
    let mut context_hasher = sha2::Sha256::new();
    let mut files = std::collections::BTreeMap::new();
    let binds = run.mounts.iter().filter(|m| m.kind == MountKind::Bind);
    for mount in binds.filter(|m| !context_only || m.from.is_none()) {
        let source = mount.source.clone().unwrap_or_else(|| ".".into());
        let selected = match &mount.from {
            None => select_bind_source(
                options.context,
                options.stat_cache,
                Some(options.ignore),
                source,
                node,
            )?
            .remembered(),
            Some(from) => stage_bind_source(store, node, from, source, stages, options)?,
        };
        hasher.update(mount.target.as_bytes());
        hasher.update(selected.content);
        if mount.from.is_none() {
            context_hasher.update(mount.target.as_bytes());
            context_hasher.update(selected.content);
        }
        for (path, digest) in selected.files {
            files.insert(format!("{} ({})", path, mount.target), digest);
        }
    }
    Ok(BindSources {
        digest: hasher.finalize().into(),
        files,
        context: context_hasher.finalize().into(),
    })
}

/// What a bind mount's `source` in a stage or image shows. Its layers
/// give the same selection every time: remembered by their digests, and
/// placed and selected only the first time.
fn stage_bind_source(
    store: &Store,
    node: &Node,
    from: &SourceRef,
    source: String,
    stages: &Stages,
    options: &BuildOptions<'_>,
) -> Result<kiln_cache::Selected, BuildError> {
    let layers = match from {
        SourceRef::Stage(id) => stages
            .get(id)
            .map(|(fs, _)| fs.layers.clone())
            .unwrap_or_default(),
        SourceRef::Image(reference) => pinned_base(store, options.images, reference)?.layers,
    };
    let key = crate::keys::selection_key(
        &crate::keys::bind_source_key(&source),
        &layers,
        None,
        rootfs::keeps_layer_owners(),
    );
    if let Some(selected) = options.cache.selection(&key).filter(|_| !options.no_cache) {
        return Ok(selected);
    }
    let scratch = TempDir::new(store)?;
    rootfs::place_for_reading(store, &layers, &scratch.0, None)?;
    let fresh = kiln_context::StatCache::in_memory();
    let selected = select_bind_source(&scratch.0, &fresh, None, source, node)?.remembered();
    options.cache.put_selection(&key, &selected)?;
    Ok(selected)
}

/// `source` under `root` selected as COPY would select it.
fn select_bind_source(
    root: &std::path::Path,
    stat_cache: &kiln_context::StatCache,
    ignore: Option<&kiln_context::Ignore>,
    source: String,
    node: &Node,
) -> Result<crate::copy::Selection, BuildError> {
    let sources = [source];
    crate::copy::select(&[crate::copy::CopyRequest {
        root,
        root_name: "the mount's source",
        sources: &sources,
        heredocs: &[],
        dest: "/",
        owner: None,
        keep_source_owner: true,
        extract_archives: None,
        chmod: None,
        excludes: &[],
        parents: false,
        link: false,
        clamp_mtime: None,
        stat_cache,
        ignore,
        line: node.line,
        instruction: "RUN --mount",
    }])
}

/// Where a cache mount's content persists between builds, by id.
pub fn cache_mount_dir(store: &Store, id: &str) -> PathBuf {
    use sha2::Digest as _;
    let name: String = sha2::Sha256::digest(id.as_bytes())[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    store.layout().cache_mounts().join(name)
}

/// Copies `real` (resolved inside `root`) to `to`, through descriptors.
fn copy_tree(root: &Root, real: &std::path::Path, to: &std::path::Path) -> Result<(), BuildError> {
    root.copy_to(real, to)
        .map_err(|e| BuildError::io(root.host_path(real), e))
}

/// Passes a RUN's output on, line by line, and keeps the last lines for
/// an error message.
struct StepOutput<'a> {
    node: &'a Node,
    progress: &'a dyn Fn(StepEvent<'_>),
    /// Unfinished lines of stdout and stderr.
    partial: [Vec<u8>; 2],
    tail: VecDeque<String>,
}

impl StepOutput<'_> {
    fn take(&mut self, stream: usize, data: &[u8]) {
        self.partial[stream].extend_from_slice(data);
        while let Some(end) = self.partial[stream].iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial[stream].drain(..=end).collect();
            self.emit(&line[..line.len() - 1]);
        }
    }

    fn emit(&mut self, line: &[u8]) {
        let text = String::from_utf8_lossy(line).into_owned();
        (self.progress)(StepEvent::Output {
            node: self.node,
            line: &text,
        });
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(text);
    }

    fn flush(&mut self) {
        for stream in 0..2 {
            let rest = std::mem::take(&mut self.partial[stream]);
            if !rest.is_empty() {
                self.emit(&rest);
            }
        }
    }
}

impl OutputSink for StepOutput<'_> {
    fn stdout(&mut self, data: &[u8]) {
        self.take(0, data);
    }

    fn stderr(&mut self, data: &[u8]) {
        self.take(1, data);
    }
}
