//! Object writes started in the background and awaited together, so that a sink encodes
//! its next file while the previous ones are being written.
//!
//! A commit writes many files (every changed partition and view of every worker). Written
//! one by one, each `put` leaves the worker thread waiting on the store (for a local
//! directory: tokio's blocking pool creating, writing and renaming the file). With
//! [`Uploads`] the worker hands each encoded file to the runtime and goes on encoding;
//! [`Uploads::finish`] then waits for all of them. The durability order is unchanged: a
//! sink names its files to the committer only after `finish` returned, so a commit record
//! never names a file that is not fully written.

use crate::{DataStore, Error, Result};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

/// Writes in flight, each with the path it writes.
pub struct Uploads {
    runtime: Handle,
    pending: Vec<(String, JoinHandle<Result<()>>)>,
}

impl Uploads {
    /// No writes yet; they will run on `runtime`.
    pub fn new(runtime: &Handle) -> Self {
        Uploads {
            runtime: runtime.clone(),
            pending: Vec::new(),
        }
    }

    /// Starts writing `bytes` to `path`.
    pub fn put(&mut self, store: &DataStore, path: String, bytes: impl Into<bytes::Bytes>) {
        let store = store.clone();
        let bytes = bytes.into();
        let at = path.clone();
        let task = self
            .runtime
            .spawn(async move { store.put(&at, bytes).await });
        self.pending.push((path, task));
    }

    /// Waits for every write started; the first failure names its path. Every write is
    /// awaited even after a failure, so none is left running behind the caller.
    pub fn finish(self) -> Result<()> {
        let mut first_error = None;
        for (path, task) in self.pending {
            let outcome = match self.runtime.block_on(task) {
                Ok(written) => written.map_err(|e| e.to_string()),
                Err(e) => Err(format!("the write task failed: {e}")),
            };
            if let Err(message) = outcome
                && first_error.is_none()
            {
                first_error = Some(Error::Upload { path, message });
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A runtime and a store in a fresh local directory.
    fn local() -> (tokio::runtime::Runtime, tempfile::TempDir, DataStore) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = DataStore::open(dir.path().to_str().unwrap()).unwrap();
        (runtime, dir, store)
    }

    #[test]
    fn every_file_is_written_once_finish_returns() {
        let (runtime, dir, store) = local();
        let mut uploads = Uploads::new(runtime.handle());
        for i in 0..50u8 {
            uploads.put(&store, format!("t/f{i}.bin"), vec![i; 1000 + i as usize]);
        }
        uploads.finish().unwrap();
        for i in 0..50u8 {
            let bytes = std::fs::read(dir.path().join(format!("t/f{i}.bin"))).unwrap();
            assert_eq!(bytes, vec![i; 1000 + i as usize]);
        }
    }

    #[test]
    fn a_failed_write_is_reported_with_its_path() {
        let (runtime, dir, store) = local();
        // A file where a directory has to be: the write below it cannot succeed.
        std::fs::write(dir.path().join("blocked"), b"x").unwrap();
        let mut uploads = Uploads::new(runtime.handle());
        uploads.put(&store, "ok/a.bin".into(), vec![1]);
        uploads.put(&store, "blocked/b.bin".into(), vec![2]);
        let e = uploads.finish().unwrap_err().to_string();
        assert!(e.contains("blocked/b.bin"), "{e}");
        assert_eq!(std::fs::read(dir.path().join("ok/a.bin")).unwrap(), vec![1]);
    }
}
