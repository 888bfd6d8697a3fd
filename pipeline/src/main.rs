//! The `openmonetize` command line.

use anyhow::Context;
use clap::{Parser, Subcommand};
use om_sources::kafka::{KafkaProducer, KafkaUrl, event_key};
use openmonetize::cluster::Cluster;
use openmonetize::demo::{DemoOptions, demo};
use openmonetize::run::{DEFAULT_COMMIT_EVERY, DEFAULT_EPOCH_BYTES, RunOptions, Source, run};
use openmonetize::serve::ServerSettings;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// OpenMonetize: usage metering and monetization for AI and SaaS.
///
/// Events go in (a JSONL file or a Kafka topic), windowed usage comes out as Parquet
/// tables on object storage that you query with SQL.
#[derive(Parser)]
#[command(name = "openmonetize", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate sample events and run the whole pipeline locally, then show the results.
    ///
    /// Needs no Kafka and no config: uses the built-in default config and a local
    /// directory (./om-demo by default).
    Demo {
        /// Directory for the sample events and tables (recreated).
        #[arg(long, default_value = "om-demo")]
        dir: PathBuf,
        /// Number of events to generate.
        #[arg(long, default_value_t = 200_000)]
        events: u64,
        /// Number of customers.
        #[arg(long, default_value_t = 200)]
        customers: u32,
        /// Timely worker threads.
        #[arg(long, default_value_t = default_workers())]
        workers: usize,
    },
    /// Run the pipeline over an events source and commit the tables.
    ///
    /// With `--events file:PATH` the job reads the file to its end, commits, and exits.
    /// With `--events kafka://HOST:PORT/TOPIC` it reads every partition of the topic from
    /// the beginning, or from its last commit, in epochs of `--epoch-interval`, commits
    /// every `--commit-interval` (every `--commit-every` epochs while it catches up a
    /// backlog), and runs until stopped
    /// (Ctrl-C or SIGTERM: it commits what it read, then exits) or, with
    /// `--until-caught-up`, until every partition is read to its end.
    Run {
        /// Config file (TOML, see DESIGN.md 2.3); the built-in default when omitted.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Events source: file:PATH (JSONL) or kafka://HOST:PORT[,HOST:PORT]/TOPIC.
        #[arg(long)]
        events: String,
        /// Commands source (grants, voids, subscriptions; DESIGN.md 2.2): file:PATH when
        /// the events are a file (read whole at the start), kafka://HOST:PORT/TOPIC when
        /// they are a topic (read as it grows). Feeds the credit tables and entitlements.
        #[arg(long)]
        commands: Option<String>,
        /// Where the tables go: a local path, file:///ABS/PATH, s3://BUCKET/PREFIX (AWS_*
        /// environment variables: credentials, region, AWS_ENDPOINT_URL for other S3
        /// servers) or memory://NAME.
        #[arg(long)]
        data: String,
        /// Timely worker threads (of this process, in cluster mode).
        #[arg(long, default_value_t = default_workers())]
        workers: usize,
        /// Cluster mode: the number of processes of the job, each started with the same
        /// arguments but its own --process (README, "Cluster mode").
        #[arg(long, env = "OM_PROCESSES")]
        processes: Option<usize>,
        /// Cluster mode: this process's index, 0..N (e.g. the StatefulSet pod index).
        #[arg(long, env = "OM_PROCESS")]
        process: Option<usize>,
        /// Cluster mode: a file of one host:port per line, line i the address process i
        /// listens on for the other processes.
        #[arg(long, env = "OM_HOSTS")]
        hosts: Option<PathBuf>,
        /// Cluster mode: how long to wait for every other process to connect before
        /// failing, e.g. 30s, 5m.
        #[arg(long, env = "OM_CONNECT_TIMEOUT", default_value = "5m", value_parser = parse_interval)]
        connect_timeout: Duration,
        /// Input bytes per epoch (the unit of dedup, lateness and window updates).
        #[arg(long, default_value_t = DEFAULT_EPOCH_BYTES)]
        epoch_bytes: u64,
        /// File source: commit the tables every this many epochs, and after the last one.
        /// Kafka source catching up a backlog (more messages waiting than an epoch
        /// read): commit every this many epochs instead of every --commit-interval, until
        /// it keeps up.
        #[arg(long, default_value_t = DEFAULT_COMMIT_EVERY)]
        commit_every: u64,
        /// Kafka source: how often to commit while the job keeps up with the topic, e.g.
        /// 1s, 500ms, 1m (see --commit-every for a backlog): how stale the tables are at
        /// most, beyond the commit's own time.
        #[arg(long, default_value = "1s", value_parser = parse_interval)]
        commit_interval: Duration,
        /// Kafka source: how long an epoch is while the job keeps up, e.g. 250ms; at most
        /// --commit-interval. Each epoch's records are decided and gathered as soon as it
        /// ends, so shorter epochs leave less to do once the committing one ends (fresher
        /// tables; no more CPU per event that we could measure). Default: a quarter of
        /// --commit-interval. A job catching up a backlog reads --commit-interval per
        /// epoch.
        #[arg(long, value_parser = parse_interval)]
        epoch_interval: Option<Duration>,
        /// Kafka source: stop once every partition is read to its end (a catch-up or
        /// backfill run) instead of waiting for new messages.
        #[arg(long)]
        until_caught_up: bool,
        /// How long a file that a commit superseded (a rewritten partition's old file)
        /// and an older commit record stay, for readers still reading an older commit,
        /// before the job deletes them, e.g. 10m, 1h, 0s; `forever` keeps them all.
        #[arg(long, default_value = "1h", value_parser = parse_keep)]
        keep_superseded: Keep,
        /// Suppress progress lines.
        #[arg(long)]
        quiet: bool,
    },
    /// Serve the HTTP API: ingestion, live balance and entitlement checks, SQL.
    ///
    /// Runs the job in this process (no Kafka) over the data location, fed by what is
    /// posted. Every --epoch-interval it reads what was posted, decides the verdicts and
    /// writes the records to its journal (_journal/ in --data), then answers; every
    /// --commit-interval it commits the tables. Restarted on the same --data it resumes
    /// from its last commit and replays the journal since, so every answered record is
    /// counted exactly once. Endpoints (every /v1 request needs `Authorization: Bearer KEY`):
    ///   POST /v1/events        one event or a JSON array; answers each event's verdict
    ///                          (accepted, duplicate, late, rejected + reason) once
    ///                          journaled; ?wait=commit: once committed (read-your-writes)
    ///   POST /v1/commands      grants, voids, subscriptions, retractions (same answer)
    ///   GET  /v1/customers/{id}/balance                 credit balance (live state)
    ///   GET  /v1/customers/{id}/entitlements[/{feature}] entitlements (live state)
    ///   POST /v1/query         {"sql":"SELECT ..."} -> {"columns":[...],"rows":[{...}]}
    ///   GET  /healthz          {"status":"ok","epoch":N,"live_epoch":N}
    ///   GET  /metrics          Prometheus text: events, commits, latency, requests
    ///   GET  /openapi.json     the OpenAPI 3.1 document of all of the above
    /// A tenant key reads and writes only its tenant (posted records must carry its
    /// tenant_id; other tenants' customers are 404); an admin key sees everything and
    /// names the tenant of customer reads with ?tenant_id=. Keys are SHA-256 hashes:
    ///   [[api_keys]]
    ///   tenant = "acme"        # or: admin = true
    ///   sha256 = "..."         # printf %s "$KEY" | sha256sum
    /// Examples:
    ///   curl -s -H "Authorization: Bearer $KEY" http://127.0.0.1:8080/v1/events \
    ///        -d '[{"id":"e1","tenant_id":"acme","customer_id":"c1","event_type":"api_call",
    ///              "timestamp":"2026-11-26T10:00:00Z"}]'
    ///   curl -s -H "Authorization: Bearer $KEY" http://127.0.0.1:8080/v1/customers/c1/balance
    ///   curl -s -H "Authorization: Bearer $KEY" http://127.0.0.1:8080/v1/customers/c1/entitlements/chat
    ///   curl -s -H "Authorization: Bearer $KEY" -d '{"sql":"SELECT * FROM credit_balances"}' \
    ///        http://127.0.0.1:8080/v1/query
    /// Bodies are limited to 1 MiB, results to 100,000 rows, queries and ingest answers
    /// to 30 s; errors are {"error":{"code","message"}}. Ctrl-C/SIGTERM: stop taking
    /// requests, commit and answer what was posted, exit.
    ///
    /// With --pg-listen ADDR it also serves the same SQL over the PostgreSQL protocol
    /// (simple and extended query, text results; no TLS), the password being the API key:
    ///   PGPASSWORD="$KEY" psql "host=127.0.0.1 port=5432 user=me dbname=openmonetize" \
    ///        -c 'SELECT customer_id, balance FROM credit_balances'
    /// The key alone decides the tenant (the user and database names are not checked).
    /// BEGIN/COMMIT/ROLLBACK/SET are accepted without effect; SHOW answers a few settings.
    #[command(verbatim_doc_comment)]
    Serve {
        /// Data location the job writes to and SQL reads (as for `run`).
        #[arg(long)]
        data: String,
        /// Config file (meters, plans, [[api_keys]]); the built-in default (no keys, so
        /// every /v1 request is refused) when omitted.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Address to listen on; port 0 picks a free port (printed at start).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// No job: serve SQL (and health, metrics) over the tables already in --data,
        /// e.g. written by `run`. Ingestion and live views answer 503.
        #[arg(long)]
        read_only: bool,
        /// Timely worker threads of the job.
        #[arg(long, default_value_t = default_workers())]
        workers: usize,
        /// How often the job commits the tables (of epochs that received anything), e.g.
        /// 1s, 500ms: how stale the tables, SQL and the live balance and entitlement
        /// reads are at most, beyond the commit's own time. Kafka mode: requests are
        /// answered once a commit covers them, and epochs are a quarter of this.
        #[arg(long, default_value = "1s", value_parser = parse_interval)]
        commit_interval: Duration,
        /// How often the job cuts an epoch off the in-process queue, e.g. 50ms: how
        /// long a posted record waits, at most, before the job reads it. Its request is
        /// answered once the epoch is decided and journaled (?wait=commit: committed).
        /// Not used in Kafka mode.
        #[arg(long, default_value = "50ms", value_parser = parse_interval)]
        epoch_interval: Duration,
        /// Most bytes posted and waiting for the job (per queue); a request beyond it is
        /// answered 503 with Retry-After.
        #[arg(long, default_value_t = 64 << 20)]
        queue_bytes: usize,
        /// How the job's threads (timely workers, file writers) are scheduled next to
        /// the request threads (HTTP, PostgreSQL). idle: SCHED_IDLE, so a balance or
        /// entitlement check takes a core at once even while a commit keeps every core
        /// busy, and the job gets every cycle the requests leave; the job yields only
        /// to threads of its own scheduling group (this process, under autogroups or a
        /// cgroup). normal: the server's own priority (choose it when other busy
        /// processes share this one's scheduling group and must not starve the job).
        #[arg(long, value_enum, default_value_t = openmonetize::priority::JobPriority::Idle)]
        job_priority: openmonetize::priority::JobPriority,
        /// How long a file that a commit superseded (a rewritten partition's old file)
        /// and an older commit record stay, for readers still reading an older commit,
        /// before the job deletes them, e.g. 10m, 1h, 0s; `forever` keeps them all.
        #[arg(long, default_value = "1h", value_parser = parse_keep)]
        keep_superseded: Keep,
        /// Suppress progress lines.
        #[arg(long)]
        quiet: bool,
        /// Also serve SQL over the PostgreSQL protocol on this address (port 0 picks a
        /// free port, printed at start after the HTTP one).
        #[arg(long)]
        pg_listen: Option<String>,
        /// Kafka mode: the job reads this topic (kafka://HOST:PORT/TOPIC, it must exist)
        /// instead of an in-process queue, and POST /v1/events produces to it; each
        /// request is answered once a commit covers its records, with the same verdicts
        /// (read back from rejected_events and late_events). Other producers may write to
        /// the topic too.
        #[arg(long)]
        events_topic: Option<String>,
        /// Kafka mode: the commands topic, which POST /v1/commands produces to.
        #[arg(long, requires = "events_topic")]
        commands_topic: Option<String>,
    },
    /// Run SQL over the committed tables.
    ///
    /// Tables: events, usage_windows, rejected_events, late_events, credit_grants,
    /// credit_balances, credit_ledger, entitlements, subscriptions, costs,
    /// anomaly_scores, forecasts; and, computed from those with the plans' pricing in
    /// --config: invoices, invoice_lines, revenue (docs/billing.md).
    Query {
        /// Data location the job wrote to.
        #[arg(long)]
        data: String,
        /// Config file whose plans price `invoices` (the built-in default, which has no
        /// pricing, when omitted).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Output format: table, csv or json (JSON lines).
        #[arg(long, default_value = "table")]
        format: String,
        /// Run as one tenant: every table shows only that tenant's rows, and only
        /// queries are allowed (no DDL, DML, SET, information_schema or table functions).
        #[arg(long)]
        tenant: Option<String>,
        /// The SQL statement.
        sql: String,
    },
    /// Export one calendar month as files: usage statements, invoices or revenue.
    ///
    /// Writes <TO>/<KIND>/<PERIOD>/<table>.<csv|jsonl|parquet> and then manifest.json
    /// (files, rows, SHA-256, whether the month was final). The files hold only what the
    /// month's data determines, so exporting a final month again writes the same bytes.
    /// A month that is not final yet (its end is not at least allowed_lateness behind
    /// the watermark) is exported as a draft, with a warning.
    ///   statements: usage_statements (every meter's month value per customer and
    ///               dimension group)
    ///   invoices:   invoices and invoice_lines (priced with --config's plans)
    ///   revenue:    revenue rows of the month's days (prepaid credits, ASC 606 style)
    #[command(verbatim_doc_comment)]
    Export {
        /// statements, invoices or revenue.
        kind: String,
        /// The month, YYYY-MM (UTC).
        #[arg(long)]
        period: String,
        /// Data location the job wrote to.
        #[arg(long)]
        data: String,
        /// Destination: a local path, file:///ABS/PATH or s3://BUCKET/PREFIX.
        #[arg(long)]
        to: String,
        /// csv, json (JSON lines) or parquet.
        #[arg(long, default_value = "csv")]
        format: String,
        /// Config file whose plans price the invoices (the built-in default when
        /// omitted); use the job's config.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Produce JSONL records (e.g. events.jsonl, or replayed late events) into a Kafka
    /// topic, one message per line, keyed by tenant and customer so that a customer's
    /// events stay in order in one partition.
    Produce {
        /// The JSONL file.
        #[arg(long)]
        file: PathBuf,
        /// The topic: kafka://HOST:PORT/TOPIC (it must exist).
        #[arg(long)]
        to: String,
    },
    /// Generate synthetic AI/SaaS usage events as JSONL, into a file or a Kafka topic.
    Gen {
        /// Number of events (lines).
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        /// Number of customers.
        #[arg(long, default_value_t = 1_000)]
        customers: u32,
        /// Random seed (same seed, same output).
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Days of event time covered.
        #[arg(long, default_value_t = 7)]
        days: u32,
        /// Output file.
        #[arg(long, required_unless_present = "to", conflicts_with = "to")]
        out: Option<PathBuf>,
        /// Or a Kafka topic: kafka://HOST:PORT/TOPIC (it must exist); messages are keyed
        /// by tenant and customer.
        #[arg(long)]
        to: Option<String>,
        /// Write commands for the same customers instead of events: three credit grants
        /// per customer over the same days (500 expiring on day 3, 2,000 from day 1, 100
        /// from day 2 to 6, voided on day 4 for every third customer) and a plan
        /// subscription (`pro` for every fourth customer, `free` for the others, every
        /// tenth of those upgraded to `pro` on day 3).
        #[arg(long)]
        grants: bool,
    },
}

fn parse_interval(text: &str) -> Result<Duration, String> {
    match om_model::time::parse_duration(text) {
        Some(m) if m > 0 => Ok(Duration::from_micros(m as u64)),
        _ => Err(format!(
            "`{text}` is not a positive duration: use a number and a unit, e.g. 1s, 500ms, 2m"
        )),
    }
}

/// `--keep-superseded`: a duration, or forever (`None`).
#[derive(Clone, Copy, Debug)]
struct Keep(Option<Duration>);

fn parse_keep(text: &str) -> Result<Keep, String> {
    if text == "forever" {
        return Ok(Keep(None));
    }
    match om_model::time::parse_duration(text) {
        Some(m) if m >= 0 => Ok(Keep(Some(Duration::from_micros(m as u64)))),
        _ => Err(format!(
            "`{text}` is neither a duration (e.g. 0s, 10m, 1h) nor `forever`"
        )),
    }
}

/// Parses `--to` as a Kafka topic address.
fn kafka_target(to: &str) -> anyhow::Result<KafkaUrl> {
    to.parse::<KafkaUrl>()
        .with_context(|| format!("--to `{to}`"))
}

/// Sends every line of `lines` to `producer`, keyed by tenant and customer; returns the
/// number of messages.
fn produce_lines(
    producer: &KafkaProducer,
    mut next_line: impl FnMut(&mut String) -> anyhow::Result<bool>,
) -> anyhow::Result<u64> {
    let mut line = String::new();
    let mut sent = 0u64;
    let started = std::time::Instant::now();
    let mut last_report = started;
    while next_line(&mut line)? {
        let record = line.trim_end_matches(['\n', '\r']);
        if record.trim().is_empty() {
            continue;
        }
        let key = event_key(record.as_bytes());
        producer.send(key.as_deref(), record.as_bytes())?;
        sent += 1;
        if last_report.elapsed() >= Duration::from_secs(2) {
            last_report = std::time::Instant::now();
            eprintln!(
                "produced {sent} messages ({:.0}/s)",
                sent as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    producer.flush()?;
    Ok(sent)
}

fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

#[expect(clippy::too_many_lines, reason = "to be split into stages (issue #9)")]
fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Demo {
            dir,
            events,
            customers,
            workers,
        } => demo(DemoOptions {
            dir,
            events,
            customers,
            workers,
        }),
        Command::Run {
            config,
            events,
            commands,
            data,
            workers,
            processes,
            process,
            hosts,
            connect_timeout,
            epoch_bytes,
            commit_every,
            commit_interval,
            epoch_interval,
            until_caught_up,
            keep_superseded,
            quiet,
        } => {
            let cluster =
                Cluster::from_settings(processes, process, hosts.as_deref())?.map(|c| Cluster {
                    connect_timeout,
                    ..c
                });
            let commands: Option<Source> = commands
                .map(|c| c.parse().with_context(|| format!("--commands `{c}`")))
                .transpose()?;
            let events: Source = events
                .parse()
                .with_context(|| format!("--events `{events}`"))?;
            let config = openmonetize::load_config(config.as_deref())?;
            let stop = Arc::new(AtomicBool::new(false));
            for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
                // The first signal stops the job after its current epoch is committed; a
                // second one exits at once (nothing half-committed is ever visible).
                signal_hook::flag::register_conditional_shutdown(signal, 1, Arc::clone(&stop))
                    .context("installing the signal handler")?;
                signal_hook::flag::register(signal, Arc::clone(&stop))
                    .context("installing the signal handler")?;
            }
            let place = cluster
                .as_ref()
                .map(|c| format!(" (process {} of {})", c.process, c.processes))
                .unwrap_or_default();
            let stopped = Arc::clone(&stop);
            let summary = run(RunOptions {
                workers,
                cluster,
                epoch_bytes,
                commit_every,
                commit_interval,
                epoch_interval,
                until_caught_up,
                keep_superseded: keep_superseded.0,
                stop,
                progress: !quiet,
                commands,
                ..RunOptions::new(config, events, data.clone())
            })?;
            if stopped.load(std::sync::atomic::Ordering::SeqCst) {
                eprintln!("stopped on request after committing what was read");
            }
            let c = &summary.commit.counts;
            let secs = summary.elapsed.as_secs_f64();
            let read = c.accepted + c.rejected + c.late;
            if c.commands_accepted + c.commands_rejected > 0 {
                eprintln!(
                    "commands: accepted {}, rejected {} (in rejected_events)",
                    c.commands_accepted, c.commands_rejected
                );
            }
            eprintln!(
                "done{place}: {read} records ({:.0}/s) in {secs:.2}s: accepted {}, rejected {} ({} duplicates), late {}; watermark {}; committed epoch {} to {data}",
                read as f64 / secs.max(1e-9),
                c.accepted,
                c.rejected,
                c.duplicates,
                c.late,
                summary.commit.watermark.as_deref().unwrap_or("none"),
                summary.commit.epoch,
            );
            Ok(())
        }
        Command::Query {
            data,
            config,
            format,
            tenant,
            sql,
        } => {
            let format: om_queries::Format = format.parse()?;
            let config = Arc::new(openmonetize::load_config(config.as_deref())?);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let scope = tenant.map_or(om_queries::Scope::All, om_queries::Scope::Tenant);
            let engine = runtime.block_on(om_queries::QueryEngine::open_with_config(
                &data, scope, config,
            ))?;
            let batches = runtime.block_on(engine.sql(&sql)).context("query failed")?;
            print!("{}", om_queries::format(&batches, format)?);
            if format == om_queries::Format::Table {
                println!();
            }
            Ok(())
        }
        Command::Export {
            kind,
            period,
            data,
            to,
            format,
            config,
        } => {
            let config = Arc::new(openmonetize::load_config(config.as_deref())?);
            let export = openmonetize::exports::parse_request(&kind, &period, &format)?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let manifest = runtime.block_on(openmonetize::exports::export_once(
                &data, &to, config, &export,
            ))?;
            if !manifest.is_final {
                eprintln!(
                    "warning: {period} is not final yet (late events can still change it): this export is a draft"
                );
            }
            for f in &manifest.files {
                println!("{}  {} rows  {} bytes", f.path, f.rows, f.bytes);
            }
            println!("{}", export.manifest_path());
            Ok(())
        }
        Command::Serve {
            data,
            config,
            listen,
            read_only,
            workers,
            commit_interval,
            epoch_interval,
            queue_bytes,
            job_priority,
            keep_superseded,
            quiet,
            pg_listen,
            events_topic,
            commands_topic,
        } => {
            let config = openmonetize::load_config(config.as_deref())?;
            if config.api_keys.is_empty() {
                eprintln!(
                    "warning: the config has no [[api_keys]]: every /v1 request will be refused (401)"
                );
            }
            let settings = ServerSettings {
                config,
                data,
                listen,
                read_only,
                workers,
                commit_interval,
                epoch_interval,
                queue_bytes,
                job_priority,
                keep_superseded: keep_superseded.0,
                progress: !quiet,
                pg_listen,
                events_topic,
                commands_topic,
            };
            // Ctrl-C or SIGTERM: refuse new records, let the job commit and answer what
            // was posted, then finish the requests in flight and exit.
            let shutdown = async {
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                        .expect("installing the SIGTERM handler");
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            };
            let summary = openmonetize::serve::run_server(settings, shutdown, |scheme, addr| {
                println!("listening on {scheme}://{addr}");
                let _ = std::io::stdout().flush();
            })?;
            if let Some(summary) = summary
                && !quiet
            {
                eprintln!(
                    "stopped after committing epoch {} ({} events accepted in all)",
                    summary.commit.epoch, summary.commit.counts.accepted
                );
            }
            Ok(())
        }
        Command::Produce { file, to } => {
            let url = kafka_target(&to)?;
            let producer = KafkaProducer::open(&url)?;
            let mut reader = std::io::BufReader::with_capacity(
                1 << 20,
                std::fs::File::open(&file)
                    .with_context(|| format!("opening {}", file.display()))?,
            );
            let sent = produce_lines(&producer, |line| {
                line.clear();
                Ok(reader.read_line(line)? > 0)
            })?;
            eprintln!("produced {sent} messages from {} to {url}", file.display());
            Ok(())
        }
        Command::Gen {
            events,
            customers,
            seed,
            days,
            out,
            to,
            grants,
        } => {
            let opts = om_sources::generator::GenOptions {
                events,
                customers,
                seed,
                span: i64::from(days) * om_model::time::DAY,
                ..Default::default()
            };
            if grants {
                let lines = om_sources::generator::sample_commands(&opts);
                let target = match (&out, &to) {
                    (Some(out), _) => {
                        std::fs::write(out, lines.join("\n") + "\n")
                            .with_context(|| format!("writing {}", out.display()))?;
                        out.display().to_string()
                    }
                    (None, Some(to)) => {
                        let url = kafka_target(to)?;
                        let producer = KafkaProducer::open(&url)?;
                        let mut next = lines.iter();
                        produce_lines(&producer, |line| {
                            line.clear();
                            Ok(next.next().map(|l| line.push_str(l)).is_some())
                        })?;
                        url.to_string()
                    }
                    (None, None) => unreachable!("clap requires --out or --to"),
                };
                eprintln!("wrote {} grant commands to {target}", lines.len());
                return Ok(());
            }
            let mut generator = om_sources::generator::Generator::new(opts);
            let target = match (&out, &to) {
                (Some(out), _) => {
                    let file = std::fs::File::create(out)
                        .with_context(|| format!("creating {}", out.display()))?;
                    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
                    generator.write_all(&mut w)?;
                    w.flush()?;
                    out.display().to_string()
                }
                (None, Some(to)) => {
                    let url = kafka_target(to)?;
                    let producer = KafkaProducer::open(&url)?;
                    produce_lines(&producer, |line| {
                        line.clear();
                        Ok(generator.next_line(line))
                    })?;
                    url.to_string()
                }
                (None, None) => unreachable!("clap requires --out or --to"),
            };
            let s = generator.summary();
            eprintln!(
                "wrote {} events ({} duplicates, {} very late) to {target}",
                s.lines, s.duplicates, s.very_late,
            );
            Ok(())
        }
    }
}
