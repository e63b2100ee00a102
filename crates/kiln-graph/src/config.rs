//! The image configuration a Dockerfile's metadata instructions edit, in the
//! shape of the OCI/Docker image config (`config` object), so the store can
//! serialise it as is. Durations are nanoseconds, as in Docker's JSON.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The runtime defaults of an image (the `config` object of an OCI image
/// configuration, with Docker's extensions: Healthcheck, Shell, OnBuild).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageConfig {
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub user: String,
    /// `80/tcp` style keys; the values are empty objects in the JSON.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub exposed_ports: BTreeMap<String, Empty>,
    /// `KEY=value` entries in the order they were first set.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub env: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub volumes: BTreeMap<String, Empty>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub working_dir: String,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub labels: BTreeMap<String, String>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub stop_signal: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<Healthcheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<Vec<String>>,
    /// ONBUILD triggers, as written after `ONBUILD`.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty",
        rename = "OnBuild"
    )]
    pub on_build: Vec<String>,
    /// Set by every CMD, as BuildKit does. Only Windows reads it (the
    /// command line is already escaped); it is kept so kiln's configs match
    /// BuildKit's.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "is_false"
    )]
    pub args_escaped: bool,
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// The `{}` values of ExposedPorts and Volumes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

/// Docker's health check settings; durations in nanoseconds, 0 = default.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Healthcheck {
    /// `["NONE"]`, `["CMD", args...]` or `["CMD-SHELL", command]`.
    #[serde(default, deserialize_with = "nullable")]
    pub test: Vec<String>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "is_zero"
    )]
    pub interval: u64,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "is_zero"
    )]
    pub timeout: u64,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "is_zero"
    )]
    pub start_period: u64,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "is_zero"
    )]
    pub start_interval: u64,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "is_zero"
    )]
    pub retries: u64,
}

/// Docker writes absent fields as `null` (`"OnBuild": null`, `"Labels":
/// null`): every nullable field of the image spec reads null as absent.
fn nullable<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The shell RUN, CMD and ENTRYPOINT use in shell form when SHELL is unset.
pub const DEFAULT_SHELL: [&str; 2] = ["/bin/sh", "-c"];

impl ImageConfig {
    /// The value of environment variable `key`, if set.
    pub fn env_value(&self, key: &str) -> Option<&str> {
        self.env.iter().rev().find_map(|entry| {
            let (k, v) = entry.split_once('=').unwrap_or((entry, ""));
            (k == key).then_some(v)
        })
    }

    /// Sets `key` in place if present (Docker keeps the first position),
    /// appends it otherwise.
    pub fn set_env(&mut self, key: &str, value: &str) {
        let entry = format!("{key}={value}");
        match self
            .env
            .iter_mut()
            .find(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == key)
        {
            Some(existing) => *existing = entry,
            None => self.env.push(entry),
        }
    }

    /// `(key, value)` pairs of the environment.
    pub fn env_pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.env
            .iter()
            .map(|entry| entry.split_once('=').unwrap_or((entry, "")))
    }

    /// The shell for shell-form commands: SHELL if set, else `/bin/sh -c`.
    pub fn shell_or_default(&self) -> Vec<String> {
        self.shell
            .clone()
            .unwrap_or_else(|| DEFAULT_SHELL.iter().map(|s| s.to_string()).collect())
    }

    /// The working directory, `/` when unset.
    pub fn working_dir_or_root(&self) -> &str {
        if self.working_dir.is_empty() {
            "/"
        } else {
            &self.working_dir
        }
    }
}

/// One entry of the image history, as Docker and BuildKit write it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    pub created_by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// True for steps that change only the config, not the filesystem.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty_layer: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_is_updated_in_place() {
        let mut config = ImageConfig::default();
        config.set_env("A", "1");
        config.set_env("B", "2");
        config.set_env("A", "3=x");
        assert_eq!(config.env, ["A=3=x", "B=2"]);
        assert_eq!(config.env_value("A"), Some("3=x"));
        assert_eq!(config.env_value("C"), None);
    }

    #[test]
    fn serialises_with_docker_field_names() {
        let mut config = ImageConfig::default();
        config.set_env("PATH", "/bin");
        config.exposed_ports.insert("80/tcp".into(), Empty {});
        config.on_build.push("RUN true".into());
        let json = serde_json::to_string(&config).unwrap();
        assert_eq!(
            json,
            r#"{"ExposedPorts":{"80/tcp":{}},"Env":["PATH=/bin"],"OnBuild":["RUN true"]}"#
        );
        let back: ImageConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, config);
    }

    #[test]
    fn null_fields_read_as_absent() {
        // What `docker save` writes for an image built by Docker.
        let json = r#"{"User":"app","Env":["PATH=/bin"],"Cmd":["sh"],"Entrypoint":null,
            "WorkingDir":"/app","OnBuild":null,"Labels":null,"Volumes":null,
            "ExposedPorts":null,"StopSignal":null,"Shell":null,
            "Healthcheck":{"Test":null,"Interval":null}}"#;
        let config: ImageConfig = serde_json::from_str(json).unwrap();
        assert_eq!(config.user, "app");
        assert_eq!(config.env, ["PATH=/bin"]);
        assert_eq!(config.cmd, Some(vec!["sh".to_owned()]));
        assert_eq!(config.entrypoint, None);
        assert_eq!(config.working_dir, "/app");
        assert!(config.on_build.is_empty() && config.labels.is_empty());
        assert_eq!(config.healthcheck, Some(Healthcheck::default()));
    }
}
