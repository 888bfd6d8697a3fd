//! Superseded files: deleted once no reader can still be using them.
//!
//! A commit replaces files in the manifest (a rewritten partition's new file replaces
//! the old one) and supersedes the previous commit record. Nothing reads a superseded
//! file any more, except a reader that opened the previous commit record just before and
//! is still reading the files it named. So a superseded file is not deleted at once: it
//! is kept for `keep` after the commit that superseded it, then deleted. Readers that
//! take longer than `keep` between opening a commit record and reading its files may
//! find files gone; every reader of ours opens the newest commit per query and is bounded
//! well below the default (`serve`'s SQL timeout is 30 s).
//!
//! A job that resumes cannot know when the files its location holds but its commit does
//! not name were superseded, nor whether an epoch that never committed wrote them: it
//! counts them as superseded when it starts ([`unnamed`]). The resumed job re-runs that
//! epoch and writes the same paths again, so the committer never deletes a path the
//! newest commit names; such a file, once superseded again, may go sooner than `keep`
//! after that (it is due from the restart on).
//!
//! Without this, a live job's location grows by every rewritten partition at every
//! commit, and the commit records pile up (each query lists them to find the newest).

use crate::commit::{COMMITS_DIR, CommitRecord, FileChange};
use crate::{DataStore, Result};
use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

/// Superseded files waiting for their keep period to pass, oldest first.
#[derive(Debug)]
pub struct Superseded {
    /// How long a superseded file is kept; `None`: forever.
    keep: Option<Duration>,
    /// (when it may be deleted, path).
    queue: VecDeque<(Instant, String)>,
}

impl Superseded {
    /// Keeps superseded files for `keep` (`None`: never deletes them).
    pub fn new(keep: Option<Duration>) -> Self {
        Superseded {
            keep,
            queue: VecDeque::new(),
        }
    }

    /// Records files superseded at `at`.
    pub fn superseded(&mut self, paths: impl IntoIterator<Item = String>, at: Instant) {
        let Some(keep) = self.keep else {
            return;
        };
        // One keep period for all, and `at` never goes back: the queue stays in order.
        let from = at + keep;
        debug_assert!(self.queue.back().is_none_or(|(t, _)| *t <= from));
        self.queue.extend(paths.into_iter().map(|p| (from, p)));
    }

    /// The files whose keep period has passed at `now`; they leave the queue.
    pub fn due(&mut self, now: Instant) -> Vec<String> {
        let n = self.queue.partition_point(|(from, _)| *from <= now);
        self.queue.drain(..n).map(|(_, p)| p).collect()
    }

    /// Files waiting.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether no file is waiting.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

/// The files that applying `changes` to `record` takes out of its manifest: those a
/// change replaces with another file or removes.
pub fn replaced<'a>(
    record: &CommitRecord,
    changes: impl IntoIterator<Item = &'a FileChange>,
) -> Vec<String> {
    let mut out = Vec::new();
    for c in changes {
        let old = record.tables.get(&c.table).and_then(|t| t.get(&c.slot));
        if let Some(old) = old
            && c.file.as_ref().is_none_or(|new| new.path != old.path)
        {
            out.push(old.path.clone());
        }
    }
    out
}

/// The objects under `record`'s tables and commit records that `record` does not name
/// (and that are not `record` itself): files of superseded or never committed epochs,
/// and older commit records.
pub async fn unnamed(store: &DataStore, record: &CommitRecord) -> Result<Vec<String>> {
    let named: BTreeSet<&str> = record
        .tables
        .values()
        .flat_map(|t| t.values().map(|f| f.path.as_str()))
        .collect();
    let own = CommitRecord::path_of(record.epoch);
    let mut out = Vec::new();
    for dir in record
        .tables
        .keys()
        .map(String::as_str)
        .chain([COMMITS_DIR])
    {
        for path in store.list(dir).await? {
            if !named.contains(path.as_str()) && path != own {
                out.push(path);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commit::FileEntry;

    fn change(table: &str, slot: &str, path: Option<&str>) -> FileChange {
        FileChange {
            table: table.into(),
            slot: slot.into(),
            file: path.map(|p| FileEntry {
                path: p.into(),
                rows: 1,
            }),
        }
    }

    #[test]
    fn files_wait_their_keep_period_in_order() {
        let t0 = Instant::now();
        let keep = Duration::from_secs(60);
        let mut s = Superseded::new(Some(keep));
        s.superseded(["a".to_string(), "b".to_string()], t0);
        s.superseded(["c".to_string()], t0 + Duration::from_secs(10));
        assert!(s.due(t0 + keep - Duration::from_millis(1)).is_empty());
        assert_eq!(s.due(t0 + keep), ["a", "b"]);
        assert_eq!(s.len(), 1);
        assert!(s.due(t0 + keep + Duration::from_secs(9)).is_empty());
        assert_eq!(s.due(t0 + keep + Duration::from_secs(10)), ["c"]);
        assert!(s.is_empty());
    }

    #[test]
    fn kept_forever_nothing_is_ever_due() {
        let t0 = Instant::now();
        let mut s = Superseded::new(None);
        s.superseded(["a".to_string()], t0);
        assert!(s.due(t0 + Duration::from_secs(1 << 30)).is_empty());
    }

    #[test]
    fn replaced_files_are_those_a_change_takes_out_of_the_manifest() {
        let mut record = CommitRecord::default();
        record.apply([
            change(
                "usage_windows",
                "hour/a/w0",
                Some("usage_windows/hour/a/w0-e1.parquet"),
            ),
            change(
                "usage_windows",
                "day/a/w0",
                Some("usage_windows/day/a/w0-e1.parquet"),
            ),
            change("events", "w0-e1", Some("events/w0-e1.parquet")),
        ]);
        let changes = [
            // rewritten: the old file goes
            change(
                "usage_windows",
                "hour/a/w0",
                Some("usage_windows/hour/a/w0-e2.parquet"),
            ),
            // emptied: the old file goes
            change("usage_windows", "day/a/w0", None),
            // new slots replace nothing
            change("events", "w0-e2", Some("events/w0-e2.parquet")),
            change("costs", "day/a/w0", None),
        ];
        assert_eq!(
            replaced(&record, &changes),
            [
                "usage_windows/hour/a/w0-e1.parquet",
                "usage_windows/day/a/w0-e1.parquet"
            ]
        );
    }

    #[tokio::test]
    async fn a_resumed_location_counts_what_its_commit_does_not_name() {
        let store = DataStore::open("memory://retention-test").unwrap();
        for p in [
            "usage_windows/hour/a/w0-e1.parquet",
            "usage_windows/hour/a/w0-e2.parquet",
            "usage_windows/hour/a/w0-e3.parquet",
            "events/w0-e1.parquet",
            "other/not-ours.txt",
        ] {
            store.put(p, b"x".to_vec()).await.unwrap();
        }
        let mut record = CommitRecord::default();
        record.apply([
            change(
                "usage_windows",
                "hour/a/w0",
                Some("usage_windows/hour/a/w0-e2.parquet"),
            ),
            change("events", "w0-e1", Some("events/w0-e1.parquet")),
        ]);
        record.epoch = 1;
        record.write(&store).await.unwrap();
        record.epoch = 2;
        record.write(&store).await.unwrap();
        let mut found = unnamed(&store, &record).await.unwrap();
        found.sort();
        // e1: superseded; e3: an epoch that never committed; the older record.
        assert_eq!(
            found,
            [
                "_commits/00000000000000000001.json",
                "usage_windows/hour/a/w0-e1.parquet",
                "usage_windows/hour/a/w0-e3.parquet",
            ]
        );
    }
}
