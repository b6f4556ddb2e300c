//! The audit operator: every scored batch's records into the pipeline's
//! audit log ([`crate::audit`]), written on the operator thread before
//! the batch goes on, so no event reaches a sink unrecorded. A write that
//! fails (a full disk) is the operator's fault: the operator stage stops
//! the pipeline with the reason rather than pass on unaudited events.

use std::sync::Arc;

use arrow_schema::Schema;

use super::{Flow, Operator, OperatorKind, Step};
use crate::audit::{AuditError, AuditSpec, AuditWriter, RecordBuilder};
use crate::error::StageError;
use crate::metrics::{OperatorStats, PipelineMetrics};
use crate::models::CompiledModel;
use crate::state::{self, SnapshotError};

pub struct AuditOperator {
    writer: AuditWriter,
    records: RecordBuilder,
    fault: Option<AuditError>,
    metrics: Arc<PipelineMetrics>,
}

impl AuditOperator {
    /// Opens the log (refused here when it cannot be written), stores the
    /// definitions text and every model in place, and checks the id
    /// column against `schema`, what reaches the audit.
    pub fn new(
        spec: &AuditSpec,
        event_time: Option<usize>,
        schema: &Schema,
        definitions: &str,
        models: &[Arc<CompiledModel>],
        epochs: bool,
        metrics: Arc<PipelineMetrics>,
    ) -> Result<Self, AuditError> {
        let hash = crate::audit::definitions_hash(definitions);
        let records = RecordBuilder::new(spec.id.as_deref(), event_time, schema, hash.clone())?;
        let mut writer = AuditWriter::open(spec)?;
        if epochs {
            writer = writer.with_epochs();
        }
        writer.store_definitions(&hash, definitions)?;
        for m in models {
            writer.store_model(&m.version, &m.bytes)?;
        }
        Ok(Self {
            writer,
            records,
            fault: None,
            metrics,
        })
    }

    pub fn writer(&self) -> &AuditWriter {
        &self.writer
    }

    fn record(&mut self, flow: &Flow) -> Result<(), AuditError> {
        let Some(batch) = flow.batch.as_ref().filter(|b| b.num_rows() > 0) else {
            return Ok(());
        };
        for s in &flow.scored {
            self.writer
                .store_model(&s.compiled.version, &s.compiled.bytes)?;
        }
        let device = flow
            .scored
            .iter()
            .find(|s| s.kind == OperatorKind::Score)
            .map_or_else(|| "unscored".to_string(), |s| s.device());
        let records = self
            .records
            .build(&flow.source, flow.ingest_time, batch, &device)?;
        self.writer.write(&records)
    }

    fn publish_stats(&self) {
        self.metrics.set_operator_stats(OperatorStats {
            kind: OperatorKind::Audit.name(),
            name: "audit".into(),
            audit_records: self.writer.records,
            audit_segments: self.writer.segments,
            audit_bytes: self.writer.bytes,
            ..Default::default()
        });
    }
}

impl Operator for AuditOperator {
    fn name(&self) -> &str {
        "audit"
    }

    fn kind(&self) -> OperatorKind {
        OperatorKind::Audit
    }

    fn begin(&mut self, flow: Flow) -> Step {
        if self.fault.is_none() && !flow.results {
            if let Err(e) = self.record(&flow) {
                self.fault = Some(e);
            }
        }
        Step::Done(flow)
    }

    fn emit(&mut self, end: bool, _out: &mut Vec<Flow>) {
        if self.fault.is_none() {
            let done = if end {
                self.writer.close_all()
            } else {
                self.writer.tick()
            };
            if let Err(e) = done {
                self.fault = Some(e);
            }
        }
        self.publish_stats();
    }

    fn fault(&mut self) -> Option<StageError> {
        self.fault.take().map(|e| StageError::Audit(Box::new(e)))
    }

    /// Under checkpoints: every segment closes at the cut, and its files
    /// go to the checkpoint to publish.
    fn seal(&mut self) -> Result<Vec<crate::sinks::Sealed>, StageError> {
        if let Some(e) = self.fault.take() {
            return Err(StageError::Audit(Box::new(e)));
        }
        let sealed = self
            .writer
            .seal_epoch()
            .map_err(|e| StageError::Audit(Box::new(e)));
        self.publish_stats();
        sealed
    }

    /// The next default id (`SOURCE#N`) of each source.
    fn snapshot(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (source, next) in self.records.counters() {
            out.extend_from_slice(&(source.len() as u32).to_le_bytes());
            out.extend_from_slice(source.as_bytes());
            out.extend_from_slice(&next.to_le_bytes());
        }
        state::encode(OperatorKind::Audit.name(), 1, &out)
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), SnapshotError> {
        let mut payload = state::decode_version(OperatorKind::Audit.name(), 1, snapshot)?;
        let torn = || SnapshotError::Payload("a (source, next id) entry is cut short".into());
        let mut counters = Vec::new();
        while !payload.is_empty() {
            let len = payload.get(..4).ok_or_else(torn)?;
            let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
            let source = payload.get(4..4 + len).ok_or_else(torn)?;
            let source = std::str::from_utf8(source)
                .map_err(|_| SnapshotError::Payload("a source name is not UTF-8".into()))?;
            let next = payload.get(4 + len..12 + len).ok_or_else(torn)?;
            counters.push((
                Arc::from(source),
                u64::from_le_bytes(next.try_into().expect("8 bytes")),
            ));
            payload = &payload[12 + len..];
        }
        self.records.set_counters(counters);
        Ok(())
    }
}
