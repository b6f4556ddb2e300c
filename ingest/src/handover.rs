//! The hand-over of a partition's keyed state between a source that moves
//! partitions (Kafka: the group gives and takes them) and the operators
//! that hold the state.
//!
//! Two directions, both keyed by the partition's source name
//! (`kafka://TOPIC/PARTITION`):
//!
//! - **Cuts**, source → operators: "snapshot this partition's state once
//!   you have processed its batches through offset `through`" (and, when
//!   `release`, drop it from memory: the partition is leaving). The
//!   operator stage takes a cut when it is due ([`Handover::take_due`]),
//!   snapshots the partition at the end of the last batch it processed of
//!   it, and sends the snapshot down the sink queue in order with the
//!   batches; once the sinks hold everything before it durably, the
//!   partition's `AckTarget::checkpoint` gets it (Kafka: written to the
//!   changelog topic, then the offset committed).
//! - **Restores**, source → operators: "the partition starts from this
//!   snapshot" (or from nothing). Staged before any batch of the
//!   partition is handed on; the operator stage applies it before it
//!   processes the partition's next batch ([`Handover::take_restores`]).
//!
//! Bounded: at most one cut request and one restore per partition.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// A cut the operator stage is to take.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cut {
    pub source: Arc<str>,
    /// The offset the snapshot stands at: the end of the last batch of the
    /// partition processed (at least the `through` asked for).
    pub position: u64,
    /// The partition leaves: its state is dropped after the snapshot.
    pub release: bool,
}

#[derive(Default)]
struct Inner {
    /// source → (through, release)
    cuts: HashMap<Arc<str>, (u64, bool)>,
    /// source → the snapshot the partition starts from (`None`: empty).
    restores: HashMap<Arc<str>, Option<Vec<u8>>>,
}

/// Cut requests and staged restores; see the module.
#[derive(Default)]
pub struct Handover {
    inner: Mutex<Inner>,
    /// Something is staged (read without the lock on every batch).
    any: AtomicBool,
}

impl std::fmt::Debug for Handover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handover")
            .field("pending", &self.pending())
            .finish()
    }
}

impl Handover {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Asks for a cut of `source` once its batches through `through` are
    /// processed. A request already waiting is widened (the later offset,
    /// release if either asks it).
    pub fn request_cut(&self, source: &Arc<str>, through: u64, release: bool) {
        let mut inner = self.inner.lock().expect("not poisoned");
        let entry = inner
            .cuts
            .entry(source.clone())
            .or_insert((through, release));
        entry.0 = entry.0.max(through);
        entry.1 |= release;
        self.any.store(true, Ordering::Release);
    }

    /// Stages the state `source` starts from (`None`: empty), replacing a
    /// restore not yet applied. A cut request still waiting for the
    /// partition is dropped: it was for its previous stay.
    pub fn stage_restore(&self, source: &Arc<str>, snapshot: Option<Vec<u8>>) {
        let mut inner = self.inner.lock().expect("not poisoned");
        inner.cuts.remove(source);
        inner.restores.insert(source.clone(), snapshot);
        self.any.store(true, Ordering::Release);
    }

    /// Whether anything is staged (cheap; then ask the lock).
    pub fn pending(&self) -> bool {
        self.any.load(Ordering::Acquire)
    }

    /// Every restore staged, to apply now.
    pub fn take_restores(&self) -> Vec<(Arc<str>, Option<Vec<u8>>)> {
        if !self.pending() {
            return Vec::new();
        }
        let mut inner = self.inner.lock().expect("not poisoned");
        let out = inner.restores.drain().collect();
        self.settle(&inner);
        out
    }

    /// The cuts due: those whose partition's processed end (`processed`,
    /// the end of the last batch of it the operators finished; a
    /// partition never seen counts as processed) has reached the offset
    /// asked for. A cut of a partition with a restore still staged waits
    /// for it to be applied.
    pub fn take_due(&self, processed: impl Fn(&Arc<str>) -> Option<u64>) -> Vec<Cut> {
        if !self.pending() {
            return Vec::new();
        }
        let mut inner = self.inner.lock().expect("not poisoned");
        let Inner { cuts, restores } = &mut *inner;
        let mut due = Vec::new();
        cuts.retain(|source, (through, release)| {
            if restores.contains_key(source) {
                return true;
            }
            let at = processed(source);
            match at {
                Some(end) if end < *through => true,
                _ => {
                    due.push(Cut {
                        source: source.clone(),
                        position: at.unwrap_or(*through).max(*through),
                        release: *release,
                    });
                    false
                }
            }
        });
        self.settle(&inner);
        due.sort_by(|a, b| a.source.cmp(&b.source));
        due
    }

    fn settle(&self, inner: &Inner) {
        if inner.cuts.is_empty() && inner.restores.is_empty() {
            self.any.store(false, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_waits_for_its_offset_and_for_a_staged_restore() {
        let h = Handover::new();
        let p: Arc<str> = Arc::from("kafka://t/0");
        let q: Arc<str> = Arc::from("kafka://t/1");
        assert!(!h.pending());
        h.request_cut(&p, 10, false);
        assert!(h.pending());
        assert!(h.take_due(|_| Some(9)).is_empty());
        // Processed further than asked: the cut stands where processing is.
        let due = h.take_due(|_| Some(12));
        assert_eq!(
            due,
            vec![Cut {
                source: p.clone(),
                position: 12,
                release: false
            }]
        );
        assert!(!h.pending());
        // Requests widen; a staged restore holds the cut back and a new
        // restore drops a request from the partition's previous stay.
        h.request_cut(&q, 5, false);
        h.request_cut(&q, 7, true);
        h.stage_restore(&p, Some(vec![1, 2]));
        h.request_cut(&p, 3, false);
        let due = h.take_due(|_| Some(7));
        assert_eq!(due.len(), 1);
        assert_eq!((due[0].position, due[0].release), (7, true));
        assert_eq!(h.take_restores(), vec![(p.clone(), Some(vec![1, 2]))]);
        assert!(h.take_restores().is_empty());
        assert_eq!(h.take_due(|_| None)[0].position, 3);
        h.stage_restore(&q, None);
        h.request_cut(&q, 1, false);
        h.stage_restore(&q, None);
        assert_eq!(h.take_restores(), vec![(q.clone(), None)]);
        assert!(h.take_due(|_| None).is_empty());
        assert!(!h.pending());
    }
}
