//! The entitlements view: the customers' plans (`subscriptions`) and what each may use
//! now (`entitlements`, [`crate::entitlements`] holds the semantics), from the
//! `subscribe` commands, this month's usage ([`Customers::series`]) and the balances of
//! the credits view.

use super::{Commanded, Commit, Customers, TableOut, View};
use crate::Subscriptions;
use crate::entitlements::{self, Standing};
use crate::meter_series::MeterSeries;
use om_model::views::{EntitlementRow, SubscriptionRow};
use om_model::{Command, Decimal9, Micros, WindowSize};
use std::collections::BTreeMap;

/// The plans of one worker's customers.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Entitlements {
    subscriptions: Subscriptions,
    /// A subscription arrived since the last commit.
    #[serde(skip)]
    changed: bool,
}

impl View for Entitlements {
    fn name(&self) -> &'static str {
        "entitlements"
    }

    /// None: every subscription is kept (the `subscriptions` table lists them all).
    fn fold_point(&self, _: &Commit<'_>) -> Option<Micros> {
        None
    }

    fn command(&mut self, c: Commanded<'_>) {
        if let (
            Command::Subscribe {
                plan, effective_at, ..
            },
            Some(customer),
        ) = (c.command, c.owned)
        {
            self.subscriptions.subscribe(customer, *effective_at, plan);
            self.changed = true;
        }
    }

    fn changed(&self) -> bool {
        self.changed
    }

    fn commit(&mut self, at: &Commit<'_>, customers: &mut Customers, out: &mut dyn TableOut) {
        self.changed = false;
        if !at.whole {
            return;
        }
        let rows: Vec<EntitlementRow<'_>> = if at.config.plans.is_empty() {
            Vec::new()
        } else {
            let standing = CustomerStanding {
                series: &customers.series,
                names: &customers.names,
                balances: customers
                    .balances
                    .iter()
                    .map(|b| ((b.tenant_id.as_str(), b.customer_id.as_str()), b.balance))
                    .collect(),
                meters: at.meters,
                month: at.now.map(|n| WindowSize::Month.start(n)),
            };
            entitlements::rows(
                customers
                    .names
                    .iter()
                    .map(|(&fp, (t, c))| (fp, t.as_str(), c.as_str())),
                &at.config.plans,
                &self.subscriptions,
                at.now,
                &standing,
            )
        };
        out.entitlements(&rows, at.now);
        let subscriptions: Vec<SubscriptionRow<'_>> = self
            .subscriptions
            .all()
            .filter_map(|(fp, from, plan, to)| {
                let (t, c) = customers.names.get(&fp)?;
                Some((t.as_str(), c.as_str(), plan, from, to))
            })
            .collect();
        out.subscriptions(&subscriptions);
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::CustomerInput;
    use crate::view::testing::*;

    fn subscribe(plan: &str) -> Command {
        Command::Subscribe {
            tenant_id: "acme".into(),
            customer_id: "c1".into(),
            plan: plan.into(),
            effective_at: T0,
        }
    }

    #[test]
    fn this_months_usage_counts_against_a_metered_limit() {
        let config = config();
        let meters = meters(&config);
        let api_calls = meters.iter().position(|m| m == "api_calls").unwrap() as u16;
        let (fp, _) = customer("c1");
        let mut customers = Customers::default();
        customers.name(fp, "acme", "c1", true);
        customers
            .series
            .apply(&match hour(fp, api_calls, 1, 1_000) {
                CustomerInput::Hour(h) => h,
                _ => unreachable!(),
            });
        let mut view = Entitlements::default();
        view.command(Commanded {
            command: &subscribe("free"),
            owned: Some(fp),
        });
        assert!(view.changed());
        let mut out = Recorder::default();
        view.commit(
            &commit(&config, &meters, T0 + 2 * 3_600_000_000),
            &mut customers,
            &mut out,
        );
        assert!(!view.changed());
        let rows = &out.of("entitlements")[0].2;
        let calls = rows
            .iter()
            .find(|r| r.contains("feature: \"api_calls\""))
            .unwrap();
        assert!(calls.contains("reason: LimitExceeded"), "{calls}");
        let ai = rows.iter().find(|r| r.contains("feature: \"ai\"")).unwrap();
        assert!(ai.contains("reason: NoCredits"), "no balance: {ai}");
        assert_eq!(out.of("subscriptions")[0].2.len(), 1);
    }

    #[test]
    fn a_subscription_of_a_customer_owned_elsewhere_is_not_kept() {
        let mut view = Entitlements::default();
        view.command(Commanded {
            command: &subscribe("pro"),
            owned: None,
        });
        assert!(!view.changed());
        assert_eq!(view.subscriptions.all().count(), 0);
    }
}
