//! A Parquet file rewritten with one boolean column set to a constant, every other
//! column chunk copied byte for byte: no row is decoded or encoded again.
//!
//! This is how a `usage_windows` partition whose windows all became final is rewritten
//! when nothing else in it changed since its last file: only `is_final` differs, so the
//! new file is the old one's column chunks (with their statistics, dictionaries and page
//! offsets moved to their new place) and a fresh `is_final` chunk. Encoding the
//! partition's rows again costs about a microsecond a row; the copy costs the bytes.
//!
//! The file keeps its schema, row groups, row order and key-value metadata (the Arrow
//! schema readers use), so any Parquet reader sees the same rows as before except the
//! column set.

use crate::{Error, Result};
use bytes::Bytes;
use parquet::basic::Compression;
use parquet::column::writer::{ColumnCloseResult, ColumnWriter};
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData, ParquetMetaDataReader};
use parquet::file::page_index::column_index::ColumnIndexMetaData;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::writer::SerializedFileWriter;
use std::sync::Arc;

/// The file `file` with every value of the boolean column `column` set to `value`.
pub fn set_bool_column(file: &Bytes, column: &str, value: bool) -> Result<Vec<u8>> {
    let metadata = ParquetMetaDataReader::new()
        .with_page_index_policy(PageIndexPolicy::Optional)
        .parse_and_finish(file)?;
    let file_meta = metadata.file_metadata();
    let schema = file_meta.schema_descr();
    let target = (0..schema.num_columns())
        .find(|&i| schema.column(i).path().string() == column)
        .ok_or_else(|| invalid(format!("the file has no column `{column}`")))?;
    let descr = schema.column(target);
    if descr.physical_type() != parquet::basic::Type::BOOLEAN || descr.max_rep_level() > 0 {
        return Err(invalid(format!("`{column}` is not a flat boolean column")));
    }
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_statistics_enabled(EnabledStatistics::Chunk)
        .set_key_value_metadata(file_meta.key_value_metadata().cloned())
        .build();
    let mut out = Vec::with_capacity(file.len() + 1024);
    let mut writer =
        SerializedFileWriter::new(&mut out, schema.root_schema_ptr(), Arc::new(props))?;
    for (g, group) in metadata.row_groups().iter().enumerate() {
        let rows = usize::try_from(group.num_rows())
            .map_err(|_| invalid(format!("row group {g} has a negative row count")))?;
        let mut group_writer = writer.next_row_group()?;
        for c in 0..group.num_columns() {
            if c == target {
                let mut column_writer = group_writer
                    .next_column()?
                    .ok_or_else(|| invalid("fewer columns than the schema".into()))?;
                let ColumnWriter::BoolColumnWriter(w) = column_writer.untyped() else {
                    return Err(invalid(format!("`{column}` is not written as booleans")));
                };
                let values = vec![value; rows];
                let defined =
                    (descr.max_def_level() > 0).then(|| vec![descr.max_def_level(); rows]);
                w.write_batch(&values, defined.as_deref(), None)?;
                column_writer.close()?;
                continue;
            }
            group_writer.append_column(file, copied_chunk(&metadata, g, c)?)?;
        }
        group_writer.close()?;
    }
    writer.close()?;
    Ok(out)
}

/// Column chunk `c` of row group `g` of the file `metadata` describes, as a result to
/// append to a row group of a new file: the chunk's bytes are copied from the old file
/// and its offsets, statistics and page index moved to their new place.
pub(crate) fn copied_chunk(
    metadata: &ParquetMetaData,
    g: usize,
    c: usize,
) -> Result<ColumnCloseResult> {
    let group = metadata.row_group(g);
    let rows = u64::try_from(group.num_rows())
        .map_err(|_| invalid(format!("row group {g} has a negative row count")))?;
    let column_index = metadata
        .column_index()
        .and_then(|index| index.get(g)?.get(c).cloned())
        .filter(|index| !matches!(index, ColumnIndexMetaData::NONE));
    let offset_index = metadata
        .offset_index()
        .and_then(|index| index.get(g)?.get(c).cloned());
    let chunk = group.column(c);
    Ok(ColumnCloseResult {
        bytes_written: chunk.compressed_size() as u64,
        rows_written: rows,
        metadata: chunk.clone(),
        bloom_filter: None,
        column_index,
        offset_index,
    })
}

fn invalid(message: String) -> Error {
    Error::Parquet(parquet::errors::ParquetError::General(message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::{UsageRow, usage_windows};
    use arrow::array::{Array, BooleanArray};
    use om_model::Decimal9;
    use om_model::time::WindowSize;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    fn read(bytes: Vec<u8>) -> Vec<arrow::record_batch::RecordBatch> {
        ParquetRecordBatchReaderBuilder::try_new(Bytes::from(bytes))
            .unwrap()
            .build()
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// `n` rows of a usage partition, none final.
    fn partition(n: usize) -> Vec<u8> {
        let customers: Vec<String> = (0..n).map(|i| format!("cust_{:05}", i % 700)).collect();
        let dimensions: Vec<String> = (0..n)
            .map(|i| format!("{{\"m\":\"{}\"}}", i % 13))
            .collect();
        let rows = (0..n).map(|i| UsageRow {
            tenant_id: if i % 5 == 0 { "acme" } else { "default" },
            customer_id: &customers[i],
            meter: "tokens",
            dimensions: &dimensions[i],
            size: WindowSize::Hour,
            start: 3_600_000_000 * 24,
            value: Decimal9::from_int(i as i64 * 3 + 1),
            events: i as i64 + 1,
            is_final: false,
        });
        let batch = usage_windows(rows).unwrap();
        crate::parquet::encode(&batch).unwrap()
    }

    #[test]
    fn only_the_column_changes() {
        let before = partition(5_000);
        let after = set_bool_column(&Bytes::from(before.clone()), "is_final", true).unwrap();
        let (old, new) = (read(before), read(after.clone()));
        let (old, new) = (
            arrow::compute::concat_batches(&old[0].schema(), &old).unwrap(),
            arrow::compute::concat_batches(&new[0].schema(), &new).unwrap(),
        );
        assert_eq!(old.schema(), new.schema());
        assert_eq!(new.num_rows(), 5_000);
        let column = old.schema().index_of("is_final").unwrap();
        for c in 0..old.num_columns() {
            if c == column {
                let finals = new
                    .column(c)
                    .as_any()
                    .downcast_ref::<BooleanArray>()
                    .unwrap();
                assert_eq!(finals.true_count(), 5_000);
                assert_eq!(finals.null_count(), 0);
            } else {
                assert_eq!(old.column(c), new.column(c), "column {c}");
            }
        }
        // The new chunk's statistics say so, for readers that prune by them.
        let reader = ParquetMetaDataReader::new()
            .parse_and_finish(&Bytes::from(after))
            .unwrap();
        let stats = reader.row_group(0).column(column).statistics().unwrap();
        assert_eq!(stats.min_bytes_opt(), Some(&[1u8][..]));
        assert_eq!(stats.max_bytes_opt(), Some(&[1u8][..]));
    }

    #[test]
    fn a_missing_or_wrong_column_is_refused() {
        let file = Bytes::from(partition(10));
        let e = set_bool_column(&file, "nope", true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no column `nope`"), "{e}");
        let e = set_bool_column(&file, "events", true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a flat boolean"), "{e}");
    }
}
