//! `roo score` and `roo inspect` end to end: the real binary, real files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type};
use arrow_array::{ArrayRef, RecordBatch};
use roo_ingest::{FileFormat, FileSource};
use roo_scheduler::FileSink;

/// Same bound as the library-level golden test (kernels/tests/golden.rs says why).
const TOLERANCE: f64 = 1e-5;

fn golden(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../kernels/tests/golden")
        .join(name)
}

fn roo(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_roo"))
        .args(args)
        .output()
        .expect("run roo")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn read_all(path: &Path) -> Vec<RecordBatch> {
    let format = FileFormat::from_path(path).unwrap();
    FileSource::open(path, format)
        .unwrap()
        .batches(1 << 16)
        .unwrap()
        .map(|b| b.unwrap().batch)
        .collect()
}

/// Rewrites a CSV fixture as Parquet or Arrow IPC, so every input format is exercised.
fn convert(csv: &Path, to: &Path) {
    let source = FileSource::open(csv, FileFormat::Csv).unwrap();
    let mut sink =
        FileSink::create(to, FileFormat::from_path(to).unwrap(), source.schema()).unwrap();
    for batch in source.batches(97).unwrap() {
        sink.write(&batch.unwrap().batch).unwrap();
    }
    sink.finish().unwrap();
}

fn expected_scores(name: &str) -> (Vec<String>, Vec<Vec<f64>>) {
    let text = std::fs::read_to_string(golden(name)).unwrap();
    let mut lines = text.lines();
    let header = lines
        .next()
        .unwrap()
        .split(',')
        .map(str::to_string)
        .collect();
    let rows = lines
        .map(|l| l.split(',').map(|c| c.parse().unwrap()).collect())
        .collect();
    (header, rows)
}

/// Score columns come back as Float32 from Parquet and IPC, and as CSV
/// inference reads them (Float64) from CSV.
fn as_f32(column: &ArrayRef) -> Vec<f32> {
    match column.data_type() {
        arrow_schema::DataType::Float32 => column.as_primitive::<Float32Type>().values().to_vec(),
        _ => column
            .as_primitive::<Float64Type>()
            .values()
            .iter()
            .map(|v| *v as f32)
            .collect(),
    }
}

#[test]
fn roo_score_reproduces_every_fixture_in_every_format() {
    reproduce_every_fixture("cpu");
}

/// The GPU scorer through the binary: every fixture, every format, within
/// the same bound of the libraries' own scores. Runs on lavapipe in CI
/// (`ROO_REQUIRE_GPU=1` there makes a missing adapter a failure).
#[test]
fn roo_score_on_the_gpu_reproduces_every_fixture() {
    let devices = roo(&["devices"]);
    if !devices.status.success() {
        assert!(
            std::env::var_os("ROO_REQUIRE_GPU").is_none(),
            "ROO_REQUIRE_GPU is set, but: {}",
            stderr(&devices)
        );
        eprintln!(
            "SKIPPED: roo score --device gpu was not tested: {}",
            stderr(&devices)
        );
        return;
    }
    println!("{}", String::from_utf8_lossy(&devices.stdout));
    reproduce_every_fixture("gpu");
}

fn reproduce_every_fixture(device: &str) {
    let dir = tempfile::tempdir().unwrap();
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(golden("manifest.json")).unwrap()).unwrap();
    let formats = ["csv", "parquet", "arrow"];
    for (i, fixture) in manifest["fixtures"].as_array().unwrap().iter().enumerate() {
        let name = fixture["name"].as_str().unwrap();
        let data = golden(fixture["data"].as_str().unwrap());
        let (in_ext, out_ext) = (formats[i % 3], formats[(i / 3 + 1) % 3]);
        let input = if in_ext == "csv" {
            data.clone()
        } else {
            let converted = dir.path().join(format!("{name}.in.{in_ext}"));
            convert(&data, &converted);
            converted
        };
        let output = dir.path().join(format!("{name}.out.{out_ext}"));
        let run = roo(&[
            "score",
            "--model",
            golden(fixture["model"].as_str().unwrap()).to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--output",
            output.to_str().unwrap(),
            "--threads",
            "2",
            "--batch-rows",
            "64",
            "--device",
            device,
        ]);
        assert!(run.status.success(), "{name}: {}", stderr(&run));
        let expected_device = if device == "gpu" {
            "scored on the GPU"
        } else {
            "scored on the CPU"
        };
        assert!(stderr(&run).contains(expected_device), "{}", stderr(&run));
        assert!(
            !stderr(&run).contains("retried on the CPU after a GPU error")
                || stderr(&run).contains(" 0 retried"),
            "{}",
            stderr(&run)
        );

        let batches = read_all(&output);
        let (score_names, expected) = expected_scores(fixture["expected"].as_str().unwrap());
        let input_columns = read_all(&data)[0].num_columns();
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        assert_eq!(rows, expected.len(), "{name}: rows out");
        let mut r = 0;
        let mut max_diff = 0f64;
        for batch in &batches {
            assert_eq!(
                batch.num_columns(),
                input_columns + score_names.len(),
                "{name}: columns"
            );
            for (k, score) in score_names.iter().enumerate() {
                let column = batch
                    .column_by_name(score)
                    .unwrap_or_else(|| panic!("{name}: no {score}"));
                for (j, v) in as_f32(column).iter().enumerate() {
                    max_diff = max_diff.max((*v as f64 - expected[r + j][k]).abs());
                }
            }
            r += batch.num_rows();
        }
        println!(
            "roo score --device {device} {name:<24} {in_ext:>7} -> {out_ext:<7} max |roo - library| = {max_diff:.3e}"
        );
        assert!(max_diff <= TOLERANCE, "{name}: max difference {max_diff:e}");
    }
}

#[test]
fn outputs_keep_input_columns_and_name_the_model_version() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("scored.arrow");
    let model = golden("lgb_multiclass.txt");
    let run = roo(&[
        "score",
        "--model",
        model.to_str().unwrap(),
        "--input",
        golden("data_multiclass.csv").to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    let batches = read_all(&output);
    let schema = batches[0].schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(
        names,
        ["id", "x0", "x1", "x2", "x3", "x4", "x5", "x6", "x7", "score_0", "score_1", "score_2"]
    );
    assert_eq!(batches[0].column(0).as_string::<i32>().value(0), "r0");
    let version = roo_kernels::load_model(&model).unwrap().version.to_string();
    assert_eq!(schema.metadata().get("roo.model.version"), Some(&version));
    assert!(
        stderr(&run).contains(&version),
        "the run names the version: {}",
        stderr(&run)
    );
}

/// `roo score --model M --input IN --output OUT EXTRA…`.
fn roo_score(model: &Path, input: &Path, output: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "score",
        "--model",
        model.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    roo(&args)
}

/// Runs `roo score` expecting failure: returns stderr, and checks no output appeared.
fn score_fails(model: &Path, input: &Path, output_name: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join(output_name);
    let run = roo_score(model, input, &output, &[]);
    assert_eq!(
        run.status.code(),
        Some(1),
        "expected exit 1: {}",
        stderr(&run)
    );
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "a failed run left files behind: {left:?}");
    let err = stderr(&run);
    assert!(!err.contains("panicked"), "{err}");
    err
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn bad_inputs_get_clear_errors_and_leave_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let model = golden("lgb_binary.txt");

    let missing = write(
        dir.path(),
        "missing.csv",
        "id,x0,x1,x2,x4,x5,x6,x7\nr0,1,2,3,4,5,6,7\n",
    );
    let err = score_fails(&model, &missing, "o.csv");
    assert!(
        err.contains("does not fit model")
            && err.contains("the model needs feature 'x3' but the input has no such column"),
        "{err}"
    );

    let empty = write(dir.path(), "empty.csv", "");
    let err = score_fails(&model, &empty, "o.csv");
    assert!(
        err.contains("empty.csv: the file is empty; expected a header line"),
        "{err}"
    );

    let empty_arrow = write(dir.path(), "empty.arrow", "");
    let err = score_fails(&model, &empty_arrow, "o.csv");
    assert!(
        err.contains("the file is empty; expected an Arrow IPC file or stream"),
        "{err}"
    );

    let not_parquet = write(dir.path(), "fake.parquet", "this is not parquet");
    let err = score_fails(&model, &not_parquet, "o.csv");
    assert!(
        err.contains("reading") && err.contains("fake.parquet"),
        "{err}"
    );

    let good = golden("data_binary.csv");
    let truncated = write(
        dir.path(),
        "truncated.txt",
        &std::fs::read_to_string(&model).unwrap()[..5000],
    );
    let err = score_fails(&truncated, &good, "o.csv");
    assert!(
        err.contains("reading model")
            && err.contains("truncated.txt")
            && err.contains("no 'end of trees' line"),
        "{err}"
    );

    let no_model = dir.path().join("nope.json");
    let err = score_fails(&no_model, &good, "o.csv");
    assert!(
        err.contains("reading model") && err.contains("No such file"),
        "{err}"
    );

    let err = score_fails(&model, &good, "o.xlsx");
    assert!(
        err.contains(
            "cannot tell the format from the extension; expected .csv, .ndjson, .f32, .parquet or .arrow"
        ),
        "{err}"
    );

    let clash = write(
        dir.path(),
        "clash.csv",
        "x0,x1,x2,x3,x4,x5,x6,x7,score\n1,2,3,4,5,6,7,8,0.5\n",
    );
    let err = score_fails(&model, &clash, "o.csv");
    assert!(
        err.contains("the input already has a column named 'score'"),
        "{err}"
    );
}

/// Scores `input` into `dir/name`; returns the output's scores and stderr.
fn score_ok(
    model: &Path,
    input: &Path,
    dir: &Path,
    name: &str,
    extra: &[&str],
) -> (Vec<f32>, String) {
    let output = dir.join(name);
    let run = roo_score(model, input, &output, extra);
    assert!(run.status.success(), "{}", stderr(&run));
    let batches = read_all(&output);
    let scores = batches
        .iter()
        .flat_map(|b| as_f32(b.column_by_name("score").unwrap()))
        .collect();
    (scores, stderr(&run))
}

#[test]
fn bad_rows_go_to_dead_letters_and_the_rows_around_them_are_scored() {
    let dir = tempfile::tempdir().unwrap();
    let model = golden("lgb_binary.txt");
    let header = "id,x0,x1,x2,x3,x4,x5,x6,x7\n";
    let good = [
        "r0,1,2,3,4,5,6,7,8",
        "r1,0.5,,3,-4,5e-1,6,7,8",
        "r3,1,2,3,4,5,6,7,9",
    ];
    let clean = write(
        dir.path(),
        "clean.csv",
        &format!("{header}{}\n", good.join("\n")),
    );
    let (expected, _) = score_ok(&model, &clean, dir.path(), "clean.parquet", &[]);
    assert_eq!(expected.len(), 3);

    let dirty_text = format!(
        "{header}{}\nr2,1,2,abc,4,5,6,7,8\nr2b,1,2,3\n{}\nr2c,1,2,3,4,5,6,7,8,9\n{}",
        good[0], good[1], good[2]
    );
    let dirty = write(dir.path(), "dirty.csv", &dirty_text);
    let (scores, err) = score_ok(&model, &dirty, dir.path(), "dirty.parquet", &[]);
    assert_eq!(scores, expected, "the good rows score as they do alone");
    assert!(err.contains("3 records could not be read"), "{err}");
    let letters: Vec<serde_json::Value> =
        std::fs::read_to_string(dir.path().join("dirty.parquet.deadletters.ndjson"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    assert_eq!(letters.len(), 3);
    let offset_of = |needle: &str| dirty_text.find(needle).unwrap() as u64;
    assert_eq!(letters[0]["line"], 3);
    assert_eq!(letters[0]["offset"], offset_of("r2,"));
    assert_eq!(letters[0]["raw"], "r2,1,2,abc,4,5,6,7,8");
    assert_eq!(letters[0]["reason"], "column 'x2': \"abc\" is not a number");
    assert!(letters[0]["source"]
        .as_str()
        .unwrap()
        .ends_with("dirty.csv"));
    assert_eq!(letters[1]["line"], 4);
    assert_eq!(letters[1]["reason"], "4 fields; expected 9, one per column");
    assert_eq!(letters[2]["line"], 6);
    assert_eq!(letters[2]["offset"], offset_of("r2c"));
    assert_eq!(
        letters[2]["reason"],
        "more than 9 fields; expected 9, one per column"
    );

    // A chosen dead-letter path; no file at all when every row is good.
    let chosen = dir.path().join("bad.ndjson");
    let (_, err) = score_ok(
        &model,
        &dirty,
        dir.path(),
        "d2.csv",
        &["--dead-letters", chosen.to_str().unwrap()],
    );
    assert!(err.contains(chosen.to_str().unwrap()), "{err}");
    assert_eq!(std::fs::read_to_string(&chosen).unwrap().lines().count(), 3);
    assert!(!dir.path().join("clean.parquet.deadletters.ndjson").exists());
}

#[test]
fn ndjson_and_raw_f32_inputs_score_like_csv_and_io_uring_matches_plain_reads() {
    let dir = tempfile::tempdir().unwrap();
    let model = golden("lgb_binary.txt");
    let csv = golden("data_binary.csv");
    let (expected, err) = score_ok(&model, &csv, dir.path(), "a.parquet", &[]);
    match roo_ingest::io_uring_probe() {
        Ok(()) => assert!(err.contains("io_uring READ_FIXED"), "{err}"),
        Err(why) if std::env::var_os("ROO_REQUIRE_IO_URING").is_some() => {
            panic!("io_uring is required here (ROO_REQUIRE_IO_URING) but unavailable: {why}")
        }
        Err(why) => {
            eprintln!("SKIPPED the io_uring check: io_uring unavailable: {why}");
            assert!(err.contains("plain reads (io_uring setup failed"), "{err}");
        }
    }
    let (plain, err) = score_ok(
        &model,
        &csv,
        dir.path(),
        "b.parquet",
        &["--io-uring", "off"],
    );
    assert!(
        err.contains("plain reads (io_uring is off in the configuration)"),
        "{err}"
    );
    assert_eq!(plain, expected);

    // The same rows as NDJSON (numbers, nulls for empty cells) and as raw f32.
    let text = std::fs::read_to_string(&csv).unwrap();
    let mut lines = text.lines();
    let names: Vec<&str> = lines.next().unwrap().split(',').collect();
    let mut ndjson = String::new();
    let mut raw = Vec::new();
    for line in lines {
        let fields: Vec<&str> = line.split(',').collect();
        let members: Vec<String> = names
            .iter()
            .zip(&fields)
            .map(|(n, f)| match f.parse::<f64>() {
                Ok(_) => format!("\"{n}\": {f}"),
                Err(_) if f.is_empty() => format!("\"{n}\": null"),
                Err(_) => format!("\"{n}\": \"{f}\""),
            })
            .collect();
        ndjson.push_str(&format!("{{{}}}\n", members.join(", ")));
        for (n, f) in names.iter().zip(&fields) {
            if n.starts_with('x') {
                let v: f32 = if f.is_empty() {
                    f32::NAN
                } else {
                    f.parse().unwrap()
                };
                raw.extend_from_slice(&v.to_le_bytes());
            }
        }
    }
    let nd = write(dir.path(), "rows.ndjson", &ndjson);
    let (scores, _) = score_ok(&model, &nd, dir.path(), "c.parquet", &[]);
    assert_eq!(scores, expected);
    let raw_path = dir.path().join("rows.f32");
    std::fs::write(&raw_path, &raw).unwrap();
    let (scores, _) = score_ok(&model, &raw_path, dir.path(), "d.parquet", &[]);
    assert_eq!(scores, expected);
}

#[test]
fn a_header_only_input_gives_a_header_only_output() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(dir.path(), "none.csv", "id,x0,x1,x2,x3,x4,x5,x6,x7\n");
    let output = dir.path().join("out.csv");
    let run = roo(&[
        "score",
        "--model",
        golden("lgb_binary.txt").to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert_eq!(
        std::fs::read_to_string(&output).unwrap(),
        "id,x0,x1,x2,x3,x4,x5,x6,x7,score\n"
    );
    assert!(stderr(&run).contains("scored 0 rows"), "{}", stderr(&run));
}

#[test]
fn positional_models_bind_the_first_columns() {
    // xgb*_regression was trained on a bare numpy array: no feature names.
    let out = roo(&[
        "inspect",
        "--model",
        golden("xgb3_regression.ubj").to_str().unwrap(),
    ]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("features   8 bound by position: f0, f1"),
        "{text}"
    );
    let dir = tempfile::tempdir().unwrap();
    let short = write(dir.path(), "short.csv", "a,b,c\n1,2,3\n");
    let err = score_fails(&golden("xgb3_regression.ubj"), &short, "o.csv");
    assert!(
        err.contains(
            "the model reads its 8 features by position, but the input has only 3 columns"
        ),
        "{err}"
    );
}

#[test]
fn inspect_describes_the_model() {
    let out = roo(&[
        "inspect",
        "--model",
        golden("lgb_categorical.txt").to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("format     LightGBM text"), "{text}");
    assert!(text.contains("objective  binary sigmoid:1"), "{text}");
    assert!(
        text.contains("trees      20 in 1 output group, max depth"),
        "{text}"
    );
    assert!(!text.contains(" 0 categorical splits"), "{text}");
    assert!(text.contains("version    sha256:"), "{text}");

    let out = roo(&[
        "inspect",
        "--json",
        "--model",
        golden("skl_softmax.json").to_str().unwrap(),
    ]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["family"], "linear");
    assert_eq!(doc["objective"], "softmax");
    assert_eq!(
        doc["outputs"],
        serde_json::json!(["score_0", "score_1", "score_2"])
    );
    assert_eq!(doc["features"].as_array().unwrap().len(), 8);
}

#[test]
fn batch_rows_and_threads_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("o.csv");
    let (model, input) = (golden("lgb_binary.txt"), golden("data_binary.csv"));
    for (flag, value, expected) in [
        (
            "--batch-rows",
            "0",
            "--batch-rows 0: expected 1 to 16777216",
        ),
        (
            "--batch-rows",
            "10000000000",
            "--batch-rows 10000000000: expected 1 to 16777216",
        ),
        (
            "--threads",
            "100000",
            "--threads 100000: expected 0 (one per core) to 1024",
        ),
    ] {
        let run = roo_score(&model, &input, &output, &[flag, value]);
        assert_eq!(run.status.code(), Some(1), "{}", stderr(&run));
        assert!(stderr(&run).contains(expected), "{}", stderr(&run));
        assert!(!output.exists());
    }
}
