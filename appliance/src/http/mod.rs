//! The daemon's HTTP endpoint: `GET /metrics` (OpenMetrics text, rendered
//! by `prometheus-client` from one [`MetricsSnapshot`] per pipeline) and
//! `GET /healthz` (200 `ok`; 503 `draining` once the daemon is stopping,
//! so a load balancer stops sending), served by axum on a small tokio runtime of its own.
//! Connections are handled concurrently: a slow client holds only its own.
//! They are bounded (`listener.rs`): 64 at once, each closed after 30 s
//! without a byte from its client.

pub(crate) mod listener;
mod metrics;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

pub use metrics::render;

use crate::serve::Pipelines;

/// The content type of the OpenMetrics text format.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A running HTTP endpoint; dropped or [`HttpServer::stop`]ped, it ends.
pub struct HttpServer {
    runtime: tokio::runtime::Runtime,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    addr: SocketAddr,
}

impl HttpServer {
    /// Binds `listen` and serves `/metrics` and `/healthz` from then on;
    /// `/healthz` answers 200 `ok`, or 503 `draining` once `draining` is set.
    pub fn start(
        listen: &str,
        pipelines: Pipelines,
        started: Instant,
        draining: Arc<AtomicBool>,
    ) -> Result<Self> {
        let listener = std::net::TcpListener::bind(listen)
            .with_context(|| format!("metrics address {listen}"))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("roo-http")
            .enable_all()
            .build()
            .context("starting the HTTP runtime")?;
        let app = Router::new()
            .route(
                "/metrics",
                get(move || {
                    let pipelines = pipelines.clone();
                    async move {
                        let body = render(&pipelines, started);
                        ([(header::CONTENT_TYPE, OPENMETRICS)], body)
                    }
                }),
            )
            .route(
                "/healthz",
                get(move || {
                    let draining = draining.load(Ordering::Acquire);
                    async move {
                        if draining {
                            (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
                        } else {
                            (StatusCode::OK, "ok\n")
                        }
                    }
                }),
            )
            .fallback(|| async {
                (
                    StatusCode::NOT_FOUND,
                    "not found; try /metrics or /healthz\n",
                )
                    .into_response()
            });
        let (shutdown, on_shutdown) = tokio::sync::oneshot::channel::<()>();
        runtime.block_on(async {
            let listener =
                listener::BoundedListener::new(tokio::net::TcpListener::from_std(listener)?);
            tokio::spawn(async move {
                let served = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = on_shutdown.await;
                    })
                    .await;
                if let Err(e) = served {
                    tracing::error!("the metrics endpoint stopped: {e}");
                }
            });
            anyhow::Ok(())
        })?;
        tracing::info!("metrics on http://{addr}/metrics");
        Ok(Self {
            runtime,
            shutdown: Some(shutdown),
            addr,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops taking connections; open ones get a second to finish.
    pub fn stop(mut self) {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
        self.runtime.shutdown_timeout(Duration::from_secs(1));
    }
}
