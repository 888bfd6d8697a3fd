//! The AI model price catalog behind the `costs` table: USD per million tokens for
//! input, cached input and output, per (provider, model).
//!
//! The catalog ships as data (`model/data/model_prices.toml`, every price with the date
//! and the public page it was taken from) and is embedded in the binary; a pipeline
//! config can add or replace entries with `[[model_prices]]`. Prices are exact decimal
//! strings per million tokens, the unit providers publish; a cost is computed from the
//! summed tokens of a `costs` row and rounded once. A model without a cached-input price
//! bills cached input tokens at the input price.

use crate::decimal::Decimal9;
use serde::Deserialize;
use std::collections::BTreeMap;

/// The catalog shipped with OpenMonetize.
pub const CATALOG_TOML: &str = include_str!("../data/model_prices.toml");

/// One model's prices, USD per million tokens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelPrice {
    /// Provider, lowercase (`openai`).
    pub provider: String,
    /// Model id as the API names it (`gpt-4o`).
    pub model: String,
    /// Input tokens.
    pub input: Decimal9,
    /// Cached input tokens (cache reads); the input price when absent.
    pub cached_input: Decimal9,
    /// Output tokens.
    pub output: Decimal9,
    /// When the price was published or observed (`YYYY-MM-DD`), if known.
    pub as_of: Option<String>,
    /// Where it was published, if known.
    pub source: Option<String>,
}

/// Prices by (provider, model), with a lookup by model alone for events that do not
/// name their provider.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PriceCatalog {
    by_key: BTreeMap<(String, String), ModelPrice>,
}

/// A raw catalog or `[[model_prices]]` entry, as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPrice {
    provider: String,
    model: String,
    input: String,
    cached_input: Option<String>,
    output: String,
    as_of: Option<String>,
    source: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalog {
    models: Vec<RawPrice>,
}

impl RawPrice {
    /// The typed entry, or what is wrong with it (`key` names it in the message).
    pub(crate) fn parse(self, key: &str) -> Result<ModelPrice, String> {
        let price = |field: &str, text: &str| {
            let v = Decimal9::parse(text)
                .map_err(|e| format!("{key}.{field}: `{text}` is not a decimal: {e}"))?;
            if v.is_negative() {
                return Err(format!("{key}.{field}: a price must not be negative"));
            }
            Ok(v)
        };
        if self.provider.is_empty() || self.model.is_empty() {
            return Err(format!("{key}: provider and model must not be empty"));
        }
        let input = price("input", &self.input)?;
        let cached_input = match &self.cached_input {
            Some(text) => price("cached_input", text)?,
            None => input,
        };
        Ok(ModelPrice {
            output: price("output", &self.output)?,
            provider: self.provider,
            model: self.model,
            input,
            cached_input,
            as_of: self.as_of,
            source: self.source,
        })
    }
}

impl PriceCatalog {
    /// The catalog shipped with OpenMonetize.
    pub fn builtin() -> PriceCatalog {
        let raw: RawCatalog =
            toml::from_str(CATALOG_TOML).expect("the shipped price catalog is valid TOML");
        let mut catalog = PriceCatalog::default();
        for (i, p) in raw.models.into_iter().enumerate() {
            let price = p
                .parse(&format!("models[{i}]"))
                .expect("the shipped price catalog is valid");
            assert!(
                price.as_of.is_some() && price.source.is_some(),
                "every shipped price names its date and source"
            );
            catalog.insert(price);
        }
        catalog
    }

    /// Adds an entry, replacing the one with the same (provider, model).
    pub fn insert(&mut self, price: ModelPrice) {
        self.by_key
            .insert((price.provider.clone(), price.model.clone()), price);
    }

    /// The price of a model: by (provider, model) when the provider is known, else the
    /// only entry with that model id (none when two providers list it).
    pub fn lookup(&self, provider: Option<&str>, model: &str) -> Option<&ModelPrice> {
        match provider {
            Some(p) => self.by_key.get(&(p.to_string(), model.to_string())),
            None => {
                let mut found = self.by_key.values().filter(|p| p.model == model);
                let first = found.next()?;
                found.next().is_none().then_some(first)
            }
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// True when there is no entry.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_catalog_prices_the_models_of_the_demo_data() {
        let c = PriceCatalog::builtin();
        assert!(c.len() >= 4);
        let p = c.lookup(Some("openai"), "gpt-4o").unwrap();
        assert!(p.input > Decimal9::ZERO && p.output > p.input);
        assert_eq!(c.lookup(None, "gpt-4o"), Some(p));
        for (provider, model) in [
            ("openai", "gpt-4o-mini"),
            ("anthropic", "claude-3-5-sonnet"),
            ("google", "gemini-1.5-pro"),
        ] {
            assert!(c.lookup(Some(provider), model).is_some(), "{model}");
        }
        assert_eq!(c.lookup(Some("openai"), "no-such-model"), None);
        assert_eq!(c.lookup(Some("anthropic"), "gpt-4o"), None);
    }

    #[test]
    fn overrides_replace_and_ambiguous_models_need_a_provider() {
        let mut c = PriceCatalog::default();
        let price = |provider: &str, input: &str| {
            RawPrice {
                provider: provider.into(),
                model: "m".into(),
                input: input.into(),
                cached_input: None,
                output: "2".into(),
                as_of: None,
                source: None,
            }
            .parse("model_prices[0]")
            .unwrap()
        };
        c.insert(price("a", "1"));
        assert_eq!(c.lookup(None, "m").unwrap().cached_input, Decimal9::ONE);
        c.insert(price("a", "3"));
        assert_eq!(c.len(), 1);
        assert_eq!(c.lookup(None, "m").unwrap().input, Decimal9::from_int(3));
        c.insert(price("b", "1"));
        assert_eq!(c.lookup(None, "m"), None);
        assert!(c.lookup(Some("b"), "m").is_some());
        let bad = RawPrice {
            provider: "a".into(),
            model: "m".into(),
            input: "-1".into(),
            cached_input: None,
            output: "1".into(),
            as_of: None,
            source: None,
        };
        assert!(
            bad.parse("model_prices[2]")
                .unwrap_err()
                .contains("model_prices[2].input")
        );
    }
}
