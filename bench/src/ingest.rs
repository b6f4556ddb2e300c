//! `roo-bench ingest`: roo's sources and parsers on one core, beside the
//! physical limit (a plain sequential read of the same file from page
//! cache), arrow-csv's reader, and pyarrow's CSV and JSON readers on one
//! thread; and TCP ingest over loopback.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::report::{process_cpu_s, process_peak_rss_mib, Measurement, Run, Section};
use anyhow::{Context, Result};
use arrow_array::{Array, Float32Array, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use roo_ingest::{
    read_file, BatchLimits, CsvHeader, FileFormat, FileSource, IngestBatch, IoUringMode, ParsePool,
    ReadOptions, StreamFormat, StreamFramer, TcpSource, TcpSourceConfig,
};

const FEATURES: usize = 30;

fn schema() -> SchemaRef {
    let mut fields = vec![Field::new("id", DataType::Int64, true)];
    fields.extend((0..FEATURES).map(|i| Field::new(format!("x{i}"), DataType::Float32, true)));
    Arc::new(Schema::new(fields))
}

/// Card-transaction-like values: amounts, rates, counts, scores; 1% missing.
fn value(row: u64, col: usize, state: &mut u64) -> Option<f32> {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    let u = (*state >> 11) as f64 / (1u64 << 53) as f64;
    if (*state & 127) == 0 {
        return None;
    }
    Some(match col % 5 {
        0 => (u * 9.0).exp() as f32,                  // amount, 1 .. 8000
        1 => u as f32,                                // rate in [0, 1)
        2 => ((u * 40.0) as u32) as f32,              // a count
        3 => ((u - 0.5) * 6.0) as f32,                // a z-score
        _ => (row % 1440) as f32 + (u as f32) * 0.01, // minutes of day
    })
}

/// Writes the benchmark rows as CSV, NDJSON and an Arrow IPC file.
fn generate(dir: &Path, rows: u64) -> Result<(PathBuf, PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir)?;
    let csv = dir.join(format!("ingest_{rows}.csv"));
    let ndjson = dir.join(format!("ingest_{rows}.ndjson"));
    let ipc = dir.join(format!("ingest_{rows}.arrow"));
    if csv.exists() && ndjson.exists() && ipc.exists() {
        return Ok((csv, ndjson, ipc));
    }
    let mut c = BufWriter::new(File::create(&csv)?);
    let mut n = BufWriter::new(File::create(&ndjson)?);
    let header: Vec<String> = schema().fields().iter().map(|f| f.name().clone()).collect();
    writeln!(c, "{}", header.join(","))?;
    let mut ipc_writer = arrow_ipc::writer::FileWriter::try_new(File::create(&ipc)?, &schema())?;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut columns: Vec<Vec<Option<f32>>> = vec![Vec::new(); FEATURES];
    let mut ids = Vec::new();
    for row in 0..rows {
        write!(c, "{row}")?;
        write!(n, "{{\"id\":{row}")?;
        for (col, column) in columns.iter_mut().enumerate() {
            let v = value(row, col, &mut state);
            match v {
                Some(v) => {
                    write!(c, ",{v}")?;
                    write!(n, ",\"x{col}\":{v}")?;
                }
                None => {
                    c.write_all(b",")?;
                    write!(n, ",\"x{col}\":null")?;
                }
            }
            column.push(v);
        }
        c.write_all(b"\n")?;
        n.write_all(b"}\n")?;
        ids.push(row as i64);
        if ids.len() == 65536 || row + 1 == rows {
            let mut arrays: Vec<Arc<dyn Array>> =
                vec![Arc::new(Int64Array::from(std::mem::take(&mut ids)))];
            for column in &mut columns {
                arrays.push(Arc::new(Float32Array::from(std::mem::take(column))));
            }
            ipc_writer.write(&RecordBatch::try_new(schema(), arrays)?)?;
        }
    }
    ipc_writer.finish()?;
    c.flush()?;
    n.flush()?;
    Ok((csv, ndjson, ipc))
}

/// The fastest of `repeats` runs on this thread: its wall time, the
/// process's CPU time over it, and its result.
fn best<T>(repeats: usize, mut f: impl FnMut() -> Result<T>) -> Result<(Run, T)> {
    let mut best = Run::NONE;
    let mut out = None;
    for _ in 0..repeats.max(1) {
        let (run, r) = Run::time(&mut f);
        best.keep_best(run);
        out = Some(r?);
    }
    Ok((best, out.expect("ran once")))
}

/// Reads and parses `path` on this thread (the one-core ingest path), or
/// in pieces on `pool`'s threads.
fn roo_parse(
    path: &Path,
    format: &StreamFormat,
    mode: IoUringMode,
    pool: Option<&ParsePool>,
) -> Result<usize> {
    let file = File::open(path)?;
    let limits = BatchLimits {
        max_rows: 65536,
        ..BatchLimits::default()
    };
    let mut framer = StreamFramer::new(Arc::from("bench"), format, Some(schema()), limits, pool)?;
    anyhow::ensure!(
        framer.is_parallel() == pool.is_some(),
        "a pool of one thread"
    );
    let mut rows = 0;
    let mut dead = 0;
    let mut sink = |b: IngestBatch| {
        rows += b.batch.num_rows();
        dead += b.dead_letters.len();
        true
    };
    let options = ReadOptions {
        io_uring: mode,
        ..ReadOptions::default()
    };
    read_file(&file, "bench", 0, &options, &mut |piece| {
        framer.push(piece, &mut sink);
        true
    })?;
    framer.finish(true, &mut sink);
    anyhow::ensure!(dead == 0, "{dead} dead letters in benchmark data");
    Ok(rows)
}

fn plain_read(path: &Path, mode: IoUringMode) -> Result<usize> {
    let file = File::open(path)?;
    let mut bytes = 0usize;
    let mut checksum = 0u8;
    let options = ReadOptions {
        io_uring: mode,
        ..ReadOptions::default()
    };
    read_file(&file, "bench", 0, &options, &mut |piece| {
        bytes += piece.len();
        checksum ^= piece[piece.len() / 2];
        true
    })?;
    std::hint::black_box(checksum);
    Ok(bytes)
}

fn arrow_csv(path: &Path) -> Result<usize> {
    let reader = arrow_csv::ReaderBuilder::new(schema())
        .with_header(true)
        .with_batch_size(65536)
        .build(File::open(path)?)?;
    let mut rows = 0;
    for b in reader {
        rows += b?.num_rows();
    }
    Ok(rows)
}

/// Opens the IPC file, takes every batch, and (with `touch`) folds every
/// feature value's bits, so every byte is read once.
fn ipc(path: &Path, touch: bool) -> Result<(usize, u32)> {
    let mut rows = 0;
    let mut fold = 0u32;
    for b in FileSource::open(path, FileFormat::ArrowIpc)?.batches(1 << 20)? {
        let b = b?.batch;
        rows += b.num_rows();
        if touch {
            for c in b.columns().iter().skip(1) {
                let a = c.as_any().downcast_ref::<Float32Array>().expect("f32");
                fold ^= a.values().iter().fold(0u32, |x, v| x ^ v.to_bits());
            }
        }
    }
    Ok((rows, std::hint::black_box(fold)))
}

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

struct TcpRun {
    wall_s: f64,
    cpu_s: f64,
    rows: usize,
    bytes: u64,
}

/// Sends the CSV over `connections` loopback connections (one client
/// thread, on the other core) into an io_uring TCP source.
fn tcp(
    path: &Path,
    connections: usize,
    mode: IoUringMode,
    pool: Option<&ParsePool>,
) -> Result<TcpRun> {
    let data = Arc::new(std::fs::read(path)?);
    let expected = data.iter().filter(|&&c| c == b'\n').count() - 1;
    let mut config =
        TcpSourceConfig::new("127.0.0.1:0".parse()?, StreamFormat::csv(), Some(schema()));
    config.io_uring = mode;
    config.parse_pool = pool.cloned();
    config.limits = BatchLimits {
        max_rows: 65536,
        linger: Duration::from_millis(5),
        ..BatchLimits::default()
    };
    let rows = Arc::new(AtomicU64::new(0));
    let r = rows.clone();
    let sink = move |b: IngestBatch| {
        r.fetch_add(b.batch.num_rows() as u64, Ordering::Relaxed);
        true
    };
    let source = TcpSource::start(config, Box::new(sink))?;
    let addr = source.local_addr();
    let started = Instant::now();
    let cpu0 = process_cpu_s();
    let client = {
        let data = data.clone();
        // Returns its own CPU time, which is not the ingest's.
        std::thread::spawn(move || -> std::io::Result<f64> {
            let mut streams: Vec<std::net::TcpStream> = (0..connections)
                .map(|_| std::net::TcpStream::connect(addr))
                .collect::<Result<_, _>>()?;
            // Round-robin 256 KiB pieces so every connection is busy.
            let header_end = data.iter().position(|&c| c == b'\n').expect("a header") + 1;
            for s in &mut streams {
                s.write_all(&data[..header_end])?;
            }
            let body = &data[header_end..];
            let per = body.len().div_ceil(connections);
            let mut parts: Vec<&[u8]> = Vec::new();
            let mut at = 0;
            for _ in 0..connections {
                // Cut at a line end so each connection holds whole records.
                let mut end = (at + per).min(body.len());
                while end < body.len() && body[end - 1] != b'\n' {
                    end += 1;
                }
                parts.push(&body[at..end]);
                at = end;
            }
            let mut offsets = vec![0usize; connections];
            loop {
                let mut progress = false;
                for (k, s) in streams.iter_mut().enumerate() {
                    let part = parts[k];
                    if offsets[k] < part.len() {
                        let end = (offsets[k] + (256 << 10)).min(part.len());
                        s.write_all(&part[offsets[k]..end])?;
                        offsets[k] = end;
                        progress = true;
                    }
                }
                if !progress {
                    return Ok(thread_cpu_ns() as f64 / 1e9);
                }
            }
        })
    };
    let client_cpu_s = client.join().expect("client")?;
    while (rows.load(Ordering::Relaxed) as usize) < expected {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(120),
            "tcp bench timed out"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
    let wall_s = started.elapsed().as_secs_f64();
    // The process's CPU less the sender's: the ingest thread's, plus this
    // thread's polling (a wake-up every 200 µs).
    let cpu_s = process_cpu_s() - cpu0 - client_cpu_s;
    let report = source.stop()?;
    Ok(TcpRun {
        wall_s,
        cpu_s,
        rows: rows.load(Ordering::Relaxed) as usize,
        bytes: report.bytes,
    })
}

pub fn run(rows: u64, repeats: usize, python: &str, cache: &Path) -> Result<Section> {
    crate::report::step("ingest: generating the files");
    let (csv, ndjson, ipc_path) = generate(cache, rows)?;
    let mb = |p: &Path| -> Result<f64> { Ok(std::fs::metadata(p)?.len() as f64 / 1e6) };
    let (csv_mb, nd_mb, ipc_mb) = (mb(&csv)?, mb(&ndjson)?, mb(&ipc_path)?);
    say!(
        "ingest: {rows} rows of id + {FEATURES} float columns; CSV {csv_mb:.0} MB, NDJSON {nd_mb:.0} MB, \
         Arrow IPC {ipc_mb:.0} MB; from page cache; one thread each; best of {repeats}"
    );
    // Warm the page cache.
    for p in [&csv, &ndjson, &ipc_path] {
        plain_read(p, IoUringMode::Off)?;
    }
    crate::report::step("ingest: pyarrow's readers");
    let peers = crate::run_script(
        python,
        "ingest_peers.py",
        &[
            "--csv",
            csv.to_str().context("path")?,
            "--ndjson",
            ndjson.to_str().context("path")?,
            "--repeats",
            &repeats.to_string(),
        ],
    )?;
    let peers: serde_json::Value = serde_json::from_str(peers.trim())?;
    let f = |k: &str| {
        peers[k]
            .as_f64()
            .with_context(|| format!("ingest_peers.py: no {k}"))
    };
    let py_csv = Run {
        wall_s: f("csv_s")?,
        cpu_s: f("csv_cpu_s")?,
    };
    let py_nd = Run {
        wall_s: f("ndjson_s")?,
        cpu_s: f("ndjson_cpu_s")?,
    };
    let py_rss = f("peak_rss_mib")?;

    crate::report::step("ingest: roo's readers and parsers");
    crate::report::reset_peak_rss();
    let (read_plain, _) = best(repeats, || plain_read(&csv, IoUringMode::Off))?;
    let (read_uring, _) = best(repeats, || plain_read(&csv, IoUringMode::Auto))?;
    let csv_fmt = StreamFormat::Csv {
        header: CsvHeader::Skip,
        delimiter: b',',
    };
    // One untimed parse first: the first large batches of a process pay
    // for fresh pages until the allocator keeps them (glibc raises its
    // mmap threshold as they are freed), which a long-running daemon has
    // long done; without it the first path timed looks slower.
    roo_parse(&csv, &csv_fmt, IoUringMode::Auto, None)?;
    let (roo_csv, n) = best(repeats, || {
        roo_parse(&csv, &csv_fmt, IoUringMode::Auto, None)
    })?;
    anyhow::ensure!(n as u64 == rows, "roo CSV read {n} rows");
    let (roo_csv_plain, _) = best(repeats, || {
        roo_parse(&csv, &csv_fmt, IoUringMode::Off, None)
    })?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pool: Option<ParsePool> = (cores >= 2).then(|| {
        ParsePool::new(Arc::new(
            rayon::ThreadPoolBuilder::new()
                .num_threads(cores)
                .build()
                .expect("a parse pool"),
        ))
    });
    let parallel = |path: &Path, format: &StreamFormat| -> Result<Option<Run>> {
        let Some(pool) = &pool else { return Ok(None) };
        let (run, n) = best(repeats, || {
            roo_parse(path, format, IoUringMode::Auto, Some(pool))
        })?;
        anyhow::ensure!(n as u64 == rows, "roo read {n} rows in pieces");
        Ok(Some(run))
    };
    let roo_csv_parallel = parallel(&csv, &csv_fmt)?;
    let roo_nd_parallel = parallel(&ndjson, &StreamFormat::Ndjson)?;
    let (arrow_csv_run, n) = best(repeats, || arrow_csv(&csv))?;
    anyhow::ensure!(n as u64 == rows, "arrow-csv read {n} rows");
    let (roo_nd, n) = best(repeats, || {
        roo_parse(&ndjson, &StreamFormat::Ndjson, IoUringMode::Auto, None)
    })?;
    anyhow::ensure!(n as u64 == rows, "roo NDJSON read {n} rows");
    let (ipc_open, _) = best(repeats, || ipc(&ipc_path, false))?;
    let (ipc_touch, _) = best(repeats, || ipc(&ipc_path, true))?;
    let file_rss = process_peak_rss_mib();
    crate::report::step("ingest: TCP over loopback");
    crate::report::reset_peak_rss();
    let mut tcp_runs = Vec::new();
    let mut cases = vec![(1, None), (4, None)];
    if let Some(pool) = &pool {
        cases.push((1, Some(pool)));
    }
    for (connections, pool) in cases {
        let mut best_run: Option<TcpRun> = None;
        for _ in 0..repeats {
            let r = tcp(&csv, connections, IoUringMode::Auto, pool)?;
            anyhow::ensure!(r.rows as u64 == rows, "tcp read {} rows", r.rows);
            if best_run.as_ref().is_none_or(|b| r.wall_s < b.wall_s) {
                best_run = Some(r);
            }
        }
        tcp_runs.push((connections, pool.is_some(), best_run.expect("ran")));
    }
    let tcp_rss = process_peak_rss_mib();

    let mut section = Section::new(
        "ingest",
        "Ingest: roo's sources and parsers on one core beside arrow-csv and pyarrow",
    );
    section.note(format!(
        "{rows} rows of id + {FEATURES} float columns (CSV {csv_mb:.0} MB, NDJSON {nd_mb:.0} MB, Arrow IPC {ipc_mb:.0} MB), \
         from page cache, one thread each, best of {repeats}. An event is a row parsed into an Arrow batch."
    ));
    section.note(
        "No latency here: a file is read whole (latency is measured where events arrive over time: the stream, \
         Flight and kernel scenarios). CPU: the process's over the run (the TCP rows: less the sending thread's). \
         Peak RSS: the bench process while the file readers ran, and while the TCP runs ran.",
    );
    let events = rows as f64;
    let roo_row = |name: &str, b: Run, rss: f64| {
        Measurement::roo(name, events, b.wall_s, Some(b.cpu_s)).rss(Some(rss))
    };
    let csv_name = "roo CSV file, io_uring";
    let nd_name = "roo NDJSON file, io_uring";
    section.push(roo_row(csv_name, roo_csv, file_rss));
    section.push(roo_row(
        "roo CSV file, plain reads",
        roo_csv_plain,
        file_rss,
    ));
    if let Some(run) = roo_csv_parallel {
        section.push(roo_row(
            &format!("roo CSV file, parsed on {cores} threads"),
            run,
            file_rss,
        ));
    }
    section.push(
        Measurement::peer(
            "arrow-csv 60, Float32 schema",
            "arrow-csv (Rust)",
            events,
            arrow_csv_run.wall_s,
            Some(arrow_csv_run.cpu_s),
        )
        .rss(Some(file_rss))
        .against(csv_name),
    );
    section.push(
        Measurement::peer(
            "pyarrow.csv, one thread",
            "pyarrow (C++)",
            events,
            py_csv.wall_s,
            Some(py_csv.cpu_s),
        )
        .rss(Some(py_rss))
        .against(csv_name),
    );
    section.push(roo_row(nd_name, roo_nd, file_rss));
    if let Some(run) = roo_nd_parallel {
        section.push(roo_row(
            &format!("roo NDJSON file, parsed on {cores} threads"),
            run,
            file_rss,
        ));
    }
    section.push(
        Measurement::peer(
            "pyarrow.json, one thread",
            "pyarrow (C++)",
            events,
            py_nd.wall_s,
            Some(py_nd.cpu_s),
        )
        .rss(Some(py_rss))
        .against(nd_name),
    );
    section.push(roo_row(
        "roo Arrow IPC file, zero-copy batches",
        ipc_open,
        file_rss,
    ));
    section.push(roo_row(
        "roo Arrow IPC file + every value read",
        ipc_touch,
        file_rss,
    ));
    for (connections, parallel, r) in &tcp_runs {
        let how = if *parallel {
            format!(", parsed on {cores} threads")
        } else {
            String::new()
        };
        section.push(
            Measurement::roo(
                format!("roo TCP CSV, {connections} connection(s){how}, loopback"),
                r.rows as f64,
                r.wall_s,
                Some(r.cpu_s),
            )
            .rss(Some(tcp_rss)),
        );
    }

    let line = |name: &str, mb: f64, s: f64, note: &str| {
        say!(
            "  {name:<38} {:>8.0} MB/s {:>7.2} M rows/s   {note}",
            mb / s,
            rows as f64 / s / 1e6
        );
    };
    let (read_plain_s, read_uring_s, roo_csv_s) =
        (read_plain.wall_s, read_uring.wall_s, roo_csv.wall_s);
    let (arrow_csv_s, py_csv_s, py_nd_s, roo_nd_s) = (
        arrow_csv_run.wall_s,
        py_csv.wall_s,
        py_nd.wall_s,
        roo_nd.wall_s,
    );
    say!("  {:<38} {:>13} {:>15}", "path", "throughput", "rows");
    line(
        "plain sequential read (CSV file)",
        csv_mb,
        read_plain_s,
        "physical limit",
    );
    line(
        "io_uring READ_FIXED read (CSV file)",
        csv_mb,
        read_uring_s,
        "",
    );
    line(
        "roo CSV, io_uring",
        csv_mb,
        roo_csv_s,
        &format!(
            "{:.2}x pyarrow.csv, {:.2}x arrow-csv, {:.0}% of plain read",
            py_csv_s / roo_csv_s,
            arrow_csv_s / roo_csv_s,
            100.0 * read_plain_s / roo_csv_s
        ),
    );
    line(
        "roo CSV, plain reads (fallback)",
        csv_mb,
        roo_csv_plain.wall_s,
        "",
    );
    if let Some(run) = roo_csv_parallel {
        line(
            &format!("roo CSV, parsed on {cores} threads"),
            csv_mb,
            run.wall_s,
            &format!(
                "{:.2}x one thread's wall, {:.2}x its CPU",
                roo_csv_s / run.wall_s,
                run.cpu_s / roo_csv.cpu_s
            ),
        );
    }
    line("arrow-csv 60 (Float32 schema)", csv_mb, arrow_csv_s, "");
    line("pyarrow.csv, one thread", csv_mb, py_csv_s, "");
    line(
        "roo NDJSON, io_uring",
        nd_mb,
        roo_nd_s,
        &format!("{:.2}x pyarrow.json", py_nd_s / roo_nd_s),
    );
    if let Some(run) = roo_nd_parallel {
        line(
            &format!("roo NDJSON, parsed on {cores} threads"),
            nd_mb,
            run.wall_s,
            &format!(
                "{:.2}x one thread's wall, {:.2}x its CPU",
                roo_nd_s / run.wall_s,
                run.cpu_s / roo_nd.cpu_s
            ),
        );
    }
    line("pyarrow.json, one thread", nd_mb, py_nd_s, "");
    line(
        "roo Arrow IPC file, zero-copy batches",
        ipc_mb,
        ipc_open.wall_s,
        "mapped; no value read",
    );
    line(
        "roo Arrow IPC file + read every value",
        ipc_mb,
        ipc_touch.wall_s,
        "every byte read once",
    );
    for (connections, parallel, r) in &tcp_runs {
        let how = if *parallel { ", pool" } else { "" };
        say!(
            "  {:<38} {:>8.0} MB/s {:>7.2} M rows/s   {:.0} MB/s per core of the ingest threads ({:.2} s CPU)",
            format!("roo TCP CSV, {connections} conn{how}, loopback"),
            r.bytes as f64 / 1e6 / r.wall_s,
            r.rows as f64 / r.wall_s / 1e6,
            r.bytes as f64 / 1e6 / r.cpu_s.max(1e-9),
            r.cpu_s
        );
    }
    section.detail = crate::report::take_lines();
    Ok(section)
}
