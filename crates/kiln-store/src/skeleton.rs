//! A layer's tar without its files' contents (its *skeleton*, tar-split's
//! idea): every header, extension block, padding and trailer byte as
//! written, and in place of each regular file's content the path where the
//! layer's snapshot holds it. With the snapshot it gives the tar back byte
//! for byte, so a layer kiln made and keeps as a snapshot needs no tar blob
//! beside it (`kiln/snapshots/<hex>/skeleton`).
//!
//! The recorder reads the tar as it is written and knows only the block
//! format (ustar, GNU long names, PAX path and size records, base-256
//! sizes). A tar it cannot give back exactly is marked so and never
//! dropped: a sparse or unknown entry type, a path that climbs out, a path
//! given twice (the snapshot keeps only the last). Giving back reads each
//! file beneath the snapshot's root without following any symlink, checks
//! its size, and the caller checks the whole stream's digest.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::path::Path;

use crate::error::StoreError;

const BLOCK: usize = 512;
/// The most verbatim bytes held before they are written out.
const RAW_PIECE: usize = 1 << 16;
const MAGIC: &[u8] = b"kiln-skeleton-1\n";

/// What the recorder expects next in the stream.
enum State {
    Header,
    /// An extension's data (long name, PAX records) or another entry's
    /// data: kept as it is.
    Data {
        left: u64,
        kind: u8,
        data: Vec<u8>,
        padding: u64,
    },
    /// A regular file's content: left out.
    Content {
        left: u64,
        padding: u64,
    },
    Padding {
        left: u64,
    },
    /// After the first zero block: kept as it is.
    Trailer,
}

/// Records a skeleton from the tar bytes written to it.
pub struct Recorder {
    state: State,
    block: Vec<u8>,
    /// Verbatim bytes not yet written out as a chunk.
    raw: Vec<u8>,
    /// The chunks, compressed as they come (a 30,000-file layer has 15 MB
    /// of headers, 201 kB compressed).
    chunks: zstd::stream::write::Encoder<'static, Vec<u8>>,
    /// A failed write to `chunks` (memory), reported by `finish`.
    broken: Option<io::Error>,
    long_name: Option<Vec<u8>>,
    pax_path: Option<Vec<u8>>,
    pax_size: Option<u64>,
    paths: HashSet<Vec<u8>>,
    exact: bool,
    /// Bytes of tar seen.
    total: u64,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            state: State::Header,
            block: Vec::with_capacity(BLOCK),
            raw: Vec::new(),
            chunks: zstd::stream::write::Encoder::new(Vec::new(), 3)
                .expect("zstd's default parameters are valid"),
            broken: None,
            long_name: None,
            pax_path: None,
            pax_size: None,
            paths: HashSet::new(),
            exact: true,
            total: 0,
        }
    }
}

fn padding_of(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

/// A numeric header field: octal text, or base-256 when the high bit is set.
fn number(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        let mut value: u64 = u64::from(field[0] & 0x7f);
        for &b in &field[1..] {
            value = value.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(value);
    }
    let text: Vec<u8> = field
        .iter()
        .copied()
        .filter(|b| *b != 0 && *b != b' ')
        .collect();
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(std::str::from_utf8(&text).ok()?, 8).ok()
}

fn until_nul(bytes: &[u8]) -> &[u8] {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    &bytes[..end]
}

/// `a/./b//c/` → `a/b/c`; `None` if it climbs out.
fn normalised(path: &[u8]) -> Option<Vec<u8>> {
    let mut parts = Vec::new();
    for part in path.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return None,
            _ => parts.push(part),
        }
    }
    Some(parts.join(&b'/'))
}

impl Recorder {
    /// Whether the layer can be given back from its snapshot.
    pub fn is_exact(&self) -> bool {
        self.exact && matches!(self.state, State::Trailer | State::Header)
    }

    /// The skeleton, compressed.
    pub fn finish(mut self) -> Result<Vec<u8>, StoreError> {
        let what = "a layer's skeleton";
        self.flush_raw();
        if let Some(error) = self.broken.take() {
            return Err(StoreError::io(what, error));
        }
        let compressed = self.chunks.finish().map_err(|e| StoreError::io(what, e))?;
        let mut out = MAGIC.to_vec();
        out.extend(self.total.to_le_bytes());
        out.extend(compressed);
        Ok(out)
    }

    fn chunk(&mut self, bytes: &[u8]) {
        if self.broken.is_none() {
            if let Err(error) = self.chunks.write_all(bytes) {
                self.broken = Some(error);
            }
        }
    }

    fn flush_raw(&mut self) {
        if self.raw.is_empty() {
            return;
        }
        let raw = std::mem::take(&mut self.raw);
        self.chunk(b"R");
        self.chunk(&(raw.len() as u64).to_le_bytes());
        self.chunk(&raw);
    }

    fn file_chunk(&mut self, path: &[u8], size: u64) {
        self.flush_raw();
        self.chunk(b"F");
        self.chunk(&size.to_le_bytes());
        self.chunk(&(path.len() as u32).to_le_bytes());
        self.chunk(path);
    }

    fn header(&mut self) {
        let block = std::mem::take(&mut self.block);
        self.raw.extend(&block);
        if block.iter().all(|&b| b == 0) {
            self.state = State::Trailer;
            return;
        }
        let kind = block[156];
        let Some(header_size) = number(&block[124..136]) else {
            self.exact = false;
            self.state = State::Trailer;
            return;
        };
        let extension = matches!(kind, b'L' | b'K' | b'x' | b'g');
        let size = if extension {
            header_size
        } else {
            self.pax_size.take().unwrap_or(header_size)
        };
        if extension {
            self.state = State::Data {
                left: size,
                kind,
                data: Vec::new(),
                padding: padding_of(size),
            };
            return;
        }
        let name = until_nul(&block[..100]).to_vec();
        let ustar_prefix = (&block[257..263] == b"ustar\0")
            .then(|| until_nul(&block[345..500]).to_vec())
            .filter(|p| !p.is_empty());
        let path = match (self.pax_path.take(), self.long_name.take(), ustar_prefix) {
            (Some(path), _, _) | (None, Some(path), _) => path,
            (None, None, Some(prefix)) => [prefix, b"/".to_vec(), name].concat(),
            (None, None, None) => name,
        };
        let path = match normalised(&path) {
            Some(path) => path,
            None => {
                self.exact = false;
                path
            }
        };
        if !self.paths.insert(path.clone()) {
            self.exact = false;
        }
        match kind {
            b'0' | 0 | b'7' if size > 0 => {
                self.file_chunk(&path, size);
                self.state = State::Content {
                    left: size,
                    padding: padding_of(size),
                };
            }
            b'0' | 0 | b'7' | b'1' | b'2' | b'3' | b'4' | b'5' | b'6' => {
                self.state = if size > 0 {
                    State::Data {
                        left: size,
                        kind,
                        data: Vec::new(),
                        padding: padding_of(size),
                    }
                } else {
                    State::Header
                };
            }
            _ => {
                // Sparse files and other kinds: their content is not
                // simply the snapshot's file.
                self.exact = false;
                self.state = State::Data {
                    left: size,
                    kind,
                    data: Vec::new(),
                    padding: padding_of(size),
                };
            }
        }
    }

    fn extension_done(&mut self, kind: u8, data: Vec<u8>) {
        match kind {
            b'L' => self.long_name = Some(until_nul(&data).to_vec()),
            b'x' => {
                for (key, value) in pax_records(&data) {
                    match key {
                        b"path" => self.pax_path = Some(value.to_vec()),
                        b"size" => {
                            self.pax_size =
                                std::str::from_utf8(value).ok().and_then(|v| v.parse().ok())
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }

    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            // Verbatim bytes go out in pieces: a run of a million
            // directories and links has no file between to flush them.
            if self.raw.len() >= RAW_PIECE {
                self.flush_raw();
            }
            match &mut self.state {
                State::Header => {
                    let take = (BLOCK - self.block.len()).min(bytes.len());
                    self.block.extend(&bytes[..take]);
                    bytes = &bytes[take..];
                    if self.block.len() == BLOCK {
                        self.header();
                    }
                }
                State::Data {
                    left,
                    kind,
                    data,
                    padding,
                } => {
                    let take = (*left).min(bytes.len() as u64) as usize;
                    self.raw.extend(&bytes[..take]);
                    if matches!(kind, b'L' | b'x') && data.len() < (1 << 20) {
                        data.extend(&bytes[..take]);
                    }
                    *left -= take as u64;
                    bytes = &bytes[take..];
                    if *left == 0 {
                        let (kind, data, padding) = (*kind, std::mem::take(data), *padding);
                        self.extension_done(kind, data);
                        self.state = State::Padding { left: padding };
                    }
                }
                State::Content { left, padding } => {
                    let take = (*left).min(bytes.len() as u64) as usize;
                    *left -= take as u64;
                    bytes = &bytes[take..];
                    if *left == 0 {
                        self.state = State::Padding { left: *padding };
                    }
                }
                State::Padding { left } => {
                    let take = (*left).min(bytes.len() as u64) as usize;
                    self.raw.extend(&bytes[..take]);
                    *left -= take as u64;
                    bytes = &bytes[take..];
                    if *left == 0 {
                        self.state = State::Header;
                    }
                }
                State::Trailer => {
                    self.raw.extend(bytes);
                    bytes = &[];
                }
            }
        }
    }
}

impl Write for Recorder {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.total += bytes.len() as u64;
        self.feed(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// PAX records (`LEN KEY=VALUE\n`), as far as they parse.
fn pax_records(data: &[u8]) -> Vec<(&[u8], &[u8])> {
    let mut records = Vec::new();
    let mut rest = data;
    while let Some(space) = rest.iter().position(|&b| b == b' ') {
        let Some(len) = std::str::from_utf8(&rest[..space])
            .ok()
            .and_then(|l| l.parse::<usize>().ok())
        else {
            break;
        };
        if len <= space + 1 || len > rest.len() {
            break;
        }
        let record = &rest[space + 1..len];
        let record = record.strip_suffix(b"\n").unwrap_or(record);
        if let Some(eq) = record.iter().position(|&b| b == b'=') {
            records.push((&record[..eq], &record[eq + 1..]));
        }
        rest = &rest[len..];
    }
    records
}

/// The size of the tar `skeleton` gives back.
pub fn tar_size(skeleton: &[u8]) -> Option<u64> {
    let size = skeleton.strip_prefix(MAGIC)?.get(..8)?;
    Some(u64::from_le_bytes(size.try_into().ok()?))
}

/// Writes the tar `skeleton` describes to `out`, each file's content read
/// beneath `tree` (the snapshot's root) without following a symlink.
/// Returns the bytes written.
pub fn give_back(skeleton: &[u8], tree: &Path, mut out: impl Write) -> Result<u64, StoreError> {
    replay(skeleton, tree, &mut out, Contents::Copied)
}

/// Checks that `tree` has every file `skeleton` names, as a regular file
/// of its size, without reading one: for a snapshot made from the very
/// bytes the skeleton was recorded from, whose contents are right by
/// construction, this is what could still differ. Returns the tar's
/// size.
pub fn check_files(skeleton: &[u8], tree: &Path) -> Result<u64, StoreError> {
    replay(skeleton, tree, &mut io::sink(), Contents::Sized)
}

/// What [`replay`] does with each file's content.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Contents {
    Copied,
    /// Only the file's kind and size are checked; the headers are
    /// still written.
    Sized,
}

fn replay(
    skeleton: &[u8],
    tree: &Path,
    out: &mut impl Write,
    contents: Contents,
) -> Result<u64, StoreError> {
    let what = || format!("the skeleton of {}", tree.display());
    let bad = |why: &str| StoreError::Unsupported(format!("{}: {why}", what()));
    let io_error = |e| StoreError::io(what(), e);
    let body = skeleton
        .strip_prefix(MAGIC)
        .and_then(|rest| rest.get(8..))
        .ok_or_else(|| bad("not a skeleton"))?;
    // Streamed: a layer of a million entries has half a gigabyte of
    // headers, which are never all in memory.
    let mut chunks = zstd::stream::read::Decoder::new(body).map_err(io_error)?;
    let root = File::open(tree).map_err(|e| StoreError::io(tree, e))?;
    let mut written = 0u64;
    let field = |chunks: &mut zstd::stream::read::Decoder<'_, _>, n: usize| {
        let mut bytes = vec![0u8; n];
        chunks
            .read_exact(&mut bytes)
            .map(|()| bytes)
            .map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => bad("truncated"),
                _ => io_error(e),
            })
    };
    let u64_of = |bytes: Vec<u8>| u64::from_le_bytes(bytes.try_into().unwrap_or([0; 8]));
    loop {
        let mut tag = [0u8; 1];
        match chunks.read(&mut tag) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_error(e)),
        }
        match tag[0] {
            b'R' => {
                let len = u64_of(field(&mut chunks, 8)?);
                let copied = io::copy(&mut (&mut chunks).take(len), out).map_err(io_error)?;
                if copied != len {
                    return Err(bad("truncated"));
                }
                written += len;
            }
            b'F' => {
                let size = u64_of(field(&mut chunks, 8)?);
                let len = u32::from_le_bytes(field(&mut chunks, 4)?.try_into().unwrap_or([0; 4]));
                if len > MAX_PATH_BYTES {
                    return Err(bad("a path too long"));
                }
                let path = field(&mut chunks, len as usize)?;
                written += match contents {
                    Contents::Copied => copy_content(&root, tree, &path, size, out)?,
                    Contents::Sized => {
                        open_content(&root, tree, &path, size)?;
                        size
                    }
                };
            }
            _ => return Err(bad("an unknown chunk")),
        }
    }
    Ok(written)
}

/// The longest path a skeleton names (PAX paths may exceed PATH_MAX).
const MAX_PATH_BYTES: u32 = 1 << 20;

/// Regular file `path` beneath `root`, of `size` bytes, opened without
/// following a symlink.
fn open_content(root: &File, tree: &Path, path: &[u8], size: u64) -> Result<File, StoreError> {
    use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
    use std::os::unix::ffi::OsStrExt;
    let rel = Path::new(std::ffi::OsStr::from_bytes(path));
    let host = tree.join(rel);
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
    let fd = openat2(root.as_fd(), rel, how).map_err(|e| StoreError::io(&host, e.into()))?;
    let file = File::from(fd);
    let meta = file.metadata().map_err(|e| StoreError::io(&host, e))?;
    if !meta.is_file() || meta.len() != size {
        return Err(StoreError::Unsupported(format!(
            "{}: not the {size}-byte file the layer holds",
            host.display()
        )));
    }
    Ok(file)
}

/// Copies exactly `size` bytes of regular file `path` beneath `root`.
fn copy_content(
    root: &File,
    tree: &Path,
    path: &[u8],
    size: u64,
    out: &mut impl Write,
) -> Result<u64, StoreError> {
    use std::os::unix::ffi::OsStrExt;
    let file = open_content(root, tree, path, size)?;
    let host = tree.join(Path::new(std::ffi::OsStr::from_bytes(path)));
    let copied = io::copy(&mut file.take(size), out).map_err(|e| StoreError::io(&host, e))?;
    if copied != size {
        return Err(StoreError::Unsupported(format!(
            "{}: shorter than the layer's file",
            host.display()
        )));
    }
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: tar::EntryType, size: u64, ustar: bool) -> tar::Header {
        let mut h = if ustar {
            tar::Header::new_ustar()
        } else {
            tar::Header::new_gnu()
        };
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h
    }

    /// A tar with every shape the recorder must follow.
    fn sample() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        b.append_data(
            &mut header(tar::EntryType::Directory, 0, false),
            "d/",
            io::empty(),
        )
        .unwrap();
        let content = b"hello\n".repeat(300);
        b.append_data(
            &mut header(tar::EntryType::Regular, content.len() as u64, false),
            "d/file",
            &content[..],
        )
        .unwrap();
        b.append_data(
            &mut header(tar::EntryType::Regular, 0, false),
            "d/empty",
            io::empty(),
        )
        .unwrap();
        let long = format!("d/{}", "n".repeat(150));
        b.append_data(
            &mut header(tar::EntryType::Regular, 3, false),
            &long,
            &b"abc"[..],
        )
        .unwrap();
        let deep = format!("{}/{}", "p".repeat(90), "q".repeat(60));
        b.append_data(
            &mut header(tar::EntryType::Directory, 0, true),
            format!("{}/", "p".repeat(90)),
            io::empty(),
        )
        .unwrap();
        b.append_data(
            &mut header(tar::EntryType::Regular, 4, true),
            &deep,
            &b"deep"[..],
        )
        .unwrap();
        b.append_pax_extensions([("SCHILY.xattr.user.k", &b"v"[..])])
            .unwrap();
        b.append_data(
            &mut header(tar::EntryType::Regular, 1, false),
            "d/xattr",
            &b"x"[..],
        )
        .unwrap();
        b.append_link(
            &mut header(tar::EntryType::Symlink, 0, false),
            "d/sym",
            "file",
        )
        .unwrap();
        b.append_link(
            &mut header(tar::EntryType::Link, 0, false),
            "d/hard",
            "d/file",
        )
        .unwrap();
        b.finish().unwrap();
        let mut bytes = b.into_inner().unwrap();
        // Writers may pad to a record size.
        bytes.extend([0u8; 4096]);
        bytes
    }

    fn record(tar: &[u8]) -> Recorder {
        let mut recorder = Recorder::default();
        // In odd pieces, as a writer would hand them over.
        for piece in tar.chunks(333) {
            recorder.write_all(piece).unwrap();
        }
        recorder
    }

    /// Records `tar_bytes`, unpacks them, and checks that the skeleton and
    /// the tree give the very bytes back; returns the skeleton.
    fn comes_back(tar_bytes: &[u8]) -> Vec<u8> {
        let recorder = record(tar_bytes);
        assert!(recorder.is_exact());
        let skeleton = recorder.finish().unwrap();
        let dir = tempfile::tempdir().unwrap();
        tar::Archive::new(tar_bytes).unpack(dir.path()).unwrap();
        let mut out = Vec::new();
        let written = give_back(&skeleton, dir.path(), &mut out).unwrap();
        assert_eq!(written, tar_bytes.len() as u64);
        assert!(out == tar_bytes, "the tar came back different");
        skeleton
    }

    #[test]
    fn a_tar_comes_back_byte_for_byte_from_its_tree() {
        let tar_bytes = sample();
        let skeleton = comes_back(&tar_bytes);
        assert!(skeleton.len() < tar_bytes.len() / 2, "{}", skeleton.len());
        assert_eq!(tar_size(&skeleton), Some(tar_bytes.len() as u64));
    }

    #[test]
    fn a_long_run_of_entries_without_content_comes_back_in_pieces() {
        // 3,000 directories: far more verbatim bytes than one piece holds.
        let mut b = tar::Builder::new(Vec::new());
        for n in 0..3000 {
            b.append_data(
                &mut header(tar::EntryType::Directory, 0, false),
                format!("d{n}/"),
                io::empty(),
            )
            .unwrap();
        }
        b.append_data(
            &mut header(tar::EntryType::Regular, 2, false),
            "d7/f",
            &b"ok"[..],
        )
        .unwrap();
        let tar_bytes = b.into_inner().unwrap();
        assert!(tar_bytes.len() > 10 * RAW_PIECE);
        comes_back(&tar_bytes);
    }

    #[test]
    fn a_changed_tree_or_a_link_in_it_is_refused() {
        let tar_bytes = sample();
        let skeleton = record(&tar_bytes).finish().unwrap();
        let dir = tempfile::tempdir().unwrap();
        tar::Archive::new(&tar_bytes[..])
            .unpack(dir.path())
            .unwrap();
        std::fs::write(dir.path().join("d/xattr"), "longer").unwrap();
        let error = give_back(&skeleton, dir.path(), io::sink()).unwrap_err();
        assert!(error.to_string().contains("d/xattr"), "{error}");
        // The same bytes behind a symlink are not read.
        std::fs::remove_file(dir.path().join("d/xattr")).unwrap();
        std::fs::write(dir.path().join("elsewhere"), "x").unwrap();
        std::os::unix::fs::symlink("../elsewhere", dir.path().join("d/xattr")).unwrap();
        assert!(give_back(&skeleton, dir.path(), io::sink()).is_err());
    }

    #[test]
    fn tars_the_tree_cannot_give_back_are_marked() {
        // A path given twice: the tree keeps only the second.
        let mut b = tar::Builder::new(Vec::new());
        for content in [&b"one"[..], &b"two"[..]] {
            b.append_data(&mut header(tar::EntryType::Regular, 3, false), "f", content)
                .unwrap();
        }
        let twice = b.into_inner().unwrap();
        assert!(!record(&twice).is_exact());
        // A path climbing out.
        let mut h = header(tar::EntryType::Regular, 1, false);
        h.as_old_mut().name[..5].copy_from_slice(b"../x\0");
        h.set_cksum();
        let mut climbing = h.as_bytes().to_vec();
        climbing.extend([b'x'; 1].iter().chain([0u8; 511].iter()));
        climbing.extend([0u8; 1024]);
        assert!(!record(&climbing).is_exact());
        // Cut short in a file's content.
        let whole = sample();
        assert!(!record(&whole[..1536]).is_exact());
    }
}
