//! A checkpoint's manifest: one file per epoch,
//! `STATE_DIR/PIPELINE/checkpoint-EEEEEEEEEE.roo`, written whole or not at
//! all (a hidden partial file, fsync, rename, fsync the directory).
//!
//! The file is a [`crate::state`] envelope of kind `checkpoint` (so a torn
//! or corrupt manifest fails its CRC-32 before anything is read) whose
//! payload is the manifest as JSON, then each operator's snapshot:
//!
//! ```text
//! json        bytes   the Manifest (serde)
//! operators   u32     then per operator: kind, name, snapshot (bytes each)
//! ```

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::source::SourcePosition;
use super::CheckpointError;
use crate::operators::OperatorKind;
use crate::sinks::layout;
use crate::state::{self, Reader, SnapshotError, Writer};

const KIND: &str = "checkpoint";
const VERSION: u32 = 1;
const PREFIX: &str = "checkpoint";
const EXTENSION: &str = "roo";
/// Manifests kept: the newest and the one before (a corrupt newest falls
/// back to it).
pub(crate) const MANIFESTS_KEPT: usize = 2;

/// What one checkpoint recorded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub pipeline: String,
    /// 1, 2, 3, … over the pipeline's life (across restarts).
    pub epoch: u64,
    /// When it was written, ms since the Unix epoch.
    pub written_unix_ms: u64,
    /// Where the source resumes; `None` for sources that cannot (TCP,
    /// Flight, online requests).
    pub source: Option<SourcePosition>,
    /// Each file sink's files of this epoch.
    pub sinks: Vec<SinkEpoch>,
    pub dead_letters: Option<SinkEpoch>,
    /// Events accounted for up to the cut, over every epoch so far.
    pub counts: Counts,
    /// Each named stream's records durable (a TCP source with acks, a
    /// push source): what a sender reconnecting with the name is told.
    #[serde(
        default,
        alias = "tcp_streams",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub streams: BTreeMap<String, u64>,
    /// The operators' files this epoch published (the audit log's segments
    /// and their indexes), by path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub operator_files: Vec<PathBuf>,
}

/// One file sink's part of a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkEpoch {
    pub dir: PathBuf,
    pub prefix: String,
    pub extension: String,
    /// The files this epoch published (names in `dir`).
    pub files: Vec<String>,
    /// The index the next file takes: files of `prefix` at or past it
    /// belong to a later epoch.
    pub next_index: u64,
}

/// Events accounted for at a cut (what the metrics carry on from).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub events_in: u64,
    pub events_out: u64,
    pub events_dead: u64,
    pub events_aggregated: u64,
    pub results_out: u64,
}

/// Operator snapshots: (kind, name, bytes).
pub type Snapshots = Vec<(OperatorKind, String, Vec<u8>)>;

fn kind_of(name: &str) -> Option<OperatorKind> {
    use OperatorKind::*;
    [Feature, Enrich, Score, Shadow, Audit, Aggregate]
        .into_iter()
        .find(|k| k.name() == name)
}

/// The manifest and snapshots as the file's bytes.
pub(crate) fn encode(manifest: &Manifest, snapshots: &Snapshots) -> Vec<u8> {
    let mut w = Writer::default();
    w.bytes(&serde_json::to_vec(manifest).expect("a manifest serialises"));
    w.u32(snapshots.len() as u32);
    for (kind, name, bytes) in snapshots {
        w.bytes(kind.name().as_bytes());
        w.bytes(name.as_bytes());
        w.bytes(bytes);
    }
    state::encode(KIND, VERSION, &w.buf)
}

/// A manifest file's bytes, checked whole.
pub(crate) fn decode(bytes: &[u8]) -> Result<(Manifest, Snapshots), SnapshotError> {
    let payload = state::decode_version(KIND, VERSION, bytes)?;
    let mut r = Reader::new(payload);
    let manifest: Manifest = serde_json::from_slice(r.bytes()?)
        .map_err(|e| SnapshotError::Payload(format!("the manifest's JSON: {e}")))?;
    let n = r.u32()?;
    let mut snapshots = Vec::new();
    for _ in 0..n {
        let kind = r.bytes()?;
        let kind = std::str::from_utf8(kind)
            .ok()
            .and_then(kind_of)
            .ok_or_else(|| {
                SnapshotError::Payload(format!(
                    "an operator of unknown kind {:?}",
                    String::from_utf8_lossy(kind)
                ))
            })?;
        let name = String::from_utf8_lossy(r.bytes()?).into_owned();
        let bytes = r.bytes()?.to_vec();
        snapshots.push((kind, name, bytes));
    }
    Ok((manifest, snapshots))
}

pub(crate) fn path_of(dir: &Path, epoch: u64) -> PathBuf {
    dir.join(format!("{PREFIX}-{epoch:010}.{EXTENSION}"))
}

/// The manifests in `dir`, newest first: (epoch, path).
pub(crate) fn list(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let epoch = name
                .strip_prefix(PREFIX)?
                .strip_prefix('-')?
                .strip_suffix(EXTENSION)?
                .strip_suffix('.')?
                .parse()
                .ok()?;
            Some((epoch, e.path()))
        })
        .collect();
    found.sort_by_key(|f| std::cmp::Reverse(f.0));
    found
}

/// Writes a manifest whole: a hidden partial file, fsync, rename, fsync
/// the directory. Returns the bytes written.
pub(crate) fn write(
    dir: &Path,
    manifest: &Manifest,
    snapshots: &Snapshots,
) -> Result<u64, CheckpointError> {
    let bytes = encode(manifest, snapshots);
    let path = path_of(dir, manifest.epoch);
    let partial = layout::partial_path(&path).expect("a manifest path names a file");
    let io = |source| CheckpointError::Io {
        path: path.clone(),
        source,
    };
    let mut file = File::create(&partial).map_err(io)?;
    file.write_all(&bytes).map_err(io)?;
    layout::publish(&file, &partial, &path).map_err(io)?;
    Ok(bytes.len() as u64)
}

/// Removes manifests past the newest [`MANIFESTS_KEPT`].
pub(crate) fn prune(dir: &Path) {
    for (_, path) in list(dir).into_iter().skip(MANIFESTS_KEPT) {
        let _ = std::fs::remove_file(path);
    }
}

/// Removes partial manifests (a checkpoint cut short by a crash).
pub(crate) fn prune_partials(dir: &Path) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(&format!(".{PREFIX}-")) && name.ends_with(".partial") {
            let _ = std::fs::remove_file(e.path());
        }
    }
}
