//! Invoices, revenue and exports end to end (issue #8), with the real binary: a job over
//! two months of events and commands, hand-worked invoices for each pricing model, the
//! scheduled export of the final month only, byte-identical re-exports read back by
//! pyarrow and Python's csv module, revenue against the credit ledger, and (with
//! `serve`) a late event changing the open month's invoice but not the final one's.

use super::common::{openmonetize, sha256_hex};
use super::serve::{request, start};
use serde_json::json;
use std::path::Path;
use std::process::Command;

fn config(exports_to: &Path) -> String {
    format!(
        r#"
[[meters]]
name = "api_calls"
event_type = "api_call"
aggregation = "count"
group_by = {{ endpoint = "$.properties.endpoint" }}
windows = ["day", "month"]

[[meters]]
name = "tokens"
event_type = "ai"
aggregation = "sum"
value = "$.properties.tokens"
windows = ["month"]

[[burn_rates]]
event_type = "ai"
value = "$.properties.tokens"
credits_per_unit = "0.01"

[[plans]]
name = "pro"
[plans.pricing]
currency = "USD"
flat_fee = "20"
minimum = "50"
credit_overage_price = "0.5"
[[plans.pricing.charges]]
meter = "api_calls"
model = "graduated"
tiers = [{{ up_to = 2, unit_price = "0" }}, {{ unit_price = "1.25" }}]
[[plans.pricing.charges]]
meter = "tokens"
model = "package"
package_size = 1000
package_price = "3"

[[plans]]
name = "basic"
[plans.pricing]
flat_fee = "5"
[[plans.pricing.charges]]
meter = "api_calls"
model = "volume"
tiers = [{{ up_to = 3, unit_price = "2" }}, {{ unit_price = "1", flat_price = "1" }}]

[[api_keys]]
admin = true
sha256 = "{key}"

[[exports]]
kind = "invoices"
schedule = "* * * * * *"
to = "{to}"
format = "csv"

[pipeline]
allowed_lateness = "1h"
dedup_horizon = "1d"
"#,
        key = sha256_hex("admin-key"),
        to = exports_to.display()
    )
}

fn event(id: &str, customer: &str, kind: &str, at: &str, tokens: Option<u32>) -> String {
    let mut e = json!({"id": id, "tenant_id": "acme", "customer_id": customer,
        "event_type": kind, "timestamp": at, "properties": {"endpoint": "/a"}});
    if let Some(t) = tokens {
        e["properties"]["tokens"] = json!(t);
    }
    e.to_string()
}

/// October: c1 (pro) 5 calls and 2,500 tokens burning 25 of its 100 credits; c2 (basic,
/// from the 15th) 4 calls and 50 unused credits expiring on November 1; c3 (pro) 3,000
/// tokens burning 30 credits of which its grant covers 10. November (open): one call
/// each for c1 and c2, the last at 2026-11-20T12:00 (the watermark). In time order: the
/// allowed lateness is 1 hour.
fn events() -> Vec<String> {
    let mut v = Vec::new();
    for h in 0..5 {
        v.push(event(
            &format!("c1-call-{h}"),
            "c1",
            "api_call",
            &format!("2026-10-05T1{h}:00:00Z"),
            None,
        ));
    }
    v.push(event(
        "c1-ai-1",
        "c1",
        "ai",
        "2026-10-06T10:00:00Z",
        Some(1500),
    ));
    v.push(event(
        "c1-ai-2",
        "c1",
        "ai",
        "2026-10-07T10:00:00Z",
        Some(1000),
    ));
    v.push(event(
        "c3-ai-1",
        "c3",
        "ai",
        "2026-10-10T08:00:00Z",
        Some(3000),
    ));
    for d in 0..4 {
        v.push(event(
            &format!("c2-call-{d}"),
            "c2",
            "api_call",
            &format!("2026-10-1{}T09:00:00Z", d + 6),
            None,
        ));
    }
    v.push(event(
        "c1-nov",
        "c1",
        "api_call",
        "2026-11-10T12:00:00Z",
        None,
    ));
    v.push(event(
        "c2-nov",
        "c2",
        "api_call",
        "2026-11-20T12:00:00Z",
        None,
    ));
    v
}

fn commands() -> Vec<String> {
    let grant = |id: &str, c: &str, amount: &str, price: &str, from: &str, to: &str| {
        json!({"kind": "grant", "grant_id": id, "tenant_id": "acme", "customer_id": c,
            "amount": amount, "priority": 1, "effective_at": from, "expires_at": to,
            "price": price, "currency": "USD"})
        .to_string()
    };
    let sub = |c: &str, plan: &str, at: &str| {
        json!({"kind": "subscribe", "tenant_id": "acme", "customer_id": c, "plan": plan,
            "effective_at": at})
        .to_string()
    };
    vec![
        sub("c1", "pro", "2026-10-01T00:00:00Z"),
        sub("c2", "basic", "2026-10-15T00:00:00Z"),
        sub("c3", "pro", "2026-10-01T00:00:00Z"),
        grant(
            "g1",
            "c1",
            "100",
            "40",
            "2026-10-01T00:00:00Z",
            "2026-12-01T00:00:00Z",
        ),
        grant(
            "g2",
            "c2",
            "50",
            "10",
            "2026-10-15T00:00:00Z",
            "2026-11-01T00:00:00Z",
        ),
        grant(
            "g3",
            "c3",
            "10",
            "5",
            "2026-10-01T00:00:00Z",
            "2026-10-20T00:00:00Z",
        ),
    ]
}

const INVOICES_SQL: &str = "SELECT customer_id, period, plan, currency, subtotal, minimum_true_up, \
    total, credits_applied, credit_overage, lines, is_final FROM invoices ORDER BY customer_id, period";

fn rows(data: &Path, config: &Path, sql: &str) -> Vec<Vec<String>> {
    let text = openmonetize(&[
        "query",
        "--data",
        data.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "--format",
        "csv",
        sql,
    ]);
    super::common::parse_csv(&text)
        .into_iter()
        .skip(1)
        .collect()
}

fn row(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

#[test]
fn invoices_revenue_and_exports() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, scheduled) = (tmp.path().join("data"), tmp.path().join("scheduled"));
    let config_path = tmp.path().join("config.toml");
    std::fs::write(&config_path, config(&scheduled)).unwrap();
    std::fs::write(tmp.path().join("events.jsonl"), events().join("\n")).unwrap();
    std::fs::write(tmp.path().join("commands.jsonl"), commands().join("\n")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_openmonetize"))
        .args([
            "run",
            "--config",
            config_path.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
        ])
        .arg(format!(
            "--events=file:{}",
            tmp.path().join("events.jsonl").display()
        ))
        .arg(format!(
            "--commands=file:{}",
            tmp.path().join("commands.jsonl").display()
        ))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("exported invoices 2026-10"), "{stderr}");

    // Hand-worked (see `events`):
    // c1 Oct: flat 20 + calls graduated 2 x 0 + 3 x 1.25 = 3.75 + tokens 3 packages x 3 = 9
    //   = 32.75, minimum 50: true-up 17.25; 25 credits applied.
    // c2 Oct: flat 5 + calls volume 4 x 1 + 1 = 5 -> 10.
    // c3 Oct: flat 20 + tokens 9 + overage 20 credits x 0.5 = 10 -> 39, true-up 11; 10
    //   credits applied.
    // November (open): c1 20 + 1 free call + 0 tokens = 20, true-up 30; c2 5 + 1 x 2 = 7;
    //   c3 20, true-up 30.
    let d = |s: &str| match s.split_once('.') {
        Some((int, frac)) => format!("{int}.{frac:0<9}"),
        None => format!("{s}.000000000"),
    };
    assert_eq!(
        rows(&data, &config_path, INVOICES_SQL),
        vec![
            row(&[
                "c1",
                "2026-10",
                "pro",
                "USD",
                &d("32.750"),
                &d("17.250"),
                &d("50"),
                &d("25"),
                &d("0"),
                "6",
                "true"
            ]),
            row(&[
                "c1",
                "2026-11",
                "pro",
                "USD",
                &d("20"),
                &d("30"),
                &d("50"),
                &d("0"),
                &d("0"),
                "4",
                "false"
            ]),
            row(&[
                "c2",
                "2026-10",
                "basic",
                "USD",
                &d("10"),
                &d("0"),
                &d("10"),
                &d("0"),
                &d("0"),
                "2",
                "true"
            ]),
            row(&[
                "c2",
                "2026-11",
                "basic",
                "USD",
                &d("7"),
                &d("0"),
                &d("7"),
                &d("0"),
                &d("0"),
                "2",
                "false"
            ]),
            row(&[
                "c3",
                "2026-10",
                "pro",
                "USD",
                &d("39"),
                &d("11"),
                &d("50"),
                &d("10"),
                &d("20"),
                "5",
                "true"
            ]),
            row(&[
                "c3",
                "2026-11",
                "pro",
                "USD",
                &d("20"),
                &d("30"),
                &d("50"),
                &d("0"),
                &d("0"),
                "3",
                "false"
            ]),
        ]
    );
    assert_eq!(
        rows(
            &data,
            &config_path,
            "SELECT line, kind, coalesce(meter, ''), coalesce(CAST(tier AS VARCHAR), ''), \
             coalesce(CAST(usage AS VARCHAR), ''), quantity, \
             coalesce(CAST(unit_price AS VARCHAR), ''), amount FROM invoice_lines \
             WHERE customer_id = 'c1' AND period = '2026-10' ORDER BY line"
        ),
        vec![
            row(&["1", "flat_fee", "", "", "", &d("1"), &d("20"), &d("20")]),
            row(&[
                "2",
                "usage",
                "api_calls",
                "1",
                &d("5"),
                &d("2"),
                &d("0"),
                &d("0")
            ]),
            row(&[
                "3",
                "usage",
                "api_calls",
                "2",
                &d("5"),
                &d("3"),
                &d("1.250"),
                &d("3.750")
            ]),
            // 2,500 tokens are 3 packages of 1,000 at 3.00.
            row(&[
                "4",
                "usage",
                "tokens",
                "",
                &d("2500"),
                &d("3"),
                &d("3"),
                &d("9")
            ]),
            row(&["5", "credits_applied", "", "", "", &d("25"), "", &d("0")]),
            row(&[
                "6",
                "minimum_commitment",
                "",
                "",
                "",
                &d("1"),
                &d("17.250"),
                &d("17.250")
            ]),
        ]
    );
    // Without the job's config, the billing tables refuse rather than price with the
    // built-in plans.
    let other = Command::new(env!("CARGO_BIN_EXE_openmonetize"))
        .args([
            "query",
            "--data",
            data.to_str().unwrap(),
            "SELECT count(*) FROM invoices",
        ])
        .output()
        .unwrap();
    assert!(!other.status.success());
    assert!(
        String::from_utf8_lossy(&other.stderr).contains("pass the job's config"),
        "{}",
        String::from_utf8_lossy(&other.stderr)
    );
    // Lines add up to the totals.
    assert_eq!(
        rows(
            &data,
            &config_path,
            "SELECT count(*) FROM invoices i JOIN (SELECT customer_id, period, sum(amount) AS s \
             FROM invoice_lines GROUP BY customer_id, period) l USING (customer_id, period) \
             WHERE l.s <> i.total"
        ),
        vec![row(&["0"])]
    );

    // Revenue: g1 (100 credits for 40.00) recognized 6.00 and 4.00 as 15 and 10 credits
    // burn, 30.00 still deferred; g2 (50 for 10.00) breaks 10.00 at its expiry on
    // November 1; g3 (10 for 5.00) is consumed whole on October 10.
    assert_eq!(
        rows(
            &data,
            &config_path,
            "SELECT grant_id, to_char(day, '%Y-%m-%d'), credits_consumed, credits_lost, recognized, \
             breakage, deferred FROM revenue ORDER BY grant_id, day"
        ),
        vec![
            row(&[
                "g1",
                "2026-10-01",
                &d("0"),
                &d("0"),
                &d("0"),
                &d("0"),
                &d("40")
            ]),
            row(&[
                "g1",
                "2026-10-06",
                &d("15"),
                &d("0"),
                &d("6"),
                &d("0"),
                &d("34")
            ]),
            row(&[
                "g1",
                "2026-10-07",
                &d("10"),
                &d("0"),
                &d("4"),
                &d("0"),
                &d("30")
            ]),
            row(&[
                "g2",
                "2026-10-15",
                &d("0"),
                &d("0"),
                &d("0"),
                &d("0"),
                &d("10")
            ]),
            row(&[
                "g2",
                "2026-11-01",
                &d("0"),
                &d("50"),
                &d("0"),
                &d("10"),
                &d("0")
            ]),
            row(&[
                "g3",
                "2026-10-01",
                &d("0"),
                &d("0"),
                &d("0"),
                &d("0"),
                &d("5")
            ]),
            row(&[
                "g3",
                "2026-10-10",
                &d("10"),
                &d("0"),
                &d("5"),
                &d("0"),
                &d("0")
            ]),
            // Its expiry entry (nothing left to lose).
            row(&[
                "g3",
                "2026-10-20",
                &d("0"),
                &d("0"),
                &d("0"),
                &d("0"),
                &d("0")
            ]),
        ]
    );
    // ...and its credits are the ledger's: consumed and lost per grant match
    // credit_grants, and the identity holds on every row.
    assert_eq!(
        rows(
            &data,
            &config_path,
            "SELECT g.grant_id, g.consumed = r.c, g.expired + g.voided = r.l FROM credit_grants g \
             JOIN (SELECT grant_id, sum(credits_consumed) AS c, sum(credits_lost) AS l FROM revenue \
             GROUP BY grant_id) r USING (grant_id) ORDER BY g.grant_id"
        ),
        vec![
            row(&["g1", "true", "true"]),
            row(&["g2", "true", "true"]),
            row(&["g3", "true", "true"])
        ]
    );
    assert_eq!(
        rows(
            &data,
            &config_path,
            "SELECT count(*) FROM revenue WHERE deferred + recognized_to_date + breakage_to_date <> price"
        ),
        vec![row(&["0"])]
    );

    // The job exported the final October, not the open November.
    assert!(
        scheduled
            .join("invoices/2026-10/csv/manifest.json")
            .exists()
    );
    assert!(!scheduled.join("invoices/2026-11").exists());

    // On demand, twice: byte-identical files, and the same bytes as the job's export.
    let export = |to: &Path, format: &str| {
        openmonetize(&[
            "export",
            "invoices",
            "--period",
            "2026-10",
            "--data",
            data.to_str().unwrap(),
            "--to",
            to.to_str().unwrap(),
            "--format",
            format,
            "--config",
            config_path.to_str().unwrap(),
        ])
    };
    let read_all = |dir: &Path| -> Vec<(String, Vec<u8>)> {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        files.sort();
        files
    };
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    export(&a, "csv");
    let first = read_all(&a.join("invoices/2026-10/csv"));
    export(&a, "csv");
    assert_eq!(read_all(&a.join("invoices/2026-10/csv")), first);
    assert_eq!(read_all(&scheduled.join("invoices/2026-10/csv")), first);
    export(&b, "parquet");
    export(&b, "parquet");
    openmonetize(&[
        "export",
        "revenue",
        "--period",
        "2026-10",
        "--data",
        data.to_str().unwrap(),
        "--to",
        b.to_str().unwrap(),
        "--format",
        "parquet",
    ]);
    let parquet = read_all(&b.join("invoices/2026-10/parquet"));
    assert_eq!(parquet.len(), 3, "invoices, invoice_lines, manifest");
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(a.join("invoices/2026-10/csv/manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["is_final"], json!(true));
    assert_eq!(manifest["files"][0]["rows"], json!(3));

    // Third-party readers: pyarrow and csv give the same totals as SQL.
    let python = std::env::var("OM_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = r#"
import csv, decimal, json, sys
import pyarrow.parquet as pq
a, b = sys.argv[1], sys.argv[2]
with open(a + "/invoices/2026-10/csv/invoices.csv", newline="") as f:
    csv_total = sum(decimal.Decimal(r["total"]) for r in csv.DictReader(f))
with open(a + "/invoices/2026-10/csv/invoice_lines.csv", newline="") as f:
    csv_lines = sum(decimal.Decimal(r["amount"]) for r in csv.DictReader(f))
t = pq.read_table(b + "/invoices/2026-10/parquet/invoices.parquet")
assert str(t.schema.field("total").type) == "decimal128(38, 9)", t.schema
pq_total = sum(t.column("total").to_pylist())
pq_lines = sum(pq.read_table(b + "/invoices/2026-10/parquet/invoice_lines.parquet").column("amount").to_pylist())
rev = pq.read_table(b + "/revenue/2026-10/parquet/revenue.parquet")
rev_total = sum(rev.column("recognized").to_pylist()) + sum(rev.column("breakage").to_pylist())
print(json.dumps([str(csv_total), str(csv_lines), str(pq_total), str(pq_lines), str(rev_total)]))
"#;
    let out = Command::new(&python)
        .args(["-c", script, a.to_str().unwrap(), b.to_str().unwrap()])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut totals: Vec<String> = serde_json::from_slice(&out.stdout).unwrap();
    // October's revenue: g1 6 + 4, g3 5 (g2's breakage is on November 1).
    let revenue = totals.pop().unwrap();
    assert_eq!(revenue.parse::<f64>().ok(), Some(15.0), "{revenue}");
    assert_eq!(
        rows(
            &data,
            &config_path,
            "SELECT CAST(sum(recognized + breakage) AS VARCHAR) FROM revenue WHERE day < TIMESTAMP '2026-11-01T00:00:00Z'"
        )[0][0],
        "15.000000000"
    );
    let sql = rows(
        &data,
        &config_path,
        "SELECT CAST(sum(total) AS VARCHAR) FROM invoices WHERE period = '2026-10'",
    );
    assert_eq!(sql[0][0], "110.000000000");
    for t in &totals {
        assert_eq!(t.parse::<f64>().ok(), Some(110.0), "{totals:?}");
        assert_eq!(
            t.trim_end_matches('0').trim_end_matches('.'),
            "110",
            "{totals:?}"
        );
    }

    // Statements and revenue export too; a bad period names the fix.
    openmonetize(&[
        "export",
        "statements",
        "--period",
        "2026-10",
        "--data",
        data.to_str().unwrap(),
        "--to",
        a.to_str().unwrap(),
        "--format",
        "json",
    ]);
    let statements =
        std::fs::read_to_string(a.join("statements/2026-10/json/usage_statements.jsonl")).unwrap();
    assert_eq!(statements.lines().count(), 4, "{statements}");
    assert!(
        statements.contains(r#""value":"2500.000000000""#),
        "{statements}"
    );
    let bad = Command::new(env!("CARGO_BIN_EXE_openmonetize"))
        .args([
            "export",
            "invoices",
            "--period",
            "2026-13",
            "--data",
            data.to_str().unwrap(),
            "--to",
            "x",
        ])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("write YYYY-MM"));
}

#[test]
fn a_late_event_changes_the_open_months_invoice_only() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let config_path = tmp.path().join("config.toml");
    std::fs::write(&config_path, config(&tmp.path().join("scheduled"))).unwrap();
    let server = start(
        data.to_str().unwrap(),
        &config_path,
        &["--workers", "2", "--commit-interval", "50ms"],
    );
    let addr = server.addr.clone();
    let post = |path: &str, lines: &[String]| {
        let body = format!("[{}]", lines.join(","));
        let (status, answer) = request(&addr, "POST", path, Some("admin-key"), &body);
        assert_eq!(status, 200, "{answer}");
        answer
    };
    post("/v1/commands", &commands());
    post("/v1/events?wait=commit", &events());
    let totals = || {
        let sql = json!({"sql": "SELECT customer_id, period, CAST(total AS VARCHAR) AS total FROM invoices \
            WHERE customer_id = 'c2' ORDER BY period"});
        let (status, body) = request(
            &addr,
            "POST",
            "/v1/query",
            Some("admin-key"),
            &sql.to_string(),
        );
        assert_eq!(status, 200, "{body}");
        body["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["period"].as_str().unwrap().to_string(),
                    r["total"].as_str().unwrap().to_string(),
                )
            })
            .collect::<Vec<_>>()
    };
    let p = |period: &str, total: &str| (period.to_string(), format!("{total}.000000000"));
    assert_eq!(totals(), vec![p("2026-10", "10"), p("2026-11", "7")]);
    // A late call in the open November (30 minutes behind the watermark, inside the 1h
    // allowed lateness): volume pricing moves nothing (2 calls x 2 = 4) -> 9. One in the
    // final October is too late: it lands in late_events and October stays 10.
    let answer = post(
        "/v1/events?wait=commit",
        &[
            event("c2-late", "c2", "api_call", "2026-11-20T11:30:00Z", None),
            event(
                "c2-too-late",
                "c2",
                "api_call",
                "2026-10-31T23:00:00Z",
                None,
            ),
        ],
    );
    assert_eq!(
        answer["results"][0]["status"],
        json!("accepted"),
        "{answer}"
    );
    assert_eq!(answer["results"][1]["status"], json!("late"), "{answer}");
    assert_eq!(totals(), vec![p("2026-10", "10"), p("2026-11", "9")]);
    // The schedule fires every second: the final October was exported once (its
    // manifest is not rewritten at later firings) and the open November not at all.
    let manifest = tmp
        .path()
        .join("scheduled/invoices/2026-10/csv/manifest.json");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !manifest.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "October was never exported"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let written = std::fs::metadata(&manifest).unwrap().modified().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert_eq!(
        std::fs::metadata(&manifest).unwrap().modified().unwrap(),
        written
    );
    assert!(!tmp.path().join("scheduled/invoices/2026-11").exists());
    server.terminate();
}
