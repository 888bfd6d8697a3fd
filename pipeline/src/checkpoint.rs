//! Checkpoints: the operator state a Kafka job restarts from (DESIGN.md section 5).
//!
//! At every commit epoch each worker saves, next to the tables, what it holds:
//! - the reader side: its share of the dedup keys and the watermarks
//!   (`_checkpoints/reader-w{i}-e{epoch}.bin`);
//! - the usage sink: its window state and the names behind its fingerprints
//!   (`_checkpoints/usage-w{i}-e{epoch}.bin`).
//!
//! The files are written before the commit record, which names them in the manifest
//! under the pseudo-table `_checkpoints` together with the Kafka offsets the epoch ends
//! at; so the newest commit record always names a complete checkpoint of exactly the
//! input it covers. A restart loads them, resumes every partition at the recorded
//! offset, and continues with the next epoch number, so no file a commit names is ever
//! overwritten. A restart needs the same number of workers (state is split by worker;
//! a cluster's workers are numbered across its processes, so what counts is their total:
//! 2 processes of 1 worker resume what 1 process of 2 workers saved, and back) and the
//! same meters and pipeline settings (`Checkpointed::config_digest`).

use anyhow::{Context, bail};
use om_model::Config;
use om_operators::{DedupState, Names, UsageData, Watermarks};
use om_sinks::DataStore;
use om_sinks::commit::{CommitRecord, FileChange, FileEntry};

/// The pseudo-table under which commit records list checkpoint files.
pub const TABLE: &str = "_checkpoints";

/// The reader side of one worker.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct ReaderCheckpoint {
    /// The worker's dedup shard.
    pub dedup: DedupState,
    /// The job's watermarks (the same on every worker).
    pub watermarks: Watermarks,
    /// (tenant, grant id) of every grant accepted (worker 0, which reads the commands).
    pub grants: std::collections::BTreeSet<(String, String)>,
    /// Retractions waiting and done (worker 0).
    pub retractions: crate::retract::Retractions,
}

/// The usage sink of one worker.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct UsageCheckpoint {
    /// Window state.
    pub usage: UsageData,
    /// Names of the fingerprints it holds.
    pub names: Names,
}

/// The slot of a part of worker `worker`'s checkpoint: `reader-w0`, `usage-w1`.
fn slot(part: &str, worker: usize) -> String {
    format!("{part}-w{worker}")
}

/// Saves one part of a worker's checkpoint for `epoch`; returns the manifest change.
pub fn save<T: serde::Serialize>(
    store: &DataStore,
    runtime: &tokio::runtime::Handle,
    part: &str,
    worker: usize,
    epoch: u64,
    value: &T,
) -> anyhow::Result<FileChange> {
    let bytes = bincode::serialize(value).context("encoding a checkpoint")?;
    let slot = slot(part, worker);
    let path = format!("{TABLE}/{slot}-e{epoch:06}.bin");
    runtime
        .block_on(store.put(&path, bytes))
        .with_context(|| format!("writing checkpoint {path}"))?;
    Ok(FileChange {
        table: TABLE.into(),
        slot,
        file: Some(FileEntry { path, rows: 1 }),
    })
}

/// Loads one part of a worker's checkpoint named by `commit`.
pub fn load<T: serde::de::DeserializeOwned>(
    store: &DataStore,
    runtime: &tokio::runtime::Handle,
    commit: &CommitRecord,
    part: &str,
    worker: usize,
) -> anyhow::Result<T> {
    let slot = slot(part, worker);
    let entry = commit
        .tables
        .get(TABLE)
        .and_then(|t| t.get(&slot))
        .with_context(|| format!("the last commit names no checkpoint {slot}"))?;
    let bytes = runtime
        .block_on(store.get(&entry.path))?
        .with_context(|| format!("checkpoint {} is missing", entry.path))?;
    bincode::deserialize(&bytes).with_context(|| format!("decoding checkpoint {}", entry.path))
}

/// What a restart must keep equal: the meters, burn rates and pipeline settings, as a
/// digest.
pub fn config_digest(config: &Config) -> String {
    // What the saved state depends on: the meters and what each view keeps of them
    // (tracked meters, the model calls and their prices, which already-final day files
    // were computed with), and the burn rules. Plans are not: entitlements are computed
    // afresh at every commit.
    // FORMAT changes whenever the layout of saved state does, so that a checkpoint of
    // another layout is refused instead of misread.
    const FORMAT: u32 = 2;
    let text = format!(
        "{FORMAT}{:?}{:?}{:?}{:?}{:?}{:?}",
        config.meters,
        config.pipeline,
        config.burn_rates,
        crate::view_updates::tracked_meters(config),
        config.costs,
        config.anomaly
    );
    format!("{:016x}", twox_hash::XxHash3_64::oneshot(text.as_bytes()))
}

/// Checks that `commit` can be resumed by a job with `workers` workers in all (in every
/// process of a cluster) and `config`.
pub fn check_resumable(
    commit: &CommitRecord,
    workers: usize,
    config: &Config,
) -> anyhow::Result<()> {
    let Some(parts) = commit.tables.get(TABLE) else {
        bail!(
            "it holds tables without a checkpoint (commit of epoch {}), written by a file run; use an empty location",
            commit.epoch
        );
    };
    let saved_workers = parts.keys().filter(|s| s.starts_with("reader-")).count();
    if saved_workers != workers {
        bail!(
            "its checkpoint was written by {saved_workers} workers in all, this job has {workers}: restart with --workers {saved_workers} (in cluster mode, --processes times --workers must be {saved_workers})"
        );
    }
    if commit.config_digest.as_deref() != Some(config_digest(config).as_str()) {
        bail!(
            "its checkpoint was written with other meters, burn rates, [costs], [anomaly] or [forecasts] settings, model prices or pipeline settings, or by an older version of openmonetize: restart with the same config and version, or use an empty location"
        );
    }
    Ok(())
}
