//! The images of the store as Docker's image commands see them: listed
//! one row per name plus one per untagged image (`<none>`), removed by
//! name or id (`rmi`), and untagged ones pruned (`image prune`).

use kiln_store::{Digest, GcReport, Reference, Store, Tag};

use crate::error::EngineError;
use crate::session::Engine;

/// One row of `kiln images`: a name and its image, or an untagged image.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageSummary {
    /// The manifest digest (the image id).
    pub id: Digest,
    /// The name as written (`None`: untagged).
    pub name: Option<String>,
    /// The config's `created` (RFC 3339), if it has one.
    pub created: Option<String>,
    /// Config plus layers, as stored.
    pub size: u64,
}

impl ImageSummary {
    /// The repository and tag Docker shows for it (`<none>` for what is
    /// absent).
    pub fn repository_and_tag(&self) -> (String, String) {
        match &self.name {
            Some(name) => repository_and_tag(name),
            None => ("<none>".to_owned(), "<none>".to_owned()),
        }
    }
}

/// What `images --filter` (and the Engine API's `filters`) accept, parsed
/// once: `dangling=true|false`, `reference=PATTERN` (a glob, `/` not
/// matched by `*`; the repository or `repository:tag` matches, as
/// docker's).
pub enum ImageFilter {
    Dangling(bool),
    Reference(globset::GlobMatcher),
}

impl ImageFilter {
    pub fn parse(key: &str, value: &str) -> Result<ImageFilter, EngineError> {
        let bad = || {
            EngineError::Request(format!(
                "filter {key}={value}: expected dangling=true|false or reference=PATTERN"
            ))
        };
        match key {
            "dangling" => match value {
                "true" | "1" => Ok(ImageFilter::Dangling(true)),
                "false" | "0" => Ok(ImageFilter::Dangling(false)),
                _ => Err(bad()),
            },
            "reference" => Ok(ImageFilter::Reference(
                globset::GlobBuilder::new(value)
                    .literal_separator(true)
                    .build()
                    .map_err(|e| EngineError::Request(format!("filter reference={value}: {e}")))?
                    .compile_matcher(),
            )),
            _ => Err(bad()),
        }
    }

    pub fn matches(&self, image: &ImageSummary) -> bool {
        match self {
            ImageFilter::Dangling(dangling) => image.name.is_none() == *dangling,
            ImageFilter::Reference(glob) => {
                let (repository, tag) = image.repository_and_tag();
                image.name.is_some()
                    && (glob.is_match(&repository) || glob.is_match(format!("{repository}:{tag}")))
            }
        }
    }
}

/// A name as docker shows it, split: `busybox` is `busybox` and
/// `latest`; a name pinned by digest alone has tag `<none>`.
pub fn repository_and_tag(name: &str) -> (String, String) {
    let none = || "<none>".to_owned();
    match Reference::parse(name) {
        Ok(reference) => {
            let unpinned = name.split_once('@').map_or(name, |(n, _)| n);
            match (reference.tag, reference.digest) {
                (Some(tag), _) => {
                    let repository = unpinned.strip_suffix(&format!(":{tag}"));
                    (repository.unwrap_or(unpinned).to_owned(), tag)
                }
                (None, Some(_)) => (unpinned.to_owned(), none()),
                (None, None) => (unpinned.to_owned(), "latest".to_owned()),
            }
        }
        Err(_) => (name.to_owned(), none()),
    }
}

/// What removing one name or id did.
#[derive(Clone, Debug, PartialEq)]
pub enum Removed {
    /// The name is gone (the image stays while another name or a
    /// container keeps it).
    Untagged { name: String, id: Digest },
    /// The untagged image is gone.
    Deleted { id: Digest },
}

impl Engine {
    /// Every name with its image, then every untagged image, in the
    /// order they were made.
    pub fn images(&self) -> Result<Vec<ImageSummary>, EngineError> {
        let store = self.store();
        let mut rows = Vec::new();
        for tag in store.tags()? {
            let id = Digest::of_descriptor(&tag.manifest)?;
            rows.push(summary(store, id, Some(tag.name)));
        }
        for manifest in store.untagged()? {
            rows.push(summary(store, Digest::of_descriptor(&manifest)?, None));
        }
        Ok(rows)
    }

    /// Removes `reference`: a name loses its tag; an id (or digest) of
    /// an untagged image removes it, of an image with one name removes
    /// the name, of an image with several names only with `force` (all
    /// of them go), as `docker rmi`. Data goes at the next GC.
    pub fn remove_image(&self, reference: &str, force: bool) -> Result<Vec<Removed>, EngineError> {
        let store = self.store();
        let tags = store.tags()?;
        let by_name = Reference::parse(reference)
            .ok()
            .map(|r| r.normalized())
            .and_then(|wanted| {
                tags.iter()
                    .find(|t| Reference::parse(&t.name).is_ok_and(|r| r.normalized() == wanted))
            });
        if let Some(tag) = by_name {
            let removed = store.untag(&tag.name)?;
            return Ok(vec![Removed::Untagged {
                name: tag.name.clone(),
                id: Digest::of_descriptor(&removed)?,
            }]);
        }
        let id = Digest::of_descriptor(&store.resolve(reference)?)?;
        let names: Vec<&Tag> = tags
            .iter()
            .filter(|t| t.manifest.digest().to_string() == id.to_string())
            .collect();
        if names.is_empty() {
            store.remove_untagged(&id)?;
            return Ok(vec![Removed::Deleted { id }]);
        }
        if names.len() > 1 && !force {
            let listed: Vec<&str> = names.iter().map(|t| t.name.as_str()).collect();
            return Err(EngineError::Request(format!(
                "image {} has several names ({}): remove them by name, or use -f to remove them all",
                &id.hex()[..12],
                listed.join(", ")
            )));
        }
        let mut removed = Vec::new();
        for tag in names {
            store.untag(&tag.name)?;
            removed.push(Removed::Untagged {
                name: tag.name.clone(),
                id,
            });
        }
        Ok(removed)
    }

    /// Removes every untagged image (`docker image prune`) or, with
    /// `all`, every image no container uses, names and all (`-a`); then
    /// collects. Returns the images removed and what GC did.
    pub fn prune_images(&self, all: bool) -> Result<(Vec<Digest>, GcReport), EngineError> {
        let store = self.store();
        let mut removed = Vec::new();
        for manifest in store.untagged()? {
            let id = Digest::of_descriptor(&manifest)?;
            if store.remove_untagged(&id)? {
                removed.push(id);
            }
        }
        if all {
            let used: std::collections::BTreeSet<String> = self
                .containers()
                .list()
                .into_iter()
                .map(|c| c.config.image_id)
                .collect();
            for tag in store.tags()? {
                let id = Digest::of_descriptor(&tag.manifest)?;
                if used.contains(&id.to_string()) {
                    continue;
                }
                store.untag(&tag.name)?;
                if !removed.contains(&id) {
                    removed.push(id);
                }
            }
        }
        Ok((removed, self.gc()?))
    }
}

/// An image's size as docker shows it: its config and layers as stored,
/// from its manifest document.
pub fn manifest_size(manifest: &serde_json::Value) -> u64 {
    manifest["config"]["size"].as_u64().unwrap_or(0)
        + manifest["layers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|layer| layer["size"].as_u64())
            .sum::<u64>()
}

fn summary(store: &Store, id: Digest, name: Option<String>) -> ImageSummary {
    // The documents alone (no layer is opened); a damaged image is still
    // listed, `kiln check` says what is wrong with it.
    let read = |digest: &Digest| -> Option<serde_json::Value> {
        serde_json::from_slice(&store.blobs().read(digest).ok()?).ok()
    };
    let manifest = read(&id).unwrap_or_default();
    let size = manifest_size(&manifest);
    let created = manifest["config"]["digest"]
        .as_str()
        .and_then(|d| d.parse::<Digest>().ok())
        .and_then(|config| read(&config))
        .and_then(|config| config["created"].as_str().map(str::to_owned));
    ImageSummary {
        id,
        name,
        created,
        size,
    }
}
