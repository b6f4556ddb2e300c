//! `AuditWriter`: the records of a pipeline into segments, one open per
//! event hour (at most [`OPEN_SEGMENTS_MAX`]), each written as an Arrow
//! IPC file (each buffer LZ4-compressed: the audit log is written always
//! and read rarely, so writing is a copy and a fast compression, not an
//! encoding) under a hidden partial name and published whole with its
//! index once it holds `segment_rows` records or has been open
//! `segment_age`; the model store; retention.
//!
//! Under checkpoints ([`AuditWriter::with_epochs`]) a segment that closes
//! is sealed instead (complete and fsynced under its hidden name, with its
//! index), and [`AuditWriter::seal_epoch`], at each cut, closes every open
//! segment and hands the checkpoint the epoch's files to publish once its
//! manifest is durable: the audit log then holds each event once across
//! crashes, like the sinks. A restart publishes what the last checkpoint
//! recorded and deletes every other partial file (later epochs').

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use std::io::BufWriter;

use arrow_array::cast::AsArray;
use arrow_array::{ArrayRef, RecordBatch, UInt32Array};
use arrow_ipc::writer::{FileWriter, IpcWriteOptions};
use arrow_ipc::CompressionType;
use arrow_schema::SchemaRef;

use super::index::{write_index, write_index_partial, Location};
use super::layout::{
    self, definitions_path, hour_of, hour_start_us, index_path, model_path, partition_dir,
    segment_name,
};
use super::record::Records;
use super::{AuditError, AuditSpec};
use crate::sinks::drop_behind::DropBehind;
use crate::sinks::layout::{partial_path, publish, sync_dir};
use crate::sinks::rotating::{dictionaries, same_dictionaries};
use crate::sinks::Sealed;

/// Segments open at once (records of that many event hours in flight);
/// past it the least recently written is published.
pub const OPEN_SEGMENTS_MAX: usize = 8;
/// Records are written to a segment in record batches of about this many
/// (a pipeline's batches coalesced: each column is compressed in one
/// call, not one per small batch). What a segment holds in memory before
/// it is written; `audit show` decodes one such batch to read a record.
/// (The tests coalesce 256, so their segments hold many batches.)
const COALESCE_ROWS: usize = if cfg!(test) { 256 } else { 32_768 };
/// Retention runs at most this often (it lists the directory).
const RETENTION_EVERY_S: u64 = 60;
const US_PER_DAY: i64 = 86_400_000_000;

struct Segment {
    hour: i64,
    path: PathBuf,
    partial: PathBuf,
    writer: FileWriter<BufWriter<DropBehind>>,
    schema: SchemaRef,
    /// The dictionaries of its dictionary columns (column, values), as
    /// its first batch wrote them: an IPC file holds one per column.
    dictionaries: Vec<(usize, ArrayRef)>,
    rows: u32,
    /// Record batches written to the file.
    batches: u32,
    /// Records waiting to be written as one batch.
    pending: Vec<RecordBatch>,
    pending_rows: usize,
    index: Vec<(u64, Location)>,
    opened: Instant,
    touched: u64,
}

impl Segment {
    /// `batch` with each dictionary column pointing at the segment's own
    /// values (equal in content, as [`same_dictionaries`] checked): the
    /// pending batches then concatenate by their keys alone, and every
    /// batch written carries the one dictionary the file holds (a merge
    /// would keep only the values a batch uses, a different dictionary).
    fn shared_dictionaries(&self, batch: &RecordBatch) -> Result<RecordBatch, AuditError> {
        if self.dictionaries.is_empty() {
            return Ok(batch.clone());
        }
        let mut columns = batch.columns().to_vec();
        for (i, values) in &self.dictionaries {
            if let Some(d) = columns[*i].as_any_dictionary_opt() {
                columns[*i] = d.with_values(values.clone());
            }
        }
        RecordBatch::try_new(batch.schema(), columns).map_err(|e| AuditError::Arrow {
            what: format!("writing {}", self.path.display()),
            message: e.to_string(),
        })
    }

    /// Writes the pending records as one record batch.
    fn flush(&mut self) -> Result<(), AuditError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let encode = |e: arrow_schema::ArrowError| AuditError::Arrow {
            what: format!("writing {}", self.path.display()),
            message: e.to_string(),
        };
        let batch =
            arrow_select::concat::concat_batches(&self.schema, &self.pending).map_err(encode)?;
        self.writer.write(&batch).map_err(encode)?;
        self.pending.clear();
        self.pending_rows = 0;
        self.batches += 1;
        Ok(())
    }
}

/// What retention deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Retention {
    pub deleted_segments: u64,
    pub deleted_bytes: u64,
    /// Bytes of published segments (and their indexes) left.
    pub kept_bytes: u64,
}

pub struct AuditWriter {
    spec: AuditSpec,
    open: Vec<Segment>,
    opened: u64,
    writes: u64,
    models: HashSet<String>,
    last_retention: Option<Instant>,
    /// Under checkpoints: the files of segments closed since the last
    /// cut, sealed, for the next checkpoint to publish. `None`: a segment
    /// is published as it closes.
    sealed: Option<Vec<Sealed>>,
    /// Records written, segments and bytes published (sealed, under
    /// checkpoints).
    pub records: u64,
    pub segments: u64,
    pub bytes: u64,
}

impl AuditWriter {
    /// Creates the directory's layout, proves it writable (a directory
    /// that cannot be written is refused here, before any event is
    /// scored), deletes partial segments a stopped process left, and
    /// applies retention.
    pub fn open(spec: &AuditSpec) -> Result<Self, AuditError> {
        let dir = &spec.dir;
        for sub in [layout::RECORDS, layout::MODELS, layout::DEFINITIONS_DIR] {
            let d = dir.join(sub);
            std::fs::create_dir_all(&d).map_err(AuditError::io(&d))?;
        }
        let probe = layout::records_dir(dir).join(".roo-write-probe");
        std::fs::write(&probe, b"roo").map_err(AuditError::io(&probe))?;
        std::fs::remove_file(&probe).map_err(AuditError::io(&probe))?;
        let stale = layout::partial_files(dir);
        if !stale.is_empty() {
            tracing::warn!(
                "audit log {}: {} partial segments from a process that stopped without closing them are deleted",
                dir.display(),
                stale.len()
            );
            for p in stale {
                let _ = std::fs::remove_file(p);
            }
        }
        let mut writer = Self {
            spec: spec.clone(),
            open: Vec::new(),
            opened: 0,
            writes: 0,
            models: HashSet::new(),
            last_retention: None,
            sealed: None,
            records: 0,
            segments: 0,
            bytes: 0,
        };
        writer.retain()?;
        Ok(writer)
    }

    pub fn dir(&self) -> &Path {
        &self.spec.dir
    }

    /// Under checkpoints: segments are sealed as they close, and published
    /// by the checkpoint that [`Self::seal_epoch`] hands them to.
    pub fn with_epochs(mut self) -> Self {
        self.sealed = Some(Vec::new());
        self
    }

    /// At a checkpoint's cut: closes every open segment and returns the
    /// files sealed since the last cut (each index before its segment).
    pub fn seal_epoch(&mut self) -> Result<Vec<Sealed>, AuditError> {
        while let Some(segment) = self.open.pop() {
            self.close(segment)?;
        }
        Ok(self.sealed.as_mut().map(std::mem::take).unwrap_or_default())
    }

    /// Keeps a model version's file bytes in the store, once.
    pub fn store_model(&mut self, version: &str, bytes: &[u8]) -> Result<(), AuditError> {
        if self.models.contains(version) {
            return Ok(());
        }
        let path = model_path(&self.spec.dir, version);
        if !path.exists() {
            write_whole(&path, bytes)?;
        }
        self.models.insert(version.to_string());
        Ok(())
    }

    /// Keeps the text a definitions hash names, once.
    pub fn store_definitions(&mut self, hash: &str, text: &str) -> Result<(), AuditError> {
        let path = definitions_path(&self.spec.dir, hash);
        if path.exists() {
            return Ok(());
        }
        write_whole(&path, text.as_bytes())
    }

    /// Files one batch's records under their event hours.
    pub fn write(&mut self, records: &Records) -> Result<(), AuditError> {
        let rows = records.batch.num_rows();
        if rows == 0 {
            return Ok(());
        }
        let first = hour_of(records.event_us[0]);
        if records.event_us.iter().all(|&t| hour_of(t) == first) {
            self.write_hour(first, &records.batch, &records.id_hashes)?;
        } else {
            let mut hours: Vec<i64> = records.event_us.iter().map(|&t| hour_of(t)).collect();
            hours.sort_unstable();
            hours.dedup();
            for hour in hours {
                let rows: Vec<u32> = (0..rows as u32)
                    .filter(|&r| hour_of(records.event_us[r as usize]) == hour)
                    .collect();
                let hashes: Vec<u64> = rows
                    .iter()
                    .map(|&r| records.id_hashes[r as usize])
                    .collect();
                let part =
                    arrow_select::take::take_record_batch(&records.batch, &UInt32Array::from(rows))
                        .map_err(|e| AuditError::Arrow {
                            what: "splitting a batch by event hour".into(),
                            message: e.to_string(),
                        })?;
                self.write_hour(hour, &part, &hashes)?;
            }
        }
        self.records += rows as u64;
        Ok(())
    }

    fn write_hour(
        &mut self,
        hour: i64,
        batch: &RecordBatch,
        hashes: &[u64],
    ) -> Result<(), AuditError> {
        let at = self.segment_for(hour, batch)?;
        self.writes += 1;
        let segment = &mut self.open[at];
        let (at_batch, base) = (segment.batches, segment.pending_rows as u32);
        segment
            .index
            .extend(hashes.iter().enumerate().map(|(i, &h)| {
                (
                    h,
                    Location {
                        batch: at_batch,
                        row: base + i as u32,
                    },
                )
            }));
        let shared = segment.shared_dictionaries(batch)?;
        segment.pending.push(shared);
        segment.pending_rows += batch.num_rows();
        segment.rows += batch.num_rows() as u32;
        if segment.pending_rows >= COALESCE_ROWS {
            segment.flush()?;
        }
        segment.touched = self.writes;
        if segment.rows as usize >= self.spec.segment_rows {
            let segment = self.open.swap_remove(at);
            self.close(segment)?;
        }
        Ok(())
    }

    /// The open segment of `hour` for `batch`'s records, opened (and one
    /// published to make room, or one of other columns or dictionaries
    /// closed) as needed.
    fn segment_for(&mut self, hour: i64, batch: &RecordBatch) -> Result<usize, AuditError> {
        let schema = batch.schema();
        if let Some(at) = self.open.iter().position(|s| s.hour == hour) {
            let s = &self.open[at];
            if s.schema == schema && same_dictionaries(&s.dictionaries, batch) {
                return Ok(at);
            }
            // A reload changed the columns or a version column's
            // dictionary: a new segment.
            let old = self.open.swap_remove(at);
            self.close(old)?;
        }
        if self.open.len() >= OPEN_SEGMENTS_MAX {
            let (at, _) = self
                .open
                .iter()
                .enumerate()
                .min_by_key(|(_, s)| s.touched)
                .expect("a full set is not empty");
            let old = self.open.swap_remove(at);
            self.close(old)?;
        }
        let dir = partition_dir(&self.spec.dir, hour);
        std::fs::create_dir_all(&dir).map_err(AuditError::io(&dir))?;
        let now_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64);
        let path = dir.join(segment_name(now_us, self.opened));
        self.opened += 1;
        let partial = partial_path(&path).expect("a segment path names a file");
        let file = File::create(&partial).map_err(AuditError::io(&partial))?;
        let options = IpcWriteOptions::default()
            .try_with_compression(Some(CompressionType::LZ4_FRAME))
            .expect("LZ4 is built in");
        let writer = FileWriter::try_new_with_options(
            BufWriter::with_capacity(1 << 20, DropBehind::new(file)),
            &schema,
            options,
        )
        .map_err(|e| AuditError::Arrow {
            what: format!("starting {}", path.display()),
            message: e.to_string(),
        })?;
        self.open.push(Segment {
            hour,
            path,
            partial,
            writer,
            dictionaries: dictionaries(batch),
            schema,
            rows: 0,
            batches: 0,
            pending: Vec::new(),
            pending_rows: 0,
            index: Vec::new(),
            opened: Instant::now(),
            touched: self.writes,
        });
        Ok(self.open.len() - 1)
    }

    /// Publishes the index, then the segment (a reader lists segments:
    /// one without its index is scanned, an index without its segment is
    /// never read).
    fn close(&mut self, mut segment: Segment) -> Result<(), AuditError> {
        segment.flush()?;
        let path = segment.path.clone();
        let encode = |e: arrow_schema::ArrowError| AuditError::Arrow {
            what: format!("closing {}", path.display()),
            message: e.to_string(),
        };
        segment.writer.finish().map_err(encode)?;
        let file = segment
            .writer
            .into_inner()
            .map_err(encode)?
            .into_inner()
            .map_err(|e| AuditError::io(&path)(e.into_error()))?;
        let index = index_path(&path);
        let Some(sealed) = self.sealed.as_mut() else {
            write_index(&index, &mut segment.index)?;
            publish(file.file(), &segment.partial, &path).map_err(AuditError::io(&path))?;
            file.release_cache();
            self.segments += 1;
            self.bytes += std::fs::metadata(&path).map_or(0, |m| m.len())
                + std::fs::metadata(&index).map_or(0, |m| m.len());
            return Ok(());
        };
        let (index_file, index_partial) = write_index_partial(&index, &mut segment.index)?;
        index_file.sync_all().map_err(AuditError::io(&index))?;
        file.sync_all().map_err(AuditError::io(&path))?;
        self.segments += 1;
        self.bytes += std::fs::metadata(&segment.partial).map_or(0, |m| m.len())
            + std::fs::metadata(&index_partial).map_or(0, |m| m.len());
        sealed.push(Sealed {
            partial: index_partial,
            path: index,
            rows: 0,
        });
        sealed.push(Sealed {
            partial: segment.partial,
            path,
            rows: u64::from(segment.rows),
        });
        Ok(())
    }

    /// Publishes segments open past `segment_age`; applies retention at
    /// most once a minute.
    pub fn tick(&mut self) -> Result<(), AuditError> {
        let age = self.spec.segment_age;
        while let Some(at) = self.open.iter().position(|s| s.opened.elapsed() >= age) {
            let segment = self.open.swap_remove(at);
            self.close(segment)?;
        }
        if self
            .last_retention
            .is_none_or(|t| t.elapsed().as_secs() >= RETENTION_EVERY_S)
        {
            self.retain()?;
        }
        Ok(())
    }

    /// Publishes every open segment (the source has ended, or the
    /// pipeline is stopping), then applies retention.
    pub fn close_all(&mut self) -> Result<(), AuditError> {
        while let Some(segment) = self.open.pop() {
            self.close(segment)?;
        }
        self.retain()?;
        Ok(())
    }

    fn retain(&mut self) -> Result<Retention, AuditError> {
        self.last_retention = Some(Instant::now());
        let now_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64);
        let r = enforce_retention(
            &self.spec.dir,
            now_us,
            self.spec.retain_days,
            self.spec.max_bytes,
        )?;
        if r.deleted_segments > 0 {
            tracing::info!(
                "audit log {}: retention deleted {} segments ({} bytes); {} bytes kept",
                self.spec.dir.display(),
                r.deleted_segments,
                r.deleted_bytes,
                r.kept_bytes
            );
        }
        Ok(r)
    }
}

impl Drop for AuditWriter {
    /// A pipeline stopping on an error elsewhere still publishes what it
    /// recorded: those events reached the sinks. Under checkpoints what
    /// no checkpoint holds stays partial (a restart removes it and reads
    /// those events again).
    fn drop(&mut self) {
        if self.sealed.is_some() {
            return;
        }
        if let Err(e) = self.close_all() {
            tracing::error!(
                "audit log {}: closing its segments: {}",
                self.spec.dir.display(),
                crate::error::chain(&e)
            );
        }
    }
}

/// `bytes` as `path`, published whole.
fn write_whole(path: &Path, bytes: &[u8]) -> Result<(), AuditError> {
    use std::io::Write;
    let partial = partial_path(path).expect("a store path names a file");
    let mut file = File::create(&partial).map_err(AuditError::io(&partial))?;
    file.write_all(bytes).map_err(AuditError::io(path))?;
    publish(&file, &partial, path).map_err(AuditError::io(path))
}

/// Deletes the published segments (and indexes) of event hours that ended
/// more than `retain_days` before `now_us` (0: none), then the oldest
/// segments while the rest hold more than `max_bytes`.
pub fn enforce_retention(
    dir: &Path,
    now_us: i64,
    retain_days: u32,
    max_bytes: u64,
) -> Result<Retention, AuditError> {
    let mut r = Retention::default();
    let cutoff = now_us.saturating_sub(i64::from(retain_days).saturating_mul(US_PER_DAY));
    let mut kept: Vec<(PathBuf, u64)> = Vec::new();
    for (hour, partition) in layout::partitions(dir) {
        let expired = retain_days > 0 && hour_start_us(hour + 1) <= cutoff;
        let mut emptied = true;
        for segment in layout::segments(&partition) {
            let size = segment_bytes(&segment);
            if expired {
                delete_segment(&segment)?;
                r.deleted_segments += 1;
                r.deleted_bytes += size;
            } else {
                emptied = false;
                kept.push((segment, size));
            }
        }
        if expired && emptied {
            // Fails, harmlessly, while a segment is still open there.
            let _ = std::fs::remove_dir(&partition);
        }
    }
    let mut total: u64 = kept.iter().map(|(_, s)| s).sum();
    for (segment, size) in &kept {
        if total <= max_bytes {
            break;
        }
        delete_segment(segment)?;
        r.deleted_segments += 1;
        r.deleted_bytes += size;
        total -= size;
    }
    if r.deleted_segments > 0 {
        let records = layout::records_dir(dir);
        sync_dir(&records).map_err(AuditError::io(&records))?;
    }
    r.kept_bytes = total;
    Ok(r)
}

fn segment_bytes(segment: &Path) -> u64 {
    std::fs::metadata(segment).map_or(0, |m| m.len())
        + std::fs::metadata(index_path(segment)).map_or(0, |m| m.len())
}

/// The segment first, then its index (an index without its segment is
/// never read).
fn delete_segment(segment: &Path) -> Result<(), AuditError> {
    std::fs::remove_file(segment).map_err(AuditError::io(segment))?;
    let index = index_path(segment);
    match std::fs::remove_file(&index) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(AuditError::io(&index)(e)),
        _ => Ok(()),
    }
}
