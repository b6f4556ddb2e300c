//! The join against a plain reference written the obvious way: for every
//! event, scan every row of the table for its key and keep the greatest
//! `valid_from <= t`.

use crate::operators::test_rng::Rng;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use arrow_array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use super::*;
use crate::metrics::PipelineMetrics;
use crate::operators::{Flow, Operator, Step};

/// One table row: key, valid_from, limit (None: null), country.
#[derive(Clone, Debug)]
struct Row {
    key: i64,
    valid_from: i64,
    limit: Option<f64>,
    country: String,
}

/// Up to four versions per key, in increasing valid_from, keys in random
/// order (the file's rows interleave keys).
fn random_table(r: &mut Rng, keys: u64) -> Vec<Row> {
    let present: Vec<i64> = (0..keys as i64).filter(|_| !r.chance(0.2)).collect(); // some keys have no row
    let mut per_key: Vec<Vec<Row>> = present
        .into_iter()
        .map(|k| {
            let mut t = 1_000 + r.below(50) as i64;
            (0..1 + r.below(4))
                .map(|_| {
                    t += 1 + r.below(40) as i64;
                    Row {
                        key: k,
                        valid_from: t,
                        limit: (!r.chance(0.1)).then(|| (r.below(10_000) * 100) as f64),
                        country: ["PT", "DE", "US", "BR"][r.below(4) as usize].into(),
                    }
                })
                .collect()
        })
        .collect();
    let mut out = Vec::new();
    while per_key.iter().any(|v| !v.is_empty()) {
        let live: Vec<usize> = (0..per_key.len())
            .filter(|&i| !per_key[i].is_empty())
            .collect();
        let i = live[r.below(live.len() as u64) as usize];
        out.push(per_key[i].remove(0));
    }
    out
}

fn text_key(k: i64) -> String {
    format!("card-{k:04}")
}

/// The table as a batch; string keys as "card-NNNN".
fn table_batch(rows: &[Row], text: bool, valid_from: bool) -> RecordBatch {
    let key: ArrayRef = if text {
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| text_key(r.key)),
        ))
    } else {
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.key)))
    };
    let mut fields = vec![Field::new("card", key.data_type().clone(), false)];
    let mut columns = vec![key];
    if valid_from {
        fields.push(Field::new("valid_from", DataType::Int64, false));
        columns.push(Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.valid_from),
        )));
    }
    fields.push(Field::new("credit_limit", DataType::Float64, true));
    columns.push(Arc::new(Float64Array::from_iter(
        rows.iter().map(|r| r.limit),
    )));
    fields.push(Field::new("country", DataType::Utf8, false));
    columns.push(Arc::new(StringArray::from_iter_values(
        rows.iter().map(|r| r.country.as_str()),
    )));
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).expect("a table batch")
}

/// Writes `batch` as `path`'s format (by extension).
fn write(path: &Path, batch: &RecordBatch) {
    let file = std::fs::File::create(path).expect("create");
    match path.extension().and_then(|e| e.to_str()) {
        Some("parquet") => {
            let mut w =
                parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).expect("parquet");
            w.write(batch).expect("write");
            w.close().expect("close");
        }
        Some("arrow") => {
            let mut w = arrow_ipc::writer::FileWriter::try_new(file, &batch.schema()).expect("ipc");
            w.write(batch).expect("write");
            w.finish().expect("finish");
        }
        Some("csv") => {
            let mut w = arrow_csv::Writer::new(file);
            w.write(batch).expect("write");
        }
        other => panic!("no writer for {other:?}"),
    }
}

/// Writes to a temporary name and renames: a reader never sees half a file.
fn replace(path: &Path, batch: &RecordBatch) {
    let tmp = path.with_extension(format!(
        "tmp.{}",
        path.extension().and_then(|e| e.to_str()).unwrap_or("")
    ));
    write(&tmp, batch);
    std::fs::rename(&tmp, path).expect("rename");
}

fn spec(table: &Path, valid_from: bool) -> EnrichSpec {
    EnrichSpec {
        name: "profile".into(),
        table: table.to_path_buf(),
        key: "card".into(),
        columns: None,
        valid_from: valid_from.then(|| "valid_from".to_string()),
        missing: Missing::Null,
        table_bytes_max: 64 << 20,
    }
}

fn event_schema(text: bool) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(
            "card",
            if text {
                DataType::Utf8
            } else {
                DataType::Int64
            },
            true,
        ),
        Field::new("ts", DataType::Int64, true),
        Field::new("amount", DataType::Float64, true),
    ]))
}

/// Events: keys in and out of the table, null keys, times before, between
/// and after the versions.
fn events(r: &mut Rng, n: usize, keys: u64, text: bool) -> RecordBatch {
    let key: Vec<Option<i64>> = (0..n)
        .map(|_| (!r.chance(0.05)).then(|| r.below(keys + keys / 5) as i64))
        .collect();
    let key_array: ArrayRef = if text {
        Arc::new(StringArray::from_iter(key.iter().map(|k| k.map(text_key))))
    } else {
        Arc::new(Int64Array::from(key))
    };
    let ts = Int64Array::from_iter_values((0..n).map(|_| 900 + r.below(300) as i64));
    let amount = Float64Array::from_iter_values((0..n).map(|i| i as f64));
    RecordBatch::try_new(
        event_schema(text),
        vec![key_array, Arc::new(ts), Arc::new(amount)],
    )
    .expect("events")
}

/// The reference: the row of `rows` for the event (key, t), by a scan.
fn reference(rows: &[Row], key: Option<i64>, t: i64, valid_from: bool) -> Option<&Row> {
    let key = key?;
    let mut best: Option<&Row> = None;
    for r in rows.iter().filter(|r| r.key == key) {
        if valid_from && r.valid_from > t {
            continue;
        }
        if best.is_none_or(|b| r.valid_from > b.valid_from) {
            best = Some(r);
        }
    }
    best
}

fn flow(batch: RecordBatch, seq: u64) -> Flow {
    Flow::of_events(Arc::from("test"), seq, 0..batch.num_rows() as u64, batch)
}

fn operator(spec: &EnrichSpec, text: bool) -> EnrichOperator {
    let metrics = Arc::new(PipelineMetrics::default());
    let live = Arc::new(LiveTable::open(spec, metrics).expect("the table loads"));
    EnrichOperator::new(live, Some(1), &event_schema(text)).expect("fits the events")
}

fn run(op: &mut EnrichOperator, batch: RecordBatch) -> Flow {
    match op.begin(flow(batch, 0)) {
        Step::Done(f) => f,
        Step::InFlight(_) => panic!("enrichment runs on the CPU, at once"),
    }
}

/// The key of event row `i` as the generator made it.
fn event_key(batch: &RecordBatch, i: usize) -> Option<i64> {
    let c = batch.column(0);
    if c.is_null(i) {
        return None;
    }
    match c.data_type() {
        DataType::Int64 => Some(c.as_primitive::<Int64Type>().value(i)),
        _ => Some(
            c.as_string::<i32>().value(i)[5..]
                .parse()
                .expect("card-NNNN"),
        ),
    }
}

/// Checks every output row against the reference over `rows`, and that it
/// names `version`.
fn check(out: &RecordBatch, rows: &[Row], valid_from: bool, version: &str) {
    let limit = out
        .column_by_name("credit_limit")
        .expect("limit")
        .as_primitive::<Float64Type>();
    let country = out
        .column_by_name("country")
        .expect("country")
        .as_string::<i32>();
    let versions = out.column_by_name("profile_version").expect("version");
    let versions = versions.as_any_dictionary();
    let names = versions.values().as_string::<i32>();
    let ts = out.column(1).as_primitive::<Int64Type>();
    for i in 0..out.num_rows() {
        let key = event_key(out, i);
        let want = reference(rows, key, ts.value(i), valid_from);
        let at = format!("row {i} key {key:?} t {}", ts.value(i));
        match want {
            None => {
                assert!(
                    limit.is_null(i) && country.is_null(i),
                    "{at}: expected no row"
                );
            }
            Some(w) => {
                assert_eq!(country.value(i), w.country, "{at}");
                assert_eq!(limit.is_null(i), w.limit.is_none(), "{at}");
                if let Some(l) = w.limit {
                    assert_eq!(limit.value(i), l, "{at}");
                }
            }
        }
        let code = versions.normalized_keys()[i];
        assert_eq!(names.value(code), version, "{at}: the snapshot named");
    }
}

#[test]
fn the_join_equals_a_plain_scan_for_every_key_type_format_and_rule() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cases = 0;
    for (seed, ext) in [(1u64, "parquet"), (2, "csv"), (3, "arrow")] {
        for text in [false, true] {
            for valid_from in [true, false] {
                let mut r = Rng(seed * 7919 + text as u64 * 31 + valid_from as u64);
                let mut rows = random_table(&mut r, 300);
                if !valid_from {
                    // One row per key: the newest version only.
                    let mut last: HashMap<i64, Row> = HashMap::new();
                    for row in rows {
                        last.insert(row.key, row);
                    }
                    rows = last.into_values().collect();
                    rows.sort_by_key(|r| (r.valid_from * 7 + r.key) % 101);
                }
                let path = dir.path().join(format!("t{seed}{text}{valid_from}.{ext}"));
                write(&path, &table_batch(&rows, text, valid_from));
                let mut op = operator(&spec(&path, valid_from), text);
                let version = op.live().current().version().to_string();
                for _ in 0..3 {
                    let batch = events(&mut r, 700, 300, text);
                    let f = run(&mut op, batch);
                    assert!(f.dead_letters.is_empty());
                    check(f.batch.as_ref().expect("rows"), &rows, valid_from, &version);
                    cases += 1;
                }
            }
        }
    }
    assert_eq!(cases, 36);
}

#[test]
fn dictionary_keys_join_as_their_strings() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut r = Rng(99);
    let rows = random_table(&mut r, 50);
    let path = dir.path().join("t.parquet");
    write(&path, &table_batch(&rows, true, true));
    let schema = Arc::new(Schema::new(vec![
        Field::new(
            "card",
            DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
            true,
        ),
        Field::new("ts", DataType::Int64, true),
        Field::new("amount", DataType::Float64, true),
    ]));
    let live = Arc::new(LiveTable::open(&spec(&path, true), Arc::default()).expect("loads"));
    let mut op = EnrichOperator::new(live, Some(1), &schema).expect("fits");
    let plain = events(&mut r, 500, 50, true);
    let dict =
        arrow_cast::cast(plain.column(0), schema.field(0).data_type()).expect("to a dictionary");
    let batch = RecordBatch::try_new(
        schema,
        vec![dict, plain.column(1).clone(), plain.column(2).clone()],
    )
    .expect("batch");
    let f = run(&mut op, batch);
    let out = f.batch.expect("rows");
    // The check reads keys as strings: give it the plain column back.
    let mut columns = out.columns().to_vec();
    columns[0] = plain.column(0).clone();
    let fields: Vec<Field> = out
        .schema()
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            if i == 0 {
                Field::new("card", DataType::Utf8, true)
            } else {
                f.as_ref().clone()
            }
        })
        .collect();
    let out = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).expect("batch");
    let version = op.live().current().version().to_string();
    check(&out, &rows, true, &version);
}

#[test]
fn missing_dead_letter_sends_unjoined_events_to_the_dead_letters_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut r = Rng(5);
    let rows = random_table(&mut r, 100);
    let path = dir.path().join("t.parquet");
    write(&path, &table_batch(&rows, false, true));
    let mut s = spec(&path, true);
    s.missing = Missing::DeadLetter;
    let mut op = operator(&s, false);
    let batch = events(&mut r, 1000, 100, false);
    let expected_missing = (0..batch.num_rows())
        .filter(|&i| {
            let t = batch.column(1).as_primitive::<Int64Type>().value(i);
            reference(&rows, event_key(&batch, i), t, true).is_none()
        })
        .count();
    assert!(
        expected_missing > 0,
        "the stream has events that join nothing"
    );
    let f = run(&mut op, batch.clone());
    let out = f.batch.expect("rows");
    assert_eq!(f.dead_letters.len(), expected_missing);
    assert_eq!(out.num_rows() + f.dead_letters.len(), batch.num_rows());
    assert!(out.column_by_name("country").expect("country").null_count() == 0);
    let reasons: Vec<&str> = f.dead_letters.iter().map(|d| d.reason.as_str()).collect();
    assert!(
        reasons.iter().any(|r| r.contains("the key is null")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("no version of key")),
        "{reasons:?}"
    );
    // The kept rows are the joined ones, in order, with their own values.
    check(&out, &rows, true, op.live().current().version().as_ref());
    assert_eq!(
        op.live()
            .unmatched
            .load(std::sync::atomic::Ordering::Relaxed),
        expected_missing as u64
    );
}

#[test]
fn a_null_event_time_under_an_as_of_join_is_a_dead_letter() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut r = Rng(8);
    let rows = random_table(&mut r, 10);
    let path = dir.path().join("t.arrow");
    write(&path, &table_batch(&rows, false, true));
    let mut op = operator(&spec(&path, true), false);
    let batch = RecordBatch::try_new(
        event_schema(false),
        vec![
            Arc::new(Int64Array::from(vec![Some(1), Some(2), Some(3)])),
            Arc::new(Int64Array::from(vec![Some(2000), None, Some(2000)])),
            Arc::new(Float64Array::from(vec![1.0, 2.0, 3.0])),
        ],
    )
    .expect("batch");
    let f = run(&mut op, batch);
    assert_eq!(f.rows(), 2);
    assert_eq!(f.dead_letters.len(), 1);
    assert!(
        f.dead_letters[0].reason.contains("no event time"),
        "{}",
        f.dead_letters[0].reason
    );
}

/// Every bad table is refused with what and where.
#[test]
fn bad_tables_are_refused_naming_what_and_where() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rows = |list: &[(i64, i64)]| -> Vec<Row> {
        list.iter()
            .map(|&(key, valid_from)| Row {
                key,
                valid_from,
                limit: Some(1.0),
                country: "PT".into(),
            })
            .collect()
    };
    let load = |name: &str, batch: &RecordBatch, s: &dyn Fn(&Path) -> EnrichSpec| -> String {
        let path = dir.path().join(name);
        write(&path, batch);
        match LiveTable::open(&s(&path), Arc::default()) {
            Ok(_) => panic!("{name}: loaded"),
            Err(e) => crate::error::chain(&e),
        }
    };
    let with_vf = |p: &Path| spec(p, true);
    let e = load(
        "dup.parquet",
        &table_batch(&rows(&[(1, 10), (2, 10), (1, 10)]), false, true),
        &with_vf,
    );
    assert!(
        e.contains("rows 1 and 3 both hold key 1 at valid_from 10"),
        "{e}"
    );
    let e = load(
        "dupkey.parquet",
        &table_batch(&rows(&[(1, 10), (2, 10), (2, 11)]), false, false),
        &|p| spec(p, false),
    );
    assert!(
        e.contains("rows 2 and 3 both hold key 2; expected one row per key"),
        "{e}"
    );
    let e = load(
        "order.csv",
        &table_batch(&rows(&[(1, 10), (1, 30), (1, 20)]), false, true),
        &with_vf,
    );
    assert!(
        e.contains("row 3: key 1 has valid_from 20 after 30 (row 2)"),
        "{e}"
    );
    let e = load(
        "nokey.parquet",
        &table_batch(&rows(&[(1, 10)]), false, true),
        &|p| EnrichSpec {
            key: "customer".into(),
            ..spec(p, true)
        },
    );
    assert!(
        e.contains("no column \"customer\" (the key)") && e.contains("it has card, valid_from"),
        "{e}"
    );
    let e = load(
        "cols.parquet",
        &table_batch(&rows(&[(1, 10)]), false, true),
        &|p| EnrichSpec {
            columns: Some(vec!["credit_limit".into(), "tier".into()]),
            ..spec(p, true)
        },
    );
    assert!(e.contains("no column \"tier\" (in columns)"), "{e}");
    let e = load(
        "novf.parquet",
        &table_batch(&rows(&[(1, 10)]), false, false),
        &with_vf,
    );
    assert!(e.contains("no column \"valid_from\" (valid_from)"), "{e}");
    // A null valid_from, a float valid_from, a null key, a float key.
    let nulls = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("card", DataType::Int64, true),
            Field::new("valid_from", DataType::Int64, true),
            Field::new("f", DataType::Float64, true),
        ])),
        vec![
            Arc::new(Int64Array::from(vec![Some(1), Some(2), None])),
            Arc::new(Int64Array::from(vec![Some(1), None, Some(3)])),
            Arc::new(Float64Array::from(vec![1.0, 2.0, 3.0])),
        ],
    )
    .expect("batch");
    let e = load("nullvf.parquet", &nulls, &with_vf);
    assert!(e.contains("row 3: \"card\" is null"), "{e}");
    let e = load("nullvf2.parquet", &nulls.slice(0, 2), &with_vf);
    assert!(e.contains("row 2: \"valid_from\" is null"), "{e}");
    let e = load("floatvf.parquet", &nulls, &|p| EnrichSpec {
        valid_from: Some("f".into()),
        ..spec(p, true)
    });
    assert!(
        e.contains("valid_from column \"f\" is Float64; expected int64"),
        "{e}"
    );
    let e = load("floatkey.parquet", &nulls, &|p| EnrichSpec {
        key: "f".into(),
        valid_from: None,
        ..spec(p, false)
    });
    assert!(
        e.contains("key column \"f\" is Float64; expected an integer or a string"),
        "{e}"
    );
    // Past table_mb, with the figure.
    let mut r = Rng(3);
    let big = table_batch(&random_table(&mut r, 5000), false, true);
    let e = load("big.parquet", &big, &|p| EnrichSpec {
        table_bytes_max: 64 << 10,
        ..spec(p, true)
    });
    assert!(
        e.contains("bytes in memory") && e.contains("past table_mb = 0 MiB"),
        "{e}"
    );
    // A malformed CSV row names its line.
    let path = dir.path().join("bad.csv");
    // (past the 1,024 rows the types are inferred from)
    let mut text = String::from("card,valid_from,credit_limit\n");
    for k in 0..1100 {
        text.push_str(&format!("{k},10,5\n"));
    }
    text.push_str("2000,x,6\n");
    std::fs::write(&path, text).expect("write");
    let e = crate::error::chain(
        &LiveTable::open(&spec(&path, true), Arc::default())
            .err()
            .expect("refused"),
    );
    assert!(e.contains("line 1102") && e.contains("valid_from"), "{e}");
    // Not a table format.
    let e = crate::error::chain(
        &LiveTable::open(&spec(&dir.path().join("t.ndjson"), true), Arc::default())
            .err()
            .expect("refused"),
    );
    assert!(e.contains("expected .parquet, .arrow/.ipc or .csv"), "{e}");
}

#[test]
fn the_events_must_fit_the_table() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut r = Rng(4);
    let path = dir.path().join("t.parquet");
    write(&path, &table_batch(&random_table(&mut r, 10), true, true));
    let live = Arc::new(LiveTable::open(&spec(&path, true), Arc::default()).expect("loads"));
    let e = EnrichOperator::new(live.clone(), Some(1), &event_schema(false))
        .err()
        .expect("refused");
    assert!(
        e.to_string()
            .contains("the event's key \"card\" is Int64, the table's is a string"),
        "{e}"
    );
    let e = EnrichOperator::new(live.clone(), None, &event_schema(true))
        .err()
        .expect("refused");
    assert!(
        e.to_string()
            .contains("valid_from needs the pipeline's event_time"),
        "{e}"
    );
    let other = Arc::new(Schema::new(vec![Field::new(
        "customer",
        DataType::Utf8,
        true,
    )]));
    let e = EnrichOperator::new(live.clone(), Some(0), &other)
        .err()
        .expect("refused");
    assert!(
        e.to_string()
            .contains("the input has no key column \"card\" (it has customer)"),
        "{e}"
    );
    let clash = Arc::new(Schema::new(vec![
        Field::new("card", DataType::Utf8, true),
        Field::new("ts", DataType::Int64, true),
        Field::new("country", DataType::Utf8, true),
    ]));
    let e = EnrichOperator::new(live, Some(1), &clash)
        .err()
        .expect("refused");
    assert!(
        e.to_string().contains("column \"country\" exists already"),
        "{e}"
    );
}

/// Reloads and upserts land between batches: while another thread swaps
/// snapshots, every row joins one whole snapshot and names it.
#[test]
fn reloads_mid_stream_swap_whole_snapshots_between_batches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t.parquet");
    let mut r = Rng(11);
    let tables: Vec<Vec<Row>> = (0..4).map(|_| random_table(&mut r, 200)).collect();
    write(&path, &table_batch(&tables[0], false, true));
    let mut op = operator(&spec(&path, true), false);
    let live = op.live().clone();
    // Each version the stream may meet, and its rows.
    let mut known: HashMap<String, usize> = HashMap::new();
    known.insert(live.current().version().to_string(), 0);
    let (tx, rx) = crossbeam_channel::bounded::<(String, usize)>(16);
    let writer = {
        let live = live.clone();
        let path = path.clone();
        let tables = tables.clone();
        std::thread::spawn(move || {
            for round in 1..=12 {
                let which = round % tables.len();
                replace(&path, &table_batch(&tables[which], false, true));
                let version = live.reload().expect("reloads");
                tx.send((version.to_string(), which)).expect("send");
            }
        })
    };
    let mut seen = std::collections::HashSet::new();
    let mut batches = 0;
    while !writer.is_finished() || batches < 5 {
        let batch = events(&mut r, 400, 200, false);
        let f = run(&mut op, batch);
        let out = f.batch.expect("rows");
        while let Ok((v, which)) = rx.try_recv() {
            known.insert(v, which);
        }
        let names = out.column_by_name("profile_version").expect("version");
        let names = names
            .as_any_dictionary()
            .values()
            .as_string::<i32>()
            .value(0)
            .to_string();
        // The writer may have swapped after the batch began: wait for its news.
        let which = loop {
            if let Some(w) = known.get(&names) {
                break *w;
            }
            let (v, which) = rx.recv().expect("the writer names every version");
            known.insert(v, which);
        };
        check(&out, &tables[which], true, &names);
        seen.insert(names);
        batches += 1;
    }
    writer.join().expect("writer");
    assert!(batches >= 5);
    // A reload of an unchanged file is the same version: content, not time.
    replace(&path, &table_batch(&tables[0], false, true));
    let v1 = live.reload().expect("reloads");
    replace(&path, &table_batch(&tables[0], false, true));
    assert_eq!(live.reload().expect("reloads"), v1);
}

#[test]
fn a_failed_reload_keeps_the_snapshot_in_use_and_counts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t.csv");
    let mut r = Rng(12);
    let rows = random_table(&mut r, 50);
    write(&path, &table_batch(&rows, false, true));
    let metrics = Arc::new(PipelineMetrics::default());
    let live = Arc::new(LiveTable::open(&spec(&path, true), metrics.clone()).expect("loads"));
    let mut op = EnrichOperator::new(live.clone(), Some(1), &event_schema(false)).expect("fits");
    let before = live.current().version().clone();
    // Broken: a duplicate version; then a changed column type.
    let mut dup = rows.clone();
    let newest = rows.iter().rfind(|r| r.key == rows[0].key).expect("a row");
    dup.push(newest.clone());
    replace(&path, &table_batch(&dup, false, true));
    let e = live
        .reload_if_changed()
        .expect("the file changed")
        .expect_err("refused");
    assert!(e.to_string().contains("both hold key"), "{e}");
    assert!(
        live.reload_if_changed().is_none(),
        "a broken file is tried once per change"
    );
    std::fs::write(&path, "card,valid_from,credit_limit,country\n1,5,x,PT\n").expect("write");
    let e = live.reload().expect_err("refused");
    assert!(
        e.to_string()
            .contains("column \"credit_limit\" is now Utf8, was Float64"),
        "{e}"
    );
    assert_eq!(live.current().version(), &before);
    let f = run(&mut op, events(&mut r, 300, 50, false));
    check(f.batch.as_ref().expect("rows"), &rows, true, &before);
    let stats = metrics.snapshot("p", "file", "rows", None, false);
    let o = stats
        .operators
        .iter()
        .find(|o| o.kind == "enrich")
        .expect("stats");
    assert_eq!((o.table_loads, o.table_load_failures), (1, 2));
    assert_eq!(o.table_rows, rows.len() as u64);
}

#[test]
fn upserts_are_seen_by_the_next_batch_and_name_a_new_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t.parquet");
    let mut r = Rng(13);
    let mut rows = random_table(&mut r, 100);
    write(&path, &table_batch(&rows, false, true));
    let mut op = operator(&spec(&path, true), false);
    let live = op.live().clone();
    let v0 = live.current().version().clone();
    // New keys, a new version between existing ones, a replaced version.
    let existing = rows[0].clone();
    let upserts = vec![
        Row {
            key: 5000,
            valid_from: 0,
            limit: Some(7.0),
            country: "FR".into(),
        },
        Row {
            key: existing.key,
            valid_from: existing.valid_from,
            limit: Some(1.5),
            country: "XX".into(),
        },
        Row {
            key: existing.key,
            valid_from: existing.valid_from - 1,
            limit: None,
            country: "YY".into(),
        },
    ];
    let v1 = live
        .upsert(&table_batch(&upserts, false, true))
        .expect("upserted");
    assert_ne!(v1, v0);
    rows.retain(|r| !(r.key == existing.key && r.valid_from == existing.valid_from));
    rows.extend(upserts);
    assert_eq!(live.current().rows(), rows.len());
    for _ in 0..3 {
        let mut batch = events(&mut r, 500, 100, false);
        // Make sure the upserted keys are asked for.
        let keys: Vec<Option<i64>> = (0..batch.num_rows())
            .map(|i| match i % 10 {
                0 => Some(5000),
                1 => Some(existing.key),
                _ => event_key(&batch, i),
            })
            .collect();
        let mut columns = batch.columns().to_vec();
        columns[0] = Arc::new(Int64Array::from(keys));
        batch = RecordBatch::try_new(batch.schema(), columns).expect("batch");
        let f = run(&mut op, batch);
        check(f.batch.as_ref().expect("rows"), &rows, true, &v1);
    }
    // An upsert that does not fit the table is refused and changes nothing.
    let bad = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("card", DataType::Utf8, false)])),
        vec![Arc::new(StringArray::from(vec!["x"]))],
    )
    .expect("batch");
    let e = live.upsert(&bad).expect_err("refused");
    assert!(
        e.to_string()
            .contains("upsert: column \"card\": is Utf8; expected an integer"),
        "{e}"
    );
    assert_eq!(live.current().version(), &v1);
    // A reload returns to the file: upserts not written there are gone.
    assert_eq!(live.reload().expect("reloads"), v0);
}

#[test]
fn the_snapshot_names_the_version_joined_and_restores() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t.parquet");
    let mut r = Rng(14);
    write(&path, &table_batch(&random_table(&mut r, 20), false, true));
    let mut op = operator(&spec(&path, true), false);
    run(&mut op, events(&mut r, 50, 20, false));
    let snap = op.snapshot();
    let mut other = operator(&spec(&path, true), false);
    other.restore(&snap).expect("restores");
    assert_eq!(other.snapshot(), snap);
    let mut torn = snap.clone();
    torn.pop();
    assert!(other.restore(&torn).is_err());
}
