//! The ingress queues of `openmonetize serve`: events and commands posted over HTTP,
//! waiting for the job to read them, and the requests waiting for their verdicts.
//!
//! A request appends its records (each one JSON value, unparsed) to the queue under one
//! lock, each record taking the next sequence number, and registers a [`Waiter`] for its
//! range of numbers. The job reads the queue as a source of one partition whose offsets
//! are the sequence numbers: at each epoch worker 0 takes everything queued
//! ([`Ingress::take_epoch`]) and hands it to the other workers of the process
//! ([`Ingress::claim`]); each worker decodes one contiguous slice of it
//! ([`EpochRecords::slice`]), so that the slices in worker order are the arrival order and
//! dedup and lateness see exactly the order requests were accepted in. Each worker writes
//! its slice's [`Verdict`]s into the epoch's shared [`EpochVerdicts`] as soon as it has
//! decided them. Worker 0 writes the epoch's records to the journal
//! ([`crate::journal`]); once every worker has decided and the journal holds the epoch
//! (and every epoch before it), worker 0 answers the epoch's requests ([`Wait::Journal`]:
//! "accepted" means durable and counted exactly once, visible in the tables and live views
//! from the next commit on). A request that asked to wait for the commit
//! ([`Wait::Commit`]) is answered once the commit covering its epoch is written.
//!
//! After a crash the journal's epochs since the last commit are queued again, ahead of
//! anything posted, for the job to replay ([`Ingress::replay`]).
//!
//! The queue is bounded in bytes: a request that does not fit is refused at once
//! ([`Refused::Full`], HTTP 503 with `Retry-After`) instead of waiting, so a client that
//! outpaces the job gets backpressure, never unbounded memory. A request whose verdicts
//! never come (the job failed or stopped) sees its channel closed.

use crate::journal::{Part, PartRef};
use std::collections::VecDeque;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// When a request is answered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Wait {
    /// Once its records' verdicts are decided and the journal holds them.
    #[default]
    Journal,
    /// Once the commit covering its records is written (read-your-writes: the tables
    /// and the live views show them when the answer comes).
    Commit,
}

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
    /// The epoch that read the records.
    pub epoch: u64,
    /// Whether the commit covering that epoch is written.
    pub committed: bool,
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
    wait: Wait,
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

impl From<Part> for Batch {
    /// Journaled records, to replay (nobody waits for them).
    fn from(part: Part) -> Batch {
        Batch {
            first: part.first,
            bytes: part.bytes,
            ends: part.ends,
            tenants: part.tenants,
            waiters: Vec::new(),
        }
    }
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

    /// Takes the waiters, to answer once the epoch is journaled or committed.
    pub fn take_waiters(&mut self) -> Vec<Waiter> {
        std::mem::take(&mut self.waiters)
    }

    /// The records, for the journal.
    pub fn journal_part(&self) -> PartRef<'_> {
        PartRef {
            first: self.first,
            bytes: &self.bytes,
            ends: &self.ends,
            tenants: &self.tenants,
        }
    }
}

/// One verdict per record of an epoch, written by the workers that decided them.
#[derive(Debug)]
pub struct EpochVerdicts {
    verdicts: Mutex<Vec<Verdict>>,
    /// Workers yet to write theirs.
    undecided: AtomicUsize,
}

impl EpochVerdicts {
    /// `len` verdicts, all `Accepted` until the `workers` workers write theirs.
    pub fn new(len: usize, workers: usize) -> Arc<Self> {
        Arc::new(EpochVerdicts {
            verdicts: Mutex::new(vec![Verdict::Accepted; len]),
            undecided: AtomicUsize::new(workers),
        })
    }

    /// Verdicts decided already (by the one worker that decides them all).
    pub fn decided(verdicts: Vec<Verdict>) -> Arc<Self> {
        Arc::new(EpochVerdicts {
            verdicts: Mutex::new(verdicts),
            undecided: AtomicUsize::new(0),
        })
    }

    /// Whether every worker has written its verdicts.
    pub fn is_decided(&self) -> bool {
        self.undecided.load(Ordering::Acquire) == 0
    }

    /// One worker's verdicts, of the records from index `from` on.
    fn set(&self, from: usize, verdicts: Vec<Verdict>) {
        let mut all = self.verdicts.lock().unwrap_or_else(|e| e.into_inner());
        for (slot, v) in all[from..].iter_mut().zip(verdicts) {
            *slot = v;
        }
        drop(all);
        self.undecided.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One epoch's records as the workers of the job share them (the requests' waiters stay
/// with worker 0, which answers them).
#[derive(Debug)]
pub struct EpochRecords {
    batch: Batch,
    /// The epoch's `ingested_at` (worker 0's clock, or the journal's on a replay).
    ingested_at: i64,
    /// Whether the records come from the journal (so they are in it already).
    replayed: bool,
    verdicts: Arc<EpochVerdicts>,
}

impl EpochRecords {
    /// The records.
    pub fn batch(&self) -> &Batch {
        &self.batch
    }

    /// The indexes (from the epoch's first record) of worker `worker`'s slice of
    /// `workers`: contiguous, in worker order, together all of them.
    pub fn slice(&self, worker: usize, workers: usize) -> Range<usize> {
        let n = self.batch.len();
        n * worker / workers..n * (worker + 1) / workers
    }

    /// The epoch's `ingested_at`.
    pub fn ingested_at(&self) -> i64 {
        self.ingested_at
    }

    /// Whether the records come from the journal.
    pub fn replayed(&self) -> bool {
        self.replayed
    }

    /// One worker's verdicts: those of the records from index `from` on (its slice).
    pub fn set_verdicts(&self, from: usize, verdicts: Vec<Verdict>) {
        self.verdicts.set(from, verdicts);
    }

    /// The epoch's verdicts, for answering its requests.
    pub fn verdicts(&self) -> Arc<EpochVerdicts> {
        Arc::clone(&self.verdicts)
    }
}

/// The requests of one epoch's records, waiting for their answers.
#[derive(Debug)]
pub struct Pending {
    /// The epoch.
    pub epoch: u64,
    /// Sequence number of the first record of the epoch.
    pub first: u64,
    /// One verdict per record of the epoch.
    pub verdicts: Arc<EpochVerdicts>,
    /// The requests.
    pub waiters: Vec<Waiter>,
}

impl Pending {
    /// Whether every verdict is decided.
    pub fn is_decided(&self) -> bool {
        self.verdicts.is_decided()
    }

    /// The epoch is journaled (and decided): answers the requests that wait for no more.
    pub fn answer_journaled(&mut self) {
        let (now, later) = std::mem::take(&mut self.waiters)
            .into_iter()
            .partition(|w| w.wait == Wait::Journal);
        self.waiters = later;
        self.send(now, false);
    }

    /// The epoch is committed: answers every request left.
    pub fn answer(mut self) {
        let waiters = std::mem::take(&mut self.waiters);
        self.send(waiters, true);
    }

    fn send(&self, waiters: Vec<Waiter>, committed: bool) {
        if waiters.is_empty() {
            return;
        }
        let verdicts = self
            .verdicts
            .verdicts
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for w in waiters {
            let range = (w.seqs.start - self.first) as usize..(w.seqs.end - self.first) as usize;
            // A request that gave up (timeout, client gone) has dropped its receiver.
            let _ = w.tx.send(Reply {
                epoch: self.epoch,
                committed,
                verdicts: verdicts[range].to_vec(),
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

/// An epoch's records taken by worker 0, until every other worker has claimed them.
#[derive(Debug)]
struct Handoff {
    epoch: u64,
    records: Arc<EpochRecords>,
    unclaimed: usize,
}

/// One ingress queue (events or commands).
#[derive(Debug)]
pub struct Ingress {
    name: &'static str,
    max_bytes: usize,
    queue: Mutex<Queue>,
    /// Journaled epochs to replay before anything posted, in order.
    replay: Mutex<VecDeque<(Batch, i64)>>,
    handoffs: Mutex<Vec<Handoff>>,
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
            replay: Mutex::default(),
            handoffs: Mutex::default(),
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

    /// Queues journaled epochs (records, `ingested_at`) to be taken first, one per take,
    /// in order; before [`Ingress::open`], which must number on from their end.
    pub fn replay(&self, epochs: impl IntoIterator<Item = (Batch, i64)>) {
        self.replay
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(epochs);
    }

    /// Whether journaled epochs wait to be replayed.
    pub fn replaying(&self) -> bool {
        !self
            .replay
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    /// Stops accepting requests.
    pub fn close(&self) {
        self.lock().state = State::Closed;
    }

    /// Queues `records`, each to belong to `tenant` (none: any tenant); the receiver gets
    /// their verdicts once the epoch that reads them is journaled or, as `wait` says,
    /// committed.
    pub fn submit(
        &self,
        records: &[&[u8]],
        tenant: Option<Arc<str>>,
        wait: Wait,
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
            wait,
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

    /// Worker 0 of `workers`: takes everything queued (or the next journaled epoch to
    /// replay) as epoch `epoch`'s records, read at `ingested_at` unless replayed, for
    /// every worker to decode a slice of (the others [`Ingress::claim`] them), with every
    /// verdict `Accepted` until a worker decides otherwise; and the requests' waiters.
    pub fn take_epoch(
        &self,
        epoch: u64,
        workers: usize,
        ingested_at: i64,
    ) -> (Arc<EpochRecords>, Vec<Waiter>) {
        let mut batch = Batch::default();
        let replayed = self.take(&mut batch);
        let waiters = batch.take_waiters();
        let verdicts = EpochVerdicts::new(batch.len(), workers);
        let records = Arc::new(EpochRecords {
            batch,
            ingested_at: replayed.unwrap_or(ingested_at),
            replayed: replayed.is_some(),
            verdicts,
        });
        if workers > 1 {
            self.handoffs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(Handoff {
                    epoch,
                    records: Arc::clone(&records),
                    unclaimed: workers - 1,
                });
        }
        (records, waiters)
    }

    /// Another worker: epoch `epoch`'s records, once worker 0 has taken them.
    pub fn claim(&self, epoch: u64) -> Option<Arc<EpochRecords>> {
        let mut handoffs = self.handoffs.lock().unwrap_or_else(|e| e.into_inner());
        let i = handoffs.iter().position(|h| h.epoch == epoch)?;
        let records = Arc::clone(&handoffs[i].records);
        handoffs[i].unclaimed -= 1;
        if handoffs[i].unclaimed == 0 {
            handoffs.remove(i);
        }
        Some(records)
    }

    /// Takes everything queued into `into` (whose previous contents must be done with),
    /// leaving `into`'s buffers behind for reuse; or, while journaled epochs wait to be
    /// replayed, the next of them, and its `ingested_at`.
    pub fn take(&self, into: &mut Batch) -> Option<i64> {
        debug_assert!(into.waiters.is_empty(), "answer a batch before reusing it");
        let replayed = self
            .replay
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front();
        if let Some((batch, ingested_at)) = replayed {
            *into = batch;
            return Some(ingested_at);
        }
        into.bytes.clear();
        into.ends.clear();
        into.tenants.clear();
        let mut q = self.lock();
        let next = q.batch.end();
        std::mem::swap(&mut q.batch, into);
        q.batch.first = next;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_numbered_in_arrival_order_and_answered_by_request() {
        let ingress = Ingress::new("events", 1 << 20);
        assert_eq!(
            ingress.submit(&[b"{}"], None, Wait::Journal).unwrap_err(),
            Refused::NotOpen
        );
        ingress.open(10);
        let mut a = ingress
            .submit(
                &[b"{\"a\":1}", b"{\"a\":2}"],
                Some("acme".into()),
                Wait::Journal,
            )
            .unwrap();
        let mut b = ingress.submit(&[b"{\"b\":1}"], None, Wait::Commit).unwrap();
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
        assert!(
            a.try_recv().is_err(),
            "no answer before the journal holds them"
        );
        let mut pending = Pending {
            epoch: 3,
            first: batch.first(),
            verdicts: EpochVerdicts::decided(vec![
                Verdict::Accepted,
                Verdict::Duplicate("dup".into()),
                Verdict::Rejected("bad".into()),
            ]),
            waiters: batch.take_waiters(),
        };
        pending.answer_journaled();
        let a = a.try_recv().unwrap();
        assert_eq!((a.epoch, a.committed), (3, false));
        assert!(
            b.try_recv().is_err(),
            "a request waiting for the commit is not answered when journaled"
        );
        pending.answer();
        assert_eq!(
            a.verdicts,
            vec![Verdict::Accepted, Verdict::Duplicate("dup".into())]
        );
        let b = b.try_recv().unwrap();
        assert!(b.committed);
        assert_eq!(b.verdicts, vec![Verdict::Rejected("bad".into())]);
        // Numbering goes on after a take.
        let _c = ingress.submit(&[b"{}"], None, Wait::Journal).unwrap();
        ingress.take(&mut batch);
        assert_eq!(batch.first(), 13);
    }

    #[test]
    fn workers_share_an_epoch_in_slices_and_answer_with_all_their_verdicts() {
        let ingress = Ingress::new("events", 1 << 20);
        ingress.open(0);
        let records: Vec<Vec<u8>> = (0..5)
            .map(|i| format!("{{\"n\":{i}}}").into_bytes())
            .collect();
        let refs: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
        let mut rx = ingress.submit(&refs, None, Wait::Journal).unwrap();
        assert!(
            ingress.claim(7).is_none(),
            "nothing before worker 0 takes the epoch"
        );
        let (mine, waiters) = ingress.take_epoch(7, 2, 1_000);
        let theirs = ingress.claim(7).expect("worker 1's share");
        assert!(ingress.claim(7).is_none(), "claimed once per other worker");
        let (a, b) = (mine.slice(0, 2), theirs.slice(1, 2));
        assert_eq!(
            (a.clone(), b.clone()),
            (0..2, 2..5),
            "contiguous, in worker order"
        );
        let seqs: Vec<u64> = theirs
            .batch()
            .records()
            .skip(b.start)
            .map(|r| r.0)
            .collect();
        assert_eq!(seqs, vec![2, 3, 4]);
        theirs.set_verdicts(
            b.start,
            vec![Verdict::Duplicate("d".into()), Verdict::Accepted],
        );
        let mut pending = Pending {
            epoch: 7,
            first: mine.batch().first(),
            verdicts: mine.verdicts(),
            waiters,
        };
        assert!(!pending.is_decided(), "worker 0 has not decided yet");
        mine.set_verdicts(a.start, vec![Verdict::Accepted, Verdict::Late("l".into())]);
        assert!(pending.is_decided());
        pending.answer_journaled();
        assert_eq!(
            rx.try_recv().unwrap().verdicts,
            vec![
                Verdict::Accepted,
                Verdict::Late("l".into()),
                Verdict::Duplicate("d".into()),
                Verdict::Accepted,
                Verdict::Accepted,
            ]
        );
    }

    #[test]
    fn a_full_queue_refuses_and_a_closed_one_too() {
        let ingress = Ingress::new("events", 10);
        ingress.open(0);
        let _first = ingress
            .submit(&[b"0123456789abc"], None, Wait::Journal)
            .unwrap();
        assert_eq!(
            ingress.submit(&[b"x"], None, Wait::Journal).unwrap_err(),
            Refused::Full {
                queued: 13,
                max: 10
            }
        );
        ingress.close();
        assert_eq!(
            ingress.submit(&[b"x"], None, Wait::Journal).unwrap_err(),
            Refused::Closed
        );
    }

    #[test]
    fn abandoned_records_get_their_channel_closed() {
        let ingress = Ingress::new("events", 1 << 20);
        ingress.open(0);
        let mut rx = ingress.submit(&[b"{}"], None, Wait::Journal).unwrap();
        ingress.abandon();
        assert_eq!(
            rx.try_recv().unwrap_err(),
            oneshot::error::TryRecvError::Closed
        );
        assert_eq!(
            ingress.submit(&[b"x"], None, Wait::Journal).unwrap_err(),
            Refused::Closed
        );
    }

    #[test]
    fn journaled_epochs_are_taken_first_one_per_epoch_then_what_was_posted() {
        let ingress = Ingress::new("events", 1 << 20);
        let part = |first: u64, n: usize| Part {
            first,
            bytes: b"{}".repeat(n),
            ends: (1..=n).map(|i| 2 * i).collect(),
            tenants: vec![None; n],
        };
        ingress.replay([(part(5, 2).into(), 111), (part(7, 1).into(), 222)]);
        ingress.open(8);
        let _rx = ingress.submit(&[b"{}"], None, Wait::Journal).unwrap();
        let (first, w1) = ingress.take_epoch(1, 1, 999);
        let (second, _) = ingress.take_epoch(2, 1, 999);
        let (posted, w3) = ingress.take_epoch(3, 1, 999);
        assert!(w1.is_empty() && first.replayed() && second.replayed());
        assert_eq!((first.batch().first(), first.batch().len()), (5, 2));
        assert_eq!((first.ingested_at(), second.ingested_at()), (111, 222));
        assert_eq!((posted.batch().first(), posted.ingested_at()), (8, 999));
        assert!(!posted.replayed() && w3.len() == 1);
        assert!(!ingress.replaying());
    }
}
