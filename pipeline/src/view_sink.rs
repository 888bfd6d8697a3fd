//! The view sink: the one timely operator that runs every per-customer view
//! ([`om_operators::view`]) of the customers routed to this worker and writes their
//! tables.
//!
//! Inputs: the readers' [`CustomerInput`]s (burns, hourly usage, model calls, customer
//! names), exchanged by customer; commands, broadcast to every worker. Epoch by epoch, in
//! time order, it folds them into [`Views`]. At each commit epoch it asks every view for
//! the rows of the partitions it rewrites ([`View::commit`](om_operators::view::View)),
//! encodes each as one Parquet file (slot `w<worker>` for a table that is one file per
//! worker, `day/<day>/w<worker>` for one by UTC day), writes them, names them to the
//! committer, publishes the balances and entitlements for live reads, and, in a job with
//! checkpoints, saves the views.
//!
//! The whole-table views are rewritten when anything they show changed or the watermark
//! moved (their rows are "as of" it); the day-partitioned ones write their changed days
//! at every commit.

use crate::checkpoint::{self, Chain, EpochLog};
use crate::dataflow::{EpochInfo, EpochSchedule, Meta, follow_inputs};
use crate::live::{CustomerLive, LiveEntitlement, LiveViews, WorkerLive};
use om_model::credit::{BalanceRow, GrantRow, LedgerRow};
use om_model::views::{AnomalyRow, CostRow, EntitlementRow, ForecastRow, SubscriptionRow};
use om_model::{Command, Config, Micros, time};
use om_operators::view::{Commit, CustomerInput, Discard, TableOut, Views};
use om_sinks::commit::FileEntry;
use om_sinks::encode::{self, RecordBatch};
use om_sinks::{DataStore, FileChange, Uploads};
use rustc_hash::FxHashMap;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::Operator;

/// What the view sink needs to write files.
#[derive(Debug)]
pub struct ViewSinkConfig {
    /// Where to write.
    pub store: DataStore,
    /// Runtime for the object store calls.
    pub runtime: tokio::runtime::Handle,
    /// The pipeline config (plans, views' settings, meter names).
    pub config: Arc<Config>,
    /// This worker's index.
    pub worker: usize,
    /// Number of workers.
    pub peers: usize,
    /// Save a checkpoint of the state at every commit epoch.
    pub checkpoints: bool,
    /// The checkpoint to start from.
    pub restore: Option<ViewRestore>,
    /// Where to publish each commit's balances and entitlements for live reads
    /// (`openmonetize serve`).
    pub live: Option<Arc<LiveViews>>,
    /// The epoch and watermark of the commit the job resumes from, if any.
    pub resumed: Option<(u64, Option<Micros>)>,
}

/// One entry of the view sink's epoch log (its checkpoint deltas).
#[derive(Debug, serde::Deserialize)]
pub enum ViewEntry {
    /// An epoch's input, as it was processed.
    Epoch {
        /// Inputs, applied first, in this order.
        inputs: Vec<CustomerInput>,
        /// Commands, in this order.
        commands: Vec<Command>,
    },
    /// A commit.
    Commit {
        /// The latest watermark ("now" of the views).
        now: Option<Micros>,
        /// The closed watermark.
        closed: Option<Micros>,
    },
}

/// A [`ViewEntry`] by reference, in its layout.
#[derive(serde::Serialize)]
enum ViewEntryRef<'a> {
    Epoch {
        inputs: &'a [CustomerInput],
        commands: &'a [Command],
    },
    Commit {
        now: Option<Micros>,
        closed: Option<Micros>,
    },
}

/// The view sink's checkpoint as loaded.
pub type ViewRestore = checkpoint::Replay<Views, ViewEntry>;

/// The sink's fixed settings, shared by its steps.
struct Sink {
    cfg: ViewSinkConfig,
    meters: Vec<String>,
}

impl Sink {
    /// A commit at these watermarks as the views see it (writing everything).
    fn commit_at(&self, now: Option<Micros>, closed: Option<Micros>) -> Commit<'_> {
        Commit {
            now,
            closed,
            whole: true,
            days: true,
            config: &self.cfg.config,
            meters: &self.meters,
        }
    }

    /// Applies one epoch's inputs, then its commands.
    fn apply_epoch(&self, views: &mut Views, inputs: &[CustomerInput], commands: &[Command]) {
        for i in inputs {
            views.apply(i, &self.cfg.config);
        }
        for c in commands {
            views.command(c, self.cfg.worker, self.cfg.peers);
        }
    }

    /// Rebuilds the views from a checkpoint: the base, then the epochs after it and
    /// their commits, replayed as they ran (their files exist, so the rows go nowhere).
    fn restore(&self, saved: ViewRestore) -> (Views, Chain) {
        let mut views = saved.base;
        for entry in saved.log {
            match entry {
                ViewEntry::Epoch { inputs, commands } => {
                    self.apply_epoch(&mut views, &inputs, &commands)
                }
                ViewEntry::Commit { now, closed } => {
                    views.take_changed();
                    views.commit(&self.commit_at(now, closed), &mut Discard);
                    views.release();
                }
            }
        }
        (views, saved.chain)
    }
}

/// The view sink (see the module docs); `commands` must already be broadcast.
pub fn view_sink<'s>(
    input: StreamVec<'s, u64, CustomerInput>,
    commands: StreamVec<'s, u64, Command>,
    cfg: ViewSinkConfig,
    info: Rc<RefCell<EpochInfo>>,
) -> StreamVec<'s, u64, Meta> {
    let pact = Exchange::new(CustomerInput::route);
    let mut cfg = cfg;
    input.binary_frontier(
        commands,
        pact,
        Pipeline,
        "OM: ViewSink",
        move |cap, _info| {
            let mut cap = Some(cap);
            let restore = cfg.restore.take();
            let sink = Sink {
                meters: cfg.config.meters.iter().map(|m| m.name.clone()).collect(),
                cfg,
            };
            let (mut views, mut chain) = match restore {
                Some(saved) => sink.restore(saved),
                None => (Views::default(), Chain::new("customers", sink.cfg.worker)),
            };
            let mut log = EpochLog::default();
            // A resumed job answers live reads from its checkpoint at once, not only
            // after its first new commit (the files are rewritten at that commit).
            if let (Some(live), Some((epoch, now))) = (&sink.cfg.live, sink.cfg.resumed) {
                let mut out = Files::new(sink.cfg.worker, true);
                let at = Commit {
                    days: false,
                    ..sink.commit_at(now, None)
                };
                views.commit(&at, &mut out);
                live.publish(sink.cfg.worker, out.snapshot(epoch, now, &views));
                live.processed(sink.cfg.worker, epoch);
                views.release();
            }
            // The watermark the whole-table files on record were computed at.
            let mut written_at: Option<Option<Micros>> = None;
            let mut pending: BTreeMap<u64, (Vec<CustomerInput>, Vec<Command>)> = BTreeMap::new();
            let mut schedule = EpochSchedule::default();
            move |(in_c, frontier_c), (in_k, frontier_k), output| {
                in_c.for_each(|cap, data| {
                    let t = *cap.retain_least(0).expect("capability for its time").time();
                    pending.entry(t).or_default().0.append(data);
                });
                in_k.for_each(|cap, data| {
                    let t = *cap.retain_least(0).expect("capability for its time").time();
                    pending.entry(t).or_default().1.append(data);
                });
                let frontiers = [frontier_c, frontier_k];
                while let Some((t, commits)) =
                    schedule.next(pending.keys().next().copied(), &info, &frontiers)
                {
                    if let Some((inputs, commands)) = pending.remove(&t) {
                        if sink.cfg.checkpoints {
                            log.push(&ViewEntryRef::Epoch {
                                inputs: &inputs,
                                commands: &commands,
                            });
                        }
                        sink.apply_epoch(&mut views, &inputs, &commands);
                    }
                    if !commits {
                        continue;
                    }
                    let (now, closed) = {
                        let info = info.borrow();
                        (
                            info.latest.get(&t).copied().flatten(),
                            info.watermarks.get(&t).copied().flatten(),
                        )
                    };
                    if sink.cfg.checkpoints {
                        log.push(&ViewEntryRef::Commit { now, closed });
                    }
                    let changed = views.take_changed();
                    let whole = changed || written_at != Some(now);
                    if whole {
                        written_at = Some(now);
                    }
                    let mut out = Files::new(sink.cfg.worker, sink.cfg.live.is_some());
                    views.commit(
                        &Commit {
                            whole,
                            ..sink.commit_at(now, closed)
                        },
                        &mut out,
                    );
                    if let Some(live) = &sink.cfg.live {
                        if whole {
                            live.publish(sink.cfg.worker, out.snapshot(t, now, &views));
                        }
                        live.processed(sink.cfg.worker, t);
                    }
                    views.release();
                    let at = cap
                        .as_ref()
                        .expect("held until the inputs are done")
                        .delayed(&t);
                    let mut changes = out.write(&sink.cfg, t);
                    if sink.cfg.checkpoints {
                        changes.extend(
                            chain
                                .save(
                                    &sink.cfg.store,
                                    &sink.cfg.runtime,
                                    t,
                                    (&views, None),
                                    log.take(),
                                )
                                .unwrap_or_else(|e| panic!("{e:#}")),
                        );
                    }
                    let mut session = output.session(&at);
                    for c in changes {
                        session.give(Meta::File(c));
                    }
                }
                follow_inputs(&mut cap, &frontiers);
            }
        },
    )
}

/// A table file to write: (table, slot prefix, rows, batch).
type TableFile = (&'static str, String, usize, om_sinks::Result<RecordBatch>);

/// The [`TableOut`] of the job: each call becomes one file, encoded at once; with live
/// reads on, it also keeps the entitlement rows for the snapshot.
struct Files {
    worker: usize,
    files: Vec<TableFile>,
    entitlements: Option<FxHashMap<(String, String), Vec<LiveEntitlement>>>,
}

impl Files {
    fn new(worker: usize, live: bool) -> Self {
        Files {
            worker,
            files: Vec::new(),
            entitlements: live.then(FxHashMap::default),
        }
    }

    fn add(
        &mut self,
        table: &'static str,
        slot: String,
        rows: usize,
        batch: om_sinks::Result<RecordBatch>,
    ) {
        self.files.push((table, slot, rows, batch));
    }

    /// The live snapshot of this worker's customers: every customer it knows by name,
    /// with its balance row (if it has one) and its entitlement rows.
    fn snapshot(&mut self, epoch: u64, now: Option<Micros>, views: &Views) -> WorkerLive {
        let mut entitlements = self.entitlements.take().unwrap_or_default();
        let mut customers: FxHashMap<(String, String), CustomerLive> = views
            .customers
            .names
            .values()
            .map(|key| {
                let live = CustomerLive {
                    balance: None,
                    entitlements: entitlements.remove(key).unwrap_or_default(),
                };
                (key.clone(), live)
            })
            .collect();
        for b in &views.customers.balances {
            customers
                .entry((b.tenant_id.clone(), b.customer_id.clone()))
                .or_default()
                .balance = Some(b.clone());
        }
        WorkerLive {
            epoch,
            as_of: now,
            customers,
        }
    }

    /// Writes the files (in the background, each while the next is encoded) and
    /// returns their changes once all of them are written.
    fn write(self, cfg: &ViewSinkConfig, epoch: u64) -> Vec<FileChange> {
        let mut uploads = Uploads::new(&cfg.runtime);
        let mut changes = Vec::with_capacity(self.files.len());
        for (table, slot, rows, batch) in self.files {
            let slot = format!("{slot}w{}", self.worker);
            let file = (rows > 0).then(|| {
                let path = format!("{table}/{slot}-e{epoch:06}.parquet");
                let bytes = batch
                    .and_then(|batch| om_sinks::parquet::encode(&batch))
                    .unwrap_or_else(|e| panic!("encoding {path}: {e}"));
                uploads.put(&cfg.store, path.clone(), bytes);
                FileEntry {
                    path,
                    rows: rows as u64,
                }
            });
            changes.push(FileChange {
                table: table.into(),
                slot,
                file,
            });
        }
        uploads.finish().unwrap_or_else(|e| panic!("{e}"));
        changes
    }
}

/// The slot prefix of a day partition, e.g. `day/2026-11-05/`.
fn day_slot(day: Micros) -> String {
    format!("day/{}/", &time::format_micros(day)[..10])
}

impl TableOut for Files {
    fn credit_grants(&mut self, rows: &[&GrantRow]) {
        self.add(
            "credit_grants",
            String::new(),
            rows.len(),
            encode::credit_grants(rows),
        );
    }

    fn credit_balances(&mut self, rows: &[BalanceRow], as_of: Option<Micros>) {
        self.add(
            "credit_balances",
            String::new(),
            rows.len(),
            encode::credit_balances(rows, as_of),
        );
    }

    fn credit_ledger(&mut self, day: Micros, rows: &[LedgerRow<'_>]) {
        self.add(
            "credit_ledger",
            day_slot(day),
            rows.len(),
            encode::credit_ledger(rows),
        );
    }

    fn entitlements(&mut self, rows: &[EntitlementRow<'_>], as_of: Option<Micros>) {
        if let Some(live) = &mut self.entitlements {
            for r in rows {
                live.entry((r.tenant_id.to_string(), r.customer_id.to_string()))
                    .or_default()
                    .push(r.into());
            }
        }
        self.add(
            "entitlements",
            String::new(),
            rows.len(),
            encode::entitlements(rows, as_of),
        );
    }

    fn subscriptions(&mut self, rows: &[SubscriptionRow<'_>]) {
        self.add(
            "subscriptions",
            String::new(),
            rows.len(),
            encode::subscriptions(rows),
        );
    }

    fn forecasts(&mut self, rows: &[ForecastRow<'_>]) {
        self.add(
            "forecasts",
            String::new(),
            rows.len(),
            encode::forecasts(rows),
        );
    }

    fn anomaly_scores(&mut self, day: Micros, rows: &[AnomalyRow<'_>]) {
        self.add(
            "anomaly_scores",
            day_slot(day),
            rows.len(),
            encode::anomaly_scores(rows),
        );
    }

    fn costs(&mut self, day: Micros, rows: &[CostRow<'_>]) {
        self.add("costs", day_slot(day), rows.len(), encode::costs(rows));
    }
}
