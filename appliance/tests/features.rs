//! Per-key features end to end: the batch backfill (`roo score --config`)
//! and the stream (`roo serve` over TCP) compute bit-identical feature
//! columns for the same events; pandas agrees on generated data; bad
//! feature configs are refused naming the pipeline and the feature.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::{read_ipc_dir, Daemon};

/// Raw transactions as CSV: in time order but for some events that come
/// up to 50 s late (within the pipeline's 60 s lateness) and a few that
/// come far too late; some amounts and merchants empty (null).
fn transactions_csv(n: usize) -> String {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut clock: i64 = 1_790_000_000_000_000;
    let mut text = String::from("txn_id,card_id,merchant_id,ts,amount\n");
    for i in 0..n {
        clock += (next() % 20_000_000) as i64;
        let t = match next() % 100 {
            0..=14 => clock - (next() % 50_000_000) as i64,
            15 => clock - 3_600_000_000,
            _ => clock,
        };
        let card = (next() % 1000) * (next() % 1000) / 1000;
        let merchant = if next() % 20 == 0 {
            String::new()
        } else {
            (next() % 50).to_string()
        };
        let amount = if next() % 10 == 0 {
            String::new()
        } else {
            format!("{}.{:02}", next() % 500, next() % 100)
        };
        text.push_str(&format!("{i},{card},{merchant},{t},{amount}\n"));
    }
    text
}

const FEATURES: &str = r#"
[[pipeline.feature]]
name = "n_1h"
key = "card_id"
agg = "count"
window = "1h"

[[pipeline.feature]]
name = "spend_1h"
key = "card_id"
agg = "sum"
column = "amount"
window = "1h"

[[pipeline.feature]]
name = "mean_24h"
key = "card_id"
agg = "mean"
column = "amount"
window = "24h"

[[pipeline.feature]]
name = "std_24h"
key = "card_id"
agg = "std"
column = "amount"
window = "24h"

[[pipeline.feature]]
name = "min_10m"
key = "card_id"
agg = "min"
column = "amount"
window = "10m"

[[pipeline.feature]]
name = "max_10m"
key = "card_id"
agg = "max"
column = "amount"
window = "10m"

[[pipeline.feature]]
name = "last_1h"
key = "card_id"
agg = "last"
column = "amount"
window = "1h"

[[pipeline.feature]]
name = "merchants_24h"
key = "card_id"
agg = "count_distinct"
column = "merchant_id"
window = "24h"

[[pipeline.feature]]
name = "since_last"
key = "card_id"
agg = "time_since_last"

[[pipeline.feature]]
name = "pair_n_1d"
key = ["card_id", "merchant_id"]
agg = "count"
window = "1d"
"#;

fn config(dir: &Path, source: &str, sink: &str) -> PathBuf {
    let path = dir.join(format!(
        "{}.toml",
        if sink.is_empty() { "batch" } else { "stream" }
    ));
    std::fs::write(
        &path,
        format!(
            "[server]\nmetrics = \"127.0.0.1:0\"\n\n[[pipeline]]\nname = \"f\"\nevent_time = \"ts\"\nlateness = \"60s\"\nmax_rows = 333\nlinger_ms = 2\n\n{source}\n{sink}\n{FEATURES}"
        ),
    )
    .unwrap();
    path
}

#[test]
fn batch_and_stream_compute_bit_identical_features() {
    let dir = tempfile::tempdir().unwrap();
    let rows = 20_000;
    let data = dir.path().join("txns.csv");
    std::fs::write(&data, transactions_csv(rows)).unwrap();
    // Batch: the pipeline's chain over the file.
    let batch_config = config(
        dir.path(),
        &format!("[pipeline.source]\nkind = \"file\"\npath = {data:?}\n"),
        "",
    );
    let out = dir.path().join("batch.arrow");
    let (batch, said) = common::score_config(&batch_config, &data, &out);
    assert!(said.contains("[feature features]"), "{said}");
    let batch_rows: usize = batch.iter().map(|b| b.num_rows()).sum();
    let dead = rows - batch_rows;
    assert!(dead > 0 && dead < rows / 50, "{dead} late events refused");
    // Stream: the same rows over TCP, the columns typed as the file's were.
    let schema = batch[0].schema();
    let columns: Vec<String> = schema.fields()[..5]
        .iter()
        .map(|f| {
            let t = match f.data_type() {
                arrow_schema::DataType::Int64 => "int64",
                arrow_schema::DataType::Float64 => "float64",
                other => panic!("{other}"),
            };
            format!("\"{}:{t}\"", f.name())
        })
        .collect();
    let stream_config = config(
        dir.path(),
        &format!(
            "[pipeline.source]\nkind = \"tcp\"\nlisten = \"127.0.0.1:0\"\nformat = \"csv\"\ncolumns = [{}]\n",
            columns.join(", ")
        ),
        "[[pipeline.sink]]\nkind = \"files\"\ndir = \"stream\"\nformat = \"arrow\"\n",
    );
    let mut daemon = Daemon::start(&stream_config, Stdio::null());
    let addr = daemon.ready().tcp["f"].clone();
    let text = std::fs::read_to_string(&data).unwrap();
    let mut s = TcpStream::connect(&addr).unwrap();
    // In pieces that cut records anywhere: the stream's batches differ
    // from the file's; the features must not.
    for piece in text.as_bytes().chunks(7_777) {
        s.write_all(piece).unwrap();
    }
    drop(s);
    daemon.wait_metric("roo_events_out_total", batch_rows as f64);
    assert_eq!(daemon.metric("roo_events_dead_total"), dead as f64);
    assert_eq!(daemon.metric("roo_operator_late_events_total"), dead as f64);
    assert!(daemon.metric("roo_operator_keys") > 100.0);
    daemon.signal(libc::SIGTERM);
    let (code, lines) = daemon.finish();
    assert_eq!(code, Some(0), "{}", lines.join("\n"));
    let stream = read_ipc_dir(&dir.path().join("stream"));
    let (b, s) = (
        common::columns_as_text(&batch, "n_1h"),
        common::columns_as_text(&stream, "n_1h"),
    );
    assert_eq!(b.len(), 10);
    for ((name, bv), (_, sv)) in b.iter().zip(&s) {
        assert_eq!(bv.len(), sv.len(), "{name}");
        assert!(bv == sv, "{name}: batch and stream differ");
    }
}

/// pandas' `groupby(...).rolling(window, closed="neither")` is the same
/// rule on events without ties: the script generates such a stream, runs
/// `roo score --config --no-model` and compares every feature.
#[test]
fn pandas_agrees_on_generated_transactions() {
    let Some(python) = common::python("pandas, pyarrow") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let said = common::run_python(
        &python,
        "features_pandas.py",
        &[common::roo_path(), dir.path().as_os_str()],
    );
    assert!(said.contains("pandas agrees"), "{said}");
}

#[test]
fn bad_features_are_refused_at_check_config() {
    let check = |feature: &str| {
        common::check_config_refused(&format!(
            "[[pipeline]]\nname = \"p\"\nevent_time = \"ts\"\n\n[pipeline.source]\nkind = \"generator\"\nstream = \"transactions\"\nevents = 10\n\n[[pipeline.feature]]\n{feature}\n"
        ))
    };
    let e = check(
        "name = \"x\"\nkey = \"card_id\"\nagg = \"median\"\ncolumn = \"amount\"\nwindow = \"1h\"",
    );
    assert!(
        e.contains("pipeline p: [[pipeline.feature]] \"x\": agg \"median\": expected count, sum"),
        "{e}"
    );
    let e = check(
        "name = \"x\"\nkey = \"card_id\"\nagg = \"sum\"\ncolumn = \"amount\"\nwindow = \"0s\"",
    );
    assert!(
        e.contains("window \"0s\": expected a window longer than 0"),
        "{e}"
    );
    let e = check(
        "name = \"x\"\nkey = \"card_id\"\nagg = \"sum\"\ncolumn = \"amount\"\nwindow = \"1 hour\"",
    );
    assert!(
        e.contains("window \"1 hour\": expected a whole number followed by s, m, h or d"),
        "{e}"
    );
    let e =
        check("name = \"x\"\nkey = \"card_id\"\nagg = \"sum\"\ncolumn = \"nope\"\nwindow = \"1h\"");
    assert!(
        e.contains("pipeline p") && e.contains("feature \"x\": the input has no column \"nope\""),
        "{e}"
    );
    let e = check("name = \"amount\"\nkey = \"card_id\"\nagg = \"count\"\nwindow = \"1h\"");
    assert!(
        e.contains("feature \"amount\": the output column \"amount\" exists already"),
        "{e}"
    );
    let e = check("name = \"x\"\nkey = \"card_id\"\nagg = \"count\"\nwindow = \"1h\"\n\n[[pipeline.feature]]\nname = \"x\"\nkey = \"card_id\"\nagg = \"count\"\nwindow = \"2h\"");
    assert!(e.contains("two features are named \"x\""), "{e}");
    let e = check("name = \"x\"\nkey = \"amount\"\nagg = \"count\"\nwindow = \"1h\"");
    assert!(
        e.contains("key column \"amount\" is Float32; expected an integer, a string or a boolean"),
        "{e}"
    );
    let e = check("name = \"x\"\nkey = \"card_id\"\nagg = \"time_since_last\"\nwindow = \"1h\"");
    assert!(e.contains("time_since_last has no window"), "{e}");
}
