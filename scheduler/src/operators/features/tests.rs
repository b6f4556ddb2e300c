//! The features against a plain reference written the obvious way: for
//! every event, look at every earlier-arrived event of its key.

use crate::operators::test_rng::Rng;
use std::collections::HashSet;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use arrow_array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use super::*;
use crate::operators::{Flow, Operator, Step};

/// One generated event: key (None: null), time µs, amount (None: null), merchant.
#[derive(Clone, Debug)]
struct Event {
    key: Option<i64>,
    t: i64,
    amount: Option<f64>,
    merchant: Option<String>,
}

const S: i64 = 1_000_000;

/// Ties, gaps, out-of-order events within `lateness` of the stream's
/// newest time, a few beyond it, null keys and null values.
fn stream(seed: u64, n: usize, keys: u64, lateness: i64) -> Vec<Event> {
    let mut r = Rng(seed | 1);
    let mut clock = 1_700_000_000 * S;
    (0..n)
        .map(|_| {
            clock += match r.below(10) {
                0..=2 => 0,                                   // ties
                3..=7 => (r.below(60) as i64 + 1) * S,        // seconds apart
                8 => (r.below(7200) as i64) * S,              // minutes to hours
                _ => (r.below(3) as i64 + 1) * 3600 * S * 12, // gaps past the windows
            };
            let t = if r.chance(0.2) && lateness > 0 {
                clock - r.below(lateness as u64 + 1) as i64
            } else if r.chance(0.03) {
                clock - lateness - (r.below(600) as i64 + 1) * S
            } else {
                clock
            };
            Event {
                key: (!r.chance(0.05)).then(|| r.below(keys) as i64),
                t,
                amount: (!r.chance(0.1)).then(|| (r.below(100_000) as f64) / 100.0 - 200.0),
                merchant: (!r.chance(0.05)).then(|| format!("m{}", r.below(7))),
            }
        })
        .collect()
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("card", DataType::Int64, true),
        Field::new("ts", DataType::Int64, true),
        Field::new("amount", DataType::Float64, true),
        Field::new("merchant", DataType::Utf8, true),
    ]))
}

fn batch(events: &[Event]) -> RecordBatch {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(
            events.iter().map(|e| e.key).collect::<Vec<_>>(),
        )),
        Arc::new(Int64Array::from(
            events.iter().map(|e| Some(e.t)).collect::<Vec<_>>(),
        )),
        Arc::new(Float64Array::from(
            events.iter().map(|e| e.amount).collect::<Vec<_>>(),
        )),
        Arc::new(StringArray::from(
            events
                .iter()
                .map(|e| e.merchant.clone())
                .collect::<Vec<_>>(),
        )),
    ];
    RecordBatch::try_new(schema(), columns).unwrap()
}

fn feature(name: &str, agg: Agg, column: Option<&str>, window: &str) -> FeatureSpec {
    FeatureSpec {
        name: name.into(),
        key: vec!["card".into()],
        agg,
        column: column.map(str::to_string),
        window_us: if window.is_empty() {
            0
        } else {
            parse_duration_us(window).unwrap()
        },
    }
}

fn all_features() -> Vec<FeatureSpec> {
    vec![
        feature("n_1h", Agg::Count, None, "1h"),
        feature("sum_1h", Agg::Sum, Some("amount"), "1h"),
        feature("mean_1d", Agg::Mean, Some("amount"), "24h"),
        feature("std_1d", Agg::Std, Some("amount"), "24h"),
        feature("min_10m", Agg::Min, Some("amount"), "10m"),
        feature("max_10m", Agg::Max, Some("amount"), "10m"),
        feature("last_1h", Agg::Last, Some("amount"), "1h"),
        feature("merchants_1d", Agg::CountDistinct, Some("merchant"), "24h"),
        feature("since", Agg::TimeSinceLast, None, ""),
        feature("n_10m", Agg::Count, None, "10m"),
        feature("sum_10m", Agg::Sum, Some("amount"), "10m"),
    ]
}

fn operator(specs: &[FeatureSpec], limits: StateLimits) -> FeatureOperator {
    FeatureOperator::new(
        specs,
        limits,
        Some(1),
        &schema(),
        Arc::new(crate::metrics::PipelineMetrics::default()),
    )
    .unwrap()
}

/// One output value: an integer, a float, or null.
#[derive(Clone, Copy, Debug, PartialEq)]
enum V {
    I(i64),
    F(f64),
    Null,
}

/// Runs `events` through `op` in batches of the given sizes; returns the
/// rows out (feature values) and the dead letters' count.
fn run(op: &mut FeatureOperator, events: &[Event], sizes: &[usize]) -> (Vec<Vec<V>>, usize) {
    let mut out = Vec::new();
    let mut dead = 0;
    let mut at = 0;
    let mut i = 0;
    while at < events.len() {
        let n = sizes[i % sizes.len()].min(events.len() - at);
        i += 1;
        let flow = Flow::of_events(Arc::from("test"), 0, 0..0, batch(&events[at..at + n]));
        at += n;
        let Step::Done(flow) = op.begin(flow) else {
            panic!("features finish at once")
        };
        dead += flow.dead_letters.len();
        out.extend(values_of(&flow.batch.unwrap()));
    }
    (out, dead)
}

/// The reference: every event against all earlier-arrived accepted events.
fn reference(specs: &[FeatureSpec], events: &[Event], lateness: i64) -> (Vec<Vec<V>>, usize) {
    let mut accepted: Vec<&Event> = Vec::new();
    let mut out = Vec::new();
    let mut dead = 0;
    for e in events {
        if let Some(k) = e.key {
            let newest = accepted
                .iter()
                .filter(|p| p.key == Some(k))
                .map(|p| p.t)
                .max();
            if newest.is_some_and(|n| e.t < n - lateness) {
                dead += 1;
                continue;
            }
        }
        let row = specs
            .iter()
            .map(|s| {
                let Some(k) = e.key else { return V::Null };
                let mine: Vec<&&Event> = accepted.iter().filter(|p| p.key == Some(k)).collect();
                if s.agg == Agg::TimeSinceLast {
                    return match mine.iter().filter(|p| p.t <= e.t).map(|p| p.t).max() {
                        Some(p) => V::F((e.t - p) as f64 / 1e6),
                        None => V::Null,
                    };
                }
                let window: Vec<&&&Event> = mine
                    .iter()
                    .filter(|p| e.t - s.window_us < p.t && p.t <= e.t)
                    .collect();
                let xs: Vec<f64> = window.iter().filter_map(|p| p.amount).collect();
                let float = |v: Option<f64>| v.map_or(V::Null, V::F);
                match s.agg {
                    Agg::Count => V::I(window.len() as i64),
                    Agg::CountDistinct => V::I(
                        window
                            .iter()
                            .filter_map(|p| p.merchant.as_ref())
                            .collect::<HashSet<_>>()
                            .len() as i64,
                    ),
                    Agg::Sum => float((!xs.is_empty()).then(|| xs.iter().sum())),
                    Agg::Mean => {
                        float((!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64))
                    }
                    Agg::Std => float((!xs.is_empty()).then(|| {
                        let m = xs.iter().sum::<f64>() / xs.len() as f64;
                        (xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / xs.len() as f64).sqrt()
                    })),
                    Agg::Min => float(xs.iter().copied().reduce(f64::min)),
                    Agg::Max => float(xs.iter().copied().reduce(f64::max)),
                    Agg::Last => {
                        // Most recent by time, ties by arrival.
                        let mut best: Option<(i64, usize, f64)> = None;
                        for (i, p) in window.iter().enumerate() {
                            if let Some(a) = p.amount {
                                if best.is_none_or(|(t, j, _)| (p.t, i) >= (t, j)) {
                                    best = Some((p.t, i, a));
                                }
                            }
                        }
                        float(best.map(|b| b.2))
                    }
                    Agg::TimeSinceLast => unreachable!(),
                }
            })
            .collect();
        out.push(row);
        accepted.push(e);
    }
    (out, dead)
}

fn close(a: &V, b: &V) -> bool {
    match (a, b) {
        (V::F(x), V::F(y)) => (x - y).abs() <= 1e-9 * (1.0 + x.abs().max(y.abs())) * 1e3,
        _ => a == b,
    }
}

fn assert_matches(got: &[Vec<V>], want: &[Vec<V>], specs: &[FeatureSpec]) {
    assert_eq!(got.len(), want.len(), "rows out");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        for (f, s) in specs.iter().enumerate() {
            assert!(
                close(&g[f], &w[f]),
                "event {i}, feature {}: roo {:?}, reference {:?}",
                s.name,
                g[f],
                w[f]
            );
        }
    }
}

#[test]
fn every_aggregation_matches_the_reference_in_order_and_out_of_order() {
    let specs = all_features();
    for (seed, lateness) in [(1u64, 0i64), (2, 120 * S), (3, 3600 * S), (4, 30 * S)] {
        let events = stream(seed, 4000, 12, lateness);
        let limits = StateLimits {
            lateness_us: lateness,
            ..StateLimits::default()
        };
        let mut op = operator(&specs, limits);
        let (got, dead) = run(&mut op, &events, &[1, 7, 64, 300, 1000]);
        let (want, want_dead) = reference(&specs, &events, lateness);
        assert_eq!(dead, want_dead, "seed {seed}: late events");
        assert!(dead > 0, "the stream has late events");
        assert_matches(&got, &want, &specs);
        // The batch sizes change nothing, bit for bit.
        let mut again = operator(&specs, limits);
        let (one_by_one, _) = run(&mut again, &events, &[1]);
        assert_eq!(
            format!("{one_by_one:?}"),
            format!("{got:?}"),
            "seed {seed}: batch boundaries"
        );
        assert_eq!(op.counts().3, dead as u64, "late events counted");
    }
}

#[test]
fn snapshot_restore_continue_equals_an_uninterrupted_run() {
    let specs = all_features();
    let limits = StateLimits {
        lateness_us: 300 * S,
        ..StateLimits::default()
    };
    let events = stream(9, 3000, 20, 300 * S);
    let mut whole = operator(&specs, limits);
    let (all, _) = run(&mut whole, &events, &[100]);
    let mut first = operator(&specs, limits);
    let (head, _) = run(&mut first, &events[..1700], &[100]);
    let bytes = first.snapshot();
    let mut second = operator(&specs, limits);
    second.restore(&bytes).unwrap();
    assert_eq!(second.snapshot(), bytes, "restored bit for bit");
    let (tail, _) = run(&mut second, &events[1700..], &[100]);
    let resumed: Vec<_> = head.into_iter().chain(tail).collect();
    assert_eq!(format!("{resumed:?}"), format!("{all:?}"));
    // Another configuration's snapshot, or a torn one, is refused.
    let other = vec![feature("n", Agg::Count, None, "2h")];
    let mut wrong = operator(&other, limits);
    assert!(wrong.restore(&bytes).is_err());
    assert!(second.restore(&bytes[..bytes.len() - 1]).is_err());
}

#[test]
fn keys_max_evicts_the_least_recently_seen_and_events_per_key_max_drops_the_oldest() {
    let specs = vec![
        feature("n", Agg::Count, None, "24h"),
        feature("since", Agg::TimeSinceLast, None, ""),
    ];
    let limits = StateLimits {
        lateness_us: 0,
        keys_max: 3,
        events_per_key_max: 4,
    };
    let mut op = operator(&specs, limits);
    // Keys 0..5 in turn, a second apart: each new key past 3 evicts the
    // least recently seen, so every event finds its key gone.
    let events: Vec<Event> = (0..50)
        .map(|i| Event {
            key: Some(i % 5),
            t: 1_700_000_000 * S + i * S,
            amount: Some(1.0),
            merchant: None,
        })
        .collect();
    let (out, _) = run(&mut op, &events, &[16]);
    assert!(out.iter().all(|r| r[0] == V::I(0) && r[1] == V::Null));
    let (evicted, _, _, _) = op.counts();
    assert_eq!(evicted, 50 - 3);
    assert_eq!(op.keys_held(), 3);
    // One key, many events: only 4 are held, the count stops at 4.
    let mut op = operator(&specs, limits);
    let events: Vec<Event> = (0..20)
        .map(|i| Event {
            key: Some(1),
            t: 1_700_000_000 * S + i * S,
            amount: Some(1.0),
            merchant: None,
        })
        .collect();
    let (out, _) = run(&mut op, &events, &[20]);
    assert_eq!(out[19][0], V::I(4));
    assert_eq!(
        out[19][1],
        V::F(1.0),
        "time since last of any age still known"
    );
    assert_eq!(
        op.counts().2,
        20 - 4,
        "events dropped at events_per_key_max"
    );
}

#[test]
fn idle_keys_are_dropped_without_changing_a_windowed_answer() {
    let specs = vec![
        feature("n", Agg::Count, None, "1h"),
        feature("s", Agg::Sum, Some("amount"), "10m"),
    ];
    let limits = StateLimits {
        lateness_us: 60 * S,
        ..StateLimits::default()
    };
    let events = stream(21, 5000, 400, 60 * S);
    let mut op = operator(&specs, limits);
    let (got, _) = run(&mut op, &events, &[50]);
    let (want, _) = reference(&specs, &events, 60 * S);
    assert_matches(&got, &want, &specs);
    assert!(op.counts().1 > 0, "some keys expired");
    assert!(op.keys_held() < 400);
}

#[test]
fn bad_features_are_refused_with_what_and_where() {
    let limits = StateLimits::default();
    let metrics = Arc::new(crate::metrics::PipelineMetrics::default());
    let make = |f: FeatureSpec| {
        FeatureOperator::new(&[f], limits, Some(1), &schema(), metrics.clone())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    let e = make(feature("x", Agg::Sum, Some("nope"), "1h"));
    assert!(
        e.contains(
            "feature \"x\": the input has no column \"nope\" (it has card, ts, amount, merchant)"
        ),
        "{e}"
    );
    let e = make(feature("x", Agg::Sum, Some("merchant"), "1h"));
    assert!(
        e.contains("reads column \"merchant\", which is Utf8; expected a number"),
        "{e}"
    );
    let e = make(feature("x", Agg::Sum, None, "1h"));
    assert!(e.contains("needs a column"), "{e}");
    let e = make(feature("amount", Agg::Count, None, "1h"));
    assert!(e.contains("exists already"), "{e}");
    let e = make(feature("x", Agg::Count, None, ""));
    assert!(e.contains("needs a window longer than 0"), "{e}");
    let mut f = feature("x", Agg::Count, None, "1h");
    f.key = vec!["amount".into()];
    let e = make(f);
    assert!(
        e.contains("key column \"amount\" is Float64; expected an integer, a string or a boolean"),
        "{e}"
    );
    let e = FeatureOperator::new(
        &[feature("x", Agg::Count, None, "1h")],
        limits,
        None,
        &schema(),
        metrics.clone(),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("event_time"), "{e}");
}

/// Busy keys: windows of hundreds of events (distinct counts kept in a
/// map past 32 values, back to scans below 8), with out-of-order events.
#[test]
fn busy_keys_with_large_windows_match_the_reference() {
    let specs = all_features();
    let lateness = 90 * S;
    let mut r = Rng(77);
    let mut clock = 1_700_000_000 * S;
    let events: Vec<Event> = (0..6000)
        .map(|i| {
            // Dense for a while, then a lull that empties the windows.
            clock += if i % 1500 == 0 {
                30 * 3600 * S
            } else {
                (r.below(20) as i64) * S
            };
            let t = if r.chance(0.15) {
                clock - r.below(lateness as u64) as i64
            } else {
                clock
            };
            Event {
                key: Some(r.below(3) as i64),
                t,
                amount: (!r.chance(0.1)).then(|| (r.below(10_000) as f64) / 10.0),
                merchant: (!r.chance(0.05)).then(|| format!("m{}", r.below(90))),
            }
        })
        .collect();
    let limits = StateLimits {
        lateness_us: lateness,
        ..StateLimits::default()
    };
    let mut op = operator(&specs, limits);
    let (got, _) = run(&mut op, &events, &[97]);
    let (want, _) = reference(&specs, &events, lateness);
    assert_matches(&got, &want, &specs);
    let distinct = specs.iter().position(|s| s.name == "merchants_1d").unwrap();
    assert!(
        want.iter()
            .any(|row| matches!(row[distinct], V::I(n) if n > 40)),
        "windows hold more than 32 distinct values"
    );
    // Snapshot in the middle of map mode, restore, continue.
    let mut first = operator(&specs, limits);
    let (head, _) = run(&mut first, &events[..3100], &[97]);
    let mut second = operator(&specs, limits);
    second.restore(&first.snapshot()).unwrap();
    let (tail, _) = run(&mut second, &events[3100..], &[97]);
    let resumed: Vec<_> = head.into_iter().chain(tail).collect();
    assert_eq!(format!("{resumed:?}"), format!("{got:?}"));
}

/// An Arrow timestamp column is an event time too, in any unit: the same
/// events give the same features as microseconds in an Int64 column.
#[test]
fn a_timestamp_event_time_is_read_in_its_unit() {
    use arrow_array::TimestampMillisecondArray;
    use arrow_schema::TimeUnit;
    let ms: Vec<i64> = (0..50).map(|i| 1_700_000_000_000 + i * 7_000).collect();
    let times: ArrayRef = Arc::new(TimestampMillisecondArray::from(ms.clone()));
    let us: Vec<Option<i64>> = ms.iter().map(|m| Some(m * 1000)).collect();
    assert_eq!(event_times_us(&times), us);
    let schema: SchemaRef = Arc::new(Schema::new(vec![
        Field::new("card", DataType::Int64, true),
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(Int64Array::from(vec![1i64; 50])), times],
    )
    .unwrap();
    let specs = vec![
        feature("n_1m", Agg::Count, None, "1m"),
        feature("since", Agg::TimeSinceLast, None, ""),
    ];
    let mut op = FeatureOperator::new(
        &specs,
        StateLimits::default(),
        Some(1),
        &schema,
        Arc::new(crate::metrics::PipelineMetrics::default()),
    )
    .unwrap();
    let flow = Flow::of_events(Arc::from("t"), 0, 0..0, batch);
    let Step::Done(flow) = op.begin(flow) else {
        panic!("done at once")
    };
    let out = flow.batch.unwrap();
    let n = out.column(2).as_primitive::<Int64Type>();
    let since = out.column(3).as_primitive::<Float64Type>();
    // 7 s apart: a minute holds the 8 before (56 s), never more.
    assert_eq!(n.value(0), 0);
    assert_eq!(n.value(49), 8);
    assert!(since.is_null(0));
    assert_eq!(since.value(1), 7.0);
}

/// The feature values of one computed batch's rows.
fn values_of(b: &RecordBatch) -> Vec<Vec<V>> {
    (0..b.num_rows())
        .map(|row| {
            (4..b.num_columns())
                .map(|c| {
                    let col = b.column(c);
                    if col.is_null(row) {
                        V::Null
                    } else if col.data_type() == &DataType::Int64 {
                        V::I(col.as_primitive::<Int64Type>().value(row))
                    } else {
                        V::F(col.as_primitive::<Float64Type>().value(row))
                    }
                })
                .collect()
        })
        .collect()
}

#[test]
fn a_read_only_event_gets_the_answers_it_would_get_and_changes_no_state() {
    // Online requests with update_state = false: every feature as the event
    // would be answered if it were processed, the state untouched.
    let specs = all_features();
    for (seed, lateness) in [(11u64, 0i64), (12, 600 * S)] {
        let events = stream(seed, 3000, 9, lateness);
        let limits = StateLimits {
            lateness_us: lateness,
            ..StateLimits::default()
        };
        let mut op = operator(&specs, limits);
        let mut probes = 0;
        for (i, chunk) in events.chunks(25).enumerate() {
            run(&mut op, chunk, &[25]);
            // A probe: a key seen or not, at the newest time or earlier.
            let last = chunk.last().unwrap();
            let probe = Event {
                key: Some(if i % 5 == 0 { 999 } else { (i as i64) % 9 }),
                t: last.t - if i % 3 == 0 { lateness / 2 } else { 0 },
                amount: Some(1.5),
                merchant: Some("m1".into()),
            };
            let before = op.snapshot();
            let (peeked, peek_dead, _) = op.compute(
                &batch(std::slice::from_ref(&probe)),
                &Arc::from("p"),
                0,
                true,
            );
            // A late probe is counted late (a figure, not the keys' state).
            if peek_dead.is_empty() {
                assert!(
                    op.snapshot() == before,
                    "seed {seed}, probe {i}: a read-only event changed the state"
                );
            }
            op.restore(&before).unwrap();
            let (processed, dead, _) = op.compute(&batch(&[probe]), &Arc::from("p"), 0, false);
            op.restore(&before).unwrap();
            assert_eq!(peek_dead.len(), dead.len(), "the same lateness rule");
            let (p, q) = (values_of(&peeked), values_of(&processed));
            assert_eq!(p.len(), q.len());
            for (row_p, row_q) in p.iter().zip(&q) {
                for (f, s) in specs.iter().enumerate() {
                    assert!(
                        close(&row_p[f], &row_q[f]),
                        "seed {seed}, probe {i}, feature {}: read-only {:?}, processed {:?}",
                        s.name,
                        row_p[f],
                        row_q[f]
                    );
                }
                probes += 1;
            }
        }
        assert!(probes > 100, "{probes} probes answered");
    }
}

/// Runs `events` through `op` as batches of `size` from `source`.
fn run_from(
    op: &mut FeatureOperator,
    source: &Arc<str>,
    events: &[Event],
    size: usize,
) -> Vec<Vec<V>> {
    let mut out = Vec::new();
    for chunk in events.chunks(size) {
        let flow = Flow::of_events(source.clone(), 0, 0..0, batch(chunk));
        let Step::Done(flow) = op.begin(flow) else {
            panic!("features finish at once")
        };
        out.extend(values_of(&flow.batch.unwrap()));
    }
    out
}

/// By partition, each partition's answers equal an operator of its own
/// fed that partition alone, however the partitions' batches interleave;
/// a partition's snapshot taken with release leaves memory, and restored
/// into another operator (its next owner) goes on bit for bit.
#[test]
fn partitions_keep_their_state_apart_and_move_to_another_operator_exactly() {
    let specs = all_features();
    let limits = StateLimits {
        lateness_us: 300 * S,
        ..StateLimits::default()
    };
    let events = stream(11, 3000, 30, 300 * S);
    let sources: Vec<Arc<str>> = (0..3)
        .map(|p| Arc::from(format!("kafka://t/{p}")))
        .collect();
    let part: Vec<Vec<Event>> = (0..3)
        .map(|p| {
            events
                .iter()
                .filter(|e| e.key.unwrap_or(0) % 3 == p)
                .cloned()
                .collect()
        })
        .collect();
    // Each partition alone, the plain way.
    let alone: Vec<Vec<Vec<V>>> = part
        .iter()
        .map(|events| run(&mut operator(&specs, limits), events, &[64]).0)
        .collect();

    let mut a = operator(&specs, limits);
    a.by_partition();
    let mut got: Vec<Vec<Vec<V>>> = vec![Vec::new(); 3];
    let half: Vec<usize> = part.iter().map(|e| e.len() / 2).collect();
    // The first halves, batches of the three interleaved.
    let mut at = [0usize; 3];
    while (0..3).any(|p| at[p] < half[p]) {
        for p in 0..3 {
            let end = (at[p] + 37).min(half[p]);
            if at[p] < end {
                got[p].extend(run_from(&mut a, &sources[p], &part[p][at[p]..end], 64));
                at[p] = end;
            }
        }
    }
    // Partition 1 leaves: its snapshot, and its memory freed.
    let held = a.keys_held();
    let bytes = a.part_snapshot(&sources[1], true).expect("by partition");
    assert!(
        a.keys_held() < held,
        "a released partition's keys stay held"
    );
    let mut b = operator(&specs, limits);
    b.by_partition();
    b.part_restore(&sources[1], Some(&bytes)).unwrap();
    assert_eq!(
        b.part_snapshot(&sources[1], false).unwrap(),
        bytes,
        "restored bit for bit"
    );
    got[1].extend(run_from(&mut b, &sources[1], &part[1][half[1]..], 50));
    for p in [0, 2] {
        got[p].extend(run_from(&mut a, &sources[p], &part[p][half[p]..], 50));
    }
    for p in 0..3 {
        assert_eq!(
            format!("{:?}", got[p]),
            format!("{:?}", alone[p]),
            "partition {p}"
        );
    }
    // Restoring nothing starts a partition empty; another pipeline's
    // snapshot is refused.
    a.part_restore(&sources[0], None).unwrap();
    let empty = operator(&specs, limits).snapshot();
    assert_eq!(a.part_snapshot(&sources[0], false).unwrap(), empty);
    let mut other = operator(&[feature("n", Agg::Count, None, "2h")], limits);
    other.by_partition();
    assert!(other.part_restore(&sources[1], Some(&bytes)).is_err());
}
