//! `roo-bench flight`: DoExchange against a `roo serve` process at batch
//! sizes 1 … 65536, from a Rust client (arrow-flight) and from pyarrow, and
//! beside them the per-request baseline a team would build: a Python HTTP
//! server calling XGBoost per request (bench/python/flight_peers.py). Same
//! model file (the bundled fraud model), same rows, same run.
//!
//! Each client writes one batch and reads its reply before the next (one
//! stream, lock-step), so a round trip is what one caller waits;
//! throughput is rows over wall time. Server CPU per row is the serving
//! process's own CPU time (utime + stime) over the rows it scored.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use arrow_array::RecordBatch;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::{FlightClient, FlightDescriptor};
use futures::StreamExt;
use hdrhistogram::Histogram;
use roo_scheduler::generator::CardGenerator;

use crate::daemon::Daemon;
use crate::report::{Latency, Measurement, Section};

const SIZES: [usize; 4] = [1, 64, 1024, 65536];

struct Measured {
    rows: f64,
    seconds: f64,
    rows_per_s: f64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    cpu_ns_per_row: Option<f64>,
    peak_rss_mib: Option<f64>,
}

/// Lock-step DoExchange of `batch` for `seconds` on the descriptor `path`.
pub(crate) async fn exchange(
    client: &mut FlightClient,
    path: &[&str],
    batch: &RecordBatch,
    seconds: f64,
) -> Result<(u64, Duration, Histogram<u64>)> {
    let (tx, rx) = tokio::sync::mpsc::channel::<RecordBatch>(1);
    let path = path.iter().map(|p| p.to_string()).collect();
    let input = FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(FlightDescriptor::new_path(path)))
        .with_max_flight_data_size(usize::MAX)
        .build(tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok));
    let mut replies = client.do_exchange(input).await?;
    let rows = batch.num_rows();
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut one = async |record: bool| -> Result<()> {
        let t = Instant::now();
        tx.send(batch.clone())
            .await
            .ok()
            .context("the exchange closed")?;
        let mut got = 0;
        while got < rows {
            got += replies
                .next()
                .await
                .context("the reply stream ended")??
                .num_rows();
        }
        if record {
            histogram.record((t.elapsed().as_micros() as u64).max(1))?;
        }
        Ok(())
    };
    for _ in 0..3 {
        one(false).await?;
    }
    let started = Instant::now();
    let mut batches = 0u64;
    while started.elapsed().as_secs_f64() < seconds || batches < 3 {
        one(true).await?;
        batches += 1;
    }
    let elapsed = started.elapsed();
    drop(tx);
    Ok((batches * rows as u64, elapsed, histogram))
}

pub fn run(seconds: f64, python: &str, cache: &Path) -> Result<Section> {
    crate::report::step("flight: starting roo");
    let dir = cache.join("flight");
    std::fs::create_dir_all(&dir)?;
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/fraud/model.json");
    let model = model.canonicalize().context("the bundled model")?;
    let rows = CardGenerator::new(11).batch(65536);
    let rows_path = dir.join("rows.arrow");
    {
        let mut w = arrow_ipc::writer::FileWriter::try_new(
            std::fs::File::create(&rows_path)?,
            &rows.schema(),
        )?;
        w.write(&rows)?;
        w.finish()?;
    }
    let config = dir.join("roo.toml");
    std::fs::write(
        &config,
        format!(
            "[flight]\nlisten = \"127.0.0.1:0\"\n\n[[pipeline]]\nname = \"score\"\nmodel = \"{}\"\ndevice = \"cpu\"\n[pipeline.source]\nkind = \"flight\"\ncolumns = [\"txn_id:int64\", {}]\n",
            model.display(),
            roo_scheduler::generator::CARD_FEATURES
                .iter()
                .map(|f| format!("\"{f}\""))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    )?;
    let mut daemon = Daemon::start(&config)?;
    let addr = daemon
        .ready()?
        .flight
        .context("the daemon's Flight address")?;
    say!(
        "# Flight DoExchange, the bundled fraud model (XGBoost, 40 trees, depth 5), card rows\n\
         # roo serve as its own process ({} cores here); lock-step: one batch out, its reply back, {seconds} s per size\n",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut rust = Vec::new();
    runtime.block_on(async {
        let channel = tonic::transport::Endpoint::new(format!("http://{addr}"))?
            .connect()
            .await?;
        let inner = FlightServiceClient::new(channel)
            .max_decoding_message_size(256 << 20)
            .max_encoding_message_size(256 << 20);
        let mut client = FlightClient::new_from_inner(inner);
        for size in SIZES {
            crate::report::step(&format!("flight: Rust client, batch {size}"));
            let batch = rows.slice(0, size);
            let cpu0 = daemon.cpu_s()?;
            let (n, elapsed, h) = exchange(&mut client, &["score"], &batch, seconds).await?;
            let cpu = daemon.cpu_s()? - cpu0;
            rust.push(Measured {
                rows: n as f64,
                seconds: elapsed.as_secs_f64(),
                rows_per_s: n as f64 / elapsed.as_secs_f64(),
                p50_us: h.value_at_quantile(0.5) as f64,
                p99_us: h.value_at_quantile(0.99) as f64,
                p999_us: h.value_at_quantile(0.999) as f64,
                cpu_ns_per_row: Some(cpu * 1e9 / n as f64),
                peak_rss_mib: None,
            });
        }
        anyhow::Ok(())
    })?;
    crate::report::step("flight: pyarrow client and the HTTP + XGBoost baseline");
    let sizes: Vec<String> = SIZES.iter().map(|s| s.to_string()).collect();
    let mut args = vec![
        rows_path.to_str().context("path")?.to_string(),
        model.to_str().context("path")?.to_string(),
        format!("grpc://{addr}"),
        seconds.to_string(),
        daemon.pid().to_string(),
    ];
    args.extend(sizes);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let peers = crate::run_script(python, "flight_peers.py", &args);
    let roo_rss = daemon.peak_rss_mib().ok();
    daemon.stop()?;
    let peers = peers?;
    for m in &mut rust {
        m.peak_rss_mib = roo_rss;
    }
    let mut table: Vec<(String, usize, Measured)> = SIZES
        .iter()
        .zip(rust)
        .map(|(s, m)| ("Rust arrow-flight → roo".to_string(), *s, m))
        .collect();
    for line in peers.lines().filter(|l| l.starts_with('{')) {
        let v: serde_json::Value = serde_json::from_str(line)?;
        let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
        let peer = v["peer"].as_str().unwrap_or("?").to_string();
        table.push((
            peer.clone(),
            v["size"].as_u64().unwrap_or(0) as usize,
            Measured {
                rows: f("rows"),
                seconds: f("seconds"),
                rows_per_s: f("rows_per_s"),
                p50_us: f("p50_us"),
                p99_us: f("p99_us"),
                p999_us: f("p999_us"),
                cpu_ns_per_row: v["server_cpu_ns_per_row"].as_f64(),
                peak_rss_mib: if peer.contains("roo") {
                    roo_rss
                } else {
                    v["server_peak_rss_mib"].as_f64()
                },
            },
        ));
    }
    say!("| client → server | batch rows | rows/s | round trip p50 | p99 | p999 | server CPU-ns/row |");
    say!("|---|---:|---:|---:|---:|---:|---:|");
    let ms = |us: f64| {
        if us >= 1000.0 {
            format!("{:.2} ms", us / 1000.0)
        } else {
            format!("{us:.0} µs")
        }
    };
    for (peer, size, m) in &table {
        say!(
            "| {peer} | {size} | {:.0} | {} | {} | {} | {} |",
            m.rows_per_s,
            ms(m.p50_us),
            ms(m.p99_us),
            ms(m.p999_us),
            m.cpu_ns_per_row
                .map_or("—".to_string(), |c| format!("{c:.0}"))
        );
    }
    say!("");
    for size in SIZES {
        let find = |p: &str| {
            table
                .iter()
                .find(|(peer, s, _)| peer.starts_with(p) && *s == size)
                .map(|(_, _, m)| m)
        };
        if let (Some(r), Some(h)) = (find("Rust"), find("HTTP")) {
            let cpu = match (r.cpu_ns_per_row, h.cpu_ns_per_row) {
                (Some(a), Some(b)) => format!(", server CPU per row {:.1}x less", b / a),
                _ => String::new(),
            };
            say!(
                "batch {size:>5}: roo/HTTP baseline throughput {:.1}x, p50 round trip {:.1}x shorter{cpu}",
                r.rows_per_s / h.rows_per_s,
                h.p50_us / r.p50_us
            );
        }
    }
    let mut section = Section::new(
        "flight",
        "Arrow Flight DoExchange: roo serving clients, beside a Python HTTP server calling XGBoost",
    );
    section.note(format!(
        "The bundled fraud model; `roo serve` as its own process with one Flight pipeline; each client keeps one \
         stream and goes lock-step (a batch out, its reply back), {seconds} s per batch size; client, server and \
         baseline on the same machine over loopback."
    ));
    section.note(
        "Latency: the client's round trip for one batch. CPU: the serving process's own (roo's, or the Python HTTP \
         server's) over the rows it scored. Peak RSS: the serving process's.",
    );
    for (peer, size, m) in &table {
        let name = |p: &str| format!("{p}, batch {size}");
        let latency = Latency {
            p50_ms: m.p50_us / 1e3,
            p99_ms: m.p99_us / 1e3,
            p999_ms: m.p999_us / 1e3,
        };
        let cpu = m.cpu_ns_per_row.map(|ns| ns * m.rows / 1e9);
        let measurement = if peer.contains("roo") {
            let client = if peer.starts_with("Rust") {
                "Rust arrow-flight client"
            } else {
                "pyarrow client"
            };
            Measurement::roo(name(&format!("roo, {client}")), m.rows, m.seconds, cpu)
        } else {
            Measurement::peer(
                name(peer),
                "Python http.server + XGBoost",
                m.rows,
                m.seconds,
                cpu,
            )
            .against(&name("roo, Rust arrow-flight client"))
        };
        section.push(measurement.latency(latency).rss(m.peak_rss_mib));
    }
    section.detail = crate::report::take_lines();
    Ok(section)
}
