//! The operator chain: what a pipeline does between its source and its
//! sinks.
//!
//! ```text
//! source ─▶ [feature] ─▶ [enrich] ─▶ [score] ─▶ [shadow] ─▶ [audit] ─▶ [aggregate] ─▶ sinks
//! ```
//!
//! An operator takes a [`Flow`] — an Arrow batch with its source, sequence
//! number, offsets and ingest time — and passes one on, columns appended
//! (the rest shared, not copied), or, like an aggregate, emits flows of its
//! own when event time passes a window's end ([`Operator::emit`]). The
//! order is fixed by kind ([`OperatorKind`]): a config lists operators per
//! kind and the chain puts them in this order.
//!
//! Work that runs on a device (a GPU batch) may be left in flight
//! ([`Step::InFlight`]): the chain begins the next batch before finishing
//! it, so two batches overlap, and each operator still sees batches in
//! order.
//!
//! Stateful operators snapshot their state to bytes and restore it
//! bit-identically ([`crate::state`]): checkpoints, partition hand-over and
//! tests use that one interface.

pub mod aggregate;
pub mod audit;
pub mod enrich;
pub mod features;
pub mod score;
#[cfg(test)]
pub(crate) mod test_rng;

use std::any::Any;
use std::ops::Range;
use std::sync::Arc;
use std::time::SystemTime;

use arrow_array::RecordBatch;
use roo_ingest::{DeadLetter, IngestBatch};

use crate::state::SnapshotError;

/// The kinds of operator, in the order a chain runs them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OperatorKind {
    /// Per-key rolling features (`[[pipeline.feature]]`).
    Feature,
    /// A join with a versioned table (`[[pipeline.enrich]]`).
    Enrich,
    /// The pipeline's model (`model = …`): its score is the decision.
    Score,
    /// A candidate model scoring the same rows into columns of its own
    /// (`[[pipeline.shadow]]`); never the decision.
    Shadow,
    /// The per-event audit record (`[pipeline.audit]`).
    Audit,
    /// Windowed aggregates (`[[pipeline.aggregate]]`); ends the chain.
    Aggregate,
}

impl OperatorKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Feature => "feature",
            Self::Enrich => "enrich",
            Self::Score => "score",
            Self::Shadow => "shadow",
            Self::Audit => "audit",
            Self::Aggregate => "aggregate",
        }
    }
}

/// One batch on its way through a pipeline.
pub struct Flow {
    pub source: Arc<str>,
    /// 0, 1, 2, … per source.
    pub seq: u64,
    /// The source offsets the batch covers (bytes, or rows for sources of
    /// ready-made batches).
    pub offsets: Range<u64>,
    /// When the batch's oldest event was read.
    pub ingest_time: SystemTime,
    /// The rows; `None` once an operator refused the batch whole (its rows
    /// are then counted in a dead letter's `records`).
    pub batch: Option<RecordBatch>,
    pub dead_letters: Vec<DeadLetter>,
    /// Events an aggregate took into its windows: accounted for, not
    /// passed on.
    pub aggregated: u64,
    /// The rows are an aggregate's results (windows), not events.
    pub results: bool,
    /// The models that scored the rows, the decision's first, each with
    /// where it ran: what the audit record names.
    pub scored: Vec<Scored>,
    /// Online requests waiting for these rows ([`crate::online`]); an
    /// operator that refuses rows says which ([`Flow::drop_rows`]).
    pub answer: Option<Box<crate::online::Answer>>,
}

/// A model that scored a flow's rows, and the device it ran on.
#[derive(Clone)]
pub struct Scored {
    pub kind: OperatorKind,
    pub compiled: Arc<crate::models::CompiledModel>,
    pub placement: crate::device::Placement,
}

impl Scored {
    /// Where the batch ran, in words: `cpu AVX-512`, `gpu NAME (…)`, or
    /// `cpu … (after a GPU failure)`.
    pub fn device(&self) -> String {
        let scorer = &self.compiled.scorer;
        let isa = scorer.cpu().isa().name();
        match &self.placement {
            crate::device::Placement::Cpu => format!("cpu {isa}"),
            crate::device::Placement::Gpu => match scorer.gpu() {
                Some(g) => format!("gpu {}", g.adapter()),
                None => "gpu".to_string(),
            },
            crate::device::Placement::CpuRetry(_) => format!("cpu {isa} (after a GPU failure)"),
        }
    }
}

impl Flow {
    /// A flow of `batch`'s events, read now, no dead letters yet.
    pub fn of_events(source: Arc<str>, seq: u64, offsets: Range<u64>, batch: RecordBatch) -> Self {
        Self {
            source,
            seq,
            offsets,
            ingest_time: SystemTime::now(),
            batch: Some(batch),
            dead_letters: Vec::new(),
            aggregated: 0,
            results: false,
            scored: Vec::new(),
            answer: None,
        }
    }

    /// Rows still in the flow.
    pub fn rows(&self) -> usize {
        self.batch.as_ref().map_or(0, RecordBatch::num_rows)
    }

    /// Events this flow accounts for: rows (unless results), what its
    /// dead letters stand for, and events aggregated.
    pub fn records(&self) -> u64 {
        let rows = if self.results { 0 } else { self.rows() as u64 };
        rows + self.dead_letters.iter().map(|d| d.records).sum::<u64>() + self.aggregated
    }

    /// Refuses the batch whole: its rows become one dead letter naming why.
    pub fn refuse(&mut self, reason: String) {
        let rows = self.rows() as u64;
        if rows == 0 {
            return;
        }
        if let Some(a) = self.answer.as_mut() {
            a.refuse_all(rows as usize, &reason);
        }
        self.batch = None;
        self.dead_letters.push(DeadLetter {
            source: self.source.clone(),
            offset: self.offsets.start,
            line: None,
            raw: Vec::new(),
            raw_len: 0,
            reason,
            records: rows,
        });
    }
}

impl From<IngestBatch> for Flow {
    fn from(b: IngestBatch) -> Self {
        Self {
            source: b.source,
            seq: b.seq,
            offsets: b.offsets,
            ingest_time: b.ingest_time,
            batch: Some(b.batch),
            dead_letters: b.dead_letters,
            aggregated: 0,
            results: false,
            scored: Vec::new(),
            answer: None,
        }
    }
}

impl Flow {
    /// An operator refused rows of the batch it was given: `keep[i]` is
    /// false for each, and `letters` holds their dead letters in row order
    /// (one each). Only requests need to know (their replies).
    pub(crate) fn drop_rows(&mut self, keep: &[bool], letters: &[DeadLetter]) {
        if let Some(a) = self.answer.as_mut() {
            let refused = keep
                .iter()
                .enumerate()
                .filter(|(_, k)| !**k)
                .map(|(i, _)| i);
            debug_assert_eq!(refused.clone().count(), letters.len());
            a.drop_rows(keep, refused.zip(letters.iter().map(|l| l.reason.as_str())));
        }
    }
}

/// A dead letter for one row an operator refused (no raw bytes: the row
/// was already parsed), at the batch's offset.
pub(crate) fn row_letter(source: &Arc<str>, offset: u64, reason: String) -> DeadLetter {
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

/// A schema's column names, for an error that says what there is.
pub fn column_names(schema: &arrow_schema::Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// What [`Operator::begin`] did with a flow.
pub enum Step {
    /// Done: pass it on.
    Done(Flow),
    /// Work in flight on a device; [`Operator::finish`] completes it.
    InFlight(InFlight),
}

/// A flow an operator has begun and not finished, with the operator's own
/// record of the work (opaque to the chain).
pub struct InFlight {
    pub flow: Flow,
    pub work: Box<dyn Any + Send>,
    /// Whether part of the work is on a device now: worth holding while
    /// the next batch begins.
    pub on_device: bool,
}

/// One step of a pipeline's chain. Runs on the pipeline's operator thread,
/// one flow at a time, in per-source order.
pub trait Operator: Send {
    /// The name it was configured with (the pipeline's model: "model").
    fn name(&self) -> &str;

    fn kind(&self) -> OperatorKind;

    /// Processes one flow. An error about the data (a batch that cannot be
    /// scored) refuses the batch into the dead letters ([`Flow::refuse`]);
    /// it never panics and never stops the pipeline.
    fn begin(&mut self, flow: Flow) -> Step;

    /// Completes what [`Self::begin`] left in flight.
    fn finish(&mut self, in_flight: InFlight) -> Flow {
        in_flight.flow
    }

    /// Flows of the operator's own (an aggregate's closed windows), given
    /// after each input flow, on idle ticks, and with `end` when the source
    /// has ended. Most operators have none.
    fn emit(&mut self, _end: bool, _out: &mut Vec<Flow>) {}

    /// A failure that must stop the pipeline (the audit log could not be
    /// written): taken once; the operator stage stops before passing on
    /// the flow it was found after. Most operators never have one.
    fn fault(&mut self) -> Option<crate::error::StageError> {
        None
    }

    /// The operator's state as a snapshot ([`crate::state::encode`]).
    fn snapshot(&self) -> Vec<u8>;

    /// At a checkpoint's cut: the files the operator wrote since the last
    /// cut (the audit log's segments), complete and fsynced under hidden
    /// names, for the checkpoint to publish once its manifest is durable.
    /// Most operators write none.
    fn seal(&mut self) -> Result<Vec<crate::sinks::Sealed>, crate::error::StageError> {
        Ok(Vec::new())
    }

    /// Replaces the operator's state with a snapshot's.
    fn restore(&mut self, snapshot: &[u8]) -> Result<(), SnapshotError>;

    /// With a source that moves partitions (Kafka): the keyed state of
    /// partition `source` alone as a snapshot, dropped from memory when
    /// `release` (the partition leaves). `None`: the operator keeps no
    /// state per partition (the default).
    fn part_snapshot(&mut self, _source: &Arc<str>, _release: bool) -> Option<Vec<u8>> {
        None
    }

    /// Partition `source` starts from `snapshot` (written by
    /// [`Self::part_snapshot`]), or empty; whatever the operator held of
    /// it is replaced.
    fn part_restore(
        &mut self,
        _source: &Arc<str>,
        _snapshot: Option<&[u8]>,
    ) -> Result<(), SnapshotError> {
        Ok(())
    }
}

/// The kind name of a partition's snapshot ([`Chain::part_snapshot`]).
const PART_KIND: &str = "partition";
const PART_VERSION: u32 = 1;

/// A pipeline's operators in chain order.
pub struct Chain {
    operators: Vec<Box<dyn Operator>>,
}

impl Chain {
    /// Orders `operators` by kind (stable within a kind: config order).
    /// An aggregate ends a chain: at most one, and last.
    pub fn new(mut operators: Vec<Box<dyn Operator>>) -> Self {
        operators.sort_by_key(|o| o.kind());
        assert!(
            operators
                .iter()
                .filter(|o| o.kind() == OperatorKind::Aggregate)
                .count()
                <= 1,
            "an aggregate ends a chain: one at most"
        );
        Self { operators }
    }

    pub fn len(&self) -> usize {
        self.operators.len()
    }

    pub fn is_empty(&self) -> bool {
        self.operators.is_empty()
    }

    /// (kind, name) of each operator, in chain order.
    pub fn describe(&self) -> Vec<(OperatorKind, String)> {
        self.operators
            .iter()
            .map(|o| (o.kind(), o.name().to_string()))
            .collect()
    }

    /// Runs `flow` from operator `from` on; stops at the first that leaves
    /// work in flight and returns where to resume.
    pub fn run(&mut self, flow: Flow, from: usize) -> Progress {
        self.run_to(flow, from, self.operators.len())
    }

    /// Runs `flow` through operators `from..to`; `Done` means it reached
    /// `to` (the end of the chain when `to` is its length).
    pub fn run_to(&mut self, mut flow: Flow, from: usize, to: usize) -> Progress {
        for at in from..to {
            if self.operators[at].kind() == OperatorKind::Aggregate {
                // A request's reply is its scored rows, not the windows.
                if let Some(a) = flow.answer.as_mut() {
                    a.capture(flow.batch.as_ref());
                }
            }
            match self.operators[at].begin(flow) {
                Step::Done(f) => flow = f,
                Step::InFlight(work) => return Progress::InFlight { at, work },
            }
        }
        Progress::Done(flow)
    }

    /// Completes the in-flight work of operator `at`, then runs the rest.
    pub fn resume(&mut self, at: usize, work: InFlight) -> Progress {
        let flow = self.operators[at].finish(work);
        self.run(flow, at + 1)
    }

    /// Runs a flow through to its end, finishing in-flight work at once.
    pub fn run_to_end(&mut self, flow: Flow) -> Flow {
        let progress = self.run(flow, 0);
        self.complete(progress)
    }

    /// Finishes whatever `progress` left in flight, and every operator
    /// after it, waiting for device work.
    pub fn complete(&mut self, mut progress: Progress) -> Flow {
        loop {
            match progress {
                Progress::Done(flow) => return flow,
                Progress::InFlight { at, work } => progress = self.resume(at, work),
            }
        }
    }

    /// Every operator's own flows; those of operator `i` go through the
    /// operators after it.
    pub fn emit(&mut self, end: bool) -> Vec<Flow> {
        let mut out = Vec::new();
        for at in 0..self.operators.len() {
            let mut own = Vec::new();
            self.operators[at].emit(end, &mut own);
            for flow in own {
                let progress = self.run(flow, at + 1);
                out.push(self.complete(progress));
            }
        }
        out
    }

    /// The first operator's fault, if any ([`Operator::fault`]).
    pub fn fault(&mut self) -> Option<crate::error::StageError> {
        self.operators.iter_mut().find_map(|o| o.fault())
    }

    /// Every operator's files sealed since the last cut ([`Operator::seal`]).
    pub fn seal(&mut self) -> Result<Vec<crate::sinks::Sealed>, crate::error::StageError> {
        let mut files = Vec::new();
        for o in &mut self.operators {
            files.extend(o.seal()?);
        }
        Ok(files)
    }

    /// Every operator's snapshot, in chain order, named by kind and name.
    pub fn snapshot(&self) -> Vec<(OperatorKind, String, Vec<u8>)> {
        self.operators
            .iter()
            .map(|o| (o.kind(), o.name().to_string(), o.snapshot()))
            .collect()
    }

    /// Partition `source`'s keyed state in every operator that keeps state
    /// per partition, as one snapshot: (kind, name, the operator's
    /// snapshot) for each, in chain order.
    pub fn part_snapshot(&mut self, source: &Arc<str>, release: bool) -> Vec<u8> {
        let mut w = crate::state::Writer::default();
        let parts: Vec<(OperatorKind, String, Vec<u8>)> = self
            .operators
            .iter_mut()
            .filter_map(|o| {
                let bytes = o.part_snapshot(source, release)?;
                Some((o.kind(), o.name().to_string(), bytes))
            })
            .collect();
        w.u64(parts.len() as u64);
        for (kind, name, bytes) in &parts {
            w.bytes(kind.name().as_bytes());
            w.bytes(name.as_bytes());
            w.bytes(bytes);
        }
        crate::state::encode(PART_KIND, PART_VERSION, &w.buf)
    }

    /// Partition `source` starts, in every operator, from a snapshot
    /// [`Self::part_snapshot`] wrote (`None`: empty). A snapshot naming an
    /// operator this chain lacks, or one an operator refuses (written for
    /// other features), is an error: the pipeline stops rather than
    /// compute from the wrong state.
    pub fn part_restore(
        &mut self,
        source: &Arc<str>,
        snapshot: Option<&[u8]>,
    ) -> Result<(), (String, SnapshotError)> {
        let whole = |e| ("partition snapshot".to_string(), e);
        let mut parts: Vec<(String, String, &[u8])> = Vec::new();
        if let Some(bytes) = snapshot {
            let payload =
                crate::state::decode_version(PART_KIND, PART_VERSION, bytes).map_err(whole)?;
            let mut r = crate::state::Reader::new(payload);
            let n = r.count(24).map_err(whole)?;
            for _ in 0..n {
                let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
                let kind = text(r.bytes().map_err(whole)?);
                let name = text(r.bytes().map_err(whole)?);
                parts.push((kind, name, r.bytes().map_err(whole)?));
            }
            r.finish().map_err(whole)?;
        }
        for (kind, name, _) in &parts {
            if !self
                .operators
                .iter()
                .any(|o| o.kind().name() == kind && o.name() == name)
            {
                return Err((
                    format!("{kind} {name}"),
                    SnapshotError::Payload(
                        "the partition's snapshot holds state of an operator this pipeline does not have"
                            .into(),
                    ),
                ));
            }
        }
        for o in &mut self.operators {
            let bytes = parts
                .iter()
                .find(|(k, n, _)| k == o.kind().name() && n == o.name())
                .map(|(_, _, b)| *b);
            o.part_restore(source, bytes)
                .map_err(|e| (format!("{} {}", o.kind().name(), o.name()), e))?;
        }
        Ok(())
    }

    /// Restores each operator from the snapshot taken under its kind and
    /// name; an operator with none keeps its state.
    pub fn restore(
        &mut self,
        snapshots: &[(OperatorKind, String, Vec<u8>)],
    ) -> Result<(), (String, SnapshotError)> {
        for o in &mut self.operators {
            if let Some((_, _, bytes)) = snapshots
                .iter()
                .find(|(k, n, _)| *k == o.kind() && n == o.name())
            {
                o.restore(bytes)
                    .map_err(|e| (format!("{} {}", o.kind().name(), o.name()), e))?;
            }
        }
        Ok(())
    }
}

/// Where a flow is in the chain.
pub enum Progress {
    Done(Flow),
    /// Operator `at` holds work in flight.
    InFlight {
        at: usize,
        work: InFlight,
    },
}
