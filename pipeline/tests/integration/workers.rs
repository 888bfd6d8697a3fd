//! The tables (usage, events, rejections, late events and the three credit tables) do
//! not depend on the number of workers nor on how the input is cut into epochs.

use super::common::{query_csv, run_case_committing};

const TABLE_SQL: [&str; 7] = [
    super::common::USAGE_SQL,
    "SELECT tenant_id, id, customer_id, event_type, timestamp, value, properties, source_offset FROM events ORDER BY source_offset",
    "SELECT tenant_id, event_id, raw, reason, source, source_offset FROM rejected_events ORDER BY source, source_offset",
    "SELECT tenant_id, event_id, customer_id, timestamp, watermark, raw, reason, source_offset FROM late_events ORDER BY source_offset",
    "SELECT * FROM credit_grants ORDER BY tenant_id, grant_id",
    "SELECT * FROM credit_balances ORDER BY tenant_id, customer_id",
    "SELECT * FROM credit_ledger ORDER BY tenant_id, customer_id, grant_id, entry, at",
];

fn tables(workers: usize, epoch_bytes: u64, commit_every: u64) -> Vec<Vec<Vec<String>>> {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    run_case_committing("medium", &data, workers, epoch_bytes, commit_every);
    let mut out: Vec<_> = TABLE_SQL.iter().map(|sql| query_csv(&data, sql)).collect();
    out.push(query_csv(
        &data,
        "SELECT COUNT(*), SUM(CASE WHEN is_final THEN 1 ELSE 0 END) FROM usage_windows",
    ));
    out
}

#[test]
fn same_tables_with_one_and_two_workers_and_any_epoch_size() {
    let one = tables(1, 64 << 20, 1);
    assert!(one[0].len() > 1000, "usage_windows is not trivially empty");
    let two = tables(2, 64 << 20, 1);
    assert_eq!(one, two, "--workers 1 vs --workers 2");
    let two_small_epochs = tables(2, 16 << 10, 1);
    assert_eq!(one, two_small_epochs, "one epoch vs 16 KiB epochs");
    let batched_commits = tables(2, 8 << 10, 5);
    assert_eq!(
        one, batched_commits,
        "8 KiB epochs committed five at a time"
    );
}
