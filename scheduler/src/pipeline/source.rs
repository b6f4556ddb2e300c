//! The source stage: a thread that reads a file, generates events or runs
//! a TCP listener, and sends micro-batches into the ingest queue (blocking
//! while it is full: backpressure). A push source has no thread: its
//! pushers send into the queue themselves.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{bounded, Receiver, Sender};
use roo_ingest::{BatchLimits, FileSource, IngestBatch, KafkaSource, TcpSource};

use super::spec::{GeneratorStream, SourceSpec};
use crate::error::{SetupError, StageError};
use crate::generator::{CardGenerator, TransactionGenerator, TweetGenerator};
use crate::metrics::PipelineMetrics;

/// Tells the source to stop: a flag for loops that poll, and a channel
/// whose closing wakes a thread that waits (no sleep loop).
pub(crate) struct StopSignal {
    flag: AtomicBool,
    tx: Mutex<Option<Sender<()>>>,
    rx: Receiver<()>,
}

impl StopSignal {
    pub fn new() -> Arc<Self> {
        let (tx, rx) = bounded(1);
        Arc::new(Self {
            flag: AtomicBool::new(false),
            tx: Mutex::new(Some(tx)),
            rx,
        })
    }

    pub fn stop(&self) {
        self.flag.store(true, Ordering::Release);
        self.tx.lock().expect("not poisoned").take();
    }

    pub fn stopped(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    /// Blocks until [`Self::stop`].
    pub fn wait(&self) {
        let _ = self.rx.recv();
    }

    /// Blocks until [`Self::stop`] or `timeout`; true when stopped.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let _ = self.rx.recv_timeout(timeout);
        self.stopped()
    }
}

/// A stage's body, run on its own thread.
pub(crate) type StageBody = Box<dyn FnOnce() -> Result<(), StageError> + Send>;

/// What starting the source gave.
pub(crate) struct SourceStarted {
    /// The stage thread's body (none for a push source).
    pub body: Option<StageBody>,
    pub tcp_addr: Option<SocketAddr>,
    /// A push source's sender; pushers hold clones for their stream.
    pub push: Option<Sender<IngestBatch>>,
}

/// A generator's clock and where it starts: a restart goes on with the
/// recorded clock, past the events a checkpoint accounted for (the
/// generator is deterministic given its seed and clock).
#[derive(Clone, Copy, Debug)]
pub(crate) struct GeneratorClock {
    /// Its first event's time, µs since the Unix epoch.
    pub start_us: i64,
    /// Events to generate and drop before the first batch.
    pub skip: u64,
}

/// Prepares the source: a TCP listener is bound here (so an error is a
/// setup error and the address is known at once); files and generators
/// start reading when the returned body runs.
#[allow(clippy::too_many_arguments)]
pub(crate) fn start(
    spec: &SourceSpec,
    name: &str,
    limits: BatchLimits,
    file: Option<FileSource>,
    tx: Sender<IngestBatch>,
    stop: Arc<StopSignal>,
    metrics: Arc<PipelineMetrics>,
    clock: GeneratorClock,
) -> Result<SourceStarted, SetupError> {
    Ok(match spec.clone() {
        SourceSpec::File { .. } => {
            let source = file.expect("a file source is opened when resolved");
            let max_rows = limits.max_rows;
            SourceStarted {
                body: Some(Box::new(move || {
                    for b in source.batches(max_rows)? {
                        let b = b?;
                        let records = b.records() as u64;
                        if stop.stopped() || tx.send(b).is_err() {
                            break;
                        }
                        PipelineMetrics::add(&metrics.events_in, records);
                    }
                    Ok(())
                })),
                tcp_addr: None,
                push: None,
            }
        }
        SourceSpec::Generator {
            rate_per_s,
            events,
            seed,
            stream,
        } => SourceStarted {
            body: Some(Box::new(move || {
                run_generator(
                    rate_per_s, events, seed, stream, limits, clock, &stop, &tx, &metrics,
                );
                Ok(())
            })),
            tcp_addr: None,
            push: None,
        },
        SourceSpec::Tcp(config) => {
            let sender = tx.clone();
            let m = metrics.clone();
            let tcp = TcpSource::start(
                config,
                Box::new(move |b: IngestBatch| {
                    let records = b.records() as u64;
                    let sent = sender.send(b).is_ok();
                    if sent {
                        PipelineMetrics::add(&m.events_in, records);
                    }
                    sent
                }),
            )?;
            let addr = tcp.local_addr();
            tracing::info!("pipeline {name}: listening on tcp://{addr}");
            SourceStarted {
                body: Some(Box::new(move || {
                    stop.wait();
                    let report = tcp.stop()?;
                    tracing::info!("tcp source stopped: {report:?}");
                    drop(tx);
                    Ok(())
                })),
                tcp_addr: Some(addr),
                push: None,
            }
        }
        SourceSpec::Kafka(config) => {
            let m = metrics.clone();
            let kafka = KafkaSource::start(
                config,
                tx.clone(),
                Box::new(move |records| PipelineMetrics::add(&m.events_in, records)),
            )?;
            *metrics.kafka.lock().expect("not poisoned") = Some(kafka.figures());
            SourceStarted {
                body: Some(Box::new(move || {
                    stop.wait();
                    // The consumer hands on nothing more; the pipeline
                    // drains, and the consumer commits what it reports
                    // durable before leaving the group.
                    drop(tx);
                    kafka.stop()?;
                    Ok(())
                })),
                tcp_addr: None,
                push: None,
            }
        }
        SourceSpec::Push { .. } => SourceStarted {
            body: None,
            tcp_addr: None,
            push: Some(tx),
        },
        // Requests come on their own queue; the source queue ends at once.
        SourceSpec::Requests { .. } => SourceStarted {
            body: None,
            tcp_addr: None,
            push: None,
        },
    })
}

#[allow(clippy::too_many_arguments)]
fn run_generator(
    rate_per_s: u64,
    events: u64,
    seed: u64,
    stream: GeneratorStream,
    limits: BatchLimits,
    clock: GeneratorClock,
    stop: &StopSignal,
    tx: &Sender<IngestBatch>,
    metrics: &PipelineMetrics,
) {
    let mut features = CardGenerator::new(seed);
    // Raw transactions carry event times: from the clock's start, as fast
    // as the rate (1 ms apart when flat out).
    let now_us = clock.start_us;
    let gap_us = if rate_per_s > 0 {
        1e6 / rate_per_s as f64
    } else {
        1e3
    };
    let mut transactions = TransactionGenerator::new(seed, now_us, gap_us);
    // Tweets: 100,000 hashtags, Zipf 1.1, with trends.
    let mut tweets = (stream == GeneratorStream::Tweets)
        .then(|| TweetGenerator::new(seed, now_us, gap_us, 100_000, 1.1, true));
    let source: Arc<str> = Arc::from("generator");
    let started = Instant::now();
    let mut produced = 0u64;
    let mut seq = 0;
    let mut make = |rows: usize| match stream {
        GeneratorStream::Features => features.batch(rows),
        GeneratorStream::Transactions => transactions.batch(rows),
        GeneratorStream::Tweets => tweets
            .as_mut()
            .expect("made for the tweets stream")
            .batch(rows),
    };
    // A restart: the events a checkpoint accounted for, made and dropped.
    while produced < clock.skip && !stop.stopped() {
        let rows = (clock.skip - produced).min(limits.max_rows as u64);
        make(rows as usize);
        produced += rows;
    }
    let skipped = produced;
    // At a set rate, a batch is what arrives in one linger period.
    let per_batch = if rate_per_s == 0 {
        limits.max_rows as u64
    } else {
        ((rate_per_s as f64 * limits.linger.as_secs_f64()).ceil() as u64)
            .clamp(1, limits.max_rows as u64)
    };
    while !stop.stopped() && (events == 0 || produced < events) {
        let rows = if events == 0 {
            per_batch
        } else {
            per_batch.min(events - produced)
        };
        if rate_per_s > 0 {
            let due = started
                + Duration::from_secs_f64((produced - skipped + rows) as f64 / rate_per_s as f64);
            let now = Instant::now();
            if due > now && stop.wait_timeout(due - now) {
                return;
            }
        }
        let batch = make(rows as usize);
        let b = IngestBatch {
            source: source.clone(),
            seq,
            offsets: produced..produced + rows,
            ingest_time: SystemTime::now(),
            batch,
            dead_letters: Vec::new(),
        };
        if tx.send(b).is_err() {
            return;
        }
        seq += 1;
        produced += rows;
        PipelineMetrics::add(&metrics.events_in, rows);
    }
}
