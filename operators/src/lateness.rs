//! Lateness against the watermark (DESIGN.md section 3).
//!
//! An event is late when its timestamp is below `watermark - allowed_lateness`, where
//! the watermark is the greatest timestamp of the accepted events that arrived before it.
//! What "before" spans depends on the source ([`Order`]):
//!
//! - A file is one stream: byte order is arrival order. Within an epoch the chunks are
//!   ordered by worker index (each worker reads one contiguous slice), so a worker knows
//!   the watermark at the start of its chunk from the previous epochs and the maxima of
//!   the chunks before its own (computed by the dedup owners).
//! - A Kafka topic is one stream per partition, with no order between partitions. An
//!   event is judged against the watermark of its own partition (offset order), so how
//!   far the job has read the other partitions (consumer lag, restarts, epoch cuts) never
//!   changes a verdict about data that was already in the topic.
//!
//! The *closed* watermark bounds what can still be accepted: no event accepted from now
//! on is older than `closed - allowed_lateness`, which finality of windows (`is_final`)
//! and freeing their memory rely on. For a file it is the watermark. For Kafka it is the
//! least watermark of the partitions that still have messages to read (a partition with
//! none accepted yet holds it at "none"); partitions read to their end (idle) do not
//! hold it back, as in Flink's idle sources. It never moves back. An event is never
//! judged against less than the closed watermark, so a message that arrives in a
//! partition after it went idle is judged against the closed watermark when its own
//! partition's is lower: it did arrive after everything read so far.
//!
//! Late events never raise a watermark (they are below it), so the maxima of first
//! occurrences are exactly the maxima of accepted events.

use om_model::Micros;
use om_model::time::format_micros;
use std::collections::{BTreeMap, BTreeSet};

/// What became of one valid event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Accepted: it counts.
    Accepted,
    /// An earlier event claimed its (tenant, id).
    Duplicate,
    /// Older than watermark - allowed_lateness; the watermark it was judged against.
    Late(Micros),
}

/// How the chunks of an epoch relate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Order {
    /// One stream; chunk `i` precedes chunk `i + 1` (file slices by worker).
    Global,
    /// Independent streams `0..n`; a chunk is a Kafka partition.
    PerChunk(u32),
}

/// The watermarks of a job, identical on every worker.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Watermarks {
    order: Order,
    /// Greatest accepted timestamp overall.
    latest: Option<Micros>,
    /// Greatest accepted timestamp per chunk (`PerChunk` only).
    chunks: BTreeMap<u32, Micros>,
    /// The closed watermark (`PerChunk` only).
    closed: Option<Micros>,
}

impl Watermarks {
    /// No event accepted yet.
    pub fn new(order: Order) -> Self {
        Watermarks {
            order,
            latest: None,
            chunks: BTreeMap::new(),
            closed: None,
        }
    }

    /// The greatest accepted timestamp: DESIGN.md's watermark, "now" for the tables.
    pub fn latest(&self) -> Option<Micros> {
        self.latest
    }

    /// The closed watermark: no event accepted from now on is older than this minus the
    /// allowed lateness.
    pub fn closed(&self) -> Option<Micros> {
        match self.order {
            Order::Global => self.latest,
            Order::PerChunk(_) => self.closed,
        }
    }

    /// The watermark before the first event of `chunk` in an epoch whose chunks have the
    /// first-occurrence maxima `epoch_max`.
    pub fn start_of(&self, chunk: u32, epoch_max: &BTreeMap<u32, Micros>) -> Option<Micros> {
        match self.order {
            Order::Global => self
                .latest
                .max(epoch_max.range(..chunk).map(|(_, &m)| m).max()),
            Order::PerChunk(_) => self.chunks.get(&chunk).copied().max(self.closed),
        }
    }

    /// Moves past an epoch with the first-occurrence maxima `epoch_max`, after which the
    /// chunks `idle` have nothing left to read (`PerChunk` only).
    pub fn advance(&mut self, epoch_max: &BTreeMap<u32, Micros>, idle: &BTreeSet<u32>) {
        self.latest = self.latest.max(epoch_max.values().copied().max());
        let Order::PerChunk(n) = self.order else {
            return;
        };
        for (&chunk, &m) in epoch_max {
            let w = self.chunks.entry(chunk).or_insert(m);
            *w = (*w).max(m);
        }
        let mut busy = (0..n).filter(|c| !idle.contains(c)).peekable();
        let candidate = if busy.peek().is_none() {
            self.latest
        } else {
            // `None` (no event yet) is the least: it holds the watermark back.
            busy.map(|c| self.chunks.get(&c).copied()).min().flatten()
        };
        self.closed = self.closed.max(candidate);
    }
}

/// Judges one chunk's valid events, given in arrival order as (pos, timestamp), starting
/// from the watermark `start` ([`Watermarks::start_of`]). `duplicates` holds the
/// positions the dedup owners reported for this chunk, in any order.
pub fn classify(
    events: &[(u64, Micros)],
    duplicates: &mut [u64],
    start: Option<Micros>,
    allowed_lateness: Micros,
) -> Vec<Fate> {
    debug_assert!(events.windows(2).all(|w| w[0].0 < w[1].0), "arrival order");
    duplicates.sort_unstable();
    let mut w = start;
    let mut next_dup = duplicates.iter().peekable();
    events
        .iter()
        .map(|&(pos, ts)| {
            while next_dup.next_if(|&&d| d < pos).is_some() {}
            if next_dup.next_if(|&&d| d == pos).is_some() {
                Fate::Duplicate
            } else if let Some(w) = w.filter(|w| ts < w - allowed_lateness) {
                Fate::Late(w)
            } else {
                w = w.max(Some(ts));
                Fate::Accepted
            }
        })
        .collect()
}

/// The `reason` of a late event.
pub fn late_reason(ts: Micros, watermark: Micros, allowed_lateness: Micros) -> String {
    format!(
        "late: timestamp {} is more than {}s behind the watermark {}",
        format_micros(ts),
        allowed_lateness / om_model::time::SECOND,
        format_micros(watermark)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watermark_flows_from_earlier_chunks_and_events() {
        let mut w = Watermarks::new(Order::Global);
        w.advance(&BTreeMap::from([(0, 500)]), &BTreeSet::new());
        let maxima = BTreeMap::from([(0, 1000), (1, 1200)]);
        let start = w.start_of(1, &maxima);
        assert_eq!(start, Some(1000));
        let fates = classify(&[(10, 1200), (11, 850), (12, 1100)], &mut [], start, 100);
        assert_eq!(
            fates,
            vec![Fate::Accepted, Fate::Late(1200), Fate::Accepted]
        );
        w.advance(&maxima, &BTreeSet::new());
        assert_eq!((w.latest(), w.closed()), (Some(1200), Some(1200)));
    }

    #[test]
    fn partitions_are_judged_by_their_own_watermark() {
        let none = BTreeSet::new();
        let mut w = Watermarks::new(Order::PerChunk(3));
        assert_eq!(w.start_of(0, &BTreeMap::new()), None);
        w.advance(&BTreeMap::from([(0, 5_000), (1, 1_000)]), &none);
        // Partition 1 lags far behind partition 0: its events are not late for that.
        let fates = classify(&[(7, 950)], &mut [], w.start_of(1, &BTreeMap::new()), 100);
        assert_eq!(fates, vec![Fate::Accepted]);
        // Partition 2 has no event yet: nothing is closed, its first event is judged
        // against nothing, whenever the job gets to read it.
        assert_eq!((w.latest(), w.closed()), (Some(5_000), None));
        assert_eq!(w.start_of(2, &BTreeMap::new()), None);
        w.advance(&BTreeMap::from([(1, 3_000), (2, 2_000)]), &none);
        assert_eq!((w.latest(), w.closed()), (Some(5_000), Some(2_000)));
    }

    #[test]
    fn idle_partitions_do_not_hold_the_closed_watermark_back() {
        let mut w = Watermarks::new(Order::PerChunk(3));
        // Partition 2 is empty and read to its end.
        w.advance(
            &BTreeMap::from([(0, 5_000), (1, 3_000)]),
            &BTreeSet::from([2]),
        );
        assert_eq!(w.closed(), Some(3_000));
        // A message arriving in it later is judged against the closed watermark.
        assert_eq!(w.start_of(2, &BTreeMap::new()), Some(3_000));
        // Everything read: closed is the latest; it never moves back.
        w.advance(&BTreeMap::new(), &BTreeSet::from([0, 1, 2]));
        assert_eq!(w.closed(), Some(5_000));
        w.advance(&BTreeMap::from([(2, 100)]), &BTreeSet::new());
        assert_eq!(w.closed(), Some(5_000));
        assert_eq!(w.start_of(1, &BTreeMap::new()), Some(5_000));
    }

    #[test]
    fn duplicates_are_set_aside_first() {
        let fates = classify(&[(1, 5), (2, 5), (3, 1)], &mut [3, 2], None, 10);
        assert_eq!(
            fates,
            vec![Fate::Accepted, Fate::Duplicate, Fate::Duplicate]
        );
    }

    #[test]
    fn late_reason_names_both_times() {
        let r = late_reason(0, 3_600_000_000, 1_000_000);
        assert!(r.contains("1970-01-01T00:00:00") && r.contains("1s"), "{r}");
    }
}
