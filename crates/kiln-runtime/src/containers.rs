//! Containers that outlive one `kiln run`: each is a directory holding its
//! record (`container.json`: what to run, over which lower dirs, and its
//! state), its rw layer (`upper/`, overlay `work/`) and its output
//! (`log`). `kiln ps`, `start`, `stop`, `rm`, `logs` and `commit` work on
//! these; the record names its image only as text, for display.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

pub use crate::container_log::{LogLine, LogReader, LogWriter};
use crate::error::RuntimeError;
pub use crate::restart_policy::RestartPolicy;
use crate::spec::{ContainerSpec, Mount, Network, Resources, User};

/// What a container runs; fixed when it is created.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ContainerConfig {
    /// The image as the user named it, and its id.
    pub image: String,
    pub image_id: String,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub hostname: String,
    /// `host` or `none`.
    pub network: String,
    /// Bind mounts: (host path, container path, read-only).
    pub binds: Vec<(PathBuf, String, bool)>,
    /// The image's layers unpacked, top-most first.
    pub lower_dirs: Vec<PathBuf>,
    /// Run on a terminal (`run -t`); every start allocates a new one.
    #[serde(default)]
    pub tty: bool,
    /// `--privileged`: every capability, no masked `/proc` paths, no
    /// seccomp.
    #[serde(default)]
    pub privileged: bool,
    /// `--security-opt seccomp=...` (the profile's content is kept here).
    #[serde(default)]
    pub seccomp: crate::seccomp::Seccomp,
    /// `--security-opt no-new-privileges`.
    #[serde(default)]
    pub no_new_privileges: bool,
    /// `--memory`, `--cpus`, `--pids-limit`.
    #[serde(default)]
    pub resources: Resources,
    /// `--init`: kiln's init is pid 1 and forks the command. (Records
    /// from before the flag have none: the command is pid 1.)
    #[serde(default)]
    pub init: bool,
    /// `--cap-add` / `--cap-drop`.
    #[serde(default)]
    pub capabilities: crate::CapabilityChanges,
    /// `--read-only`.
    #[serde(default)]
    pub read_only: bool,
    /// `--tmpfs` / `--mount type=tmpfs`: (container path, size limit).
    #[serde(default)]
    pub tmpfs: Vec<(String, Option<u64>)>,
    /// `--label`.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// The signal `stop` sends first (`--stop-signal`, else the image's
    /// STOPSIGNAL; none: SIGTERM), as a number.
    #[serde(default)]
    pub stop_signal: Option<i32>,
    /// `--add-host`: (name, address).
    #[serde(default)]
    pub extra_hosts: Vec<(String, String)>,
    /// `--ulimit`.
    #[serde(default)]
    pub ulimits: Vec<crate::Ulimit>,
    /// `--shm-size` in bytes.
    #[serde(default)]
    pub shm_size: Option<u64>,
    /// The named volumes among `binds` (their directories are the binds'
    /// sources), and which of them were made for this container alone
    /// (anonymous: `-v /path`), which `run --rm` and `rm -v` remove.
    #[serde(default)]
    pub volumes: Vec<String>,
    #[serde(default)]
    pub anonymous_volumes: Vec<String>,
    /// `--restart`.
    #[serde(default)]
    pub restart: RestartPolicy,
    /// The health check (the image's HEALTHCHECK under `--health-*`).
    #[serde(default)]
    pub healthcheck: Option<crate::health::HealthCheck>,
    /// `--stop-timeout`: seconds `stop` waits after its first signal when
    /// not told (Docker's 10 otherwise).
    #[serde(default)]
    pub stop_timeout: Option<u64>,
}

/// Where a container is in its life.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum State {
    Created,
    /// `monitor` is the kiln process waiting for it; `init` its pid 1.
    Running {
        monitor: i32,
        init: i32,
        since: u64,
    },
    Exited {
        code: i32,
        at: u64,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub name: String,
    pub created: u64,
    pub config: ContainerConfig,
    pub state: State,
    /// When it last started (docker inspect's `StartedAt`, kept once it
    /// exits); none before its first start (and in records from before).
    #[serde(default)]
    pub started_at: Option<u64>,
    /// Exited, and its restart policy starts it again (after a backoff).
    #[serde(default)]
    pub restarting: bool,
    /// How many times the restart policy started it again.
    #[serde(default)]
    pub restart_count: u32,
    /// Stopped by `stop`, `kill` or `rm -f`: no restart policy applies
    /// until it is started again.
    #[serde(default)]
    pub stopped_by_hand: bool,
    /// What its health check found in this run (with a check, from its
    /// start on).
    #[serde(default)]
    pub health: Option<crate::health::Health>,
}

impl ContainerRecord {
    /// The spec to run it, with its own upper and work dirs.
    pub fn spec(&self, dir: &Path) -> ContainerSpec {
        ContainerSpec {
            lower_dirs: self.config.lower_dirs.clone(),
            upper_dir: dir.join("upper"),
            work_dir: dir.join("work"),
            args: self.config.args.clone(),
            env: process_env(&self.config.env),
            cwd: self.config.cwd.clone(),
            user: User {
                uid: self.config.uid,
                gid: self.config.gid,
                additional_gids: self.config.additional_gids.clone(),
            },
            hostname: self.config.hostname.clone(),
            network: if self.config.network == "none" {
                Network::None
            } else {
                Network::Host
            },
            mounts: self
                .config
                .binds
                .iter()
                .map(|(source, target, readonly)| Mount::Bind {
                    source: source.clone(),
                    target: target.clone(),
                    readonly: *readonly,
                })
                .chain(self.config.tmpfs.iter().map(|(target, size)| Mount::Tmpfs {
                    target: target.clone(),
                    size_bytes: *size,
                }))
                .collect(),
            hosts: None,
            extra_hosts: self.config.extra_hosts.clone(),
            resolv_conf: None,
            state_parent: Some(dir.to_owned()),
            privileged: self.config.privileged,
            capabilities: self.config.capabilities,
            read_only: self.config.read_only,
            ulimits: self.config.ulimits.clone(),
            shm_size: self.config.shm_size,
            seccomp: self.config.seccomp.clone(),
            no_new_privileges: self.config.no_new_privileges,
            resources: self.config.resources,
            init: self.config.init,
            // A container is started again on the same upper dir.
            volatile_upper: false,
            track_reads: false,
        }
    }

    /// Created or exited → running under `monitor`, with pid 1 `init`.
    /// Refused while a live monitor runs it: two monitors of one
    /// container would share its rw layer.
    pub fn started(&mut self, monitor: i32, init: i32) -> Result<(), RuntimeError> {
        if self.is_running() {
            return Err(RuntimeError::InvalidSpec(format!(
                "container {} is already running",
                self.name
            )));
        }
        let since = now();
        self.state = State::Running {
            monitor,
            init,
            since,
        };
        self.started_at = Some(since);
        self.restarting = false;
        self.stopped_by_hand = false;
        self.health = self
            .config
            .healthcheck
            .as_ref()
            .map(|_| crate::health::Health::default());
        Ok(())
    }

    /// Running → exited with `code`. Refused from any other state: only
    /// the monitor that started a run ends it.
    pub fn exited(&mut self, code: i32) -> Result<(), RuntimeError> {
        if !matches!(self.state, State::Running { .. }) {
            return Err(RuntimeError::InvalidSpec(format!(
                "container {} is not running",
                self.name
            )));
        }
        self.state = State::Exited { code, at: now() };
        self.restarting =
            self.config
                .restart
                .restarts(code, self.restart_count, self.stopped_by_hand);
        Ok(())
    }

    /// Pid 1 of a running container (its monitor alive).
    pub fn running_pid(&self) -> Option<i32> {
        match self.state {
            State::Running { init, .. } if self.is_running() => Some(init),
            _ => None,
        }
    }

    /// Running according to the record, and its monitor still alive (a
    /// monitor killed with SIGKILL cannot update the record; its container
    /// died with it).
    pub fn is_running(&self) -> bool {
        match self.state {
            State::Running { monitor, .. } => process_alive(monitor),
            _ => false,
        }
    }

    /// How long `stop` waits after its first signal: `asked`, else the
    /// container's `--stop-timeout`, else Docker's 10 s.
    pub fn stop_grace(&self, asked: Option<u64>) -> std::time::Duration {
        std::time::Duration::from_secs(asked.or(self.config.stop_timeout).unwrap_or(10))
    }

    /// Running, and frozen by `pause`.
    pub fn is_paused(&self) -> bool {
        self.running_pid().is_some_and(crate::is_frozen)
    }

    /// Docker's status words: `Created`, `Up`, `Exited (3)`.
    pub fn status(&self) -> String {
        match &self.state {
            State::Created => "Created".into(),
            State::Running { .. } if self.is_running() => "Up".into(),
            State::Running { .. } => "Exited (unknown)".into(),
            State::Exited { code, .. } => format!("Exited ({code})"),
        }
    }
}

fn process_alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

/// Seconds since the epoch, now.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// All containers, one directory each under `root`.
pub struct Containers {
    root: PathBuf,
}

impl Containers {
    pub fn open(root: &Path) -> Containers {
        Containers {
            root: root.to_owned(),
        }
    }

    /// The container's directory. Only an id (64 lower-case hex digits)
    /// names one, so nothing else can lead outside `kiln/containers`.
    pub fn dir(&self, id: &str) -> PathBuf {
        if is_id(id) {
            self.root.join(id)
        } else {
            self.root.join("(not a container id)")
        }
    }

    /// Held around every read-modify-write of a record (and a name's
    /// check with its taking): an `flock` on `containers.lock` beside the
    /// containers' directory (which holds container directories only),
    /// released when dropped or when the process dies. Short: it covers
    /// reading and writing one small file.
    fn lock(&self) -> Result<fs::File, RuntimeError> {
        let path = self.root.with_extension("lock");
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| RuntimeError::io("open", &path, e))?;
        file.lock()
            .map_err(|e| RuntimeError::io("lock", &path, e))?;
        Ok(file)
    }

    /// Reads container `id`'s record, lets `change` change it, and writes
    /// it back, under the records' lock: two writers (a monitor recording
    /// an exit, a rename, two starts) never lose each other's change or
    /// both make the same transition. Returns the record as written.
    pub fn update(
        &self,
        id: &str,
        change: impl FnOnce(&mut ContainerRecord) -> Result<(), RuntimeError>,
    ) -> Result<ContainerRecord, RuntimeError> {
        let _lock = self.lock()?;
        let mut record = self
            .load(id)
            .ok_or_else(|| RuntimeError::Gone(id.to_owned()))?;
        change(&mut record)?;
        self.save(&record)?;
        Ok(record)
    }

    /// Gives container `id` the name `name` (Docker's grammar; one no
    /// other container has).
    pub fn rename(&self, id: &str, name: &str) -> Result<ContainerRecord, RuntimeError> {
        let name = valid_name(name)?;
        let _lock = self.lock()?;
        self.refuse_taken(name, id)?;
        let mut record = self
            .load(id)
            .ok_or_else(|| RuntimeError::Gone(id.to_owned()))?;
        record.name = name.to_owned();
        self.save(&record)?;
        Ok(record)
    }

    /// `name` is free, or `id`'s own (under the records' lock).
    fn refuse_taken(&self, name: &str, id: &str) -> Result<(), RuntimeError> {
        match self.list().into_iter().find(|c| c.name == name) {
            Some(holder) if holder.id != id => Err(RuntimeError::NameInUse {
                name: name.to_owned(),
                holder: holder.id,
            }),
            _ => Ok(()),
        }
    }

    /// Makes a container: a fresh id (64 hex, like Docker's), the name
    /// given (checked and taken under the records' lock, so two creates
    /// never both get it) or a generated one, an empty rw layer.
    pub fn create(
        &self,
        name: Option<&str>,
        config: ContainerConfig,
    ) -> Result<ContainerRecord, RuntimeError> {
        let id = random_id()?;
        let _lock = self.lock()?;
        let name = match name {
            Some(name) => {
                let name = valid_name(name)?;
                self.refuse_taken(name, &id)?;
                name.to_owned()
            }
            None => format!("kiln_{}", &id[..8]),
        };
        let dir = self.dir(&id);
        for sub in ["upper", "work"] {
            fs::create_dir_all(dir.join(sub))
                .map_err(|e| RuntimeError::io("mkdir", dir.join(sub), e))?;
        }
        let record = ContainerRecord {
            id,
            name,
            created: now(),
            config,
            state: State::Created,
            started_at: None,
            restarting: false,
            restart_count: 0,
            stopped_by_hand: false,
            health: None,
        };
        self.save(&record)?;
        Ok(record)
    }

    /// Writes the record through `atomic-write-file` (unnamed temp,
    /// fsync, rename, directory fsync): a crash leaves the old record or
    /// the new one.
    pub fn save(&self, record: &ContainerRecord) -> Result<(), RuntimeError> {
        let dir = self.dir(&record.id);
        let bytes = serde_json::to_vec_pretty(record)
            .map_err(|e| RuntimeError::io("encode", &dir, io::Error::other(e)))?;
        let path = dir.join("container.json");
        let mut file = atomic_write_file::AtomicWriteFile::open(&path)
            .map_err(|e| RuntimeError::io("create", &path, e))?;
        io::Write::write_all(&mut file, &bytes).map_err(|e| RuntimeError::io("write", &path, e))?;
        file.commit()
            .map_err(|e| RuntimeError::io("rename", &path, e))
    }

    pub fn load(&self, id: &str) -> Option<ContainerRecord> {
        let bytes = fs::read(self.dir(id).join("container.json")).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Every container, newest first.
    pub fn list(&self) -> Vec<ContainerRecord> {
        let Ok(entries) = fs::read_dir(&self.root) else {
            return Vec::new();
        };
        let mut out: Vec<ContainerRecord> = entries
            .flatten()
            .filter_map(|e| self.load(&e.file_name().to_string_lossy()))
            .collect();
        out.sort_by(|a, b| b.created.cmp(&a.created).then(b.id.cmp(&a.id)));
        out
    }

    /// By name, full id or an unambiguous id prefix.
    pub fn find(&self, what: &str) -> Option<ContainerRecord> {
        let all = self.list();
        if let Some(found) = all.iter().find(|c| c.name == what || c.id == what) {
            return Some(found.clone());
        }
        let mut prefixed = all.into_iter().filter(|c| c.id.starts_with(what));
        match (prefixed.next(), prefixed.next()) {
            (Some(only), None) if !what.is_empty() => Some(only),
            _ => None,
        }
    }

    pub fn remove(&self, record: &ContainerRecord) -> Result<(), RuntimeError> {
        let dir = self.dir(&record.id);
        fs::remove_dir_all(&dir).map_err(|e| RuntimeError::io("remove", dir, e))
    }

    /// Appends to the container's log.
    pub fn log_writer(&self, id: &str) -> Result<LogWriter, RuntimeError> {
        LogWriter::open(&self.dir(id))
    }

    /// Reads the container's log (`None`: it never started).
    pub fn log_reader(&self, id: &str) -> Result<Option<LogReader>, RuntimeError> {
        LogReader::open(&self.dir(id))
    }

    /// The container's rw layer (its overlay upper dir).
    pub fn upper_dir(&self, id: &str) -> PathBuf {
        self.dir(id).join("upper")
    }

    /// Its overlay work dir.
    pub fn work_dir(&self, id: &str) -> PathBuf {
        self.dir(id).join("work")
    }

    /// Where `cp` mounts a stopped container's rootfs (in a private mount
    /// namespace only).
    pub fn copy_mount_point(&self, id: &str) -> PathBuf {
        self.dir(id).join("cp")
    }

    /// The output as it came, stdout and stderr together.
    pub fn log_path(&self, id: &str) -> PathBuf {
        crate::container_log::log_path(&self.dir(id))
    }
}

fn is_id(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `name` if it follows Docker's grammar for container names,
/// `[a-zA-Z0-9][a-zA-Z0-9_.-]+` (a leading `/` allowed and dropped, as
/// Docker does).
pub fn valid_name(name: &str) -> Result<&str, RuntimeError> {
    let bare = name.strip_prefix('/').unwrap_or(name);
    if is_docker_name(bare) {
        Ok(bare)
    } else {
        Err(RuntimeError::InvalidSpec(format!(
            "invalid container name {name:?}: a name is a letter or digit then one or more \
             of [a-zA-Z0-9_.-] (Docker's rule)"
        )))
    }
}

/// Docker's grammar for container and volume names,
/// `[a-zA-Z0-9][a-zA-Z0-9_.-]+`: never `/`, never `..` alone, so a name
/// is always one path component.
pub fn is_docker_name(text: &str) -> bool {
    let mut bytes = text.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphanumeric());
    first_ok
        && text.len() >= 2
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// 64 random lower-case hex digits (container ids, anonymous volumes).
pub fn random_id() -> Result<String, RuntimeError> {
    let mut bytes = [0u8; 32];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| io::Read::read_exact(&mut f, &mut bytes))
        .map_err(|e| RuntimeError::io("read", "/dev/urandom", e))?;
    let mut id = String::with_capacity(64);
    for byte in bytes {
        id.push_str(&format!("{byte:02x}"));
    }
    Ok(id)
}

/// Docker's rules: `--entrypoint` replaces the image's ENTRYPOINT (and
/// then the image's CMD is dropped); a command given replaces CMD.
pub fn command_line(
    image_entrypoint: &[String],
    image_cmd: &[String],
    entrypoint: Option<&str>,
    command: &[String],
) -> Result<Vec<String>, RuntimeError> {
    let (entrypoint, default_cmd): (Vec<String>, &[String]) = match entrypoint {
        Some("") => (Vec::new(), &[]),
        Some(e) => (vec![e.to_owned()], &[]),
        None => (image_entrypoint.to_vec(), image_cmd),
    };
    let cmd = if command.is_empty() {
        default_cmd.to_vec()
    } else {
        command.to_vec()
    };
    let argv: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if argv.is_empty() {
        return Err(RuntimeError::InvalidSpec(
            "no command specified: the image has no ENTRYPOINT or CMD; give one after the image name".into(),
        ));
    }
    Ok(argv)
}

/// `NAME=VALUE` replaces NAME in `env`; a bare `NAME` takes the value
/// from this process's environment (`docker run -e NAME`).
pub fn set_env(env: &mut Vec<String>, item: &str) {
    // A NAME alone is kept as Docker keeps it (inspect shows it; no
    // process gets it: [`process_env`]). Never looked up here: the
    // caller's environment is the client's to give (the CLI resolves
    // `-e NAME` from its own), and a daemon's must not leak into a
    // client's container.
    let name = item.split_once('=').map_or(item, |(name, _)| name);
    env.retain(|e| e.split_once('=').map_or(e.as_str(), |(n, _)| n) != name);
    env.push(item.to_owned());
}

/// The entries of `env` a process gets: those with a value.
pub fn process_env(env: &[String]) -> Vec<String> {
    env.iter().filter(|e| e.contains('=')).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_run_starts_from_created_or_exited_and_only_a_run_exits() {
        let dir = tempfile::tempdir().unwrap();
        let all = Containers::open(dir.path());
        let config: ContainerConfig = serde_json::from_value(serde_json::json!({
            "image": "i", "image_id": "d", "args": ["true"], "env": [], "cwd": "/",
            "uid": 0, "gid": 0, "additional_gids": [], "hostname": "h",
            "network": "none", "binds": [], "lower_dirs": []
        }))
        .unwrap();
        let mut record = all.create(None, config).unwrap();
        assert!(record.exited(0).is_err(), "created → exited skips the run");
        let me = std::process::id() as i32;
        record.started(me, 1).unwrap();
        // This process is alive: a second monitor is refused.
        assert!(record.started(me, 2).is_err());
        assert_eq!(record.running_pid(), Some(1));
        record.exited(3).unwrap();
        assert!(record.exited(4).is_err());
        assert_eq!(record.status(), "Exited (3)");
        record.started(me, 5).unwrap();
        assert_eq!(record.running_pid(), Some(5));
    }

    #[test]
    fn docker_entrypoint_and_cmd_rules() {
        let ep = strings(&["/entry"]);
        let cmd = strings(&["default"]);
        let line = |e: Option<&str>, c: &[&str]| command_line(&ep, &cmd, e, &strings(c)).unwrap();
        assert_eq!(line(None, &[]), ["/entry", "default"]);
        assert_eq!(line(None, &["x"]), ["/entry", "x"]);
        assert_eq!(line(Some("/other"), &[]), ["/other"]);
        assert_eq!(line(Some(""), &["sh"]), ["sh"]);
        assert!(command_line(&[], &[], None, &[]).is_err());
    }

    #[test]
    fn container_names_follow_dockers_grammar() {
        for good in ["web", "a1", "my_app.v2-x", "/web", "0x"] {
            assert!(valid_name(good).is_ok(), "{good}");
        }
        assert_eq!(valid_name("/web").unwrap(), "web");
        for bad in [
            "", "a", "-a", ".a", "_a", "../x", "a/b", "a b", "a:b", "é1", "/",
        ] {
            assert!(valid_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn only_an_id_names_a_directory() {
        let all = Containers::open(Path::new("/store/containers"));
        let id = "a".repeat(64);
        assert_eq!(all.dir(&id), Path::new("/store/containers").join(&id));
        assert!(!all.dir("../../etc").starts_with("/etc"));
        assert!(all.dir("../../etc").starts_with("/store/containers"));
    }

    #[test]
    fn env_items_replace_and_bare_names_stay_bare() {
        let mut env = strings(&["A=1", "B=2"]);
        set_env(&mut env, "A=3");
        // Set in this process: still never looked up here.
        set_env(&mut env, "PATH");
        set_env(&mut env, "B");
        assert_eq!(env, ["A=3", "PATH", "B"]);
        assert_eq!(process_env(&env), ["A=3"]);
    }
}
