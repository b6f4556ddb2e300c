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
//!   carry `{"rows_accepted": N}`, cumulative; a server that stops ends
//!   every put at once with UNAVAILABLE and the same JSON as the status's
//!   details (what a client resumes from). DoPut with descriptor
//!   `["tables", NAME]` upserts rows into every pipeline's table NAME
//!   (`tables.rs`), acknowledged once the next batch joins them.
//! - **DoGet** by ticket `{"pipeline": P, "stream": "output" | "dead_letters"}`:
//!   the files the pipeline's sinks have published.
//! - **ListFlights / GetFlightInfo / GetSchema**: one flight per pipeline; its
//!   schema is the output's, the input's is in `app_metadata` (and GetSchema
//!   on path `[P, "input"]`).
//! - **DoAction**: `list-models`, `upload-model`, `activate-model`,
//!   `pipeline-stats`, `reload`, `reload-table`; replies are JSON.
//! - **Auth**: bearer tokens from the config; Handshake turns basic auth
//!   (token name, secret) into the bearer header. TLS when configured.
//!
//! Every client error is a status naming what was wrong (INVALID_ARGUMENT
//! for a bad batch or schema, NOT_FOUND, UNAUTHENTICATED, …); input is
//! decoded under `catch_unwind`, so a hostile stream ends only its own call.
//!
//! - `auth.rs`: tokens, the per-call check and the Handshake.
//! - `streams.rs`: reading a client's IPC messages, encoding replies.
//! - `exchange.rs` (DoExchange), `put.rs` (DoPut), `get.rs` (DoGet, flight
//!   infos, schemas), `actions.rs` (DoAction), `tables.rs` (table
//!   upserts and reloads).

mod actions;
mod audit;
mod auth;
mod exchange;
mod get;
mod put;
mod streams;
mod tables;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use arrow_array::RecordBatch;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use futures::Stream;
use roo_scheduler::{BatchScorer, ModelStore, Pipeline};
use tokio::sync::Semaphore;
use tonic::{Request, Response, Status, Streaming};

pub use auth::{bearer, Token};

use crate::serve::{list, Pipelines};

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
    pipelines: Pipelines,
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
    /// Turns true when the server begins to stop: an idle DoPut ends at
    /// once, saying how many rows it accepted, rather than being cut.
    stopping: tokio::sync::watch::Receiver<bool>,
}

pub struct FlightServer {
    runtime: tokio::runtime::Runtime,
    stopping: tokio::sync::watch::Sender<bool>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<Result<(), tonic::transport::Error>>>,
    addr: SocketAddr,
}

impl FlightServer {
    pub fn start(
        settings: FlightSettings,
        pipelines: Pipelines,
        pool: Arc<rayon::ThreadPool>,
    ) -> Result<Self> {
        let store = match &settings.model_dir {
            Some(dir) => Some(ModelStore::open(
                dir,
                settings.models_max,
                roo_scheduler::Device::Auto,
            )?),
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
        let (stopping, stopping_rx) = tokio::sync::watch::channel(false);
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
            stopping: stopping_rx,
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
            stopping,
            shutdown: Some(shutdown),
            served: Some(served),
            addr,
        })
    }

    /// The address the endpoint is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops taking calls, lets open ones finish for up to `grace`, then
    /// ends the rest (their clients see the stream cut).
    pub fn stop(mut self, grace: Duration) {
        self.stopping.send_replace(true);
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

impl Shared {
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
        list(&self.pipelines)
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
        let kib = ((streams::batch_bytes(batch) * factor) >> 10).clamp(1, self.memory_kib);
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

    /// The pipeline named `name` (the list's lock held only to find it).
    fn pipeline(&self, name: &str) -> Result<Arc<Pipeline>, Status> {
        list(&self.pipelines)
            .into_iter()
            .find(|p| p.name() == name)
            .ok_or_else(|| {
                Status::not_found(format!(
                    "no pipeline named {name:?}; pipelines: {}",
                    self.pipeline_names()
                ))
            })
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
            if let Some(p) = list(&self.pipelines).iter().find(|p| p.name() == key) {
                let scorer = p.scorer().map_err(|e| {
                    Status::failed_precondition(format!(
                        "{e}: nothing to exchange against; exchange with a stored model instead"
                    ))
                })?;
                return Ok((format!("pipeline {key}"), scorer));
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

#[tonic::async_trait]
impl FlightService for RooFlight {
    type HandshakeStream = BoxStream<HandshakeResponse>;
    type ListFlightsStream = BoxStream<FlightInfo>;
    type DoGetStream = BoxStream<FlightData>;
    type DoPutStream = BoxStream<PutResult>;
    type DoExchangeStream = BoxStream<FlightData>;
    type DoActionStream = BoxStream<arrow_flight::Result>;
    type ListActionsStream = BoxStream<ActionType>;

    async fn handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        auth::handshake(&self.shared, request).await
    }

    async fn list_flights(
        &self,
        request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        self.shared.authorize(&request)?;
        let mut infos = Vec::new();
        for name in self.shared.names() {
            if let Ok(info) = get::flight_info(&self.shared, &name) {
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
        let path = streams::descriptor_path(request.get_ref())?;
        Ok(Response::new(get::flight_info(&self.shared, &path[0])?))
    }

    async fn poll_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        self.shared.authorize(&request)?;
        let path = streams::descriptor_path(request.get_ref())?;
        let info = get::flight_info(&self.shared, &path[0])?;
        Ok(Response::new(PollInfo {
            info: Some(info),
            flight_descriptor: None,
            progress: Some(1.0),
            expiration_time: None,
        }))
    }

    async fn get_schema(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        get::get_schema(&self.shared, request).await
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        get::do_get(&self.shared, request).await
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        put::do_put(&self.shared, request).await
    }

    async fn do_exchange(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        exchange::do_exchange(&self.shared, request).await
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        actions::do_action(&self.shared, request).await
    }

    async fn list_actions(
        &self,
        request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        actions::list_actions(&self.shared, request).await
    }
}
