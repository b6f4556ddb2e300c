//! DoPut into a pipeline whose source takes pushes: batches enter its
//! queue (blocking while full: backpressure on the client) and go to its
//! sinks; each `PutResult` says how many rows of the stream were accepted.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::{FlightData, PutResult};
use bytes::Bytes;
use roo_scheduler::{check_push_schema, PipelineError, PushError};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::streams::{opening, refuse, Incoming, Stopped};
use super::tables::{table_path, upsert};
use super::{invalid, BoxStream, Shared, REPLY_QUEUE};

/// A `PutResult`'s `app_metadata`: the rows of this stream accepted so
/// far (queued in the pipeline), cumulative.
#[derive(Serialize)]
struct PutAck {
    rows_accepted: u64,
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
/// rows of the stream accepted (exactly those reach the sinks). The count
/// also travels as the status's details, the same JSON as a `PutResult`'s,
/// for a client that resumes from it without reading the message. Arrow's
/// C++ client (pyarrow) hands the details over as `FlightError.extra_info`
/// only beside its own status trailers, so those are sent too (Arrow's
/// `IOError`, the code its clients give an UNAVAILABLE).
fn stopping_status(accepted: u64) -> Status {
    let message = PushError::Stopping { accepted }.to_string();
    let mut trailers = tonic::metadata::MetadataMap::new();
    trailers.insert(
        "x-arrow-status",
        tonic::metadata::MetadataValue::from_static("5"),
    );
    trailers.insert_bin(
        "x-arrow-status-message-bin",
        tonic::metadata::MetadataValue::from_bytes(message.as_bytes()),
    );
    Status::with_details_and_metadata(
        tonic::Code::Unavailable,
        message,
        Bytes::from(
            serde_json::to_vec(&PutAck {
                rows_accepted: accepted,
            })
            .expect("a PutAck serialises"),
        ),
        trailers,
    )
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
        let opened = Ok::<_, Status>(opened).and_then(|(first, path)| {
            let n = shared.next_stream.fetch_add(1, Ordering::Relaxed);
            let source = format!("flight:{who}@{peer}#{n}");
            let pusher = shared
                .pipeline(&path[0])?
                .pusher(&source)
                .map_err(|e| match e {
                    // The config's words for it are the appliance's to say.
                    PipelineError::NotPush { .. } => Status::failed_precondition(format!(
                        "{e}; a pipeline takes DoPut when its source is kind = \"flight\""
                    )),
                    e => Status::failed_precondition(e.to_string()),
                })?;
            Ok((first, pusher))
        });
        let (first, pusher) = match opened {
            Ok(o) => o,
            Err(status) => return refuse(&tx, status, shared.idle).await,
        };
        let mut pusher = Some(pusher);
        let expected = pusher.as_ref().expect("held").schema().clone();
        let mut incoming = Incoming::new(input, first, shared.idle);
        let mut accepted = 0u64;
        let ack = |rows: u64| PutResult {
            app_metadata: Bytes::from(
                serde_json::to_vec(&PutAck {
                    rows_accepted: rows,
                })
                .expect("a PutAck serialises"),
            ),
        };
        let stopping = stopped(shared.stopping.clone());
        tokio::pin!(stopping);
        loop {
            let next = tokio::select! {
                biased;
                // The server is stopping: a stream waiting on its client
                // ends now, with the count, rather than at the grace's end.
                () = &mut stopping => {
                    return refuse(&tx, stopping_status(accepted), shared.idle).await;
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
                    let _ = tx.try_send(Ok(ack(accepted)));
                }
                Err(PushError::Schema(e)) => {
                    return refuse(&tx, invalid(e.to_string()), shared.idle).await
                }
                Err(PushError::Stopping { accepted }) => {
                    return refuse(&tx, stopping_status(accepted), shared.idle).await;
                }
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), tx.send(Ok(ack(accepted)))).await;
    });
    Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
}
