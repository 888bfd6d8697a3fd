//! `om-sources`: where events come from. Decoding and validation of records
//! ([`decode`]), the chunked JSONL file source ([`file`]), the Kafka source and producer
//! ([`kafka`]) and the synthetic AI/SaaS usage
//! generator ([`generator`]).

pub mod decode;
pub mod file;
pub mod generator;
pub mod json;
pub mod kafka;

pub use decode::{Decoder, Rejection};
