//! The Parquet files are readable by a third-party reader: pyarrow (installed by
//! `scripts/test`, found through `OM_PYTHON`) reads every committed file with the same
//! row counts and decimal types, and the same usage total as our SQL.

use super::common::{query_csv, run_case};
use std::process::Command;

#[test]
fn pyarrow_reads_every_table_with_exact_decimals() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    run_case("medium", &data, 2, 16 << 10);

    let python = std::env::var("OM_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = super::common::manifest_dir().join("../scripts/check_parquet.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(&data)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    assert!(
        out.status.success(),
        "pyarrow check failed (run scripts/test, which installs pyarrow and sets OM_PYTHON):\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    let sql = query_csv(
        &data,
        "SELECT (SELECT COUNT(*) FROM events) AS a, (SELECT COUNT(*) FROM usage_windows) AS b, \
         (SELECT COUNT(*) FROM rejected_events) AS c, (SELECT COUNT(*) FROM late_events) AS d, \
         (SELECT CAST(SUM(value) AS VARCHAR) FROM usage_windows) AS e",
    );
    let tables = &report["tables"];
    for (i, table) in ["events", "usage_windows", "rejected_events", "late_events"]
        .iter()
        .enumerate()
    {
        assert_eq!(
            tables[table]["rows"].to_string(),
            sql[1][i],
            "{table} row count, pyarrow vs SQL"
        );
    }
    assert_eq!(
        tables["usage_windows"]["types"]["value"],
        "decimal128(38, 9)"
    );
    assert_eq!(tables["events"]["types"]["value"], "decimal128(38, 9)");
    assert_eq!(
        tables["usage_windows"]["types"]["window_start"],
        "timestamp[us, tz=UTC]"
    );
    assert_eq!(
        report["usage_value_sum"].as_str().unwrap(),
        sql[1][4],
        "exact usage total, pyarrow vs SQL"
    );
}
