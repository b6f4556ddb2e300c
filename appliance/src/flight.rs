//! The Arrow Flight endpoint of `roo serve` (arrow-flight + tonic).
//!
//! - **DoExchange** on a descriptor path naming a pipeline (its current
//!   model) or a stored model: the client streams batches, the server
//!   streams back, in order, the input columns, the scores and
//!   `model_version`, one reply per batch (cut only past a quarter of the
//!   message limit). One batch in scoring and two in the reply queue per
//!   stream: a slow reader stops the server reading (HTTP/2 flow control).
//! - **DoPut** into a pipeline whose source is `kind = "flight"`: batches
//!   enter its queue (blocking when full) and go to its sinks; `PutResult`s
//!   carry `{"rows_accepted": N}`, cumulative.
//! - **DoGet** by ticket `{"pipeline": P, "stream": "output" | "dead_letters"}`:
//!   the files the pipeline's sinks have published.
//! - **ListFlights / GetFlightInfo / GetSchema**: one flight per pipeline; its
//!   schema is the output's, the input's is in `app_metadata` (and GetSchema
//!   on path `[P, "input"]`).
//! - **DoAction**: `list-models`, `upload-model`, `activate-model`,
//!   `pipeline-stats`, `reload`; replies are JSON.
//! - **Auth**: bearer tokens from the config; Handshake turns basic auth
//!   (token name, secret) into the bearer header. TLS when configured.
//!
//! Every client error is a status naming what was wrong (INVALID_ARGUMENT
//! for a bad batch or schema, NOT_FOUND, UNAUTHENTICATED, …); input is
//! decoded under `catch_unwind`, so a hostile stream ends only its own call.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{Context, Result};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaAsIpc, SchemaResult, Ticket,
};
use arrow_ipc::writer::IpcWriteOptions;
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use base64::Engine as _;
use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use roo_scheduler::{check_push_schema, BatchScorer, ModelStore, Pipeline, PushError, SinkSpec};
use tokio::sync::{mpsc, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// A bearer token clients present: `authorization: Bearer <secret>`.
#[derive(Clone)]
pub struct Token {
    pub name: String,
    pub secret: String,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Token({}, <secret>)", self.name)
    }
}

/// The `[flight]` section, resolved.
#[derive(Clone, Debug)]
pub struct FlightSettings {
    pub listen: SocketAddr,
    /// None: every call is taken without credentials.
    pub tokens: Vec<Token>,
    /// PEM certificate chain and key: TLS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Where uploaded models are kept; none: upload-model is refused.
    pub model_dir: Option<PathBuf>,
    pub models_max: usize,
    /// The largest gRPC message taken or sent.
    pub message_bytes_max: usize,
    /// DoExchange, DoPut and DoGet streams open at once.
    pub streams_max: usize,
    /// A DoExchange or DoPut whose client sends nothing for this long is
    /// closed (DEADLINE_EXCEEDED), freeing its stream slot.
    pub idle: Duration,
    /// Batches held by every DoExchange and DoPut stream together (inputs
    /// being scored or pushed, replies queued); past it, streams wait
    /// before reading more (backpressure on their clients).
    pub memory_bytes: usize,
}

/// Replies queued per stream: with one batch being scored and one being
/// read, what a stream holds at most.
const REPLY_QUEUE: usize = 2;

struct Shared {
    pipelines: Arc<Mutex<Vec<Pipeline>>>,
    pool: Arc<rayon::ThreadPool>,
    store: Option<ModelStore>,
    tokens: Vec<Token>,
    streams: Arc<Semaphore>,
    streams_max: usize,
    next_stream: AtomicU64,
    message_bytes_max: usize,
    idle: Duration,
    /// `memory_bytes` in KiB permits.
    memory: Arc<Semaphore>,
    memory_kib: usize,
}

/// The running endpoint: its own tokio runtime, stopped by [`FlightServer::stop`].
pub struct FlightServer {
    runtime: tokio::runtime::Runtime,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<Result<(), tonic::transport::Error>>>,
}

impl FlightServer {
    pub fn start(
        settings: FlightSettings,
        pipelines: Arc<Mutex<Vec<Pipeline>>>,
        pool: Arc<rayon::ThreadPool>,
    ) -> Result<Self> {
        let store = match &settings.model_dir {
            Some(dir) => Some(
                ModelStore::open(dir, settings.models_max, roo_scheduler::Device::Auto)
                    .map_err(anyhow::Error::msg)?,
            ),
            None => None,
        };
        let listener = std::net::TcpListener::bind(settings.listen)
            .with_context(|| format!("flight listen address {}", settings.listen))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .thread_name("roo-flight")
            .enable_all()
            .build()
            .context("starting the Flight runtime")?;
        let shared = Arc::new(Shared {
            pipelines,
            pool,
            store,
            tokens: settings.tokens.clone(),
            streams: Arc::new(Semaphore::new(settings.streams_max)),
            streams_max: settings.streams_max,
            next_stream: AtomicU64::new(1),
            message_bytes_max: settings.message_bytes_max,
            idle: settings.idle,
            memory: Arc::new(Semaphore::new((settings.memory_bytes >> 10).max(1))),
            memory_kib: (settings.memory_bytes >> 10).max(1),
        });
        let service = FlightServiceServer::new(RooFlight { shared })
            .max_decoding_message_size(settings.message_bytes_max)
            .max_encoding_message_size(settings.message_bytes_max);
        let mut builder = tonic::transport::Server::builder();
        if let Some((cert, key)) = &settings.tls {
            let read = |p: &Path| {
                std::fs::read(p).with_context(|| format!("flight TLS: reading {}", p.display()))
            };
            let identity = tonic::transport::Identity::from_pem(read(cert)?, read(key)?);
            builder = builder
                .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
                .context("flight TLS: the certificate or key is not usable")?;
        }
        let (shutdown, on_shutdown) = tokio::sync::oneshot::channel::<()>();
        let served = runtime.block_on(async {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            // Small replies go out at once (no Nagle wait for an ACK).
            let incoming = tonic::transport::server::TcpIncoming::from(listener)
                .with_nodelay(Some(true))
                .with_keepalive(Some(Duration::from_secs(60)));
            let router = builder.add_service(service);
            anyhow::Ok(tokio::spawn(router.serve_with_incoming_shutdown(
                incoming,
                async {
                    let _ = on_shutdown.await;
                },
            )))
        })?;
        let scheme = if settings.tls.is_some() {
            "grpc+tls"
        } else {
            "grpc"
        };
        tracing::info!("Arrow Flight on {scheme}://{addr}");
        if settings.tokens.is_empty() {
            tracing::warn!(
                "the Flight endpoint takes calls without credentials (no [[flight.token]])"
            );
        }
        Ok(Self {
            runtime,
            shutdown: Some(shutdown),
            served: Some(served),
        })
    }

    /// Stops taking calls, lets open ones finish for up to `grace`, then
    /// ends the rest (their clients see the stream cut).
    pub fn stop(mut self, grace: Duration) {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
        if let Some(served) = self.served.take() {
            let _ = self
                .runtime
                .block_on(async { tokio::time::timeout(grace, served).await });
        }
        self.runtime.shutdown_timeout(Duration::from_secs(1));
    }
}

struct RooFlight {
    shared: Arc<Shared>,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

fn invalid(message: impl Into<String>) -> Status {
    Status::invalid_argument(message.into())
}

/// `a == b` in time that depends on the length only.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

impl Shared {
    /// The token a call presents, checked; `anonymous` when none are configured.
    fn authorize<T>(&self, request: &Request<T>) -> Result<String, Status> {
        if self.tokens.is_empty() {
            return Ok("anonymous".into());
        }
        let header = request
            .metadata()
            .get("authorization")
            .ok_or_else(|| {
                Status::unauthenticated(
                    "no credentials: send the header 'authorization: Bearer <token>' (pyarrow: authenticate_basic_token first)",
                )
            })?
            .to_str()
            .map_err(|_| Status::unauthenticated("the authorization header is not text"))?;
        let secret = header
            .strip_prefix("Bearer ")
            .ok_or_else(|| Status::unauthenticated("expected 'authorization: Bearer <token>'"))?;
        self.token_by_secret(secret.trim().as_bytes())
            .ok_or_else(|| Status::unauthenticated("the bearer token is not one this server knows"))
    }

    fn token_by_secret(&self, secret: &[u8]) -> Option<String> {
        let mut found = None;
        for t in &self.tokens {
            if same_secret(t.secret.as_bytes(), secret) {
                found = Some(t.name.clone());
            }
        }
        found
    }

    /// A stream slot, or RESOURCE_EXHAUSTED: streams are bounded.
    fn stream_slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit, Status> {
        self.streams.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "{} streams are open, the most this server takes (flight.streams_max); retry later",
                self.streams_max
            ))
        })
    }

    fn names(&self) -> Vec<String> {
        self.pipelines
            .lock()
            .expect("not poisoned")
            .iter()
            .map(|p| p.name().to_string())
            .collect()
    }

    /// Reserves the memory a batch holds while in this server (its input
    /// and, for an exchange, its reply: `factor` times its bytes); waits
    /// while the budget is spent.
    async fn reserve(
        &self,
        batch: &RecordBatch,
        factor: usize,
    ) -> tokio::sync::OwnedSemaphorePermit {
        let kib = ((batch_bytes(batch) * factor) >> 10).clamp(1, self.memory_kib);
        self.memory
            .clone()
            .acquire_many_owned(kib as u32)
            .await
            .expect("the memory semaphore is never closed")
    }

    fn pipeline_names(&self) -> String {
        let names = self.names();
        if names.is_empty() {
            "none (the server is stopping)".into()
        } else {
            names.join(", ")
        }
    }

    fn with_pipeline<R>(&self, name: &str, f: impl FnOnce(&Pipeline) -> R) -> Result<R, Status> {
        let pipelines = self.pipelines.lock().expect("not poisoned");
        match pipelines.iter().find(|p| p.name() == name) {
            Some(p) => Ok(f(p)),
            None => {
                drop(pipelines);
                Err(Status::not_found(format!(
                    "no pipeline named {name:?}; pipelines: {}",
                    self.pipeline_names()
                )))
            }
        }
    }

    /// The scorer a DoExchange descriptor names: a pipeline (path `[P]`),
    /// or a stored model (path `[M]` or `["models", M]`, by version, hex
    /// prefix or upload name).
    fn exchange_scorer(&self, path: &[String]) -> Result<(String, BatchScorer), Status> {
        let (kind, key) = match path {
            [key] => (None, key.as_str()),
            [kind, key] if kind == "models" || kind == "pipelines" => {
                (Some(kind.as_str()), key.as_str())
            }
            _ => {
                return Err(invalid(format!(
                    "descriptor path {path:?}: expected [PIPELINE], [\"pipelines\", PIPELINE] or [\"models\", VERSION]"
                )))
            }
        };
        if kind != Some("models") {
            let pipelines = self.pipelines.lock().expect("not poisoned");
            if let Some(p) = pipelines.iter().find(|p| p.name() == key) {
                return Ok((format!("pipeline {key}"), p.scorer()));
            }
        }
        if kind != Some("pipelines") {
            if let Some(m) = self.store.as_ref().and_then(|s| s.find(key)) {
                let name = format!("model {}", m.compiled.version);
                return Ok((
                    name,
                    BatchScorer::of_model(m.compiled.clone(), self.pool.clone()),
                ));
            }
        }
        Err(Status::not_found(format!(
            "{key:?} names no pipeline and no stored model; pipelines: {}",
            self.pipeline_names()
        )))
    }
}

/// The path a descriptor names: a PATH descriptor's elements, or a CMD
/// descriptor's bytes as one UTF-8 element.
fn descriptor_path(d: &FlightDescriptor) -> Result<Vec<String>, Status> {
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
async fn opening(
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

enum Next {
    Message(FlightData),
    /// The client finished sending.
    End,
    /// The client went away (reset, transport error).
    Gone,
    /// Nothing for `idle`: the stream is closed with this status.
    Idle(Status),
}

async fn next_message(input: &mut Streaming<FlightData>, idle: Duration) -> Next {
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
struct Incoming {
    input: Streaming<FlightData>,
    pending: Option<FlightData>,
    ipc: IpcIn,
    idle: Duration,
}

/// Why a stream of batches stopped early.
enum Stopped {
    /// The client went away: nothing to tell it.
    Gone,
    /// End the call with this status.
    Refused(Status),
}

impl Incoming {
    fn new(input: Streaming<FlightData>, first: FlightData, idle: Duration) -> Self {
        Self {
            input,
            pending: Some(first),
            ipc: IpcIn::default(),
            idle,
        }
    }

    /// The next batch, `None` once the client has finished; `on_schema`
    /// checks each schema message (an error refuses the stream).
    async fn next(
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
async fn refuse<T, E>(tx: &mpsc::Sender<Result<T, E>>, error: E, idle: Duration) {
    let _ = tokio::time::timeout(idle, tx.send(Err(error))).await;
}

/// Arrow IPC messages from a client, decoded one at a time under
/// `catch_unwind`: a malformed message is an error for its stream only.
#[derive(Default)]
struct IpcIn {
    schema: Option<SchemaRef>,
    dictionaries: HashMap<i64, ArrayRef>,
    messages: u64,
}

enum Decoded {
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
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.decode_inner(data)));
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

/// Batches over this many rows are scored on the blocking pool (they use
/// the rayon pool across cores); smaller ones inline, which costs less
/// than a thread hop.
const INLINE_SCORE_ROWS: usize = 4096;

async fn score(
    mut scorer: BatchScorer,
    batch: RecordBatch,
) -> (BatchScorer, Result<RecordBatch, String>) {
    if batch.num_rows() <= INLINE_SCORE_ROWS {
        let r = scorer.score(&batch);
        return (scorer, r);
    }
    match tokio::task::spawn_blocking(move || {
        let r = scorer.score(&batch);
        (scorer, r)
    })
    .await
    {
        Ok(done) => done,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

fn encode(
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
fn batch_bytes(batch: &RecordBatch) -> usize {
    batch
        .columns()
        .iter()
        .map(|c| c.to_data().get_slice_memory_size().unwrap_or(0))
        .sum()
}

/// `batch` in row slices of at most about `limit` bytes each.
fn split_by_size(batch: RecordBatch, limit: usize) -> Vec<RecordBatch> {
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

fn status_to_flight(s: Status) -> FlightError {
    FlightError::Tonic(Box::new(s))
}

fn json_result(value: serde_json::Value) -> BoxStream<arrow_flight::Result> {
    let body = Bytes::from(serde_json::to_vec_pretty(&value).expect("JSON values serialise"));
    Box::pin(futures::stream::iter([Ok(arrow_flight::Result { body })]))
}

#[tonic::async_trait]
impl FlightService for RooFlight {
    type HandshakeStream = BoxStream<HandshakeResponse>;
    type ListFlightsStream = BoxStream<FlightInfo>;
    type DoGetStream = BoxStream<FlightData>;
    type DoPutStream = BoxStream<PutResult>;
    type DoExchangeStream = BoxStream<FlightData>;
    type DoActionStream = BoxStream<arrow_flight::Result>;
    type ListActionsStream = BoxStream<ActionType>;

    /// Basic auth (token name, secret) or a bearer header or a payload
    /// holding the secret; the reply carries `authorization: Bearer …`.
    async fn handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        let shared = &self.shared;
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|h| h.to_str().ok())
            .map(str::to_string);
        let mut stream = request.into_inner();
        let payload = match tokio::time::timeout(Duration::from_secs(5), stream.message()).await {
            Ok(Ok(Some(m))) => m.payload,
            _ => Bytes::new(),
        };
        let mut secret = None;
        if shared.tokens.is_empty() {
            secret = Some(String::new());
        } else if let Some(basic) = header.as_deref().and_then(|h| h.strip_prefix("Basic ")) {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(basic.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .unwrap_or_default();
            if let Some((name, pass)) = decoded.split_once(':') {
                secret = shared
                    .tokens
                    .iter()
                    .find(|t| t.name == name && same_secret(t.secret.as_bytes(), pass.as_bytes()))
                    .map(|t| t.secret.clone());
            }
        } else if let Some(bearer) = header.as_deref().and_then(|h| h.strip_prefix("Bearer ")) {
            if shared.token_by_secret(bearer.trim().as_bytes()).is_some() {
                secret = Some(bearer.trim().to_string());
            }
        } else if !payload.is_empty() && shared.token_by_secret(&payload).is_some() {
            secret = String::from_utf8(payload.to_vec()).ok();
        }
        let Some(secret) = secret else {
            return Err(Status::unauthenticated(
                "handshake refused: expected basic auth with a token's name and secret, or a known bearer token",
            ));
        };
        let reply = HandshakeResponse {
            protocol_version: 0,
            payload: Bytes::from(secret.clone().into_bytes()),
        };
        let mut response: Response<Self::HandshakeStream> =
            Response::new(Box::pin(futures::stream::iter([Ok(reply)])));
        if !secret.is_empty() {
            let value = format!("Bearer {secret}")
                .parse()
                .map_err(|_| Status::internal("the token is not a valid header value"))?;
            response.metadata_mut().insert("authorization", value);
        }
        Ok(response)
    }

    async fn list_flights(
        &self,
        request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        self.shared.authorize(&request)?;
        let mut infos = Vec::new();
        for name in self.shared.names() {
            if let Ok(info) = self.flight_info(&name) {
                infos.push(Ok(info));
            }
        }
        Ok(Response::new(Box::pin(futures::stream::iter(infos))))
    }

    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.shared.authorize(&request)?;
        let path = descriptor_path(request.get_ref())?;
        Ok(Response::new(self.flight_info(&path[0])?))
    }

    async fn poll_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        self.shared.authorize(&request)?;
        let path = descriptor_path(request.get_ref())?;
        let info = self.flight_info(&path[0])?;
        Ok(Response::new(PollInfo {
            info: Some(info),
            flight_descriptor: None,
            progress: Some(1.0),
            expiration_time: None,
        }))
    }

    /// `[P]`: the output schema; `[P, "input"]`: the input schema.
    async fn get_schema(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        self.shared.authorize(&request)?;
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
        let schema = self.shared.with_pipeline(&path[0], |p| {
            if input {
                p.input_schema().clone()
            } else {
                wire_schema(&p.output_schema())
            }
        })?;
        let result = SchemaResult::try_from(SchemaAsIpc::new(&schema, &IpcWriteOptions::default()))
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(result))
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        self.shared.authorize(&request)?;
        let slot = self.shared.stream_slot()?;
        let ticket = parse_ticket(&request.get_ref().ticket)?;
        let (files, csv_schema) = self.shared.with_pipeline(&ticket.pipeline, |p| {
            let files = match ticket.stream {
                TicketStream::Output => p
                    .sinks()
                    .iter()
                    .find_map(|s| match s {
                        SinkSpec::Files {
                            dir,
                            prefix,
                            format,
                            ..
                        } => Some(published(dir, prefix, format.extension())),
                        SinkSpec::Stdout => None,
                    })
                    .ok_or_else(|| {
                        Status::failed_precondition(format!(
                            "pipeline {} has no file sink to read from",
                            ticket.pipeline
                        ))
                    }),
                TicketStream::DeadLetters => match p.dead_letters_dir() {
                    Some(dir) => Ok(published(dir, "dead", "ndjson")),
                    None => Err(Status::failed_precondition(format!(
                        "pipeline {} keeps no dead letters (no [pipeline.dead_letters])",
                        ticket.pipeline
                    ))),
                },
            };
            (files, wire_schema(&p.output_schema()))
        })?;
        let files = files?;
        let (tx, rx) = mpsc::channel(REPLY_QUEUE);
        let stream = ticket.stream;
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let send = |b: Result<RecordBatch, String>| {
                tx.blocking_send(b.map_err(|e| status_to_flight(Status::internal(e))))
                    .is_ok()
            };
            let mut any = false;
            for file in files {
                let sent = match stream {
                    TicketStream::Output => read_output_file(&file, &csv_schema, &mut |b| {
                        any = true;
                        send(Ok(b))
                    }),
                    TicketStream::DeadLetters => read_dead_letters(&file, &mut |b| {
                        any = true;
                        send(Ok(b))
                    }),
                };
                match sent {
                    Ok(true) => {}
                    Ok(false) => return,
                    Err(e) => {
                        send(Err(format!("{}: {e}", file.display())));
                        return;
                    }
                }
            }
            if !any {
                // An empty stream still tells the reader its schema.
                let schema = match stream {
                    TicketStream::Output => csv_schema,
                    TicketStream::DeadLetters => dead_letter_schema(),
                };
                send(Ok(RecordBatch::new_empty(schema)));
            }
        });
        Ok(Response::new(encode(rx, self.shared.message_bytes_max)))
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        let who = self.shared.authorize(&request)?;
        let slot = self.shared.stream_slot()?;
        let peer = request
            .remote_addr()
            .map_or_else(|| "unknown".to_string(), |a| a.to_string());
        let mut input = request.into_inner();
        let shared = self.shared.clone();
        let (tx, rx) = mpsc::channel::<Result<PutResult, Status>>(REPLY_QUEUE);
        // The reply starts now: a client may send nothing until it has it.
        tokio::spawn(async move {
            let _slot = slot;
            let opened = opening(&mut input, shared.idle, "DoPut", "a pipeline")
                .await
                .and_then(|(first, path)| {
                    let n = shared.next_stream.fetch_add(1, Ordering::Relaxed);
                    let source = format!("flight:{who}@{peer}#{n}");
                    let pusher = shared
                        .with_pipeline(&path[0], |p| p.pusher(&source))?
                        .map_err(|e| Status::failed_precondition(e.to_string()))?;
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
                app_metadata: Bytes::from(format!("{{\"rows_accepted\":{rows}}}")),
            };
            loop {
                let batch = match incoming.next(|s| check_push_schema(&expected, s)).await {
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
                    Err(PushError::Schema(e)) => return refuse(&tx, invalid(e), shared.idle).await,
                    Err(e @ PushError::Stopping { .. }) => {
                        return refuse(&tx, Status::unavailable(e.to_string()), shared.idle).await
                    }
                }
            }
            let _ = tokio::time::timeout(Duration::from_secs(5), tx.send(Ok(ack(accepted)))).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn do_exchange(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        self.shared.authorize(&request)?;
        let slot = self.shared.stream_slot()?;
        let mut input = request.into_inner();
        let shared = self.shared.clone();
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
                let bound =
                    |s: &SchemaRef, scorer: &mut BatchScorer, out: &mut Option<SchemaRef>| {
                        scorer
                            .bind(s)
                            .map(|b| *out = Some(b.output_schema().clone()))
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
        Ok(Response::new(encode(rx, self.shared.message_bytes_max)))
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        let who = self.shared.authorize(&request)?;
        let action = request.into_inner();
        let shared = self.shared.clone();
        let kind = action.r#type.clone();
        // Model imports and reloads read and compile files: off the runtime.
        let reply = tokio::task::spawn_blocking(move || run_action(&shared, &who, &action))
            .await
            .map_err(|_| Status::internal(format!("action {kind} failed inside the server")))??;
        Ok(Response::new(json_result(reply)))
    }

    async fn list_actions(
        &self,
        request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        self.shared.authorize(&request)?;
        let actions = ACTIONS.iter().map(|(t, d)| {
            Ok(ActionType {
                r#type: t.to_string(),
                description: d.to_string(),
            })
        });
        Ok(Response::new(Box::pin(futures::stream::iter(
            actions.collect::<Vec<_>>(),
        ))))
    }
}

const ACTIONS: [(&str, &str); 5] = [
    ("list-models", "the models each pipeline scores with and the models uploaded; body: empty"),
    ("upload-model", "stores a model file (XGBoost JSON/UBJSON, LightGBM text, ONNX, roo linear JSON; recognised by content); body: the file's bytes; reply: its version"),
    ("activate-model", "swaps a stored model into a pipeline between two batches; body: {\"pipeline\": P, \"model\": VERSION}"),
    ("pipeline-stats", "counters, queue depths and latency per pipeline; body: empty or a pipeline name"),
    ("reload", "reads each pipeline's model file again (as SIGHUP); body: empty or a pipeline name"),
];

fn run_action(shared: &Shared, who: &str, action: &Action) -> Result<serde_json::Value, Status> {
    let body_text = || {
        std::str::from_utf8(&action.body)
            .map(str::trim)
            .map_err(|_| {
                invalid(format!(
                    "action {}: the body is not UTF-8 text",
                    action.r#type
                ))
            })
    };
    let pipelines = || shared.pipelines.lock().expect("not poisoned");
    match action.r#type.as_str() {
        "list-models" => {
            let guard = pipelines();
            let active: Vec<String> = guard.iter().map(|p| p.model_version()).collect();
            let running: Vec<_> = guard
                .iter()
                .map(|p| {
                    let m = p.model();
                    serde_json::json!({
                        "pipeline": p.name(),
                        "version": m.version(),
                        "path": p.model_path().display().to_string(),
                    })
                })
                .collect();
            drop(guard);
            let stored: Vec<_> = shared
                .store
                .as_ref()
                .map(ModelStore::list)
                .unwrap_or_default()
                .iter()
                .map(|m| {
                    serde_json::json!({
                        "version": m.compiled.version,
                        "family": m.compiled.family(),
                        "features": m.compiled.model.feature_names,
                        "outputs": m.compiled.model.output_names(),
                        "bytes": m.bytes,
                        "uploaded_unix_s": m.uploaded.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs(),
                        "active": active.contains(&m.compiled.version),
                    })
                })
                .collect();
            Ok(serde_json::json!({"pipelines": running, "stored": stored}))
        }
        "upload-model" => {
            let store = shared.store.as_ref().ok_or_else(|| {
                Status::failed_precondition(
                    "upload-model: this server keeps no models (set flight.model_dir)",
                )
            })?;
            if action.body.is_empty() {
                return Err(invalid(
                    "upload-model: the body is empty; expected the model file's bytes",
                ));
            }
            let in_use: Vec<String> = pipelines().iter().map(|p| p.model_version()).collect();
            let stored = store
                .upload(who, &action.body, &in_use)
                .map_err(|e| invalid(format!("upload-model: {e}")))?;
            tracing::info!(
                "flight: {who} uploaded model {} ({} bytes)",
                stored.compiled.version,
                stored.bytes
            );
            Ok(serde_json::json!({
                "version": stored.compiled.version,
                "family": stored.compiled.family(),
                "features": stored.compiled.model.feature_names,
                "outputs": stored.compiled.model.output_names(),
            }))
        }
        "activate-model" => {
            let store = shared.store.as_ref().ok_or_else(|| {
                Status::failed_precondition(
                    "activate-model: this server keeps no models (set flight.model_dir)",
                )
            })?;
            let request: serde_json::Value = serde_json::from_slice(&action.body).map_err(|e| {
                invalid(format!("activate-model: the body is not JSON ({e}); expected {{\"pipeline\": P, \"model\": VERSION}}"))
            })?;
            let field = |k: &str| {
                request.get(k).and_then(|v| v.as_str()).map(str::to_string).ok_or_else(|| {
                    invalid(format!("activate-model: no {k:?}; expected {{\"pipeline\": P, \"model\": VERSION}}"))
                })
            };
            let (pipeline, key) = (field("pipeline")?, field("model")?);
            let stored = store.find(&key).ok_or_else(|| {
                Status::not_found(format!(
                    "activate-model: no stored model {key:?}; upload it first"
                ))
            })?;
            let previous = shared.with_pipeline(&pipeline, |p| p.model_version())?;
            let version = shared
                .with_pipeline(&pipeline, |p| {
                    p.activate(stored.compiled.clone(), &stored.path)
                })?
                .map_err(|e| Status::failed_precondition(format!("activate-model: {e}")))?;
            tracing::info!(
                "flight: {who} activated {version} in pipeline {pipeline} (was {previous})"
            );
            Ok(serde_json::json!({"pipeline": pipeline, "version": version, "previous": previous}))
        }
        "pipeline-stats" => {
            let only = body_text()?.to_string();
            let guard = pipelines();
            let stats: Vec<_> = guard
                .iter()
                .filter(|p| only.is_empty() || p.name() == only)
                .map(pipeline_stats)
                .collect();
            drop(guard);
            if stats.is_empty() && !only.is_empty() {
                return Err(Status::not_found(format!(
                    "pipeline-stats: no pipeline named {only:?}; pipelines: {}",
                    shared.pipeline_names()
                )));
            }
            Ok(serde_json::Value::Array(stats))
        }
        "reload" => {
            let only = body_text()?.to_string();
            let guard = pipelines();
            let mut results = Vec::new();
            for p in guard.iter().filter(|p| only.is_empty() || p.name() == only) {
                results.push(match p.reload() {
                    Ok(v) => serde_json::json!({"pipeline": p.name(), "version": v}),
                    Err(e) => serde_json::json!({"pipeline": p.name(), "error": e.to_string()}),
                });
            }
            Ok(serde_json::Value::Array(results))
        }
        other => Err(invalid(format!(
            "unknown action {other:?}; expected one of {}",
            ACTIONS.map(|(t, _)| t).join(", ")
        ))),
    }
}

fn pipeline_stats(p: &Pipeline) -> serde_json::Value {
    let m = p.metrics();
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let (p50, p99, p999, _) = m.end_to_end_us.quantiles();
    serde_json::json!({
        "pipeline": p.name(),
        "source": p.source_kind(),
        "model_version": p.model_version(),
        "events_in": get(&m.events_in),
        "events_out": get(&m.events_out),
        "events_dead": get(&m.events_dead),
        "batches": get(&m.batches),
        "acked_offset": get(&m.acked_offset),
        "queue_ingested": get(&m.queue_ingested),
        "queue_scored": get(&m.queue_scored),
        "model_reloads": get(&m.model_reloads),
        "latency_us": {"p50": p50, "p99": p99, "p999": p999},
        "failed": p.failed(),
    })
}

/// The schema as a Flight client receives it: the fields (`model_version`
/// a dictionary, resent with each batch), no metadata (it names one model
/// version; the column names each row's).
fn wire_schema(schema: &SchemaRef) -> SchemaRef {
    Arc::new(Schema::new(schema.fields().clone()))
}

/// `schema` with dictionaries as their values: what a CSV file holds.
fn hydrated(schema: &SchemaRef) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Dictionary(_, value) => {
                Field::new(f.name(), value.as_ref().clone(), f.is_nullable())
            }
            _ => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new(fields))
}

impl RooFlight {
    fn flight_info(&self, name: &str) -> Result<FlightInfo, Status> {
        let (output, input, sinks, dead, source, version) =
            self.shared.with_pipeline(name, |p| {
                (
                    wire_schema(&p.output_schema()),
                    p.input_schema().clone(),
                    p.sinks()
                        .iter()
                        .any(|s| matches!(s, SinkSpec::Files { .. })),
                    p.dead_letters_dir().is_some(),
                    p.source_kind(),
                    p.model_version(),
                )
            })?;
        let ticket = |stream: &str| {
            FlightEndpoint::new().with_ticket(Ticket::new(
                serde_json::json!({"pipeline": name, "stream": stream}).to_string(),
            ))
        };
        let mut info = FlightInfo::new()
            .try_with_schema(&output)
            .map_err(|e| Status::internal(e.to_string()))?
            .with_descriptor(FlightDescriptor::new_path(vec![name.to_string()]))
            .with_app_metadata(
                serde_json::json!({
                    "source": if source == "push" { "flight" } else { source },
                    "model_version": version,
                    "input_schema": input.fields().iter().map(|f| serde_json::json!({"name": f.name(), "type": f.data_type().to_string()})).collect::<Vec<_>>(),
                })
                .to_string(),
            );
        if sinks {
            info = info.with_endpoint(ticket("output"));
        }
        if dead {
            info = info.with_endpoint(ticket("dead_letters"));
        }
        Ok(info)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TicketStream {
    Output,
    DeadLetters,
}

struct ParsedTicket {
    pipeline: String,
    stream: TicketStream,
}

/// `{"pipeline": P, "stream": "output" | "dead_letters"}`, or `P/output`.
fn parse_ticket(bytes: &[u8]) -> Result<ParsedTicket, Status> {
    let expected =
        "expected {\"pipeline\": P, \"stream\": \"output\" | \"dead_letters\"} or P/output";
    let text = std::str::from_utf8(bytes)
        .map_err(|_| invalid(format!("the ticket is not text; {expected}")))?;
    let (pipeline, stream) = if text.trim_start().starts_with('{') {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| invalid(format!("ticket: {e}; {expected}")))?;
        let get = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
        (
            get("pipeline").ok_or_else(|| invalid(format!("ticket: no pipeline; {expected}")))?,
            get("stream").unwrap_or_else(|| "output".into()),
        )
    } else {
        let (p, s) = text.split_once('/').unwrap_or((text, "output"));
        (p.to_string(), s.to_string())
    };
    let stream = match stream.as_str() {
        "output" => TicketStream::Output,
        "dead_letters" | "dead-letters" => TicketStream::DeadLetters,
        other => return Err(invalid(format!("ticket: stream {other:?}; {expected}"))),
    };
    Ok(ParsedTicket { pipeline, stream })
}

/// Published files `PREFIX-NNNNNN.EXT` in `dir`, in order (partial files
/// are hidden and skipped).
fn published(dir: &Path, prefix: &str, extension: &str) -> Vec<PathBuf> {
    let mut files: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let index = name
                .strip_prefix(prefix)?
                .strip_prefix('-')?
                .strip_suffix(extension)?
                .strip_suffix('.')?
                .parse::<u64>()
                .ok()?;
            Some((index, e.path()))
        })
        .collect();
    files.sort();
    files.into_iter().map(|(_, p)| p).collect()
}

/// Sends every batch of an output file; `Ok(false)` when the client left.
fn read_output_file(
    path: &Path,
    csv_schema: &SchemaRef,
    send: &mut dyn FnMut(RecordBatch) -> bool,
) -> Result<bool, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let batches: Box<dyn Iterator<Item = Result<RecordBatch, String>>> = match extension {
        "arrow" => Box::new(
            arrow_ipc::reader::FileReader::try_new(file, None)
                .map_err(|e| e.to_string())?
                .map(|b| b.map_err(|e| e.to_string())),
        ),
        "parquet" => Box::new(
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                .map_err(|e| e.to_string())?
                .with_batch_size(65536)
                .build()
                .map_err(|e| e.to_string())?
                .map(|b| b.map_err(|e| e.to_string())),
        ),
        "csv" => {
            let wire = csv_schema.clone();
            Box::new(
                arrow_csv::ReaderBuilder::new(hydrated(csv_schema))
                    .with_header(true)
                    .with_batch_size(65536)
                    .build(file)
                    .map_err(|e| e.to_string())?
                    .map(move |b| {
                        // model_version back to the dictionary it was.
                        let b = b.map_err(|e| e.to_string())?;
                        let columns = b
                            .columns()
                            .iter()
                            .zip(wire.fields())
                            .map(|(c, f)| arrow_cast::cast(c, f.data_type()))
                            .collect::<Result<Vec<_>, _>>()
                            .map_err(|e| e.to_string())?;
                        RecordBatch::try_new(wire.clone(), columns).map_err(|e| e.to_string())
                    }),
            )
        }
        other => return Err(format!("cannot read .{other} files")),
    };
    for b in batches {
        if !send(b?) {
            return Ok(false);
        }
    }
    Ok(true)
}

fn dead_letter_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("source", DataType::Utf8, false),
        Field::new("offset", DataType::UInt64, false),
        Field::new("line", DataType::UInt64, true),
        Field::new("reason", DataType::Utf8, false),
        Field::new("raw", DataType::Utf8, false),
        Field::new("raw_bytes", DataType::UInt64, false),
    ]))
}

/// Sends a dead-letter file (NDJSON) as Arrow batches of 4096 letters.
fn read_dead_letters(
    path: &Path,
    send: &mut dyn FnMut(RecordBatch) -> bool,
) -> Result<bool, String> {
    use arrow_array::builder::{StringBuilder, UInt64Builder};
    use std::io::BufRead;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut lines = std::io::BufReader::new(file).lines().enumerate().peekable();
    while lines.peek().is_some() {
        let (mut source, mut offset, mut line_no, mut reason, mut raw, mut raw_bytes) = (
            StringBuilder::new(),
            UInt64Builder::new(),
            UInt64Builder::new(),
            StringBuilder::new(),
            StringBuilder::new(),
            UInt64Builder::new(),
        );
        for (n, text) in lines.by_ref().take(4096) {
            let text = text.map_err(|e| e.to_string())?;
            let v: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| format!("line {}: {e}", n + 1))?;
            let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
            let u = |k: &str| v.get(k).and_then(serde_json::Value::as_u64);
            source.append_value(s("source"));
            offset.append_value(u("offset").unwrap_or(0));
            line_no.append_option(u("line"));
            reason.append_value(s("reason"));
            raw.append_value(s("raw"));
            raw_bytes.append_value(u("raw_bytes").unwrap_or(0));
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(source.finish()),
            Arc::new(offset.finish()),
            Arc::new(line_no.finish()),
            Arc::new(reason.finish()),
            Arc::new(raw.finish()),
            Arc::new(raw_bytes.finish()),
        ];
        let batch =
            RecordBatch::try_new(dead_letter_schema(), columns).map_err(|e| e.to_string())?;
        if !send(batch) {
            return Ok(false);
        }
    }
    Ok(true)
}
