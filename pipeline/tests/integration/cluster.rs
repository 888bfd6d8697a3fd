//! Cluster mode (`--processes/--process/--hosts`): two processes of one worker on
//! 127.0.0.1 give every table of one process of two workers, from a file and from Kafka;
//! and killing one process of a running cluster stops the other with a clear error,
//! after which a restarted cluster ends with the tables of an uninterrupted run.

use super::common::{golden_dir, openmonetize, query_csv};
use super::kafka::{
    ALL_TABLES_SQL, assert_same_rows, newest_commit, newest_commit_epoch, newest_commit_is_whole,
    produce,
};
use super::services::Broker;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A hosts file of `n` free ports on 127.0.0.1, in `dir`.
fn hosts_file(dir: &Path, n: usize) -> PathBuf {
    // Hold every listener until all ports are picked, so that they differ.
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let text: String = listeners
        .iter()
        .map(|l| format!("{}\n", l.local_addr().unwrap()))
        .collect();
    let path = dir.join(format!(
        "hosts-{}",
        listeners[0].local_addr().unwrap().port()
    ));
    std::fs::write(&path, text).unwrap();
    path
}

/// Starts process `i` of a cluster of `hosts` with the `run` arguments `args`. Process 1
/// gets its place from the environment (as a Kubernetes pod would), the others from
/// flags.
fn start_process(args: &[String], i: usize, n: usize, hosts: &Path) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_openmonetize"));
    cmd.arg("run").args(args).args(["--workers", "1"]);
    if i == 1 {
        cmd.env("OM_PROCESSES", n.to_string())
            .env("OM_PROCESS", i.to_string())
            .env("OM_HOSTS", hosts);
    } else {
        cmd.args(["--processes", &n.to_string(), "--process", &i.to_string()])
            .arg("--hosts")
            .arg(hosts);
    }
    cmd.stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for a process, at most `secs` seconds (killing it after that).
fn wait_output(mut child: Child, secs: u64, what: &str) -> Output {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{what} did not end within {secs} s:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Runs a cluster of `n` processes of one worker to its end; asserts each succeeded.
fn run_cluster(args: &[String], n: usize, dir: &Path) {
    let hosts = hosts_file(dir, n);
    let children: Vec<Child> = (0..n).map(|i| start_process(args, i, n, &hosts)).collect();
    for (i, child) in children.into_iter().enumerate() {
        let out = wait_output(child, 300, &format!("process {i}"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "process {i} failed:\n{stderr}");
        assert!(
            stderr.contains(&format!("done (process {i} of {n})")),
            "process {i}:\n{stderr}"
        );
    }
}

/// Runs one process of `workers` workers to its end.
fn run_single(args: &[String], workers: usize) {
    let mut all: Vec<&str> = vec!["run"];
    all.extend(args.iter().map(String::as_str));
    let workers = workers.to_string();
    all.extend(["--workers", &workers]);
    openmonetize(&all);
}

/// Every table of `data`, every column but `ingested_at`.
fn tables(data: &Path) -> Vec<Vec<Vec<String>>> {
    ALL_TABLES_SQL
        .iter()
        .map(|sql| query_csv(data, sql))
        .collect()
}

fn assert_same_tables(a: &Path, b: &Path, what: &str) {
    let (a, b) = (tables(a), tables(b));
    for (sql, (a, b)) in ALL_TABLES_SQL.iter().zip(a.iter().zip(&b)) {
        assert_same_rows(a, b, &format!("{what}: {sql}"));
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

#[test]
fn two_processes_give_the_tables_of_one_from_a_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = golden_dir("medium");
    let file_args = |data: &Path| {
        strings(&[
            "--config",
            dir.join("config.toml").to_str().unwrap(),
            "--events",
            &format!("file:{}", dir.join("events.jsonl").display()),
            "--commands",
            &format!("file:{}", dir.join("commands.jsonl").display()),
            "--data",
            data.to_str().unwrap(),
            "--epoch-bytes",
            "16384",
            "--commit-every",
            "3",
            "--quiet",
        ])
    };
    let one = tmp.path().join("one");
    run_single(&file_args(&one), 2);
    let two = tmp.path().join("two");
    run_cluster(&file_args(&two), 2, tmp.path());
    let usage = query_csv(&one, "SELECT COUNT(*) FROM usage_windows");
    assert!(
        usage[1][0].parse::<u64>().unwrap() > 1000,
        "usage_windows is not trivially empty"
    );
    assert_same_tables(
        &one,
        &two,
        "1 process x 2 workers vs 2 processes x 1 worker",
    );
    // The commit records are written once (by process 0) and count both processes'
    // records: as many as one process writes, the newest matching the tables.
    let commits = |data: &Path| std::fs::read_dir(data.join("_commits")).unwrap().count();
    assert_eq!(commits(&two), commits(&one), "commit records");
    let newest = |data: &Path| {
        let c = newest_commit(data).unwrap();
        (
            c["epoch"].clone(),
            c["counts"].clone(),
            c["watermark"].clone(),
        )
    };
    assert_eq!(newest(&two), newest(&one));
}

/// Kafka `run` arguments over `events` and `commands` into `data`.
fn kafka_args(events: &str, commands: &str, data: &Path, epoch_bytes: &str) -> Vec<String> {
    strings(&[
        "--events",
        events,
        "--commands",
        commands,
        "--data",
        data.to_str().unwrap(),
        "--commit-interval",
        "300ms",
        "--epoch-bytes",
        epoch_bytes,
        "--until-caught-up",
    ])
}

#[test]
fn two_processes_give_the_tables_of_one_from_kafka() {
    let broker = Broker::start();
    let events = broker.topic("cluster", 4);
    let commands = broker.topic("cluster-commands", 2);
    produce("medium", "events.jsonl", &events);
    produce("medium", "commands.jsonl", &commands);
    let tmp = tempfile::tempdir().unwrap();
    let one = tmp.path().join("one");
    run_single(&kafka_args(&events, &commands, &one, "65536"), 2);
    let two = tmp.path().join("two");
    run_cluster(
        &kafka_args(&events, &commands, &two, "65536"),
        2,
        tmp.path(),
    );
    assert_same_tables(
        &one,
        &two,
        "1 process x 2 workers vs 2 processes x 1 worker",
    );
    let spread = query_csv(&two, "SELECT COUNT(DISTINCT source_partition) FROM events");
    assert_eq!(spread[1][0], "4", "events come from all 4 partitions");
}

#[test]
fn a_cluster_with_a_killed_process_stops_and_resumes_to_the_same_tables() {
    use rand::{Rng, SeedableRng};
    let broker = Broker::start();
    let events = broker.topic("cluster-crash", 4);
    let commands = broker.topic("cluster-crash-commands", 2);
    let generate = |extra: Option<&str>, to: &str| {
        let mut args = vec![
            "gen",
            "--events",
            "150000",
            "--customers",
            "1000",
            "--seed",
            "7",
            "--to",
            to,
        ];
        args.extend(extra);
        openmonetize(&args);
    };
    generate(None, &events);
    generate(Some("--grants"), &commands);
    let tmp = tempfile::tempdir().unwrap();
    let epoch_bytes = "2000000";

    let whole = tmp.path().join("whole");
    run_single(&kafka_args(&events, &commands, &whole, epoch_bytes), 2);

    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let crashed = tmp.path().join("crashed");
    let args = kafka_args(&events, &commands, &crashed, epoch_bytes);
    let mut epochs = Vec::new();
    // Kill process 1 (a plain worker) first, then process 0 (worker 0: commands and
    // commit records).
    for victim in [1, 0] {
        let hosts = hosts_file(tmp.path(), 2);
        let mut children: Vec<Option<Child>> = (0..2)
            .map(|i| Some(start_process(&args, i, 2, &hosts)))
            .collect();
        let before = epochs.last().copied().flatten();
        let deadline = Instant::now() + Duration::from_secs(120);
        while newest_commit_epoch(&crashed) <= before {
            for (i, c) in children.iter_mut().enumerate() {
                let c = c.as_mut().unwrap();
                assert!(
                    c.try_wait().unwrap().is_none(),
                    "seed {seed}: process {i} ended before process {victim} was killed"
                );
            }
            assert!(
                Instant::now() < deadline,
                "kill of process {victim}: no new commit within 120 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(0..1_000)));
        let mut killed = children[victim].take().unwrap();
        killed.kill().unwrap(); // SIGKILL
        killed.wait().unwrap();
        // The other process notices and stops with an error naming the cause.
        let survivor = children[1 - victim].take().unwrap();
        let out = wait_output(survivor, 60, "the surviving process");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "seed {seed}: process {} succeeded after process {victim} was killed:\n{stderr}",
            1 - victim
        );
        assert!(
            stderr.contains("lost the connection to another process of the cluster"),
            "seed {seed}: process {} after process {victim} was killed:\n{stderr}",
            1 - victim
        );
        epochs.push(newest_commit_is_whole(&crashed));
    }
    assert!(
        epochs.windows(2).all(|w| w[0] < w[1]),
        "seed {seed}: every killed cluster committed something: {epochs:?}"
    );
    run_cluster(&args, 2, tmp.path());
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

#[test]
fn processes_started_with_different_settings_all_stop_with_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = golden_dir("small");
    let data = tmp.path().join("data");
    let args = |epoch_bytes: &str| {
        strings(&[
            "--config",
            dir.join("config.toml").to_str().unwrap(),
            "--events",
            &format!("file:{}", dir.join("events.jsonl").display()),
            "--data",
            data.to_str().unwrap(),
            "--epoch-bytes",
            epoch_bytes,
            "--quiet",
        ])
    };
    let hosts = hosts_file(tmp.path(), 2);
    let children = [
        start_process(&args("4096"), 0, 2, &hosts),
        start_process(&args("8192"), 1, 2, &hosts),
    ];
    let mut said = String::new();
    for (i, child) in children.into_iter().enumerate() {
        let out = wait_output(child, 60, &format!("process {i}"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "process {i} succeeded:\n{stderr}");
        said.push_str(&stderr);
    }
    assert!(
        said.contains("the processes of the cluster run with different settings"),
        "{said}"
    );
    assert!(
        !data.join("_commits").exists(),
        "nothing is committed when the settings differ"
    );
}

/// A worker of process 1 that fails stops process 1 with its error and process 0 with
/// the lost connection, instead of leaving process 0 waiting for it: one returning an
/// error (it cannot write its events file at the final commit, because a directory sits
/// where the file must go) and one panicking inside an operator (same for its usage partition at the
/// final commit). The obstacles are those of `cli::a_failing_worker_stops_the_job_with_its_error`.
#[test]
fn a_failing_worker_stops_every_process() {
    for obstacle in [
        "events/e000005-w1.parquet",
        "usage_windows/hour/2026-10-26T04/w1-e000005.parquet",
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("d");
        std::fs::create_dir_all(data.join(obstacle).join("obstacle")).unwrap();
        let dir = golden_dir("small");
        let args = strings(&[
            "--config",
            dir.join("config.toml").to_str().unwrap(),
            "--events",
            &format!("file:{}", dir.join("events.jsonl").display()),
            "--data",
            data.to_str().unwrap(),
            "--epoch-bytes",
            "20000",
            "--quiet",
        ]);
        let hosts = hosts_file(tmp.path(), 2);
        let children: Vec<Child> = (0..2).map(|i| start_process(&args, i, 2, &hosts)).collect();
        let mut stderr = Vec::new();
        for (i, child) in children.into_iter().enumerate() {
            let out = wait_output(child, 120, &format!("process {i} ({obstacle})"));
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(!out.status.success(), "process {i} succeeded:\n{err}");
            stderr.push(err);
        }
        assert!(
            stderr[1].contains(&format!("writing {obstacle}")),
            "process 1: {}",
            stderr[1]
        );
        assert!(
            stderr[0].contains("lost the connection to another process of the cluster"),
            "process 0: {}",
            stderr[0]
        );
    }
}

#[test]
fn a_process_whose_peers_never_come_up_fails_after_the_connect_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = golden_dir("small");
    let data = tmp.path().join("data");
    let hosts = hosts_file(tmp.path(), 2);
    let args = strings(&[
        "--config",
        dir.join("config.toml").to_str().unwrap(),
        "--events",
        &format!("file:{}", dir.join("events.jsonl").display()),
        "--data",
        data.to_str().unwrap(),
        "--connect-timeout",
        "2s",
    ]);
    let peer = std::fs::read_to_string(&hosts).unwrap();
    // Process 1 connects to process 0, process 0 waits for process 1: both give up.
    for i in [1, 0] {
        let started = Instant::now();
        let out = wait_output(
            start_process(&args, i, 2, &hosts),
            60,
            &format!("process {i}"),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "process {i}:\n{stderr}");
        let other = peer.lines().nth(1 - i).unwrap();
        assert!(
            stderr.contains(&format!(
                "process {i} of 2 could not connect to every other process of the cluster within 2s (process {} at {other})",
                1 - i
            )),
            "process {i}:\n{stderr}"
        );
        assert!(started.elapsed() >= Duration::from_secs(2));
        assert!(!data.join("_commits").exists(), "process {i} committed");
    }
}
