//! `roo-bench features`: the feature operator alone on one core, over
//! events whose keys follow a Zipf law (a few cards very busy, most quiet),
//! six features: count and sum over 1 h, mean and std over 24 h, time since
//! the last event, distinct merchants over 24 h. Beside it, on a prefix of
//! the same events, the two things a team writes instead: pandas
//! (`groupby(card).rolling(...)`, the backfill a data scientist writes) and
//! a per-event Python stream (a dict of deques per card).

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use roo_scheduler::operators::features::{
    parse_duration_us, Agg, FeatureOperator, FeatureSpec, StateLimits,
};
use roo_scheduler::operators::{Flow, Operator, Step};
use roo_scheduler::PipelineMetrics;

use crate::report::{process_peak_rss_mib, reset_peak_rss, Measurement, Run, Section};

/// The operator alone on one core: what the target is stated for.
pub const ROO_ALL: &str = "roo, feature operator, one core, all events";
/// The same on the peers' prefix: the figure their ratios use.
pub const ROO_PREFIX: &str = "roo, feature operator, one core, the peers' events";
pub const PANDAS: &str = "pandas groupby().rolling() backfill";
pub const PY_STREAM: &str = "Python stream, dict of deques per card";

const BATCH_ROWS: usize = 8192;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("card_id", DataType::Int64, false),
        Field::new("merchant_id", DataType::Int64, false),
        Field::new("ts", DataType::Int64, false),
        Field::new("amount", DataType::Float64, false),
    ]))
}

fn specs() -> Vec<FeatureSpec> {
    let f = |name: &str, agg, column: Option<&str>, window: &str| FeatureSpec {
        name: name.into(),
        key: vec!["card_id".into()],
        agg,
        column: column.map(str::to_string),
        window_us: if window.is_empty() {
            0
        } else {
            parse_duration_us(window).expect("valid")
        },
    };
    vec![
        f("count_1h", Agg::Count, None, "1h"),
        f("sum_1h", Agg::Sum, Some("amount"), "1h"),
        f("mean_24h", Agg::Mean, Some("amount"), "24h"),
        f("std_24h", Agg::Std, Some("amount"), "24h"),
        f("since_last", Agg::TimeSinceLast, None, ""),
        f(
            "merchants_24h",
            Agg::CountDistinct,
            Some("merchant_id"),
            "24h",
        ),
    ]
}

/// `events` events over `keys` cards (Zipf, exponent 1.1) and 10,000
/// merchants, 10 ms apart on average: ten million span about 28 hours.
fn generate(events: usize, keys: usize) -> Vec<RecordBatch> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    // The Zipf law's cumulative distribution, inverted by binary search.
    let mut cdf: Vec<f64> = (1..=keys).map(|k| (k as f64).powf(-1.1)).collect();
    let mut total = 0.0;
    for c in cdf.iter_mut() {
        total += *c;
        *c = total;
    }
    let mut ts: i64 = 1_790_000_000_000_000;
    let mut batches = Vec::new();
    let mut at = 0;
    while at < events {
        let n = BATCH_ROWS.min(events - at);
        let (mut card, mut merchant, mut time, mut amount) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for _ in 0..n {
            let u = uniform() * total;
            card.push(cdf.partition_point(|&c| c < u) as i64);
            merchant.push((uniform() * 10_000.0) as i64);
            ts += (-10_000.0 * uniform().ln()) as i64;
            time.push(ts);
            amount.push(((3.5 + 1.1 * (uniform() - 0.5) * 3.4).exp() * 100.0).round() / 100.0);
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(card)),
            Arc::new(Int64Array::from(merchant)),
            Arc::new(Int64Array::from(time)),
            Arc::new(Float64Array::from(amount)),
        ];
        batches.push(RecordBatch::try_new(schema(), columns).expect("built to the schema"));
        at += n;
    }
    batches
}

/// Runs the operator over `batches`: (run, keys held, state bytes, events held).
fn time_operator(batches: &[RecordBatch]) -> Result<(Run, usize, usize, usize)> {
    let mut op = FeatureOperator::new(
        &specs(),
        StateLimits {
            lateness_us: 0,
            keys_max: 10_000_000,
            events_per_key_max: 10_000_000,
        },
        Some(2),
        &schema(),
        Arc::new(PipelineMetrics::default()),
    )?;
    let (run, _) = time_batches(&mut op, batches)?;
    Ok((run, op.keys_held(), op.state_bytes(), op.events_held()))
}

/// Times one operator over `batches` on this thread (CPU time of the
/// process), its own flows (an aggregate's windows) emitted after each
/// batch and at the end as a pipeline does; every event must be accounted
/// for. Returns the run and the result rows emitted.
pub(crate) fn time_batches(op: &mut dyn Operator, batches: &[RecordBatch]) -> Result<(Run, usize)> {
    let (run, (events, results)) = Run::time(|| {
        let (mut events, mut results) = (0, 0);
        let mut own = Vec::new();
        for b in batches {
            let flow = Flow::of_events(Arc::from("bench"), 0, 0..0, b.clone());
            if let Step::Done(f) = op.begin(flow) {
                events += f.records();
            }
            op.emit(false, &mut own);
            results += own.drain(..).map(|f| f.rows()).sum::<usize>();
        }
        op.emit(true, &mut own);
        results += own.drain(..).map(|f| f.rows()).sum::<usize>();
        (events, results)
    });
    anyhow::ensure!(
        events == batches.iter().map(|b| b.num_rows() as u64).sum::<u64>(),
        "every event is accounted for"
    );
    Ok((run, results))
}

/// Writes `batches` (at least one) to an Arrow IPC file for a peer to read.
pub(crate) fn write_ipc(path: &Path, batches: &[RecordBatch]) -> Result<()> {
    let mut w = arrow_ipc::writer::FileWriter::try_new(
        std::fs::File::create(path).with_context(|| path.display().to_string())?,
        &batches[0].schema(),
    )?;
    for b in batches {
        w.write(b)?;
    }
    w.finish()?;
    Ok(())
}

/// The first `n` events of `batches`.
pub(crate) fn prefix(batches: &[RecordBatch], n: usize) -> Vec<RecordBatch> {
    let mut left = n;
    batches
        .iter()
        .map_while(|b| {
            (left > 0).then(|| {
                let k = left.min(b.num_rows());
                left -= k;
                b.slice(0, k)
            })
        })
        .collect()
}

pub fn run(
    events: usize,
    keys: usize,
    peer_events: usize,
    python: Option<&str>,
    cache: &Path,
) -> Result<Section> {
    let mut section = Section::new(
        "features",
        "Per-key rolling features: the operator on one core, beside pandas and a Python stream",
    );
    section.note(
        "Six features per event (count and sum over 1 h, mean and std over 24 h, time since the \
         card's last event, distinct merchants over 24 h) keyed by card; cards drawn by a Zipf law \
         (exponent 1.1). roo: the feature operator alone on one thread over in-memory Arrow \
         batches of 8,192 events (CPU time of the process over the loop). Peers: pandas \
         groupby().rolling() and a per-event Python loop, one thread, on the first events of the \
         same stream, timed from the data in memory.",
    );
    crate::report::step("features: generating the events");
    let batches = generate(events, keys);
    say!("features: {events} events over {keys} cards (Zipf 1.1), 10,000 merchants, 6 features");
    crate::report::step("features: roo, all events");
    reset_peak_rss();
    let rss_before = process_peak_rss_mib();
    let (run, held, bytes, window_events) = time_operator(&batches)?;
    let rss = process_peak_rss_mib();
    let per_key = (bytes as f64 - 32.0 * window_events as f64) / held.max(1) as f64;
    say!(
        "  roo: {:.2} M events/s on one core, {:.0} CPU-ns/event; {held} keys held, {window_events} events in windows, \
         {:.1} MiB of state ({:.0} bytes/key beside 32 bytes per event held); peak RSS {rss:.0} MiB (+{:.0} MiB)",
        events as f64 / run.wall_s / 1e6,
        run.cpu_s * 1e9 / events as f64,
        bytes as f64 / (1 << 20) as f64,
        per_key,
        rss - rss_before
    );
    section
        .push(Measurement::roo(ROO_ALL, events as f64, run.wall_s, Some(run.cpu_s)).rss(Some(rss)));
    let Some(python) = python else {
        section.detail = crate::report::take_lines();
        return Ok(section);
    };
    let peer_events = peer_events.min(events);
    crate::report::step("features: the peers' events");
    let prefix = prefix(&batches, peer_events);
    let (roo_prefix, ..) = time_operator(&prefix)?;
    section.push(Measurement::roo(
        ROO_PREFIX,
        peer_events as f64,
        roo_prefix.wall_s,
        Some(roo_prefix.cpu_s),
    ));
    std::fs::create_dir_all(cache)?;
    let path = cache.join(format!("features_{peer_events}_{keys}.arrow"));
    write_ipc(&path, &prefix)?;
    crate::report::step("features: pandas and a Python stream");
    let out = crate::run_script(
        python,
        "features_peers.py",
        &[path.to_str().context("path")?],
    )?;
    let peers: serde_json::Value = serde_json::from_str(out.trim())?;
    for (key, name) in [("pandas", PANDAS), ("stream", PY_STREAM)] {
        let p = &peers[key];
        let cpu = p["cpu_s"].as_f64().context("features_peers.py: cpu_s")?;
        let wall = p["wall_s"].as_f64().context("features_peers.py: wall_s")?;
        let rss = p["peak_rss_mib"].as_f64();
        say!(
            "  {name}: {:.0} events/s, {:.0} CPU-ns/event ({:.0}x roo's {:.0})",
            peer_events as f64 / wall,
            cpu * 1e9 / peer_events as f64,
            cpu / roo_prefix.cpu_s,
            roo_prefix.cpu_s * 1e9 / peer_events as f64
        );
        section.push(
            Measurement::peer(name, key, peer_events as f64, wall, Some(cpu))
                .rss(rss)
                .against(ROO_PREFIX),
        );
    }
    section.detail = crate::report::take_lines();
    Ok(section)
}
