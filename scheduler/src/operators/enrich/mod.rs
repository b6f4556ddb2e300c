//! Enrichment (`[[pipeline.enrich]]`): each event joined with its key's
//! row of a table — a customer profile, a merchant list — as the table
//! was when the event happened.
//!
//! **The rule.** Without `valid_from`, an event joins its key's row in
//! the snapshot in use. With `valid_from`, each row is a version of its
//! key, and an event at event time `t` joins the version with the
//! greatest `valid_from <= t` (an as-of join). No row (a null key, a key
//! not in the table, an event before the key's first version) is
//! *missing*: null columns (NaN to a model), or with `missing =
//! "dead_letter"` the event goes to the dead letters naming its key. Each
//! output row carries `<name>_version`, the content hash of the snapshot
//! it joined.
//!
//! - `spec.rs`: what an enrichment is and what is refused.
//! - `table.rs`: one immutable snapshot (build, lookup, upsert);
//!   `load.rs`: reading it from a file; `keys.rs`: key columns normalised.
//! - `index.rs`: its key index.
//! - `live.rs`: the snapshot in use, swapped by reloads and upserts.
//! - `watch.rs`: reloads a table whose file changed.

mod index;
mod keys;
mod live;
mod load;
pub mod spec;
mod table;
mod watch;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::{
    Array, ArrayRef, BooleanArray, DictionaryArray, Int32Array, RecordBatch, StringArray,
    UInt32Array,
};
use arrow_buffer::{BooleanBuffer, NullBuffer, ScalarBuffer};
use arrow_schema::{Field, Schema, SchemaRef};
use roo_ingest::DeadLetter;

pub use live::LiveTable;
pub use spec::{EnrichError, EnrichSpec, Missing, TABLE_MB_DEFAULT};
pub use table::{Table, TABLE_ROWS_MAX};
pub use watch::{TableWatcher, WATCH_INTERVAL};

use super::features::columns::event_times_us;
use super::{column_names, row_letter, Flow, Operator, OperatorKind, Step};
use crate::state::{self, SnapshotError};
use keys::{EventKeys, KeyArray};
use table::{version_field, MISSING};

/// The enrich operator.
pub struct EnrichOperator {
    live: Arc<LiveTable>,
    key_column: usize,
    /// The event_time column, for an as-of join.
    time_column: Option<usize>,
    output_schema: SchemaRef,
    /// The version of the snapshot the last batch joined.
    last_version: Option<Arc<str>>,
    /// Reused per batch: each row's table row.
    rows: Vec<u32>,
    times: Vec<i64>,
}

impl EnrichOperator {
    /// Checks the enrichment against `input` (the schema it will see).
    pub fn new(
        live: Arc<LiveTable>,
        event_time: Option<usize>,
        input: &SchemaRef,
    ) -> Result<Self, EnrichError> {
        let spec = live.spec();
        let name = spec.name.clone();
        let key_column = input
            .index_of(&spec.key)
            .map_err(|_| EnrichError::NoEventKey {
                name: name.clone(),
                column: spec.key.clone(),
                available: column_names(input),
            })?;
        let table = live.current();
        let event_type = input.field(key_column).data_type();
        let event_key = arrow_array::new_empty_array(event_type);
        match KeyArray::of(&event_key) {
            Some(k) if k.is_int() == table.key_is_int() => {}
            _ => {
                return Err(EnrichError::KeyMismatch {
                    name,
                    column: spec.key.clone(),
                    event: event_type.to_string(),
                    table: if table.key_is_int() {
                        "an integer"
                    } else {
                        "a string"
                    }
                    .into(),
                })
            }
        }
        let time_column = match (&spec.valid_from, event_time) {
            (Some(_), None) => return Err(EnrichError::NoEventTime { name }),
            (Some(_), Some(t)) => Some(t),
            (None, _) => None,
        };
        let mut fields: Vec<Arc<Field>> = input.fields().iter().cloned().collect();
        let version = Arc::new(version_field(&name));
        for f in table.fields().iter().chain(std::iter::once(&version)) {
            if fields.iter().any(|o| o.name() == f.name()) {
                return Err(EnrichError::Clash {
                    name,
                    column: f.name().clone(),
                });
            }
            fields.push(f.clone());
        }
        Ok(Self {
            live,
            key_column,
            time_column,
            output_schema: Arc::new(Schema::new_with_metadata(fields, input.metadata().clone())),
            last_version: None,
            rows: Vec::new(),
            times: Vec::new(),
        })
    }

    /// The input's columns, then the table's, then `<name>_version`.
    pub fn output_schema(&self) -> &SchemaRef {
        &self.output_schema
    }

    pub fn live(&self) -> &Arc<LiveTable> {
        &self.live
    }

    /// Joins `batch` with the snapshot in use; events that join nothing
    /// under `missing = "dead_letter"`, and events with no event time
    /// under an as-of join, come back as dead letters.
    fn join(
        &mut self,
        batch: &RecordBatch,
        source: &Arc<str>,
        offset: u64,
    ) -> (RecordBatch, Vec<DeadLetter>, Option<Vec<bool>>) {
        let table = self.live.current();
        let spec = self.live.spec();
        let n = batch.num_rows();
        let key_array = batch.column(self.key_column);
        let keys_normalised;
        let keys = match key_array.as_any_dictionary_opt() {
            Some(d) if KeyArray::of(d.values()).is_some() => EventKeys::Dictionary {
                codes: d.normalized_keys(),
                nulls: d.keys().nulls(),
                values: KeyArray::of(d.values()).expect("checked"),
            },
            _ => {
                keys_normalised = KeyArray::of(key_array).expect("checked at start");
                EventKeys::Keys(&keys_normalised)
            }
        };
        let mut letters = Vec::new();
        let mut keep: Option<Vec<bool>> = None;
        let times = match self.time_column {
            Some(c) => {
                self.times.clear();
                for (row, t) in event_times_us(batch.column(c)).into_iter().enumerate() {
                    self.times.push(t.unwrap_or(i64::MIN));
                    if t.is_none() {
                        keep.get_or_insert_with(|| vec![true; n])[row] = false;
                        letters.push((row, row_letter(source, offset, format!(
                            "row {row} of the batch at offset {offset}: no event time (the event_time column is null); enrich {:?} joins by event time",
                            spec.name
                        ))));
                    }
                }
                Some(self.times.as_slice())
            }
            None => None,
        };
        table.lookup(&keys, times, &mut self.rows);
        let mut unmatched = 0u64;
        for (row, r) in self.rows.iter().enumerate() {
            if *r != MISSING || keep.as_ref().is_some_and(|k| !k[row]) {
                continue;
            }
            unmatched += 1;
            if spec.missing == Missing::DeadLetter {
                keep.get_or_insert_with(|| vec![true; n])[row] = false;
                let key =
                    arrow_cast::display::array_value_to_string(key_array, row).unwrap_or_default();
                let why = if key_array.is_null(row) {
                    "the key is null".to_string()
                } else if let Some(t) = times.map(|t| t[row]) {
                    format!("no version of key {key} valid at {t} µs")
                } else {
                    format!("no row for key {key}")
                };
                letters.push((row, row_letter(source, offset, format!(
                    "row {row} of the batch at offset {offset}: enrich {:?}: {why} in table {} ({}); missing = \"dead_letter\"",
                    spec.name,
                    spec.table.display(),
                    table.version()
                ))));
            }
        }
        if unmatched > 0 {
            self.live.unmatched.fetch_add(unmatched, Ordering::Relaxed);
        }
        // In row order (a row has one letter at most).
        letters.sort_by_key(|(row, _)| *row);
        let letters: Vec<DeadLetter> = letters.into_iter().map(|(_, l)| l).collect();
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        if let Some(keep) = &keep {
            // The refused rows leave the input's columns and the lookups.
            let mask = BooleanArray::from(keep.clone());
            for c in &mut columns {
                *c = arrow_select::filter::filter(c, &mask).expect("same length");
            }
            let mut at = 0;
            self.rows.retain(|_| {
                at += 1;
                keep[at - 1]
            });
        }
        let rows_out = self.rows.len();
        // Unjoined rows are null indices (their value 0, in range).
        let nulls = self.rows.contains(&MISSING).then(|| {
            let rows = &self.rows;
            NullBuffer::new(BooleanBuffer::collect_bool(rows.len(), |i| {
                rows[i] != MISSING
            }))
        });
        if nulls.is_some() {
            for r in &mut self.rows {
                if *r == MISSING {
                    *r = 0;
                }
            }
        }
        let indices = UInt32Array::new(ScalarBuffer::from(std::mem::take(&mut self.rows)), nulls);
        for c in table.columns() {
            columns.push(arrow_select::take::take(c, &indices, None).expect("rows in range"));
        }
        // Give the buffer back for the next batch (nothing else holds it).
        if let Ok(v) = indices.into_parts().1.into_inner().into_vec() {
            self.rows = v;
        }
        columns.push(Arc::new(DictionaryArray::new(
            Int32Array::from(vec![0; rows_out]),
            Arc::new(StringArray::from(vec![table.version().as_ref()])),
        )));
        self.last_version = Some(table.version().clone());
        let out = RecordBatch::try_new(self.output_schema.clone(), columns)
            .expect("columns built for the output schema");
        (out, letters, keep)
    }
}

/// The snapshot's payload version.
const SNAPSHOT_VERSION: u32 = 1;

impl Operator for EnrichOperator {
    fn name(&self) -> &str {
        self.live.name()
    }

    fn kind(&self) -> OperatorKind {
        OperatorKind::Enrich
    }

    fn begin(&mut self, mut flow: Flow) -> Step {
        let Some(batch) = flow.batch.take().filter(|b| b.num_rows() > 0) else {
            return Step::Done(flow);
        };
        let (out, letters, keep) = self.join(&batch, &flow.source, flow.offsets.start);
        if let Some(keep) = &keep {
            flow.drop_rows(keep, &letters);
        }
        flow.batch = Some(out);
        flow.dead_letters.extend(letters);
        self.live.publish();
        Step::Done(flow)
    }

    /// The table is the file's (reloaded at start), so the snapshot holds
    /// what names it: the version the last batch joined.
    fn snapshot(&self) -> Vec<u8> {
        let mut w = state::Writer::default();
        w.bytes(self.last_version.as_deref().unwrap_or("").as_bytes());
        state::encode(OperatorKind::Enrich.name(), SNAPSHOT_VERSION, &w.buf)
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), SnapshotError> {
        let (_, payload) = state::decode(OperatorKind::Enrich.name(), bytes)?;
        let mut r = state::Reader::new(payload);
        let version = std::str::from_utf8(r.bytes()?)
            .map_err(|_| SnapshotError::Payload("the table version is not UTF-8".into()))?
            .to_string();
        r.finish()?;
        let current = self.live.current();
        if !version.is_empty() && version != current.version().as_ref() {
            tracing::warn!(
                "enrich {}: the snapshot was taken joining table {version}; the table is now {}",
                self.live.name(),
                current.version()
            );
        }
        self.last_version = (!version.is_empty()).then(|| Arc::from(version));
        Ok(())
    }
}

#[cfg(test)]
mod tests;
