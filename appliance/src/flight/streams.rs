//! The incoming side of DoPut and DoExchange: the descriptor in the first
//! message, then a client's Arrow IPC messages decoded one at a time under
//! `catch_unwind` (a malformed message ends its own stream only), silence
//! bounded by `idle`; and the outgoing side: reply batches encoded to
//! FlightData, cut by the bytes they cover.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::{ArrayRef, RecordBatch};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::{FlightData, FlightDescriptor};
use arrow_schema::{Schema, SchemaRef};
use futures::{StreamExt, TryStreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use super::get::wire_schema;
use super::{invalid, BoxStream};

/// The path a descriptor names: a PATH descriptor's elements, or a CMD
/// descriptor's bytes as one UTF-8 element.
pub(super) fn descriptor_path(d: &FlightDescriptor) -> Result<Vec<String>, Status> {
    if !d.path.is_empty() {
        return Ok(d.path.clone());
    }
    match std::str::from_utf8(&d.cmd) {
        Ok(s) if !s.is_empty() => Ok(vec![s.to_string()]),
        _ => Err(invalid(
            "the descriptor names nothing: expected a path such as [\"cards\"]",
        )),
    }
}

/// The first message of a DoPut or DoExchange and the path its descriptor names.
pub(super) async fn opening(
    input: &mut Streaming<FlightData>,
    idle: Duration,
    call: &str,
    what: &str,
) -> Result<(FlightData, Vec<String>), Status> {
    let first = match next_message(input, idle).await {
        Next::Message(m) => m,
        Next::Idle(status) => return Err(status),
        Next::End | Next::Gone => {
            return Err(invalid(format!(
                "an empty {call}: the first message must carry a descriptor naming {what}"
            )))
        }
    };
    let path = descriptor_path(first.flight_descriptor.as_ref().ok_or_else(|| {
        invalid(format!(
            "the first {call} message has no descriptor; expected one naming {what}"
        ))
    })?)?;
    Ok((first, path))
}

pub(super) enum Next {
    Message(FlightData),
    /// The client finished sending.
    End,
    /// The client went away (reset, transport error).
    Gone,
    /// Nothing for `idle`: the stream is closed with this status.
    Idle(Status),
}

pub(super) async fn next_message(input: &mut Streaming<FlightData>, idle: Duration) -> Next {
    match tokio::time::timeout(idle, input.message()).await {
        Ok(Ok(Some(m))) => Next::Message(m),
        Ok(Ok(None)) => Next::End,
        Ok(Err(_)) => Next::Gone,
        Err(_) => Next::Idle(Status::deadline_exceeded(format!(
            "no message for {} s (flight.idle_secs); the stream is closed",
            idle.as_secs()
        ))),
    }
}

/// A client's batches on a DoPut or DoExchange: the first message already
/// read, the rest decoded one at a time, silence bounded by `idle`.
pub(super) struct Incoming {
    input: Streaming<FlightData>,
    pending: Option<FlightData>,
    ipc: IpcIn,
    idle: Duration,
}

/// Why a stream of batches stopped early.
pub(super) enum Stopped {
    /// The client went away: nothing to tell it.
    Gone,
    /// End the call with this status.
    Refused(Status),
}

impl Incoming {
    pub(super) fn new(input: Streaming<FlightData>, first: FlightData, idle: Duration) -> Self {
        Self {
            input,
            pending: Some(first),
            ipc: IpcIn::default(),
            idle,
        }
    }

    /// The next batch, `None` once the client has finished; `on_schema`
    /// checks each schema message (an error refuses the stream).
    pub(super) async fn next(
        &mut self,
        mut on_schema: impl FnMut(&SchemaRef) -> Result<(), String>,
    ) -> Result<Option<RecordBatch>, Stopped> {
        loop {
            let message = match self.pending.take() {
                Some(m) => m,
                None => match next_message(&mut self.input, self.idle).await {
                    Next::Message(m) => m,
                    Next::End => return Ok(None),
                    Next::Gone => return Err(Stopped::Gone),
                    Next::Idle(status) => return Err(Stopped::Refused(status)),
                },
            };
            match self.ipc.decode(&message) {
                Ok(Decoded::Batch(b)) => return Ok(Some(b)),
                Ok(Decoded::Schema(schema)) => {
                    on_schema(&schema).map_err(|e| Stopped::Refused(invalid(e)))?
                }
                Ok(Decoded::Nothing) => {}
                Err(e) => return Err(Stopped::Refused(invalid(e))),
            }
        }
    }
}

/// Sends a stream's final error, waiting at most `idle` for room (a client
/// that reads nothing does not hold the task).
pub(super) async fn refuse<T, E>(tx: &mpsc::Sender<Result<T, E>>, error: E, idle: Duration) {
    let _ = tokio::time::timeout(idle, tx.send(Err(error))).await;
}

/// Arrow IPC messages from a client, decoded one at a time under
/// `catch_unwind`: a malformed message is an error for its stream only.
#[derive(Default)]
pub(super) struct IpcIn {
    schema: Option<SchemaRef>,
    dictionaries: HashMap<i64, ArrayRef>,
    messages: u64,
}

pub(super) enum Decoded {
    Schema(SchemaRef),
    Batch(RecordBatch),
    /// A dictionary, or a message with no IPC header (metadata only).
    Nothing,
}

impl IpcIn {
    fn decode(&mut self, data: &FlightData) -> Result<Decoded, String> {
        self.messages += 1;
        let at = self.messages;
        if data.data_header.is_empty() {
            // pyarrow's DoExchange starts with a descriptor-only message.
            return Ok(Decoded::Nothing);
        }
        let result = roo_ingest::guard::catch_quietly(|| self.decode_inner(data));
        match result {
            Ok(r) => r.map_err(|e| format!("message {at}: {e}")),
            Err(_) => Err(format!(
                "message {at}: malformed Arrow IPC (the decoder gave up)"
            )),
        }
    }

    fn decode_inner(&mut self, data: &FlightData) -> Result<Decoded, String> {
        let message = arrow_ipc::root_as_message(&data.data_header)
            .map_err(|e| format!("not an Arrow IPC message header: {e}"))?;
        match message.header_type() {
            arrow_ipc::MessageHeader::Schema => {
                let schema = Schema::try_from(data).map_err(|e| format!("bad schema: {e}"))?;
                let schema = Arc::new(schema);
                self.schema = Some(schema.clone());
                self.dictionaries.clear();
                Ok(Decoded::Schema(schema))
            }
            arrow_ipc::MessageHeader::DictionaryBatch => {
                let schema = self.schema.clone().ok_or("a dictionary before the schema")?;
                let batch = message
                    .header_as_dictionary_batch()
                    .ok_or("a dictionary message without its header")?;
                arrow_ipc::reader::read_dictionary(
                    &arrow_buffer::Buffer::from(data.data_body.as_ref()),
                    batch,
                    &schema,
                    &mut self.dictionaries,
                    &message.version(),
                )
                .map_err(|e| format!("bad dictionary batch: {e}"))?;
                Ok(Decoded::Nothing)
            }
            arrow_ipc::MessageHeader::RecordBatch => {
                let schema = self
                    .schema
                    .clone()
                    .ok_or("a record batch before the schema; send the schema first")?;
                let batch =
                    arrow_flight::utils::flight_data_to_arrow_batch(data, schema, &self.dictionaries)
                        .map_err(|e| format!("bad record batch: {e}"))?;
                Ok(Decoded::Batch(batch))
            }
            other => Err(format!(
                "an IPC message of type {other:?}; expected a schema, a dictionary or a record batch"
            )),
        }
    }
}

/// Reply batches as FlightData, dictionaries resent, one schema for the
/// stream.
pub(super) fn encode(
    rx: mpsc::Receiver<Result<RecordBatch, FlightError>>,
    message_bytes_max: usize,
) -> BoxStream<FlightData> {
    // A reply batch stays whole up to a quarter of the message limit,
    // measured by the bytes it covers: arrow's own split counts whole
    // shared buffers (every column of a decoded message shares one) and
    // would cut batches that are small.
    let limit = (message_bytes_max / 4).max(1 << 20);
    let batches = ReceiverStream::new(rx).flat_map(move |r| {
        futures::stream::iter(match r {
            // One schema for the stream: the metadata names the model
            // version, which may change between batches (the column says it).
            Ok(b) => {
                match RecordBatch::try_new(wire_schema(b.schema_ref()), b.columns().to_vec()) {
                    Ok(b) => split_by_size(b, limit).into_iter().map(Ok).collect(),
                    Err(e) => vec![Err(FlightError::Arrow(e))],
                }
            }
            Err(e) => vec![Err(e)],
        })
    });
    let encoded = FlightDataEncoderBuilder::new()
        .with_max_flight_data_size(usize::MAX)
        .with_dictionary_handling(arrow_flight::encode::DictionaryHandling::Resend)
        .build(batches)
        .map_err(Status::from);
    Box::pin(encoded)
}

/// The bytes `batch`'s rows cover (not the whole buffers its slices share).
pub(super) fn batch_bytes(batch: &RecordBatch) -> usize {
    batch
        .columns()
        .iter()
        .map(|c| c.to_data().get_slice_memory_size().unwrap_or(0))
        .sum()
}

/// `batch` in row slices of at most about `limit` bytes each.
pub(super) fn split_by_size(batch: RecordBatch, limit: usize) -> Vec<RecordBatch> {
    let bytes = batch_bytes(&batch);
    let rows = batch.num_rows();
    if bytes <= limit || rows <= 1 {
        return vec![batch];
    }
    let per = rows.div_ceil(bytes.div_ceil(limit)).max(1);
    (0..rows)
        .step_by(per)
        .map(|at| batch.slice(at, per.min(rows - at)))
        .collect()
}

pub(super) fn status_to_flight(s: Status) -> FlightError {
    FlightError::Tonic(Box::new(s))
}
