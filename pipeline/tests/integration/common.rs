//! Helpers shared by the end-to-end tests.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The `pipeline/` directory of the checkout under test. Read at run time, not with
/// `env!`: a build cache shared between checkouts in different directories may hand a
/// test binary compiled in another one.
pub fn manifest_dir() -> PathBuf {
    PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
}

/// A golden case of the repository (`tests/golden/`, see its README).
pub fn golden_dir(case: &str) -> PathBuf {
    manifest_dir().join("../tests/golden").join(case)
}

/// Runs the `openmonetize` binary; panics with its output when it fails.
pub fn openmonetize(args: &[&str]) -> String {
    openmonetize_env(args, &[])
}

/// As [`openmonetize`], with extra environment variables.
pub fn openmonetize_env(args: &[&str], env: &[(String, String)]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_openmonetize"))
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("run openmonetize");
    assert!(
        out.status.success(),
        "openmonetize {args:?} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Runs the job over a golden case's events and commands into `data`.
pub fn run_case(case: &str, data: &Path, workers: usize, epoch_bytes: u64) {
    run_case_committing(case, data, workers, epoch_bytes, 1);
}

/// As `run_case`, committing every `commit_every` epochs.
pub fn run_case_committing(
    case: &str,
    data: &Path,
    workers: usize,
    epoch_bytes: u64,
    commit_every: u64,
) {
    let dir = golden_dir(case);
    let events = format!("file:{}", dir.join("events.jsonl").display());
    let commands = format!("file:{}", dir.join("commands.jsonl").display());
    let config = dir.join("config.toml");
    openmonetize(&[
        "run",
        "--config",
        config.to_str().unwrap(),
        "--events",
        &events,
        "--commands",
        &commands,
        "--data",
        data.to_str().unwrap(),
        "--workers",
        &workers.to_string(),
        "--epoch-bytes",
        &epoch_bytes.to_string(),
        "--commit-every",
        &commit_every.to_string(),
        "--quiet",
    ]);
}

/// A `--data` location and the environment that reaches it (S3 credentials).
#[derive(Clone, Debug)]
pub struct Data {
    /// The `--data` URL.
    pub url: String,
    /// Environment variables for every command using it.
    pub env: Vec<(String, String)>,
}

impl From<&Path> for Data {
    fn from(path: &Path) -> Data {
        Data {
            url: path.to_str().unwrap().to_string(),
            env: Vec::new(),
        }
    }
}

/// Query result as CSV rows (header first).
pub fn query_csv(data: &Path, sql: &str) -> Vec<Vec<String>> {
    query_at(&data.into(), sql)
}

/// Query result as CSV rows (header first), at any location.
pub fn query_at(data: &Data, sql: &str) -> Vec<Vec<String>> {
    let text = openmonetize_env(
        &["query", "--data", &data.url, "--format", "csv", sql],
        &data.env,
    );
    parse_csv(&text)
}

/// Parses CSV text into rows.
pub fn parse_csv(text: &str) -> Vec<Vec<String>> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(text.as_bytes())
        .records()
        .map(|r| r.expect("valid csv").iter().map(str::to_string).collect())
        .collect()
}

/// The usage_windows columns of the golden files, in golden format.
pub const USAGE_SQL: &str = "SELECT tenant_id, customer_id, meter, dimensions, window_size, \
    to_char(window_start, '%Y-%m-%dT%H:%M:%S') AS window_start, value, events FROM usage_windows \
    ORDER BY tenant_id, customer_id, meter, dimensions, window_size, window_start";

/// The credit_grants columns of the golden files, in golden format.
pub const GRANTS_SQL: &str = "SELECT tenant_id, grant_id, customer_id, amount, consumed, expired, \
    voided, remaining FROM credit_grants ORDER BY tenant_id, grant_id";

/// The credit_balances columns of the golden files, in golden format.
pub const BALANCES_SQL: &str = "SELECT tenant_id, customer_id, balance, granted, consumed, \
    expired, voided, overage FROM credit_balances ORDER BY tenant_id, customer_id";

/// Query result rows (no header) of a location this process can reach (e.g. the
/// `memory://` tables of a run in the same process).
pub fn query_in_process(data: &str, sql: &str) -> Vec<Vec<String>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let engine = rt.block_on(om_queries::QueryEngine::open(data)).unwrap();
    let batches = rt.block_on(engine.sql(sql)).unwrap();
    let text = om_queries::format(&batches, om_queries::Format::Csv).unwrap();
    parse_csv(&text).into_iter().skip(1).collect()
}

/// How [`run_lines`] runs the pipeline.
pub struct LinesRun<'a> {
    /// The config's TOML.
    pub config: &'a str,
    /// Event lines, in arrival order.
    pub events: &'a [String],
    /// Command lines.
    pub commands: &'a [String],
    /// Timely workers.
    pub workers: usize,
    /// Input bytes per epoch.
    pub epoch_bytes: u64,
    /// Epochs per commit.
    pub commit_every: u64,
}

/// Runs the pipeline in this process over event and command lines (written to temporary
/// files) into a fresh `memory://` location, and returns that location.
pub fn run_lines(r: LinesRun<'_>) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static RUN: AtomicU64 = AtomicU64::new(0);
    let tmp = tempfile::tempdir().unwrap();
    let events = tmp.path().join("events.jsonl");
    let commands = tmp.path().join("commands.jsonl");
    std::fs::write(&events, r.events.join("\n")).unwrap();
    std::fs::write(&commands, r.commands.join("\n")).unwrap();
    let data = format!("memory://lines-{}", RUN.fetch_add(1, Ordering::Relaxed));
    openmonetize::run(openmonetize::RunOptions {
        workers: r.workers,
        epoch_bytes: r.epoch_bytes,
        commit_every: r.commit_every,
        progress: false,
        commands: Some(openmonetize::Source::File(commands)),
        ..openmonetize::RunOptions::new(
            om_model::Config::from_toml(r.config).unwrap(),
            openmonetize::Source::File(events),
            data.clone(),
        )
    })
    .unwrap();
    data
}

/// The lowercase hex SHA-256 of `text`: how `[[api_keys]]` stores a key.
pub fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every file under `dir`, as paths relative to it.
pub fn files_under(dir: &Path) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else {
                let relative = path.strip_prefix(dir).unwrap();
                out.insert(relative.to_str().unwrap().to_string());
            }
        }
    }
    out
}

/// The newest commit record's path and every file it names.
pub fn named_by_newest(dir: &Path) -> std::collections::BTreeSet<String> {
    let newest = files_under(&dir.join("_commits")).pop_last().unwrap();
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("_commits").join(&newest)).unwrap())
            .unwrap();
    let mut out: std::collections::BTreeSet<String> = record["tables"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|t| t.as_object().unwrap().values())
        .map(|f| f["path"].as_str().unwrap().to_string())
        .collect();
    out.insert(format!("_commits/{newest}"));
    out
}
