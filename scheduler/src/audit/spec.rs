//! `[pipeline.audit]` as the scheduler takes it.

use std::path::PathBuf;
use std::time::Duration;

/// Where and how a pipeline keeps its audit log.
#[derive(Clone, Debug)]
pub struct AuditSpec {
    pub dir: PathBuf,
    /// The event id column; `None`: `SOURCE#N`.
    pub id: Option<String>,
    /// Segments whose event hour ended more than this many days ago are
    /// deleted; 0: kept for ever.
    pub retain_days: u32,
    /// Past this many bytes of published segments, the oldest go first.
    pub max_bytes: u64,
    /// A segment is closed and published at this many records...
    pub segment_rows: usize,
    /// ...or once it has been open this long.
    pub segment_age: Duration,
}

impl AuditSpec {
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            id: None,
            retain_days: 400,
            max_bytes: 100 << 30,
            segment_rows: 1 << 20,
            segment_age: Duration::from_secs(60),
        }
    }
}
