//! Checkpoints: the operator state a Kafka or serve job restarts from (DESIGN.md section
//! 5).
//!
//! Each worker keeps three parts, each a *chain* of files next to the tables:
//! - `reader`: its share of the dedup keys, the watermarks, the grants seen and the
//!   retractions;
//! - `usage`: the usage sink's window state and the names behind its fingerprints;
//! - `customers`: the view sink's views (`om_operators::view::Views`).
//!
//! A chain is a **base** (the whole state at some commit, `{part}-w{i}-e{epoch}.bin`)
//! followed by one **delta** per commit since (`{part}-w{i}-d{epoch}.bin`): what changed
//! the state in the epochs of that commit. For the reader that is the dedup keys added
//! and swept (and the small rest in full); for the two sinks it is their inputs, epoch by
//! epoch, with the watermark of each commit, which a restore feeds through the same code
//! that processed them the first time. So a commit writes in proportion to what it
//! read, not to the state. When the deltas since the base outweigh it (or there are
//! [`MAX_DELTAS`] of them), the next commit writes a new base instead and the commit
//! record drops the old chain, whose files are then deleted.
//!
//! The files are written before the commit record, which names them in the manifest
//! under the pseudo-table `_checkpoints` (one slot per file) together with the Kafka
//! offsets the epoch ends at; so the newest commit record always names a complete
//! checkpoint of exactly the input it covers. A restart loads the base and applies the
//! deltas in epoch order, resumes every partition at the recorded offset, and continues
//! with the next epoch number, so no file a commit names is ever overwritten. A restart
//! needs the same number of workers (state is split by worker; a cluster's workers are
//! numbered across its processes, so what counts is their total: 2 processes of 1
//! worker resume what 1 process of 2 workers saved, and back) and the same meters and
//! pipeline settings (`config_digest`).

use crate::packed::Packed;
use anyhow::{Context, bail};
use om_model::Config;
use om_operators::{DedupChange, DedupState, Names, UsageData, Watermarks};
use om_sinks::DataStore;
use om_sinks::commit::{CommitRecord, FileChange, FileEntry};
use std::collections::BTreeSet;

/// The pseudo-table under which commit records list checkpoint files.
pub const TABLE: &str = "_checkpoints";

/// At most this many deltas follow a base: a restore replays them all.
pub const MAX_DELTAS: usize = 64;

/// The reader side of one worker.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct ReaderCheckpoint {
    /// The worker's dedup shard.
    pub dedup: DedupState,
    /// The job's watermarks (the same on every worker).
    pub watermarks: Watermarks,
    /// (tenant, grant id) of every grant accepted (worker 0, which reads the commands).
    pub grants: BTreeSet<(String, String)>,
    /// Retractions waiting and done (worker 0).
    pub retractions: crate::retract::Retractions,
}

/// What changed on the reader side of one worker in the epochs of one commit.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct ReaderDelta {
    /// Dedup keys added and swept, in order (packed: [`crate::packed`]).
    pub dedup: Packed<DedupChange>,
    /// The watermarks now.
    pub watermarks: Watermarks,
    /// Grants accepted since the previous commit.
    pub grants: Vec<(String, String)>,
    /// The retractions now.
    pub retractions: crate::retract::Retractions,
}

impl ReaderCheckpoint {
    /// Applies the deltas of the commits after this base, in order.
    pub fn apply(&mut self, delta: ReaderDelta) {
        self.dedup.replay(&delta.dedup.0);
        self.watermarks = delta.watermarks;
        self.grants.extend(delta.grants);
        self.retractions = delta.retractions;
    }
}

/// The usage sink of one worker.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct UsageCheckpoint {
    /// Window state.
    pub usage: UsageData,
    /// Names of the fingerprints it holds.
    pub names: Names,
}

/// A restored part: the base and the deltas after it, still encoded (each part decodes
/// its own), with the chain to continue.
pub struct Restored<B> {
    /// The state at the base's commit.
    pub base: B,
    /// The deltas of the later commits, oldest first.
    pub deltas: Vec<Vec<u8>>,
    /// Where the chain stands, for the next save.
    pub chain: Chain,
}

/// Where one part of one worker's checkpoint stands: its base, and the deltas written
/// since.
#[derive(Debug)]
pub struct Chain {
    part: &'static str,
    worker: usize,
    /// Bytes of the base; none yet.
    base_bytes: Option<usize>,
    /// Items (keys, windows) the state held at the base, when the part counts them.
    base_items: Option<usize>,
    /// Bytes of the deltas since the base.
    delta_bytes: usize,
    /// Slots of the deltas since the base.
    deltas: Vec<String>,
}

impl Chain {
    /// A chain with nothing saved yet: its first save is a base.
    pub fn new(part: &'static str, worker: usize) -> Self {
        Chain {
            part,
            worker,
            base_bytes: None,
            base_items: None,
            delta_bytes: 0,
            deltas: Vec::new(),
        }
    }

    /// Records the items the loaded base holds (as for [`Chain::wants_base`]), so that a
    /// restarted job weighs its deltas against its state as the job before it did.
    pub fn count_base(&mut self, items: usize) {
        self.base_items = Some(items);
    }

    /// Whether the next save writes a whole base: none yet, or the deltas since the base
    /// weigh as much as the state would now, or there are [`MAX_DELTAS`] of them.
    ///
    /// `items` is the state's size now in the part's own unit (dedup keys, windows), if it
    /// counts one: the state's bytes are then estimated as the base's bytes scaled by how
    /// the items grew since. A growing state (a job catching up, a new job) then writes
    /// deltas instead of rewriting an ever larger base at every other commit, and a
    /// restore still reads at most about twice the state. Without a count the deltas are
    /// weighed against the base itself.
    pub fn wants_base(&self, items: Option<usize>) -> bool {
        let Some(base_bytes) = self.base_bytes else {
            return true;
        };
        let state_bytes = match (items, self.base_items) {
            (Some(now), Some(then)) if then > 0 => {
                (base_bytes as u128 * now as u128 / then as u128).max(base_bytes as u128)
            }
            _ => base_bytes as u128,
        };
        self.delta_bytes as u128 >= state_bytes || self.deltas.len() >= MAX_DELTAS
    }

    /// Saves for `epoch`: the whole state `base` (of `items`, as for
    /// [`Chain::wants_base`]) when [`Chain::wants_base`], else the encoded `delta` (the
    /// changes since the previous save). Returns the manifest changes (a new base also
    /// removes the deltas it replaces).
    pub fn save<B: serde::Serialize>(
        &mut self,
        store: &DataStore,
        runtime: &tokio::runtime::Handle,
        epoch: u64,
        (base, items): (&B, Option<usize>),
        delta: Vec<u8>,
    ) -> anyhow::Result<Vec<FileChange>> {
        let base_slot = base_slot(self.part, self.worker);
        let mut changes = Vec::new();
        let (slot, path, bytes) = if self.wants_base(items) {
            let bytes = bincode::serialize(base).context("encoding a checkpoint")?;
            self.base_bytes = Some(bytes.len());
            self.base_items = items;
            self.delta_bytes = 0;
            changes.extend(self.deltas.drain(..).map(|slot| FileChange {
                table: TABLE.into(),
                slot,
                file: None,
            }));
            let path = format!("{TABLE}/{base_slot}-e{epoch:06}.bin");
            (base_slot, path, bytes)
        } else {
            let slot = format!("{base_slot}-d{epoch:06}");
            self.delta_bytes += delta.len();
            self.deltas.push(slot.clone());
            let path = format!("{TABLE}/{slot}.bin");
            (slot, path, delta)
        };
        runtime
            .block_on(store.put(&path, bytes))
            .with_context(|| format!("writing checkpoint {path}"))?;
        changes.push(FileChange {
            table: TABLE.into(),
            slot,
            file: Some(FileEntry { path, rows: 1 }),
        });
        Ok(changes)
    }
}

/// The slot of the base of a part of worker `worker`'s checkpoint: `reader-w0`.
fn base_slot(part: &str, worker: usize) -> String {
    format!("{part}-w{worker}")
}

/// The epoch of a delta slot of `base` (`reader-w0-d000012` -> 12).
fn delta_epoch(slot: &str, base: &str) -> Option<u64> {
    slot.strip_prefix(base)?.strip_prefix("-d")?.parse().ok()
}

/// Loads one part of a worker's checkpoint named by `commit`: its base and deltas.
pub fn load<B: serde::de::DeserializeOwned>(
    store: &DataStore,
    runtime: &tokio::runtime::Handle,
    commit: &CommitRecord,
    part: &'static str,
    worker: usize,
) -> anyhow::Result<Restored<B>> {
    let base_slot = base_slot(part, worker);
    let files = commit.tables.get(TABLE);
    let entry = files
        .and_then(|t| t.get(&base_slot))
        .with_context(|| format!("the last commit names no checkpoint {base_slot}"))?;
    let read = |path: &str| -> anyhow::Result<Vec<u8>> {
        runtime
            .block_on(store.get(path))?
            .with_context(|| format!("checkpoint {path} is missing"))
    };
    let bytes = read(&entry.path)?;
    let base = bincode::deserialize(&bytes)
        .with_context(|| format!("decoding checkpoint {}", entry.path))?;
    let mut chain = Chain::new(part, worker);
    chain.base_bytes = Some(bytes.len());
    let mut slots: Vec<(u64, &String, &FileEntry)> = files
        .into_iter()
        .flatten()
        .filter_map(|(slot, e)| Some((delta_epoch(slot, &base_slot)?, slot, e)))
        .collect();
    slots.sort_unstable_by_key(|(epoch, ..)| *epoch);
    let mut deltas = Vec::with_capacity(slots.len());
    for (_, slot, e) in slots {
        let bytes = read(&e.path)?;
        chain.delta_bytes += bytes.len();
        chain.deltas.push(slot.clone());
        deltas.push(bytes);
    }
    Ok(Restored {
        base,
        deltas,
        chain,
    })
}

/// A sink's checkpoint as loaded: the base, the entries of its epoch logs since, oldest
/// first, and the chain to continue.
#[derive(Debug)]
pub struct Replay<B, E> {
    /// The state at the base's commit.
    pub base: B,
    /// The epoch log entries of the commits since.
    pub log: Vec<E>,
    /// The chain of files.
    pub chain: Chain,
}

impl<B, E: serde::de::DeserializeOwned> Replay<B, E> {
    /// Decodes the deltas of a loaded checkpoint as epoch logs.
    pub fn decode(restored: Restored<B>) -> anyhow::Result<Self> {
        let mut log = Vec::new();
        for delta in &restored.deltas {
            log.extend(EpochLog::entries(delta)?);
        }
        Ok(Replay {
            base: restored.base,
            log,
            chain: restored.chain,
        })
    }
}

/// Decodes a delta saved whole (one value).
pub fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> anyhow::Result<T> {
    bincode::deserialize(bytes).context("decoding a checkpoint delta")
}

/// An epoch log: the entries a sink processed since its previous save, encoded as they
/// arrive (one after the other, no framing: bincode knows each entry's end).
#[derive(Debug, Default)]
pub struct EpochLog {
    bytes: Vec<u8>,
}

impl EpochLog {
    /// Appends one entry.
    pub fn push<T: serde::Serialize>(&mut self, entry: &T) {
        bincode::serialize_into(&mut self.bytes, entry).expect("encoding into memory");
    }

    /// The entries since the previous take, encoded; the log starts over.
    pub fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.bytes)
    }

    /// Decodes the entries of one delta, in order.
    pub fn entries<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> anyhow::Result<Vec<T>> {
        let mut rest = bytes;
        let mut out = Vec::new();
        while !rest.is_empty() {
            out.push(bincode::deserialize_from(&mut rest).context("decoding a checkpoint delta")?);
        }
        Ok(out)
    }
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
    const FORMAT: u32 = 7;
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
    // One reader base per worker (`reader-w{i}`; its deltas are `reader-w{i}-d{epoch}`).
    let saved_workers = parts
        .keys()
        .filter(|s| {
            s.strip_prefix("reader-w")
                .is_some_and(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()))
        })
        .count();
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A runtime and an in-memory store at `url`.
    fn memory_store(url: &str) -> (tokio::runtime::Runtime, DataStore) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        (runtime, DataStore::open(url).unwrap())
    }

    #[test]
    fn a_chain_appends_deltas_until_they_outweigh_the_base_then_starts_over() {
        let (runtime, store) = memory_store("memory://chain-test");
        let mut record = CommitRecord::default();
        let mut chain = Chain::new("usage", 1);
        let base = vec![7u8; 100];
        let mut save = |chain: &mut Chain, epoch: u64, delta_len: usize, items: Option<usize>| {
            let changes = chain
                .save(
                    &store,
                    runtime.handle(),
                    epoch,
                    (&base, items),
                    vec![epoch as u8; delta_len],
                )
                .unwrap();
            record.apply(changes);
            let slots: Vec<String> = record.tables[TABLE].keys().cloned().collect();
            let loaded: Restored<Vec<u8>> =
                load(&store, runtime.handle(), &record, "usage", 1).unwrap();
            assert_eq!(loaded.base, base);
            (slots, loaded.deltas)
        };
        // The first save is a base (108 bytes encoded: a length and 100 bytes).
        let (slots, deltas) = save(&mut chain, 1, 40, None);
        assert_eq!(slots, ["usage-w1"]);
        assert!(deltas.is_empty());
        // Then deltas, in epoch order (epoch 1000000 sorts after 999999)...
        save(&mut chain, 999_999, 40, None);
        let (slots, deltas) = save(&mut chain, 1_000_000, 40, None);
        assert_eq!(slots, ["usage-w1", "usage-w1-d1000000", "usage-w1-d999999"]);
        assert_eq!(
            deltas,
            [vec![999_999u32 as u8; 40], vec![1_000_000u32 as u8; 40]]
        );
        // ...until they weigh as much as the base (3 x 40 >= 108): then a new base, alone.
        let (slots, _) = save(&mut chain, 1_000_001, 40, None);
        assert_eq!(slots.len(), 4);
        let (slots, deltas) = save(&mut chain, 1_000_002, 40, None);
        assert_eq!(slots, ["usage-w1"]);
        assert!(deltas.is_empty());
        assert_eq!(
            record.tables[TABLE]["usage-w1"].path,
            "_checkpoints/usage-w1-e1000002.bin"
        );
    }

    #[test]
    fn a_growing_state_writes_deltas_until_they_outweigh_the_state_now() {
        let (runtime, store) = memory_store("memory://chain-growth-test");
        let mut chain = Chain::new("reader", 0);
        let base = vec![7u8; 100];
        let mut save = |epoch: u64, items: usize| {
            let changes = chain
                .save(
                    &store,
                    runtime.handle(),
                    epoch,
                    (&base, Some(items)),
                    vec![0; 40],
                )
                .unwrap();
            changes
                .iter()
                .find(|c| c.file.is_some())
                .map(|c| c.slot.clone())
                .unwrap()
        };
        // A base of 108 bytes at 10 items; the state then grows by 10 items a commit.
        assert_eq!(save(1, 10), "reader-w0");
        // At 40 items the state would weigh ~432 bytes: deltas go on past 108 bytes...
        for epoch in 2..=11 {
            assert_eq!(
                save(epoch, 10 * epoch as usize),
                format!("reader-w0-d{epoch:06}")
            );
        }
        // ...and once it stops growing (110 items, ~1188 bytes), until the deltas weigh
        // as much: 30 deltas of 40 bytes (epochs 2 to 31) make 1200.
        for epoch in 12..=31 {
            assert_eq!(save(epoch, 110), format!("reader-w0-d{epoch:06}"));
        }
        assert_eq!(save(32, 110), "reader-w0");
        // A state that shrank below its base is weighed as the base (108 bytes).
        for epoch in 33..=35 {
            assert_eq!(save(epoch, 5), format!("reader-w0-d{epoch:06}"));
        }
        assert_eq!(save(36, 5), "reader-w0");
    }

    #[test]
    fn a_loaded_chain_weighs_its_deltas_against_the_state_once_its_base_is_counted() {
        let (runtime, store) = memory_store("memory://chain-load-test");
        let mut record = CommitRecord::default();
        let mut chain = Chain::new("reader", 0);
        let base = vec![7u8; 100];
        for (epoch, items) in [(1, 10), (2, 20), (3, 30)] {
            let changes = chain
                .save(
                    &store,
                    runtime.handle(),
                    epoch,
                    (&base, Some(items)),
                    vec![0; 60],
                )
                .unwrap();
            record.apply(changes);
        }
        // Two deltas of 60 bytes against a base of 108 bytes at 10 items.
        let loaded: Restored<Vec<u8>> =
            load(&store, runtime.handle(), &record, "reader", 0).unwrap();
        assert_eq!(loaded.deltas.len(), 2);
        let mut chain = loaded.chain;
        // Uncounted, 120 bytes of deltas outweigh the base...
        assert!(chain.wants_base(Some(30)));
        // ...counted, not the ~324 bytes the state at 30 items would weigh.
        chain.count_base(10);
        assert!(!chain.wants_base(Some(30)));
    }

    #[test]
    fn an_epoch_log_decodes_its_entries_in_order() {
        let mut log = EpochLog::default();
        log.push(&(1u64, "a".to_string()));
        log.push(&(2u64, "bc".to_string()));
        let bytes = log.take();
        let entries: Vec<(u64, String)> = EpochLog::entries(&bytes).unwrap();
        assert_eq!(entries, [(1, "a".to_string()), (2, "bc".to_string())]);
        assert!(log.take().is_empty());
        assert!(EpochLog::entries::<(u64, String)>(&bytes[..bytes.len() - 1]).is_err());
    }
}
