//! `om-kafka-bench`: the Kafka -> tables path against a broker on this machine.
//!
//! 1. Throughput: produces N generated events into a fresh 4-partition topic, then runs
//!    the job (`--until-caught-up`, built-in config, local tables) over it: events/s
//!    from the first poll to the last commit.
//! 2. Freshness: runs the live job (commit interval 1 s) on another topic while a
//!    producer sends events at a fixed rate; each message's send time is matched, by
//!    partition and offset (from the delivery report), to the first moment a commit
//!    record covering its offset is seen, i.e. when `query` can see it. Prints p50, p99
//!    and max. The events' timestamps span the run's seconds (live traffic) unless
//!    `--span-seconds` says otherwise.
//!
//! The broker is tansu from `$OM_CACHE/tools/bin` (installed by scripts/test), started on
//! a free port with its SQLite engine, unless `--brokers` names a running one (then
//! topics must be creatable with `--create-topic-cmd`, or already exist).
//!
//! Run with: `cargo run --release -p om-bench --bin om-kafka-bench -- --events 2000000`

use anyhow::{Context, bail};
use clap::Parser;
use om_sources::generator::{GenOptions, Generator};
use om_sources::kafka::{KafkaUrl, event_key};
use openmonetize::run::{RunOptions, Source, run};
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(about = "Kafka -> tables: throughput and freshness")]
struct Args {
    /// Events for the throughput run.
    #[arg(long, default_value_t = 2_000_000)]
    events: u64,
    /// Customers.
    #[arg(long, default_value_t = 10_000)]
    customers: u32,
    /// Timely workers.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// What the job keeps: `full` (the whole built-in config: usage, credits, plans,
    /// costs, anomaly scores, forecasts), `credits` or `usage` (metering only, as in
    /// `om-bench --workloads usage`). No commands are produced, so no credits are granted.
    #[arg(long, default_value = "full")]
    workload: String,
    /// The throughput run's commit interval, in milliseconds. The freshness run always
    /// commits every second (the target's setting); a job catching up a backlog commits
    /// an epoch per interval, and each commit rewrites the partitions the epoch touched,
    /// so a longer interval pays that cost less often.
    #[arg(long, default_value_t = 1000)]
    throughput_commit_interval_ms: u64,
    /// The throughput run's largest epoch, in payload bytes (the job's `--epoch-bytes`).
    #[arg(long, default_value_t = openmonetize::run::DEFAULT_EPOCH_BYTES)]
    throughput_epoch_bytes: u64,
    /// The throughput run's epochs per commit while it catches up (the job's
    /// `--commit-every`).
    #[arg(long, default_value_t = openmonetize::run::DEFAULT_COMMIT_EVERY)]
    throughput_commit_every: u64,
    /// Both runs' epoch length while the job keeps up, in milliseconds (the job's
    /// `--epoch-interval`); default a quarter of the commit interval. Equal to the
    /// commit interval, one epoch per commit, as before session 31.
    #[arg(long)]
    epoch_interval_ms: Option<u64>,
    /// Events per second the freshness producer sends.
    #[arg(long, default_value_t = 50_000)]
    rate: u64,
    /// Seconds the freshness producer runs.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Event time of the freshness producer's first event (RFC 3339). The default, the
    /// generator's, is midnight of a month's first day: the events the generator delivers
    /// minutes to hours late then land in the previous hour, day and month, so every
    /// commit rewrites those partitions as well as the current ones. `2026-11-15T12:30:00Z`
    /// is mid-hour, mid-month: only the current partitions change.
    #[arg(long)]
    start_at: Option<String>,
    /// Seconds of event time the freshness producer's events span. Without it they span
    /// `--seconds`: live traffic's shape, event time keeping pace with the clock, so a
    /// commit rewrites the current hour, day and month. `604800` (a week, the throughput
    /// run's span) is a backfill's shape: each 1 s epoch at 50,000/s then covers hours of
    /// event time, and a commit rewrites every hour partition they reach.
    #[arg(long)]
    span_seconds: Option<u64>,
    /// Print the freshness job's progress lines (stderr): per worker and epoch, the
    /// records read and how long after its epoch's reading ended the last commit was
    /// written.
    #[arg(long)]
    progress: bool,
    /// Work directory.
    #[arg(long, default_value = "/tmp/om-kafka-bench")]
    dir: PathBuf,
    /// tansu's storage engine: `sqlite://tansu.db` (in the work directory; what the tests
    /// use) or `memory://tansu/` (faster, but its fetch skips the rest of a batch when it
    /// starts inside one, so only valid for reads from the start, as here).
    #[arg(long, default_value = "sqlite://tansu.db")]
    storage: String,
}

/// The broker this bench started.
struct Tansu {
    child: Child,
    port: u16,
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tansu_bin() -> PathBuf {
    let cache = std::env::var_os("OM_CACHE").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/openmonetize"),
        PathBuf::from,
    );
    cache.join("tools/bin/tansu")
}

fn start_tansu(dir: &std::path::Path, storage: &str) -> anyhow::Result<Tansu> {
    let bin = tansu_bin();
    if !bin.exists() {
        bail!(
            "{} is missing: run scripts/test once, it installs tansu",
            bin.display()
        );
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let listener = format!("tcp://127.0.0.1:{port}");
    let child = Command::new(&bin)
        .args([
            "broker",
            "--listener-url",
            &listener,
            "--advertised-listener-url",
            &listener,
        ])
        .args(["--storage-engine", storage])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("tansu.log"))?)
        .spawn()?;
    let t = Tansu { child, port };
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!(
                "tansu did not listen within 30 s (log: {})",
                dir.join("tansu.log").display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(t)
}

fn create_topic(t: &Tansu, topic: &str) -> anyhow::Result<KafkaUrl> {
    let status = Command::new(tansu_bin())
        .args([
            "topic",
            "create",
            "--broker",
            &format!("tcp://127.0.0.1:{}", t.port),
        ])
        .args(["--partitions", "4", topic])
        .stdout(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("creating topic {topic} failed");
    }
    Ok(format!("kafka://127.0.0.1:{}/{topic}", t.port).parse()?)
}

/// Delivery reports: (partition, offset, send time), and the seconds from each send to
/// its acknowledgement by the broker.
#[derive(Default)]
struct Deliveries(Mutex<Vec<(u32, u64, Instant)>>, Mutex<Vec<f64>>);

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = Box<Instant>;

    fn delivery(&self, result: &DeliveryResult<'_>, sent: Self::DeliveryOpaque) {
        if let Ok(m) = result {
            use rdkafka::Message;
            self.1
                .lock()
                .expect("not poisoned")
                .push(sent.elapsed().as_secs_f64());
            self.0.lock().expect("not poisoned").push((
                m.partition() as u32,
                m.offset() as u64,
                *sent,
            ));
        }
    }
}

fn producer(url: &KafkaUrl) -> anyhow::Result<BaseProducer<Deliveries>> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", &url.brokers)
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .create_with_context(Deliveries::default())?)
}

/// Sends `n` generated events; `pace` = events per second, or unpaced.
fn send(
    p: &BaseProducer<Deliveries>,
    url: &KafkaUrl,
    generator: &mut Generator,
    n: u64,
    pace: Option<u64>,
) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut line = String::new();
    for i in 0..n {
        if let Some(rate) = pace {
            // Sleep only when the next event is due at least a millisecond from now, so
            // events go out in bursts of at most 1 ms. The wait is a plain sleep:
            // rdkafka's `poll(wait)` polls with a millisecond timeout until its deadline,
            // so the last fraction of a millisecond of every wait spun (17% of the
            // machine at 50,000 events/s, taken from the job and the broker).
            let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now())
                && wait >= Duration::from_millis(1)
            {
                std::thread::sleep(wait);
            }
        }
        if !generator.next_line(&mut line) {
            break;
        }
        let key = event_key(line.as_bytes()).unwrap_or_default();
        let mut opaque = Box::new(Instant::now());
        loop {
            let record = BaseRecord::with_opaque_to(&url.topic, opaque)
                .payload(line.as_bytes())
                .key(&key[..]);
            match p.send(record) {
                Ok(()) => break,
                Err((_, r)) => {
                    opaque = r.delivery_opaque;
                    p.poll(Duration::from_millis(1));
                }
            }
        }
        p.poll(Duration::ZERO);
    }
    p.flush(Duration::from_secs(120))?;
    Ok(())
}

/// The path of the newest commit record in `data`.
fn newest_record(data: &std::path::Path) -> Option<PathBuf> {
    std::fs::read_dir(data.join("_commits"))
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .max()
}

/// A commit record's contents.
fn read_record(path: &std::path::Path) -> Option<serde_json::Value> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

/// Partition -> next offset covered by the newest commit record in `data`.
///
/// `last` holds the record read last time and what it covers: a record is parsed once,
/// not at every check (a live job's record names every file, tens of KB of JSON, and
/// parsing it 100 times a second took CPU from the job under measurement).
fn committed(
    data: &std::path::Path,
    url: &KafkaUrl,
    last: &mut Option<(PathBuf, Vec<u64>)>,
) -> Vec<u64> {
    let Some(path) = newest_record(data) else {
        return vec![0; 4];
    };
    if let Some((seen, covered)) = last.as_ref()
        && *seen == path
    {
        return covered.clone();
    }
    let Some(record) = read_record(&path) else {
        // Deleted (superseded) between the listing and the read: what the record read
        // before covered still holds.
        return last.as_ref().map_or(vec![0; 4], |(_, c)| c.clone());
    };
    let covered: Vec<u64> = (0..4)
        .map(|p| {
            record["sources"][url.partition_name(p)]
                .as_u64()
                .unwrap_or(0)
        })
        .collect();
    *last = Some((path, covered.clone()));
    covered
}

/// The newest commit record in `data`, if it is not `seen`: its path and the events it
/// accounts for (accepted, rejected and late).
fn newest_commit(data: &std::path::Path, seen: Option<&PathBuf>) -> Option<(PathBuf, u64)> {
    let path = newest_record(data)?;
    if seen == Some(&path) {
        return None;
    }
    let record = read_record(&path)?;
    let counts = &record["counts"];
    let accounted = ["accepted", "rejected", "late"]
        .iter()
        .map(|k| counts[k].as_u64().unwrap_or(0))
        .sum();
    Some((path, accounted))
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

#[expect(clippy::too_many_lines, reason = "to be split into stages (issue #9)")]
fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = om_bench::workload_config(&args.workload)?;
    let _ = std::fs::remove_dir_all(&args.dir);
    std::fs::create_dir_all(&args.dir)?;
    let tansu = start_tansu(&args.dir, &args.storage)?;
    println!(
        "broker: tansu, storage {}; workload {}",
        args.storage, args.workload
    );
    let gen_opts = |events, seed, span| GenOptions {
        events,
        customers: args.customers,
        seed,
        span,
        ..Default::default()
    };

    // 1. Throughput.
    let url = create_topic(&tansu, "throughput")?;
    let p = producer(&url)?;
    let started = Instant::now();
    send(
        &p,
        &url,
        &mut Generator::new(gen_opts(args.events, 42, GenOptions::default().span)),
        args.events,
        None,
    )?;
    let produce_secs = started.elapsed().as_secs_f64();
    let data = args.dir.join("throughput-tables");
    // The producer is done: from here the process's CPU is the job's.
    let broker_pid = tansu.child.id().to_string();
    let cpu_before = (
        om_bench::cpu_seconds("self")?,
        om_bench::cpu_seconds(&broker_pid)?,
    );
    let started = Instant::now();
    let opts = RunOptions {
        workers: args.workers,
        until_caught_up: true,
        commit_interval: Duration::from_millis(args.throughput_commit_interval_ms),
        epoch_bytes: args.throughput_epoch_bytes,
        commit_every: args.throughput_commit_every,
        epoch_interval: args.epoch_interval_ms.map(Duration::from_millis),
        progress: false,
        ..RunOptions::new(
            config.clone(),
            Source::Kafka(url.clone()),
            data.to_string_lossy(),
        )
    };
    let job = std::thread::spawn(move || run(opts));
    // Each commit as it appears: (seconds since the job started, events it accounts for).
    let mut commits: Vec<(f64, u64)> = Vec::new();
    let mut seen = None;
    loop {
        let done = job.is_finished();
        if let Some((path, accounted)) = newest_commit(&data, seen.as_ref()) {
            commits.push((started.elapsed().as_secs_f64(), accounted));
            seen = Some(path);
        }
        if done {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let summary = job.join().expect("the job thread panicked")?;
    let secs = started.elapsed().as_secs_f64();
    let job_cpu = om_bench::cpu_seconds("self")? - cpu_before.0;
    let broker_cpu = om_bench::cpu_seconds(&broker_pid)? - cpu_before.1;
    let c = &summary.commit.counts;
    let read = c.accepted + c.rejected + c.late;
    if read != args.events {
        bail!("the job accounted for {read} of {} events", args.events);
    }
    println!(
        "throughput: {} events, {} workers, commit interval {} ms: produced in {produce_secs:.1} s ({:.0}/s); job {secs:.1} s, {:.0} events/s",
        args.events,
        args.workers,
        args.throughput_commit_interval_ms,
        args.events as f64 / produce_secs,
        args.events as f64 / secs
    );
    println!(
        "throughput cpu: job {job_cpu:.1} s ({:.2} us/event), broker {broker_cpu:.1} s ({:.2} us/event), of {:.1} core-s",
        job_cpu * 1e6 / args.events as f64,
        broker_cpu * 1e6 / args.events as f64,
        secs * std::thread::available_parallelism().map_or(1, |n| n.get()) as f64
    );
    // When the tables first showed every event (the job then commits once more and
    // stops), and the rate between its first commit and that one: the catch-up's
    // sustained rate, without the consumer's start and the job's end.
    let visible = commits.iter().find(|c| c.1 >= args.events).copied();
    if let (Some(first), Some(all)) = (commits.first().copied(), visible) {
        let steady = if all.0 > first.0 {
            format!(
                "{:.0} events/s between the first commit ({:.1} s, {} events) and that one",
                (all.1 - first.1) as f64 / (all.0 - first.0),
                first.0,
                first.1
            )
        } else {
            "no commit before it".to_string()
        };
        println!(
            "throughput visible: every event in the tables {:.1} s after the job started ({:.0} events/s); {steady}; {} commits seen",
            all.0,
            args.events as f64 / all.0,
            commits.len()
        );
    }

    // 2. Freshness.
    let url = create_topic(&tansu, "freshness")?;
    let data = args.dir.join("freshness-tables");
    let stop = Arc::new(AtomicBool::new(false));
    let job = {
        let (url, data, stop, workers, progress) = (
            url.clone(),
            data.clone(),
            Arc::clone(&stop),
            args.workers,
            args.progress,
        );
        let epoch_interval = args.epoch_interval_ms.map(Duration::from_millis);
        let config = config.clone();
        std::thread::spawn(move || {
            run(RunOptions {
                workers,
                stop,
                progress,
                epoch_interval,
                ..RunOptions::new(config, Source::Kafka(url), data.to_string_lossy())
            })
        })
    };
    let p = Arc::new(producer(&url)?);
    let total = args.rate * args.seconds;
    let sender = {
        let (p, url) = (Arc::clone(&p), url.clone());
        let span = args.span_seconds.unwrap_or(args.seconds).max(1) as i64 * 1_000_000;
        let mut opts = gen_opts(total, 7, span);
        if let Some(start) = &args.start_at {
            opts.start = om_model::time::parse_rfc3339(start)
                .with_context(|| format!("--start-at {start}: not an RFC 3339 time"))?;
        }
        let mut generator = Generator::new(opts);
        let rate = args.rate;
        std::thread::spawn(move || send(&p, &url, &mut generator, total, Some(rate)))
    };
    // Watch commits; a message is visible once a commit covers its offset.
    let mut latencies = Vec::with_capacity(total as usize);
    let mut pending: Vec<(u32, u64, Instant)> = Vec::new();
    let mut last_covered = Vec::new();
    let mut record_read = None;
    let deadline = Instant::now() + Duration::from_secs(args.seconds + 60);
    while (latencies.len() as u64) < total {
        if Instant::now() > deadline {
            bail!("only {} of {total} events became visible", latencies.len());
        }
        let delivered = pending.len();
        pending.append(&mut p.context().0.lock().expect("not poisoned"));
        let covered = committed(&data, &url, &mut record_read);
        let now = Instant::now();
        // Only the new deliveries can be covered unless a new commit appeared (checking
        // every pending message every 10 ms costs the job CPU at high rates).
        let from = if covered == last_covered {
            delivered
        } else {
            0
        };
        last_covered.clone_from(&covered);
        let mut check = pending.split_off(from);
        check.retain(|&(part, offset, sent)| {
            if offset < covered[part as usize] {
                latencies.push(now.duration_since(sent).as_secs_f64());
                false
            } else {
                true
            }
        });
        pending.append(&mut check);
        std::thread::sleep(Duration::from_millis(10));
    }
    sender.join().expect("producer thread")?;
    stop.store(true, Ordering::SeqCst);
    job.join().expect("job thread").context("the live job")?;
    latencies.sort_by(f64::total_cmp);
    println!(
        "freshness: {total} events at {}/s spanning {} s of event time from {}, commit interval 1 s: p50 {:.3} s, p99 {:.3} s, max {:.3} s",
        args.rate,
        args.span_seconds.unwrap_or(args.seconds),
        args.start_at
            .clone()
            .unwrap_or_else(|| om_model::time::format_micros(GenOptions::default().start)),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies[latencies.len() - 1]
    );
    let mut acks = std::mem::take(&mut *p.context().1.lock().expect("not poisoned"));
    acks.sort_by(f64::total_cmp);
    println!(
        "freshness acks: from send to the broker's acknowledgement p50 {:.3} s, p99 {:.3} s, max {:.3} s",
        percentile(&acks, 0.5),
        percentile(&acks, 0.99),
        acks[acks.len() - 1]
    );
    drop(tansu);
    Ok(())
}
