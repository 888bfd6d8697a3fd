//! `openmonetize serve` with its embedded job: commands and events posted over HTTP,
//! their verdicts, the live balance and entitlements against the committed tables, the
//! tenant boundary on every endpoint, metrics, and a restart that resumes from the last
//! commit. Uses the real binary and plain HTTP/1.1.

use super::common::{files_under, named_by_newest, sha256_hex};
use super::serve::{request, start, start_with_env, try_request};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::TcpStream;

const CONFIG: &str = r#"
[[meters]]
name = "api_calls"
event_type = "api_call"
aggregation = "count"
windows = ["hour", "month"]

[[meters]]
name = "tokens"
event_type = "ai_generation"
aggregation = "sum"
value = "$.properties.tokens"
windows = ["hour", "month"]

[[burn_rates]]
event_type = "ai_generation"
value = "$.properties.tokens"
credits_per_unit = "0.01"

[[plans]]
name = "free"
features.api_calls = { meter = "api_calls", limit = "2", period = "month" }
features.ai = { credits = true }
features.sso = false

[pipeline]
allowed_lateness = "48h"
dedup_horizon = "7d"
"#;

/// The config with keys for tenants acme and beta and an admin.
fn config(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("serve.toml");
    let keys = format!(
        "[[api_keys]]\ntenant = \"acme\"\nsha256 = \"{}\"\n[[api_keys]]\ntenant = \"beta\"\nsha256 = \"{}\"\n[[api_keys]]\nadmin = true\nsha256 = \"{}\"\n",
        sha256_hex("acme-key"),
        sha256_hex("beta-key"),
        sha256_hex("admin-key")
    );
    std::fs::write(&path, format!("{CONFIG}{keys}")).unwrap();
    path
}

fn call(id: &str, tenant: &str, customer: &str, at: &str) -> Value {
    json!({"id": id, "tenant_id": tenant, "customer_id": customer,
           "event_type": "api_call", "timestamp": at})
}

fn generation(id: &str, customer: &str, at: &str, tokens: u64) -> Value {
    json!({"id": id, "tenant_id": "acme", "customer_id": customer,
           "event_type": "ai_generation", "timestamp": at,
           "properties": {"tokens": tokens}})
}

fn post(addr: &str, path: &str, key: &str, body: &Value) -> (u16, Value) {
    request(addr, "POST", path, Some(key), &body.to_string())
}

fn get(addr: &str, path: &str, key: &str) -> (u16, Value) {
    request(addr, "GET", path, Some(key), "")
}

fn statuses(answer: &Value) -> Vec<String> {
    answer["results"]
        .as_array()
        .unwrap_or_else(|| panic!("no results in {answer}"))
        .iter()
        .map(|r| r["status"].as_str().unwrap().to_string())
        .collect()
}

fn sql(addr: &str, key: &str, sql: &str) -> Vec<Value> {
    let (status, body) = post(addr, "/v1/query", key, &json!({ "sql": sql }));
    assert_eq!(status, 200, "{sql}: {body}");
    body["rows"].as_array().unwrap().clone()
}

fn metrics(addr: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    text
}

#[test]
fn posted_events_are_judged_counted_once_and_visible_live_and_in_sql() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let data = data.to_str().unwrap();
    let config = config(tmp.path());
    let server = start(
        data,
        &config,
        &["--commit-interval", "50ms", "--workers", "2"],
    );
    let addr = server.addr.clone();

    // A grant and a plan for acme's c1; a command for another tenant is refused.
    let commands = json!([
        {"kind": "grant", "tenant_id": "acme", "grant_id": "g1", "customer_id": "c1",
         "amount": "100", "priority": 1, "effective_at": "2026-11-01T00:00:00Z"},
        {"kind": "subscribe", "tenant_id": "acme", "customer_id": "c1", "plan": "free",
         "effective_at": "2026-11-01T00:00:00Z"},
        {"kind": "grant", "tenant_id": "beta", "grant_id": "g2", "customer_id": "x",
         "amount": "5", "effective_at": "2026-11-01T00:00:00Z"},
    ]);
    let (status, answer) = post(&addr, "/v1/commands", "acme-key", &commands);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(statuses(&answer), ["accepted", "accepted", "rejected"]);
    let reason = answer["results"][2]["reason"].as_str().unwrap();
    assert!(
        reason.contains("tenant_id beta") && reason.contains("acme"),
        "{reason}"
    );

    // One batch: three good events, an in-batch duplicate, an invalid event, an event
    // of another tenant.
    let batch = json!([
        call("e1", "acme", "c1", "2026-11-20T10:00:00Z"),
        call("e2", "acme", "c1", "2026-11-20T10:05:00Z"),
        generation("e3", "c1", "2026-11-20T10:10:00Z", 1500),
        call("e1", "acme", "c1", "2026-11-20T10:00:00Z"),
        {"id": "bad", "tenant_id": "acme", "event_type": "api_call", "timestamp": "2026-11-20T10:00:00Z"},
        call("b1", "beta", "x", "2026-11-20T10:00:00Z"),
    ]);
    let (status, answer) = post(&addr, "/v1/events?wait=commit", "acme-key", &batch);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        statuses(&answer),
        [
            "accepted",
            "accepted",
            "accepted",
            "duplicate",
            "rejected",
            "rejected"
        ]
    );
    assert_eq!(
        (
            &answer["accepted"],
            &answer["duplicate"],
            &answer["rejected"]
        ),
        (&json!(3), &json!(1), &json!(2))
    );
    assert!(
        answer["results"][4]["reason"]
            .as_str()
            .unwrap()
            .contains("customer_id"),
        "{answer}"
    );
    let epoch = answer["epoch"].as_u64().unwrap();

    // The same batch again: every good event is now a duplicate.
    let (status, again) = post(&addr, "/v1/events", "acme-key", &batch);
    assert_eq!(status, 200, "{again}");
    assert_eq!(
        statuses(&again),
        [
            "duplicate",
            "duplicate",
            "duplicate",
            "duplicate",
            "rejected",
            "rejected"
        ]
    );
    assert!(again["epoch"].as_u64().unwrap() > epoch);

    // Counted once in the tables.
    let rows = sql(
        &addr,
        "acme-key",
        "SELECT meter, CAST(value AS VARCHAR) AS value FROM usage_windows WHERE window_size = 'month' ORDER BY meter",
    );
    assert_eq!(
        rows,
        [
            json!({"meter": "api_calls", "value": "2.000000000"}),
            json!({"meter": "tokens", "value": "1500.000000000"})
        ]
    );
    let rows = sql(&addr, "acme-key", "SELECT count(*) AS n FROM events");
    assert_eq!(rows[0]["n"], 3);
    let rows = sql(
        &addr,
        "acme-key",
        "SELECT count(*) AS n FROM rejected_events WHERE reason LIKE 'duplicate%'",
    );
    assert_eq!(
        rows[0]["n"], 5,
        "one in the first batch, four in the second"
    );

    // The live balance equals the committed credit_balances row: 100 granted, 15 burned.
    let (status, balance) = get(&addr, "/v1/customers/c1/balance", "acme-key");
    assert_eq!(status, 200, "{balance}");
    assert_eq!(balance["balance"], "85.000000000");
    assert_eq!(balance["granted"], "100.000000000");
    assert_eq!(balance["consumed"], "15.000000000");
    let table = sql(
        &addr,
        "acme-key",
        "SELECT CAST(balance AS VARCHAR) AS balance, CAST(granted AS VARCHAR) AS granted, CAST(consumed AS VARCHAR) AS consumed FROM credit_balances WHERE customer_id = 'c1'",
    );
    assert_eq!(
        table,
        [
            json!({"balance": balance["balance"], "granted": balance["granted"], "consumed": balance["consumed"]})
        ]
    );

    // Entitlements: two calls reached the free plan's limit of 2; credits remain.
    let (status, all) = get(&addr, "/v1/customers/c1/entitlements", "acme-key");
    assert_eq!(status, 200, "{all}");
    let by_feature = |f: &str| {
        all["entitlements"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["feature"] == f)
            .cloned()
            .unwrap_or_else(|| panic!("no {f} in {all}"))
    };
    assert_eq!(by_feature("api_calls")["reason"], "limit_exceeded");
    assert_eq!(by_feature("api_calls")["has_access"], false);
    assert_eq!(by_feature("ai")["reason"], "ok");
    assert_eq!(by_feature("ai")["remaining"], "85.000000000");
    assert_eq!(by_feature("sso")["reason"], "not_in_plan");
    let (status, one) = get(&addr, "/v1/customers/c1/entitlements/ai", "acme-key");
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["has_access"], true);
    let table = sql(
        &addr,
        "acme-key",
        "SELECT feature, has_access, reason FROM entitlements WHERE customer_id = 'c1' ORDER BY feature",
    );
    let live: Vec<Value> = ["ai", "api_calls", "sso"]
        .iter()
        .map(|f| {
            let e = by_feature(f);
            json!({"feature": f, "has_access": e["has_access"], "reason": e["reason"]})
        })
        .collect();
    assert_eq!(table, live);
    let (status, missing) = get(&addr, "/v1/customers/c1/entitlements/nope", "acme-key");
    assert_eq!(
        (status, &missing["error"]["code"]),
        (404, &json!("unknown_feature"))
    );

    // The tenant boundary: beta cannot see acme's customer (404, not 403), nor its rows.
    let (status, answer) = get(&addr, "/v1/customers/c1/balance", "beta-key");
    assert_eq!(
        (status, &answer["error"]["code"]),
        (404, &json!("unknown_customer"))
    );
    let (status, answer) = get(&addr, "/v1/customers/c1/balance?tenant_id=acme", "beta-key");
    assert_eq!(status, 403, "{answer}");
    assert!(sql(&addr, "beta-key", "SELECT * FROM events").is_empty());
    assert!(sql(&addr, "beta-key", "SELECT * FROM credit_balances").is_empty());
    // Crafted SQL through HTTP as beta: errors, or no row of acme's.
    for crafted in [
        "SELECT tenant_id FROM events UNION ALL SELECT tenant_id FROM credit_balances",
        "SELECT * FROM events WHERE id IN (SELECT id FROM events WHERE tenant_id = 'acme')",
        "WITH x AS (SELECT * FROM usage_windows) SELECT * FROM x",
        "SELECT * FROM datafusion.public.events",
        "SELECT * FROM information_schema.tables",
        "SELECT * FROM generate_series(1, 3)",
        "SELECT count(*) AS n FROM events HAVING count(*) > 0",
    ] {
        let (status, body) = post(&addr, "/v1/query", "beta-key", &json!({ "sql": crafted }));
        if status == 200 {
            let text = body["rows"].to_string();
            assert!(
                !text.contains("acme") && !text.contains("c1"),
                "{crafted}: {body}"
            );
        } else {
            assert_eq!(status, 400, "{crafted}: {body}");
        }
    }
    // The admin names the tenant.
    let (status, answer) = get(&addr, "/v1/customers/c1/balance", "admin-key");
    assert_eq!(
        (status, &answer["error"]["code"]),
        (400, &json!("tenant_required"))
    );
    let (status, answer) = get(
        &addr,
        "/v1/customers/c1/balance?tenant_id=acme",
        "admin-key",
    );
    assert_eq!((status, &answer["balance"]), (200, &json!("85.000000000")));
    // Bad requests.
    for (body, code) in [("not json", "bad_body"), ("[]", "bad_body")] {
        let (status, answer) = request(&addr, "POST", "/v1/events", Some("acme-key"), body);
        assert_eq!(
            (status, &answer["error"]["code"]),
            (400, &json!(code)),
            "{body}"
        );
    }
    let (status, _) = request(&addr, "POST", "/v1/events", None, "{}");
    assert_eq!(status, 401);
    let big = format!("[{}]", vec!["{}"; 600_000].join(","));
    let (status, answer) = request(&addr, "POST", "/v1/events", Some("acme-key"), &big);
    assert_eq!(
        (status, &answer["error"]["code"]),
        (413, &json!("body_too_large"))
    );

    let text = metrics(&addr);
    for line in [
        "om_events_accepted_total 3",
        "om_events_duplicate_total 5",
        "om_events_rejected_total 9",
        "om_commands_accepted_total 2",
        "om_commands_rejected_total 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
    }
    assert!(text.contains("om_http_requests_total{route=\"/v1/events\",status=\"200\"} 2"));

    // An invalid record claiming another tenant is the poster's rejection, not beta's.
    let forged = json!({"id": "f1", "tenant_id": "beta", "customer_id": "x",
                        "event_type": "api_call", "timestamp": "not a time"});
    let (status, answer) = post(
        &addr,
        "/v1/events?wait=commit",
        "acme-key",
        &json!([forged]),
    );
    assert_eq!(
        (status, statuses(&answer)),
        (200, vec!["rejected".to_string()])
    );
    assert!(sql(&addr, "beta-key", "SELECT * FROM rejected_events").is_empty());
    let mine = sql(
        &addr,
        "acme-key",
        "SELECT count(*) AS n FROM rejected_events WHERE raw LIKE '%not a time%'",
    );
    assert_eq!(mine[0]["n"], 1);

    // A restart resumes from the last commit: balances and dedup state survive.
    let status = server.terminate();
    assert!(status.success(), "serve exited with {status}");
    let server = start(
        data,
        &config,
        &["--commit-interval", "50ms", "--workers", "2"],
    );
    let addr = server.addr.clone();
    let (status, balance) = get(&addr, "/v1/customers/c1/balance", "acme-key");
    assert_eq!(
        (status, &balance["balance"]),
        (200, &json!("85.000000000")),
        "{balance}"
    );
    let (status, answer) = post(
        &addr,
        "/v1/events?wait=commit",
        "acme-key",
        &json!([
            call("e1", "acme", "c1", "2026-11-20T10:00:00Z"),
            generation("e4", "c1", "2026-11-20T11:00:00Z", 500),
        ]),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(statuses(&answer), ["duplicate", "accepted"]);
    let (_, balance) = get(&addr, "/v1/customers/c1/balance", "acme-key");
    assert_eq!(balance["balance"], "80.000000000");
    assert_eq!(
        sql(&addr, "acme-key", "SELECT count(*) AS n FROM events")[0]["n"],
        4
    );
}

#[test]
fn answers_come_once_journaled_and_a_crash_before_the_commit_loses_none_of_them() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let data = dir.to_str().unwrap();
    let config = config(tmp.path());
    // No commit for an hour: every answer comes from the journal alone.
    let server = start(
        data,
        &config,
        &[
            "--commit-interval",
            "1h",
            "--epoch-interval",
            "20ms",
            "--workers",
            "2",
        ],
    );
    let addr = server.addr.clone();
    let grant = json!([{"kind": "grant", "tenant_id": "acme", "grant_id": "g1",
        "customer_id": "c1", "amount": "100", "effective_at": "2026-11-01T00:00:00Z"}]);
    let (status, answer) = post(&addr, "/v1/commands", "acme-key", &grant);
    assert_eq!((status, statuses(&answer)), (200, vec!["accepted".into()]));
    assert_eq!(answer["committed"], false, "{answer}");
    let first = json!([
        call("e1", "acme", "c1", "2026-11-20T10:00:00Z"),
        call("e2", "acme", "c1", "2026-11-20T10:05:00Z"),
        generation("e3", "c1", "2026-11-20T10:10:00Z", 1500),
        call("e1", "acme", "c1", "2026-11-20T10:00:00Z"),
        {"id": "bad", "tenant_id": "acme", "event_type": "api_call", "timestamp": "2026-11-20T10:00:00Z"},
    ]);
    let (status, answer) = post(&addr, "/v1/events", "acme-key", &first);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        statuses(&answer),
        ["accepted", "accepted", "accepted", "duplicate", "rejected"]
    );
    assert_eq!(answer["committed"], false, "{answer}");
    let second = json!([
        call("e1", "acme", "c1", "2026-11-20T10:00:00Z"),
        generation("e4", "c1", "2026-11-20T11:00:00Z", 500),
    ]);
    let (status, answer) = post(&addr, "/v1/events", "acme-key", &second);
    assert_eq!(
        (status, statuses(&answer)),
        (200, vec!["duplicate".into(), "accepted".into()])
    );
    let files = files_under(&dir);
    assert!(
        !files.iter().any(|f| f.starts_with("_commits/")),
        "nothing should be committed yet: {files:?}"
    );
    assert!(
        files.iter().any(|f| f.starts_with("_journal/")),
        "the answered records should be journaled: {files:?}"
    );
    let pending = metrics(&addr)
        .lines()
        .find_map(|l| l.strip_prefix("om_journal_epochs ")?.parse::<u64>().ok());
    assert!(
        pending.is_some_and(|n| n >= 2),
        "two answered epochs wait for a commit: {pending:?}"
    );

    // Killed before any commit: the restart replays the journal, with the verdicts
    // given before.
    let mut server = server;
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    drop(server);
    let server = start(
        data,
        &config,
        &["--commit-interval", "50ms", "--workers", "2"],
    );
    let addr = server.addr.clone();
    let (status, answer) = post(&addr, "/v1/events?wait=commit", "acme-key", &second);
    assert_eq!(
        (status, statuses(&answer)),
        (200, vec!["duplicate".into(), "duplicate".into()])
    );
    assert_eq!(answer["committed"], true, "{answer}");
    // Each accepted event counted once; the grant applied; the rejected one recorded.
    assert_eq!(
        sql(&addr, "acme-key", "SELECT id FROM events ORDER BY id"),
        ["e1", "e2", "e3", "e4"].map(|id| json!({"id": id}))
    );
    assert_eq!(
        sql(
            &addr,
            "acme-key",
            "SELECT meter, CAST(value AS VARCHAR) AS value FROM usage_windows WHERE window_size = 'month' ORDER BY meter",
        ),
        [
            json!({"meter": "api_calls", "value": "2.000000000"}),
            json!({"meter": "tokens", "value": "2000.000000000"})
        ]
    );
    assert_eq!(
        sql(
            &addr,
            "acme-key",
            "SELECT count(*) AS n FROM rejected_events WHERE event_id = 'bad'"
        )[0]["n"],
        1
    );
    let (_, balance) = get(&addr, "/v1/customers/c1/balance", "acme-key");
    assert_eq!(balance["balance"], "80.000000000", "{balance}");
    // The commit covers the journal's segments: they are deleted.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while files_under(&dir).iter().any(|f| f.starts_with("_journal/")) {
        assert!(
            std::time::Instant::now() < deadline,
            "committed journal segments were never deleted"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let status = server.terminate();
    assert!(status.success(), "serve exited with {status}");
}

/// The journal on an S3-compatible server: records answered before any commit survive a
/// kill -9 and are counted once.
#[test]
fn the_journal_on_s3_replays_after_a_crash() {
    let s3 = super::services::S3Server::start();
    s3.bucket("journal");
    let tmp = tempfile::tempdir().unwrap();
    let config = config(tmp.path());
    let data = "s3://journal/serve";
    let env = s3.env();
    let server = start_with_env(
        data,
        &config,
        &["--commit-interval", "1h", "--workers", "2"],
        &env,
    );
    let posted = json!([
        call("e1", "acme", "c1", "2026-11-20T10:00:00Z"),
        generation("e2", "c1", "2026-11-20T10:10:00Z", 700),
        call("e1", "acme", "c1", "2026-11-20T10:00:00Z"),
    ]);
    let (status, answer) = post(&server.addr, "/v1/events", "acme-key", &posted);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(statuses(&answer), ["accepted", "accepted", "duplicate"]);
    assert_eq!(answer["committed"], false, "{answer}");
    let mut server = server;
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    drop(server);

    let server = start_with_env(
        data,
        &config,
        &["--commit-interval", "50ms", "--workers", "2"],
        &env,
    );
    let (status, answer) = post(&server.addr, "/v1/events?wait=commit", "acme-key", &posted);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(statuses(&answer), ["duplicate", "duplicate", "duplicate"]);
    assert_eq!(
        sql(
            &server.addr,
            "acme-key",
            "SELECT id FROM events ORDER BY id"
        ),
        [json!({"id": "e1"}), json!({"id": "e2"})]
    );
    assert!(server.terminate().success());
}

#[test]
fn serve_killed_at_random_points_while_posting_loses_and_doubles_nothing() {
    use rand::{Rng, SeedableRng};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let data = dir.to_str().unwrap();
    let config = config(tmp.path());
    let args = [
        "--commit-interval",
        "200ms",
        "--epoch-interval",
        "20ms",
        "--workers",
        "2",
    ];
    // 80 requests of 25 events: every event a distinct id, except that the first event
    // of each request repeats one of the request before (a duplicate by design).
    let requests: Vec<String> = (0..80)
        .map(|r| {
            let events: Vec<Value> = (0..25)
                .map(|j| {
                    let id = if j == 0 && r > 0 {
                        format!("r{}-7", r - 1)
                    } else {
                        format!("r{r}-{j}")
                    };
                    let minute = (r * 25 + j) % 600;
                    let at = format!("2026-11-20T{:02}:{:02}:00Z", 8 + minute / 60, minute % 60);
                    generation(&id, &format!("c{}", j % 5), &at, 10)
                })
                .collect();
            Value::Array(events).to_string()
        })
        .collect();
    let distinct = 80 * 25 - 79;

    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let mut accepted = std::collections::BTreeSet::new();
    let mut next = 0;
    let (mut kills, mut journaled) = (0, 0);
    while next < requests.len() {
        let mut server = start(data, &config, &args);
        let addr = server.addr.clone();
        let from = next;
        let all = requests.clone();
        // The client posts one request after another and, like any client, posts again
        // a request it got no answer to.
        let poster = std::thread::spawn(move || {
            let mut answers = Vec::new();
            for (i, body) in all.iter().enumerate().skip(from) {
                match try_request(&addr, "POST", "/v1/events", Some("acme-key"), body) {
                    Ok((200, answer)) => answers.push(answer),
                    _ => return (i, answers),
                }
            }
            (all.len(), answers)
        });
        if kills < 3 {
            let delay = rng.random_range(100..700);
            std::thread::sleep(std::time::Duration::from_millis(delay));
            server.child.kill().unwrap();
            server.child.wait().unwrap();
            kills += 1;
            // Answered but not committed yet: the restart replays these.
            journaled += files_under(&dir)
                .iter()
                .filter(|f| f.starts_with("_journal/"))
                .count();
        }
        let (stopped_at, answers) = poster.join().unwrap();
        // No event is answered "accepted" twice, across crashes and re-posts.
        for (k, answer) in answers.iter().enumerate() {
            let posted: Value = serde_json::from_str(&requests[from + k]).unwrap();
            for (i, status) in statuses(answer).iter().enumerate() {
                if status == "accepted" {
                    let id = posted[i]["id"].as_str().unwrap().to_string();
                    assert!(
                        accepted.insert(id.clone()),
                        "seed {seed}: {id} was answered accepted twice"
                    );
                }
            }
        }
        next = stopped_at;
        // The server, killed or not, is killed now (dropped): the runs after the third
        // kill end like the others, with epochs journaled and maybe not committed.
        drop(server);
    }
    // Everything answered; a last restart replays what the last run journaled. The same
    // requests again are all duplicates, and the tables hold every distinct event once.
    let server = start(data, &config, &args);
    let everything: Vec<Value> = requests
        .iter()
        .flat_map(|r| serde_json::from_str::<Vec<Value>>(r).unwrap())
        .collect();
    let (status, answer) = post(
        &server.addr,
        "/v1/events?wait=commit",
        "acme-key",
        &Value::Array(everything),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (&answer["accepted"], &answer["duplicate"]),
        (&json!(0), &json!(80 * 25)),
        "seed {seed}"
    );
    let counts = sql(
        &server.addr,
        "acme-key",
        "SELECT count(*) AS n, count(DISTINCT id) AS d FROM events",
    );
    assert_eq!(
        counts,
        [json!({"n": distinct, "d": distinct})],
        "seed {seed}, {kills} kills"
    );
    let tokens = sql(
        &server.addr,
        "acme-key",
        "SELECT CAST(sum(value) AS VARCHAR) AS v, sum(events) AS n FROM usage_windows \
         WHERE meter = 'tokens' AND window_size = 'month'",
    );
    assert_eq!(
        tokens,
        [json!({"v": format!("{}.000000000", distinct * 10), "n": distinct})],
        "seed {seed}"
    );
    assert!(server.terminate().success());
    assert!(
        journaled > 0,
        "seed {seed}: no kill found an epoch journaled and not committed; the test does not exercise the replay"
    );
}

#[test]
fn an_unknown_wait_is_refused_with_the_choices() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let config = config(tmp.path());
    let server = start(data.to_str().unwrap(), &config, &["--workers", "1"]);
    let body = json!([call("e1", "acme", "c1", "2026-11-20T10:00:00Z")]);
    let (status, answer) = post(&server.addr, "/v1/events?wait=forever", "acme-key", &body);
    assert_eq!(status, 400, "{answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("wait=forever") && message.contains("wait=commit"),
        "{message}"
    );
}

#[test]
fn kafka_mode_produces_posted_records_and_answers_their_verdicts_after_the_commit() {
    let broker = super::services::Broker::start();
    let events = broker.topic("posted-events", 2);
    let commands = broker.topic("posted-commands", 1);
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let data = data.to_str().unwrap();
    let config = config(tmp.path());
    let server = start(
        data,
        &config,
        &[
            "--commit-interval",
            "100ms",
            "--workers",
            "2",
            "--events-topic",
            &events,
            "--commands-topic",
            &commands,
        ],
    );
    let addr = server.addr.clone();

    // Commands go through Kafka too; another tenant's is refused at once.
    let (status, answer) = post(
        &addr,
        "/v1/commands",
        "acme-key",
        &json!([
            {"kind": "grant", "tenant_id": "acme", "grant_id": "g1", "customer_id": "c1",
             "amount": "100", "priority": 1, "effective_at": "2026-11-01T00:00:00Z"},
            {"kind": "grant", "tenant_id": "beta", "grant_id": "g2", "customer_id": "x",
             "amount": "5", "effective_at": "2026-11-01T00:00:00Z"},
        ]),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(statuses(&answer), ["accepted", "rejected"]);

    // The verdicts come back from the committed tables: a duplicate from
    // rejected_events, an invalid record with its reason, a late one from late_events.
    let batch = json!([
        call("e1", "acme", "c1", "2026-11-20T10:00:00Z"),
        generation("e2", "c1", "2026-11-20T10:10:00Z", 1500),
        call("e1", "acme", "c1", "2026-11-20T10:00:00Z"),
        {"id": "bad", "tenant_id": "acme", "event_type": "api_call", "timestamp": "2026-11-20T10:00:00Z"},
        call("b1", "beta", "x", "2026-11-20T10:00:00Z"),
    ]);
    let (status, answer) = post(&addr, "/v1/events", "acme-key", &batch);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        statuses(&answer),
        ["accepted", "accepted", "duplicate", "rejected", "rejected"]
    );
    assert!(
        answer["results"][3]["reason"]
            .as_str()
            .unwrap()
            .contains("customer_id"),
        "{answer}"
    );
    let (status, late) = post(
        &addr,
        "/v1/events",
        "acme-key",
        &json!([call("old", "acme", "c1", "2026-11-01T00:00:00Z")]),
    );
    assert_eq!(status, 200, "{late}");
    assert_eq!(statuses(&late), ["late"]);
    let (status, again) = post(&addr, "/v1/events", "admin-key", &batch);
    assert_eq!(status, 200, "{again}");
    assert_eq!(
        statuses(&again),
        [
            "duplicate",
            "duplicate",
            "duplicate",
            "rejected",
            "accepted"
        ]
    );

    // Counted once; the live balance follows the topic: 1,500 tokens burn 15 credits.
    let rows = sql(
        &addr,
        "acme-key",
        "SELECT meter, CAST(value AS VARCHAR) AS value FROM usage_windows WHERE window_size = 'month' ORDER BY meter",
    );
    assert_eq!(
        rows,
        [
            json!({"meter": "api_calls", "value": "1.000000000"}),
            json!({"meter": "tokens", "value": "1500.000000000"})
        ]
    );
    let (status, balance) = get(&addr, "/v1/customers/c1/balance", "acme-key");
    assert_eq!(status, 200, "{balance}");
    assert_eq!(balance["balance"], json!("85.000000000"), "{balance}");
    let status = server.terminate();
    assert!(status.success(), "{status}");
}

/// The `_checkpoints` slots the newest commit record in `data` names.
fn checkpoint_slots(data: &str) -> Vec<String> {
    let mut records: Vec<_> = std::fs::read_dir(format!("{data}/_commits"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    records.sort();
    let newest: Value =
        serde_json::from_slice(&std::fs::read(records.last().unwrap()).unwrap()).unwrap();
    newest["tables"]["_checkpoints"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect()
}

#[test]
fn a_restart_replays_the_checkpoint_deltas_written_since_the_base() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let data = data.to_str().unwrap();
    let config = config(tmp.path());
    let args = ["--commit-interval", "50ms", "--workers", "1"];
    let server = start(data, &config, &args);
    let addr = server.addr.clone();
    let grant = json!([{"kind": "grant", "tenant_id": "acme", "grant_id": "g1",
        "customer_id": "c1", "amount": "1000", "effective_at": "2026-11-01T00:00:00Z"}]);
    assert_eq!(post(&addr, "/v1/commands", "acme-key", &grant).0, 200);
    // A large state, then a commit that makes it the base; every post is answered after
    // the commit that holds it.
    let many: Vec<Value> = (0..2_000)
        .map(|i| {
            generation(
                &format!("b{i}"),
                &format!("c{}", i % 50),
                "2026-11-20T10:00:00Z",
                i,
            )
        })
        .collect();
    let (status, answer) = post(
        &addr,
        "/v1/events?wait=commit",
        "acme-key",
        &Value::Array(many),
    );
    assert_eq!(status, 200, "{answer}");
    let one = json!([generation("s0", "c1", "2026-11-20T10:30:00Z", 100)]);
    assert_eq!(
        statuses(&post(&addr, "/v1/events?wait=commit", "acme-key", &one).1),
        ["accepted"]
    );
    // Small commits after it: deltas (a key, a window change, a burn, a name each).
    for i in 1..=3 {
        let one = json!([
            generation(&format!("s{i}"), "c1", "2026-11-20T10:30:00Z", 100),
            call(
                &format!("k{i}"),
                "acme",
                &format!("new{i}"),
                "2026-11-20T10:40:00Z"
            ),
        ]);
        let (status, answer) = post(&addr, "/v1/events?wait=commit", "acme-key", &one);
        assert_eq!(
            (status, statuses(&answer)),
            (200, vec!["accepted".to_string(); 2])
        );
    }
    // c1: events b1, b51, ..., b1951 (40 events, 39,040 tokens) and s0..s3 (400 tokens);
    // 0.01 credits a token.
    let (_, before) = get(&addr, "/v1/customers/c1/balance", "acme-key");
    assert_eq!(before["balance"], "605.600000000", "{before}");
    let tokens = "SELECT CAST(value AS VARCHAR) AS value, events FROM usage_windows \
                  WHERE customer_id = 'c1' AND meter = 'tokens' AND window_size = 'hour'";
    assert_eq!(
        sql(&addr, "acme-key", tokens),
        [json!({"value": "39440.000000000", "events": 44})]
    );
    // Killed: the restart has only the checkpoint of the newest commit.
    let mut server = server;
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    drop(server);
    let slots = checkpoint_slots(data);
    for part in ["reader", "usage", "customers"] {
        assert!(
            slots.contains(&format!("{part}-w0")),
            "no {part} base in {slots:?}"
        );
        assert!(
            slots.iter().any(|s| s.starts_with(&format!("{part}-w0-d"))),
            "no {part} delta in {slots:?}: the test no longer exercises deltas"
        );
    }

    let server = start(data, &config, &args);
    let addr = server.addr.clone();
    // The live balance comes from the restored state, so it holds every delta's burn.
    let (_, after) = get(&addr, "/v1/customers/c1/balance", "acme-key");
    assert_eq!(after["balance"], before["balance"], "{after} vs {before}");
    // Keys of the deltas are remembered; windows and burns continue from the deltas.
    let again = json!([
        generation("s3", "c1", "2026-11-20T10:30:00Z", 100),
        call("k2", "acme", "new2", "2026-11-20T10:40:00Z"),
        generation("s4", "c1", "2026-11-20T10:31:00Z", 1000),
    ]);
    let (status, answer) = post(&addr, "/v1/events?wait=commit", "acme-key", &again);
    assert_eq!(
        (status, statuses(&answer)),
        (
            200,
            vec![
                "duplicate".to_string(),
                "duplicate".to_string(),
                "accepted".to_string()
            ]
        )
    );
    assert_eq!(
        sql(&addr, "acme-key", tokens),
        [json!({"value": "40440.000000000", "events": 45})]
    );
    let (_, balance) = get(&addr, "/v1/customers/c1/balance", "acme-key");
    assert_eq!(balance["balance"], "595.600000000", "{balance}");
    let status = server.terminate();
    assert!(status.success(), "serve exited with {status}");
}

/// The scheduling policy (field 41 of `/proc/PID/task/TID/stat`) of each of a process's
/// threads, by thread name.
fn thread_policies(pid: u32) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = task.unwrap().path();
        let (Ok(name), Ok(stat)) = (
            std::fs::read_to_string(dir.join("comm")),
            std::fs::read_to_string(dir.join("stat")),
        ) else {
            continue; // the thread ended meanwhile
        };
        // The fields after the name in parentheses start at field 3.
        let rest = &stat[stat.rfind(')').unwrap() + 1..];
        let policy = rest
            .split_whitespace()
            .nth(41 - 3)
            .unwrap()
            .parse()
            .unwrap();
        out.push((name.trim().to_string(), policy));
    }
    out
}

#[test]
fn the_job_threads_of_serve_run_under_sched_idle_and_the_server_does_not() {
    const SCHED_IDLE: u32 = 5;
    let tmp = tempfile::tempdir().unwrap();
    let config = config(tmp.path());
    let data = tmp.path().join("data");
    let server = start(
        data.to_str().unwrap(),
        &config,
        &["--workers", "2", "--job-priority", "idle"],
    );
    let pid = server.child.id();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let threads = loop {
        let threads = thread_policies(pid);
        let workers: Vec<u32> = threads
            .iter()
            .filter(|(n, _)| n.starts_with("timely:work"))
            .map(|&(_, p)| p)
            .collect();
        // A worker lowers its own priority first thing; wait until both have.
        if workers == [SCHED_IDLE, SCHED_IDLE] {
            break threads;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the job's workers never ran under SCHED_IDLE: {threads:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    // The main thread (named after the binary) serves HTTP: normal policy (0).
    assert!(
        threads.iter().any(|(n, p)| n == "openmonetize" && *p == 0),
        "{threads:?}"
    );
    assert!(
        threads.iter().filter(|(_, p)| *p == 0).count() >= 2,
        "the server's runtime threads keep the normal policy: {threads:?}"
    );
}

#[test]
fn superseded_files_stay_for_the_keep_period_then_go_also_across_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let data = dir.to_str().unwrap();
    let config = config(tmp.path());
    let args = ["--commit-interval", "50ms", "--workers", "1"];
    let post_calls = |addr: &str, ids: std::ops::Range<u32>| {
        let calls: Vec<Value> = ids
            .map(|i| call(&format!("e{i}"), "acme", "c1", "2026-11-20T10:00:00Z"))
            .collect();
        let n = calls.len();
        let (status, answer) = post(
            addr,
            "/v1/events?wait=commit",
            "acme-key",
            &Value::Array(calls),
        );
        assert_eq!(
            (status, statuses(&answer)),
            (200, vec!["accepted".to_string(); n])
        );
    };
    let calls_counted = |addr: &str| {
        sql(
            addr,
            "acme-key",
            "SELECT events FROM usage_windows WHERE window_size = 'hour'",
        )
    };

    // The default keep period (an hour): three commits rewrite the same partitions, and
    // what they superseded stays for readers of the older commits.
    let server = start(data, &config, &args);
    for k in 0..3 {
        post_calls(&server.addr, k * 10..k * 10 + 10);
    }
    assert_eq!(calls_counted(&server.addr), [json!({"events": 30})]);
    assert!(server.terminate().success());
    let named = named_by_newest(&dir);
    let stale: Vec<String> = files_under(&dir).difference(&named).cloned().collect();
    assert!(
        stale.iter().any(|p| p.starts_with("usage_windows/hour/"))
            && stale.iter().filter(|p| p.starts_with("_commits/")).count() >= 2,
        "superseded hour partitions and commit records should still be there: {stale:?}"
    );
    // What an epoch that never committed leaves behind: a file of a far epoch, and files
    // at the paths the next epochs write (as when a job dies before its commit and re-runs
    // the epoch after the restart): those the restarted job writes again are live, and
    // must not be deleted with the rest.
    let orphan = "usage_windows/hour/2026-11-20T10/w0-e999999.parquet";
    std::fs::write(dir.join(orphan), b"not committed").unwrap();
    let resumed = files_under(&dir.join("_commits")).pop_last().unwrap();
    let resumed: u64 = resumed.trim_end_matches(".json").parse().unwrap();
    for e in resumed + 1..=resumed + 200 {
        let path = format!("usage_windows/hour/2026-11-20T10/w0-e{e:06}.parquet");
        std::fs::write(dir.join(path), b"not committed").unwrap();
    }

    // Restarted with no keep period: the first commit deletes everything its
    // predecessors superseded, and the orphan. Only what the newest commit names is left.
    let args = [&args[..], &["--keep-superseded", "0s"]].concat();
    let server = start(data, &config, &args);
    post_calls(&server.addr, 30..35);
    assert_eq!(calls_counted(&server.addr), [json!({"events": 35})]);
    assert!(server.terminate().success());
    assert_eq!(files_under(&dir), named_by_newest(&dir));
    assert!(!dir.join(orphan).exists());
}
