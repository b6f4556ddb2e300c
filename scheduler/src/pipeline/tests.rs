use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{Float32Array, RecordBatch};
use arrow_schema::SchemaRef;
use roo_ingest::FileFormat;

use super::*;
use crate::generator::{card_schema, CardGenerator};
use crate::sinks::rotating::FlowAt;

/// A spec for the crate's tests: `source` into Arrow IPC files under
/// `DIR/out` (prefix `part`), `model` if any, on the CPU, nothing else;
/// tests set the rest on what it returns.
pub(crate) fn test_spec(
    name: &str,
    dir: &Path,
    source: SourceSpec,
    model: Option<PathBuf>,
    max_rows: usize,
) -> PipelineSpec {
    PipelineSpec {
        name: name.into(),
        source,
        parse_in_pieces: true,
        limits: roo_ingest::BatchLimits {
            max_rows,
            ..roo_ingest::BatchLimits::default()
        },
        model,
        shadows: Vec::new(),
        features: Vec::new(),
        enrich: Vec::new(),
        aggregate: Vec::new(),
        audit: None,
        state: Default::default(),
        device: crate::device::Device::Cpu,
        sinks: vec![SinkSpec::Files {
            dir: dir.join("out"),
            prefix: "part".into(),
            format: roo_ingest::FileFormat::ArrowIpc,
            parquet: crate::sinks::ParquetSettings::default(),
            rotate_bytes: 1 << 30,
            rotate: std::time::Duration::from_secs(3600),
        }],
        dead_letters: None,
        queue_batches: 2,
        read: roo_ingest::ReadOptions::default(),
        event_time: None,
        online: None,
        checkpoint: None,
    }
}

/// An ack target no one reads (a test that does not check durability).
pub(crate) fn no_acks() -> Box<dyn AckTarget> {
    Box::new(Arc::new(std::sync::atomic::AtomicU64::new(0)))
}

fn linear_model(dir: &Path, bias: f32) -> PathBuf {
    let model = dir.join(format!("linear-{bias}.json"));
    std::fs::write(
        &model,
        format!(
            r#"{{"kind": "linear", "features": ["a", "b"], "weights": [1.0, 2.0], "bias": {bias}}}"#
        ),
    )
    .unwrap();
    model
}

fn ab_schema() -> SchemaRef {
    Arc::new(arrow_schema::Schema::new(vec![
        arrow_schema::Field::new("a", arrow_schema::DataType::Float32, true),
        arrow_schema::Field::new("b", arrow_schema::DataType::Float32, true),
    ]))
}

fn push_spec(dir: &Path, model: Option<PathBuf>, shadows: Vec<ShadowSpec>) -> PipelineSpec {
    let source = SourceSpec::Push {
        schema: Some(ab_schema()),
    };
    PipelineSpec {
        shadows,
        ..test_spec("push", dir, source, model, 100)
    }
}

fn pool() -> Arc<rayon::ThreadPool> {
    Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap(),
    )
}

fn ab_batch(rows: usize) -> (RecordBatch, Vec<f32>) {
    let a: Vec<f32> = (0..rows).map(|i| i as f32).collect();
    let batch = RecordBatch::try_new(
        ab_schema(),
        vec![
            Arc::new(Float32Array::from(a.clone())),
            Arc::new(Float32Array::from(vec![1.0f32; rows])),
        ],
    )
    .unwrap();
    (batch, a)
}

fn read_all(dir: &Path) -> Vec<RecordBatch> {
    crate::sinks::layout::published(dir, "part", "arrow")
        .into_iter()
        .flat_map(|file| {
            arrow_ipc::reader::FileReader::try_new(std::fs::File::open(file).unwrap(), None)
                .unwrap()
                .map(|b| b.unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn column(batches: &[RecordBatch], name: &str) -> Vec<f32> {
    batches
        .iter()
        .flat_map(|b| {
            b.column_by_name(name)
                .unwrap_or_else(|| panic!("no column {name}"))
                .as_any()
                .downcast_ref::<Float32Array>()
                .unwrap()
                .values()
                .to_vec()
        })
        .collect()
}

#[test]
fn pushed_batches_are_checked_sliced_to_max_rows_and_scored() {
    let dir = tempfile::tempdir().unwrap();
    let model = linear_model(dir.path(), 0.5);
    let pipeline = Pipeline::start(push_spec(dir.path(), Some(model), vec![]), pool()).unwrap();
    let mut pusher = pipeline
        .pusher("client-1", crate::pipeline::tests::no_acks(), None)
        .unwrap();
    let (batch, a) = ab_batch(250);
    assert_eq!(pusher.push(batch).unwrap(), 250);
    let wrong = RecordBatch::try_new(
        Arc::new(arrow_schema::Schema::new(vec![arrow_schema::Field::new(
            "a",
            arrow_schema::DataType::Float64,
            true,
        )])),
        vec![Arc::new(arrow_array::Float64Array::from(vec![1.0]))],
    )
    .unwrap();
    let refused = pusher.push(wrong).unwrap_err().to_string();
    assert!(
        refused.contains("the pipeline takes [a: Float32, b: Float32]"),
        "{refused}"
    );
    pipeline.stop();
    assert!(matches!(
        pusher.push(RecordBatch::new_empty(ab_schema())),
        Err(PushError::Stopping { accepted: 250 })
    ));
    assert!(
        pipeline
            .pusher("client-2", crate::pipeline::tests::no_acks(), None)
            .is_err(),
        "no pushers once stopping"
    );
    drop(pusher);
    let counts = pipeline.join().unwrap();
    assert_eq!((counts.events_in, counts.events_out), (250, 250));
    assert_eq!(counts.batches, 3, "sliced to max_rows");
    let scores = column(&read_all(&dir.path().join("out")), "score");
    let expected: Vec<f32> = a.iter().map(|a| a + 2.0 + 0.5).collect();
    assert_eq!(scores, expected);
}

#[test]
fn a_chain_of_two_scoring_operators_appends_both_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let model = linear_model(dir.path(), 0.5);
    let shadow = vec![ShadowSpec {
        name: "again".into(),
        model: model.clone(),
    }];
    let pipeline = Pipeline::start(push_spec(dir.path(), Some(model), shadow), pool()).unwrap();
    assert_eq!(
        pipeline.operators(),
        [
            (OperatorKind::Score, "model".to_string()),
            (OperatorKind::Shadow, "again".to_string())
        ]
    );
    let names: Vec<String> = pipeline
        .output_schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(
        names,
        [
            "a",
            "b",
            "score",
            "model_version",
            "score_again",
            "model_version_again"
        ]
    );
    let mut pusher = pipeline
        .pusher("c", crate::pipeline::tests::no_acks(), None)
        .unwrap();
    let (batch, _) = ab_batch(120);
    pusher.push(batch).unwrap();
    drop(pusher);
    pipeline.stop();
    pipeline.join().unwrap();
    let out = read_all(&dir.path().join("out"));
    let live = column(&out, "score");
    assert_eq!(live.len(), 120);
    assert_eq!(live, column(&out, "score_again"), "same model, same scores");
}

#[test]
fn a_pipeline_without_a_model_passes_its_rows_through() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = Pipeline::start(push_spec(dir.path(), None, vec![]), pool()).unwrap();
    assert!(pipeline.operators().is_empty());
    assert_eq!(pipeline.output_schema(), ab_schema());
    assert!(pipeline.model_version().is_none());
    assert!(pipeline.scorer().is_err(), "nothing to exchange against");
    let mut pusher = pipeline
        .pusher("c", crate::pipeline::tests::no_acks(), None)
        .unwrap();
    let (batch, a) = ab_batch(50);
    pusher.push(batch).unwrap();
    drop(pusher);
    pipeline.stop();
    let counts = pipeline.join().unwrap();
    assert_eq!((counts.events_in, counts.events_out), (50, 50));
    assert_eq!(column(&read_all(&dir.path().join("out")), "a"), a);
}

#[test]
fn a_shadow_needs_a_model_and_a_name_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let model = linear_model(dir.path(), 0.5);
    let shadow = |name: &str| ShadowSpec {
        name: name.into(),
        model: model.clone(),
    };
    let lonely = push_spec(dir.path(), None, vec![shadow("s")]);
    let e = check_spec(&lonely).unwrap_err();
    assert!(
        crate::error::chain(&e).contains("no decision to shadow"),
        "{}",
        crate::error::chain(&e)
    );
    let twice = push_spec(
        dir.path(),
        Some(model.clone()),
        vec![shadow("s"), shadow("s")],
    );
    let e = check_spec(&twice).unwrap_err();
    assert!(
        crate::error::chain(&e).contains("declared twice"),
        "{}",
        crate::error::chain(&e)
    );
}

#[test]
fn queues_are_sized_from_the_memory_budget() {
    // 256 MiB over 2 pipelines × 2 queues, 4096 rows × 33 × 8 bytes a batch.
    assert_eq!(queue_batches_for(256 << 20, 2, 4096, 31), 62);
    assert_eq!(
        queue_batches_for(1 << 20, 1, 65536, 31),
        1,
        "at least one batch"
    );
    assert_eq!(queue_batches_for(1 << 40, 1, 16, 1), 64, "at most 64");
}

#[test]
fn rotating_files_close_on_a_thread_and_report_durability_in_order() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("part-000007.arrow"), b"older run").unwrap();
    let spec = SinkSpec::Files {
        dir: dir.path().to_path_buf(),
        prefix: "part".into(),
        format: FileFormat::ArrowIpc,
        parquet: crate::sinks::ParquetSettings::default(),
        rotate_bytes: 1,
        rotate: Duration::from_secs(3600),
    };
    let mut sink = OutputSink::open(&spec, false, false).unwrap();
    let mut generator = CardGenerator::new(3);
    for n in 1..=3 {
        sink.write(
            &generator.batch(100),
            &FlowAt {
                number: n,
                source: None,
            },
        )
        .unwrap();
    }
    sink.close().unwrap();
    assert_eq!(sink.durable_through().unwrap(), 3);
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    // A restart never overwrites: numbering continues after the last file.
    assert_eq!(
        names,
        [
            "part-000007.arrow",
            "part-000008.arrow",
            "part-000009.arrow",
            "part-000010.arrow"
        ]
    );
    let rows: usize = [
        "part-000008.arrow",
        "part-000009.arrow",
        "part-000010.arrow",
    ]
    .iter()
    .map(|n| {
        arrow_ipc::reader::FileReader::try_new(
            std::fs::File::open(dir.path().join(n)).unwrap(),
            None,
        )
        .unwrap()
        .map(|b| b.unwrap().num_rows())
        .sum::<usize>()
    })
    .sum();
    assert_eq!(rows, 300);
}

#[test]
fn an_open_file_is_not_durable_until_it_closes() {
    let dir = tempfile::tempdir().unwrap();
    let spec = SinkSpec::Files {
        dir: dir.path().to_path_buf(),
        prefix: "p".into(),
        format: FileFormat::Parquet,
        parquet: crate::sinks::ParquetSettings {
            compression: crate::sinks::ParquetCompression::Zstd,
            statistics: crate::sinks::ParquetStatistics::Page,
        },
        rotate_bytes: u64::MAX,
        rotate: Duration::from_millis(50),
    };
    let mut sink = OutputSink::open(&spec, false, false).unwrap();
    sink.write(
        &CardGenerator::new(1).batch(10),
        &FlowAt {
            number: 1,
            source: None,
        },
    )
    .unwrap();
    assert_eq!(sink.durable_through().unwrap(), 0);
    std::thread::sleep(Duration::from_millis(60));
    sink.tick().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while sink.durable_through().unwrap() < 1 {
        assert!(Instant::now() < deadline);
        std::thread::yield_now();
    }
    assert!(dir.path().join("p-000000.parquet").exists());
}

#[test]
fn the_generator_is_deterministic_and_fits_the_card_schema() {
    let a = CardGenerator::new(9).batch(1000);
    let b = CardGenerator::new(9).batch(1000);
    assert_eq!(a, b);
    assert_eq!(a.schema(), card_schema());
    let amount = a.column(1).as_any().downcast_ref::<Float32Array>().unwrap();
    assert!(amount.values().iter().all(|v| *v > 0.0));
}

#[test]
fn a_reload_swaps_each_shadow_and_a_broken_one_keeps_its_model() {
    let dir = tempfile::tempdir().unwrap();
    let model = linear_model(dir.path(), 0.5);
    let candidate = linear_model(dir.path(), 1.5);
    let shadow = vec![ShadowSpec {
        name: "c".into(),
        model: candidate.clone(),
    }];
    let pipeline = Pipeline::start(push_spec(dir.path(), Some(model), shadow), pool()).unwrap();
    let version = |p: &Pipeline| {
        p.output_schema()
            .metadata()
            .get("roo.shadow.c.version")
            .cloned()
            .unwrap()
    };
    let before = version(&pipeline);
    // A new candidate file: the reload swaps the shadow too.
    std::fs::write(
        &candidate,
        r#"{"kind": "linear", "features": ["a", "b"], "weights": [1.0, 2.0], "bias": 9.0}"#,
    )
    .unwrap();
    pipeline.reload().unwrap();
    let swapped = version(&pipeline);
    assert_ne!(swapped, before);
    // A broken one is refused, naming the shadow; the model and the shadow
    // in place keep scoring.
    std::fs::write(&candidate, b"{\"learner\": 3}").unwrap();
    let e = crate::error::chain(&pipeline.reload().unwrap_err());
    assert!(e.contains("shadow c: the new model was refused"), "{e}");
    assert_eq!(version(&pipeline), swapped);
    let mut pusher = pipeline
        .pusher("p", crate::pipeline::tests::no_acks(), None)
        .unwrap();
    let (batch, a) = ab_batch(10);
    pusher.push(batch).unwrap();
    drop(pusher);
    pipeline.stop();
    pipeline.join().unwrap();
    let out = read_all(&dir.path().join("out"));
    let expected: Vec<f32> = a.iter().map(|a| a + 2.0 + 9.0).collect();
    assert_eq!(column(&out, "score_c"), expected);
    let live: Vec<f32> = a.iter().map(|a| a + 2.0 + 0.5).collect();
    assert_eq!(column(&out, "score"), live);
}

#[test]
fn a_named_push_stream_is_told_its_rows_durable_and_resumes_from_the_checkpoint() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let spec = || PipelineSpec {
        checkpoint: Some(crate::checkpoint::CheckpointSpec {
            dir: dir.path().join("state"),
            every: Duration::from_millis(20),
        }),
        ..push_spec(dir.path(), None, vec![])
    };
    let durable = Arc::new(AtomicU64::new(0));
    let pipeline = Pipeline::start(spec(), pool()).unwrap();
    let mut pusher = pipeline
        .pusher("c-1", Box::new(durable.clone()), Some("sensor-7".into()))
        .unwrap();
    assert_eq!(pusher.rows(), 0, "a new name starts at 0");
    // One client stream per name at a time.
    let Err(busy) = pipeline.pusher("c-2", no_acks(), Some("sensor-7".into())) else {
        panic!("a second stream of one name")
    };
    let busy = crate::error::chain(&busy);
    assert!(busy.contains("already has a connection open"), "{busy}");
    let bad = pipeline.pusher("c-3", no_acks(), Some("a b".into()));
    assert!(matches!(bad, Err(PipelineError::Stream { .. })));
    assert_eq!(pusher.push(ab_batch(250).0).unwrap(), 250);
    // Durable once a checkpoint holds the rows (no file is published before).
    let deadline = Instant::now() + Duration::from_secs(30);
    while durable.load(Ordering::Acquire) < 250 {
        assert!(Instant::now() < deadline, "never durable");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        read_all(&dir.path().join("out"))
            .iter()
            .map(|b| b.num_rows())
            .sum::<usize>(),
        250
    );
    // An unnamed stream counts from 0, beside it.
    let mut other = pipeline.pusher("c-4", no_acks(), None).unwrap();
    assert_eq!(other.push(ab_batch(10).0).unwrap(), 10);
    drop((pusher, other));
    pipeline.stop();
    pipeline.join().unwrap();

    // A restart: the name goes on from the checkpoint's count, and its
    // offsets are the stream's row numbers.
    let pipeline = Pipeline::start(spec(), pool()).unwrap();
    let durable = Arc::new(AtomicU64::new(0));
    let mut pusher = pipeline
        .pusher("c-5", Box::new(durable.clone()), Some("sensor-7".into()))
        .unwrap();
    assert_eq!(pusher.rows(), 250);
    assert_eq!(durable.load(Ordering::Acquire), 250, "told at once");
    assert_eq!(pusher.push(ab_batch(5).0).unwrap(), 255);
    drop(pusher);
    pipeline.stop();
    pipeline.join().unwrap();
    assert_eq!(
        durable.load(Ordering::Acquire),
        255,
        "the last checkpoint at the stop"
    );
    let rows: usize = read_all(&dir.path().join("out"))
        .iter()
        .map(|b| b.num_rows())
        .sum();
    assert_eq!(rows, 265);
}
