//! A push source's way in: a [`Pusher`] per client stream (Flight DoPut)
//! sends batches into the pipeline's ingest queue, blocking while it is
//! full (backpressure on the client).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use crossbeam_channel::{SendTimeoutError, Sender};
use roo_ingest::{IngestBatch, StreamAcks};
use thiserror::Error;

use super::source::StopSignal;
use crate::metrics::PipelineMetrics;

/// How often a blocked push looks whether the pipeline is stopping.
const STOP_CHECK: Duration = Duration::from_millis(50);

/// A batch whose columns are not the pipeline's.
#[derive(Debug, Error)]
#[error("the batch's columns are [{got}]; the pipeline takes [{expected}]")]
pub struct SchemaMismatch {
    pub got: String,
    pub expected: String,
}

/// Why a push was refused.
#[derive(Debug, Error)]
pub enum PushError {
    /// The batch does not match the pipeline's input; nothing was queued.
    #[error(transparent)]
    Schema(#[from] SchemaMismatch),
    /// The pipeline is stopping (or failed): it takes no more batches.
    /// `accepted` rows of this stream were queued (part of the batch that
    /// was refused may be among them: the client resends from there).
    #[error("the pipeline is stopping; {accepted} rows of this stream were accepted")]
    Stopping { accepted: u64 },
}

/// One client stream into a push pipeline. Dropping it ends the stream.
pub struct Pusher {
    pub(super) tx: Sender<IngestBatch>,
    /// Pushed batches are queued in slices of at most this many rows, so
    /// the queue's bound (sized for `max_rows` batches) holds.
    pub(super) max_rows: usize,
    pub(super) schema: SchemaRef,
    pub(super) source: Arc<str>,
    pub(super) seq: u64,
    pub(super) rows: u64,
    pub(super) stop: Arc<StopSignal>,
    pub(super) metrics: Arc<PipelineMetrics>,
    /// Its rows durable go back to the client through these.
    pub(super) acks: Arc<StreamAcks>,
}

impl Drop for Pusher {
    /// The stream ends: its acks finish once its last batch is durable.
    fn drop(&mut self) {
        self.acks.closed(&self.source);
    }
}

impl Pusher {
    /// Queues `batch`, in slices of at most `max_rows` rows; blocks while
    /// the pipeline's queue is full. Returns the rows accepted so far on
    /// this stream; a `Stopping` error says the same (some slices of this
    /// batch may have been queued before it).
    pub fn push(&mut self, batch: RecordBatch) -> Result<u64, PushError> {
        check_push_schema(&self.schema, &batch.schema())?;
        if self.stop.stopped() {
            return Err(self.stopping());
        }
        let total = batch.num_rows();
        let mut at = 0;
        while at < total {
            let rows = self.max_rows.min(total - at);
            self.queue(batch.slice(at, rows))?;
            at += rows;
        }
        Ok(self.rows)
    }

    fn queue(&mut self, batch: RecordBatch) -> Result<(), PushError> {
        let rows = batch.num_rows() as u64;
        let mut b = IngestBatch {
            source: self.source.clone(),
            seq: self.seq,
            offsets: self.rows..self.rows + rows,
            ingest_time: SystemTime::now(),
            batch,
            dead_letters: Vec::new(),
        };
        // Counted before it is queued: the sink stage may make it durable
        // at once. A batch refused below (the pipeline stopping) is never
        // durable, so the count never reaches it.
        self.acks.handed_on(&b);
        loop {
            if self.stop.stopped() {
                return Err(self.stopping());
            }
            match self.tx.send_timeout(b, STOP_CHECK) {
                Ok(()) => break,
                Err(SendTimeoutError::Timeout(back)) => b = back,
                Err(SendTimeoutError::Disconnected(_)) => return Err(self.stopping()),
            }
        }
        self.seq += 1;
        self.rows += rows;
        PipelineMetrics::add(&self.metrics.events_in, rows);
        Ok(())
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The stream's rows so far: where a named stream resumes at first.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    fn stopping(&self) -> PushError {
        PushError::Stopping {
            accepted: self.rows,
        }
    }
}

/// A pushed batch must have the pipeline's columns, in order, with their
/// types; a nullable column may receive a batch that declares it
/// non-nullable, not the other way.
pub fn check_push_schema(expected: &SchemaRef, got: &SchemaRef) -> Result<(), SchemaMismatch> {
    let names = |s: &SchemaRef| {
        s.fields()
            .iter()
            .map(|f| format!("{}: {}", f.name(), f.data_type()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let fits = expected.fields().len() == got.fields().len()
        && expected.fields().iter().zip(got.fields()).all(|(e, g)| {
            e.name() == g.name()
                && e.data_type() == g.data_type()
                && (e.is_nullable() || !g.is_nullable())
        });
    if fits {
        Ok(())
    } else {
        Err(SchemaMismatch {
            got: names(got),
            expected: names(expected),
        })
    }
}
