//! The batch job: score every row of an input file into an output file.
//!
//! Input and output share the daemon's path through the code: an ingest file
//! source, a [`FeatureBinding`] checked before the first row, the scorer
//! for the job's device ([`DeviceScorer`]: the fast CPU scorer, the GPU
//! scorer, or the cheaper per batch; compiled once per job), a file sink.
//! Batch and stream therefore give identical scores.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::Float32Array;
use roo_ingest::{FileFormat, FileSource, IngestError};
use roo_kernels::{BindError, FeatureBinding, Model};
use thiserror::Error;

use crate::device::{Device, DeviceScorer, Placement};
use crate::sinks::{DeadLetterSink, FileSink, SinkError};

pub struct BatchJob<'a> {
    pub model: &'a Model,
    pub input: PathBuf,
    pub input_format: FileFormat,
    pub output: PathBuf,
    pub output_format: FileFormat,
    pub batch_rows: usize,
    /// Scoring threads; 0 means one per core.
    pub threads: usize,
    /// Which device scores.
    pub device: Device,
    /// Where records that cannot be read go (created only if there are any).
    pub dead_letters: PathBuf,
    /// How text files are read.
    pub read: roo_ingest::ReadOptions,
}

#[derive(Debug, Clone)]
pub struct JobReport {
    pub rows: u64,
    pub batches: u64,
    pub elapsed: Duration,
    pub scoring: Duration,
    /// Records refused and written to the dead-letter file.
    pub dead_letters: u64,
    /// How the input was read, for text and raw inputs.
    pub read_path: Option<roo_ingest::ReadPath>,
    /// What scored the rows, in words.
    pub device: String,
    pub gpu_batches: u64,
    /// Batches the GPU failed and the CPU scored again.
    pub cpu_retries: u64,
}

#[derive(Debug, Error)]
pub enum JobError {
    #[error(transparent)]
    Ingest(#[from] IngestError),
    #[error("input {path} does not fit model {model}")]
    Bind {
        path: String,
        model: String,
        #[source]
        source: BindError,
    },
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("scoring {path}: {message}")]
    Score { path: String, message: String },
    #[error("model {model}: {message}")]
    Device { model: String, message: String },
    #[error("starting {threads} scoring threads: {message}")]
    Threads { threads: usize, message: String },
}

/// Runs the job; on any error the output file is not created.
pub fn score_file(job: &BatchJob) -> Result<JobReport, JobError> {
    let started = Instant::now();
    let shown = job.input.display().to_string();
    let bind_error = |source| JobError::Bind {
        path: shown.clone(),
        model: job.model.version.short(),
        source,
    };
    let mut source = match job.input_format {
        FileFormat::RawF32 => FileSource::open_raw(&job.input, &job.model.feature_names)?,
        format => FileSource::open(&job.input, format)?,
    }
    .with_read_options(job.read.clone());
    let columns =
        FeatureBinding::feature_columns(job.model, &source.schema()).map_err(bind_error)?;
    source.parse_as_f32(&columns);
    let binding = FeatureBinding::new(job.model, &source.schema()).map_err(bind_error)?;

    let pool = Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(job.threads)
            .thread_name(|i| format!("roo-score-{i}"))
            .build()
            .map_err(|e| JobError::Threads {
                threads: job.threads,
                message: e.to_string(),
            })?,
    );
    // The scoring threads also parse the input, in pieces.
    let source = source.with_parse_pool(roo_ingest::ParsePool::new(pool.clone()));
    let scorer = DeviceScorer::new(job.model, job.device).map_err(|message| JobError::Device {
        model: job.model.version.short(),
        message,
    })?;
    let mut sink = FileSink::create(
        &job.output,
        job.output_format,
        binding.output_schema().clone(),
    )?;
    let mut report = JobReport {
        rows: 0,
        batches: 0,
        elapsed: Duration::ZERO,
        scoring: Duration::ZERO,
        dead_letters: 0,
        read_path: None,
        device: scorer.description().to_string(),
        gpu_batches: 0,
        cpu_retries: 0,
    };
    let mut dead_letters = DeadLetterSink::new(&job.dead_letters);
    let outputs = job.model.n_outputs();
    let mut batches = source.batches(job.batch_rows)?;
    for ingested in batches.by_ref() {
        let ingested = ingested?;
        dead_letters.write(&ingested.dead_letters)?;
        let batch = ingested.batch;
        let rows = batch.num_rows();
        let score_started = Instant::now();
        let arrays = binding
            .feature_arrays(&batch)
            .map_err(|e| JobError::Score {
                path: shown.clone(),
                message: e.to_string(),
            })?;
        let features: Vec<&[f32]> = arrays.iter().map(|a| a.values().as_ref()).collect();
        let mut scores = vec![vec![0f32; rows]; outputs];
        {
            let mut out: Vec<&mut [f32]> = scores.iter_mut().map(Vec::as_mut_slice).collect();
            match scorer.score(&features, &mut out, &pool) {
                Placement::Gpu => report.gpu_batches += 1,
                Placement::CpuRetry(_) => report.cpu_retries += 1,
                Placement::Cpu => {}
            }
        }
        report.scoring += score_started.elapsed();
        let scored = binding
            .with_scores(&batch, scores.into_iter().map(Float32Array::from).collect())
            .map_err(|e| JobError::Score {
                path: shown.clone(),
                message: e.to_string(),
            })?;
        sink.write(&scored)?;
        report.rows += rows as u64;
        report.batches += 1;
    }
    report.read_path = batches.read_path().cloned();
    sink.finish()?;
    report.dead_letters = dead_letters.finish()?;
    report.elapsed = started.elapsed();
    Ok(report)
}
