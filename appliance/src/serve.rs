//! `roo serve`: runs the config's pipelines until SIGTERM/SIGINT (or, with
//! no Flight endpoint, until every source has ended), reloads models on
//! SIGHUP, serves `/metrics`, `/healthz` and Arrow Flight, and keeps a
//! status line on a terminal.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use roo_scheduler::metrics::process_cpu_ns;
use roo_scheduler::{check_spec, Pipeline};

use crate::config;
use crate::flight::FlightServer;
use crate::http::HttpServer;
use crate::online::OnlineServer;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Signal {
    Stop(i32),
    Reload,
}

/// Blocks SIGTERM, SIGINT and SIGHUP in this thread (and every thread it
/// spawns after), and waits for them on a thread of their own.
fn signals() -> Result<crossbeam_channel::Receiver<Signal>> {
    // SAFETY: sigset manipulation on a local set; pthread_sigmask on the
    // calling thread before any other thread exists.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            bail!(
                "blocking signals: {}",
                std::io::Error::from_raw_os_error(rc)
            );
        }
        set
    };
    let (tx, rx) = crossbeam_channel::bounded(16);
    std::thread::Builder::new()
        .name("roo-signals".into())
        .spawn(move || loop {
            let mut signal = 0;
            // SAFETY: sigwait on a set of blocked signals, writing one int.
            if unsafe { libc::sigwait(&set, &mut signal) } != 0 {
                continue;
            }
            let event = if signal == libc::SIGHUP {
                Signal::Reload
            } else {
                Signal::Stop(signal)
            };
            if tx.send(event).is_err() {
                return;
            }
        })?;
    Ok(rx)
}

/// Validates the config: parses it, loads every model, binds it to the
/// schema it will see, and checks the sinks' settings. Starts nothing.
pub fn check_config(path: &Path) -> Result<()> {
    let config = config::read(path)?;
    let base = path.parent().unwrap_or(Path::new("."));
    if let Some(f) = config.flight(base)? {
        println!(
            "flight: ok ({}, {} tokens{})",
            f.listen,
            f.tokens.len(),
            if f.tls.is_some() { ", TLS" } else { "" }
        );
    }
    if let Some(o) = config.online(base)? {
        let addr = |a: Option<std::net::SocketAddr>| a.map_or("off".to_string(), |a| a.to_string());
        println!(
            "online: ok (REST {}, gRPC {}, {} tokens)",
            addr(o.http),
            addr(o.grpc),
            o.tokens.len()
        );
    }
    for spec in config.specs(base)? {
        let report = check_spec(&spec)?;
        let model = match (&spec.model, &report.model_version) {
            (Some(path), Some(v)) => format!("model {} {v}", path.display()),
            _ => "no model".to_string(),
        };
        let shadows: String = report
            .shadows
            .iter()
            .map(|(name, v)| format!(", shadow {name} {v}"))
            .collect();
        let tables: String = report
            .tables
            .iter()
            .map(|(name, v, rows, keys)| format!(", table {name} {v} ({rows} rows, {keys} keys)"))
            .collect();
        let aggregate: String = spec
            .aggregate
            .iter()
            .map(|a| {
                format!(
                    ", aggregate {} ({} by {}, window {} s every {} s, top {})",
                    a.name,
                    a.agg,
                    a.key.join(", "),
                    a.window_us as f64 / 1e6,
                    a.every_us as f64 / 1e6,
                    a.top
                )
            })
            .collect();
        let audit = spec.audit.as_ref().map_or(String::new(), |a| {
            format!(
                ", audit {} (id {}, {} days, {:.1} GB)",
                a.dir.display(),
                a.id.as_deref().unwrap_or("SOURCE#N"),
                a.retain_days,
                a.max_bytes as f64 / 1e9
            )
        });
        println!(
            "pipeline {}: ok ({model}{shadows}{tables}{aggregate}{audit})",
            spec.name
        );
    }
    Ok(())
}

/// The running pipelines, shared with the Flight and HTTP endpoints: the
/// lock is held only to find or list them, never across a model load.
pub type Pipelines = Arc<Mutex<Vec<Arc<Pipeline>>>>;

/// The pipelines as they are now (the lock released).
pub fn list(pipelines: &Pipelines) -> Vec<Arc<Pipeline>> {
    pipelines.lock().expect("not poisoned").clone()
}

fn stop_all(running: &[Arc<Pipeline>]) {
    for p in running {
        p.stop();
    }
    for p in running {
        let _ = p.join();
    }
}

/// What `--ready-file` holds once the daemon is up.
#[derive(serde::Serialize)]
struct Ready {
    pid: u32,
    /// `host:port` of `/metrics` and `/healthz`.
    metrics: Option<String>,
    /// `host:port` of the Arrow Flight endpoint.
    flight: Option<String>,
    /// `host:port` of the online V2 REST and gRPC endpoints.
    online_http: Option<String>,
    online_grpc: Option<String>,
    pipelines: Vec<ReadyPipeline>,
}

#[derive(serde::Serialize)]
struct ReadyPipeline {
    name: String,
    /// A TCP source's bound address.
    tcp: Option<String>,
    model_version: Option<String>,
}

/// Writes the ready file whole or not at all.
fn write_ready(path: &Path, ready: &Ready) -> Result<()> {
    let partial = path.with_extension("partial");
    std::fs::write(&partial, serde_json::to_vec_pretty(ready)?)
        .and_then(|()| std::fs::rename(&partial, path))
        .with_context(|| format!("writing the ready file {}", path.display()))
}

/// `roo serve --config PATH [--ready-file PATH]`.
pub fn serve(path: &Path, ready_file: Option<&Path>) -> Result<()> {
    let signals = signals()?;
    let config = config::read(path)?;
    let base = path.parent().unwrap_or(Path::new("."));
    let specs = config.specs(base)?;
    let flight_settings = config.flight(base)?;
    let online_settings = config.online(base)?;
    let pool = Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(config.server.threads.0 as usize)
            .thread_name(|i| format!("roo-score-{i}"))
            .build()
            .context("starting the scoring threads")?,
    );
    let started = Instant::now();
    let mut running = Vec::new();
    for spec in specs {
        match Pipeline::start(spec, pool.clone()) {
            Ok(p) => running.push(Arc::new(p)),
            Err(e) => {
                stop_all(&running);
                return Err(e.into());
            }
        }
    }
    let pipelines: Pipelines = Arc::new(Mutex::new(running));
    let flight = match flight_settings {
        Some(settings) => match FlightServer::start(settings, pipelines.clone(), pool.clone()) {
            Ok(f) => Some(f),
            Err(e) => {
                stop_all(&list(&pipelines));
                return Err(e);
            }
        },
        None => None,
    };
    let online = match online_settings {
        Some(settings) => match OnlineServer::start(settings, pipelines.clone()) {
            Ok(o) => Some(o),
            Err(e) => {
                if let Some(f) = flight {
                    f.stop(Duration::from_secs(1));
                }
                stop_all(&list(&pipelines));
                return Err(e);
            }
        },
        None => None,
    };
    let draining = Arc::new(AtomicBool::new(false));
    let http = match &config.server.metrics_listen() {
        Some(addr) => match HttpServer::start(addr, pipelines.clone(), started, draining.clone()) {
            Ok(h) => Some(h),
            Err(e) => {
                if let Some(f) = flight {
                    f.stop(Duration::from_secs(1));
                }
                if let Some(o) = online {
                    o.stop();
                }
                stop_all(&list(&pipelines));
                return Err(e);
            }
        },
        None => None,
    };
    if let Some(ready_file) = ready_file {
        write_ready(
            ready_file,
            &Ready {
                pid: std::process::id(),
                metrics: http.as_ref().map(|h| h.local_addr().to_string()),
                flight: flight.as_ref().map(|f| f.local_addr().to_string()),
                online_http: online.as_ref().and_then(|o| o.http).map(|a| a.to_string()),
                online_grpc: online.as_ref().and_then(|o| o.grpc).map(|a| a.to_string()),
                pipelines: list(&pipelines)
                    .iter()
                    .map(|p| ReadyPipeline {
                        name: p.name().to_string(),
                        tcp: p.tcp_addr().map(|a| a.to_string()),
                        model_version: p.model_version(),
                    })
                    .collect(),
            },
        )?;
    }
    let status_line = std::io::stderr().is_terminal();
    let mut last = (Instant::now(), 0u64, process_cpu_ns());
    let mut stop_signal = None;
    loop {
        match signals.recv_timeout(Duration::from_millis(100)) {
            Ok(Signal::Reload) => {
                // Models load and compile with the list unlocked: /metrics
                // and Flight carry on meanwhile.
                for p in list(&pipelines) {
                    match p.reload() {
                        Ok(Some(version)) => {
                            tracing::info!("pipeline {}: now scoring with {version}", p.name())
                        }
                        Ok(None) => {}
                        Err(e) => tracing::error!("{}", roo_scheduler::error::chain(&e)),
                    }
                    for (table, result) in p.reload_tables(None).unwrap_or_default() {
                        match result {
                            Ok(version) => {
                                tracing::info!("pipeline {}: table {table} now {version}", p.name())
                            }
                            Err(e) => tracing::error!(
                                "pipeline {}: table {table} refused, the snapshot before kept: {}",
                                p.name(),
                                roo_scheduler::error::chain(&e)
                            ),
                        }
                    }
                }
            }
            Ok(Signal::Stop(signal)) => {
                stop_signal = Some(signal);
                break;
            }
            Err(_) => {}
        }
        let guard = list(&pipelines);
        if let Some(p) = guard.iter().find(|p| p.failed()) {
            // A daemon with a broken pipeline is not healthy: drain the
            // others and exit non-zero, for the supervisor to see.
            tracing::error!("pipeline {} failed; stopping every pipeline", p.name());
            break;
        }
        // A Flight or online endpoint is a server: it runs until told to stop.
        if flight.is_none() && online.is_none() && guard.iter().all(|p| p.finished()) {
            tracing::info!("every pipeline has stopped (its source ended, or it failed)");
            break;
        }
        if status_line && last.0.elapsed() >= Duration::from_secs(1) {
            let out: u64 = guard.iter().map(|p| p.snapshot().events_out).sum();
            let cpu = process_cpu_ns();
            let secs = last.0.elapsed().as_secs_f64();
            let p99 = guard
                .iter()
                .map(|p| p.metrics().take_recent_p99_us())
                .max()
                .unwrap_or(0);
            let rate = (out - last.1) as f64 / secs;
            let ns = (cpu - last.2) as f64 / (out - last.1).max(1) as f64;
            eprint!("\rroo: {rate:>10.0} events/s  p99 {:>7.2} ms  {ns:>7.0} CPU-ns/event  {out} scored   ", p99 as f64 / 1e3);
            last = (Instant::now(), out, cpu);
        }
    }
    draining.store(true, Ordering::Release);
    if status_line {
        eprintln!();
    }
    if let Some(signal) = stop_signal {
        tracing::info!("signal {signal}: stopping sources, draining every queue (a second signal exits at once)");
    }
    // A drain can wait on a sink that never frees (a stdout nobody reads):
    // a second SIGTERM/SIGINT gives up on it.
    std::thread::Builder::new().name("roo-signals-2".into()).spawn(move || {
        while let Ok(signal) = signals.recv() {
            if let Signal::Stop(signal) = signal {
                eprintln!("roo: signal {signal} again: exiting without draining; unacknowledged events are not in the sinks");
                std::process::exit(130);
            }
        }
    })?;
    let running = list(&pipelines);
    for p in &running {
        p.stop();
    }
    if let Some(f) = flight {
        // Pushes into stopping pipelines are refused; exchanges and reads
        // in progress get a few seconds to finish.
        f.stop(Duration::from_secs(5));
    }

    let mut failed = None;
    for p in &running {
        let name = p.name().to_string();
        match p.join() {
            Ok(c) if c.events_aggregated > 0 => eprintln!(
                "roo: pipeline {name}: {} events in, {} aggregated, {} dead letters, {} batches",
                c.events_in, c.events_aggregated, c.events_dead, c.batches
            ),
            Ok(c) => eprintln!(
                "roo: pipeline {name}: {} events in, {} scored, {} dead letters, {} batches ({} on the GPU, {} retried on the CPU after a GPU error)",
                c.events_in, c.events_out, c.events_dead, c.batches, c.batches_gpu, c.batches_cpu_retried
            ),
            Err(e) => {
                eprintln!("roo: {}", roo_scheduler::error::chain(&e));
                failed = Some(e);
            }
        }
    }
    if let Some(o) = online {
        // Requests in the pipelines were answered as they drained; new
        // ones got 503 (the pipelines were stopping) until now.
        o.stop();
    }
    if let Some(h) = http {
        h.stop();
    }
    match failed {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}
