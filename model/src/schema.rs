//! Arrow schemas of the output tables (DESIGN.md section 4). Money and usage are
//! `Decimal128(38, 9)`; times are microsecond timestamps in UTC.

use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use std::sync::{Arc, LazyLock};

/// Decimal type of every usage, credit and money column.
pub const DECIMAL: DataType = DataType::Decimal128(38, 9);

/// Timestamp type of every time column.
pub fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn utf8(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Utf8, nullable)
}

fn source_fields() -> [Field; 3] {
    [
        utf8("source", false),
        Field::new("source_partition", DataType::Int32, false),
        Field::new("source_offset", DataType::Int64, false),
    ]
}

/// The names of all tables, as registered for SQL.
pub const TABLES: [&str; 12] = [
    "events",
    "usage_windows",
    "rejected_events",
    "late_events",
    "credit_grants",
    "credit_balances",
    "credit_ledger",
    "entitlements",
    "subscriptions",
    "costs",
    "anomaly_scores",
    "forecasts",
];

/// `events`: one row per accepted event.
pub static EVENTS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(
        [
            utf8("tenant_id", false),
            utf8("id", false),
            utf8("customer_id", false),
            utf8("event_type", false),
            Field::new("timestamp", timestamp(), false),
            Field::new("value", DECIMAL, false),
            utf8("properties", true),
            Field::new("ingested_at", timestamp(), false),
        ]
        .into_iter()
        .chain(source_fields())
        .collect::<Vec<_>>(),
    ))
});

/// `usage_windows`: one row per (customer, meter, dimensions, window).
pub static USAGE_WINDOWS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        utf8("tenant_id", false),
        utf8("customer_id", false),
        utf8("meter", false),
        utf8("dimensions", false),
        utf8("window_size", false),
        Field::new("window_start", timestamp(), false),
        Field::new("window_end", timestamp(), false),
        Field::new("value", DECIMAL, false),
        Field::new("events", DataType::Int64, false),
        Field::new("is_final", DataType::Boolean, false),
    ]))
});

/// `rejected_events`: bad input and duplicates.
pub static REJECTED_EVENTS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(
        [
            utf8("tenant_id", true),
            utf8("event_id", true),
            utf8("raw", false),
            utf8("reason", false),
            Field::new("ingested_at", timestamp(), false),
        ]
        .into_iter()
        .chain(source_fields())
        .collect::<Vec<_>>(),
    ))
});

/// `late_events`: valid events older than the lateness bound.
pub static LATE_EVENTS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(
        [
            utf8("tenant_id", false),
            utf8("event_id", false),
            utf8("customer_id", false),
            Field::new("timestamp", timestamp(), false),
            Field::new("watermark", timestamp(), false),
            utf8("raw", false),
            utf8("reason", false),
            Field::new("ingested_at", timestamp(), false),
        ]
        .into_iter()
        .chain(source_fields())
        .collect::<Vec<_>>(),
    ))
});

/// `credit_grants`: one row per grant.
pub static CREDIT_GRANTS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        utf8("tenant_id", false),
        utf8("grant_id", false),
        utf8("customer_id", false),
        Field::new("amount", DECIMAL, false),
        Field::new("priority", DataType::Int64, false),
        Field::new("effective_at", timestamp(), false),
        Field::new("expires_at", timestamp(), true),
        Field::new("voided_at", timestamp(), true),
        Field::new("consumed", DECIMAL, false),
        Field::new("expired", DECIMAL, false),
        Field::new("voided", DECIMAL, false),
        Field::new("remaining", DECIMAL, false),
        Field::new("price", DECIMAL, true),
        utf8("currency", true),
    ]))
});

/// `credit_balances`: one row per customer with credits or burn.
pub static CREDIT_BALANCES: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        utf8("tenant_id", false),
        utf8("customer_id", false),
        Field::new("balance", DECIMAL, false),
        Field::new("granted", DECIMAL, false),
        Field::new("consumed", DECIMAL, false),
        Field::new("expired", DECIMAL, false),
        Field::new("voided", DECIMAL, false),
        Field::new("overage", DECIMAL, false),
        Field::new("exhaustion_at", timestamp(), true),
        Field::new("as_of", timestamp(), true),
    ]))
});

/// `credit_ledger`: grant, expiry and void entries, and burn and overage per hour.
pub static CREDIT_LEDGER: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        utf8("tenant_id", false),
        utf8("customer_id", false),
        utf8("grant_id", true),
        utf8("entry", false),
        Field::new("at", timestamp(), false),
        Field::new("amount", DECIMAL, false),
    ]))
});

/// `entitlements`: one row per (customer, feature of any plan), as of the watermark.
pub static ENTITLEMENTS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        utf8("tenant_id", false),
        utf8("customer_id", false),
        utf8("feature", false),
        utf8("plan", true),
        Field::new("has_access", DataType::Boolean, false),
        Field::new("usage", DECIMAL, true),
        Field::new("limit", DECIMAL, true),
        Field::new("remaining", DECIMAL, true),
        utf8("reason", false),
        Field::new("as_of", timestamp(), true),
    ]))
});

/// `subscriptions`: one row per `subscribe` command: the plan a customer is on from
/// `effective_at` until `ends_at` (the next subscription's start; null for the current
/// one).
pub static SUBSCRIPTIONS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        utf8("tenant_id", false),
        utf8("customer_id", false),
        utf8("plan", false),
        Field::new("effective_at", timestamp(), false),
        Field::new("ends_at", timestamp(), true),
    ]))
});

/// `costs`: one row per (customer, provider, model, UTC day) of model calls.
pub static COSTS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        utf8("tenant_id", false),
        utf8("customer_id", false),
        utf8("provider", false),
        utf8("model", false),
        Field::new("day", timestamp(), false),
        Field::new("events", DataType::Int64, false),
        Field::new("input_tokens", DECIMAL, false),
        Field::new("cached_input_tokens", DECIMAL, false),
        Field::new("output_tokens", DECIMAL, false),
        Field::new("provider_cost_usd", DECIMAL, true),
        Field::new("credits", DECIMAL, false),
        Field::new("credit_value_usd", DECIMAL, true),
        Field::new("margin_usd", DECIMAL, true),
        Field::new("priced", DataType::Boolean, false),
    ]))
});

/// `anomaly_scores`: one row per (customer, meter, hour window with usage).
pub static ANOMALY_SCORES: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        utf8("tenant_id", false),
        utf8("customer_id", false),
        utf8("meter", false),
        Field::new("window_start", timestamp(), false),
        Field::new("value", DECIMAL, false),
        Field::new("baseline_mean", DECIMAL, false),
        Field::new("baseline_std", DECIMAL, false),
        Field::new("score", DECIMAL, true),
        Field::new("flagged", DataType::Boolean, false),
    ]))
});

/// `forecasts`: one row per (customer, meter) for the month holding the watermark.
pub static FORECASTS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        utf8("tenant_id", false),
        utf8("customer_id", false),
        utf8("meter", false),
        Field::new("month", timestamp(), false),
        Field::new("as_of", timestamp(), false),
        Field::new("usage_to_date", DECIMAL, false),
        Field::new("trailing_7d", DECIMAL, false),
        Field::new("daily_rate", DECIMAL, false),
        Field::new("forecast", DECIMAL, true),
    ]))
});

/// Tables derived at query time from the committed ones and the plans' pricing
/// (`invoices`, `invoice_lines`, `revenue`; see `om_queries::billing`).
pub const DERIVED_TABLES: [&str; 3] = ["invoices", "invoice_lines", "revenue"];

/// `invoices`: one row per (customer, calendar month) with a priced plan.
pub static INVOICES: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        utf8("tenant_id", false),
        utf8("customer_id", false),
        utf8("period", false),
        Field::new("period_start", timestamp(), false),
        Field::new("period_end", timestamp(), false),
        utf8("plan", false),
        utf8("currency", false),
        Field::new("subtotal", DECIMAL, false),
        Field::new("minimum_true_up", DECIMAL, false),
        Field::new("total", DECIMAL, false),
        Field::new("credits_applied", DECIMAL, false),
        Field::new("credit_overage", DECIMAL, false),
        Field::new("lines", DataType::Int64, false),
        Field::new("is_final", DataType::Boolean, false),
        Field::new("as_of", timestamp(), false),
    ]))
});

/// `invoice_lines`: the lines of each invoice, numbered from 1.
pub static INVOICE_LINES: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        utf8("tenant_id", false),
        utf8("customer_id", false),
        utf8("period", false),
        Field::new("line", DataType::Int64, false),
        utf8("kind", false),
        utf8("meter", true),
        utf8("price_model", true),
        Field::new("usage", DECIMAL, true),
        Field::new("tier", DataType::Int64, true),
        Field::new("tier_from", DECIMAL, true),
        Field::new("tier_to", DECIMAL, true),
        Field::new("quantity", DECIMAL, false),
        Field::new("unit_price", DECIMAL, true),
        Field::new("flat_amount", DECIMAL, false),
        Field::new("amount", DECIMAL, false),
        utf8("currency", false),
    ]))
});

/// `revenue`: one row per (customer, grant with a price, UTC day with ledger entries).
pub static REVENUE: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        utf8("tenant_id", false),
        utf8("customer_id", false),
        utf8("grant_id", false),
        Field::new("day", timestamp(), false),
        utf8("currency", false),
        Field::new("price", DECIMAL, false),
        Field::new("credits_consumed", DECIMAL, false),
        Field::new("credits_lost", DECIMAL, false),
        Field::new("recognized", DECIMAL, false),
        Field::new("breakage", DECIMAL, false),
        Field::new("recognized_to_date", DECIMAL, false),
        Field::new("breakage_to_date", DECIMAL, false),
        Field::new("deferred", DECIMAL, false),
        Field::new("ledger_entries", DataType::Int64, false),
        Field::new("ledger_from", timestamp(), false),
        Field::new("ledger_to", timestamp(), false),
    ]))
});

/// The schema of a table by name.
pub fn table_schema(name: &str) -> Option<SchemaRef> {
    Some(Arc::clone(match name {
        "events" => &EVENTS,
        "usage_windows" => &USAGE_WINDOWS,
        "rejected_events" => &REJECTED_EVENTS,
        "late_events" => &LATE_EVENTS,
        "credit_grants" => &CREDIT_GRANTS,
        "credit_balances" => &CREDIT_BALANCES,
        "credit_ledger" => &CREDIT_LEDGER,
        "entitlements" => &ENTITLEMENTS,
        "subscriptions" => &SUBSCRIPTIONS,
        "invoices" => &INVOICES,
        "invoice_lines" => &INVOICE_LINES,
        "revenue" => &REVENUE,
        "costs" => &COSTS,
        "anomaly_scores" => &ANOMALY_SCORES,
        "forecasts" => &FORECASTS,
        _ => return None,
    }))
}
