//! Golden cases: `run` then `query` reproduce `expected/usage_windows.csv` exactly and
//! the accepted / rejected / late counts of `expected/counts.json`.

use super::common::{Data, USAGE_SQL, golden_dir, parse_csv, query_at, query_csv, run_case};
use std::collections::BTreeSet;
use std::path::Path;

fn check_case(case: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    run_case(case, &data, 2, 64 << 20);
    check_golden(case, &data);
}

/// Asserts that the tables in `data` are golden `case`'s expected usage_windows and
/// counts.
pub fn check_golden(case: &str, data: &Path) {
    check_golden_at(case, &data.into());
}

/// As [`check_golden`], at any location.
pub fn check_golden_at(case: &str, data: &Data) {
    let got = query_at(data, USAGE_SQL);
    let expected = parse_csv(
        &std::fs::read_to_string(golden_dir(case).join("expected/usage_windows.csv")).unwrap(),
    );
    assert_eq!(got[0], expected[0], "header");
    let got_rows: BTreeSet<_> = got[1..].iter().cloned().collect();
    let want_rows: BTreeSet<_> = expected[1..].iter().cloned().collect();
    assert_eq!(
        got_rows.len(),
        got.len() - 1,
        "usage_windows has duplicate rows"
    );
    let missing: Vec<_> = want_rows.difference(&got_rows).take(5).collect();
    let extra: Vec<_> = got_rows.difference(&want_rows).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{case}: missing {missing:?}\nextra {extra:?}"
    );
    assert_eq!(got_rows.len(), want_rows.len());

    let counts: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(golden_dir(case).join("expected/counts.json")).unwrap(),
    )
    .unwrap();
    let got = query_at(
        data,
        "SELECT (SELECT COUNT(*) FROM events) AS accepted, (SELECT COUNT(*) FROM rejected_events) AS rejected, \
         (SELECT COUNT(*) FROM late_events) AS late, \
         (SELECT to_char(MAX(timestamp), '%Y-%m-%dT%H:%M:%S') FROM events) AS watermark",
    );
    assert_eq!(got[1][0], counts["accepted"].to_string(), "accepted");
    assert_eq!(got[1][1], counts["rejected"].to_string(), "rejected");
    assert_eq!(got[1][2], counts["late"].to_string(), "late");
    assert_eq!(
        got[1][3],
        counts["watermark"].as_str().unwrap(),
        "watermark"
    );
}

#[test]
fn golden_small() {
    check_case("small");
}

#[test]
fn golden_medium() {
    check_case("medium");
}

#[test]
fn every_rejected_line_says_why() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    run_case("medium", &data, 1, 64 << 20);
    let rows = query_csv(
        &data,
        "SELECT COUNT(*) AS n, SUM(CASE WHEN reason = '' OR raw = '' THEN 1 ELSE 0 END) AS bad \
         FROM rejected_events",
    );
    assert_eq!(
        rows[1],
        ["193", "0"],
        "every rejection has a reason and its payload"
    );
    let reasons = query_csv(
        &data,
        "SELECT DISTINCT regexp_replace(reason, '[:`].*', '') AS r FROM rejected_events ORDER BY r",
    );
    let reasons: Vec<&str> = reasons[1..].iter().map(|r| r[0].trim()).collect();
    for want in [
        "duplicate",
        "invalid JSON",
        "missing field customer_id",
        "field id must not be empty",
        "not a JSON object",
        "field value",
        "meter input_tokens",
        "field timestamp",
    ] {
        assert!(
            reasons.iter().any(|r| r.starts_with(want)),
            "no `{want}` among {reasons:?}"
        );
    }
}
