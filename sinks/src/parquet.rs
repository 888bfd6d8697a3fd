//! Writing one Arrow batch as one Parquet object, readable by any Parquet reader:
//! Snappy-compressed, strings dictionary-encoded except the columns that are unique per
//! row (event ids, raw payloads, properties), where a dictionary costs time and saves
//! nothing; statistics per column chunk, except for the payload texts (properties, raw):
//! their min and max cost a comparison of every value (long JSON texts with common
//! prefixes) and prune nothing. Ids keep theirs, since ids that grow with time (ULIDs,
//! sequences) let a lookup by id (retractions) skip files.

use crate::{DataStore, Result};
use arrow::datatypes::Schema;
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
    for column in ["properties", "raw"] {
        if schema.column_with_name(column).is_some() {
            props = props
                .set_column_statistics_enabled(ColumnPath::from(column), EnabledStatistics::None);
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

/// Writes `batch` to `path` in `store`; returns the number of bytes written.
pub async fn write(store: &DataStore, path: &str, batch: &RecordBatch) -> Result<usize> {
    let bytes = encode(batch)?;
    let n = bytes.len();
    store.put(path, bytes).await?;
    Ok(n)
}
