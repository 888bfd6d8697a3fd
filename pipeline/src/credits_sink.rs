//! The credits sink: owns the credit state ([`CreditState`]) of the customers routed to
//! this worker and writes `credit_grants`, `credit_balances` and `credit_ledger`.
//!
//! Inputs: burns and customer names, routed by customer; commands, broadcast to every
//! worker (a grant is kept by its customer's owner, a void by everyone, since a void
//! names only the grant). Epoch by epoch, in time order, it folds them into the state;
//! at each commit epoch where anything changed (inputs, or the watermark the tables are
//! computed at) it rewrites this worker's file of each table (slot `w<worker>`) and, in
//! a job with checkpoints, saves the state.

use crate::checkpoint;
use crate::dataflow::{EpochInfo, EpochSchedule, Meta, follow_inputs};
use om_model::{Command, fingerprint};
use om_operators::{BurnUpdate, CreditState, NameRecord};
use om_sinks::commit::FileEntry;
use om_sinks::{DataStore, FileChange};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::Operator;

/// What readers send the credits sink of a customer's owner.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum CreditInput {
    /// An accepted event's burn.
    Burn(BurnUpdate),
    /// A customer's names (a [`NameRecord::Customer`]).
    Name(NameRecord),
}

impl CreditInput {
    /// The routing hash: the customer's fingerprint.
    pub fn route(&self) -> u64 {
        match self {
            CreditInput::Burn(b) => b.customer,
            CreditInput::Name(n) => n.route(),
        }
    }
}

/// The worker that owns a customer: the same rule as timely's exchange by fingerprint.
pub fn owner(customer: u64, peers: usize) -> usize {
    (customer % peers as u64) as usize
}

/// What the credits sink needs to write files.
#[derive(Debug)]
pub struct CreditSinkConfig {
    /// Where to write.
    pub store: DataStore,
    /// Runtime for the object store calls.
    pub runtime: tokio::runtime::Handle,
    /// This worker's index.
    pub worker: usize,
    /// Number of workers.
    pub peers: usize,
    /// Save a checkpoint of the state at every commit epoch.
    pub checkpoints: bool,
    /// The checkpoint to start from.
    pub restore: Option<CreditState>,
}

/// The credits sink (see the module docs); `commands` must already be broadcast.
pub fn credits_sink<'s>(
    input: StreamVec<'s, u64, CreditInput>,
    commands: StreamVec<'s, u64, Command>,
    cfg: CreditSinkConfig,
    info: Rc<RefCell<EpochInfo>>,
) -> StreamVec<'s, u64, Meta> {
    let pact = Exchange::new(CreditInput::route);
    let mut cfg = cfg;
    input.binary_frontier(
        commands,
        pact,
        Pipeline,
        "OM: CreditsSink",
        move |cap, _info| {
            let mut cap = Some(cap);
            let mut state = cfg.restore.take().unwrap_or_default();
            // The watermark the files on record were computed at (none written yet).
            let mut written_at: Option<Option<i64>> = None;
            let mut pending: BTreeMap<u64, (Vec<CreditInput>, Vec<Command>)> = BTreeMap::new();
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
                        for i in inputs {
                            match i {
                                CreditInput::Burn(b) => state.burn(&b),
                                CreditInput::Name(NameRecord::Customer {
                                    fingerprint,
                                    tenant_id,
                                    customer_id,
                                }) => state.name(fingerprint, &tenant_id, &customer_id),
                                CreditInput::Name(NameRecord::Dimensions { .. }) => {}
                            }
                        }
                        for c in commands {
                            apply_command(&mut state, c, cfg.worker, cfg.peers);
                        }
                    }
                    if !commits {
                        continue;
                    }
                    let now = info.borrow().latest.get(&t).copied().flatten();
                    let at = cap
                        .as_ref()
                        .expect("held until the inputs are done")
                        .delayed(&t);
                    let mut session = output.session(&at);
                    if state.changed() || written_at != Some(now) {
                        written_at = Some(now);
                        let tables = state.tables(now);
                        let slot = format!("w{}", cfg.worker);
                        let files = [
                            (
                                "credit_grants",
                                tables.grants.len(),
                                om_sinks::encode::credit_grants(&tables.grants),
                            ),
                            (
                                "credit_balances",
                                tables.balances.len(),
                                om_sinks::encode::credit_balances(&tables.balances, now),
                            ),
                            (
                                "credit_ledger",
                                tables.ledger.len(),
                                om_sinks::encode::credit_ledger(&tables.ledger),
                            ),
                        ];
                        for (table, rows, batch) in files {
                            let file = (rows > 0).then(|| {
                                let path = format!("{table}/{slot}-e{t:06}.parquet");
                                let batch =
                                    batch.unwrap_or_else(|e| panic!("encoding {path}: {e}"));
                                cfg.runtime
                                    .block_on(om_sinks::parquet::write(&cfg.store, &path, &batch))
                                    .unwrap_or_else(|e| panic!("writing {path}: {e}"));
                                FileEntry {
                                    path,
                                    rows: rows as u64,
                                }
                            });
                            session.give(Meta::File(FileChange {
                                table: table.into(),
                                slot: slot.clone(),
                                file,
                            }));
                        }
                    }
                    if cfg.checkpoints {
                        let change = checkpoint::save(
                            &cfg.store,
                            &cfg.runtime,
                            "credits",
                            cfg.worker,
                            t,
                            &state,
                        )
                        .unwrap_or_else(|e| panic!("{e:#}"));
                        session.give(Meta::File(change));
                    }
                }
                follow_inputs(&mut cap, &frontiers);
            }
        },
    )
}

/// Folds one command into this worker's state: grants of the customers it owns, every
/// void. Subscriptions and retractions are not credit inputs here.
fn apply_command(state: &mut CreditState, command: Command, worker: usize, peers: usize) {
    match command {
        Command::Grant(g) => {
            let customer = fingerprint::customer(&g.tenant_id, &g.customer_id);
            if owner(customer, peers) == worker {
                state.grant(customer, g);
            }
        }
        Command::VoidGrant {
            tenant_id,
            grant_id,
            at,
        } => state.void(&tenant_id, &grant_id, at),
        Command::Subscribe { .. } | Command::RetractEvent { .. } => {}
    }
}
