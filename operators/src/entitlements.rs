//! Entitlements (DESIGN.md section 3): which features each customer may use now.
//!
//! A customer's plan at `now` (the watermark) is the one of its latest `subscribe`
//! command with `effective_at <= now` (at the same instant, the later command). For
//! every feature of any plan of the config, each known customer gets one row:
//! - a feature its plan lacks, or has switched off, or any feature of a customer with
//!   no plan: no access, `not_in_plan`;
//! - a boolean feature switched on: access, `ok`;
//! - a metered feature: access while the meter's usage in the calendar month holding
//!   `now` is below the limit (`ok`), else `limit_exceeded`; `remaining` is
//!   max(limit - usage, 0);
//! - a credit feature: access while the credit balance is positive (`ok`), else
//!   `no_credits`; `remaining` is the balance.

use om_model::config::{Feature, Plan};
use om_model::views::{EntitlementRow, Reason};
use om_model::{Decimal9, Micros};
use std::collections::{BTreeMap, BTreeSet};

/// The subscriptions of the customers a worker owns.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Subscriptions {
    /// Customer -> (effective_at, plan), by effective_at (a customer has a few: a
    /// map's node would hold eleven).
    plans: BTreeMap<u64, Vec<(Micros, String)>>,
}

impl Subscriptions {
    /// Records a `subscribe` command.
    pub fn subscribe(&mut self, customer: u64, effective_at: Micros, plan: &str) {
        let plans = self.plans.entry(customer).or_default();
        // At one instant, the later command.
        match plans.binary_search_by_key(&effective_at, |(t, _)| *t) {
            Ok(i) => plans[i].1 = plan.to_string(),
            Err(i) => plans.insert(i, (effective_at, plan.to_string())),
        }
    }

    /// Every subscription: (customer, effective_at, plan, the next one's effective_at),
    /// by customer and time.
    pub fn all(&self) -> impl Iterator<Item = (u64, Micros, &str, Option<Micros>)> {
        self.plans.iter().flat_map(|(&customer, plans)| {
            let mut it = plans.iter().peekable();
            std::iter::from_fn(move || {
                let (from, plan) = it.next()?;
                Some((customer, *from, plan.as_str(), it.peek().map(|(t, _)| *t)))
            })
        })
    }

    /// The customer's plan at `now`.
    pub fn plan_at(&self, customer: u64, now: Micros) -> Option<&str> {
        let plans = self.plans.get(&customer)?;
        let upto = plans.partition_point(|(t, _)| *t <= now);
        Some(plans[..upto].last()?.1.as_str())
    }
}

/// What the rows need besides the plans: usage this month and credit balances.
pub trait Standing {
    /// The meter's usage in the month holding `now`.
    fn month_usage(&self, customer: u64, meter: &str) -> Decimal9;
    /// The credit balance now.
    fn balance(&self, customer: u64) -> Decimal9;
}

/// The rows of `customers` (fingerprint, tenant, customer) at `now`.
pub fn rows<'a>(
    customers: impl IntoIterator<Item = (u64, &'a str, &'a str)>,
    plans: &'a [Plan],
    subscriptions: &'a Subscriptions,
    now: Option<Micros>,
    standing: &impl Standing,
) -> Vec<EntitlementRow<'a>> {
    let features: BTreeSet<&str> = plans
        .iter()
        .flat_map(|p| p.features.keys().map(String::as_str))
        .collect();
    let mut out = Vec::new();
    for (customer, tenant_id, customer_id) in customers {
        let plan = now.and_then(|now| subscriptions.plan_at(customer, now));
        let plan_features = plan.and_then(|name| plans.iter().find(|p| p.name == name));
        for &feature in &features {
            let mut row = EntitlementRow {
                tenant_id,
                customer_id,
                feature,
                plan,
                has_access: false,
                usage: None,
                limit: None,
                remaining: None,
                reason: Reason::NotInPlan,
            };
            match plan_features.and_then(|p| p.features.get(feature)) {
                None | Some(Feature::Boolean(false)) => {}
                Some(Feature::Boolean(true)) => row.reason = Reason::Ok,
                Some(Feature::Metered { meter, limit, .. }) => {
                    let usage = standing.month_usage(customer, meter);
                    row.usage = Some(usage);
                    row.limit = Some(*limit);
                    row.remaining = Some((*limit - usage).max(Decimal9::ZERO));
                    row.reason = if usage < *limit {
                        Reason::Ok
                    } else {
                        Reason::LimitExceeded
                    };
                }
                Some(Feature::Credits) => {
                    let balance = standing.balance(customer);
                    row.remaining = Some(balance);
                    row.reason = if balance > Decimal9::ZERO {
                        Reason::Ok
                    } else {
                        Reason::NoCredits
                    };
                }
            }
            row.has_access = row.reason == Reason::Ok;
            out.push(row);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use om_model::Config;

    struct Fixed;

    impl Standing for Fixed {
        fn month_usage(&self, customer: u64, _meter: &str) -> Decimal9 {
            Decimal9::from_int([0, 150, 200][customer as usize % 3])
        }
        fn balance(&self, customer: u64) -> Decimal9 {
            Decimal9::from_int(if customer == 1 { 5 } else { 0 })
        }
    }

    #[test]
    fn every_reason_code_by_hand() {
        let config = Config::from_toml(
            r#"
[[meters]]
name = "api_calls"
event_type = "api_call"
aggregation = "count"

[[plans]]
name = "free"
features.api_calls = { meter = "api_calls", limit = "200", period = "month" }
features.ai = { credits = true }
features.sso = false

[[plans]]
name = "pro"
features.sso = true
"#,
        )
        .unwrap();
        let mut subs = Subscriptions::default();
        subs.subscribe(1, 100, "free");
        subs.subscribe(2, 100, "free");
        subs.subscribe(3, 100, "free");
        subs.subscribe(3, 500, "pro"); // not yet effective at now = 300
        let customers = [(1, "t", "c1"), (2, "t", "c2"), (4, "t", "c4")];
        let rows = rows(customers, &config.plans, &subs, Some(300), &Fixed);
        let get = |c: &str, f: &str| {
            rows.iter()
                .find(|r| r.customer_id == c && r.feature == f)
                .unwrap()
                .clone()
        };
        assert_eq!(rows.len(), 9, "3 customers x 3 features");
        // c1: 150 of 200 calls, 5 credits, sso switched off in its plan.
        let r = get("c1", "api_calls");
        assert_eq!((r.has_access, r.reason), (true, Reason::Ok));
        assert_eq!(r.usage, Some(Decimal9::from_int(150)));
        assert_eq!(r.remaining, Some(Decimal9::from_int(50)));
        assert_eq!(get("c1", "ai").reason, Reason::Ok);
        assert_eq!(get("c1", "ai").remaining, Some(Decimal9::from_int(5)));
        assert_eq!(get("c1", "sso").reason, Reason::NotInPlan);
        // c2: 200 of 200 calls: the limit is reached; no credits.
        let r = get("c2", "api_calls");
        assert_eq!((r.has_access, r.reason), (false, Reason::LimitExceeded));
        assert_eq!(r.remaining, Some(Decimal9::ZERO));
        assert_eq!(get("c2", "ai").reason, Reason::NoCredits);
        assert!(!get("c2", "ai").has_access);
        // c4: no plan at all.
        let r = get("c4", "sso");
        assert_eq!(
            (r.plan, r.has_access, r.reason),
            (None, false, Reason::NotInPlan)
        );
        // The later subscription takes over once effective.
        assert_eq!(subs.plan_at(3, 300), Some("free"));
        assert_eq!(subs.plan_at(3, 500), Some("pro"));
        assert_eq!(subs.plan_at(3, 99), None);
    }
}
