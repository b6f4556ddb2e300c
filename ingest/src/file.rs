//! File sources: CSV, NDJSON and raw f32 rows through the io_uring reader
//! and the one-pass parsers; Arrow IPC (file and stream) mapped zero-copy;
//! Parquet through the parquet crate.

use std::fs::File;
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use arrow_array::RecordBatch;
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use crate::framer::{BatchLimits, StreamFormat};
use crate::guard::{guarded, Guarded};
use crate::ipc::MappedIpc;
use crate::parallel::{ParsePool, StreamFramer};
use crate::parse::csv::CsvHeader;
use crate::read::{read_file, ReadOptions, ReadPath};
use crate::record::IngestBatch;
use crate::IngestError;

/// A file format roo reads (and, for CSV, Parquet and Arrow IPC, writes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileFormat {
    Csv,
    /// One JSON object per line.
    Ndjson,
    /// Rows of little-endian f32, columns named by the caller.
    RawF32,
    Parquet,
    /// Arrow IPC: the file format when reading (the stream format is
    /// recognised too), the file format when writing.
    ArrowIpc,
}

impl FileFormat {
    /// From a file's extension: `.csv`, `.ndjson`/`.jsonl`, `.f32`,
    /// `.parquet`/`.pq`, `.arrow`/`.ipc`/`.feather`/`.arrows`.
    pub fn from_path(path: &Path) -> Option<Self> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        Self::from_name(&ext)
    }

    /// From a name as given on a command line (or an extension).
    pub fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "csv" => Some(Self::Csv),
            "ndjson" | "jsonl" => Some(Self::Ndjson),
            "f32" | "raw" => Some(Self::RawF32),
            "parquet" | "pq" => Some(Self::Parquet),
            "arrow" | "ipc" | "feather" | "arrows" => Some(Self::ArrowIpc),
            _ => None,
        }
    }

    /// The extension roo gives a file it writes in this format.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Csv => "csv",
            Self::Ndjson => "ndjson",
            Self::RawF32 => "f32",
            Self::Parquet => "parquet",
            Self::ArrowIpc => "arrow",
        }
    }
}

/// Bytes read from the front of a text file to find its columns and their
/// types.
const SAMPLE_BYTES_MAX: usize = 1 << 20;
/// Rows of that sample used to infer the types of columns not parsed as f32.
const SAMPLE_ROWS_MAX: usize = 1024;

/// An open input file: its schema is known before any batch is read.
pub struct FileSource {
    path: PathBuf,
    format: FileFormat,
    schema: SchemaRef,
    read: ReadOptions,
    parse_pool: Option<ParsePool>,
    /// Where reading starts: bytes (text, raw) or rows (Parquet, Arrow
    /// IPC) already consumed, and the line there.
    start: StartAt,
}

/// Where a file is read from: its start, or a position a checkpoint
/// recorded ([`FileSource::start_at`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StartAt {
    /// Bytes for CSV, NDJSON and raw files; rows for Parquet and Arrow IPC
    /// (the unit of the batches' offsets).
    pub offset: u64,
    /// The line at `offset` (1 at the start).
    pub line: u64,
}

impl Default for StartAt {
    fn default() -> Self {
        Self { offset: 0, line: 1 }
    }
}

impl FileSource {
    /// Opens `path` and finds its schema. For CSV the header names the
    /// columns; for NDJSON the keys of the first lines do. Column types are
    /// inferred from the first 1,024 rows (Int64, Float64, Boolean, else
    /// Utf8), except those the caller parses as f32
    /// ([`FileSource::parse_as_f32`]); a later value that does not fit its
    /// column's type sends its row to the dead letters.
    pub fn open(path: impl AsRef<Path>, format: FileFormat) -> Result<Self, IngestError> {
        let path = path.as_ref().to_path_buf();
        let shown = path.display().to_string();
        let io = |error| IngestError::Io {
            path: shown.clone(),
            error,
        };
        let format_error = |message: String| IngestError::Format {
            path: shown.clone(),
            message,
        };
        let file = File::open(&path).map_err(io)?;
        let schema = match format {
            FileFormat::Csv | FileFormat::Ndjson => {
                let mut sample = Vec::with_capacity(
                    SAMPLE_BYTES_MAX.min(file.metadata().map_err(io)?.len() as usize),
                );
                (&file)
                    .take(SAMPLE_BYTES_MAX as u64)
                    .read_to_end(&mut sample)
                    .map_err(io)?;
                let at_end = sample.len() < SAMPLE_BYTES_MAX;
                if sample.iter().all(|c| c.is_ascii_whitespace()) {
                    return Err(format_error(match format {
                        FileFormat::Csv => {
                            "the file is empty; expected a header line naming the columns".into()
                        }
                        _ => "the file is empty; expected JSON objects, one per line".into(),
                    }));
                }
                let (names, inferred) = if format == FileFormat::Csv {
                    crate::parse::csv::sample(&sample, b',', SAMPLE_ROWS_MAX, at_end).ok_or_else(
                        || {
                            format_error(format!(
                                "the header line is longer than {} bytes",
                                SAMPLE_BYTES_MAX
                            ))
                        },
                    )?
                } else {
                    let (names, inferred) = crate::parse::ndjson::sample(&sample, SAMPLE_ROWS_MAX);
                    if names.is_empty() {
                        return Err(format_error(
                            "no JSON object with keys in the first lines; expected one object per line".into(),
                        ));
                    }
                    (names, inferred)
                };
                check_names(&shown, &names)?;
                let types: Vec<DataType> = inferred.iter().map(|i| i.data_type()).collect();
                crate::parse::columns::schema_of(&names, &types)
            }
            FileFormat::RawF32 => {
                return Err(format_error(
                    "raw f32 rows carry no column names; open them with FileSource::open_raw"
                        .into(),
                ))
            }
            FileFormat::Parquet => guarded(|| {
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                    .map(|b| b.schema().clone())
            })
            .map_err(format_error)?,
            FileFormat::ArrowIpc => MappedIpc::open(&file).map_err(format_error)?.schema(),
        };
        Ok(Self {
            path,
            format,
            schema,
            read: ReadOptions::default(),
            parse_pool: None,
            start: StartAt::default(),
        })
    }

    /// Opens a file of raw little-endian f32 rows with these column names.
    pub fn open_raw(path: impl AsRef<Path>, columns: &[String]) -> Result<Self, IngestError> {
        let path = path.as_ref().to_path_buf();
        let shown = path.display().to_string();
        File::open(&path).map_err(|error| IngestError::Io {
            path: shown.clone(),
            error,
        })?;
        check_names(&shown, columns)?;
        let schema = Arc::new(Schema::new(
            columns
                .iter()
                .map(|n| Field::new(n, DataType::Float32, true))
                .collect::<Vec<_>>(),
        ));
        Ok(Self {
            path,
            format: FileFormat::RawF32,
            schema,
            read: ReadOptions::default(),
            parse_pool: None,
            start: StartAt::default(),
        })
    }

    /// How CSV, NDJSON and raw files are read (io_uring or plain).
    pub fn with_read_options(mut self, read: ReadOptions) -> Self {
        self.read = read;
        self
    }

    /// Parse CSV and NDJSON in pieces on these threads (see
    /// [`crate::StreamFramer`]) instead of on the reading thread alone.
    pub fn with_parse_pool(mut self, pool: ParsePool) -> Self {
        self.parse_pool = Some(pool);
        self
    }

    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads from `offset` on (in the batches' offset unit: bytes for
    /// text and raw files, rows for Parquet and Arrow IPC), as a
    /// checkpoint recorded it: batches' offsets and dead letters' lines
    /// go on from there (the lines before are counted here, one pass over
    /// the prefix). A text file's offset must be a record's start: after
    /// a line end, or 0.
    pub fn start_at(&mut self, offset: u64) -> Result<(), IngestError> {
        let shown = self.path.display().to_string();
        let io = |error| IngestError::Io {
            path: shown.clone(),
            error,
        };
        let mut line = 1;
        if matches!(self.format, FileFormat::Csv | FileFormat::Ndjson) && offset > 0 {
            let file = File::open(&self.path).map_err(io)?;
            let mut prefix = std::io::BufReader::with_capacity(1 << 20, (&file).take(offset));
            let mut read = 0u64;
            let mut last = b'\n';
            loop {
                let buf = prefix.fill_buf().map_err(io)?;
                if buf.is_empty() {
                    break;
                }
                line += memchr::memchr_iter(b'\n', buf).count() as u64;
                last = buf[buf.len() - 1];
                read += buf.len() as u64;
                let n = buf.len();
                prefix.consume(n);
            }
            if read < offset {
                return Err(IngestError::Format {
                    path: shown,
                    message: format!("cannot resume at byte {offset}: the file holds {read} bytes"),
                });
            }
            if last != b'\n' {
                return Err(IngestError::Format {
                    path: shown,
                    message: format!(
                        "cannot resume at byte {offset}: it is not the start of a line"
                    ),
                });
            }
        }
        self.start = StartAt { offset, line };
        Ok(())
    }

    pub fn format(&self) -> FileFormat {
        self.format
    }

    /// Parse these CSV or NDJSON columns as Float32 (an empty field is a
    /// null), so a non-numeric cell is a dead letter naming its line and
    /// column. Other formats keep their stored types.
    pub fn parse_as_f32(&mut self, columns: &[usize]) {
        if !matches!(self.format, FileFormat::Csv | FileFormat::Ndjson) {
            return;
        }
        let fields: Vec<Field> = self
            .schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| {
                if columns.contains(&i) {
                    Field::new(f.name(), DataType::Float32, true)
                } else {
                    f.as_ref().clone()
                }
            })
            .collect();
        self.schema = Arc::new(Schema::new(fields));
    }

    /// The file's records in batches of at most `batch_rows` records. Text
    /// and raw files are read and parsed on a thread of their own, at most
    /// two batches ahead of the consumer.
    pub fn batches(self, batch_rows: usize) -> Result<FileBatches, IngestError> {
        assert!(batch_rows > 0, "batch_rows must be positive");
        let shown: Arc<str> = Arc::from(self.path.display().to_string());
        let format_error = |message: String| IngestError::Format {
            path: shown.to_string(),
            message,
        };
        let file = File::open(&self.path).map_err(|error| IngestError::Io {
            path: shown.to_string(),
            error,
        })?;
        let start = self.start;
        let ready_made = |iter: Box<dyn Iterator<Item = Result<RecordBatch, String>> + Send>| {
            // Rows before `start` are skipped (a resumed file).
            let mut skip = start.offset;
            let mut rows = start.offset;
            let mut seq = 0u64;
            let shown = shown.clone();
            let iter = iter.flat_map(move |b| -> Vec<Result<IngestBatch, IngestError>> {
                match b {
                    Err(message) => vec![Err(IngestError::Format {
                        path: shown.to_string(),
                        message,
                    })],
                    Ok(batch) if skip >= batch.num_rows() as u64 => {
                        skip -= batch.num_rows() as u64;
                        Vec::new()
                    }
                    Ok(batch) => {
                        let batch = batch.slice(skip as usize, batch.num_rows() - skip as usize);
                        skip = 0;
                        (0..batch.num_rows().div_ceil(batch_rows).max(1))
                            .map(|i| {
                                let start = i * batch_rows;
                                let len = batch_rows.min(batch.num_rows() - start);
                                let part = batch.slice(start, len);
                                let out = IngestBatch {
                                    source: shown.clone(),
                                    seq,
                                    offsets: rows..rows + len as u64,
                                    ingest_time: SystemTime::now(),
                                    batch: part,
                                    dead_letters: Vec::new(),
                                };
                                seq += 1;
                                rows += len as u64;
                                Ok(out)
                            })
                            .collect()
                    }
                }
            });
            FileBatches {
                inner: Inner::Ready(Box::new(iter)),
                read_path: None,
            }
        };
        match self.format {
            FileFormat::Parquet => {
                let reader = guarded(|| {
                    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)?
                        .with_batch_size(batch_rows)
                        .build()
                })
                .map_err(format_error)?;
                Ok(ready_made(Box::new(Guarded::new(reader))))
            }
            FileFormat::ArrowIpc => {
                let ipc = MappedIpc::open(&file).map_err(format_error)?;
                Ok(ready_made(ipc.into_batches()))
            }
            FileFormat::Csv | FileFormat::Ndjson | FileFormat::RawF32 => {
                let format = match self.format {
                    // Resumed past the header: no header to skip.
                    FileFormat::Csv => StreamFormat::Csv {
                        header: if start.offset == 0 {
                            CsvHeader::Skip
                        } else {
                            CsvHeader::Absent
                        },
                        delimiter: b',',
                    },
                    FileFormat::Ndjson => StreamFormat::Ndjson,
                    _ => StreamFormat::RawF32,
                };
                let limits = BatchLimits {
                    max_rows: batch_rows,
                    ..BatchLimits::default()
                };
                let mut framer = StreamFramer::new(
                    shown.clone(),
                    &format,
                    Some(self.schema.clone()),
                    limits,
                    self.parse_pool.as_ref(),
                )?;
                framer.start_at(start.offset, start.line);
                Ok(spawn_reader(file, shown, framer, self.read, start.offset))
            }
        }
    }
}

enum Message {
    Batch(IngestBatch),
    Done(Result<ReadPath, IngestError>),
}

enum Inner {
    Ready(Box<dyn Iterator<Item = Result<IngestBatch, IngestError>> + Send>),
    Thread {
        receiver: crossbeam_channel::Receiver<Message>,
        thread: Option<std::thread::JoinHandle<()>>,
    },
}

/// Batches of a file, in order. For text and raw files, [`FileBatches::read_path`]
/// says how the file was read once the last batch is out.
pub struct FileBatches {
    inner: Inner,
    read_path: Option<ReadPath>,
}

impl FileBatches {
    pub fn read_path(&self) -> Option<&ReadPath> {
        self.read_path.as_ref()
    }
}

impl Iterator for FileBatches {
    type Item = Result<IngestBatch, IngestError>;

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.inner {
            Inner::Ready(iter) => iter.next(),
            Inner::Thread { receiver, thread } => match receiver.recv() {
                Ok(Message::Batch(b)) => Some(Ok(b)),
                Ok(Message::Done(result)) => {
                    if let Some(t) = thread.take() {
                        let _ = t.join();
                    }
                    match result {
                        Ok(path) => {
                            self.read_path = Some(path);
                            None
                        }
                        Err(e) => Some(Err(e)),
                    }
                }
                Err(_) => None,
            },
        }
    }
}

impl Drop for FileBatches {
    fn drop(&mut self) {
        if let Inner::Thread { receiver, thread } = &mut self.inner {
            // Unblock the reader (its sends fail once the receiver is gone).
            let receiver = std::mem::replace(receiver, crossbeam_channel::never());
            drop(receiver);
            if let Some(t) = thread.take() {
                let _ = t.join();
            }
        }
    }
}

/// Batches a reader thread may run ahead of its consumer.
const BATCHES_AHEAD: usize = 2;

fn spawn_reader(
    file: File,
    shown: Arc<str>,
    mut framer: StreamFramer,
    read: ReadOptions,
    from: u64,
) -> FileBatches {
    let (sender, receiver) = crossbeam_channel::bounded(BATCHES_AHEAD);
    let thread = std::thread::Builder::new()
        .name("roo-read".into())
        .spawn(move || {
            let mut sink = |b: IngestBatch| sender.send(Message::Batch(b)).is_ok();
            let result = read_file(&file, &shown, from, &read, &mut |piece| {
                framer.push(piece, &mut sink);
                !framer.stopped()
            });
            if result.is_ok() && !framer.stopped() {
                framer.finish(true, &mut sink);
            }
            let _ = sender.send(Message::Done(result));
        })
        .expect("spawning a reader thread");
    FileBatches {
        inner: Inner::Thread {
            receiver,
            thread: Some(thread),
        },
        read_path: None,
    }
}

fn check_names(shown: &str, names: &[String]) -> Result<(), IngestError> {
    let mut seen = std::collections::HashSet::new();
    for (i, name) in names.iter().enumerate() {
        if name.is_empty() {
            return Err(IngestError::Format {
                path: shown.into(),
                message: format!("column {} has no name", i + 1),
            });
        }
        if !seen.insert(name) {
            return Err(IngestError::Format {
                path: shown.into(),
                message: format!("column '{name}' is named twice"),
            });
        }
    }
    Ok(())
}
