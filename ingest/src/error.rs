use thiserror::Error;

/// A source that could not be read, or a record that could not be parsed.
/// Messages name the file and, where known, the line and column.
#[derive(Debug, Error)]
pub enum IngestError {
    /// The I/O error is part of the message, not a separate cause, so a
    /// chain of errors says it once.
    #[error("reading {path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("reading {path}: {message}")]
    Format { path: String, message: String },
    #[error("reading {path}: line {line}, column '{column}': {message}")]
    Field {
        path: String,
        line: u64,
        column: String,
        message: String,
    },
}
