//! Online decisions against the real daemon with the real `tritonclient`
//! (HTTP and gRPC): scores equal `roo score` on the same rows, metadata,
//! V2 errors, concurrent clients, the `requests_max` bound with memory
//! flat, and a request's features seen by a later streamed event.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::process::Stdio;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use common::{example, python, read_ipc_dir, rss_kib, run_python, score_sample, Daemon};

/// A config beside the example's model: the `cards` pipeline fed by
/// requests alone (the model's features), with `online` settings.
fn cards_config(dir: &Path, online: &str) -> std::path::PathBuf {
    std::fs::copy(example("model.json"), dir.join("model.json")).unwrap();
    let config = dir.join("roo.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[server]
metrics = "127.0.0.1:0"

[flight]
listen = "127.0.0.1:0"

[online]
http = "127.0.0.1:0"
grpc = "127.0.0.1:0"
{online}

[[pipeline]]
name = "cards"
model = "model.json"

[pipeline.source]
kind = "requests"

[[pipeline.sink]]
kind = "files"
dir = "out/cards"
format = "arrow"
rotate_secs = 1
"#
        ),
    )
    .unwrap();
    config
}

#[test]
fn tritonclient_scores_as_roo_score_does_over_rest_and_grpc() {
    let Some(python) = python("tritonclient.http, tritonclient.grpc, pyarrow, numpy") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let expected = dir.path().join("expected.arrow");
    let scores = score_sample("cpu", &expected);
    let config = cards_config(dir.path(), "linger_us = 200");
    let mut daemon = Daemon::start(&config, Stdio::null());
    let ready = daemon.ready();
    let http = ready.online_http.clone().expect("a REST endpoint");
    let grpc = ready.online_grpc.clone().expect("a gRPC endpoint");
    let flight = ready.flight.clone().expect("a Flight endpoint");
    let said = run_python(
        &python,
        "online_triton.py",
        &[
            "check".as_ref(),
            http.as_ref(),
            grpc.as_ref(),
            flight.as_ref(),
            expected.as_os_str(),
            example("transactions.csv").as_os_str(),
        ],
    );
    assert!(said.contains("online checks passed"), "{said}");
    let requests = daemon.metric("roo_online_requests_total");
    let batches = daemon.metric("roo_online_batches_total");
    assert!(requests > 0.0 && batches > 0.0);
    // 64 clients at once: some requests shared a batch.
    assert!(
        batches < requests,
        "{batches} batches for {requests} requests: none coalesced"
    );
    daemon.signal(libc::SIGTERM);
    let (status, lines) = daemon.finish();
    assert_eq!(status, Some(0), "{}", lines.join("\n"));
    // Every scored request is on record in the sink, with the same scores.
    let out = read_ipc_dir(&dir.path().join("out/cards"));
    let rows: usize = out.iter().map(|b| b.num_rows()).sum();
    let scored: usize = said
        .split("online checks passed: ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {said}"));
    assert!(scored > 2 * scores.len(), "{said}");
    assert_eq!(rows, scored, "the sink holds every scored request's rows");
}

#[test]
fn past_requests_max_the_server_says_503_and_memory_stays_flat() {
    let Some(python) = python("tritonclient.http, pyarrow, numpy") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let expected = dir.path().join("expected.arrow");
    score_sample("cpu", &expected);
    // Requests wait up to 50 ms for company, and 8 may wait at once: 64
    // clients keep more than that in flight.
    let config = cards_config(dir.path(), "linger_us = 50000\nrequests_max = 8");
    let mut daemon = Daemon::start(&config, Stdio::null());
    let http = daemon.ready().online_http.expect("a REST endpoint");
    let flood = |seconds: &str| -> serde_json::Value {
        let said = run_python(
            &python,
            "online_triton.py",
            &[
                "flood".as_ref(),
                http.as_ref(),
                expected.as_os_str(),
                example("transactions.csv").as_os_str(),
                seconds.as_ref(),
            ],
        );
        serde_json::from_str(said.lines().last().unwrap()).unwrap()
    };
    // A first flood warms every buffer; a second, three times longer, must
    // not grow the daemon's memory.
    flood("2");
    let before = rss_kib(daemon.child.id());
    let counts = flood("6");
    let after = rss_kib(daemon.child.id());
    let (ok, busy) = (
        counts["ok"].as_u64().unwrap(),
        counts["busy"].as_u64().unwrap(),
    );
    assert!(ok > 0 && busy > 0, "{counts}");
    assert!(
        after < before + 32 * 1024,
        "RSS grew from {before} KiB to {after} KiB under an overload"
    );
    assert!(daemon.metric("roo_online_busy_total") >= busy as f64);
    daemon.signal(libc::SIGTERM);
    let (status, lines) = daemon.finish();
    assert_eq!(status, Some(0), "{}", lines.join("\n"));
}

#[test]
fn a_requests_features_update_the_state_a_later_streamed_event_sees() {
    let Some(python) = python("tritonclient.http, numpy") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("roo.toml");
    std::fs::write(
        &config,
        r#"
[server]
metrics = "127.0.0.1:0"

[online]
http = "127.0.0.1:0"

[[pipeline]]
name = "counts"
event_time = "ts"
linger_ms = 1

[pipeline.source]
kind = "tcp"
listen = "127.0.0.1:0"
format = "csv"
columns = ["card_id:int64", "ts:int64", "amount"]

[[pipeline.feature]]
name = "card_count_1h"
key = "card_id"
agg = "count"
window = "1h"

[[pipeline.sink]]
kind = "files"
dir = "out"
format = "arrow"
rotate_secs = 1
"#,
    )
    .unwrap();
    let mut daemon = Daemon::start(&config, Stdio::null());
    let ready = daemon.ready();
    let http = ready.online_http.clone().unwrap();
    let ask = |ts: i64| -> i64 {
        let said = run_python(
            &python,
            "online_triton.py",
            &[
                "ask".as_ref(),
                http.as_ref(),
                "7".as_ref(),
                ts.to_string().as_ref(),
            ],
        );
        said.lines().last().unwrap().trim().parse().unwrap()
    };
    let t0 = 1_700_000_000_000_000i64;
    // The card's first event comes as a request: nothing before it.
    assert_eq!(ask(t0), 0);
    // Then one streamed over TCP; once it is in the sink, a request sees
    // both events before it.
    let mut tcp = TcpStream::connect(&ready.tcp["counts"]).unwrap();
    write!(tcp, "card_id,ts,amount\n7,{},3.0\n", t0 + 1_000).unwrap();
    drop(tcp);
    daemon.wait_metric("roo_events_out_total", 2.0);
    assert_eq!(ask(t0 + 2_000), 2);
    daemon.signal(libc::SIGTERM);
    let (status, lines) = daemon.finish();
    assert_eq!(status, Some(0), "{}", lines.join("\n"));
    // The sink holds all three events in order, the streamed one having
    // counted the request's.
    let out = read_ipc_dir(&dir.path().join("out"));
    let counts: Vec<i64> = out
        .iter()
        .flat_map(|b| {
            b.column_by_name("card_count_1h")
                .unwrap()
                .as_primitive::<Int64Type>()
                .values()
                .to_vec()
        })
        .collect();
    assert_eq!(counts, [0, 1, 2]);
}

#[test]
fn bad_online_configs_are_refused_naming_what_was_expected() {
    let source = "[[pipeline]]\nname = \"a\"\nmodel = \"model.json\"\n[pipeline.source]\nkind = \"requests\"\n";
    for (online, expected) in [
        (
            "[online]\nhttp = \"nope\"\n",
            "online: http \"nope\": expected host:port",
        ),
        (
            "[online]\nlinger_us = 5\n",
            "online: expected http = \"host:port\" or grpc",
        ),
        (
            "[online]\nhttp = \"127.0.0.1:0\"\nrequests_max = 0\n",
            "0 is out of range; expected 1 to",
        ),
        (
            "[online]\nhttp = \"127.0.0.1:0\"\nbody_bytes_max = 10\n",
            "10 is out of range; expected 1024 to",
        ),
        (
            "[online]\nhttp = \"127.0.0.1:0\"\nlingr_us = 5\n",
            "unknown field `lingr_us`",
        ),
        (
            "",
            "source kind = \"requests\" takes online requests, but there is no [online] section",
        ),
    ] {
        let said = common::check_config_refused(&format!("{online}{source}"));
        assert!(said.contains(expected), "{online:?}: {said}");
    }
}
