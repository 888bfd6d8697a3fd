//! The JSONL file source: a memory-mapped file cut into byte ranges, so that each timely
//! worker reads its own slice of each epoch without coordination.
//!
//! A line belongs to the range holding its first byte; its byte offset is its source
//! position and defines arrival order. Lines holding only whitespace are skipped (they
//! are not records); every other line is decoded.

use memmap2::Mmap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// An open JSONL file.
pub struct JsonlFile {
    path: PathBuf,
    map: Option<Mmap>,
}

impl std::fmt::Debug for JsonlFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JsonlFile({})", self.path.display())
    }
}

impl JsonlFile {
    /// Opens and maps `path`.
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        // An empty file cannot be mapped on every platform; it simply has no lines.
        // SAFETY: the file is only read; a concurrent writer truncating it is outside the
        // contract of a file source (same as any reader of a file being rewritten).
        let map = if len == 0 {
            None
        } else {
            Some(unsafe { Mmap::map(&file)? })
        };
        Ok(JsonlFile {
            path: path.to_path_buf(),
            map,
        })
    }

    /// The path it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.bytes().len() as u64
    }

    /// True for an empty file.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    /// The non-blank lines whose first byte lies in `[start, end)`, with their offsets.
    pub fn lines_in(&self, start: u64, end: u64) -> impl Iterator<Item = (u64, &[u8])> {
        let bytes = self.bytes();
        let end = (end as usize).min(bytes.len());
        let mut pos = start as usize;
        if pos > 0 && pos <= bytes.len() && bytes[pos - 1] != b'\n' {
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
                    return Some((line_start as u64, line));
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
        let all: Vec<_> = file.lines_in(0, file.len()).collect();
        assert_eq!(all.len(), 3);
        assert_eq!(all[1], (12, &b"{\"b\":2}"[..]));
        for cut in 0..=text.len() as u64 {
            let mut parts: Vec<_> = file.lines_in(0, cut).collect();
            parts.extend(file.lines_in(cut, file.len()));
            assert_eq!(parts, all, "cut at {cut}");
        }
        std::fs::remove_file(&f.0).unwrap();
    }

    fn tempfile_path() -> (PathBuf, File) {
        let path = std::env::temp_dir().join(format!("om-file-test-{}", std::process::id()));
        let file = File::create(&path).unwrap();
        (path, file)
    }
}
