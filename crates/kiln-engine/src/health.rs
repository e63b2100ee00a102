//! Health checks as the monitor runs them: the check a container gets
//! (the image's HEALTHCHECK under the request's `--health-*`), and the
//! prober, a thread beside the monitor's wait that execs the check in the
//! container every interval (the start interval in the start period),
//! skips it while paused, kills a probe that outlives its timeout, and
//! records each result on the container's record (kiln-runtime's
//! `Health` says what it means).

use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kiln_runtime::health::{HealthCheck, Probe, KEPT_OUTPUT};
use kiln_runtime::CollectedOutput;

use crate::{Attach, Engine, ExecRequest};

/// `--health-*` and `--no-healthcheck` (the Engine API's `Healthcheck`):
/// what is given replaces the image's.
#[derive(Clone, Debug, Default)]
pub struct HealthOptions {
    /// Docker's form: `["CMD", ...]`, `["CMD-SHELL", command]`, or
    /// `["NONE"]` (no check, whatever the image says).
    pub test: Option<Vec<String>>,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub start_period: Option<Duration>,
    pub start_interval: Option<Duration>,
    pub retries: Option<u32>,
    /// `--no-healthcheck`.
    pub disabled: bool,
}

/// The check a container gets: the request's values over the image's,
/// Docker's defaults for the rest; none without a test (or `NONE`).
pub(crate) fn health_check(
    image: Option<&kiln_graph::config::Healthcheck>,
    options: &HealthOptions,
) -> Option<HealthCheck> {
    if options.disabled {
        return None;
    }
    let test = options
        .test
        .clone()
        .filter(|t| !t.is_empty())
        .or_else(|| image.map(|i| i.test.clone()))?;
    if test.first().is_none_or(|kind| kind == "NONE") {
        return None;
    }
    let image_duration = |pick: fn(&kiln_graph::config::Healthcheck) -> u64| {
        image
            .map(pick)
            .filter(|ns| *ns > 0)
            .map(Duration::from_nanos)
    };
    let interval = options
        .interval
        .or_else(|| image_duration(|i| i.interval))
        .unwrap_or(HealthCheck::INTERVAL);
    Some(HealthCheck {
        test,
        interval,
        timeout: options
            .timeout
            .or_else(|| image_duration(|i| i.timeout))
            .unwrap_or(HealthCheck::TIMEOUT),
        start_period: options
            .start_period
            .or_else(|| image_duration(|i| i.start_period))
            .unwrap_or_default(),
        // Not given: the interval (a start interval only quickens the
        // start period when asked for).
        start_interval: options
            .start_interval
            .or_else(|| image_duration(|i| i.start_interval))
            .unwrap_or(interval),
        retries: options
            .retries
            .or_else(|| {
                image
                    .map(|i| i.retries)
                    .filter(|r| *r > 0)
                    .map(|r| u32::try_from(r).unwrap_or(u32::MAX))
            })
            .unwrap_or(HealthCheck::RETRIES),
    })
}

impl Engine {
    /// Probes container `id` by `check` until `stop` says its run ended
    /// (or the sender is dropped).
    pub(crate) fn probe_until(&self, id: &str, check: &HealthCheck, stop: &mpsc::Receiver<()>) {
        let Some(command) = check.command() else {
            return;
        };
        let started = Instant::now();
        loop {
            let wait = if started.elapsed() < check.start_period {
                check.start_interval
            } else {
                check.interval
            };
            if !matches!(
                stop.recv_timeout(wait),
                Err(mpsc::RecvTimeoutError::Timeout)
            ) {
                return;
            }
            let Some(record) = self.containers().load(id) else {
                return;
            };
            if !record.is_running() {
                return;
            }
            // Docker's rule: no probes while paused.
            if record.is_paused() {
                continue;
            }
            let in_start_period = started.elapsed() < check.start_period;
            let probe = self.probe(&record, &command, check.timeout);
            let recorded = self.containers().update(id, |r| {
                if let Some(health) = r.health.as_mut() {
                    health.record(probe, check.retries, in_start_period);
                }
                Ok(())
            });
            if recorded.is_err() {
                return;
            }
        }
    }

    /// One probe: `command` exec'd in the container, killed after
    /// `timeout`; its exit code and the start of its output.
    fn probe(
        &self,
        record: &kiln_runtime::containers::ContainerRecord,
        command: &[String],
        timeout: Duration,
    ) -> Probe {
        let start = since_epoch();
        let request = ExecRequest {
            command: command.to_vec(),
            ..Default::default()
        };
        let mut output = CollectedOutput::default();
        let (done, finished) = mpsc::channel::<()>();
        let mut finished = Some(finished);
        let timed_out = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut watchdog = None;
        let result = self.exec_in_container(
            record,
            &request,
            Attach {
                stdin: false,
                window: None,
                output: Some(&mut output),
            },
            &mut |running| {
                let timed_out = std::sync::Arc::clone(&timed_out);
                let pid = nix::unistd::Pid::from_raw(running.pid);
                let Some(finished) = finished.take() else {
                    return Ok(());
                };
                // Told only after the probe was reaped: the kill can hit
                // its pid only in the instant between the reap and the
                // word, which a recycled pid would need too.
                watchdog = Some(std::thread::spawn(move || {
                    if finished.recv_timeout(timeout) == Err(mpsc::RecvTimeoutError::Timeout) {
                        timed_out.store(true, std::sync::atomic::Ordering::SeqCst);
                        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                    }
                }));
                Ok(())
            },
        );
        drop(done);
        if let Some(watchdog) = watchdog {
            let _ = watchdog.join();
        }
        let mut text = output.stdout;
        text.extend_from_slice(&output.stderr);
        text.truncate(KEPT_OUTPUT);
        let mut text = String::from_utf8_lossy(&text).into_owned();
        let exit_code = if timed_out.load(std::sync::atomic::Ordering::SeqCst) {
            text = format!("Health check exceeded timeout ({timeout:?})");
            -1
        } else {
            match result {
                Ok(code) => code,
                Err(error) => {
                    text = error.to_string();
                    -1
                }
            }
        };
        Probe {
            start,
            end: since_epoch(),
            exit_code,
            output: text,
        }
    }
}

fn since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}
