//! The scoring operator: a model over each batch, its scores and version
//! appended as columns. The pipeline's model (kind `Score`) is the
//! decision: a batch it cannot score is refused into the dead letters. A
//! shadow (kind `Shadow`) scores the same rows into columns of its own and
//! is never the decision: a batch it cannot score gets null shadow columns,
//! counted, and the live path carries on.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use arrow_array::{new_null_array, RecordBatch};

use super::{Flow, InFlight, Operator, OperatorKind, Step};
use crate::device::Placement;
use crate::metrics::PipelineMetrics;
use crate::models::{BegunBatch, BoundModel, ModelError, ModelSlot};
use crate::state::{self, SnapshotError};

/// Scores batches with the model in its slot, read once per batch (a swap
/// lands between two batches).
pub struct ScoreOperator {
    name: String,
    kind: OperatorKind,
    slot: Arc<ModelSlot>,
    pool: Arc<rayon::ThreadPool>,
    metrics: Arc<PipelineMetrics>,
}

/// What a score operator holds while a batch is on the GPU.
struct Scoring {
    loaded: Arc<BoundModel>,
    begun: BegunBatch,
    began: Instant,
}

impl ScoreOperator {
    /// `kind` is `Score` (the decision) or `Shadow`.
    pub fn new(
        name: &str,
        kind: OperatorKind,
        slot: Arc<ModelSlot>,
        pool: Arc<rayon::ThreadPool>,
        metrics: Arc<PipelineMetrics>,
    ) -> Self {
        assert!(matches!(kind, OperatorKind::Score | OperatorKind::Shadow));
        Self {
            name: name.to_string(),
            kind,
            slot,
            pool,
            metrics,
        }
    }

    fn live(&self) -> bool {
        self.kind == OperatorKind::Score
    }

    /// Passes the scored batch on, or handles a failure as the kind says.
    fn done(
        &self,
        mut flow: Flow,
        loaded: &BoundModel,
        rows: usize,
        began: Instant,
        scored: Result<(RecordBatch, Placement), ModelError>,
    ) -> Flow {
        if self.live() {
            let m = &self.metrics;
            m.cpu_ns_per_row_estimate.store(
                loaded.compiled.scorer.cpu_ns_per_row() as u64,
                Ordering::Relaxed,
            );
            m.score_us.record(
                (began.elapsed().as_micros() as u64 / rows.max(1) as u64).max(1),
                rows as u64,
            );
        }
        match scored {
            Ok((batch, placement)) => {
                if self.live() {
                    let m = &self.metrics;
                    match &placement {
                        Placement::Cpu => PipelineMetrics::add(&m.batches_cpu, 1),
                        Placement::Gpu => PipelineMetrics::add(&m.batches_gpu, 1),
                        Placement::CpuRetry(_) => {
                            PipelineMetrics::add(&m.batches_cpu, 1);
                            PipelineMetrics::add(&m.batches_cpu_retried, 1);
                        }
                    }
                }
                flow.batch = Some(batch);
                flow.scored.push(super::Scored {
                    kind: self.kind,
                    compiled: loaded.compiled.clone(),
                    placement,
                });
            }
            Err(e) if self.live() => {
                // A batch that cannot be scored is data, not a crash.
                flow.refuse(format!(
                    "a batch of {rows} rows could not be scored: {}",
                    crate::error::chain(&e)
                ));
            }
            Err(e) => {
                PipelineMetrics::add(&self.metrics.shadow_failures, 1);
                tracing::warn!(
                    "shadow {}: a batch of {rows} rows could not be scored ({}); its shadow columns are null",
                    self.name,
                    crate::error::chain(&e)
                );
                flow.batch = flow.batch.take().map(|b| with_null_outputs(&b, loaded));
            }
        }
        flow
    }
}

/// `batch` with the model's output columns appended as nulls (nullable
/// copies of the output fields: the live model declares its own
/// non-nullable), the batch's own columns as they are.
fn with_null_outputs(batch: &RecordBatch, loaded: &BoundModel) -> RecordBatch {
    let schema = loaded.output_schema();
    let own = batch.schema();
    let outputs = schema.fields().iter().skip(own.fields().len());
    let mut fields: Vec<_> = own.fields().iter().cloned().collect();
    let mut columns = batch.columns().to_vec();
    for field in outputs {
        columns.push(new_null_array(field.data_type(), batch.num_rows()));
        fields.push(Arc::new(field.as_ref().clone().with_nullable(true)));
    }
    let schema = Arc::new(arrow_schema::Schema::new_with_metadata(
        fields,
        schema.metadata().clone(),
    ));
    RecordBatch::try_new(schema, columns).expect("null columns of the declared types and length")
}

impl Operator for ScoreOperator {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> OperatorKind {
        self.kind
    }

    fn begin(&mut self, flow: Flow) -> Step {
        let rows = flow.rows();
        if rows == 0 {
            // Nothing to score: an empty or refused batch passes as it is.
            let mut flow = flow;
            if flow.batch.as_ref().is_some_and(|b| b.num_rows() == 0) {
                flow.batch = None;
            }
            return Step::Done(flow);
        }
        let loaded = self.slot.current();
        let began = Instant::now();
        let batch = flow.batch.as_ref().expect("rows > 0");
        match loaded.begin(batch, &self.pool) {
            Ok(begun) if begun.is_pending() => Step::InFlight(InFlight {
                flow,
                work: Box::new(Scoring {
                    loaded,
                    begun,
                    began,
                }),
                on_device: true,
            }),
            Ok(begun) => {
                let scored = loaded.finish(begun, &self.pool);
                Step::Done(self.done(flow, &loaded, rows, began, scored))
            }
            Err(e) => Step::Done(self.done(flow, &loaded, rows, began, Err(e))),
        }
    }

    fn finish(&mut self, in_flight: InFlight) -> Flow {
        let Scoring {
            loaded,
            begun,
            began,
        } = *in_flight
            .work
            .downcast::<Scoring>()
            .expect("a score operator's own work");
        let rows = in_flight.flow.rows();
        let scored = loaded.finish(begun, &self.pool);
        self.done(in_flight.flow, &loaded, rows, began, scored)
    }

    /// Stateless: the model is named by the config and the model version
    /// each row carries.
    fn snapshot(&self) -> Vec<u8> {
        state::encode(self.kind.name(), 1, &[])
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), SnapshotError> {
        let (version, payload) = state::decode(self.kind.name(), snapshot)?;
        if version != 1 || !payload.is_empty() {
            return Err(SnapshotError::Version {
                expected: "1, empty".into(),
                found: version,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    use arrow_array::{Array, BinaryArray, Float32Array, RecordBatch};
    use arrow_schema::{DataType, Field, Schema};

    use super::*;
    use crate::device::Device;
    use crate::models::OutputNaming;

    /// A shadow that cannot score a batch (a feature column that is not a
    /// number) leaves the live score as it was, writes null shadow
    /// columns and counts the failure; the batch goes on.
    #[test]
    fn a_failing_shadow_leaves_the_live_score_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shadow.json");
        std::fs::write(
            &path,
            r#"{"kind": "linear", "features": ["a", "c"], "weights": [1.0, 1.0], "bias": 0.0}"#,
        )
        .unwrap();
        let field = |n: &str, t: DataType| Field::new(n, t, true);
        let bound = Arc::new(Schema::new(vec![
            field("a", DataType::Float32),
            field("c", DataType::Float32),
            field("score", DataType::Float32),
        ]));
        let slot = Arc::new(
            ModelSlot::load(&path, Device::Cpu, &bound, OutputNaming::Shadow("s".into())).unwrap(),
        );
        let metrics = Arc::new(PipelineMetrics::default());
        let pool = Arc::new(
            rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .build()
                .unwrap(),
        );
        let mut shadow = ScoreOperator::new("s", OperatorKind::Shadow, slot, pool, metrics.clone());
        let live = Float32Array::from(vec![0.25f32, 0.5, 0.75]);
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                field("a", DataType::Float32),
                field("c", DataType::Binary),
                field("score", DataType::Float32),
            ])),
            vec![
                Arc::new(Float32Array::from(vec![1.0f32, 2.0, 3.0])),
                Arc::new(BinaryArray::from_vec(vec![b"x", b"y", b"z"])),
                Arc::new(live.clone()),
            ],
        )
        .unwrap();
        let flow = match shadow.begin(Flow::of_events(Arc::from("src"), 0, 0..3, batch)) {
            Step::Done(f) => f,
            Step::InFlight(w) => shadow.finish(w),
        };
        let out = flow.batch.expect("the batch goes on");
        let score = out.column_by_name("score").unwrap();
        assert_eq!(
            score.as_any().downcast_ref::<Float32Array>().unwrap(),
            &live
        );
        assert_eq!(out.column_by_name("score_s").unwrap().null_count(), 3);
        assert_eq!(metrics.shadow_failures.load(Ordering::Relaxed), 1);
        assert!(flow.scored.is_empty(), "a failed shadow scored nothing");
    }
}
