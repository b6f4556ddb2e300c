//! Requests through a real pipeline: replies carry exactly their own rows
//! (checked against the model's formula, row by row, from many threads at
//! once), concurrent requests share batches, refused rows name their
//! reasons, a request's features update the state a streamed event sees,
//! and `requests_max` bounds what is in flight.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Int64Type};
use arrow_array::{Float32Array, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use super::*;
use crate::operators::features::{Agg, FeatureSpec};
use crate::{Pipeline, PipelineSpec, SourceSpec};

fn pool() -> Arc<rayon::ThreadPool> {
    Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap(),
    )
}

fn spec(
    dir: &Path,
    source: SourceSpec,
    model: Option<PathBuf>,
    online: OnlineLimits,
) -> PipelineSpec {
    PipelineSpec {
        online: Some(online),
        ..crate::pipeline::tests::test_spec("online", dir, source, model, 256)
    }
}

fn ab_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("a", DataType::Float32, true),
        Field::new("b", DataType::Float32, true),
    ]))
}

/// score = a + 2b + 0.5, in f32 as the linear scorer computes it.
fn linear_model(dir: &Path) -> PathBuf {
    let model = dir.join("linear.json");
    std::fs::write(
        &model,
        r#"{"kind": "linear", "features": ["a", "b"], "weights": [1.0, 2.0], "bias": 0.5}"#,
    )
    .unwrap();
    model
}

fn ab(a: &[f32], b: &[f32]) -> RecordBatch {
    RecordBatch::try_new(
        ab_schema(),
        vec![
            Arc::new(Float32Array::from(a.to_vec())),
            Arc::new(Float32Array::from(b.to_vec())),
        ],
    )
    .unwrap()
}

fn column_f32(b: &RecordBatch, name: &str) -> Vec<f32> {
    b.column_by_name(name)
        .unwrap()
        .as_primitive::<Float32Type>()
        .values()
        .to_vec()
}

#[test]
fn concurrent_requests_share_batches_and_each_gets_its_own_rows() {
    let dir = tempfile::tempdir().unwrap();
    let limits = OnlineLimits {
        linger: Duration::from_millis(2),
        max_rows: 64,
        ..OnlineLimits::default()
    };
    let p = Pipeline::start(
        spec(
            dir.path(),
            SourceSpec::Requests {
                schema: Some(ab_schema()),
            },
            Some(linear_model(dir.path())),
            limits,
        ),
        pool(),
    )
    .unwrap();
    let threads = 16;
    let per_thread = 100;
    std::thread::scope(|s| {
        for t in 0..threads {
            let requests = p.requests().unwrap();
            s.spawn(move || {
                for i in 0..per_thread {
                    // One or two rows, values unique to (thread, i).
                    let rows = 1 + (i % 2);
                    let a: Vec<f32> = (0..rows).map(|r| (t * 1000 + i * 2 + r) as f32).collect();
                    let b: Vec<f32> = (0..rows).map(|r| (t + r) as f32).collect();
                    let reply = ask(&requests, ab(&a, &b));
                    assert_eq!(column_f32(&reply.rows(), "a"), a, "its own rows, in order");
                    let expected: Vec<f32> =
                        a.iter().zip(&b).map(|(a, b)| a + 2.0 * b + 0.5).collect();
                    assert_eq!(column_f32(&reply.rows(), "score"), expected);
                }
            });
        }
    });
    let m = p.snapshot();
    let requests = (threads * per_thread) as u64;
    assert_eq!(m.online_requests, requests);
    assert!(
        m.online_batches < requests,
        "{} batches for {requests} concurrent requests: none were coalesced",
        m.online_batches
    );
    p.stop();
    let counts = p.join().unwrap();
    // Every request's rows went to the sinks like any event's.
    assert_eq!(counts.events_in, (threads * per_thread * 3 / 2) as u64);
    assert_eq!(counts.events_out, counts.events_in);
    // A stopped pipeline takes no request.
    assert!(p.requests().is_err());
}

/// A push pipeline counting each card's events in the last hour.
fn counting(dir: &Path, online: OnlineLimits) -> (Pipeline, SchemaRef) {
    let schema: SchemaRef = Arc::new(Schema::new(vec![
        Field::new("card", DataType::Int64, false),
        Field::new("ts", DataType::Int64, false),
    ]));
    let mut spec = spec(
        dir,
        SourceSpec::Push {
            schema: Some(schema.clone()),
        },
        None,
        online,
    );
    spec.event_time = Some("ts".into());
    spec.features = vec![FeatureSpec {
        name: "n".into(),
        key: vec!["card".into()],
        agg: Agg::Count,
        column: None,
        window_us: 3_600_000_000,
    }];
    (Pipeline::start(spec, pool()).unwrap(), schema)
}

fn card_rows(schema: &SchemaRef, cards: &[i64], ts: &[i64]) -> RecordBatch {
    RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from(cards.to_vec())),
            Arc::new(Int64Array::from(ts.to_vec())),
        ],
    )
    .unwrap()
}

/// Waits (bounded) until the pipeline has run `batches` batches: a streamed
/// batch and a request sit in different queues, so a test orders them by
/// waiting for the first to be done.
fn wait_batches(p: &Pipeline, batches: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while p.snapshot().batches < batches {
        assert!(
            std::time::Instant::now() < deadline,
            "the pipeline is stuck"
        );
        std::thread::yield_now();
    }
}

/// One request, answered.
fn ask(requests: &Requests, batch: RecordBatch) -> Reply {
    requests.submit(batch).unwrap().wait().unwrap()
}

fn counts_in(b: &RecordBatch) -> Vec<i64> {
    b.column_by_name("n")
        .unwrap()
        .as_primitive::<Int64Type>()
        .values()
        .to_vec()
}

#[test]
fn with_update_state_off_requests_read_the_state_and_leave_it() {
    let dir = tempfile::tempdir().unwrap();
    let (p, schema) = counting(
        dir.path(),
        OnlineLimits {
            update_state: false,
            ..OnlineLimits::default()
        },
    );
    let requests = p.requests().unwrap();
    let mut pusher = p
        .pusher("stream", crate::pipeline::tests::no_acks(), None)
        .unwrap();
    pusher.push(card_rows(&schema, &[7], &[1_000])).unwrap();
    wait_batches(&p, 1);
    // The request sees the streamed event, twice over: it adds nothing.
    for ts in [2_000, 3_000] {
        let reply = ask(&requests, card_rows(&schema, &[7], &[ts]));
        assert_eq!(counts_in(&reply.rows()), [1]);
    }
    // A later streamed event sees only the first.
    pusher.push(card_rows(&schema, &[7], &[4_000])).unwrap();
    wait_batches(&p, 4);
    let reply = ask(&requests, card_rows(&schema, &[7], &[5_000]));
    assert_eq!(counts_in(&reply.rows()), [2]);
    drop((pusher, requests));
    p.stop();
    p.join().unwrap();
}

#[test]
fn refused_rows_name_their_reason_and_a_request_updates_the_state_a_streamed_event_sees() {
    let dir = tempfile::tempdir().unwrap();
    // Lateness 0 (the default): an event older than its key's newest is late.
    let (p, schema) = counting(dir.path(), OnlineLimits::default());
    let rows = |cards: &[i64], ts: &[i64]| card_rows(&schema, cards, ts);
    let requests = p.requests().unwrap();
    let counts_of = counts_in;
    // Card 7's first event arrives as a request: nothing before it (a
    // feature never counts the event itself).
    let reply = ask(&requests, rows(&[7], &[1_000]));
    assert_eq!(counts_of(&reply.rows()), [0]);
    // A request with a late row (lateness 0): that row is refused by name,
    // the other (card 8) is scored and on record.
    match requests.submit(rows(&[8, 7], &[5_000, 10])).unwrap().wait() {
        Err(OnlineError::Rows(refused)) => {
            assert_eq!(refused.len(), 1);
            assert_eq!(refused[0].0, 1, "the request's second row");
            assert!(
                refused[0].1.contains("older than key [7]'s newest event"),
                "{}",
                refused[0].1
            );
        }
        other => panic!(
            "expected the late row refused, got {:?}",
            other.map(|r| r.rows())
        ),
    }
    // A streamed event for card 7 sees the request's event in its state.
    let mut pusher = p
        .pusher("stream", crate::pipeline::tests::no_acks(), None)
        .unwrap();
    pusher.push(rows(&[7], &[2_000])).unwrap();
    drop(pusher);
    wait_batches(&p, 3);
    // And a later request sees both before it.
    let reply = ask(&requests, rows(&[7], &[3_000]));
    assert_eq!(counts_of(&reply.rows()), [2]);
    drop(requests);
    p.stop();
    let counts = p.join().unwrap();
    assert_eq!(
        (counts.events_in, counts.events_out, counts.events_dead),
        (5, 4, 1)
    );
    let out = crate::sinks::layout::published(&dir.path().join("out"), "part", "arrow");
    let batches: Vec<RecordBatch> = out
        .iter()
        .flat_map(|f| {
            arrow_ipc::reader::FileReader::try_new(std::fs::File::open(f).unwrap(), None)
                .unwrap()
                .map(Result::unwrap)
        })
        .collect();
    let seen: Vec<(i64, i64)> = batches
        .iter()
        .flat_map(|b| {
            let cards = b.column(0).as_primitive::<Int64Type>().values().to_vec();
            cards.into_iter().zip(counts_of(b))
        })
        .collect();
    // The streamed event (ts 2000) counted the request's event before it.
    assert_eq!(seen, [(7, 0), (8, 0), (7, 1), (7, 2)]);
}

#[test]
fn requests_max_bounds_what_is_in_flight() {
    let (tx, rx) = crossbeam_channel::bounded(3);
    let requests = Requests {
        tx,
        pipeline: Arc::from("p"),
        schema: ab_schema(),
        in_flight: Default::default(),
        limits: OnlineLimits {
            requests_max: 3,
            ..OnlineLimits::default()
        },
        metrics: Default::default(),
    };
    let tickets: Vec<Ticket> = (0..3)
        .map(|i| requests.submit(ab(&[i as f32], &[0.0])).unwrap())
        .collect();
    assert!(matches!(
        requests.submit(ab(&[9.0], &[0.0])),
        Err(OnlineError::Busy { max: 3 })
    ));
    assert_eq!(
        requests
            .metrics
            .online_busy
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    // A request taken off the queue and dropped unanswered gives its
    // permit back, and its requester hears that the pipeline stopped.
    let taken: Request = rx.recv().unwrap();
    drop(taken);
    assert_eq!(requests.in_flight(), 2);
    let mut tickets = tickets.into_iter();
    assert!(matches!(
        tickets.next().unwrap().wait(),
        Err(OnlineError::Stopped { .. })
    ));
    assert!(requests.submit(ab(&[10.0], &[0.0])).is_ok());
    // Wrong columns and empty requests are refused before taking a permit.
    let wrong = RecordBatch::try_from_iter([(
        "a",
        Arc::new(Float32Array::from(vec![1.0f32])) as arrow_array::ArrayRef,
    )])
    .unwrap();
    assert!(matches!(
        requests.submit(wrong),
        Err(OnlineError::Schema(_))
    ));
    assert!(matches!(
        requests.submit(ab(&[], &[])),
        Err(OnlineError::Empty)
    ));
    assert_eq!(requests.in_flight(), 3);
}
