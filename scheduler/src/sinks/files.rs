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

use super::layout::{partial_path, publish};
use super::SinkError;

enum Writer {
    Csv(arrow_csv::Writer<BufWriter<File>>),
    Parquet(Box<parquet::arrow::ArrowWriter<File>>),
    Ipc(arrow_ipc::writer::FileWriter<BufWriter<File>>),
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
        let encode = |e: &dyn std::fmt::Display| SinkError::Encode {
            path: shown.clone(),
            message: e.to_string(),
        };
        let writer = match format {
            FileFormat::Csv => Writer::Csv(
                arrow_csv::WriterBuilder::new()
                    .with_header(true)
                    .build(BufWriter::new(file)),
            ),
            FileFormat::Parquet => {
                // Dictionary encoding pays off on low-cardinality columns
                // (the model version) and is wasted work on measurements;
                // row groups of 128k rows keep each flush short.
                let mut props = parquet::file::properties::WriterProperties::builder()
                    .set_compression(parquet::basic::Compression::SNAPPY)
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
                arrow_ipc::writer::FileWriter::try_new(BufWriter::new(file), &schema)
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

    /// Completes the file and renames it into place; returns the rows written.
    pub fn finish(mut self) -> Result<u64, SinkError> {
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
        publish(&file.map_err(io)?, &self.partial, &self.path).map_err(io)?;
        Ok(self.rows)
    }

    fn encode_error(&self, message: String) -> SinkError {
        SinkError::Encode {
            path: self.path.display().to_string(),
            message,
        }
    }
}

impl Drop for FileSink {
    fn drop(&mut self) {
        if self.writer.take().is_some() {
            let _ = std::fs::remove_file(&self.partial);
        }
    }
}
