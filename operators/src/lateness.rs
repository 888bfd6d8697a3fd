//! Lateness against the watermark (DESIGN.md section 3).
//!
//! The watermark before an event is the greatest timestamp of any accepted event that
//! arrived before it. Within an epoch, the chunks are ordered by worker index (each
//! worker reads one contiguous slice of input), so a worker knows the watermark at the
//! start of its chunk from the previous epochs' watermark and the maxima of the chunks
//! before its own (computed by the dedup owners), and walks its own events in arrival
//! order from there. Late events never raise the watermark (they are below it), so the
//! maxima of first occurrences are exactly the maxima of accepted events.

use om_model::Micros;
use om_model::time::format_micros;
use std::collections::BTreeMap;

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

/// Judges one chunk's valid events, given in arrival order as (pos, timestamp), and
/// returns their fates and the watermark after the whole epoch. `duplicates` holds the
/// positions the dedup owners reported, in any order.
pub fn classify(
    events: &[(u64, Micros)],
    duplicates: &mut [u64],
    chunk_max: &BTreeMap<u32, Micros>,
    my_chunk: u32,
    watermark: Option<Micros>,
    allowed_lateness: Micros,
) -> (Vec<Fate>, Option<Micros>) {
    debug_assert!(events.windows(2).all(|w| w[0].0 < w[1].0), "arrival order");
    duplicates.sort_unstable();
    let before_me = chunk_max.range(..my_chunk).map(|(_, &m)| m).max();
    let mut w = watermark.max(before_me);
    let mut next_dup = duplicates.iter().peekable();
    let fates = events
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
        .collect();
    (fates, watermark.max(chunk_max.values().copied().max()))
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
        let maxima = BTreeMap::from([(0, 1000), (1, 1200)]);
        let (fates, w) = classify(
            &[(10, 1200), (11, 850), (12, 1100)],
            &mut [],
            &maxima,
            1,
            Some(500),
            100,
        );
        assert_eq!(
            fates,
            vec![Fate::Accepted, Fate::Late(1200), Fate::Accepted]
        );
        assert_eq!(w, Some(1200));
    }

    #[test]
    fn duplicates_are_set_aside_first() {
        let (fates, _) = classify(
            &[(1, 5), (2, 5), (3, 1)],
            &mut [3, 2],
            &BTreeMap::new(),
            0,
            None,
            10,
        );
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
