//! Times the per-event stages of the file pipeline in isolation, single-threaded, over the
//! first `--events` lines of a JSONL file (default: the om-bench file), so a change to one
//! stage can be measured on its own: decode, and decode + Parquet encoding of the events
//! table. With `--usage-rows N`, also the encoding of a `usage_windows` partition of N rows
//! (what a live job rewrites at each commit) under several Parquet writer settings, and
//! of its value columns alone (what a rewrite encodes of a block whose keys it copies).
//!
//! Run with: `cargo run --release -p om-bench --bin om-stages -- --events 1000000`

use anyhow::Context;
use clap::Parser;
use om_sources::Decoder;
use om_sources::file::JsonlFile;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Parser, Debug)]
struct Args {
    /// Lines to time.
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// The JSONL file.
    #[arg(long, default_value = "/tmp/om-bench/events-10000000-10000.jsonl")]
    file: PathBuf,
    /// Skip the owned decode (to profile the others alone).
    #[arg(long)]
    skip_owned: bool,
    /// Rows of the `usage_windows` partition to encode (0: skip that stage).
    #[arg(long, default_value_t = 0)]
    usage_rows: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.usage_rows > 0 {
        usage_partition(args.usage_rows)?;
    }
    let file = JsonlFile::open(&args.file).with_context(|| format!("{}", args.file.display()))?;
    let mut buf = om_sources::file::LineBuf::default();
    // About 220 bytes per event; read a little more than needed.
    file.read_lines(0, (args.events as u64 * 300).min(file.len()), &mut buf)?;
    let lines: Vec<&[u8]> = buf.lines().take(args.events).map(|(_, l)| l).collect();
    let n = lines.len() as f64;
    let decoder = Decoder::new(om_model::Config::builtin());
    let bytes: usize = lines.iter().map(|l| l.len()).sum();

    println!("{n} lines, {bytes} bytes");
    if !args.skip_owned {
        let t = Instant::now();
        let mut ok = 0usize;
        for l in &lines {
            ok += decoder.decode(l).is_ok() as usize;
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "decode (owned): {ok} ok, {:.0} ns/event, {:.2}M events/s",
            secs * 1e9 / n,
            n / secs / 1e6
        );
    }

    let t = Instant::now();
    let mut scratch = om_sources::decode::Scratch::default();
    let mut readings = 0usize;
    for l in &lines {
        if decoder.decode_ref(l, &mut scratch).is_ok() {
            readings += scratch.readings.len();
        }
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "decode (in place): {readings} readings, {:.0} ns/event, {:.2}M events/s",
        secs * 1e9 / n,
        n / secs / 1e6
    );
    Ok(())
}

/// Times Parquet encoding of a month partition of `n` `usage_windows` rows shaped like the
/// live job's: 2 tenants, 17 windows per customer (6 meters, some with dimensions), rows
/// grouped by customer; each writer setting 5 times, best time reported.
fn usage_partition(n: usize) -> anyhow::Result<()> {
    use om_model::time::WindowSize;
    use om_model::{Decimal9, time};
    use parquet::basic::Compression;
    use parquet::file::properties::{EnabledStatistics, WriterPropertiesBuilder};
    let meters = [
        "api_calls",
        "input_tokens",
        "output_tokens",
        "latency_avg",
        "storage_max",
        "unique_users",
    ];
    let dims = [
        "{}",
        r#"{"endpoint":"/v1/chat"}"#,
        r#"{"endpoint":"/v1/embed"}"#,
        r#"{"model":"gpt-4o"}"#,
        r#"{"model":"claude-3-5-sonnet"}"#,
        r#"{"provider":"openai"}"#,
    ];
    let customers: Vec<String> = (0..n.div_ceil(17))
        .map(|c| format!("cust_{c:06}"))
        .collect();
    let month = time::parse_rfc3339("2026-11-01T00:00:00Z").context("a fixed timestamp")?;
    let row = |i: usize| om_sinks::encode::UsageRow {
        tenant_id: if (i / 17).is_multiple_of(2) {
            "acme"
        } else {
            "default"
        },
        customer_id: &customers[i / 17],
        meter: meters[i % meters.len()],
        dimensions: dims[(i / 3) % dims.len()],
        size: WindowSize::Month,
        start: month,
        value: Decimal9::from_raw((i as i128 * 7_919) % 1_000_000_000_000),
        events: (i % 1000) as i64,
        is_final: false,
    };
    let mut best = f64::MAX;
    for _ in 0..5 {
        let rows: Vec<om_sinks::encode::UsageRow<'_>> = (0..n).map(row).collect();
        let t = Instant::now();
        drop(om_sinks::encode::usage_windows(rows.into_iter())?);
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!(
        "usage_windows batch of {n} rows: {:.0} ns/row to build (best of 5)",
        best * 1e9 / n as f64
    );
    // What the batch no longer computes per row: a calendar month's end.
    let t = Instant::now();
    let ends: i64 = (0..n)
        .map(|i| WindowSize::Month.end(std::hint::black_box(month + i as i64 % 2)))
        .fold(0i64, |a, e| a.wrapping_add(e));
    println!(
        "  (a month window's end: {:.0} ns each; checksum {ends})",
        t.elapsed().as_secs_f64() * 1e9 / n as f64
    );
    let batch = om_sinks::encode::usage_windows((0..n).map(row))?;
    type Adjust = fn(WriterPropertiesBuilder) -> WriterPropertiesBuilder;
    let variants: [(&str, Adjust); 6] = [
        (
            "as written (snappy, dictionaries, statistics where they prune)",
            |p| p,
        ),
        ("no compression", |p| {
            p.set_compression(Compression::UNCOMPRESSED)
        }),
        ("no dictionaries", |p| p.set_dictionary_enabled(false)),
        ("no statistics", |p| {
            p.set_statistics_enabled(EnabledStatistics::None)
        }),
        ("lz4_raw", |p| p.set_compression(Compression::LZ4_RAW)),
        ("statistics on every column (as before 2026-11-26)", |p| {
            om_model::schema::USAGE_WINDOWS
                .fields()
                .iter()
                .fold(p, |p, f| {
                    p.set_column_statistics_enabled(
                        f.name().as_str().into(),
                        EnabledStatistics::Chunk,
                    )
                })
        }),
    ];
    // Best of five encodings of `batch` with the writer settings adjusted.
    let time_encode = |batch: &om_sinks::encode::RecordBatch, adjust: Adjust| {
        let mut best = f64::MAX;
        let mut size = 0;
        for _ in 0..5 {
            let props = adjust(om_sinks::parquet::properties(&batch.schema())).build();
            let t = Instant::now();
            size = om_sinks::parquet::encode_with(batch, props)?.len();
            best = best.min(t.elapsed().as_secs_f64());
        }
        anyhow::Ok((best * 1e9 / n as f64, size))
    };
    for (name, adjust) in variants {
        let (ns, size) = time_encode(&batch, adjust)?;
        println!("  encode, {name}: {ns:.0} ns/row, {size} bytes");
    }
    // What a live rewrite encodes of a block whose windows stayed: the value columns
    // (the key columns are copied from the file before, `om_sinks::blocks`).
    let (ns, size) = time_encode(&batch.project(&[7, 8, 9])?, |p| p)?;
    println!(
        "  encode, value columns only (a block whose keys are copied): {ns:.0} ns/row, {size} bytes"
    );
    Ok(())
}
