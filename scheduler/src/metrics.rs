//! Pipeline metrics: counters, queue depths and per-stage latency
//! histograms (hdrhistogram), updated by the stages without locks (but
//! the histograms'), and read as one [`MetricsSnapshot`]: what `/metrics`,
//! the status line and Flight's `pipeline-stats` all show.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Sources whose acknowledged offset is reported at once (one per TCP
/// connection or Flight stream); past it the least recently acknowledged
/// is dropped from the report.
const ACKED_SOURCES_REPORTED_MAX: usize = 256;

/// Latency of one stage, in microseconds, 1 µs to 1 hour, 3 significant digits.
pub struct Latency(Mutex<Histogram<u64>>);

impl Default for Latency {
    fn default() -> Self {
        Self(Mutex::new(
            Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds"),
        ))
    }
}

impl Latency {
    /// Records `count` events that each took `us` microseconds.
    pub fn record(&self, us: u64, count: u64) {
        let mut h = self.0.lock().expect("not poisoned");
        let _ = h.record_n(us.clamp(1, 3_600_000_000), count.max(1));
    }

    /// Records one event per value, each taking that many microseconds,
    /// under one lock.
    pub fn record_all(&self, us: impl Iterator<Item = u64>) {
        let mut h = self.0.lock().expect("not poisoned");
        for us in us {
            let _ = h.record(us.clamp(1, 3_600_000_000));
        }
    }

    /// (p50, p99, p999, count) in microseconds.
    pub fn quantiles(&self) -> (u64, u64, u64, u64) {
        let h = self.0.lock().expect("not poisoned");
        (
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.len(),
        )
    }

    pub fn reset(&self) {
        self.0.lock().expect("not poisoned").reset();
    }
}

/// One pipeline's figures. Counters only grow.
#[derive(Default)]
pub struct PipelineMetrics {
    /// Records from the source: rows plus dead letters.
    pub events_in: AtomicU64,
    /// Rows scored and written to every sink.
    pub events_out: AtomicU64,
    pub events_dead: AtomicU64,
    /// Events an aggregate counted into its windows (not written as rows).
    pub events_aggregated: AtomicU64,
    /// An aggregate's result rows written to every sink.
    pub results_out: AtomicU64,
    pub batches: AtomicU64,
    pub batches_cpu: AtomicU64,
    pub batches_gpu: AtomicU64,
    /// Batches the GPU failed (device lost, out of memory, a timeout) and
    /// the CPU then scored; also counted in `batches_cpu`.
    pub batches_cpu_retried: AtomicU64,
    pub model_reloads: AtomicU64,
    pub model_reload_failures: AtomicU64,
    /// Times every sink held every row written so far durably.
    pub acks: AtomicU64,
    /// Checkpoints taken, the time they took (µs) and the last one's size.
    pub checkpoints: AtomicU64,
    pub checkpoint_us: AtomicU64,
    pub checkpoint_bytes: AtomicU64,
    /// Per source: the offset (in the source's unit) every sink holds
    /// durably, and when it was acknowledged (an ack count), bounded.
    acked: Mutex<BTreeMap<Arc<str>, (u64, u64)>>,
    /// Batches whose order could not be checked (their source was
    /// forgotten past the order table's bound).
    pub order_unchecked_batches: AtomicU64,
    /// Batches a shadow model could not score (its columns null).
    pub shadow_failures: AtomicU64,
    /// Each stateful operator's figures, replaced after each batch.
    operators: Mutex<Vec<OperatorStats>>,
    /// The cost model's estimate of CPU time per row, in nanoseconds.
    pub cpu_ns_per_row_estimate: AtomicU64,
    pub queue_scored: AtomicU64,
    pub queue_ingested: AtomicU64,
    /// From ingest to the score stage taking the batch.
    pub wait_us: Latency,
    /// Scoring one batch, per row.
    pub score_us: Latency,
    /// Writing one batch to every sink.
    pub sink_us: Latency,
    /// From the batch's oldest event's ingest to its rows in every sink.
    pub end_to_end_us: Latency,
    /// From each row's own event time (the pipeline's `event_time` column)
    /// to its rows in every sink: includes time before roo read it.
    pub event_to_sink_us: Latency,
    /// The same since the last [`PipelineMetrics::take_recent_p99_us`]: for
    /// a live view of now rather than since start.
    pub recent_end_to_end_us: Latency,
    /// Online requests answered (scored, or refused rows) and their
    /// batches ([`crate::online`]).
    pub online_requests: AtomicU64,
    pub online_batches: AtomicU64,
    /// Requests refused at once because `requests_max` were in flight.
    pub online_busy: AtomicU64,
    /// From a request's submission to its reply.
    pub online_us: Latency,
    /// A Kafka source's figures (partitions, lag, commits, rebalances,
    /// pauses), once it started.
    pub kafka: Mutex<Option<Arc<roo_ingest::KafkaFigures>>>,
}

impl PipelineMetrics {
    /// p99 end-to-end latency since the last call, in microseconds; resets.
    pub fn take_recent_p99_us(&self) -> u64 {
        let (_, p99, _, _) = self.recent_end_to_end_us.quantiles();
        self.recent_end_to_end_us.reset();
        p99
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Replaces the figures of the operator of that kind and name.
    pub fn set_operator_stats(&self, stats: OperatorStats) {
        let mut all = self.operators.lock().expect("not poisoned");
        match all
            .iter_mut()
            .find(|s| s.kind == stats.kind && s.name == stats.name)
        {
            Some(s) => *s = stats,
            None => all.push(stats),
        }
    }

    /// Records that every sink holds `source` durably through `offset`.
    pub fn ack(&self, source: &Arc<str>, offset: u64) {
        let mut acked = self.acked.lock().expect("not poisoned");
        let n = self.acks.load(Ordering::Relaxed);
        if acked.len() >= ACKED_SOURCES_REPORTED_MAX && !acked.contains_key(source) {
            let oldest = acked
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(s, _)| s.clone())
                .expect("full");
            acked.remove(&oldest);
        }
        match acked.get_mut(source) {
            Some(entry) => *entry = (offset, n),
            None => {
                acked.insert(source.clone(), (offset, n));
            }
        }
    }

    /// The latency of each stage, by the name metrics give it.
    fn stages(&self) -> [(&'static str, &Latency); 6] {
        [
            ("wait", &self.wait_us),
            ("score", &self.score_us),
            ("sink", &self.sink_us),
            ("end_to_end", &self.end_to_end_us),
            ("event_to_sink", &self.event_to_sink_us),
            ("online", &self.online_us),
        ]
    }

    /// Each stage's latency as a histogram with buckets bounded at
    /// `bounds_us` (ascending, microseconds; a last +Inf bucket added).
    pub fn histograms(&self, bounds_us: &[u64]) -> Vec<StageHistogram> {
        self.stages()
            .into_iter()
            .map(|(stage, latency)| {
                let h = latency.0.lock().expect("not poisoned");
                // Per-bucket counts as differences of cumulative ones, so a
                // bucket bound inside one of the histogram's bins is counted once.
                let mut below = 0u64;
                let mut buckets: Vec<(f64, u64)> = bounds_us
                    .iter()
                    .map(|&high| {
                        let cumulative = h.count_between(0, high).max(below);
                        let n = cumulative - below;
                        below = cumulative;
                        (high as f64 / 1e6, n)
                    })
                    .collect();
                buckets.push((f64::MAX, h.len().saturating_sub(below)));
                StageHistogram {
                    stage,
                    sum_s: h.mean() * h.len() as f64 / 1e6,
                    count: h.len(),
                    buckets,
                }
            })
            .collect()
    }

    /// Every figure now, for one pipeline.
    pub fn snapshot(
        &self,
        pipeline: &str,
        source: &str,
        offset_unit: &str,
        model_version: Option<String>,
        failed: bool,
    ) -> MetricsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let latency = |stage: &'static str, h: &Latency| {
            let (p50, p99, p999, count) = h.quantiles();
            StageLatency {
                stage,
                p50_us: p50,
                p99_us: p99,
                p999_us: p999,
                count,
            }
        };
        MetricsSnapshot {
            pipeline: pipeline.to_string(),
            source: source.to_string(),
            model_version,
            failed,
            events_in: get(&self.events_in),
            events_out: get(&self.events_out),
            events_dead: get(&self.events_dead),
            events_aggregated: get(&self.events_aggregated),
            results_out: get(&self.results_out),
            batches: get(&self.batches),
            batches_cpu: get(&self.batches_cpu),
            batches_gpu: get(&self.batches_gpu),
            batches_cpu_retried: get(&self.batches_cpu_retried),
            model_reloads: get(&self.model_reloads),
            model_reload_failures: get(&self.model_reload_failures),
            acks: get(&self.acks),
            checkpoints: get(&self.checkpoints),
            checkpoint_us: get(&self.checkpoint_us),
            checkpoint_bytes: get(&self.checkpoint_bytes),
            order_unchecked_batches: get(&self.order_unchecked_batches),
            shadow_failures: get(&self.shadow_failures),
            online_requests: get(&self.online_requests),
            online_batches: get(&self.online_batches),
            online_busy: get(&self.online_busy),
            acked: self
                .acked
                .lock()
                .expect("not poisoned")
                .iter()
                .map(|(s, (offset, _))| AckedOffset {
                    source: s.to_string(),
                    offset: *offset,
                    unit: offset_unit.to_string(),
                })
                .collect(),
            operators: self.operators.lock().expect("not poisoned").clone(),
            cost_cpu_ns_per_row: get(&self.cpu_ns_per_row_estimate),
            queue_ingested: get(&self.queue_ingested),
            queue_scored: get(&self.queue_scored),
            kafka: self
                .kafka
                .lock()
                .expect("not poisoned")
                .as_deref()
                .map(KafkaSnapshot::of),
            latency: self
                .stages()
                .into_iter()
                .map(|(stage, h)| latency(stage, h))
                .collect(),
        }
    }
}

/// One pipeline's figures at one moment (serialisable: the Flight
/// `pipeline-stats` action returns it as JSON).
#[derive(Clone, Debug, Serialize)]
pub struct MetricsSnapshot {
    pub pipeline: String,
    pub source: String,
    pub model_version: Option<String>,
    pub failed: bool,
    /// Records from the source: rows plus what dead letters stand for.
    pub events_in: u64,
    /// Rows written to every sink.
    pub events_out: u64,
    pub events_dead: u64,
    /// Events an aggregate counted into its windows.
    pub events_aggregated: u64,
    /// An aggregate's result rows written.
    pub results_out: u64,
    pub batches: u64,
    pub batches_cpu: u64,
    pub batches_gpu: u64,
    pub batches_cpu_retried: u64,
    pub model_reloads: u64,
    pub model_reload_failures: u64,
    pub acks: u64,
    pub checkpoints: u64,
    pub checkpoint_us: u64,
    pub checkpoint_bytes: u64,
    pub order_unchecked_batches: u64,
    pub shadow_failures: u64,
    /// Online requests answered, the batches they ran in, and those
    /// refused at `requests_max`.
    pub online_requests: u64,
    pub online_batches: u64,
    pub online_busy: u64,
    /// Per source, the offset every sink holds durably.
    pub acked: Vec<AckedOffset>,
    /// Each stateful operator's state.
    pub operators: Vec<OperatorStats>,
    pub cost_cpu_ns_per_row: u64,
    pub queue_ingested: u64,
    pub queue_scored: u64,
    /// A Kafka source's figures, when the pipeline reads Kafka.
    pub kafka: Option<KafkaSnapshot>,
    pub latency: Vec<StageLatency>,
}

/// A Kafka source's figures at one moment.
#[derive(Clone, Debug, Serialize)]
pub struct KafkaSnapshot {
    pub messages: u64,
    pub rebalances: u64,
    pub pauses: u64,
    pub client_errors: u64,
    pub commits: u64,
    /// Partition snapshots written to the changelog and acknowledged.
    pub snapshots: u64,
    /// Partitions restored from a changelog snapshot.
    pub restores: u64,
    pub partitions: Vec<KafkaPartition>,
}

/// One partition as the group member sees it.
#[derive(Clone, Debug, Serialize)]
pub struct KafkaPartition {
    pub topic: String,
    pub partition: i32,
    /// Whether this process holds the partition now.
    pub assigned: bool,
    /// The group's committed offset (-1: none yet).
    pub committed: i64,
    /// Messages between the consumer's position and the partition's end.
    pub lag: i64,
    /// The partition's end (high watermark).
    pub end: i64,
}

impl KafkaSnapshot {
    fn of(f: &roo_ingest::KafkaFigures) -> Self {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Self {
            messages: get(&f.messages),
            rebalances: get(&f.rebalances),
            pauses: get(&f.pauses),
            client_errors: get(&f.client_errors),
            commits: get(&f.commits),
            snapshots: get(&f.snapshots),
            restores: get(&f.restores),
            partitions: f
                .partitions()
                .into_iter()
                .map(|((topic, partition), p)| KafkaPartition {
                    topic,
                    partition,
                    assigned: p.assigned,
                    committed: p.committed,
                    lag: p.lag,
                    end: p.end,
                })
                .collect(),
        }
    }
}

impl MetricsSnapshot {
    /// The end-to-end latency figures.
    pub fn end_to_end(&self) -> &StageLatency {
        self.latency
            .iter()
            .find(|l| l.stage == "end_to_end")
            .expect("always reported")
    }
}

/// One stage's latency histogram: per-bucket counts with each bucket's
/// upper bound in seconds (the last is +Inf, `f64::MAX`).
#[derive(Clone, Debug)]
pub struct StageHistogram {
    pub stage: &'static str,
    pub sum_s: f64,
    pub count: u64,
    pub buckets: Vec<(f64, u64)>,
}

/// A stateful operator's state: keys held, bytes, what its bounds did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct OperatorStats {
    pub kind: &'static str,
    pub name: String,
    pub keys_held: u64,
    pub state_bytes: u64,
    /// Keys evicted at `keys_max` (least recently seen first).
    pub keys_evicted: u64,
    /// Keys dropped after idling longer than their longest window.
    pub keys_expired: u64,
    /// Events dropped from a key's windows at `events_per_key_max`.
    pub events_dropped: u64,
    /// Events refused as later than the lateness allows.
    pub late_events: u64,
    /// An enrichment's table: rows in the snapshot in use.
    pub table_rows: u64,
    /// Snapshots loaded from the table's file (the first load included).
    pub table_loads: u64,
    /// Loads refused (the snapshot before kept).
    pub table_load_failures: u64,
    /// Upserts applied (Flight DoPut).
    pub table_upserts: u64,
    /// Events that joined no row (null or unknown key, or before the
    /// key's first version).
    pub events_unmatched: u64,
    /// An aggregate's windows emitted.
    pub windows_emitted: u64,
    /// An aggregate's Space-Saving takeovers: a key taking over another's
    /// counter in a pane past `keys_max`.
    pub summary_takeovers: u64,
    /// The audit log: records written, segments and bytes published.
    pub audit_records: u64,
    pub audit_segments: u64,
    pub audit_bytes: u64,
}

/// A source's acknowledged offset: bytes of a stream, or rows.
#[derive(Clone, Debug, Serialize)]
pub struct AckedOffset {
    pub source: String,
    pub offset: u64,
    pub unit: String,
}

/// One stage's latency quantiles, in microseconds, and the events counted.
#[derive(Clone, Debug, Serialize)]
pub struct StageLatency {
    pub stage: &'static str,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub count: u64,
}

/// This process's CPU time (user + system), in nanoseconds.
pub fn process_cpu_ns() -> u64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes one rusage struct we own.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let ns = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1000;
    ns(usage.ru_utime) + ns(usage.ru_stime)
}
