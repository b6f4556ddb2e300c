//! `/metrics` and `/healthz` of a real daemon: the exposition parses with
//! a strict OpenMetrics parser (Python's `prometheus_client`), each family
//! is described once however many pipelines there are, and a client that
//! stalls mid-request does not hold up other scrapes.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::process::{Command, Stdio};

use common::{example, http_get, Daemon};

/// Parses stdin with the strict OpenMetrics parser and prints, per family,
/// its name, type and the pipelines its samples name.
const STRICT_PARSE: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
families = {}
for f in text_string_to_metric_families(sys.stdin.read()):
    assert f.name not in families, f"family {f.name} described twice"
    families[f.name] = {"type": f.type, "pipelines": sorted({s.labels.get("pipeline", "") for s in f.samples})}
print(json.dumps(families))
"#;

#[test]
fn metrics_parse_strictly_and_a_stalled_client_holds_up_no_one() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("roo.toml");
    let pipeline = |name: &str| {
        format!(
            "[[pipeline]]\nname = \"{name}\"\nmodel = {:?}\nmax_rows = 500\n\n\
             [pipeline.source]\nkind = \"generator\"\nrate = 5000\n\n\
             [[pipeline.sink]]\nkind = \"files\"\ndir = \"{name}\"\nformat = \"arrow\"\nrotate_secs = 1\n\n",
            example("model.json")
        )
    };
    std::fs::write(
        &config,
        format!(
            "[server]\nmetrics = \"127.0.0.1:0\"\n\n{}{}",
            pipeline("a"),
            pipeline("b")
        ),
    )
    .unwrap();
    let mut daemon = Daemon::start(&config, Stdio::null());
    let addr = daemon.ready().metrics.unwrap();
    daemon.wait_metric("roo_acks_total", 2.0);

    // A client that sends half a request and then nothing.
    let mut stalled = TcpStream::connect(&addr).unwrap();
    stalled.write_all(b"GET /metrics HTTP/1.1\r\nHo").unwrap();
    // Others are served meanwhile, several at once.
    let scrapes: Vec<_> = (0..8)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || http_get(&addr, "/metrics"))
        })
        .collect();
    let bodies: Vec<(u16, String)> = scrapes.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(bodies.iter().all(|(status, _)| *status == 200));
    assert_eq!(http_get(&addr, "/healthz"), (200, "ok\n".to_string()));
    assert_eq!(http_get(&addr, "/nothing").0, 404);
    drop(stalled);

    let text = &bodies[0].1;
    // Each family's TYPE line once, whatever the number of pipelines.
    let types: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE ")).collect();
    let mut unique = types.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(types.len(), unique.len(), "{text}");
    assert!(
        text.ends_with("# EOF\n"),
        "an OpenMetrics exposition ends with # EOF"
    );

    if let Some(python) = common::python("prometheus_client.openmetrics.parser") {
        let mut child = Command::new(python)
            .args(["-c", STRICT_PARSE])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "the strict parser refused the exposition: {}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
        let families: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(families["roo_events_out"]["type"], "counter");
        assert_eq!(
            families["roo_events_out"]["pipelines"],
            serde_json::json!(["a", "b"])
        );
        assert_eq!(families["roo_latency_seconds"]["type"], "histogram");
        assert_eq!(families["roo_latency_quantile_seconds"]["type"], "gauge");
        assert_eq!(families["roo_source_acked_offset"]["type"], "gauge");
        assert_eq!(families["roo_process_cpu_seconds"]["type"], "counter");
    }
    // Acknowledged offsets name their source and unit.
    assert!(
        text.lines()
            .any(|l| l.starts_with("roo_source_acked_offset{")
                && l.contains("pipeline=\"a\"")
                && l.contains("source=\"generator\"")
                && l.contains("unit=\"rows\"")),
        "{text}"
    );
    daemon.signal(libc::SIGTERM);
    let (code, lines) = daemon.finish();
    assert_eq!(code, Some(0), "{}", lines.join("\n"));
}

/// The endpoint serves at most 64 connections at once: with 64 clients
/// holding half a request each, the next scrape waits for a slot, and gets
/// one as soon as a client leaves.
#[test]
fn metrics_connections_are_bounded_and_a_freed_slot_serves_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("roo.toml");
    std::fs::write(
        &config,
        "[server]\nmetrics = \"127.0.0.1:0\"\n\n[flight]\nlisten = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let mut daemon = Daemon::start(&config, Stdio::null());
    let addr = daemon.ready().metrics.unwrap();
    let mut held: Vec<TcpStream> = (0..64)
        .map(|_| {
            let mut s = TcpStream::connect(&addr).unwrap();
            s.write_all(b"GET /metrics HTTP/1.1\r\nHo").unwrap();
            s
        })
        .collect();
    let waiting = {
        let addr = addr.clone();
        std::thread::spawn(move || http_get(&addr, "/healthz"))
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(!waiting.is_finished(), "a 65th connection was served");
    held.pop();
    assert_eq!(waiting.join().unwrap(), (200, "ok\n".to_string()));
    drop(held);
    daemon.signal(libc::SIGTERM);
    let (code, lines) = daemon.finish();
    assert_eq!(code, Some(0), "{}", lines.join("\n"));
}
