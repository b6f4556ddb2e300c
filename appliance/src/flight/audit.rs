//! DoGet of a pipeline's audit log: `{"audit": P, "id": ID}` (every
//! record with that id, newest first) and `{"audit": P, "from": T1, "to":
//! T2}` (the records of that range of event time, either side optional;
//! times as RFC 3339 text or µs since the epoch), read through the
//! scheduler's `audit` module on the blocking pool.

use std::path::PathBuf;

use arrow_array::RecordBatch;
use arrow_flight::FlightData;
use roo_scheduler::audit::{conform, parse_time_us, AuditError, AuditLog, TimeRange};
use roo_scheduler::error::chain;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::sync::OwnedSemaphorePermit;
use tonic::{Response, Status};

use super::streams::{encode, status_to_flight};
use super::{invalid, BoxStream, Shared, REPLY_QUEUE};

pub(super) const AUDIT_EXPECTED: &str =
    "expected {\"audit\": PIPELINE, \"id\": ID} or {\"audit\": PIPELINE, \"from\": T1, \"to\": T2}";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditTicket {
    audit: String,
    id: Option<String>,
    from: Option<Value>,
    to: Option<Value>,
}

enum Wanted {
    Id(String),
    Range(TimeRange),
}

fn time(v: Option<&Value>, side: &str, unset: i64) -> Result<i64, Status> {
    match v {
        None | Some(Value::Null) => Ok(unset),
        Some(Value::Number(n)) => n.as_i64().ok_or_else(|| {
            invalid(format!(
                "audit ticket: {side} {n}: expected µs since the epoch"
            ))
        }),
        Some(Value::String(s)) => {
            parse_time_us(s).map_err(|e| invalid(format!("audit ticket: {side}: {e}")))
        }
        Some(other) => Err(invalid(format!(
            "audit ticket: {side} {other}: expected RFC 3339 text or µs since the epoch"
        ))),
    }
}

fn not_found(e: AuditError) -> Status {
    match e {
        AuditError::NotFound { .. } | AuditError::NoRecords { .. } => Status::not_found(chain(&e)),
        e => Status::internal(chain(&e)),
    }
}

pub(super) fn do_get(
    shared: &Shared,
    ticket: AuditTicket,
    slot: OwnedSemaphorePermit,
) -> Result<Response<BoxStream<FlightData>>, Status> {
    let wanted = match (&ticket.id, &ticket.from, &ticket.to) {
        (Some(id), None, None) => Wanted::Id(id.clone()),
        (None, from, to) => {
            let from_us = time(from.as_ref(), "from", i64::MIN)?;
            let to_us = time(to.as_ref(), "to", i64::MAX)?;
            if from_us >= to_us {
                return Err(invalid("audit ticket: from is not before to"));
            }
            Wanted::Range(TimeRange { from_us, to_us })
        }
        _ => {
            return Err(invalid(format!(
                "audit ticket: an id or a range, not both; {AUDIT_EXPECTED}"
            )))
        }
    };
    let p = shared.pipeline(&ticket.audit)?;
    let dir: PathBuf = p
        .audit_dir()
        .ok_or_else(|| {
            Status::failed_precondition(format!(
                "pipeline {} keeps no audit log (no [pipeline.audit])",
                ticket.audit
            ))
        })?
        .to_path_buf();
    drop(p);
    let (tx, rx) = mpsc::channel(REPLY_QUEUE);
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        let send =
            |b: Result<RecordBatch, Status>| tx.blocking_send(b.map_err(status_to_flight)).is_ok();
        let log = match AuditLog::open(&dir) {
            Ok(l) => l,
            Err(e) => {
                send(Err(Status::internal(chain(&e))));
                return;
            }
        };
        match wanted {
            Wanted::Id(id) => match log.find(&id) {
                Ok(found) => {
                    let schema = found[0].schema();
                    for b in &found {
                        let b = conform(b, &schema).map_err(|e| Status::internal(chain(&e)));
                        if !send(b) {
                            return;
                        }
                    }
                }
                Err(e) => {
                    send(Err(not_found(e)));
                }
            },
            Wanted::Range(range) => {
                let schema = match log.schema(range) {
                    Ok(Some(s)) => s,
                    Ok(None) => {
                        let (from, to) = range.describe();
                        send(Err(not_found(AuditError::NoRecords {
                            dir: dir.display().to_string(),
                            from,
                            to,
                        })));
                        return;
                    }
                    Err(e) => {
                        send(Err(Status::internal(chain(&e))));
                        return;
                    }
                };
                let mut any = false;
                let read = log.read_range(range, None, &mut |b| {
                    any = true;
                    if send(conform(&b, &schema).map_err(|e| Status::internal(chain(&e)))) {
                        Ok(())
                    } else {
                        // The client went away: stop reading.
                        Err(AuditError::Stopped)
                    }
                });
                match read {
                    Err(AuditError::Stopped) => {}
                    Err(e) => {
                        send(Err(Status::internal(chain(&e))));
                    }
                    Ok(_) if !any => {
                        send(Ok(RecordBatch::new_empty(schema)));
                    }
                    Ok(_) => {}
                }
            }
        }
    });
    Ok(Response::new(encode(rx, shared.message_bytes_max)))
}
