//! Per-key rolling features (`[[pipeline.feature]]`): for each event, the
//! history of its key — counts, sums, means, extremes, spread, the last
//! value, distinct values over a window, the time since the key's previous
//! event — appended as columns before the model sees the batch.
//!
//! **The rule.** For an event with key `k` at event time `t`, a feature
//! covers the *earlier-arrived* events of `k` with `t - window < t' <= t`;
//! never the event itself. Empty window: `count` and `count_distinct` are
//! 0, the others null. `std` is the population standard deviation; `last`
//! the most recent value; `time_since_last` is `t` minus the time of the
//! key's most recent earlier event with `t' <= t`, any age, in seconds.
//! Null (and NaN) values are skipped by every aggregate that reads a
//! column; `count` counts events. A null key gives null features. An event
//! older than its key's newest by more than `lateness` is a dead letter;
//! within it, out-of-order events follow the rule exactly.
//!
//! One operator holds every feature of a pipeline; features sharing a key
//! share that key's state (`state.rs`), and features sharing a key, a
//! window and a column share one running aggregate. State snapshots to
//! bytes and restores bit-identically (`snapshot.rs`).

mod hash;
mod snapshot;
pub mod spec;
mod state;

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use arrow_array::{Array, ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch};
use arrow_buffer::NullBuffer;
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use roo_ingest::DeadLetter;
use thiserror::Error;

pub use spec::{parse_duration_us, Agg, DurationError, FeatureSpec, StateLimits};
use state::{Answer, Feature, Group, KeyedState, SlotKind, NULL_BITS};

use super::{Flow, Operator, OperatorKind, Step};
use crate::metrics::{OperatorStats, PipelineMetrics};
use crate::state::SnapshotError;

/// A feature that cannot be computed on this input.
#[derive(Debug, Error, PartialEq)]
pub enum FeatureError {
    #[error("feature {feature:?}: the input has no column {column:?} (it has {available})")]
    NoColumn {
        feature: String,
        column: String,
        available: String,
    },
    #[error("feature {feature:?}: key column {column:?} is {found}; expected an integer, a string or a boolean")]
    KeyType {
        feature: String,
        column: String,
        found: String,
    },
    #[error("feature {feature:?}: agg {agg} reads column {column:?}, which is {found}; expected a number")]
    NotNumeric {
        feature: String,
        agg: Agg,
        column: String,
        found: String,
    },
    #[error("feature {feature:?}: agg {agg} needs a column to aggregate")]
    NoValueColumn { feature: String, agg: Agg },
    #[error("feature {feature:?}: agg {agg} reads no column; remove column = {column:?}")]
    ExtraColumn {
        feature: String,
        agg: Agg,
        column: String,
    },
    #[error("feature {feature:?}: agg {agg} needs a window longer than 0")]
    NoWindow { feature: String, agg: Agg },
    #[error("feature {feature:?}: time_since_last has no window")]
    ExtraWindow { feature: String },
    #[error("feature {feature:?}: no key column")]
    NoKey { feature: String },
    #[error("feature {feature:?}: the output column {feature:?} exists already (an input column or another feature)")]
    Duplicate { feature: String },
    #[error("features need the pipeline's event_time column")]
    NoEventTime,
    #[error("event_time {column:?} is {found}; expected int64 microseconds since the Unix epoch or a timestamp")]
    EventTimeType { column: String, found: String },
}

/// Is `t` a type the event time may have.
pub fn is_event_time_type(t: &DataType) -> bool {
    matches!(t, DataType::Int64 | DataType::Timestamp(_, _))
}

/// The event times of `array` (Int64 µs or a timestamp of any unit) in
/// microseconds; nulls as `None`.
pub fn event_times_us(array: &ArrayRef) -> Vec<Option<i64>> {
    let raw =
        arrow_cast::cast(array, &DataType::Int64).expect("int64 and timestamps cast to int64");
    let raw = raw.as_primitive::<Int64Type>();
    let to_us: fn(i64) -> i64 = match array.data_type() {
        DataType::Timestamp(TimeUnit::Second, _) => |x| x.saturating_mul(1_000_000),
        DataType::Timestamp(TimeUnit::Millisecond, _) => |x| x.saturating_mul(1_000),
        DataType::Timestamp(TimeUnit::Nanosecond, _) => |x| x.div_euclid(1_000),
        _ => |x| x,
    };
    raw.iter().map(|t| t.map(to_us)).collect()
}

/// How a key column is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyKind {
    Int,
    Text,
    Bool,
}

fn key_kind(t: &DataType) -> Option<KeyKind> {
    match t {
        t if t.is_integer() => Some(KeyKind::Int),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Some(KeyKind::Text),
        DataType::Dictionary(_, v) if key_kind(v) == Some(KeyKind::Text) => Some(KeyKind::Text),
        DataType::Boolean => Some(KeyKind::Bool),
        _ => None,
    }
}

/// One key set: its key columns, value slots (column, kind) and state.
struct KeySet {
    columns: Vec<(usize, KeyKind)>,
    values: Vec<(usize, SlotKind)>,
    state: KeyedState,
    /// Reused per row: the encoded key.
    key: Vec<u8>,
    slot_words: Vec<u64>,
}

/// A key column of one batch, normalised.
enum KeyColumn {
    Int(Int64Array),
    Text(arrow_array::StringArray),
    Bool(BooleanArray),
}

/// A value column of one batch, normalised.
enum ValueColumn {
    Number(Float64Array),
    Digest(Vec<u64>),
}

/// The feature operator.
pub struct FeatureOperator {
    specs: Vec<FeatureSpec>,
    sets: Vec<KeySet>,
    time_column: usize,
    output_schema: SchemaRef,
    limits: StateLimits,
    metrics: Arc<PipelineMetrics>,
    late_events: u64,
    answers: Vec<Answer>,
}

impl FeatureOperator {
    /// Checks every feature against `input` and builds empty state.
    pub fn new(
        specs: &[FeatureSpec],
        limits: StateLimits,
        event_time: Option<usize>,
        input: &SchemaRef,
        metrics: Arc<PipelineMetrics>,
    ) -> Result<Self, FeatureError> {
        let time_column = event_time.ok_or(FeatureError::NoEventTime)?;
        let time_field = input.field(time_column);
        if !is_event_time_type(time_field.data_type()) {
            return Err(FeatureError::EventTimeType {
                column: time_field.name().clone(),
                found: time_field.data_type().to_string(),
            });
        }
        let available = || {
            input
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let column = |feature: &str, name: &str| {
            input.index_of(name).map_err(|_| FeatureError::NoColumn {
                feature: feature.to_string(),
                column: name.to_string(),
                available: available(),
            })
        };
        let mut fields: Vec<Arc<Field>> = input.fields().iter().cloned().collect();
        let mut by_key: Vec<(Vec<usize>, Vec<usize>)> = Vec::new(); // (key columns, spec indexes)
        for (i, s) in specs.iter().enumerate() {
            if s.key.is_empty() {
                return Err(FeatureError::NoKey {
                    feature: s.name.clone(),
                });
            }
            if fields.iter().any(|f| *f.name() == s.name) {
                return Err(FeatureError::Duplicate {
                    feature: s.name.clone(),
                });
            }
            let keys = s
                .key
                .iter()
                .map(|k| {
                    let c = column(&s.name, k)?;
                    let t = input.field(c).data_type();
                    key_kind(t).ok_or_else(|| FeatureError::KeyType {
                        feature: s.name.clone(),
                        column: k.clone(),
                        found: t.to_string(),
                    })?;
                    Ok(c)
                })
                .collect::<Result<Vec<_>, _>>()?;
            match (&s.column, s.agg.reads_column()) {
                (None, true) => {
                    return Err(FeatureError::NoValueColumn {
                        feature: s.name.clone(),
                        agg: s.agg,
                    })
                }
                (Some(c), false) => {
                    return Err(FeatureError::ExtraColumn {
                        feature: s.name.clone(),
                        agg: s.agg,
                        column: c.clone(),
                    })
                }
                (Some(c), true) if s.agg != Agg::CountDistinct => {
                    let t = input.field(column(&s.name, c)?).data_type();
                    if !(t.is_numeric() || *t == DataType::Boolean) {
                        return Err(FeatureError::NotNumeric {
                            feature: s.name.clone(),
                            agg: s.agg,
                            column: c.clone(),
                            found: t.to_string(),
                        });
                    }
                }
                (Some(c), true) => {
                    column(&s.name, c)?;
                }
                (None, false) => {}
            }
            match (s.agg.windowed(), s.window_us) {
                (true, w) if w <= 0 => {
                    return Err(FeatureError::NoWindow {
                        feature: s.name.clone(),
                        agg: s.agg,
                    })
                }
                (false, w) if w != 0 => {
                    return Err(FeatureError::ExtraWindow {
                        feature: s.name.clone(),
                    })
                }
                _ => {}
            }
            fields.push(Arc::new(Field::new(
                &s.name,
                if s.agg.integer() {
                    DataType::Int64
                } else {
                    DataType::Float64
                },
                true,
            )));
            match by_key.iter_mut().find(|(k, _)| *k == keys) {
                Some((_, members)) => members.push(i),
                None => by_key.push((keys, vec![i])),
            }
        }
        let mut sets = Vec::new();
        for (keys, members) in by_key {
            let mut values: Vec<(usize, SlotKind)> = Vec::new();
            let mut groups: Vec<Group> = Vec::new();
            let mut features = Vec::new();
            let mut has_since = false;
            for &i in &members {
                let s = &specs[i];
                let out = input.fields().len() + i;
                if s.agg == Agg::TimeSinceLast {
                    has_since = true;
                    features.push(Feature {
                        agg: s.agg,
                        group: 0,
                        out,
                    });
                    continue;
                }
                let slot = s.column.as_ref().map(|c| {
                    let c = input.index_of(c).expect("checked above");
                    let kind = if s.agg == Agg::CountDistinct {
                        SlotKind::Distinct
                    } else {
                        SlotKind::Number
                    };
                    match values.iter().position(|v| *v == (c, kind)) {
                        Some(p) => p,
                        None => {
                            values.push((c, kind));
                            values.len() - 1
                        }
                    }
                });
                // A count shares any group of its window; others need their slot.
                let fits =
                    |g: &Group| g.window_us == s.window_us && (slot.is_none() || g.slot == slot);
                let g = match groups.iter().position(fits) {
                    Some(g) => g,
                    None => {
                        groups.push(Group {
                            window_us: s.window_us,
                            slot,
                            minmax: false,
                            distinct: false,
                        });
                        groups.len() - 1
                    }
                };
                groups[g].minmax |= matches!(s.agg, Agg::Min | Agg::Max);
                groups[g].distinct |= s.agg == Agg::CountDistinct;
                features.push(Feature {
                    agg: s.agg,
                    group: g,
                    out,
                });
            }
            // Keys idle longer than every window (and the lateness) are
            // dropped: invisible to windowed features. time_since_last
            // looks back any distance, so with it keys stay until keys_max.
            let longest = groups.iter().map(|g| g.window_us).max().unwrap_or(0);
            let idle = (!has_since).then(|| longest.saturating_add(limits.lateness_us));
            let slots = values.iter().map(|(_, k)| *k).collect();
            sets.push(KeySet {
                columns: keys
                    .iter()
                    .map(|&c| (c, key_kind(input.field(c).data_type()).expect("checked")))
                    .collect(),
                slot_words: vec![0; values.len()],
                values,
                state: KeyedState::new(slots, groups, features, limits, idle),
                key: Vec::new(),
            });
        }
        let output_schema = Arc::new(Schema::new_with_metadata(fields, input.metadata().clone()));
        Ok(Self {
            specs: specs.to_vec(),
            answers: vec![Answer::Null; output_schema.fields().len()],
            sets,
            time_column,
            output_schema,
            limits,
            metrics,
            late_events: 0,
        })
    }

    /// The input's columns and then one per feature, in config order.
    pub fn output_schema(&self) -> &SchemaRef {
        &self.output_schema
    }

    fn publish_stats(&self) {
        let mut stats = OperatorStats {
            kind: OperatorKind::Feature.name(),
            name: "features".into(),
            keys_held: 0,
            state_bytes: 0,
            keys_evicted: 0,
            keys_expired: 0,
            events_dropped: 0,
            late_events: self.late_events,
        };
        for s in &self.sets {
            let c = s.state.counts();
            stats.keys_held += s.state.keys_held() as u64;
            stats.state_bytes += s.state.state_bytes() as u64;
            stats.keys_evicted += c.keys_evicted;
            stats.keys_expired += c.keys_expired;
            stats.events_dropped += c.events_dropped;
        }
        self.metrics.set_operator_stats(stats);
    }

    /// Computes every feature of `batch`; rows whose event is too late
    /// (or has no event time) come back as dead letters, not rows.
    fn compute(
        &mut self,
        batch: &RecordBatch,
        flow_source: &Arc<str>,
        offset: u64,
    ) -> (RecordBatch, Vec<DeadLetter>) {
        let rows = batch.num_rows();
        let times = event_times_us(batch.column(self.time_column));
        let keys: Vec<Vec<KeyColumn>> = self
            .sets
            .iter()
            .map(|s| {
                s.columns
                    .iter()
                    .map(|&(c, kind)| key_column(batch.column(c), kind))
                    .collect()
            })
            .collect();
        let values: Vec<Vec<ValueColumn>> = self
            .sets
            .iter()
            .map(|s| {
                s.values
                    .iter()
                    .map(|&(c, kind)| value_column(batch.column(c), kind))
                    .collect()
            })
            .collect();
        let n_in = batch.num_columns();
        let n_out = self.specs.len();
        let mut ints: Vec<Vec<i64>> = (0..n_out).map(|_| Vec::with_capacity(rows)).collect();
        let mut floats: Vec<Vec<f64>> = (0..n_out).map(|_| Vec::with_capacity(rows)).collect();
        let mut valid: Vec<Vec<bool>> = (0..n_out).map(|_| Vec::with_capacity(rows)).collect();
        let mut keep = vec![true; rows];
        let mut letters = Vec::new();
        let mut found: Vec<Option<u32>> = vec![None; self.sets.len()];
        let mut has_key: Vec<bool> = vec![false; self.sets.len()];
        for row in 0..rows {
            let Some(t) = times[row] else {
                keep[row] = false;
                letters.push(letter(flow_source, offset, format!(
                    "row {row} of the batch at offset {offset}: no event time (the event_time column is null)"
                )));
                continue;
            };
            // Late for any key: the whole event is refused, no state changes.
            let mut late = None;
            for (s, set) in self.sets.iter_mut().enumerate() {
                has_key[s] = encode_key(&keys[s], row, &mut set.key);
                found[s] = if has_key[s] {
                    set.state.find(&set.key)
                } else {
                    None
                };
                if let Some(newest) = has_key[s].then(|| set.state.is_late(found[s], t)).flatten() {
                    late = Some((s, newest));
                    break;
                }
            }
            if let Some((s, newest)) = late {
                keep[row] = false;
                self.late_events += 1;
                let key: Vec<String> = self.sets[s]
                    .columns
                    .iter()
                    .map(|&(c, _)| {
                        arrow_cast::display::array_value_to_string(batch.column(c), row)
                            .unwrap_or_default()
                    })
                    .collect();
                letters.push(letter(flow_source, offset, format!(
                    "row {row} of the batch at offset {offset}: event time {t} µs is {} µs older than key [{}]'s newest event ({newest} µs), past the lateness of {} µs",
                    newest - t,
                    key.join(", "),
                    self.limits.lateness_us
                )));
                continue;
            }
            for (s, set) in self.sets.iter_mut().enumerate() {
                if !has_key[s] {
                    for f in &set.state.features {
                        self.answers[f.out] = Answer::Null;
                    }
                    continue;
                }
                for (w, v) in set.slot_words.iter_mut().zip(&values[s]) {
                    *w = match v {
                        ValueColumn::Number(a) => {
                            if a.is_valid(row) {
                                a.value(row).to_bits()
                            } else {
                                f64::NAN.to_bits()
                            }
                        }
                        ValueColumn::Digest(d) => d[row],
                    };
                }
                set.state
                    .process_at(found[s], &set.key, t, &set.slot_words, &mut self.answers);
            }
            for f in 0..n_out {
                let (i, x, ok) = match self.answers[n_in + f] {
                    Answer::Int(v) => (v, 0.0, true),
                    Answer::Float(v) => (0, v, true),
                    Answer::Null => (0, 0.0, false),
                };
                ints[f].push(i);
                floats[f].push(x);
                valid[f].push(ok);
            }
        }
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        let kept: Vec<usize> = (0..rows).filter(|&r| keep[r]).collect();
        debug_assert_eq!(kept.len(), ints.first().map_or(kept.len(), Vec::len));
        for (f, spec) in self.specs.iter().enumerate() {
            let nulls = Some(NullBuffer::from(std::mem::take(&mut valid[f])));
            columns.push(if spec.agg.integer() {
                Arc::new(Int64Array::new(std::mem::take(&mut ints[f]).into(), nulls))
            } else {
                Arc::new(Float64Array::new(
                    std::mem::take(&mut floats[f]).into(),
                    nulls,
                ))
            });
        }
        if kept.len() < rows {
            // The input's columns lose the refused rows; the feature
            // columns were built for the kept rows only.
            let mask = BooleanArray::from(keep);
            for c in columns.iter_mut().take(n_in) {
                *c = arrow_select::filter::filter(c, &mask).expect("same length");
            }
        }
        let out = RecordBatch::try_new(self.output_schema.clone(), columns)
            .expect("columns built for the output schema");
        (out, letters)
    }
}

fn letter(source: &Arc<str>, offset: u64, reason: String) -> DeadLetter {
    DeadLetter {
        source: source.clone(),
        offset,
        line: None,
        raw: Vec::new(),
        raw_len: 0,
        reason,
        records: 1,
    }
}

fn key_column(array: &ArrayRef, kind: KeyKind) -> KeyColumn {
    match kind {
        KeyKind::Int => KeyColumn::Int(
            arrow_cast::cast(array, &DataType::Int64)
                .expect("integers cast to int64")
                .as_primitive::<Int64Type>()
                .clone(),
        ),
        KeyKind::Text => KeyColumn::Text(
            arrow_cast::cast(array, &DataType::Utf8)
                .expect("text casts to utf8")
                .as_string::<i32>()
                .clone(),
        ),
        KeyKind::Bool => KeyColumn::Bool(array.as_boolean().clone()),
    }
}

/// Writes row `row`'s key into `out`; false when any part is null.
fn encode_key(columns: &[KeyColumn], row: usize, out: &mut Vec<u8>) -> bool {
    out.clear();
    for c in columns {
        match c {
            KeyColumn::Int(a) => {
                if a.is_null(row) {
                    return false;
                }
                out.push(1);
                out.extend_from_slice(&a.value(row).to_le_bytes());
            }
            KeyColumn::Text(a) => {
                if a.is_null(row) {
                    return false;
                }
                let s = a.value(row).as_bytes();
                out.push(2);
                out.extend_from_slice(&(s.len() as u32).to_le_bytes());
                out.extend_from_slice(s);
            }
            KeyColumn::Bool(a) => {
                if a.is_null(row) {
                    return false;
                }
                out.push(3);
                out.push(a.value(row) as u8);
            }
        }
    }
    true
}

fn value_column(array: &ArrayRef, kind: SlotKind) -> ValueColumn {
    match kind {
        SlotKind::Number => ValueColumn::Number(
            arrow_cast::cast(array, &DataType::Float64)
                .expect("numbers cast to float64")
                .as_primitive::<Float64Type>()
                .clone(),
        ),
        SlotKind::Distinct => {
            let t = array.data_type();
            let digests = if let Some(kind) = key_kind(t) {
                let column = key_column(array, kind);
                let mut buf = Vec::new();
                (0..array.len())
                    .map(|r| {
                        if encode_key(std::slice::from_ref(&column), r, &mut buf) {
                            hash::digest(&buf)
                        } else {
                            NULL_BITS
                        }
                    })
                    .collect()
            } else {
                let a =
                    arrow_cast::cast(array, &DataType::Float64).expect("numbers cast to float64");
                let a = a.as_primitive::<Float64Type>();
                (0..a.len())
                    .map(|r| {
                        let x = a.value(r);
                        if a.is_null(r) || x.is_nan() {
                            NULL_BITS
                        } else {
                            // -0.0 and 0.0 are one value.
                            hash::digest(&(x + 0.0).to_bits().to_le_bytes())
                        }
                    })
                    .collect()
            };
            ValueColumn::Digest(digests)
        }
    }
}

impl Operator for FeatureOperator {
    fn name(&self) -> &str {
        "features"
    }

    fn kind(&self) -> OperatorKind {
        OperatorKind::Feature
    }

    fn begin(&mut self, mut flow: Flow) -> Step {
        let Some(batch) = flow.batch.take().filter(|b| b.num_rows() > 0) else {
            return Step::Done(flow);
        };
        let (out, letters) = self.compute(&batch, &flow.source, flow.offsets.start);
        flow.batch = Some(out);
        flow.dead_letters.extend(letters);
        self.publish_stats();
        Step::Done(flow)
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

/// Counts of the features' state, for tests and the bench.
impl FeatureOperator {
    /// How many features it computes.
    pub fn specs_len(&self) -> usize {
        self.specs.len()
    }

    pub fn keys_held(&self) -> usize {
        self.sets.iter().map(|s| s.state.keys_held()).sum()
    }

    pub fn state_bytes(&self) -> usize {
        self.sets.iter().map(|s| s.state.state_bytes()).sum()
    }

    /// Events held for windows, over every key set.
    pub fn events_held(&self) -> usize {
        self.sets.iter().map(|s| s.state.events_held()).sum()
    }

    pub fn counts(&self) -> (u64, u64, u64, u64) {
        let mut c = (0, 0, 0, self.late_events);
        for s in &self.sets {
            let k = s.state.counts();
            c.0 += k.keys_evicted;
            c.1 += k.keys_expired;
            c.2 += k.events_dropped;
        }
        c
    }
}

#[cfg(test)]
mod tests;
