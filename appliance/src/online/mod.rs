//! Online decisions over the Open Inference Protocol (KServe V2): one
//! transaction in, one score out, over REST (`rest.rs`) and gRPC
//! (`grpc.rs`, `inference.GRPCInferenceService` from
//! `proto/inference.proto`), on a tokio runtime of its own.
//!
//! The model name is the pipeline's name. A request runs the pipeline's
//! own operator chain (the scheduler's [`roo_scheduler::online`]): its
//! features read and update the keys' state, tables join, the audit log
//! records it, its rows go to the sinks. Concurrent requests are coalesced
//! into one batch (`linger_us`, `max_rows`) and the replies fan out.
//!
//! - `tensors/`: the protocol's tensors ⇄ Arrow columns, shared by both
//!   transports; `Online` here: lookup, auth, infer, metadata.
//!
//! Bounds: `requests_max` in flight per pipeline (past it 503 /
//! RESOURCE_EXHAUSTED at once), `body_bytes_max` per request, connections
//! to the REST endpoint bounded like the metrics endpoint's.

mod grpc;
mod rest;
pub mod tensors;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use roo_scheduler::online::OnlineError;
use roo_scheduler::Pipeline;
use thiserror::Error;

use crate::flight::{bearer, Token};
use crate::serve::{list, Pipelines};
use tensors::{Input, Output, Target};

/// The generated gRPC types and service (`proto/inference.proto`).
/// Generated code: lints are prost's and tonic's business.
#[allow(clippy::all)]
pub mod proto {
    tonic::include_proto!("inference");
}

/// `[online]`, resolved.
#[derive(Clone, Debug)]
pub struct OnlineSettings {
    pub http: Option<SocketAddr>,
    pub grpc: Option<SocketAddr>,
    pub body_bytes_max: usize,
    /// Connections the REST endpoint serves at once.
    pub connections_max: usize,
    /// Bearer tokens, as for Flight; none: calls need no credentials.
    pub tokens: Vec<Token>,
}

/// Why a call failed, as V2 says it: a status and `{"error": "…"}`.
#[derive(Debug, Error)]
pub enum V2Error {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    /// `requests_max` in flight: 503 / RESOURCE_EXHAUSTED.
    #[error("{0}")]
    Busy(String),
    /// Stopping or stopped: 503 / UNAVAILABLE.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Internal(String),
}

impl V2Error {
    pub fn bad(message: String) -> Self {
        Self::BadRequest(message)
    }

    pub fn internal(message: String) -> Self {
        Self::Internal(message)
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            Self::BadRequest(_) => 400,
            Self::Unauthenticated(_) => 401,
            Self::NotFound(_) => 404,
            Self::Busy(_) | Self::Unavailable(_) => 503,
            Self::Internal(_) => 500,
        }
    }

    /// The gRPC status.
    pub fn grpc(&self) -> tonic::Status {
        let m = self.to_string();
        match self {
            Self::BadRequest(_) => tonic::Status::invalid_argument(m),
            Self::Unauthenticated(_) => tonic::Status::unauthenticated(m),
            Self::NotFound(_) => tonic::Status::not_found(m),
            Self::Busy(_) => tonic::Status::resource_exhausted(m),
            Self::Unavailable(_) => tonic::Status::unavailable(m),
            Self::Internal(_) => tonic::Status::internal(m),
        }
    }
}

impl From<OnlineError> for V2Error {
    fn from(e: OnlineError) -> Self {
        let m = e.to_string();
        match e {
            OnlineError::Busy { .. } => Self::Busy(m),
            OnlineError::Stopped { .. } => Self::Unavailable(m),
            OnlineError::Schema(_) | OnlineError::Empty | OnlineError::Rows(_) => {
                Self::BadRequest(m)
            }
        }
    }
}

/// A tensor's name, datatype and shape (-1: any size).
pub struct TensorMeta {
    pub name: String,
    pub datatype: &'static str,
    pub shape: Vec<i64>,
}

/// What `GET /v2/models/{name}` and `ModelMetadata` say.
pub struct Metadata {
    pub name: String,
    pub versions: Vec<String>,
    pub platform: &'static str,
    pub inputs: Vec<TensorMeta>,
    pub outputs: Vec<TensorMeta>,
}

/// A scored request.
pub struct Inferred {
    pub model_version: String,
    pub outputs: Vec<Output>,
}

/// What both transports share.
pub struct Online {
    pipelines: Pipelines,
    tokens: Vec<Token>,
    pub body_bytes_max: usize,
}

impl Online {
    /// The caller's token, checked (`authorization: Bearer …`).
    pub fn authorize(&self, header: Option<&str>) -> Result<(), V2Error> {
        bearer(&self.tokens, header)
            .map(|_| ())
            .map_err(|m| V2Error::Unauthenticated(m.to_string()))
    }

    fn pipeline(&self, name: &str) -> Result<Arc<Pipeline>, V2Error> {
        let found = self
            .pipelines
            .lock()
            .expect("not poisoned")
            .iter()
            .find(|p| p.name() == name)
            .cloned();
        found.ok_or_else(|| {
            V2Error::NotFound(format!(
                "model {name:?} is not served; the models are the pipelines: [{}]",
                list(&self.pipelines)
                    .iter()
                    .map(|p| p.name().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
    }

    /// The pipeline, checked against a requested version (empty: any).
    pub fn versioned(&self, name: &str, version: Option<&str>) -> Result<Arc<Pipeline>, V2Error> {
        let p = self.pipeline(name)?;
        if let Some(v) = version.filter(|v| !v.is_empty()) {
            let current = p.model_version().unwrap_or_default();
            if v != current {
                return Err(V2Error::NotFound(format!(
                    "model {name:?} version {v:?} is not served; the version scoring now is {current:?}"
                )));
            }
        }
        Ok(p)
    }

    /// Whether the model answers requests now.
    pub fn ready(&self, name: &str, version: Option<&str>) -> Result<bool, V2Error> {
        let p = self.versioned(name, version)?;
        Ok(p.takes_requests() && !p.failed())
    }

    /// Every pipeline answers (the server is ready).
    pub fn server_ready(&self) -> bool {
        list(&self.pipelines)
            .iter()
            .all(|p| p.takes_requests() && !p.failed())
    }

    pub fn metadata(&self, name: &str, version: Option<&str>) -> Result<Metadata, V2Error> {
        let p = self.versioned(name, version)?;
        let requests = p
            .requests()
            .map_err(|e| V2Error::Unavailable(e.to_string()))?;
        let meta = |f: &arrow_schema::Field| TensorMeta {
            name: f.name().clone(),
            datatype: tensors::datatype_of(f.data_type()),
            shape: vec![-1],
        };
        Ok(Metadata {
            name: name.to_string(),
            versions: p.model_version().into_iter().collect(),
            platform: "roo",
            inputs: requests.schema().fields().iter().map(|f| meta(f)).collect(),
            outputs: p.output_schema().fields().iter().map(|f| meta(f)).collect(),
        })
    }

    /// Scores `inputs` through pipeline `p`'s chain (found with
    /// [`Online::versioned`]); the reply holds the `requested` outputs
    /// (default: the scores).
    pub async fn infer(
        &self,
        p: Arc<Pipeline>,
        inputs: Vec<Input>,
        requested: &[String],
    ) -> Result<Inferred, V2Error> {
        let requests = p
            .requests()
            .map_err(|e| V2Error::Unavailable(e.to_string()))?;
        let model = p.model();
        let target = Target {
            pipeline: p.name(),
            schema: requests.schema(),
            features: model.as_ref().map(|m| m.feature_names()),
            event_time: p.event_time_column(),
        };
        let batch = tensors::to_batch(&target, inputs)?;
        drop(model);
        drop(p);
        let reply = requests.submit(batch)?.reply().await?;
        Ok(Inferred {
            model_version: tensors::model_version(&reply),
            outputs: tensors::outputs(&reply, requested)?,
        })
    }
}

/// The running endpoints; [`OnlineServer::stop`] ends them.
pub struct OnlineServer {
    runtime: tokio::runtime::Runtime,
    shutdown: Vec<tokio::sync::oneshot::Sender<()>>,
    pub http: Option<SocketAddr>,
    pub grpc: Option<SocketAddr>,
}

impl OnlineServer {
    /// Binds each endpoint configured and serves from then on.
    pub fn start(settings: OnlineSettings, pipelines: Pipelines) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("roo-online")
            .enable_all()
            .build()
            .context("starting the online runtime")?;
        let online = Arc::new(Online {
            pipelines,
            tokens: settings.tokens.clone(),
            body_bytes_max: settings.body_bytes_max,
        });
        let mut shutdown = Vec::new();
        let http = match settings.http {
            Some(addr) => {
                let (tx, rx) = tokio::sync::oneshot::channel();
                shutdown.push(tx);
                Some(rest::start(
                    &runtime,
                    addr,
                    online.clone(),
                    settings.connections_max,
                    rx,
                )?)
            }
            None => None,
        };
        let grpc = match settings.grpc {
            Some(addr) => {
                let (tx, rx) = tokio::sync::oneshot::channel();
                shutdown.push(tx);
                Some(grpc::start(&runtime, addr, online.clone(), rx)?)
            }
            None => None,
        };
        if settings.tokens.is_empty() {
            tracing::warn!(
                "the online endpoints take calls without credentials (no [[flight.token]])"
            );
        }
        Ok(Self {
            runtime,
            shutdown,
            http,
            grpc,
        })
    }

    /// Stops taking calls; calls in progress get a second to finish.
    pub fn stop(self) {
        for s in self.shutdown {
            let _ = s.send(());
        }
        self.runtime.shutdown_timeout(Duration::from_secs(1));
    }
}
