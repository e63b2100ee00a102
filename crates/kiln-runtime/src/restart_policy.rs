//! What happens when a container's command ends (`--restart`, the Engine
//! API's `HostConfig.RestartPolicy`), by Docker's rules. The decision is
//! made where the exit is recorded, in the same update of the record, so
//! a container about to start again is never seen merely exited (and
//! removed, say) in between.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::RuntimeError;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Never (Docker's default).
    #[default]
    No,
    /// Whatever the exit code, unless stopped by hand.
    Always,
    /// As `always`; the difference is at the daemon's start (a container
    /// stopped by hand stays stopped even then).
    UnlessStopped,
    /// After a non-zero exit code, at most `max_retries` times (0: no
    /// limit).
    OnFailure { max_retries: u32 },
}

/// The first wait before a restart; it doubles with each restart up to
/// [`MAX_BACKOFF`], and starts over after a run of [`STEADY_RUN`].
pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
pub const STEADY_RUN: Duration = Duration::from_secs(10);

impl RestartPolicy {
    /// `no`, `always`, `unless-stopped`, `on-failure[:N]` (`--restart`).
    pub fn parse(text: &str) -> Result<RestartPolicy, RuntimeError> {
        let (name, count) = match text.split_once(':') {
            Some((name, count)) => (name, Some(count)),
            None => (text, None),
        };
        let retries = match count {
            None => None,
            Some(count) => Some(count.parse::<u32>().map_err(|_| {
                RuntimeError::InvalidSpec(format!(
                    "restart policy {text:?}: the retry count is a number"
                ))
            })?),
        };
        RestartPolicy::from_parts(name, retries)
    }

    /// The Engine API's `{"Name": ..., "MaximumRetryCount": N}`; a count
    /// belongs to `on-failure` only (Docker refuses it with the others).
    pub fn from_parts(name: &str, retries: Option<u32>) -> Result<RestartPolicy, RuntimeError> {
        let policy = match name {
            "" | "no" => RestartPolicy::No,
            "always" => RestartPolicy::Always,
            "unless-stopped" => RestartPolicy::UnlessStopped,
            "on-failure" => {
                return Ok(RestartPolicy::OnFailure {
                    max_retries: retries.unwrap_or(0),
                })
            }
            _ => {
                return Err(RuntimeError::InvalidSpec(format!(
                    "restart policy {name:?}: no, always, unless-stopped or on-failure[:N]"
                )))
            }
        };
        match retries {
            Some(n) if n > 0 => Err(RuntimeError::InvalidSpec(format!(
                "maximum retry count cannot be used with restart policy {name:?}"
            ))),
            _ => Ok(policy),
        }
    }

    /// Docker's name for it.
    pub fn name(&self) -> &'static str {
        match self {
            RestartPolicy::No => "no",
            RestartPolicy::Always => "always",
            RestartPolicy::UnlessStopped => "unless-stopped",
            RestartPolicy::OnFailure { .. } => "on-failure",
        }
    }

    pub fn max_retries(&self) -> u32 {
        match self {
            RestartPolicy::OnFailure { max_retries } => *max_retries,
            _ => 0,
        }
    }

    /// Whether a run that ended with `code` is followed by another, after
    /// `restarts` restarts so far; never once stopped by hand.
    pub fn restarts(&self, code: i32, restarts: u32, stopped_by_hand: bool) -> bool {
        if stopped_by_hand {
            return false;
        }
        match self {
            RestartPolicy::No => false,
            RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
            RestartPolicy::OnFailure { max_retries } => {
                code != 0 && (*max_retries == 0 || restarts < *max_retries)
            }
        }
    }
}

/// The wait before the next restart: doubled from the last one, or the
/// first again after a steady run.
pub fn next_backoff(last: Duration, ran_for: Duration) -> Duration {
    if ran_for >= STEADY_RUN {
        FIRST_BACKOFF
    } else {
        (last * 2).min(MAX_BACKOFF)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_and_decide_as_dockers() {
        assert_eq!(RestartPolicy::parse("no").unwrap(), RestartPolicy::No);
        assert_eq!(
            RestartPolicy::parse("on-failure:3").unwrap(),
            RestartPolicy::OnFailure { max_retries: 3 }
        );
        assert!(RestartPolicy::parse("always:2").is_err());
        assert!(RestartPolicy::parse("sometimes").is_err());
        assert!(RestartPolicy::parse("on-failure:x").is_err());
        let three = RestartPolicy::OnFailure { max_retries: 3 };
        assert!(three.restarts(1, 2, false));
        assert!(!three.restarts(1, 3, false));
        assert!(!three.restarts(0, 0, false));
        assert!(RestartPolicy::Always.restarts(0, 100, false));
        assert!(!RestartPolicy::Always.restarts(1, 0, true));
        assert!(!RestartPolicy::No.restarts(1, 0, false));
        assert_eq!(
            next_backoff(FIRST_BACKOFF, Duration::ZERO),
            FIRST_BACKOFF * 2
        );
        assert_eq!(next_backoff(MAX_BACKOFF, Duration::ZERO), MAX_BACKOFF);
        assert_eq!(next_backoff(MAX_BACKOFF, STEADY_RUN), FIRST_BACKOFF);
    }
}
