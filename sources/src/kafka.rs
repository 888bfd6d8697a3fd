//! The Kafka source: `kafka://HOST:PORT[,HOST:PORT...]/TOPIC`.
//!
//! A job reads a topic without a consumer group: each timely worker is assigned a fixed
//! set of partitions and reads them from offsets the job chose (the start, or the offsets
//! of its last commit record). The job's own commit record is the only place offsets are
//! kept, so a restart resumes exactly where the last committed epoch ended.
//!
//! Messages are copied into a [`MessageBuf`], one epoch at a time, in the order the
//! reader took them (each partition's in offset order): that is the job's arrival order
//! within an epoch. Each partition has a queue of its own, and the reader takes from the
//! one that has read the smallest share of its backlog first, so that the partitions of
//! a backlog are read at one pace ([`PartitionReader`]). A partition is *at its end*
//! when the broker reported that no message lies beyond what was read (librdkafka's
//! partition EOF); the job uses that to stop once caught up (`--until-caught-up`) and
//! to report lag.

use rdkafka::config::ClientConfig;
use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::consumer::{BaseConsumer, Consumer, DefaultConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::ffi::CString;
use std::fmt;
use std::ops::Range;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Errors of the Kafka source and producer.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSourceError {
    /// The `kafka://` address does not parse.
    #[error(
        "`{0}` is not a Kafka address: expected kafka://HOST:PORT[,HOST:PORT...]/TOPIC, e.g. kafka://127.0.0.1:9092/events"
    )]
    BadUrl(String),
    /// The client failed.
    #[error("Kafka {what} ({url}): {source}")]
    Client {
        /// What we were doing.
        what: String,
        /// The source address.
        url: String,
        /// The client error.
        source: Box<KafkaError>,
    },
    /// The topic does not exist or has no partitions.
    #[error(
        "Kafka topic `{topic}` not found on {brokers} (or it has no partitions): create it first, e.g. with 4 partitions"
    )]
    NoTopic {
        /// Topic name.
        topic: String,
        /// Bootstrap servers.
        brokers: String,
    },
}

/// Result of this module.
pub type Result<T> = std::result::Result<T, KafkaSourceError>;

/// A parsed `kafka://HOST:PORT[,HOST:PORT...]/TOPIC`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaUrl {
    /// Bootstrap servers, comma separated.
    pub brokers: String,
    /// Topic name.
    pub topic: String,
}

impl FromStr for KafkaUrl {
    type Err = KafkaSourceError;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || KafkaSourceError::BadUrl(s.to_string());
        let rest = s.strip_prefix("kafka://").ok_or_else(bad)?;
        let (brokers, topic) = rest.split_once('/').ok_or_else(bad)?;
        let valid_topic = !topic.is_empty()
            && topic.len() <= 249
            && topic
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        let valid_brokers = !brokers.is_empty()
            && brokers.split(',').all(|b| {
                b.rsplit_once(':')
                    .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
            });
        if !valid_topic || !valid_brokers {
            return Err(bad());
        }
        Ok(KafkaUrl {
            brokers: brokers.to_string(),
            topic: topic.to_string(),
        })
    }
}

impl fmt::Display for KafkaUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "kafka://{}/{}", self.brokers, self.topic)
    }
}

impl KafkaUrl {
    /// The source name of one partition, as recorded in commit records.
    pub fn partition_name(&self, partition: u32) -> String {
        format!("{self}#{partition}")
    }

    fn client_error(&self, what: &str, source: KafkaError) -> KafkaSourceError {
        KafkaSourceError::Client {
            what: what.to_string(),
            url: self.to_string(),
            source: Box::new(source),
        }
    }

    /// Number of partitions of the topic.
    pub fn partition_count(&self, timeout: Duration) -> Result<u32> {
        let consumer: BaseConsumer = self
            .config()
            .create()
            .map_err(|e| self.client_error("creating a client", e))?;
        let metadata = consumer
            .fetch_metadata(Some(&self.topic), timeout)
            .map_err(|e| self.client_error("reading topic metadata", e))?;
        let count = metadata
            .topics()
            .iter()
            .find(|t| t.name() == self.topic && t.error().is_none())
            .map_or(0, |t| t.partitions().len() as u32);
        if count == 0 {
            return Err(KafkaSourceError::NoTopic {
                topic: self.topic.clone(),
                brokers: self.brokers.clone(),
            });
        }
        Ok(count)
    }

    fn config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("client.id", "openmonetize");
        c
    }
}

/// One epoch's messages, copied out of the client.
#[derive(Debug, Default)]
pub struct MessageBuf {
    bytes: Vec<u8>,
    /// (partition, offset, payload range in `bytes`).
    records: Vec<(u32, u64, Range<usize>)>,
}

impl MessageBuf {
    /// Empties the buffer, keeping its memory.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.records.clear();
    }

    /// Number of messages.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True when no message was read.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Payload bytes held.
    pub fn payload_bytes(&self) -> usize {
        self.bytes.len()
    }

    /// (partition, offset, payload) in partition order, then offset order.
    pub fn messages(&self) -> impl Iterator<Item = (u32, u64, &[u8])> {
        self.messages_from(0)
    }

    /// The messages from the `start`th on (in order), as for [`MessageBuf::messages`]:
    /// for a reader that handles each slice of an epoch as it reads it.
    pub fn messages_from(&self, start: usize) -> impl Iterator<Item = (u32, u64, &[u8])> {
        self.records[start.min(self.records.len())..]
            .iter()
            .map(|(p, o, r)| (*p, *o, &self.bytes[r.clone()]))
    }

    fn push(&mut self, partition: u32, offset: u64, payload: &[u8]) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(payload);
        self.records
            .push((partition, offset, start..self.bytes.len()));
    }

    /// Sorts the messages by partition, then offset.
    pub fn sort(&mut self) {
        self.records.sort_unstable_by_key(|(p, o, _)| (*p, *o));
    }
}

/// Messages a reader takes before it orders its partitions by share read again.
const REORDER_EVERY: usize = 1024;

/// Reads a fixed set of partitions of one topic from chosen offsets.
///
/// Each partition's messages come through a queue of its own, and the reader takes them
/// from the partition that has read the smallest share of what it has to read (its
/// backlog since the reader started) first. A worker catching up a backlog thus reads
/// its partitions at the same pace: read from one shared queue, one partition ran nearly
/// two days of event time ahead of another in a 10M-event catch-up (docs/performance-notes.md,
/// session 28), and every `usage_windows` partition that the lagging one then reached
/// was written again. A partition whose queue is full is not fetched until it is read
/// (librdkafka's back-pressure), so the broker's bandwidth goes to the others.
pub struct PartitionReader {
    url: KafkaUrl,
    consumer: Arc<BaseConsumer>,
    /// Each partition's own queue of fetched messages.
    queues: BTreeMap<u32, PartitionQueue<DefaultConsumerContext>>,
    /// The partitions by share read, least first (refreshed every [`REORDER_EVERY`]
    /// messages, and before a wait).
    order: Vec<u32>,
    /// Messages taken since `order` was refreshed.
    since_order: usize,
    /// The place in `order` of the partition read from (`usize::MAX`: the main queue
    /// first).
    cursor: usize,
    /// Partition -> the first offset this reader read or was to read.
    first: BTreeMap<u32, u64>,
    topic: CString,
    /// Partition -> next offset to read; `None` until the first message of a partition
    /// read from its beginning (whose first offset is the broker's to say).
    next: BTreeMap<u32, Option<u64>>,
    /// Partitions with nothing beyond `next` at the last look.
    at_end: BTreeMap<u32, bool>,
}

impl fmt::Debug for PartitionReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartitionReader")
            .field("url", &self.url)
            .field("next", &self.next)
            .finish()
    }
}

impl PartitionReader {
    /// Starts reading `partitions`: partition -> first offset to read, or `None` for the
    /// oldest message the broker still holds.
    pub fn open(url: &KafkaUrl, partitions: BTreeMap<u32, Option<u64>>) -> Result<Self> {
        // The client's limits on fetched messages apply to each partition's own queue:
        // the reader's 200,000 messages and 64 MiB are shared among its partitions, so
        // that a worker with many partitions holds no more than one with a few.
        let shared = partitions.len().max(1);
        let queued_messages = (200_000 / shared).max(10_000);
        let queued_kbytes = (65_536 / shared).max(8_192);
        let consumer: BaseConsumer = url
            .config()
            // Required by the client even without group membership; offsets are never
            // committed to the broker (the job's commit records hold them).
            .set("group.id", "openmonetize")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            // Never skip silently: an offset the broker no longer holds is an error.
            .set("auto.offset.reset", "error")
            .set("fetch.wait.max.ms", "50")
            .set("fetch.max.bytes", "52428800")
            .set("max.partition.fetch.bytes", "8388608")
            .set("queued.min.messages", queued_messages.to_string())
            .set("queued.max.messages.kbytes", queued_kbytes.to_string())
            // Once its queue of fetched messages is full, the client waits this long
            // before it fetches again (librdkafka's default: a second). A job catching
            // up drains a full queue in a fraction of that and then waited for the
            // rest: 0.3-0.9 s of every few epochs (docs/performance-notes.md, session 24).
            .set("fetch.queue.backoff.ms", "10")
            .create()
            .map_err(|e| url.client_error("creating a consumer", e))?;
        let mut tpl = TopicPartitionList::new();
        for (&p, &offset) in &partitions {
            let offset = offset.map_or(Offset::Beginning, |o| Offset::Offset(o as i64));
            tpl.add_partition_offset(&url.topic, p as i32, offset)
                .map_err(|e| url.client_error("assigning partitions", e))?;
        }
        consumer
            .assign(&tpl)
            .map_err(|e| url.client_error("assigning partitions", e))?;
        let consumer = Arc::new(consumer);
        let mut queues = BTreeMap::new();
        for &p in partitions.keys() {
            let queue = consumer
                .split_partition_queue(&url.topic, p as i32)
                .ok_or_else(|| KafkaSourceError::Client {
                    what: format!("giving partition {p} a queue of its own"),
                    url: url.to_string(),
                    source: Box::new(KafkaError::Subscription("no such partition".into())),
                })?;
            queues.insert(p, queue);
        }
        Ok(PartitionReader {
            topic: CString::new(url.topic.clone()).expect("a valid topic has no NUL byte"),
            url: url.clone(),
            consumer,
            order: queues.keys().copied().collect(),
            queues,
            since_order: 0,
            cursor: usize::MAX,
            first: partitions
                .iter()
                .filter_map(|(&p, &o)| Some((p, o?)))
                .collect(),
            at_end: partitions.keys().map(|&p| (p, false)).collect(),
            next: partitions,
        })
    }

    /// Reads into `buf` (cleared first) until `deadline`, until `max_bytes` of payload,
    /// until `stop` is set, or — when `stop_at_end` — until every partition is at its
    /// end. Messages come out sorted by partition, then offset.
    pub fn read(
        &mut self,
        buf: &mut MessageBuf,
        deadline: Instant,
        max_bytes: usize,
        stop_at_end: bool,
        stop: &AtomicBool,
    ) -> Result<()> {
        buf.clear();
        self.read_more(buf, deadline, max_bytes, stop_at_end, stop)?;
        buf.sort();
        Ok(())
    }

    /// Like [`PartitionReader::read`], but appends to `buf` in arrival order, each
    /// partition's messages in offset order (a reader that wants them by partition sorts
    /// once at the end, with [`MessageBuf::sort`]). Returns whether reading is over for the epoch by `max_bytes`,
    /// `stop`, the end of every partition with `stop_at_end`, or no partition to read;
    /// `false` when only `deadline` passed.
    pub fn read_more(
        &mut self,
        buf: &mut MessageBuf,
        deadline: Instant,
        max_bytes: usize,
        stop_at_end: bool,
        stop: &AtomicBool,
    ) -> Result<bool> {
        self.read_until(buf, Some(deadline), max_bytes, stop_at_end, stop)
    }

    /// Like [`PartitionReader::read_more`], but takes only the messages the client has
    /// already fetched and never waits: for a reader with other work to do.
    pub fn read_ready(
        &mut self,
        buf: &mut MessageBuf,
        max_bytes: usize,
        stop_at_end: bool,
        stop: &AtomicBool,
    ) -> Result<bool> {
        self.read_until(buf, None, max_bytes, stop_at_end, stop)
    }

    /// Reads until `deadline`, or while messages are ready without waiting when `None`.
    fn read_until(
        &mut self,
        buf: &mut MessageBuf,
        deadline: Option<Instant>,
        max_bytes: usize,
        stop_at_end: bool,
        stop: &AtomicBool,
    ) -> Result<bool> {
        loop {
            if buf.payload_bytes() >= max_bytes
                || (stop_at_end && self.caught_up())
                || self.next.is_empty()
                || stop.load(Ordering::Relaxed)
            {
                return Ok(true);
            }
            let wait = match deadline {
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Ok(false);
                    }
                    // rdkafka passes its poll timeout to librdkafka in whole
                    // milliseconds, cut down, and polls again with what is left until
                    // the timeout has passed: a wait of 4.7 ms blocks 4 ms and then
                    // spins for 0.7 ms. Whole milliseconds, rounded up, block for the
                    // whole wait (overshooting the deadline by less than a
                    // millisecond) and never spin.
                    let wait_ms = (deadline - now).as_micros().div_ceil(1000).clamp(1, 100);
                    Duration::from_millis(wait_ms as u64)
                }
                None => Duration::ZERO,
            };
            // The main queue serves the client's callbacks, and holds any message
            // fetched before the partitions got their own queues (older than those in
            // them): looked at first, and again with each new order.
            if self.since_order >= REORDER_EVERY || self.cursor == usize::MAX {
                if let Some(polled) = self.consumer.poll(Duration::ZERO) {
                    let polled = take(buf, polled);
                    self.note(polled)?;
                    self.cursor = usize::MAX;
                    continue;
                }
                self.reorder();
            }
            // From the partition furthest behind; one with nothing ready is passed
            // over until the next order.
            let mut taken = false;
            while self.cursor < self.order.len() {
                let p = self.order[self.cursor];
                if let Some(polled) = self.queues[&p].poll(Duration::ZERO) {
                    let polled = take(buf, polled);
                    self.note(polled)?;
                    taken = true;
                    break;
                }
                self.cursor += 1;
            }
            if taken {
                continue;
            }
            self.since_order = REORDER_EVERY;
            if deadline.is_none() {
                return Ok(false);
            }
            // Nothing ready anywhere: wait on the partition furthest behind that is not
            // at its end, a millisecond at a time so the others are looked at too.
            self.reorder();
            let waiting = self
                .order
                .iter()
                .find(|p| !self.at_end.get(p).copied().unwrap_or(false))
                .or(self.order.first())
                .copied();
            let Some(p) = waiting else {
                std::thread::sleep(wait.min(Duration::from_millis(1)));
                continue;
            };
            if let Some(polled) = self.queues[&p].poll(wait.min(Duration::from_millis(1))) {
                let taken = take(buf, polled);
                self.note(taken)?;
            }
        }
    }

    /// Records what [`take`] took in the positions.
    fn note(&mut self, taken: std::result::Result<Taken, KafkaError>) -> Result<()> {
        match taken {
            Ok(Taken::Message(p, offset)) => {
                self.next.insert(p, Some(offset + 1));
                self.first.entry(p).or_insert(offset);
                self.at_end.insert(p, false);
                self.since_order += 1;
                Ok(())
            }
            Ok(Taken::End(p)) => {
                self.at_end.insert(p, true);
                Ok(())
            }
            Err(e) => Err(self.url.client_error("reading", e)),
        }
    }

    /// Orders the partitions by the share of their backlog read, least first: (next -
    /// first) / (end - first), with the end as the client last heard it from the broker.
    fn reorder(&mut self) {
        let mut shares: Vec<(f64, u32)> = self
            .order
            .iter()
            .map(|&p| {
                let next = self.next.get(&p).copied().flatten();
                let end = self.watermarks(p).map(|(_, high)| high);
                let share = share_read(self.first.get(&p).copied(), next, end);
                (share, p)
            })
            .collect();
        shares.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        self.order = shares.into_iter().map(|(_, p)| p).collect();
        self.since_order = 0;
        self.cursor = 0;
    }

    /// The offsets of the first message of `p` and after its last, as the client last
    /// heard them from the broker (cached, no broker call); `None` before the first
    /// fetch.
    fn watermarks(&self, p: u32) -> Option<(u64, u64)> {
        let (mut low, mut high) = (0i64, 0i64);
        // SAFETY: the client pointer is valid while `self.consumer` lives, the topic is a
        // NUL-terminated string we own, and librdkafka only writes the two integers.
        let err = unsafe {
            rdkafka::bindings::rd_kafka_get_watermark_offsets(
                self.consumer.client().native_ptr(),
                self.topic.as_ptr(),
                p as i32,
                &mut low,
                &mut high,
            )
        };
        (err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0)
            .then_some((low.max(0) as u64, high as u64))
    }

    /// True when every partition is at its end.
    pub fn caught_up(&self) -> bool {
        self.at_end.values().all(|&e| e)
    }

    /// The partitions read to their end.
    pub fn idle_partitions(&self) -> Vec<u32> {
        self.at_end
            .iter()
            .filter(|(_, at_end)| **at_end)
            .map(|(&p, _)| p)
            .collect()
    }

    /// (partition, next offset to read) of every partition with a known position: read
    /// from, or resumed at an offset. A partition still waiting for its first message
    /// from its beginning has none, so a restart starts it from its beginning again.
    pub fn positions(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        self.next.iter().filter_map(|(&p, &o)| Some((p, o?)))
    }

    /// Messages known to lie beyond what was read (from the broker's answers to the
    /// client's fetches; 0 before the first fetch).
    pub fn lag(&self) -> u64 {
        self.next
            .iter()
            .map(|(&p, &next)| {
                // Before the first message of a partition read from its beginning, all
                // it holds lies beyond.
                let (low, high) = self.watermarks(p).unwrap_or((0, 0));
                high.saturating_sub(next.unwrap_or(low))
            })
            .sum()
    }
}

/// The share of a partition's backlog read: (next - first) / (end - first) for a reader
/// that started at `first`, reads `next` and last heard of `end` as the partition's end.
/// 0 before its first message; 1 for an empty backlog. Only compared, never counted.
fn share_read(first: Option<u64>, next: Option<u64>, end: Option<u64>) -> f64 {
    let (Some(first), Some(next)) = (first, next) else {
        return 0.0;
    };
    let end = end.unwrap_or(next).max(next);
    if end > first {
        (next - first) as f64 / (end - first) as f64
    } else {
        1.0
    }
}

/// What one poll of a consumer or partition queue gave.
enum Taken {
    /// A message of (partition, offset), its payload appended to the buffer.
    Message(u32, u64),
    /// The partition is at its end.
    End(u32),
}

/// Appends a polled message's payload to `buf`.
fn take(
    buf: &mut MessageBuf,
    polled: rdkafka::error::KafkaResult<rdkafka::message::BorrowedMessage<'_>>,
) -> std::result::Result<Taken, KafkaError> {
    match polled {
        Ok(m) => {
            let (p, offset) = (m.partition() as u32, m.offset() as u64);
            buf.push(p, offset, m.payload().unwrap_or_default());
            Ok(Taken::Message(p, offset))
        }
        Err(KafkaError::PartitionEOF(p)) => Ok(Taken::End(p as u32)),
        Err(e) => Err(e),
    }
}

/// Writes messages to one topic, keyed so that one customer's events share a partition.
pub struct KafkaProducer {
    url: KafkaUrl,
    producer: BaseProducer,
}

impl fmt::Debug for KafkaProducer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaProducer")
            .field("url", &self.url)
            .finish()
    }
}

impl KafkaProducer {
    /// Connects to the topic's brokers (the topic must exist).
    pub fn open(url: &KafkaUrl) -> Result<Self> {
        url.partition_count(Duration::from_secs(10))?;
        let producer: BaseProducer = url
            .config()
            .set("linger.ms", "20")
            .set("batch.size", "1000000")
            .set("queue.buffering.max.messages", "1000000")
            .set("enable.idempotence", "false")
            .create()
            .map_err(|e| url.client_error("creating a producer", e))?;
        Ok(KafkaProducer {
            url: url.clone(),
            producer,
        })
    }

    /// Queues one message; waits while the client's queue is full.
    pub fn send(&self, key: Option<&[u8]>, payload: &[u8]) -> Result<()> {
        loop {
            let mut record = BaseRecord::<[u8], [u8]>::to(&self.url.topic).payload(payload);
            if let Some(k) = key {
                record = record.key(k);
            }
            match self.producer.send(record) {
                Ok(()) => {
                    self.producer.poll(Duration::ZERO);
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    self.producer.poll(Duration::from_millis(5));
                }
                Err((e, _)) => return Err(self.url.client_error("producing", e)),
            }
        }
    }

    /// Waits until every queued message is acknowledged: as long as the broker keeps
    /// acknowledging (a long queue on a slow or busy broker can take minutes), and gives
    /// up after a minute without progress.
    pub fn flush(&self) -> Result<()> {
        const STEP: Duration = Duration::from_secs(5);
        const PATIENCE: Duration = Duration::from_secs(60);
        let mut left = self.producer.in_flight_count();
        let mut stalled = Duration::ZERO;
        loop {
            match self.producer.flush(STEP) {
                Ok(()) => return Ok(()),
                Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut)) => {
                    let now_left = self.producer.in_flight_count();
                    stalled = if now_left < left {
                        Duration::ZERO
                    } else {
                        stalled + STEP
                    };
                    left = now_left;
                    if stalled >= PATIENCE {
                        return Err(self.url.client_error(
                            "flushing",
                            KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut),
                        ));
                    }
                }
                Err(e) => return Err(self.url.client_error("flushing", e)),
            }
        }
    }
}

/// What an [`AckedProducer`] reports for each message: (partition, offset) once the
/// broker has it, or why it failed.
pub type Ack = Box<dyn FnOnce(std::result::Result<(u32, u64), String>) + Send>;

/// The delivery reports of an [`AckedProducer`], handed to each message's [`Ack`].
struct Acks;

impl rdkafka::ClientContext for Acks {}

impl rdkafka::producer::ProducerContext for Acks {
    type DeliveryOpaque = Box<std::sync::Mutex<Option<Ack>>>;

    fn delivery(&self, result: &rdkafka::message::DeliveryResult<'_>, ack: Self::DeliveryOpaque) {
        let Some(ack) = ack.into_inner().unwrap_or_else(|e| e.into_inner()) else {
            return;
        };
        ack(match result {
            Ok(m) => Ok((m.partition() as u32, m.offset() as u64)),
            Err((e, _)) => Err(e.to_string()),
        });
    }
}

/// A producer that tells the caller where each message landed, once the broker has
/// acknowledged it (`acks=all`): what `serve` needs to answer a posted record only
/// after the job committed it. A background thread polls the client.
pub struct AckedProducer {
    url: KafkaUrl,
    producer: rdkafka::producer::ThreadedProducer<Acks>,
}

impl fmt::Debug for AckedProducer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AckedProducer")
            .field("url", &self.url)
            .finish()
    }
}

impl AckedProducer {
    /// Connects to the topic's brokers (the topic must exist).
    pub fn open(url: &KafkaUrl) -> Result<Self> {
        url.partition_count(Duration::from_secs(10))?;
        let producer = url
            .config()
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("enable.idempotence", "false")
            .create_with_context(Acks)
            .map_err(|e| url.client_error("creating a producer", e))?;
        Ok(AckedProducer {
            url: url.clone(),
            producer,
        })
    }

    /// The topic.
    pub fn url(&self) -> &KafkaUrl {
        &self.url
    }

    /// Queues one message; `ack` is called with its (partition, offset) or the error.
    /// Waits while the client's queue is full.
    pub fn send(&self, key: Option<&[u8]>, payload: &[u8], ack: Ack) -> Result<()> {
        let mut ack = Box::new(std::sync::Mutex::new(Some(ack)));
        loop {
            let mut record = BaseRecord::with_opaque_to(&self.url.topic, ack).payload(payload);
            if let Some(k) = key {
                record = record.key(k);
            }
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    ack = r.delivery_opaque;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => return Err(self.url.client_error("producing", e)),
            }
        }
    }
}

/// The partition key of a JSON event: `tenant_id` (when a string) and `customer_id`, so
/// that one customer's events stay in order in one partition. `None` when the line is
/// not a JSON object with a string `customer_id` (it is still produced, and the job
/// rejects or accepts it). Read with the decoder's scanner (no tree is built: producers
/// key every event); where keys repeat, the last one counts, as with serde_json.
pub fn event_key(line: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(line).ok()?;
    let mut members = Vec::with_capacity(16);
    if !crate::json::object_members(text, &mut members) {
        return None;
    }
    let field = |name: &str| {
        members
            .iter()
            .rev()
            .find(|(k, _)| {
                let key = &text[k.clone()];
                if key.contains('\\') {
                    crate::decode::string_of(key).is_some_and(|k| k == name)
                } else {
                    key.len() == name.len() + 2 && &key[1..key.len() - 1] == name
                }
            })
            .and_then(|(_, v)| crate::decode::string_of(&text[v.clone()]))
    };
    let customer = field("customer_id")?;
    let tenant = field("tenant_id").unwrap_or(std::borrow::Cow::Borrowed("default"));
    Some(format!("{tenant}/{customer}").into_bytes())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_partition_share_is_what_it_read_of_its_own_backlog() {
        // Not started: first in line.
        assert_eq!(share_read(None, None, Some(100)), 0.0);
        assert_eq!(share_read(Some(50), None, Some(100)), 0.0);
        // Resumed at 1,000 of 3,000; read 500 of the 2,000 since.
        assert_eq!(share_read(Some(1_000), Some(1_500), Some(3_000)), 0.25);
        // A larger partition read as many messages has read a smaller share.
        assert!(
            share_read(Some(0), Some(500), Some(4_000))
                < share_read(Some(0), Some(500), Some(2_000))
        );
        // Nothing to read, or an end not heard of yet: all read.
        assert_eq!(share_read(Some(7), Some(7), Some(7)), 1.0);
        assert_eq!(share_read(Some(0), Some(10), None), 1.0);
    }

    use super::*;

    #[test]
    fn kafka_urls_parse_or_say_what_is_expected() {
        let u: KafkaUrl = "kafka://127.0.0.1:9092/events".parse().unwrap();
        assert_eq!(u.brokers, "127.0.0.1:9092");
        assert_eq!(u.topic, "events");
        assert_eq!(u.to_string(), "kafka://127.0.0.1:9092/events");
        assert_eq!(u.partition_name(3), "kafka://127.0.0.1:9092/events#3");
        let two: KafkaUrl = "kafka://a:1,b:2/t.x-y_z".parse().unwrap();
        assert_eq!(two.brokers, "a:1,b:2");
        for bad in [
            "kafka://127.0.0.1:9092",
            "kafka://127.0.0.1/events",
            "kafka:///events",
            "kafka://h:1/",
            "kafka://h:1/a/b",
            "file:x",
            "kafka://h:99999/t",
        ] {
            let e = bad.parse::<KafkaUrl>().unwrap_err().to_string();
            assert!(e.contains("kafka://HOST:PORT"), "{bad}: {e}");
        }
    }

    #[test]
    fn event_keys_group_a_customer() {
        assert_eq!(
            event_key(br#"{"customer_id":"c1","id":"x"}"#).unwrap(),
            b"default/c1"
        );
        assert_eq!(
            event_key(br#"{"tenant_id":"t","customer_id":"c1"}"#).unwrap(),
            b"t/c1"
        );
        assert_eq!(event_key(b"not json"), None);
        assert_eq!(event_key(br#"{"customer_id":5}"#), None);
        assert_eq!(event_key(br#"{"customer_id":"c1""#), None);
        assert_eq!(event_key(br#"{"data":{"customer_id":"c1"}}"#), None);
    }

    #[test]
    fn event_keys_read_json_as_serde_json_does() {
        let key = |line: &str| event_key(line.as_bytes()).map(|k| String::from_utf8(k).unwrap());
        // Escaped keys and values are decoded.
        assert_eq!(
            key(r#"{"customer\u005fid":"c\"1","tenant_id":"t\u00e9"}"#).as_deref(),
            Some("t\u{e9}/c\"1")
        );
        // The last of repeated keys counts.
        assert_eq!(
            key(r#"{"customer_id":"a","customer_id":"b"}"#).as_deref(),
            Some("default/b")
        );
        // A tenant that is not a string is left to the job: the key uses the default.
        assert_eq!(
            key(r#"{"tenant_id":7,"customer_id":"c"}"#).as_deref(),
            Some("default/c")
        );
        for line in [
            r#"{"customer\u005fid":"c\"1","tenant_id":"t\u00e9"}"#,
            r#"{"customer_id":"a","customer_id":"b","x":[1,{"y":null}]}"#,
            r#"{"tenant_id":7,"customer_id":"c"}"#,
        ] {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let tenant = v["tenant_id"].as_str().unwrap_or("default");
            let expected = format!("{tenant}/{}", v["customer_id"].as_str().unwrap());
            assert_eq!(key(line), Some(expected), "{line}");
        }
    }

    #[test]
    fn a_buffer_hands_out_partition_then_offset_order() {
        let mut b = MessageBuf::default();
        b.push(2, 7, b"c");
        b.push(0, 9, b"b");
        b.push(0, 3, b"a");
        b.sort();
        let got: Vec<_> = b.messages().map(|(p, o, m)| (p, o, m.to_vec())).collect();
        assert_eq!(
            got,
            vec![
                (0, 3, b"a".to_vec()),
                (0, 9, b"b".to_vec()),
                (2, 7, b"c".to_vec())
            ]
        );
    }
}
