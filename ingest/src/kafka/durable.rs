//! What the pipeline reports durable, per partition, and what the
//! consumer thread stores for commit: file ends (or the Kafka sink's
//! acknowledgements) without a changelog, the positions of the snapshots
//! the changelog holds with one. A partition's [`PartitionAcks`] is its
//! `AckTarget`: told offsets durable and, at a cut, the partition's state
//! (written to the changelog).

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::changelog::{Changelog, Key};
use crate::AckTarget;

/// Offsets the pipeline reports durable, per partition, for the consumer
/// thread to store; and how many partitions' acks are still open (a stop
/// waits for none).
#[derive(Default)]
pub(super) struct Durable {
    pub state: Mutex<DurableState>,
    pub changed: Condvar,
}

#[derive(Default)]
pub(super) struct DurableState {
    /// partition → (durable through, stored through)
    pub offsets: HashMap<Key, (i64, i64)>,
    /// partition → the position of its newest snapshot in the changelog
    /// (with a changelog, the offset stored: a cut's, not a file's end).
    pub logged: HashMap<Key, i64>,
    /// Offsets are stored at cuts ([`Self::logged`]), not as durable.
    pub by_changelog: bool,
    /// partition → the end of the last batch handed on (this stay).
    pub handed: HashMap<Key, i64>,
    /// partition → the offset its last cut was asked through (this stay).
    pub cut_asked: HashMap<Key, i64>,
    pub open: usize,
}

impl Durable {
    /// Offsets to store: durable (or, with a changelog, logged) and not
    /// yet stored.
    pub fn due(&self) -> Vec<(Key, i64)> {
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
    /// what was handed on, cut and logged in its last stay is forgotten.
    pub fn assigned(&self, key: &Key) {
        let mut s = self.state.lock().expect("not poisoned");
        s.open += 1;
        if let Some((_, stored)) = s.offsets.get_mut(key) {
            *stored = -1;
        }
        s.handed.remove(key);
        s.logged.remove(key);
        s.cut_asked.remove(key);
    }

    /// A partition's snapshot at `position` is in the changelog.
    pub fn logged(&self, key: &Key, position: u64) {
        let mut s = self.state.lock().expect("not poisoned");
        let entry = s.logged.entry(key.clone()).or_insert(-1);
        *entry = (*entry).max(position as i64);
        self.changed.notify_all();
    }

    /// Partitions of `keys` whose last batch handed on is not yet
    /// durable (or, with a changelog, not yet under a snapshot).
    pub fn unsettled<'k>(&self, state: &DurableState, keys: &'k [Key]) -> Vec<&'k Key> {
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
pub(super) struct PartitionAcks {
    pub durable: Arc<Durable>,
    pub key: Key,
    pub changelog: Option<Arc<Changelog>>,
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

/// Stores the durable offsets in `consumer` (a partition no longer
/// assigned refuses: its next owner reads from the committed offset).
pub(super) fn store_due<C: ConsumerContext>(consumer: &BaseConsumer<C>, durable: &Durable) {
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
