//! Rotating output files `DIR/PREFIX-NNNNNN.EXT`. Closing a file (flush,
//! fsync, rename, fsync the directory) runs on a closer thread so the sink
//! keeps writing the next file; the batches of a file become durable when
//! its close completes.
//!
//! Under checkpoints (`epochs` in [`RotatingFiles::open`]) a close seals a file
//! (complete and fsynced under its hidden name) without publishing it;
//! [`RotatingFiles::seal_epoch`] hands a checkpoint every file sealed since
//! the last one, which publishes them once its manifest is durable.

use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arrow_array::cast::AsArray;
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::SchemaRef;
use crossbeam_channel::{bounded, Receiver, Sender};
use roo_ingest::FileFormat;

use super::files::{FileSink, ParquetSettings, Sealed};
use super::layout;
use super::SinkError;

/// Files closed and not yet published, at most; past it the sink waits
/// (fsync is the bottleneck then).
const CLOSES_IN_FLIGHT_MAX: usize = 2;

struct OpenFile {
    sink: FileSink,
    opened: Instant,
    bytes: u64,
    schema: SchemaRef,
    last_batch: u64,
    /// An Arrow IPC file's dictionaries (column, values), as its first
    /// batch wrote them: the format holds one per column.
    dictionaries: Vec<(usize, ArrayRef)>,
}

/// The dictionary columns of `batch`: (column, values). An Arrow IPC file
/// holds one dictionary per column: its writer keeps the first batch's
/// and starts a new file when [`same_dictionaries`] says they changed.
pub(crate) fn dictionaries(batch: &RecordBatch) -> Vec<(usize, ArrayRef)> {
    batch
        .columns()
        .iter()
        .enumerate()
        .filter_map(|(i, c)| Some((i, c.as_any_dictionary_opt()?.values().clone())))
        .collect()
}

/// Whether `batch`'s dictionaries are those `held` (from [`dictionaries`]).
pub(crate) fn same_dictionaries(held: &[(usize, ArrayRef)], batch: &RecordBatch) -> bool {
    held.iter().all(|(i, values)| {
        batch
            .column(*i)
            .as_any_dictionary_opt()
            .is_some_and(|d| d.values().as_ref() == values.as_ref())
    })
}

pub(crate) struct RotatingFiles {
    dir: PathBuf,
    prefix: String,
    format: FileFormat,
    parquet: ParquetSettings,
    rotate_bytes: u64,
    rotate: Duration,
    current: Option<OpenFile>,
    next_index: u64,
    to_closer: Option<Sender<(FileSink, u64)>>,
    closed: Receiver<Closed>,
    closer: Option<JoinHandle<()>>,
    closes_in_flight: usize,
    written: u64,
    durable: u64,
    /// Files sealed, not published (checkpoints); `None` without.
    sealed: Option<Vec<Sealed>>,
}

/// A close's report: the last batch number the file holds, and the file
/// when it was sealed rather than published.
type Closed = Result<(u64, Option<Sealed>), SinkError>;

impl RotatingFiles {
    /// Numbering continues after the last published file in `dir`. With
    /// `epochs` (checkpoints) closed files are sealed, and published only
    /// by the checkpoint that records them (recovery has removed the files
    /// of later epochs, so numbering goes on after the last recorded).
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        dir: PathBuf,
        prefix: String,
        format: FileFormat,
        parquet: ParquetSettings,
        rotate_bytes: u64,
        rotate: Duration,
        epochs: bool,
    ) -> Result<Self, SinkError> {
        std::fs::create_dir_all(&dir).map_err(|source| SinkError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        if !matches!(
            format,
            FileFormat::Parquet | FileFormat::ArrowIpc | FileFormat::Csv
        ) {
            return Err(SinkError::Format {
                format: format!("{format:?}"),
            });
        }
        let next_index = layout::next_free_index(&dir, &prefix, format.extension());
        let (to_closer, closing) = bounded::<(FileSink, u64)>(CLOSES_IN_FLIGHT_MAX);
        let (report, closed) = bounded::<Closed>(CLOSES_IN_FLIGHT_MAX + 1);
        let closer = std::thread::Builder::new()
            .name("roo-close".into())
            .spawn(move || {
                for (sink, last_batch) in closing.iter() {
                    let done = if epochs {
                        sink.seal().map(|s| (last_batch, Some(s)))
                    } else {
                        sink.finish().map(|_| (last_batch, None))
                    };
                    if report.send(done).is_err() {
                        return;
                    }
                }
            })
            .map_err(|source| SinkError::Io {
                path: dir.display().to_string(),
                source,
            })?;
        Ok(Self {
            dir,
            prefix,
            format,
            parquet,
            rotate_bytes,
            rotate,
            current: None,
            next_index,
            to_closer: Some(to_closer),
            closed,
            closer: Some(closer),
            closes_in_flight: 0,
            written: 0,
            durable: 0,
            sealed: epochs.then(Vec::new),
        })
    }

    pub fn write(&mut self, batch: &RecordBatch, number: u64) -> Result<(), SinkError> {
        if self
            .current
            .as_ref()
            .is_some_and(|c| c.schema != batch.schema())
        {
            // A model with other outputs or another version: a new file,
            // so each file names one model.
            self.close_current()?;
        }
        if self.format == FileFormat::ArrowIpc
            && self
                .current
                .as_ref()
                .is_some_and(|c| !same_dictionaries(&c.dictionaries, batch))
        {
            // A dictionary changed (a shadow's rows after the live model
            // was swapped, a reloaded table's text): an IPC file holds one
            // dictionary per column, so a new file.
            self.close_current()?;
        }
        if self.current.is_none() {
            let name = layout::file_name(&self.prefix, self.next_index, self.format.extension());
            self.next_index += 1;
            let sink = FileSink::create_with(
                self.dir.join(name),
                self.format,
                batch.schema(),
                self.parquet,
            )?;
            self.current = Some(OpenFile {
                sink,
                opened: Instant::now(),
                bytes: 0,
                schema: batch.schema(),
                last_batch: 0,
                dictionaries: if self.format == FileFormat::ArrowIpc {
                    dictionaries(batch)
                } else {
                    Vec::new()
                },
            });
        }
        let current = self.current.as_mut().expect("opened");
        current.sink.write(batch)?;
        current.bytes += batch.get_array_memory_size() as u64;
        current.last_batch = number;
        self.written = number;
        if current.bytes >= self.rotate_bytes || current.opened.elapsed() >= self.rotate {
            self.close_current()?;
        }
        Ok(())
    }

    pub fn tick(&mut self) -> Result<(), SinkError> {
        if self
            .current
            .as_ref()
            .is_some_and(|c| c.opened.elapsed() >= self.rotate)
        {
            self.close_current()?;
        }
        Ok(())
    }

    fn close_current(&mut self) -> Result<(), SinkError> {
        if let Some(c) = self.current.take() {
            let dir = self.dir.display().to_string();
            let gone = || SinkError::CloserGone { dir: dir.clone() };
            // At the bound, wait for the oldest close's report. Waiting on
            // the closer's queue instead could deadlock: a closer blocked
            // on a full report channel takes nothing more from it.
            while self.closes_in_flight >= CLOSES_IN_FLIGHT_MAX {
                let result = self.closed.recv().map_err(|_| gone())?;
                self.closes_in_flight -= 1;
                self.take_report(result)?;
            }
            let to_closer = self.to_closer.as_ref().ok_or_else(gone)?;
            to_closer.send((c.sink, c.last_batch)).map_err(|_| gone())?;
            self.closes_in_flight += 1;
        }
        debug_assert!(
            self.closes_in_flight <= CLOSES_IN_FLIGHT_MAX,
            "the report channel holds every close in flight, so the closer never blocks on it"
        );
        Ok(())
    }

    /// A close's report: the batches it made durable, or (checkpoints)
    /// its sealed file kept for the epoch.
    fn take_report(&mut self, result: Closed) -> Result<(), SinkError> {
        let (last_batch, sealed) = result?;
        match (&mut self.sealed, sealed) {
            (Some(epoch), Some(file)) => epoch.push(file),
            (None, None) => self.durable = self.durable.max(last_batch),
            _ => unreachable!("a closer seals exactly when the sink keeps epochs"),
        }
        Ok(())
    }

    pub fn durable_through(&mut self) -> Result<u64, SinkError> {
        while let Ok(result) = self.closed.try_recv() {
            self.closes_in_flight -= 1;
            self.take_report(result)?;
        }
        if self.sealed.is_none() && self.current.is_none() && self.closes_in_flight == 0 {
            self.durable = self.written;
        }
        Ok(self.durable)
    }

    /// A checkpoint: the open file sealed, every close waited for, and
    /// the files sealed since the last checkpoint handed over (with the
    /// index the next file takes). Publishing them
    /// ([`Self::published_epoch`]) is the checkpoint's, after its
    /// manifest.
    pub fn seal_epoch(&mut self) -> Result<(Vec<Sealed>, u64), SinkError> {
        assert!(self.sealed.is_some(), "seal_epoch on a sink without epochs");
        self.close_current()?;
        while self.closes_in_flight > 0 {
            let result = self.closed.recv().map_err(|_| SinkError::CloserGone {
                dir: self.dir.display().to_string(),
            })?;
            self.closes_in_flight -= 1;
            self.take_report(result)?;
        }
        let files = std::mem::take(self.sealed.as_mut().expect("checked"));
        Ok((files, self.next_index))
    }

    /// The checkpoint published what [`Self::seal_epoch`] handed it:
    /// every batch written so far is durable.
    pub fn published_epoch(&mut self) {
        self.durable = self.written;
    }

    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn format(&self) -> FileFormat {
        self.format
    }

    /// Closes the open file and waits for every close to finish, taking
    /// each one's report as it comes (the closer ends once its queue is
    /// closed and empty).
    pub fn close(&mut self) -> Result<(), SinkError> {
        self.close_current()?;
        self.to_closer = None;
        let mut failed = None;
        let closed = self.closed.clone();
        for result in closed.iter() {
            self.closes_in_flight -= 1;
            if let Err(e) = self.take_report(result) {
                failed.get_or_insert(e);
            }
        }
        if let Some(t) = self.closer.take() {
            let _ = t.join();
        }
        match failed {
            Some(e) => Err(e),
            None => self.durable_through().map(drop),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::Int64Array;
    use arrow_schema::{DataType, Field, Schema};

    use super::*;

    /// A sink whose every batch closes a file, never asked what is durable
    /// until it closes: the closes queue up to the bound, the sink waits
    /// there, and `close` takes every report. It once deadlocked: the sink
    /// waited on the closer's queue (or in `close`, on the closer) while
    /// the closer waited on a full report channel nobody drained.
    #[test]
    fn closes_past_the_bound_wait_and_close_takes_every_report() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let batches = 40u64;
        let (done, finished) = crossbeam_channel::bounded(1);
        let writing = std::thread::spawn(move || {
            let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
            let mut files = RotatingFiles::open(
                path,
                "part".into(),
                FileFormat::ArrowIpc,
                ParquetSettings::default(),
                u64::MAX,
                Duration::ZERO,
                false,
            )
            .unwrap();
            for number in 0..batches {
                let column = Int64Array::from(vec![number as i64; 10]);
                let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(column)]).unwrap();
                files.write(&batch, number).unwrap();
                assert!(files.closes_in_flight <= CLOSES_IN_FLIGHT_MAX);
            }
            let result = files.close().and_then(|()| files.durable_through());
            let _ = done.send(());
            result
        });
        // A watchdog, not a timing: a deadlock fails here rather than
        // hanging the test run.
        finished
            .recv_timeout(Duration::from_secs(120))
            .expect("the sink did not finish: it and its closer wait on each other");
        assert_eq!(writing.join().unwrap().unwrap(), batches - 1);
        let published = layout::published(dir.path(), "part", FileFormat::ArrowIpc.extension());
        assert_eq!(published.len() as u64, batches);
    }
}
