//! The parsed config turned into the scheduler's `PipelineSpec`s and the
//! Flight endpoint's settings: paths resolved against the config's
//! directory, columns typed, formats named, queues sized from the memory
//! budget.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use roo_ingest::{
    BatchLimits, CsvHeader, FileFormat, IoUringMode, KafkaSourceConfig, ReadOptions, StartFrom,
    StreamAcks, StreamFormat, TcpSourceConfig,
};
use roo_scheduler::{
    queue_batches_for, Device, GeneratorStream, ParquetCompression, ParquetSettings,
    ParquetStatistics, PipelineSpec, ShadowSpec, SinkSpec, SourceSpec,
};

use roo_scheduler::audit::AuditSpec;
use roo_scheduler::checkpoint::CheckpointSpec;
use roo_scheduler::online::OnlineLimits;
use roo_scheduler::operators::aggregate::{AggFn, AggregateSpec};
use roo_scheduler::operators::enrich::{EnrichSpec, Missing};
use roo_scheduler::operators::features::{parse_duration_us, Agg, FeatureSpec, StateLimits};
use roo_scheduler::sinks::{KafkaFormat, KafkaSinkSpec};

use super::{
    Config, DeviceName, GeneratorStreamName, MissingName, PipelineConfig, SinkConfig, SourceConfig,
    StartName, UringName,
};
use crate::flight::{FlightSettings, Token};
use crate::online::OnlineSettings;

fn resolve_in(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

fn column(spec: &str, pipeline: &str) -> Result<Field> {
    let (name, kind) = spec.split_once(':').unwrap_or((spec, "float32"));
    let data_type = match kind {
        "float32" | "f32" => DataType::Float32,
        "float64" | "f64" => DataType::Float64,
        "int64" | "i64" => DataType::Int64,
        "bool" => DataType::Boolean,
        "string" | "utf8" => DataType::Utf8,
        other => bail!(
            "pipeline {pipeline}: column {spec:?}: type {other:?}; expected float32, float64, int64, bool or string"
        ),
    };
    if name.is_empty() {
        bail!("pipeline {pipeline}: column {spec:?} has no name");
    }
    Ok(Field::new(name, data_type, true))
}

/// The columns of a source fed ready-made batches (`flight`, `requests`):
/// `columns` as for TCP, or `None` for the model's features as Float32
/// (resolved when the model is loaded). With the column count.
fn pushed_columns(
    columns: Option<&[String]>,
    p: &PipelineConfig,
    kind: &str,
) -> Result<(Option<SchemaRef>, usize)> {
    let name = &p.name;
    match columns {
        Some(columns) => {
            let fields = columns
                .iter()
                .map(|c| column(c, name))
                .collect::<Result<Vec<_>>>()?;
            let n = fields.len();
            Ok((Some(Arc::new(Schema::new(fields))), n))
        }
        None if p.model.is_none() => bail!(
            "pipeline {name}: a {kind} source without columns takes the model's features, but the pipeline has no model; say columns = [...]"
        ),
        None => Ok((None, 64)),
    }
}

fn file_format(name: &str, what: &str) -> Result<FileFormat> {
    FileFormat::from_name(name).with_context(|| {
        format!("{what}: format {name:?}: expected csv, ndjson, f32, parquet or arrow")
    })
}

impl Config {
    /// The Flight endpoint's settings, paths resolved against `base`.
    pub fn flight(&self, base: &Path) -> Result<Option<FlightSettings>> {
        let Some(f) = &self.flight else {
            if self
                .pipelines
                .iter()
                .any(|p| matches!(p.source, SourceConfig::Flight { .. }))
            {
                bail!("a pipeline's source is kind = \"flight\" but there is no [flight] section to receive its batches");
            }
            return Ok(None);
        };
        let listen: SocketAddr = f.listen.parse().with_context(|| {
            format!(
                "flight: listen {:?}: expected host:port, e.g. 127.0.0.1:7312",
                f.listen
            )
        })?;
        let mut tokens = Vec::new();
        for t in &f.tokens {
            let secret = match (&t.secret, &t.secret_env) {
                (Some(s), None) => s.clone(),
                (None, Some(var)) => std::env::var(var).with_context(|| {
                    format!(
                        "flight: token {:?}: the environment variable {var} is not set",
                        t.name
                    )
                })?,
                _ => bail!(
                    "flight: token {:?}: expected one of secret or secret_env",
                    t.name
                ),
            };
            if secret.len() < 16 || !secret.chars().all(|c| c.is_ascii_graphic()) {
                bail!(
                    "flight: token {:?}: the secret must be at least 16 printable ASCII characters without spaces",
                    t.name
                );
            }
            if t.name.is_empty() || t.name.contains(':') {
                bail!(
                    "flight: token name {:?}: expected a non-empty name without ':'",
                    t.name
                );
            }
            tokens.push(Token {
                name: t.name.clone(),
                secret,
            });
        }
        if tokens.is_empty() && !listen.ip().is_loopback() && !f.allow_anonymous {
            bail!(
                "flight: listen {listen} is reachable from other machines and no [[flight.token]] is set: \
                 add a token, listen on a loopback address (127.0.0.1), or write allow_anonymous = true \
                 to take calls from anyone"
            );
        }
        let tls = match (&f.tls_cert, &f.tls_key) {
            (Some(c), Some(k)) => Some((resolve_in(base, c), resolve_in(base, k))),
            (None, None) => None,
            _ => bail!("flight: TLS needs both tls_cert and tls_key"),
        };
        Ok(Some(FlightSettings {
            listen,
            tokens,
            tls,
            model_dir: f.model_dir.as_ref().map(|d| resolve_in(base, d)),
            models_max: f.models_max.0 as usize,
            message_bytes_max: (f.message_mb.0 as usize) << 20,
            streams_max: f.streams_max.0 as usize,
            idle: Duration::from_secs(f.idle_secs.0),
            memory_bytes: (f.memory_mb.0 as usize) << 20,
        }))
    }

    /// The online endpoints' settings (`[online]`), with Flight's tokens.
    pub fn online(&self, base: &Path) -> Result<Option<OnlineSettings>> {
        let Some(o) = &self.online else {
            return Ok(None);
        };
        let addr = |what: &str, a: &Option<String>| -> Result<Option<SocketAddr>> {
            a.as_ref()
                .map(|a| {
                    a.parse().with_context(|| {
                        format!("online: {what} {a:?}: expected host:port, e.g. 127.0.0.1:8000")
                    })
                })
                .transpose()
        };
        let http = addr("http", &o.http)?;
        let grpc = addr("grpc", &o.grpc)?;
        if http.is_none() && grpc.is_none() {
            bail!("online: expected http = \"host:port\" or grpc = \"host:port\" (or both)");
        }
        let tokens = self.flight(base)?.map(|f| f.tokens).unwrap_or_default();
        for (what, a) in [("http", http), ("grpc", grpc)] {
            if let Some(a) = a.filter(|a| !a.ip().is_loopback()) {
                if tokens.is_empty() && !o.allow_anonymous {
                    bail!(
                        "online: {what} {a} is reachable from other machines and no [[flight.token]] is set \
                         (online requests take the Flight tokens): add a token, listen on a loopback address \
                         (127.0.0.1), or write allow_anonymous = true under [online] to take requests from anyone"
                    );
                }
            }
        }
        Ok(Some(OnlineSettings {
            http,
            grpc,
            body_bytes_max: o.body_bytes_max.0 as usize,
            connections_max: (o.requests_max.0 as usize).clamp(64, 65_536),
            tokens,
        }))
    }

    /// The pipelines as the scheduler takes them, paths resolved against `base`.
    pub fn specs(&self, base: &Path) -> Result<Vec<PipelineSpec>> {
        let resolve = |p: &Path| resolve_in(base, p);
        let memory = self.server.memory_mb.0 << 20;
        let mut specs = Vec::new();
        for p in &self.pipelines {
            let name = &p.name;
            let limits = BatchLimits {
                max_rows: p.max_rows.0 as usize,
                linger: Duration::from_millis(p.linger_ms.0),
                record_bytes_max: p.record_bytes_max.0 as usize,
            };
            let uring = |u: UringName| {
                if u == UringName::Off {
                    IoUringMode::Off
                } else {
                    IoUringMode::Auto
                }
            };
            let mut read = ReadOptions::default();
            let (source, columns) = match &p.source {
                SourceConfig::File {
                    path,
                    format,
                    io_uring,
                } => {
                    let path = resolve(path);
                    let format = match format {
                        Some(f) => file_format(f, &format!("pipeline {name}: source"))?,
                        None => FileFormat::from_path(&path).with_context(|| {
                            format!("pipeline {name}: source {}: cannot tell the format from the extension; say format = ...", path.display())
                        })?,
                    };
                    read.io_uring = uring(*io_uring);
                    (SourceSpec::File { path, format }, 64)
                }
                SourceConfig::Tcp {
                    listen,
                    format,
                    columns,
                    header,
                    connections_max,
                    io_uring,
                    acks,
                } => {
                    let addr: SocketAddr = listen
                        .parse()
                        .with_context(|| format!("pipeline {name}: listen {listen:?}: expected host:port, e.g. 127.0.0.1:7000"))?;
                    let fields = columns
                        .iter()
                        .map(|c| column(c, name))
                        .collect::<Result<Vec<_>>>()?;
                    let n = fields.len();
                    let stream_format = match format.as_str() {
                        "csv" => StreamFormat::Csv {
                            header: if *header { CsvHeader::Check } else { CsvHeader::Absent },
                            delimiter: b',',
                        },
                        "ndjson" => StreamFormat::Ndjson,
                        "f32" => StreamFormat::RawF32,
                        "arrow" => StreamFormat::ArrowIpc,
                        other => bail!("pipeline {name}: tcp format {other:?}: expected csv, ndjson, f32 or arrow"),
                    };
                    let mut config = TcpSourceConfig::new(
                        addr,
                        stream_format,
                        Some(Arc::new(Schema::new(fields))),
                    );
                    config.limits = limits;
                    config.connections_max = connections_max.0 as usize;
                    config.io_uring = uring(*io_uring);
                    config.acks = acks.then(StreamAcks::new);
                    (SourceSpec::Tcp(config), n)
                }
                SourceConfig::Kafka {
                    brokers,
                    topic,
                    group,
                    format,
                    columns,
                    start,
                    commit_ms,
                    changelog,
                    prefetch_kib,
                    properties,
                } => {
                    let fields = columns
                        .iter()
                        .map(|c| column(c, name))
                        .collect::<Result<Vec<_>>>()?;
                    let n = fields.len();
                    let stream_format = match format.as_str() {
                        "csv" => StreamFormat::Csv {
                            header: CsvHeader::Absent,
                            delimiter: b',',
                        },
                        "ndjson" => StreamFormat::Ndjson,
                        "f32" => StreamFormat::RawF32,
                        "arrow" => StreamFormat::ArrowIpc,
                        other => bail!("pipeline {name}: kafka format {other:?}: expected csv, ndjson, f32 or arrow"),
                    };
                    let topics = topic.names();
                    if topics.is_empty() || topics.iter().any(|t| t.is_empty()) {
                        bail!(
                            "pipeline {name}: kafka topic: expected a topic name or a list of them"
                        );
                    }
                    if group.is_empty() {
                        bail!("pipeline {name}: kafka group: expected the consumer group's name");
                    }
                    let mut config = KafkaSourceConfig::new(
                        brokers.clone(),
                        topics,
                        group.clone(),
                        stream_format,
                        Some(Arc::new(Schema::new(fields))),
                    );
                    config.limits = limits;
                    config.start = match start {
                        StartName::Committed => StartFrom::Committed,
                        StartName::Earliest => StartFrom::Earliest,
                        StartName::Latest => StartFrom::Latest,
                    };
                    config.commit_interval = Duration::from_millis(commit_ms.0);
                    config.prefetch_kib = prefetch_kib.0;
                    config.properties = properties.clone();
                    if changelog
                        .as_deref()
                        .is_some_and(|t| t.is_empty() || config.topics.iter().any(|x| x == t))
                    {
                        bail!("pipeline {name}: kafka changelog {changelog:?}: expected a topic of its own (compacted), not empty and not a source topic");
                    }
                    config.changelog = changelog.clone();
                    (SourceSpec::Kafka(config), n)
                }
                SourceConfig::Requests { columns } => {
                    if self.online.is_none() {
                        bail!("pipeline {name}: source kind = \"requests\" takes online requests, but there is no [online] section to receive them");
                    }
                    let (schema, n) = pushed_columns(columns.as_deref(), p, "requests")?;
                    (SourceSpec::Requests { schema }, n)
                }
                SourceConfig::Flight { columns } => {
                    let (schema, n) = pushed_columns(columns.as_deref(), p, "flight")?;
                    (SourceSpec::Push { schema }, n)
                }
                SourceConfig::Generator {
                    rate,
                    events,
                    seed,
                    stream,
                } => (
                    SourceSpec::Generator {
                        rate_per_s: rate.0,
                        events: *events,
                        seed: *seed,
                        stream: match stream {
                            GeneratorStreamName::Features => GeneratorStream::Features,
                            GeneratorStreamName::Transactions => GeneratorStream::Transactions,
                            GeneratorStreamName::Tweets => GeneratorStream::Tweets,
                        },
                    },
                    31,
                ),
            };
            let sinks = p
                .sinks
                .iter()
                .map(|s| {
                    Ok(match s {
                        SinkConfig::Files {
                            dir,
                            format,
                            prefix,
                            rotate_mb,
                            rotate_secs,
                            compression,
                            statistics,
                        } => {
                            let format = file_format(format, &format!("pipeline {name}: sink"))?;
                            SinkSpec::Files {
                                dir: resolve(dir),
                                prefix: prefix.clone(),
                                format,
                                parquet: parquet_settings(
                                    name,
                                    format,
                                    compression.as_deref(),
                                    statistics.as_deref(),
                                )?,
                                rotate_bytes: rotate_mb.0 << 20,
                                rotate: Duration::from_secs(rotate_secs.0),
                            }
                        }
                        SinkConfig::Kafka {
                            brokers,
                            topic,
                            format,
                            key,
                            properties,
                        } => {
                            let format = KafkaFormat::from_name(format).with_context(|| {
                                format!("pipeline {name}: kafka sink format {format:?}: expected ndjson, csv or arrow")
                            })?;
                            if format == KafkaFormat::Arrow && key.is_some() {
                                bail!("pipeline {name}: kafka sink key {key:?}: an arrow message holds a whole batch, so it has no one key; use ndjson or csv, or drop key");
                            }
                            SinkSpec::Kafka(KafkaSinkSpec {
                                brokers: brokers.clone(),
                                topic: topic.clone(),
                                format,
                                key: key.clone(),
                                properties: properties.clone(),
                            })
                        }
                        SinkConfig::Stdout {} => SinkSpec::Stdout,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let lateness_us = parse_duration_us(&p.lateness)
                .map_err(|e| anyhow::anyhow!("pipeline {name}: lateness {e}"))?;
            specs.push(PipelineSpec {
                name: name.clone(),
                source,
                limits,
                parse_in_pieces: p.parse_in_pieces,
                model: p.model.as_deref().map(resolve),
                shadows: p
                    .shadows
                    .iter()
                    .map(|s| ShadowSpec {
                        name: s.name.clone(),
                        model: resolve(&s.model),
                    })
                    .collect(),
                device: match p.device {
                    DeviceName::Cpu => Device::Cpu,
                    DeviceName::Gpu => Device::Gpu,
                    DeviceName::Auto => Device::Auto,
                },
                sinks,
                dead_letters: p.dead_letters.as_ref().map(|d| resolve(&d.dir)),
                event_time: p.event_time.clone(),
                online: self.online.as_ref().map(|o| OnlineLimits {
                    linger: Duration::from_micros(o.linger_us.0),
                    max_rows: o.max_rows.0 as usize,
                    requests_max: o.requests_max.0 as usize,
                    update_state: o.update_state,
                }),
                checkpoint: self.server.state_dir.as_ref().map(|d| CheckpointSpec {
                    dir: resolve(d).join(name),
                    every: Duration::from_secs_f64(self.server.checkpoint_secs.0),
                }),
                features: features(p)?,
                enrich: p
                    .enrich
                    .iter()
                    .map(|e| EnrichSpec {
                        name: e.name.clone(),
                        table: resolve(&e.table),
                        key: e.key.clone(),
                        columns: e.columns.clone(),
                        valid_from: e.valid_from.clone(),
                        missing: match e.missing {
                            MissingName::Null => Missing::Null,
                            MissingName::DeadLetter => Missing::DeadLetter,
                        },
                        table_bytes_max: (e.table_mb.0 as usize) << 20,
                    })
                    .collect(),
                aggregate: aggregates(p, lateness_us)?,
                audit: match &p.audit {
                    None => None,
                    Some(a) => {
                        if !(a.max_gb.is_finite() && a.max_gb > 0.0) {
                            bail!(
                                "pipeline {name}: audit max_gb = {}: expected a size above 0 (GB)",
                                a.max_gb
                            );
                        }
                        Some(AuditSpec {
                            dir: resolve(&a.dir),
                            id: a.id.clone(),
                            retain_days: a.retain_days.0 as u32,
                            max_bytes: (a.max_gb * 1e9) as u64,
                            segment_rows: a.segment_rows.0 as usize,
                            segment_age: Duration::from_secs(a.segment_secs.0),
                        })
                    }
                },
                state: StateLimits {
                    lateness_us,
                    keys_max: p.keys_max.0 as usize,
                    events_per_key_max: p.events_per_key_max.0 as usize,
                },
                queue_batches: queue_batches_for(
                    memory,
                    self.pipelines.len(),
                    limits.max_rows,
                    columns,
                ),
                read,
            });
        }
        Ok(specs)
    }
}

/// The `[[pipeline.aggregate]]` of a pipeline (one at most), windows
/// measured against the pipeline's `lateness_us`, checked for what the
/// config alone can tell; its columns are checked against what
/// reaches it when the pipeline is resolved.
fn aggregates(p: &PipelineConfig, lateness_us: i64) -> Result<Vec<AggregateSpec>> {
    if let [first, second, ..] = p.aggregates.as_slice() {
        bail!(
            "pipeline {}: aggregates {:?} and {:?}: an aggregate ends the chain, so a pipeline has one at most",
            p.name,
            first.name,
            second.name
        );
    }
    p.aggregates
        .iter()
        .map(|a| {
            let at = format!("pipeline {}: [[pipeline.aggregate]] {:?}", p.name, a.name);
            if a.name.is_empty() {
                bail!(
                    "pipeline {}: a [[pipeline.aggregate]] has an empty name",
                    p.name
                );
            }
            let agg = AggFn::parse(&a.agg)
                .with_context(|| format!("{at}: agg {:?}: expected {}", a.agg, AggFn::NAMES))?;
            let duration = |what: &str, text: &str| {
                parse_duration_us(text).map_err(|e| anyhow::anyhow!("{at}: {what} {e}"))
            };
            let spec = AggregateSpec {
                name: a.name.clone(),
                key: a.key.to_vec(),
                agg,
                column: a.column.clone(),
                window_us: duration("window", &a.window)?,
                every_us: duration("every", &a.every)?,
                top: a.top.0 as usize,
                keys_max: a.keys_max.0 as usize,
                lateness_us,
            };
            spec.check()
                .with_context(|| format!("pipeline {}", p.name))?;
            Ok(spec)
        })
        .collect()
}

/// The `[[pipeline.feature]]`s of a pipeline, each checked for what the
/// config alone can tell (the agg, the window); the columns are checked
/// against the input when the pipeline is resolved.
fn features(p: &PipelineConfig) -> Result<Vec<FeatureSpec>> {
    let mut out: Vec<FeatureSpec> = Vec::new();
    for f in &p.features {
        let at = format!("pipeline {}: [[pipeline.feature]] {:?}", p.name, f.name);
        if f.name.is_empty() {
            bail!(
                "pipeline {}: a [[pipeline.feature]] has an empty name",
                p.name
            );
        }
        if out.iter().any(|o| o.name == f.name) {
            bail!("{at}: two features are named {:?}", f.name);
        }
        let agg = Agg::parse(&f.agg)
            .with_context(|| format!("{at}: agg {:?}: expected {}", f.agg, Agg::NAMES))?;
        let window_us = match (&f.window, agg.windowed()) {
            (Some(w), true) => {
                let us = parse_duration_us(w).map_err(|e| anyhow::anyhow!("{at}: window {e}"))?;
                if us == 0 {
                    bail!("{at}: window {w:?}: expected a window longer than 0");
                }
                us
            }
            (None, true) => bail!("{at}: agg {agg} needs a window, e.g. window = \"1h\""),
            (Some(w), false) => bail!("{at}: time_since_last has no window; remove window = {w:?}"),
            (None, false) => 0,
        };
        let key = f.key.to_vec();
        if key.is_empty() {
            bail!("{at}: key = []: expected a column, or a list of them");
        }
        out.push(FeatureSpec {
            name: f.name.clone(),
            key,
            agg,
            column: f.column.clone(),
            window_us,
        });
    }
    Ok(out)
}

/// A files sink's Parquet settings: named values, and only on a Parquet
/// sink (on another format they would silently do nothing).
fn parquet_settings(
    pipeline: &str,
    format: FileFormat,
    compression: Option<&str>,
    statistics: Option<&str>,
) -> Result<ParquetSettings> {
    let mut settings = ParquetSettings::default();
    if format != FileFormat::Parquet && (compression.is_some() || statistics.is_some()) {
        anyhow::bail!(
            "pipeline {pipeline}: sink: compression and statistics apply to format = \"parquet\", not {:?}",
            format.extension()
        );
    }
    if let Some(name) = compression {
        settings.compression = ParquetCompression::from_name(name).ok_or_else(|| {
            anyhow::anyhow!(
                "pipeline {pipeline}: sink: compression {name:?}: expected {}",
                ParquetCompression::NAMES
            )
        })?;
    }
    if let Some(name) = statistics {
        settings.statistics = ParquetStatistics::from_name(name).ok_or_else(|| {
            anyhow::anyhow!(
                "pipeline {pipeline}: sink: statistics {name:?}: expected {}",
                ParquetStatistics::NAMES
            )
        })?;
    }
    Ok(settings)
}
