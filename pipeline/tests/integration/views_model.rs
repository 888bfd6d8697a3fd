//! Property test: `anomaly_scores` and `forecasts` equal a naive recomputation from the
//! `usage_windows` of the same run, whatever the arrival order (events shuffled, some
//! beyond the lateness bound), the epoch size, the commit cadence and the worker count,
//! and with retractions.
//!
//! The naive side sums the hour and month windows over their dimension groups, takes
//! for every hour with events the 24 hours before it (missing = 0), and for the
//! watermark W (the greatest accepted event time) the month holding W and the 168 hour
//! windows up to W's; the arithmetic on those numbers is `om_operators::anomaly::score`
//! and `om_operators::forecast::forecast`, checked by hand in their unit tests. What is
//! under test here is the incremental part: which hours and months the views see, their
//! day partitions, what they forget, and corrections by late events and retractions.

use om_model::config::AnomalySettings;
use om_model::time::{HOUR, MINUTE, format_micros, parse_rfc3339};
use om_model::{Config, Decimal9, Micros, WindowSize};
use om_operators::{anomaly, forecast};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

const CONFIG: &str = r#"
[[meters]]
name = "tokens"
event_type = "gen"
aggregation = "sum"
value = "$.properties.n"
group_by = { model = "$.properties.model" }
windows = ["hour", "month"]
[[meters]]
name = "calls"
event_type = "gen"
aggregation = "count"
windows = ["hour", "month"]
[anomaly]
threshold = "2"
min_value = "5"
[pipeline]
allowed_lateness = "6h"
dedup_horizon = "1d"
"#;

fn base() -> Micros {
    parse_rfc3339("2026-03-24T00:00:00Z").unwrap()
}

#[derive(Clone, Debug)]
struct Input {
    /// Event lines in arrival order.
    events: Vec<String>,
    /// Retract commands.
    commands: Vec<String>,
}

fn input() -> impl Strategy<Value = Input> {
    (
        prop::collection::vec(
            (0u8..3, 0u32..40, 0u16..100, any::<bool>(), -300i64..300),
            1..160,
        ),
        prop::collection::vec(0usize..1000, 0..40),
        prop::collection::vec(0usize..1000, 0..4),
    )
        .prop_map(|(specs, swaps, retracts)| {
            let mut events: Vec<String> = specs
                .iter()
                .enumerate()
                .map(|(i, &(customer, n, frac, big, jitter))| {
                    // Spread over ~11 days, across the end of March.
                    let ts = base() + (i as i64 * 97 + jitter) * MINUTE;
                    format!(
                        r#"{{"id":"e{i}","tenant_id":"t","customer_id":"c{customer}","event_type":"gen","timestamp":"{}","properties":{{"n":{n}.{frac:02},"model":"{}"}}}}"#,
                        format_micros(ts),
                        if big { "big" } else { "small" }
                    )
                })
                .collect();
            // Arrival order: swaps of nearby and far events (far ones end up late).
            let len = events.len();
            for (k, s) in swaps.iter().enumerate() {
                let a = s % len;
                let b = if k % 4 == 0 { (a * 7 + 3) % len } else { (a + 1 + s % 5).min(len - 1) };
                events.swap(a, b);
            }
            let commands = retracts
                .iter()
                .map(|r| {
                    format!(
                        r#"{{"kind":"retract_event","tenant_id":"t","event_id":"e{}"}}"#,
                        r % len
                    )
                })
                .collect();
            Input { events, commands }
        })
}

/// (customer, meter, hour start or month start) -> (value, events), over dimensions.
type Windows = BTreeMap<(String, String, Micros), (Decimal9, i64)>;

fn windows(data: &str, size: &str) -> Windows {
    let mut out = Windows::new();
    let sql = format!(
        "SELECT customer_id, meter, CAST(to_unixtime(window_start) AS BIGINT), \
         CAST(value AS VARCHAR), events FROM usage_windows WHERE window_size = '{size}'"
    );
    for r in super::common::query_in_process(data, &sql) {
        let key = (
            r[0].clone(),
            r[1].clone(),
            r[2].parse::<i64>().unwrap() * 1_000_000,
        );
        let slot = out.entry(key).or_insert((Decimal9::ZERO, 0));
        slot.0 += Decimal9::parse(&r[3]).unwrap();
        slot.1 += r[4].parse::<i64>().unwrap();
    }
    out
}

/// Naive anomaly rows: (customer, meter, hour, value, mean, std, score, flagged).
fn naive_anomaly(hours: &Windows, s: &AnomalySettings) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for ((c, m, h), (x, _)) in hours {
        let baseline: [Decimal9; 24] = std::array::from_fn(|i| {
            let at = h - (24 - i as i64) * HOUR;
            hours
                .get(&(c.clone(), m.clone(), at))
                .map_or(Decimal9::ZERO, |v| v.0)
        });
        let sc = anomaly::score(*x, &baseline, s);
        out.insert(format!(
            "{c} {m} {h} {x} {} {} {:?} {}",
            sc.mean, sc.std, sc.score, sc.flagged
        ));
    }
    out
}

/// Naive forecasts at the watermark `w`.
fn naive_forecasts(hours: &Windows, months: &Windows, w: Micros) -> BTreeSet<String> {
    let month = WindowSize::Month.start(w);
    let last = WindowSize::Hour.start(w);
    let first = last - 167 * HOUR;
    let series: BTreeSet<(String, String)> = hours
        .keys()
        .chain(months.keys())
        .map(|(c, m, _)| (c.clone(), m.clone()))
        .collect();
    let mut out = BTreeSet::new();
    for (c, m) in series {
        let (to_date, month_events) = months
            .get(&(c.clone(), m.clone(), month))
            .copied()
            .unwrap_or((Decimal9::ZERO, 0));
        let mut trailing = Decimal9::ZERO;
        let mut trailing_events = 0;
        for ((hc, hm, h), (v, e)) in hours {
            if *hc == c && *hm == m && (first..=last).contains(h) {
                trailing += *v;
                trailing_events += e;
            }
        }
        if month_events == 0 && trailing_events == 0 {
            continue;
        }
        let f = forecast::forecast(to_date, trailing, w);
        out.insert(format!(
            "{c} {m} {month} {w} {to_date} {trailing} {} {:?}",
            f.daily_rate, f.forecast
        ));
    }
    out
}

fn check(input: &Input, workers: usize, epoch_bytes: u64, commit_every: u64) {
    let config = Config::from_toml(CONFIG).unwrap();
    let data = super::common::run_lines(super::common::LinesRun {
        config: CONFIG,
        events: &input.events,
        commands: &input.commands,
        workers,
        epoch_bytes,
        commit_every,
    });
    let rows = |sql: &str| super::common::query_in_process(&data, sql);
    let hours = windows(&data, "hour");
    let months = windows(&data, "month");
    let d = |s: &str| Decimal9::parse(s).unwrap();
    let opt = |s: &str| if s.is_empty() { None } else { Some(d(s)) };

    let got_anomaly: BTreeSet<String> = rows(
        "SELECT customer_id, meter, CAST(to_unixtime(window_start) AS BIGINT), CAST(value AS VARCHAR), \
         CAST(baseline_mean AS VARCHAR), CAST(baseline_std AS VARCHAR), CAST(score AS VARCHAR), flagged \
         FROM anomaly_scores",
    )
    .into_iter()
    .map(|r| {
        format!(
            "{} {} {} {} {} {} {:?} {}",
            r[0],
            r[1],
            r[2].parse::<i64>().unwrap() * 1_000_000,
            d(&r[3]),
            d(&r[4]),
            d(&r[5]),
            opt(&r[6]),
            r[7]
        )
    })
    .collect();
    assert_eq!(
        got_anomaly,
        naive_anomaly(&hours, &config.anomaly),
        "anomaly_scores"
    );
    assert!(
        rows("SELECT count(*) FROM anomaly_scores")[0][0] == got_anomaly.len().to_string(),
        "one row per (customer, meter, hour)"
    );

    let w = rows("SELECT CAST(to_unixtime(max(timestamp)) * 1000000 AS BIGINT) FROM events");
    let got_forecasts: BTreeSet<String> = rows(
        "SELECT customer_id, meter, CAST(to_unixtime(month) AS BIGINT), \
         CAST(to_unixtime(as_of) * 1000000 AS BIGINT), CAST(usage_to_date AS VARCHAR), \
         CAST(trailing_7d AS VARCHAR), CAST(daily_rate AS VARCHAR), CAST(forecast AS VARCHAR) \
         FROM forecasts",
    )
    .into_iter()
    .map(|r| {
        format!(
            "{} {} {} {} {} {} {} {:?}",
            r[0],
            r[1],
            r[2].parse::<i64>().unwrap() * 1_000_000,
            r[3],
            d(&r[4]),
            d(&r[5]),
            d(&r[6]),
            opt(&r[7])
        )
    })
    .collect();
    let w: Micros = w[0][0].parse().unwrap();
    assert_eq!(
        got_forecasts,
        naive_forecasts(&hours, &months, w),
        "forecasts"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn anomaly_scores_and_forecasts_match_usage_windows(
        input in input(),
        workers in 1usize..3,
        epoch_bytes in prop::sample::select(vec![600u64, 2_000, 1 << 20]),
        commit_every in 1u64..4,
    ) {
        check(&input, workers, epoch_bytes, commit_every);
    }
}
