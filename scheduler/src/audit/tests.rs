//! The audit log against plain references: every record written is found
//! by its id and by any range of event time exactly as a scan of what was
//! written finds it; retention deletes what it should and nothing else;
//! replay reproduces every score and counts flips as a plain count does;
//! a log that cannot be written stops the pipeline.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arrow_array::types::Int32Type;
use arrow_array::{
    Array, DictionaryArray, Float32Array, Int32Array, Int64Array, RecordBatch, StringArray,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use super::layout::{index_path, partitions, segments};
use super::writer::enforce_retention;
use super::*;
use crate::device::Device;
use crate::operators::test_rng::Rng;
use crate::pipeline::{Pipeline, PipelineSpec, ShadowSpec, SourceSpec};

const HOUR_US: i64 = 3_600_000_000;
const DAY_US: i64 = 24 * HOUR_US;

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

fn event_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("txn_id", DataType::Utf8, false),
        Field::new("ts", DataType::Int64, false),
        Field::new("a", DataType::Float32, true),
        Field::new("b", DataType::Float32, true),
    ]))
}

/// What a test wrote: (id, event µs, a).
type Written = Vec<(String, i64, f32)>;

fn events(ids: &[String], ts: &[i64], a: &[f32]) -> RecordBatch {
    RecordBatch::try_new(
        event_schema(),
        vec![
            Arc::new(StringArray::from(ids.to_vec())),
            Arc::new(Int64Array::from(ts.to_vec())),
            Arc::new(Float32Array::from(a.to_vec())),
            Arc::new(Float32Array::from(vec![1.0f32; a.len()])),
        ],
    )
    .unwrap()
}

/// Every record of one segment, read plainly.
fn segment_rows(segment: &Path) -> Vec<RecordBatch> {
    arrow_ipc::reader::FileReader::try_new(std::fs::File::open(segment).unwrap(), None)
        .unwrap()
        .map(|b| b.unwrap())
        .collect()
}

/// Kept for ever: the tests apply retention themselves.
fn spec(dir: &Path) -> AuditSpec {
    AuditSpec {
        id: Some("txn_id".into()),
        segment_rows: 700,
        retain_days: 0,
        ..AuditSpec::new(dir.to_path_buf())
    }
}

/// Writes `batches` of random events around `centre` (spread over
/// `hours` hours, out of order) through a writer; returns what it wrote.
fn write_random(dir: &Path, rng: &mut Rng, centre: i64, hours: u64, batches: usize) -> Written {
    let mut builder =
        RecordBuilder::new(Some("txn_id"), Some(1), &event_schema(), "d".into()).unwrap();
    let mut writer = AuditWriter::open(&spec(dir)).unwrap();
    let mut written = Vec::new();
    let source: Arc<str> = Arc::from("test");
    for _ in 0..batches {
        let n = 1 + rng.below(300) as usize;
        let mut ids = Vec::new();
        let mut ts = Vec::new();
        let mut a = Vec::new();
        for _ in 0..n {
            // Ids repeat now and then: a lookup must return every record.
            let id = format!("t{}", rng.below(5_000));
            let t = centre + (rng.below(hours * HOUR_US as u64) as i64);
            let x = rng.below(1000) as f32 / 10.0;
            written.push((id.clone(), t, x));
            ids.push(id);
            ts.push(t);
            a.push(x);
        }
        let batch = events(&ids, &ts, &a);
        let records = builder
            .build(&source, SystemTime::now(), &batch, "cpu test")
            .unwrap();
        writer.write(&records).unwrap();
    }
    writer.close_all().unwrap();
    written
}

/// (id, event µs, a) of every record in `batches`.
fn rows_of(batches: &[RecordBatch]) -> Written {
    let mut out = Vec::new();
    for b in batches {
        let ids = b
            .column_by_name(ID)
            .unwrap()
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        let ts = b
            .column_by_name("ts")
            .unwrap()
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        let a = b
            .column_by_name("a")
            .unwrap()
            .as_any()
            .downcast_ref::<Float32Array>()
            .unwrap();
        for i in 0..b.num_rows() {
            out.push((ids.value(i).to_string(), ts.value(i), a.value(i)));
        }
    }
    out
}

fn sorted(mut rows: Written) -> Written {
    rows.sort_by(|x, y| x.0.cmp(&y.0).then(x.1.cmp(&y.1)).then(x.2.total_cmp(&y.2)));
    rows
}

#[test]
fn every_record_is_found_by_id_and_by_range_as_a_scan_finds_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(7);
    let month_ago = now_us() - 30 * DAY_US;
    // 30 hours of events, arriving out of order: more hours than segments
    // may be open at once, and segments rotating at 700 records.
    let written = write_random(dir.path(), &mut rng, month_ago, 30, 60);
    let log = AuditLog::open(dir.path()).unwrap();
    assert!(
        log.segments().len() > 30,
        "rotated: {}",
        log.segments().len()
    );
    // Every partition holds only its own hour's events.
    for (hour, partition) in partitions(dir.path()) {
        for segment in segments(&partition) {
            assert!(index_path(&segment).exists(), "{}", segment.display());
            for (_, t, _) in rows_of(&segment_rows(&segment)) {
                assert_eq!(layout::hour_of(t), hour, "{}", segment.display());
            }
        }
    }
    for probe in 0..80 {
        let id = format!("t{}", rng.below(5_000));
        let expected: Written = written.iter().filter(|r| r.0 == id).cloned().collect();
        match log.find(&id) {
            Ok(found) => assert_eq!(sorted(rows_of(&found)), sorted(expected), "{id}"),
            Err(AuditError::NotFound { .. }) => assert!(expected.is_empty(), "{id} ({probe})"),
            Err(e) => panic!("{e}"),
        }
    }
    let err = log.find("nobody").unwrap_err().to_string();
    assert!(err.contains("no record has id \"nobody\""), "{err}");
    for _ in 0..20 {
        let from = month_ago + rng.below(32 * HOUR_US as u64) as i64 - HOUR_US;
        let to = from + rng.below(6 * HOUR_US as u64) as i64;
        let range = TimeRange {
            from_us: from,
            to_us: to,
        };
        let mut got = Vec::new();
        log.read_range(range, None, &mut |b| {
            got.push(b);
            Ok(())
        })
        .unwrap();
        let expected: Written = written
            .iter()
            .filter(|r| r.1 >= from && r.1 < to)
            .cloned()
            .collect();
        assert_eq!(sorted(rows_of(&got)), sorted(expected));
    }
    // A segment whose index is gone is scanned.
    let (_, first) = &partitions(dir.path())[0];
    let segment = &segments(first)[0];
    std::fs::remove_file(index_path(segment)).unwrap();
    let mut in_it = Vec::new();
    log.read_range(TimeRange::ALL, None, &mut |b| {
        in_it.extend(rows_of(&[b]));
        Ok(())
    })
    .unwrap();
    assert_eq!(sorted(in_it), sorted(written.clone()));
    let one = rows_of(&segment_rows(segment))[0].clone();
    let found = rows_of(&log.find(&one.0).unwrap());
    assert!(found.contains(&one));
}

#[test]
fn retention_deletes_old_hours_then_the_oldest_past_the_size_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(11);
    let now = now_us();
    let old = write_random(dir.path(), &mut rng, now - 500 * DAY_US, 2, 4);
    let recent = write_random(dir.path(), &mut rng, now - 10 * DAY_US, 2, 4);
    // One whole hour, three hours ago: one partition.
    let newest_start = layout::hour_start_us(layout::hour_of(now) - 3);
    let newest = write_random(dir.path(), &mut rng, newest_start, 1, 2);
    let log = AuditLog::open(dir.path()).unwrap();
    let all = log.segments();
    // Nothing is older than 600 days, and 1 TB is plenty: nothing goes.
    let r = enforce_retention(dir.path(), now, 600, 1 << 40).unwrap();
    assert_eq!((r.deleted_segments, log.segments()), (0, all.clone()));
    let r = enforce_retention(dir.path(), now, 400, 1 << 40).unwrap();
    assert!(r.deleted_segments > 0);
    let left = log.segments();
    let mut kept = Vec::new();
    log.read_range(TimeRange::ALL, None, &mut |b| {
        kept.extend(rows_of(&[b]));
        Ok(())
    })
    .unwrap();
    assert_eq!(
        sorted(kept),
        sorted(recent.iter().chain(&newest).cloned().collect()),
        "only the hours 500 days old went"
    );
    assert!(old
        .iter()
        .all(|r| log.find(&r.0).map_or(true, |f| !rows_of(&f).contains(r))));
    // A size bound of the newest hour's segments keeps only those.
    let newest_hour: Vec<PathBuf> = left
        .iter()
        .filter(|p| {
            p.to_string_lossy()
                .contains(&layout::partition_name(layout::hour_of(newest_start)))
        })
        .cloned()
        .collect();
    let mut sizes: BTreeMap<&PathBuf, u64> = BTreeMap::new();
    for p in &newest_hour {
        sizes.insert(
            p,
            std::fs::metadata(p).unwrap().len() + std::fs::metadata(index_path(p)).unwrap().len(),
        );
    }
    let bound: u64 = sizes.values().sum();
    let r = enforce_retention(dir.path(), now, 400, bound).unwrap();
    assert_eq!(r.kept_bytes, bound);
    assert_eq!(log.segments(), newest_hour);
}

fn linear_model(dir: &Path, name: &str, weights: [f32; 2], bias: f32) -> PathBuf {
    let model = dir.join(name);
    std::fs::write(
        &model,
        format!(
            r#"{{"kind": "linear", "features": ["a", "b"], "weights": [{}, {}], "bias": {bias}}}"#,
            weights[0], weights[1]
        ),
    )
    .unwrap();
    model
}

fn audited_spec(dir: &Path, model: PathBuf, shadow: PathBuf) -> PipelineSpec {
    let source = SourceSpec::Push {
        schema: Some(event_schema()),
    };
    PipelineSpec {
        shadows: vec![ShadowSpec {
            name: "candidate".into(),
            model: shadow,
        }],
        audit: Some(spec(&dir.join("audit"))),
        event_time: Some("ts".into()),
        ..crate::pipeline::tests::test_spec("audited", dir, source, Some(model), 256)
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

#[test]
fn a_pipeline_records_every_scored_event_and_replay_reproduces_it_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let live = linear_model(dir.path(), "live.json", [0.1, 0.5], -3.0);
    let cand = linear_model(dir.path(), "cand.json", [0.12, 0.5], -3.5);
    let pipeline =
        Pipeline::start(audited_spec(dir.path(), live.clone(), cand.clone()), pool()).unwrap();
    let mut pusher = pipeline
        .pusher("client", crate::pipeline::tests::no_acks(), None)
        .unwrap();
    let mut rng = Rng(3);
    let base = now_us() - 31 * DAY_US;
    let mut a_all = Vec::new();
    for batch in 0..8 {
        let n = 300;
        let ids: Vec<String> = (0..n).map(|i| format!("e{batch}-{i}")).collect();
        let ts: Vec<i64> = (0..n)
            .map(|i| base + (batch * n + i) as i64 * 1_000_000)
            .collect();
        let a: Vec<f32> = (0..n).map(|_| rng.below(100_000) as f32 / 1000.0).collect();
        a_all.extend(a.iter().copied());
        pusher.push(events(&ids, &ts, &a)).unwrap();
    }
    drop(pusher);
    pipeline.stop();
    let counts = pipeline.join().unwrap();
    assert_eq!(counts.events_out, 2400);
    let log = AuditLog::open(&dir.path().join("audit")).unwrap();
    let shown = log.find("e3-17").unwrap();
    assert_eq!(shown.len(), 1);
    let row = &shown[0];
    let a = row
        .column_by_name("a")
        .unwrap()
        .as_any()
        .downcast_ref::<Float32Array>()
        .unwrap();
    assert_eq!(a.value(0), a_all[3 * 300 + 17]);
    let score = row
        .column_by_name("score")
        .unwrap()
        .as_any()
        .downcast_ref::<Float32Array>()
        .unwrap();
    assert_eq!(score.value(0), 0.1 * a_all[917] + 0.5 - 3.0);
    assert!(row.column_by_name("score_candidate").is_some());
    let device = arrow_cast::cast(row.column_by_name(DEVICE).unwrap(), &DataType::Utf8).unwrap();
    assert!(device
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap()
        .value(0)
        .starts_with("cpu "));
    // Both models are in the store, whatever happens to their files.
    std::fs::remove_file(&live).unwrap();
    std::fs::remove_file(&cand).unwrap();
    let report = replay(
        &log,
        &ReplayOptions {
            range: TimeRange::ALL,
            candidate: None,
            threshold: 0.5,
            top: 5,
        },
    )
    .unwrap();
    assert_eq!(
        (report.records, report.compared, report.mismatches),
        (2400, 2400, 0)
    );
    // The candidate's flips, counted plainly.
    let candidate = roo_kernels::model_from_bytes(
        &std::fs::read(super::layout::model_path(
            log.dir(),
            &report_version(&log, "score_candidate"),
        ))
        .unwrap(),
        "cand",
    )
    .unwrap();
    let threshold = 4.0f32;
    let (mut up, mut down) = (0, 0);
    for &x in &a_all {
        let rec = 0.1f32 * x + 0.5 - 3.0;
        let c = 0.12f32 * x + 0.5 - 3.5;
        up += u64::from(rec < threshold && c >= threshold);
        down += u64::from(rec >= threshold && c < threshold);
    }
    assert!(up + down > 0, "the test must flip something");
    let report = replay(
        &log,
        &ReplayOptions {
            range: TimeRange::ALL,
            candidate: Some(Candidate {
                model: candidate,
                origin: "cand".into(),
            }),
            threshold,
            top: 5,
        },
    )
    .unwrap();
    assert_eq!((report.flips_up, report.flips_down), (Some(up), Some(down)));
    let c = report.candidate.as_ref().unwrap();
    assert_eq!(c.disagreements.len(), 5);
    assert!(c
        .disagreements
        .windows(2)
        .all(|w| w[0].diff.abs() >= w[1].diff.abs()));
    assert!(report.markdown().contains("flips up"));
}

/// The version a record's `model_version_NAME` column names.
fn report_version(log: &AuditLog, score_column: &str) -> String {
    let name = score_column.replacen("score", "model_version", 1);
    let rows = log.find("e0-0").unwrap();
    let v = arrow_cast::cast(rows[0].column_by_name(&name).unwrap(), &DataType::Utf8).unwrap();
    v.as_any()
        .downcast_ref::<StringArray>()
        .unwrap()
        .value(0)
        .to_string()
}

#[test]
fn replay_lists_a_recorded_score_that_the_model_does_not_give() {
    let dir = tempfile::tempdir().unwrap();
    let live = linear_model(dir.path(), "live.json", [1.0, 2.0], 0.0);
    let model = crate::models::CompiledModel::load(&live, Device::Cpu).unwrap();
    let mut writer = AuditWriter::open(&spec(dir.path())).unwrap();
    writer.store_model(&model.version, &model.bytes).unwrap();
    let mut builder =
        RecordBuilder::new(Some("txn_id"), Some(1), &scored_schema(), "d".into()).unwrap();
    let n = 50;
    let a: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let mut score: Vec<f32> = a.iter().map(|x| x + 2.0).collect();
    score[7] += 1e-3; // recorded, but not what the model gives
    let batch = RecordBatch::try_new(
        scored_schema(),
        vec![
            Arc::new(StringArray::from(
                (0..n).map(|i| format!("r{i}")).collect::<Vec<_>>(),
            )),
            Arc::new(Int64Array::from(vec![now_us(); n])),
            Arc::new(Float32Array::from(a)),
            Arc::new(Float32Array::from(vec![1.0f32; n])),
            Arc::new(Float32Array::from(score)),
            Arc::new(DictionaryArray::<Int32Type>::new(
                Int32Array::from(vec![0; n]),
                Arc::new(StringArray::from(vec![model.version.clone()])),
            )),
        ],
    )
    .unwrap();
    let records = builder
        .build(&Arc::from("s"), SystemTime::now(), &batch, "cpu x")
        .unwrap();
    writer.write(&records).unwrap();
    drop(writer);
    let log = AuditLog::open(dir.path()).unwrap();
    let options = ReplayOptions {
        range: TimeRange::ALL,
        candidate: None,
        threshold: 0.5,
        top: 0,
    };
    let report = replay(&log, &options).unwrap();
    assert_eq!((report.records, report.mismatches), (50, 1));
    assert_eq!(report.mismatched[0].id, "r7");
    let empty = replay(
        &log,
        &ReplayOptions {
            range: TimeRange {
                from_us: 0,
                to_us: 1,
            },
            ..options
        },
    )
    .unwrap_err()
    .to_string();
    assert!(empty.contains("no records with event time"), "{empty}");
}

fn scored_schema() -> SchemaRef {
    let mut fields: Vec<Field> = event_schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new("score", DataType::Float32, false));
    fields.push(Field::new(
        "model_version",
        DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
        false,
    ));
    Arc::new(Schema::new(fields))
}

#[test]
fn an_audit_log_that_cannot_be_written_is_refused_at_start_and_stops_the_pipeline_mid_run() {
    let dir = tempfile::tempdir().unwrap();
    let live = linear_model(dir.path(), "live.json", [1.0, 2.0], 0.0);
    // A file where the directory should be: refused before any event.
    std::fs::write(dir.path().join("audit"), b"not a directory").unwrap();
    let err = match Pipeline::start(audited_spec(dir.path(), live.clone(), live.clone()), pool()) {
        Err(e) => crate::error::chain(&e),
        Ok(_) => panic!("an unwritable audit log was accepted"),
    };
    assert!(err.contains("audit log"), "{err}");
    std::fs::remove_file(dir.path().join("audit")).unwrap();
    let mut spec = audited_spec(dir.path(), live.clone(), live);
    spec.audit.as_mut().unwrap().segment_rows = 100;
    let pipeline = Pipeline::start(spec, pool()).unwrap();
    let mut pusher = pipeline
        .pusher("client", crate::pipeline::tests::no_acks(), None)
        .unwrap();
    let ids: Vec<String> = (0..100).map(|i| format!("x{i}")).collect();
    pusher
        .push(events(&ids, &vec![now_us(); 100], &vec![1.0; 100]))
        .unwrap();
    // The disk "fills": its records directory becomes a file.
    let records = dir.path().join("audit").join("records");
    // Wait until the first batch's segment is published (the operator's
    // figures say so once its close has returned).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !pipeline
        .snapshot()
        .operators
        .iter()
        .any(|o| o.audit_segments >= 1)
    {
        assert!(std::time::Instant::now() < deadline, "no segment published");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::fs::remove_dir_all(&records).unwrap();
    std::fs::write(&records, b"full").unwrap();
    let later: Vec<i64> = vec![now_us() + 2 * HOUR_US; 100];
    // The pipeline may stop while this push waits: either is fine.
    let _ = pusher.push(events(&ids, &later, &vec![1.0; 100]));
    drop(pusher);
    pipeline.stop();
    let err = crate::error::chain(&pipeline.join().unwrap_err());
    assert!(err.contains("the audit log could not be written"), "{err}");
    let delivered = crate::sinks::layout::published(&dir.path().join("out"), "part", "arrow");
    let rows: usize = delivered
        .iter()
        .flat_map(|f| {
            arrow_ipc::reader::FileReader::try_new(std::fs::File::open(f).unwrap(), None).unwrap()
        })
        .map(|b| b.unwrap().num_rows())
        .sum();
    assert_eq!(rows, 100, "the unaudited batch never reached the sink");
}

/// Dictionary columns whose values are equal but not shared, each batch
/// using other keys (as a table's text column after a `take`), written in
/// many coalesced batches per segment: the file keeps one dictionary and
/// every value reads back.
#[test]
fn dictionary_columns_with_equal_values_are_written_as_one_dictionary() {
    let dir = tempfile::tempdir().unwrap();
    let countries = ["PT", "DE", "US", "BR", "IN"];
    let schema = Arc::new(Schema::new(vec![
        Field::new("txn_id", DataType::Utf8, false),
        Field::new(
            "country",
            DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
            false,
        ),
    ]));
    let mut builder = RecordBuilder::new(Some("txn_id"), None, &schema, "d".into()).unwrap();
    let mut writer = AuditWriter::open(&spec(dir.path())).unwrap();
    let mut expected = Vec::new();
    let source: Arc<str> = Arc::from("s");
    let mut rng = Rng(5);
    for b in 0..40 {
        let n = 100;
        let ids: Vec<String> = (0..n).map(|i| format!("b{b}-{i}")).collect();
        // A subset of the countries per batch, through fresh values.
        let keys: Vec<i32> = (0..n).map(|_| rng.below(1 + b as u64 % 5) as i32).collect();
        for (id, &k) in ids.iter().zip(&keys) {
            expected.push((id.clone(), countries[k as usize].to_string()));
        }
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(ids)),
                Arc::new(DictionaryArray::<Int32Type>::new(
                    Int32Array::from(keys),
                    Arc::new(StringArray::from(countries.to_vec())),
                )),
            ],
        )
        .unwrap();
        let records = builder
            .build(&source, SystemTime::now(), &batch, "cpu x")
            .unwrap();
        writer.write(&records).unwrap();
    }
    writer.close_all().unwrap();
    let log = AuditLog::open(dir.path()).unwrap();
    let mut got = Vec::new();
    log.read_range(TimeRange::ALL, None, &mut |b| {
        let ids = b
            .column_by_name(ID)
            .unwrap()
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap()
            .clone();
        let c = arrow_cast::cast(b.column_by_name("country").unwrap(), &DataType::Utf8).unwrap();
        let c = c.as_any().downcast_ref::<StringArray>().unwrap();
        for i in 0..b.num_rows() {
            got.push((ids.value(i).to_string(), c.value(i).to_string()));
        }
        Ok(())
    })
    .unwrap();
    got.sort();
    expected.sort();
    assert_eq!(got, expected);
    assert_eq!(log.find("b39-7").unwrap().len(), 1);
}

/// One batch holding records of two model versions (a reload inside it):
/// each version re-scores exactly its own rows.
#[test]
fn replay_scores_each_version_of_a_mixed_batch_with_its_own_model() {
    let dir = tempfile::tempdir().unwrap();
    let paths = [
        linear_model(dir.path(), "one.json", [1.0, 2.0], 0.0),
        linear_model(dir.path(), "two.json", [3.0, 0.5], 1.0),
    ];
    let models: Vec<_> = paths
        .iter()
        .map(|p| crate::models::CompiledModel::load(p, Device::Cpu).unwrap())
        .collect();
    let mut writer = AuditWriter::open(&spec(dir.path())).unwrap();
    for m in &models {
        writer.store_model(&m.version, &m.bytes).unwrap();
    }
    let mut builder =
        RecordBuilder::new(Some("txn_id"), Some(1), &scored_schema(), "d".into()).unwrap();
    let n = 60;
    let a: Vec<f32> = (0..n).map(|i| i as f32 / 7.0).collect();
    // Rows alternate in runs between the two versions.
    let which: Vec<i32> = (0..n).map(|i| ((i / 5) % 2) as i32).collect();
    let score: Vec<f32> = a
        .iter()
        .zip(&which)
        .map(|(&x, &w)| if w == 0 { x + 2.0 } else { 3.0 * x + 0.5 + 1.0 })
        .collect();
    let batch = RecordBatch::try_new(
        scored_schema(),
        vec![
            Arc::new(StringArray::from(
                (0..n).map(|i| format!("m{i}")).collect::<Vec<_>>(),
            )),
            Arc::new(Int64Array::from(vec![now_us(); n])),
            Arc::new(Float32Array::from(a)),
            Arc::new(Float32Array::from(vec![1.0f32; n])),
            Arc::new(Float32Array::from(score)),
            Arc::new(DictionaryArray::<Int32Type>::new(
                Int32Array::from(which),
                Arc::new(StringArray::from(vec![
                    models[0].version.clone(),
                    models[1].version.clone(),
                ])),
            )),
        ],
    )
    .unwrap();
    let records = builder
        .build(&Arc::from("s"), SystemTime::now(), &batch, "cpu x")
        .unwrap();
    writer.write(&records).unwrap();
    drop(writer);
    let report = replay(
        &AuditLog::open(dir.path()).unwrap(),
        &ReplayOptions {
            range: TimeRange::ALL,
            candidate: None,
            threshold: 0.5,
            top: 0,
        },
    )
    .unwrap();
    assert_eq!(
        (report.records, report.compared, report.mismatches),
        (60, 60, 0)
    );
    let per_version: Vec<u64> = report.versions.iter().map(|v| v.records).collect();
    assert_eq!(per_version, [30, 30]);
}

/// What a crash loses: a segment still open (a partial file) is deleted
/// when the log is next opened; published segments are kept.
#[test]
fn a_partial_segment_left_by_a_killed_process_is_deleted_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(9);
    let written = write_random(dir.path(), &mut rng, now_us() - DAY_US, 1, 3);
    let (_, partition) = &partitions(dir.path())[0];
    let partial = partition.join(".seg-0000000000000001-0000.arrow.partial");
    std::fs::write(&partial, b"half a segment").unwrap();
    drop(AuditWriter::open(&spec(dir.path())).unwrap());
    assert!(!partial.exists());
    let mut kept = Vec::new();
    AuditLog::open(dir.path())
        .unwrap()
        .read_range(TimeRange::ALL, None, &mut |b| {
            kept.extend(rows_of(&[b]));
            Ok(())
        })
        .unwrap();
    assert_eq!(sorted(kept), sorted(written));
}

/// Under checkpoints a cut seals every open segment (complete, fsynced,
/// hidden, its index beside it) and only the checkpoint publishes them; a
/// crash before that leaves partial files the next start deletes, so the
/// log holds exactly the epochs published.
#[test]
fn under_checkpoints_a_cut_seals_segments_and_only_the_checkpoint_publishes_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut builder =
        RecordBuilder::new(Some("txn_id"), Some(1), &event_schema(), "d".into()).unwrap();
    let source: Arc<str> = Arc::from("test");
    let centre = now_us() - DAY_US;
    let mut batch_of = |first: usize, n: usize| {
        let ids: Vec<String> = (first..first + n).map(|i| format!("t{i}")).collect();
        // Two event hours: two segments open at the cut.
        let ts: Vec<i64> = (0..n).map(|i| centre + (i % 2) as i64 * HOUR_US).collect();
        let a: Vec<f32> = (0..n).map(|i| i as f32).collect();
        builder
            .build(
                &source,
                SystemTime::now(),
                &events(&ids, &ts, &a),
                "cpu test",
            )
            .unwrap()
    };
    let read = |dir: &Path| {
        let mut got = Vec::new();
        AuditLog::open(dir)
            .unwrap()
            .read_range(TimeRange::ALL, None, &mut |b| {
                got.extend(rows_of(&[b]));
                Ok(())
            })
            .unwrap();
        got.len()
    };
    let mut writer = AuditWriter::open(&spec(dir.path())).unwrap().with_epochs();
    writer.write(&batch_of(0, 100)).unwrap();
    let sealed = writer.seal_epoch().unwrap();
    assert_eq!(sealed.len(), 4, "two segments, each with its index");
    for f in &sealed {
        assert!(
            f.partial.exists() && !f.path.exists(),
            "{}",
            f.path.display()
        );
    }
    assert_eq!(
        read(dir.path()),
        0,
        "nothing published before the checkpoint"
    );
    for f in &sealed {
        f.rename().unwrap();
    }
    assert_eq!(read(dir.path()), 100);
    // The next epoch is sealed but its checkpoint never comes (a crash).
    writer.write(&batch_of(100, 50)).unwrap();
    let lost = writer.seal_epoch().unwrap();
    assert_eq!(lost.len(), 4);
    writer.write(&batch_of(150, 10)).unwrap();
    drop(writer);
    assert!(lost.iter().all(|f| f.partial.exists()));
    drop(AuditWriter::open(&spec(dir.path())).unwrap());
    assert!(lost.iter().all(|f| !f.partial.exists() && !f.path.exists()));
    assert!(super::layout::partial_files(dir.path()).is_empty());
    assert_eq!(read(dir.path()), 100, "exactly the published epoch");
    // No index is left without its segment.
    for (_, partition) in partitions(dir.path()) {
        for e in std::fs::read_dir(&partition).unwrap() {
            let name = e.unwrap().file_name().into_string().unwrap();
            if let Some(stem) = name.strip_prefix('_').and_then(|n| n.strip_suffix(".idx")) {
                assert!(partition.join(format!("{stem}.arrow")).exists(), "{name}");
            }
        }
    }
}
