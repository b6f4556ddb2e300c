//! An aggregate's state: key slots, the open panes (ahead of the
//! watermark, still taking events), the panes of the current window with
//! each key's running window aggregate, and the emission of windows in
//! order as the watermark passes their ends.
//!
//! Sliding from the window ending `E` to the one ending `E + every`
//! subtracts the oldest pane's partials and adds the newest's, so a window
//! costs its two changing panes, not its whole length (max, which cannot
//! subtract, recomputes only the keys whose largest value left). The top
//! rows are chosen among the previous window's best `4 × top` keys and
//! the keys the two panes changed; every other key is unchanged and no
//! better than the previous cut, so the result is exact — when it cannot
//! be shown so, every key is ranked.

use std::cmp::Ordering;
use std::collections::VecDeque;

use super::keys::{compare, BatchKeys, Found, KeyBytes, KeyIndex, Shape};
use super::panes::{Dd, Pane, NO_ENTRY};
use super::spec::{AggFn, AggregateSpec};

/// One key held by some pane.
pub(super) struct Slot {
    pub key: KeyBytes,
    /// Entries (in open and window panes) that are this key's.
    pub refs: u32,
    /// The newest open pane (its end) that may hold this key's entry; no
    /// newer pane does. `entry`: its entry there, or NO_ENTRY (look it up).
    pub pane: i64,
    pub entry: u32,
    /// Window panes holding this key; 0: not in the window.
    pub in_window: u32,
    /// Window aggregate: events (count: Σ (n − pane min)), sum (sum, mean:
    /// Σ v; summaries: Σ (v − pane min)); max: the largest (in `w_v.hi`).
    pub w_n: i64,
    pub w_v: Dd,
    /// Σ (error − pane min) over the window's panes holding this key.
    pub w_err: Dd,
    /// The epoch in which it was last recorded as changed.
    mark: u64,
    /// max: its largest value left the window; recomputed.
    dirty: bool,
}

/// Why an event was not counted.
#[derive(Debug, PartialEq)]
pub(super) enum Refusal {
    /// Its window (the one ending at `end`) was already emitted.
    Late { end: i64, watermark: i64 },
    /// A sum or mean of an infinite value (a window could never drop it).
    Infinite,
    /// Its pane holds `keys_max` keys and this aggregate cannot summarise.
    Full { end: i64 },
}

/// A window's rows before they become Arrow columns.
pub(super) struct WindowRows {
    pub end: i64,
    /// (slot's key, value, error bound), best first.
    pub rows: Vec<(KeyBytes, f64, f64)>,
}

/// Counters for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Counts {
    pub late_events: u64,
    pub refused_events: u64,
    /// Space-Saving takeovers (a key replacing another's counter).
    pub takeovers: u64,
    pub windows_emitted: u64,
    /// Ranked from every key (the candidates could not show the cut).
    pub full_ranks: u64,
}

pub(super) struct Windows {
    pub spec: AggregateSpec,
    pub shape: Shape,
    pub slots: Vec<Slot>,
    pub free: Vec<u32>,
    pub index: KeyIndex,
    /// Open panes by end, ascending.
    pub open: Vec<(i64, Pane)>,
    /// The window's panes by end, oldest first; the window ends at `w_end`.
    pub window: VecDeque<(i64, Pane)>,
    pub w_end: i64,
    /// Keys in the window (slots with `in_window > 0`).
    pub window_keys: usize,
    /// Σ of the window's panes' smallest counters (summaries).
    pub m: Dd,
    /// The largest event time seen minus lateness (i64::MIN before any).
    pub watermark: i64,
    pub max_time: i64,
    pub counts: Counts,
    /// Keys changed since the last ranking, and the ranking's cache: the
    /// best keys then, and a level no key outside it exceeded.
    changed: Vec<u32>,
    epoch: u64,
    cache: Vec<u32>,
    floor: Option<Dd>,
}

impl Windows {
    pub fn new(spec: AggregateSpec, shape: Shape) -> Self {
        Self {
            spec,
            shape,
            slots: Vec::new(),
            free: Vec::new(),
            index: KeyIndex::new(shape),
            open: Vec::new(),
            window: VecDeque::new(),
            w_end: i64::MIN,
            window_keys: 0,
            m: Dd::ZERO,
            watermark: i64::MIN,
            max_time: i64::MIN,
            counts: Counts::default(),
            changed: Vec::new(),
            epoch: 1,
            cache: Vec::new(),
            floor: None,
        }
    }

    /// The end of the pane holding event time `t`: panes are
    /// `(k·every, (k+1)·every]`.
    #[inline]
    pub fn pane_end(&self, t: i64) -> i64 {
        let every = self.spec.every_us;
        t.saturating_sub(1)
            .div_euclid(every)
            .saturating_add(1)
            .saturating_mul(every)
    }

    /// The open pane ending at `end` (created if new); its place.
    #[inline]
    fn open_pane(&mut self, end: i64) -> usize {
        if let Some((last, _)) = self.open.last() {
            if *last == end {
                return self.open.len() - 1;
            }
        }
        match self.open.binary_search_by_key(&end, |(e, _)| *e) {
            Ok(i) => i,
            Err(i) => {
                self.open.insert(i, (end, Pane::default()));
                i
            }
        }
    }

    /// Refuses an event at `t` whose first window was emitted.
    #[inline]
    fn on_time(&mut self, t: i64) -> Result<i64, Refusal> {
        let end = self.pane_end(t);
        if end <= self.watermark {
            self.counts.late_events += 1;
            return Err(Refusal::Late {
                end,
                watermark: self.watermark,
            });
        }
        Ok(end)
    }

    #[inline]
    fn advance(&mut self, t: i64) {
        self.watermark = self.watermark.max(t.saturating_sub(self.spec.lateness_us));
        self.max_time = self.max_time.max(t);
    }

    /// An event with no value (sum, mean, max skip it): in no group, but
    /// late or not by the same rule, and its time moves the watermark.
    pub fn pass(&mut self, t: i64) -> Result<(), Refusal> {
        self.on_time(t)?;
        self.advance(t);
        Ok(())
    }

    /// Counts one event: key in row `row` of `keys`, time `t`, value `x`
    /// (ignored by count; never NaN).
    #[inline]
    pub fn add(&mut self, keys: &BatchKeys, row: usize, t: i64, x: f64) -> Result<(), Refusal> {
        let end = self.on_time(t)?;
        let agg = self.spec.agg;
        if matches!(agg, AggFn::Sum | AggFn::Mean) && x.is_infinite() {
            self.counts.refused_events += 1;
            return Err(Refusal::Infinite);
        }
        let p = self.open_pane(end);
        let slots = &self.slots;
        let found = self.index.find(keys, row, |s| &slots[s as usize].key);
        // This key's entry in the pane, if it has one.
        let entry = match found {
            Found::New => None,
            Found::Slot(s) => {
                let slot = &self.slots[s as usize];
                if slot.pane == end && slot.entry != NO_ENTRY {
                    Some(slot.entry)
                } else if slot.pane < end {
                    None
                } else {
                    self.open[p].1.find(s)
                }
            }
        };
        let (slot, entry) = match entry {
            Some(e) => (self.open[p].1.entries[e as usize].slot, e),
            None => {
                let pane = &self.open[p].1;
                let full = pane.entries.len() >= self.spec.keys_max;
                let can_summarise =
                    agg.summarises() && !pane.negative && !(agg == AggFn::Sum && x < 0.0);
                if full && !can_summarise {
                    self.counts.refused_events += 1;
                    return Err(Refusal::Full { end });
                }
                let slot = match found {
                    Found::Slot(s) => s,
                    Found::New => self.new_slot(keys, row),
                };
                let entry = if full {
                    let (e, old) = self.open[p].1.take_over(agg, slot);
                    self.counts.takeovers += 1;
                    let o = &mut self.slots[old as usize];
                    if o.pane == end {
                        // No longer in this pane; maybe in an older one.
                        o.pane = end.saturating_sub(self.spec.every_us);
                        o.entry = NO_ENTRY;
                    }
                    self.release(old);
                    e
                } else {
                    self.open[p].1.push(slot)
                };
                let s = &mut self.slots[slot as usize];
                s.refs += 1;
                if end >= s.pane {
                    s.pane = end;
                    s.entry = entry;
                }
                (slot, entry)
            }
        };
        debug_assert_eq!(self.open[p].1.entries[entry as usize].slot, slot);
        let pane = &mut self.open[p].1;
        let e = &mut pane.entries[entry as usize];
        e.n += 1;
        match agg {
            AggFn::Count => {}
            AggFn::Sum | AggFn::Mean => e.v.add(Dd::of(x)),
            AggFn::Max => {
                if e.n == 1 || x > e.v.hi {
                    e.v = Dd::of(x);
                }
            }
        }
        if agg == AggFn::Sum && x < 0.0 {
            pane.negative = true;
        }
        pane.grew(agg, entry);
        self.advance(t);
        Ok(())
    }

    fn new_slot(&mut self, keys: &BatchKeys, row: usize) -> u32 {
        let s = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(Slot::empty());
                (self.slots.len() - 1) as u32
            }
        };
        let key = self.index.insert(keys, row, s);
        let slot = &mut self.slots[s as usize];
        *slot = Slot::empty();
        slot.key = key;
        s
    }

    /// One entry of `s` gone; frees the slot when it was the last.
    fn release(&mut self, s: u32) {
        let slot = &mut self.slots[s as usize];
        slot.refs -= 1;
        if slot.refs == 0 {
            debug_assert_eq!(slot.in_window, 0);
            let key = std::mem::take(&mut slot.key);
            self.index.remove(&key, s);
            self.free.push(s);
        }
    }

    fn mark(&mut self, s: u32) {
        let slot = &mut self.slots[s as usize];
        if slot.mark != self.epoch {
            slot.mark = self.epoch;
            self.changed.push(s);
        }
    }

    /// Emits, oldest first, every window ending at or before the
    /// watermark (at the source's end: at or before the first multiple of
    /// `every` at or after the last event) that holds an event.
    pub fn emit(&mut self, end_of_source: bool, out: &mut Vec<WindowRows>) {
        let mut target = self.watermark;
        if end_of_source && self.max_time != i64::MIN {
            target = target.max(self.pane_end(self.max_time));
            self.watermark = target;
        }
        loop {
            let next = if self.window.is_empty() {
                match self.open.first() {
                    Some((e, _)) => *e,
                    None => return,
                }
            } else {
                match self.w_end.checked_add(self.spec.every_us) {
                    Some(e) => e,
                    None => return,
                }
            };
            if next > target {
                return;
            }
            self.slide(next);
            if !self.window.is_empty() {
                let rows = self.rank();
                self.counts.windows_emitted += 1;
                out.push(WindowRows { end: next, rows });
            }
        }
    }

    /// Moves the window to end at `end`: the expired panes out, the pane
    /// ending at `end` (if any) in.
    fn slide(&mut self, end: i64) {
        let agg = self.spec.agg;
        let start = end.saturating_sub(self.spec.window_us);
        let mut dirty = Vec::new();
        while self.window.front().is_some_and(|(e, _)| *e <= start) {
            let (_, pane) = self.window.pop_front().expect("checked");
            self.m.sub(pane.min);
            let m_int = pane.min.hi as i64;
            for e in &pane.entries {
                let s = e.slot;
                let slot = &mut self.slots[s as usize];
                slot.in_window -= 1;
                match agg {
                    AggFn::Count => slot.w_n -= e.n as i64 - m_int,
                    AggFn::Sum => slot.w_v.sub(e.v.plus(neg(pane.min))),
                    AggFn::Mean => {
                        slot.w_n -= e.n as i64;
                        slot.w_v.sub(e.v);
                    }
                    AggFn::Max => {
                        if e.v.hi >= slot.w_v.hi && !slot.dirty {
                            slot.dirty = true;
                            dirty.push(s);
                        }
                    }
                }
                slot.w_err.sub(e.err.plus(neg(pane.min)));
                if slot.in_window == 0 {
                    slot.w_n = 0;
                    slot.w_v = Dd::ZERO;
                    slot.w_err = Dd::ZERO;
                    self.window_keys -= 1;
                }
                self.mark(s);
                self.release(s);
            }
        }
        if self.open.first().is_some_and(|(e, _)| *e == end) {
            let (_, mut pane) = self.open.remove(0);
            pane.close(agg);
            self.m.add(pane.min);
            let m_int = pane.min.hi as i64;
            for e in &pane.entries {
                let s = e.slot;
                let slot = &mut self.slots[s as usize];
                if slot.in_window == 0 {
                    self.window_keys += 1;
                    if agg == AggFn::Max {
                        slot.w_v = e.v;
                    }
                }
                slot.in_window += 1;
                match agg {
                    AggFn::Count => slot.w_n += e.n as i64 - m_int,
                    AggFn::Sum => slot.w_v.add(e.v.plus(neg(pane.min))),
                    AggFn::Mean => {
                        slot.w_n += e.n as i64;
                        slot.w_v.add(e.v);
                    }
                    AggFn::Max => {
                        if e.v.hi > slot.w_v.hi {
                            slot.w_v = e.v;
                        }
                    }
                }
                slot.w_err.add(e.err.plus(neg(pane.min)));
                if slot.pane == end {
                    // Closed: the pointer would never be used again.
                    slot.entry = NO_ENTRY;
                }
                self.mark(s);
            }
            self.window.push_back((end, pane));
        }
        self.w_end = end;
        if !dirty.is_empty() {
            // max: the keys whose largest value left, from what remains.
            for &s in &dirty {
                self.slots[s as usize].w_v = Dd::of(f64::NEG_INFINITY);
            }
            for (_, pane) in &self.window {
                for e in &pane.entries {
                    let slot = &mut self.slots[e.slot as usize];
                    if slot.dirty && e.v.hi > slot.w_v.hi {
                        slot.w_v = e.v;
                    }
                }
            }
            for s in dirty {
                self.slots[s as usize].dirty = false;
            }
        }
        if self.window.is_empty() {
            self.changed.clear();
            self.cache.clear();
            self.floor = None;
            self.epoch = self.epoch.wrapping_add(1);
        }
    }

    /// The key's level in the window before the summaries' common term:
    /// what is compared across windows.
    fn level(&self, s: &Slot) -> Dd {
        match self.spec.agg {
            AggFn::Count => Dd::of(s.w_n as f64),
            AggFn::Sum => s.w_v,
            AggFn::Mean => Dd::of(s.w_v.hi / s.w_n as f64),
            AggFn::Max => s.w_v,
        }
    }

    /// The value reported for a level (summaries add Σ pane minimums).
    fn value(&self, level: Dd) -> f64 {
        match self.spec.agg {
            AggFn::Count | AggFn::Sum => level.plus(self.m).hi,
            AggFn::Mean | AggFn::Max => level.hi,
        }
    }

    /// The window's rows: value descending, then key ascending.
    fn rank(&mut self) -> Vec<(KeyBytes, f64, f64)> {
        let top = self.spec.top;
        let keep = if top == 0 {
            usize::MAX
        } else {
            (4 * top).max(top + 16)
        };
        let by_candidates = top > 0
            && self.floor.is_some()
            && self.cache.len() + self.changed.len() < self.window_keys;
        let mut ranked = None;
        if by_candidates {
            // The changed keys and the last ranking's best, once each.
            self.epoch = self.epoch.wrapping_add(1);
            let mut candidates = std::mem::take(&mut self.changed);
            for &s in &candidates {
                self.slots[s as usize].mark = self.epoch;
            }
            for s in std::mem::take(&mut self.cache) {
                self.mark(s);
            }
            candidates.append(&mut self.changed);
            candidates.retain(|&s| self.slots[s as usize].in_window > 0);
            let (list, dropped) = self.ordered(candidates, keep);
            let floor = self.floor.expect("checked");
            // Every other key is at or below the floor: the cut is shown
            // when the last row is strictly above it.
            if list.len() >= top && list[top - 1].1 > self.value(floor) {
                ranked = Some((list, higher(floor, dropped)));
            }
        }
        let (list, floor) = match ranked {
            Some(r) => r,
            None => {
                self.counts.full_ranks += 1;
                let all: Vec<u32> = (0..self.slots.len() as u32)
                    .filter(|&s| self.slots[s as usize].in_window > 0)
                    .collect();
                debug_assert_eq!(all.len(), self.window_keys);
                let (list, dropped) = self.ordered(all, keep);
                (list, dropped.unwrap_or(Dd::of(f64::NEG_INFINITY)))
            }
        };
        self.changed.clear();
        self.epoch = self.epoch.wrapping_add(1);
        self.cache = list.iter().map(|(s, _)| *s).collect();
        self.floor = Some(floor);
        let m = self.m;
        list.into_iter()
            .take(if top == 0 { usize::MAX } else { top })
            .map(|(s, value)| {
                let slot = &self.slots[s as usize];
                let err = match self.spec.agg {
                    AggFn::Count | AggFn::Sum => slot.w_err.plus(m).upper(),
                    AggFn::Mean | AggFn::Max => 0.0,
                };
                (slot.key.clone(), value, err)
            })
            .collect()
    }

    /// The best `keep` of `slots` as (slot, value), in order, and the
    /// highest level among those left out. The cut is found by value alone;
    /// keys are compared only among the values tied with it.
    fn ordered(&self, slots: Vec<u32>, keep: usize) -> (Vec<(u32, f64)>, Option<Dd>) {
        let mut list: Vec<(u32, f64, Dd)> = slots
            .into_iter()
            .map(|s| {
                let level = self.level(&self.slots[s as usize]);
                (s, self.value(level), level)
            })
            .collect();
        let order = |a: &(u32, f64, Dd), b: &(u32, f64, Dd)| -> Ordering {
            b.1.total_cmp(&a.1).then_with(|| self.key_order(a.0, b.0))
        };
        let mut dropped = None;
        let mut drop = |e: &(u32, f64, Dd)| dropped = Some(higher(e.2, dropped));
        if list.len() > keep {
            list.select_nth_unstable_by(keep - 1, |a, b| b.1.total_cmp(&a.1));
            let cut = list[keep - 1].1;
            let (mut contenders, out): (Vec<_>, Vec<_>) = list
                .into_iter()
                .partition(|e| e.1.total_cmp(&cut) != Ordering::Less);
            out.iter().for_each(&mut drop);
            if contenders.len() > keep {
                contenders.select_nth_unstable_by(keep - 1, order);
                contenders[keep..].iter().for_each(&mut drop);
                contenders.truncate(keep);
            }
            list = contenders;
        }
        list.sort_unstable_by(order);
        (list.into_iter().map(|(s, v, _)| (s, v)).collect(), dropped)
    }

    /// Two slots' keys in the output order (`keys::compare`), a single
    /// text or integer key compared without decoding.
    fn key_order(&self, a: u32, b: u32) -> Ordering {
        let (x, y) = (&self.slots[a as usize].key, &self.slots[b as usize].key);
        let null = |k: &[u8]| k == [0];
        match self.shape {
            Shape::Text | Shape::Int if null(x) || null(y) => null(y).cmp(&null(x)),
            Shape::Text => x[5..].cmp(&y[5..]),
            Shape::Int => {
                let v = |k: &[u8]| i64::from_le_bytes(k[1..9].try_into().expect("8 bytes"));
                v(x).cmp(&v(y))
            }
            Shape::Encoded => compare(x, y),
        }
    }

    /// Bytes of state held (slots, keys, panes, index).
    pub fn bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Slot>()
            + self.index.key_bytes
            + self.index.len() * 12
            + self.open.iter().map(|(_, p)| p.bytes()).sum::<usize>()
            + self.window.iter().map(|(_, p)| p.bytes()).sum::<usize>()
    }
}

/// The higher of two levels.
fn higher(a: Dd, b: Option<Dd>) -> Dd {
    match b {
        Some(b) if (b.hi, b.lo) > (a.hi, a.lo) => b,
        _ => a,
    }
}

fn neg(x: Dd) -> Dd {
    Dd {
        hi: -x.hi,
        lo: -x.lo,
    }
}

impl Slot {
    pub fn empty() -> Self {
        Self {
            key: KeyBytes::default(),
            refs: 0,
            pane: i64::MIN,
            entry: NO_ENTRY,
            in_window: 0,
            w_n: 0,
            w_v: Dd::ZERO,
            w_err: Dd::ZERO,
            mark: 0,
            dirty: false,
        }
    }
}
