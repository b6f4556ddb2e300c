//! The headline table: each target the issues set for a scenario (events/s
//! on one core, CPU per event against a peer, scaling), computed from the
//! figures of one run, with the ratio and whether it is met.

use crate::report::{
    Headline, Measurement, Report, FILE_ONE_CORE, FILE_TWO_CORES, KERNEL_ALL, KERNEL_ONE, PY_BATCH,
    PY_STREAM, PY_STREAM_LINES, TCP_PEAK,
};

impl Report {
    /// The headline table from the figures of this run.
    pub fn headlines(&mut self) {
        let mut out = Vec::new();
        if let Some(p) = self.section("pipeline") {
            let roo = p.find(TCP_PEAK);
            let cpu = |m: Option<&Measurement>| m.and_then(|m| m.cpu_ns_per_event);
            for (peer, goal) in [(PY_BATCH, 10.0), (PY_STREAM, 50.0), (PY_STREAM_LINES, 50.0)] {
                if let (Some(r), Some(p)) = (cpu(roo), cpu(p.find(peer))) {
                    out.push(Headline::cpu_share(
                        format!("roo stream CPU per event <= 1/{goal:.0} of {peer}"),
                        r,
                        p,
                        goal,
                    ));
                }
            }
            if let (Some(r), Some(b)) = (
                cpu(p.find(crate::pipeline::ARROW_TCP)),
                cpu(p.find(PY_BATCH)),
            ) {
                out.push(Headline::cpu_share(
                    format!("roo Arrow in (IPC over TCP) CPU per event <= 1/30 of {PY_BATCH}"),
                    r,
                    b,
                    30.0,
                ));
            }
            if let (Some(one), Some(two)) = (p.find(FILE_ONE_CORE), p.find(FILE_TWO_CORES)) {
                let ratio = two.events_per_s / one.events_per_s;
                out.push(Headline {
                    target:
                        "the daemon on 2 cores >= 1.8x its events/s on 1 (file -> score -> file)"
                            .into(),
                    measured: format!(
                        "{ratio:.2}x ({:.0} vs {:.0} events/s)",
                        two.events_per_s, one.events_per_s
                    ),
                    ratio,
                    goal: 1.8,
                    met: ratio >= 1.8,
                });
            }
            let cpu = |name: &str| p.find(name).and_then(|m| m.cpu_ns_per_event);
            if let (Some(off), Some(on)) = (
                cpu(crate::pipeline::AUDIT_OFF),
                cpu(crate::pipeline::AUDIT_ON),
            ) {
                let added = on / off - 1.0;
                out.push(Headline {
                    target: "audit on adds <= 30% CPU per event to the file pipeline".into(),
                    measured: format!("{:+.1}% ({off:.0} -> {on:.0} CPU-ns/event)", added * 100.0),
                    ratio: 0.30 / added.max(1e-9),
                    goal: 1.0,
                    met: added <= 0.30,
                });
            }
        }
        if let Some(s) = self.section("score") {
            let cpu = |name: &str| s.find(name).and_then(|m| m.cpu_ns_per_event);
            if let (Some(roo), Some(peer)) =
                (cpu(crate::score::ROO_SCORE), cpu(crate::score::PY_PREDICT))
            {
                let ratio = peer / roo;
                out.push(Headline {
                    target: "roo score --threads 1, whole process, >= 3.5x less CPU than XGBoost inplace_predict alone".into(),
                    measured: format!("{ratio:.2}x ({roo:.0} vs {peer:.0} CPU-ns/event)"),
                    ratio,
                    goal: 3.5,
                    met: ratio >= 3.5,
                });
            }
        }
        if let Some(f) = self.section("features") {
            if let Some(all) = f.find(crate::features::ROO_ALL) {
                out.push(Headline::rate(
                    "feature operator >= 2M events/s on one core (6 features, Zipf keys)",
                    all.events_per_s,
                    2e6,
                    "events",
                ));
            }
            let cpu = |name: &str| f.find(name).and_then(|m| m.cpu_ns_per_event);
            for (peer, goal) in [
                (crate::features::PANDAS, 10.0),
                (crate::features::PY_STREAM, 50.0),
            ] {
                if let (Some(r), Some(p)) = (cpu(crate::features::ROO_PREFIX), cpu(peer)) {
                    out.push(Headline::cpu_share(
                        format!("features CPU per event <= 1/{goal:.0} of {peer}"),
                        r,
                        p,
                        goal,
                    ));
                }
            }
        }
        if let Some(e) = self.section("enrich") {
            for case in &crate::enrich::CASES {
                let goal = if case.text { 4e6 } else { 10e6 };
                if let Some(all) = e.find(case.roo).filter(|_| case.as_of) {
                    out.push(Headline::rate(
                        format!(
                            "enrich >= {:.0}M lookups/s on one core ({} keys, as-of)",
                            goal / 1e6,
                            if case.text { "string" } else { "integer" }
                        ),
                        all.events_per_s,
                        goal,
                        "lookups",
                    ));
                }
                let roo = format!("{}{}", case.roo, crate::enrich::PREFIX);
                let cpu = |name: &str| e.find(name).and_then(|m| m.cpu_ns_per_event);
                if let (Some(r), Some(p)) = (cpu(&roo), cpu(case.peer)) {
                    out.push(Headline::cpu_share(
                        format!("enrich CPU per event <= 1/5 of {}", case.peer),
                        r,
                        p,
                        5.0,
                    ));
                }
            }
        }
        if let Some(t) = self.section("topk") {
            if let Some(all) = t.find(crate::topk::ROO_ALL) {
                out.push(Headline::rate(
                    "topk >= 5M events/s on one core (exact, Zipf 1.1 hashtags, top 10)",
                    all.events_per_s,
                    5e6,
                    "events",
                ));
            }
            let cpu = |name: &str| t.find(name).and_then(|m| m.cpu_ns_per_event);
            let best_peer = [crate::topk::PY_STREAM, crate::topk::PANDAS]
                .into_iter()
                .filter_map(|p| cpu(p).map(|c| (p, c)))
                .min_by(|a, b| a.1.total_cmp(&b.1));
            if let (Some(r), Some((peer, p))) = (cpu(crate::topk::ROO_PREFIX), best_peer) {
                out.push(Headline::cpu_share(
                    format!("topk CPU per event <= 1/20 of the better peer ({peer})"),
                    r,
                    p,
                    20.0,
                ));
            }
        }
        if let Some(k) = self.section("kafka") {
            let cpu = |name: &str| k.find(name).and_then(|m| m.cpu_ns_per_event);
            for (roo, peer, what) in [
                (crate::kafka::ROO_CSV, crate::kafka::PY_CSV, "CSV messages"),
                (
                    crate::kafka::ROO_ARROW,
                    crate::kafka::PY_ARROW,
                    "Arrow messages",
                ),
            ] {
                if let (Some(r), Some(p)) = (cpu(roo), cpu(peer)) {
                    out.push(Headline::cpu_share(
                        format!(
                            "kafka CPU per event <= 1/10 of Python confluent-kafka + XGBoost, {what}"
                        ),
                        r,
                        p,
                        10.0,
                    ));
                }
            }
        }
        if let Some(a) = self.section("audit") {
            if let Some(show) = a.find(crate::audit::SHOW) {
                let slowest = show.latency.as_ref().map_or(f64::INFINITY, |l| l.p999_ms);
                let records = a.find(crate::audit::BUILD).map_or(0.0, |m| m.events);
                out.push(Headline {
                    target: "roo audit show <= 100 ms on 10M records".into(),
                    measured: format!("slowest {slowest:.1} ms on {:.1}M records", records / 1e6),
                    ratio: 100.0 / slowest,
                    goal: 1.0,
                    met: slowest <= 100.0,
                });
            }
            if let Some(r) = a.find(crate::audit::REPLAY) {
                out.push(Headline::rate(
                    "roo replay >= 1M records/s on one core",
                    r.events_per_s,
                    1e6,
                    "records",
                ));
            }
        }
        if let Some(o) = self.section("online") {
            use crate::online::{GRPC_HALF, GRPC_PEAK, PEER, REST_HALF, REST_PEAK};
            for (protocol, peak, half) in [
                ("REST", REST_PEAK, REST_HALF),
                ("gRPC", GRPC_PEAK, GRPC_HALF),
            ] {
                let peer = peak.replacen("roo", PEER, 1);
                let cpu = |name: &str| o.find(name).and_then(|m| m.cpu_ns_per_event);
                if let (Some(r), Some(p)) = (cpu(peak), cpu(&peer)) {
                    out.push(Headline::cpu_share(
                        format!("online {protocol}: server CPU per 1-event request <= 1/50 of MLServer's"),
                        r,
                        p,
                        50.0,
                    ));
                    out.push(Headline {
                        target: format!(
                            "online {protocol}: server CPU <= 15 µs per request at saturation"
                        ),
                        measured: format!("{:.1} µs", r / 1e3),
                        ratio: 15e3 / r,
                        goal: 1.0,
                        met: r <= 15e3,
                    });
                }
                if let Some(l) = o.find(half).and_then(|m| m.latency) {
                    out.push(Headline {
                        target: format!("online {protocol}: p99 <= 2 ms at 50% of peak"),
                        measured: format!("p99 {:.2} ms (p50 {:.2} ms)", l.p99_ms, l.p50_ms),
                        ratio: 2.0 / l.p99_ms,
                        goal: 1.0,
                        met: l.p99_ms <= 2.0,
                    });
                }
            }
        }
        if let Some(k) = self.section("kernels") {
            for m in k
                .measurements
                .iter()
                .filter(|m| m.name.ends_with(KERNEL_ALL))
            {
                let one_name = m.name.replace(KERNEL_ALL, KERNEL_ONE);
                if let Some(one) = k.find(&one_name) {
                    let ratio = m.events_per_s / one.events_per_s;
                    out.push(Headline {
                        target: format!(
                            "kernel {} on 2 cores >= 1.8x one",
                            m.name.trim_end_matches(KERNEL_ALL)
                        ),
                        measured: format!("{ratio:.2}x"),
                        ratio,
                        goal: 1.8,
                        met: ratio >= 1.8,
                    });
                }
            }
        }
        self.headline = out;
    }
}

impl Headline {
    /// A rate of at least `goal_per_s`, shown in millions of `unit` a second.
    fn rate(target: impl Into<String>, per_s: f64, goal_per_s: f64, unit: &str) -> Self {
        let ratio = per_s / goal_per_s;
        Self {
            target: target.into(),
            measured: format!("{:.2}M {unit}/s", per_s / 1e6),
            ratio,
            goal: 1.0,
            met: ratio >= 1.0,
        }
    }

    /// roo's CPU per event `roo` at most 1/`goal` of a peer's `peer`.
    fn cpu_share(target: String, roo: f64, peer: f64, goal: f64) -> Self {
        let ratio = peer / roo;
        Self {
            target,
            measured: format!("1/{ratio:.1} ({roo:.0} vs {peer:.0} CPU-ns/event)"),
            ratio,
            goal,
            met: ratio >= goal,
        }
    }
}
