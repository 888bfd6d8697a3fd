//! `openmonetize demo`: generate sample events and credit grants, run the whole pipeline
//! on the built-in config into a local directory, and show what came out, with no Kafka
//! and no config.

use crate::run::{RunOptions, Source, run};
use anyhow::Context;
use om_queries::{Format, QueryEngine, format};
use om_sources::generator::{GenOptions, Generator, grant_commands, subscription_commands};
use std::path::PathBuf;

/// Options of the demo.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Directory for the sample events and the tables.
    pub dir: PathBuf,
    /// Number of events to generate.
    pub events: u64,
    /// Number of customers.
    pub customers: u32,
    /// Timely workers.
    pub workers: usize,
}

/// Runs the demo and prints its walkthrough to stdout.
#[expect(clippy::too_many_lines, reason = "to be split into stages (issue #9)")]
pub fn demo(opts: DemoOptions) -> anyhow::Result<()> {
    let data = opts.dir.join("tables");
    if data.exists() {
        std::fs::remove_dir_all(&data).with_context(|| format!("clearing {}", data.display()))?;
    }
    std::fs::create_dir_all(&opts.dir)?;
    let events_path = opts.dir.join("events.jsonl");
    println!("OpenMonetize demo\n=================\n");
    println!(
        "1. Generating {} synthetic AI/SaaS usage events for {} customers",
        opts.events, opts.customers
    );
    println!(
        "   (LLM generations, API calls, storage, seats; with retries, out-of-order and late events)"
    );
    let gen_opts = GenOptions {
        events: opts.events,
        customers: opts.customers,
        ..GenOptions::default()
    };
    let mut out = std::io::BufWriter::new(std::fs::File::create(&events_path)?);
    let summary = Generator::new(gen_opts.clone()).write_all(&mut out)?;
    drop(out);
    let commands_path = opts.dir.join("commands.jsonl");
    let grants = grant_commands(&gen_opts);
    let subscriptions = subscription_commands(&gen_opts);
    let commands = [grants.as_slice(), subscriptions.as_slice()].concat();
    std::fs::write(&commands_path, commands.join("\n") + "\n")?;
    println!(
        "   -> {} ({} duplicates, {} very late)",
        events_path.display(),
        summary.duplicates,
        summary.very_late
    );
    println!(
        "   -> {}: {} prepaid credit grants and voids (3 grants per customer), {} plan subscriptions\n",
        commands_path.display(),
        grants.len(),
        subscriptions.len()
    );

    println!(
        "2. Running the pipeline with the built-in config ({} workers)",
        opts.workers
    );
    let data_url = data.to_string_lossy().into_owned();
    let result = run(RunOptions {
        workers: opts.workers,
        progress: false,
        commands: Some(Source::File(commands_path.clone())),
        ..RunOptions::new(
            om_model::Config::builtin(),
            Source::File(events_path.clone()),
            data_url.clone(),
        )
    })?;
    let c = &result.commit.counts;
    println!(
        "   -> accepted {}, rejected {} (of which {} duplicates), late {} in {:.2}s; watermark {}",
        c.accepted,
        c.rejected,
        c.duplicates,
        c.late,
        result.elapsed.as_secs_f64(),
        result.commit.watermark.as_deref().unwrap_or("none")
    );
    println!(
        "   -> tables committed as Parquet under {}\n",
        data.display()
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let engine = runtime.block_on(QueryEngine::open(&data_url))?;
    let queries = [
        (
            "3. Top customers by input tokens this month (usage_windows)",
            "SELECT tenant_id, customer_id, SUM(value) AS input_tokens FROM usage_windows \
             WHERE meter = 'input_tokens' AND window_size = 'month' \
             GROUP BY tenant_id, customer_id ORDER BY input_tokens DESC LIMIT 5",
        ),
        (
            "4. One customer's daily usage per meter",
            "SELECT meter, dimensions, window_start, value, events, is_final FROM usage_windows \
             WHERE customer_id = (SELECT MIN(customer_id) FROM usage_windows) AND window_size = 'day' \
             ORDER BY meter, dimensions, window_start LIMIT 12",
        ),
        (
            "5. Credit balances and runway: who runs out first (credit_balances)",
            "SELECT tenant_id, customer_id, balance, consumed, expired, overage, exhaustion_at \
             FROM credit_balances WHERE exhaustion_at IS NOT NULL ORDER BY exhaustion_at LIMIT 5",
        ),
        (
            "6. Where one customer's credits went, hour by hour (credit_ledger)",
            "SELECT grant_id, entry, at, amount FROM credit_ledger \
             WHERE customer_id = (SELECT MIN(customer_id) FROM credit_ledger) ORDER BY at, entry LIMIT 12",
        ),
        (
            "7. Who may use what now, and why: customers per plan, feature and reason (entitlements)",
            "SELECT plan, feature, reason, has_access, COUNT(*) AS customers FROM entitlements \
             GROUP BY plan, feature, reason, has_access ORDER BY plan, feature, reason",
        ),
        (
            "   ... and one free customer over its API call limit",
            "SELECT customer_id, feature, plan, has_access, usage, \"limit\", remaining, reason \
             FROM entitlements WHERE customer_id = (SELECT MIN(customer_id) FROM entitlements \
             WHERE reason = 'limit_exceeded') ORDER BY feature",
        ),
        (
            "8. Top AI cost by model: provider cost against the credits charged (costs)",
            "SELECT provider, model, SUM(events) AS calls, SUM(input_tokens) AS input_tokens, \
             SUM(output_tokens) AS output_tokens, SUM(provider_cost_usd) AS provider_cost_usd, \
             SUM(credits) AS credits, SUM(margin_usd) AS margin_usd \
             FROM costs GROUP BY provider, model ORDER BY provider_cost_usd DESC NULLS LAST",
        ),
        (
            "9. Flagged usage spikes after the first day: hours far above the previous 24 (anomaly_scores)",
            "SELECT customer_id, meter, window_start, value, baseline_mean, baseline_std, score \
             FROM anomaly_scores WHERE flagged \
             AND window_start >= (SELECT MIN(window_start) FROM anomaly_scores) + INTERVAL '1 day' \
             ORDER BY score DESC LIMIT 5",
        ),
        (
            "10. Month-end forecasts of the biggest API users (forecasts)",
            "SELECT customer_id, meter, as_of, usage_to_date, daily_rate, forecast FROM forecasts \
             WHERE meter = 'api_calls' ORDER BY forecast DESC LIMIT 5",
        ),
        (
            "11. Why events were turned away (rejected_events, late_events)",
            "SELECT reason, COUNT(*) AS n FROM (SELECT regexp_replace(reason, ':.*', '') AS reason FROM rejected_events UNION ALL SELECT 'late' FROM late_events) GROUP BY reason ORDER BY n DESC",
        ),
        (
            "12. This month's draft invoices so far, priced by the plans' [plans.pricing] (invoices, invoice_lines)",
            "SELECT customer_id, period, plan, subtotal, minimum_true_up, total, credits_applied, \
             credit_overage, is_final FROM invoices ORDER BY subtotal DESC LIMIT 5",
        ),
        (
            "   ... and the lines of the largest one",
            "SELECT l.line, l.kind, l.meter, l.usage, l.quantity, l.unit_price, l.amount \
             FROM invoice_lines l JOIN (SELECT tenant_id, customer_id, period FROM invoices \
             ORDER BY subtotal DESC, customer_id LIMIT 1) i \
             ON l.tenant_id = i.tenant_id AND l.customer_id = i.customer_id AND l.period = i.period \
             ORDER BY l.line",
        ),
        (
            "13. Prepaid credits as revenue: recognized, breakage and still deferred (revenue)",
            "SELECT currency, COUNT(*) AS grants, SUM(price) AS sold, \
             SUM(recognized_to_date) AS recognized, SUM(breakage_to_date) AS breakage, \
             SUM(deferred) AS deferred FROM (SELECT *, row_number() OVER \
             (PARTITION BY tenant_id, grant_id ORDER BY day DESC) AS latest FROM revenue) \
             WHERE latest = 1 GROUP BY currency",
        ),
    ];
    for (title, sql) in queries {
        println!("{title}\n   {sql}\n");
        let batches = runtime.block_on(engine.sql(sql))?;
        println!("{}\n", format(&batches, Format::Table)?);
    }
    println!(
        "Try your own:\n  openmonetize query --data {} \"SELECT * FROM usage_windows LIMIT 10\"",
        data.display()
    );
    Ok(())
}
