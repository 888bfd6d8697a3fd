//! AI cost: model calls summed per (customer, provider, model, UTC day), priced from the
//! model price catalog (`om_model::prices`).
//!
//! Readers sum each epoch's calls per (customer, day, provider, model) into a
//! [`CostUpdate`] (a retraction subtracts); the customer's owner adds them up. A row's
//! provider cost is its summed tokens times the catalog prices, rounded once; a model
//! the catalog does not know gets no price (`priced` false, cost and margin null) rather
//! than a silent 0. Credits are the burn of the same calls; their value is credits x
//! `[costs] credit_price`, and the margin is that value minus the provider cost.
//!
//! Rows are kept by day: a day is rewritten when it changed, and forgotten once it is
//! final (it ended before the watermark minus the allowed lateness: no accepted event or
//! retraction can reach it any more).

use om_model::config::CostSettings;
use om_model::views::{CostRow, CostTally};
use om_model::{Decimal9, Micros, time::DAY};
use std::collections::{BTreeMap, BTreeSet};

/// One epoch's calls of a (customer, UTC day, provider, model), from one reader.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CostUpdate {
    /// Fingerprint of (tenant, customer): the routing key.
    pub customer: u64,
    /// Start of the UTC day.
    pub day: Micros,
    /// Provider (as the events name it, or as the catalog lists the model; empty when
    /// unknown).
    pub provider: String,
    /// Model id.
    pub model: String,
    /// Totals (negative: retracted).
    pub tally: CostTally,
}

/// The cost state of the customers a worker owns.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct CostState {
    /// (provider, model) by index, and the index of each.
    models: Vec<(String, String)>,
    /// provider -> model -> index (looked up by borrowed text).
    model_index: BTreeMap<String, BTreeMap<String, u32>>,
    /// Day -> (customer, model) -> totals; only days that are not final.
    days: BTreeMap<Micros, BTreeMap<(u64, u32), CostTally>>,
    /// Days changed since they were last taken.
    dirty: BTreeSet<Micros>,
}

impl CostState {
    /// Adds one update.
    pub fn apply(&mut self, u: &CostUpdate) {
        let known = self
            .model_index
            .get(u.provider.as_str())
            .and_then(|m| m.get(u.model.as_str()));
        let model = match known {
            Some(&i) => i,
            None => {
                let i = self.models.len() as u32;
                self.models.push((u.provider.clone(), u.model.clone()));
                self.model_index
                    .entry(u.provider.clone())
                    .or_default()
                    .insert(u.model.clone(), i);
                i
            }
        };
        let day = self.days.entry(u.day).or_default();
        let slot = day.entry((u.customer, model)).or_default();
        slot.add(&u.tally, 1);
        if slot.is_zero() {
            day.remove(&(u.customer, model));
        }
        self.dirty.insert(u.day);
    }

    /// The rows of every day changed since the last call (a day with no rows left comes
    /// with none); then forgets the days final at `closed`.
    pub fn take_days<'a>(
        &'a mut self,
        closed: Option<Micros>,
        lateness: Micros,
        settings: &CostSettings,
        names: &'a BTreeMap<u64, (String, String)>,
    ) -> Vec<(Micros, Vec<CostRow<'a>>)> {
        // Final days leave memory; those changed since their last write are written
        // once more first.
        let mut finished = BTreeMap::new();
        if let Some(w) = closed {
            let open = self.days.split_off(&(w.saturating_sub(lateness) - DAY + 1));
            finished = std::mem::replace(&mut self.days, open);
        }
        let dirty = std::mem::take(&mut self.dirty);
        let this = &*self;
        let mut out = Vec::with_capacity(dirty.len());
        for day in dirty {
            let tallies = this.days.get(&day).or(finished.get(&day));
            let mut rows = Vec::new();
            for (&(customer, model), tally) in tallies.into_iter().flatten() {
                let Some((tenant_id, customer_id)) = names.get(&customer) else {
                    continue;
                };
                let (provider, model) = &this.models[model as usize];
                rows.push(cost_row(
                    (tenant_id, customer_id),
                    (provider, model),
                    day,
                    *tally,
                    settings,
                ));
            }
            out.push((day, rows));
        }
        out
    }
}

/// One row, priced.
fn cost_row<'a>(
    (tenant_id, customer_id): (&'a str, &'a str),
    (provider, model): (&'a str, &'a str),
    day: Micros,
    tally: CostTally,
    settings: &CostSettings,
) -> CostRow<'a> {
    let price = settings
        .prices
        .lookup((!provider.is_empty()).then_some(provider), model);
    let provider_cost_usd = price.and_then(|p| {
        Decimal9::sum_of_products_div(
            [
                (tally.input_tokens, p.input),
                (tally.cached_input_tokens, p.cached_input),
                (tally.output_tokens, p.output),
            ],
            1_000_000,
        )
    });
    let credit_value_usd = settings
        .credit_price
        .and_then(|p| tally.credits.checked_mul(p));
    let margin_usd = match (credit_value_usd, provider_cost_usd) {
        (Some(v), Some(c)) => v.checked_sub(c),
        _ => None,
    };
    CostRow {
        tenant_id,
        customer_id,
        provider,
        model,
        day,
        tally,
        provider_cost_usd,
        credit_value_usd,
        margin_usd,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use om_model::Config;

    fn d(s: &str) -> Decimal9 {
        Decimal9::parse(s).unwrap()
    }

    #[test]
    fn every_cost_column_by_hand() {
        let config = Config::from_toml(
            r#"
[costs]
credit_price = "0.001"

[[model_prices]]
provider = "acme"
model = "m1"
input = "2.50"
cached_input = "1.25"
output = "10"
"#,
        )
        .unwrap();
        let names = BTreeMap::from([(7, ("t".to_string(), "c".to_string()))]);
        let mut state = CostState::default();
        let tally = |events, input: &str, cached: &str, output: &str, credits: &str| CostTally {
            events,
            input_tokens: d(input),
            cached_input_tokens: d(cached),
            output_tokens: d(output),
            credits: d(credits),
        };
        let update = |model: &str, tally| CostUpdate {
            customer: 7,
            day: 20 * DAY,
            provider: "acme".into(),
            model: model.into(),
            tally,
        };
        state.apply(&update("m1", tally(2, "1000", "400", "300", "5.5")));
        state.apply(&update("m1", tally(1, "1", "0", "0", "0")));
        state.apply(&update("unknown-model", tally(1, "10", "0", "10", "1")));
        let days = state.take_days(None, DAY, &config.costs, &names);
        assert_eq!(days.len(), 1);
        let rows = &days[0].1;
        // m1: 1,001 x 2.50 + 400 x 1.25 + 300 x 10 = 2,502.5 + 500 + 3,000 = 6,002.5
        // per million = 0.0060025 USD; credits 5.5 x 0.001 = 0.0055 USD;
        // margin 0.0055 - 0.0060025 = -0.0005025.
        let m1 = rows.iter().find(|r| r.model == "m1").unwrap();
        assert_eq!(m1.tally, tally(3, "1001", "400", "300", "5.5"));
        assert_eq!(m1.provider_cost_usd, Some(d("0.0060025")));
        assert_eq!(m1.credit_value_usd, Some(d("0.0055")));
        assert_eq!(m1.margin_usd, Some(d("-0.0005025")));
        // An unknown model is reported with its tokens and credits, unpriced.
        let unknown = rows.iter().find(|r| r.model == "unknown-model").unwrap();
        assert_eq!(unknown.provider_cost_usd, None);
        assert_eq!(unknown.margin_usd, None);
        assert_eq!(unknown.credit_value_usd, Some(d("0.001")));
    }

    #[test]
    fn retractions_remove_rows_and_final_days_leave_memory() {
        let config = Config::builtin();
        let names = BTreeMap::from([(7, ("t".to_string(), "c".to_string()))]);
        let mut state = CostState::default();
        let one = CostTally {
            events: 1,
            input_tokens: d("5"),
            ..CostTally::default()
        };
        let mut u = CostUpdate {
            customer: 7,
            day: 0,
            provider: "openai".into(),
            model: "gpt-4o".into(),
            tally: one,
        };
        state.apply(&u);
        assert_eq!(
            state.take_days(None, DAY, &config.costs, &names)[0].1.len(),
            1
        );
        u.tally.add(&one, -2);
        state.apply(&u);
        let days = state.take_days(None, DAY, &config.costs, &names);
        assert_eq!(days, vec![(0, vec![])], "the day's file is emptied");
        u.tally = one;
        state.apply(&u);
        // Watermark 3 days later with 1 day of lateness: day 0 is final; it changed, so
        // it is written once more, then forgotten.
        assert_eq!(
            state.take_days(Some(3 * DAY), DAY, &config.costs, &names)[0]
                .1
                .len(),
            1
        );
        assert!(state.days.is_empty());
    }
}
