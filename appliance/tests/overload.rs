//! Overload over TCP: a sender offering twice what the pipeline sustains
//! is pushed back (TCP flow control), the daemon's memory stays under
//! `memory_mb` plus a fixed overhead, nothing is dropped, and afterwards
//! the latency a sender sees (from sending a record to its durable ack)
//! comes back to what it was before the burst.
//!
//! Phases on one daemon (`memory_mb = 32`, checkpoints every 0.1 s, TCP
//! `acks`): flat out for 3 s (an estimate S of the sustainable rate), a
//! quarter of S for 3 s (the baseline latency), 2.5·S for
//! `ROO_OVERLOAD_SECS` (default 15; the issue's minute: 60), a quarter of S
//! again for 3 s (the recovery). The rate the pipeline sustained during the
//! burst (records / (burst + drain)) is printed beside the rate offered.
//! RSS is sampled every 50 ms. Latencies are printed, never asserted.

mod common;

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{rss_kib, Daemon};

/// RSS allowed beyond `memory_mb`: the binary, thread stacks, the TCP
/// receive ring (256 × 64 KiB), the parse pool's pieces (16 MiB), the
/// Parquet writer's open row group, the allocator's slack.
const OVERHEAD_MIB: u64 = 160;
const MEMORY_MB: u64 = 32;

fn config(dir: &Path) -> std::path::PathBuf {
    std::fs::write(
        dir.join("model.json"),
        r#"{"kind": "logistic", "features": ["x", "y"], "weights": [0.5, -0.25], "bias": 0.1}"#,
    )
    .unwrap();
    let text = format!(
        r#"[server]
memory_mb = {MEMORY_MB}
threads = 2
metrics = "127.0.0.1:0"
state_dir = "state"
checkpoint_secs = 0.1

[[pipeline]]
name = "o"
model = "model.json"
event_time = "sent_us"

[pipeline.source]
kind = "tcp"
listen = "127.0.0.1:0"
format = "csv"
columns = ["id:int64", "sent_us:int64", "x", "y"]
acks = true

[[pipeline.sink]]
kind = "files"
dir = "out"
format = "parquet"
rotate_mb = 8
"#
    );
    let path = dir.join("roo.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// Chunks sent and not yet acknowledged: (records through it, when sent).
type InFlight = Arc<Mutex<VecDeque<(u64, Instant)>>>;

/// One sender: records paced at a rate (or flat out) for a while; acks
/// read on a thread, each chunk's latency from its send to the ack that
/// covers it.
struct Sender {
    stream: TcpStream,
    sent: u64,
    in_flight: InFlight,
    latencies_ms: Arc<Mutex<Vec<f64>>>,
    acked: Arc<AtomicU64>,
}

impl Sender {
    fn connect(addr: &str) -> Self {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.write_all(b"id,sent_us,x,y\n").unwrap();
        let in_flight: InFlight = Arc::default();
        let latencies_ms: Arc<Mutex<Vec<f64>>> = Arc::default();
        let acked = Arc::new(AtomicU64::new(0));
        let reader = BufReader::new(stream.try_clone().unwrap());
        let (f, l, a) = (in_flight.clone(), latencies_ms.clone(), acked.clone());
        std::thread::spawn(move || {
            for line in reader.lines().map_while(Result::ok) {
                let n: u64 = line.strip_prefix("ack ").unwrap().parse().unwrap();
                a.store(n, Ordering::Release);
                let now = Instant::now();
                let mut f = f.lock().unwrap();
                while f.front().is_some_and(|(through, _)| *through <= n) {
                    let (_, sent) = f.pop_front().unwrap();
                    l.lock().unwrap().push((now - sent).as_secs_f64() * 1e3);
                }
            }
        });
        Self {
            stream,
            sent: 0,
            in_flight,
            latencies_ms,
            acked,
        }
    }

    /// Sends for `seconds` at `rate` records/s (none: flat out), in chunks
    /// of about 1 ms of the rate; returns (records sent, records the
    /// schedule asked for).
    fn run(&mut self, rate: Option<f64>, seconds: f64) -> (u64, u64) {
        self.latencies_ms.lock().unwrap().clear();
        let started = Instant::now();
        let chunk = rate.map_or(1000, |r| ((r / 1000.0) as u64).max(1));
        let first = self.sent;
        let mut text = String::new();
        loop {
            let elapsed = started.elapsed().as_secs_f64();
            if elapsed >= seconds {
                break;
            }
            if let Some(r) = rate {
                let due = ((self.sent - first) as f64 / r).min(seconds);
                if due > elapsed {
                    std::thread::sleep(Duration::from_secs_f64(due - elapsed));
                }
            }
            text.clear();
            let t = now_us();
            for i in self.sent..self.sent + chunk {
                text.push_str(&format!("{i},{t},{}.5,{}\n", i % 97, i % 13));
            }
            self.stream.write_all(text.as_bytes()).unwrap();
            self.sent += chunk;
            self.in_flight
                .lock()
                .unwrap()
                .push_back((self.sent, Instant::now()));
        }
        let scheduled = rate.map_or(self.sent - first, |r| (r * seconds) as u64);
        (self.sent - first, scheduled)
    }

    /// Waits until every record sent is acknowledged (durable).
    fn drain(&self) -> f64 {
        let started = Instant::now();
        while self.acked.load(Ordering::Acquire) < self.sent {
            assert!(started.elapsed() < Duration::from_secs(120), "not drained");
            std::thread::sleep(Duration::from_millis(5));
        }
        started.elapsed().as_secs_f64()
    }

    /// p50 and p99 of the chunk latencies of the last run, in ms.
    fn latency(&self) -> (f64, f64) {
        let mut l = self.latencies_ms.lock().unwrap().clone();
        l.sort_by(f64::total_cmp);
        let q = |p: f64| {
            l.get(((l.len() as f64 * p) as usize).min(l.len().saturating_sub(1)))
                .copied()
                .unwrap_or(0.0)
        };
        (q(0.5), q(0.99))
    }
}

#[test]
fn twice_the_sustainable_rate_is_pushed_back_with_memory_bounded_and_nothing_lost() {
    let seconds: f64 = std::env::var("ROO_OVERLOAD_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15.0);
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(&config(dir.path()), Stdio::null());
    let ready = daemon.ready();
    let pid = daemon.child.id();
    let peak_kib = Arc::new(AtomicU64::new(0));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, on) = (peak_kib.clone(), sampling.clone());
        std::thread::spawn(move || {
            while on.load(Ordering::Acquire) {
                peak.fetch_max(rss_kib(pid), Ordering::AcqRel);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let mut sender = Sender::connect(&ready.tcp["o"]);

    // The sustainable rate: flat out, then drained.
    let started = Instant::now();
    let (flat, _) = sender.run(None, 3.0);
    sender.drain();
    let sustainable = flat as f64 / started.elapsed().as_secs_f64();

    let (quarter, _) = sender.run(Some(sustainable / 4.0), 3.0);
    sender.drain();
    let (base_p50, base_p99) = sender.latency();

    let before_kib = peak_kib.load(Ordering::Acquire);
    let offered = sustainable * 2.5;
    let (sent, scheduled) = sender.run(Some(offered), seconds);
    let drain_s = sender.drain();
    let (burst_p50, burst_p99) = sender.latency();
    let overload_peak_kib = peak_kib.load(Ordering::Acquire);

    let (after, _) = sender.run(Some(sustainable / 4.0), 3.0);
    sender.drain();
    let (after_p50, after_p99) = sender.latency();

    let total = sender.sent;
    assert_eq!(total, flat + quarter + sent + after);
    let out = daemon.metric("roo_events_out_total") as u64;
    let events_in = daemon.metric("roo_events_in_total") as u64;
    sampling.store(false, Ordering::Release);
    sampler.join().unwrap();
    drop(sender);
    daemon.signal(libc::SIGTERM);
    let (code, lines) = daemon.finish();
    assert_eq!(code, Some(0), "{}", lines.join("\n"));

    let peak_mib = peak_kib.load(Ordering::Acquire) / 1024;
    eprintln!(
        "overload: {offered:.0} records/s offered for {seconds} s, {:.0}/s sustained ({:.1}x): {sent} of {scheduled} scheduled \
         records sent (the rest pushed back), drained {drain_s:.2} s after; peak RSS {} MiB before the burst, {} MiB during \
         (memory_mb {MEMORY_MB} + {OVERHEAD_MIB} MiB overhead allowed); send-to-durable-ack latency p50/p99: \
         {base_p50:.0}/{base_p99:.0} ms before, {burst_p50:.0}/{burst_p99:.0} ms during, {after_p50:.0}/{after_p99:.0} ms after; \
         {total} records, {events_in} in, {out} out",
        sent as f64 / (seconds + drain_s),
        offered / (sent as f64 / (seconds + drain_s)),
        before_kib / 1024,
        overload_peak_kib / 1024,
    );
    // Nothing dropped: every record sent is in and out, acknowledged.
    assert_eq!(events_in, total);
    assert_eq!(out, total);
    assert!(
        peak_mib <= MEMORY_MB + OVERHEAD_MIB,
        "peak RSS {peak_mib} MiB over {MEMORY_MB} + {OVERHEAD_MIB}"
    );
}
