//! `roo-bench pipeline`: the daemon end to end, as a separate process:
//! file → score → file (also pinned to one core, then two, for scaling),
//! and TCP → score → file flat out and at offered loads below it, with the
//! bundled model. Events/s, CPU-ns per event (the roo process's own CPU
//! time over events, and by thread), peak RSS, and latency from each
//! event's due time in the send schedule to the sink. Unless told not to,
//! the pipelines a team would build in Python instead run on the same
//! events and model (`python/pipeline_peers.py`): a batch job (pyarrow.csv
//! → XGBoost → Parquet) and socket readers scoring micro-batches.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use roo_scheduler::generator::{CardGenerator, CARD_FEATURES};

use crate::daemon::{metric, metrics_text, roo_binary, Daemon, ThreadCpu};

/// The file pipeline without and with the audit log, run side by side.
pub const AUDIT_OFF: &str = "roo, file -> score -> file, audit off";
pub const AUDIT_ON: &str = "roo, file -> score -> file, audit on";
use crate::report::{
    Latency, Measurement, Section, FILE_ONE_CORE, FILE_TWO_CORES, FILE_TWO_CORES_READER, PY_BATCH,
    PY_STREAM, PY_STREAM_LINES, TCP_PEAK,
};

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
            "[server]\nmemory_mb = 256\n{extra_server}\n[[pipeline]]\nname = \"bench\"\nmodel = {model:?}\ndevice = \"cpu\"\nmax_rows = 4096\nlinger_ms = 2\n{extra_pipeline}\n\
             [pipeline.source]\n{source}\n\n[[pipeline.sink]]\nkind = \"files\"\ndir = \"out\"\nformat = \"{sink}\"\nrotate_mb = 256\nrotate_secs = 30\n"
        ),
    )?;
    let _ = std::fs::remove_dir_all(dir.join("out"));
    Ok(config)
}

struct TcpPhase {
    offered: Option<f64>,
    /// The daemon's CPU by thread role over the phase.
    threads: ThreadCpu,
    wall_s: f64,
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

/// The CSV a TCP phase sends: each row leads with 16 digits for its
/// `sent_us`, which the sender stamps.
struct Rows<'a> {
    header: &'a [u8],
    body: &'a [u8],
    /// Where each row ends in `body`.
    ends: &'a [usize],
}

/// Sends the rows over one connection, flat out or paced at `rate` rows/s
/// (open loop: a schedule, not a reply, decides when the next rows go),
/// for `seconds`.
fn tcp_phase(
    dir: &Path,
    model: &Path,
    sink: &str,
    rows: &Rows,
    rate: Option<f64>,
    seconds: f64,
    parse_on_reader: bool,
) -> Result<TcpPhase> {
    let Rows {
        header,
        body,
        ends: lines,
    } = *rows;
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
        if parse_on_reader {
            "event_time = \"sent_us\"\nparse_in_pieces = false"
        } else {
            "event_time = \"sent_us\""
        },
        sink,
    )?;
    let mut daemon = Daemon::start(&config)?;
    let ready = daemon.ready()?;
    let addr = ready.tcp.context("the daemon's TCP address")?;
    let metrics = ready.metrics.context("the daemon's metrics address")?;
    // Rows cut at line ends, in chunks of about 1 ms of the offered rate.
    let rows_per_chunk = rate.map_or(2048, |r| ((r / 1000.0).ceil() as usize).max(1));
    let mut s = TcpStream::connect(&addr)?;
    s.set_nodelay(true)?;
    s.write_all(header)?;
    let started = Instant::now();
    let start_us = epoch_us();
    let mut chunk = Vec::new();
    let cpu0 = daemon.cpu_s()?;
    let threads0 = ThreadCpu::read(daemon.pid()).unwrap_or_default();
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
    let text = wait_for_out(&metrics, out0 + sent as f64)?;
    let wall = started.elapsed().as_secs_f64();
    let cpu = daemon.cpu_s()? - cpu0;
    let threads = ThreadCpu::read(daemon.pid())
        .unwrap_or_default()
        .since(&threads0);
    let out = metric(&text, "roo_events_out_total") - out0;
    let stage_q = |stage: &str, quantile: &str| {
        metric(&text, &format!("roo_latency_quantile_seconds{{pipeline=\"bench\",stage=\"{stage}\",quantile=\"{quantile}\"}}")) * 1e3
    };
    let q = |quantile: &str| stage_q("end_to_end", quantile);
    let phase = TcpPhase {
        offered: rate,
        threads,
        wall_s: wall,
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
                    "roo_latency_quantile_seconds{{pipeline=\"bench\",stage=\"{stage}\",quantile=\"0.99\"}}"
                ),
            ) * 1e3
        }),
    };
    drop(s);
    daemon.stop()?;
    Ok(phase)
}

/// The same events as Arrow IPC over TCP (a stream of 1,024-row batches,
/// the shape Flight and Kafka clients send), flat out for `seconds`: the
/// daemon's CPU per event when nothing needs parsing. Returns events/s and
/// CPU-ns per event.
fn arrow_phase(
    dir: &Path,
    model: &Path,
    sink: &str,
    input: &Path,
    seconds: f64,
) -> Result<(f64, f64)> {
    let mut source = roo_ingest::FileSource::open(input, roo_ingest::FileFormat::Csv)?;
    let features: Vec<usize> = CARD_FEATURES
        .iter()
        .map(|f| source.schema().index_of(f))
        .collect::<Result<_, _>>()?;
    source.parse_as_f32(&features);
    let schema = source.schema();
    let batches: Vec<arrow_array::RecordBatch> = source
        .batches(1024)?
        .map(|b| b.map(|b| b.batch))
        .collect::<Result<_, _>>()?;
    let columns: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            arrow_schema::DataType::Int64 => format!("\"{}:int64\"", f.name()),
            _ => format!("{:?}", f.name()),
        })
        .collect();
    let config = write_config(
        dir,
        model,
        &format!(
            "kind = \"tcp\"\nlisten = \"127.0.0.1:0\"\nformat = \"arrow\"\ncolumns = [{}]",
            columns.join(", ")
        ),
        "metrics = \"127.0.0.1:0\"",
        "",
        sink,
    )?;
    let mut daemon = Daemon::start(&config)?;
    let ready = daemon.ready()?;
    let addr = ready.tcp.context("the daemon's TCP address")?;
    let metrics = ready.metrics.context("the daemon's metrics address")?;
    let stream = TcpStream::connect(&addr)?;
    stream.set_nodelay(true)?;
    let mut writer = arrow_ipc::writer::StreamWriter::try_new(
        std::io::BufWriter::with_capacity(1 << 20, stream),
        &batches[0].schema(),
    )?;
    let cpu0 = daemon.cpu_s()?;
    let out0 = metric(&metrics_text(&metrics)?, "roo_events_out_total");
    let started = Instant::now();
    let mut sent = 0usize;
    'send: loop {
        for b in &batches {
            writer.write(b)?;
            sent += b.num_rows();
            if started.elapsed().as_secs_f64() >= seconds {
                break 'send;
            }
        }
    }
    writer.flush()?;
    let text = wait_for_out(&metrics, out0 + sent as f64)?;
    let wall = started.elapsed().as_secs_f64();
    let cpu = daemon.cpu_s()? - cpu0;
    let out = metric(&text, "roo_events_out_total") - out0;
    let events_in = metric(&text, "roo_events_in_total");
    anyhow::ensure!(
        out >= sent as f64,
        "the daemon wrote {out} of {sent} events ({events_in} in) within 30 s"
    );
    drop(writer);
    daemon.stop()?;
    Ok((out / wall, cpu * 1e9 / out.max(1.0)))
}

/// Waits (30 s at most) until the daemon has written `events` events in
/// all; returns its metrics text then.
fn wait_for_out(metrics: &str, events: f64) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut text = metrics_text(metrics)?;
    while metric(&text, "roo_events_out_total") < events && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        text = metrics_text(metrics)?;
    }
    Ok(text)
}

/// The Arrow-in phase's row.
pub const ARROW_TCP: &str = "roo, Arrow IPC over TCP -> score -> file, flat out";

/// What a Python peer reported.
struct PeerRun {
    rows: f64,
    wall_s: f64,
    cpu_s: f64,
    p50_s: Option<f64>,
    p99_s: Option<f64>,
    p999_s: Option<f64>,
    peak_rss_mib: Option<f64>,
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
        peak_rss_mib: f("peak_rss_mib"),
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

pub struct Options {
    pub rows: usize,
    /// TCP phases with each connection parsed on the source's thread.
    pub parse_on_reader: bool,
    /// Seconds per TCP phase.
    pub seconds: f64,
    /// Offered loads as shares of the flat-out rate.
    pub loads: Vec<f64>,
    /// The file sink's format for the file pipeline (the Python batch job
    /// writes Parquet) and for the TCP stream (the Python streams write
    /// Arrow IPC).
    pub file_sink: String,
    pub stream_sink: String,
    /// The 1-core / 2-core runs read the events this many times over, so
    /// the daemon's start-up (~0.1 s) weighs little on either.
    pub scaling_copies: usize,
    pub cache: PathBuf,
    /// Python for the peers; `None`: no peers.
    pub python: Option<String>,
    pub dollars_per_core_hour: f64,
}

/// A `roo serve` run over a file, process start to exit.
struct FileRun {
    wall_s: f64,
    cpu_s: f64,
    peak_rss_mib: f64,
    threads: ThreadCpu,
}

/// Runs the daemon over `input` until it exits; with `cores`, pinned to
/// the first `cores` CPUs with that many scoring threads.
fn file_run(
    dir: &Path,
    model: &Path,
    input: &Path,
    sink: &str,
    cores: Option<usize>,
    extra_pipeline: &str,
) -> Result<FileRun> {
    use std::os::unix::process::CommandExt;
    let config = write_config(
        dir,
        model,
        &format!("kind = \"file\"\npath = {input:?}"),
        &cores.map_or(String::new(), |n| format!("threads = {n}")),
        extra_pipeline,
        sink,
    )?;
    let started = Instant::now();
    let mut command = Command::new(roo_binary()?);
    command
        .args(["serve", "--config"])
        .arg(&config)
        .stderr(Stdio::null());
    if let Some(n) = cores {
        // SAFETY: the closure only calls async-signal-safe libc functions
        // on memory it owns.
        unsafe {
            command.pre_exec(move || {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                for cpu in 0..n {
                    libc::CPU_SET(cpu, &mut set);
                }
                if libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut child = command.spawn()?;
    let pid = child.id();
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // Sample the threads' CPU every 20 ms until the daemon exits; each
    // thread's last sample stands for it.
    let mut seen = std::collections::HashMap::new();
    loop {
        // SAFETY: wait4 on our child, writing its status and rusage.
        let done = unsafe { libc::wait4(pid as i32, &mut status, libc::WNOHANG, &mut usage) };
        if done != 0 {
            break;
        }
        ThreadCpu::sample(pid, &mut seen);
        std::thread::sleep(Duration::from_millis(20));
    }
    let threads = ThreadCpu::from_samples(&seen);
    let _ = child.try_wait();
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        bail!(
            "roo serve on the file pipeline failed (status {status}); run it by hand: roo serve --config {}",
            config.display()
        );
    }
    Ok(FileRun {
        wall_s: started.elapsed().as_secs_f64(),
        cpu_s: crate::report::rusage_cpu_s(&usage),
        peak_rss_mib: usage.ru_maxrss as f64 / 1024.0,
        threads,
    })
}

pub fn run(o: &Options) -> Result<Section> {
    let (rows, seconds) = (o.rows, o.seconds);
    let (sink, stream_sink) = (o.file_sink.as_str(), o.stream_sink.as_str());
    let model = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/fraud/model.json")
        .canonicalize()?;
    let dir = o.cache.join("pipeline");
    std::fs::create_dir_all(&dir)?;
    crate::report::step("pipeline: generating card transactions");
    let csv = card_csv(rows);
    let header_end = csv.iter().position(|&c| c == b'\n').context("header")? + 1;
    let input = dir.join("cards.csv");
    std::fs::write(&input, &csv)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    say!(
        "pipeline: the bundled model (XGBoost, 40 trees, depth 5), {rows} card transactions ({:.0} MB of CSV), \
         roo serve as its own process, batches of up to 4096 rows, linger 2 ms, {sink} file sink (file pipeline), \
         {stream_sink} (TCP)",
        csv.len() as f64 / 1e6
    );
    let mut section = Section::new(
        "pipeline",
        "The daemon end to end: file -> score -> file, and a TCP stream at offered loads, beside Python pipelines",
    );
    section.note(format!(
        "The bundled fraud model (XGBoost, 40 trees, depth 5); {rows} synthetic card transactions ({:.0} MB of CSV); \
         `roo serve` as its own process; batches of up to 4096 rows, linger 2 ms; the file pipeline writes {sink} \
         files (as the Python batch job writes Parquet), the TCP stream {stream_sink} files (as the Python streams write \
         Arrow IPC). `device = \"cpu\"` (the GPU has its own scenario). \
         CPU and peak RSS: the daemon process's own (file runs: start to exit, model load included).",
        csv.len() as f64 / 1e6
    ));
    section.note(
        "TCP latency: from each event's due time in the sender's open-loop schedule (its `sent_us` column, the \
         pipeline's `event_time`) to its rows written by the sink, so an event the daemon fell behind on counts its \
         whole wait (coordinated omission corrected); flat out: from its write. Python streams: from a micro-batch's \
         first line read to its rows written (they keep no schedule).",
    );
    section.note(
        "Peers: the same CSV and model file, one thread each (XGBoost nthread 1, pyarrow one CPU), CPU from their own \
         getrusage after imports. The batch job is compared with roo's file pipeline, the streams with roo's TCP stream flat out.",
    );

    // File → score → file: the daemon exits when the file is done.
    crate::report::step("pipeline: file -> score -> file");
    let input = input.canonicalize()?;
    let file = file_run(&dir, &model, &input, sink, None, "")?;
    say!(
        "  file -> score -> file   {:>10.0} events/s  {:>7.0} CPU-ns/event  peak RSS {:.0} MiB  ({rows} rows in {:.2} s wall, {:.2} s CPU, process start to exit)",
        rows as f64 / file.wall_s,
        file.cpu_s * 1e9 / rows as f64,
        file.peak_rss_mib,
        file.wall_s,
        file.cpu_s
    );
    say!(
        "  file -> score -> file, CPU per event by thread (sampled every 20 ms): {}",
        file.threads.per_event(rows as f64)
    );
    let file_name = "roo, file -> score -> file";
    section.push(
        Measurement::roo(file_name, rows as f64, file.wall_s, Some(file.cpu_s))
            .rss(Some(file.peak_rss_mib))
            .threads(file.threads.0.clone()),
    );
    // The audit log's cost: the same file pipeline without and with
    // `[pipeline.audit]`, alternated, the lowest CPU of three runs each
    // (this machine is shared: one run's CPU varies by a fifth).
    crate::report::step("pipeline: file -> score -> file, audit off and on");
    let audit = "\n[pipeline.audit]\ndir = \"audit\"\nid = \"txn_id\"\nretain_days = 0\n";
    let mut best: [Option<FileRun>; 2] = [None, None];
    let mut audit_bytes = 0;
    for _ in 0..3 {
        for (k, extra) in ["", audit].into_iter().enumerate() {
            let _ = std::fs::remove_dir_all(dir.join("audit"));
            let r = file_run(&dir, &model, &input, sink, None, extra)?;
            if k == 1 {
                audit_bytes = crate::audit::dir_bytes(&dir.join("audit").join("records"));
            }
            if best[k].as_ref().is_none_or(|b| r.cpu_s < b.cpu_s) {
                best[k] = Some(r);
            }
        }
    }
    let _ = std::fs::remove_dir_all(dir.join("audit"));
    let [Some(off), Some(on)] = best else {
        unreachable!("three runs of each")
    };
    say!(
        "  audit off / on          {:>7.0} / {:>7.0} CPU-ns/event: audit adds {:+.1}% CPU per event; {:.1} bytes/event on disk \
         (Arrow IPC segments, LZ4, + id index; lowest CPU of 3 alternated runs each)",
        off.cpu_s * 1e9 / rows as f64,
        on.cpu_s * 1e9 / rows as f64,
        (on.cpu_s / off.cpu_s - 1.0) * 100.0,
        audit_bytes as f64 / rows as f64
    );
    for (name, r) in [(AUDIT_OFF, &off), (AUDIT_ON, &on)] {
        section.push(
            Measurement::roo(name, rows as f64, r.wall_s, Some(r.cpu_s))
                .rss(Some(r.peak_rss_mib))
                .threads(r.threads.0.clone()),
        );
    }
    if cores >= 2 {
        // Scaling: pinned to one core with one scoring thread, then to two
        // with two; alternated, best of two each.
        crate::report::step("pipeline: file -> score -> file on 1 core and on 2");
        let copies = o.scaling_copies.max(1);
        let scaling_input = if copies == 1 {
            input.clone()
        } else {
            let path = dir.join("cards-scaling.csv");
            let mut bytes = csv.clone();
            for _ in 1..copies {
                bytes.extend_from_slice(&csv[header_end..]);
            }
            std::fs::write(&path, &bytes)?;
            path.canonicalize()?
        };
        let scaling_rows = rows * copies;
        // The third run: two cores with the file parsed on the reading
        // thread alone, as before parsing in pieces (side by side).
        let mut best: [Option<FileRun>; 3] = [None, None, None];
        let runs = [(1, ""), (2, ""), (2, "parse_in_pieces = false\n")];
        for _ in 0..2 {
            for (k, (n, extra)) in runs.into_iter().enumerate() {
                let r = file_run(&dir, &model, &scaling_input, sink, Some(n), extra)?;
                if best[k].as_ref().is_none_or(|b| r.wall_s < b.wall_s) {
                    best[k] = Some(r);
                }
            }
        }
        let names = [FILE_ONE_CORE, FILE_TWO_CORES, FILE_TWO_CORES_READER];
        for (name, r) in names.iter().zip(&best) {
            let r = r.as_ref().expect("ran");
            say!(
                "  {name:<52} {:>10.0} events/s  {:>7.0} CPU-ns/event  ({scaling_rows} rows, best of 2); by thread: {}",
                scaling_rows as f64 / r.wall_s,
                r.cpu_s * 1e9 / scaling_rows as f64,
                r.threads.per_event(scaling_rows as f64)
            );
            section.push(
                Measurement::roo(*name, scaling_rows as f64, r.wall_s, Some(r.cpu_s))
                    .rss(Some(r.peak_rss_mib))
                    .threads(r.threads.0.clone()),
            );
        }
        if copies > 1 {
            let _ = std::fs::remove_file(&scaling_input);
        }
    }

    let body = &csv[header_end..];
    let header = &csv[..header_end];
    // roo's TCP rows lead with `sent_us`, 16 digits the sender stamps with
    // each row's due time (the pipeline's event_time).
    let mut tcp_header = b"sent_us,".to_vec();
    tcp_header.extend_from_slice(header);
    let mut tcp_body = Vec::with_capacity(body.len() + 17 * rows);
    // Where each row ends in it, for the sender to cut and stamp rows.
    let mut tcp_lines = Vec::with_capacity(rows);
    for line in body.split_inclusive(|&c| c == b'\n') {
        tcp_body.extend_from_slice(b"0000000000000000,");
        tcp_body.extend_from_slice(line);
        tcp_lines.push(tcp_body.len());
    }
    crate::report::step("pipeline: tcp flat out");
    let tcp_rows = Rows {
        header: &tcp_header,
        body: &tcp_body,
        ends: &tcp_lines,
    };
    let on_reader = o.parse_on_reader;
    let peak = tcp_phase(
        &dir,
        &model,
        stream_sink,
        &tcp_rows,
        None,
        seconds,
        on_reader,
    )?;
    let mut phases = vec![("flat out".to_string(), peak)];
    for &share in &o.loads {
        let label = format!("{:.0}% of peak", share * 100.0);
        crate::report::step(&format!("pipeline: tcp at {label}"));
        let rate = phases[0].1.events_per_s * share;
        let phase = tcp_phase(
            &dir,
            &model,
            stream_sink,
            &tcp_rows,
            Some(rate),
            seconds,
            on_reader,
        )?;
        phases.push((label, phase));
    }
    say!(
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
    for (name, p) in &phases {
        say!(
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
        let events = p.events_per_s * p.wall_s;
        section.push(
            Measurement::roo(
                format!("roo, tcp -> score -> file, {name}"),
                events,
                p.wall_s,
                Some(p.cpu_ns_per_event * events / 1e9),
            )
            .latency(Latency {
                p50_ms: p.scheduled_ms[0],
                p99_ms: p.scheduled_ms[1],
                p999_ms: p.scheduled_ms[2],
            })
            .rss(Some(p.peak_rss_mib))
            .offered(p.offered)
            .threads(p.threads.0.clone()),
        );
    }
    crate::report::step("pipeline: Arrow IPC over TCP");
    let (arrow_events_s, arrow_ns) = arrow_phase(&dir, &model, stream_sink, &input, seconds)?;
    say!("  {ARROW_TCP:<52} {arrow_events_s:>10.0} events/s  {arrow_ns:>7.0} CPU-ns/event");
    section.push(Measurement::roo(
        ARROW_TCP,
        arrow_events_s * seconds,
        seconds,
        Some(arrow_ns * arrow_events_s * seconds / 1e9),
    ));
    say!(
        "  tcp flat out, CPU per event by thread: {}",
        phases[0]
            .1
            .threads
            .per_event(phases[0].1.events_per_s * phases[0].1.wall_s)
    );
    say!("  p50/p99/p999: from the batch's oldest event read off the socket to its rows written to the sink (the daemon's histogram)");
    say!("  sch: from each event's due time in the sender's schedule to the sink (event_time; coordinated omission corrected; flat out: from its write)");
    let Some(python) = o.python.as_deref() else {
        say!("  (no peers: the Python pipelines were not run)");
        section.detail = crate::report::take_lines();
        return Ok(section);
    };
    // The same events and model through the pipelines a team would write.
    crate::report::step("pipeline: Python batch job");
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
    let mut streams = Vec::new();
    for (parse, name) in [("pyarrow", PY_STREAM), ("lines", PY_STREAM_LINES)] {
        crate::report::step(&format!("pipeline: {name}"));
        streams.push((
            name,
            python_stream(python, &model, &dir, header, body, parse, seconds)?,
        ));
    }
    let roo_tcp_ns = phases[0].1.cpu_ns_per_event;
    let roo_file_ns = file.cpu_s * 1e9 / rows as f64;
    let per_billion = |ns: f64| ns / 3600.0 * o.dollars_per_core_hour;
    say!(
        "  peers on the same events and model, one thread each (CPU from the peer's own getrusage, after imports); \
         cost per billion events at ${}/core-hour",
        o.dollars_per_core_hour
    );
    say!(
        "  {:<58} {:>12} {:>13} {:>9} {:>9} {:>9} {:>10}  roo uses",
        "pipeline",
        "events/s",
        "CPU-ns/event",
        "p50 ms",
        "p99 ms",
        "p999 ms",
        "$/billion",
    );
    let row = |name: &str, events_s: f64, ns: f64, q: [Option<f64>; 3], roo_ns: Option<f64>| {
        let ms = |v: Option<f64>| v.map_or("-".to_string(), |s| format!("{:.2}", s * 1e3));
        say!(
            "  {name:<58} {events_s:>12.0} {ns:>13.0} {:>9} {:>9} {:>9} {:>10.3}  {}",
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
        file_name,
        rows as f64 / file.wall_s,
        roo_file_ns,
        [None; 3],
        None,
    );
    let p = &phases[0].1;
    row(
        TCP_PEAK,
        p.events_per_s,
        roo_tcp_ns,
        [
            Some(p.scheduled_ms[0] / 1e3),
            Some(p.scheduled_ms[1] / 1e3),
            Some(p.scheduled_ms[2] / 1e3),
        ],
        None,
    );
    row(
        PY_BATCH,
        batch.rows / batch.wall_s,
        batch.cpu_s * 1e9 / batch.rows,
        [None; 3],
        Some(roo_file_ns),
    );
    say!(
        "  {ARROW_TCP}: 1/{:.1} of the Python batch job's CPU per event ({arrow_ns:.0} vs {:.0} CPU-ns/event)",
        batch.cpu_s * 1e9 / batch.rows / arrow_ns,
        batch.cpu_s * 1e9 / batch.rows
    );
    section.push(
        Measurement::peer(
            PY_BATCH,
            "Python + pyarrow + XGBoost",
            batch.rows,
            batch.wall_s,
            Some(batch.cpu_s),
        )
        .rss(batch.peak_rss_mib)
        .against(file_name),
    );
    for (name, r) in &streams {
        row(
            name,
            r.rows / r.wall_s,
            r.cpu_s * 1e9 / r.rows,
            [r.p50_s, r.p99_s, r.p999_s],
            Some(roo_tcp_ns),
        );
        let mut m = Measurement::peer(
            *name,
            "Python + pyarrow + XGBoost",
            r.rows,
            r.wall_s,
            Some(r.cpu_s),
        )
        .rss(r.peak_rss_mib)
        .against(TCP_PEAK);
        if let (Some(a), Some(b), Some(c)) = (r.p50_s, r.p99_s, r.p999_s) {
            m = m.latency(Latency::from_s(a, b, c));
        }
        section.push(m);
    }
    say!("  roo uses: the peer's CPU per event over roo's (the batch job against roo's file pipeline, streams against roo's TCP stream flat out)");
    section.detail = crate::report::take_lines();
    Ok(section)
}
