//! `om-operators`: the dataflow operators of OpenMonetize.
//!
//! Ingest runs per epoch: [`dedup`] decides the first occurrence of each (tenant, id)
//! in arrival order, [`lateness`] judges each event against the watermark, and
//! [`windowed_usage`] turns accepted events into window updates that differential
//! dataflow maintains incrementally, so late and out-of-order events correct their
//! windows.
#![deny(missing_docs)]

pub mod dedup;
pub mod lateness;
pub mod windowed_usage;

pub use dedup::{DedupProbe, DedupState, Verdict};
pub use lateness::{Candidate, Classified, classify};
pub use windowed_usage::{SumCount, UsageUpdates, WindowValue, pre_aggregate};

/// A stable 64-bit hash (FxHash) used to route records to workers.
pub fn route_hash<H: std::hash::Hash + ?Sized>(value: &H) -> u64 {
    use std::hash::BuildHasher;
    rustc_hash::FxBuildHasher.hash_one(value)
}
