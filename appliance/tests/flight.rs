//! The Arrow Flight endpoint end to end: a real `roo serve`, the real
//! `pyarrow.flight` client (tests/python/flight_checks.py) and a hostile
//! Rust client sending malformed IPC.
//!
//! The pyarrow tests need a Python with pyarrow and numpy: `ROO_PYTHON`
//! (default `python3`). Without one they say loudly that they skipped;
//! with `ROO_REQUIRE_PYARROW=1` (CI) they fail instead.

mod common;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use arrow_flight::{FlightData, FlightDescriptor};
use common::{example, read_ipc_dir, Daemon};
use futures::StreamExt;

const SECRET: &str = "test-secret-0123456789";

fn python() -> Option<String> {
    common::python("pyarrow.flight, numpy")
}

/// A config with a Flight endpoint on a free port, pipeline "score" fed by
/// DoPut (a CSV sink: DoGet reads it back typed), pipeline "bad" reading a
/// CSV with one malformed row.
fn config(dir: &Path, tls: Option<(&Path, &Path)>) -> PathBuf {
    let header = std::fs::read_to_string(example("transactions.csv"))
        .unwrap()
        .lines()
        .take(3)
        .collect::<Vec<_>>()
        .join("\n");
    let bad_row = header
        .lines()
        .nth(1)
        .unwrap()
        .replacen(",", ",not-a-number-", 2);
    std::fs::write(dir.join("bad.csv"), format!("{header}\n{bad_row}\n")).unwrap();
    let tls = match tls {
        Some((cert, key)) => format!(
            "tls_cert = \"{}\"\ntls_key = \"{}\"\n",
            cert.display(),
            key.display()
        ),
        None => String::new(),
    };
    let text = format!(
        r#"
[server]
metrics = "127.0.0.1:0"

[flight]
listen = "127.0.0.1:0"
model_dir = "models"
idle_secs = 3
memory_mb = 16
streams_max = 8
{tls}
[[flight.token]]
name = "tester"
secret = "{SECRET}"

[[pipeline]]
name = "score"
model = "{model}"
[pipeline.source]
kind = "flight"
[[pipeline.sink]]
kind = "files"
dir = "out"
format = "csv"
rotate_secs = 1

[[pipeline]]
name = "bad"
model = "{model}"
[pipeline.source]
kind = "file"
path = "bad.csv"
[pipeline.dead_letters]
dir = "dead"
"#,
        model = example("model.json").display()
    );
    let path = dir.join("roo.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn run_checks(python: &str, args: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/flight_checks.py");
    let out = Command::new(python)
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}");
    assert!(
        out.status.success(),
        "flight_checks.py {}: {}\n{stdout}\n{}",
        args[0],
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Stops the daemon; the token's secret was never in its metrics or logs.
fn stop(mut daemon: Daemon) {
    let metrics = daemon.ready().metrics.unwrap();
    let (status, body) = common::http_get(&metrics, "/metrics");
    assert_eq!(status, 200);
    assert!(!body.contains(SECRET), "the secret is in /metrics");
    daemon.signal(libc::SIGTERM);
    let (code, lines) = daemon.finish();
    assert_eq!(code, Some(0), "{}", lines.join("\n"));
    assert!(
        !lines.iter().any(|l| l.contains(SECRET)),
        "the secret is in the log"
    );
}

#[test]
fn pyarrow_clients_exchange_put_get_and_manage_models() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(&config(dir.path(), None), Stdio::null());
    let address = format!("grpc://{}", daemon.ready().flight.unwrap());
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let pid = daemon.child.id().to_string();
    run_checks(
        &python,
        &[
            "plain",
            &address,
            SECRET,
            env!("CARGO_BIN_EXE_roo"),
            example("model.json").to_str().unwrap(),
            example("transactions.csv").to_str().unwrap(),
            work.to_str().unwrap(),
            &pid,
        ],
    );
    // The bundled client examples, as a user runs them.
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/python");
    let token = format!("tester:{SECRET}");
    let common = [
        "--address",
        &address,
        "--pipeline",
        "score",
        "--token",
        &token,
    ];
    let scored_csv = work.join("streamed.csv");
    for (script, extra) in [
        ("score_dataframe.py", vec![]),
        (
            "stream_csv.py",
            vec![
                example("transactions.csv").to_str().unwrap().to_string(),
                scored_csv.to_str().unwrap().to_string(),
                "--block-mb".into(),
                "0.05".into(),
            ],
        ),
    ] {
        let out = Command::new(&python)
            .arg(examples.join(script))
            .args(common)
            .args(&extra)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("scored 2000 rows"),
            "{script}: {}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("{script}: {stdout}");
    }
    let streamed = std::fs::read_to_string(&scored_csv).unwrap();
    assert_eq!(streamed.lines().count(), 2001, "a header and every row");
    stop(daemon);
}

#[test]
fn pyarrow_over_tls() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl makes the test certificate");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let mut daemon = Daemon::start(&config(dir.path(), Some((&cert, &key))), Stdio::null());
    let port = daemon
        .ready()
        .flight
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    let address = format!("grpc+tls://localhost:{port}");
    run_checks(&python, &["tls", &address, SECRET, cert.to_str().unwrap()]);
    stop(daemon);
}

/// A client sending garbage where Arrow IPC belongs gets INVALID_ARGUMENT
/// naming the message; its stream ends, the server and the next client
/// carry on.
#[test]
fn malformed_ipc_is_refused_and_the_server_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(&config(dir.path(), None), Stdio::null());
    let address = format!("http://{}", daemon.ready().flight.unwrap());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let channel = tonic::transport::Endpoint::new(address)
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = arrow_flight::FlightClient::new(channel);
        client
            .add_header("authorization", &format!("Bearer {SECRET}"))
            .unwrap();
        let descriptor = FlightDescriptor::new_path(vec!["score".into()]);
        let hostile: Vec<Vec<FlightData>> =
            vec![
                // Not a flatbuffer at all.
                vec![FlightData::new()
                    .with_descriptor(descriptor.clone())
                    .with_data_header(vec![0xffu8; 64])
                    .with_data_body(vec![1u8; 128])],
                // A record batch before any schema.
                {
                    let schema = std::sync::Arc::new(arrow_schema::Schema::new(vec![
                        arrow_schema::Field::new("amount", arrow_schema::DataType::Float32, true),
                    ]));
                    let batch = arrow_array::RecordBatch::try_new(
                        schema.clone(),
                        vec![std::sync::Arc::new(arrow_array::Float32Array::from(vec![
                            1.0f32,
                        ]))],
                    )
                    .unwrap();
                    let mut data =
                        arrow_flight::utils::batches_to_flight_data(&schema, [&batch]).unwrap();
                    data.remove(0); // drop the schema
                    data[0].flight_descriptor = Some(descriptor.clone());
                    data
                },
            ];
        for (i, messages) in hostile.into_iter().enumerate() {
            let input = futures::stream::iter(messages.into_iter().map(Ok));
            let result = match client.do_exchange(input).await {
                Ok(mut replies) => loop {
                    match replies.next().await {
                        Some(Ok(_)) => continue,
                        Some(Err(e)) => break Err(e),
                        None => break Ok(()),
                    }
                },
                Err(e) => Err(e),
            };
            let error = result
                .expect_err("a malformed stream is refused")
                .to_string();
            assert!(
                error.contains("InvalidArgument") || error.contains("invalid argument"),
                "case {i}: {error}"
            );
            assert!(
                error.contains("message 1"),
                "case {i}: names the message: {error}"
            );
        }
        // Clients that open exchanges and then say nothing: past
        // streams_max (8) the next is refused; each is cut off after
        // idle_secs, which frees its slot.
        let started = std::time::Instant::now();
        let silent = || {
            let opening = FlightData::new().with_descriptor(descriptor.clone());
            futures::stream::iter([Ok(opening)]).chain(futures::stream::pending())
        };
        let mut open = Vec::new();
        for _ in 0..8 {
            open.push(client.do_exchange(silent()).await.unwrap());
        }
        let refused = match client.do_exchange(silent()).await {
            Ok(mut replies) => replies.next().await.unwrap().unwrap_err().to_string(),
            Err(e) => e.to_string(),
        };
        assert!(refused.contains("8 streams are open"), "{refused}");
        for mut replies in open {
            let error = loop {
                match replies.next().await {
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => break e.to_string(),
                    None => panic!("the idle stream ended without an error"),
                }
            };
            assert!(error.contains("no message for 3 s"), "{error}");
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(30));
        // The next client is served.
        let names: Vec<_> = client
            .list_flights(bytes::Bytes::new())
            .await
            .unwrap()
            .map(|f| f.unwrap().flight_descriptor.unwrap().path)
            .collect()
            .await;
        assert_eq!(names.len(), 2, "{names:?}");
    });
    stop(daemon);
}

/// Streams DoPut batches of 4096 rows into pipeline "p" until the server
/// refuses; prints the rows the refusal says were accepted.
const ENDLESS_PUT: &str = r#"
import json, re, sys
import numpy as np, pyarrow as pa, pyarrow.flight as flight
feats = json.load(open(sys.argv[2]))["learner"]["feature_names"]
t = pa.table({f: pa.array(np.random.rand(4096).astype(np.float32)) for f in feats})
w, _ = flight.FlightClient(sys.argv[1]).do_put(flight.FlightDescriptor.for_path("p"), t.schema)
try:
    w.write_table(t)
    print("started", flush=True)
    while True:
        w.write_table(t)
except flight.FlightUnavailableError as e:
    print("accepted", re.search(r"(\d+) rows of this stream were accepted", str(e)).group(1))
"#;

/// SIGTERM while a client streams DoPut: the daemon exits 0 at once, the
/// client is told how many of its rows were accepted, and exactly those
/// rows are in the sink (it knows what to send again).
#[test]
fn sigterm_during_a_put_tells_the_client_what_was_accepted() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("roo.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nmetrics = \"127.0.0.1:0\"\n\n[flight]\nlisten = \"127.0.0.1:0\"\n\n[[pipeline]]\nname = \"p\"\nmodel = \"{}\"\nmax_rows = 1000\n[pipeline.source]\nkind = \"flight\"\n[[pipeline.sink]]\nkind = \"files\"\ndir = \"out\"\nformat = \"arrow\"\n",
            example("model.json").display()
        ),
    )
    .unwrap();
    let mut daemon = Daemon::start(&config, Stdio::null());
    let address = format!("grpc://{}", daemon.ready().flight.unwrap());
    let mut client = Command::new(&python)
        .args(["-c", ENDLESS_PUT, &address])
        .arg(example("model.json"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(client.stdout.take().unwrap()).lines();
    let first = stdout.next().map(Result::unwrap).unwrap_or_default();
    assert_eq!(
        first, "started",
        "the client did not get its first batch in"
    );
    // Mid-stream: several of its batches are in.
    daemon.wait_metric("roo_events_in_total", 5.0 * 4096.0);
    daemon.signal(libc::SIGTERM);
    let (code, lines) = daemon.finish();
    assert_eq!(code, Some(0), "{}", lines.join("\n"));
    let last = stdout.next().map(Result::unwrap).unwrap_or_default();
    let out = client.wait_with_output().unwrap();
    let accepted: usize = last
        .strip_prefix("accepted ")
        .unwrap_or_else(|| panic!("{last}\n{}", String::from_utf8_lossy(&out.stderr)))
        .parse()
        .unwrap();
    assert!(accepted > 0, "the client got rows in before the signal");
    let rows: usize = read_ipc_dir(&dir.path().join("out"))
        .iter()
        .map(|b| b.num_rows())
        .sum();
    assert_eq!(rows, accepted, "the sink holds exactly the rows accepted");
}
