//! DoExchange: a client streams batches of any schema holding the model's
//! features and gets back, in order, one reply per batch with the input
//! columns, the scores and `model_version`. One batch being scored and two
//! replies queued per stream: a slow reader stops the server reading.

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_flight::FlightData;
use arrow_schema::SchemaRef;
use roo_scheduler::error::chain;
use roo_scheduler::BatchScorer;
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
        .await
        .and_then(|(first, path)| Ok((first, shared.exchange_scorer(&path)?)));
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
