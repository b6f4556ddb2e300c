//! Loading a table file (Parquet, Arrow IPC or CSV) into a snapshot:
//! the columns read, every cell the rule needs checked, the file's
//! content hash taken as the snapshot's version, and the file's stamp
//! compared before and after so a file changed mid-read is not used.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use arrow_array::{new_empty_array, Array, ArrayRef, RecordBatch};
use roo_ingest::{FileFormat, FileSource};
use sha2::{Digest, Sha256};

use super::keys::KeyArray;
use super::spec::{EnrichError, EnrichSpec};
use super::table::{hex, too_big, Build, Parts, Table};
use crate::operators::column_names;
use crate::operators::features::columns::{event_times_us, is_event_time_type, key_kind, KeyKind};

impl Table {
    /// Loads the spec's table file: Parquet, Arrow IPC or CSV.
    pub fn load(spec: &EnrichSpec) -> Result<Self, EnrichError> {
        let path = &spec.table;
        let table = path.display().to_string();
        let format = FileFormat::from_path(path)
            .filter(|f| {
                matches!(
                    f,
                    FileFormat::Parquet | FileFormat::ArrowIpc | FileFormat::Csv
                )
            })
            .ok_or_else(|| EnrichError::Format {
                table: table.clone(),
            })?;
        let read_error = |source| EnrichError::Read {
            table: table.clone(),
            source,
        };
        let before = stamp(path);
        let version = file_version(path).map_err(|error| {
            read_error(roo_ingest::IngestError::Io {
                path: table.clone(),
                error,
            })
        })?;
        let source = FileSource::open(path, format).map_err(read_error)?;
        let schema = source.schema();
        let available = || column_names(&schema);
        let find = |column: &str, what: &'static str| {
            schema
                .index_of(column)
                .map_err(|_| EnrichError::NoTableColumn {
                    table: table.clone(),
                    column: column.to_string(),
                    what,
                    available: available(),
                })
        };
        let key_at = find(&spec.key, "the key")?;
        let key_type = schema.field(key_at).data_type();
        if !matches!(key_kind(key_type), Some(KeyKind::Int | KeyKind::Text)) {
            return Err(EnrichError::KeyType {
                table,
                column: spec.key.clone(),
                found: key_type.to_string(),
            });
        }
        let valid_from_at = match &spec.valid_from {
            Some(c) => {
                let at = find(c, "valid_from")?;
                let t = schema.field(at).data_type();
                if !is_event_time_type(t) {
                    return Err(EnrichError::ValidFromType {
                        table,
                        column: c.clone(),
                        found: t.to_string(),
                    });
                }
                Some(at)
            }
            None => None,
        };
        let outputs: Vec<usize> = match &spec.columns {
            Some(names) => names
                .iter()
                .map(|c| find(c, "in columns"))
                .collect::<Result<_, _>>()?,
            None => (0..schema.fields().len())
                .filter(|&i| i != key_at && Some(i) != valid_from_at)
                .collect(),
        };
        let mut batches: Vec<RecordBatch> = Vec::new();
        let mut held = 0usize;
        for b in source.batches(65_536).map_err(read_error)? {
            let b = b.map_err(read_error)?;
            if let Some(d) = b.dead_letters.first() {
                return Err(EnrichError::BadRow {
                    table,
                    at: match d.line {
                        Some(line) => format!("line {line}"),
                        None => format!("byte {}", d.offset),
                    },
                    reason: d.reason.clone(),
                });
            }
            // The bytes the rows cover: a slice of a mapped file shares
            // the whole file's buffers, which its array size would count.
            held += b
                .batch
                .columns()
                .iter()
                .map(|c| {
                    c.to_data()
                        .get_slice_memory_size()
                        .unwrap_or_else(|_| c.get_array_memory_size())
                })
                .sum::<usize>();
            if held > spec.table_bytes_max {
                let rows = batches.iter().map(|b| b.num_rows() as u64).sum::<u64>()
                    + b.batch.num_rows() as u64;
                return Err(too_big(&table, held, rows, spec.table_bytes_max));
            }
            batches.push(b.batch);
        }
        let column = |i: usize| -> ArrayRef {
            let parts: Vec<&dyn Array> = batches.iter().map(|b| b.column(i).as_ref()).collect();
            if parts.is_empty() {
                new_empty_array(schema.field(i).data_type())
            } else {
                arrow_select::concat::concat(&parts).expect("one column's type")
            }
        };
        let keys = KeyArray::of(&column(key_at)).expect("checked above");
        if let Some(row) = (0..keys.len()).find(|&r| keys.is_null(r)) {
            return Err(EnrichError::NullCell {
                table,
                row: row as u64 + 1,
                column: spec.key.clone(),
            });
        }
        let valid_from = match valid_from_at {
            Some(at) => {
                let times = event_times_us(&column(at));
                if let Some(row) = times.iter().position(Option::is_none) {
                    return Err(EnrichError::NullCell {
                        table,
                        row: row as u64 + 1,
                        column: schema.field(at).name().clone(),
                    });
                }
                Some(times.into_iter().map(|t| t.expect("checked")).collect())
            }
            None => None,
        };
        let parts = Parts {
            keys,
            valid_from,
            fields: outputs
                .iter()
                .map(|&i| Arc::new(schema.field(i).clone().with_nullable(true)))
                .collect(),
            columns: outputs.iter().map(|&i| column(i)).collect(),
        };
        drop(batches);
        if stamp(path) != before {
            return Err(EnrichError::Changed { table });
        }
        Self::build(&table, version, parts, Build::Strict, spec.table_bytes_max)
    }
}

/// What identifies a file's contents on disk without reading it: length,
/// modification time and inode. A load checks it did not change while
/// reading; the watcher reloads when it changes.
pub(super) fn stamp(path: &Path) -> Option<(u64, std::time::SystemTime, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.len(), m.modified().ok()?, m.ino()))
}

/// "sha256:…" of a file's bytes, read in pieces.
fn file_version(path: &Path) -> std::io::Result<Arc<str>> {
    let mut file = std::fs::File::open(path)?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
    }
    Ok(Arc::from(format!("sha256:{}", hex(&hash.finalize()))))
}
