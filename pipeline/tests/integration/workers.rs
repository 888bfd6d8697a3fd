//! The tables (usage, events, rejections, late events and the three credit tables) do
//! not depend on the number of workers nor on how the input is cut into epochs.

use super::common::{LinesRun, query_csv, query_in_process, run_case_committing, run_lines};

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

/// A partition too big for one block, rewritten at commit after commit (its windows
/// updated, new ones added, some final), gives the table it gives written once: the
/// blocks whose key columns are copied from the file before hold the rows they say.
#[test]
fn partitions_rewritten_in_blocks_equal_partitions_written_once() {
    let config = "[[meters]]\nname = \"calls\"\nevent_type = \"call\"\naggregation = \"sum\"\nvalue = \"$.value\"\ngroup_by = { }\nwindows = [\"minute\", \"hour\"]\n\n[pipeline]\nallowed_lateness = \"1h\"\n";
    // Three passes over 36,000 customers (more than two blocks of rows per partition)
    // in one hour, the later ones adding customers; then an event two hours on, which
    // makes the first hour's windows final.
    let mut lines = Vec::new();
    for (pass, customers) in [(0, 36_000), (1, 38_000), (2, 40_000)] {
        for c in 0..customers {
            lines.push(format!(
                r#"{{"id":"e{pass}_{c}","customer_id":"c{c:05}","timestamp":"2026-11-01T05:{:02}:{:02}Z","event_type":"call","value":{}}}"#,
                10 + pass * 10,
                c % 60,
                c % 7 + pass
            ));
        }
    }
    lines.push(
        r#"{"id":"late","customer_id":"c00001","timestamp":"2026-11-01T08:00:00Z","event_type":"call","value":1}"#
            .into(),
    );
    let run = |epoch_bytes: u64| {
        let data = run_lines(LinesRun {
            config,
            events: &lines,
            commands: &[],
            workers: 1,
            epoch_bytes,
            commit_every: 1,
        });
        query_in_process(
            &data,
            "SELECT customer_id, window_size, window_start, value, events, is_final \
             FROM usage_windows ORDER BY customer_id, window_size, window_start",
        )
    };
    let once = run(64 << 20);
    // The minutes of the three passes, the hour, the later minute and hour.
    assert_eq!(once.len(), 36_000 + 38_000 + 40_000 + 40_000 + 2);
    let finals = once.iter().filter(|row| row[5] == "true").count();
    assert_eq!(finals, once.len() - 2, "all but the later minute and hour");
    // About 40 commits: every few hundred customers a commit rewrites the hour partition.
    assert_eq!(once, run(256 << 10));
}
