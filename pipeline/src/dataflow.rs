//! The timely operators that turn window updates into `usage_windows` files and epochs
//! into commit records.

use om_model::{Aggregation, Decimal9, Micros, WindowKey};
use om_operators::SumCount;
use om_sinks::commit::{CommitRecord, FileEntry};
use om_sinks::usage_table::{UsageTable, partition_path};
use om_sinks::{DataStore, FileChange};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::{Operator, OutputBuilderSession};

/// Per-epoch facts the driver loop shares with the operators of its worker.
#[derive(Debug, Default)]
pub struct EpochInfo {
    /// Watermark after each epoch (identical on every worker).
    pub watermarks: BTreeMap<u64, Option<Micros>>,
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
        /// Late events.
        late: u64,
        /// Watermark after the epoch.
        watermark: Option<Micros>,
        /// Source name and the offset the epoch ends at.
        source: (String, u64),
    },
}

/// Routes window updates by (tenant, customer), so one worker owns all windows of a
/// customer.
fn customer_route(key: &WindowKey) -> u64 {
    om_operators::route_hash(&(&key.tenant_id, &key.customer_id))
}

/// What the usage sink needs to write files.
#[derive(Clone, Debug)]
pub struct UsageSinkConfig {
    /// Where to write.
    pub store: DataStore,
    /// Runtime for the object store calls.
    pub runtime: tokio::runtime::Handle,
    /// Meter names by index.
    pub meters: Vec<String>,
    /// Meter aggregations by index.
    pub aggregations: Vec<Aggregation>,
    /// Lateness bound, for `is_final`.
    pub allowed_lateness: Micros,
    /// This worker's index.
    pub worker: usize,
}

type RowChange = ((WindowKey, (Decimal9, i64)), u64, isize);

/// One epoch's updates held until the epoch is complete.
type PendingEpoch = (Vec<(WindowKey, SumCount)>, Vec<RowChange>);

/// The usage sink: applies additive deltas and order-based row changes to this worker's
/// share of `usage_windows` epoch by epoch, and at each commit epoch rewrites the
/// partitions that changed or became final since the last commit. Emits the resulting
/// file changes at the commit epoch. It holds a capability of its own, because a commit
/// epoch may bring no update to this worker and still have to write what earlier epochs
/// changed.
pub fn usage_sink<'s>(
    additive: StreamVec<'s, u64, (WindowKey, SumCount)>,
    rows: StreamVec<'s, u64, RowChange>,
    cfg: UsageSinkConfig,
    info: Rc<RefCell<EpochInfo>>,
) -> StreamVec<'s, u64, Meta> {
    let pact_a = Exchange::new(|(k, _): &(WindowKey, SumCount)| customer_route(k));
    let pact_r = Exchange::new(|((k, _), _, _): &RowChange| customer_route(k));
    additive.binary_frontier(rows, pact_a, pact_r, "OM: UsageSink", move |cap, _info| {
        let mut cap = Some(cap);
        let mut table = UsageTable::new(cfg.aggregations.clone(), cfg.allowed_lateness);
        let mut pending: BTreeMap<u64, PendingEpoch> = BTreeMap::new();
        let mut next_commit_from = 0u64;
        move |(in_a, frontier_a), (in_r, frontier_r), output| {
            in_a.for_each(|cap, data| {
                let t = *cap.retain_least(0).expect("capability for its time").time();
                pending.entry(t).or_default().0.append(data);
            });
            in_r.for_each(|_cap, data| {
                // A row change carries its own time, which may follow its message's.
                for change in data.drain(..) {
                    pending.entry(change.1).or_default().1.push(change);
                }
            });
            loop {
                let next_update = pending.keys().next().copied();
                let next_commit = info
                    .borrow()
                    .commits
                    .range(next_commit_from..)
                    .next()
                    .copied();
                let Some(t) = next_update.into_iter().chain(next_commit).min() else {
                    break;
                };
                if frontier_a.less_equal(&t) || frontier_r.less_equal(&t) {
                    break;
                }
                if let Some((adds, row_changes)) = pending.remove(&t) {
                    for (key, d) in adds {
                        table.add(key, d.sum, d.count);
                    }
                    // Retractions first, so a row replaced within one epoch ends up set.
                    let (minus, plus): (Vec<_>, Vec<_>) =
                        row_changes.into_iter().partition(|c| c.2 < 0);
                    for ((key, (value, events)), _, diff) in minus.into_iter().chain(plus) {
                        table.set_row(key, value, events, diff);
                    }
                }
                if next_commit != Some(t) {
                    continue;
                }
                next_commit_from = t + 1;
                let watermark = info.borrow().watermarks.get(&t).copied().flatten();
                let at = cap
                    .as_ref()
                    .expect("held until the inputs are done")
                    .delayed(&t);
                let mut session = output.session(&at);
                for p in table.take_partitions_to_write(watermark) {
                    let slot = format!("{}/w{}", partition_path(&p), cfg.worker);
                    let rows = table.rows(&p, watermark);
                    let file = if rows.is_empty() {
                        None
                    } else {
                        let n = rows.len() as u64;
                        let batch = om_sinks::encode::usage_windows(rows.into_iter(), &cfg.meters)
                            .expect("usage rows match the schema");
                        let path = format!("usage_windows/{slot}-e{t:06}.parquet");
                        cfg.runtime
                            .block_on(om_sinks::parquet::write(&cfg.store, &path, &batch))
                            .unwrap_or_else(|e| panic!("writing {path}: {e}"));
                        Some(FileEntry { path, rows: n })
                    };
                    session.give(Meta::File(FileChange {
                        table: "usage_windows".into(),
                        slot,
                        file,
                    }));
                }
            }
            let lowest = frontier_a
                .frontier()
                .iter()
                .chain(frontier_r.frontier().iter())
                .min()
                .copied();
            match lowest {
                Some(t) => {
                    if let Some(c) = cap.as_mut() {
                        c.downgrade(&t);
                    }
                }
                None => cap = None,
            }
        }
    })
}

/// The committer: gathers every worker's file changes and counts for an epoch on worker
/// 0 and, once the epoch is complete everywhere and it is a commit epoch, writes the
/// commit record covering it and the epochs since the previous commit. `last` holds the
/// newest record written.
pub fn committer<'s>(
    meta: StreamVec<'s, u64, Meta>,
    store: DataStore,
    runtime: tokio::runtime::Handle,
    last: Rc<RefCell<Option<CommitRecord>>>,
    info: Rc<RefCell<EpochInfo>>,
) -> StreamVec<'s, u64, ()> {
    meta.unary_frontier(Exchange::new(|_: &Meta| 0), "OM: Committer", move |_cap, _info| {
        let mut record = CommitRecord::default();
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
                        Meta::Stats { accepted, rejected, duplicates, late, watermark: w, source } => {
                            record.counts.accepted += accepted;
                            record.counts.rejected += rejected;
                            record.counts.duplicates += duplicates;
                            record.counts.late += late;
                            watermark = watermark.max(w);
                            let offset = record.sources.entry(source.0).or_insert(0);
                            *offset = (*offset).max(source.1);
                        }
                    }
                }
                record.epoch = t;
                record.apply(changes);
                record.watermark_micros = watermark;
                record.watermark = watermark.map(om_model::time::format_micros);
                if !info.borrow().commits.contains(&t) {
                    continue;
                }
                record.committed_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
                runtime.block_on(record.write(&store)).unwrap_or_else(|e| panic!("committing epoch {t}: {e}"));
                *last.borrow_mut() = Some(record.clone());
            }
        }
    })
}
