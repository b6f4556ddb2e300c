//! Windowed aggregates and top-K (`[[pipeline.aggregate]]`): per key, the
//! count, sum, mean or largest value of a column over hopping windows of
//! event time, the best `top` keys of each window emitted as rows once the
//! watermark passes the window's end. It ends a chain: its rows go to the
//! pipeline's sinks, the events it counted do not.
//!
//! **The rules.** A window ending at `E` (a multiple of `every` µs since
//! the epoch) covers events with `E − window < t ≤ E`. The watermark is the
//! largest event time seen minus `lateness`; an event whose first window
//! (the one ending at the first multiple of `every` at or after `t`) ends
//! at or before the watermark is late: a dead letter, counted, in no
//! window. A window is emitted once the watermark reaches its end; at the
//! end of a finite source every window ending at or before the first
//! multiple of `every` at or after the last event is. A window with no
//! events emits nothing. Rows: `window_start`, `window_end` (Int64 µs),
//! `rank` (1..), the key column(s), `value`, `error_bound`; ordered by
//! value descending, then key ascending (null first, integers by value,
//! text by bytes, false before true). A null key is a group of its own.
//! sum, mean and max skip null and NaN values (an event with one is in no
//! group); count counts events. A sum or mean of an infinite value is a
//! dead letter. The rule is per event, in arrival order, so batch
//! boundaries never change a result.
//!
//! **Bounded.** Events are aggregated once per pane of `every`
//! (`panes.rs`) and panes are combined per window (`windows.rs`). A pane
//! counts up to `keys_max` distinct keys exactly (`error_bound` 0); past
//! it, count and sum (of non-negative values) keep a Space-Saving summary
//! of `keys_max` counters, and each row's `error_bound` is its guaranteed
//! largest over-count: the true value lies in `[value − error_bound,
//! value]`. mean and max cannot summarise: an event with a new key past
//! the bound is a dead letter. Keys are read and written by `keys.rs`; the
//! state snapshots to bytes (`snapshot.rs`).

mod keys;
mod panes;
mod snapshot;
pub mod spec;
#[cfg(test)]
mod tests;
mod windows;

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arrow_array::cast::AsArray;
use arrow_array::types::Float64Type;
use arrow_array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, FieldRef, Schema, SchemaRef};

use super::features::columns::{event_times_us_array, is_event_time_type, key_kind, KeyKind};
use super::{column_names, row_letter, Flow, Operator, OperatorKind, Step};
use crate::metrics::{OperatorStats, PipelineMetrics};
use crate::state::SnapshotError;
pub use spec::{AggFn, AggregateError, AggregateSpec, KEYS_MAX_DEFAULT, TOP_MAX};
use windows::{Refusal, WindowRows, Windows};

/// The columns an aggregate's rows have besides the keys.
const RESULT_COLUMNS: [&str; 5] = ["window_start", "window_end", "rank", "value", "error_bound"];

/// The latest window an aggregate emitted, for readers (Flight DoGet
/// `latest`): swapped whole, never seen half-written.
#[derive(Default)]
pub struct LatestWindow(Mutex<Option<RecordBatch>>);

impl LatestWindow {
    pub fn get(&self) -> Option<RecordBatch> {
        self.0.lock().expect("not poisoned").clone()
    }

    fn set(&self, batch: RecordBatch) {
        *self.0.lock().expect("not poisoned") = Some(batch);
    }
}

/// The aggregate operator.
pub struct AggregateOperator {
    windows: Windows,
    key_columns: Vec<(usize, KeyKind)>,
    key_fields: Vec<FieldRef>,
    value_column: Option<usize>,
    time_column: usize,
    output_schema: SchemaRef,
    metrics: Arc<PipelineMetrics>,
    latest: Arc<LatestWindow>,
    /// Its rows' source name and the next result batch's number.
    source: Arc<str>,
    seq: u64,
}

impl AggregateOperator {
    /// Checks the aggregate against `input` and builds empty state.
    pub fn new(
        spec: &AggregateSpec,
        event_time: Option<usize>,
        input: &SchemaRef,
        metrics: Arc<PipelineMetrics>,
    ) -> Result<Self, AggregateError> {
        spec.check()?;
        let aggregate = || spec.name.clone();
        let time_column = event_time.ok_or_else(|| AggregateError::NoEventTime {
            aggregate: aggregate(),
        })?;
        assert!(is_event_time_type(input.field(time_column).data_type()));
        let column = |name: &str| {
            input.index_of(name).map_err(|_| AggregateError::NoColumn {
                aggregate: aggregate(),
                column: name.to_string(),
                available: column_names(input),
            })
        };
        let mut key_columns = Vec::new();
        let mut key_fields = Vec::new();
        for k in &spec.key {
            let c = column(k)?;
            let field = input.field(c);
            let kind = key_kind(field.data_type()).ok_or_else(|| AggregateError::KeyType {
                aggregate: aggregate(),
                column: k.clone(),
                found: field.data_type().to_string(),
            })?;
            if RESULT_COLUMNS.contains(&k.as_str()) {
                return Err(AggregateError::ColumnClash {
                    aggregate: aggregate(),
                    column: k.clone(),
                });
            }
            key_columns.push((c, kind));
            key_fields.push(Arc::new(
                Field::new(k, field.data_type().clone(), true)
                    .with_metadata(field.metadata().clone()),
            ));
        }
        let value_column = match &spec.column {
            None => None,
            Some(name) => {
                let c = column(name)?;
                let t = input.field(c).data_type();
                if !t.is_numeric() {
                    return Err(AggregateError::ValueType {
                        aggregate: aggregate(),
                        column: name.clone(),
                        found: t.to_string(),
                    });
                }
                Some(c)
            }
        };
        let value_type = if spec.agg == AggFn::Count {
            DataType::Int64
        } else {
            DataType::Float64
        };
        let mut fields: Vec<FieldRef> = vec![
            Arc::new(Field::new("window_start", DataType::Int64, false)),
            Arc::new(Field::new("window_end", DataType::Int64, false)),
            Arc::new(Field::new("rank", DataType::Int64, false)),
        ];
        fields.extend(key_fields.iter().cloned());
        fields.push(Arc::new(Field::new("value", value_type.clone(), false)));
        fields.push(Arc::new(Field::new("error_bound", value_type, false)));
        let shape = keys::Shape::of(&key_columns);
        Ok(Self {
            windows: Windows::new(spec.clone(), shape),
            key_columns,
            key_fields,
            value_column,
            time_column,
            output_schema: Arc::new(Schema::new(fields)),
            metrics,
            latest: Arc::new(LatestWindow::default()),
            source: Arc::from(format!("aggregate {}", spec.name)),
            seq: 0,
        })
    }

    /// The rows it emits: the window, the rank, the keys, value, error.
    pub fn output_schema(&self) -> &SchemaRef {
        &self.output_schema
    }

    pub fn spec(&self) -> &AggregateSpec {
        &self.windows.spec
    }

    /// The latest window emitted, shared with readers.
    pub fn latest(&self) -> Arc<LatestWindow> {
        self.latest.clone()
    }

    fn publish_stats(&self) {
        let w = &self.windows;
        self.metrics.set_operator_stats(OperatorStats {
            kind: OperatorKind::Aggregate.name(),
            name: w.spec.name.clone(),
            keys_held: w.index.len() as u64,
            state_bytes: w.bytes() as u64,
            late_events: w.counts.late_events,
            windows_emitted: w.counts.windows_emitted,
            summary_takeovers: w.counts.takeovers,
            ..Default::default()
        });
    }

    /// Counts every row of `flow`'s batch; the refused become dead letters.
    fn count(&mut self, flow: &mut Flow) {
        let Some(batch) = flow.batch.take() else {
            return;
        };
        let offset = flow.offsets.start;
        let times = event_times_us_array(batch.column(self.time_column));
        let keys = keys::BatchKeys::read(&batch, &self.key_columns);
        let values: Option<Float64Array> = self.value_column.map(|c| {
            arrow_cast::cast(batch.column(c), &DataType::Float64)
                .expect("numbers cast to float64")
                .as_primitive::<Float64Type>()
                .clone()
        });
        let mut counted = 0u64;
        let nulls = times.null_count() > 0;
        for row in 0..times.len() {
            if nulls && times.is_null(row) {
                flow.dead_letters.push(row_letter(&flow.source, offset, format!(
                    "row {row} of the batch at offset {offset}: no event time (the event_time column is null)"
                )));
                continue;
            }
            let t = times.value(row);
            let outcome = match &values {
                None => self.windows.add(&keys, row, t, 0.0),
                // sum, mean and max skip a missing value.
                Some(v) if v.is_null(row) || v.value(row).is_nan() => self.windows.pass(t),
                Some(v) => self.windows.add(&keys, row, t, v.value(row)),
            };
            match outcome {
                Ok(()) => counted += 1,
                Err(refusal) => {
                    let why = match refusal {
                        Refusal::Late { end, watermark } => format!(
                            "event time {t} µs falls in the window ending {end} µs, already emitted (watermark {watermark} µs)"
                        ),
                        Refusal::Infinite => format!(
                            "the value is infinite; {} needs finite values",
                            self.windows.spec.agg
                        ),
                        Refusal::Full { end } => format!(
                            "the pane ending {end} µs holds keys_max = {} keys and {} cannot summarise past it",
                            self.windows.spec.keys_max,
                            if self.windows.spec.agg == AggFn::Sum {
                                "a sum with negative values"
                            } else {
                                self.windows.spec.agg.name()
                            }
                        ),
                    };
                    flow.dead_letters.push(row_letter(
                        &flow.source,
                        offset,
                        format!(
                            "row {row} of the batch at offset {offset}: aggregate {}: {why}",
                            self.windows.spec.name
                        ),
                    ));
                }
            }
        }
        flow.aggregated += counted;
    }

    /// A window's rows as a batch of the output schema.
    fn batch(&self, w: WindowRows) -> RecordBatch {
        let n = w.rows.len();
        let spec = &self.windows.spec;
        let start = w.end.saturating_sub(spec.window_us);
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(vec![start; n])),
            Arc::new(Int64Array::from(vec![w.end; n])),
            Arc::new(Int64Array::from_iter_values(1..=n as i64)),
        ];
        columns.extend(keys::key_arrays(
            &self.key_fields,
            w.rows.iter().map(|(k, _, _)| &**k),
        ));
        if spec.agg == AggFn::Count {
            columns.push(Arc::new(Int64Array::from_iter_values(
                w.rows.iter().map(|(_, v, _)| *v as i64),
            )));
            columns.push(Arc::new(Int64Array::from_iter_values(
                w.rows.iter().map(|(_, _, e)| *e as i64),
            )));
        } else {
            columns.push(Arc::new(Float64Array::from_iter_values(
                w.rows.iter().map(|(_, v, _)| *v),
            )));
            columns.push(Arc::new(Float64Array::from_iter_values(
                w.rows.iter().map(|(_, _, e)| *e),
            )));
        }
        RecordBatch::try_new(self.output_schema.clone(), columns).expect("built to the schema")
    }
}

impl Operator for AggregateOperator {
    fn name(&self) -> &str {
        &self.windows.spec.name
    }

    fn kind(&self) -> OperatorKind {
        OperatorKind::Aggregate
    }

    fn begin(&mut self, mut flow: Flow) -> Step {
        self.count(&mut flow);
        Step::Done(flow)
    }

    fn emit(&mut self, end: bool, out: &mut Vec<Flow>) {
        let mut windows = Vec::new();
        self.windows.emit(end, &mut windows);
        for w in windows {
            let batch = self.batch(w);
            self.latest.set(batch.clone());
            out.push(Flow {
                source: self.source.clone(),
                seq: self.seq,
                offsets: self.seq..self.seq + 1,
                ingest_time: SystemTime::now(),
                batch: Some(batch),
                dead_letters: Vec::new(),
                aggregated: 0,
                results: true,
                scored: Vec::new(),
                answer: None,
            });
            self.seq += 1;
        }
        self.publish_stats();
    }

    fn snapshot(&self) -> Vec<u8> {
        snapshot::write(self)
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), SnapshotError> {
        snapshot::read(self, bytes)?;
        self.publish_stats();
        Ok(())
    }
}
