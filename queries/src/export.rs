//! Exports of one calendar month (`openmonetize export`, and `[[exports]]` run by the
//! live job): usage statements, invoices or revenue, written as files to a destination
//! (local path, `file://`, `s3://...`) with a manifest.
//!
//! Layout: `<to>/<kind>/<YYYY-MM>/<format>/<table>.<csv|jsonl|parquet>` and
//! `<to>/<kind>/<YYYY-MM>/<format>/manifest.json` (written last). The files hold only what the
//! period's data determines (rows sorted by their key, no export time, no `as_of`), so
//! exporting a final period again writes byte-identical files.
//!
//! - `statements`: `usage_statements`, every meter's month row per customer and
//!   dimension group (the `usage_windows` month rows);
//! - `invoices`: `invoices` and `invoice_lines` of the month;
//! - `revenue`: the `revenue` rows of the month's days.

use crate::billing::period_label;
use crate::{Error, QueryEngine, Result};
use arrow::record_batch::RecordBatch;
use om_model::export::{ExportFormat, ExportKind};
use om_model::time::format_micros;
use om_model::{Micros, WindowSize};
use om_sinks::DataStore;
use sha2::{Digest, Sha256};

/// (file name, query) of each file of `kind`, for the month starting at `start`.
fn queries(kind: ExportKind, start: Micros) -> Vec<(&'static str, String)> {
    let label = period_label(start);
    let from = format_micros(start);
    let to = format_micros(WindowSize::Month.end(start));
    match kind {
        ExportKind::Statements => vec![(
            "usage_statements",
            format!(
                "SELECT tenant_id, customer_id, meter, dimensions, '{label}' AS period, value, events, is_final \
                 FROM usage_windows WHERE window_size = 'month' AND window_start = TIMESTAMP '{from}' \
                 ORDER BY tenant_id, customer_id, meter, dimensions"
            ),
        )],
        ExportKind::Invoices => vec![
            (
                "invoices",
                format!(
                    "SELECT tenant_id, customer_id, period, period_start, period_end, plan, currency, \
                     subtotal, minimum_true_up, total, credits_applied, credit_overage, lines, is_final \
                     FROM invoices WHERE period = '{label}' ORDER BY tenant_id, customer_id"
                ),
            ),
            (
                "invoice_lines",
                format!(
                    "SELECT * FROM invoice_lines WHERE period = '{label}' \
                     ORDER BY tenant_id, customer_id, line"
                ),
            ),
        ],
        ExportKind::Revenue => vec![(
            "revenue",
            format!(
                "SELECT * FROM revenue WHERE day >= TIMESTAMP '{from}' AND day < TIMESTAMP '{to}' \
                 ORDER BY tenant_id, customer_id, grant_id, day"
            ),
        )],
    }
}

/// The batches as one file of `format`.
fn encode(
    format: ExportFormat,
    schema: arrow::datatypes::SchemaRef,
    batches: &[RecordBatch],
) -> Result<Vec<u8>> {
    let batch = arrow::compute::concat_batches(&schema, batches)?;
    Ok(match format {
        ExportFormat::Csv => {
            let mut out = Vec::new();
            let mut w = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut out);
            w.write(&batch)?;
            drop(w);
            out
        }
        ExportFormat::Json => {
            let mut w = arrow::json::LineDelimitedWriter::new(Vec::new());
            w.write(&crate::decimals_as_text(&batch)?)?;
            w.finish()?;
            w.into_inner()
        }
        ExportFormat::Parquet => om_sinks::parquet::encode(&batch)?,
    })
}

/// One export run's request.
#[derive(Clone, Debug)]
pub struct Export {
    /// What to export.
    pub kind: ExportKind,
    /// Start of the month.
    pub period: Micros,
    /// File format.
    pub format: ExportFormat,
}

impl Export {
    /// `<kind>/<YYYY-MM>/<format>`, the folder of the export under the destination.
    pub fn folder(&self) -> String {
        format!(
            "{}/{}/{}",
            self.kind.as_str(),
            period_label(self.period),
            self.format.as_str()
        )
    }

    /// Where its manifest goes.
    pub fn manifest_path(&self) -> String {
        format!("{}/manifest.json", self.folder())
    }
}

/// A file of an export, as its manifest lists it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExportedFile {
    /// Path under the destination.
    pub path: String,
    /// Rows in it.
    pub rows: u64,
    /// Its size.
    pub bytes: u64,
    /// SHA-256 of its bytes, hex.
    pub sha256: String,
}

/// `manifest.json` of an export run.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExportManifest {
    /// `statements`, `invoices` or `revenue`.
    pub kind: String,
    /// `YYYY-MM`.
    pub period: String,
    /// `csv`, `json` or `parquet`.
    pub format: String,
    /// Whether the month was final (no accepted event can change it any more) when
    /// exported; a draft otherwise.
    pub is_final: bool,
    /// The files, in order.
    pub files: Vec<ExportedFile>,
}

/// Whether this export already has a manifest at `to` that says its month was final
/// (a draft of a month that was still open does not count).
pub async fn final_exists(to: &DataStore, export: &Export) -> Result<bool> {
    let Some(bytes) = to.get(&export.manifest_path()).await? else {
        return Ok(false);
    };
    let manifest: ExportManifest = serde_json::from_slice(&bytes).map_err(Error::Manifest)?;
    Ok(manifest.is_final)
}

/// Runs one export: queries its tables at the engine's commit, writes its files, then
/// its manifest.
pub async fn run(engine: &QueryEngine, to: &DataStore, export: &Export) -> Result<ExportManifest> {
    let mut files = Vec::new();
    for (name, sql) in queries(export.kind, export.period) {
        let df = engine.context().sql(&sql).await?;
        let schema = std::sync::Arc::new(df.schema().as_arrow().clone());
        let batches = df.collect().await?;
        let rows = batches.iter().map(|b| b.num_rows() as u64).sum();
        let bytes = encode(export.format, schema, &batches)?;
        let path = format!("{}/{name}.{}", export.folder(), export.format.extension());
        files.push(ExportedFile {
            path: path.clone(),
            rows,
            bytes: bytes.len() as u64,
            sha256: hex(&Sha256::digest(&bytes)),
        });
        to.put(&path, bytes).await?;
    }
    let manifest = ExportManifest {
        kind: export.kind.as_str().into(),
        period: period_label(export.period),
        format: export.format.as_str().into(),
        is_final: engine.period_is_final(export.period),
        files,
    };
    let mut text = serde_json::to_vec_pretty(&manifest).map_err(Error::Manifest)?;
    text.push(b'\n');
    to.put(&export.manifest_path(), text).await?;
    Ok(manifest)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
