//! The scheduler's errors. Each says what was being done and to what;
//! the cause is its `source()`, never repeated in its own message, so a
//! chain printed with [`chain`] (or anyhow's `{:#}`) says each thing once.

use roo_ingest::IngestError;
use roo_kernels::BindError;
use thiserror::Error;

use crate::models::ModelError;
use crate::sinks::SinkError;

/// An error and its causes on one line, joined by ": ".
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        next = cause.source();
    }
    out
}

/// A pipeline that could not start, failed while running, or refused a
/// request.
#[derive(Debug, Error)]
pub enum PipelineError {
    #[error("pipeline {pipeline}")]
    Setup {
        pipeline: String,
        #[source]
        source: Box<SetupError>,
    },
    #[error("pipeline {pipeline}: the {stage} stage failed")]
    Stage {
        pipeline: String,
        stage: &'static str,
        #[source]
        source: StageError,
    },
    #[error("pipeline {pipeline}: the {stage} stage panicked")]
    Panicked {
        pipeline: String,
        stage: &'static str,
    },
    #[error("pipeline {pipeline}: an invariant does not hold: {what}")]
    Invariant { pipeline: String, what: String },
    #[error("pipeline {pipeline}: {operator}: the new model was refused; the previous one keeps scoring")]
    Reload {
        pipeline: String,
        operator: String,
        #[source]
        source: Box<ModelError>,
    },
    #[error("pipeline {pipeline}: batches can be pushed only into a pipeline whose source takes pushes (Flight DoPut); its source is a {kind}")]
    NotPush {
        pipeline: String,
        kind: &'static str,
    },
    #[error("pipeline {pipeline} is stopping")]
    Stopping { pipeline: String },
    #[error("pipeline {pipeline}")]
    Stream {
        pipeline: String,
        #[source]
        source: roo_ingest::StreamError,
    },
    #[error("pipeline {pipeline} has no model")]
    NoModel { pipeline: String },
    #[error(
        "pipeline {pipeline} has no aggregate ([[pipeline.aggregate]]): it has no latest window"
    )]
    NoAggregate { pipeline: String },
    #[error("pipeline {pipeline} has no table {table:?} (its tables: {tables})")]
    NoTable {
        pipeline: String,
        table: String,
        tables: String,
    },
}

/// Why a pipeline could not start.
#[derive(Debug, Error)]
pub enum SetupError {
    #[error(transparent)]
    Model(Box<ModelError>),
    #[error("resuming from the last checkpoint")]
    Checkpoint(#[source] Box<crate::checkpoint::CheckpointError>),
    #[error(transparent)]
    Ingest(#[from] IngestError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("input {path} does not fit model {model}")]
    InputFit {
        path: String,
        model: String,
        #[source]
        source: BindError,
    },
    #[error("event_time {column:?}: the input has no such column (it has {available})")]
    EventTimeMissing { column: String, available: String },
    #[error("event_time {column:?}: the column is {found}; expected int64 microseconds since the Unix epoch, or a timestamp")]
    EventTimeType { column: String, found: String },
    #[error(transparent)]
    Features(#[from] crate::operators::features::FeatureError),
    #[error("a TCP source needs its columns")]
    TcpColumns,
    #[error("a Kafka source needs its columns")]
    KafkaColumns,
    #[error("a Kafka source keeps its position in the group's committed offsets, not in [server] state_dir checkpoints; remove state_dir or use another source")]
    KafkaCheckpoints,
    #[error("a Kafka source with features needs `changelog`: the compacted topic each partition's state is kept in, so it follows the partition to its next owner")]
    KafkaStateWithoutChangelog,
    #[error("online requests on a pipeline with a Kafka source and features: a request belongs to no partition, and the features' state is kept per partition; serve requests from a pipeline of their own")]
    KafkaOnlineFeatures,
    #[error("feature {feature:?} is keyed by [{key}], another feature by [{first}]: with a Kafka source every feature must share one key, the one the producer partitions the messages by (a feature keyed otherwise would see only the events of the partitions its member holds)")]
    KafkaFeatureKeys {
        first: String,
        feature: String,
        key: String,
    },
    #[error(transparent)]
    Kafka(Box<roo_ingest::KafkaError>),
    #[error(
        "a push source without columns takes the model's features, but the pipeline has no model"
    )]
    PushColumns,
    #[error("a push source of a pipeline with features or tables needs its columns (the keys, the event time, the values): they are not the model's features")]
    PushColumnsWithFeatures,
    #[error(transparent)]
    Enrich(#[from] crate::operators::enrich::EnrichError),
    #[error(transparent)]
    Aggregate(#[from] crate::operators::aggregate::AggregateError),
    #[error("aggregates {first:?} and {second:?}: an aggregate ends a pipeline's chain, so a pipeline has one at most")]
    TwoAggregates { first: String, second: String },
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    #[error("enrich {name:?} is declared twice")]
    DuplicateEnrich { name: String },
    #[error("shadow {name:?} is declared twice")]
    DuplicateShadow { name: String },
    #[error("shadow {name:?}: a pipeline without a model has no decision to shadow")]
    ShadowWithoutModel { name: String },
    #[error("shadow {name:?}")]
    Shadow {
        name: String,
        #[source]
        source: Box<ModelError>,
    },
    #[error("starting the {stage} thread")]
    Thread {
        stage: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl From<roo_ingest::KafkaError> for SetupError {
    fn from(e: roo_ingest::KafkaError) -> Self {
        Self::Kafka(Box::new(e))
    }
}

impl From<roo_ingest::KafkaError> for StageError {
    fn from(e: roo_ingest::KafkaError) -> Self {
        Self::Kafka(Box::new(e))
    }
}

impl From<ModelError> for SetupError {
    fn from(e: ModelError) -> Self {
        Self::Model(Box::new(e))
    }
}

/// Why a running stage stopped.
#[derive(Debug, Error)]
pub enum StageError {
    #[error(transparent)]
    Ingest(#[from] IngestError),
    #[error(transparent)]
    Kafka(Box<roo_ingest::KafkaError>),
    #[error("taking a checkpoint")]
    Checkpoint(#[source] Box<crate::checkpoint::CheckpointError>),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("source {source_name}: batch {seq} arrived after batch {last}; expected {expected}")]
    Order {
        source_name: String,
        seq: u64,
        last: u64,
        expected: u64,
    },
    #[error("source {source_name}: its first batch is number {seq}; expected 0")]
    FirstBatch { source_name: String, seq: u64 },
    #[error("{source_name}: the partition's state from the changelog cannot be restored into {operator}: {error}; expected a snapshot written by this pipeline's features (to start the partitions' state afresh, give the source a new changelog topic)")]
    PartitionState {
        source_name: String,
        operator: String,
        error: Box<crate::state::SnapshotError>,
    },
    #[error(
        "the audit log could not be written; the pipeline stops rather than score unaudited events"
    )]
    Audit(#[source] Box<crate::audit::AuditError>),
}

impl From<crate::checkpoint::CheckpointError> for StageError {
    fn from(e: crate::checkpoint::CheckpointError) -> Self {
        Self::Checkpoint(Box::new(e))
    }
}

impl From<crate::checkpoint::CheckpointError> for SetupError {
    fn from(e: crate::checkpoint::CheckpointError) -> Self {
        Self::Checkpoint(Box::new(e))
    }
}
