//! `openmonetize`: the job. Config loading, the timely workers and their epochs, the
//! operators that write and commit tables, the HTTP server, and the commands of the CLI.
//!
//! One event's path: [`run`] reads its slice of the input for an epoch (a file, Kafka, or
//! the HTTP [`ingress`] queue of `serve`) and decodes it (`om_sources`), sends dedup
//! probes through the dedup dataflow, judges lateness (`om_operators`), writes the
//! accepted, rejected and late records of the epoch, and feeds window updates into the
//! usage dataflow ([`dataflow`]), whose sink rewrites the changed `usage_windows`
//! partitions, and its burn, hourly usage and model calls to the view sink
//! ([`view_sink`]), which runs every per-customer view (`om_operators::view`: credits,
//! entitlements, forecasts, anomaly scores, costs), writes their tables and publishes the
//! [`live`] balances and entitlements; the committer on worker 0 then
//! writes the epoch's commit record, and [`serve`] answers the epoch's HTTP requests.

pub mod access;
pub mod append_only;
pub mod checkpoint;
pub mod cluster;
pub mod dataflow;
pub mod demo;
pub mod exports;
pub mod ingress;
pub mod journal;
pub mod kafka_ingest;
pub mod live;
pub mod metrics;
pub mod packed;
pub mod pg;
pub mod priority;
pub mod retract;
pub mod run;
pub mod serve;
pub mod view_sink;
pub mod view_updates;

pub use run::{RunOptions, RunSummary, Source, run};

/// Loads a config file, or the built-in default when `path` is `None`, with the `OM__`
/// environment variables applied on top ([`om_model::overrides`]).
pub fn load_config(path: Option<&std::path::Path>) -> anyhow::Result<om_model::Config> {
    use anyhow::Context;
    let overrides = om_model::overrides::from_vars(std::env::vars());
    let (text, source) = match path {
        None => (
            om_model::config::DEFAULT_TOML.to_string(),
            "the built-in config".to_string(),
        ),
        Some(p) => (
            std::fs::read_to_string(p)
                .with_context(|| format!("reading config file {}", p.display()))?,
            format!("config file {}", p.display()),
        ),
    };
    let applied = if overrides.is_empty() {
        String::new()
    } else {
        let vars: Vec<&str> = overrides.iter().map(|(v, _)| v.as_str()).collect();
        format!(" with {}", vars.join(", "))
    };
    om_model::Config::from_toml_with_overrides(&text, &overrides)
        .with_context(|| format!("in {source}{applied}"))
}
