//! `om-queries`: SQL over the committed tables with DataFusion.
//!
//! [`QueryEngine::open`] reads the newest commit record of a data location and registers
//! every table of DESIGN.md section 4 under its SQL name, over exactly the Parquet files
//! that commit names (so a query sees whole epochs only; a table with no rows yet is
//! registered empty with its schema). [`format`] renders results as a table, CSV or JSON.

use arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::prelude::SessionContext;
use om_model::schema;
use om_sinks::{CommitRecord, DataStore};
use std::sync::Arc;

/// A query error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the data location failed.
    #[error(transparent)]
    Sink(#[from] om_sinks::Error),
    /// DataFusion rejected or failed the query.
    #[error("{0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),
    /// Formatting the result failed.
    #[error("formatting the result: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// An output format name that does not exist.
    #[error("unknown format `{0}`; use table, csv or json")]
    Format(String),
}

/// Result with the query error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A SQL session over one data location's last commit.
pub struct QueryEngine {
    ctx: SessionContext,
    commit: Option<CommitRecord>,
}

impl std::fmt::Debug for QueryEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "QueryEngine(epoch {:?})",
            self.commit.as_ref().map(|c| c.epoch)
        )
    }
}

impl QueryEngine {
    /// Opens `data_url` and registers its tables as of the newest commit.
    pub async fn open(data_url: &str) -> Result<QueryEngine> {
        let store = DataStore::open(data_url)?;
        let commit = CommitRecord::latest(&store).await?;
        let ctx = SessionContext::new();
        let root = store.root_url().clone();
        if root.scheme() != "file" {
            ctx.register_object_store(&root, store.query_store());
        }
        for name in schema::TABLES {
            let schema = schema::table_schema(name).expect("known table");
            let files: Vec<String> = commit
                .as_ref()
                .and_then(|c| c.tables.get(name))
                .map(|t| t.values().map(|f| f.path.clone()).collect())
                .unwrap_or_default();
            if files.is_empty() {
                ctx.register_table(name, Arc::new(MemTable::try_new(schema, vec![vec![]])?))?;
                continue;
            }
            let urls = files
                .iter()
                .map(|p| {
                    ListingTableUrl::parse(
                        root.join(p)
                            .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?
                            .as_str(),
                    )
                })
                .collect::<Result<Vec<_>, _>>()?;
            let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
                .with_file_extension(".parquet");
            let config = ListingTableConfig::new_with_multi_paths(urls)
                .with_listing_options(options)
                .with_schema(schema);
            ctx.register_table(name, Arc::new(ListingTable::try_new(config)?))?;
        }
        Ok(QueryEngine { ctx, commit })
    }

    /// The commit the tables are read at (`None` before the first commit).
    pub fn commit(&self) -> Option<&CommitRecord> {
        self.commit.as_ref()
    }

    /// The DataFusion session, for registering more views.
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// Runs one SQL statement and collects its result.
    pub async fn sql(&self, sql: &str) -> Result<Vec<RecordBatch>> {
        Ok(self.ctx.sql(sql).await?.collect().await?)
    }
}

/// Output formats of `openmonetize query`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// An aligned text table.
    Table,
    /// CSV with a header row.
    Csv,
    /// One JSON object per row (JSON lines).
    Json,
}

impl std::str::FromStr for Format {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "table" => Ok(Format::Table),
            "csv" => Ok(Format::Csv),
            "json" => Ok(Format::Json),
            other => Err(Error::Format(other.to_string())),
        }
    }
}

/// Renders query results.
pub fn format(batches: &[RecordBatch], format: Format) -> Result<String> {
    match format {
        Format::Table => Ok(arrow::util::pretty::pretty_format_batches(batches)?.to_string()),
        Format::Csv => {
            let mut out = Vec::new();
            {
                let mut w = arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(&mut out);
                for b in batches {
                    w.write(b)?;
                }
            }
            Ok(String::from_utf8_lossy(&out).into_owned())
        }
        Format::Json => {
            let mut w = arrow::json::LineDelimitedWriter::new(Vec::new());
            for b in batches {
                w.write(b)?;
            }
            w.finish()?;
            Ok(String::from_utf8_lossy(&w.into_inner()).into_owned())
        }
    }
}
