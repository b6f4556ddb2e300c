//! The output layout: how published files are named, made durable, listed
//! and read back. The one owner of that knowledge: the sinks write through
//! it, and Flight's DoGet (in the appliance) reads through it.
//!
//! A file sink writes `DIR/PREFIX-NNNNNN.EXT` (six digits or more, from
//! 0), first under the hidden name `.PREFIX-NNNNNN.EXT.partial`; publishing
//! fsyncs the file, renames it into place and fsyncs the directory, so a
//! crash leaves either no file or a whole, named one. Dead letters follow
//! the same rules as `DIR/dead-NNNNNN.ndjson`, one [`DeadLetterRecord`]
//! per line.

use roo_ingest::guard::catch_quietly;
use std::fs::File;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{StringBuilder, UInt64Builder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef};
use base64::Engine as _;
use roo_ingest::DeadLetter;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The prefix and extension of dead-letter files.
pub const DEAD_LETTER_PREFIX: &str = "dead";
pub const DEAD_LETTER_EXTENSION: &str = "ndjson";

/// Rows per batch when a published file is read back.
const READ_BACK_ROWS: usize = 65_536;

/// `PREFIX-NNNNNN.EXT`.
pub fn file_name(prefix: &str, index: u64, extension: &str) -> String {
    format!("{prefix}-{index:06}.{extension}")
}

/// The index in a published file's name, when it is one of `prefix`'s.
fn index_of(name: &str, prefix: &str, extension: &str) -> Option<u64> {
    name.strip_prefix(prefix)?
        .strip_prefix('-')?
        .strip_suffix(extension)?
        .strip_suffix('.')?
        .parse()
        .ok()
}

/// `PREFIX-STREAM-FIRST-END.EXT`: a file holding a source stream's
/// offsets `[FIRST, END)` (20 digits each), e.g. a Kafka partition's
/// (STREAM is `TOPIC-pPARTITION`, [`stream_tag`]). Written again after a
/// crash, a range gets the same name.
pub fn range_file_name(
    prefix: &str,
    stream: &str,
    first: u64,
    end: u64,
    extension: &str,
) -> String {
    format!("{prefix}-{stream}-{first:020}-{end:020}.{extension}")
}

/// The stream part of a range file's name for a source: a Kafka
/// partition's `TOPIC-pPARTITION`; any other source's name with every
/// character but letters, digits, `.` and `_` as `_`.
pub fn stream_tag(source: &str) -> String {
    match roo_ingest::parse_kafka_source(source) {
        Some((topic, partition)) => format!("{topic}-p{partition}"),
        None => source
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect(),
    }
}

/// A published range file's (stream, first, end), when it is one of
/// `prefix`'s.
fn range_of<'a>(name: &'a str, prefix: &str, extension: &str) -> Option<(&'a str, u64, u64)> {
    let rest = name
        .strip_prefix(prefix)?
        .strip_prefix('-')?
        .strip_suffix(extension)?
        .strip_suffix('.')?;
    let (rest, end) = rest.rsplit_once('-')?;
    let (stream, first) = rest.rsplit_once('-')?;
    let digits = |s: &str| s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit());
    if stream.is_empty() || !digits(first) || !digits(end) {
        return None;
    }
    Some((stream, first.parse().ok()?, end.parse().ok()?))
}

/// The published range files of `prefix` in `dir`: (stream, first, end,
/// path), in that order.
pub fn published_ranges(
    dir: &Path,
    prefix: &str,
    extension: &str,
) -> Vec<(String, u64, u64, PathBuf)> {
    let mut files: Vec<(String, u64, u64, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let (stream, first, end) = range_of(&name, prefix, extension)?;
            Some((stream.to_string(), first, end, e.path()))
        })
        .collect();
    files.sort();
    files
}

/// A stream read from offset `first` on (its committed offset, when a
/// process starts reading it): removes the stream's partial files from
/// `first` on — a crashed run's, never published, so never committed —
/// and only this stream's (members of a consumer group may share the
/// directory, each writing its own partitions), never the caller's own
/// (`mine`: files it has open or closing). Fsyncs the directory when it
/// removed any; returns how many.
pub fn remove_partials(
    dir: &Path,
    prefix: &str,
    extension: &str,
    stream: &str,
    first: u64,
    mine: &dyn Fn(&Path) -> bool,
) -> std::io::Result<usize> {
    let doomed = partials(dir, prefix, extension).into_iter().filter(|path| {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let Some(inner) = name
            .strip_prefix('.')
            .and_then(|n| n.strip_suffix(".partial"))
        else {
            return false;
        };
        range_of(inner, prefix, extension).is_some_and(|(s, f, _)| s == stream && f >= first)
            && !mine(path)
    });
    remove_all(dir, doomed)
}

/// A stream read again from `from` and published by the caller through
/// `through`: removes the stream's other published files that lie wholly
/// inside `[from, through)` — an earlier run's, past the offset it
/// committed, whose rows the caller's files now hold. A file is removed
/// only once the caller's published files cover it, so the published
/// files hold every row ever published (a run that dies while reading a
/// range again removes nothing it has not written again); files the
/// caller's do not wholly cover stay (rows there twice, at least once).
/// `mine`: the caller's own files, never removed. Fsyncs the directory
/// when it removed any; returns how many it removed and how many of the
/// earlier run's files from `from` on remain (none: nothing more to wait
/// for).
pub fn remove_covered(
    dir: &Path,
    prefix: &str,
    extension: &str,
    stream: &str,
    from: u64,
    through: u64,
    mine: &dyn Fn(&Path) -> bool,
) -> std::io::Result<(usize, usize)> {
    let (doomed, remaining): (Vec<_>, Vec<_>) = published_ranges(dir, prefix, extension)
        .into_iter()
        .filter(|(s, f, _, path)| s == stream && *f >= from && !mine(path))
        .partition(|(_, _, e, _)| *e <= through);
    let removed = remove_all(dir, doomed.into_iter().map(|(_, _, _, path)| path))?;
    Ok((removed, remaining.len()))
}

/// Whether the stream has published files from `from` on: an earlier
/// run's, to be replaced as they are covered ([`remove_covered`]).
pub fn has_published_from(
    dir: &Path,
    prefix: &str,
    extension: &str,
    stream: &str,
    from: u64,
) -> bool {
    published_ranges(dir, prefix, extension)
        .iter()
        .any(|(s, f, _, _)| s == stream && *f >= from)
}

fn remove_all(dir: &Path, paths: impl Iterator<Item = PathBuf>) -> std::io::Result<usize> {
    let mut removed = 0;
    for path in paths {
        match std::fs::remove_file(&path) {
            Ok(()) => removed += 1,
            // Gone already: its writer published or removed it.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    if removed > 0 {
        sync_dir(dir)?;
    }
    Ok(removed)
}

/// Published files of `prefix` in `dir`: `PREFIX-NNNNNN.EXT` in index
/// order, then range files ([`range_file_name`]) by stream and offset
/// (partial files are hidden and never listed).
pub fn published(dir: &Path, prefix: &str, extension: &str) -> Vec<PathBuf> {
    let mut files: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            Some((index_of(&name, prefix, extension)?, e.path()))
        })
        .collect();
    files.sort();
    let ranges = published_ranges(dir, prefix, extension);
    files
        .into_iter()
        .map(|(_, p)| p)
        .chain(ranges.into_iter().map(|(_, _, _, p)| p))
        .collect()
}

/// The first index after every published file of `prefix` in `dir`, so a
/// restart never overwrites a finished file.
pub fn next_free_index(dir: &Path, prefix: &str, extension: &str) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| index_of(&e.file_name().into_string().ok()?, prefix, extension))
        .max()
        .map_or(0, |i| i + 1)
}

/// Published files of `prefix` in `dir` whose index is `from` or more.
pub fn published_from(dir: &Path, prefix: &str, extension: &str, from: u64) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| index_of(n, prefix, extension))
                .is_some_and(|i| i >= from)
        })
        .map(|e| e.path())
        .collect()
}

/// The partial files (`.PREFIX-NNNNNN.EXT.partial`, and of range files)
/// of `prefix` in `dir`.
pub fn partials(dir: &Path, prefix: &str, extension: &str) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix('.')?.strip_suffix(".partial"))
                .is_some_and(|n| {
                    index_of(n, prefix, extension).is_some()
                        || range_of(n, prefix, extension).is_some()
                })
        })
        .map(|e| e.path())
        .collect()
}

/// The hidden file a sink writes before it is complete: `.NAME.partial`
/// beside `path`; `None` when the path names no file.
pub fn partial_path(path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?.to_string_lossy();
    Some(path.with_file_name(format!(".{name}.partial")))
}

/// Makes a finished partial file durable and gives it its name: fsync the
/// file, rename it, fsync the directory (without the last step a crash can
/// lose the rename, and with it the file).
pub fn publish(file: &File, partial: &Path, path: &Path) -> std::io::Result<()> {
    file.sync_all()?;
    std::fs::rename(partial, path)?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// fsync of a directory: its entries (a rename, a new file) are durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    File::open(dir)?.sync_all()
}

/// One dead letter as a line of a dead-letter file.
///
/// `raw` is the record's first bytes as text (invalid UTF-8 replaced) for a
/// person to read; `raw_base64` holds the exact bytes. `records` is how
/// many events the letter stands for: 1 for a record that could not be
/// read, the batch's rows for a batch an operator refused whole.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterRecord {
    pub source: String,
    pub offset: u64,
    pub line: Option<u64>,
    pub reason: String,
    pub raw: String,
    pub raw_base64: String,
    pub raw_bytes: u64,
    #[serde(default = "one")]
    pub records: u64,
}

fn one() -> u64 {
    1
}

impl From<&DeadLetter> for DeadLetterRecord {
    fn from(d: &DeadLetter) -> Self {
        Self {
            source: d.source.to_string(),
            offset: d.offset,
            line: d.line,
            reason: d.reason.clone(),
            raw: String::from_utf8_lossy(&d.raw).into_owned(),
            raw_base64: base64::engine::general_purpose::STANDARD.encode(&d.raw),
            raw_bytes: d.raw_len,
            records: d.records,
        }
    }
}

/// Why a published file could not be read back.
#[derive(Debug, Error)]
pub enum ReadBackError {
    #[error("reading {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("reading {path}")]
    Arrow {
        path: String,
        #[source]
        source: ArrowError,
    },
    #[error("reading {path}")]
    Parquet {
        path: String,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("reading {path}: line {line}: not a dead letter")]
    Letter {
        path: String,
        line: usize,
        #[source]
        source: serde_json::Error,
    },
    #[error("reading {path}: roo writes no .{extension} files")]
    Format { path: String, extension: String },
    #[error("reading {path}: the file is corrupt (its decoder failed)")]
    Corrupt { path: String },
}

/// `schema` with dictionaries as their values: what a CSV file holds.
pub fn hydrated(schema: &SchemaRef) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Dictionary(_, value) => {
                Field::new(f.name(), value.as_ref().clone(), f.is_nullable())
            }
            _ => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// Sends every batch of a published output file (Arrow IPC, Parquet, or
/// CSV read with `schema`, dictionaries restored); `Ok(false)` when `send`
/// said stop.
pub fn read_output_file(
    path: &Path,
    schema: &SchemaRef,
    send: &mut dyn FnMut(RecordBatch) -> bool,
) -> Result<bool, ReadBackError> {
    let shown = || path.display().to_string();
    let arrow = |source| ReadBackError::Arrow {
        path: shown(),
        source,
    };
    let parquet = |source| ReadBackError::Parquet {
        path: shown(),
        source,
    };
    let file = File::open(path).map_err(|source| ReadBackError::Io {
        path: shown(),
        source,
    })?;
    let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    // The decoders trust offsets and counts in the file: a corrupt one
    // that makes them panic is an error naming it, not a crash.
    let corrupt = || ReadBackError::Corrupt { path: shown() };
    let open = || -> Result<Box<dyn Iterator<Item = Result<RecordBatch, ReadBackError>>>, ReadBackError> {
        Ok(match extension {
        "arrow" => Box::new(
            arrow_ipc::reader::FileReader::try_new(file, None)
                .map_err(arrow)?
                .map(move |b| b.map_err(arrow)),
        ),
        "parquet" => Box::new(
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                .map_err(parquet)?
                .with_batch_size(READ_BACK_ROWS)
                .build()
                .map_err(parquet)?
                .map(move |b| b.map_err(arrow)),
        ),
        "csv" => {
            let wire = schema.clone();
            Box::new(
                arrow_csv::ReaderBuilder::new(hydrated(schema))
                    .with_header(true)
                    .with_batch_size(READ_BACK_ROWS)
                    .build(file)
                    .map_err(arrow)?
                    .map(move |b| {
                        // model_version back to the dictionary it was.
                        let b = b.map_err(arrow)?;
                        let columns = b
                            .columns()
                            .iter()
                            .zip(wire.fields())
                            .map(|(c, f)| arrow_cast::cast(c, f.data_type()))
                            .collect::<Result<Vec<_>, _>>()
                            .map_err(arrow)?;
                        RecordBatch::try_new(wire.clone(), columns).map_err(arrow)
                    }),
            )
        }
        other => {
            return Err(ReadBackError::Format {
                path: shown(),
                extension: other.to_string(),
            })
        }
        })
    };
    let mut batches = catch_quietly(open).map_err(|_| corrupt())??;
    loop {
        let next = catch_quietly(|| batches.next()).map_err(|_| corrupt())?;
        let Some(b) = next else {
            return Ok(true);
        };
        if !send(b?) {
            return Ok(false);
        }
    }
}

/// The columns of dead letters read back as Arrow.
pub fn dead_letter_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("source", DataType::Utf8, false),
        Field::new("offset", DataType::UInt64, false),
        Field::new("line", DataType::UInt64, true),
        Field::new("reason", DataType::Utf8, false),
        Field::new("raw", DataType::Utf8, false),
        Field::new("raw_base64", DataType::Utf8, false),
        Field::new("raw_bytes", DataType::UInt64, false),
        Field::new("records", DataType::UInt64, false),
    ]))
}

/// Sends a dead-letter file as Arrow batches of up to 4,096 letters;
/// `Ok(false)` when `send` said stop.
pub fn read_dead_letters(
    path: &Path,
    send: &mut dyn FnMut(RecordBatch) -> bool,
) -> Result<bool, ReadBackError> {
    let shown = || path.display().to_string();
    let file = File::open(path).map_err(|source| ReadBackError::Io {
        path: shown(),
        source,
    })?;
    let mut lines = std::io::BufReader::new(file).lines().enumerate().peekable();
    while lines.peek().is_some() {
        let mut source = StringBuilder::new();
        let mut offset = UInt64Builder::new();
        let mut line_no = UInt64Builder::new();
        let mut reason = StringBuilder::new();
        let mut raw = StringBuilder::new();
        let mut raw_base64 = StringBuilder::new();
        let mut raw_bytes = UInt64Builder::new();
        let mut records = UInt64Builder::new();
        for (n, text) in lines.by_ref().take(4096) {
            let text = text.map_err(|source| ReadBackError::Io {
                path: shown(),
                source,
            })?;
            let d: DeadLetterRecord =
                serde_json::from_str(&text).map_err(|source| ReadBackError::Letter {
                    path: shown(),
                    line: n + 1,
                    source,
                })?;
            source.append_value(&d.source);
            offset.append_value(d.offset);
            line_no.append_option(d.line);
            reason.append_value(&d.reason);
            raw.append_value(&d.raw);
            raw_base64.append_value(&d.raw_base64);
            raw_bytes.append_value(d.raw_bytes);
            records.append_value(d.records);
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(source.finish()),
            Arc::new(offset.finish()),
            Arc::new(line_no.finish()),
            Arc::new(reason.finish()),
            Arc::new(raw.finish()),
            Arc::new(raw_base64.finish()),
            Arc::new(raw_bytes.finish()),
            Arc::new(records.finish()),
        ];
        let batch = RecordBatch::try_new(dead_letter_schema(), columns).map_err(|source| {
            ReadBackError::Arrow {
                path: shown(),
                source,
            }
        })?;
        if !send(batch) {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parquet files that make the parquet crate panic (found by the fuzz
    /// test; kept in ingest's test data) read back as an error.
    #[test]
    fn a_corrupt_output_file_is_an_error_not_a_crash() {
        let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ingest/tests/data");
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "fuzz-parquet-divide-by-zero.parquet",
            "fuzz-parquet-no-dict-decoder.parquet",
        ] {
            let path = dir.path().join(name);
            std::fs::copy(data.join(name), &path).unwrap();
            let schema = Arc::new(Schema::empty());
            let read = read_output_file(&path, &schema, &mut |_| true);
            let e = read.expect_err(name).to_string();
            assert!(e.contains(name), "{e}");
        }
    }

    #[test]
    fn names_are_listed_in_index_order_and_partials_are_hidden() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "part-000010.arrow",
            "part-000002.arrow",
            ".part-000011.arrow.partial",
            "part-x.arrow",
            "other-000001.arrow",
        ] {
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        let names: Vec<String> = published(dir.path(), "part", "arrow")
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["part-000002.arrow", "part-000010.arrow"]);
        assert_eq!(next_free_index(dir.path(), "part", "arrow"), 11);
        assert_eq!(file_name("part", 11, "arrow"), "part-000011.arrow");
    }

    #[test]
    fn a_dead_letter_keeps_its_exact_bytes() {
        let letter = DeadLetter {
            source: Arc::from("tcp://x#1"),
            offset: 7,
            line: Some(2),
            raw: vec![b'a', 0xff, 0xfe, b'\n'],
            raw_len: 4,
            reason: "column 'amount': expected a number".into(),
            records: 1,
        };
        let record = DeadLetterRecord::from(&letter);
        assert_eq!(record.raw, "a\u{fffd}\u{fffd}\n", "readable, lossy");
        let line = serde_json::to_string(&record).unwrap();
        let back: DeadLetterRecord = serde_json::from_str(&line).unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&back.raw_base64)
            .unwrap();
        assert_eq!(bytes, letter.raw, "exact");
        assert_eq!(back, record);
    }
}
