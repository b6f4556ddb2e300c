//! The audit log lives a month: card transactions whose event times are a
//! month old go through `roo serve` (features, a profile table, the model,
//! a shadow, audit) over TCP; the model file, the profile table and the
//! feature config then change under a reload and a restart; afterwards
//! `roo audit show` returns what the model saw then (the inputs as the
//! sink wrote them, the table's snapshot id, the model version), `roo
//! replay` reproduces every score bit for bit from the audit log's own
//! model store, and counts the candidate's flips as a plain count over the
//! sink's rows does; `roo audit query` and Flight DoGet (a real pyarrow
//! client) read ranges and ids; bad requests get clear errors.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{SystemTime, UNIX_EPOCH};

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type, Int64Type};
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use common::{example, read_ipc_dir, roo, Daemon};
use serde_json::Value;

const DAY_US: i64 = 86_400_000_000;

const FEATURES: &str = r#"
[[pipeline.feature]]
name = "card_txn_count_1h"
key = "card_id"
agg = "count"
window = "1h"

[[pipeline.feature]]
name = "card_spend_1h"
key = "card_id"
agg = "sum"
column = "amount"
window = "WINDOW"

[[pipeline.feature]]
name = "card_amount_mean_24h"
key = "card_id"
agg = "mean"
column = "amount"
window = "24h"

[[pipeline.feature]]
name = "card_amount_std_24h"
key = "card_id"
agg = "std"
column = "amount"
window = "24h"

[[pipeline.feature]]
name = "card_secs_since_last"
key = "card_id"
agg = "time_since_last"

[[pipeline.feature]]
name = "card_merchants_24h"
key = "card_id"
agg = "count_distinct"
column = "merchant_id"
window = "24h"

[[pipeline.feature]]
name = "merchant_txn_count_10m"
key = "merchant_id"
agg = "count"
window = "10m"

[[pipeline.enrich]]
name = "profile"
table = "profiles.csv"
key = "card_id"
valid_from = "valid_from"
columns = ["credit_limit", "account_age_days", "home_country", "prior_chargebacks"]
"#;

/// The daemon's config: features (the spend window as given), the profile
/// table, model.json deciding, candidate.json in its shadow, audit on.
fn config(dir: &Path, window: &str, flight: bool) -> PathBuf {
    let path = dir.join(format!("roo-{window}.toml"));
    let flight = if flight {
        "[flight]\nlisten = \"127.0.0.1:0\"\n\n"
    } else {
        ""
    };
    std::fs::write(
        &path,
        format!(
            "[server]\nmetrics = \"127.0.0.1:0\"\n\n{flight}[[pipeline]]\nname = \"cards\"\nmodel = \"model.json\"\ndevice = \"cpu\"\nevent_time = \"ts\"\nlateness = \"30s\"\nmax_rows = 700\nlinger_ms = 2\n\n\
             [pipeline.source]\nkind = \"tcp\"\nlisten = \"127.0.0.1:0\"\nformat = \"csv\"\ncolumns = [\"txn_id:string\", \"card_id:int64\", \"merchant_id:int64\", \"ts:int64\", \"amount:float32\", \"merchant_category:float32\", \"hour_of_day:float32\", \"is_online:float32\", \"is_international:float32\"]\n\n\
             [[pipeline.shadow]]\nname = \"candidate\"\nmodel = \"candidate.json\"\n\n\
             [pipeline.audit]\ndir = \"audit\"\nid = \"txn_id\"\nretain_days = 400\nmax_gb = 1\nsegment_secs = 1\n\n\
             [[pipeline.sink]]\nkind = \"files\"\ndir = \"out\"\nformat = \"arrow\"\nrotate_secs = 1\n\n{}",
            FEATURES.replace("WINDOW", window)
        ),
    )
    .unwrap();
    path
}

/// `n` transactions from `first` on, `start_us` on, a second or so apart.
fn transactions(first: usize, n: usize, start_us: i64) -> String {
    let mut state = 0x2545_f491_4f6c_dd1du64 ^ first as u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut text = String::from("txn_id,card_id,merchant_id,ts,amount,merchant_category,hour_of_day,is_online,is_international\n");
    let mut t = start_us;
    for i in first..first + n {
        t += 200_000 + (next() % 1_600_000) as i64;
        let card = (next() % 3000) * (next() % 3000) / 3000;
        let amount = 5.0 + (next() % 40_000) as f64 / 100.0;
        text.push_str(&format!(
            "t{i:06},{card},{},{t},{amount:.2},{},{},{},{}\n",
            next() % 800,
            next() % 20,
            (t / 3_600_000_000) % 24,
            u8::from(next() % 10 < 3),
            u8::from(next() % 20 == 0)
        ));
    }
    text
}

fn send(daemon: &mut Daemon, csv: &str) {
    let addr = daemon.ready().tcp["cards"].clone();
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(csv.as_bytes()).unwrap();
}

fn roo_ok(args: &[&std::ffi::OsStr]) -> String {
    let out = roo().args(args).output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "roo {args:?}: {said}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn os(s: &str) -> &std::ffi::OsStr {
    std::ffi::OsStr::new(s)
}

fn show(dir: &Path, id: &str) -> Value {
    let text = roo_ok(&[
        os("audit"),
        os("show"),
        os("--dir"),
        dir.as_os_str(),
        os("--id"),
        os(id),
        os("--json"),
    ]);
    serde_json::from_str(&text).unwrap()
}

fn model_version(path: &Path) -> String {
    let text = roo_ok(&[os("inspect"), os("--model"), path.as_os_str(), os("--json")]);
    let v: Value = serde_json::from_str(&text).unwrap();
    v["version"].as_str().unwrap().to_string()
}

/// Every sink row by txn_id: column → value.
fn sink_rows(batches: &[RecordBatch]) -> HashMap<String, (RecordBatch, usize)> {
    let mut rows = HashMap::new();
    for b in batches {
        let ids = b.column_by_name("txn_id").unwrap().as_string::<i32>();
        for i in 0..b.num_rows() {
            rows.insert(ids.value(i).to_string(), (b.clone(), i));
        }
    }
    rows
}

fn text_at(b: &RecordBatch, column: &str, row: usize) -> String {
    let c = arrow_cast::cast(b.column_by_name(column).unwrap(), &DataType::Utf8).unwrap();
    c.as_string::<i32>().value(row).to_string()
}

fn f32_at(b: &RecordBatch, column: &str, row: usize) -> f32 {
    b.column_by_name(column)
        .unwrap()
        .as_primitive::<Float32Type>()
        .value(row)
}

/// What `roo audit show` says the model read must be what the sink wrote
/// for that row, value for value.
fn assert_inputs_match(shown: &Value, b: &RecordBatch, row: usize) {
    let inputs = shown["inputs"].as_object().unwrap();
    assert_eq!(inputs.len(), 15, "{shown}");
    // The live model's own feature order (the example's train.py order).
    let order: Vec<&str> = shown["feature_order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        &order[..3],
        ["amount", "merchant_category", "hour_of_day"],
        "{shown}"
    );
    assert_eq!(order.len(), 15);
    for (name, v) in inputs {
        let c = b.column_by_name(name).unwrap();
        if c.is_null(row) {
            assert!(v.is_null(), "{name}: {v}");
            continue;
        }
        match c.data_type() {
            DataType::Float32 => {
                let want = c.as_primitive::<Float32Type>().value(row);
                assert_eq!(v.as_f64().unwrap() as f32, want, "{name}");
            }
            DataType::Float64 => {
                let want = c.as_primitive::<Float64Type>().value(row);
                assert_eq!(v.as_f64().unwrap(), want, "{name}");
            }
            DataType::Int64 => {
                let want = c.as_primitive::<Int64Type>().value(row);
                assert_eq!(v.as_i64().unwrap(), want, "{name}");
            }
            other => panic!("{name}: {other}"),
        }
    }
}

#[test]
fn a_month_later_the_audit_log_shows_and_replays_every_decision() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::copy(example("live_model.json"), d.join("model.json")).unwrap();
    std::fs::copy(example("candidate_model.json"), d.join("candidate.json")).unwrap();
    std::fs::copy(example("profiles.csv"), d.join("profiles.csv")).unwrap();
    let first_model = model_version(&d.join("model.json"));
    let second_model = model_version(&example("candidate_model.json"));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    let start = now - 31 * DAY_US;

    // A month ago, part one: the first model, the first profile table.
    let mut daemon = Daemon::start(&config(d, "1h", false), Stdio::null());
    daemon.ready();
    send(&mut daemon, &transactions(0, 5000, start));
    daemon.wait_metric("roo_events_out_total", 5000.0);
    // The model file is replaced and the profile table gets new versions
    // (limits raised for cards 0..500); the daemon reloads both.
    std::fs::copy(example("candidate_model.json"), d.join("model.json")).unwrap();
    let mut profiles = std::fs::read_to_string(d.join("profiles.csv")).unwrap();
    for card in 0..500 {
        profiles.push_str(&format!("{card},{},99999.0,400,PT,0\n", start + DAY_US / 2));
    }
    std::fs::write(d.join("profiles.csv"), profiles).unwrap();
    daemon.signal(libc::SIGHUP);
    daemon.wait_metric("roo_operator_table_loads_total", 2.0);
    // The model, then the shadow, swapped.
    daemon.wait_metric("roo_model_reloads_total", 2.0);
    send(&mut daemon, &transactions(5000, 5000, start + DAY_US));
    daemon.wait_metric("roo_events_out_total", 10_000.0);
    daemon.signal(libc::SIGTERM);
    let (code, said) = daemon.finish();
    assert_eq!(code, Some(0), "{}", said.join("\n"));

    // Part three: the feature config changes (a 2 h spend window) and the
    // daemon restarts on the same audit log, with Flight on.
    let mut daemon = Daemon::start(&config(d, "2h", true), Stdio::null());
    let ready = daemon.ready();
    send(&mut daemon, &transactions(10_000, 2000, start + 2 * DAY_US));
    daemon.wait_metric("roo_events_out_total", 2000.0);
    daemon.wait_metric("roo_operator_audit_records_total", 2000.0);

    // Flight: records by id and by range, from a pyarrow client.
    let flight = common::python("pyarrow").map(|python| {
        let said = common::run_python(
            &python,
            "audit_flight.py",
            &[
                os(&ready.flight.clone().unwrap()),
                os("t000123"),
                os(&start.to_string()),
                os(&(start + DAY_US).to_string()),
            ],
        );
        serde_json::from_str::<Value>(said.lines().next().unwrap()).unwrap()
    });
    daemon.signal(libc::SIGTERM);
    let (code, said) = daemon.finish();
    assert_eq!(code, Some(0), "{}", said.join("\n"));

    let audit = d.join("audit");
    let sink = sink_rows(&read_ipc_dir(&d.join("out")));
    assert_eq!(sink.len(), 12_000);

    // What the model saw a month ago, and what it said.
    let early = show(&audit, "t000123");
    let (b, row) = &sink["t000123"];
    assert_eq!(early["id"], "t000123");
    assert_eq!(early["model_version"], first_model.as_str());
    assert_eq!(early["model_stored"], true);
    assert_eq!(
        early["score"].as_f64().unwrap() as f32,
        f32_at(b, "score", *row)
    );
    assert_eq!(
        early["snapshots"]["profile_version"],
        text_at(b, "profile_version", *row).as_str()
    );
    assert!(
        early["device"].as_str().unwrap().starts_with("cpu "),
        "{early}"
    );
    assert!(early["event_time"].as_str().unwrap().ends_with('Z'));
    assert_inputs_match(&early, b, *row);
    assert_eq!(
        early["shadows"]["candidate"]["model_version"],
        second_model.as_str()
    );
    let later = show(&audit, "t007000");
    let (b2, row2) = &sink["t007000"];
    assert_eq!(later["model_version"], second_model.as_str());
    assert_ne!(
        later["snapshots"]["profile_version"], early["snapshots"]["profile_version"],
        "the table was reloaded between"
    );
    assert_eq!(
        later["snapshots"]["profile_version"],
        text_at(b2, "profile_version", *row2).as_str()
    );
    assert_inputs_match(&later, b2, *row2);
    let last = show(&audit, "t011000");
    assert_ne!(
        last["definitions"], early["definitions"],
        "the features changed"
    );
    assert_eq!(later["definitions"], early["definitions"]);
    assert!(
        last["definitions_text"]
            .as_str()
            .unwrap()
            .contains("7200000000"),
        "{last}"
    );
    if let Some(v) = flight {
        assert_eq!(v["id_rows"], 1, "{v}");
        assert_eq!(
            v["id_score"].as_f64().unwrap() as f32,
            f32_at(b, "score", *row)
        );
        assert_eq!(v["range_rows"], 5000, "{v}");
        assert!(
            v["unknown"].as_str().unwrap().contains("no record has id"),
            "{v}"
        );
    }

    // Replay with the recorded models: every score bit for bit, though
    // model.json now holds another model.
    let report = d.join("replay.md");
    roo_ok(&[
        os("replay"),
        os("--dir"),
        audit.as_os_str(),
        os("--report"),
        report.as_os_str(),
    ]);
    let r: Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("replay.json")).unwrap()).unwrap();
    assert_eq!(
        (r["records"].as_u64(), r["mismatches"].as_u64()),
        (Some(12_000), Some(0)),
        "{r}"
    );
    assert_eq!(r["versions"].as_array().unwrap().len(), 2, "{r}");
    assert!(std::fs::read_to_string(&report)
        .unwrap()
        .contains("| mismatches | 0 |"));

    // The candidate beside the recorded decisions: flips as a plain count
    // over the sink's rows (the shadow scored the same inputs).
    let mut recorded: Vec<f32> = sink.values().map(|(b, r)| f32_at(b, "score", *r)).collect();
    recorded.sort_by(f32::total_cmp);
    let threshold = recorded[recorded.len() * 97 / 100];
    let (mut up, mut down) = (0u64, 0u64);
    for (b, r) in sink.values() {
        let (a, c) = (f32_at(b, "score", *r), f32_at(b, "score_candidate", *r));
        up += u64::from(a < threshold && c >= threshold);
        down += u64::from(a >= threshold && c < threshold);
    }
    assert!(
        up + down > 0,
        "the threshold {threshold} must flip something"
    );
    let report = d.join("flips.md");
    roo_ok(&[
        os("replay"),
        os("--dir"),
        audit.as_os_str(),
        os("--model"),
        d.join("candidate.json").as_os_str(),
        os("--threshold"),
        os(&threshold.to_string()),
        os("--report"),
        report.as_os_str(),
    ]);
    let r: Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("flips.json")).unwrap()).unwrap();
    assert_eq!(
        (r["flips_up"].as_u64(), r["flips_down"].as_u64()),
        (Some(up), Some(down)),
        "{r}"
    );

    // A range as a file: exactly the events of the first day.
    let part = d.join("first-day.arrow");
    roo_ok(&[
        os("audit"),
        os("query"),
        os("--dir"),
        audit.as_os_str(),
        os("--from"),
        os(&start.to_string()),
        os("--to"),
        os(&(start + DAY_US).to_string()),
        os("--output"),
        part.as_os_str(),
    ]);
    let file = std::fs::File::open(&part).unwrap();
    let rows: usize = arrow_ipc::reader::FileReader::try_new(file, None)
        .unwrap()
        .map(|b| b.unwrap().num_rows())
        .sum();
    assert_eq!(rows, 5000);

    // Bad requests: an unknown id, an empty range, not an audit log.
    let out = roo()
        .args(["audit", "show", "--dir"])
        .arg(&audit)
        .args(["--id", "nope"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no record has id \"nope\""));
    let out = roo()
        .args(["replay", "--dir"])
        .arg(&audit)
        .args(["--from", "2001-01-01", "--to", "2001-01-02", "--report"])
        .arg(d.join("none.md"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("no records with event time in [2001-01-01T00:00:00.000000Z"));
    let out = roo()
        .args(["audit", "show", "--dir"])
        .arg(d)
        .args(["--id", "x"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an audit log"));
}

#[test]
fn bad_audit_configs_are_refused() {
    // A flight source without columns: the model's features (txn-less).
    let base = "[flight]\nlisten = \"127.0.0.1:0\"\n\n[[pipeline]]\nname = \"a\"\nmodel = \"model.json\"\n\n[pipeline.source]\nkind = \"flight\"\n\n[pipeline.audit]\ndir = \"audit\"\n";
    let e = common::check_config_refused(&format!("{base}id = \"nope\"\n"));
    assert!(
        e.contains("audit id column \"nope\" is not in the events"),
        "{e}"
    );
    let e = common::check_config_refused(&format!("{base}id = \"amount\"\n"));
    assert!(e.contains("expected a string or integer column"), "{e}");
    let e = common::check_config_refused(&format!("{base}max_gb = 0\n"));
    assert!(e.contains("max_gb"), "{e}");
    let e = common::check_config_refused(&format!("{base}retain_days = 99999\n"));
    assert!(e.contains("retain_days"), "{e}");
    let no_model = "[[pipeline]]\nname = \"a\"\n\n[pipeline.source]\nkind = \"tcp\"\nlisten = \"127.0.0.1:0\"\nformat = \"csv\"\ncolumns = [\"txn_id:string\", \"amount\"]\n\n[pipeline.audit]\ndir = \"audit\"\n";
    let e = common::check_config_refused(no_model);
    assert!(e.contains("audit needs the pipeline's own model"), "{e}");
}
