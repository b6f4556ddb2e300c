//! The Kafka sink: each row a message (NDJSON or a CSV line, keyed by a
//! column's value) or each batch one Arrow IPC stream, through librdkafka's
//! idempotent producer (`enable.idempotence`, `acks=all`: no message
//! written twice or out of order by the producer's own retries). A batch is
//! durable once the brokers acknowledged every message of it; the
//! pipeline commits source offsets only then. Output is at least once end
//! to end: after a crash the batches not yet acknowledged to the source are
//! read and produced again.
//!
//! Bounded: librdkafka's queue holds at most [`QUEUE_KIB`] KiB and
//! [`QUEUE_MESSAGES`] messages; a full queue makes `write` wait (serving
//! delivery reports) — backpressure on the pipeline, never a drop.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use arrow_array::RecordBatch;
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError as RdError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;

use super::SinkError;

/// librdkafka's producer queue bound, KiB.
pub const QUEUE_KIB: u64 = 64 << 10;
/// librdkafka's producer queue bound, messages.
pub const QUEUE_MESSAGES: u64 = 1_000_000;
/// How long a close waits for the brokers to acknowledge what is queued.
pub const FLUSH_WAIT: Duration = Duration::from_secs(60);
/// How long opening waits for the topic's metadata.
const METADATA_WAIT: Duration = Duration::from_secs(5);

/// How rows become messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KafkaFormat {
    /// A JSON object per row.
    Ndjson,
    /// A CSV line per row (no header).
    Csv,
    /// One Arrow IPC stream per batch.
    Arrow,
}

impl KafkaFormat {
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "ndjson" => Some(Self::Ndjson),
            "csv" => Some(Self::Csv),
            "arrow" => Some(Self::Arrow),
            _ => None,
        }
    }
}

/// A Kafka sink's settings.
#[derive(Clone, Debug)]
pub struct KafkaSinkSpec {
    pub brokers: String,
    pub topic: String,
    pub format: KafkaFormat,
    /// The column whose value keys each message (row formats only).
    pub key: Option<String>,
    /// librdkafka settings passed through, after roo's own.
    pub properties: BTreeMap<String, String>,
}

/// Delivery reports: messages outstanding per batch number, and the first
/// failure.
struct Deliveries {
    brokers: String,
    outstanding: Mutex<BTreeMap<u64, usize>>,
    failed: Mutex<Option<String>>,
}

impl ClientContext for Deliveries {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        roo_ingest::kafka_log_client(&self.brokers, level, fac, message);
    }

    fn error(&self, error: RdError, reason: &str) {
        tracing::warn!("kafka {}: {error}: {reason} (retrying)", self.brokers);
    }
}

impl ProducerContext for Deliveries {
    /// The message's batch number, carried as is: no allocation per message.
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, number: usize) {
        let number = number as u64;
        match result {
            Ok(_) => {
                let mut outstanding = self.outstanding.lock().expect("not poisoned");
                if let Some(n) = outstanding.get_mut(&number) {
                    *n -= 1;
                    if *n == 0 {
                        outstanding.remove(&number);
                    }
                }
            }
            Err((e, _)) => {
                self.failed
                    .lock()
                    .expect("not poisoned")
                    .get_or_insert_with(|| {
                        format!("a message of batch {number} was not delivered: {e}")
                    });
            }
        }
    }
}

pub(crate) struct KafkaSink {
    spec: KafkaSinkSpec,
    producer: BaseProducer<Deliveries>,
    written: u64,
    buffer: Vec<u8>,
}

impl KafkaSink {
    pub fn open(spec: &KafkaSinkSpec) -> Result<Self, SinkError> {
        let error = |message: String| SinkError::Kafka {
            brokers: spec.brokers.clone(),
            topic: spec.topic.clone(),
            message,
        };
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", &spec.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("queue.buffering.max.kbytes", QUEUE_KIB.to_string())
            .set("queue.buffering.max.messages", QUEUE_MESSAGES.to_string())
            .set("linger.ms", "5")
            .set("client.id", "roo");
        for (k, v) in &spec.properties {
            client.set(k, v);
        }
        let producer: BaseProducer<Deliveries> = client
            .create_with_context(Deliveries {
                brokers: spec.brokers.clone(),
                outstanding: Mutex::new(BTreeMap::new()),
                failed: Mutex::new(None),
            })
            .map_err(|e| error(format!("creating the producer: {e}")))?;
        match producer
            .client()
            .fetch_metadata(Some(&spec.topic), METADATA_WAIT)
        {
            Ok(m) => {
                let missing = m
                    .topics()
                    .iter()
                    .find(|t| t.name() == spec.topic)
                    .is_none_or(|t| t.error().is_some() || t.partitions().is_empty());
                if missing {
                    return Err(error(
                        "the topic does not exist; expected a topic created before the pipeline starts"
                            .into(),
                    ));
                }
            }
            Err(e) => tracing::error!(
                "kafka {}: no broker answered within {} s ({e}); expected a Kafka broker at that address; messages wait in the producer's queue and are retried",
                spec.brokers,
                METADATA_WAIT.as_secs()
            ),
        }
        Ok(Self {
            spec: spec.clone(),
            producer,
            written: 0,
            buffer: Vec::new(),
        })
    }

    fn error(&self, message: String) -> SinkError {
        SinkError::Kafka {
            brokers: self.spec.brokers.clone(),
            topic: self.spec.topic.clone(),
            message,
        }
    }

    /// Produces batch `number`'s messages, waiting while the producer's
    /// queue is full.
    pub fn write(&mut self, batch: &RecordBatch, number: u64) -> Result<(), SinkError> {
        let messages = self.encode(batch)?;
        let keys = self.keys(batch)?;
        if !messages.is_empty() {
            self.producer
                .context()
                .outstanding
                .lock()
                .expect("not poisoned")
                .insert(number, messages.len());
        }
        for (i, range) in messages.iter().enumerate() {
            let payload = &self.buffer[range.clone()];
            let key = keys.as_ref().and_then(|k| k[i].as_deref());
            let mut record =
                BaseRecord::with_opaque_to(&self.spec.topic, number as usize).payload(payload);
            if let Some(key) = key {
                record = record.key(key.as_bytes());
            }
            let mut record = record;
            loop {
                match self.producer.send(record) {
                    Ok(()) => break,
                    Err((RdError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        record = r;
                        self.producer.poll(Duration::from_millis(20));
                    }
                    Err((e, _)) => return Err(self.error(format!("producing: {e}"))),
                }
            }
        }
        self.producer.poll(Duration::ZERO);
        self.written = number;
        Ok(())
    }

    /// Each row's key (None for a null), when the sink names a key column.
    fn keys(&self, batch: &RecordBatch) -> Result<Option<Vec<Option<String>>>, SinkError> {
        let Some(name) = &self.spec.key else {
            return Ok(None);
        };
        let column = batch.column_by_name(name).ok_or_else(|| {
            self.error(format!(
                "no key column '{name}' in the rows; they have {:?}",
                batch
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| f.name())
                    .collect::<Vec<_>>()
            ))
        })?;
        let formatter = ArrayFormatter::try_new(column.as_ref(), &FormatOptions::default())
            .map_err(|e| self.error(format!("key column '{name}': {e}")))?;
        Ok(Some(
            (0..batch.num_rows())
                .map(|i| column.is_valid(i).then(|| formatter.value(i).to_string()))
                .collect(),
        ))
    }

    /// Encodes `batch` into the buffer; returns each message's bytes.
    fn encode(&mut self, batch: &RecordBatch) -> Result<Vec<std::ops::Range<usize>>, SinkError> {
        self.buffer.clear();
        match self.spec.format {
            KafkaFormat::Arrow => {
                let mut w =
                    arrow_ipc::writer::StreamWriter::try_new(&mut self.buffer, &batch.schema())
                        .and_then(|mut w| {
                            w.write(batch)?;
                            w.finish()?;
                            Ok(())
                        });
                if let Err(e) = w.as_mut() {
                    return Err(self.error(format!("encoding Arrow IPC: {e}")));
                }
                // One message: the whole stream.
                Ok(std::iter::once(0..self.buffer.len()).collect())
            }
            KafkaFormat::Ndjson => {
                let mut w = arrow_json::LineDelimitedWriter::new(&mut self.buffer);
                let done = w.write(batch).and_then(|()| w.finish());
                drop(w);
                done.map_err(|e| self.error(format!("encoding JSON: {e}")))?;
                Ok(lines(&self.buffer, false))
            }
            KafkaFormat::Csv => {
                let mut w = arrow_csv::WriterBuilder::new()
                    .with_header(false)
                    .build(&mut self.buffer);
                let done = w.write(batch);
                drop(w);
                done.map_err(|e| self.error(format!("encoding CSV: {e}")))?;
                Ok(lines(&self.buffer, true))
            }
        }
    }

    pub fn tick(&mut self) -> Result<(), SinkError> {
        self.producer.poll(Duration::ZERO);
        self.check()
    }

    fn check(&self) -> Result<(), SinkError> {
        match self
            .producer
            .context()
            .failed
            .lock()
            .expect("not poisoned")
            .clone()
        {
            Some(message) => Err(self.error(message)),
            None => Ok(()),
        }
    }

    /// The highest batch number whose every message the brokers hold.
    pub fn durable_through(&mut self) -> Result<u64, SinkError> {
        self.producer.poll(Duration::ZERO);
        self.check()?;
        let outstanding = self
            .producer
            .context()
            .outstanding
            .lock()
            .expect("not poisoned");
        Ok(match outstanding.keys().next() {
            Some(first) => first - 1,
            None => self.written,
        })
    }

    /// Waits (up to [`FLUSH_WAIT`]) for every message to be acknowledged.
    pub fn close(&mut self) -> Result<(), SinkError> {
        if let Err(e) = self.producer.flush(FLUSH_WAIT) {
            return Err(self.error(format!(
                "the brokers did not acknowledge every message within {} s: {e}",
                FLUSH_WAIT.as_secs()
            )));
        }
        self.check()
    }
}

/// Each line's bytes (without its line end); `quoted`: a line end inside
/// double quotes is part of a field (CSV).
fn lines(buffer: &[u8], quoted: bool) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    if quoted {
        // Every quote and line end, in order: a line end counts outside
        // quotes only.
        let mut in_quotes = false;
        for i in memchr::memchr2_iter(b'"', b'\n', buffer) {
            if buffer[i] == b'"' {
                in_quotes = !in_quotes;
            } else if !in_quotes {
                out.push(start..i);
                start = i + 1;
            }
        }
    } else {
        for i in memchr::memchr_iter(b'\n', buffer) {
            out.push(start..i);
            start = i + 1;
        }
    }
    if start < buffer.len() {
        out.push(start..buffer.len());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::lines;

    #[test]
    fn lines_split_outside_quotes() {
        let csv = b"1,\"a\nb\",2\n3,x,4\n";
        let got: Vec<&[u8]> = lines(csv, true).into_iter().map(|r| &csv[r]).collect();
        assert_eq!(got, vec![&b"1,\"a\nb\",2"[..], &b"3,x,4"[..]]);
        let json = b"{\"a\":1}\n{\"a\":2}";
        assert_eq!(lines(json, false).len(), 2);
    }
}
