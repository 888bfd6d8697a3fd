//! Ingestion into Kafka (`openmonetize serve --events kafka://... [--commands kafka://...]`).
//!
//! The embedded job reads the topics like `run` does, so other producers may write to
//! them too. A posted record is produced to its topic (keyed by tenant and customer, as
//! `openmonetize produce` does; `acks=all`). The request is answered once a commit
//! covers the offsets of all its records, with the same verdicts as the queue mode:
//! `duplicate` and `rejected` when the record's source position is in
//! `rejected_events`, `late` when it is in `late_events`, `accepted` otherwise.
//!
//! Difference from the queue mode: a record whose `tenant_id` is not the API key's is
//! refused at once and never produced, so it is not in `rejected_events`. Retractions
//! are answered `accepted` when committed; a refused one is in `rejected_events`, as in
//! every mode.

use crate::ingress::{Reply, Verdict};
use om_queries::{QueryEngine, Scope};
use om_sources::kafka::{AckedProducer, KafkaUrl, event_key};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tokio::sync::watch;

/// What requests waiting for a commit follow.
#[derive(Clone, Debug, Default)]
pub struct Positions {
    /// The last commit: (epoch, source position name -> next offset).
    pub last: Option<(u64, Arc<BTreeMap<String, u64>>)>,
    /// The job stopped: no later commit will come from this process.
    pub stopped: bool,
}

/// Why posted records were not answered.
#[derive(Debug, thiserror::Error)]
pub enum KafkaIngestError {
    /// The broker refused or lost a message.
    #[error("producing to {topic}: {reason}")]
    Produce {
        /// The topic.
        topic: String,
        /// The client's error.
        reason: String,
    },
    /// The job stopped before a commit covered the records.
    #[error(
        "the job stopped before committing these records; those produced are in Kafka and are counted when the job runs again (retrying is safe: duplicates are recognized by (tenant_id, id))"
    )]
    Stopped,
    /// Reading the verdicts from the committed tables failed.
    #[error("reading the verdicts: {0}")]
    Verdicts(String),
}

/// One topic fed over HTTP.
#[derive(Debug)]
pub struct KafkaIngest {
    producer: AckedProducer,
}

impl KafkaIngest {
    /// Connects to the topic.
    pub fn open(url: &KafkaUrl) -> anyhow::Result<KafkaIngest> {
        Ok(KafkaIngest {
            producer: AckedProducer::open(url)?,
        })
    }

    /// The topic.
    pub fn url(&self) -> &KafkaUrl {
        self.producer.url()
    }

    /// Produces the records (those of the key's tenant, when `tenant` is set), waits for
    /// the commit covering them, and reads their verdicts from that commit's tables.
    pub async fn submit(
        &self,
        records: &[&[u8]],
        tenant: Option<&str>,
        mut commits: watch::Receiver<Positions>,
        data: &str,
    ) -> Result<Reply, KafkaIngestError> {
        let url = self.producer.url();
        let produce_error = |reason: String| KafkaIngestError::Produce {
            topic: url.to_string(),
            reason,
        };
        if commits.borrow().stopped {
            return Err(KafkaIngestError::Stopped);
        }
        let mut verdicts: Vec<Option<Verdict>> = vec![None; records.len()];
        let mut acks = Vec::with_capacity(records.len());
        for (i, record) in records.iter().enumerate() {
            if let Some(key_tenant) = tenant {
                let claimed = record_tenant(record);
                if claimed.as_deref() != Some(key_tenant) {
                    verdicts[i] = Some(Verdict::Rejected(format!(
                        "tenant_id {} does not match the API key's tenant {key_tenant}; a record posted with a tenant's key must carry that tenant_id (not produced)",
                        claimed.as_deref().unwrap_or("(none: default)")
                    )));
                    continue;
                }
            }
            let (tx, rx) = tokio::sync::oneshot::channel();
            self.producer
                .send(
                    event_key(record).as_deref(),
                    record,
                    Box::new(move |result| {
                        let _ = tx.send(result);
                    }),
                )
                .map_err(|e| produce_error(e.to_string()))?;
            acks.push((i, rx));
        }
        // Where each record landed.
        let mut landed: Vec<(usize, u32, u64)> = Vec::with_capacity(acks.len());
        for (i, rx) in acks {
            let (p, o) = rx
                .await
                .map_err(|_| produce_error("no delivery report".into()))?
                .map_err(produce_error)?;
            landed.push((i, p, o));
        }
        // Wait for a commit whose position passed every record's offset.
        let mut needed: BTreeMap<String, u64> = BTreeMap::new();
        for &(_, p, o) in &landed {
            let next = needed.entry(url.partition_name(p)).or_default();
            *next = (*next).max(o + 1);
        }
        let epoch = loop {
            let progress = commits.borrow_and_update().clone();
            let covered = progress.last.as_ref().and_then(|(epoch, at)| {
                needed
                    .iter()
                    .all(|(name, next)| at.get(name).is_some_and(|a| a >= next))
                    .then_some(*epoch)
            });
            if let Some(epoch) = covered {
                break epoch;
            }
            if landed.is_empty() {
                break progress.last.as_ref().map_or(0, |(e, _)| *e);
            }
            if progress.stopped {
                return Err(KafkaIngestError::Stopped);
            }
            commits
                .changed()
                .await
                .map_err(|_| KafkaIngestError::Stopped)?;
        };
        let found = if landed.is_empty() {
            HashMap::new()
        } else {
            lookup(data, &url.to_string(), &landed)
                .await
                .map_err(|e| KafkaIngestError::Verdicts(format!("{e:#}")))?
        };
        for (i, p, o) in landed {
            verdicts[i] = Some(found.get(&(p, o)).cloned().unwrap_or(Verdict::Accepted));
        }
        Ok(Reply {
            epoch,
            committed: true,
            verdicts: verdicts
                .into_iter()
                .map(|v| v.expect("every record has a verdict"))
                .collect(),
        })
    }
}

/// The `tenant_id` a record claims (`default` when it has none; `None` when it is not
/// a JSON object with a string or absent `tenant_id`).
fn record_tenant(record: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(record).ok()?;
    match v.as_object()?.get("tenant_id") {
        None => Some("default".into()),
        Some(serde_json::Value::String(t)) => Some(t.clone()),
        Some(_) => None,
    }
}

/// The verdicts other than `accepted` of the records at (partition, offset) of
/// `source`, from the newest commit's `rejected_events` and `late_events`.
async fn lookup(
    data: &str,
    source: &str,
    landed: &[(usize, u32, u64)],
) -> anyhow::Result<HashMap<(u32, u64), Verdict>> {
    let engine = QueryEngine::open_scoped(data, Scope::All).await?;
    let mut by_partition: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for &(_, p, o) in landed {
        by_partition.entry(p).or_default().push(o);
    }
    let positions = by_partition
        .iter()
        .map(|(p, offsets)| {
            let list: Vec<String> = offsets.iter().map(u64::to_string).collect();
            format!(
                "(source_partition = {p} AND source_offset IN ({}))",
                list.join(",")
            )
        })
        .collect::<Vec<_>>()
        .join(" OR ");
    let source = source.replace('\'', "''");
    let mut found = HashMap::new();
    for (table, late) in [("rejected_events", false), ("late_events", true)] {
        let sql = format!(
            "SELECT source_partition, source_offset, reason FROM {table} \
             WHERE source = '{source}' AND ({positions})"
        );
        for batch in engine.sql(&sql).await? {
            use arrow::array::{Array, AsArray};
            use arrow::datatypes::{DataType, Int64Type};
            let column = |i: usize, to: &DataType| arrow::compute::cast(batch.column(i), to);
            let (p, o) = (column(0, &DataType::Int64)?, column(1, &DataType::Int64)?);
            let reasons = column(2, &DataType::Utf8)?;
            let (p, o) = (p.as_primitive::<Int64Type>(), o.as_primitive::<Int64Type>());
            let reasons = reasons.as_string::<i32>();
            for row in 0..batch.num_rows() {
                let reason = reasons.value(row).to_string();
                let verdict = if late {
                    Verdict::Late(reason)
                } else if reason.starts_with("duplicate") {
                    Verdict::Duplicate(reason)
                } else {
                    Verdict::Rejected(reason)
                };
                debug_assert!(p.is_valid(row) && o.is_valid(row));
                found.insert((p.value(row) as u32, o.value(row) as u64), verdict);
            }
        }
    }
    Ok(found)
}
