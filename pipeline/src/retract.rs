//! `retract_event` (DESIGN.md 2.2): removes one accepted event's usage and burn from
//! every table, as if it had never been accepted.
//!
//! A retraction names only (tenant_id, event_id), so the job looks the event up in the
//! committed `events` table (the log of accepted events), decodes it again with the
//! job's config and sends the negation of its window updates and burn through the same
//! dataflow as accepted events. When it is looked up:
//! - Kafka: once the commit covering the epoch that read the retraction exists, so every
//!   event read before the retraction is visible;
//! - file: after the last events epoch is committed (the commands file applies to the
//!   whole run), in one extra epoch.
//!
//! It is rejected (into `rejected_events`) when the event is not among the accepted
//! events then, when it was already retracted, or when the event is older than the
//! closed watermark minus `allowed_lateness`: its windows are final and published, and a
//! correction that old belongs in a backfill. The `events` row stays: that table is the
//! log of what was accepted.

use om_model::{Decimal9, Event, SourcePosition};
use std::collections::BTreeSet;

/// A retraction waiting for its lookup.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Pending {
    /// Tenant.
    pub tenant_id: String,
    /// The event's id.
    pub event_id: String,
    /// The epoch that read the command.
    pub read_epoch: u64,
    /// Where the command came from.
    pub position: SourcePosition,
    /// The command's text.
    pub raw: String,
}

/// Worker 0's retractions: waiting and done.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Retractions {
    /// Waiting for the commit that makes their events visible.
    pub pending: Vec<Pending>,
    /// (tenant, event id) of the retractions applied.
    pub done: BTreeSet<(String, String)>,
}

impl Retractions {
    /// Queues a retraction; an error names why it is refused at once.
    pub fn add(&mut self, p: Pending) -> Result<(), String> {
        let key = (p.tenant_id.clone(), p.event_id.clone());
        if self.done.contains(&key)
            || self
                .pending
                .iter()
                .any(|q| q.tenant_id == key.0 && q.event_id == key.1)
        {
            return Err(format!(
                "retract_event: event {} of tenant {} is already retracted",
                key.1, key.0
            ));
        }
        self.pending.push(p);
        Ok(())
    }

    /// Takes the retractions read in `committed` or earlier.
    pub fn take_due(&mut self, committed: u64) -> Vec<Pending> {
        let (due, wait) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|p| p.read_epoch <= committed);
        self.pending = wait;
        due
    }
}

/// Looks up accepted events by (tenant, id) in the committed `events` table of `data`.
pub fn lookup(
    data: &str,
    runtime: &tokio::runtime::Handle,
    keys: &[(String, String)],
) -> anyhow::Result<Vec<Event>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let quote = |s: &str| format!("'{}'", s.replace('\'', "''"));
    let wanted: Vec<String> = keys
        .iter()
        .map(|(t, id)| format!("(tenant_id = {} AND id = {})", quote(t), quote(id)))
        .collect();
    let sql = format!(
        "SELECT tenant_id, id, customer_id, event_type, CAST(CAST(timestamp AS BIGINT) AS VARCHAR) AS ts, \
         CAST(value AS VARCHAR) AS value, properties FROM events WHERE {}",
        wanted.join(" OR ")
    );
    let text = runtime.block_on(async {
        let engine = om_queries::QueryEngine::open(data).await?;
        let batches = engine.sql(&sql).await?;
        om_queries::format(&batches, om_queries::Format::Json)
    })?;
    let mut events = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let row: serde_json::Value = serde_json::from_str(line)?;
        let field = |name: &str| -> anyhow::Result<String> {
            row[name]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| anyhow::anyhow!("events row without {name}: {line}"))
        };
        events.push(Event {
            tenant_id: field("tenant_id")?,
            id: field("id")?,
            customer_id: field("customer_id")?,
            event_type: field("event_type")?,
            timestamp: field("ts")?.parse()?,
            value: Decimal9::parse(&field("value")?)?,
            properties: row["properties"].as_str().map(str::to_string),
        });
    }
    Ok(events)
}
