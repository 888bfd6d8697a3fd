//! The monetization views end to end on a small input whose every figure is worked out
//! by hand below: each reason code of `entitlements`, each `costs` column, an hourly
//! spike that is flagged next to a steady customer that is not, and a month-end
//! forecast.

use om_model::time::{HOUR, format_micros, parse_rfc3339};

const CONFIG: &str = r#"
[[meters]]
name = "api_calls"
event_type = "api_call"
aggregation = "count"
windows = ["hour", "month"]

[[meters]]
name = "units"
event_type = "usage"
aggregation = "sum"
windows = ["hour", "month"]

[[burn_rates]]
event_type = "ai_generation"
value = "$.properties.input_tokens"
credits_per_unit = "0.01"

[[plans]]
name = "free"
features.api_calls = { meter = "api_calls", limit = "3", period = "month" }
features.ai = { credits = true }
features.sso = false

[[plans]]
name = "pro"
features.sso = true

[costs]
credit_price = "0.002"

[[model_prices]]
provider = "acme"
model = "m1"
input = "2"
cached_input = "1"
output = "8"

[pipeline]
allowed_lateness = "48h"
dedup_horizon = "7d"
"#;

/// The watermark: the latest event of the input.
const W: &str = "2026-11-20T12:00:00Z";

fn at(text: &str) -> i64 {
    parse_rfc3339(text).unwrap()
}

fn event(id: &str, customer: &str, event_type: &str, t: i64, rest: &str) -> String {
    format!(
        r#"{{"id":"{id}","customer_id":"{customer}","event_type":"{event_type}","timestamp":"{}"{rest}}}"#,
        format_micros(t)
    )
}

fn inputs() -> (Vec<String>, Vec<String>) {
    let mut events = vec![event(
        "f0",
        "f",
        "usage",
        at("2026-11-10T00:00:00Z"),
        r#","value":500"#,
    )];
    // Entitlements: a makes 3 calls (the free limit), c makes 1.
    for i in 0..3 {
        events.push(event(
            &format!("a{i}"),
            "a",
            "api_call",
            at("2026-11-20T01:00:00Z") + i,
            "",
        ));
    }
    events.push(event("c0", "c", "api_call", at("2026-11-20T02:00:00Z"), ""));
    // Anomalies: s uses 100 units every hour for 48 hours; p 100 an hour for a day, then
    // 1,000 in one hour.
    let s0 = at("2026-11-18T12:00:00Z");
    for h in 0..48 {
        events.push(event(
            &format!("s{h}"),
            "s",
            "usage",
            s0 + h * HOUR,
            r#","value":100"#,
        ));
    }
    let p0 = at("2026-11-19T00:00:00Z");
    for h in 0..25 {
        let v = if h == 24 { 1000 } else { 100 };
        events.push(event(
            &format!("p{h}"),
            "p",
            "usage",
            p0 + h * HOUR,
            &format!(r#","value":{v}"#),
        ));
    }
    // Forecast: f uses 500 on the 10th (before the trailing week, and first in the
    // input, or it would be too late), 200 on the 18th and 500 at the watermark; the
    // last two arrive out of order, within the lateness.
    events.push(event("f2", "f", "usage", at(W), r#","value":500"#));
    events.push(event(
        "f1",
        "f",
        "usage",
        at("2026-11-18T12:00:00Z"),
        r#","value":200"#,
    ));
    // Costs: g calls m1 twice and a model the catalog does not know once.
    let g = |id: &str, model: &str, tokens: &str| {
        event(
            id,
            "g",
            "ai_generation",
            at("2026-11-20T03:00:00Z"),
            &format!(r#","properties":{{"provider":"acme","model":"{model}",{tokens}}}"#),
        )
    };
    events.push(g(
        "g0",
        "m1",
        r#""input_tokens":1000,"cached_input_tokens":200,"output_tokens":300"#,
    ));
    events.push(g("g1", "m1", r#""input_tokens":500,"output_tokens":100"#));
    events.push(g("g2", "mystery", r#""input_tokens":10"#));

    let subscribe = |customer: &str, plan: &str, from: &str| {
        format!(
            r#"{{"kind":"subscribe","customer_id":"{customer}","plan":"{plan}","effective_at":"{from}"}}"#
        )
    };
    let commands = vec![
        subscribe("a", "free", "2026-11-01T00:00:00Z"),
        subscribe("b", "pro", "2026-11-01T00:00:00Z"),
        subscribe("c", "free", "2026-11-01T00:00:00Z"),
        // Not yet effective at the watermark.
        subscribe("c", "pro", "2026-11-25T00:00:00Z"),
        r#"{"kind":"grant","grant_id":"ga","customer_id":"a","amount":"10","priority":1,"effective_at":"2026-11-01T00:00:00Z"}"#.into(),
    ];
    (events, commands)
}

fn tables() -> impl Fn(&str) -> Vec<Vec<String>> {
    let (events, commands) = inputs();
    let data = super::common::run_lines(super::common::LinesRun {
        config: CONFIG,
        events: &events,
        commands: &commands,
        workers: 2,
        epoch_bytes: 1500,
        commit_every: openmonetize::run::DEFAULT_COMMIT_EVERY,
    });
    move |sql: &str| super::common::query_in_process(&data, sql)
}

#[test]
fn views_by_hand() {
    let q = tables();
    assert_eq!(q("SELECT count(*) FROM late_events"), vec![vec!["0"]]);

    // Entitlements at W: every known customer x every feature of any plan.
    let rows = q(
        "SELECT customer_id, feature, coalesce(plan, '-'), has_access, \
         coalesce(CAST(usage AS VARCHAR), '-'), coalesce(CAST(\"limit\" AS VARCHAR), '-'), \
         coalesce(CAST(remaining AS VARCHAR), '-'), reason FROM entitlements \
         WHERE customer_id IN ('a', 'b', 'c', 's') ORDER BY customer_id, feature",
    );
    let want = [
        ["a", "ai", "free", "true", "-", "-", "10.000000000", "ok"],
        [
            "a",
            "api_calls",
            "free",
            "false",
            "3.000000000",
            "3.000000000",
            "0.000000000",
            "limit_exceeded",
        ],
        ["a", "sso", "free", "false", "-", "-", "-", "not_in_plan"],
        ["b", "ai", "pro", "false", "-", "-", "-", "not_in_plan"],
        [
            "b",
            "api_calls",
            "pro",
            "false",
            "-",
            "-",
            "-",
            "not_in_plan",
        ],
        ["b", "sso", "pro", "true", "-", "-", "-", "ok"],
        [
            "c",
            "ai",
            "free",
            "false",
            "-",
            "-",
            "0.000000000",
            "no_credits",
        ],
        [
            "c",
            "api_calls",
            "free",
            "true",
            "1.000000000",
            "3.000000000",
            "2.000000000",
            "ok",
        ],
        ["c", "sso", "free", "false", "-", "-", "-", "not_in_plan"],
        ["s", "ai", "-", "false", "-", "-", "-", "not_in_plan"],
        ["s", "api_calls", "-", "false", "-", "-", "-", "not_in_plan"],
        ["s", "sso", "-", "false", "-", "-", "-", "not_in_plan"],
    ];
    assert_eq!(rows, want.map(|r| r.map(String::from).to_vec()).to_vec());

    // Costs of g on 2026-11-20. m1: 1,500 input x $2 + 200 cached x $1 + 400 output x $8
    // = $6,400 per million tokens = $0.0064; credits 1,500 x 0.01 = 15, worth
    // 15 x $0.002 = $0.03; margin $0.03 - $0.0064 = $0.0236. "mystery" is reported
    // with its tokens and credits (0.1, worth $0.0002) but no price.
    let rows = q(
        "SELECT provider, model, CAST(day AS VARCHAR), events, CAST(input_tokens AS VARCHAR), \
         CAST(cached_input_tokens AS VARCHAR), CAST(output_tokens AS VARCHAR), \
         coalesce(CAST(provider_cost_usd AS VARCHAR), '-'), CAST(credits AS VARCHAR), \
         CAST(credit_value_usd AS VARCHAR), coalesce(CAST(margin_usd AS VARCHAR), '-'), priced \
         FROM costs WHERE customer_id = 'g' ORDER BY model",
    );
    let want = [
        [
            "acme",
            "m1",
            "2026-11-20T00:00:00Z",
            "2",
            "1500.000000000",
            "200.000000000",
            "400.000000000",
            "0.006400000",
            "15.000000000",
            "0.030000000",
            "0.023600000",
            "true",
        ],
        [
            "acme",
            "mystery",
            "2026-11-20T00:00:00Z",
            "1",
            "10.000000000",
            "0.000000000",
            "0.000000000",
            "-",
            "0.100000000",
            "0.000200000",
            "-",
            "false",
        ],
    ];
    assert_eq!(rows, want.map(|r| r.map(String::from).to_vec()).to_vec());

    // Anomalies. p: 24 hours of 100, then 1,000: mean 100, std 0, so the score is
    // (1,000 - 100) / 1 = 900: flagged.
    let rows = q(
        "SELECT CAST(value AS VARCHAR), CAST(baseline_mean AS VARCHAR), \
         CAST(baseline_std AS VARCHAR), CAST(score AS VARCHAR), flagged FROM anomaly_scores \
         WHERE customer_id = 'p' AND window_start = TIMESTAMP '2026-11-20T00:00:00Z'",
    );
    assert_eq!(
        rows,
        vec![vec![
            "1000.000000000",
            "100.000000000",
            "0.000000000",
            "900.000000000",
            "true"
        ]]
    );
    // s, steady at 100/hour: once its history fills the baseline (from hour 24 on) the
    // score is 0. Before, missing hours count as 0 (DESIGN.md), so the ramp-up stands
    // out: with k hours of history the score is sqrt((24 - k) / k): hour 0 scores 100
    // (std 0 -> divisor 1), hours 1 and 2 (k = 1, 2: 4.80, 3.32) are flagged, hour 3
    // (k = 3: 2.65) and later are not.
    let flagged = q(
        "SELECT CAST(window_start AS VARCHAR) AS w FROM anomaly_scores \
         WHERE customer_id = 's' AND flagged ORDER BY window_start",
    );
    assert_eq!(
        flagged,
        [
            ["2026-11-18T12:00:00Z"],
            ["2026-11-18T13:00:00Z"],
            ["2026-11-18T14:00:00Z"]
        ]
        .map(|r| r.map(String::from).to_vec())
        .to_vec()
    );
    let rows = q(
        "SELECT count(*), min(CAST(score AS VARCHAR)), max(CAST(score AS VARCHAR)) \
         FROM anomaly_scores WHERE customer_id = 's' AND window_start >= TIMESTAMP '2026-11-19T12:00:00Z'",
    );
    assert_eq!(rows, vec![vec!["24", "0.000000000", "0.000000000"]]);
    let hour2 = q(
        "SELECT CAST(baseline_mean AS VARCHAR), CAST(baseline_std AS VARCHAR) \
         FROM anomaly_scores WHERE customer_id = 's' AND window_start = TIMESTAMP '2026-11-18T14:00:00Z'",
    );
    // Two hours of 100 and 22 of 0: mean 200/24 = 8.3333333333..., std
    // 100 x sqrt(2 x 22)/24 = 27.638539919628...: both rounded to 9 digits.
    assert_eq!(hour2, vec![vec!["8.333333333", "27.638539920"]]);

    // Forecast of f at W = 2026-11-20T12:00Z: 1,200 so far in November; the trailing 7
    // days (hours 2026-11-13T13:00 .. 2026-11-20T12:00) hold 200 + 500 = 700, 100 a day;
    // 10.5 days are left, so the month ends at 1,200 + 1,050 = 2,250.
    let rows = q(
        "SELECT CAST(month AS VARCHAR), CAST(as_of AS VARCHAR), CAST(usage_to_date AS VARCHAR), \
         CAST(trailing_7d AS VARCHAR), CAST(daily_rate AS VARCHAR), CAST(forecast AS VARCHAR) \
         FROM forecasts WHERE customer_id = 'f' AND meter = 'units'",
    );
    assert_eq!(
        rows,
        vec![vec![
            "2026-11-01T00:00:00Z",
            "2026-11-20T12:00:00Z",
            "1200.000000000",
            "700.000000000",
            "100.000000000",
            "2250.000000000"
        ]]
    );
}
