//! Kafka in and out against a real Kafka wire-protocol broker
//! (`roo-dev-broker`: librdkafka's mock cluster in its own process, spoken
//! to over TCP by roo's consumer and producer and by this test's own
//! clients).
//!
//! - One process reads a 3-partition topic (one CSV event per message,
//!   some undecodable), computes per-card features and writes Parquet
//!   files, a Kafka topic and dead letters. The brokers go down mid-stream
//!   and come back; nothing is lost. While the file sink holds its file
//!   open, no offset is committed (the group's committed offsets, asked of
//!   the broker by a separate client, stay unset); after SIGTERM every
//!   partition's committed offset is its end. Every event is in the files
//!   and the output topic exactly once, with the features of a plain
//!   reference computation; every bad message is a dead letter naming its
//!   partition and offset.
//! - Unreachable brokers: a clear error, retries counted by a metric, no
//!   silent hang; a missing topic or changelog: `roo serve` refuses to
//!   start, naming it.
//! - A range published but never cut or committed (SIGKILL) is rewritten,
//!   not duplicated, with the state restored from the changelog.
//! - A group of members sharing one directory, one joining and one
//!   SIGKILLed: every event once, with the features of one process.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use arrow_array::Array;
use common::Daemon;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

/// A `roo-dev-broker` process: a Kafka mock cluster on real sockets.
struct Broker {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    servers: String,
}

impl Broker {
    fn start(topics: &[(&str, i32)]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_roo-dev-broker"))
            .args(
                topics
                    .iter()
                    .flat_map(|(t, n)| ["--topic".to_string(), format!("{t}:{n}")]),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut servers = String::new();
        stdout.read_line(&mut servers).unwrap();
        let servers = servers.trim().to_string();
        assert!(servers.contains(':'), "the broker said {servers:?}");
        Self {
            child,
            stdin,
            stdout,
            servers,
        }
    }

    /// Sends a command; panics unless the broker answers `ok`.
    fn command(&mut self, command: &str) {
        writeln!(self.stdin, "{command}").unwrap();
        let mut answer = String::new();
        self.stdout.read_line(&mut answer).unwrap();
        assert_eq!(answer.trim(), "ok", "broker command {command:?}");
    }

    fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.servers);
        c
    }

    /// Produces `(key, payload)` messages to `topic`, keyed (so partitioned
    /// by key), and waits until the broker acknowledged every one.
    fn produce(&self, topic: &str, messages: &[(String, String)]) {
        let producer: BaseProducer = self
            .client()
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .create()
            .unwrap();
        for (key, payload) in messages {
            let mut record = BaseRecord::to(topic).key(key).payload(payload);
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((e, r)) => {
                        assert!(
                            matches!(
                                e.rdkafka_error_code(),
                                Some(rdkafka::types::RDKafkaErrorCode::QueueFull)
                            ),
                            "{e}"
                        );
                        record = r;
                        producer.poll(Duration::from_millis(10));
                    }
                }
            }
            producer.poll(Duration::ZERO);
        }
        producer.flush(Duration::from_secs(60)).unwrap();
        assert_eq!(producer.in_flight_count(), 0);
    }

    /// Per partition of `topic`: (the group's committed offset, the
    /// partition's end), asked of the broker by a client of our own.
    fn offsets(&self, group: &str, topic: &str, partitions: i32) -> Vec<(Option<i64>, i64)> {
        let consumer: BaseConsumer = self.client().set("group.id", group).create().unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(topic, p);
        }
        let committed = consumer
            .committed_offsets(tpl, Duration::from_secs(10))
            .unwrap();
        (0..partitions)
            .map(|p| {
                let offset = match committed.find_partition(topic, p).unwrap().offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                };
                let (_, end) = consumer
                    .fetch_watermarks(topic, p, Duration::from_secs(10))
                    .unwrap();
                (offset, end)
            })
            .collect()
    }

    /// Every message of `topic`, read from the start: (partition, offset,
    /// payload).
    fn read_all(&self, topic: &str, partitions: i32) -> Vec<(i32, i64, String)> {
        let consumer: BaseConsumer = self
            .client()
            .set("group.id", "roo-test-reader")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        let mut ends = BTreeMap::new();
        for p in 0..partitions {
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .unwrap();
            let (_, end) = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .unwrap();
            ends.insert(p, end);
        }
        consumer.assign(&tpl).unwrap();
        let mut out = Vec::new();
        let mut next: BTreeMap<i32, i64> = (0..partitions).map(|p| (p, 0)).collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        while next.iter().any(|(p, n)| *n < ends[p]) {
            assert!(
                Instant::now() < deadline,
                "reading {topic}: {next:?} of {ends:?}"
            );
            if let Some(m) = consumer.poll(Duration::from_millis(100)) {
                let m = m.unwrap();
                let payload = String::from_utf8(m.payload().unwrap_or_default().to_vec()).unwrap();
                out.push((m.partition(), m.offset(), payload));
                next.insert(m.partition(), m.offset() + 1);
            }
        }
        out
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One card transaction.
#[derive(Clone, Debug)]
struct Txn {
    id: i64,
    card: i64,
    ts: i64,
    amount: f64,
}

/// `n` transactions in time order over 40 cards; every 97th message is
/// undecodable (its amount is `x`), and the messages keyed by card.
fn transactions(n: usize) -> (Vec<Txn>, Vec<(String, String)>) {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut clock = 1_790_000_000_000_000i64;
    let mut good = Vec::new();
    let mut messages = Vec::new();
    for i in 0..n as i64 {
        clock += (next() % 2_000_000) as i64;
        let card = (next() % 40) as i64;
        if i % 97 == 96 {
            messages.push((card.to_string(), format!("{i},{card},{clock},x")));
            continue;
        }
        let amount = (next() % 50_000) as f64 / 100.0;
        good.push(Txn {
            id: i,
            card,
            ts: clock,
            amount,
        });
        messages.push((card.to_string(), format!("{i},{card},{clock},{amount}")));
    }
    (good, messages)
}

/// The features the obvious way: per card, over the card's earlier events
/// (a card's messages share a partition, so they arrive in the order they
/// were produced), the count and sum of amounts with `ts` in (ts − 1h, ts];
/// the sum of none is null.
fn reference(txns: &[Txn]) -> BTreeMap<i64, (i64, Option<f64>)> {
    const HOUR_US: i64 = 3_600_000_000;
    let mut by_card: BTreeMap<i64, Vec<&Txn>> = BTreeMap::new();
    for t in txns {
        by_card.entry(t.card).or_default().push(t);
    }
    let mut out = BTreeMap::new();
    for events in by_card.values() {
        for t in events {
            let window = events
                .iter()
                .filter(|u| u.id < t.id && u.ts > t.ts - HOUR_US && u.ts <= t.ts);
            let (n, sum) = window.fold((0i64, 0.0f64), |(n, s), u| (n + 1, s + u.amount));
            out.insert(t.id, (n, (n > 0).then_some(sum)));
        }
    }
    out
}

/// The features every pipeline here computes (what [`reference`] computes).
const FEATURES: &str = r#"
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
"#;

/// Cuts only at stop (commit_ms of an hour) and a file open all day.
fn config(dir: &Path, servers: &str, source_topic: &str, group: &str) -> PathBuf {
    features_config(
        dir,
        servers,
        source_topic,
        group,
        "earliest",
        3_600_000,
        86_400,
    )
}

/// The features pipeline: `start`, `commit_ms`, the file sink's
/// `rotate_secs`.
fn features_config(
    dir: &Path,
    servers: &str,
    source_topic: &str,
    group: &str,
    start: &str,
    commit_ms: u64,
    rotate_secs: u64,
) -> PathBuf {
    let text = format!(
        r#"[server]
threads = 2
metrics = "127.0.0.1:0"

[[pipeline]]
name = "cards"
event_time = "ts"
lateness = "1h"
max_rows = 256
linger_ms = 5

[pipeline.source]
kind = "kafka"
brokers = "{servers}"
topic = "{source_topic}"
group = "{group}"
format = "csv"
columns = ["txn_id:int64", "card_id:int64", "ts:int64", "amount:float64"]
start = "{start}"
commit_ms = {commit_ms}
changelog = "changelog"
# A SIGKILLed member's partitions move after 6 s, not librdkafka's 45.
properties = {{ "session.timeout.ms" = "6000", "heartbeat.interval.ms" = "500" }}
{FEATURES}
[[pipeline.sink]]
kind = "files"
dir = {rows:?}
format = "parquet"
rotate_secs = {rotate_secs}

[[pipeline.sink]]
kind = "kafka"
brokers = "{servers}"
topic = "features"
format = "ndjson"
key = "card_id"

[pipeline.dead_letters]
dir = {dead:?}
"#,
        rows = dir.join("rows"),
        dead = dir.join("dead"),
    );
    let path = dir.join("roo.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn every_event_once_offsets_committed_after_publish_and_a_broker_outage_loses_nothing() {
    const PARTITIONS: i32 = 3;
    let mut broker = Broker::start(&[
        ("transactions", PARTITIONS),
        ("features", 2),
        ("changelog", PARTITIONS),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let (good, messages) = transactions(3_000);
    let bad = messages.len() - good.len();
    let (first, second) = messages.split_at(1_800);
    broker.produce("transactions", first);

    let cfg = config(dir.path(), &broker.servers, "transactions", "roo-cards");
    let mut daemon = Daemon::start(&cfg, Stdio::null());
    daemon.ready();
    daemon.wait_metric("roo_events_in_total", first.len() as f64);
    assert_eq!(
        daemon.metric("roo_kafka_messages_total"),
        first.len() as f64
    );

    // The brokers go away mid-stream: roo's client sees it, retries, and
    // carries on when they are back.
    broker.command("down");
    daemon.wait_metric("roo_kafka_client_errors_total", 1.0);
    broker.command("up");
    broker.produce("transactions", second);
    daemon.wait_metric("roo_events_in_total", messages.len() as f64);
    daemon.wait_metric("roo_events_out_total", good.len() as f64);

    // Every event is in the Kafka sink (durable there), but the file is
    // still open (rotate_secs = 1 day): nothing may be committed yet.
    let offsets = broker.offsets("roo-cards", "transactions", PARTITIONS);
    assert!(
        offsets.iter().all(|(committed, _)| committed.is_none()),
        "offsets committed before the file sink published: {offsets:?}"
    );
    assert_eq!(daemon.metric("roo_kafka_commits_total"), 0.0);
    let ends: i64 = offsets.iter().map(|(_, end)| end).sum();
    assert_eq!(ends, messages.len() as i64);
    assert_eq!(daemon.metric("roo_kafka_assigned"), f64::from(PARTITIONS));

    // SIGTERM: the file is published, then every offset committed.
    daemon.signal(libc::SIGTERM);
    let (code, log) = daemon.finish();
    assert_eq!(code, Some(0), "{}", log.join("\n"));
    let offsets = broker.offsets("roo-cards", "transactions", PARTITIONS);
    for (p, (committed, end)) in offsets.iter().enumerate() {
        assert_eq!(*committed, Some(*end), "partition {p}: {offsets:?}");
    }

    // The files: every good event once, with the reference's features.
    let expected = reference(&good);
    assert_features(&dir.path().join("rows"), &expected);

    // The output topic: every good event once, as NDJSON keyed by card.
    let out = broker.read_all("features", 2);
    let mut ids = BTreeMap::new();
    for (_, _, payload) in &out {
        let v: serde_json::Value = serde_json::from_str(payload).unwrap();
        let id = v["txn_id"].as_i64().unwrap();
        assert_eq!(v["n_1h"].as_i64().unwrap(), expected[&id].0, "txn {id}");
        *ids.entry(id).or_insert(0) += 1;
    }
    assert_eq!(ids.len(), good.len());
    assert!(
        ids.values().all(|&n| n == 1),
        "the output topic repeats events"
    );

    // The dead letters: each bad message once, at its partition and offset.
    let produced = broker.read_all("transactions", PARTITIONS);
    let mut dead = Vec::new();
    for e in std::fs::read_dir(dir.path().join("dead")).unwrap() {
        let text = std::fs::read_to_string(e.unwrap().path()).unwrap();
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let source = v["source"].as_str().unwrap().to_string();
            dead.push((
                source,
                v["offset"].as_u64().unwrap(),
                v["raw"].as_str().unwrap().to_string(),
            ));
        }
    }
    assert_eq!(dead.len(), bad);
    for (source, offset, raw) in &dead {
        let partition: i32 = source
            .strip_prefix("kafka://transactions/")
            .unwrap_or_else(|| panic!("dead letter source {source}"))
            .parse()
            .unwrap();
        let message = produced
            .iter()
            .find(|(p, o, _)| *p == partition && *o as u64 == *offset)
            .unwrap_or_else(|| panic!("no message at {source} offset {offset}"));
        assert_eq!(
            raw.trim_end(),
            message.2,
            "dead letter at {source}@{offset}"
        );
        assert!(raw.ends_with(",x") || raw.ends_with(",x\n"), "{raw}");
    }
}

#[test]
fn unreachable_brokers_are_retried_and_counted_and_a_missing_topic_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on a port we bound and closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = config(
        dir.path(),
        &format!("127.0.0.1:{port}"),
        "transactions",
        "g",
    );
    let mut daemon = Daemon::start(&cfg, Stdio::null());
    daemon.ready();
    daemon.wait_metric("roo_kafka_client_errors_total", 2.0);
    let line = daemon.wait_for(&format!("127.0.0.1:{port}"));
    assert!(line.contains("WARN") || line.contains("ERROR"), "{line}");
    daemon.signal(libc::SIGTERM);
    let (code, log) = daemon.finish();
    assert_eq!(code, Some(0), "{}", log.join("\n"));

    let broker = Broker::start(&[("features", 1)]);
    let cfg = config(dir.path(), &broker.servers, "no-such-topic", "g");
    let out = common::roo()
        .args(["serve", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("no-such-topic"), "{stderr}");

    // A changelog topic that does not exist: refused by name too.
    let broker = Broker::start(&[("transactions", 1)]);
    let cfg = config(dir.path(), &broker.servers, "transactions", "g");
    let out = common::roo()
        .args(["serve", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("changelog topic \"changelog\" does not exist"),
        "{stderr}"
    );
}

/// The published files hold every good event once, with the reference's
/// features.
fn assert_features(rows: &Path, expected: &BTreeMap<i64, (i64, Option<f64>)>) {
    let batches = common::read_published(rows);
    let mut seen = BTreeMap::new();
    for b in &batches {
        let id = b
            .column_by_name("txn_id")
            .unwrap()
            .as_primitive::<Int64Type>();
        let n = b
            .column_by_name("n_1h")
            .unwrap()
            .as_primitive::<Int64Type>();
        let spend = b
            .column_by_name("spend_1h")
            .unwrap()
            .as_primitive::<Float64Type>();
        for r in 0..b.num_rows() {
            let s = (!spend.is_null(r)).then(|| spend.value(r));
            assert!(
                seen.insert(id.value(r), (n.value(r), s)).is_none(),
                "txn {} written twice",
                id.value(r)
            );
        }
    }
    assert_eq!(seen.len(), expected.len());
    for (id, (n, spend)) in expected {
        let (got_n, got_spend) = seen[id];
        assert_eq!(got_n, *n, "txn {id}: count");
        match (got_spend, spend) {
            (Some(got), Some(want)) => assert!(
                (got - want).abs() <= 1e-9 * want.abs().max(1.0),
                "txn {id}: spend {got} vs {want}"
            ),
            (got, want) => assert_eq!(got, *want, "txn {id}: spend"),
        }
    }
}

/// The published rows' txn_ids with how often each is there, and the
/// files by name.
fn published_ids(dir: &Path) -> (BTreeMap<i64, usize>, Vec<String>) {
    let mut ids = BTreeMap::new();
    // A file replaced while it is read (a range written again) is gone:
    // read the listing again.
    let (batches, names) = 'read: loop {
        let files = roo_scheduler::sinks::layout::published(dir, "part", "parquet");
        let mut batches = Vec::new();
        for f in &files {
            let schema = std::sync::Arc::new(arrow_schema::Schema::empty());
            let read = roo_scheduler::sinks::layout::read_output_file(f, &schema, &mut |b| {
                batches.push(b);
                true
            });
            if read.is_err() && !f.exists() {
                continue 'read;
            }
            read.unwrap();
        }
        let names: Vec<String> = files
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        break (batches, names);
    };
    for b in batches {
        let id = b
            .column_by_name("txn_id")
            .unwrap()
            .as_primitive::<Int64Type>();
        for r in 0..b.num_rows() {
            *ids.entry(id.value(r)).or_insert(0) += 1;
        }
    }
    (ids, names)
}

/// Waits until `ready` holds, polling every 50 ms (at most 90 s).
fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while !ready() {
        assert!(Instant::now() < deadline, "{what}: not after 90 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A crash between a file's publication and its offsets' commit: the
/// range is read again and written again, never twice. Run 1 reads the
/// first half and stops cleanly (every offset committed, at file ends).
/// Run 2 commits nothing (commit_ms of an hour): it publishes files of
/// the second half and is killed with SIGKILL. Run 3 reads from run 1's
/// commits, replaces run 2's files and commits: each event once.
#[test]
fn a_range_published_but_not_committed_is_rewritten_not_duplicated() {
    const PARTITIONS: i32 = 3;
    let broker = Broker::start(&[
        ("transactions", PARTITIONS),
        ("features", 2),
        ("changelog", PARTITIONS),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let rows = dir.path().join("rows");
    let (good, messages) = transactions(2_400);
    let (first, second) = messages.split_at(1_200);
    let good_in_first = good.iter().filter(|t| t.id < 1_200).count();
    let group = "roo-crash";

    broker.produce("transactions", first);
    let cfg = features_config(
        dir.path(),
        &broker.servers,
        "transactions",
        group,
        "committed",
        50,
        1,
    );
    let mut run1 = Daemon::start(&cfg, Stdio::null());
    run1.ready();
    run1.wait_metric("roo_events_out_total", good_in_first as f64);
    run1.signal(libc::SIGTERM);
    let (code, log) = run1.finish();
    assert_eq!(code, Some(0), "{}", log.join("\n"));
    let after_run1 = broker.offsets(group, "transactions", PARTITIONS);
    assert!(
        after_run1.iter().all(|(c, end)| *c == Some(*end)),
        "{after_run1:?}"
    );
    let (ids, run1_files) = published_ids(&rows);
    assert_eq!(ids.len(), good_in_first);
    let modified = |name: &str| {
        std::fs::metadata(rows.join(name))
            .unwrap()
            .modified()
            .unwrap()
    };
    let run1_times: Vec<_> = run1_files.iter().map(|n| modified(n)).collect();

    broker.produce("transactions", second);
    let cfg = features_config(
        dir.path(),
        &broker.servers,
        "transactions",
        group,
        "committed",
        3_600_000,
        1,
    );
    let mut run2 = Daemon::start(&cfg, Stdio::null());
    run2.ready();
    wait_until("run 2 publishes every event", || {
        published_ids(&rows).0.len() == good.len()
    });
    assert_eq!(run2.metric("roo_kafka_commits_total"), 0.0);
    run2.signal(libc::SIGKILL);
    let _ = run2.finish();
    // Published, never committed: the offsets are still run 1's.
    let committed = |offsets: Vec<(Option<i64>, i64)>| -> Vec<Option<i64>> {
        offsets.into_iter().map(|(c, _)| c).collect()
    };
    assert_eq!(
        committed(broker.offsets(group, "transactions", PARTITIONS)),
        committed(after_run1.clone())
    );
    let (_, run2_files) = published_ids(&rows);
    assert!(run2_files.len() > run1_files.len());

    let cfg = features_config(
        dir.path(),
        &broker.servers,
        "transactions",
        group,
        "committed",
        50,
        1,
    );
    let mut run3 = Daemon::start(&cfg, Stdio::null());
    run3.ready();
    // Run 3 reads the second half again, from run 1's commits.
    run3.wait_metric("roo_kafka_messages_total", second.len() as f64);
    // Every partition's state came from run 1's snapshots.
    assert_eq!(
        run3.metric("roo_kafka_restores_total"),
        f64::from(PARTITIONS)
    );
    run3.signal(libc::SIGTERM);
    let (code, log) = run3.finish();
    assert_eq!(code, Some(0), "{}", log.join("\n"));
    let offsets = broker.offsets(group, "transactions", PARTITIONS);
    assert!(
        offsets.iter().all(|(c, end)| *c == Some(*end)),
        "{offsets:?}"
    );
    let (ids, files) = published_ids(&rows);
    assert_eq!(ids.len(), good.len());
    let twice: Vec<_> = ids.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "written twice: {twice:?}");
    // Run 1's files are untouched (before the committed offsets); run 2's
    // were replaced by run 3's.
    for (name, time) in run1_files.iter().zip(&run1_times) {
        assert!(files.contains(name), "run 1's {name} is gone");
        assert_eq!(modified(name), *time, "run 1's {name} was rewritten");
    }
    // Run 3 restored run 1's state from the changelog: the features of the
    // second half equal the reference's over all the events.
    assert_features(&rows, &reference(&good));
    // One file per (partition, first offset): `part-TOPIC-pP-FIRST-END`.
    let starts: std::collections::BTreeSet<&str> = files
        .iter()
        .map(|n| n.rsplit_once('-').unwrap().0)
        .collect();
    assert_eq!(
        starts.len(),
        files.len(),
        "two files start at one offset: {files:?}"
    );
}

/// A member of the scale-out group: a stateless pipeline (the rows as
/// read) writing Parquet into `shared` (every member's files in one
/// directory) and dead letters into a directory of its own.
fn member_config(dir: &Path, shared: &Path, servers: &str, member: usize) -> PathBuf {
    let text = format!(
        r#"[server]
threads = 2
metrics = "127.0.0.1:0"

[[pipeline]]
name = "cards"
event_time = "ts"
lateness = "1h"
max_rows = 128
linger_ms = 5

[pipeline.source]
kind = "kafka"
brokers = "{servers}"
topic = "transactions"
group = "roo-scale"
format = "csv"
columns = ["txn_id:int64", "card_id:int64", "ts:int64", "amount:float64"]
commit_ms = 200
changelog = "roo-scale-changelog"
properties = {{ "session.timeout.ms" = "6000", "heartbeat.interval.ms" = "500" }}
{FEATURES}
[[pipeline.sink]]
kind = "files"
dir = {shared:?}
format = "parquet"
rotate_secs = 1

[pipeline.dead_letters]
dir = {dead:?}
"#,
        dead = dir.join(format!("dead-{member}")),
    );
    let path = dir.join(format!("member-{member}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// Scale out: three `roo serve` in one group on a 6-partition topic, a
/// fourth joins mid-stream, one of the first is killed with SIGKILL
/// mid-stream; the survivors take its partitions, each from its newest
/// snapshot in the changelog (state and position). In the one directory
/// they share, every event is there once: a partition resumes at a cut,
/// which is a file boundary, and a range read again (past the killed
/// member's last cut) replaces the files there only once it is written
/// again. Every event's features equal the reference's over all the
/// events (the state followed the partitions); every partition ends
/// committed at its end, and every bad message is a dead letter
/// somewhere (at least once: the killed member's may be written again by
/// the next owner, in its own directory).
#[test]
fn a_group_of_members_shares_the_partitions_and_a_killed_member_loses_nothing() {
    const PARTITIONS: i32 = 6;
    let broker = Broker::start(&[
        ("transactions", PARTITIONS),
        ("roo-scale-changelog", PARTITIONS),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("rows");
    let (good, messages) = transactions(24_000);
    let thirds: Vec<&[(String, String)]> = messages.chunks(8_000).collect();

    broker.produce("transactions", thirds[0]);
    let mut members: Vec<Daemon> = (1..=3)
        .map(|m| {
            Daemon::start(
                &member_config(dir.path(), &shared, &broker.servers, m),
                Stdio::null(),
            )
        })
        .collect();
    for m in &mut members {
        m.ready();
    }
    wait_until("the three members hold the six partitions", || {
        members
            .iter_mut()
            .map(|m| m.metric("roo_kafka_assigned"))
            .sum::<f64>()
            == PARTITIONS as f64
    });
    broker.produce("transactions", thirds[1]);
    let mut fourth = Daemon::start(
        &member_config(dir.path(), &shared, &broker.servers, 4),
        Stdio::null(),
    );
    fourth.ready();
    wait_until("the fourth member is given partitions", || {
        fourth.metric("roo_kafka_assigned") > 0.0
    });
    members.push(fourth);
    // Mid-stream: the last third is produced and member 1 killed at once.
    broker.produce("transactions", thirds[2]);
    let killed = members.remove(0);
    killed.signal(libc::SIGKILL);
    let _ = killed.finish();

    let deadline = Instant::now() + Duration::from_secs(90);
    while published_ids(&shared).0.len() < good.len() {
        if Instant::now() > deadline {
            let (ids, files) = published_ids(&shared);
            let offsets = broker.offsets("roo-scale", "transactions", PARTITIONS);
            let mut logs = Vec::new();
            for m in members {
                m.signal(libc::SIGTERM);
                logs.push(m.finish().1.join("\n"));
            }
            panic!(
                "the survivors published {} of {} events in 90 s; committed {offsets:?}; files {files:?}; logs:\n{}",
                ids.len(),
                good.len(),
                logs.join("\n----\n")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_until("every partition is committed at its end", || {
        broker
            .offsets("roo-scale", "transactions", PARTITIONS)
            .iter()
            .all(|(c, end)| *c == Some(*end))
    });
    // The killed member's partitions (and those moved to the fourth)
    // were restored from the changelog.
    let restores: f64 = members
        .iter_mut()
        .map(|m| m.metric("roo_kafka_restores_total"))
        .sum();
    assert!(restores >= 2.0, "{restores} partitions restored");
    for m in members {
        m.signal(libc::SIGTERM);
        let (code, log) = m.finish();
        assert_eq!(code, Some(0), "{}", log.join("\n"));
    }
    let (ids, files) = published_ids(&shared);
    let want: std::collections::BTreeSet<i64> = good.iter().map(|t| t.id).collect();
    assert_eq!(
        ids.keys()
            .copied()
            .collect::<std::collections::BTreeSet<_>>(),
        want
    );
    // Exactly once: each partition resumes where its newest snapshot
    // stands (not at the committed offset, which the mock cluster refuses
    // while the group rebalances), and what a killed member wrote past it
    // is replaced.
    let twice: Vec<_> = ids.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "written twice: {twice:?}; files {files:?}"
    );
    eprintln!("group: {} events, {} files", ids.len(), files.len());
    // The features followed the partitions (snapshots in the changelog):
    // every event's equal a single process's, the reference's.
    assert_features(&shared, &reference(&good));

    // Every bad message is a dead letter naming its partition and offset.
    let bad: std::collections::BTreeSet<String> = messages
        .iter()
        .filter(|(_, m)| m.ends_with(",x"))
        .map(|(_, m)| m.clone())
        .collect();
    let mut dead = std::collections::BTreeSet::new();
    for m in 1..=4 {
        let d = dir.path().join(format!("dead-{m}"));
        for f in roo_scheduler::sinks::layout::published(&d, "dead", "ndjson") {
            for line in std::fs::read_to_string(f).unwrap().lines() {
                let record: serde_json::Value = serde_json::from_str(line).unwrap();
                assert!(
                    record["source"]
                        .as_str()
                        .unwrap()
                        .starts_with("kafka://transactions/"),
                    "{line}"
                );
                assert!(record["offset"].is_u64(), "{line}");
                dead.insert(record["raw"].as_str().unwrap().trim_end().to_string());
            }
        }
    }
    assert_eq!(dead, bad);
}

/// `examples/kafka/run.sh`, the one command of the README's scale-out
/// section, on this build: three members, one SIGKILLed mid-stream, every
/// event scored once; with pyarrow, the members' files equal one batch
/// run (`roo score --config`) bit for bit.
#[test]
fn the_kafka_example_runs_three_members_and_agrees_with_the_batch() {
    let out = tempfile::tempdir().unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_roo")).parent().unwrap();
    let python = common::python("pyarrow");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut run = Command::new("bash");
    run.arg(root.join("examples/kafka/run.sh"))
        .env("ROO_BIN_DIR", bin)
        .env("OUT", out.path())
        .env("EVENTS", "40000");
    if let Some(p) = &python {
        run.env("PYTHON", p);
    }
    let done = run.stdin(Stdio::null()).output().unwrap();
    let stdout = String::from_utf8_lossy(&done.stdout);
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert!(done.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("killed member 2 (SIGKILL)"),
        "{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("every event scored: 40000 of 40000"),
        "{stdout}\n{stderr}"
    );
    if python.is_some() {
        assert!(
            stdout.contains("stream == batch: 40000 events once each"),
            "{stdout}\n{stderr}"
        );
    }
}
