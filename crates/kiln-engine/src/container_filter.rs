//! Which containers a listing shows (`docker ps --filter`, the Engine
//! API's `filters`), by Docker's rules: values of one key are
//! alternatives, and every key given must hold.

use kiln_runtime::containers::{ContainerRecord, State};

use crate::{Engine, EngineError};

/// One `KEY=VALUE` of `--filter`.
#[derive(Clone, Debug)]
pub enum ContainerFilter {
    /// A prefix of the id.
    Id(String),
    /// A regular expression the name matches somewhere (Docker's).
    Name(regex::Regex),
    /// `created`, `running`, `paused`, `exited` (Docker's other words,
    /// `restarting`, `removing` and `dead`, match nothing kiln has).
    Status(String),
    /// `label=KEY` or `label=KEY=VALUE`.
    Label { key: String, value: Option<String> },
    /// The exit code of an exited container.
    Exited(i32),
    /// The image: as the container was created from it (`busybox`,
    /// `busybox:latest`) or its id (a prefix, with or without `sha256:`).
    Ancestor(String),
    /// A named volume it mounts, or a mount's destination.
    Volume(String),
}

const STATUSES: [&str; 7] = [
    "created",
    "restarting",
    "running",
    "removing",
    "paused",
    "exited",
    "dead",
];

impl ContainerFilter {
    pub fn parse(key: &str, value: &str) -> Result<ContainerFilter, EngineError> {
        let bad = |why: &str| EngineError::Request(format!("filter {key}={value}: {why}"));
        Ok(match key {
            "id" => ContainerFilter::Id(value.to_owned()),
            "name" => ContainerFilter::Name(
                // Names are shown as `/name` by the Engine API: a
                // pattern anchored at `^/` means the start of the name.
                regex::Regex::new(&value.replacen("^/", "^", 1))
                    .map_err(|e| bad(&format!("not a regular expression: {e}")))?,
            ),
            "status" if STATUSES.contains(&value) => ContainerFilter::Status(value.to_owned()),
            "status" => return Err(bad(&format!("a status is one of {}", STATUSES.join(", ")))),
            "label" => match value.split_once('=') {
                Some((k, v)) => ContainerFilter::Label {
                    key: k.to_owned(),
                    value: Some(v.to_owned()),
                },
                None => ContainerFilter::Label {
                    key: value.to_owned(),
                    value: None,
                },
            },
            "exited" => {
                ContainerFilter::Exited(value.parse().map_err(|_| bad("an exit code is a number"))?)
            }
            "ancestor" => ContainerFilter::Ancestor(value.to_owned()),
            "volume" => ContainerFilter::Volume(value.to_owned()),
            _ => return Err(bad(
                "kiln filters containers by id, name, status, label, exited, ancestor or volume",
            )),
        })
    }

    fn key(&self) -> &'static str {
        match self {
            ContainerFilter::Id(_) => "id",
            ContainerFilter::Name(_) => "name",
            ContainerFilter::Status(_) => "status",
            ContainerFilter::Label { .. } => "label",
            ContainerFilter::Exited(_) => "exited",
            ContainerFilter::Ancestor(_) => "ancestor",
            ContainerFilter::Volume(_) => "volume",
        }
    }

    pub fn matches(&self, record: &ContainerRecord) -> bool {
        let config = &record.config;
        match self {
            ContainerFilter::Id(prefix) => record.id.starts_with(prefix.as_str()),
            ContainerFilter::Name(pattern) => pattern.is_match(&record.name),
            ContainerFilter::Status(status) => crate::container_status(record).0 == status,
            ContainerFilter::Label { key, value } => config
                .labels
                .get(key)
                .is_some_and(|v| value.as_ref().is_none_or(|w| v == w)),
            ContainerFilter::Exited(code) => {
                matches!(record.state, State::Exited { code: c, .. } if c == *code)
            }
            ContainerFilter::Ancestor(image) => {
                let bare = image.strip_prefix("sha256:").unwrap_or(image);
                let id = config
                    .image_id
                    .strip_prefix("sha256:")
                    .unwrap_or(&config.image_id);
                config.image == *image
                    || format!("{}:latest", config.image) == *image
                    || format!("{image}:latest") == config.image
                    || (bare.len() >= 4 && id.starts_with(bare))
            }
            ContainerFilter::Volume(volume) => {
                config.volumes.iter().any(|name| name == volume)
                    || config
                        .binds
                        .iter()
                        .any(|(_, destination, _)| destination == volume)
            }
        }
    }
}

impl Engine {
    /// The kept containers a listing shows: the running ones (with
    /// `all`, or a `status` filter, every one) that `filters` let
    /// through, oldest first.
    pub fn list_containers(&self, all: bool, filters: &[ContainerFilter]) -> Vec<ContainerRecord> {
        let all = all
            || filters
                .iter()
                .any(|f| matches!(f, ContainerFilter::Status(_)));
        self.containers()
            .list()
            .into_iter()
            .filter(|record| all || record.is_running() || record.restarting)
            .filter(|record| {
                filters.iter().all(|filter| {
                    // Any value of the filter's key will do.
                    filters
                        .iter()
                        .filter(|other| other.key() == filter.key())
                        .any(|other| other.matches(record))
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_filters_say_what_is_expected() {
        for (key, value) in [
            ("status", "sleeping"),
            ("exited", "x"),
            ("name", "("),
            ("color", "red"),
        ] {
            let error = ContainerFilter::parse(key, value).unwrap_err().to_string();
            assert!(error.contains(&format!("{key}={value}")), "{error}");
        }
        assert!(ContainerFilter::parse("label", "a=b").is_ok());
    }
}
