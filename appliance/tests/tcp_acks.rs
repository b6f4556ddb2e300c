//! TCP with `acks = true`: roo writes `ack <records>` back on each
//! connection as its records become durable, and a sender that names its
//! stream (`stream NAME`) is told on reconnecting how many of its records
//! the last checkpoint holds. A sender resuming from there after SIGKILLs
//! at random moments gets every record into the sinks exactly once, with
//! the features of an uninterrupted run.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::Daemon;

const HEADER: &str = "txn_id,card_id,ts,amount\n";

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
            clock += (next() % 1_000_000) as i64;
            let card = next() % 500;
            let amount = if i % 997 == 996 {
                "x".to_string()
            } else {
                format!("{}.{:02}", next() % 500, next() % 100)
            };
            format!("{i},{card},{clock},{amount}\n")
        })
        .collect()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn config(dir: &Path, name: &str, port: u16) -> PathBuf {
    let out = dir.join(name);
    let text = format!(
        r#"[server]
threads = 2
metrics = "127.0.0.1:0"
state_dir = {state:?}
checkpoint_secs = 0.2

[[pipeline]]
name = "cards"
event_time = "ts"
lateness = "1h"
max_rows = 512
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
rotate_mb = 1

[pipeline.dead_letters]
dir = {dead:?}
"#,
        state = out.join("state"),
        rows = out.join("rows"),
        dead = out.join("dead"),
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// Reads one `ack N` line.
fn read_ack(reader: &mut impl BufRead) -> Option<u64> {
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(n) if n > 0 => {
            let n = line.trim_end().strip_prefix("ack ")?;
            Some(n.parse().expect("an ack counts records"))
        }
        _ => None,
    }
}

/// The protocol's reference sender (`roo_ingest::ResumingSender`) on one
/// named stream; returns, once the last ack counts every record, the
/// connections it took.
fn send_resuming(port: u16, lines: &[String], done: &AtomicBool) -> usize {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut sender = roo_ingest::ResumingSender::new(addr, "sender-1", HEADER.as_bytes());
    sender
        .send_all(lines, Duration::from_secs(600))
        .unwrap_or_else(|e| panic!("{e}"));
    done.store(true, Ordering::Release);
    sender.connections()
}

/// The published rows of `dir`: a multiset.
fn rows(dir: &Path) -> BTreeMap<String, usize> {
    common::row_multiset(&common::read_published(dir), "txn_id")
}

/// Dead letters by their record's text (their offsets are per connection).
fn dead_letters(dir: &Path) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            *out.entry(v["raw"].as_str().unwrap().to_string())
                .or_insert(0) += 1;
        }
    }
    out
}

/// One run: the sender on its thread; the daemon killed `kills` times at
/// random points of the stream (after a random number of records) and
/// started again, then stopped with SIGTERM once the
/// sender has its last ack. Returns (kills, connections).
fn run(cfg: &Path, port: u16, lines: &Arc<Vec<String>>, kills: usize) -> (usize, usize) {
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
        let mut daemon = Daemon::start(cfg, Stdio::null());
        daemon.ready();
        if killed < kills {
            // Mid-stream, whatever the machine's speed: once this process
            // has taken a random share of the records (at most a share
            // that leaves records for every kill), or the sender is done.
            let from = daemon.metric("roo_events_in_total");
            let share = 1 + random() % (lines.len() / (kills + 2)) as u64;
            while !done.load(Ordering::Acquire)
                && daemon.metric("roo_events_in_total") < from + share as f64
            {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        if killed == kills || done.load(Ordering::Acquire) {
            let connections = sender.join().unwrap();
            daemon.signal(libc::SIGTERM);
            let (code, lines) = daemon.finish();
            assert_eq!(code, Some(0), "{}", lines.join("\n"));
            return (killed, connections);
        }
        daemon.signal(libc::SIGKILL);
        let (code, _) = daemon.finish();
        assert_eq!(code, None, "killed by a signal");
        killed += 1;
    }
}

#[test]
fn a_resuming_sender_gets_every_record_in_once_across_sigkills() {
    let events: usize = std::env::var("ROO_CHAOS_TCP_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(150_000);
    let kills: usize = std::env::var("ROO_CHAOS_TCP_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let dir = tempfile::tempdir().unwrap();
    let lines = Arc::new(records(events));

    let port = free_port();
    let reference = config(dir.path(), "reference", port);
    let (_, one) = run(&reference, port, &lines, 0);
    assert_eq!(one, 1, "an uninterrupted run takes one connection");

    let port = free_port();
    let chaos = config(dir.path(), "chaos", port);
    let (killed, connections) = run(&chaos, port, &lines, kills);

    let want = rows(&dir.path().join("reference/rows"));
    let got = rows(&dir.path().join("chaos/rows"));
    let total: usize = want.values().sum();
    let duplicates: usize = got.values().filter(|n| **n > 1).map(|n| n - 1).sum();
    let lost = want.keys().filter(|k| !got.contains_key(*k)).count();
    let dead_want = dead_letters(&dir.path().join("reference/dead"));
    let dead_got = dead_letters(&dir.path().join("chaos/dead"));
    eprintln!(
        "tcp chaos: {events} records, {killed} kills survived, {connections} connections, {total} rows, {} dead letters; duplicates {duplicates}, lost {lost}",
        dead_want.values().sum::<usize>()
    );
    assert_eq!(total + dead_want.values().sum::<usize>(), events);
    assert_eq!(dead_want.len(), events / 997);
    assert!(killed >= kills.min(2), "only {killed} kills");
    assert_eq!(duplicates, 0);
    assert_eq!(lost, 0);
    assert!(got == want, "the rows (features included) differ");
    assert_eq!(dead_got, dead_want);
}

#[test]
fn acks_count_a_connections_records_and_a_new_name_starts_at_zero() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = config(dir.path(), "plain", port);
    let lines = records(5000);
    let mut daemon = Daemon::start(&cfg, Stdio::null());
    daemon.ready();
    // Unnamed: acks count this connection's records; a last record
    // without a line end is a record (here a dead letter: 3 fields).
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    stream.write_all(HEADER.as_bytes()).unwrap();
    stream.write_all(lines[..3000].concat().as_bytes()).unwrap();
    stream.write_all(b"3000,1,17900").unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    let mut acks = Vec::new();
    while let Some(n) = read_ack(&mut reader) {
        acks.push(n);
    }
    assert_eq!(acks.last(), Some(&3001), "{acks:?}");
    assert!(acks.windows(2).all(|w| w[0] <= w[1]), "{acks:?}");

    // Named: a new name is told 0, then its count; the same name again is
    // told what it holds.
    for (start, end) in [(0usize, 2000usize), (2000, 5000)] {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        stream.write_all(b"stream s-2\n").unwrap();
        assert_eq!(read_ack(&mut reader), Some(start as u64));
        stream.write_all(HEADER.as_bytes()).unwrap();
        stream
            .write_all(lines[start..end].concat().as_bytes())
            .unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
        let mut last = 0;
        while let Some(n) = read_ack(&mut reader) {
            last = n;
        }
        assert_eq!(last, end as u64);
    }

    // A bad name closes the connection, and nothing is counted.
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    stream.write_all(b"stream has space\n").unwrap();
    let _ = stream.write_all(HEADER.as_bytes());
    assert_eq!(read_ack(&mut reader), None);

    daemon.signal(libc::SIGTERM);
    let (code, lines_out) = daemon.finish();
    assert_eq!(code, Some(0), "{}", lines_out.join("\n"));
    let got = rows(&dir.path().join("plain/rows"));
    let dead = dead_letters(&dir.path().join("plain/dead"));
    assert_eq!(
        got.values().sum::<usize>() + dead.values().sum::<usize>(),
        3001 + 5000
    );
}
