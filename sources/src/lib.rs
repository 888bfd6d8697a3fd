//! `om-sources`: where events come from. Decoding and validation of records
//! ([`decode`]), the chunked JSONL file source ([`file`]) and the synthetic AI/SaaS usage
//! generator ([`generator`]).

pub mod decode;
pub mod file;
pub mod generator;
pub mod json;

pub use decode::{Decoder, Rejection};
