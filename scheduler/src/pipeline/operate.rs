//! The operator stage: takes batches from the ingest queue in order, runs
//! each through the pipeline's operator chain, and sends the result to the
//! sink stage.
//!
//! A batch an operator left in flight on a device (a GPU batch) is held
//! while the next waiting batch is begun, so two batches overlap on the
//! device; held only while another batch is already waiting, so an idle
//! stream never waits on it. Every operator still sees batches in order.

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use roo_ingest::IngestBatch;

use crate::error::StageError;
use crate::metrics::PipelineMetrics;
use crate::operators::{Chain, Flow, InFlight, Progress};

/// How often an idle stage lets operators emit (an aggregate's windows).
const EMIT_TICK: Duration = Duration::from_millis(200);

pub(crate) fn run(
    rx: Receiver<IngestBatch>,
    tx: Sender<Flow>,
    mut chain: Chain,
    metrics: &PipelineMetrics,
) -> Result<(), StageError> {
    let mut held: Option<(usize, InFlight)> = None;
    loop {
        let next = if held.is_some() {
            rx.try_recv().ok()
        } else {
            match rx.recv_timeout(EMIT_TICK) {
                Ok(b) => Some(b),
                Err(RecvTimeoutError::Timeout) => {
                    if !emit(&mut chain, false, &tx, metrics)? {
                        return Ok(());
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        };
        let Some(b) = next else {
            // Nothing waiting: finish the held batch now.
            if let Some((at, work)) = held.take() {
                if !finish(&mut chain, at, work, &tx, metrics)? {
                    return Ok(());
                }
            }
            continue;
        };
        metrics
            .queue_ingested
            .store(rx.len() as u64, Ordering::Relaxed);
        let waited = SystemTime::now()
            .duration_since(b.ingest_time)
            .unwrap_or_default();
        metrics
            .wait_us
            .record(waited.as_micros() as u64, b.batch.num_rows() as u64);
        // The new batch runs up to and through the operator holding the
        // older one (its device work overlaps), no further: every
        // operator after it must see the older batch first.
        let limit = held.as_ref().map_or(chain.len(), |(at, _)| at + 1);
        let progress = chain.run_to(Flow::from(b), 0, limit);
        if let Some((at, work)) = held.take() {
            if !finish(&mut chain, at, work, &tx, metrics)? {
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
                if !send(flow, &tx, metrics) {
                    return Ok(());
                }
            }
            Progress::InFlight { at, work } if work.on_device => held = Some((at, work)),
            Progress::InFlight { at, work } => {
                if !finish(&mut chain, at, work, &tx, metrics)? {
                    return Ok(());
                }
            }
        }
        if !emit(&mut chain, false, &tx, metrics)? {
            return Ok(());
        }
    }
    if let Some((at, work)) = held.take() {
        if !finish(&mut chain, at, work, &tx, metrics)? {
            return Ok(());
        }
    }
    // The source has ended: operators give what they still hold.
    emit(&mut chain, true, &tx, metrics)?;
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
    tx: &Sender<Flow>,
    metrics: &PipelineMetrics,
) -> Result<bool, StageError> {
    let flow = chain.complete(Progress::InFlight { at, work });
    checked(chain)?;
    Ok(send(flow, tx, metrics))
}

/// Sends the operators' own flows ([`Chain::emit`]).
fn emit(
    chain: &mut Chain,
    end: bool,
    tx: &Sender<Flow>,
    metrics: &PipelineMetrics,
) -> Result<bool, StageError> {
    let flows = chain.emit(end);
    checked(chain)?;
    Ok(flows.into_iter().all(|f| send(f, tx, metrics)))
}

/// Sends a flow to the sink stage; false when it has gone.
fn send(flow: Flow, tx: &Sender<Flow>, metrics: &PipelineMetrics) -> bool {
    PipelineMetrics::add(&metrics.batches, 1);
    if tx.send(flow).is_err() {
        return false;
    }
    metrics
        .queue_scored
        .store(tx.len() as u64, Ordering::Relaxed);
    true
}
