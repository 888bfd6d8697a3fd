//! The ingest journal of `openmonetize serve`: every epoch's posted records, written to
//! the data location before their requests are answered, so that a verdict given before
//! the tables are committed survives a crash.
//!
//! One segment per epoch that took anything off the queues: the epoch's events and
//! commands exactly as posted (with each record's key tenant) and the epoch's
//! `ingested_at`. Segments are named by the sequence numbers of their first event and
//! first command, so they sort in the order they were taken, and each one starts where
//! the one before ended.
//!
//! After a crash the job resumes from its last commit (whose source positions are
//! sequence numbers) and replays, one epoch per segment, the chain of segments that
//! starts at those positions: the same records with the same epoch boundaries, on the
//! state the commit checkpointed, give the same verdicts and the same tables as the run
//! that answered them. A segment that does not continue the chain (its predecessor was
//! never written, so none of its requests were answered) is deleted. Segments a commit
//! covers are deleted after it.

use anyhow::Context;
use om_sinks::DataStore;
use serde::{Deserialize, Serialize};

/// Where the segments are, under the data location.
pub const DIR: &str = "_journal";

/// One queue's records of an epoch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    /// Sequence number of the first record.
    pub first: u64,
    /// The records, back to back.
    pub bytes: Vec<u8>,
    /// End of each record in `bytes`.
    pub ends: Vec<usize>,
    /// Each record's key tenant (none: posted with an admin key).
    pub tenants: Vec<Option<String>>,
}

impl Part {
    /// The sequence number after the last record.
    pub fn end(&self) -> u64 {
        self.first + self.ends.len() as u64
    }
}

/// One epoch's records.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    /// The epoch's `ingested_at` (microseconds since the Unix epoch).
    pub ingested_at: i64,
    /// The events.
    pub events: Part,
    /// The commands (empty, numbered 0, when the job takes none).
    pub commands: Part,
}

impl Segment {
    /// Its path: by the sequence numbers of its first event and first command.
    pub fn path(&self) -> String {
        path_of(self.events.first, self.commands.first)
    }

    /// Whether it holds no record.
    pub fn is_empty(&self) -> bool {
        self.events.ends.is_empty() && self.commands.ends.is_empty()
    }
}

fn path_of(events: u64, commands: u64) -> String {
    format!("{DIR}/{events:020}-{commands:020}.bin")
}

/// The sequence numbers of a segment's path, `None` for anything else.
fn starts_of(path: &str) -> Option<(u64, u64)> {
    let name = path.strip_prefix(DIR)?.strip_prefix('/')?;
    let (events, commands) = name.strip_suffix(".bin")?.split_once('-')?;
    Some((events.parse().ok()?, commands.parse().ok()?))
}

/// Writes `segment` (one object: readers see all of it or none).
pub async fn write(store: &DataStore, segment: &Segment) -> anyhow::Result<String> {
    let path = segment.path();
    let bytes = bincode::serialize(segment).context("encoding a journal segment")?;
    store
        .put(&path, bytes)
        .await
        .with_context(|| format!("writing the journal segment {path}"))?;
    Ok(path)
}

/// What a resuming job finds in the journal.
#[derive(Debug, Default)]
pub struct Found {
    /// The chain of segments from the resume positions on, in order.
    pub chain: Vec<Segment>,
    /// Every other segment: covered by the commit, or cut off from the chain.
    pub stale: Vec<String>,
}

/// The segments after a commit whose positions are `events` and `commands`.
pub async fn find(store: &DataStore, events: u64, commands: u64) -> anyhow::Result<Found> {
    let mut paths: Vec<((u64, u64), String)> = store
        .list(DIR)
        .await
        .with_context(|| format!("listing {DIR}"))?
        .into_iter()
        .filter_map(|p| Some((starts_of(&p)?, p)))
        .collect();
    paths.sort();
    let mut found = Found::default();
    let mut next = (events, commands);
    for (starts, path) in paths {
        if starts != next {
            found.stale.push(path);
            continue;
        }
        let bytes = store
            .get(&path)
            .await
            .with_context(|| format!("reading {path}"))?
            .with_context(|| format!("{path} vanished while the journal was read"))?;
        let segment: Segment = bincode::deserialize(&bytes)
            .with_context(|| format!("decoding the journal segment {path}"))?;
        next = (segment.events.end(), segment.commands.end());
        found.chain.push(segment);
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(events: (u64, usize), commands: (u64, usize)) -> Segment {
        let part = |(first, n): (u64, usize)| Part {
            first,
            bytes: b"{}".repeat(n),
            ends: (1..=n).map(|i| 2 * i).collect(),
            tenants: vec![Some("acme".into()); n],
        };
        Segment {
            ingested_at: 7,
            events: part(events),
            commands: part(commands),
        }
    }

    #[test]
    fn paths_sort_in_the_order_segments_were_taken() {
        let a = segment((9, 1), (100, 0)).path();
        let b = segment((10, 0), (100, 2)).path();
        let c = segment((10, 5), (102, 0)).path();
        assert!(a < b && b < c, "{a} {b} {c}");
        assert_eq!(starts_of(&b), Some((10, 100)));
        assert_eq!(starts_of("_journal/x.bin"), None);
        assert_eq!(starts_of("_commits/00000000000000000009-1.bin"), None);
    }

    #[test]
    fn a_resuming_job_finds_the_chain_from_its_commit_and_nothing_cut_off() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let store = DataStore::open("memory://journal-test").unwrap();
        let covered = segment((0, 3), (0, 1));
        let first = segment((3, 2), (1, 0));
        let second = segment((5, 0), (1, 4));
        // Its predecessor (events 5..8) was never written.
        let cut_off = segment((8, 1), (5, 0));
        runtime.block_on(async {
            for s in [&covered, &first, &second, &cut_off] {
                write(&store, s).await.unwrap();
            }
            let found = find(&store, 3, 1).await.unwrap();
            assert_eq!(found.chain, vec![first.clone(), second.clone()]);
            assert_eq!(found.stale, vec![covered.path(), cut_off.path()]);
            let none = find(&store, 100, 100).await.unwrap();
            assert!(none.chain.is_empty());
            assert_eq!(none.stale.len(), 4);
        });
    }
}
