//! One output file: Arrow IPC, Parquet or CSV, never seen half-written.
//!
//! Batches go to a hidden `.NAME.partial` file beside the target; `finish`
//! flushes and publishes it ([`super::layout::publish`]: fsync, rename, fsync the
//! directory), so a reader sees either no file or a whole one. A sink
//! dropped without `finish` (an error upstream) removes its partial file.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use roo_ingest::FileFormat;

use super::drop_behind::DropBehind;
use super::layout::partial_path;
use super::SinkError;

/// The buffer in front of a CSV or Arrow IPC file (256 KiB): an IPC batch
/// of 4,096 rows is ~35 buffers of ~16 KiB, two or three write calls
/// rather than one per buffer. A rotating sink holds at most
/// `OPEN_FILES_MAX` (64) files open, so 16 MiB of these at most.
const WRITE_BUFFER_BYTES: usize = 256 << 10;

enum Writer {
    Csv(arrow_csv::Writer<BufWriter<DropBehind>>),
    Parquet(Box<parquet::arrow::ArrowWriter<DropBehind>>),
    Ipc(arrow_ipc::writer::FileWriter<BufWriter<DropBehind>>),
}

/// How a Parquet file is encoded (other formats ignore it). Compression is
/// most of a Parquet sink's cost on float columns (measured: snappy ~130
/// ns of ~330 per 32-column row); statistics per column chunk let readers
/// skip row groups, per page also pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParquetSettings {
    pub compression: ParquetCompression,
    pub statistics: ParquetStatistics,
}

impl Default for ParquetSettings {
    fn default() -> Self {
        Self {
            compression: ParquetCompression::Snappy,
            statistics: ParquetStatistics::Chunk,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParquetCompression {
    None,
    Snappy,
    Lz4,
    Zstd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParquetStatistics {
    None,
    Chunk,
    Page,
}

impl ParquetCompression {
    /// The names a configuration uses.
    pub const NAMES: &'static str = "none, snappy, lz4 or zstd";

    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "none" => Self::None,
            "snappy" => Self::Snappy,
            "lz4" => Self::Lz4,
            "zstd" => Self::Zstd,
            _ => return None,
        })
    }

    fn codec(self) -> parquet::basic::Compression {
        use parquet::basic::Compression;
        match self {
            Self::None => Compression::UNCOMPRESSED,
            Self::Snappy => Compression::SNAPPY,
            Self::Lz4 => Compression::LZ4_RAW,
            Self::Zstd => Compression::ZSTD(Default::default()),
        }
    }
}

impl ParquetStatistics {
    pub const NAMES: &'static str = "none, chunk or page";

    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "none" => Self::None,
            "chunk" => Self::Chunk,
            "page" => Self::Page,
            _ => return None,
        })
    }

    fn level(self) -> parquet::file::properties::EnabledStatistics {
        use parquet::file::properties::EnabledStatistics;
        match self {
            Self::None => EnabledStatistics::None,
            Self::Chunk => EnabledStatistics::Chunk,
            Self::Page => EnabledStatistics::Page,
        }
    }
}

pub struct FileSink {
    path: PathBuf,
    partial: PathBuf,
    writer: Option<Writer>,
    schema: SchemaRef,
    batches: u64,
    rows: u64,
}

impl FileSink {
    pub fn create(
        path: impl AsRef<Path>,
        format: FileFormat,
        schema: SchemaRef,
    ) -> Result<Self, SinkError> {
        Self::create_with(path, format, schema, ParquetSettings::default())
    }

    pub fn create_with(
        path: impl AsRef<Path>,
        format: FileFormat,
        schema: SchemaRef,
        parquet: ParquetSettings,
    ) -> Result<Self, SinkError> {
        let path = path.as_ref().to_path_buf();
        let partial = partial_path(&path).ok_or_else(|| SinkError::Encode {
            path: path.display().to_string(),
            message: "the output path names no file".into(),
        })?;
        let shown = path.display().to_string();
        if matches!(format, FileFormat::Ndjson | FileFormat::RawF32) {
            return Err(SinkError::Encode {
                path: shown,
                message: format!("{format:?} is an input format; write csv, parquet or arrow"),
            });
        }
        let file = File::create(&partial).map_err(|source| SinkError::Io {
            path: shown.clone(),
            source,
        })?;
        let file = DropBehind::new(file);
        let encode = |e: &dyn std::fmt::Display| SinkError::Encode {
            path: shown.clone(),
            message: e.to_string(),
        };
        let writer = match format {
            FileFormat::Csv => Writer::Csv(
                arrow_csv::WriterBuilder::new()
                    .with_header(true)
                    .build(BufWriter::with_capacity(WRITE_BUFFER_BYTES, file)),
            ),
            FileFormat::Parquet => {
                // Dictionary encoding pays off on low-cardinality columns
                // (the model version) and is wasted work on measurements;
                // row groups of 128k rows keep each flush short.
                let mut props = parquet::file::properties::WriterProperties::builder()
                    .set_compression(parquet.compression.codec())
                    .set_statistics_enabled(parquet.statistics.level())
                    .set_max_row_group_row_count(Some(128 * 1024))
                    .set_dictionary_enabled(false);
                for f in schema.fields() {
                    if matches!(
                        f.data_type(),
                        arrow_schema::DataType::Dictionary(..) | arrow_schema::DataType::Utf8
                    ) {
                        props = props.set_column_dictionary_enabled(f.name().as_str().into(), true);
                    }
                }
                let props = props.build();
                Writer::Parquet(Box::new(
                    parquet::arrow::ArrowWriter::try_new(file, schema.clone(), Some(props))
                        .map_err(|e| encode(&e))?,
                ))
            }
            FileFormat::ArrowIpc => Writer::Ipc(
                arrow_ipc::writer::FileWriter::try_new(
                    BufWriter::with_capacity(WRITE_BUFFER_BYTES, file),
                    &schema,
                )
                .map_err(|e| encode(&e))?,
            ),
            FileFormat::Ndjson | FileFormat::RawF32 => unreachable!("refused above"),
        };
        Ok(Self {
            path,
            partial,
            writer: Some(writer),
            schema,
            batches: 0,
            rows: 0,
        })
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), SinkError> {
        let result = match self.writer.as_mut().expect("write after finish") {
            Writer::Csv(w) => w.write(batch).map_err(|e| e.to_string()),
            Writer::Parquet(w) => w.write(batch).map_err(|e| e.to_string()),
            Writer::Ipc(w) => w.write(batch).map_err(|e| e.to_string()),
        };
        result.map_err(|message| self.encode_error(message))?;
        self.batches += 1;
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// The name the file is published under.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The hidden name the file is written under until it is published.
    pub fn partial(&self) -> &Path {
        &self.partial
    }

    /// Publishes under another name in the same directory (a range
    /// file's, known only when it closes); the partial file keeps its own.
    pub fn retarget(&mut self, path: PathBuf) {
        self.path = path;
    }

    /// Completes the file and renames it into place; returns the rows written.
    pub fn finish(self) -> Result<u64, SinkError> {
        let sealed = self.seal()?;
        let rows = sealed.rows;
        sealed.publish()?;
        Ok(rows)
    }

    /// Completes the file under its hidden name and makes it durable
    /// (fsync), not yet published: a checkpoint publishes it once its
    /// manifest is durable ([`Sealed::publish`]).
    pub fn seal(mut self) -> Result<Sealed, SinkError> {
        if self.batches == 0 {
            // A CSV writer writes its header with the first batch: give it one.
            self.write(&RecordBatch::new_empty(self.schema.clone()))?;
        }
        let file = match self.writer.take().expect("finish once") {
            Writer::Csv(w) => w.into_inner().into_inner().map_err(|e| e.into_error()),
            Writer::Parquet(w) => w
                .into_inner()
                .map_err(|e| std::io::Error::other(e.to_string())),
            Writer::Ipc(mut w) => w
                .finish()
                .map_err(|e| std::io::Error::other(e.to_string()))
                .and_then(|_| {
                    w.into_inner()
                        .map_err(|e| std::io::Error::other(e.to_string()))
                })
                .and_then(|b| b.into_inner().map_err(|e| e.into_error())),
        };
        let io = |source| SinkError::Io {
            path: self.path.display().to_string(),
            source,
        };
        file.and_then(|f| f.sync_all()).map_err(io)?;
        Ok(Sealed {
            partial: std::mem::take(&mut self.partial),
            path: std::mem::take(&mut self.path),
            rows: self.rows,
        })
    }

    fn encode_error(&self, message: String) -> SinkError {
        SinkError::Encode {
            path: self.path.display().to_string(),
            message,
        }
    }
}

/// A file complete and durable under its hidden name, not yet published.
#[derive(Debug)]
pub struct Sealed {
    pub partial: PathBuf,
    pub path: PathBuf,
    pub rows: u64,
}

impl Sealed {
    /// Renames the file into place and makes the rename durable.
    pub fn publish(self) -> Result<(), SinkError> {
        self.rename()?;
        super::layout::sync_dir(self.path.parent().unwrap_or(Path::new("."))).map_err(|source| {
            SinkError::Io {
                path: self.path.display().to_string(),
                source,
            }
        })
    }

    /// Renames the file into place; the caller fsyncs the directory (one
    /// fsync for a checkpoint's files of one directory).
    pub fn rename(&self) -> Result<(), SinkError> {
        std::fs::rename(&self.partial, &self.path).map_err(|source| SinkError::Io {
            path: self.path.display().to_string(),
            source,
        })
    }
}

impl Drop for FileSink {
    fn drop(&mut self) {
        if self.writer.take().is_some() {
            let _ = std::fs::remove_file(&self.partial);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{Float32Array, RecordBatch};
    use arrow_schema::{DataType, Field, Schema};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::basic::Compression;
    use roo_ingest::FileFormat;

    use super::{FileSink, ParquetCompression, ParquetSettings, ParquetStatistics};

    /// Every setting writes a file that reads back as written, encoded as
    /// asked (the codec and the statistics are in the file's metadata).
    #[test]
    fn parquet_settings_are_what_the_file_holds() {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Float32, true)]));
        let values: Vec<f32> = (0..5000).map(|i| i as f32 * 0.37 - 100.0).collect();
        let batch =
            RecordBatch::try_new(schema.clone(), vec![Arc::new(Float32Array::from(values))])
                .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let codecs = [
            (ParquetCompression::None, "UNCOMPRESSED"),
            (ParquetCompression::Snappy, "SNAPPY"),
            (ParquetCompression::Lz4, "LZ4_RAW"),
            (ParquetCompression::Zstd, "ZSTD"),
        ];
        for (compression, codec) in codecs {
            for statistics in [
                ParquetStatistics::None,
                ParquetStatistics::Chunk,
                ParquetStatistics::Page,
            ] {
                let path = dir.path().join(format!("{codec}-{statistics:?}.parquet"));
                let settings = ParquetSettings {
                    compression,
                    statistics,
                };
                let mut sink =
                    FileSink::create_with(&path, FileFormat::Parquet, schema.clone(), settings)
                        .unwrap();
                sink.write(&batch).unwrap();
                sink.finish().unwrap();
                let file = std::fs::File::open(&path).unwrap();
                let builder = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
                let column = builder.metadata().row_group(0).column(0).clone();
                let read: Vec<RecordBatch> = builder.build().unwrap().map(|b| b.unwrap()).collect();
                let read = arrow_select::concat::concat_batches(&read[0].schema(), &read).unwrap();
                assert_eq!(read.columns(), batch.columns(), "{codec} {statistics:?}");
                let named = match column.compression() {
                    Compression::ZSTD(_) => "ZSTD".to_string(),
                    c => c.to_string(),
                };
                assert_eq!(named, codec);
                assert_eq!(
                    column.statistics().is_some(),
                    statistics != ParquetStatistics::None,
                    "{codec} {statistics:?}"
                );
            }
        }
    }
}
