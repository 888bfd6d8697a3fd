//! Times the per-event stages of the file pipeline in isolation, single-threaded, over the
//! first `--events` lines of a JSONL file (default: the om-bench file), so a change to one
//! stage can be measured on its own: decode, and decode + Parquet encoding of the events
//! table.
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
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
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
