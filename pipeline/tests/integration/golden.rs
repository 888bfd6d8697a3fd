//! Golden cases: `run` then `query` reproduce `expected/usage_windows.csv`,
//! `expected/credit_grants.csv` and `expected/credit_balances.csv` exactly and the
//! accepted / rejected / late counts of `expected/counts.json`.

use super::common::{
    BALANCES_SQL, Data, GRANTS_SQL, USAGE_SQL, golden_dir, parse_csv, query_at, query_csv, run_case,
};
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

/// Asserts that `sql` over `data` gives the rows of `expected/<file>` (any order).
fn check_table(case: &str, data: &Data, file: &str, sql: &str) {
    let got = query_at(data, sql);
    let expected =
        parse_csv(&std::fs::read_to_string(golden_dir(case).join("expected").join(file)).unwrap());
    assert_eq!(got[0], expected[0], "{case} {file}: header");
    let got_rows: BTreeSet<_> = got[1..].iter().cloned().collect();
    let want_rows: BTreeSet<_> = expected[1..].iter().cloned().collect();
    assert_eq!(got_rows.len(), got.len() - 1, "{file}: duplicate rows");
    let missing: Vec<_> = want_rows.difference(&got_rows).take(5).collect();
    let extra: Vec<_> = got_rows.difference(&want_rows).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{case} {file}: missing {missing:?}\nextra {extra:?}"
    );
    assert_eq!(got_rows.len(), want_rows.len(), "{case} {file}: rows");
}

/// As [`check_golden`], at any location.
pub fn check_golden_at(case: &str, data: &Data) {
    check_table(case, data, "credit_grants.csv", GRANTS_SQL);
    check_table(case, data, "credit_balances.csv", BALANCES_SQL);
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
        "SELECT (SELECT COUNT(*) FROM events) AS accepted, \
         (SELECT COUNT(*) FROM rejected_events WHERE source NOT LIKE '%commands%') AS rejected, \
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
        ["195", "0"],
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
        "command invalid JSON",
        "grant",
    ] {
        assert!(
            reasons.iter().any(|r| r.starts_with(want)),
            "no `{want}` among {reasons:?}"
        );
    }
}

/// The ledger is the audit trail of the credit tables: per grant, its `grant` entry is
/// its amount and its `burn`, `expiry` and `void` entries sum to consumed, expired and
/// voided; per customer, the entries sum to the balance row, overage included.
#[test]
fn credit_ledger_adds_up_to_grants_and_balances() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    run_case("medium", &data, 2, 16 << 10);
    let sum = |kind: &str| format!("COALESCE(SUM(CASE WHEN entry = '{kind}' THEN amount END), 0)");
    let per_grant = query_csv(
        &data,
        &format!(
            "WITH l AS (SELECT tenant_id, grant_id, {g} AS granted, {b} AS burned, {e} AS expired, \
               {v} AS voided FROM credit_ledger WHERE grant_id IS NOT NULL GROUP BY tenant_id, grant_id) \
             SELECT COUNT(*) AS grants, \
               SUM(CASE WHEN l.granted = g.amount AND l.burned = g.consumed AND l.expired = g.expired \
                        AND l.voided = g.voided \
                        AND g.amount - l.burned - l.expired - l.voided = g.remaining THEN 1 ELSE 0 END) AS equal \
             FROM credit_grants g JOIN l ON g.tenant_id = l.tenant_id AND g.grant_id = l.grant_id",
            g = sum("grant"),
            b = sum("burn"),
            e = sum("expiry"),
            v = sum("void"),
        ),
    );
    let effective = query_csv(
        &data,
        "SELECT COUNT(*) FROM credit_grants g JOIN credit_balances b \
         ON g.tenant_id = b.tenant_id AND g.customer_id = b.customer_id WHERE g.effective_at <= b.as_of",
    );
    assert_eq!(
        per_grant[1][0], effective[1][0],
        "every effective grant has entries"
    );
    assert_eq!(
        per_grant[1][0], per_grant[1][1],
        "entries of each grant sum to its state"
    );
    assert!(
        per_grant[1][0].parse::<u32>().unwrap() > 50,
        "{per_grant:?}"
    );

    let per_customer = query_csv(
        &data,
        &format!(
            "WITH l AS (SELECT tenant_id, customer_id, {g} AS granted, {b} AS burned, {e} AS expired, \
               {v} AS voided, {o} AS overage FROM credit_ledger GROUP BY tenant_id, customer_id) \
             SELECT COUNT(*) AS customers, \
               SUM(CASE WHEN l.granted = b.granted AND l.burned = b.consumed AND l.expired = b.expired \
                        AND l.voided = b.voided AND l.overage = b.overage \
                        AND l.granted - l.burned - l.expired - l.voided = b.balance THEN 1 ELSE 0 END) AS equal \
             FROM credit_balances b JOIN l ON b.tenant_id = l.tenant_id AND b.customer_id = l.customer_id",
            g = sum("grant"),
            b = sum("burn"),
            e = sum("expiry"),
            v = sum("void"),
            o = sum("overage"),
        ),
    );
    let customers = query_csv(&data, "SELECT COUNT(*) FROM credit_balances");
    assert_eq!(
        per_customer[1][0], customers[1][0],
        "every customer has entries"
    );
    assert_eq!(
        per_customer[1][0], per_customer[1][1],
        "entries sum to each balance"
    );
}
