//! Dedup on (tenant_id, id): the first valid occurrence in arrival order claims the key;
//! later occurrences are duplicates (DESIGN.md section 3).
//!
//! Probes are routed to the worker owning the key's hash. At the end of each epoch the
//! owner walks that epoch's probes in arrival order (chunk, then `pos` within the chunk),
//! answers with the positions of duplicates (sent back to the worker that read them) and,
//! for every chunk, the
//! greatest timestamp among its first occurrences, which the lateness operator needs to
//! compute the watermark. Keys are kept for `dedup_horizon` of event time behind the
//! greatest timestamp this owner has seen.

use om_model::Micros;
use rustc_hash::FxHashMap;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::collections::hash_map::Entry;
use std::rc::Rc;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;

/// One accepted-candidate's claim on its dedup key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DedupProbe {
    /// `om_model::fingerprint::idempotency_key(tenant_id, id)`.
    pub key: u128,
    /// Arrival order within its chunk.
    pub pos: u64,
    /// The chunk it came from: a file slice (numbered by worker) or a Kafka partition.
    /// Chunks of an epoch arrive in chunk order.
    pub chunk: u32,
    /// The worker that read it.
    pub reader: u32,
    /// Event time.
    pub ts: Micros,
}

/// The owner's answer, routed to worker `target()`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Verdict {
    /// The probe at `pos` from `chunk` repeats an earlier key.
    Duplicate {
        /// The worker that read it.
        reader: u32,
        /// Chunk of the duplicate.
        chunk: u32,
        /// Its arrival position.
        pos: u64,
    },
    /// The greatest timestamp among first occurrences of `chunk` routed to this owner.
    ChunkMax {
        /// The worker this copy is for (every worker gets one).
        target: u32,
        /// The chunk it describes.
        chunk: u32,
        /// The greatest timestamp.
        max_ts: Micros,
    },
}

impl Verdict {
    /// The worker that must receive this verdict.
    pub fn target(&self) -> u32 {
        match self {
            Verdict::Duplicate { reader, .. } => *reader,
            Verdict::ChunkMax { target, .. } => *target,
        }
    }
}

/// Number of shards of the key table.
const SHARDS: usize = 16;

/// One change to the key table, journaled for incremental checkpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum DedupChange {
    /// A first occurrence: key and event time.
    Keep(u128, Micros),
    /// Keys older than this were forgotten.
    Sweep(Micros),
}

/// The keys one owner remembers.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct DedupState {
    /// Key -> event time, in shards by the key's top bits, so that growing the table
    /// rehashes one shard at a time (a sixteenth of the keys) instead of all of them.
    seen: Vec<FxHashMap<u128, Micros>>,
    horizon: Micros,
    max_ts: Option<Micros>,
    swept_at: Micros,
    /// The changes since the last [`DedupState::take_journal`], when journaling.
    #[serde(skip)]
    journal: Option<Vec<DedupChange>>,
}

impl DedupState {
    /// Remembers keys for `horizon` of event time.
    pub fn new(horizon: Micros) -> Self {
        DedupState {
            seen: (0..SHARDS).map(|_| FxHashMap::default()).collect(),
            horizon,
            max_ts: None,
            swept_at: Micros::MIN,
            journal: None,
        }
    }

    /// Starts journaling changes (for a job that saves checkpoints).
    pub fn start_journal(&mut self) {
        self.journal.get_or_insert_with(Vec::new);
    }

    /// The changes since the previous call, in order; the journal starts over.
    pub fn take_journal(&mut self) -> Vec<DedupChange> {
        self.journal
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Applies journaled changes: the state becomes what it was when they were taken.
    pub fn replay(&mut self, changes: &[DedupChange]) {
        for c in changes {
            match *c {
                DedupChange::Keep(key, ts) => self.keep(key, ts),
                DedupChange::Sweep(cutoff) => self.sweep(cutoff),
            }
        }
    }

    /// Remembers a first occurrence (as `process` does).
    fn keep(&mut self, key: u128, ts: Micros) {
        self.seen[(key >> 124) as usize].insert(key, ts);
        self.max_ts = Some(self.max_ts.map_or(ts, |m| m.max(ts)));
        if let Some(j) = &mut self.journal {
            j.push(DedupChange::Keep(key, ts));
        }
    }

    /// Forgets the keys older than `cutoff`.
    fn sweep(&mut self, cutoff: Micros) {
        for shard in &mut self.seen {
            shard.retain(|_, ts| *ts >= cutoff);
        }
        self.swept_at = cutoff;
        if let Some(j) = &mut self.journal {
            j.push(DedupChange::Sweep(cutoff));
        }
    }

    /// Number of keys held.
    pub fn len(&self) -> usize {
        self.seen.iter().map(FxHashMap::len).sum()
    }

    /// True when no key is held.
    pub fn is_empty(&self) -> bool {
        self.seen.iter().all(FxHashMap::is_empty)
    }

    /// Decides one epoch's probes; returns the duplicates and the greatest
    /// first-occurrence timestamp per chunk.
    pub fn process(
        &mut self,
        mut probes: Vec<DedupProbe>,
    ) -> (Vec<DedupProbe>, BTreeMap<u32, Micros>) {
        probes.sort_unstable_by_key(|p| (p.chunk, p.pos));
        let mut duplicates = Vec::new();
        let mut chunk_max: BTreeMap<u32, Micros> = BTreeMap::new();
        for p in probes {
            match self.seen[(p.key >> 124) as usize].entry(p.key) {
                Entry::Occupied(_) => duplicates.push(p),
                Entry::Vacant(slot) => {
                    slot.insert(p.ts);
                    let m = chunk_max.entry(p.chunk).or_insert(p.ts);
                    *m = (*m).max(p.ts);
                    self.max_ts = Some(self.max_ts.map_or(p.ts, |m| m.max(p.ts)));
                    if let Some(j) = &mut self.journal {
                        j.push(DedupChange::Keep(p.key, p.ts));
                    }
                }
            }
        }
        self.evict();
        (duplicates, chunk_max)
    }

    /// Forgets keys older than the horizon; sweeps only when the clock moved enough to
    /// make the sweep worth its cost.
    fn evict(&mut self) {
        let Some(max) = self.max_ts else { return };
        let cutoff = max.saturating_sub(self.horizon);
        if cutoff.saturating_sub(self.swept_at) > self.horizon / 16 {
            self.sweep(cutoff);
        }
    }
}

/// The dedup operator: probes in (any worker), verdicts out (routed by `Verdict::target`
/// with the `Exchange` of the next operator).
pub fn dedup<'s>(
    probes: StreamVec<'s, u64, DedupProbe>,
    state: Rc<RefCell<DedupState>>,
    peers: u32,
) -> StreamVec<'s, u64, Verdict> {
    let pact = Exchange::new(|p: &DedupProbe| p.key as u64);
    probes.unary_frontier(pact, "OM: Dedup", move |_cap, _info| {
        let mut pending: BTreeMap<u64, (Capability<u64>, Vec<DedupProbe>)> = BTreeMap::new();
        move |(input, frontier), output| {
            input.for_each(|cap, data| {
                let cap = cap
                    .retain_least(0)
                    .expect("a message carries a capability for its time");
                let entry = pending
                    .entry(*cap.time())
                    .or_insert_with(|| (cap, Vec::new()));
                entry.1.append(data);
            });
            while let Some(entry) = pending.first_entry() {
                if frontier.less_equal(entry.key()) {
                    break;
                }
                let (cap, probes) = entry.remove();
                let (duplicates, chunk_max) = state.borrow_mut().process(probes);
                let mut session = output.session(&cap);
                for p in duplicates {
                    session.give(Verdict::Duplicate {
                        reader: p.reader,
                        chunk: p.chunk,
                        pos: p.pos,
                    });
                }
                for (chunk, max_ts) in chunk_max {
                    for target in 0..peers {
                        session.give(Verdict::ChunkMax {
                            target,
                            chunk,
                            max_ts,
                        });
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(key: &str, pos: u64, chunk: u32, ts: Micros) -> DedupProbe {
        DedupProbe {
            key: om_model::fingerprint::idempotency_key("t", key),
            pos,
            chunk,
            reader: chunk,
            ts,
        }
    }

    #[test]
    fn first_in_arrival_order_wins_across_epochs() {
        let mut s = DedupState::new(1_000);
        let (dups, max) = s.process(vec![
            probe("a", 5, 1, 10),
            probe("a", 2, 0, 30),
            probe("b", 3, 0, 20),
        ]);
        assert_eq!(dups, vec![probe("a", 5, 1, 10)]);
        assert_eq!(max.get(&0), Some(&30));
        assert_eq!(max.get(&1), None);
        let (dups, _) = s.process(vec![probe("b", 9, 1, 20), probe("c", 8, 1, 25)]);
        assert_eq!(dups, vec![probe("b", 9, 1, 20)]);
    }

    #[test]
    fn chunks_of_an_epoch_arrive_in_chunk_order() {
        let mut s = DedupState::new(1_000);
        // Kafka partitions: partition 0's offset 50 comes before partition 1's offset 2.
        let (dups, _) = s.process(vec![probe("k", 2, 1, 10), probe("k", 50, 0, 10)]);
        assert_eq!(dups, vec![probe("k", 2, 1, 10)]);
    }

    #[test]
    fn keys_older_than_the_horizon_are_forgotten() {
        let mut s = DedupState::new(100);
        s.process(vec![probe("old", 1, 0, 0)]);
        s.process(vec![probe("new", 2, 0, 1_000)]);
        assert_eq!(s.len(), 1);
        let (dups, _) = s.process(vec![probe("new", 3, 0, 1_000)]);
        assert_eq!(dups.len(), 1);
    }

    /// The fields that decide verdicts, for comparing two states.
    fn contents(s: &DedupState) -> (Vec<(u128, Micros)>, Option<Micros>, Micros) {
        let mut keys: Vec<(u128, Micros)> =
            s.seen.iter().flatten().map(|(k, t)| (*k, *t)).collect();
        keys.sort_unstable();
        (keys, s.max_ts, s.swept_at)
    }

    #[test]
    fn a_base_with_its_journal_replayed_equals_the_state() {
        let mut live = DedupState::new(100);
        live.start_journal();
        live.process(vec![probe("a", 1, 0, 10), probe("b", 2, 0, 20)]);
        // The base is taken here: what follows is journaled.
        let base = bincode::serialize(&live).unwrap();
        live.take_journal();
        let mut deltas = Vec::new();
        for (i, ts) in [50, 130, 400, 401].into_iter().enumerate() {
            live.process(vec![
                probe(&format!("k{i}"), i as u64, 0, ts),
                probe("a", 9, 0, ts),
            ]);
            deltas.push(live.take_journal());
        }
        assert!(
            deltas
                .iter()
                .flatten()
                .any(|c| matches!(c, DedupChange::Sweep(_)))
        );
        let mut restored: DedupState = bincode::deserialize(&base).unwrap();
        for d in &deltas {
            restored.replay(d);
        }
        assert_eq!(contents(&restored), contents(&live));
        // And it answers the same: "k3" (kept) is a duplicate, "a" (swept) is not.
        let probes = vec![probe("k3", 1, 0, 402), probe("a", 2, 0, 402)];
        assert_eq!(restored.process(probes.clone()), live.process(probes));
    }
}
