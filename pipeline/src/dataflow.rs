//! The timely operators that turn window updates into `usage_windows` files and epochs
//! into commit records.

use crate::checkpoint::{self, Chain, EpochLog, UsageCheckpoint};
use crate::packed::{Packed, PackedRef};
use om_model::{Aggregation, Micros, WindowSize};
use om_operators::windowed_usage::{PartitionKey, partition_path};
use om_operators::{NameRecord, Names, PartitionWrite, ReadingUpdate, UsageState, WindowRow};
use om_sinks::blocks::{BlockFile, write_blocks};
use om_sinks::commit::{CommitRecord, FileEntry};
use om_sinks::encode::{RecordBatch, USAGE_KEY_COLUMNS, UsageRow, usage_values};
use om_sinks::retention::{self, Superseded};
use om_sinks::splice::set_bool_column;
use om_sinks::{DataStore, FileChange, Uploads};
use rustc_hash::FxHashMap;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::{Operator, OutputBuilderSession};
use timely::progress::frontier::MutableAntichain;

/// Per-epoch facts the driver loop shares with the operators of its worker.
#[derive(Debug, Default)]
pub struct EpochInfo {
    /// Watermark after each epoch (identical on every worker).
    pub watermarks: BTreeMap<u64, Option<Micros>>,
    /// Latest watermark (greatest accepted event time) after each epoch: the "now" of
    /// balances.
    pub latest: BTreeMap<u64, Option<Micros>>,
    /// Epochs that end with a commit (identical on every worker).
    pub commits: std::collections::BTreeSet<u64>,
}

/// Records for the committer on worker 0.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum Meta {
    /// A table file written (or a slot emptied) in this epoch.
    File(FileChange),
    /// One worker's counts for this epoch.
    Stats {
        /// Accepted events.
        accepted: u64,
        /// Rejected records, duplicates included.
        rejected: u64,
        /// Duplicates.
        duplicates: u64,
        /// Valid commands.
        commands_accepted: u64,
        /// Rejected commands (in `rejected_events`, not in `rejected`).
        commands_rejected: u64,
        /// Late events.
        late: u64,
        /// Watermark after the epoch.
        watermark: Option<Micros>,
        /// (source name, offset read up to): the end of the epoch in a file, the next
        /// offset of each Kafka partition the worker reads.
        sources: Vec<(String, u64)>,
    },
}

/// Where a sink stands in the epochs: the next epoch it can handle, in time order, is
/// the earliest epoch with pending input or a commit it has not handled, once every
/// input's frontier has passed it. Both sinks share this schedule, so a commit epoch
/// that brings a worker no input still gets its files written.
#[derive(Debug, Default)]
pub struct EpochSchedule {
    next_commit_from: u64,
}

impl EpochSchedule {
    /// The next epoch to handle and whether it commits; `None` while it is not complete
    /// on every input.
    pub fn next(
        &mut self,
        first_pending: Option<u64>,
        info: &RefCell<EpochInfo>,
        frontiers: &[&MutableAntichain<u64>],
    ) -> Option<(u64, bool)> {
        let next_commit = info
            .borrow()
            .commits
            .range(self.next_commit_from..)
            .next()
            .copied();
        let t = first_pending.into_iter().chain(next_commit).min()?;
        if frontiers.iter().any(|f| f.less_equal(&t)) {
            return None;
        }
        let commits = next_commit == Some(t);
        if commits {
            self.next_commit_from = t + 1;
        }
        Some((t, commits))
    }
}

/// Moves a sink's own capability to the least time its inputs may still bring, and
/// drops it once they are done.
pub fn follow_inputs(cap: &mut Option<Capability<u64>>, frontiers: &[&MutableAntichain<u64>]) {
    match frontiers
        .iter()
        .filter_map(|f| f.frontier().iter().min().copied())
        .min()
    {
        Some(t) => {
            if let Some(c) = cap.as_mut() {
                c.downgrade(&t);
            }
        }
        None => *cap = None,
    }
}

/// What the usage sink needs to write files.
#[derive(Debug)]
pub struct UsageSinkConfig {
    /// Where to write.
    pub store: DataStore,
    /// Runtime for the object store calls.
    pub runtime: tokio::runtime::Handle,
    /// Meter names by index.
    pub meters: Vec<String>,
    /// Meter aggregations by index.
    pub aggregations: Vec<Aggregation>,
    /// Meter window sizes by index.
    pub windows: Vec<Vec<WindowSize>>,
    /// Lateness bound, for `is_final`.
    pub allowed_lateness: Micros,
    /// This worker's index.
    pub worker: usize,
    /// Save a checkpoint of the state at every commit epoch.
    pub checkpoints: bool,
    /// The checkpoint to start from.
    pub restore: Option<UsageRestore>,
}

/// A usage checkpoint by reference, saved in the layout of [`UsageCheckpoint`].
#[derive(serde::Serialize)]
struct UsageCheckpointRef<'a> {
    usage: &'a om_operators::UsageData,
    names: &'a Names,
}

/// One entry of the usage sink's epoch log (its checkpoint deltas).
#[derive(Debug, serde::Deserialize)]
pub enum UsageEntry {
    /// An epoch's input, as it was processed.
    Epoch {
        /// Names, registered first.
        names: Vec<NameRecord>,
        /// Reading updates, applied in this order (packed: [`crate::packed`]).
        updates: Packed<ReadingUpdate>,
    },
    /// A commit, at this watermark.
    Commit {
        /// The watermark the partitions were taken at.
        watermark: Option<Micros>,
    },
}

/// A [`UsageEntry`] by reference, in its layout.
#[derive(serde::Serialize)]
enum UsageEntryRef<'a> {
    Epoch {
        names: &'a [NameRecord],
        updates: PackedRef<'a, ReadingUpdate>,
    },
    Commit {
        watermark: Option<Micros>,
    },
}

/// The usage sink's checkpoint as loaded.
pub type UsageRestore = checkpoint::Replay<UsageCheckpoint, UsageEntry>;

/// The usage sink: owns the window state of the customers routed to this worker. Epoch
/// by epoch, in time order, it records the names that arrived and folds the reading
/// updates into [`UsageState`]; at each commit epoch it rewrites the partitions that
/// changed or became final since the last commit and emits the file changes. It holds a
/// capability of its own, because a commit epoch may bring no update to this worker and
/// still have to write what earlier epochs changed.
pub fn usage_sink<'s>(
    updates: StreamVec<'s, u64, ReadingUpdate>,
    names: StreamVec<'s, u64, NameRecord>,
    cfg: UsageSinkConfig,
    info: Rc<RefCell<EpochInfo>>,
) -> StreamVec<'s, u64, Meta> {
    let pact_u = Exchange::new(|u: &ReadingUpdate| u.customer);
    let pact_n = Exchange::new(NameRecord::route);
    let mut cfg = cfg;
    updates.binary_frontier(names, pact_u, pact_n, "OM: UsageSink", move |cap, _info| {
        let mut cap = Some(cap);
        let mut state = UsageState::new(
            cfg.aggregations.clone(),
            cfg.windows.clone(),
            cfg.allowed_lateness,
        );
        let mut known = Names::default();
        let mut chain = Chain::new("usage", cfg.worker);
        let mut log = EpochLog::default();
        // The file each partition with open windows was last written to by this job, and
        // its bytes, which the next write copies key columns from (a job resuming holds
        // none: its partitions are encoded from their rows once more). Parquet takes a
        // few bytes a row, against the tens a window takes in memory.
        let mut files: FxHashMap<PartitionKey, (FileEntry, BlockFile)> = FxHashMap::default();
        if let Some(saved) = cfg.restore.take() {
            state.restore(saved.base.usage);
            known = saved.base.names;
            chain = saved.chain;
            chain.count_base(state.len());
            // The commits after the base, replayed as they ran (their files exist).
            for entry in saved.log {
                match entry {
                    UsageEntry::Epoch { names, updates } => {
                        for n in names {
                            known.register(n).unwrap_or_else(|e| panic!("{e}"));
                        }
                        for u in &updates.0 {
                            state.apply(u);
                        }
                    }
                    UsageEntry::Commit { watermark } => drop(state.take_partitions(watermark)),
                }
            }
        }
        let mut pending: BTreeMap<u64, (Vec<ReadingUpdate>, Vec<NameRecord>)> = BTreeMap::new();
        let mut schedule = EpochSchedule::default();
        move |(in_u, frontier_u), (in_n, frontier_n), output| {
            in_u.for_each(|cap, data| {
                let t = *cap.retain_least(0).expect("capability for its time").time();
                pending.entry(t).or_default().0.append(data);
            });
            in_n.for_each(|cap, data| {
                let t = *cap.retain_least(0).expect("capability for its time").time();
                pending.entry(t).or_default().1.append(data);
            });
            let frontiers = [frontier_u, frontier_n];
            while let Some((t, commits)) =
                schedule.next(pending.keys().next().copied(), &info, &frontiers)
            {
                if let Some((updates, names)) = pending.remove(&t) {
                    if cfg.checkpoints {
                        log.push(&UsageEntryRef::Epoch {
                            names: &names,
                            updates: PackedRef(&updates),
                        });
                    }
                    for n in names {
                        known.register(n).unwrap_or_else(|e| panic!("{e}"));
                    }
                    for u in &updates {
                        state.apply(u);
                    }
                }
                if !commits {
                    continue;
                }
                let watermark = info.borrow().watermarks.get(&t).copied().flatten();
                if cfg.checkpoints {
                    log.push(&UsageEntryRef::Commit { watermark });
                }
                let at = cap
                    .as_ref()
                    .expect("held until the inputs are done")
                    .delayed(&t);
                // The files are written in the background while the next is encoded,
                // and named to the committer only once all of them are written.
                let mut uploads = Uploads::new(&cfg.runtime);
                let mut changes = Vec::new();
                let writes = state.take_writes(watermark, |p| files.contains_key(p));
                for (p, write) in writes {
                    let slot = format!("{}/w{}", partition_path(&p), cfg.worker);
                    let path = format!("usage_windows/{slot}-e{t:06}.parquet");
                    let (rows, file) = match write {
                        // Only `is_final` changes: the held file with that column set.
                        PartitionWrite::AllFinal => {
                            let (old, written) =
                                files.remove(&p).expect("asked for held files only");
                            let bytes = set_bool_column(written.bytes(), "is_final", true)
                                .unwrap_or_else(|e| panic!("rewriting {} as final: {e}", old.path));
                            uploads.put(&cfg.store, path.clone(), bytes);
                            (old.rows, None)
                        }
                        PartitionWrite::Rows { rows, kept } => {
                            let open = rows.iter().any(|r| !r.is_final);
                            let previous = files.remove(&p).map(|(_, written)| written);
                            if !rows.is_empty() {
                                let written = write_usage(
                                    &rows,
                                    previous.as_ref().map(|w| (w, kept)),
                                    &known,
                                    &cfg.meters,
                                )
                                .unwrap_or_else(|e| panic!("encoding {path}: {e}"));
                                uploads.put(&cfg.store, path.clone(), written.bytes().clone());
                                (rows.len() as u64, open.then_some(written))
                            } else {
                                (0, None)
                            }
                        }
                    };
                    let entry = (rows > 0).then_some(FileEntry { path, rows });
                    // A partition with open windows keeps its file for the next write;
                    // one written final leaves memory: no flip to come.
                    if let (Some(entry), Some(written)) = (&entry, file) {
                        files.insert(p, (entry.clone(), written));
                    }
                    changes.push(FileChange {
                        table: "usage_windows".into(),
                        slot,
                        file: entry,
                    });
                }
                if cfg.checkpoints {
                    let saved = UsageCheckpointRef {
                        usage: state.data(),
                        names: &known,
                    };
                    changes.extend(
                        chain
                            .save(
                                &cfg.store,
                                &cfg.runtime,
                                t,
                                (&saved, Some(state.len())),
                                log.take(),
                            )
                            .unwrap_or_else(|e| panic!("{e:#}")),
                    );
                }
                uploads.finish().unwrap_or_else(|e| panic!("{e}"));
                let mut session = output.session(&at);
                for c in changes {
                    session.give(Meta::File(c));
                }
            }
            follow_inputs(&mut cap, &frontiers);
        }
    })
}

/// A partition's rows as a `usage_windows` file in blocks ([`om_sinks::blocks`]). With
/// `previous`, the partition's last file and how many of its first rows are still the
/// first of `rows`, the full blocks among those rows copy their key columns from it.
fn write_usage(
    rows: &[WindowRow],
    previous: Option<(&BlockFile, usize)>,
    names: &Names,
    meters: &[String],
) -> om_sinks::Result<BlockFile> {
    let schema = &om_model::schema::USAGE_WINDOWS;
    let (previous, kept) = previous.map_or((None, 0), |(file, kept)| (Some(file), kept));
    write_blocks(
        schema,
        om_sinks::parquet::properties(schema).build(),
        USAGE_KEY_COLUMNS,
        rows.len(),
        previous,
        kept,
        |range, with_keys| {
            let rows = &rows[range];
            Ok(if with_keys {
                encode_usage(rows, names, meters)?.columns().to_vec()
            } else {
                usage_values(rows.iter().map(|r| (r.value, r.events, r.is_final))).to_vec()
            })
        },
    )
}

/// Rows of a partition as a `usage_windows` batch, with the names behind the fingerprints.
fn encode_usage(
    rows: &[WindowRow],
    names: &Names,
    meters: &[String],
) -> om_sinks::Result<RecordBatch> {
    let usage_row = |r: &WindowRow| {
        let (tenant_id, customer_id) = names
            .customer_of(r.key.customer)
            .expect("a customer's name arrives before its updates");
        UsageRow {
            tenant_id,
            customer_id,
            meter: &meters[r.key.meter as usize],
            dimensions: names
                .dimensions_of(r.key.dimensions)
                .expect("dimensions' text arrives before their updates"),
            size: r.key.size,
            start: r.key.start,
            value: r.value,
            events: r.events,
            is_final: r.is_final,
        }
    };
    om_sinks::encode::usage_windows(rows.iter().map(usage_row))
}

/// The committer: gathers every worker's file changes and counts for an epoch on worker
/// 0 and, once the epoch is complete everywhere and it is a commit epoch, writes the
/// commit record covering it and the epochs since the previous commit, continuing from
/// `start` (the commit a job resumes from, or an empty record). `last` holds the newest
/// record written. Its (empty) output passes an epoch once the commit covering it is
/// written.
///
/// After each commit it deletes what earlier commits superseded and `superseded` has
/// kept long enough ([`om_sinks::retention`]): table files replaced or removed, and
/// commit records older than the newest. Superseded checkpoint files go at once: only a
/// resuming job reads them, and it reads the newest commit's.
pub fn committer<'s>(
    meta: StreamVec<'s, u64, Meta>,
    store: DataStore,
    runtime: tokio::runtime::Handle,
    start: CommitRecord,
    mut superseded: Superseded,
    last: Rc<RefCell<Option<CommitRecord>>>,
    info: Rc<RefCell<EpochInfo>>,
) -> StreamVec<'s, u64, ()> {
    meta.unary_frontier(Exchange::new(|_: &Meta| 0), "OM: Committer", move |cap, _info| {
        // Held until the inputs pass an epoch and its record is written, so that a probe
        // of this operator, on any worker of any process, sees an epoch complete only
        // once its commit is written.
        let mut cap = Some(cap);
        // A resumed job's first commit supersedes the record it resumed from (a record
        // that was written has its commit time; a new job's `start` is empty).
        let mut previous = (!start.committed_at.is_empty()).then(|| CommitRecord::path_of(start.epoch));
        let mut record = start;
        let mut checkpoints = checkpoint_paths(&record);
        // Files taken out of the manifest since the last commit written.
        let mut replaced = Vec::new();
        let mut pending: BTreeMap<u64, Vec<Meta>> = BTreeMap::new();
        move |(input, frontier), _output: &mut OutputBuilderSession<'_, u64, CapacityContainerBuilder<Vec<()>>>| {
            input.for_each(|cap, data| {
                let t = *cap.retain_least(0).expect("capability for its time").time();
                pending.entry(t).or_default().append(data);
            });
            while let Some(entry) = pending.first_entry() {
                let t = *entry.key();
                if frontier.less_equal(&t) {
                    break;
                }
                let metas = entry.remove();
                let mut watermark = record.watermark_micros;
                let mut changes = Vec::new();
                for m in metas {
                    match m {
                        Meta::File(c) => changes.push(c),
                        Meta::Stats { accepted, rejected, duplicates, commands_accepted, commands_rejected, late, watermark: w, sources } => {
                            record.counts.commands_accepted += commands_accepted;
                            record.counts.commands_rejected += commands_rejected;
                            record.counts.accepted += accepted;
                            record.counts.rejected += rejected;
                            record.counts.duplicates += duplicates;
                            record.counts.late += late;
                            watermark = watermark.max(w);
                            for (name, at) in sources {
                                let offset = record.sources.entry(name).or_insert(0);
                                *offset = (*offset).max(at);
                            }
                        }
                    }
                }
                record.epoch = t;
                replaced.extend(retention::replaced(&record, changes.iter().filter(|c| c.table != checkpoint::TABLE)));
                record.apply(changes);
                record.watermark_micros = watermark;
                record.watermark = watermark.map(om_model::time::format_micros);
                if !info.borrow().commits.contains(&t) {
                    continue;
                }
                record.committed_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
                runtime.block_on(record.write(&store)).unwrap_or_else(|e| panic!("committing epoch {t}: {e}"));
                // The checkpoint files the previous commit named and this one does not
                // are superseded: only the newest commit's checkpoint is ever resumed
                // from (queries never read checkpoints), so they go now.
                let current = checkpoint_paths(&record);
                for stale in checkpoints.difference(&current) {
                    runtime.block_on(store.delete(stale)).unwrap_or_else(|e| panic!("deleting superseded checkpoint {stale}: {e}"));
                }
                checkpoints = current;
                let now = std::time::Instant::now();
                superseded.superseded(replaced.drain(..).chain(previous.replace(CommitRecord::path_of(t))), now);
                let mut due = superseded.due(now);
                if !due.is_empty() {
                    // Never what the newest commit names. This happens: a restart queues
                    // the files of an epoch that never committed, and re-running that epoch
                    // writes the same paths again, now live.
                    let live: std::collections::HashSet<&str> = record.tables.values().flat_map(|t| t.values().map(|f| f.path.as_str())).collect();
                    let own = CommitRecord::path_of(t);
                    due.retain(|p| !live.contains(p.as_str()) && *p != own);
                }
                if !due.is_empty() {
                    // Garbage that stays is no reason to stop metering: say so, go on.
                    let (n, first) = (due.len(), due[0].clone());
                    if let Err(e) = runtime.block_on(store.delete_all(due)) {
                        eprintln!("warning: could not delete {n} superseded files ({first}, ...): {e}; they stay in {} and can be deleted by hand", store.url());
                    }
                }
                *last.borrow_mut() = Some(record.clone());
            }
            follow_inputs(&mut cap, &[frontier]);
        }
    })
}

/// The checkpoint files a commit record names.
fn checkpoint_paths(record: &CommitRecord) -> std::collections::BTreeSet<String> {
    record
        .tables
        .get(checkpoint::TABLE)
        .map(|files| files.values().map(|f| f.path.clone()).collect())
        .unwrap_or_default()
}
