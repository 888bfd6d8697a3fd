//! `om-operators`: the dataflow operators of OpenMonetize.
//!
//! Ingest runs per epoch: [`dedup`] decides the first occurrence of each (tenant, id)
//! in arrival order, [`lateness`] judges each event against the watermark, and
//! [`windowed_usage`] folds accepted events' readings into per-window state on the
//! worker owning the customer, so late and out-of-order events correct their windows.
//! [`credits`] burns prepaid grants down by the same customers' events.
//! [`names`] carries the texts behind the fingerprints that key that state.
#![deny(missing_docs)]

pub mod credits;
pub mod dedup;
pub mod lateness;
pub mod names;
pub mod windowed_usage;

pub use credits::{BurnUpdate, CreditState};
pub use dedup::{DedupProbe, DedupState, Verdict};
pub use lateness::{Fate, Order, Watermarks, classify, late_reason};
pub use names::{Collision, NameCache, NameRecord, Names};
pub use windowed_usage::{ReadingUpdate, UpdateValue, UsageData, UsageState, WindowRow};
