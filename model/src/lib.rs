//! `om-model`: the types every OpenMonetize crate shares and no I/O. Exact decimals,
//! event time and windows, the configuration, the records that flow through the
//! dataflow, and the Arrow schemas of the output tables.

pub mod command;
pub mod config;
pub mod credit;
pub mod decimal;
pub mod event;
pub mod export;
pub mod fingerprint;
pub mod overrides;
pub mod prices;
pub mod pricing;
pub mod revenue;
pub mod schema;
pub mod time;
pub mod views;

pub use command::{Command, Grant};
pub use config::{Aggregation, Config, ConfigError, Meter};
pub use decimal::Decimal9;
pub use event::{
    DecodedEvent, Event, LateRecord, Reading, ReadingValue, RejectedRecord, SourcePosition,
    WindowKey,
};
pub use time::{Micros, WindowSize};
