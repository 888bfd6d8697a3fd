//! Live balances and entitlements: what `GET /v1/customers/{id}/balance` and
//! `.../entitlements` answer, straight from the job's state rather than from Parquet.
//!
//! Each worker's view sink publishes, at every commit epoch, an immutable snapshot of
//! its customers' `credit_balances` and `entitlements` rows, computed from the same state
//! and at the same watermark as the rows it writes to the tables of that epoch. A reader
//! finds the customer's owner (the worker its fingerprint routes to, as in the job),
//! clones that worker's `Arc` and looks the customer up: no call into the dataflow, no
//! lock held while answering. Since a snapshot is published before the commit record of
//! its epoch is written, an ingest request answered after its commit (`?wait=commit`) is
//! visible here when the client reads it; one answered once journaled is visible from
//! the next commit on.

use om_model::credit::BalanceRow;
use om_model::views::{EntitlementRow, Reason};
use om_model::{Decimal9, Micros, fingerprint};
use om_operators::view::owner;
use rustc_hash::FxHashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// One customer's live rows.
#[derive(Clone, Debug, Default)]
pub struct CustomerLive {
    /// The `credit_balances` row; none when the customer has no grant and no burn.
    pub balance: Option<BalanceRow>,
    /// The `entitlements` rows, one per feature of the config's plans, by feature.
    pub entitlements: Vec<LiveEntitlement>,
}

/// An owned `entitlements` row (without the customer's names).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveEntitlement {
    /// Feature name.
    pub feature: String,
    /// The customer's plan now.
    pub plan: Option<String>,
    /// Whether the customer may use the feature now.
    pub has_access: bool,
    /// Metered: usage this period.
    pub usage: Option<Decimal9>,
    /// Metered: the limit per period.
    pub limit: Option<Decimal9>,
    /// Metered: what is left; credits: the balance.
    pub remaining: Option<Decimal9>,
    /// Why.
    pub reason: Reason,
}

impl From<&EntitlementRow<'_>> for LiveEntitlement {
    fn from(r: &EntitlementRow<'_>) -> Self {
        LiveEntitlement {
            feature: r.feature.to_string(),
            plan: r.plan.map(str::to_string),
            has_access: r.has_access,
            usage: r.usage,
            limit: r.limit,
            remaining: r.remaining,
            reason: r.reason,
        }
    }
}

/// One worker's snapshot.
#[derive(Debug, Default)]
pub struct WorkerLive {
    /// The epoch it was computed at.
    pub epoch: u64,
    /// The watermark it is "as of" (none before the first event).
    pub as_of: Option<Micros>,
    /// (tenant, customer) -> rows.
    pub customers: FxHashMap<(String, String), CustomerLive>,
}

/// The snapshots of every worker, shared by the job and the server.
#[derive(Debug)]
pub struct LiveViews {
    workers: Vec<RwLock<Option<Arc<WorkerLive>>>>,
    /// Per worker: replaced snapshots a request may still hold, freed by a later
    /// [`LiveViews::publish`] once nothing else holds them.
    replaced: Vec<Mutex<Vec<Arc<WorkerLive>>>>,
    /// Per worker: 1 + the last epoch whose commit it has processed (0: none yet).
    epochs: Vec<AtomicU64>,
    /// Workers whose dataflows are built (their checkpoint, if any, restored).
    started: AtomicU64,
}

/// A customer's rows with the snapshot they come from.
#[derive(Debug)]
pub struct Found {
    snapshot: Arc<WorkerLive>,
    key: (String, String),
}

impl Found {
    /// The rows.
    pub fn rows(&self) -> &CustomerLive {
        &self.snapshot.customers[&self.key]
    }

    /// The epoch of the snapshot.
    pub fn epoch(&self) -> u64 {
        self.snapshot.epoch
    }

    /// The watermark of the snapshot.
    pub fn as_of(&self) -> Option<Micros> {
        self.snapshot.as_of
    }
}

impl LiveViews {
    /// Empty snapshots for `workers` workers.
    pub fn new(workers: usize) -> Self {
        LiveViews {
            workers: (0..workers).map(|_| RwLock::new(None)).collect(),
            replaced: (0..workers).map(|_| Mutex::default()).collect(),
            epochs: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            started: AtomicU64::new(0),
        }
    }

    /// Records that a worker has built its dataflows and restored its state.
    pub fn started(&self) {
        self.started.fetch_add(1, Ordering::SeqCst);
    }

    /// Whether every worker has started: from then on, answers reflect at least the
    /// commit the job resumed from.
    pub fn ready(&self) -> bool {
        self.started.load(Ordering::SeqCst) as usize >= self.workers.len()
    }

    /// Number of workers.
    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// Replaces `worker`'s snapshot.
    ///
    /// The write lock is held for the swap only, and a replaced snapshot (a map of every
    /// customer of the worker, milliseconds to free) is freed here, on the job's thread,
    /// never by a request that happens to drop the last reference: one still in use is
    /// kept until a later publish finds it unused. Freeing it under the lock would make
    /// checks wait while a job thread frees it, longer still when the scheduler sets
    /// that lower-priority thread aside meanwhile ([`crate::priority`]).
    pub fn publish(&self, worker: usize, snapshot: WorkerLive) {
        let snapshot = Arc::new(snapshot);
        let old = self.workers[worker]
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .replace(snapshot);
        let mut replaced = self.replaced[worker]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        replaced.extend(old);
        // Only `workers` hands out references, and it no longer holds these: a count of
        // one cannot grow again.
        replaced.retain(|s| Arc::strong_count(s) > 1);
    }

    /// Records that `worker` has processed the commit epoch `epoch` (its snapshot, if
    /// unchanged since an earlier epoch, still holds).
    pub fn processed(&self, worker: usize, epoch: u64) {
        self.epochs[worker].fetch_max(epoch + 1, Ordering::SeqCst);
    }

    /// The last commit epoch every worker has processed: every answer reflects at least
    /// the events of this epoch.
    pub fn epoch(&self) -> Option<u64> {
        let least = self.epochs.iter().map(|e| e.load(Ordering::SeqCst)).min()?;
        least.checked_sub(1)
    }

    /// A customer's rows; none when the job has not seen the customer.
    pub fn customer(&self, tenant_id: &str, customer_id: &str) -> Option<Found> {
        let fp = fingerprint::customer(tenant_id, customer_id);
        let worker = owner(fp, self.workers.len());
        let snapshot = self.workers[worker]
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()?;
        let key = (tenant_id.to_string(), customer_id.to_string());
        snapshot
            .customers
            .contains_key(&key)
            .then_some(Found { snapshot, key })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_customer_is_read_from_its_owner_and_only_there() {
        let live = LiveViews::new(2);
        let fp = fingerprint::customer("acme", "c1");
        let mine = owner(fp, 2);
        let mut snapshot = WorkerLive {
            epoch: 4,
            ..Default::default()
        };
        snapshot.customers.insert(
            ("acme".into(), "c1".into()),
            CustomerLive {
                balance: None,
                entitlements: Vec::new(),
            },
        );
        assert!(live.customer("acme", "c1").is_none());
        live.publish(1 - mine, snapshot);
        assert!(
            live.customer("acme", "c1").is_none(),
            "another worker's snapshot is never consulted"
        );
        let mut snapshot = WorkerLive {
            epoch: 5,
            ..Default::default()
        };
        snapshot
            .customers
            .insert(("acme".into(), "c1".into()), CustomerLive::default());
        live.publish(mine, snapshot);
        let found = live.customer("acme", "c1").expect("published");
        assert_eq!(found.epoch(), 5);
        assert!(live.customer("other", "c1").is_none());
    }

    #[test]
    fn a_replaced_snapshot_still_read_is_kept_and_freed_by_a_later_publish() {
        let live = LiveViews::new(1);
        let snapshot = |epoch| {
            let mut s = WorkerLive {
                epoch,
                ..Default::default()
            };
            s.customers
                .insert(("acme".into(), "c1".into()), CustomerLive::default());
            s
        };
        live.publish(0, snapshot(1));
        let reading = live.customer("acme", "c1").expect("published");
        let first = Arc::downgrade(&reading.snapshot);
        live.publish(0, snapshot(2));
        drop(reading);
        assert!(
            first.upgrade().is_some(),
            "the request's drop was not the last reference: publish kept one"
        );
        live.publish(0, snapshot(3));
        assert!(first.upgrade().is_none(), "freed by the next publish");
        assert_eq!(live.customer("acme", "c1").expect("published").epoch(), 3);
    }

    #[test]
    fn the_live_epoch_is_the_least_every_worker_processed() {
        let live = LiveViews::new(2);
        assert_eq!(live.epoch(), None);
        live.processed(0, 3);
        assert_eq!(live.epoch(), None);
        live.processed(1, 2);
        assert_eq!(live.epoch(), Some(2));
        live.processed(1, 7);
        assert_eq!(live.epoch(), Some(3));
    }
}
