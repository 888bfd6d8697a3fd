//! Commands (DESIGN.md 2.2): the second input stream, which changes credits, plans and
//! the events already accepted rather than reporting usage.

use crate::decimal::Decimal9;
use crate::time::Micros;

/// A credit grant: `amount` credits for `customer_id`, usable from `effective_at` until
/// `expires_at` (never when absent), taken in `priority` order (lower first).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Grant {
    /// Tenant, `default` when absent.
    pub tenant_id: String,
    /// The grant's id, unique within the tenant.
    pub grant_id: String,
    /// The customer the credits belong to.
    pub customer_id: String,
    /// Credits granted (> 0).
    pub amount: Decimal9,
    /// Burn order: lower priorities are used first.
    pub priority: i64,
    /// First instant the grant can be burned.
    pub effective_at: Micros,
    /// The instant the remainder expires (breakage); never when absent.
    pub expires_at: Option<Micros>,
    /// What the customer paid for the grant (revenue recognition), if given.
    pub price: Option<Decimal9>,
    /// The currency of `price`.
    pub currency: Option<String>,
}

/// One command.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Command {
    /// Grant credits.
    Grant(Grant),
    /// Void a grant at an instant: its remainder then is voided, not burned.
    VoidGrant {
        /// Tenant, `default` when absent.
        tenant_id: String,
        /// The grant voided.
        grant_id: String,
        /// The instant of the void.
        at: Micros,
    },
    /// Put a customer on a plan from an instant on.
    Subscribe {
        /// Tenant, `default` when absent.
        tenant_id: String,
        /// The customer.
        customer_id: String,
        /// A plan of the config.
        plan: String,
        /// From when.
        effective_at: Micros,
    },
    /// Remove one accepted event's usage, cost and burn everywhere.
    RetractEvent {
        /// Tenant, `default` when absent.
        tenant_id: String,
        /// The event's id (its idempotency key).
        event_id: String,
    },
}

impl Command {
    /// The tenant the command belongs to.
    pub fn tenant_id(&self) -> &str {
        match self {
            Command::Grant(g) => &g.tenant_id,
            Command::VoidGrant { tenant_id, .. }
            | Command::Subscribe { tenant_id, .. }
            | Command::RetractEvent { tenant_id, .. } => tenant_id,
        }
    }
}
