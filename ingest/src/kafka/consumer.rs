//! The consumer thread: joins the group, frames each assigned partition's
//! messages into batches, hands them on without ever blocking `poll`
//! (pausing the partitions while the pipeline is full), stores each
//! partition's offset as the pipeline reports it durable, and commits.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, TrySendError};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError as RdError;
use rdkafka::message::Message;

use super::changelog::{Changelog, Key};
use super::durable::{store_due, Durable, PartitionAcks};
use super::messages::MessageFramer;
use super::rebalance::{Context, Rebalanced};
use super::{KafkaError, KafkaFigures, KafkaSourceConfig, StartFrom};
use super::{METADATA_WAIT, RETRY_BACKOFF_MAX, STOP_DRAIN_MAX};
use crate::{IngestBatch, StreamAcks};

/// The longest `poll` waits when nothing is due sooner.
const POLL_MAX: Duration = Duration::from_millis(100);
/// How often a full pipeline is offered the held batches again.
const HELD_RETRY: Duration = Duration::from_millis(2);
/// Messages taken from the client between two rounds of housekeeping
/// (held batches offered, offsets stored, lingering batches closed).
const DRAIN_MAX: usize = 1024;

/// A partition as the loop keeps it.
struct Part {
    source: Arc<str>,
    /// Open while assigned.
    framer: Option<MessageFramer>,
    /// The number of the next batch handed on (per source, across
    /// assignments, so the sinks' order check holds).
    next_seq: u64,
}

/// A batch waiting for room in the ingest queue; `counted` once told to
/// the acks (which happens once, before its first offer).
struct Held {
    key: Key,
    batch: IngestBatch,
    counted: bool,
}

pub(super) struct Consuming {
    config: KafkaSourceConfig,
    consumer: BaseConsumer<Context>,
    figures: Arc<KafkaFigures>,
    durable: Arc<Durable>,
    stop: Arc<AtomicBool>,
    acks: Arc<StreamAcks>,
    changelog: Option<Arc<Changelog>>,
}

impl Consuming {
    pub fn new(
        config: KafkaSourceConfig,
        figures: Arc<KafkaFigures>,
        stop: Arc<AtomicBool>,
    ) -> Result<Self, KafkaError> {
        let brokers = config.brokers.clone();
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", &config.brokers)
            .set("group.id", &config.group)
            // roo commits itself, every commit_interval from the loop and
            // on every revoke and stop, and only what the partitions this
            // member holds have stored: librdkafka's automatic commit could
            // land a revoked partition's offsets after its next owner read
            // the older ones (a commit the revoke saw fail, sent again on
            // unassign), and the next owner would take the range between
            // for its own and replace files already committed.
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set(
                "auto.offset.reset",
                match config.start {
                    StartFrom::Latest => "latest",
                    _ => "earliest",
                },
            )
            .set(
                "queued.max.messages.kbytes",
                config.prefetch_kib.to_string(),
            )
            .set("statistics.interval.ms", "1000")
            .set("client.id", "roo");
        for (k, v) in &config.properties {
            client.set(k, v);
        }
        let durable = Arc::new(Durable::default());
        let changelog = match &config.changelog {
            Some(topic) => {
                let d = durable.clone();
                Some(Arc::new(Changelog::open(
                    &brokers,
                    topic,
                    &config.properties,
                    figures.clone(),
                    Box::new(move |key, position| d.logged(key, position)),
                )?))
            }
            None => None,
        };
        durable.state.lock().expect("not poisoned").by_changelog = changelog.is_some();
        let context = Context {
            brokers: brokers.clone(),
            figures: figures.clone(),
            durable: durable.clone(),
            acks: config.acks.clone(),
            handover: config.handover.clone(),
            changelog: changelog.clone(),
            fatal: Mutex::new(None),
            events: Mutex::new(Vec::new()),
            start: config.start,
            seen: Mutex::new(Default::default()),
            last_error_log: Mutex::new(None),
        };
        let consumer: BaseConsumer<Context> = client
            .create_with_context(context)
            .map_err(|e| setting_error(&brokers, &config, e))?;
        // The topics must exist; brokers that do not answer are reported
        // and retried by the thread.
        match consumer.fetch_metadata(None, METADATA_WAIT) {
            Ok(metadata) => {
                check_topics(&brokers, &config.topics, &metadata)?;
                if let Some(c) = &changelog {
                    c.check()?;
                }
            }
            Err(e) => tracing::error!(
                "kafka {brokers}: no broker answered within {} s ({e}); expected a Kafka broker at that address; retrying with backoff (roo_kafka_client_errors_total counts the failures)",
                METADATA_WAIT.as_secs()
            ),
        }
        Ok(Self {
            acks: config.acks.clone(),
            changelog,
            config,
            consumer,
            figures,
            durable,
            stop,
        })
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Waits with backoff until the brokers answer with the topics'
    /// metadata (a missing topic is an error), unless stopped first.
    fn reach(&self) -> Result<bool, KafkaError> {
        let brokers = &self.config.brokers;
        let mut wait = Duration::from_secs(1);
        loop {
            match self.consumer.fetch_metadata(None, METADATA_WAIT) {
                Ok(metadata) => {
                    check_topics(brokers, &self.config.topics, &metadata)?;
                    return Ok(true);
                }
                Err(e) => {
                    KafkaFigures::add(&self.figures.client_errors, 1);
                    tracing::warn!(
                        "kafka {brokers}: unreachable ({e}); trying again in {} s",
                        wait.as_secs()
                    );
                }
            }
            let until = Instant::now() + wait;
            while Instant::now() < until {
                if self.stopped() {
                    return Ok(false);
                }
                // poll serves the client's callbacks while waiting.
                let _ = self.consumer.poll(POLL_MAX);
            }
            wait = (wait * 2).min(RETRY_BACKOFF_MAX);
        }
    }

    pub fn run(
        self,
        tx: Sender<IngestBatch>,
        sent: Box<dyn Fn(u64) + Send>,
    ) -> Result<(), KafkaError> {
        let brokers = self.config.brokers.clone();
        if !self.reach()? {
            return Ok(());
        }
        let topics: Vec<&str> = self.config.topics.iter().map(String::as_str).collect();
        self.consumer
            .subscribe(&topics)
            .map_err(|e| KafkaError::Client {
                brokers: brokers.clone(),
                message: format!("subscribing to {topics:?}: {e}"),
            })?;
        let mut tx = Some(tx);
        let mut parts: HashMap<Key, Part> = HashMap::new();
        let mut held: VecDeque<Held> = VecDeque::new();
        let mut paused = false;
        let mut last_commit = Instant::now();
        while !self.stopped() {
            if let Some(e) = self
                .consumer
                .context()
                .fatal
                .lock()
                .expect("not poisoned")
                .take()
            {
                return Err(e);
            }
            let Some(queue) = &tx else { break };
            // Offer the held batches, oldest first.
            while let Some(mut h) = held.pop_front() {
                if !h.counted {
                    self.acks.handed_on(&h.batch);
                    h.counted = true;
                }
                let records = h.batch.records() as u64;
                let seq = h.batch.seq;
                let end = h.batch.offsets.end as i64;
                match queue.try_send(h.batch) {
                    Ok(()) => {
                        sent(records);
                        self.durable
                            .state
                            .lock()
                            .expect("not poisoned")
                            .handed
                            .insert(h.key.clone(), end);
                        if let Some(p) = parts.get_mut(&h.key) {
                            p.next_seq = seq + 1;
                        }
                    }
                    Err(TrySendError::Full(batch)) => {
                        h.batch = batch;
                        held.push_front(h);
                        break;
                    }
                    Err(TrySendError::Disconnected(_)) => {
                        tx = None;
                        held.clear();
                        break;
                    }
                }
            }
            if tx.is_none() {
                break;
            }
            if held.is_empty() == paused {
                self.pause(!paused);
                paused = !paused;
            }
            store_due(&self.consumer, &self.durable);
            if last_commit.elapsed() >= self.config.commit_interval {
                last_commit = Instant::now();
                self.ask_cuts(&parts, false);
                // Nothing stored since the last commit is NoOffset: quiet.
                let _ = self.consumer.commit_consumer_state(CommitMode::Async);
            }
            let now = Instant::now();
            let mut next = (now + POLL_MAX).min(last_commit + self.config.commit_interval);
            for (key, part) in parts.iter_mut() {
                if let Some(f) = &mut part.framer {
                    let (batch, deadline) = f.poll(now);
                    if let Some(b) = batch {
                        held.push_back(Held {
                            key: key.clone(),
                            batch: b,
                            counted: false,
                        });
                    }
                    if let Some(d) = deadline {
                        next = next.min(d);
                    }
                }
            }
            let wait = if held.is_empty() {
                next.saturating_duration_since(now)
            } else {
                HELD_RETRY
            };
            // One wait, then what has arrived without waiting, up to
            // DRAIN_MAX messages or until a batch is held: the checks
            // above run once per drain, not once per message.
            let mut polled = self.consumer.poll(wait);
            let mut drained = 0;
            let mut last: Option<Key> = None;
            loop {
                // The rebalances this poll served come first: a message
                // of a partition just assigned needs its framer.
                self.serve_rebalances(&mut parts, &mut held)?;
                match polled {
                    Some(Ok(message)) => {
                        KafkaFigures::add(&self.figures.messages, 1);
                        let key = match last.take() {
                            Some(k) if &*k.0 == message.topic() && k.1 == message.partition() => k,
                            _ => (Arc::from(message.topic()), message.partition()),
                        };
                        // A message of a partition no longer assigned is
                        // left for its owner (nothing of it is stored).
                        if let Some(f) = parts.get_mut(&key).and_then(|p| p.framer.as_mut()) {
                            if let Some(b) =
                                f.push(message.offset(), message.payload().unwrap_or(&[]))
                            {
                                held.push_back(Held {
                                    key: key.clone(),
                                    batch: b,
                                    counted: false,
                                });
                            }
                        }
                        last = Some(key);
                    }
                    Some(Err(e)) => {
                        KafkaFigures::add(&self.figures.client_errors, 1);
                        tracing::debug!("kafka {brokers}: {e}");
                    }
                    None => break,
                }
                drained += 1;
                if drained >= DRAIN_MAX || !held.is_empty() || self.stopped() {
                    break;
                }
                polled = self.consumer.poll(Duration::ZERO);
            }
        }
        // Stop: nothing more is handed on (what was read but not handed
        // on is read again from the committed offset), the pipeline
        // drains, and what it reports durable is committed.
        // With a changelog every partition is cut where its last batch
        // handed on ends, before the queue closes.
        self.ask_cuts(&parts, true);
        drop(tx);
        drop(held);
        if !paused {
            self.pause(true);
        }
        let until = Instant::now() + STOP_DRAIN_MAX;
        loop {
            store_due(&self.consumer, &self.durable);
            let open = self.durable.state.lock().expect("not poisoned").open;
            if open == 0 || Instant::now() >= until {
                if let Some(c) = &self.changelog {
                    c.flush();
                    store_due(&self.consumer, &self.durable);
                }
                if open > 0 {
                    tracing::warn!("kafka {brokers}: the pipeline did not report its last batches durable within {} s; committing what it did", STOP_DRAIN_MAX.as_secs());
                }
                break;
            }
            let _ = self.consumer.poll(Duration::from_millis(20));
            let s = self.durable.state.lock().expect("not poisoned");
            let _ = self
                .durable
                .changed
                .wait_timeout(s, Duration::from_millis(20));
        }
        store_due(&self.consumer, &self.durable);
        if let Err(e) = self.consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::debug!("kafka {brokers}: commit at stop: {e}");
        }
        self.consumer.unsubscribe();
        Ok(())
    }

    /// With a changelog, asks the operators for a cut of every assigned
    /// partition that handed batches on since its last one (`release`: of
    /// every assigned partition, dropping its state: the source stops).
    fn ask_cuts(&self, parts: &HashMap<Key, Part>, release: bool) {
        if self.changelog.is_none() {
            return;
        }
        let mut guard = self.durable.state.lock().expect("not poisoned");
        let state = &mut *guard;
        for (key, part) in parts.iter().filter(|(_, p)| p.framer.is_some()) {
            let Some(&end) = state.handed.get(key) else {
                continue;
            };
            let last = state.cut_asked.entry(key.clone()).or_insert(-1);
            if end > *last || release {
                *last = end;
                self.config
                    .handover
                    .request_cut(&part.source, end as u64, release);
            }
        }
    }

    /// Serves the rebalances the last poll saw, in order.
    fn serve_rebalances(
        &self,
        parts: &mut HashMap<Key, Part>,
        held: &mut VecDeque<Held>,
    ) -> Result<(), KafkaError> {
        let events =
            std::mem::take(&mut *self.consumer.context().events.lock().expect("not poisoned"));
        for event in events {
            match event {
                Rebalanced::Assigned(keys) => {
                    for key in keys {
                        self.assign(parts, key)?;
                    }
                }
                Rebalanced::Revoked(keys) => {
                    for key in keys {
                        self.revoke(parts, held, &key);
                    }
                }
            }
        }
        Ok(())
    }

    /// Pauses (or resumes) every assigned partition.
    fn pause(&self, pause: bool) {
        let Ok(assignment) = self.consumer.assignment() else {
            return;
        };
        let result = if pause {
            KafkaFigures::add(&self.figures.pauses, 1);
            self.consumer.pause(&assignment)
        } else {
            self.consumer.resume(&assignment)
        };
        if let Err(e) = result {
            tracing::warn!("kafka {}: pause or resume: {e}", self.config.brokers);
        }
    }

    fn assign(&self, parts: &mut HashMap<Key, Part>, key: Key) -> Result<(), KafkaError> {
        let part = parts.entry(key.clone()).or_insert_with(|| Part {
            source: Arc::from(super::source_name(&key.0, key.1)),
            framer: None,
            next_seq: 0,
        });
        let framer = MessageFramer::new(
            part.source.clone(),
            &self.config.format,
            self.config.schema.clone(),
            self.config.limits,
            part.next_seq,
        )
        .map_err(|message| KafkaError::Client {
            brokers: self.config.brokers.clone(),
            message: format!("{}: {message}", part.source),
        })?;
        part.framer = Some(framer);
        self.durable.assigned(&key);
        self.acks.open(
            &part.source,
            Box::new(PartitionAcks {
                durable: self.durable.clone(),
                key: key.clone(),
                changelog: self.changelog.clone(),
            }),
        );
        self.figures
            .partitions
            .lock()
            .expect("not poisoned")
            .entry((key.0.to_string(), key.1))
            .or_insert(super::PartitionFigures {
                committed: -1,
                ..Default::default()
            })
            .assigned = true;
        Ok(())
    }

    fn revoke(&self, parts: &mut HashMap<Key, Part>, held: &mut VecDeque<Held>, key: &Key) {
        let Some(part) = parts.get_mut(key) else {
            return;
        };
        // Batches not handed on and the open batch are dropped: the next
        // owner reads them from the committed offset. The seq goes on from
        // the last batch handed on.
        held.retain(|h| &h.key != key);
        part.framer = None;
        self.acks.forget(&part.source);
        if let Some(f) = self
            .figures
            .partitions
            .lock()
            .expect("not poisoned")
            .get_mut(&(key.0.to_string(), key.1))
        {
            f.assigned = false;
        }
    }
}

/// Every topic named must be in the brokers' metadata.
fn check_topics(
    brokers: &str,
    topics: &[String],
    metadata: &rdkafka::metadata::Metadata,
) -> Result<(), KafkaError> {
    let known: Vec<String> = metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none() && !t.partitions().is_empty())
        .map(|t| t.name().to_string())
        .collect();
    for topic in topics {
        if !known.contains(topic) {
            return Err(KafkaError::MissingTopic {
                brokers: brokers.to_string(),
                topic: topic.clone(),
                known,
            });
        }
    }
    Ok(())
}

fn setting_error(brokers: &str, config: &KafkaSourceConfig, e: RdError) -> KafkaError {
    let message = e.to_string();
    let setting = config
        .properties
        .iter()
        .find(|(k, _)| message.contains(k.as_str()));
    match setting {
        Some((k, v)) => KafkaError::Setting {
            brokers: brokers.to_string(),
            setting: k.clone(),
            value: v.clone(),
            message,
        },
        None => KafkaError::Client {
            brokers: brokers.to_string(),
            message: format!("creating the consumer: {message}"),
        },
    }
}
