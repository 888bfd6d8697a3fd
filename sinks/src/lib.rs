//! `om-sinks`: the output tables on object storage.
//!
//! Transport and format are separate: [`store`] resolves a `--data` URL to an
//! `object_store` (local path, `file://`, `memory://`), [`encode`] turns records into
//! Arrow batches, [`parquet`] writes a batch as one Parquet object,
//! [`commit`] is the atomic commit record that makes an epoch's files visible together,
//! and [`retention`] deletes the files commits have superseded once no reader needs them.

pub mod commit;
pub mod encode;
pub mod error;
pub mod parquet;
pub mod retention;
pub mod store;

pub use commit::{CommitRecord, FileChange, Manifest};
pub use error::{Error, Result};
pub use store::DataStore;
