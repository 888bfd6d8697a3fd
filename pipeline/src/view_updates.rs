//! Reader-side sums of one epoch's inputs to the per-customer views: each accepted
//! event's reading of a tracked meter goes to its (customer, meter, hour), each model
//! call to its (customer, UTC day, provider, model). One update per key and epoch then
//! travels to the customer's owner instead of one per event; a retraction adds the
//! negation. Sums are exact, so this changes nothing in the tables.

use om_model::views::CostTally;
use om_model::{Aggregation, Config, Decimal9, Micros, WindowSize};
use om_operators::view::CustomerInput;
use om_operators::{CostUpdate, HourUpdate};
use rustc_hash::FxHashMap;

/// What the meter series track: the sum and count meters, when a view needs them.
pub fn tracked_meters(config: &Config) -> Vec<Option<Aggregation>> {
    let wanted = |name: &str| {
        config.anomaly.enabled
            || config.forecasts
            || config.plans.iter().any(|p| {
                p.features.values().any(|f| {
                    matches!(f, om_model::config::Feature::Metered { meter, .. } if meter == name)
                })
            })
    };
    (0..config.meters.len())
        .map(|i| {
            let m = &config.meters[i];
            (config.is_summable(i) && wanted(&m.name)).then_some(m.aggregation)
        })
        .collect()
}

/// One epoch's sums of one reader.
#[derive(Debug, Default)]
pub struct ViewUpdates {
    /// (customer, meter, hour) -> (usage, events).
    hours: FxHashMap<(u64, u16, Micros), (Decimal9, i64)>,
    /// (customer, day, model key) -> totals.
    costs: FxHashMap<(u64, Micros, u32), CostTally>,
    /// (provider, model) by key.
    models: Vec<(String, String)>,
    /// The key of each (provider as the event names it, model): looked up by borrowed
    /// text, so a known model costs no allocation per event.
    named: FxHashMap<String, FxHashMap<String, u32>>,
    /// The key of each model of events that name no provider.
    unnamed: FxHashMap<String, u32>,
}

impl ViewUpdates {
    /// The key of a model call's (provider, model); a call that names no provider gets
    /// the catalog's, or none (empty) when the catalog does not know the model. The
    /// first call of a model the catalog does not know is reported on stderr.
    pub fn model_key(&mut self, config: &Config, provider: Option<&str>, model: &str) -> u32 {
        let known = match provider {
            Some(p) => self.named.get(p).and_then(|m| m.get(model)),
            None => self.unnamed.get(model),
        };
        if let Some(&k) = known {
            return k;
        }
        let resolved = match provider {
            Some(p) => p.to_string(),
            None => config
                .costs
                .prices
                .lookup(None, model)
                .map(|p| p.provider.clone())
                .unwrap_or_default(),
        };
        if config
            .costs
            .prices
            .lookup((!resolved.is_empty()).then_some(resolved.as_str()), model)
            .is_none()
        {
            eprintln!(
                "warning: model `{model}` (provider `{}`) is not in the price catalog: its `costs` rows are reported unpriced (priced = false); add a [[model_prices]] entry to price it",
                provider.unwrap_or("none given")
            );
        }
        let pair = (resolved, model.to_string());
        let k = match self.models.iter().position(|m| *m == pair) {
            Some(k) => k as u32,
            None => {
                self.models.push(pair);
                (self.models.len() - 1) as u32
            }
        };
        match provider {
            Some(p) => self
                .named
                .entry(p.to_string())
                .or_default()
                .insert(model.to_string(), k),
            None => self.unnamed.insert(model.to_string(), k),
        };
        k
    }

    /// Adds a reading of a tracked meter (`sign` -1: a retraction).
    pub fn reading(
        &mut self,
        customer: u64,
        meter: u16,
        aggregation: Aggregation,
        timestamp: Micros,
        value: Decimal9,
        sign: i64,
    ) {
        let v = if aggregation == Aggregation::Count {
            Decimal9::ONE
        } else {
            value
        };
        let slot = self
            .hours
            .entry((customer, meter, WindowSize::Hour.start(timestamp)))
            .or_default();
        slot.0 = Decimal9::from_raw(slot.0.raw() + i128::from(sign) * v.raw());
        slot.1 += sign;
    }

    /// Adds a model call (`sign` -1: a retraction).
    pub fn call(
        &mut self,
        customer: u64,
        model: u32,
        timestamp: Micros,
        tokens: [Decimal9; 3],
        burn: Decimal9,
        sign: i64,
    ) {
        let one = CostTally {
            events: 1,
            input_tokens: tokens[0],
            cached_input_tokens: tokens[1],
            output_tokens: tokens[2],
            credits: burn,
        };
        self.costs
            .entry((customer, WindowSize::Day.start(timestamp), model))
            .or_default()
            .add(&one, sign);
    }

    /// Sends the epoch's sums and starts the next epoch empty (model keys are kept).
    pub fn drain(&mut self, mut send: impl FnMut(CustomerInput)) {
        for ((customer, meter, hour), (value, events)) in self.hours.drain() {
            send(CustomerInput::Hour(HourUpdate {
                customer,
                meter,
                hour,
                value,
                events,
            }));
        }
        for ((customer, day, model), tally) in self.costs.drain() {
            let (provider, model) = &self.models[model as usize];
            send(CustomerInput::Cost(Box::new(CostUpdate {
                customer,
                day,
                provider: provider.clone(),
                model: model.clone(),
                tally,
            })));
        }
    }
}
