//! `roo-bench chaos`: what crash safety costs and whether it holds at
//! scale. One file of card transactions (every 1,000th an hour late: a
//! dead letter) goes through per-card features and a logistic model into
//! Parquet files, each decision recorded in an audit log, and through an
//! hourly top-50 spend aggregate into Arrow files, by `roo serve` as a
//! user runs it:
//!
//! - without checkpoints, then checkpointing every 10 s, 1 s and 0.1 s
//!   (each best of 3): wall and CPU per event side by side, the
//!   checkpoints taken and their size; from the 0.1 s runs the CPU one
//!   checkpoint costs, and the fsyncs it costs (counted under strace in a
//!   separate run);
//! - SIGKILLed `kills` times at random moments (checkpointing every
//!   0.05 s; each kill once a new checkpoint exists, then 0–80 ms later:
//!   mid-batch, mid-checkpoint, mid-publish) and started again until it finishes; every output row
//!   (features and score included), every audit record and every window
//!   must equal the uninterrupted run's, none twice, none missing, and
//!   every dead letter once;
//! - over TCP with acks (`tcp.rs`): a sender naming its stream, resuming
//!   from the count it is told after each SIGKILL;
//! - over Flight (`flight.rs`, with a Python that has pyarrow):
//!   `flight_chaos.py`, the roo package's `put` on a named stream, the
//!   daemon SIGKILLed mid-put and started again while the put resumes from
//!   the rows durable.

mod flight;
mod tcp;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::audit::run_pinned;
use crate::daemon::roo_binary;
use crate::report::{Measurement, Section};

const OFF: &str = "roo serve, file -> features -> model -> Parquet, no checkpoints";

/// The events file: time-ordered transactions over `cards` cards.
fn write_events(path: &Path, n: usize, cards: u64) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut state = 0x853c_49e6_748f_ea9bu64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut clock: i64 = 1_790_000_000_000_000;
    writeln!(out, "txn_id,card_id,ts,amount")?;
    for i in 0..n {
        clock += (next() % 200_000) as i64;
        let card = next() % cards;
        // Every 1,000th an hour late: past the lateness, a dead letter.
        let ts = if i % 1000 == 999 {
            clock - 3_600_000_000
        } else {
            clock
        };
        writeln!(out, "{i},{card},{ts},{}.{:02}", next() % 900, next() % 100)?;
    }
    out.flush()?;
    Ok(())
}

/// A config writing into `out`; checkpoints every `every` seconds into
/// `out/state` when given.
fn config(dir: &Path, data: &Path, out: &Path, every: Option<f64>) -> Result<PathBuf> {
    let model = dir.join("model.json");
    std::fs::write(
        &model,
        r#"{"kind": "logistic", "features": ["n_1h", "spend_1h", "mean_24h", "amount"], "weights": [0.01, 0.001, -0.002, 0.003], "bias": -1.5}"#,
    )?;
    let server = match every {
        Some(s) => format!(
            "state_dir = {:?}\ncheckpoint_secs = {s}\n",
            out.join("state")
        ),
        None => String::new(),
    };
    let text = format!(
        r#"[server]
threads = 2
{server}
[[pipeline]]
name = "chaos"
model = {model:?}
device = "cpu"
event_time = "ts"
lateness = "60s"
max_rows = 4096

[pipeline.source]
kind = "file"
path = {data:?}

[[pipeline.feature]]
name = "n_1h"
key = "card_id"
agg = "count"
window = "1h"

[[pipeline.feature]]
name = "spend_1h"
key = "card_id"
agg = "sum"
column = "amount"
window = "1h"

[[pipeline.feature]]
name = "mean_24h"
key = "card_id"
agg = "mean"
column = "amount"
window = "24h"

[pipeline.audit]
dir = {audit:?}
id = "txn_id"

[[pipeline.sink]]
kind = "files"
dir = {rows:?}
format = "parquet"
rotate_mb = 16

[pipeline.dead_letters]
dir = {dead:?}

[[pipeline]]
name = "windows"
event_time = "ts"
lateness = "60s"
max_rows = 4096

[pipeline.source]
kind = "file"
path = {data:?}

[[pipeline.aggregate]]
name = "spend"
key = "card_id"
agg = "sum"
column = "amount"
window = "1h"
every = "10m"
top = 50

[[pipeline.sink]]
kind = "files"
dir = {windows:?}
format = "arrow"
rotate_mb = 16
"#,
        rows = out.join("rows"),
        dead = out.join("dead"),
        audit = out.join("audit"),
        windows = out.join("windows"),
    );
    let path = out.with_extension("toml");
    std::fs::write(&path, text)?;
    Ok(path)
}

/// The newest checkpoint's epoch of the scoring pipeline in `state` (0:
/// none).
fn newest_checkpoint(state: &Path) -> u64 {
    newest_of(&state.join("chaos")).0
}

/// Both pipelines' newest checkpoints together, in bytes.
fn checkpoint_bytes(state: &Path) -> u64 {
    ["chaos", "windows"]
        .iter()
        .map(|p| newest_of(&state.join(p)).1)
        .sum()
}

/// The newest checkpoint in a pipeline's state directory: (epoch, bytes).
fn newest_of(dir: &Path) -> (u64, u64) {
    let epoch = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_prefix("checkpoint-")?
                .strip_suffix(".roo")?
                .parse()
                .ok()
        })
        .max()
        .unwrap_or(0);
    let bytes =
        std::fs::metadata(dir.join(format!("checkpoint-{epoch:010}.roo"))).map_or(0, |m| m.len());
    (epoch, bytes)
}

/// Every published row of `dir` as a CSV line (floats written shortest
/// round-trip, so equal lines are equal bits), with its count.
pub(super) fn rows(dir: &Path) -> Result<HashMap<String, u32>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    files.sort();
    rows_of(&files)
}

/// The audit log's records under `dir` as [`rows`] gives them, less the
/// columns that differ between runs (ingest time, device).
fn audit_records(dir: &Path) -> Result<HashMap<String, u32>> {
    let mut files = Vec::new();
    for hour in std::fs::read_dir(dir.join("records"))? {
        for f in std::fs::read_dir(hour?.path())? {
            let f = f?.path();
            let name = f.file_name().context("a file name")?.to_string_lossy();
            ensure!(
                !name.starts_with('.'),
                "a partial audit file is left: {name}"
            );
            if name.starts_with("seg-") {
                files.push(f);
            }
        }
    }
    files.sort();
    rows_of(&files)
}

fn rows_of(files: &[PathBuf]) -> Result<HashMap<String, u32>> {
    let mut out = HashMap::new();
    for f in files {
        let name = f.file_name().context("a file name")?.to_string_lossy();
        ensure!(!name.starts_with('.'), "a partial file is left: {name}");
        let schema = std::sync::Arc::new(arrow_schema::Schema::empty());
        let mut failed = None;
        roo_scheduler::sinks::layout::read_output_file(f, &schema, &mut |b| {
            // The model version (a dictionary) is the same on every row;
            // an audit record's ingest time and device differ by run.
            let keep: Vec<usize> = (0..b.num_columns())
                .filter(|&i| {
                    let field = b.schema_ref().field(i).clone();
                    !matches!(field.data_type(), arrow_schema::DataType::Dictionary(..))
                        && field.name() != "audit_ingest_time"
                        && field.name() != "audit_device"
                })
                .collect();
            let b = match b.project(&keep) {
                Ok(b) => b,
                Err(e) => {
                    failed = Some(e.to_string());
                    return false;
                }
            };
            let mut text = Vec::new();
            let mut w = arrow_csv::WriterBuilder::new()
                .with_header(false)
                .build(&mut text);
            if let Err(e) = w.write(&b) {
                failed = Some(e.to_string());
                return false;
            }
            drop(w);
            for line in String::from_utf8_lossy(&text).lines() {
                *out.entry(line.to_string()).or_insert(0) += 1;
            }
            true
        })?;
        if let Some(e) = failed {
            bail!("{}: {e}", f.display());
        }
    }
    Ok(out)
}

/// Dead letters under `dir`, by their record's text, with counts.
fn dead_letters(dir: &Path) -> Result<HashMap<String, u32>> {
    let mut out = HashMap::new();
    for e in std::fs::read_dir(dir)? {
        let path = e?.path();
        for line in std::fs::read_to_string(&path)?.lines() {
            let v: serde_json::Value = serde_json::from_str(line)?;
            // A late event is located by its batch's offset and row, which
            // differ after a restart: it is known by the rest of the
            // reason (event time, key, the key's newest time).
            let reason = v["reason"].as_str().unwrap_or_default();
            let key = match reason.split_once(": ") {
                Some((_, event)) if v["line"].is_null() => event.to_string(),
                _ => format!("{} {reason}", v["line"]),
            };
            *out.entry(key).or_insert(0) += 1;
        }
    }
    Ok(out)
}

/// fsync and fdatasync calls of one run under `strace -f -c`.
fn fsyncs(roo: &Path, config: &Path) -> Result<Option<u64>> {
    let summary = std::env::temp_dir().join(format!("roo-chaos-strace-{}", std::process::id()));
    let ran = Command::new("strace")
        .args(["-f", "-c", "-e", "trace=fsync,fdatasync", "-o"])
        .arg(&summary)
        .arg(roo)
        .args(["serve", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let Ok(status) = ran else {
        return Ok(None);
    };
    ensure!(status.success(), "roo serve under strace: {status}");
    let text = std::fs::read_to_string(&summary)?;
    let _ = std::fs::remove_file(&summary);
    // Rows: % time, seconds, usecs/call, calls, [errors,] syscall.
    let calls = text
        .lines()
        .filter(|l| l.ends_with(" fsync") || l.ends_with(" fdatasync"))
        .filter_map(|l| l.split_whitespace().nth(3)?.parse::<u64>().ok())
        .sum();
    Ok(Some(calls))
}

pub fn run(
    events: usize,
    kills: usize,
    repeats: usize,
    python: Option<&str>,
    cache: &Path,
) -> Result<Section> {
    let roo = roo_binary()?;
    let dir = cache.join("chaos");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    // The configs name files by absolute paths.
    let dir = dir.canonicalize()?;
    let mut section = Section::new(
        "chaos",
        "Crash safety: what checkpoints cost, and SIGKILL at random moments",
    );
    section.note(format!(
        "{events} card transactions over 100,000 cards (every 1,000th an hour late: a dead letter) → three per-card \
         rolling features → a logistic model → Parquet files and an audit log; and the same file → an hourly \
         top-50 spend aggregate → Arrow files; by `roo serve` on the whole machine. \
         CPU is the process's own (user + system), start to exit. The kill run checkpoints every \
         0.05 s and is SIGKILLed {kills} times at random moments, then compared row by row with the \
         uninterrupted run."
    ));
    crate::report::step("chaos: writing the events");
    let data = dir.join("events.csv");
    write_events(&data, events, 100_000)?;

    crate::report::step("chaos: checkpoint cost");
    // Each setting run `repeats` times, the least CPU kept (a shared machine).
    let best_of_3 = |config: &Path, out: &Path| -> Result<(f64, f64)> {
        let mut best = (f64::MAX, f64::MAX);
        for _ in 0..repeats.max(1) {
            // Each run from scratch: no output, no checkpoint to resume.
            let _ = std::fs::remove_dir_all(out);
            let (w, c) = run_pinned(
                Command::new(&roo).args(["serve", "--config"]).arg(config),
                false,
            )?;
            if c < best.1 {
                best = (w, c);
            }
        }
        Ok(best)
    };
    let reference = dir.join("off");
    let (wall, cpu) = best_of_3(&config(&dir, &data, &reference, None)?, &reference)?;
    let per_event = |cpu: f64| cpu * 1e9 / events as f64;
    say!(
        "chaos: no checkpoints: {wall:.2} s, {:.0} CPU-ns/event (best of {repeats})",
        per_event(cpu)
    );
    section.push(Measurement::roo(OFF, events as f64, wall, Some(cpu)));
    let mut per_checkpoint = None;
    for every in [10.0, 1.0, 0.1] {
        let out = dir.join(format!("every-{every}"));
        let cfg = config(&dir, &data, &out, Some(every))?;
        let (w, c) = best_of_3(&cfg, &out)?;
        let state = out.join("state");
        let taken = newest_checkpoint(&state);
        let bytes = checkpoint_bytes(&state);
        say!(
            "chaos: checkpoint every {every} s: {w:.2} s, {:.0} CPU-ns/event ({:+.1}% CPU, {:+.1}% wall beside none); \
             {taken} checkpoints (the last run's), the last {:.1} MB (both pipelines)",
            per_event(c),
            (c / cpu - 1.0) * 100.0,
            (w / wall - 1.0) * 100.0,
            bytes as f64 / 1e6
        );
        section.push(Measurement::roo(
            format!("the same, checkpoint every {every} s"),
            events as f64,
            w,
            Some(c),
        ));
        if every == 10.0 && taken == 1 {
            say!(
                "chaos: the 10 s runs take one checkpoint of each pipeline, at the end, of the whole state ({:.1} MB): \
                 {:+.0} ms of CPU beside none; a daemon holding this much state and checkpointing every 10 s spends \
                 {:.1}% of one core on it (snapshots are whole, not incremental: the cost grows with the state)",
                bytes as f64 / 1e6,
                (c - cpu) * 1e3,
                (c - cpu) / 10.0 * 100.0
            );
        }
        if every == 0.1 && taken > 1 {
            per_checkpoint = Some(((c - cpu) / taken as f64, bytes));
        }
        let _ = std::fs::remove_dir_all(&out);
    }
    if let Some((cpu_s, bytes)) = per_checkpoint {
        let traced = dir.join("traced");
        let cfg = config(&dir, &data, &traced, Some(0.1))?;
        let base_cfg = config(&dir, &data, &dir.join("traced-off"), None)?;
        let fsync_line = match (fsyncs(&roo, &cfg)?, fsyncs(&roo, &base_cfg)?) {
            (Some(with), Some(without)) => {
                let taken = newest_checkpoint(&traced.join("state")).max(1);
                let each = with.saturating_sub(without) as f64 / taken as f64;
                format!(
                    "; fsyncs counted under strace (a separate run): {with} with {taken} checkpoints of both \
                     pipelines, {without} without: {each:.1} per checkpoint of both, {:.2} a second at the default 10 s",
                    each / 10.0
                )
            }
            _ => "; fsyncs not counted (no strace)".to_string(),
        };
        say!(
            "chaos: the 0.1 s runs: {:.1} ms of CPU a checkpoint (of both pipelines) on average, the state growing \
             to {:.1} MB (CPU beyond none / checkpoints){fsync_line}",
            cpu_s * 1e3,
            bytes as f64 / 1e6,
        );
    }

    crate::report::step("chaos: SIGKILL at random moments");
    let chaos = dir.join("killed");
    let cfg = config(&dir, &data, &chaos, Some(0.05))?;
    let state = chaos.join("state");
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut random = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut killed = 0;
    let mut ended = false;
    let started = Instant::now();
    while killed < kills {
        let seen = newest_checkpoint(&state);
        let mut child = Command::new(&roo)
            .args(["serve", "--config"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(120);
        while newest_checkpoint(&state) <= seen && child.try_wait()?.is_none() {
            ensure!(Instant::now() < deadline, "no checkpoint in 120 s");
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(random() % 80));
        if let Some(status) = child.try_wait()? {
            ensure!(status.success(), "roo serve: {status}");
            ended = true;
            break;
        }
        // SAFETY: signals a child we started and have not waited for.
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        child.wait()?;
        killed += 1;
    }
    if !ended {
        let status = Command::new(&roo)
            .args(["serve", "--config"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        ensure!(status.success(), "roo serve: {status}");
    }
    let took = started.elapsed().as_secs_f64();
    let want = rows(&reference.join("rows"))?;
    let got = rows(&chaos.join("rows"))?;
    let total: u64 = want.values().map(|n| *n as u64).sum();
    let duplicates: u64 = got
        .values()
        .filter(|n| **n > 1)
        .map(|n| *n as u64 - 1)
        .sum();
    let lost = want.keys().filter(|k| !got.contains_key(*k)).count();
    let differ = got.keys().filter(|k| !want.contains_key(*k)).count();
    let dead_want = dead_letters(&reference.join("dead"))?;
    let dead_got = dead_letters(&chaos.join("dead"))?;
    let dead_total: u32 = dead_want.values().sum();
    let audit_want = audit_records(&reference.join("audit"))?;
    let audit_got = audit_records(&chaos.join("audit"))?;
    let audited: u64 = audit_want.values().map(|n| *n as u64).sum();
    let audit_duplicates: u64 = audit_got
        .values()
        .filter(|n| **n > 1)
        .map(|n| *n as u64 - 1)
        .sum();
    let windows_want = rows(&reference.join("windows"))?;
    let windows_got = rows(&chaos.join("windows"))?;
    let windows: u64 = windows_want.values().map(|n| *n as u64).sum();
    let equal = |same: bool| if same { "equal" } else { "DIFFER" };
    say!(
        "chaos: {events} events, {killed} kills survived{}, {total} rows, {audited} audit records, {windows} window \
         rows and {dead_total} dead letters checked against the uninterrupted run: duplicates {duplicates}, lost \
         {lost}, rows differing {differ}; audit records {} ({audit_duplicates} twice); windows {}; dead letters {} \
         ({took:.1} s with restarts)",
        if ended { " (the run ended before the last)" } else { "" },
        equal(audit_got == audit_want),
        equal(windows_got == windows_want),
        equal(dead_got == dead_want)
    );
    ensure!(
        total + dead_total as u64 == events as u64 && audited == total && windows > 0,
        "the uninterrupted run accounts for {total} rows, {audited} audit records and {dead_total} dead letters \
         of {events} events"
    );
    ensure!(
        duplicates == 0
            && lost == 0
            && differ == 0
            && dead_got == dead_want
            && audit_got == audit_want
            && windows_got == windows_want,
        "crash safety broke: {duplicates} duplicates, {lost} lost, {differ} rows differing, {audit_duplicates} \
         audit records twice"
    );
    tcp::run(&roo, events, kills, &dir)?;
    if let Some(python) = python {
        flight::run(python, &roo, events, kills, &dir)?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    section.detail = crate::report::take_lines();
    Ok(section)
}
