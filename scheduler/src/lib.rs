//! roo-scheduler: runs models over streams of Arrow record batches and delivers the results.
//!
//! The batch job behind `roo score`, the pipeline runtime behind `roo serve`
//! (stages on bounded channels, sinks that publish whole files, acks), and
//! the models both score with (compiled once, bound per schema, a store of
//! uploads).
//!
//! This crate knows nothing of Flight, HTTP or the config file format.

mod batch_job;
pub mod device;
pub mod generator;
pub mod metrics;
pub mod models;
mod pipeline;
mod sink;

pub use batch_job::{score_file, BatchJob, JobError, JobReport};
pub use device::{Begun, Device, DeviceScorer, Placement};
pub use metrics::PipelineMetrics;
pub use models::{BatchScorer, BegunBatch, BoundModel, CompiledModel, ModelStore, StoredModel};
pub use pipeline::{
    check_push_schema, check_spec, queue_batches_for, Pipeline, PipelineCounts, PipelineError,
    PipelineSpec, PushError, Pusher, SinkSpec, SourceSpec,
};
pub use sink::{DeadLetterSink, FileSink, SinkError};
