//! Records -> Arrow batches with the table schemas of `om_model::schema`.

use crate::Result;
use arrow::array::{
    ArrayRef, BooleanBuilder, Decimal128Builder, Int32Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
pub use arrow::record_batch::RecordBatch;
use om_model::schema::{self, DECIMAL};
use om_model::{Decimal9, Event, LateRecord, Micros, RejectedRecord, SourcePosition, WindowKey};
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

/// The `events` table: accepted events with their source positions.
pub fn events<'a>(
    rows: impl ExactSizeIterator<Item = (&'a Event, &'a SourcePosition)>,
    ingested_at: Micros,
    sources: &[String],
) -> Result<RecordBatch> {
    let n = rows.len();
    let mut tenant = StringBuilder::with_capacity(n, n * 8);
    let mut id = StringBuilder::with_capacity(n, n * 16);
    let mut customer = StringBuilder::with_capacity(n, n * 10);
    let mut event_type = StringBuilder::with_capacity(n, n * 12);
    let mut timestamp = ts_builder(n);
    let mut value = dec_builder(n);
    let mut properties = StringBuilder::with_capacity(n, n * 96);
    let mut ingested = ts_builder(n);
    let mut src = SourceColumns::new(sources, n);
    for (e, pos) in rows {
        tenant.append_value(&e.tenant_id);
        id.append_value(&e.id);
        customer.append_value(&e.customer_id);
        event_type.append_value(&e.event_type);
        timestamp.append_value(e.timestamp);
        value.append_value(e.value.raw());
        properties.append_option(e.properties.as_deref());
        ingested.append_value(ingested_at);
        src.push(pos);
    }
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(tenant.finish()),
        Arc::new(id.finish()),
        Arc::new(customer.finish()),
        Arc::new(event_type.finish()),
        Arc::new(timestamp.finish()),
        Arc::new(value.finish()),
        Arc::new(properties.finish()),
        Arc::new(ingested.finish()),
    ];
    columns.extend(src.finish());
    Ok(RecordBatch::try_new(Arc::clone(&schema::EVENTS), columns)?)
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
    /// The window.
    pub key: &'a WindowKey,
    /// Its value.
    pub value: Decimal9,
    /// Number of events in it.
    pub events: i64,
    /// True once no accepted event can change it.
    pub is_final: bool,
}

/// The `usage_windows` table; `meters[i]` names meter `i`.
pub fn usage_windows<'a>(
    rows: impl ExactSizeIterator<Item = UsageRow<'a>>,
    meters: &[String],
) -> Result<RecordBatch> {
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
    for r in rows {
        tenant.append_value(&r.key.tenant_id);
        customer.append_value(&r.key.customer_id);
        meter.append_value(&meters[r.key.meter as usize]);
        dimensions.append_value(&r.key.dimensions);
        size.append_value(r.key.size.as_str());
        start.append_value(r.key.start);
        end.append_value(r.key.size.end(r.key.start));
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
