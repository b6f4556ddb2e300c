//! The aggregate against a plain reference written the obvious way: keep
//! every accepted event, and for each window group, aggregate, sort and
//! cut. Random streams with ties, gaps (empty windows), late events within
//! and beyond the lateness, null keys and values, split into batches at
//! random (the result never depends on where).

use crate::operators::test_rng::Rng;
use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use arrow_array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use super::*;
use crate::operators::Operator;

const EVERY: i64 = 10;

/// One event: key, event time, value.
#[derive(Clone, Debug)]
struct Event {
    key: Option<i64>,
    t: Option<i64>,
    v: Option<f64>,
}

/// A window's row as compared: (start, end, rank, key, value, error).
type Row = (i64, i64, i64, String, f64, f64);

fn spec(agg: AggFn, window: i64, top: usize, lateness: i64) -> AggregateSpec {
    AggregateSpec {
        name: "top".into(),
        key: vec!["k".into()],
        agg,
        column: agg.reads_column().then(|| "v".to_string()),
        window_us: window,
        every_us: EVERY,
        top,
        keys_max: KEYS_MAX_DEFAULT,
        lateness_us: lateness,
    }
}

fn schema(text_keys: bool) -> SchemaRef {
    let key = if text_keys {
        DataType::Utf8
    } else {
        DataType::Int64
    };
    Arc::new(Schema::new(vec![
        Field::new("k", key, true),
        Field::new("t", DataType::Int64, true),
        Field::new("v", DataType::Float64, true),
    ]))
}

/// A key as text keys spell it: a few share prefixes, so byte order matters.
fn text_key(k: i64) -> String {
    format!("#tag{}", k * 7 % 13)
}

fn batch(events: &[Event], text_keys: bool) -> RecordBatch {
    let keys: ArrayRef = if text_keys {
        Arc::new(StringArray::from(
            events
                .iter()
                .map(|e| e.key.map(text_key))
                .collect::<Vec<_>>(),
        ))
    } else {
        Arc::new(Int64Array::from(
            events.iter().map(|e| e.key).collect::<Vec<_>>(),
        ))
    };
    RecordBatch::try_new(
        schema(text_keys),
        vec![
            keys,
            Arc::new(Int64Array::from(
                events.iter().map(|e| e.t).collect::<Vec<_>>(),
            )),
            Arc::new(Float64Array::from(
                events.iter().map(|e| e.v).collect::<Vec<_>>(),
            )),
        ],
    )
    .unwrap()
}

fn operator(spec: &AggregateSpec, text_keys: bool) -> AggregateOperator {
    AggregateOperator::new(
        spec,
        Some(1),
        &schema(text_keys),
        Arc::new(PipelineMetrics::default()),
    )
    .unwrap()
}

/// Rows of emitted batches, as compared.
fn rows_of(batches: &[RecordBatch]) -> Vec<Row> {
    let mut out = Vec::new();
    for b in batches {
        let col = |name: &str| b.column(b.schema().index_of(name).unwrap()).clone();
        let int = |name: &str| col(name).as_primitive::<Int64Type>().clone();
        let num = |name: &str| -> Vec<f64> {
            let c = col(name);
            match c.data_type() {
                DataType::Int64 => c
                    .as_primitive::<Int64Type>()
                    .values()
                    .iter()
                    .map(|v| *v as f64)
                    .collect(),
                _ => c.as_primitive::<Float64Type>().values().to_vec(),
            }
        };
        let (start, end, rank) = (int("window_start"), int("window_end"), int("rank"));
        let (value, err) = (num("value"), num("error_bound"));
        let key = col("k");
        for r in 0..b.num_rows() {
            let k = if key.is_null(r) {
                "null".to_string()
            } else {
                arrow_cast::display::array_value_to_string(&key, r).unwrap()
            };
            out.push((
                start.value(r),
                end.value(r),
                rank.value(r),
                k,
                value[r],
                err[r],
            ));
        }
    }
    out
}

/// Runs `events` through the operator in batches cut at `cuts`, emitting
/// after each batch as a chain does; returns rows and dead letters.
fn run(
    op: &mut AggregateOperator,
    events: &[Event],
    cuts: &[usize],
    text: bool,
) -> (Vec<Row>, u64) {
    let mut batches = Vec::new();
    let mut dead = 0;
    let mut at = 0;
    let mut own = Vec::new();
    for &cut in cuts.iter().chain(std::iter::once(&events.len())) {
        if cut <= at {
            continue;
        }
        let flow = Flow::of_events(Arc::from("t"), 0, 0..0, batch(&events[at..cut], text));
        let Step::Done(flow) = op.begin(flow) else {
            panic!("aggregates finish at once")
        };
        assert!(flow.batch.is_none(), "an aggregate passes no events on");
        dead += flow.dead_letters.iter().map(|d| d.records).sum::<u64>();
        assert_eq!(
            flow.records(),
            (cut - at) as u64,
            "every event accounted for"
        );
        op.emit(false, &mut own);
        at = cut;
    }
    op.emit(true, &mut own);
    for f in own {
        assert!(f.results);
        batches.push(f.batch.unwrap());
    }
    (rows_of(&batches), dead)
}

/// A key in the output order: null (0) first, then text by bytes or
/// integers by value.
type SortKey = (u8, Vec<u8>, i64);

/// The reference: the rule per event in arrival order, then every window
/// computed from the accepted events directly.
fn reference(spec: &AggregateSpec, events: &[Event], text: bool) -> (Vec<Row>, u64) {
    let every = spec.every_us;
    let pane_end = |t: i64| (t - 1).div_euclid(every) * every + every;
    let mut watermark = i64::MIN;
    let mut accepted: Vec<(Option<i64>, i64, Option<f64>)> = Vec::new();
    let mut dead = 0;
    for e in events {
        let Some(t) = e.t else {
            dead += 1;
            continue;
        };
        if pane_end(t) <= watermark {
            dead += 1;
            continue;
        }
        accepted.push((e.key, t, e.v));
        watermark = watermark.max(t - spec.lateness_us);
    }
    let Some(max_t) = accepted.iter().map(|a| a.1).max() else {
        return (Vec::new(), dead);
    };
    let first = accepted.iter().map(|a| pane_end(a.1)).min().unwrap();
    let last = pane_end(max_t);
    let mut rows = Vec::new();
    let mut end = first;
    while end <= last {
        // key (as sorted) → (name, count, sum, max)
        let mut groups: BTreeMap<SortKey, (String, i64, f64, f64)> = BTreeMap::new();
        for (k, t, v) in &accepted {
            if !(end - spec.window_us < *t && *t <= end) {
                continue;
            }
            let x = match (spec.agg, v) {
                (AggFn::Count, _) => 0.0,
                (_, Some(x)) if !x.is_nan() => *x,
                _ => continue,
            };
            let (order, name) = match k {
                None => ((0, Vec::new(), 0), "null".to_string()),
                Some(k) if text => {
                    let s = text_key(*k);
                    ((1, s.clone().into_bytes(), 0), s)
                }
                Some(k) => ((1, Vec::new(), *k), k.to_string()),
            };
            let g = groups
                .entry(order)
                .or_insert((name, 0, 0.0, f64::NEG_INFINITY));
            g.1 += 1;
            g.2 += x;
            g.3 = g.3.max(x);
        }
        let mut list: Vec<(SortKey, String, f64)> = groups
            .into_iter()
            .map(|(order, (name, n, sum, max))| {
                let value = match spec.agg {
                    AggFn::Count => n as f64,
                    AggFn::Sum => sum,
                    AggFn::Mean => sum / n as f64,
                    AggFn::Max => max,
                };
                (order, name, value)
            })
            .collect();
        list.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.0.cmp(&b.0)));
        if spec.top > 0 {
            list.truncate(spec.top);
        }
        for (rank, (_, name, value)) in list.into_iter().enumerate() {
            rows.push((end - spec.window_us, end, rank as i64 + 1, name, value, 0.0));
        }
        end += every;
    }
    (rows, dead)
}

/// A random stream: mostly moving forward, with ties in value, quiet gaps
/// (empty windows), events late within and beyond `lateness`, null keys,
/// null times and null values.
fn stream(seed: u64, n: usize, keys: u64) -> Vec<Event> {
    let mut rng = Rng(seed | 1);
    let mut clock = 1_000i64;
    (0..n)
        .map(|_| {
            clock += rng.below(4) as i64;
            if rng.below(200) == 0 {
                clock += 200 + rng.below(300) as i64; // a gap: empty windows
            }
            let t = match rng.below(100) {
                0 => None,
                1..=6 => Some(clock - rng.below(60) as i64), // late, some beyond
                _ => Some(clock),
            };
            Event {
                key: (rng.below(40) != 0)
                    .then(|| (rng.below(keys) * rng.below(keys)) as i64 / keys as i64),
                t,
                v: (rng.below(30) != 0).then(|| rng.below(6) as f64),
            }
        })
        .collect()
}

fn cuts(seed: u64, n: usize) -> Vec<usize> {
    let mut rng = Rng(seed.wrapping_mul(31) | 1);
    let mut c: Vec<usize> = (0..rng.below(12) + 1)
        .map(|_| rng.below(n as u64) as usize)
        .collect();
    c.sort_unstable();
    c
}

#[test]
fn exact_windows_match_the_reference_for_every_aggregation() {
    for agg in [AggFn::Count, AggFn::Sum, AggFn::Mean, AggFn::Max] {
        for (seed, window, top, lateness) in [
            (1, 50, 3, 0),
            (2, 30, 0, 15),
            (3, 100, 5, 25),
            (4, 10, 2, 40),
            (5, 60, 4, 5),
        ] {
            for text in [false, true] {
                let spec = spec(agg, window, top, lateness);
                let events = stream(seed * 97 + agg as u64, 3_000, 30);
                let want = reference(&spec, &events, text);
                assert!(!want.0.is_empty());
                let got = run(
                    &mut operator(&spec, text),
                    &events,
                    &cuts(seed, 3_000),
                    text,
                );
                assert_eq!(got.1, want.1, "{agg} seed {seed}: dead letters");
                assert_eq!(
                    got.0.len(),
                    want.0.len(),
                    "{agg} seed {seed} text {text}: rows"
                );
                for (g, w) in got.0.iter().zip(&want.0) {
                    assert_eq!(g, w, "{agg} seed {seed} window {window} text {text}");
                }
                // Batch boundaries never change a result.
                let again = run(&mut operator(&spec, text), &events, &[], text);
                assert_eq!(again, got);
            }
        }
    }
}

#[test]
fn ties_break_by_key_and_null_keys_group() {
    let s = spec(AggFn::Count, 20, 0, 0);
    let ev = |key: Option<i64>, t: i64| Event {
        key,
        t: Some(t),
        v: None,
    };
    // Keys 5, -3, null and 2 twice each, 9 once, all in (0, 20].
    let events: Vec<Event> = [5, -3, 2, 9, 5, -3, 2]
        .iter()
        .map(|&k| ev(Some(k), 3))
        .chain([ev(None, 4), ev(None, 5)])
        .collect();
    let (rows, dead) = run(&mut operator(&s, false), &events, &[4], false);
    assert_eq!(dead, 0);
    let keys: Vec<&str> = rows.iter().map(|r| r.3.as_str()).collect();
    assert_eq!(keys, ["null", "-3", "2", "5", "9"]);
    assert_eq!(rows[0].4, 2.0);
    assert_eq!(rows[4].4, 1.0);
    // At the end, windows up to the first multiple of every at or after
    // the last event (10): the one ending 20 also holds them, but is not due.
    assert!(rows.iter().all(|r| (r.0, r.1) == (-10, 10)));
}

#[test]
fn late_events_are_dead_letters_naming_the_window() {
    let s = spec(AggFn::Count, 20, 0, 5);
    let mut op = operator(&s, false);
    let ev = |t: Option<i64>| Event {
        key: Some(1),
        t,
        v: None,
    };
    let flow = Flow::of_events(
        Arc::from("t"),
        0,
        0..4,
        batch(&[ev(Some(31)), ev(Some(18)), ev(Some(9)), ev(None)], false),
    );
    let Step::Done(flow) = op.begin(flow) else {
        panic!()
    };
    // Watermark 26 after the first: 18 (window ending 20) is late, and so
    // is 9; 31's pane ends at 40.
    assert_eq!(flow.aggregated, 1);
    let reasons: Vec<&str> = flow
        .dead_letters
        .iter()
        .map(|d| d.reason.as_str())
        .collect();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(
        reasons[0].contains(
            "event time 18 µs falls in the window ending 20 µs, already emitted (watermark 26 µs)"
        ),
        "{}",
        reasons[0]
    );
    assert!(reasons[2].contains("no event time"), "{}", reasons[2]);
}

/// True counts of each key in the window ending `end`.
fn true_counts(events: &[Event], end: i64, window: i64) -> BTreeMap<i64, i64> {
    let mut c = BTreeMap::new();
    for e in events {
        if let (Some(k), Some(t)) = (e.key, e.t) {
            if end - window < t && t <= end {
                *c.entry(k).or_insert(0) += 1;
            }
        }
    }
    c
}

#[test]
fn space_saving_bounds_hold_past_keys_max() {
    // Zipf-like keys over 2,000, in order (nothing late), a pane holding
    // about 600 distinct keys and keys_max 64.
    let mut rng = Rng(77);
    let events: Vec<Event> = (0..40_000)
        .map(|i| {
            let u = (rng.below(1 << 30) as f64 + 0.5) / (1u64 << 30) as f64;
            let k = ((2_000f64).powf(u) as i64).min(1_999);
            Event {
                key: Some(k),
                t: Some(1 + i / 20),
                v: None,
            }
        })
        .collect();
    for top in [5, 20] {
        // Many events share a time: lateness 1 keeps them on time.
        let mut s = spec(AggFn::Count, 100, top, 1);
        s.keys_max = 64;
        let mut op = operator(&s, false);
        let (rows, dead) = run(&mut op, &events, &cuts(9, events.len()), false);
        assert_eq!(dead, 0);
        assert!(op.windows.counts.takeovers > 0, "the panes overflowed");
        let mut by_window: BTreeMap<i64, Vec<&Row>> = BTreeMap::new();
        for r in &rows {
            by_window.entry(r.1).or_default().push(r);
        }
        assert!(by_window.len() > 100);
        let mut bounded = 0;
        for (end, rows) in by_window {
            let truth = true_counts(&events, end, 100);
            assert_eq!(rows.len(), top);
            for r in &rows {
                let k: i64 = r.3.parse().unwrap();
                let t = truth.get(&k).copied().unwrap_or(0) as f64;
                // value − error_bound ≤ true ≤ value.
                assert!(
                    r.4 - r.5 <= t && t <= r.4,
                    "window {end} key {k}: true {t}, row {r:?}"
                );
                bounded += (r.5 > 0.0) as usize;
            }
            // Every key whose true count beats the last row is reported.
            let last = rows.last().unwrap().4;
            for (k, c) in truth {
                if c as f64 > last {
                    assert!(
                        rows.iter().any(|r| r.3 == k.to_string()),
                        "window {end}: key {k} with {c} events (> {last}) missing"
                    );
                }
            }
        }
        assert!(bounded > 0, "some rows carry an error bound");
    }
}

#[test]
fn candidates_rank_most_windows_and_agree_with_full_ranking() {
    let s = spec(AggFn::Sum, 200, 3, 0);
    let events = stream(11, 20_000, 400);
    let mut op = operator(&s, false);
    let got = run(&mut op, &events, &cuts(3, 20_000), false);
    let want = reference(&s, &events, false);
    assert_eq!(got.1, want.1);
    assert_eq!(got.0.len(), want.0.len());
    for (g, w) in got.0.iter().zip(&want.0) {
        assert_eq!(g, w);
    }
    let c = op.windows.counts;
    assert!(
        c.full_ranks * 2 < c.windows_emitted,
        "most windows ranked from candidates: {c:?}"
    );
}

#[test]
fn mean_and_max_refuse_new_keys_past_keys_max() {
    for agg in [AggFn::Mean, AggFn::Max] {
        let mut s = spec(agg, 10, 0, 0);
        s.keys_max = 2;
        let ev = |k: i64| Event {
            key: Some(k),
            t: Some(5),
            v: Some(1.0),
        };
        let mut op = operator(&s, false);
        let flow = Flow::of_events(
            Arc::from("t"),
            0,
            0..4,
            batch(&[ev(1), ev(2), ev(3), ev(1)], false),
        );
        let Step::Done(flow) = op.begin(flow) else {
            panic!()
        };
        assert_eq!(flow.aggregated, 3);
        assert_eq!(flow.dead_letters.len(), 1);
        assert!(
            flow.dead_letters[0]
                .reason
                .contains("holds keys_max = 2 keys and"),
            "{}",
            flow.dead_letters[0].reason
        );
    }
}

#[test]
fn snapshot_restore_continue_equals_an_uninterrupted_run() {
    for (agg, keys_max) in [(AggFn::Count, 16), (AggFn::Sum, 1_000), (AggFn::Max, 1_000)] {
        let mut s = spec(agg, 60, 4, 20);
        s.keys_max = keys_max;
        let events = stream(5, 6_000, 60);
        let whole = run(&mut operator(&s, false), &events, &[2_000, 3_000], false);
        let mut first = operator(&s, false);
        let mut own = Vec::new();
        let mut batches = Vec::new();
        for part in [&events[..2_000], &events[2_000..3_000]] {
            let Step::Done(_) =
                first.begin(Flow::of_events(Arc::from("t"), 0, 0..0, batch(part, false)))
            else {
                panic!()
            };
            first.emit(false, &mut own);
        }
        let bytes = first.snapshot();
        let mut second = operator(&s, false);
        second.restore(&bytes).unwrap();
        assert_eq!(second.snapshot(), bytes, "restores bit for bit");
        // The latest window (Flight's `latest`) travels with the state.
        assert_eq!(second.latest().get(), first.latest().get());
        assert!(second.latest().get().is_some());
        batches.extend(own.drain(..).map(|f| f.batch.unwrap()));
        let (rest, _) = run(&mut second, &events[3_000..], &[], false);
        let mut joined = rows_of(&batches);
        joined.extend(rest);
        assert_eq!(joined, whole.0, "{agg}");
        // Another aggregate's snapshot is refused, the state kept.
        let mut other = operator(&spec(agg, 30, 4, 20), false);
        assert!(other.restore(&bytes).is_err());
        let mut cut = bytes.clone();
        cut.truncate(bytes.len() / 2);
        assert!(operator(&s, false).restore(&cut).is_err());
    }
}

#[test]
fn bad_aggregates_are_refused_with_what_was_expected() {
    let input = schema(false);
    let new = |s: &AggregateSpec, time: Option<usize>| {
        AggregateOperator::new(s, time, &input, Arc::new(PipelineMetrics::default()))
            .err()
            .expect("refused")
            .to_string()
    };
    let base = spec(AggFn::Count, 60, 5, 0);
    let mut s = base.clone();
    s.every_us = 7;
    assert!(new(&s, Some(1)).contains("every (7 µs) does not divide window (60 µs)"));
    s = base.clone();
    s.window_us = 0;
    assert!(new(&s, Some(1)).contains("window is zero or negative"));
    s = base.clone();
    s.top = TOP_MAX + 1;
    assert!(new(&s, Some(1)).contains("expected 0 (every key) to 10000"));
    s = base.clone();
    s.key = vec!["nope".into()];
    assert!(new(&s, Some(1)).contains("no column \"nope\" in the input (columns: k, t, v)"));
    s = base.clone();
    s.agg = AggFn::Sum;
    assert!(new(&s, Some(1)).contains("agg sum needs a column"));
    s = base.clone();
    s.column = Some("v".into());
    assert!(new(&s, Some(1)).contains("agg count reads no column"));
    assert!(new(&base, None).contains("has no event_time"));
    s = base.clone();
    s.key = vec!["v".into()];
    assert!(new(&s, Some(1)).contains("key column v is Float64"));
}

#[test]
fn extreme_and_negative_times_never_panic() {
    for agg in [AggFn::Count, AggFn::Sum, AggFn::Max] {
        let mut s = spec(agg, 30, 2, 5);
        s.keys_max = 1;
        let times = [
            i64::MIN,
            i64::MIN + 1,
            -25,
            -10,
            0,
            1,
            i64::MAX - 1,
            i64::MAX,
            7,
        ];
        let events: Vec<Event> = times
            .iter()
            .enumerate()
            .map(|(i, &t)| Event {
                key: Some(i as i64 % 3),
                t: Some(t),
                v: Some(i as f64),
            })
            .collect();
        let (rows, dead) = run(&mut operator(&s, false), &events, &[3, 5], false);
        // After a time near i64::MAX every later event is late.
        assert!(dead >= 1, "{agg}: {dead}");
        assert!(rows.iter().all(|r| r.2 >= 1 && r.2 <= 2));
    }
}
