//! A docker-archive (what `docker save` and `kiln save --format docker`
//! write) read into the two things the differential suite compares: the
//! final filesystem, flattened from the layers in order with OCI whiteouts
//! applied, and the image config with its history. Both builders' archives
//! go through this same code, so a difference it reports is a difference in
//! the images, not in how each was read.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::Read;

use serde_json::Value;
use sha2::{Digest, Sha256};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink(String),
    Char(u32, u32),
    Block(u32, u32),
    Fifo,
}

impl Kind {
    fn name(&self) -> String {
        match self {
            Kind::File => "file".into(),
            Kind::Dir => "dir".into(),
            Kind::Symlink(target) => format!("symlink -> {target}"),
            Kind::Char(ma, mi) => format!("char {ma}:{mi}"),
            Kind::Block(ma, mi) => format!("block {ma}:{mi}"),
            Kind::Fifo => "fifo".into(),
        }
    }
}

/// One path of the flattened filesystem. Modification times are left out
/// on purpose: they record when each builder ran.
#[derive(Clone, Debug)]
pub struct Entry {
    pub kind: Kind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    pub digest: Option<String>,
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// Paths sharing this entry's inode (hard links), filled in after
    /// flattening; which of them a tar names first is the writer's choice.
    pub links: Vec<String>,
    inode: u64,
}

impl Entry {
    pub fn describe(&self) -> String {
        let mut out = format!(
            "{} {:04o} {}:{}",
            self.kind.name(),
            self.mode,
            self.uid,
            self.gid
        );
        if self.kind == Kind::File {
            out.push_str(&format!(" size={}", self.size));
        }
        out
    }

    /// One line of an expected listing (`expected.txt` of a case BuildKit
    /// 20.10 cannot build): everything compared but xattrs.
    pub fn listing(&self, path: &str) -> String {
        let mut out = format!("{path} {}", self.describe());
        if let Some(digest) = &self.digest {
            out.push_str(&format!(" {digest}"));
        }
        if !self.links.is_empty() {
            out.push_str(&format!(" links={}", self.links.join(",")));
        }
        out
    }

    /// The attributes that differ between two entries at the same path.
    pub fn differences(&self, other: &Entry) -> Vec<String> {
        let mut out = Vec::new();
        let mut field = |name: &str, a: String, b: String| {
            if a != b {
                out.push(format!("{name} {a} (kiln) vs {b} (buildkit)"));
            }
        };
        field("type", self.kind.name(), other.kind.name());
        field(
            "mode",
            format!("{:04o}", self.mode),
            format!("{:04o}", other.mode),
        );
        field(
            "owner",
            format!("{}:{}", self.uid, self.gid),
            format!("{}:{}", other.uid, other.gid),
        );
        field("size", self.size.to_string(), other.size.to_string());
        field(
            "content",
            self.digest.clone().unwrap_or_default(),
            other.digest.clone().unwrap_or_default(),
        );
        field(
            "xattrs",
            format!("{:?}", self.xattrs),
            format!("{:?}", other.xattrs),
        );
        field(
            "hard links",
            format!("{:?}", self.links),
            format!("{:?}", other.links),
        );
        out
    }
}

pub struct Image {
    pub files: BTreeMap<String, Entry>,
    pub config: Value,
}

/// Reads a docker-archive: `manifest.json` names the config and the layer
/// tars in order (plain or gzip, as either side may write them).
pub fn read_docker_archive(bytes: &[u8]) -> Result<Image, String> {
    let mut members: HashMap<String, Vec<u8>> = HashMap::new();
    // `docker save` writes a layer that two images share once and makes
    // the other `layer.tar` a symlink to it (`../<id>/layer.tar`).
    let mut links: HashMap<String, String> = HashMap::new();
    let mut archive = tar::Archive::new(bytes);
    for entry in archive.entries().map_err(|e| e.to_string())? {
        let mut entry = entry.map_err(|e| e.to_string())?;
        let name = entry
            .path()
            .map_err(|e| e.to_string())?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_owned();
        if entry.header().entry_type() == tar::EntryType::Symlink {
            if let Some(target) = entry.link_name().map_err(|e| e.to_string())? {
                let member = format!("/{name}");
                let (dir, _) = parent_and_name(&member);
                let resolved = normalise_dots(&format!("{dir}/{}", target.to_string_lossy()));
                links.insert(name, resolved);
            }
            continue;
        }
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let mut data = Vec::new();
        entry.read_to_end(&mut data).map_err(|e| e.to_string())?;
        members.insert(name, data);
    }
    let manifest: Value = serde_json::from_slice(
        members
            .get("manifest.json")
            .ok_or("no manifest.json in the archive")?,
    )
    .map_err(|e| format!("manifest.json: {e}"))?;
    let image = &manifest[0];
    let config_name = image["Config"].as_str().ok_or("manifest without Config")?;
    let config: Value = serde_json::from_slice(
        members
            .get(config_name)
            .ok_or_else(|| format!("config {config_name} missing"))?,
    )
    .map_err(|e| format!("{config_name}: {e}"))?;
    let mut fs = Flattener::default();
    for layer in image["Layers"]
        .as_array()
        .ok_or("manifest without Layers")?
    {
        let name = layer.as_str().ok_or("layer name is not a string")?;
        let data = members
            .get(name)
            .or_else(|| links.get(name).and_then(|target| members.get(target)))
            .ok_or_else(|| format!("layer {name} missing"))?;
        fs.apply(&decompress(data)?)
            .map_err(|e| format!("layer {name}: {e}"))?;
    }
    Ok(Image {
        files: fs.finish(),
        config,
    })
}

fn decompress(data: &[u8]) -> Result<Vec<u8>, String> {
    if data.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(data)
            .read_to_end(&mut out)
            .map_err(|e| e.to_string())?;
        Ok(out)
    } else if data.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        zstd::decode_all(data).map_err(|e| e.to_string())
    } else {
        Ok(data.to_vec())
    }
}

/// `/a/b` for `./a/b/`, `a/b`, `/a/b`; `/` for the root.
fn normalise(raw: &str) -> String {
    let parts: Vec<&str> = raw
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    format!("/{}", parts.join("/"))
}

/// `a/b/../c` to `a/c`, without the leading `/` (archive member names).
fn normalise_dots(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

fn parent_and_name(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(0) => ("/", &path[1..]),
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("/", path),
    }
}

fn under(path: &str, dir: &str) -> bool {
    if dir == "/" {
        path != "/"
    } else {
        path.len() > dir.len() && path.starts_with(dir) && path.as_bytes()[dir.len()] == b'/'
    }
}

#[derive(Default)]
struct Flattener {
    files: BTreeMap<String, Entry>,
    next_inode: u64,
}

impl Flattener {
    /// Applies one layer over what the earlier ones left. Whiteouts remove
    /// only what lower layers put there: a `.wh.` entry or an opaque marker
    /// written after a path of the same layer does not remove that path.
    fn apply(&mut self, layer: &[u8]) -> Result<(), String> {
        let mut this_layer: HashSet<String> = HashSet::new();
        let mut archive = tar::Archive::new(layer);
        for entry in archive.entries().map_err(|e| e.to_string())? {
            let mut entry = entry.map_err(|e| e.to_string())?;
            let raw = entry.path().map_err(|e| e.to_string())?;
            let path = normalise(&raw.to_string_lossy());
            let (parent, name) = parent_and_name(&path);
            let (parent, name) = (parent.to_owned(), name.to_owned());
            if name == ".wh..wh..opq" {
                let doomed: Vec<String> = self
                    .files
                    .keys()
                    .filter(|p| under(p, &parent) && !this_layer.contains(*p))
                    .cloned()
                    .collect();
                for p in doomed {
                    self.files.remove(&p);
                }
                continue;
            }
            if let Some(hidden) = name.strip_prefix(".wh.") {
                let target = normalise(&format!("{parent}/{hidden}"));
                let doomed: Vec<String> = self
                    .files
                    .keys()
                    .filter(|p| (**p == target || under(p, &target)) && !this_layer.contains(*p))
                    .cloned()
                    .collect();
                for p in doomed {
                    self.files.remove(&p);
                }
                continue;
            }
            let header = entry.header().clone();
            let mut xattrs = BTreeMap::new();
            if let Some(extensions) = entry.pax_extensions().map_err(|e| e.to_string())? {
                for ext in extensions {
                    let ext = ext.map_err(|e| e.to_string())?;
                    if let Some(key) = ext.key().ok().and_then(|k| k.strip_prefix("SCHILY.xattr."))
                    {
                        xattrs.insert(key.to_owned(), ext.value_bytes().to_vec());
                    }
                }
            }
            // Entry::link_name, not the header's: it reads GNU long link
            // names and PAX linkpath records.
            let link = entry
                .link_name()
                .map_err(|e| e.to_string())?
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            let kind = match header.entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => Kind::File,
                tar::EntryType::Directory => Kind::Dir,
                tar::EntryType::Symlink => Kind::Symlink(link.clone()),
                tar::EntryType::Char => Kind::Char(
                    header.device_major().ok().flatten().unwrap_or(0),
                    header.device_minor().ok().flatten().unwrap_or(0),
                ),
                tar::EntryType::Block => Kind::Block(
                    header.device_major().ok().flatten().unwrap_or(0),
                    header.device_minor().ok().flatten().unwrap_or(0),
                ),
                tar::EntryType::Fifo => Kind::Fifo,
                tar::EntryType::Link => {
                    let target = normalise(&link);
                    let linked = self
                        .files
                        .get(&target)
                        .cloned()
                        .ok_or_else(|| format!("{path}: hard link to missing {target}"))?;
                    self.replace(&path, linked);
                    this_layer.insert(path);
                    continue;
                }
                other => return Err(format!("{path}: unexpected entry type {other:?}")),
            };
            let mut digest = None;
            let mut size = 0;
            if kind == Kind::File {
                let mut data = Vec::new();
                entry.read_to_end(&mut data).map_err(|e| e.to_string())?;
                size = data.len() as u64;
                digest = Some(format!("sha256:{:x}", Sha256::digest(&data)));
            }
            self.next_inode += 1;
            let new = Entry {
                kind,
                mode: header.mode().map_err(|e| e.to_string())? & 0o7777,
                uid: header.uid().map_err(|e| e.to_string())?,
                gid: header.gid().map_err(|e| e.to_string())?,
                size,
                digest,
                xattrs,
                links: Vec::new(),
                inode: self.next_inode,
            };
            self.replace(&path, new);
            this_layer.insert(path);
        }
        Ok(())
    }

    /// A new entry at `path`: a directory over a directory changes its
    /// metadata only; anything else replaces what was there, with its
    /// children when that was a directory.
    fn replace(&mut self, path: &str, new: Entry) {
        let was_dir = self.files.get(path).is_some_and(|e| e.kind == Kind::Dir);
        if was_dir && new.kind != Kind::Dir {
            let doomed: Vec<String> = self
                .files
                .keys()
                .filter(|p| under(p, path))
                .cloned()
                .collect();
            for p in doomed {
                self.files.remove(&p);
            }
        }
        self.files.insert(path.to_owned(), new);
    }

    fn finish(mut self) -> BTreeMap<String, Entry> {
        let mut groups: HashMap<u64, BTreeSet<String>> = HashMap::new();
        for (path, entry) in &self.files {
            if entry.kind == Kind::File {
                groups.entry(entry.inode).or_default().insert(path.clone());
            }
        }
        for paths in groups.values().filter(|g| g.len() > 1) {
            for path in paths {
                if let Some(entry) = self.files.get_mut(path) {
                    entry.links = paths.iter().filter(|p| *p != path).cloned().collect();
                }
            }
        }
        self.files
    }
}
