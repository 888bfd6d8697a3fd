//! The rows of the credit tables (`credit_grants`, `credit_balances`, `credit_ledger`;
//! DESIGN.md section 4), as the credits operator computes them.

use crate::command::Grant;
use crate::decimal::Decimal9;
use crate::time::Micros;

/// A `credit_grants` row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantRow {
    /// The grant as commanded.
    pub grant: Grant,
    /// The instant of its void, if one was commanded (even if still in the future).
    pub voided_at: Option<Micros>,
    /// Credits burned from it.
    pub consumed: Decimal9,
    /// Remainder lost at expiry.
    pub expired: Decimal9,
    /// Remainder lost at the void.
    pub voided: Decimal9,
    /// What is left: amount - consumed - expired - voided.
    pub remaining: Decimal9,
}

/// A `credit_balances` row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BalanceRow {
    /// Tenant.
    pub tenant_id: String,
    /// Customer.
    pub customer_id: String,
    /// Remaining credits of the grants active now.
    pub balance: Decimal9,
    /// Amounts of the grants effective by now.
    pub granted: Decimal9,
    /// Burned from grants.
    pub consumed: Decimal9,
    /// Lost at expiries.
    pub expired: Decimal9,
    /// Lost at voids.
    pub voided: Decimal9,
    /// Burn no grant covered.
    pub overage: Decimal9,
    /// When the balance runs out at the trailing 7-day burn rate; none when the rate or
    /// the balance is zero.
    pub exhaustion_at: Option<Micros>,
}

/// What a `credit_ledger` entry records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum EntryKind {
    /// A grant's amount, at `effective_at`.
    Grant,
    /// Credits burned from a grant during an hour (at the hour's start).
    Burn,
    /// A grant's remainder at `expires_at`.
    Expiry,
    /// A grant's remainder at its void.
    Void,
    /// Burn no grant covered during an hour (no grant).
    Overage,
}

impl EntryKind {
    /// The `entry` column's text.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Grant => "grant",
            EntryKind::Burn => "burn",
            EntryKind::Expiry => "expiry",
            EntryKind::Void => "void",
            EntryKind::Overage => "overage",
        }
    }
}

/// A `credit_ledger` row, borrowing its names from the credit state (there are many
/// rows per customer). Amounts are positive; a grant's remaining is its `grant` entry
/// minus its `burn`, `expiry` and `void` entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LedgerRow<'a> {
    /// Tenant.
    pub tenant_id: &'a str,
    /// Customer.
    pub customer_id: &'a str,
    /// The grant, none for overage.
    pub grant_id: Option<&'a str>,
    /// The kind of entry.
    pub kind: EntryKind,
    /// When: the instant of a lifecycle entry, the hour's start for burn and overage.
    pub at: Micros,
    /// Credits.
    pub amount: Decimal9,
}

/// The credit tables of some customers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CreditTables<'a> {
    /// `credit_grants` rows, borrowed from the state (a commit writes every row, so
    /// copying them would cost an allocation per string per row per commit).
    pub grants: Vec<&'a GrantRow>,
    /// `credit_balances` rows.
    pub balances: Vec<BalanceRow>,
    /// `credit_ledger` rows of the UTC days (by start) whose rows may have changed since
    /// the previous computation: each such day with all its rows (none: the day has no
    /// rows left, so its file is to be removed). The ledger is partitioned by day so that
    /// a commit rewrites the days it may have changed, not the whole history.
    pub ledger_days: Vec<(Micros, Vec<LedgerRow<'a>>)>,
}
