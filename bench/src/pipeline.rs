//! `roo-bench pipeline`: the daemon end to end, as a separate process:
//! file → score → file, and TCP → score → file at full speed and at 50% and
//! 80% of it, with the bundled model. Events/s, CPU-ns per event (the roo
//! process's own CPU time over events) and latency from ingest to sink
//! (the daemon's end-to-end histogram). With `--python`, the pipelines a
//! team would build in Python instead run on the same events and model
//! (`python/pipeline_peers.py`): a batch job (pyarrow.csv → XGBoost →
//! Parquet) and a socket reader scoring micro-batches, and the CPU per
//! event and its cost per billion events are compared.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use roo_scheduler::generator::{CardGenerator, CARD_FEATURES};

fn roo_binary() -> Result<PathBuf> {
    let path = std::env::current_exe()?.with_file_name("roo");
    if !path.exists() {
        bail!(
            "{} not found; build it first: cargo build --release -p roo-appliance",
            path.display()
        );
    }
    Ok(path)
}

/// `v` as zero-padded decimal digits filling `out` (no allocation: the
/// sender stamps every row this way).
fn write_digits(out: &mut [u8], mut v: u64) {
    for d in out.iter_mut().rev() {
        *d = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

fn epoch_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Card transactions as CSV: a header, then `rows` rows.
fn card_csv(rows: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(rows * 260);
    out.extend_from_slice(b"txn_id,");
    out.extend_from_slice(CARD_FEATURES.join(",").as_bytes());
    out.push(b'\n');
    let mut generator = CardGenerator::new(7);
    let mut done = 0;
    while done < rows {
        let n = (rows - done).min(65536);
        let batch = generator.batch(n);
        let ids = batch
            .column(0)
            .as_any()
            .downcast_ref::<arrow_array::Int64Array>()
            .expect("ids");
        let columns: Vec<&arrow_array::Float32Array> = (1..batch.num_columns())
            .map(|j| batch.column(j).as_any().downcast_ref().expect("f32"))
            .collect();
        for i in 0..n {
            write!(out, "{}", ids.value(i)).expect("vec");
            for c in &columns {
                let v = c.value(i);
                if v.is_nan() {
                    out.push(b',');
                } else {
                    write!(out, ",{v}").expect("vec");
                }
            }
            out.push(b'\n');
        }
        done += n;
    }
    out
}

pub(crate) struct Daemon {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Daemon {
    pub(crate) fn start(config: &Path) -> Result<Self> {
        let mut child = Command::new(roo_binary()?)
            .args(["serve", "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr = child.stderr.take().context("stderr")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Ok(Self { child, lines })
    }

    pub(crate) fn wait_for(&self, needle: &str) -> Result<String> {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(60))
                .context("daemon silent")?;
            if line.contains(needle) {
                return Ok(line);
            }
        }
    }

    /// CPU seconds used so far (utime + stime from /proc).
    pub(crate) fn cpu_s(&self) -> Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))?;
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .context("stat")?
            .split_whitespace()
            .collect();
        let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
        // SAFETY: sysconf with a valid name.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        Ok(ticks as f64 / hz)
    }

    /// The process's peak resident set so far, in MiB (VmHWM).
    pub(crate) fn peak_rss_mib(&self) -> Result<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let kib: f64 = status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .context("VmHWM")?
            .parse()?;
        Ok(kib / 1024.0)
    }

    pub(crate) fn stop(mut self) -> Result<()> {
        // SAFETY: kill(2) on our child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait()?;
        if !status.success() {
            bail!("the daemon exited with {status}");
        }
        Ok(())
    }
}

fn metrics_text(addr: &str) -> Result<String> {
    let mut s = TcpStream::connect(addr)?;
    write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    Ok(text)
}

fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn write_config(
    dir: &Path,
    model: &Path,
    source: &str,
    extra_server: &str,
    extra_pipeline: &str,
    sink: &str,
) -> Result<PathBuf> {
    let config = dir.join("roo.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nmemory_mb = 256\n{extra_server}\n[[pipeline]]\nname = \"bench\"\nmodel = {model:?}\nmax_rows = 4096\nlinger_ms = 2\n{extra_pipeline}\n\
             [pipeline.source]\n{source}\n\n[[pipeline.sink]]\nkind = \"files\"\ndir = \"out\"\nformat = \"{sink}\"\nrotate_mb = 256\nrotate_secs = 30\n"
        ),
    )?;
    let _ = std::fs::remove_dir_all(dir.join("out"));
    Ok(config)
}

struct TcpPhase {
    offered: Option<f64>,
    events_per_s: f64,
    cpu_ns_per_event: f64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    /// From each event's place in the send schedule to the sink: p50, p99,
    /// p999 in ms. Coordinated omission corrected: an event the daemon was
    /// too busy to read counts its wait from when it was due.
    scheduled_ms: [f64; 3],
    peak_rss_mib: f64,
    /// p99 of each stage: queue wait, score (per row, µs), sink write.
    stages_ms: [f64; 3],
}

/// Sends the CSV body over `connections` connections, flat out or paced
/// at `rate` rows/s (open loop: a schedule, not a reply, decides when the
/// next rows go), for `seconds`.
fn tcp_phase(
    dir: &Path,
    model: &Path,
    sink: &str,
    body: &[u8],
    header: &[u8],
    rate: Option<f64>,
    seconds: f64,
) -> Result<TcpPhase> {
    let columns: Vec<String> = ["\"sent_us:int64\"", "\"txn_id:int64\""]
        .into_iter()
        .map(str::to_string)
        .chain(CARD_FEATURES.iter().map(|f| format!("{f:?}")))
        .collect();
    let source = format!(
        "kind = \"tcp\"\nlisten = \"127.0.0.1:0\"\nformat = \"csv\"\ncolumns = [{}]",
        columns.join(", ")
    );
    let config = write_config(
        dir,
        model,
        &source,
        "metrics = \"127.0.0.1:0\"",
        "event_time = \"sent_us\"",
        sink,
    )?;
    let daemon = Daemon::start(&config)?;
    let addr = daemon
        .wait_for("listening on tcp://")?
        .rsplit("tcp://")
        .next()
        .context("addr")?
        .trim()
        .to_string();
    let metrics = daemon.wait_for("metrics on http://")?;
    let metrics = metrics
        .rsplit("http://")
        .next()
        .context("addr")?
        .trim()
        .trim_end_matches("/metrics")
        .to_string();
    // Rows cut at line ends, in chunks of about 1 ms of the offered rate.
    let lines: Vec<usize> = body
        .iter()
        .enumerate()
        .filter(|(_, &c)| c == b'\n')
        .map(|(i, _)| i + 1)
        .collect();
    let rows_per_chunk = rate.map_or(2048, |r| ((r / 1000.0).ceil() as usize).max(1));
    let mut s = TcpStream::connect(&addr)?;
    s.set_nodelay(true)?;
    s.write_all(header)?;
    let started = Instant::now();
    let start_us = epoch_us();
    let mut chunk = Vec::new();
    let cpu0 = daemon.cpu_s()?;
    let out0 = metric(&metrics_text(&metrics)?, "roo_events_out_total");
    let mut sent = 0usize;
    let mut line = 0usize;
    while started.elapsed().as_secs_f64() < seconds {
        if let Some(r) = rate {
            let due = started + Duration::from_secs_f64(sent as f64 / r);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        let from = if line == 0 { 0 } else { lines[line - 1] };
        let to_line = (line + rows_per_chunk).min(lines.len());
        // Each row's `sent_us` is when the schedule says it is due (flat
        // out: now), so the daemon's event_to_sink latency runs from there.
        chunk.clear();
        chunk.extend_from_slice(&body[from..lines[to_line - 1]]);
        let now_us = epoch_us();
        let mut at = 0;
        for k in 0..to_line - line {
            let due = match rate {
                Some(r) => start_us + ((sent + k) as f64 / r * 1e6) as u64,
                None => now_us,
            };
            write_digits(&mut chunk[at..at + 16], due);
            at += lines[line + k]
                - if line + k == 0 {
                    0
                } else {
                    lines[line + k - 1]
                };
        }
        s.write_all(&chunk)?;
        sent += to_line - line;
        line = if to_line == lines.len() { 0 } else { to_line };
    }
    // Let the pipeline finish what was sent, then read the figures.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut text = metrics_text(&metrics)?;
    while metric(&text, "roo_events_out_total") - out0 < sent as f64 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        text = metrics_text(&metrics)?;
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu = daemon.cpu_s()? - cpu0;
    let out = metric(&text, "roo_events_out_total") - out0;
    let stage_q = |stage: &str, quantile: &str| {
        metric(&text, &format!("roo_latency_seconds{{pipeline=\"bench\",stage=\"{stage}\",quantile=\"{quantile}\"}}")) * 1e3
    };
    let q = |quantile: &str| stage_q("end_to_end", quantile);
    let phase = TcpPhase {
        offered: rate,
        events_per_s: out / wall,
        cpu_ns_per_event: cpu * 1e9 / out.max(1.0),
        p50_ms: q("0.5"),
        p99_ms: q("0.99"),
        p999_ms: q("0.999"),
        scheduled_ms: ["0.5", "0.99", "0.999"].map(|quantile| stage_q("event_to_sink", quantile)),
        peak_rss_mib: daemon.peak_rss_mib()?,
        stages_ms: ["wait", "score", "sink"].map(|stage| {
            metric(
                &text,
                &format!(
                    "roo_latency_seconds{{pipeline=\"bench\",stage=\"{stage}\",quantile=\"0.99\"}}"
                ),
            ) * 1e3
        }),
    };
    drop(s);
    daemon.stop()?;
    Ok(phase)
}

/// What a Python peer reported.
struct PeerRun {
    rows: f64,
    wall_s: f64,
    cpu_s: f64,
    p50_s: Option<f64>,
    p99_s: Option<f64>,
    p999_s: Option<f64>,
}

fn peer_run(json: &str) -> Result<PeerRun> {
    let v: serde_json::Value =
        serde_json::from_str(json.trim()).with_context(|| format!("a peer's report: {json}"))?;
    let f = |k: &str| v[k].as_f64();
    Ok(PeerRun {
        rows: f("rows").context("rows")?,
        wall_s: f("wall_s").context("wall_s")?,
        cpu_s: f("cpu_s").context("cpu_s")?,
        p50_s: f("p50_s"),
        p99_s: f("p99_s"),
        p999_s: f("p999_s"),
    })
}

/// The Python socket reader (`parse`: pyarrow or lines) fed the CSV body
/// flat out for `seconds` over one connection; its own reads pace the
/// sender (TCP flow control).
fn python_stream(
    python: &str,
    model: &Path,
    dir: &Path,
    header: &[u8],
    body: &[u8],
    parse: &str,
    seconds: f64,
) -> Result<PeerRun> {
    let out = dir.join("peer-out");
    let mut child = Command::new(python)
        .arg(crate::script("pipeline_peers.py"))
        .args([
            "stream",
            "--parse",
            parse,
            "--max-rows",
            "4096",
            "--linger-ms",
            "2",
            "--model",
        ])
        .arg(model)
        .arg("--out")
        .arg(&out)
        .env("OMP_NUM_THREADS", "1")
        .env("OPENBLAS_NUM_THREADS", "1")
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {python} pipeline_peers.py"))?;
    let mut stdout = BufReader::new(child.stdout.take().context("stdout")?);
    let mut line = String::new();
    stdout.read_line(&mut line)?;
    let port = line
        .strip_prefix("listening ")
        .context("the Python stream did not start")?
        .trim()
        .to_string();
    let mut s = TcpStream::connect(format!("127.0.0.1:{port}"))?;
    s.write_all(header)?;
    let started = Instant::now();
    while started.elapsed().as_secs_f64() < seconds {
        // Whole lines: the body ends with one.
        for chunk in body.chunks(1 << 20) {
            s.write_all(chunk)?;
            if started.elapsed().as_secs_f64() >= seconds {
                break;
            }
        }
    }
    drop(s);
    let mut report = String::new();
    stdout.read_to_string(&mut report)?;
    let status = child.wait()?;
    if !status.success() {
        bail!("the Python stream ({parse}) failed: {status}");
    }
    let _ = std::fs::remove_dir_all(&out);
    peer_run(&report)
}

pub fn run(
    rows: usize,
    seconds: f64,
    sink: &str,
    cache: &Path,
    python: Option<&str>,
    dollars_per_core_hour: f64,
) -> Result<()> {
    let model = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/fraud/model.json")
        .canonicalize()?;
    let dir = cache.join("pipeline");
    std::fs::create_dir_all(&dir)?;
    let csv = card_csv(rows);
    let header_end = csv.iter().position(|&c| c == b'\n').context("header")? + 1;
    let input = dir.join("cards.csv");
    std::fs::write(&input, &csv)?;
    println!(
        "pipeline: the bundled model (XGBoost, 40 trees, depth 5), {rows} card transactions ({:.0} MB of CSV), \
         roo serve as its own process, batches of up to 4096 rows, linger 2 ms, {sink} file sink",
        csv.len() as f64 / 1e6
    );

    // File → score → file: the daemon exits when the file is done.
    let input = input.canonicalize()?;
    let config = write_config(
        &dir,
        &model,
        &format!("kind = \"file\"\npath = {input:?}"),
        "",
        "",
        sink,
    )?;
    let started = Instant::now();
    let mut child = Command::new(roo_binary()?)
        .args(["serve", "--config"])
        .arg(&config)
        .stderr(Stdio::null())
        .spawn()?;
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 on our child, writing its status and rusage.
    unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    let _ = child.try_wait();
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        bail!("roo serve on the file pipeline failed (status {status}); run it by hand: roo serve --config {}", config.display());
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu = usage.ru_utime.tv_sec as f64
        + usage.ru_utime.tv_usec as f64 / 1e6
        + usage.ru_stime.tv_sec as f64
        + usage.ru_stime.tv_usec as f64 / 1e6;
    println!(
        "  file -> score -> file   {:>10.0} events/s  {:>7.0} CPU-ns/event  peak RSS {:.0} MiB  ({rows} rows in {wall:.2} s wall, {cpu:.2} s CPU, process start to exit)",
        rows as f64 / wall,
        cpu * 1e9 / rows as f64,
        usage.ru_maxrss as f64 / 1024.0
    );
    let roo_file_ns = cpu * 1e9 / rows as f64;

    let body = &csv[header_end..];
    let header = &csv[..header_end];
    // roo's TCP rows lead with `sent_us`, 16 digits the sender stamps with
    // each row's due time (the pipeline's event_time).
    let mut tcp_header = b"sent_us,".to_vec();
    tcp_header.extend_from_slice(header);
    let mut tcp_body = Vec::with_capacity(body.len() + 17 * rows);
    for line in body.split_inclusive(|&c| c == b'\n') {
        tcp_body.extend_from_slice(b"0000000000000000,");
        tcp_body.extend_from_slice(line);
    }
    let peak = tcp_phase(&dir, &model, sink, &tcp_body, &tcp_header, None, seconds)?;
    let mut phases = vec![peak];
    for share in [0.5, 0.8] {
        let rate = phases[0].events_per_s * share;
        phases.push(tcp_phase(
            &dir,
            &model,
            sink,
            &tcp_body,
            &tcp_header,
            Some(rate),
            seconds,
        )?);
    }
    println!(
        "  {:<24} {:>12} {:>12} {:>13} {:>8} {:>8} {:>8} | {:>8} {:>8} {:>8} | {:>8}   p99 of: queue wait / score per row / sink write",
        "tcp -> score -> file",
        "offered/s",
        "events/s",
        "CPU-ns/event",
        "p50 ms",
        "p99 ms",
        "p999 ms",
        "sch p50",
        "sch p99",
        "sch p999",
        "peak RSS"
    );
    for (name, p) in ["flat out (peak)", "50% of peak", "80% of peak"]
        .iter()
        .zip(&phases)
    {
        println!(
            "  {name:<24} {:>12} {:>12.0} {:>13.0} {:>8.2} {:>8.2} {:>8.2} | {:>8.2} {:>8.2} {:>8.2} | {:>4.0} MiB   {:.2} ms / {:.3} ms / {:.2} ms",
            p.offered.map_or("-".to_string(), |r| format!("{r:.0}")),
            p.events_per_s,
            p.cpu_ns_per_event,
            p.p50_ms,
            p.p99_ms,
            p.p999_ms,
            p.scheduled_ms[0],
            p.scheduled_ms[1],
            p.scheduled_ms[2],
            p.peak_rss_mib,
            p.stages_ms[0],
            p.stages_ms[1],
            p.stages_ms[2]
        );
    }
    println!("  p50/p99/p999: from the batch's oldest event read off the socket to its rows written to the sink (the daemon's histogram)");
    println!("  sch: from each event's due time in the sender's schedule to the sink (event_time; coordinated omission corrected; flat out: from its write)");
    let Some(python) = python else {
        println!("  (no --python: the Python peers were not run)");
        return Ok(());
    };
    // The same events and model through the pipelines a team would write.
    let out = crate::run_script(
        python,
        "pipeline_peers.py",
        &[
            "batch",
            "--model",
            model.to_str().context("model path")?,
            "--input",
            input.to_str().context("input path")?,
            "--output",
            dir.join("peer.parquet").to_str().context("dir")?,
        ],
    )?;
    let batch = peer_run(&out)?;
    let _ = std::fs::remove_file(dir.join("peer.parquet"));
    let streams = [
        ("pyarrow", "Python stream, pyarrow.csv per micro-batch"),
        ("lines", "Python stream, parsed line by line"),
    ]
    .iter()
    .map(|(parse, name)| {
        Ok((
            *name,
            python_stream(python, &model, &dir, header, body, parse, seconds)?,
        ))
    })
    .collect::<Result<Vec<_>>>()?;
    let roo_tcp_ns = phases[0].cpu_ns_per_event;
    let per_billion = |ns: f64| ns / 3600.0 * dollars_per_core_hour;
    println!(
        "  peers on the same events and model, one thread each (CPU from the peer's own getrusage, after imports); \
         cost per billion events at ${dollars_per_core_hour}/core-hour"
    );
    println!(
        "  {:<44} {:>12} {:>13} {:>9} {:>9} {:>9} {:>10}  roo uses",
        "pipeline", "events/s", "CPU-ns/event", "p50 ms", "p99 ms", "p999 ms", "$/billion",
    );
    let row = |name: &str, events_s: f64, ns: f64, q: [Option<f64>; 3], roo_ns: Option<f64>| {
        let ms = |v: Option<f64>| v.map_or("-".to_string(), |s| format!("{:.2}", s * 1e3));
        println!(
            "  {name:<44} {events_s:>12.0} {ns:>13.0} {:>9} {:>9} {:>9} {:>10.3}  {}",
            ms(q[0]),
            ms(q[1]),
            ms(q[2]),
            per_billion(ns),
            roo_ns.map_or(String::new(), |r| format!(
                "1/{:.1} of its CPU per event",
                ns / r
            ))
        );
    };
    row(
        "roo, file -> score -> file",
        rows as f64 / wall,
        roo_file_ns,
        [None; 3],
        None,
    );
    let p = &phases[0];
    row(
        "roo, tcp -> score -> file (peak)",
        p.events_per_s,
        roo_tcp_ns,
        [
            Some(p.p50_ms / 1e3),
            Some(p.p99_ms / 1e3),
            Some(p.p999_ms / 1e3),
        ],
        None,
    );
    row(
        "Python batch: pyarrow.csv -> XGBoost -> Parquet",
        batch.rows / batch.wall_s,
        batch.cpu_s * 1e9 / batch.rows,
        [None; 3],
        Some(roo_file_ns),
    );
    for (name, r) in &streams {
        row(
            name,
            r.rows / r.wall_s,
            r.cpu_s * 1e9 / r.rows,
            [r.p50_s, r.p99_s, r.p999_s],
            Some(roo_tcp_ns),
        );
    }
    println!("  roo uses: the peer's CPU per event over roo's (the batch job against roo's file pipeline, streams against roo's TCP peak)");
    Ok(())
}
