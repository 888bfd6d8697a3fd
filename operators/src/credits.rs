//! Credits: prepaid grants burned down by usage, with OpenMeter's grant semantics
//! (DESIGN.md section 3), exact to the 9th decimal.
//!
//! Readers send each accepted event's burn (the sum over its burn rules) as a
//! [`BurnUpdate`] to the worker owning its customer; commands reach every worker, and
//! each keeps the grants of the customers it owns and every void. The owner keeps, per
//! customer, its grants and its burn summed per microsecond instant: events of one
//! instant see the same active grants, so nothing finer is needed to reproduce the
//! event-by-event allocation. Retractions subtract from their instant.
//!
//! [`CreditState::tables`] computes the tables as of `now` (the watermark) by a replay in
//! time order, which is what makes the result independent of arrival order: late events
//! and late commands (a grant back-dated into history, a void) are simply part of the
//! replay. Per customer the replay walks burn instants and grant lifecycle instants:
//! - a grant is active at t when `effective_at <= t < end`, where `end` is the earlier of
//!   `expires_at` and the void instant (a void before `effective_at` takes effect at
//!   `effective_at`, so the whole amount is voided);
//! - the burn of an instant is taken from the active grants in order (priority asc,
//!   expires_at asc with none last, effective_at asc, grant_id asc); what no active grant
//!   covers is overage (billed, never paid by later grants);
//! - at `end` the remainder is expired (at `expires_at`) or voided (at the void).
//!
//! Balances are as of `now`: grants not yet effective are in `credit_grants` (with
//! `remaining` = amount) but not in the customer's balance or `granted`.
//!
//! Cost: a replay is linear in the customer's burn instants plus its grants, and runs
//! only for customers that changed or whose grants changed state since the last one; the
//! trailing-7-day rate behind `exhaustion_at` is a range sum.

use om_model::command::Grant;
use om_model::credit::{BalanceRow, CreditTables, EntryKind, GrantRow, LedgerRow};
use om_model::time::{DAY, HOUR};
use om_model::{Decimal9, Micros};
use std::collections::{BTreeMap, BTreeSet};

/// Length of the trailing window of the burn rate behind `exhaustion_at`.
pub const RATE_WINDOW: Micros = 7 * DAY;

/// One accepted event's burn (negative: its retraction), on its way to the customer's
/// owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BurnUpdate {
    /// Fingerprint of (tenant, customer): the routing key.
    pub customer: u64,
    /// Event time.
    pub timestamp: Micros,
    /// Credits burned (the negation retracts).
    pub burn: Decimal9,
}

/// One customer's credit inputs.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
struct Customer {
    /// (tenant, customer), once known.
    names: Option<(String, String)>,
    /// Burn per instant.
    burns: BTreeMap<Micros, Decimal9>,
    /// Grants by id.
    grants: BTreeMap<String, Grant>,
}

/// The credit state of the customers a worker owns.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct CreditState {
    customers: BTreeMap<u64, Customer>,
    /// (tenant, grant id) -> the earliest void instant commanded.
    voids: BTreeMap<(String, String), Micros>,
    /// Customers whose inputs changed since the last [`CreditState::tables`].
    #[serde(skip)]
    dirty: BTreeSet<u64>,
}

impl CreditState {
    /// An empty state.
    pub fn new() -> Self {
        CreditState::default()
    }

    /// Records the names of a customer.
    pub fn name(&mut self, customer: u64, tenant_id: &str, customer_id: &str) {
        let c = self.customers.entry(customer).or_default();
        if c.names.is_none() {
            c.names = Some((tenant_id.to_string(), customer_id.to_string()));
        }
    }

    /// Adds (or, negative, retracts) one event's burn.
    pub fn burn(&mut self, u: &BurnUpdate) {
        if u.burn == Decimal9::ZERO {
            return;
        }
        let c = self.customers.entry(u.customer).or_default();
        let at = c.burns.entry(u.timestamp).or_insert(Decimal9::ZERO);
        *at += u.burn;
        if *at == Decimal9::ZERO {
            c.burns.remove(&u.timestamp);
        }
        self.dirty.insert(u.customer);
    }

    /// Adds a grant of a customer this worker owns (`customer` is its fingerprint). A
    /// second grant with the same id replaces the first (readers reject such duplicates
    /// before they get here).
    pub fn grant(&mut self, customer: u64, grant: Grant) {
        let c = self.customers.entry(customer).or_default();
        if c.names.is_none() {
            c.names = Some((grant.tenant_id.clone(), grant.customer_id.clone()));
        }
        c.grants.insert(grant.grant_id.clone(), grant);
        self.dirty.insert(customer);
    }

    /// Records a void (every worker records every void: the grant may be anyone's, and
    /// may arrive later). The earliest void of a grant wins.
    pub fn void(&mut self, tenant_id: &str, grant_id: &str, at: Micros) {
        let key = (tenant_id.to_string(), grant_id.to_string());
        let slot = self.voids.entry(key).or_insert(at);
        *slot = (*slot).min(at);
        let owner = self.customers.iter().find_map(|(fp, c)| {
            let owns = c
                .grants
                .get(grant_id)
                .is_some_and(|g| g.tenant_id == tenant_id);
            owns.then_some(*fp)
        });
        if let Some(fp) = owner {
            self.dirty.insert(fp);
        }
    }

    /// Customers with any credit input.
    pub fn customers(&self) -> usize {
        self.customers.len()
    }

    /// The tables of every customer as of `now` (the watermark; none before the first
    /// event). Clears the changed set.
    pub fn tables(&mut self, now: Option<Micros>) -> CreditTables {
        self.dirty.clear();
        let now = now.unwrap_or(Micros::MIN);
        let mut out = CreditTables::default();
        for c in self.customers.values() {
            let Some((tenant_id, customer_id)) = &c.names else {
                continue;
            };
            let grants: Vec<&Grant> = c.grants.values().collect();
            let voids: Vec<Option<Micros>> = grants
                .iter()
                .map(|g| {
                    self.voids
                        .get(&(g.tenant_id.clone(), g.grant_id.clone()))
                        .copied()
                })
                .collect();
            let a = allocate(&grants, &voids, &c.burns, now);
            let rate_from = now.saturating_sub(RATE_WINDOW);
            let recent: Decimal9 = if now == Micros::MIN {
                Decimal9::ZERO
            } else {
                c.burns
                    .range(rate_from.saturating_add(1)..=now)
                    .map(|(_, b)| *b)
                    .sum()
            };
            let mut total = BalanceRow {
                tenant_id: tenant_id.clone(),
                customer_id: customer_id.clone(),
                balance: Decimal9::ZERO,
                granted: Decimal9::ZERO,
                consumed: Decimal9::ZERO,
                expired: Decimal9::ZERO,
                voided: Decimal9::ZERO,
                overage: a.overage,
                exhaustion_at: None,
            };
            for (i, g) in grants.iter().enumerate() {
                let s = &a.grants[i];
                if g.effective_at <= now {
                    total.granted += g.amount;
                    if s.active {
                        total.balance += s.remaining;
                    }
                }
                total.consumed += s.consumed;
                total.expired += s.expired;
                total.voided += s.voided;
                out.grants.push(GrantRow {
                    grant: (*g).clone(),
                    voided_at: voids[i],
                    consumed: s.consumed,
                    expired: s.expired,
                    voided: s.voided,
                    remaining: s.remaining,
                });
            }
            total.exhaustion_at = exhaustion_at(now, total.balance, recent);
            out.balances.push(total);
            for e in a.ledger {
                out.ledger.push(LedgerRow {
                    tenant_id: tenant_id.clone(),
                    customer_id: customer_id.clone(),
                    grant_id: e.grant.map(|i| grants[i].grant_id.clone()),
                    kind: e.kind,
                    at: e.at,
                    amount: e.amount,
                });
            }
        }
        out
    }

    /// Whether anything changed since the last [`CreditState::tables`].
    pub fn changed(&self) -> bool {
        !self.dirty.is_empty()
    }
}

/// `now + balance / (recent / RATE_WINDOW)`, floored to the microsecond; none when
/// nothing burned recently, the balance is zero, or the instant is past year 9999.
fn exhaustion_at(now: Micros, balance: Decimal9, recent: Decimal9) -> Option<Micros> {
    if recent.raw() <= 0 || balance.raw() <= 0 {
        return None;
    }
    let micros = balance.raw().checked_mul(RATE_WINDOW as i128)? / recent.raw();
    let at = (now as i128).checked_add(micros)?;
    (at <= om_model::time::MAX_MICROS as i128).then_some(at as Micros)
}

/// A grant's state after a replay.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GrantState {
    /// Burned from it.
    pub consumed: Decimal9,
    /// Expired.
    pub expired: Decimal9,
    /// Voided.
    pub voided: Decimal9,
    /// Left.
    pub remaining: Decimal9,
    /// Effective and not ended at `now`.
    pub active: bool,
}

/// One ledger entry of a replay; `grant` indexes the replay's grants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The grant, none for overage.
    pub grant: Option<usize>,
    /// Kind.
    pub kind: EntryKind,
    /// Instant or hour start.
    pub at: Micros,
    /// Credits (positive).
    pub amount: Decimal9,
}

/// The result of [`allocate`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Allocation {
    /// Per grant, in the order given.
    pub grants: Vec<GrantState>,
    /// Burn no grant covered.
    pub overage: Decimal9,
    /// Ledger entries: lifecycle entries, then burn by (grant, hour), then overage by
    /// hour.
    pub ledger: Vec<Entry>,
}

/// Replays one customer's burns against its grants up to `now` (inclusive), in time
/// order. `voids[i]` is the void instant of `grants[i]`, if any.
pub fn allocate(
    grants: &[&Grant],
    voids: &[Option<Micros>],
    burns: &BTreeMap<Micros, Decimal9>,
    now: Micros,
) -> Allocation {
    #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
    enum Step {
        Start,
        Expire,
        Void,
    }
    let mut steps: Vec<(Micros, Step, usize)> = Vec::with_capacity(grants.len() * 2);
    for (i, g) in grants.iter().enumerate() {
        if g.effective_at > now {
            continue;
        }
        steps.push((g.effective_at, Step::Start, i));
        let void = voids[i].map(|v| v.max(g.effective_at));
        let end = match (g.expires_at, void) {
            (Some(e), Some(v)) if v < e => Some((v, Step::Void)),
            (Some(e), _) => Some((e, Step::Expire)),
            (None, Some(v)) => Some((v, Step::Void)),
            (None, None) => None,
        };
        if let Some((at, step)) = end.filter(|(at, _)| *at <= now) {
            steps.push((at, step, i));
        }
    }
    // At one instant a start comes before an end, so a grant voided at its own
    // effective_at is voided whole.
    steps.sort();
    let order = |i: &usize| {
        let g = grants[*i];
        (
            g.priority,
            g.expires_at.unwrap_or(Micros::MAX),
            g.effective_at,
            g.grant_id.as_str(),
        )
    };

    let mut out = Allocation {
        grants: grants
            .iter()
            .map(|g| GrantState {
                remaining: g.amount,
                ..GrantState::default()
            })
            .collect(),
        ..Allocation::default()
    };
    let mut active: Vec<usize> = Vec::new();
    let mut burned: BTreeMap<(usize, Micros), Decimal9> = BTreeMap::new();
    let mut overage: BTreeMap<Micros, Decimal9> = BTreeMap::new();
    let mut next = 0;
    let mut apply_until = |t: Micros, active: &mut Vec<usize>, out: &mut Allocation| {
        while let Some(&(at, step, i)) = steps.get(next) {
            if at > t {
                break;
            }
            next += 1;
            let s = &mut out.grants[i];
            match step {
                Step::Start => {
                    out.ledger.push(Entry {
                        grant: Some(i),
                        kind: EntryKind::Grant,
                        at,
                        amount: grants[i].amount,
                    });
                    active.push(i);
                    active.sort_by(|a, b| order(a).cmp(&order(b)));
                }
                Step::Expire | Step::Void => {
                    let kind = if step == Step::Expire {
                        s.expired = s.remaining;
                        EntryKind::Expiry
                    } else {
                        s.voided = s.remaining;
                        EntryKind::Void
                    };
                    out.ledger.push(Entry {
                        grant: Some(i),
                        kind,
                        at,
                        amount: s.remaining,
                    });
                    s.remaining = Decimal9::ZERO;
                    active.retain(|a| *a != i);
                }
            }
        }
    };
    for (&t, &burn) in burns.range(..=now) {
        apply_until(t, &mut active, &mut out);
        if burn.raw() <= 0 {
            continue;
        }
        let hour = t - t.rem_euclid(HOUR);
        let mut left = burn;
        for &i in &active {
            let s = &mut out.grants[i];
            let take = left.min(s.remaining);
            if take.raw() > 0 {
                s.remaining -= take;
                s.consumed += take;
                left -= take;
                *burned.entry((i, hour)).or_default() += take;
            }
            if left == Decimal9::ZERO {
                break;
            }
        }
        if left.raw() > 0 {
            out.overage += left;
            *overage.entry(hour).or_default() += left;
        }
    }
    apply_until(now, &mut active, &mut out);
    for &i in &active {
        out.grants[i].active = true;
    }
    for ((i, hour), amount) in burned {
        out.ledger.push(Entry {
            grant: Some(i),
            kind: EntryKind::Burn,
            at: hour,
            amount,
        });
    }
    for (hour, amount) in overage {
        out.ledger.push(Entry {
            grant: None,
            kind: EntryKind::Overage,
            at: hour,
            amount,
        });
    }
    out
}
