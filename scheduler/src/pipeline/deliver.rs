//! The sink stage: writes each flow's rows to every sink and its dead
//! letters to the dead-letter files, checks per-source order, and
//! acknowledges source offsets once every sink holds the rows durably.
//! With checkpoints, files are published (and offsets acknowledged) only
//! by a checkpoint ([`crate::checkpoint::Checkpointer`]), at each cut the
//! operator stage sends.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arrow_array::RecordBatch;
use crossbeam_channel::{Receiver, RecvTimeoutError};
use roo_ingest::StreamAcks;

use super::operate::ToSink;
use crate::checkpoint::Checkpointer;
use crate::error::StageError;
use crate::metrics::{Latency, PipelineMetrics};
use crate::sinks::rotating::FlowAt;
use crate::sinks::{DeadLetterFiles, OutputSink};

/// Sources whose batch order is checked at once (one per TCP connection or
/// Flight stream). Past it the least recently seen is forgotten; a batch
/// from a forgotten source cannot be checked and is counted
/// (`roo_order_unchecked_batches_total`), never refused.
const SOURCES_ORDER_CHECKED_MAX: usize = 65_536;

/// How often an idle sink stage checks its files' age.
const SINK_TICK: Duration = Duration::from_millis(200);

/// Per-source order: each source's batches arrive numbered 0, 1, 2, …
/// with no gap and no repeat.
pub(crate) struct OrderCheck {
    /// source → (last seq, when last seen in batches taken)
    last: HashMap<Arc<str>, (u64, u64)>,
    taken: u64,
    forgotten: bool,
    capacity: usize,
}

impl OrderCheck {
    pub fn new(capacity: usize) -> Self {
        Self {
            last: HashMap::new(),
            taken: 0,
            forgotten: false,
            capacity,
        }
    }

    /// Checks one batch; `Ok(false)` when it could not be checked (its
    /// source was forgotten at the bound).
    pub fn check(&mut self, source: &Arc<str>, seq: u64) -> Result<bool, StageError> {
        self.taken += 1;
        if let Some((last, seen)) = self.last.get_mut(source) {
            if seq != *last + 1 {
                return Err(StageError::Order {
                    source_name: source.to_string(),
                    seq,
                    last: *last,
                    expected: *last + 1,
                });
            }
            *last = seq;
            *seen = self.taken;
            return Ok(true);
        }
        if seq != 0 && !self.forgotten {
            return Err(StageError::FirstBatch {
                source_name: source.to_string(),
                seq,
            });
        }
        let checked = seq == 0;
        if self.last.len() >= self.capacity {
            let oldest = self
                .last
                .iter()
                .min_by_key(|(_, (_, seen))| *seen)
                .map(|(s, _)| s.clone())
                .expect("full, so not empty");
            self.last.remove(&oldest);
            self.forgotten = true;
        }
        self.last.insert(source.clone(), (seq, self.taken));
        Ok(checked)
    }
}

/// A batch written but not yet durable in every sink: its number, the
/// source offset it ends at (none for an aggregate's results), and for a
/// partition's cut its state, handed to the partition's acks once durable.
type Pending = (u64, Option<(Arc<str>, u64)>, Option<Vec<u8>>);

pub(crate) fn run(
    rx: Receiver<ToSink>,
    mut sinks: Vec<OutputSink>,
    mut dead: Option<DeadLetterFiles>,
    mut checkpoints: Option<Checkpointer>,
    stream_acks: Option<Arc<StreamAcks>>,
    event_time: Option<usize>,
    metrics: &PipelineMetrics,
) -> Result<(), StageError> {
    // Whatever way the stage ends, the acks held finish (sockets close).
    let _close = CloseAcks(stream_acks.clone());
    let acks = Acks {
        streams: stream_acks.as_deref(),
        epochs: checkpoints.is_some(),
        metrics,
    };
    // (batch number, source and the offset it ends at — none for an
    // aggregate's results), written but not yet durable in every sink,
    // oldest first.
    let mut pending: VecDeque<Pending> = VecDeque::new();
    let mut number = 0u64;
    let mut at = Through::default();
    let mut order = OrderCheck::new(SOURCES_ORDER_CHECKED_MAX);
    loop {
        // Sources the source asks to be made durable now (a Kafka
        // partition being revoked).
        if let Some(streams) = &stream_acks {
            for source in streams.take_flush() {
                for s in &mut sinks {
                    s.flush_source(&source)?;
                }
            }
        }
        let flow = match rx.recv_timeout(SINK_TICK) {
            Ok(ToSink::Flow(f)) => f,
            Ok(ToSink::Cut(cut)) => {
                let c = checkpoints
                    .as_mut()
                    .expect("cuts come only with checkpoints");
                let streams = acks.streams_through(&pending);
                c.checkpoint(*cut, &mut sinks, &mut dead, streams, metrics)?;
                at.cut = number;
                acks.ack(&mut pending, &mut sinks, &mut dead, at)?;
                continue;
            }
            Ok(ToSink::PartCut {
                source,
                position,
                snapshot,
            }) => {
                // The partition's files end here, so what it has written
                // is durable once they are published; then its state is.
                number += 1;
                at.number = number;
                let flow_at = FlowAt {
                    number,
                    source: Some((source.clone(), position..position)),
                };
                for s in &mut sinks {
                    s.flush_source(&source)?;
                    s.pass(&flow_at)?;
                }
                pending.push_back((number, Some((source, position)), Some(snapshot)));
                acks.ack(&mut pending, &mut sinks, &mut dead, at)?;
                continue;
            }
            Err(RecvTimeoutError::Timeout) => {
                for s in &mut sinks {
                    s.tick()?;
                }
                acks.ack(&mut pending, &mut sinks, &mut dead, at)?;
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let started = Instant::now();
        number += 1;
        at.number = number;
        let batch = flow.batch.as_ref().filter(|b| b.num_rows() > 0);
        let rows = batch.map_or(0, RecordBatch::num_rows) as u64;
        let flow_at = FlowAt {
            number,
            source: (!flow.results).then(|| (flow.source.clone(), flow.offsets.clone())),
        };
        if let Some(batch) = batch {
            for s in &mut sinks {
                s.write(batch, &flow_at)?;
            }
            at.rows = number;
        } else {
            for s in &mut sinks {
                s.pass(&flow_at)?;
            }
        }
        if let Some(d) = &mut dead {
            d.write(&flow.dead_letters)?;
        }
        for letter in flow.dead_letters.iter().take(3) {
            tracing::debug!("dead letter: {letter}");
        }
        // Per-source order holds by construction (one operator stage,
        // FIFO channels); acks depend on it, so it is checked.
        if !order.check(&flow.source, flow.seq)? {
            PipelineMetrics::add(&metrics.order_unchecked_batches, 1);
        }
        let events = if flow.results {
            PipelineMetrics::add(&metrics.results_out, rows);
            pending.push_back((number, None, None));
            0
        } else {
            PipelineMetrics::add(&metrics.events_out, rows);
            pending.push_back((number, Some((flow.source.clone(), flow.offsets.end)), None));
            rows
        };
        PipelineMetrics::add(&metrics.events_aggregated, flow.aggregated);
        PipelineMetrics::add(
            &metrics.events_dead,
            flow.dead_letters.iter().map(|d| d.records).sum(),
        );
        metrics
            .sink_us
            .record(started.elapsed().as_micros() as u64, 1);
        let latency = SystemTime::now()
            .duration_since(flow.ingest_time)
            .unwrap_or_default();
        metrics
            .end_to_end_us
            .record(latency.as_micros() as u64, events.max(1));
        metrics
            .recent_end_to_end_us
            .record(latency.as_micros() as u64, events.max(1));
        if let (Some(c), Some(batch), false) = (event_time, batch, flow.results) {
            record_event_latency(batch, c, &metrics.event_to_sink_us);
        }
        acks.ack(&mut pending, &mut sinks, &mut dead, at)?;
    }
    for s in &mut sinks {
        s.close()?;
    }
    if acks.epochs {
        // Anything after the last cut (there is none after a clean stop)
        // stays unpublished: a restart removes it and reads it again.
        return Ok(());
    }
    acks.ack(&mut pending, &mut sinks, &mut dead, at)?;
    if let Some(d) = &mut dead {
        d.close()?;
    }
    Ok(())
}

/// How far the sink stage has come, in flow numbers.
#[derive(Clone, Copy, Default)]
struct Through {
    /// The last flow taken.
    number: u64,
    /// The last flow with rows (written to every sink).
    rows: u64,
    /// The last flow before the last checkpoint.
    cut: u64,
}

/// Where acknowledgements go.
struct Acks<'a> {
    /// The source's senders: a TCP source's (`acks = true`), a push
    /// source's client streams.
    streams: Option<&'a StreamAcks>,
    /// Under checkpoints dead letters are published by them, not per ack.
    epochs: bool,
    metrics: &'a PipelineMetrics,
}

impl Acks<'_> {
    /// The source's named streams' counts once every batch now pending
    /// is durable (what a checkpoint of them records).
    fn streams_through(&self, pending: &VecDeque<Pending>) -> BTreeMap<String, u64> {
        let Some(streams) = self.streams else {
            return BTreeMap::new();
        };
        let mut through: HashMap<Arc<str>, u64> = HashMap::new();
        for (_, at, _) in pending {
            if let Some((source, offset)) = at {
                let o = through.entry(source.clone()).or_default();
                *o = (*o).max(*offset);
            }
        }
        streams.streams_through(&through)
    }

    /// Acknowledges every batch every sink now holds durably: its source's
    /// offset (in the metrics, and to a TCP sender), and the dead letters
    /// written with it (published).
    fn ack(
        &self,
        pending: &mut VecDeque<Pending>,
        sinks: &mut [OutputSink],
        dead: &mut Option<DeadLetterFiles>,
        at: Through,
    ) -> Result<(), StageError> {
        let mut durable = u64::MAX;
        for s in sinks.iter_mut() {
            durable = durable.min(s.durable_through()?);
        }
        // Under checkpoints what a checkpoint holds is durable. Without,
        // what every sink holds; a flow without rows (dead letters only,
        // or nothing) needs nothing of the sinks, so once every row
        // written is durable so is every flow taken.
        let through = if self.epochs {
            at.cut
        } else if durable >= at.rows {
            at.number
        } else {
            durable
        };
        let mut any = false;
        while pending.front().is_some_and(|(n, _, _)| *n <= through) {
            if let (n, Some((source, offset)), snapshot) = pending.pop_front().expect("checked") {
                // Every sink is asked (each forgets its points up to n).
                let points = sinks
                    .iter_mut()
                    .fold(true, |all, s| s.commit_point(n) & all);
                if points {
                    self.metrics.ack(&source, offset);
                    if let Some(streams) = self.streams {
                        streams.durable(&source, offset);
                        if let Some(snapshot) = snapshot {
                            streams.checkpoint(&source, offset, snapshot);
                        }
                    }
                }
            }
            any = true;
        }
        if any {
            if let Some(d) = dead.as_mut().filter(|_| !self.epochs) {
                d.close()?;
            }
            PipelineMetrics::add(&self.metrics.acks, 1);
        }
        Ok(())
    }
}

/// Finishes the acks still held (a TCP source's sockets close) when the
/// sink stage ends.
struct CloseAcks(Option<Arc<StreamAcks>>);

impl Drop for CloseAcks {
    fn drop(&mut self) {
        if let Some(a) = &self.0 {
            a.close_all();
        }
    }
}

/// Records each row's latency from its event time (column `c`, Int64
/// microseconds since the Unix epoch) to now; a null or a time in the
/// future counts as 0.
fn record_event_latency(batch: &RecordBatch, c: usize, histogram: &Latency) {
    let times = crate::operators::features::event_times_us(batch.column(c));
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as i64;
    histogram.record_all(
        times
            .into_iter()
            .map(|t| t.map_or(0, |t| now.saturating_sub(t).max(0) as u64)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_refuses_gaps_repeats_and_late_starts() {
        let mut order = OrderCheck::new(2);
        let a: Arc<str> = Arc::from("a");
        let b: Arc<str> = Arc::from("b");
        assert!(order.check(&a, 0).unwrap());
        assert!(order.check(&a, 1).unwrap());
        assert!(matches!(
            order.check(&a, 3),
            Err(StageError::Order { expected: 2, .. })
        ));
        assert!(matches!(order.check(&a, 1), Err(StageError::Order { .. })));
        assert!(matches!(
            order.check(&b, 5),
            Err(StageError::FirstBatch { seq: 5, .. })
        ));
        assert!(order.check(&b, 0).unwrap());
        // Past the bound the least recently seen source ("a") is forgotten:
        // its next batch cannot be checked, and is counted, not refused.
        let c: Arc<str> = Arc::from("c");
        assert!(order.check(&c, 0).unwrap());
        assert!(!order.check(&a, 2).unwrap());
        // A source still in the table is checked as strictly as before.
        assert!(order.check(&a, 3).unwrap());
        assert!(order.check(&a, 5).is_err());
    }
}
