//! The audit record: the batch as the chain's scorers left it — every
//! input column as received, every feature and table column (with each
//! table's `<name>_version` snapshot id), each model's scores and
//! `model_version` — and, after those, the record's own columns:
//!
//! | column | type | what |
//! |---|---|---|
//! | `audit_id` | utf8 | the event id: the `id` column's value, or `SOURCE#N` |
//! | `audit_event_time` | timestamp µs, +00:00 | the `event_time` column, else the ingest time |
//! | `audit_ingest_time` | timestamp µs, +00:00 | when roo read the batch's oldest event |
//! | `audit_device` | utf8 dictionary | where the decision was scored: `cpu avx512`, `gpu NAME (…)` |
//! | `audit_definitions` | utf8 dictionary | the hash of the features' and tables' definitions |
//!
//! The batch's columns are shared, not copied. They come first, so a
//! model bound by position reads the record as it read the batch.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arrow_array::builder::StringBuilder;
use arrow_array::types::Int32Type;
use arrow_array::{
    Array, ArrayRef, DictionaryArray, Int32Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow_buffer::ScalarBuffer;
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use sha2::{Digest, Sha256};

use super::AuditError;
use crate::operators::column_names;
use crate::operators::features::event_times_us_array;

pub const ID: &str = "audit_id";
pub const EVENT_TIME: &str = "audit_event_time";
pub const INGEST_TIME: &str = "audit_ingest_time";
pub const DEVICE: &str = "audit_device";
pub const DEFINITIONS: &str = "audit_definitions";

/// Sources whose next default id is held; past it the counters restart
/// (ids `SOURCE#N` may then repeat: name an id column).
const SOURCES_MAX: usize = 65_536;

/// The first 16 hex digits of the SHA-256 of a pipeline's definitions.
pub fn definitions_hash(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub(crate) fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into()))
}

fn dictionary_type() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

/// A column's text as a dictionary whose values only grow (an IPC file
/// holds one dictionary per column: one that changes starts a new
/// segment, so it changes only when a value is first seen).
struct Repeated {
    names: Vec<String>,
    values: ArrayRef,
}

impl Repeated {
    fn new() -> Self {
        Self {
            names: Vec::new(),
            values: Arc::new(StringArray::from(Vec::<&str>::new())),
        }
    }

    /// `rows` copies of `value`, as keys into the values.
    fn column(&mut self, value: &str, rows: usize) -> ArrayRef {
        let key = match self.names.iter().position(|n| n == value) {
            Some(k) => k,
            None => {
                self.names.push(value.to_string());
                self.values = Arc::new(StringArray::from(self.names.clone()));
                self.names.len() - 1
            }
        };
        Arc::new(DictionaryArray::<Int32Type>::new(
            Int32Array::from(vec![key as i32; rows]),
            self.values.clone(),
        ))
    }
}

/// The record's own fields.
pub(crate) fn audit_fields() -> [Field; 5] {
    [
        Field::new(ID, DataType::Utf8, false),
        Field::new(EVENT_TIME, timestamp_type(), false),
        Field::new(INGEST_TIME, timestamp_type(), false),
        Field::new(DEVICE, dictionary_type(), false),
        Field::new(DEFINITIONS, dictionary_type(), false),
    ]
}

/// One batch's records, with what the writer files them by.
pub struct Records {
    pub batch: RecordBatch,
    /// Each row's event time, µs since the epoch (the buffer of the
    /// record's `audit_event_time` column, shared).
    pub event_us: ScalarBuffer<i64>,
    /// Each row's [`super::id_hash`].
    pub id_hashes: Vec<u64>,
}

/// Builds the records of a pipeline's batches.
pub struct RecordBuilder {
    id: Option<usize>,
    event_time: Option<usize>,
    definitions: String,
    next: HashMap<Arc<str>, u64>,
    devices: Repeated,
    hashes: Repeated,
}

impl RecordBuilder {
    /// `id`: the event id column (else `SOURCE#N`, the Nth event of that
    /// source audited); `event_time`: its column's index; `schema`: what
    /// reaches the audit.
    pub fn new(
        id: Option<&str>,
        event_time: Option<usize>,
        schema: &Schema,
        definitions: String,
    ) -> Result<Self, AuditError> {
        if let Some(f) = schema
            .fields()
            .iter()
            .find(|f| f.name().starts_with("audit_"))
        {
            return Err(AuditError::ColumnClash {
                column: f.name().clone(),
            });
        }
        let id = match id {
            None => None,
            Some(name) => {
                let index = schema.index_of(name).map_err(|_| AuditError::IdColumn {
                    column: name.to_string(),
                    available: column_names(schema),
                })?;
                let t = schema.field(index).data_type();
                let text = |t: &DataType| {
                    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
                };
                let fits = t.is_integer()
                    || text(t)
                    || matches!(t, DataType::Dictionary(_, v) if text(v) || v.is_integer());
                if !fits {
                    return Err(AuditError::IdType {
                        column: name.to_string(),
                        found: t.to_string(),
                    });
                }
                Some(index)
            }
        };
        Ok(Self {
            id,
            event_time,
            definitions,
            next: HashMap::new(),
            devices: Repeated::new(),
            hashes: Repeated::new(),
        })
    }

    /// The schema of the records of batches of `schema`.
    pub fn schema(schema: &Schema) -> SchemaRef {
        let mut fields: Vec<Arc<Field>> = schema.fields().iter().cloned().collect();
        fields.extend(audit_fields().into_iter().map(Arc::new));
        Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
    }

    /// The next default id of each source, for a snapshot.
    pub fn counters(&self) -> Vec<(Arc<str>, u64)> {
        let mut c: Vec<_> = self.next.iter().map(|(k, v)| (k.clone(), *v)).collect();
        c.sort();
        c
    }

    pub fn set_counters(&mut self, counters: Vec<(Arc<str>, u64)>) {
        self.next = counters.into_iter().collect();
    }

    /// The records of one batch from `source`, scored on `device`.
    pub fn build(
        &mut self,
        source: &Arc<str>,
        ingest_time: SystemTime,
        batch: &RecordBatch,
        device: &str,
    ) -> Result<Records, AuditError> {
        let rows = batch.num_rows();
        if self.next.len() >= SOURCES_MAX && !self.next.contains_key(source) {
            self.next.clear();
        }
        let first = self.next.entry(source.clone()).or_insert(0);
        let base = *first;
        *first += rows as u64;
        let ingest_us = ingest_time
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64);
        let ids = self.ids(source, base, batch)?;
        let id_hashes = (0..rows)
            .map(|i| super::id_hash(ids.value(i).as_bytes()))
            .collect();
        let ingest = ScalarBuffer::from(vec![ingest_us; rows]);
        let event_us = match self.event_time {
            Some(c) => {
                let times = event_times_us_array(batch.column(c));
                if times.null_count() == 0 {
                    // Int64 µs already: the column's own buffer.
                    times.values().clone()
                } else {
                    (0..rows)
                        .map(|i| {
                            if times.is_valid(i) {
                                times.value(i)
                            } else {
                                ingest_us
                            }
                        })
                        .collect()
                }
            }
            None => ingest.clone(),
        };
        let timestamps = |values: &ScalarBuffer<i64>| -> ArrayRef {
            Arc::new(TimestampMicrosecondArray::new(values.clone(), None).with_timezone("+00:00"))
        };
        let mut columns = batch.columns().to_vec();
        columns.push(Arc::new(ids));
        columns.push(timestamps(&event_us));
        columns.push(timestamps(&ingest));
        columns.push(self.devices.column(device, rows));
        columns.push(self.hashes.column(&self.definitions, rows));
        let batch = RecordBatch::try_new(Self::schema(&batch.schema()), columns).map_err(|e| {
            AuditError::Arrow {
                what: "building the audit record".into(),
                message: e.to_string(),
            }
        })?;
        Ok(Records {
            batch,
            event_us,
            id_hashes,
        })
    }

    /// The id of each row: the id column as text (nulls: the default id).
    fn ids(&self, source: &str, base: u64, batch: &RecordBatch) -> Result<StringArray, AuditError> {
        let rows = batch.num_rows();
        // `SOURCE#N`, formatted straight into the builder's buffer.
        let default = |b: &mut StringBuilder, i: usize| {
            use std::fmt::Write as _;
            let _ = write!(b, "{source}#{}", base + i as u64);
            b.append_value("");
        };
        let Some(c) = self.id else {
            let mut b = StringBuilder::with_capacity(rows, rows * (source.len() + 8));
            for i in 0..rows {
                default(&mut b, i);
            }
            return Ok(b.finish());
        };
        let column = batch.column(c);
        let text = if column.data_type() == &DataType::Utf8 {
            column.clone()
        } else {
            arrow_cast::cast(column, &DataType::Utf8).map_err(|e| AuditError::Arrow {
                what: "the audit id column as text".into(),
                message: e.to_string(),
            })?
        };
        let text = text
            .as_any()
            .downcast_ref::<StringArray>()
            .expect("cast to Utf8")
            .clone();
        if text.null_count() == 0 {
            return Ok(text);
        }
        let mut b = StringBuilder::with_capacity(rows, text.value_data().len() + 16);
        for i in 0..rows {
            if text.is_valid(i) {
                b.append_value(text.value(i));
            } else {
                default(&mut b, i);
            }
        }
        Ok(b.finish())
    }
}
