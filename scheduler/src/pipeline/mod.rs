//! The pipeline runtime: a source stage, an operator stage running the
//! chain ([`crate::operators`]), a sink stage; each on its own thread,
//! joined by bounded crossbeam channels.
//!
//! Backpressure, not drops: when a sink is slow its channel fills, the
//! operator stage blocks on it, the ingest channel fills, and the source
//! stops reading (a TCP source stops handing receive buffers back, so the
//! kernel's windows close on the senders). Order: one operator stage per
//! pipeline takes batches in order and each sink writes them in order, so
//! per-source order holds at the sinks (and is checked there). Offsets are
//! acknowledged only once every sink holds the batch durably.
//!
//! Models swap atomically between batches ([`Pipeline::reload`]); every
//! output row carries the version of the model that scored it.
//!
//! - `spec.rs`: what a pipeline is made of, resolved and checked.
//! - `source.rs`, `operate.rs`, `deliver.rs`: the three stages.
//! - `push.rs`: the way in for a push source (Flight DoPut).
//! - `resume.rs`: a restart from a checkpoint (state, counts, position).

mod deliver;
mod operate;
mod push;
mod resume;
mod source;
mod spec;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use crossbeam_channel::{bounded, Sender};
use roo_ingest::{AckTarget, IngestBatch, StreamAcks};

pub use push::{check_push_schema, PushError, Pusher, SchemaMismatch};
pub use spec::{
    check_spec, queue_batches_for, GeneratorStream, PipelineSpec, ShadowSpec, SinkSpec, SourceSpec,
    SpecReport,
};
pub(crate) use spec::{open_audit, resolve};

use crate::checkpoint::{self, Checkpointer, Resumable, SourcePosition};
use crate::error::{PipelineError, SetupError, StageError};
use crate::metrics::{MetricsSnapshot, PipelineMetrics};
use crate::models::{BatchScorer, BoundModel, CompiledModel, ModelSlot};
use crate::online::{OnlineLimits, Request, Requests};
use crate::operators::aggregate::LatestWindow;
use crate::operators::enrich::{EnrichError, LiveTable, TableWatcher};
use crate::operators::score::ScoreOperator;
use crate::operators::{Chain, Operator, OperatorKind};
use crate::sinks::{layout, DeadLetterFiles, OutputSink};
use operate::ToSink;
use resume::{now_us, resume, sink_dirs};
pub(crate) use source::StopSignal;

/// A table's name and its reload's outcome: the new version, or why not.
pub type TableReload = (String, Result<Arc<str>, EnrichError>);

/// A stage thread and its name.
type Stage = (&'static str, JoinHandle<Result<(), StageError>>);

/// A running pipeline.
pub struct Pipeline {
    name: String,
    metrics: Arc<PipelineMetrics>,
    /// The pipeline's model (the decision), if it has one.
    model: Option<Arc<ModelSlot>>,
    /// Shadows, by name.
    shadows: Vec<(String, Arc<ModelSlot>)>,
    input_schema: SchemaRef,
    /// What the model reads when features or tables come before it.
    model_input: Option<SchemaRef>,
    /// The aggregate ending the chain: its rows' schema and latest window.
    aggregate: Option<(SchemaRef, Arc<LatestWindow>)>,
    /// The tables joined (`[[pipeline.enrich]]`), in chain order.
    tables: Vec<Arc<LiveTable>>,
    /// Reloads tables whose file changed; stopped by `join`.
    watcher: Mutex<Option<TableWatcher>>,
    source_kind: &'static str,
    offset_unit: &'static str,
    operators: Vec<(OperatorKind, String)>,
    sinks: Vec<SinkSpec>,
    dead_letters: Option<PathBuf>,
    /// The audit log's directory, when the pipeline keeps one.
    audit: Option<PathBuf>,
    pool: Arc<rayon::ThreadPool>,
    /// A push source's way in; `None` once stopping.
    push: Mutex<Option<Sender<IngestBatch>>>,
    /// A push source's client streams' acks (`rows_durable`).
    push_acks: Option<Arc<StreamAcks>>,
    /// Online requests' way in; `None` without `online`, or once stopping.
    requests: Mutex<Option<Requests>>,
    /// The input column holding event times, if any.
    event_time: Option<String>,
    max_rows: usize,
    stop: Arc<StopSignal>,
    /// The stage threads; taken by `join`.
    threads: Mutex<Vec<Stage>>,
    tcp_addr: Option<SocketAddr>,
    failed: Arc<AtomicBool>,
}

/// What a pipeline did, once stopped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PipelineCounts {
    pub events_in: u64,
    pub events_out: u64,
    pub events_dead: u64,
    /// Events an aggregate counted (its result rows are not events).
    pub events_aggregated: u64,
    pub batches: u64,
    pub batches_gpu: u64,
    /// Batches the GPU failed and the CPU scored again.
    pub batches_cpu_retried: u64,
}

impl Pipeline {
    /// Resolves the spec (every model loaded and compiled once, bound to
    /// the schema it will see; the source opened) and starts the stages.
    pub fn start(spec: PipelineSpec, pool: Arc<rayon::ThreadPool>) -> Result<Self, PipelineError> {
        let setup = |source: SetupError| PipelineError::Setup {
            pipeline: spec.name.clone(),
            source: Box::new(source),
        };
        assert!(spec.queue_batches > 0 && spec.limits.max_rows > 0);
        let metrics = Arc::new(PipelineMetrics::default());
        // A restart completes the last checkpoint on disk before any sink
        // opens (its files published, later ones removed).
        let recovered = match &spec.checkpoint {
            Some(c) => checkpoint::recover(&spec.name, c, &sink_dirs(&spec.sinks))
                .map_err(|e| setup(e.into()))?,
            None => None,
        };
        // Acks to the source's senders: a TCP source's when configured, a
        // push source's always; named streams' counts from the checkpoint.
        let push_acks = matches!(spec.source, SourceSpec::Push { .. }).then(StreamAcks::new);
        let stream_acks = match &spec.source {
            SourceSpec::Tcp(c) => c.acks.clone(),
            SourceSpec::Kafka(c) => Some(c.acks.clone()),
            _ => push_acks.clone(),
        };
        if let (Some(acks), Some(r)) = (&stream_acks, &recovered) {
            acks.resume(&r.manifest.streams);
        }
        let mut resolved = spec::resolve(&spec, &metrics).map_err(setup)?;
        spec::open_audit(&mut resolved, spec.checkpoint.is_some(), &metrics).map_err(setup)?;
        let model_input = resolved.model_input();
        let aggregate = resolved
            .aggregate
            .as_ref()
            .map(|a| (a.output_schema().clone(), a.latest()));
        let tables: Vec<Arc<LiveTable>> =
            resolved.enrich.iter().map(|e| e.live().clone()).collect();
        let mut chain = chain_of(&spec.name, &mut resolved, &pool, &metrics);
        let resume = match &recovered {
            Some(r) => resume(
                &r.manifest,
                &r.snapshots,
                &mut chain,
                &mut resolved,
                &metrics,
            )
            .map_err(|e| setup(e.into()))?,
            None => None,
        };
        // The generator's clock: a restart goes on with the one recorded.
        let generator_start_us = match &recovered.as_ref().and_then(|r| r.manifest.source.clone()) {
            Some(SourcePosition::Generator { start_us, .. }) => *start_us,
            _ => now_us(),
        };
        let resumable = match (&spec.source, &resolved.file) {
            (SourceSpec::File { .. }, Some(f)) => Resumable::File {
                path: f.path().to_path_buf(),
                bytes: matches!(
                    f.format(),
                    roo_ingest::FileFormat::Csv
                        | roo_ingest::FileFormat::Ndjson
                        | roo_ingest::FileFormat::RawF32
                ),
            },
            (SourceSpec::Generator { .. }, _) => Resumable::Generator {
                start_us: generator_start_us,
            },
            _ => Resumable::None,
        };
        let checkpointer = spec.checkpoint.as_ref().map(|c| {
            Checkpointer::new(
                &spec.name,
                c,
                recovered.as_ref().map(|r| &r.manifest),
                resumable,
            )
        });
        let watcher = if tables.is_empty() {
            None
        } else {
            Some(
                TableWatcher::start(&spec.name, tables.clone()).map_err(|source| {
                    setup(SetupError::Thread {
                        stage: "table watcher",
                        source,
                    })
                })?,
            )
        };
        let described = chain.describe();
        let mut sinks = Vec::new();
        let epochs = spec.checkpoint.is_some();
        // A source that commits offsets (Kafka) gets files named by them.
        let by_source = matches!(spec.source, SourceSpec::Kafka(_));
        for s in &spec.sinks {
            sinks.push(OutputSink::open(s, epochs, by_source).map_err(|e| setup(e.into()))?);
        }
        let dead = match &spec.dead_letters {
            Some(dir) => Some(DeadLetterFiles::open(dir).map_err(|e| setup(e.into()))?),
            None => None,
        };

        let stop = StopSignal::new();
        let (ingest_tx, ingest_rx) = bounded::<IngestBatch>(spec.queue_batches);
        let (flow_tx, flow_rx) = bounded::<ToSink>(spec.queue_batches);
        let failed = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let mut spawn =
            |stage: &'static str, body: source::StageBody| -> Result<(), PipelineError> {
                let failed = failed.clone();
                let pipeline = spec.name.clone();
                let handle = std::thread::Builder::new()
                    .name(format!("roo-{stage}-{}", spec.name))
                    .spawn(move || {
                        let result = body();
                        if let Err(e) = &result {
                            tracing::error!(
                                "pipeline {pipeline}: the {stage} stage failed: {}",
                                crate::error::chain(e)
                            );
                            failed.store(true, Ordering::Release);
                        }
                        result
                    })
                    .map_err(|source| setup(SetupError::Thread { stage, source }))?;
                threads.push((stage, handle));
                Ok(())
            };

        let sink_metrics = metrics.clone();
        let event_time = resolved.event_time;
        spawn(
            "sink",
            Box::new(move || {
                deliver::run(
                    flow_rx,
                    sinks,
                    dead,
                    checkpointer,
                    stream_acks,
                    event_time,
                    &sink_metrics,
                )
            }),
        )?;
        // Online requests: their queue (one slot per permit) to the
        // operator stage, which coalesces them.
        let online_limits = spec
            .online
            .or(matches!(spec.source, SourceSpec::Requests { .. }).then(OnlineLimits::default));
        let mut online_parts = None;
        let mut requests_rx = None;
        if let Some(limits) = online_limits {
            let (request_tx, request_rx) = bounded::<Request>(limits.requests_max.max(1));
            online_parts = Some((limits, request_tx));
            requests_rx = Some((request_rx, limits));
        }
        let operate_metrics = metrics.clone();
        let every = spec.checkpoint.as_ref().map(|c| c.every);
        let operate_stop = stop.clone();
        let handover = match &spec.source {
            SourceSpec::Kafka(c) if c.changelog.is_some() => Some(c.handover.clone()),
            _ => None,
        };
        spawn(
            "score",
            Box::new(move || {
                operate::run(
                    ingest_rx,
                    requests_rx,
                    flow_tx,
                    chain,
                    operate::Cutting {
                        checkpoint_every: every,
                        handover,
                    },
                    operate_stop,
                    &operate_metrics,
                )
            }),
        )?;
        // One file's or one connection's text is parsed in pieces on the
        // scoring pool.
        // One bound on the bytes out with the pool for the whole source.
        let parse_pool = spec
            .parse_in_pieces
            .then(|| roo_ingest::ParsePool::new(pool.clone()));
        let mut source_spec = spec.source.clone();
        if let SourceSpec::Tcp(config) = &mut source_spec {
            config.parse_pool = parse_pool.clone();
        }
        let started = source::start(
            &source_spec,
            &spec.name,
            spec.limits,
            resolved.file.map(|f| match parse_pool {
                Some(p) => f.with_parse_pool(p),
                None => f,
            }),
            ingest_tx,
            stop.clone(),
            metrics.clone(),
            source::GeneratorClock {
                start_us: generator_start_us,
                skip: resume.unwrap_or(0),
            },
        );
        let started = match started {
            Ok(s) => s,
            Err(e) => {
                // The stages exit once the ingest sender (dropped with the
                // failed source) and the requests' are gone.
                drop(online_parts);
                for (_, t) in threads {
                    let _ = t.join();
                }
                return Err(setup(e));
            }
        };
        if let Some(body) = started.body {
            spawn("src", body)?;
        }
        let requests = match online_parts {
            Some((limits, request_tx)) => Some(Requests {
                tx: request_tx,
                pipeline: Arc::from(spec.name.as_str()),
                schema: resolved.input_schema.clone(),
                in_flight: Default::default(),
                limits,
                metrics: metrics.clone(),
            }),
            None => None,
        };
        Ok(Self {
            name: spec.name.clone(),
            metrics,
            model: resolved.model.map(|m| m.slot),
            shadows: resolved
                .shadows
                .into_iter()
                .map(|s| (s.name, s.slot))
                .collect(),
            input_schema: resolved.input_schema,
            model_input,
            aggregate,
            tables,
            watcher: Mutex::new(watcher),
            source_kind: spec.source.kind(),
            offset_unit: spec.source.offset_unit(),
            operators: described,
            sinks: spec.sinks,
            dead_letters: spec.dead_letters,
            audit: spec.audit.map(|a| a.dir),
            pool,
            push: Mutex::new(started.push),
            push_acks,
            requests: Mutex::new(requests),
            event_time: spec.event_time.clone(),
            max_rows: spec.limits.max_rows,
            stop,
            threads: Mutex::new(threads),
            tcp_addr: started.tcp_addr,
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

    /// Every figure of this pipeline at this moment: what `/metrics`, the
    /// status line and the `pipeline-stats` action all show.
    pub fn snapshot(&self) -> MetricsSnapshot {
        self.metrics.snapshot(
            &self.name,
            self.source_kind,
            self.offset_unit,
            self.model_version(),
            self.failed(),
        )
    }

    /// The operators of the chain in order: (kind, name).
    pub fn operators(&self) -> &[(OperatorKind, String)] {
        &self.operators
    }

    /// The bound address of a TCP source.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    /// The version of the model scoring now; `None` without a model.
    pub fn model_version(&self) -> Option<String> {
        self.model
            .as_ref()
            .map(|m| m.current().version().to_string())
    }

    /// The model scoring now, bound to the pipeline's input.
    pub fn model(&self) -> Option<Arc<BoundModel>> {
        self.model.as_ref().map(|m| m.current())
    }

    /// The file a reload reads.
    pub fn model_path(&self) -> Option<PathBuf> {
        self.model.as_ref().map(|m| m.path())
    }

    pub fn input_schema(&self) -> &SchemaRef {
        &self.input_schema
    }

    /// What the sinks receive: the input and every operator's columns, as
    /// the models in place now write them.
    pub fn output_schema(&self) -> SchemaRef {
        if let Some((schema, _)) = &self.aggregate {
            return schema.clone();
        }
        spec::chain_output_schema(
            &self.input_schema,
            self.model_input.as_ref(),
            self.model.as_deref(),
            self.shadows.last().map(|(_, s)| s.as_ref()),
        )
    }

    /// The latest window the pipeline's aggregate emitted: `Err` when it
    /// has no aggregate, `Ok(None)` before the first window.
    pub fn latest_window(&self) -> Result<Option<RecordBatch>, PipelineError> {
        match &self.aggregate {
            Some((_, latest)) => Ok(latest.get()),
            None => Err(PipelineError::NoAggregate {
                pipeline: self.name.clone(),
            }),
        }
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

    /// The audit log's directory (`[pipeline.audit]`), if any.
    pub fn audit_dir(&self) -> Option<&Path> {
        self.audit.as_deref()
    }

    /// The published files of the first file sink, in order; `None`
    /// without a file sink.
    pub fn output_files(&self) -> Option<Vec<PathBuf>> {
        self.sinks.iter().find_map(|s| match s {
            SinkSpec::Files {
                dir,
                prefix,
                format,
                ..
            } => Some(layout::published(dir, prefix, format.extension())),
            SinkSpec::Kafka(_) | SinkSpec::Stdout => None,
        })
    }

    /// The published dead-letter files, in order; `None` without a
    /// dead-letter directory.
    pub fn dead_letter_files(&self) -> Option<Vec<PathBuf>> {
        self.dead_letters.as_deref().map(|dir| {
            layout::published(
                dir,
                layout::DEAD_LETTER_PREFIX,
                layout::DEAD_LETTER_EXTENSION,
            )
        })
    }

    /// A scorer with this pipeline's model for batches of any schema that
    /// holds its features (a client's exchange): a hot swap applies from
    /// its next batch. Its rows do not go to the pipeline's sinks.
    pub fn scorer(&self) -> Result<BatchScorer, PipelineError> {
        let model = self.model.as_ref().ok_or_else(|| PipelineError::NoModel {
            pipeline: self.name.clone(),
        })?;
        Ok(BatchScorer::of_pipeline(model.cell(), self.pool.clone()))
    }

    /// Loads every model file again (the pipeline's and each shadow's) and
    /// swaps each in between two batches. A model that fails to load or
    /// fit is refused and the one before it keeps scoring. Returns the
    /// pipeline model's version, or the first refusal.
    pub fn reload(&self) -> Result<Option<String>, PipelineError> {
        let mut first_error = None;
        let mut version = None;
        let slots = self
            .model
            .iter()
            .map(|m| ("model".to_string(), m))
            .chain(self.shadows.iter().map(|(n, s)| (format!("shadow {n}"), s)));
        for (operator, slot) in slots {
            match slot.reload() {
                Ok(v) => {
                    PipelineMetrics::add(&self.metrics.model_reloads, 1);
                    if operator == "model" {
                        version = Some(v);
                    }
                }
                Err(source) => {
                    PipelineMetrics::add(&self.metrics.model_reload_failures, 1);
                    let e = PipelineError::Reload {
                        pipeline: self.name.clone(),
                        operator,
                        source: Box::new(source),
                    };
                    if first_error.is_some() {
                        tracing::error!("{}", crate::error::chain(&e));
                    } else {
                        first_error = Some(e);
                    }
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(version),
        }
    }

    /// The tables this pipeline joins, in chain order.
    pub fn tables(&self) -> &[Arc<LiveTable>] {
        &self.tables
    }

    /// The table named `name`.
    pub fn table(&self, name: &str) -> Result<&Arc<LiveTable>, PipelineError> {
        self.tables
            .iter()
            .find(|t| t.name() == name)
            .ok_or_else(|| PipelineError::NoTable {
                pipeline: self.name.clone(),
                table: name.to_string(),
                tables: self
                    .tables
                    .iter()
                    .map(|t| t.name().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// Reads each table file again (or only the table `only`) and swaps
    /// each in between two batches; a table that fails to load is refused
    /// and the one before it stays. One result per table: its new version
    /// or why it was refused.
    pub fn reload_tables(&self, only: Option<&str>) -> Result<Vec<TableReload>, PipelineError> {
        let chosen: Vec<&Arc<LiveTable>> = match only {
            Some(name) => vec![self.table(name)?],
            None => self.tables.iter().collect(),
        };
        Ok(chosen
            .into_iter()
            .map(|t| (t.name().to_string(), t.reload()))
            .collect())
    }

    /// Swaps in `model` (from `path`, which later reloads read) between two
    /// batches; refused, with the current model scoring on, when it does
    /// not fit the input.
    pub fn activate(
        &self,
        model: Arc<CompiledModel>,
        path: &Path,
    ) -> Result<String, PipelineError> {
        let slot = self.model.as_ref().ok_or_else(|| PipelineError::NoModel {
            pipeline: self.name.clone(),
        })?;
        match slot.activate(model, path) {
            Ok(v) => {
                PipelineMetrics::add(&self.metrics.model_reloads, 1);
                Ok(v)
            }
            Err(source) => {
                PipelineMetrics::add(&self.metrics.model_reload_failures, 1);
                Err(PipelineError::Reload {
                    pipeline: self.name.clone(),
                    operator: "model".into(),
                    source: Box::new(source),
                })
            }
        }
    }

    /// A way to push batches into a pipeline whose source is `Push`; one
    /// per client stream, named `source` (its batches are numbered and
    /// their offsets are row counts). `acks_to` is told the stream's rows
    /// durable as they become so. A `stream` name makes the count go on
    /// from that stream's rows durable in the last checkpoint (told at
    /// once, and the pusher's first offset), for exactly once across
    /// crashes; one client stream per name at a time.
    pub fn pusher(
        &self,
        source: &str,
        acks_to: Box<dyn AckTarget>,
        stream: Option<String>,
    ) -> Result<Pusher, PipelineError> {
        if self.source_kind != "push" {
            return Err(PipelineError::NotPush {
                pipeline: self.name.clone(),
                kind: self.source_kind,
            });
        }
        let tx = self
            .push
            .lock()
            .expect("not poisoned")
            .clone()
            .ok_or_else(|| PipelineError::Stopping {
                pipeline: self.name.clone(),
            })?;
        let acks = self.push_acks.clone().expect("a push source has acks");
        let source: Arc<str> = Arc::from(source);
        acks.open(&source, acks_to);
        let rows = match stream {
            Some(name) => match acks.named(&source, name) {
                Ok(base) => base,
                Err(e) => {
                    acks.closed(&source);
                    return Err(PipelineError::Stream {
                        pipeline: self.name.clone(),
                        source: e,
                    });
                }
            },
            None => 0,
        };
        Ok(Pusher {
            tx,
            max_rows: self.max_rows,
            schema: self.input_schema.clone(),
            source,
            seq: 0,
            rows,
            stop: self.stop.clone(),
            metrics: self.metrics.clone(),
            acks,
        })
    }

    /// The way in for online requests ([`crate::online`]); refused when
    /// the pipeline takes none (no `online`) or is stopping.
    pub fn requests(&self) -> Result<Requests, PipelineError> {
        self.requests
            .lock()
            .expect("not poisoned")
            .clone()
            .ok_or_else(|| PipelineError::Stopping {
                pipeline: self.name.clone(),
            })
    }

    /// Whether the pipeline answers online requests (until it stops).
    pub fn takes_requests(&self) -> bool {
        self.requests.lock().expect("not poisoned").is_some()
    }

    /// The input column holding each event's time (`event_time`), if any.
    pub fn event_time_column(&self) -> Option<&str> {
        self.event_time.as_deref()
    }

    /// Asks the source to stop reading; the stages drain behind it.
    pub fn stop(&self) {
        self.stop.stop();
        self.push.lock().expect("not poisoned").take();
        self.requests.lock().expect("not poisoned").take();
    }

    /// Every stage has exited (the source ended, or stop, and the queues drained).
    pub fn finished(&self) -> bool {
        self.threads
            .lock()
            .expect("not poisoned")
            .iter()
            .all(|(_, t)| t.is_finished())
    }

    /// Waits for the stages to drain and exit, and checks that every
    /// event that came in went out: scored, or a dead letter. Once: a
    /// second call finds no stage to wait for and reports the counts.
    pub fn join(&self) -> Result<PipelineCounts, PipelineError> {
        let threads = std::mem::take(&mut *self.threads.lock().expect("not poisoned"));
        if let Some(mut w) = self.watcher.lock().expect("not poisoned").take() {
            w.stop();
        }
        let mut failure = None;
        for (stage, t) in threads {
            let error = match t.join() {
                Ok(Ok(())) => continue,
                Ok(Err(source)) => PipelineError::Stage {
                    pipeline: self.name.clone(),
                    stage,
                    source,
                },
                Err(_) => PipelineError::Panicked {
                    pipeline: self.name.clone(),
                    stage,
                },
            };
            failure = failure.or(Some(error));
        }
        if let Some(e) = failure {
            return Err(e);
        }
        let s = self.snapshot();
        let counts = PipelineCounts {
            events_in: s.events_in,
            events_out: s.events_out,
            events_dead: s.events_dead,
            events_aggregated: s.events_aggregated,
            batches: s.batches,
            batches_gpu: s.batches_gpu,
            batches_cpu_retried: s.batches_cpu_retried,
        };
        if counts.events_in != counts.events_out + counts.events_dead + counts.events_aggregated {
            return Err(PipelineError::Invariant {
                pipeline: self.name.clone(),
                what: format!(
                    "{} events came in, but {} went out, {} are dead letters and {} were aggregated",
                    counts.events_in, counts.events_out, counts.events_dead, counts.events_aggregated
                ),
            });
        }
        Ok(counts)
    }
}

/// The operator chain a resolved spec makes: the features, the tables,
/// the model, each shadow (taken out of `resolved`; the slots stay for the
/// pipeline).
pub(crate) fn chain_of(
    pipeline: &str,
    resolved: &mut spec::Resolved,
    pool: &Arc<rayon::ThreadPool>,
    metrics: &Arc<PipelineMetrics>,
) -> Chain {
    let mut operators: Vec<Box<dyn Operator>> = Vec::new();
    if let Some(f) = resolved.features.take() {
        tracing::info!(
            "pipeline {}: {} features over keyed state",
            pipeline,
            f.specs_len()
        );
        operators.push(Box::new(f));
    }
    for e in resolved.enrich.drain(..) {
        let t = e.live().current();
        tracing::info!(
            "pipeline {}: enrich {} joins {} ({}: {} rows, {} keys, {} bytes)",
            pipeline,
            e.live().name(),
            e.live().spec().table.display(),
            t.version(),
            t.rows(),
            t.keys(),
            t.bytes()
        );
        operators.push(Box::new(e));
    }
    if let Some(m) = &resolved.model {
        let loaded = m.slot.current();
        let scorer = &loaded.compiled.scorer;
        metrics
            .cpu_ns_per_row_estimate
            .store(scorer.cpu_ns_per_row() as u64, Ordering::Relaxed);
        tracing::info!(
            "pipeline {}: model {} ({}), {:.0} ns per row on the CPU at load; scoring on {}",
            pipeline,
            m.slot.path().display(),
            loaded.version(),
            scorer.cpu_ns_per_row(),
            scorer.description()
        );
        operators.push(Box::new(ScoreOperator::new(
            &m.name,
            OperatorKind::Score,
            m.slot.clone(),
            pool.clone(),
            metrics.clone(),
        )));
    }
    for s in &resolved.shadows {
        tracing::info!(
            "pipeline {}: shadow {} scores with {} ({})",
            pipeline,
            s.name,
            s.slot.path().display(),
            s.slot.current().version()
        );
        operators.push(Box::new(ScoreOperator::new(
            &s.name,
            OperatorKind::Shadow,
            s.slot.clone(),
            pool.clone(),
            metrics.clone(),
        )));
    }
    if let Some(a) = resolved.audit.take() {
        tracing::info!(
            "pipeline {}: audit log in {}",
            pipeline,
            a.writer().dir().display()
        );
        operators.push(Box::new(a));
    }
    if let Some(a) = resolved.aggregate.take() {
        let s = a.spec();
        tracing::info!(
            "pipeline {}: aggregate {} ({} by {}, window {} µs every {} µs, top {})",
            pipeline,
            s.name,
            s.agg,
            s.key.join(", "),
            s.window_us,
            s.every_us,
            s.top
        );
        operators.push(Box::new(a));
    }
    Chain::new(operators)
}

#[cfg(test)]
pub(crate) mod tests;
