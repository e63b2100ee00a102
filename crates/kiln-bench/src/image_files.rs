//! An image's files, as the advice's check compares them: its layers
//! squashed (whiteouts applied) and each entry reduced to what a program
//! in the image can depend on: type, mode, owner, content, link target.
//! Modification times are left out (a step that runs again writes new
//! ones).

use std::collections::BTreeMap;
use std::io::{Read, Seek};

use sha2::{Digest as _, Sha256};

use crate::BenchError;

/// Path → description of each entry of the image `manifest` of `store`.
pub fn image_files(
    store: &kiln_store::Store,
    manifest: &kiln_store::Digest,
) -> Result<BTreeMap<String, String>, BenchError> {
    let mut squashed = tempfile::tempfile().map_err(|e| BenchError::io("a temp file", e))?;
    kiln_build::write_image_tar(store, manifest, &mut squashed)
        .map_err(|e| BenchError::Engine(e.into()))?;
    squashed
        .rewind()
        .map_err(|e| BenchError::io("a temp file", e))?;
    let io = |e| BenchError::io(format!("the files of image {manifest}"), e);
    let mut files = BTreeMap::new();
    let mut archive = tar::Archive::new(squashed);
    for entry in archive.entries().map_err(io)? {
        let mut entry = entry.map_err(io)?;
        let header = entry.header().clone();
        let path = entry.path().map_err(io)?.to_string_lossy().into_owned();
        let path = path
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_owned();
        let link = entry
            .link_name()
            .map_err(io)?
            .map(|l| l.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut hasher = Sha256::new();
        let mut buf = [0u8; 64 * 1024];
        loop {
            let n = entry.read(&mut buf).map_err(io)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        let description = format!(
            "{:?} {:o} {}:{} {:x} {link}",
            header.entry_type(),
            header.mode().map_err(io)?,
            header.uid().map_err(io)?,
            header.gid().map_err(io)?,
            hasher.finalize()
        );
        files.insert(path, description);
    }
    Ok(files)
}

/// The first `limit` differences between two images' files.
pub fn differences(
    a: &BTreeMap<String, String>,
    b: &BTreeMap<String, String>,
    limit: usize,
) -> Vec<String> {
    let mut found = Vec::new();
    for (path, described) in a {
        match b.get(path) {
            None => found.push(format!("/{path} is only in the original's image")),
            Some(other) if other != described => {
                found.push(format!("/{path} differs ({described} against {other})"))
            }
            Some(_) => {}
        }
    }
    for path in b.keys().filter(|p| !a.contains_key(*p)) {
        found.push(format!("/{path} is only in the suggested image"));
    }
    found.truncate(limit);
    found
}
