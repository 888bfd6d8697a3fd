//! `openmonetize`: the job. Config loading, the timely workers and their epochs, the
//! operators that write and commit tables, and the commands of the CLI.
//!
//! One event's path: [`run`] reads its slice of the input for an epoch and decodes it
//! (`om_sources`), sends dedup probes through the dedup dataflow, judges lateness
//! (`om_operators`), writes the accepted, rejected and late records of the epoch, and
//! feeds window updates into the usage dataflow ([`dataflow`]), whose sink rewrites the
//! changed `usage_windows` partitions, and its burn to the credits sink ([`credits_sink`]),
//! which rewrites the credit tables; the committer on worker 0 then writes the epoch's
//! commit record.

pub mod checkpoint;
pub mod customer_sink;
pub mod dataflow;
pub mod demo;
pub mod pg;
pub mod retract;
pub mod run;
pub mod serve;
pub mod view_updates;

pub use run::{RunOptions, RunSummary, Source, run};

/// Loads a config file, or the built-in default when `path` is `None`.
pub fn load_config(path: Option<&std::path::Path>) -> anyhow::Result<om_model::Config> {
    use anyhow::Context;
    match path {
        None => Ok(om_model::Config::builtin()),
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("reading config file {}", p.display()))?;
            om_model::Config::from_toml(&text)
                .with_context(|| format!("in config file {}", p.display()))
        }
    }
}
