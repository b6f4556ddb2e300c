//! roo-scheduler: runs pipelines of operators over streams of Arrow record
//! batches and delivers the results.
//!
//! The pipeline runtime behind `roo serve` (a source, a chain of operators,
//! sinks; stages on bounded channels, sinks that publish whole files, acks),
//! the batch job behind `roo score`, the models both score with (compiled
//! once, bound per schema, a store of uploads), the output layout readers
//! share, and the snapshot format of operator state.
//!
//! This crate knows nothing of Flight, HTTP or the config file format.

pub mod audit;
mod batch_job;
mod chain_job;
pub mod checkpoint;
pub mod device;
pub mod error;
pub mod generator;
pub mod metrics;
pub mod models;
pub mod online;
pub mod operators;
mod pipeline;
pub mod sinks;
pub mod state;

pub use batch_job::{score_file, BatchJob, JobError, JobReport};
pub use chain_job::{run_chain_over_file, ChainJob, ChainReport};
pub use device::{Begun, Device, DeviceScorer, Placement};
pub use error::{PipelineError, SetupError, StageError};
pub use metrics::{MetricsSnapshot, PipelineMetrics};
pub use models::{
    BatchScorer, BegunBatch, BoundModel, CompiledModel, ModelError, ModelSlot, ModelStore,
    OutputNaming, StoredModel,
};
pub use pipeline::{
    check_push_schema, check_spec, queue_batches_for, GeneratorStream, Pipeline, PipelineCounts,
    PipelineSpec, PushError, Pusher, SchemaMismatch, ShadowSpec, SinkSpec, SourceSpec, SpecReport,
};
pub use sinks::{
    DeadLetterSink, FileSink, ParquetCompression, ParquetSettings, ParquetStatistics, SinkError,
};
