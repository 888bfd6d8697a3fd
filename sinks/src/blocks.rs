//! A table file written in blocks of rows, one row group each, whose leading columns (the
//! rows' keys) are copied byte for byte from the file written before whenever a block
//! holds the same rows, in the same order, as that file's block at the same place. Only
//! the trailing columns (the values) of such a block are encoded again.
//!
//! This is how a live job rewrites an open `usage_windows` partition at every commit. A
//! partition keeps its windows in file order, new windows after the old ones, so from one
//! commit to the next every full block but the last holds the same windows, with new
//! values. Encoding a row's seven key columns (four of them dictionary-encoded strings,
//! built from the names behind the fingerprints) is about three quarters of writing it
//! (`om-stages --usage-rows`).
//!
//! A copied column chunk keeps its pages, dictionary and statistics; the new file is an
//! ordinary Parquet file for any reader. Only a block that is full ([`BLOCK_ROWS`] rows)
//! in both files is copied from; a shorter last block is always encoded again.

use crate::splice::copied_chunk;
use crate::{Error, Result};
use arrow::array::ArrayRef;
use arrow::datatypes::SchemaRef;
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_writer::compute_leaves;
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData, ParquetMetaDataReader};
use parquet::file::properties::WriterProperties;
use std::ops::Range;
use std::sync::Arc;

/// Rows per block (row group). Small enough that the last, partly filled block costs
/// little to encode again; large enough that each block's dictionaries pay off.
pub const BLOCK_ROWS: usize = 16_384;

/// A file as written, kept to copy its blocks' key columns into the next one.
#[derive(Debug, Clone)]
pub struct BlockFile {
    bytes: Bytes,
    metadata: ParquetMetaData,
}

impl BlockFile {
    /// The file's bytes.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// Rows in block `b`, if the file has it.
    fn block_rows(&self, b: usize) -> Option<usize> {
        let group = self.metadata.row_groups().get(b)?;
        usize::try_from(group.num_rows()).ok()
    }
}

/// Writes `rows` rows of `schema`, in blocks of [`BLOCK_ROWS`]. The first `keys` columns
/// of a block are copied from `previous` when the block lies wholly within its first
/// `kept` rows, which the caller vouches are the previous file's first `kept` rows in
/// the same order. `columns(range, with_keys)` builds the arrays of the rows in `range`:
/// every column of the schema when `with_keys`, else only those after the first `keys`.
pub fn write_blocks(
    schema: &SchemaRef,
    props: WriterProperties,
    keys: usize,
    rows: usize,
    previous: Option<&BlockFile>,
    kept: usize,
    mut columns: impl FnMut(Range<usize>, bool) -> Result<Vec<ArrayRef>>,
) -> Result<BlockFile> {
    let mut out = Vec::new();
    let (mut file, factory) = ArrowWriter::try_new(&mut out, Arc::clone(schema), Some(props))?
        .into_serialized_writer()?;
    for (b, start) in (0..rows).step_by(BLOCK_ROWS).enumerate() {
        let range = start..rows.min(start + BLOCK_ROWS);
        let copy_from = previous.filter(|p| {
            range.len() == BLOCK_ROWS
                && range.end <= kept
                && p.block_rows(b) == Some(BLOCK_ROWS)
                && p.metadata.row_group(b).num_columns() == schema.fields().len()
        });
        let arrays = columns(range.clone(), copy_from.is_none())?;
        let expected = schema.fields().len() - if copy_from.is_some() { keys } else { 0 };
        if arrays.len() != expected {
            return Err(invalid(format!(
                "{} arrays built for a block that needs {expected}",
                arrays.len()
            )));
        }
        let mut arrays = arrays.into_iter();
        let mut group = file.next_row_group()?;
        let writers = factory.create_column_writers(b)?;
        for (c, (mut writer, field)) in writers.into_iter().zip(schema.fields()).enumerate() {
            if let Some(p) = copy_from
                && c < keys
            {
                group.append_column(&p.bytes, copied_chunk(&p.metadata, b, c)?)?;
                continue;
            }
            let array = arrays.next().expect("counted above");
            for leaf in compute_leaves(field, &array)? {
                writer.write(&leaf)?;
            }
            writer.close()?.append_to_row_group(&mut group)?;
        }
        group.close()?;
    }
    file.close()?;
    let bytes = Bytes::from(out);
    let metadata = ParquetMetaDataReader::new()
        .with_page_index_policy(PageIndexPolicy::Optional)
        .parse_and_finish(&bytes)?;
    Ok(BlockFile { bytes, metadata })
}

fn invalid(message: String) -> Error {
    Error::Parquet(parquet::errors::ParquetError::General(message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::{USAGE_KEY_COLUMNS, UsageRow, usage_values, usage_windows};
    use arrow::record_batch::RecordBatch;
    use om_model::Decimal9;
    use om_model::time::WindowSize;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    /// Customer names, one per row.
    fn customers(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("cust_{i:06}")).collect()
    }

    fn row(customers: &[String], i: usize, version: i64) -> UsageRow<'_> {
        UsageRow {
            tenant_id: if i.is_multiple_of(3) {
                "acme"
            } else {
                "default"
            },
            customer_id: &customers[i],
            meter: "tokens",
            dimensions: "{}",
            size: WindowSize::Hour,
            start: 3_600_000_000 * (i as i64 % 2),
            value: Decimal9::from_raw(i as i128 * 1_000 + version as i128),
            events: i as i64 + version,
            is_final: version > 1 && i.is_multiple_of(2),
        }
    }

    /// Writes rows `0..n` of `version`, counting the blocks built with their keys.
    fn write(
        customers: &[String],
        n: usize,
        version: i64,
        previous: Option<&BlockFile>,
        kept: usize,
    ) -> (BlockFile, usize) {
        let schema = &om_model::schema::USAGE_WINDOWS;
        let mut encoded = 0;
        let file = write_blocks(
            schema,
            crate::parquet::properties(schema).build(),
            USAGE_KEY_COLUMNS,
            n,
            previous,
            kept,
            |range, keys| {
                let rows = range.map(|i| row(customers, i, version));
                if keys {
                    encoded += 1;
                    Ok(usage_windows(rows)?.columns().to_vec())
                } else {
                    Ok(usage_values(rows.map(|r| (r.value, r.events, r.is_final))).to_vec())
                }
            },
        )
        .unwrap();
        (file, encoded)
    }

    fn read(file: &BlockFile) -> RecordBatch {
        let batches: Vec<RecordBatch> =
            ParquetRecordBatchReaderBuilder::try_new(file.bytes().clone())
                .unwrap()
                .build()
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
        arrow::compute::concat_batches(&om_model::schema::USAGE_WINDOWS, &batches).unwrap()
    }

    #[test]
    fn blocks_of_kept_rows_copy_their_keys_and_read_back_as_encoded_afresh() {
        let names = customers(3 * BLOCK_ROWS + 100);
        let (first, encoded) = write(&names, 2 * BLOCK_ROWS + 10, 1, None, 0);
        assert_eq!(encoded, 3, "nothing to copy from");
        assert_eq!(first.metadata.num_row_groups(), 3);
        // More rows, new values: the two full kept blocks copy their keys; the short
        // one and the new ones are encoded.
        let n = 3 * BLOCK_ROWS + 100;
        let (second, encoded) = write(&names, n, 2, Some(&first), 2 * BLOCK_ROWS + 10);
        assert_eq!(encoded, 2);
        let fresh = usage_windows((0..n).map(|i| row(&names, i, 2))).unwrap();
        assert_eq!(read(&second), fresh);
        // A file with copied chunks copies on as well.
        let (third, encoded) = write(&names, n, 3, Some(&second), n);
        assert_eq!(encoded, 1, "only the short last block");
        assert_eq!(
            read(&third),
            usage_windows((0..n).map(|i| row(&names, i, 3))).unwrap()
        );
        // Statistics of copied chunks still describe them (window_start prunes files).
        let stats = third.metadata.row_group(0).column(5).statistics().unwrap();
        assert_eq!(stats.min_bytes_opt(), Some(&0i64.to_le_bytes()[..]));
    }

    #[test]
    fn blocks_beyond_the_kept_rows_are_encoded_again() {
        let names = customers(2 * BLOCK_ROWS);
        let (first, _) = write(&names, 2 * BLOCK_ROWS, 1, None, 0);
        // The second block's keys moved (kept ends inside it): only the first is copied.
        let (second, encoded) = write(&names, 2 * BLOCK_ROWS, 2, Some(&first), BLOCK_ROWS + 5);
        assert_eq!(encoded, 1);
        assert_eq!(
            read(&second),
            usage_windows((0..2 * BLOCK_ROWS).map(|i| row(&names, i, 2))).unwrap()
        );
    }

    #[test]
    fn the_wrong_number_of_arrays_is_an_error() {
        let schema = &om_model::schema::USAGE_WINDOWS;
        let e = write_blocks(
            schema,
            crate::parquet::properties(schema).build(),
            USAGE_KEY_COLUMNS,
            3,
            None,
            0,
            |_, _| Ok(vec![]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("0 arrays built for a block that needs 10"),
            "{e}"
        );
    }
}
