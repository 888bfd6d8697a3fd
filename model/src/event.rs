//! The records that flow from the sources into the dataflow: accepted events, their
//! meter readings, and rejected or late input kept whole with a reason.

use crate::decimal::Decimal9;
use crate::time::{Micros, WindowSize};

/// Where a record came from, carried into `rejected_events` and `late_events`.
#[derive(
    Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct SourcePosition {
    /// Index of the source (into the job's list of source names).
    pub source: u32,
    /// Kafka partition, or 0 for a file.
    pub partition: u32,
    /// Byte offset of the line in a file, or the Kafka message offset.
    pub offset: u64,
}

/// An accepted usage event, normalized (DESIGN.md 2.1).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Event {
    /// Tenant, `default` when absent.
    pub tenant_id: String,
    /// Idempotency key.
    pub id: String,
    /// Customer.
    pub customer_id: String,
    /// Event type.
    pub event_type: String,
    /// Event time, UTC microseconds.
    pub timestamp: Micros,
    /// `value`, default 1.
    pub value: Decimal9,
    /// The `properties` object (CloudEvents `data`) as its JSON text, if present.
    pub properties: Option<String>,
}

/// A meter's value read from one event.
#[derive(
    Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum ReadingValue {
    /// A number (every aggregation but unique_count).
    Number(Decimal9),
    /// A JSON scalar in canonical text (unique_count).
    Scalar(String),
}

/// What one meter reads from one event: the meter's index in the config, the canonical
/// JSON of its group-by dimensions and the value at its value path.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Reading {
    /// Index into `Config::meters`.
    pub meter: u16,
    /// Canonical JSON of the dimensions (sorted keys, `{}` when none).
    pub dimensions: String,
    /// The value.
    pub value: ReadingValue,
}

/// An event that passed validation, with its meter readings.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DecodedEvent {
    /// The normalized event.
    pub event: Event,
    /// One reading per meter that reads this event type.
    pub readings: Vec<Reading>,
    /// Credits the event burns: the sum over the matching burn rules.
    pub burn: Decimal9,
    /// The model call it records, when it is one (`[costs]`).
    pub cost: Option<CostReading>,
}

/// A model call read from an event, for the `costs` table.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CostReading {
    /// The provider, when the event names one.
    pub provider: Option<String>,
    /// The model id (empty when the event names none).
    pub model: String,
    /// Input, cached input and output tokens.
    pub tokens: [Decimal9; 3],
}

/// Input that did not become an accepted event, kept whole.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RejectedRecord {
    /// Tenant, when the input got far enough to have one.
    pub tenant_id: Option<String>,
    /// Event id, when it could be read.
    pub event_id: Option<String>,
    /// The raw payload (lossy UTF-8, truncated to 1 MiB).
    pub raw: String,
    /// Why it was rejected, e.g. `duplicate` or `missing field customer_id`.
    pub reason: String,
    /// Where it came from.
    pub position: SourcePosition,
}

/// A valid event older than watermark - allowed_lateness, kept whole for a backfill run.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LateRecord {
    /// Tenant.
    pub tenant_id: String,
    /// Event id.
    pub event_id: String,
    /// Customer.
    pub customer_id: String,
    /// The event's time.
    pub timestamp: Micros,
    /// The watermark it was judged against.
    pub watermark: Micros,
    /// The raw payload.
    pub raw: String,
    /// Why, e.g. `timestamp 2026-10-20T.. is more than 48h behind the watermark 2026-10-27T..`.
    pub reason: String,
    /// Where it came from.
    pub position: SourcePosition,
}

/// The identity of one `usage_windows` row, in integers: the customer's and the
/// dimensions' fingerprints (`crate::fingerprint`), the meter's index, the window. Its
/// order (customer first) is the row order of a partition file written afresh; a live
/// job's later rewrites put new windows after the rows already written.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct WindowKey {
    /// Fingerprint of (tenant, customer).
    pub customer: u64,
    /// Index into `Config::meters`.
    pub meter: u16,
    /// Fingerprint of the canonical dimensions JSON.
    pub dimensions: u64,
    /// Window size.
    pub size: WindowSize,
    /// Window start, UTC microseconds.
    pub start: Micros,
}
