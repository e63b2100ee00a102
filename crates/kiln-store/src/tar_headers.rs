//! A bound on what reading one tar entry's headers may consume. tar-rs
//! reads a GNU long name or link name and a PAX extended header whole into
//! memory before it yields the entry they describe, with no limit: a
//! 540 KB gzip holding one 512 MiB PAX header took 539 MB to import. Go's
//! archive/tar (Docker, containerd, BuildKit) refuses such "special files"
//! over 1 MiB; so does kiln.
//!
//! Use: wrap the stream with [`limit_headers`], build the `tar::Archive`
//! on the wrapped reader, and take entries with [`HeaderBudget::next`],
//! reading (or [`drain`]ing) each entry's data before asking for the next:
//! while `next` runs, tar-rs may read only headers, so any more than
//! [`MAX_TAR_HEADER_BYTES`] of them is an error.

use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The most a tar entry's headers (the 512-byte header blocks, long names,
/// PAX records, padding) may take: 1 MiB, Go's `maxSpecialFileSize`.
pub const MAX_TAR_HEADER_BYTES: u64 = 1 << 20;

const UNLIMITED: u64 = u64::MAX;

/// A reader that fails once the budget its [`HeaderBudget`] arms runs out.
pub struct HeaderLimited<R> {
    inner: R,
    left: Arc<AtomicU64>,
}

/// Arms the budget of a [`HeaderLimited`] reader around `Entries::next`.
pub struct HeaderBudget {
    left: Arc<AtomicU64>,
}

/// Wraps a tar stream so that [`HeaderBudget::next`] can bound its headers.
pub fn limit_headers<R: Read>(inner: R) -> (HeaderLimited<R>, HeaderBudget) {
    let left = Arc::new(AtomicU64::new(UNLIMITED));
    (
        HeaderLimited {
            inner,
            left: Arc::clone(&left),
        },
        HeaderBudget { left },
    )
}

impl<R: Read> Read for HeaderLimited<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.left.load(Ordering::Relaxed);
        if left == UNLIMITED {
            return self.inner.read(buf);
        }
        if left == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, HeadersTooLarge));
        }
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.left.store(left - n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// The error a [`HeaderLimited`] reader gives past its budget.
#[derive(Debug, thiserror::Error)]
#[error(
    "an entry's headers (long names, PAX records) take more than {MAX_TAR_HEADER_BYTES} bytes \
     (1 MiB), the most kiln reads"
)]
struct HeadersTooLarge;

/// Whether `error` is a [`HeaderLimited`] reader's refusal (so a caller
/// that takes a broken tar for "not a tar" can tell a hostile one apart).
pub fn is_too_large(error: &io::Error) -> bool {
    error
        .get_ref()
        .is_some_and(|inner| inner.is::<HeadersTooLarge>())
}

impl HeaderBudget {
    /// The next entry, its headers bounded.
    pub fn next<'a, R: Read>(
        &self,
        entries: &mut tar::Entries<'a, R>,
    ) -> Option<io::Result<tar::Entry<'a, R>>> {
        self.left.store(MAX_TAR_HEADER_BYTES, Ordering::Relaxed);
        let next = entries.next();
        self.left.store(UNLIMITED, Ordering::Relaxed);
        next
    }
}

/// A tar stream checked as it is read, for readers that do not take
/// entries through [`HeaderBudget::next`] (the unpacking of stored layers):
/// it follows the stream's entry boundaries as tar-rs does (sizes, PAX
/// `size` records, GNU sparse extension blocks) and fails once the headers
/// of one entry pass [`MAX_TAR_HEADER_BYTES`]. After the end-of-archive
/// block, or a block that is not a valid header (tar-rs refuses it too),
/// it stops checking.
pub struct CheckedTar<R> {
    inner: R,
    state: Scan,
    /// The header block being collected.
    block: Box<[u8; 512]>,
    filled: usize,
    /// Header bytes of the entry being described (headers, extension data).
    header_bytes: u64,
    /// A PAX `size` record for the next entry.
    pax_size: Option<u64>,
    /// The PAX record data being collected.
    pax: Vec<u8>,
}

enum Scan {
    Header,
    /// Data (and padding) to pass over; then `then`.
    Skip {
        left: u64,
        then: AfterSkip,
    },
    PaxData {
        left: u64,
        padding: u64,
    },
    SparseBlocks {
        data: u64,
    },
    Unchecked,
}

#[derive(Clone, Copy)]
enum AfterSkip {
    /// The entry is complete: the next header starts a new entry.
    NewEntry,
    /// An extension's data is done: its entry's header comes next.
    SameEntry,
}

impl<R: Read> CheckedTar<R> {
    pub fn new(inner: R) -> CheckedTar<R> {
        CheckedTar {
            inner,
            state: Scan::Header,
            block: Box::new([0; 512]),
            filled: 0,
            header_bytes: 0,
            pax_size: None,
            pax: Vec::new(),
        }
    }

    fn charge(&mut self, bytes: u64) -> io::Result<()> {
        self.header_bytes = self.header_bytes.saturating_add(bytes);
        if self.header_bytes > MAX_TAR_HEADER_BYTES {
            return Err(io::Error::new(io::ErrorKind::InvalidData, HeadersTooLarge));
        }
        Ok(())
    }

    /// Moves the scan over `bytes`, which were just read.
    fn scan(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            match &mut self.state {
                Scan::Unchecked => return Ok(()),
                Scan::Skip { left, then } => {
                    let n = (*left).min(bytes.len() as u64);
                    *left -= n;
                    bytes = &bytes[n as usize..];
                    if *left == 0 {
                        let then = *then;
                        self.state = self.next(0, then);
                    }
                }
                Scan::PaxData { left, padding } => {
                    let n = (*left).min(bytes.len() as u64) as usize;
                    *left -= n as u64;
                    let (done, padding) = (*left == 0, *padding);
                    self.pax.extend_from_slice(&bytes[..n]);
                    bytes = &bytes[n..];
                    if done {
                        self.pax_size = pax_size(&self.pax);
                        self.pax = Vec::new();
                        self.state = self.next(padding, AfterSkip::SameEntry);
                    }
                }
                Scan::Header | Scan::SparseBlocks { .. } => {
                    let n = (512 - self.filled).min(bytes.len());
                    self.block[self.filled..self.filled + n].copy_from_slice(&bytes[..n]);
                    self.filled += n;
                    bytes = &bytes[n..];
                    if self.filled == 512 {
                        self.filled = 0;
                        self.charge(512)?;
                        self.state = match self.state {
                            Scan::SparseBlocks { data } => self.after_sparse_block(data),
                            _ => self.after_header()?,
                        };
                    }
                }
            }
        }
        Ok(())
    }

    /// Passes over `left` bytes, then reads a header: of a new entry, or of
    /// the entry an extension describes.
    fn next(&mut self, left: u64, then: AfterSkip) -> Scan {
        if left > 0 {
            return Scan::Skip { left, then };
        }
        if let AfterSkip::NewEntry = then {
            self.header_bytes = 0;
        }
        Scan::Header
    }

    fn after_header(&mut self) -> io::Result<Scan> {
        let header = tar::Header::from_byte_slice(&self.block[..]);
        if self.block.iter().all(|&b| b == 0) || !checksum_ok(&self.block) {
            return Ok(Scan::Unchecked);
        }
        let Ok(mut size) = header.entry_size() else {
            return Ok(Scan::Unchecked);
        };
        let kind = header.entry_type();
        // What tar-rs treats as extensions of the next entry (kept in memory).
        let recognized = header.as_gnu().is_some() || header.as_ustar().is_some();
        let long_name = recognized && (kind.is_gnu_longname() || kind.is_gnu_longlink());
        let local_pax = recognized && kind.is_pax_local_extensions();
        let extension_type = kind.is_gnu_longname()
            || kind.is_gnu_longlink()
            || kind.is_pax_local_extensions()
            || kind.is_pax_global_extensions();
        if !(long_name || local_pax) {
            // This header is an entry to tar-rs, which uses a pending PAX
            // `size` record for it unless its type is an extension's.
            if let (Some(pax), false) = (self.pax_size.take(), extension_type) {
                size = pax;
            }
        }
        let padding = (512 - size % 512) % 512;
        let Some(data) = size.checked_add(padding) else {
            // tar-rs refuses the size too.
            return Ok(Scan::Unchecked);
        };
        if local_pax {
            self.charge(size)?;
            self.pax = Vec::with_capacity(size as usize);
            if size == 0 {
                return Ok(self.next(padding, AfterSkip::SameEntry));
            }
            return Ok(Scan::PaxData {
                left: size,
                padding,
            });
        }
        if long_name {
            self.charge(size)?;
            return Ok(self.next(data, AfterSkip::SameEntry));
        }
        if kind.is_gnu_sparse() && header.as_gnu().is_some_and(|gnu| gnu.is_extended()) {
            return Ok(Scan::SparseBlocks { data });
        }
        Ok(self.next(data, AfterSkip::NewEntry))
    }

    fn after_sparse_block(&mut self, data: u64) -> Scan {
        // `isextended` of a GNU sparse extension block, after its 21 records.
        if self.block[504] == 1 {
            return Scan::SparseBlocks { data };
        }
        self.next(data, AfterSkip::NewEntry)
    }
}

/// The `size` record of PAX data, read exactly as tar-rs reads it (the
/// first `size` record; none at all once a record does not parse), so the
/// scan stays in step with what tar-rs does.
fn pax_size(data: &[u8]) -> Option<u64> {
    for record in tar::PaxExtensions::new(data) {
        let record = record.ok()?;
        if record.key() != Ok("size") {
            continue;
        }
        return record.value().ok()?.parse().ok();
    }
    None
}

fn checksum_ok(block: &[u8; 512]) -> bool {
    let sum: u32 = block[..148]
        .iter()
        .chain(&block[156..])
        .map(|&b| u32::from(b))
        .sum::<u32>()
        + 8 * 32;
    tar::Header::from_byte_slice(&block[..])
        .cksum()
        .is_ok_and(|c| c == sum)
}

impl<R: Read> Read for CheckedTar<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.scan(&buf[..n])?;
        Ok(n)
    }
}

/// Reads the rest of an entry's data, so that the next header read does
/// not have to skip it.
pub fn drain(entry: &mut impl Read) -> io::Result<()> {
    io::copy(entry, &mut io::sink()).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive_with_pax_header(pax_bytes: usize) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let value = "a".repeat(pax_bytes);
        builder
            .append_pax_extensions([("comment", value.as_bytes())])
            .unwrap();
        let mut header = tar::Header::new_ustar();
        header.set_size(5);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, "file", &b"hello"[..])
            .unwrap();
        builder.into_inner().unwrap()
    }

    fn names(bytes: &[u8]) -> io::Result<Vec<String>> {
        let (reader, budget) = limit_headers(bytes);
        let mut archive = tar::Archive::new(reader);
        let mut entries = archive.entries()?;
        let mut names = Vec::new();
        while let Some(entry) = budget.next(&mut entries) {
            let mut entry = entry?;
            names.push(entry.path()?.display().to_string());
            drain(&mut entry)?;
        }
        Ok(names)
    }

    #[test]
    fn headers_over_1_mib_are_refused() {
        assert_eq!(names(&archive_with_pax_header(1000)).unwrap(), ["file"]);
        let error = names(&archive_with_pax_header(2 << 20)).unwrap_err();
        assert!(error.to_string().contains("1 MiB"), "{error}");
        assert!(is_too_large(&error));
    }

    /// Every entry's path and content, read by tar-rs through `CheckedTar`.
    fn read_checked(bytes: &[u8]) -> io::Result<Vec<(String, Vec<u8>)>> {
        let mut archive = tar::Archive::new(CheckedTar::new(bytes));
        let mut out = Vec::new();
        for entry in archive.entries()? {
            let mut entry = entry?;
            let path = entry.path()?.display().to_string();
            let mut data = Vec::new();
            entry.read_to_end(&mut data)?;
            out.push((path, data));
        }
        Ok(out)
    }

    #[test]
    fn checked_tar_refuses_huge_headers() {
        assert_eq!(
            read_checked(&archive_with_pax_header(1000)).unwrap().len(),
            1
        );
        let error = read_checked(&archive_with_pax_header(2 << 20)).unwrap_err();
        assert!(is_too_large(&error), "{error}");
    }

    #[test]
    fn checked_tar_follows_long_names_pax_sizes_and_big_entries() {
        let mut builder = tar::Builder::new(Vec::new());
        let long = format!("{}/file", "d".repeat(300));
        let mut header = tar::Header::new_gnu();
        header.set_size(3);
        header.set_mode(0o644);
        builder
            .append_data(&mut header, &long, &b"abc"[..])
            .unwrap();
        // A PAX size record, the ustar size field left at 0.
        builder
            .append_pax_extensions([("size", &b"700"[..]), ("path", b"sized")])
            .unwrap();
        let mut header = tar::Header::new_ustar();
        header.set_path("ignored").unwrap();
        header.set_size(0);
        header.set_mode(0o644);
        header.set_cksum();
        // (get_ref: into_inner would end the archive here.)
        let mut raw = builder.get_ref().clone();
        raw.extend_from_slice(header.as_bytes());
        raw.extend(std::iter::repeat_n(b'z', 700));
        raw.extend(std::iter::repeat_n(0u8, 1024 - 700));
        // Still in step after all that: a huge header further on is seen.
        let mut bomb_after = raw.clone();
        bomb_after.extend(archive_with_pax_header(2 << 20));
        assert!(is_too_large(&read_checked(&bomb_after).unwrap_err()));
        let mut builder = tar::Builder::new(raw);
        let mut header = tar::Header::new_ustar();
        header.set_size(3 << 20);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, "big", &vec![0u8; 3 << 20][..])
            .unwrap();
        let bytes = builder.into_inner().unwrap();
        let plain: Vec<(String, usize)> = {
            let mut archive = tar::Archive::new(&bytes[..]);
            archive
                .entries()
                .unwrap()
                .map(|e| {
                    let mut e = e.unwrap();
                    let mut data = Vec::new();
                    e.read_to_end(&mut data).unwrap();
                    (e.path().unwrap().display().to_string(), data.len())
                })
                .collect()
        };
        let checked: Vec<(String, usize)> = read_checked(&bytes)
            .unwrap()
            .into_iter()
            .map(|(p, d)| (p, d.len()))
            .collect();
        assert_eq!(checked, plain);
        assert_eq!(
            checked,
            [
                (long, 3),
                ("sized".to_owned(), 700),
                ("big".to_owned(), 3 << 20)
            ]
        );
    }

    #[test]
    fn absurd_sizes_do_not_panic() {
        let mut builder = tar::Builder::new(Vec::new());
        builder
            .append_pax_extensions([("size", format!("{}", u64::MAX).as_bytes())])
            .unwrap();
        let mut raw = builder.get_ref().clone();
        let mut header = tar::Header::new_ustar();
        header.set_path("huge").unwrap();
        header.set_size(0);
        header.set_mode(0o644);
        header.set_cksum();
        raw.extend_from_slice(header.as_bytes());
        raw.extend([0u8; 1024]);
        // tar-rs refuses these sizes itself; the scan must only not panic.
        assert!(read_checked(&raw).is_err());
        let mut long = tar::Header::new_gnu();
        long.set_entry_type(tar::EntryType::GNULongName);
        long.set_path("././@LongLink").unwrap();
        long.set_size(u64::MAX - 3);
        long.set_cksum();
        let mut raw = long.as_bytes().to_vec();
        raw.extend([0u8; 1024]);
        assert!(read_checked(&raw).is_err());
        // Huge but without overflow: refused by the bound, before tar-rs
        // starts to read it.
        long.set_size(u64::MAX - 511);
        long.set_cksum();
        let mut raw = long.as_bytes().to_vec();
        raw.extend([0u8; 1024]);
        assert!(is_too_large(&read_checked(&raw).unwrap_err()));
    }

    #[test]
    fn pax_sizes_are_read_as_tar_rs_reads_them() {
        assert_eq!(pax_size(b"12 size=700\n"), Some(700));
        assert_eq!(pax_size(b"12 size=700\n12 size=800\n"), Some(700));
        // tar-rs gives up at a record that does not parse.
        assert_eq!(pax_size(b"garbage\n12 size=700\n"), None);
        assert_eq!(pax_size(b"13 path=abcd\n"), None);
    }

    #[test]
    fn large_entries_pass() {
        let mut builder = tar::Builder::new(Vec::new());
        for name in ["big", "after"] {
            let mut header = tar::Header::new_ustar();
            header.set_size(3 << 20);
            header.set_mode(0o644);
            header.set_cksum();
            builder
                .append_data(&mut header, name, &vec![7u8; 3 << 20][..])
                .unwrap();
        }
        let bytes = builder.into_inner().unwrap();
        assert_eq!(names(&bytes).unwrap(), ["big", "after"]);
    }
}
