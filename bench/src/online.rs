//! `roo-bench online`: one event per request over the Open Inference
//! Protocol (V2 REST and gRPC), roo beside Seldon's MLServer (one worker,
//! its XGBoost runtime) with the same model file and the same requests,
//! from the same load generator in the same run.
//!
//! The server runs on CPU 0 alone, the load generator on the others (with
//! two cores: CPU 1). Per server and protocol:
//! - saturation: 64 connections (REST, HTTP/1.1 keep-alive) or 64
//!   concurrent calls (gRPC) back to back: requests/s and the server's
//!   own CPU per request (utime + stime of its process tree);
//! - 50% of that peak, open loop: each request has a due time, latency is
//!   measured from it when the connection was still busy (corrected for
//!   coordinated omission: a late send counts its wait), else from the
//!   send (tokio's timer wakes up to a millisecond late: the load
//!   generator's jitter, not the server's).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use roo_scheduler::generator::{CardGenerator, CARD_FEATURES};

use crate::daemon::{pin_child, pin_self, tree_cpu_s, unpin_self, Daemon};
use crate::report::{Latency, Measurement, Section};

/// Generated code: lints are prost's and tonic's business.
#[allow(clippy::all)]
mod proto {
    tonic::include_proto!("inference");
}
use proto::grpc_inference_service_client::GrpcInferenceServiceClient;
use proto::model_infer_request::InferInputTensor;
use proto::{InferTensorContents, ModelInferRequest};

/// The figures the headline reads.
pub(crate) const REST_PEAK: &str = "roo, V2 REST, saturation";
pub(crate) const GRPC_PEAK: &str = "roo, V2 gRPC, saturation";
pub(crate) const REST_HALF: &str = "roo, V2 REST, 50% of peak";
pub(crate) const GRPC_HALF: &str = "roo, V2 gRPC, 50% of peak";
pub(crate) const PEER: &str = "MLServer";

/// The model's name on both servers.
const MODEL: &str = "fraud";
/// Connections (REST) or concurrent calls (gRPC) at saturation.
const CONCURRENCY: usize = 64;
/// Distinct rows the requests cycle through.
const ROWS: usize = 1024;

/// A server under test: its process tree's CPU and its endpoints.
trait Server {
    fn cpu_s(&self) -> f64;
    fn http(&self) -> SocketAddr;
    fn grpc(&self) -> SocketAddr;
}

struct Roo {
    daemon: Daemon,
    http: SocketAddr,
    grpc: SocketAddr,
    flight: String,
    metrics: String,
}

impl Server for Roo {
    fn cpu_s(&self) -> f64 {
        tree_cpu_s(self.daemon.pid())
    }
    fn http(&self) -> SocketAddr {
        self.http
    }
    fn grpc(&self) -> SocketAddr {
        self.grpc
    }
}

struct MlServer {
    child: Child,
    http: SocketAddr,
    grpc: SocketAddr,
}

impl Server for MlServer {
    fn cpu_s(&self) -> f64 {
        tree_cpu_s(self.child.id())
    }
    fn http(&self) -> SocketAddr {
        self.http
    }
    fn grpc(&self) -> SocketAddr {
        self.grpc
    }
}

impl Drop for MlServer {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free local port (bound, then released for the server to take).
fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// One figure: requests, seconds, the server's CPU, latency.
struct Figure {
    requests: u64,
    seconds: f64,
    cpu_s: f64,
    latency: Option<Histogram<u64>>,
}

/// The requests: one event each, the model's 30 features as one [1, 30]
/// FP32 tensor (what MLServer and Triton users send).
struct Requests {
    json: Vec<Bytes>,
    grpc: Vec<ModelInferRequest>,
}

fn requests() -> Requests {
    let batch = CardGenerator::new(17).batch(ROWS);
    let columns: Vec<&arrow_array::Float32Array> = CARD_FEATURES
        .iter()
        .map(|f| {
            batch
                .column_by_name(f)
                .expect("a card feature")
                .as_any()
                .downcast_ref::<arrow_array::Float32Array>()
                .expect("float32")
        })
        .collect();
    let mut json = Vec::with_capacity(ROWS);
    let mut grpc = Vec::with_capacity(ROWS);
    for r in 0..ROWS {
        let row: Vec<f32> = columns.iter().map(|c| c.value(r)).collect();
        let body = serde_json::json!({
            "inputs": [{"name": "input-0", "shape": [1, 30], "datatype": "FP32", "data": row}]
        });
        json.push(Bytes::from(serde_json::to_vec(&body).expect("json")));
        grpc.push(ModelInferRequest {
            model_name: MODEL.into(),
            inputs: vec![InferInputTensor {
                name: "input-0".into(),
                datatype: "FP32".into(),
                shape: vec![1, 30],
                parameters: Default::default(),
                contents: Some(InferTensorContents {
                    fp32_contents: row,
                    ..Default::default()
                }),
            }],
            ..Default::default()
        });
    }
    Requests { json, grpc }
}

type HttpSender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn http_connection(addr: SocketAddr) -> Result<HttpSender> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

/// One REST infer; an error unless the server answered 200.
async fn http_infer(sender: &mut HttpSender, addr: SocketAddr, body: &Bytes) -> Result<()> {
    sender.ready().await?;
    let request = hyper::Request::post(format!("/v2/models/{MODEL}/infer"))
        .header(hyper::header::HOST, addr.to_string())
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(body.clone()))?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();

    if status != hyper::StatusCode::OK {
        bail!("{status}: {}", String::from_utf8_lossy(&body));
    }
    Ok(())
}

/// When request `i` is due: `None` back to back, else at `rate` a second.
fn due(start: tokio::time::Instant, rate: Option<f64>, i: u64) -> Option<tokio::time::Instant> {
    rate.map(|r| start + Duration::from_secs_f64(i as f64 / r))
}

/// Where a request's latency counts from. Open loop (coordinated omission
/// corrected): from its due time when its connection was still busy then
/// (the wait is the server's doing); from when it was sent when the
/// connection was free (the timer's wake-up, about a millisecond in tokio,
/// is the load generator's, not the server's). Back to back: when sent.
fn since(due: Option<tokio::time::Instant>, free_at: tokio::time::Instant) -> tokio::time::Instant {
    match due {
        Some(d) if free_at > d => d,
        _ => tokio::time::Instant::now(),
    }
}

/// The requests' schedule, shared by every client task: the next request's
/// index, and when each is due (`rate` a second; none: back to back).
#[derive(Clone)]
struct Schedule {
    next: Arc<AtomicU64>,
    start: tokio::time::Instant,
    end: tokio::time::Instant,
    rate: Option<f64>,
}

impl Schedule {
    fn new(seconds: f64, rate: Option<f64>) -> Self {
        let start = tokio::time::Instant::now();
        Self {
            next: Arc::new(AtomicU64::new(0)),
            start,
            end: start + Duration::from_secs_f64(seconds),
            rate,
        }
    }

    /// One client: takes the next request, waits until it is due, sends it
    /// with `call`, records its latency; until the end, or the first error.
    async fn client(
        self,
        mut call: impl AsyncFnMut(usize) -> Result<()>,
    ) -> (u64, Option<String>, Histogram<u64>) {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
        let mut n = 0u64;
        let mut free_at = self.start;
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            let due = due(self.start, self.rate, i);
            if due.unwrap_or_else(tokio::time::Instant::now) >= self.end {
                break;
            }
            if let Some(d) = due {
                tokio::time::sleep_until(d).await;
            }
            let sent = since(due, free_at);
            if let Err(e) = call(i as usize % ROWS).await {
                return (n, Some(format!("{e:#}")), h);
            }
            n += 1;
            free_at = tokio::time::Instant::now();
            let _ = h.record(free_at.duration_since(sent).as_micros().max(1) as u64);
        }
        (n, None, h)
    }
}

/// REST load: `CONCURRENCY` connections for `seconds`, back to back or at
/// `rate` (open loop, latency from each request's due time).
async fn http_load(
    server: &dyn Server,
    requests: &Requests,
    seconds: f64,
    rate: Option<f64>,
) -> Result<Figure> {
    let addr = server.http();
    let mut senders = Vec::new();
    for _ in 0..CONCURRENCY {
        senders.push(http_connection(addr).await?);
    }
    let schedule = Schedule::new(seconds, rate);
    let cpu0 = server.cpu_s();
    let bodies = &requests.json;
    let clients = senders.into_iter().map(|mut sender| {
        schedule
            .clone()
            .client(async move |i| http_infer(&mut sender, addr, &bodies[i]).await)
    });
    let done = futures::future::join_all(clients).await;
    collect(server, done, schedule.start, cpu0, rate.is_some())
}

/// gRPC load: `CONCURRENCY` concurrent calls over 4 connections.
async fn grpc_load(
    server: &dyn Server,
    requests: &Requests,
    seconds: f64,
    rate: Option<f64>,
) -> Result<Figure> {
    let mut clients = Vec::new();
    for _ in 0..4 {
        let channel = tonic::transport::Endpoint::new(format!("http://{}", server.grpc()))?
            .tcp_nodelay(true)
            .connect()
            .await?;
        clients.push(GrpcInferenceServiceClient::new(channel));
    }
    let schedule = Schedule::new(seconds, rate);
    let cpu0 = server.cpu_s();
    let calls = &requests.grpc;
    let tasks = (0..CONCURRENCY).map(|t| {
        let mut client = clients[t % clients.len()].clone();
        schedule.clone().client(async move |i| {
            client.model_infer(calls[i].clone()).await?;
            Ok(())
        })
    });
    let done = futures::future::join_all(tasks).await;
    collect(server, done, schedule.start, cpu0, rate.is_some())
}

/// A client's requests answered, its first error (it stops there), its
/// latencies.
type ClientRun = (u64, Option<String>, Histogram<u64>);

fn collect(
    server: &dyn Server,
    clients: Vec<ClientRun>,
    start: tokio::time::Instant,
    cpu0: f64,
    latency: bool,
) -> Result<Figure> {
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut requests = 0;
    for (n, error, th) in clients {
        if let Some(e) = error {
            bail!("a request failed: {e}");
        }
        requests += n;
        h.add(th)?;
    }
    let seconds = start.elapsed().as_secs_f64();
    let cpu_s = server.cpu_s() - cpu0;
    Ok(Figure {
        requests,
        seconds,
        cpu_s,
        latency: latency.then_some(h),
    })
}

fn start_roo(dir: &Path, model: &Path, cpu: Option<usize>) -> Result<Roo> {
    let config = dir.join("roo.toml");
    std::fs::write(
        &config,
        format!(
            r#"[server]
metrics = "127.0.0.1:0"
threads = 1

[flight]
listen = "127.0.0.1:0"

[online]
http = "127.0.0.1:0"
grpc = "127.0.0.1:0"
linger_us = 0
max_rows = 1024
requests_max = 4096

[[pipeline]]
name = "{MODEL}"
model = "{}"
device = "cpu"

[pipeline.source]
kind = "requests"
"#,
            model.display(),
        ),
    )?;
    let mut daemon = Daemon::start_on(&config, cpu)?;
    let ready = daemon.ready()?;
    let parse = |a: Option<String>, what: &str| -> Result<SocketAddr> {
        a.with_context(|| format!("roo's {what} address"))?
            .parse()
            .with_context(|| what.to_string())
    };
    Ok(Roo {
        http: parse(ready.online_http, "online http")?,
        grpc: parse(ready.online_grpc, "online grpc")?,
        metrics: ready.metrics.context("roo's metrics address")?,
        flight: ready.flight.context("roo's Flight address")?,
        daemon,
    })
}

/// MLServer with one worker (`parallel_workers = 0`: inference in the
/// server's own process) and its XGBoost runtime on `model`.
fn start_mlserver(
    runtime: &tokio::runtime::Runtime,
    python: &str,
    dir: &Path,
    model: &Path,
    cpu: Option<usize>,
) -> Result<MlServer> {
    let mlserver = Path::new(python).with_file_name("mlserver");
    if !mlserver.exists() {
        bail!(
            "{} not found: pip install -r bench/python/requirements.txt (mlserver, mlserver-xgboost)",
            mlserver.display()
        );
    }
    let (http, grpc, metrics) = (free_port()?, free_port()?, free_port()?);
    let models = dir.join("mlserver");
    let model_dir = models.join(MODEL);
    std::fs::create_dir_all(&model_dir)?;
    std::fs::copy(model, model_dir.join("model.json"))?;
    std::fs::write(
        models.join("settings.json"),
        serde_json::to_vec_pretty(&serde_json::json!({
            "http_port": http,
            "grpc_port": grpc,
            "metrics_port": metrics,
            "parallel_workers": 0,
            "debug": false,
        }))?,
    )?;
    std::fs::write(
        model_dir.join("model-settings.json"),
        serde_json::to_vec_pretty(&serde_json::json!({
            "name": MODEL,
            "implementation": "mlserver_xgboost.XGBoostModel",
            "parameters": {"uri": "./model.json", "version": "v1"},
        }))?,
    )?;
    let log = std::fs::File::create(dir.join("mlserver.log"))?;
    let mut command = Command::new(&mlserver);
    command
        .args(["start", "."])
        .current_dir(&models)
        .stdout(Stdio::null())
        .stderr(log);
    if let Some(cpu) = cpu {
        pin_child(&mut command, cpu);
    }
    let child = command
        .spawn()
        .with_context(|| format!("starting {}", mlserver.display()))?;
    // Stopped on drop from here on, whatever happens.
    let mut server = MlServer {
        child,
        http: format!("127.0.0.1:{http}").parse()?,
        grpc: format!("127.0.0.1:{grpc}").parse()?,
    };
    // Ready once its REST endpoint says so (it loads Python and the model).
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if let Some(status) = server.child.try_wait()? {
            bail!(
                "MLServer exited ({status}) before it was ready; see {}",
                dir.join("mlserver.log").display()
            );
        }
        let ready = runtime.block_on(async {
            let mut sender = http_connection(server.http).await?;
            sender.ready().await?;
            let request = hyper::Request::get(format!("/v2/models/{MODEL}/ready"))
                .header(hyper::header::HOST, server.http.to_string())
                .body(Full::new(Bytes::new()))?;
            let response = sender.send_request(request).await?;
            anyhow::Ok(response.status() == hyper::StatusCode::OK)
        });
        if ready.unwrap_or(false) {
            return Ok(server);
        }
        if Instant::now() > deadline {
            bail!(
                "MLServer was not ready after 180 s; see {}",
                dir.join("mlserver.log").display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Saturation, then 50% of it, for both protocols: four figures.
fn measure(
    runtime: &tokio::runtime::Runtime,
    server: &dyn Server,
    requests: &Requests,
    seconds: f64,
) -> Result<[(String, Figure); 4]> {
    runtime.block_on(async {
        // Warm up: connections, the model, the allocator.
        http_load(server, requests, seconds.min(0.5), None).await?;
        let rest_peak = http_load(server, requests, seconds, None).await?;
        let rest_rate = rest_peak.requests as f64 / rest_peak.seconds / 2.0;
        let rest_half = http_load(server, requests, seconds, Some(rest_rate)).await?;
        grpc_load(server, requests, seconds.min(0.5), None).await?;
        let grpc_peak = grpc_load(server, requests, seconds, None).await?;
        let grpc_rate = grpc_peak.requests as f64 / grpc_peak.seconds / 2.0;
        let grpc_half = grpc_load(server, requests, seconds, Some(grpc_rate)).await?;
        anyhow::Ok([
            ("V2 REST, saturation".to_string(), rest_peak),
            ("V2 REST, 50% of peak".to_string(), rest_half),
            ("V2 gRPC, saturation".to_string(), grpc_peak),
            ("V2 gRPC, 50% of peak".to_string(), grpc_half),
        ])
    })
}

fn measurement(system: &str, what: &str, f: &Figure, roo_name: Option<&str>) -> Measurement {
    let name = format!("{system}, {what}");
    let m = match roo_name {
        None => Measurement::roo(name, f.requests as f64, f.seconds, Some(f.cpu_s)),
        Some(r) => {
            Measurement::peer(name, system, f.requests as f64, f.seconds, Some(f.cpu_s)).against(r)
        }
    };
    match &f.latency {
        Some(h) => m
            .latency(Latency::from_us(h))
            .offered(Some(f.requests as f64 / f.seconds)),
        None => m,
    }
}

/// One-row Flight exchanges, `CONCURRENCY` streams lock-step, on the
/// descriptor `path`: `["online", P]` (the pipeline's chain, coalesced
/// with other requests) or `[P]` (the pipeline's model alone, per stream).
async fn flight_load(roo: &Roo, path: &'static [&'static str], seconds: f64) -> Result<Figure> {
    let row = CardGenerator::new(17)
        .batch(1)
        .project(&(1..=CARD_FEATURES.len()).collect::<Vec<_>>())?;
    let channel = tonic::transport::Endpoint::new(format!("http://{}", roo.flight))?
        .tcp_nodelay(true)
        .connect()
        .await?;
    let cpu0 = roo.cpu_s();
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let mut client = arrow_flight::FlightClient::new(channel.clone());
        let row = row.clone();
        tasks.push(tokio::spawn(async move {
            crate::flight::exchange(&mut client, path, &row, seconds).await
        }));
    }
    let mut requests = 0;
    for t in tasks {
        requests += t.await??.0;
    }
    Ok(Figure {
        requests,
        seconds: start.elapsed().as_secs_f64(),
        cpu_s: roo.cpu_s() - cpu0,
        latency: None,
    })
}

pub fn run(seconds: f64, python: &str, cache: &Path) -> Result<Section> {
    crate::report::step("online: starting roo");
    let dir: PathBuf = cache.join("online");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let model = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/fraud/model.json")
        .canonicalize()
        .context("the bundled model")?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // The server on CPU 0, the load generator on the rest.
    let (server_cpu, client_cpus): (Option<usize>, Vec<usize>) = if cores >= 2 {
        (Some(0), (1..cores).collect())
    } else {
        (None, Vec::new())
    };
    let requests = requests();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let pinned = (!client_cpus.is_empty())
        .then(|| pin_self(&client_cpus))
        .flatten();
    let result = (|| -> Result<_> {
        let roo = start_roo(&dir, &model, server_cpu)?;
        crate::report::step("online: roo, REST and gRPC");
        let m0 = crate::daemon::metrics_text(&roo.metrics)?;
        let roo_figures = measure(&runtime, &roo, &requests, seconds)?;
        crate::report::step("online: roo, Flight one-row exchanges");
        let flight = runtime.block_on(async {
            let online = flight_load(&roo, &["online", MODEL], seconds).await?;
            let direct = flight_load(&roo, &[MODEL], seconds).await?;
            anyhow::Ok([
                (
                    "Flight DoExchange [\"online\", P], 1-row batches, 64 streams".to_string(),
                    online,
                ),
                (
                    "Flight DoExchange [P] (no chain, per stream), 1-row batches, 64 streams"
                        .to_string(),
                    direct,
                ),
            ])
        })?;
        let m1 = crate::daemon::metrics_text(&roo.metrics)?;
        let per_batch = {
            let d = |p: &str| crate::daemon::metric(&m1, p) - crate::daemon::metric(&m0, p);
            d("roo_online_requests_total") / d("roo_online_batches_total").max(1.0)
        };
        let rss = roo.daemon.peak_rss_mib().ok();
        roo.daemon.stop()?;
        crate::report::step("online: MLServer, REST and gRPC");
        let ml = start_mlserver(&runtime, python, &dir, &model, server_cpu)?;
        let ml_figures = measure(&runtime, &ml, &requests, seconds)?;
        drop(ml);
        Ok((roo_figures, ml_figures, per_batch, rss, flight))
    })();
    unpin_self(pinned);
    let (roo_figures, ml_figures, per_batch, rss, flight) = result?;

    let mut section = Section::new(
        "online",
        "Online decisions: one event per request over V2 REST and gRPC, roo beside MLServer",
    );
    section.note(format!(
        "The bundled fraud model (XGBoost, 40 trees, depth 5); each request one event as a [1, 30] FP32 tensor. \
         The server on CPU 0 alone, the load generator (Rust: hyper HTTP/1.1 keep-alive, tonic gRPC) on the other {} core(s); \
         saturation = {CONCURRENCY} connections or calls back to back; 50% of peak = open loop at half that rate, latency from each request's due time \
         (coordinated omission corrected). CPU per request is the server's process tree (utime + stime). \
         MLServer 1.7.1, mlserver-xgboost, parallel_workers = 0 (one worker).",
        client_cpus.len().max(1)
    ));
    say!(
        "# online: one event per request, the server on one core, {CONCURRENCY} clients; {seconds} s per figure\n{:<34} {:>10} {:>14} {:>10} {:>10}",
        "", "req/s", "server µs/req", "p50 ms", "p99 ms"
    );
    for (system, figures) in [("roo", &roo_figures), ("MLServer", &ml_figures)] {
        for (what, f) in figures.iter() {
            let (p50, p99) = f.latency.as_ref().map_or((f64::NAN, f64::NAN), |h| {
                (
                    h.value_at_quantile(0.5) as f64 / 1e3,
                    h.value_at_quantile(0.99) as f64 / 1e3,
                )
            });
            say!(
                "{:<34} {:>10.0} {:>14.1} {:>10.2} {:>10.2}",
                format!("{system}, {what}"),
                f.requests as f64 / f.seconds,
                f.cpu_s * 1e6 / f.requests.max(1) as f64,
                p50,
                p99,
            );
        }
    }
    for ((what, r), (_, m)) in roo_figures.iter().zip(ml_figures.iter()) {
        let roo_name = format!("roo, {what}");
        let roo_m = measurement("roo", what, r, None).rss(rss);
        section.push(roo_m);
        section.push(measurement("MLServer", what, m, Some(&roo_name)));
        if what.contains("saturation") {
            let ratio = (m.cpu_s / m.requests.max(1) as f64) / (r.cpu_s / r.requests.max(1) as f64);
            say!(
                "{what}: MLServer spends {ratio:.0}x roo's server CPU per request (target ≥ 50x); roo {:.1} µs (target ≤ 15)",
                r.cpu_s * 1e6 / r.requests.max(1) as f64
            );
            section.note(format!(
                "{what}: roo {:.1} µs of server CPU per request, MLServer {:.0} µs: {ratio:.0}x.",
                r.cpu_s * 1e6 / r.requests.max(1) as f64,
                m.cpu_s * 1e6 / m.requests.max(1) as f64
            ));
        }
    }
    for (what, f) in &flight {
        say!(
            "roo, {what}: {:.0} rows/s, {:.1} µs of server CPU per row",
            f.requests as f64 / f.seconds,
            f.cpu_s * 1e6 / f.requests.max(1) as f64
        );
        section.push(measurement("roo", what, f, None).rss(rss));
    }
    say!("roo coalesced {per_batch:.1} requests per batch on average");
    section.note(format!(
        "roo coalesced {per_batch:.1} requests per batch on average (linger_us = 0: what waits while a batch runs joins the next; max_rows = 1024)."
    ));
    section.detail = crate::report::take_lines();
    Ok(section)
}
