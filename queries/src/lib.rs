//! `om-queries`: SQL over the committed tables with DataFusion.
//!
//! [`QueryEngine::open`] reads the newest commit record of a data location and registers
//! every table of DESIGN.md section 4 under its SQL name, over exactly the Parquet files
//! that commit names (so a query sees whole epochs only; a table with no rows yet is
//! registered empty with its schema). [`format`] renders results as a table, CSV or JSON.
//!
//! [`QueryEngine::open_scoped`] with [`Scope::Tenant`] opens a session for one tenant
//! (the SQL endpoints of `openmonetize serve`): each table name is a view of the table
//! filtered on `tenant_id`, and the unfiltered tables are never registered, so no SQL
//! (joins, subqueries, UNION, CTEs) can reach another tenant's rows. The session has no
//! `information_schema`, no table functions (`generate_series`, `range`) and no table
//! factories, and accepts only queries: DDL (`CREATE EXTERNAL TABLE ...`), DML and
//! statements (`SET`, ...) are refused.

pub mod billing;
pub mod export;

use arrow::record_batch::RecordBatch;
use datafusion::catalog::TableProvider;
use datafusion::datasource::MemTable;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::datasource::{ViewTable, provider_as_source};
use datafusion::execution::SessionStateBuilder;
use datafusion::logical_expr::LogicalPlanBuilder;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext, col, lit};
use om_model::{Config, schema};
use om_sinks::{CommitRecord, DataStore};
use std::collections::HashMap;
use std::sync::Arc;

/// A query error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the data location failed.
    #[error(transparent)]
    Sink(#[from] om_sinks::Error),
    /// DataFusion rejected or failed the query.
    #[error(transparent)]
    DataFusion(#[from] datafusion::error::DataFusionError),
    /// Formatting the result failed.
    #[error("formatting the result: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// The billing tables could not be computed (an amount beyond 38 digits, an input
    /// table of an unexpected shape).
    #[error("billing: {0}")]
    Billing(String),
    /// An export manifest could not be written or read.
    #[error("export manifest: {0}")]
    Manifest(serde_json::Error),
    /// An output format name that does not exist.
    #[error("unknown format `{0}`; use table, csv or json")]
    Format(String),
}

/// Result with the query error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Whose rows a session sees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every tenant's (the `openmonetize query` CLI, admin keys).
    All,
    /// One tenant's only, read-only.
    Tenant(String),
}

/// A SQL session over one data location's last commit.
pub struct QueryEngine {
    ctx: SessionContext,
    commit: Option<CommitRecord>,
    scope: Scope,
    config: Arc<Config>,
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
        QueryEngine::open_scoped(data_url, Scope::All).await
    }

    /// Opens `data_url` for `scope` (see the module docs for what a tenant session
    /// allows), with the built-in config's plans and allowed lateness for the billing
    /// tables; use [`QueryEngine::open_with_config`] with the job's config to price
    /// invoices as the job's plans do.
    pub async fn open_scoped(data_url: &str, scope: Scope) -> Result<QueryEngine> {
        QueryEngine::open_with_config(data_url, scope, Arc::new(Config::builtin())).await
    }

    /// Opens `data_url` for `scope`; the billing tables (`invoices`, `invoice_lines`,
    /// `revenue`) use `config`'s plans and allowed lateness.
    pub async fn open_with_config(
        data_url: &str,
        scope: Scope,
        config: Arc<Config>,
    ) -> Result<QueryEngine> {
        let store = DataStore::open(data_url)?;
        let commit = CommitRecord::latest(&store).await?;
        let ctx = match scope {
            Scope::All => SessionContext::new(),
            Scope::Tenant(_) => tenant_context(),
        };
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
                let empty = Arc::new(MemTable::try_new(schema, vec![vec![]])?);
                register(&ctx, name, empty, &scope)?;
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
            register(&ctx, name, Arc::new(ListingTable::try_new(config)?), &scope)?;
        }
        let watermark = commit.as_ref().and_then(|c| c.watermark_micros);
        let other_config = commit
            .as_ref()
            .and_then(|c| c.billing_digest.as_deref())
            .is_some_and(|d| d != config.billing_digest());
        let billing =
            billing::Billing::new(&ctx, Arc::clone(&config), watermark, other_config).await?;
        for name in schema::DERIVED_TABLES {
            ctx.register_table(name, billing.table(name))?;
        }
        Ok(QueryEngine {
            ctx,
            commit,
            scope,
            config,
        })
    }

    /// Whose rows the session sees.
    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    /// The commit the tables are read at (`None` before the first commit).
    pub fn commit(&self) -> Option<&CommitRecord> {
        self.commit.as_ref()
    }

    /// Whether the calendar month starting at `start` is final at this commit: it ends
    /// at or before watermark - allowed_lateness, so no accepted event can change it
    /// (the rule of `usage_windows.is_final`).
    pub fn period_is_final(&self, start: om_model::Micros) -> bool {
        let end = om_model::WindowSize::Month.end(start);
        self.commit
            .as_ref()
            .and_then(|c| c.watermark_micros)
            .is_some_and(|w| end <= w - self.config.pipeline.allowed_lateness)
    }

    /// The DataFusion session, for registering more views.
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// Runs one SQL statement and collects its result; a tenant session runs queries
    /// only.
    pub async fn sql(&self, sql: &str) -> Result<Vec<RecordBatch>> {
        Ok(self.query(sql).await?.1)
    }

    /// As [`QueryEngine::sql`], with the result's schema (known even with no rows).
    pub async fn query(
        &self,
        sql: &str,
    ) -> Result<(arrow::datatypes::SchemaRef, Vec<RecordBatch>)> {
        let options = match self.scope {
            Scope::All => SQLOptions::new(),
            Scope::Tenant(_) => SQLOptions::new()
                .with_allow_ddl(false)
                .with_allow_dml(false)
                .with_allow_statements(false),
        };
        let df = self.ctx.sql_with_options(sql, options).await?;
        let schema = Arc::new(df.schema().as_arrow().clone());
        Ok((schema, df.collect().await?))
    }
}

/// A session for one tenant: the default functions, but no table functions, no table
/// factories and no `information_schema`.
fn tenant_context() -> SessionContext {
    let config = SessionConfig::new().with_information_schema(false);
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_default_features()
        .with_table_function_list(Vec::new())
        .with_table_factories(HashMap::new())
        .build();
    SessionContext::new_with_state(state)
}

/// Registers a table under its SQL name: as is for [`Scope::All`], as a view of its
/// tenant's rows for [`Scope::Tenant`] (the table itself stays unnamed).
fn register(
    ctx: &SessionContext,
    name: &str,
    table: Arc<dyn TableProvider>,
    scope: &Scope,
) -> Result<()> {
    let view: Arc<dyn TableProvider> = match scope {
        Scope::All => table,
        Scope::Tenant(tenant) => {
            let plan = LogicalPlanBuilder::scan(name, provider_as_source(table), None)?
                .filter(col("tenant_id").eq(lit(tenant.as_str())))?
                .build()?;
            Arc::new(ViewTable::new(plan, None))
        }
    };
    ctx.register_table(name, view)?;
    Ok(())
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

/// `b` with its decimal columns as exact text (`"12.500000000"`).
pub(crate) fn decimals_as_text(b: &RecordBatch) -> Result<RecordBatch> {
    let schema = b.schema();
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut columns = Vec::with_capacity(schema.fields().len());
    for (f, c) in schema.fields().iter().zip(b.columns()) {
        if matches!(f.data_type(), arrow::datatypes::DataType::Decimal128(..)) {
            let text = arrow::compute::cast(c, &arrow::datatypes::DataType::Utf8)?;
            fields.push(
                f.as_ref()
                    .clone()
                    .with_data_type(arrow::datatypes::DataType::Utf8),
            );
            columns.push(text);
        } else {
            fields.push(f.as_ref().clone());
            columns.push(Arc::clone(c));
        }
    }
    let schema = Arc::new(arrow::datatypes::Schema::new(fields));
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// Query results as a JSON array of row objects, with decimals as exact strings
/// (`"12.500000000"`), since JSON numbers are read as binary floats by most clients.
pub fn json_rows(batches: &[RecordBatch]) -> Result<String> {
    let mut w = arrow::json::ArrayWriter::new(Vec::new());
    for b in batches {
        w.write(&decimals_as_text(b)?)?;
    }
    w.finish()?;
    let out = w.into_inner();
    Ok(if out.is_empty() {
        "[]".to_string()
    } else {
        String::from_utf8_lossy(&out).into_owned()
    })
}
