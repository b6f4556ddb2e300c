//! The pipeline runtime: source → micro-batches → score → sinks, each stage
//! on its own thread, joined by bounded crossbeam channels.
//!
//! Backpressure, not drops: when a sink is slow its channel fills, the score
//! stage blocks on it, the ingest channel fills, and the source stops
//! reading (a TCP source stops handing receive buffers back, so the kernel's
//! windows close on the senders). Order: one score stage per pipeline takes
//! batches in order and each sink writes them in order, so per-source order
//! holds at the sinks. Offsets are acknowledged only once every sink holds
//! the batch durably (a file closed and renamed into place, stdout flushed).
//!
//! Models swap atomically between batches ([`Pipeline::reload`]); every
//! output row carries the version of the model that scored it in a
//! `model_version` column.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, SendTimeoutError, Sender};
use roo_ingest::{
    BatchLimits, DeadLetter, FileFormat, FileSource, IngestBatch, ReadOptions, TcpSource,
    TcpSourceConfig,
};
use roo_kernels::{load_model, FeatureBinding};
use thiserror::Error;

use crate::device::{Device, Placement};
use crate::generator::{card_schema, CardGenerator};
use crate::metrics::PipelineMetrics;
use crate::models::{BatchScorer, BegunBatch, BoundModel, CompiledModel, ModelCell};
use crate::sink::{DeadLetterSink, FileSink};

/// Where a pipeline's events come from.
#[derive(Clone, Debug)]
pub enum SourceSpec {
    /// A file, read once to its end.
    File { path: PathBuf, format: FileFormat },
    /// A TCP listener; its schema names the record columns.
    Tcp(TcpSourceConfig),
    /// Synthetic card transactions: `rate_per_s` events a second (0: as
    /// fast as the pipeline takes them), `events` in all (0: no end).
    Generator {
        rate_per_s: u64,
        events: u64,
        seed: u64,
    },
    /// Batches pushed by the embedding program ([`Pipeline::pusher`]: Flight
    /// DoPut), each checked against `schema`. Runs until stopped.
    Push { schema: SchemaRef },
}

impl SourceSpec {
    pub fn kind(&self) -> &'static str {
        match self {
            SourceSpec::File { .. } => "file",
            SourceSpec::Tcp(_) => "tcp",
            SourceSpec::Generator { .. } => "generator",
            SourceSpec::Push { .. } => "push",
        }
    }
}

/// Where scored rows go.
#[derive(Clone, Debug)]
pub enum SinkSpec {
    /// Files `DIR/PREFIX-NNNNNN.EXT`, each written whole or not at all,
    /// closed when it holds `rotate_bytes` of Arrow data or has been open
    /// `rotate`.
    Files {
        dir: PathBuf,
        prefix: String,
        format: FileFormat,
        rotate_bytes: u64,
        rotate: Duration,
    },
    /// CSV on standard output (a header, then rows), flushed per batch.
    Stdout,
}

/// Everything a pipeline needs to run.
#[derive(Clone, Debug)]
pub struct PipelineSpec {
    pub name: String,
    pub source: SourceSpec,
    pub limits: BatchLimits,
    pub model: PathBuf,
    pub device: Device,
    pub sinks: Vec<SinkSpec>,
    /// A directory for dead-letter files (NDJSON); `None`: counted and logged only.
    pub dead_letters: Option<PathBuf>,
    /// Batches each channel holds (the memory bound).
    pub queue_batches: usize,
    pub read: ReadOptions,
    /// An Int64 input column holding each event's time (microseconds since
    /// the Unix epoch): the sink stage then records each row's latency from
    /// that time to its write (`event_to_sink`), which counts time spent
    /// before roo read it (a sender's queue, the network).
    pub event_time: Option<String>,
}

#[derive(Debug, Error)]
pub enum PipelineError {
    #[error("pipeline {pipeline}: {message}")]
    Setup { pipeline: String, message: String },
    #[error("pipeline {pipeline}: {message}")]
    Failed { pipeline: String, message: String },
}

/// Batches a channel may hold for a memory budget: two channels per
/// pipeline, each batch `max_rows` rows of `columns` 8-byte values.
pub fn queue_batches_for(
    memory_bytes: u64,
    pipelines: usize,
    max_rows: usize,
    columns: usize,
) -> usize {
    let batch_bytes = (max_rows as u64) * (columns as u64 + 2) * 8;
    let per_queue = memory_bytes / (2 * pipelines.max(1) as u64);
    (per_queue / batch_bytes.max(1)).clamp(1, 64) as usize
}

/// What a spec resolves to before anything starts.
struct Resolved {
    /// The input schema, known before the first event.
    input_schema: SchemaRef,
    /// The opened file, for a file source.
    file: Option<FileSource>,
    /// The model bound to the input schema.
    loaded: BoundModel,
    /// The `event_time` column's index in the input (and output) schema.
    event_time: Option<usize>,
}

fn resolve(spec: &PipelineSpec) -> Result<Resolved, String> {
    let (input_schema, file) = match &spec.source {
        SourceSpec::File { path, format } => {
            let model = load_model(&spec.model).map_err(|e| e.to_string())?;
            let mut source = match format {
                FileFormat::RawF32 => FileSource::open_raw(path, &model.feature_names),
                f => FileSource::open(path, *f),
            }
            .map_err(|e| e.to_string())?
            .with_read_options(spec.read.clone());
            let columns =
                FeatureBinding::feature_columns(&model, &source.schema()).map_err(|e| {
                    format!(
                        "input {} does not fit model {}: {e}",
                        path.display(),
                        spec.model.display()
                    )
                })?;
            source.parse_as_f32(&columns);
            (source.schema(), Some(source))
        }
        SourceSpec::Tcp(c) => (
            c.schema.clone().ok_or("a TCP source needs its columns")?,
            None,
        ),
        SourceSpec::Generator { .. } => (card_schema(), None),
        SourceSpec::Push { schema } => (schema.clone(), None),
    };
    let event_time = event_time_column(spec, &input_schema)?;
    let loaded = BoundModel::bind(
        CompiledModel::load(&spec.model, spec.device)?,
        &input_schema,
    )?;
    Ok(Resolved {
        input_schema,
        file,
        loaded,
        event_time,
    })
}

/// The index of the spec's `event_time` column in `schema` (the output
/// keeps the input's columns first), checked to be Int64.
fn event_time_column(spec: &PipelineSpec, schema: &SchemaRef) -> Result<Option<usize>, String> {
    let Some(name) = &spec.event_time else {
        return Ok(None);
    };
    let index = schema.index_of(name).map_err(|_| {
        format!(
            "event_time = {name:?}: the input has no such column (it has {})",
            schema
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    })?;
    let data_type = schema.field(index).data_type();
    if *data_type != arrow_schema::DataType::Int64 {
        return Err(format!(
            "event_time = {name:?}: the column is {data_type}; expected int64 microseconds since the Unix epoch"
        ));
    }
    Ok(Some(index))
}

/// Checks a spec without starting it: the model loads and fits the input
/// schema, the sinks can be created. Returns the model's version.
pub fn check_spec(spec: &PipelineSpec) -> Result<String, PipelineError> {
    let setup = |message: String| PipelineError::Setup {
        pipeline: spec.name.clone(),
        message,
    };
    let loaded = resolve(spec).map_err(setup)?.loaded;
    Ok(loaded.version().to_string())
}

struct ScoredBatch {
    source: Arc<str>,
    seq: u64,
    offset_end: u64,
    ingest_time: SystemTime,
    batch: Option<RecordBatch>,
    dead_letters: Vec<DeadLetter>,
}

/// A running pipeline.
pub struct Pipeline {
    name: String,
    metrics: Arc<PipelineMetrics>,
    model: ModelCell,
    /// The file a reload reads: the config's, or the last one activated.
    model_path: Mutex<PathBuf>,
    device: Device,
    input_schema: SchemaRef,
    source_kind: &'static str,
    sinks: Vec<SinkSpec>,
    dead_letters: Option<PathBuf>,
    pool: Arc<rayon::ThreadPool>,
    /// A push source's way in; `None` once stopping.
    push: Mutex<Option<Sender<IngestBatch>>>,
    max_rows: usize,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Result<(), String>>>,
    tcp_addr: Option<std::net::SocketAddr>,
    failed: Arc<AtomicBool>,
}

/// What a pipeline did, once stopped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PipelineCounts {
    pub events_in: u64,
    pub events_out: u64,
    pub events_dead: u64,
    pub batches: u64,
    pub batches_gpu: u64,
    /// Batches the GPU failed and the CPU scored again.
    pub batches_cpu_retried: u64,
}

impl Pipeline {
    /// Checks the spec (model loads and fits the input schema) and starts
    /// the stages. Nothing is read until the model is bound.
    pub fn start(spec: PipelineSpec, pool: Arc<rayon::ThreadPool>) -> Result<Self, PipelineError> {
        let setup = |message: String| PipelineError::Setup {
            pipeline: spec.name.clone(),
            message,
        };
        assert!(spec.queue_batches > 0 && spec.limits.max_rows > 0);
        let Resolved {
            input_schema,
            file,
            loaded,
            event_time,
        } = resolve(&spec).map_err(setup)?;
        let loaded = Arc::new(loaded);
        let metrics = Arc::new(PipelineMetrics::default());
        let scorer = &loaded.compiled.scorer;
        metrics
            .cpu_ns_per_row_estimate
            .store(scorer.cpu_ns_per_row() as u64, Ordering::Relaxed);
        tracing::info!(
            "pipeline {}: model {} ({}), {:.0} ns per row on the CPU at load; scoring on {}",
            spec.name,
            spec.model.display(),
            loaded.version(),
            scorer.cpu_ns_per_row(),
            scorer.description()
        );
        let mut sinks = Vec::new();
        for s in &spec.sinks {
            sinks.push(OutputSink::open(s).map_err(setup)?);
        }
        let dead = match &spec.dead_letters {
            Some(dir) => Some(DeadLetterFiles::open(dir).map_err(setup)?),
            None => None,
        };

        let model = Arc::new(RwLock::new(loaded));
        let stop = Arc::new(AtomicBool::new(false));
        let (ingest_tx, ingest_rx) = bounded::<IngestBatch>(spec.queue_batches);
        let (scored_tx, scored_rx) = bounded::<ScoredBatch>(spec.queue_batches);
        let mut threads = Vec::new();
        let failed = Arc::new(AtomicBool::new(false));
        let spawn = |name: String, f: Box<dyn FnOnce() -> Result<(), String> + Send>| {
            let failed = failed.clone();
            std::thread::Builder::new()
                .name(name)
                .spawn(move || {
                    let result = f();
                    if let Err(e) = &result {
                        tracing::error!("{e}");
                        failed.store(true, Ordering::Release);
                    }
                    result
                })
                .map_err(|e| setup(e.to_string()))
        };

        let sink_metrics = metrics.clone();
        threads.push(spawn(
            format!("roo-sink-{}", spec.name),
            Box::new(move || run_sinks(scored_rx, sinks, dead, event_time, &sink_metrics)),
        )?);

        let score_metrics = metrics.clone();
        let score_model = model.clone();
        let score_pool = pool.clone();
        threads.push(spawn(
            format!("roo-score-{}", spec.name),
            Box::new(move || {
                run_scorer(
                    ingest_rx,
                    scored_tx,
                    &score_model,
                    &score_pool,
                    &score_metrics,
                );
                Ok(())
            }),
        )?);

        let mut tcp_addr = None;
        let mut push = None;
        let source_metrics = metrics.clone();
        let source_stop = stop.clone();
        match spec.source.clone() {
            SourceSpec::File { .. } => {
                let source = file.expect("opened above");
                let max_rows = spec.limits.max_rows;
                threads.push(spawn(
                    format!("roo-src-{}", spec.name),
                    Box::new(move || {
                        let batches = source.batches(max_rows).map_err(|e| e.to_string())?;
                        for b in batches {
                            let b = b.map_err(|e| e.to_string())?;
                            PipelineMetrics::add(&source_metrics.events_in, b.records() as u64);
                            if source_stop.load(Ordering::Acquire) || ingest_tx.send(b).is_err() {
                                break;
                            }
                        }
                        Ok(())
                    }),
                )?);
            }
            SourceSpec::Generator {
                rate_per_s,
                events,
                seed,
            } => {
                let limits = spec.limits;
                threads.push(spawn(
                    format!("roo-src-{}", spec.name),
                    Box::new(move || {
                        run_generator(
                            rate_per_s,
                            events,
                            seed,
                            limits,
                            &source_stop,
                            &ingest_tx,
                            &source_metrics,
                        );
                        Ok(())
                    }),
                )?);
            }
            SourceSpec::Tcp(config) => {
                let tx = ingest_tx.clone();
                let m = source_metrics.clone();
                let tcp = TcpSource::start(
                    config,
                    Box::new(move |b: IngestBatch| {
                        PipelineMetrics::add(&m.events_in, b.records() as u64);
                        tx.send(b).is_ok()
                    }),
                )
                .map_err(|e| setup(e.to_string()))?;
                tcp_addr = Some(tcp.local_addr());
                tracing::info!(
                    "pipeline {}: listening on tcp://{}",
                    spec.name,
                    tcp.local_addr()
                );
                threads.push(spawn(
                    format!("roo-src-{}", spec.name),
                    Box::new(move || {
                        while !source_stop.load(Ordering::Acquire) {
                            std::thread::sleep(Duration::from_millis(10));
                        }
                        let report = tcp.stop().map_err(|e| e.to_string())?;
                        tracing::info!("tcp source stopped: {report:?}");
                        drop(ingest_tx);
                        Ok(())
                    }),
                )?);
            }
            SourceSpec::Push { .. } => {
                // The pipeline holds the sender; pushers hold clones for
                // the length of their stream. `stop` drops the original.
                push = Some(ingest_tx);
            }
        }
        Ok(Self {
            device: spec.device,
            name: spec.name,
            metrics,
            model,
            model_path: Mutex::new(spec.model),
            input_schema,
            source_kind: spec.source.kind(),
            sinks: spec.sinks,
            dead_letters: spec.dead_letters,
            pool,
            push: Mutex::new(push),
            max_rows: spec.limits.max_rows,
            stop,
            threads,
            tcp_addr,
            failed,
        })
    }

    /// A stage failed (a sink could not write, a file could not be read);
    /// the pipeline has stopped or is stopping. `join` says why.
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn metrics(&self) -> &Arc<PipelineMetrics> {
        &self.metrics
    }

    /// The bound address of a TCP source.
    pub fn tcp_addr(&self) -> Option<std::net::SocketAddr> {
        self.tcp_addr
    }

    /// The version of the model scoring now.
    pub fn model_version(&self) -> String {
        self.model().version().to_string()
    }

    /// The model scoring now, bound to the pipeline's input.
    pub fn model(&self) -> Arc<BoundModel> {
        self.model.read().expect("not poisoned").clone()
    }

    /// The file a reload reads.
    pub fn model_path(&self) -> PathBuf {
        self.model_path.lock().expect("not poisoned").clone()
    }

    pub fn input_schema(&self) -> &SchemaRef {
        &self.input_schema
    }

    /// What the sinks receive: the input, the scores, `model_version`.
    pub fn output_schema(&self) -> SchemaRef {
        self.model().output_schema().clone()
    }

    /// "file", "tcp", "generator" or "push".
    pub fn source_kind(&self) -> &'static str {
        self.source_kind
    }

    pub fn sinks(&self) -> &[SinkSpec] {
        &self.sinks
    }

    pub fn dead_letters_dir(&self) -> Option<&Path> {
        self.dead_letters.as_deref()
    }

    /// A scorer with this pipeline's model for batches of any schema that
    /// holds its features (a client's exchange): a hot swap applies from
    /// its next batch. Its rows do not go to the pipeline's sinks.
    pub fn scorer(&self) -> BatchScorer {
        BatchScorer::of_pipeline(self.model.clone(), self.pool.clone())
    }

    /// Loads the model file again and swaps it in between two batches. A
    /// model that fails to load or to fit the input is refused and the
    /// current one keeps scoring.
    pub fn reload(&self) -> Result<String, PipelineError> {
        let path = self.model_path();
        let loaded = CompiledModel::load(&path, self.device)
            .and_then(|c| BoundModel::bind(c, &self.input_schema));
        self.swap(loaded)
    }

    /// Swaps in `model` (from `path`, which later reloads read) between two
    /// batches; refused, with the current model scoring on, when it does
    /// not fit the input.
    pub fn activate(
        &self,
        model: Arc<CompiledModel>,
        path: &Path,
    ) -> Result<String, PipelineError> {
        // An uploaded model was compiled for the store's device: recompiled
        // here when this pipeline scores on another.
        let version = self.swap(
            model
                .for_device(self.device)
                .and_then(|m| BoundModel::bind(m, &self.input_schema)),
        )?;
        *self.model_path.lock().expect("not poisoned") = path.to_path_buf();
        Ok(version)
    }

    fn swap(&self, loaded: Result<BoundModel, String>) -> Result<String, PipelineError> {
        match loaded {
            Ok(loaded) => {
                let version = loaded.version().to_string();
                *self.model.write().expect("not poisoned") = Arc::new(loaded);
                PipelineMetrics::add(&self.metrics.model_reloads, 1);
                Ok(version)
            }
            Err(message) => {
                PipelineMetrics::add(&self.metrics.model_reload_failures, 1);
                Err(PipelineError::Failed {
                    pipeline: self.name.clone(),
                    message,
                })
            }
        }
    }

    /// A way to push batches into a pipeline whose source is `Push`; one
    /// per client stream, named `source` (its batches are numbered and
    /// their offsets are row counts).
    pub fn pusher(&self, source: &str) -> Result<Pusher, PipelineError> {
        let tx = self.push.lock().expect("not poisoned").clone();
        let refuse = |message: String| PipelineError::Failed {
            pipeline: self.name.clone(),
            message,
        };
        if self.source_kind != "push" {
            return Err(refuse(format!(
                "its source is a {}; batches can be pushed only into a pipeline whose source is kind = \"flight\"",
                self.source_kind
            )));
        }
        let tx = tx.ok_or_else(|| refuse("it is stopping".into()))?;
        Ok(Pusher {
            tx,
            max_rows: self.max_rows,
            schema: self.input_schema.clone(),
            source: Arc::from(source),
            seq: 0,
            rows: 0,
            stop: self.stop.clone(),
            metrics: self.metrics.clone(),
        })
    }

    /// Asks the source to stop reading; the stages drain behind it.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.push.lock().expect("not poisoned").take();
    }

    /// Every stage has exited (the source ended, or stop, and the queues drained).
    pub fn finished(&self) -> bool {
        self.threads.iter().all(|t| t.is_finished())
    }

    /// Waits for the stages to drain and exit.
    pub fn join(self) -> Result<PipelineCounts, PipelineError> {
        let mut failure = None;
        for t in self.threads {
            match t.join() {
                Ok(Ok(())) => {}
                Ok(Err(message)) => failure = failure.or(Some(message)),
                Err(_) => failure = failure.or(Some("a stage panicked".to_string())),
            }
        }
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let counts = PipelineCounts {
            events_in: get(&self.metrics.events_in),
            events_out: get(&self.metrics.events_out),
            events_dead: get(&self.metrics.events_dead),
            batches: get(&self.metrics.batches),
            batches_gpu: get(&self.metrics.batches_gpu),
            batches_cpu_retried: get(&self.metrics.batches_cpu_retried),
        };
        match failure {
            Some(message) => Err(PipelineError::Failed {
                pipeline: self.name,
                message,
            }),
            None => Ok(counts),
        }
    }
}

fn run_generator(
    rate_per_s: u64,
    events: u64,
    seed: u64,
    limits: BatchLimits,
    stop: &AtomicBool,
    tx: &Sender<IngestBatch>,
    metrics: &PipelineMetrics,
) {
    let mut generator = CardGenerator::new(seed);
    let source: Arc<str> = Arc::from("generator");
    let started = Instant::now();
    let mut produced = 0u64;
    let mut seq = 0;
    // At a set rate, a batch is what arrives in one linger period.
    let per_batch = if rate_per_s == 0 {
        limits.max_rows as u64
    } else {
        ((rate_per_s as f64 * limits.linger.as_secs_f64()).ceil() as u64)
            .clamp(1, limits.max_rows as u64)
    };
    while !stop.load(Ordering::Acquire) && (events == 0 || produced < events) {
        let rows = if events == 0 {
            per_batch
        } else {
            per_batch.min(events - produced)
        };
        if rate_per_s > 0 {
            let due =
                started + Duration::from_secs_f64((produced + rows) as f64 / rate_per_s as f64);
            let now = Instant::now();
            if due > now {
                std::thread::sleep((due - now).min(Duration::from_millis(50)));
                if Instant::now() < due {
                    continue;
                }
            }
        }
        let batch = generator.batch(rows as usize);
        let b = IngestBatch {
            source: source.clone(),
            seq,
            offsets: produced..produced + rows,
            ingest_time: SystemTime::now(),
            batch,
            dead_letters: Vec::new(),
        };
        seq += 1;
        produced += rows;
        PipelineMetrics::add(&metrics.events_in, rows);
        if tx.send(b).is_err() {
            return;
        }
    }
}

/// Why a push was refused.
#[derive(Debug, Error)]
pub enum PushError {
    /// The batch does not match the pipeline's input; nothing was queued.
    #[error("{0}")]
    Schema(String),
    /// The pipeline is stopping (or failed): it takes no more batches.
    /// `accepted` rows of this stream were queued (part of the batch that
    /// was refused may be among them: the client resends from there).
    #[error("the pipeline is stopping; {accepted} rows of this stream were accepted")]
    Stopping { accepted: u64 },
}

/// One client stream into a push pipeline. Dropping it ends the stream.
pub struct Pusher {
    tx: Sender<IngestBatch>,
    /// Pushed batches are queued in slices of at most this many rows, so
    /// the queue's bound (sized for `max_rows` batches) holds.
    max_rows: usize,
    schema: SchemaRef,
    source: Arc<str>,
    seq: u64,
    rows: u64,
    stop: Arc<AtomicBool>,
    metrics: Arc<PipelineMetrics>,
}

impl Pusher {
    /// Queues `batch` for scoring, in slices of at most `max_rows` rows;
    /// blocks while the pipeline's queue is full (backpressure on the
    /// client). Returns the rows accepted so far on this stream; a
    /// `Stopping` error says the same (some slices of this batch may have
    /// been queued before it).
    pub fn push(&mut self, batch: RecordBatch) -> Result<u64, PushError> {
        check_push_schema(&self.schema, &batch.schema()).map_err(PushError::Schema)?;
        if self.stop.load(Ordering::Acquire) {
            return Err(self.stopping());
        }
        let total = batch.num_rows();
        let mut at = 0;
        while at < total {
            let rows = self.max_rows.min(total - at);
            self.queue(batch.slice(at, rows))?;
            at += rows;
        }
        Ok(self.rows)
    }

    fn queue(&mut self, batch: RecordBatch) -> Result<(), PushError> {
        let rows = batch.num_rows() as u64;
        let mut b = IngestBatch {
            source: self.source.clone(),
            seq: self.seq,
            offsets: self.rows..self.rows + rows,
            ingest_time: SystemTime::now(),
            batch,
            dead_letters: Vec::new(),
        };
        loop {
            if self.stop.load(Ordering::Acquire) {
                return Err(self.stopping());
            }
            match self.tx.send_timeout(b, Duration::from_millis(50)) {
                Ok(()) => break,
                Err(SendTimeoutError::Timeout(back)) => b = back,
                Err(SendTimeoutError::Disconnected(_)) => return Err(self.stopping()),
            }
        }
        self.seq += 1;
        self.rows += rows;
        PipelineMetrics::add(&self.metrics.events_in, rows);
        Ok(())
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn stopping(&self) -> PushError {
        PushError::Stopping {
            accepted: self.rows,
        }
    }
}

/// A pushed batch must have the pipeline's columns, in order, with their
/// types; a nullable column may receive a batch that declares it
/// non-nullable, not the other way.
pub fn check_push_schema(expected: &SchemaRef, got: &SchemaRef) -> Result<(), String> {
    let names = |s: &SchemaRef| {
        s.fields()
            .iter()
            .map(|f| format!("{}: {}", f.name(), f.data_type()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let fits = expected.fields().len() == got.fields().len()
        && expected.fields().iter().zip(got.fields()).all(|(e, g)| {
            e.name() == g.name()
                && e.data_type() == g.data_type()
                && (e.is_nullable() || !g.is_nullable())
        });
    if fits {
        Ok(())
    } else {
        Err(format!(
            "the batch's columns are [{}]; the pipeline takes [{}]",
            names(got),
            names(expected)
        ))
    }
}

fn run_scorer(
    rx: Receiver<IngestBatch>,
    tx: Sender<ScoredBatch>,
    model: &RwLock<Arc<BoundModel>>,
    pool: &rayon::ThreadPool,
    metrics: &PipelineMetrics,
) {
    // A batch still on the GPU: the next one is begun (its upload overlaps
    // this one's compute) before this one is finished and sent, so two
    // batches are in flight and order is kept. Held only while another
    // batch is already waiting: an idle stream never waits on it.
    let mut held: Option<Started> = None;
    loop {
        let next = if held.is_some() {
            rx.try_recv().ok()
        } else {
            match rx.recv() {
                Ok(b) => Some(b),
                Err(_) => return,
            }
        };
        let Some(b) = next else {
            if let Some(h) = held.take() {
                if !send_scored(h, &tx, pool, metrics) {
                    return;
                }
            }
            continue;
        };
        let started = start_scoring(b, &rx, model, pool, metrics);
        if let Some(h) = held.take() {
            if !send_scored(h, &tx, pool, metrics) {
                return;
            }
        }
        if started.is_pending() {
            held = Some(started);
        } else if !send_scored(started, &tx, pool, metrics) {
            return;
        }
    }
}

/// A batch the score stage has begun: scored, failed, or on the GPU.
struct Started {
    batch: IngestBatch,
    loaded: Arc<BoundModel>,
    scoring: Option<Result<BegunBatch, String>>,
    began: Instant,
}

impl Started {
    fn is_pending(&self) -> bool {
        matches!(&self.scoring, Some(Ok(b)) if b.is_pending())
    }
}

fn start_scoring(
    b: IngestBatch,
    rx: &Receiver<IngestBatch>,
    model: &RwLock<Arc<BoundModel>>,
    pool: &rayon::ThreadPool,
    metrics: &PipelineMetrics,
) -> Started {
    metrics
        .queue_ingested
        .store(rx.len() as u64, Ordering::Relaxed);
    let waited = SystemTime::now()
        .duration_since(b.ingest_time)
        .unwrap_or_default();
    metrics
        .wait_us
        .record(waited.as_micros() as u64, b.batch.num_rows() as u64);
    // The model for this whole batch: a swap lands between batches.
    let loaded = model.read().expect("not poisoned").clone();
    let began = Instant::now();
    let scoring = (b.batch.num_rows() > 0).then(|| loaded.begin(&b.batch, pool));
    Started {
        batch: b,
        loaded,
        scoring,
        began,
    }
}

/// Finishes a begun batch and sends it to the sinks; false when the sink
/// stage has gone.
fn send_scored(
    started: Started,
    tx: &Sender<ScoredBatch>,
    pool: &rayon::ThreadPool,
    metrics: &PipelineMetrics,
) -> bool {
    let Started {
        batch: b,
        loaded,
        scoring,
        began,
    } = started;
    let rows = b.batch.num_rows();
    let mut dead_letters = b.dead_letters;
    let batch = scoring.and_then(|scoring| {
        let scored = scoring.and_then(|begun| loaded.finish(begun, pool));
        let elapsed = began.elapsed();
        metrics.cpu_ns_per_row_estimate.store(
            loaded.compiled.scorer.cpu_ns_per_row() as u64,
            Ordering::Relaxed,
        );
        metrics.score_us.record(
            (elapsed.as_micros() as u64 / rows as u64).max(1),
            rows as u64,
        );
        match scored {
            Ok((batch, placement)) => {
                match placement {
                    Placement::Cpu => PipelineMetrics::add(&metrics.batches_cpu, 1),
                    Placement::Gpu => PipelineMetrics::add(&metrics.batches_gpu, 1),
                    Placement::CpuRetry(_) => {
                        PipelineMetrics::add(&metrics.batches_cpu, 1);
                        PipelineMetrics::add(&metrics.batches_cpu_retried, 1);
                    }
                }
                Some(batch)
            }
            Err(reason) => {
                // A batch that cannot be scored is data, not a crash.
                dead_letters.push(DeadLetter {
                    source: b.source.clone(),
                    offset: b.offsets.start,
                    line: None,
                    raw: Vec::new(),
                    raw_len: 0,
                    reason: format!("a batch of {rows} rows could not be scored: {reason}"),
                });
                None
            }
        }
    });
    PipelineMetrics::add(&metrics.batches, 1);
    let out = ScoredBatch {
        source: b.source,
        seq: b.seq,
        offset_end: b.offsets.end,
        ingest_time: b.ingest_time,
        batch,
        dead_letters,
    };
    if tx.send(out).is_err() {
        return false;
    }
    metrics
        .queue_scored
        .store(tx.len() as u64, Ordering::Relaxed);
    true
}

/// Rotating files or stdout. Batches are numbered 1, 2, … in the order the
/// sink stage takes them; a sink reports the highest number it holds
/// durably, and offsets are acknowledged up to the lowest over all sinks.
enum OutputSink {
    Files(Box<RotatingFiles>),
    Stdout {
        writer: Option<Box<arrow_csv::Writer<std::io::Stdout>>>,
        written: u64,
    },
}

impl OutputSink {
    fn open(spec: &SinkSpec) -> Result<Self, String> {
        Ok(match spec {
            SinkSpec::Files {
                dir,
                prefix,
                format,
                rotate_bytes,
                rotate,
            } => {
                std::fs::create_dir_all(dir)
                    .map_err(|e| format!("creating {}: {e}", dir.display()))?;
                if !matches!(
                    format,
                    FileFormat::Parquet | FileFormat::ArrowIpc | FileFormat::Csv
                ) {
                    return Err(format!(
                        "a file sink writes parquet, arrow or csv, not {format:?}"
                    ));
                }
                let extension = format.extension();
                let next_index = next_free_index(dir, prefix, extension);
                OutputSink::Files(Box::new(RotatingFiles::new(
                    dir.clone(),
                    prefix.clone(),
                    extension,
                    *format,
                    *rotate_bytes,
                    *rotate,
                    next_index,
                )?))
            }
            SinkSpec::Stdout => OutputSink::Stdout {
                writer: None,
                written: 0,
            },
        })
    }

    fn write(&mut self, batch: &RecordBatch, number: u64) -> Result<(), String> {
        match self {
            OutputSink::Files(f) => f.write(batch, number),
            OutputSink::Stdout { writer, written } => {
                use std::io::Write;
                let w = writer.get_or_insert_with(|| {
                    Box::new(
                        arrow_csv::WriterBuilder::new()
                            .with_header(true)
                            .build(std::io::stdout()),
                    )
                });
                w.write(batch).map_err(|e| format!("writing stdout: {e}"))?;
                std::io::stdout()
                    .flush()
                    .map_err(|e| format!("writing stdout: {e}"))?;
                *written = number;
                Ok(())
            }
        }
    }

    fn tick(&mut self) -> Result<(), String> {
        match self {
            OutputSink::Files(f) => f.tick(),
            OutputSink::Stdout { .. } => Ok(()),
        }
    }

    /// The highest batch number this sink holds durably.
    fn durable_through(&mut self) -> Result<u64, String> {
        match self {
            OutputSink::Files(f) => f.durable_through(),
            OutputSink::Stdout { written, .. } => Ok(*written),
        }
    }

    fn close(&mut self) -> Result<(), String> {
        match self {
            OutputSink::Files(f) => f.close(),
            OutputSink::Stdout { .. } => Ok(()),
        }
    }
}

/// The first index after every `PREFIX-NNNNNN.EXT` already in `dir`, so a
/// restart never overwrites a finished file.
fn next_free_index(dir: &Path, prefix: &str, extension: &str) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let rest = name.strip_prefix(prefix)?.strip_prefix('-')?;
            let digits = rest.strip_suffix(extension)?.strip_suffix('.')?;
            digits.parse::<u64>().ok()
        })
        .max()
        .map_or(0, |i| i + 1)
}

struct OpenFile {
    sink: FileSink,
    opened: Instant,
    bytes: u64,
    schema: SchemaRef,
    last_batch: u64,
}

/// Files closed at a bound of that many are queued for their closer thread
/// at most; past it the sink waits (fsync is the bottleneck then).
const CLOSES_IN_FLIGHT_MAX: usize = 2;

/// Files `DIR/PREFIX-NNNNNN.EXT`. Closing a file (flush, fsync, rename)
/// runs on a closer thread so the sink keeps writing the next file; the
/// batches of a file become durable when its close completes.
struct RotatingFiles {
    dir: PathBuf,
    prefix: String,
    extension: &'static str,
    format: FileFormat,
    rotate_bytes: u64,
    rotate: Duration,
    current: Option<OpenFile>,
    next_index: u64,
    to_closer: Option<Sender<(FileSink, u64)>>,
    closed: Receiver<Result<u64, String>>,
    closer: Option<JoinHandle<()>>,
    closes_in_flight: usize,
    written: u64,
    durable: u64,
}

impl RotatingFiles {
    fn new(
        dir: PathBuf,
        prefix: String,
        extension: &'static str,
        format: FileFormat,
        rotate_bytes: u64,
        rotate: Duration,
        next_index: u64,
    ) -> Result<Self, String> {
        let (to_closer, closing) = bounded::<(FileSink, u64)>(CLOSES_IN_FLIGHT_MAX);
        let (report, closed) = bounded::<Result<u64, String>>(CLOSES_IN_FLIGHT_MAX + 1);
        let closer = std::thread::Builder::new()
            .name("roo-close".into())
            .spawn(move || {
                for (sink, last_batch) in closing.iter() {
                    let result = sink.finish().map(|_| last_batch).map_err(|e| e.to_string());
                    if report.send(result).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| e.to_string())?;
        Ok(Self {
            dir,
            prefix,
            extension,
            format,
            rotate_bytes,
            rotate,
            current: None,
            next_index,
            to_closer: Some(to_closer),
            closed,
            closer: Some(closer),
            closes_in_flight: 0,
            written: 0,
            durable: 0,
        })
    }

    fn write(&mut self, batch: &RecordBatch, number: u64) -> Result<(), String> {
        if self
            .current
            .as_ref()
            .is_some_and(|c| c.schema != batch.schema())
        {
            // A model with other outputs or another version: a new file,
            // so each file names one model.
            self.close_current()?;
        }
        if self.current.is_none() {
            let path = self.dir.join(format!(
                "{}-{:06}.{}",
                self.prefix, self.next_index, self.extension
            ));
            self.next_index += 1;
            let sink =
                FileSink::create(&path, self.format, batch.schema()).map_err(|e| e.to_string())?;
            self.current = Some(OpenFile {
                sink,
                opened: Instant::now(),
                bytes: 0,
                schema: batch.schema(),
                last_batch: 0,
            });
        }
        let current = self.current.as_mut().expect("opened");
        current.sink.write(batch).map_err(|e| e.to_string())?;
        current.bytes += batch.get_array_memory_size() as u64;
        current.last_batch = number;
        self.written = number;
        if current.bytes >= self.rotate_bytes || current.opened.elapsed() >= self.rotate {
            self.close_current()?;
        }
        Ok(())
    }

    fn tick(&mut self) -> Result<(), String> {
        if self
            .current
            .as_ref()
            .is_some_and(|c| c.opened.elapsed() >= self.rotate)
        {
            self.close_current()?;
        }
        Ok(())
    }

    fn close_current(&mut self) -> Result<(), String> {
        if let Some(c) = self.current.take() {
            let to_closer = self.to_closer.as_ref().expect("open until close");
            to_closer
                .send((c.sink, c.last_batch))
                .map_err(|_| "the file closer stopped".to_string())?;
            self.closes_in_flight += 1;
        }
        Ok(())
    }

    fn durable_through(&mut self) -> Result<u64, String> {
        while let Ok(result) = self.closed.try_recv() {
            self.durable = self.durable.max(result?);
            self.closes_in_flight -= 1;
        }
        if self.current.is_none() && self.closes_in_flight == 0 {
            self.durable = self.written;
        }
        Ok(self.durable)
    }

    /// Closes the open file and waits for every close to finish.
    fn close(&mut self) -> Result<(), String> {
        self.close_current()?;
        self.to_closer = None;
        if let Some(t) = self.closer.take() {
            let _ = t.join();
        }
        self.durable_through().map(drop)
    }
}

/// Dead letters in `DIR/dead-NNNNNN.ndjson`, a new file per flush period.
struct DeadLetterFiles {
    dir: PathBuf,
    current: Option<DeadLetterSink>,
    next_index: u64,
}

impl DeadLetterFiles {
    fn open(dir: &Path) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            current: None,
            next_index: next_free_index(dir, "dead", "ndjson"),
        })
    }

    fn write(&mut self, letters: &[DeadLetter]) -> Result<(), String> {
        if letters.is_empty() {
            return Ok(());
        }
        if self.current.is_none() {
            let path = self.dir.join(format!("dead-{:06}.ndjson", self.next_index));
            self.next_index += 1;
            self.current = Some(DeadLetterSink::new(path));
        }
        self.current
            .as_mut()
            .expect("opened")
            .write(letters)
            .map_err(|e| e.to_string())
    }

    fn close(&mut self) -> Result<(), String> {
        if let Some(c) = self.current.take() {
            c.finish().map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// Sources whose batch order the sink stage tracks at once (one per TCP
/// connection); past it the table starts over.
const SOURCES_ORDER_CHECKED_MAX: usize = 4096;

/// How often an idle sink stage checks its files' age.
const SINK_TICK: Duration = Duration::from_millis(200);

fn run_sinks(
    rx: Receiver<ScoredBatch>,
    mut sinks: Vec<OutputSink>,
    mut dead: Option<DeadLetterFiles>,
    event_time: Option<usize>,
    metrics: &PipelineMetrics,
) -> Result<(), String> {
    // (batch number, source offset it ends at), written but not yet
    // durable in every sink, oldest first.
    let mut pending: std::collections::VecDeque<(u64, u64)> = std::collections::VecDeque::new();
    let mut number = 0u64;
    let mut last_seq: std::collections::HashMap<Arc<str>, u64> = std::collections::HashMap::new();
    let ack = |pending: &mut std::collections::VecDeque<(u64, u64)>,
               sinks: &mut Vec<OutputSink>,
               dead: &mut Option<DeadLetterFiles>,
               number: u64|
     -> Result<(), String> {
        let mut through = number;
        for s in sinks.iter_mut() {
            through = through.min(s.durable_through()?);
        }
        let mut acked = None;
        while pending.front().is_some_and(|(n, _)| *n <= through) {
            acked = pending.pop_front().map(|(_, offset)| offset);
        }
        if let Some(offset) = acked {
            if let Some(d) = dead {
                d.close()?;
            }
            metrics.acked_offset.store(offset, Ordering::Relaxed);
            PipelineMetrics::add(&metrics.acks, 1);
        }
        Ok(())
    };
    loop {
        let b = match rx.recv_timeout(SINK_TICK) {
            Ok(b) => b,
            Err(RecvTimeoutError::Timeout) => {
                for s in &mut sinks {
                    s.tick()?;
                }
                ack(&mut pending, &mut sinks, &mut dead, number)?;
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let started = Instant::now();
        number += 1;
        let rows = b.batch.as_ref().map_or(0, RecordBatch::num_rows) as u64;
        if let Some(batch) = &b.batch {
            for s in &mut sinks {
                s.write(batch, number)?;
            }
        }
        if let Some(d) = &mut dead {
            d.write(&b.dead_letters)?;
        }
        for letter in b.dead_letters.iter().take(3) {
            tracing::debug!("dead letter: {letter}");
        }
        // Per-source order holds by construction (one scorer, FIFO
        // channels); check it, since acks depend on it.
        if last_seq.len() >= SOURCES_ORDER_CHECKED_MAX && !last_seq.contains_key(&b.source) {
            // Connections come and go: forget the ended ones rather than grow.
            last_seq.clear();
        }
        let last = last_seq.entry(b.source.clone()).or_insert(b.seq);
        if b.seq < *last {
            return Err(format!(
                "{}: batch {} after batch {}",
                b.source, b.seq, last
            ));
        }
        *last = b.seq;
        pending.push_back((number, b.offset_end));
        PipelineMetrics::add(&metrics.events_out, rows);
        PipelineMetrics::add(&metrics.events_dead, b.dead_letters.len() as u64);
        metrics
            .sink_us
            .record(started.elapsed().as_micros() as u64, 1);
        let latency = SystemTime::now()
            .duration_since(b.ingest_time)
            .unwrap_or_default();
        metrics
            .end_to_end_us
            .record(latency.as_micros() as u64, rows.max(1));
        metrics
            .recent_end_to_end_us
            .record(latency.as_micros() as u64, rows.max(1));
        if let (Some(c), Some(batch)) = (event_time, &b.batch) {
            record_event_latency(batch, c, &metrics.event_to_sink_us);
        }
        ack(&mut pending, &mut sinks, &mut dead, number)?;
    }
    for s in &mut sinks {
        s.close()?;
    }
    ack(&mut pending, &mut sinks, &mut dead, number)?;
    if let Some(d) = &mut dead {
        d.close()?;
    }
    Ok(())
}

/// Records each row's latency from its event time (column `c`, Int64
/// microseconds since the Unix epoch) to now; a null or a time in the
/// future counts as 0.
fn record_event_latency(batch: &RecordBatch, c: usize, histogram: &crate::metrics::Latency) {
    let Some(times) = batch
        .column(c)
        .as_any()
        .downcast_ref::<arrow_array::Int64Array>()
    else {
        return;
    };
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as i64;
    histogram.record_all(
        times
            .iter()
            .map(|t| t.map_or(0, |t| now.saturating_sub(t).max(0) as u64)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::Float32Array;

    #[test]
    fn pushed_batches_are_checked_sliced_to_max_rows_and_scored() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("linear.json");
        std::fs::write(
            &model,
            r#"{"kind": "linear", "features": ["a", "b"], "weights": [1.0, 2.0], "bias": 0.5}"#,
        )
        .unwrap();
        let schema: SchemaRef = Arc::new(arrow_schema::Schema::new(vec![
            arrow_schema::Field::new("a", arrow_schema::DataType::Float32, true),
            arrow_schema::Field::new("b", arrow_schema::DataType::Float32, true),
        ]));
        let out = dir.path().join("out");
        let spec = PipelineSpec {
            name: "push".into(),
            source: SourceSpec::Push {
                schema: schema.clone(),
            },
            limits: BatchLimits {
                max_rows: 100,
                ..BatchLimits::default()
            },
            model,
            device: Device::Cpu,
            sinks: vec![SinkSpec::Files {
                dir: out.clone(),
                prefix: "part".into(),
                format: FileFormat::ArrowIpc,
                rotate_bytes: 1 << 30,
                rotate: Duration::from_secs(3600),
            }],
            dead_letters: None,
            queue_batches: 2,
            read: ReadOptions::default(),
            event_time: None,
        };
        let pool = Arc::new(
            rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .build()
                .unwrap(),
        );
        let pipeline = Pipeline::start(spec, pool).unwrap();
        let mut pusher = pipeline.pusher("client-1").unwrap();
        let a: Vec<f32> = (0..250).map(|i| i as f32).collect();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Float32Array::from(a.clone())),
                Arc::new(Float32Array::from(vec![1.0f32; 250])),
            ],
        )
        .unwrap();
        assert_eq!(pusher.push(batch).unwrap(), 250);
        let wrong = RecordBatch::try_new(
            Arc::new(arrow_schema::Schema::new(vec![arrow_schema::Field::new(
                "a",
                arrow_schema::DataType::Float64,
                true,
            )])),
            vec![Arc::new(arrow_array::Float64Array::from(vec![1.0]))],
        )
        .unwrap();
        let refused = pusher.push(wrong).unwrap_err().to_string();
        assert!(
            refused.contains("the pipeline takes [a: Float32, b: Float32]"),
            "{refused}"
        );
        pipeline.stop();
        assert!(matches!(
            pusher.push(RecordBatch::new_empty(schema.clone())),
            Err(PushError::Stopping { accepted: 250 })
        ));
        assert!(
            pipeline.pusher("client-2").is_err(),
            "no pushers once stopping"
        );
        drop(pusher);
        let counts = pipeline.join().unwrap();
        assert_eq!((counts.events_in, counts.events_out), (250, 250));
        assert_eq!(counts.batches, 3, "sliced to max_rows");
        let file = std::fs::read_dir(&out)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let reader =
            arrow_ipc::reader::FileReader::try_new(std::fs::File::open(file).unwrap(), None)
                .unwrap();
        let scores: Vec<f32> = reader
            .flat_map(|b| {
                let b = b.unwrap();
                let s = b.column_by_name("score").unwrap().clone();
                s.as_any()
                    .downcast_ref::<Float32Array>()
                    .unwrap()
                    .values()
                    .to_vec()
            })
            .collect();
        let expected: Vec<f32> = a.iter().map(|a| a + 2.0 + 0.5).collect();
        assert_eq!(scores, expected);
    }

    #[test]
    fn queues_are_sized_from_the_memory_budget() {
        // 256 MiB over 2 pipelines × 2 queues, 4096 rows × 33 × 8 bytes a batch.
        assert_eq!(queue_batches_for(256 << 20, 2, 4096, 31), 62);
        assert_eq!(
            queue_batches_for(1 << 20, 1, 65536, 31),
            1,
            "at least one batch"
        );
        assert_eq!(queue_batches_for(1 << 40, 1, 16, 1), 64, "at most 64");
    }

    #[test]
    fn rotating_files_close_on_a_thread_and_report_durability_in_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("part-000007.arrow"), b"older run").unwrap();
        let spec = SinkSpec::Files {
            dir: dir.path().to_path_buf(),
            prefix: "part".into(),
            format: FileFormat::ArrowIpc,
            rotate_bytes: 1,
            rotate: Duration::from_secs(3600),
        };
        let mut sink = OutputSink::open(&spec).unwrap();
        let mut generator = CardGenerator::new(3);
        for n in 1..=3 {
            sink.write(&generator.batch(100), n).unwrap();
        }
        sink.close().unwrap();
        assert_eq!(sink.durable_through().unwrap(), 3);
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        // A restart never overwrites: numbering continues after the last file.
        assert_eq!(
            names,
            [
                "part-000007.arrow",
                "part-000008.arrow",
                "part-000009.arrow",
                "part-000010.arrow"
            ]
        );
        let rows: usize = [
            "part-000008.arrow",
            "part-000009.arrow",
            "part-000010.arrow",
        ]
        .iter()
        .map(|n| {
            arrow_ipc::reader::FileReader::try_new(
                std::fs::File::open(dir.path().join(n)).unwrap(),
                None,
            )
            .unwrap()
            .map(|b| b.unwrap().num_rows())
            .sum::<usize>()
        })
        .sum();
        assert_eq!(rows, 300);
    }

    #[test]
    fn an_open_file_is_not_durable_until_it_closes() {
        let dir = tempfile::tempdir().unwrap();
        let spec = SinkSpec::Files {
            dir: dir.path().to_path_buf(),
            prefix: "p".into(),
            format: FileFormat::Parquet,
            rotate_bytes: u64::MAX,
            rotate: Duration::from_millis(50),
        };
        let mut sink = OutputSink::open(&spec).unwrap();
        sink.write(&CardGenerator::new(1).batch(10), 1).unwrap();
        assert_eq!(sink.durable_through().unwrap(), 0);
        std::thread::sleep(Duration::from_millis(60));
        sink.tick().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while sink.durable_through().unwrap() < 1 {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(dir.path().join("p-000000.parquet").exists());
    }

    #[test]
    fn the_generator_is_deterministic_and_fits_the_card_schema() {
        let a = CardGenerator::new(9).batch(1000);
        let b = CardGenerator::new(9).batch(1000);
        assert_eq!(a, b);
        assert_eq!(a.schema(), card_schema());
        let amount = a.column(1).as_any().downcast_ref::<Float32Array>().unwrap();
        assert!(amount.values().iter().all(|v| *v > 0.0));
    }
}
