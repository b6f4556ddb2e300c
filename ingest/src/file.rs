//! File sources: CSV, Parquet and Arrow IPC (file and stream formats).

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef};

use crate::IngestError;

/// A file format roo reads and writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileFormat {
    Csv,
    Parquet,
    /// Arrow IPC: the file format when reading (the stream format is
    /// recognised too), the file format when writing.
    ArrowIpc,
}

impl FileFormat {
    /// From a file's extension: `.csv`, `.parquet`/`.pq`, `.arrow`/`.ipc`/`.feather`/`.arrows`.
    pub fn from_path(path: &Path) -> Option<Self> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        Self::from_name(&ext)
    }

    /// From a name as given on a command line: `csv`, `parquet`, `arrow` (or an extension).
    pub fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "csv" => Some(Self::Csv),
            "parquet" | "pq" => Some(Self::Parquet),
            "arrow" | "ipc" | "feather" | "arrows" => Some(Self::ArrowIpc),
            _ => None,
        }
    }
}

/// An open input file: its schema is known before any batch is read.
pub struct FileSource {
    path: PathBuf,
    format: FileFormat,
    schema: SchemaRef,
}

/// Rows per batch when the caller does not say.
pub const BATCH_ROWS_DEFAULT: usize = 65_536;

impl FileSource {
    /// Opens `path` and reads its schema. For CSV the schema is inferred from
    /// the header and the whole file (a pass over it), so a column's type
    /// cannot change under a later row.
    pub fn open(path: impl AsRef<Path>, format: FileFormat) -> Result<Self, IngestError> {
        let path = path.as_ref().to_path_buf();
        let shown = path.display().to_string();
        let io = |source| IngestError::Io {
            path: shown.clone(),
            source,
        };
        let mut file = File::open(&path).map_err(io)?;
        let schema = match format {
            FileFormat::Csv => {
                if file.metadata().map_err(io)?.len() == 0 {
                    return Err(IngestError::Format {
                        path: shown,
                        message: "the file is empty; expected a header line naming the columns"
                            .into(),
                    });
                }
                let (schema, _) = arrow_csv::reader::Format::default()
                    .with_header(true)
                    .infer_schema(BufReader::new(&mut file), None)
                    .map_err(|e| csv_error(&shown, e, None))?;
                check_header(&shown, &schema)?;
                Arc::new(schema)
            }
            FileFormat::Parquet => {
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                    .map_err(|e| format_error(&shown, e))?
                    .schema()
                    .clone()
            }
            FileFormat::ArrowIpc => ipc_reader(&shown, file)?.schema(),
        };
        Ok(Self {
            path,
            format,
            schema,
        })
    }

    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    pub fn format(&self) -> FileFormat {
        self.format
    }

    /// Parse these CSV columns straight to Float32 (an empty field is a
    /// null), so a non-numeric cell is an error naming its line and column.
    /// Other formats keep their stored types.
    pub fn parse_as_f32(&mut self, columns: &[usize]) {
        if self.format != FileFormat::Csv {
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

    /// The file's rows in batches of at most `batch_rows`.
    pub fn batches(
        self,
        batch_rows: usize,
    ) -> Result<Box<dyn Iterator<Item = Result<RecordBatch, IngestError>> + Send>, IngestError>
    {
        assert!(batch_rows > 0, "batch_rows must be positive");
        let shown = self.path.display().to_string();
        let file = File::open(&self.path).map_err(|source| IngestError::Io {
            path: shown.clone(),
            source,
        })?;
        Ok(match self.format {
            FileFormat::Csv => {
                let schema = self.schema.clone();
                let reader = arrow_csv::ReaderBuilder::new(self.schema.clone())
                    .with_header(true)
                    .with_batch_size(batch_rows)
                    .build(file)
                    .map_err(|e| csv_error(&shown, e, None))?;
                Box::new(reader.map(move |b| b.map_err(|e| csv_error(&shown, e, Some(&schema)))))
            }
            FileFormat::Parquet => {
                let reader =
                    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                        .map_err(|e| format_error(&shown, e))?
                        .with_batch_size(batch_rows)
                        .build()
                        .map_err(|e| format_error(&shown, e))?;
                Box::new(reader.map(move |b| b.map_err(|e| format_error(&shown, e))))
            }
            FileFormat::ArrowIpc => {
                let reader = ipc_reader(&shown, file)?;
                Box::new(reader.map(move |b| b.map_err(|e| format_error(&shown, e))))
            }
        })
    }
}

type IpcBatches = Box<dyn RecordBatchIter>;

trait RecordBatchIter: Iterator<Item = Result<RecordBatch, ArrowError>> + Send {
    fn schema(&self) -> SchemaRef;
}

impl<R: Read + Seek + Send> RecordBatchIter for arrow_ipc::reader::FileReader<R> {
    fn schema(&self) -> SchemaRef {
        arrow_ipc::reader::FileReader::schema(self)
    }
}

impl<R: Read + Send> RecordBatchIter for arrow_ipc::reader::StreamReader<R> {
    fn schema(&self) -> SchemaRef {
        arrow_ipc::reader::StreamReader::schema(self)
    }
}

/// The IPC file format (magic `ARROW1` at the start), else the stream format.
fn ipc_reader(shown: &str, mut file: File) -> Result<IpcBatches, IngestError> {
    let mut magic = [0u8; 6];
    let n = file.read(&mut magic).map_err(|source| IngestError::Io {
        path: shown.to_string(),
        source,
    })?;
    file.seek(SeekFrom::Start(0))
        .map_err(|source| IngestError::Io {
            path: shown.to_string(),
            source,
        })?;
    if n == 0 {
        return Err(IngestError::Format {
            path: shown.into(),
            message: "the file is empty; expected an Arrow IPC file or stream".into(),
        });
    }
    if &magic[..n] == b"ARROW1" {
        let reader = arrow_ipc::reader::FileReader::try_new(BufReader::new(file), None)
            .map_err(|e| format_error(shown, e))?;
        Ok(Box::new(reader))
    } else {
        let reader = arrow_ipc::reader::StreamReader::try_new(BufReader::new(file), None)
            .map_err(|e| format_error(shown, e))?;
        Ok(Box::new(reader))
    }
}

fn check_header(shown: &str, schema: &Schema) -> Result<(), IngestError> {
    let mut seen = std::collections::HashSet::new();
    for (i, f) in schema.fields().iter().enumerate() {
        if f.name().is_empty() {
            return Err(IngestError::Format {
                path: shown.into(),
                message: format!("header column {} has no name", i + 1),
            });
        }
        if !seen.insert(f.name()) {
            return Err(IngestError::Format {
                path: shown.into(),
                message: format!("the header names column '{}' twice", f.name()),
            });
        }
    }
    Ok(())
}

fn format_error(shown: &str, e: impl std::fmt::Display) -> IngestError {
    IngestError::Format {
        path: shown.into(),
        message: e.to_string(),
    }
}

/// arrow-csv says `Error while parsing value 'x' as type 'Float32' for column 3
/// at line 7. Row data: ...`; roo says which file, line and column by name,
/// and what it expected.
fn csv_error(shown: &str, e: ArrowError, schema: Option<&Schema>) -> IngestError {
    let text = e.to_string();
    let parsed = (|| {
        let value = between(&text, "parsing value '", "' as type")?;
        let data_type = between(&text, "as type '", "'")?;
        let column: usize = between(&text, "for column ", " ")?.parse().ok()?;
        let line: u64 = between(&text, "at line ", ".")?.parse().ok()?;
        let name = schema?.fields().get(column)?.name().clone();
        Some((value.to_string(), data_type.to_string(), name, line))
    })();
    match parsed {
        Some((value, data_type, column, line)) => {
            let expected = match data_type.as_str() {
                "Float32" | "Float64" => "a number (an empty field is a missing value)".to_string(),
                other => format!("a value of the column's type, {other}"),
            };
            IngestError::Field {
                path: shown.into(),
                // arrow-csv counts lines after the header from 1; people count
                // file lines from 1 with the header as line 1.
                line: line + 1,
                column,
                message: format!("{value:?} is not {expected}"),
            }
        }
        None => {
            // `Encountered unequal lengths ... Expected 9 records, found 8 records at line 3`
            let ragged = (|| {
                let expected: usize = between(&text, "Expected ", " records")?.parse().ok()?;
                let found: usize = between(&text, "found ", " records")?.parse().ok()?;
                let line: u64 = text[text.find("at line ")? + 8..].trim().parse().ok()?;
                Some(format!(
                    "line {line}: {found} fields; expected {expected}, one per header column"
                ))
            })();
            let message = ragged.unwrap_or_else(|| {
                text.trim_start_matches("Csv error: ")
                    .trim_start_matches("Parser error: ")
                    .to_string()
            });
            format_error(shown, message)
        }
    }
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    let len = text[from..].find(end)?;
    Some(&text[from..from + len])
}
