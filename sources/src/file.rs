//! The JSONL file source: a file cut into byte ranges, so that each timely worker reads
//! its own slice of each epoch without coordination.
//!
//! A line belongs to the range holding its first byte; its byte offset is its source
//! position and defines arrival order. Lines holding only whitespace are skipped (they
//! are not records); every other line is decoded. A range is read with positioned reads
//! into a buffer the caller reuses, so memory holds one epoch's slice, not the file.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// An open JSONL file.
#[derive(Debug)]
pub struct JsonlFile {
    path: PathBuf,
    file: File,
    len: u64,
}

/// The lines of one byte range, read by [`JsonlFile::read_lines`].
#[derive(Debug, Default)]
pub struct LineBuf {
    bytes: Vec<u8>,
    /// File offset of `bytes[0]`.
    base: u64,
    /// The range whose lines these are.
    start: u64,
    end: u64,
}

/// Bytes read at a time past the end of a range to finish its last line.
const TAIL_STEP: usize = 64 << 10;

impl JsonlFile {
    /// Opens `path`.
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        Ok(JsonlFile {
            path: path.to_path_buf(),
            file,
            len,
        })
    }

    /// The path it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True for an empty file.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Reads the lines whose first byte lies in `[start, end)` into `buf`: the range, the
    /// byte before it (to tell whether `start` begins a line) and the rest of its last
    /// line.
    pub fn read_lines(&self, start: u64, end: u64, buf: &mut LineBuf) -> io::Result<()> {
        let end = end.min(self.len);
        let start = start.min(end);
        let base = start.saturating_sub(1);
        buf.bytes.clear();
        buf.base = base;
        buf.start = start;
        buf.end = end;
        self.append(base, (end - base) as usize, &mut buf.bytes)?;
        // Finish the last line: read on until a newline after `end`, or the end of file.
        let mut scanned = buf.bytes.len();
        let mut at = end;
        while at < self.len && start < end {
            let n = TAIL_STEP.min((self.len - at) as usize);
            self.append(at, n, &mut buf.bytes)?;
            if memchr::memchr(b'\n', &buf.bytes[scanned..]).is_some() {
                break;
            }
            scanned = buf.bytes.len();
            at += n as u64;
        }
        Ok(())
    }

    fn append(&self, offset: u64, n: usize, out: &mut Vec<u8>) -> io::Result<()> {
        let from = out.len();
        out.resize(from + n, 0);
        self.file.read_exact_at(&mut out[from..], offset)
    }
}

impl LineBuf {
    /// The non-blank lines of the range, with their file offsets.
    pub fn lines(&self) -> impl Iterator<Item = (u64, &[u8])> {
        let bytes = &self.bytes[..];
        let base = self.base;
        let end = (self.end - base) as usize;
        let mut pos = (self.start - base) as usize;
        if pos > 0 && bytes[pos - 1] != b'\n' {
            pos = match memchr::memchr(b'\n', &bytes[pos..]) {
                Some(i) => pos + i + 1,
                None => bytes.len(),
            };
        }
        std::iter::from_fn(move || {
            while pos < end {
                let line_start = pos;
                let line_end = match memchr::memchr(b'\n', &bytes[pos..]) {
                    Some(i) => pos + i,
                    None => bytes.len(),
                };
                pos = line_end + 1;
                let mut line = &bytes[line_start..line_end];
                if let Some(stripped) = line.strip_suffix(b"\r") {
                    line = stripped;
                }
                if !line.iter().all(u8::is_ascii_whitespace) {
                    return Some((base + line_start as u64, line));
                }
            }
            None
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn every_line_is_read_exactly_once_whatever_the_cut() {
        let mut f = tempfile_path();
        let text = b"{\"a\":1}\n\n  \n{\"b\":2}\r\n{\"c\":3}";
        f.1.write_all(text).unwrap();
        let file = JsonlFile::open(&f.0).unwrap();
        let lines_in = |start, end| {
            let mut buf = LineBuf::default();
            file.read_lines(start, end, &mut buf).unwrap();
            buf.lines()
                .map(|(o, l)| (o, l.to_vec()))
                .collect::<Vec<_>>()
        };
        let all = lines_in(0, file.len());
        assert_eq!(all.len(), 3);
        assert_eq!(all[1], (12, b"{\"b\":2}".to_vec()));
        for cut in 0..=text.len() as u64 {
            let mut parts = lines_in(0, cut);
            parts.extend(lines_in(cut, file.len()));
            assert_eq!(parts, all, "cut at {cut}");
            for cut2 in cut..=text.len() as u64 {
                let mut parts = lines_in(0, cut);
                parts.extend(lines_in(cut, cut2));
                parts.extend(lines_in(cut2, file.len()));
                assert_eq!(parts, all, "cuts at {cut} and {cut2}");
            }
        }
        std::fs::remove_file(&f.0).unwrap();
    }

    fn tempfile_path() -> (PathBuf, File) {
        let path = std::env::temp_dir().join(format!("om-file-test-{}", std::process::id()));
        let file = File::create(&path).unwrap();
        (path, file)
    }
}
