//! The changelog: each partition's keyed state, kept in Kafka itself (a
//! compacted topic per pipeline, as Kafka Streams keeps its stores), so a
//! partition's state follows it to its next owner on any machine with
//! nothing but the brokers shared.
//!
//! A partition's snapshot is written at a cut ([`crate::Handover`]): the
//! state at source offset P, once every sink holds every row before P
//! durably. It goes to changelog partition `source partition mod
//! changelog partitions`, as chunks of at most [`CHUNK_BYTES`] and then a
//! head naming them:
//!
//! ```text
//! key TOPIC/PARTITION/SLOT/I   "ROOCHNK1" generation u64 LE, bytes     (chunk I)
//! key TOPIC/PARTITION          "ROOCLOG1" generation u64, position u64,
//!                              slot u8, chunks u32, length u64, crc32 u32
//! ```
//!
//! Snapshots alternate between two slots, so compaction (which keeps the
//! newest message of each key) never leaves a head whose chunks were
//! replaced by a later, unfinished snapshot. The head is written last and
//! counts only once the brokers acknowledged it and every chunk before it
//! (idempotent producer: in order, no duplicates).
//!
//! The head's position is where the partition resumes: its next owner
//! restores the snapshot and reads from P (not from the group's committed
//! offset, which the brokers may have refused during a rebalance). Every
//! row before P is in a sink; rows after P that a sink holds (a member
//! killed after it wrote them, before its next cut) are rewritten by the
//! next owner in files of the same names, never twice.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError as RdError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientContext;

use super::{KafkaError, KafkaFigures};

/// A partition: topic and number.
pub(super) type Key = (Arc<str>, i32);

/// The largest chunk of a snapshot in one message (under Kafka's default
/// `message.max.bytes` of 1 MiB).
pub const CHUNK_BYTES: usize = 512 << 10;

/// How long a restore may take reading a changelog partition.
pub const RESTORE_WAIT: Duration = Duration::from_secs(60);

/// How long a stop waits for the snapshots written to be acknowledged.
pub const FLUSH_WAIT: Duration = Duration::from_secs(30);

const HEAD_MAGIC: &[u8; 8] = b"ROOCLOG1";
const CHUNK_MAGIC: &[u8; 8] = b"ROOCHNK1";
const HEAD_BYTES: usize = 8 + 8 + 8 + 1 + 4 + 8 + 4;

/// A partition's snapshot as read back.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Restored {
    pub position: u64,
    pub snapshot: Vec<u8>,
}

/// Told a partition's position once its snapshot counts (delivered).
pub(super) type OnLogged = Box<dyn Fn(&Key, u64) + Send + Sync>;

/// A head: which snapshot stands, and where.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Head {
    generation: u64,
    position: u64,
    slot: u8,
    chunks: u32,
    len: u64,
    crc: u32,
}

impl Head {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEAD_BYTES);
        out.extend_from_slice(HEAD_MAGIC);
        out.extend_from_slice(&self.generation.to_le_bytes());
        out.extend_from_slice(&self.position.to_le_bytes());
        out.push(self.slot);
        out.extend_from_slice(&self.chunks.to_le_bytes());
        out.extend_from_slice(&self.len.to_le_bytes());
        out.extend_from_slice(&self.crc.to_le_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != HEAD_BYTES || &bytes[..8] != HEAD_MAGIC {
            return None;
        }
        let u64_at = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().expect("8"));
        Some(Self {
            generation: u64_at(8),
            position: u64_at(16),
            slot: bytes[24],
            chunks: u32::from_le_bytes(bytes[25..29].try_into().expect("4")),
            len: u64_at(29),
            crc: u32::from_le_bytes(bytes[37..41].try_into().expect("4")),
        })
    }
}

fn head_key(key: &Key) -> String {
    format!("{}/{}", key.0, key.1)
}

fn chunk_key(key: &Key, slot: u8, i: u32) -> String {
    format!("{}/{}/{slot}/{i}", key.0, key.1)
}

/// What a delivery report is about.
struct Delivery {
    key: Key,
    generation: u64,
    /// The head's position (chunks: none).
    head: Option<u64>,
}

/// The producer's context: delivery reports make a snapshot count.
struct Written {
    brokers: String,
    topic: String,
    figures: Arc<KafkaFigures>,
    /// Snapshots a chunk of which was not delivered.
    failed: Mutex<HashSet<(Key, u64)>>,
    /// Told a partition's position once its snapshot counts.
    logged: OnLogged,
}

impl ClientContext for Written {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        super::log_client(&self.brokers, level, fac, message);
    }

    fn error(&self, error: RdError, reason: &str) {
        KafkaFigures::add(&self.figures.client_errors, 1);
        tracing::debug!("kafka {}: changelog: {error}: {reason}", self.brokers);
    }
}

impl ProducerContext for Written {
    type DeliveryOpaque = Box<Delivery>;

    fn delivery(&self, result: &DeliveryResult<'_>, d: Box<Delivery>) {
        let mut failed = self.failed.lock().expect("not poisoned");
        let id = (d.key.clone(), d.generation);
        if let Err((e, _)) = result {
            KafkaFigures::add(&self.figures.client_errors, 1);
            tracing::error!(
                "kafka {}: changelog {}: the snapshot of {}/{} (generation {}) was not written: {e}; the partition's offset waits for its next cut",
                self.brokers, self.topic, d.key.0, d.key.1, d.generation
            );
            failed.insert(id);
            return;
        }
        if let Some(position) = d.head {
            if !failed.remove(&id) {
                KafkaFigures::add(&self.figures.snapshots, 1);
                (self.logged)(&d.key, position);
            }
        }
    }
}

/// The reader's context: librdkafka's log lines as roo logs them.
struct Reading {
    brokers: String,
}

impl ClientContext for Reading {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        super::log_client(&self.brokers, level, fac, message);
    }
}

impl ConsumerContext for Reading {}

/// A pipeline's changelog topic: writes snapshots, reads the newest back.
pub(super) struct Changelog {
    brokers: String,
    topic: String,
    /// The topic's partition count, once the brokers told it.
    partitions: Mutex<Option<i32>>,
    producer: ThreadedProducer<Written>,
    reader: BaseConsumer<Reading>,
    /// partition → (generation, slot) of its newest head, this process's
    /// or the one it restored.
    heads: Mutex<HashMap<Key, (u64, u8)>>,
}

impl Changelog {
    /// Opens the topic (which must exist: a compacted topic, created with
    /// the source's partition count; roo does not create topics: see
    /// [`Self::check`]).
    pub fn open(
        brokers: &str,
        topic: &str,
        properties: &std::collections::BTreeMap<String, String>,
        figures: Arc<KafkaFigures>,
        logged: OnLogged,
    ) -> Result<Self, KafkaError> {
        let client_error = |what: &str, e: RdError| KafkaError::Client {
            brokers: brokers.to_string(),
            message: format!("changelog {topic}: {what}: {e}"),
        };
        let mut producer_config = ClientConfig::new();
        producer_config
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("client.id", "roo-changelog");
        let mut reader_config = ClientConfig::new();
        reader_config
            .set("bootstrap.servers", brokers)
            .set("group.id", "roo-changelog-reader")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set("client.id", "roo-changelog");
        // Security and the like apply to these clients too; group and
        // consumer tuning settings are the source's alone.
        for (k, v) in properties.iter().filter(|(k, _)| {
            k.starts_with("security.") || k.starts_with("ssl.") || k.starts_with("sasl.")
        }) {
            producer_config.set(k, v);
            reader_config.set(k, v);
        }
        let producer: ThreadedProducer<Written> = producer_config
            .create_with_context(Written {
                brokers: brokers.to_string(),
                topic: topic.to_string(),
                figures,
                failed: Mutex::new(HashSet::new()),
                logged,
            })
            .map_err(|e| client_error("creating the producer", e))?;
        let reader: BaseConsumer<Reading> = reader_config
            .create_with_context(Reading {
                brokers: brokers.to_string(),
            })
            .map_err(|e| client_error("creating the reader", e))?;
        Ok(Self {
            brokers: brokers.to_string(),
            topic: topic.to_string(),
            partitions: Mutex::new(None),
            producer,
            reader,
            heads: Mutex::new(HashMap::new()),
        })
    }

    /// Refuses a topic the brokers say does not exist; brokers that do not
    /// answer now are asked again at the first restore.
    pub fn check(&self) -> Result<(), KafkaError> {
        match self.partitions() {
            Err(e @ KafkaError::MissingChangelog { .. }) => Err(e),
            Err(e) => {
                tracing::debug!("{e} (asked again at the first restore)");
                Ok(())
            }
            Ok(_) => Ok(()),
        }
    }

    /// The topic's partition count (asked of the brokers once).
    fn partitions(&self) -> Result<i32, KafkaError> {
        let mut known = self.partitions.lock().expect("not poisoned");
        if let Some(n) = *known {
            return Ok(n);
        }
        let metadata = self
            .reader
            .fetch_metadata(Some(&self.topic), super::METADATA_WAIT)
            .map_err(|e| KafkaError::Client {
                brokers: self.brokers.clone(),
                message: format!("changelog {}: reading its metadata: {e}", self.topic),
            })?;
        let n = metadata
            .topics()
            .iter()
            .find(|t| t.name() == self.topic && t.error().is_none())
            .map_or(0, |t| t.partitions().len() as i32);
        if n == 0 {
            return Err(KafkaError::MissingChangelog {
                brokers: self.brokers.clone(),
                topic: self.topic.clone(),
            });
        }
        *known = Some(n);
        Ok(n)
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The changelog partition of source partition `key`.
    fn partition_of(&self, key: &Key) -> Result<i32, KafkaError> {
        Ok(key.1.rem_euclid(self.partitions()?))
    }

    /// Writes `key`'s snapshot at `position` (asynchronously: it counts
    /// once delivered, see [`Written`]). Waits while the producer's queue
    /// is full: backpressure on the pipeline's sink stage.
    pub fn write(&self, key: &Key, position: u64, snapshot: &[u8]) {
        let (generation, slot) = {
            let mut heads = self.heads.lock().expect("not poisoned");
            let next = heads.get(key).map_or((1, 0), |(g, s)| (g + 1, 1 - s));
            heads.insert(key.clone(), next);
            next
        };
        // Known: the partition was restored (or found empty) first.
        let Ok(partition) = self.partition_of(key) else {
            tracing::error!(
                "kafka {}: changelog {}: the snapshot of {}/{} is not written: the topic's partitions are unknown",
                self.brokers, self.topic, key.0, key.1
            );
            return;
        };
        let chunks: Vec<&[u8]> = if snapshot.is_empty() {
            Vec::new()
        } else {
            snapshot.chunks(CHUNK_BYTES).collect()
        };
        let mut value = Vec::with_capacity(CHUNK_BYTES + 16);
        for (i, chunk) in chunks.iter().enumerate() {
            value.clear();
            value.extend_from_slice(CHUNK_MAGIC);
            value.extend_from_slice(&generation.to_le_bytes());
            value.extend_from_slice(chunk);
            let k = chunk_key(key, slot, i as u32);
            self.send(
                &k,
                &value,
                partition,
                Delivery {
                    key: key.clone(),
                    generation,
                    head: None,
                },
            );
        }
        let head = Head {
            generation,
            position,
            slot,
            chunks: chunks.len() as u32,
            len: snapshot.len() as u64,
            crc: crc32fast::hash(snapshot),
        };
        self.send(
            &head_key(key),
            &head.encode(),
            partition,
            Delivery {
                key: key.clone(),
                generation,
                head: Some(position),
            },
        );
    }

    fn send(&self, key: &str, value: &[u8], partition: i32, delivery: Delivery) {
        let mut record = BaseRecord::with_opaque_to(&self.topic, Box::new(delivery))
            .partition(partition)
            .key(key)
            .payload(value);
        loop {
            match self.producer.send(record) {
                Ok(()) => return,
                Err((e, r)) => {
                    record = r;
                    if !matches!(
                        e,
                        RdError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull)
                    ) {
                        tracing::error!(
                            "kafka {}: changelog {}: writing {key}: {e}; retrying",
                            self.brokers,
                            self.topic
                        );
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }

    /// Waits (up to [`FLUSH_WAIT`]) for every snapshot written to be
    /// acknowledged.
    pub fn flush(&self) {
        if let Err(e) = self.producer.flush(FLUSH_WAIT) {
            tracing::warn!(
                "kafka {}: changelog {}: snapshots not acknowledged within {} s: {e}",
                self.brokers,
                self.topic,
                FLUSH_WAIT.as_secs()
            );
        }
    }

    /// The newest whole snapshot of `key`, if any: the changelog
    /// partition read from its start to its end, keeping the newest head
    /// and chunks of `key`.
    pub fn read(&self, key: &Key) -> Result<Option<Restored>, KafkaError> {
        let partition = self.partition_of(key)?;
        let error = |message: String| KafkaError::Changelog {
            brokers: self.brokers.clone(),
            topic: self.topic.clone(),
            partition,
            message,
        };
        let (low, high) = self
            .reader
            .fetch_watermarks(&self.topic, partition, super::METADATA_WAIT)
            .map_err(|e| error(format!("reading its offsets: {e}")))?;
        if high <= low {
            return Ok(None);
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, partition, Offset::Offset(low))
            .map_err(|e| error(e.to_string()))?;
        self.reader
            .assign(&tpl)
            .map_err(|e| error(format!("assigning: {e}")))?;
        let wanted_head = head_key(key);
        let chunk_prefix = format!("{wanted_head}/");
        let mut head: Option<Head> = None;
        let mut chunks: HashMap<(u8, u32), (u64, Vec<u8>)> = HashMap::new();
        let until = Instant::now() + RESTORE_WAIT;
        let result = loop {
            if Instant::now() >= until {
                break Err(error(format!(
                    "read to offset {high} not finished within {} s",
                    RESTORE_WAIT.as_secs()
                )));
            }
            let message = match self.reader.poll(Duration::from_millis(100)) {
                None => continue,
                Some(Err(e)) => {
                    tracing::debug!("kafka {}: changelog {}: {e}", self.brokers, self.topic);
                    continue;
                }
                Some(Ok(m)) => m,
            };
            let offset = message.offset();
            if let (Some(k), Some(v)) = (message.key(), message.payload()) {
                if k == wanted_head.as_bytes() {
                    head = Some(Head::decode(v).ok_or_else(|| {
                        error(format!(
                            "the head at offset {offset} is not a roo changelog head"
                        ))
                    })?);
                } else if let Some(rest) = k.strip_prefix(chunk_prefix.as_bytes()) {
                    let rest = std::str::from_utf8(rest).unwrap_or("");
                    let parsed = rest
                        .split_once('/')
                        .and_then(|(s, i)| Some((s.parse::<u8>().ok()?, i.parse::<u32>().ok()?)));
                    if let (Some(at), true) = (parsed, v.len() >= 16 && &v[..8] == CHUNK_MAGIC) {
                        let generation = u64::from_le_bytes(v[8..16].try_into().expect("8"));
                        chunks.insert(at, (generation, v[16..].to_vec()));
                    }
                }
            }
            if offset >= high - 1 {
                break Ok(());
            }
        };
        let _ = self.reader.unassign();
        result?;
        let Some(head) = head else {
            return Ok(None);
        };
        let mut snapshot = Vec::with_capacity(head.len as usize);
        for i in 0..head.chunks {
            match chunks.remove(&(head.slot, i)) {
                Some((generation, bytes)) if generation == head.generation => {
                    snapshot.extend_from_slice(&bytes)
                }
                _ => {
                    return Err(error(format!(
                        "snapshot generation {} of {}/{}: chunk {i} of {} is missing",
                        head.generation, key.0, key.1, head.chunks
                    )))
                }
            }
        }
        if snapshot.len() as u64 != head.len || crc32fast::hash(&snapshot) != head.crc {
            return Err(error(format!(
                "snapshot generation {} of {}/{}: {} bytes with CRC {:08x}, the head says {} bytes with CRC {:08x}",
                head.generation,
                key.0,
                key.1,
                snapshot.len(),
                crc32fast::hash(&snapshot),
                head.len,
                head.crc
            )));
        }
        self.heads
            .lock()
            .expect("not poisoned")
            .insert(key.clone(), (head.generation, head.slot));
        Ok(Some(Restored {
            position: head.position,
            snapshot,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_round_trips_and_anything_else_is_refused() {
        let head = Head {
            generation: 7,
            position: 1234,
            slot: 1,
            chunks: 3,
            len: 1_200_000,
            crc: 0xdead_beef,
        };
        let bytes = head.encode();
        assert_eq!(bytes.len(), HEAD_BYTES);
        assert_eq!(Head::decode(&bytes), Some(head));
        assert_eq!(Head::decode(&bytes[..HEAD_BYTES - 1]), None);
        let mut foreign = bytes.clone();
        foreign[0] = b'X';
        assert_eq!(Head::decode(&foreign), None);
    }
}
