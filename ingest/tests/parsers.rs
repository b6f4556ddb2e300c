//! The parsers and the micro-batcher, fed through `Framer` in every way a
//! stream can be cut: good records, each kind of malformed record, and
//! arbitrary bytes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type, Int64Type};
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use proptest::prelude::*;
use roo_ingest::{BatchLimits, CsvHeader, Framer, IngestBatch, StreamFormat};

fn schema(cols: &[(&str, DataType)]) -> SchemaRef {
    Arc::new(Schema::new(
        cols.iter()
            .map(|(n, t)| Field::new(*n, t.clone(), true))
            .collect::<Vec<_>>(),
    ))
}

fn limits(max_rows: usize) -> BatchLimits {
    BatchLimits {
        max_rows,
        linger: Duration::from_secs(3600),
        record_bytes_max: 1 << 16,
    }
}

/// Feeds `data` in pieces of `piece` bytes; returns the batches.
fn run(
    format: &StreamFormat,
    schema: Option<SchemaRef>,
    limits: BatchLimits,
    data: &[u8],
    piece: usize,
    end_ends_record: bool,
) -> Vec<IngestBatch> {
    let mut framer = Framer::new(Arc::from("test"), format, schema, limits).unwrap();
    let mut out = Vec::new();
    let mut sink = |b: IngestBatch| {
        out.push(b);
        true
    };
    for chunk in data.chunks(piece.max(1)) {
        framer.push(chunk, &mut sink);
    }
    framer.finish(end_ends_record, &mut sink);
    out
}

/// Batches are numbered 0, 1, 2… and their offsets tile the stream; bytes
/// after the last batch hold no record (blank lines only).
fn check_provenance_of(batches: &[IngestBatch], data: &(impl AsRef<[u8]> + ?Sized)) {
    let data = data.as_ref();
    let total = data.len() as u64;
    let mut at = 0;
    for (i, b) in batches.iter().enumerate() {
        assert_eq!(b.seq, i as u64);
        assert_eq!(b.offsets.start, at, "offsets are contiguous");
        assert!(b.offsets.end >= b.offsets.start);
        at = b.offsets.end;
        for d in &b.dead_letters {
            assert!(
                b.offsets.contains(&d.offset) || d.offset == b.offsets.end,
                "{d}"
            );
        }
    }
    assert!(at <= total);
    assert!(
        data[at as usize..]
            .iter()
            .all(|c| matches!(c, b'\n' | b'\r' | b' ' | b'\t')),
        "every record is covered: {:?} left",
        String::from_utf8_lossy(&data[at as usize..])
    );
}

fn concat(batches: &[IngestBatch]) -> RecordBatch {
    let schema = batches[0].batch.schema();
    arrow_select::concat::concat_batches(&schema, batches.iter().map(|b| &b.batch)).unwrap()
}

fn csv() -> StreamFormat {
    StreamFormat::csv()
}

fn card_schema() -> SchemaRef {
    schema(&[
        ("id", DataType::Utf8),
        ("amount", DataType::Float32),
        ("n", DataType::Int64),
        ("ok", DataType::Boolean),
        ("w", DataType::Float64),
    ])
}

#[test]
fn csv_quoting_line_ends_and_nulls() {
    let data = b"id,amount,n,ok,w\r\n\
\"a,1\",1.5,7,true,0.25\r\n\
\"say \"\"hi\"\"\",-2,,false,\n\
\"two\nlines\",,-9,TRUE,1e300\n\
\n\
plain,NaN,0,false,-0.0";
    for piece in 1..data.len() + 1 {
        let batches = run(&csv(), Some(card_schema()), limits(100), data, piece, true);
        check_provenance_of(&batches, &data);
        let b = concat(&batches);
        assert!(
            batches.iter().all(|b| b.dead_letters.is_empty()),
            "piece {piece}: {:?}",
            batches[0].dead_letters
        );
        assert_eq!(b.num_rows(), 4, "piece {piece}");
        let id = b.column(0).as_string::<i32>();
        assert_eq!(
            (0..4).map(|i| id.value(i)).collect::<Vec<_>>(),
            ["a,1", "say \"hi\"", "two\nlines", "plain"]
        );
        let amount = b.column(1).as_primitive::<Float32Type>();
        assert_eq!(amount.value(0), 1.5);
        assert_eq!(amount.value(1), -2.0);
        assert!(amount.is_null(2), "an empty field is a null");
        assert!(amount.value(3).is_nan());
        let n = b.column(2).as_primitive::<Int64Type>();
        assert!(n.is_null(1));
        assert_eq!(n.value(2), -9);
        assert!(b.column(3).as_boolean().value(2));
        assert_eq!(b.column(4).as_primitive::<Float64Type>().value(2), 1e300);
        assert!(b.column(4).is_null(1));
    }
}

#[test]
fn csv_bad_rows_become_dead_letters_and_good_rows_stay() {
    let bytes: Vec<u8> = [
        b"id,amount,n,ok,w\n\
g1,1,1,true,1\n\
b1,abc,1,true,1\n\
b2,1,1.5,true,1\n\
b3,1,1,maybe,1\n\
b4,1,1\n\
b5,1,1,true,1,extra\n\
b6,\"1\"x,1,true,1\n\
g2,2,2,false,2\n" as &[u8],
        b"\"b7\xff\",1,1,true,1\n",
        b"g3,3,3,true,3\n\
\"b8,1,1,true,1\n",
    ]
    .concat();
    let bytes = &bytes[..];
    for piece in [1, 2, 3, 7, 16, 1000] {
        let batches = run(&csv(), Some(card_schema()), limits(4), bytes, piece, true);
        check_provenance_of(&batches, &bytes);
        let b = concat(&batches);
        let ids = b.column(0).as_string::<i32>();
        assert_eq!(ids.iter().flatten().collect::<Vec<_>>(), ["g1", "g2", "g3"]);
        let dead: Vec<_> = batches
            .iter()
            .flat_map(|b| b.dead_letters.clone())
            .collect();
        let reasons: Vec<(u64, &str)> = dead
            .iter()
            .map(|d| (d.line.unwrap(), d.reason.as_str()))
            .collect();
        assert_eq!(
            reasons,
            [
                (3, "column 'amount': \"abc\" is not a number"),
                (4, "column 'n': \"1.5\" is not an integer"),
                (5, "column 'ok': \"maybe\" is not true or false"),
                (6, "3 fields; expected 5, one per column"),
                (7, "more than 5 fields; expected 5, one per column"),
                (8, "column 'amount': text after the closing quote"),
                (10, "column 'id': \"b7\u{fffd}\" is not valid UTF-8"),
                (12, "a quoted field is never closed"),
            ],
            "piece {piece}"
        );
        assert_eq!(dead[0].raw, b"b1,abc,1,true,1");
        assert_eq!(
            dead[0].offset,
            bytes.windows(3).position(|w| w == b"b1,").unwrap() as u64
        );
        // max_rows counts dead letters too: 11 records in batches of ≤ 4.
        assert!(batches.iter().all(|b| b.records() <= 4));
        assert_eq!(batches.iter().map(IngestBatch::records).sum::<usize>(), 11);
    }
}

#[test]
fn csv_header_is_checked_and_a_wrong_one_ends_the_stream() {
    let s = schema(&[("a", DataType::Float32), ("b", DataType::Float32)]);
    let batches = run(&csv(), Some(s.clone()), limits(10), b"a,b\n1,2\n", 3, false);
    assert_eq!(concat(&batches).num_rows(), 1);

    let data = b"b,a\n1,2\n3,4\n";
    let batches = run(&csv(), Some(s.clone()), limits(10), data, 5, false);
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0].batch.num_rows(), 0);
    assert_eq!(
        batches[0].dead_letters[0].reason,
        "the header names columns [\"b\", \"a\"]; expected [\"a\", \"b\"]"
    );

    let absent = StreamFormat::Csv {
        header: CsvHeader::Absent,
        delimiter: b';',
    };
    let batches = run(&absent, Some(s), limits(10), b"1;2\n3;4", 2, true);
    assert_eq!(concat(&batches).num_rows(), 2);
}

#[test]
fn a_fragment_at_close_and_an_oversized_record_are_dead_letters() {
    let s = schema(&[("a", DataType::Float32)]);
    let batches = run(&csv(), Some(s.clone()), limits(10), b"a\n1\n2\n3", 2, false);
    let dead: Vec<_> = batches.iter().flat_map(|b| &b.dead_letters).collect();
    assert_eq!(concat(&batches).num_rows(), 2);
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].raw, b"3");
    assert!(
        dead[0].reason.contains("ended inside a record"),
        "{}",
        dead[0].reason
    );

    let long = format!("a\n1\n{}\n2\n", "9".repeat(100));
    let small = BatchLimits {
        record_bytes_max: 32,
        ..limits(10)
    };
    for piece in [1, 5, 16, 64, 1000] {
        let batches = run(&csv(), Some(s.clone()), small, long.as_bytes(), piece, true);
        check_provenance_of(&batches, &long);
        let b = concat(&batches);
        let a = b.column(0).as_primitive::<Float32Type>();
        assert_eq!(a.values().to_vec(), [1.0, 2.0], "piece {piece}");
        let dead: Vec<_> = batches.iter().flat_map(|b| &b.dead_letters).collect();
        assert_eq!(dead.len(), 1, "piece {piece}");
        assert!(
            dead[0].reason.contains("longer than 32 bytes"),
            "{}",
            dead[0].reason
        );
    }
}

/// An oversized last record whose dead letter closed a full batch: the rest
/// of it, skipped afterwards, is still acknowledged by a (row-less) batch,
/// so the offsets reach the end of the stream. (Found by the property test.)
#[test]
fn the_skipped_tail_of_an_oversized_last_record_is_acknowledged() {
    let s = schema(&[("a", DataType::Float32)]);
    let small = BatchLimits {
        record_bytes_max: 32,
        ..limits(1)
    };
    let absent = StreamFormat::Csv {
        header: CsvHeader::Absent,
        delimiter: b',',
    };
    let data = format!("1\n{}", "x".repeat(100));
    for piece in [1, 7, 21, 40] {
        for end in [true, false] {
            let batches = run(&absent, Some(s.clone()), small, data.as_bytes(), piece, end);
            check_provenance_of(&batches, &data);
            assert_eq!(batches.last().unwrap().offsets.end, data.len() as u64);
            let dead: Vec<_> = batches.iter().flat_map(|b| &b.dead_letters).collect();
            assert_eq!(dead.len(), 1, "piece {piece}");
            assert_eq!(concat(&batches).num_rows(), 1, "piece {piece}");
        }
    }
}

#[test]
fn ndjson_binds_keys_by_name() {
    let data = br#"{"id": "a", "amount": 1.5, "n": 7, "ok": true, "w": 0.5}
{"w": 2, "amount": -3e2, "skip": {"deep": [1, {"x": "}"}]}, "id": "b\"\u00e9\n", "n": null}

{"id":"c","amount":"4.25","ok":false}
"#;
    for piece in 1..data.len() + 1 {
        let batches = run(
            &StreamFormat::Ndjson,
            Some(card_schema()),
            limits(100),
            data,
            piece,
            false,
        );
        check_provenance_of(&batches, &data);
        assert!(
            batches.iter().all(|b| b.dead_letters.is_empty()),
            "{:?}",
            batches[0].dead_letters
        );
        let b = concat(&batches);
        assert_eq!(b.num_rows(), 3);
        let id = b.column(0).as_string::<i32>();
        assert_eq!(id.value(1), "b\"é\n");
        let amount = b.column(1).as_primitive::<Float32Type>();
        assert_eq!(amount.values().to_vec(), [1.5, -300.0, 4.25]);
        assert!(b.column(2).is_null(1) && b.column(2).is_null(2));
        assert!(b.column(3).is_null(1));
        assert_eq!(b.column(4).as_primitive::<Float64Type>().value(1), 2.0);
        assert!(b.column(4).is_null(2), "a missing key is a null");
    }
}

#[test]
fn ndjson_bad_lines_become_dead_letters() {
    let data = r#"{"id": "g1", "amount": 1}
[1, 2]
{"id": "b", "amount": "x"}
{"id": "b", "amount": {"a": 1}}
{"id": "b", "amount": 1} trailing
{"id": "b", "id": "again"}
{"id": "b
{"id": "g2", "amount": 2}
{"id": "b", "ok": 12}
"#;
    let batches = run(
        &StreamFormat::Ndjson,
        Some(card_schema()),
        limits(100),
        data.as_bytes(),
        7,
        false,
    );
    check_provenance_of(&batches, &data);
    let b = concat(&batches);
    assert_eq!(
        b.column(0)
            .as_string::<i32>()
            .iter()
            .flatten()
            .collect::<Vec<_>>(),
        ["g1", "g2"]
    );
    let reasons: Vec<String> = batches
        .iter()
        .flat_map(|b| &b.dead_letters)
        .map(|d| format!("{}: {}", d.line.unwrap(), d.reason))
        .collect();
    assert_eq!(
        reasons,
        [
            "2: expected '{' (each line must be one JSON object) at byte 1 of the line",
            "3: column 'amount': \"x\" is not a number",
            "4: column 'amount': an object or array; expected a number",
            "5: text after the object at byte 26 of the line",
            "6: key \"id\" appears twice",
            "7: a string is never closed",
            "9: column 'ok': \"12\" is not true or false",
        ]
    );
}

#[test]
fn raw_f32_rows_and_a_short_tail() {
    let s = schema(&[("a", DataType::Float32), ("b", DataType::Float32)]);
    let mut data = Vec::new();
    for v in [1.0f32, 2.0, f32::NAN, -4.0, 5.0, 6.0] {
        data.extend_from_slice(&v.to_le_bytes());
    }
    data.extend_from_slice(&[1, 2, 3]);
    for piece in 1..data.len() + 1 {
        let batches = run(
            &StreamFormat::RawF32,
            Some(s.clone()),
            limits(2),
            &data,
            piece,
            true,
        );
        check_provenance_of(&batches, &data);
        let b = concat(&batches);
        assert_eq!(b.num_rows(), 3);
        let a = b.column(0).as_primitive::<Float32Type>();
        assert!(a.value(1).is_nan());
        assert_eq!(b.column(1).as_primitive::<Float32Type>().value(2), 6.0);
        let dead: Vec<_> = batches.iter().flat_map(|b| &b.dead_letters).collect();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].offset, 24);
        assert_eq!(
            dead[0].reason,
            "a fragment of 3 bytes at the end; a row is 8 bytes (2 float32 columns)"
        );
    }
}

fn ipc_stream(batches: &[RecordBatch]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut w = arrow_ipc::writer::StreamWriter::try_new(&mut out, &batches[0].schema()).unwrap();
    for b in batches {
        w.write(b).unwrap();
    }
    w.finish().unwrap();
    drop(w);
    out
}

fn floats(name: &str, values: &[f32]) -> RecordBatch {
    RecordBatch::try_new(
        schema(&[(name, DataType::Float32)]),
        vec![Arc::new(arrow_array::Float32Array::from(values.to_vec()))],
    )
    .unwrap()
}

#[test]
fn arrow_ipc_streams_coalesce_split_and_check_schemas() {
    let parts: Vec<RecordBatch> = (0..5).map(|i| floats("a", &[i as f32; 3])).collect();
    let data = ipc_stream(&parts);
    let expected = schema(&[("a", DataType::Float32)]);
    for piece in [1, 7, 64, 100_000] {
        let batches = run(
            &StreamFormat::ArrowIpc,
            Some(expected.clone()),
            limits(4),
            &data,
            piece,
            false,
        );
        check_provenance_of(&batches, &data);
        let sizes: Vec<usize> = batches.iter().map(|b| b.batch.num_rows()).collect();
        assert_eq!(sizes, [4, 4, 4, 3], "piece {piece}");
        let all = concat(&batches);
        let a = all.column(0).as_primitive::<Float32Type>();
        assert_eq!(
            a.values().to_vec(),
            (0..15).map(|i| (i / 3) as f32).collect::<Vec<_>>()
        );
    }

    let wrong = ipc_stream(&[floats("b", &[1.0])]);
    let batches = run(
        &StreamFormat::ArrowIpc,
        Some(expected.clone()),
        limits(4),
        &wrong,
        10,
        false,
    );
    let dead: Vec<_> = batches.iter().flat_map(|b| &b.dead_letters).collect();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        dead[0].reason,
        "a batch of 1 rows without column 'a'; it has [\"b\"]"
    );

    let mut corrupt = data.clone();
    corrupt.truncate(40);
    corrupt.extend_from_slice(&[0xff; 64]);
    let batches = run(
        &StreamFormat::ArrowIpc,
        Some(expected.clone()),
        limits(4),
        &corrupt,
        16,
        false,
    );
    let dead: Vec<_> = batches.iter().flat_map(|b| &b.dead_letters).collect();
    assert!(!dead.is_empty());
    assert!(
        dead[0].reason.starts_with("a malformed Arrow IPC stream")
            || dead[0].reason.contains("ended inside"),
        "{}",
        dead[0].reason
    );

    let cut = &data[..data.len() - 20];
    let batches = run(&StreamFormat::ArrowIpc, None, limits(100), cut, 9, false);
    let dead: Vec<_> = batches.iter().flat_map(|b| &b.dead_letters).collect();
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0].reason.contains("ended inside an Arrow IPC message"),
        "{}",
        dead[0].reason
    );
}

#[test]
fn linger_closes_a_batch_whose_oldest_event_waited() {
    let s = schema(&[("a", DataType::Float32)]);
    let l = BatchLimits {
        max_rows: 1000,
        linger: Duration::from_millis(30),
        record_bytes_max: 1024,
    };
    let mut framer = Framer::new(Arc::from("t"), &csv(), Some(s), l).unwrap();
    let mut out = Vec::new();
    let mut sink = |b: IngestBatch| {
        out.push(b);
        true
    };
    framer.push(b"a\n1\n2\n", &mut sink);
    let due = framer
        .poll(Instant::now(), &mut sink)
        .expect("a batch is open");
    assert!(due > Instant::now());
    assert!(framer
        .poll(due + Duration::from_millis(1), &mut sink)
        .is_none());
    framer.push(b"3\n", &mut sink);
    framer.finish(false, &mut sink);
    let rows: Vec<usize> = out.iter().map(|b| b.batch.num_rows()).collect();
    assert_eq!(rows, [2, 1]);
    assert_eq!(out[1].seq, 1);
}

/// Records parsed after a batch filled up partway through one piece are
/// handed on at `linger` too, not held until the next piece (a regression:
/// a connection that went quiet kept them forever). For every format.
#[test]
fn records_after_a_full_batch_in_one_piece_linger_out() {
    let s = schema(&[("a", DataType::Float32)]);
    let l = BatchLimits {
        max_rows: 2,
        linger: Duration::from_millis(5),
        record_bytes_max: 1024,
    };
    let ipc = {
        let batch = RecordBatch::try_new(
            s.clone(),
            vec![Arc::new(arrow_array::Float32Array::from(vec![
                1.0f32, 2.0, 3.0,
            ]))],
        )
        .unwrap();
        let mut w = arrow_ipc::writer::StreamWriter::try_new(Vec::new(), &s).unwrap();
        w.write(&batch).unwrap();
        w.into_inner().unwrap()
    };
    let cases: [(StreamFormat, &[u8]); 3] = [
        (csv(), b"a\n1\n2\n3\n"),
        (
            StreamFormat::Ndjson,
            b"{\"a\": 1}\n{\"a\": 2}\n{\"a\": 3}\n",
        ),
        (StreamFormat::ArrowIpc, &ipc),
    ];
    for (format, data) in cases {
        let mut framer = Framer::new(Arc::from("t"), &format, Some(s.clone()), l).unwrap();
        let mut out = Vec::new();
        let mut sink = |b: IngestBatch| {
            out.push(b);
            true
        };
        framer.push(data, &mut sink);
        let due = framer
            .poll(Instant::now(), &mut sink)
            .expect("the third record is in an open batch");
        framer.poll(due + Duration::from_millis(1), &mut sink);
        let rows: Vec<usize> = out.iter().map(|b| b.batch.num_rows()).collect();
        assert_eq!(rows, [2, 1], "{format:?}");
    }
}

/// Counts what each format calls a record in arbitrary bytes: the
/// property below checks each one ends up in a batch or a dead letter.
fn line_records(data: &[u8], end_ends_record: bool, spaces_are_blank: bool) -> usize {
    let is_blank = |c: &u8| *c == b'\r' || (spaces_are_blank && (*c == b' ' || *c == b'\t'));
    let mut n = 0;
    let mut lines = data.split(|&c| c == b'\n').peekable();
    while let Some(line) = lines.next() {
        let last = lines.peek().is_none();
        let blank = line.iter().all(is_blank) && (line.is_empty() || !last);
        if last && line.is_empty() {
            break;
        }
        if last && !end_ends_record {
            n += 1; // a fragment at close: a dead letter
            break;
        }
        if !blank || (last && !line.iter().all(is_blank)) {
            n += 1;
        }
    }
    n
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn csv_any_bytes_every_record_is_a_row_or_a_dead_letter(
        data in proptest::collection::vec(prop_oneof![Just(b','), Just(b'\n'), Just(b'1'), Just(b'.'), Just(b'x'), Just(b'-'), Just(b'e'), any::<u8>()], 0..400),
        piece in 1usize..50,
        end in any::<bool>(),
        max_rows in 1usize..20,
    ) {
        // No quotes here, so a record is a line; CR is kept out so a line
        // end is only '\n'.
        let data: Vec<u8> = data.into_iter().map(|c| if c == b'"' || c == b'\r' { b'q' } else { c }).collect();
        let s = schema(&[("a", DataType::Float32), ("b", DataType::Utf8)]);
        let f = StreamFormat::Csv { header: CsvHeader::Absent, delimiter: b',' };
        let l = BatchLimits { max_rows, linger: Duration::from_secs(60), record_bytes_max: 64 };
        let batches = run(&f, Some(s), l, &data, piece, end);
        check_provenance_of(&batches, &data);
        let expected_records = if data.split(|&c| c == b'\n').any(|line| line.len() > 64) {
            None // oversized lines are cut differently; checked elsewhere
        } else {
            Some(line_records(&data, end, false))
        };
        let got: usize = batches.iter().map(IngestBatch::records).sum();
        if let Some(e) = expected_records {
            prop_assert_eq!(got, e);
        }
    }

    #[test]
    fn csv_with_quotes_never_panics_and_covers_every_byte(
        data in proptest::collection::vec(prop_oneof![Just(b','), Just(b'\n'), Just(b'"'), Just(b'\r'), Just(b'7'), any::<u8>()], 0..300),
        piece in 1usize..40,
        end in any::<bool>(),
    ) {
        let s = schema(&[("a", DataType::Float32), ("b", DataType::Utf8), ("c", DataType::Int64)]);
        let f = StreamFormat::Csv { header: CsvHeader::Absent, delimiter: b',' };
        let batches = run(&f, Some(s), limits(7), &data, piece, end);
        check_provenance_of(&batches, &data);
    }

    #[test]
    fn ndjson_any_bytes_every_line_is_a_row_or_a_dead_letter(
        data in proptest::collection::vec(prop_oneof![Just(b'{'), Just(b'}'), Just(b'"'), Just(b':'), Just(b','), Just(b'\n'), Just(b'a'), Just(b'1'), Just(b'['), Just(b'\\'), any::<u8>()], 0..300),
        piece in 1usize..40,
        max_rows in 1usize..20,
    ) {
        let data: Vec<u8> = data.into_iter().map(|c| if c == b'\r' || c == b' ' || c == b'\t' { b'z' } else { c }).collect();
        let s = schema(&[("a", DataType::Float32), ("b", DataType::Utf8)]);
        let l = BatchLimits { max_rows, linger: Duration::from_secs(60), record_bytes_max: 1 << 16 };
        let batches = run(&StreamFormat::Ndjson, Some(s), l, &data, piece, true);
        check_provenance_of(&batches, &data);
        let got: usize = batches.iter().map(IngestBatch::records).sum();
        prop_assert_eq!(got, line_records(&data, true, true));
    }

    #[test]
    fn raw_any_bytes_every_row_is_a_row_or_a_dead_letter(
        data in proptest::collection::vec(any::<u8>(), 0..200),
        piece in 1usize..40,
        columns in 1usize..5,
    ) {
        let names: Vec<(String, DataType)> = (0..columns).map(|i| (format!("c{i}"), DataType::Float32)).collect();
        let s = Arc::new(Schema::new(names.iter().map(|(n, t)| Field::new(n, t.clone(), true)).collect::<Vec<_>>()));
        let batches = run(&StreamFormat::RawF32, Some(s), limits(3), &data, piece, true);
        check_provenance_of(&batches, &data);
        let got: usize = batches.iter().map(IngestBatch::records).sum();
        prop_assert_eq!(got, data.len().div_ceil(4 * columns));
    }

    #[test]
    fn ipc_any_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300), piece in 1usize..40) {
        let batches = run(&StreamFormat::ArrowIpc, None, limits(5), &data, piece, false);
        let got: u64 = batches.iter().map(|b| b.offsets.end - b.offsets.start).sum();
        prop_assert!(got <= data.len() as u64);
    }
}

#[test]
fn an_arrow_ipc_message_past_the_bound_ends_the_stream() {
    // A valid schema, then a message that claims almost 4 GiB and keeps coming.
    let mut data = ipc_stream(&[floats("a", &[1.0])]);
    data.truncate(data.len() - 8); // drop the end-of-stream marker
    data.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xf0, 0xff, 0xff, 0xff]);
    let mut framer =
        Framer::new(Arc::from("t"), &StreamFormat::ArrowIpc, None, limits(10)).unwrap();
    let mut out = Vec::new();
    let mut sink = |b: IngestBatch| {
        out.push(b);
        true
    };
    framer.push(&data, &mut sink);
    let filler = vec![0u8; 1 << 20];
    for _ in 0..(roo_ingest::IPC_MESSAGE_BYTES_MAX >> 20) + 2 {
        framer.push(&filler, &mut sink);
        if framer.failed() {
            break;
        }
    }
    assert!(
        framer.failed(),
        "the stream is refused, not buffered without end"
    );
    let dead: Vec<_> = out.iter().flat_map(|b| &b.dead_letters).collect();
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0].reason.contains("a message longer than"),
        "{}",
        dead[0].reason
    );
}
