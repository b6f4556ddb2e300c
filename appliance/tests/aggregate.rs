//! Windowed aggregates end to end: the batch backfill (`roo score
//! --config`) and the stream (`roo serve` over TCP, the file cut into
//! pieces anywhere) emit identical window rows for the same events; pandas
//! (`groupby` per window) agrees on generated tweets; a real pyarrow
//! client puts tweets over Flight and reads the latest window with DoGet
//! `latest`; bad aggregates are refused at check-config.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use common::{read_ipc_dir, roo, Daemon};
use roo_scheduler::generator::TweetGenerator;

const START: i64 = 1_790_000_000_000_000;

/// Tweets as CSV (tweet_id, ts, hashtag, user_id, likes): 2,000 hashtags,
/// Zipf 1.1 with trends, 400 a second, and one in twenty moved back up to
/// 4 s (some within the 2 s lateness, some beyond it).
fn tweets_csv(rows: usize) -> String {
    let batch = TweetGenerator::new(3, START, 2_500.0, 2_000, 1.1, true).batch(rows);
    let c = |i: usize| batch.column(i).clone();
    let (ids, ts, tags, users, likes) = (c(0), c(1), c(2), c(3), c(4));
    let (ids, ts, users, likes) = (
        ids.as_primitive::<Int64Type>(),
        ts.as_primitive::<Int64Type>(),
        users.as_primitive::<Int64Type>(),
        likes.as_primitive::<Int64Type>(),
    );
    let tags = tags.as_string::<i32>();
    let mut text = String::from("tweet_id,ts,hashtag,user_id,likes\n");
    for r in 0..rows {
        let back = if r % 20 == 7 {
            (r as i64 * 7_919) % 4_000_000
        } else {
            0
        };
        text.push_str(&format!(
            "{},{},{},{},{}\n",
            ids.value(r),
            ts.value(r) - back,
            tags.value(r),
            users.value(r),
            likes.value(r)
        ));
    }
    text
}

const AGGREGATE: &str = r#"
[[pipeline.aggregate]]
name = "top_tags"
key = "hashtag"
agg = "sum"
column = "likes"
window = "60s"
every = "5s"
top = 7
keys_max = 300
"#;

fn config(dir: &Path, name: &str, source: &str, sink: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "[server]\nmetrics = \"127.0.0.1:0\"\n\n[[pipeline]]\nname = \"t\"\nevent_time = \"ts\"\nlateness = \"2s\"\nmax_rows = 257\nlinger_ms = 2\n\n{source}\n{sink}\n{AGGREGATE}"
        ),
    )
    .unwrap();
    path
}

#[test]
fn batch_and_stream_emit_identical_windows() {
    let dir = tempfile::tempdir().unwrap();
    let rows = 30_000;
    let data = dir.path().join("tweets.csv");
    std::fs::write(&data, tweets_csv(rows)).unwrap();
    let batch_config = config(
        dir.path(),
        "batch",
        &format!("[pipeline.source]\nkind = \"file\"\npath = {data:?}\n"),
        "",
    );
    let out = dir.path().join("batch.arrow");
    let (batch, said) = common::score_config(&batch_config, &data, &out);
    assert!(said.contains("[aggregate top_tags]"), "{said}");
    assert!(said.contains("events aggregated into"), "{said}");
    let windows: usize = batch.iter().map(|b| b.num_rows()).sum();
    assert!(windows > 100, "{windows} rows");
    // Some rows past keys_max carry an error bound; all are on the output.
    let bounds = common::columns_as_text(&batch, "error_bound");
    assert!(
        bounds[0].1.iter().any(|b| b != "0"),
        "some panes summarised"
    );
    // "roo: N events were refused; they are in ..."
    let batch_dead: f64 = said
        .split("roo: ")
        .find_map(|l| l.split(" events were refused").next()?.trim().parse().ok())
        .expect("late events refused in the batch run");
    let stream_config = config(
        dir.path(),
        "stream",
        "[pipeline.source]\nkind = \"tcp\"\nlisten = \"127.0.0.1:0\"\nformat = \"csv\"\ncolumns = [\"tweet_id:int64\", \"ts:int64\", \"hashtag:string\", \"user_id:int64\", \"likes:int64\"]\n",
        "[[pipeline.sink]]\nkind = \"files\"\ndir = \"stream\"\nformat = \"arrow\"\n",
    );
    let mut daemon = Daemon::start(&stream_config, Stdio::null());
    let addr = daemon.ready().tcp["t"].clone();
    let text = std::fs::read_to_string(&data).unwrap();
    let mut s = TcpStream::connect(&addr).unwrap();
    for piece in text.as_bytes().chunks(5_555) {
        s.write_all(piece).unwrap();
    }
    drop(s);
    // The same events are late in both: the rest are aggregated.
    let aggregated = daemon.wait_metric("roo_events_aggregated_total", rows as f64 - batch_dead);
    assert_eq!(aggregated, rows as f64 - batch_dead);
    let dead = daemon.wait_metric("roo_events_dead_total", batch_dead);
    assert_eq!(dead, batch_dead);
    assert_eq!(daemon.metric("roo_operator_late_events_total"), dead);
    assert!(daemon.metric("roo_operator_summary_takeovers_total") > 0.0);
    daemon.signal(libc::SIGTERM);
    let (code, lines) = daemon.finish();
    assert_eq!(code, Some(0), "{}", lines.join("\n"));
    let stream = read_ipc_dir(&dir.path().join("stream"));
    let (b, s) = (
        common::columns_as_text(&batch, "window_start"),
        common::columns_as_text(&stream, "window_start"),
    );
    assert_eq!(
        b.len(),
        6,
        "window_start, window_end, rank, hashtag, value, error_bound"
    );
    for ((name, bv), (_, sv)) in b.iter().zip(&s) {
        assert_eq!(bv.len(), sv.len(), "{name}");
        assert!(bv == sv, "{name}: batch and stream differ");
    }
}

#[test]
fn pandas_agrees_on_generated_tweets() {
    let Some(python) = common::python("pandas, pyarrow, numpy") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let said = common::run_python(
        &python,
        "trends_pandas.py",
        &[
            common::roo_path(),
            dir.path().as_os_str(),
            common::example("../trends/tweets.py").as_os_str(),
        ],
    );
    assert!(said.contains("pandas agrees"), "{said}");
}

/// Tweets put over Flight; the top 5 hashtags over 60 s every 10 s.
const LATEST_CONFIG: &str = r#"
[server]
metrics = "127.0.0.1:0"

[flight]
listen = "127.0.0.1:0"

[[pipeline]]
name = "t"
event_time = "ts"
lateness = "2s"

[pipeline.source]
kind = "flight"
columns = ["tweet_id:int64", "ts:int64", "hashtag:string", "user_id:int64", "likes:int64"]

[[pipeline.sink]]
kind = "files"
dir = "windows"
format = "arrow"

[[pipeline.aggregate]]
name = "top_tags"
key = "hashtag"
agg = "count"
window = "60s"
every = "10s"
top = 5
"#;

#[test]
fn a_pyarrow_client_reads_the_latest_window() {
    let Some(python) = common::python("pandas, pyarrow, numpy") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("roo.toml");
    std::fs::write(&path, LATEST_CONFIG).unwrap();
    let mut daemon = Daemon::start(&path, Stdio::null());
    let flight = daemon.ready().flight.unwrap();
    let said = common::run_python(
        &python,
        "trends_latest.py",
        &[
            format!("grpc://{flight}").as_ref(),
            common::example("../trends/tweets.py").as_os_str(),
        ],
    );
    assert!(said.contains("latest window agrees"), "{said}");
    daemon.signal(libc::SIGTERM);
    let (code, lines) = daemon.finish();
    assert_eq!(code, Some(0), "{}", lines.join("\n"));
}

#[test]
fn bad_aggregates_are_refused_at_check_config() {
    let base = |aggregate: &str| {
        format!(
            "[[pipeline]]\nname = \"t\"\nevent_time = \"ts\"\n\n[pipeline.source]\nkind = \"generator\"\nstream = \"tweets\"\n\n[[pipeline.sink]]\nkind = \"stdout\"\n\n{aggregate}"
        )
    };
    let agg =
        |body: &str| format!("[[pipeline.aggregate]]\nname = \"a\"\nkey = \"hashtag\"\n{body}");
    for (body, expected) in [
        (
            agg("agg = \"count\"\nwindow = \"5m\"\nevery = \"7s\""),
            "every (7000000 µs) does not divide window (300000000 µs)",
        ),
        (
            agg("agg = \"count\"\nwindow = \"5m\"\nevery = \"0s\""),
            "every is zero or negative",
        ),
        (
            agg("agg = \"sum\"\nwindow = \"5m\"\nevery = \"10s\""),
            "agg sum needs a column",
        ),
        (
            agg("agg = \"median\"\nwindow = \"5m\"\nevery = \"10s\""),
            "agg \"median\": expected count, sum, mean or max",
        ),
        (
            agg("agg = \"count\"\nwindow = \"5m\"\nevery = \"10s\"\ntop = 20000"),
            "top",
        ),
        (
            "[[pipeline.aggregate]]\nname = \"a\"\nkey = \"tag\"\nagg = \"count\"\nwindow = \"5m\"\nevery = \"10s\"\n".to_string(),
            "no column \"tag\" in the input (columns: tweet_id, ts, hashtag, user_id, likes)",
        ),
        (
            format!(
                "{}\n{}",
                agg("agg = \"count\"\nwindow = \"5m\"\nevery = \"10s\""),
                agg("agg = \"count\"\nwindow = \"5m\"\nevery = \"10s\"")
            ),
            "a pipeline has one at most",
        ),
    ] {
        let said = common::check_config_refused(&base(&body));
        assert!(said.contains(expected), "expected {expected:?} in: {said}");
    }
    // Without event_time the windows have nothing to measure.
    let said = common::check_config_refused(
        &base(&agg("agg = \"count\"\nwindow = \"5m\"\nevery = \"10s\""))
            .replace("event_time = \"ts\"\n", ""),
    );
    assert!(said.contains("has no event_time"), "{said}");
    // The example's own config is accepted.
    let out = roo()
        .args([
            "check-config",
            "--config",
            common::example("../trends/roo.toml").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
