//! roo-scheduler: runs models over streams of Arrow record batches and delivers the results.
//!
//! Today: the batch job behind `roo score` (file in, scores out, through the
//! same binding and scorers the daemon will use) and file sinks that write to
//! a partial file and rename it into place only once complete. The pipeline
//! runtime (stages on bounded channels, device choice, per-key state) grows here.
//!
//! This crate knows nothing of Flight, HTTP or the config file format.

mod batch_job;
pub mod generator;
pub mod metrics;
mod pipeline;
mod sink;

pub use batch_job::{score_file, BatchJob, JobError, JobReport};
pub use metrics::PipelineMetrics;
pub use pipeline::{
    check_spec, queue_batches_for, Device, Pipeline, PipelineCounts, PipelineError, PipelineSpec,
    SinkSpec, SourceSpec,
};
pub use sink::{DeadLetterSink, FileSink, SinkError};
