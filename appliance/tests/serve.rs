//! `roo serve` end to end: the real daemon on real files and sockets, real
//! signals. Counts are checked (events in = scored out + dead letters).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type};
use arrow_array::{Array, RecordBatch};

mod common;
use common::{
    example, http_get, metric_in, read_ipc_dir, roo, rss_kib, score_sample, scores, Daemon,
};

/// `N events in, M scored, D dead letters` from the final report.
fn final_counts(lines: &[String], pipeline: &str) -> (u64, u64, u64) {
    let line = lines
        .iter()
        .find(|l| l.contains(&format!("pipeline {pipeline}: ")) && l.contains("events in"))
        .unwrap_or_else(|| panic!("no final counts for {pipeline}:\n{}", lines.join("\n")));
    let numbers: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    (numbers[0], numbers[1], numbers[2])
}

/// Every batch of every Arrow IPC file in `dir`, in file order.
/// The `txn_id` column of every batch, in order.
fn txn_ids(batches: &[RecordBatch]) -> Vec<i64> {
    batches
        .iter()
        .flat_map(|b| {
            b.column_by_name("txn_id")
                .unwrap()
                .as_primitive::<Int64Type>()
                .values()
                .to_vec()
        })
        .collect()
}

/// A model file's version, as `roo inspect --json` gives it.
fn model_version(path: &Path) -> String {
    let out = roo()
        .args(["inspect", "--json", "--model", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    doc["version"].as_str().unwrap().to_string()
}

fn versions(batch: &RecordBatch) -> Vec<String> {
    let column = batch.column_by_name("model_version").unwrap();
    let dict = column.as_dictionary::<Int32Type>();
    let values = dict.values().as_string::<i32>();
    dict.keys()
        .iter()
        .map(|k| values.value(k.unwrap() as usize).to_string())
        .collect()
}

#[test]
fn a_file_pipeline_scores_like_roo_score_and_exits_when_its_source_ends() {
    let dir = tempfile::tempdir().unwrap();
    // The bundled sample with two bad rows in it.
    let text = std::fs::read_to_string(example("transactions.csv")).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.insert(100, "bad1,not-a-number");
    lines.insert(1500, "bad2,1,2,3");
    let input = dir.path().join("in.csv");
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let config = dir.path().join("roo.toml");
    std::fs::write(
        &config,
        format!(
            "[[pipeline]]\nname = \"f\"\nmodel = {:?}\nmax_rows = 300\n\n[pipeline.source]\nkind = \"file\"\npath = \"in.csv\"\n\n\
             [[pipeline.sink]]\nkind = \"files\"\ndir = \"out\"\nformat = \"arrow\"\n\n[pipeline.dead_letters]\ndir = \"dead\"\n",
            example("model.json")
        ),
    )
    .unwrap();
    let daemon = Daemon::start(&config, Stdio::null());
    let (code, lines) = daemon.finish();
    assert_eq!(code, Some(0), "{}", lines.join("\n"));
    assert!(lines
        .iter()
        .any(|l| l.contains("every pipeline has stopped")));
    let (events_in, out, dead) = final_counts(&lines, "f");
    assert_eq!((events_in, out, dead), (2002, 2000, 2));

    let batches = read_ipc_dir(&dir.path().join("out"));
    let scored = scores(&batches);
    // The same scores `roo score` gives on the clean file.
    let reference = dir.path().join("ref.arrow");
    let expected = score_sample("auto", &reference);
    assert_eq!(scored, expected);
    assert!(batches.iter().all(|b| b.num_rows() <= 300));
    let v = versions(&batches[0]);
    assert!(v[0].starts_with("sha256:ca3ab6d164c1"), "{v:?}");
    let dead_files: Vec<_> = std::fs::read_dir(dir.path().join("dead"))
        .unwrap()
        .collect();
    let dead_text: String = dead_files
        .into_iter()
        .map(|f| std::fs::read_to_string(f.unwrap().path()).unwrap())
        .collect();
    assert_eq!(dead_text.lines().count(), 2);
    assert!(
        dead_text.contains("\"raw\":\"bad1,not-a-number\""),
        "{dead_text}"
    );
}

/// The bundled sample's CSV header line.
fn sample_header() -> String {
    std::fs::read_to_string(example("transactions.csv"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_string()
}

fn tcp_config(dir: &Path, sink: &str, memory_mb: u64) -> PathBuf {
    let header = sample_header();
    let columns: Vec<String> = header
        .split(',')
        .map(|c| {
            if c == "txn_id" {
                "\"txn_id:int64\"".to_string()
            } else {
                format!("{c:?}")
            }
        })
        .collect();
    let config = dir.join("roo.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nmemory_mb = {memory_mb}\nmetrics = \"127.0.0.1:0\"\n\n[[pipeline]]\nname = \"t\"\nmodel = {:?}\nmax_rows = 512\nlinger_ms = 2\n\n\
             [pipeline.source]\nkind = \"tcp\"\nlisten = \"127.0.0.1:0\"\nformat = \"csv\"\ncolumns = [{}]\n\n{sink}",
            example("model.json"),
            columns.join(", ")
        ),
    )
    .unwrap();
    config
}

/// A CSV row of the sample's shape with `txn_id` = `client * 1e9 + i`.
fn rows_for(client: u64) -> impl Iterator<Item = String> {
    let text = std::fs::read_to_string(example("transactions.csv")).unwrap();
    let body: Vec<String> = text
        .lines()
        .skip(1)
        .map(|l| l.split_once(',').unwrap().1.to_string())
        .collect();
    (0u64..).map(move |i| {
        format!(
            "{},{}\n",
            client * 1_000_000_000 + i,
            body[i as usize % body.len()]
        )
    })
}

#[test]
fn sigterm_mid_stream_loses_nothing_that_was_read() {
    let dir = tempfile::tempdir().unwrap();
    let config = tcp_config(
        dir.path(),
        "[[pipeline.sink]]\nkind = \"files\"\ndir = \"out\"\nformat = \"arrow\"\nrotate_secs = 1\n",
        64,
    );
    let mut daemon = Daemon::start(&config, Stdio::null());
    let addr = daemon.ready().tcp["t"].clone();
    let header = sample_header();
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (1..=3u64)
        .map(|c| {
            let (addr, header, stop, sent) =
                (addr.clone(), header.clone(), stop.clone(), sent.clone());
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(&addr).unwrap();
                s.write_all(format!("{header}\n").as_bytes()).unwrap();
                let mut chunk = String::new();
                for row in rows_for(c) {
                    chunk.push_str(&row);
                    if chunk.len() > 16 << 10 {
                        if stop.load(Ordering::Relaxed) || s.write_all(chunk.as_bytes()).is_err() {
                            return;
                        }
                        sent.fetch_add(chunk.matches('\n').count() as u64, Ordering::Relaxed);
                        chunk.clear();
                    }
                }
            })
        })
        .collect();
    daemon.wait_metric("roo_events_in_total", 20_000.0);
    daemon.signal(libc::SIGTERM);
    let (code, lines) = daemon.finish();
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    assert_eq!(code, Some(0), "{}", lines.join("\n"));
    let (events_in, out, dead) = final_counts(&lines, "t");
    assert!(events_in > 10_000, "{events_in} events read");
    assert_eq!(events_in, out + dead);
    assert_eq!(dead, 0);
    let batches = read_ipc_dir(&dir.path().join("out"));
    let ids = txn_ids(&batches);
    assert_eq!(ids.len() as u64, out, "every scored row is in the files");
    // Per connection, the rows read are exactly a prefix of the rows sent:
    // in order, no gap, no duplicate.
    for c in 1..=3i64 {
        let mine: Vec<i64> = ids
            .iter()
            .filter(|&&i| i / 1_000_000_000 == c)
            .map(|i| i % 1_000_000_000)
            .collect();
        assert_eq!(
            mine,
            (0..mine.len() as i64).collect::<Vec<_>>(),
            "client {c}"
        );
    }
    assert!(batches
        .iter()
        .all(|b| b.column_by_name("score").unwrap().null_count() == 0));
}

#[test]
fn sighup_swaps_the_model_between_batches() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.json");
    let original = std::fs::read(example("model.json")).unwrap();
    std::fs::write(&model, &original).unwrap();
    let config = dir.path().join("roo.toml");
    std::fs::write(
        &config,
        "[server]\nmetrics = \"127.0.0.1:0\"\n\n[[pipeline]]\nname = \"g\"\nmodel = \"model.json\"\nmax_rows = 1000\nlinger_ms = 10\n\n\
         [pipeline.source]\nkind = \"generator\"\nrate = 20000\n\n\
         [[pipeline.sink]]\nkind = \"files\"\ndir = \"out\"\nformat = \"arrow\"\nrotate_secs = 1\n",
    )
    .unwrap();
    let mut daemon = Daemon::start(&config, Stdio::null());
    daemon.ready();
    let before = daemon.wait_metric("roo_events_out_total", 5_000.0);
    // Same trees, another file: a new version.
    let mut changed = original.clone();
    changed.extend_from_slice(b"\n");
    std::fs::write(&model, &changed).unwrap();
    daemon.signal(libc::SIGHUP);
    daemon.wait_metric("roo_model_reloads_total", 1.0);
    daemon.wait_metric("roo_events_out_total", before + 5_000.0);
    daemon.signal(libc::SIGINT);
    let (code, lines) = daemon.finish();
    assert_eq!(code, Some(0), "{}", lines.join("\n"));
    let batches = read_ipc_dir(&dir.path().join("out"));
    let mut sequence: Vec<String> = Vec::new();
    for b in &batches {
        let v = versions(b);
        assert!(v.iter().all(|x| *x == v[0]), "one version per batch");
        if sequence.last() != Some(&v[0]) {
            sequence.push(v[0].clone());
        }
    }
    assert_eq!(sequence.len(), 2, "old, then new: {sequence:?}");
    assert_eq!(sequence[1], model_version(&model), "the new file's version");
    let ids = txn_ids(&batches);
    assert_eq!(
        ids,
        (0..ids.len() as i64).collect::<Vec<_>>(),
        "no event lost or repeated across the swap"
    );
}

/// One pipeline-summed counter from the daemon's /metrics at `addr`.
fn metric(addr: &str, name: &str) -> u64 {
    metric_in(&http_get(addr, "/metrics").1, name) as u64
}

#[test]
fn a_slow_sink_pushes_back_on_the_sender_with_memory_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let config = tcp_config(dir.path(), "[[pipeline.sink]]\nkind = \"stdout\"\n", 8);
    let mut daemon = Daemon::start(&config, Stdio::piped());
    let addr = daemon.ready().tcp["t"].clone();
    let metrics = daemon.ready().metrics.unwrap();
    let header = sample_header();
    let total_rows = 400_000u64;
    let sent = Arc::new(AtomicU64::new(0));
    let progress = sent.clone();
    let client = std::thread::spawn(move || {
        let mut s = TcpStream::connect(&addr).unwrap();
        s.write_all(format!("{header}\n").as_bytes()).unwrap();
        let mut chunk = String::new();
        for row in rows_for(1).take(total_rows as usize) {
            chunk.push_str(&row);
            if chunk.len() > 64 << 10 {
                s.write_all(chunk.as_bytes()).unwrap();
                progress.fetch_add(chunk.matches('\n').count() as u64, Ordering::Relaxed);
                chunk.clear();
            }
        }
        s.write_all(chunk.as_bytes()).unwrap();
        progress.fetch_add(chunk.matches('\n').count() as u64, Ordering::Relaxed);
    });
    // Nobody reads stdout: the pipe fills, the sink blocks, and so on back
    // to the socket.
    std::thread::sleep(Duration::from_secs(3));
    let stalled = sent.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(1));
    let rss = rss_kib(daemon.child.id());
    assert_eq!(
        sent.load(Ordering::Relaxed),
        stalled,
        "the sender is blocked"
    );
    assert!(stalled < total_rows, "sent {stalled} of {total_rows}");
    assert!(rss < 400 * 1024, "RSS {rss} KiB");
    // Now read: everything arrives.
    let mut stdout = daemon.child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).unwrap();
        text
    });
    client.join().unwrap();
    // Everything sent is read and scored before the stop.
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric(&metrics, "roo_events_out_total") < total_rows {
        assert!(
            Instant::now() < deadline,
            "not drained: {}",
            metric(&metrics, "roo_events_out_total")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    daemon.signal(libc::SIGTERM);
    let (code, lines) = daemon.finish();
    let text = reader.join().unwrap();
    assert_eq!(code, Some(0), "{}", lines.join("\n"));
    let (events_in, out, _) = final_counts(&lines, "t");
    let rows = text.lines().filter(|l| !l.starts_with("txn_id")).count() as u64;
    assert_eq!(rows, out);
    assert_eq!(events_in, total_rows, "{}", lines.join("\n"));
    assert_eq!(out, total_rows);
}

/// A quantile of one stage's latency from the daemon's /metrics, in seconds.
fn latency_s(addr: &str, stage: &str, quantile: &str) -> f64 {
    let (_, text) = http_get(addr, "/metrics");
    let key = format!("stage=\"{stage}\",quantile=\"{quantile}\"}}");
    text.lines()
        .find(|l| l.starts_with("roo_latency_quantile_seconds") && l.contains(&key))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {stage} {quantile} in:\n{text}"))
}

/// `event_time` names a column of event times: latency is then measured
/// from them, so time an event spent before roo read it counts (here, 2 s
/// the sender says its events waited), where the ingest-based latency
/// starts at the read.
#[test]
fn event_time_latency_counts_the_time_before_ingest() {
    let dir = tempfile::tempdir().unwrap();
    let header = sample_header();
    let columns: Vec<String> = std::iter::once("\"sent_us:int64\"".to_string())
        .chain(header.split(',').map(|c| {
            if c == "txn_id" {
                "\"txn_id:int64\"".to_string()
            } else {
                format!("{c:?}")
            }
        }))
        .collect();
    let config = dir.path().join("roo.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nmetrics = \"127.0.0.1:0\"\n\n[[pipeline]]\nname = \"t\"\nmodel = {:?}\nmax_rows = 100\nlinger_ms = 2\nevent_time = \"sent_us\"\n\n\
             [pipeline.source]\nkind = \"tcp\"\nlisten = \"127.0.0.1:0\"\nformat = \"csv\"\ncolumns = [{}]\n\n\
             [[pipeline.sink]]\nkind = \"files\"\ndir = \"out\"\nformat = \"arrow\"\n",
            example("model.json"),
            columns.join(", ")
        ),
    )
    .unwrap();
    let mut daemon = Daemon::start(&config, Stdio::null());
    let addr = daemon.ready().tcp["t"].clone();
    let metrics = daemon.ready().metrics.unwrap();
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    let mut body = format!("sent_us,{header}\n");
    for line in rows_for(1).take(500) {
        body.push_str(&format!("{},{line}", now_us - 2_000_000));
    }
    let mut s = TcpStream::connect(&addr).unwrap();
    s.write_all(body.as_bytes()).unwrap();
    drop(s);
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(&metrics, "roo_events_out_total") < 500 {
        assert!(Instant::now() < deadline, "the rows never reached the sink");
        std::thread::sleep(Duration::from_millis(20));
    }
    let event = latency_s(&metrics, "event_to_sink", "0.5");
    let ingest = latency_s(&metrics, "end_to_end", "0.5");
    assert!((2.0..30.0).contains(&event), "event_to_sink p50 {event} s");
    assert!(ingest < 2.0, "end_to_end p50 {ingest} s");
    daemon.signal(libc::SIGTERM);
    let (code, lines) = daemon.finish();
    assert_eq!(code, Some(0), "{}", lines.join("\n"));
}

/// `device = "gpu"` in a config: every batch on the GPU (lavapipe in CI,
/// where `ROO_REQUIRE_GPU=1` makes a missing adapter a failure), the scores
/// those of the CPU within the GPU scorer's tolerance.
#[test]
fn a_gpu_pipeline_scores_like_the_cpu() {
    let devices = roo().arg("devices").output().unwrap();
    if !devices.status.success() {
        let why = String::from_utf8_lossy(&devices.stderr);
        assert!(
            std::env::var_os("ROO_REQUIRE_GPU").is_none(),
            "ROO_REQUIRE_GPU is set, but {why}"
        );
        eprintln!("SKIPPED: the GPU pipeline was not tested: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("roo.toml");
    std::fs::write(
        &config,
        format!(
            "[[pipeline]]\nname = \"g\"\nmodel = {:?}\ndevice = \"gpu\"\nmax_rows = 300\n\n\
             [pipeline.source]\nkind = \"file\"\npath = {:?}\n\n\
             [[pipeline.sink]]\nkind = \"files\"\ndir = \"out\"\nformat = \"arrow\"\n",
            example("model.json"),
            example("transactions.csv")
        ),
    )
    .unwrap();
    let daemon = Daemon::start(&config, Stdio::null());
    let (code, lines) = daemon.finish();
    assert_eq!(code, Some(0), "{}", lines.join("\n"));
    let all = lines.join("\n");
    assert!(all.contains("scoring on the GPU"), "{all}");
    // 2,000 rows in batches of 300: 7 batches, all on the GPU.
    assert!(
        all.contains("2000 scored, 0 dead letters, 7 batches (7 on the GPU, 0 retried"),
        "{all}"
    );
    let on_gpu = scores(&read_ipc_dir(&dir.path().join("out")));
    let reference = dir.path().join("cpu.arrow");
    let on_cpu = score_sample("cpu", &reference);
    assert_eq!(on_gpu.len(), 2000);
    for (g, c) in on_gpu.iter().zip(&on_cpu) {
        assert!((g - c).abs() <= 1e-5, "GPU {g} CPU {c}");
    }
}

#[test]
fn a_sink_that_cannot_write_stops_the_daemon_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("roo.toml");
    std::fs::write(
        &config,
        format!(
            "[[pipeline]]\nname = \"g\"\nmodel = {:?}\n\n[pipeline.source]\nkind = \"generator\"\nrate = 2000\n\n\
             [[pipeline.sink]]\nkind = \"files\"\ndir = \"out\"\nformat = \"arrow\"\nrotate_secs = 1\n",
            example("model.json")
        ),
    )
    .unwrap();
    let mut daemon = Daemon::start(&config, Stdio::null());
    // Ready means the sinks are open: the directory exists.
    daemon.ready();
    // The sink's directory becomes a file: the next file cannot be renamed into place.
    let out = dir.path().join("out");
    assert!(out.is_dir());
    std::fs::remove_dir_all(&out).unwrap();
    std::fs::write(&out, b"in the way").unwrap();
    let (code, lines) = daemon.finish();
    assert_eq!(code, Some(1), "{}", lines.join("\n"));
    let all = lines.join("\n");
    assert!(
        all.contains("pipeline g failed; stopping every pipeline"),
        "{all}"
    );
    // Between the removal and the write the sink may find no directory at all:
    // either way the error names the file and the operating system's reason.
    assert!(
        all.contains("/out/part-")
            && (all.contains("Not a directory") || all.contains("No such file or directory")),
        "{all}"
    );
}

#[test]
fn a_second_sigterm_gives_up_a_drain_that_cannot_finish() {
    let dir = tempfile::tempdir().unwrap();
    let config = tcp_config(dir.path(), "[[pipeline.sink]]\nkind = \"stdout\"\n", 8);
    // stdout is a pipe nobody reads: the drain can never finish.
    let mut daemon = Daemon::start(&config, Stdio::piped());
    let addr = daemon.ready().tcp["t"].clone();
    let header = sample_header();
    let client = std::thread::spawn(move || {
        let mut s = TcpStream::connect(&addr).unwrap();
        let _ = s.write_all(format!("{header}\n").as_bytes());
        let rows: String = rows_for(1).take(200_000).collect();
        let _ = s.write_all(rows.as_bytes());
    });
    daemon.wait_metric("roo_events_in_total", 1_000.0);
    let metrics = daemon.ready().metrics.unwrap();
    daemon.signal(libc::SIGTERM);
    // Draining: /healthz says so (503) while the drain waits on stdout.
    let deadline = Instant::now() + Duration::from_secs(30);
    while http_get(&metrics, "/healthz").0 != 503 {
        assert!(Instant::now() < deadline, "/healthz never said draining");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(http_get(&metrics, "/healthz").1, "draining\n");
    assert!(
        daemon.child.try_wait().unwrap().is_none(),
        "the drain is blocked on stdout"
    );
    daemon.signal(libc::SIGTERM);
    let (code, lines) = daemon.finish();
    assert_eq!(code, Some(130), "{}", lines.join("\n"));
    assert!(lines.iter().any(|l| l.contains("exiting without draining")));
    drop(client);
}
