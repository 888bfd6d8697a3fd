//! The `openmonetize` command line.

use anyhow::Context;
use clap::{Parser, Subcommand};
use openmonetize::demo::{DemoOptions, demo};
use openmonetize::run::{DEFAULT_COMMIT_EVERY, DEFAULT_EPOCH_BYTES, RunOptions, run};
use std::path::PathBuf;

/// OpenMonetize: usage metering and monetization for AI and SaaS.
///
/// Events go in (JSONL file now, Kafka later), windowed usage comes out as Parquet
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
    Run {
        /// Config file (TOML, see DESIGN.md 2.3); the built-in default when omitted.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Events source: file:PATH (JSONL).
        #[arg(long)]
        events: String,
        /// Commands source (grants, plans, retractions): not supported yet.
        #[arg(long)]
        commands: Option<String>,
        /// Where the tables go: a local path, file:///ABS/PATH or memory://NAME.
        #[arg(long)]
        data: String,
        /// Timely worker threads.
        #[arg(long, default_value_t = default_workers())]
        workers: usize,
        /// Input bytes per epoch (the unit of dedup, lateness and window updates).
        #[arg(long, default_value_t = DEFAULT_EPOCH_BYTES)]
        epoch_bytes: u64,
        /// Commit the tables every this many epochs, and after the last one.
        #[arg(long, default_value_t = DEFAULT_COMMIT_EVERY)]
        commit_every: u64,
        /// Suppress progress lines.
        #[arg(long)]
        quiet: bool,
    },
    /// Run SQL over the committed tables.
    ///
    /// Tables: events, usage_windows, rejected_events, late_events.
    Query {
        /// Data location the job wrote to.
        #[arg(long)]
        data: String,
        /// Output format: table, csv or json (JSON lines).
        #[arg(long, default_value = "table")]
        format: String,
        /// The SQL statement.
        sql: String,
    },
    /// Generate synthetic AI/SaaS usage events as JSONL.
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
        #[arg(long)]
        out: PathBuf,
    },
}

fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

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
            epoch_bytes,
            commit_every,
            quiet,
        } => {
            if commands.is_some() {
                anyhow::bail!(
                    "--commands is not supported yet: grants, plans and retractions arrive with the credits work (issue #4)"
                );
            }
            let path = match events.strip_prefix("file:") {
                Some(p) => PathBuf::from(p),
                None => anyhow::bail!(
                    "--events `{events}`: only file:PATH is supported so far (kafka:// arrives with issue #3)"
                ),
            };
            let config = openmonetize::load_config(config.as_deref())?;
            let summary = run(RunOptions {
                config,
                events: path,
                data: data.clone(),
                workers,
                epoch_bytes,
                commit_every,
                progress: !quiet,
            })?;
            let c = &summary.commit.counts;
            let secs = summary.elapsed.as_secs_f64();
            let read = c.accepted + c.rejected + c.late;
            eprintln!(
                "done: {read} records ({:.0}/s) in {secs:.2}s: accepted {}, rejected {} ({} duplicates), late {}; watermark {}; committed epoch {} to {data}",
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
        Command::Query { data, format, sql } => {
            let format: om_queries::Format = format.parse()?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let engine = runtime.block_on(om_queries::QueryEngine::open(&data))?;
            let batches = runtime.block_on(engine.sql(&sql)).context("query failed")?;
            print!("{}", om_queries::format(&batches, format)?);
            if format == om_queries::Format::Table {
                println!();
            }
            Ok(())
        }
        Command::Gen {
            events,
            customers,
            seed,
            days,
            out,
        } => {
            let file = std::fs::File::create(&out)
                .with_context(|| format!("creating {}", out.display()))?;
            let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
            let opts = om_sources::generator::GenOptions {
                events,
                customers,
                seed,
                days,
                ..Default::default()
            };
            let s = om_sources::generator::Generator::new(opts).write_all(&mut w)?;
            use std::io::Write;
            w.flush()?;
            eprintln!(
                "wrote {} events ({} duplicates, {} very late) to {}",
                s.lines,
                s.duplicates,
                s.very_late,
                out.display()
            );
            Ok(())
        }
    }
}
