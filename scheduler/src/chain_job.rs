//! `roo score --config F --pipeline P`: a pipeline's whole operator chain
//! over a file, in file order, on the calling thread: the offline backfill
//! (a training set with `--no-model`) computes what the stream computes,
//! bit for bit, for the same events in the same order — one operator code
//! path, fed one row after another either way.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use roo_ingest::{FileFormat, ReadOptions};

use crate::error::{PipelineError, SetupError, StageError};
use crate::metrics::PipelineMetrics;
use crate::operators::Flow;
use crate::pipeline::{chain_of, open_audit, resolve, PipelineSpec, SourceSpec};
use crate::sinks::{DeadLetterSink, FileSink};

/// One run of a pipeline's chain over a file.
pub struct ChainJob {
    /// The pipeline as configured; its source and sinks are replaced by
    /// the input and output files.
    pub spec: PipelineSpec,
    pub input: PathBuf,
    pub input_format: FileFormat,
    pub output: PathBuf,
    pub output_format: FileFormat,
    /// Leave the model (and shadows) out: the features alone, for training.
    pub no_model: bool,
    /// Scoring threads; 0: one per core.
    pub threads: usize,
    /// Where refused records go (created only if there are any).
    pub dead_letters: PathBuf,
    pub read: ReadOptions,
}

/// What a chain job did.
#[derive(Clone, Debug)]
pub struct ChainReport {
    pub rows_in: u64,
    /// Events written (rows that are not an aggregate's results).
    pub rows_out: u64,
    pub dead_letters: u64,
    /// Events an aggregate counted, and the result rows it wrote.
    pub aggregated: u64,
    pub results_out: u64,
    pub batches: u64,
    pub elapsed: Duration,
    /// The operators run, in order: "feature features", "score model", …
    pub operators: Vec<String>,
    pub keys_held: u64,
}

/// Runs the job; on any error the output file is not created.
pub fn run_chain_over_file(job: ChainJob) -> Result<ChainReport, PipelineError> {
    let started = Instant::now();
    let mut spec = job.spec;
    let name = spec.name.clone();
    let setup = |source: SetupError| PipelineError::Setup {
        pipeline: name.clone(),
        source: Box::new(source),
    };
    let stage = |source: StageError| PipelineError::Stage {
        pipeline: name.clone(),
        stage: "batch",
        source,
    };
    spec.source = SourceSpec::File {
        path: job.input.clone(),
        format: job.input_format,
    };
    spec.read = job.read;
    if job.no_model {
        spec.model = None;
        spec.shadows.clear();
        spec.audit = None;
    }
    let metrics = Arc::new(PipelineMetrics::default());
    let mut resolved = resolve(&spec, &metrics).map_err(setup)?;
    open_audit(&mut resolved, false, &metrics).map_err(setup)?;
    let pool = Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(job.threads)
            .thread_name(|i| format!("roo-score-{i}"))
            .build()
            .map_err(|e| {
                setup(SetupError::Thread {
                    stage: "scoring",
                    source: std::io::Error::other(e),
                })
            })?,
    );
    let empty_schema = resolved.output_schema();
    let mut chain = chain_of(&name, &mut resolved, &pool, &metrics);
    let operators = chain
        .describe()
        .iter()
        .map(|(k, n)| format!("{} {n}", k.name()))
        .collect();
    let source = resolved.file.take().expect("a file source is opened");
    let source = match spec.parse_in_pieces {
        true => source.with_parse_pool(roo_ingest::ParsePool::new(pool.clone())),
        false => source,
    };
    let mut sink: Option<FileSink> = None;
    let mut dead = DeadLetterSink::new(&job.dead_letters);
    let mut report = ChainReport {
        rows_in: 0,
        rows_out: 0,
        dead_letters: 0,
        aggregated: 0,
        results_out: 0,
        batches: 0,
        elapsed: Duration::ZERO,
        operators,
        keys_held: 0,
    };
    let mut write = |flow: Flow,
                     sink: &mut Option<FileSink>,
                     report: &mut ChainReport|
     -> Result<(), StageError> {
        dead.write(&flow.dead_letters)?;
        report.dead_letters += flow.dead_letters.iter().map(|d| d.records).sum::<u64>();
        if let Some(batch) = flow.batch.filter(|b| b.num_rows() > 0) {
            if sink.is_none() {
                *sink = Some(FileSink::create(
                    &job.output,
                    job.output_format,
                    batch.schema(),
                )?);
            }
            sink.as_mut().expect("created").write(&batch)?;
            if flow.results {
                report.results_out += batch.num_rows() as u64;
            } else {
                report.rows_out += batch.num_rows() as u64;
            }
        }
        report.aggregated += flow.aggregated;
        report.batches += 1;
        Ok(())
    };
    for b in source
        .batches(spec.limits.max_rows)
        .map_err(|e| stage(e.into()))?
    {
        let b = b.map_err(|e| stage(e.into()))?;
        report.rows_in += b.records() as u64;
        let flow = chain.run_to_end(Flow::from(b));
        if let Some(fault) = chain.fault() {
            return Err(stage(fault));
        }
        write(flow, &mut sink, &mut report).map_err(stage)?;
        for own in chain.emit(false) {
            write(own, &mut sink, &mut report).map_err(stage)?;
        }
    }
    let own = chain.emit(true);
    if let Some(fault) = chain.fault() {
        return Err(stage(fault));
    }
    for own in own {
        write(own, &mut sink, &mut report).map_err(stage)?;
    }
    let sink = match sink {
        Some(s) => s,
        // No row came out: an empty file with the chain's output schema.
        None => FileSink::create(&job.output, job.output_format, empty_schema)
            .map_err(|e| stage(e.into()))?,
    };
    sink.finish().map_err(|e| stage(e.into()))?;
    dead.finish().map_err(|e| stage(e.into()))?;
    report.keys_held = metrics
        .snapshot(&name, "file", "bytes", None, false)
        .operators
        .iter()
        .map(|o| o.keys_held)
        .sum();
    if report.rows_in != report.rows_out + report.dead_letters + report.aggregated {
        return Err(PipelineError::Invariant {
            pipeline: name,
            what: format!(
                "{} events came in, but {} went out, {} are dead letters and {} were aggregated",
                report.rows_in, report.rows_out, report.dead_letters, report.aggregated
            ),
        });
    }
    report.elapsed = started.elapsed();
    Ok(report)
}
