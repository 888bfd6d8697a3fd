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
use std::sync::Arc;

/// Where the segments are, under the data location.
pub const DIR: &str = "_journal";

/// The first bytes of a segment (and its format's version).
const MAGIC: &[u8; 4] = b"OMJ1";

/// One queue's records of an epoch, as read back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Part {
    /// Sequence number of the first record.
    pub first: u64,
    /// The records, back to back.
    pub bytes: Vec<u8>,
    /// End of each record in `bytes`.
    pub ends: Vec<usize>,
    /// Each record's key tenant (none: posted with an admin key).
    pub tenants: Vec<Option<Arc<str>>>,
}

impl Part {
    /// The sequence number after the last record.
    pub fn end(&self) -> u64 {
        self.first + self.ends.len() as u64
    }

    /// Borrowed, for [`encode`].
    #[cfg(test)]
    fn as_ref(&self) -> PartRef<'_> {
        PartRef {
            first: self.first,
            bytes: &self.bytes,
            ends: &self.ends,
            tenants: &self.tenants,
        }
    }
}

/// One queue's records of an epoch, borrowed from the queue's batch to be written
/// (default: none, numbered 0).
#[derive(Debug, Clone, Copy, Default)]
pub struct PartRef<'a> {
    /// Sequence number of the first record.
    pub first: u64,
    /// The records, back to back.
    pub bytes: &'a [u8],
    /// End of each record in `bytes`.
    pub ends: &'a [usize],
    /// Each record's key tenant.
    pub tenants: &'a [Option<Arc<str>>],
}

/// One epoch's records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Segment {
    /// The epoch's `ingested_at` (microseconds since the Unix epoch).
    pub ingested_at: i64,
    /// The events.
    pub events: Part,
    /// The commands (empty, numbered 0, when the job takes none).
    pub commands: Part,
}

#[cfg(test)]
impl Segment {
    /// Its path: by the sequence numbers of its first event and first command.
    fn path(&self) -> String {
        path_of(self.events.first, self.commands.first)
    }
}

/// The path of the segment whose first event and first command have these numbers.
pub fn path_of(events: u64, commands: u64) -> String {
    format!("{DIR}/{events:020}-{commands:020}.bin")
}

/// The sequence numbers of a segment's path, `None` for anything else.
fn starts_of(path: &str) -> Option<(u64, u64)> {
    let name = path.strip_prefix(DIR)?.strip_prefix('/')?;
    let (events, commands) = name.strip_suffix(".bin")?.split_once('-')?;
    Some((events.parse().ok()?, commands.parse().ok()?))
}

/// A segment's path and bytes: `OMJ1`, `ingested_at`, then per part (events, commands)
/// its first sequence number, record count, each record's length, the records, and the
/// key tenants as runs (count, then 0 for none or 1, length and name): a request's
/// records share one tenant, so a run per request at most. Little-endian throughout.
pub fn encode(ingested_at: i64, events: PartRef<'_>, commands: PartRef<'_>) -> (String, Vec<u8>) {
    let size = 32
        + [events, commands]
            .iter()
            .map(|p| 24 + p.bytes.len() + 4 * p.ends.len())
            .sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&ingested_at.to_le_bytes());
    for part in [events, commands] {
        out.extend_from_slice(&part.first.to_le_bytes());
        out.extend_from_slice(&(part.ends.len() as u64).to_le_bytes());
        let mut start = 0;
        for &end in part.ends {
            out.extend_from_slice(&((end - start) as u64).to_le_bytes());
            start = end;
        }
        out.extend_from_slice(&part.bytes[..start]);
        let mut runs: Vec<(u64, Option<&str>)> = Vec::new();
        for t in part.tenants {
            match runs.last_mut() {
                Some((n, last)) if *last == t.as_deref() => *n += 1,
                _ => runs.push((1, t.as_deref())),
            }
        }
        out.extend_from_slice(&(runs.len() as u64).to_le_bytes());
        for (n, tenant) in runs {
            out.extend_from_slice(&n.to_le_bytes());
            match tenant {
                None => out.push(0),
                Some(t) => {
                    out.push(1);
                    out.extend_from_slice(&(t.len() as u64).to_le_bytes());
                    out.extend_from_slice(t.as_bytes());
                }
            }
        }
    }
    (path_of(events.first, commands.first), out)
}

/// Reads back what [`encode`] wrote; `None` if it is not a whole segment.
pub fn decode(bytes: &[u8]) -> Option<Segment> {
    struct Reader<'a>(&'a [u8]);
    impl<'a> Reader<'a> {
        fn take(&mut self, n: usize) -> Option<&'a [u8]> {
            let (head, rest) = self.0.split_at_checked(n)?;
            self.0 = rest;
            Some(head)
        }
        fn u64(&mut self) -> Option<u64> {
            Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
        }
        fn len(&mut self) -> Option<usize> {
            usize::try_from(self.u64()?).ok()
        }
    }
    let mut r = Reader(bytes);
    if r.take(4)? != MAGIC {
        return None;
    }
    let ingested_at = r.u64()? as i64;
    let mut part = || -> Option<Part> {
        let first = r.u64()?;
        let n = r.len()?;
        let mut ends = Vec::with_capacity(n.min(r.0.len() / 8));
        let mut end = 0usize;
        for _ in 0..n {
            end = end.checked_add(r.len()?)?;
            ends.push(end);
        }
        let bytes = r.take(end)?.to_vec();
        let mut tenants = Vec::with_capacity(n.min(r.0.len()));
        for _ in 0..r.len()? {
            let count = r.len()?;
            let tenant: Option<Arc<str>> = match r.take(1)?[0] {
                0 => None,
                1 => {
                    let len = r.len()?;
                    Some(Arc::from(std::str::from_utf8(r.take(len)?).ok()?))
                }
                _ => return None,
            };
            if tenants.len() + count > n {
                return None;
            }
            tenants.extend(std::iter::repeat_n(tenant, count));
        }
        (tenants.len() == n).then_some(Part {
            first,
            bytes,
            ends,
            tenants,
        })
    };
    let events = part()?;
    let commands = part()?;
    r.0.is_empty().then_some(Segment {
        ingested_at,
        events,
        commands,
    })
}

/// Writes one segment (one object: readers see all of it or none).
pub async fn write(store: &DataStore, path: &str, bytes: Vec<u8>) -> anyhow::Result<()> {
    store
        .put(path, bytes)
        .await
        .with_context(|| format!("writing the journal segment {path}"))
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
        let segment = decode(&bytes).with_context(|| {
            format!(
                "the journal segment {path} is not a whole segment (corrupt or from another version); move it away to resume without its records"
            )
        })?;
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
            tenants: (0..n)
                .map(|i| (i % 3 != 2).then(|| Arc::from("acme")))
                .collect(),
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
    fn segments_read_back_as_written_and_a_cut_one_does_not() {
        let mut s = segment((7, 5), (3, 2));
        s.events.bytes = b"{\"a\":1}x{}yz{}".to_vec();
        s.events.ends = vec![7, 8, 10, 12, 14];
        let (_, bytes) = encode(s.ingested_at, s.events.as_ref(), s.commands.as_ref());
        assert_eq!(decode(&bytes), Some(s));
        for cut in [0, 4, 12, bytes.len() / 2, bytes.len() - 1] {
            assert_eq!(decode(&bytes[..cut]), None, "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(decode(&longer), None);
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
                let (path, bytes) = encode(s.ingested_at, s.events.as_ref(), s.commands.as_ref());
                assert_eq!(path, s.path());
                write(&store, &path, bytes).await.unwrap();
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
