//! File sources: io_uring and plain reads give identical batches; the
//! fallback is taken when forced or when the memlock budget is too small;
//! Arrow IPC files are mapped without a copy; hostile files are refused.

use std::path::Path;
use std::sync::Arc;

use arrow_array::{Array, Float32Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use roo_ingest::{FileFormat, FileSource, IngestBatch, IoUringMode, ReadOptions, ReadPath};

mod common;
use common::io_uring_here;

fn read(
    path: &Path,
    format: FileFormat,
    f32_cols: &[usize],
    rows: usize,
    options: ReadOptions,
) -> (Vec<IngestBatch>, Option<ReadPath>) {
    let mut source = FileSource::open(path, format)
        .unwrap()
        .with_read_options(options);
    source.parse_as_f32(f32_cols);
    let mut batches = source.batches(rows).unwrap();
    let out: Vec<IngestBatch> = batches.by_ref().map(Result::unwrap).collect();
    (out, batches.read_path().cloned())
}

/// A CSV of `rows` rows, one bad row in every 1000, lines of varying length.
fn write_csv(path: &Path, rows: usize) -> String {
    let mut text = String::from("id,amount,count,label\n");
    for i in 0..rows {
        if i % 1000 == 999 {
            text.push_str(&format!("{i},not-a-number,{i},x\n"));
        } else {
            text.push_str(&format!(
                "{i},{}.{},{},\"l,{}\"\n",
                i % 977,
                i % 13,
                i * 3,
                "y".repeat(i % 17)
            ));
        }
    }
    std::fs::write(path, &text).unwrap();
    text
}

fn same(a: &[IngestBatch], b: &[IngestBatch]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.batch, y.batch);
        assert_eq!(x.offsets, y.offsets);
        assert_eq!(x.seq, y.seq);
        assert_eq!(x.dead_letters, y.dead_letters);
    }
}

#[test]
fn io_uring_and_plain_reads_give_identical_batches() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.csv");
    let text = write_csv(&path, 120_000);
    let small = ReadOptions {
        buffer_bytes: 64 << 10,
        queue_depth: 3,
        ..ReadOptions::default()
    };
    let (uring, path_taken) = read(&path, FileFormat::Csv, &[1], 10_000, small.clone());
    if io_uring_here() {
        assert!(
            matches!(
                path_taken,
                Some(ReadPath::IoUring {
                    queue_depth: 3,
                    buffer_bytes: 65536
                })
            ),
            "{path_taken:?}"
        );
    }
    let (plain, path_taken) = read(
        &path,
        FileFormat::Csv,
        &[1],
        10_000,
        ReadOptions {
            io_uring: IoUringMode::Off,
            ..small
        },
    );
    assert_eq!(
        path_taken,
        Some(ReadPath::Plain {
            reason: "io_uring is off in the configuration".into()
        })
    );
    same(&uring, &plain);

    // Every row is accounted for, in order, and the offsets tile the file.
    let rows: usize = uring.iter().map(|b| b.batch.num_rows()).sum();
    let dead: Vec<_> = uring.iter().flat_map(|b| b.dead_letters.iter()).collect();
    assert_eq!(rows + dead.len(), 120_000);
    assert_eq!(dead.len(), 120);
    assert_eq!(dead[0].line, Some(1001));
    assert_eq!(dead[0].raw, b"999,not-a-number,999,x");
    assert_eq!(uring.last().unwrap().offsets.end, text.len() as u64);
    let ids: Vec<i64> = uring
        .iter()
        .flat_map(|b| {
            b.batch
                .column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .values()
                .to_vec()
        })
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    let first = &uring[0].batch;
    assert_eq!(first.schema().field(1).data_type(), &DataType::Float32);
    assert_eq!(
        first
            .column(1)
            .as_any()
            .downcast_ref::<Float32Array>()
            .unwrap()
            .value(5),
        5.5
    );
    let labels = first
        .column(3)
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap();
    assert_eq!(labels.value(2), "l,yy");
}

#[test]
fn a_memlock_budget_too_small_falls_back_to_plain_reads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.csv");
    write_csv(&path, 5000);
    let (expected, _) = read(&path, FileFormat::Csv, &[1], 700, ReadOptions::default());
    let tiny = ReadOptions {
        memlock_bytes: Some(64 << 10),
        ..ReadOptions::default()
    };
    let (got, path_taken) = read(&path, FileFormat::Csv, &[1], 700, tiny);
    match path_taken {
        Some(ReadPath::Plain { reason }) => {
            assert!(reason.contains("memlock limit of 65536 bytes"), "{reason}")
        }
        other => panic!("expected the fallback, got {other:?}"),
    }
    same(&expected, &got);
    // A budget that fits fewer buffers shrinks the plan instead.
    let (_, path_taken) = read(
        &path,
        FileFormat::Csv,
        &[1],
        700,
        ReadOptions {
            memlock_bytes: Some(1 << 20),
            ..ReadOptions::default()
        },
    );
    if io_uring_here() {
        assert_eq!(
            path_taken,
            Some(ReadPath::IoUring {
                queue_depth: 2,
                buffer_bytes: 256 << 10
            })
        );
    }
}

/// [`test_batches`] written to a Parquet file at `path`.
fn write_parquet(path: &Path) -> Vec<RecordBatch> {
    let batches = test_batches();
    let mut w = parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(path).unwrap(),
        batches[0].schema(),
        None,
    )
    .unwrap();
    for b in &batches {
        w.write(b).unwrap();
    }
    w.close().unwrap();
    batches
}

fn test_batches() -> Vec<RecordBatch> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("x", DataType::Float32, true),
        Field::new("name", DataType::Utf8, true),
    ]));
    (0..3)
        .map(|k| {
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(Float32Array::from(
                        (0..1000).map(|i| (k * 1000 + i) as f32).collect::<Vec<_>>(),
                    )),
                    Arc::new(StringArray::from(
                        (0..1000).map(|i| format!("n{i}")).collect::<Vec<_>>(),
                    )),
                ],
            )
            .unwrap()
        })
        .collect()
}

/// Every buffer of every array lies inside `[start, end)`.
fn all_buffers_within(batch: &RecordBatch, start: usize, end: usize) -> bool {
    batch.columns().iter().all(|c| {
        let data = c.to_data();
        data.buffers().iter().all(|b| {
            let p = b.as_ptr() as usize;
            p >= start && p + b.len() <= end
        })
    })
}

#[test]
fn arrow_ipc_files_and_streams_are_read_without_a_copy() {
    let dir = tempfile::tempdir().unwrap();
    let batches = test_batches();
    let file_path = dir.path().join("t.arrow");
    let mut w = arrow_ipc::writer::FileWriter::try_new(
        std::fs::File::create(&file_path).unwrap(),
        &batches[0].schema(),
    )
    .unwrap();
    for b in &batches {
        w.write(b).unwrap();
    }
    w.finish().unwrap();
    let stream_path = dir.path().join("t.arrows");
    let mut w = arrow_ipc::writer::StreamWriter::try_new(
        std::fs::File::create(&stream_path).unwrap(),
        &batches[0].schema(),
    )
    .unwrap();
    for b in &batches {
        w.write(b).unwrap();
    }
    w.finish().unwrap();

    for path in [&file_path, &stream_path] {
        // Map the same file again to learn where the kernel put it: the
        // batches must point into the source's own mapping, so compare with
        // the address range of every mapping of this file in /proc/self/maps.
        let source = FileSource::open(path, FileFormat::ArrowIpc).unwrap();
        let got: Vec<IngestBatch> = source
            .batches(1 << 16)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let ranges = mappings_of(path);
        assert!(!ranges.is_empty(), "{} is mapped", path.display());
        for (b, expected) in got.iter().zip(&batches) {
            assert_eq!(&b.batch, expected);
            assert!(
                ranges
                    .iter()
                    .any(|&(s, e)| all_buffers_within(&b.batch, s, e)),
                "{}: every buffer points into the file's mapping",
                path.display()
            );
        }
        // Smaller batches are slices of the same memory.
        let source = FileSource::open(path, FileFormat::ArrowIpc).unwrap();
        let got: Vec<IngestBatch> = source.batches(300).unwrap().map(Result::unwrap).collect();
        assert_eq!(got.len(), 12);
        assert_eq!(got[4].offsets, 1000..1300);
        let ranges = mappings_of(path);
        assert!(got.iter().all(|b| ranges
            .iter()
            .any(|&(s, e)| all_buffers_within(&b.batch, s, e))));
    }
}

/// Address ranges at which `path` is mapped in this process.
fn mappings_of(path: &Path) -> Vec<(usize, usize)> {
    let canonical = std::fs::canonicalize(path).unwrap();
    let needle = canonical.to_str().unwrap();
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|l| l.ends_with(needle))
        .map(|l| {
            let range = l.split_whitespace().next().unwrap();
            let (s, e) = range.split_once('-').unwrap();
            (
                usize::from_str_radix(s, 16).unwrap(),
                usize::from_str_radix(e, 16).unwrap(),
            )
        })
        .collect()
}

#[test]
fn hostile_arrow_ipc_files_are_refused_without_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let batches = test_batches();
    let mut bytes = Vec::new();
    let mut w = arrow_ipc::writer::FileWriter::try_new(&mut bytes, &batches[0].schema()).unwrap();
    for b in &batches {
        w.write(b).unwrap();
    }
    w.finish().unwrap();
    drop(w);
    let path = dir.path().join("h.arrow");
    // Every truncation, and a byte flipped at many positions.
    let mut refused = 0;
    for cut in (0..bytes.len()).step_by(37) {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let outcome =
            std::panic::catch_unwind(|| match FileSource::open(&path, FileFormat::ArrowIpc) {
                Err(_) => true,
                Ok(s) => s
                    .batches(1000)
                    .map(|b| b.collect::<Result<Vec<_>, _>>().is_err())
                    .unwrap_or(true),
            });
        assert!(outcome.is_ok(), "truncated at {cut}: a panic");
        refused += outcome.unwrap() as usize;
    }
    assert!(refused > 0);
    for at in (0..bytes.len()).step_by(53) {
        let mut flipped = bytes.clone();
        flipped[at] ^= 0x5a;
        std::fs::write(&path, &flipped).unwrap();
        let outcome = std::panic::catch_unwind(|| {
            if let Ok(s) = FileSource::open(&path, FileFormat::ArrowIpc) {
                if let Ok(b) = s.batches(1000) {
                    let _ = b.collect::<Vec<_>>();
                }
            }
        });
        assert!(outcome.is_ok(), "a byte flipped at {at}: a panic");
    }
    let err = FileSource::open(dir.path().join("none.arrow"), FileFormat::ArrowIpc)
        .err()
        .unwrap();
    assert!(err.to_string().contains("none.arrow"), "{err}");
}

#[test]
fn ndjson_and_raw_files_read_through_the_same_path() {
    let dir = tempfile::tempdir().unwrap();
    let nd = dir.path().join("t.ndjson");
    let mut text = String::new();
    for i in 0..5000 {
        text.push_str(&format!(
            "{{\"id\": {i}, \"v\": {}.5, \"tag\": \"t{}\"}}\n",
            i % 100,
            i % 7
        ));
    }
    text.push_str("{\"id\": oops}\n");
    std::fs::write(&nd, &text).unwrap();
    let opts = ReadOptions {
        buffer_bytes: 64 << 10,
        ..ReadOptions::default()
    };
    let (a, _) = read(&nd, FileFormat::Ndjson, &[1], 999, opts.clone());
    let (b, _) = read(
        &nd,
        FileFormat::Ndjson,
        &[1],
        999,
        ReadOptions {
            io_uring: IoUringMode::Off,
            ..opts.clone()
        },
    );
    same(&a, &b);
    let schema = a[0].batch.schema();
    assert_eq!(schema.field(0).data_type(), &DataType::Int64);
    assert_eq!(schema.field(1).data_type(), &DataType::Float32);
    assert_eq!(schema.field(2).data_type(), &DataType::Utf8);
    assert_eq!(a.iter().map(|b| b.batch.num_rows()).sum::<usize>(), 5000);
    let dead: Vec<_> = a.iter().flat_map(|b| &b.dead_letters).collect();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].line, Some(5001));

    let raw = dir.path().join("t.f32");
    let values: Vec<u8> = (0..30_000).flat_map(|i| (i as f32).to_le_bytes()).collect();
    std::fs::write(&raw, &values).unwrap();
    let names = vec!["a".to_string(), "b".to_string(), "c".to_string()];
    let source = FileSource::open_raw(&raw, &names)
        .unwrap()
        .with_read_options(opts);
    let got: Vec<IngestBatch> = source.batches(4096).unwrap().map(Result::unwrap).collect();
    assert_eq!(
        got.iter().map(|b| b.batch.num_rows()).sum::<usize>(),
        10_000
    );
    let c = got[1]
        .batch
        .column(2)
        .as_any()
        .downcast_ref::<Float32Array>()
        .unwrap();
    assert_eq!(c.value(0), (4096 * 3 + 2) as f32);
}

#[test]
fn parquet_files_read_in_bounded_batches() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.parquet");
    write_parquet(&path);
    let got: Vec<IngestBatch> = FileSource::open(&path, FileFormat::Parquet)
        .unwrap()
        .batches(700)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(got.iter().all(|b| b.batch.num_rows() <= 700));
    assert_eq!(got.iter().map(|b| b.batch.num_rows()).sum::<usize>(), 3000);
    assert_eq!(got.last().unwrap().offsets.end, 3000);
}

/// A file read from a batch's end (as a checkpoint records it) gives the
/// batches a whole read gives after that point: the same rows, and dead
/// letters at the same offsets and lines (lines counted from the file's
/// start). Serial and in pieces; CSV, NDJSON and Parquet (rows).
#[test]
fn a_file_resumed_at_a_batch_end_goes_on_as_a_whole_read_would() {
    use arrow_select::concat::concat_batches;
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("t.csv");
    let text = write_csv(&csv, 20_000);
    let ndjson = dir.path().join("t.ndjson");
    let mut lines = String::new();
    for (i, l) in text.lines().skip(1).enumerate() {
        let id = l.split(',').next().unwrap();
        if i % 777 == 5 {
            lines.push_str("{\"id\": oops}\n");
        } else {
            lines.push_str(&format!("{{\"id\": {id}, \"amount\": {}.5}}\n", i % 31));
        }
    }
    std::fs::write(&ndjson, lines).unwrap();
    let pool = Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap(),
    );
    for (path, format) in [(&csv, FileFormat::Csv), (&ndjson, FileFormat::Ndjson)] {
        for pieces in [false, true] {
            let open = || {
                let mut s = FileSource::open(path, format).unwrap();
                s.parse_as_f32(&[1]);
                if pieces {
                    s = s.with_parse_pool(roo_ingest::ParsePool::new(pool.clone()));
                }
                s
            };
            let whole: Vec<IngestBatch> =
                open().batches(1500).unwrap().map(Result::unwrap).collect();
            assert!(whole.len() > 5);
            for cut in [1, whole.len() / 2, whole.len() - 1] {
                let at = whole[cut - 1].offsets.end;
                let mut resumed = open();
                resumed.start_at(at).unwrap();
                let rest: Vec<IngestBatch> =
                    resumed.batches(1500).unwrap().map(Result::unwrap).collect();
                let rows = |bs: &[IngestBatch]| {
                    let v: Vec<RecordBatch> = bs.iter().map(|b| b.batch.clone()).collect();
                    concat_batches(&v[0].schema(), &v).unwrap()
                };
                let letters = |bs: &[IngestBatch]| {
                    bs.iter()
                        .flat_map(|b| b.dead_letters.clone())
                        .collect::<Vec<_>>()
                };
                assert_eq!(
                    rows(&rest),
                    rows(&whole[cut..]),
                    "{format:?} pieces {pieces} cut {cut}"
                );
                assert_eq!(
                    letters(&rest),
                    letters(&whole[cut..]),
                    "{format:?} pieces {pieces} cut {cut}"
                );
                assert!(
                    cut > 1 || !letters(&rest).is_empty(),
                    "dead letters after the cut"
                );
                assert_eq!(rest[0].offsets.start, at);
                assert_eq!(rest[0].seq, 0);
                assert_eq!(
                    rest.last().unwrap().offsets.end,
                    whole.last().unwrap().offsets.end
                );
            }
        }
        // Not a line's start: refused with the reason.
        let mut s = FileSource::open(path, format).unwrap();
        let err = s.start_at(3).unwrap_err().to_string();
        assert!(err.contains("not the start of a line"), "{err}");
        let err = s.start_at(1 << 40).unwrap_err().to_string();
        assert!(err.contains("holds"), "{err}");
    }
    // Parquet: the offset is rows.
    let path = dir.path().join("t.parquet");
    let batches = write_parquet(&path);
    let mut s = FileSource::open(&path, FileFormat::Parquet).unwrap();
    s.start_at(1234).unwrap();
    let got: Vec<IngestBatch> = s.batches(700).unwrap().map(Result::unwrap).collect();
    assert_eq!(got[0].offsets.start, 1234);
    assert_eq!(
        got.iter().map(|b| b.batch.num_rows()).sum::<usize>(),
        3000 - 1234
    );
    let all = concat_batches(&batches[0].schema(), &batches).unwrap();
    let rest: Vec<RecordBatch> = got.iter().map(|b| b.batch.clone()).collect();
    assert_eq!(
        concat_batches(&rest[0].schema(), &rest).unwrap(),
        all.slice(1234, 3000 - 1234)
    );
}

/// Parquet files the fuzz test (`bench/tests/fuzz.rs`) found to panic
/// inside the parquet crate (a division by zero; a dictionary page
/// missing): each is an error naming the file, not a crash.
#[test]
fn corrupt_parquet_files_found_by_fuzzing_are_errors() {
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    for name in [
        "fuzz-parquet-divide-by-zero.parquet",
        "fuzz-parquet-no-dict-decoder.parquet",
    ] {
        let path = data.join(name);
        let read = roo_ingest::FileSource::open(&path, roo_ingest::FileFormat::Parquet)
            .and_then(|s| s.batches(64))
            .and_then(|batches| batches.collect::<Result<Vec<_>, _>>());
        let e = read.expect_err(name).to_string();
        assert!(e.contains(name) && e.contains("corrupt input"), "{e}");
    }
}
