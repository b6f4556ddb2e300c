//! The daemon's config file (TOML): server settings and pipelines.
//!
//! Unknown fields and out-of-range values are errors that name the line and
//! the field (serde with `deny_unknown_fields`; bounds checked while
//! deserialising so the TOML parser reports where). Relative paths are
//! relative to the config file's directory.
//!
//! This file is the file format (the serde types and `read`);
//! `specs.rs` turns it into what the scheduler and Flight take.

mod specs;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
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

/// A duration in seconds, whole or fractional, within 0.05 s to a day.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Seconds(pub f64);

impl Seconds {
    const MIN: f64 = 0.05;
    const MAX: f64 = 86_400.0;
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let v = f64::deserialize(d)?;
        if !(Self::MIN..=Self::MAX).contains(&v) {
            return Err(D::Error::custom(format!(
                "{v} seconds is out of range; expected {} to {}",
                Self::MIN,
                Self::MAX
            )));
        }
        Ok(Self(v))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: Server,
    /// The Arrow Flight endpoint; none: no endpoint.
    pub flight: Option<FlightConfig>,
    /// Online decisions over the Open Inference Protocol (V2 REST and
    /// gRPC); none: no endpoints, and pipelines take no requests.
    pub online: Option<OnlineConfig>,
    /// None is fine with a `[flight]` section: a scoring service for
    /// uploaded models.
    #[serde(rename = "pipeline", default)]
    pub pipelines: Vec<PipelineConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    /// `host:port` for `/metrics` and `/healthz`, or a port alone for
    /// loopback (127.0.0.1); none: no endpoint.
    pub metrics: Option<String>,
    /// Memory for batches in flight, split over every pipeline's queues.
    #[serde(default = "default_memory_mb")]
    pub memory_mb: Bounded<1, 1_048_576>,
    /// Scoring threads (0: one per core).
    #[serde(default)]
    pub threads: Bounded<0, 1024>,
    /// Where checkpoints live (`DIR/PIPELINE/`); none: no checkpoints
    /// (files publish as they close, a crash restarts every source).
    pub state_dir: Option<PathBuf>,
    /// Seconds between checkpoints (and one at every clean stop).
    #[serde(default = "default_checkpoint_secs")]
    pub checkpoint_secs: Seconds,
}

fn default_checkpoint_secs() -> Seconds {
    Seconds(10.0)
}

fn default_memory_mb() -> Bounded<1, 1_048_576> {
    Bounded(256)
}

impl Server {
    /// Where `/metrics` listens: a port alone means loopback, so that
    /// nothing is exposed beyond the machine unless an address says so.
    pub fn metrics_listen(&self) -> Option<String> {
        let m = self.metrics.as_deref()?.trim();
        Some(match m.parse::<u16>() {
            Ok(port) => format!("127.0.0.1:{port}"),
            Err(_) => m.to_string(),
        })
    }
}

impl Default for Server {
    fn default() -> Self {
        Self {
            metrics: None,
            memory_mb: default_memory_mb(),
            threads: Bounded(0),
            state_dir: None,
            checkpoint_secs: default_checkpoint_secs(),
        }
    }
}

/// `[online]`: every pipeline answers V2 inference requests (model name =
/// pipeline name) through its own chain, beside its source.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnlineConfig {
    /// `host:port` for V2 REST (port 0: any free port, logged).
    pub http: Option<String>,
    /// `host:port` for V2 gRPC.
    pub grpc: Option<String>,
    /// Requests waiting while a batch runs always join the next one; with
    /// this above 0 a request also waits up to this long for company
    /// (fewer, larger batches at light load, for latency).
    #[serde(default = "default_linger_us")]
    pub linger_us: Bounded<0, 1_000_000>,
    /// Rows a coalesced batch holds at most.
    #[serde(default = "default_online_max_rows")]
    pub max_rows: Bounded<1, 1_048_576>,
    /// Requests in flight per pipeline; past it 503 / RESOURCE_EXHAUSTED.
    #[serde(default = "default_requests_max")]
    pub requests_max: Bounded<1, 1_048_576>,
    /// The largest request body (REST) or message (gRPC).
    #[serde(default = "default_body_bytes_max")]
    pub body_bytes_max: Bounded<1024, 1_073_741_824>,
    /// Whether a request's events update the rolling features' state (as a
    /// streamed event's do); false: they read it and leave it.
    #[serde(default = "yes")]
    pub update_state: bool,
    /// Take requests without credentials on a non-loopback address.
    #[serde(default)]
    pub allow_anonymous: bool,
}

fn default_linger_us() -> Bounded<0, 1_000_000> {
    Bounded(0)
}
fn default_online_max_rows() -> Bounded<1, 1_048_576> {
    Bounded(1024)
}
fn default_requests_max() -> Bounded<1, 1_048_576> {
    Bounded(4096)
}
fn default_body_bytes_max() -> Bounded<1024, 1_073_741_824> {
    Bounded(1 << 20)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlightConfig {
    /// `host:port` (port 0: any free port, logged).
    pub listen: String,
    /// Clients present one of these; none: calls need no credentials,
    /// which a non-loopback `listen` refuses unless `allow_anonymous`.
    #[serde(rename = "token", default)]
    pub tokens: Vec<TokenConfig>,
    /// Take calls without credentials on a non-loopback address.
    #[serde(default)]
    pub allow_anonymous: bool,
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
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    pub name: String,
    pub secret: Option<String>,
    pub secret_env: Option<String>,
}

/// Never shows the secret.
impl std::fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenConfig")
            .field("name", &self.name)
            .field("secret", &self.secret.as_ref().map(|_| "<secret>"))
            .field("secret_env", &self.secret_env)
            .finish()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    pub name: String,
    /// The model whose score is the decision; none: a pipeline of other
    /// operators only.
    pub model: Option<PathBuf>,
    /// Candidate models scoring the same rows into `score_NAME`.
    #[serde(rename = "shadow", default)]
    pub shadows: Vec<ShadowConfig>,
    #[serde(default)]
    pub device: DeviceName,
    #[serde(default = "default_max_rows")]
    pub max_rows: Bounded<1, 16_777_216>,
    #[serde(default = "default_linger_ms")]
    pub linger_ms: Bounded<0, 60_000>,
    #[serde(default = "default_record_bytes_max")]
    pub record_bytes_max: Bounded<64, 1_073_741_824>,
    /// Parse one file's or one connection's CSV or NDJSON in pieces on the
    /// scoring threads (false: on the source's thread alone).
    #[serde(default = "default_parse_in_pieces")]
    pub parse_in_pieces: bool,
    pub source: SourceConfig,
    #[serde(rename = "sink", default)]
    pub sinks: Vec<SinkConfig>,
    pub dead_letters: Option<DeadLettersConfig>,
    /// An input column with each event's time (int64 microseconds since
    /// the Unix epoch, or a timestamp): windows are measured in it, and
    /// latency is also measured from it to the sink.
    pub event_time: Option<String>,
    /// Per-key rolling features, computed before the model.
    #[serde(rename = "feature", default)]
    pub features: Vec<FeatureConfig>,
    /// How much older than its key's newest event an event may be (e.g.
    /// "30s"); older ones are dead letters.
    #[serde(default = "default_lateness")]
    pub lateness: String,
    /// Keys held per key set; past it the least recently seen is evicted.
    #[serde(default = "default_keys_max")]
    pub keys_max: Bounded<1, 100_000_000>,
    /// Events a key holds for its windows; past it the oldest are dropped.
    #[serde(default = "default_events_per_key_max")]
    pub events_per_key_max: Bounded<1, 100_000_000>,
    /// Tables joined to each event (after the features, before the model).
    #[serde(rename = "enrich", default)]
    pub enrich: Vec<EnrichConfig>,
    /// A windowed aggregate ending the chain (one at most): its rows go to
    /// the sinks instead of the events.
    #[serde(rename = "aggregate", default)]
    pub aggregates: Vec<AggregateConfig>,
    /// A record of every scored event, kept for audit and replay.
    pub audit: Option<AuditConfig>,
}

/// `[pipeline.audit]`: the audit log of every scored event.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    pub dir: PathBuf,
    /// The event id column; none: `SOURCE#N`.
    pub id: Option<String>,
    /// Segments whose event hour ended more than this many days ago are
    /// deleted; 0: kept for ever.
    #[serde(default = "default_retain_days")]
    pub retain_days: Bounded<0, 36_500>,
    /// Past this size (GB, 10^9 bytes) the oldest segments go first.
    #[serde(default = "default_max_gb")]
    pub max_gb: f64,
    /// A segment is published at this many records...
    #[serde(default = "default_segment_rows")]
    pub segment_rows: Bounded<1, 16_777_216>,
    /// ...or once open this long.
    #[serde(default = "default_segment_secs")]
    pub segment_secs: Bounded<1, 86_400>,
}

fn default_retain_days() -> Bounded<0, 36_500> {
    Bounded(400)
}
fn default_max_gb() -> f64 {
    100.0
}
fn default_segment_rows() -> Bounded<1, 16_777_216> {
    Bounded(1 << 20)
}
fn default_segment_secs() -> Bounded<1, 86_400> {
    Bounded(60)
}

/// `[[pipeline.aggregate]]`: per key, count / sum / mean / max over
/// hopping windows of event time, the best `top` keys of each window.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregateConfig {
    pub name: String,
    /// One key column, or a list for a compound key.
    pub key: KeyColumns,
    /// count, sum, mean or max.
    pub agg: String,
    /// The value aggregated (sum, mean, max).
    pub column: Option<String>,
    /// The window's length ("5m")...
    pub window: String,
    /// ...ending at every multiple of this ("10s"), aligned to the epoch.
    pub every: String,
    /// Rows per window; 0: every key.
    #[serde(default = "default_top")]
    pub top: Bounded<0, 10_000>,
    /// Distinct keys a pane counts exactly; past it a Space-Saving summary
    /// of this many counters (count, sum) with an error bound per row.
    #[serde(default = "default_aggregate_keys_max")]
    pub keys_max: Bounded<1, 100_000_000>,
}

fn default_top() -> Bounded<0, 10_000> {
    Bounded(10)
}
fn default_aggregate_keys_max() -> Bounded<1, 100_000_000> {
    Bounded(roo_scheduler::operators::aggregate::KEYS_MAX_DEFAULT as u64)
}

/// `[[pipeline.enrich]]`: a table joined to each event by key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrichConfig {
    /// Names the operator, the `NAME_version` column, and the table for
    /// Flight (DoPut `["tables", NAME]`, the `reload-table` action).
    pub name: String,
    /// Parquet, Arrow IPC or CSV; watched, reloaded when it changes.
    pub table: PathBuf,
    /// The event's column and the table's column of the same name.
    pub key: String,
    /// The table's columns to append; default: every other column.
    pub columns: Option<Vec<String>>,
    /// A table column (int64 µs since the epoch): each row is a version
    /// of its key from then on; events join the version valid at their
    /// event time.
    pub valid_from: Option<String>,
    /// "null" (null columns, NaN to a model) or "dead_letter".
    #[serde(default)]
    pub missing: MissingName,
    /// The table's memory bound; a load past it is refused.
    #[serde(default = "default_table_mb")]
    pub table_mb: Bounded<1, 1_048_576>,
}

fn default_table_mb() -> Bounded<1, 1_048_576> {
    Bounded(roo_scheduler::operators::enrich::TABLE_MB_DEFAULT)
}

#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MissingName {
    #[default]
    Null,
    DeadLetter,
}

fn default_lateness() -> String {
    "0s".into()
}
fn default_keys_max() -> Bounded<1, 100_000_000> {
    Bounded(1_000_000)
}
fn default_events_per_key_max() -> Bounded<1, 100_000_000> {
    Bounded(100_000)
}

/// `[[pipeline.feature]]`: one rolling feature.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureConfig {
    /// The output column.
    pub name: String,
    /// One key column, or a list for a compound key.
    pub key: KeyColumns,
    /// count, sum, mean, min, max, std, last, count_distinct or time_since_last.
    pub agg: String,
    /// The value aggregated (not for count and time_since_last).
    pub column: Option<String>,
    /// "10m", "24h", …; not for time_since_last.
    pub window: Option<String>,
}

/// `key = "card_id"` or `key = ["card_id", "merchant_id"]`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum KeyColumns {
    One(String),
    Many(Vec<String>),
}

impl KeyColumns {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            Self::One(k) => vec![k.clone()],
            Self::Many(k) => k.clone(),
        }
    }
}

/// `[[pipeline.shadow]]`: a candidate model in the shadow of the pipeline's.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShadowConfig {
    pub name: String,
    pub model: PathBuf,
}

fn default_parse_in_pieces() -> bool {
    true
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
pub enum GeneratorStreamName {
    #[default]
    Features,
    Transactions,
    Tweets,
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
        /// Write `ack <records>\n` back on each connection whenever its
        /// records so far are durable in every sink, so that a sender
        /// knows where to resume after a crash.
        #[serde(default)]
        acks: bool,
    },
    /// A Kafka consumer group's share of some topics' partitions.
    Kafka {
        /// `host:port[,host:port…]`.
        brokers: String,
        /// A topic, or a list of topics.
        topic: Topics,
        /// The consumer group: every `roo serve` with the same group
        /// shares the partitions.
        group: String,
        /// csv (no header; columns by position), ndjson, f32 or arrow (an
        /// Arrow IPC stream per message).
        format: String,
        /// As for tcp.
        columns: Vec<String>,
        /// committed (the default), earliest or latest.
        #[serde(default)]
        start: StartName,
        /// How often stored offsets are committed, ms (and always on a
        /// revoke and at stop); with a changelog, how often each
        /// partition's state is cut and written.
        #[serde(default = "default_commit_ms")]
        commit_ms: Bounded<1, 3_600_000>,
        /// The compacted topic each partition's keyed state is kept in
        /// (required with features; with or without, a partition resumes
        /// where its newest snapshot stands).
        #[serde(default)]
        changelog: Option<String>,
        /// Messages fetched ahead of the pipeline, at most, KiB.
        #[serde(default = "default_prefetch_kib")]
        prefetch_kib: Bounded<1, 2_097_151>,
        /// librdkafka settings passed through (e.g. security.protocol).
        #[serde(default)]
        properties: BTreeMap<String, String>,
    },
    /// Online requests only (`[online]`'s endpoints).
    Requests {
        /// `name` (Float32) or `name:type`, as for tcp; default: the
        /// model's features, Float32.
        columns: Option<Vec<String>>,
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
        /// "features" (30 ready-made card features), "transactions" (raw
        /// card transactions with event times, to compute features from)
        /// or "tweets" (hashtags, likes and times, with trends).
        #[serde(default)]
        stream: GeneratorStreamName,
    },
}

fn yes() -> bool {
    true
}
fn default_commit_ms() -> Bounded<1, 3_600_000> {
    Bounded(1000)
}
fn default_prefetch_kib() -> Bounded<1, 2_097_151> {
    Bounded(roo_ingest::PREFETCH_KIB_DEFAULT)
}

/// One topic or several.
#[derive(Debug, Deserialize, Clone)]
#[serde(untagged)]
pub enum Topics {
    One(String),
    Many(Vec<String>),
}

impl Topics {
    pub fn names(&self) -> Vec<String> {
        match self {
            Topics::One(t) => vec![t.clone()],
            Topics::Many(t) => t.clone(),
        }
    }
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum StartName {
    #[default]
    Committed,
    Earliest,
    Latest,
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
        /// Parquet only: none, snappy (the default), lz4 or zstd.
        compression: Option<String>,
        /// Parquet only: none, chunk (the default) or page.
        statistics: Option<String>,
    },
    /// Messages to a Kafka topic.
    Kafka {
        brokers: String,
        topic: String,
        /// ndjson (the default), csv or arrow (an IPC stream per batch).
        #[serde(default = "default_kafka_format")]
        format: String,
        /// The column whose value keys each message (ndjson and csv).
        key: Option<String>,
        #[serde(default)]
        properties: BTreeMap<String, String>,
    },
    Stdout {},
}

fn default_kafka_format() -> String {
    "ndjson".into()
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

/// Reads and parses `path`; the error names the file, line and field.
pub fn read(path: &Path) -> Result<Config> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config {}", path.display()))?;
    let config: Config = toml::from_str(&text)
        .map_err(|e| anyhow::anyhow!("config {}: {}", path.display(), e.to_string().trim_end()))?;
    if config.pipelines.is_empty() && config.flight.is_none() {
        bail!(
            "config {}: no [[pipeline]] and no [flight]: nothing to run; expected at least one of them",
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
        let mut shadows = std::collections::HashSet::new();
        for s in &p.shadows {
            if s.name.is_empty()
                || !s
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                bail!(
                    "config {}: pipeline {}: [[pipeline.shadow]] name {:?}: expected letters, digits or '_' (it names the column score_NAME)",
                    path.display(),
                    p.name,
                    s.name
                );
            }
            if !shadows.insert(s.name.as_str()) {
                bail!(
                    "config {}: pipeline {}: two [[pipeline.shadow]] are named {:?}",
                    path.display(),
                    p.name,
                    s.name
                );
            }
            if p.model.is_none() {
                bail!(
                    "config {}: pipeline {}: [[pipeline.shadow]] {:?} needs the pipeline's own model = \"…\" to shadow",
                    path.display(),
                    p.name,
                    s.name
                );
            }
        }
        let mut tables = std::collections::HashSet::new();
        for e in &p.enrich {
            if e.name.is_empty()
                || !e
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                bail!(
                    "config {}: pipeline {}: [[pipeline.enrich]] name {:?}: expected letters, digits or '_' (it names the column NAME_version)",
                    path.display(),
                    p.name,
                    e.name
                );
            }
            if !tables.insert(e.name.as_str()) {
                bail!(
                    "config {}: pipeline {}: two [[pipeline.enrich]] are named {:?}",
                    path.display(),
                    p.name,
                    e.name
                );
            }
        }
    }
    Ok(config)
}
