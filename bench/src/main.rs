//! `om-bench`: end-to-end benchmarks of OpenMonetize.
//!
//! Generates N synthetic AI/SaaS usage events (default 10 million over 10,000
//! customers, 7 days) as JSONL once, then runs the whole file pipeline once per workload
//! and worker count:
//! - `usage`: the built-in config without its burn rules (decode, dedup, lateness,
//!   windowed usage, Parquet commit of the events, rejection, lateness and usage tables);
//! - `credits`: the built-in config with its burn rules, plus a commands file of 3 grants
//!   per customer (some voided), so the credit tables are maintained too;
//! - `full`: the whole built-in config: credits, plans with a subscription per customer
//!   (`entitlements`), `costs`, `anomaly_scores` and `forecasts`.
//!
//! `usage` and `credits` switch the monetization views off (no plans, `[costs]`,
//! `[anomaly]` and `[forecasts]` disabled), so `full` against `usage` is the price of
//! everything on top of metering. `OM_BENCH_VIEWS_OFF=anomaly,forecasts,costs,plans` (any
//! of them) switches views off in `full` too, to see what each costs.
//!
//! Each run happens in a fresh child process so its peak RSS is its own. Prints CSV:
//! `code,workload,events,customers,workers,seconds,events_per_sec,peak_rss_mib`, where
//! `code` is `current`, or `baseline` for the binary given with `--compare-with`.
//!
//! Run with: `cargo run --release -p om-bench -- --events 10000000 --workers 1,2`

use anyhow::{Context, bail};
use clap::Parser;
use om_sources::generator::{GenOptions, Generator};
use openmonetize::run::{DEFAULT_EPOCH_BYTES, RunOptions, Source, run};
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

#[derive(Parser)]
#[command(
    about = "End-to-end benchmark: events file (+ grants) -> usage and credit tables -> Parquet"
)]
struct Args {
    /// Number of events.
    #[arg(long, default_value_t = 10_000_000, env = "OM_BENCH_EVENTS")]
    events: u64,
    /// Number of customers.
    #[arg(long, default_value_t = 10_000)]
    customers: u32,
    /// Worker counts to measure, comma separated.
    #[arg(long, default_value = "1,2", value_delimiter = ',')]
    workers: Vec<usize>,
    /// Work directory (the generated file is kept and reused).
    #[arg(long, default_value = "/tmp/om-bench")]
    dir: PathBuf,
    /// Input bytes per epoch.
    #[arg(long, default_value_t = DEFAULT_EPOCH_BYTES)]
    epoch_bytes: u64,
    /// Workloads to measure, comma separated: usage, credits, full.
    #[arg(long, default_value = "usage,credits,full", value_delimiter = ',')]
    workloads: Vec<String>,
    /// Internal: run once in this process and print one CSV row.
    /// Another om-bench binary (e.g. built from an earlier commit) to run on the same
    /// input right before this one, for before/after ratios from one run.
    #[arg(long)]
    compare_with: Option<PathBuf>,
    #[arg(long, hide = true)]
    child: bool,
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.dir)?;
    let events = args
        .dir
        .join(format!("events-{}-{}.jsonl", args.events, args.customers));
    let commands = args.dir.join(format!("grants-{}.jsonl", args.customers));
    let all_commands = args.dir.join(format!("commands-{}.jsonl", args.customers));
    if args.child {
        let workers = args.workers[0];
        let workload = args.workloads[0].as_str();
        let data = args.dir.join(format!("data-w{workers}"));
        if data.exists() {
            std::fs::remove_dir_all(&data)?;
        }
        let config = om_bench::workload_config(workload)?;
        let commands = match workload {
            "credits" => Some(Source::File(commands)),
            "full" => Some(Source::File(all_commands)),
            _ => None,
        };
        let start = Instant::now();
        let summary = run(RunOptions {
            workers,
            epoch_bytes: args.epoch_bytes,
            progress: false,
            commands,
            ..RunOptions::new(config, Source::File(events.clone()), data.to_string_lossy())
        })?;
        let secs = start.elapsed().as_secs_f64();
        let c = &summary.commit.counts;
        let records = c.accepted + c.rejected + c.late;
        if records != args.events {
            bail!("read {records} records, expected {}", args.events);
        }
        println!(
            "{workload},{},{},{workers},{secs:.3},{:.0},{:.0}",
            args.events,
            args.customers,
            args.events as f64 / secs,
            peak_rss_mib()
        );
        return Ok(());
    }
    if !events.exists() {
        eprintln!(
            "generating {} events for {} customers into {} ...",
            args.events,
            args.customers,
            events.display()
        );
        let tmp = events.with_extension("tmp");
        let mut w = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&tmp)?);
        Generator::new(GenOptions {
            events: args.events,
            customers: args.customers,
            ..GenOptions::default()
        })
        .write_all(&mut w)?;
        w.flush()?;
        drop(w);
        std::fs::rename(&tmp, &events)?;
    }
    let gen_opts = GenOptions {
        events: args.events,
        customers: args.customers,
        ..GenOptions::default()
    };
    if !commands.exists() {
        let lines = om_sources::generator::grant_commands(&gen_opts);
        std::fs::write(&commands, lines.join("\n") + "\n")?;
    }
    if !all_commands.exists() {
        let lines = om_sources::generator::sample_commands(&gen_opts);
        std::fs::write(&all_commands, lines.join("\n") + "\n")?;
    }
    let size = std::fs::metadata(&events)?.len();
    eprintln!("input: {} ({:.0} MB)", events.display(), size as f64 / 1e6);
    println!("code,workload,events,customers,workers,seconds,events_per_sec,peak_rss_mib");
    let me = std::env::current_exe()?;
    let mut binaries = vec![("current", me)];
    if let Some(baseline) = &args.compare_with {
        binaries.insert(0, ("baseline", baseline.clone()));
    }
    for &workers in &args.workers {
        for workload in &args.workloads {
            for (code, exe) in &binaries {
                let out = Command::new(exe)
                    .args([
                        "--child",
                        "--events",
                        &args.events.to_string(),
                        "--customers",
                        &args.customers.to_string(),
                    ])
                    .args([
                        "--workloads",
                        workload,
                        "--workers",
                        &workers.to_string(),
                        "--epoch-bytes",
                        &args.epoch_bytes.to_string(),
                    ])
                    .arg("--dir")
                    .arg(&args.dir)
                    .output()
                    .context("running the measured child")?;
                if !out.status.success() {
                    bail!(
                        "{code} run with {workers} workers failed: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
                print!("{code},{}", String::from_utf8_lossy(&out.stdout));
                std::io::stdout().flush()?;
            }
        }
    }
    Ok(())
}
