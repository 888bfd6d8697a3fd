//! `openmonetize serve --pg-listen`: SQL over the PostgreSQL protocol with real clients,
//! Debian's `psql` and psycopg 3 (from the test venv, `OM_PYTHON`), against the real
//! binary on the small golden case (tenants `acme` and `default`). Answers are compared
//! with `openmonetize query --tenant`; a tenant key must never see another tenant's
//! rows, whatever the SQL.

use super::common::{golden_dir, manifest_dir, openmonetize, parse_csv, sha256_hex};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

const TENANT_KEY: &str = "acme-pg-secret";
const ADMIN_KEY: &str = "admin-pg-secret";

struct Server {
    child: Child,
    pg_port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The golden small case's tables, and a server over them with an `acme` and an admin
/// key.
struct Fixture {
    _tmp: tempfile::TempDir,
    data: PathBuf,
    server: Server,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let dir = golden_dir("small");
    openmonetize(&[
        "run",
        "--config",
        dir.join("config.toml").to_str().unwrap(),
        "--events",
        &format!("file:{}", dir.join("events.jsonl").display()),
        "--commands",
        &format!("file:{}", dir.join("commands.jsonl").display()),
        "--data",
        data.to_str().unwrap(),
        "--quiet",
    ]);
    let config = tmp.path().join("serve.toml");
    std::fs::write(
        &config,
        format!(
            "[[api_keys]]\ntenant = \"acme\"\nsha256 = \"{}\"\n[[api_keys]]\nadmin = true\nsha256 = \"{}\"\n",
            sha256_hex(TENANT_KEY),
            sha256_hex(ADMIN_KEY)
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_openmonetize"))
        .args(["serve", "--data"])
        .arg(&data)
        .arg("--config")
        .arg(&config)
        .args([
            "--read-only",
            "--listen",
            "127.0.0.1:0",
            "--pg-listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut lines = [String::new(), String::new()];
    for line in &mut lines {
        out.read_line(line).unwrap();
    }
    assert!(
        lines[0].starts_with("listening on http://"),
        "first line {:?}",
        lines[0]
    );
    let pg_port = lines[1]
        .trim()
        .strip_prefix("listening on postgres://")
        .and_then(|a| a.rsplit_once(':'))
        .and_then(|(_, port)| port.parse().ok())
        .unwrap_or_else(|| panic!("second line {:?}", lines[1]));
    Fixture {
        _tmp: tmp,
        data,
        server: Server { child, pg_port },
    }
}

/// Debian's psql (`scripts/test` installs postgresql-client when it is missing).
fn psql_binary() -> PathBuf {
    let debian = PathBuf::from("/usr/bin/psql");
    assert!(
        debian.exists(),
        "/usr/bin/psql is missing: run scripts/test, or apt-get install postgresql-client"
    );
    debian
}

/// Runs psql with `key` as password: one `-c` per entry of `commands` (each one message,
/// all on one connection), unaligned output without headers, SQLSTATEs in errors.
fn psql(port: u16, key: &str, commands: &[&str]) -> Output {
    let mut cmd = Command::new(psql_binary());
    cmd.arg(format!(
        "host=127.0.0.1 port={port} user=anyone dbname=openmonetize connect_timeout=10"
    ))
    .args(["-X", "-A", "-t", "-w", "-v", "VERBOSITY=verbose"])
    .env("PGPASSWORD", key)
    .env_remove("PGSERVICE")
    .env_remove("PGSSLMODE");
    for c in commands {
        cmd.args(["-c", c]);
    }
    cmd.output().expect("run psql")
}

/// psql's output lines, asserting it succeeded.
fn psql_ok(port: u16, key: &str, commands: &[&str]) -> Vec<String> {
    let out = psql(port, key, commands);
    assert!(
        out.status.success(),
        "{commands:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// psql's error text, asserting it failed with an error of SQLSTATE `code`.
fn psql_err(port: u16, key: &str, commands: &[&str], code: &str) -> String {
    let out = psql(port, key, commands);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "{commands:?} must fail; printed {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        stderr.contains(&format!("ERROR:  {code}:")),
        "{commands:?}: expected SQLSTATE {code}, got {stderr}"
    );
    stderr
}

/// `openmonetize query` rows (no header) as `tenant` (every tenant when `None`), each
/// row joined with `|` as psql prints it.
fn cli(data: &Path, tenant: Option<&str>, sql: &str) -> Vec<String> {
    let mut args = vec!["query", "--data", data.to_str().unwrap(), "--format", "csv"];
    if let Some(t) = tenant {
        args.extend(["--tenant", t]);
    }
    args.push(sql);
    parse_csv(&openmonetize(&args))
        .into_iter()
        .skip(1)
        .map(|r| r.join("|"))
        .collect()
}

#[test]
fn psql_answers_as_the_cli_does_and_refuses_a_wrong_key() {
    let f = fixture();
    let port = f.server.pg_port;

    // Counts, per tenant and for the admin.
    let count = "SELECT count(*) FROM events";
    let acme = cli(&f.data, Some("acme"), count);
    assert_eq!(psql_ok(port, TENANT_KEY, &[count]), acme);
    assert_ne!(acme, ["0"]);
    let all = cli(&f.data, None, count);
    assert_eq!(psql_ok(port, ADMIN_KEY, &[count]), all);
    assert_ne!(all, acme, "the other tenant has rows");
    assert_eq!(
        psql_ok(
            port,
            ADMIN_KEY,
            &["SELECT DISTINCT tenant_id FROM events ORDER BY 1"]
        ),
        ["acme", "default"]
    );

    // Several statements in one message, transaction statements answered locally.
    let lines = psql_ok(
        port,
        TENANT_KEY,
        &["BEGIN; SELECT count(*) FROM events; SET search_path = public; COMMIT"],
    );
    assert!(lines.contains(&acme[0]), "{lines:?}");
    assert_eq!(
        lines.first().map(String::as_str),
        Some("BEGIN"),
        "{lines:?}"
    );
    assert_eq!(
        lines.last().map(String::as_str),
        Some("COMMIT"),
        "{lines:?}"
    );

    // Decimals exactly, with their 9 digits; strings; nulls.
    let balances =
        "SELECT customer_id, balance, granted, overage FROM credit_balances ORDER BY customer_id";
    let want = cli(
        &f.data,
        Some("acme"),
        "SELECT customer_id, CAST(balance AS VARCHAR), CAST(granted AS VARCHAR), \
         CAST(overage AS VARCHAR) FROM credit_balances ORDER BY customer_id",
    );
    assert!(!want.is_empty());
    assert_eq!(psql_ok(port, TENANT_KEY, &[balances]), want);
    assert_eq!(
        psql_ok(
            port,
            TENANT_KEY,
            &["SELECT CAST(NULL AS VARCHAR) IS NULL, CAST(NULL AS DECIMAL(38, 9))"]
        ),
        ["t|"]
    );

    // Timestamps as timestamptz in UTC (event e101_5 of the golden file:
    // "2026-10-26T04:20:22.085000Z", value 1).
    assert_eq!(
        psql_ok(
            port,
            TENANT_KEY,
            &["SELECT id, timestamp, value, customer_id FROM events WHERE id = 'e101_5'"]
        ),
        ["e101_5|2026-10-26 04:20:22.085+00|1.000000000|cust_0006"]
    );

    // SHOW of standard settings; unknown ones are errors.
    assert_eq!(
        psql_ok(
            port,
            TENANT_KEY,
            &["SHOW TimeZone", "SHOW standard_conforming_strings"]
        ),
        ["Etc/UTC", "on"]
    );
    psql_err(port, TENANT_KEY, &["SHOW no_such_setting"], "42704");

    // Errors with their SQLSTATEs; the session survives them.
    psql_err(port, TENANT_KEY, &["SELEC 1"], "42601");
    psql_err(port, TENANT_KEY, &["SELECT * FROM no_such_table"], "42P01");
    psql_err(
        port,
        TENANT_KEY,
        &["SELECT no_such_column FROM events"],
        "42703",
    );
    let out = psql(port, TENANT_KEY, &["SELECT * FROM no_such_table", count]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), acme[0]);
    // More rows than the limit (100,000): refused, not truncated.
    psql_err(
        port,
        TENANT_KEY,
        &["SELECT a.id FROM events a CROSS JOIN events b CROSS JOIN events c"],
        "54000",
    );

    // A wrong key: psql's connection failure (exit status 2).
    let out = psql(port, "not-a-key", &[count]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("password authentication failed"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("not-a-key"),
        "the key is not echoed: {stderr}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn a_tenant_key_reads_only_its_rows_whatever_the_sql() {
    let f = fixture();
    let port = f.server.pg_port;
    let events_file = std::fs::read_dir(f.data.join("events"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "parquet"))
        .expect("a committed events file");
    let events_file = events_file.to_str().unwrap();
    let events_dir = f.data.join("events");
    let events_dir = events_dir.to_str().unwrap();
    // The other tenant has rows to hide, in the file the SQL below tries to read.
    assert_ne!(
        cli(
            &f.data,
            None,
            "SELECT count(*) FROM events WHERE tenant_id = 'default'"
        ),
        ["0"]
    );

    // Queries that run, and see acme's rows only.
    for (sql, want) in [
        ("SELECT DISTINCT tenant_id FROM events", vec!["acme"]),
        (
            "SELECT count(*) FROM events WHERE tenant_id = 'default'",
            vec!["0"],
        ),
        (
            "SELECT count(*) FROM events WHERE tenant_id <> 'acme' OR tenant_id IS NULL",
            vec!["0"],
        ),
        (
            "SELECT tenant_id FROM events UNION SELECT tenant_id FROM usage_windows \
             UNION SELECT tenant_id FROM credit_balances UNION SELECT tenant_id FROM costs",
            vec!["acme"],
        ),
        (
            "SELECT count(*) FROM usage_windows WHERE customer_id IN \
             (SELECT customer_id FROM events WHERE tenant_id = 'default')",
            vec!["0"],
        ),
        (
            "SELECT DISTINCT tenant_id FROM usage_windows WHERE customer_id IN \
             (SELECT customer_id FROM events)",
            vec!["acme"],
        ),
        (
            "WITH x AS (SELECT * FROM events) SELECT DISTINCT tenant_id FROM x",
            vec!["acme"],
        ),
        (
            "SELECT DISTINCT e.tenant_id, w.tenant_id FROM events e \
             JOIN usage_windows w ON w.customer_id = e.customer_id",
            vec!["acme|acme"],
        ),
        (
            "SELECT DISTINCT tenant_id FROM datafusion.public.events",
            vec!["acme"],
        ),
        (
            "SELECT (SELECT count(*) FROM events WHERE tenant_id = 'default') + \
             (SELECT count(*) FROM datafusion.public.usage_windows WHERE tenant_id = 'default')",
            vec!["0"],
        ),
    ] {
        assert_eq!(psql_ok(port, TENANT_KEY, &[sql]), want, "{sql}");
    }
    // count(*) answers from the tenant's rows (no statistics shortcut over the file).
    assert_eq!(
        psql_ok(port, TENANT_KEY, &["SELECT count(*) FROM events"]),
        cli(&f.data, Some("acme"), "SELECT count(*) FROM events")
    );

    // Statements that must be refused: no catalog, table functions, files, DDL, DML.
    let copy_target = f.data.parent().unwrap().join("copied.csv");
    let refused = [
        ("SELECT * FROM information_schema.tables", "42P01"),
        ("SELECT * FROM information_schema.columns", "42P01"),
        ("SHOW TABLES", "0A000"),
        ("SELECT * FROM generate_series(1, 3)", "42883"),
        ("SELECT * FROM range(3)", "42883"),
        (
            &format!("SELECT * FROM read_parquet('{events_file}')"),
            "42883",
        ),
        ("SELECT * FROM read_csv('/etc/passwd')", "42883"),
        (&format!("SELECT * FROM '{events_file}'"), "42P01"),
        (
            &format!("CREATE EXTERNAL TABLE raw STORED AS PARQUET LOCATION '{events_dir}'"),
            "0A000",
        ),
        ("CREATE VIEW v AS SELECT * FROM events", "0A000"),
        (
            &format!("COPY (SELECT * FROM events) TO '{}'", copy_target.display()),
            "0A000",
        ),
        ("INSERT INTO events SELECT * FROM events", "0A000"),
        ("DROP TABLE events", "0A000"),
    ];
    for (sql, code) in &refused {
        psql_err(port, TENANT_KEY, &[sql], code);
    }
    assert!(!copy_target.exists(), "COPY TO wrote a file");

    // SET is accepted without effect: information_schema stays off, in the same message
    // and in a later one on the same connection.
    psql_err(
        port,
        TENANT_KEY,
        &[
            "SET datafusion.catalog.information_schema = true; SELECT * FROM information_schema.tables",
        ],
        "42P01",
    );
    let out = psql(
        port,
        TENANT_KEY,
        &[
            "SET datafusion.catalog.information_schema = true",
            "SELECT table_name FROM information_schema.tables",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("ERROR:  42P01:"),
        "{stderr}"
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "SET");

    // The admin key reads every tenant, still without DDL or file reads.
    assert_eq!(
        psql_ok(
            port,
            ADMIN_KEY,
            &["SELECT DISTINCT tenant_id FROM events ORDER BY tenant_id"]
        ),
        ["acme", "default"]
    );
    psql_err(port, ADMIN_KEY, &[refused[8].0], "0A000");
}

#[test]
fn psycopg_transactions_parameters_prepared_statements_and_types() {
    let f = fixture();
    let acme = |sql: &str| cli(&f.data, Some("acme"), sql);
    let customers = acme("SELECT DISTINCT customer_id FROM events ORDER BY customer_id");
    assert!(customers.len() >= 3, "{customers:?}");
    // At least 6 executions of the same query, to cross psycopg's prepare threshold (5).
    let runs: Vec<&String> = customers
        .iter()
        .cycle()
        .take(customers.len().max(7))
        .collect();
    let since: i64 =
        acme("SELECT CAST(timestamp AS BIGINT) AS t FROM events ORDER BY t LIMIT 1 OFFSET 40")[0]
            .parse()
            .unwrap();

    let python = std::env::var("OM_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = manifest_dir().join("tests/integration/pg_client.py");
    let args = serde_json::json!({
        "host": "127.0.0.1",
        "port": f.server.pg_port,
        "key": TENANT_KEY,
        "customers": runs,
        "since_micros": since,
        "other_tenant": "default",
    });
    let out = Command::new(&python)
        .arg(&script)
        .arg(args.to_string())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    assert!(
        out.status.success(),
        "pg_client.py failed (scripts/test installs psycopg into the venv and sets OM_PYTHON):\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let int = |v: &serde_json::Value| v.as_i64().unwrap_or_else(|| panic!("{v} in {seen}"));
    let num = |rows: Vec<String>| -> i64 { rows[0].parse().unwrap() };

    assert_eq!(seen["server_version"], 160006);
    let count = num(acme("SELECT count(*) FROM events"));
    assert_eq!(int(&seen["count"]), count);
    assert_eq!(int(&seen["count_after_errors"]), count);
    // psycopg sent BEGIN before the first query and COMMIT at commit().
    assert_eq!(seen["status_in_transaction"], "INTRANS");
    assert_eq!(seen["status_after_commit"], "IDLE");

    let first = runs[0];
    let want = acme(&format!(
        "SELECT count(*), CAST(sum(value) AS VARCHAR) FROM events WHERE customer_id = '{first}'"
    ));
    assert_eq!(
        format!(
            "{}|{}",
            seen["customer"]["count"],
            seen["customer"]["sum"].as_str().unwrap()
        ),
        want[0]
    );
    let per_customer: Vec<String> = seen["per_customer"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| format!("{}|{}", p[0].as_str().unwrap(), p[1]))
        .collect();
    let want: Vec<String> = runs
        .iter()
        .map(|c| {
            let n = acme(&format!(
                "SELECT count(*) FROM events WHERE customer_id = '{c}'"
            ));
            format!("{c}|{}", n[0])
        })
        .collect();
    assert_eq!(per_customer, want);
    if !seen["prepared_statements"].is_null() {
        assert!(int(&seen["prepared_statements"]) >= 1, "{seen}");
    }
    assert_eq!(
        int(&seen["explicitly_prepared"]),
        count - int(&seen["customer"]["count"])
    );

    let want = acme(
        "SELECT CAST(value AS VARCHAR), CAST(CAST(timestamp AS BIGINT) AS VARCHAR), customer_id \
         FROM events ORDER BY id LIMIT 1",
    );
    let row = &seen["first_row"];
    assert_eq!(
        format!(
            "{}|{}|{}",
            row["value"].as_str().unwrap(),
            row["micros"],
            row["customer_id"].as_str().unwrap()
        ),
        want[0]
    );
    assert_eq!(
        int(&seen["since_count"]),
        num(acme(&format!(
            "SELECT count(*) FROM events WHERE CAST(timestamp AS BIGINT) >= {since}"
        )))
    );
    let want = acme(
        "SELECT is_final, events FROM usage_windows \
         ORDER BY customer_id, meter, dimensions, window_size, window_start LIMIT 1",
    );
    assert_eq!(
        format!(
            "{}|{}",
            seen["window"]["is_final"], seen["window"]["events"]
        ),
        want[0]
    );
    assert_eq!(
        seen["big_decimal"],
        "-12345678901234567890123456789.123456789"
    );
    assert_eq!(int(&seen["other_tenant_count"]), 0);
    // The cross join would run for minutes; the cancel request after 1 s stops it.
    assert_eq!(seen["cancelled"], "57014", "{seen}");
    assert!(seen["cancel_seconds"].as_f64().unwrap() < 20.0, "{seen}");
    assert_eq!(int(&seen["count_after_cancel"]), count);
    assert_eq!(
        seen["errors"],
        serde_json::json!({
            "unknown_table": "42P01",
            "syntax": "42601",
            "ddl": "0A000",
            "binary_result": "0A000",
            "bad_parameter": "22P02",
        })
    );
}
