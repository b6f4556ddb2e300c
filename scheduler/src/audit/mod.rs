//! The audit log: one record per scored event — what the model saw, what
//! it said, which model version and device said it — kept so a decision
//! can be shown and re-scored months later.
//!
//! ```text
//! DIR/records/hour=YYYY-MM-DDTHH/seg-<opened µs>-<n>.arrow     the records, by event hour
//! DIR/records/hour=…/_seg-<opened µs>-<n>.idx                 each segment's id index
//! DIR/models/<sha256 hex>                                      every model version that scored
//! DIR/definitions/<hash>.txt                                   the features' and tables' definitions
//! ```
//!
//! - `layout.rs` — the one owner of that layout: names, partitions,
//!   listing, retention.
//! - `record.rs` — the record: the batch as the chain's last scorer left
//!   it (every input column as received, every feature and table column,
//!   each model's scores and version) and the `audit_*` columns.
//! - `index.rs` — a segment's index: the ids' hashes, sorted, beside the
//!   (batch, row) they are in, read through a memory map.
//! - `writer.rs` — `AuditWriter`: segments open per event hour, written
//!   as Arrow IPC files with LZ4-compressed buffers, published whole
//!   (fsync, rename, fsync the directory) with their index; the model
//!   store; retention.
//! - `read.rs` — `AuditLog`: one id found through the indexes, a time
//!   range read back, stored models loaded.
//! - `replay.rs` — re-scoring recorded inputs: the recorded model (bit for
//!   bit on the CPU) or a candidate (differences, flipped decisions).
//! - `time.rs` — times as µs since the epoch, written and parsed (RFC 3339).

mod error;
mod index;
mod layout;
mod read;
mod record;
mod replay;
mod spec;
mod time;
mod writer;

pub use error::AuditError;
pub use index::id_hash;
pub use layout::{partition_name, AUDIT_COLUMNS};
pub use read::{conform, AuditLog, ColumnPick, TimeRange};
pub use record::{
    definitions_hash, RecordBuilder, DEFINITIONS, DEVICE, EVENT_TIME, ID, INGEST_TIME,
};
pub use replay::{replay, Candidate, Disagreement, Mismatch, ReplayOptions, ReplayReport};
pub use spec::AuditSpec;
pub use time::{format_us, parse_time_us};
pub use writer::{AuditWriter, Retention};
#[cfg(test)]
mod tests;
