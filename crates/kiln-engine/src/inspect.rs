//! Images, containers and volumes in the Docker Engine API's shapes
//! (`docker inspect`, `docker history`, `docker volume inspect`): one
//! owner for `kiln inspect` and the daemon's endpoints alike.

use kiln_runtime::containers::{ContainerRecord, State};
use kiln_store::Digest;
use serde_json::{json, Value};

use crate::{Engine, EngineError, Volume};

/// An image as stored: its manifest and config documents.
pub struct StoredImage {
    pub digest: Digest,
    pub manifest: Value,
    pub config_digest: Digest,
    pub config: Value,
}

/// One entry of an image's history, with the size of the layer it made
/// (0 for one that made none).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryEntry {
    /// RFC 3339, as the config has it.
    pub created: String,
    pub created_by: String,
    pub size: u64,
    pub comment: String,
}

impl Engine {
    /// Image `name`'s manifest and config.
    pub fn stored_image(&self, name: &str) -> Result<StoredImage, EngineError> {
        let store = self.store();
        let descriptor = store.resolve(name)?;
        let digest = Digest::of_descriptor(&descriptor)?;
        let document = |digest: &Digest, what: &str| -> Result<Value, EngineError> {
            serde_json::from_slice(&store.blobs().read(digest)?)
                .map_err(|e| EngineError::Request(format!("the {what} of {name} is not JSON: {e}")))
        };
        let manifest = document(&digest, "manifest")?;
        let config_digest: Digest = manifest["config"]["digest"]
            .as_str()
            .and_then(|d| d.parse().ok())
            .ok_or_else(|| {
                EngineError::Request(format!("the manifest of {name} names no config"))
            })?;
        let config = document(&config_digest, "config")?;
        Ok(StoredImage {
            digest,
            manifest,
            config_digest,
            config,
        })
    }

    /// Image `name` as `docker inspect` shows one (`Config` is the
    /// runtime config; the id is the manifest digest, as `kiln images`
    /// shows it and every command takes it), with kiln's documents beside:
    /// `Manifest`, `ConfigDigest` and `ImageConfig` (the config as stored).
    pub fn image_json(&self, name: &str) -> Result<Value, EngineError> {
        let StoredImage {
            digest,
            manifest,
            config_digest,
            config,
        } = self.stored_image(name)?;
        // As docker shows them: `busybox` is `busybox:latest`.
        let tags: Vec<String> = self
            .store()
            .tags()?
            .into_iter()
            .filter(|t| t.manifest.digest().to_string() == digest.to_string())
            .map(|t| match crate::repository_and_tag(&t.name) {
                (repository, tag) if tag == "<none>" => repository,
                (repository, tag) => format!("{repository}:{tag}"),
            })
            .collect();
        let mut out = json!({
            "Id": digest.to_string(),
            "RepoTags": tags,
            "RepoDigests": [],
            "Created": config["created"],
            "Author": config["author"].as_str().unwrap_or(""),
            "Architecture": config["architecture"],
            "Os": config["os"],
            "Config": image_runtime_config(&config["config"]),
            "RootFS": {
                "Type": "layers",
                "Layers": config["rootfs"]["diff_ids"],
            },
            "Size": crate::manifest_size(&manifest),
            "ConfigDigest": config_digest.to_string(),
            "Manifest": manifest,
            "ImageConfig": config,
        });
        if let Some(variant) = out["ImageConfig"]["variant"].as_str().map(str::to_owned) {
            out["Variant"] = variant.into();
        }
        Ok(out)
    }

    /// Image `name`'s history, oldest first, each entry with the size of
    /// the layer it made.
    pub fn image_history(&self, name: &str) -> Result<Vec<HistoryEntry>, EngineError> {
        let StoredImage {
            manifest, config, ..
        } = self.stored_image(name)?;
        let mut layer_sizes = manifest["layers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|layer| layer["size"].as_u64().unwrap_or(0));
        let text = |value: &Value| value.as_str().unwrap_or("").to_owned();
        Ok(config["history"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|entry| HistoryEntry {
                created: text(&entry["created"]),
                created_by: text(&entry["created_by"]),
                size: if entry["empty_layer"].as_bool().unwrap_or(false) {
                    0
                } else {
                    layer_sizes.next().unwrap_or(0)
                },
                comment: text(&entry["comment"]),
            })
            .collect())
    }
}

fn rfc3339(seconds: u64) -> String {
    humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds),
    )
    .to_string()
}

/// A container's state word and status text as `docker ps` shows them
/// (`running`, `Up 5 minutes`; `paused`, `Up 5 minutes (Paused)`;
/// `exited`, `Exited (0) 3 seconds ago`).
pub fn container_status(record: &ContainerRecord) -> (&'static str, String) {
    let now = std::time::SystemTime::now();
    let ago = |seconds: u64| {
        let then = std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds);
        crate::human_duration(now.duration_since(then).unwrap_or_default())
    };
    match &record.state {
        State::Created => ("created", "Created".to_owned()),
        State::Running { since, .. } if record.is_paused() => {
            ("paused", format!("Up {} (Paused)", ago(*since)))
        }
        State::Running { since, .. } if record.is_running() => {
            // Docker's suffix for a container with a health check.
            let health = match record.health.as_ref().map(|h| h.status) {
                Some(kiln_runtime::health::HealthStatus::Starting) => " (health: starting)",
                Some(kiln_runtime::health::HealthStatus::Healthy) => " (healthy)",
                Some(kiln_runtime::health::HealthStatus::Unhealthy) => " (unhealthy)",
                None => "",
            };
            ("running", format!("Up {}{health}", ago(*since)))
        }
        State::Running { .. } => ("exited", "Exited (unknown)".to_owned()),
        State::Exited { code, at } if record.restarting => (
            "restarting",
            format!("Restarting ({code}) {} ago", ago(*at)),
        ),
        State::Exited { code, at } => ("exited", format!("Exited ({code}) {} ago", ago(*at))),
    }
}

/// An image's runtime config as docker's image inspect shows it: every
/// field of docker's `ContainerConfig`, the image's values over the
/// defaults (clients index `OnBuild`, `Volumes` and the rest without
/// looking first).
fn image_runtime_config(config: &Value) -> Value {
    let mut shown = json!({
        "Hostname": "", "Domainname": "", "User": "",
        "AttachStdin": false, "AttachStdout": false, "AttachStderr": false,
        "Tty": false, "OpenStdin": false, "StdinOnce": false,
        "Env": null, "Cmd": null, "Image": "", "Volumes": null, "WorkingDir": "",
        "Entrypoint": null, "OnBuild": null, "Labels": null,
    });
    if let (Some(shown), Some(own)) = (shown.as_object_mut(), config.as_object()) {
        shown.extend(own.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    shown
}

/// Go's zero time, which docker shows for a time that has not come.
const NEVER: &str = "0001-01-01T00:00:00Z";

/// A container as `docker inspect` shows one: kiln's facts, and docker's
/// defaults for what kiln does not have (no restart policy, the
/// json-file log, no healthcheck), so clients that index these fields
/// find them.
pub fn container_json(record: &ContainerRecord) -> Value {
    let running = record.is_running();
    let paused = record.is_paused();
    let (status, exit_code, finished) = match &record.state {
        State::Created => ("created", 0, NEVER.to_owned()),
        State::Running { .. } if paused => ("paused", 0, NEVER.to_owned()),
        State::Running { .. } if running => ("running", 0, NEVER.to_owned()),
        State::Running { .. } => ("exited", -1, NEVER.to_owned()),
        State::Exited { code, at } if record.restarting => ("restarting", *code, rfc3339(*at)),
        State::Exited { code, at } => ("exited", *code, rfc3339(*at)),
    };
    let config = &record.config;
    let started = record.started_at.map_or_else(|| NEVER.to_owned(), rfc3339);
    let (path, args) = config
        .args
        .split_first()
        .map_or((String::new(), Vec::new()), |(p, a)| {
            (p.clone(), a.to_vec())
        });
    let mounts: Vec<Value> = config
        .binds
        .iter()
        .map(|(host, container, ro)| {
            let source = host.display().to_string();
            let volume = config
                .volumes
                .iter()
                .find(|name| host.parent().and_then(|p| p.file_name()) == Some(name.as_ref()));
            match volume {
                Some(name) => json!({
                    "Type": "volume", "Name": name, "Source": source, "Destination": container,
                    "Driver": "local", "Mode": "z", "RW": !ro, "Propagation": "",
                }),
                None => json!({
                    "Type": "bind", "Source": source, "Destination": container,
                    "Mode": if *ro { "ro" } else { "" }, "RW": !ro, "Propagation": "rprivate",
                }),
            }
        })
        .collect();
    let network = json!({
        "IPAMConfig": null, "Links": null, "Aliases": null, "NetworkID": config.network,
        "EndpointID": "", "Gateway": "", "IPAddress": "", "IPPrefixLen": 0,
        "IPv6Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0, "MacAddress": "",
    });
    let resources = &config.resources;
    let mut state = json!({
        "Status": status,
        "Running": running,
        "Paused": paused,
        "Restarting": record.restarting,
        "OOMKilled": false,
        "Dead": false,
        "Pid": record.running_pid().unwrap_or(0),
        "ExitCode": exit_code,
        "Error": "",
        "StartedAt": started,
        "FinishedAt": finished,
    });
    if let Some(health) = &record.health {
        let time = |at: &std::time::Duration| {
            humantime::format_rfc3339_nanos(std::time::UNIX_EPOCH + *at).to_string()
        };
        state["Health"] = json!({
            "Status": health.status.word(),
            "FailingStreak": health.failing_streak,
            "Log": health.log.iter().map(|probe| json!({
                "Start": time(&probe.start),
                "End": time(&probe.end),
                "ExitCode": probe.exit_code,
                "Output": probe.output,
            })).collect::<Vec<_>>(),
        });
    }
    let mut container_config = json!({
        "Hostname": config.hostname,
        "Domainname": "",
        "User": format!("{}:{}", config.uid, config.gid),
        "AttachStdin": false,
        "AttachStdout": true,
        "AttachStderr": true,
        "Tty": config.tty,
        "OpenStdin": false,
        "StdinOnce": false,
        "Env": config.env,
        "Cmd": config.args,
        "Image": config.image,
        "Volumes": null,
        "WorkingDir": config.cwd,
        "Entrypoint": null,
        "OnBuild": null,
        "Labels": config.labels,
        "StopSignal": config
            .stop_signal
            .and_then(|n| nix::sys::signal::Signal::try_from(n).ok())
            .map(|s| s.as_str()),
        "StopTimeout": config.stop_timeout,
    });
    if let Some(check) = &config.healthcheck {
        let ns = |d: std::time::Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        container_config["Healthcheck"] = json!({
            "Test": check.test,
            "Interval": ns(check.interval),
            "Timeout": ns(check.timeout),
            "StartPeriod": ns(check.start_period),
            "StartInterval": ns(check.start_interval),
            "Retries": check.retries,
        });
    }
    let mut host_config = json!({
        "Binds": config.binds.iter().map(|(host, container, ro)| {
            format!("{}:{container}{}", host.display(), if *ro { ":ro" } else { "" })
        }).collect::<Vec<_>>(),
        "ContainerIDFile": "",
        "LogConfig": {"Type": "json-file", "Config": {}},
        "NetworkMode": config.network,
        "PortBindings": {},
        "RestartPolicy": {
            "Name": config.restart.name(),
            "MaximumRetryCount": config.restart.max_retries(),
        },
        "AutoRemove": false,
        "VolumeDriver": "",
        "VolumesFrom": null,
        "ConsoleSize": [0, 0],
        "CapAdd": null,
        "CapDrop": null,
        "CgroupnsMode": "host",
        "Dns": [],
        "DnsOptions": [],
        "DnsSearch": [],
        "ExtraHosts": config.extra_hosts.iter().map(|(name, address)| format!("{name}:{address}")).collect::<Vec<_>>(),
        "GroupAdd": null,
        "IpcMode": "private",
        "Cgroup": "",
        "Links": null,
        "OomScoreAdj": 0,
        "PidMode": "",
        "Privileged": config.privileged,
        "PublishAllPorts": false,
        "ReadonlyRootfs": config.read_only,
        "SecurityOpt": null,
    });
    let host_resources = json!({
        "UTSMode": "",
        "UsernsMode": "",
        "ShmSize": config.shm_size.unwrap_or(64 << 20),
        "Runtime": "kiln",
        "Isolation": "",
        "CpuShares": 0,
        "Memory": resources.memory_bytes.unwrap_or(0),
        "NanoCpus": resources.cpus.map_or(0, |c| (c * 1e9) as u64),
        "CgroupParent": "",
        "BlkioWeight": 0,
        "CpuPeriod": 0,
        "CpuQuota": 0,
        "CpuRealtimePeriod": 0,
        "CpuRealtimeRuntime": 0,
        "CpusetCpus": "",
        "CpusetMems": "",
        "Devices": [],
        "DeviceCgroupRules": null,
        "DeviceRequests": null,
        "MemoryReservation": 0,
        "MemorySwap": resources.memory_bytes.map_or(0, |m| 2 * m),
        "MemorySwappiness": null,
        "OomKillDisable": false,
        "PidsLimit": resources.pids_limit,
        "Ulimits": [],
        "Init": config.init,
        "Tmpfs": config.tmpfs.iter().map(|(path, size)| {
            (path.clone(), size.map(|s| format!("size={s}")).unwrap_or_default())
        }).collect::<std::collections::BTreeMap<_, _>>(),
    });
    if let (Some(all), Value::Object(rest)) = (host_config.as_object_mut(), host_resources) {
        all.extend(rest);
    }
    json!({
        "Id": record.id,
        "Name": format!("/{}", record.name),
        "Created": rfc3339(record.created),
        "Path": path,
        "Args": args,
        "Image": config.image_id,
        "Driver": "overlay",
        "Platform": "linux",
        "RestartCount": record.restart_count,
        "MountLabel": "",
        "ProcessLabel": "",
        "AppArmorProfile": "",
        "ExecIDs": null,
        "State": state,
        "Config": container_config,
        "HostConfig": host_config,
        "Mounts": mounts,
        "NetworkSettings": {
            "Bridge": "",
            "SandboxID": "",
            "SandboxKey": "",
            "Ports": {},
            "Networks": { config.network.clone(): network },
            "IPAddress": "",
            "Gateway": "",
            "MacAddress": "",
        },
        "LogPath": "",
        "HostnamePath": "",
        "HostsPath": "",
        "ResolvConfPath": "",
    })
}

/// A volume as `docker volume inspect` shows one.
pub fn volume_json(volume: &Volume) -> Value {
    json!({
        "CreatedAt": rfc3339(volume.created),
        "Driver": "local",
        "Labels": volume.labels,
        "Mountpoint": volume.mountpoint.display().to_string(),
        "Name": volume.name,
        "Options": {},
        "Scope": "local",
    })
}
