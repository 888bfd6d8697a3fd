//! End-to-end tests of the `openmonetize` binary and library: golden cases (from a file
//! and through a real Kafka broker), worker counts, a property test against a naive
//! model, and cluster mode (several processes).

// An end-to-end test walks a whole scenario with its hand-worked figures; the length
// limit is for the job's code.
#![allow(clippy::too_many_lines)]

mod integration {
    mod billing;
    mod cli;
    mod cluster;
    pub mod common;
    mod credit_model;
    mod golden;
    mod ingest;
    mod kafka;
    mod model_check;
    mod parquet_interop;
    mod pg;
    mod retract;
    pub mod serve;
    pub mod services;
    mod tenant_sql;
    mod views;
    mod views_model;
    mod workers;
}
