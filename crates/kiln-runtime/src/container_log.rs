//! A container's log: the bytes it wrote (stdout and stderr as one
//! stream, as they came) in `log`, and beside them `log.times`, a 16-byte
//! record per write: the log's length before it and the time (ns since
//! the epoch), both little-endian u64. The log stays the bytes the
//! container wrote, for `logs` and `commit` alike.

use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::RuntimeError;

const LOG: &str = "log";
const LOG_TIMES: &str = "log.times";
const TIME_RECORD: usize = 16;

/// How much is read at a time, and the longest line held back waiting
/// for its newline: a longer one goes out in pieces (Docker's json-file
/// driver splits at 16 KiB), so a log without newlines is never held in
/// memory whole.
const BLOCK: usize = 1024 * 1024;

pub(crate) fn log_path(dir: &Path) -> PathBuf {
    dir.join(LOG)
}

/// Appends to a container's log, noting when.
pub struct LogWriter {
    log: fs::File,
    times: fs::File,
    offset: u64,
}

impl LogWriter {
    pub(crate) fn open(dir: &Path) -> Result<LogWriter, RuntimeError> {
        let append = |path: PathBuf| {
            fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| RuntimeError::io("open", path, e))
        };
        let log = append(log_path(dir))?;
        let offset = log
            .metadata()
            .map_err(|e| RuntimeError::io("stat", log_path(dir), e))?
            .len();
        Ok(LogWriter {
            log,
            times: append(dir.join(LOG_TIMES))?,
            offset,
        })
    }

    /// The time is noted before the bytes land, so a reader that sees
    /// them finds their time too.
    pub fn write(&mut self, data: &[u8]) -> io::Result<()> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        let mut record = [0u8; TIME_RECORD];
        record[..8].copy_from_slice(&self.offset.to_le_bytes());
        record[8..].copy_from_slice(&nanos.to_le_bytes());
        self.times.write_all(&record)?;
        self.log.write_all(data)?;
        self.offset += data.len() as u64;
        Ok(())
    }
}

/// One line of a log (a last one may lack its newline; one longer than
/// [`BLOCK`] comes in pieces), with when its first byte was written
/// (`None` for a log from before kiln kept times).
pub struct LogLine<'a> {
    pub bytes: &'a [u8],
    pub written: Option<SystemTime>,
}

/// Reads a container's log through descriptors opened once: what it holds
/// stays readable after the container and its directory are removed, so
/// whoever follows an `--rm` container still gets its last lines.
pub struct LogReader {
    log: fs::File,
    times: Option<fs::File>,
    /// (offset, ns since the epoch), in offset order.
    marks: Vec<(u64, u64)>,
    /// A time record read in part.
    times_partial: Vec<u8>,
    /// A line begun but not yet ended, and where in the log it begins.
    pending: Vec<u8>,
    pending_at: u64,
    /// What reads go through, made once (a follower reads ten times a
    /// second).
    block: Vec<u8>,
}

impl LogReader {
    /// `None` when the container never wrote a log (it never started).
    pub(crate) fn open(dir: &Path) -> Result<Option<LogReader>, RuntimeError> {
        let path = log_path(dir);
        let log = match fs::File::open(&path) {
            Ok(log) => log,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(RuntimeError::io("open", path, e)),
        };
        Ok(Some(LogReader {
            log,
            times: fs::File::open(dir.join(LOG_TIMES)).ok(),
            marks: Vec::new(),
            times_partial: Vec::new(),
            pending: Vec::new(),
            pending_at: 0,
            block: Vec::new(),
        }))
    }

    /// Skips to the last `lines` lines of what the log holds now (a last
    /// line without a newline counts), read backwards in blocks.
    pub fn skip_to_last(&mut self, lines: usize) -> io::Result<()> {
        let start = self.tail_offset(lines)?;
        self.log.seek(SeekFrom::Start(start))?;
        self.pending.clear();
        self.pending_at = start;
        Ok(())
    }

    fn tail_offset(&mut self, lines: usize) -> io::Result<u64> {
        let len = self.log.metadata()?.len();
        if lines == 0 {
            return Ok(len);
        }
        let mut end = len;
        let mut newlines = 0;
        let mut block = vec![0u8; 64 * 1024];
        // A final newline ends the last line; it does not start a new one.
        let mut skip_final = true;
        while end > 0 {
            let start = end.saturating_sub(block.len() as u64);
            let size = usize::try_from(end - start).unwrap_or(block.len());
            self.log.seek(SeekFrom::Start(start))?;
            self.log.read_exact(&mut block[..size])?;
            for (i, byte) in block[..size].iter().enumerate().rev() {
                if *byte != b'\n' {
                    skip_final = false;
                    continue;
                }
                if skip_final && start + i as u64 == len - 1 {
                    skip_final = false;
                    continue;
                }
                newlines += 1;
                if newlines == lines {
                    return Ok(start + i as u64 + 1);
                }
            }
            end = start;
        }
        Ok(0)
    }

    /// Hands `emit` each line the log gained since the last call: whole
    /// lines only, unless `last` (nothing more will be written), when a
    /// final line without its newline goes too. Stops at `emit`'s error.
    pub fn read_lines(
        &mut self,
        last: bool,
        emit: &mut dyn FnMut(LogLine<'_>) -> io::Result<()>,
    ) -> io::Result<()> {
        let mut block = std::mem::take(&mut self.block);
        block.resize(BLOCK, 0);
        let result = self.read_blocks(&mut block, last, emit);
        self.block = block;
        result
    }

    fn read_blocks(
        &mut self,
        block: &mut [u8],
        last: bool,
        emit: &mut dyn FnMut(LogLine<'_>) -> io::Result<()>,
    ) -> io::Result<()> {
        loop {
            let read = match self.log.read(block) {
                Ok(read) => read,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if read == 0 {
                break;
            }
            self.pending.extend_from_slice(&block[..read]);
            self.read_times()?;
            self.emit_lines(false, emit)?;
        }
        self.emit_lines(last, emit)
    }

    fn emit_lines(
        &mut self,
        last: bool,
        emit: &mut dyn FnMut(LogLine<'_>) -> io::Result<()>,
    ) -> io::Result<()> {
        let mut begin = 0;
        while begin < self.pending.len() {
            let rest = &self.pending[begin..];
            let end = match rest.iter().position(|b| *b == b'\n') {
                Some(newline) => begin + newline + 1,
                None if last || rest.len() >= BLOCK => self.pending.len(),
                None => break,
            };
            let written = self.time_at(self.pending_at + begin as u64);
            emit(LogLine {
                bytes: &self.pending[begin..end],
                written,
            })?;
            begin = end;
        }
        self.pending.drain(..begin);
        self.pending_at += begin as u64;
        Ok(())
    }

    /// The time records appended since the last read.
    fn read_times(&mut self) -> io::Result<()> {
        let Some(times) = self.times.as_mut() else {
            return Ok(());
        };
        times.read_to_end(&mut self.times_partial)?;
        let whole = self.times_partial.len() / TIME_RECORD * TIME_RECORD;
        for record in self.times_partial[..whole].chunks_exact(TIME_RECORD) {
            let number =
                |at: usize| u64::from_le_bytes(record[at..at + 8].try_into().unwrap_or([0; 8]));
            self.marks.push((number(0), number(8)));
        }
        self.times_partial.drain(..whole);
        Ok(())
    }

    /// When the byte at `offset` was written: the time of the last write
    /// that began at or before it.
    fn time_at(&self, offset: u64) -> Option<SystemTime> {
        let index = self.marks.partition_point(|(start, _)| *start <= offset);
        let (_, nanos) = self.marks.get(index.checked_sub(1)?)?;
        Some(UNIX_EPOCH + Duration::from_nanos(*nanos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(reader: &mut LogReader, last: bool) -> Vec<(Vec<u8>, Option<SystemTime>)> {
        let mut got = Vec::new();
        reader
            .read_lines(last, &mut |line| {
                got.push((line.bytes.to_vec(), line.written));
                Ok(())
            })
            .unwrap();
        got
    }

    #[test]
    fn a_reader_gets_whole_lines_with_their_times_and_the_rest_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        assert!(LogReader::open(dir.path()).unwrap().is_none(), "no log yet");
        let mut writer = LogWriter::open(dir.path()).unwrap();
        writer.write(b"one\ntw").unwrap();
        let mut reader = LogReader::open(dir.path()).unwrap().unwrap();
        let first = lines(&mut reader, false);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].0, b"one\n");
        let when = first[0].1.expect("a time");
        assert!(when <= SystemTime::now() && when > UNIX_EPOCH);
        std::thread::sleep(Duration::from_millis(5));
        writer.write(b"o\nthree").unwrap();
        // The file goes, as under `--rm`: the open reader still reads it.
        fs::remove_dir_all(dir.path()).unwrap();
        let second = lines(&mut reader, false);
        assert_eq!(second.len(), 1);
        assert_eq!(second[0].0, b"two\n");
        assert_eq!(second[0].1, Some(when), "its first byte came with `one`");
        let rest = lines(&mut reader, true);
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].0, b"three");
        assert!(rest[0].1.unwrap() > when, "written later");
        assert!(lines(&mut reader, true).is_empty());
    }

    #[test]
    fn a_line_longer_than_a_block_comes_in_pieces_and_tail_counts_lines() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = LogWriter::open(dir.path()).unwrap();
        let long = vec![b'x'; BLOCK * 2 + 10];
        writer.write(&long).unwrap();
        let mut reader = LogReader::open(dir.path()).unwrap().unwrap();
        let pieces = lines(&mut reader, false);
        assert_eq!(pieces.len(), 2);
        assert!(pieces.iter().all(|(bytes, _)| bytes.len() == BLOCK));
        assert_eq!(lines(&mut reader, true)[0].0.len(), 10);

        writer.write(b"\na\nb\nc\n").unwrap();
        let mut tail = LogReader::open(dir.path()).unwrap().unwrap();
        tail.skip_to_last(2).unwrap();
        let last_two: Vec<_> = lines(&mut tail, true).into_iter().map(|l| l.0).collect();
        assert_eq!(last_two, [b"b\n".to_vec(), b"c\n".to_vec()]);
    }
}
