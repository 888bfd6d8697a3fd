//! Lateness against the watermark (DESIGN.md section 3).
//!
//! The watermark before an event is the greatest timestamp of any accepted event that
//! arrived before it. Within an epoch, the chunks are ordered by worker index (each
//! worker reads one contiguous slice of input), so a worker knows the watermark at the
//! start of its chunk from the previous epochs' watermark and the maxima of the chunks
//! before its own (computed by the dedup owners), and walks its own events in arrival
//! order from there. Late events never raise the watermark (they are below it), so the
//! maxima of first occurrences are exactly the maxima of accepted events.

use om_model::time::format_micros;
use om_model::{DecodedEvent, Micros, SourcePosition};
use std::collections::{BTreeMap, HashSet};

/// A valid event waiting for its dedup and lateness verdicts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// Global arrival order.
    pub pos: u64,
    /// Source position for the tables.
    pub position: SourcePosition,
    /// The decoded event.
    pub decoded: DecodedEvent,
}

/// The outcome of one chunk of one epoch.
#[derive(Debug, Default)]
pub struct Classified {
    /// Accepted events, in arrival order.
    pub accepted: Vec<Candidate>,
    /// Late events with the watermark they were judged against.
    pub late: Vec<(Candidate, Micros)>,
    /// Duplicates of an earlier event.
    pub duplicates: Vec<Candidate>,
    /// The watermark after the whole epoch (all chunks).
    pub watermark: Option<Micros>,
}

/// Judges one chunk. `chunk_max` holds, for every chunk of the epoch, the greatest
/// timestamp among its first occurrences; `duplicates` the positions found duplicate.
pub fn classify(
    mut candidates: Vec<Candidate>,
    duplicates: &HashSet<u64>,
    chunk_max: &BTreeMap<u32, Micros>,
    my_chunk: u32,
    watermark: Option<Micros>,
    allowed_lateness: Micros,
) -> Classified {
    candidates.sort_unstable_by_key(|c| c.pos);
    let before_me = chunk_max.range(..my_chunk).map(|(_, &m)| m).max();
    let mut w = watermark.max(before_me);
    let mut out = Classified::default();
    for c in candidates {
        if duplicates.contains(&c.pos) {
            out.duplicates.push(c);
        } else if w.is_some_and(|w| c.decoded.event.timestamp < w - allowed_lateness) {
            out.late.push((c, w.expect("checked")));
        } else {
            w = w.max(Some(c.decoded.event.timestamp));
            out.accepted.push(c);
        }
    }
    out.watermark = watermark.max(chunk_max.values().copied().max());
    out
}

/// The reason recorded for a late event.
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
    use om_model::{Decimal9, Event};

    fn cand(pos: u64, ts: Micros) -> Candidate {
        let event = Event {
            tenant_id: "t".into(),
            id: format!("e{pos}"),
            customer_id: "c".into(),
            event_type: "x".into(),
            timestamp: ts,
            value: Decimal9::ONE,
            properties: None,
        };
        Candidate {
            pos,
            position: SourcePosition {
                source: 0,
                partition: 0,
                offset: pos,
            },
            decoded: DecodedEvent {
                event,
                readings: vec![],
            },
        }
    }

    #[test]
    fn watermark_flows_from_earlier_chunks_and_events() {
        // Chunk 0 saw up to 1000; our chunk 1 starts at watermark 1000.
        let maxima = BTreeMap::from([(0, 1000), (1, 1200)]);
        let out = classify(
            vec![cand(11, 850), cand(10, 1200), cand(12, 1100)],
            &HashSet::new(),
            &maxima,
            1,
            Some(500),
            100,
        );
        // pos 10 (1200) accepted; pos 11 (850 < 1200-100) late; pos 12 (1100 >= 1100) accepted.
        let ids: Vec<u64> = out.accepted.iter().map(|c| c.pos).collect();
        assert_eq!(ids, vec![10, 12]);
        assert_eq!(out.late.len(), 1);
        assert_eq!(out.late[0].1, 1200);
        assert_eq!(out.watermark, Some(1200));
    }

    #[test]
    fn duplicates_are_set_aside_first() {
        let out = classify(
            vec![cand(1, 5), cand(2, 5)],
            &HashSet::from([2]),
            &BTreeMap::new(),
            0,
            None,
            10,
        );
        assert_eq!(out.accepted.len(), 1);
        assert_eq!(out.duplicates.len(), 1);
    }
}
