//! Epoch commits: the files of an epoch become visible together.
//!
//! Writers first put an epoch's table files, then one commit record
//! `_commits/<epoch, 20 digits>.json` naming every live file of every table (the
//! manifest), the watermark, cumulative counts and the source offsets it covers. A
//! single object put is atomic on every supported store, so readers that open the
//! newest commit record see whole epochs only. Files a newer commit no longer names are
//! stale and never read.

use crate::{DataStore, Error, Result};
use std::collections::BTreeMap;

/// Where commit records live.
pub const COMMITS_DIR: &str = "_commits";

/// One live file of a table.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileEntry {
    /// Object path relative to the data root.
    pub path: String,
    /// Number of rows.
    pub rows: u64,
}

/// A change an epoch makes to one table slot: a slot is a file position that a newer
/// file replaces (a usage partition of one worker) or a new append-only file.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileChange {
    /// Table name.
    pub table: String,
    /// Slot within the table, e.g. `hour/2026-10-26/w0`.
    pub slot: String,
    /// The new file, or `None` when the slot became empty.
    pub file: Option<FileEntry>,
}

/// The live files of every table.
pub type Manifest = BTreeMap<String, BTreeMap<String, FileEntry>>;

/// Counts over all epochs so far.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counts {
    /// Accepted events.
    pub accepted: u64,
    /// Rejected records (invalid + duplicate).
    pub rejected: u64,
    /// Of those, duplicates.
    pub duplicates: u64,
    /// Late events.
    pub late: u64,
    /// Valid commands.
    #[serde(default)]
    pub commands_accepted: u64,
    /// Rejected commands (they are rows of `rejected_events` too, but not in `rejected`,
    /// which counts events).
    #[serde(default)]
    pub commands_rejected: u64,
}

/// One commit record.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CommitRecord {
    /// The epoch it commits.
    pub epoch: u64,
    /// Wall-clock time of the commit (RFC 3339).
    pub committed_at: String,
    /// Watermark after the epoch (RFC 3339), if any event was accepted.
    pub watermark: Option<String>,
    /// Watermark in microseconds.
    pub watermark_micros: Option<i64>,
    /// Cumulative counts.
    pub counts: Counts,
    /// Source name -> offset covered: bytes of a file, or for each Kafka partition
    /// (`kafka://HOST:PORT/TOPIC#P`) the next offset to read.
    pub sources: BTreeMap<String, u64>,
    /// The live files of every table.
    pub tables: Manifest,
    /// Digest of the meters and pipeline settings a checkpoint was taken with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_digest: Option<String>,
    /// Digest of what the billing tables read from the config (the plans and the
    /// allowed lateness), so that a reader with another config is told so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing_digest: Option<String>,
}

impl CommitRecord {
    /// Applies one epoch's file changes to the manifest.
    pub fn apply(&mut self, changes: impl IntoIterator<Item = FileChange>) {
        for c in changes {
            let table = self.tables.entry(c.table).or_default();
            match c.file {
                Some(f) => {
                    table.insert(c.slot, f);
                }
                None => {
                    table.remove(&c.slot);
                }
            }
        }
    }

    /// The object path of epoch `epoch`'s record.
    pub fn path_of(epoch: u64) -> String {
        format!("{COMMITS_DIR}/{epoch:020}.json")
    }

    /// Writes the record (atomically: one object put).
    pub async fn write(&self, store: &DataStore) -> Result<()> {
        let path = Self::path_of(self.epoch);
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| Error::Commit {
            path: path.clone(),
            message: e.to_string(),
        })?;
        store.put(&path, bytes).await
    }

    /// The newest commit record, if any.
    pub async fn latest(store: &DataStore) -> Result<Option<CommitRecord>> {
        let mut paths = store.list(COMMITS_DIR).await?;
        paths.retain(|p| p.ends_with(".json"));
        paths.sort();
        let Some(path) = paths.pop() else {
            return Ok(None);
        };
        let bytes = store.get(&path).await?.ok_or_else(|| Error::Commit {
            path: path.clone(),
            message: "vanished while reading".into(),
        })?;
        let record = serde_json::from_slice(&bytes).map_err(|e| Error::Commit {
            path,
            message: e.to_string(),
        })?;
        Ok(Some(record))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn latest_commit_wins_and_slots_are_replaced() {
        let store = DataStore::open("memory://commit-test").unwrap();
        assert!(CommitRecord::latest(&store).await.unwrap().is_none());
        let mut r = CommitRecord::default();
        let file = |p: &str| {
            Some(FileEntry {
                path: p.into(),
                rows: 1,
            })
        };
        r.apply([FileChange {
            table: "t".into(),
            slot: "a".into(),
            file: file("a1"),
        }]);
        r.write(&store).await.unwrap();
        r.epoch = 1;
        r.apply([
            FileChange {
                table: "t".into(),
                slot: "a".into(),
                file: file("a2"),
            },
            FileChange {
                table: "t".into(),
                slot: "b".into(),
                file: file("b1"),
            },
        ]);
        r.write(&store).await.unwrap();
        r.epoch = 10;
        r.apply([FileChange {
            table: "t".into(),
            slot: "b".into(),
            file: None,
        }]);
        r.write(&store).await.unwrap();
        let latest = CommitRecord::latest(&store).await.unwrap().unwrap();
        assert_eq!(latest.epoch, 10);
        assert_eq!(latest.tables["t"].len(), 1);
        assert_eq!(latest.tables["t"]["a"].path, "a2");
    }
}
