//! Importing layers: compression detected by content, entries checked, and
//! hostile archives refused without writing anything.

use std::io::Write;

use kiln_store::{import_layer, write_image, Digest, Store, StoreError};

/// A tar entry written byte by byte, so tests can build archives that the
/// tar crate itself would refuse to write (`..`, links out of the tree).
fn raw_entry(out: &mut Vec<u8>, name: &str, kind: u8, link: &str, body: &[u8]) {
    let mut header = tar::Header::new_ustar();
    {
        let old = header.as_old_mut();
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    header.set_mode(0o644);
    header.set_size(body.len() as u64);
    header.set_entry_type(tar::EntryType::new(kind));
    header.set_mtime(0);
    header.set_cksum();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(body);
    let pad = (512 - body.len() % 512) % 512;
    out.extend(std::iter::repeat_n(0u8, pad));
}

fn finish(mut out: Vec<u8>) -> Vec<u8> {
    out.extend([0u8; 1024]);
    out
}

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    (dir, store)
}

fn blob_count(store: &Store) -> usize {
    store.blobs().list().unwrap().0.len()
}

#[test]
fn plain_and_gzip_archives_give_the_same_layer() {
    let (_dir, store) = store();
    let mut tar = Vec::new();
    raw_entry(&mut tar, "./etc/", b'5', "", b"");
    raw_entry(&mut tar, "./etc/hostname", b'0', "", b"kiln\n");
    raw_entry(&mut tar, "./bin/sh", b'2', "busybox", b"");
    raw_entry(&mut tar, "./bin/link", b'1', "./etc/hostname", b"");
    let tar = finish(tar);
    let plain = import_layer(store.blobs(), &tar[..], "plain.tar").unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    let gzipped = import_layer(store.blobs(), &gz.finish().unwrap()[..], "rootfs.tar.gz").unwrap();
    assert_eq!(plain, gzipped);
    assert_eq!(plain.entries, 4);
    // The stored layer is a tar with the paths made relative.
    let stored = store.blobs().read(&plain.digest).unwrap();
    let mut archive = tar::Archive::new(&stored[..]);
    let names: Vec<String> = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert_eq!(names, ["etc", "etc/hostname", "bin/sh", "bin/link"]);
}

#[test]
fn hostile_archives_are_refused_and_leave_nothing() {
    let cases: [(&str, u8, &str, &str); 4] = [
        ("../escape", b'0', "", "leaves the root"),
        ("a/../../escape", b'0', "", "leaves the root"),
        ("link", b'1', "../../etc/passwd", "outside the root"),
        ("link", b'1', "a/../../etc/shadow", "outside the root"),
    ];
    for (name, kind, link, why) in cases {
        let (_dir, store) = store();
        let mut tar = Vec::new();
        raw_entry(&mut tar, "ok.txt", b'0', "", b"fine");
        raw_entry(&mut tar, name, kind, link, b"");
        let err = import_layer(store.blobs(), &finish(tar)[..], "evil.tar").unwrap_err();
        assert!(
            matches!(err, StoreError::HostileArchive { .. }),
            "{name}: {err}"
        );
        let message = err.to_string();
        assert!(
            message.contains("evil.tar") && message.contains(why),
            "{message}"
        );
        assert_eq!(
            blob_count(&store),
            0,
            "{name}: a refused layer must not be stored"
        );
        assert!(
            store.blobs().list().unwrap().1.is_empty(),
            "temp file left behind"
        );
    }
}

#[test]
fn truncated_and_corrupt_archives_are_errors() {
    let (_dir, store) = store();
    let mut tar = Vec::new();
    raw_entry(&mut tar, "big", b'0', "", &[7u8; 4096]);
    let err = import_layer(store.blobs(), &tar[..2000], "cut.tar").unwrap_err();
    assert!(err.to_string().contains("cut.tar"), "{err}");
    // A zstd frame header followed by garbage.
    let err = import_layer(store.blobs(), &b"\x28\xb5\x2f\xfdjunk"[..], "x.tar.zst").unwrap_err();
    assert!(err.to_string().contains("x.tar.zst"), "{err}");
    assert_eq!(blob_count(&store), 0);
}

#[test]
fn images_written_twice_have_the_same_digest() {
    let (_a_dir, a) = store();
    let (_b_dir, b) = store();
    let mut tar = Vec::new();
    raw_entry(&mut tar, "hello", b'0', "", b"hi");
    let tar = finish(tar);
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let record = |store: &Store| {
        let layer = import_layer(store.blobs(), &tar[..], "t.tar").unwrap();
        write_image(store, config, &[layer]).unwrap()
    };
    let (first, second) = (record(&a), record(&b));
    assert_eq!(first.manifest.digest(), second.manifest.digest());
    assert_eq!(first.config, Digest::of(config));
    // A layer that is not in the store cannot be referenced.
    let missing = kiln_store::Layer {
        digest: Digest::of(b"nope"),
        size: 4,
        entries: 1,
    };
    assert!(matches!(
        write_image(&a, config, &[missing]),
        Err(StoreError::MissingBlob(_))
    ));
}
