//! `om-serve-bench`: `openmonetize serve` under load, server and load generator in one
//! process on this machine.
//!
//! 1. Setup: generates `--events` synthetic events (the om-bench generator: 2 tenants,
//!    duplicates and invalid records included; their timestamps span `--span-seconds`,
//!    a week by default) and posts the generator's grants and plan subscriptions to
//!    `/v1/commands`.
//! 2. Ingestion: `--connections` keep-alive connections post the events in batches of
//!    `--batch` (a JSON array per request) to `/v1/events` as fast as the answers come
//!    (closed loop); every answer's verdicts are counted. Prints events/s from the first
//!    request to the last answer and the request latency (post to verdicts, i.e. until
//!    the journal holds them, or with `--wait-commit` until their commit) p50/p99.
//! 3. Checks: `GET /v1/customers/{id}/entitlements/api_calls` for random customers at a
//!    fixed `--check-rate` for `--check-seconds` (open loop: request i is due at
//!    start + i/rate; its latency is measured from that due time, so a stalled server is
//!    not hidden by the client waiting: no coordinated omission). Prints p50/p99/p99.9/max
//!    and the rate achieved, and the same from each request's actual send (which leaves
//!    out the client's own lateness, e.g. a lane thread that woke late). Then the same
//!    again while ingestion runs at `--background-rate` events/s.
//!
//! The ingestion load runs on one thread of its own (a current-thread tokio runtime);
//! each check connection is a thread that sleeps until its next request is due. The
//! job's threads run under `--job-priority` (as in `serve`: `SCHED_IDLE` by default,
//! below the server's and the client's threads); all of them share the machine's cores.
//!
//! Run with: `cargo run --release -p om-bench --bin om-serve-bench -- --events 2000000`

use anyhow::{Context, bail};
use clap::Parser;
use om_model::config::{ApiKey, KeyScope};
use om_sources::generator::{GenOptions, Generator, sample_commands};
use openmonetize::serve::{ServerSettings, run_server};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

#[derive(Parser, Debug)]
struct Args {
    /// Events to ingest.
    #[arg(long, default_value_t = 2_000_000)]
    events: u64,
    /// Customers.
    #[arg(long, default_value_t = 10_000)]
    customers: u32,
    /// Seconds of event time the generated events span. The default, a week, is a
    /// backfill's shape: each epoch of a fast run covers about a day of event time, so a
    /// commit rewrites dozens of hour partitions and several days. A span about as long
    /// as the run (e.g. 20) is live traffic's shape: event time keeps pace with the
    /// clock, and a commit touches the current hour, day and month.
    #[arg(long, default_value_t = 7 * 86_400)]
    span_seconds: u64,
    /// Events per ingestion request.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Concurrent ingestion connections.
    #[arg(long, default_value_t = 256)]
    connections: usize,
    /// Entitlement checks per second.
    #[arg(long, default_value_t = 5_000)]
    check_rate: u64,
    /// Seconds of checks per phase.
    #[arg(long, default_value_t = 10)]
    check_seconds: u64,
    /// Connections for the checks.
    #[arg(long, default_value_t = 64)]
    check_connections: usize,
    /// Events/s ingested during the second check phase (0: skip it).
    #[arg(long, default_value_t = 20_000)]
    background_rate: u64,
    /// Timely workers of the job.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Time between the job's commits, in milliseconds (`serve --commit-interval`).
    #[arg(long, default_value_t = 1000)]
    commit_interval_ms: u64,
    /// The job's epoch length, in milliseconds (`serve --epoch-interval`): requests are
    /// answered once their epoch is journaled.
    #[arg(long, default_value_t = 50)]
    epoch_interval_ms: u64,
    /// Post with `?wait=commit`: each request is answered once its commit is written
    /// (the server's behaviour before the journal).
    #[arg(long)]
    wait_commit: bool,
    /// Work directory (the data location is recreated in it).
    #[arg(long, default_value = "/tmp/om-serve-bench")]
    dir: PathBuf,
    /// Print the job's progress lines (epochs, commits, events/s) on stderr.
    #[arg(long)]
    progress: bool,
    /// How the job's threads are scheduled next to the server's, as `serve
    /// --job-priority`.
    #[arg(long, value_enum, default_value_t = openmonetize::priority::JobPriority::Idle)]
    job_priority: openmonetize::priority::JobPriority,
    /// Seconds a superseded file stays before the job deletes it, as `serve
    /// --keep-superseded` (0: at the next commit).
    #[arg(long, default_value_t = openmonetize::run::DEFAULT_KEEP_SUPERSEDED.as_secs())]
    keep_superseded_secs: u64,
}

const KEY: &str = "bench-admin-key";

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.batch == 0 || args.connections == 0 || args.check_connections == 0 {
        bail!("--batch, --connections and --check-connections must be at least 1");
    }
    let data = args.dir.join("data");
    if data.exists() {
        std::fs::remove_dir_all(&data)?;
    }
    std::fs::create_dir_all(&args.dir)?;

    let gen_opts = GenOptions {
        events: args.events,
        customers: args.customers,
        span: args.span_seconds as i64 * 1_000_000,
        ..GenOptions::default()
    };
    eprintln!("generating {} events...", args.events);
    let bodies = batches(&gen_opts, args.batch);
    let commands: Vec<String> = sample_commands(&gen_opts)
        // Each request waits for its commit, so fewer, larger requests (under the 1 MiB
        // body limit) set the plans up sooner.
        .chunks(3000)
        .map(|c| format!("[{}]", c.join(",")))
        .collect();

    let mut config = om_model::Config::builtin();
    config.api_keys.push(ApiKey {
        scope: KeyScope::Admin,
        sha256: sha256(KEY),
    });
    let settings = ServerSettings {
        config,
        data: data.to_string_lossy().into_owned(),
        listen: "127.0.0.1:0".into(),
        read_only: false,
        workers: args.workers,
        commit_interval: Duration::from_millis(args.commit_interval_ms),
        epoch_interval: Duration::from_millis(args.epoch_interval_ms),
        queue_bytes: 64 << 20,
        job_priority: args.job_priority,
        keep_superseded: Some(Duration::from_secs(args.keep_superseded_secs)),
        progress: args.progress,
        pg_listen: None,
        events_topic: None,
        commands_topic: None,
    };
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = std::thread::spawn(move || {
        run_server(
            settings,
            async {
                let _ = stop_rx.await;
            },
            move |_, addr| {
                let _ = addr_tx.send(addr);
            },
        )
    });
    let addr: SocketAddr = addr_rx.recv().context("the server did not start")?;

    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let path = if args.wait_commit {
        "/v1/events?wait=commit"
    } else {
        "/v1/events"
    };
    client.block_on(async {
        wait_ready(addr).await?;
        let mut conn = Conn::open(addr).await?;
        for body in &commands {
            let (status, answer) = conn.post("/v1/commands", body.as_bytes()).await?;
            if status != 200 {
                bail!("commands: {status} {}", String::from_utf8_lossy(&answer));
            }
        }
        eprintln!(
            "posted {} commands; ingesting over {} connections...",
            commands.len(),
            args.connections
        );
        let cpu_before = om_bench::cpu_seconds("self")?;
        let ingested = ingest(addr, path, &bodies, args.connections, None).await?;
        let cpu = om_bench::cpu_seconds("self")? - cpu_before;
        println!(
            "ingest: {} events in {} requests of {} over {} connections: {:.2} s, {:.0} events/s, {:.1} CPU-s ({:.2} cores, {:.1} us per event); request latency p50 {:.1} ms, p99 {:.1} ms (verdicts: {} accepted, {} duplicate, {} rejected, {} late)",
            ingested.events,
            ingested.latencies.len(),
            args.batch,
            args.connections,
            ingested.seconds,
            ingested.events as f64 / ingested.seconds,
            cpu,
            cpu / ingested.seconds,
            cpu * 1e6 / ingested.events as f64,
            percentile(&ingested.latencies, 0.50) * 1e3,
            percentile(&ingested.latencies, 0.99) * 1e3,
            ingested.verdicts[0],
            ingested.verdicts[1],
            ingested.verdicts[2],
            ingested.verdicts[3],
        );
        if ingested.verdicts.iter().sum::<u64>() != args.events {
            bail!("{} verdicts for {} events", ingested.verdicts.iter().sum::<u64>(), args.events);
        }
        // Answers come once the records are journaled; the tables follow at the next
        // commit. Wait for it, so that the idle phase below is idle.
        let committed = wait_committed(addr, ingested.last_epoch).await?;
        println!(
            "ingest committed: the commit covering the last answer came {:.2} s after it; {:.0} events/s from the first request to that commit",
            committed.as_secs_f64(),
            ingested.events as f64 / (ingested.seconds + committed.as_secs_f64()),
        );
        let idle = checks(addr, CheckPlan::of(&args))?;
        report("checks (idle server)", &args, &idle);
        if args.background_rate > 0 {
            let per_second = (args.background_rate as usize).div_ceil(args.batch);
            let seconds = args.check_seconds as usize + 1;
            let wanted = (per_second * seconds).min(bodies.len());
            // Fresh ids: the same events again would be duplicates, which cost as much
            // to judge but nothing to count.
            let more = batches(
                &GenOptions {
                    events: (wanted * args.batch) as u64,
                    seed: 4242,
                    ..gen_opts.clone()
                },
                args.batch,
            );
            let background = ingest(addr, path, &more, 256, Some(per_second as u64));
            let plan = CheckPlan::of(&args);
            let busy = tokio::task::spawn_blocking(move || checks(addr, plan));
            let (background, busy) = tokio::join!(background, busy);
            let (background, busy) = (background?, busy??);
            println!(
                "background ingest: {:.0} events/s, request latency p50 {:.1} ms, p99 {:.1} ms",
                background.events as f64 / background.seconds,
                percentile(&background.latencies, 0.50) * 1e3,
                percentile(&background.latencies, 0.99) * 1e3,
            );
            report("checks (during ingest)", &args, &busy);
        }
        anyhow::Ok(())
    })?;
    let _ = stop_tx.send(());
    let summary = server
        .join()
        .map_err(|_| anyhow::anyhow!("the server panicked"))??;
    if let Some(s) = summary {
        eprintln!(
            "server stopped after epoch {} ({} events accepted)",
            s.commit.epoch, s.commit.counts.accepted
        );
    }
    Ok(())
}

/// The generated events as JSON array bodies of (at most) `batch` events, with their
/// number of events.
fn batches(opts: &GenOptions, batch: usize) -> Vec<(String, usize)> {
    let mut generator = Generator::new(opts.clone());
    let mut bodies = Vec::new();
    let mut body = String::from("[");
    let mut n = 0;
    let mut line = String::new();
    while generator.next_line(&mut line) {
        if n > 0 {
            body.push(',');
        }
        body.push_str(line.trim_end());
        line.clear();
        n += 1;
        if n == batch {
            body.push(']');
            bodies.push((std::mem::replace(&mut body, String::from("[")), n));
            n = 0;
        }
    }
    if n > 0 {
        body.push(']');
        bodies.push((body, n));
    }
    bodies
}

fn sha256(text: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes()).into()
}

/// One keep-alive HTTP/1.1 connection.
struct Conn {
    addr: SocketAddr,
    stream: BufReader<TcpStream>,
    head: Vec<u8>,
    line: String,
}

impl Conn {
    async fn open(addr: SocketAddr) -> anyhow::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            addr,
            stream: BufReader::new(stream),
            head: Vec::with_capacity(256),
            line: String::new(),
        })
    }

    async fn post(&mut self, path: &str, body: &[u8]) -> anyhow::Result<(u16, Vec<u8>)> {
        self.send("POST", path, body).await
    }

    async fn send(
        &mut self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> anyhow::Result<(u16, Vec<u8>)> {
        request_head(&mut self.head, method, path, self.addr, body.len());
        let s = self.stream.get_mut();
        s.write_all(&self.head).await?;
        s.write_all(body).await?;
        self.line.clear();
        self.stream.read_line(&mut self.line).await?;
        let status = status_of(&self.line)?;
        let mut length = 0usize;
        loop {
            self.line.clear();
            if self.stream.read_line(&mut self.line).await? == 0 {
                bail!("connection closed");
            }
            match header_line(&self.line)? {
                Header::End => break,
                Header::Length(n) => length = n,
                Header::Other => {}
            }
        }
        let mut answer = vec![0; length];
        self.stream.read_exact(&mut answer).await?;
        Ok((status, answer))
    }
}

/// The same, blocking: one connection of a check lane.
struct BlockingConn {
    addr: SocketAddr,
    stream: std::io::BufReader<std::net::TcpStream>,
    head: Vec<u8>,
    line: String,
    answer: Vec<u8>,
}

impl BlockingConn {
    fn open(addr: SocketAddr) -> anyhow::Result<BlockingConn> {
        let stream = std::net::TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        Ok(BlockingConn {
            addr,
            stream: std::io::BufReader::new(stream),
            head: Vec::with_capacity(256),
            line: String::new(),
            answer: Vec::new(),
        })
    }

    /// A GET; returns the status (the answer's body is read and dropped).
    fn get(&mut self, path: &str) -> anyhow::Result<u16> {
        use std::io::{BufRead, Read, Write};
        request_head(&mut self.head, "GET", path, self.addr, 0);
        self.stream.get_mut().write_all(&self.head)?;
        self.line.clear();
        self.stream.read_line(&mut self.line)?;
        let status = status_of(&self.line)?;
        let mut length = 0usize;
        loop {
            self.line.clear();
            if self.stream.read_line(&mut self.line)? == 0 {
                bail!("connection closed");
            }
            match header_line(&self.line)? {
                Header::End => break,
                Header::Length(n) => length = n,
                Header::Other => {}
            }
        }
        self.answer.resize(length, 0);
        self.stream.read_exact(&mut self.answer)?;
        Ok(status)
    }
}

/// Writes a request's head into `buf`.
fn request_head(buf: &mut Vec<u8>, method: &str, path: &str, addr: SocketAddr, length: usize) {
    use std::io::Write;
    buf.clear();
    write!(
        buf,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    )
    .expect("writing to a Vec");
}

/// The status of an answer's status line.
fn status_of(line: &str) -> anyhow::Result<u16> {
    line.get(9..12)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {line:?}"))
}

/// What a header line of an answer says.
enum Header {
    /// The empty line after the headers.
    End,
    /// Content-Length.
    Length(usize),
    /// Any other header.
    Other,
}

/// Reads one header line of an answer.
fn header_line(line: &str) -> anyhow::Result<Header> {
    let l = line.trim_end();
    if l.is_empty() {
        return Ok(Header::End);
    }
    match l.split_once(':') {
        Some((name, value)) if name.eq_ignore_ascii_case("content-length") => {
            Ok(Header::Length(value.trim().parse()?))
        }
        _ => Ok(Header::Other),
    }
}

async fn wait_ready(addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(mut c) = Conn::open(addr).await
            && let Ok((200, _)) = c.send("GET", "/healthz", b"").await
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the server never became ready");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Ingested {
    events: u64,
    seconds: f64,
    /// The latest epoch an answer named.
    last_epoch: u64,
    latencies: Vec<f64>,
    /// accepted, duplicate, rejected, late.
    verdicts: [u64; 4],
}

/// Polls `/healthz` until the last commit is epoch `epoch` or later; the time it took.
async fn wait_committed(addr: SocketAddr, epoch: u64) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let mut conn = Conn::open(addr).await?;
    loop {
        let (status, body) = conn.send("GET", "/healthz", b"").await?;
        if status == 200 && count_of(&body, "epoch") >= epoch {
            return Ok(start.elapsed());
        }
        if start.elapsed() > Duration::from_secs(120) {
            bail!("no commit covered epoch {epoch} within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The number after `"name":` in a JSON answer.
fn count_of(answer: &[u8], name: &str) -> u64 {
    let key = format!("\"{name}\":");
    let text = std::str::from_utf8(answer).unwrap_or("");
    text.find(&key)
        .map(|i| {
            text[i + key.len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        })
        .and_then(|d| d.parse().ok())
        .unwrap_or(0)
}

/// Posts every body over `connections` connections; with `rate` (requests/s), paced.
async fn ingest(
    addr: SocketAddr,
    path: &str,
    bodies: &[(String, usize)],
    connections: usize,
    rate: Option<u64>,
) -> anyhow::Result<Ingested> {
    // Open every connection before the clock starts, a few hundred at a time: thousands
    // of simultaneous connects overflow the listener's accept queue (1,024), and the
    // kernel then resets some of them.
    let mut conns = Vec::with_capacity(connections);
    while conns.len() < connections {
        let wave = (connections - conns.len()).min(256);
        let opened = futures::future::join_all((0..wave).map(|_| Conn::open(addr))).await;
        for c in opened {
            conns.push(c.context("opening an ingestion connection")?);
        }
    }
    let next = Arc::new(AtomicUsize::new(0));
    let events = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let tasks = conns.into_iter().map(|mut conn| {
        let next = Arc::clone(&next);
        let events = Arc::clone(&events);
        async move {
            let mut latencies = Vec::new();
            let mut verdicts = [0u64; 4];
            let mut last_epoch = 0;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((body, n)) = bodies.get(i) else {
                    break;
                };
                if let Some(rate) = rate {
                    let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
                    tokio::time::sleep_until(due.into()).await;
                }
                let sent = Instant::now();
                let (status, answer) = conn.post(path, body.as_bytes()).await?;
                if status != 200 {
                    bail!("{path}: {status} {}", String::from_utf8_lossy(&answer));
                }
                latencies.push(sent.elapsed().as_secs_f64());
                for (v, name) in
                    verdicts
                        .iter_mut()
                        .zip(["accepted", "duplicate", "rejected", "late"])
                {
                    *v += count_of(&answer, name);
                }
                last_epoch = last_epoch.max(count_of(&answer, "epoch"));
                events.fetch_add(*n as u64, Ordering::Relaxed);
            }
            anyhow::Ok((latencies, verdicts, last_epoch))
        }
    });
    let results = futures::future::join_all(tasks).await;
    let seconds = start.elapsed().as_secs_f64();
    let mut out = Ingested {
        events: events.load(Ordering::Relaxed),
        seconds,
        last_epoch: 0,
        latencies: Vec::new(),
        verdicts: [0; 4],
    };
    for r in results {
        let (latencies, verdicts, last_epoch) = r?;
        out.last_epoch = out.last_epoch.max(last_epoch);
        out.latencies.extend(latencies);
        for (a, b) in out.verdicts.iter_mut().zip(verdicts) {
            *a += b;
        }
    }
    out.latencies.sort_by(f64::total_cmp);
    Ok(out)
}

struct Checked {
    /// From each request's due time to its answer (open loop).
    latencies: Vec<f64>,
    /// From each request's actual send to its answer.
    service: Vec<f64>,
    seconds: f64,
    not_ok: u64,
}

/// The check phase: `rate` checks per second for `seconds` over `connections` lanes.
#[derive(Clone, Copy, Debug)]
struct CheckPlan {
    rate: u64,
    seconds: u64,
    connections: u64,
    customers: u32,
}

impl CheckPlan {
    fn of(args: &Args) -> CheckPlan {
        CheckPlan {
            rate: args.check_rate,
            seconds: args.check_seconds,
            connections: args.check_connections as u64,
            customers: args.customers,
        }
    }
}

/// Entitlement checks at a fixed rate, latency from each request's due time.
///
/// Each lane is a thread of its own with one blocking keep-alive connection: lane k of
/// K sends requests k, k + K, k + 2K, ..., each at its due time (start + i/rate),
/// sleeping on the OS timer until then. Not tasks of the ingestion client's runtime:
/// tokio's timer wakes a task up to a millisecond after its due time, and a task waits
/// behind the runtime's other tasks (the background ingestion); both would count the
/// client's own lag as the server's latency.
fn checks(addr: SocketAddr, plan: CheckPlan) -> anyhow::Result<Checked> {
    let total = plan.rate * plan.seconds;
    // The clock starts once every lane is connected, so that slow connects do not make
    // the first requests late.
    let connected = Arc::new(std::sync::Barrier::new(plan.connections as usize));
    let start = Arc::new(std::sync::OnceLock::new());
    let lanes = (0..plan.connections)
        .map(|lane| {
            let (connected, start) = (Arc::clone(&connected), Arc::clone(&start));
            std::thread::Builder::new()
                .name(format!("check-{lane}"))
                .spawn(move || -> anyhow::Result<_> {
                    let conn = BlockingConn::open(addr);
                    connected.wait();
                    let mut conn = conn?;
                    let start: Instant =
                        *start.get_or_init(|| Instant::now() + Duration::from_millis(50));
                    let mut latencies = Vec::new();
                    let mut service = Vec::new();
                    let mut not_ok = 0u64;
                    let mut i = lane;
                    while i < total {
                        let due = start + Duration::from_secs_f64(i as f64 / plan.rate as f64);
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                        // A fixed pseudo-random customer per request.
                        let c = (i.wrapping_mul(2_654_435_761) % plan.customers as u64) as u32;
                        let tenant = if c.is_multiple_of(5) {
                            "acme"
                        } else {
                            "default"
                        };
                        let path = format!(
                            "/v1/customers/cust_{c:05}/entitlements/api_calls?tenant_id={tenant}"
                        );
                        let sent = Instant::now();
                        let status = conn.get(&path)?;
                        latencies.push(due.elapsed().as_secs_f64());
                        service.push(sent.elapsed().as_secs_f64());
                        if status != 200 {
                            not_ok += 1;
                        }
                        i += plan.connections;
                    }
                    Ok((latencies, service, not_ok))
                })
        })
        .collect::<Result<Vec<_>, _>>()
        .context("starting the check lanes")?;
    let mut out = Checked {
        latencies: Vec::with_capacity(total as usize),
        service: Vec::with_capacity(total as usize),
        seconds: 0.0,
        not_ok: 0,
    };
    for lane in lanes {
        let (latencies, service, not_ok) = lane
            .join()
            .map_err(|_| anyhow::anyhow!("a check lane panicked"))??;
        out.latencies.extend(latencies);
        out.service.extend(service);
        out.not_ok += not_ok;
    }
    out.seconds = start
        .get()
        .map_or(0.0, |s: &Instant| s.elapsed().as_secs_f64());
    out.latencies.sort_by(f64::total_cmp);
    out.service.sort_by(f64::total_cmp);
    Ok(out)
}

fn report(what: &str, args: &Args, c: &Checked) {
    println!(
        "{what}: {} requests at {} /s target ({:.0} /s achieved) over {} connections: from due time p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms; from send p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms; {} not 200",
        c.latencies.len(),
        args.check_rate,
        c.latencies.len() as f64 / c.seconds,
        args.check_connections,
        percentile(&c.latencies, 0.50) * 1e3,
        percentile(&c.latencies, 0.99) * 1e3,
        percentile(&c.latencies, 0.999) * 1e3,
        c.latencies.last().copied().unwrap_or(0.0) * 1e3,
        percentile(&c.service, 0.50) * 1e3,
        percentile(&c.service, 0.99) * 1e3,
        percentile(&c.service, 0.999) * 1e3,
        c.not_ok,
    );
}

/// The `q` quantile of sorted values (nearest rank).
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}
