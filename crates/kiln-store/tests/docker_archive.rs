//! docker-archives as `docker save` writes them: two images sharing a layer
//! (the second `layer.tar` is a link to the first), links that try to leave
//! the archive, and a load that fails part way (it tags nothing).

use kiln_store::{load, Store};
use sha2::{Digest as _, Sha256};

/// A layer tar holding one file.
fn layer_tar(name: &str) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let body = b"hello\n";
    let mut header = tar::Header::new_gnu();
    header.set_size(body.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    builder.append_data(&mut header, name, &body[..]).unwrap();
    builder.into_inner().unwrap()
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

fn config(diff_id: &str) -> Vec<u8> {
    format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{"Cmd":["sh"],"OnBuild":null}},"rootfs":{{"type":"layers","diff_ids":["{diff_id}"]}}}}"#
    )
    .into_bytes()
}

enum Entry<'a> {
    File(&'a str, &'a [u8]),
    Link(&'a str, &'a str),
}

fn archive(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        match entry {
            Entry::File(path, body) => {
                header.set_size(body.len() as u64);
                header.set_mode(0o644);
                header.set_cksum();
                builder.append_data(&mut header, path, *body).unwrap();
            }
            Entry::Link(path, target) => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                header.set_mode(0o777);
                builder.append_link(&mut header, path, target).unwrap();
            }
        }
    }
    builder.into_inner().unwrap()
}

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    (dir, store)
}

#[test]
fn a_shared_layer_linked_from_a_second_image_loads() {
    let (_dir, store) = store();
    let layer = layer_tar("greeting");
    let config = config(&sha256(&layer));
    let manifest = br#"[{"Config":"a.json","RepoTags":["a:1"],"Layers":["aaa/layer.tar"]},
        {"Config":"a.json","RepoTags":["b:1"],"Layers":["bbb/layer.tar"]}]"#;
    let bytes = archive(&[
        Entry::File("manifest.json", manifest),
        Entry::File("a.json", &config),
        Entry::File("aaa/layer.tar", &layer),
        Entry::Link("bbb/layer.tar", "../aaa/layer.tar"),
    ]);
    let names = load(&store, &bytes[..], "test archive").unwrap();
    assert_eq!(names, ["a:1", "b:1"]);
    assert_eq!(
        store.resolve("a:1").unwrap().digest(),
        store.resolve("b:1").unwrap().digest()
    );
}

#[test]
fn links_leaving_the_archive_are_not_followed() {
    let (dir, store) = store();
    // A file on the host that a link could name: it must never be read.
    let outside = dir.path().join("layer.tar");
    std::fs::write(&outside, layer_tar("host")).unwrap();
    for target in [outside.to_str().unwrap(), "../../../layer.tar"] {
        let config = config(&sha256(&layer_tar("host")));
        let manifest = br#"[{"Config":"a.json","RepoTags":["evil:1"],"Layers":["x/layer.tar"]}]"#;
        let bytes = archive(&[
            Entry::File("manifest.json", manifest),
            Entry::File("a.json", &config),
            Entry::Link("x/layer.tar", target),
        ]);
        let error = load(&store, &bytes[..], "test archive").unwrap_err();
        assert!(
            error.to_string().contains("x/layer.tar is missing"),
            "{error}"
        );
        assert!(store.resolve("evil:1").is_err());
    }
}

#[test]
fn a_load_that_fails_part_way_tags_nothing() {
    let (_dir, store) = store();
    let layer = layer_tar("greeting");
    let config = config(&sha256(&layer));
    // The first image is complete, the second names a layer that is not there.
    let manifest = br#"[{"Config":"a.json","RepoTags":["good:1"],"Layers":["aaa/layer.tar"]},
        {"Config":"a.json","RepoTags":["bad:1"],"Layers":["missing/layer.tar"]}]"#;
    let bytes = archive(&[
        Entry::File("manifest.json", manifest),
        Entry::File("a.json", &config),
        Entry::File("aaa/layer.tar", &layer),
    ]);
    assert!(load(&store, &bytes[..], "test archive").is_err());
    assert!(
        store.resolve("good:1").is_err(),
        "a failed load tagged an image"
    );
    assert!(store.resolve("bad:1").is_err());
}
