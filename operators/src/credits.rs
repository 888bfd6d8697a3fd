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
//! only for customers whose inputs changed, or whose grants started or ended, since
//! their last one; other customers' rows are reused. `credit_ledger` is listed by UTC
//! day, and only the days that can have changed: the replay is causal (an entry depends
//! only on inputs at or before its instant, and on `now` for what comes due), so a
//! replayed customer's days from its earliest changed input (or the previous `now`) on.
//! The burn rate behind `exhaustion_at` is the burn of the 168 hour windows up to and
//! including the one holding `now` (the trailing window of `forecasts`, so both can be
//! recomputed from hourly figures), over 7 days.
//!
//! **The fold.** History that nothing can change any more is folded into a per-customer
//! prefix ([`CreditState::fold`]): at a fold point F (a UTC day start at or before the
//! closed watermark minus the credit horizon: the longer of the allowed lateness, behind
//! which no event is accepted and no retraction applies, and `command_horizon`, how far
//! back commands apply at their own instant), each customer's allocation up to F (every grant's consumed,
//! expired, voided and remaining credits, which grants are active, the overage) replaces
//! its burns before F, which leave memory with the hours the burn rate no longer needs.
//! Replays start from the prefix, so state and replay cost follow the burns of the last
//! credit horizon, not the whole history; ledger days before F are final (their files
//! stay as written). A command that reaches back before the fold point in force when it
//! arrives is applied at that fold point instead (the documented rule for back-dated
//! commands): a grant with `effective_at < F` is burned from F on (its row keeps the
//! `effective_at` commanded, which also orders it among the customer's grants), and a
//! void at an instant before F voids the grant's remainder at F. So the tables equal a
//! replay in timestamp order of every input with those instants moved to F
//! (`fold_equals_a_full_replay_with_back_dated_commands_moved_to_the_fold_point`).

use om_model::command::Grant;
use om_model::credit::{BalanceRow, CreditTables, EntryKind, GrantRow, LedgerRow};
use om_model::time::{DAY, HOUR};
use om_model::{Decimal9, Micros};
use std::collections::{BTreeMap, BTreeSet};

/// Length of the trailing window of the burn rate behind `exhaustion_at`.
pub const RATE_WINDOW: Micros = 7 * DAY;

/// The hour windows of that trailing window.
pub const RATE_HOURS: i64 = RATE_WINDOW / HOUR;

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
    /// Burn per hour (start), for the trailing rate without walking every instant.
    hourly: BTreeMap<Micros, Decimal9>,
    /// Grants, by id (a customer has a few: a map's node would hold eleven).
    grants: Vec<Grant>,
    /// The instant a grant is burned from when it is not its `effective_at`: a grant
    /// back-dated before the fold point in force when it arrived starts at that point.
    starts: BTreeMap<String, Micros>,
    /// The allocation of everything before the last fold point, if any.
    prefix: Option<Prefix>,
}

/// A customer's allocation before a fold point: what a replay starts from.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Prefix {
    /// The fold point: every instant before it is folded.
    pub at: Micros,
    /// The state at `at` of each grant started before it (`active`: not ended before
    /// it), by grant id.
    pub grants: Vec<(String, GrantState)>,
    /// Overage before `at`.
    pub overage: Decimal9,
}

/// The credit state of the customers a worker owns.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct CreditState {
    customers: BTreeMap<u64, Customer>,
    /// (tenant, grant id) -> the earliest void instant commanded.
    voids: BTreeMap<(String, String), Micros>,
    /// (tenant, grant id) -> the customer of a grant this worker holds.
    owners: BTreeMap<(String, String), u64>,
    /// The last fold point ([`CreditState::fold`]); `Micros::MIN` before the first.
    folded_at: Micros,
    /// Commands moved to the fold point since the last [`CreditState::take_moved`].
    #[serde(skip)]
    moved: u64,
    /// Customers whose inputs changed since the last [`CreditState::tables`], with the
    /// earliest instant a change can affect (the replay is causal: entries before it
    /// stay as they were).
    #[serde(skip)]
    dirty: BTreeMap<u64, Micros>,
    /// Each customer's rows from its last replay (rebuilt after a restore).
    #[serde(skip)]
    replayed: BTreeMap<u64, Replayed>,
    /// The UTC days that have `credit_ledger` rows (so a file), as of the last
    /// [`CreditState::tables`].
    ledger_days: BTreeSet<Micros>,
    /// Whether `replayed` holds the rows of every day in `ledger_days`: false in a new
    /// or restored state, where the first [`CreditState::tables`] then lists every day
    /// (rows changed or not) so that the day files are rewritten from the full state.
    #[serde(skip)]
    ledger_synced: bool,
}

/// A customer's rows from its last replay, and the span of `now` they hold for.
#[derive(Clone, Debug)]
struct Replayed {
    grants: Vec<GrantRow>,
    /// The balance row; `exhaustion_at` is recomputed at every `now`.
    balance: BalanceRow,
    /// Ledger entries, compact (grant by index into `grants`) until written.
    ledger: Vec<Entry>,
    /// The `now` of the replay.
    at: Micros,
    /// The next instant after `at` where a grant starts or ends.
    until: Micros,
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
        add_or_remove(&mut c.burns, u.timestamp, u.burn);
        add_or_remove(
            &mut c.hourly,
            u.timestamp - u.timestamp.rem_euclid(HOUR),
            u.burn,
        );
        touch(&mut self.dirty, u.customer, u.timestamp);
    }

    /// Adds a grant of a customer this worker owns (`customer` is its fingerprint). A
    /// second grant with the same id replaces the first (readers reject such duplicates
    /// before they get here).
    pub fn grant(&mut self, customer: u64, grant: Grant) {
        let c = self.customers.entry(customer).or_default();
        if c.names.is_none() {
            c.names = Some((grant.tenant_id.clone(), grant.customer_id.clone()));
        }
        self.owners
            .insert((grant.tenant_id.clone(), grant.grant_id.clone()), customer);
        // Burned from the fold point if it reaches back before it.
        let start = grant.effective_at.max(self.folded_at);
        let found = c
            .grants
            .binary_search_by(|g| g.grant_id.as_str().cmp(&grant.grant_id));
        let replaced = found.ok().map(|i| c.start_of(&c.grants[i]));
        let from = replaced.map_or(start, |e| e.min(start));
        if start == grant.effective_at {
            c.starts.remove(&grant.grant_id);
        } else {
            c.starts.insert(grant.grant_id.clone(), start);
            self.moved += 1;
        }
        match found {
            Ok(i) => c.grants[i] = grant,
            Err(i) => c.grants.insert(i, grant),
        }
        touch(&mut self.dirty, customer, from);
    }

    /// Records a void (every worker records every void: the grant may be anyone's, and
    /// may arrive later). The earliest void of a grant wins.
    pub fn void(&mut self, tenant_id: &str, grant_id: &str, at: Micros) {
        // At the fold point if it reaches back before it.
        if at < self.folded_at {
            self.moved += 1;
        }
        let at = at.max(self.folded_at);
        let key = (tenant_id.to_string(), grant_id.to_string());
        if let Some(&fp) = self.owners.get(&key) {
            // A void takes effect at `at`, or at the grant's start if later.
            touch(&mut self.dirty, fp, at);
        }
        let slot = self.voids.entry(key).or_insert(at);
        *slot = (*slot).min(at);
    }

    /// Customers with any credit input.
    pub fn customers(&self) -> usize {
        self.customers.len()
    }

    /// The tables of every customer as of `now` (the watermark; none before the first
    /// event). Clears the changed set. A customer is replayed only when its inputs
    /// changed or `now` passed one of its grants' starts or ends since its last replay;
    /// otherwise its rows are reused, with `exhaustion_at` recomputed.
    pub fn tables(&mut self, now: Option<Micros>) -> CreditTables<'_> {
        let now = now.unwrap_or(Micros::MIN);
        let mut days = BTreeSet::new();
        if !self.ledger_synced {
            days.extend(self.ledger_days.iter().copied());
        }
        for (fp, c) in &self.customers {
            let Some(names) = &c.names else {
                continue;
            };
            if c.grants.is_empty() && c.burns.is_empty() && c.prefix.is_none() {
                // Known by name only (events that burn nothing): no credit rows.
                if let Some(old) = self.replayed.remove(fp) {
                    days.extend(old.ledger.iter().map(|e| day_of(e.at)));
                }
                continue;
            }
            let fresh = self
                .replayed
                .get(fp)
                .is_some_and(|r| !self.dirty.contains_key(fp) && r.at <= now && now < r.until);
            if !fresh {
                let r = replay(c, names, &self.voids, now);
                // Entries can differ from the earliest changed input on, or from the
                // last replay's `now` on if `now` moved (entries that come due).
                let old = self.replayed.get(fp);
                let from = match old {
                    None => Micros::MIN,
                    Some(o) => {
                        let changed = self.dirty.get(fp).copied().unwrap_or(Micros::MAX);
                        if now == o.at {
                            changed
                        } else {
                            changed.min(o.at)
                        }
                    }
                };
                changed_days(old, &r, from, &mut days);
                self.replayed.insert(*fp, r);
            }
        }
        self.dirty.clear();
        self.ledger_synced = true;
        let mut out = CreditTables::default();
        let mut ledger: BTreeMap<Micros, Vec<LedgerRow<'_>>> =
            days.into_iter().map(|d| (d, Vec::new())).collect();
        for (fp, c) in &self.customers {
            let (Some(names), Some(r)) = (&c.names, self.replayed.get(fp)) else {
                continue;
            };
            out.grants.extend(r.grants.iter());
            let mut balance = r.balance.clone();
            balance.exhaustion_at = exhaustion_at(now, balance.balance, recent_burn(c, now));
            out.balances.push(balance);
            if ledger.is_empty() {
                continue;
            }
            for e in &r.ledger {
                if let Some(rows) = ledger.get_mut(&day_of(e.at)) {
                    rows.push(LedgerRow {
                        tenant_id: &names.0,
                        customer_id: &names.1,
                        grant_id: e.grant.map(|i| r.grants[i].grant.grant_id.as_str()),
                        kind: e.kind,
                        at: e.at,
                        amount: e.amount,
                    });
                }
            }
        }
        for (day, rows) in &ledger {
            if rows.is_empty() {
                self.ledger_days.remove(day);
            } else {
                self.ledger_days.insert(*day);
            }
        }
        out.ledger_days = ledger.into_iter().collect();
        out
    }

    /// Whether anything changed since the last [`CreditState::tables`].
    pub fn changed(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// How many commands reached back before the fold point and were applied at it
    /// since the last call.
    pub fn take_moved(&mut self) -> u64 {
        std::mem::take(&mut self.moved)
    }

    /// The last fold point (`Micros::MIN` before the first fold).
    pub fn folded_at(&self) -> Micros {
        self.folded_at
    }

    /// Folds every customer's history before `before` (a UTC day start) into its prefix
    /// (see the module docs), and forgets the hourly burn the rate at `now` and later
    /// no longer needs. The caller guarantees that no burn before `before` arrives any
    /// more (it is at or behind the closed watermark minus the allowed lateness);
    /// commands that reach back before it are moved to it from now on. The tables do
    /// not change. A point at or before the last one does nothing, so the walk over
    /// every customer happens once a day of event time, not at every commit.
    pub fn fold(&mut self, before: Micros, now: Option<Micros>) {
        debug_assert_eq!(before.rem_euclid(DAY), 0, "fold points are UTC day starts");
        if before <= self.folded_at {
            return;
        }
        let keep_hours = now.map_or(Micros::MIN, |n| {
            (n - n.rem_euclid(HOUR) - (RATE_HOURS - 1) * HOUR).min(before)
        });
        for c in self.customers.values_mut() {
            c.fold(before, &self.voids);
            c.hourly = c.hourly.split_off(&keep_hours);
        }
        self.folded_at = before;
        self.ledger_days = self.ledger_days.split_off(&before);
    }

    /// Every burn instant and hour kept, over all customers: what the fold bounds.
    pub fn kept(&self) -> (usize, usize) {
        self.customers
            .values()
            .fold((0, 0), |(b, h), c| (b + c.burns.len(), h + c.hourly.len()))
    }
}

impl Customer {
    /// The instant `g` is burned from.
    fn start_of(&self, g: &Grant) -> Micros {
        self.starts
            .get(&g.grant_id)
            .copied()
            .unwrap_or(g.effective_at)
    }

    /// Its grants in id order, with their starts and void instants.
    fn grants<'a>(
        &'a self,
        all_voids: &BTreeMap<(String, String), Micros>,
    ) -> (Vec<&'a Grant>, Vec<Micros>, Vec<Option<Micros>>) {
        let grants: Vec<&Grant> = self.grants.iter().collect();
        let starts = grants.iter().map(|g| self.start_of(g)).collect();
        let voids = grants
            .iter()
            .map(|g| {
                all_voids
                    .get(&(g.tenant_id.clone(), g.grant_id.clone()))
                    .copied()
            })
            .collect();
        (grants, starts, voids)
    }

    /// Folds the history before `before` into the prefix.
    fn fold(&mut self, before: Micros, all_voids: &BTreeMap<(String, String), Micros>) {
        if self.grants.is_empty() && self.burns.is_empty() && self.prefix.is_none() {
            // Known by name only: nothing to fold, and no credit rows.
            return;
        }
        let (grants, starts, voids) = self.grants(all_voids);
        let a = allocate(
            &History {
                grants: &grants,
                starts: &starts,
                voids: &voids,
                prefix: self.prefix.as_ref(),
            },
            &self.burns,
            before - 1,
        );
        let prefix = Prefix {
            at: before,
            grants: grants
                .iter()
                .zip(a.grants)
                .zip(&starts)
                .filter(|&(_, start)| *start < before)
                .map(|((g, state), _)| (g.grant_id.clone(), state))
                .collect(),
            overage: a.overage,
        };
        // An empty prefix (no grant started, no overage) is no history at all: a
        // customer whose burns were all retracted has no credit rows.
        self.prefix =
            (!prefix.grants.is_empty() || prefix.overage != Decimal9::ZERO).then_some(prefix);
        self.burns = self.burns.split_off(&before);
    }
}

/// The start of the UTC day of `t`: the partition of a ledger entry.
fn day_of(t: Micros) -> Micros {
    t - t.rem_euclid(DAY)
}

/// Adds to `days` the days of a replayed customer's entries, `old` and `new`, that can
/// differ: the days from the one of `from` on (the replay is causal, so entries before
/// the earliest change are the same).
fn changed_days(old: Option<&Replayed>, new: &Replayed, from: Micros, days: &mut BTreeSet<Micros>) {
    let first = from.saturating_sub(from.rem_euclid(DAY));
    let entries = old
        .map_or(&[][..], |o| &o.ledger[..])
        .iter()
        .chain(&new.ledger);
    days.extend(entries.filter(|e| e.at >= first).map(|e| day_of(e.at)));
}

/// Marks `customer` changed from instant `at` on.
fn touch(dirty: &mut BTreeMap<u64, Micros>, customer: u64, at: Micros) {
    let from = dirty.entry(customer).or_insert(at);
    *from = (*from).min(at);
}

/// Adds `v` at `key`, dropping the entry when it comes back to zero.
fn add_or_remove(map: &mut BTreeMap<Micros, Decimal9>, key: Micros, v: Decimal9) {
    let slot = map.entry(key).or_insert(Decimal9::ZERO);
    *slot += v;
    if *slot == Decimal9::ZERO {
        map.remove(&key);
    }
}

/// Burn of the [`RATE_HOURS`] hour windows up to and including the one holding `now`.
fn recent_burn(c: &Customer, now: Micros) -> Decimal9 {
    if now == Micros::MIN {
        return Decimal9::ZERO;
    }
    let last = now - now.rem_euclid(HOUR);
    c.hourly
        .range(last - (RATE_HOURS - 1) * HOUR..=last)
        .map(|(_, b)| *b)
        .sum()
}

/// Replays one customer as of `now` into its rows.
fn replay(
    c: &Customer,
    (tenant_id, customer_id): &(String, String),
    all_voids: &BTreeMap<(String, String), Micros>,
    now: Micros,
) -> Replayed {
    let (grants, starts, voids) = c.grants(all_voids);
    let a = allocate(
        &History {
            grants: &grants,
            starts: &starts,
            voids: &voids,
            prefix: c.prefix.as_ref(),
        },
        &c.burns,
        now,
    );
    let mut until = Micros::MAX;
    let mut balance = BalanceRow {
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
    let mut rows = Vec::with_capacity(grants.len());
    for (i, g) in grants.iter().enumerate() {
        let s = &a.grants[i];
        let end = [g.expires_at, voids[i].map(|v| v.max(starts[i]))]
            .into_iter()
            .flatten()
            .min();
        for instant in std::iter::once(starts[i]).chain(end) {
            if instant > now {
                until = until.min(instant);
            }
        }
        if g.effective_at <= now {
            balance.granted += g.amount;
            if s.active {
                balance.balance += s.remaining;
            }
        }
        balance.consumed += s.consumed;
        balance.expired += s.expired;
        balance.voided += s.voided;
        rows.push(GrantRow {
            grant: (*g).clone(),
            voided_at: voids[i],
            consumed: s.consumed,
            expired: s.expired,
            voided: s.voided,
            remaining: s.remaining,
        });
    }
    Replayed {
        grants: rows,
        balance,
        ledger: a.ledger,
        at: now,
        until,
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
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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

/// One customer's grants as a replay sees them.
#[derive(Clone, Copy, Debug)]
pub struct History<'a> {
    /// The grants.
    pub grants: &'a [&'a Grant],
    /// The instant each is burned from: its `effective_at`, or later (see the fold).
    pub starts: &'a [Micros],
    /// The void instant of each, if any.
    pub voids: &'a [Option<Micros>],
    /// The allocation before the fold point to start from, if any.
    pub prefix: Option<&'a Prefix>,
}

/// Replays one customer's burns against its grants up to `now` (inclusive), in time
/// order, from the prefix of `history` if it has one (then `burns` holds no instant
/// before the prefix's point, and only entries from that point on are listed).
#[expect(clippy::too_many_lines, reason = "to be split into stages (issue #9)")]
pub fn allocate(
    history: &History<'_>,
    burns: &BTreeMap<Micros, Decimal9>,
    now: Micros,
) -> Allocation {
    let History {
        grants,
        starts,
        voids,
        prefix,
    } = *history;
    let from = prefix.map_or(Micros::MIN, |p| p.at);
    #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
    enum Step {
        Start,
        Expire,
        Void,
    }
    let mut steps: Vec<(Micros, Step, usize)> = Vec::with_capacity(grants.len() * 2);
    for (i, g) in grants.iter().enumerate() {
        let start = starts[i];
        if start > now {
            continue;
        }
        // What happened before the fold point is in the prefix.
        if start >= from {
            steps.push((start, Step::Start, i));
        }
        let void = voids[i].map(|v| v.max(start));
        let end = match (g.expires_at, void) {
            (Some(e), Some(v)) if v < e => Some((v, Step::Void)),
            (Some(e), _) => Some((e.max(start), Step::Expire)),
            (None, Some(v)) => Some((v, Step::Void)),
            (None, None) => None,
        };
        if let Some((at, step)) = end.filter(|(at, _)| (from..=now).contains(at)) {
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

    let folded = |g: &Grant| {
        let p = prefix?;
        let i = p
            .grants
            .binary_search_by(|(id, _)| id.as_str().cmp(&g.grant_id))
            .ok()?;
        Some(&p.grants[i].1)
    };
    let mut out = Allocation {
        grants: grants
            .iter()
            .map(|g| match folded(g) {
                Some(state) => GrantState {
                    active: false,
                    ..state.clone()
                },
                None => GrantState {
                    remaining: g.amount,
                    ..GrantState::default()
                },
            })
            .collect(),
        overage: prefix.map_or(Decimal9::ZERO, |p| p.overage),
        ..Allocation::default()
    };
    let mut active: Vec<usize> = (0..grants.len())
        .filter(|&i| folded(grants[i]).is_some_and(|s| s.active))
        .collect();
    active.sort_by(|a, b| order(a).cmp(&order(b)));
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

#[cfg(test)]
mod tests {
    use super::*;

    const H: Micros = HOUR;

    fn d(s: &str) -> Decimal9 {
        Decimal9::parse(s).unwrap()
    }

    fn grant(id: &str, amount: &str, priority: i64, from: Micros, until: Option<Micros>) -> Grant {
        Grant {
            tenant_id: "t".into(),
            grant_id: id.into(),
            customer_id: "c".into(),
            amount: d(amount),
            priority,
            effective_at: from,
            expires_at: until,
            price: None,
            currency: None,
        }
    }

    /// [`allocate`] with no fold: every grant starts at its `effective_at`.
    fn alloc(
        grants: &[&Grant],
        voids: &[Option<Micros>],
        burns: &BTreeMap<Micros, Decimal9>,
        now: Micros,
    ) -> Allocation {
        let starts: Vec<Micros> = grants.iter().map(|g| g.effective_at).collect();
        let history = History {
            grants,
            starts: &starts,
            voids,
            prefix: None,
        };
        allocate(&history, burns, now)
    }

    fn burns(items: &[(Micros, &str)]) -> BTreeMap<Micros, Decimal9> {
        items.iter().map(|(t, b)| (*t, d(b))).collect()
    }

    #[test]
    fn burn_follows_priority_then_expiry_then_effective_then_id() {
        // Same priority: the one expiring first goes first; no expiry goes last; then
        // the earlier effective_at, then the grant id.
        let g = [
            grant("d", "1", 1, 0, None),
            grant("c", "1", 1, 0, Some(10 * H)),
            grant("b", "1", 1, 0, Some(5 * H)),
            grant("a", "1", 0, H, None),
            grant("e", "1", 1, 0, Some(5 * H)),
        ];
        let refs: Vec<&Grant> = g.iter().collect();
        let a = alloc(&refs, &[None; 5], &burns(&[(2 * H, "2.5")]), 3 * H);
        let consumed: Vec<Decimal9> = a.grants.iter().map(|s| s.consumed).collect();
        // a (priority 0) then b (expires at 5h, id b < e) then half of e.
        assert_eq!(consumed, [d("0"), d("0"), d("1"), d("1"), d("0.5")]);
        assert_eq!(a.overage, d("0"));
    }

    #[test]
    fn expiry_void_and_overage_at_their_instants() {
        let g = [
            grant("x", "10", 0, 0, Some(2 * H)),
            grant("y", "10", 1, 0, None),
        ];
        let refs: Vec<&Grant> = g.iter().collect();
        // x burns 4 before 2h and expires with 6; y is voided at 3h after burning 3;
        // burn at exactly 2h is not x's (expired at that instant), burn after 3h is overage.
        let b = burns(&[(H, "4"), (2 * H, "3"), (3 * H, "7"), (4 * H, "1")]);
        let a = alloc(&refs, &[None, Some(3 * H)], &b, 5 * H);
        assert_eq!(a.grants[0].consumed, d("4"));
        assert_eq!(a.grants[0].expired, d("6"));
        assert_eq!(a.grants[1].consumed, d("3"));
        assert_eq!(a.grants[1].voided, d("7"));
        assert_eq!(a.overage, d("8"));
        assert!(!a.grants[0].active && !a.grants[1].active);
        let kinds: Vec<(EntryKind, Micros, Decimal9)> =
            a.ledger.iter().map(|e| (e.kind, e.at, e.amount)).collect();
        assert!(kinds.contains(&(EntryKind::Expiry, 2 * H, d("6"))));
        assert!(kinds.contains(&(EntryKind::Void, 3 * H, d("7"))));
        assert!(kinds.contains(&(EntryKind::Overage, 3 * H, d("7"))));
        assert!(kinds.contains(&(EntryKind::Overage, 4 * H, d("1"))));
    }

    #[test]
    fn a_void_before_the_grant_starts_voids_all_of_it() {
        let g = [grant("x", "10", 0, 2 * H, None)];
        let a = alloc(&[&g[0]], &[Some(H)], &burns(&[(3 * H, "1")]), 4 * H);
        assert_eq!(a.grants[0].voided, d("10"));
        assert_eq!(a.grants[0].consumed, d("0"));
        assert_eq!(a.overage, d("1"));
    }

    #[test]
    fn the_ledger_lists_only_the_days_whose_rows_changed() {
        fn burn(s: &mut CreditState, customer: u64, timestamp: Micros, b: &str) {
            s.burn(&BurnUpdate {
                customer,
                timestamp,
                burn: d(b),
            });
        }
        fn days(t: &CreditTables<'_>) -> Vec<(Micros, usize)> {
            t.ledger_days
                .iter()
                .map(|(day, rows)| (*day, rows.len()))
                .collect()
        }
        let mut s = CreditState::new();
        s.name(1, "t", "a");
        s.name(2, "t", "b");
        s.grant(1, grant("g1", "100", 0, 0, None));
        s.grant(2, grant("g2", "100", 0, 0, None));
        burn(&mut s, 1, H, "1");
        burn(&mut s, 2, DAY + H, "2");
        let now = Some(3 * DAY);
        // At first every day with rows: day 0 has both grants and a's burn, day 1 b's.
        assert_eq!(days(&s.tables(now)), vec![(0, 3), (DAY, 1)]);
        assert!(s.tables(now).ledger_days.is_empty());
        // A burn of a on day 1: day 1 with every customer's rows of it; day 0, before
        // the change, is not rewritten.
        burn(&mut s, 1, DAY + 2 * H, "1");
        let t = s.tables(now);
        assert_eq!(days(&t), vec![(DAY, 2)]);
        let customers: BTreeSet<&str> = t.ledger_days[0].1.iter().map(|r| r.customer_id).collect();
        assert_eq!(customers, BTreeSet::from(["a", "b"]));
        // A burn of b on day 0: the days of b's entries from day 0 on (an earlier burn
        // can change later allocations).
        burn(&mut s, 2, 2 * H, "1");
        assert_eq!(days(&s.tables(now)), vec![(0, 4), (DAY, 2)]);
        // Retracting b's only burn of day 1 leaves a's: day 1 with one row.
        burn(&mut s, 2, DAY + H, "-2");
        assert_eq!(days(&s.tables(now)), vec![(DAY, 1)]);
        // And retracting a's empties it: listed with no rows.
        burn(&mut s, 1, DAY + 2 * H, "-1");
        assert_eq!(days(&s.tables(now)), vec![(DAY, 0)]);
        // A restored state lists every day that has a file, once.
        let saved = bincode::serialize(&s).unwrap();
        let mut restored: CreditState = bincode::deserialize(&saved).unwrap();
        assert_eq!(days(&restored.tables(now)), vec![(0, 4)]);
        assert!(restored.tables(now).ledger_days.is_empty());
    }

    #[test]
    fn the_day_files_always_equal_a_full_recomputation() {
        #[derive(Clone)]
        enum Op {
            Grant(u64, Grant),
            Void(String, Micros),
            Burn(BurnUpdate),
        }
        fn apply(s: &mut CreditState, op: &Op) {
            match op {
                Op::Grant(c, g) => s.grant(*c, g.clone()),
                Op::Void(id, at) => s.void("t", id, *at),
                Op::Burn(b) => s.burn(b),
            }
        }
        fn rows(rows: &[LedgerRow<'_>]) -> Vec<String> {
            let mut out: Vec<String> = rows.iter().map(|r| format!("{r:?}")).collect();
            out.sort();
            out
        }
        let mut x: u64 = 11;
        let mut next = |m: u64| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 11) % m
        };
        let mut live = CreditState::new();
        let mut ops: Vec<Op> = Vec::new();
        let mut files: BTreeMap<Micros, Vec<String>> = BTreeMap::new();
        for step in 0..240i64 {
            let customer = next(3);
            // `now` is the watermark: never before a burn (the replay cache relies on it).
            let now = step * (4 * DAY / 240);
            // Some steps only move `now`: grants then start and end by themselves.
            let op = match next(12) {
                10 | 11 => None,
                0 => {
                    let from = next(3 * DAY as u64) as Micros;
                    let until = (next(2) == 0).then(|| from + next(2 * DAY as u64) as Micros);
                    let amount = format!("{}", 1 + next(40));
                    let mut g = grant(&format!("g{step}"), &amount, 0, from, until);
                    g.priority = next(3) as i64;
                    Some(Op::Grant(customer, g))
                }
                1 => Some(Op::Void(
                    format!("g{}", next(step as u64 + 1)),
                    next(4 * DAY as u64) as Micros,
                )),
                2 if !ops.is_empty() => match ops[next(ops.len() as u64) as usize].clone() {
                    Op::Burn(b) => Some(Op::Burn(BurnUpdate { burn: -b.burn, ..b })),
                    other => Some(other),
                },
                _ => Some(Op::Burn(BurnUpdate {
                    customer,
                    timestamp: next(now as u64 + 1) as Micros,
                    burn: Decimal9::from_raw((1 + next(5_000)) as i128 * 1_000_000),
                })),
            };
            if step == 0 {
                for c in 0..3 {
                    live.name(c, "t", &format!("c{c}"));
                }
            }
            if let Some(op) = op {
                apply(&mut live, &op);
                ops.push(op);
            }
            let now = Some(now);
            for (day, r) in live.tables(now).ledger_days {
                if r.is_empty() {
                    files.remove(&day);
                } else {
                    files.insert(day, rows(&r));
                }
            }
            let mut full = CreditState::new();
            for c in 0..3 {
                full.name(c, "t", &format!("c{c}"));
            }
            for op in &ops {
                apply(&mut full, op);
            }
            let expected: BTreeMap<Micros, Vec<String>> = full
                .tables(now)
                .ledger_days
                .into_iter()
                .map(|(day, r)| (day, rows(&r)))
                .collect();
            assert_eq!(files, expected, "after step {step}");
        }
    }

    #[test]
    fn a_grant_not_yet_effective_is_not_in_the_balance() {
        let mut state = CreditState::new();
        state.grant(7, grant("now", "5", 0, 0, None));
        state.grant(7, grant("later", "100", 0, 10 * H, None));
        state.burn(&BurnUpdate {
            customer: 7,
            timestamp: H,
            burn: d("2"),
        });
        let t = state.tables(Some(2 * H));
        let b = &t.balances[0];
        assert_eq!((b.balance, b.granted, b.consumed), (d("3"), d("5"), d("2")));
        let later = t
            .grants
            .iter()
            .find(|g| g.grant.grant_id == "later")
            .unwrap();
        assert_eq!(later.remaining, d("100"));
        assert!(!state.changed());
    }

    #[test]
    fn retracted_burn_and_arrival_order_do_not_matter() {
        let updates = [(H, "4"), (3 * H, "1"), (2 * H, "2.5"), (H, "0.5")];
        let mut forward = CreditState::new();
        let mut backward = CreditState::new();
        for s in [&mut forward, &mut backward] {
            s.name(1, "t", "c");
            s.grant(1, grant("g", "6", 0, 0, Some(5 * H)));
        }
        for (t, b) in updates {
            forward.burn(&BurnUpdate {
                customer: 1,
                timestamp: t,
                burn: d(b),
            });
        }
        for (t, b) in updates.iter().rev() {
            backward.burn(&BurnUpdate {
                customer: 1,
                timestamp: *t,
                burn: d(b),
            });
        }
        // An event burned and then retracted leaves no trace.
        backward.burn(&BurnUpdate {
            customer: 1,
            timestamp: 4 * H,
            burn: d("9"),
        });
        backward.burn(&BurnUpdate {
            customer: 1,
            timestamp: 4 * H,
            burn: -d("9"),
        });
        // A customer whose events burn nothing has no rows.
        backward.name(2, "t", "idle");
        let (f, b) = (forward.tables(Some(4 * H)), backward.tables(Some(4 * H)));
        assert_eq!(f, b);
        assert_eq!(f.balances[0].overage, d("2"));
        assert_eq!(f.grants[0].consumed, d("6"));
    }

    #[test]
    fn recent_burn_is_the_burn_of_the_168_hours_up_to_nows() {
        let mut c = Customer::default();
        let mut x: u64 = 7;
        for _ in 0..2000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let t = ((x >> 20) % (10 * DAY as u64)) as Micros;
            let b = Decimal9::from_raw(((x >> 5) % 1_000_000_000_000) as i128);
            add_or_remove(&mut c.burns, t, b);
            add_or_remove(&mut c.hourly, t - t.rem_euclid(HOUR), b);
        }
        for now in [
            0,
            HOUR,
            7 * DAY,
            7 * DAY + 1,
            8 * DAY + 12_345,
            10 * DAY - 1,
        ] {
            let first = now - now.rem_euclid(HOUR) - 167 * HOUR;
            let naive: Decimal9 = c
                .burns
                .range(first..now - now.rem_euclid(HOUR) + HOUR)
                .map(|(_, b)| *b)
                .sum();
            assert_eq!(recent_burn(&c, now), naive, "now {now}");
        }
    }

    #[test]
    fn exhaustion_at_follows_the_trailing_seven_day_rate() {
        // 7 credits burned over the last 7 days = 1 per day; 3 left -> 3 days from now.
        assert_eq!(exhaustion_at(10 * DAY, d("3"), d("7")), Some(13 * DAY));
        assert_eq!(exhaustion_at(10 * DAY, d("3"), d("0")), None);
        assert_eq!(exhaustion_at(10 * DAY, d("0"), d("7")), None);
        // Far beyond year 9999: none rather than an overflow.
        assert_eq!(
            exhaustion_at(0, d("100000000000000000"), d("0.000000001")),
            None
        );
    }
}

/// The fold against a naive model: random histories (burns, retractions, grants that
/// may reach back before the fold point, voids), random fold points, tables taken at
/// random moments; the folded state's `credit_grants` and `credit_balances` equal a
/// naive replay, event by event in time order, that keeps everything and applies the
/// documented rule to commands older than the fold point in force when they arrived
/// (their instants moved to it).
#[cfg(test)]
mod fold_model {
    use super::*;
    use om_model::time::MINUTE;
    use proptest::prelude::*;

    const BASE: Micros = 100 * DAY;
    /// The lateness the fold points keep behind `now`.
    const LATENESS: Micros = DAY;

    #[derive(Clone, Debug)]
    enum Op {
        Burn {
            customer: bool,
            after: i64,
            amount: u32,
        },
        Retract {
            pick: usize,
        },
        Grant {
            customer: bool,
            amount: u32,
            priority: u8,
            effective: i64,
            lasts: Option<i64>,
        },
        Void {
            pick: usize,
            at: i64,
        },
        Fold {
            days: i64,
        },
        Tables,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (any::<bool>(), 0i64..3 * 24 * 60, 1u32..5_000)
                .prop_map(|(customer, after, amount)| Op::Burn { customer, after, amount }),
            1 => any::<usize>().prop_map(|pick| Op::Retract { pick }),
            2 => (
                any::<bool>(),
                1u32..20_000,
                0u8..3,
                -24 * 60i64..6 * 24 * 60,
                prop::option::of(60i64..3 * 24 * 60),
            )
                .prop_map(|(customer, amount, priority, effective, lasts)| Op::Grant {
                    customer,
                    amount,
                    priority,
                    effective,
                    lasts,
                }),
            1 => (any::<usize>(), 0i64..7 * 24 * 60).prop_map(|(pick, at)| Op::Void { pick, at }),
            1 => (0i64..3).prop_map(|days| Op::Fold { days }),
            1 => Just(Op::Tables),
        ]
    }

    /// A grant as the naive model sees it: commanded, and the instants the rule gives.
    struct Naive {
        grant: Grant,
        customer: u64,
        start: Micros,
        void: Option<Micros>,
    }

    fn customer(second: bool) -> (u64, &'static str) {
        if second { (2, "c2") } else { (1, "c1") }
    }

    fn cents(n: u32) -> Decimal9 {
        Decimal9::from_raw(i128::from(n) * 10_000_000)
    }

    /// (grant id, [amount, consumed, expired, voided, remaining]) and
    /// (customer, [balance, granted, consumed, expired, voided, overage], exhaustion_at).
    type Rows = (
        BTreeMap<String, [Decimal9; 5]>,
        BTreeMap<String, ([Decimal9; 6], Option<Micros>)>,
    );

    fn naive(grants: &[Naive], burns: &[(u64, Micros, Decimal9)], now: Micros) -> Rows {
        let mut events: Vec<&(u64, Micros, Decimal9)> = burns.iter().collect();
        events.sort_by_key(|e| e.1);
        struct S {
            consumed: Decimal9,
            expired: Decimal9,
            voided: Decimal9,
            remaining: Decimal9,
            closed: bool,
        }
        let mut states: Vec<S> = grants
            .iter()
            .map(|g| S {
                consumed: Decimal9::ZERO,
                expired: Decimal9::ZERO,
                voided: Decimal9::ZERO,
                remaining: g.grant.amount,
                closed: false,
            })
            .collect();
        let end = |g: &Naive| -> Option<(Micros, bool)> {
            let void = g.void.map(|v| v.max(g.start));
            match (g.grant.expires_at, void) {
                (Some(e), Some(v)) if v < e => Some((v, true)),
                (Some(e), _) => Some((e.max(g.start), false)),
                (None, Some(v)) => Some((v, true)),
                (None, None) => None,
            }
        };
        let close_until = |states: &mut Vec<S>, t: Micros| {
            for (g, s) in grants.iter().zip(states.iter_mut()) {
                if let Some((at, void)) = end(g)
                    && !s.closed
                    && g.start <= t
                    && at <= t
                {
                    s.closed = true;
                    if void {
                        s.voided = s.remaining;
                    } else {
                        s.expired = s.remaining;
                    }
                    s.remaining = Decimal9::ZERO;
                }
            }
        };
        let mut overage: BTreeMap<u64, Decimal9> = BTreeMap::new();
        for &&(c, t, burn) in &events {
            close_until(&mut states, t);
            let mut open: Vec<usize> = (0..grants.len())
                .filter(|&i| grants[i].customer == c && grants[i].start <= t && !states[i].closed)
                .collect();
            open.sort_by_key(|&i| {
                let g = &grants[i].grant;
                (
                    g.priority,
                    g.expires_at.unwrap_or(Micros::MAX),
                    g.effective_at,
                    g.grant_id.clone(),
                )
            });
            let mut left = burn;
            for i in open {
                let take = left.min(states[i].remaining);
                states[i].remaining -= take;
                states[i].consumed += take;
                left -= take;
            }
            *overage.entry(c).or_default() += left;
        }
        close_until(&mut states, now);
        let grant_rows = grants
            .iter()
            .zip(&states)
            .map(|(g, s)| {
                (
                    g.grant.grant_id.clone(),
                    [g.grant.amount, s.consumed, s.expired, s.voided, s.remaining],
                )
            })
            .collect();
        let last_hour = now - now.rem_euclid(HOUR);
        let mut balances = BTreeMap::new();
        for c in [1u64, 2] {
            let mine: Vec<usize> = (0..grants.len())
                .filter(|&i| grants[i].customer == c)
                .collect();
            let burned = events.iter().any(|e| e.0 == c);
            if mine.is_empty() && !burned {
                continue;
            }
            let sum = |f: &dyn Fn(usize) -> Decimal9| mine.iter().map(|&i| f(i)).sum::<Decimal9>();
            let balance = sum(&|i| {
                let started = grants[i].grant.effective_at <= now && grants[i].start <= now;
                if started && !states[i].closed {
                    states[i].remaining
                } else {
                    Decimal9::ZERO
                }
            });
            let recent: Decimal9 = events
                .iter()
                .filter(|e| {
                    e.0 == c && e.1 >= last_hour - (RATE_HOURS - 1) * HOUR && e.1 < last_hour + HOUR
                })
                .map(|e| e.2)
                .sum();
            balances.insert(
                format!("c{c}"),
                (
                    [
                        balance,
                        sum(&|i| {
                            if grants[i].grant.effective_at <= now {
                                grants[i].grant.amount
                            } else {
                                Decimal9::ZERO
                            }
                        }),
                        sum(&|i| states[i].consumed),
                        sum(&|i| states[i].expired),
                        sum(&|i| states[i].voided),
                        overage.get(&c).copied().unwrap_or_default(),
                    ],
                    exhaustion_at(now, balance, recent),
                ),
            );
        }
        (grant_rows, balances)
    }

    fn rows(state: &mut CreditState, now: Micros) -> Rows {
        let t = state.tables(Some(now));
        let grants = t
            .grants
            .iter()
            .map(|g| {
                (
                    g.grant.grant_id.clone(),
                    [g.grant.amount, g.consumed, g.expired, g.voided, g.remaining],
                )
            })
            .collect();
        let balances = t
            .balances
            .iter()
            .map(|b| {
                (
                    b.customer_id.clone(),
                    (
                        [
                            b.balance, b.granted, b.consumed, b.expired, b.voided, b.overage,
                        ],
                        b.exhaustion_at,
                    ),
                )
            })
            .collect();
        (grants, balances)
    }

    /// Runs `ops` on a folding state and on the naive model; returns both final tables
    /// and how many folds moved the fold point.
    fn run(ops: &[Op]) -> (Rows, Rows, usize) {
        let mut state = CreditState::new();
        state.name(1, "t", "c1");
        state.name(2, "t", "c2");
        let mut grants: Vec<Naive> = Vec::new();
        let mut burns: Vec<(u64, Micros, Decimal9)> = Vec::new();
        let mut folded = Micros::MIN;
        let mut now = BASE;
        let mut folds = 0;
        for op in ops {
            match *op {
                Op::Burn {
                    customer: c,
                    after,
                    amount,
                } => {
                    let (fp, _) = customer(c);
                    let t = folded.max(BASE) + after * MINUTE;
                    now = now.max(t);
                    burns.push((fp, t, cents(amount)));
                    state.burn(&BurnUpdate {
                        customer: fp,
                        timestamp: t,
                        burn: cents(amount),
                    });
                }
                Op::Retract { pick } => {
                    // Only what the lateness still lets through: burns at or after the
                    // fold point.
                    let open: Vec<usize> =
                        (0..burns.len()).filter(|&i| burns[i].1 >= folded).collect();
                    if let Some(&i) = open.get(pick % open.len().max(1)) {
                        let (fp, t, b) = burns.remove(i);
                        state.burn(&BurnUpdate {
                            customer: fp,
                            timestamp: t,
                            burn: -b,
                        });
                    }
                }
                Op::Grant {
                    customer: c,
                    amount,
                    priority,
                    effective,
                    lasts,
                } => {
                    let (fp, name) = customer(c);
                    let effective_at = BASE + effective * MINUTE;
                    let grant = Grant {
                        tenant_id: "t".into(),
                        grant_id: format!("g{}", grants.len()),
                        customer_id: name.into(),
                        amount: cents(amount),
                        priority: i64::from(priority),
                        effective_at,
                        expires_at: lasts.map(|m| effective_at + m * MINUTE),
                        price: None,
                        currency: None,
                    };
                    state.grant(fp, grant.clone());
                    grants.push(Naive {
                        start: effective_at.max(folded),
                        void: None,
                        grant,
                        customer: fp,
                    });
                }
                Op::Void { pick, at } => {
                    if grants.is_empty() {
                        continue;
                    }
                    let n = grants.len();
                    let g = &mut grants[pick % n];
                    let at = BASE + at * MINUTE;
                    state.void("t", &g.grant.grant_id, at);
                    let moved = at.max(folded);
                    g.void = Some(g.void.map_or(moved, |v| v.min(moved)));
                }
                Op::Fold { days } => {
                    let limit = {
                        let w = now - LATENESS;
                        w - w.rem_euclid(DAY)
                    };
                    let point = (folded.max(BASE - 2 * DAY) + days * DAY).min(limit);
                    if point > folded {
                        state.fold(point, Some(now));
                        folded = point;
                        folds += 1;
                    }
                }
                Op::Tables => drop(rows(&mut state, now)),
            }
        }
        (rows(&mut state, now), naive(&grants, &burns, now), folds)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn fold_equals_a_full_replay_with_back_dated_commands_moved_to_the_fold_point(
            ops in prop::collection::vec(op(), 1..80)
        ) {
            let (got, want, _) = run(&ops);
            prop_assert_eq!(got.0, want.0, "credit_grants");
            prop_assert_eq!(got.1, want.1, "credit_balances");
        }
    }

    #[test]
    fn the_generator_folds_and_reaches_back_before_fold_points() {
        // A guard against a generator that never exercises the rule: four days of
        // hourly burns, two folds (to BASE, then BASE + 2 days), then a grant and a void
        // dated before the fold point, and one more burn.
        let mut ops = vec![Op::Grant {
            customer: false,
            amount: 50_000,
            priority: 0,
            effective: 0,
            lasts: None,
        }];
        for h in 0..96 {
            ops.push(Op::Burn {
                customer: false,
                after: h * 60,
                amount: 100,
            });
        }
        ops.push(Op::Fold { days: 2 });
        ops.push(Op::Fold { days: 2 });
        ops.push(Op::Grant {
            customer: false,
            amount: 2_000,
            priority: 0,
            effective: -60,
            lasts: Some(120),
        });
        ops.push(Op::Void { pick: 0, at: 30 });
        ops.push(Op::Burn {
            customer: false,
            after: 10,
            amount: 700,
        });
        let (got, want, folds) = run(&ops);
        assert_eq!(folds, 2);
        assert_eq!(got, want);
        let d = |n: i64| Decimal9::from_int(n);
        // g1's whole life (from an hour before BASE, for two hours) is before the fold
        // point: it starts there and expires whole.
        assert_eq!(got.0["g1"], [d(20), d(0), d(20), d(0), d(0)]);
        // g0's void at BASE + 30 min is moved to the fold point, after 48 hours of burn.
        assert_eq!(got.0["g0"], [d(500), d(48), d(0), d(452), d(0)]);
        // The burn after the fold point finds no open grant.
        assert_eq!(
            got.1["c1"].0[5],
            d(55),
            "overage: 48 hours after the fold, then 7"
        );
    }

    #[test]
    fn a_fold_forgets_the_burns_before_it_and_keeps_the_rate_window() {
        let mut state = CreditState::new();
        state.name(1, "t", "c1");
        for h in 0..(20 * 24) {
            state.burn(&BurnUpdate {
                customer: 1,
                timestamp: BASE + h * HOUR + 5,
                burn: cents(1),
            });
        }
        let now = BASE + 20 * DAY - HOUR + 5;
        assert_eq!(state.kept(), (480, 480));
        state.fold(BASE + 18 * DAY, Some(now));
        // Two days of instants; the 168 hours of the rate.
        assert_eq!(state.kept(), (2 * 24, 168));
    }
}
