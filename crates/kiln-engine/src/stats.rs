//! What running containers use (`docker stats`): a sample of a
//! container's cgroup figures and network counters, the host's CPU time
//! beside it, and from two samples Docker's CPU percentage; the Engine
//! API's stats JSON is made here too, so the CLI and the daemon show the
//! same numbers.

use std::time::SystemTime;

use kiln_runtime::containers::ContainerRecord;
use kiln_runtime::CgroupStats;
use serde_json::{json, Value};

use crate::{Engine, EngineError};

/// One reading of a running container.
#[derive(Clone, Debug)]
pub struct StatsSample {
    pub read: SystemTime,
    pub cgroup: CgroupStats,
    /// The host's CPU time in all, in ns (`/proc/stat`).
    pub system_cpu: u64,
    pub online_cpus: u32,
    /// Per interface of its own network namespace (none with the
    /// host's): received and sent bytes and packets.
    pub networks: Vec<(String, NetworkCounters)>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetworkCounters {
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
}

impl Engine {
    /// A reading of the running container `record`.
    pub fn container_stats(&self, record: &ContainerRecord) -> Result<StatsSample, EngineError> {
        let pid = record.running_pid().ok_or_else(|| {
            EngineError::Conflict(format!("container {} is not running", record.name))
        })?;
        let cgroup = kiln_runtime::container_stats(pid)?;
        let networks = if record.config.network == "host" {
            Vec::new()
        } else {
            network_counters(pid)
        };
        Ok(StatsSample {
            read: SystemTime::now(),
            cgroup,
            system_cpu: system_cpu_ns(),
            online_cpus: std::thread::available_parallelism()
                .map_or(1, |n| u32::try_from(n.get()).unwrap_or(1)),
            networks,
        })
    }
}

impl StatsSample {
    /// Docker's CPU percentage over the time from `previous` to this one:
    /// the container's share of the host's CPU time, times the CPUs.
    pub fn cpu_percent(&self, previous: Option<&StatsSample>) -> f64 {
        let Some(previous) = previous else {
            return 0.0;
        };
        let container = self
            .cgroup
            .cpu_total
            .saturating_sub(previous.cgroup.cpu_total) as f64;
        let system = self.system_cpu.saturating_sub(previous.system_cpu) as f64;
        if system <= 0.0 {
            return 0.0;
        }
        container / system * f64::from(self.online_cpus) * 100.0
    }

    /// Memory used as `docker stats` counts it: the usage less the page
    /// cache (v1's `total_inactive_file`, v2's `inactive_file`).
    pub fn memory_used(&self) -> u64 {
        let stat = &self.cgroup.memory_stat;
        let cache = stat
            .get("total_inactive_file")
            .or_else(|| stat.get("inactive_file"))
            .copied()
            .unwrap_or(0);
        self.cgroup.memory_usage.saturating_sub(cache)
    }

    /// Bytes read and written, over every device.
    pub fn block_io(&self) -> (u64, u64) {
        self.cgroup
            .io
            .iter()
            .fold((0, 0), |(r, w), (_, _, read, write)| (r + read, w + write))
    }

    /// Bytes received and sent, over every interface.
    pub fn network_io(&self) -> (u64, u64) {
        self.networks
            .iter()
            .fold((0, 0), |(rx, tx), (_, counters)| {
                (rx + counters.rx_bytes, tx + counters.tx_bytes)
            })
    }

    /// The Engine API's stats object for `record` (`GET
    /// /containers/ID/stats`), `previous` as its `precpu_stats`.
    pub fn docker_json(&self, record: &ContainerRecord, previous: Option<&StatsSample>) -> Value {
        let cpu = |sample: Option<&StatsSample>| match sample {
            Some(sample) => json!({
                "cpu_usage": {
                    "total_usage": sample.cgroup.cpu_total,
                    "percpu_usage": sample.cgroup.cpu_per_cpu,
                    "usage_in_kernelmode": sample.cgroup.cpu_kernel,
                    "usage_in_usermode": sample.cgroup.cpu_user,
                },
                "system_cpu_usage": sample.system_cpu,
                "online_cpus": sample.online_cpus,
                "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
            }),
            None => json!({
                "cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
                "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
            }),
        };
        let time = |at: SystemTime| humantime::format_rfc3339_nanos(at).to_string();
        let io: Vec<Value> = self
            .cgroup
            .io
            .iter()
            .flat_map(|(major, minor, read, write)| {
                [("read", read), ("write", write)].map(
                    |(op, value)| json!({"major": major, "minor": minor, "op": op, "value": value}),
                )
            })
            .collect();
        let networks: serde_json::Map<String, Value> = self
            .networks
            .iter()
            .map(|(name, c)| {
                (
                    name.clone(),
                    json!({
                        "rx_bytes": c.rx_bytes, "rx_packets": c.rx_packets,
                        "rx_errors": 0, "rx_dropped": 0,
                        "tx_bytes": c.tx_bytes, "tx_packets": c.tx_packets,
                        "tx_errors": 0, "tx_dropped": 0,
                    }),
                )
            })
            .collect();
        json!({
            "name": format!("/{}", record.name),
            "id": record.id,
            "read": time(self.read),
            "preread": previous.map_or_else(|| "0001-01-01T00:00:00Z".to_owned(), |p| time(p.read)),
            "pids_stats": {"current": self.cgroup.pids, "limit": self.cgroup.pids_limit},
            "blkio_stats": {
                "io_service_bytes_recursive": io,
                "io_serviced_recursive": null, "io_queue_recursive": null,
                "io_service_time_recursive": null, "io_wait_time_recursive": null,
                "io_merged_recursive": null, "io_time_recursive": null,
                "sectors_recursive": null,
            },
            "num_procs": 0,
            "storage_stats": {},
            "cpu_stats": cpu(Some(self)),
            "precpu_stats": cpu(previous),
            "memory_stats": {
                "usage": self.cgroup.memory_usage,
                "max_usage": self.cgroup.memory_max_usage,
                "stats": self.cgroup.memory_stat,
                "limit": self.cgroup.memory_limit,
            },
            "networks": networks,
        })
    }
}

/// The host's CPU time in ns: `/proc/stat`'s first line, in clock ticks.
fn system_cpu_ns() -> u64 {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: u64 = text
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|n| n.parse::<u64>().ok())
        .sum();
    // SAFETY: sysconf reads a constant.
    let per_second = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) })
        .ok()
        .filter(|n| *n > 0)
        .unwrap_or(100);
    ticks.saturating_mul(1_000_000_000 / per_second)
}

/// `/proc/PID/net/dev`: the interfaces of the process's network
/// namespace (the loopback of `--network none` included).
fn network_counters(pid: i32) -> Vec<(String, NetworkCounters)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).unwrap_or_default();
    text.lines()
        .skip(2)
        .filter_map(|line| {
            let (name, counters) = line.split_once(':')?;
            let numbers: Vec<u64> = counters
                .split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect();
            (numbers.len() >= 10).then(|| {
                (
                    name.trim().to_owned(),
                    NetworkCounters {
                        rx_bytes: numbers[0],
                        rx_packets: numbers[1],
                        tx_bytes: numbers[8],
                        tx_packets: numbers[9],
                    },
                )
            })
        })
        .collect()
}
