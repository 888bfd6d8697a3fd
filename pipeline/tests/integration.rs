//! End-to-end tests of the `openmonetize` binary and library: golden cases, worker
//! counts, and a property test against a naive model.

mod integration {
    mod cli;
    pub mod common;
    mod golden;
    mod model_check;
    mod parquet_interop;
    mod workers;
}
