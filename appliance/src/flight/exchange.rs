//! DoExchange: a client streams batches of any schema holding the model's
//! features and gets back, in order, one reply per batch with the input
//! columns, the scores and `model_version`. One batch being scored and two
//! replies queued per stream: a slow reader stops the server reading.
//!
//! With the descriptor `["online", PIPELINE]` each batch is an online
//! request instead ([`roo_scheduler::online`]): it runs the pipeline's own
//! chain (features update, tables join, the audit log and the sinks record
//! it), coalesced with the pipeline's other requests (V2 REST and gRPC
//! included), and its reply is every column the chain left.

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_flight::FlightData;
use arrow_schema::SchemaRef;
use roo_scheduler::error::chain;
use roo_scheduler::online::OnlineError;
use roo_scheduler::{check_push_schema, BatchScorer};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use super::streams::{encode, opening, refuse, status_to_flight, Incoming, Stopped};
use super::{invalid, BoxStream, Shared, REPLY_QUEUE};

/// Batches over this many rows are scored on the blocking pool (they use
/// the rayon pool across cores); smaller ones inline, which costs less
/// than a thread hop.
const INLINE_SCORE_ROWS: usize = 4096;

async fn score(
    mut scorer: BatchScorer,
    batch: RecordBatch,
) -> (BatchScorer, Result<RecordBatch, String>) {
    if batch.num_rows() <= INLINE_SCORE_ROWS {
        let r = scorer.score(&batch).map_err(|e| chain(&e));
        return (scorer, r);
    }
    match tokio::task::spawn_blocking(move || {
        let r = scorer.score(&batch).map_err(|e| chain(&e));
        (scorer, r)
    })
    .await
    {
        Ok(done) => done,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

pub(super) async fn do_exchange(
    shared: &Arc<Shared>,
    request: Request<Streaming<FlightData>>,
) -> Result<Response<BoxStream<FlightData>>, Status> {
    shared.authorize(&request)?;
    let slot = shared.stream_slot()?;
    let mut input = request.into_inner();
    let message_bytes_max = shared.message_bytes_max;
    let shared = shared.clone();
    let (tx, rx) = mpsc::channel(REPLY_QUEUE);
    // The reply starts now: a client may send nothing until it has it.
    tokio::spawn(async move {
        let _slot = slot;
        let opened = opening(
            &mut input,
            shared.idle,
            "DoExchange",
            "a pipeline or a model",
        )
        .await;
        // ["online", PIPELINE]: through the pipeline's chain.
        let opened = match opened {
            Ok((first, path)) if path.first().is_some_and(|k| k == "online") => {
                return online(&shared, first, path, input, tx).await;
            }
            other => other,
        };
        let opened = opened.and_then(|(first, path)| Ok((first, shared.exchange_scorer(&path)?)));
        let (first, (target, scorer)) = match opened {
            Ok(o) => o,
            Err(status) => return refuse(&tx, status_to_flight(status), shared.idle).await,
        };
        // Errors name what was being scored.
        let fail = |s: Status| {
            if s.code() == tonic::Code::InvalidArgument {
                invalid(format!("{target}: {}", s.message()))
            } else {
                s
            }
        };
        let mut scorer = scorer;
        let mut incoming = Incoming::new(input, first, shared.idle);
        let mut sent = false;
        let mut output_schema = None;
        let mut held = std::collections::VecDeque::new();
        loop {
            // Bind at the schema: one without the features is refused
            // before any data is sent.
            let bound = |s: &SchemaRef, scorer: &mut BatchScorer, out: &mut Option<SchemaRef>| {
                scorer
                    .bind(s)
                    .map(|b| *out = Some(b.output_schema().clone()))
                    .map_err(|e| chain(&e))
            };
            let batch = match incoming
                .next(|s| bound(s, &mut scorer, &mut output_schema))
                .await
            {
                Ok(Some(b)) => b,
                Ok(None) => break,
                Err(Stopped::Gone) => return,
                Err(Stopped::Refused(status)) => {
                    return refuse(&tx, status_to_flight(fail(status)), shared.idle).await
                }
            };
            // Input and reply; held until the reply has left the queue
            // (at most REPLY_QUEUE replies wait, one is being encoded).
            held.push_back(shared.reserve(&batch, 2).await);
            let (s, scored) = score(scorer, batch).await;
            scorer = s;
            match scored {
                Ok(b) => {
                    sent = true;
                    if tx.send(Ok(b)).await.is_err() {
                        return; // the client stopped reading and left
                    }
                    while held.len() > REPLY_QUEUE + 1 {
                        held.pop_front();
                    }
                }
                Err(e) => {
                    return refuse(&tx, status_to_flight(fail(invalid(e))), shared.idle).await
                }
            }
        }
        if let (false, Some(schema)) = (sent, output_schema) {
            let _ = tx.send(Ok(RecordBatch::new_empty(schema))).await;
        }
    });
    Ok(Response::new(encode(rx, message_bytes_max)))
}

/// An exchange of online requests: each batch submitted to the pipeline's
/// requests and answered in order.
async fn online(
    shared: &Arc<Shared>,
    first: FlightData,
    path: Vec<String>,
    input: Streaming<FlightData>,
    tx: mpsc::Sender<Result<RecordBatch, arrow_flight::error::FlightError>>,
) {
    let pipeline = match path.as_slice() {
        [_, name] => shared.pipeline(name),
        _ => Err(invalid(format!(
            "descriptor path {path:?}: expected [\"online\", PIPELINE]"
        ))),
    };
    let requests = pipeline.and_then(|p| {
        p.requests().map(|r| (p, r)).map_err(|e| {
            Status::failed_precondition(format!(
                "{e}: the pipeline takes no online requests (configure [online])"
            ))
        })
    });
    let (pipeline, requests) = match requests {
        Ok(r) => r,
        Err(status) => return refuse(&tx, status_to_flight(status), shared.idle).await,
    };
    let mut incoming = Incoming::new(input, first, shared.idle);
    let mut sent = false;
    loop {
        let expected = requests.schema().clone();
        let batch = match incoming
            .next(|s| check_push_schema(&expected, s).map_err(|e| e.to_string()))
            .await
        {
            Ok(Some(b)) => b,
            Ok(None) => break,
            Err(Stopped::Gone) => return,
            Err(Stopped::Refused(status)) => {
                return refuse(&tx, status_to_flight(status), shared.idle).await
            }
        };
        if batch.num_rows() == 0 {
            continue;
        }
        let reply = match requests.submit(batch) {
            Ok(ticket) => ticket.reply().await,
            Err(e) => Err(e),
        };
        match reply {
            Ok(r) => {
                sent = true;
                if tx.send(Ok(r.rows())).await.is_err() {
                    return; // the client stopped reading and left
                }
            }
            Err(e) => {
                let status = match e {
                    OnlineError::Busy { .. } => Status::resource_exhausted(e.to_string()),
                    OnlineError::Stopped { .. } => Status::unavailable(e.to_string()),
                    _ => invalid(format!("pipeline {}: {e}", pipeline.name())),
                };
                return refuse(&tx, status_to_flight(status), shared.idle).await;
            }
        }
    }
    if !sent {
        let _ = tx
            .send(Ok(RecordBatch::new_empty(pipeline.output_schema())))
            .await;
    }
}
