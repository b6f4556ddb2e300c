//! Pipeline metrics: counters, queue depths and per-stage latency
//! histograms (hdrhistogram), rendered in the Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use hdrhistogram::Histogram;

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
    /// Source bytes (or rows) acknowledged: every sink holds them durably.
    pub acked_offset: AtomicU64,
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

    /// Appends this pipeline's metrics to a Prometheus text exposition.
    pub fn render(&self, pipeline: &str, out: &mut String) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let counters = [
            (
                "roo_events_in_total",
                "records read from the source (rows and dead letters)",
                get(&self.events_in),
            ),
            (
                "roo_events_out_total",
                "rows scored and written to every sink",
                get(&self.events_out),
            ),
            (
                "roo_events_dead_total",
                "records sent to the dead letters",
                get(&self.events_dead),
            ),
            ("roo_batches_total", "batches scored", get(&self.batches)),
            (
                "roo_gpu_batches_retried_on_cpu_total",
                "batches the GPU failed and the CPU scored",
                get(&self.batches_cpu_retried),
            ),
            (
                "roo_model_reloads_total",
                "models swapped in",
                get(&self.model_reloads),
            ),
            (
                "roo_model_reload_failures_total",
                "reloads refused (the old model kept)",
                get(&self.model_reload_failures),
            ),
            (
                "roo_acks_total",
                "times every sink held all rows durably and offsets were acknowledged",
                get(&self.acks),
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name}{{pipeline=\"{pipeline}\"}} {v}");
        }
        let _ = writeln!(
            out,
            "# TYPE roo_device_batches_total counter\nroo_device_batches_total{{pipeline=\"{pipeline}\",device=\"cpu\"}} {}\nroo_device_batches_total{{pipeline=\"{pipeline}\",device=\"gpu\"}} {}",
            get(&self.batches_cpu),
            get(&self.batches_gpu)
        );
        let gauges = [
            (
                "roo_source_acked_offset",
                "source offset every sink holds durably",
                get(&self.acked_offset),
            ),
            (
                "roo_queue_depth_ingested",
                "batches waiting to be scored",
                get(&self.queue_ingested),
            ),
            (
                "roo_queue_depth_scored",
                "batches waiting for the sinks",
                get(&self.queue_scored),
            ),
            (
                "roo_cost_cpu_ns_per_row",
                "cost model: CPU scoring time per row",
                get(&self.cpu_ns_per_row_estimate),
            ),
        ];
        for (name, help, v) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{{pipeline=\"{pipeline}\"}} {v}"
            );
        }
        for (stage, h) in [
            ("wait", &self.wait_us),
            ("score", &self.score_us),
            ("sink", &self.sink_us),
            ("end_to_end", &self.end_to_end_us),
            ("event_to_sink", &self.event_to_sink_us),
        ] {
            let (p50, p99, p999, n) = h.quantiles();
            let _ = writeln!(out, "# TYPE roo_latency_seconds summary");
            for (q, v) in [("0.5", p50), ("0.99", p99), ("0.999", p999)] {
                let _ = writeln!(
                    out,
                    "roo_latency_seconds{{pipeline=\"{pipeline}\",stage=\"{stage}\",quantile=\"{q}\"}} {:.6}",
                    v as f64 / 1e6
                );
            }
            let _ = writeln!(
                out,
                "roo_latency_seconds_count{{pipeline=\"{pipeline}\",stage=\"{stage}\"}} {n}"
            );
        }
    }
}

/// This process's CPU time (user + system), in nanoseconds.
pub fn process_cpu_ns() -> u64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes one rusage struct we own.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let ns = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1000;
    ns(usage.ru_utime) + ns(usage.ru_stime)
}
