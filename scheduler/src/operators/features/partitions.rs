//! Keyed state per partition, for a source that moves partitions between
//! processes (Kafka). The producer keys messages by the features' key, so
//! every event of a key arrives on one partition, and each partition's
//! keys can be held, snapshotted and handed over apart: the key sets hold
//! the state of the partition whose batch is being processed, the others
//! are parked here. `keys_max` and `events_per_key_max` then bound each
//! partition's state.

use std::collections::HashMap;
use std::sync::Arc;

use super::state::KeyedState;
use super::{snapshot, FeatureOperator};
use crate::state::SnapshotError;

#[derive(Default)]
pub(super) struct Partitions {
    /// The partition whose state is in the key sets now.
    current: Option<Arc<str>>,
    /// The other partitions' states, one per key set.
    parked: HashMap<Arc<str>, Vec<KeyedState>>,
}

impl Partitions {
    /// Every parked state (for the operator's figures).
    pub fn parked(&self) -> impl Iterator<Item = &KeyedState> {
        self.parked.values().flatten()
    }
}

impl FeatureOperator {
    /// Keeps each partition's state apart from now on.
    pub fn by_partition(&mut self) {
        self.partitions.get_or_insert_with(Partitions::default);
    }

    /// Puts `source`'s state in the key sets (parking the one there).
    /// Nothing to do unless by partition.
    pub(super) fn activate(&mut self, source: &Arc<str>) {
        let Some(p) = self.partitions.as_mut() else {
            return;
        };
        if p.current.as_ref() == Some(source) {
            return;
        }
        let incoming = p.parked.remove(source);
        let outgoing: Vec<KeyedState> = match incoming {
            Some(states) => self
                .sets
                .iter_mut()
                .zip(states)
                .map(|(set, s)| std::mem::replace(&mut set.state, s))
                .collect(),
            None => self
                .sets
                .iter_mut()
                .map(|set| {
                    let empty = set.state.empty_like();
                    std::mem::replace(&mut set.state, empty)
                })
                .collect(),
        };
        if let Some(previous) = p.current.replace(source.clone()) {
            p.parked.insert(previous, outgoing);
        }
    }

    /// Drops `source`'s state (the key sets hold an empty one, of no
    /// partition).
    fn drop_partition(&mut self, source: &Arc<str>) {
        self.activate(source);
        for set in &mut self.sets {
            set.state = set.state.empty_like();
        }
        if let Some(p) = self.partitions.as_mut() {
            p.current = None;
        }
    }

    pub(super) fn part_snapshot_of(&mut self, source: &Arc<str>, release: bool) -> Option<Vec<u8>> {
        self.partitions.as_ref()?;
        self.activate(source);
        // The late-event count is the operator's, over every partition:
        // a partition's snapshot carries none.
        let late = std::mem::take(&mut self.late_events);
        let bytes = snapshot::write(self);
        self.late_events = late;
        if release {
            self.drop_partition(source);
        }
        self.publish_stats();
        Some(bytes)
    }

    pub(super) fn part_restore_of(
        &mut self,
        source: &Arc<str>,
        bytes: Option<&[u8]>,
    ) -> Result<(), SnapshotError> {
        if self.partitions.is_none() {
            return Ok(());
        }
        self.activate(source);
        match bytes {
            // The late-event count is the operator's, over every partition.
            Some(b) => {
                let late = self.late_events;
                let result = snapshot::read(self, b);
                self.late_events = late;
                result?
            }
            None => {
                for set in &mut self.sets {
                    set.state = set.state.empty_like();
                }
            }
        }
        self.publish_stats();
        Ok(())
    }
}
