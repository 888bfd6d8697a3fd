//! Property test: random event streams, delivered out of order within the lateness bound
//! and with duplicates and too-late events mixed in, give the same `usage_windows` as a
//! naive in-memory model that replays the contract one event at a time.

use om_model::time::{MINUTE, format_micros};
use om_model::{Aggregation, Config, Decimal9, ReadingValue, WindowSize};
use om_sources::Decoder;
use openmonetize::{RunOptions, Source, run};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};

const CONFIG: &str = r#"
[[meters]]
name = "total"
event_type = "gen"
aggregation = "sum"
value = "$.properties.n"
group_by = { model = "$.properties.model" }
windows = ["minute", "hour", "day", "month"]
[[meters]]
name = "calls"
event_type = "gen"
aggregation = "count"
windows = ["hour", "month"]
[[meters]]
name = "low"
event_type = "gen"
aggregation = "min"
value = "$.properties.n"
windows = ["hour"]
[[meters]]
name = "high"
event_type = "gen"
aggregation = "max"
value = "$.properties.n"
group_by = { model = "$.properties.model" }
windows = ["day"]
[[meters]]
name = "mean"
event_type = "gen"
aggregation = "avg"
value = "$.properties.n"
windows = ["hour", "day"]
[[meters]]
name = "users"
event_type = "seat"
aggregation = "unique_count"
value = "$.properties.user"
windows = ["day", "month"]
[[meters]]
name = "tier"
event_type = "seat"
aggregation = "latest"
value = "$.properties.tier"
windows = ["hour", "day"]
[pipeline]
allowed_lateness = "2h"
dedup_horizon = "1d"
"#;

#[derive(Clone, Debug)]
struct Spec {
    customer: u8,
    seat: bool,
    minutes: i64,
    n: u32,
    frac: u16,
    model: Option<u8>,
}

fn line(i: usize, s: &Spec, base: i64) -> String {
    let ts = base + s.minutes * MINUTE;
    let time = if i.is_multiple_of(2) {
        format!("\"{}\"", format_micros(ts))
    } else {
        (ts / 1000).to_string()
    };
    if s.seat {
        format!(
            r#"{{"id":"e{i}","customer_id":"c{}","event_type":"seat","timestamp":{time},"properties":{{"user":"u{}","tier":{}}}}}"#,
            s.customer,
            s.n % 5,
            s.n % 3
        )
    } else {
        let model = s
            .model
            .map(|m| format!(r#","model":"m{m}""#))
            .unwrap_or_default();
        format!(
            r#"{{"id":"e{i}","tenant_id":"t{}","customer_id":"c{}","event_type":"gen","timestamp":{time},"properties":{{"n":"{}.{:03}"{model}}}}}"#,
            s.customer % 2,
            s.customer,
            s.n,
            s.frac
        )
    }
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        0u8..3,
        prop::bool::weighted(0.3),
        -100i64..100,
        0u32..50,
        0u16..1000,
        prop::option::of(0u8..2),
    )
        .prop_map(|(customer, seat, minutes, n, frac, model)| Spec {
            customer,
            seat,
            minutes,
            n,
            frac,
            model,
        })
}

/// The input: events roughly in time order over ~3 days, shifted by up to 100 minutes
/// (within the 2h lateness), with duplicates and a few events 5 hours behind.
fn stream() -> impl Strategy<Value = Vec<String>> {
    (
        prop::collection::vec(spec(), 1..120),
        prop::collection::vec((0usize..1000, 0usize..1000), 0..10),
        prop::collection::vec(0usize..1000, 0..4),
    )
        .prop_map(|(specs, dups, very_late)| {
            let base = om_model::time::parse_rfc3339("2026-01-31T20:00:00Z").unwrap();
            let mut lines: Vec<String> = specs
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let mut s = s.clone();
                    s.minutes += i as i64 * 37;
                    line(i, &s, base)
                })
                .collect();
            for &v in &very_late {
                let i = v % specs.len();
                let mut s = specs[i].clone();
                s.minutes += i as i64 * 37 - 5 * 60;
                lines.push(line(10_000 + v, &s, base));
            }
            for &(from, to) in &dups {
                let copy = lines[from % lines.len()].clone();
                let at = to % (lines.len() + 1);
                lines.insert(at.max(from % lines.len() + 1).min(lines.len()), copy);
            }
            lines
        })
}

/// (tenant, customer, meter, dimensions, size, start) of the model's windows.
type ModelKey = (String, String, u16, String, WindowSize, i64);

type Row = (String, String, String, String, String, i64, String, i64);

/// The naive model: one event at a time, exactly as DESIGN.md section 3 reads.
fn model(lines: &[String], config: &Config) -> BTreeSet<Row> {
    let decoder = Decoder::new(config.clone());
    let mut seen = HashSet::new();
    let mut watermark: Option<i64> = None;
    let mut windows: BTreeMap<ModelKey, Vec<(i64, String, ReadingValue)>> = BTreeMap::new();
    for l in lines {
        let Ok(d) = decoder.decode(l.as_bytes()) else {
            continue;
        };
        let e = d.event;
        if !seen.insert((e.tenant_id.clone(), e.id.clone())) {
            continue;
        }
        if watermark.is_some_and(|w| e.timestamp < w - config.pipeline.allowed_lateness) {
            continue;
        }
        watermark = watermark.max(Some(e.timestamp));
        for r in d.readings {
            for &size in &config.meters[r.meter as usize].windows {
                let key = (
                    e.tenant_id.clone(),
                    e.customer_id.clone(),
                    r.meter,
                    r.dimensions.clone(),
                    size,
                    size.start(e.timestamp),
                );
                windows
                    .entry(key)
                    .or_default()
                    .push((e.timestamp, e.id.clone(), r.value.clone()));
            }
        }
    }
    let num = |v: &ReadingValue| match v {
        ReadingValue::Number(d) => *d,
        ReadingValue::Scalar(_) => panic!("number expected"),
    };
    windows
        .into_iter()
        .map(|((tenant, customer, meter, dims, size, start), vals)| {
            let m = &config.meters[meter as usize];
            let events = vals.len() as i64;
            let value = match m.aggregation {
                Aggregation::Sum => vals.iter().map(|v| num(&v.2)).sum(),
                Aggregation::Count => Decimal9::from_int(events),
                Aggregation::Min => vals.iter().map(|v| num(&v.2)).min().unwrap(),
                Aggregation::Max => vals.iter().map(|v| num(&v.2)).max().unwrap(),
                Aggregation::Avg => vals
                    .iter()
                    .map(|v| num(&v.2))
                    .sum::<Decimal9>()
                    .div_count_half_even(events),
                Aggregation::UniqueCount => Decimal9::from_int(
                    vals.iter()
                        .map(|v| format!("{:?}", v.2))
                        .collect::<BTreeSet<_>>()
                        .len() as i64,
                ),
                Aggregation::Latest => num(&vals
                    .iter()
                    .max_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)))
                    .unwrap()
                    .2),
            };
            (
                tenant,
                customer,
                m.name.clone(),
                dims,
                size.as_str().to_string(),
                start,
                value.to_string(),
                events,
            )
        })
        .collect()
}

fn pipeline(
    lines: &[String],
    config: &Config,
    workers: usize,
    epoch_bytes: u64,
    commit_every: u64,
) -> BTreeSet<Row> {
    static RUN: AtomicU64 = AtomicU64::new(0);
    let tmp = tempfile::tempdir().unwrap();
    let events = tmp.path().join("events.jsonl");
    std::fs::write(&events, lines.join("\n")).unwrap();
    let data = format!(
        "memory://model-check-{}",
        RUN.fetch_add(1, Ordering::Relaxed)
    );
    run(RunOptions {
        workers,
        epoch_bytes,
        commit_every,
        progress: false,
        ..RunOptions::new(config.clone(), Source::File(events), data.clone())
    })
    .unwrap();
    super::common::query_in_process(
        &data,
        "SELECT tenant_id, customer_id, meter, dimensions, window_size, CAST(window_start AS BIGINT) AS s, \
         CAST(value AS VARCHAR) AS v, events FROM usage_windows",
    )
    .into_iter()
    .map(|r| {
            (
                r[0].clone(),
                r[1].clone(),
                r[2].clone(),
                r[3].clone(),
                r[4].clone(),
                r[5].parse().unwrap(),
                r[6].clone(),
                r[7].parse().unwrap(),
            )
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn usage_windows_match_the_naive_model(lines in stream(), workers in 1usize..=2, epoch in prop::sample::select(vec![150u64, 700, 4096, 1 << 20]), commit_every in 1u64..4) {
        let config = Config::from_toml(CONFIG).unwrap();
        let want = model(&lines, &config);
        let got = pipeline(&lines, &config, workers, epoch, commit_every);
        prop_assert_eq!(got, want);
    }
}

#[test]
fn the_model_sees_late_and_duplicate_events() {
    // Guard against a generator that never exercises the interesting paths.
    let config = Config::from_toml(CONFIG).unwrap();
    let base = om_model::time::parse_rfc3339("2026-01-31T20:00:00Z").unwrap();
    let s = |minutes| Spec {
        customer: 0,
        seat: false,
        minutes,
        n: 1,
        frac: 0,
        model: None,
    };
    let lines = vec![
        line(0, &s(0), base),
        line(1, &s(600), base),
        line(2, &s(100), base),
        line(0, &s(0), base),
    ];
    let want = model(&lines, &config);
    let calls: i64 = want
        .iter()
        .filter(|r| r.2 == "calls" && r.4 == "month")
        .map(|r| r.7)
        .sum();
    assert_eq!(
        calls, 2,
        "the too-late event and the duplicate are not counted"
    );
    assert_eq!(pipeline(&lines, &config, 2, 100, 1), want);
}
