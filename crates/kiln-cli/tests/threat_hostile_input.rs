//! Threat: the Dockerfile, the context and the archives in it are
//! untrusted. Hostile input must end in one clear error naming what was
//! wrong (or a correct result), with bounded memory, a non-zero exit and
//! never a panic.

mod common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use common::{busybox_workspace, kiln, kiln_command, ok, run_measuring_memory, text};

/// A gzip file of a tar holding one file of `mib` MiB of zeros, made of
/// gzip members (a valid gzip stream: decoders read members one after the
/// other) so that the test makes it in no time: ~1 KiB per MiB.
fn gzip_bomb(path: &Path, mib: u64) {
    let member = |bytes: &[u8]| {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(bytes).unwrap();
        gz.finish().unwrap()
    };
    let mut header = tar::Header::new_ustar();
    header.set_path("zeros").unwrap();
    header.set_size(mib << 20);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    let mut out = fs::File::create(path).unwrap();
    out.write_all(&member(header.as_bytes())).unwrap();
    let mib_of_zeros = member(&vec![0u8; 1 << 20]);
    for _ in 0..mib {
        out.write_all(&mib_of_zeros).unwrap();
    }
    out.write_all(&member(&[0u8; 1024])).unwrap();
}

fn context(work: &Path, dockerfile: &str) -> PathBuf {
    let ctx = work.join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    ctx
}

/// ADD used to hold every archive entry in memory (a 2 MB bomb took
/// 2.1 GB). 256 MiB of zeros in one entry must not make kiln grow by
/// anything like that much.
#[test]
fn add_of_a_gzip_bomb_streams_with_bounded_memory() {
    const BOMB_MIB: u64 = 256;
    const LIMIT_KIB: u64 = 128 << 10;
    let ws = busybox_workspace();
    let ctx = context(&ws.work, "FROM busybox\nADD bomb.tar.gz /x/\n");
    gzip_bomb(&ctx.join("bomb.tar.gz"), BOMB_MIB);
    assert!(fs::metadata(ctx.join("bomb.tar.gz")).unwrap().len() < 1 << 20);
    let cmd = kiln_command(&ws.root, &["build", "-t", "bomb", ctx.to_str().unwrap()]);
    let (out, peak_kib) = run_measuring_memory(cmd);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        peak_kib < LIMIT_KIB,
        "peak RSS {peak_kib} KiB for a {BOMB_MIB} MiB entry"
    );
    // And the file is all there, in the last layer.
    let inspect: serde_json::Value =
        serde_json::from_str(&ok(kiln(&ws.root, &["inspect", "bomb"]))).unwrap();
    let layers = inspect["Manifest"]["layers"].as_array().unwrap();
    let size = layers.last().unwrap()["size"].as_u64().unwrap();
    assert!(size > BOMB_MIB << 20, "layer of {size} bytes");
}
