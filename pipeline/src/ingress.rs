//! The ingress queues of `openmonetize serve`: events and commands posted over HTTP,
//! waiting for the job to read them, and the requests waiting for their verdicts.
//!
//! A request appends its records (each one JSON value, unparsed) to the queue under one
//! lock, each record taking the next sequence number, and registers a [`Waiter`] for its
//! range of numbers. The job's worker 0 reads the queue as a source of one partition whose
//! offsets are the sequence numbers: at each epoch it takes everything queued (in arrival
//! order, so dedup and lateness see exactly the order requests were accepted in), decides
//! each record's fate, and once the commit covering the epoch is written answers every
//! waiter of the epoch with its records' [`Verdict`]s. "Accepted" therefore means
//! committed: durable, counted once, visible in the tables and the live views.
//!
//! The queue is bounded in bytes: a request that does not fit is refused at once
//! ([`Refused::Full`], HTTP 503 with `Retry-After`) instead of waiting, so a client that
//! outpaces the job gets backpressure, never unbounded memory. A request whose verdicts
//! never come (the job failed or stopped) sees its channel closed.

use std::ops::Range;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// The fate of one posted record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Committed (events: counted; commands: applied).
    Accepted,
    /// A retraction, queued until the event it names is committed (its outcome lands in
    /// `rejected_events` if it is refused).
    Queued,
    /// An event whose (tenant_id, id) was already accepted: not counted again.
    Duplicate(String),
    /// An event older than the watermark minus the allowed lateness: in `late_events`.
    Late(String),
    /// An invalid record: in `rejected_events`.
    Rejected(String),
}

impl Verdict {
    /// The `status` of the HTTP answer.
    pub fn status(&self) -> &'static str {
        match self {
            Verdict::Accepted => "accepted",
            Verdict::Queued => "queued",
            Verdict::Duplicate(_) => "duplicate",
            Verdict::Late(_) => "late",
            Verdict::Rejected(_) => "rejected",
        }
    }

    /// Why, for every verdict but accepted.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Verdict::Accepted | Verdict::Queued => None,
            Verdict::Duplicate(r) | Verdict::Late(r) | Verdict::Rejected(r) => Some(r),
        }
    }
}

/// The answer to one request.
#[derive(Debug)]
pub struct Reply {
    /// The epoch that read the records (its commit is written).
    pub epoch: u64,
    /// One verdict per record, in the request's order.
    pub verdicts: Vec<Verdict>,
}

/// Why a request was not queued.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refused {
    /// The job has not opened the queue yet (it is starting or resuming).
    #[error("the job is starting; retry shortly")]
    NotOpen,
    /// The job is stopping.
    #[error("the server is shutting down")]
    Closed,
    /// The queue holds too much already.
    #[error("{queued} bytes are waiting for the job (at most {max}); retry shortly")]
    Full {
        /// Bytes queued.
        queued: usize,
        /// The bound.
        max: usize,
    },
}

/// A request waiting for the verdicts of records `seqs`.
#[derive(Debug)]
pub struct Waiter {
    seqs: Range<u64>,
    tx: oneshot::Sender<Reply>,
}

/// What is queued (or, once taken by the job, one epoch's records).
#[derive(Debug, Default)]
pub struct Batch {
    /// Sequence number of the first record.
    first: u64,
    /// The records, back to back.
    bytes: Vec<u8>,
    /// End of each record in `bytes`.
    ends: Vec<usize>,
    /// The tenant each record must belong to (the key's), or none (an admin key).
    tenants: Vec<Option<Arc<str>>>,
    /// The requests of these records.
    waiters: Vec<Waiter>,
}

impl Batch {
    /// (sequence number, record) of every record, in order.
    pub fn records(&self) -> impl Iterator<Item = (u64, &[u8])> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(self.ends.iter().copied())
            .enumerate()
            .map(|(i, (start, end))| (self.first + i as u64, &self.bytes[start..end]))
    }

    /// The tenant record `seq` must belong to.
    pub fn tenant(&self, seq: u64) -> Option<&str> {
        self.tenants
            .get(seq.checked_sub(self.first)? as usize)?
            .as_deref()
    }

    /// Sequence number of the first record.
    pub fn first(&self) -> u64 {
        self.first
    }

    /// The sequence number after the last record.
    pub fn end(&self) -> u64 {
        self.first + self.ends.len() as u64
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there are no records.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Takes the waiters, to answer once the epoch is committed.
    pub fn take_waiters(&mut self) -> Vec<Waiter> {
        std::mem::take(&mut self.waiters)
    }
}

/// The verdicts of one epoch's records, waiting for the epoch's commit.
#[derive(Debug)]
pub struct Pending {
    /// The epoch.
    pub epoch: u64,
    /// Sequence number of the first record of the epoch.
    pub first: u64,
    /// One verdict per record of the epoch.
    pub verdicts: Vec<Verdict>,
    /// The requests.
    pub waiters: Vec<Waiter>,
}

impl Pending {
    /// Answers every request (the epoch is committed).
    pub fn answer(self) {
        for w in self.waiters {
            let range = (w.seqs.start - self.first) as usize..(w.seqs.end - self.first) as usize;
            // A request that gave up (timeout, client gone) has dropped its receiver.
            let _ = w.tx.send(Reply {
                epoch: self.epoch,
                verdicts: self.verdicts[range].to_vec(),
            });
        }
    }
}

#[derive(Debug)]
enum State {
    NotOpen,
    Open,
    Closed,
}

#[derive(Debug)]
struct Queue {
    state: State,
    batch: Batch,
}

/// One ingress queue (events or commands).
#[derive(Debug)]
pub struct Ingress {
    name: &'static str,
    max_bytes: usize,
    queue: Mutex<Queue>,
}

impl Ingress {
    /// A queue named `name` (`events`, `commands`) holding at most `max_bytes` of
    /// records; refuses requests until [`Ingress::open`].
    pub fn new(name: &'static str, max_bytes: usize) -> Self {
        Ingress {
            name,
            max_bytes,
            queue: Mutex::new(Queue {
                state: State::NotOpen,
                batch: Batch::default(),
            }),
        }
    }

    /// The source name in the tables and the commit record: `http:events`.
    pub fn source_name(&self) -> String {
        format!("http:{}", self.name)
    }

    /// Its one partition's name in the commit record.
    pub fn partition_name(&self) -> String {
        format!("http:{}#0", self.name)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts accepting requests; the first record gets sequence number `next` (where
    /// the job's last commit left off).
    pub fn open(&self, next: u64) {
        let mut q = self.lock();
        q.batch.first = next;
        q.state = State::Open;
    }

    /// Stops accepting requests.
    pub fn close(&self) {
        self.lock().state = State::Closed;
    }

    /// Queues `records`, each to belong to `tenant` (none: any tenant); the receiver gets
    /// their verdicts once the epoch that reads them is committed.
    pub fn submit(
        &self,
        records: &[&[u8]],
        tenant: Option<Arc<str>>,
    ) -> Result<oneshot::Receiver<Reply>, Refused> {
        let size: usize = records.iter().map(|r| r.len()).sum();
        let mut q = self.lock();
        match q.state {
            State::NotOpen => return Err(Refused::NotOpen),
            State::Closed => return Err(Refused::Closed),
            State::Open => {}
        }
        let queued = q.batch.bytes.len();
        if queued > 0 && queued + size > self.max_bytes {
            return Err(Refused::Full {
                queued,
                max: self.max_bytes,
            });
        }
        let (tx, rx) = oneshot::channel();
        let b = &mut q.batch;
        let start = b.end();
        for r in records {
            b.bytes.extend_from_slice(r);
            b.ends.push(b.bytes.len());
            b.tenants.push(tenant.clone());
        }
        b.waiters.push(Waiter {
            seqs: start..b.end(),
            tx,
        });
        Ok(rx)
    }

    /// After the job stopped: refuses new requests and drops the waiters of records it
    /// never read (posted between its last read and the close), so their requests are
    /// answered "the job stopped" at once instead of timing out.
    pub fn abandon(&self) {
        let mut q = self.lock();
        q.state = State::Closed;
        let next = q.batch.end();
        q.batch = Batch {
            first: next,
            ..Batch::default()
        };
    }

    /// Bytes queued.
    pub fn queued_bytes(&self) -> usize {
        self.lock().batch.bytes.len()
    }

    /// Takes everything queued into `into` (whose previous contents must be done with),
    /// leaving `into`'s buffers behind for reuse.
    pub fn take(&self, into: &mut Batch) {
        into.bytes.clear();
        into.ends.clear();
        into.tenants.clear();
        debug_assert!(into.waiters.is_empty(), "answer a batch before reusing it");
        let mut q = self.lock();
        let next = q.batch.end();
        std::mem::swap(&mut q.batch, into);
        q.batch.first = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_numbered_in_arrival_order_and_answered_by_request() {
        let ingress = Ingress::new("events", 1 << 20);
        assert_eq!(
            ingress.submit(&[b"{}"], None).unwrap_err(),
            Refused::NotOpen
        );
        ingress.open(10);
        let mut a = ingress
            .submit(&[b"{\"a\":1}", b"{\"a\":2}"], Some("acme".into()))
            .unwrap();
        let mut b = ingress.submit(&[b"{\"b\":1}"], None).unwrap();
        let mut batch = Batch::default();
        ingress.take(&mut batch);
        let records: Vec<(u64, &[u8])> = batch.records().collect();
        assert_eq!(
            records,
            vec![
                (10, &b"{\"a\":1}"[..]),
                (11, &b"{\"a\":2}"[..]),
                (12, &b"{\"b\":1}"[..])
            ]
        );
        assert_eq!(batch.tenant(11), Some("acme"));
        assert_eq!(batch.tenant(12), None);
        assert_eq!(ingress.queued_bytes(), 0);
        assert!(a.try_recv().is_err(), "no answer before the commit");
        Pending {
            epoch: 3,
            first: batch.first(),
            verdicts: vec![
                Verdict::Accepted,
                Verdict::Duplicate("dup".into()),
                Verdict::Rejected("bad".into()),
            ],
            waiters: batch.take_waiters(),
        }
        .answer();
        let a = a.try_recv().unwrap();
        assert_eq!(a.epoch, 3);
        assert_eq!(
            a.verdicts,
            vec![Verdict::Accepted, Verdict::Duplicate("dup".into())]
        );
        assert_eq!(
            b.try_recv().unwrap().verdicts,
            vec![Verdict::Rejected("bad".into())]
        );
        // Numbering goes on after a take.
        let _c = ingress.submit(&[b"{}"], None).unwrap();
        ingress.take(&mut batch);
        assert_eq!(batch.first(), 13);
    }

    #[test]
    fn a_full_queue_refuses_and_a_closed_one_too() {
        let ingress = Ingress::new("events", 10);
        ingress.open(0);
        let _first = ingress.submit(&[b"0123456789abc"], None).unwrap();
        assert_eq!(
            ingress.submit(&[b"x"], None).unwrap_err(),
            Refused::Full {
                queued: 13,
                max: 10
            }
        );
        ingress.close();
        assert_eq!(ingress.submit(&[b"x"], None).unwrap_err(), Refused::Closed);
    }

    #[test]
    fn abandoned_records_get_their_channel_closed() {
        let ingress = Ingress::new("events", 1 << 20);
        ingress.open(0);
        let mut rx = ingress.submit(&[b"{}"], None).unwrap();
        ingress.abandon();
        assert_eq!(
            rx.try_recv().unwrap_err(),
            oneshot::error::TryRecvError::Closed
        );
        assert_eq!(ingress.submit(&[b"x"], None).unwrap_err(), Refused::Closed);
    }
}
