//! The cross-request micro-batcher: one thread per pipeline taking the
//! requests [`super::Requests::submit`] queued, coalescing those that
//! arrive within `linger` of the first (up to `max_rows` rows) into one
//! flow for the operator stage.
//!
//! Its flows have their own source (`requests`), numbered 0, 1, 2, … with
//! row offsets, so per-source order is checked at the sinks like any
//! source's. Sending a flow blocks while the operator stage's request
//! queue is full; requests wait meanwhile under their permits.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use arrow_select::concat::concat_batches;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use roo_ingest::IngestBatch;

use super::{Answer, OnlineError, OnlineLimits, Request};
use crate::error::StageError;
use crate::metrics::PipelineMetrics;

/// The name of the requests' source in offsets, dead letters and acks.
pub(crate) const REQUESTS_SOURCE: &str = "requests";

/// A batch of requests on its way to the operator stage.
pub(crate) struct RequestFlow {
    pub batch: IngestBatch,
    pub answer: Answer,
}

/// The batcher's body: runs until every [`super::Requests`] is dropped and
/// the queue is empty, then drops `tx` (the operator stage sees the end).
pub(crate) fn start(
    rx: Receiver<Request>,
    tx: Sender<RequestFlow>,
    limits: OnlineLimits,
    metrics: Arc<PipelineMetrics>,
) -> impl FnOnce() -> Result<(), StageError> + Send {
    move || {
        let source: Arc<str> = Arc::from(REQUESTS_SOURCE);
        let mut seq = 0u64;
        let mut rows_before = 0u64;
        let mut carried: Option<Request> = None;
        loop {
            let first = match carried.take() {
                Some(r) => r,
                None => match rx.recv() {
                    Ok(r) => r,
                    Err(_) => return Ok(()),
                },
            };
            let arrived = SystemTime::now();
            let deadline = Instant::now() + limits.linger;
            let mut rows = first.batch.num_rows();
            let mut group = vec![first];
            while rows < limits.max_rows {
                match rx.recv_deadline(deadline) {
                    Ok(r) if rows + r.batch.num_rows() > limits.max_rows => {
                        carried = Some(r);
                        break;
                    }
                    Ok(r) => {
                        rows += r.batch.num_rows();
                        group.push(r);
                    }
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                }
            }
            let schema = group[0].batch.schema();
            let batch = if group.len() == 1 {
                group[0].batch.clone()
            } else {
                match concat_batches(&schema, group.iter().map(|r| &r.batch)) {
                    Ok(b) => b,
                    Err(e) => {
                        // Not expected: every request was checked against
                        // the pipeline's schema when submitted.
                        for r in group {
                            let _ = r.reply.send(Err(OnlineError::Rows(vec![(
                                0,
                                format!("the request could not join a batch: {e}"),
                            )])));
                        }
                        continue;
                    }
                }
            };
            let mut answer = Answer::default();
            let mut at = 0;
            for r in group {
                let n = r.batch.num_rows();
                answer.push(at, n, r.reply, r._permit);
                at += n;
            }
            let flow = RequestFlow {
                batch: IngestBatch {
                    source: source.clone(),
                    seq,
                    offsets: rows_before..rows_before + rows as u64,
                    ingest_time: arrived,
                    batch,
                    dead_letters: Vec::new(),
                },
                answer,
            };
            if tx.send(flow).is_err() {
                // The operator stage has gone (it failed): the requests in
                // the flow are dropped unanswered, which tells each one.
                return Ok(());
            }
            PipelineMetrics::add(&metrics.events_in, rows as u64);
            PipelineMetrics::add(&metrics.online_batches, 1);
            seq += 1;
            rows_before += rows as u64;
        }
    }
}
