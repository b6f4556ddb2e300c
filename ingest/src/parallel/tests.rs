//! A stream parsed in pieces on a pool gives what one thread gives: the
//! same rows in the same order, the same dead letters (offset, line, bytes,
//! reason), byte ranges that tile the stream, no batch over `max_rows`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use super::{PieceBytes, StreamFramer};
use crate::framer::{BatchLimits, BatchSink, Framer, StreamFormat};
use crate::parse::csv::CsvHeader;
use crate::record::{DeadLetter, IngestBatch};

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("a", DataType::Float32, true),
        Field::new("b", DataType::Int64, true),
        Field::new("c", DataType::Utf8, true),
    ]))
}

fn pool(threads: usize) -> super::ParsePool {
    super::ParsePool::new(Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("a pool"),
    ))
}

/// xorshift64*: a fixed stream of choices per seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// CSV with good rows and every kind of awkward one: quoted fields holding
/// delimiters, line ends and doubled quotes; CRLF; blank lines; wrong field
/// counts; values that do not parse; a quote inside an unquoted field; a
/// lone CR; a last record without a line end.
fn csv_text(rng: &mut Rng, rows: usize) -> Vec<u8> {
    let mut s = String::from("a,b,c\n");
    for i in 0..rows {
        let a = format!("{}.{}", rng.below(100_000), rng.below(1000));
        let b = rng.below(1 << 40).to_string();
        let line = match rng.below(40) {
            0 => format!("{a},{b},\"quoted, with a comma\"\n"),
            1 => format!("{a},{b},\"two\nlines and \"\"quotes\"\"\"\n"),
            2 => format!("{a},{b},crlf\r\n"),
            3 => "\n".to_string(),
            4 => format!("{a},{b}\n"),
            5 => format!("{a},not-a-number,x\n"),
            6 => format!("{a},{b},in\"side\n"),
            7 => format!("{a},{b},x,extra\n"),
            8 => format!("{a},{b},lone\r"),
            9 => format!("\"{a}\",{b},\"q\"\n"),
            10 => format!("{a},{b},\"after\"text\n"),
            11 => "\r\n".to_string(),
            _ => format!("{a},{b},row{i}\n"),
        };
        s.push_str(&line);
    }
    if rng.below(2) == 0 {
        s.push_str("1.5,2,no line end");
    }
    s.into_bytes()
}

fn ndjson_text(rng: &mut Rng, rows: usize) -> Vec<u8> {
    let mut s = String::new();
    for i in 0..rows {
        let a = format!("{}.{}", rng.below(100_000), rng.below(1000));
        let line = match rng.below(30) {
            0 => "\n".to_string(),
            1 => "{\"a\": 1.5, \"b\": \"not an int\"}\n".to_string(),
            2 => "[1, 2]\n".to_string(),
            3 => format!("{{\"a\": {a}, \"c\": \"brace }} and \\\" quote\"}}\r\n"),
            4 => "  \t \n".to_string(),
            _ => format!("{{\"a\": {a}, \"b\": {i}, \"c\": \"row {i}\"}}\n"),
        };
        s.push_str(&line);
    }
    s.into_bytes()
}

/// Everything a framer handed on, in order.
#[derive(Default)]
struct Collected {
    batches: Vec<IngestBatch>,
    pieces: super::PieceCounts,
}

impl BatchSink for Collected {
    fn batch(&mut self, batch: IngestBatch) -> bool {
        self.batches.push(batch);
        true
    }
}

impl Collected {
    fn rows(&self) -> RecordBatch {
        let batches: Vec<RecordBatch> = self.batches.iter().map(|b| b.batch.clone()).collect();
        arrow_select::concat::concat_batches(&schema(), &batches).expect("one schema")
    }

    fn dead(&self) -> Vec<DeadLetter> {
        self.batches
            .iter()
            .flat_map(|b| b.dead_letters.clone())
            .collect()
    }

    /// Ranges tile `0..len`, sequence numbers count up, no batch is over
    /// `max_rows` records.
    fn check_shape(&self, len: u64, max_rows: usize) {
        let mut at = 0;
        for (i, b) in self.batches.iter().enumerate() {
            assert_eq!(b.seq, i as u64, "batch numbers");
            assert_eq!(b.offsets.start, at, "batch {i} starts where the last ended");
            assert!(b.offsets.end >= b.offsets.start);
            assert!(
                b.records() <= max_rows,
                "batch {i}: {} records",
                b.records()
            );
            at = b.offsets.end;
        }
        assert_eq!(at, len, "the batches cover the stream");
    }
}

fn feed_serial(format: &StreamFormat, data: &[u8], piece: usize, max_rows: usize) -> Collected {
    let limits = BatchLimits {
        max_rows,
        linger: Duration::from_secs(3600),
        record_bytes_max: 1 << 20,
    };
    let mut framer = Framer::new("s".into(), format, Some(schema()), limits).expect("framer");
    let mut out = Collected::default();
    for chunk in data.chunks(piece) {
        framer.push(chunk, &mut out);
    }
    framer.finish(true, &mut out);
    out
}

fn feed_parallel(
    format: &StreamFormat,
    data: &[u8],
    piece: usize,
    max_rows: usize,
    sizes: PieceBytes,
    pool: &super::ParsePool,
) -> Collected {
    let limits = BatchLimits {
        max_rows,
        linger: Duration::from_secs(3600),
        record_bytes_max: 1 << 20,
    };
    let mut framer = StreamFramer::with_sizes(
        "s".into(),
        format,
        Some(schema()),
        limits,
        Some(pool),
        sizes,
    )
    .expect("framer");
    assert!(framer.is_parallel());
    let mut out = Collected::default();
    for chunk in data.chunks(piece) {
        framer.push(chunk, &mut out);
    }
    framer.finish(true, &mut out);
    out.pieces = framer.pieces();
    out
}

fn same(serial: &Collected, parallel: &Collected, len: u64, max_rows: usize, what: &str) {
    serial.check_shape(len, max_rows);
    parallel.check_shape(len, max_rows);
    assert_eq!(serial.rows(), parallel.rows(), "{what}: rows");
    assert_eq!(serial.dead(), parallel.dead(), "{what}: dead letters");
}

#[test]
fn csv_in_pieces_equals_one_thread() {
    let pool = pool(3);
    let format = StreamFormat::Csv {
        header: CsvHeader::Check,
        delimiter: b',',
    };
    let (mut spliced, mut reparsed) = (0, 0);
    for seed in 1..=40u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let rows = 300 + rng.below(600) as usize;
        let data = csv_text(&mut rng, rows);
        let max_rows = [1, 7, 64, 1000][rng.below(4) as usize];
        let piece = 1 + rng.below(700) as usize;
        let sizes = PieceBytes {
            first: 1 + rng.below(300) as usize,
            min: 1 + rng.below(2000) as usize,
            max: 4000,
        };
        let serial = feed_serial(&format, &data, piece, max_rows);
        let parallel = feed_parallel(&format, &data, piece, max_rows, sizes, &pool);
        assert!(
            !serial.dead().is_empty(),
            "seed {seed}: the input has bad rows"
        );
        assert!(
            parallel.pieces.spliced > 0,
            "seed {seed}: {:?}",
            parallel.pieces
        );
        spliced += parallel.pieces.spliced;
        reparsed += parallel.pieces.reparsed;
        same(
            &serial,
            &parallel,
            data.len() as u64,
            max_rows,
            &format!("seed {seed}, pieces {piece}, {sizes:?}, max_rows {max_rows}"),
        );
    }
    // Stray quotes and lone CRs put the cut and the parser at odds now
    // and then: those pieces are parsed again, and most stand.
    assert!(
        spliced > 3 * reparsed,
        "spliced {spliced}, reparsed {reparsed}"
    );
}

#[test]
fn ndjson_in_pieces_equals_one_thread() {
    let pool = pool(2);
    for seed in 1..=30u64 {
        let mut rng = Rng(seed.wrapping_mul(0xD1B5_4A32_D192_ED03));
        let rows = 200 + rng.below(500) as usize;
        let data = ndjson_text(&mut rng, rows);
        let max_rows = [1, 5, 100, 4096][rng.below(4) as usize];
        let piece = 1 + rng.below(900) as usize;
        let sizes = PieceBytes {
            first: 1 + rng.below(500) as usize,
            min: 1 + rng.below(3000) as usize,
            max: 6000,
        };
        let serial = feed_serial(&StreamFormat::Ndjson, &data, piece, max_rows);
        let parallel = feed_parallel(&StreamFormat::Ndjson, &data, piece, max_rows, sizes, &pool);
        assert!(
            !serial.dead().is_empty(),
            "seed {seed}: the input has bad lines"
        );
        assert!(
            parallel.pieces.spliced > 0,
            "seed {seed}: {:?}",
            parallel.pieces
        );
        assert_eq!(
            parallel.pieces.reparsed, 0,
            "NDJSON cuts agree with the parser"
        );
        same(
            &serial,
            &parallel,
            data.len() as u64,
            max_rows,
            &format!("seed {seed}, pieces {piece}, {sizes:?}, max_rows {max_rows}"),
        );
    }
}

/// Line numbers after a record refused for its length count the lines it
/// held (one thread and many agree, and both name the true line).
#[test]
fn lines_after_an_oversized_record_are_true() {
    let format = StreamFormat::Csv {
        header: CsvHeader::Absent,
        delimiter: b',',
    };
    let mut data = b"1,2,a\n".to_vec();
    data.extend_from_slice(b"1,2,\"");
    data.extend(std::iter::repeat_n(b'x', 300));
    data.extend_from_slice(b"\nstill inside\"\n1,2,b\nbad,2,c\n");
    let limits = BatchLimits {
        max_rows: 100,
        linger: Duration::from_secs(3600),
        record_bytes_max: 64,
    };
    let mut framer = Framer::new("s".into(), &format, Some(schema()), limits).expect("framer");
    let mut out = Collected::default();
    for chunk in data.chunks(16) {
        framer.push(chunk, &mut out);
    }
    framer.finish(true, &mut out);
    let dead = out.dead();
    let bad = dead
        .iter()
        .find(|d| d.raw.starts_with(b"bad"))
        .expect("the bad number is a dead letter");
    // The oversized fragment is refused and the stream resumes after the
    // next line end (inside the quoted field, so "still inside" is read
    // as a record of its own, on line 3): "bad,2,c" is on line 5.
    assert_eq!(bad.line, Some(5), "{dead:#?}");
    let inside = dead
        .iter()
        .find(|d| d.raw.starts_with(b"still"))
        .expect("the rest of the refused line is a record of its own");
    assert_eq!(inside.line, Some(3), "{dead:#?}");
}

/// Streams sharing a source's bound on bytes out with the pool: past it a
/// stream parses on its own thread, gives the same rows, and every byte
/// taken is given back (also by a stream dropped with pieces out).
#[test]
fn the_bound_on_bytes_out_is_shared_and_given_back() {
    let mut shared = pool(2);
    shared.max_bytes = 3000;
    let format = StreamFormat::Csv {
        header: CsvHeader::Check,
        delimiter: b',',
    };
    let sizes = PieceBytes {
        first: 100,
        min: 1000,
        max: 1000,
    };
    let mut rng = Rng(7);
    let data = csv_text(&mut rng, 2000);
    let serial = feed_serial(&format, &data, 4096, 64);
    let parallel = feed_parallel(&format, &data, 4096, 64, sizes, &shared);
    same(&serial, &parallel, data.len() as u64, 64, "a tight bound");
    assert!(parallel.pieces.inline > 0, "{:?}", parallel.pieces);
    assert!(parallel.pieces.spliced > 0, "{:?}", parallel.pieces);
    assert_eq!(shared.bytes_out(), 0);
    // Dropped mid-stream with pieces out: their bytes come back.
    let limits = BatchLimits {
        max_rows: 64,
        linger: Duration::from_secs(3600),
        record_bytes_max: 1 << 20,
    };
    let mut framer = StreamFramer::with_sizes(
        "s".into(),
        &format,
        Some(schema()),
        limits,
        Some(&shared),
        sizes,
    )
    .expect("framer");
    let mut out = Collected::default();
    framer.push(&data[..data.len() / 2], &mut out);
    drop(framer);
    assert_eq!(shared.bytes_out(), 0);
}

/// A stream slower than `linger` is handed on at `linger` from the reader's
/// thread, without waiting for a whole piece.
#[test]
fn a_slow_stream_is_handed_on_at_linger() {
    let pool = pool(2);
    let format = StreamFormat::Csv {
        header: CsvHeader::Absent,
        delimiter: b',',
    };
    let limits = BatchLimits {
        max_rows: 1000,
        linger: Duration::from_millis(1),
        record_bytes_max: 1 << 20,
    };
    let mut framer =
        StreamFramer::new("s".into(), &format, Some(schema()), limits, Some(&pool)).expect("f");
    let mut out = Collected::default();
    framer.push(b"1,2,a\n3,4,b\n5,6,fragm", &mut out);
    let later = Instant::now() + Duration::from_millis(5);
    framer.poll(later, &mut out);
    assert_eq!(out.batches.len(), 1);
    assert_eq!(out.batches[0].batch.num_rows(), 2);
    assert_eq!(out.batches[0].offsets, 0..12);
    framer.push(b"ent\n", &mut out);
    framer.finish(false, &mut out);
    assert_eq!(out.rows().num_rows(), 3);
    out.check_shape(25, 1000);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

    /// Arbitrary bytes drawn mostly from what CSV and NDJSON are made of
    /// (delimiters, quotes, line ends, CRs, digits, braces), cut into
    /// arbitrary read pieces and parse pieces: in pieces equals one thread.
    #[test]
    fn any_bytes_in_pieces_equal_one_thread(
        data in proptest::collection::vec(
            proptest::prop_oneof![
                proptest::prelude::Just(b','),
                proptest::prelude::Just(b'"'),
                proptest::prelude::Just(b'\n'),
                proptest::prelude::Just(b'\r'),
                proptest::prelude::Just(b'{'),
                proptest::prelude::Just(b'}'),
                proptest::prelude::Just(b':'),
                proptest::prelude::Just(b'.'),
                proptest::prelude::Just(b'-'),
                b'0'..=b'9',
                b'a'..=b'c',
            ],
            0..3000,
        ),
        piece in 1usize..300,
        first in 1usize..400,
        min in 1usize..900,
        max_rows in 1usize..50,
        ndjson in proptest::prelude::any::<bool>(),
    ) {
        let pool = pool(2);
        let format = if ndjson {
            StreamFormat::Ndjson
        } else {
            StreamFormat::Csv { header: CsvHeader::Absent, delimiter: b',' }
        };
        let sizes = PieceBytes { first, min, max: min * 3 };
        let serial = feed_serial(&format, &data, piece, max_rows);
        let parallel = feed_parallel(&format, &data, piece, max_rows, sizes, &pool);
        same(&serial, &parallel, data.len() as u64, max_rows, "arbitrary bytes");
    }
}
