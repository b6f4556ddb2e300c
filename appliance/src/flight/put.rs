//! DoPut into a pipeline whose source takes pushes: batches enter its
//! queue (blocking while full: backpressure on the client) and go to its
//! sinks; each `PutResult` says how many rows of the stream were accepted
//! and how many are durable.
//!
//! The protocol (the README's "Flight DoPut"): the descriptor's path is
//! `[PIPELINE]` or `[PIPELINE, STREAM]`. Every `PutResult`'s
//! `app_metadata` is `{"rows_accepted": A, "rows_durable": D}`: the
//! stream's rows queued in the pipeline, and those every sink holds
//! durably (published by a checkpoint, or without checkpoints in a
//! published file), both cumulative. One comes after each batch. A named
//! stream is counted across calls and restarts: its first `PutResult`
//! comes at once with A = D = R, the rows of that stream durable in the
//! last checkpoint, and the client sends from row R; after the client
//! ends its side, the call stays open, with a `PutResult` each time D
//! moves, until D = A (then it ends OK), or until the pipeline stops
//! first (UNAVAILABLE, counts in the details: the client reconnects and
//! is told R again). So a client that resends from R after any failure,
//! a SIGKILL of the server included, delivers every row exactly once.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::{FlightData, PutResult};
use bytes::Bytes;
use roo_ingest::AckTarget;
use roo_scheduler::{check_push_schema, PipelineError, PushError};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::streams::{opening, refuse, Incoming, Stopped};
use super::tables::{table_path, upsert};
use super::{invalid, BoxStream, Shared, REPLY_QUEUE};

/// A `PutResult`'s `app_metadata`: the rows of this stream accepted so
/// far (queued in the pipeline) and durable, cumulative.
#[derive(Clone, Copy, Serialize)]
struct PutAck {
    rows_accepted: u64,
    rows_durable: u64,
}

impl PutAck {
    fn bytes(self) -> Bytes {
        Bytes::from(serde_json::to_vec(&self).expect("a PutAck serialises"))
    }

    fn result(self) -> PutResult {
        PutResult {
            app_metadata: self.bytes(),
        }
    }
}

/// Where the pipeline tells a DoPut its rows durable.
struct DurableWatch(tokio::sync::watch::Sender<u64>);

impl AckTarget for DurableWatch {
    fn tell(&mut self, records: Option<u64>) -> bool {
        if let Some(n) = records {
            self.0.send_replace(n);
        }
        !self.0.is_closed()
    }
}

/// Resolves once the server begins to stop (or is gone).
async fn stopped(mut stopping: tokio::sync::watch::Receiver<bool>) {
    while !*stopping.borrow_and_update() {
        if stopping.changed().await.is_err() {
            return;
        }
    }
}

/// UNAVAILABLE for a stream whose pipeline or server is stopping, with the
/// rows of the stream accepted (exactly those reach the sinks). The counts
/// also travel as the status's details, the same JSON as a `PutResult`'s,
/// for a client that resumes from it without reading the message. Arrow's
/// C++ client (pyarrow) hands the details over as `FlightError.extra_info`
/// only beside its own status trailers, so those are sent too (Arrow's
/// `IOError`, the code its clients give an UNAVAILABLE).
fn stopping_status(counts: PutAck) -> Status {
    let message = PushError::Stopping {
        accepted: counts.rows_accepted,
    }
    .to_string();
    let mut trailers = tonic::metadata::MetadataMap::new();
    trailers.insert(
        "x-arrow-status",
        tonic::metadata::MetadataValue::from_static("5"),
    );
    trailers.insert_bin(
        "x-arrow-status-message-bin",
        tonic::metadata::MetadataValue::from_bytes(message.as_bytes()),
    );
    Status::with_details_and_metadata(tonic::Code::Unavailable, message, counts.bytes(), trailers)
}

pub(super) async fn do_put(
    shared: &Arc<Shared>,
    request: Request<Streaming<FlightData>>,
) -> Result<Response<BoxStream<PutResult>>, Status> {
    let who = shared.authorize(&request)?;
    let slot = shared.stream_slot()?;
    let peer = request
        .remote_addr()
        .map_or_else(|| "unknown".to_string(), |a| a.to_string());
    let mut input = request.into_inner();
    let shared = shared.clone();
    let (tx, rx) = mpsc::channel::<Result<PutResult, Status>>(REPLY_QUEUE);
    // The reply starts now: a client may send nothing until it has it.
    tokio::spawn(async move {
        let _slot = slot;
        let opened = match opening(&mut input, shared.idle, "DoPut", "a pipeline or a table").await
        {
            Ok(o) => o,
            Err(status) => return refuse(&tx, status, shared.idle).await,
        };
        if let Some(table) = table_path(&opened.1).map(str::to_string) {
            let (first, _) = opened;
            return upsert(shared, tx, input, first, table, who).await;
        }
        let (durable_tx, durable_rx) = tokio::sync::watch::channel(0u64);
        let opened = Ok::<_, Status>(opened).and_then(|(first, path)| {
            let stream = match path.as_slice() {
                [_] => None,
                [_, name] => Some(name.clone()),
                _ => {
                    return Err(invalid(format!(
                        "the DoPut descriptor's path is {path:?}; expected [PIPELINE] or [PIPELINE, STREAM]"
                    )))
                }
            };
            let n = shared.next_stream.fetch_add(1, Ordering::Relaxed);
            let source = format!("flight:{who}@{peer}#{n}");
            let pusher = shared
                .pipeline(&path[0])?
                .pusher(&source, Box::new(DurableWatch(durable_tx)), stream.clone())
                .map_err(|e| match e {
                    // The config's words for it are the appliance's to say.
                    PipelineError::NotPush { .. } => Status::failed_precondition(format!(
                        "{e}; a pipeline takes DoPut when its source is kind = \"flight\""
                    )),
                    // Another call holds the name (a client reconnecting
                    // before the server saw its old call end): retry.
                    PipelineError::Stream {
                        source: roo_ingest::StreamError::Busy(_),
                        ..
                    } => Status::unavailable(roo_scheduler::error::chain(&e)),
                    PipelineError::Stream { .. } => invalid(roo_scheduler::error::chain(&e)),
                    e => Status::failed_precondition(e.to_string()),
                })?;
            Ok((first, pusher, stream.is_some()))
        });
        let (first, pusher, named) = match opened {
            Ok(o) => o,
            Err(status) => return refuse(&tx, status, shared.idle).await,
        };
        let mut accepted = pusher.rows();
        let counts = |accepted: u64, durable: &tokio::sync::watch::Receiver<u64>| PutAck {
            rows_accepted: accepted,
            rows_durable: *durable.borrow(),
        };
        if named {
            // Where to send from: the stream's rows durable.
            let _ = tx.try_send(Ok(counts(accepted, &durable_rx).result()));
        }
        let mut pusher = Some(pusher);
        let expected = pusher.as_ref().expect("held").schema().clone();
        let mut incoming = Incoming::new(input, first, shared.idle);
        let stopping = stopped(shared.stopping.clone());
        tokio::pin!(stopping);
        loop {
            let next = tokio::select! {
                biased;
                // The server is stopping: a stream waiting on its client
                // ends now, with the count, rather than at the grace's end.
                () = &mut stopping => {
                    let status = stopping_status(counts(accepted, &durable_rx));
                    return refuse(&tx, status, shared.idle).await;
                }
                next = incoming.next(|s| check_push_schema(&expected, s).map_err(|e| e.to_string())) => next,
            };
            let batch = match next {
                Ok(Some(b)) => b,
                Ok(None) => break,
                Err(Stopped::Gone) => return,
                Err(Stopped::Refused(status)) => return refuse(&tx, status, shared.idle).await,
            };
            let mut p = pusher.take().expect("held");
            let reserved = shared.reserve(&batch, 1).await;
            // The push blocks while the pipeline's queue is full.
            let (p, pushed) = match tokio::task::spawn_blocking(move || {
                let r = p.push(batch);
                (p, r)
            })
            .await
            {
                Ok(done) => done,
                Err(_) => return,
            };
            drop(reserved); // the pipeline's queue holds it now, within its own bound
            pusher = Some(p);
            match pushed {
                Ok(rows) => {
                    accepted = rows;
                    // Acks are cumulative: when the client is not
                    // reading them, skipping one loses nothing.
                    let _ = tx.try_send(Ok(counts(accepted, &durable_rx).result()));
                }
                Err(PushError::Schema(e)) => {
                    return refuse(&tx, invalid(e.to_string()), shared.idle).await
                }
                Err(PushError::Stopping { accepted }) => {
                    let status = stopping_status(counts(accepted, &durable_rx));
                    return refuse(&tx, status, shared.idle).await;
                }
            }
        }
        // The stream has ended: its acks finish once its last batch is durable.
        drop(pusher);
        if named {
            return until_durable(&tx, accepted, durable_rx, shared.idle).await;
        }
        let last = counts(accepted, &durable_rx).result();
        let _ = tokio::time::timeout(Duration::from_secs(5), tx.send(Ok(last))).await;
    });
    Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
}

/// A named stream's end: a `PutResult` each time its rows durable move,
/// until every row accepted is durable (the call ends OK), the pipeline
/// ends first (UNAVAILABLE with the counts), or the client goes.
async fn until_durable(
    tx: &mpsc::Sender<Result<PutResult, Status>>,
    accepted: u64,
    mut durable: tokio::sync::watch::Receiver<u64>,
    idle: Duration,
) {
    loop {
        let rows_durable = *durable.borrow_and_update();
        let counts = PutAck {
            rows_accepted: accepted,
            rows_durable,
        };
        if rows_durable >= accepted {
            let _ = tokio::time::timeout(idle, tx.send(Ok(counts.result()))).await;
            return;
        }
        let _ = tx.try_send(Ok(counts.result()));
        tokio::select! {
            changed = durable.changed() => {
                if changed.is_err() && *durable.borrow() < accepted {
                    // The pipeline ended (or failed) before: the rest is
                    // not durable; a reconnect learns what is.
                    let counts = PutAck { rows_durable: *durable.borrow(), ..counts };
                    return refuse(tx, stopping_status(counts), idle).await;
                }
            }
            () = tx.closed() => return,
        }
    }
}
