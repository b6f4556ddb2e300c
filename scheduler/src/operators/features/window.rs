//! One key's running aggregates, per *group* (the features sharing a
//! window and a value column): subtract-on-evict counts and compensated
//! sums, Welford mean and M2, monotonic deques for min and max, distinct
//! values (a scan of a small window, a map past [`MAP_FROM`] values), the
//! last value; and the same aggregates computed directly by a scan, for an
//! out-of-order event. The key bookkeeping around them is `state.rs`.

use std::collections::HashMap;

use super::hash::FastHash;
use super::spec::Agg;
use super::state::{Answer, KeyedState, SlotKind, NULL_BITS};

/// A distinct group's window of more values than this keeps a map…
const MAP_FROM: u64 = 32;
/// …until it holds fewer than this (hysteresis: no rebuild at every event).
const MAP_UNTIL: u64 = 8;
pub(super) const NO_SEQ: u64 = u64::MAX;

/// One key's running aggregates of one group.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Run {
    /// Sequence number of the first event in the window.
    pub start: u64,
    /// Events in the window.
    pub count: u64,
    /// Non-null values in the window.
    pub n: u64,
    pub sum: f64,
    pub comp: f64,
    pub mean: f64,
    pub m2: f64,
    pub distinct: u64,
    pub last_seq: u64,
    pub last: f64,
    /// How many of the newest non-null values are equal (to `same_value`):
    /// when all are, the spread is exactly 0 and the mean that value (as
    /// pandas does), whatever rounding add-and-remove left behind.
    pub same: u64,
    pub same_value: f64,
}

impl Run {
    pub(super) fn empty(start: u64) -> Self {
        Self {
            start,
            last_seq: NO_SEQ,
            ..Self::default()
        }
    }
}

impl KeyedState {
    /// Removes from group `g`'s run the events at or before `cutoff`.
    pub(super) fn advance(&mut self, slot: u32, g: usize, cutoff: i64) {
        let end = self.end_seq(slot);
        loop {
            let start = self.runs[slot as usize * self.groups.len() + g].start;
            if start >= end || self.time_at(slot, start) > cutoff {
                break;
            }
            self.sub(slot, g, start);
            self.runs[slot as usize * self.groups.len() + g].start = start + 1;
        }
        let run = &mut self.runs[slot as usize * self.groups.len() + g];
        if run.last_seq != NO_SEQ && run.last_seq < run.start {
            run.last_seq = NO_SEQ;
        }
    }

    /// Event `seq`'s value in group `g`'s slot, with the slot's kind;
    /// `None` for a group without a value column.
    #[inline]
    pub(super) fn group_value(&self, slot: u32, g: usize, seq: u64) -> Option<(SlotKind, u64)> {
        self.groups[g]
            .slot
            .map(|s| (self.slots[s], self.value_at(slot, seq, s)))
    }

    /// Adds event `seq` to group `g`'s run.
    pub(super) fn add(&mut self, slot: u32, g: usize, seq: u64) {
        let group = &self.groups[g];
        let value = self.group_value(slot, g, seq);
        let i = slot as usize * self.groups.len() + g;
        self.runs[i].count += 1;
        let Some((kind, bits)) = value else { return };
        match kind {
            SlotKind::Number => {
                let x = f64::from_bits(bits);
                if x.is_nan() {
                    return;
                }
                let run = &mut self.runs[i];
                run.n += 1;
                neumaier(&mut run.sum, &mut run.comp, x);
                let d = x - run.mean;
                run.mean += d / run.n as f64;
                run.m2 += d * (x - run.mean);
                run.last_seq = seq;
                run.last = x;
                if run.same > 0 && run.same_value == x {
                    run.same += 1;
                } else {
                    run.same = 1;
                    run.same_value = x;
                }
                if group.minmax {
                    let stride = self.stride;
                    let first = self.keys[slot as usize].first_seq;
                    let events = &self.keys[slot as usize].events;
                    let at = |s: u64| {
                        f64::from_bits(
                            events
                                [(s - first) as usize * stride + 1 + group.slot.expect("numeric")],
                        )
                    };
                    let m = self.minmax[i].get_or_insert_with(Default::default);
                    while m.0.back().is_some_and(|&b| at(b) >= x) {
                        m.0.pop_back();
                    }
                    m.0.push_back(seq);
                    while m.1.back().is_some_and(|&b| at(b) <= x) {
                        m.1.pop_back();
                    }
                    m.1.push_back(seq);
                }
            }
            SlotKind::Distinct => {
                if bits == NULL_BITS {
                    return;
                }
                self.runs[i].n += 1;
                if let Some(map) = self.distinct[i].as_mut() {
                    let n = map.entry(bits).or_insert(0);
                    *n += 1;
                    if *n == 1 {
                        self.runs[i].distinct += 1;
                        self.distinct_entries += 1;
                    }
                    return;
                }
                let vs = group.slot.expect("a value column");
                let start = self.runs[i].start;
                if !(start..seq).any(|s| self.value_at(slot, s, vs) == bits) {
                    self.runs[i].distinct += 1;
                }
                if self.runs[i].n > MAP_FROM {
                    let mut map: HashMap<u64, u32, FastHash> = HashMap::default();
                    for s in start..=seq {
                        let v = self.value_at(slot, s, vs);
                        if v != NULL_BITS {
                            *map.entry(v).or_insert(0) += 1;
                        }
                    }
                    debug_assert_eq!(map.len() as u64, self.runs[i].distinct);
                    self.distinct_entries += map.len();
                    self.distinct[i] = Some(Box::new(map));
                }
            }
        }
    }

    /// Removes event `seq` (the run's first) from group `g`'s run.
    pub(super) fn sub(&mut self, slot: u32, g: usize, seq: u64) {
        let value = self.group_value(slot, g, seq);
        let i = slot as usize * self.groups.len() + g;
        let run = &mut self.runs[i];
        run.count -= 1;
        let Some((kind, bits)) = value else { return };
        match kind {
            SlotKind::Number => {
                let x = f64::from_bits(bits);
                if x.is_nan() {
                    return;
                }
                run.n -= 1;
                run.same = run.same.min(run.n);
                if run.n == 0 {
                    // An empty window starts afresh: no drift carried over.
                    run.sum = 0.0;
                    run.comp = 0.0;
                    run.mean = 0.0;
                    run.m2 = 0.0;
                } else if run.n == 1 {
                    // One value left (the newest, `last`): exact again.
                    run.sum = run.last;
                    run.comp = 0.0;
                    run.mean = run.last;
                    run.m2 = 0.0;
                } else {
                    neumaier(&mut run.sum, &mut run.comp, -x);
                    let d = x - run.mean;
                    run.mean -= d / run.n as f64;
                    run.m2 = (run.m2 - d * (x - run.mean)).max(0.0);
                }
                if let Some(m) = self.minmax.get_mut(i).and_then(Option::as_mut) {
                    if m.0.front() == Some(&seq) {
                        m.0.pop_front();
                    }
                    if m.1.front() == Some(&seq) {
                        m.1.pop_front();
                    }
                }
            }
            SlotKind::Distinct => {
                if bits == NULL_BITS {
                    return;
                }
                run.n -= 1;
                if let Some(map) = self.distinct[i].as_mut() {
                    let n = map.get_mut(&bits).expect("counted when added");
                    *n -= 1;
                    if *n == 0 {
                        map.remove(&bits);
                        self.runs[i].distinct -= 1;
                        self.distinct_entries -= 1;
                    }
                    if self.runs[i].n < MAP_UNTIL {
                        let map = self.distinct[i].take().expect("present");
                        self.distinct_entries -= map.len();
                    }
                    return;
                }
                let vs = self.groups[g].slot.expect("a value column");
                let end = self.end_seq(slot);
                if !(seq + 1..end).any(|s| self.value_at(slot, s, vs) == bits) {
                    self.runs[i].distinct -= 1;
                }
            }
        }
    }

    pub(super) fn answer_run(&self, slot: u32, g: usize, agg: Agg) -> Answer {
        let i = slot as usize * self.groups.len() + g;
        let run = &self.runs[i];
        let float = |ok: bool, v: f64| if ok { Answer::Float(v) } else { Answer::Null };
        match agg {
            Agg::Count => Answer::Int(run.count as i64),
            Agg::CountDistinct => Answer::Int(run.distinct as i64),
            Agg::Sum => float(run.n > 0, run.sum + run.comp),
            Agg::Mean if run.n > 0 && run.same == run.n => Answer::Float(run.same_value),
            Agg::Mean => float(run.n > 0, (run.sum + run.comp) / run.n as f64),
            Agg::Std if run.n > 0 && run.same == run.n => Answer::Float(0.0),
            Agg::Std => float(run.n > 0, (run.m2 / run.n as f64).sqrt()),
            Agg::Last => float(run.last_seq != NO_SEQ, run.last),
            Agg::Min | Agg::Max => {
                let m = self.minmax[i].as_ref();
                let q = m.map(|m| if agg == Agg::Min { &m.0 } else { &m.1 });
                match q.and_then(|q| q.front()) {
                    Some(&s) => Answer::Float(f64::from_bits(self.value_at(
                        slot,
                        s,
                        self.groups[g].slot.expect("numeric"),
                    ))),
                    None => Answer::Null,
                }
            }
            Agg::TimeSinceLast => unreachable!("answered from the key"),
        }
    }

    /// Group `g`'s aggregate over held events `seq < upto` with time in
    /// `(t - window, t]`, computed directly.
    pub(super) fn scan(&mut self, slot: u32, g: usize, agg: Agg, t: i64, upto: u64) -> Answer {
        let group = self.groups[g].clone();
        let cutoff = t.saturating_sub(group.window_us);
        let first = self.keys[slot as usize].first_seq;
        let mut from = upto;
        while from > first && self.time_at(slot, from - 1) > cutoff {
            from -= 1;
        }
        if agg == Agg::Count {
            return Answer::Int((upto - from) as i64);
        }
        let value_slot = group.slot.expect("a value column");
        if agg == Agg::CountDistinct {
            let mut seen = std::mem::take(&mut self.scratch);
            seen.clear();
            for s in from..upto {
                let bits = self.value_at(slot, s, value_slot);
                if bits != NULL_BITS {
                    seen.insert(bits);
                }
            }
            let n = seen.len() as i64;
            self.scratch = seen;
            return Answer::Int(n);
        }
        let (mut n, mut sum, mut comp, mut mean, mut m2) = (0u64, 0.0, 0.0, 0.0, 0.0);
        let (mut min, mut max, mut last) = (f64::INFINITY, f64::NEG_INFINITY, f64::NAN);
        for s in from..upto {
            let x = f64::from_bits(self.value_at(slot, s, value_slot));
            if x.is_nan() {
                continue;
            }
            n += 1;
            neumaier(&mut sum, &mut comp, x);
            let d = x - mean;
            mean += d / n as f64;
            m2 += d * (x - mean);
            min = min.min(x);
            max = max.max(x);
            last = x;
        }
        if n == 0 {
            return Answer::Null;
        }
        Answer::Float(match agg {
            Agg::Sum => sum + comp,
            Agg::Mean => (sum + comp) / n as f64,
            Agg::Std => (m2 / n as f64).sqrt(),
            Agg::Min => min,
            Agg::Max => max,
            Agg::Last => last,
            Agg::Count | Agg::CountDistinct | Agg::TimeSinceLast => unreachable!(),
        })
    }

    /// Forgets group `g`'s distinct values of `slot` (its window emptied
    /// or the key gone).
    pub(super) fn drop_window_distinct(&mut self, slot: u32, g: usize) {
        let i = slot as usize * self.groups.len() + g;
        if let Some(map) = self.distinct.get_mut(i).and_then(Option::take) {
            self.distinct_entries -= map.len();
        }
        self.runs[i].distinct = 0;
    }

    /// Rebuilds group `g`'s distinct map of `slot` from its window (a restore).
    pub(super) fn rebuild_distinct_map(&mut self, slot: u32, g: usize) {
        let i = slot as usize * self.groups.len() + g;
        let vs = self.groups[g].slot.expect("a value column");
        let mut map: HashMap<u64, u32, FastHash> = HashMap::default();
        let first = self.keys[slot as usize].first_seq;
        for s in self.runs[i].start.max(first)..self.end_seq(slot) {
            let v = self.value_at(slot, s, vs);
            if v != NULL_BITS {
                *map.entry(v).or_insert(0) += 1;
            }
        }
        self.distinct_entries += map.len();
        self.distinct[i] = Some(Box::new(map));
    }
}

/// Neumaier's compensated addition: `sum + comp` carries what plain
/// addition would round away, so subtract-on-evict does not drift.
#[inline]
fn neumaier(sum: &mut f64, comp: &mut f64, x: f64) {
    let t = *sum + x;
    if sum.abs() >= x.abs() {
        *comp += (*sum - t) + x;
    } else {
        *comp += (x - t) + *sum;
    }
    *sum = t;
}
