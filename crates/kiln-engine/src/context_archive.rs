//! A build context that arrives as a tar (the Engine API's `POST /build`,
//! as the docker CLI sends it, its `.dockerignore` already applied):
//! unpacked into a scratch directory of the store, and removed when the
//! build is done.
//!
//! The tar (plain or compressed) is untrusted. Only directories, regular files, symlinks and
//! hard links are taken (a device, fifo or socket in a context is an
//! error, as it is nothing a Dockerfile can COPY); no entry lands outside
//! the directory or is written through a link (the tar crate's
//! `unpack_in` checks every entry's parents); owners are not kept (COPY
//! gives root unless `--chown`); and the whole stream is limited, so a
//! client cannot fill the disk.
//!
//! The docker CLI, when it adds a Dockerfile from outside the context,
//! sends a tar that stops right after the last entry's data (no padding,
//! no end-of-archive blocks), which Docker's daemon takes. So the end is
//! supplied here, and then checked: an entry whose data runs past what
//! was sent is an error, never a file filled up with zeros.

use std::cell::Cell;
use std::io::Read;
use std::path::{Path, PathBuf};

use kiln_store::Store;

use crate::request::DockerfileSource;
use crate::EngineError;

/// What a context may weigh unless the front end says otherwise (the
/// tar stream as sent: headers and padding count).
pub const DEFAULT_CONTEXT_LIMIT: u64 = 8 << 30;

/// A context unpacked from a tar; its directory is removed on drop.
#[derive(Debug)]
pub struct UnpackedContext {
    dir: PathBuf,
}

impl UnpackedContext {
    /// Reads the tar `input` (at most `limit` bytes) into a new scratch
    /// directory of `store`.
    pub fn receive(
        store: &Store,
        input: &mut dyn Read,
        limit: u64,
    ) -> Result<UnpackedContext, EngineError> {
        let dir = store.scratch_dir("context")?;
        let context = UnpackedContext { dir };
        context.unpack(input, limit)?;
        Ok(context)
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn unpack(&self, input: &mut dyn Read, limit: u64) -> Result<(), EngineError> {
        // Compressed as docker's daemon takes it (gzip, bzip2, xz; zstd
        // too); the limit is on what comes out, which is what fills the
        // disk, so a small bomb is stopped as a big tar is.
        let mut plain = kiln_store::decompress(std::io::BufReader::new(input))
            .map_err(|e| bad_tar("decompress", e))?;
        let exceeded = Cell::new(false);
        let sent = Cell::new(None);
        let bounded = Terminated {
            inner: Limited {
                inner: &mut plain,
                left: limit,
                exceeded: &exceeded,
            },
            read: 0,
            sent: &sent,
        };
        // The tar crate wraps the reader's error in its own words, so
        // the overflow is told by the flag, not by the message.
        self.unpack_from(bounded, &sent).map_err(|error| {
            if exceeded.get() {
                EngineError::Request(format!(
                    "the build context is larger than {limit} bytes, the most it may be"
                ))
            } else {
                error
            }
        })
    }

    fn unpack_from(
        &self,
        bounded: Terminated<'_>,
        sent: &Cell<Option<u64>>,
    ) -> Result<(), EngineError> {
        let mut archive = tar::Archive::new(bounded);
        archive.set_preserve_permissions(true);
        archive.set_preserve_mtime(true);
        archive.set_preserve_ownerships(false);
        archive.set_unpack_xattrs(false);
        archive.set_overwrite(true);
        let entries = archive.entries().map_err(|e| bad_tar("read", e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| bad_tar("read an entry of", e))?;
            let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let data_end = entry.raw_file_position() + entry.size();
            use tar::EntryType as T;
            match entry.header().entry_type() {
                T::Directory | T::Regular | T::Continuous | T::Symlink | T::Link => {}
                // Metadata records of the archive itself, applied by the
                // tar crate to the entry they precede.
                T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink => continue,
                other => {
                    return Err(EngineError::Request(format!(
                        "the build context's {name:?} is a {other:?} entry: a context holds files, directories and links only"
                    )))
                }
            }
            let inside = entry
                .unpack_in(&self.dir)
                .map_err(|e| bad_tar(&format!("unpack {name:?} of"), e))?;
            // Read only now: the entry's data is what moved the stream on.
            if sent.get().is_some_and(|sent| data_end > sent) {
                return Err(EngineError::Request(format!(
                    "the build context's tar ends inside {name:?}: it was cut short"
                )));
            }
            if !inside {
                return Err(EngineError::Request(format!(
                    "the build context's {name:?} leads outside the context"
                )));
            }
        }
        Ok(())
    }

    /// The Dockerfile at `name` in the context (`Dockerfile` when empty),
    /// resolved inside it: a link in the context cannot make kiln read a
    /// file of the daemon's host.
    pub fn dockerfile(&self, name: &str) -> Result<DockerfileSource, EngineError> {
        let name = if name.is_empty() { "Dockerfile" } else { name };
        let missing = || {
            EngineError::Request(format!(
                "the Dockerfile {name:?} is not in the build context"
            ))
        };
        let root = kiln_context::Root::open(&self.dir)
            .map_err(|e| EngineError::Request(format!("the build context: {e}")))?;
        let relative = Path::new(name.trim_start_matches('/'));
        let real = root
            .resolve(relative, true)
            .map_err(|e| EngineError::io(relative, e))?
            .ok_or_else(missing)?;
        let file = root.open_file(&real).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => missing(),
            _ => EngineError::io(relative, e),
        })?;
        let bytes = crate::read_bounded(file).map_err(|e| EngineError::io(relative, e))?;
        Ok(DockerfileSource::Bytes {
            display: name.to_owned(),
            bytes,
        })
    }
}

impl Drop for UnpackedContext {
    fn drop(&mut self) {
        // Whatever is left goes to GC's sweep of dead owners' scratch.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn bad_tar(what: &str, error: std::io::Error) -> EngineError {
    EngineError::Request(format!("cannot {what} the build context's tar: {error}"))
}

/// A tar stream with its end supplied: once `inner` is over, zeros to
/// the next 512-byte block and two zero blocks (read by the tar crate
/// only if the stream lacked them); `sent` is then what `inner` gave.
struct Terminated<'a> {
    inner: Limited<'a>,
    read: u64,
    sent: &'a Cell<Option<u64>>,
}

impl Read for Terminated<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let sent = match self.sent.get() {
            Some(sent) => sent,
            None => {
                let read = self.inner.read(buf)?;
                self.read += read as u64;
                if read > 0 || buf.is_empty() {
                    return Ok(read);
                }
                self.sent.set(Some(self.read));
                self.read
            }
        };
        let end = sent.div_ceil(512) * 512 + 1024;
        let left = end.saturating_sub(self.read);
        let zeros = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        buf[..zeros].fill(0);
        self.read += zeros as u64;
        Ok(zeros)
    }
}

/// A reader that fails once more than `limit` bytes have come.
struct Limited<'a> {
    inner: &'a mut dyn Read,
    left: u64,
    exceeded: &'a Cell<bool>,
}

impl Read for Limited<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            // One byte more says whether the stream is over or too big.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => {
                    self.exceeded.set(true);
                    Err(std::io::Error::other("the build context is too large"))
                }
            };
        }
        let wanted = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let read = self.inner.read(&mut buf[..wanted])?;
        self.left -= read as u64;
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        (dir, store)
    }

    fn tar_of(entries: &[(&str, tar::EntryType, &[u8], &str)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, kind, data, link) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(*kind);
            header.set_mode(0o644);
            header.set_size(data.len() as u64);
            if !link.is_empty() {
                header.set_link_name(link).unwrap();
            }
            // Written raw: the builder's own path checks would refuse
            // the hostile names these tests need.
            let name = header.as_old_mut().name.as_mut();
            name[..path.len()].copy_from_slice(path.as_bytes());
            header.set_cksum();
            builder.append(&header, *data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    #[test]
    fn unpacks_files_and_finds_the_dockerfile() {
        let (_dir, store) = store();
        let tar = tar_of(&[
            ("Dockerfile", tar::EntryType::Regular, b"FROM scratch\n", ""),
            ("src/", tar::EntryType::Directory, b"", ""),
            ("src/a.txt", tar::EntryType::Regular, b"a", ""),
        ]);
        let context =
            UnpackedContext::receive(&store, &mut tar.as_slice(), DEFAULT_CONTEXT_LIMIT).unwrap();
        assert_eq!(
            std::fs::read(context.path().join("src/a.txt")).unwrap(),
            b"a"
        );
        let DockerfileSource::Bytes { bytes, .. } = context.dockerfile("").unwrap() else {
            panic!("expected bytes");
        };
        assert_eq!(bytes, b"FROM scratch\n");
        let path = context.path().to_owned();
        drop(context);
        assert!(!path.exists());
    }

    #[test]
    fn refuses_an_entry_leading_out() {
        let (_dir, store) = store();
        let tar = tar_of(&[("../escaped", tar::EntryType::Regular, b"x", "")]);
        let error = UnpackedContext::receive(&store, &mut tar.as_slice(), DEFAULT_CONTEXT_LIMIT)
            .unwrap_err()
            .to_string();
        assert!(error.contains("escaped"), "{error}");
        assert!(!store.layout().tmp().join("escaped").exists());
    }

    #[test]
    fn refuses_writing_through_a_planted_link() {
        let (outside, store) = store();
        let target = outside.path().join("victim");
        std::fs::create_dir(&target).unwrap();
        let tar = tar_of(&[
            (
                "out",
                tar::EntryType::Symlink,
                b"",
                target.to_str().unwrap(),
            ),
            ("out/file", tar::EntryType::Regular, b"x", ""),
        ]);
        assert!(
            UnpackedContext::receive(&store, &mut tar.as_slice(), DEFAULT_CONTEXT_LIMIT).is_err()
        );
        assert!(!target.join("file").exists());
    }

    #[test]
    fn refuses_devices_and_oversized_streams() {
        let (_dir, store) = store();
        let tar = tar_of(&[("null", tar::EntryType::Char, b"", "")]);
        let error = UnpackedContext::receive(&store, &mut tar.as_slice(), DEFAULT_CONTEXT_LIMIT)
            .unwrap_err()
            .to_string();
        assert!(error.contains("\"null\""), "{error}");
        let big = tar_of(&[("big", tar::EntryType::Regular, &[0u8; 4096], "")]);
        let error = UnpackedContext::receive(&store, &mut big.as_slice(), 1024)
            .unwrap_err()
            .to_string();
        assert!(error.contains("larger than 1024"), "{error}");
    }

    #[test]
    fn a_tar_without_its_end_is_taken_but_one_cut_short_is_not() {
        let (_dir, store) = store();
        let tar = tar_of(&[
            ("Dockerfile", tar::EntryType::Regular, b"FROM scratch\n", ""),
            ("last", tar::EntryType::Regular, &[7u8; 47], ""),
        ]);
        // As the docker CLI sends it with `-f` outside the context: the
        // stream stops after the last entry's 47 bytes.
        let unended = &tar[..512 + 512 + 512 + 47];
        let context =
            UnpackedContext::receive(&store, &mut &unended[..], DEFAULT_CONTEXT_LIMIT).unwrap();
        assert_eq!(
            std::fs::read(context.path().join("last")).unwrap(),
            [7u8; 47]
        );
        let cut = &tar[..512 + 512 + 512 + 20];
        let error = UnpackedContext::receive(&store, &mut &cut[..], DEFAULT_CONTEXT_LIMIT)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("cut short") && error.contains("last"),
            "{error}"
        );
        // Cut inside a header: an error, whatever the tar crate calls it.
        let in_header = &tar[..512 + 512 + 100];
        assert!(
            UnpackedContext::receive(&store, &mut &in_header[..], DEFAULT_CONTEXT_LIMIT).is_err()
        );
    }

    #[test]
    fn a_gzip_context_is_unpacked_and_its_limit_is_on_what_it_holds() {
        use std::io::Write;
        let (_dir, store) = store();
        let tar = tar_of(&[("big", tar::EntryType::Regular, &[0u8; 64 * 1024], "")]);
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gzip.write_all(&tar).unwrap();
        let gzip = gzip.finish().unwrap();
        assert!(gzip.len() < 4096, "compresses well: {}", gzip.len());
        let context =
            UnpackedContext::receive(&store, &mut gzip.as_slice(), DEFAULT_CONTEXT_LIMIT).unwrap();
        assert_eq!(
            std::fs::metadata(context.path().join("big")).unwrap().len(),
            64 * 1024
        );
        let error = UnpackedContext::receive(&store, &mut gzip.as_slice(), 16 * 1024)
            .unwrap_err()
            .to_string();
        assert!(error.contains("larger than 16384"), "{error}");
    }

    #[test]
    fn a_dockerfile_link_cannot_read_a_host_file() {
        let (outside, store) = store();
        let secret = outside.path().join("secret");
        std::fs::write(&secret, "FROM host-secret\n").unwrap();
        let tar = tar_of(&[(
            "Dockerfile",
            tar::EntryType::Symlink,
            b"",
            secret.to_str().unwrap(),
        )]);
        let context =
            UnpackedContext::receive(&store, &mut tar.as_slice(), DEFAULT_CONTEXT_LIMIT).unwrap();
        let error = context.dockerfile("Dockerfile").unwrap_err().to_string();
        assert!(error.contains("not in the build context"), "{error}");
    }
}
