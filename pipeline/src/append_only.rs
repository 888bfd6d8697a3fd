//! One worker's append-only tables (`events`, `rejected_events`, `late_events`): each
//! epoch's rows, kept as Arrow batches until the epoch that commits, then written as one
//! Parquet file per table.
//!
//! A table file per epoch made many small files once epochs got short (`serve` cuts one
//! every 50 ms and commits every second): every file stays named in every later commit
//! record, so the record and the tables' file lists grew with the number of epochs, not
//! with the data. Now a worker writes at most one file per table and commit, plus one
//! whenever a table has gathered [`MAX_ROWS`] rows (a file source's long stretches between
//! commits), which bounds the memory it holds. Rows are only ever visible through a
//! commit, so holding them until the commit changes nothing a reader sees; after a crash
//! the job resumes from the last commit and reads (or replays) those epochs again.

use anyhow::Context;
use arrow::record_batch::RecordBatch;
use om_sinks::commit::FileEntry;
use om_sinks::{DataStore, FileChange, Uploads};

/// Rows a table gathers before it is written whatever the commit.
pub const MAX_ROWS: usize = 262_144;

/// The append-only tables, in the order they are written.
pub const TABLES: [&str; 3] = ["events", "rejected_events", "late_events"];

/// Rows not yet written, per table of [`TABLES`].
#[derive(Default)]
pub struct AppendOnly {
    held: [(Vec<RecordBatch>, usize); 3],
}

impl AppendOnly {
    /// Adds an epoch's `rows` of table `TABLES[table]` (nothing when `rows` is 0).
    pub fn add(&mut self, table: usize, batch: RecordBatch, rows: usize) {
        if rows > 0 {
            let (batches, held) = &mut self.held[table];
            batches.push(batch);
            *held += rows;
        }
    }

    /// Writes, as epoch `epoch` of worker `worker`, every table's rows if `commit`, else
    /// those of tables holding [`MAX_ROWS`] or more; returns the files for the committer.
    pub fn write(
        &mut self,
        commit: bool,
        epoch: u64,
        worker: usize,
        store: &DataStore,
        uploads: &mut Uploads,
    ) -> anyhow::Result<Vec<FileChange>> {
        let mut changes = Vec::new();
        for (table, (batches, rows)) in TABLES.iter().zip(&mut self.held) {
            if *rows == 0 || !commit && *rows < MAX_ROWS {
                continue;
            }
            let slot = format!("e{epoch:06}-w{worker}");
            let path = format!("{table}/{slot}.parquet");
            let batch = match batches.as_slice() {
                [one] => one.clone(),
                many => arrow::compute::concat_batches(&many[0].schema(), many)
                    .with_context(|| format!("gathering the rows of {path}"))?,
            };
            let bytes =
                om_sinks::parquet::encode(&batch).with_context(|| format!("encoding {path}"))?;
            uploads.put(store, path.clone(), bytes);
            changes.push(FileChange {
                table: (*table).into(),
                slot,
                file: Some(FileEntry {
                    path,
                    rows: *rows as u64,
                }),
            });
            batches.clear();
            *rows = 0;
        }
        Ok(changes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, Int64Array};
    use std::sync::Arc;

    fn batch(values: &[i64]) -> RecordBatch {
        let column: ArrayRef = Arc::new(Int64Array::from(values.to_vec()));
        RecordBatch::try_from_iter([("n", column)]).unwrap()
    }

    #[test]
    fn rows_wait_for_the_commit_then_go_out_as_one_file_per_table() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let store = DataStore::open("memory://append-only-test").unwrap();
        let mut tables = AppendOnly::default();
        let mut uploads = Uploads::new(runtime.handle());
        tables.add(0, batch(&[1, 2]), 2);
        tables.add(2, batch(&[]), 0);
        assert!(
            tables
                .write(false, 1, 0, &store, &mut uploads)
                .unwrap()
                .is_empty(),
            "nothing before the commit"
        );
        tables.add(0, batch(&[3]), 1);
        tables.add(1, batch(&[9]), 1);
        let changes = tables.write(true, 2, 0, &store, &mut uploads).unwrap();
        uploads.finish().unwrap();
        let written: Vec<(&str, &str, u64)> = changes
            .iter()
            .map(|c| {
                let f = c.file.as_ref().unwrap();
                (c.table.as_str(), f.path.as_str(), f.rows)
            })
            .collect();
        assert_eq!(
            written,
            [
                ("events", "events/e000002-w0.parquet", 3),
                ("rejected_events", "rejected_events/e000002-w0.parquet", 1)
            ]
        );
        let bytes = runtime
            .block_on(store.get("events/e000002-w0.parquet"))
            .unwrap()
            .unwrap();
        assert_eq!(
            bytes,
            om_sinks::parquet::encode(&batch(&[1, 2, 3])).unwrap(),
            "one file of the epochs' rows in order"
        );
        assert!(
            tables
                .write(true, 3, 0, &store, &mut Uploads::new(runtime.handle()))
                .unwrap()
                .is_empty(),
            "written once"
        );
    }

    #[test]
    fn a_table_holding_max_rows_is_written_before_the_commit() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let store = DataStore::open("memory://append-only-max").unwrap();
        let mut tables = AppendOnly::default();
        let mut uploads = Uploads::new(runtime.handle());
        tables.add(0, batch(&[1]), MAX_ROWS);
        tables.add(2, batch(&[1]), 1);
        let changes = tables.write(false, 5, 1, &store, &mut uploads).unwrap();
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].table, "events");
        assert_eq!(changes[0].slot, "e000005-w1");
    }
}
