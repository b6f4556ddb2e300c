//! Fuzzing on stable Rust: every parser that reads outside bytes is fed
//! valid inputs mutated at random — bit flips, byte changes, truncations,
//! insertions, deletions, repeats, huge integers written over lengths and
//! counts, splices of two inputs, tokens that trouble text parsers — and
//! must never panic nor ask for an unbounded allocation (any single
//! allocation over 1 GiB aborts this test binary, see `Bounded`): each
//! case ends in rows or a clear error.
//!
//! Targets: the stream framer's CSV, NDJSON, raw f32 and Arrow IPC stream;
//! files read by `FileSource` (CSV with schema inference, NDJSON, Arrow IPC
//! file, Parquet); the model importers (XGBoost JSON and UBJSON, LightGBM
//! text, ONNX protobuf, roo linear JSON), each model that imports then
//! compiled and scored by the CPU scorer and the reference; the TOML
//! config, through `roo check-config` (a process per case: fewer cases);
//! Flight messages, by DoPut and DoExchange to a live `roo serve`
//! (`fuzz_flight/`: a call per case, half the cases; the daemon
//! must stay up and print no panic).
//!
//! A fixed budget: `ROO_FUZZ_CASES` cases per target (default 5,000; the
//! config target a twentieth), from a fixed seed (`ROO_FUZZ_SEED` for
//! others). A panicking input is written to `target/fuzz-failures/` and the
//! test fails naming it. For a long run:
//! `ROO_FUZZ_CASES=200000 cargo test --release -p roo-bench --test fuzz -- --nocapture`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeSet;
use std::io::Write;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{Float32Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use roo_ingest::{
    BatchLimits, CsvHeader, FileFormat, FileSource, Framer, IngestBatch, StreamFormat,
};

mod fuzz_flight;

/// The system allocator, refusing any single allocation over 1 GiB (the
/// process then aborts with "memory allocation of N bytes failed"): a
/// parser that trusts a length in its input fails this test.
struct Bounded;

const ALLOCATION_MAX: usize = 1 << 30;

// SAFETY: forwards to the system allocator; refusing is returning null.
unsafe impl GlobalAlloc for Bounded {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > ALLOCATION_MAX {
            return std::ptr::null_mut();
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > ALLOCATION_MAX {
            return std::ptr::null_mut();
        }
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > ALLOCATION_MAX {
            return std::ptr::null_mut();
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Bounded = Bounded;

/// xorshift64*: fast, deterministic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// Tokens that trouble text parsers.
const TOKENS: &[&[u8]] = &[
    b"\"",
    b",",
    b"\n",
    b"\r",
    b"\r\n",
    b"\"\"",
    b"{",
    b"}",
    b"[",
    b"]",
    b":",
    b"null",
    b"-",
    b"1e400",
    b"-0",
    b"nan",
    b"inf",
    b"1e-50",
    b"99999999999999999999999",
    b"0x1p3",
    b"\\u0000",
    b"\\",
    b"\x00",
    b"\xff\xfe",
    b"tree",
    b"Tree=",
    b"split_feature=",
    b"num_class=",
    b"learner",
    b"base_score",
    b"[[",
    b"=",
    b"#",
];

/// 1 to 4 random mutations of `input` (`others` for splices).
fn mutate(rng: &mut Rng, input: &[u8], others: &[Vec<u8>]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let n = out.len();
        match rng.below(9) {
            0 if n > 0 => {
                let i = rng.below(n);
                out[i] ^= 1 << rng.below(8);
            }
            1 if n > 0 => {
                let i = rng.below(n);
                out[i] = rng.next() as u8;
            }
            2 => out.truncate(rng.below(n + 1)),
            3 => {
                let at = rng.below(n + 1);
                let k = 1 + rng.below(16);
                let bytes: Vec<u8> = (0..k).map(|_| rng.next() as u8).collect();
                out.splice(at..at, bytes);
            }
            4 if n > 0 => {
                let a = rng.below(n);
                let b = (a + 1 + rng.below(64)).min(n);
                out.drain(a..b);
            }
            5 if n > 0 => {
                let a = rng.below(n);
                let b = (a + 1 + rng.below(256)).min(n);
                let piece = out[a..b].to_vec();
                let at = rng.below(out.len() + 1);
                out.splice(at..at, piece);
            }
            6 if n >= 8 => {
                // A huge length or count over whatever was there.
                let huge: [u64; 6] = [
                    u32::MAX as u64,
                    i32::MAX as u64,
                    0x8000_0000,
                    u64::MAX,
                    i64::MAX as u64,
                    0x0100_0000,
                ];
                let v = huge[rng.below(huge.len())];
                let at = rng.below(n - 7);
                let width = if rng.below(2) == 0 { 4 } else { 8 };
                out[at..at + width].copy_from_slice(&v.to_le_bytes()[..width]);
            }
            7 if !others.is_empty() => {
                let other = &others[rng.below(others.len())];
                let cut = rng.below(n + 1);
                let from = rng.below(other.len() + 1);
                out.truncate(cut);
                out.extend_from_slice(&other[from..]);
            }
            _ => {
                let token = TOKENS[rng.below(TOKENS.len())];
                let at = rng.below(n + 1);
                out.splice(at..at, token.iter().copied());
            }
        }
    }
    out
}

/// How a case ended.
enum Outcome {
    /// Rows came out (dead letters may have too).
    Read,
    /// A clear error: its first words, to count distinct errors.
    Refused(String),
}

/// How a target runs one case.
type RunCase = Box<dyn Fn(&[u8]) -> Outcome>;

/// A parser under test: its seeds and how a case runs.
struct Target {
    name: &'static str,
    seeds: Vec<Vec<u8>>,
    run: RunCase,
    cases: usize,
}

/// An error's kind: its text up to the first digit or quote (so that
/// offsets and values do not make every error distinct), at most 60 chars.
fn kind(error: &dyn std::fmt::Display) -> String {
    // Paths (the scratch file's) name no kind either.
    let text = error.to_string();
    let words: Vec<&str> = text
        .split_whitespace()
        .filter(|w| !w.contains('/'))
        .collect();
    words
        .join(" ")
        .chars()
        .take_while(|c| !c.is_ascii_digit() && *c != '"' && *c != '\'')
        .take(60)
        .collect()
}

fn limits() -> BatchLimits {
    BatchLimits {
        max_rows: 64,
        linger: Duration::from_secs(3600),
        record_bytes_max: 4096,
    }
}

fn three_columns() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("a", DataType::Float32, true),
        Field::new("b", DataType::Int64, true),
        Field::new("c", DataType::Utf8, true),
    ]))
}

/// Feeds `bytes` to a framer in up to three pieces cut where the bytes'
/// own hash says, then ends the stream; checks what came out adds up.
fn frame(format: StreamFormat, schema: SchemaRef, bytes: &[u8]) -> Outcome {
    let mut framer = match Framer::new(Arc::from("fuzz"), &format, Some(schema), limits()) {
        Ok(f) => f,
        Err(e) => return Outcome::Refused(kind(&e)),
    };
    let mut batches: Vec<IngestBatch> = Vec::new();
    let mut sink = |b: IngestBatch| {
        batches.push(b);
        true
    };
    let h = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x100_0000_01b3)
    });
    let n = bytes.len();
    let (a, b) = if n == 0 {
        (0, 0)
    } else {
        let a = (h % (n as u64 + 1)) as usize;
        let b = a + ((h >> 32) % ((n - a) as u64 + 1)) as usize;
        (a, b)
    };
    for piece in [&bytes[..a], &bytes[a..b], &bytes[b..]] {
        framer.push(piece, &mut sink);
    }
    framer.finish(true, &mut sink);
    // Consecutive batches tile the stream.
    let mut at = 0;
    for b in &batches {
        assert_eq!(b.offsets.start, at, "batches do not tile the stream");
        at = b.offsets.end;
    }
    if batches.iter().any(|b| b.batch.num_rows() > 0) {
        Outcome::Read
    } else {
        Outcome::Refused(
            batches
                .iter()
                .flat_map(|b| b.dead_letters.first())
                .map(|d| kind(&d.reason))
                .next()
                .unwrap_or_else(|| "nothing".into()),
        )
    }
}

/// Reads `bytes` as a file of `format` with `FileSource`, every batch.
fn read_file(dir: &Path, format: FileFormat, bytes: &[u8]) -> Outcome {
    let path = dir.join(format!("case.{}", format.extension()));
    std::fs::write(&path, bytes).unwrap();
    let source = match FileSource::open(&path, format) {
        Ok(s) => s,
        Err(e) => return Outcome::Refused(kind(&e)),
    };
    let batches = match source.batches(64) {
        Ok(b) => b,
        Err(e) => return Outcome::Refused(kind(&e)),
    };
    let mut rows = 0;
    for b in batches {
        match b {
            Ok(b) => rows += b.batch.num_rows(),
            Err(e) => return Outcome::Refused(kind(&e)),
        }
    }
    if rows > 0 {
        Outcome::Read
    } else {
        Outcome::Refused("no rows".into())
    }
}

/// Imports a model; one that imports is compiled and scored (the
/// importer's promise: a model every scorer runs without more checks).
fn import_model(bytes: &[u8]) -> Outcome {
    let model = match roo_kernels::model_from_bytes(bytes, "fuzz") {
        Ok(m) => m,
        Err(e) => return Outcome::Refused(kind(&e)),
    };
    let rows = 5;
    let features = model.n_features().min(100_000);
    let columns: Vec<Vec<f32>> = (0..features)
        .map(|f| {
            (0..rows)
                .map(|r| match (f + r) % 5 {
                    0 => f32::NAN,
                    1 => 0.0,
                    2 => -1.5,
                    3 => 1e30,
                    _ => r as f32,
                })
                .collect()
        })
        .collect();
    let inputs: Vec<&[f32]> = columns.iter().map(Vec::as_slice).collect();
    let outputs = model.n_outputs();
    let mut a = vec![vec![0f32; rows]; outputs];
    let mut b = vec![vec![0f32; rows]; outputs];
    let mut out_a: Vec<&mut [f32]> = a.iter_mut().map(Vec::as_mut_slice).collect();
    let mut out_b: Vec<&mut [f32]> = b.iter_mut().map(Vec::as_mut_slice).collect();
    roo_kernels::cpu::CpuScorer::new(&model).score(&inputs, &mut out_a);
    roo_kernels::reference::score(&model, &inputs, &mut out_b);
    Outcome::Read
}

fn golden(dir: &Path, extensions: &[&str]) -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension()
                .is_some_and(|e| extensions.contains(&e.to_str().unwrap_or("")))
        })
        .collect();
    files.sort();
    files.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

fn ipc_stream(batch: &RecordBatch) -> Vec<u8> {
    let mut out = Vec::new();
    let mut w = arrow_ipc::writer::StreamWriter::try_new(&mut out, &batch.schema()).unwrap();
    w.write(batch).unwrap();
    w.write(batch).unwrap();
    w.finish().unwrap();
    drop(w);
    out
}

fn ipc_file(batch: &RecordBatch) -> Vec<u8> {
    let mut out = Vec::new();
    let mut w = arrow_ipc::writer::FileWriter::try_new(&mut out, &batch.schema()).unwrap();
    w.write(batch).unwrap();
    w.finish().unwrap();
    drop(w);
    out
}

fn parquet(batch: &RecordBatch) -> Vec<u8> {
    let mut out = Vec::new();
    let props = parquet::file::properties::WriterProperties::builder()
        .set_max_row_group_row_count(Some(2))
        .build();
    let mut w =
        parquet::arrow::ArrowWriter::try_new(&mut out, batch.schema(), Some(props)).unwrap();
    w.write(batch).unwrap();
    w.close().unwrap();
    out
}

fn sample_batch() -> RecordBatch {
    RecordBatch::try_new(
        three_columns(),
        vec![
            Arc::new(Float32Array::from(vec![
                Some(1.5),
                None,
                Some(-2.0),
                Some(3.25),
            ])),
            Arc::new(Int64Array::from(vec![
                Some(1),
                Some(-7),
                None,
                Some(i64::MAX),
            ])),
            Arc::new(StringArray::from(vec![
                Some("x"),
                Some("a,b"),
                None,
                Some("é\"q"),
            ])),
        ],
    )
    .unwrap()
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn roo() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_roo-bench")).with_file_name("roo");
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "-p", "roo-appliance", "--bin", "roo"]);
        if !path.to_string_lossy().contains("/debug/") {
            build.arg("--release");
        }
        assert!(build.status().unwrap().success(), "building roo");
    }
    path
}

fn targets(dir: &Path, cases: usize) -> Vec<Target> {
    let csv_seeds: Vec<Vec<u8>> = vec![
        b"a,b,c\n1.5,2,x\n-3e2,4,\"q,\"\"r\"\"\"\n,,\n".to_vec(),
        b"a,b,c\r\n0.1,9223372036854775807,\"line\nbreak\"\r\n1,2,3\n".to_vec(),
        b"a,b,c\n1,2\n1,2,3,4\nnan,-0,z\n".to_vec(),
    ];
    let ndjson_seeds: Vec<Vec<u8>> = vec![
        br#"{"a": 1.5, "b": 2, "c": "x"}
{"a": null, "b": -3, "c": "q\"r", "d": [1, {"e": 2}]}
{"c": "\u00e9", "a": 1e3}
"#
        .to_vec(),
        b"{\"a\":1,\"b\":2,\"c\":\"z\"}\n{}\n[1,2]\n".to_vec(),
    ];
    let raw_seeds: Vec<Vec<u8>> = vec![[1.5f32, -2.0, f32::NAN, 0.0, 7.0, 8.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect()];
    let batch = sample_batch();
    let floats = Arc::new(Schema::new(vec![
        Field::new("x", DataType::Float32, false),
        Field::new("y", DataType::Float32, false),
    ]));
    let mut models = golden(
        &repo().join("kernels/tests/golden"),
        &["json", "ubj", "txt", "onnx"],
    );
    models.retain(|m| !m.starts_with(b"{\n  \"fixtures\""));
    models.push(std::fs::read(repo().join("examples/fraud/model.json")).unwrap());
    let configs: Vec<Vec<u8>> = ["examples/fraud/roo.toml", "examples/trends/roo.toml"]
        .iter()
        .map(|p| std::fs::read(repo().join(p)).unwrap())
        .collect();
    // The config target runs in a copy of the fraud example (its model,
    // its tables), so that mutations reach past the paths.
    let example = dir.join("example");
    std::fs::create_dir_all(&example).unwrap();
    for e in std::fs::read_dir(repo().join("examples/fraud")).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, example.join(p.file_name().unwrap())).unwrap();
        }
    }
    let roo = roo();
    let flight_roo = roo.clone();
    let (d1, d2, d3, d4) = (
        dir.to_path_buf(),
        dir.to_path_buf(),
        dir.to_path_buf(),
        dir.to_path_buf(),
    );
    let csv_header = StreamFormat::Csv {
        header: CsvHeader::Check,
        delimiter: b',',
    };
    let schema = three_columns();
    let (s1, s2) = (schema.clone(), schema.clone());
    vec![
        Target {
            name: "csv stream",
            seeds: csv_seeds.clone(),
            run: Box::new(move |b| frame(csv_header.clone(), s1.clone(), b)),
            cases,
        },
        Target {
            name: "ndjson stream",
            seeds: ndjson_seeds.clone(),
            run: Box::new(move |b| frame(StreamFormat::Ndjson, s2.clone(), b)),
            cases,
        },
        Target {
            name: "raw f32 stream",
            seeds: raw_seeds,
            run: Box::new(move |b| frame(StreamFormat::RawF32, floats.clone(), b)),
            cases,
        },
        Target {
            name: "arrow ipc stream",
            seeds: vec![ipc_stream(&batch)],
            run: Box::new(move |b| frame(StreamFormat::ArrowIpc, schema.clone(), b)),
            cases,
        },
        Target {
            name: "csv file (inferred)",
            seeds: csv_seeds,
            run: Box::new(move |b| read_file(&d1, FileFormat::Csv, b)),
            cases,
        },
        Target {
            name: "ndjson file (inferred)",
            seeds: ndjson_seeds,
            run: Box::new(move |b| read_file(&d2, FileFormat::Ndjson, b)),
            cases,
        },
        Target {
            name: "arrow ipc file",
            seeds: vec![ipc_file(&batch), ipc_stream(&batch)],
            run: Box::new(move |b| read_file(&d3, FileFormat::ArrowIpc, b)),
            cases,
        },
        Target {
            name: "parquet file",
            seeds: vec![parquet(&batch)],
            run: Box::new(move |b| read_file(&d4, FileFormat::Parquet, b)),
            cases,
        },
        Target {
            name: "model files",
            seeds: models,
            run: Box::new(import_model),
            cases,
        },
        Target {
            name: "toml config (roo check-config)",
            seeds: configs,
            run: Box::new(move |b| {
                let path = example.join("fuzz.toml");
                std::fs::write(&path, b).unwrap();
                let out = Command::new(&roo)
                    .args(["check-config", "--config"])
                    .arg(&path)
                    .output()
                    .unwrap();
                match out.status.code() {
                    Some(0) => Outcome::Read,
                    Some(1) => Outcome::Refused(kind(&String::from_utf8_lossy(&out.stderr))),
                    other => panic!(
                        "roo check-config ended with {other:?} (a panic is 101, a signal none): {}",
                        String::from_utf8_lossy(&out.stderr)
                    ),
                }
            }),
            cases: (cases / 20).max(10),
        },
        fuzz_flight::target(&flight_roo, dir, (cases / 2).max(10)),
    ]
}

#[test]
fn every_parser_of_outside_bytes_survives_mutated_inputs() {
    let cases: usize = std::env::var("ROO_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let seed: u64 = std::env::var("ROO_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_f022);
    let dir = tempfile::tempdir().unwrap();
    let failures = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("..")
        .join("fuzz-failures");
    // Panics are caught and reported per input; keep their noise short.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut failed = Vec::new();
    let mut total = 0;
    for target in targets(dir.path(), cases) {
        let mut rng =
            Rng(seed ^ target.name.len() as u64 ^ (target.name.as_bytes()[0] as u64) << 32);
        let started = Instant::now();
        let (mut read, mut refused) = (0usize, 0usize);
        let mut kinds = BTreeSet::new();
        let mut panics = 0;
        let mut corpus = target.seeds.clone();
        for case in 0..target.cases {
            // Seeds as they are first, then mutants of the seeds and of
            // inputs that read (so mutations compound).
            let input = if case < target.seeds.len() {
                target.seeds[case].clone()
            } else {
                let base = &corpus[rng.below(corpus.len())];
                mutate(&mut rng, base, &target.seeds)
            };
            match std::panic::catch_unwind(AssertUnwindSafe(|| (target.run)(&input))) {
                Ok(Outcome::Read) => {
                    read += 1;
                    if corpus.len() < 256 && input.len() < 1 << 20 {
                        corpus.push(input);
                    }
                }
                Ok(Outcome::Refused(k)) => {
                    refused += 1;
                    kinds.insert(k);
                }
                Err(panic) => {
                    panics += 1;
                    let what = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    std::fs::create_dir_all(&failures).unwrap();
                    let file = failures.join(format!(
                        "{}-{case}.bin",
                        target.name.replace([' ', '(', ')'], "_")
                    ));
                    std::fs::File::create(&file)
                        .and_then(|mut f| f.write_all(&input))
                        .unwrap();
                    failed.push(format!(
                        "{}: case {case} panicked ({what}); input in {}",
                        target.name,
                        file.display()
                    ));
                    if failed.len() > 20 {
                        break;
                    }
                }
            }
        }
        total += target.cases;
        eprintln!(
            "fuzz: {:<32} {:>7} cases in {:>6.1} s: {read} read, {refused} refused ({} distinct errors), {panics} panics",
            target.name,
            target.cases,
            started.elapsed().as_secs_f64(),
            kinds.len()
        );
    }
    std::panic::set_hook(hook);
    eprintln!("fuzz: {total} cases in all, seed {seed:#x}");
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}
