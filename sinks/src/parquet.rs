//! Encoding one Arrow batch as one Parquet object, readable by any Parquet reader:
//! Snappy-compressed, strings dictionary-encoded except the columns that are unique per
//! row (event ids, raw payloads, properties), where a dictionary costs time and saves
//! nothing.
//!
//! Statistics (min/max per column chunk) are kept where they let a query skip files:
//! timestamps, integers and booleans (every window and day partition file has one
//! `window_start`, so a query for a time range skips the other partitions' files), and
//! the ids (`id`, `event_id`), since ids that grow with time (ULIDs, sequences) let a
//! lookup by id (retractions) skip files. Other strings and decimals get none: each
//! worker's file holds all its customers, tenants and meters, so their min and max prune
//! nothing, and computing them costs a comparison of every value: about a quarter of
//! the encoding time of a `usage_windows` partition, which a live job rewrites at every
//! commit (`om-stages --usage-rows`).

use crate::Result;
use arrow::datatypes::{DataType, Schema};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterPropertiesBuilder};
use parquet::schema::types::ColumnPath;

/// The writer settings for `schema`'s columns (described above), to adjust or build.
pub fn properties(schema: &Schema) -> WriterPropertiesBuilder {
    let mut props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_statistics_enabled(EnabledStatistics::Chunk)
        .set_max_row_group_row_count(Some(1 << 20));
    for column in ["id", "event_id", "properties", "raw", "source_offset"] {
        if schema.column_with_name(column).is_some() {
            props = props.set_column_dictionary_enabled(ColumnPath::from(column), false);
        }
    }
    for field in schema.fields() {
        let prunes = match field.data_type() {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                matches!(field.name().as_str(), "id" | "event_id")
            }
            DataType::Decimal128(..) | DataType::Decimal256(..) => false,
            _ => true,
        };
        if !prunes {
            props = props.set_column_statistics_enabled(
                ColumnPath::from(field.name().as_str()),
                EnabledStatistics::None,
            );
        }
    }
    props
}

/// Encodes `batch` as Parquet bytes.
pub fn encode(batch: &RecordBatch) -> Result<Vec<u8>> {
    encode_with(batch, properties(&batch.schema()).build())
}

/// Encodes `batch` as Parquet bytes with the writer settings `props`.
pub fn encode_with(batch: &RecordBatch, props: WriterProperties) -> Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(batch.get_array_memory_size() / 2 + 1024);
    let mut writer = ArrowWriter::try_new(&mut buf, batch.schema(), Some(props))?;
    writer.write(batch)?;
    writer.close()?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::{UsageRow, usage_windows};
    use om_model::Decimal9;
    use om_model::time::WindowSize;
    use parquet::file::reader::{FileReader, SerializedFileReader};

    /// Which columns of the file `bytes` carry statistics.
    fn with_statistics(bytes: Vec<u8>) -> Vec<(String, bool)> {
        let reader = SerializedFileReader::new(bytes::Bytes::from(bytes)).unwrap();
        let group = reader.metadata().row_group(0);
        group
            .columns()
            .iter()
            .map(|c| (c.column_path().string(), c.statistics().is_some()))
            .collect()
    }

    #[test]
    fn statistics_are_kept_where_they_prune() {
        let row = |customer_id, start| UsageRow {
            tenant_id: "acme",
            customer_id,
            meter: "tokens",
            dimensions: "{}",
            size: WindowSize::Day,
            start,
            value: Decimal9::from_int(3),
            events: 1,
            is_final: false,
        };
        let batch = usage_windows([row("c1", 0), row("c2", 86_400_000_000)].into_iter()).unwrap();
        let stats = with_statistics(encode(&batch).unwrap());
        let kept: Vec<&str> = stats
            .iter()
            .filter(|(_, s)| *s)
            .map(|(c, _)| c.as_str())
            .collect();
        assert_eq!(
            kept,
            ["window_start", "window_end", "events", "is_final"],
            "{stats:?}"
        );
        // Ids keep theirs (retractions look events up by id).
        let ids = arrow::array::StringArray::from(vec!["e1", "e2"]);
        let ids = RecordBatch::try_from_iter([
            (
                "id",
                std::sync::Arc::new(ids.clone()) as arrow::array::ArrayRef,
            ),
            ("customer_id", std::sync::Arc::new(ids)),
        ])
        .unwrap();
        assert_eq!(
            with_statistics(encode(&ids).unwrap()),
            [("id".to_string(), true), ("customer_id".to_string(), false)]
        );
    }
}
