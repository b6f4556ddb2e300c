//! What a pipeline is made of, as the embedding program declares it
//! ([`PipelineSpec`]), and what it resolves to before anything starts: the
//! input schema, the opened source, each scoring operator's model loaded and
//! compiled once and bound to the schema it will see.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arrow_schema::{DataType, Field, Schema, SchemaRef};
use roo_ingest::{
    BatchLimits, FileFormat, FileSource, KafkaSourceConfig, ReadOptions, TcpSourceConfig,
};
use roo_kernels::FeatureBinding;

use crate::audit::{AuditError, AuditSpec, RecordBuilder};
use crate::device::Device;
use crate::error::{PipelineError, SetupError};
use crate::generator::{card_schema, transaction_schema, tweet_schema};
use crate::metrics::PipelineMetrics;
use crate::models::{CompiledModel, ModelSlot, OutputNaming};
use crate::online::OnlineLimits;
use crate::operators::aggregate::{AggregateOperator, AggregateSpec};
use crate::operators::audit::AuditOperator;
use crate::operators::enrich::{EnrichOperator, EnrichSpec, LiveTable};
use crate::operators::features::{is_event_time_type, FeatureOperator, FeatureSpec, StateLimits};
use crate::sinks::ParquetSettings;

/// Where a pipeline's events come from.
#[derive(Clone, Debug)]
pub enum SourceSpec {
    /// A file, read once to its end.
    File { path: PathBuf, format: FileFormat },
    /// A TCP listener; its schema names the record columns.
    Tcp(TcpSourceConfig),
    /// A Kafka consumer group's share of some topics' partitions.
    Kafka(KafkaSourceConfig),
    /// Synthetic card transactions: `rate_per_s` events a second (0: as
    /// fast as the pipeline takes them), `events` in all (0: no end).
    Generator {
        rate_per_s: u64,
        events: u64,
        seed: u64,
        stream: GeneratorStream,
    },
    /// Batches pushed by the embedding program ([`super::Pipeline::pusher`]:
    /// Flight DoPut), each checked against `schema`; without one, the
    /// model's features as Float32. Runs until stopped.
    Push { schema: Option<SchemaRef> },
    /// Online requests only ([`crate::online`]: V2 REST and gRPC, Flight),
    /// each checked against `schema`; without one, the model's features
    /// as Float32. Runs until stopped.
    Requests { schema: Option<SchemaRef> },
}

impl SourceSpec {
    /// "file", "tcp", "generator" or "push".
    pub fn kind(&self) -> &'static str {
        match self {
            SourceSpec::File { .. } => "file",
            SourceSpec::Tcp(_) => "tcp",
            SourceSpec::Kafka(_) => "kafka",
            SourceSpec::Generator { .. } => "generator",
            SourceSpec::Push { .. } => "push",
            SourceSpec::Requests { .. } => "requests",
        }
    }

    /// What its offsets count: "bytes" of a stream, "rows" of a source
    /// of ready-made batches, or a Kafka partition's "offsets".
    pub fn offset_unit(&self) -> &'static str {
        match self {
            SourceSpec::File { format, .. } => match format {
                FileFormat::Parquet | FileFormat::ArrowIpc => "rows",
                _ => "bytes",
            },
            SourceSpec::Tcp(_) => "bytes",
            SourceSpec::Kafka(_) => "offsets",
            SourceSpec::Generator { .. }
            | SourceSpec::Push { .. }
            | SourceSpec::Requests { .. } => "rows",
        }
    }
}

/// What a generator source makes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GeneratorStream {
    /// A `txn_id` and 30 ready-made features ([`crate::generator::CardGenerator`]).
    #[default]
    Features,
    /// Raw transactions to compute features from
    /// ([`crate::generator::TransactionGenerator`]).
    Transactions,
    /// Tweets with Zipf hashtags and trends ([`crate::generator::TweetGenerator`]).
    Tweets,
}

/// Where the rows at the end of the chain go.
#[derive(Clone, Debug)]
pub enum SinkSpec {
    /// Files `DIR/PREFIX-NNNNNN.EXT` ([`crate::sinks::layout`]), each
    /// written whole or not at all, closed when it holds `rotate_bytes` of
    /// Arrow data or has been open `rotate`.
    Files {
        dir: PathBuf,
        prefix: String,
        format: FileFormat,
        /// How Parquet files are encoded (ignored by other formats).
        parquet: ParquetSettings,
        rotate_bytes: u64,
        rotate: Duration,
    },
    /// Messages to a Kafka topic ([`crate::sinks::kafka`]).
    Kafka(crate::sinks::KafkaSinkSpec),
    /// CSV on standard output (a header, then rows), flushed per batch.
    Stdout,
}

/// A candidate model scoring the same rows as the pipeline's model into
/// `score_NAME` and `model_version_NAME`; never the decision.
#[derive(Clone, Debug)]
pub struct ShadowSpec {
    pub name: String,
    pub model: PathBuf,
}

/// Everything a pipeline needs to run.
#[derive(Clone, Debug)]
pub struct PipelineSpec {
    pub name: String,
    pub source: SourceSpec,
    pub limits: BatchLimits,
    /// A file's or a TCP connection's CSV and NDJSON are parsed in pieces
    /// on the scoring pool (when it has two threads or more), not on the
    /// source's thread alone ([`roo_ingest::StreamFramer`]).
    pub parse_in_pieces: bool,
    /// The pipeline's model: its score is the decision. `None`: a pipeline
    /// of other operators only (features, aggregates), or none at all.
    pub model: Option<PathBuf>,
    /// Candidate models, in order.
    pub shadows: Vec<ShadowSpec>,
    /// Per-key rolling features, computed before the model sees a batch
    /// (their columns are the model's to read).
    pub features: Vec<FeatureSpec>,
    /// Bounds on keyed state (lateness, keys, events per key).
    pub state: StateLimits,
    /// Tables joined to each event after the features, before the model
    /// (their columns are the model's to read), in order.
    pub enrich: Vec<EnrichSpec>,
    /// A windowed aggregate ending the chain (one at most): its rows go to
    /// the sinks, the events it counts do not.
    pub aggregate: Vec<AggregateSpec>,
    /// The audit log: a record of every scored event ([`crate::audit`]).
    pub audit: Option<AuditSpec>,
    pub device: Device,
    pub sinks: Vec<SinkSpec>,
    /// A directory for dead-letter files (NDJSON); `None`: counted and logged only.
    pub dead_letters: Option<PathBuf>,
    /// Batches each channel holds (the memory bound).
    pub queue_batches: usize,
    pub read: ReadOptions,
    /// An input column holding each event's time (Int64 microseconds since
    /// the Unix epoch, or an Arrow timestamp): what windows are measured
    /// in, and the sink stage records each row's latency from it to its
    /// write (`event_to_sink`), which counts time spent before roo read it
    /// (a sender's queue, the network).
    pub event_time: Option<String>,
    /// Online requests beside the source ([`crate::online`]): how they are
    /// coalesced and bounded. `None`: the pipeline takes none (unless its
    /// source is `Requests`, which takes them with the defaults).
    pub online: Option<OnlineLimits>,
    /// Checkpoints ([`crate::checkpoint`]): state, source position and
    /// files published together; `None`: files publish as they close.
    pub checkpoint: Option<crate::checkpoint::CheckpointSpec>,
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

/// A scoring operator's model, resolved.
pub(crate) struct ResolvedScorer {
    pub name: String,
    pub slot: Arc<ModelSlot>,
}

/// What a spec resolves to before anything starts.
pub(crate) struct Resolved {
    /// The input schema, known before the first event.
    pub input_schema: SchemaRef,
    /// The opened file, for a file source.
    pub file: Option<FileSource>,
    /// The features, checked against the input (none without features).
    pub features: Option<FeatureOperator>,
    /// The enrichments, each checked against what the operator before it
    /// outputs.
    pub enrich: Vec<EnrichOperator>,
    /// The pipeline's model, then each shadow, each bound to the schema it sees.
    pub model: Option<ResolvedScorer>,
    pub shadows: Vec<ResolvedScorer>,
    /// The aggregate ending the chain, checked against what reaches it.
    pub aggregate: Option<AggregateOperator>,
    /// The audit log's settings and what reaches it, checked (the log is
    /// opened by [`open_audit`], not by a check).
    pub audit_of: Option<(AuditSpec, SchemaRef, String)>,
    /// The audit operator, once opened.
    pub audit: Option<AuditOperator>,
    /// The `event_time` column's index in the input (and output) schema.
    pub event_time: Option<usize>,
}

/// What the chain writes: the last operator's output — the last shadow's,
/// else the model's (as the models in place now bind), else what the model
/// would read (the features' and enrichments' output), else the input.
pub(crate) fn chain_output_schema(
    input: &SchemaRef,
    model_input: Option<&SchemaRef>,
    model: Option<&ModelSlot>,
    last_shadow: Option<&ModelSlot>,
) -> SchemaRef {
    match (last_shadow.or(model), model_input) {
        (Some(m), _) => m.current().output_schema().clone(),
        (None, Some(f)) => f.clone(),
        (None, None) => input.clone(),
    }
}

impl Resolved {
    /// What the model reads when operators come before it: the last
    /// enrichment's output, else the features'.
    pub fn model_input(&self) -> Option<SchemaRef> {
        match (self.enrich.last(), &self.features) {
            (Some(e), _) => Some(e.output_schema().clone()),
            (None, Some(f)) => Some(f.output_schema().clone()),
            (None, None) => None,
        }
    }

    /// The chain's output schema at start: the aggregate's rows, else
    /// [`chain_output_schema`].
    pub fn output_schema(&self) -> SchemaRef {
        if let Some(a) = &self.aggregate {
            return a.output_schema().clone();
        }
        chain_output_schema(
            &self.input_schema,
            self.model_input().as_ref(),
            self.model.as_ref().map(|m| m.slot.as_ref()),
            self.shadows.last().map(|s| s.slot.as_ref()),
        )
    }
}

/// Loads and compiles each model once, opens the source, checks the
/// features and binds every scoring operator to the schema it will see.
/// `metrics` are those the stateful operators report to.
pub(crate) fn resolve(
    spec: &PipelineSpec,
    metrics: &Arc<PipelineMetrics>,
) -> Result<Resolved, SetupError> {
    let compiled = match &spec.model {
        Some(path) => Some(CompiledModel::load(path, spec.device)?),
        None => None,
    };
    let (input_schema, file) = match &spec.source {
        SourceSpec::File { path, format } => {
            let mut source = match (format, &compiled) {
                (FileFormat::RawF32, Some(m)) => FileSource::open_raw(path, &m.model.feature_names),
                (f, _) => FileSource::open(path, *f),
            }?
            .with_read_options(spec.read.clone());
            // With features or tables the model also reads columns
            // computed on the way; the file keeps its own types and the
            // model is bound to what reaches it.
            let computed = !spec.features.is_empty() || !spec.enrich.is_empty();
            if let Some(m) = compiled.as_ref().filter(|_| !computed) {
                let columns = FeatureBinding::feature_columns(&m.model, &source.schema()).map_err(
                    |source| SetupError::InputFit {
                        path: path.display().to_string(),
                        model: m.origin.clone(),
                        source,
                    },
                )?;
                source.parse_as_f32(&columns);
            }
            (source.schema(), Some(source))
        }
        SourceSpec::Tcp(c) => (c.schema.clone().ok_or(SetupError::TcpColumns)?, None),
        SourceSpec::Kafka(_) if spec.checkpoint.is_some() => {
            return Err(SetupError::KafkaCheckpoints)
        }
        SourceSpec::Kafka(c) => (c.schema.clone().ok_or(SetupError::KafkaColumns)?, None),
        SourceSpec::Generator {
            stream: GeneratorStream::Features,
            ..
        } => (card_schema(), None),
        SourceSpec::Generator {
            stream: GeneratorStream::Transactions,
            ..
        } => (transaction_schema(), None),
        SourceSpec::Generator {
            stream: GeneratorStream::Tweets,
            ..
        } => (tweet_schema(), None),
        SourceSpec::Push { schema: Some(s) } | SourceSpec::Requests { schema: Some(s) } => {
            (s.clone(), None)
        }
        SourceSpec::Push { schema: None } | SourceSpec::Requests { schema: None } => {
            if !spec.features.is_empty() || !spec.enrich.is_empty() {
                // The model reads computed columns, and the features and
                // tables read keys and times the model does not: say the
                // columns.
                return Err(SetupError::PushColumnsWithFeatures);
            }
            let m = compiled.as_ref().ok_or(SetupError::PushColumns)?;
            let fields: Vec<Field> = m
                .model
                .feature_names
                .iter()
                .map(|f| Field::new(f, DataType::Float32, true))
                .collect();
            (Arc::new(Schema::new(fields)), None)
        }
    };
    let event_time = event_time_column(spec, &input_schema)?;
    let mut features = if spec.features.is_empty() {
        None
    } else {
        Some(FeatureOperator::new(
            &spec.features,
            spec.state,
            event_time,
            &input_schema,
            metrics.clone(),
        )?)
    };
    // Kafka moves partitions between processes: the features' state is
    // kept per partition and follows it through the changelog.
    if let (SourceSpec::Kafka(c), Some(f)) = (&spec.source, features.as_mut()) {
        if c.changelog.is_none() {
            return Err(SetupError::KafkaStateWithoutChangelog);
        }
        if spec.online.is_some() {
            return Err(SetupError::KafkaOnlineFeatures);
        }
        if let Some(other) = spec.features.iter().find(|f| f.key != spec.features[0].key) {
            return Err(SetupError::KafkaFeatureKeys {
                first: spec.features[0].key.join(", "),
                feature: other.name.clone(),
                key: other.key.join(", "),
            });
        }
        f.by_partition();
    }
    // Each table joins what the operator before it outputs.
    let mut model_input = features
        .as_ref()
        .map_or(input_schema.clone(), |f| f.output_schema().clone());
    let mut enrich: Vec<EnrichOperator> = Vec::new();
    for e in &spec.enrich {
        if enrich.iter().any(|o| o.live().name() == e.name) {
            return Err(SetupError::DuplicateEnrich {
                name: e.name.clone(),
            });
        }
        let live = Arc::new(LiveTable::open(e, metrics.clone())?);
        let operator = EnrichOperator::new(live, event_time, &model_input)?;
        model_input = operator.output_schema().clone();
        enrich.push(operator);
    }
    let model = match (&spec.model, compiled) {
        (Some(path), Some(compiled)) => Some(ResolvedScorer {
            name: "model".into(),
            slot: Arc::new(ModelSlot::with_model(
                compiled,
                path,
                spec.device,
                &model_input,
                OutputNaming::Live,
            )?),
        }),
        _ => None,
    };
    // Each shadow sees what the operator before it outputs.
    let mut schema = model.as_ref().map_or(input_schema.clone(), |m| {
        m.slot.current().output_schema().clone()
    });
    let mut shadows: Vec<ResolvedScorer> = Vec::new();
    for s in &spec.shadows {
        if model.is_none() {
            return Err(SetupError::ShadowWithoutModel {
                name: s.name.clone(),
            });
        }
        if shadows.iter().any(|r| r.name == s.name) {
            return Err(SetupError::DuplicateShadow {
                name: s.name.clone(),
            });
        }
        let slot = ModelSlot::load(
            &s.model,
            spec.device,
            &schema,
            OutputNaming::Shadow(s.name.clone()),
        )
        .map_err(|source| SetupError::Shadow {
            name: s.name.clone(),
            source: Box::new(source),
        })?;
        schema = slot.current().output_schema().clone();
        shadows.push(ResolvedScorer {
            name: s.name.clone(),
            slot: Arc::new(slot),
        });
    }
    let audit_of = match &spec.audit {
        None => None,
        Some(a) => {
            if model.is_none() {
                return Err(AuditError::NoModel.into());
            }
            let definitions = definitions_text(spec);
            RecordBuilder::new(a.id.as_deref(), event_time, &schema, String::new())?;
            Some((a.clone(), schema.clone(), definitions))
        }
    };
    let aggregate = match spec.aggregate.as_slice() {
        [] => None,
        [a] => Some(AggregateOperator::new(
            a,
            event_time,
            &schema_or(&schema, &model_input, model.is_some()),
            metrics.clone(),
        )?),
        [first, second, ..] => {
            return Err(SetupError::TwoAggregates {
                first: first.name.clone(),
                second: second.name.clone(),
            })
        }
    };
    Ok(Resolved {
        input_schema,
        file,
        features,
        enrich,
        model,
        shadows,
        aggregate,
        audit_of,
        audit: None,
        event_time,
    })
}

/// What the audit's definitions hash covers: the features, the state
/// bounds, the tables and the event time, as declared.
fn definitions_text(spec: &PipelineSpec) -> String {
    format!(
        "event_time: {:?}\nstate: {:#?}\nfeatures: {:#?}\nenrich: {:#?}\n",
        spec.event_time, spec.state, spec.features, spec.enrich
    )
}

/// Opens the audit log a resolved spec declares (refused when it cannot
/// be written) with every model in place stored.
/// Opens the audit log, if the pipeline has one; `epochs`: under
/// checkpoints (segments published by them).
pub(crate) fn open_audit(
    resolved: &mut Resolved,
    epochs: bool,
    metrics: &Arc<PipelineMetrics>,
) -> Result<(), SetupError> {
    let Some((spec, schema, definitions)) = resolved.audit_of.take() else {
        return Ok(());
    };
    let mut models = Vec::new();
    if let Some(m) = &resolved.model {
        models.push(m.slot.current().compiled.clone());
    }
    models.extend(
        resolved
            .shadows
            .iter()
            .map(|s| s.slot.current().compiled.clone()),
    );
    resolved.audit = Some(AuditOperator::new(
        &spec,
        resolved.event_time,
        &schema,
        &definitions,
        &models,
        epochs,
        metrics.clone(),
    )?);
    Ok(())
}

/// What reaches the operator after the models: the last scorer's output
/// (`scored`), else the features' and tables' output.
fn schema_or(scored: &SchemaRef, model_input: &SchemaRef, has_model: bool) -> SchemaRef {
    if has_model {
        scored.clone()
    } else {
        model_input.clone()
    }
}

/// The index of the spec's `event_time` column in `schema` (the output
/// keeps the input's columns first), checked to be Int64.
fn event_time_column(spec: &PipelineSpec, schema: &SchemaRef) -> Result<Option<usize>, SetupError> {
    let Some(name) = &spec.event_time else {
        return Ok(None);
    };
    let index = schema
        .index_of(name)
        .map_err(|_| SetupError::EventTimeMissing {
            column: name.clone(),
            available: crate::operators::column_names(schema),
        })?;
    let data_type = schema.field(index).data_type();
    if !is_event_time_type(data_type) {
        return Err(SetupError::EventTimeType {
            column: name.clone(),
            found: data_type.to_string(),
        });
    }
    Ok(Some(index))
}

/// What a checked spec found.
#[derive(Clone, Debug)]
pub struct SpecReport {
    /// The pipeline model's version, if it has one.
    pub model_version: Option<String>,
    /// (name, version) of each shadow.
    pub shadows: Vec<(String, String)>,
    /// (name, version, rows, keys) of each table.
    pub tables: Vec<(String, String, usize, usize)>,
}

/// Checks a spec without starting it: every model loads and fits the
/// schema it will see, the source opens.
pub fn check_spec(spec: &PipelineSpec) -> Result<SpecReport, PipelineError> {
    let metrics = Arc::new(PipelineMetrics::default());
    let resolved = resolve(spec, &metrics).map_err(|source| PipelineError::Setup {
        pipeline: spec.name.clone(),
        source: Box::new(source),
    })?;
    Ok(SpecReport {
        model_version: resolved
            .model
            .map(|m| m.slot.current().version().to_string()),
        shadows: resolved
            .shadows
            .iter()
            .map(|s| (s.name.clone(), s.slot.current().version().to_string()))
            .collect(),
        tables: resolved
            .enrich
            .iter()
            .map(|e| {
                let t = e.live().current();
                (
                    e.live().name().to_string(),
                    t.version().to_string(),
                    t.rows(),
                    t.keys(),
                )
            })
            .collect(),
    })
}
