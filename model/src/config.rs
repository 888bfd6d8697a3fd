//! The pipeline configuration (DESIGN.md section 2.3): meters, burn rates, plans and
//! pipeline settings, read from TOML and validated into typed values.
//!
//! Every error names the offending key (`meters[1].windows[0]`) and what is allowed.
//! [`Config::builtin`] is the embedded default used by `openmonetize demo`.

pub(crate) mod error;

pub use error::ConfigError;
pub(crate) use error::{invalid, parse_decimal_value};

use crate::decimal::Decimal9;
use crate::export::{ExportFormat, ExportKind};
use crate::prices::PriceCatalog;
use crate::pricing::{PricedMeter, Pricing};
use crate::time::{Micros, WindowSize, parse_duration};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};

/// The embedded default configuration (also shipped as `deploy/config/default.toml`).
pub const DEFAULT_TOML: &str = include_str!("default.toml");

/// How a meter folds the values of its events in one window.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, serde::Serialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    /// Exact sum of the values.
    Sum,
    /// Number of events.
    Count,
    /// Smallest value.
    Min,
    /// Largest value.
    Max,
    /// Sum / count, rounded half-even to 9 digits.
    Avg,
    /// Number of distinct values (any JSON scalar).
    UniqueCount,
    /// Value of the event with the greatest (timestamp, id).
    Latest,
}

impl Aggregation {
    /// Names accepted in config.
    pub const NAMES: &str = "sum, count, min, max, avg, unique_count, latest";

    /// True for the aggregations maintained as a running (sum, count) pair, which can be
    /// corrected by adding and subtracting (no need to keep each value).
    pub fn is_additive(self) -> bool {
        matches!(
            self,
            Aggregation::Sum | Aggregation::Count | Aggregation::Avg
        )
    }

    /// The value of an additive window from its running sum and count: the sum, the
    /// count, or sum / count rounded half-even (avg). Meaningless for other aggregations.
    pub fn additive_value(self, sum: Decimal9, count: i64) -> Decimal9 {
        match self {
            Aggregation::Count => Decimal9::from_int(count),
            Aggregation::Avg if count != 0 => sum.div_count_half_even(count),
            _ => sum,
        }
    }
}

/// A JSON path into an event such as `$.properties.input_tokens`, stored as its segments.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValuePath {
    text: String,
    segments: Vec<String>,
}

impl ValuePath {
    /// Top-level event fields a path may start with.
    pub const ROOTS: &str = "value, properties, id, tenant_id, customer_id, event_type";

    /// Parses `$.a.b.c`.
    pub fn parse(text: &str) -> Option<Self> {
        let rest = text.strip_prefix("$.")?;
        let segments: Vec<String> = rest.split('.').map(str::to_string).collect();
        if segments.iter().any(String::is_empty) {
            return None;
        }
        let root_ok = matches!(
            segments[0].as_str(),
            "value" | "properties" | "id" | "tenant_id" | "customer_id" | "event_type"
        );
        (root_ok && (segments[0] == "properties" || segments.len() == 1)).then(|| ValuePath {
            text: text.to_string(),
            segments,
        })
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Its segments, e.g. `["properties", "input_tokens"]`.
    pub fn segments(&self) -> &[String] {
        &self.segments
    }
}

/// A meter: which events it reads, how it aggregates and over which windows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Meter {
    /// Unique name, the `meter` column.
    pub name: String,
    /// Event type it reads.
    pub event_type: String,
    /// How values fold within a window.
    pub aggregation: Aggregation,
    /// Where the value is read (`$.value` by default).
    pub value: ValuePath,
    /// Dimension name -> path; a missing property is a null dimension.
    pub group_by: BTreeMap<String, ValuePath>,
    /// Window sizes maintained for this meter.
    pub windows: Vec<WindowSize>,
}

/// A credit burn rule (used by the credits issue; parsed and validated now).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BurnRate {
    /// Event type it applies to.
    pub event_type: String,
    /// Property equality conditions; empty matches every event of the type.
    pub match_properties: BTreeMap<String, String>,
    /// Where the burned quantity is read.
    pub value: ValuePath,
    /// Credits per unit of the value.
    pub credits_per_unit: Decimal9,
}

/// A plan feature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Feature {
    /// Access granted or not.
    Boolean(bool),
    /// Access while the meter's usage in the period is below the limit.
    Metered {
        /// Meter name.
        meter: String,
        /// Usage limit per period.
        limit: Decimal9,
        /// The period (only `month` for now).
        period: WindowSize,
    },
    /// Access while the credit balance is positive.
    Credits,
}

/// A plan: a name, its features and what it charges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Unique plan name.
    pub name: String,
    /// Feature name -> feature.
    pub features: BTreeMap<String, Feature>,
    /// `[plans.pricing]`: without it the plan's customers get no invoices.
    pub pricing: Option<Pricing>,
}

/// `[costs]`: how AI generation events feed the `costs` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CostSettings {
    /// Off: no `costs` table.
    pub enabled: bool,
    /// The event type of a model call.
    pub event_type: String,
    /// Where the provider is read; when the event has none, the model alone is looked up.
    pub provider: ValuePath,
    /// Where the model id is read.
    pub model: ValuePath,
    /// Input tokens billed at the input price (missing = 0).
    pub input_tokens: ValuePath,
    /// Cached input tokens billed at the cached-input price (missing = 0).
    pub cached_input_tokens: ValuePath,
    /// Output tokens (missing = 0).
    pub output_tokens: ValuePath,
    /// What one credit is worth in USD, for `credit_value_usd` and `margin_usd`; both
    /// are null without it.
    pub credit_price: Option<Decimal9>,
    /// The shipped catalog with the config's `[[model_prices]]` applied.
    pub prices: PriceCatalog,
}

/// `[anomaly]`: the `anomaly_scores` table over every sum and count meter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnomalySettings {
    /// Off: no `anomaly_scores` table.
    pub enabled: bool,
    /// Flag when score >= threshold (default 3)...
    pub threshold: Decimal9,
    /// ...and the hour's value >= min_value (default 10).
    pub min_value: Decimal9,
}

/// Who an API key speaks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyScope {
    /// One tenant: its rows only.
    Tenant(String),
    /// Every tenant.
    Admin,
}

/// An API key of `openmonetize serve`, kept as the SHA-256 of the key (never the key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKey {
    /// Who it speaks for.
    pub scope: KeyScope,
    /// SHA-256 of the key's text.
    pub sha256: [u8; 32],
}

/// `[[exports]]`: an export the live job runs on a schedule, for every calendar month
/// that is final and not yet exported to `to`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduledExport {
    /// What it exports.
    pub kind: ExportKind,
    /// Cron expression (UTC; seconds first: `sec min hour day month weekday [year]`).
    pub schedule: String,
    /// Destination URL (local path, `file://`, `s3://`).
    pub to: String,
    /// The file format.
    pub format: ExportFormat,
}

impl ScheduledExport {
    /// The parsed schedule (validated when the config was read).
    pub fn cron(&self) -> cron::Schedule {
        self.schedule.parse().expect("validated with the config")
    }
}

/// `[pipeline]` settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PipelineSettings {
    /// Events older than watermark - allowed_lateness go to `late_events`.
    pub allowed_lateness: Micros,
    /// How far behind the watermark (event time) dedup keys are kept.
    pub dedup_horizon: Micros,
    /// How far behind the closed watermark a command (a back-dated grant, a void in the
    /// past) still applies at its own instant; credit history older than this (or than
    /// `allowed_lateness`, if longer) is folded, and an older command applies at the
    /// fold point.
    pub command_horizon: Micros,
}

impl PipelineSettings {
    /// How far behind the closed watermark the credit history is kept whole: the
    /// longer of `allowed_lateness` and `command_horizon`.
    pub fn credit_horizon(&self) -> Micros {
        self.allowed_lateness.max(self.command_horizon)
    }
}

/// The whole validated configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Meters, in config order (a meter's index is its id inside the dataflow).
    pub meters: Vec<Meter>,
    /// Burn rules.
    pub burn_rates: Vec<BurnRate>,
    /// Plans.
    pub plans: Vec<Plan>,
    /// The `costs` view.
    pub costs: CostSettings,
    /// The `anomaly_scores` view.
    pub anomaly: AnomalySettings,
    /// Whether the `forecasts` table is kept (over every sum and count meter).
    pub forecasts: bool,
    /// API keys of `openmonetize serve`.
    pub api_keys: Vec<ApiKey>,
    /// Exports the live job runs on a schedule.
    pub exports: Vec<ScheduledExport>,
    /// Pipeline settings.
    pub pipeline: PipelineSettings,
}

impl Config {
    /// A digest of what the billing tables read from the config: the plans (with their
    /// pricing) and the allowed lateness (which decides when a month is final).
    pub fn billing_digest(&self) -> String {
        let text = format!("{:?}{}", self.plans, self.pipeline.allowed_lateness);
        format!("{:016x}", twox_hash::XxHash3_64::oneshot(text.as_bytes()))
    }

    /// Whether a meter's usage adds up across its dimension groups and hours (sum and
    /// count): the meters behind metered features, anomaly scores and forecasts.
    pub fn is_summable(&self, meter: usize) -> bool {
        matches!(
            self.meters[meter].aggregation,
            Aggregation::Sum | Aggregation::Count
        )
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    meters: Vec<RawMeter>,
    #[serde(default)]
    burn_rates: Vec<RawBurnRate>,
    #[serde(default)]
    plans: Vec<RawPlan>,
    #[serde(default)]
    costs: RawCosts,
    #[serde(default)]
    model_prices: Vec<crate::prices::RawPrice>,
    #[serde(default)]
    anomaly: RawAnomaly,
    #[serde(default)]
    forecasts: RawForecasts,
    #[serde(default)]
    api_keys: Vec<RawApiKey>,
    #[serde(default)]
    exports: Vec<RawExport>,
    #[serde(default)]
    pipeline: RawPipeline,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExport {
    kind: String,
    schedule: String,
    to: String,
    format: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCosts {
    enabled: Option<bool>,
    event_type: Option<String>,
    provider: Option<String>,
    model: Option<String>,
    input_tokens: Option<String>,
    cached_input_tokens: Option<String>,
    output_tokens: Option<String>,
    credit_price: Option<toml::Value>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAnomaly {
    enabled: Option<bool>,
    threshold: Option<toml::Value>,
    min_value: Option<toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApiKey {
    tenant: Option<String>,
    #[serde(default)]
    admin: bool,
    sha256: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawForecasts {
    enabled: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMeter {
    name: String,
    event_type: String,
    aggregation: String,
    value: Option<String>,
    #[serde(default)]
    group_by: BTreeMap<String, String>,
    windows: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBurnRate {
    event_type: String,
    #[serde(default, rename = "match")]
    match_properties: BTreeMap<String, toml::Value>,
    value: Option<String>,
    credits_per_unit: toml::Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlan {
    name: String,
    #[serde(default)]
    features: BTreeMap<String, toml::Value>,
    pricing: Option<crate::pricing::RawPricing>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPipeline {
    allowed_lateness: Option<String>,
    dedup_horizon: Option<String>,
    command_horizon: Option<String>,
}

impl Config {
    /// The embedded default configuration.
    pub fn builtin() -> Config {
        Config::from_toml(DEFAULT_TOML).expect("the embedded default config is valid")
    }

    /// Parses and validates TOML text.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_with_overrides(text, &[])
    }

    /// Parses TOML text, applies `OM__` environment overrides (variable, value) on top
    /// in order ([`crate::overrides`]), and validates the result.
    #[expect(clippy::too_many_lines, reason = "to be split into stages (issue #9)")]
    pub fn from_toml_with_overrides(
        text: &str,
        overrides: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        let syntax = |e: toml::de::Error| ConfigError::Syntax(e.to_string());
        let raw: RawConfig = if overrides.is_empty() {
            // Straight from the text, so that errors point at its lines.
            toml::from_str(text).map_err(syntax)?
        } else {
            let mut table: toml::Table = toml::from_str(text).map_err(syntax)?;
            for (var, value) in overrides {
                crate::overrides::apply(&mut table, var, value)?;
            }
            toml::Value::Table(table).try_into().map_err(syntax)?
        };
        let mut names = BTreeSet::new();
        let mut meters = Vec::with_capacity(raw.meters.len());
        for (i, m) in raw.meters.into_iter().enumerate() {
            let key = |field: &str| format!("meters[{i}].{field}");
            if m.name.is_empty() {
                return Err(invalid(key("name"), "must not be empty"));
            }
            if !names.insert(m.name.clone()) {
                return Err(invalid(
                    key("name"),
                    format!("meter `{}` is defined twice", m.name),
                ));
            }
            if m.event_type.is_empty() {
                return Err(invalid(key("event_type"), "must not be empty"));
            }
            let aggregation = parse_aggregation(&m.aggregation).ok_or_else(|| {
                invalid(
                    key("aggregation"),
                    format!("`{}` is not one of {}", m.aggregation, Aggregation::NAMES),
                )
            })?;
            let value = parse_path(m.value.as_deref().unwrap_or("$.value"), &key("value"))?;
            let mut group_by = BTreeMap::new();
            for (dim, path) in m.group_by {
                let path = parse_path(&path, &format!("meters[{i}].group_by.{dim}"))?;
                group_by.insert(dim, path);
            }
            let window_names = m
                .windows
                .unwrap_or_else(|| vec!["hour".into(), "day".into(), "month".into()]);
            if window_names.is_empty() {
                return Err(invalid(
                    key("windows"),
                    "needs at least one of minute, hour, day, month",
                ));
            }
            let mut windows = Vec::new();
            for (j, w) in window_names.iter().enumerate() {
                let size = WindowSize::from_name(w).ok_or_else(|| {
                    invalid(
                        format!("meters[{i}].windows[{j}]"),
                        format!("`{w}` is not one of minute, hour, day, month"),
                    )
                })?;
                if !windows.contains(&size) {
                    windows.push(size);
                }
            }
            windows.sort();
            meters.push(Meter {
                name: m.name,
                event_type: m.event_type,
                aggregation,
                value,
                group_by,
                windows,
            });
        }

        let mut burn_rates = Vec::with_capacity(raw.burn_rates.len());
        for (i, b) in raw.burn_rates.into_iter().enumerate() {
            let key = |field: &str| format!("burn_rates[{i}].{field}");
            let mut match_properties = BTreeMap::new();
            for (prop, v) in b.match_properties {
                let text = match v {
                    toml::Value::String(s) => s,
                    toml::Value::Integer(n) => n.to_string(),
                    toml::Value::Boolean(b) => b.to_string(),
                    _ => {
                        return Err(invalid(
                            format!("burn_rates[{i}].match.{prop}"),
                            "must be a string, integer or boolean",
                        ));
                    }
                };
                match_properties.insert(prop, text);
            }
            let value = parse_path(b.value.as_deref().unwrap_or("$.value"), &key("value"))?;
            let credits_per_unit =
                parse_decimal_value(&b.credits_per_unit, &key("credits_per_unit"))?;
            burn_rates.push(BurnRate {
                event_type: b.event_type,
                match_properties,
                value,
                credits_per_unit,
            });
        }

        let meter_names: BTreeMap<&str, Aggregation> = meters
            .iter()
            .map(|m| (m.name.as_str(), m.aggregation))
            .collect();
        let mut plans = Vec::with_capacity(raw.plans.len());
        let mut plan_names = BTreeSet::new();
        for (i, p) in raw.plans.into_iter().enumerate() {
            if !plan_names.insert(p.name.clone()) {
                return Err(invalid(
                    format!("plans[{i}].name"),
                    format!("plan `{}` is defined twice", p.name),
                ));
            }
            let mut features = BTreeMap::new();
            for (name, v) in p.features {
                let key = format!("plans[{i}].features.{name}");
                let feature = parse_feature(&v, &key, &meter_names)?;
                features.insert(name, feature);
            }
            let pricing = p
                .pricing
                .map(|raw| {
                    raw.parse(&format!("plans[{i}].pricing"), |name| {
                        let m = meters.iter().find(|m| m.name == name)?;
                        Some(PricedMeter {
                            summable: matches!(
                                m.aggregation,
                                Aggregation::Sum | Aggregation::Count
                            ),
                            monthly: m.windows.contains(&WindowSize::Month),
                        })
                    })
                })
                .transpose()?;
            plans.push(Plan {
                name: p.name,
                features,
                pricing,
            });
        }

        let allowed_lateness = parse_setting(
            raw.pipeline.allowed_lateness.as_deref(),
            "48h",
            "pipeline.allowed_lateness",
        )?;
        let dedup_horizon = parse_setting(
            raw.pipeline.dedup_horizon.as_deref(),
            "7d",
            "pipeline.dedup_horizon",
        )?;
        if dedup_horizon < allowed_lateness {
            return Err(invalid(
                "pipeline.dedup_horizon",
                "must be at least pipeline.allowed_lateness, or a duplicate of an accepted event could be accepted again",
            ));
        }
        let command_horizon = parse_setting(
            raw.pipeline.command_horizon.as_deref(),
            "35d",
            "pipeline.command_horizon",
        )?;
        let c = raw.costs;
        let path = |text: Option<String>, default: &str, field: &str| {
            parse_path(
                text.as_deref().unwrap_or(default),
                &format!("costs.{field}"),
            )
        };
        let mut prices = PriceCatalog::builtin();
        for (i, p) in raw.model_prices.into_iter().enumerate() {
            let key = format!("model_prices[{i}]");
            let price = p.parse(&key).map_err(|message| invalid(key, message))?;
            prices.insert(price);
        }
        let costs = CostSettings {
            enabled: c.enabled.unwrap_or(true),
            event_type: c.event_type.unwrap_or_else(|| "ai_generation".into()),
            provider: path(c.provider, "$.properties.provider", "provider")?,
            model: path(c.model, "$.properties.model", "model")?,
            input_tokens: path(c.input_tokens, "$.properties.input_tokens", "input_tokens")?,
            cached_input_tokens: path(
                c.cached_input_tokens,
                "$.properties.cached_input_tokens",
                "cached_input_tokens",
            )?,
            output_tokens: path(
                c.output_tokens,
                "$.properties.output_tokens",
                "output_tokens",
            )?,
            credit_price: c
                .credit_price
                .map(|v| parse_decimal_value(&v, "costs.credit_price"))
                .transpose()?,
            prices,
        };
        let a = raw.anomaly;
        let anomaly = AnomalySettings {
            enabled: a.enabled.unwrap_or(true),
            threshold: a
                .threshold
                .map(|v| parse_decimal_value(&v, "anomaly.threshold"))
                .transpose()?
                .unwrap_or(Decimal9::from_int(3)),
            min_value: a
                .min_value
                .map(|v| parse_decimal_value(&v, "anomaly.min_value"))
                .transpose()?
                .unwrap_or(Decimal9::from_int(10)),
        };
        let mut api_keys = Vec::with_capacity(raw.api_keys.len());
        for (i, k) in raw.api_keys.into_iter().enumerate() {
            let key = |field: &str| format!("api_keys[{i}].{field}");
            let scope = match (k.tenant, k.admin) {
                (Some(t), false) if !t.is_empty() => KeyScope::Tenant(t),
                (None, true) => KeyScope::Admin,
                _ => {
                    return Err(invalid(
                        format!("api_keys[{i}]"),
                        "needs exactly one of `tenant = \"NAME\"` or `admin = true`",
                    ));
                }
            };
            let sha256 = parse_sha256(&k.sha256).ok_or_else(|| {
                invalid(
                    key("sha256"),
                    "must be the 64 hex digits of the key's SHA-256 (e.g. `printf %s KEY | sha256sum`), not the key itself",
                )
            })?;
            api_keys.push(ApiKey { scope, sha256 });
        }
        let mut exports = Vec::with_capacity(raw.exports.len());
        for (i, e) in raw.exports.into_iter().enumerate() {
            let key = |field: &str| format!("exports[{i}].{field}");
            let kind = ExportKind::parse(&e.kind).ok_or_else(|| {
                invalid(
                    key("kind"),
                    format!("`{}` is not an export; use {}", e.kind, ExportKind::NAMES),
                )
            })?;
            let format_name = e.format.as_deref().unwrap_or("parquet");
            let format = ExportFormat::parse(format_name).ok_or_else(|| {
                invalid(
                    key("format"),
                    format!(
                        "`{format_name}` is not a format; use {}",
                        ExportFormat::NAMES
                    ),
                )
            })?;
            if let Err(err) = e.schedule.parse::<cron::Schedule>() {
                return Err(invalid(
                    key("schedule"),
                    format!(
                        "`{}` is not a cron schedule ({err}); write seconds first, e.g. \"0 0 6 * * *\" for 06:00 UTC every day",
                        e.schedule
                    ),
                ));
            }
            if e.to.is_empty() {
                return Err(invalid(
                    key("to"),
                    "must name a destination (a path or s3://BUCKET/PREFIX)",
                ));
            }
            exports.push(ScheduledExport {
                kind,
                schedule: e.schedule,
                to: e.to,
                format,
            });
        }
        Ok(Config {
            meters,
            burn_rates,
            plans,
            costs,
            anomaly,
            forecasts: raw.forecasts.enabled.unwrap_or(true),
            api_keys,
            exports,
            pipeline: PipelineSettings {
                allowed_lateness,
                dedup_horizon,
                command_horizon,
            },
        })
    }
}

fn parse_aggregation(name: &str) -> Option<Aggregation> {
    Some(match name {
        "sum" => Aggregation::Sum,
        "count" => Aggregation::Count,
        "min" => Aggregation::Min,
        "max" => Aggregation::Max,
        "avg" => Aggregation::Avg,
        "unique_count" => Aggregation::UniqueCount,
        "latest" => Aggregation::Latest,
        _ => return None,
    })
}

fn parse_path(text: &str, key: &str) -> Result<ValuePath, ConfigError> {
    ValuePath::parse(text).ok_or_else(|| {
        invalid(
            key,
            format!("`{text}` is not a value path; write `$.value` or `$.properties.NAME[.NAME...]` (paths start at one of {})", ValuePath::ROOTS),
        )
    })
}

fn parse_feature(
    v: &toml::Value,
    key: &str,
    meters: &BTreeMap<&str, Aggregation>,
) -> Result<Feature, ConfigError> {
    let shape = "must be `true`/`false`, `{ meter = \"NAME\", limit = \"N\", period = \"month\" }` or `{ credits = true }`";
    match v {
        toml::Value::Boolean(b) => Ok(Feature::Boolean(*b)),
        toml::Value::Table(t)
            if t.get("credits") == Some(&toml::Value::Boolean(true)) && t.len() == 1 =>
        {
            Ok(Feature::Credits)
        }
        toml::Value::Table(t) => {
            let meter = match t.get("meter") {
                Some(toml::Value::String(m)) => m.clone(),
                _ => return Err(invalid(key, shape)),
            };
            match meters.get(meter.as_str()) {
                None => {
                    return Err(invalid(
                        format!("{key}.meter"),
                        format!("no meter is named `{meter}`"),
                    ));
                }
                Some(Aggregation::Sum | Aggregation::Count) => {}
                Some(_) => {
                    return Err(invalid(
                        format!("{key}.meter"),
                        format!(
                            "meter `{meter}` is not a sum or count meter; a limit needs usage that adds up over the month"
                        ),
                    ));
                }
            }
            let limit = parse_decimal_value(
                t.get("limit")
                    .ok_or_else(|| invalid(format!("{key}.limit"), "is required"))?,
                &format!("{key}.limit"),
            )?;
            let period = match t
                .get("period")
                .and_then(toml::Value::as_str)
                .unwrap_or("month")
            {
                "month" => WindowSize::Month,
                other => {
                    return Err(invalid(
                        format!("{key}.period"),
                        format!("`{other}` is not allowed; only `month` is supported"),
                    ));
                }
            };
            if let Some(extra) = t
                .keys()
                .find(|k| !matches!(k.as_str(), "meter" | "limit" | "period"))
            {
                return Err(invalid(
                    format!("{key}.{extra}"),
                    "unknown key; allowed: meter, limit, period",
                ));
            }
            Ok(Feature::Metered {
                meter,
                limit,
                period,
            })
        }
        _ => Err(invalid(key, shape)),
    }
}

/// 64 hex digits as 32 bytes.
fn parse_sha256(text: &str) -> Option<[u8; 32]> {
    let text = text.as_bytes();
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in text.chunks(2).enumerate() {
        let hex = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(hex, 16).ok()?;
    }
    Some(out)
}

fn parse_setting(text: Option<&str>, default: &str, key: &str) -> Result<Micros, ConfigError> {
    let text = text.unwrap_or(default);
    parse_duration(text)
        .ok_or_else(|| invalid(key, format!("`{text}` is not a duration; write a whole number with a unit: ms, s, m, h, d or w (e.g. \"48h\")")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_default_is_valid() {
        let c = Config::builtin();
        assert!(!c.meters.is_empty());
        assert_eq!(c.pipeline.allowed_lateness, 48 * crate::time::HOUR);
    }

    #[test]
    fn shipped_copy_of_the_default_is_the_default() {
        let path = format!(
            "{}/../deploy/config/default.toml",
            std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR for tests")
        );
        assert_eq!(std::fs::read_to_string(path).unwrap(), DEFAULT_TOML);
    }

    #[test]
    fn api_keys_are_hashes_with_one_scope() {
        let hash = "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";
        let c = Config::from_toml(&format!(
            "[[api_keys]]\ntenant = \"acme\"\nsha256 = \"{hash}\"\n[[api_keys]]\nadmin = true\nsha256 = \"{hash}\"\n"
        ))
        .unwrap();
        assert_eq!(c.api_keys[0].scope, KeyScope::Tenant("acme".into()));
        assert_eq!(c.api_keys[1].scope, KeyScope::Admin);
        assert_eq!(c.api_keys[0].sha256[0], 0x2c);
        let err = |text: &str| Config::from_toml(text).unwrap_err().to_string();
        assert!(
            err("[[api_keys]]\ntenant = \"a\"\nsha256 = \"foo\"\n").contains("api_keys[0].sha256")
        );
        assert!(
            err(&format!(
                "[[api_keys]]\ntenant = \"a\"\nadmin = true\nsha256 = \"{hash}\"\n"
            ))
            .contains("exactly one of")
        );
    }

    #[test]
    fn view_settings_and_their_errors() {
        let c = Config::builtin();
        assert!(c.costs.enabled && c.anomaly.enabled && c.forecasts);
        assert_eq!(
            c.costs.credit_price,
            Some(Decimal9::parse("0.002").unwrap())
        );
        let off = Config::from_toml(
            "[costs]\nenabled = false\n[anomaly]\nenabled = false\n[forecasts]\nenabled = false\n",
        )
        .unwrap();
        assert!(!off.costs.enabled && !off.anomaly.enabled && !off.forecasts);
        assert_eq!(off.anomaly.threshold, Decimal9::from_int(3));
        assert_eq!(off.costs.credit_price, None);
        let err = |text: &str| Config::from_toml(text).unwrap_err().to_string();
        assert!(err("[anomaly]\nthreshold = 2.5\n").contains("anomaly.threshold"));
        assert!(err("[costs]\nmodel = \"model\"\n").contains("costs.model"));
        assert!(
            err(
                "[[model_prices]]\nprovider = \"p\"\nmodel = \"m\"\ninput = \"x\"\noutput = \"1\"\n"
            )
            .contains("model_prices[0].input")
        );
        let metered_max = r#"
[[meters]]
name = "seats"
event_type = "seat"
aggregation = "max"
[[plans]]
name = "p"
features.seats = { meter = "seats", limit = "5" }
"#;
        assert!(err(metered_max).contains("is not a sum or count meter"));
    }

    #[test]
    fn golden_configs_parse() {
        for case in ["small", "medium"] {
            let path = format!(
                "{}/../tests/golden/{case}/config.toml",
                std::env::var("CARGO_MANIFEST_DIR")
                    .expect("cargo sets CARGO_MANIFEST_DIR for tests")
            );
            let text = std::fs::read_to_string(&path).unwrap();
            let c = Config::from_toml(&text).unwrap();
            assert_eq!(c.meters.len(), 8);
            assert_eq!(c.plans.len(), 2);
        }
    }

    #[test]
    fn errors_name_the_key() {
        let bad = r#"
[[meters]]
name = "x"
event_type = "t"
aggregation = "summ"
"#;
        let e = Config::from_toml(bad).unwrap_err().to_string();
        assert!(
            e.contains("meters[0].aggregation") && e.contains("unique_count"),
            "{e}"
        );

        let bad = "[[meters]]\nname = \"x\"\nevent_type = \"t\"\naggregation = \"sum\"\nwindows = [\"week\"]\n";
        let e = Config::from_toml(bad).unwrap_err().to_string();
        assert!(
            e.contains("meters[0].windows[0]") && e.contains("minute"),
            "{e}"
        );

        let bad = "[pipeline]\nallowed_lateness = \"2 days\"\n";
        let e = Config::from_toml(bad).unwrap_err().to_string();
        assert!(e.contains("pipeline.allowed_lateness"), "{e}");

        let bad = "[pipeline]\nallowed_latenes = \"2d\"\n";
        let e = Config::from_toml(bad).unwrap_err().to_string();
        assert!(e.contains("allowed_latenes"), "{e}");

        let bad = "[[meters]]\nname = \"x\"\nevent_type = \"t\"\naggregation = \"sum\"\nvalue = \"properties.x\"\n";
        let e = Config::from_toml(bad).unwrap_err().to_string();
        assert!(e.contains("meters[0].value"), "{e}");
    }

    #[test]
    fn scheduled_exports_are_checked() {
        let with = |export: &str| {
            Config::from_toml(&format!("[[exports]]\n{export}"))
                .map(|c| c.exports)
                .map_err(|e| e.to_string())
        };
        let ok =
            with("kind = \"invoices\"\nschedule = \"0 0 6 * * *\"\nto = \"s3://b/x\"").unwrap();
        assert_eq!(ok[0].format, ExportFormat::Parquet);
        assert!(
            with("kind = \"bills\"\nschedule = \"0 0 6 * * *\"\nto = \"x\"")
                .unwrap_err()
                .contains("exports[0].kind")
        );
        assert!(
            with("kind = \"revenue\"\nschedule = \"daily\"\nto = \"x\"")
                .unwrap_err()
                .contains("not a cron schedule")
        );
        assert!(
            with("kind = \"revenue\"\nschedule = \"0 0 6 * * *\"\nto = \"x\"\nformat = \"xlsx\"")
                .unwrap_err()
                .contains("use csv, json or parquet")
        );
    }
}
