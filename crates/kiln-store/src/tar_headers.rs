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
