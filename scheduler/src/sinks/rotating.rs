//! Rotating output files `DIR/PREFIX-NNNNNN.EXT`. Closing a file (flush,
//! fsync, rename, fsync the directory) runs on a closer thread so the sink
//! keeps writing the next file; the batches of a file become durable when
//! its close completes.
//!
//! **By source** (a Kafka pipeline): each source stream (partition) has
//! its own open file, named when it closes by the offsets it holds,
//! `DIR/PREFIX-TOPIC-pPARTITION-FIRST-END.EXT` ([`layout::range_file_name`]),
//! so a range read again after a crash is written under the same name, never
//! beside itself. The rules that make that hold:
//!
//! - a source's offsets are committed only at a *commit point* of this sink:
//!   the last flow of a file once it is published, or a flow without rows
//!   while the source has no open file ([`RotatingFiles::commit_point`]); so
//!   a committed offset never falls inside a published file;
//! - when a source's flows (re)start — its first flow in this process, or a
//!   flow that does not start where its last ended (the partition was read
//!   again from its committed offset) — every published file of that source
//!   starting at or after that offset is removed before this run writes
//!   any: an earlier run wrote them past its last commit, and this run
//!   writes those offsets again. The removal goes through the closer, in
//!   order with the closes.
//!
//! Under checkpoints (`epochs` in [`RotatingFiles::open`]) a close seals a file
//! (complete and fsynced under its hidden name) without publishing it;
//! [`RotatingFiles::seal_epoch`] hands a checkpoint every file sealed since
//! the last one, which publishes them once its manifest is durable.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
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

/// Files open at once, at most (by source: one per partition); past it
/// the oldest is closed.
pub const OPEN_FILES_MAX: usize = 64;

struct OpenFile {
    sink: FileSink,
    opened: Instant,
    bytes: u64,
    schema: SchemaRef,
    /// The first and the last flow the file holds (by source: with the
    /// flows without rows it covers).
    first_flow: u64,
    last_flow: u64,
    /// An Arrow IPC file's dictionaries (column, values), as its first
    /// batch wrote them: the format holds one per column.
    dictionaries: Vec<(usize, ArrayRef)>,
    /// By source: the stream and the offsets it holds so far.
    range: Option<(String, Range<u64>)>,
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

/// One flow as the sink stage hands it to the sinks.
#[derive(Clone, Debug)]
pub struct FlowAt {
    /// The sink stage's flow number (1, 2, …).
    pub number: u64,
    /// The source stream and the offsets the flow covers; `None` for an
    /// aggregate's results.
    pub source: Option<(Arc<str>, Range<u64>)>,
}

/// What the closer does, in order.
enum Closing {
    /// Close a file: (the file, its first and last flow, by source its
    /// stream and offsets).
    File(Box<FileSink>, u64, u64, Option<(String, Range<u64>)>),
    /// A stream (re)starts at an offset: a crashed run's partial files of
    /// it go, and its published files from there go once this sink's
    /// published files cover them (`layout::remove_covered`).
    Supersede { stream: String, from: u64 },
}

/// A closer's report: for a file, its first and last flow, and the file
/// when it was sealed rather than published; nothing for a removal.
type Closed = Result<Option<(u64, u64, Option<Sealed>)>, SinkError>;

pub(crate) struct RotatingFiles {
    dir: PathBuf,
    prefix: String,
    format: FileFormat,
    parquet: ParquetSettings,
    rotate_bytes: u64,
    rotate: Duration,
    /// Open files: by source stream (by source), or the one file (`None`).
    open: BTreeMap<Option<Arc<str>>, OpenFile>,
    by_source: bool,
    /// By source: where each stream's last flow ended.
    stream_end: HashMap<Arc<str>, u64>,
    /// By source: flows after which their stream's offsets all lie in
    /// published files (once every flow up to them is durable).
    commit_points: BTreeSet<u64>,
    next_index: u64,
    to_closer: Option<Sender<Closing>>,
    /// By source: the partial files this sink has open or closing, which
    /// a stream's supersede (removing a crashed run's partials) keeps.
    own_partials: Arc<Mutex<HashSet<PathBuf>>>,
    closed: Receiver<Closed>,
    closer: Option<JoinHandle<()>>,
    /// Closer messages without a report yet.
    closes_in_flight: usize,
    /// First flows of the files open or closing: nothing from the least
    /// of them on is durable.
    undurable: BTreeMap<u64, usize>,
    written: u64,
    durable: u64,
    /// Files sealed, not published (checkpoints); `None` without.
    sealed: Option<Vec<Sealed>>,
}

impl RotatingFiles {
    /// Numbering continues after the last published file in `dir`. With
    /// `epochs` (checkpoints) closed files are sealed, and published only
    /// by the checkpoint that records them (recovery has removed the files
    /// of later epochs, so numbering goes on after the last recorded).
    /// `by_source` keeps a file per source stream, named by its offsets
    /// (never with `epochs`).
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        dir: PathBuf,
        prefix: String,
        format: FileFormat,
        parquet: ParquetSettings,
        rotate_bytes: u64,
        rotate: Duration,
        epochs: bool,
        by_source: bool,
    ) -> Result<Self, SinkError> {
        assert!(
            !(epochs && by_source),
            "files by source offsets are for sources that commit offsets, not checkpoints"
        );
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
        // By source, a crash's unfinished files go stream by stream, as
        // each stream is read again (`layout::remove_partials`): other members
        // of the group may be writing theirs in the same directory.
        let next_index = layout::next_free_index(&dir, &prefix, format.extension());
        let (to_closer, closing) = bounded::<Closing>(CLOSES_IN_FLIGHT_MAX);
        let (report, closed) = bounded::<Closed>(CLOSES_IN_FLIGHT_MAX + 1);
        let (closer_dir, closer_prefix, extension) =
            (dir.clone(), prefix.clone(), format.extension());
        let own_partials = Arc::new(Mutex::new(HashSet::new()));
        let closer_own = Arc::clone(&own_partials);
        let closer = std::thread::Builder::new()
            .name("roo-close".into())
            .spawn(move || {
                // By stream: where this sink (re)started it, and how far its
                // published files reach from there without a gap.
                let mut cover: HashMap<String, (u64, u64)> = HashMap::new();
                // By stream: the files this sink published since it (re)started it.
                let mut own_published: HashMap<String, HashSet<PathBuf>> = HashMap::new();
                // The streams with an earlier run's files still to replace:
                // only they list the directory as their files publish.
                let mut earlier: HashSet<String> = HashSet::new();
                let io = |source| SinkError::Io {
                    path: closer_dir.display().to_string(),
                    source,
                };
                for message in closing.iter() {
                    let done = match message {
                        Closing::File(sink, first, last, range) => {
                            let partial = sink.partial().to_path_buf();
                            let path = sink.path().to_path_buf();
                            let done = if epochs {
                                (*sink).seal().map(|s| Some((first, last, Some(s))))
                            } else {
                                (*sink).finish().map(|_| Some((first, last, None)))
                            };
                            closer_own.lock().expect("not poisoned").remove(&partial);
                            match (done, range) {
                                (Ok(report), Some((stream, offsets)))
                                    if !epochs && !earlier.contains(&stream) =>
                                {
                                    let reach = cover
                                        .entry(stream)
                                        .or_insert((offsets.start, offsets.start));
                                    if reach.1 == offsets.start {
                                        reach.1 = offsets.end;
                                    }
                                    Ok(report)
                                }
                                (Ok(report), Some((stream, offsets))) if !epochs => {
                                    let own = own_published.entry(stream.clone()).or_default();
                                    own.insert(path);
                                    let reach = cover.entry(stream.clone()).or_insert((offsets.start, offsets.start));
                                    if reach.1 == offsets.start {
                                        reach.1 = offsets.end;
                                    }
                                    let (from, through) = *reach;
                                    layout::remove_covered(
                                        &closer_dir,
                                        &closer_prefix,
                                        extension,
                                        &stream,
                                        from,
                                        through,
                                        &|p| own.contains(p),
                                    )
                                    .map(|(removed, remaining)| {
                                        if remaining == 0 {
                                            earlier.remove(&stream);
                                        }
                                        if removed > 0 {
                                            tracing::info!(
                                                "{}: {stream} read again from offset {from}: removed {removed} file(s) an earlier run wrote there, now written again through {through}",
                                                closer_dir.display()
                                            );
                                        }
                                        report
                                    })
                                    .map_err(io)
                                }
                                (done, _) => done,
                            }
                        }
                        Closing::Supersede { stream, from } => {
                            cover.insert(stream.clone(), (from, from));
                            own_published.remove(&stream);
                            if layout::has_published_from(
                                &closer_dir,
                                &closer_prefix,
                                extension,
                                &stream,
                                from,
                            ) {
                                earlier.insert(stream.clone());
                            } else {
                                earlier.remove(&stream);
                            }
                            layout::remove_partials(
                                &closer_dir,
                                &closer_prefix,
                                extension,
                                &stream,
                                from,
                                &|partial| {
                                    closer_own.lock().expect("not poisoned").contains(partial)
                                },
                            )
                            .map(|_| None)
                            .map_err(io)
                        }
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
            open: BTreeMap::new(),
            by_source,
            stream_end: HashMap::new(),
            commit_points: BTreeSet::new(),
            next_index,
            to_closer: Some(to_closer),
            own_partials,
            closed,
            closer: Some(closer),
            closes_in_flight: 0,
            undurable: BTreeMap::new(),
            written: 0,
            durable: 0,
            sealed: epochs.then(Vec::new),
        })
    }

    /// Which open file a flow goes to.
    fn key_of(&self, at: &FlowAt) -> Option<Arc<str>> {
        match &at.source {
            Some((source, _)) if self.by_source => Some(source.clone()),
            _ => None,
        }
    }

    /// By source, before a flow's rows: a stream that (re)starts has the
    /// files an earlier run wrote past its commit removed.
    fn track(&mut self, at: &FlowAt) -> Result<(), SinkError> {
        let Some((source, offsets)) = at.source.as_ref().filter(|_| self.by_source) else {
            return Ok(());
        };
        let last_end = self.stream_end.insert(source.clone(), offsets.end);
        if last_end == Some(offsets.start) {
            return Ok(());
        }
        let key = Some(source.clone());
        if let Some(open) = self.open.get(&key) {
            let range = &open.range.as_ref().expect("by source").1;
            if range.start > offsets.start || range.end > offsets.start {
                tracing::warn!(
                    "{}: {source} is read again from offset {} while this process still writes its offsets {range:?} (the partition came back before its batches were durable): rows of that range may be written twice",
                    self.dir.display(),
                    offsets.start
                );
            }
            self.close(&key)?;
        }
        self.send(Closing::Supersede {
            stream: layout::stream_tag(source),
            from: offsets.start,
        })
    }

    pub fn write(&mut self, batch: &RecordBatch, at: &FlowAt) -> Result<(), SinkError> {
        self.track(at)?;
        let key = self.key_of(at);
        if self
            .open
            .get(&key)
            .is_some_and(|c| c.schema != batch.schema())
        {
            // A model with other outputs or another version: a new file,
            // so each file names one model.
            self.close(&key)?;
        }
        if self.format == FileFormat::ArrowIpc
            && self
                .open
                .get(&key)
                .is_some_and(|c| !same_dictionaries(&c.dictionaries, batch))
        {
            // A dictionary changed (a shadow's rows after the live model
            // was swapped, a reloaded table's text): an IPC file holds one
            // dictionary per column, so a new file.
            self.close(&key)?;
        }
        if !self.open.contains_key(&key) {
            if self.open.len() >= OPEN_FILES_MAX {
                let oldest = self
                    .open
                    .iter()
                    .min_by_key(|(_, f)| f.opened)
                    .map(|(k, _)| k.clone())
                    .expect("at the bound, files are open");
                self.close(&oldest)?;
            }
            let range = match (&key, &at.source) {
                (Some(source), Some((_, offsets))) => {
                    Some((layout::stream_tag(source), offsets.start..offsets.start))
                }
                _ => None,
            };
            // A range file's name is known when it closes: it is written
            // under a provisional one.
            let name = match &range {
                Some((stream, r)) => layout::range_file_name(
                    &self.prefix,
                    stream,
                    r.start,
                    u64::MAX,
                    self.format.extension(),
                ),
                None => {
                    let name =
                        layout::file_name(&self.prefix, self.next_index, self.format.extension());
                    self.next_index += 1;
                    name
                }
            };
            let path = self.dir.join(name);
            if self.by_source {
                // Marked before the file exists: a supersede on the closer
                // must never see it unmarked.
                let partial = layout::partial_path(&path).expect("a file name");
                self.own_partials
                    .lock()
                    .expect("not poisoned")
                    .insert(partial);
            }
            let sink = FileSink::create_with(path, self.format, batch.schema(), self.parquet)?;
            *self.undurable.entry(at.number).or_default() += 1;
            self.open.insert(
                key.clone(),
                OpenFile {
                    sink,
                    opened: Instant::now(),
                    bytes: 0,
                    schema: batch.schema(),
                    first_flow: at.number,
                    last_flow: at.number,
                    dictionaries: if self.format == FileFormat::ArrowIpc {
                        dictionaries(batch)
                    } else {
                        Vec::new()
                    },
                    range,
                },
            );
        }
        let current = self.open.get_mut(&key).expect("opened");
        current.sink.write(batch)?;
        current.bytes += batch.get_array_memory_size() as u64;
        current.last_flow = at.number;
        if let (Some((_, r)), Some((_, offsets))) = (&mut current.range, &at.source) {
            r.end = offsets.end;
        }
        self.written = at.number;
        if current.bytes >= self.rotate_bytes || current.opened.elapsed() >= self.rotate {
            self.close(&key)?;
        }
        Ok(())
    }

    /// A flow without rows. By source, it extends its stream's open file
    /// (committed with it), or with none open is a commit point itself.
    pub fn pass(&mut self, at: &FlowAt) -> Result<(), SinkError> {
        self.track(at)?;
        let key = self.key_of(at);
        if key.is_none() {
            return Ok(());
        }
        match self.open.get_mut(&key) {
            Some(open) => {
                open.last_flow = at.number;
                if let (Some((_, r)), Some((_, offsets))) = (&mut open.range, &at.source) {
                    r.end = offsets.end;
                }
            }
            None => {
                self.commit_points.insert(at.number);
            }
        }
        Ok(())
    }

    /// Whether flow `number`'s source offset may be committed once it is
    /// durable (always, unless by source: see the module's rules). Asked
    /// in flow order; forgets the points up to `number`.
    pub fn commit_point(&mut self, number: u64) -> bool {
        if !self.by_source {
            return true;
        }
        let point = self.commit_points.contains(&number);
        self.commit_points = self.commit_points.split_off(&(number + 1));
        point
    }

    /// Closes `source`'s open file now (its partition is being revoked:
    /// what was handed on must be durable before it goes).
    pub fn flush_source(&mut self, source: &Arc<str>) -> Result<(), SinkError> {
        if self.by_source {
            self.close(&Some(source.clone()))?;
        }
        Ok(())
    }

    pub fn tick(&mut self) -> Result<(), SinkError> {
        let due: Vec<Option<Arc<str>>> = self
            .open
            .iter()
            .filter(|(_, f)| f.opened.elapsed() >= self.rotate)
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            self.close(&key)?;
        }
        Ok(())
    }

    /// Hands a file to the closer (a range file under its final name).
    fn close(&mut self, key: &Option<Arc<str>>) -> Result<(), SinkError> {
        let Some(mut c) = self.open.remove(key) else {
            return Ok(());
        };
        if let Some((stream, r)) = &c.range {
            let name = layout::range_file_name(
                &self.prefix,
                stream,
                r.start,
                r.end,
                self.format.extension(),
            );
            c.sink.retarget(self.dir.join(name));
            self.commit_points.insert(c.last_flow);
        }
        self.send(Closing::File(
            Box::new(c.sink),
            c.first_flow,
            c.last_flow,
            c.range.clone(),
        ))
    }

    fn send(&mut self, message: Closing) -> Result<(), SinkError> {
        let dir = self.dir.display().to_string();
        let gone = || SinkError::CloserGone { dir: dir.clone() };
        // At the bound, wait for the oldest message's report. Waiting on
        // the closer's queue instead could deadlock: a closer blocked on a
        // full report channel takes nothing more from it.
        while self.closes_in_flight >= CLOSES_IN_FLIGHT_MAX {
            let result = self.closed.recv().map_err(|_| gone())?;
            self.closes_in_flight -= 1;
            self.take_report(result)?;
        }
        let to_closer = self.to_closer.as_ref().ok_or_else(gone)?;
        to_closer.send(message).map_err(|_| gone())?;
        self.closes_in_flight += 1;
        debug_assert!(
            self.closes_in_flight <= CLOSES_IN_FLIGHT_MAX,
            "the report channel holds every message in flight, so the closer never blocks on it"
        );
        Ok(())
    }

    /// A closer's report: the file it made durable, or (checkpoints) its
    /// sealed file kept for the epoch.
    fn take_report(&mut self, result: Closed) -> Result<(), SinkError> {
        let Some((first, _last, sealed)) = result? else {
            return Ok(());
        };
        match (&mut self.sealed, sealed) {
            (Some(epoch), Some(file)) => epoch.push(file),
            (None, None) => {
                let n = self
                    .undurable
                    .get_mut(&first)
                    .expect("a file's first flow is counted until its close reports");
                *n -= 1;
                if *n == 0 {
                    self.undurable.remove(&first);
                }
            }
            _ => unreachable!("a closer seals exactly when the sink keeps epochs"),
        }
        Ok(())
    }

    /// The last flow number every flow up to which is durable here.
    pub fn durable_through(&mut self) -> Result<u64, SinkError> {
        while let Ok(result) = self.closed.try_recv() {
            self.closes_in_flight -= 1;
            self.take_report(result)?;
        }
        if self.sealed.is_none() {
            self.durable = match self.undurable.keys().next() {
                Some(first) => first - 1,
                None => self.written,
            };
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
        self.close(&None)?;
        while self.closes_in_flight > 0 {
            let result = self.closed.recv().map_err(|_| SinkError::CloserGone {
                dir: self.dir.display().to_string(),
            })?;
            self.closes_in_flight -= 1;
            self.take_report(result)?;
        }
        self.undurable.clear();
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

    /// Closes the open files and waits for every close to finish, taking
    /// each one's report as it comes (the closer ends once its queue is
    /// closed and empty).
    pub fn close_all(&mut self) -> Result<(), SinkError> {
        let keys: Vec<Option<Arc<str>>> = self.open.keys().cloned().collect();
        for key in keys {
            self.close(&key)?;
        }
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
                false,
            )
            .unwrap();
            for number in 1..=batches {
                let column = Int64Array::from(vec![number as i64; 10]);
                let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(column)]).unwrap();
                let at = FlowAt {
                    number,
                    source: None,
                };
                files.write(&batch, &at).unwrap();
                assert!(files.closes_in_flight <= CLOSES_IN_FLIGHT_MAX);
            }
            let result = files.close_all().and_then(|()| files.durable_through());
            let _ = done.send(());
            result
        });
        // A watchdog, not a timing: a deadlock fails here rather than
        // hanging the test run.
        finished
            .recv_timeout(Duration::from_secs(120))
            .expect("the sink did not finish: it and its closer wait on each other");
        assert_eq!(writing.join().unwrap().unwrap(), batches);
        let published = layout::published(dir.path(), "part", FileFormat::ArrowIpc.extension());
        assert_eq!(published.len() as u64, batches);
    }

    /// By source: a file per partition, named by the offsets it holds; a
    /// second run that reads a range again (its offsets were never
    /// committed) replaces the files from there, and keeps those before.
    #[test]
    fn by_source_files_are_named_by_range_and_a_range_read_again_replaces_them() {
        let dir = tempfile::tempdir().unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let names = || -> Vec<String> {
            layout::published(dir.path(), "part", "arrow")
                .iter()
                .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
                .collect()
        };
        let run = |flows: &[(&str, u64, u64)], first_number: u64, rotate_each: bool| {
            let mut files = RotatingFiles::open(
                dir.path().to_path_buf(),
                "part".into(),
                FileFormat::ArrowIpc,
                ParquetSettings::default(),
                if rotate_each { 1 } else { u64::MAX },
                Duration::from_secs(3600),
                false,
                true,
            )
            .unwrap();
            for (i, &(source, start, end)) in flows.iter().enumerate() {
                let rows: Vec<i64> = (start as i64..end as i64).collect();
                let batch =
                    RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(rows))])
                        .unwrap();
                let at = FlowAt {
                    number: first_number + i as u64,
                    source: Some((Arc::from(source), start..end)),
                };
                files.write(&batch, &at).unwrap();
            }
            files.close_all().unwrap();
            assert_eq!(
                files.durable_through().unwrap(),
                first_number + flows.len() as u64 - 1
            );
        };
        let (a, b) = ("kafka://t/0", "kafka://t/1");
        let name = |p: u32, first: u64, end: u64| {
            layout::range_file_name("part", &format!("t-p{p}"), first, end, "arrow")
        };
        let sorted = |mut v: Vec<String>| {
            v.sort();
            v
        };
        // One file per partition while nothing rotates.
        run(&[(a, 0, 10), (b, 0, 5), (a, 10, 20), (b, 5, 9)], 1, false);
        assert_eq!(names(), sorted(vec![name(0, 0, 20), name(1, 0, 9)]));
        for file in layout::published(dir.path(), "part", "arrow") {
            std::fs::remove_file(file).unwrap();
        }
        // A file per flow; then partition 0 is read again from 10 (where
        // its offsets were committed, a file's end), in other cuts.
        run(&[(a, 0, 10), (b, 0, 5), (a, 10, 20), (b, 5, 9)], 1, true);
        run(&[(a, 10, 13), (a, 13, 20)], 1, true);
        assert_eq!(
            names(),
            sorted(vec![
                name(0, 0, 10),
                name(0, 10, 13),
                name(0, 13, 20),
                name(1, 0, 5),
                name(1, 5, 9)
            ]),
            "partition 0's files from 10 on are replaced; the rest stay"
        );
    }
}
