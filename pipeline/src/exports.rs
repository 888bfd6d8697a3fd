//! Exports of calendar months (issue #8): `openmonetize export` on demand, and the
//! `[[exports]]` of the config, run by the live job on their cron schedules.
//!
//! A scheduled export runs in a thread beside the job. Each time its schedule fires
//! (UTC, checked every second) and once more when the job stops (after its last
//! commit; a file run is a backfill), it opens the newest
//! commit and exports every calendar month that is final (its end at least
//! allowed_lateness behind the watermark) and has no final manifest at the destination
//! yet (a draft exported by hand while the month was open does not count).
//! So a month is exported once, after it can no longer change; a failed export (the
//! destination is down) is retried at the next firing. The files are written before
//! the manifest, so a crash mid-export leaves no manifest and the month is exported
//! again, to the same bytes.

use anyhow::Context;
use arrow::array::Array;
use om_model::config::ScheduledExport;
use om_model::export::{ExportFormat, ExportKind};
use om_model::{Config, Micros, WindowSize};
use om_queries::export::{self, Export, ExportManifest};
use om_queries::{QueryEngine, Scope};
use om_sinks::DataStore;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Parses the CLI's kind, `--period` and `--format`.
pub fn parse_request(kind: &str, period: &str, format: &str) -> anyhow::Result<Export> {
    let kind = ExportKind::parse(kind)
        .with_context(|| format!("`{kind}` is not an export: use {}", ExportKind::NAMES))?;
    let period = om_queries::billing::parse_period(period).with_context(|| {
        format!("--period `{period}` is not a month: write YYYY-MM, e.g. 2026-11")
    })?;
    let format = ExportFormat::parse(format).with_context(|| {
        format!(
            "--format `{format}` is not a format: use {}",
            ExportFormat::NAMES
        )
    })?;
    Ok(Export {
        kind,
        period,
        format,
    })
}

/// Runs one export at the newest commit of `data`, writing to `to`.
pub async fn export_once(
    data: &str,
    to: &str,
    config: Arc<Config>,
    export: &Export,
) -> anyhow::Result<ExportManifest> {
    let engine = QueryEngine::open_with_config(data, Scope::All, config)
        .await
        .with_context(|| format!("reading {data}"))?;
    if engine.commit().is_none() {
        anyhow::bail!("{data} holds no committed tables yet: run the job first");
    }
    let dest = DataStore::open(to).with_context(|| format!("--to `{to}`"))?;
    export::run(&engine, &dest, export)
        .await
        .with_context(|| format!("exporting {} to {to}", export.folder()))
}

/// The thread running the scheduled exports of a job.
pub struct Scheduler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Scheduler {
    /// Starts the schedules of `config.exports` (none: no thread).
    pub fn start(config: Arc<Config>, data: String, progress: bool) -> Option<Scheduler> {
        if config.exports.is_empty() {
            return None;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("exports".into())
            .spawn({
                let stop = Arc::clone(&stop);
                move || schedule(&config, &data, &stop, progress)
            })
            .expect("starting the exports thread");
        Some(Scheduler { stop, thread })
    }

    /// Runs every export once more (after the job's last commit), then stops the
    /// thread.
    pub fn finish(self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.thread.join();
    }
}

fn schedule(config: &Arc<Config>, data: &str, stop: &AtomicBool, progress: bool) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime for exports");
    let schedules: Vec<(&ScheduledExport, cron::Schedule)> =
        config.exports.iter().map(|e| (e, e.cron())).collect();
    let mut last = chrono::Utc::now();
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        let now = chrono::Utc::now();
        for (export, cron) in &schedules {
            // When the job stops, every export runs once more after its last commit,
            // fired or not, so a file run (a backfill) exports what it made final.
            if stopping || cron.after(&last).next().is_some_and(|t| t <= now) {
                let done = runtime.block_on(export_final_months(config, data, export));
                match done {
                    Ok(months) if progress => {
                        for m in months {
                            eprintln!("exported {} {m} to {}", export.kind.as_str(), export.to);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => eprintln!(
                        "warning: scheduled {} export to {} failed (retried at its next time): {e:#}",
                        export.kind.as_str(),
                        export.to
                    ),
                }
            }
        }
        last = now;
        if stopping {
            return;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Exports every final month not exported yet; returns the months exported.
async fn export_final_months(
    config: &Arc<Config>,
    data: &str,
    scheduled: &ScheduledExport,
) -> anyhow::Result<Vec<String>> {
    let engine = QueryEngine::open_with_config(data, Scope::All, Arc::clone(config)).await?;
    let Some(watermark) = engine.commit().and_then(|c| c.watermark_micros) else {
        return Ok(Vec::new());
    };
    let Some(first) = first_month(&engine).await? else {
        return Ok(Vec::new());
    };
    let dest = DataStore::open(&scheduled.to)?;
    let mut done = Vec::new();
    let mut month = first;
    while month <= WindowSize::Month.start(watermark) && engine.period_is_final(month) {
        let export = Export {
            kind: scheduled.kind,
            period: month,
            format: scheduled.format,
        };
        if !export::final_exists(&dest, &export).await? {
            export::run(&engine, &dest, &export).await?;
            done.push(om_queries::billing::period_label(month));
        }
        month = WindowSize::Month.end(month);
    }
    Ok(done)
}

/// The first month with usage, a subscription or a ledger entry.
async fn first_month(engine: &QueryEngine) -> anyhow::Result<Option<Micros>> {
    let batches = engine
        .sql(
            "SELECT min(t) FROM (SELECT min(window_start) AS t FROM usage_windows \
             UNION ALL SELECT min(effective_at) FROM subscriptions \
             UNION ALL SELECT min(at) FROM credit_ledger)",
        )
        .await?;
    let first = batches.first().and_then(|b| {
        let col = b
            .column(0)
            .as_any()
            .downcast_ref::<arrow::array::TimestampMicrosecondArray>()?;
        (col.len() == 1 && col.is_valid(0)).then(|| col.value(0))
    });
    Ok(first.map(|t| WindowSize::Month.start(t)))
}
