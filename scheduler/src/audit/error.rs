//! What can go wrong writing or reading an audit log.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum AuditError {
    #[error("audit log {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("audit log {path}: {message}")]
    Corrupt { path: String, message: String },
    #[error("audit id column {column:?} is not in the events (their columns: {available})")]
    IdColumn { column: String, available: String },
    #[error("audit id column {column:?} is {found}; expected a string or integer column")]
    IdType { column: String, found: String },
    #[error("the events have a column named {column:?}; the audit record's own columns start with \"audit_\": rename it")]
    ColumnClash { column: String },
    #[error("audit needs the pipeline's own model = \"…\": it records scored events")]
    NoModel,
    #[error("audit log {dir}: no record has id {id:?} ({segments} segments searched)")]
    NotFound {
        dir: String,
        id: String,
        segments: usize,
    },
    #[error("audit log {dir}: no records with event time in [{from}, {to})")]
    NoRecords {
        dir: String,
        from: String,
        to: String,
    },
    #[error("audit log {dir}: {what}")]
    Layout { dir: String, what: String },
    #[error("audit log {dir}: model {version} is not in the model store ({path})")]
    ModelMissing {
        dir: String,
        version: String,
        path: String,
    },
    #[error("audit log {dir}: stored model {version}")]
    Model {
        dir: String,
        version: String,
        #[source]
        source: roo_kernels::ModelError,
    },
    #[error("model {model}: the recorded columns do not fit it")]
    Bind {
        model: String,
        #[source]
        source: roo_kernels::BindError,
    },
    #[error("{what}: {message}")]
    Arrow { what: String, message: String },
    #[error("time {text:?}: expected RFC 3339 (2026-11-03T14:00:00Z), a date (2026-11-03) or microseconds since the epoch")]
    Time { text: String },
    #[error("replay: {0}")]
    Replay(String),
    #[error("the reader stopped reading the records")]
    Stopped,
}

impl AuditError {
    pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Self + '_ {
        move |source| Self::Io {
            path: path.display().to_string(),
            source,
        }
    }
}
