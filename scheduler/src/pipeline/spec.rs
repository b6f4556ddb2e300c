//! What a pipeline is made of, as the embedding program declares it
//! ([`PipelineSpec`]), and what it resolves to before anything starts: the
//! input schema, the opened source, each scoring operator's model loaded and
//! compiled once and bound to the schema it will see.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arrow_schema::{DataType, Field, Schema, SchemaRef};
use roo_ingest::{BatchLimits, FileFormat, FileSource, ReadOptions, TcpSourceConfig};
use roo_kernels::FeatureBinding;

use crate::device::Device;
use crate::error::{PipelineError, SetupError};
use crate::generator::card_schema;
use crate::models::{CompiledModel, ModelSlot, OutputNaming};

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
    /// Batches pushed by the embedding program ([`super::Pipeline::pusher`]:
    /// Flight DoPut), each checked against `schema`; without one, the
    /// model's features as Float32. Runs until stopped.
    Push { schema: Option<SchemaRef> },
}

impl SourceSpec {
    /// "file", "tcp", "generator" or "push".
    pub fn kind(&self) -> &'static str {
        match self {
            SourceSpec::File { .. } => "file",
            SourceSpec::Tcp(_) => "tcp",
            SourceSpec::Generator { .. } => "generator",
            SourceSpec::Push { .. } => "push",
        }
    }

    /// What its offsets count: "bytes" of a stream, or "rows" of a source
    /// of ready-made batches.
    pub fn offset_unit(&self) -> &'static str {
        match self {
            SourceSpec::File { format, .. } => match format {
                FileFormat::Parquet | FileFormat::ArrowIpc => "rows",
                _ => "bytes",
            },
            SourceSpec::Tcp(_) => "bytes",
            SourceSpec::Generator { .. } | SourceSpec::Push { .. } => "rows",
        }
    }
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
        rotate_bytes: u64,
        rotate: Duration,
    },
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
    /// The pipeline's model: its score is the decision. `None`: a pipeline
    /// of other operators only (features, aggregates), or none at all.
    pub model: Option<PathBuf>,
    /// Candidate models, in order.
    pub shadows: Vec<ShadowSpec>,
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
    /// The pipeline's model, then each shadow, each bound to the schema it sees.
    pub model: Option<ResolvedScorer>,
    pub shadows: Vec<ResolvedScorer>,
    /// The `event_time` column's index in the input (and output) schema.
    pub event_time: Option<usize>,
}

/// Loads and compiles each model once, opens the source, binds every
/// scoring operator to the schema it will see.
pub(crate) fn resolve(spec: &PipelineSpec) -> Result<Resolved, SetupError> {
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
            if let Some(m) = &compiled {
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
        SourceSpec::Generator { .. } => (card_schema(), None),
        SourceSpec::Push { schema: Some(s) } => (s.clone(), None),
        SourceSpec::Push { schema: None } => {
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
    let model = match (&spec.model, compiled) {
        (Some(path), Some(compiled)) => Some(ResolvedScorer {
            name: "model".into(),
            slot: Arc::new(ModelSlot::with_model(
                compiled,
                path,
                spec.device,
                &input_schema,
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
    Ok(Resolved {
        input_schema,
        file,
        model,
        shadows,
        event_time,
    })
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
            available: schema
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })?;
    let data_type = schema.field(index).data_type();
    if *data_type != DataType::Int64 {
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
}

/// Checks a spec without starting it: every model loads and fits the
/// schema it will see, the source opens.
pub fn check_spec(spec: &PipelineSpec) -> Result<SpecReport, PipelineError> {
    let resolved = resolve(spec).map_err(|source| PipelineError::Setup {
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
    })
}
