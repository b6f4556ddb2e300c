//! `AuditLog`: reading an audit directory back — one id through the
//! segments' indexes, a range of event time, the stored models and
//! definitions.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{Array, BooleanArray, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow_ipc::reader::FileReader;
use arrow_schema::{ArrowError, Schema, SchemaRef};
use roo_kernels::{model_from_bytes, read_model_file, Model};

use super::index::{id_hash, Location, SegmentIndex};
use super::layout::{self, definitions_path, hour_of, index_path, model_path};
use super::record::{EVENT_TIME, ID};
use super::{format_us, AuditError};

/// Picks the columns to read from a segment's schema.
pub type ColumnPick<'a> = &'a dyn Fn(&Schema) -> Vec<usize>;

/// Event times `from_us <= t < to_us`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeRange {
    pub from_us: i64,
    pub to_us: i64,
}

impl TimeRange {
    pub const ALL: Self = Self {
        from_us: i64::MIN,
        to_us: i64::MAX,
    };

    fn hours(&self) -> (i64, i64) {
        (hour_of(self.from_us), hour_of(self.to_us.saturating_sub(1)))
    }

    pub fn describe(&self) -> (String, String) {
        let side = |t: i64| match t {
            i64::MIN => "the beginning".to_string(),
            i64::MAX => "the end".to_string(),
            t => format_us(t),
        };
        (side(self.from_us), side(self.to_us))
    }
}

/// An audit directory, read.
pub struct AuditLog {
    dir: PathBuf,
}

impl AuditLog {
    pub fn open(dir: &Path) -> Result<Self, AuditError> {
        let records = layout::records_dir(dir);
        if !records.is_dir() {
            return Err(AuditError::Layout {
                dir: dir.display().to_string(),
                what: format!(
                    "has no {} directory: not an audit log (a pipeline's [pipeline.audit] dir)",
                    layout::RECORDS
                ),
            });
        }
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every published segment, oldest event hour first.
    pub fn segments(&self) -> Vec<PathBuf> {
        layout::partitions(&self.dir)
            .into_iter()
            .flat_map(|(_, p)| layout::segments(&p))
            .collect()
    }

    fn segments_in(&self, range: TimeRange) -> Vec<PathBuf> {
        let (first, last) = range.hours();
        layout::partitions(&self.dir)
            .into_iter()
            .filter(|(h, _)| *h >= first && *h <= last)
            .flat_map(|(_, p)| layout::segments(&p))
            .collect()
    }

    /// Every record with id `id` (one, unless the id repeats), newest
    /// segment first: through each segment's index, a scan of the id
    /// column only where a segment has none.
    pub fn find(&self, id: &str) -> Result<Vec<RecordBatch>, AuditError> {
        let hash = id_hash(id.as_bytes());
        let segments = self.segments();
        let mut found = Vec::new();
        for segment in segments.iter().rev() {
            let index = index_path(segment);
            let rows = if index.exists() {
                SegmentIndex::open(&index)?.rows(hash)
            } else {
                scan_ids(segment, id)?
            };
            for row in rows {
                let batch = read_row(segment, row)?;
                let ids = batch
                    .column_by_name(ID)
                    .and_then(|c| c.as_any().downcast_ref::<StringArray>())
                    .ok_or_else(|| corrupt(segment, format!("no {ID} column of text")))?;
                if ids.len() == 1 && ids.value(0) == id {
                    found.push(batch);
                }
            }
        }
        if found.is_empty() {
            return Err(AuditError::NotFound {
                dir: self.dir.display().to_string(),
                id: id.to_string(),
                segments: segments.len(),
            });
        }
        Ok(found)
    }

    /// The schema every record of `range` fits: the union of its segments'
    /// columns, in first-seen order (a reload that added a column leaves
    /// it null in older records); `None` when the range has no segment.
    pub fn schema(&self, range: TimeRange) -> Result<Option<SchemaRef>, AuditError> {
        let mut schemas = Vec::new();
        for segment in self.segments_in(range) {
            schemas.push(reader(&segment, None)?.schema().as_ref().clone());
        }
        if schemas.is_empty() {
            return Ok(None);
        }
        let mut fields: Vec<arrow_schema::FieldRef> = Vec::new();
        for s in &schemas {
            for f in s.fields() {
                match fields.iter().find(|g| g.name() == f.name()) {
                    Some(g) if g.data_type() != f.data_type() => {
                        return Err(AuditError::Layout {
                            dir: self.dir.display().to_string(),
                            what: format!(
                                "column {:?} is {} in some segments and {} in others",
                                f.name(),
                                g.data_type(),
                                f.data_type()
                            ),
                        })
                    }
                    Some(_) => {}
                    None => fields.push(Arc::new(f.as_ref().clone().with_nullable(true))),
                }
            }
        }
        Ok(Some(Arc::new(Schema::new(fields))))
    }

    /// Calls `each` with the records of `range`, segment by segment, each
    /// batch reading only the columns `columns` picks from its segment's
    /// schema (all when `None`). Returns the records read; `each` returning
    /// an error (`AuditError::Stopped` for a reader that went away) stops it.
    pub fn read_range(
        &self,
        range: TimeRange,
        columns: Option<ColumnPick<'_>>,
        each: &mut dyn FnMut(RecordBatch) -> Result<(), AuditError>,
    ) -> Result<u64, AuditError> {
        let mut records = 0;
        for segment in self.segments_in(range) {
            let schema = reader(&segment, None)?.schema();
            let time = schema
                .index_of(EVENT_TIME)
                .map_err(|_| corrupt(&segment, format!("no {EVENT_TIME} column")))?;
            let projection = columns.map(|pick| {
                let mut picked = pick(&schema);
                picked.push(time);
                picked.sort_unstable();
                picked.dedup();
                picked
            });
            let mut batches = reader(&segment, projection)?;
            while let Some(batch) = next(&segment, &mut batches)? {
                let batch = within(&segment, batch, range)?;
                if batch.num_rows() > 0 {
                    records += batch.num_rows() as u64;
                    each(batch)?;
                }
            }
        }
        Ok(records)
    }

    /// The model version `version` from the store.
    pub fn model(&self, version: &str) -> Result<Model, AuditError> {
        let path = model_path(&self.dir, version);
        if !path.exists() {
            return Err(AuditError::ModelMissing {
                dir: self.dir.display().to_string(),
                version: version.to_string(),
                path: path.display().to_string(),
            });
        }
        let err = |source| AuditError::Model {
            dir: self.dir.display().to_string(),
            version: version.to_string(),
            source,
        };
        let bytes = read_model_file(&path).map_err(err)?;
        let model = model_from_bytes(&bytes, &path.display().to_string()).map_err(err)?;
        if model.version.to_string() != version {
            return Err(corrupt(
                &path,
                format!("its bytes hash to {}, not {version}", model.version),
            ));
        }
        Ok(model)
    }

    /// The definitions text a hash names, when stored.
    pub fn definitions(&self, hash: &str) -> Option<String> {
        std::fs::read_to_string(definitions_path(&self.dir, hash)).ok()
    }
}

/// `batch` with the columns of `schema` (a [`AuditLog::schema`] union):
/// its own by name, nulls for those its segment did not have.
pub fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, AuditError> {
    let columns = schema
        .fields()
        .iter()
        .map(|f| match batch.column_by_name(f.name()) {
            Some(c) => c.clone(),
            None => arrow_array::new_null_array(f.data_type(), batch.num_rows()),
        })
        .collect();
    RecordBatch::try_new(schema.clone(), columns).map_err(|e| AuditError::Arrow {
        what: "records of several segments as one schema".into(),
        message: e.to_string(),
    })
}

fn corrupt(path: &Path, message: String) -> AuditError {
    AuditError::Corrupt {
        path: path.display().to_string(),
        message,
    }
}

/// The rows of `batch` whose event time is in `range`.
fn within(segment: &Path, batch: RecordBatch, range: TimeRange) -> Result<RecordBatch, AuditError> {
    if range == TimeRange::ALL {
        return Ok(batch);
    }
    let times = batch
        .column_by_name(EVENT_TIME)
        .and_then(|c| c.as_any().downcast_ref::<TimestampMicrosecondArray>())
        .ok_or_else(|| corrupt(segment, format!("{EVENT_TIME} is not a µs timestamp")))?;
    let values = times.values();
    if values
        .iter()
        .all(|&t| t >= range.from_us && t < range.to_us)
    {
        return Ok(batch);
    }
    let keep: BooleanArray = values
        .iter()
        .map(|&t| Some(t >= range.from_us && t < range.to_us))
        .collect();
    arrow_select::filter::filter_record_batch(&batch, &keep)
        .map_err(|e| corrupt(segment, e.to_string()))
}

/// Runs an Arrow IPC decoder step: a corrupt file that makes it panic is
/// an error naming the file, not a crash.
fn guarded<T>(segment: &Path, f: impl FnOnce() -> Result<T, ArrowError>) -> Result<T, AuditError> {
    match roo_ingest::guard::catch_quietly(f) {
        Ok(r) => r.map_err(|e| corrupt(segment, e.to_string())),
        Err(_) => Err(corrupt(
            segment,
            "its Arrow IPC data could not be decoded".into(),
        )),
    }
}

/// A segment opened for reading: its footer and schema read, only the
/// `projection`'s columns decoded.
fn reader(
    segment: &Path,
    projection: Option<Vec<usize>>,
) -> Result<FileReader<BufReader<File>>, AuditError> {
    let file = File::open(segment).map_err(AuditError::io(segment))?;
    guarded(segment, || {
        FileReader::try_new(BufReader::new(file), projection)
    })
}

/// The next record batch of a segment.
fn next(
    segment: &Path,
    reader: &mut FileReader<BufReader<File>>,
) -> Result<Option<RecordBatch>, AuditError> {
    guarded(segment, || reader.next().transpose())
}

/// One record of a segment: only its batch is decoded.
fn read_row(segment: &Path, at: Location) -> Result<RecordBatch, AuditError> {
    let mut batches = reader(segment, None)?;
    if at.batch as usize >= batches.num_batches() {
        return Err(corrupt(
            segment,
            format!("its index names batch {}, past its last", at.batch),
        ));
    }
    guarded(segment, || batches.set_index(at.batch as usize))?;
    let batch = next(segment, &mut batches)?
        .ok_or_else(|| corrupt(segment, format!("batch {} could not be read", at.batch)))?;
    if at.row as usize >= batch.num_rows() {
        return Err(corrupt(
            segment,
            format!(
                "its index names row {} of batch {}, past its last",
                at.row, at.batch
            ),
        ));
    }
    Ok(batch.slice(at.row as usize, 1))
}

/// Where the records of a segment without an index whose id is `id` are.
fn scan_ids(segment: &Path, id: &str) -> Result<Vec<Location>, AuditError> {
    let at = reader(segment, None)?
        .schema()
        .index_of(ID)
        .map_err(|_| corrupt(segment, format!("no {ID} column")))?;
    let mut batches = reader(segment, Some(vec![at]))?;
    let mut found = Vec::new();
    let mut number = 0u32;
    while let Some(batch) = next(segment, &mut batches)? {
        let ids = batch
            .column(0)
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| corrupt(segment, format!("{ID} is not text")))?;
        for i in 0..ids.len() {
            if ids.is_valid(i) && ids.value(i) == id {
                found.push(Location {
                    batch: number,
                    row: i as u32,
                });
            }
        }
        number += 1;
    }
    Ok(found)
}
