//! A container's health check (HEALTHCHECK, `--health-*`, the Engine
//! API's `Healthcheck`) as its record keeps it, and the health its probes
//! found, by Docker's rules: `starting` until a probe passes, `healthy`
//! after one, `unhealthy` after `retries` failures in a row (failures in
//! the start period do not count). The probes themselves are run by
//! kiln-engine's monitor.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How many probe results the record keeps (Docker's 5).
const KEPT_PROBES: usize = 5;
/// How much of a probe's output is kept (Docker's 4096 bytes).
pub const KEPT_OUTPUT: usize = 4096;

/// What to probe and how often.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    /// Docker's form, as shown by inspect: `["CMD", args...]` or
    /// `["CMD-SHELL", command]`.
    pub test: Vec<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub start_period: Duration,
    /// Between probes in the start period.
    pub start_interval: Duration,
    pub retries: u32,
}

impl HealthCheck {
    /// Docker's defaults for what is not given.
    pub const INTERVAL: Duration = Duration::from_secs(30);
    pub const TIMEOUT: Duration = Duration::from_secs(30);
    pub const START_INTERVAL: Duration = Duration::from_secs(5);
    pub const RETRIES: u32 = 3;

    /// The probe's argv: `CMD` as given, `CMD-SHELL` through `/bin/sh -c`.
    pub fn command(&self) -> Option<Vec<String>> {
        match self.test.split_first() {
            Some((kind, args)) if kind == "CMD" && !args.is_empty() => Some(args.to_vec()),
            Some((kind, [command])) if kind == "CMD-SHELL" => {
                Some(vec!["/bin/sh".into(), "-c".into(), command.clone()])
            }
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    #[default]
    Starting,
    Healthy,
    Unhealthy,
}

impl HealthStatus {
    /// Docker's word (`State.Health.Status`).
    pub fn word(self) -> &'static str {
        match self {
            HealthStatus::Starting => "starting",
            HealthStatus::Healthy => "healthy",
            HealthStatus::Unhealthy => "unhealthy",
        }
    }
}

/// One probe's result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    /// Seconds since the epoch, with nanoseconds.
    pub start: Duration,
    pub end: Duration,
    /// Its exit code; -1 when it ran out of time or could not start.
    pub exit_code: i32,
    pub output: String,
}

/// What the probes found so far in this run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub status: HealthStatus,
    pub failing_streak: u32,
    /// The last few, oldest first.
    pub log: Vec<Probe>,
}

impl Health {
    /// Takes in a probe's result; `in_start_period`: a failure then
    /// does not count.
    pub fn record(&mut self, probe: Probe, retries: u32, in_start_period: bool) {
        if probe.exit_code == 0 {
            self.status = HealthStatus::Healthy;
            self.failing_streak = 0;
        } else if !in_start_period || self.status != HealthStatus::Starting {
            self.failing_streak += 1;
            if self.failing_streak >= retries.max(1) {
                self.status = HealthStatus::Unhealthy;
            }
        }
        self.log.push(probe);
        if self.log.len() > KEPT_PROBES {
            self.log.remove(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(exit_code: i32) -> Probe {
        Probe {
            start: Duration::ZERO,
            end: Duration::ZERO,
            exit_code,
            output: String::new(),
        }
    }

    #[test]
    fn health_follows_dockers_rules() {
        let mut health = Health::default();
        health.record(probe(1), 2, true);
        assert_eq!(
            (health.status, health.failing_streak),
            (HealthStatus::Starting, 0)
        );
        health.record(probe(1), 2, false);
        assert_eq!(health.status, HealthStatus::Starting);
        health.record(probe(1), 2, false);
        assert_eq!(health.status, HealthStatus::Unhealthy);
        health.record(probe(0), 2, false);
        assert_eq!(
            (health.status, health.failing_streak),
            (HealthStatus::Healthy, 0)
        );
        for _ in 0..10 {
            health.record(probe(0), 2, false);
        }
        assert_eq!(health.log.len(), KEPT_PROBES);
        let shell = HealthCheck {
            test: vec!["CMD-SHELL".into(), "exit 1".into()],
            interval: HealthCheck::INTERVAL,
            timeout: HealthCheck::TIMEOUT,
            start_period: Duration::ZERO,
            start_interval: HealthCheck::START_INTERVAL,
            retries: 3,
        };
        assert_eq!(shell.command().unwrap(), ["/bin/sh", "-c", "exit 1"]);
        let none = HealthCheck {
            test: vec!["NONE".into()],
            ..shell
        };
        assert!(none.command().is_none());
    }
}
