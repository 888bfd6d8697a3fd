//! The costs view: `costs` by UTC day, model calls per (customer, provider, model, day)
//! priced from the model price catalog ([`CostState`] holds the semantics).

use super::{Commit, CustomerInput, Customers, TableOut, View};
use crate::CostState;
use om_model::{Config, Micros};

/// The model calls of one worker's customers, by day until final.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Costs(CostState);

impl View for Costs {
    fn name(&self) -> &'static str {
        "costs"
    }

    /// Days that ended by the closed watermark minus the lateness are final: written
    /// once more if they changed, then forgotten.
    fn fold_point(&self, at: &Commit<'_>) -> Option<Micros> {
        super::fold_point(at.closed, at.config.pipeline.allowed_lateness)
    }

    fn apply(&mut self, input: &CustomerInput, config: &Config) {
        // With the view off nothing would ever take (and so forget) its days.
        if let (CustomerInput::Cost(c), true) = (input, config.costs.enabled) {
            self.0.apply(c);
        }
    }

    fn commit(&mut self, at: &Commit<'_>, customers: &mut Customers, out: &mut dyn TableOut) {
        if !at.days || !at.config.costs.enabled {
            return;
        }
        let days = self.0.take_days(
            at.closed,
            at.config.pipeline.allowed_lateness,
            &at.config.costs,
            &customers.names,
        );
        for (day, rows) in days {
            out.costs(day, &rows);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CostUpdate;
    use crate::view::testing::*;
    use om_model::Decimal9;
    use om_model::views::CostTally;

    fn call(customer: u64) -> CustomerInput {
        CustomerInput::Cost(Box::new(CostUpdate {
            customer,
            day: T0,
            provider: "openai".into(),
            model: "gpt-4o".into(),
            tally: CostTally {
                events: 1,
                input_tokens: Decimal9::from_int(1_000),
                cached_input_tokens: Decimal9::ZERO,
                output_tokens: Decimal9::from_int(100),
                credits: Decimal9::ZERO,
            },
        }))
    }

    #[test]
    fn calls_are_priced_by_day_and_not_kept_with_the_view_off() {
        let mut config = config();
        let meters = meters(&config);
        let (fp, _) = customer("c1");
        let mut customers = Customers::default();
        customers.name(fp, "acme", "c1", true);
        let mut view = Costs::default();
        view.apply(&call(fp), &config);
        let mut out = Recorder::default();
        view.commit(&commit(&config, &meters, T0 + 1), &mut customers, &mut out);
        let days = out.of("costs");
        assert_eq!((days.len(), days[0].1), (1, Some(T0)));
        assert!(
            days[0].2[0].contains("provider_cost_usd: Some("),
            "{:?}",
            days[0].2
        );
        config.costs.enabled = false;
        let mut off = Costs::default();
        off.apply(&call(fp), &config);
        config.costs.enabled = true;
        let mut none = Recorder::default();
        off.commit(&commit(&config, &meters, T0 + 1), &mut customers, &mut none);
        assert!(none.0.is_empty(), "{:?}", none.0);
    }
}
