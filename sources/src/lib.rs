//! `om-sources`: where events come from. Decoding and validation of records
//! ([`decode`]) and commands ([`command`]), the chunked JSONL file source ([`file`]), the Kafka source and producer
//! ([`kafka`]) and the synthetic AI/SaaS usage
//! generator ([`generator`]).

pub mod command;
pub mod decode;
pub mod file;
pub mod generator;
pub mod json;
pub mod kafka;

pub use command::CommandDecoder;
pub use decode::{Decoder, Rejection};
