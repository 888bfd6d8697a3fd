//! Meter series: the hourly usage of every (customer, meter) of a summable meter (sum or
//! count), all dimension groups together, with its monthly totals. It feeds three views
//! on the customer's owner worker:
//! - `anomaly_scores` ([`crate::anomaly`]): every hour with usage, scored against the
//!   24 hours before it;
//! - `forecasts` ([`crate::forecast`]): month to date and the trailing 7 days;
//! - `entitlements`: a metered feature's usage this month.
//!
//! Readers add each accepted event's reading to its hour (pre-summed per epoch), a
//! retraction subtracts it; an hour or month that sums to zero is removed, so the state
//! equals a recomputation from `usage_windows` whatever the arrival order.
//!
//! Anomaly rows are kept by UTC day of the hour: a change to hour g changes the scores
//! of hours g..=g+24h, so it marks their days for rewriting. A day is final once all its
//! hours are older than the hour holding (watermark - allowed_lateness): no accepted
//! event or retraction can reach its hours or their baselines any more. Hours are kept
//! while a non-final day's baseline or the trailing 7 days may need them, months while
//! they hold a kept hour.

use crate::anomaly::{self, BASELINE_HOURS};
use om_model::config::AnomalySettings;
use om_model::time::{DAY, HOUR};
use om_model::views::{AnomalyRow, ForecastRow};
use om_model::{Decimal9, Micros, WindowSize};
use rustc_hash::FxHashMap;
use std::collections::{BTreeMap, BTreeSet};

/// The trailing window of forecasts, in hours.
pub const TRAILING_HOURS: i64 = 7 * 24;

/// One (customer, meter, hour)'s usage change, summed over an epoch's events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HourUpdate {
    /// Fingerprint of (tenant, customer): the routing key.
    pub customer: u64,
    /// Index into `Config::meters`.
    pub meter: u16,
    /// Start of the hour.
    pub hour: Micros,
    /// Usage added (negative: retracted).
    pub value: Decimal9,
    /// Events added (negative: retracted).
    pub events: i64,
}

/// Usage and event count of an hour or a month.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Usage {
    /// Summed usage.
    pub value: Decimal9,
    /// Events behind it.
    pub events: i64,
}

/// Usage by instant (an hour's or a month's start), sorted, only instants with events.
/// A sorted vector rather than a tree: updates come mostly in time order (a push or an
/// add to the last entry), and the views read contiguous ranges.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Timeline(Vec<(Micros, Usage)>);

impl Timeline {
    /// Adds an update at `at`, dropping the entry when its events come back to 0.
    fn add(&mut self, at: Micros, u: &HourUpdate) {
        let i = match self.0.last() {
            Some((last, _)) if *last < at => self.0.len(),
            Some((last, _)) if *last == at => self.0.len() - 1,
            _ => self.0.partition_point(|(t, _)| *t < at),
        };
        if self.0.get(i).is_none_or(|(t, _)| *t != at) {
            self.0.insert(i, (at, Usage::default()));
        }
        let slot = &mut self.0[i].1;
        slot.value += u.value;
        slot.events += u.events;
        if slot.events == 0 {
            self.0.remove(i);
        }
    }

    /// The entry at `at`.
    pub fn get(&self, at: Micros) -> Option<&Usage> {
        let i = self.0.partition_point(|(t, _)| *t < at);
        self.0.get(i).filter(|(t, _)| *t == at).map(|(_, u)| u)
    }

    /// The entries in `[from, to)`.
    pub fn range(&self, from: Micros, to: Micros) -> &[(Micros, Usage)] {
        let a = self.0.partition_point(|(t, _)| *t < from);
        let b = self.0.partition_point(|(t, _)| *t < to);
        &self.0[a..b.max(a)]
    }

    /// Drops the entries before `from`.
    fn forget_before(&mut self, from: Micros) {
        let n = self.0.partition_point(|(t, _)| *t < from);
        self.0.drain(..n);
    }

    /// True when no entry is left.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// One (customer, meter)'s usage.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Series {
    /// Usage per hour start.
    pub hours: Timeline,
    /// Usage per month start.
    pub months: Timeline,
}

/// The series of the customers a worker owns.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct MeterSeries {
    series: FxHashMap<(u64, u16), Series>,
    /// Days whose anomaly rows changed since they were last taken.
    dirty_days: BTreeSet<Micros>,
    /// Anything changed since [`MeterSeries::take_changed`].
    changed: bool,
    /// The first hour kept by the last [`MeterSeries::forget`]: until it moves, another
    /// walk over every series would drop nothing.
    #[serde(skip)]
    kept_from: Option<Micros>,
}

/// Names of the rows' customers and meters.
pub struct RowNames<'a> {
    /// Customer fingerprint -> (tenant, customer).
    pub customers: &'a BTreeMap<u64, (String, String)>,
    /// Meter names by index.
    pub meters: &'a [String],
}

impl<'a> RowNames<'a> {
    fn get(&self, customer: u64, meter: u16) -> Option<(&'a str, &'a str, &'a str)> {
        let (t, c) = self.customers.get(&customer)?;
        Some((t, c, self.meters.get(meter as usize)?))
    }
}

/// The first hour whose score may still change at `closed` (the watermark every input
/// has passed): the hour holding `closed - lateness`.
fn first_open_hour(closed: Option<Micros>, lateness: Micros) -> Micros {
    closed.map_or(Micros::MIN, |w| {
        WindowSize::Hour.start(w.saturating_sub(lateness))
    })
}

impl MeterSeries {
    /// Adds one update.
    pub fn apply(&mut self, u: &HourUpdate) {
        if u.value == Decimal9::ZERO && u.events == 0 {
            return;
        }
        let s = self.series.entry((u.customer, u.meter)).or_default();
        s.hours.add(u.hour, u);
        s.months.add(WindowSize::Month.start(u.hour), u);
        if s.hours.is_empty() && s.months.is_empty() {
            self.series.remove(&(u.customer, u.meter));
        }
        self.dirty_days.insert(WindowSize::Day.start(u.hour));
        self.dirty_days
            .insert(WindowSize::Day.start(u.hour + BASELINE_HOURS as i64 * HOUR));
        self.changed = true;
    }

    /// Whether anything changed since the last call, and resets it.
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// A (customer, meter)'s usage in the month starting at `month`.
    pub fn month_usage(&self, customer: u64, meter: u16, month: Micros) -> Decimal9 {
        self.series
            .get(&(customer, meter))
            .and_then(|s| s.months.get(month))
            .map_or(Decimal9::ZERO, |m| m.value)
    }

    /// The anomaly rows of every day that changed since the last call, by day start
    /// (a day with no rows left comes with none, so its file is removed); then forgets
    /// what no open day needs any more.
    pub fn take_anomaly_days<'a>(
        &mut self,
        closed: Option<Micros>,
        latest: Option<Micros>,
        lateness: Micros,
        settings: &AnomalySettings,
        names: &RowNames<'a>,
    ) -> Vec<(Micros, Vec<AnomalyRow<'a>>)> {
        let days = std::mem::take(&mut self.dirty_days);
        let out = days
            .into_iter()
            .map(|day| (day, self.anomaly_rows(day, settings, names)))
            .collect();
        self.forget(closed, latest, lateness);
        out
    }

    /// Every anomaly row of the hours of one day, in (customer, meter, hour) order.
    pub fn anomaly_rows<'a>(
        &self,
        day: Micros,
        settings: &AnomalySettings,
        names: &RowNames<'a>,
    ) -> Vec<AnomalyRow<'a>> {
        let mut rows = Vec::new();
        let from = day - BASELINE_HOURS as i64 * HOUR;
        for (&(customer, meter), s) in &self.series {
            if s.hours.range(day, day + DAY).is_empty() {
                continue;
            }
            let Some((tenant_id, customer_id, meter_name)) = names.get(customer, meter) else {
                continue;
            };
            // The day and the 24 hours before it, densely, missing hours as 0.
            let mut dense = [Decimal9::ZERO; 48];
            let mut has_events = [false; 48];
            for (h, u) in s.hours.range(from, day + DAY) {
                let i = ((h - from) / HOUR) as usize;
                dense[i] = u.value;
                has_events[i] = true;
            }
            for i in BASELINE_HOURS..48 {
                let x = dense[i];
                if !has_events[i] {
                    continue;
                }
                let baseline: &[Decimal9; BASELINE_HOURS] =
                    dense[i - BASELINE_HOURS..i].try_into().expect("24 hours");
                let sc = anomaly::score(x, baseline, settings);
                rows.push(AnomalyRow {
                    tenant_id,
                    customer_id,
                    meter: meter_name,
                    window_start: from + i as i64 * HOUR,
                    value: x,
                    baseline_mean: sc.mean,
                    baseline_std: sc.std,
                    score: sc.score,
                    flagged: sc.flagged,
                });
            }
        }
        rows
    }

    /// The forecast of every (customer, meter) with usage this month or in the
    /// trailing 7 days, as of `now` (the watermark).
    pub fn forecast_rows<'a>(&self, now: Micros, names: &RowNames<'a>) -> Vec<ForecastRow<'a>> {
        let month = WindowSize::Month.start(now);
        let last_hour = WindowSize::Hour.start(now);
        let first_hour = last_hour - (TRAILING_HOURS - 1) * HOUR;
        let mut rows = Vec::new();
        for (&(customer, meter), s) in &self.series {
            let to_date = s.months.get(month).copied().unwrap_or_default();
            let mut trailing = Usage::default();
            for (_, u) in s.hours.range(first_hour, last_hour + HOUR) {
                trailing.value += u.value;
                trailing.events += u.events;
            }
            if to_date.events == 0 && trailing.events == 0 {
                continue;
            }
            let (to_date, trailing) = (to_date.value, trailing.value);
            let Some((tenant_id, customer_id, meter_name)) = names.get(customer, meter) else {
                continue;
            };
            let f = crate::forecast::forecast(to_date, trailing, now);
            rows.push(ForecastRow {
                tenant_id,
                customer_id,
                meter: meter_name,
                month,
                as_of: now,
                usage_to_date: to_date,
                trailing_7d: trailing,
                daily_rate: f.daily_rate,
                forecast: f.forecast,
            });
        }
        rows
    }

    /// The first hour kept at a commit with these watermarks: the baseline (24 hours)
    /// of the first day that is not final, or the trailing 7 days (and an hour) of
    /// `latest`, whichever is earlier; none before the first event.
    pub fn keep_from(
        closed: Option<Micros>,
        latest: Option<Micros>,
        lateness: Micros,
    ) -> Option<Micros> {
        let (Some(_), Some(latest)) = (closed, latest) else {
            return None;
        };
        let first_open_day = WindowSize::Day.start(first_open_hour(closed, lateness));
        Some(
            (first_open_day - BASELINE_HOURS as i64 * HOUR)
                .min(WindowSize::Hour.start(latest) - TRAILING_HOURS * HOUR),
        )
    }

    /// Drops the hours no open day's scores and no trailing window need, and the months
    /// before the first kept hour.
    pub(crate) fn forget(
        &mut self,
        closed: Option<Micros>,
        latest: Option<Micros>,
        lateness: Micros,
    ) {
        let Some(keep_from) = Self::keep_from(closed, latest, lateness) else {
            return;
        };
        // No input reaches before `keep_from` (it is behind the lateness), so nothing
        // new is there to drop until it moves.
        if self.kept_from == Some(keep_from) {
            return;
        }
        self.kept_from = Some(keep_from);
        let keep_month = WindowSize::Month.start(keep_from);
        self.series.retain(|_, s| {
            s.hours.forget_before(keep_from);
            s.months.forget_before(keep_month);
            !s.hours.is_empty() || !s.months.is_empty()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(hour: Micros, value: i64, events: i64) -> HourUpdate {
        HourUpdate {
            customer: 1,
            meter: 0,
            hour,
            value: Decimal9::from_int(value),
            events,
        }
    }

    #[test]
    fn timeline_keeps_order_and_drops_retracted_instants() {
        let mut t = Timeline::default();
        for (at, v) in [(30, 3), (10, 1), (30, 4), (20, 2), (40, 5)] {
            t.add(at, &update(at, v, 1));
        }
        let keys: Vec<Micros> = t.range(0, 100).iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, [10, 20, 30, 40]);
        assert_eq!(t.get(30).unwrap().value, Decimal9::from_int(7));
        assert_eq!(t.range(20, 40).len(), 2);
        assert!(t.range(41, 50).is_empty() && t.range(50, 10).is_empty());
        t.add(20, &update(20, -2, -1));
        assert_eq!(t.get(20), None, "retracted to no events");
        t.forget_before(35);
        assert_eq!(t.range(0, 100).len(), 1);
    }

    #[test]
    fn month_usage_sums_hours_and_retractions() {
        let mut m = MeterSeries::default();
        let h = WindowSize::Month.start(1_000 * DAY) + 5 * HOUR;
        m.apply(&update(h, 7, 2));
        m.apply(&update(h + HOUR, 5, 1));
        m.apply(&update(h, -3, -1));
        assert_eq!(
            m.month_usage(1, 0, WindowSize::Month.start(h)),
            Decimal9::from_int(9)
        );
        assert_eq!(
            m.month_usage(1, 1, WindowSize::Month.start(h)),
            Decimal9::ZERO
        );
    }
}
