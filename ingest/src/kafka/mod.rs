//! Kafka: a consumer-group source. Every `roo serve` with the same group
//! gets a share of the topics' partitions (Kafka's group protocol splits
//! them and moves them when members come and go); roo adds no cluster of
//! its own.
//!
//! Each assigned partition is micro-batched on its own
//! ([`messages::MessageFramer`]); a batch's source is
//! `kafka://TOPIC/PARTITION` and its offsets are the Kafka offsets it
//! covers. Offsets are stored for commit only when every sink holds the
//! batch durably (the pipeline tells the partition's [`AckTarget`] through
//! [`StreamAcks`]), and committed every `commit_interval` and on every
//! revoke and stop: at least once end to end.
//!
//! Backpressure: the consumer never blocks on the pipeline. A batch the
//! ingest queue cannot take is held and every assigned partition paused,
//! while `poll` keeps running (the group keeps the member); the partitions
//! resume once the held batches are taken. Memory: librdkafka's prefetch
//! (`prefetch_kib`), at most `max_rows` records per partition in its
//! framer, and the held batches (at most one per assigned partition).
//!
//! [`AckTarget`]: crate::AckTarget

mod changelog;
mod consumer;
mod durable;
mod messages;
mod rebalance;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use arrow_schema::SchemaRef;
use crossbeam_channel::Sender;
use thiserror::Error;

use crate::{BatchLimits, Handover, IngestBatch, StreamAcks, StreamFormat};

/// Where a partition without a committed offset for the group starts, and
/// whether committed offsets are used at all.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StartFrom {
    /// The group's committed offset; a partition without one starts at its
    /// earliest message.
    #[default]
    Committed,
    /// Each partition this process is first given starts at its earliest
    /// message, whatever was committed (a replay; best with a new group).
    Earliest,
    /// Each partition this process is first given starts at its end
    /// (only messages produced from now on), whatever was committed.
    Latest,
}

/// A Kafka source's settings.
#[derive(Clone, Debug)]
pub struct KafkaSourceConfig {
    /// `host:port[,host:port…]`.
    pub brokers: String,
    pub topics: Vec<String>,
    pub group: String,
    /// CSV (no header: columns by position), NDJSON, raw f32 or an Arrow
    /// IPC stream per message.
    pub format: StreamFormat,
    /// The record columns (required but for Arrow, where batches are
    /// checked against it when given).
    pub schema: Option<SchemaRef>,
    pub limits: BatchLimits,
    pub start: StartFrom,
    /// How often stored offsets are committed (and always on a revoke and
    /// at stop).
    pub commit_interval: Duration,
    /// Fetched messages librdkafka may hold ahead of the pipeline, in KiB
    /// (`queued.max.messages.kbytes`).
    pub prefetch_kib: u64,
    /// librdkafka settings passed through as given (security, timeouts),
    /// applied after roo's own.
    pub properties: BTreeMap<String, String>,
    /// The pipeline's acks: a partition's offsets are stored as its
    /// batches become durable.
    pub acks: Arc<StreamAcks>,
    /// The compacted topic each partition's keyed state is kept in
    /// ([`changelog`]'s rules); with it a partition's offset is stored
    /// only at its cuts (every `commit_interval`, and on revoke and stop),
    /// and a partition resumes where its newest snapshot stands.
    pub changelog: Option<String>,
    /// Cuts asked of the operators and snapshots staged for them.
    pub handover: Arc<Handover>,
}

impl KafkaSourceConfig {
    pub fn new(
        brokers: String,
        topics: Vec<String>,
        group: String,
        format: StreamFormat,
        schema: Option<SchemaRef>,
    ) -> Self {
        Self {
            brokers,
            topics,
            group,
            format,
            schema,
            limits: BatchLimits::default(),
            start: StartFrom::Committed,
            commit_interval: Duration::from_secs(1),
            prefetch_kib: PREFETCH_KIB_DEFAULT,
            properties: BTreeMap::new(),
            acks: StreamAcks::new(),
            changelog: None,
            handover: Handover::new(),
        }
    }
}

/// librdkafka's prefetch bound when the config does not say, KiB.
pub const PREFETCH_KIB_DEFAULT: u64 = 16 << 10;

/// How long the start waits for the brokers' metadata before it reports
/// them unreachable (and goes on retrying).
pub const METADATA_WAIT: Duration = Duration::from_secs(5);

/// The longest wait between two attempts to reach unreachable brokers.
pub const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// How long a revoke waits for the partitions' batches handed on to be
/// durable before it lets them go (well under the group's
/// `max.poll.interval.ms`, 300 s by default).
pub const REVOKE_DRAIN_MAX: Duration = Duration::from_secs(30);

/// The longest a stop waits for the pipeline to report its last batches
/// durable before committing what it has.
pub const STOP_DRAIN_MAX: Duration = Duration::from_secs(60);

/// Why a Kafka source or sink could not start or go on.
#[derive(Debug, Error)]
pub enum KafkaError {
    #[error("kafka {brokers}: setting {setting} = {value:?}: {message}")]
    Setting {
        brokers: String,
        setting: String,
        value: String,
        message: String,
    },
    #[error("kafka {brokers}: topic {topic:?} does not exist (the brokers know {known:?}); expected a topic created before the pipeline starts")]
    MissingTopic {
        brokers: String,
        topic: String,
        known: Vec<String>,
    },
    #[error("kafka {brokers}: changelog topic {topic:?} does not exist; expected a compacted topic (cleanup.policy=compact) created before the pipeline starts, with as many partitions as the source's topic")]
    MissingChangelog { brokers: String, topic: String },
    #[error("kafka {brokers}: changelog {topic} partition {partition}: {message}")]
    Changelog {
        brokers: String,
        topic: String,
        partition: i32,
        message: String,
    },
    #[error("kafka {brokers}: {message}")]
    Client { brokers: String, message: String },
    #[error("the kafka consumer thread for {brokers} panicked")]
    Panicked { brokers: String },
}

/// One partition's figures, from librdkafka's statistics (every second)
/// and the rebalances.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartitionFigures {
    pub assigned: bool,
    /// The group's committed offset (-1: none yet).
    pub committed: i64,
    /// Messages between the consumer's position and the partition's end.
    pub lag: i64,
    /// The partition's end (high watermark).
    pub end: i64,
}

/// A librdkafka log line as roo logs it: errors as errors, warnings as
/// warnings, the rest at debug; every client of roo's (consumer,
/// producer) logs through this.
pub fn log_client(
    brokers: &str,
    level: rdkafka::config::RDKafkaLogLevel,
    fac: &str,
    message: &str,
) {
    use rdkafka::config::RDKafkaLogLevel as L;
    match level {
        L::Emerg | L::Alert | L::Critical | L::Error => {
            tracing::error!("kafka {brokers}: {fac}: {message}")
        }
        L::Warning => tracing::warn!("kafka {brokers}: {fac}: {message}"),
        _ => tracing::debug!("kafka {brokers}: {fac}: {message}"),
    }
}

/// A partition's source name: `kafka://TOPIC/PARTITION`.
pub fn source_name(topic: &str, partition: i32) -> String {
    format!("kafka://{topic}/{partition}")
}

/// The topic and partition a [`source_name`] names.
pub fn parse_source_name(source: &str) -> Option<(&str, i32)> {
    let (topic, partition) = source.strip_prefix("kafka://")?.rsplit_once('/')?;
    Some((topic, partition.parse().ok()?))
}

/// A Kafka source's figures, for the metrics.
#[derive(Debug, Default)]
pub struct KafkaFigures {
    pub messages: AtomicU64,
    pub rebalances: AtomicU64,
    /// Times the partitions were paused because the pipeline was full.
    pub pauses: AtomicU64,
    /// Errors the client reported (brokers down, transport), retried.
    pub client_errors: AtomicU64,
    /// Offsets committed (each commit of stored offsets that succeeded).
    pub commits: AtomicU64,
    /// Partition snapshots written to the changelog and acknowledged.
    pub snapshots: AtomicU64,
    /// Partitions restored from a changelog snapshot.
    pub restores: AtomicU64,
    pub partitions: Mutex<BTreeMap<(String, i32), PartitionFigures>>,
}

impl KafkaFigures {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// The partitions' figures now.
    pub fn partitions(&self) -> BTreeMap<(String, i32), PartitionFigures> {
        self.partitions.lock().expect("not poisoned").clone()
    }
}

/// A running Kafka source; [`KafkaSource::stop`] ends it.
pub struct KafkaSource {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<JoinHandle<Result<(), KafkaError>>>,
    figures: Arc<KafkaFigures>,
    brokers: String,
}

impl KafkaSource {
    /// Checks the settings and the topics (when the brokers answer within
    /// [`METADATA_WAIT`]; unreachable brokers are reported and retried
    /// with backoff by the consumer thread, never waited on in silence),
    /// joins the group and starts consuming. Batches go to `tx`; `sent`
    /// is told each batch's records once the queue took it.
    pub fn start(
        config: KafkaSourceConfig,
        tx: Sender<IngestBatch>,
        sent: Box<dyn Fn(u64) + Send>,
    ) -> Result<Self, KafkaError> {
        let figures = Arc::new(KafkaFigures::default());
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let brokers = config.brokers.clone();
        let consumer = consumer::Consuming::new(config, figures.clone(), stop.clone())?;
        let thread = std::thread::Builder::new()
            .name("roo-kafka".into())
            .spawn(move || consumer.run(tx, sent))
            .map_err(|e| KafkaError::Client {
                brokers: brokers.clone(),
                message: format!("starting the consumer thread: {e}"),
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
            figures,
            brokers,
        })
    }

    pub fn figures(&self) -> Arc<KafkaFigures> {
        self.figures.clone()
    }

    /// Stops fetching, hands the pipeline nothing more, waits (up to
    /// [`STOP_DRAIN_MAX`]) for every batch handed on to be durable,
    /// commits, and leaves the group. The caller must have dropped its own
    /// senders of the ingest queue, so the pipeline can drain.
    pub fn stop(mut self) -> Result<(), KafkaError> {
        self.stop.store(true, Ordering::Release);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(KafkaError::Panicked {
                brokers: self.brokers.clone(),
            }),
            None => Ok(()),
        }
    }
}

impl Drop for KafkaSource {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}
