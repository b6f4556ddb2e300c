//! Checkpoints: a crash of `roo serve` (kill -9 anywhere) is invisible in
//! the published output.
//!
//! Every `every` (and at a clean stop) the operator stage cuts the stream
//! between two batches: it snapshots every operator ([`crate::state`]) and
//! sends the snapshots with the source's position down the sink queue, in
//! order with the batches ([`Cut`]). The sink stage, holding everything
//! before the cut, then:
//!
//! 1. seals each file sink's files of the epoch and the dead letters (complete and
//!    fsynced under their hidden names, not published);
//! 2. writes the manifest ([`manifest`]): source position, snapshots, the
//!    epoch's files and the next file index per sink, event counts;
//! 3. publishes the epoch's files (rename, fsync each directory) and
//!    acknowledges the source up to the cut;
//! 4. removes manifests older than the one before.
//!
//! On start ([`recover`]) the newest manifest that reads whole (a corrupt
//! one falls back to the one before, and says so) is completed: its files
//! are published if a crash came between 2 and 3; partial files and
//! published files at or past its next index (later epochs) are removed.
//! The operators restore their snapshots and the source resumes at the
//! position ([`source`]). So the published files hold every event once.
//!
//! - `manifest.rs`: the manifest file, written whole, listed, pruned.
//! - `source.rs`: source positions and the check that a file is the same.
//! - `tests.rs`: recovery on disk, fallback, the file check.

pub mod manifest;
pub mod source;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use thiserror::Error;

pub use manifest::{Counts, Manifest, SinkEpoch, Snapshots};
pub use source::SourcePosition;

use crate::metrics::PipelineMetrics;
use crate::sinks::{layout, DeadLetterFiles, OutputSink, SinkError};
use crate::state::SnapshotError;

/// How often a checkpoint is taken when the config does not say.
pub const CHECKPOINT_EVERY_DEFAULT: Duration = Duration::from_secs(10);

/// Checkpoints of one pipeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointSpec {
    /// The pipeline's own directory (`STATE_DIR/PIPELINE`).
    pub dir: PathBuf,
    pub every: Duration,
}

#[derive(Debug, Error)]
pub enum CheckpointError {
    #[error("checkpoint file {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("every checkpoint in {dir} is unreadable (newest: {newest}); remove the directory to start over")]
    NoneReadable {
        dir: PathBuf,
        newest: String,
        #[source]
        source: SnapshotError,
    },
    #[error(
        "checkpoint {epoch}: its file {file} is neither published nor sealed (removed by hand?)"
    )]
    Missing { epoch: u64, file: PathBuf },
    #[error("{0}")]
    Source(String),
    #[error("checkpoint {epoch} is of pipeline {found:?}, not {expected:?}")]
    Pipeline {
        epoch: u64,
        found: String,
        expected: String,
    },
    #[error("restoring the {operator} operator from checkpoint {epoch}")]
    Restore {
        epoch: u64,
        operator: String,
        #[source]
        source: SnapshotError,
    },
    #[error(transparent)]
    Sink(#[from] SinkError),
}

/// A cut: what the operator stage sends the sink stage between two
/// batches when a checkpoint is due.
pub(crate) struct Cut {
    pub snapshots: Snapshots,
    /// Operators' files of the epoch (the audit log's), sealed.
    pub files: Vec<crate::sinks::Sealed>,
    /// The source's offset after the last batch before the cut.
    pub position: Option<u64>,
    /// Time the operator stage spent taking the snapshots.
    pub snapshot_time: Duration,
}

/// How the sink stage finds the source's position for a manifest.
#[derive(Clone, Debug)]
pub(crate) enum Resumable {
    /// A file: offsets in bytes (`true`) or rows.
    File {
        path: PathBuf,
        bytes: bool,
    },
    Generator {
        start_us: i64,
    },
    /// TCP, Flight, online requests: not resumable by position.
    None,
}

/// What a restart starts from.
pub struct Recovered {
    pub manifest: Manifest,
    pub snapshots: Snapshots,
}

/// The sink stage's side: writes each checkpoint.
pub(crate) struct Checkpointer {
    pipeline: String,
    dir: PathBuf,
    epoch: u64,
    resumable: Resumable,
    /// The last position recorded (kept while no batch moved it).
    position: Option<u64>,
}

impl Checkpointer {
    pub fn new(
        pipeline: &str,
        spec: &CheckpointSpec,
        recovered: Option<&Manifest>,
        resumable: Resumable,
    ) -> Self {
        let position = recovered.and_then(|m| match &m.source {
            Some(SourcePosition::File { offset, .. }) => Some(*offset),
            Some(SourcePosition::Generator { events, .. }) => Some(*events),
            None => None,
        });
        Self {
            pipeline: pipeline.to_string(),
            dir: spec.dir.clone(),
            epoch: recovered.map_or(0, |m| m.epoch),
            resumable,
            position,
        }
    }

    /// Takes a checkpoint at `cut`: seal, manifest, publish (see the
    /// module's steps). Every batch before the cut is then durable.
    pub fn checkpoint(
        &mut self,
        cut: Cut,
        sinks: &mut [OutputSink],
        dead: &mut Option<DeadLetterFiles>,
        streams: BTreeMap<String, u64>,
        metrics: &PipelineMetrics,
    ) -> Result<(), CheckpointError> {
        let started = Instant::now();
        let mut sealed = Vec::new();
        let mut epochs = Vec::new();
        for s in sinks.iter_mut() {
            if let OutputSink::Files(f) = s {
                let (files, next_index) = f.seal_epoch()?;
                epochs.push(SinkEpoch {
                    dir: f.dir().to_path_buf(),
                    prefix: f.prefix().to_string(),
                    extension: f.format().extension().to_string(),
                    files: names(&files),
                    next_index,
                });
                sealed.extend(files);
            }
        }
        let dead_epoch = match dead {
            Some(d) => {
                let (files, next_index) = d.seal_epoch()?;
                let epoch = SinkEpoch {
                    dir: d.dir().to_path_buf(),
                    prefix: layout::DEAD_LETTER_PREFIX.to_string(),
                    extension: layout::DEAD_LETTER_EXTENSION.to_string(),
                    files: names(&files),
                    next_index,
                };
                sealed.extend(files);
                Some(epoch)
            }
            None => None,
        };
        // Operators' files (the audit log's segments and indexes): their
        // directories' parents too, where a new partition was made.
        let operator_files: Vec<PathBuf> = cut.files.iter().map(|f| f.path.clone()).collect();
        let mut dirs = BTreeSet::new();
        for f in &cut.files {
            if let Some(partition) = f.path.parent() {
                dirs.extend(partition.parent().map(Path::to_path_buf));
            }
        }
        sealed.extend(cut.files);
        if cut.position.is_some() {
            self.position = cut.position;
        }
        let source = match (&self.resumable, self.position) {
            (Resumable::File { path, bytes }, Some(offset)) => {
                Some(SourcePosition::file(path, offset, *bytes)?)
            }
            (Resumable::Generator { start_us }, Some(events)) => Some(SourcePosition::Generator {
                events,
                start_us: *start_us,
            }),
            _ => None,
        };
        let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Acquire);
        // The metrics carry on from the checkpoint a restart began at.
        let counts = Counts {
            events_out: load(&metrics.events_out),
            events_dead: load(&metrics.events_dead),
            events_aggregated: load(&metrics.events_aggregated),
            results_out: load(&metrics.results_out),
            events_in: 0,
        };
        let counts = Counts {
            events_in: counts.events_out + counts.events_dead + counts.events_aggregated,
            ..counts
        };
        self.epoch += 1;
        let manifest = Manifest {
            pipeline: self.pipeline.clone(),
            epoch: self.epoch,
            written_unix_ms: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis() as u64,
            source,
            sinks: epochs,
            dead_letters: dead_epoch,
            counts,
            streams,
            operator_files,
        };
        let bytes = manifest::write(&self.dir, &manifest, &cut.snapshots)?;
        // The manifest is durable: publish what it recorded.
        for file in &sealed {
            file.rename()?;
            dirs.insert(file.path.parent().unwrap_or(Path::new(".")).to_path_buf());
        }
        for dir in dirs {
            layout::sync_dir(&dir).map_err(|source| CheckpointError::Io { path: dir, source })?;
        }
        for s in sinks.iter_mut() {
            if let OutputSink::Files(f) = s {
                f.published_epoch();
            }
        }
        manifest::prune(&self.dir);
        PipelineMetrics::add(&metrics.checkpoints, 1);
        metrics.checkpoint_bytes.store(bytes, Ordering::Relaxed);
        let took = started.elapsed() + cut.snapshot_time;
        PipelineMetrics::add(&metrics.checkpoint_us, took.as_micros() as u64);
        tracing::debug!(
            "pipeline {}: checkpoint {} ({bytes} bytes, {} files) in {took:?}",
            self.pipeline,
            self.epoch,
            sealed.len()
        );
        Ok(())
    }
}

fn names(files: &[crate::sinks::Sealed]) -> Vec<String> {
    files
        .iter()
        .filter_map(|f| Some(f.path.file_name()?.to_string_lossy().into_owned()))
        .collect()
}

/// Reads the newest readable checkpoint of `spec` and completes it on
/// disk (module steps); `None` when there is none (a first start).
/// `sink_dirs` are the pipeline's file sinks now: (dir, prefix,
/// extension); their partial files are removed even without a checkpoint
/// (nothing unpublished survives a restart).
pub fn recover(
    pipeline: &str,
    spec: &CheckpointSpec,
    sink_dirs: &[(PathBuf, String, String)],
) -> Result<Option<Recovered>, CheckpointError> {
    std::fs::create_dir_all(&spec.dir).map_err(|source| CheckpointError::Io {
        path: spec.dir.clone(),
        source,
    })?;
    manifest::prune_partials(&spec.dir);
    let listed = manifest::list(&spec.dir);
    let mut chosen = None;
    let mut first_error = None;
    for (epoch, path) in &listed {
        let read = std::fs::read(path)
            .map_err(|e| SnapshotError::Payload(format!("reading it: {e}")))
            .and_then(|bytes| manifest::decode(&bytes));
        match read {
            Ok(found) => {
                if let Some((bad, e)) = &first_error {
                    tracing::warn!(
                        "pipeline {pipeline}: checkpoint {bad} is unreadable ({e}); falling back to checkpoint {epoch}"
                    );
                }
                chosen = Some(found);
                break;
            }
            Err(e) => {
                tracing::warn!(
                    "pipeline {pipeline}: checkpoint file {} is unreadable: {e}",
                    path.display()
                );
                first_error.get_or_insert((*epoch, e));
            }
        }
    }
    let Some((manifest, snapshots)) = chosen else {
        if let Some((epoch, source)) = first_error {
            return Err(CheckpointError::NoneReadable {
                dir: spec.dir.clone(),
                newest: format!("checkpoint {epoch}"),
                source,
            });
        }
        for (dir, prefix, extension) in sink_dirs {
            remove_partials(dir, prefix, extension);
        }
        return Ok(None);
    };
    if manifest.pipeline != pipeline {
        return Err(CheckpointError::Pipeline {
            epoch: manifest.epoch,
            found: manifest.pipeline,
            expected: pipeline.to_string(),
        });
    }
    for epoch in manifest.sinks.iter().chain(&manifest.dead_letters) {
        complete(manifest.epoch, epoch)?;
    }
    complete_operator_files(&manifest.operator_files)?;
    for (dir, prefix, extension) in sink_dirs {
        remove_partials(dir, prefix, extension);
    }
    tracing::info!(
        "pipeline {pipeline}: resuming from checkpoint {} ({} events accounted for)",
        manifest.epoch,
        manifest.counts.events_in
    );
    Ok(Some(Recovered {
        manifest,
        snapshots,
    }))
}

/// One sink's epoch completed on disk: its files published, later
/// epochs' files (published or partial) removed.
fn complete(epoch: u64, sink: &SinkEpoch) -> Result<(), CheckpointError> {
    let mut renamed = false;
    for name in &sink.files {
        let path = sink.dir.join(name);
        if path.exists() {
            continue;
        }
        let partial = layout::partial_path(&path).expect("a file name");
        if !partial.exists() {
            return Err(CheckpointError::Missing { epoch, file: path });
        }
        std::fs::rename(&partial, &path).map_err(|source| CheckpointError::Io {
            path: path.clone(),
            source,
        })?;
        renamed = true;
    }
    for later in layout::published_from(&sink.dir, &sink.prefix, &sink.extension, sink.next_index) {
        tracing::info!(
            "removing {} (written after checkpoint {epoch}; it is written again)",
            later.display()
        );
        std::fs::remove_file(&later).map_err(|source| CheckpointError::Io {
            path: later.clone(),
            source,
        })?;
        renamed = true;
    }
    remove_partials(&sink.dir, &sink.prefix, &sink.extension);
    if renamed {
        layout::sync_dir(&sink.dir).map_err(|source| CheckpointError::Io {
            path: sink.dir.clone(),
            source,
        })?;
    }
    Ok(())
}

/// The operators' files a checkpoint recorded (the audit log's), each
/// published if a crash came before. One that is neither published nor
/// partial was published and has since been removed by the audit log's
/// retention: nothing to do. (Partial files no checkpoint recorded are
/// removed by their operator as it opens.)
fn complete_operator_files(files: &[PathBuf]) -> Result<(), CheckpointError> {
    let mut dirs = BTreeSet::new();
    for path in files {
        let partial = layout::partial_path(path).expect("a file name");
        if path.exists() || !partial.exists() {
            continue;
        }
        std::fs::rename(&partial, path).map_err(|source| CheckpointError::Io {
            path: path.clone(),
            source,
        })?;
        dirs.extend(path.parent().map(Path::to_path_buf));
    }
    for dir in dirs {
        layout::sync_dir(&dir).map_err(|source| CheckpointError::Io { path: dir, source })?;
    }
    Ok(())
}

/// Removes `dir`'s partial files of `prefix`: files no checkpoint
/// recorded.
fn remove_partials(dir: &Path, prefix: &str, extension: &str) {
    for partial in layout::partials(dir, prefix, extension) {
        let _ = std::fs::remove_file(partial);
    }
}
