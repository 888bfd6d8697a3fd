//! What `GET /metrics` reports, in the Prometheus text format (version 0.0.4).
//!
//! The job's worker 0 records each commit it sees ([`JobMetrics::committed`]): the
//! cumulative counts of the commit record (every source, not only HTTP), its epoch and
//! watermark, and the commit latency (from the end of the epoch's reading to the commit
//! record being written). The server counts HTTP requests by route and status. Counters
//! restart from the commit record's counts when the job resumes.

use om_sinks::commit::CommitRecord;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Upper bounds (seconds) of the commit latency histogram's buckets.
const LATENCY_BUCKETS: [f64; 10] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

#[derive(Debug, Default)]
struct State {
    commit: Option<CommitRecord>,
    committed: Option<Instant>,
    latency_buckets: [u64; LATENCY_BUCKETS.len()],
    latency_count: u64,
    latency_sum: f64,
    http: BTreeMap<(&'static str, u16), u64>,
    /// `serve`: epochs in the ingest journal that no commit covers yet.
    journaled: Option<usize>,
}

/// The job's and the server's counters.
#[derive(Debug)]
pub struct JobMetrics {
    state: Mutex<State>,
    /// The epoch and source positions of the last commit, for whoever waits on them
    /// (`serve` over Kafka answers a request once a commit covers its records).
    positions: tokio::sync::watch::Sender<crate::kafka_ingest::Positions>,
}

impl Default for JobMetrics {
    fn default() -> Self {
        JobMetrics {
            state: Mutex::default(),
            positions: tokio::sync::watch::Sender::new(Default::default()),
        }
    }
}

impl JobMetrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A commit was written, `latency` after its epoch's reading ended (none when not
    /// measured, e.g. the commit a job resumes from).
    pub fn committed(&self, record: &CommitRecord, latency: Option<Duration>) {
        let last = (record.epoch, std::sync::Arc::new(record.sources.clone()));
        self.positions.send_modify(|p| p.last = Some(last));
        let mut s = self.lock();
        s.commit = Some(CommitRecord {
            tables: Default::default(),
            sources: Default::default(),
            ..record.clone()
        });
        s.committed = Some(Instant::now());
        if let Some(latency) = latency {
            let secs = latency.as_secs_f64();
            for (bucket, bound) in s.latency_buckets.iter_mut().zip(LATENCY_BUCKETS) {
                if secs <= bound {
                    *bucket += 1;
                }
            }
            s.latency_count += 1;
            s.latency_sum += secs;
        }
    }

    /// The job stopped: requests still waiting for a commit are answered so.
    pub fn job_stopped(&self) {
        self.positions.send_modify(|p| p.stopped = true);
    }

    /// Follows the positions of each commit.
    pub fn positions(&self) -> tokio::sync::watch::Receiver<crate::kafka_ingest::Positions> {
        self.positions.subscribe()
    }

    /// The epoch of the last commit.
    pub fn epoch(&self) -> Option<u64> {
        self.lock().commit.as_ref().map(|c| c.epoch)
    }

    /// `serve`: `epochs` journaled (and answered) epochs wait for a commit.
    pub fn journaled(&self, epochs: usize) {
        self.lock().journaled = Some(epochs);
    }

    /// Counts one HTTP request.
    pub fn request(&self, route: &'static str, status: u16) {
        *self.lock().http.entry((route, status)).or_default() += 1;
    }

    /// The exposition text; `queued` are the bytes waiting in each ingress queue.
    pub fn render(&self, queued: &[(&str, usize)]) -> String {
        let s = self.lock();
        let mut out = String::new();
        let counts = s
            .commit
            .as_ref()
            .map(|c| c.counts.clone())
            .unwrap_or_default();
        let mut counter = |name: &str, help: &str, value: u64| {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n"
            );
        };
        counter(
            "om_events_accepted_total",
            "Events accepted (committed).",
            counts.accepted,
        );
        counter(
            "om_events_rejected_total",
            "Events rejected: invalid or duplicate (rejected_events).",
            counts.rejected,
        );
        counter(
            "om_events_duplicate_total",
            "Of the rejected events, duplicates of an accepted (tenant_id, id).",
            counts.duplicates,
        );
        counter(
            "om_events_late_total",
            "Events beyond the allowed lateness (late_events).",
            counts.late,
        );
        counter(
            "om_events_in_total",
            "Events read: accepted + rejected + late.",
            counts.accepted + counts.rejected + counts.late,
        );
        counter(
            "om_commands_accepted_total",
            "Valid commands.",
            counts.commands_accepted,
        );
        counter(
            "om_commands_rejected_total",
            "Rejected commands.",
            counts.commands_rejected,
        );
        let gauge = |out: &mut String, name: &str, help: &str, value: Option<String>| {
            let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n");
            if let Some(v) = value {
                let _ = writeln!(out, "{name} {v}");
            }
        };
        gauge(
            &mut out,
            "om_commit_epoch",
            "Epoch of the last commit.",
            s.commit.as_ref().map(|c| c.epoch.to_string()),
        );
        gauge(
            &mut out,
            "om_seconds_since_commit",
            "Seconds since the last commit was written (by this process).",
            s.committed
                .map(|t| format!("{:.3}", t.elapsed().as_secs_f64())),
        );
        gauge(
            &mut out,
            "om_watermark_lag_seconds",
            "Wall-clock time minus the watermark of the last commit.",
            s.commit.as_ref().and_then(|c| c.watermark_micros).map(|w| {
                let now = chrono::Utc::now().timestamp_micros();
                format!("{:.3}", (now - w) as f64 / 1e6)
            }),
        );
        gauge(
            &mut out,
            "om_journal_epochs",
            "Epochs in the ingest journal (answered, durable) that no commit covers yet.",
            s.journaled.map(|n| n.to_string()),
        );
        let _ = write!(
            out,
            "# HELP om_ingress_queued_bytes Bytes posted over HTTP and waiting for the job.\n# TYPE om_ingress_queued_bytes gauge\n"
        );
        for (queue, bytes) in queued {
            let _ = writeln!(out, "om_ingress_queued_bytes{{queue=\"{queue}\"}} {bytes}");
        }
        let name = "om_commit_latency_seconds";
        let _ = write!(
            out,
            "# HELP {name} From the end of an epoch's reading to its commit record being written.\n# TYPE {name} histogram\n"
        );
        for (count, bound) in s.latency_buckets.iter().zip(LATENCY_BUCKETS) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", s.latency_count);
        let _ = writeln!(out, "{name}_sum {:.6}", s.latency_sum);
        let _ = writeln!(out, "{name}_count {}", s.latency_count);
        let name = "om_http_requests_total";
        let _ = write!(
            out,
            "# HELP {name} HTTP requests by route and status.\n# TYPE {name} counter\n"
        );
        for ((route, status), n) in &s.http {
            let _ = writeln!(out, "{name}{{route=\"{route}\",status=\"{status}\"}} {n}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_latency_and_requests() {
        let m = JobMetrics::default();
        let mut record = CommitRecord {
            epoch: 7,
            ..Default::default()
        };
        record.counts.accepted = 10;
        record.counts.rejected = 3;
        record.counts.duplicates = 2;
        record.counts.late = 1;
        m.committed(&record, Some(Duration::from_millis(30)));
        m.request("/v1/events", 200);
        m.request("/v1/events", 200);
        let text = m.render(&[("events", 12)]);
        for line in [
            "om_events_accepted_total 10",
            "om_events_duplicate_total 2",
            "om_events_in_total 14",
            "om_commit_epoch 7",
            "om_commit_latency_seconds_bucket{le=\"0.025\"} 0",
            "om_commit_latency_seconds_bucket{le=\"0.05\"} 1",
            "om_commit_latency_seconds_count 1",
            "om_ingress_queued_bytes{queue=\"events\"} 12",
            "om_http_requests_total{route=\"/v1/events\",status=\"200\"} 2",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        assert!(text.ends_with('\n'));
    }
}
