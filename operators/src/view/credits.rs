//! The credits view: `credit_grants`, `credit_balances` and `credit_ledger` (by UTC
//! day) from the customers' grants, voids and burns ([`CreditState`] holds the
//! semantics). Its balances are left in [`Customers::balances`] for the views after it.
//! At every commit it folds the burn history behind its [`View::fold_point`] (the
//! state's bound).

use super::{Commanded, Commit, CustomerInput, Customers, TableOut, View};
use crate::CreditState;
use crate::names::NameRecord;
use om_model::time::DAY;
use om_model::{Command, Config, Micros};

/// The fold point of a commit: the UTC day start at or before the closed watermark
/// minus `horizon`. With `horizon` at least the allowed lateness, no event older than
/// that is accepted any more and no retraction of one applies, so what a view keeps of
/// that past is final. The credits view folds behind the credit horizon
/// ([`om_model::config::PipelineSettings::credit_horizon`]), which adds the reach of
/// back-dated commands; the costs view forgets its days behind the lateness.
pub fn fold_point(closed: Option<Micros>, horizon: Micros) -> Option<Micros> {
    let point = closed?.saturating_sub(horizon);
    Some(point - point.rem_euclid(DAY))
}

/// The credits view of one worker's customers.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Credits(CreditState);

impl View for Credits {
    fn name(&self) -> &'static str {
        "credits"
    }

    fn fold_point(&self, at: &Commit<'_>) -> Option<Micros> {
        fold_point(at.closed, at.config.pipeline.credit_horizon())
    }

    fn apply(&mut self, input: &CustomerInput, _: &Config) {
        match input {
            CustomerInput::Burn(b) => self.0.burn(b),
            CustomerInput::Name(NameRecord::Customer {
                fingerprint,
                tenant_id,
                customer_id,
            }) => self.0.name(*fingerprint, tenant_id, customer_id),
            _ => {}
        }
    }

    fn command(&mut self, c: Commanded<'_>) {
        match (c.command, c.owned) {
            (Command::Grant(g), Some(customer)) => self.0.grant(customer, g.clone()),
            (
                Command::VoidGrant {
                    tenant_id,
                    grant_id,
                    at,
                },
                _,
            ) => self.0.void(tenant_id, grant_id, *at),
            _ => {}
        }
    }

    fn changed(&self) -> bool {
        self.0.changed()
    }

    fn commit(&mut self, at: &Commit<'_>, customers: &mut Customers, out: &mut dyn TableOut) {
        if at.whole {
            let tables = self.0.tables(at.now);
            out.credit_grants(&tables.grants);
            out.credit_balances(&tables.balances, at.now);
            for (day, rows) in &tables.ledger_days {
                out.credit_ledger(*day, rows);
            }
            customers.balances = tables.balances;
        }
        let moved = self.0.take_moved();
        if moved > 0 {
            // Not silent: the operator learns that the rule applied.
            eprintln!(
                "warning: {moved} command(s) (grants, voids) reached back before the credit fold point {} and were applied at it; [pipeline] command_horizon (now {} h behind the closed watermark, with allowed_lateness) sets how far back a command applies at its own instant",
                om_model::time::format_micros(self.0.folded_at()),
                at.config.pipeline.credit_horizon() / om_model::time::HOUR,
            );
        }
        if at.days
            && let Some(point) = self.fold_point(at)
        {
            self.0.fold(point, at.now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BurnUpdate;
    use crate::view::Discard;
    use crate::view::testing::*;
    use om_model::Decimal9;
    use om_model::command::Grant;
    use om_model::time::HOUR;

    #[test]
    fn burns_draw_the_grant_down_and_leave_the_balance_for_later_views() {
        let config = config();
        let meters = meters(&config);
        let (fp, name) = customer("c1");
        let mut view = Credits::default();
        let mut customers = Customers::default();
        view.apply(&name, &config);
        let grant = Command::Grant(Grant {
            tenant_id: "acme".into(),
            grant_id: "g1".into(),
            customer_id: "c1".into(),
            amount: Decimal9::from_int(100),
            priority: 1,
            effective_at: T0,
            expires_at: None,
            price: None,
            currency: None,
        });
        view.command(Commanded {
            command: &grant,
            owned: Some(fp),
        });
        view.apply(
            &CustomerInput::Burn(BurnUpdate {
                customer: fp,
                timestamp: T0 + HOUR,
                burn: Decimal9::from_int(30),
            }),
            &config,
        );
        assert!(view.changed());
        let mut out = Recorder::default();
        let quiet = Commit {
            whole: false,
            ..commit(&config, &meters, T0 + 2 * HOUR)
        };
        view.commit(&quiet, &mut customers, &mut out);
        assert!(
            out.0.is_empty(),
            "nothing is written without a whole rewrite"
        );
        view.commit(
            &commit(&config, &meters, T0 + 2 * HOUR),
            &mut customers,
            &mut out,
        );
        assert!(!view.changed());
        assert_eq!(customers.balances.len(), 1);
        assert_eq!(customers.balances[0].balance, Decimal9::from_int(70));
        assert_eq!(out.of("credit_grants")[0].2.len(), 1);
        assert_eq!(out.of("credit_balances")[0].2.len(), 1);
        assert_eq!(
            out.of("credit_ledger").len(),
            1,
            "one day of ledger entries"
        );
    }

    #[test]
    fn a_commit_folds_the_history_behind_the_credit_horizon() {
        let mut config = config();
        let meters = meters(&config);
        config.pipeline.command_horizon = 3 * DAY;
        assert_eq!(config.pipeline.allowed_lateness, 48 * HOUR);
        let mut view = Credits::default();
        let mut customers = Customers::default();
        let closed = T0 + 5 * DAY + 7 * HOUR;
        let at = Commit {
            closed: Some(closed),
            ..commit(&config, &meters, closed)
        };
        view.commit(&at, &mut customers, &mut Discard);
        // The longer horizon (3 days of commands, not 48 h of lateness), down to its
        // day start: T0 + 2 days 7 h -> T0 + 2 days.
        assert_eq!(view.0.folded_at(), T0 + 2 * DAY);
        assert_eq!(fold_point(None, DAY), None);
        let whole_only = Commit {
            days: false,
            closed: Some(closed + 10 * DAY),
            ..commit(&config, &meters, closed)
        };
        view.commit(&whole_only, &mut customers, &mut Discard);
        assert_eq!(view.0.folded_at(), T0 + 2 * DAY, "only with the day tables");
    }
}
