//! `om-operators`: the dataflow operators of OpenMonetize.
//!
//! Ingest runs per epoch: [`dedup`] decides the first occurrence of each (tenant, id)
//! in arrival order, [`lateness`] judges each event against the watermark, and
//! [`windowed_usage`] folds accepted events' readings into per-window state on the
//! worker owning the customer, so late and out-of-order events correct their windows.
//! [`credits`] burns prepaid grants down by the same customers' events.
//! [`names`] carries the texts behind the fingerprints that key that state.
//! The monetization views live on the same owner: [`meter_series`] keeps hourly usage
//! for [`anomaly`] scores, [`forecast`]s and [`entitlements`]; [`costs`] prices model
//! calls. Each per-customer view implements [`view::View`], and [`view::Views`] lists
//! them.
#![deny(missing_docs)]

pub mod anomaly;
pub mod costs;
pub mod credits;
pub mod dedup;
pub mod entitlements;
pub mod forecast;
pub mod lateness;
pub mod meter_series;
pub mod names;
pub mod view;
pub mod windowed_usage;

pub use costs::{CostState, CostUpdate};
pub use credits::{BurnUpdate, CreditState};
pub use dedup::{DedupChange, DedupProbe, DedupState, Verdict};
pub use entitlements::Subscriptions;
pub use lateness::{Fate, Order, Watermarks, classify, late_reason};
pub use meter_series::{HourUpdate, MeterSeries};
pub use names::{Collision, NameCache, NameRecord, Names};
pub use windowed_usage::{
    PartitionWrite, ReadingUpdate, UpdateValue, UsageData, UsageState, WindowRow,
};
