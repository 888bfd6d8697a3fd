//! The Kafka source against a real broker: golden cases (events and commands) produced
//! into 4-partition topics give the same tables as the file source, also when the tables
//! go to an S3-compatible server, a live job stops cleanly on SIGTERM after committing
//! what it read, and a job behind its topics commits every `--commit-every` epochs, to
//! the same tables.

use super::common::{
    Data, files_under, golden_dir, named_by_newest, openmonetize, openmonetize_env, query_at,
    query_csv, run_case,
};
use super::golden::{check_golden, check_golden_at};
use super::services::{Broker, S3Server};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Every table, every column but `ingested_at` and the source position (a file offset
/// versus a Kafka partition and offset), in a stable order. Late events are compared
/// without the watermark they were judged against: with Kafka that is their partition's
/// watermark (README, "Semantics we chose"), which is not the file's.
const SAME_AS_FILE_SQL: [&str; 8] = [
    "SELECT tenant_id, customer_id, meter, dimensions, window_size, window_start, window_end, value, events, is_final \
     FROM usage_windows ORDER BY tenant_id, customer_id, meter, dimensions, window_size, window_start",
    "SELECT tenant_id, id, customer_id, event_type, timestamp, value, properties FROM events ORDER BY tenant_id, id",
    "SELECT tenant_id, event_id, raw, reason FROM rejected_events ORDER BY tenant_id, event_id, raw, reason",
    "SELECT tenant_id, event_id, customer_id, timestamp, raw FROM late_events ORDER BY tenant_id, event_id",
    "SELECT * FROM credit_grants ORDER BY tenant_id, grant_id",
    "SELECT * FROM credit_balances ORDER BY tenant_id, customer_id",
    "SELECT * FROM credit_ledger ORDER BY tenant_id, customer_id, grant_id, entry, at",
    "SELECT COUNT(*), COUNT(DISTINCT source_partition) FROM events",
];

/// Produces golden `case`'s `file` (events.jsonl or commands.jsonl) into a topic.
pub(super) fn produce(case: &str, file: &str, url: &str) {
    let path = golden_dir(case).join(file);
    openmonetize(&["produce", "--file", path.to_str().unwrap(), "--to", url]);
}

fn run_kafka(case: &str, url: &str, commands: &str, data: &Data) {
    let config = golden_dir(case).join("config.toml");
    openmonetize_env(
        &[
            "run",
            "--config",
            config.to_str().unwrap(),
            "--events",
            url,
            "--commands",
            commands,
            "--data",
            &data.url,
            "--workers",
            "2",
            "--commit-interval",
            "200ms",
            "--until-caught-up",
            // Each commit deletes what the previous one superseded: the tables must be
            // whole all the same (and on S3 this deletes through the store's batches).
            "--keep-superseded",
            "0s",
            "--quiet",
        ],
        &data.env,
    );
}

/// Produces golden `case`'s events and commands into two 4-partition topics, runs the
/// job until caught up into `from_kafka`, and checks the tables against the golden
/// files and the file source.
fn same_as_file(broker: &Broker, case: &str, from_kafka: &Data) {
    let url = broker.topic(case, 4);
    let commands = broker.topic(&format!("{case}-commands"), 4);
    produce(case, "events.jsonl", &url);
    produce(case, "commands.jsonl", &commands);
    run_kafka(case, &url, &commands, from_kafka);
    check_golden_at(case, from_kafka);

    let tmp = tempfile::tempdir().unwrap();
    let from_file = tmp.path().join("file");
    run_case(case, &from_file, 1, 64 << 20);
    for sql in &SAME_AS_FILE_SQL[..7] {
        assert_eq!(
            query_at(from_kafka, sql),
            query_at(&from_file.as_path().into(), sql),
            "{case}: {sql}"
        );
    }
    let spread = query_at(from_kafka, SAME_AS_FILE_SQL[7]);
    assert_eq!(
        spread[1][1], "4",
        "{case}: events come from all 4 partitions"
    );
}

fn same_as_file_locally(case: &str) {
    let broker = Broker::start();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("kafka");
    same_as_file(&broker, case, &data.as_path().into());
    // With no keep period, only what the newest commit names is left.
    assert_eq!(
        files_under(&data),
        named_by_newest(&data),
        "{case}: files beyond the newest commit's"
    );
}

#[test]
fn golden_small_through_kafka_equals_the_file_source() {
    same_as_file_locally("small");
}

#[test]
fn golden_medium_through_kafka_equals_the_file_source() {
    same_as_file_locally("medium");
}

#[test]
fn golden_cases_through_kafka_into_s3_equal_the_file_source() {
    let broker = Broker::start();
    let s3 = S3Server::start();
    s3.bucket("om-tables");
    for case in ["small", "medium"] {
        let data = Data {
            url: format!("s3://om-tables/golden/{case}"),
            env: s3.env(),
        };
        same_as_file(&broker, case, &data);
    }
}

/// The newest commit record's accepted + rejected + late count.
fn committed_records(data: &Path) -> u64 {
    newest_commit(data).map_or(0, |record| {
        let c = &record["counts"];
        ["accepted", "rejected", "late"]
            .iter()
            .map(|k| c[k].as_u64().unwrap())
            .sum()
    })
}

/// The newest commit record's accepted + rejected commands.
fn committed_commands(data: &Path) -> u64 {
    newest_commit(data).map_or(0, |record| {
        let c = &record["counts"];
        ["commands_accepted", "commands_rejected"]
            .iter()
            .map(|k| c[k].as_u64().unwrap())
            .sum()
    })
}

/// The newest commit record in `data`, if any. Records are written atomically, to a
/// staging file (`N.json#k`, left behind by a kill) then renamed; only `*.json` count.
pub(super) fn newest_commit(data: &Path) -> Option<serde_json::Value> {
    let dir = std::fs::read_dir(data.join("_commits")).ok()?;
    let newest = dir
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .max()?;
    let text = std::fs::read_to_string(newest).ok()?;
    Some(serde_json::from_str(&text).expect("a commit record is JSON"))
}

#[test]
fn a_live_job_commits_as_it_reads_and_stops_cleanly_on_sigterm() {
    let broker = Broker::start();
    let url = broker.topic("live", 4);
    let commands = broker.topic("live-commands", 1);
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let config = golden_dir("small").join("config.toml");
    let mut job = Command::new(env!("CARGO_BIN_EXE_openmonetize"))
        .args([
            "run",
            "--config",
            config.to_str().unwrap(),
            "--events",
            &url,
            "--commands",
            &commands,
            "--data",
            data.to_str().unwrap(),
            "--workers",
            "2",
            "--commit-interval",
            "200ms",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The job is already running when the events arrive.
    std::thread::sleep(Duration::from_millis(500));
    produce("small", "events.jsonl", &url);
    produce("small", "commands.jsonl", &commands);
    let count = |file: &str| {
        std::fs::read_to_string(golden_dir("small").join(file))
            .unwrap()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .count() as u64
    };
    let (lines, command_lines) = (count("events.jsonl"), count("commands.jsonl"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while committed_records(&data) < lines || committed_commands(&data) < command_lines {
        assert!(
            Instant::now() < deadline,
            "the live job committed {} of {lines} records within 30 s",
            committed_records(&data)
        );
        assert!(job.try_wait().unwrap().is_none(), "the live job exited");
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = Command::new("kill")
        .args(["-TERM", &job.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(s) = job.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the job did not stop within 20 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = std::io::read_to_string(job.stderr.take().unwrap()).unwrap();
    assert!(exit.success(), "exit {exit:?} after SIGTERM:\n{stderr}");
    assert!(
        stderr.contains("records/s, lag"),
        "progress lines:\n{stderr}"
    );
    // Worker 0's lines say how long after its reading ended the last commit was written.
    assert!(
        stderr.lines().any(|l| l.starts_with("worker 0 ")
            && l.contains(", last commit epoch ")
            && l.contains(" s after its reading ended; watermark ")),
        "progress lines:\n{stderr}"
    );
    assert_eq!(committed_records(&data), lines);
    check_golden("small", &data);
}

/// Every table (the credit tables too: the job reads a commands topic of grants), every
/// column but `ingested_at`, in a stable order (Kafka positions are the same in every run
/// over the same topic; a rejected command and a rejected event can share a partition and
/// offset, so the topic comes first).
pub(super) const ALL_TABLES_SQL: [&str; 11] = [
    "SELECT tenant_id, customer_id, meter, dimensions, window_size, window_start, window_end, value, events, is_final \
     FROM usage_windows ORDER BY tenant_id, customer_id, meter, dimensions, window_size, window_start",
    "SELECT tenant_id, id, customer_id, event_type, timestamp, value, properties, source, source_partition, source_offset \
     FROM events ORDER BY source, source_partition, source_offset",
    "SELECT tenant_id, event_id, raw, reason, source, source_partition, source_offset \
     FROM rejected_events ORDER BY source, source_partition, source_offset",
    "SELECT tenant_id, event_id, customer_id, timestamp, watermark, raw, reason, source, source_partition, source_offset \
     FROM late_events ORDER BY source, source_partition, source_offset",
    "SELECT * FROM credit_grants ORDER BY tenant_id, grant_id",
    "SELECT * FROM credit_balances ORDER BY tenant_id, customer_id",
    "SELECT * FROM credit_ledger ORDER BY tenant_id, customer_id, grant_id, entry, at",
    "SELECT * FROM entitlements ORDER BY tenant_id, customer_id, feature",
    "SELECT * FROM costs ORDER BY tenant_id, customer_id, provider, model, day",
    "SELECT * FROM anomaly_scores ORDER BY tenant_id, customer_id, meter, window_start",
    "SELECT * FROM forecasts ORDER BY tenant_id, customer_id, meter",
];

/// `openmonetize run` of 2 workers over `url` and `commands` into `data` until caught
/// up, with `settings` (epochs and commits).
fn job_args<'a>(
    url: &'a str,
    commands: &'a str,
    data: &'a Path,
    settings: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec![
        "run",
        "--events",
        url,
        "--commands",
        commands,
        "--data",
        data.to_str().unwrap(),
        "--workers",
        "2",
        "--until-caught-up",
        "--quiet",
    ];
    args.extend(settings);
    args
}

fn run_job(url: &str, commands: &str, data: &Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_openmonetize"))
        .args(job_args(
            url,
            commands,
            data,
            &["--commit-interval", "300ms"],
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The epoch of the newest commit record in `data`.
pub(super) fn newest_commit_epoch(data: &Path) -> Option<u64> {
    newest_commit(data)?["epoch"].as_u64()
}

/// The newest commit names only whole files and its counts match what queries see;
/// returns its epoch.
pub(super) fn newest_commit_is_whole(data: &Path) -> Option<u64> {
    let record = newest_commit(data)?;
    let got = query_csv(
        data,
        "SELECT (SELECT COUNT(*) FROM events) AS a, (SELECT COUNT(*) FROM rejected_events) AS r, (SELECT COUNT(*) FROM late_events) AS l",
    );
    let c = &record["counts"];
    assert_eq!(
        got[1],
        ["accepted", "rejected", "late"].map(|k| c[k].to_string()),
        "commit of epoch {}: counts of the committed tables",
        record["epoch"]
    );
    record["epoch"].as_u64()
}

#[test]
fn a_job_killed_at_random_points_resumes_to_the_same_tables() {
    use rand::{Rng, SeedableRng};
    let broker = Broker::start();
    let url = broker.topic("crash", 4);
    let commands = broker.topic("crash-commands", 2);
    // 1M events, and 3 grants for each of their 2,000 customers (some voided).
    let generate = |extra: Option<&str>, to: &str| {
        let mut args = vec![
            "gen",
            "--events",
            "1000000",
            "--customers",
            "2000",
            "--seed",
            "11",
            "--to",
            to,
        ];
        args.extend(extra);
        openmonetize(&args);
    };
    generate(None, &url);
    generate(Some("--grants"), &commands);
    let tmp = tempfile::tempdir().unwrap();

    let whole = tmp.path().join("whole");
    let out = run_job(&url, &commands, &whole).wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let crashed = tmp.path().join("crashed");
    let mut epochs = Vec::new();
    for kill in 0..4 {
        // Each run is killed at a random moment after it committed something new, so
        // the kills land in different places of the work (reading, writing files,
        // checkpointing, committing) and every restart makes progress.
        let mut job = run_job(&url, &commands, &crashed);
        let before = epochs.last().copied().flatten();
        let deadline = Instant::now() + Duration::from_secs(120);
        while newest_commit_epoch(&crashed) <= before {
            assert!(
                job.try_wait().unwrap().is_none(),
                "kill {kill} (seed {seed}): the job ended before it was killed"
            );
            assert!(
                Instant::now() < deadline,
                "kill {kill}: no new commit within 120 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(0..1_500)));
        job.kill().unwrap(); // SIGKILL
        job.wait().unwrap();
        epochs.push(newest_commit_is_whole(&crashed));
    }
    assert!(
        epochs.windows(2).all(|w| w[0] < w[1]),
        "seed {seed}: every killed run committed something: {epochs:?}"
    );
    let out = run_job(&url, &commands, &crashed)
        .wait_with_output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    newest_commit_is_whole(&crashed);
    for sql in ALL_TABLES_SQL {
        let (a, b) = (query_csv(&whole, sql), query_csv(&crashed, sql));
        assert!(a.len() > 1, "{sql} is empty");
        assert_same_rows(
            &a,
            &b,
            &format!("seed {seed}, kills at epochs {epochs:?}: {sql}"),
        );
    }
}

/// Runs a job over `url` until caught up, committing every `commit_every` epochs while
/// behind; returns the number of commit records and the newest commit's epoch.
fn catch_up(url: &str, commands: &str, data: &Path, commit_every: &str) -> (usize, u64) {
    openmonetize(&job_args(
        url,
        commands,
        data,
        // Small epochs, cut by size: the backlog is many epochs long.
        &[
            "--epoch-bytes",
            "65536",
            "--commit-interval",
            "10s",
            "--commit-every",
            commit_every,
        ],
    ));
    let commits = std::fs::read_dir(data.join("_commits")).unwrap().count();
    (commits, newest_commit_epoch(data).unwrap())
}

#[test]
fn a_job_behind_its_topics_commits_every_commit_every_epochs_to_the_same_tables() {
    let broker = Broker::start();
    let url = broker.topic("backlog", 4);
    let commands = broker.topic("backlog-commands", 1);
    openmonetize(&[
        "gen",
        "--events",
        "30000",
        "--customers",
        "300",
        "--seed",
        "5",
        "--to",
        &url,
    ]);
    let tmp = tempfile::tempdir().unwrap();
    let (each, every_4) = (tmp.path().join("each"), tmp.path().join("every-4"));
    let (commits_each, epochs_each) = catch_up(&url, &commands, &each, "1");
    let (commits_4, epochs_4) = catch_up(&url, &commands, &every_4, "4");
    // Every epoch read something, so with 1 every epoch commits.
    assert!(epochs_each >= 20, "a backlog of {epochs_each} epochs only");
    assert_eq!(commits_each as u64, epochs_each + 1);
    // With 4, every 4th epoch commits while behind, plus the epochs after it caught up
    // (the last ones of its partitions: at most one each, and the final one).
    assert!(
        commits_4 as u64 <= (epochs_4 + 1) / 4 + 3,
        "{commits_4} commits in {} epochs",
        epochs_4 + 1
    );
    for sql in ALL_TABLES_SQL {
        let (a, b) = (query_csv(&each, sql), query_csv(&every_4, sql));
        if sql.contains("FROM events") || sql.contains("FROM usage_windows") {
            assert!(a.len() > 1, "{sql} is empty");
        }
        assert_same_rows(&a, &b, sql);
    }
}

/// Asserts two query results are equal; on a difference, names the first differing row
/// of each (row 0 is the header).
pub(super) fn assert_same_rows(a: &[Vec<String>], b: &[Vec<String>], what: &str) {
    if a == b {
        return;
    }
    let row = a
        .iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    panic!(
        "{what} differs ({} vs {} rows); first difference at row {row}:\n  {:?}\n  {:?}",
        a.len(),
        b.len(),
        a.get(row),
        b.get(row)
    );
}
