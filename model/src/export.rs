//! What can be exported, and in which file formats (issue #8; `openmonetize export`
//! and the config's `[[exports]]`).

/// What an export holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportKind {
    /// Month usage per customer, meter and dimension group.
    Statements,
    /// Invoices and their lines.
    Invoices,
    /// Revenue recognition of prepaid credits.
    Revenue,
}

impl ExportKind {
    /// The names, for messages.
    pub const NAMES: &str = "statements, invoices or revenue";

    /// The name in the CLI, config and paths.
    pub fn as_str(self) -> &'static str {
        match self {
            ExportKind::Statements => "statements",
            ExportKind::Invoices => "invoices",
            ExportKind::Revenue => "revenue",
        }
    }

    /// Parses `statements`, `invoices` or `revenue`.
    pub fn parse(text: &str) -> Option<ExportKind> {
        Some(match text {
            "statements" => ExportKind::Statements,
            "invoices" => ExportKind::Invoices,
            "revenue" => ExportKind::Revenue,
            _ => return None,
        })
    }
}

/// File formats of exports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    /// CSV with a header row; decimals with 9 fractional digits.
    Csv,
    /// JSON lines; decimals as exact strings.
    Json,
    /// Parquet; decimals as Decimal128(38, 9).
    Parquet,
}

impl ExportFormat {
    /// The names, for messages.
    pub const NAMES: &str = "csv, json or parquet";

    /// Parses `csv`, `json` or `parquet`.
    pub fn parse(text: &str) -> Option<ExportFormat> {
        Some(match text {
            "csv" => ExportFormat::Csv,
            "json" => ExportFormat::Json,
            "parquet" => ExportFormat::Parquet,
            _ => return None,
        })
    }

    /// The name in the CLI, config and paths.
    pub fn as_str(self) -> &'static str {
        match self {
            ExportFormat::Csv => "csv",
            ExportFormat::Json => "json",
            ExportFormat::Parquet => "parquet",
        }
    }

    /// The file extension.
    pub fn extension(self) -> &'static str {
        match self {
            ExportFormat::Csv => "csv",
            ExportFormat::Json => "jsonl",
            ExportFormat::Parquet => "parquet",
        }
    }
}
