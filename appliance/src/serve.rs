//! `roo serve`: runs the config's pipelines until SIGTERM/SIGINT (or, with
//! no Flight endpoint, until every source has ended), reloads models on
//! SIGHUP, serves `/metrics`, `/healthz` and Arrow Flight, and keeps a
//! status line on a terminal.

use std::io::{IsTerminal, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use roo_scheduler::metrics::process_cpu_ns;
use roo_scheduler::{check_spec, Pipeline};

use crate::config;
use crate::flight::FlightServer;

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

/// Validates the config: parses it, loads every model, binds it to its
/// source's columns, and checks the sinks' settings. Starts nothing.
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
    for spec in config.specs(base)? {
        let version = check_spec(&spec)?;
        println!(
            "pipeline {}: ok (model {} {version})",
            spec.name,
            spec.model.display()
        );
    }
    Ok(())
}

fn render_metrics(pipelines: &[Pipeline], started: Instant) -> String {
    let mut out = String::new();
    for p in pipelines {
        p.metrics().render(p.name(), &mut out);
    }
    let cpu = process_cpu_ns();
    let events: u64 = pipelines
        .iter()
        .map(|p| p.metrics().events_out.load(Ordering::Relaxed))
        .sum();
    out.push_str(&format!(
        "# HELP roo_process_cpu_seconds_total CPU time of the roo process\n# TYPE roo_process_cpu_seconds_total counter\nroo_process_cpu_seconds_total {:.6}\n\
         # HELP roo_cpu_ns_per_event process CPU time over events scored, since start\n# TYPE roo_cpu_ns_per_event gauge\nroo_cpu_ns_per_event {:.1}\n\
         # TYPE roo_uptime_seconds gauge\nroo_uptime_seconds {:.3}\n",
        cpu as f64 / 1e9,
        cpu as f64 / events.max(1) as f64,
        started.elapsed().as_secs_f64()
    ));
    out
}

/// A minimal HTTP/1.1 responder for `/metrics` and `/healthz`, one request
/// per connection, requests bounded at 8 KiB and 2 s.
fn serve_http(
    listener: TcpListener,
    pipelines: Arc<Mutex<Vec<Pipeline>>>,
    started: Instant,
    stop: Arc<AtomicBool>,
) {
    let _ = listener.set_nonblocking(true);
    while !stop.load(Ordering::Acquire) {
        let (mut stream, _) = match listener.accept() {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            Err(_) => continue,
        };
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        while request.len() < 8192 && !request.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => request.extend_from_slice(&buf[..n]),
            }
        }
        let line = String::from_utf8_lossy(&request);
        let path = line.split_whitespace().nth(1).unwrap_or("");
        let (status, body) = match path {
            "/metrics" => (
                "200 OK",
                render_metrics(&pipelines.lock().expect("not poisoned"), started),
            ),
            "/healthz" => ("200 OK", "ok\n".to_string()),
            _ => (
                "404 Not Found",
                "not found; try /metrics or /healthz\n".to_string(),
            ),
        };
        let _ = write!(
            stream,
            "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    }
}

/// `roo serve --config PATH`.
pub fn serve(path: &Path) -> Result<()> {
    let signals = signals()?;
    let config = config::read(path)?;
    let base = path.parent().unwrap_or(Path::new("."));
    let specs = config.specs(base)?;
    let flight_settings = config.flight(base)?;
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
            Ok(p) => running.push(p),
            Err(e) => {
                for p in &running {
                    p.stop();
                }
                for p in running {
                    let _ = p.join();
                }
                return Err(e.into());
            }
        }
    }
    let pipelines = Arc::new(Mutex::new(running));
    let flight = match flight_settings {
        Some(settings) => match FlightServer::start(settings, pipelines.clone(), pool.clone()) {
            Ok(f) => Some(f),
            Err(e) => {
                let running = std::mem::take(&mut *pipelines.lock().expect("not poisoned"));
                for p in &running {
                    p.stop();
                }
                for p in running {
                    let _ = p.join();
                }
                return Err(e);
            }
        },
        None => None,
    };
    let stop_threads = Arc::new(AtomicBool::new(false));
    if let Some(addr) = &config.server.metrics {
        let listener =
            TcpListener::bind(addr).with_context(|| format!("metrics address {addr}"))?;
        tracing::info!("metrics on http://{}/metrics", listener.local_addr()?);
        let (p, s) = (pipelines.clone(), stop_threads.clone());
        std::thread::Builder::new()
            .name("roo-http".into())
            .spawn(move || serve_http(listener, p, started, s))?;
    }
    let status_line = std::io::stderr().is_terminal();
    let mut last = (Instant::now(), 0u64, process_cpu_ns());
    let mut stop_signal = None;
    loop {
        match signals.recv_timeout(Duration::from_millis(100)) {
            Ok(Signal::Reload) => {
                for p in pipelines.lock().expect("not poisoned").iter() {
                    match p.reload() {
                        Ok(version) => {
                            tracing::info!("pipeline {}: now scoring with {version}", p.name())
                        }
                        Err(e) => tracing::error!("{e}; the previous model keeps scoring"),
                    }
                }
            }
            Ok(Signal::Stop(signal)) => {
                stop_signal = Some(signal);
                break;
            }
            Err(_) => {}
        }
        let guard = pipelines.lock().expect("not poisoned");
        if let Some(p) = guard.iter().find(|p| p.failed()) {
            // A daemon with a broken pipeline is not healthy: drain the
            // others and exit non-zero, for the supervisor to see.
            tracing::error!("pipeline {} failed; stopping every pipeline", p.name());
            break;
        }
        // A Flight endpoint is a server: it runs until told to stop.
        if flight.is_none() && guard.iter().all(Pipeline::finished) {
            tracing::info!("every pipeline has stopped (its source ended, or it failed)");
            break;
        }
        if status_line && last.0.elapsed() >= Duration::from_secs(1) {
            let out: u64 = guard
                .iter()
                .map(|p| p.metrics().events_out.load(Ordering::Relaxed))
                .sum();
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
    let running = std::mem::take(&mut *pipelines.lock().expect("not poisoned"));
    for p in &running {
        p.stop();
    }
    if let Some(f) = flight {
        // Pushes into stopping pipelines are refused; exchanges and reads
        // in progress get a few seconds to finish.
        f.stop(Duration::from_secs(5));
    }
    let mut failed = None;
    for p in running {
        let name = p.name().to_string();
        match p.join() {
            Ok(c) => eprintln!(
                "roo: pipeline {name}: {} events in, {} scored, {} dead letters, {} batches ({} on the GPU, {} retried on the CPU after a GPU error)",
                c.events_in, c.events_out, c.events_dead, c.batches, c.batches_gpu, c.batches_cpu_retried
            ),
            Err(e) => {
                eprintln!("roo: {e}");
                failed = Some(e);
            }
        }
    }
    stop_threads.store(true, Ordering::Release);
    match failed {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}
