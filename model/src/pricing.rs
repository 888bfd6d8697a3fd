//! Plan pricing and rating (issue #8): what a plan charges per billing period, and the
//! pure arithmetic that turns a period's usage into invoice lines.
//!
//! A plan's `[plans.pricing]` holds a currency, an optional flat fee, an optional
//! minimum commitment, an optional price per credit of overage, and one charge per
//! priced meter (`[[plans.pricing.charges]]`) with one of four models:
//!
//! - `per_unit`: quantity x `unit_price`;
//! - `package`: ceil(quantity / `package_size`) x `package_price`;
//! - `graduated`: each tier prices the part of the quantity that falls in it
//!   (tier i covers (up_to of tier i-1, up_to of tier i]), plus the tier's `flat_price`
//!   when any quantity reaches it;
//! - `volume`: the whole quantity at the unit price of the one tier that holds it (the
//!   first tier with quantity <= up_to), plus that tier's `flat_price`.
//!
//! Rounding rule: every line is computed exactly (quantities and prices have 9
//! fractional digits, so a product is exact in 18) and rounded once, half to even, to the
//! currency's minor unit (ISO 4217: 2 for USD and EUR, 0 for JPY, 3 for KWD...). The
//! subtotal is the sum of the rounded lines; the minimum commitment adds one more line
//! (`minimum - subtotal` when the subtotal is below it), so the total is never below the
//! minimum. Totals therefore always equal the sum of the lines a customer sees.
//!
//! Credits are applied before overage is billed by the credit burn-down itself
//! (DESIGN.md section 3): burn is taken from the customer's grants first, and only burn
//! no grant covered is overage. An invoice shows the credits applied in the period (a
//! line with amount 0: they were prepaid) and bills the overage at
//! `credit_overage_price` per credit.

use crate::config::error::{ConfigError, invalid, parse_decimal_value};
use crate::decimal::{Decimal9, SCALE, div_half_even, div_half_even_wide};
use ethnum::I256;
use serde::Deserialize;
use std::collections::BTreeSet;

/// A currency: its ISO 4217 code and the digits of its minor unit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Currency {
    /// Three upper-case letters, e.g. `USD`.
    pub code: String,
    /// Fractional digits of amounts due (2 for USD, 0 for JPY, 3 for KWD).
    pub minor_units: u32,
}

impl Currency {
    /// Parses a three-letter code; the minor unit comes from ISO 4217 (2 for codes the
    /// table does not list).
    pub fn parse(code: &str) -> Option<Currency> {
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_uppercase()) {
            return None;
        }
        let minor_units = match code {
            "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF"
            | "UGX" | "UYI" | "VND" | "VUV" | "XAF" | "XOF" | "XPF" => 0,
            "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
            "CLF" | "UYW" => 4,
            _ => 2,
        };
        Some(Currency {
            code: code.to_string(),
            minor_units,
        })
    }

    /// `wide` (a value scaled by 10^18) rounded half to even to the minor unit, as a
    /// [`Decimal9`]; `None` beyond 38 digits.
    fn round_wide(&self, wide: I256) -> Option<Decimal9> {
        let step = I256::from(10i128.pow(18 - self.minor_units));
        let minor = div_half_even_wide(wide, step);
        Decimal9::from_wide(minor * I256::from(10i128.pow(9 - self.minor_units)))
    }

    /// `value` rounded half to even to the minor unit.
    pub fn round(&self, value: Decimal9) -> Decimal9 {
        let step = 10i128.pow(9 - self.minor_units);
        Decimal9::from_raw(div_half_even(value.raw(), step) * step)
    }
}

/// One tier of a graduated or volume price.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tier {
    /// Upper bound of the tier (inclusive); `None` for the last tier.
    pub up_to: Option<Decimal9>,
    /// Price per unit in the tier.
    pub unit_price: Decimal9,
    /// Flat amount charged when the quantity reaches the tier.
    pub flat_price: Decimal9,
}

/// How a meter's quantity in a period is priced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PriceModel {
    /// quantity x unit_price.
    PerUnit {
        /// Price per unit.
        unit_price: Decimal9,
    },
    /// ceil(quantity / size) packages x price.
    Package {
        /// Units per package.
        size: Decimal9,
        /// Price per package.
        price: Decimal9,
    },
    /// Each tier prices its part of the quantity.
    Graduated(Vec<Tier>),
    /// The tier holding the whole quantity prices all of it.
    Volume(Vec<Tier>),
}

impl PriceModel {
    /// The model's name in config and in `invoice_lines.price_model`.
    pub fn name(&self) -> &'static str {
        match self {
            PriceModel::PerUnit { .. } => "per_unit",
            PriceModel::Package { .. } => "package",
            PriceModel::Graduated(_) => "graduated",
            PriceModel::Volume(_) => "volume",
        }
    }
}

/// A priced meter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Charge {
    /// The meter whose monthly usage is the quantity (a sum or count meter with a
    /// `month` window).
    pub meter: String,
    /// How the quantity is priced.
    pub model: PriceModel,
}

/// A plan's `[plans.pricing]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pricing {
    /// Currency of every amount.
    pub currency: Currency,
    /// Charged once per period.
    pub flat_fee: Decimal9,
    /// Minimum commitment per period: the total is raised to it.
    pub minimum: Decimal9,
    /// Price of one credit of overage; overage is shown but not billed without it.
    pub credit_overage_price: Option<Decimal9>,
    /// Priced meters, in config order.
    pub charges: Vec<Charge>,
}

/// What an invoice line is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LineKind {
    /// The plan's flat fee.
    FlatFee,
    /// A priced meter's usage (one line per tier reached for tiered prices).
    Usage,
    /// Credits burned from prepaid grants in the period (amount 0).
    CreditsApplied,
    /// Burn no grant covered, at the overage price.
    CreditOverage,
    /// The difference up to the minimum commitment.
    MinimumCommitment,
}

impl LineKind {
    /// The `invoice_lines.kind` text.
    pub fn as_str(self) -> &'static str {
        match self {
            LineKind::FlatFee => "flat_fee",
            LineKind::Usage => "usage",
            LineKind::CreditsApplied => "credits_applied",
            LineKind::CreditOverage => "credit_overage",
            LineKind::MinimumCommitment => "minimum_commitment",
        }
    }
}

/// One rated invoice line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    /// What the line is for.
    pub kind: LineKind,
    /// The meter of a usage line.
    pub meter: Option<String>,
    /// The price model of a usage line.
    pub price_model: Option<&'static str>,
    /// 1-based tier of a tiered usage line.
    pub tier: Option<u32>,
    /// The tier's lower bound (exclusive; 0 for the first tier).
    pub tier_from: Option<Decimal9>,
    /// The tier's upper bound (inclusive; `None` for the last tier).
    pub tier_to: Option<Decimal9>,
    /// The priced meter's usage in the period (usage lines).
    pub usage: Option<Decimal9>,
    /// What the line prices: the units of a tier or of a per-unit price, the packages
    /// of a package price, 1 for the flat fee and the minimum commitment, the credits of
    /// the credit lines. quantity x unit_price + flat_amount is the amount before
    /// rounding.
    pub quantity: Decimal9,
    /// Price per unit (per package; for the minimum commitment, the top-up itself).
    pub unit_price: Option<Decimal9>,
    /// Flat part of the line: a tier's flat price.
    pub flat_amount: Decimal9,
    /// The line's amount, rounded to the currency's minor unit.
    pub amount: Decimal9,
}

/// A rated period: its lines and totals.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rated {
    /// Lines in order: flat fee, usage by charge and tier, credits, overage, minimum.
    pub lines: Vec<Line>,
    /// Sum of the lines before the minimum commitment.
    pub subtotal: Decimal9,
    /// The minimum commitment line's amount (0 when the subtotal reaches it).
    pub minimum_true_up: Decimal9,
    /// What the customer owes: subtotal + minimum_true_up.
    pub total: Decimal9,
}

/// An amount too large for the 38-digit range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the amount of {what} does not fit 38 digits")]
pub struct Overflow {
    /// Which line.
    pub what: String,
}

/// One period's usage and credits of a customer, as rating reads them.
pub trait PeriodUsage {
    /// The meter's usage in the period (0 when none).
    fn usage(&self, meter: &str) -> Decimal9;
    /// Credits burned from grants in the period.
    fn credits_applied(&self) -> Decimal9;
    /// Burn no grant covered in the period.
    fn overage(&self) -> Decimal9;
}

impl Pricing {
    /// Rates one period (see the module docs for the rules).
    #[expect(clippy::too_many_lines, reason = "to be split into stages (issue #9)")]
    pub fn rate(&self, period: &impl PeriodUsage) -> Result<Rated, Overflow> {
        let cur = &self.currency;
        let overflow = |what: &str| Overflow {
            what: what.to_string(),
        };
        let mut lines = Vec::new();
        if self.flat_fee != Decimal9::ZERO {
            lines.push(Line {
                kind: LineKind::FlatFee,
                meter: None,
                price_model: None,
                usage: None,
                tier: None,
                tier_from: None,
                tier_to: None,
                quantity: Decimal9::ONE,
                unit_price: Some(self.flat_fee),
                flat_amount: Decimal9::ZERO,
                amount: cur.round(self.flat_fee),
            });
        }
        for charge in &self.charges {
            let q = period.usage(&charge.meter);
            let usage_line = |tier: Option<(u32, Decimal9, Option<Decimal9>)>,
                              quantity: Decimal9,
                              unit_price: Decimal9,
                              flat: Decimal9|
             -> Result<Line, Overflow> {
                Ok(Line {
                    kind: LineKind::Usage,
                    meter: Some(charge.meter.clone()),
                    price_model: Some(charge.model.name()),
                    usage: Some(q),
                    tier: tier.map(|t| t.0),
                    tier_from: tier.map(|t| t.1),
                    tier_to: tier.and_then(|t| t.2),
                    quantity,
                    unit_price: Some(unit_price),
                    flat_amount: flat,
                    amount: cur
                        .round_wide(exact(quantity, unit_price, flat))
                        .ok_or_else(|| overflow(&format!("meter {}", charge.meter)))?,
                })
            };
            match &charge.model {
                PriceModel::PerUnit { unit_price } => {
                    lines.push(usage_line(None, q, *unit_price, Decimal9::ZERO)?);
                }
                PriceModel::Package { size, price } => {
                    // ceil(q / size) packages, in integers of the raw values.
                    let packages = q.raw().div_euclid(size.raw())
                        + i128::from(q.raw().rem_euclid(size.raw()) != 0);
                    let packages = packages
                        .checked_mul(SCALE)
                        .map(Decimal9::from_raw)
                        .ok_or_else(|| overflow(&format!("meter {}", charge.meter)))?;
                    lines.push(usage_line(None, packages, *price, Decimal9::ZERO)?);
                }
                PriceModel::Graduated(tiers) => {
                    let mut from = Decimal9::ZERO;
                    for (i, t) in tiers.iter().enumerate() {
                        if q <= from {
                            break;
                        }
                        let top = t.up_to.map_or(q, |u| u.min(q));
                        let part = Decimal9::from_raw((top.raw() - from.raw()).max(0));
                        if part != Decimal9::ZERO || t.flat_price != Decimal9::ZERO {
                            let tier = Some((i as u32 + 1, from, t.up_to));
                            lines.push(usage_line(tier, part, t.unit_price, t.flat_price)?);
                        }
                        match t.up_to {
                            Some(u) => from = u,
                            None => break,
                        }
                    }
                }
                PriceModel::Volume(tiers) => {
                    let i = tiers
                        .iter()
                        .position(|t| t.up_to.is_none_or(|u| q <= u))
                        .expect("the last tier has no upper bound");
                    let t = &tiers[i];
                    let from = if i == 0 {
                        Decimal9::ZERO
                    } else {
                        tiers[i - 1].up_to.expect("only the last tier is open")
                    };
                    // The flat price is due once usage is above the tier's lower bound.
                    let flat = if q > from {
                        t.flat_price
                    } else {
                        Decimal9::ZERO
                    };
                    let tier = Some((i as u32 + 1, from, t.up_to));
                    lines.push(usage_line(tier, q, t.unit_price, flat)?);
                }
            }
        }
        let applied = period.credits_applied();
        if applied != Decimal9::ZERO {
            lines.push(Line {
                kind: LineKind::CreditsApplied,
                meter: None,
                price_model: None,
                usage: None,
                tier: None,
                tier_from: None,
                tier_to: None,
                quantity: applied,
                unit_price: None,
                flat_amount: Decimal9::ZERO,
                amount: Decimal9::ZERO,
            });
        }
        let overage = period.overage();
        if overage != Decimal9::ZERO {
            let amount = match self.credit_overage_price {
                Some(p) => cur
                    .round_wide(exact(overage, p, Decimal9::ZERO))
                    .ok_or_else(|| overflow("credit overage"))?,
                None => Decimal9::ZERO,
            };
            lines.push(Line {
                kind: LineKind::CreditOverage,
                meter: None,
                price_model: None,
                usage: None,
                tier: None,
                tier_from: None,
                tier_to: None,
                quantity: overage,
                unit_price: self.credit_overage_price,
                flat_amount: Decimal9::ZERO,
                amount,
            });
        }
        let mut subtotal = Decimal9::ZERO;
        for l in &lines {
            subtotal = subtotal
                .checked_add(l.amount)
                .ok_or_else(|| overflow("the subtotal"))?;
        }
        let minimum = cur.round(self.minimum);
        let minimum_true_up = if subtotal < minimum {
            Decimal9::from_raw(minimum.raw() - subtotal.raw())
        } else {
            Decimal9::ZERO
        };
        if minimum_true_up != Decimal9::ZERO {
            lines.push(Line {
                kind: LineKind::MinimumCommitment,
                meter: None,
                price_model: None,
                usage: None,
                tier: None,
                tier_from: None,
                tier_to: None,
                quantity: Decimal9::ONE,
                unit_price: Some(minimum_true_up),
                flat_amount: Decimal9::ZERO,
                amount: minimum_true_up,
            });
        }
        Ok(Rated {
            lines,
            subtotal,
            minimum_true_up,
            total: Decimal9::from_raw(subtotal.raw() + minimum_true_up.raw()),
        })
    }
}

/// `q x price + flat`, exact, scaled by 10^18 (256 bits: no overflow for any decimals).
fn exact(q: Decimal9, price: Decimal9, flat: Decimal9) -> I256 {
    I256::from(q.raw()) * I256::from(price.raw()) + I256::from(flat.raw()) * I256::from(SCALE)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPricing {
    currency: Option<String>,
    flat_fee: Option<toml::Value>,
    minimum: Option<toml::Value>,
    credit_overage_price: Option<toml::Value>,
    #[serde(default)]
    charges: Vec<RawCharge>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCharge {
    meter: String,
    model: String,
    unit_price: Option<toml::Value>,
    package_size: Option<toml::Value>,
    package_price: Option<toml::Value>,
    tiers: Option<Vec<RawTier>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTier {
    up_to: Option<toml::Value>,
    unit_price: Option<toml::Value>,
    flat_price: Option<toml::Value>,
}

/// What pricing needs to know of a meter: whether its usage adds up (sum or count) and
/// whether it keeps month windows.
pub(crate) struct PricedMeter {
    pub summable: bool,
    pub monthly: bool,
}

impl RawPricing {
    /// Validates `[plans.pricing]` at `key` against the meters.
    pub(crate) fn parse(
        self,
        key: &str,
        meter: impl Fn(&str) -> Option<PricedMeter>,
    ) -> Result<Pricing, ConfigError> {
        let code = self.currency.as_deref().unwrap_or("USD");
        let currency = Currency::parse(code).ok_or_else(|| {
            invalid(
                format!("{key}.currency"),
                format!("`{code}` is not an ISO 4217 code such as \"USD\" or \"EUR\""),
            )
        })?;
        let amount =
            |v: Option<&toml::Value>, field: &str| -> Result<Option<Decimal9>, ConfigError> {
                let Some(v) = v else { return Ok(None) };
                let k = format!("{key}.{field}");
                let d = parse_decimal_value(v, &k)?;
                if d.is_negative() {
                    return Err(invalid(k, "must not be negative"));
                }
                Ok(Some(d))
            };
        let flat_fee = amount(self.flat_fee.as_ref(), "flat_fee")?.unwrap_or(Decimal9::ZERO);
        let minimum = amount(self.minimum.as_ref(), "minimum")?.unwrap_or(Decimal9::ZERO);
        let credit_overage_price =
            amount(self.credit_overage_price.as_ref(), "credit_overage_price")?;
        let mut charges = Vec::with_capacity(self.charges.len());
        let mut seen = BTreeSet::new();
        for (i, c) in self.charges.into_iter().enumerate() {
            let key = format!("{key}.charges[{i}]");
            let field = |f: &str| format!("{key}.{f}");
            match meter(&c.meter) {
                None => {
                    return Err(invalid(
                        field("meter"),
                        format!("no meter is named `{}`", c.meter),
                    ));
                }
                Some(m) if !m.summable => {
                    return Err(invalid(
                        field("meter"),
                        format!(
                            "meter `{}` is not a sum or count meter; only usage that adds up over the period can be priced",
                            c.meter
                        ),
                    ));
                }
                Some(m) if !m.monthly => {
                    return Err(invalid(
                        field("meter"),
                        format!(
                            "meter `{}` keeps no month windows; add \"month\" to its windows to price it",
                            c.meter
                        ),
                    ));
                }
                Some(_) => {}
            }
            if !seen.insert(c.meter.clone()) {
                return Err(invalid(
                    field("meter"),
                    format!("meter `{}` is priced twice in this plan", c.meter),
                ));
            }
            let required = |v: Option<&toml::Value>, f: &str| -> Result<Decimal9, ConfigError> {
                let v = v.ok_or_else(|| {
                    invalid(field(f), format!("is required by the `{}` model", c.model))
                })?;
                let d = parse_decimal_value(v, &field(f))?;
                if d.is_negative() {
                    return Err(invalid(field(f), "must not be negative"));
                }
                Ok(d)
            };
            let unused = |present: bool, f: &str| -> Result<(), ConfigError> {
                if present {
                    Err(invalid(
                        field(f),
                        format!("is not used by the `{}` model", c.model),
                    ))
                } else {
                    Ok(())
                }
            };
            let model = match c.model.as_str() {
                "per_unit" => {
                    unused(c.package_size.is_some(), "package_size")?;
                    unused(c.package_price.is_some(), "package_price")?;
                    unused(c.tiers.is_some(), "tiers")?;
                    PriceModel::PerUnit {
                        unit_price: required(c.unit_price.as_ref(), "unit_price")?,
                    }
                }
                "package" => {
                    unused(c.unit_price.is_some(), "unit_price")?;
                    unused(c.tiers.is_some(), "tiers")?;
                    let size = required(c.package_size.as_ref(), "package_size")?;
                    if size == Decimal9::ZERO {
                        return Err(invalid(field("package_size"), "must be positive"));
                    }
                    PriceModel::Package {
                        size,
                        price: required(c.package_price.as_ref(), "package_price")?,
                    }
                }
                "graduated" | "volume" => {
                    unused(c.unit_price.is_some(), "unit_price")?;
                    unused(c.package_size.is_some(), "package_size")?;
                    unused(c.package_price.is_some(), "package_price")?;
                    let raw = c.tiers.ok_or_else(|| {
                        invalid(
                            field("tiers"),
                            format!("is required by the `{}` model", c.model),
                        )
                    })?;
                    let tiers = parse_tiers(raw, &field("tiers"))?;
                    if c.model == "graduated" {
                        PriceModel::Graduated(tiers)
                    } else {
                        PriceModel::Volume(tiers)
                    }
                }
                other => {
                    return Err(invalid(
                        field("model"),
                        format!(
                            "`{other}` is not a price model; use per_unit, package, graduated or volume"
                        ),
                    ));
                }
            };
            charges.push(Charge {
                meter: c.meter,
                model,
            });
        }
        Ok(Pricing {
            currency,
            flat_fee,
            minimum,
            credit_overage_price,
            charges,
        })
    }
}

/// Tiers with increasing positive bounds, the last one open.
fn parse_tiers(raw: Vec<RawTier>, key: &str) -> Result<Vec<Tier>, ConfigError> {
    if raw.is_empty() {
        return Err(invalid(key, "needs at least one tier"));
    }
    let n = raw.len();
    let mut tiers = Vec::with_capacity(n);
    let mut below = Decimal9::ZERO;
    for (i, t) in raw.into_iter().enumerate() {
        let k = |f: &str| format!("{key}[{i}].{f}");
        let dec = |v: Option<&toml::Value>, f: &str| -> Result<Option<Decimal9>, ConfigError> {
            let Some(v) = v else { return Ok(None) };
            let d = parse_decimal_value(v, &k(f))?;
            if d.is_negative() {
                return Err(invalid(k(f), "must not be negative"));
            }
            Ok(Some(d))
        };
        let up_to = dec(t.up_to.as_ref(), "up_to")?;
        match up_to {
            None if i + 1 < n => {
                return Err(invalid(
                    k("up_to"),
                    "is required on every tier but the last",
                ));
            }
            Some(_) if i + 1 == n => {
                return Err(invalid(
                    k("up_to"),
                    "must be left out on the last tier, which has no upper bound",
                ));
            }
            Some(u) if u <= below => {
                return Err(invalid(
                    k("up_to"),
                    "must be greater than the previous tier's up_to (and than 0)",
                ));
            }
            _ => {}
        }
        let unit_price = dec(t.unit_price.as_ref(), "unit_price")?
            .ok_or_else(|| invalid(k("unit_price"), "is required"))?;
        let flat_price = dec(t.flat_price.as_ref(), "flat_price")?.unwrap_or(Decimal9::ZERO);
        if let Some(u) = up_to {
            below = u;
        }
        tiers.push(Tier {
            up_to,
            unit_price,
            flat_price,
        });
    }
    Ok(tiers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn d(s: &str) -> Decimal9 {
        Decimal9::parse(s).unwrap()
    }

    struct Period {
        usage: BTreeMap<&'static str, Decimal9>,
        applied: Decimal9,
        overage: Decimal9,
    }

    impl PeriodUsage for Period {
        fn usage(&self, meter: &str) -> Decimal9 {
            self.usage.get(meter).copied().unwrap_or(Decimal9::ZERO)
        }
        fn credits_applied(&self) -> Decimal9 {
            self.applied
        }
        fn overage(&self) -> Decimal9 {
            self.overage
        }
    }

    fn usage(q: &str) -> Period {
        Period {
            usage: BTreeMap::from([("calls", d(q))]),
            applied: Decimal9::ZERO,
            overage: Decimal9::ZERO,
        }
    }

    fn pricing(toml_text: &str) -> Pricing {
        let raw: RawPricing = toml::from_str(toml_text).unwrap();
        raw.parse("plans[0].pricing", |m| {
            (m == "calls").then_some(PricedMeter {
                summable: true,
                monthly: true,
            })
        })
        .unwrap()
    }

    fn amounts(r: &Rated) -> Vec<String> {
        r.lines.iter().map(|l| l.amount.to_string()).collect()
    }

    #[test]
    fn flat_fee_alone() {
        let p = pricing("flat_fee = \"49.99\"");
        let r = p.rate(&usage("0")).unwrap();
        assert_eq!(r.lines.len(), 1);
        assert_eq!(r.lines[0].kind, LineKind::FlatFee);
        assert_eq!(r.total, d("49.99"));
    }

    #[test]
    fn per_unit_rounds_the_line_half_even_to_cents() {
        // 1,234 calls x 0.0125 = 15.425 -> 15.42 (half to even).
        let p = pricing(
            "[[charges]]\nmeter = \"calls\"\nmodel = \"per_unit\"\nunit_price = \"0.0125\"",
        );
        let r = p.rate(&usage("1234")).unwrap();
        assert_eq!(amounts(&r), ["15.420000000"]);
        // 1,236 x 0.0125 = 15.45 exactly; 1,237 x 0.0125 = 15.4625 -> 15.46.
        assert_eq!(p.rate(&usage("1236")).unwrap().total, d("15.45"));
        assert_eq!(p.rate(&usage("1237")).unwrap().total, d("15.46"));
    }

    #[test]
    fn package_rounds_packages_up() {
        // 2,001 calls in packages of 1,000 at 5.00: 3 packages = 15.00; 2,000: 2 = 10.00.
        let p = pricing(
            "[[charges]]\nmeter = \"calls\"\nmodel = \"package\"\npackage_size = 1000\npackage_price = \"5\"",
        );
        let r = p.rate(&usage("2001")).unwrap();
        assert_eq!(r.total, d("15"));
        // The line prices packages: 3 x 5.00, for a usage of 2,001.
        assert_eq!(
            (r.lines[0].quantity, r.lines[0].usage),
            (d("3"), Some(d("2001")))
        );
        assert_eq!(p.rate(&usage("2000")).unwrap().total, d("10"));
        assert_eq!(p.rate(&usage("0")).unwrap().total, d("0"));
        assert_eq!(p.rate(&usage("0.5")).unwrap().total, d("5"));
    }

    const TIERS: &str = "tiers = [{ up_to = 1000, unit_price = \"0\" }, { up_to = 10000, unit_price = \"0.002\" }, { unit_price = \"0.001\", flat_price = \"3\" }]";

    #[test]
    fn graduated_prices_each_tier_its_part() {
        // 12,500 calls: 1,000 free, 9,000 x 0.002 = 18.00, 2,500 x 0.001 + 3 = 5.50.
        let p = pricing(&format!(
            "[[charges]]\nmeter = \"calls\"\nmodel = \"graduated\"\n{TIERS}"
        ));
        let r = p.rate(&usage("12500")).unwrap();
        assert_eq!(amounts(&r), ["0.000000000", "18.000000000", "5.500000000"]);
        assert_eq!(
            r.lines.iter().map(|l| l.quantity).collect::<Vec<_>>(),
            [d("1000"), d("9000"), d("2500")]
        );
        assert_eq!(r.lines[1].tier_from, Some(d("1000")));
        assert_eq!(r.lines[1].tier_to, Some(d("10000")));
        assert_eq!(r.total, d("23.5"));
        // 800 calls stay in the free tier: one line of 0.
        let r = p.rate(&usage("800")).unwrap();
        assert_eq!(amounts(&r), ["0.000000000"]);
        // Exactly 10,000: the top tier is not reached, so its flat price is not due.
        assert_eq!(p.rate(&usage("10000")).unwrap().total, d("18"));
    }

    #[test]
    fn volume_prices_everything_at_the_reached_tier() {
        // 12,500 calls all at 0.001, plus the tier's 3.00: 15.50; 10,000 at 0.002: 20.00.
        let p = pricing(&format!(
            "[[charges]]\nmeter = \"calls\"\nmodel = \"volume\"\n{TIERS}"
        ));
        let r = p.rate(&usage("12500")).unwrap();
        assert_eq!(amounts(&r), ["15.500000000"]);
        assert_eq!(r.lines[0].tier, Some(3));
        assert_eq!(p.rate(&usage("10000")).unwrap().total, d("20"));
        assert_eq!(p.rate(&usage("1000")).unwrap().total, d("0"));
    }

    #[test]
    fn minimum_commitment_tops_up_the_subtotal() {
        // 10 + 1,500 x 0.01 = 25.00 < 100: true-up 75.00; 20,000 calls: 210 >= 100.
        let p = pricing(
            "flat_fee = 10\nminimum = 100\n[[charges]]\nmeter = \"calls\"\nmodel = \"per_unit\"\nunit_price = \"0.01\"",
        );
        let r = p.rate(&usage("1500")).unwrap();
        assert_eq!(r.subtotal, d("25"));
        assert_eq!(r.minimum_true_up, d("75"));
        assert_eq!(r.total, d("100"));
        assert_eq!(r.lines.last().unwrap().kind, LineKind::MinimumCommitment);
        let r = p.rate(&usage("20000")).unwrap();
        assert_eq!((r.minimum_true_up, r.total), (d("0"), d("210")));
    }

    #[test]
    fn credits_are_applied_before_overage_is_billed() {
        // 400 credits burned from grants (free on the invoice), 125.5 credits of overage
        // at 0.02 = 2.51.
        let p = pricing("credit_overage_price = \"0.02\"\nflat_fee = 5");
        let period = Period {
            usage: BTreeMap::new(),
            applied: d("400"),
            overage: d("125.5"),
        };
        let r = p.rate(&period).unwrap();
        let kinds: Vec<_> = r.lines.iter().map(|l| l.kind).collect();
        assert_eq!(
            kinds,
            [
                LineKind::FlatFee,
                LineKind::CreditsApplied,
                LineKind::CreditOverage
            ]
        );
        assert_eq!(amounts(&r), ["5.000000000", "0.000000000", "2.510000000"]);
        assert_eq!(r.total, d("7.51"));
        // Without overage, credits alone add nothing.
        let covered = Period {
            overage: Decimal9::ZERO,
            ..period
        };
        assert_eq!(p.rate(&covered).unwrap().total, d("5"));
    }

    #[test]
    fn currencies_round_to_their_minor_unit() {
        let jpy = pricing(
            "currency = \"JPY\"\n[[charges]]\nmeter = \"calls\"\nmodel = \"per_unit\"\nunit_price = \"0.25\"",
        );
        // 10 x 0.25 = 2.5 -> 2 yen (half to even); 14 x 0.25 = 3.5 -> 4.
        assert_eq!(jpy.rate(&usage("10")).unwrap().total, d("2"));
        assert_eq!(jpy.rate(&usage("14")).unwrap().total, d("4"));
        assert_eq!(Currency::parse("KWD").unwrap().minor_units, 3);
        assert!(Currency::parse("usd").is_none());
    }

    #[test]
    fn bad_pricing_names_the_key_and_the_fix() {
        let err = |text: &str| {
            let raw: RawPricing = toml::from_str(text).unwrap();
            raw.parse("plans[0].pricing", |m| match m {
                "calls" => Some(PricedMeter {
                    summable: true,
                    monthly: true,
                }),
                "peak" => Some(PricedMeter {
                    summable: false,
                    monthly: true,
                }),
                "daily" => Some(PricedMeter {
                    summable: true,
                    monthly: false,
                }),
                _ => None,
            })
            .unwrap_err()
            .to_string()
        };
        assert!(err("currency = \"dollars\"").contains("plans[0].pricing.currency"));
        assert!(
            err("[[charges]]\nmeter = \"nope\"\nmodel = \"per_unit\"\nunit_price = 1")
                .contains("no meter is named `nope`")
        );
        assert!(
            err("[[charges]]\nmeter = \"peak\"\nmodel = \"per_unit\"\nunit_price = 1")
                .contains("not a sum or count meter")
        );
        assert!(
            err("[[charges]]\nmeter = \"daily\"\nmodel = \"per_unit\"\nunit_price = 1")
                .contains("add \"month\"")
        );
        assert!(
            err("[[charges]]\nmeter = \"calls\"\nmodel = \"per_unit\"")
                .contains("charges[0].unit_price`: is required")
        );
        assert!(
            err("[[charges]]\nmeter = \"calls\"\nmodel = \"tiered\"\nunit_price = 1")
                .contains("use per_unit, package, graduated or volume")
        );
        assert!(err("[[charges]]\nmeter = \"calls\"\nmodel = \"graduated\"\ntiers = [{ up_to = 10, unit_price = 1 }, { up_to = 5, unit_price = 1 }, { unit_price = 1 }]").contains("tiers[1].up_to"));
        assert!(err("[[charges]]\nmeter = \"calls\"\nmodel = \"volume\"\ntiers = [{ up_to = 10, unit_price = 1 }]").contains("last tier"));
        assert!(err("[[charges]]\nmeter = \"calls\"\nmodel = \"package\"\npackage_size = 0\npackage_price = 1").contains("must be positive"));
        assert!(err("flat_fee = \"-1\"").contains("must not be negative"));
        assert!(err("flat_fee = 1.5").contains("floats are not exact"));
    }
}
