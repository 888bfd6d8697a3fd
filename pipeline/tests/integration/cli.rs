//! Clear errors at the command line: each names the bad input and the fix.

use std::process::Command;

fn fails_with(args: &[&str], want: &[&str]) {
    fails_with_env(args, &[], want);
}

/// `openmonetize ARGS` with the extra environment `env` fails, and its stderr holds each
/// of `want`.
fn fails_with_env(args: &[&str], env: &[(&str, &str)], want: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_openmonetize"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(!out.status.success(), "{env:?} {args:?} should fail");
    let err = String::from_utf8_lossy(&out.stderr);
    for w in want {
        assert!(
            err.contains(w),
            "{env:?} {args:?}: stderr `{err}` lacks `{w}`"
        );
    }
}

#[test]
fn bad_input_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("bad.toml");
    std::fs::write(
        &cfg,
        "[[meters]]\nname = \"x\"\nevent_type = \"t\"\naggregation = \"summ\"\n",
    )
    .unwrap();
    let events = tmp.path().join("e.jsonl");
    std::fs::write(&events, "{}\n").unwrap();
    let ev = format!("file:{}", events.display());
    let data = tmp.path().join("d");
    let data = data.to_str().unwrap();
    fails_with(
        &[
            "run",
            "--config",
            cfg.to_str().unwrap(),
            "--events",
            &ev,
            "--data",
            data,
        ],
        &["meters[0].aggregation", "unique_count", "bad.toml"],
    );
    fails_with(
        &["run", "--events", "stdin:", "--data", data],
        &["--events `stdin:`", "file:PATH", "kafka://HOST:PORT/TOPIC"],
    );
    fails_with(
        &["run", "--events", "kafka://localhost/t", "--data", data],
        &["kafka://localhost/t", "kafka://HOST:PORT"],
    );
    fails_with(
        &[
            "run",
            "--events",
            &ev,
            "--data",
            data,
            "--commit-interval",
            "soon",
        ],
        &["--commit-interval", "soon", "1s"],
    );
    fails_with(
        &[
            "run",
            "--events",
            "file:/nonexistent/x.jsonl",
            "--data",
            data,
        ],
        &["/nonexistent/x.jsonl"],
    );
    fails_with(
        &["query", "--data", data, "--format", "xml", "SELECT 1"],
        &["xml", "table, csv or json"],
    );
    fails_with(
        &["run", "--events", &ev, "--data", "ftp://x/y"],
        &["ftp://x/y", "memory://"],
    );
    // Cluster mode: the three settings go together, the index is in range, the hosts
    // file lists one address per process, and the data is reachable by every process.
    let hosts = tmp.path().join("hosts");
    std::fs::write(&hosts, "127.0.0.1:1\n127.0.0.1:2\n").unwrap();
    let hosts = hosts.to_str().unwrap();
    let run = ["run", "--events", &ev, "--data", data];
    let cluster = |extra: &[&'static str]| -> Vec<String> {
        run.iter().chain(extra).map(|s| s.to_string()).collect()
    };
    let with = |args: &[String], more: &[&str]| -> Vec<String> {
        args.iter()
            .cloned()
            .chain(more.iter().map(|s| s.to_string()))
            .collect()
    };
    let check = |args: Vec<String>, want: &[&str]| {
        fails_with(&args.iter().map(String::as_str).collect::<Vec<_>>(), want)
    };
    check(
        cluster(&["--processes", "2", "--process", "0"]),
        &[
            "--hosts FILE (OM_HOSTS)",
            "got only --processes and --process",
        ],
    );
    check(
        with(
            &cluster(&["--processes", "2", "--process", "2"]),
            &["--hosts", hosts],
        ),
        &["--process 2 is not a process", "0..1"],
    );
    check(
        with(
            &cluster(&["--processes", "3", "--process", "0"]),
            &["--hosts", hosts],
        ),
        &[hosts, "lists 2 addresses, but --processes is 3"],
    );
    check(
        with(
            &cluster(&["--processes", "2", "--process", "0"]),
            &["--hosts", hosts],
        )
        .into_iter()
        .map(|a| if a == data { "memory://x".into() } else { a })
        .collect(),
        &["memory://x", "every process reaches"],
    );
    // A location that already holds tables is not silently mixed into.
    super::common::openmonetize(&["run", "--events", &ev, "--data", data, "--quiet"]);
    fails_with(
        &["run", "--events", &ev, "--data", data],
        &["already holds tables"],
    );
    fails_with(
        &["query", "--data", data, "SELECT nope FROM usage_windows"],
        &["nope"],
    );
}

/// A worker that fails mid-run stops the whole job with the cause, instead of leaving the
/// other worker waiting forever: worker 1 returning an error (it cannot write its events
/// file at the final commit, because a directory sits where the file must go), and
/// worker 1 panicking inside an operator (same for its usage partition at that commit).
#[test]
fn a_failing_worker_stops_the_job_with_its_error() {
    fails_alone("events/e000005-w1.parquet");
    fails_alone("usage_windows/hour/2026-10-26T04/w1-e000005.parquet");
}

fn fails_alone(obstacle: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("d");
    std::fs::create_dir_all(data.join(obstacle).join("obstacle")).unwrap();
    let dir = crate::integration::common::golden_dir("small");
    let events = format!("file:{}", dir.join("events.jsonl").display());
    let mut child = Command::new(env!("CARGO_BIN_EXE_openmonetize"))
        .args(["run", "--config"])
        .arg(dir.join("config.toml"))
        .args([
            "--events",
            &events,
            "--workers",
            "2",
            "--epoch-bytes",
            "20000",
        ])
        .args(["--quiet", "--data"])
        .arg(&data)
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the job hung after a worker failed to write {obstacle}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "the run should fail");
    assert!(
        err.contains(&format!("writing {obstacle}")),
        "stderr: {err}"
    );
}

#[test]
fn om_environment_variables_override_the_config() {
    use super::common::{golden_dir, openmonetize_env, query_csv};
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("d");
    let case = golden_dir("small");
    let config = case.join("config.toml");
    let events = format!("file:{}", case.join("events.jsonl").display());
    let run = |data: &std::path::Path| {
        let data = data.to_str().unwrap().to_string();
        let config = config.to_str().unwrap().to_string();
        let args = [
            "run", "--config", &config, "--events", &events, "--data", &data,
        ];
        args.map(str::to_string)
    };
    // The golden case's 48 h of lateness turns 2 events late; ten years turns none.
    let env = [
        ("OM__PIPELINE__ALLOWED_LATENESS", "3650d"),
        ("OM__PIPELINE__DEDUP_HORIZON", "3650d"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()));
    let args = run(&data);
    openmonetize_env(&args.each_ref().map(String::as_str), &env);
    let count = |sql: &str| query_csv(&data, sql)[1][0].clone();
    assert_eq!(count("SELECT COUNT(*) FROM late_events"), "0");
    assert_eq!(count("SELECT COUNT(*) FROM events"), "702");

    // A value the key does not allow, a key that does not exist, an element of a list:
    // the error names the variable and the key.
    let args = run(&tmp.path().join("unused"));
    let args = args.each_ref().map(String::as_str);
    let fails =
        |var: &str, value: &str, want: &[&str]| fails_with_env(&args, &[(var, value)], want);
    fails(
        "OM__PIPELINE__ALLOWED_LATENESS",
        "soon",
        &[
            "OM__PIPELINE__ALLOWED_LATENESS",
            "pipeline.allowed_lateness",
        ],
    );
    fails(
        "OM__PIPELINE__ALLOWED_LATENES",
        "1h",
        &["OM__PIPELINE__ALLOWED_LATENES", "allowed_latenes"],
    );
    fails(
        "OM__METERS__0__NAME",
        "x",
        &["OM__METERS__0__NAME", "is a list", "OM__METERS='["],
    );
}
