//! Writing one Arrow batch as one Parquet object (Snappy-compressed, dictionary-encoded
//! strings), readable by any Parquet reader.

use crate::{DataStore, Result};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

/// Encodes `batch` as Parquet bytes.
pub fn encode(batch: &RecordBatch) -> Result<Vec<u8>> {
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(1 << 20))
        .build();
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
