//! The cross-request micro-batcher (Triton's dynamic batcher, in the
//! engine), run by the operator stage itself when it takes a request: the
//! requests waiting then, and those arriving until `linger` after the
//! first was submitted, up to `max_rows` rows, become one flow. A request
//! that already waited `linger` in the queue (the stage was busy) waits no
//! more: under load batches fill from the queue, and an idle pipeline adds
//! at most `linger` to a lone request.
//!
//! Its flows have their own source (`requests`), numbered 0, 1, 2, … with
//! row offsets, so per-source order is checked at the sinks like any
//! source's.

use std::sync::Arc;
use std::time::SystemTime;

use arrow_select::concat::concat_batches;
use crossbeam_channel::Receiver;
use roo_ingest::IngestBatch;

use super::{Answer, OnlineError, OnlineLimits, Request};
use crate::metrics::PipelineMetrics;
use crate::operators::Flow;

/// The name of the requests' source in offsets, dead letters and acks.
pub(crate) const REQUESTS_SOURCE: &str = "requests";

/// Turns requests into flows, numbering them.
pub(crate) struct Coalescer {
    source: Arc<str>,
    limits: OnlineLimits,
    seq: u64,
    rows_before: u64,
    /// A request taken that did not fit the last batch: the next one's first.
    carried: Option<Request>,
}

impl Coalescer {
    pub(crate) fn new(limits: OnlineLimits) -> Self {
        Self {
            source: Arc::from(REQUESTS_SOURCE),
            limits,
            seq: 0,
            rows_before: 0,
            carried: None,
        }
    }

    /// A request carried over from the last batch, if any.
    pub(crate) fn carried(&mut self) -> Option<Request> {
        self.carried.take()
    }

    /// One flow of `first` and the requests that join it from `rx`;
    /// `None` when the requests could not be joined (each was told why).
    pub(crate) fn flow(
        &mut self,
        first: Request,
        rx: &Receiver<Request>,
        metrics: &PipelineMetrics,
    ) -> Option<Flow> {
        let deadline = first.submitted + self.limits.linger;
        let mut rows = first.batch.num_rows();
        let mut group = vec![first];
        while rows < self.limits.max_rows {
            // What is waiting joins at once; then, until the deadline,
            // what arrives.
            let next = match rx.try_recv() {
                Ok(r) => Some(r),
                Err(_) if self.limits.linger.is_zero() => None,
                // A timeout, or every requester gone: the batch is whole.
                Err(_) => rx.recv_deadline(deadline).ok(),
            };
            let Some(r) = next else { break };
            if rows + r.batch.num_rows() > self.limits.max_rows {
                self.carried = Some(r);
                break;
            }
            rows += r.batch.num_rows();
            group.push(r);
        }
        let schema = group[0].batch.schema();
        let batch = if group.len() == 1 {
            group[0].batch.clone()
        } else {
            match concat_batches(&schema, group.iter().map(|r| &r.batch)) {
                Ok(b) => b,
                Err(e) => {
                    // Not expected: every request was checked against the
                    // pipeline's schema when submitted.
                    for r in group {
                        let _ = r.reply.send(Err(OnlineError::Rows(vec![(
                            0,
                            format!("the request could not join a batch: {e}"),
                        )])));
                    }
                    return None;
                }
            }
        };
        let arrived = SystemTime::now() - group[0].submitted.elapsed();
        let mut answer = Answer::default();
        answer.set_read_only(!self.limits.update_state);
        let mut at = 0;
        for r in group {
            let n = r.batch.num_rows();
            answer.push(at, n, r.reply, r._permit);
            at += n;
        }
        let mut flow = Flow::from(IngestBatch {
            source: self.source.clone(),
            seq: self.seq,
            offsets: self.rows_before..self.rows_before + rows as u64,
            ingest_time: arrived,
            batch,
            dead_letters: Vec::new(),
        });
        flow.answer = Some(Box::new(answer));
        PipelineMetrics::add(&metrics.events_in, rows as u64);
        PipelineMetrics::add(&metrics.online_batches, 1);
        self.seq += 1;
        self.rows_before += rows as u64;
        Some(flow)
    }
}
