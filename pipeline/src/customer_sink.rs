//! The customer sink: owns every per-customer view of the customers routed to this
//! worker and writes their tables.
//!
//! - credits ([`CreditState`]): `credit_grants`, `credit_balances`, `credit_ledger`;
//! - plans ([`Subscriptions`]) with usage and balances: `entitlements`, and
//!   `subscriptions` (the plan history, for invoices);
//! - hourly usage of the sum and count meters ([`MeterSeries`]): `forecasts`, and
//!   `anomaly_scores` by UTC day;
//! - model calls ([`CostState`]): `costs` by UTC day.
//!
//! Inputs: burns, hourly usage, model calls and customer names, routed by customer;
//! commands, broadcast to every worker (a grant or subscription is kept by its
//! customer's owner, a void by everyone, since a void names only the grant). Epoch by
//! epoch, in time order, it folds them into the state. At each commit epoch it rewrites
//! this worker's file (slot `w<worker>`) of each whole-table view when anything changed
//! or the watermark moved (they are "as of" the watermark), rewrites the day files of
//! the day-partitioned views (`credit_ledger`, `anomaly_scores`, `costs`) whose days
//! changed (slot `day/<day>/w<worker>`), and, in a job with checkpoints, saves the state.

use crate::checkpoint::{self, Chain, EpochLog};
use crate::dataflow::{EpochInfo, EpochSchedule, Meta, follow_inputs};
use crate::live::{CustomerLive, LiveViews, WorkerLive};
use om_model::credit::BalanceRow;
use om_model::views::EntitlementRow;
use om_model::{Command, Config, Decimal9, Micros, WindowSize, fingerprint, time};
use om_operators::entitlements::{self, Standing};
use om_operators::meter_series::RowNames;
use om_operators::{
    BurnUpdate, CostState, CostUpdate, CreditState, HourUpdate, MeterSeries, NameRecord,
    Subscriptions,
};
use om_sinks::commit::FileEntry;
use om_sinks::encode::RecordBatch;
use om_sinks::{DataStore, FileChange, Uploads};
use rustc_hash::FxHashMap;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::Operator;

/// What readers send the customer sink of a customer's owner.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum CustomerInput {
    /// An accepted event's burn.
    Burn(BurnUpdate),
    /// An epoch's usage of a sum or count meter in one hour.
    Hour(HourUpdate),
    /// An epoch's model calls of one (day, provider, model); boxed, as the rarest and
    /// largest input, to keep every other input small.
    Cost(Box<CostUpdate>),
    /// A customer's names (a [`NameRecord::Customer`]).
    Name(NameRecord),
}

impl CustomerInput {
    /// The routing hash: the customer's fingerprint.
    pub fn route(&self) -> u64 {
        match self {
            CustomerInput::Burn(b) => b.customer,
            CustomerInput::Hour(h) => h.customer,
            CustomerInput::Cost(c) => c.customer,
            CustomerInput::Name(n) => n.route(),
        }
    }
}

/// The worker that owns a customer: the same rule as timely's exchange by fingerprint.
pub fn owner(customer: u64, peers: usize) -> usize {
    (customer % peers as u64) as usize
}

/// Every per-customer view of one worker: what the sink checkpoints.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct CustomerViews {
    /// Grants and burns.
    pub credits: CreditState,
    /// Hourly usage of the sum and count meters.
    pub series: MeterSeries,
    /// Model calls of the days that are not final.
    pub costs: CostState,
    /// Plans.
    pub subscriptions: Subscriptions,
    /// Customer fingerprint -> (tenant, customer).
    pub names: BTreeMap<u64, (String, String)>,
    /// Subscriptions changed since the last write.
    #[serde(skip)]
    plans_changed: bool,
}

/// What the customer sink needs to write files.
#[derive(Debug)]
pub struct CustomerSinkConfig {
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
    pub restore: Option<CustomerRestore>,
    /// Where to publish each commit's balances and entitlements for live reads
    /// (`openmonetize serve`).
    pub live: Option<Arc<LiveViews>>,
    /// The epoch and watermark of the commit the job resumes from, if any.
    pub resumed: Option<(u64, Option<Micros>)>,
}

/// One entry of the customer sink's epoch log (its checkpoint deltas).
#[derive(Debug, serde::Deserialize)]
pub enum CustomerEntry {
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

/// A [`CustomerEntry`] by reference, in its layout.
#[derive(serde::Serialize)]
enum CustomerEntryRef<'a> {
    Epoch {
        inputs: &'a [CustomerInput],
        commands: &'a [Command],
    },
    Commit {
        now: Option<Micros>,
        closed: Option<Micros>,
    },
}

/// The customer sink's checkpoint as loaded.
pub type CustomerRestore = checkpoint::Replay<CustomerViews, CustomerEntry>;

/// The customer sink (see the module docs); `commands` must already be broadcast.
pub fn customer_sink<'s>(
    input: StreamVec<'s, u64, CustomerInput>,
    commands: StreamVec<'s, u64, Command>,
    cfg: CustomerSinkConfig,
    info: Rc<RefCell<EpochInfo>>,
) -> StreamVec<'s, u64, Meta> {
    let pact = Exchange::new(CustomerInput::route);
    let mut cfg = cfg;
    input.binary_frontier(
        commands,
        pact,
        Pipeline,
        "OM: CustomerSink",
        move |cap, _info| {
            let mut cap = Some(cap);
            let meters: Vec<String> = cfg.config.meters.iter().map(|m| m.name.clone()).collect();
            let mut views = CustomerViews::default();
            let mut chain = Chain::new("customers", cfg.worker);
            let mut log = EpochLog::default();
            if let Some(saved) = cfg.restore.take() {
                views = saved.base;
                // The commits after the base, replayed as they ran (their files exist):
                // what changes state at a commit is the series' change flag and the
                // day tables, which forget final days; the whole tables only refresh
                // caches, and are rebuilt at the first new commit anyway.
                for entry in saved.log {
                    match entry {
                        CustomerEntry::Epoch { inputs, commands } => {
                            for i in inputs {
                                views.apply(i);
                            }
                            for c in commands {
                                views.command(c, cfg.worker, cfg.peers);
                            }
                        }
                        CustomerEntry::Commit { now, closed } => {
                            views.series.take_changed();
                            views.plans_changed = false;
                            // The ledger's day files on record follow from the replays:
                            // which days have rows, and the rows written.
                            drop(views.credits.tables(now));
                            drop(day_tables(&mut views, now, closed, &cfg.config, &meters));
                        }
                    }
                }
                chain = saved.chain;
            }
            // A resumed job answers live reads from its checkpoint at once, not only
            // after its first new commit (the files are rewritten at that commit).
            if let (Some(live), Some((epoch, now))) = (&cfg.live, cfg.resumed) {
                let publish = Some((&**live, cfg.worker, epoch));
                drop(whole_tables(&mut views, now, &cfg.config, &meters, publish));
                live.processed(cfg.worker, epoch);
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
                        if cfg.checkpoints {
                            log.push(&CustomerEntryRef::Epoch {
                                inputs: &inputs,
                                commands: &commands,
                            });
                        }
                        for i in inputs {
                            views.apply(i);
                        }
                        for c in commands {
                            views.command(c, cfg.worker, cfg.peers);
                        }
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
                    if cfg.checkpoints {
                        log.push(&CustomerEntryRef::Commit { now, closed });
                    }
                    let at = cap
                        .as_ref()
                        .expect("held until the inputs are done")
                        .delayed(&t);
                    let mut session = output.session(&at);
                    let mut files = Vec::new();
                    let series_changed = views.series.take_changed();
                    if views.credits.changed()
                        || series_changed
                        || std::mem::take(&mut views.plans_changed)
                        || written_at != Some(now)
                    {
                        written_at = Some(now);
                        let publish = cfg.live.as_deref().map(|live| (live, cfg.worker, t));
                        files.extend(whole_tables(&mut views, now, &cfg.config, &meters, publish));
                    }
                    if let Some(live) = &cfg.live {
                        live.processed(cfg.worker, t);
                    }
                    files.extend(day_tables(&mut views, now, closed, &cfg.config, &meters));
                    // Written in the background while the next file is encoded; named
                    // to the committer only once all of them are written.
                    let mut uploads = Uploads::new(&cfg.runtime);
                    let mut changes = Vec::new();
                    for (table, slot, rows, batch) in files {
                        let slot = format!("{slot}w{}", cfg.worker);
                        let file = (rows > 0).then(|| {
                            let path = format!("{table}/{slot}-e{t:06}.parquet");
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
                    if cfg.checkpoints {
                        changes.extend(
                            chain
                                .save(&cfg.store, &cfg.runtime, t, (&views, None), log.take())
                                .unwrap_or_else(|e| panic!("{e:#}")),
                        );
                    }
                    uploads.finish().unwrap_or_else(|e| panic!("{e}"));
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

/// The views that are one file per worker, as of `now`: `credit_grants`,
/// `credit_balances`, `entitlements`, `subscriptions` and `forecasts`; and the
/// `credit_ledger` day files whose rows changed (computed with the other credit tables).
/// With `publish` = (live views, worker, epoch), also publishes the balances and
/// entitlements for live reads.
fn whole_tables(
    views: &mut CustomerViews,
    now: Option<Micros>,
    config: &Config,
    meters: &[String],
    publish: Option<(&LiveViews, usize, u64)>,
) -> Vec<TableFile> {
    let mut files = Vec::new();
    let tables = views.credits.tables(now);
    let balances: BTreeMap<(&str, &str), Decimal9> = tables
        .balances
        .iter()
        .map(|b| ((b.tenant_id.as_str(), b.customer_id.as_str()), b.balance))
        .collect();
    let standing = CustomerStanding {
        series: &views.series,
        names: &views.names,
        balances,
        meters,
        month: now.map(|n| WindowSize::Month.start(n)),
    };
    let entitlement_rows: Vec<EntitlementRow<'_>> = if config.plans.is_empty() {
        Vec::new()
    } else {
        entitlements::rows(
            views
                .names
                .iter()
                .map(|(&fp, (t, c))| (fp, t.as_str(), c.as_str())),
            &config.plans,
            &views.subscriptions,
            now,
            &standing,
        )
    };
    if let Some((live, worker, epoch)) = publish {
        live.publish(
            worker,
            snapshot(
                epoch,
                now,
                &views.names,
                &tables.balances,
                &entitlement_rows,
            ),
        );
    }
    files.push((
        "credit_grants",
        String::new(),
        tables.grants.len(),
        om_sinks::encode::credit_grants(&tables.grants),
    ));
    files.push((
        "credit_balances",
        String::new(),
        tables.balances.len(),
        om_sinks::encode::credit_balances(&tables.balances, now),
    ));
    for (day, rows) in &tables.ledger_days {
        files.push((
            "credit_ledger",
            day_slot(*day),
            rows.len(),
            om_sinks::encode::credit_ledger(rows),
        ));
    }
    files.push((
        "entitlements",
        String::new(),
        entitlement_rows.len(),
        om_sinks::encode::entitlements(&entitlement_rows, now),
    ));
    let subscription_rows: Vec<_> = views
        .subscriptions
        .all()
        .filter_map(|(fp, from, plan, to)| {
            let (t, c) = views.names.get(&fp)?;
            Some((t.as_str(), c.as_str(), plan, from, to))
        })
        .collect();
    files.push((
        "subscriptions",
        String::new(),
        subscription_rows.len(),
        om_sinks::encode::subscriptions(&subscription_rows),
    ));
    if config.forecasts
        && let Some(now) = now
    {
        let names = RowNames {
            customers: &views.names,
            meters,
        };
        let rows = views.series.forecast_rows(now, &names);
        files.push((
            "forecasts",
            String::new(),
            rows.len(),
            om_sinks::encode::forecasts(&rows),
        ));
    }
    files
}

/// The live snapshot of one worker's customers: every customer it knows by name, with
/// its balance row (if it has one) and its entitlement rows.
fn snapshot(
    epoch: u64,
    now: Option<Micros>,
    names: &BTreeMap<u64, (String, String)>,
    balances: &[BalanceRow],
    entitlements: &[EntitlementRow<'_>],
) -> WorkerLive {
    // Gathered under borrowed names (a lookup costs no allocation), owned once at the end.
    let mut customers: FxHashMap<(&str, &str), CustomerLive> = names
        .values()
        .map(|(t, c)| ((t.as_str(), c.as_str()), CustomerLive::default()))
        .collect();
    for b in balances {
        customers
            .entry((b.tenant_id.as_str(), b.customer_id.as_str()))
            .or_default()
            .balance = Some(b.clone());
    }
    for e in entitlements {
        customers
            .entry((e.tenant_id, e.customer_id))
            .or_default()
            .entitlements
            .push(e.into());
    }
    let customers = customers
        .into_iter()
        .map(|((t, c), live)| ((t.to_owned(), c.to_owned()), live))
        .collect();
    WorkerLive {
        epoch,
        as_of: now,
        customers,
    }
}

/// The slot prefix of a day partition, e.g. `day/2026-11-05/`.
fn day_slot(day: Micros) -> String {
    format!("day/{}/", &time::format_micros(day)[..10])
}

/// The day files of `anomaly_scores` and `costs` whose days changed.
fn day_tables(
    views: &mut CustomerViews,
    now: Option<Micros>,
    closed: Option<Micros>,
    config: &Config,
    meters: &[String],
) -> Vec<TableFile> {
    let lateness = config.pipeline.allowed_lateness;
    let mut files = Vec::new();
    if config.anomaly.enabled {
        let names = RowNames {
            customers: &views.names,
            meters,
        };
        for (day, rows) in
            views
                .series
                .take_anomaly_days(closed, now, lateness, &config.anomaly, &names)
        {
            files.push((
                "anomaly_scores",
                day_slot(day),
                rows.len(),
                om_sinks::encode::anomaly_scores(&rows),
            ));
        }
    }
    if config.costs.enabled {
        for (day, rows) in views
            .costs
            .take_days(closed, lateness, &config.costs, &views.names)
        {
            files.push((
                "costs",
                day_slot(day),
                rows.len(),
                om_sinks::encode::costs(&rows),
            ));
        }
    }
    files
}

/// Usage this month and balances, for `entitlements`.
struct CustomerStanding<'a> {
    series: &'a MeterSeries,
    names: &'a BTreeMap<u64, (String, String)>,
    balances: BTreeMap<(&'a str, &'a str), Decimal9>,
    meters: &'a [String],
    month: Option<Micros>,
}

impl Standing for CustomerStanding<'_> {
    fn month_usage(&self, customer: u64, meter: &str) -> Decimal9 {
        let (Some(month), Some(index)) = (self.month, self.meters.iter().position(|m| m == meter))
        else {
            return Decimal9::ZERO;
        };
        self.series.month_usage(customer, index as u16, month)
    }

    fn balance(&self, customer: u64) -> Decimal9 {
        self.names
            .get(&customer)
            .and_then(|(t, c)| self.balances.get(&(t.as_str(), c.as_str())))
            .copied()
            .unwrap_or(Decimal9::ZERO)
    }
}

impl CustomerViews {
    /// Folds one reader input.
    fn apply(&mut self, input: CustomerInput) {
        match input {
            CustomerInput::Burn(b) => self.credits.burn(&b),
            CustomerInput::Hour(h) => self.series.apply(&h),
            CustomerInput::Cost(c) => self.costs.apply(&c),
            CustomerInput::Name(NameRecord::Customer {
                fingerprint,
                tenant_id,
                customer_id,
            }) => {
                self.credits.name(fingerprint, &tenant_id, &customer_id);
                if let std::collections::btree_map::Entry::Vacant(v) = self.names.entry(fingerprint)
                {
                    v.insert((tenant_id, customer_id));
                    // A new customer has entitlement rows (and a live snapshot entry).
                    self.plans_changed = true;
                }
            }
            CustomerInput::Name(NameRecord::Dimensions { .. }) => {}
        }
    }

    /// Folds one command: grants and subscriptions of the customers this worker owns,
    /// every void. Retractions reach the views as negated inputs instead.
    fn command(&mut self, command: Command, worker: usize, peers: usize) {
        match command {
            Command::Grant(g) => {
                let customer = fingerprint::customer(&g.tenant_id, &g.customer_id);
                if owner(customer, peers) == worker {
                    self.names
                        .entry(customer)
                        .or_insert_with(|| (g.tenant_id.clone(), g.customer_id.clone()));
                    self.credits.grant(customer, g);
                }
            }
            Command::VoidGrant {
                tenant_id,
                grant_id,
                at,
            } => self.credits.void(&tenant_id, &grant_id, at),
            Command::Subscribe {
                tenant_id,
                customer_id,
                plan,
                effective_at,
            } => {
                let customer = fingerprint::customer(&tenant_id, &customer_id);
                if owner(customer, peers) == worker {
                    self.subscriptions.subscribe(customer, effective_at, &plan);
                    self.names
                        .entry(customer)
                        .or_insert((tenant_id, customer_id));
                    self.plans_changed = true;
                }
            }
            Command::RetractEvent { .. } => {}
        }
    }
}
