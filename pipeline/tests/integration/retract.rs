//! `retract_event`: retracting accepted events that burned credits gives exactly the
//! balances, grants, ledger and usage of a run whose input never held those events; a
//! retraction of an unknown or already retracted event is rejected with its reason.

use super::common::{golden_dir, openmonetize, query_csv};
use std::path::Path;

fn run(events: &Path, commands: &Path, data: &Path, workers: usize) {
    let config = golden_dir("small").join("config.toml");
    openmonetize(&[
        "run",
        "--config",
        config.to_str().unwrap(),
        "--events",
        &format!("file:{}", events.display()),
        "--commands",
        &format!("file:{}", commands.display()),
        "--data",
        data.to_str().unwrap(),
        "--workers",
        &workers.to_string(),
        "--epoch-bytes",
        "16384",
        "--quiet",
    ]);
}

const TABLES: [&str; 8] = [
    "SELECT * FROM credit_balances ORDER BY tenant_id, customer_id",
    "SELECT * FROM credit_grants ORDER BY tenant_id, grant_id",
    "SELECT * FROM credit_ledger ORDER BY tenant_id, customer_id, grant_id, entry, at",
    "SELECT tenant_id, customer_id, meter, dimensions, window_size, window_start, value, events \
     FROM usage_windows ORDER BY tenant_id, customer_id, meter, dimensions, window_size, window_start",
    "SELECT * FROM entitlements ORDER BY tenant_id, customer_id, feature",
    "SELECT * FROM costs ORDER BY tenant_id, customer_id, provider, model, day",
    "SELECT * FROM anomaly_scores ORDER BY tenant_id, customer_id, meter, window_start",
    "SELECT * FROM forecasts ORDER BY tenant_id, customer_id, meter",
];

#[test]
fn retracting_burned_events_restores_the_balances_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = golden_dir("small");
    let events = dir.join("events.jsonl");
    let commands = std::fs::read_to_string(dir.join("commands.jsonl")).unwrap();

    // Three accepted events that burned credits, from the middle of the input.
    let plain = tmp.path().join("plain");
    run(&events, &dir.join("commands.jsonl"), &plain, 2);
    let picked = query_csv(
        &plain,
        "SELECT tenant_id, id FROM events WHERE event_type = 'ai_generation' \
         ORDER BY source_offset LIMIT 3 OFFSET 100",
    );
    let picked: Vec<(String, String)> = picked[1..]
        .iter()
        .map(|r| (r[0].clone(), r[1].clone()))
        .collect();
    assert_eq!(picked.len(), 3);

    // Run 1: the same input plus their retractions (one sent twice), and one of an event
    // that does not exist.
    let mut retracting = commands.clone();
    for (tenant, id) in picked.iter().chain(&picked[..1]) {
        retracting.push_str(&format!(
            "{{\"kind\": \"retract_event\", \"tenant_id\": \"{tenant}\", \"event_id\": \"{id}\"}}\n"
        ));
    }
    retracting.push_str("{\"kind\": \"retract_event\", \"event_id\": \"no_such_event\"}\n");
    let retracting_file = tmp.path().join("retracting.jsonl");
    std::fs::write(&retracting_file, retracting).unwrap();
    let retracted = tmp.path().join("retracted");
    run(&events, &retracting_file, &retracted, 2);

    // Run 2: the input without those events (every copy of their ids).
    let without: String = std::fs::read_to_string(&events)
        .unwrap()
        .lines()
        .filter(|l| {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(l) else {
                return true;
            };
            let tenant = v["tenant_id"].as_str().unwrap_or("default");
            let id = v["id"].as_str().unwrap_or_default();
            !picked.iter().any(|(t, i)| t == tenant && i == id)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let without_file = tmp.path().join("without.jsonl");
    std::fs::write(&without_file, without).unwrap();
    let never = tmp.path().join("never");
    run(&without_file, &dir.join("commands.jsonl"), &never, 1);

    let accepted = |data: &Path| query_csv(data, "SELECT COUNT(*) FROM events")[1][0].clone();
    assert_eq!(
        accepted(&never).parse::<u32>().unwrap() + 3,
        accepted(&plain).parse::<u32>().unwrap(),
        "the three events are gone from the second input"
    );
    let burned_before = query_csv(
        &plain,
        "SELECT SUM(consumed) + SUM(overage) FROM credit_balances",
    );
    let burned_after = query_csv(
        &retracted,
        "SELECT SUM(consumed) + SUM(overage) FROM credit_balances",
    );
    assert_ne!(
        burned_before, burned_after,
        "the retracted events burned credits"
    );
    for sql in TABLES {
        let (got, want) = (query_csv(&retracted, sql), query_csv(&never, sql));
        assert!(want.len() > 1, "{sql}: empty");
        assert_eq!(got, want, "{sql}");
    }

    let reasons = query_csv(
        &retracted,
        "SELECT reason FROM rejected_events WHERE reason LIKE 'retract_event%' ORDER BY reason",
    );
    let reasons: Vec<&str> = reasons[1..].iter().map(|r| r[0].as_str()).collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(reasons[0].contains("is already retracted"), "{reasons:?}");
    assert!(
        reasons[1].contains("no_such_event of tenant default is not among the accepted events"),
        "{reasons:?}"
    );
}
