//! `om-sinks`: the output tables on object storage.
//!
//! Transport and format are separate: [`store`] resolves a `--data` URL to an
//! `object_store` (local path, `file://`, `memory://`), [`encode`] turns records into
//! Arrow batches, [`parquet`] encodes a batch as one Parquet object, [`blocks`] writes one in blocks that
//! copy their key columns from the file before, [`splice`] rewrites one with a boolean
//! column set (copying the others),
//! [`commit`] is the atomic commit record that makes an epoch's files visible together,
//! [`retention`] deletes the files commits have superseded once no reader needs them,
//! and [`uploads`] writes a commit's files in the background while the next is encoded.

pub mod blocks;
pub mod commit;
pub mod encode;
pub mod error;
pub mod parquet;
pub mod retention;
pub mod splice;
pub mod store;
pub mod uploads;

pub use commit::{CommitRecord, FileChange, Manifest};
pub use error::{Error, Result};
pub use store::DataStore;
pub use uploads::Uploads;
