//! The current state of `usage_windows` on one worker, partitioned for rewriting.
//!
//! Rows are grouped into partitions of (window size, UTC hour of the window start) for
//! minute and hour windows, and (window size, UTC day of the window start) for day and
//! month windows (a month window lives in the partition of the 1st). Each epoch the worker applies its
//! consolidated window updates, and rewrites only the partitions that changed, or whose
//! rows became final because the watermark moved (`is_final`: window_end <=
//! watermark - allowed_lateness, after which no accepted event can change the window).
//! A rewritten partition's new file replaces the old one in the next commit record, so
//! a corrected window replaces its old row in what readers see.

use crate::encode::UsageRow;
use om_model::time::{DAY, HOUR};
use om_model::{Aggregation, Decimal9, Micros, WindowKey, WindowSize};
use rustc_hash::FxHashMap;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet};

/// A window's state: a running (sum, count) for additive meters, or the reduced
/// (value, events) row for order-based meters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowState {
    /// sum, count (sum / count / avg meters).
    Additive {
        /// Sum of values.
        sum: Decimal9,
        /// Number of events.
        count: i64,
    },
    /// value, events (min / max / unique_count / latest meters).
    Row {
        /// The value.
        value: Decimal9,
        /// Number of events.
        events: i64,
    },
}

/// A partition: (window size, day of the window start).
pub type PartitionKey = (WindowSize, Micros);

/// The partition a window belongs to.
pub fn partition_of(key: &WindowKey) -> PartitionKey {
    let span = match key.size {
        WindowSize::Minute | WindowSize::Hour => HOUR,
        WindowSize::Day | WindowSize::Month => DAY,
    };
    (key.size, key.start - key.start.rem_euclid(span))
}

/// Path segment of a partition, e.g. `hour/2026-10-26T05` or `day/2026-10-26`.
pub fn partition_path(p: &PartitionKey) -> String {
    let t = om_model::time::format_micros(p.1);
    match p.0 {
        WindowSize::Minute | WindowSize::Hour => format!("{}/{}", p.0.as_str(), &t[..13]),
        WindowSize::Day | WindowSize::Month => format!("{}/{}", p.0.as_str(), &t[..10]),
    }
}

#[derive(Debug, Default)]
struct Partition {
    rows: FxHashMap<WindowKey, WindowState>,
    /// Smallest window_end among rows written as not final.
    first_open_end: Option<Micros>,
}

/// The worker's share of `usage_windows`.
#[derive(Debug)]
pub struct UsageTable {
    aggregations: Vec<Aggregation>,
    allowed_lateness: Micros,
    partitions: BTreeMap<PartitionKey, Partition>,
    dirty: BTreeSet<PartitionKey>,
}

impl UsageTable {
    /// An empty table; `aggregations[m]` is meter `m`'s aggregation.
    pub fn new(aggregations: Vec<Aggregation>, allowed_lateness: Micros) -> Self {
        UsageTable {
            aggregations,
            allowed_lateness,
            partitions: BTreeMap::new(),
            dirty: BTreeSet::new(),
        }
    }

    /// Adds a (sum, count) delta to an additive window; the row disappears at count 0.
    pub fn add(&mut self, key: WindowKey, sum: Decimal9, count: i64) {
        let p = partition_of(&key);
        self.dirty.insert(p);
        let part = self.partitions.entry(p).or_default();
        match part.rows.entry(key) {
            Entry::Occupied(mut o) => {
                if let WindowState::Additive { sum: s, count: c } = o.get_mut() {
                    *s += sum;
                    *c += count;
                    if *c == 0 {
                        debug_assert_eq!(*s, Decimal9::ZERO, "an empty window sums to zero");
                        o.remove();
                    }
                }
            }
            Entry::Vacant(v) => {
                if count != 0 {
                    v.insert(WindowState::Additive { sum, count });
                }
            }
        }
    }

    /// Applies a change of an order-based window's row: `diff` +1 sets it, -1 removes the
    /// old row (ignored if a newer row was already set).
    pub fn set_row(&mut self, key: WindowKey, value: Decimal9, events: i64, diff: isize) {
        let p = partition_of(&key);
        self.dirty.insert(p);
        let part = self.partitions.entry(p).or_default();
        let row = WindowState::Row { value, events };
        if diff > 0 {
            part.rows.insert(key, row);
        } else if part.rows.get(&key) == Some(&row) {
            part.rows.remove(&key);
        }
    }

    /// Number of windows held.
    pub fn len(&self) -> usize {
        self.partitions.values().map(|p| p.rows.len()).sum()
    }

    /// True when no window is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The partitions to rewrite at `watermark`: changed ones, and ones whose open rows
    /// became final. Clears the change marks.
    pub fn take_partitions_to_write(&mut self, watermark: Option<Micros>) -> Vec<PartitionKey> {
        let final_before = watermark.map(|w| w - self.allowed_lateness);
        let mut out: BTreeSet<PartitionKey> = std::mem::take(&mut self.dirty);
        if let Some(f) = final_before {
            for (k, part) in &self.partitions {
                if part.first_open_end.is_some_and(|end| end <= f) {
                    out.insert(*k);
                }
            }
        }
        out.into_iter().collect()
    }

    /// The rows of one partition as of `watermark` (empty if the partition is gone),
    /// and records which of them are still open.
    pub fn rows(&mut self, p: &PartitionKey, watermark: Option<Micros>) -> Vec<UsageRow<'_>> {
        let final_before = watermark.map(|w| w - self.allowed_lateness);
        if self
            .partitions
            .get(p)
            .is_none_or(|part| part.rows.is_empty())
        {
            self.partitions.remove(p);
            return Vec::new();
        }
        let part = self.partitions.get_mut(p).expect("checked above");
        let is_final = |key: &WindowKey| final_before.is_some_and(|f| key.size.end(key.start) <= f);
        part.first_open_end = part
            .rows
            .keys()
            .filter(|k| !is_final(k))
            .map(|k| k.size.end(k.start))
            .min();
        let aggregations = &self.aggregations;
        let mut rows: Vec<UsageRow<'_>> = part
            .rows
            .iter()
            .map(|(key, state)| {
                let (value, events) = match *state {
                    WindowState::Additive { sum, count } => (
                        aggregations[key.meter as usize].additive_value(sum, count),
                        count,
                    ),
                    WindowState::Row { value, events } => (value, events),
                };
                UsageRow {
                    key,
                    value,
                    events,
                    is_final: is_final(key),
                }
            })
            .collect();
        rows.sort_unstable_by(|a, b| a.key.cmp(b.key));
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use om_model::time::HOUR;

    fn key(start: Micros) -> WindowKey {
        WindowKey {
            tenant_id: "t".into(),
            customer_id: "c".into(),
            meter: 0,
            dimensions: "{}".into(),
            size: WindowSize::Hour,
            start,
        }
    }

    #[test]
    fn corrections_replace_rows_and_finality_triggers_rewrites() {
        let mut t = UsageTable::new(vec![Aggregation::Sum], 2 * HOUR);
        t.add(key(0), Decimal9::from_int(5), 1);
        let parts = t.take_partitions_to_write(Some(10));
        assert_eq!(parts.len(), 1);
        let rows = t.rows(&parts[0], Some(10));
        assert_eq!(
            (rows[0].value, rows[0].is_final),
            (Decimal9::from_int(5), false)
        );
        // Nothing changed and nothing became final: nothing to write.
        assert!(t.take_partitions_to_write(Some(HOUR)).is_empty());
        // Watermark passes end + lateness: the partition is rewritten with is_final.
        let parts = t.take_partitions_to_write(Some(3 * HOUR));
        assert_eq!(parts.len(), 1);
        assert!(t.rows(&parts[0], Some(3 * HOUR))[0].is_final);
        // Retraction to zero events removes the row.
        t.add(key(0), Decimal9::from_int(-5), -1);
        let parts = t.take_partitions_to_write(Some(3 * HOUR));
        assert!(t.rows(&parts[0], Some(3 * HOUR)).is_empty());
        assert!(t.is_empty());
    }

    #[test]
    fn order_based_rows_are_replaced_in_any_order() {
        let mut t = UsageTable::new(vec![Aggregation::Max], HOUR);
        t.set_row(key(0), Decimal9::from_int(1), 1, 1);
        t.set_row(key(0), Decimal9::from_int(3), 2, 1);
        t.set_row(key(0), Decimal9::from_int(1), 1, -1);
        let p = t.take_partitions_to_write(None);
        let rows = t.rows(&p[0], None);
        assert_eq!((rows[0].value, rows[0].events), (Decimal9::from_int(3), 2));
    }
}
