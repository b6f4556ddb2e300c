//! What sources hand on: micro-batches with their provenance, and dead letters.

use std::ops::Range;
use std::sync::Arc;
use std::time::SystemTime;

use arrow_array::RecordBatch;

/// Raw bytes a dead letter keeps of its record; the rest is cut (the
/// length of the whole record is still reported).
pub const DEAD_LETTER_RAW_BYTES_MAX: usize = 4096;

/// A record that could not be turned into a row, kept as data: where it
/// came from, its bytes, and why it was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// The source's name (a file path, `tcp://addr#conn`).
    pub source: Arc<str>,
    /// Byte offset of the record's first byte in its source stream.
    pub offset: u64,
    /// Line of the record's first byte (1-based), for line-based formats.
    pub line: Option<u64>,
    /// The record's bytes, at most [`DEAD_LETTER_RAW_BYTES_MAX`].
    pub raw: Vec<u8>,
    /// The record's whole length in bytes (`raw` may hold less).
    pub raw_len: u64,
    /// What was wrong, naming the column and what was expected.
    pub reason: String,
    /// The events this letter stands for: 1 for a record that could not be
    /// read; a batch's rows when a later stage refused the batch whole.
    pub records: u64,
}

impl std::fmt::Display for DeadLetter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at byte {}", self.source, self.offset)?;
        if let Some(line) = self.line {
            write!(f, " (line {line})")?;
        }
        write!(f, ": {}", self.reason)
    }
}

/// A micro-batch from one source: rows that parsed, the records that did
/// not, and where in the source both came from.
#[derive(Clone, Debug)]
pub struct IngestBatch {
    pub source: Arc<str>,
    /// 0, 1, 2, … per source: the order batches left the source in.
    pub seq: u64,
    /// The source bytes this batch covers, good rows and dead letters alike;
    /// consecutive batches of a source cover consecutive ranges. For sources
    /// of ready-made batches (Arrow IPC, Parquet), a range of row numbers.
    pub offsets: Range<u64>,
    /// When the batch's oldest event was read.
    pub ingest_time: SystemTime,
    pub batch: RecordBatch,
    pub dead_letters: Vec<DeadLetter>,
}

impl IngestBatch {
    /// Records this batch accounts for: rows plus dead letters.
    pub fn records(&self) -> usize {
        self.batch.num_rows()
            + self
                .dead_letters
                .iter()
                .map(|d| d.records as usize)
                .sum::<usize>()
    }
}
