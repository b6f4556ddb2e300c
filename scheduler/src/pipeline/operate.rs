//! The operator stage: takes batches from the ingest queue in order, runs
//! each through the pipeline's operator chain, and sends the result to the
//! sink stage.
//!
//! Online requests ([`crate::online`]) arrive on a second queue; the
//! stage takes from whichever queue has work (fairly, when both do),
//! coalesces a request with those waiting behind it (`online/batcher.rs`),
//! runs them through the same chain, and sends each
//! request its reply once the chain is done with its batch (and the audit
//! log, if any, holds it) — before the sinks write it. The stage ends
//! once both queues have ended.
//!
//! A batch an operator left in flight on a device (a GPU batch) is held
//! while the next waiting batch is begun, so two batches overlap on the
//! device; held only while another batch is already waiting, so an idle
//! stream never waits on it. Every operator still sees batches in order.
//!
//! With checkpoints ([`crate::checkpoint`]) the stage cuts the stream
//! every `every` between two batches (none held on a device): every
//! operator's snapshot and the source's offset go down the sink queue in
//! order with the batches ([`ToSink::Cut`]). The last cut comes at the
//! end: after the operators' final flows when the source ended by itself,
//! before them when the pipeline was told to stop (its windows stay open
//! in the snapshot and go on after a restart).
//!
//! With a source that moves partitions (Kafka), the stage also serves its
//! [`Handover`]: a partition's staged snapshot is restored before the
//! stage processes anything more, and a cut the source asked for is taken
//! once the partition's batches through the offset asked are processed
//! (none held on a device): the partition's state goes down the sink
//! queue in order with the batches ([`ToSink::PartCut`]).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use std::collections::HashMap;

use crossbeam_channel::{Receiver, Select, Sender};
use roo_ingest::{Handover, IngestBatch};

use super::source::StopSignal;
use crate::checkpoint::Cut;
use crate::error::StageError;
use crate::metrics::PipelineMetrics;
use crate::online::{Coalescer, OnlineLimits, Request};
use crate::operators::{Chain, Flow, InFlight, Progress};

/// The stage's inputs: the source's queue and the requests' (each `None`
/// once it has ended, or for requests when the pipeline takes none).
struct Inputs<'m> {
    ingest: Option<Receiver<IngestBatch>>,
    requests: Option<(Receiver<Request>, Coalescer)>,
    metrics: &'m PipelineMetrics,
}

/// What the inputs gave.
enum Next {
    Flow(Flow),
    /// Nothing within the tick (or, not waiting, nothing ready).
    Idle,
    /// Both queues have ended.
    End,
}

impl Inputs<'_> {
    /// The next batch from either queue; waits up to `EMIT_TICK` when `wait`.
    fn next(&mut self, wait: bool) -> Next {
        loop {
            let Inputs {
                ingest,
                requests,
                metrics,
            } = self;
            // A request left over from the last coalesced batch goes first.
            if let Some((rx, coalescer)) = requests.as_mut() {
                if let Some(r) = coalescer.carried() {
                    match coalescer.flow(r, rx, metrics) {
                        Some(flow) => return Next::Flow(flow),
                        None => continue,
                    }
                }
            }
            if ingest.is_none() && requests.is_none() {
                return Next::End;
            }
            // Which queue gave what: a batch, or its end.
            let (from_ingest, got) = {
                let mut select = Select::new();
                let ingest_at = ingest.as_ref().map(|r| select.recv(r));
                let requests_rx = requests.as_ref().map(|(r, _)| r);
                if let Some(r) = requests_rx {
                    select.recv(r);
                }
                let ready = if wait {
                    select.select_timeout(EMIT_TICK).ok()
                } else {
                    select.try_select().ok()
                };
                let Some(op) = ready else {
                    return Next::Idle;
                };
                if Some(op.index()) == ingest_at {
                    let b = op.recv(ingest.as_ref().expect("selected"));
                    (true, b.ok().map(Flow::from).map(Ok))
                } else {
                    let first = op.recv(requests_rx.expect("selected"));
                    (false, first.ok().map(Err))
                }
            };
            let got = match got {
                Some(Ok(flow)) => Some(flow),
                Some(Err(first)) => {
                    let (rx, coalescer) = requests.as_mut().expect("selected");
                    match coalescer.flow(first, rx, metrics) {
                        Some(flow) => Some(flow),
                        // Refused whole (each requester was told): next.
                        None => continue,
                    }
                }
                None => None,
            };
            match got {
                Some(flow) => return Next::Flow(flow),
                None if from_ingest => *ingest = None,
                None => *requests = None,
            }
        }
    }

    fn waiting(&self) -> usize {
        self.ingest.as_ref().map_or(0, Receiver::len)
            + self.requests.as_ref().map_or(0, |(r, _)| r.len())
    }
}

/// How often an idle stage lets operators emit (an aggregate's windows).
const EMIT_TICK: Duration = Duration::from_millis(200);

/// What the sink stage takes, in order.
pub(crate) enum ToSink {
    Flow(Flow),
    Cut(Box<Cut>),
    /// A partition's keyed state at `position` ([`Handover`]): made
    /// durable by the sinks' files closing there, then handed to the
    /// partition's acks.
    PartCut {
        source: Arc<str>,
        position: u64,
        snapshot: Vec<u8>,
    },
}

/// When the stage cuts: checkpoints every `checkpoint_every`, and the
/// partition cuts a Kafka source asks for through its `handover`.
pub(crate) struct Cutting {
    pub checkpoint_every: Option<Duration>,
    pub handover: Option<Arc<Handover>>,
}

/// The partitions' hand-over, as the stage serves it.
struct Parts {
    handover: Arc<Handover>,
    /// partition → the end of its last batch sent to the sinks.
    processed: HashMap<Arc<str>, u64>,
}

impl Parts {
    /// Restores every staged snapshot, then takes the cuts due: called
    /// between batches, with none held on a device. False when the sink
    /// stage has gone.
    fn serve(&mut self, chain: &mut Chain, tx: &Sender<ToSink>) -> Result<bool, StageError> {
        if !self.handover.pending() {
            return Ok(true);
        }
        self.restore(chain)?;
        for cut in self.handover.take_due(|s| self.processed.get(s).copied()) {
            let snapshot = chain.part_snapshot(&cut.source, cut.release);
            if cut.release {
                self.processed.remove(&cut.source);
            }
            let part = ToSink::PartCut {
                source: cut.source,
                position: cut.position,
                snapshot,
            };
            if tx.send(part).is_err() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Applies every staged snapshot: before a batch of a partition just
    /// assigned is processed.
    fn restore(&mut self, chain: &mut Chain) -> Result<(), StageError> {
        for (source, snapshot) in self.handover.take_restores() {
            self.processed.remove(&source);
            chain
                .part_restore(&source, snapshot.as_deref())
                .map_err(|(operator, error)| StageError::PartitionState {
                    source_name: source.to_string(),
                    operator,
                    error: Box::new(error),
                })?;
        }
        Ok(())
    }

    /// A flow of events went to the sinks.
    fn sent(&mut self, flow: &Flow) {
        if flow.answer.is_none() && !flow.results {
            match self.processed.get_mut(&flow.source) {
                Some(end) => *end = flow.offsets.end,
                None => {
                    self.processed.insert(flow.source.clone(), flow.offsets.end);
                }
            }
        }
    }
}

/// Flows sent between two cuts at most: a cut comes after `every` or
/// after this many flows, whichever is first. What the sink stage and the
/// acks keep per flow until a checkpoint (16-24 bytes each) stays under a
/// few MiB whatever `checkpoint_secs` is.
pub(crate) const CUT_FLOWS_MAX: u64 = 65_536;

/// When the stage cuts the stream for a checkpoint.
struct Cuts {
    every: Duration,
    last: Instant,
    /// A flow went out since the last cut.
    dirty: bool,
    /// Flows sent since the last cut.
    flows: u64,
    /// The source's offset after its last batch.
    position: Option<u64>,
}

impl Cuts {
    fn due(&self) -> bool {
        self.dirty && (self.last.elapsed() >= self.every || self.flows >= CUT_FLOWS_MAX)
    }

    /// Snapshots the chain, seals its files, and sends the cut; false
    /// when the sink stage has gone.
    fn cut(&mut self, chain: &mut Chain, tx: &Sender<ToSink>) -> Result<bool, StageError> {
        let started = Instant::now();
        let snapshots = chain.snapshot();
        let files = chain.seal()?;
        let cut = Cut {
            snapshots,
            files,
            position: self.position,
            snapshot_time: started.elapsed(),
        };
        self.last = Instant::now();
        self.dirty = false;
        self.flows = 0;
        Ok(tx.send(ToSink::Cut(Box::new(cut))).is_ok())
    }
}

pub(crate) fn run(
    rx: Receiver<IngestBatch>,
    requests: Option<(Receiver<Request>, OnlineLimits)>,
    tx: Sender<ToSink>,
    mut chain: Chain,
    cutting: Cutting,
    stop: Arc<StopSignal>,
    metrics: &PipelineMetrics,
) -> Result<(), StageError> {
    let Cutting {
        checkpoint_every,
        handover,
    } = cutting;
    let mut parts = handover.map(|handover| Parts {
        handover,
        processed: HashMap::new(),
    });
    let mut cuts = checkpoint_every.map(|every| Cuts {
        every,
        last: Instant::now(),
        dirty: false,
        flows: 0,
        position: None,
    });
    let mut inputs = Inputs {
        ingest: Some(rx),
        requests: requests.map(|(rx, limits)| (rx, Coalescer::new(limits))),
        metrics,
    };
    let mut held: Option<(usize, InFlight)> = None;
    loop {
        let next = match inputs.next(held.is_none()) {
            Next::Flow(f) => Some(f),
            Next::Idle if held.is_some() => None,
            Next::Idle => {
                if !emit(&mut chain, false, &tx, metrics)? {
                    return Ok(());
                }
                if let Some(p) = parts.as_mut() {
                    if !p.serve(&mut chain, &tx)? {
                        return Ok(());
                    }
                }
                if let Some(c) = cuts.as_mut().filter(|c| c.due()) {
                    if !c.cut(&mut chain, &tx)? {
                        return Ok(());
                    }
                }
                continue;
            }
            Next::End => break,
        };
        let Some(flow) = next else {
            // Nothing waiting: finish the held batch now.
            if let Some((at, work)) = held.take() {
                if !finish(&mut chain, at, work, &tx, metrics, &mut parts)? {
                    return Ok(());
                }
            }
            continue;
        };
        if let Some(p) = parts.as_mut() {
            if held.is_none() {
                if !p.serve(&mut chain, &tx)? {
                    return Ok(());
                }
            } else if p.handover.pending() {
                // A partition's restore must come before its batches: the
                // held batch is finished first, then the stage served.
                let (at, work) = held.take().expect("held");
                if !finish(&mut chain, at, work, &tx, metrics, &mut parts)? {
                    return Ok(());
                }
                let p = parts.as_mut().expect("with parts");
                if !p.serve(&mut chain, &tx)? {
                    return Ok(());
                }
            }
        }
        if let Some(c) = cuts.as_mut() {
            c.dirty = true;
            c.flows += 1;
            if flow.answer.is_none() {
                c.position = Some(flow.offsets.end);
            }
        }
        metrics
            .queue_ingested
            .store(inputs.waiting() as u64, Ordering::Relaxed);
        let waited = SystemTime::now()
            .duration_since(flow.ingest_time)
            .unwrap_or_default();
        metrics
            .wait_us
            .record(waited.as_micros() as u64, flow.rows() as u64);
        // The new batch runs up to and through the operator holding the
        // older one (its device work overlaps), no further: every
        // operator after it must see the older batch first.
        let limit = held.as_ref().map_or(chain.len(), |(at, _)| at + 1);
        let progress = chain.run_to(flow, 0, limit);
        if let Some((at, work)) = held.take() {
            if !finish(&mut chain, at, work, &tx, metrics, &mut parts)? {
                return Ok(());
            }
        }
        let progress = match progress {
            Progress::Done(flow) if limit < chain.len() => chain.run(flow, limit),
            other => other,
        };
        match progress {
            Progress::Done(flow) => {
                checked(&mut chain)?;
                if !send_events(answered(flow), &tx, metrics, &mut parts) {
                    return Ok(());
                }
            }
            Progress::InFlight { at, work } if work.on_device => held = Some((at, work)),
            Progress::InFlight { at, work } => {
                if !finish(&mut chain, at, work, &tx, metrics, &mut parts)? {
                    return Ok(());
                }
            }
        }
        if !emit(&mut chain, false, &tx, metrics)? {
            return Ok(());
        }
        if let Some(c) = cuts.as_mut().filter(|c| held.is_none() && c.due()) {
            if !c.cut(&mut chain, &tx)? {
                return Ok(());
            }
        }
        if let Some(p) = parts.as_mut().filter(|_| held.is_none()) {
            if !p.serve(&mut chain, &tx)? {
                return Ok(());
            }
        }
    }
    if let Some((at, work)) = held.take() {
        if !finish(&mut chain, at, work, &tx, metrics, &mut parts)? {
            return Ok(());
        }
    }
    // The cuts a stopping source asked for (every batch is processed).
    if let Some(p) = parts.as_mut() {
        if !p.serve(&mut chain, &tx)? {
            return Ok(());
        }
    }
    match cuts.as_mut() {
        // Told to stop: the last checkpoint keeps open windows open.
        Some(c) if stop.stopped() => {
            c.cut(&mut chain, &tx)?;
        }
        Some(c) => {
            emit(&mut chain, true, &tx, metrics)?;
            c.cut(&mut chain, &tx)?;
        }
        // The source has ended: operators give what they still hold.
        None => {
            emit(&mut chain, true, &tx, metrics)?;
        }
    }
    Ok(())
}

/// The chain's fault, if an operator has one.
fn checked(chain: &mut Chain) -> Result<(), StageError> {
    chain.fault().map_or(Ok(()), Err)
}

/// Completes a held batch and whatever follows it in the chain.
fn finish(
    chain: &mut Chain,
    at: usize,
    work: InFlight,
    tx: &Sender<ToSink>,
    metrics: &PipelineMetrics,
    parts: &mut Option<Parts>,
) -> Result<bool, StageError> {
    let flow = chain.complete(Progress::InFlight { at, work });
    checked(chain)?;
    Ok(send_events(answered(flow), tx, metrics, parts))
}

/// Sends a flow of the source's events (noting how far its partition is
/// processed).
fn send_events(
    flow: Flow,
    tx: &Sender<ToSink>,
    metrics: &PipelineMetrics,
    parts: &mut Option<Parts>,
) -> bool {
    if let Some(p) = parts.as_mut() {
        p.sent(&flow);
    }
    send(flow, tx, metrics)
}

/// Replies to the requests a flow carries (the chain is done with it).
fn answered(mut flow: Flow) -> Flow {
    if let Some(answer) = flow.answer.take() {
        answer.deliver(flow.batch.as_ref());
    }
    flow
}

/// Sends the operators' own flows ([`Chain::emit`]).
fn emit(
    chain: &mut Chain,
    end: bool,
    tx: &Sender<ToSink>,
    metrics: &PipelineMetrics,
) -> Result<bool, StageError> {
    let flows = chain.emit(end);
    checked(chain)?;
    Ok(flows.into_iter().all(|f| send(f, tx, metrics)))
}

/// Sends a flow to the sink stage; false when it has gone.
fn send(flow: Flow, tx: &Sender<ToSink>, metrics: &PipelineMetrics) -> bool {
    PipelineMetrics::add(&metrics.batches, 1);
    if tx.send(ToSink::Flow(flow)).is_err() {
        return false;
    }
    metrics
        .queue_scored
        .store(tx.len() as u64, Ordering::Relaxed);
    true
}
