//! A pane: one hop (`every`) of events, aggregated once per key. Panes
//! are combined into windows, never copied per window.
//!
//! Up to `keys_max` distinct keys a pane counts exactly. Past it (count,
//! and sum of non-negative values) it is a Space-Saving summary of
//! `keys_max` counters: a new key takes over the smallest counter (ties:
//! the earliest entry), inheriting its count as its error. Within a pane
//! counts only grow, so the classic bounds hold per pane: a counter
//! over-counts its key by at most its error, and its error is at most the
//! pane's smallest counter, at most the pane's events / `keys_max`.

use std::collections::HashMap;

use super::spec::AggFn;
use crate::operators::features::hash::FastHash;

/// A double-double: `hi + lo` exactly, `hi` the value rounded to f64.
/// Window sums are added and subtracted pane by pane; in f64 alone the
/// rounding would drift over a long stream, here it is ~2^-106 a step.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(super) struct Dd {
    pub hi: f64,
    pub lo: f64,
}

impl Dd {
    pub const ZERO: Dd = Dd { hi: 0.0, lo: 0.0 };

    pub fn of(x: f64) -> Self {
        Self { hi: x, lo: 0.0 }
    }

    #[inline]
    pub fn add(&mut self, x: Dd) {
        // TwoSum of the high parts, the low parts folded in, renormalised.
        let s = self.hi + x.hi;
        let bb = s - self.hi;
        let e = (self.hi - (s - bb)) + (x.hi - bb) + self.lo + x.lo;
        let hi = s + e;
        let lo = e - (hi - s);
        if hi.is_finite() {
            *self = Self { hi, lo };
        } else {
            *self = Self { hi: s, lo: 0.0 };
        }
    }

    #[inline]
    pub fn sub(&mut self, x: Dd) {
        self.add(Dd {
            hi: -x.hi,
            lo: -x.lo,
        });
    }

    pub fn plus(mut self, x: Dd) -> Dd {
        self.add(x);
        self
    }

    /// The smallest f64 at or above the exact value: an error bound that
    /// rounding never shrinks.
    pub fn upper(self) -> f64 {
        if self.lo > 0.0 {
            self.hi.next_up()
        } else {
            self.hi
        }
    }
}

/// One key's partial aggregate in one pane.
#[derive(Clone, Copy, Debug)]
pub(super) struct Entry {
    pub slot: u32,
    /// Events (count's counter; mean's divisor).
    pub n: u64,
    /// sum and mean: the sum; max: the largest value (in `hi`).
    pub v: Dd,
    /// Space-Saving: the count inherited when this key took the counter.
    pub err: Dd,
}

pub(super) const NO_ENTRY: u32 = u32::MAX;

/// One pane of one aggregate.
#[derive(Default)]
pub(super) struct Pane {
    pub entries: Vec<Entry>,
    /// slot → entry, built the first time a key's entry must be found
    /// without its slot's pointer (an out-of-order event), then kept.
    index: Option<HashMap<u32, u32, FastHash>>,
    /// Space-Saving: entry indexes as a min-heap by (counter, index), and
    /// each entry's place in it. Empty while the pane is exact.
    heap: Vec<u32>,
    place: Vec<u32>,
    /// A sum's pane has seen a negative value: it cannot become a summary.
    pub negative: bool,
    /// Once closed: the pane's smallest counter if a summary, else 0.
    pub min: Dd,
}

impl Pane {
    pub fn summary(&self) -> bool {
        !self.heap.is_empty()
    }

    /// The entry of `slot` in this pane, if any (builds the index once).
    pub fn find(&mut self, slot: u32) -> Option<u32> {
        let entries = &self.entries;
        self.index
            .get_or_insert_with(|| {
                entries
                    .iter()
                    .enumerate()
                    .map(|(i, e)| (e.slot, i as u32))
                    .collect()
            })
            .get(&slot)
            .copied()
    }

    /// A new entry for `slot`; its index.
    pub fn push(&mut self, slot: u32) -> u32 {
        let i = self.entries.len() as u32;
        self.entries.push(Entry {
            slot,
            n: 0,
            v: Dd::ZERO,
            err: Dd::ZERO,
        });
        if let Some(index) = &mut self.index {
            index.insert(slot, i);
        }
        i
    }

    /// A counter's value: what Space-Saving ranks.
    fn counter(&self, agg: AggFn, i: u32) -> Dd {
        let e = &self.entries[i as usize];
        match agg {
            AggFn::Count => Dd::of(e.n as f64),
            _ => e.v,
        }
    }

    fn less(&self, agg: AggFn, a: u32, b: u32) -> bool {
        let (x, y) = (self.counter(agg, a), self.counter(agg, b));
        (x.hi, x.lo, a) < (y.hi, y.lo, b)
    }

    /// Turns the pane (full) into a Space-Saving summary.
    fn summarise(&mut self, agg: AggFn) {
        let n = self.entries.len() as u32;
        self.heap = (0..n).collect();
        self.place = (0..n).collect();
        for i in (0..n as usize / 2).rev() {
            self.sift_down(agg, i);
        }
    }

    fn sift_down(&mut self, agg: AggFn, mut at: usize) {
        let n = self.heap.len();
        loop {
            let (l, r) = (2 * at + 1, 2 * at + 2);
            let mut least = at;
            if l < n && self.less(agg, self.heap[l], self.heap[least]) {
                least = l;
            }
            if r < n && self.less(agg, self.heap[r], self.heap[least]) {
                least = r;
            }
            if least == at {
                return;
            }
            self.heap.swap(at, least);
            self.place[self.heap[at] as usize] = at as u32;
            self.place[self.heap[least] as usize] = least as u32;
            at = least;
        }
    }

    /// After entry `i`'s counter grew: restores the heap (a summary only).
    #[inline]
    pub fn grew(&mut self, agg: AggFn, i: u32) {
        if self.summary() {
            let at = self.place[i as usize] as usize;
            self.sift_down(agg, at);
        }
    }

    /// Space-Saving: `slot` takes over the smallest counter, inheriting its
    /// count as its error. Returns (entry, the slot it belonged to).
    pub fn take_over(&mut self, agg: AggFn, slot: u32) -> (u32, u32) {
        if !self.summary() {
            self.summarise(agg);
        }
        let i = self.heap[0];
        let counter = self.counter(agg, i);
        let e = &mut self.entries[i as usize];
        let old = e.slot;
        e.slot = slot;
        e.err = counter;
        if let Some(index) = &mut self.index {
            index.remove(&old);
            index.insert(slot, i);
        }
        (i, old)
    }

    /// Closes the pane: records its smallest counter (0 when exact).
    pub fn close(&mut self, agg: AggFn) {
        self.min = if self.summary() {
            self.counter(agg, self.heap[0])
        } else {
            Dd::ZERO
        };
        self.index = None;
        self.heap = Vec::new();
        self.place = Vec::new();
    }

    /// Rebuilds a restored open pane's summary heap.
    pub fn restore_summary(&mut self, agg: AggFn, summary: bool) {
        if summary {
            self.summarise(agg);
        }
    }

    pub fn bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<Entry>()
            + self.index.as_ref().map_or(0, |i| i.capacity() * 12)
            + (self.heap.capacity() + self.place.capacity()) * 4
    }
}
