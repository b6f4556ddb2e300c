//! The keyed state of one key set: a table of keys (bounded, least
//! recently seen evicted through an append-only recency queue; idle keys
//! expired), per key a time-ordered buffer of its events' times and
//! values, and per key and *group* — the features sharing one window and
//! one value column — running aggregates (`window.rs`). O(1) amortised per
//! event per group in event-time order; an out-of-order event (within
//! lateness) is answered by a scan of its key's buffer and the key's
//! groups rebuilt, O(events held).
//!
//! The rule every answer follows: an event with key `k` at time `t` sees
//! the earlier-arrived events of `k` with `t - window < t' <= t`; never
//! itself.

use std::collections::{HashMap, HashSet, VecDeque};

use super::hash::FastHash;
use super::spec::Agg;
use super::window::{Run, NO_SEQ};

/// A null in a distinct slot (a null number is NaN).
pub const NULL_BITS: u64 = u64::MAX;

/// How a value column is held per event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotKind {
    /// f64 bits; NaN is null.
    Number,
    /// A digest of the value ([`super::hash::digest`]); [`NULL_BITS`] is null.
    Distinct,
}

/// Features sharing a window and a value slot share one running group.
#[derive(Clone, Debug, PartialEq)]
pub struct Group {
    pub window_us: i64,
    /// Index into the key set's value slots; `None` for count only.
    pub slot: Option<usize>,
    pub minmax: bool,
    pub distinct: bool,
}

/// One feature of this key set: its aggregation, its group (unused for
/// time_since_last) and its output column.
#[derive(Clone, Debug, PartialEq)]
pub struct Feature {
    pub agg: Agg,
    pub group: usize,
    pub out: usize,
}

/// A feature's value for one event.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Answer {
    Int(i64),
    Float(f64),
    Null,
}

pub(super) struct Key {
    /// Empty for a free slot.
    pub key: Box<[u8]>,
    /// The arrival counter when last seen (see `KeyedState::recency`).
    pub seen: u32,
    /// The newest event time seen; `i64::MIN` before any.
    pub newest: i64,
    /// The newest time among events dropped from the buffer; `i64::MIN`: none.
    pub evicted_newest: i64,
    /// Sequence number of `events`' first event.
    pub first_seq: u64,
    /// `stride` words per event: the time, then each value slot.
    pub events: VecDeque<u64>,
}

/// A group's monotonic deques of sequence numbers: (min, max).
pub(super) type MinMax = (VecDeque<u64>, VecDeque<u64>);

/// What the state counts for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StateCounts {
    pub keys_evicted: u64,
    pub keys_expired: u64,
    pub events_dropped: u64,
}

/// One key set's state.
pub struct KeyedState {
    pub(super) slots: Vec<SlotKind>,
    pub(super) groups: Vec<Group>,
    pub(super) features: Vec<Feature>,
    pub(super) stride: usize,
    pub(super) keys_max: usize,
    pub(super) events_per_key_max: usize,
    pub(super) lateness_us: i64,
    /// Events older than `newest - horizon_us` are never seen again.
    pub(super) horizon_us: i64,
    /// A key idle this long (by the pipeline's newest event time) is dropped; `None`: never.
    pub(super) idle_us: Option<i64>,
    /// Integer keys (one integer column: the common case) by value.
    pub(super) ints: HashMap<u64, u32, FastHash>,
    /// Other keys by their encoded bytes.
    pub(super) table: HashMap<Box<[u8]>, u32, FastHash>,
    pub(super) keys: Vec<Key>,
    pub(super) free: Vec<u32>,
    /// Least recently seen first: (slot, arrival counter) pushed at every
    /// sighting; an entry whose counter is not its key's `seen` is stale
    /// and skipped. Compacted when it grows past twice the keys, so it is
    /// bounded and costs one append per event, not two random writes.
    pub(super) recency: VecDeque<(u32, u32)>,
    pub(super) clock: u32,
    /// Events held over every key.
    pub(super) events_held: usize,
    pub(super) runs: Vec<Run>,
    /// Per key and minmax group: (min deque, max deque) of sequence numbers.
    pub(super) minmax: Vec<Option<Box<MinMax>>>,
    /// Per key and distinct group, for a window of more than
    /// [`MAP_FROM`] values: value digest → occurrences. A smaller window
    /// is counted by scanning its events (already in cache), so the quiet
    /// majority of keys costs no table and no random access.
    // Boxed: a key without a map pays 8 bytes here, not a whole empty map's 32.
    #[allow(clippy::box_collection)]
    pub(super) distinct: Vec<Option<Box<HashMap<u64, u32, FastHash>>>>,
    /// Entries over every distinct map.
    pub(super) distinct_entries: usize,
    /// The newest event time of the pipeline (for idle expiry).
    pub(super) max_time: i64,
    pub(super) counts: StateCounts,
    pub(super) scratch: HashSet<u64, FastHash>,
}

impl KeyedState {
    /// An empty state for the same features and limits.
    pub fn empty_like(&self) -> Self {
        Self::new(
            self.slots.clone(),
            self.groups.clone(),
            self.features.clone(),
            super::spec::StateLimits {
                lateness_us: self.lateness_us,
                keys_max: self.keys_max,
                events_per_key_max: self.events_per_key_max,
            },
            self.idle_us,
        )
    }

    pub fn new(
        slots: Vec<SlotKind>,
        groups: Vec<Group>,
        features: Vec<Feature>,
        limits: super::spec::StateLimits,
        idle_us: Option<i64>,
    ) -> Self {
        assert!(limits.keys_max > 0 && limits.events_per_key_max > 0);
        assert!(groups.iter().all(|g| g.window_us > 0));
        let longest = groups.iter().map(|g| g.window_us).max().unwrap_or(0);
        Self {
            stride: 1 + slots.len(),
            slots,
            groups,
            features,
            keys_max: limits.keys_max,
            events_per_key_max: limits.events_per_key_max,
            lateness_us: limits.lateness_us,
            horizon_us: longest.saturating_add(limits.lateness_us),
            idle_us,
            ints: HashMap::default(),
            table: HashMap::default(),
            keys: Vec::new(),
            free: Vec::new(),
            recency: VecDeque::new(),
            clock: 0,
            events_held: 0,
            runs: Vec::new(),
            minmax: Vec::new(),
            distinct: Vec::new(),
            distinct_entries: 0,
            max_time: i64::MIN,
            counts: StateCounts::default(),
            scratch: HashSet::default(),
        }
    }

    /// Keys held now.
    pub fn keys_held(&self) -> usize {
        self.ints.len() + self.table.len()
    }

    /// Bytes of state, estimated from what is held.
    /// From counts kept as it goes (O(1): read after every batch): per
    /// key slot its record, runs, a table entry and its key bytes; per
    /// event held its words; per distinct value its table entry; the
    /// recency queue.
    pub fn state_bytes(&self) -> usize {
        let per_key = std::mem::size_of::<Key>()
            + self.groups.len() * std::mem::size_of::<Run>()
            + std::mem::size_of::<(u64, u32)>()
            + 1
            + 16;
        self.keys.len() * per_key
            + self.events_held * self.stride * 8
            + self.distinct_entries * (std::mem::size_of::<(u64, u32)>() + 1)
            + self.distinct.len() * std::mem::size_of::<usize>()
            + self.recency.len() * std::mem::size_of::<(u32, u32)>()
    }

    /// Events held in the keys' buffers.
    pub fn events_held(&self) -> usize {
        self.keys.iter().map(|k| k.events.len() / self.stride).sum()
    }

    pub fn counts(&self) -> StateCounts {
        self.counts
    }

    /// The key's slot, if held.
    #[inline]
    pub fn find(&self, key: &[u8]) -> Option<u32> {
        match int_key(key) {
            Some(i) => self.ints.get(&i).copied(),
            None => self.table.get(key).copied(),
        }
    }

    /// Whether an event at `t` for the key in `slot` is later than its
    /// key's newest by more than the lateness.
    pub fn is_late(&self, slot: Option<u32>, t: i64) -> Option<i64> {
        let k = &self.keys[slot? as usize];
        (k.newest != i64::MIN && t < k.newest.saturating_sub(self.lateness_us)).then_some(k.newest)
    }

    /// Computes this key set's features for one event (into `out`, by
    /// each feature's `out` index), then records the event. `found` is
    /// [`Self::find`]'s answer for `key`; `values` one word per value slot.
    /// The caller has checked lateness ([`Self::is_late`]).
    pub fn process_at(
        &mut self,
        found: Option<u32>,
        key: &[u8],
        t: i64,
        values: &[u64],
        out: &mut [Answer],
    ) {
        debug_assert_eq!(values.len(), self.slots.len());
        debug_assert_eq!(found, self.find(key));
        self.max_time = self.max_time.max(t);
        let slot = match found {
            Some(s) => {
                self.touch(s);
                s
            }
            None => self.insert(key),
        };
        let k = &self.keys[slot as usize];
        if k.newest == i64::MIN || t >= k.newest {
            self.in_order(slot, t, values, out);
        } else {
            self.out_of_order(slot, t, values, out);
        }
        self.trim(slot);
        self.expire();
    }

    fn insert(&mut self, key: &[u8]) -> u32 {
        if self.keys_held() >= self.keys_max {
            let victim = self.least_recent().expect("full, so a key is held");
            self.remove(victim);
            self.counts.keys_evicted += 1;
        }
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                let s = self.keys.len() as u32;
                assert!(s != u32::MAX, "key slots fit u32");
                self.keys.push(Key {
                    key: Box::default(),
                    seen: 0,
                    newest: i64::MIN,
                    evicted_newest: i64::MIN,
                    first_seq: 0,
                    events: VecDeque::new(),
                });
                self.runs
                    .extend(std::iter::repeat_n(Run::empty(0), self.groups.len()));
                if self.groups.iter().any(|g| g.minmax) {
                    self.minmax.extend((0..self.groups.len()).map(|_| None));
                }
                if self.groups.iter().any(|g| g.distinct) {
                    self.distinct.extend((0..self.groups.len()).map(|_| None));
                }
                s
            }
        };
        let k = &mut self.keys[slot as usize];
        k.key = key.into();
        k.newest = i64::MIN;
        k.evicted_newest = i64::MIN;
        k.first_seq = 0;
        k.events.clear();
        for g in 0..self.groups.len() {
            self.runs[slot as usize * self.groups.len() + g] = Run::empty(0);
            if let Some(Some(m)) = self.minmax.get_mut(slot as usize * self.groups.len() + g) {
                m.0.clear();
                m.1.clear();
            }
        }
        match int_key(key) {
            Some(i) => self.ints.insert(i, slot),
            None => self.table.insert(key.into(), slot),
        };
        self.touch(slot);
        slot
    }

    /// Forgets a key: its table entry, its window's distinct values, its events.
    fn remove(&mut self, slot: u32) {
        for g in 0..self.groups.len() {
            if self.groups[g].distinct {
                self.drop_window_distinct(slot, g);
            }
        }
        let k = &mut self.keys[slot as usize];
        let key = std::mem::take(&mut k.key);
        self.events_held -= k.events.len() / self.stride;
        k.events = VecDeque::new();
        match int_key(&key) {
            Some(i) => self.ints.remove(&i),
            None => self.table.remove(&key),
        };
        self.free.push(slot);
    }

    /// Enters `key` in the table at `slot` (a restore).
    pub(super) fn hold(&mut self, key: &[u8], slot: u32) {
        match int_key(key) {
            Some(i) => self.ints.insert(i, slot),
            None => self.table.insert(key.into(), slot),
        };
    }

    /// Marks a key seen now.
    #[inline]
    fn touch(&mut self, slot: u32) {
        self.clock = self.clock.wrapping_add(1);
        self.keys[slot as usize].seen = self.clock;
        self.recency.push_back((slot, self.clock));
        if self.recency.len() > 2 * self.keys_held() + 1024 {
            let keys = &self.keys;
            self.recency
                .retain(|&(s, c)| !keys[s as usize].key.is_empty() && keys[s as usize].seen == c);
        }
    }

    /// The least recently seen key held, dropping stale entries on the way.
    fn least_recent(&mut self) -> Option<u32> {
        while let Some(&(s, c)) = self.recency.front() {
            let k = &self.keys[s as usize];
            if !k.key.is_empty() && k.seen == c {
                return Some(s);
            }
            self.recency.pop_front();
        }
        None
    }

    /// Drops least recently seen keys idle longer than `idle_us`.
    fn expire(&mut self) {
        let Some(idle) = self.idle_us else { return };
        let cutoff = self.max_time.saturating_sub(idle);
        while let Some(victim) = self.least_recent() {
            if self.keys[victim as usize].newest >= cutoff {
                break;
            }
            self.remove(victim);
            self.counts.keys_expired += 1;
        }
    }

    #[inline]
    pub(super) fn time_at(&self, slot: u32, seq: u64) -> i64 {
        let k = &self.keys[slot as usize];
        k.events[(seq - k.first_seq) as usize * self.stride] as i64
    }

    #[inline]
    pub(super) fn value_at(&self, slot: u32, seq: u64, value_slot: usize) -> u64 {
        let k = &self.keys[slot as usize];
        k.events[(seq - k.first_seq) as usize * self.stride + 1 + value_slot]
    }

    pub(super) fn end_seq(&self, slot: u32) -> u64 {
        let k = &self.keys[slot as usize];
        k.first_seq + (k.events.len() / self.stride) as u64
    }

    fn in_order(&mut self, slot: u32, t: i64, values: &[u64], out: &mut [Answer]) {
        let ng = self.groups.len();
        for g in 0..ng {
            self.advance(slot, g, t.saturating_sub(self.groups[g].window_us));
        }
        let previous = self.keys[slot as usize].newest;
        for f in 0..self.features.len() {
            let feature = &self.features[f];
            out[feature.out] = if feature.agg == Agg::TimeSinceLast {
                since(t, previous)
            } else {
                self.answer_run(slot, feature.group, feature.agg)
            };
        }
        // The event joins every window of the events after it.
        let seq = self.end_seq(slot);
        let k = &mut self.keys[slot as usize];
        k.events.push_back(t as u64);
        k.events.extend(values.iter().copied());
        k.newest = t;
        self.events_held += 1;
        for g in 0..ng {
            self.add(slot, g, seq);
        }
    }

    /// What an event of key `found` at `t` would be answered, by a scan
    /// over the events held, changing no state: the key, its events, its
    /// runs, the recency order, the newest time and expiry are left as
    /// they are (an online request that reads the state without updating
    /// it). A key not held has no events before `t`.
    pub fn peek(&mut self, found: Option<u32>, t: i64, out: &mut [Answer]) {
        match found {
            Some(slot) => {
                let upto = self.held_upto(slot, t);
                self.scan_answers(slot, t, upto, out);
            }
            None => {
                for f in &self.features {
                    out[f.out] = match f.agg {
                        Agg::Count | Agg::CountDistinct => Answer::Int(0),
                        _ => Answer::Null,
                    };
                }
            }
        }
    }

    /// The end of the held events with time <= `t`: those before the first
    /// held event later than `t` (the buffer is in time order; ties in
    /// arrival order).
    fn held_upto(&self, slot: u32, t: i64) -> u64 {
        let (mut lo, mut hi) = (self.keys[slot as usize].first_seq, self.end_seq(slot));
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.time_at(slot, mid) <= t {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// Every feature of an event at `t` over the held events `seq < upto`,
    /// by a direct scan.
    fn scan_answers(&mut self, slot: u32, t: i64, upto: u64, out: &mut [Answer]) {
        let first = self.keys[slot as usize].first_seq;
        for f in 0..self.features.len() {
            let feature = self.features[f].clone();
            out[feature.out] = if feature.agg == Agg::TimeSinceLast {
                let previous = if upto > first {
                    self.time_at(slot, upto - 1)
                } else {
                    self.keys[slot as usize].evicted_newest
                };
                since(t, previous)
            } else {
                self.scan(slot, feature.group, feature.agg, t, upto)
            };
        }
    }

    /// An event older than its key's newest: answered by a scan over the
    /// events held, then inserted in time order and the key's runs rebuilt.
    fn out_of_order(&mut self, slot: u32, t: i64, values: &[u64], out: &mut [Answer]) {
        let first = self.keys[slot as usize].first_seq;
        let upto = self.held_upto(slot, t);
        self.scan_answers(slot, t, upto, out);
        // Rebuild: empty every run, insert, refill each to its window
        // anchored at the key's newest time.
        for g in 0..self.groups.len() {
            if self.groups[g].distinct {
                self.drop_window_distinct(slot, g);
            }
        }
        let at = (upto - first) as usize * self.stride;
        let k = &mut self.keys[slot as usize];
        for (j, word) in std::iter::once(t as u64)
            .chain(values.iter().copied())
            .enumerate()
        {
            k.events.insert(at + j, word);
        }
        self.events_held += 1;
        let newest = k.newest;
        let end = self.end_seq(slot);
        for g in 0..self.groups.len() {
            let i = slot as usize * self.groups.len() + g;
            if let Some(m) = self.minmax.get_mut(i).and_then(Option::as_mut) {
                m.0.clear();
                m.1.clear();
            }
            let cutoff = newest.saturating_sub(self.groups[g].window_us);
            let mut start = first;
            while start < end && self.time_at(slot, start) <= cutoff {
                start += 1;
            }
            self.runs[i] = Run::empty(start);
            for seq in start..end {
                self.add(slot, g, seq);
            }
        }
    }

    /// Drops events no future event can see, and past `events_per_key_max`
    /// the oldest (counted).
    fn trim(&mut self, slot: u32) {
        let newest = self.keys[slot as usize].newest;
        let horizon = newest.saturating_sub(self.horizon_us);
        loop {
            let k = &self.keys[slot as usize];
            let held = k.events.len() / self.stride;
            if held == 0 {
                break;
            }
            let oldest = k.events[0] as i64;
            let forced = held > self.events_per_key_max;
            if !forced && oldest > horizon {
                break;
            }
            let seq = k.first_seq;
            for g in 0..self.groups.len() {
                let i = slot as usize * self.groups.len() + g;
                if self.runs[i].start == seq {
                    // Still in this window (only when forced): leaves it now.
                    self.sub(slot, g, seq);
                    let run = &mut self.runs[i];
                    run.start += 1;
                    if run.last_seq == seq {
                        run.last_seq = NO_SEQ;
                    }
                }
            }
            if forced {
                self.counts.events_dropped += 1;
            }
            let stride = self.stride;
            let k = &mut self.keys[slot as usize];
            k.events.drain(..stride);
            k.first_seq += 1;
            self.events_held -= 1;
            k.evicted_newest = k.evicted_newest.max(oldest);
        }
    }
}

/// An integer key's value, from its encoding (tag 1, then 8 bytes).
#[inline]
fn int_key(key: &[u8]) -> Option<u64> {
    (key.len() == 9 && key[0] == 1)
        .then(|| u64::from_le_bytes(key[1..9].try_into().expect("8 bytes")))
}

/// Seconds from `previous` to `t`; null when there was none.
fn since(t: i64, previous: i64) -> Answer {
    if previous == i64::MIN {
        Answer::Null
    } else {
        Answer::Float((t - previous) as f64 / 1e6)
    }
}
