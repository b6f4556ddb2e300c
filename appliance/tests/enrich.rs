//! Enrichment end to end: the batch backfill (`roo score --config`) and
//! the stream (`roo serve` over TCP) join bit-identically with the table
//! as it was at each event; pandas' `merge_asof` and `merge` agree on
//! generated data; a running daemon reloads a changed table, keeps the old
//! one when the new is broken, reloads on SIGHUP and `reload-table`, and
//! takes upserts over Flight DoPut (a real pyarrow client); bad tables and
//! configs are refused at check-config naming what and where.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::{read_ipc_dir, roo, Daemon};

const START: i64 = 1_790_000_000_000_000;

/// Transactions as CSV, in time order with a few events up to 30 s late.
fn transactions_csv(n: usize) -> String {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut clock = START;
    let mut text = String::from("txn_id,card_id,ts,amount\n");
    for i in 0..n {
        clock += (next() % 20_000_000) as i64;
        let t = if next() % 10 == 0 {
            clock - (next() % 30_000_000) as i64
        } else {
            clock
        };
        // Cards 0..1100: the table holds 0..1000.
        let card = next() % 1100;
        text.push_str(&format!(
            "{i},{card},{t},{}.{:02}\n",
            next() % 500,
            next() % 100
        ));
    }
    text
}

/// A profile table with versions: most cards from before the stream, some
/// first seen mid-stream, a third with a raised limit later, a few with a
/// chargeback recorded.
fn profiles_csv() -> String {
    let mut text = String::from("card_id,valid_from,credit_limit,home_country,prior_chargebacks\n");
    let countries = ["PT", "DE", "US", "BR", "IN"];
    for c in 0..1000i64 {
        let first = if c % 7 == 0 {
            START + c * 200_000_000
        } else {
            START - 86_400_000_000
        };
        let country = countries[(c % 5) as usize];
        text.push_str(&format!("{c},{first},{},{country},0\n", 1000 + c * 10));
        if c % 3 == 0 {
            text.push_str(&format!(
                "{c},{},{},{country},{}\n",
                first + 3_600_000_000 + c * 50_000_000,
                5000 + c * 10,
                (c % 9 == 0) as i32
            ));
        }
    }
    text
}

const ENRICH: &str = r#"
[[pipeline.feature]]
name = "n_1h"
key = "card_id"
agg = "count"
window = "1h"

[[pipeline.enrich]]
name = "profile"
table = "profiles.csv"
key = "card_id"
valid_from = "valid_from"
columns = ["credit_limit", "home_country", "prior_chargebacks"]
"#;

fn config(dir: &Path, name: &str, source: &str, sink: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "[server]\nmetrics = \"127.0.0.1:0\"\n\n[[pipeline]]\nname = \"e\"\nevent_time = \"ts\"\nlateness = \"60s\"\nmax_rows = 333\nlinger_ms = 2\n\n{source}\n{sink}\n{ENRICH}"
        ),
    )
    .unwrap();
    path
}

#[test]
fn batch_and_stream_join_bit_identically_as_of_each_event() {
    let dir = tempfile::tempdir().unwrap();
    let rows = 20_000;
    let data = dir.path().join("txns.csv");
    std::fs::write(&data, transactions_csv(rows)).unwrap();
    std::fs::write(dir.path().join("profiles.csv"), profiles_csv()).unwrap();
    let batch_config = config(
        dir.path(),
        "batch.toml",
        &format!("[pipeline.source]\nkind = \"file\"\npath = {data:?}\n"),
        "",
    );
    let out = dir.path().join("batch.arrow");
    let (batch, said) = common::score_config(&batch_config, &data, &out);
    assert!(
        said.contains("[feature features, enrich profile]"),
        "{said}"
    );
    let batch_rows: usize = batch.iter().map(|b| b.num_rows()).sum();
    assert_eq!(batch_rows, rows, "no event is late past 60 s");
    let joined = common::columns_as_text(&batch, "n_1h");
    let limits = &joined.iter().find(|(n, _)| n == "credit_limit").unwrap().1;
    let missing = limits.iter().filter(|v| *v == "null").count();
    // Cards 1000..1100 and cards seen before their first version.
    assert!(
        missing > rows / 20 && missing < rows / 5,
        "{missing} unjoined"
    );
    let check = roo()
        .args(["check-config", "--config"])
        .arg(&batch_config)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&check.stdout);
    assert!(
        said.contains("table profile sha256:") && said.contains("(1334 rows, 1000 keys)"),
        "{said}"
    );

    let stream_config = config(
        dir.path(),
        "stream.toml",
        "[pipeline.source]\nkind = \"tcp\"\nlisten = \"127.0.0.1:0\"\nformat = \"csv\"\ncolumns = [\"txn_id:int64\", \"card_id:int64\", \"ts:int64\", \"amount:float64\"]\n",
        "[[pipeline.sink]]\nkind = \"files\"\ndir = \"stream\"\nformat = \"arrow\"\n",
    );
    let mut daemon = Daemon::start(&stream_config, Stdio::null());
    let addr = daemon.ready().tcp["e"].clone();
    let text = std::fs::read_to_string(&data).unwrap();
    let mut s = TcpStream::connect(&addr).unwrap();
    for piece in text.as_bytes().chunks(6_661) {
        s.write_all(piece).unwrap();
    }
    drop(s);
    daemon.wait_metric("roo_events_out_total", rows as f64);
    assert_eq!(daemon.metric("roo_operator_table_rows"), 1334.0);
    assert_eq!(
        daemon.metric("roo_operator_events_unmatched_total"),
        missing as f64
    );
    daemon.signal(libc::SIGTERM);
    let (code, lines) = daemon.finish();
    assert_eq!(code, Some(0), "{}", lines.join("\n"));
    let stream = read_ipc_dir(&dir.path().join("stream"));
    let s = common::columns_as_text(&stream, "n_1h");
    assert_eq!(
        joined.len(),
        5,
        "n_1h, three table columns, profile_version"
    );
    for ((name, bv), (_, sv)) in joined.iter().zip(&s) {
        assert_eq!(bv.len(), sv.len(), "{name}");
        assert!(bv == sv, "{name}: batch and stream differ");
    }
}

/// pandas' `merge_asof(by=key, direction="backward")` is the as-of rule,
/// and `merge(how="left")` the plain one: the script generates events and
/// tables (integer and string keys), runs `roo score --config` and
/// compares every row.
#[test]
fn pandas_merge_asof_and_merge_agree() {
    let Some(python) = common::python("pandas, pyarrow") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let said = common::run_python(
        &python,
        "enrich_pandas.py",
        &[common::roo_path(), dir.path().as_os_str()],
    );
    assert_eq!(said.matches("pandas agrees").count(), 3, "{said}");
}

/// A running daemon: the table file changes (reloaded), breaks (the old
/// snapshot stays), is reloaded by the action and by SIGHUP, and takes
/// upserts over DoPut; every row names the snapshot it joined.
#[test]
fn a_running_daemon_reloads_refuses_and_upserts_its_table() {
    let Some(python) = common::python("pyarrow.flight, numpy") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("profiles.csv"), profiles_csv()).unwrap();
    let path = dir.path().join("live.toml");
    std::fs::write(
        &path,
            "[server]\nmetrics = \"127.0.0.1:0\"\n\n[flight]\nlisten = \"127.0.0.1:0\"\n\n[[pipeline]]\nname = \"e\"\nevent_time = \"ts\"\nmax_rows = 1000\nlinger_ms = 2\n\n[pipeline.source]\nkind = \"flight\"\ncolumns = [\"txn_id:int64\", \"card_id:int64\", \"ts:int64\", \"amount:float64\"]\n\n[[pipeline.sink]]\nkind = \"files\"\ndir = \"out\"\nformat = \"arrow\"\nrotate_secs = 1\n\n[[pipeline.enrich]]\nname = \"profile\"\ntable = \"profiles.csv\"\nkey = \"card_id\"\nvalid_from = \"valid_from\"\n",
    )
    .unwrap();
    let mut daemon = Daemon::start(&path, Stdio::null());
    let flight = daemon.ready().flight.unwrap();
    let (address, pid) = (format!("grpc://{flight}"), daemon.child.id().to_string());
    let table = dir.path().join("profiles.csv");
    let said = common::run_python(
        &python,
        "enrich_live.py",
        &[address.as_ref(), pid.as_ref(), table.as_os_str()],
    );
    assert!(said.contains("ok: upserts dropped by SIGHUP"), "{said}");
    assert!(daemon.metric("roo_operator_table_load_failures_total") >= 1.0);
    assert_eq!(daemon.metric("roo_operator_table_upserts_total"), 1.0);
    daemon.signal(libc::SIGTERM);
    let (code, lines) = daemon.finish();
    assert_eq!(code, Some(0), "{}", lines.join("\n"));
    let refused = lines
        .iter()
        .find(|l| l.contains("table profile refused"))
        .expect("the refusal is logged");
    assert!(
        refused.contains("profiles.csv") && refused.contains("both hold key 5"),
        "{refused}"
    );
}

#[test]
fn bad_tables_and_enrichments_are_refused_at_check_config() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("profiles.csv");
    std::fs::write(&table, profiles_csv()).unwrap();
    let check = |enrich: &str| {
        common::check_config_refused(&format!(
            "[[pipeline]]\nname = \"p\"\nevent_time = \"ts\"\n\n[pipeline.source]\nkind = \"generator\"\nstream = \"transactions\"\nevents = 10\n\n[[pipeline.enrich]]\n{enrich}\n"
        ))
    };
    let t = format!("{table:?}");
    let e = check(&format!("name = \"p1\"\ntable = {t}\nkey = \"customer\""));
    assert!(
        e.contains("pipeline p")
            && e.contains(
                "profiles.csv: no column \"customer\" (the key); it has card_id, valid_from"
            ),
        "{e}"
    );
    let e = check(&format!(
        "name = \"p1\"\ntable = {t}\nkey = \"card_id\"\ncolumns = [\"tier\"]"
    ));
    assert!(e.contains("no column \"tier\" (in columns)"), "{e}");
    let e = check(&format!("name = \"p1\"\ntable = {t}\nkey = \"card_id\""));
    assert!(
        e.contains("rows 1 and 2 both hold key 0; expected one row per key"),
        "{e}"
    );
    let e = check(&format!("name = \"p1\"\ntable = {t}\nkey = \"card_id\"\nvalid_from = \"valid_from\"\nmissing = \"drop\""));
    assert!(
        e.contains("missing") && e.contains("null") && e.contains("dead_letter"),
        "{e}"
    );
    let e = check(&format!(
        "name = \"p1\"\ntable = {t}\nkey = \"card_id\"\nvalid_from = \"valid_from\"\ntable_mb = 0"
    ));
    assert!(e.contains("table_mb") && e.contains("expected 1 to"), "{e}");
    let e = check(&format!("name = \"p-1\"\ntable = {t}\nkey = \"card_id\""));
    assert!(
        e.contains("[[pipeline.enrich]] name \"p-1\": expected letters, digits or '_'"),
        "{e}"
    );
    let e = check(&format!("name = \"p1\"\ntable = {t}\nkey = \"card_id\"\nvalid_from = \"valid_from\"\ncolumns = [\"amount\"]"));
    assert!(e.contains("no column \"amount\" (in columns)"), "{e}");
    // A table column clashing with an event column.
    let clash = dir.path().join("clash.csv");
    std::fs::write(&clash, "card_id,amount\n1,2.5\n").unwrap();
    let e = check(&format!(
        "name = \"p1\"\ntable = {clash:?}\nkey = \"card_id\""
    ));
    assert!(
        e.contains("enrich \"p1\": column \"amount\" exists already"),
        "{e}"
    );
    // Keys of different types on the two sides.
    let text = dir.path().join("text.csv");
    std::fs::write(&text, "card_id,tier\nabc,gold\n").unwrap();
    let e = check(&format!(
        "name = \"p1\"\ntable = {text:?}\nkey = \"card_id\""
    ));
    assert!(
        e.contains("the event's key \"card_id\" is Int64, the table's is a string"),
        "{e}"
    );
    // Non-monotone versions, and a missing file.
    let order = dir.path().join("order.csv");
    std::fs::write(&order, "card_id,valid_from,tier\n1,20,a\n2,5,b\n1,10,c\n").unwrap();
    let e = check(&format!(
        "name = \"p1\"\ntable = {order:?}\nkey = \"card_id\"\nvalid_from = \"valid_from\""
    ));
    assert!(
        e.contains("row 3: key 1 has valid_from 10 after 20 (row 1)"),
        "{e}"
    );
    let e = check("name = \"p1\"\ntable = \"/nonexistent/t.parquet\"\nkey = \"card_id\"");
    assert!(e.contains("/nonexistent/t.parquet"), "{e}");
    // valid_from without the pipeline's event_time.
    let e = common::check_config_refused(&format!(
        "[[pipeline]]\nname = \"p\"\n\n[pipeline.source]\nkind = \"generator\"\nstream = \"transactions\"\nevents = 10\n\n[[pipeline.enrich]]\nname = \"p1\"\ntable = {t}\nkey = \"card_id\"\nvalid_from = \"valid_from\"\n"
    ));
    assert!(
        e.contains("valid_from needs the pipeline's event_time column"),
        "{e}"
    );
}
