//! `roo-bench audit`: the audit log at scale. `roo serve` scores `records`
//! generated card transactions with the bundled model and audit on (a
//! generator source, flat out; the log is what it leaves); then `roo
//! audit show` finds single ids in it (each a new process, as a user runs
//! it: wall time from start to exit), and `roo replay` re-scores every
//! record with the recorded model, pinned to one core; beside them, what a
//! team would run on the same files (`python/audit_peers.py`): a pyarrow
//! dataset scan for the id, and the features read back and scored by
//! XGBoost's own predict on one thread. The CPU the audit
//! adds to the file pipeline is measured in the `pipeline` scenario, with
//! and without audit side by side.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::daemon::roo_binary;
use crate::report::{Latency, Measurement, Section};

pub const BUILD: &str = "roo serve, generator -> score -> audit log";
pub const SHOW: &str = "roo audit show --id (one process per lookup)";
pub const REPLAY: &str = "roo replay, recorded model, 1 core";
pub const PY_LOOKUP: &str = "pyarrow.dataset filter on audit_id (a scan)";
pub const PY_REPLAY: &str = "pyarrow.dataset read + XGBoost inplace_predict, 1 thread";

/// Bytes under `dir`, every file.
pub fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                dir_bytes(&p)
            } else {
                e.metadata().map_or(0, |m| m.len())
            }
        })
        .sum()
}

/// Runs `command` to its end pinned to CPU 0; returns (wall s, CPU s).
pub(crate) fn run_pinned(command: &mut Command, one_core: bool) -> Result<(f64, f64)> {
    use std::os::unix::process::CommandExt;
    if one_core {
        // SAFETY: the closure only calls async-signal-safe libc functions
        // on memory it owns.
        unsafe {
            command.pre_exec(|| {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(0, &mut set);
                if libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let children_cpu = || {
        // SAFETY: getrusage writes one rusage struct we own.
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) };
        crate::report::rusage_cpu_s(&u)
    };
    let cpu_before = children_cpu();
    let started = Instant::now();
    let out = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()?;
    let wall = started.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "{command:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The children waited for so far: this one's CPU is the difference.
    Ok((wall, children_cpu() - cpu_before))
}

pub fn run(records: u64, python: Option<&str>, cache: &Path) -> Result<Section> {
    let roo = roo_binary()?;
    let model = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/fraud/model.json")
        .canonicalize()?;
    let dir = cache.join("audit");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let mut section = Section::new(
        "audit",
        "The audit log at scale: written by the daemon, one id found, every record replayed",
    );
    section.note(format!(
        "{records} generated card transactions scored by the bundled model (XGBoost, 40 trees, depth 5) with \
         `[pipeline.audit]` on (id = txn_id, segments of up to 1,048,576 records, Arrow IPC with LZ4): the log the \
         figures below read. `roo audit show`: wall time of the whole process (start, find the id through the \
         segments' indexes, decode one row group, print JSON, exit). `roo replay`: every record re-scored by its \
         recorded model from the audit log's model store and compared bit for bit, the process pinned to one core."
    ));
    crate::report::step("audit: writing the audit log");
    let config = dir.join("roo.toml");
    std::fs::write(
        &config,
        format!(
            "[[pipeline]]\nname = \"bench\"\nmodel = {model:?}\ndevice = \"cpu\"\nmax_rows = 4096\n\n\
             [pipeline.source]\nkind = \"generator\"\nrate = 0\nevents = {records}\n\n\
             [pipeline.audit]\ndir = \"log\"\nid = \"txn_id\"\nretain_days = 0\nmax_gb = 1000\n"
        ),
    )?;
    let (wall, cpu) = run_pinned(
        Command::new(&roo).args(["serve", "--config"]).arg(&config),
        false,
    )?;
    let log = dir.join("log");
    let bytes = dir_bytes(&log.join("records"));
    say!(
        "audit: {records} records written in {wall:.1} s ({:.2}M events/s, {:.0} CPU-ns/event, scoring included); \
         {:.1} MB on disk, {:.1} bytes/record",
        records as f64 / wall / 1e6,
        cpu * 1e9 / records as f64,
        bytes as f64 / 1e6,
        bytes as f64 / records as f64
    );
    section.push(Measurement::roo(BUILD, records as f64, wall, Some(cpu)));

    crate::report::step("audit: roo audit show");
    // Ids across the log (the generator numbers txn_id from 0), and one
    // that is not there.
    let mut times = Vec::new();
    let mut total = 0.0;
    for k in 0..7u64 {
        let id = (k * (records - 1) / 6).to_string();
        let (w, _) = run_pinned(
            Command::new(&roo)
                .args(["audit", "show", "--json", "--dir"])
                .arg(&log)
                .args(["--id", &id]),
            false,
        )
        .with_context(|| format!("roo audit show --id {id}"))?;
        times.push(w);
        total += w;
    }
    let started = Instant::now();
    let missing = Command::new(&roo)
        .args(["audit", "show", "--dir"])
        .arg(&log)
        .args(["--id", "not-an-id"])
        .output()?;
    let miss = started.elapsed().as_secs_f64();
    if missing.status.success() {
        bail!("roo audit show found an id that is not there");
    }
    times.sort_by(f64::total_cmp);
    let p50 = times[times.len() / 2];
    let max = *times.last().expect("ran");
    say!(
        "audit: roo audit show over {records} records: median {:.1} ms, slowest {:.1} ms ({} lookups); an unknown id \
         answered (exit 1) in {:.1} ms",
        p50 * 1e3,
        max * 1e3,
        times.len(),
        miss * 1e3
    );
    section.push(
        Measurement::roo(SHOW, times.len() as f64, total, None)
            .latency(Latency::from_s(p50, max, max)),
    );

    crate::report::step("audit: roo replay on one core");
    let report = dir.join("replay.md");
    let (wall, cpu) = run_pinned(
        Command::new(&roo)
            .args(["replay", "--dir"])
            .arg(&log)
            .arg("--report")
            .arg(&report),
        true,
    )?;
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("replay.json"))?)?;
    let replayed = json["records"].as_u64().unwrap_or(0);
    if replayed != records || json["mismatches"].as_u64() != Some(0) {
        bail!("roo replay: {json}");
    }
    say!(
        "audit: roo replay, 1 core: {replayed} records in {wall:.2} s ({:.2}M records/s, {:.0} CPU-ns/record, process \
         start to exit), 0 mismatches",
        replayed as f64 / wall / 1e6,
        cpu * 1e9 / replayed as f64
    );
    section.push(Measurement::roo(REPLAY, replayed as f64, wall, Some(cpu)));
    if let Some(python) = python {
        crate::report::step("audit: pyarrow and XGBoost on the same files");
        let id = (records / 2).to_string();
        let out = crate::run_script(
            python,
            "audit_peers.py",
            &[
                log.join("records").to_str().context("path")?,
                model.to_str().context("path")?,
                &id,
            ],
        )?;
        let v: serde_json::Value = serde_json::from_str(out.trim())?;
        let (lookup, replay) = (&v["lookup"], &v["replay"]);
        let f = |v: &serde_json::Value, k: &str| v[k].as_f64().context("audit_peers.py: a figure");
        anyhow::ensure!(
            lookup["rows"].as_u64() == Some(1) && replay["records"].as_u64() == Some(records),
            "audit_peers.py found {} rows for id {id} and scored {} records of {records}",
            lookup["rows"],
            replay["records"]
        );
        let (lw, rw, rc) = (
            f(lookup, "wall_s")?,
            f(replay, "wall_s")?,
            f(replay, "cpu_s")?,
        );
        say!(
            "audit: peers on the same files: the id by a pyarrow.dataset scan {:.0} ms ({:.0}x roo's median); \
             the features read and scored by XGBoost inplace_predict on one thread {:.2} s ({:.2}M records/s, \
             {:.0} CPU-ns/record: roo replay 1/{:.1} of its CPU, comparing every score as well)",
            lw * 1e3,
            lw / p50,
            rw,
            records as f64 / rw / 1e6,
            rc * 1e9 / records as f64,
            rc / cpu
        );
        section.push(
            Measurement::peer(PY_LOOKUP, "pyarrow", 1.0, lw, Some(f(lookup, "cpu_s")?))
                .latency(Latency::from_s(lw, lw, lw))
                .against(SHOW),
        );
        section.push(
            Measurement::peer(PY_REPLAY, "pyarrow + XGBoost", records as f64, rw, Some(rc))
                .against(REPLAY),
        );
    }
    let _ = std::fs::remove_dir_all(&log);
    section.detail = crate::report::take_lines();
    Ok(section)
}
