//! Errors of the sinks.

/// A sink error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The `--data` URL cannot be used.
    #[error("data location `{url}`: {message}")]
    Location {
        /// The URL as given.
        url: String,
        /// What is wrong and what is allowed.
        message: String,
    },
    /// The object store failed.
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    /// Arrow failed to build a batch.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// Parquet encoding failed.
    #[error("parquet: {0}")]
    Parquet(#[from] ::parquet::errors::ParquetError),
    /// A background write of an object failed.
    #[error("writing {path}: {message}")]
    Upload {
        /// The object's path.
        path: String,
        /// What failed.
        message: String,
    },
    /// A commit record could not be read or written.
    #[error("commit record {path}: {message}")]
    Commit {
        /// Its path.
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// Result with the sink error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
