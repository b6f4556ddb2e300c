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
//! window and a column share one running aggregate (`window.rs`). Columns
//! are read and written through `columns.rs`; what a feature is, and what
//! is refused, is `spec.rs`. State snapshots to bytes and restores
//! bit-identically (`snapshot.rs`).

pub(crate) mod columns;
pub(crate) mod hash;
mod partitions;
mod snapshot;
pub mod spec;
mod state;
mod window;

use std::sync::Arc;

use arrow_array::{ArrayRef, BooleanArray, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use roo_ingest::DeadLetter;

use columns::{
    encode_key, key_column, key_kind, value_column, FeatureColumn, KeyColumn, KeyKind, ValueColumn,
};
pub use columns::{event_times_us, event_times_us_array, is_event_time_type};
pub use spec::{parse_duration_us, Agg, DurationError, FeatureError, FeatureSpec, StateLimits};
use state::{Answer, Feature, Group, KeyedState, SlotKind};

use super::{column_names, row_letter, Flow, Operator, OperatorKind, Step};
use crate::metrics::{OperatorStats, PipelineMetrics};
use crate::state::SnapshotError;

/// One key set: its key columns, value slots (column, kind) and state.
struct KeySet {
    columns: Vec<(usize, KeyKind)>,
    values: Vec<(usize, SlotKind)>,
    state: KeyedState,
    /// Reused per row: the encoded key.
    key: Vec<u8>,
    slot_words: Vec<u64>,
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
    /// With a source that moves partitions: each one's state apart
    /// (`partitions.rs`).
    partitions: Option<partitions::Partitions>,
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
        let available = || column_names(input);
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
            partitions: None,
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
            ..Default::default()
        };
        for s in self.states() {
            let c = s.counts();
            stats.keys_held += s.keys_held() as u64;
            stats.state_bytes += s.state_bytes() as u64;
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
        read_only: bool,
    ) -> (RecordBatch, Vec<DeadLetter>, Vec<bool>) {
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
        let mut outputs: Vec<FeatureColumn> = self
            .specs
            .iter()
            .map(|s| FeatureColumn::new(s.agg.integer(), rows))
            .collect();
        let mut keep = vec![true; rows];
        let mut letters = Vec::new();
        let mut found: Vec<Option<u32>> = vec![None; self.sets.len()];
        let mut has_key: Vec<bool> = vec![false; self.sets.len()];
        for row in 0..rows {
            let Some(t) = times[row] else {
                keep[row] = false;
                letters.push(row_letter(flow_source, offset, format!(
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
                letters.push(row_letter(flow_source, offset, format!(
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
                    *w = v.word(row);
                }
                if read_only {
                    set.state.peek(found[s], t, &mut self.answers);
                } else {
                    set.state
                        .process_at(found[s], &set.key, t, &set.slot_words, &mut self.answers);
                }
            }
            for (f, column) in outputs.iter_mut().enumerate() {
                column.push(self.answers[n_in + f]);
            }
        }
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        columns.extend(outputs.into_iter().map(FeatureColumn::finish));
        if letters.is_empty() {
            debug_assert!(keep.iter().all(|k| *k));
        } else {
            // The input's columns lose the refused rows; the feature
            // columns were built for the kept rows only.
            let mask = BooleanArray::from(keep.clone());
            for c in columns.iter_mut().take(n_in) {
                *c = arrow_select::filter::filter(c, &mask).expect("same length");
            }
        }
        let out = RecordBatch::try_new(self.output_schema.clone(), columns)
            .expect("columns built for the output schema");
        (out, letters, keep)
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
        self.activate(&flow.source);
        // Online requests may read the state without updating it.
        let read_only = flow.answer.as_ref().is_some_and(|a| a.reads_only());
        let (out, letters, keep) =
            self.compute(&batch, &flow.source, flow.offsets.start, read_only);
        if !letters.is_empty() {
            flow.drop_rows(&keep, &letters);
        }
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

    fn part_snapshot(&mut self, source: &Arc<str>, release: bool) -> Option<Vec<u8>> {
        self.part_snapshot_of(source, release)
    }

    fn part_restore(
        &mut self,
        source: &Arc<str>,
        snapshot: Option<&[u8]>,
    ) -> Result<(), SnapshotError> {
        self.part_restore_of(source, snapshot)
    }
}

/// Counts of the features' state, for tests and the bench.
impl FeatureOperator {
    /// How many features it computes.
    pub fn specs_len(&self) -> usize {
        self.specs.len()
    }

    /// Every key set's state, of every partition held.
    fn states(&self) -> impl Iterator<Item = &KeyedState> {
        self.sets
            .iter()
            .map(|s| &s.state)
            .chain(self.partitions.iter().flat_map(|p| p.parked()))
    }

    pub fn keys_held(&self) -> usize {
        self.states().map(KeyedState::keys_held).sum()
    }

    pub fn state_bytes(&self) -> usize {
        self.states().map(KeyedState::state_bytes).sum()
    }

    /// Events held for windows, over every key set.
    pub fn events_held(&self) -> usize {
        self.states().map(KeyedState::events_held).sum()
    }

    pub fn counts(&self) -> (u64, u64, u64, u64) {
        let mut c = (0, 0, 0, self.late_events);
        for s in self.states() {
            let k = s.counts();
            c.0 += k.keys_evicted;
            c.1 += k.keys_expired;
            c.2 += k.events_dropped;
        }
        c
    }
}

#[cfg(test)]
mod tests;
