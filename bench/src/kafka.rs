//! `roo-bench kafka`: Kafka in → score → Kafka out against a local broker
//! (`roo-dev-broker`, librdkafka's mock cluster on real sockets), roo beside
//! the consumer a team writes in Python (`python/kafka_peers.py`:
//! confluent-kafka, micro-batches, XGBoost), on the same messages and model:
//! CSV messages of one event each, and Arrow IPC messages of 1,024 events.
//! Events/s and CPU-ns per event of the consuming process, from its first
//! message to its last event produced; the broker's own CPU over each run
//! is reported apart.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use roo_scheduler::generator::{CardGenerator, CARD_FEATURES};

use crate::daemon::{metric, metrics_text, roo_binary, Daemon, ThreadCpu};
use crate::report::{Measurement, Section};

pub const ROO_CSV: &str = "roo, Kafka CSV (1 event/message) -> score -> Kafka NDJSON";
pub const ROO_ARROW: &str = "roo, Kafka Arrow (1,024 events/message) -> score -> Kafka Arrow";
pub const PY_CSV: &str = "Python confluent-kafka + XGBoost, CSV messages";
pub const PY_ARROW: &str = "Python confluent-kafka + XGBoost, Arrow messages";

/// Partitions of every topic: the mock cluster holds about 5 MiB per
/// partition, and the input topics must be whole when the runs start.
const PARTITIONS: i32 = 16;
/// Events per Arrow message.
const ARROW_ROWS: usize = 1024;
/// How long a run may take before the bench gives up on it.
const RUN_MAX: Duration = Duration::from_secs(600);

/// A `roo-dev-broker` process, killed when dropped.
struct Broker {
    child: Child,
    servers: String,
}

impl Broker {
    fn start(topics: &[&str]) -> Result<Self> {
        let path = roo_binary()?.with_file_name("roo-dev-broker");
        let mut command = Command::new(&path);
        for t in topics {
            command.arg("--topic").arg(format!("{t}:{PARTITIONS}"));
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", path.display()))?;
        let mut servers = String::new();
        BufReader::new(child.stdout.take().context("the broker's stdout")?)
            .read_line(&mut servers)?;
        let servers = servers.trim().to_string();
        if servers.is_empty() {
            bail!("{} printed no bootstrap servers", path.display());
        }
        Ok(Self { child, servers })
    }

    fn cpu_s(&self) -> f64 {
        let stat = PathBuf::from(format!("/proc/{}/stat", self.child.id()));
        crate::report::proc_stat_cpu_s(&stat).map_or(0.0, |(_, s)| s)
    }

    fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.servers);
        c
    }

    /// Produces `messages` to `topic`, spread over its partitions.
    fn produce(&self, topic: &str, messages: impl Iterator<Item = Vec<u8>>) -> Result<()> {
        let producer: BaseProducer = self
            .client()
            .set("linger.ms", "5")
            .set("queue.buffering.max.messages", "1000000")
            .set("message.max.bytes", "4000000")
            .create()?;
        for (i, payload) in messages.enumerate() {
            let partition = (i % PARTITIONS as usize) as i32;
            let record = BaseRecord::<(), [u8]>::to(topic)
                .partition(partition)
                .payload(&payload);
            send_waiting(&producer, record)?;
        }
        producer.flush(Duration::from_secs(120))?;
        Ok(())
    }

    /// Messages ever produced to `topic` (the sum of its partitions'
    /// ends), and the least offset still held (the mock cluster keeps
    /// about 5 MiB per partition and drops older messages).
    fn messages(&self, topic: &str) -> Result<(i64, i64)> {
        let consumer: BaseConsumer = self.client().set("group.id", "roo-bench-count").create()?;
        let (mut n, mut dropped) = (0, 0);
        for p in 0..PARTITIONS {
            let (low, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?;
            n += high;
            dropped = dropped.max(low);
        }
        Ok((n, dropped))
    }
}

/// Sends `record`, serving delivery reports while the producer's queue is
/// full.
fn send_waiting(producer: &BaseProducer, mut record: BaseRecord<'_, (), [u8]>) -> Result<()> {
    loop {
        match producer.send(record) {
            Ok(()) => break,
            Err((e, r))
                if e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::QueueFull) =>
            {
                record = r;
                producer.poll(Duration::from_millis(5));
            }
            Err((e, r)) => bail!("producing to {}: {e}", r.topic),
        }
    }
    producer.poll(Duration::ZERO);
    Ok(())
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `events` card transactions (an id and 30 features): as CSV lines
/// without a header, or as Arrow IPC streams of [`ARROW_ROWS`] rows.
fn card_messages(events: usize, arrow: bool) -> Result<Vec<Vec<u8>>> {
    let mut generator = CardGenerator::new(17);
    let mut out = Vec::new();
    let mut done = 0;
    while done < events {
        let n = (events - done).min(ARROW_ROWS);
        let batch = generator.batch(n);
        if arrow {
            let mut ipc = Vec::new();
            let mut w = arrow_ipc::writer::StreamWriter::try_new(&mut ipc, &batch.schema())?;
            w.write(&batch)?;
            w.finish()?;
            drop(w);
            out.push(ipc);
        } else {
            let mut text = Vec::new();
            arrow_csv::WriterBuilder::new()
                .with_header(false)
                .build(&mut text)
                .write(&batch)?;
            out.extend(
                text.split(|&b| b == b'\n')
                    .filter(|l| !l.is_empty())
                    .map(<[u8]>::to_vec),
            );
        }
        done += n;
    }
    Ok(out)
}

/// Arrow events per CSV event: Arrow costs a fraction as much per event, so
/// it needs more of them for CPU time to be measured (the mock cluster's
/// ~5 MiB per partition bounds both).
const ARROW_EVENTS_PER_CSV_EVENT: f64 = 2.5;

fn model_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/fraud/model.json")
}

/// roo's pipeline: the topic's messages scored by the bundled model, every
/// row (inputs, score, model version) produced to `out`.
fn roo_config(dir: &Path, servers: &str, topic: &str, format: &str, out: &str) -> Result<PathBuf> {
    let mut columns = vec!["\"txn_id:int64\"".to_string()];
    columns.extend(CARD_FEATURES.iter().map(|f| format!("\"{f}\"")));
    let text = format!(
        r#"[server]
metrics = "127.0.0.1:0"

[[pipeline]]
name = "kafka_{format}"
model = {model:?}

[pipeline.source]
kind = "kafka"
brokers = "{servers}"
topic = "{topic}"
group = "roo-bench-{format}"
format = "{format}"
columns = [{columns}]
start = "earliest"

[[pipeline.sink]]
kind = "kafka"
brokers = "{servers}"
topic = "{out}"
format = "{sink}"
properties = {{ "message.max.bytes" = "16000000" }}
"#,
        model = model_path(),
        columns = columns.join(", "),
        sink = if format == "arrow" { "arrow" } else { "ndjson" },
    );
    let path = dir.join(format!("kafka-{format}.toml"));
    std::fs::write(&path, text)?;
    Ok(path)
}

/// What one consuming process did: events, wall and CPU seconds from its
/// first message to its last event out, the broker's CPU meanwhile.
struct Consumed {
    wall_s: f64,
    cpu_s: f64,
    broker_cpu_s: f64,
    rss_mib: Option<f64>,
    /// roo's CPU seconds by thread role over the run.
    threads: Option<ThreadCpu>,
}

/// Runs `roo serve` on the topic until every event is out.
fn run_roo(
    broker: &Broker,
    dir: &Path,
    topic: &str,
    format: &str,
    events: usize,
) -> Result<Consumed> {
    let out = format!("scores-roo-{format}");
    let config = roo_config(dir, &broker.servers, topic, format, &out)?;
    let mut daemon = Daemon::start(&config)?;
    let ready = daemon.ready()?;
    let addr = ready.metrics.context("the daemon's metrics address")?;
    let deadline = Instant::now() + RUN_MAX;
    // From its first message (the group join before it is not the
    // pipeline's cost) to its last event out.
    let (t0, cpu0, broker0, threads0) = loop {
        let text = metrics_text(&addr)?;
        if metric(&text, "roo_kafka_messages_total") > 0.0 {
            break (
                Instant::now(),
                daemon.cpu_s()?,
                broker.cpu_s(),
                ThreadCpu::read(daemon.pid()).unwrap_or_default(),
            );
        }
        if Instant::now() > deadline {
            bail!("roo read no message from {topic}");
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    loop {
        let text = metrics_text(&addr)?;
        if metric(&text, "roo_events_out_total") >= events as f64 {
            break;
        }
        if Instant::now() > deadline {
            bail!("roo did not produce every event of {topic} in {RUN_MAX:?}");
        }
        // Seldom: each read of /metrics is the daemon's CPU too.
        std::thread::sleep(Duration::from_millis(50));
    }
    let (wall_s, cpu_s) = (t0.elapsed().as_secs_f64(), daemon.cpu_s()? - cpu0);
    let broker_cpu_s = broker.cpu_s() - broker0;
    let threads = ThreadCpu::read(daemon.pid()).map(|t| t.since(&threads0));
    let rss_mib = daemon.peak_rss_mib().ok();
    daemon.stop()?;
    if format == "csv" {
        let (produced, _) = broker.messages(&out)?;
        anyhow::ensure!(
            produced == events as i64,
            "roo produced {produced} messages to {out}; expected {events}"
        );
    }
    Ok(Consumed {
        wall_s,
        cpu_s,
        broker_cpu_s,
        rss_mib,
        threads,
    })
}

/// librdkafka's own cost per message, with nothing of roo's or Python's:
/// this process (a Rust client and librdkafka's threads) reads every
/// message of `topic` (assigned, no group: no parsing, no scoring), then
/// produces as many copies of `payload` to `out` (idempotent, with
/// delivery reports, as roo's sink does). CPU-ns per message of each half,
/// and the broker's CPU-ns per message over both.
fn client_floor(
    broker: &Broker,
    topic: &str,
    out: &str,
    messages: usize,
    payload: &[u8],
) -> Result<(f64, f64, f64)> {
    let broker0 = broker.cpu_s();
    let consumer: BaseConsumer = broker
        .client()
        .set("group.id", "roo-bench-floor")
        .set("enable.auto.commit", "false")
        .create()?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(topic, p, rdkafka::Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + RUN_MAX;
    // From the first message, as for the consumers measured.
    let mut got = 0usize;
    let mut cpu0 = None;
    let mut bytes = 0usize;
    while got < messages {
        if Instant::now() > deadline {
            bail!("the floor's consumer read {got} of {messages} messages of {topic}");
        }
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            use rdkafka::message::Message;
            let m = m?;
            cpu0.get_or_insert_with(crate::report::process_cpu_s);
            bytes += m.payload().map_or(0, <[u8]>::len);
            got += 1;
        }
    }
    let consume = crate::report::process_cpu_s() - cpu0.unwrap_or_default();
    drop(consumer);
    anyhow::ensure!(bytes > 0, "the floor read empty messages");
    let producer: BaseProducer = broker
        .client()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .create()?;
    let cpu0 = crate::report::process_cpu_s();
    for _ in 0..messages {
        send_waiting(&producer, BaseRecord::<(), [u8]>::to(out).payload(payload))?;
    }
    producer.flush(Duration::from_secs(120))?;
    let produce = crate::report::process_cpu_s() - cpu0;
    let n = messages as f64;
    Ok((
        consume * 1e9 / n,
        produce * 1e9 / n,
        (broker.cpu_s() - broker0) * 1e9 / n,
    ))
}

/// One message of `topic` (its first).
fn first_message(broker: &Broker, topic: &str) -> Result<Vec<u8>> {
    use rdkafka::message::Message;
    let consumer: BaseConsumer = broker.client().set("group.id", "roo-bench-peek").create()?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(topic, p, rdkafka::Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            return Ok(m?.payload().unwrap_or_default().to_vec());
        }
    }
    bail!("no message in {topic}")
}

/// Runs the Python consumer on the topic until every event is out.
fn run_peer(
    broker: &Broker,
    python: &str,
    topic: &str,
    format: &str,
    events: usize,
) -> Result<Consumed> {
    let out = format!("scores-py-{format}");
    let broker0 = broker.cpu_s();
    let text = crate::run_script(
        python,
        "kafka_peers.py",
        &[
            "--brokers",
            &broker.servers,
            "--topic",
            topic,
            "--out",
            &out,
            "--format",
            format,
            "--events",
            &events.to_string(),
            "--model",
            model_path().to_str().context("model path")?,
            "--features",
            &CARD_FEATURES.join(","),
        ],
    )?;
    let broker_cpu_s = broker.cpu_s() - broker0;
    let v: serde_json::Value = serde_json::from_str(text.trim())?;
    let got = v["events"].as_u64().context("kafka_peers.py: events")? as usize;
    anyhow::ensure!(
        got == events,
        "the Python consumer scored {got} of {events} events"
    );
    if format == "csv" {
        let (produced, _) = broker.messages(&out)?;
        anyhow::ensure!(
            produced == events as i64,
            "the Python consumer produced {produced} messages to {out}; expected {events}"
        );
    }
    Ok(Consumed {
        wall_s: v["wall_s"].as_f64().context("kafka_peers.py: wall_s")?,
        cpu_s: v["cpu_s"].as_f64().context("kafka_peers.py: cpu_s")?,
        broker_cpu_s,
        rss_mib: v["peak_rss_mib"].as_f64(),
        threads: None,
    })
}

pub fn run(events: usize, python: Option<&str>, cache: &Path) -> Result<Section> {
    let mut section = Section::new(
        "kafka",
        "Kafka in, scored, Kafka out: roo beside a Python confluent-kafka consumer",
    );
    section.note(format!(
        "Card transactions (an id and 30 features) in {PARTITIONS}-partition topics of a local \
         broker (roo-dev-broker: librdkafka's mock cluster, on the same 2 cores): {events} as CSV \
         messages of one event, and {} as Arrow IPC messages of {ARROW_ROWS} events; scored by the \
         bundled 40-tree XGBoost model and every row (inputs and score) produced to another \
         topic — NDJSON, one message per event, for CSV in; one Arrow IPC message per batch for \
         Arrow in. roo: `roo serve` with a kafka source and sink (offsets committed once the \
         producer's messages are acknowledged). Peer: a Python consumer of the same group \
         semantics (confluent-kafka, librdkafka underneath): consume() up to 1,024 messages, \
         parse them with pyarrow (read_csv of the joined lines, or open_stream per message), \
         XGBoost inplace_predict on one thread, produce the rows (pandas to_json lines, or an \
         IPC stream), flush, commit. CPU and wall time of the consuming process from its first \
         message to its last event produced; the broker's CPU over the same run apart.",
        (events as f64 * ARROW_EVENTS_PER_CSV_EVENT) as usize
    ));
    let dir = cache.join("kafka");
    std::fs::create_dir_all(&dir)?;
    crate::report::step("kafka: the broker and the messages");
    let broker = Broker::start(&[
        "csv-in",
        "arrow-in",
        "scores-roo-csv",
        "scores-roo-arrow",
        "scores-py-csv",
        "scores-py-arrow",
        "floor-out",
    ])?;
    let arrow_events = (events as f64 * ARROW_EVENTS_PER_CSV_EVENT) as usize;
    let csv = card_messages(events, false)?;
    anyhow::ensure!(
        csv.len() == events,
        "{} CSV lines for {events} events",
        csv.len()
    );
    broker.produce("csv-in", csv.into_iter())?;
    broker.produce("arrow-in", card_messages(arrow_events, true)?.into_iter())?;
    for topic in ["csv-in", "arrow-in"] {
        let (_, dropped) = broker.messages(topic)?;
        anyhow::ensure!(
            dropped == 0,
            "the broker dropped the first {dropped} messages of a partition of {topic} (the mock \
             cluster holds about 5 MiB per partition): use fewer events"
        );
    }

    let line = |name: &str, events: usize, c: &Consumed| {
        say!(
            "  {name}: {:.0} events/s, {:.0} CPU-ns/event; broker {:.0} CPU-ns/event{}",
            events as f64 / c.wall_s,
            c.cpu_s * 1e9 / events as f64,
            c.broker_cpu_s * 1e9 / events as f64,
            c.rss_mib
                .map_or(String::new(), |r| format!("; peak RSS {r:.0} MiB"))
        );
        if let Some(t) = &c.threads {
            let by_role: Vec<String> =
                t.0.iter()
                    .filter(|(_, s)| **s > 0.0)
                    .map(|(role, s)| format!("{role} {:.0}", s * 1e9 / events as f64))
                    .collect();
            say!("    CPU-ns/event by thread: {}", by_role.join(", "));
        }
    };
    let mut roo_runs = Vec::new();
    let runs = [
        (ROO_CSV, PY_CSV, "csv-in", "csv", events),
        (ROO_ARROW, PY_ARROW, "arrow-in", "arrow", arrow_events),
    ];
    for (name, _, topic, format, n) in runs {
        crate::report::step(&format!("kafka: roo, {format} messages"));
        let c = run_roo(&broker, &dir, topic, format, n)?;
        line(name, n, &c);
        section.push(
            Measurement::roo(name, n as f64, c.wall_s, Some(c.cpu_s))
                .rss(c.rss_mib)
                .threads(c.threads.clone().unwrap_or_default().0),
        );
        roo_runs.push(c);
    }
    // The floor under one-event messages: librdkafka's own work per
    // message consumed and produced (roo's NDJSON rows as the payload).
    crate::report::step("kafka: librdkafka alone");
    let row = first_message(&broker, "scores-roo-csv")?;
    let (consume, produce, broker_ns) = client_floor(&broker, "csv-in", "floor-out", events, &row)?;
    say!(
        "  librdkafka alone (a Rust client, no parsing, no scoring): consume {consume:.0} + produce {produce:.0} = {:.0} CPU-ns/message ({} B NDJSON rows); broker {broker_ns:.0} CPU-ns/message",
        consume + produce,
        row.len()
    );
    let floor = consume + produce;
    if let Some(python) = python {
        for ((against, name, topic, format, n), mine) in runs.into_iter().zip(&roo_runs) {
            crate::report::step(&format!("kafka: Python, {format} messages"));
            let c = run_peer(&broker, python, topic, format, n)?;
            line(name, n, &c);
            say!("    {:.1}x roo's CPU per event", c.cpu_s / mine.cpu_s);
            if format == "csv" {
                let target = c.cpu_s * 1e9 / n as f64 / 10.0;
                say!(
                    "    1/10 of it is {target:.0} CPU-ns/event; librdkafka alone takes {floor:.0} per one-event message in and out ({:.1}x that)",
                    floor / target
                );
            } else if let Some(t) = &mine.threads {
                let target = c.cpu_s * 1e9 / n as f64 / 10.0;
                let scoring: f64 =
                    t.0.iter()
                        .filter(|(role, _)| role.starts_with("roo-score"))
                        .map(|(_, s)| s * 1e9 / n as f64)
                        .sum();
                say!(
                    "    1/10 of it is {target:.0} CPU-ns/event; roo's scoring thread alone (the model, {scoring:.0} CPU-ns/event) is {:.1}x that",
                    scoring / target
                );
            }
            section.push(
                Measurement::peer(name, "confluent-kafka", n as f64, c.wall_s, Some(c.cpu_s))
                    .rss(c.rss_mib)
                    .against(against),
            );
        }
    }
    let _ = std::io::stdout().flush();
    section.detail = crate::report::take_lines();
    Ok(section)
}
