//! The rows of the monetization views (DESIGN.md sections 3 and 4): `entitlements`,
//! `costs`, `anomaly_scores` and `forecasts`, as the operators compute them. Names are
//! borrowed from the operator state that holds them.

use crate::decimal::Decimal9;
use crate::time::Micros;

/// Why a customer has access to a feature or not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reason {
    /// Access.
    Ok,
    /// A metered feature whose usage this period reached its limit.
    LimitExceeded,
    /// A credit feature with no positive balance.
    NoCredits,
    /// The customer's plan does not have the feature, has it switched off, or the
    /// customer has no plan.
    NotInPlan,
}

impl Reason {
    /// The `reason` column text.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Ok => "ok",
            Reason::LimitExceeded => "limit_exceeded",
            Reason::NoCredits => "no_credits",
            Reason::NotInPlan => "not_in_plan",
        }
    }
}

/// A `subscriptions` row: (tenant, customer, plan, effective_at, ends_at).
pub type SubscriptionRow<'a> = (&'a str, &'a str, &'a str, Micros, Option<Micros>);

/// An `entitlements` row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntitlementRow<'a> {
    /// Tenant.
    pub tenant_id: &'a str,
    /// Customer.
    pub customer_id: &'a str,
    /// Feature name (from any plan of the config).
    pub feature: &'a str,
    /// The customer's plan now; none when it has none.
    pub plan: Option<&'a str>,
    /// Whether the customer may use the feature now.
    pub has_access: bool,
    /// Metered: the meter's usage in the current period; credits: none.
    pub usage: Option<Decimal9>,
    /// Metered: the limit per period.
    pub limit: Option<Decimal9>,
    /// Metered: max(limit - usage, 0); credits: the balance.
    pub remaining: Option<Decimal9>,
    /// Why.
    pub reason: Reason,
}

/// The token and credit totals of one `costs` row.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CostTally {
    /// Model calls.
    pub events: i64,
    /// Input tokens (billed at the input price).
    pub input_tokens: Decimal9,
    /// Cached input tokens (billed at the cached-input price).
    pub cached_input_tokens: Decimal9,
    /// Output tokens.
    pub output_tokens: Decimal9,
    /// Credits the calls burned.
    pub credits: Decimal9,
}

impl CostTally {
    /// Adds `other` (or, `sign` = -1, subtracts it: a retraction).
    pub fn add(&mut self, other: &CostTally, sign: i64) {
        let add = |a: &mut Decimal9, b: Decimal9| {
            *a = Decimal9::from_raw(a.raw() + sign as i128 * b.raw());
        };
        self.events += sign * other.events;
        add(&mut self.input_tokens, other.input_tokens);
        add(&mut self.cached_input_tokens, other.cached_input_tokens);
        add(&mut self.output_tokens, other.output_tokens);
        add(&mut self.credits, other.credits);
    }

    /// True when every total is zero (all its calls retracted).
    pub fn is_zero(&self) -> bool {
        *self == CostTally::default()
    }
}

/// A `costs` row: one (customer, provider, model, UTC day).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CostRow<'a> {
    /// Tenant.
    pub tenant_id: &'a str,
    /// Customer.
    pub customer_id: &'a str,
    /// Provider as the events name it, or as the catalog lists the model; empty when
    /// neither knows it.
    pub provider: &'a str,
    /// Model id as the events name it.
    pub model: &'a str,
    /// Start of the UTC day.
    pub day: Micros,
    /// Totals.
    pub tally: CostTally,
    /// Provider cost in USD; none when the model is not in the catalog.
    pub provider_cost_usd: Option<Decimal9>,
    /// Credits x credit price; none without a credit price.
    pub credit_value_usd: Option<Decimal9>,
    /// credit_value_usd - provider_cost_usd; none when either is.
    pub margin_usd: Option<Decimal9>,
}

/// An `anomaly_scores` row: one (customer, meter, hour window with usage).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnomalyRow<'a> {
    /// Tenant.
    pub tenant_id: &'a str,
    /// Customer.
    pub customer_id: &'a str,
    /// Meter name.
    pub meter: &'a str,
    /// Start of the hour.
    pub window_start: Micros,
    /// The hour's usage (all dimension groups together).
    pub value: Decimal9,
    /// Mean of the 24 hours before (missing hours count as 0).
    pub baseline_mean: Decimal9,
    /// Their population standard deviation.
    pub baseline_std: Decimal9,
    /// (value - mean) / max(std, 1); none when it overflows the 38-digit range.
    pub score: Option<Decimal9>,
    /// score >= threshold and value >= min_value.
    pub flagged: bool,
}

/// A `forecasts` row: one (customer, meter) for the month holding the watermark.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForecastRow<'a> {
    /// Tenant.
    pub tenant_id: &'a str,
    /// Customer.
    pub customer_id: &'a str,
    /// Meter name.
    pub meter: &'a str,
    /// Start of the month.
    pub month: Micros,
    /// The watermark the forecast is made at.
    pub as_of: Micros,
    /// Usage in the month up to the watermark.
    pub usage_to_date: Decimal9,
    /// Usage in the trailing 7 days (the 168 hour windows up to the watermark's).
    pub trailing_7d: Decimal9,
    /// trailing_7d / 7.
    pub daily_rate: Decimal9,
    /// usage_to_date + trailing_7d / 7 days x (month end - watermark); none on overflow.
    pub forecast: Option<Decimal9>,
}
