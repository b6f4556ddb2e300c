//! `/metrics`: every pipeline's [`MetricsSnapshot`] in the OpenMetrics
//! text format, encoded by `prometheus-client` (one HELP and TYPE per
//! family, each pipeline a label set within it).
//!
//! Latency per stage is a histogram, `roo_latency_seconds{pipeline,stage}`
//! (buckets counted exactly from the hdrhistogram), with its quantiles
//! beside it as gauges, `roo_latency_quantile_seconds{pipeline,stage,quantile}`.

use std::time::Instant;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use roo_scheduler::metrics::{process_cpu_ns, KafkaPartition, KafkaSnapshot, StageHistogram};
use roo_scheduler::MetricsSnapshot;

use crate::serve::Pipelines;

type Labels = Vec<(&'static str, String)>;

/// Every pipeline's figures and the process's, in the OpenMetrics text
/// format.
pub fn render(pipelines: &Pipelines, started: Instant) -> String {
    // Snapshots are taken with the list locked only to clone it.
    let list: Vec<_> = pipelines.lock().expect("not poisoned").clone();
    let snapshots: Vec<MetricsSnapshot> = list.iter().map(|p| p.snapshot()).collect();
    let histograms: Vec<Vec<StageHistogram>> = list
        .iter()
        .map(|p| p.metrics().histograms(LATENCY_BUCKETS_US))
        .collect();
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Figures {
        snapshots,
        histograms,
        uptime_s: started.elapsed().as_secs_f64(),
        cpu_ns: process_cpu_ns(),
    }));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)
        .expect("writing to a String cannot fail");
    out
}

/// Upper bounds of the latency buckets, in microseconds: 50 µs to 60 s.
const LATENCY_BUCKETS_US: &[u64] = &[
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000, 60_000_000,
];

#[derive(Debug)]
struct Figures {
    snapshots: Vec<MetricsSnapshot>,
    /// Per pipeline, each stage's latency histogram.
    histograms: Vec<Vec<StageHistogram>>,
    uptime_s: f64,
    cpu_ns: u64,
}

fn pipeline(s: &MetricsSnapshot) -> Labels {
    vec![("pipeline", s.pipeline.clone())]
}

impl Figures {
    fn counter(
        &self,
        encoder: &mut DescriptorEncoder,
        name: &str,
        help: &str,
        series: &[(Labels, u64)],
    ) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
        for (labels, v) in series {
            ConstCounter::new(*v).encode(family.encode_family(labels)?)?;
        }
        Ok(())
    }

    fn gauge(
        &self,
        encoder: &mut DescriptorEncoder,
        name: &str,
        help: &str,
        series: &[(Labels, f64)],
    ) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (labels, v) in series {
            ConstGauge::new(*v).encode(family.encode_family(labels)?)?;
        }
        Ok(())
    }

    /// A Kafka source's figures: per partition the group's committed
    /// offset, the lag and whether this process holds it; the client's
    /// rebalances, pauses, errors and commits. Only pipelines that read
    /// Kafka have these series.
    fn kafka(&self, e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let kafka: Vec<(&MetricsSnapshot, &KafkaSnapshot)> = self
            .snapshots
            .iter()
            .filter_map(|s| s.kafka.as_ref().map(|k| (s, k)))
            .collect();
        if kafka.is_empty() {
            return Ok(());
        }
        type Get = fn(&KafkaSnapshot) -> u64;
        let counters: [(&str, &str, Get); 7] = [
            ("roo_kafka_messages", "Kafka messages consumed", |k| {
                k.messages
            }),
            (
                "roo_kafka_rebalances",
                "partitions assigned or revoked (each rebalance event)",
                |k| k.rebalances,
            ),
            (
                "roo_kafka_pauses",
                "times the partitions were paused because the pipeline was full",
                |k| k.pauses,
            ),
            (
                "roo_kafka_client_errors",
                "errors the Kafka client reported and retried (brokers down, transport)",
                |k| k.client_errors,
            ),
            (
                "roo_kafka_commits",
                "offset commits the group coordinator accepted",
                |k| k.commits,
            ),
            (
                "roo_kafka_snapshots",
                "partition state snapshots written to the changelog topic and acknowledged",
                |k| k.snapshots,
            ),
            (
                "roo_kafka_restores",
                "partitions restored from a changelog snapshot when assigned",
                |k| k.restores,
            ),
        ];
        for (name, help, get) in counters {
            let series: Vec<(Labels, u64)> =
                kafka.iter().map(|(s, k)| (pipeline(s), get(k))).collect();
            self.counter(e, name, help, &series)?;
        }
        type PartGet = fn(&KafkaPartition) -> i64;
        let gauges: [(&str, &str, PartGet); 4] = [
            (
                "roo_kafka_committed_offset",
                "per partition, the group's committed offset (-1: none yet)",
                |p| p.committed,
            ),
            (
                "roo_kafka_lag",
                "per partition, messages between this member's position and the partition's end",
                |p| p.lag,
            ),
            (
                "roo_kafka_end_offset",
                "per partition, the partition's end (high watermark)",
                |p| p.end,
            ),
            (
                "roo_kafka_assigned",
                "per partition, 1 while this process holds it",
                |p| i64::from(p.assigned),
            ),
        ];
        for (name, help, get) in gauges {
            let series: Vec<(Labels, f64)> = kafka
                .iter()
                .flat_map(|(s, k)| {
                    k.partitions.iter().map(move |p| {
                        (
                            vec![
                                ("pipeline", s.pipeline.clone()),
                                ("topic", p.topic.clone()),
                                ("partition", p.partition.to_string()),
                            ],
                            get(p) as f64,
                        )
                    })
                })
                .collect();
            self.gauge(e, name, help, &series)?;
        }
        Ok(())
    }

    fn per_pipeline(&self, f: impl Fn(&MetricsSnapshot) -> u64) -> Vec<(Labels, u64)> {
        self.snapshots.iter().map(|s| (pipeline(s), f(s))).collect()
    }
}

impl Collector for Figures {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let e = &mut encoder;
        type Get = fn(&MetricsSnapshot) -> u64;
        let counters: [(&str, &str, Get); 17] = [
            (
                "roo_events_in",
                "records read from the source (rows and dead letters)",
                |s| s.events_in,
            ),
            ("roo_events_out", "rows written to every sink", |s| {
                s.events_out
            }),
            ("roo_events_dead", "events sent to the dead letters", |s| {
                s.events_dead
            }),
            (
                "roo_events_aggregated",
                "events an aggregate counted into its windows (not written as rows)",
                |s| s.events_aggregated,
            ),
            (
                "roo_results_out",
                "an aggregate's window rows written to every sink",
                |s| s.results_out,
            ),
            ("roo_batches", "batches through the operator chain", |s| {
                s.batches
            }),
            (
                "roo_gpu_batches_retried_on_cpu",
                "batches the GPU failed and the CPU scored",
                |s| s.batches_cpu_retried,
            ),
            ("roo_model_reloads", "models swapped in", |s| {
                s.model_reloads
            }),
            (
                "roo_model_reload_failures",
                "reloads refused (the old model kept)",
                |s| s.model_reload_failures,
            ),
            (
                "roo_acks",
                "times every sink held all rows durably and offsets were acknowledged",
                |s| s.acks,
            ),
            (
                "roo_checkpoints",
                "checkpoints taken (state, source position, files published)",
                |s| s.checkpoints,
            ),
            (
                "roo_checkpoint_us",
                "time spent taking checkpoints, microseconds (snapshots, fsyncs, manifest, publish)",
                |s| s.checkpoint_us,
            ),
            (
                "roo_order_unchecked_batches",
                "batches whose source order could not be checked (past the order table's bound)",
                |s| s.order_unchecked_batches,
            ),
            (
                "roo_shadow_failures",
                "batches a shadow model could not score (its columns null)",
                |s| s.shadow_failures,
            ),
            (
                "roo_online_requests",
                "online requests (V2 REST, V2 gRPC, Flight) answered",
                |s| s.online_requests,
            ),
            (
                "roo_online_batches",
                "batches the online requests were coalesced into",
                |s| s.online_batches,
            ),
            (
                "roo_online_busy",
                "online requests refused because requests_max were in flight",
                |s| s.online_busy,
            ),
        ];
        for (name, help, get) in counters {
            self.counter(e, name, help, &self.per_pipeline(get))?;
        }
        let devices: Vec<(Labels, u64)> = self
            .snapshots
            .iter()
            .flat_map(|s| {
                [("cpu", s.batches_cpu), ("gpu", s.batches_gpu)].map(|(d, v)| {
                    (
                        vec![("pipeline", s.pipeline.clone()), ("device", d.to_string())],
                        v,
                    )
                })
            })
            .collect();
        self.counter(
            e,
            "roo_device_batches",
            "batches scored per device",
            &devices,
        )?;
        let acked: Vec<(Labels, f64)> = self
            .snapshots
            .iter()
            .flat_map(|s| {
                s.acked.iter().map(|a| {
                    (
                        vec![
                            ("pipeline", s.pipeline.clone()),
                            ("source", a.source.clone()),
                            ("unit", a.unit.clone()),
                        ],
                        a.offset as f64,
                    )
                })
            })
            .collect();
        self.gauge(
            e,
            "roo_source_acked_offset",
            "per source, the offset every sink holds durably (in the source's unit: bytes of a stream, rows of ready-made batches)",
            &acked,
        )?;
        let gauges: [(&str, &str, Get); 4] = [
            (
                "roo_queue_depth_ingested",
                "batches waiting for the operators",
                |s| s.queue_ingested,
            ),
            (
                "roo_queue_depth_scored",
                "batches waiting for the sinks",
                |s| s.queue_scored,
            ),
            (
                "roo_checkpoint_bytes",
                "the last checkpoint's manifest and snapshots, bytes",
                |s| s.checkpoint_bytes,
            ),
            (
                "roo_cost_cpu_ns_per_row",
                "cost model: CPU scoring time per row",
                |s| s.cost_cpu_ns_per_row,
            ),
        ];
        for (name, help, get) in gauges {
            let series: Vec<(Labels, f64)> = self
                .snapshots
                .iter()
                .map(|s| (pipeline(s), get(s) as f64))
                .collect();
            self.gauge(e, name, help, &series)?;
        }
        // Stateful operators (features): state held and what the bounds did.
        let per_operator = |get: fn(&roo_scheduler::metrics::OperatorStats) -> u64| {
            self.snapshots
                .iter()
                .flat_map(|s| {
                    s.operators.iter().map(move |o| {
                        (
                            vec![
                                ("pipeline", s.pipeline.clone()),
                                ("operator", format!("{} {}", o.kind, o.name)),
                            ],
                            get(o),
                        )
                    })
                })
                .collect::<Vec<_>>()
        };
        let as_f64 = |v: Vec<(Labels, u64)>| -> Vec<(Labels, f64)> {
            v.into_iter().map(|(l, x)| (l, x as f64)).collect()
        };
        self.gauge(
            e,
            "roo_operator_keys",
            "keys an operator holds state for",
            &as_f64(per_operator(|o| o.keys_held)),
        )?;
        self.gauge(
            e,
            "roo_operator_state_bytes",
            "bytes of an operator's keyed state (estimated from what it holds)",
            &as_f64(per_operator(|o| o.state_bytes)),
        )?;
        self.counter(
            e,
            "roo_operator_keys_evicted",
            "keys evicted at keys_max (least recently seen first)",
            &per_operator(|o| o.keys_evicted),
        )?;
        self.counter(
            e,
            "roo_operator_keys_expired",
            "keys dropped after idling longer than their longest window",
            &per_operator(|o| o.keys_expired),
        )?;
        self.counter(
            e,
            "roo_operator_events_dropped",
            "events dropped from a key's windows at events_per_key_max",
            &per_operator(|o| o.events_dropped),
        )?;
        self.counter(
            e,
            "roo_operator_late_events",
            "events later than the lateness allows (dead letters)",
            &per_operator(|o| o.late_events),
        )?;
        // Tables (enrichment): the snapshot in use, loads, upserts, misses.
        self.gauge(
            e,
            "roo_operator_table_rows",
            "rows of the table snapshot an enrichment joins",
            &as_f64(per_operator(|o| o.table_rows)),
        )?;
        self.counter(
            e,
            "roo_operator_table_loads",
            "table snapshots loaded from the file (the first load included)",
            &per_operator(|o| o.table_loads),
        )?;
        self.counter(
            e,
            "roo_operator_table_load_failures",
            "table loads refused (the snapshot before kept)",
            &per_operator(|o| o.table_load_failures),
        )?;
        self.counter(
            e,
            "roo_operator_table_upserts",
            "upserts applied to a table (Flight DoPut)",
            &per_operator(|o| o.table_upserts),
        )?;
        self.counter(
            e,
            "roo_operator_events_unmatched",
            "events that joined no table row (null or unknown key, before the first version)",
            &per_operator(|o| o.events_unmatched),
        )?;
        self.counter(
            e,
            "roo_operator_windows_emitted",
            "windows an aggregate emitted",
            &per_operator(|o| o.windows_emitted),
        )?;
        self.counter(
            e,
            "roo_operator_summary_takeovers",
            "Space-Saving takeovers: a key taking another's counter in a pane past keys_max",
            &per_operator(|o| o.summary_takeovers),
        )?;
        self.counter(
            e,
            "roo_operator_audit_records",
            "records the audit log wrote",
            &per_operator(|o| o.audit_records),
        )?;
        self.counter(
            e,
            "roo_operator_audit_segments",
            "audit segments published",
            &per_operator(|o| o.audit_segments),
        )?;
        self.counter(
            e,
            "roo_operator_audit_bytes",
            "bytes of audit segments and indexes published",
            &per_operator(|o| o.audit_bytes),
        )?;
        let failed: Vec<(Labels, f64)> = self
            .snapshots
            .iter()
            .map(|s| (pipeline(s), if s.failed { 1.0 } else { 0.0 }))
            .collect();
        self.gauge(
            e,
            "roo_pipeline_failed",
            "1 when a stage of the pipeline failed",
            &failed,
        )?;
        self.kafka(e)?;
        {
            let mut family = e.encode_descriptor(
                "roo_latency_seconds",
                "latency per stage: wait (ingest to the operators), score (per row), sink (per batch), end_to_end (oldest event's ingest to every sink), event_to_sink (each row's event time to every sink), online (an online request's submission to its reply)",
                None,
                MetricType::Histogram,
            )?;
            for (s, stages) in self.snapshots.iter().zip(&self.histograms) {
                for h in stages {
                    let labels: Labels = vec![
                        ("pipeline", s.pipeline.clone()),
                        ("stage", h.stage.to_string()),
                    ];
                    family
                        .encode_family(&labels)?
                        .encode_histogram::<NoLabelSet>(h.sum_s, h.count, &h.buckets, None)?;
                }
            }
        }
        let quantiles: Vec<(Labels, f64)> = self
            .snapshots
            .iter()
            .flat_map(|s| {
                s.latency.iter().flat_map(|l| {
                    [("0.5", l.p50_us), ("0.99", l.p99_us), ("0.999", l.p999_us)].map(|(q, us)| {
                        (
                            vec![
                                ("pipeline", s.pipeline.clone()),
                                ("stage", l.stage.to_string()),
                                ("quantile", q.to_string()),
                            ],
                            us as f64 / 1e6,
                        )
                    })
                })
            })
            .collect();
        self.gauge(
            e,
            "roo_latency_quantile_seconds",
            "latency quantiles per stage since start (from the same histograms)",
            &quantiles,
        )?;
        let events: u64 = self.snapshots.iter().map(|s| s.events_out).sum();
        {
            let mut family = e.encode_descriptor(
                "roo_process_cpu_seconds",
                "CPU time of the roo process (user and system)",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(self.cpu_ns as f64 / 1e9)
                .encode(family.encode_family(&Vec::<(&str, String)>::new())?)?;
        }
        self.gauge(
            e,
            "roo_cpu_ns_per_event",
            "process CPU time over events written, since start",
            &[(Vec::new(), self.cpu_ns as f64 / events.max(1) as f64)],
        )?;
        self.gauge(
            e,
            "roo_uptime_seconds",
            "time since the daemon started",
            &[(Vec::new(), self.uptime_s)],
        )?;
        Ok(())
    }
}
