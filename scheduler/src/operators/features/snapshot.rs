//! The feature operator's state as a snapshot: every key set's keys (by
//! slot), their events, running aggregates (floats bit for bit), min/max
//! deques, the distinct multiset and counters. Restoring rebuilds the key
//! tables from the slots, so the restored operator continues exactly as
//! the one that wrote it. A snapshot written for other features (names,
//! keys, aggregations, windows, limits) is refused.

use std::collections::VecDeque;

use super::hash::digest;
use super::state::{KeyedState, StateCounts};
use super::window::Run;
use super::FeatureOperator;
use crate::state::{self, Reader, SnapshotError, Writer};

const KIND: &str = "features";
const VERSION: u32 = 1;

/// What the state was built from: a snapshot only restores into the same.
fn fingerprint(op: &FeatureOperator) -> u64 {
    digest(format!("{:?}|{:?}", op.specs, op.limits).as_bytes())
}

pub(super) fn write(op: &FeatureOperator) -> Vec<u8> {
    let mut w = Writer::default();
    w.u64(fingerprint(op));
    w.u64(op.late_events);
    w.u64(op.sets.len() as u64);
    for set in &op.sets {
        write_state(&mut w, &set.state);
    }
    state::encode(KIND, VERSION, &w.buf)
}

fn write_state(w: &mut Writer, s: &KeyedState) {
    w.i64(s.max_time);
    w.u64(s.counts.keys_evicted);
    w.u64(s.counts.keys_expired);
    w.u64(s.counts.events_dropped);
    w.u32(s.clock);
    w.u64(s.recency.len() as u64);
    for (slot, c) in &s.recency {
        w.u32(*slot);
        w.u32(*c);
    }
    w.u64(s.free.len() as u64);
    for f in &s.free {
        w.u32(*f);
    }
    w.u64(s.keys.len() as u64);
    for k in &s.keys {
        w.bytes(&k.key);
        w.u32(k.seen);
        w.i64(k.newest);
        w.i64(k.evicted_newest);
        w.u64(k.first_seq);
        w.u64(k.events.len() as u64);
        for word in &k.events {
            w.u64(*word);
        }
    }
    for r in &s.runs {
        w.u64(r.start);
        w.u64(r.count);
        w.u64(r.n);
        w.f64(r.sum);
        w.f64(r.comp);
        w.f64(r.mean);
        w.f64(r.m2);
        w.u64(r.distinct);
        w.u64(r.last_seq);
        w.f64(r.last);
        w.u64(r.same);
        w.f64(r.same_value);
    }
    w.u64(s.minmax.len() as u64);
    for m in &s.minmax {
        match m {
            None => w.u8(0),
            Some(m) => {
                w.u8(1);
                for q in [&m.0, &m.1] {
                    w.u64(q.len() as u64);
                    for seq in q {
                        w.u64(*seq);
                    }
                }
            }
        }
    }
    // Which distinct windows keep a map (their content is the window's).
    w.u64(s.distinct.len() as u64);
    for m in &s.distinct {
        w.u8(m.is_some() as u8);
    }
}

pub(super) fn read(op: &mut FeatureOperator, bytes: &[u8]) -> Result<(), SnapshotError> {
    let payload = state::decode_version(KIND, VERSION, bytes)?;
    let mut r = Reader::new(payload);
    if r.u64()? != fingerprint(op) {
        return Err(SnapshotError::Payload(
            "written for other features (names, keys, aggregations, windows or limits differ)"
                .into(),
        ));
    }
    let late = r.u64()?;
    let sets = r.count(1)?;
    if sets != op.sets.len() {
        return Err(SnapshotError::Payload(format!(
            "{sets} key sets; these features have {}",
            op.sets.len()
        )));
    }
    // Read everything before changing anything: a bad snapshot leaves the
    // operator as it was.
    let mut restored = Vec::with_capacity(sets);
    for set in &op.sets {
        restored.push(read_state(&mut r, &set.state)?);
    }
    r.finish()?;
    for (set, state) in op.sets.iter_mut().zip(restored) {
        set.state = state;
    }
    op.late_events = late;
    Ok(())
}

fn read_state(r: &mut Reader, like: &KeyedState) -> Result<KeyedState, SnapshotError> {
    let bad = |what: &str| SnapshotError::Payload(what.to_string());
    let mut s = like.empty_like();
    s.max_time = r.i64()?;
    s.counts = StateCounts {
        keys_evicted: r.u64()?,
        keys_expired: r.u64()?,
        events_dropped: r.u64()?,
    };
    s.clock = r.u32()?;
    let recency = r.count(8)?;
    for _ in 0..recency {
        s.recency.push_back((r.u32()?, r.u32()?));
    }
    let free = r.count(4)?;
    s.free = (0..free).map(|_| r.u32()).collect::<Result<_, _>>()?;
    let keys = r.count(48)?;
    for slot in 0..keys {
        let key: Box<[u8]> = r.bytes()?.into();
        let seen = r.u32()?;
        let newest = r.i64()?;
        let evicted_newest = r.i64()?;
        let first_seq = r.u64()?;
        let words = r.count(8)?;
        if words % s.stride != 0 {
            return Err(bad("a key's events are not whole"));
        }
        let events: VecDeque<u64> = (0..words).map(|_| r.u64()).collect::<Result<_, _>>()?;
        if !key.is_empty() && s.find(&key).is_some() {
            return Err(bad("a key is held twice"));
        }
        if !key.is_empty() {
            s.hold(&key, slot as u32);
        }
        s.events_held += events.len() / s.stride;
        s.keys.push(super::state::Key {
            key,
            seen,
            newest,
            evicted_newest,
            first_seq,
            events,
        });
    }
    if s.keys_held() > s.keys_max {
        return Err(bad("more keys than keys_max"));
    }
    if s.recency.iter().any(|&(slot, _)| slot as usize >= keys)
        || s.free.iter().any(|&f| f as usize >= keys)
    {
        return Err(bad("a slot number points past the keys"));
    }
    for _ in 0..keys * s.groups.len() {
        s.runs.push(Run {
            start: r.u64()?,
            count: r.u64()?,
            n: r.u64()?,
            sum: r.f64()?,
            comp: r.f64()?,
            mean: r.f64()?,
            m2: r.f64()?,
            distinct: r.u64()?,
            last_seq: r.u64()?,
            last: r.f64()?,
            same: r.u64()?,
            same_value: r.f64()?,
        });
    }
    let minmax = r.count(1)?;
    if minmax != 0 && minmax != keys * s.groups.len() {
        return Err(bad("min/max deques for other keys"));
    }
    for _ in 0..minmax {
        s.minmax.push(match r.u8()? {
            0 => None,
            1 => {
                let mut pair = (VecDeque::new(), VecDeque::new());
                for q in [&mut pair.0, &mut pair.1] {
                    let n = r.count(8)?;
                    for _ in 0..n {
                        q.push_back(r.u64()?);
                    }
                }
                Some(Box::new(pair))
            }
            _ => return Err(bad("a min/max flag is neither 0 nor 1")),
        });
    }
    let distinct = r.count(1)?;
    if distinct != 0 && distinct != keys * s.groups.len() {
        return Err(bad("distinct maps for other keys"));
    }
    s.distinct = vec![None; distinct];
    let groups = s.groups.len().max(1);
    for i in 0..distinct {
        match r.u8()? {
            0 => {}
            1 if s.groups[i % groups].distinct && !s.keys[i / groups].key.is_empty() => {
                s.rebuild_distinct_map((i / groups) as u32, i % groups)
            }
            _ => return Err(bad("a distinct map flag that does not fit")),
        }
    }
    Ok(s)
}
