//! What a build is asked to do: an owned value with defaults, made with
//! [`BuildRequest::new`] and the builder methods, filled from flags by the
//! CLI or from a request by the daemon. Value grammars that both front
//! ends read (`--output`, `--cache-to`, `--cache-from` specs) are parsed
//! here, once, into types.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;

use kiln_store::{ArchiveFormat, LayerCompression};

/// Where the Dockerfile comes from.
#[derive(Clone, Debug)]
pub enum DockerfileSource {
    /// `CONTEXT/Dockerfile`.
    Default,
    /// A file (its `<name>.dockerignore` beside it is honoured).
    Path(PathBuf),
    /// Bytes already read (standard input, a daemon request), shown as
    /// `display` in messages.
    Bytes { display: String, bytes: Vec<u8> },
}

/// A build, as asked for.
#[derive(Clone, Debug)]
pub struct BuildRequest {
    pub context: PathBuf,
    pub dockerfile: DockerfileSource,
    pub build_args: BTreeMap<String, String>,
    /// The stage to build (default: the last).
    pub target: Option<String>,
    /// Added to the image's labels (over the Dockerfile's).
    pub labels: BTreeMap<String, String>,
    /// Names given to the image once built.
    pub tags: Vec<String>,
    /// Run every step, or every step of these stages.
    pub no_cache: bool,
    pub no_cache_filter: Vec<String>,
    pub cache_from: Vec<CacheFrom>,
    pub cache_to: Option<CacheTo>,
    /// Exports besides the store.
    pub outputs: Vec<Output>,
    /// `RUN --mount=type=secret` contents by id.
    pub secrets: BTreeMap<String, Vec<u8>>,
    /// `RUN --mount=type=ssh` agent sockets by id.
    pub ssh: BTreeMap<String, PathBuf>,
    /// Lets `RUN --security=insecure` through.
    pub allow_insecure: bool,
    /// Stages at once (default: twice the cores).
    pub jobs: Option<usize>,
    /// Tasks one RUN step may have (`None`: unlimited).
    pub run_pids_limit: Option<u64>,
    /// SOURCE_DATE_EPOCH: clamps new files' times and every `created`.
    pub source_date_epoch: Option<u64>,
    /// Push every name of `tags` once built (`--push`).
    pub push: bool,
    /// How registries are reached: pulls of missing bases, pushes.
    pub registry: kiln_registry::ClientOptions,
    /// Record what each RUN that runs reads of the layers below it
    /// ([`crate::StepReport::reads`]); costs an event per file read.
    pub track_reads: bool,
    /// `--network`: the network of a RUN that does not choose its own.
    pub network: kiln_graph::Network,
    /// `--add-host` ([`parse_add_host`]): in every RUN's `/etc/hosts`.
    pub extra_hosts: Vec<(String, String)>,
    /// `--ulimit` for every RUN (checked with `kiln_runtime::Ulimit::parse`).
    pub ulimits: Vec<String>,
    /// `--shm-size` for every RUN, in bytes (none: 64 MiB).
    pub shm_size: Option<u64>,
    /// `--build-context` ([`crate::parse_build_context`]), by name.
    pub build_contexts: BTreeMap<String, crate::BuildContext>,
    /// `--pull`: every base image is looked up again through the image
    /// source ([`crate::ImageSource::resolve_fresh`]), even one the store has.
    pub pull: bool,
}

impl BuildRequest {
    /// A build of `context` with its `Dockerfile` and every default.
    pub fn new(context: impl Into<PathBuf>) -> BuildRequest {
        BuildRequest {
            context: context.into(),
            dockerfile: DockerfileSource::Default,
            build_args: BTreeMap::new(),
            target: None,
            labels: BTreeMap::new(),
            tags: Vec::new(),
            no_cache: false,
            no_cache_filter: Vec::new(),
            cache_from: Vec::new(),
            cache_to: None,
            outputs: Vec::new(),
            secrets: BTreeMap::new(),
            ssh: BTreeMap::new(),
            allow_insecure: false,
            jobs: None,
            run_pids_limit: Some(kiln_build::DEFAULT_RUN_PIDS_LIMIT),
            source_date_epoch: None,
            push: false,
            registry: kiln_registry::ClientOptions::default(),
            track_reads: false,
            network: kiln_graph::Network::Default,
            extra_hosts: Vec::new(),
            ulimits: Vec::new(),
            shm_size: None,
            build_contexts: BTreeMap::new(),
            pull: false,
        }
    }

    pub fn dockerfile(mut self, source: DockerfileSource) -> Self {
        self.dockerfile = source;
        self
    }

    pub fn build_arg(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.build_args.insert(name.into(), value.into());
        self
    }

    pub fn target(mut self, stage: impl Into<String>) -> Self {
        self.target = Some(stage.into());
        self
    }

    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    pub fn tag(mut self, name: impl Into<String>) -> Self {
        self.tags.push(name.into());
        self
    }

    pub fn no_cache(mut self, yes: bool) -> Self {
        self.no_cache = yes;
        self
    }

    pub fn output(mut self, output: Output) -> Self {
        self.outputs.push(output);
        self
    }

    pub fn secret(mut self, id: impl Into<String>, value: Vec<u8>) -> Self {
        self.secrets.insert(id.into(), value);
        self
    }

    pub fn jobs(mut self, jobs: usize) -> Self {
        self.jobs = Some(jobs);
        self
    }

    pub fn source_date_epoch(mut self, epoch: Option<u64>) -> Self {
        self.source_date_epoch = epoch;
        self
    }
}

/// `--add-host NAME:ADDRESS` (or `NAME=ADDRESS`), as docker takes it: an
/// IPv4 or IPv6 address (an IPv6 one may be bracketed), a host name of
/// letters, digits, `-`, `.` and `_`. Docker's `host-gateway` needs a
/// bridge network kiln does not have.
pub fn parse_add_host(spec: &str) -> Result<(String, String), SpecError> {
    let fail = |message: &str| spec_error("--add-host", spec, message);
    let (name, address) = match (spec.split_once('='), spec.split_once(':')) {
        (Some((name, address)), _) => (name, address),
        (None, Some((name, address))) => (name, address),
        (None, None) => return Err(fail("expected NAME:ADDRESS")),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
    if !name_ok {
        return Err(fail("the name is not a host name"));
    }
    if address == "host-gateway" {
        return Err(fail(
            "host-gateway needs a bridge network, which kiln does not have",
        ));
    }
    let bare = address.trim_start_matches('[').trim_end_matches(']');
    let parsed: std::net::IpAddr = bare
        .parse()
        .map_err(|_| fail("the address is not an IP address"))?;
    Ok((name.to_owned(), parsed.to_string()))
}

/// A spec that does not parse, with the grammar it should have followed.
#[derive(Debug, thiserror::Error)]
#[error("{flag} {spec:?}: {message}")]
pub struct SpecError {
    pub flag: &'static str,
    pub spec: String,
    pub message: String,
}

fn spec_error(flag: &'static str, spec: &str, message: impl Into<String>) -> SpecError {
    SpecError {
        flag,
        spec: spec.to_owned(),
        message: message.into(),
    }
}

/// Where the image goes besides the store (`--output`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// An OCI archive or docker-archive file.
    Archive {
        format: ArchiveFormat,
        compression: LayerCompression,
        dest: PathBuf,
    },
    /// The root filesystem as a directory.
    Local(PathBuf),
    /// The root filesystem as a tar file.
    Tar(PathBuf),
    /// Names in the store, pushed to their registries with `push`
    /// (`type=registry` is `type=image,push=true`).
    Image { names: Vec<String>, push: bool },
}

const OUTPUT_GRAMMAR: &str =
    "expected type=oci|docker|tar|local,dest=PATH[,compression=gzip|zstd] \
     or type=image|registry,name=REF[,name=REF...][,push=true]";

/// `type=oci|docker|tar|local,dest=PATH[,compression=gzip|zstd]`,
/// `type=image,name=REF[,push=true]`, or a bare PATH (type=local).
impl FromStr for Output {
    type Err = SpecError;

    fn from_str(spec: &str) -> Result<Output, SpecError> {
        let fail = |message: &str| spec_error("--output", spec, message);
        if !spec.contains('=') {
            return Ok(Output::Local(PathBuf::from(spec)));
        }
        let mut kind = None;
        let mut dest = None;
        let mut compression = LayerCompression::Gzip;
        let mut names = Vec::new();
        let mut push = None;
        for field in spec.split(',') {
            match field.split_once('=') {
                Some(("type", value)) => kind = Some(value.to_owned()),
                Some(("dest", value)) => dest = Some(PathBuf::from(value)),
                Some(("name", value)) => {
                    kiln_store::Reference::parse(value)
                        .map_err(|e| fail(&format!("name={value}: {e}")))?;
                    names.push(value.to_owned());
                }
                Some(("push", "true")) => push = Some(true),
                Some(("push", "false")) => push = Some(false),
                Some(("compression", "gzip")) => compression = LayerCompression::Gzip,
                Some(("compression", "zstd")) => compression = LayerCompression::Zstd,
                Some(("compression", other)) => {
                    return Err(fail(&format!("unknown compression {other:?} (gzip, zstd)")))
                }
                _ => return Err(fail(OUTPUT_GRAMMAR)),
            }
        }
        if let Some(image) = kind
            .as_deref()
            .filter(|k| *k == "image" || *k == "registry")
        {
            if names.is_empty() {
                return Err(fail("name=REF is required"));
            }
            return Ok(Output::Image {
                names,
                push: push.unwrap_or(image == "registry"),
            });
        }
        if !names.is_empty() || push.is_some() {
            return Err(fail(OUTPUT_GRAMMAR));
        }
        let dest = dest.ok_or_else(|| fail("dest=PATH is required"))?;
        let archive = |format| Output::Archive {
            format,
            compression,
            dest: dest.clone(),
        };
        match kind.as_deref() {
            Some("oci") => Ok(archive(ArchiveFormat::Oci)),
            Some("docker") => Ok(archive(ArchiveFormat::Docker)),
            Some("local") => Ok(Output::Local(dest)),
            Some("tar") => Ok(Output::Tar(dest)),
            other => Err(fail(&format!(
                "unknown type {other:?} (oci, docker, tar, local, image, registry)"
            ))),
        }
    }
}

/// `--cache-from type=local,src=DIR` or `type=registry,ref=REF`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheFrom {
    /// A directory a `--cache-to type=local` wrote.
    Local(PathBuf),
    /// A registry cache (an image manifest whose config is kiln's cache
    /// document and whose layers are the cached layers).
    Registry(String),
}

impl FromStr for CacheFrom {
    type Err = SpecError;

    fn from_str(spec: &str) -> Result<CacheFrom, SpecError> {
        let grammar = "expected type=local,src=DIR or type=registry,ref=REF";
        let mut kind = None;
        let mut src = None;
        let mut reference = None;
        for field in spec.split(',') {
            match field.split_once('=') {
                Some(("type", value)) => kind = Some(value),
                Some(("src", value)) => src = Some(PathBuf::from(value)),
                Some(("ref", value)) => {
                    reference = Some(valid_reference("--cache-from", spec, value)?)
                }
                _ => return Err(spec_error("--cache-from", spec, grammar)),
            }
        }
        match (kind, src, reference) {
            (Some("local"), Some(dir), None) => Ok(CacheFrom::Local(dir)),
            (Some("registry"), None, Some(reference)) => Ok(CacheFrom::Registry(reference)),
            _ => Err(spec_error("--cache-from", spec, grammar)),
        }
    }
}

/// `value` if it is an image reference.
fn valid_reference(flag: &'static str, spec: &str, value: &str) -> Result<String, SpecError> {
    kiln_store::Reference::parse(value)
        .map(|_| value.to_owned())
        .map_err(|e| spec_error(flag, spec, format!("ref={value}: {e}")))
}

/// Where `--cache-to` writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheDest {
    Local(PathBuf),
    Registry(String),
}

/// `--cache-to type=local,dest=DIR[,mode=min|max][,cache-mounts=true]`
/// or `type=registry,ref=REF[,mode=min|max]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheTo {
    pub dest: CacheDest,
    /// max: every step built; min: only the target stage's (and the
    /// stages it is built FROM), as BuildKit's modes.
    pub all_stages: bool,
    /// The RUN cache-mount directories go too (an option BuildKit lacks).
    pub cache_mounts: bool,
}

impl FromStr for CacheTo {
    type Err = SpecError;

    fn from_str(spec: &str) -> Result<CacheTo, SpecError> {
        let grammar = "expected type=local,dest=DIR[,mode=min|max][,cache-mounts=true] \
             or type=registry,ref=REF[,mode=min|max]";
        let mut kind = None;
        let mut dest = None;
        let mut reference = None;
        let mut all_stages = false;
        let mut cache_mounts = false;
        for field in spec.split(',') {
            match field.split_once('=') {
                Some(("type", value)) => kind = Some(value.to_owned()),
                Some(("dest", value)) => dest = Some(PathBuf::from(value)),
                Some(("ref", value)) => {
                    reference = Some(valid_reference("--cache-to", spec, value)?)
                }
                Some(("mode", "min")) => all_stages = false,
                Some(("mode", "max")) => all_stages = true,
                Some(("cache-mounts", value)) => cache_mounts = value == "true",
                _ => return Err(spec_error("--cache-to", spec, grammar)),
            }
        }
        let dest = match (kind.as_deref(), dest, reference) {
            (Some("local"), Some(dest), None) => CacheDest::Local(dest),
            (Some("registry"), None, Some(_)) if cache_mounts => {
                return Err(spec_error(
                    "--cache-to",
                    spec,
                    "cache-mounts=true needs type=local",
                ))
            }
            (Some("registry"), None, Some(reference)) => CacheDest::Registry(reference),
            _ => return Err(spec_error("--cache-to", spec, grammar)),
        };
        Ok(CacheTo {
            dest,
            all_stages,
            cache_mounts,
        })
    }
}

impl BuildRequest {
    /// The file the Dockerfile is read from, and beside which its own
    /// `<name>.dockerignore` is looked for; for one given as bytes,
    /// `CONTEXT/Dockerfile` (only the context's `.dockerignore` applies).
    pub(crate) fn dockerfile_path(&self) -> PathBuf {
        match &self.dockerfile {
            DockerfileSource::Path(path) => path.clone(),
            DockerfileSource::Default | DockerfileSource::Bytes { .. } => {
                self.context.join("Dockerfile")
            }
        }
    }

    /// The context as given, or canonical when it can be made so.
    pub(crate) fn canonical_context(&self) -> PathBuf {
        std::fs::canonicalize(&self.context).unwrap_or_else(|_| self.context.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_host_takes_docker_spellings_and_refuses_the_rest() {
        let ok = |s: &str| parse_add_host(s).unwrap();
        assert_eq!(ok("db:127.0.0.2"), ("db".into(), "127.0.0.2".into()));
        assert_eq!(ok("db=127.0.0.2"), ("db".into(), "127.0.0.2".into()));
        assert_eq!(ok("v6:::1"), ("v6".into(), "::1".into()));
        assert_eq!(ok("v6=[fe80::1]"), ("v6".into(), "fe80::1".into()));
        for bad in [
            "db",
            "db:nothost",
            "bad name:127.0.0.1",
            ":127.0.0.1",
            "gw:host-gateway",
        ] {
            assert!(parse_add_host(bad).is_err(), "{bad}");
        }
        assert!(parse_add_host("gw:host-gateway")
            .unwrap_err()
            .to_string()
            .contains("bridge"));
    }

    #[test]
    fn specs_parse_into_types_or_say_the_grammar() {
        assert_eq!(
            "type=docker,dest=out.tar,compression=zstd"
                .parse::<Output>()
                .unwrap(),
            Output::Archive {
                format: ArchiveFormat::Docker,
                compression: LayerCompression::Zstd,
                dest: "out.tar".into()
            }
        );
        assert_eq!(
            "dir".parse::<Output>().unwrap(),
            Output::Local("dir".into())
        );
        let error = "type=zip,dest=x".parse::<Output>().unwrap_err().to_string();
        assert!(error.contains("unknown type"), "{error}");
        assert!("type=tar".parse::<Output>().is_err());
        assert_eq!(
            "type=image,name=reg:5000/a:1,name=b,push=true"
                .parse::<Output>()
                .unwrap(),
            Output::Image {
                names: vec!["reg:5000/a:1".into(), "b".into()],
                push: true,
            }
        );
        assert_eq!(
            "type=registry,name=a".parse::<Output>().unwrap(),
            Output::Image {
                names: vec!["a".into()],
                push: true,
            }
        );
        assert!("type=image".parse::<Output>().is_err());
        assert!("type=image,name=Bad".parse::<Output>().is_err());
        assert!("type=oci,dest=x,push=true".parse::<Output>().is_err());
        assert_eq!(
            "type=local,dest=d,mode=max".parse::<CacheTo>().unwrap(),
            CacheTo {
                dest: CacheDest::Local("d".into()),
                all_stages: true,
                cache_mounts: false
            }
        );
        assert_eq!(
            "type=registry,ref=reg:5000/cache:1,mode=max"
                .parse::<CacheTo>()
                .unwrap(),
            CacheTo {
                dest: CacheDest::Registry("reg:5000/cache:1".into()),
                all_stages: true,
                cache_mounts: false
            }
        );
        assert!("type=registry,ref=x,cache-mounts=true"
            .parse::<CacheTo>()
            .is_err());
        assert!("type=registry,dest=x".parse::<CacheTo>().is_err());
        assert!("type=registry,ref=Bad".parse::<CacheFrom>().is_err());
        assert_eq!(
            "type=registry,ref=x".parse::<CacheFrom>().unwrap(),
            CacheFrom::Registry("x".into())
        );
        assert_eq!(
            "type=local,src=c".parse::<CacheFrom>().unwrap(),
            CacheFrom::Local("c".into())
        );
    }
}
