//! The TCP half of `roo-bench chaos`: a sender that names its stream
//! (`acks = true`) against a daemon SIGKILLed at random moments. On each
//! reconnection it is told the stream's records in the last checkpoint
//! and sends from there; at the end the rows (features included) and dead
//! letters must equal an uninterrupted run's, none twice, none missing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};

const HEADER: &str = "txn_id,card_id,ts,amount\n";
const STREAM: &str = "bench-sender";

/// Card transactions in time order; every 997th has a bad amount (a dead
/// letter).
fn records(n: usize) -> Vec<String> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut clock: i64 = 1_790_000_000_000_000;
    (0..n)
        .map(|i| {
            clock += (next() % 200_000) as i64;
            let card = next() % 100_000;
            let amount = if i % 997 == 996 {
                "x".to_string()
            } else {
                format!("{}.{:02}", next() % 900, next() % 100)
            };
            format!("{i},{card},{clock},{amount}\n")
        })
        .collect()
}

fn config(dir: &Path, port: u16) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let text = format!(
        r#"[server]
threads = 2
state_dir = {state:?}
checkpoint_secs = 0.05

[[pipeline]]
name = "cards"
event_time = "ts"
lateness = "1h"
max_rows = 4096
linger_ms = 5

[pipeline.source]
kind = "tcp"
listen = "127.0.0.1:{port}"
format = "csv"
columns = ["txn_id:int64", "card_id:int64", "ts:int64", "amount"]
acks = true

[[pipeline.feature]]
name = "n_1h"
key = "card_id"
agg = "count"
window = "1h"

[[pipeline.feature]]
name = "spend_1h"
key = "card_id"
agg = "sum"
column = "amount"
window = "1h"

[[pipeline.sink]]
kind = "files"
dir = {rows:?}
format = "parquet"
rotate_mb = 16

[pipeline.dead_letters]
dir = {dead:?}
"#,
        state = dir.join("state"),
        rows = dir.join("rows"),
        dead = dir.join("dead"),
    );
    let path = dir.join("roo.toml");
    std::fs::write(&path, text)?;
    Ok(path)
}

/// The sender: the protocol's reference sender on one named stream;
/// returns, once the last ack counts every record, the connections it took
/// and the records it sent in all.
fn send_resuming(port: u16, lines: &[String], done: &AtomicBool) -> Result<(usize, u64)> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut sender = roo_ingest::ResumingSender::new(addr, STREAM, HEADER.as_bytes());
    sender.send_all(lines, Duration::from_secs(300))?;
    done.store(true, Ordering::Release);
    Ok((sender.connections(), sender.sent()))
}

/// Starts `roo serve` (its log in `roo.log` beside the config, each start
/// the file anew) and waits for its ready file.
fn start(roo: &Path, config: &Path) -> Result<Child> {
    let ready = config.with_extension("ready.json");
    let log = config.with_extension("log");
    let _ = std::fs::remove_file(&ready);
    let mut child = Command::new(roo)
        .args(["serve", "--config"])
        .arg(config)
        .arg("--ready-file")
        .arg(&ready)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !ready.exists() {
        if let Some(status) = child.try_wait()? {
            bail!(
                "roo serve --config {} exited: {status}: {}",
                config.display(),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        ensure!(Instant::now() < deadline, "roo serve not ready in 120 s");
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(child)
}

/// One run: the sender on its thread, the daemon SIGKILLed `kills` times
/// at random moments and started again, then stopped (SIGTERM) once the
/// sender has its last ack. Returns (kills, connections, records sent).
fn run_once(
    roo: &Path,
    config: &Path,
    port: u16,
    lines: &Arc<Vec<String>>,
    kills: usize,
) -> Result<(usize, usize, u64)> {
    let done = Arc::new(AtomicBool::new(false));
    let sender = {
        let (lines, done) = (lines.clone(), done.clone());
        std::thread::spawn(move || send_resuming(port, &lines, &done))
    };
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut random = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut killed = 0;
    loop {
        let mut child = start(roo, config)?;
        if killed < kills {
            // A random moment: mid-batch, mid-checkpoint, mid-ack.
            std::thread::sleep(Duration::from_millis(random() % 150));
        }
        if killed == kills || done.load(Ordering::Acquire) {
            let (connections, sent) = sender
                .join()
                .map_err(|_| anyhow::anyhow!("the TCP sender panicked"))??;
            // SAFETY: signals a child we started and have not waited for.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let status = child.wait()?;
            ensure!(status.success(), "roo serve: {status}");
            return Ok((killed, connections, sent));
        }
        // SAFETY: as above.
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        child.wait()?;
        killed += 1;
    }
}

/// Dead letters by their record's text (their offsets are per connection).
fn dead_letters(dir: &Path) -> Result<HashMap<String, u32>> {
    let mut out = HashMap::new();
    for e in std::fs::read_dir(dir)? {
        for line in std::fs::read_to_string(e?.path())?.lines() {
            let v: serde_json::Value = serde_json::from_str(line)?;
            *out.entry(v["raw"].as_str().unwrap_or_default().to_string())
                .or_insert(0) += 1;
        }
    }
    Ok(out)
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub(super) fn run(roo: &Path, events: usize, kills: usize, dir: &Path) -> Result<()> {
    crate::report::step("chaos: SIGKILL under a TCP sender with acks");
    let n = events.min(1_000_000);
    let lines = Arc::new(records(n));
    let reference = dir.join("tcp-uninterrupted");
    let port = free_port()?;
    let started = Instant::now();
    let (_, one, _) = run_once(roo, &config(&reference, port)?, port, &lines, 0)?;
    let uninterrupted = started.elapsed().as_secs_f64();
    ensure!(one == 1, "an uninterrupted run took {one} connections");
    let chaos = dir.join("tcp-killed");
    let port = free_port()?;
    let started = Instant::now();
    let (killed, connections, sent) = run_once(roo, &config(&chaos, port)?, port, &lines, kills)?;
    let took = started.elapsed().as_secs_f64();
    let want = super::rows(&reference.join("rows"))?;
    let got = super::rows(&chaos.join("rows"))?;
    let total: u64 = want.values().map(|n| *n as u64).sum();
    let duplicates: u64 = got
        .values()
        .filter(|n| **n > 1)
        .map(|n| *n as u64 - 1)
        .sum();
    let lost = want.keys().filter(|k| !got.contains_key(*k)).count();
    let differ = got.keys().filter(|k| !want.contains_key(*k)).count();
    let dead_want = dead_letters(&reference.join("dead"))?;
    let dead_got = dead_letters(&chaos.join("dead"))?;
    let dead_total: u32 = dead_want.values().sum();
    say!(
        "chaos: over TCP with acks, {n} records from one sender naming its stream (two per-card features, \
         Parquet, checkpointing every 0.05 s), {killed} SIGKILLs, {connections} connections, the sender resuming \
         each time from the count it is told ({} records sent again): {total} rows and {dead_total} dead letters \
         checked against an uninterrupted run: duplicates {duplicates}, lost {lost}, rows differing {differ}, \
         dead letters {} ({took:.1} s with restarts; {uninterrupted:.1} s uninterrupted)",
        sent.saturating_sub(n as u64),
        if dead_got == dead_want {
            "equal"
        } else {
            "DIFFER"
        }
    );
    ensure!(
        total + dead_total as u64 == n as u64,
        "the uninterrupted TCP run accounts for {total} rows and {dead_total} dead letters of {n} records"
    );
    ensure!(
        duplicates == 0 && lost == 0 && differ == 0 && dead_got == dead_want,
        "crash safety over TCP broke: {duplicates} duplicates, {lost} lost, {differ} rows differing"
    );
    Ok(())
}
