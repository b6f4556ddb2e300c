//! `roo-bench topk`: sliding-window top-K (Nexmark's "hot items") — the
//! aggregate operator alone on one core counting hashtags over 5-minute
//! windows every 10 seconds, the top 10 of each, exact mode — beside a
//! Python stream (a `collections.Counter` per pane, `heapq` per window)
//! and pandas (`groupby` per window) on a prefix of the same events, the
//! peers' windows checked against roo's.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::RecordBatch;
use roo_scheduler::generator::{tweet_schema, TweetGenerator};
use roo_scheduler::operators::aggregate::{AggFn, AggregateOperator, AggregateSpec};
use roo_scheduler::operators::{Flow, Operator, Step};
use roo_scheduler::PipelineMetrics;

use crate::features::{prefix, write_ipc};
use crate::report::{process_peak_rss_mib, reset_peak_rss, Measurement, Run, Section};

pub const ROO_ALL: &str = "roo, aggregate top-10, one core, all events";
pub const ROO_PREFIX: &str = "roo, aggregate top-10, one core, the peers' events";
pub const PY_STREAM: &str = "Python, Counter per pane, heapq per window";
pub const PANDAS: &str = "pandas, groupby per window";
pub const ROO_SUMMARY: &str = "roo, aggregate top-10, Space-Saving (keys_max 1,000), one core";

/// Counters per pane in the summary run: far fewer than a pane's hashtags.
const SUMMARY_KEYS_MAX: usize = 1_000;

const BATCH_ROWS: usize = 8192;
const START: i64 = 1_790_000_000_000_000;
/// The events span an hour of event time: 360 windows.
const SPAN_US: f64 = 3600e6;
const WINDOW_US: i64 = 300_000_000;
const EVERY_US: i64 = 10_000_000;
const TOP: usize = 10;

fn spec(keys_max: usize) -> AggregateSpec {
    AggregateSpec {
        name: "top_hashtags".into(),
        key: vec!["hashtag".into()],
        agg: AggFn::Count,
        column: None,
        window_us: WINDOW_US,
        every_us: EVERY_US,
        top: TOP,
        keys_max,
        lateness_us: 1_000_000,
    }
}

/// Tweets in time order: hashtags Zipf(1.1) over `keys` ranks, no trends.
fn generate(events: usize, keys: usize) -> Vec<RecordBatch> {
    let mut g = TweetGenerator::new(11, START, SPAN_US / events as f64, keys, 1.1, false);
    let mut batches = Vec::new();
    let mut at = 0;
    while at < events {
        let n = BATCH_ROWS.min(events - at);
        batches.push(g.batch(n));
        at += n;
    }
    batches
}

/// Exact: more than any pane's distinct hashtags.
const EXACT: usize = 1 << 22;

/// What a run produced: rows, each window's first row (end, key, count),
/// the largest error bound, the operator's state and takeovers.
struct Windows {
    rows: usize,
    firsts: Vec<(i64, String, i64)>,
    error_max: i64,
    state_bytes: u64,
    keys_held: u64,
    takeovers: u64,
}

/// Times the operator over `batches` (emitting after each, as a
/// pipeline does), CPU time of the process.
fn time_operator(batches: &[RecordBatch], keys_max: usize) -> Result<(Run, Windows)> {
    let metrics = Arc::new(PipelineMetrics::default());
    let mut op =
        AggregateOperator::new(&spec(keys_max), Some(1), &tweet_schema(), metrics.clone())?;
    let mut own = Vec::new();
    let (run, aggregated) = Run::time(|| {
        let mut aggregated = 0;
        for b in batches {
            let flow = Flow::of_events(Arc::from("bench"), 0, 0..0, b.clone());
            if let Step::Done(f) = op.begin(flow) {
                aggregated += f.aggregated;
            }
            op.emit(false, &mut own);
        }
        op.emit(true, &mut own);
        aggregated
    });
    let events: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
    anyhow::ensure!(
        aggregated == events,
        "{aggregated} of {events} events aggregated"
    );
    let mut w = Windows {
        rows: 0,
        firsts: Vec::new(),
        error_max: 0,
        state_bytes: 0,
        keys_held: 0,
        takeovers: 0,
    };
    for f in own {
        let b = f.batch.context("a window's rows")?;
        w.rows += b.num_rows();
        let errors = b.column(5).as_primitive::<Int64Type>();
        w.error_max = w
            .error_max
            .max(errors.values().iter().copied().max().unwrap_or(0));
        let end = b.column(1).as_primitive::<Int64Type>().value(0);
        let key = b.column(3).as_string::<i32>().value(0).to_string();
        let value = b.column(4).as_primitive::<Int64Type>().value(0);
        w.firsts.push((end, key, value));
    }
    let stats = metrics.snapshot("bench", "bench", "rows", None, false);
    if let Some(o) = stats.operators.first() {
        w.state_bytes = o.state_bytes;
        w.keys_held = o.keys_held;
        w.takeovers = o.summary_takeovers;
    }
    Ok((run, w))
}

pub fn run(
    events: usize,
    keys: usize,
    peer_events: usize,
    python: Option<&str>,
    cache: &Path,
) -> Result<Section> {
    let mut section = Section::new(
        "topk",
        "Sliding-window top-K: trending hashtags on one core, beside Python and pandas",
    );
    section.note(format!(
        "Tweets whose hashtags follow a Zipf law (exponent 1.1) over {keys} ranks, in time order \
         over an hour of event time; per hashtag the tweets in 5-minute windows ending every 10 \
         seconds, the top 10 of each window (value descending, hashtag ascending), exact. roo: the \
         aggregate operator alone on one thread over in-memory Arrow batches of 8,192 events, \
         windows emitted after each batch (CPU time of the process over the loop). Peers, one \
         thread, on the first events of the same stream, timed from the data in memory: a Python \
         stream counting each pane in a collections.Counter and summing a window's 30 panes for \
         heapq.nsmallest, and pandas filtering each window and grouping it; both must find roo's \
         top hashtag in every window."
    ));
    crate::report::step("topk: generating the events");
    let batches = generate(events, keys);
    crate::report::step("topk: roo, all events");
    reset_peak_rss();
    let rss_before = process_peak_rss_mib();
    let (run, w) = time_operator(&batches, EXACT)?;
    let rss = process_peak_rss_mib();
    say!(
        "  {ROO_ALL}: {:.2} M events/s on one core, {:.0} CPU-ns/event; {} windows, {} rows; \
         {} hashtags held at the end, {:.1} MiB of state; peak RSS {rss:.0} MiB (+{:.0} MiB)",
        events as f64 / run.wall_s / 1e6,
        run.cpu_s * 1e9 / events as f64,
        w.firsts.len(),
        w.rows,
        w.keys_held,
        w.state_bytes as f64 / (1 << 20) as f64,
        rss - rss_before
    );
    section
        .push(Measurement::roo(ROO_ALL, events as f64, run.wall_s, Some(run.cpu_s)).rss(Some(rss)));
    crate::report::step("topk: roo, Space-Saving");
    let (summary, sw) = time_operator(&batches, SUMMARY_KEYS_MAX)?;
    let same_leader = sw
        .firsts
        .iter()
        .zip(&w.firsts)
        .filter(|(a, b)| a.1 == b.1)
        .count();
    say!(
        "  {ROO_SUMMARY}: {:.2} M events/s, {:.0} CPU-ns/event; {} takeovers; largest error bound {}; \
         the exact leader in {same_leader} of {} windows; {:.1} MiB of state",
        events as f64 / summary.wall_s / 1e6,
        summary.cpu_s * 1e9 / events as f64,
        sw.takeovers,
        sw.error_max,
        w.firsts.len(),
        sw.state_bytes as f64 / (1 << 20) as f64
    );
    section.push(Measurement::roo(
        ROO_SUMMARY,
        events as f64,
        summary.wall_s,
        Some(summary.cpu_s),
    ));
    let Some(python) = python else {
        section.detail = crate::report::take_lines();
        return Ok(section);
    };
    let peer_events = peer_events.min(events);
    crate::report::step("topk: the peers' events");
    let first = prefix(&batches, peer_events);
    drop(batches);
    let (roo_prefix, mine) = time_operator(&first, EXACT)?;
    section.push(Measurement::roo(
        ROO_PREFIX,
        peer_events as f64,
        roo_prefix.wall_s,
        Some(roo_prefix.cpu_s),
    ));
    std::fs::create_dir_all(cache)?;
    let path = cache.join(format!("topk_{peer_events}_{keys}.arrow"));
    write_ipc(&path, &first)?;
    drop(first);
    crate::report::step("topk: Python and pandas");
    let out = crate::run_script(
        python,
        "topk_peers.py",
        &[
            path.to_str().context("path")?,
            &WINDOW_US.to_string(),
            &EVERY_US.to_string(),
            &TOP.to_string(),
        ],
    )?;
    let peers: serde_json::Value = serde_json::from_str(out.trim())?;
    for (key, name) in [("stream", PY_STREAM), ("pandas", PANDAS)] {
        let p = &peers[key];
        let cpu = p["cpu_s"].as_f64().context("topk_peers.py: cpu_s")?;
        let wall = p["wall_s"].as_f64().context("topk_peers.py: wall_s")?;
        let rows = p["rows"].as_u64().context("topk_peers.py: rows")? as usize;
        let firsts: Vec<(i64, String, i64)> = serde_json::from_value(p["firsts"].clone())?;
        // The same windows: as many rows, the same leader in each.
        anyhow::ensure!(
            rows == mine.rows && firsts == mine.firsts,
            "{name}: {rows} rows and {} windows; roo {} rows and {} windows (first leaders {:?} vs {:?})",
            firsts.len(),
            mine.rows,
            mine.firsts.len(),
            firsts.first(),
            mine.firsts.first()
        );
        say!(
            "  {name}: {:.0} events/s, {:.0} CPU-ns/event ({:.1}x roo's {:.0}); the same {} windows",
            peer_events as f64 / wall,
            cpu * 1e9 / peer_events as f64,
            cpu / roo_prefix.cpu_s,
            roo_prefix.cpu_s * 1e9 / peer_events as f64,
            firsts.len()
        );
        section.push(
            Measurement::peer(name, key, peer_events as f64, wall, Some(cpu))
                .rss(p["peak_rss_mib"].as_f64())
                .against(ROO_PREFIX),
        );
    }
    section.detail = crate::report::take_lines();
    Ok(section)
}
