//! What an enrichment is (`[[pipeline.enrich]]`), and every way a table or
//! its use can be refused, each naming the table, where and what was
//! expected.

use std::path::PathBuf;

use thiserror::Error;

/// What an event with no row to join gets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Missing {
    /// Null columns (NaN to a model).
    #[default]
    Null,
    /// The event goes to the dead letters, naming its key.
    DeadLetter,
}

/// One `[[pipeline.enrich]]`.
#[derive(Clone, Debug, PartialEq)]
pub struct EnrichSpec {
    /// Names the operator, the `<name>_version` column and the table for
    /// Flight (`["tables", name]`, `reload-table`).
    pub name: String,
    /// Parquet, Arrow IPC or CSV (by extension).
    pub table: PathBuf,
    /// The event's column and the table's column of the same name.
    pub key: String,
    /// The table's columns appended to each event; `None`: every column
    /// but the key and `valid_from`.
    pub columns: Option<Vec<String>>,
    /// A table column of Int64 µs since the epoch (or a timestamp): each
    /// row is a version of its key, valid from then on (an as-of join).
    pub valid_from: Option<String>,
    pub missing: Missing,
    /// A table's memory bound in bytes (columns, keys and index).
    pub table_bytes_max: usize,
}

/// The default bound on a table's memory.
pub const TABLE_MB_DEFAULT: u64 = 1024;

/// A table that cannot be loaded, or an enrichment that cannot run on
/// its pipeline's input.
#[derive(Debug, Error)]
pub enum EnrichError {
    #[error("table {table}: {source}")]
    Read {
        table: String,
        #[source]
        source: roo_ingest::IngestError,
    },
    #[error("table {table}: cannot tell its format from the extension; expected .parquet, .arrow/.ipc or .csv")]
    Format { table: String },
    #[error("table {table}: {at}: {reason}")]
    BadRow {
        table: String,
        at: String,
        reason: String,
    },
    #[error("table {table}: no column {column:?} ({what}); it has {available}")]
    NoTableColumn {
        table: String,
        column: String,
        what: &'static str,
        available: String,
    },
    #[error("enrich {name:?}: the input has no key column {column:?} (it has {available})")]
    NoEventKey {
        name: String,
        column: String,
        available: String,
    },
    #[error("table {table}: key column {column:?} is {found}; expected an integer or a string")]
    KeyType {
        table: String,
        column: String,
        found: String,
    },
    #[error("enrich {name:?}: the event's key {column:?} is {event}, the table's is {table}; expected both integers or both strings")]
    KeyMismatch {
        name: String,
        column: String,
        event: String,
        table: String,
    },
    #[error("table {table}: valid_from column {column:?} is {found}; expected int64 microseconds since the Unix epoch, or a timestamp")]
    ValidFromType {
        table: String,
        column: String,
        found: String,
    },
    #[error(
        "table {table}: row {row}: {column:?} is null; every row needs a key and a valid_from"
    )]
    NullCell {
        table: String,
        row: u64,
        column: String,
    },
    #[error("table {table}: rows {first} and {row} both hold key {key}{at}; expected one row per key{per}")]
    Duplicate {
        table: String,
        first: u64,
        row: u64,
        key: String,
        at: String,
        per: &'static str,
    },
    #[error("table {table}: row {row}: key {key} has valid_from {found} after {previous} (row {previous_row}); expected each key's versions in increasing valid_from order")]
    NotMonotone {
        table: String,
        row: u64,
        key: String,
        found: i64,
        previous: i64,
        previous_row: u64,
    },
    #[error("table {table}: {bytes} bytes in memory ({rows} rows) is past table_mb = {limit_mb} MiB; raise table_mb or load fewer columns")]
    TooBig {
        table: String,
        bytes: u64,
        rows: u64,
        limit_mb: u64,
    },
    #[error("table {table}: more than {max} rows; expected at most {max}")]
    TooManyRows { table: String, max: u64 },
    #[error("enrich {name:?}: column {column:?} exists already (an input column, a feature or another enrichment); name the table's column differently or leave it out of columns")]
    Clash { name: String, column: String },
    #[error("enrich {name:?}: valid_from needs the pipeline's event_time column (an as-of join is by event time)")]
    NoEventTime { name: String },
    #[error("table {table}: column {column:?} is now {found}, was {expected}: a reload may not change the pipeline's output schema")]
    SchemaChanged {
        table: String,
        column: String,
        found: String,
        expected: String,
    },
    #[error(
        "table {table}: the file changed while it was read; it is read again at its next change"
    )]
    Changed { table: String },
    #[error("table {table}: upsert: column {column:?}: {reason}")]
    Upsert {
        table: String,
        column: String,
        reason: String,
    },
}
