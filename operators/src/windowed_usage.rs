//! Windowed usage: meter readings of accepted events -> per-window aggregates, for all
//! seven aggregations over minute/hour/day/month windows with group-by dimensions
//! (DESIGN.md section 3), maintained incrementally.
//!
//! Readers turn each accepted event's readings into [`ReadingUpdate`]s (+1; a retraction
//! would be -1) and route them by customer, so one worker owns every window of a
//! customer. The owner folds each update into the state of the reading's windows
//! ([`UsageState::apply`]); out-of-order events simply land in older windows, whose rows
//! are then rewritten. Each window keeps what its aggregation needs to stay exact under
//! retractions:
//! - sum, count, avg: the running sum and count (a commutative group);
//! - min, max: the multiset of values;
//! - unique_count: the multiset of value fingerprints;
//! - latest: the values by (timestamp, id).
//!
//! State is grouped into partitions (`usage_windows` files): minute and hour windows by
//! the UTC hour of their start, day and month windows by the UTC day of their start (a
//! month window lives in the partition of the 1st). A window is final when
//! `window_end <= watermark - allowed_lateness`: no accepted event can change it any
//! more. A partition is rewritten when it changed or when some of its windows became
//! final; once all its windows are final and written, its state is dropped, so memory
//! holds only windows that can still change.

use indexmap::IndexMap;
use indexmap::map::Entry;
use om_model::time::{DAY, HOUR};
use om_model::{Aggregation, Decimal9, Micros, WindowKey, WindowSize};
use rustc_hash::{FxBuildHasher, FxHashMap};
use std::collections::{BTreeMap, BTreeSet};

/// The value one event contributes to a window.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum UpdateValue {
    /// sum, count, avg, min, max.
    Number(Decimal9),
    /// unique_count: fingerprint of the canonical scalar text.
    Scalar(u128),
    /// latest: the value with the event's id, which breaks ties of timestamps.
    Latest(Decimal9, Box<str>),
}

/// One meter reading of one event, on its way to the worker owning the customer.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReadingUpdate {
    /// Fingerprint of (tenant, customer): the routing key.
    pub customer: u64,
    /// Fingerprint of the dimensions.
    pub dimensions: u64,
    /// Event time.
    pub timestamp: Micros,
    /// Meter index.
    pub meter: u16,
    /// +1 to add the event, -1 to retract it (nothing else).
    pub diff: i64,
    /// The value read.
    pub value: UpdateValue,
}

/// What a window keeps to stay exact.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum WindowState {
    /// sum, count, avg.
    Additive {
        /// Sum of values.
        sum: Decimal9,
        /// Number of events.
        count: i64,
    },
    /// min, max: value -> multiplicity.
    Extremes(BTreeMap<Decimal9, i64>),
    /// unique_count: value fingerprint -> multiplicity, and the number of events. Boxed,
    /// so that a window of the common additive kind takes 32 bytes instead of 48: the
    /// window tables are the largest state, and their lookups mostly cache misses.
    Distinct(Box<FxHashMap<u128, i64>>, i64),
    /// latest: (timestamp, id) -> (value, multiplicity).
    Latest(BTreeMap<(Micros, Box<str>), (Decimal9, i64)>),
}

impl WindowState {
    fn new(aggregation: Aggregation) -> Self {
        match aggregation {
            Aggregation::Sum | Aggregation::Count | Aggregation::Avg => WindowState::Additive {
                sum: Decimal9::ZERO,
                count: 0,
            },
            Aggregation::Min | Aggregation::Max => WindowState::Extremes(BTreeMap::new()),
            Aggregation::UniqueCount => WindowState::Distinct(Box::default(), 0),
            Aggregation::Latest => WindowState::Latest(BTreeMap::new()),
        }
    }

    /// Adds (`diff` = +1) or retracts (`diff` = -1) one event's value.
    fn apply(&mut self, timestamp: Micros, value: &UpdateValue, diff: i64) {
        assert!(
            diff == 1 || diff == -1,
            "one event at a time, got diff {diff}"
        );
        match (self, value) {
            (WindowState::Additive { sum, count }, UpdateValue::Number(v)) => {
                if diff > 0 {
                    *sum += *v;
                } else {
                    *sum -= *v;
                }
                *count += diff;
            }
            (WindowState::Extremes(values), UpdateValue::Number(v)) => {
                let n = values.entry(*v).or_insert(0);
                *n += diff;
                if *n == 0 {
                    values.remove(v);
                }
            }
            (WindowState::Distinct(values, events), UpdateValue::Scalar(fp)) => {
                *events += diff;
                let n = values.entry(*fp).or_insert(0);
                *n += diff;
                if *n == 0 {
                    values.remove(fp);
                }
            }
            (WindowState::Latest(values), UpdateValue::Latest(v, id)) => {
                let slot = values.entry((timestamp, id.clone())).or_insert((*v, 0));
                slot.1 += diff;
                if slot.1 == 0 {
                    values.remove(&(timestamp, id.clone()));
                }
            }
            (state, value) => {
                panic!("window state {state:?} cannot take update {value:?}: meter config mismatch")
            }
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            WindowState::Additive { count, .. } => *count == 0,
            WindowState::Extremes(v) => v.is_empty(),
            WindowState::Distinct(_, events) => *events == 0,
            WindowState::Latest(v) => v.is_empty(),
        }
    }

    /// The window's (value, events).
    pub fn value(&self, aggregation: Aggregation) -> (Decimal9, i64) {
        match self {
            WindowState::Additive { sum, count } => {
                (aggregation.additive_value(*sum, *count), *count)
            }
            WindowState::Extremes(values) => {
                let events = values.values().sum();
                let pick = if aggregation == Aggregation::Min {
                    values.keys().next()
                } else {
                    values.keys().next_back()
                };
                (pick.copied().unwrap_or(Decimal9::ZERO), events)
            }
            WindowState::Distinct(values, events) => {
                (Decimal9::from_int(values.len() as i64), *events)
            }
            WindowState::Latest(values) => {
                let events = values.values().map(|(_, n)| n).sum();
                let value = values.values().next_back().map_or(Decimal9::ZERO, |v| v.0);
                (value, events)
            }
        }
    }
}

/// A partition of `usage_windows`: (window size, UTC hour or day of the window start).
pub type PartitionKey = (WindowSize, Micros);

/// The partition a window belongs to.
pub fn partition_of(size: WindowSize, start: Micros) -> PartitionKey {
    let span = match size {
        WindowSize::Minute | WindowSize::Hour => HOUR,
        WindowSize::Day | WindowSize::Month => DAY,
    };
    (size, start - start.rem_euclid(span))
}

/// The end of the last window a partition can hold: until the watermark passes it (plus
/// the lateness), an on-time event may still add a window to the partition.
fn partition_end(p: &PartitionKey) -> Micros {
    match p.0 {
        WindowSize::Minute | WindowSize::Hour => p.1 + HOUR,
        WindowSize::Day => p.1 + DAY,
        WindowSize::Month => WindowSize::Month.end(p.1),
    }
}

/// The object path fragment of a partition, e.g. `hour/2026-11-01T05` or `day/2026-11-01`.
pub fn partition_path(p: &PartitionKey) -> String {
    let t = om_model::time::format_micros(p.1);
    match p.0 {
        WindowSize::Minute | WindowSize::Hour => format!("{}/{}", p.0.as_str(), &t[..13]),
        WindowSize::Day | WindowSize::Month => format!("{}/{}", p.0.as_str(), &t[..10]),
    }
}

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Partition {
    /// Its windows in the order of its file's rows: sorted by key when the partition is
    /// written with no row kept from its previous file, each new window after the
    /// others, and a removed window's slot taken by the last one. New windows thus
    /// leave the rows before them where they were, so a writer can keep the parts of
    /// the previous file whose keys did not move ([`PartitionWrite::Rows`]).
    windows: IndexMap<WindowKey, WindowState, FxBuildHasher>,
    /// Changed since it was last written.
    dirty: bool,
    /// Earliest end among windows that were not final when it was last written.
    first_open_end: Option<Micros>,
    /// How many leading windows are still, in order, those its last write listed
    /// first. Not saved: a resumed job holds no file to keep rows of.
    #[serde(skip)]
    kept: usize,
}

/// One `usage_windows` row of a partition being written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowRow {
    /// The window.
    pub key: WindowKey,
    /// Its value.
    pub value: Decimal9,
    /// Number of events in it.
    pub events: i64,
    /// True once no accepted event can change it.
    pub is_final: bool,
}

/// How a partition is to be rewritten at a commit ([`UsageState::take_writes`]).
#[derive(Debug, PartialEq)]
pub enum PartitionWrite {
    /// Its rows, in file order; none when its file is to be removed.
    Rows {
        /// The rows.
        rows: Vec<WindowRow>,
        /// How many leading rows have the keys, in the same order, of the rows this
        /// partition was last written with (0 when there was no such write).
        kept: usize,
    },
    /// Unchanged since its last file, and every window in it is now final: that file's
    /// rows with `is_final` set.
    AllFinal,
}

/// One worker's share of the window state, by partition.
#[derive(Debug)]
pub struct UsageState {
    aggregations: Vec<Aggregation>,
    windows: Vec<Vec<WindowSize>>,
    allowed_lateness: Micros,
    data: UsageData,
}

/// The data of a [`UsageState`], as saved in a checkpoint.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct UsageData {
    partitions: FxHashMap<PartitionKey, Partition>,
    /// Partitions whose windows all became final and were written: dropped from memory.
    retired: BTreeSet<PartitionKey>,
}

impl UsageState {
    /// The data to save in a checkpoint.
    pub fn data(&self) -> &UsageData {
        &self.data
    }

    /// Replaces the data with a checkpoint's.
    pub fn restore(&mut self, data: UsageData) {
        self.data = data;
    }

    /// Empty state for meters with these aggregations and window sizes (by meter index).
    pub fn new(
        aggregations: Vec<Aggregation>,
        windows: Vec<Vec<WindowSize>>,
        allowed_lateness: Micros,
    ) -> Self {
        UsageState {
            aggregations,
            windows,
            allowed_lateness,
            data: UsageData::default(),
        }
    }

    /// Folds one reading into each window of its meter.
    pub fn apply(&mut self, u: &ReadingUpdate) {
        let aggregation = self.aggregations[u.meter as usize];
        for &size in &self.windows[u.meter as usize] {
            let start = size.start(u.timestamp);
            let p = partition_of(size, start);
            let part = self.data.partitions.entry(p).or_insert_with(|| {
                // Checked when a partition (re)appears, which is rare: one that left
                // memory as final must never take updates again.
                assert!(
                    !self.data.retired.contains(&p),
                    "an update for window {size:?} at {start} after it became final: lateness was not enforced"
                );
                Partition::default()
            });
            part.dirty = true;
            let key = WindowKey {
                customer: u.customer,
                meter: u.meter,
                dimensions: u.dimensions,
                size,
                start,
            };
            match part.windows.entry(key) {
                Entry::Occupied(mut o) => {
                    o.get_mut().apply(u.timestamp, &u.value, u.diff);
                    if o.get().is_empty() {
                        // The last window moves into this slot: rows from here on moved.
                        part.kept = part.kept.min(o.index());
                        o.swap_remove();
                    }
                }
                Entry::Vacant(v) => {
                    let mut state = WindowState::new(aggregation);
                    state.apply(u.timestamp, &u.value, u.diff);
                    if !state.is_empty() {
                        v.insert(state);
                    }
                }
            }
        }
    }

    /// Windows held in memory.
    pub fn len(&self) -> usize {
        self.data.partitions.values().map(|p| p.windows.len()).sum()
    }

    /// Whether no window is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The partitions to rewrite at a commit with this watermark, with their rows in file
    /// order (sorted by window key when none is kept from the last write): those that
    /// changed, and those with windows that became final since they were last written.
    /// A partition with no rows left is listed with none (its file is to be removed).
    /// Partitions whose windows are now all final, and in which no on-time event can
    /// open a new window, leave memory.
    pub fn take_partitions(
        &mut self,
        watermark: Option<Micros>,
    ) -> Vec<(PartitionKey, Vec<WindowRow>)> {
        self.take_writes(watermark, |_| false)
            .into_iter()
            .map(|(p, write)| match write {
                PartitionWrite::Rows { rows, .. } => (p, rows),
                PartitionWrite::AllFinal => unreachable!("no partition file is held"),
            })
            .collect()
    }

    /// Like [`UsageState::take_partitions`], but a partition that did not change since
    /// it was last written and whose windows are now all final comes as
    /// [`PartitionWrite::AllFinal`] when `has_file` says the caller holds that file:
    /// its rows are the file's, with `is_final` set, and need not be taken again.
    pub fn take_writes(
        &mut self,
        watermark: Option<Micros>,
        has_file: impl Fn(&PartitionKey) -> bool,
    ) -> Vec<(PartitionKey, PartitionWrite)> {
        let final_before = watermark.map(|w| w - self.allowed_lateness);
        let is_final = |key: &WindowKey| final_before.is_some_and(|f| key.size.end(key.start) <= f);
        let mut out = Vec::new();
        for (p, part) in &mut self.data.partitions {
            let became_final = part
                .first_open_end
                .zip(final_before)
                .is_some_and(|(end, f)| end <= f);
            if !part.dirty && !became_final {
                continue;
            }
            // Every window of the partition ends by its end: all final together.
            if !part.dirty && final_before.is_some_and(|f| partition_end(p) <= f) && has_file(p) {
                part.first_open_end = None;
                out.push((*p, PartitionWrite::AllFinal));
                continue;
            }
            if part.kept == 0 {
                part.windows.sort_unstable_keys();
            }
            let rows: Vec<WindowRow> = part
                .windows
                .iter()
                .map(|(key, state)| {
                    let (value, events) = state.value(self.aggregations[key.meter as usize]);
                    WindowRow {
                        key: *key,
                        value,
                        events,
                        is_final: is_final(key),
                    }
                })
                .collect();
            part.dirty = false;
            part.first_open_end = rows
                .iter()
                .filter(|r| !r.is_final)
                .map(|r| r.key.size.end(r.key.start))
                .min();
            let kept = std::mem::replace(&mut part.kept, rows.len());
            out.push((*p, PartitionWrite::Rows { rows, kept }));
        }
        out.sort_unstable_by_key(|(p, _)| *p);
        let done: Vec<PartitionKey> = self
            .data
            .partitions
            .iter()
            .filter(|(p, part)| {
                !part.dirty
                    && part.first_open_end.is_none()
                    && final_before.is_some_and(|f| partition_end(p) <= f)
            })
            .map(|(p, _)| *p)
            .collect();
        for p in done {
            if self
                .data
                .partitions
                .remove(&p)
                .is_some_and(|part| !part.windows.is_empty())
            {
                self.data.retired.insert(p);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use om_model::time::{HOUR, MINUTE};

    fn update(meter: u16, ts: Micros, value: UpdateValue, diff: i64) -> ReadingUpdate {
        ReadingUpdate {
            customer: 7,
            dimensions: 1,
            timestamp: ts,
            meter,
            diff,
            value,
        }
    }

    fn n(v: i64) -> UpdateValue {
        UpdateValue::Number(Decimal9::from_int(v))
    }

    fn state() -> UsageState {
        use Aggregation::*;
        let aggs = vec![Sum, Avg, Min, Max, UniqueCount, Latest, Count];
        let windows = vec![vec![WindowSize::Hour, WindowSize::Day]; aggs.len()];
        UsageState::new(aggs, windows, 2 * HOUR)
    }

    fn values(
        s: &mut UsageState,
        size: WindowSize,
        watermark: Option<Micros>,
    ) -> Vec<(u16, String, i64, bool)> {
        let mut out = Vec::new();
        for (_, rows) in s.take_partitions(watermark) {
            for r in rows {
                if r.key.size == size {
                    out.push((r.key.meter, r.value.to_string(), r.events, r.is_final));
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn a_window_state_fits_half_a_cache_line() {
        assert_eq!(size_of::<WindowState>(), 32);
    }

    #[test]
    fn every_aggregation_folds_and_retracts_exactly() {
        let mut s = state();
        for (ts, v) in [(10, 5), (20, 1), (30, 5)] {
            for m in [0, 1, 2, 3, 6] {
                s.apply(&update(m, ts, n(v), 1));
            }
            s.apply(&update(4, ts, UpdateValue::Scalar(v as u128), 1));
            s.apply(&update(
                5,
                ts,
                UpdateValue::Latest(Decimal9::from_int(v), format!("e{v}").into()),
                1,
            ));
        }
        let hour = values(&mut s, WindowSize::Hour, Some(100));
        let got: Vec<(u16, &str, i64)> = hour
            .iter()
            .map(|(m, v, e, _)| (*m, v.as_str(), *e))
            .collect();
        assert_eq!(
            got,
            vec![
                (0, "11.000000000", 3),
                (1, "3.666666667", 3),
                (2, "1.000000000", 3),
                (3, "5.000000000", 3),
                (4, "2.000000000", 3),
                (5, "5.000000000", 3),
                (6, "3.000000000", 3),
            ]
        );
        // Retract the event at ts 10 (value 5): min stays 1, max stays 5 (ts 30),
        // unique keeps both values, latest still the ts-30 event.
        for m in [0, 1, 2, 3, 6] {
            s.apply(&update(m, 10, n(5), -1));
        }
        s.apply(&update(4, 10, UpdateValue::Scalar(5), -1));
        s.apply(&update(
            5,
            10,
            UpdateValue::Latest(Decimal9::from_int(5), "e5".into()),
            -1,
        ));
        let hour = values(&mut s, WindowSize::Hour, Some(100));
        let got: Vec<(u16, &str, i64)> = hour
            .iter()
            .map(|(m, v, e, _)| (*m, v.as_str(), *e))
            .collect();
        assert_eq!(
            got,
            vec![
                (0, "6.000000000", 2),
                (1, "3.000000000", 2),
                (2, "1.000000000", 2),
                (3, "5.000000000", 2),
                (4, "2.000000000", 2),
                (5, "5.000000000", 2),
                (6, "2.000000000", 2),
            ]
        );
    }

    #[test]
    fn final_partitions_are_written_once_more_then_dropped() {
        let mut s = state();
        s.apply(&update(0, 10, n(5), 1));
        let parts = s.take_partitions(Some(10));
        assert_eq!(parts.len(), 2, "hour and day partitions");
        assert!(
            parts
                .iter()
                .all(|(_, rows)| rows.iter().all(|r| !r.is_final))
        );
        // Nothing changed, nothing became final: nothing to write.
        assert!(s.take_partitions(Some(HOUR)).is_empty());
        // The hour window ends at 1h; final once the watermark passes 1h + 2h lateness.
        let parts = s.take_partitions(Some(3 * HOUR));
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].0, (WindowSize::Hour, 0));
        assert!(parts[0].1[0].is_final);
        assert_eq!(
            s.len(),
            1,
            "the final hour window left memory; the day window stays"
        );
        assert!(s.take_partitions(Some(4 * HOUR)).is_empty());
        // A new hour fills a new partition; the day partition is rewritten with it.
        s.apply(&update(0, 4 * HOUR, n(1), 1));
        let parts = s.take_partitions(Some(4 * HOUR));
        let day = &parts
            .iter()
            .find(|(p, _)| p.0 == WindowSize::Day)
            .unwrap()
            .1;
        assert_eq!(day[0].events, 2);
    }

    #[test]
    fn an_unchanged_partition_that_became_final_reuses_its_file() {
        let mut s = UsageState::new(vec![Aggregation::Sum], vec![vec![WindowSize::Minute]], HOUR);
        s.apply(&update(0, 0, n(1), 1));
        s.apply(&update(0, 59 * MINUTE, n(1), 1));
        assert!(matches!(
            &s.take_writes(Some(10), |_| true)[..],
            [(_, PartitionWrite::Rows { rows, kept: 0 })] if rows.len() == 2
        ));
        // The 00:00 minute is final, 00:59 not yet: rows, whatever the caller holds.
        assert!(matches!(
            &s.take_writes(Some(HOUR + 2 * MINUTE), |_| true)[..],
            [(_, PartitionWrite::Rows { rows, kept: 2 })] if rows[0].is_final && !rows[1].is_final
        ));
        // Both final, nothing else changed: the held file with `is_final` set.
        assert_eq!(
            s.take_writes(Some(2 * HOUR), |_| true),
            [((WindowSize::Minute, 0), PartitionWrite::AllFinal)]
        );
        assert!(s.is_empty(), "final and closed: left memory");

        // Without the file, the rows; and a change since the last write means rows too.
        for (has_file, change) in [(false, false), (true, true)] {
            let mut s =
                UsageState::new(vec![Aggregation::Sum], vec![vec![WindowSize::Minute]], HOUR);
            s.apply(&update(0, 0, n(1), 1));
            s.take_writes(Some(10), |_| true);
            if change {
                s.apply(&update(0, 30 * MINUTE, n(1), 1));
            }
            match &s.take_writes(Some(2 * HOUR), |_| has_file)[..] {
                [(_, PartitionWrite::Rows { rows, .. })] => {
                    assert!(rows.iter().all(|r| r.is_final));
                    assert_eq!(rows.len(), 1 + change as usize);
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn a_partition_stays_while_an_on_time_event_can_still_open_a_window_in_it() {
        let mut s = UsageState::new(vec![Aggregation::Sum], vec![vec![WindowSize::Minute]], HOUR);
        s.apply(&update(0, 0, n(1), 1));
        // The 00:00 minute is final at 01:01, but 00:59 can still take events until 02:00.
        let parts = s.take_partitions(Some(HOUR + 2 * MINUTE));
        assert!(parts[0].1[0].is_final);
        s.apply(&update(0, 59 * MINUTE, n(1), 1));
        let parts = s.take_partitions(Some(HOUR + 3 * MINUTE));
        assert_eq!(
            parts[0].1.len(),
            2,
            "both minutes in the rewritten partition"
        );
        assert!(
            s.take_partitions(Some(2 * HOUR))
                .iter()
                .all(|(_, rows)| rows.len() == 2)
        );
        assert!(s.is_empty(), "final and closed: left memory");
    }

    /// The customers of a partition's rows, in file order, and how many were kept.
    fn order(write: &PartitionWrite) -> (Vec<u64>, usize) {
        match write {
            PartitionWrite::Rows { rows, kept } => {
                (rows.iter().map(|r| r.key.customer).collect(), *kept)
            }
            PartitionWrite::AllFinal => panic!("rows expected"),
        }
    }

    fn of(customer: u64) -> ReadingUpdate {
        ReadingUpdate {
            customer,
            ..update(0, 10, n(1), 1)
        }
    }

    #[test]
    fn new_windows_follow_the_rows_already_written() {
        let mut s = UsageState::new(vec![Aggregation::Sum], vec![vec![WindowSize::Hour]], HOUR);
        for c in [5, 3, 9] {
            s.apply(&of(c));
        }
        // First write: sorted, nothing kept.
        assert_eq!(
            order(&s.take_writes(Some(0), |_| true)[0].1),
            (vec![3, 5, 9], 0)
        );
        // New windows go after the written ones, whatever their keys; an update to a
        // written window leaves it in place.
        for c in [1, 7, 5] {
            s.apply(&of(c));
        }
        assert_eq!(
            order(&s.take_writes(Some(0), |_| true)[0].1),
            (vec![3, 5, 9, 1, 7], 3)
        );
        // Emptying the window in slot 1 moves the last one there: one row kept.
        s.apply(&ReadingUpdate { diff: -1, ..of(5) });
        s.apply(&ReadingUpdate { diff: -1, ..of(5) });
        assert_eq!(
            order(&s.take_writes(Some(0), |_| true)[0].1),
            (vec![3, 7, 9, 1], 1)
        );
        // Emptying slot 0 leaves nothing kept, and the partition is written sorted.
        s.apply(&ReadingUpdate { diff: -1, ..of(3) });
        assert_eq!(
            order(&s.take_writes(Some(0), |_| true)[0].1),
            (vec![1, 7, 9], 0)
        );
    }

    #[test]
    fn a_checkpoint_keeps_the_order_but_no_kept_rows() {
        let mut s = UsageState::new(vec![Aggregation::Sum], vec![vec![WindowSize::Hour]], HOUR);
        for c in [5, 3] {
            s.apply(&of(c));
        }
        s.take_writes(Some(0), |_| true);
        s.apply(&of(1));
        let saved = bincode::serialize(s.data()).unwrap();
        let mut restored =
            UsageState::new(vec![Aggregation::Sum], vec![vec![WindowSize::Hour]], HOUR);
        restored.restore(bincode::deserialize(&saved).unwrap());
        // The resumed job holds no file: its first write keeps nothing (and sorts).
        assert_eq!(
            order(&restored.take_writes(Some(0), |_| true)[0].1),
            (vec![1, 3, 5], 0)
        );
        // The original keeps its two written rows.
        assert_eq!(
            order(&s.take_writes(Some(0), |_| true)[0].1),
            (vec![3, 5, 1], 2)
        );
    }

    #[test]
    fn a_window_emptied_by_retraction_disappears() {
        let mut s = state();
        s.apply(&update(0, 10, n(5), 1));
        s.apply(&update(0, 10, n(5), -1));
        assert!(s.is_empty());
        let parts = s.take_partitions(Some(10));
        assert_eq!(parts.len(), 2);
        assert!(parts.iter().all(|(_, rows)| rows.is_empty()));
    }
}
