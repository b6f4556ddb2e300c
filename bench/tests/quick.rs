//! `roo-bench all --quick` end to end: every scenario runs against the real
//! daemon and the real Python peers, and the report that comes out is
//! whole and sane — positive, finite, consistent figures, every peer tied
//! to a roo figure, the headline filled, the plots drawn. It never checks a
//! timing: these are debug builds on a shared machine.
//!
//! Needs a Python with bench/python/requirements.txt and
//! appliance/tests/python/requirements.txt, named by `ROO_PYTHON`; without
//! one the test prints SKIPPED, and with `ROO_REQUIRE_BENCH=1` (CI) fails.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn roo_bench() -> &'static str {
    env!("CARGO_BIN_EXE_roo-bench")
}

/// Builds `roo` and `roo-dev-broker` (the kafka scenario's broker) beside
/// roo-bench (a no-op under `cargo test --workspace`).
fn ensure_roo() {
    let roo = Path::new(roo_bench()).with_file_name("roo");
    let broker = Path::new(roo_bench()).with_file_name("roo-dev-broker");
    if roo.exists() && broker.exists() {
        return;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build.args([
        "build",
        "-p",
        "roo-appliance",
        "--bin",
        "roo",
        "--bin",
        "roo-dev-broker",
    ]);
    if !roo_bench().contains("/debug/") {
        build.arg("--release");
    }
    let status = build.status().expect("running cargo build");
    assert!(status.success(), "cargo build -p roo-appliance failed");
    assert!(roo.exists(), "{} is still missing", roo.display());
    assert!(broker.exists(), "{} is still missing", broker.display());
}

/// The Python with every peer's library, or None (and why).
fn python() -> Result<String, String> {
    let python = std::env::var("ROO_PYTHON").map_err(|_| "ROO_PYTHON is not set".to_string())?;
    let out = Command::new(&python)
        .args([
            "-c",
            "import pyarrow, xgboost, lightgbm, sklearn, onnxruntime, skl2onnx, onnxmltools, mlserver, mlserver_xgboost",
        ])
        .output()
        .map_err(|e| format!("{python}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{python} lacks the peers' libraries: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(python)
}

fn skip_or_fail(why: &str) {
    if std::env::var("ROO_REQUIRE_BENCH").is_ok_and(|v| v == "1") {
        panic!("ROO_REQUIRE_BENCH=1 but the benchmark suite cannot run: {why}");
    }
    eprintln!(
        "SKIPPED: {why}; pip install -r bench/python/requirements.txt -r appliance/tests/python/requirements.txt \
         and set ROO_PYTHON"
    );
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("roo-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn positive(v: &Value, what: &str) -> f64 {
    let x = v
        .as_f64()
        .unwrap_or_else(|| panic!("{what}: not a number: {v}"));
    assert!(
        x.is_finite() && x > 0.0,
        "{what}: {x} is not a positive finite figure"
    );
    x
}

#[test]
fn quick_run_writes_a_whole_and_sane_report() {
    let python = match python() {
        Ok(p) => p,
        Err(why) => return skip_or_fail(&why),
    };
    ensure_roo();
    let dir = scratch("quick");
    let (out, cache) = (dir.join("report"), dir.join("cache"));
    let price = 0.05;
    let run = Command::new(roo_bench())
        .args([
            "all",
            "--quick",
            "--python",
            &python,
            "--dollars-per-core-hour",
        ])
        .arg(price.to_string())
        .arg("--out")
        .arg(&out)
        .arg("--cache")
        .arg(&cache)
        .output()
        .expect("running roo-bench");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "roo-bench all --quick failed: {}\n{stdout}\n{}",
        run.status,
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        stdout.contains("## Headline"),
        "no headline printed:\n{stdout}"
    );

    let report: Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("report.json")).expect("report.json"),
    )
    .expect("report.json is JSON");
    assert_eq!(report["quick"], true);
    assert_eq!(report["dollars_per_core_hour"].as_f64(), Some(price));
    assert!(positive(&report["machine"]["cores"], "cores") >= 1.0);
    let sections = report["sections"].as_array().expect("sections");
    let names: Vec<&str> = sections
        .iter()
        .map(|s| s["scenario"].as_str().expect("scenario"))
        .collect();
    assert_eq!(
        names,
        [
            "kernels", "ingest", "pipeline", "score", "flight", "gpu", "features", "enrich",
            "topk", "audit", "online", "kafka", "chaos"
        ]
    );
    let gpu_required = std::env::var("ROO_REQUIRE_GPU").is_ok_and(|v| v == "1");
    for s in sections {
        let scenario = s["scenario"].as_str().expect("scenario");
        if let Some(why) = s["skipped"].as_str() {
            assert!(
                scenario == "gpu" && !gpu_required,
                "{scenario} was skipped: {why}"
            );
            continue;
        }
        let ms = s["measurements"].as_array().expect("measurements");
        assert!(
            ms.iter().any(|m| m["roo"] == true),
            "{scenario}: no roo figure"
        );
        // The GPU has the CPU beside it; crash safety has roo without
        // checkpoints beside roo with them, not a peer.
        if scenario != "gpu" && scenario != "chaos" {
            assert!(
                ms.iter().any(|m| m["roo"] == false),
                "{scenario}: no peer figure"
            );
        }
        assert!(!s["detail"].as_array().expect("detail").is_empty());
        for m in ms {
            let name = m["name"].as_str().expect("name");
            let what = |f: &str| format!("{scenario}: {name}: {f}");
            let events = positive(&m["events"], &what("events"));
            let wall = positive(&m["wall_s"], &what("wall_s"));
            let rate = positive(&m["events_per_s"], &what("events_per_s"));
            assert!(
                (rate - events / wall).abs() <= 1e-6 * rate,
                "{}",
                what("rate")
            );
            if !m["cpu_ns_per_event"].is_null() {
                let ns = positive(&m["cpu_ns_per_event"], &what("cpu_ns_per_event"));
                let dollars = positive(&m["dollars_per_billion"], &what("dollars"));
                let expected = ns / 3600.0 * price;
                assert!(
                    (dollars - expected).abs() <= 1e-9 * expected.max(1.0),
                    "{}: {dollars} != {expected}",
                    what("$/billion")
                );
            }
            if let Some(l) = m["latency"].as_object() {
                let p50 = positive(&l["p50_ms"], &what("p50"));
                let p99 = positive(&l["p99_ms"], &what("p99"));
                let p999 = positive(&l["p999_ms"], &what("p999"));
                assert!(p50 <= p99 && p99 <= p999, "{}", what("quantile order"));
            }
            if !m["peak_rss_mib"].is_null() {
                positive(&m["peak_rss_mib"], &what("peak RSS"));
            }
            if let Some(against) = m["against"].as_str() {
                assert!(
                    ms.iter()
                        .any(|r| r["name"].as_str() == Some(against) && r["roo"] == true),
                    "{}: compared with {against:?}, which is not a roo figure here",
                    what("against")
                );
            }
        }
        let with_latency = ms.iter().filter(|m| m["latency"].is_object()).count();
        match scenario {
            "pipeline" => {
                let offered = ms.iter().filter(|m| m["offered_per_s"].is_number()).count();
                assert!(offered >= 2, "pipeline: {offered} offered loads");
                assert!(with_latency >= 3, "pipeline: {with_latency} with latency");
            }
            "kernels" | "flight" | "gpu" => {
                assert!(with_latency >= 5, "{scenario}: {with_latency} with latency")
            }
            _ => {}
        }
    }
    let headline = report["headline"].as_array().expect("headline");
    for needle in [
        "Python batch",
        "pyarrow.csv micro-batches",
        "line-by-line",
        "roo Arrow in (IPC over TCP)",
        "roo score --threads 1, whole process",
        "2 cores",
        "feature operator",
        "features CPU per event",
        "lookups/s on one core (integer keys",
        "enrich CPU per event <= 1/5 of pandas merge_asof(by=key), string keys",
        "pandas merge(how=left)",
        "topk >= 5M events/s on one core",
        "topk CPU per event <= 1/20 of the better peer",
        "audit on adds <= 30% CPU per event",
        "roo audit show <= 100 ms",
        "roo replay >= 1M records/s on one core",
        "online REST: server CPU per 1-event request <= 1/50 of MLServer's",
        "online gRPC: server CPU per 1-event request <= 1/50 of MLServer's",
        "online REST: p99 <= 2 ms at 50% of peak",
        "kafka CPU per event <= 1/10 of Python confluent-kafka + XGBoost, CSV messages",
        "kafka CPU per event <= 1/10 of Python confluent-kafka + XGBoost, Arrow messages",
    ] {
        let h = headline
            .iter()
            .find(|h| h["target"].as_str().is_some_and(|t| t.contains(needle)))
            .unwrap_or_else(|| panic!("no headline row for {needle}: {headline:?}"));
        positive(&h["ratio"], needle);
    }

    let md = std::fs::read_to_string(out.join("report.md")).expect("report.md");
    for needle in [
        "## Headline",
        "## Kernels",
        "## Ingest",
        "## The daemon end to end",
        "## Arrow Flight DoExchange",
        "## CPU/GPU crossover",
        "## Per-key rolling features",
        "## Enrichment",
        "## Sliding-window top-K",
        "## The audit log at scale",
        "## Online decisions",
        "## Kafka in, scored, Kafka out",
        "set with --dollars-per-core-hour",
    ] {
        assert!(md.contains(needle), "report.md lacks {needle:?}");
    }
    let plot = std::fs::read_to_string(out.join("throughput-latency.svg")).expect("plot");
    assert!(plot.starts_with("<svg") && plot.trim_end().ends_with("</svg>"));
    assert!(plot.contains("<circle") && plot.contains("roo, tcp -&gt; score -&gt; file"));
    let cost = std::fs::read_to_string(out.join("cost.svg")).expect("cost plot");
    assert!(cost.starts_with("<svg") && cost.contains("<rect") && cost.contains("Python batch"));

    // The report renders again from its JSON, priced anew.
    let again = dir.join("again");
    let render = Command::new(roo_bench())
        .arg("render")
        .arg(out.join("report.json"))
        .arg("--out")
        .arg(&again)
        .args(["--dollars-per-core-hour", "0.1"])
        .output()
        .expect("running roo-bench render");
    assert!(
        render.status.success(),
        "{}",
        String::from_utf8_lossy(&render.stderr)
    );
    let repriced: Value = serde_json::from_str(
        &std::fs::read_to_string(again.join("report.json")).expect("re-rendered report.json"),
    )
    .expect("JSON");
    assert_eq!(repriced["dollars_per_core_hour"].as_f64(), Some(0.1));
    let m = &repriced["sections"][2]["measurements"][0];
    let ns = positive(&m["cpu_ns_per_event"], "re-rendered CPU-ns/event");
    let dollars = positive(&m["dollars_per_billion"], "re-rendered $/billion");
    assert!((dollars - ns / 3600.0 * 0.1).abs() <= 1e-9 * dollars.max(1.0));
    assert!(again.join("throughput-latency.svg").exists() && again.join("cost.svg").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_arguments_are_refused_with_what_was_expected() {
    let out = Command::new(roo_bench())
        .args(["all", "--only", "kernals"])
        .output()
        .expect("running roo-bench");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "--only kernals: expected some of kernels, ingest, pipeline, score, flight, gpu"
        ),
        "{err}"
    );
    let out = Command::new(roo_bench())
        .args(["all", "--dollars-per-core-hour", "0"])
        .output()
        .expect("running roo-bench");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("expected a positive price"), "{err}");
    let not_json = std::env::temp_dir().join(format!("roo-bench-not-json-{}", std::process::id()));
    std::fs::write(&not_json, "not a report").expect("write");
    let out = Command::new(roo_bench())
        .arg("render")
        .arg(&not_json)
        .output()
        .expect("running roo-bench render");
    let _ = std::fs::remove_file(&not_json);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not a roo-bench report (expected roo-bench all's report.json)"),
        "{err}"
    );
}
