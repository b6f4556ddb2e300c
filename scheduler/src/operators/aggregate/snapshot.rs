//! The aggregate's state as a snapshot: the watermark, every key slot
//! (its key, references and window aggregate, floats bit for bit), the
//! open panes and the window's panes with their entries, and the counters.
//! Restoring rebuilds the key index and the summaries' heaps (their order
//! is total: counter, then entry), so the restored operator continues
//! exactly as the one that wrote it; the latest window (what Flight's
//! `latest` serves) travels as Arrow IPC. A snapshot written for another
//! aggregate (key, agg, column, window, every, top, bounds) is refused.

use std::collections::VecDeque;

use arrow_array::RecordBatch;
use arrow_ipc::reader::StreamReader;
use arrow_ipc::writer::StreamWriter;
use arrow_schema::SchemaRef;

use super::panes::{Dd, Entry, Pane};
use super::windows::{Counts, Slot, Windows};
use super::AggregateOperator;
use crate::operators::features::hash::digest;
use crate::state::{self, Reader, SnapshotError, Writer};

const KIND: &str = "aggregate";
const VERSION: u32 = 1;

fn fingerprint(w: &Windows) -> u64 {
    digest(format!("{:?}", w.spec).as_bytes())
}

fn dd(w: &mut Writer, x: Dd) {
    w.f64(x.hi);
    w.f64(x.lo);
}

fn read_dd(r: &mut Reader) -> Result<Dd, SnapshotError> {
    Ok(Dd {
        hi: r.f64()?,
        lo: r.f64()?,
    })
}

fn write_pane(w: &mut Writer, end: i64, pane: &Pane) {
    w.i64(end);
    w.u8(pane.negative as u8);
    w.u8(pane.summary() as u8);
    dd(w, pane.min);
    w.u64(pane.entries.len() as u64);
    for e in &pane.entries {
        w.u32(e.slot);
        w.u64(e.n);
        dd(w, e.v);
        dd(w, e.err);
    }
}

fn read_pane(r: &mut Reader, slots: usize) -> Result<(i64, Pane, bool), SnapshotError> {
    let end = r.i64()?;
    let mut pane = Pane::default();
    pane.negative = r.u8()? != 0;
    let summary = r.u8()? != 0;
    pane.min = read_dd(r)?;
    let n = r.count(44)?;
    pane.entries.reserve_exact(n);
    for _ in 0..n {
        let slot = r.u32()?;
        if slot as usize >= slots {
            return Err(SnapshotError::Payload(format!(
                "an entry names slot {slot} of {slots}"
            )));
        }
        pane.entries.push(Entry {
            slot,
            n: r.u64()?,
            v: read_dd(r)?,
            err: read_dd(r)?,
        });
    }
    Ok((end, pane, summary))
}

pub(super) fn write(op: &AggregateOperator) -> Vec<u8> {
    let s = &op.windows;
    let mut w = Writer::default();
    w.u64(fingerprint(s));
    w.i64(s.watermark);
    w.i64(s.max_time);
    w.i64(s.w_end);
    w.u64(s.window_keys as u64);
    dd(&mut w, s.m);
    let c = s.counts;
    for v in [
        c.late_events,
        c.refused_events,
        c.takeovers,
        c.windows_emitted,
        c.full_ranks,
    ] {
        w.u64(v);
    }
    w.u64(s.slots.len() as u64);
    for slot in &s.slots {
        w.bytes(&slot.key);
        w.u32(slot.refs);
        w.i64(slot.pane);
        w.u32(slot.entry);
        w.u32(slot.in_window);
        w.i64(slot.w_n);
        dd(&mut w, slot.w_v);
        dd(&mut w, slot.w_err);
    }
    w.u64(s.free.len() as u64);
    for f in &s.free {
        w.u32(*f);
    }
    w.u64(s.open.len() as u64);
    for (end, pane) in &s.open {
        write_pane(&mut w, *end, pane);
    }
    w.u64(s.window.len() as u64);
    for (end, pane) in &s.window {
        write_pane(&mut w, *end, pane);
    }
    w.bytes(&op.latest.get().map(|b| latest_ipc(&b)).unwrap_or_default());
    state::encode(KIND, VERSION, &w.buf)
}

/// A window's rows as an Arrow IPC stream.
fn latest_ipc(batch: &RecordBatch) -> Vec<u8> {
    let mut out = Vec::new();
    let mut w = StreamWriter::try_new(&mut out, &batch.schema()).expect("a schema encodes");
    w.write(batch).expect("a batch encodes");
    w.finish().expect("a stream finishes");
    drop(w);
    out
}

/// The latest window back from IPC; it must have the rows' schema.
fn read_latest(bytes: &[u8], schema: &SchemaRef) -> Result<Option<RecordBatch>, SnapshotError> {
    if bytes.is_empty() {
        return Ok(None);
    }
    let bad =
        |e: arrow_schema::ArrowError| SnapshotError::Payload(format!("the latest window: {e}"));
    let mut reader = StreamReader::try_new(bytes, None).map_err(bad)?;
    let batch = reader
        .next()
        .transpose()
        .map_err(bad)?
        .ok_or_else(|| SnapshotError::Payload("the latest window has no rows".into()))?;
    if batch.schema() != *schema {
        return Err(SnapshotError::Payload(
            "the latest window is not of this aggregate's rows".into(),
        ));
    }
    Ok(Some(batch))
}

pub(super) fn read(op: &mut AggregateOperator, bytes: &[u8]) -> Result<(), SnapshotError> {
    let payload = state::decode_version(KIND, VERSION, bytes)?;
    let mut r = Reader::new(payload);
    let old = &op.windows;
    if r.u64()? != fingerprint(old) {
        return Err(SnapshotError::Payload(
            "written for another aggregate (key, agg, column, window, every, top or bounds differ)"
                .into(),
        ));
    }
    // Everything is read into a new state before the old is replaced: a
    // bad snapshot leaves the operator as it was.
    let mut w = Windows::new(old.spec.clone(), old.shape);
    w.watermark = r.i64()?;
    w.max_time = r.i64()?;
    w.w_end = r.i64()?;
    w.window_keys = r.u64()? as usize;
    w.m = read_dd(&mut r)?;
    w.counts = Counts {
        late_events: r.u64()?,
        refused_events: r.u64()?,
        takeovers: r.u64()?,
        windows_emitted: r.u64()?,
        full_ranks: r.u64()?,
    };
    let n = r.count(8 + 4 + 8 + 4 + 4 + 8 + 32)?;
    for _ in 0..n {
        let mut slot = Slot::empty();
        slot.key = r.bytes()?.into();
        slot.refs = r.u32()?;
        slot.pane = r.i64()?;
        slot.entry = r.u32()?;
        slot.in_window = r.u32()?;
        slot.w_n = r.i64()?;
        slot.w_v = read_dd(&mut r)?;
        slot.w_err = read_dd(&mut r)?;
        w.slots.push(slot);
    }
    let free = r.count(4)?;
    for _ in 0..free {
        let f = r.u32()?;
        if f as usize >= n || w.slots[f as usize].refs != 0 {
            return Err(SnapshotError::Payload(format!(
                "free slot {f} is out of range or in use"
            )));
        }
        w.free.push(f);
    }
    let open = r.count(8)?;
    for _ in 0..open {
        let (end, mut pane, summary) = read_pane(&mut r, n)?;
        pane.restore_summary(w.spec.agg, summary);
        w.open.push((end, pane));
    }
    let window = r.count(8)?;
    let mut panes = VecDeque::with_capacity(window);
    for _ in 0..window {
        let (end, pane, _) = read_pane(&mut r, n)?;
        panes.push_back((end, pane));
    }
    w.window = panes;
    let latest = read_latest(r.bytes()?, &op.output_schema)?;
    r.finish()?;
    // Each slot's references are its entries.
    let mut refs = vec![0u32; n];
    for (_, pane) in w.open.iter().chain(w.window.iter()) {
        for e in &pane.entries {
            refs[e.slot as usize] += 1;
        }
    }
    for (i, slot) in w.slots.iter().enumerate() {
        if slot.refs != refs[i] || (slot.refs > 0 && slot.key.is_empty()) {
            return Err(SnapshotError::Payload(format!(
                "slot {i} claims {} references; its entries are {}",
                slot.refs, refs[i]
            )));
        }
    }
    for (i, slot) in w.slots.iter().enumerate() {
        if slot.refs > 0 {
            w.index.insert_encoded(&slot.key, i as u32);
        }
    }
    op.windows = w;
    if let Some(batch) = latest {
        op.latest.set(batch);
    }
    Ok(())
}
