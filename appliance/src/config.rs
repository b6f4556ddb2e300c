//! The daemon's config file (TOML): server settings and pipelines.
//!
//! Unknown fields and out-of-range values are errors that name the line and
//! the field (serde with `deny_unknown_fields`; bounds checked while
//! deserialising so the TOML parser reports where). Relative paths are
//! relative to the config file's directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::flight::{FlightSettings, Token};
use anyhow::{bail, Context, Result};
use arrow_schema::{DataType, Field, Schema};
use roo_ingest::{
    BatchLimits, CsvHeader, FileFormat, IoUringMode, ReadOptions, StreamFormat, TcpSourceConfig,
};
use roo_scheduler::{queue_batches_for, Device, PipelineSpec, SinkSpec, SourceSpec};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};

/// A number within `MIN..=MAX`, refused while parsing otherwise.
#[derive(Clone, Copy, Debug)]
pub struct Bounded<const MIN: u64, const MAX: u64>(pub u64);

impl<const MIN: u64, const MAX: u64> Default for Bounded<MIN, MAX> {
    fn default() -> Self {
        Self(MIN)
    }
}

impl<'de, const MIN: u64, const MAX: u64> Deserialize<'de> for Bounded<MIN, MAX> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let v = i64::deserialize(d)?;
        if v < MIN as i64 || v as u64 > MAX {
            return Err(D::Error::custom(format!(
                "{v} is out of range; expected {MIN} to {MAX}"
            )));
        }
        Ok(Self(v as u64))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: Server,
    /// The Arrow Flight endpoint; none: no endpoint.
    pub flight: Option<FlightConfig>,
    #[serde(rename = "pipeline")]
    pub pipelines: Vec<PipelineConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    /// `host:port` for `/metrics` and `/healthz`; none: no endpoint.
    pub metrics: Option<String>,
    /// Memory for batches in flight, split over every pipeline's queues.
    #[serde(default = "default_memory_mb")]
    pub memory_mb: Bounded<1, 1_048_576>,
    /// Scoring threads (0: one per core).
    #[serde(default)]
    pub threads: Bounded<0, 1024>,
}

fn default_memory_mb() -> Bounded<1, 1_048_576> {
    Bounded(256)
}

impl Default for Server {
    fn default() -> Self {
        Self {
            metrics: None,
            memory_mb: default_memory_mb(),
            threads: Bounded(0),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlightConfig {
    /// `host:port` (port 0: any free port, logged).
    pub listen: String,
    /// Clients present one of these; none: calls need no credentials.
    #[serde(rename = "token", default)]
    pub tokens: Vec<TokenConfig>,
    /// PEM files: with both, the endpoint speaks TLS (grpc+tls://).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Where upload-model keeps model files; none: uploads are refused.
    pub model_dir: Option<PathBuf>,
    #[serde(default = "default_models_max")]
    pub models_max: Bounded<1, 1024>,
    /// The largest gRPC message taken or sent (a batch, a model upload).
    #[serde(default = "default_message_mb")]
    pub message_mb: Bounded<1, 2047>,
    /// DoExchange, DoPut and DoGet streams open at once; more are refused
    /// with RESOURCE_EXHAUSTED.
    #[serde(default = "default_streams_max")]
    pub streams_max: Bounded<1, 65_536>,
    /// A DoExchange or DoPut whose client sends nothing for this long is
    /// closed, freeing its slot.
    #[serde(default = "default_idle_secs")]
    pub idle_secs: Bounded<1, 86_400>,
    /// Batches held by every exchange and put together; past it, streams
    /// wait before reading more.
    #[serde(default = "default_flight_memory_mb")]
    pub memory_mb: Bounded<16, 1_048_576>,
}

fn default_flight_memory_mb() -> Bounded<16, 1_048_576> {
    Bounded(1024)
}

fn default_idle_secs() -> Bounded<1, 86_400> {
    Bounded(300)
}

fn default_models_max() -> Bounded<1, 1024> {
    Bounded(16)
}
fn default_message_mb() -> Bounded<1, 2047> {
    Bounded(64)
}
fn default_streams_max() -> Bounded<1, 65_536> {
    Bounded(256)
}

/// A bearer token: `secret`, or read from the environment variable `secret_env`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    pub name: String,
    pub secret: Option<String>,
    pub secret_env: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    pub name: String,
    pub model: PathBuf,
    #[serde(default)]
    pub device: DeviceName,
    #[serde(default = "default_max_rows")]
    pub max_rows: Bounded<1, 16_777_216>,
    #[serde(default = "default_linger_ms")]
    pub linger_ms: Bounded<0, 60_000>,
    #[serde(default = "default_record_bytes_max")]
    pub record_bytes_max: Bounded<64, 1_073_741_824>,
    pub source: SourceConfig,
    #[serde(rename = "sink", default)]
    pub sinks: Vec<SinkConfig>,
    pub dead_letters: Option<DeadLettersConfig>,
    /// An int64 input column with each event's time in microseconds since
    /// the Unix epoch: latency is then also measured from it to the sink.
    pub event_time: Option<String>,
}

fn default_max_rows() -> Bounded<1, 16_777_216> {
    Bounded(8192)
}
fn default_linger_ms() -> Bounded<0, 60_000> {
    Bounded(5)
}
fn default_record_bytes_max() -> Bounded<64, 1_073_741_824> {
    Bounded(1 << 20)
}

#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DeviceName {
    Cpu,
    Gpu,
    #[default]
    Auto,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum UringName {
    #[default]
    Auto,
    Off,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum SourceConfig {
    File {
        path: PathBuf,
        /// csv, ndjson, f32, parquet, arrow (default: from the extension).
        format: Option<String>,
        #[serde(default)]
        io_uring: UringName,
    },
    Tcp {
        listen: String,
        /// csv, ndjson, f32 or arrow.
        format: String,
        /// `name` (Float32) or `name:type` with type float32, float64,
        /// int64, bool or string, in record order.
        columns: Vec<String>,
        /// CSV: each connection starts with a header naming the columns.
        #[serde(default = "yes")]
        header: bool,
        #[serde(default = "default_connections_max")]
        connections_max: Bounded<1, 65_536>,
        #[serde(default)]
        io_uring: UringName,
    },
    /// Batches sent by Flight clients with DoPut.
    Flight {
        /// `name` (Float32) or `name:type`, as for tcp; default: the
        /// model's features, Float32.
        columns: Option<Vec<String>>,
    },
    Generator {
        /// Events a second (0: as fast as the pipeline takes them).
        #[serde(default)]
        rate: Bounded<0, 1_000_000_000>,
        /// Events in all (0: no end).
        #[serde(default)]
        events: u64,
        #[serde(default = "default_seed")]
        seed: u64,
    },
}

fn yes() -> bool {
    true
}
fn default_connections_max() -> Bounded<1, 65_536> {
    Bounded(1024)
}
fn default_seed() -> u64 {
    1
}

#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum SinkConfig {
    Files {
        dir: PathBuf,
        /// parquet, arrow or csv.
        format: String,
        #[serde(default = "default_prefix")]
        prefix: String,
        #[serde(default = "default_rotate_mb")]
        rotate_mb: Bounded<1, 1_048_576>,
        #[serde(default = "default_rotate_secs")]
        rotate_secs: Bounded<1, 86_400>,
    },
    Stdout {},
}

fn default_prefix() -> String {
    "part".into()
}
fn default_rotate_mb() -> Bounded<1, 1_048_576> {
    Bounded(64)
}
fn default_rotate_secs() -> Bounded<1, 86_400> {
    Bounded(60)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLettersConfig {
    pub dir: PathBuf,
}

fn resolve_in(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// Reads and parses `path`; the error names the file, line and field.
pub fn read(path: &Path) -> Result<Config> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config {}", path.display()))?;
    let config: Config = toml::from_str(&text)
        .map_err(|e| anyhow::anyhow!("config {}: {}", path.display(), e.to_string().trim_end()))?;
    if config.pipelines.is_empty() {
        bail!(
            "config {}: no [[pipeline]]; expected at least one",
            path.display()
        );
    }
    let mut names = std::collections::HashSet::new();
    for p in &config.pipelines {
        if p.name.is_empty()
            || !p
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            bail!(
                "config {}: pipeline name {:?}: expected letters, digits, '-' or '_'",
                path.display(),
                p.name
            );
        }
        if !names.insert(p.name.as_str()) {
            bail!(
                "config {}: two pipelines are named {:?}",
                path.display(),
                p.name
            );
        }
    }
    Ok(config)
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
                    (SourceSpec::Tcp(config), n)
                }
                SourceConfig::Flight { columns } => {
                    let fields = match columns {
                        Some(columns) => columns
                            .iter()
                            .map(|c| column(c, name))
                            .collect::<Result<Vec<_>>>()?,
                        None => roo_kernels::load_model(resolve(&p.model))
                            .with_context(|| {
                                format!(
                                    "pipeline {name}: the model names the flight source's columns"
                                )
                            })?
                            .feature_names
                            .iter()
                            .map(|f| Field::new(f, DataType::Float32, true))
                            .collect(),
                    };
                    let n = fields.len();
                    (
                        SourceSpec::Push {
                            schema: Arc::new(Schema::new(fields)),
                        },
                        n,
                    )
                }
                SourceConfig::Generator { rate, events, seed } => (
                    SourceSpec::Generator {
                        rate_per_s: rate.0,
                        events: *events,
                        seed: *seed,
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
                        } => SinkSpec::Files {
                            dir: resolve(dir),
                            prefix: prefix.clone(),
                            format: file_format(format, &format!("pipeline {name}: sink"))?,
                            rotate_bytes: rotate_mb.0 << 20,
                            rotate: Duration::from_secs(rotate_secs.0),
                        },
                        SinkConfig::Stdout {} => SinkSpec::Stdout,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            specs.push(PipelineSpec {
                name: name.clone(),
                source,
                limits,
                model: resolve(&p.model),
                device: match p.device {
                    DeviceName::Cpu => Device::Cpu,
                    DeviceName::Gpu => Device::Gpu,
                    DeviceName::Auto => Device::Auto,
                },
                sinks,
                dead_letters: p.dead_letters.as_ref().map(|d| resolve(&d.dir)),
                event_time: p.event_time.clone(),
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
