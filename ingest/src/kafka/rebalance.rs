//! The consumer's callbacks (`Context`): librdkafka's log lines, errors
//! and statistics, and the group's rebalances — on assign each partition
//! restored from the changelog (or started as `start` says), on revoke
//! what was handed on drained (cut, with a changelog) and committed
//! before the partitions go. What a rebalance did is queued for the
//! consumer loop ([`Rebalanced`]).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaError as RdError;
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::ClientContext;

use super::changelog::{Changelog, Key};
use super::durable::{store_due, Durable};
use super::{KafkaError, KafkaFigures, StartFrom, REVOKE_DRAIN_MAX};
use crate::{Handover, StreamAcks};

/// At most one client error is logged per this period (all are counted).
const ERROR_LOG_EVERY: Duration = Duration::from_secs(10);

/// What a rebalance did, for the consumer loop to act on after `poll`.
pub(super) enum Rebalanced {
    Assigned(Vec<Key>),
    Revoked(Vec<Key>),
}

/// The consumer's callbacks.
pub(super) struct Context {
    pub brokers: String,
    pub figures: Arc<KafkaFigures>,
    pub durable: Arc<Durable>,
    pub acks: Arc<StreamAcks>,
    pub handover: Arc<Handover>,
    pub changelog: Option<Arc<Changelog>>,
    /// A failure the loop must stop on (a changelog that cannot be read).
    pub fatal: Mutex<Option<KafkaError>>,
    pub events: Mutex<Vec<Rebalanced>>,
    pub start: StartFrom,
    /// Partitions this process has been given before (for `start`).
    pub seen: Mutex<HashSet<Key>>,
    pub last_error_log: Mutex<Option<Instant>>,
}

fn keys(tpl: &TopicPartitionList) -> Vec<Key> {
    tpl.elements()
        .iter()
        .map(|e| (Arc::from(e.topic()), e.partition()))
        .collect()
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
