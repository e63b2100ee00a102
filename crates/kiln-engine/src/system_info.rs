//! What `kiln info` and the daemon's `/info` and `/version` tell: the
//! store's counts and what this machine is and supports.

use crate::{Engine, EngineError};

/// The store and the machine, as `docker info` reports them.
#[derive(Clone, Debug)]
pub struct SystemInfo {
    pub version: &'static str,
    pub store: std::path::PathBuf,
    pub images: usize,
    pub untagged_images: usize,
    pub containers: usize,
    pub running_containers: usize,
    /// Of the running ones, those paused.
    pub paused_containers: usize,
    pub cache_entries: usize,
    pub cgroup_version: u8,
    pub kernel: String,
    /// `/etc/os-release`'s PRETTY_NAME.
    pub operating_system: String,
    /// The platform kiln builds for by default (`linux/amd64`).
    pub platform: kiln_graph::Platform,
    pub cpus: usize,
    /// Bytes of memory (`/proc/meminfo`'s MemTotal).
    pub memory: u64,
    pub root: bool,
}

impl Engine {
    pub fn system_info(&self) -> Result<SystemInfo, EngineError> {
        let images = self.images()?;
        let containers = self.containers().list();
        let cache = kiln_cache::CacheIndex::open(&self.store().layout().cache()).entries();
        let os_release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Ok(SystemInfo {
            version: env!("CARGO_PKG_VERSION"),
            store: self.store().root().to_owned(),
            // Images, not names: one with three tags is one (docker's count).
            images: images
                .iter()
                .map(|i| i.id)
                .collect::<std::collections::BTreeSet<_>>()
                .len(),
            untagged_images: images.iter().filter(|i| i.name.is_none()).count(),
            containers: containers.len(),
            running_containers: containers.iter().filter(|c| c.is_running()).count(),
            paused_containers: containers.iter().filter(|c| c.is_paused()).count(),
            cache_entries: cache.len(),
            cgroup_version: kiln_runtime::cgroup_version(),
            kernel: nix::sys::utsname::uname()
                .map(|u| u.release().to_string_lossy().into_owned())
                .unwrap_or_else(|_| "unknown".to_owned()),
            operating_system: os_release
                .lines()
                .find_map(|line| line.strip_prefix("PRETTY_NAME="))
                .map(|name| name.trim_matches('"').to_owned())
                .unwrap_or_else(|| "unknown".to_owned()),
            platform: kiln_graph::Platform::host(),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory: meminfo
                .lines()
                .find_map(|line| line.strip_prefix("MemTotal:"))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
                .map_or(0, |kib| kib * 1024),
            root: nix::unistd::Uid::effective().is_root(),
        })
    }
}
