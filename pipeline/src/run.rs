//! `openmonetize run`: the timely workers and their epoch loop.
//!
//! Sources:
//! - a file is cut into epochs of `epoch_bytes`; each worker reads its own contiguous
//!   slice of every epoch, so byte offsets give one global arrival order. The job ends at
//!   the end of the file.
//! - a Kafka topic: each worker reads the partitions `p` with `p % workers == index`, in
//!   arrival order (each partition's in offset order), decoding each slice as it reads
//!   it. A job that keeps up cuts its epochs `epoch_interval` apart (a quarter of
//!   `commit_interval` by default); one catching up a backlog reads for
//!   `commit_interval` per epoch (at most `epoch_bytes` of payload per worker). The job
//!   runs until stopped (SIGINT/SIGTERM, or `until_caught_up` once every partition is
//!   read to its end), commits, and exits.
//! - HTTP (`openmonetize serve`): an [`Ingress`] queue, one partition in arrival order
//!   (one watermark, as for a file); an epoch is `epoch_interval` long (shorter once
//!   `epoch_bytes` are queued), and the workers keep stepping the dataflow while they
//!   wait for it. Worker 0 takes the epoch's records off the queue and hands them to the
//!   other workers; each decodes its contiguous slice, as with a file. Worker 0 writes
//!   the epoch's records to the journal ([`crate::journal`]), and answers each request
//!   with its records' verdicts once they are decided and journaled (or, if it asked,
//!   once the commit covering its epoch is written). The job commits the epoch that ends
//!   about `commit_interval` after the last commit ([`commit_due`]), if anything was read
//!   since. Like a Kafka
//!   job it checkpoints at every commit, resumes from its last commit (replaying the
//!   journal's epochs since), and runs until stopped.
//!
//! Per epoch, each worker: decodes what it read; sends dedup probes and a status, and
//! waits for the verdicts and statuses of the whole epoch; judges lateness
//! ([`Watermarks`]); writes its accepted, rejected and late records as Parquet; feeds
//! window updates into the usage sink, and burns, pre-summed hourly usage and model
//! calls ([`ViewUpdates`]) into the view sink. Worker 0 commits an epoch once every worker's
//! files for it are written: every `commit_every` epochs for a file; for Kafka and HTTP
//! the epoch that ends about `commit_interval` after the last commit, if anything was
//! read since ([`commit_due`]), but every `commit_every` epochs while a Kafka job
//! catches up; and the last epoch.

use crate::append_only::AppendOnly;
use crate::checkpoint::{self, Chain, ReaderCheckpoint, ReaderDelta};
use crate::cluster::Cluster;
use crate::dataflow::{EpochInfo, Meta, UsageRestore, UsageSinkConfig, committer, usage_sink};
use crate::ingress::{self, EpochVerdicts, Ingress, Verdict as IngressVerdict};
use crate::journal;
use crate::live::LiveViews;
use crate::metrics::JobMetrics;
use crate::retract::{self, Pending, Retractions};
use crate::view_sink::{ViewRestore, ViewSinkConfig, view_sink};
use crate::view_updates::{ViewUpdates, tracked_meters};
use anyhow::{Context, bail};
use om_model::{
    Aggregation, Command, Config, Decimal9, LateRecord, Micros, ReadingValue, RejectedRecord,
    SourcePosition, fingerprint,
};
use om_operators::dedup::dedup;
use om_operators::view::CustomerInput;
use om_operators::{
    BurnUpdate, DedupProbe, DedupState, Fate, NameCache, NameRecord, Order, ReadingUpdate,
    UpdateValue, Verdict, Watermarks, classify, late_reason,
};
use om_sinks::DataStore;
use om_sinks::commit::CommitRecord;
use om_sinks::encode::{EventColumns, EventsBuilder};
use om_sinks::retention::Superseded;
use om_sources::decode::{MAX_RECORD_BYTES, Rejection, Scratch, ValueRef};
use om_sources::file::{JsonlFile, LineBuf};
use om_sources::kafka::{KafkaUrl, MessageBuf, PartitionReader};
use om_sources::{CommandDecoder, Decoder};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::{Exchange, ParallelizationContract, Pipeline};
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::{Concat, Probe};
use timely::dataflow::{InputHandle, ProbeHandle};

/// A timely input of `D` records.
type TimelyInput<D> = InputHandle<u64, CapacityContainerBuilder<Vec<D>>>;

/// Default bytes of input per epoch.
pub const DEFAULT_EPOCH_BYTES: u64 = 32 << 20;

/// Default number of epochs per commit (file source; Kafka source catching up).
pub const DEFAULT_COMMIT_EVERY: u64 = 8;

/// Default time between the commits of a job that keeps up with its source (Kafka,
/// HTTP).
pub const DEFAULT_COMMIT_INTERVAL: Duration = Duration::from_secs(1);

/// A Kafka job that keeps up with its topics cuts this many epochs per commit interval
/// by default ([`RunOptions::epoch_interval`]).
pub const KAFKA_EPOCHS_PER_COMMIT: u32 = 4;

/// Default epoch length of an HTTP source (`serve`): how long a posted record waits,
/// at most, before the job reads it. Its request is answered once the epoch's verdicts
/// are decided and journaled ([`crate::journal`]).
pub const DEFAULT_HTTP_EPOCH_INTERVAL: Duration = Duration::from_millis(50);

/// Default time a superseded file stays for readers of older commits: far beyond any
/// query of ours (30 s at most in `serve`), room for slow external readers.
pub const DEFAULT_KEEP_SUPERSEDED: Duration = Duration::from_secs(3600);

/// Where events come from.
#[derive(Clone, Debug)]
pub enum Source {
    /// A JSONL file, read to its end.
    File(PathBuf),
    /// A Kafka topic, read until stopped.
    Kafka(KafkaUrl),
    /// Records posted over HTTP (`openmonetize serve`), read until stopped.
    Http(Arc<Ingress>),
}

impl std::str::FromStr for Source {
    type Err = anyhow::Error;

    /// `file:PATH` or `kafka://HOST:PORT/TOPIC`.
    fn from_str(s: &str) -> anyhow::Result<Self> {
        if let Some(path) = s.strip_prefix("file:") {
            Ok(Source::File(PathBuf::from(path)))
        } else if s.starts_with("kafka://") {
            Ok(Source::Kafka(s.parse()?))
        } else {
            bail!("`{s}` is not a source: use file:PATH (JSONL) or kafka://HOST:PORT/TOPIC")
        }
    }
}

/// Options of one run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The validated configuration.
    pub config: Config,
    /// The events source.
    pub events: Source,
    /// The commands source (grants, voids, subscriptions, retractions), if any.
    pub commands: Option<Source>,
    /// Where the tables go (`--data`).
    pub data: String,
    /// Number of timely workers (of this process, in cluster mode).
    pub workers: usize,
    /// Cluster mode: this process's place among several (`None`: the job is this
    /// process).
    pub cluster: Option<Cluster>,
    /// Input bytes per epoch (file), or at most this much payload per worker and epoch
    /// (Kafka).
    pub epoch_bytes: u64,
    /// File source: commit every this many epochs (and after the last one). Between
    /// commits the usage sink only accumulates, so a partition is rewritten once per
    /// commit. Kafka source: the same while the job catches up a backlog (more messages
    /// wait beyond what an epoch read); once it keeps up, every epoch commits.
    pub commit_every: u64,
    /// Kafka and HTTP sources: the time between commits while the job keeps up (of
    /// epochs that read anything since the last one); the epoch nearest to this much
    /// time after the last commit commits. A Kafka job catching up a backlog reads this
    /// long per epoch (or `epoch_bytes`) and commits every `commit_every` epochs.
    pub commit_interval: Duration,
    /// The length of an epoch; `None`: the source's default
    /// ([`RunOptions::epoch_interval`]). HTTP: its requests are answered once it is
    /// journaled, before it is committed. Kafka: while the job keeps up; at most
    /// `commit_interval`.
    pub epoch_interval: Option<Duration>,
    /// Kafka source: stop once every partition is read to its end.
    pub until_caught_up: bool,
    /// Set (e.g. by a signal handler) to stop after committing the current epoch.
    pub stop: Arc<AtomicBool>,
    /// Print progress lines to stderr.
    pub progress: bool,
    /// Where the view sinks publish balances and entitlements for live reads.
    pub live: Option<Arc<LiveViews>>,
    /// Where worker 0 records each commit for `/metrics`.
    pub metrics: Option<Arc<JobMetrics>>,
    /// Run the job's threads (timely workers, the runtime that writes files) under
    /// `SCHED_IDLE`, below the request threads of the same process
    /// ([`crate::priority`]).
    pub idle_priority: bool,
    /// How long a file a commit superseded (and an older commit record) stays for
    /// readers of older commits before it is deleted; `None`: forever
    /// ([`om_sinks::retention`]).
    pub keep_superseded: Option<Duration>,
}

impl RunOptions {
    /// Options with the defaults: one worker per core, default epochs, progress on.
    pub fn new(config: Config, events: Source, data: impl Into<String>) -> Self {
        RunOptions {
            config,
            events,
            commands: None,
            data: data.into(),
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cluster: None,
            epoch_bytes: DEFAULT_EPOCH_BYTES,
            commit_every: DEFAULT_COMMIT_EVERY,
            commit_interval: DEFAULT_COMMIT_INTERVAL,
            epoch_interval: None,
            until_caught_up: false,
            stop: Arc::default(),
            progress: true,
            live: None,
            metrics: None,
            idle_priority: false,
            keep_superseded: Some(DEFAULT_KEEP_SUPERSEDED),
        }
    }

    /// The length of an epoch: `epoch_interval`, or by default
    /// [`DEFAULT_HTTP_EPOCH_INTERVAL`] for HTTP and `commit_interval` /
    /// [`KAFKA_EPOCHS_PER_COMMIT`] for Kafka (a file is cut by size instead).
    ///
    /// A Kafka job that keeps up used to cut one epoch per commit: its last events
    /// waited for the epoch's cut, and then for the commit's own work. Shorter epochs
    /// spread that work (decoding, verdicts, the `events` rows, the window updates)
    /// over the interval, so that less of it is left once the committing epoch is cut:
    /// at 100,000 events/s p50 and p99 freshness fell by ~0.08 s on average, p99 in 9
    /// of 10 pairs, for no measurable CPU (docs/performance-notes.md, session 31).
    pub fn epoch_interval(&self) -> Duration {
        match (self.epoch_interval, &self.events) {
            (Some(interval), _) => interval,
            (None, Source::Kafka(_)) => self.commit_interval / KAFKA_EPOCHS_PER_COMMIT,
            (None, _) => DEFAULT_HTTP_EPOCH_INTERVAL,
        }
    }
}

/// Whether the epoch whose reading ended `since_commit` after the last commit was
/// decided is the one to commit, for commits every `commit_interval` and epochs
/// `epoch_interval` long: the first whose end is at most half an epoch short of the
/// interval, so that commits are `commit_interval` apart on average (not an epoch
/// more, as waiting for the interval to be over would make them).
fn commit_due(since_commit: Duration, commit_interval: Duration, epoch_interval: Duration) -> bool {
    since_commit + epoch_interval / 2 >= commit_interval
}

/// What a run did.
#[derive(Clone, Debug)]
pub struct RunSummary {
    /// The last commit record.
    pub commit: CommitRecord,
    /// Wall time.
    pub elapsed: Duration,
    /// Input bytes read.
    pub bytes: u64,
}

/// The opened source, shared by the workers.
enum Input {
    File(JsonlFile),
    Kafka { url: KafkaUrl, partitions: u32 },
    Http(Arc<Ingress>),
}

impl Input {
    /// The name of the source in the tables' `source` column and the commit record.
    fn name(&self) -> String {
        match self {
            Input::File(file) => format!("file:{}", file.path().display()),
            Input::Kafka { url, .. } => url.to_string(),
            Input::Http(ingress) => ingress.source_name(),
        }
    }

    /// Which kind of source it is, for error messages.
    fn kind(&self) -> &'static str {
        match self {
            Input::File(_) => "files",
            Input::Kafka { .. } => "Kafka topics",
            Input::Http(_) => "HTTP queues",
        }
    }

    /// Kafka: where each of `partitions` resumes, from the commit a job resumes from
    /// (none: from its beginning).
    fn resume_offsets(
        url: &KafkaUrl,
        partitions: impl Iterator<Item = u32>,
        resume: &Option<CommitRecord>,
    ) -> BTreeMap<u32, Option<u64>> {
        partitions
            .map(|p| {
                let committed = resume
                    .as_ref()
                    .and_then(|c| c.sources.get(&url.partition_name(p)).copied());
                (p, committed)
            })
            .collect()
    }

    fn open(source: &Source, what: &str) -> anyhow::Result<Input> {
        Ok(match source {
            Source::File(path) => Input::File(
                JsonlFile::open(path)
                    .with_context(|| format!("opening {what} file {}", path.display()))?,
            ),
            Source::Kafka(url) => Input::Kafka {
                partitions: url.partition_count(Duration::from_secs(10))?,
                url: url.clone(),
            },
            Source::Http(ingress) => Input::Http(Arc::clone(ingress)),
        })
    }
}

/// Puts the calling job thread under `SCHED_IDLE`; a failure only costs request
/// latency, so it is reported, not fatal.
fn lower_priority() {
    if let Err(e) = crate::priority::idle_this_thread() {
        eprintln!("warning: could not put a job thread under SCHED_IDLE: {e}");
    }
}

/// Runs the job: over a file until its end, over Kafka until stopped; returns the last
/// commit.
#[expect(clippy::too_many_lines, reason = "to be split into stages (issue #9)")]
pub fn run(opts: RunOptions) -> anyhow::Result<RunSummary> {
    if opts.workers == 0 {
        bail!("--workers must be at least 1");
    }
    if let Source::Kafka(_) = opts.events
        && opts.epoch_interval() > opts.commit_interval
    {
        bail!(
            "--epoch-interval {:?} is longer than --commit-interval {:?}: a Kafka job commits at most once per epoch; shorten the epochs or lengthen the commit interval",
            opts.epoch_interval(),
            opts.commit_interval
        );
    }
    // The job's workers, in every process: checkpoints are split by them.
    let all_workers = opts.workers * opts.cluster.as_ref().map_or(1, |c| c.processes);
    if opts.cluster.is_some() {
        if let Source::Http(_) = opts.events {
            bail!("`serve` runs in one process; cluster mode is for `run`");
        }
        if opts.data.starts_with("memory://") {
            bail!(
                "--data {}: a memory:// location lives in one process; a cluster needs one every process reaches (a shared directory, or s3://)",
                opts.data
            );
        }
    }
    let start = Instant::now();
    let input = Arc::new(Input::open(&opts.events, "events")?);
    let commands = Arc::new(
        opts.commands
            .as_ref()
            .map(|c| Input::open(c, "commands"))
            .transpose()?,
    );
    if let Some(c) = commands.as_ref()
        && input.kind() != c.kind()
    {
        bail!(
            "--events and --commands must be sources of one kind (both files or both Kafka topics), not {} and {}",
            input.kind(),
            c.kind()
        );
    }
    let store = DataStore::open(&opts.data)?;
    let idle_priority = opts.idle_priority;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .on_thread_start(move || {
            if idle_priority {
                lower_priority();
            }
        })
        .build()?;
    let resume = match runtime.block_on(CommitRecord::latest(&store))? {
        None => None,
        Some(prev) => {
            if let Source::File(_) = &opts.events {
                bail!(
                    "{} already holds tables (commit of epoch {}); a file run needs an empty location: delete it to start over",
                    opts.data,
                    prev.epoch
                );
            }
            let cannot = |why: anyhow::Error| {
                anyhow::anyhow!("cannot resume the job in {}: {why:#}", opts.data)
            };
            checkpoint::check_resumable(&prev, all_workers, &opts.config).map_err(cannot)?;
            let topics: Vec<String> = std::iter::once(input.name())
                .chain(commands.as_ref().as_ref().map(Input::name))
                .map(|t| format!("{t}#"))
                .collect();
            if let Some(other) = prev
                .sources
                .keys()
                .find(|s| !topics.iter().any(|t| s.starts_with(t.as_str())))
            {
                return Err(cannot(anyhow::anyhow!(
                    "it was reading {other}, not {}",
                    topics.join(" and ").replace('#', "")
                )));
            }
            if opts.progress {
                eprintln!(
                    "resuming from the commit of epoch {} ({} records committed)",
                    prev.epoch,
                    prev.counts.accepted + prev.counts.rejected + prev.counts.late
                );
            }
            Some(prev)
        }
    };
    // HTTP queues replay the journal's epochs since the last commit, then number their
    // records on from there.
    if let Input::Http(events) = &*input {
        let position = |ingress: &Ingress| {
            resume
                .as_ref()
                .and_then(|c| c.sources.get(&ingress.partition_name()).copied())
                .unwrap_or(0)
        };
        let commands = match commands.as_ref() {
            Some(Input::Http(c)) => Some(c),
            _ => None,
        };
        let found = runtime.block_on(journal::find(
            &store,
            position(events),
            commands.map_or(0, |c| position(c)),
        ))?;
        runtime
            .block_on(store.delete_all(found.stale))
            .context("deleting stale journal segments")?;
        if opts.progress && !found.chain.is_empty() {
            eprintln!(
                "replaying {} journaled epochs ({} events, {} commands) posted after the last commit",
                found.chain.len(),
                found
                    .chain
                    .iter()
                    .map(|s| s.events.ends.len())
                    .sum::<usize>(),
                found
                    .chain
                    .iter()
                    .map(|s| s.commands.ends.len())
                    .sum::<usize>(),
            );
        }
        let (mut next_event, mut next_command) =
            (position(events), commands.map_or(0, |c| position(c)));
        let mut replay_events = Vec::new();
        let mut replay_commands = Vec::new();
        for segment in found.chain {
            (next_event, next_command) = (segment.events.end(), segment.commands.end());
            replay_events.push((segment.events.into(), segment.ingested_at));
            replay_commands.push((segment.commands.into(), segment.ingested_at));
        }
        events.replay(replay_events);
        events.open(next_event);
        if let Some(commands) = commands {
            commands.replay(replay_commands);
            commands.open(next_command);
        }
    }
    // What the location holds beyond the commit resumed from (files superseded before
    // the job stopped, or written by an epoch that never committed) counts as superseded
    // now; the committer, on worker 0, deletes it after the keep period.
    let sweeps =
        opts.keep_superseded.is_some() && opts.cluster.as_ref().is_none_or(|c| c.process == 0);
    let superseded = match &resume {
        Some(record) if sweeps => {
            let mut s = Superseded::new(opts.keep_superseded);
            let unnamed = runtime
                .block_on(om_sinks::retention::unnamed(&store, record))
                .with_context(|| format!("listing {}", opts.data))?;
            s.superseded(unnamed, Instant::now());
            Some(s)
        }
        _ => None,
    };
    let superseded = Arc::new(Mutex::new(superseded));
    let resume = Arc::new(resume);
    let handle = runtime.handle().clone();
    let bytes = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let timely_config = match &opts.cluster {
        Some(cluster) => cluster.timely_config(opts.workers),
        None => timely::Config::process(opts.workers),
    };
    let in_cluster = opts.cluster.is_some();
    let _quiet = in_cluster.then(crate::cluster::QuietNetworkPanics::install);
    let opts = Arc::new(opts);
    let failed = Arc::new(AtomicBool::new(false));
    // Scheduled exports: one scheduler per job (process 0 of a cluster).
    let exports = match &opts.cluster {
        Some(c) if c.process > 0 => None,
        _ => crate::exports::Scheduler::start(
            Arc::new(opts.config.clone()),
            opts.data.clone(),
            opts.progress,
        ),
    };
    // What each worker of this process ended with, in the order they ended. Workers
    // report here rather than through their join handles: in cluster mode a failed
    // worker ends in a panic, and a lost connection makes timely's network threads
    // panic when the workers are joined, which loses the join results.
    let outcomes: Arc<Mutex<Vec<WorkerOutcome>>> = Arc::default();
    // (In cluster mode, timely connects to the other processes here, waiting for them,
    // and the watch ends the process if that takes longer than the connect timeout.)
    let connected = Arc::new(AtomicBool::new(false));
    if let Some(cluster) = &opts.cluster {
        cluster.watch_connecting(Arc::clone(&connected));
    }
    let guards = timely::execute(timely_config, {
        let opts = Arc::clone(&opts);
        let failed = Arc::clone(&failed);
        let bytes = Arc::clone(&bytes);
        let outcomes = Arc::clone(&outcomes);
        move |worker| {
            if opts.idle_priority {
                lower_priority();
            }
            let _flag = FailFlag(&failed);
            let index = worker.index();
            let report = |outcome| outcomes.lock().expect("outcomes lock").push(outcome);
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                run_worker(
                    &mut *worker,
                    &opts,
                    &input,
                    &commands,
                    &resume,
                    &store,
                    &handle,
                    &failed,
                    &bytes,
                    &superseded,
                )
            }));
            let result = match ran {
                Ok(result) => result,
                Err(panic) => {
                    let message = panic_message(&*panic);
                    if !crate::cluster::is_network_panic(&message) {
                        crate::cluster::FAILED_HERE.store(true, Ordering::SeqCst);
                    }
                    report(WorkerOutcome::Panicked(index, message));
                    std::panic::resume_unwind(panic);
                }
            };
            if result.is_err() {
                failed.store(true, Ordering::SeqCst);
            }
            // After a successful run the dataflows are complete; after a failure here or
            // on another worker (which may come after this worker's last step) they never
            // will be, and timely would keep stepping this thread forever waiting for them.
            for dataflow in worker.installed_dataflows() {
                worker.drop_dataflow(dataflow);
            }
            match result {
                // The other processes must stop too. A worker that returns tells them
                // it is done, and they would wait for its epochs forever; one that
                // panics poisons its channels, so timely closes this process's
                // connections uncleanly and every other process fails at its next step.
                Err(e) if in_cluster && !e.is::<Aborted>() => {
                    crate::cluster::FAILED_HERE.store(true, Ordering::SeqCst);
                    let message = format!("{e:#}");
                    report(WorkerOutcome::Done(Err(e)));
                    std::panic::resume_unwind(Box::new(message));
                }
                result => report(WorkerOutcome::Done(result)),
            }
        }
    })
    .map_err(|e| anyhow::anyhow!("starting workers: {e}"))?;
    connected.store(true, Ordering::SeqCst);
    // Joining drops timely's network threads too, which panic if a connection to
    // another process broke.
    let connections_broke =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || guards.join())).is_err();
    drop(runtime);
    let mut commit = None;
    let mut errors = Vec::new();
    let outcomes = std::mem::take(&mut *outcomes.lock().expect("outcomes lock"));
    for outcome in outcomes {
        match outcome {
            WorkerOutcome::Done(Ok(Some(c))) => commit = Some(c),
            WorkerOutcome::Done(Ok(None)) => {}
            WorkerOutcome::Done(Err(e)) => errors.push(e),
            // timely's own words for a broken connection, as seen by a worker.
            WorkerOutcome::Panicked(_, message)
                if message.contains("MergeQueue poisoned")
                    || message.contains("timely communication error") =>
            {
                errors.push(ClusterLost.into())
            }
            WorkerOutcome::Panicked(index, message) => {
                errors.push(anyhow::anyhow!("worker {index} panicked: {message}"))
            }
        }
    }
    // The last firing of each export schedule, after the last commit.
    if let Some(exports) = exports {
        exports.finish();
    }
    if connections_broke {
        errors.push(ClusterLost.into());
    }
    // A worker that stopped because another failed reports `Aborted`, or `ClusterLost`
    // when that was in another process; show the cause.
    errors.sort_by_key(|e| (e.is::<Aborted>(), e.is::<ClusterLost>()));
    if let Some(e) = errors.into_iter().next() {
        return Err(e.context("the job failed"));
    }
    let commit = match (commit, &opts.cluster) {
        (Some(c), _) => c,
        // The committer, on worker 0 in process 0, holds its capability until it has
        // written a commit: every worker is done, so the last commit record is written.
        (None, Some(cluster)) if cluster.process > 0 => {
            let store = DataStore::open(&opts.data)?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime
                .block_on(CommitRecord::latest(&store))?
                .context("process 0 committed nothing")?
        }
        (None, _) => bail!("worker 0 committed nothing"),
    };
    Ok(RunSummary {
        commit,
        elapsed: start.elapsed(),
        bytes: bytes.load(Ordering::Relaxed),
    })
}

/// A digest of what every worker of a job must agree on (the processes of a cluster are
/// started separately): the config, the sources, the data location and how the input is
/// cut into epochs and commits.
fn settings_digest(opts: &RunOptions, sources: &[String]) -> u64 {
    let text = format!(
        "{:?}|{sources:?}|{}|{}|{}|{}|{:?}|{:?}|{}",
        opts.config,
        opts.data,
        opts.workers,
        opts.epoch_bytes,
        opts.commit_every,
        opts.commit_interval,
        opts.epoch_interval(),
        opts.until_caught_up
    );
    twox_hash::XxHash3_64::oneshot(text.as_bytes())
}

/// How one worker of this process ended.
enum WorkerOutcome {
    /// It returned: worker 0's last commit, or an error.
    Done(anyhow::Result<Option<CommitRecord>>),
    /// It panicked: (worker index, panic message).
    Panicked(usize, String),
}

/// The text of a panic payload.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(no message)".into())
}

/// Raised in every process of a cluster when another one stops or is unreachable.
#[derive(Debug, thiserror::Error)]
#[error("{}", crate::cluster::LOST)]
struct ClusterLost;

/// Raised on every other worker when one worker fails.
#[derive(Debug, thiserror::Error)]
#[error("stopped because another worker failed")]
struct Aborted;

/// Sets the shared failure flag when its worker unwinds from a panic (an error return
/// sets it in the worker closure), so the other workers stop instead of waiting forever.
struct FailFlag<'a>(&'a AtomicBool);

impl Drop for FailFlag<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.store(true, Ordering::SeqCst);
        }
    }
}

/// Steps the worker while `busy` holds; fails if another worker failed.
fn step_while(
    worker: &mut timely::worker::Worker,
    failed: &AtomicBool,
    mut busy: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    while busy() {
        if failed.load(Ordering::SeqCst) {
            return Err(Aborted.into());
        }
        // With nothing to do the thread sleeps until a message arrives (timely wakes it)
        // or for at most a millisecond, instead of spinning: a spinning worker takes
        // the core from the other workers' file writes, the HTTP server and the Kafka
        // client threads.
        worker.step_or_park(Some(PARK));
    }
    Ok(())
}

/// The longest a waiting worker sleeps before it checks again.
const PARK: Duration = Duration::from_millis(1);

/// One worker's valid events of one epoch, in arrival order, waiting for their fates.
struct Chunk {
    /// (arrival position, event time).
    arrivals: Vec<(u64, Micros)>,
    /// Source partition of each event (0 for a file).
    partitions: Vec<u32>,
    /// Each event's index among the epoch's records, to re-read the few that turn out
    /// duplicate or late.
    lines: Vec<usize>,
    /// Customer fingerprints.
    customers: Vec<u64>,
    /// End of each event's readings in `readings`.
    readings_end: Vec<usize>,
    /// (meter, dimensions fingerprint, value) of every reading.
    readings: Vec<(u16, u64, UpdateValue)>,
    /// Credits each event burns.
    burns: Vec<Decimal9>,
    /// (event index, model key, tokens) of the events that are model calls.
    calls: Vec<(usize, u32, [Decimal9; 3])>,
    /// The dedup/lateness chunks among the events: (chunk, range of event indexes); a
    /// Kafka partition's events may form several runs.
    chunks: Vec<(u32, Range<usize>)>,
}

/// One worker's epoch as decoded so far: a Kafka reader decodes each message as it reads
/// it, the other readers once they have read the epoch.
struct EpochDecode<'s> {
    chunk: Chunk,
    /// The accepted candidates' `events` rows (those that turn out duplicate or late are
    /// left out when the batch is finished).
    events: EventsBuilder<'s>,
    rejected: Vec<RejectedRecord>,
    /// HTTP: each record's verdict, by index among the epoch's records.
    http_verdicts: Vec<IngressVerdict>,
}

/// What decoding a record takes from its worker.
struct DecodeContext<'a> {
    decoder: &'a Decoder,
    scratch: &'a mut Scratch,
    names: &'a mut NameCache,
    new_names: &'a mut Vec<NameRecord>,
    view_updates: &'a mut ViewUpdates,
    probes: &'a mut TimelyInput<DedupProbe>,
    config: &'a Config,
    /// By meter index: whether the meter aggregates `latest`.
    is_latest: &'a [bool],
    /// The worker, and how many there are.
    index: usize,
    peers: usize,
    /// Whether a record's dedup/lateness chunk is its Kafka partition (else the worker's
    /// slice of the epoch).
    chunk_is_partition: bool,
}

impl<'s> EpochDecode<'s> {
    fn new(sources: &'s [String], capacity: usize) -> Self {
        EpochDecode {
            chunk: Chunk {
                arrivals: Vec::with_capacity(capacity),
                partitions: Vec::with_capacity(capacity),
                lines: Vec::with_capacity(capacity),
                customers: Vec::with_capacity(capacity),
                readings_end: Vec::with_capacity(capacity),
                readings: Vec::with_capacity(capacity * 3),
                burns: Vec::with_capacity(capacity),
                calls: Vec::new(),
                chunks: Vec::new(),
            },
            events: EventsBuilder::new(sources, capacity),
            rejected: Vec::new(),
            http_verdicts: Vec::new(),
        }
    }

    /// Decodes record `i` of the epoch, read from `partition` at `offset`; a record
    /// posted with a tenant's API key carries `key_tenant`. A valid event claims its
    /// dedup key and keeps its readings, burn and model call for the epoch's later
    /// stages; a bad one is rejected.
    fn decode(
        &mut self,
        cx: &mut DecodeContext<'_>,
        i: usize,
        (partition, offset, line): (u32, u64, &[u8]),
        key_tenant: Option<&str>,
    ) -> anyhow::Result<()> {
        let position = SourcePosition {
            source: 0,
            partition,
            offset,
        };
        let decoded = cx
            .decoder
            .decode_ref(line, cx.scratch)
            .and_then(|e| match key_tenant {
                Some(key_tenant) if e.tenant_id != key_tenant => Err(Rejection {
                    reason: format!(
                        "tenant_id {} does not match the API key's tenant {key_tenant}; an event posted with a tenant's key must carry that tenant_id",
                        e.tenant_id
                    ),
                    tenant_id: Some(key_tenant.to_string()),
                    event_id: Some(e.id.to_string()),
                }),
                _ => Ok(e),
            });
        let e = match decoded {
            Ok(e) => e,
            Err(r) => {
                if let Some(v) = self.http_verdicts.get_mut(i) {
                    *v = IngressVerdict::Rejected(r.reason.clone());
                }
                // A record posted with a tenant's key is that tenant's rejection,
                // whatever tenant it claims: no tenant writes into another's rows.
                self.rejected.push(RejectedRecord {
                    tenant_id: key_tenant.map(str::to_string).or(r.tenant_id),
                    event_id: r.event_id,
                    raw: lossy_truncated(line),
                    reason: r.reason,
                    position,
                });
                return Ok(());
            }
        };
        let chunk = &mut self.chunk;
        let scratch = &*cx.scratch;
        let (customer, name) = cx.names.customer(&e.tenant_id, &e.customer_id)?;
        cx.new_names.extend(name);
        for r in &scratch.readings {
            let dims = cx.names.dimensions(
                &scratch.text[r.dimensions.clone()],
                cx.peers as u32,
                cx.new_names,
            )?;
            let value = match &r.value {
                ValueRef::Number(v) if cx.is_latest[r.meter as usize] => {
                    UpdateValue::Latest(*v, e.id.as_ref().into())
                }
                ValueRef::Number(v) => UpdateValue::Number(*v),
                ValueRef::Scalar(text) => {
                    UpdateValue::Scalar(fingerprint::scalar(&scratch.text[text.clone()]))
                }
            };
            chunk.readings.push((r.meter, dims, value));
        }
        chunk.readings_end.push(chunk.readings.len());
        chunk.burns.push(scratch.burn);
        if let Some(call) = &scratch.cost {
            let provider = call.provider.clone().map(|r| &scratch.text[r]);
            let model =
                cx.view_updates
                    .model_key(cx.config, provider, &scratch.text[call.model.clone()]);
            chunk
                .calls
                .push((chunk.burns.len() - 1, model, call.tokens));
        }
        let c = if cx.chunk_is_partition {
            partition
        } else {
            cx.index as u32
        };
        let at = chunk.arrivals.len();
        match chunk.chunks.last_mut() {
            Some((last, range)) if *last == c => range.end = at + 1,
            _ => chunk.chunks.push((c, at..at + 1)),
        }
        cx.probes.send(DedupProbe {
            key: fingerprint::idempotency_key(&e.tenant_id, &e.id),
            pos: offset,
            chunk: c,
            reader: cx.index as u32,
            ts: e.timestamp,
        });
        chunk.arrivals.push((offset, e.timestamp));
        chunk.partitions.push(partition);
        chunk.lines.push(i);
        chunk.customers.push(customer);
        self.events.push(
            EventColumns {
                tenant_id: &e.tenant_id,
                id: &e.id,
                customer_id: &e.customer_id,
                event_type: &e.event_type,
                timestamp: e.timestamp,
                value: e.value,
                properties: e.properties,
            },
            &position,
        );
        Ok(())
    }
}

/// The fate of each of an epoch's events (`arrivals`: arrival position and event time),
/// given its chunks' runs (`runs`: chunk, range of event indexes), the positions of each
/// chunk's duplicates, and the watermark each chunk starts from. A chunk's events may
/// lie in several runs (a Kafka reader's partitions interleave in arrival order); they
/// are judged as one sequence, in order.
fn classify_runs(
    arrivals: &[(u64, Micros)],
    runs: &[(u32, Range<usize>)],
    duplicates: &mut BTreeMap<u32, Vec<u64>>,
    start_of: impl Fn(u32) -> Option<Micros>,
    lateness: Micros,
) -> Vec<Fate> {
    let mut by_chunk: BTreeMap<u32, Vec<Range<usize>>> = BTreeMap::new();
    for (c, range) in runs {
        by_chunk.entry(*c).or_default().push(range.clone());
    }
    let mut fates = vec![Fate::Accepted; arrivals.len()];
    for (c, ranges) in by_chunk {
        let events: Vec<(u64, Micros)> = ranges
            .iter()
            .flat_map(|r| arrivals[r.clone()].iter().copied())
            .collect();
        let judged = classify(
            &events,
            duplicates.get_mut(&c).map_or(&mut [][..], |d| &mut d[..]),
            start_of(c),
            lateness,
        );
        for (i, fate) in ranges.into_iter().flatten().zip(judged) {
            fates[i] = fate;
        }
    }
    fates
}

/// Moves a timely input to the first epoch of a resumed job.
trait AdvanceTo {
    fn advance(&mut self, epoch: u64);
}

impl<D: Clone + 'static> AdvanceTo for TimelyInput<D> {
    fn advance(&mut self, epoch: u64) {
        self.advance_to(epoch);
    }
}

/// A reader checkpoint by reference, saved in the layout of [`ReaderCheckpoint`].
#[derive(serde::Serialize)]
struct ReaderCheckpointRef<'a> {
    dedup: &'a DedupState,
    watermarks: &'a Watermarks,
    grants: &'a BTreeSet<(String, String)>,
    retractions: &'a Retractions,
}

/// How long a Kafka reader reads before it steps the dataflow again.
const READ_SLICE: Duration = Duration::from_millis(5);

/// A dataflow step at least this long did work, and more may be waiting: the Kafka
/// reader then takes only the messages already fetched before it steps again.
const BUSY_STEP: Duration = Duration::from_micros(200);

/// Records a grant's (tenant, grant id) as seen, and in `new` (the grants since the last
/// checkpoint, in a job that saves them); false when it was seen before.
fn first_grant(
    seen: &mut BTreeSet<(String, String)>,
    new: Option<&mut Vec<(String, String)>>,
    tenant_id: &str,
    grant_id: &str,
) -> bool {
    let key = (tenant_id.to_string(), grant_id.to_string());
    if seen.contains(&key) {
        return false;
    }
    if let Some(new) = new {
        new.push(key.clone());
    }
    seen.insert(key);
    true
}

/// What a worker read in one epoch.
struct EpochRead<'a> {
    /// (partition, offset, record) in arrival order.
    records: Vec<(u32, u64, &'a [u8])>,
    /// The end of the file, or every partition of the worker read to its end.
    caught_up: bool,
    /// Kafka: more messages wait beyond what was read than the epoch read, or the epoch
    /// was cut by its byte budget with messages still waiting: the job is catching up a
    /// backlog rather than keeping up with the topic.
    behind: bool,
    /// The worker's partitions read to their end (Kafka).
    idle: Vec<u32>,
    /// (source name, position read up to), for the commit record.
    positions: Vec<(String, u64)>,
    /// HTTP: the tenant each record must belong to (the API key's; none for an admin
    /// key), by record; empty for the other sources.
    tenants: Vec<Option<&'a str>>,
}

/// One worker's report at the end of an epoch's reading, seen by every worker.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Status {
    /// Records (events and commands) read in the epoch.
    read: u64,
    /// Retractions wait for a commit (worker 0).
    retracting: bool,
    /// Every partition of the worker is read to its end (Kafka).
    caught_up: bool,
    /// The worker is catching up a backlog ([`EpochRead::behind`]).
    behind: bool,
    /// Kafka: messages beyond what the worker read in the epoch.
    lag: u64,
    /// Kafka, HTTP (worker 0): the epoch is the one to commit by the clock
    /// ([`commit_due`]).
    commit_due: bool,
    /// The worker's partitions read to their end (Kafka).
    idle: Vec<u32>,
    /// A stop was requested.
    stop: bool,
    /// [`settings_digest`] of the worker's job: the processes of a cluster must agree.
    settings: u64,
}

/// A worker's side of the source.
enum Reader<'a> {
    File {
        file: &'a JsonlFile,
        buf: LineBuf,
        epochs: u64,
    },
    Kafka {
        url: &'a KafkaUrl,
        reader: Option<PartitionReader>,
        buf: MessageBuf,
    },
    Http {
        /// The queue: worker 0 takes each epoch's records off it, the other workers
        /// claim them from it, and each decodes its slice.
        ingress: &'a Ingress,
        /// The records of the epoch.
        records: Option<Arc<ingress::EpochRecords>>,
    },
}

#[allow(clippy::too_many_arguments)]
#[expect(clippy::too_many_lines, reason = "to be split into stages (issue #9)")]
fn run_worker(
    worker: &mut timely::worker::Worker,
    opts: &RunOptions,
    input: &Input,
    commands: &Option<Input>,
    resume: &Option<CommitRecord>,
    store: &DataStore,
    runtime: &tokio::runtime::Handle,
    failed: &AtomicBool,
    bytes_read: &std::sync::atomic::AtomicU64,
    superseded_at_start: &Mutex<Option<Superseded>>,
) -> anyhow::Result<Option<CommitRecord>> {
    let index = worker.index();
    let peers = worker.peers();
    let config = &opts.config;
    let decoder = Decoder::new(config.clone());
    let lateness = config.pipeline.allowed_lateness;
    let is_latest: Vec<bool> = config
        .meters
        .iter()
        .map(|m| m.aggregation == Aggregation::Latest)
        .collect();
    let tracked = tracked_meters(config);
    let mut view_updates = ViewUpdates::default();
    let epoch_bytes = opts.epoch_bytes.max(1);
    let epoch_interval = opts.epoch_interval();
    let mut reader = match input {
        Input::File(file) => Reader::File {
            file,
            buf: LineBuf::default(),
            epochs: file.len().div_ceil(epoch_bytes).max(1),
        },
        Input::Kafka { url, partitions } => {
            let mine = Input::resume_offsets(
                url,
                (0..*partitions).filter(|p| *p as usize % peers == index),
                resume,
            );
            Reader::Kafka {
                url,
                reader: if mine.is_empty() {
                    None
                } else {
                    Some(PartitionReader::open(url, mine)?)
                },
                buf: MessageBuf::default(),
            }
        }
        Input::Http(ingress) => Reader::Http {
            ingress,
            records: None,
        },
    };
    let source_name = input.name();
    let mut commands_reader = match commands {
        Some(input) if index == 0 => Some(CommandReader::open(input, resume)?),
        _ => None,
    };
    let command_decoder = CommandDecoder::new(config);
    let sources: Vec<String> = std::iter::once(source_name.clone())
        .chain(commands.as_ref().map(Input::name))
        .collect();
    let settings = settings_digest(opts, &sources);
    let file_boundary = |e: u64, w: usize| -> u64 {
        let Input::File(file) = input else { return 0 };
        let base = e * epoch_bytes;
        (base + epoch_bytes * w as u64 / peers as u64).min(file.len())
    };

    let info = Rc::new(RefCell::new(EpochInfo::default()));
    let last_commit = Rc::new(RefCell::new(None));
    let verdicts: Rc<RefCell<BTreeMap<u64, Vec<Verdict>>>> = Rc::default();
    let statuses: Rc<RefCell<BTreeMap<u64, Vec<Status>>>> = Rc::default();

    // Dataflow 1: dedup probes out, verdicts back to the worker that read the event;
    // every worker's status to every worker.
    // State restored from the checkpoint of the commit the job resumes from.
    let checkpoints = !matches!(input, Input::File(_));
    let first_epoch = resume.as_ref().map_or(0, |c| c.epoch + 1);
    let (
        mut dedup_state,
        mut watermarks,
        mut grants_seen,
        mut retractions,
        mut reader_chain,
        usage_restore,
        customers_restore,
    ) = match resume {
        Some(commit) => {
            let reader =
                checkpoint::load::<ReaderCheckpoint>(store, runtime, commit, "reader", index)?;
            let mut state = reader.base;
            let mut chain = reader.chain;
            chain.count_base(state.dedup.len());
            for delta in &reader.deltas {
                state.apply(checkpoint::decode::<ReaderDelta>(delta)?);
            }
            let usage = checkpoint::load(store, runtime, commit, "usage", index)?;
            let customers = checkpoint::load(store, runtime, commit, "customers", index)?;
            (
                state.dedup,
                state.watermarks,
                state.grants,
                state.retractions,
                chain,
                Some(UsageRestore::decode(usage)?),
                Some(ViewRestore::decode(customers)?),
            )
        }
        None => (
            DedupState::new(config.pipeline.dedup_horizon),
            Watermarks::new(match input {
                Input::File(_) | Input::Http(_) => Order::Global,
                Input::Kafka { partitions, .. } => Order::PerChunk(*partitions),
            }),
            BTreeSet::new(),
            Retractions::default(),
            Chain::new("reader", index),
            None,
            None,
        ),
    };
    if checkpoints {
        dedup_state.start_journal();
    }
    // Grants accepted since the last checkpoint (its delta names them).
    let mut grants_new: Vec<(String, String)> = Vec::new();
    let dedup_state = Rc::new(RefCell::new(dedup_state));

    let mut probe_input: TimelyInput<DedupProbe> = InputHandle::new();
    let mut status_input: TimelyInput<Status> = InputHandle::new();
    let dedup_probe = ProbeHandle::new();
    worker.dataflow::<u64, _, _>(|scope| {
        let verdicts_in = dedup(
            probe_input.to_stream(scope),
            Rc::clone(&dedup_state),
            peers as u32,
        );
        collect(
            verdicts_in,
            Exchange::new(|v: &Verdict| v.target() as u64),
            Rc::clone(&verdicts),
        )
        .probe_with(&dedup_probe);
        collect(
            status_input.to_stream(scope).broadcast(),
            Pipeline,
            Rc::clone(&statuses),
        )
        .probe_with(&dedup_probe);
    });

    // Dataflow 2: readings and names -> usage sink; file changes + counts -> committer.
    let mut update_input: TimelyInput<ReadingUpdate> = InputHandle::new();
    let mut name_input: TimelyInput<NameRecord> = InputHandle::new();
    let mut meta_input: TimelyInput<Meta> = InputHandle::new();
    let mut customer_input: TimelyInput<CustomerInput> = InputHandle::new();
    let mut command_input: TimelyInput<Command> = InputHandle::new();
    let usage_probe = ProbeHandle::new();
    worker.dataflow::<u64, _, _>(|scope| {
        let sink_cfg = UsageSinkConfig {
            store: store.clone(),
            runtime: runtime.clone(),
            meters: config.meters.iter().map(|m| m.name.clone()).collect(),
            aggregations: config.meters.iter().map(|m| m.aggregation).collect(),
            windows: config.meters.iter().map(|m| m.windows.clone()).collect(),
            allowed_lateness: lateness,
            worker: index,
            checkpoints,
            restore: usage_restore,
        };
        let files = usage_sink(
            update_input.to_stream(scope),
            name_input.to_stream(scope),
            sink_cfg,
            Rc::clone(&info),
        );
        let customer_files = view_sink(
            customer_input.to_stream(scope),
            command_input.to_stream(scope).broadcast(),
            ViewSinkConfig {
                store: store.clone(),
                runtime: runtime.clone(),
                config: Arc::new(config.clone()),
                worker: index,
                peers,
                checkpoints,
                restore: customers_restore,
                live: opts.live.clone(),
                resumed: resume.as_ref().map(|c| (c.epoch, c.watermark_micros)),
            },
            Rc::clone(&info),
        );
        let mut start = resume.clone().unwrap_or_default();
        if checkpoints {
            start.config_digest = Some(checkpoint::config_digest(config));
        }
        start.billing_digest = Some(config.billing_digest());
        // Only worker 0 commits (and deletes).
        let superseded = (index == 0)
            .then(|| superseded_at_start.lock().expect("superseded lock").take())
            .flatten()
            .unwrap_or_else(|| Superseded::new(opts.keep_superseded));
        committer(
            files
                .concat(customer_files)
                .concat(meta_input.to_stream(scope)),
            store.clone(),
            runtime.clone(),
            start,
            superseded,
            Rc::clone(&last_commit),
            Rc::clone(&info),
        )
        .probe_with(&usage_probe);
    });

    for epoch_start in [
        &mut probe_input as &mut dyn AdvanceTo,
        &mut status_input,
        &mut update_input,
        &mut name_input,
        &mut meta_input,
        &mut customer_input,
        &mut command_input,
    ] {
        epoch_start.advance(first_epoch);
    }
    let started = Instant::now();
    let mut last_report = Instant::now();
    let mut total_read = 0u64;
    // Records (events and commands) read by every worker.
    let mut job_read = 0u64;
    // Kafka, HTTP: whether anything was read since the last commit, and the epochs since;
    // when the last commit was decided.
    let (mut read_since_commit, mut uncommitted_epochs) = (false, 0u64);
    let mut last_commit_decided = Instant::now();
    // The last epoch's records: the next one's likely size.
    let mut last_capacity = 0;
    // Kafka: when the last epoch's reading ended, unless it was catching up a backlog.
    let mut live_cut: Option<Instant> = None;
    // Kafka: the most this worker reads in its next epoch. While the job catches up a
    // backlog, each worker's share of `epoch_bytes` is its backlog over the largest
    // (the workers' backlogs as of the last epoch), so that the workers finish
    // together instead of one reading the end of a larger backlog alone while every
    // commit rewrites what its events touch.
    let mut read_budget = opts.epoch_bytes.max(1);
    let mut scratch = Scratch::default();
    let mut append_only = AppendOnly::default();
    let mut names = NameCache::default();
    let mut new_names = Vec::new();
    if let Some(live) = &opts.live {
        live.started();
    }
    let mut watch = CommitWatch {
        awaiting: Vec::new(),
        journaled: None,
        segments: Vec::new(),
        store: store.clone(),
        runtime: runtime.clone(),
        cut: BTreeMap::new(),
        seen: resume.as_ref().map(|c| c.epoch),
        latest: None,
        metrics: opts.metrics.as_deref().filter(|_| index == 0),
    };
    if let (Some(metrics), Some(commit)) = (watch.metrics, resume) {
        metrics.committed(commit, None);
    }

    for epoch in first_epoch.. {
        // Commits written since the last epoch: metrics, and (serve) the requests they
        // answer.
        watch.check(&last_commit);
        let epoch_started = Instant::now();
        let mut ingested_at = chrono::Utc::now().timestamp_micros();

        // Retractions whose events are committed by now (worker 0, which reads the
        // commands): a file run looks them all up in one extra epoch after its last
        // events epoch is committed; a Kafka job once the commit covering the epoch that
        // read them exists.
        let mut retracted = Retracted::default();
        if commands_reader.is_some() {
            let due = match &reader {
                Reader::File { epochs, .. } if epoch >= *epochs => {
                    step_while(worker, failed, || {
                        last_commit
                            .borrow()
                            .as_ref()
                            .is_none_or(|c| c.epoch + 1 < epoch)
                    })?;
                    Some(u64::MAX)
                }
                Reader::File { .. } => None,
                Reader::Kafka { .. } | Reader::Http { .. } => last_commit
                    .borrow()
                    .as_ref()
                    .or(resume.as_ref())
                    .map(|c| c.epoch),
            };
            if let Some(committed) = due {
                let batch = retractions.take_due(committed);
                retracted = retract_events(
                    batch,
                    &mut retractions,
                    &RetractContext {
                        data: &opts.data,
                        runtime,
                        decoder: &decoder,
                        is_latest: &is_latest,
                        tracked: &tracked,
                        closed: watermarks.closed(),
                        lateness,
                        peers,
                    },
                    &mut names,
                    &mut new_names,
                    &mut view_updates,
                )?;
            }
        }

        // HTTP: the epoch's records (shared by the workers) and, on worker 0, their
        // requests.
        let mut http_epoch: Option<Arc<ingress::EpochRecords>> = None;
        let mut http_waiters = Vec::new();
        // The epoch's decoding, before its reading: a Kafka reader decodes as it reads.
        let mut decoded = EpochDecode::new(&sources, last_capacity);
        let mut cx = DecodeContext {
            decoder: &decoder,
            scratch: &mut scratch,
            names: &mut names,
            new_names: &mut new_names,
            view_updates: &mut view_updates,
            probes: &mut probe_input,
            config,
            is_latest: &is_latest,
            index,
            peers,
            chunk_is_partition: matches!(input, Input::Kafka { .. }),
        };
        // Kafka: messages beyond what this worker read in the epoch.
        let mut lag = 0;
        // Read this worker's records of the epoch: (partition, offset, bytes), in
        // arrival order.
        let EpochRead {
            records,
            caught_up,
            behind,
            idle,
            positions,
            tenants: record_tenants,
        } = match &mut reader {
            Reader::File { file, buf, epochs } => {
                let (from, to) = (file_boundary(epoch, index), file_boundary(epoch, index + 1));
                file.read_lines(from, to, buf)
                    .with_context(|| format!("reading {}", file.path().display()))?;
                bytes_read.fetch_add(to - from, Ordering::Relaxed);
                let end = file_boundary(epoch, peers);
                EpochRead {
                    records: buf
                        .lines()
                        .map(|(offset, line)| (0, offset, line))
                        .collect(),
                    caught_up: epoch + 1 >= *epochs,
                    behind: false,
                    idle: Vec::new(),
                    positions: vec![(source_name.clone(), end)],
                    tenants: Vec::new(),
                }
            }
            Reader::Kafka { url, reader, buf } => match reader {
                Some(r) => {
                    // Read in slices of a few milliseconds and step the dataflow in
                    // between, so that the earlier epochs' files, checkpoints and
                    // commits proceed while this epoch is read (as the HTTP reader
                    // does), instead of waiting for the whole epoch's read. While the
                    // dataflow may have work, only the messages already fetched are
                    // taken, without waiting: a slice spent waiting for messages would
                    // hold that work up (at 50,000 events/s the workers slept half the
                    // time while their commits fell behind). It may have work when the
                    // last step took a while, or when operators were activated: timely
                    // keeps a step's activations until the next step, so this also
                    // counts the step just taken, which costs at most one more turn
                    // without waiting once the dataflow is idle.
                    //
                    // A job that keeps up cuts its epochs `epoch_interval` apart, counted
                    // from the last cut rather than from the end of the last epoch's
                    // decoding: otherwise every epoch is longer by that decoding, and so
                    // is the wait of its first events. A job that falls behind still
                    // reads for half an epoch at least, and one catching up a backlog
                    // reads a whole commit interval (or `epoch_bytes`): its epochs are
                    // committed every `commit_every`, and shorter ones would only cost
                    // more barriers.
                    let deadline = match live_cut {
                        Some(cut) => (cut + epoch_interval).max(epoch_started + epoch_interval / 2),
                        None => epoch_started + opts.commit_interval,
                    };
                    buf.clear();
                    // Each slice is decoded as soon as it is read, so that what is left
                    // once the epoch is cut is its last slice's share.
                    let mut decoded_upto = 0;
                    let mut decode_read = |buf: &MessageBuf| -> anyhow::Result<()> {
                        for (i, m) in buf.messages_from(decoded_upto).enumerate() {
                            decoded.decode(&mut cx, decoded_upto + i, m, None)?;
                        }
                        decoded_upto = buf.len();
                        Ok(())
                    };
                    let mut busy = false;
                    loop {
                        let over = if busy {
                            r.read_ready(
                                buf,
                                read_budget as usize,
                                opts.until_caught_up,
                                &opts.stop,
                            )?
                        } else {
                            let slice = (Instant::now() + READ_SLICE).min(deadline);
                            r.read_more(
                                buf,
                                slice,
                                read_budget as usize,
                                opts.until_caught_up,
                                &opts.stop,
                            )?
                        };
                        decode_read(buf)?;
                        if over {
                            break;
                        }
                        if Instant::now() >= deadline {
                            // A step may have run past the deadline while the client
                            // kept fetching: the messages it holds by now belong to
                            // this epoch, not to the next one a second later.
                            r.read_ready(
                                buf,
                                read_budget as usize,
                                opts.until_caught_up,
                                &opts.stop,
                            )?;
                            decode_read(buf)?;
                            break;
                        }
                        if failed.load(Ordering::SeqCst) {
                            return Err(Aborted.into());
                        }
                        let step = Instant::now();
                        worker.step();
                        busy = step.elapsed() >= BUSY_STEP
                            || worker.activations().borrow().empty_for() == Some(Duration::ZERO);
                        watch.check(&last_commit);
                    }
                    let cut = Instant::now();
                    bytes_read.fetch_add(buf.payload_bytes() as u64, Ordering::Relaxed);
                    let positions = r
                        .positions()
                        .map(|(p, next)| (url.partition_name(p), next))
                        .collect();
                    lag = r.lag();
                    // Behind: more waits than the epoch read, or the epoch was cut by
                    // its byte budget with more waiting (the end of a backlog, read in
                    // one more epoch, is not worth a commit of its own).
                    let behind = lag > buf.len() as u64
                        || (lag > 0 && buf.payload_bytes() as u64 >= read_budget);
                    live_cut = (!behind).then_some(cut);
                    EpochRead {
                        behind,
                        records: buf.messages().collect(),
                        caught_up: r.caught_up(),
                        idle: r.idle_partitions(),
                        positions,
                        tenants: Vec::new(),
                    }
                }
                None => {
                    // More workers than partitions: nothing to read.
                    let wait = opts.commit_interval.min(Duration::from_millis(100));
                    if !opts.until_caught_up {
                        std::thread::sleep(wait);
                    }
                    EpochRead {
                        records: Vec::new(),
                        caught_up: true,
                        behind: false,
                        idle: Vec::new(),
                        positions: Vec::new(),
                        tenants: Vec::new(),
                    }
                }
            },
            Reader::Http {
                ingress,
                records: taken,
            } => {
                // Worker 0 waits out the epoch, stepping the dataflow meanwhile so that
                // earlier epochs are decided and committed and their requests answered,
                // and cuts the epoch short once `epoch_bytes` are queued (or at once
                // while journaled epochs are replayed); then it takes the records. The
                // other workers step until worker 0 has taken them.
                let deadline = epoch_started + epoch_interval;
                let epoch_records = loop {
                    watch.check(&last_commit);
                    let now = Instant::now();
                    if index == 0
                        && (now >= deadline
                            || opts.stop.load(Ordering::SeqCst)
                            || ingress.replaying()
                            || ingress.queued_bytes() as u64 >= epoch_bytes)
                    {
                        let (records, requests) = ingress.take_epoch(epoch, peers, ingested_at);
                        http_waiters = requests;
                        break records;
                    }
                    if index != 0
                        && let Some(records) = ingress.claim(epoch)
                    {
                        break records;
                    }
                    if failed.load(Ordering::SeqCst) {
                        return Err(Aborted.into());
                    }
                    let wait = deadline.saturating_duration_since(now);
                    worker.step_or_park(Some(
                        wait.clamp(Duration::from_micros(100), Duration::from_millis(1)),
                    ));
                };
                http_epoch = Some(Arc::clone(&epoch_records));
                let taken = &*taken.insert(epoch_records);
                ingested_at = taken.ingested_at();
                let batch = taken.batch();
                let positions = if index == 0 {
                    vec![(ingress.partition_name(), batch.end())]
                } else {
                    Vec::new()
                };
                let slice = taken.slice(index, peers);
                let records: Vec<(u32, u64, &[u8])> = batch
                    .records()
                    .skip(slice.start)
                    .take(slice.len())
                    .map(|(seq, r)| (0, seq, r))
                    .collect();
                bytes_read.fetch_add(
                    records.iter().map(|r| r.2.len() as u64).sum(),
                    Ordering::Relaxed,
                );
                EpochRead {
                    tenants: records.iter().map(|r| batch.tenant(r.1)).collect(),
                    records,
                    caught_up: true,
                    behind: false,
                    idle: Vec::new(),
                    positions,
                }
            }
        };
        let read_done = Instant::now();
        let capacity = records.len();
        last_capacity = capacity;

        // Decode, unless a Kafka reader did as it read; valid events claim their dedup
        // keys as they go.
        if !matches!(input, Input::Kafka { .. }) {
            if matches!(input, Input::Http(_)) {
                decoded.http_verdicts = vec![IngressVerdict::Accepted; capacity];
            }
            for (i, &record) in records.iter().enumerate() {
                decoded.decode(&mut cx, i, record, record_tenants.get(i).copied().flatten())?;
            }
        }
        let EpochDecode {
            chunk,
            events,
            mut rejected,
            mut http_verdicts,
        } = decoded;
        let http_first = records.first().map_or(0, |r| r.1);
        total_read += records.len() as u64;

        // Commands (worker 0 reads them all): valid ones go to every worker's credits
        // sink, bad ones to rejected_events with the commands source's position.
        let mut commands_caught_up = true;
        let mut command_rejects = Vec::new();
        let mut commands_accepted = 0u64;
        let mut commands_read = 0u64;
        let mut positions = positions;
        if let Some(commands) = &mut commands_reader {
            let mut read = commands.read(opts, epoch_bytes as usize)?;
            commands_caught_up = read.caught_up;
            commands_read = read.records.len() as u64;
            positions.extend(read.positions);
            let mut verdicts = Vec::with_capacity(read.records.len());
            for (i, (partition, offset, line)) in read.records.iter().enumerate() {
                let position = SourcePosition {
                    source: 1,
                    partition: *partition,
                    offset: *offset,
                };
                let rejects_before = command_rejects.len();
                let mut queued = false;
                let reject = |tenant_id, reason| RejectedRecord {
                    tenant_id,
                    event_id: None,
                    raw: lossy_truncated(line),
                    reason,
                    position: position.clone(),
                };
                let decoded = command_decoder.decode(line).and_then(|c| {
                    match read.tenants.get(i).and_then(Option::as_deref) {
                        Some(key_tenant) if c.tenant_id() != key_tenant => Err(Rejection {
                            reason: format!(
                                "tenant_id {} does not match the API key's tenant {key_tenant}; a command posted with a tenant's key must carry that tenant_id",
                                c.tenant_id()
                            ),
                            tenant_id: Some(key_tenant.to_string()),
                            event_id: None,
                        }),
                        _ => Ok(c),
                    }
                });
                match decoded {
                    Ok(Command::Grant(g))
                        if !first_grant(
                            &mut grants_seen,
                            checkpoints.then_some(&mut grants_new),
                            &g.tenant_id,
                            &g.grant_id,
                        ) =>
                    {
                        command_rejects.push(reject(
                            Some(g.tenant_id.clone()),
                            format!(
                                "grant: duplicate grant_id {} of tenant {} (a grant is issued once; void it and grant anew to change it)",
                                g.grant_id, g.tenant_id
                            ),
                        ));
                    }
                    Ok(Command::RetractEvent {
                        tenant_id,
                        event_id,
                    }) => {
                        let queued_retraction = retractions.add(Pending {
                            tenant_id: tenant_id.clone(),
                            event_id,
                            read_epoch: epoch,
                            position: position.clone(),
                            raw: lossy_truncated(line),
                        });
                        match queued_retraction {
                            Ok(()) => queued = true,
                            Err(reason) => command_rejects.push(reject(Some(tenant_id), reason)),
                        }
                    }
                    Ok(c) => {
                        commands_accepted += 1;
                        command_input.send(c);
                    }
                    Err(r) => {
                        let key_tenant = read.tenants.get(i).cloned().flatten();
                        command_rejects.push(reject(key_tenant.or(r.tenant_id), r.reason))
                    }
                }
                verdicts.push(match command_rejects.get(rejects_before) {
                    Some(r) => IngressVerdict::Rejected(r.reason.clone()),
                    None if queued => IngressVerdict::Queued,
                    None => IngressVerdict::Accepted,
                });
            }
            if !read.waiters.is_empty() {
                watch.awaiting.push(ingress::Pending {
                    epoch,
                    first: read.records.first().map_or(0, |r| r.1),
                    verdicts: EpochVerdicts::decided(verdicts),
                    waiters: std::mem::take(&mut read.waiters),
                });
            }
        }
        if let Some(taken) = &http_epoch
            && index == 0
        {
            let commands = commands_reader
                .as_ref()
                .and_then(CommandReader::journal_part);
            watch.journal(epoch, taken, commands)?;
        }
        command_rejects.append(&mut retracted.rejected);
        commands_accepted += retracted.applied;
        status_input.send(Status {
            read: records.len() as u64 + commands_read,
            retracting: !retractions.pending.is_empty(),
            caught_up: caught_up && commands_caught_up && retractions.pending.is_empty(),
            behind,
            lag,
            commit_due: index == 0
                && commit_due(
                    last_commit_decided.elapsed(),
                    opts.commit_interval,
                    epoch_interval,
                ),
            idle,
            stop: opts.stop.load(Ordering::SeqCst),
            settings,
        });

        // Wait for the verdicts and statuses of the whole epoch.
        probe_input.advance_to(epoch + 1);
        status_input.advance_to(epoch + 1);
        step_while(worker, failed, || dedup_probe.less_equal(&epoch))?;
        let all = statuses.borrow_mut().remove(&epoch).unwrap_or_default();
        job_read += all.iter().map(|s| s.read).sum::<u64>();
        if all.iter().any(|s| s.settings != settings) {
            bail!(
                "the processes of the cluster run with different settings: start every process with the same config file contents, --events, --commands, --data, --workers, --epoch-bytes, --commit-every, --commit-interval and --until-caught-up"
            );
        }
        if all.len() != peers {
            // Every worker sends one status per epoch; fewer means the workers are at
            // different epochs: processes of a cluster that resumed from different commits.
            bail!(
                "epoch {epoch} has the status of {} of the {peers} workers: the processes of the cluster started from different commits (one was restarted while the others still ran?); stop them all and start them together",
                all.len()
            );
        }
        // A stop request (Ctrl-C, SIGTERM) ends any job after committing this epoch.
        let last = all.iter().any(|s| s.stop)
            || match input {
                Input::File(_) => all.iter().all(|s| s.caught_up),
                Input::Kafka { .. } => opts.until_caught_up && all.iter().all(|s| s.caught_up),
                Input::Http(_) => false,
            };
        // The end of a file commits (retractions look their events up in that commit);
        // a Kafka job with retractions waiting commits so that they come due. A Kafka
        // job catching up a backlog commits every `commit_every` epochs instead of every
        // `commit_interval`: each commit rewrites every partition its epochs touched, so
        // committing less often drains the backlog sooner (and the tables are stale by
        // the backlog anyway); once it keeps up it commits on the clock again.
        let behind = all.iter().any(|s| s.behind);
        let retracting = all.iter().any(|s| s.retracting);
        let largest_lag = all.iter().map(|s| s.lag).max().unwrap_or(0);
        read_budget = if behind && largest_lag > 0 {
            // At least an eighth, so that a small backlog is still read in good time.
            let share = (lag as u128 * opts.epoch_bytes as u128 / largest_lag as u128) as u64;
            share.max(opts.epoch_bytes / 8).max(1)
        } else {
            opts.epoch_bytes.max(1)
        };
        let commit = last
            || match input {
                Input::File(_) => (epoch + 1) % opts.commit_every.max(1) == 0 || caught_up,
                Input::Kafka { .. } => {
                    read_since_commit |= all.iter().any(|s| s.read > 0);
                    uncommitted_epochs += 1;
                    if behind {
                        retracting
                            || read_since_commit && uncommitted_epochs >= opts.commit_every.max(1)
                    } else {
                        (retracting || read_since_commit) && all.iter().any(|s| s.commit_due)
                    }
                }
                // Requests are answered once their epoch is journaled; tables and
                // live views follow every `commit_interval`.
                Input::Http(_) => {
                    read_since_commit |= all.iter().any(|s| s.read > 0);
                    retracting || read_since_commit && all.iter().any(|s| s.commit_due)
                }
            };
        if commit {
            (read_since_commit, uncommitted_epochs) = (false, 0);
            last_commit_decided = Instant::now();
        }
        // Only worker 0 sees the commits (the committer runs there).
        if commit && index == 0 {
            watch.cut.insert(epoch, read_done);
        }
        let mut duplicates: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
        let mut chunk_max = BTreeMap::new();
        for v in verdicts.borrow_mut().remove(&epoch).unwrap_or_default() {
            match v {
                Verdict::Duplicate { chunk, pos, .. } => {
                    duplicates.entry(chunk).or_default().push(pos)
                }
                Verdict::ChunkMax { chunk, max_ts, .. } => {
                    let m = chunk_max.entry(chunk).or_insert(max_ts);
                    *m = (*m).max(max_ts);
                }
            }
        }
        let fates = classify_runs(
            &chunk.arrivals,
            &chunk.chunks,
            &mut duplicates,
            |c| watermarks.start_of(c, &chunk_max),
            lateness,
        );
        let idle: BTreeSet<u32> = all.iter().flat_map(|s| s.idle.iter().copied()).collect();
        watermarks.advance(&chunk_max, &idle);
        {
            let mut info = info.borrow_mut();
            info.watermarks.insert(epoch, watermarks.closed());
            info.latest.insert(epoch, watermarks.latest());
            if commit {
                info.commits.insert(epoch);
            }
        }
        if checkpoints && commit {
            // The dedup shard holds exactly this epoch's keys and earlier ones now: the
            // next epoch's probes are not sent yet.
            let mut dedup = dedup_state.borrow_mut();
            let delta = ReaderDelta {
                dedup: crate::packed::Packed(dedup.take_journal()),
                watermarks: watermarks.clone(),
                grants: std::mem::take(&mut grants_new),
                retractions: retractions.clone(),
            };
            // A commit that writes a whole base drops the delta: not encoded then.
            let items = Some(dedup.len());
            let delta = if reader_chain.wants_base(items) {
                Vec::new()
            } else {
                bincode::serialize(&delta).context("encoding a checkpoint")?
            };
            let base = ReaderCheckpointRef {
                dedup: &dedup,
                watermarks: &watermarks,
                grants: &grants_seen,
                retractions: &retractions,
            };
            for change in reader_chain.save(store, runtime, epoch, (&base, items), delta)? {
                meta_input.send(Meta::File(change));
            }
        }

        // Keep at most two epochs in flight in the usage dataflow.
        step_while(worker, failed, || {
            usage_probe.less_than(&epoch.saturating_sub(1))
        })?;
        for n in new_names.drain(..) {
            if matches!(n, NameRecord::Customer { .. }) {
                customer_input.send(CustomerInput::Name(n.clone()));
            }
            name_input.send(n);
        }
        for u in retracted.updates.drain(..) {
            update_input.send(u);
        }
        for b in retracted.burns.drain(..) {
            customer_input.send(CustomerInput::Burn(b));
        }
        let mut late = Vec::new();
        let mut keep = Vec::with_capacity(fates.len());
        let mut duplicate_count = 0u64;
        let mut readings = chunk.readings.into_iter();
        let mut calls = chunk.calls.iter().copied().peekable();
        let mut readings_start = 0;
        for (i, fate) in fates.into_iter().enumerate() {
            let taken = chunk.readings_end[i] - readings_start;
            readings_start = chunk.readings_end[i];
            let own = readings.by_ref().take(taken);
            keep.push(fate == Fate::Accepted);
            let (pos, timestamp) = chunk.arrivals[i];
            let position = SourcePosition {
                source: 0,
                partition: chunk.partitions[i],
                offset: pos,
            };
            match fate {
                Fate::Accepted => {
                    let burn = chunk.burns[i];
                    while let Some(&(at, model, tokens)) = calls.peek() {
                        if at > i {
                            break;
                        }
                        calls.next();
                        if at == i {
                            view_updates.call(
                                chunk.customers[i],
                                model,
                                timestamp,
                                tokens,
                                burn,
                                1,
                            );
                        }
                    }
                    if burn != Decimal9::ZERO {
                        customer_input.send(CustomerInput::Burn(BurnUpdate {
                            customer: chunk.customers[i],
                            timestamp,
                            burn,
                        }));
                    }
                    for (meter, dimensions, value) in own {
                        if let (Some(aggregation), UpdateValue::Number(v)) =
                            (tracked[meter as usize], &value)
                        {
                            view_updates.reading(
                                chunk.customers[i],
                                meter,
                                aggregation,
                                timestamp,
                                *v,
                                1,
                            );
                        }
                        update_input.send(ReadingUpdate {
                            customer: chunk.customers[i],
                            dimensions,
                            timestamp,
                            meter,
                            diff: 1,
                            value,
                        });
                    }
                    continue;
                }
                Fate::Duplicate | Fate::Late(_) => own.for_each(drop),
            }
            let e = decoder
                .decode(records[chunk.lines[i]].2)
                .expect("a record that decoded once decodes again")
                .event;
            // (Kafka offsets of several partitions may lie below the first record's.)
            let verdict = pos
                .checked_sub(http_first)
                .and_then(|i| http_verdicts.get_mut(i as usize));
            match fate {
                Fate::Duplicate => {
                    duplicate_count += 1;
                    let reason = format!(
                        "duplicate: id {} was already accepted for tenant {}",
                        e.id, e.tenant_id
                    );
                    if let Some(v) = verdict {
                        *v = IngressVerdict::Duplicate(reason.clone());
                    }
                    rejected.push(RejectedRecord {
                        reason,
                        raw: normalized_json(&e),
                        tenant_id: Some(e.tenant_id),
                        event_id: Some(e.id),
                        position,
                    });
                }
                Fate::Late(w) => late.push(LateRecord {
                    reason: {
                        let reason = late_reason(e.timestamp, w, lateness);
                        if let Some(v) = verdict {
                            *v = IngressVerdict::Late(reason.clone());
                        }
                        reason
                    },
                    raw: normalized_json(&e),
                    timestamp: e.timestamp,
                    watermark: w,
                    tenant_id: e.tenant_id,
                    event_id: e.id,
                    customer_id: e.customer_id,
                    position,
                }),
                Fate::Accepted => unreachable!("handled above"),
            }
        }
        view_updates.drain(|u| customer_input.send(u));
        if let Some(taken) = &http_epoch {
            // Decided: worker 0 answers the requests once the journal holds the epoch.
            taken.set_verdicts(
                taken.slice(index, peers).start,
                std::mem::take(&mut http_verdicts),
            );
            if !http_waiters.is_empty() {
                watch.awaiting.push(ingress::Pending {
                    epoch,
                    first: taken.batch().first(),
                    verdicts: taken.verdicts(),
                    waiters: std::mem::take(&mut http_waiters),
                });
            }
        }
        let accepted = keep.iter().filter(|k| **k).count();
        let events_rejected = rejected.len() as u64;
        let commands_rejected = command_rejects.len() as u64;
        rejected.extend(command_rejects);

        // This worker's append-only tables: the epoch's rows, written at the commit
        // (in the background while the next file is encoded).
        let schema = "records match their schema";
        append_only.add(
            0,
            events.finish(Some(&keep), ingested_at).context(schema)?,
            accepted,
        );
        append_only.add(
            1,
            om_sinks::encode::rejected(&rejected, ingested_at, &sources).context(schema)?,
            rejected.len(),
        );
        append_only.add(
            2,
            om_sinks::encode::late(&late, ingested_at, &sources).context(schema)?,
            late.len(),
        );
        let mut uploads = om_sinks::Uploads::new(runtime);
        let changes = append_only.write(commit, epoch, index, store, &mut uploads)?;
        uploads.finish()?;
        drop(records);
        for c in changes {
            meta_input.send(Meta::File(c));
        }
        meta_input.send(Meta::Stats {
            accepted: accepted as u64,
            rejected: events_rejected,
            duplicates: duplicate_count,
            commands_accepted,
            commands_rejected,
            late: late.len() as u64,
            watermark: watermarks.latest(),
            sources: positions,
        });
        update_input.advance_to(epoch + 1);
        name_input.advance_to(epoch + 1);
        meta_input.advance_to(epoch + 1);
        customer_input.advance_to(epoch + 1);
        command_input.advance_to(epoch + 1);

        if opts.progress && (last_report.elapsed().as_secs_f64() >= 1.0 || last) {
            last_report = Instant::now();
            let secs = started.elapsed().as_secs_f64().max(1e-9);
            let watermark = watermarks
                .latest()
                .map(om_model::time::format_micros)
                .unwrap_or_else(|| "none".into());
            match &reader {
                Reader::File { file, epochs, .. } if index == 0 => {
                    let read = file_boundary(epoch, peers);
                    eprintln!(
                        "epoch {}/{epochs}: {:.0}% of input, {:.1} MB/s, watermark {watermark}",
                        epoch + 1,
                        100.0 * read as f64 / file.len().max(1) as f64,
                        read as f64 / secs / 1e6,
                    );
                }
                Reader::Kafka {
                    reader: Some(r), ..
                } => eprintln!(
                    "worker {index} epoch {epoch}: {:.0} records/s, lag {} records, {}{}; watermark {watermark}",
                    total_read as f64 / secs,
                    r.lag(),
                    if commit {
                        "committing"
                    } else {
                        "nothing to commit"
                    },
                    last_commit_note(watch.latest),
                ),
                Reader::Http { ingress, .. } if index == 0 && commit => eprintln!(
                    "epoch {epoch}: {} records read ({:.0}/s since start), {} bytes queued{}; watermark {watermark}",
                    job_read,
                    job_read as f64 / secs,
                    ingress.queued_bytes(),
                    last_commit_note(watch.latest),
                ),
                _ => {}
            }
        }
        if last {
            break;
        }
    }
    drop(probe_input);
    drop(status_input);
    drop(update_input);
    drop(name_input);
    drop(meta_input);
    drop(customer_input);
    drop(command_input);
    step_while(worker, failed, || {
        !usage_probe.done() || !dedup_probe.done()
    })?;
    watch.check(&last_commit);
    Ok(last_commit.borrow_mut().take())
}

/// The progress lines' note of the last commit: how long after its epoch's reading ended
/// it was written, i.e. how stale a query's view is at worst beyond the commit interval.
fn last_commit_note(latest: Option<(u64, Option<Duration>)>) -> String {
    match latest {
        Some((epoch, Some(latency))) => format!(
            ", last commit epoch {epoch} written {:.2} s after its reading ended",
            latency.as_secs_f64()
        ),
        Some((epoch, None)) => format!(", last commit epoch {epoch}"),
        None => String::new(),
    }
}

/// Worker 0's follow-up of the commits it writes: answers the HTTP requests of committed
/// epochs, records each commit in the metrics, and keeps the last one's latency for the
/// progress lines.
struct CommitWatch<'a> {
    /// HTTP: the verdicts of epochs whose commit is not written yet, with their requests.
    awaiting: Vec<ingress::Pending>,
    /// HTTP: the last epoch the journal holds (and every one before it).
    journaled: Option<u64>,
    /// HTTP: the journal segment of each epoch not yet committed.
    segments: Vec<(u64, String)>,
    /// Where the journal is, to delete what a commit covers.
    store: DataStore,
    runtime: tokio::runtime::Handle,
    /// When the reading of each commit epoch not yet committed ended.
    cut: BTreeMap<u64, Instant>,
    /// The last commit seen.
    seen: Option<u64>,
    /// The last commit seen and the time from the end of its epoch's reading until it
    /// was seen written (`None` for the commit a job resumed from).
    latest: Option<(u64, Option<Duration>)>,
    metrics: Option<&'a JobMetrics>,
}

impl CommitWatch<'_> {
    /// HTTP, worker 0: writes epoch `epoch`'s records (its events `taken`, its
    /// `commands`) to the journal, unless they come from it; after this its requests can
    /// be answered as soon as they are decided.
    fn journal(
        &mut self,
        epoch: u64,
        taken: &ingress::EpochRecords,
        commands: Option<journal::PartRef<'_>>,
    ) -> anyhow::Result<()> {
        let events = taken.batch().journal_part();
        let commands = commands.unwrap_or_default();
        if !events.ends.is_empty() || !commands.ends.is_empty() {
            let path = if taken.replayed() {
                journal::path_of(events.first, commands.first)
            } else {
                let (path, bytes) = journal::encode(taken.ingested_at(), events, commands);
                self.runtime
                    .block_on(journal::write(&self.store, &path, bytes))?;
                path
            };
            self.segments.push((epoch, path));
            if let Some(metrics) = self.metrics {
                metrics.journaled(self.segments.len());
            }
        }
        self.journaled = Some(epoch);
        Ok(())
    }

    /// Answers the requests of journaled epochs that are decided, and catches up with
    /// the last commit.
    fn check(&mut self, last_commit: &RefCell<Option<CommitRecord>>) {
        if let Some(journaled) = self.journaled {
            for pending in &mut self.awaiting {
                if pending.epoch <= journaled && pending.is_decided() {
                    pending.answer_journaled();
                }
            }
            self.awaiting.retain(|p| !p.waiters.is_empty());
        }
        let last = last_commit.borrow();
        let Some(commit) = last.as_ref() else {
            return;
        };
        if self.seen == Some(commit.epoch) {
            return;
        }
        self.seen = Some(commit.epoch);
        let latency = self.cut.remove(&commit.epoch).map(|c| c.elapsed());
        self.cut.retain(|e, _| *e > commit.epoch);
        self.latest = Some((commit.epoch, latency));
        if let Some(metrics) = self.metrics {
            metrics.committed(commit, latency);
        }
        let (ready, waiting) = std::mem::take(&mut self.awaiting)
            .into_iter()
            .partition(|p| p.epoch <= commit.epoch);
        self.awaiting = waiting;
        for pending in ready {
            pending.answer();
        }
        // The journal's segments of committed epochs are not needed any more (a segment
        // left by a failed delete is deleted when the job resumes).
        let (covered, after): (Vec<_>, Vec<_>) = std::mem::take(&mut self.segments)
            .into_iter()
            .partition(|(e, _)| *e <= commit.epoch);
        self.segments = after;
        if let (Some(metrics), false) = (self.metrics, covered.is_empty()) {
            metrics.journaled(self.segments.len());
        }
        if !covered.is_empty() {
            let store = self.store.clone();
            let paths = covered.into_iter().map(|(_, p)| p).collect();
            self.runtime.spawn(async move {
                if let Err(e) = store.delete_all(paths).await {
                    eprintln!("warning: deleting committed journal segments: {e}");
                }
            });
        }
    }
}

/// The negations of the events retracted in an epoch, and the refused retractions.
#[derive(Default)]
struct Retracted {
    updates: Vec<ReadingUpdate>,
    burns: Vec<BurnUpdate>,
    rejected: Vec<RejectedRecord>,
    applied: u64,
}

/// What [`retract_events`] reads.
struct RetractContext<'a> {
    data: &'a str,
    runtime: &'a tokio::runtime::Handle,
    decoder: &'a Decoder,
    is_latest: &'a [bool],
    tracked: &'a [Option<Aggregation>],
    closed: Option<Micros>,
    lateness: Micros,
    peers: usize,
}

/// Looks up the events of due retractions in the committed `events` table and returns
/// the negation of each one's window updates and burn, or why it is refused.
fn retract_events(
    batch: Vec<Pending>,
    retractions: &mut Retractions,
    cx: &RetractContext<'_>,
    names: &mut NameCache,
    new_names: &mut Vec<NameRecord>,
    views: &mut ViewUpdates,
) -> anyhow::Result<Retracted> {
    let mut out = Retracted::default();
    if batch.is_empty() {
        return Ok(out);
    }
    let keys: Vec<(String, String)> = batch
        .iter()
        .map(|p| (p.tenant_id.clone(), p.event_id.clone()))
        .collect();
    let found: BTreeMap<(String, String), om_model::Event> =
        retract::lookup(cx.data, cx.runtime, &keys)
            .context("looking up retracted events")?
            .into_iter()
            .map(|e| ((e.tenant_id.clone(), e.id.clone()), e))
            .collect();
    for p in batch {
        let key = (p.tenant_id.clone(), p.event_id.clone());
        let refuse = |reason: String| RejectedRecord {
            tenant_id: Some(p.tenant_id.clone()),
            event_id: None,
            raw: p.raw.clone(),
            reason,
            position: p.position.clone(),
        };
        let Some(e) = found.get(&key) else {
            out.rejected.push(refuse(format!(
                "retract_event: event {} of tenant {} is not among the accepted events",
                p.event_id, p.tenant_id
            )));
            continue;
        };
        if let Some(w) = cx.closed
            && e.timestamp < w - cx.lateness
        {
            out.rejected.push(refuse(format!(
                "retract_event: event {} of tenant {} at {} is older than the watermark {} minus allowed_lateness: its windows are final; correct it with a backfill",
                p.event_id,
                p.tenant_id,
                om_model::time::format_micros(e.timestamp),
                om_model::time::format_micros(w)
            )));
            continue;
        }
        let decoded = match cx.decoder.decode(normalized_json(e).as_bytes()) {
            Ok(d) => d,
            Err(r) => {
                out.rejected.push(refuse(format!(
                    "retract_event: event {} no longer decodes with this config: {}",
                    p.event_id, r.reason
                )));
                continue;
            }
        };
        let (customer, name) = names.customer(&e.tenant_id, &e.customer_id)?;
        new_names.extend(name);
        for r in decoded.readings {
            if let (Some(aggregation), ReadingValue::Number(v)) =
                (cx.tracked[r.meter as usize], &r.value)
            {
                views.reading(customer, r.meter, aggregation, e.timestamp, *v, -1);
            }
            let dimensions = names.dimensions(&r.dimensions, cx.peers as u32, new_names)?;
            let value = match r.value {
                ReadingValue::Number(v) if cx.is_latest[r.meter as usize] => {
                    UpdateValue::Latest(v, e.id.as_str().into())
                }
                ReadingValue::Number(v) => UpdateValue::Number(v),
                ReadingValue::Scalar(text) => UpdateValue::Scalar(fingerprint::scalar(&text)),
            };
            out.updates.push(ReadingUpdate {
                customer,
                dimensions,
                timestamp: e.timestamp,
                meter: r.meter,
                diff: -1,
                value,
            });
        }
        if let Some(call) = &decoded.cost {
            let model = views.model_key(cx.decoder.config(), call.provider.as_deref(), &call.model);
            views.call(customer, model, e.timestamp, call.tokens, decoded.burn, -1);
        }
        if decoded.burn != Decimal9::ZERO {
            out.burns.push(BurnUpdate {
                customer,
                timestamp: e.timestamp,
                burn: -decoded.burn,
            });
        }
        retractions.done.insert(key);
        out.applied += 1;
    }
    Ok(out)
}

/// Worker 0's reader of the commands source.
enum CommandReader<'a> {
    /// A file, read whole in the first epoch.
    File {
        file: &'a JsonlFile,
        name: String,
        done: bool,
    },
    /// A Kafka topic: every partition, read each epoch up to its end.
    Kafka {
        url: &'a KafkaUrl,
        reader: Box<PartitionReader>,
        buf: MessageBuf,
    },
    /// Commands posted over HTTP.
    Http {
        ingress: &'a Ingress,
        batch: ingress::Batch,
    },
}

impl CommandReader<'_> {
    /// HTTP: the commands the last read took, for the journal.
    fn journal_part(&self) -> Option<journal::PartRef<'_>> {
        match self {
            CommandReader::Http { batch, .. } => Some(batch.journal_part()),
            _ => None,
        }
    }
}

/// What one epoch read of the commands.
struct CommandRead {
    /// (partition, offset, record).
    records: Vec<(u32, u64, Vec<u8>)>,
    /// Everything available is read.
    caught_up: bool,
    /// (source name, position read up to).
    positions: Vec<(String, u64)>,
    /// HTTP: the tenant each record must belong to (none: any); empty otherwise.
    tenants: Vec<Option<String>>,
    /// HTTP: the requests of the records.
    waiters: Vec<ingress::Waiter>,
}

impl<'a> CommandReader<'a> {
    fn open(input: &'a Input, resume: &Option<CommitRecord>) -> anyhow::Result<Self> {
        Ok(match input {
            Input::File(file) => CommandReader::File {
                file,
                name: input.name(),
                done: false,
            },
            Input::Kafka { url, partitions } => {
                let all = Input::resume_offsets(url, 0..*partitions, resume);
                CommandReader::Kafka {
                    url,
                    reader: Box::new(PartitionReader::open(url, all)?),
                    buf: MessageBuf::default(),
                }
            }
            Input::Http(ingress) => CommandReader::Http {
                ingress,
                batch: ingress::Batch::default(),
            },
        })
    }

    /// Reads what is there now (Kafka: for a tenth of the commit interval).
    fn read(&mut self, opts: &RunOptions, max_bytes: usize) -> anyhow::Result<CommandRead> {
        match self {
            CommandReader::File { file, name, done } => {
                let mut read = CommandRead {
                    records: Vec::new(),
                    caught_up: true,
                    positions: vec![(name.clone(), file.len())],
                    tenants: Vec::new(),
                    waiters: Vec::new(),
                };
                if !*done {
                    *done = true;
                    let mut buf = LineBuf::default();
                    file.read_lines(0, file.len(), &mut buf)
                        .with_context(|| format!("reading {}", file.path().display()))?;
                    read.records = buf
                        .lines()
                        .map(|(offset, line)| (0, offset, line.to_vec()))
                        .collect();
                }
                Ok(read)
            }
            CommandReader::Kafka { url, reader, buf } => {
                // A live job waits a tenth of the epoch for new commands; a catch-up run
                // stops at the end of every partition.
                let wait = opts.epoch_interval() / 10;
                let deadline = Instant::now() + wait;
                reader.read(buf, deadline, max_bytes, opts.until_caught_up, &opts.stop)?;
                Ok(CommandRead {
                    records: buf.messages().map(|(p, o, m)| (p, o, m.to_vec())).collect(),
                    caught_up: reader.caught_up(),
                    positions: reader
                        .positions()
                        .map(|(p, next)| (url.partition_name(p), next))
                        .collect(),
                    tenants: Vec::new(),
                    waiters: Vec::new(),
                })
            }
            CommandReader::Http { ingress, batch } => {
                ingress.take(batch);
                Ok(CommandRead {
                    records: batch.records().map(|(s, r)| (0, s, r.to_vec())).collect(),
                    caught_up: true,
                    positions: vec![(ingress.partition_name(), batch.end())],
                    tenants: batch
                        .records()
                        .map(|(s, _)| batch.tenant(s).map(str::to_string))
                        .collect(),
                    waiters: batch.take_waiters(),
                })
            }
        }
    }
}

/// Gathers a stream's records by time into `into`, for the worker's driver loop.
fn collect<'s, D: timely::ExchangeData>(
    stream: StreamVec<'s, u64, D>,
    pact: impl ParallelizationContract<u64, Vec<D>>,
    into: Rc<RefCell<BTreeMap<u64, Vec<D>>>>,
) -> StreamVec<'s, u64, ()> {
    stream.unary_frontier(pact, "OM: Collect", move |_cap, _info| {
        move |(input, _frontier),
              _output: &mut timely::dataflow::operators::generic::OutputBuilderSession<
            '_,
            u64,
            CapacityContainerBuilder<Vec<()>>,
        >| {
            input.for_each(|cap, data| {
                let t = *cap.retain_least(0).expect("capability for its time").time();
                into.borrow_mut().entry(t).or_default().append(data);
            });
        }
    })
}

/// The raw payload of a rejected line: lossy UTF-8, at most 1 MiB.
fn lossy_truncated(line: &[u8]) -> String {
    let cut = &line[..line.len().min(MAX_RECORD_BYTES)];
    String::from_utf8_lossy(cut).into_owned()
}

/// An accepted-shaped event as normalized JSON (RFC 3339 time, decimal-string value),
/// replayable as input.
fn normalized_json(e: &om_model::Event) -> String {
    let mut s = String::with_capacity(128 + e.properties.as_ref().map_or(0, String::len));
    let field = |s: &mut String, name: &str, v: &str| {
        s.push('"');
        s.push_str(name);
        s.push_str("\":");
        om_sources::decode::push_json_string(s, v);
    };
    s.push('{');
    field(&mut s, "id", &e.id);
    s.push(',');
    field(&mut s, "tenant_id", &e.tenant_id);
    s.push(',');
    field(&mut s, "customer_id", &e.customer_id);
    s.push(',');
    field(&mut s, "event_type", &e.event_type);
    s.push(',');
    field(
        &mut s,
        "timestamp",
        &om_model::time::format_micros(e.timestamp),
    );
    s.push(',');
    field(
        &mut s,
        "value",
        e.value
            .to_string()
            .trim_end_matches('0')
            .trim_end_matches('.'),
    );
    if let Some(p) = &e.properties {
        s.push_str(",\"properties\":");
        s.push_str(p);
    }
    s.push('}');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kafka_epoch_is_a_quarter_of_the_commit_interval_unless_set() {
        let kafka: Source = "kafka://127.0.0.1:9092/events".parse().unwrap();
        let mut opts = RunOptions::new(Config::builtin(), kafka, "memory://t/");
        opts.commit_interval = Duration::from_secs(2);
        assert_eq!(opts.epoch_interval(), Duration::from_millis(500));
        opts.epoch_interval = Some(Duration::from_millis(300));
        assert_eq!(opts.epoch_interval(), Duration::from_millis(300));
        let file = RunOptions::new(Config::builtin(), Source::File("e.jsonl".into()), "d");
        assert_eq!(file.epoch_interval(), DEFAULT_HTTP_EPOCH_INTERVAL);
    }

    #[test]
    fn a_kafka_epoch_longer_than_the_commit_interval_is_refused() {
        let kafka: Source = "kafka://127.0.0.1:9/events".parse().unwrap();
        let mut opts = RunOptions::new(Config::builtin(), kafka, "memory://t/");
        opts.epoch_interval = Some(Duration::from_secs(2));
        let err = run(opts).unwrap_err().to_string();
        assert!(
            err.contains("--epoch-interval 2s is longer than --commit-interval 1s"),
            "{err}"
        );
    }

    #[test]
    fn the_epoch_nearest_the_commit_interval_commits() {
        let ms = Duration::from_millis;
        let (interval, epoch) = (ms(1000), ms(250));
        // Epochs end ~250 ms apart: the fourth is due, even when it ends a little early,
        // and the third is not, even when it ends a little late.
        assert!(!commit_due(ms(760), interval, epoch));
        assert!(commit_due(ms(990), interval, epoch));
        assert!(commit_due(ms(1010), interval, epoch));
        // Epochs of a whole interval commit every time, however they jitter.
        assert!(commit_due(ms(960), interval, interval));
        assert!(!commit_due(ms(400), interval, interval));
    }

    #[test]
    fn interleaved_runs_of_a_chunk_are_judged_as_one_sequence() {
        use om_operators::Fate;
        // Chunk 0: positions 10, 11, 12 (11 a duplicate, 12 late once 10 is seen);
        // chunk 1: positions 5, 6 (6 late only by chunk 1's own start). Interleaved as a
        // Kafka reader may read them, and contiguous.
        let lateness = 100;
        let start = |c: u32| if c == 1 { Some(1_000) } else { None };
        let dups = || BTreeMap::from([(0, vec![11])]);
        let interleaved = classify_runs(
            &[(10, 500), (5, 950), (11, 500), (6, 800), (12, 300)],
            &[(0, 0..1), (1, 1..2), (0, 2..3), (1, 3..4), (0, 4..5)],
            &mut dups(),
            start,
            lateness,
        );
        assert_eq!(
            interleaved,
            [
                Fate::Accepted,
                Fate::Accepted,
                Fate::Duplicate,
                Fate::Late(1_000),
                Fate::Late(500)
            ]
        );
        let contiguous = classify_runs(
            &[(10, 500), (11, 500), (12, 300), (5, 950), (6, 800)],
            &[(0, 0..3), (1, 3..5)],
            &mut dups(),
            start,
            lateness,
        );
        assert_eq!(
            contiguous,
            [
                Fate::Accepted,
                Fate::Duplicate,
                Fate::Late(500),
                Fate::Accepted,
                Fate::Late(1_000)
            ]
        );
    }

    #[test]
    fn normalized_json_replays_as_the_same_event() {
        let decoder = Decoder::new(Config::builtin());
        let line = br#"{"id":"e\"1","tenant_id":"acme","customer_id":"c1","event_type":"ai_generation","timestamp":1705314600123,"value":"2.50","properties":{"model":"gpt-4o","input_tokens":5,"output_tokens":7,"latency_ms":9,"provider":"openai"}}"#;
        let first = decoder.decode(line).unwrap();
        let again = decoder
            .decode(normalized_json(&first.event).as_bytes())
            .unwrap();
        assert_eq!(first, again);
        for v in ["0", "10", "100", "0.5", "12.000000001"] {
            let mut e = first.event.clone();
            e.value = Decimal9::parse(v).unwrap();
            let back = decoder.decode(normalized_json(&e).as_bytes()).unwrap();
            assert_eq!(back.event.value, e.value, "{v}");
        }
    }

    #[test]
    fn rejected_payloads_are_capped_at_one_mib() {
        let big = vec![b'x'; MAX_RECORD_BYTES + 10];
        assert_eq!(lossy_truncated(&big).len(), MAX_RECORD_BYTES);
        assert_eq!(lossy_truncated(b"{bad \xff}"), "{bad \u{fffd}}");
    }
}
