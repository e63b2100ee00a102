//! Named volumes, as Docker's `local` driver keeps them: a directory per
//! volume under the store's `kiln/volumes` (`NAME/_data` is what a
//! container mounts, `NAME/volume.json` its record), outliving the
//! containers that use them. `kiln run -v NAME:/path`, `--mount
//! type=volume`, the `volume` commands and, later, the daemon's
//! `/volumes` endpoints are thin over these.
//!
//! A name follows Docker's grammar ([`is_docker_name`]), so it is always
//! one path component inside `kiln/volumes`. A volume's files are what
//! its containers wrote: untrusted. kiln never reads them; removing them
//! never follows a link (`remove_dir_all` does not).
//!
//! Not yet: copying the image's files at the mount point into a new
//! volume (Docker's default, `volume-nocopy` to skip), drivers and
//! options.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kiln_runtime::containers::{is_docker_name, now, random_id};
use serde::{Deserialize, Serialize};

use crate::{Engine, EngineError};

/// A volume, as `volume inspect` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    pub name: String,
    /// Seconds since the epoch.
    pub created: u64,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Made for one container (`-v /path`), not by name.
    #[serde(default)]
    pub anonymous: bool,
    /// The directory containers mount (not in the record: the store may
    /// move).
    #[serde(skip)]
    pub mountpoint: PathBuf,
}

const RECORD: &str = "volume.json";
const DATA: &str = "_data";

impl Engine {
    /// Makes volume `name` (a random one when none: an anonymous volume),
    /// or returns it if it exists, as `docker volume create` does.
    pub fn create_volume(
        &self,
        name: Option<&str>,
        labels: &BTreeMap<String, String>,
    ) -> Result<Volume, EngineError> {
        let (name, anonymous) = match name {
            Some(name) => (checked(name)?.to_owned(), false),
            None => (random_id()?, true),
        };
        let dir = self.volumes_dir().join(&name);
        std::fs::create_dir_all(self.volumes_dir()).map_err(|e| io("create", &dir, e))?;
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return self.volume(&name);
            }
            Err(e) => return Err(io("create", &dir, e)),
        }
        let data = dir.join(DATA);
        std::fs::create_dir(&data).map_err(|e| io("create", &data, e))?;
        let volume = Volume {
            name,
            created: now(),
            labels: labels.clone(),
            anonymous,
            mountpoint: data,
        };
        let bytes = serde_json::to_vec_pretty(&volume)
            .map_err(|e| EngineError::Request(format!("encoding a volume record: {e}")))?;
        let record = dir.join(RECORD);
        let mut file = atomic_write_file::AtomicWriteFile::open(&record)
            .map_err(|e| io("create", &record, e))?;
        std::io::Write::write_all(&mut file, &bytes).map_err(|e| io("write", &record, e))?;
        file.commit().map_err(|e| io("write", &record, e))?;
        Ok(volume)
    }

    /// Volume `name`.
    pub fn volume(&self, name: &str) -> Result<Volume, EngineError> {
        let dir = self.volumes_dir().join(checked(name)?);
        let data = dir.join(DATA);
        if !data.is_dir() {
            return Err(EngineError::NotFound {
                what: "volume",
                name: name.to_owned(),
            });
        }
        // One being made by another kiln has no record yet: a volume all
        // the same.
        let mut volume = std::fs::read(dir.join(RECORD))
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Volume>(&bytes).ok())
            .unwrap_or(Volume {
                name: name.to_owned(),
                created: 0,
                labels: BTreeMap::new(),
                anonymous: false,
                mountpoint: PathBuf::new(),
            });
        volume.name = name.to_owned();
        volume.mountpoint = data;
        Ok(volume)
    }

    /// Every volume, by name.
    pub fn volumes(&self) -> Result<Vec<Volume>, EngineError> {
        let Ok(entries) = std::fs::read_dir(self.volumes_dir()) else {
            return Ok(Vec::new());
        };
        let mut names: Vec<String> = entries
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_owned))
            .filter(|n| is_docker_name(n))
            .collect();
        names.sort();
        Ok(names
            .iter()
            .filter_map(|name| self.volume(name).ok())
            .collect())
    }

    /// The containers (running or not) that mount volume `name`.
    pub fn volume_users(&self, name: &str) -> Vec<String> {
        self.containers()
            .list()
            .into_iter()
            .filter(|c| c.config.volumes.iter().any(|v| v == name))
            .map(|c| c.name)
            .collect()
    }

    /// Removes volume `name` and its files; refused while a container
    /// uses it (as Docker, even with `force`, which only lets a missing
    /// volume pass).
    pub fn remove_volume(&self, name: &str, force: bool) -> Result<(), EngineError> {
        let volume = match self.volume(name) {
            Ok(volume) => volume,
            Err(_) if force => return Ok(()),
            Err(error) => return Err(error),
        };
        let users = self.volume_users(name);
        if !users.is_empty() {
            return Err(EngineError::Conflict(format!(
                "volume {name} is in use by container {}: remove the container first",
                users.join(", ")
            )));
        }
        let dir = volume
            .mountpoint
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        std::fs::remove_dir_all(&dir).map_err(|e| io("remove", &dir, e))
    }

    /// Removes the volumes no container uses: the anonymous ones, or with
    /// `all` every one (as `docker volume prune [-a]`). Returns their
    /// names.
    pub fn prune_volumes(&self, all: bool) -> Result<Vec<String>, EngineError> {
        let mut removed = Vec::new();
        for volume in self.volumes()? {
            if (all || volume.anonymous) && self.volume_users(&volume.name).is_empty() {
                self.remove_volume(&volume.name, false)?;
                removed.push(volume.name);
            }
        }
        Ok(removed)
    }

    fn volumes_dir(&self) -> PathBuf {
        self.store().layout().volumes()
    }
}

fn checked(name: &str) -> Result<&str, EngineError> {
    if is_docker_name(name) {
        Ok(name)
    } else {
        Err(EngineError::Request(format!(
            "invalid volume name {name:?}: a name is a letter or digit then one or more of \
             [a-zA-Z0-9_.-] (Docker's rule)"
        )))
    }
}

fn io(what: &str, path: &Path, error: std::io::Error) -> EngineError {
    EngineError::Request(format!("{what} {}: {error}", path.display()))
}
