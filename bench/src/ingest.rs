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

use anyhow::{Context, Result};
use arrow_array::{Array, Float32Array, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use roo_ingest::{
    read_file, BatchLimits, CsvHeader, FileFormat, FileSource, Framer, IngestBatch, IoUringMode,
    ReadOptions, StreamFormat, TcpSource, TcpSourceConfig,
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

fn best<T>(repeats: usize, mut f: impl FnMut() -> Result<T>) -> Result<(f64, T)> {
    let mut best_s = f64::INFINITY;
    let mut out = None;
    for _ in 0..repeats.max(1) {
        let t = Instant::now();
        let r = f()?;
        best_s = best_s.min(t.elapsed().as_secs_f64());
        out = Some(r);
    }
    Ok((best_s, out.expect("ran once")))
}

/// Reads and parses `path` on this thread: the one-core ingest path.
fn roo_parse(path: &Path, format: &StreamFormat, mode: IoUringMode) -> Result<usize> {
    let file = File::open(path)?;
    let limits = BatchLimits {
        max_rows: 65536,
        ..BatchLimits::default()
    };
    let mut framer = Framer::new(Arc::from("bench"), format, Some(schema()), limits)?;
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
fn tcp(path: &Path, connections: usize, mode: IoUringMode) -> Result<TcpRun> {
    let data = Arc::new(std::fs::read(path)?);
    let expected = data.iter().filter(|&&c| c == b'\n').count() - 1;
    let mut config =
        TcpSourceConfig::new("127.0.0.1:0".parse()?, StreamFormat::csv(), Some(schema()));
    config.io_uring = mode;
    config.limits = BatchLimits {
        max_rows: 65536,
        linger: Duration::from_millis(5),
        ..BatchLimits::default()
    };
    let rows = Arc::new(AtomicU64::new(0));
    let cpu_first = Arc::new(AtomicU64::new(0));
    let cpu_last = Arc::new(AtomicU64::new(0));
    let (r, f, l) = (rows.clone(), cpu_first.clone(), cpu_last.clone());
    let sink = move |b: IngestBatch| {
        let now = thread_cpu_ns();
        let _ = f.compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
        l.store(now, Ordering::Relaxed);
        r.fetch_add(b.batch.num_rows() as u64, Ordering::Relaxed);
        true
    };
    let source = TcpSource::start(config, Box::new(sink))?;
    let addr = source.local_addr();
    let started = Instant::now();
    let client = {
        let data = data.clone();
        std::thread::spawn(move || -> std::io::Result<()> {
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
                    return Ok(());
                }
            }
        })
    };
    client.join().expect("client")?;
    while (rows.load(Ordering::Relaxed) as usize) < expected {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(120),
            "tcp bench timed out"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
    let wall_s = started.elapsed().as_secs_f64();
    let report = source.stop()?;
    Ok(TcpRun {
        wall_s,
        cpu_s: (cpu_last.load(Ordering::Relaxed) - cpu_first.load(Ordering::Relaxed)) as f64 / 1e9,
        rows: rows.load(Ordering::Relaxed) as usize,
        bytes: report.bytes,
    })
}

pub fn run(rows: u64, repeats: usize, python: &str, cache: &Path) -> Result<()> {
    let (csv, ndjson, ipc_path) = generate(cache, rows)?;
    let mb = |p: &Path| -> Result<f64> { Ok(std::fs::metadata(p)?.len() as f64 / 1e6) };
    let (csv_mb, nd_mb, ipc_mb) = (mb(&csv)?, mb(&ndjson)?, mb(&ipc_path)?);
    println!(
        "ingest: {rows} rows of id + {FEATURES} float columns; CSV {csv_mb:.0} MB, NDJSON {nd_mb:.0} MB, \
         Arrow IPC {ipc_mb:.0} MB; from page cache; one thread each; best of {repeats}"
    );
    // Warm the page cache.
    for p in [&csv, &ndjson, &ipc_path] {
        plain_read(p, IoUringMode::Off)?;
    }
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
    let py_csv_s = peers["csv_s"].as_f64().context("csv_s")?;
    let py_nd_s = peers["ndjson_s"].as_f64().context("ndjson_s")?;

    let (read_plain_s, _) = best(repeats, || plain_read(&csv, IoUringMode::Off))?;
    let (read_uring_s, _) = best(repeats, || plain_read(&csv, IoUringMode::Auto))?;
    let csv_fmt = StreamFormat::Csv {
        header: CsvHeader::Skip,
        delimiter: b',',
    };
    let (roo_csv_s, n) = best(repeats, || roo_parse(&csv, &csv_fmt, IoUringMode::Auto))?;
    anyhow::ensure!(n as u64 == rows, "roo CSV read {n} rows");
    let (roo_csv_plain_s, _) = best(repeats, || roo_parse(&csv, &csv_fmt, IoUringMode::Off))?;
    let (arrow_csv_s, n) = best(repeats, || arrow_csv(&csv))?;
    anyhow::ensure!(n as u64 == rows, "arrow-csv read {n} rows");
    let (roo_nd_s, n) = best(repeats, || {
        roo_parse(&ndjson, &StreamFormat::Ndjson, IoUringMode::Auto)
    })?;
    anyhow::ensure!(n as u64 == rows, "roo NDJSON read {n} rows");
    let (ipc_open_s, _) = best(repeats, || ipc(&ipc_path, false))?;
    let (ipc_touch_s, _) = best(repeats, || ipc(&ipc_path, true))?;
    let mut tcp_runs = Vec::new();
    for connections in [1, 4] {
        let mut best_run: Option<TcpRun> = None;
        for _ in 0..repeats {
            let r = tcp(&csv, connections, IoUringMode::Auto)?;
            anyhow::ensure!(r.rows as u64 == rows, "tcp read {} rows", r.rows);
            if best_run.as_ref().is_none_or(|b| r.wall_s < b.wall_s) {
                best_run = Some(r);
            }
        }
        tcp_runs.push((connections, best_run.expect("ran")));
    }

    let line = |name: &str, mb: f64, s: f64, note: &str| {
        println!(
            "  {name:<38} {:>8.0} MB/s {:>7.2} M rows/s   {note}",
            mb / s,
            rows as f64 / s / 1e6
        );
    };
    println!("  {:<38} {:>13} {:>15}", "path", "throughput", "rows");
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
        roo_csv_plain_s,
        "",
    );
    line("arrow-csv 60 (Float32 schema)", csv_mb, arrow_csv_s, "");
    line("pyarrow.csv, one thread", csv_mb, py_csv_s, "");
    line(
        "roo NDJSON, io_uring",
        nd_mb,
        roo_nd_s,
        &format!("{:.2}x pyarrow.json", py_nd_s / roo_nd_s),
    );
    line("pyarrow.json, one thread", nd_mb, py_nd_s, "");
    line(
        "roo Arrow IPC file, zero-copy batches",
        ipc_mb,
        ipc_open_s,
        "mapped; no value read",
    );
    line(
        "roo Arrow IPC file + read every value",
        ipc_mb,
        ipc_touch_s,
        "every byte read once",
    );
    for (connections, r) in &tcp_runs {
        println!(
            "  {:<38} {:>8.0} MB/s {:>7.2} M rows/s   {:.0} MB/s per core of the ingest thread ({:.2} s CPU)",
            format!("roo TCP CSV, {connections} conn, loopback"),
            r.bytes as f64 / 1e6 / r.wall_s,
            r.rows as f64 / r.wall_s / 1e6,
            r.bytes as f64 / 1e6 / r.cpu_s.max(1e-9),
            r.cpu_s
        );
    }
    Ok(())
}
