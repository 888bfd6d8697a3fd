//! Windowed usage: accepted events -> per-window aggregates, for all seven aggregations
//! over minute/hour/day/month windows with group-by dimensions (DESIGN.md section 3).
//!
//! Two differential collections carry the updates of one epoch, pre-aggregated on the
//! worker that read the events:
//! - additive meters (sum, count, avg) as `(WindowKey, ())` with the [`SumCount`] diff, a
//!   commutative group: an out-of-order event simply adds to its window, a retraction
//!   subtracts; the usage sink accumulates the consolidated updates per window;
//! - order-based meters (min, max, unique_count, latest) as `(WindowKey, WindowValue)`
//!   multiset updates, reduced by [`window_values`] into one `(value, events)` per window.
//!   Differential's `reduce` keeps the multiset, so a late smaller value lowers a min.

use differential_dataflow::VecCollection;
use differential_dataflow::difference::{Abelian, IsZero, Monoid, Semigroup};
use om_model::{
    Aggregation, Config, Decimal9, DecodedEvent, Micros, ReadingValue, WindowKey, WindowSize,
};
use rustc_hash::FxHashMap;

/// Running sum and count of a window: the difference type of additive meters.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct SumCount {
    /// Sum of values.
    pub sum: Decimal9,
    /// Number of events.
    pub count: i64,
}

impl IsZero for SumCount {
    fn is_zero(&self) -> bool {
        self.count == 0 && self.sum == Decimal9::ZERO
    }
}

impl Semigroup for SumCount {
    fn plus_equals(&mut self, rhs: &Self) {
        self.sum += rhs.sum;
        self.count += rhs.count;
    }
}

impl Monoid for SumCount {
    fn zero() -> Self {
        SumCount::default()
    }
}

impl Abelian for SumCount {
    fn negate(&mut self) {
        self.sum = -self.sum;
        self.count = -self.count;
    }
}

impl SumCount {
    /// The window's value for an additive aggregation.
    pub fn value(&self, aggregation: Aggregation) -> Decimal9 {
        aggregation.additive_value(self.sum, self.count)
    }
}

/// One event's contribution to an order-based window, ordered so that `reduce` sees the
/// smallest value first and, for `latest`, the greatest (timestamp, id) last.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum WindowValue {
    /// min / max.
    Number(Decimal9),
    /// unique_count: canonical scalar text.
    Scalar(String),
    /// latest: (timestamp, id, value).
    Latest(Micros, String, Decimal9),
}

/// One epoch's window updates from one worker.
#[derive(Debug, Default)]
pub struct UsageUpdates {
    /// Additive meters: sum/count deltas per window.
    pub additive: Vec<(WindowKey, SumCount)>,
    /// Order-based meters: value multiplicity deltas per window.
    pub values: Vec<((WindowKey, WindowValue), isize)>,
}

/// A window key borrowing its strings from the events of the epoch.
type BorrowedKey<'a> = (&'a str, &'a str, u16, &'a str, WindowSize, Micros);

fn owned((tenant, customer, meter, dims, size, start): BorrowedKey<'_>) -> WindowKey {
    WindowKey {
        tenant_id: tenant.to_string(),
        customer_id: customer.to_string(),
        meter,
        dimensions: dims.to_string(),
        size,
        start,
    }
}

/// Folds accepted events into window updates; `sign` is +1 to add them, -1 to retract.
/// Keys borrow from the events while folding, so strings are copied once per distinct
/// window, not once per event.
pub fn pre_aggregate<'a>(
    events: impl IntoIterator<Item = &'a DecodedEvent>,
    config: &Config,
    sign: i64,
) -> UsageUpdates {
    let mut additive: FxHashMap<BorrowedKey<'a>, SumCount> = FxHashMap::default();
    let mut values: FxHashMap<(BorrowedKey<'a>, WindowValue), isize> = FxHashMap::default();
    for decoded in events {
        let e = &decoded.event;
        for r in &decoded.readings {
            let meter = &config.meters[r.meter as usize];
            for &size in &meter.windows {
                let key = (
                    e.tenant_id.as_str(),
                    e.customer_id.as_str(),
                    r.meter,
                    r.dimensions.as_str(),
                    size,
                    size.start(e.timestamp),
                );
                if meter.aggregation.is_additive() {
                    let v = match &r.value {
                        ReadingValue::Number(v) => *v,
                        ReadingValue::Scalar(_) => Decimal9::ZERO,
                    };
                    let v = if sign < 0 { -v } else { v };
                    additive.entry(key).or_default().plus_equals(&SumCount {
                        sum: v,
                        count: sign,
                    });
                } else {
                    let value = match (&r.value, meter.aggregation) {
                        (ReadingValue::Number(v), Aggregation::Latest) => {
                            WindowValue::Latest(e.timestamp, e.id.clone(), *v)
                        }
                        (ReadingValue::Number(v), _) => WindowValue::Number(*v),
                        (ReadingValue::Scalar(s), _) => WindowValue::Scalar(s.clone()),
                    };
                    *values.entry((key, value)).or_default() += sign as isize;
                }
            }
        }
    }
    UsageUpdates {
        additive: additive
            .into_iter()
            .filter(|(_, d)| !d.is_zero())
            .map(|(k, d)| (owned(k), d))
            .collect(),
        values: values
            .into_iter()
            .filter(|(_, d)| *d != 0)
            .map(|((k, v), d)| ((owned(k), v), d))
            .collect(),
    }
}

/// The value and event count of one order-based window from its value multiset
/// (sorted ascending, with positive multiplicities).
pub fn fold_values(aggregation: Aggregation, input: &[(&WindowValue, isize)]) -> (Decimal9, i64) {
    let events: i64 = input.iter().map(|(_, n)| *n as i64).sum();
    let number = |v: &WindowValue| match v {
        WindowValue::Number(d) | WindowValue::Latest(_, _, d) => *d,
        WindowValue::Scalar(_) => Decimal9::ZERO,
    };
    let value = match aggregation {
        Aggregation::Min => number(input[0].0),
        Aggregation::UniqueCount => Decimal9::from_int(input.len() as i64),
        _ => number(input[input.len() - 1].0),
    };
    (value, events)
}

/// Reduces order-based window updates to one `(value, events)` row per window.
/// `aggregations[m]` is the aggregation of meter `m`.
pub fn window_values<'s>(
    values: VecCollection<'s, u64, (WindowKey, WindowValue), isize>,
    aggregations: Vec<Aggregation>,
) -> VecCollection<'s, u64, (WindowKey, (Decimal9, i64)), isize> {
    values.reduce_named("OM: WindowValues", move |key: &WindowKey, input, output| {
        output.push((fold_values(aggregations[key.meter as usize], input), 1));
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use om_model::{Event, Reading, WindowSize};

    fn config() -> Config {
        Config::from_toml(
            r#"
[[meters]]
name = "tokens"
event_type = "gen"
aggregation = "sum"
value = "$.properties.n"
windows = ["hour", "day"]
[[meters]]
name = "low"
event_type = "gen"
aggregation = "min"
value = "$.properties.n"
windows = ["hour"]
"#,
        )
        .unwrap()
    }

    fn event(id: &str, ts: Micros, n: i64) -> DecodedEvent {
        let value = ReadingValue::Number(Decimal9::from_int(n));
        DecodedEvent {
            event: Event {
                tenant_id: "t".into(),
                id: id.into(),
                customer_id: "c".into(),
                event_type: "gen".into(),
                timestamp: ts,
                value: Decimal9::ONE,
                properties: None,
            },
            readings: vec![
                Reading {
                    meter: 0,
                    dimensions: "{}".into(),
                    value: value.clone(),
                },
                Reading {
                    meter: 1,
                    dimensions: "{}".into(),
                    value,
                },
            ],
        }
    }

    #[test]
    fn pre_aggregation_sums_within_windows() {
        let h = om_model::time::HOUR;
        let events = [event("a", 10, 5), event("b", 20, 7), event("c", h + 1, 1)];
        let u = pre_aggregate(&events, &config(), 1);
        let hour0 = u
            .additive
            .iter()
            .find(|(k, _)| k.size == WindowSize::Hour && k.start == 0)
            .unwrap();
        assert_eq!(
            hour0.1,
            SumCount {
                sum: Decimal9::from_int(12),
                count: 2
            }
        );
        let day = u
            .additive
            .iter()
            .find(|(k, _)| k.size == WindowSize::Day)
            .unwrap();
        assert_eq!(day.1.count, 3);
        assert_eq!(u.values.len(), 3);
        let retract = pre_aggregate(&events[..1], &config(), -1);
        assert!(retract.additive.iter().all(|(_, d)| d.count == -1));
    }

    #[test]
    fn folds_each_order_based_aggregation() {
        let (a, b, c) = (
            WindowValue::Number(Decimal9::from_int(1)),
            WindowValue::Number(Decimal9::from_int(5)),
            WindowValue::Latest(9, "z".into(), Decimal9::from_int(3)),
        );
        let input = [(&a, 2), (&b, 1)];
        assert_eq!(
            fold_values(Aggregation::Min, &input),
            (Decimal9::from_int(1), 3)
        );
        assert_eq!(
            fold_values(Aggregation::Max, &input),
            (Decimal9::from_int(5), 3)
        );
        assert_eq!(
            fold_values(Aggregation::UniqueCount, &input),
            (Decimal9::from_int(2), 3)
        );
        assert_eq!(
            fold_values(Aggregation::Latest, &[(&c, 1)]),
            (Decimal9::from_int(3), 1)
        );
        let avg = SumCount {
            sum: Decimal9::from_int(10),
            count: 3,
        };
        assert_eq!(avg.value(Aggregation::Avg).to_string(), "3.333333333");
    }
}
