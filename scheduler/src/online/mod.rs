//! Online decisions: single requests (one event, or a few) scored through a
//! pipeline's own operator chain, with replies.
//!
//! ```text
//! HTTP / gRPC ─▶ Requests::submit ─▶ queue ─▶ operator stage: coalesce, the chain ─▶ sinks
//!      ▲          (a permit: at most          (linger, max_rows; beside the
//!      │           requests_max)                source's batches)
//!      └──── Ticket ◀──── Answer::deliver ◀────────┘
//! ```
//!
//! - `batcher.rs`: the cross-request micro-batcher (Triton's dynamic
//!   batcher, in the engine), run by the operator stage: the requests
//!   waiting, and those arriving within `linger` of the first, up to
//!   `max_rows` rows, become one flow.
//! - `answer.rs`: what travels with that flow — which rows are whose, which
//!   an operator refused and why — and the fan-out of the replies.
//!
//! A request runs exactly what a streamed event runs: features read and
//! update the key's state, tables join as of its event time, the audit log
//! records it, its rows go to the sinks. Its reply leaves the operator
//! thread once the chain (up to an aggregate, which does not change rows)
//! has run, after the audit record was written.
//!
//! Bounds: at most `requests_max` requests hold a permit at once (submitted
//! and not yet answered); past it `submit` refuses at once
//! ([`OnlineError::Busy`]) — never an unbounded queue.

mod answer;
mod batcher;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use crossbeam_channel::{Sender, TrySendError};
use futures::channel::oneshot;
use thiserror::Error;

pub use answer::Answer;
pub(crate) use batcher::Coalescer;

use crate::metrics::PipelineMetrics;
use crate::pipeline::{check_push_schema, SchemaMismatch};

/// How requests are coalesced and bounded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OnlineLimits {
    /// Requests arriving within this of the first one share its batch.
    pub linger: Duration,
    /// Rows a coalesced batch holds at most (a larger request runs alone).
    pub max_rows: usize,
    /// Requests submitted and not yet answered, at most.
    pub requests_max: usize,
    /// Whether a request's events update the features' state as a
    /// streamed event's do (true), or read it and leave it (false: each
    /// feature answered by a scan of the key's held events, as an
    /// out-of-order event's is).
    pub update_state: bool,
}

impl Default for OnlineLimits {
    fn default() -> Self {
        Self {
            linger: Duration::ZERO,
            max_rows: 1024,
            requests_max: 4096,
            update_state: true,
        }
    }
}

/// Why a request got no reply.
#[derive(Debug, Error)]
pub enum OnlineError {
    /// `requests_max` requests are in flight: try again later.
    #[error("{max} requests are in flight, the most this pipeline takes; retry later")]
    Busy { max: usize },
    /// The request's columns are not the pipeline's input.
    #[error(transparent)]
    Schema(#[from] SchemaMismatch),
    #[error("a request holds at least one row")]
    Empty,
    /// The pipeline is stopping or has failed.
    #[error("pipeline {pipeline} is stopping or has stopped; it takes no more requests")]
    Stopped { pipeline: String },
    /// Some rows became dead letters (`(row, reason)`, rows of the
    /// request); the request's other rows were scored and are on record.
    #[error("{} of the request's rows could not be scored: {}", .0.len(), describe(.0))]
    Rows(Vec<(usize, String)>),
}

fn describe(rows: &[(usize, String)]) -> String {
    rows.iter()
        .take(4)
        .map(|(r, why)| format!("row {r}: {why}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// A request's answer: its rows as the chain left them (the input's
/// columns, features, table columns, `score`, `model_version`, shadows),
/// rows `offset..offset + len` of the coalesced batch, which every
/// request of that batch shares (nothing is copied or sliced for a reply
/// until its reader asks for a column).
#[derive(Clone, Debug)]
pub struct Reply {
    pub batch: Arc<RecordBatch>,
    pub offset: usize,
    pub len: usize,
}

impl Reply {
    /// The request's rows as a batch of their own.
    pub fn rows(&self) -> RecordBatch {
        self.batch.slice(self.offset, self.len)
    }

    /// One column's values for the request's rows; `None` when the reply
    /// has no such column.
    pub fn column(&self, name: &str) -> Option<arrow_array::ArrayRef> {
        let i = self
            .batch
            .schema_ref()
            .fields()
            .iter()
            .position(|f| f.name() == name)?;
        Some(self.batch.column(i).slice(self.offset, self.len))
    }
}

/// The way to a reply: a future, or `wait` from a plain thread.
pub struct Ticket {
    rx: oneshot::Receiver<Result<Reply, OnlineError>>,
    pipeline: Arc<str>,
    metrics: Arc<PipelineMetrics>,
    submitted: Instant,
}

impl Ticket {
    /// Waits on the calling thread.
    pub fn wait(self) -> Result<Reply, OnlineError> {
        block_on(self.reply())
    }

    /// The reply, or why none (a pipeline that stopped drops the request).
    pub async fn reply(self) -> Result<Reply, OnlineError> {
        let result = match self.rx.await {
            Ok(r) => r,
            Err(oneshot::Canceled) => Err(OnlineError::Stopped {
                pipeline: self.pipeline.to_string(),
            }),
        };
        PipelineMetrics::add(&self.metrics.online_requests, 1);
        self.metrics
            .online_us
            .record(self.submitted.elapsed().as_micros() as u64, 1);
        result
    }
}

/// Runs `f` to its end on this thread, parked between wake-ups.
fn block_on<F: Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

/// One request on its way to the batcher.
pub(crate) struct Request {
    pub batch: RecordBatch,
    pub submitted: Instant,
    pub reply: oneshot::Sender<Result<Reply, OnlineError>>,
    pub _permit: Permit,
}

/// A request's place under `requests_max`, given back when it is answered
/// (or dropped unanswered).
pub(crate) struct Permit(Arc<AtomicUsize>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A pipeline's way in for requests; cheap to clone.
#[derive(Clone)]
pub struct Requests {
    pub(crate) tx: Sender<Request>,
    pub(crate) pipeline: Arc<str>,
    pub(crate) schema: arrow_schema::SchemaRef,
    pub(crate) in_flight: Arc<AtomicUsize>,
    pub(crate) limits: OnlineLimits,
    pub(crate) metrics: Arc<PipelineMetrics>,
}

impl Requests {
    /// Queues `batch` (the pipeline's input columns) for the chain; never
    /// blocks. Refused when `requests_max` are in flight.
    pub fn submit(&self, batch: RecordBatch) -> Result<Ticket, OnlineError> {
        check_push_schema(&self.schema, &batch.schema())?;
        if batch.num_rows() == 0 {
            return Err(OnlineError::Empty);
        }
        let max = self.limits.requests_max;
        if self.in_flight.fetch_add(1, Ordering::AcqRel) >= max {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            PipelineMetrics::add(&self.metrics.online_busy, 1);
            return Err(OnlineError::Busy { max });
        }
        let submitted = Instant::now();
        let permit = Permit(self.in_flight.clone());
        let (reply, rx) = oneshot::channel();
        let request = Request {
            batch,
            submitted,
            reply,
            _permit: permit,
        };
        // The channel holds `requests_max`, as many as there are permits.
        match self.tx.try_send(request) {
            Ok(()) => Ok(Ticket {
                rx,
                pipeline: self.pipeline.clone(),
                metrics: self.metrics.clone(),
                submitted,
            }),
            Err(TrySendError::Disconnected(_)) => Err(OnlineError::Stopped {
                pipeline: self.pipeline.to_string(),
            }),
            // Not reached: the channel has a slot for every permit.
            Err(TrySendError::Full(_)) => Err(OnlineError::Busy { max }),
        }
    }

    /// The columns a request carries.
    pub fn schema(&self) -> &arrow_schema::SchemaRef {
        &self.schema
    }

    pub fn limits(&self) -> OnlineLimits {
        self.limits
    }

    /// Requests submitted and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests;
