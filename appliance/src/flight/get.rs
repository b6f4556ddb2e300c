//! DoGet and the flight descriptions: the files a pipeline's sinks have
//! published and its dead letters (listed and read through the
//! scheduler's output layout), one flight per pipeline, its schemas.

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_flight::{
    FlightData, FlightDescriptor, FlightEndpoint, FlightInfo, SchemaAsIpc, SchemaResult, Ticket,
};
use arrow_ipc::writer::IpcWriteOptions;
use arrow_schema::{Schema, SchemaRef};
use roo_scheduler::error::chain;
use roo_scheduler::sinks::layout;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use super::audit::AUDIT_EXPECTED;
use super::streams::{descriptor_path, encode, status_to_flight};
use super::{invalid, BoxStream, Shared, REPLY_QUEUE};

/// `[P]`: the output schema; `[P, "input"]`: the input schema.
pub(super) async fn get_schema(
    shared: &Shared,
    request: Request<FlightDescriptor>,
) -> Result<Response<SchemaResult>, Status> {
    shared.authorize(&request)?;
    let path = descriptor_path(request.get_ref())?;
    let input = match path.get(1).map(String::as_str) {
        None | Some("output") => false,
        Some("input") => true,
        Some(other) => {
            return Err(invalid(format!(
                "schema {other:?}: expected [PIPELINE], [PIPELINE, \"input\"] or [PIPELINE, \"output\"]"
            )))
        }
    };
    let p = shared.pipeline(&path[0])?;
    let schema = if input {
        p.input_schema().clone()
    } else {
        wire_schema(&p.output_schema())
    };
    let result = SchemaResult::try_from(SchemaAsIpc::new(&schema, &IpcWriteOptions::default()))
        .map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(result))
}

/// What a DoGet ticket names: `{"pipeline": P, "stream": "output" |
/// "dead_letters" | "latest"}` (GetFlightInfo hands these out), or
/// `P/output`; `{"audit": P, …}` is the audit log's (`audit.rs`). `latest`: the rows of the latest window the pipeline's
/// aggregate emitted (a dashboard polls it).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TicketRequest {
    pipeline: String,
    #[serde(default)]
    stream: TicketStream,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum TicketStream {
    #[default]
    Output,
    #[serde(alias = "dead-letters")]
    DeadLetters,
    Latest,
}

const TICKET_EXPECTED: &str =
    "expected {\"pipeline\": P, \"stream\": \"output\" | \"dead_letters\" | \"latest\"} or P/output";

fn parse_ticket(bytes: &[u8]) -> Result<TicketRequest, Status> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| invalid(format!("the ticket is not text; {TICKET_EXPECTED}")))?;
    if text.trim_start().starts_with('{') {
        return serde_json::from_str(text)
            .map_err(|e| invalid(format!("ticket: {e}; {TICKET_EXPECTED}")));
    }
    let (pipeline, stream) = text.split_once('/').unwrap_or((text, "output"));
    let stream = match stream {
        "output" => TicketStream::Output,
        "dead_letters" | "dead-letters" => TicketStream::DeadLetters,
        "latest" => TicketStream::Latest,
        other => {
            return Err(invalid(format!(
                "ticket: stream {other:?}; {TICKET_EXPECTED}"
            )))
        }
    };
    Ok(TicketRequest {
        pipeline: pipeline.to_string(),
        stream,
    })
}

pub(super) async fn do_get(
    shared: &Shared,
    request: Request<Ticket>,
) -> Result<Response<BoxStream<FlightData>>, Status> {
    shared.authorize(&request)?;
    let slot = shared.stream_slot()?;
    let bytes = &request.get_ref().ticket;
    if let Ok(Value::Object(o)) = serde_json::from_slice::<Value>(bytes) {
        if o.contains_key("audit") {
            let ticket = serde_json::from_value(Value::Object(o))
                .map_err(|e| invalid(format!("ticket: {e}; {AUDIT_EXPECTED}")))?;
            return super::audit::do_get(shared, ticket, slot);
        }
    }
    let ticket = parse_ticket(bytes)?;
    let p = shared.pipeline(&ticket.pipeline)?;
    let dead_letters = match ticket.stream {
        TicketStream::Output => false,
        TicketStream::DeadLetters => true,
        TicketStream::Latest => {
            // One batch: the latest window (none yet: empty, with its schema).
            let latest = p
                .latest_window()
                .map_err(|e| Status::failed_precondition(chain(&e)))?;
            let batch =
                latest.unwrap_or_else(|| RecordBatch::new_empty(wire_schema(&p.output_schema())));
            let (tx, rx) = mpsc::channel(1);
            tx.try_send(Ok(batch)).expect("room for one");
            drop(slot);
            return Ok(Response::new(encode(rx, shared.message_bytes_max)));
        }
    };
    let files = if dead_letters {
        p.dead_letter_files().ok_or_else(|| {
            Status::failed_precondition(format!(
                "pipeline {} keeps no dead letters (no [pipeline.dead_letters])",
                ticket.pipeline
            ))
        })?
    } else {
        p.output_files().ok_or_else(|| {
            Status::failed_precondition(format!(
                "pipeline {} has no file sink to read from",
                ticket.pipeline
            ))
        })?
    };
    let schema = if dead_letters {
        layout::dead_letter_schema()
    } else {
        wire_schema(&p.output_schema())
    };
    drop(p);
    let (tx, rx) = mpsc::channel(REPLY_QUEUE);
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        let send = |b: Result<RecordBatch, String>| {
            tx.blocking_send(b.map_err(|e| status_to_flight(Status::internal(e))))
                .is_ok()
        };
        let mut any = false;
        for file in files {
            let mut each = |b| {
                any = true;
                send(Ok(b))
            };
            let sent = if dead_letters {
                layout::read_dead_letters(&file, &mut each)
            } else {
                layout::read_output_file(&file, &schema, &mut each)
            };
            match sent {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => {
                    send(Err(chain(&e)));
                    return;
                }
            }
        }
        if !any {
            // An empty stream still tells the reader its schema.
            send(Ok(RecordBatch::new_empty(schema)));
        }
    });
    Ok(Response::new(encode(rx, shared.message_bytes_max)))
}

/// The schema as a Flight client receives it: the fields (`model_version`
/// a dictionary, resent with each batch), no metadata (it names one model
/// version; the column names each row's).
pub(super) fn wire_schema(schema: &SchemaRef) -> SchemaRef {
    Arc::new(Schema::new(schema.fields().clone()))
}

/// A flight's `app_metadata`.
#[derive(Serialize)]
struct FlightMetadata {
    source: &'static str,
    model_version: Option<String>,
    operators: Vec<String>,
    input_schema: Vec<ColumnInfo>,
}

#[derive(Serialize)]
struct ColumnInfo {
    name: String,
    #[serde(rename = "type")]
    data_type: String,
}

pub(super) fn flight_info(shared: &Shared, name: &str) -> Result<FlightInfo, Status> {
    let p = shared.pipeline(name)?;
    let ticket = |stream: TicketStream| {
        let request = TicketRequest {
            pipeline: name.to_string(),
            stream,
        };
        FlightEndpoint::new().with_ticket(Ticket::new(
            serde_json::to_string(&request).expect("a ticket serialises"),
        ))
    };
    let metadata = FlightMetadata {
        source: match p.source_kind() {
            "push" => "flight",
            other => other,
        },
        model_version: p.model_version(),
        operators: p
            .operators()
            .iter()
            .map(|(kind, name)| format!("{} {name}", kind.name()))
            .collect(),
        input_schema: p
            .input_schema()
            .fields()
            .iter()
            .map(|f| ColumnInfo {
                name: f.name().clone(),
                data_type: f.data_type().to_string(),
            })
            .collect(),
    };
    let mut info = FlightInfo::new()
        .try_with_schema(&wire_schema(&p.output_schema()))
        .map_err(|e| Status::internal(e.to_string()))?
        .with_descriptor(FlightDescriptor::new_path(vec![name.to_string()]))
        .with_app_metadata(serde_json::to_string(&metadata).expect("metadata serialises"));
    if p.output_files().is_some() {
        info = info.with_endpoint(ticket(TicketStream::Output));
    }
    if p.dead_letters_dir().is_some() {
        info = info.with_endpoint(ticket(TicketStream::DeadLetters));
    }
    if p.latest_window().is_ok() {
        info = info.with_endpoint(ticket(TicketStream::Latest));
    }
    Ok(info)
}
