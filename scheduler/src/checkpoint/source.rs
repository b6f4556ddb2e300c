//! Where a source resumes after a restart, and the check that it is the
//! same source: a file's size and a hash of the consumed prefix's last
//! block; a generator's event index and clock (it is deterministic).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::CheckpointError;

/// Bytes hashed at the end of a file's consumed prefix.
const TAIL_BYTES: u64 = 4096;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SourcePosition {
    File {
        path: PathBuf,
        /// Bytes (text, raw) or rows (Parquet, Arrow IPC) consumed.
        offset: u64,
        /// The file's size in bytes when the checkpoint was taken.
        size: u64,
        /// SHA-256 (hex) of the bytes before `tail_end`: the consumed
        /// prefix's last block (a file of rows: the file's last block).
        tail_sha256: String,
        tail_end: u64,
    },
    Generator {
        /// Events generated.
        events: u64,
        /// The generator's clock: its first event's time, µs since the epoch.
        start_us: i64,
    },
}

fn tail_hash(path: &Path, end: u64) -> Result<String, std::io::Error> {
    let file = File::open(path)?;
    let start = end.saturating_sub(TAIL_BYTES);
    let mut buf = vec![0u8; (end - start) as usize];
    file.read_exact_at(&mut buf, start)?;
    Ok(format!("{:x}", Sha256::digest(&buf)))
}

impl SourcePosition {
    /// A file consumed up to `offset`; `bytes` says whether the offset is
    /// in bytes (else rows, and the file's end is hashed).
    pub fn file(path: &Path, offset: u64, bytes: bool) -> Result<Self, CheckpointError> {
        let io = |source| CheckpointError::Io {
            path: path.to_path_buf(),
            source,
        };
        let size = std::fs::metadata(path).map_err(io)?.len();
        let tail_end = if bytes { offset.min(size) } else { size };
        Ok(Self::File {
            path: path.to_path_buf(),
            offset,
            size,
            tail_sha256: tail_hash(path, tail_end).map_err(io)?,
            tail_end,
        })
    }

    /// Checks that `path` is the file this position was recorded in:
    /// the same path, the same size, the same bytes before the cut.
    pub fn check_file(&self, path: &Path) -> Result<u64, CheckpointError> {
        let Self::File {
            path: recorded,
            offset,
            size,
            tail_sha256,
            tail_end,
        } = self
        else {
            return Err(CheckpointError::Source(format!(
                "the checkpoint recorded {self:?}, and the source is the file {}",
                path.display()
            )));
        };
        let refuse = |why: String| {
            Err(CheckpointError::Source(format!(
                "cannot resume {} at {offset}: {why}; to start over, remove the pipeline's state directory",
                path.display()
            )))
        };
        if recorded != path {
            return refuse(format!(
                "the checkpoint was taken reading {}",
                recorded.display()
            ));
        }
        let now = match std::fs::metadata(path) {
            Ok(m) => m.len(),
            Err(e) => return refuse(format!("it cannot be read ({e})")),
        };
        if now != *size {
            return refuse(format!(
                "it holds {now} bytes; it held {size} when the checkpoint was taken"
            ));
        }
        match tail_hash(path, *tail_end) {
            Ok(h) if h == *tail_sha256 => Ok(*offset),
            Ok(_) => refuse(format!(
                "its bytes before {tail_end} differ from those the checkpoint hashed"
            )),
            Err(e) => refuse(format!("it cannot be read ({e})")),
        }
    }
}
