//! Records -> Arrow batches with the table schemas of `om_model::schema`.

use crate::Result;
use arrow::array::{
    ArrayRef, BooleanBuilder, Decimal128Builder, Int32Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
pub use arrow::record_batch::RecordBatch;
use om_model::credit::{BalanceRow, GrantRow, LedgerRow};
use om_model::schema::{self, DECIMAL};
use om_model::views::{AnomalyRow, CostRow, EntitlementRow, ForecastRow};
use om_model::{Decimal9, LateRecord, Micros, RejectedRecord, SourcePosition, WindowSize};
use std::sync::Arc;

fn ts_builder(capacity: usize) -> TimestampMicrosecondBuilder {
    TimestampMicrosecondBuilder::with_capacity(capacity).with_timezone("UTC")
}

fn dec_builder(capacity: usize) -> Decimal128Builder {
    Decimal128Builder::with_capacity(capacity).with_data_type(DECIMAL)
}

/// The `source`, `source_partition`, `source_offset` columns.
struct SourceColumns<'a> {
    names: &'a [String],
    source: StringBuilder,
    partition: Int32Builder,
    offset: Int64Builder,
}

impl<'a> SourceColumns<'a> {
    fn new(names: &'a [String], capacity: usize) -> Self {
        SourceColumns {
            names,
            source: StringBuilder::with_capacity(capacity, capacity * 16),
            partition: Int32Builder::with_capacity(capacity),
            offset: Int64Builder::with_capacity(capacity),
        }
    }

    fn push(&mut self, p: &SourcePosition) {
        self.source.append_value(
            self.names
                .get(p.source as usize)
                .map_or("unknown", String::as_str),
        );
        self.partition.append_value(p.partition as i32);
        self.offset.append_value(p.offset as i64);
    }

    fn finish(mut self) -> [ArrayRef; 3] {
        [
            Arc::new(self.source.finish()),
            Arc::new(self.partition.finish()),
            Arc::new(self.offset.finish()),
        ]
    }
}

/// The `events` table, built while decoding: every valid event of a chunk is pushed,
/// and `finish` keeps those that were accepted.
pub struct EventsBuilder<'a> {
    tenant: StringBuilder,
    id: StringBuilder,
    customer: StringBuilder,
    event_type: StringBuilder,
    timestamp: TimestampMicrosecondBuilder,
    value: Decimal128Builder,
    properties: StringBuilder,
    src: SourceColumns<'a>,
    len: usize,
}

/// One event for [`EventsBuilder::push`].
#[derive(Clone, Copy, Debug)]
pub struct EventColumns<'e> {
    /// Tenant.
    pub tenant_id: &'e str,
    /// Idempotency key.
    pub id: &'e str,
    /// Customer.
    pub customer_id: &'e str,
    /// Event type.
    pub event_type: &'e str,
    /// Event time.
    pub timestamp: Micros,
    /// `value`.
    pub value: Decimal9,
    /// The properties JSON text.
    pub properties: Option<&'e str>,
}

impl<'a> EventsBuilder<'a> {
    /// An empty builder; `sources` names the source indexes of positions.
    pub fn new(sources: &'a [String], capacity: usize) -> Self {
        let n = capacity;
        EventsBuilder {
            tenant: StringBuilder::with_capacity(n, n * 8),
            id: StringBuilder::with_capacity(n, n * 16),
            customer: StringBuilder::with_capacity(n, n * 10),
            event_type: StringBuilder::with_capacity(n, n * 12),
            timestamp: ts_builder(n),
            value: dec_builder(n),
            properties: StringBuilder::with_capacity(n, n * 96),
            src: SourceColumns::new(sources, n),
            len: 0,
        }
    }

    /// Appends one event.
    pub fn push(&mut self, e: EventColumns<'_>, position: &SourcePosition) {
        self.tenant.append_value(e.tenant_id);
        self.id.append_value(e.id);
        self.customer.append_value(e.customer_id);
        self.event_type.append_value(e.event_type);
        self.timestamp.append_value(e.timestamp);
        self.value.append_value(e.value.raw());
        self.properties.append_option(e.properties);
        self.src.push(position);
        self.len += 1;
    }

    /// Events pushed so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing was pushed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The batch of the events whose `keep` entry is true (all when `keep` is `None`).
    pub fn finish(mut self, keep: Option<&[bool]>, ingested_at: Micros) -> Result<RecordBatch> {
        let mut ingested = ts_builder(self.len);
        ingested.append_value_n(ingested_at, self.len);
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(self.tenant.finish()),
            Arc::new(self.id.finish()),
            Arc::new(self.customer.finish()),
            Arc::new(self.event_type.finish()),
            Arc::new(self.timestamp.finish()),
            Arc::new(self.value.finish()),
            Arc::new(self.properties.finish()),
            Arc::new(ingested.finish()),
        ];
        columns.extend(self.src.finish());
        let batch = RecordBatch::try_new(Arc::clone(&schema::EVENTS), columns)?;
        match keep {
            Some(keep) if keep.iter().any(|k| !k) => {
                let mask = arrow::array::BooleanArray::from(keep.to_vec());
                Ok(arrow::compute::filter_record_batch(&batch, &mask)?)
            }
            _ => Ok(batch),
        }
    }
}

/// The `rejected_events` table.
pub fn rejected(
    rows: &[RejectedRecord],
    ingested_at: Micros,
    sources: &[String],
) -> Result<RecordBatch> {
    let n = rows.len();
    let mut tenant = StringBuilder::new();
    let mut event_id = StringBuilder::new();
    let mut raw = StringBuilder::new();
    let mut reason = StringBuilder::new();
    let mut ingested = ts_builder(n);
    let mut src = SourceColumns::new(sources, n);
    for r in rows {
        tenant.append_option(r.tenant_id.as_deref());
        event_id.append_option(r.event_id.as_deref());
        raw.append_value(&r.raw);
        reason.append_value(&r.reason);
        ingested.append_value(ingested_at);
        src.push(&r.position);
    }
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(tenant.finish()),
        Arc::new(event_id.finish()),
        Arc::new(raw.finish()),
        Arc::new(reason.finish()),
        Arc::new(ingested.finish()),
    ];
    columns.extend(src.finish());
    Ok(RecordBatch::try_new(
        Arc::clone(&schema::REJECTED_EVENTS),
        columns,
    )?)
}

/// The `late_events` table.
pub fn late(rows: &[LateRecord], ingested_at: Micros, sources: &[String]) -> Result<RecordBatch> {
    let n = rows.len();
    let mut tenant = StringBuilder::new();
    let mut event_id = StringBuilder::new();
    let mut customer = StringBuilder::new();
    let mut timestamp = ts_builder(n);
    let mut watermark = ts_builder(n);
    let mut raw = StringBuilder::new();
    let mut reason = StringBuilder::new();
    let mut ingested = ts_builder(n);
    let mut src = SourceColumns::new(sources, n);
    for r in rows {
        tenant.append_value(&r.tenant_id);
        event_id.append_value(&r.event_id);
        customer.append_value(&r.customer_id);
        timestamp.append_value(r.timestamp);
        watermark.append_value(r.watermark);
        raw.append_value(&r.raw);
        reason.append_value(&r.reason);
        ingested.append_value(ingested_at);
        src.push(&r.position);
    }
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(tenant.finish()),
        Arc::new(event_id.finish()),
        Arc::new(customer.finish()),
        Arc::new(timestamp.finish()),
        Arc::new(watermark.finish()),
        Arc::new(raw.finish()),
        Arc::new(reason.finish()),
        Arc::new(ingested.finish()),
    ];
    columns.extend(src.finish());
    Ok(RecordBatch::try_new(
        Arc::clone(&schema::LATE_EVENTS),
        columns,
    )?)
}

/// One `usage_windows` row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageRow<'a> {
    /// Tenant.
    pub tenant_id: &'a str,
    /// Customer.
    pub customer_id: &'a str,
    /// Meter name.
    pub meter: &'a str,
    /// Canonical dimensions JSON.
    pub dimensions: &'a str,
    /// Window size.
    pub size: WindowSize,
    /// Window start.
    pub start: Micros,
    /// Its value.
    pub value: Decimal9,
    /// Number of events in it.
    pub events: i64,
    /// True once no accepted event can change it.
    pub is_final: bool,
}

/// How many leading columns of `usage_windows` are a row's key (its window): all but
/// `value`, `events` and `is_final`.
pub const USAGE_KEY_COLUMNS: usize = 7;

/// The columns of `usage_windows` after its key columns, from each row's
/// `(value, events, is_final)`.
pub fn usage_values(rows: impl ExactSizeIterator<Item = (Decimal9, i64, bool)>) -> [ArrayRef; 3] {
    let n = rows.len();
    let mut value = dec_builder(n);
    let mut events = Int64Builder::with_capacity(n);
    let mut is_final = BooleanBuilder::with_capacity(n);
    for (v, e, f) in rows {
        value.append_value(v.raw());
        events.append_value(e);
        is_final.append_value(f);
    }
    [
        Arc::new(value.finish()),
        Arc::new(events.finish()),
        Arc::new(is_final.finish()),
    ]
}

/// The `usage_windows` table.
pub fn usage_windows<'a>(rows: impl ExactSizeIterator<Item = UsageRow<'a>>) -> Result<RecordBatch> {
    let n = rows.len();
    let mut tenant = StringBuilder::with_capacity(n, n * 8);
    let mut customer = StringBuilder::with_capacity(n, n * 10);
    let mut meter = StringBuilder::with_capacity(n, n * 12);
    let mut dimensions = StringBuilder::with_capacity(n, n * 16);
    let mut size = StringBuilder::with_capacity(n, n * 5);
    let mut start = ts_builder(n);
    let mut end = ts_builder(n);
    let mut value = dec_builder(n);
    let mut events = Int64Builder::with_capacity(n);
    let mut is_final = BooleanBuilder::with_capacity(n);
    // A partition's rows share one window: compute a month's end once, not per row.
    let mut last_window: Option<(WindowSize, Micros, Micros)> = None;
    for r in rows {
        tenant.append_value(r.tenant_id);
        customer.append_value(r.customer_id);
        meter.append_value(r.meter);
        dimensions.append_value(r.dimensions);
        size.append_value(r.size.as_str());
        start.append_value(r.start);
        let window_end = match last_window {
            Some((s, t, e)) if s == r.size && t == r.start => e,
            _ => {
                let e = r.size.end(r.start);
                last_window = Some((r.size, r.start, e));
                e
            }
        };
        end.append_value(window_end);
        value.append_value(r.value.raw());
        events.append_value(r.events);
        is_final.append_value(r.is_final);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(tenant.finish()),
        Arc::new(customer.finish()),
        Arc::new(meter.finish()),
        Arc::new(dimensions.finish()),
        Arc::new(size.finish()),
        Arc::new(start.finish()),
        Arc::new(end.finish()),
        Arc::new(value.finish()),
        Arc::new(events.finish()),
        Arc::new(is_final.finish()),
    ];
    Ok(RecordBatch::try_new(
        Arc::clone(&schema::USAGE_WINDOWS),
        columns,
    )?)
}

/// The `credit_grants` table.
pub fn credit_grants(rows: &[&GrantRow]) -> Result<RecordBatch> {
    let n = rows.len();
    let mut tenant = StringBuilder::new();
    let mut grant_id = StringBuilder::new();
    let mut customer = StringBuilder::new();
    let mut amount = dec_builder(n);
    let mut priority = Int64Builder::with_capacity(n);
    let mut effective_at = ts_builder(n);
    let mut expires_at = ts_builder(n);
    let mut voided_at = ts_builder(n);
    let mut consumed = dec_builder(n);
    let mut expired = dec_builder(n);
    let mut voided = dec_builder(n);
    let mut remaining = dec_builder(n);
    let mut price = dec_builder(n);
    let mut currency = StringBuilder::new();
    for r in rows {
        let g = &r.grant;
        tenant.append_value(&g.tenant_id);
        grant_id.append_value(&g.grant_id);
        customer.append_value(&g.customer_id);
        amount.append_value(g.amount.raw());
        priority.append_value(g.priority);
        effective_at.append_value(g.effective_at);
        expires_at.append_option(g.expires_at);
        voided_at.append_option(r.voided_at);
        consumed.append_value(r.consumed.raw());
        expired.append_value(r.expired.raw());
        voided.append_value(r.voided.raw());
        remaining.append_value(r.remaining.raw());
        price.append_option(g.price.map(Decimal9::raw));
        currency.append_option(g.currency.as_deref());
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(tenant.finish()),
        Arc::new(grant_id.finish()),
        Arc::new(customer.finish()),
        Arc::new(amount.finish()),
        Arc::new(priority.finish()),
        Arc::new(effective_at.finish()),
        Arc::new(expires_at.finish()),
        Arc::new(voided_at.finish()),
        Arc::new(consumed.finish()),
        Arc::new(expired.finish()),
        Arc::new(voided.finish()),
        Arc::new(remaining.finish()),
        Arc::new(price.finish()),
        Arc::new(currency.finish()),
    ];
    Ok(RecordBatch::try_new(
        Arc::clone(&schema::CREDIT_GRANTS),
        columns,
    )?)
}

/// The `credit_balances` table, as of `as_of` (the watermark).
pub fn credit_balances(rows: &[BalanceRow], as_of: Option<Micros>) -> Result<RecordBatch> {
    let n = rows.len();
    let mut tenant = StringBuilder::new();
    let mut customer = StringBuilder::new();
    let mut decimals: [Decimal128Builder; 6] = std::array::from_fn(|_| dec_builder(n));
    let mut exhaustion = ts_builder(n);
    let mut as_of_col = ts_builder(n);
    for r in rows {
        tenant.append_value(&r.tenant_id);
        customer.append_value(&r.customer_id);
        let values = [
            r.balance, r.granted, r.consumed, r.expired, r.voided, r.overage,
        ];
        for (b, v) in decimals.iter_mut().zip(values) {
            b.append_value(v.raw());
        }
        exhaustion.append_option(r.exhaustion_at);
        as_of_col.append_option(as_of);
    }
    let mut columns: Vec<ArrayRef> = vec![Arc::new(tenant.finish()), Arc::new(customer.finish())];
    for mut b in decimals {
        columns.push(Arc::new(b.finish()));
    }
    columns.push(Arc::new(exhaustion.finish()));
    columns.push(Arc::new(as_of_col.finish()));
    Ok(RecordBatch::try_new(
        Arc::clone(&schema::CREDIT_BALANCES),
        columns,
    )?)
}

/// The `credit_ledger` table.
pub fn credit_ledger(rows: &[LedgerRow<'_>]) -> Result<RecordBatch> {
    let n = rows.len();
    let mut tenant = StringBuilder::with_capacity(n, n * 8);
    let mut customer = StringBuilder::with_capacity(n, n * 10);
    let mut grant_id = StringBuilder::with_capacity(n, n * 12);
    let mut entry = StringBuilder::with_capacity(n, n * 5);
    let mut at = ts_builder(n);
    let mut amount = dec_builder(n);
    for r in rows {
        tenant.append_value(r.tenant_id);
        customer.append_value(r.customer_id);
        grant_id.append_option(r.grant_id);
        entry.append_value(r.kind.as_str());
        at.append_value(r.at);
        amount.append_value(r.amount.raw());
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(tenant.finish()),
        Arc::new(customer.finish()),
        Arc::new(grant_id.finish()),
        Arc::new(entry.finish()),
        Arc::new(at.finish()),
        Arc::new(amount.finish()),
    ];
    Ok(RecordBatch::try_new(
        Arc::clone(&schema::CREDIT_LEDGER),
        columns,
    )?)
}

pub use om_model::views::SubscriptionRow;

/// The `subscriptions` table.
pub fn subscriptions(rows: &[SubscriptionRow<'_>]) -> Result<RecordBatch> {
    let n = rows.len();
    let mut tenant = StringBuilder::with_capacity(n, n * 8);
    let mut customer = StringBuilder::with_capacity(n, n * 10);
    let mut plan = StringBuilder::with_capacity(n, n * 6);
    let mut effective_at = ts_builder(n);
    let mut ends_at = ts_builder(n);
    for &(t, c, p, from, to) in rows {
        tenant.append_value(t);
        customer.append_value(c);
        plan.append_value(p);
        effective_at.append_value(from);
        ends_at.append_option(to);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(tenant.finish()),
        Arc::new(customer.finish()),
        Arc::new(plan.finish()),
        Arc::new(effective_at.finish()),
        Arc::new(ends_at.finish()),
    ];
    Ok(RecordBatch::try_new(
        Arc::clone(&schema::SUBSCRIPTIONS),
        columns,
    )?)
}

/// The `entitlements` table, as of `as_of`.
pub fn entitlements(rows: &[EntitlementRow<'_>], as_of: Option<Micros>) -> Result<RecordBatch> {
    let n = rows.len();
    let mut tenant = StringBuilder::with_capacity(n, n * 8);
    let mut customer = StringBuilder::with_capacity(n, n * 10);
    let mut feature = StringBuilder::with_capacity(n, n * 8);
    let mut plan = StringBuilder::with_capacity(n, n * 6);
    let mut access = BooleanBuilder::with_capacity(n);
    let mut decimals: [Decimal128Builder; 3] = std::array::from_fn(|_| dec_builder(n));
    let mut reason = StringBuilder::with_capacity(n, n * 8);
    let mut as_of_col = ts_builder(n);
    for r in rows {
        tenant.append_value(r.tenant_id);
        customer.append_value(r.customer_id);
        feature.append_value(r.feature);
        plan.append_option(r.plan);
        access.append_value(r.has_access);
        for (b, v) in decimals.iter_mut().zip([r.usage, r.limit, r.remaining]) {
            b.append_option(v.map(Decimal9::raw));
        }
        reason.append_value(r.reason.as_str());
        as_of_col.append_option(as_of);
    }
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(tenant.finish()),
        Arc::new(customer.finish()),
        Arc::new(feature.finish()),
        Arc::new(plan.finish()),
        Arc::new(access.finish()),
    ];
    for mut b in decimals {
        columns.push(Arc::new(b.finish()));
    }
    columns.push(Arc::new(reason.finish()));
    columns.push(Arc::new(as_of_col.finish()));
    Ok(RecordBatch::try_new(
        Arc::clone(&schema::ENTITLEMENTS),
        columns,
    )?)
}

/// The `costs` table.
pub fn costs(rows: &[CostRow<'_>]) -> Result<RecordBatch> {
    let n = rows.len();
    let mut strings: [StringBuilder; 4] =
        std::array::from_fn(|_| StringBuilder::with_capacity(n, n * 10));
    let mut day = ts_builder(n);
    let mut events = Int64Builder::with_capacity(n);
    let mut decimals: [Decimal128Builder; 7] = std::array::from_fn(|_| dec_builder(n));
    let mut priced = BooleanBuilder::with_capacity(n);
    for r in rows {
        for (b, v) in strings
            .iter_mut()
            .zip([r.tenant_id, r.customer_id, r.provider, r.model])
        {
            b.append_value(v);
        }
        day.append_value(r.day);
        events.append_value(r.tally.events);
        let t = &r.tally;
        let values = [
            Some(t.input_tokens),
            Some(t.cached_input_tokens),
            Some(t.output_tokens),
            r.provider_cost_usd,
            Some(t.credits),
            r.credit_value_usd,
            r.margin_usd,
        ];
        for (b, v) in decimals.iter_mut().zip(values) {
            b.append_option(v.map(Decimal9::raw));
        }
        priced.append_value(r.provider_cost_usd.is_some());
    }
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(14);
    for mut b in strings {
        columns.push(Arc::new(b.finish()));
    }
    columns.push(Arc::new(day.finish()));
    columns.push(Arc::new(events.finish()));
    for mut b in decimals {
        columns.push(Arc::new(b.finish()));
    }
    columns.push(Arc::new(priced.finish()));
    Ok(RecordBatch::try_new(Arc::clone(&schema::COSTS), columns)?)
}

/// The `anomaly_scores` table.
pub fn anomaly_scores(rows: &[AnomalyRow<'_>]) -> Result<RecordBatch> {
    let n = rows.len();
    let mut strings: [StringBuilder; 3] =
        std::array::from_fn(|_| StringBuilder::with_capacity(n, n * 10));
    let mut start = ts_builder(n);
    let mut decimals: [Decimal128Builder; 4] = std::array::from_fn(|_| dec_builder(n));
    let mut flagged = BooleanBuilder::with_capacity(n);
    for r in rows {
        for (b, v) in strings
            .iter_mut()
            .zip([r.tenant_id, r.customer_id, r.meter])
        {
            b.append_value(v);
        }
        start.append_value(r.window_start);
        let values = [
            Some(r.value),
            Some(r.baseline_mean),
            Some(r.baseline_std),
            r.score,
        ];
        for (b, v) in decimals.iter_mut().zip(values) {
            b.append_option(v.map(Decimal9::raw));
        }
        flagged.append_value(r.flagged);
    }
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(9);
    for mut b in strings {
        columns.push(Arc::new(b.finish()));
    }
    columns.push(Arc::new(start.finish()));
    for mut b in decimals {
        columns.push(Arc::new(b.finish()));
    }
    columns.push(Arc::new(flagged.finish()));
    Ok(RecordBatch::try_new(
        Arc::clone(&schema::ANOMALY_SCORES),
        columns,
    )?)
}

/// The `forecasts` table.
pub fn forecasts(rows: &[ForecastRow<'_>]) -> Result<RecordBatch> {
    let n = rows.len();
    let mut strings: [StringBuilder; 3] =
        std::array::from_fn(|_| StringBuilder::with_capacity(n, n * 10));
    let mut times: [TimestampMicrosecondBuilder; 2] = std::array::from_fn(|_| ts_builder(n));
    let mut decimals: [Decimal128Builder; 4] = std::array::from_fn(|_| dec_builder(n));
    for r in rows {
        for (b, v) in strings
            .iter_mut()
            .zip([r.tenant_id, r.customer_id, r.meter])
        {
            b.append_value(v);
        }
        times[0].append_value(r.month);
        times[1].append_value(r.as_of);
        let values = [
            Some(r.usage_to_date),
            Some(r.trailing_7d),
            Some(r.daily_rate),
            r.forecast,
        ];
        for (b, v) in decimals.iter_mut().zip(values) {
            b.append_option(v.map(Decimal9::raw));
        }
    }
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(9);
    for mut b in strings {
        columns.push(Arc::new(b.finish()));
    }
    for mut b in times {
        columns.push(Arc::new(b.finish()));
    }
    for mut b in decimals {
        columns.push(Arc::new(b.finish()));
    }
    Ok(RecordBatch::try_new(
        Arc::clone(&schema::FORECASTS),
        columns,
    )?)
}
