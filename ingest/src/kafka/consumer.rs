//! The consumer thread: joins the group, frames each assigned partition's
//! messages into batches, hands them on without ever blocking `poll`
//! (pausing the partitions while the pipeline is full), stores each
//! partition's offset as the pipeline reports it durable, and commits.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, TrySendError};
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaError as RdError;
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::ClientContext;

use super::changelog::{Changelog, Key};
use super::messages::MessageFramer;
use super::{KafkaError, KafkaFigures, KafkaSourceConfig, StartFrom};
use super::{METADATA_WAIT, RETRY_BACKOFF_MAX, REVOKE_DRAIN_MAX, STOP_DRAIN_MAX};
use crate::{AckTarget, Handover, IngestBatch, StreamAcks};

/// The longest `poll` waits when nothing is due sooner.
const POLL_MAX: Duration = Duration::from_millis(100);
/// How often a full pipeline is offered the held batches again.
const HELD_RETRY: Duration = Duration::from_millis(2);
/// Messages taken from the client between two rounds of housekeeping
/// (held batches offered, offsets stored, lingering batches closed).
const DRAIN_MAX: usize = 1024;
/// At most one client error is logged per this period (all are counted).
const ERROR_LOG_EVERY: Duration = Duration::from_secs(10);

/// Offsets the pipeline reports durable, per partition, for the consumer
/// thread to store; and how many partitions' acks are still open (a stop
/// waits for none).
#[derive(Default)]
struct Durable {
    state: Mutex<DurableState>,
    changed: Condvar,
}

#[derive(Default)]
struct DurableState {
    /// partition → (durable through, stored through)
    offsets: HashMap<Key, (i64, i64)>,
    /// partition → the position of its newest snapshot in the changelog
    /// (with a changelog, the offset stored: a cut's, not a file's end).
    logged: HashMap<Key, i64>,
    /// Offsets are stored at cuts ([`Self::logged`]), not as durable.
    by_changelog: bool,
    /// partition → the end of the last batch handed on (this stay).
    handed: HashMap<Key, i64>,
    open: usize,
}

impl Durable {
    /// Offsets to store: durable (or, with a changelog, logged) and not
    /// yet stored.
    fn due(&self) -> Vec<(Key, i64)> {
        let mut guard = self.state.lock().expect("not poisoned");
        let s = &mut *guard;
        if s.by_changelog {
            let mut due = Vec::new();
            for (k, logged) in &s.logged {
                let stored = &mut s.offsets.entry(k.clone()).or_insert((-1, -1)).1;
                if *logged > *stored {
                    *stored = *logged;
                    due.push((k.clone(), *logged));
                }
            }
            return due;
        }
        s.offsets
            .iter_mut()
            .filter(|(_, (durable, stored))| durable > stored)
            .map(|(k, (durable, stored))| {
                *stored = *durable;
                (k.clone(), *durable)
            })
            .collect()
    }

    /// A partition assigned again: what it stored before is no longer in
    /// the consumer, so its next durable offset is stored whatever it is;
    /// what was handed on and logged in its last stay is forgotten.
    fn assigned(&self, key: &Key) {
        let mut s = self.state.lock().expect("not poisoned");
        s.open += 1;
        if let Some((_, stored)) = s.offsets.get_mut(key) {
            *stored = -1;
        }
        s.handed.remove(key);
        s.logged.remove(key);
    }

    /// A partition's snapshot at `position` is in the changelog.
    fn logged(&self, key: &Key, position: u64) {
        let mut s = self.state.lock().expect("not poisoned");
        let entry = s.logged.entry(key.clone()).or_insert(-1);
        *entry = (*entry).max(position as i64);
        self.changed.notify_all();
    }

    /// Partitions of `keys` whose last batch handed on is not yet
    /// durable (or, with a changelog, not yet under a snapshot).
    fn unsettled<'k>(&self, state: &DurableState, keys: &'k [Key]) -> Vec<&'k Key> {
        keys.iter()
            .filter(|k| {
                let handed = state.handed.get(*k).copied().unwrap_or(-1);
                let done = if state.by_changelog {
                    state.logged.get(*k).copied().unwrap_or(-1)
                } else {
                    state.offsets.get(*k).map_or(-1, |o| o.0)
                };
                handed > done
            })
            .collect()
    }
}

/// A partition's acks: the offset every sink holds durably, and its
/// snapshots (to the changelog).
struct PartitionAcks {
    durable: Arc<Durable>,
    key: Key,
    changelog: Option<Arc<Changelog>>,
}

impl AckTarget for PartitionAcks {
    fn tell(&mut self, _records: Option<u64>) -> bool {
        true
    }

    fn through(&mut self, offset: u64) {
        let mut s = self.durable.state.lock().expect("not poisoned");
        let entry = s.offsets.entry(self.key.clone()).or_insert((-1, -1));
        entry.0 = entry.0.max(offset as i64);
        self.durable.changed.notify_all();
    }

    fn checkpoint(&mut self, position: u64, snapshot: Vec<u8>) {
        if let Some(c) = &self.changelog {
            c.write(&self.key, position, &snapshot);
        }
    }

    fn finish(self: Box<Self>) {
        let mut s = self.durable.state.lock().expect("not poisoned");
        s.open = s.open.saturating_sub(1);
        self.durable.changed.notify_all();
    }
}

/// What a rebalance did, for the consumer loop to act on after `poll`.
enum Rebalanced {
    Assigned(Vec<Key>),
    Revoked(Vec<Key>),
}

/// The consumer's callbacks.
struct Context {
    brokers: String,
    figures: Arc<KafkaFigures>,
    durable: Arc<Durable>,
    acks: Arc<StreamAcks>,
    handover: Arc<Handover>,
    changelog: Option<Arc<Changelog>>,
    /// A failure the loop must stop on (a changelog that cannot be read).
    fatal: Mutex<Option<KafkaError>>,
    events: Mutex<Vec<Rebalanced>>,
    start: StartFrom,
    /// Partitions this process has been given before (for `start`).
    seen: Mutex<std::collections::HashSet<Key>>,
    last_error_log: Mutex<Option<Instant>>,
}

fn keys(tpl: &TopicPartitionList) -> Vec<Key> {
    tpl.elements()
        .iter()
        .map(|e| (Arc::from(e.topic()), e.partition()))
        .collect()
}

/// Stores the durable offsets in `consumer` (a partition no longer
/// assigned refuses: its next owner reads from the committed offset).
fn store_due(consumer: &BaseConsumer<Context>, durable: &Durable) {
    let due = durable.due();
    if due.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), offset) in &due {
        let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset));
    }
    if let Err(e) = consumer.store_offsets(&tpl) {
        tracing::debug!("kafka: storing offsets {due:?}: {e}");
    }
}

impl ClientContext for Context {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        super::log_client(&self.brokers, level, fac, message);
    }

    fn error(&self, error: RdError, reason: &str) {
        KafkaFigures::add(&self.figures.client_errors, 1);
        let mut last = self.last_error_log.lock().expect("not poisoned");
        if last.is_none_or(|t| t.elapsed() >= ERROR_LOG_EVERY) {
            *last = Some(Instant::now());
            tracing::warn!(
                "kafka {}: {error}: {reason} (retrying; errors are counted in roo_kafka_client_errors_total)",
                self.brokers
            );
        }
    }

    fn stats(&self, statistics: Statistics) {
        let mut partitions = self.figures.partitions.lock().expect("not poisoned");
        for (topic, t) in &statistics.topics {
            for (number, p) in &t.partitions {
                if *number < 0 {
                    continue;
                }
                if let Some(f) = partitions.get_mut(&(topic.clone(), *number)) {
                    f.committed = p.committed_offset;
                    f.lag = p.consumer_lag.max(0);
                    f.end = p.hi_offset;
                }
            }
        }
    }
}

impl Context {
    /// Waits (up to [`REVOKE_DRAIN_MAX`]) until every batch handed on of
    /// the partitions `taken` is durable in every sink, asking the sinks
    /// to make them so now. Heartbeats go on meanwhile (librdkafka's own
    /// thread), so the group keeps this member.
    fn drain(&self, taken: &[Key]) {
        let sources: Vec<Arc<str>> = taken
            .iter()
            .map(|(t, p)| Arc::from(super::source_name(t, *p)))
            .collect();
        let until = Instant::now() + REVOKE_DRAIN_MAX;
        let mut state = self.durable.state.lock().expect("not poisoned");
        if self.changelog.is_some() {
            // Each partition's state is cut where its last batch ends and
            // leaves memory; one that handed nothing on this stay is only
            // dropped (its newest snapshot stands).
            for (k, source) in taken.iter().zip(&sources) {
                match state.handed.get(k) {
                    Some(&end) => self.handover.request_cut(source, end as u64, true),
                    None => self.handover.stage_restore(source, None),
                }
            }
        }
        loop {
            let left = self.durable.unsettled(&state, taken);
            if left.is_empty() {
                return;
            }
            let now = Instant::now();
            if now >= until {
                tracing::warn!(
                    "kafka {}: partitions {left:?} revoked before their last batches were durable (waited {} s); their next owner reads those again",
                    self.brokers,
                    REVOKE_DRAIN_MAX.as_secs()
                );
                return;
            }
            if self.changelog.is_none() {
                for s in &sources {
                    self.acks.request_flush(s);
                }
            }
            state = self
                .durable
                .changed
                .wait_timeout(state, (until - now).min(Duration::from_millis(50)))
                .expect("not poisoned")
                .0;
        }
    }
}

impl Context {
    /// With a changelog: the partition's newest snapshot staged for the
    /// operators (or none: it starts empty) and the partition set to
    /// resume where the snapshot stands. A changelog that cannot be read
    /// stops the source: the state would be wrong.
    fn restore(&self, tpl: &mut TopicPartitionList, key: &Key) {
        let Some(changelog) = &self.changelog else {
            return;
        };
        let source: Arc<str> = Arc::from(super::source_name(&key.0, key.1));
        match changelog.read(key) {
            Ok(Some(r)) => {
                let _ = tpl.set_partition_offset(&key.0, key.1, Offset::Offset(r.position as i64));
                tracing::info!(
                    "kafka {}: {source} restored from changelog {} ({} bytes of state), resuming at offset {}",
                    self.brokers,
                    changelog.topic(),
                    r.snapshot.len(),
                    r.position
                );
                KafkaFigures::add(&self.figures.restores, 1);
                self.handover.stage_restore(&source, Some(r.snapshot));
            }
            Ok(None) => self.handover.stage_restore(&source, None),
            Err(e) => {
                tracing::error!("{e}");
                self.fatal.lock().expect("not poisoned").get_or_insert(e);
            }
        }
    }
}

impl ConsumerContext for Context {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        KafkaFigures::add(&self.figures.rebalances, 1);
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let given = keys(tpl);
                let mut seen = self.seen.lock().expect("not poisoned");
                for (topic, partition) in &given {
                    let first = seen.insert((topic.clone(), *partition));
                    if first && self.start != StartFrom::Committed {
                        let to = match self.start {
                            StartFrom::Earliest => Offset::Beginning,
                            _ => Offset::End,
                        };
                        let _ = tpl.set_partition_offset(topic, *partition, to);
                        // A replay (or a start at the end) begins with no state.
                        let source: Arc<str> = Arc::from(super::source_name(topic, *partition));
                        self.handover.stage_restore(&source, None);
                    } else {
                        self.restore(tpl, &(topic.clone(), *partition));
                    }
                }
                drop(seen);
                let assigned = if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                };
                if let Err(e) = assigned {
                    tracing::error!("kafka {}: taking partitions {given:?}: {e}", self.brokers);
                }
                tracing::info!("kafka {}: assigned {given:?}", self.brokers);
                self.events
                    .lock()
                    .expect("not poisoned")
                    .push(Rebalanced::Assigned(given));
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let taken = keys(tpl);
                // What was handed on is finished first (the sinks close
                // those partitions' files), within REVOKE_DRAIN_MAX, and
                // committed before the partitions go; the rest is read
                // again by their next owner.
                self.drain(&taken);
                store_due(consumer, &self.durable);
                if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
                    tracing::debug!("kafka {}: commit on revoke: {e}", self.brokers);
                }
                let unassigned = if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                };
                if let Err(e) = unassigned {
                    tracing::error!("kafka {}: giving up {taken:?}: {e}", self.brokers);
                }
                tracing::info!("kafka {}: revoked {taken:?}", self.brokers);
                self.events
                    .lock()
                    .expect("not poisoned")
                    .push(Rebalanced::Revoked(taken));
            }
            other => {
                tracing::error!("kafka {}: rebalance failed: {other:?}", self.brokers);
                let _ = consumer.unassign();
                self.events
                    .lock()
                    .expect("not poisoned")
                    .push(Rebalanced::Revoked(keys(tpl)));
            }
        }
    }

    fn commit_callback(&self, result: rdkafka::error::KafkaResult<()>, _: &TopicPartitionList) {
        match result {
            Ok(()) => KafkaFigures::add(&self.figures.commits, 1),
            Err(RdError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => tracing::warn!("kafka {}: commit failed: {e}", self.brokers),
        }
    }
}

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
        // partition → the offset its last cut was asked through.
        let mut cut_asked: HashMap<Key, i64> = HashMap::new();
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
                self.ask_cuts(&parts, &mut cut_asked, false);
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
        self.ask_cuts(&parts, &mut cut_asked, true);
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
    fn ask_cuts(&self, parts: &HashMap<Key, Part>, asked: &mut HashMap<Key, i64>, release: bool) {
        if self.changelog.is_none() {
            return;
        }
        let state = self.durable.state.lock().expect("not poisoned");
        for (key, part) in parts.iter().filter(|(_, p)| p.framer.is_some()) {
            let Some(&end) = state.handed.get(key) else {
                continue;
            };
            let last = asked.entry(key.clone()).or_insert(-1);
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
